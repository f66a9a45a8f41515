//! The embedding model interface: text in, vectors out.

/// Turns text into vectors (a sentence-embedding model). Implemented by `pluresdb-embed`'s
/// MiniLM model; any other model can be plugged in with [`Database::set_embedder`].
///
/// [`Database::set_embedder`]: crate::Database::set_embedder
pub trait Embedder: Send + Sync {
    /// The model's name, for reports.
    fn model_name(&self) -> &str;
    /// The length of the vectors it makes.
    fn dim(&self) -> usize;
    /// Embeds several texts (one vector each, in order).
    fn embed(
        &self,
        texts: &[&str],
    ) -> Result<Vec<Vec<f32>>, Box<dyn std::error::Error + Send + Sync>>;
}
