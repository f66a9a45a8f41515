//! Nodes, edges, their SQL views, filters and subscriptions.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pluresdb_core::{Change, CompareOp, Database, Direction, ErrorKind, NodeQuery, RowOp, Value};
use serde_json::json;

#[test]
fn put_merges_top_level_fields_and_replace_replaces() {
    let db = Database::open_in_memory().unwrap();
    let a = db
        .put("user:1", &json!({"name": "Ada", "langs": ["en"]}))
        .unwrap();
    assert_eq!(a.created_at, a.updated_at);
    let b = db
        .put("user:1", &json!({"born": 1815, "langs": ["en", "fr"]}))
        .unwrap();
    assert_eq!(
        json!(b.data),
        json!({"name": "Ada", "born": 1815, "langs": ["en", "fr"]})
    );
    assert_eq!(b.created_at, a.created_at);
    assert!(b.updated_at > a.updated_at);
    let c = db
        .replace("user:1", &json!({"name": "Ada Lovelace"}))
        .unwrap();
    assert_eq!(json!(c.data), json!({"name": "Ada Lovelace"}));
    assert_eq!(db.get_node("user:1").unwrap().unwrap(), c);
    assert_eq!(db.get_node("user:2").unwrap(), None);
    // Big integers stay exact in node data.
    let big = db.put("big", &json!({"n": 9007199254740993_i64})).unwrap();
    assert_eq!(
        db.get_node("big").unwrap().unwrap().data["n"],
        json!(9007199254740993_i64)
    );
    assert_eq!(big.data["n"].as_i64(), Some(9007199254740993));
}

