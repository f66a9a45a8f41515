//! all-MiniLM-L6-v2 (and other BERT sentence-transformers with mean pooling) run with candle.

use std::cmp::Reverse;
use std::fmt;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use tokenizers::{Encoding, Tokenizer, TruncationParams, TruncationStrategy};

use crate::{EmbedError, Embedder, resolve_model_dir};

/// The files a model directory must have, in the order they are checked.
const CONFIG_FILE: &str = "config.json";
const TOKENIZER_FILE: &str = "tokenizer.json";
const WEIGHTS_FILE: &str = "model.safetensors";
/// Optional: sentence-transformers' settings, of which `max_seq_length` is used.
const SENTENCE_CONFIG_FILE: &str = "sentence_bert_config.json";

/// all-MiniLM-L6-v2's `max_seq_length`, used when the directory has no
/// `sentence_bert_config.json`.
const DEFAULT_MAX_SEQ_LEN: usize = 256;
const DEFAULT_BATCH_SIZE: usize = 32;
const DEFAULT_MODEL_NAME: &str = "all-MiniLM-L6-v2";
/// A tensor every BERT checkpoint has, with or without a `bert.` prefix.
const PROBE_TENSOR: &str = "embeddings.word_embeddings.weight";

/// Settings of [`MiniLm::load_with`]; [`Default`] suits all-MiniLM-L6-v2.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MiniLmOptions {
    /// Longer texts are cut to this many tokens (including `[CLS]` and `[SEP]`). `None`: the
    /// directory's `sentence_bert_config.json` `max_seq_length`, else 256 (what
    /// sentence-transformers uses for all-MiniLM-L6-v2); never more than the model's
    /// `max_position_embeddings`.
    pub max_seq_len: Option<usize>,
    /// How many texts run through the model at once (texts are grouped by length first, so
    /// little padding is computed). At least 1.
    pub batch_size: usize,
    /// What [`Embedder::model_name`] returns. `None`: `"all-MiniLM-L6-v2"`.
    pub model_name: Option<String>,
}

impl Default for MiniLmOptions {
    fn default() -> Self {
        MiniLmOptions {
            max_seq_len: None,
            batch_size: DEFAULT_BATCH_SIZE,
            model_name: None,
        }
    }
}

/// A BERT sentence-transformer (all-MiniLM-L6-v2 by default) on the CPU: WordPiece tokens,
/// the BERT encoder, mean pooling over the real (unpadded) tokens, then L2 normalization, as
/// sentence-transformers computes it. Vectors have unit length.
pub struct MiniLm {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    dir: PathBuf,
    name: String,
    dim: usize,
    pad_id: u32,
    max_seq_len: usize,
    batch_size: usize,
}

impl fmt::Debug for MiniLm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MiniLm")
            .field("dir", &self.dir)
            .field("name", &self.name)
            .field("dim", &self.dim)
            .field("max_seq_len", &self.max_seq_len)
            .field("batch_size", &self.batch_size)
            .finish_non_exhaustive()
    }
}

impl MiniLm {
    /// Loads the model from the directory named by `PLURESDB_MODEL_DIR`;
    /// [`EmbedError::NotConfigured`] if it is not set.
    pub fn from_env() -> Result<Self, EmbedError> {
        Self::load_configured(None, MiniLmOptions::default())
    }

    /// Loads the model from `dir` if given, else from `PLURESDB_MODEL_DIR`
    /// (see [`resolve_model_dir`]).
    pub fn load_configured(dir: Option<&Path>, options: MiniLmOptions) -> Result<Self, EmbedError> {
        let dir = resolve_model_dir(dir)?;
        Self::load_with(&dir, options)
    }

