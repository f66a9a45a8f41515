//! Adapts a [`GraphStore`] / [`GraphStoreMut`] to the object-safe interface the executor uses,
//! turning store errors into [`CypherError`]s.

use serde_json::{Map, Value as Json};

use crate::error::{CypherError, ErrorKind, Result};
use crate::store::{Dir, EdgeRecord, GraphStore, GraphStoreMut, NodeRecord};

/// The store as the executor sees it.
pub(crate) trait Backend {
    fn node(&self, id: &str) -> Result<Option<NodeRecord>>;
    fn scan_nodes(
        &self,
        label: Option<&str>,
        props: &[(String, Json)],
    ) -> Result<Box<dyn Iterator<Item = Result<NodeRecord>> + '_>>;
    fn edges(&self, node: &str, dir: Dir, rels: &[String]) -> Result<Vec<EdgeRecord>>;
    fn edge(&self, from: &str, rel: &str, to: &str) -> Result<Option<EdgeRecord>>;
    fn create_node(
        &mut self,
        id: Option<&str>,
        label: Option<&str>,
        props: &Map<String, Json>,
    ) -> Result<NodeRecord>;
    fn create_edge(
        &mut self,
        from: &str,
        rel: &str,
        to: &str,
        props: &Map<String, Json>,
    ) -> Result<EdgeRecord>;
    fn set_node_props(&mut self, id: &str, props: &Map<String, Json>) -> Result<()>;
    fn set_node_label(&mut self, id: &str, label: Option<&str>) -> Result<()>;
    fn set_edge_props(
        &mut self,
        from: &str,
        rel: &str,
        to: &str,
        props: &Map<String, Json>,
    ) -> Result<()>;
    fn delete_node(&mut self, id: &str) -> Result<()>;
    fn delete_edge(&mut self, from: &str, rel: &str, to: &str) -> Result<bool>;
}

fn scan<'a, S: GraphStore + ?Sized>(
    store: &'a S,
    label: Option<&str>,
    props: &[(String, Json)],
) -> Result<Box<dyn Iterator<Item = Result<NodeRecord>> + 'a>> {
    let iter = store.scan_nodes(label, props).map_err(CypherError::store)?;
    Ok(Box::new(iter.map(|r| r.map_err(CypherError::store))))
}

/// A store that can be written.
pub(crate) struct ReadWrite<'a, S: ?Sized>(pub &'a mut S);

/// A store that is only read; writes fail (the executor checks before running).
pub(crate) struct ReadOnly<'a, S: ?Sized>(pub &'a S);

macro_rules! reads {
    () => {
        fn node(&self, id: &str) -> Result<Option<NodeRecord>> {
            self.0.node(id).map_err(CypherError::store)
        }
        fn scan_nodes(
            &self,
            label: Option<&str>,
            props: &[(String, Json)],
        ) -> Result<Box<dyn Iterator<Item = Result<NodeRecord>> + '_>> {
            scan(&*self.0, label, props)
        }
        fn edges(&self, node: &str, dir: Dir, rels: &[String]) -> Result<Vec<EdgeRecord>> {
            self.0.edges(node, dir, rels).map_err(CypherError::store)
        }
        fn edge(&self, from: &str, rel: &str, to: &str) -> Result<Option<EdgeRecord>> {
            self.0.edge(from, rel, to).map_err(CypherError::store)
        }
    };
}

impl<S: GraphStoreMut + ?Sized> Backend for ReadWrite<'_, S> {
    reads!();

    fn create_node(
        &mut self,
        id: Option<&str>,
        label: Option<&str>,
        props: &Map<String, Json>,
    ) -> Result<NodeRecord> {
        self.0
            .create_node(id, label, props)
            .map_err(CypherError::store)
    }
    fn create_edge(
        &mut self,
        from: &str,
        rel: &str,
        to: &str,
        props: &Map<String, Json>,
    ) -> Result<EdgeRecord> {
        self.0
            .create_edge(from, rel, to, props)
            .map_err(CypherError::store)
    }
    fn set_node_props(&mut self, id: &str, props: &Map<String, Json>) -> Result<()> {
        self.0.set_node_props(id, props).map_err(CypherError::store)
    }
    fn set_node_label(&mut self, id: &str, label: Option<&str>) -> Result<()> {
        self.0.set_node_label(id, label).map_err(CypherError::store)
    }
    fn set_edge_props(
        &mut self,
        from: &str,
        rel: &str,
        to: &str,
        props: &Map<String, Json>,
    ) -> Result<()> {
        self.0
            .set_edge_props(from, rel, to, props)
            .map_err(CypherError::store)
    }
    fn delete_node(&mut self, id: &str) -> Result<()> {
        self.0.delete_node(id).map_err(CypherError::store)
    }
    fn delete_edge(&mut self, from: &str, rel: &str, to: &str) -> Result<bool> {
        self.0
            .delete_edge(from, rel, to)
            .map_err(CypherError::store)
    }
}

fn read_only() -> CypherError {
    CypherError::new(
        ErrorKind::ReadOnly,
        "this query writes but was run read-only",
    )
}

impl<S: GraphStore + ?Sized> Backend for ReadOnly<'_, S> {
    reads!();

    fn create_node(
        &mut self,
        _: Option<&str>,
        _: Option<&str>,
        _: &Map<String, Json>,
    ) -> Result<NodeRecord> {
        Err(read_only())
    }
    fn create_edge(
        &mut self,
        _: &str,
        _: &str,
        _: &str,
        _: &Map<String, Json>,
    ) -> Result<EdgeRecord> {
        Err(read_only())
    }
    fn set_node_props(&mut self, _: &str, _: &Map<String, Json>) -> Result<()> {
        Err(read_only())
    }
    fn set_node_label(&mut self, _: &str, _: Option<&str>) -> Result<()> {
        Err(read_only())
    }
    fn set_edge_props(&mut self, _: &str, _: &str, _: &str, _: &Map<String, Json>) -> Result<()> {
        Err(read_only())
    }
    fn delete_node(&mut self, _: &str) -> Result<()> {
        Err(read_only())
    }
    fn delete_edge(&mut self, _: &str, _: &str, _: &str) -> Result<bool> {
        Err(read_only())
    }
}
