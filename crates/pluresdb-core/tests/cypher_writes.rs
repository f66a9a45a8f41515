//! Cypher write paths against real SQLite, compared with Neo4j's documented semantics.

use pluresdb_core::{Database, Direction, ErrorKind, Traverse};
use serde_json::{Value as Json, json};

fn sqlv<T: pluresdb_core::FromValue>(db: &Database, sql: &str, _p: ()) -> pluresdb_core::Result<T> {
    let (v,): (T,) = db.get_as(sql, ()).unwrap().unwrap();
    Ok(v)
}

fn db() -> Database {
    Database::open_in_memory().unwrap()
}

fn q(db: &Database, query: &str, params: Json) -> pluresdb_core::CypherResult {
    db.cypher(query, &params)
        .unwrap_or_else(|e| panic!("{query}: {e}"))
}

#[test]
fn create_then_read_back_everywhere() {
    let db = db();
    let r = q(
        &db,
        "CREATE (a:Person {id: 'ada', name: 'Ada', age: 36})-[:KNOWS {since: 2020}]->(b:Person {id: 'bob', name: 'Bob'}) RETURN a, b",
        json!({}),
    );
    assert_eq!(r.counters.nodes_created, 2);
    assert_eq!(r.counters.relationships_created, 1);
    let ada = db.get_node("ada").unwrap().unwrap();
    assert_eq!(ada.node_type.as_deref(), Some("Person"));
    assert_eq!(
        Json::Object(ada.data.clone()),
        json!({"name": "Ada", "age": 36})
    );
    let w = db
        .traverse(&Traverse::from(["ada"]).relation("KNOWS"))
        .unwrap();
    assert_eq!(w.ids().collect::<Vec<_>>(), ["bob"]);
    let rows: Vec<(String, String, String)> = db
        .all_as("SELECT from_id, relation, to_id FROM pluresdb_edges", ())
        .unwrap();
    assert_eq!(rows, [("ada".into(), "KNOWS".into(), "bob".into())]);
    let rows: Vec<(String, Option<String>)> = db
        .all_as("SELECT id, type FROM pluresdb_nodes ORDER BY id", ())
        .unwrap();
    assert_eq!(rows.len(), 2);
    // Read through Cypher read path (in-memory graph).
    let r = q(
        &db,
        "MATCH (a:Person)-[k:KNOWS]->(b) RETURN a.id, k.since, b.name",
        json!({}),
    );
    assert_eq!(r.rows, [[json!("ada"), json!(2020), json!("Bob")]]);
}

#[test]
fn create_without_id_and_mixing_existing_nodes() {
    let db = db();
    q(&db, "CREATE (:P {id: 'a'}), (:P {id: 'b'})", json!({}));
    let r = q(
        &db,
        "MATCH (a {id: 'a'}), (b {id: 'b'}) CREATE (a)-[:R]->(c:C {name: 'c'})<-[:S]-(b) RETURN c",
        json!({}),
    );
    assert_eq!(r.counters.nodes_created, 1);
    assert_eq!(r.counters.relationships_created, 2);
    let cid = r.rows[0][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        Json::Object(db.get_node(&cid).unwrap().unwrap().data),
        json!({"name": "c"})
    );
    assert_eq!(db.edges("a", Direction::Out, None).unwrap().len(), 1);
    assert_eq!(db.edges("b", Direction::Out, Some("S")).unwrap().len(), 1);
    // self loop
    let r = q(
        &db,
        "MATCH (a {id: 'a'}) CREATE (a)-[:SELF]->(a)",
        json!({}),
    );
    assert_eq!(r.counters.relationships_created, 1);
    let r = q(
        &db,
        "MATCH (a {id: 'a'})-[r:SELF]->(a) RETURN count(r)",
        json!({}),
    );
    assert_eq!(r.rows, [[json!(1)]]);
}