#[test]
fn bad_node_input_is_refused_and_nothing_changes() {
    let db = Database::open_in_memory().unwrap();
    db.put("n", &json!({"keep": true})).unwrap();
    let err = db.put("n", &json!([1, 2])).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(
        err.message(),
        "node data must be a JSON object such as {\"name\": \"Ada\"}, not an array"
    );
    assert_eq!(
        db.put("", &json!({})).unwrap_err().message(),
        "node id must not be empty"
    );
    let long = "x".repeat(2000);
    assert!(
        db.put(&long, &json!({}))
            .unwrap_err()
            .message()
            .contains("the limit is 1024")
    );
    let err = db.set_vector("n", Some(&[1.0, f32::INFINITY])).unwrap_err();
    assert!(err.message().contains("component 1 is inf"), "{err}");
    let err = db.set_type("missing", Some("T")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    // Data nested past what can be read back is refused, for nodes and edges alike (it was
    // stored, and then every listing of nodes failed).
    let nested = |levels: usize| {
        let mut v = json!(1);
        for _ in 0..levels {
            v = json!([v]);
        }
        json!({ "d": v })
    };
    let err = db.put("deep", &nested(200)).unwrap_err();
    assert!(err.message().contains("more than 100 levels deep"), "{err}");
    db.put("m", &nested(99)).unwrap();
    let err = db.link("n", "r", "m", Some(&nested(200))).unwrap_err();
    assert!(err.message().contains("more than 100 levels deep"), "{err}");
    assert_eq!(db.list("").unwrap().len(), 2);
    db.delete("m").unwrap();
    assert_eq!(
        json!(db.get_node("n").unwrap().unwrap().data),
        json!({"keep": true})
    );
    assert_eq!(db.node_count().unwrap(), 1);
}

#[test]
fn delete_tombstones_and_put_brings_back() {
    let db = Database::open_in_memory().unwrap();
    db.put("a", &json!({"x": 1})).unwrap();
    db.put("b", &json!({})).unwrap();
    db.link("a", "likes", "b", None).unwrap();
    assert!(db.delete("a").unwrap());
    assert!(!db.delete("a").unwrap());
    assert_eq!(db.get_node("a").unwrap(), None);
    assert_eq!(
        db.edge_count().unwrap(),
        0,
        "edges of a deleted node are unlinked"
    );
    assert_eq!(
        db.value("SELECT count(*) FROM pluresdb_nodes", ()).unwrap(),
        Value::Integer(1)
    );
    // Kept as a tombstone with an even causal length, ready for sync.
    assert_eq!(
        db.value("SELECT cl FROM _pluresdb_nodes WHERE id = 'a'", ())
            .unwrap(),
        Value::Integer(2)
    );
    let again = db.put("a", &json!({"y": 2})).unwrap();
    assert_eq!(
        json!(again.data),
        json!({"y": 2}),
        "old fields do not come back"
    );
    assert_eq!(
        db.value("SELECT cl FROM _pluresdb_nodes WHERE id = 'a'", ())
            .unwrap(),
        Value::Integer(3)
    );
}

#[test]
fn types_vectors_lists_and_filters() {
    let db = Database::open_in_memory().unwrap();
    for (id, name, age, city) in [
        ("p:1", "Ada", 36, "London"),
        ("p:2", "Alan", 41, "Wilmslow"),
        ("p:3", "Grace", 85, "NYC"),
    ] {
        db.put(
            id,
            &json!({"name": name, "age": age, "address": {"city": city}}),
        )
        .unwrap();
        db.set_type(id, Some("Person")).unwrap();
    }
    db.put("c:1", &json!({"name": "Analytical Engine"}))
        .unwrap();
    db.set_type("c:1", Some("Machine")).unwrap();
    db.set_vector("c:1", Some(&[0.5, -1.0, 2.0])).unwrap();

    let ids = |nodes: Vec<pluresdb_core::Node>| nodes.into_iter().map(|n| n.id).collect::<Vec<_>>();
    assert_eq!(
        ids(db.instances_of("Person").unwrap()),
        ["p:1", "p:2", "p:3"]
    );
    assert_eq!(ids(db.list("p:").unwrap()), ["p:1", "p:2", "p:3"]);
    assert_eq!(ids(db.list("").unwrap()).len(), 4);
    assert_eq!(
        ids(db
            .find(
                &NodeQuery::new()
                    .of_type("Person")
                    .where_field("age", CompareOp::Gt, 40)
            )
            .unwrap()),
        ["p:2", "p:3"]
    );
    assert_eq!(
        ids(db.find(&NodeQuery::new().where_eq("name", "Ada")).unwrap()),
        ["p:1"]
    );
    assert_eq!(
        ids(db
            .find(&NodeQuery::new().where_eq("$.address.city", "NYC"))
            .unwrap()),
        ["p:3"]
    );
    assert_eq!(
        ids(db
            .find(&NodeQuery::new().where_eq("age", serde_json::Value::Null))
            .unwrap()),
        ["c:1"]
    );
    assert_eq!(
        ids(db
            .find(&NodeQuery::new().prefix("p:").limit(1).offset(1))
            .unwrap()),
        ["p:2"]
    );
    // Limits and offsets beyond i64::MAX mean "all" / "past the end", not a type error.
    let all = db
        .find(&NodeQuery::new().prefix("p:").limit(usize::MAX))
        .unwrap();
    assert_eq!(ids(all), ["p:1", "p:2", "p:3"]);
    let none = db
        .find(&NodeQuery::new().limit(usize::MAX).offset(usize::MAX))
        .unwrap();
    assert!(none.is_empty());
    assert!(
        db.find(&NodeQuery::new().offset(usize::MAX))
            .unwrap()
            .is_empty()
    );
    let machine = db.get_node("c:1").unwrap().unwrap();
    assert_eq!(machine.vector.as_deref(), Some(&[0.5f32, -1.0, 2.0][..]));
    assert_eq!(machine.node_type.as_deref(), Some("Machine"));
    // put keeps type and vector.
    let machine = db.put("c:1", &json!({"year": 1837})).unwrap();
    assert_eq!(machine.node_type.as_deref(), Some("Machine"));
    assert!(machine.vector.is_some());
    let err = db
        .find(&NodeQuery::new().where_field("", CompareOp::Eq, 1))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[test]
fn field_names_with_backslashes_quotes_and_control_characters_match() {
    let db = Database::open_in_memory().unwrap();
    let keys = ["a\\b", "say \"hi\"", "tab\there", "end\\"];
    db.put(
        "x",
        &json!({keys[0]: 1, keys[1]: 2, keys[2]: 3, keys[3]: 4}),
    )
    .unwrap();
    db.put("y", &json!({"a": 1})).unwrap();
    for (i, key) in keys.into_iter().enumerate() {
        let found = db.find(&NodeQuery::new().where_eq(key, i + 1)).unwrap();
        let ids: Vec<_> = found.into_iter().map(|n| n.id).collect();
        assert_eq!(ids, ["x"], "field {key:?}");
    }
}

#[test]
fn edges_link_unlink_and_neighbours() {
    let db = Database::open_in_memory().unwrap();
    for id in ["ada", "alan", "grace"] {
        db.put(id, &json!({"name": id})).unwrap();
    }
    db.link("ada", "knows", "alan", Some(&json!({"since": 1936})))
        .unwrap();
    db.link("ada", "admires", "grace", None).unwrap();
    db.link("grace", "knows", "ada", None).unwrap();
    let e = db.link("ada", "knows", "alan", None).unwrap();
    assert_eq!(e.data["since"], 1936, "re-linking without data keeps it");
    assert_eq!(
        db.edges("ada", Direction::Out, None)
            .unwrap()
            .iter()
            .map(|e| (e.relation.as_str(), e.to.as_str()))
            .collect::<Vec<_>>(),
        [("admires", "grace"), ("knows", "alan")]
    );
    assert_eq!(
        db.edges("ada", Direction::In, None).unwrap()[0].from,
        "grace"
    );
    let names = |v: Vec<pluresdb_core::Node>| v.into_iter().map(|n| n.id).collect::<Vec<_>>();
    assert_eq!(
        names(db.neighbors("ada", Direction::Out, Some("knows")).unwrap()),
        ["alan"]
    );
    assert_eq!(
        names(db.neighbors("ada", Direction::Both, None).unwrap()),
        ["alan", "grace"]
    );
    assert!(db.unlink("ada", "knows", "alan").unwrap());
    assert!(!db.unlink("ada", "knows", "alan").unwrap());
    assert_eq!(db.get_edge("ada", "knows", "alan").unwrap(), None);
    let err = db.link("ada", "knows", "nobody", None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(
        err.message(),
        "target node \"nobody\" does not exist; create it with put before linking"
    );
    let err = db.link("ada", "", "alan", None).unwrap_err();
    assert_eq!(err.message(), "relation must not be empty");
    let err = db
        .link("ada", "x", "alan", Some(&json!("text")))
        .unwrap_err();
    assert!(err.message().starts_with("edge data must be a JSON object"));
    assert_eq!(db.edge_count().unwrap(), 2);
    // A self-loop is one edge: listed once both ways, once each way on its own.
    db.link("grace", "notes", "grace", None).unwrap();
    let at_grace = |d| db.edges("grace", d, Some("notes")).unwrap().len();
    assert_eq!(
        [Direction::Both, Direction::Out, Direction::In].map(at_grace),
        [1, 1, 1]
    );
    assert_eq!(db.edges("grace", Direction::Both, None).unwrap().len(), 3);
    assert_eq!(
        db.degree("grace", Direction::Both, Some("notes")).unwrap(),
        2,
        "degree counts a self-loop once per direction"
    );
    db.unlink("grace", "notes", "grace").unwrap();
    // An unknown (or deleted) node has no edges to list: it is not found, as in degree(),
    // not an empty list; a node without edges has an empty one.
    db.put("loner", &json!({})).unwrap();
    assert!(db.edges("loner", Direction::Both, None).unwrap().is_empty());
    assert!(
        db.neighbors("loner", Direction::Both, None)
            .unwrap()
            .is_empty()
    );
    db.delete("alan").unwrap();
    for id in ["nobody", "alan"] {
        let errs = [
            db.edges(id, Direction::Both, None).unwrap_err(),
            db.neighbors(id, Direction::Out, Some("knows")).unwrap_err(),
            db.degree(id, Direction::Both, None).unwrap_err(),
        ];
        for err in errs {
            assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
            assert_eq!(
                err.message(),
                format!(
                    "no node with id {id:?} is in the graph; check the id, or create the node first"
                )
            );
        }
    }
}

#[test]
fn nodes_and_edges_join_with_user_tables_in_sql() {
    let db = Database::open_in_memory().unwrap();
    db.exec(
        "CREATE TABLE orders(id INTEGER PRIMARY KEY, customer TEXT, total REAL);
             INSERT INTO orders(customer, total) VALUES ('ada', 10), ('ada', 5.5), ('alan', 7);",
    )
    .unwrap();
    db.put("ada", &json!({"name": "Ada", "tier": "gold"}))
        .unwrap();
    db.put("alan", &json!({"name": "Alan", "tier": "silver"}))
        .unwrap();
    db.link("ada", "refers", "alan", None).unwrap();
    let rows: Vec<(String, f64)> = db
        .all_as(
            "SELECT n.data ->> 'name', sum(o.total) FROM orders o JOIN pluresdb_nodes n ON n.id = o.customer
             GROUP BY n.id ORDER BY n.id",
            (),
        )
        .unwrap();
    assert_eq!(rows, [("Ada".into(), 15.5), ("Alan".into(), 7.0)]);
    let referred: Vec<(String,)> = db
        .all_as(
            "SELECT n.data ->> 'tier' FROM pluresdb_edges e JOIN pluresdb_nodes n ON n.id = e.to_id WHERE e.from_id = 'ada' AND e.relation = 'refers'",
            (),
        )
        .unwrap();
    assert_eq!(referred, [("silver".into(),)]);
}

#[test]
fn node_and_edge_writes_join_transactions() {
    let db = Database::open_in_memory().unwrap();
    let r: Result<(), pluresdb_core::Error> = db.transaction(|tx| {
        tx.put("x", &json!({"a": 1}))?;
        tx.exec("CREATE TABLE t(v)")?;
        Err(pluresdb_core::Error::invalid("abort"))
    });
    assert!(r.is_err());
    assert_eq!(db.get_node("x").unwrap(), None);
    assert!(db.all("SELECT * FROM t", ()).is_err());
}

#[test]
fn on_fires_after_commit_with_the_new_value_and_never_for_rollbacks() {
    let db = Database::open_in_memory().unwrap();
    type Seen = Vec<(String, Option<serde_json::Value>)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let s = seen.clone();
    let sub = db.on("user:*", move |c| {
        s.lock()
            .unwrap()
            .push((c.id.clone(), c.node.as_ref().map(|n| json!(n.data))));
    });
    let one = seen.clone();
    let sub_one = db.on("user:2", move |c| {
        one.lock().unwrap().push((format!("only {}", c.id), None))
    });
    db.put("user:1", &json!({"v": 1})).unwrap();
    db.put("other", &json!({"v": 1})).unwrap();
    let _ = db.transaction(|tx| {
        tx.put("user:2", &json!({"v": 2}))?;
        // Not delivered while the transaction is open.
        assert_eq!(seen.lock().unwrap().len(), 1);
        Ok::<_, pluresdb_core::Error>(())
    });
    let _ = db.transaction(|tx| {
        tx.put("user:3", &json!({"v": 3}))?;
        Err::<(), _>(pluresdb_core::Error::invalid("rollback"))
    });
    db.delete("user:1").unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            ("user:1".to_string(), Some(json!({"v": 1}))),
            ("user:2".to_string(), Some(json!({"v": 2}))),
            ("only user:2".to_string(), None),
            ("user:1".to_string(), None),
        ]
    );
    assert!(db.off(sub));
    assert!(db.off(sub_one));
    assert!(!db.off(sub));
    db.put("user:9", &json!({})).unwrap();
    assert_eq!(seen.lock().unwrap().len(), 4);
}

#[test]
fn a_callback_waiting_for_a_write_on_another_thread_does_not_deadlock() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path().join("cb.db")).unwrap();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s = seen.clone();
    let _all = db.on("*", move |c| s.lock().unwrap().push(c.id.clone()));
    let d2 = db.clone();
    let _sub = db.on("user*", move |c| {
        let (d3, id) = (d2.clone(), format!("audit-{}", c.id));
        // The worker's put commits, then finds this thread delivering and returns.
        std::thread::spawn(move || d3.put(&id, &json!({"seen": true})).map(|_| ()))
            .join()
            .unwrap()
            .unwrap();
    });
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let d4 = db.clone();
    std::thread::spawn(move || {
        let r = d4.put("user1", &json!({"a": 1})).map(|_| ());
        let _ = done_tx.send(r.and_then(|_| d4.put("user2", &json!({})).map(|_| ())));
    });
    let result = done_rx.recv_timeout(Duration::from_secs(10));
    assert!(matches!(result, Ok(Ok(()))), "deadlocked: {result:?}");
    // Every change once, in commit order: each audit write after the change that caused it.
    assert_eq!(
        *seen.lock().unwrap(),
        ["user1", "audit-user1", "user2", "audit-user2"]
    );
}

