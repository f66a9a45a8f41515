//! Errors of graph queries.

use std::fmt;

use crate::NodeIx;

/// What was wrong with a graph query; the message says how to fix it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum GraphError {
    /// No node has this id.
    UnknownNode(String),
    /// A node index that does not name a live node (its node was removed, or it came from
    /// another graph).
    StaleNode(NodeIx),
    /// A depth below zero, or a minimum depth above the maximum.
    InvalidDepth {
        /// The minimum depth asked for.
        min: i64,
        /// The maximum depth asked for (`None` = unbounded).
        max: Option<i64>,
    },
    /// A walk discovered more nodes than its `max_visited` budget before finishing.
    TooManyVisited {
        /// The budget.
        max_visited: usize,
    },
    /// The weight function gave a negative or NaN weight.
    BadWeight {
        /// Source node id of the edge.
        from: String,
        /// Relation of the edge.
        relation: String,
        /// Target node id of the edge.
        to: String,
        /// The weight given.
        weight: f64,
    },
    /// Every weighted path between the two nodes costs more than `f64::MAX` in total.
    CostOverflow {
        /// Source node id.
        from: String,
        /// Target node id.
        to: String,
    },
    /// An option out of its range (the message names it and the accepted range).
    InvalidArgument(String),
}

impl fmt::Display for GraphError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GraphError::UnknownNode(id) => write!(
                f,
                "no node with id {id:?} is in the graph; check the id, or create the node first"
            ),
            GraphError::StaleNode(ix) => write!(
                f,
                "node index {ix} does not name a live node (the node was removed, or the index \
                 came from another graph); look the node up again by id"
            ),
            GraphError::InvalidDepth { min, max } => match max {
                _ if *min < 0 => write!(
                    f,
                    "minimum depth {min} is negative; depths count hops and start at 0 (the \
                     start nodes themselves)"
                ),
                Some(max) if *max < 0 => write!(
                    f,
                    "maximum depth {max} is negative; depths count hops and start at 0 (the \
                     start nodes themselves)"
                ),
                Some(max) => write!(
                    f,
                    "minimum depth {min} is above maximum depth {max}; give min <= max"
                ),
                None => write!(f, "invalid depth range {min}.."),
            },
            GraphError::TooManyVisited { max_visited } => write!(
                f,
                "the walk reached more than {max_visited} nodes without finishing; add a limit, \
                 lower the maximum depth, follow fewer relations, or raise max_visited"
            ),
            GraphError::BadWeight {
                from,
                relation,
                to,
                weight,
            } => write!(
                f,
                "edge {from:?} -[{relation}]-> {to:?} has weight {weight}; weights must be zero \
                 or positive numbers (return None to skip an edge)"
            ),
            GraphError::CostOverflow { from, to } => write!(
                f,
                "the paths from {from:?} to {to:?} cost more than the largest number ({:e}) in \
                 total; use smaller weights (dividing every weight by the same number keeps the \
                 same cheapest path)",
                f64::MAX
            ),
            GraphError::InvalidArgument(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for GraphError {}
