//! Graph queries from the in-memory adjacency agree with a plain BFS over the stored edges,
//! follow every write (including other handles and rolled-back transactions), and refuse bad
//! input clearly.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use pluresdb_core::{
    CompareOp, Database, Direction, ErrorKind, NodeQuery, OpenOptions, PathQuery, Traverse, Value,
};
use proptest::prelude::*;
use serde_json::json;

/// Reference BFS over `(from, rel, to)` triples: node -> smallest depth.
fn reference(
    edges: &BTreeSet<(String, String, String)>,
    start: &str,
    rel: Option<&str>,
    dir: Direction,
    max: u32,
) -> BTreeMap<String, u32> {
    let mut adj: HashMap<&str, Vec<&str>> = HashMap::new();
    for (f, r, t) in edges {
        if rel.is_some_and(|x| x != r) {
            continue;
        }
        if matches!(dir, Direction::Out | Direction::Both) {
            adj.entry(f).or_default().push(t);
        }
        if matches!(dir, Direction::In | Direction::Both) {
            adj.entry(t).or_default().push(f);
        }
    }
    let mut depth: BTreeMap<String, u32> = BTreeMap::new();
    let mut queue = VecDeque::from([(start, 0u32)]);
    let mut seen = BTreeSet::from([start]);
    while let Some((v, d)) = queue.pop_front() {
        if d > 0 {
            depth.insert(v.to_owned(), d);
        }
        if d == max {
            continue;
        }
        for &n in adj.get(v).map(Vec::as_slice).unwrap_or_default() {
            if seen.insert(n) {
                queue.push_back((n, d + 1));
            }
        }
    }
    depth
}

#[derive(Clone, Debug)]
enum Op {
    Link(u8, u8, u8),
    Unlink(u8, u8, u8),
    Delete(u8),
    Put(u8),
    LinkMany(Vec<(u8, u8, u8)>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..8, 0u8..2, 0u8..8).prop_map(|(a, r, b)| Op::Link(a, r, b)),
        2 => (0u8..8, 0u8..2, 0u8..8).prop_map(|(a, r, b)| Op::Unlink(a, r, b)),
        1 => (0u8..8).prop_map(Op::Delete),
        2 => (0u8..8).prop_map(Op::Put),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    /// Random writes (cycles, self-loops, parallel edges of two relations, deleted nodes and
    /// edges) with queries in between; every traversal matches the reference BFS.
    #[test]
    fn traversals_match_a_reference_bfs(ops in proptest::collection::vec(op(), 1..40), start in 0u8..8, max in 1u32..4) {
        let db = Database::open_in_memory().unwrap();
        let name = |i: u8| format!("n{i}");
        let rel = |r: u8| if r == 0 { "knows" } else { "likes" }.to_owned();
        let mut alive: BTreeSet<String> = (0..8).map(name).collect();
        for id in &alive {
            db.put(id, &json!({})).unwrap();
        }
        let mut edges: BTreeSet<(String, String, String)> = BTreeSet::new();
        // Query once first so later writes are applied incrementally, not by a fresh build.
        db.traverse(&Traverse::from([name(0)]).depth(1, 1)).unwrap();
        for (i, op) in ops.iter().enumerate() {
            match op {
                Op::Link(a, r, b) if alive.contains(&name(*a)) && alive.contains(&name(*b)) => {
                    db.link(&name(*a), &rel(*r), &name(*b), None).unwrap();
                    edges.insert((name(*a), rel(*r), name(*b)));
                }
                Op::Unlink(a, r, b) => {
                    db.unlink(&name(*a), &rel(*r), &name(*b)).unwrap();
                    edges.remove(&(name(*a), rel(*r), name(*b)));
                }
                Op::Delete(a) => {
                    db.delete(&name(*a)).unwrap();
                    alive.remove(&name(*a));
                    edges.retain(|(f, _, t)| *f != name(*a) && *t != name(*a));
                }
                Op::Put(a) => {
                    db.put(&name(*a), &json!({"i": a})).unwrap();
                    alive.insert(name(*a));
                }
                _ => {}
            }
            if i % 7 == 3 {
                db.traverse(&Traverse::from([name(0)]).depth(1, 1)).ok();
            }
        }
        let s = name(start);
        for dir in [Direction::Out, Direction::In, Direction::Both] {
            for r in [None, Some("knows")] {
                let mut q = Traverse::from([s.clone()]).direction(dir).depth(1, i64::from(max));
                if let Some(r) = r {
                    q = q.relation(r);
                }
                let got = db.traverse(&q);
                if !alive.contains(&s) {
                    prop_assert_eq!(got.unwrap_err().kind(), ErrorKind::NotFound);
                    continue;
                }
                let got = got.unwrap();
                for reached in &got {
                    let path = reached.path();
                    prop_assert_eq!(path.len() as u32, reached.depth() + 1);
                    prop_assert_eq!(path[0], s.as_str());
                    prop_assert_eq!(*path.last().unwrap(), reached.id());
                }
                let got: BTreeMap<String, u32> =
                    got.iter().map(|r| (r.id().to_owned(), r.depth())).collect();
                prop_assert_eq!(got, reference(&edges, &s, r, dir, max));
            }
        }
    }
}

