//! Update clauses: CREATE, MERGE, SET, REMOVE, DELETE, DETACH DELETE and their counters.

mod common;

use common::*;
use pluresdb_cypher::{ErrorKind, GraphStore, MemStore};
use serde_json::json;

#[test]
fn create_nodes_and_relationships_and_return_them() {
    let mut g = MemStore::new();
    let r = run(
        &mut g,
        "CREATE (a:Person {id: 'ada', name: 'Ada', tags: ['x'], meta: {k: 1}, gone: null})\
         -[r:KNOWS {since: 2010}]->(b:Person {name: 'Bob'}) RETURN a, r.since, b.name, b.id",
    );
    assert_eq!(
        r.rows[0][0],
        json!({"id": "ada", "type": "Person", "data": {"name": "Ada", "tags": ["x"], "meta": {"k": 1}}})
    );
    assert_eq!(r.rows[0][1], json!(2010));
    assert_eq!(r.rows[0][2], json!("Bob"));
    let bob_id = r.rows[0][3].as_str().unwrap().to_owned();
    assert!(g.get_node(&bob_id).is_some());
    assert!(g.get_edge("ada", "KNOWS", &bob_id).is_some());
    let c = r.counters;
    assert_eq!(
        (
            c.nodes_created,
            c.relationships_created,
            c.properties_set,
            c.labels_added
        ),
        (2, 1, 5, 2)
    );
    // Left-pointing relationships, several patterns, reuse of a created variable.
    let r = run(
        &mut g,
        "CREATE (x {id: 'x'}), (y {id: 'y'}), (x)<-[:A]-(y), (x)-[:B]->(y) RETURN x.id, y.id",
    );
    assert_eq!(rows(&r), json!([["x", "y"]]));
    assert!(g.get_edge("y", "A", "x").is_some() && g.get_edge("x", "B", "y").is_some());
}

#[test]
fn create_per_matched_row_and_between_matched_nodes() {
    let mut g = social();
    let r = run(
        &mut g,
        "MATCH (p:Person) WHERE p.age > 40 CREATE (p)-[:TAGGED]->(:Tag {name: p.name + '!'}) RETURN count(*)",
    );
    assert_eq!(rows(&r), json!([[2]]));
    assert_eq!(r.counters.nodes_created, 2);
    let r = run(
        &mut g,
        "MATCH (p)-[:TAGGED]->(t:Tag) RETURN p.id, t.name ORDER BY p.id",
    );
    assert_eq!(rows(&r), json!([["bob", "Bob!"], ["dee", "Dee!"]]));
    // A query does not see its own writes half way: MATCH-then-CREATE of the same label stops.
    let r = run(
        &mut g,
        "MATCH (t:Tag) CREATE (:Tag {name: 'copy'}) RETURN count(*)",
    );
    assert_eq!(rows(&r), json!([[2]]));
}

#[test]
fn create_relationship_that_exists_merges_properties() {
    let mut g = social();
    let r = run(
        &mut g,
        "MATCH (a {id: 'ada'}), (b {id: 'bob'}) CREATE (a)-[r:KNOWS {weight: 2}]->(b) RETURN r",
    );
    assert_eq!(
        rows(&r),
        json!([[{"from": "ada", "relation": "KNOWS", "to": "bob", "data": {"since": 2010, "weight": 2}}]])
    );
    assert_eq!(r.counters.relationships_created, 0);
    assert_eq!(g.edge_count(), 8);
}

#[test]
fn create_with_parameters_and_unwind() {
    let mut g = MemStore::new();
    let people = json!({"people": [{"id": "b", "name": "B"}, {"id": "a", "name": "A"}]});
    let r = run_p(
        &mut g,
        "UNWIND $people AS p CREATE (n:Person {id: p.id, name: p.name}) RETURN n.id ORDER BY n.name",
        people.clone(),
    );
    assert_eq!(rows(&r), json!([["a"], ["b"]]));
    // `SET n = map` cannot change the id the node was created with.
    let e = fail_p(
        &mut g,
        "UNWIND $people AS p CREATE (n:Person) SET n = p",
        people,
    );
    assert!(e.message().contains("id cannot be changed"), "{e}");
    let r = run_p(
        &mut g,
        "UNWIND $people AS p CREATE (n:Person $p2) RETURN count(n)",
        json!({"people": [1, 2, 3], "p2": {"name": "same"}}),
    );
    assert_eq!(rows(&r), json!([[3]]));
}