/// Inserts 'real', commits, and checks that it is the only row kept and the only one reported
/// (rows rolled back to a savepoint before were not).
fn commit_the_real_row(db: &Database, stream: &pluresdb_core::ChangeStream) {
    db.run("INSERT INTO t(b) VALUES ('real')", ()).unwrap();
    db.exec("COMMIT").unwrap();
    assert_eq!(
        db.all_as::<(i64, String)>("SELECT a, b FROM t", ())
            .unwrap(),
        [(1, "real".to_string())]
    );
    assert_eq!(row_events(stream), [(RowOp::Insert, 1)]);
}

fn row_events(stream: &pluresdb_core::ChangeStream) -> Vec<(RowOp, i64)> {
    stream
        .drain()
        .into_iter()
        .filter_map(|c| match c {
            Change::Row(r) => Some((r.op, r.rowid)),
            _ => None,
        })
        .collect()
}

#[test]
fn on_change_skips_rows_of_statements_that_failed_in_a_transaction() {
    let db = Database::open_in_memory().unwrap();
    db.exec("CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT UNIQUE)")
        .unwrap();
    let stream = db.on_change();
    db.transaction(|tx| {
        tx.run("INSERT INTO t(b) VALUES ('keep')", ())?;
        // SQLite undoes each failing statement's rows; run, exec and iterate alike.
        assert!(
            tx.run("INSERT INTO t(b) VALUES ('p1'), ('p2'), ('keep')", ())
                .is_err()
        );
        assert!(tx.exec("INSERT INTO t(b) VALUES ('p3'), ('keep')").is_err());
        let rows = tx.iterate("INSERT INTO t(b) VALUES ('p4'), ('keep') RETURNING a", ())?;
        assert!(rows.collect::<Result<Vec<_>, _>>().is_err());
        // OR FAIL keeps the rows changed before the failure: they are reported.
        assert!(
            tx.run("INSERT OR FAIL INTO t(b) VALUES ('f1'), ('keep')", ())
                .is_err()
        );
        Ok::<_, pluresdb_core::Error>(())
    })
    .unwrap();
    assert_eq!(
        db.all_as::<(i64, String)>("SELECT a, b FROM t", ())
            .unwrap(),
        [(1, "keep".to_string()), (2, "f1".to_string())]
    );
    assert_eq!(
        row_events(&stream),
        [(RowOp::Insert, 1), (RowOp::Insert, 2)]
    );
}