fn chain(db: &Database) {
    for id in ["a", "b", "c", "d", "e"] {
        db.put(
            id,
            &json!({"name": id.to_uppercase(), "age": id.as_bytes()[0] - b'a' + 20}),
        )
        .unwrap();
    }
    db.set_type("c", Some("Person")).unwrap();
    db.set_type("d", Some("Person")).unwrap();
    db.link("a", "road", "b", Some(&json!({"km": 1}))).unwrap();
    db.link("b", "road", "c", Some(&json!({"km": 1}))).unwrap();
    db.link("c", "road", "d", Some(&json!({"km": 1}))).unwrap();
    db.link("a", "road", "d", Some(&json!({"km": 10}))).unwrap();
    db.link("d", "road", "e", Some(&json!({"km": 2}))).unwrap();
    db.link("e", "rail", "a", None).unwrap();
}

#[test]
fn paths_filters_and_algorithms() {
    let db = Database::open_in_memory().unwrap();
    chain(&db);
    let hops = db
        .shortest_path("a", "e", &PathQuery::new().relation("road"))
        .unwrap()
        .unwrap();
    assert_eq!(hops.nodes, ["a", "d", "e"]);
    assert_eq!(hops.cost, 2.0);
    let km = db
        .shortest_path("a", "e", &PathQuery::new().relation("road").weight("km"))
        .unwrap()
        .unwrap();
    assert_eq!(km.nodes, ["a", "b", "c", "d", "e"]);
    assert_eq!(km.relations, ["road"; 4]);
    assert_eq!(km.cost, 5.0);
    // A misspelled weight field: no edge has it, which is said rather than "no path".
    let err = db
        .shortest_path("a", "e", &PathQuery::new().relation("road").weight("kms"))
        .unwrap_err();
    assert!(err.message().contains("numeric field \"kms\""), "{err}");
    assert!(
        err.message().contains("check the weight field's name"),
        "{err}"
    );
    assert!(
        db.shortest_path("e", "b", &PathQuery::new().relation("road"))
            .unwrap()
            .is_none()
    );
    let back = db
        .shortest_path("e", "b", &PathQuery::new())
        .unwrap()
        .unwrap();
    assert_eq!(back.nodes, ["e", "a", "b"]);
    // Filters pick what is returned; the walk passes through other nodes.
    let people = db
        .traverse(
            &Traverse::from(["a"])
                .relation("road")
                .depth(1, 3)
                .filter(NodeQuery::new().of_type("Person")),
        )
        .unwrap();
    assert_eq!(
        people
            .iter()
            .map(|r| (r.id(), r.depth()))
            .collect::<Vec<_>>(),
        [("d", 1), ("c", 2)]
    );
    let older = NodeQuery::new().where_field("age", CompareOp::Gt, json!(22));
    let found = db
        .traverse(&Traverse::from(["a"]).depth(1, 5).filter(older).limit(1))
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found.get(0).unwrap().id(), "d");
    assert_eq!(found.get(0).unwrap().path(), ["a", "d"]);
    assert!(found.get(1).is_none());
    assert_eq!(db.degree("a", Direction::Both, None).unwrap(), 3);
    assert_eq!(db.degree("a", Direction::Out, Some("road")).unwrap(), 2);
    db.put("lonely", &json!({})).unwrap();
    let comps = db.connected_components(&[]).unwrap();
    assert_eq!(comps, vec![vec!["a", "b", "c", "d", "e"], vec!["lonely"]]);
    let ranks = db.pagerank(&[], 0.85).unwrap();
    assert!((ranks.iter().map(|r| r.1).sum::<f64>() - 1.0).abs() < 1e-6);
    let central = db.degree_centrality(Direction::Both, &["road"]).unwrap();
    assert_eq!(central[0].0, "d", "d has three road edges");
}

#[test]
fn writes_in_a_transaction_are_seen_inside_and_gone_after_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.db");
    let db = Database::open(&path).unwrap();
    chain(&db);
    let reach = |db: &Database| -> Vec<String> {
        db.traverse(&Traverse::from(["e"]).relation("rail").depth(1, 1))
            .unwrap()
            .ids()
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(reach(&db), ["a"]);
    let _ = db.transaction(|tx| {
        tx.put("z", &json!({}))?;
        tx.link("e", "rail", "z", None)?;
        assert_eq!(reach(tx), ["a", "z"], "the transaction sees its own edge");
        Err::<(), _>(pluresdb_core::Error::invalid("roll back"))
    });
    assert_eq!(reach(&db), ["a"], "the rollback left nothing behind");
    // Another handle (as another process would) writes; this one catches up.
    let other = Database::open(&path).unwrap();
    other.put("y", &json!({})).unwrap();
    other.link("e", "rail", "y", None).unwrap();
    assert_eq!(reach(&db), ["a", "y"]);
    other.unlink("e", "rail", "a").unwrap();
    assert_eq!(reach(&db), ["y"]);
}

