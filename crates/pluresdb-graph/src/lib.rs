//! PluresDB's in-memory graph: the adjacency of the whole node/edge graph kept in a form built
//! for walking, and the graph algorithms answered from it.
//!
//! The database keeps nodes and edges in SQLite tables; this crate knows nothing of SQLite.
//! The core loads every edge into a [`Graph`] on open ([`Graph::extend_edges`] rebuilds the
//! neighbour lists in one pass), applies each commit's changes with [`Graph::add_node`],
//! [`Graph::add_edge`], [`Graph::remove_edge`] and [`Graph::remove_node`], and answers graph
//! queries here instead of running a SQL query per hop:
//!
//! * neighbours and degree by relation and direction ([`Graph::neighbors`], [`Graph::degree`]);
//! * breadth-first traversal with depth bounds, filters, a limit and a visit budget
//!   ([`Graph::traverse`]), and distinct k-hop expansion ([`Graph::expand`]);
//! * fewest-hops and least-weight paths ([`Graph::shortest_path`], [`Graph::cheapest_path`]);
//! * weakly connected components, PageRank and degree centrality.
//!
//! ```
//! use pluresdb_graph::{Direction, Graph, PathOptions, TraverseOptions};
//!
//! let mut g = Graph::new();
//! g.add_node("ann", Some("person"));
//! g.add_node("bob", Some("person"));
//! g.add_edge("ann", "knows", "bob");
//! g.add_edge("bob", "knows", "cy");
//!
//! let ann = g.node("ann").unwrap();
//! let opts = TraverseOptions::new().relations(g.rel_filter(["knows"])).max_depth(2);
//! let walk = g.traverse(&[ann], &opts).unwrap();
//! let found: Vec<(&str, u32)> = walk.visits().iter().map(|v| (g.id(v.node), v.depth)).collect();
//! assert_eq!(found, [("bob", 1), ("cy", 2)]);
//! let path = walk.path(&walk.visits()[1]);
//! assert_eq!(path.iter().map(|&v| g.id(v)).collect::<Vec<_>>(), ["ann", "bob", "cy"]);
//!
//! let cy = g.node("cy").unwrap();
//! let p = g.shortest_path(cy, ann, &PathOptions::new().direction(Direction::In)).unwrap();
//! assert_eq!(p.unwrap().nodes.len(), 3);
//! ```

#![warn(missing_docs)]

mod algo;
mod error;
mod graph;
mod hash;
mod ids;
mod level;
mod lists;
mod path;
#[cfg(test)]
mod reference_tests;
mod traverse;
mod visited;

pub use algo::{Components, NO_COMPONENT, PageRank, PageRankOptions};
pub use error::GraphError;
pub use graph::{Direction, EdgeRef, Graph, Neighbor, NodeIx, RelFilter, RelIx, TypeIx};
pub use ids::Ids;
pub use path::{Path, PathOptions};
pub use traverse::{DEFAULT_MAX_VISITED, Traversal, TraverseOptions, Visit};