#[test]
fn on_change_skips_rows_rolled_back_to_a_sql_savepoint() {
    let db = Database::open_in_memory().unwrap();
    db.exec("CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT)")
        .unwrap();
    let stream = db.on_change();
    db.exec(
        "BEGIN; INSERT INTO t(b) VALUES ('keep'); SAVEPOINT s; INSERT INTO t(b) VALUES ('gone'); \
         ROLLBACK TO s; RELEASE s; INSERT INTO t(b) VALUES ('real'); COMMIT",
    )
    .unwrap();
    // Statement by statement too, with nested names.
    db.exec("BEGIN").unwrap();
    db.run("SAVEPOINT \"Outer\"", ()).unwrap();
    db.run("INSERT INTO t(b) VALUES ('gone')", ()).unwrap();
    db.run("SAVEPOINT inner", ()).unwrap();
    db.run("INSERT INTO t(b) VALUES ('gone')", ()).unwrap();
    db.run("ROLLBACK TRANSACTION TO SAVEPOINT outer", ())
        .unwrap();
    db.run("INSERT INTO t(b) VALUES ('real')", ()).unwrap();
    db.run("RELEASE outer", ()).unwrap();
    db.exec("COMMIT").unwrap();
    assert_eq!(
        db.all_as::<(i64,)>("SELECT a FROM t", ()).unwrap(),
        [(1,), (2,), (3,)]
    );
    assert_eq!(
        row_events(&stream),
        [(RowOp::Insert, 1), (RowOp::Insert, 2), (RowOp::Insert, 3)]
    );
}