#[test]
fn bad_graph_queries_are_refused_clearly() {
    let db = Database::open_in_memory().unwrap();
    chain(&db);
    let err = db.traverse(&Traverse::from(["nobody"])).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains("nobody"), "{err}");
    let err = db
        .traverse(&Traverse::from(["a"]).depth(-1, 2))
        .unwrap_err()
        .to_string();
    assert!(err.contains("-1"), "{err}");
    assert!(db.traverse(&Traverse::from(["a"]).depth(3, 1)).is_err());
    assert!(
        db.shortest_path("a", "nobody", &PathQuery::new())
            .unwrap_err()
            .to_string()
            .contains("nobody")
    );
    // Negative weights are refused.
    db.link("b", "road", "e", Some(&json!({"km": -5}))).unwrap();
    let err = db
        .shortest_path("a", "e", &PathQuery::new().weight("km"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("-5"), "{err}");
    // A huge depth on a dense graph is bounded by the visit budget, with a clear message.
    let ids: Vec<String> = (0..60).map(|i| format!("k{i}")).collect();
    db.transaction(|tx| {
        for id in &ids {
            tx.put(id, &json!({}))?;
        }
        for a in &ids {
            for b in &ids {
                tx.link(a, "x", b, None)?;
            }
        }
        Ok::<_, pluresdb_core::Error>(())
    })
    .unwrap();
    let all = db
        .traverse(&Traverse::from(["k0"]).depth(1, 1_000_000))
        .unwrap();
    assert_eq!(
        all.len(),
        59,
        "every other node once, cycles and self-loops or not"
    );
    let err = db
        .traverse(&Traverse::from(["k0"]).depth(1, 1_000_000).max_visited(10))
        .unwrap_err()
        .to_string();
    assert!(err.contains("10"), "{err}");
}

#[test]
fn sql_graph_functions_join_with_tables_and_vector_search() {
    let db = Database::open_in_memory().unwrap();
    chain(&db);
    let rows = db
        .all_as::<(String, i64, String)>("SELECT id, depth, path FROM graph_traverse('a', 'road', 'out', 1, 2) ORDER BY depth, id", ())
        .unwrap();
    assert_eq!(
        rows,
        vec![
            ("b".into(), 1, "[\"a\",\"b\"]".into()),
            ("d".into(), 1, "[\"a\",\"d\"]".into()),
            ("c".into(), 2, "[\"a\",\"b\",\"c\"]".into()),
            ("e".into(), 2, "[\"a\",\"d\",\"e\"]".into()),
        ]
    );
    // Joins with the node view.
    let names = db
        .all_as::<(String,)>(
            "SELECT json_extract(n.data, '$.name') FROM graph_traverse('a', 'road', 'out', 1, 1) t
             JOIN pluresdb_nodes n ON n.id = t.id ORDER BY 1",
            (),
        )
        .unwrap();
    assert_eq!(names, vec![("B".to_owned(),), ("D".to_owned(),)]);
    let near = db
        .all_as::<(String, String, String)>(
            "SELECT id, relation, direction FROM graph_neighbors('a') ORDER BY id",
            (),
        )
        .unwrap();
    assert_eq!(
        near,
        vec![
            ("b".into(), "road".into(), "out".into()),
            ("d".into(), "road".into(), "out".into()),
            ("e".into(), "rail".into(), "in".into())
        ]
    );
    let path = db
        .all_as::<(i64, String, Option<String>, f64)>("SELECT step, id, relation, cost FROM graph_shortest_path('a', 'e', 'road', 'out', 'km')", ())
        .unwrap();
    assert_eq!(
        path.iter().map(|p| p.1.as_str()).collect::<Vec<_>>(),
        ["a", "b", "c", "d", "e"]
    );
    assert_eq!(path[0].2, None);
    assert_eq!(path[4].3, 5.0);
    assert!(
        db.all("SELECT * FROM graph_shortest_path('e', 'b', 'road')", ())
            .unwrap()
            .is_empty()
    );
    let err = db
        .all("SELECT * FROM graph_traverse('nobody')", ())
        .unwrap_err()
        .to_string();
    assert!(err.contains("nobody"), "{err}");
    // A NULL node (a joined row without one) matches nothing, as NULL does in SQL.
    for sql in [
        "SELECT count(*) FROM graph_traverse(NULL)",
        "SELECT count(*) FROM graph_neighbors(NULL)",
        "SELECT count(*) FROM graph_shortest_path('a', NULL)",
        "SELECT count(*) FROM (SELECT NULL AS id UNION ALL SELECT 'a') AS s, graph_neighbors(s.id) AS n",
    ] {
        let want = i64::from(sql.contains("UNION"));
        let n = db.get_as::<(i64,)>(sql, ()).unwrap().unwrap().0;
        assert_eq!(n > 0, want > 0, "{sql}");
    }
    let err = db
        .all("SELECT * FROM graph_traverse()", ())
        .unwrap_err()
        .to_string();
    assert!(err.contains("use graph_traverse(start"), "{err}");
    let err = db
        .all("SELECT * FROM graph_neighbors('a', NULL, 'sideways')", ())
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown direction"), "{err}");

    // The 2 documents nearest a query vector, and everyone within 2 hops of their authors.
    db.exec(
        "CREATE TABLE docs(id INTEGER PRIMARY KEY, title TEXT, author TEXT, emb BLOB);
         INSERT INTO docs(title, author, emb) VALUES
           ('about b', 'b', vec_f32('[1, 0]')), ('about e', 'e', vec_f32('[0.9, 0.1]')),
           ('far away', 'c', vec_f32('[0, 1]'));
         SELECT pluresdb_vector_index('docs', 'emb', 'cosine');",
    )
    .unwrap();
    let rows = db
        .all_as::<(String,)>(
            "SELECT DISTINCT t.id FROM vector_search('docs', 'emb', '[1, 0]', 2) s
             JOIN docs d ON d.rowid = s.rowid
             JOIN graph_traverse(d.author, 'road', 'both', 1, 2) t
             ORDER BY t.id",
            (),
        )
        .unwrap();
    // From b: a and c (1 hop), d (2). From e: d (1), a and c (2). b itself is 3 hops from e.
    assert_eq!(rows, vec![("a".into(),), ("c".into(),), ("d".into(),)]);
}