#[test]
fn params_of_every_json_type_round_trip() {
    let db = db();
    let params = json!({
        "s": "x", "i": 42, "neg": -7, "f": 1.5, "whole": 2.0, "t": true, "f2": false,
        "n": null, "list": [1, "a", [2]], "nulls": [1, null], "map": {"k": [1, 2], "m": {"z": 1}},
        "big": 9007199254740993i64, "imax": i64::MAX, "imin": i64::MIN, "empty": [], "emap": {}
    });
    let r = q(
        &db,
        "CREATE (n:T {id: 'n', s: $s, i: $i, neg: $neg, f: $f, whole: $whole, t: $t, f2: $f2, n: $n,
                       list: $list, nulls: $nulls, map: $map, big: $big, imax: $imax, imin: $imin, empty: $empty, emap: $emap})
         RETURN n.s, n.i, n.f, n.whole, n.t, n.n, n.list, n.map, n.big, n.imax, n.imin, n.empty, n.emap",
        params.clone(),
    );
    let returned: Vec<Json> = [
        "s", "i", "f", "whole", "t", "n", "list", "map", "big", "imax", "imin", "empty", "emap",
    ]
    .iter()
    .map(|k| params[k].clone())
    .collect();
    assert_eq!(r.rows, [returned]);
    let node = db.get_node("n").unwrap().unwrap();
    let mut expect = params.as_object().unwrap().clone();
    expect.remove("n");
    assert_eq!(
        Json::Object(node.data.clone()),
        Json::Object(expect.clone())
    );
    let r2 = q(&db, "MATCH (n {id: 'n'}) RETURN properties(n)", json!({}));
    assert_eq!(r2.rows[0][0], Json::Object(expect));
    // Matching by each typed param.
    // A list holding null equals nothing, itself included (Cypher: [1, null] = [1, null] is null).
    let r = q(
        &db,
        "MATCH (n:T) WHERE n.nulls = $nulls RETURN count(n)",
        params.clone(),
    );
    assert_eq!(r.rows, [[json!(0)]]);
    for k in [
        "s", "i", "f", "whole", "t", "f2", "big", "imax", "imin", "list", "map", "empty",
    ] {
        let r = q(
            &db,
            &format!("MATCH (n:T {{{k}: ${k}}}) RETURN count(n)"),
            params.clone(),
        );
        assert_eq!(r.rows, [[json!(1)]], "match by {k}");
        let r = q(
            &db,
            &format!("MATCH (n:T) WHERE n.{k} = ${k} RETURN count(n)"),
            params.clone(),
        );
        assert_eq!(r.rows, [[json!(1)]], "where by {k}");
    }
}

/// JSON integers above i64::MAX have no Cypher integer; they were turned into floats and
/// stored rounded (18446744073709551615 became 1.8446744073709552e19).
#[test]
fn integer_params_beyond_i64_are_refused_not_rounded() {
    let db = db();
    for (query, params) in [
        ("CREATE (n {id: 'n', v: $v})", json!({"v": u64::MAX})),
        (
            "UNWIND $rows AS row CREATE (n {id: row.id, v: row.v})",
            json!({"rows": [{"id": "n", "v": 1}, {"id": "m", "v": [i64::MAX as u64 + 1]}]}),
        ),
    ] {
        let err = db.cypher(query, &params).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        assert!(err.to_string().contains("beyond Cypher's 64-bit"), "{err}");
        assert!(db.get_node("n").unwrap().is_none());
    }
    let r = q(
        &db,
        "CREATE (n {id: 'n', v: $v}) RETURN n.v",
        json!({"v": i64::MAX}),
    );
    assert_eq!(r.rows, [[json!(i64::MAX)]]);
}

