//! The planner starts at the most selective node and pushes filters into the store; the
//! executor copes with stores that list self-loops twice.

mod common;

use std::cell::RefCell;

use common::*;
use pluresdb_cypher::{
    Dir, EdgeRecord, ExecOptions, GraphStore, MemStore, MemStoreError, NodeIter, NodeRecord,
    execute_read,
};
use serde_json::{Value as Json, json};

/// Wraps a MemStore and records the calls the executor makes.
struct Recording {
    inner: MemStore,
    calls: RefCell<Vec<String>>,
    /// List self-loops twice for `Dir::Both`, like a store that unions out- and in-edges.
    double_loops: bool,
}

impl Recording {
    fn new(inner: MemStore) -> Recording {
        Recording {
            inner,
            calls: RefCell::new(Vec::new()),
            double_loops: false,
        }
    }

    fn calls(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }

    fn query(&self, q: &str) -> pluresdb_cypher::QueryResult {
        self.calls.borrow_mut().clear();
        execute_read(self, q, &params(json!({})), &ExecOptions::default()).unwrap()
    }
}

impl GraphStore for Recording {
    type Error = MemStoreError;

    fn node(&self, id: &str) -> Result<Option<NodeRecord>, MemStoreError> {
        self.calls.borrow_mut().push(format!("node {id}"));
        self.inner.node(id)
    }

    fn scan_nodes(
        &self,
        label: Option<&str>,
        props: &[(String, Json)],
    ) -> Result<NodeIter<'_, MemStoreError>, MemStoreError> {
        let props: Vec<String> = props.iter().map(|(k, v)| format!("{k}={v}")).collect();
        self.calls.borrow_mut().push(format!(
            "scan {} [{}]",
            label.unwrap_or("*"),
            props.join(",")
        ));
        self.inner.scan_nodes(label, &[])
    }

    fn edges(
        &self,
        node: &str,
        dir: Dir,
        rels: &[String],
    ) -> Result<Vec<EdgeRecord>, MemStoreError> {
        self.calls
            .borrow_mut()
            .push(format!("edges {node} {dir:?} [{}]", rels.join(",")));
        let mut out = self.inner.edges(node, dir, rels)?;
        if self.double_loops && dir == Dir::Both {
            let loops: Vec<EdgeRecord> = out.iter().filter(|e| e.from == e.to).cloned().collect();
            out.extend(loops);
        }
        Ok(out)
    }

    fn edge(&self, from: &str, rel: &str, to: &str) -> Result<Option<EdgeRecord>, MemStoreError> {
        self.calls
            .borrow_mut()
            .push(format!("edge {from} {rel} {to}"));
        self.inner.edge(from, rel, to)
    }
}

#[test]
fn starts_from_an_id_on_either_end() {
    let s = Recording::new(social());
    let r = s.query("MATCH (a)-[:KNOWS]->(b {id: 'bob'}) RETURN a.id");
    assert_eq!(rows(&r), json!([["ada"]]));
    assert_eq!(s.calls()[..2], ["node bob", "edges bob In [KNOWS]"]);
    assert!(
        !s.calls().iter().any(|c| c.starts_with("scan")),
        "{:?}",
        s.calls()
    );
    let r = s.query("MATCH (a)-[:KNOWS*1..2]->(b) WHERE b.id = 'dee' RETURN a.id ORDER BY a.id");
    assert_eq!(col(&r, 0), [json!("ada"), json!("bob"), json!("cy")]);
    assert_eq!(s.calls()[0], "node dee");
    assert!(
        !s.calls().iter().any(|c| c.starts_with("scan")),
        "{:?}",
        s.calls()
    );
    let r = s.query("MATCH (n) WHERE id(n) IN ['cy', 'ada'] RETURN n.id");
    assert_eq!(col(&r, 0), [json!("cy"), json!("ada")]);
    assert_eq!(s.calls(), ["node cy", "node ada"]);
}

#[test]
fn pushes_labels_and_property_equalities_into_scans() {
    let s = Recording::new(social());
    s.query("MATCH (a:Person {name: 'Ada'})-[:KNOWS]->(b) RETURN b");
    assert_eq!(s.calls()[0], "scan Person [name=\"Ada\"]");
    s.query("MATCH (b)<-[:KNOWS]-(a) WHERE a.name = 'Ada' AND a:Person RETURN b");
    assert_eq!(s.calls()[0], "scan Person [name=\"Ada\"]");
    // A join on a property narrows the second scan with the value from the first.
    let r = s.query("MATCH (a {id: 'ada'}), (b:Person) WHERE b.name = a.name RETURN b.id");
    assert_eq!(rows(&r), json!([["ada"]]));
    assert_eq!(s.calls(), ["node ada", "scan Person [name=\"Ada\"]"]);
    // The label side is preferred over an unconstrained one.
    s.query("MATCH (x)-[:WORKS_AT]->(c:Company) RETURN x");
    assert_eq!(s.calls()[0], "scan Company []");
}

#[test]
fn joins_known_ends_with_point_lookups() {
    let s = Recording::new(social());
    let r = s.query(
        "MATCH (a {id: 'ada'}), (b {id: 'bob'}) MATCH (a)-[r:KNOWS|LIKES]->(b) RETURN type(r)",
    );
    assert_eq!(rows(&r), json!([["KNOWS"]]));
    assert_eq!(
        s.calls(),
        [
            "node ada",
            "node bob",
            "edge ada KNOWS bob",
            "edge ada LIKES bob"
        ]
    );
}

#[test]
fn self_loops_are_matched_once_even_if_the_store_lists_them_twice() {
    let mut g = MemStore::new();
    g.add_node("a", None, json!({}))
        .add_node("b", None, json!({}))
        .add_edge("a", "SELF", "a", json!({}))
        .add_edge("a", "R", "b", json!({}));
    let mut s = Recording::new(g);
    s.double_loops = true;
    let r = s.query("MATCH ({id: 'a'})-[r]-(x) RETURN type(r), x.id ORDER BY x.id");
    assert_eq!(rows(&r), json!([["SELF", "a"], ["R", "b"]]));
    let r =
        s.query("MATCH ({id: 'a'})-[rs*1..3]-(x) RETURN size(rs), x.id ORDER BY size(rs), x.id");
    // The loop, the edge to b, and the loop followed by the edge to b.
    assert_eq!(rows(&r), json!([[1, "a"], [1, "b"], [2, "b"]]));
}

#[test]
fn public_types_are_thread_safe() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<pluresdb_cypher::Query>();
    assert_send_sync::<pluresdb_cypher::CypherError>();
    assert_send_sync::<pluresdb_cypher::QueryResult>();
    assert_send_sync::<MemStore>();
}
