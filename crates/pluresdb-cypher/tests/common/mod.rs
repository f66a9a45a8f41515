//! Shared helpers: a small social graph and shortcuts to run queries.
#![allow(dead_code)]

use pluresdb_cypher::{CypherError, ExecOptions, MemStore, QueryResult, execute};
use serde_json::{Map, Value as Json, json};

/// People who know each other in a cycle, a company, and a like:
///
/// ada -KNOWS{since:2010}-> bob -KNOWS-> cy -KNOWS-> dee -KNOWS-> ada, ada -KNOWS-> cy,
/// ada -WORKS_AT-> acme, bob -WORKS_AT-> acme, eve -LIKES-> ada.
pub fn social() -> MemStore {
    let mut s = MemStore::new();
    s.add_node("ada", Some("Person"), json!({"name": "Ada", "age": 36}))
        .add_node("bob", Some("Person"), json!({"name": "Bob", "age": 41}))
        .add_node("cy", Some("Person"), json!({"name": "Cy", "age": 25}))
        .add_node("dee", Some("Person"), json!({"name": "Dee", "age": 52}))
        .add_node("eve", Some("Person"), json!({"name": "Eve"}))
        .add_node("acme", Some("Company"), json!({"name": "Acme"}))
        .add_edge("ada", "KNOWS", "bob", json!({"since": 2010}))
        .add_edge("bob", "KNOWS", "cy", json!({}))
        .add_edge("cy", "KNOWS", "dee", json!({}))
        .add_edge("dee", "KNOWS", "ada", json!({}))
        .add_edge("ada", "KNOWS", "cy", json!({}))
        .add_edge("ada", "WORKS_AT", "acme", json!({}))
        .add_edge("bob", "WORKS_AT", "acme", json!({}))
        .add_edge("eve", "LIKES", "ada", json!({}));
    s
}

pub fn params(v: Json) -> Map<String, Json> {
    v.as_object().cloned().expect("params must be an object")
}

pub fn run(store: &mut MemStore, q: &str) -> QueryResult {
    run_p(store, q, json!({}))
}

pub fn run_p(store: &mut MemStore, q: &str, p: Json) -> QueryResult {
    match execute(store, q, &params(p), &ExecOptions::default()) {
        Ok(r) => r,
        Err(e) => panic!("query failed: {q}\n{e}"),
    }
}

pub fn fail(store: &mut MemStore, q: &str) -> CypherError {
    fail_p(store, q, json!({}))
}

pub fn fail_p(store: &mut MemStore, q: &str, p: Json) -> CypherError {
    match execute(store, q, &params(p), &ExecOptions::default()) {
        Ok(r) => panic!("query should have failed: {q}\ngot {:?}", r.rows),
        Err(e) => e,
    }
}

/// The rows as JSON arrays, for compact assertions.
pub fn rows(r: &QueryResult) -> Json {
    Json::Array(r.rows.iter().map(|row| Json::Array(row.clone())).collect())
}

/// One column's values.
pub fn col(r: &QueryResult, i: usize) -> Vec<Json> {
    r.rows.iter().map(|row| row[i].clone()).collect()
}

/// The rows sorted by their JSON text (for order-independent checks).
pub fn sorted_rows(r: &QueryResult) -> Vec<String> {
    let mut out: Vec<String> = r
        .rows
        .iter()
        .map(|row| Json::Array(row.clone()).to_string())
        .collect();
    out.sort();
    out
}