#[test]
fn merge_node_semantics() {
    let db = db();
    let r = q(
        &db,
        "MERGE (n:Person {name: 'Ada'}) ON CREATE SET n.created = true ON MATCH SET n.matched = true RETURN n",
        json!({}),
    );
    assert_eq!(r.counters.nodes_created, 1);
    let r = q(
        &db,
        "MERGE (n:Person {name: 'Ada'}) ON CREATE SET n.created2 = true ON MATCH SET n.matched = true RETURN n",
        json!({}),
    );
    assert_eq!(r.counters.nodes_created, 0);
    assert_eq!(
        r.rows[0][0]["data"],
        json!({"name": "Ada", "created": true, "matched": true})
    );
    // UNWIND with duplicates: MERGE sees its own earlier creates.
    let r = q(
        &db,
        "UNWIND [1, 1, 2, 2, 3] AS x MERGE (n:N {k: x}) RETURN count(*)",
        json!({}),
    );
    assert_eq!(r.counters.nodes_created, 3);
    assert_eq!(r.rows, [[json!(5)]]);
    let r = q(&db, "MATCH (n:N) RETURN count(n)", json!({}));
    assert_eq!(r.rows, [[json!(3)]]);
    // MERGE matching several nodes returns each.
    q(&db, "CREATE (:M {g: 1}), (:M {g: 1})", json!({}));
    let r = q(
        &db,
        "MERGE (n:M {g: 1}) ON MATCH SET n.seen = true RETURN count(*)",
        json!({}),
    );
    assert_eq!(r.rows, [[json!(2)]]);
    assert_eq!(r.counters.nodes_created, 0);
}

#[test]
fn merge_relationship_semantics() {
    let db = db();
    q(&db, "CREATE (:P {id: 'a'}), (:P {id: 'b'})", json!({}));
    let m = "MATCH (a {id: 'a'}), (b {id: 'b'}) MERGE (a)-[r:KNOWS]->(b) ON CREATE SET r.n = 1 ON MATCH SET r.n = r.n + 1 RETURN r.n";
    let r = q(&db, m, json!({}));
    assert_eq!(r.rows, [[json!(1)]]);
    assert_eq!(r.counters.relationships_created, 1);
    let r = q(&db, m, json!({}));
    assert_eq!(r.rows, [[json!(2)]]);
    assert_eq!(r.counters.relationships_created, 0);
    // Undirected MERGE matches either direction (Neo4j).
    let r = q(
        &db,
        "MATCH (a {id: 'a'}), (b {id: 'b'}) MERGE (b)-[r:KNOWS]-(a) RETURN count(r)",
        json!({}),
    );
    assert_eq!(r.counters.relationships_created, 0);
    assert_eq!(r.rows, [[json!(1)]]);
    // MERGE a path from a bound node to a new one.
    let r = q(
        &db,
        "MATCH (a {id: 'a'}) MERGE (a)-[:OWNS]->(c:Car {model: 'T'}) RETURN c.model",
        json!({}),
    );
    assert_eq!(r.counters.nodes_created, 1);
    let r = q(
        &db,
        "MATCH (a {id: 'a'}) MERGE (a)-[:OWNS]->(c:Car {model: 'T'}) RETURN c.model",
        json!({}),
    );
    assert_eq!(r.counters.nodes_created, 0);
    assert_eq!(
        db.edges("a", Direction::Out, Some("OWNS")).unwrap().len(),
        1
    );
}