#[test]
fn create_errors() {
    let mut g = social();
    let e = fail(&mut g, "CREATE (n {id: 'ada'})");
    assert_eq!(e.kind(), ErrorKind::Runtime);
    assert!(e.message().contains("already exists"), "{e}");
    let e = fail(&mut g, "CREATE (n {id: 5})");
    assert!(e.message().contains("non-empty string"), "{e}");
    let e = fail(&mut g, "CREATE (a)-[:X]-(b)");
    assert_eq!(e.kind(), ErrorKind::Semantic);
    assert!(
        e.message()
            .starts_with("a relationship to create needs a direction"),
        "{e}"
    );
    let e = fail(&mut g, "CREATE (a)-[]->(b)");
    assert!(e.message().contains("exactly one type"), "{e}");
    let e = fail(&mut g, "MATCH (a {id: 'ada'}) CREATE (a:Person)");
    assert!(e.message().contains("already bound"), "{e}");
    let e = fail(&mut g, "CREATE (a {v: [1, {x: (a)}]})");
    assert!(e.message().contains("not defined"), "{e}");
    let e = fail(&mut g, "MATCH (a {id: 'ada'}) CREATE (b {friend: a})");
    assert!(e.message().contains("cannot store a NODE"), "{e}");
    // The failed queries created nothing.
    assert_eq!(g.node_count(), 6);
}

#[test]
fn merge_is_idempotent() {
    let mut g = MemStore::new();
    for round in 0..3 {
        let r = run(
            &mut g,
            "MERGE (a:Person {id: 'ada'}) ON CREATE SET a.created = true ON MATCH SET a.seen = coalesce(a.seen, 0) + 1 \
             MERGE (b:Person {name: 'Bob'}) \
             MERGE (a)-[r:KNOWS]->(b) RETURN a.seen, b.name",
        );
        assert_eq!(
            r.rows[0][0],
            if round == 0 {
                json!(null)
            } else {
                json!(round)
            }
        );
        if round == 0 {
            assert_eq!(
                (r.counters.nodes_created, r.counters.relationships_created),
                (2, 1)
            );
        } else {
            assert_eq!(
                (r.counters.nodes_created, r.counters.relationships_created),
                (0, 0)
            );
        }
    }
    assert_eq!((g.node_count(), g.edge_count()), (2, 1));
    assert_eq!(
        g.get_node("ada").unwrap().props.get("created"),
        Some(&json!(true))
    );
}

#[test]
fn merge_on_an_id_taken_by_a_node_that_does_not_match_says_why() {
    let mut g = MemStore::new();
    run(&mut g, "CREATE (:Person {id: 'ada', name: 'Ada'})");
    for q in [
        "MERGE (n:Robot {id: 'ada'})",
        "MERGE (a {id: 'ada'})-[:KNOWS]->(b {id: 'bob'})",
    ] {
        let e = fail(&mut g, q);
        assert!(
            e.message().contains("does not match the whole pattern"),
            "{q}: {e}"
        );
        assert!(!e.message().contains("use MERGE"), "{q}: {e}");
    }
    let e = fail(&mut g, "CREATE (n {id: 'ada'})");
    assert!(
        e.message().contains("use MERGE to match or create it"),
        "{e}"
    );
}

#[test]
fn merge_relationship_patterns() {
    let mut g = social();
    // Undirected MERGE matches either direction...
    let r = run(
        &mut g,
        "MATCH (a {id: 'bob'}), (b {id: 'ada'}) MERGE (a)-[:KNOWS]-(b) RETURN count(*)",
    );
    assert_eq!(
        (rows(&r), r.counters.relationships_created),
        (json!([[1]]), 0)
    );
    // ...and creates left to right.
    let r = run(
        &mut g,
        "MATCH (a {id: 'eve'}), (b {id: 'cy'}) MERGE (a)-[:KNOWS]-(b)",
    );
    assert_eq!(r.counters.relationships_created, 1);
    assert!(g.get_edge("eve", "KNOWS", "cy").is_some());
    // A whole path: created in full when it does not match.
    let r = run(
        &mut g,
        "MERGE (x:City {name: 'Oslo'})<-[:LIVES_IN]-(p:Person {name: 'Zed'}) RETURN p.name",
    );
    assert_eq!(
        (r.counters.nodes_created, r.counters.relationships_created),
        (2, 1)
    );
    let r = run(
        &mut g,
        "MERGE (x:City {name: 'Oslo'})<-[:LIVES_IN]-(p:Person {name: 'Zed'}) RETURN p.name",
    );
    assert_eq!((r.counters.nodes_created, rows(&r)), (0, json!([["Zed"]])));
    // Per row, later rows see earlier rows' creations.
    let r = run(
        &mut g,
        "UNWIND ['a', 'b', 'a'] AS k MERGE (t:Tag {k: k}) RETURN count(DISTINCT t)",
    );
    assert_eq!((rows(&r), r.counters.nodes_created), (json!([[2]]), 2));
    let e = fail_p(&mut g, "MERGE (t:Tag {k: $k})", json!({"k": null}));
    assert!(e.message().contains("null"), "{e}");
    let e = fail(&mut g, "MATCH (a {id: 'ada'}) MERGE (a)");
    assert_eq!(e.kind(), ErrorKind::Semantic);
}