#[test]
fn link_many_is_link_in_bulk() {
    let db = Database::open_in_memory().unwrap();
    for id in ["a", "b", "c"] {
        db.put(id, &json!({})).unwrap();
    }
    let w = json!({"w": 2});
    let n = db
        .link_many([
            ("a", "r", "b", None),
            ("b", "r", "c", Some(&w)),
            ("a", "r", "b", None),
        ])
        .unwrap();
    assert_eq!(n, 2, "the repeated edge is not counted twice");
    // An empty load writes nothing, not even a new db_version.
    let version = || {
        db.value(
            "SELECT value FROM _pluresdb_meta WHERE key = 'db_version'",
            (),
        )
        .unwrap()
    };
    let before = version();
    assert_eq!(db.link_many(std::iter::empty()).unwrap(), 0);
    assert_eq!(version(), before);
    assert_eq!(db.get_edge("b", "r", "c").unwrap().unwrap().data["w"], 2);
    assert_eq!(
        db.traverse(&Traverse::from(["a"]).depth(1, 5))
            .unwrap()
            .len(),
        2
    );
    // Re-linking with the same data changes nothing; new data updates; unlinked edges revive.
    assert_eq!(db.link_many([("b", "r", "c", Some(&w))]).unwrap(), 0);
    db.unlink("a", "r", "b").unwrap();
    assert_eq!(
        db.link_many([
            ("a", "r", "b", None),
            ("b", "r", "c", Some(&json!({"w": 3})))
        ])
        .unwrap(),
        2
    );
    assert_eq!(db.get_edge("b", "r", "c").unwrap().unwrap().data["w"], 3);
    // The changes replicate like single links.
    let other = Database::open_in_memory().unwrap();
    other
        .apply_changes(&db.changes_since(0, None).unwrap().changes)
        .unwrap();
    assert_eq!(other.edges("a", Direction::Out, None).unwrap().len(), 1);
    assert_eq!(other.get_edge("b", "r", "c").unwrap().unwrap().data["w"], 3);
    // A missing endpoint refuses the whole batch, naming it.
    let err = db
        .link_many([("a", "r", "c", None), ("a", "r", "ghost", None)])
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains("\"ghost\""), "{err}");
    assert!(
        db.get_edge("a", "r", "c").unwrap().is_none(),
        "nothing from the refused batch"
    );
    let err = db
        .link_many([("a", "", "c", None)])
        .unwrap_err()
        .to_string();
    assert!(err.contains("edge 1"), "{err}");
}

/// Large batches (the sync metadata is written in many statements).
#[test]
fn a_bulk_load_gives_its_larger_page_cache_back() {
    let dir = tempfile::tempdir().unwrap();
    let db = pluresdb_core::OpenOptions::new()
        .cache_size_kib(1024)
        .open(dir.path().join("g.db"))
        .unwrap();
    db.put("a", &json!({})).unwrap();
    db.put("b", &json!({})).unwrap();
    let rels: Vec<String> = (0..30_000).map(|i| format!("r{i}")).collect();
    let n = db
        .link_many(rels.iter().map(|r| ("a", r.as_str(), "b", None)))
        .unwrap();
    assert_eq!(n, 30_000);
    assert_eq!(
        db.pragma_value("cache_size").unwrap(),
        pluresdb_core::Value::Integer(-1024),
        "the writer has the configured 1 MiB again, not the bulk load's cache"
    );
}