/// Neo4j's MERGE of `(a)-[:R {w: 2}]->(b)` next to an existing `(a)-[:R {w: 1}]->(b)`
/// creates a second relationship. PluresDB keeps one R from a to b, and MERGE used to merge
/// `w: 2` into the existing one: w = 1 silently overwritten, ON CREATE SET run on the old
/// relationship, and 0 relationships created.
#[test]
fn merge_of_a_relationship_with_other_property_values_is_refused() {
    let db = db();
    q(
        &db,
        "CREATE (:P {id: 'a'})-[:R {w: 1}]->(:P {id: 'b'})",
        json!({}),
    );
    let err = db
        .cypher(
            "MATCH (a {id: 'a'}), (b {id: 'b'}) MERGE (a)-[r:R {w: 2}]->(b) ON CREATE SET r.created = true RETURN r",
            &json!({}),
        )
        .unwrap_err();
    assert!(err.to_string().contains("exists with w: 1"), "{err}");
    assert_eq!(
        Json::Object(db.get_edge("a", "R", "b").unwrap().unwrap().data),
        json!({"w": 1})
    );
    let err = db
        .cypher(
            "MATCH (a {id: 'a'}), (b {id: 'b'}) MERGE (a)-[:R {w: 1, since: 2020}]->(b)",
            &json!({}),
        )
        .unwrap_err();
    assert!(err.to_string().contains("exists without since"), "{err}");
    // Equal values (1 = 1.0 in Cypher) match; the pattern's other parts may still be created.
    let r = q(
        &db,
        "MATCH (a {id: 'a'}), (b {id: 'b'}) MERGE (a)-[:R {w: 1.0}]->(b)-[:S]->(c:C {id: 'c'}) RETURN c.id",
        json!({}),
    );
    assert_eq!(r.rows, [[json!("c")]]);
    assert_eq!(
        (r.counters.nodes_created, r.counters.relationships_created),
        (1, 1)
    );
    assert_eq!(
        Json::Object(db.get_edge("a", "R", "b").unwrap().unwrap().data),
        json!({"w": 1})
    );
    // Without the property, MERGE matches and SET changes it.
    let r = q(
        &db,
        "MATCH (a {id: 'a'}), (b {id: 'b'}) MERGE (a)-[r:R]->(b) ON MATCH SET r.w = 2 RETURN r.w",
        json!({}),
    );
    assert_eq!(r.rows, [[json!(2)]]);
}

#[test]
fn set_semantics() {
    let db = db();
    q(&db, "CREATE (:P {id: 'a', x: 1, y: 2, z: 3})", json!({}));
    let r = q(
        &db,
        "MATCH (n {id: 'a'}) SET n.x = null, n.w = 'w' RETURN n",
        json!({}),
    );
    assert_eq!(r.rows[0][0]["data"], json!({"y": 2, "z": 3, "w": "w"}));
    assert_eq!(
        Json::Object(db.get_node("a").unwrap().unwrap().data),
        json!({"y": 2, "z": 3, "w": "w"})
    );
    let r = q(
        &db,
        "MATCH (n {id: 'a'}) SET n += {y: null, v: [1]} RETURN n",
        json!({}),
    );
    assert_eq!(r.rows[0][0]["data"], json!({"z": 3, "w": "w", "v": [1]}));
    let r = q(
        &db,
        "MATCH (n {id: 'a'}) SET n = {k: 1} RETURN n, n.id",
        json!({}),
    );
    assert_eq!(r.rows[0][0]["data"], json!({"k": 1}));
    assert_eq!(r.rows[0][1], json!("a"));
    assert_eq!(
        Json::Object(db.get_node("a").unwrap().unwrap().data),
        json!({"k": 1})
    );
    // SET n = $map with params
    q(
        &db,
        "MATCH (n {id: 'a'}) SET n = $p",
        json!({"p": {"a": 1, "b": null}}),
    );
    assert_eq!(
        Json::Object(db.get_node("a").unwrap().unwrap().data),
        json!({"a": 1})
    );
    // SET sequence in one clause sees earlier items (Neo4j: SET n.a = 2, n.b = n.a -> b = 2)
    let r = q(
        &db,
        "MATCH (n {id: 'a'}) SET n.a = 2, n.b = n.a + 1 RETURN n.b",
        json!({}),
    );
    assert_eq!(r.rows, [[json!(3)]]);
    // REMOVE
    q(&db, "MATCH (n {id: 'a'}) REMOVE n.a", json!({}));
    assert_eq!(
        Json::Object(db.get_node("a").unwrap().unwrap().data).get("a"),
        None
    );
    // Labels
    q(&db, "MATCH (n {id: 'a'}) REMOVE n:P", json!({}));
    assert_eq!(db.get_node("a").unwrap().unwrap().node_type, None);
    q(&db, "MATCH (n {id: 'a'}) SET n:Q", json!({}));
    assert_eq!(
        db.get_node("a").unwrap().unwrap().node_type.as_deref(),
        Some("Q")
    );
    // One label per node: SET n:Other replaces Q (Neo4j would add it), and says so.
    let r = q(&db, "MATCH (n {id: 'a'}) SET n:Other", json!({}));
    assert_eq!((r.counters.labels_added, r.counters.labels_removed), (1, 1));
    assert_eq!(
        db.get_node("a").unwrap().unwrap().node_type.as_deref(),
        Some("Other")
    );
    for query in ["MATCH (n {id: 'a'}) SET n:A:B", "CREATE (n:A:B {id: 'ab'})"] {
        let err = db.cypher(query, &json!({})).unwrap_err();
        assert!(err.to_string().contains("one label"), "{err}");
    }
}

