//! The embedding model for text searches and embedded columns, loaded on first use so commands
//! that never embed do not pay for it.

use std::path::PathBuf;
use std::sync::OnceLock;

use pluresdb_embed::{EmbedError, Embedder, MiniLm};

/// all-MiniLM-L6-v2 from a directory, loaded when first needed.
pub struct LazyModel {
    dir: PathBuf,
    model: OnceLock<Result<MiniLm, String>>,
}

impl LazyModel {
    pub fn new(dir: PathBuf) -> LazyModel {
        LazyModel {
            dir,
            model: OnceLock::new(),
        }
    }

    fn get(&self) -> Result<&MiniLm, EmbedError> {
        self.model
            .get_or_init(|| MiniLm::load(&self.dir).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| EmbedError::Inference(e.clone()))
    }
}

impl Embedder for LazyModel {
    fn dim(&self) -> usize {
        // all-MiniLM-L6-v2's size, if the model cannot be loaded (embedding then says why).
        self.get().map_or(384, Embedder::dim)
    }

    fn model_name(&self) -> &str {
        self.get().map_or("all-MiniLM-L6-v2", Embedder::model_name)
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.get()?.embed(texts)
    }
}