#[test]
fn set_and_remove() {
    let mut g = social();
    let r = run(
        &mut g,
        "MATCH (a {id: 'ada'}) SET a.age = a.age + 1, a.city = 'Oslo', a:Admin RETURN a.age, a.city, labels(a)",
    );
    assert_eq!(rows(&r), json!([[37, "Oslo", ["Admin"]]]));
    assert_eq!(
        (
            r.counters.properties_set,
            r.counters.labels_added,
            r.counters.labels_removed
        ),
        (2, 1, 1)
    );
    let r = run(
        &mut g,
        "MATCH (a {id: 'ada'}) SET a += {city: null, x: 1} RETURN properties(a)",
    );
    assert_eq!(rows(&r), json!([[{"name": "Ada", "age": 37, "x": 1}]]));
    let r = run(
        &mut g,
        "MATCH (a {id: 'ada'}) SET a = {only: true} RETURN properties(a), a.id",
    );
    assert_eq!(rows(&r), json!([[{"only": true}, "ada"]]));
    let r = run(
        &mut g,
        "MATCH (a {id: 'ada'}) REMOVE a.only, a:Admin RETURN properties(a), labels(a)",
    );
    assert_eq!(rows(&r), json!([[{}, []]]));
    assert_eq!(g.get_node("ada").unwrap().label, None);
    // Relationship properties.
    let r = run(
        &mut g,
        "MATCH ({id: 'ada'})-[r:KNOWS]->({id: 'bob'}) SET r.since = 2011, r.w = 1 RETURN r.since",
    );
    assert_eq!(rows(&r), json!([[2011]]));
    assert_eq!(
        g.get_edge("ada", "KNOWS", "bob").unwrap().props,
        *json!({"since": 2011, "w": 1}).as_object().unwrap()
    );
    // The id is the node's identity.
    let e = fail(&mut g, "MATCH (a {id: 'bob'}) SET a.id = 'robert'");
    assert!(e.message().contains("id cannot be changed"), "{e}");
    let r = run(&mut g, "MATCH (a {id: 'bob'}) SET a.id = 'bob' RETURN a.id");
    assert_eq!(rows(&r), json!([["bob"]]));
    // SET on null (from OPTIONAL MATCH) does nothing.
    let r = run(
        &mut g,
        "OPTIONAL MATCH (n {id: 'nobody'}) SET n.x = 1 RETURN n",
    );
    assert_eq!(rows(&r), json!([[null]]));
}

#[test]
fn delete_and_detach_delete() {
    let mut g = social();
    let e = fail(&mut g, "MATCH (n {id: 'ada'}) DELETE n");
    assert_eq!(e.kind(), ErrorKind::Runtime);
    assert!(
        e.message()
            .contains("still has 5 relationships; use DETACH DELETE"),
        "{e}"
    );
    // Deleting the relationships in the same clause is fine.
    let r = run(&mut g, "MATCH (n {id: 'eve'})-[r]-() DELETE n, r");
    assert_eq!(
        (r.counters.nodes_deleted, r.counters.relationships_deleted),
        (1, 1)
    );
    let r = run(
        &mut g,
        "MATCH (n {id: 'ada'}) DETACH DELETE n RETURN n.name",
    );
    assert_eq!(rows(&r), json!([["Ada"]]));
    assert_eq!(
        (r.counters.nodes_deleted, r.counters.relationships_deleted),
        (1, 4)
    );
    assert!(g.get_node("ada").is_none());
    assert_eq!(
        g.edges("bob", pluresdb_cypher::Dir::Both, &[])
            .unwrap()
            .len(),
        2
    );
    // Relationships alone; deleting twice in one query counts once.
    let r = run(&mut g, "MATCH (a)-[r:KNOWS]-(b) DELETE r");
    assert_eq!(r.counters.relationships_deleted, 2);
    let r = run(&mut g, "MATCH (n) DETACH DELETE n");
    assert_eq!(
        (r.counters.nodes_deleted, r.counters.relationships_deleted),
        (4, 1)
    );
    assert_eq!((g.node_count(), g.edge_count()), (0, 0));
    // A path.
    let mut g = social();
    let r = run(
        &mut g,
        "MATCH p = ({id: 'eve'})-[:LIKES]->(:Person) DETACH DELETE p",
    );
    assert_eq!(r.counters.nodes_deleted, 2);
}

#[test]
fn queries_without_return_report_counters_only() {
    let mut g = MemStore::new();
    let r = run(&mut g, "CREATE (:A), (:A), (:B)");
    assert!(r.columns.is_empty() && r.rows.is_empty());
    assert!(r.counters.contains_updates());
    assert_eq!(r.to_json()["counters"]["nodes_created"], json!(3));
    let r = run(
        &mut g,
        "MATCH (n:A) WITH count(n) AS c CREATE (:Count {c: c})",
    );
    assert_eq!(r.counters.nodes_created, 1);
    let r = run(&mut g, "MATCH (n:Count) RETURN n.c");
    assert_eq!(rows(&r), json!([[2]]));
}