#[test]
fn set_relationship_properties_and_read_back() {
    let db = db();
    q(
        &db,
        "CREATE (:P {id: 'a'})-[:R {w: 1}]->(:P {id: 'b'})",
        json!({}),
    );
    let r = q(
        &db,
        "MATCH (a)-[r:R]->(b) SET r.w = r.w + 1, r.tag = 'x' RETURN r.w, r.tag",
        json!({}),
    );
    assert_eq!(r.rows, [[json!(2), json!("x")]]);
    assert_eq!(
        Json::Object(db.get_edge("a", "R", "b").unwrap().unwrap().data),
        json!({"w": 2, "tag": "x"})
    );
    q(&db, "MATCH ()-[r:R]->() SET r.w = null", json!({}));
    assert_eq!(
        Json::Object(db.get_edge("a", "R", "b").unwrap().unwrap().data),
        json!({"tag": "x"})
    );
    q(&db, "MATCH ()-[r:R]->() REMOVE r.tag", json!({}));
    assert_eq!(
        Json::Object(db.get_edge("a", "R", "b").unwrap().unwrap().data),
        json!({})
    );
    q(&db, "MATCH ()-[r:R]->() SET r = {q: 1}", json!({}));
    assert_eq!(
        Json::Object(db.get_edge("a", "R", "b").unwrap().unwrap().data),
        json!({"q": 1})
    );
    q(&db, "MATCH ()-[r:R]->() SET r += {z: 2}", json!({}));
    assert_eq!(
        Json::Object(db.get_edge("a", "R", "b").unwrap().unwrap().data),
        json!({"q": 1, "z": 2})
    );
    let r = q(&db, "MATCH ()-[r:R]->() RETURN r.q, r.z", json!({}));
    assert_eq!(r.rows, [[json!(1), json!(2)]]);
}

/// PluresDB keeps one relationship per (from, type, to), so CREATE of an existing one merges
/// its properties in. A variable bound to that relationship earlier in the query kept the old
/// properties: `r.w` read 1 after the CREATE had stored 5.
#[test]
fn create_on_existing_relationship_then_read_bound_variable() {
    let db = db();
    q(
        &db,
        "CREATE (:P {id: 'a'})-[:R {w: 1}]->(:P {id: 'b'})",
        json!({}),
    );
    let r = q(
        &db,
        "MATCH (a {id: 'a'})-[r:R]->(b) CREATE (a)-[s:R {w: 5}]->(b) RETURN r.w, s.w, properties(r)",
        json!({}),
    );
    assert_eq!(r.rows, [[json!(5), json!(5), json!({"w": 5})]]);
    assert_eq!(
        Json::Object(db.get_edge("a", "R", "b").unwrap().unwrap().data),
        json!({"w": 5})
    );
}

