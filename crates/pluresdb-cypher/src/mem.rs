//! [`MemStore`]: an in-memory graph implementing [`GraphStore`] and [`GraphStoreMut`] with
//! PluresDB's model (string ids, one optional label, one edge per `(from, type, to)`).
//! Deterministic: scans go by id, edges by type then the other end's id.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde_json::{Map, Value as Json};

use crate::store::{Dir, EdgeRecord, GraphStore, GraphStoreMut, NodeIter, NodeRecord};
use crate::value::Value;

/// An error of [`MemStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemStoreError(pub String);

impl fmt::Display for MemStoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MemStoreError {}

/// An in-memory graph for tests, examples and small embedded uses.
#[derive(Clone, Debug, Default)]
pub struct MemStore {
    nodes: BTreeMap<String, NodeRecord>,
    /// Edges by source, keyed by (type, target).
    out: HashMap<String, BTreeMap<(String, String), EdgeRecord>>,
    /// Edges by target, keyed by (type, source); copies of `out`'s records.
    inc: HashMap<String, BTreeMap<(String, String), EdgeRecord>>,
    edge_count: usize,
    next_id: u64,
}

fn object(props: Json) -> Map<String, Json> {
    match props {
        Json::Object(m) => m,
        Json::Null => Map::new(),
        other => panic!("properties must be a JSON object, not {other}"),
    }
}

impl MemStore {
    /// An empty graph.
    pub fn new() -> MemStore {
        MemStore::default()
    }

    /// Adds or replaces a node. For setting up tests; panics unless `props` is a JSON object
    /// or null.
    pub fn add_node(&mut self, id: &str, label: Option<&str>, props: Json) -> &mut MemStore {
        self.nodes.insert(
            id.to_owned(),
            NodeRecord {
                id: id.to_owned(),
                label: label.map(str::to_owned),
                props: object(props),
            },
        );
        self
    }

    /// Adds or replaces an edge between existing nodes. Panics when a node is missing.
    pub fn add_edge(&mut self, from: &str, rel: &str, to: &str, props: Json) -> &mut MemStore {
        assert!(
            self.nodes.contains_key(from) && self.nodes.contains_key(to),
            "add both nodes before the edge {from}-[{rel}]->{to}"
        );
        let rec = EdgeRecord {
            from: from.into(),
            rel: rel.into(),
            to: to.into(),
            props: object(props),
        };
        let old = self
            .out
            .entry(from.into())
            .or_default()
            .insert((rel.into(), to.into()), rec.clone());
        if old.is_none() {
            self.edge_count += 1;
        }
        self.inc
            .entry(to.into())
            .or_default()
            .insert((rel.into(), from.into()), rec);
        self
    }

    /// The node with this id.
    pub fn get_node(&self, id: &str) -> Option<&NodeRecord> {
        self.nodes.get(id)
    }

    /// The edge `(from)-[rel]->(to)`.
    pub fn get_edge(&self, from: &str, rel: &str, to: &str) -> Option<EdgeRecord> {
        self.out
            .get(from)?
            .get(&(rel.to_owned(), to.to_owned()))
            .cloned()
    }

    /// How many nodes there are.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// How many edges there are.
    pub fn edge_count(&self) -> usize {
        self.edge_count
    }

    /// All edges, ordered by (from, type, to).
    pub fn all_edges(&self) -> Vec<EdgeRecord> {
        let mut out: Vec<EdgeRecord> = self
            .out
            .values()
            .flat_map(|m| m.values().cloned())
            .collect();
        out.sort_by(|a, b| (&a.from, &a.rel, &a.to).cmp(&(&b.from, &b.rel, &b.to)));
        out
    }

    fn has_edges(&self, id: &str) -> bool {
        self.out.get(id).is_some_and(|m| !m.is_empty())
            || self.inc.get(id).is_some_and(|m| !m.is_empty())
    }
}

impl GraphStore for MemStore {
    type Error = MemStoreError;

    fn node(&self, id: &str) -> Result<Option<NodeRecord>, MemStoreError> {
        Ok(self.nodes.get(id).cloned())
    }