#[test]
fn on_change_follows_savepoints_run_through_iterate_or_after_comments() {
    let db = Database::open_in_memory().unwrap();
    db.exec("CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT)")
        .unwrap();
    let stream = db.on_change();
    let run_through_iterate = |sql: &str| {
        for row in db.iterate(sql, ()).unwrap() {
            row.unwrap();
        }
    };
    db.exec("BEGIN").unwrap();
    run_through_iterate("SAVEPOINT s");
    db.run("INSERT INTO t(b) VALUES ('gone')", ()).unwrap();
    run_through_iterate("ROLLBACK TO s");
    // A comment before the statement, and a quoted name with a space and a doubled quote.
    db.run(
        "-- undo what follows\n /* if needed */ SAVEPOINT \"my \"\"sp\"",
        (),
    )
    .unwrap();
    db.run("INSERT INTO t(b) VALUES ('gone')", ()).unwrap();
    db.exec(
        "INSERT INTO t(b) VALUES ('gone'); /* undo */ ROLLBACK TO [My \"sp] -- all\n; RELEASE s",
    )
    .unwrap();
    commit_the_real_row(&db, &stream);
}

#[test]
fn on_change_streams_nodes_edges_and_sql_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path().join("s.db")).unwrap();
    let any_count = Arc::new(Mutex::new(0));
    let c = any_count.clone();
    db.on_any(move |_| *c.lock().unwrap() += 1);
    let stream = db.on_change();
    db.exec("CREATE TABLE todo(id INTEGER PRIMARY KEY, title TEXT)")
        .unwrap();
    db.run("INSERT INTO todo(title) VALUES ('a')", ()).unwrap();
    db.put("a", &json!({})).unwrap();
    db.put("b", &json!({})).unwrap();
    db.link("a", "r", "b", None).unwrap();
    db.run("UPDATE todo SET title = 'b'", ()).unwrap();
    db.exec("BEGIN; DELETE FROM todo; ROLLBACK;").unwrap();
    // Changes from another thread arrive too.
    let other = db.clone();
    std::thread::spawn(move || other.run("DELETE FROM todo WHERE id > 0", ()).unwrap())
        .join()
        .unwrap();
    let got: Vec<Change> =
        std::iter::from_fn(|| stream.recv_timeout(Duration::from_millis(200))).collect();
    let kinds: Vec<String> = got
        .iter()
        .map(|c| match c {
            Change::Row(r) => format!("row {} {:?} {}", r.table, r.op, r.rowid),
            Change::Node(n) => format!("node {}", n.id),
            Change::Edge(e) => format!("edge {}-{}-{}", e.from, e.relation, e.to),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "row todo Insert 1",
            "node a",
            "node b",
            "edge a-r-b",
            "row todo Update 1",
            "row todo Delete 1",
        ]
    );
    assert_eq!(*any_count.lock().unwrap(), 2);
    assert!(matches!(&got[5], Change::Row(r) if r.op == RowOp::Delete));
    drop(stream);
}