#[test]
fn delete_semantics() {
    let db = db();
    q(
        &db,
        "CREATE (:P {id: 'a'})-[:R]->(:P {id: 'b'})-[:R]->(:P {id: 'c'}), (:P {id: 'lone'})",
        json!({}),
    );
    let err = db
        .cypher("MATCH (n {id: 'b'}) DELETE n", &json!({}))
        .unwrap_err();
    assert!(err.to_string().contains("DETACH DELETE"), "{err}");
    assert!(db.get_node("b").unwrap().is_some());
    // Deleting the node and its relationships together is allowed in Neo4j.
    let r = q(&db, "MATCH (n {id: 'b'})-[r]-() DELETE r, n", json!({}));
    assert_eq!(r.counters.nodes_deleted, 1);
    assert_eq!(r.counters.relationships_deleted, 2);
    assert!(db.get_node("b").unwrap().is_none());
    q(&db, "MATCH (n {id: 'lone'}) DELETE n", json!({}));
    assert!(db.get_node("lone").unwrap().is_none());
    q(&db, "CREATE (:P {id: 'x'})-[:R]->(:P {id: 'y'})", json!({}));
    let r = q(&db, "MATCH (n) DETACH DELETE n", json!({}));
    assert_eq!(r.counters.nodes_deleted, 4);
    assert_eq!(r.counters.relationships_deleted, 1);
    let n: i64 = sqlv(&db, "SELECT count(*) FROM pluresdb_edges", ()).unwrap();
    assert_eq!(n, 0);
    let n: i64 = sqlv(&db, "SELECT count(*) FROM pluresdb_nodes", ()).unwrap();
    assert_eq!(n, 0);
    let r = q(&db, "MATCH (n) RETURN count(n)", json!({}));
    assert_eq!(r.rows, [[json!(0)]]);
}

#[test]
fn delete_node_and_rels_from_a_path_with_pattern_order() {
    let db = db();
    q(&db, "CREATE (:P {id: 'a'})-[:R]->(:P {id: 'b'})", json!({}));
    // Neo4j: deleting both ends and the relationship in the same clause is fine.
    let r = q(&db, "MATCH (a)-[r:R]->(b) DELETE a, b, r", json!({}));
    assert_eq!(r.counters.nodes_deleted, 2);
    q(&db, "CREATE (:P {id: 'a'})-[:R]->(:P {id: 'b'})", json!({}));
    let r = q(&db, "MATCH p = (a)-[:R]->(b) DELETE p", json!({}));
    assert_eq!(r.counters.nodes_deleted, 2);
    // DELETE in one clause, the rel in a later clause (Neo4j checks at commit).
    q(&db, "CREATE (:P {id: 'a'})-[:R]->(:P {id: 'b'})", json!({}));
    // Neo4j checks at commit, so a later clause may delete the relationship; PluresDB checks
    // at the DELETE and says what to use.
    let err = db
        .cypher(
            "MATCH (a {id: 'a'})-[r:R]->(b) DELETE a WITH r DELETE r",
            &json!({}),
        )
        .unwrap_err();
    assert!(err.to_string().contains("DETACH DELETE"), "{err}");
}

#[test]
fn failing_queries_roll_back_everything() {
    let db = db();
    q(
        &db,
        "CREATE (:P {id: 'keep'})-[:R]->(:P {id: 'other'})",
        json!({}),
    );
    let before_nodes: i64 = sqlv(&db, "SELECT count(*) FROM pluresdb_nodes", ()).unwrap();
    let before_changes = db.changes_since(0, None).unwrap().changes.len();
    for bad in [
        // error after a create (division of a string)
        "CREATE (n:X {id: 'x1'})-[:R]->(m:X {id: 'x2'}) WITH n MATCH (k {id: 'keep'}) CREATE (n)-[:R]->(k) WITH n RETURN n.id + 1 / 'a'",
        // duplicate id after creates
        "UNWIND [1, 2, 3] AS i CREATE (n:X {id: 'dup' + toString(i % 2)})",
        // delete without detach after other writes
        "MATCH (k {id: 'keep'}) SET k.touched = true CREATE (k)-[:NEW]->(:X {id: 'x3'}) WITH k DELETE k",
        // detach delete then fail
        "MATCH (k {id: 'keep'}) DETACH DELETE k WITH 1 AS one CREATE (:X {id: 'other'})",
        // set label then fail on storing a node as property
        "MATCH (k {id: 'keep'}) SET k:Changed SET k.bad = k",
    ] {
        let res = db.cypher(bad, &json!({}));
        assert!(res.is_err(), "{bad}");
        let after_nodes: i64 = sqlv(&db, "SELECT count(*) FROM pluresdb_nodes", ()).unwrap();
        assert_eq!(after_nodes, before_nodes, "{bad}");
        let keep = db.get_node("keep").unwrap().unwrap();
        assert_eq!(keep.node_type.as_deref(), Some("P"), "{bad}");
        assert_eq!(Json::Object(keep.data.clone()), json!({}), "{bad}");
        assert_eq!(
            db.edges("keep", Direction::Both, None).unwrap().len(),
            1,
            "{bad}"
        );
        // The in-memory graph (read path) must agree.
        let r = q(
            &db,
            "MATCH (a)-[r]->(b) RETURN a.id, type(r), b.id",
            json!({}),
        );
        assert_eq!(
            r.rows,
            [[json!("keep"), json!("R"), json!("other")]],
            "{bad}"
        );
        let r = q(&db, "MATCH (n) RETURN count(n)", json!({}));
        assert_eq!(r.rows, [[json!(before_nodes)]], "{bad}");
        let w = db.traverse(&Traverse::from(["keep"])).unwrap();
        assert_eq!(w.ids().collect::<Vec<_>>(), ["other"], "{bad}");
        assert_eq!(
            db.changes_since(0, None).unwrap().changes.len(),
            before_changes,
            "{bad}"
        );
    }
}