#[test]
fn link_many_loads_large_batches() {
    let db = Database::open_in_memory().unwrap();
    db.transaction(|tx| {
        for i in 0..2000 {
            tx.put(&format!("n{i}"), &json!({}))?;
        }
        Ok::<_, pluresdb_core::Error>(())
    })
    .unwrap();
    // Larger than the graph's edges and than 50,000: the incoming-edge index is rebuilt.
    let edges: Vec<(String, String)> = (0..60_000)
        .map(|i| {
            (
                format!("n{}", i % 2000),
                format!("n{}", (i * 7 + i / 2000) % 2000),
            )
        })
        .collect();
    let n = db
        .link_many(
            edges
                .iter()
                .map(|(a, b)| (a.as_str(), "likes", b.as_str(), None)),
        )
        .unwrap();
    assert_eq!(n, 60_000);
    assert_eq!(db.edge_count().unwrap(), 60_000);
    let plan: Vec<String> = db
        .all_as::<(i64, i64, i64, String)>(
            "EXPLAIN QUERY PLAN SELECT src FROM _pluresdb_edges
             WHERE dst = (SELECT rid FROM _pluresdb_nodes WHERE id = 'n5')",
            (),
        )
        .unwrap()
        .into_iter()
        .map(|r| r.3)
        .collect();
    assert!(
        plan.iter().any(|p| p.contains("_pluresdb_edges_in")),
        "{plan:?}"
    );
    let incoming = edges.iter().filter(|(_, b)| b == "n5").count();
    assert!(incoming > 0);
    assert_eq!(
        db.edges("n5", pluresdb_core::Direction::In, None)
            .unwrap()
            .len(),
        incoming
    );
    // The same sync records per edge as `link` writes.
    let edge_records = |db: &Database| {
        db.changes_since(0, None)
            .unwrap()
            .changes
            .iter()
            .filter(|c| &*c.collection == pluresdb_core::EDGES)
            .count()
    };
    let single = Database::open_in_memory().unwrap();
    single.put("a", &json!({})).unwrap();
    single.link("a", "likes", "a", None).unwrap();
    assert_eq!(edge_records(&db), 60_000 * edge_records(&single));

    // New edges given twice in one batch (across insert chunks): created by the first,
    // updated by the second, whose data wins.
    let (v1, v2) = (json!({"v": 1}), json!({"v": 2}));
    let twice: Vec<(&str, &str, &str, Option<&serde_json::Value>)> = (0..150)
        .map(|i| ("n1", "rates", edges[i].1.as_str(), Some(&v1)))
        .chain((0..150).map(|i| ("n1", "rates", edges[i].1.as_str(), Some(&v2))))
        .collect();
    let distinct: std::collections::BTreeSet<&str> = twice.iter().map(|e| e.2).collect();
    assert_eq!(
        db.link_many(twice.iter().copied()).unwrap(),
        2 * distinct.len()
    );
    assert_eq!(db.edge_count().unwrap(), 60_000 + distinct.len() as u64);
    for to in distinct {
        assert_eq!(
            db.get_edge("n1", "rates", to).unwrap().unwrap().data["v"],
            2
        );
    }
}

#[test]
fn a_bulk_load_is_seen_by_loaded_graphs_without_logging_each_edge() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.db");
    let db = Database::open(&path).unwrap();
    let other = Database::open(&path).unwrap();
    db.transaction(|tx| {
        for i in 0..1000 {
            tx.put(&format!("n{i}"), &json!({}))?;
        }
        tx.link("n0", "likes", "n1", None)?;
        Ok::<_, pluresdb_core::Error>(())
    })
    .unwrap();
    let out = |db: &Database, id: &str| db.degree(id, Direction::Out, Some("likes")).unwrap();
    // Both handles hold the adjacency before the load.
    assert_eq!(out(&db, "n0"), 1);
    assert_eq!(out(&other, "n0"), 1);
    let edges: Vec<(String, String)> = (0..55_000)
        .map(|i| {
            (
                format!("n{}", i % 1000),
                format!("n{}", (i / 1000 + 2) % 1000),
            )
        })
        .collect();
    let per_node = |id: &str| edges.iter().filter(|(a, _)| a == id).count();
    db.transaction(|tx| {
        let n = tx.link_many(
            edges
                .iter()
                .map(|(a, b)| (a.as_str(), "likes", b.as_str(), None)),
        )?;
        assert_eq!(n, 55_000);
        // Inside the transaction the load is already walkable.
        assert_eq!(out(tx, "n7"), per_node("n7"));
        Ok::<_, pluresdb_core::Error>(())
    })
    .unwrap();
    // The load wrote no log entry per edge (only the one edge linked before it)...
    let logged: i64 = db
        .value(
            "SELECT count(*) FROM _pluresdb_index_log WHERE idx = -2",
            (),
        )
        .unwrap()
        .as_i64()
        .unwrap();
    assert!(logged <= 1, "{logged} edge entries in the graph log");
    // ...yet this handle and the other one (as another process would) both see it.
    for db in [&db, &other] {
        assert_eq!(out(db, "n0"), per_node("n0") + 1);
        assert_eq!(out(db, "n999"), per_node("n999"));
    }
    // Edges linked one by one afterwards are logged and followed again.
    db.link("n5", "likes", "n500", None).unwrap();
    assert_eq!(out(&other, "n5"), per_node("n5") + 1);
    let logged_after: i64 = db
        .value(
            "SELECT count(*) FROM _pluresdb_index_log WHERE idx = -2",
            (),
        )
        .unwrap()
        .as_i64()
        .unwrap();
    assert_eq!(logged_after, logged + 1);
    // A second load as large as the graph, outside a transaction, with this handle's graph
    // loaded: it is brought up to date at once; both handles see the new relation.
    let more: Vec<(String, String)> = (0..60_000)
        .map(|i| {
            (
                format!("n{}", i % 1000),
                format!("n{}", (i / 1000 + 500) % 1000),
            )
        })
        .collect();
    db.link_many(
        more.iter()
            .map(|(a, b)| (a.as_str(), "knows", b.as_str(), None)),
    )
    .unwrap();
    for db in [&db, &other] {
        assert_eq!(db.degree("n3", Direction::Out, Some("knows")).unwrap(), 60);
        assert_eq!(out(db, "n5"), per_node("n5") + 1);
    }
}

