//! The storage interface the executor runs against: [`GraphStore`] for reads and
//! [`GraphStoreMut`] for writes. PluresDB's core implements them over its node and edge tables;
//! [`MemStore`](crate::MemStore) is an in-memory implementation for tests and examples.

use serde_json::{Map, Value as Json};

/// A node as the store holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeRecord {
    /// The node id (unique, non-empty).
    pub id: String,
    /// The node's type, which Cypher sees as its only label.
    pub label: Option<String>,
    /// The node's data: its properties. A key named `id` here is shadowed by the node id in
    /// Cypher (`n.id` is always the node id) but still visible through `properties(n)`.
    pub props: Map<String, Json>,
}

/// A directed, typed edge. The store holds at most one edge per `(from, rel, to)`, which is
/// its identity.
#[derive(Clone, Debug, PartialEq)]
pub struct EdgeRecord {
    /// Source node id.
    pub from: String,
    /// Relationship type (PluresDB's relation).
    pub rel: String,
    /// Target node id.
    pub to: String,
    /// The edge's data: its properties.
    pub props: Map<String, Json>,
}

impl EdgeRecord {
    /// True when both are the same edge (same from, type and to).
    pub fn same_edge(&self, other: &EdgeRecord) -> bool {
        self.from == other.from && self.rel == other.rel && self.to == other.to
    }
}

/// Which edges of a node [`GraphStore::edges`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dir {
    /// Edges whose `from` is the node.
    Out,
    /// Edges whose `to` is the node.
    In,
    /// Both; a self-loop may be returned once or twice (the executor keeps one).
    Both,
}

/// An iterator of nodes from [`GraphStore::scan_nodes`].
pub type NodeIter<'a, E> = Box<dyn Iterator<Item = Result<NodeRecord, E>> + 'a>;

/// Read access to a graph. All methods see the store's current state, including writes made
/// earlier in the same query.
pub trait GraphStore {
    /// The store's error type; it ends up as the source of an [`ErrorKind::Store`] error.
    ///
    /// [`ErrorKind::Store`]: crate::ErrorKind::Store
    type Error: std::error::Error + Send + Sync + 'static;

    /// The node with this id. Called for `(n {id: $x})`, `WHERE n.id = ..`, `id(n) IN ..` and
    /// to load nodes reached over edges when their label or properties are needed: make it a
    /// point lookup.
    fn node(&self, id: &str) -> Result<Option<NodeRecord>, Self::Error>;

    /// Nodes with this label (any label when `None`) whose properties equal each `(key, value)`
    /// (equality as in Cypher: `1` equals `1.0`). The store may return more nodes than match
    /// (the executor checks label and properties again) but must not miss any. Use indexes
    /// where you have them; this is how a `MATCH` starts when no node is bound or has an id.
    fn scan_nodes(
        &self,
        label: Option<&str>,
        props: &[(String, Json)],
    ) -> Result<NodeIter<'_, Self::Error>, Self::Error>;

    /// The edges at `node` in direction `dir` whose type is one of `rels` (any type when
    /// `rels` is empty). This is the hot path of every pattern expansion.
    fn edges(&self, node: &str, dir: Dir, rels: &[String]) -> Result<Vec<EdgeRecord>, Self::Error>;

    /// The edge `(from)-[rel]->(to)`, if there is one. The default asks [`edges`](Self::edges).
    fn edge(&self, from: &str, rel: &str, to: &str) -> Result<Option<EdgeRecord>, Self::Error> {
        Ok(self
            .edges(from, Dir::Out, &[rel.to_owned()])?
            .into_iter()
            .find(|e| e.to == to && e.rel == rel))
    }
}

/// Write access to a graph. The executor calls these only after its own checks (a node id is
/// free, a node has no edges left before [`delete_node`](Self::delete_node), an edge does not
/// exist before [`create_edge`](Self::create_edge)), so implementations can be thin. Run each
/// query in one transaction: a query that fails part way leaves its earlier writes in place.
pub trait GraphStoreMut: GraphStore {
    /// Creates a node. With `id` the node must get exactly that id (the executor has checked
    /// it is free); without, the store picks a new unique id. `props` never has an `id` key.
    fn create_node(
        &mut self,
        id: Option<&str>,
        label: Option<&str>,
        props: &Map<String, Json>,
    ) -> Result<NodeRecord, Self::Error>;

    /// Creates the edge `(from)-[rel]->(to)`; both nodes exist and the edge does not.
    fn create_edge(
        &mut self,
        from: &str,
        rel: &str,
        to: &str,
        props: &Map<String, Json>,
    ) -> Result<EdgeRecord, Self::Error>;

    /// Replaces all properties of node `id`.
    fn set_node_props(&mut self, id: &str, props: &Map<String, Json>) -> Result<(), Self::Error>;

    /// Sets (or with `None` clears) the label (type) of node `id`.
    fn set_node_label(&mut self, id: &str, label: Option<&str>) -> Result<(), Self::Error>;

    /// Replaces all properties of the edge `(from)-[rel]->(to)`.
    fn set_edge_props(
        &mut self,
        from: &str,
        rel: &str,
        to: &str,
        props: &Map<String, Json>,
    ) -> Result<(), Self::Error>;

    /// Deletes node `id`, which has no edges any more.
    fn delete_node(&mut self, id: &str) -> Result<(), Self::Error>;

    /// Deletes the edge `(from)-[rel]->(to)`; false when there was none.
    fn delete_edge(&mut self, from: &str, rel: &str, to: &str) -> Result<bool, Self::Error>;
}
