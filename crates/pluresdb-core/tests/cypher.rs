//! Cypher through the database: reads walk the graph, writes go through the node and edge API
//! in one transaction (all or nothing), errors point at the position.

use pluresdb_core::{CypherOptions, Database, ErrorKind};
use serde_json::json;

fn people(db: &Database) {
    for (id, name, age) in [
        ("ada", "Ada", 36),
        ("bob", "Bob", 25),
        ("cy", "Cy", 41),
        ("dee", "Dee", 33),
        ("eve", "Eve", 52),
    ] {
        db.put(id, &json!({"name": name, "age": age})).unwrap();
        db.set_type(id, Some("Person")).unwrap();
    }
    for (a, b) in [
        ("ada", "bob"),
        ("bob", "cy"),
        ("cy", "dee"),
        ("dee", "eve"),
        ("cy", "ada"),
    ] {
        db.link(a, "KNOWS", b, Some(&json!({"since": 2020})))
            .unwrap();
    }
}

#[test]
fn the_issue_example_runs_on_the_graph() {
    let db = Database::open_in_memory().unwrap();
    people(&db);
    let r = db
        .cypher(
            "MATCH (a:Person {name: 'Ada'})-[:KNOWS*1..3]->(b) WHERE b.age > 30
             RETURN b.name, count(*) ORDER BY b.name LIMIT 10",
            &json!({}),
        )
        .unwrap();
    assert_eq!(r.columns, ["b.name", "count(*)"]);
    // ada->bob->cy (41), ->dee (33); ada itself via the cycle cy->ada (36) at 3 hops.
    assert_eq!(
        r.rows,
        vec![
            vec![json!("Ada"), json!(1)],
            vec![json!("Cy"), json!(1)],
            vec![json!("Dee"), json!(1)]
        ]
    );
    let r = db
        .cypher(
            "MATCH (p:Person)-[k:KNOWS]->(q) WHERE p.id = $id RETURN q.id, k.since",
            &json!({"id": "cy"}),
        )
        .unwrap();
    assert_eq!(r.rows.len(), 2);
    assert!(r.rows.contains(&vec![json!("ada"), json!(2020)]));
}

#[test]
fn writes_go_through_the_store_and_replicate() {
    let db = Database::open_in_memory().unwrap();
    people(&db);
    let r = db
        .cypher(
            "MATCH (a:Person {name: 'Ada'}) CREATE (a)-[:WROTE {year: 1843}]->(n:Paper {id: 'notes', title: 'Notes'}) RETURN n",
            &json!({}),
        )
        .unwrap();
    assert_eq!(r.counters.nodes_created, 1);
    assert_eq!(r.counters.relationships_created, 1);
    let paper = db.get_node("notes").unwrap().unwrap();
    assert_eq!(paper.node_type.as_deref(), Some("Paper"));
    assert_eq!(paper.data["title"], "Notes");
    assert_eq!(
        db.get_edge("ada", "WROTE", "notes").unwrap().unwrap().data["year"],
        1843
    );
    // MERGE is idempotent.
    for _ in 0..2 {
        db.cypher("MERGE (t:Topic {id: 'math'}) ON CREATE SET t.hits = 1 ON MATCH SET t.hits = t.hits + 1", &json!({}))
            .unwrap();
    }
    assert_eq!(db.get_node("math").unwrap().unwrap().data["hits"], 2);
    // SET and DETACH DELETE.
    db.cypher("MATCH (p:Person {id: 'bob'}) SET p.age = 26", &json!({}))
        .unwrap();
    assert_eq!(db.get_node("bob").unwrap().unwrap().data["age"], 26);
    let r = db
        .cypher("MATCH (p {id: 'eve'}) DETACH DELETE p", &json!({}))
        .unwrap();
    assert_eq!(r.counters.nodes_deleted, 1);
    assert!(db.get_node("eve").unwrap().is_none());
    assert!(db.get_edge("dee", "KNOWS", "eve").unwrap().is_none());
    // Reads see the writes at once (the in-memory graph caught up).
    let r = db
        .cypher(
            "MATCH (:Person {id: 'ada'})-[:WROTE]->(p) RETURN p.title",
            &json!({}),
        )
        .unwrap();
    assert_eq!(r.rows, vec![vec![json!("Notes")]]);
    // And the writes replicate like API writes.
    let other = Database::open_in_memory().unwrap();
    other
        .apply_changes(&db.changes_since(0, None).unwrap().changes)
        .unwrap();
    assert_eq!(
        other.get_node("notes").unwrap().unwrap().data["title"],
        "Notes"
    );
    assert!(other.get_node("eve").unwrap().is_none());
}