#[test]
fn a_node_row_deleted_outside_pluresdb_leaves_its_edges_out_of_every_read() {
    let db = Database::open_in_memory().unwrap();
    for id in ["a", "b", "c"] {
        db.put(id, &json!({})).unwrap();
    }
    db.link("a", "r", "b", None).unwrap();
    db.link("b", "r", "c", None).unwrap();
    db.link("a", "r", "c", None).unwrap();
    db.run("DELETE FROM _pluresdb_nodes WHERE id = 'b'", ())
        .unwrap();
    // The views, the edge reads and the graph agree: only a -> c is left.
    let walk = db.traverse(&Traverse::from(["a"]).depth(1, 3)).unwrap();
    assert_eq!(walk.ids().collect::<Vec<_>>(), ["c"]);
    assert_eq!(db.edges("a", Direction::Out, None).unwrap().len(), 1);
    assert_eq!(
        db.value("SELECT count(*) FROM pluresdb_edges", ()).unwrap(),
        Value::Integer(1)
    );
}

/// What the graph of `db` holds, through graph queries only: per node, its out-neighbours and
/// in-degree by relation.
fn graph_snapshot(db: &Database, nodes: usize) -> BTreeMap<String, Vec<(Vec<String>, usize)>> {
    let mut all = BTreeMap::new();
    for i in 0..nodes {
        let id = format!("n{i}");
        let Ok(_) = db.degree(&id, Direction::Both, None) else {
            continue;
        };
        let per_rel = ["r0", "r1"]
            .into_iter()
            .map(|rel| {
                let walk = db
                    .traverse(&Traverse::from([id.as_str()]).relation(rel).depth(1, 1))
                    .unwrap();
                let mut out: Vec<String> = walk.ids().map(str::to_owned).collect();
                out.sort();
                (out, db.degree(&id, Direction::In, Some(rel)).unwrap())
            })
            .collect();
        all.insert(id, per_rel);
    }
    all
}

#[test]
fn a_loaded_graph_caught_up_matches_a_fresh_build() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.db");
    let db = Database::open(&path).unwrap();
    // The graph `db` keeps, checked against the one a fresh handle builds from the tables.
    let check = |nodes: usize| {
        let kept = graph_snapshot(&db, nodes);
        assert_eq!(kept, graph_snapshot(&Database::open(&path).unwrap(), nodes));
        kept
    };
    let n = |i: usize| format!("n{i}");
    db.transaction(|tx| {
        for i in 0..60 {
            tx.put(&n(i), &json!({}))?;
        }
        for i in 0..60 {
            tx.link(&n(i), "r0", &n((i + 1) % 60), None)?;
        }
        Ok::<_, pluresdb_core::Error>(())
    })
    .unwrap();
    let before = graph_snapshot(&db, 62);
    assert_eq!(before["n3"][0].0, ["n4"]);
    // One transaction: a load of consecutive edge rows, unlinks, a node deleted with its
    // edges, and a new node with an edge to it.
    db.transaction(|tx| {
        let load: Vec<(String, String)> = (0..100).map(|i| (n(i % 60), n((i * 7) % 60))).collect();
        tx.link_many(
            load.iter()
                .map(|(a, b)| (a.as_str(), "r1", b.as_str(), None)),
        )?;
        for i in 10..15 {
            tx.unlink(&n(i), "r0", &n(i + 1))?;
        }
        tx.delete(&n(7))?;
        tx.put(&n(60), &json!({}))?;
        tx.link(&n(60), "r0", &n(1), None)?;
        tx.link(&n(2), "r1", &n(60), None)?;
        // Inside the transaction, queries run on a private copy caught up the same way.
        Ok::<_, pluresdb_core::Error>(graph_snapshot(tx, 62))
    })
    .map(|inside| assert_eq!(inside, graph_snapshot(&db, 62)))
    .unwrap();
    let caught_up = check(62);
    assert_ne!(caught_up, before);
    assert!(!caught_up.contains_key("n7"));
    assert_eq!(caught_up["n60"][0].0, ["n1"]);
    // Another handle (as another process would) brings back edges it unlinked (their old
    // rows, scattered) and links new ones.
    let other = Database::open(&path).unwrap();
    for i in [10, 12, 14] {
        other.link(&n(i), "r0", &n(i + 1), None).unwrap();
    }
    other.link(&n(61), "r0", &n(0), None).ok();
    other.unlink(&n(0), "r0", &n(1)).unwrap();
    // A new edge: the changed rows are far apart, read one by one.
    other.link(&n(59), "r0", &n(3), None).unwrap();
    let caught_up = check(62);
    assert_eq!(caught_up["n12"][0].0, ["n13"]);
    // A node row renamed by SQL: its edges now belong to the new id.
    db.run("UPDATE _pluresdb_nodes SET id = 'n61' WHERE id = 'n30'", ())
        .unwrap();
    let caught_up = check(62);
    assert_eq!(caught_up["n61"][0].0, ["n31"]);
    assert!(!caught_up.contains_key("n30"));
    // A node row replaced by SQL (a new row id; the old row's delete is not logged): its old
    // edges point at a row that is gone, and are left out as a fresh build leaves them out.
    db.run(
        "INSERT OR REPLACE INTO _pluresdb_nodes(id, type, data, vector, created_hlc, updated_hlc, site, cl)
         SELECT id, type, data, vector, created_hlc, updated_hlc, site, cl FROM _pluresdb_nodes
         WHERE id = 'n40'",
        (),
    )
    .unwrap();
    let caught_up = check(62);
    assert!(caught_up["n40"][0].0.is_empty());
    // A node row marked dead by SQL with its edges left live (as when a peer deleted the
    // node while another linked it): the node goes, its edges wait hidden; marked live
    // again, it has them back; then dead again, and renamed.
    let flip = "UPDATE _pluresdb_nodes SET cl = cl + 1 WHERE id = 'n50'";
    db.run(flip, ()).unwrap();
    let caught_up = check(64);
    assert!(!caught_up.contains_key("n50"));
    assert!(!caught_up["n49"][0].0.contains(&"n50".to_owned()));
    db.run(flip, ()).unwrap();
    let caught_up = check(64);
    assert_eq!(caught_up["n50"][0].0, ["n51"]);
    assert!(caught_up["n49"][0].0.contains(&"n50".to_owned()));
    db.run(flip, ()).unwrap();
    db.run("UPDATE _pluresdb_nodes SET id = 'n63' WHERE id = 'n50'", ())
        .unwrap();
    let caught_up = check(64);
    assert!(!caught_up.contains_key("n50") && !caught_up.contains_key("n63"));
    // An edge row deleted outside PluresDB: the graph is built again from the tables.
    db.run(
        "DELETE FROM _pluresdb_edges WHERE rel = (SELECT id FROM _pluresdb_relations WHERE name = 'r0')
         AND src = (SELECT rid FROM _pluresdb_nodes WHERE id = 'n20')",
        (),
    )
    .unwrap();
    let caught_up = check(62);
    assert!(caught_up["n20"][0].0.is_empty());
}