#[test]
fn unwind_bulk_import_and_relationships() {
    let db = db();
    let rows: Vec<Json> = (0..2000)
        .map(|i| json!({"id": format!("p{i}"), "name": format!("N{i}"), "n": i}))
        .collect();
    let r = q(
        &db,
        "UNWIND $rows AS row CREATE (p:Person {id: row.id, name: row.name, n: row.n})",
        json!({"rows": rows}),
    );
    assert_eq!(r.counters.nodes_created, 2000);
    let rels: Vec<Json> = (0..1999)
        .map(|i| json!({"from": format!("p{i}"), "to": format!("p{}", i + 1), "w": i}))
        .collect();
    let r = q(
        &db,
        "UNWIND $rels AS rel MATCH (a:Person {id: rel.from}), (b:Person {id: rel.to}) CREATE (a)-[:NEXT {w: rel.w}]->(b)",
        json!({"rels": rels}),
    );
    assert_eq!(r.counters.relationships_created, 1999);
    let r = q(
        &db,
        "MATCH (:Person {id: 'p0'})-[:NEXT*1..5]->(x) RETURN count(x)",
        json!({}),
    );
    assert_eq!(r.rows, [[json!(5)]]);
    let w = db
        .traverse(&Traverse::from(["p0"]).relation("NEXT").depth(1, 3))
        .unwrap();
    assert_eq!(w.len(), 3);
    // MERGE-based import (idempotent)
    let r = q(
        &db,
        "UNWIND $rows AS row MERGE (p:Person {id: row.id}) ON MATCH SET p.again = true",
        json!({"rows": [{"id": "p1"}, {"id": "new"}]}),
    );
    assert_eq!(r.counters.nodes_created, 1);
    assert_eq!(db.get_node("p1").unwrap().unwrap().data["again"], true);
    assert_eq!(db.get_node("p1").unwrap().unwrap().data["name"], "N1");
}

