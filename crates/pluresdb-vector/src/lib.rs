//! Vector search for PluresDB: an HNSW index (hierarchical navigable small-world graph) with
//! cosine, Euclidean and inner-product distance, incremental inserts, updates and deletes,
//! filtered search with an exact fallback for selective filters, and a compact on-disk form.
//!
//! Distance kernels pick AVX2+FMA at run time when the CPU has them, else a portable loop.

mod blocks;
mod distance;
mod error;
mod exact;
mod hnsw;
mod persist;
mod visited;

pub use distance::{Kernels, Metric, normalize};
pub use error::VectorError;
pub use exact::ExactSearch;
pub use hnsw::{Filter, Hnsw, HnswParams, MAX_EF, Neighbor};