/// [`op`], or a `link_many` of a few edges.
fn batch_op() -> impl Strategy<Value = Op> {
    let many = proptest::collection::vec((0u8..8, 0u8..2, 0u8..8), 1..12);
    prop_oneof![10 => op(), 1 => many.prop_map(Op::LinkMany)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Transactions of random graph writes, some by a second handle (as another process), with
    /// graph queries in between and inside: the graph a handle keeps caught up always equals
    /// the one a fresh handle builds from the tables.
    #[test]
    fn caught_up_graphs_equal_fresh_builds(
        batches in proptest::collection::vec(
            (any::<bool>(), proptest::collection::vec(batch_op(), 1..8)),
            1..10,
        )
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.db");
        let db = Database::open(&path).unwrap();
        let other = Database::open(&path).unwrap();
        let n = |i: u8| format!("n{i}");
        let r = |i: u8| format!("r{i}");
        for i in 0..8 {
            db.put(&n(i), &json!({})).unwrap();
        }
        graph_snapshot(&db, 8);
        for (by_other, ops) in &batches {
            let writer = if *by_other { &other } else { &db };
            writer
                .transaction(|tx| {
                    for op in ops {
                        // Links to deleted nodes and unlinks of missing edges fail alone.
                        let _ = match op {
                            Op::Link(a, rel, b) => tx.link(&n(*a), &r(*rel), &n(*b), None).map(drop),
                            Op::Unlink(a, rel, b) => tx.unlink(&n(*a), &r(*rel), &n(*b)).map(drop),
                            Op::Delete(a) => tx.delete(&n(*a)).map(drop),
                            Op::Put(a) => tx.put(&n(*a), &json!({"v": a})).map(drop),
                            Op::LinkMany(edges) => {
                                let names: Vec<(String, String, String)> =
                                    edges.iter().map(|(a, rel, b)| (n(*a), r(*rel), n(*b))).collect();
                                tx.link_many(names.iter().map(|(a, rel, b)| (a.as_str(), rel.as_str(), b.as_str(), None)))
                                    .map(drop)
                            }
                        };
                    }
                    // A query inside runs on the transaction's private copy.
                    graph_snapshot(tx, 8);
                    Ok::<_, pluresdb_core::Error>(())
                })
                .unwrap();
            let fresh = graph_snapshot(&Database::open(&path).unwrap(), 8);
            prop_assert_eq!(&graph_snapshot(&db, 8), &fresh);
            prop_assert_eq!(&graph_snapshot(&other, 8), &fresh);
        }
    }
}

#[test]
fn node_rows_with_negative_or_huge_row_ids_are_walked() {
    // Row ids are SQLite's: SQL may give a node row any, not only the next one. The graph keeps
    // such rows by id without a slot for every row id below theirs.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.db");
    let db = Database::open(&path).unwrap();
    db.put("a", &json!({})).unwrap();
    db.link("a", "r", "a", None).unwrap();
    // The graph is loaded now; the new rows reach it by the catch-up.
    assert_eq!(db.degree("a", Direction::Out, None).unwrap(), 1);
    let copy = |rid: i64, id: &str| {
        db.run(
            &format!(
                "INSERT INTO _pluresdb_nodes(rid, id, type, data, vector, created_hlc, updated_hlc, site, cl)
                 SELECT {rid}, '{id}', type, data, vector, created_hlc, updated_hlc, site, cl
                 FROM _pluresdb_nodes WHERE id = 'a'"
            ),
            (),
        )
        .unwrap();
    };
    copy(-7, "neg");
    copy(1 << 40, "huge");
    copy(i64::MAX, "max");
    db.link("a", "r", "neg", None).unwrap();
    db.link("neg", "r", "huge", None).unwrap();
    db.link("huge", "r", "max", None).unwrap();
    let walked = |db: &Database| {
        let walk = db
            .traverse(&Traverse::from(["a"]).relation("r").depth(1, 5))
            .unwrap();
        let mut ids: Vec<String> = walk.ids().map(str::to_owned).collect();
        ids.sort();
        ids
    };
    let want = ["huge", "max", "neg"];
    assert_eq!(walked(&db), want);
    // A fresh build reads them from the tables.
    let fresh = Database::open(&path).unwrap();
    assert_eq!(walked(&fresh), want);
    assert_eq!(fresh.degree("huge", Direction::Both, None).unwrap(), 2);
    // Deleted through the API, each leaves the graph.
    db.delete("huge").unwrap();
    assert_eq!(walked(&db), ["neg"]);
    assert_eq!(walked(&Database::open(&path).unwrap()), ["neg"]);
}

/// Weights whose total passes f64::MAX: the API and SQL say the cost overflows and how to fix
/// it (it was "no path" although a path exists); a path whose total fits is still found.
#[test]
fn weighted_paths_whose_cost_overflows_say_so() {
    let db = Database::open_in_memory().unwrap();
    for (from, to, w) in [("a", "b", 1e308), ("b", "c", 1e308)] {
        db.put(from, &json!({})).unwrap();
        db.put(to, &json!({})).unwrap();
        db.link(from, "road", to, Some(&json!({ "w": w }))).unwrap();
    }
    let err = db
        .shortest_path("a", "c", &PathQuery::new().weight("w"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.message().contains("\"a\" to \"c\""), "{err}");
    assert!(err.message().contains("use smaller weights"), "{err}");
    let err = db
        .all(
            "SELECT * FROM graph_shortest_path('a', 'c', NULL, 'out', 'w')",
            (),
        )
        .unwrap_err();
    assert!(err.message().contains("use smaller weights"), "{err}");
    // A cheaper way whose total fits is the answer.
    db.link("a", "ferry", "c", Some(&json!({"w": 1.5e308})))
        .unwrap();
    let p = db
        .shortest_path("a", "c", &PathQuery::new().weight("w"))
        .unwrap()
        .unwrap();
    assert_eq!((p.nodes, p.cost), (vec!["a".into(), "c".into()], 1.5e308));
}

#[test]
fn trimming_the_graph_log_never_waits_for_another_processs_write() {
    // After a graph query, a handle that applied many log entries deletes them (upkeep that
    // only keeps the log small): while another process (here a second handle) holds the write
    // lock, the query must not wait for it until the busy timeout; a later query trims.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("busy.db");
    let timeout = std::time::Duration::from_secs(4);
    let db = OpenOptions::new()
        .busy_timeout(timeout)
        .open(&path)
        .unwrap();
    db.put("a", &json!({})).unwrap();
    assert_eq!(db.degree("a", Direction::Both, None).unwrap(), 0);
    let ids: Vec<String> = (0..50_000).map(|i| format!("n{i}")).collect();
    let empty = json!({});
    db.put_many(ids.iter().map(|id| (id.as_str(), &empty)))
        .unwrap();
    db.link("a", "r", "n7", None).unwrap();
    let log = |db: &Database| {
        db.value("SELECT count(*) FROM _pluresdb_index_log WHERE idx < 0", ())
            .unwrap()
    };
    let logged = log(&db);
    let other = Database::open(&path).unwrap();
    other.exec("BEGIN IMMEDIATE").unwrap();
    let started = std::time::Instant::now();
    assert_eq!(db.degree("a", Direction::Out, None).unwrap(), 1);
    assert!(
        started.elapsed() < timeout / 2,
        "the query waited {:?} for the other handle's write lock",
        started.elapsed()
    );
    other.exec("COMMIT").unwrap();
    assert_eq!(log(&db), logged, "trimmed while another handle wrote");
    assert_eq!(db.degree("a", Direction::Out, None).unwrap(), 1);
    assert_ne!(log(&db), logged, "trimmed once the lock was free");
}

#[test]
fn a_process_that_never_queries_the_graph_trims_its_log_when_it_closes() {
    // Node and edge writes log a row each for the in-memory graph; only graph queries trimmed
    // the log, so a process that writes the graph and never queries it grew it for ever. A
    // closing handle trims it; another handle that holds the graph, behind, rebuilds it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let reader = Database::open(&path).unwrap();
    reader.put("a", &json!({})).unwrap();
    assert_eq!(reader.degree("a", Direction::Both, None).unwrap(), 0);
    let log = |db: &Database| {
        db.value("SELECT count(*) FROM _pluresdb_index_log WHERE idx < 0", ())
            .unwrap()
            .as_i64()
            .unwrap()
    };
    let writer = std::thread::spawn({
        let path = path.clone();
        move || {
            // A handle of its own (another process's): never queries the graph.
            let db = OpenOptions::new().open(&path).unwrap();
            let ids: Vec<String> = (0..12_000).map(|i| format!("n{i}")).collect();
            let empty = json!({});
            db.put_many(ids.iter().map(|id| (id.as_str(), &empty)))
                .unwrap();
            db.link("a", "r", "n7", None).unwrap();
            db.link("n7", "r", "n8", None).unwrap();
            assert!(log(&db) > 12_000, "logged before closing");
        }
    });
    writer.join().unwrap();
    assert_eq!(log(&reader), 0, "the closing writer trimmed the log");
    // The reader's graph was behind the trim: it is rebuilt, not left stale.
    assert_eq!(reader.degree("a", Direction::Out, None).unwrap(), 1);
    let walk = reader.traverse(&Traverse::from(["a"]).depth(1, 2)).unwrap();
    assert_eq!(walk.len(), 2);
}