    fn scan_nodes(
        &self,
        label: Option<&str>,
        props: &[(String, Json)],
    ) -> Result<NodeIter<'_, MemStoreError>, MemStoreError> {
        let wanted: Vec<(String, Value)> = props
            .iter()
            .map(|(k, v)| (k.clone(), Value::from_json(v)))
            .collect();
        let label = label.map(str::to_owned);
        Ok(Box::new(
            self.nodes
                .values()
                .filter(move |n| label.is_none() || n.label == label)
                .filter(move |n| {
                    wanted.iter().all(|(k, v)| {
                        n.props
                            .get(k)
                            .is_some_and(|p| Value::from_json(p).equals(v) == Some(true))
                    })
                })
                .cloned()
                .map(Ok),
        ))
    }

    fn edges(
        &self,
        node: &str,
        dir: Dir,
        rels: &[String],
    ) -> Result<Vec<EdgeRecord>, MemStoreError> {
        let wanted = |rel: &str| rels.is_empty() || rels.iter().any(|r| r == rel);
        let mut out = Vec::new();
        if matches!(dir, Dir::Out | Dir::Both)
            && let Some(map) = self.out.get(node)
        {
            out.extend(map.values().filter(|e| wanted(&e.rel)).cloned());
        }
        if matches!(dir, Dir::In | Dir::Both)
            && let Some(map) = self.inc.get(node)
        {
            out.extend(
                map.values()
                    .filter(|e| wanted(&e.rel) && !(dir == Dir::Both && e.from == node))
                    .cloned(),
            );
        }
        Ok(out)
    }

    fn edge(&self, from: &str, rel: &str, to: &str) -> Result<Option<EdgeRecord>, MemStoreError> {
        Ok(self.get_edge(from, rel, to))
    }
}

impl GraphStoreMut for MemStore {
    fn create_node(
        &mut self,
        id: Option<&str>,
        label: Option<&str>,
        props: &Map<String, Json>,
    ) -> Result<NodeRecord, MemStoreError> {
        let id = match id {
            Some(id) if self.nodes.contains_key(id) => {
                return Err(MemStoreError(format!("node {id:?} already exists")));
            }
            Some(id) => id.to_owned(),
            None => loop {
                self.next_id += 1;
                let id = format!("n{}", self.next_id);
                if !self.nodes.contains_key(&id) {
                    break id;
                }
            },
        };
        let rec = NodeRecord {
            id: id.clone(),
            label: label.map(str::to_owned),
            props: props.clone(),
        };
        self.nodes.insert(id, rec.clone());
        Ok(rec)
    }

    fn create_edge(
        &mut self,
        from: &str,
        rel: &str,
        to: &str,
        props: &Map<String, Json>,
    ) -> Result<EdgeRecord, MemStoreError> {
        for id in [from, to] {
            if !self.nodes.contains_key(id) {
                return Err(MemStoreError(format!("node {id:?} does not exist")));
            }
        }
        self.add_edge(from, rel, to, Json::Object(props.clone()));
        Ok(self.get_edge(from, rel, to).expect("just added"))
    }

    fn set_node_props(&mut self, id: &str, props: &Map<String, Json>) -> Result<(), MemStoreError> {
        match self.nodes.get_mut(id) {
            Some(n) => {
                n.props = props.clone();
                Ok(())
            }
            None => Err(MemStoreError(format!("node {id:?} does not exist"))),
        }
    }

    fn set_node_label(&mut self, id: &str, label: Option<&str>) -> Result<(), MemStoreError> {
        match self.nodes.get_mut(id) {
            Some(n) => {
                n.label = label.map(str::to_owned);
                Ok(())
            }
            None => Err(MemStoreError(format!("node {id:?} does not exist"))),
        }
    }

    fn set_edge_props(
        &mut self,
        from: &str,
        rel: &str,
        to: &str,
        props: &Map<String, Json>,
    ) -> Result<(), MemStoreError> {
        let key = (rel.to_owned(), to.to_owned());
        match self.out.get_mut(from).and_then(|m| m.get_mut(&key)) {
            Some(e) => e.props = props.clone(),
            None => {
                return Err(MemStoreError(format!(
                    "edge {from}-[{rel}]->{to} does not exist"
                )));
            }
        }
        if let Some(e) = self
            .inc
            .get_mut(to)
            .and_then(|m| m.get_mut(&(rel.to_owned(), from.to_owned())))
        {
            e.props = props.clone();
        }
        Ok(())
    }

    fn delete_node(&mut self, id: &str) -> Result<(), MemStoreError> {
        if self.has_edges(id) {
            return Err(MemStoreError(format!("node {id:?} still has edges")));
        }
        self.out.remove(id);
        self.inc.remove(id);
        self.nodes
            .remove(id)
            .map(|_| ())
            .ok_or_else(|| MemStoreError(format!("node {id:?} does not exist")))
    }

    fn delete_edge(&mut self, from: &str, rel: &str, to: &str) -> Result<bool, MemStoreError> {
        let removed = self
            .out
            .get_mut(from)
            .and_then(|m| m.remove(&(rel.to_owned(), to.to_owned())));
        if removed.is_none() {
            return Ok(false);
        }
        if let Some(m) = self.inc.get_mut(to) {
            m.remove(&(rel.to_owned(), from.to_owned()));
        }
        self.edge_count -= 1;
        Ok(true)
    }
}
