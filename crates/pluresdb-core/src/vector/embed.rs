//! The embedding model interface (from `pluresdb-embed`): text in, vectors out. Plug a model in
//! with [`Database::set_embedder`](crate::Database::set_embedder).

pub use pluresdb_embed::{EmbedError, Embedder};