#[test]
fn writes_are_captured_for_sync() {
    let a = db();
    let b = db();
    q(
        &a,
        "UNWIND range(1, 50) AS i CREATE (:N {id: 'n' + toString(i), i: i})",
        json!({}),
    );
    q(
        &a,
        "MATCH (x:N), (y:N) WHERE y.i = x.i + 1 CREATE (x)-[:NEXT {d: 1}]->(y)",
        json!({}),
    );
    q(&a, "MATCH (x:N {id: 'n3'}) SET x.v = 'v', x:M", json!({}));
    q(&a, "MATCH (x {id: 'n10'}) DETACH DELETE x", json!({}));
    q(
        &a,
        "MATCH (x {id: 'n20'})-[r:NEXT]->() SET r.d = 2",
        json!({}),
    );
    q(&a, "MATCH (x {id: 'n30'})-[r:NEXT]->() DELETE r", json!({}));
    q(&a, "MATCH (x {id: 'n40'}) REMOVE x.i", json!({}));
    q(&a, "MATCH (x {id: 'n41'}) REMOVE x:N SET x = {}", json!({}));
    q(
        &a,
        "MATCH (x {id: 'n42'})-[r:NEXT]->(y) DELETE r CREATE (x)-[:NEXT {again: true}]->(y)",
        json!({}),
    );
    q(
        &a,
        "MATCH (x {id: 'n45'}) DETACH DELETE x CREATE (:Again {id: 'n45', back: true})",
        json!({}),
    );
    let set = a.changes_since(0, None).unwrap();
    b.apply_changes(&set.changes).unwrap();
    let dump = |db: &Database| {
        let nodes: Vec<(String, Option<String>, String)> = db
            .all_as("SELECT id, type, data FROM pluresdb_nodes ORDER BY id", ())
            .unwrap();
        let edges: Vec<(String, String, String, String)> = db
            .all_as(
                "SELECT from_id, relation, to_id, data FROM pluresdb_edges ORDER BY 1, 2, 3",
                (),
            )
            .unwrap();
        (nodes, edges)
    };
    let (an, ae) = dump(&a);
    let (bn, be) = dump(&b);
    assert_eq!(an.len(), 49);
    // 49 NEXT; n10 and n45 took two each, n30's went.
    assert_eq!(ae.len(), 49 - 2 - 2 - 1);
    assert_eq!(an, bn);
    assert_eq!(ae, be);
    let r = q(
        &b,
        "MATCH (x:N {id: 'n19'})-[:NEXT*1..2]->(y) RETURN y.id ORDER BY y.id",
        json!({}),
    );
    assert_eq!(r.rows, [[json!("n20")], [json!("n21")]]);
}

#[test]
fn with_and_match_after_writes_see_the_writes() {
    let db = db();
    let r = q(
        &db,
        "CREATE (a:P {id: 'a', v: 1}) WITH a MATCH (n:P {v: 1}) RETURN count(n)",
        json!({}),
    );
    assert_eq!(r.rows, [[json!(1)]]);
    let r = q(
        &db,
        "MATCH (a:P {id: 'a'}) SET a.v = 2 WITH a MATCH (n:P) WHERE n.v = 2 RETURN n.id, a.v",
        json!({}),
    );
    assert_eq!(r.rows, [[json!("a"), json!(2)]]);
    let r = q(
        &db,
        "MATCH (a:P {id: 'a'}) CREATE (a)-[:R]->(:P {id: 'b'}) WITH a MATCH (a)-[:R]->(x) RETURN x.id",
        json!({}),
    );
    assert_eq!(r.rows, [[json!("b")]]);
    let r = q(
        &db,
        "MATCH (a:P {id: 'a'}) SET a:Q WITH a MATCH (n:Q) RETURN n.id, labels(a)",
        json!({}),
    );
    assert_eq!(r.rows, [[json!("a"), json!(["Q"])]]);
    let r = q(
        &db,
        "MATCH (b {id: 'b'}) DETACH DELETE b WITH count(*) AS c MATCH (n) RETURN count(n), c",
        json!({}),
    );
    assert_eq!(r.rows, [[json!(1), json!(1)]]);
    // Write then RETURN without MATCH sees the new properties
    let r = q(
        &db,
        "MATCH (a {id: 'a'}) SET a += {k: 'v'} RETURN a.k, properties(a)",
        json!({}),
    );
    assert_eq!(r.rows[0][0], json!("v"));
}

#[test]
fn create_with_list_of_maps_and_nested_values_in_sql() {
    let db = db();
    q(
        &db,
        "CREATE (n {id: 'n', tags: ['a', 'b'], meta: {x: 1.25}})",
        json!({}),
    );
    let t: String = sqlv(
        &db,
        "SELECT data ->> '$.tags[1]' FROM pluresdb_nodes WHERE id = 'n'",
        (),
    )
    .unwrap();
    assert_eq!(t, "b");
    let x: f64 = sqlv(
        &db,
        "SELECT data ->> '$.meta.x' FROM pluresdb_nodes WHERE id = 'n'",
        (),
    )
    .unwrap();
    assert_eq!(x, 1.25);
}