    /// Loads the model from `dir` with default options.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, EmbedError> {
        Self::load_with(dir.as_ref(), MiniLmOptions::default())
    }

    /// Loads the model from `dir`, which must hold `config.json`, `tokenizer.json` and
    /// `model.safetensors` (weights with or without a `bert.` name prefix).
    pub fn load_with(dir: &Path, options: MiniLmOptions) -> Result<Self, EmbedError> {
        if !dir.is_dir() {
            return Err(EmbedError::NotADirectory {
                dir: dir.to_path_buf(),
            });
        }
        for file in [CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE] {
            if !dir.join(file).is_file() {
                return Err(EmbedError::MissingFile {
                    dir: dir.to_path_buf(),
                    file,
                });
            }
        }

        let config_path = dir.join(CONFIG_FILE);
        let config: BertConfig = serde_json::from_str(&read_text(&config_path)?)
            .map_err(|e| invalid(&config_path, format!("not a BERT config.json: {e}")))?;
        if config.hidden_size == 0 || config.max_position_embeddings < 2 {
            return Err(invalid(
                &config_path,
                "hidden_size or max_position_embeddings too small",
            ));
        }

        let max_seq_len = match options.max_seq_len {
            Some(n) => n,
            None => sentence_max_seq_len(dir)?.unwrap_or(DEFAULT_MAX_SEQ_LEN),
        }
        .min(config.max_position_embeddings);

        let tokenizer_path = dir.join(TOKENIZER_FILE);
        let mut tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| invalid(&tokenizer_path, e.to_string()))?;
        // tokenizer.json files often carry their own padding (all-MiniLM-L6-v2's: fixed 128)
        // and truncation (128); sentence-transformers overrides both, and so do we: batches
        // are padded here, to their longest text.
        let pad_id = tokenizer
            .get_padding()
            .map(|p| p.pad_id)
            .unwrap_or(config.pad_token_id as u32);
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_seq_len,
                strategy: TruncationStrategy::LongestFirst,
                ..TruncationParams::default()
            }))
            .map_err(|e| invalid(&tokenizer_path, e.to_string()))?;

        let weights_path = dir.join(WEIGHTS_FILE);
        let device = Device::Cpu;
        // Read rather than mmap: a mapped file changed by someone else is undefined behaviour.
        let weights = std::fs::read(&weights_path).map_err(|source| EmbedError::Io {
            path: weights_path.clone(),
            source,
        })?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &device)
            .map_err(|e| invalid(&weights_path, e.to_string()))?;
        let vb = if vb.contains_tensor(PROBE_TENSOR) {
            vb
        } else if vb.contains_tensor(&format!("bert.{PROBE_TENSOR}")) {
            vb.pp("bert")
        } else {
            return Err(invalid(
                &weights_path,
                format!("no BERT weights: found neither {PROBE_TENSOR} nor bert.{PROBE_TENSOR}"),
            ));
        };
        let model = BertModel::load(vb, &config).map_err(|e| {
            invalid(
                &weights_path,
                format!("weights do not fit config.json: {e}"),
            )
        })?;

        Ok(MiniLm {
            model,
            tokenizer,
            device,
            dir: dir.to_path_buf(),
            name: options
                .model_name
                .unwrap_or_else(|| DEFAULT_MODEL_NAME.to_string()),
            dim: config.hidden_size,
            pad_id,
            max_seq_len,
            batch_size: options.batch_size.max(1),
        })
    }

    /// The directory the model was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Texts are cut to this many tokens.
    pub fn max_seq_len(&self) -> usize {
        self.max_seq_len
    }

    /// Runs one batch (already truncated, not padded) through the model.
    fn embed_batch(&self, batch: &[&Encoding]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let rows = batch.len();
        let cols = batch.iter().map(|e| e.len()).max().unwrap_or(0).max(1);
        let mut ids = vec![self.pad_id; rows * cols];
        let mut mask = vec![0u32; rows * cols];
        for (r, enc) in batch.iter().enumerate() {
            let row = r * cols;
            ids[row..row + enc.len()].copy_from_slice(enc.get_ids());
            mask[row..row + enc.len()].copy_from_slice(enc.get_attention_mask());
        }
        let ids = Tensor::from_vec(ids, (rows, cols), &self.device).map_err(inference)?;
        let mask = Tensor::from_vec(mask, (rows, cols), &self.device).map_err(inference)?;
        let type_ids = ids.zeros_like().map_err(inference)?;
        self.pool(&ids, &type_ids, &mask).map_err(inference)
    }

    /// Encoder, mean pooling over the mask, L2 normalization.
    fn pool(
        &self,
        ids: &Tensor,
        type_ids: &Tensor,
        mask: &Tensor,
    ) -> candle_core::Result<Vec<Vec<f32>>> {
        let hidden = self.model.forward(ids, type_ids, Some(mask))?; // (rows, cols, dim)
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // (rows, cols, 1)
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?; // (rows, dim)
        let counts = mask.sum(1)?.clamp(1e-9f32, f32::MAX)?; // (rows, 1)
        let mean = summed.broadcast_div(&counts)?;
        let norms = mean
            .sqr()?
            .sum_keepdim(1)?
            .sqrt()?
            .clamp(1e-12f32, f32::MAX)?;
        mean.broadcast_div(&norms)?.to_vec2::<f32>()
    }
}

impl Embedder for MiniLm {
    fn dim(&self) -> usize {
        self.dim
    }

    fn model_name(&self) -> &str {
        &self.name
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings = self
            .tokenizer
            .encode_batch_fast(texts.to_vec(), true)
            .map_err(|e| EmbedError::Tokenize(e.to_string()))?;
        // Longest first, so each batch holds texts of similar length and pads little.
        let mut order: Vec<usize> = (0..encodings.len()).collect();
        order.sort_by_key(|&i| Reverse(encodings[i].len()));
        let mut out = vec![Vec::new(); texts.len()];
        for chunk in order.chunks(self.batch_size) {
            let batch: Vec<&Encoding> = chunk.iter().map(|&i| &encodings[i]).collect();
            let vectors = self.embed_batch(&batch)?;
            for (&i, v) in chunk.iter().zip(vectors) {
                out[i] = v;
            }
        }
        Ok(out)
    }
}

fn read_text(path: &Path) -> Result<String, EmbedError> {
    std::fs::read_to_string(path).map_err(|source| EmbedError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn invalid(path: &Path, reason: impl Into<String>) -> EmbedError {
    EmbedError::InvalidFile {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn inference(e: candle_core::Error) -> EmbedError {
    EmbedError::Inference(e.to_string())
}

/// `max_seq_length` from `sentence_bert_config.json`, if the file is there.
fn sentence_max_seq_len(dir: &Path) -> Result<Option<usize>, EmbedError> {
    let path = dir.join(SENTENCE_CONFIG_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    let value: serde_json::Value = serde_json::from_str(&read_text(&path)?)
        .map_err(|e| invalid(&path, format!("not JSON: {e}")))?;
    match value.get("max_seq_length") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(n) => match n.as_u64() {
            Some(n) if n >= 2 => Ok(Some(n as usize)),
            _ => Err(invalid(
                &path,
                "max_seq_length must be an integer of at least 2",
            )),
        },
    }
}