#[test]
fn on_change_follows_savepoints_whose_names_touch_the_keyword() {
    // `SAVEPOINT"s p"` and `ROLLBACK TO"s p"` are SQLite's SAVEPOINT "s p" and ROLLBACK TO "s p".
    let db = Database::open_in_memory().unwrap();
    db.exec("CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT)")
        .unwrap();
    let stream = db.on_change();
    db.exec("BEGIN").unwrap();
    db.exec("SAVEPOINT\"s p\"").unwrap();
    db.run("INSERT INTO t(b) VALUES ('gone')", ()).unwrap();
    db.exec("ROLLBACK TO\"s p\"; RELEASE[s p]").unwrap();
    commit_the_real_row(&db, &stream);
}

#[test]
fn deleting_a_node_tells_subscribers_its_loop_is_gone() {
    let db = Database::open_in_memory().unwrap();
    db.put("x", &json!({})).unwrap();
    db.link("x", "r", "x", None).unwrap();
    let told = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = told.clone();
    db.on_every_change(move |c| {
        if let pluresdb_core::Change::Edge(e) = c {
            sink.lock().unwrap().push(format!(
                "{} {} {} {}",
                e.from,
                e.relation,
                e.to,
                e.edge.is_some()
            ));
        }
    });
    db.delete("x").unwrap();
    assert_eq!(*told.lock().unwrap(), ["x r x false"]);
}

#[test]
fn check_reports_edge_rows_whose_node_row_was_deleted_by_sql() {
    let db = Database::open_in_memory().unwrap();
    for id in ["a", "b"] {
        db.put(id, &json!({})).unwrap();
    }
    db.link("a", "r", "b", None).unwrap();
    assert_eq!(db.check().unwrap(), Vec::<String>::new());
    db.run("DELETE FROM _pluresdb_nodes WHERE id = 'b'", ())
        .unwrap();
    let problems = db.check().unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].starts_with("1 edge row(s) in _pluresdb_edges point at a node"));
    assert!(
        db.edges("a", pluresdb_core::Direction::Both, None)
            .unwrap()
            .is_empty()
    );
    // The statement the report gives removes them.
    let problem = &problems[0];
    let fix = &problem[problem.find("DELETE").unwrap()..problem.find("; delete").unwrap()];
    db.exec(fix).unwrap();
    assert_eq!(db.check().unwrap(), Vec::<String>::new());
    assert_eq!(db.edge_count().unwrap(), 0);
}
