//! Errors of the vector index.

use std::fmt;

/// What was wrong with a vector operation; the message says how to fix it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VectorError {
    /// The vector's length is not the index's dimension.
    Dimension {
        /// The index's dimension.
        expected: usize,
        /// The vector's length.
        got: usize,
    },
    /// A component is NaN or infinite.
    NotFinite {
        /// Which component.
        index: usize,
    },
    /// A zero vector cannot be compared by cosine distance.
    ZeroVector,
    /// Bad search or index parameters.
    Invalid(String),
    /// A serialized index could not be read.
    Corrupt(String),
}

impl fmt::Display for VectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VectorError::Dimension { expected, got } => write!(
                f,
                "the vector has {got} dimensions but the index has {expected}; use vectors of the \
                 same model/size, or create another index"
            ),
            VectorError::NotFinite { index } => {
                write!(
                    f,
                    "vector component {index} is NaN or infinite; components must be finite numbers"
                )
            }
            VectorError::ZeroVector => f.write_str(
                "a zero vector has no direction, so cosine distance is undefined for it",
            ),
            VectorError::Invalid(why) => f.write_str(why),
            VectorError::Corrupt(why) => write!(f, "the saved vector index is damaged: {why}"),
        }
    }
}

impl std::error::Error for VectorError {}