#[test]
fn a_failing_write_query_changes_nothing() {
    let db = Database::open_in_memory().unwrap();
    people(&db);
    // The second CREATE fails (an existing id): the first must not stay.
    let err = db
        .cypher(
            "CREATE (:Tmp {id: 'fresh'}) CREATE (:Tmp {id: 'ada'})",
            &json!({}),
        )
        .unwrap_err();
    assert!(err.to_string().contains("ada"), "{err}");
    assert!(db.get_node("fresh").unwrap().is_none(), "rolled back");
    // DELETE of a node with edges needs DETACH.
    let err = db
        .cypher("MATCH (p {id: 'cy'}) DELETE p", &json!({}))
        .unwrap_err()
        .to_string();
    assert!(err.to_lowercase().contains("detach"), "{err}");
    assert!(db.get_node("cy").unwrap().is_some());
}

#[test]
fn bad_queries_point_at_the_problem() {
    let db = Database::open_in_memory().unwrap();
    people(&db);
    let err = db
        .cypher("MATCH (a:Person RETURN a", &json!({}))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Syntax);
    assert_eq!(err.offset(), Some(16));
    assert!(err.to_string().contains("expected ')'"), "{err}");
    assert!(
        err.to_string().contains('^'),
        "a caret under the position: {err}"
    );
    let err = db
        .cypher("MATCH (a) RETURN b", &json!({}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("b"), "{err}");
    let err = db
        .cypher("MATCH (a) WHERE a.id = $who RETURN a", &json!({}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("who"), "{err}");
    let err = db.cypher("RETURN 1", &json!([1])).unwrap_err().to_string();
    assert!(err.contains("JSON object"), "{err}");
    // A huge depth on a dense graph is bounded with a clear message.
    let ids: Vec<String> = (0..12).map(|i| format!("k{i}")).collect();
    for id in &ids {
        db.put(id, &json!({})).unwrap();
    }
    let edges: Vec<(&str, &str, &str, Option<&serde_json::Value>)> = ids
        .iter()
        .flat_map(|a| ids.iter().map(move |b| (a.as_str(), "X", b.as_str(), None)))
        .collect();
    db.link_many(edges).unwrap();
    let opts = CypherOptions {
        max_paths: 50_000,
        ..CypherOptions::default()
    };
    let err = db
        .cypher_with(
            "MATCH (a {id: 'k0'})-[:X*..50]->(b) RETURN count(*)",
            &json!({}),
            &opts,
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("more than 50000 paths"), "{err}");
    let r = db
        .cypher_with(
            "MATCH (a {id: 'k0'})-[:X*..50]->(b) RETURN b.id LIMIT 3",
            &json!({}),
            &opts,
        )
        .unwrap();
    assert_eq!(r.rows.len(), 3, "a LIMIT stops the walk early");
}

#[test]
fn property_keys_a_json_path_cannot_name_still_match() {
    let db = Database::open_in_memory().unwrap();
    db.put("q", &json!({"say \"hi\"": 1, "plain": 2})).unwrap();
    db.put("r", &json!({"say \"hi\"": 3, "plain": 2})).unwrap();
    let r = db
        .cypher(
            "MATCH (n {`say \"hi\"`: 1, plain: 2}) RETURN n.id",
            &json!({}),
        )
        .unwrap();
    assert_eq!(r.rows, vec![vec![json!("q")]]);
}

#[test]
fn property_keys_with_backslashes_match_when_pushed_into_sql() {
    let db = Database::open_in_memory().unwrap();
    db.put("c", &json!({"a\\b": 1, "q\"r\\": 2})).unwrap();
    db.put("d", &json!({"a\\b": 2})).unwrap();
    for q in [
        "MATCH (n {`a\\b`: 1}) RETURN n.id",
        "MATCH (n {`q\"r\\`: 2}) RETURN n.id",
        "MATCH (n) WHERE n.`a\\b` = 1 RETURN n.id",
    ] {
        let r = db.cypher(q, &json!({})).unwrap();
        assert_eq!(r.rows, vec![vec![json!("c")]], "{q}");
    }
}
