//! Replication between databases: capture, change sets, merge rules, status, history.

use pluresdb_core::{
    Change, ChangeRecord, Database, Direction, EDGES, ErrorKind, NODES, OpenOptions, Refetch,
    Refetching, SyncProgress, Traverse, Value, Version,
};
use serde_json::{Value as Json, json};

/// Everything replicated, in a canonical text form for comparing replicas.
fn dump(db: &Database) -> String {
    let mut out = String::new();
    for n in db.list("").unwrap() {
        out += &format!(
            "node {} {:?} {} {:?}\n",
            n.id,
            n.node_type,
            json!(n.data),
            n.vector
        );
    }
    for (f, r, t, d) in db
        .all_as::<(String, String, String, String)>(
            "SELECT from_id, relation, to_id, data FROM pluresdb_edges ORDER BY 1, 2, 3",
            (),
        )
        .unwrap()
    {
        out += &format!("edge {f} {r} {t} {d}\n");
    }
    for table in db.synced_tables().unwrap() {
        for row in db
            .all(&format!("SELECT * FROM \"{table}\" ORDER BY 1"), ())
            .unwrap()
        {
            out += &format!("{table} {}\n", row.to_json());
        }
    }
    out
}

/// One-way sync from `a` to `b` as a session runs it: what `b` is missing from `a`, merged as
/// received from `a`, `b`'s cursor recorded and `a` told they arrived. Returns the changes
/// applied.
fn push(a: &Database, b: &Database) -> u64 {
    push_report(a, b).applied
}

fn sync(a: &Database, b: &Database) {
    push(a, b);
    push(b, a);
}

/// The table the multi-handle tests write.
const NOTES: &str = "CREATE TABLE notes(id TEXT PRIMARY KEY NOT NULL, body TEXT)";

/// A database at `path` with the `notes` table, not synced, and a second handle on the same
/// file (as another process would open it).
fn notes_and_other_handle(path: &std::path::Path) -> (Database, Database) {
    let db = Database::open(path).unwrap();
    db.exec(NOTES).unwrap();
    (db, Database::open(path).unwrap())
}

/// A database file in `dir` whose table `table`, created by `create`, is synced.
fn synced_file(
    dir: &tempfile::TempDir,
    create: &str,
    table: &str,
) -> (std::path::PathBuf, Database) {
    let path = dir.path().join("synced.db");
    let db = Database::open(&path).unwrap();
    db.exec(create).unwrap();
    db.sync_table(table).unwrap();
    (path, db)
}

/// True when `db` has a change of `field` to the text `value` to send.
fn sends(db: &Database, field: &str, value: &str) -> bool {
    db.changes_since(0, None)
        .unwrap()
        .changes
        .iter()
        .any(|c| &*c.field == field && c.value == Some(Value::Text(value.into())))
}

/// Runs `sql`, which must fail, and returns the error's kind.
fn failure(db: &Database, sql: &str) -> ErrorKind {
    db.exec(sql).unwrap_err().kind()
}

/// Two in-memory databases with the tables of `schema`, `synced` of them synced.
fn pair(schema: &str, synced: &[&str]) -> (Database, Database) {
    (with_synced(schema, synced), with_synced(schema, synced))
}

/// [`pair`], with `on_a` run on the first and the two synced.
fn synced_pair(schema: &str, synced: &[&str], on_a: &str) -> (Database, Database) {
    let (a, b) = pair(schema, synced);
    a.exec(on_a).unwrap();
    sync(&a, &b);
    (a, b)
}

/// Why `table`'s changes were refused by the merge that gave `report`; fails the test when
/// they were not (or another table's were).
fn refused(report: &pluresdb_core::ApplyReport, table: &str) -> String {
    assert_eq!(report.refused.len(), 1, "{report:?}");
    assert_eq!(report.refused[0].table, table, "{report:?}");
    report.refused[0].reason.clone()
}

/// A change of `collection`'s row `key` from site `[5; 16]`, stamped `at` (ms), causal length 1.
fn peer_change(
    at: u64,
    collection: &str,
    key: &str,
    field: &str,
    value: Option<Value>,
) -> ChangeRecord {
    ChangeRecord {
        collection: collection.into(),
        key: vec![Value::Text(key.into())].into(),
        field: field.into(),
        value,
        version: Version::new(
            pluresdb_core::Hlc::new(at, 0),
            pluresdb_core::SiteId([5; 16]),
        ),
        cl: 1,
    }
}

/// An in-memory database with the tables of `schema`, `synced` of them synced.
fn with_synced(schema: &str, synced: &[&str]) -> Database {
    synced_in(Database::open_in_memory().unwrap(), schema, synced)
}

/// `db` with the tables of `schema`, `synced` of them synced.
fn synced_in(db: Database, schema: &str, synced: &[&str]) -> Database {
    db.exec(schema).unwrap();
    for t in synced {
        db.sync_table(t).unwrap();
    }
    db
}

fn todo_db() -> Database {
    let db = Database::open_in_memory().unwrap();
    db.exec("CREATE TABLE todos(id TEXT PRIMARY KEY NOT NULL, title TEXT NOT NULL DEFAULT '', done INTEGER NOT NULL DEFAULT 0)").unwrap();
    db.sync_table("todos").unwrap();
    db
}

#[test]
fn a_key_too_long_to_sync_is_refused_when_written_and_sync_goes_on() {
    let (a, b) = (todo_db(), todo_db());
    a.run("INSERT INTO todos(id) VALUES ('short')", ()).unwrap();
    let long = "k".repeat(70_000);
    let err = a
        .run("INSERT INTO todos(id) VALUES (?)", (long.as_str(),))
        .unwrap_err();
    assert!(err.message().contains("64 KiB"), "{err}");
    // So is changing a key to one (node and relation ids have a shorter limit of their own).
    let err = a
        .run(
            "UPDATE todos SET id = ? WHERE id = 'short'",
            (long.as_str(),),
        )
        .unwrap_err();
    assert!(err.message().contains("64 KiB"), "{err}");
    // A peer's change with such a key is refused too.
    let mut remote = a.changes_since(0, None).unwrap().changes;
    remote.retain(|c| c.field.is_empty());
    remote[0].key = vec![Value::Text(long.clone())].into();
    let err = b.apply_changes(&remote).unwrap_err();
    assert!(err.message().contains("64 KiB"), "{err}");
    // A column name longer than sync can name: refused when the table starts syncing, and when
    // a column added later is written.
    let long_col = "c".repeat(5000);
    a.exec(&format!(
        "CREATE TABLE wide(id TEXT PRIMARY KEY NOT NULL, \"{long_col}\" INT)"
    ))
    .unwrap();
    let err = a.sync_table("wide").unwrap_err();
    assert!(err.message().contains("column name"), "{err}");
    let err = a
        .exec(&format!("ALTER TABLE todos ADD COLUMN \"{long_col}\" INT"))
        .unwrap_err();
    assert!(err.message().contains("use a shorter name"), "{err}");
    // Nothing of the refused writes is stored, and the rest still syncs.
    assert!(
        a.get("SELECT 1 FROM todos WHERE id = ?", (long.as_str(),))
            .unwrap()
            .is_none()
    );
    sync(&a, &b);
    assert_eq!(dump(&a), dump(&b));
}

#[test]
fn a_node_field_name_too_long_to_sync_is_refused() {
    let (a, b) = (todo_db(), todo_db());
    let name = "f".repeat(5000);
    let err = a.put("n", &json!({ name.as_str(): 1 })).unwrap_err();
    assert!(err.message().contains("the limit is 4091"), "{err}");
    assert!(a.get_node("n").unwrap().is_none());
    // At the limit, it is stored, updated and synced.
    let name = "f".repeat(4091);
    a.put("n", &json!({ name.as_str(): 1, "x": 2 })).unwrap();
    a.put("n", &json!({ name.as_str(): 3 })).unwrap();
    sync(&a, &b);
    assert_eq!(dump(&a), dump(&b));
}

#[test]
fn text_that_is_not_utf8_syncs_as_queries_read_it() {
    // SQLite stores any bytes as TEXT; PluresDB reads invalid bytes as U+FFFD, and sync sends
    // what it reads instead of failing every sync of the database.
    let (a, b) = (todo_db(), todo_db());
    a.run(
        "INSERT INTO todos(id, title) VALUES ('x', CAST(x'ff41' AS TEXT)), ('y', 'fine')",
        (),
    )
    .unwrap();
    sync(&a, &b);
    let title = |db: &Database| -> String {
        db.get("SELECT title FROM todos WHERE id = 'x'", ())
            .unwrap()
            .unwrap()
            .get(0)
            .unwrap()
    };
    assert_eq!(title(&b), "\u{FFFD}A");
    assert_eq!(title(&a), title(&b));
    assert!(
        b.get("SELECT 1 FROM todos WHERE id = 'y'", ())
            .unwrap()
            .is_some()
    );
    // As a key it could not be told apart from others: refused when written.
    let err = a
        .run("INSERT INTO todos(id) VALUES (CAST(x'ff' AS TEXT))", ())
        .unwrap_err();
    assert!(err.message().contains("not valid UTF-8"), "{err}");
    sync(&a, &b);
    assert_eq!(dump(&a), dump(&b));
}

#[test]
fn nodes_edges_and_rows_reach_the_other_database() {
    let a = todo_db();
    let b = todo_db();
    a.put("ada", &json!({"name": "Ada", "born": 1815})).unwrap();
    a.put("alan", &json!({"name": "Alan"})).unwrap();
    a.set_type("ada", Some("Person")).unwrap();
    a.set_vector("alan", Some(&[1.0, 2.0])).unwrap();
    a.link("ada", "inspired", "alan", Some(&json!({"how": "notes"})))
        .unwrap();
    a.run(
        "INSERT INTO todos(id, title) VALUES ('t1', 'write'), ('t2', 'test')",
        (),
    )
    .unwrap();
    a.run("UPDATE todos SET done = 1 WHERE id = 't1'", ())
        .unwrap();
    sync(&a, &b);
    assert_eq!(dump(&a), dump(&b));
    assert!(
        dump(&b).contains("todos {\"id\":\"t1\",\"title\":\"write\",\"done\":1}"),
        "{}",
        dump(&b)
    );
    assert_eq!(
        b.get_node("ada").unwrap().unwrap().node_type.as_deref(),
        Some("Person")
    );
    // Nothing new: an incremental sync sends nothing.
    assert_eq!(push(&a, &b), 0);
    // Changes made on b flow back, and only the new ones are sent.
    b.put("ada", &json!({"field": "math"})).unwrap();
    b.run("DELETE FROM todos WHERE id = 't2'", ()).unwrap();
    let set = b
        .changes_since(a.peer_cursor(b.site_id()).unwrap(), Some(a.site_id()))
        .unwrap();
    assert_eq!(set.changes.len(), 2, "{:#?}", set.changes);
    sync(&a, &b);
    assert_eq!(dump(&a), dump(&b));
    assert_eq!(
        a.value("SELECT count(*) FROM todos", ()).unwrap(),
        Value::Integer(1)
    );
    assert_eq!(a.get_node("ada").unwrap().unwrap().data["field"], "math");
}

#[test]
fn concurrent_writes_to_one_field_resolve_the_same_everywhere() {
    let a = todo_db();
    let b = todo_db();
    a.run("INSERT INTO todos(id, title) VALUES ('t', 'original')", ())
        .unwrap();
    sync(&a, &b);
    a.run("UPDATE todos SET title = 'from a' WHERE id = 't'", ())
        .unwrap();
    // Writes in the same millisecond are concurrent; a pause makes b's clearly later.
    std::thread::sleep(std::time::Duration::from_millis(3));
    b.run("UPDATE todos SET title = 'from b' WHERE id = 't'", ())
        .unwrap();
    b.run("UPDATE todos SET done = 1 WHERE id = 't'", ())
        .unwrap();
    a.put("n", &json!({"x": "a", "y": 1})).unwrap();
    b.put("n", &json!({"x": "b", "z": 2})).unwrap();
    sync(&a, &b);
    sync(&a, &b);
    assert_eq!(dump(&a), dump(&b));
    // Different fields of one row both survive (per-field last writer wins).
    let row = a
        .get("SELECT title, done FROM todos WHERE id = 't'", ())
        .unwrap()
        .unwrap();
    assert_eq!(row.get::<i64>("done").unwrap(), 1);
    assert_eq!(
        row.get::<String>("title").unwrap(),
        "from b",
        "b wrote last"
    );
    let n = a.get_node("n").unwrap().unwrap();
    assert_eq!(n.data["y"], 1);
    assert_eq!(n.data["z"], 2);
}

#[test]
fn a_delete_beats_older_writes_and_a_later_reinsert_beats_the_delete() {
    let a = todo_db();
    let b = todo_db();
    a.run("INSERT INTO todos(id, title) VALUES ('t', 'x')", ())
        .unwrap();
    a.put("n", &json!({"v": 1})).unwrap();
    sync(&a, &b);
    // b edits, a deletes, concurrently: the delete wins (higher causal length).
    b.run("UPDATE todos SET title = 'edited' WHERE id = 't'", ())
        .unwrap();
    b.put("n", &json!({"v": 2})).unwrap();
    a.run("DELETE FROM todos WHERE id = 't'", ()).unwrap();
    a.delete("n").unwrap();
    sync(&a, &b);
    assert_eq!(dump(&a), dump(&b));
    assert_eq!(
        b.value("SELECT count(*) FROM todos", ()).unwrap(),
        Value::Integer(0)
    );
    assert!(b.get_node("n").unwrap().is_none());
    // Re-inserting after the delete wins everywhere.
    b.run("INSERT INTO todos(id, title) VALUES ('t', 'again')", ())
        .unwrap();
    b.put("n", &json!({"v": 3})).unwrap();
    sync(&a, &b);
    assert_eq!(dump(&a), dump(&b));
    assert_eq!(
        a.value("SELECT title FROM todos", ()).unwrap(),
        Value::Text("again".into())
    );
    assert_eq!(
        json!(a.get_node("n").unwrap().unwrap().data),
        json!({"v": 3}),
        "old fields did not come back"
    );
}

/// Two databases with nodes x and y, synced.
fn x_and_y_on_both() -> (Database, Database) {
    let (a, b) = (Database::open_in_memory().unwrap(), todo_db());
    for id in ["x", "y"] {
        a.put(id, &json!({})).unwrap();
    }
    sync(&a, &b);
    (a, b)
}

/// Five milliseconds: two writes on either side of it are in that order by clock time.
fn later() {
    std::thread::sleep(std::time::Duration::from_millis(5));
}

#[test]
fn an_edge_linked_to_a_later_life_of_its_node_is_kept_whatever_arrives_first() {
    // A deletes x, puts it again and links y -> x. A replica that gets the edge before x's new
    // life (a sync cut short, or split into several merges) keeps it: the link was made to a
    // live node.
    let (a, b) = x_and_y_on_both();
    a.delete("x").unwrap();
    sync(&a, &b);
    later();
    a.put("x", &json!({"life": 2})).unwrap();
    a.link("y", "cites", "x", None).unwrap();
    let set = a
        .changes_since(b.peer_cursor(a.site_id()).unwrap(), None)
        .unwrap();
    let (edges, rest): (Vec<ChangeRecord>, Vec<ChangeRecord>) = set
        .changes
        .into_iter()
        .partition(|c| &*c.collection == EDGES);
    assert!(!edges.is_empty() && !rest.is_empty());
    b.apply_changes_from(a.site_id(), &edges).unwrap();
    b.apply_changes_from(a.site_id(), &rest).unwrap();
    sync(&a, &b);
    assert_eq!(dump(&a), dump(&b));
    for db in [&a, &b] {
        assert_eq!(db.edges("x", Direction::In, None).unwrap().len(), 1);
    }
}

#[test]
fn a_node_deleted_while_another_device_links_it_hides_that_edge_everywhere() {
    // Every device the same: the node gone, the concurrent edge kept but hidden, whether it
    // was linked before or after the delete; it shows when the node is put again.
    for link_first in [true, false] {
        let (a, b) = x_and_y_on_both();
        if link_first {
            b.link("y", "cites", "x", None).unwrap();
            later();
            a.delete("x").unwrap();
        } else {
            a.delete("x").unwrap();
            later();
            b.link("y", "cites", "x", None).unwrap();
        }
        sync(&a, &b);
        sync(&a, &b);
        assert_eq!(dump(&a), dump(&b));
        for db in [&a, &b] {
            assert!(db.get_node("x").unwrap().is_none());
            assert!(db.edges("y", Direction::Out, None).unwrap().is_empty());
        }
        a.put("x", &json!({})).unwrap();
        sync(&a, &b);
        for db in [&a, &b] {
            assert_eq!(db.edges("y", Direction::Out, None).unwrap().len(), 1);
        }
        b.unlink("y", "cites", "x").unwrap();
        sync(&a, &b);
        assert!(a.edges("y", Direction::Out, None).unwrap().is_empty());
    }
}

#[test]
fn applying_twice_or_in_reverse_order_gives_the_same_state() {
    let a = todo_db();
    for i in 0..20 {
        a.run(
            "INSERT INTO todos(id, title) VALUES (?, ?)",
            (format!("t{i}"), format!("v{i}")),
        )
        .unwrap();
        if i % 3 == 0 {
            a.run("UPDATE todos SET done = 1 WHERE id = ?", (format!("t{i}"),))
                .unwrap();
        }
        if i % 5 == 0 {
            a.run("DELETE FROM todos WHERE id = ?", (format!("t{i}"),))
                .unwrap();
        }
    }
    let changes = a.changes_since(0, None).unwrap().changes;
    let forward = todo_db();
    forward.apply_changes(&changes).unwrap();
    forward.apply_changes(&changes).unwrap();
    let backward = todo_db();
    let reversed: Vec<ChangeRecord> = changes.iter().rev().cloned().collect();
    for c in reversed.chunks(7) {
        backward.apply_changes(c).unwrap();
    }
    assert_eq!(dump(&forward), dump(&a));
    assert_eq!(dump(&backward), dump(&a));
    let version = forward.db_version().unwrap();
    let again = forward.apply_changes_from(a.site_id(), &changes).unwrap();
    assert_eq!(again.applied, 0, "a duplicate batch changes nothing");
    assert_eq!(
        (forward.db_version().unwrap(), again.noted),
        (version, None),
        "nor takes a db_version"
    );
    // A batch where only a later row changes: one version, and only that row's changes are
    // stored under it (a version left as a placeholder would be sent again and again).
    a.run("UPDATE todos SET title = 'new' WHERE id = 't19'", ())
        .unwrap();
    let mixed = forward
        .apply_changes_from(a.site_id(), &a.changes_since(0, None).unwrap().changes)
        .unwrap();
    assert_eq!((mixed.rows, mixed.applied), (1, 1));
    assert_eq!(forward.db_version().unwrap(), version + 1);
    let stored = forward.changes_since(version, None).unwrap().changes;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0].value, Some(Value::from("new")));
    assert!(
        forward
            .changes_since(version + 1, None)
            .unwrap()
            .changes
            .is_empty()
    );
    assert_eq!(dump(&forward), dump(&a));
}

#[test]
fn bad_changes_are_refused_with_a_reason_and_nothing_changes() {
    let a = todo_db();
    let b = Database::open_in_memory().unwrap();
    a.run("INSERT INTO todos(id) VALUES ('t')", ()).unwrap();
    b.put("keep", &json!({"k": 1})).unwrap();
    let before = dump(&b);
    let good = ChangeRecord {
        collection: NODES.into(),
        key: vec![Value::Text("x".into())].into(),
        field: "data.a".into(),
        value: Some(Value::Text("1".into())),
        version: Version::new(pluresdb_core::Hlc::new(pluresdb_crdt_now(), 0), a.site_id()),
        cl: 1,
    };
    let cases = [
        (
            ChangeRecord {
                value: Some(Value::Text("{not json".into())),
                ..good.clone()
            },
            "not JSON",
        ),
        (
            ChangeRecord {
                field: "bogus".into(),
                ..good.clone()
            },
            "node field \"bogus\"",
        ),
        (
            ChangeRecord {
                key: vec![Value::Integer(1)].into(),
                ..good.clone()
            },
            "the key must be 1 text value",
        ),
        (
            ChangeRecord {
                cl: 2,
                ..good.clone()
            },
            "odd causal length",
        ),
        (
            ChangeRecord {
                cl: i64::MAX as u64,
                ..good.clone()
            },
            "causal length 9223372036854775807 is over the limit",
        ),
        (
            ChangeRecord {
                cl: u64::MAX,
                ..good.clone()
            },
            "over the limit of 2^62",
        ),
        (
            ChangeRecord {
                field: "vector".into(),
                value: Some(Value::Blob(Vec::new())),
                ..good.clone()
            },
            "at least one component",
        ),
    ];
    for (bad, why) in cases {
        let err = b.apply_changes(&[good.clone(), bad]).unwrap_err();
        assert!(err.message().contains(why), "expected {why:?} in {err}");
        assert!(err.message().starts_with("change 1 "), "{err}");
        assert_eq!(dump(&b), before, "nothing applied");
    }
    // The change is named as people read it: collection, key as JSON, field.
    let bad_key = ChangeRecord {
        key: vec![Value::Integer(1)].into(),
        ..good.clone()
    };
    let err = b.apply_changes(&[bad_key]).unwrap_err();
    assert!(
        err.message()
            .starts_with("change 0 (_pluresdb_nodes row [1], field \"data.a\")"),
        "{err}"
    );
    b.apply_changes(&[good]).unwrap();
    assert_eq!(b.get_node("x").unwrap().unwrap().data["a"], 1);
}

fn pluresdb_crdt_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Merges every change `from` has into `into` (no sync recorded); returns the report.
fn merge_all(from: &Database, into: &Database) -> pluresdb_core::ApplyReport {
    into.apply_changes(&from.changes_since(0, None).unwrap().changes)
        .unwrap()
}

/// Applies to `b` what `a` has that `b` lacks, and records the sync; returns the report.
fn push_report(a: &Database, b: &Database) -> pluresdb_core::ApplyReport {
    let since = b.peer_cursor(a.site_id()).unwrap();
    let set = a.changes_since(since, Some(b.site_id())).unwrap();
    let report = b.apply_changes_from(a.site_id(), &set.changes).unwrap();
    let complete = SyncProgress {
        received: set.changes.len() as u64,
        cursor: Some(set.db_version),
        confirm_through: report.noted,
        ..Default::default()
    };
    b.record_sync(a.site_id(), &complete).unwrap();
    let acked = SyncProgress {
        acked: Some(set.db_version),
        ..Default::default()
    };
    a.record_sync(b.site_id(), &acked).unwrap();
    report
}

#[test]
fn a_peer_on_an_older_schema_gets_a_new_columns_values_once_it_has_the_column() {
    // A and C have the column `prio`; B does not yet.
    let (a, b, c) = (todo_db(), todo_db(), todo_db());
    for db in [&a, &c] {
        db.exec("ALTER TABLE todos ADD COLUMN prio INTEGER")
            .unwrap();
    }
    a.run(
        "INSERT INTO todos(id, title, prio) VALUES ('t1', 'x', 5)",
        (),
    )
    .unwrap();
    let report = push_report(&a, &b);
    assert_eq!(report.skipped, 1, "{report:?}");
    assert_eq!(
        b.value("SELECT title FROM todos WHERE id = 't1'", ())
            .unwrap(),
        Value::Text("x".into())
    );
    assert!(b.peer_cursor(a.site_id()).unwrap() > 0);
    // Once B has the column it asks A for everything again, and it never claimed A's value
    // of the column, so it does not send NULL under A's version to C.
    b.exec("ALTER TABLE todos ADD COLUMN prio INTEGER").unwrap();
    assert_eq!(b.peer_cursor(a.site_id()).unwrap(), 0);
    push(&b, &c);
    assert!(
        b.changes_since(0, None)
            .unwrap()
            .changes
            .iter()
            .all(|ch| &*ch.field != "prio"),
        "B sends a value of prio it never stored"
    );
    for _ in 0..2 {
        sync(&a, &b);
        sync(&b, &c);
        sync(&a, &c);
    }
    assert_eq!(
        b.value("SELECT prio FROM todos WHERE id = 't1'", ())
            .unwrap(),
        Value::Integer(5)
    );
    assert_eq!(dump(&a), dump(&b));
    assert_eq!(dump(&a), dump(&c));
}

#[test]
fn columns_beyond_the_remembered_misses_are_still_asked_for_once_they_are_here() {
    // A has 300 columns B lacks: more than the 256 misses B remembers one by one.
    let (a, b) = (todo_db(), todo_db());
    let columns: Vec<String> = (0..300).map(|i| format!("c{i:03}")).collect();
    for c in &columns {
        a.exec(&format!("ALTER TABLE todos ADD COLUMN {c} INTEGER"))
            .unwrap();
    }
    let sets: Vec<String> = columns.iter().map(|c| format!("{c} = 7")).collect();
    a.exec(&format!(
        "INSERT INTO todos(id) VALUES ('t1'); UPDATE todos SET {}",
        sets.join(", ")
    ))
    .unwrap();
    let report = push_report(&a, &b);
    assert_eq!(report.skipped, 300, "{report:?}");
    // B gets the last column, one that did not fit in the list: it asks A for everything.
    b.exec("ALTER TABLE todos ADD COLUMN c299 INTEGER").unwrap();
    assert_eq!(b.peer_cursor(a.site_id()).unwrap(), 0);
    push(&a, &b);
    assert_eq!(
        b.value("SELECT c299 FROM todos WHERE id = 't1'", ())
            .unwrap(),
        Value::Integer(7)
    );
}

#[test]
fn a_table_keyed_by_other_columns_on_the_peer_is_refused_saying_so() {
    // Keyed by `id` on A and by `code` on B (`CODE` on A, the same column to SQLite), each
    // device's rows landed under the other's key (A's `i1` became B's code, with id NULL) and
    // the merge said only that a change was left out.
    let a = with_synced(
        "CREATE TABLE t(id TEXT PRIMARY KEY NOT NULL, CODE TEXT, x TEXT)",
        &["t"],
    );
    let b = with_synced(
        "CREATE TABLE t(id TEXT, code TEXT PRIMARY KEY NOT NULL, x TEXT)",
        &["t"],
    );
    a.exec("INSERT INTO t VALUES ('i1', 'c1', 'x1')").unwrap();
    b.exec("INSERT INTO t VALUES ('i2', 'c2', 'x2')").unwrap();
    let before = dump(&b);
    let changes = a.changes_since(0, None).unwrap().changes;
    let message = refused(&b.apply_changes(&changes).unwrap(), "t");
    assert!(
        message.contains("column CODE is part of the primary key of table \"t\" here")
            && message.contains("give the table the same primary key on every device"),
        "{message}"
    );
    assert_eq!(dump(&b), before);
    // Keyed by more columns here: the error says so too.
    let c = with_synced(
        "CREATE TABLE t(id TEXT NOT NULL, code TEXT NOT NULL, x TEXT, PRIMARY KEY (id, code))",
        &["t"],
    );
    let message = refused(&c.apply_changes(&changes).unwrap(), "t");
    assert!(
        message.contains(
            "the peer keys table \"t\" by 1 column, and this database by 2 columns (id, code)"
        ),
        "{message}"
    );
}

#[test]
fn a_column_dropped_and_added_again_gets_its_values_back_from_the_peers() {
    // Added again, the column had no version here and the peer never sent its values again
    // (it had sent them): this device kept NULLs, the other the values, for good.
    let (a, b) = pair(
        "CREATE TABLE t(id TEXT PRIMARY KEY NOT NULL, v TEXT, n INTEGER)",
        &["t"],
    );
    // Row 1 is A's, row 2 B's (merged here with a version per column, which stayed).
    a.exec("INSERT INTO t VALUES ('1', 'a', 1)").unwrap();
    b.exec("INSERT INTO t VALUES ('2', 'b', 2)").unwrap();
    sync(&a, &b);
    a.exec("ALTER TABLE t DROP COLUMN n").unwrap();
    sync(&a, &b);
    a.exec("ALTER TABLE t ADD COLUMN n INTEGER").unwrap();
    // A asks B for the column again, its own values too (as a sync session does).
    let asked = a.refetching().unwrap()[&b.site_id()].clone();
    assert_eq!(
        asked.wanted,
        [Refetch {
            table: "t".into(),
            column: Some("n".into())
        }]
    );
    a.apply_changes_from(b.site_id(), &changes_of(&b, &asked.wanted))
        .unwrap();
    sync(&a, &b);
    assert_eq!(dump(&a), dump(&b));
    let n = a
        .all_as::<(i64,)>("SELECT n FROM t ORDER BY id", ())
        .unwrap();
    assert_eq!(n, [(1,), (2,)]);
}

#[test]
fn a_column_added_later_does_not_claim_rows_written_before_it_was_here() {
    // B has `prio`, A not yet. B writes prio; A, still without it, rewrites the row (its
    // base version is newer than B's write of prio, but it wrote no prio).
    for (rewrite, first_sync) in [
        (
            "INSERT OR REPLACE INTO todos(id, title) VALUES ('t1', 'y')",
            true,
        ),
        ("UPDATE todos SET title = 'y' WHERE id = 't1'", true),
        (
            "INSERT OR REPLACE INTO todos(id, title) VALUES ('t1', 'y')",
            false,
        ),
    ] {
        let (a, b) = (todo_db(), todo_db());
        b.exec("ALTER TABLE todos ADD COLUMN prio TEXT").unwrap();
        a.run("INSERT INTO todos(id, title) VALUES ('t1', 'x')", ())
            .unwrap();
        sync(&a, &b);
        b.run("UPDATE todos SET prio = 'from b' WHERE id = 't1'", ())
            .unwrap();
        if first_sync {
            sync(&a, &b);
        }
        a.run(rewrite, ()).unwrap();
        sync(&a, &b);
        // A adds the column with a DEFAULT: the rows it had get it, at no version.
        a.exec("ALTER TABLE todos ADD COLUMN prio TEXT DEFAULT 'default'")
            .unwrap();
        for _ in 0..2 {
            sync(&a, &b);
        }
        assert_eq!(
            dump(&a),
            dump(&b),
            "{rewrite} (synced before: {first_sync})"
        );
        // Both keep the row; which prio wins depends on whether the rewrite made a new life.
        let prio = a
            .value("SELECT prio FROM todos WHERE id = 't1'", ())
            .unwrap();
        assert_ne!(prio, Value::Null, "{rewrite}");
        // Written after the column arrived, A's rows do cover it.
        a.run(
            "UPDATE todos SET title = 'z', prio = 'from a' WHERE id = 't1'",
            (),
        )
        .unwrap();
        a.run("INSERT INTO todos(id, title) VALUES ('t2', 'w')", ())
            .unwrap();
        sync(&a, &b);
        assert_eq!(
            dump(&a),
            dump(&b),
            "{rewrite}: writes after the column arrived"
        );
        assert_eq!(
            b.value("SELECT prio FROM todos WHERE id = 't2'", ())
                .unwrap(),
            Value::Text("default".into())
        );
    }
}

#[test]
fn a_column_time_another_process_records_first_is_kept() {
    // Two processes see a new column at once and record when it appeared, each at a time of
    // its own clock. The later must not overwrite the earlier: rows the first one wrote with
    // the column between the two times would lose their values of it at every peer.
    let dir = tempfile::tempdir().unwrap();
    let create = "CREATE TABLE todos(id TEXT PRIMARY KEY NOT NULL, title TEXT)";
    let (path, first) = synced_file(&dir, create, "todos");
    drop(first);
    // The other process: adds the column, then records it at its time 1000, holding the
    // write lock while this one opens.
    let other = rusqlite::Connection::open(&path).unwrap();
    other
        .execute_batch("ALTER TABLE todos ADD COLUMN prio TEXT")
        .unwrap();
    let key: String = other
        .query_row(
            "SELECT 'columns:' || id FROM _pluresdb_collections WHERE name = 'todos'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let (locked, is_locked) = std::sync::mpsc::channel();
    let committer = std::thread::spawn({
        let key = key.clone();
        move || {
            other.execute_batch("BEGIN IMMEDIATE").unwrap();
            other
                .execute(
                    "UPDATE _pluresdb_meta SET value = ?2 WHERE key = ?1",
                    (&key, r#"{"prio":1000,"title":0}"#),
                )
                .unwrap();
            locked.send(()).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(300));
            other.execute_batch("COMMIT").unwrap();
        }
    });
    is_locked.recv().unwrap();
    let db = OpenOptions::new()
        .busy_timeout(std::time::Duration::from_secs(10))
        .open(&path)
        .unwrap();
    committer.join().unwrap();
    let recorded: String = db
        .value("SELECT value FROM _pluresdb_meta WHERE key = ?1", (&key,))
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        serde_json::from_str::<Json>(&recorded).unwrap(),
        json!({"prio": 1000, "title": 0})
    );
}

#[test]
fn changes_to_a_table_not_synced_here_are_skipped_and_arrive_once_it_is() {
    let a = todo_db();
    let b = Database::open_in_memory().unwrap();
    a.run("INSERT INTO todos(id, title) VALUES ('t', 'first')", ())
        .unwrap();
    a.put("n", &json!({"v": 1})).unwrap();
    // B does not sync `todos`: the rest of A's changes still arrive.
    let report = push_report(&a, &b);
    assert!(report.skipped > 0, "{report:?}");
    assert_eq!(b.get_node("n").unwrap().unwrap().data["v"], 1);
    // Once B syncs the table it asks for everything again and gets the rows it left out.
    b.exec("CREATE TABLE todos(id TEXT PRIMARY KEY NOT NULL, title TEXT NOT NULL DEFAULT '', done INTEGER NOT NULL DEFAULT 0)")
        .unwrap();
    b.sync_table("todos").unwrap();
    assert_eq!(b.peer_cursor(a.site_id()).unwrap(), 0);
    assert_eq!(push_report(&a, &b).skipped, 0);
    assert_eq!(dump(&a), dump(&b));
    // A table dropped here (no longer synced first: see
    // `dropping_a_synced_table_is_refused_saying_what_to_do_instead`): its changes are
    // skipped, others arrive; made again and synced, it catches up.
    b.exec("SELECT pluresdb_unsync_table('todos'); DROP TABLE todos")
        .unwrap();
    a.run("INSERT INTO todos(id, title) VALUES ('u', 'second')", ())
        .unwrap();
    a.put("m", &json!({"v": 2})).unwrap();
    let report = push_report(&a, &b);
    assert!(report.skipped > 0, "{report:?}");
    assert!(b.get_node("m").unwrap().is_some());
    b.exec("CREATE TABLE todos(id TEXT PRIMARY KEY NOT NULL, title TEXT NOT NULL DEFAULT '', done INTEGER NOT NULL DEFAULT 0)")
        .unwrap();
    b.sync_table("todos").unwrap();
    push(&a, &b);
    assert_eq!(dump(&a), dump(&b));
}

#[test]
fn a_sync_under_way_when_a_left_out_table_arrives_does_not_undo_asking_again() {
    // A table arriving here sets the cursors back to 0 so the next sync asks for everything.
    // A sync (or a watching one) that began before and records its cursor after must not move
    // it up again: the rows left out would then never be asked for.
    let a = todo_db();
    let b = Database::open_in_memory().unwrap();
    a.run("INSERT INTO todos(id, title) VALUES ('t', 'first')", ())
        .unwrap();
    assert!(push_report(&a, &b).skipped > 0);
    // A session begins: its hello asks for A's changes after this cursor.
    let resets_seen = b.cursor_resets().unwrap();
    let requested_from = b.peer_cursor(a.site_id()).unwrap();
    assert!(requested_from > 0);
    b.exec("CREATE TABLE todos(id TEXT PRIMARY KEY NOT NULL, title TEXT NOT NULL DEFAULT '', done INTEGER NOT NULL DEFAULT 0)")
        .unwrap();
    b.sync_table("todos").unwrap();
    assert_eq!(b.peer_cursor(a.site_id()).unwrap(), 0);
    // The session merges a new change of A's and records A's version.
    a.put("n", &json!({"v": 1})).unwrap();
    let set = a.changes_since(requested_from, Some(b.site_id())).unwrap();
    b.apply_changes(&set.changes).unwrap();
    let progress = SyncProgress {
        cursor: Some(set.db_version),
        resets_seen: Some(resets_seen),
        ..Default::default()
    };
    b.record_sync(a.site_id(), &progress).unwrap();
    assert_eq!(b.peer_cursor(a.site_id()).unwrap(), 0);
    // So the next sync brings the row left out.
    push(&a, &b);
    assert_eq!(dump(&a), dump(&b));
    // Without a reset, a session's cursor moves up as before.
    a.put("m", &json!({"v": 2})).unwrap();
    let resets_seen = b.cursor_resets().unwrap();
    let from = b.peer_cursor(a.site_id()).unwrap();
    let set = a.changes_since(from, Some(b.site_id())).unwrap();
    b.apply_changes(&set.changes).unwrap();
    let progress = SyncProgress {
        cursor: Some(set.db_version),
        resets_seen: Some(resets_seen),
        ..Default::default()
    };
    b.record_sync(a.site_id(), &progress).unwrap();
    assert_eq!(b.peer_cursor(a.site_id()).unwrap(), set.db_version);
}

/// What `a` sends a peer that asks for all the changes of `wanted` again.
fn changes_of(a: &Database, wanted: &[Refetch]) -> Vec<ChangeRecord> {
    let mut changes = Vec::new();
    a.for_each_change_of(wanted, 100, |batch| {
        changes.extend_from_slice(batch);
        Ok(())
    })
    .unwrap();
    changes
}

#[test]
fn a_left_out_table_that_arrives_is_asked_for_alone_with_the_cursor_from_before() {
    // A sync session does not ask for everything again when a table arrives: it asks for the
    // peer's changes after its cursor from before, plus all those of the table.
    let a = todo_db();
    a.exec(NOTES).unwrap();
    a.sync_table("notes").unwrap();
    let b = Database::open_in_memory().unwrap();
    a.run("INSERT INTO todos(id, title) VALUES ('t', 'first')", ())
        .unwrap();
    a.run("INSERT INTO notes(id, body) VALUES ('n', 'body')", ())
        .unwrap();
    a.put("node", &json!({"v": 1})).unwrap();
    assert!(push_report(&a, &b).skipped > 0);
    let before = b.peer_cursor(a.site_id()).unwrap();
    assert!(before > 0);
    assert!(b.refetching().unwrap().is_empty());
    let wanted = |table: &str| Refetch {
        table: table.into(),
        column: None,
    };
    b.exec("CREATE TABLE todos(id TEXT PRIMARY KEY NOT NULL, title TEXT NOT NULL DEFAULT '', done INTEGER NOT NULL DEFAULT 0)")
        .unwrap();
    b.sync_table("todos").unwrap();
    // What a change file, an older peer or the core API's caller sees: everything.
    assert_eq!(b.peer_cursor(a.site_id()).unwrap(), 0);
    assert_eq!(b.version_vector().unwrap().get(&a.site_id()), 0);
    let asked = Refetching {
        cursor: before,
        wanted: vec![wanted("todos")],
    };
    assert_eq!(b.refetching().unwrap()[&a.site_id()], asked);
    // A second arrival before a sync keeps the cursor from before and asks for both.
    b.exec(NOTES).unwrap();
    b.sync_table("notes").unwrap();
    let asked = Refetching {
        cursor: before,
        wanted: vec![wanted("notes"), wanted("todos")],
    };
    assert_eq!(b.refetching().unwrap()[&a.site_id()], asked);
    assert_eq!(b.sync_status().unwrap()[0].asks_again, asked.wanted);
    // What A sends for that: nothing after the cursor, and the two tables' changes (not
    // the node's, which B has).
    let resets_seen = b.cursor_resets().unwrap();
    a.put("later", &json!({"v": 2})).unwrap();
    let set = a.changes_since(asked.cursor, Some(b.site_id())).unwrap();
    let again = changes_of(&a, &asked.wanted);
    let collections: std::collections::BTreeSet<&str> =
        again.iter().map(|c| &*c.collection).collect();
    assert_eq!(collections, ["notes", "todos"].into());
    // (Each row's creation and its fields: todos' title and done, notes' body.)
    assert_eq!(again.len(), 3 + 2, "{again:?}");
    b.apply_changes_from(a.site_id(), &set.changes).unwrap();
    b.apply_changes_from(a.site_id(), &again).unwrap();
    assert_eq!(dump(&a), dump(&b));
    assert_eq!(
        b.value("SELECT body FROM notes", ()).unwrap(),
        Value::Text("body".into())
    );
    // A sync that began before the arrival records nothing, and B still asks.
    let stale = SyncProgress {
        cursor: Some(set.db_version),
        resets_seen: Some(resets_seen - 1),
        ..Default::default()
    };
    b.record_sync(a.site_id(), &stale).unwrap();
    assert_eq!(b.refetching().unwrap()[&a.site_id()], asked);
    // Recording the cursor of the set that asked ends it.
    let done = SyncProgress {
        cursor: Some(set.db_version),
        resets_seen: Some(resets_seen),
        ..Default::default()
    };
    b.record_sync(a.site_id(), &done).unwrap();
    assert!(b.refetching().unwrap().is_empty());
    assert_eq!(b.peer_cursor(a.site_id()).unwrap(), set.db_version);
}

#[test]
fn what_a_peer_is_asked_for_again_goes_when_cursors_are_set_back_without_it() {
    let a = todo_db();
    let b = Database::open_in_memory().unwrap();
    a.run("INSERT INTO todos(id) VALUES ('t')", ()).unwrap();
    assert!(push_report(&a, &b).skipped > 0);
    b.exec("CREATE TABLE todos(id TEXT PRIMARY KEY NOT NULL, title TEXT NOT NULL DEFAULT '', done INTEGER NOT NULL DEFAULT 0)")
        .unwrap();
    b.sync_table("todos").unwrap();
    assert!(b.refetching().unwrap()[&a.site_id()].cursor > 0);
    // The cursors set back without it, as a build that does not record it does (an older
    // one that opened the file): its cursor from before left out more than it names.
    b.exec(
        "UPDATE _pluresdb_peers SET cursor = 0;
         UPDATE _pluresdb_meta SET value = value + 1 WHERE key = 'cursor_resets'",
    )
    .unwrap();
    assert!(b.refetching().unwrap().is_empty());
    assert!(b.sync_status().unwrap()[0].asks_again.is_empty());
    push(&a, &b);
    assert_eq!(dump(&a), dump(&b));
}

#[test]
fn tables_and_columns_named_in_another_case_are_the_same_as_sqlite_takes_them() {
    // Two apps that spell a table differently: SQLite takes `TODOS` for `todos`, so does sync.
    let a = todo_db();
    a.exec("ALTER TABLE todos ADD COLUMN prio INTEGER").unwrap();
    a.run(
        "INSERT INTO todos(id, title, prio) VALUES ('t', 'first', 1), ('u', 'second', 2)",
        (),
    )
    .unwrap();
    let b = Database::open_in_memory().unwrap();
    b.exec("CREATE TABLE TODOS(ID TEXT PRIMARY KEY NOT NULL, TITLE TEXT NOT NULL DEFAULT '', DONE INTEGER NOT NULL DEFAULT 0)")
        .unwrap();
    b.sync_table("todos").unwrap();
    // Without the column yet: its values are left out, and asked for once it is here.
    assert_eq!(push_report(&a, &b).skipped, 2);
    b.exec("ALTER TABLE TODOS ADD COLUMN PRIO INTEGER").unwrap();
    assert_eq!(b.refetching().unwrap()[&a.site_id()].wanted.len(), 1);
    let rows = |db: &Database| {
        db.all_as::<(String, String, i64, Option<i64>)>(
            "SELECT id, title, done, prio FROM todos ORDER BY id",
            (),
        )
        .unwrap()
    };
    push(&a, &b);
    assert_eq!(push_report(&a, &b).skipped, 0);
    assert_eq!(rows(&a), rows(&b));
    // Writes both ways, and a conflict on the column decided the same on both sides.
    b.run("UPDATE TODOS SET PRIO = 5 WHERE ID = 't'", ())
        .unwrap();
    sync(&a, &b);
    assert_eq!(rows(&a)[0].3, Some(5));
    a.run("UPDATE todos SET prio = 6 WHERE id = 't'", ())
        .unwrap();
    // (Later by the clock too: two databases' writes in one millisecond tie by site id.)
    std::thread::sleep(std::time::Duration::from_millis(5));
    b.run("UPDATE TODOS SET PRIO = 7 WHERE ID = 't'", ())
        .unwrap();
    sync(&a, &b);
    sync(&a, &b);
    assert_eq!(rows(&a), rows(&b));
    assert_eq!(rows(&a)[0].3, Some(7), "the later write wins");
    // A table that arrives in another case is asked for too.
    a.exec(NOTES).unwrap();
    a.sync_table("notes").unwrap();
    a.run("INSERT INTO notes VALUES ('n', 'body')", ()).unwrap();
    assert!(push_report(&a, &b).skipped > 0);
    b.exec("CREATE TABLE NOTES(ID TEXT PRIMARY KEY NOT NULL, BODY TEXT)")
        .unwrap();
    b.sync_table("NOTES").unwrap();
    push(&a, &b);
    assert_eq!(
        b.value("SELECT BODY FROM NOTES", ()).unwrap(),
        Value::Text("body".into())
    );
    assert!(b.unsync_table("Notes").unwrap());
}

#[test]
fn a_column_asked_for_again_comes_alone() {
    let a = todo_db();
    a.run(
        "INSERT INTO todos(id, title) VALUES ('t', 'first'), ('u', 'second')",
        (),
    )
    .unwrap();
    a.run("UPDATE todos SET done = 1 WHERE id = 'u'", ())
        .unwrap();
    let title = Refetch {
        table: "todos".into(),
        column: Some("title".into()),
    };
    let again = changes_of(&a, &[title]);
    let got: Vec<(&str, Option<&Value>)> = again
        .iter()
        .map(|c| (&*c.field, c.value.as_ref()))
        .collect();
    let (first, second) = (Value::Text("first".into()), Value::Text("second".into()));
    assert_eq!(got, [("title", Some(&first)), ("title", Some(&second))]);
    // Named in another case (by a peer whose table is spelled so), the same.
    let spelled = Refetch {
        table: "TODOS".into(),
        column: Some("Title".into()),
    };
    let same = changes_of(&a, &[spelled]);
    assert_eq!(same, again);
    // Names that are not synced tables here give nothing.
    let unknown = Refetch {
        table: "nope".into(),
        column: None,
    };
    a.for_each_change_of(&[unknown], 100, |batch| panic!("{batch:?}"))
        .unwrap();
}

#[test]
fn a_vector_the_node_index_here_cannot_hold_refuses_that_node_naming_it() {
    let (a, b) = (
        Database::open_in_memory().unwrap(),
        Database::open_in_memory().unwrap(),
    );
    b.create_vector_index("nodes", "vector", &Default::default())
        .unwrap();
    b.put("m", &json!({})).unwrap();
    b.set_vector("m", Some(&[1.0, 0.0, 0.0])).unwrap();
    a.put("n4", &json!({})).unwrap();
    a.set_vector("n4", Some(&[1.0, 0.0, 0.0, 0.0])).unwrap();
    a.put("n5", &json!({})).unwrap();
    a.set_vector("n5", Some(&[1.0, 0.0, 0.0, 0.0, 0.0]))
        .unwrap();
    // Other nodes of the peer merge (it failed the whole batch: nothing merged).
    a.put("plain", &json!({"x": 1})).unwrap();
    let set = a.changes_since(0, None).unwrap();
    let why = refused(&b.apply_changes(&set.changes).unwrap(), NODES);
    for (node, dims) in [("n4", 4), ("n5", 5)] {
        assert!(
            why.contains(&format!("merging node \"{node}\" from a peer")),
            "{why}"
        );
        assert!(
            why.contains(&format!("{dims} dimensions but the index has 3")),
            "{why}"
        );
        assert!(b.get_node(node).unwrap().is_none());
    }
    assert!(b.get_node("plain").unwrap().is_some());
}

#[test]
fn two_handles_on_one_file_merge_changes_of_a_site_the_other_added() {
    // Two handles on one file stand for two processes (a server and a client, say).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let a1 = Database::open(&path).unwrap();
    let a2 = Database::open(&path).unwrap();
    let (b, c) = (
        Database::open_in_memory().unwrap(),
        Database::open_in_memory().unwrap(),
    );
    b.put("from-b", &json!({})).unwrap();
    c.put("from-c", &json!({})).unwrap();
    push(&b, &a1); // a1 reads the site list: this file's and b's
    push(&c, &a2); // the other handle adds c's
    // a1 merges into a row whose clock (written by the other handle) names c: it must read
    // c from the table (it reported the clock as naming a site the table lacks).
    b.put("from-c", &json!({"b": 1})).unwrap();
    push(&b, &a1);
    assert_eq!(a1.get_node("from-c").unwrap().unwrap().data["b"], 1);
    c.put("from-c-2", &json!({"v": 2})).unwrap();
    // a1 meets c: it must find c in the table rather than add it again (UNIQUE failed).
    let set = c.changes_since(0, None).unwrap();
    a1.apply_changes(&set.changes).unwrap();
    assert_eq!(a1.get_node("from-c-2").unwrap().unwrap().data["v"], 2);
    // And it reads clocks naming c, written by the other handle.
    a2.put("from-c", &json!({"w": 1})).unwrap();
    assert_eq!(
        a1.changes_since(0, None).unwrap().changes.len(),
        a2.changes_since(0, None).unwrap().changes.len()
    );
}

#[test]
fn sync_table_refuses_shapes_it_cannot_handle() {
    let db = Database::open_in_memory().unwrap();
    db.exec(
        "CREATE TABLE nokey(a, b);
         CREATE TABLE nullable(id TEXT PRIMARY KEY, v);
         CREATE TABLE auto(id INTEGER PRIMARY KEY AUTOINCREMENT, v);
         CREATE TABLE uniq(id TEXT PRIMARY KEY NOT NULL, email TEXT UNIQUE);
         CREATE TABLE nocase(id TEXT PRIMARY KEY NOT NULL COLLATE NOCASE);
         CREATE VIEW v AS SELECT 1;
         CREATE VIRTUAL TABLE fts USING fts5(x);
         CREATE TABLE ok(id INTEGER PRIMARY KEY, v);",
    )
    .unwrap();
    let why = |t: &str| db.sync_table(t).unwrap_err().to_string();
    assert!(
        why("nokey").contains("has no primary key"),
        "{}",
        why("nokey")
    );
    assert!(
        why("nullable").contains("may hold NULL"),
        "{}",
        why("nullable")
    );
    assert!(why("auto").contains("AUTOINCREMENT"), "{}", why("auto"));
    assert!(
        why("uniq").contains("the UNIQUE constraint on (email) could be violated")
            && why("uniq").contains("rebuild the table without it"),
        "{}",
        why("uniq")
    );
    assert!(
        why("nocase").contains("collation NOCASE"),
        "{}",
        why("nocase")
    );
    assert!(why("v").contains("view"), "{}", why("v"));
    assert!(why("fts").contains("virtual table"), "{}", why("fts"));
    assert!(
        why("fts_data").contains("shadow table"),
        "{}",
        why("fts_data")
    );
    assert_eq!(
        db.sync_table("missing").unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert!(db.synced_tables().unwrap().is_empty());
    // INTEGER PRIMARY KEY is never NULL: accepted. The SQL form works too.
    assert_eq!(
        db.value("SELECT pluresdb_sync_table('ok')", ()).unwrap(),
        Value::Integer(1)
    );
    assert_eq!(db.synced_tables().unwrap(), ["ok"]);
    let err = db
        .run("SELECT pluresdb_sync_table('nokey')", ())
        .unwrap_err();
    assert!(err.to_string().contains("has no primary key"), "{err}");
}

#[test]
fn a_unique_index_made_on_a_synced_table_is_refused() {
    // `pluresdb_sync_table` refuses a table with one, but one made afterwards was accepted:
    // then the same email added on two devices failed every later sync, holding back every
    // other change.
    let db = Database::open_in_memory().unwrap();
    db.exec(
        "CREATE TABLE t(id TEXT PRIMARY KEY NOT NULL, email TEXT); SELECT pluresdb_sync_table('t')",
    )
    .unwrap();
    let err = db
        .exec("CREATE UNIQUE INDEX t_email ON t(email)")
        .unwrap_err();
    assert!(
        err.message().contains("unique index t_email on (email)"),
        "{err}"
    );
    let err = db
        .transaction(|tx| {
            tx.run("INSERT INTO t VALUES ('1', 'a@example.com')", ())?;
            tx.exec("CREATE UNIQUE INDEX t_email ON t(lower(email))")
        })
        .unwrap_err();
    assert!(err.message().contains("<expression>"), "{err}");
    assert_eq!(
        db.value("SELECT count(*) FROM t", ()).unwrap(),
        Value::Integer(0)
    );
    let indexes = "SELECT count(*) FROM sqlite_schema WHERE type = 'index' AND tbl_name = 't'";
    // Only the key's index is there; a plain index is fine, and so is a unique one elsewhere.
    assert_eq!(db.value(indexes, ()).unwrap(), Value::Integer(1));
    db.exec(
        "CREATE INDEX t_by_email ON t(email);
         CREATE TABLE other(x TEXT); CREATE UNIQUE INDEX other_x ON other(x)",
    )
    .unwrap();
    assert_eq!(db.value(indexes, ()).unwrap(), Value::Integer(2));
    db.run("INSERT INTO t VALUES ('2', 'b@example.com')", ())
        .unwrap();
    // A statement that failed once (duplicates) and is run again from the statement cache
    // once they are gone is refused too.
    db.run("INSERT INTO t VALUES ('3', 'b@example.com')", ())
        .unwrap();
    let unique = "CREATE UNIQUE INDEX t_email ON t(email)";
    let err = db.run(unique, ()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Constraint, "{err}");
    db.run("DELETE FROM t WHERE id = '3'", ()).unwrap();
    let err = db.run(unique, ()).unwrap_err();
    assert!(err.message().contains("could be broken"), "{err}");
    assert_eq!(db.value(indexes, ()).unwrap(), Value::Integer(2));
}

#[test]
fn sync_table_reads_the_shape_from_sqlite_not_from_words_in_the_create_statement() {
    let db = Database::open_in_memory().unwrap();
    // The words in a default value, a quoted name or a comment are not the clauses.
    db.exec(
        "CREATE TABLE notes(id INTEGER PRIMARY KEY, how TEXT DEFAULT 'autoincrement, without rowid');
         CREATE TABLE named(id INTEGER PRIMARY KEY /* not AUTOINCREMENT */, \"autoincrement\" TEXT);
         CREATE TABLE wr(id TEXT PRIMARY KEY NOT NULL, v) WITHOUT
             ROWID;
         CREATE TABLE alias(id INTEGER PRIMARY KEY, v /* not WITHOUT ROWID */);",
    )
    .unwrap();
    for t in ["notes", "named", "wr", "alias"] {
        db.sync_table(t).unwrap();
    }
    assert_eq!(
        db.synced_tables().unwrap(),
        ["notes", "named", "wr", "alias"]
    );
}

#[test]
fn existing_rows_and_added_columns_sync() {
    let a = Database::open_in_memory().unwrap();
    a.exec("CREATE TABLE notes(id TEXT PRIMARY KEY NOT NULL, body TEXT); INSERT INTO notes VALUES ('old', 'before sync');").unwrap();
    a.sync_table("notes").unwrap();
    let b = Database::open_in_memory().unwrap();
    b.exec("CREATE TABLE notes(id TEXT PRIMARY KEY NOT NULL, body TEXT)")
        .unwrap();
    b.sync_table("notes").unwrap();
    sync(&a, &b);
    assert_eq!(
        b.value("SELECT body FROM notes WHERE id = 'old'", ())
            .unwrap(),
        Value::Text("before sync".into())
    );
    // a adds a column; b has not yet: b keeps the columns it knows.
    a.exec("ALTER TABLE notes ADD COLUMN tag TEXT").unwrap();
    a.run("INSERT INTO notes VALUES ('new', 'after', 'red')", ())
        .unwrap();
    a.run("UPDATE notes SET tag = 'blue' WHERE id = 'old'", ())
        .unwrap();
    sync(&a, &b);
    assert_eq!(
        b.value("SELECT body FROM notes WHERE id = 'new'", ())
            .unwrap(),
        Value::Text("after".into())
    );
    // Once b has the column too, later changes to it arrive.
    b.exec("ALTER TABLE notes ADD COLUMN tag TEXT").unwrap();
    a.run("UPDATE notes SET tag = 'green' WHERE id = 'new'", ())
        .unwrap();
    b.run("UPDATE notes SET tag = 'yellow' WHERE id = 'old'", ())
        .unwrap();
    sync(&a, &b);
    assert_eq!(
        b.value("SELECT tag FROM notes WHERE id = 'new'", ())
            .unwrap(),
        Value::Text("green".into())
    );
    assert_eq!(
        a.value("SELECT tag FROM notes WHERE id = 'old'", ())
            .unwrap(),
        Value::Text("yellow".into())
    );
}

#[test]
fn every_kind_of_sql_write_is_captured() {
    let a = Database::open_in_memory().unwrap();
    let b = Database::open_in_memory().unwrap();
    let shape = "CREATE TABLE t(id TEXT PRIMARY KEY NOT NULL, n INTEGER, s TEXT);
                 CREATE TABLE src(id TEXT, n INTEGER);";
    b.exec(shape).unwrap();
    b.sync_table("t").unwrap();
    a.exec(shape).unwrap();
    // A statement prepared before the table is synced, run after it.
    let clear = a.prepare("DELETE FROM t").unwrap();
    // Synced by SQL in the middle of a script: the script's next statements are captured.
    a.exec(
        "INSERT INTO src VALUES ('s1', 1), ('s2', 2), ('s3', 3);
         SELECT pluresdb_sync_table('t');
         INSERT INTO t VALUES ('a', 1, 'x'), ('b', 2, 'y'), ('c', 3, 'z');
         INSERT INTO t SELECT id, n, 'copied' FROM src;
         INSERT OR REPLACE INTO t VALUES ('a', 10, 'replaced');
         INSERT INTO t VALUES ('b', 0, '') ON CONFLICT(id) DO UPDATE SET n = excluded.n + 20;
         UPDATE t SET id = 'c2' WHERE id = 'c';
         UPDATE t SET s = s WHERE id = 's1';
         DELETE FROM t WHERE id = 's2';",
    )
    .unwrap();
    sync(&a, &b);
    assert_eq!(dump(&a), dump(&b));
    assert_eq!(
        b.all_as::<(String, i64, String)>("SELECT id, n, s FROM t ORDER BY id", ())
            .unwrap(),
        vec![
            ("a".into(), 10, "replaced".into()),
            ("b".into(), 20, "y".into()),
            ("c2".into(), 3, "z".into()),
            ("s1".into(), 1, "copied".into()),
            ("s3".into(), 3, "copied".into()),
        ]
    );
    // Deleting every row (which SQLite would otherwise do without visiting rows), in a
    // transaction with the statement prepared before syncing.
    a.transaction(|_| clear.run(())).unwrap();
    a.run("INSERT INTO t VALUES ('after', 1, 'clear')", ())
        .unwrap();
    sync(&a, &b);
    assert_eq!(dump(&a), dump(&b));
    assert_eq!(
        b.value("SELECT count(*) FROM t", ()).unwrap(),
        Value::Integer(1)
    );
    // Tables that are not synced are not: nothing of `src` was sent.
    assert_eq!(
        b.value("SELECT count(*) FROM src", ()).unwrap(),
        Value::Integer(0)
    );
}

#[test]
fn columns_changed_by_triggers_cascades_upserts_and_row_ids_are_captured() {
    // An update's capture compares only the columns some UPDATE prepared on the writer names
    // (as SQLite's authorizer reports them): each way of changing a column must be among
    // them, including statements prepared after the table's columns were first looked at.
    let shape = "PRAGMA foreign_keys = ON;
        CREATE TABLE parent(id TEXT PRIMARY KEY NOT NULL, v INTEGER, label TEXT);
        CREATE TABLE child(id INTEGER PRIMARY KEY NOT NULL,
                           pid TEXT REFERENCES parent(id) ON UPDATE CASCADE,
                           w INTEGER, note TEXT);
        CREATE TRIGGER copy_v AFTER UPDATE OF v ON parent BEGIN
            UPDATE child SET w = NEW.v WHERE pid = NEW.id;
        END;";
    let (a, b) = pair(shape, &["parent", "child"]);
    a.exec(
        "INSERT INTO parent VALUES ('p', 1, 'first');
         INSERT INTO child VALUES (1, 'p', 0, ''), (2, 'p', 0, '')",
    )
    .unwrap();
    push(&a, &b);
    let steps: [(&str, &str); 6] = [
        // Only `note` named so far.
        (
            "UPDATE child SET note = 'n'",
            "SELECT note FROM child WHERE id = 1",
        ),
        // `w` changed by a trigger of another table's update.
        (
            "UPDATE parent SET v = 7",
            "SELECT w FROM child WHERE id = 2",
        ),
        // `pid` changed by a foreign-key action, with the parent's key.
        (
            "UPDATE parent SET id = 'q'",
            "SELECT pid FROM child WHERE id = 1",
        ),
        // An upsert's SET list.
        (
            "INSERT INTO parent VALUES ('q', 0, '') ON CONFLICT(id) DO UPDATE SET label = 'up'",
            "SELECT label FROM parent",
        ),
        // The key, as the row id.
        (
            "UPDATE child SET rowid = 5 WHERE id = 2",
            "SELECT group_concat(id) FROM child",
        ),
        // A column named by no statement before.
        (
            "UPDATE child SET pid = NULL WHERE id = 1",
            "SELECT count(pid) FROM child",
        ),
    ];
    for (write, check) in steps {
        let before = b.value(check, ()).unwrap();
        a.exec(write).unwrap();
        push(&a, &b);
        let after = a.value(check, ()).unwrap();
        assert_ne!(before, after, "{write} changed nothing to check");
        assert_eq!(b.value(check, ()).unwrap(), after, "after {write}");
        assert_eq!(dump(&a), dump(&b), "after {write}");
    }
}

#[test]
fn a_child_added_while_its_parent_is_deleted_elsewhere_syncs_both_ways() {
    // Foreign keys are enforced by default. A merge must not enforce them: a row inserted on
    // one device that refers to a row deleted meanwhile on another made every later merge of
    // that batch fail (RESTRICT), or was deleted by a cascade run where the merge was applied
    // and never passed on (CASCADE), so the replicas differed for good.
    for action in ["ON DELETE CASCADE", "ON DELETE RESTRICT", ""] {
        let shape = format!(
            "CREATE TABLE project(id TEXT PRIMARY KEY NOT NULL, name TEXT);
             CREATE TABLE task(id TEXT PRIMARY KEY NOT NULL,
                               project TEXT REFERENCES project(id) {action}, title TEXT);"
        );
        let (a, b) = synced_pair(
            &shape,
            &["project", "task"],
            "INSERT INTO project VALUES ('p', 'home'); INSERT INTO task VALUES ('t1', 'p', 'x')",
        );
        // A deletes the project (with its task); B, not knowing, adds a task to it.
        a.exec("DELETE FROM task WHERE project = 'p'; DELETE FROM project WHERE id = 'p'")
            .unwrap();
        b.run("INSERT INTO task VALUES ('t2', 'p', 'y')", ())
            .unwrap();
        sync(&a, &b);
        sync(&a, &b);
        assert_eq!(dump(&a), dump(&b), "{action}");
        assert_eq!(
            a.value("SELECT group_concat(id) FROM task", ()).unwrap(),
            Value::Text("t2".into()),
            "{action}"
        );
        // Local writes still have foreign keys enforced.
        for db in [&a, &b] {
            assert_eq!(
                failure(db, "INSERT INTO task VALUES ('t3', 'nowhere', 'z')"),
                ErrorKind::Constraint,
                "{action}"
            );
        }
    }
}

#[test]
fn edits_that_merge_into_a_row_a_check_refuses_still_sync() {
    // Each edit is valid where it was made; merged, the row breaks the CHECK over both
    // columns. Refusing it failed every sync for good and held back every later change (here
    // r2). Every replica now holds the same row, and `check` names the table.
    let (a, b) = pair(
        "CREATE TABLE t(id TEXT PRIMARY KEY NOT NULL, lo INTEGER, hi INTEGER, CHECK (lo <= hi))",
        &["t"],
    );
    a.run("INSERT INTO t VALUES ('r1', 1, 10)", ()).unwrap();
    sync(&a, &b);
    a.run("UPDATE t SET lo = 5 WHERE id = 'r1'", ()).unwrap();
    b.exec("UPDATE t SET hi = 3 WHERE id = 'r1'; INSERT INTO t VALUES ('r2', 0, 0)")
        .unwrap();
    sync(&a, &b);
    sync(&a, &b);
    assert_eq!(dump(&a), dump(&b));
    assert_eq!(
        a.value("SELECT lo || ' ' || hi FROM t WHERE id = 'r1'", ())
            .unwrap(),
        Value::Text("5 3".into())
    );
    for db in [&a, &b] {
        let problems = db.check().unwrap();
        assert!(problems.iter().any(|p| p.contains("CHECK")), "{problems:?}");
        // Local writes are still checked.
        assert_eq!(
            failure(db, "INSERT INTO t VALUES ('r3', 2, 1)"),
            ErrorKind::Constraint
        );
    }
}

#[test]
fn dropping_a_synced_table_is_refused_saying_what_to_do_instead() {
    // Dropped, the table left its sync records behind: made again, it sent rows it no longer
    // had without values (a third device got them with NULLs) and never took them back from
    // its peer (a device is never sent its own changes), so the devices differed for good.
    let shape = "CREATE TABLE t(id TEXT PRIMARY KEY NOT NULL, x TEXT)";
    let (a, b) = synced_pair(
        shape,
        &["t"],
        "INSERT INTO t VALUES ('1', 'one'), ('2', 'two')",
    );
    let before = dump(&a);
    let err = a
        .exec(&format!(
            "DROP TABLE t; {shape}; INSERT INTO t VALUES ('3', 'three')"
        ))
        .unwrap_err();
    assert!(
        err.message().contains("cannot be dropped")
            && err.message().contains("SELECT pluresdb_unsync_table('t')"),
        "{err}"
    );
    let err = a.exec("DROP TABLE t").unwrap_err();
    assert!(err.message().contains("cannot be dropped"), "{err}");
    assert_eq!(dump(&a), before);
    // In a transaction too; what it did before stays undone.
    let err = a
        .transaction(|tx| {
            tx.run("INSERT INTO t VALUES ('4', 'four')", ())?;
            tx.exec("DROP TABLE t")
        })
        .unwrap_err();
    assert!(err.message().contains("cannot be dropped"), "{err}");
    assert_eq!(dump(&a), before);
    // Deleting the rows reaches every device; unsynced first, the table drops here only.
    a.exec("DELETE FROM t").unwrap();
    sync(&a, &b);
    assert_eq!(dump(&a), dump(&b));
    a.exec("SELECT pluresdb_unsync_table('t'); DROP TABLE t")
        .unwrap();
    assert!(a.synced_tables().unwrap().is_empty());
    assert!(a.check().unwrap().is_empty());
}

/// The rows of table `t` (text key, two more columns) in key order.
fn rows3(db: &Database, t: &str) -> Vec<(String, String, Value)> {
    db.all_as(&format!("SELECT * FROM {t} ORDER BY 1"), ())
        .unwrap()
}

#[test]
fn a_table_synced_again_keeps_the_versions_of_rows_left_alone_meanwhile() {
    // Synced again, the table counted every row as written at that moment: B's rows left
    // alone while it was not synced beat A's newer edits, on both devices.
    let (a, b) = pair(
        "CREATE TABLE todos(id TEXT PRIMARY KEY NOT NULL, title TEXT, done INTEGER)",
        &["todos"],
    );
    a.exec("INSERT INTO todos VALUES ('1', 'one', 0), ('2', 'two', 0), ('3', 'three', 0)")
        .unwrap();
    b.exec("INSERT INTO todos VALUES ('5', 'five', 0), ('6', 'six', 0)")
        .unwrap();
    sync(&a, &b);
    a.exec("UPDATE todos SET done = 2 WHERE id = '2'").unwrap();
    // B's edits of rows 5 and 6, not sent yet when the table stops syncing.
    b.exec("UPDATE todos SET title = title || ', edited on B' WHERE id IN ('5', '6')")
        .unwrap();
    assert!(b.unsync_table("todos").unwrap());
    // Meanwhile A edits row 1; B edits row 2 (after A did), deletes rows 3 and 5 (one of
    // A's, one of its own) and adds row 4.
    a.exec("UPDATE todos SET title = 'one, edited on A' WHERE id = '1'")
        .unwrap();
    b.exec(
        "UPDATE todos SET done = 1 WHERE id = '2'; DELETE FROM todos WHERE id IN ('3', '5');
         INSERT INTO todos VALUES ('4', 'four', 0)",
    )
    .unwrap();
    // A sync meanwhile leaves A's changes out on B, and B's out on A.
    sync(&a, &b);
    assert_eq!(rows3(&b, "todos")[0].1, "one");
    assert_eq!(rows3(&a, "todos")[3].1, "five");
    b.sync_table("todos").unwrap();
    sync(&a, &b);
    assert_eq!(dump(&a), dump(&b));
    let int = Value::Integer;
    assert_eq!(
        rows3(&a, "todos"),
        [
            ("1".into(), "one, edited on A".into(), int(0)),
            // B's edit counts as made when the table synced again: after A's.
            ("2".into(), "two".into(), int(1)),
            ("4".into(), "four".into(), int(0)),
            // Sent although A synced with B (and moved past that edit) while it waited.
            ("6".into(), "six, edited on B".into(), int(0)),
        ]
    );
    // Nothing is left to send or to take: the rows are as settled as before the pause.
    assert_eq!(push(&a, &b) + push(&b, &a), 0);
    assert!(b.check().unwrap().is_empty());
}

#[test]
fn a_table_rebuilt_or_given_a_column_while_not_synced_keeps_its_rows_versions() {
    let (a, b) = synced_pair(
        "CREATE TABLE t(id TEXT PRIMARY KEY NOT NULL, x TEXT)",
        &["t"],
        "INSERT INTO t VALUES ('1', 'a'), ('2', 'b'), ('3', 'c')",
    );
    a.exec(
        "ALTER TABLE t ADD COLUMN y TEXT DEFAULT pending;
         UPDATE t SET y = 'from A' WHERE id IN ('1', '2')",
    )
    .unwrap();
    // B rebuilds t (SQLite's way of making x NOT NULL), adding y too (its DEFAULT a bare
    // word: the text 'pending'), leaving row 3 out, and sets y of row 2.
    b.exec(
        "SELECT pluresdb_unsync_table('t');
         CREATE TABLE t2(id TEXT PRIMARY KEY NOT NULL, x TEXT NOT NULL, y TEXT DEFAULT pending);
         INSERT INTO t2(id, x) SELECT id, x FROM t WHERE id <> '3'; DROP TABLE t;
         ALTER TABLE t2 RENAME TO t; UPDATE t SET y = 'from B' WHERE id = '2'",
    )
    .unwrap();
    a.exec("UPDATE t SET x = 'a, edited on A' WHERE id = '1'")
        .unwrap();
    b.sync_table("t").unwrap();
    sync(&a, &b);
    assert_eq!(dump(&a), dump(&b));
    let text = |s: &str| Value::Text(s.into());
    assert_eq!(
        rows3(&b, "t"),
        [
            // B's row 1 was copied as it was, and its y holds the default: A's values win.
            ("1".into(), "a, edited on A".into(), text("from A")),
            ("2".into(), "b".into(), text("from B")),
        ]
    );
    // Under another key, the table is another one: its rows count as written now.
    b.exec(
        "SELECT pluresdb_unsync_table('t'); DROP TABLE t;
         CREATE TABLE t(id TEXT NOT NULL, x TEXT PRIMARY KEY NOT NULL, y TEXT);
         INSERT INTO t VALUES ('1', 'a', 'y'); SELECT pluresdb_sync_table('t')",
    )
    .unwrap();
    assert!(sends(&b, "y", "y"));
}

#[test]
fn a_table_rebuilt_with_expression_defaults_and_a_key_type_of_the_same_affinity_resumes() {
    // A DEFAULT written as an expression (its text comes without the parentheses) made
    // syncing again fail with a syntax error, and a key declared VARCHAR instead of TEXT made
    // the table count as another one, its stale rows beating A's edits.
    let (a, b) = synced_pair(
        "CREATE TABLE t(id TEXT PRIMARY KEY NOT NULL, x TEXT)",
        &["t"],
        "INSERT INTO t VALUES ('1', 'a')",
    );
    a.exec("ALTER TABLE t ADD COLUMN n INTEGER DEFAULT 2; UPDATE t SET n = 5")
        .unwrap();
    b.exec(
        "SELECT pluresdb_unsync_table('t');
         CREATE TABLE t2(id VARCHAR(20) PRIMARY KEY NOT NULL, x TEXT, n INTEGER DEFAULT (1 + 1));
         INSERT INTO t2(id, x) SELECT id, x FROM t; DROP TABLE t; ALTER TABLE t2 RENAME TO t",
    )
    .unwrap();
    a.exec("UPDATE t SET x = 'a, edited on A'").unwrap();
    b.sync_table("t").unwrap();
    sync(&a, &b);
    assert_eq!(dump(&a), dump(&b));
    let rows = b.all_as::<(String, String, i64)>("SELECT * FROM t", ());
    assert_eq!(rows.unwrap(), [("1".into(), "a, edited on A".into(), 5)]);
}

#[test]
fn a_table_renamed_while_not_synced_syncs_again_under_its_new_name_with_its_versions() {
    let (a, b) = synced_pair(
        "CREATE TABLE t(id TEXT PRIMARY KEY NOT NULL, x TEXT)",
        &["t"],
        "INSERT INTO t VALUES ('1', 'a'), ('2', 'b')",
    );
    b.exec(
        "SELECT pluresdb_unsync_table('t'); ALTER TABLE t RENAME TO t2;
         UPDATE t2 SET x = 'b, edited on B' WHERE id = '2'",
    )
    .unwrap();
    a.exec("ALTER TABLE t RENAME TO t2; UPDATE t2 SET x = 'a, edited on A' WHERE id = '1'")
        .unwrap();
    b.sync_table("t2").unwrap();
    sync(&a, &b);
    assert_eq!(dump(&a), dump(&b));
    let rows = b.all_as::<(String, String)>("SELECT * FROM t2 ORDER BY 1", ());
    assert_eq!(
        rows.unwrap(),
        [
            ("1".into(), "a, edited on A".into()),
            ("2".into(), "b, edited on B".into())
        ]
    );
}

#[test]
fn a_table_made_on_the_root_page_of_one_dropped_while_not_synced_is_not_taken_for_it() {
    let (a, b) = pair(
        "CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT)",
        &["notes"],
    );
    let jobs = "CREATE TABLE jobs(id INTEGER PRIMARY KEY, title TEXT, done INTEGER)";
    a.exec(&format!(
        "INSERT INTO notes VALUES (1, 'n1'), (2, 'n2'); {jobs}; INSERT INTO jobs VALUES (2, 'j2', 0)"
    ))
    .unwrap();
    a.sync_table("jobs").unwrap();
    sync(&a, &b);
    // B drops notes on this device only, and makes jobs (on the page notes had) with job 1.
    let root = "SELECT rootpage FROM sqlite_schema WHERE name = ?1";
    let notes_root = b.value(root, ("notes",)).unwrap();
    b.exec(&format!(
        "SELECT pluresdb_unsync_table('notes'); DROP TABLE notes; {jobs};
         INSERT INTO jobs VALUES (1, 'j1', 0)"
    ))
    .unwrap();
    assert_eq!(b.value(root, ("jobs",)).unwrap(), notes_root);
    b.sync_table("jobs").unwrap();
    sync(&a, &b);
    // A's job 2 was not deleted as a row of notes that B no longer had.
    let ids = a.all_as::<(i64,)>("SELECT id FROM jobs ORDER BY 1", ());
    assert_eq!(ids.unwrap(), [(1,), (2,)]);
}

#[test]
fn a_table_whose_key_columns_were_reordered_while_not_synced_keeps_its_versions_under_the_new_order()
 {
    // Refused before (its rows would have gone to peers under swapped keys); peers now put
    // each key in their own order (pluresdb-sync's KeyColumns), so the kept records only need
    // their keys in the new order.
    let (a, b) = synced_pair(
        "CREATE TABLE p(a INT NOT NULL, b INT NOT NULL, v TEXT, PRIMARY KEY (a, b))",
        &["p"],
        "INSERT INTO p VALUES (1, 2, 'x'), (3, 4, 'y'), (2, 1, 'z')",
    );
    b.exec(
        "SELECT pluresdb_unsync_table('p');
         CREATE TABLE p2(a INT NOT NULL, b INT NOT NULL, v TEXT, PRIMARY KEY (b, a));
         INSERT INTO p2 SELECT * FROM p; DROP TABLE p; ALTER TABLE p2 RENAME TO p;
         DELETE FROM p WHERE a = 3",
    )
    .unwrap();
    b.sync_table("p").unwrap();
    let changes: Vec<ChangeRecord> = b
        .changes_since(0, None)
        .unwrap()
        .changes
        .into_iter()
        .filter(|c| &*c.collection == "p")
        .collect();
    // Unchanged rows keep A's versions, keyed (b, a) now; the row deleted meanwhile is
    // deleted by B.
    let of = |key: [i64; 2]| {
        let key: Vec<Value> = key.into_iter().map(Value::Integer).collect();
        changes
            .iter()
            .filter(|c| *c.key == *key)
            .map(|c| (c.version.site == a.site_id(), c.cl))
            .collect::<Vec<_>>()
    };
    assert!(!of([2, 1]).is_empty() && of([2, 1]).iter().all(|&(by_a, cl)| by_a && cl == 1));
    assert!(!of([1, 2]).is_empty() && of([1, 2]).iter().all(|&(by_a, cl)| by_a && cl == 1));
    assert_eq!(of([4, 3]), [(false, 2)]);
    assert!(b.check().unwrap().is_empty());
}

#[test]
fn a_key_column_renamed_while_not_synced_keeps_the_table_and_what_was_done_meanwhile() {
    // Renamed, the key made the table count as another one: the row deleted meanwhile came
    // back, and the unchanged row beat A's newer edit.
    let (a, b) = synced_pair(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)",
        &["t"],
        "INSERT INTO t VALUES (1, 'x'), (2, 'y')",
    );
    b.exec(
        "SELECT pluresdb_unsync_table('t'); ALTER TABLE t RENAME COLUMN id TO key_id;
         DELETE FROM t WHERE key_id = 2",
    )
    .unwrap();
    a.exec("UPDATE t SET v = 'x, edited on A' WHERE id = 1")
        .unwrap();
    b.sync_table("t").unwrap();
    sync(&a, &b);
    let rows = |db: &Database| db.all_as::<(i64, String)>("SELECT * FROM t ORDER BY 1", ());
    assert_eq!(rows(&a).unwrap(), [(1, "x, edited on A".into())]);
    assert_eq!(rows(&b).unwrap(), rows(&a).unwrap());
}

#[test]
fn unsyncing_a_table_not_synced_drops_what_it_kept_so_it_syncs_as_a_new_one() {
    let (a, b) = synced_pair(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, x TEXT)",
        &["t"],
        "INSERT INTO t VALUES (1, 'a'), (2, 'b')",
    );
    // Made anew on B with key 1 again: as it is, that would be the paused table, whose row 2
    // is gone (deleted everywhere). Unsynced once more first, it is a new table.
    b.exec(
        "SELECT pluresdb_unsync_table('t'); DROP TABLE t;
         CREATE TABLE t(id INTEGER PRIMARY KEY, x TEXT); INSERT INTO t VALUES (1, 'new')",
    )
    .unwrap();
    assert!(!b.unsync_table("t").unwrap());
    b.sync_table("t").unwrap();
    sync(&a, &b);
    let rows = |db: &Database| db.all_as::<(i64, String)>("SELECT * FROM t ORDER BY 1", ());
    assert_eq!(rows(&a).unwrap(), [(1, "new".into()), (2, "b".into())]);
}

#[test]
fn a_table_dropped_on_one_device_and_made_again_deletes_nothing_and_gets_its_rows_back() {
    // Made again, the table never got back the rows the other device still had (its cursor
    // was past them), so the devices differed for good.
    let (a, b) = pair(
        "CREATE TABLE t(id TEXT PRIMARY KEY NOT NULL, x TEXT)",
        &["t"],
    );
    a.exec("INSERT INTO t VALUES ('1', 'a'), ('4', 'd')")
        .unwrap();
    b.exec("INSERT INTO t VALUES ('2', 'b')").unwrap();
    sync(&a, &b);
    a.exec("DELETE FROM t WHERE id = '4'").unwrap();
    sync(&a, &b);
    // Made again with row 4 in it once more: a new life, not lost to the delete from before.
    b.exec(
        "SELECT pluresdb_unsync_table('t'); DROP TABLE t;
         CREATE TABLE t(id TEXT PRIMARY KEY NOT NULL, x TEXT);
         INSERT INTO t VALUES ('3', 'c'), ('4', 'd again'); SELECT pluresdb_sync_table('t')",
    )
    .unwrap();
    // B asks A for the table again, its own rows too (as a sync session does).
    let asked = b.refetching().unwrap()[&a.site_id()].clone();
    assert_eq!(
        asked.wanted,
        [Refetch {
            table: "t".into(),
            column: None
        }]
    );
    let set = a.changes_since(asked.cursor, Some(b.site_id())).unwrap();
    b.apply_changes_from(a.site_id(), &set.changes).unwrap();
    b.apply_changes_from(a.site_id(), &changes_of(&a, &asked.wanted))
        .unwrap();
    push(&b, &a);
    assert_eq!(dump(&a), dump(&b));
    let ids = |db: &Database| {
        db.all_as::<(String,)>("SELECT id FROM t ORDER BY 1", ())
            .unwrap()
    };
    assert_eq!(
        ids(&b),
        [("1".into(),), ("2".into(),), ("3".into(),), ("4".into(),)]
    );
}

#[test]
fn a_table_synced_after_another_stopped_syncing_sends_every_column() {
    // The new table took the id of the one that stopped, and with it that table's record of
    // when its columns appeared: a column it lacked counted as added after every row, so
    // existing rows never sent it.
    let a = with_synced(
        "CREATE TABLE p(id TEXT PRIMARY KEY NOT NULL, x TEXT)",
        &["p"],
    );
    a.exec("ALTER TABLE p ADD COLUMN z TEXT").unwrap();
    assert!(a.unsync_table("p").unwrap());
    a.exec(
        "CREATE TABLE q(id TEXT PRIMARY KEY NOT NULL, z TEXT, w TEXT);
         INSERT INTO q VALUES ('1', 'zz', 'ww')",
    )
    .unwrap();
    a.sync_table("q").unwrap();
    let b = with_synced(
        "CREATE TABLE q(id TEXT PRIMARY KEY NOT NULL, z TEXT, w TEXT)",
        &["q"],
    );
    sync(&a, &b);
    assert_eq!(dump(&a), dump(&b));
}

#[test]
fn a_synced_table_renamed_keeps_syncing_under_its_new_name() {
    // Renamed, the table stopped syncing without a word (even the row written before the
    // rename never left), and `check` failed with "no such table".
    let (a, b) = pair(
        "CREATE TABLE t(id TEXT PRIMARY KEY NOT NULL, x TEXT)",
        &["t"],
    );
    a.run("INSERT INTO t VALUES ('1', 'one')", ()).unwrap();
    sync(&a, &b);
    a.run("INSERT INTO t VALUES ('2', 'two')", ()).unwrap();
    a.exec("ALTER TABLE t RENAME TO t2; UPDATE t2 SET x = 'uno' WHERE id = '1'")
        .unwrap();
    assert_eq!(a.synced_tables().unwrap(), ["t2"]);
    assert!(a.check().unwrap().is_empty());
    // The same in a transaction, as SQLite's way of changing a table's shape ends.
    b.transaction(|tx| {
        tx.exec("ALTER TABLE t RENAME TO t2")?;
        tx.run("INSERT INTO t2 VALUES ('3', 'three')", ())
    })
    .unwrap();
    sync(&a, &b);
    sync(&a, &b);
    assert_eq!(dump(&a), dump(&b));
    assert_eq!(
        b.value(
            "SELECT group_concat(x, ' ') FROM (SELECT x FROM t2 ORDER BY id)",
            ()
        )
        .unwrap(),
        Value::Text("uno two three".into())
    );
    // A rename rolled back leaves the table syncing under its old name.
    let _ = a.transaction(|tx| {
        tx.exec("ALTER TABLE t2 RENAME TO t3")?;
        Err::<(), _>(pluresdb_core::Error::invalid("undo"))
    });
    assert_eq!(a.synced_tables().unwrap(), ["t2"]);
    a.run("INSERT INTO t2 VALUES ('4', 'four')", ()).unwrap();
    sync(&a, &b);
    assert_eq!(dump(&a), dump(&b));
    // Prepared first and run later (the statement is cached, not prepared again), as
    // better-sqlite3 code does.
    let rename = a.prepare("ALTER TABLE t2 RENAME TO t3").unwrap();
    rename.run(()).unwrap();
    assert_eq!(a.synced_tables().unwrap(), ["t3"]);
}

#[test]
fn a_renamed_columns_values_reach_every_device() {
    // Changes name their column: after `RENAME COLUMN y TO yy` the values yy held had no
    // version under that name, so they were never sent (a device with `yy` from the start got
    // NULL), and two devices that both renamed it kept different values for good.
    let shape = "CREATE TABLE t(id TEXT PRIMARY KEY NOT NULL, y TEXT)";
    let (a, b) = pair(shape, &["t"]);
    let c = with_synced(
        "CREATE TABLE t(id TEXT PRIMARY KEY NOT NULL, yy TEXT)",
        &["t"],
    );
    a.run("INSERT INTO t VALUES ('1', 'a')", ()).unwrap();
    sync(&a, &b);
    a.exec("ALTER TABLE t RENAME COLUMN y TO yy").unwrap();
    // B writes under the old name (A leaves it out), then renames too: later, so it wins.
    b.run("UPDATE t SET y = 'B'", ()).unwrap();
    sync(&a, &b);
    b.transaction(|tx| tx.exec("ALTER TABLE t RENAME COLUMN y TO yy"))
        .unwrap();
    for _ in 0..2 {
        sync(&a, &b);
        sync(&b, &c);
        sync(&a, &c);
    }
    assert_eq!(dump(&a), dump(&b));
    assert_eq!(dump(&a), dump(&c));
    assert_eq!(
        c.value("SELECT yy FROM t WHERE id = '1'", ()).unwrap(),
        Value::Text("B".into())
    );
    // A value written after a rename wins over one a later rename carries: renames keep the
    // versions the values had.
    a.run("UPDATE t SET yy = 'written after both renames'", ())
        .unwrap();
    let late = with_synced(shape, &["t"]);
    push(&c, &late);
    a.run("UPDATE t SET yy = 'A, later'", ()).unwrap();
    late.exec("ALTER TABLE t RENAME COLUMN y TO yy").unwrap();
    for _ in 0..2 {
        sync(&a, &late);
        sync(&a, &c);
    }
    assert_eq!(
        late.value("SELECT yy FROM t WHERE id = '1'", ()).unwrap(),
        Value::Text("A, later".into())
    );
    assert_eq!(dump(&a), dump(&late));
    // Undone by ROLLBACK TO, a rename leaves nothing behind: the column syncs under its name.
    a.exec(
        "SAVEPOINT s; ALTER TABLE t RENAME COLUMN yy TO zz; ROLLBACK TO s; RELEASE s;
         CREATE INDEX t_yy ON t(yy); UPDATE t SET yy = 'after the savepoint'",
    )
    .unwrap();
    sync(&a, &c);
    assert_eq!(
        c.value("SELECT yy FROM t WHERE id = '1'", ()).unwrap(),
        Value::Text("after the savepoint".into())
    );
    // A column added is not a rename: its DEFAULT does not win over a peer's value.
    a.exec("ALTER TABLE t ADD COLUMN z TEXT DEFAULT 'default'")
        .unwrap();
    b.exec("ALTER TABLE t ADD COLUMN z TEXT DEFAULT 'default'; UPDATE t SET z = 'b'")
        .unwrap();
    a.exec("ALTER TABLE t DROP COLUMN z; ALTER TABLE t ADD COLUMN z TEXT DEFAULT 'default'")
        .unwrap();
    sync(&a, &b);
    sync(&a, &b);
    assert_eq!(dump(&a), dump(&b));
    assert_eq!(
        a.value("SELECT z FROM t", ()).unwrap(),
        Value::Text("b".into())
    );
}

#[test]
fn schema_changes_by_another_process_are_not_judged_as_this_ones() {
    // This handle reloads the shapes when another process (here a second handle) changed
    // them, possibly by several statements at once: `DROP COLUMN y` then `ADD COLUMN c` looked
    // like y renamed to c, whose DEFAULT then counted as written now and beat a peer's value.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let shape = "CREATE TABLE t(id TEXT PRIMARY KEY NOT NULL, x TEXT, y TEXT)";
    let a = Database::open(&path).unwrap();
    a.exec(shape).unwrap();
    a.sync_table("t").unwrap();
    let b = with_synced(shape, &["t"]);
    a.run("INSERT INTO t VALUES ('r', 'x', 'y')", ()).unwrap();
    sync(&a, &b);
    b.exec("ALTER TABLE t ADD COLUMN c TEXT; UPDATE t SET c = 'from b'")
        .unwrap();
    let other = Database::open(&path).unwrap();
    other
        .exec("ALTER TABLE t DROP COLUMN y; ALTER TABLE t ADD COLUMN c TEXT DEFAULT 'default'")
        .unwrap();
    a.transaction(|tx| tx.run("INSERT INTO t(id, x) VALUES ('s', 'x2')", ()))
        .unwrap();
    sync(&a, &b);
    sync(&a, &b);
    for db in [&a, &b] {
        assert_eq!(
            db.value("SELECT c FROM t WHERE id = 'r'", ()).unwrap(),
            Value::Text("from b".into())
        );
    }
    // Another program's schema change that commits while this handle's statement waits for
    // the write lock is read before that statement runs, not judged as its own: here a unique
    // index (plain SQLite, which PluresDB's checks do not stop) refused this unrelated one.
    let plain = rusqlite::Connection::open(&path).unwrap();
    plain
        .execute_batch("BEGIN IMMEDIATE; CREATE UNIQUE INDEX t_x ON t(x)")
        .unwrap();
    let waiting = {
        let a = a.clone();
        std::thread::spawn(move || a.exec("CREATE INDEX t_by_x ON t(x)"))
    };
    std::thread::sleep(std::time::Duration::from_millis(200));
    plain.execute_batch("COMMIT").unwrap();
    waiting.join().unwrap().unwrap();
    plain
        .execute_batch("DROP INDEX t_x; DROP INDEX t_by_x")
        .unwrap();
    // The same when this handle's transaction is begun in SQL.
    plain
        .execute_batch("BEGIN IMMEDIATE; CREATE UNIQUE INDEX t_x ON t(x)")
        .unwrap();
    let waiting = {
        let a = a.clone();
        std::thread::spawn(move || {
            a.exec("BEGIN IMMEDIATE")?;
            a.exec("CREATE INDEX t_by_x ON t(x); COMMIT")
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(200));
    plain.execute_batch("COMMIT").unwrap();
    waiting.join().unwrap().unwrap();
    plain
        .execute_batch("DROP INDEX t_x; DROP INDEX t_by_x")
        .unwrap();
    drop(plain);
    // A unique index another program made on the table (as before this version refused it)
    // is not this transaction's: renaming the table or a column goes on.
    drop((a, other));
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE UNIQUE INDEX t_x ON t(x)")
        .unwrap();
    let a = Database::open(&path).unwrap();
    a.exec("ALTER TABLE t RENAME TO t2; ALTER TABLE t2 RENAME COLUMN x TO xx")
        .unwrap();
    assert_eq!(a.synced_tables().unwrap(), ["t2"]);
}

#[test]
fn capture_triggers_of_earlier_versions_are_removed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    {
        let db = Database::open(&path).unwrap();
        db.exec("CREATE TABLE todos(id TEXT PRIMARY KEY NOT NULL, title TEXT)")
            .unwrap();
        db.sync_table("todos").unwrap();
        // What earlier versions installed: a trigger calling a function that no longer exists.
        db.exec(
            "CREATE TRIGGER \"_pluresdb_ins_todos\" AFTER INSERT ON todos BEGIN
                 SELECT pluresdb_capture(3, 1, 1, NEW.id);
             END;",
        )
        .unwrap();
    }
    let db = Database::open(&path).unwrap();
    db.run("INSERT INTO todos VALUES ('t1', 'works')", ())
        .unwrap();
    let other = Database::open_in_memory().unwrap();
    other
        .exec("CREATE TABLE todos(id TEXT PRIMARY KEY NOT NULL, title TEXT)")
        .unwrap();
    other.sync_table("todos").unwrap();
    sync(&db, &other);
    assert_eq!(dump(&db), dump(&other));
    assert_eq!(
        db.value(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'trigger' AND tbl_name = 'todos'",
            ()
        )
        .unwrap(),
        Value::Integer(0)
    );
}

/// The changes after `since`, in a canonical order.
fn sorted_changes(db: &Database, since: u64) -> Vec<String> {
    let mut out: Vec<String> = db
        .changes_since(since, None)
        .unwrap()
        .changes
        .iter()
        .map(|c| format!("{c:?}"))
        .collect();
    out.sort();
    out
}

#[test]
fn recent_changes_are_looked_up_and_give_what_a_full_scan_gives() {
    let dir = tempfile::tempdir().unwrap();
    let (path, db) = synced_file(
        &dir,
        "CREATE TABLE todos(id TEXT PRIMARY KEY NOT NULL, title TEXT, done INTEGER)",
        "todos",
    );
    let start = db.changes_since(0, None).unwrap().db_version;
    for i in 0..30 {
        db.run(
            "INSERT INTO todos VALUES (?1, ?2, 0)",
            (format!("t{}", i % 12), format!("title {i}")),
        )
        .or_else(|_| {
            db.run(
                "UPDATE todos SET done = 1 - done, title = ?2 WHERE id = ?1",
                (format!("t{}", i % 12), format!("title {i}")),
            )
        })
        .unwrap();
        if i % 7 == 3 {
            db.run("DELETE FROM todos WHERE id = ?1", (format!("t{}", i % 5),))
                .unwrap();
        }
        if i % 4 == 0 {
            db.put(&format!("n{}", i % 6), &json!({"i": i})).unwrap();
            db.link(
                &format!("n{}", i % 6),
                "next",
                &format!("n{}", (i + 1) % 6),
                None,
            )
            .ok();
        }
    }
    let end = db.changes_since(0, None).unwrap().db_version;
    assert!(end > start + 20, "{start}..{end}");
    let live: Vec<Vec<String>> = (0..=end).map(|k| sorted_changes(&db, k)).collect();
    assert!(live[start as usize].len() > 30);
    assert!(live[end as usize].is_empty());
    drop(db);
    // Reopened, nothing is listed as recent: every answer comes from a scan.
    let db = Database::open(&path).unwrap();
    for (k, expected) in live.iter().enumerate() {
        assert_eq!(&sorted_changes(&db, k as u64), expected, "since {k}");
    }
    // A second handle on the file writes (as another process would): the first still sees it.
    let other = Database::open(&path).unwrap();
    other
        .run("INSERT INTO todos VALUES ('elsewhere', 'x', 0)", ())
        .unwrap();
    assert!(
        sorted_changes(&db, end)
            .iter()
            .any(|c| c.contains("elsewhere")),
        "{:?}",
        sorted_changes(&db, end)
    );
    db.run("INSERT INTO todos VALUES ('here', 'y', 0)", ())
        .unwrap();
    let after = sorted_changes(&db, end);
    assert!(after.iter().any(|c| c.contains("elsewhere")));
    assert!(after.iter().any(|c| c.contains("here")));
}

#[test]
fn a_table_altered_by_another_connection_is_never_captured_with_the_old_shape() {
    let dir = tempfile::tempdir().unwrap();
    let (path, a) = synced_file(&dir, NOTES, "notes");
    a.run("INSERT INTO notes VALUES ('n1', 'first')", ())
        .unwrap();
    // Another connection (as another process would) adds a column between two writes of
    // `a`: `a` notices the other commit and records its next write with the new column.
    let b = Database::open(&path).unwrap();
    b.exec("ALTER TABLE notes ADD COLUMN tag TEXT").unwrap();
    a.run("UPDATE notes SET tag = 'red' WHERE id = 'n1'", ())
        .unwrap();
    assert!(sends(&a, "tag", "red"));
    // A renamed column too: the write is recorded under the new name.
    b.exec("ALTER TABLE notes RENAME COLUMN tag TO label")
        .unwrap();
    a.run("UPDATE notes SET label = 'green' WHERE id = 'n1'", ())
        .unwrap();
    assert!(sends(&a, "label", "green"));
    assert!(!sends(&a, "tag", "green"));
    // Altered after `a` began a deferred transaction, before its first write: the write
    // reads the new shape first (the transaction's snapshot starts there).
    a.exec("BEGIN").unwrap();
    b.exec("ALTER TABLE notes ADD COLUMN more TEXT").unwrap();
    a.run("UPDATE notes SET more = 'inside' WHERE id = 'n1'", ())
        .unwrap();
    a.exec("COMMIT").unwrap();
    assert!(sends(&a, "more", "inside"));
    // Altered after the transaction read: SQLite refuses its write (its snapshot is stale),
    // and nothing of it stays.
    a.exec("BEGIN").unwrap();
    a.value("SELECT count(*) FROM notes", ()).unwrap();
    b.exec("ALTER TABLE notes ADD COLUMN extra TEXT").unwrap();
    assert!(
        a.run("UPDATE notes SET body = 'lost' WHERE id = 'n1'", ())
            .is_err()
    );
    a.exec("ROLLBACK").unwrap();
    assert_eq!(
        a.value("SELECT body FROM notes WHERE id = 'n1'", ())
            .unwrap(),
        Value::Text("first".into())
    );
    // And the next write goes through with the shape read again.
    a.run("UPDATE notes SET body = 'kept' WHERE id = 'n1'", ())
        .unwrap();
    assert!(sends(&a, "body", "kept"));
}

#[test]
fn a_table_another_connection_syncs_is_captured_here_too() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = notes_and_other_handle(&dir.path().join("shared.db"));
    a.run("INSERT INTO notes VALUES ('n0', 'before')", ())
        .unwrap();
    // The other connection opts the table in while `a` is open.
    b.sync_table("notes").unwrap();
    // `a`'s next writes, alone or in a transaction, are recorded.
    a.run("INSERT INTO notes VALUES ('n1', 'by a')", ())
        .unwrap();
    a.transaction(|tx| tx.run("UPDATE notes SET body = 'edited' WHERE id = 'n0'", ()))
        .unwrap();
    assert!(sends(&b, "body", "by a"));
    assert!(sends(&b, "body", "edited"));
    // Another database that syncs with it ends with the same rows.
    let (_, c) = synced_file(&dir, NOTES, "notes");
    sync(&a, &c);
    assert_eq!(
        c.all_as::<(String, String)>("SELECT id, body FROM notes ORDER BY id", ())
            .unwrap(),
        [
            ("n0".to_owned(), "edited".to_owned()),
            ("n1".to_owned(), "by a".to_owned())
        ]
    );
}

#[test]
fn an_iterated_write_that_cannot_be_recorded_ends_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (_, a) = synced_file(&dir, NOTES, "notes");
    a.run("INSERT INTO notes VALUES ('n1', 'first')", ())
        .unwrap();
    // A key sync cannot carry (over 64 KiB), written inside `a`'s transaction.
    a.exec("BEGIN").unwrap();
    let items: Vec<_> = a
        .iterate_as::<(String,)>(
            "UPDATE notes SET id = hex(zeroblob(40000)) WHERE id = 'n1' RETURNING id",
            (),
        )
        .unwrap()
        .collect();
    let last = items.last().expect("at least the error");
    assert!(
        matches!(last, Err(e) if e.message().contains("sync cannot carry this key")),
        "{items:?}"
    );
    let err = a.exec("COMMIT").unwrap_err();
    assert!(err.message().contains("cannot commit"), "{err}");
    assert_eq!(
        a.value("SELECT body FROM notes WHERE id = 'n1'", ())
            .unwrap(),
        Value::Text("first".into())
    );
}

#[test]
fn rolled_back_sync_and_unsync_leave_capture_as_the_file_says() {
    let db = todo_db();
    db.exec("CREATE TABLE t2(id TEXT PRIMARY KEY NOT NULL, v TEXT)")
        .unwrap();
    let synced_keys = |db: &Database, coll: &str| -> Vec<String> {
        db.changes_since(0, None)
            .unwrap()
            .changes
            .iter()
            .filter(|c| &*c.collection == coll)
            .map(|c| format!("{:?}", c.key))
            .collect()
    };
    // A rolled-back sync_table: t2 stays unsynced here.
    let r = db.transaction(|tx| {
        tx.sync_table("t2")?;
        Err::<(), _>(pluresdb_core::Error::invalid("changed my mind"))
    });
    assert!(r.is_err());
    db.run("INSERT INTO t2 VALUES ('x', '1')", ()).unwrap();
    // The same in SQL, undone by a savepoint rollback inside a transaction that commits.
    db.exec(
        "BEGIN; SAVEPOINT s; SELECT pluresdb_sync_table('t2'); ROLLBACK TO s;
         INSERT INTO t2 VALUES ('y', '2'); COMMIT;",
    )
    .unwrap();
    assert_eq!(db.synced_tables().unwrap(), vec!["todos".to_owned()]);
    assert!(synced_keys(&db, "t2").is_empty());
    // No clock records were written for a table that is not synced.
    assert_eq!(
        db.value(
            "SELECT count(*) FROM _pluresdb_clock
             WHERE tbl NOT IN (SELECT id FROM _pluresdb_collections)",
            ()
        )
        .unwrap(),
        Value::Integer(0)
    );
    // A rolled-back unsync_table: todos stays synced and its writes are still recorded.
    let r = db.transaction(|tx| {
        tx.unsync_table("todos")?;
        Err::<(), _>(pluresdb_core::Error::invalid("changed my mind"))
    });
    assert!(r.is_err());
    db.run("INSERT INTO todos(id) VALUES ('after')", ())
        .unwrap();
    assert!(
        synced_keys(&db, "todos")
            .iter()
            .any(|k| k.contains("after"))
    );
}

#[test]
fn a_savepoint_rollback_never_leaves_rows_above_the_stored_db_version() {
    let dir = tempfile::tempdir().unwrap();
    let (path, db) = synced_file(
        &dir,
        "CREATE TABLE todos(id TEXT PRIMARY KEY NOT NULL, title TEXT)",
        "todos",
    );
    let before = db.db_version().unwrap();
    // The flush before ROLLBACK TO takes a db_version inside the savepoint; the rollback
    // undoes taking it, but the transaction keeps using it for s2.
    db.exec(
        "BEGIN; SAVEPOINT a; INSERT INTO todos VALUES ('s1', 'x'); ROLLBACK TO a;
         INSERT INTO todos VALUES ('s2', 'y'); COMMIT;",
    )
    .unwrap();
    let after = db.db_version().unwrap();
    assert!(after > before, "{before} -> {after}");
    drop(db);
    // After reopening (nothing listed as recent), a peer that had `before` gets s2.
    let db = Database::open(&path).unwrap();
    let changes = sorted_changes(&db, before);
    assert!(changes.iter().any(|c| c.contains("s2")), "{changes:?}");
    assert!(changes.iter().all(|c| !c.contains("s1")), "{changes:?}");
    db.run("INSERT INTO todos VALUES ('s3', 'z')", ()).unwrap();
    assert!(sorted_changes(&db, after).iter().any(|c| c.contains("s3")));
    assert!(sorted_changes(&db, after).iter().all(|c| !c.contains("s2")));
}

#[test]
fn another_handles_write_after_an_undone_version_is_still_sent() {
    let dir = tempfile::tempdir().unwrap();
    let (path, a) = synced_file(
        &dir,
        "CREATE TABLE todos(id TEXT PRIMARY KEY NOT NULL, title TEXT)",
        "todos",
    );
    a.run("INSERT INTO todos VALUES ('a1', 'x')", ()).unwrap();
    let cursor = a.db_version().unwrap();
    // `a` takes a version inside a savepoint that is rolled back, then commits nothing.
    a.exec("BEGIN; SAVEPOINT s; INSERT INTO todos VALUES ('gone', 'x'); ROLLBACK TO s; COMMIT;")
        .unwrap();
    // Another handle (as another process would) commits the next version.
    let b = Database::open(&path).unwrap();
    b.run("INSERT INTO todos VALUES ('from-b', 'y')", ())
        .unwrap();
    let changes = sorted_changes(&a, cursor);
    assert!(changes.iter().any(|c| c.contains("from-b")), "{changes:?}");
    assert!(changes.iter().all(|c| !c.contains("gone")), "{changes:?}");
    // And after `a` writes again, both are still there for a peer at the old cursor.
    a.run("INSERT INTO todos VALUES ('a2', 'z')", ()).unwrap();
    let changes = sorted_changes(&a, cursor);
    assert!(changes.iter().any(|c| c.contains("from-b")), "{changes:?}");
    assert!(changes.iter().any(|c| c.contains("a2")), "{changes:?}");
}

#[test]
fn insert_or_replace_rewrites_the_row_in_the_same_life() {
    let a = todo_db();
    a.run("INSERT INTO todos(id, title) VALUES ('r', 'one')", ())
        .unwrap();
    a.run(
        "INSERT OR REPLACE INTO todos(id, title) VALUES ('r', 'two')",
        (),
    )
    .unwrap();
    let changes = a.changes_since(0, None).unwrap().changes;
    let of_r: Vec<_> = changes
        .iter()
        .filter(|c| format!("{:?}", c.key).contains("\"r\""))
        .collect();
    assert!(!of_r.is_empty());
    assert!(of_r.iter().all(|c| c.cl == 1), "{of_r:#?}");
    // Also when the replaced row's delete cascades to a synced child first.
    a.exec(
        "CREATE TABLE parts(id TEXT PRIMARY KEY NOT NULL,
                            todo TEXT REFERENCES todos(id) ON DELETE CASCADE)",
    )
    .unwrap();
    a.sync_table("parts").unwrap();
    a.exec("PRAGMA foreign_keys = ON").unwrap();
    for i in 0..100 {
        a.run("INSERT INTO parts VALUES (?1, 'r')", (format!("p{i}"),))
            .unwrap();
    }
    a.run(
        "INSERT OR REPLACE INTO todos(id, title) VALUES ('r', 'three')",
        (),
    )
    .unwrap();
    assert_eq!(a.all("SELECT id FROM parts", ()).unwrap().len(), 0);
    let changes = a.changes_since(0, None).unwrap().changes;
    assert!(
        changes
            .iter()
            .filter(|c| &*c.collection == "todos" && format!("{:?}", c.key).contains("\"r\""))
            .all(|c| c.cl == 1),
        "{changes:#?}"
    );
    // A delete and an insert in separate statements are a new life.
    a.exec("DELETE FROM todos WHERE id = 'r'; INSERT INTO todos(id, title) VALUES ('r', 'four');")
        .unwrap();
    let changes = a.changes_since(0, None).unwrap().changes;
    assert!(
        changes
            .iter()
            .filter(|c| format!("{:?}", c.key).contains("\"r\""))
            .all(|c| c.cl == 3)
    );
}

#[test]
fn rolled_back_writes_are_never_sent() {
    let a = todo_db();
    let r: Result<(), pluresdb_core::Error> = a.transaction(|tx| {
        tx.run("INSERT INTO todos(id) VALUES ('ghost')", ())?;
        tx.put("ghost", &json!({}))?;
        Err(pluresdb_core::Error::invalid("no"))
    });
    assert!(r.is_err());
    a.exec("BEGIN; INSERT INTO todos(id) VALUES ('g2'); ROLLBACK;")
        .unwrap();
    a.run("INSERT INTO todos(id) VALUES ('real')", ()).unwrap();
    let changes = a.changes_since(0, None).unwrap().changes;
    let keys: Vec<String> = changes.iter().map(|c| format!("{:?}", c.key)).collect();
    assert!(
        keys.iter()
            .all(|k| !k.contains("ghost") && !k.contains("g2")),
        "{keys:?}"
    );
    assert!(keys.iter().any(|k| k.contains("real")));
    // A failing statement's captured rows are dropped too.
    a.exec("CREATE TABLE t2(id TEXT PRIMARY KEY NOT NULL, n INTEGER CHECK (n < 5))")
        .unwrap();
    a.sync_table("t2").unwrap();
    let err = a
        .run("INSERT INTO t2 VALUES ('a', 1), ('b', 9)", ())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Constraint);
    let changes = a.changes_since(0, None).unwrap().changes;
    assert!(
        changes.iter().all(|c| &*c.collection != "t2"),
        "{changes:#?}"
    );
}

#[test]
fn status_history_and_restore() {
    let a = todo_db();
    let b = todo_db();
    a.put("doc", &json!({"rev": 1})).unwrap();
    a.put("doc", &json!({"rev": 2})).unwrap();
    sync(&a, &b);
    b.put("doc", &json!({"rev": 3})).unwrap();
    sync(&a, &b);
    let h = a.history("doc").unwrap();
    assert_eq!(
        h.iter()
            .map(|v| v.data["rev"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(
        h[2].site,
        b.site_id(),
        "the merged version is recorded with its writer"
    );
    let restored = a.restore_node_version("doc", h[0].hlc).unwrap();
    assert_eq!(restored.data["rev"], 1);
    assert_eq!(a.history("doc").unwrap().len(), 4);
    let removed = a.compact_history(a.history("doc").unwrap()[3].hlc).unwrap();
    assert_eq!(removed, 3);
    assert_eq!(
        a.history("doc").unwrap().len(),
        1,
        "the newest version stays"
    );
    let status = b.sync_status().unwrap();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].site, a.site_id());
    assert!(status[0].received > 0 && status[0].cursor > 0);
    let vv = b.version_vector().unwrap();
    assert_eq!(vv.get(&a.site_id()), b.peer_cursor(a.site_id()).unwrap());
    assert_eq!(vv.get(&b.site_id()), b.db_version().unwrap());
}

#[test]
fn restoring_a_time_two_versions_share_restores_the_newer() {
    let (a, b) = (todo_db(), todo_db());
    b.put("n", &json!({"b": 1})).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    a.put("n", &json!({"a": 1})).unwrap();
    sync(&a, &b);
    // A's write, then B's older field merged into it: both at the time of A's write.
    let h = a.history("n").unwrap();
    let datas: Vec<_> = h.iter().map(|v| Json::Object(v.data.clone())).collect();
    assert_eq!(datas, [json!({"a": 1}), json!({"a": 1, "b": 1})]);
    assert_eq!(h[0].hlc, h[1].hlc);
    let restored = a.restore_node_version("n", h[1].hlc).unwrap();
    assert_eq!(Json::Object(restored.data), json!({"a": 1, "b": 1}));
}

#[test]
fn remote_changes_fire_subscriptions() {
    let a = todo_db();
    let b = todo_db();
    let stream = b.on_change();
    a.put("n", &json!({"x": 1})).unwrap();
    a.run("INSERT INTO todos(id) VALUES ('r')", ()).unwrap();
    sync(&a, &b);
    let got = stream.drain();
    assert!(
        got.iter().any(
            |c| matches!(c, pluresdb_core::Change::Node(n) if n.id == "n" && n.node.is_some())
        ),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|c| matches!(c, pluresdb_core::Change::Row(r) if r.table == "todos")),
        "{got:?}"
    );
}

#[test]
fn file_databases_keep_their_versions_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let b = todo_db();
    {
        let a = Database::open(&path).unwrap();
        a.exec("CREATE TABLE todos(id TEXT PRIMARY KEY NOT NULL, title TEXT NOT NULL DEFAULT '', done INTEGER NOT NULL DEFAULT 0)").unwrap();
        a.sync_table("todos").unwrap();
        a.run("INSERT INTO todos(id) VALUES ('1')", ()).unwrap();
        sync(&a, &b);
    }
    let a = Database::open(&path).unwrap();
    let before = a.db_version().unwrap();
    a.run("INSERT INTO todos(id) VALUES ('2')", ()).unwrap();
    assert!(
        a.db_version().unwrap() > before,
        "versions keep increasing after reopen"
    );
    assert_eq!(a.synced_tables().unwrap(), ["todos"]);
    sync(&a, &b);
    assert_eq!(dump(&a), dump(&b));
}

#[test]
fn the_clock_mark_stored_covers_every_committed_write_and_the_clock_never_goes_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let stored = |db: &Database| -> i64 {
        let row = db.get(
            "SELECT value FROM _pluresdb_meta WHERE key = 'last_hlc'",
            (),
        );
        row.unwrap().unwrap().get(0).unwrap()
    };
    let last = {
        let db = Database::open(&path).unwrap();
        let last = db
            .transaction(|tx| {
                // The first write stores the mark and is rolled back with its savepoint.
                let undone = tx.transaction(|t| {
                    t.put("undone", &json!({"v": 0}))?;
                    Err::<(), _>(pluresdb_core::Error::invalid("undo"))
                });
                assert!(undone.is_err());
                let mut last = 0;
                for i in 0..40 {
                    last = tx
                        .put(&format!("n{i}"), &json!({"v": i}))?
                        .updated_at
                        .as_u64();
                    if i % 10 == 9 {
                        // Across several milliseconds.
                        std::thread::sleep(std::time::Duration::from_millis(40));
                    }
                }
                Ok::<_, pluresdb_core::Error>(last)
            })
            .unwrap();
        assert!(
            stored(&db) as u64 >= last,
            "the stored mark is behind a write"
        );
        last
    };
    let db = Database::open(&path).unwrap();
    let next = db.put("after", &json!({})).unwrap().updated_at.as_u64();
    assert!(next > last);
    drop(db);
    // Reopening quickly and writing, again and again, keeps the clock near the wall clock.
    let mut newest = pluresdb_core::Hlc::from_u64(next);
    for i in 0..100 {
        let db = Database::open(&path).unwrap();
        newest = db.put(&format!("r{i}"), &json!({})).unwrap().updated_at;
    }
    let lead = newest.millis().saturating_sub(pluresdb_crdt_now());
    assert!(lead < 20, "the clock ran {lead} ms ahead of the wall clock");
}

#[test]
fn a_write_made_right_after_another_process_wrote_the_file_loses_to_a_later_one_elsewhere() {
    // A command run just after the previous one on the same file (or a process started while
    // another writes it) starts its clock past the mark stored in the file. Had the mark been
    // kept ahead of the wall clock, its write would be stamped ahead too and win over another
    // device's write made after it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    Database::open(&path)
        .unwrap()
        .put("x", &json!({"v": "first"}))
        .unwrap();
    let a = Database::open(&path).unwrap();
    let b = Database::open(dir.path().join("b.db")).unwrap();
    let mine = a.put("x", &json!({"v": "a"})).unwrap().updated_at;
    std::thread::sleep(std::time::Duration::from_millis(30));
    let theirs = b.put("x", &json!({"v": "b"})).unwrap().updated_at;
    assert!(
        mine < theirs,
        "a write stamped {} ms ahead of a write made 30 ms after it",
        mine.millis().saturating_sub(theirs.millis())
    );
    sync(&a, &b);
    for db in [&a, &b] {
        let x = db.get_node("x").unwrap().unwrap();
        assert_eq!(Json::Object(x.data), json!({"v": "b"}));
    }
}

#[test]
fn a_table_synced_while_this_handle_waits_for_the_write_lock_is_captured() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = notes_and_other_handle(&dir.path().join("shared.db"));
    let locked = std::sync::Barrier::new(2);
    std::thread::scope(|s| {
        s.spawn(|| {
            // The other connection opts the table in while holding the write lock a while.
            b.transaction(|tx| {
                tx.sync_table("notes")?;
                locked.wait();
                std::thread::sleep(std::time::Duration::from_millis(300));
                Ok::<_, pluresdb_core::Error>(())
            })
            .unwrap();
        });
        locked.wait();
        // This transaction's BEGIN IMMEDIATE waits for that commit, then writes.
        a.transaction(|tx| tx.run("INSERT INTO notes VALUES ('n1', 'waited')", ()))
            .unwrap();
    });
    assert!(sends(&b, "body", "waited"));
}

#[test]
fn rows_a_failing_statement_keeps_are_sent() {
    // OR FAIL, in the statement or as a column's conflict clause, keeps the rows a statement
    // changed before it failed; an explicit transaction can then commit them.
    let (a, b) = pair(
        "CREATE TABLE t(id TEXT PRIMARY KEY NOT NULL, n INTEGER NOT NULL);
         CREATE TABLE u(id TEXT PRIMARY KEY NOT NULL, n INTEGER NOT NULL ON CONFLICT FAIL);",
        &["t", "u"],
    );
    a.exec("INSERT INTO t VALUES ('x', 0)").unwrap();
    sync(&a, &b);
    a.exec("BEGIN").unwrap();
    assert_eq!(
        failure(
            &a,
            "INSERT OR FAIL INTO t VALUES ('a', 1), ('b', 2), ('x', 3), ('c', 4)"
        ),
        ErrorKind::Constraint
    );
    // Rows x and a are updated, then b fails.
    assert_eq!(
        failure(
            &a,
            "UPDATE OR FAIL t SET n = CASE id WHEN 'b' THEN NULL ELSE n + 10 END"
        ),
        ErrorKind::Constraint
    );
    assert_eq!(
        failure(&a, "INSERT INTO u VALUES ('p', 1), ('q', NULL), ('r', 3)"),
        ErrorKind::Constraint
    );
    // An ordinary failing statement still keeps (and sends) nothing.
    assert_eq!(
        failure(&a, "INSERT INTO t VALUES ('d', 5), ('x', 6)"),
        ErrorKind::Constraint
    );
    a.exec("COMMIT").unwrap();
    let rows: Vec<(String, i64)> = a.all_as("SELECT id, n FROM t ORDER BY id", ()).unwrap();
    assert_eq!(
        rows,
        [("a".into(), 11), ("b".into(), 2), ("x".into(), 10)],
        "SQLite's OR FAIL semantics"
    );
    assert_eq!(a.all("SELECT id FROM u", ()).unwrap().len(), 1);
    sync(&a, &b);
    assert_eq!(dump(&a), dump(&b));
    // Outside a transaction the kept rows commit, as they do in SQLite; streamed too.
    a.exec("INSERT INTO u VALUES ('s', 1), ('v', NULL)")
        .unwrap_err();
    let items: Vec<_> = a
        .iterate_as::<(String,)>(
            "INSERT OR FAIL INTO t VALUES ('e', 1), ('x', 2) RETURNING id",
            (),
        )
        .unwrap()
        .collect();
    // SQLite runs the whole statement before it returns the first row.
    assert!(matches!(&items[..], [Err(_)]), "{items:?}");
    assert_eq!(a.all("SELECT id FROM u", ()).unwrap().len(), 2);
    assert_eq!(a.all("SELECT id FROM t", ()).unwrap().len(), 4);
    sync(&a, &b);
    assert_eq!(dump(&a), dump(&b));
}

#[test]
fn a_failed_statement_whose_triggers_wrote_sends_nothing() {
    let (a, b) = pair(
        "CREATE TABLE t(id TEXT PRIMARY KEY NOT NULL, n INTEGER CHECK (n > 0));
         CREATE TABLE audit(what TEXT);
         CREATE TRIGGER t_ins AFTER INSERT ON t BEGIN INSERT INTO audit VALUES ('ins'); END;
         CREATE TRIGGER t_del AFTER DELETE ON t BEGIN INSERT INTO audit VALUES ('del'); END;
         CREATE TRIGGER t_keep BEFORE DELETE ON t WHEN old.id = 'keep'
             BEGIN SELECT RAISE(ABORT, 'kept'); END;",
        &["t"],
    );
    a.exec("INSERT INTO t VALUES ('x', 1), ('keep', 2)")
        .unwrap();
    sync(&a, &b);
    // The triggers wrote for the first row, then the statement failed and SQLite undid it all.
    a.exec("INSERT INTO t VALUES ('a', 1), ('b', -1)")
        .unwrap_err();
    a.exec("BEGIN; INSERT INTO t VALUES ('c', 1), ('d', -1)")
        .unwrap_err();
    a.exec("COMMIT").unwrap();
    a.exec("DELETE FROM t").unwrap_err();
    assert_eq!(a.all("SELECT id FROM t", ()).unwrap().len(), 2);
    sync(&a, &b);
    assert_eq!(dump(&a), dump(&b));
}

#[test]
fn a_statement_that_rolls_back_the_transaction_leaves_nothing_of_it_to_send() {
    let (a, b) = pair(
        "CREATE TABLE t(id TEXT PRIMARY KEY NOT NULL, n INTEGER);
         CREATE TABLE plain(v INTEGER NOT NULL)",
        &["t"],
    );
    a.exec("INSERT INTO t VALUES ('k', 1)").unwrap();
    sync(&a, &b);
    a.exec("BEGIN; INSERT INTO t VALUES ('x', 1); UPDATE t SET n = 5 WHERE id = 'k'")
        .unwrap();
    a.exec("INSERT OR ROLLBACK INTO t VALUES ('k', 2)")
        .unwrap_err();
    assert!(!a.in_transaction());
    a.exec("INSERT INTO t VALUES ('y', 1)").unwrap();
    sync(&a, &b);
    assert_eq!(dump(&a), dump(&b));
    // A flush inside a statement that SQLite then undoes (pluresdb_sync_table in a failing
    // write) would lose the transaction's earlier changes: its commit is refused instead.
    a.exec("BEGIN; INSERT INTO t VALUES ('lost', 1)").unwrap();
    a.exec("INSERT INTO plain VALUES (pluresdb_sync_table('t')), (NULL)")
        .unwrap_err();
    let err = a.exec("COMMIT").unwrap_err();
    assert!(err.message().contains("roll the transaction back"), "{err}");
    assert!(
        a.all("SELECT id FROM t WHERE id = 'lost'", ())
            .unwrap()
            .is_empty()
    );
    sync(&a, &b);
    assert_eq!(dump(&a), dump(&b));
}

#[test]
fn a_field_updated_after_its_row_was_created_keeps_its_own_version() {
    // The creation and the update reach the sync records in one fold, as one record.
    let (a, b) = (todo_db(), todo_db());
    let tick = || std::thread::sleep(std::time::Duration::from_millis(5));
    a.run("INSERT INTO todos(id, title) VALUES ('r', 'first')", ())
        .unwrap();
    tick();
    b.run("INSERT INTO todos(id, title) VALUES ('r', 'other')", ())
        .unwrap();
    tick();
    a.run("UPDATE todos SET title = 'last' WHERE id = 'r'", ())
        .unwrap();
    // Asked for what came after the creation's transaction: the update.
    let since = a.db_version().unwrap() - 1;
    let changes = a.changes_since(since, None).unwrap().changes;
    assert!(changes.iter().any(|c| &*c.field == "title"), "{changes:#?}");
    sync(&a, &b);
    for db in [&a, &b] {
        assert_eq!(
            db.value("SELECT title FROM todos WHERE id = 'r'", ())
                .unwrap(),
            Value::Text("last".into())
        );
    }
}

/// Flushes in the change log not yet folded into the sync records.
fn logged(db: &Database) -> i64 {
    db.value("SELECT count(*) FROM _pluresdb_clock_log", ())
        .unwrap()
        .as_i64()
        .unwrap()
}

#[test]
fn logged_changes_are_folded_before_any_handle_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let (path, a) = synced_file(&dir, NOTES, "notes");
    a.transaction(|tx| {
        for i in 0..3 {
            tx.run("INSERT INTO notes VALUES (?1, 'first')", (format!("n{i}"),))?;
        }
        tx.run("UPDATE notes SET body = 'second' WHERE id = 'n1'", ())?;
        Ok::<_, pluresdb_core::Error>(())
    })
    .unwrap();
    assert_eq!(logged(&a), 1, "one transaction, one log record");
    // Another handle (as another process would) reads them: it folds the log first.
    let b = Database::open(&path).unwrap();
    assert!(sends(&b, "body", "second"));
    assert_eq!(logged(&a), 0);
    a.run("UPDATE notes SET body = 'third' WHERE id = 'n2'", ())
        .unwrap();
    // A read-only handle cannot fold: it says so instead of reading records without them.
    let ro = OpenOptions::new().read_only(true).open(&path).unwrap();
    let err = ro.changes_since(0, None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ReadOnly);
    assert!(err.message().contains("open it writable"), "{err}");
    a.fold_change_log().unwrap();
    assert_eq!(logged(&a), 0);
    assert!(sends(&ro, "body", "third"));
    // What the fold recorded is what a peer needs: merged, the peer has the same rows.
    let peer = with_synced(NOTES, &["notes"]);
    a.run("DELETE FROM notes WHERE id = 'n0'", ()).unwrap();
    sync(&a, &peer);
    assert_eq!(dump(&a), dump(&peer));
    assert_eq!(peer.all("SELECT id FROM notes", ()).unwrap().len(), 2);
}

#[test]
fn a_commit_that_fills_the_log_folds_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_path, a) = synced_file(&dir, NOTES, "notes");
    a.run("INSERT INTO notes VALUES ('small', '')", ()).unwrap();
    assert_eq!(logged(&a), 1);
    // 2 KB keys: 4,500 rows log about 9 MiB, past the 8 MiB bound.
    let pad = "k".repeat(2048);
    a.transaction(|tx| {
        let insert = tx.prepare("INSERT INTO notes VALUES (?1, '')")?;
        for i in 0..4500 {
            insert.run((format!("{pad}{i}"),))?;
        }
        Ok::<_, pluresdb_core::Error>(())
    })
    .unwrap();
    // Folded when the log filled (what the transaction wrote after that may wait).
    assert!(logged(&a) <= 1);
    a.fold_change_log().unwrap();
    assert_eq!(logged(&a), 0);
    let rows: std::collections::BTreeSet<String> = (a.changes_since(0, None).unwrap().changes)
        .into_iter()
        .filter(|c| &*c.collection == "notes")
        .map(|c| format!("{:?}", c.key))
        .collect();
    assert_eq!(rows.len(), 4501);
}

#[test]
fn a_format_1_file_gains_the_change_log_when_opened_writable() {
    let dir = tempfile::tempdir().unwrap();
    let (path, a) = synced_file(&dir, NOTES, "notes");
    a.run("INSERT INTO notes VALUES ('old', 'x')", ()).unwrap();
    a.fold_change_log().unwrap();
    a.exec(
        "DROP TABLE _pluresdb_clock_log;
         UPDATE _pluresdb_meta SET value = 1 WHERE key = 'format_version'",
    )
    .unwrap();
    drop(a);
    // Read-only, format 1 has no log and its records are complete.
    let ro = OpenOptions::new().read_only(true).open(&path).unwrap();
    assert!(sends(&ro, "body", "x"));
    drop(ro);
    let a = Database::open(&path).unwrap();
    a.run("INSERT INTO notes VALUES ('new', 'y')", ()).unwrap();
    assert_eq!(logged(&a), 1);
    assert!(sends(&a, "body", "x") && sends(&a, "body", "y"));
    assert_eq!(
        a.value(
            "SELECT value FROM _pluresdb_meta WHERE key = 'format_version'",
            ()
        )
        .unwrap()
        .as_i64(),
        Some(pluresdb_core::FORMAT_VERSION)
    );
}

// ----- How edges are stored: placeholder rows for ends merged before their nodes, and the
// upgrade of files that stored the names (formats 1 and 2). -----

fn reached(db: &Database, from: &str) -> Vec<String> {
    let walk = db.traverse(&Traverse::from([from])).unwrap();
    let mut ids: Vec<String> = walk.ids().map(str::to_owned).collect();
    ids.sort();
    ids
}

#[test]
fn an_edge_merged_before_its_nodes_waits_for_them_and_is_not_sent_on_as_nodes() {
    let a = Database::open_in_memory().unwrap();
    a.put("ada", &json!({"name": "Ada"})).unwrap();
    a.put("alan", &json!({"name": "Alan"})).unwrap();
    a.link("ada", "inspired", "alan", Some(&json!({"how": "notes"})))
        .unwrap();
    let all = a.changes_since(0, None).unwrap().changes;
    let (edges, nodes): (Vec<ChangeRecord>, Vec<ChangeRecord>) =
        all.into_iter().partition(|c| &*c.collection == EDGES);
    assert!(!edges.is_empty() && !nodes.is_empty());

    let b = Database::open_in_memory().unwrap();
    // b's graph is loaded first, so it catches up with the merges below through its log.
    b.put("other", &json!({})).unwrap();
    assert!(reached(&b, "other").is_empty());
    b.delete("other").unwrap();
    b.apply_changes(&edges).unwrap();
    // The edge is stored, its ends are not nodes yet: it waits, hidden.
    let stored = |db: &Database| {
        db.value("SELECT count(*) FROM _pluresdb_edges WHERE cl = 1", ())
            .unwrap()
    };
    assert_eq!(stored(&b), Value::Integer(1));
    assert!(b.list("").unwrap().is_empty());
    assert_eq!(b.node_count().unwrap(), 0);
    assert_eq!(b.edge_count().unwrap(), 0);
    assert!(b.get_edge("ada", "inspired", "alan").unwrap().is_none());
    assert!(b.degree("ada", Direction::Out, None).is_err());
    // A third replica gets the edge from b, and no nodes (b has none to give).
    let c = Database::open_in_memory().unwrap();
    push(&b, &c);
    assert!(c.list("").unwrap().is_empty());
    assert_eq!(stored(&c), Value::Integer(1));
    assert!(c.get_edge("ada", "inspired", "alan").unwrap().is_none());

    // The nodes arrive: the edge shows, in the graph b loaded before too.
    b.apply_changes(&nodes).unwrap();
    assert_eq!(dump(&a), dump(&b));
    assert_eq!(reached(&b, "ada"), ["alan"]);
    let edge = b.get_edge("ada", "inspired", "alan").unwrap().unwrap();
    assert_eq!(json!(edge.data), json!({"how": "notes"}));
    // A node put locally over a placeholder is a new node, and syncs; the edge shows once
    // its other node is there too.
    c.put("ada", &json!({"name": "Ada L."})).unwrap();
    assert_eq!(c.node_count().unwrap(), 1);
    assert_eq!(
        c.get_node("ada").unwrap().unwrap().data["name"],
        json!("Ada L.")
    );
    assert_eq!(c.edge_count().unwrap(), 0);
    push(&c, &a);
    push(&a, &c);
    assert_eq!(dump(&a), dump(&c));
    assert_eq!(reached(&c, "ada"), ["alan"]);
}

/// What every reader of `db` shows of the edges at `ids`: the edge view and count, and per
/// node its edges, neighbours, degree, traversal and Cypher matches (or that it is unknown).
fn edges_seen(db: &Database, ids: &[&str]) -> String {
    let mut out = format!(
        "view {:?} count {}\n",
        db.all_as::<(String, String, String)>(
            "SELECT from_id, relation, to_id FROM pluresdb_edges ORDER BY 1, 2, 3",
            ()
        )
        .unwrap(),
        db.edge_count().unwrap()
    );
    for id in ids {
        let Ok(edges) = db.edges(id, Direction::Both, None) else {
            assert!(db.get_node(id).unwrap().is_none());
            assert!(db.degree(id, Direction::Both, None).is_err());
            out += &format!("{id}: unknown\n");
            continue;
        };
        let edges: Vec<String> = edges
            .iter()
            .map(|e| format!("{} {} {} {}", e.from, e.relation, e.to, json!(e.data)))
            .collect();
        let neighbors: Vec<String> = db
            .neighbors(id, Direction::Both, None)
            .unwrap()
            .into_iter()
            .map(|n| n.id)
            .collect();
        let cypher = db
            .cypher(
                "MATCH (a)-[r]-(b) WHERE a.id = $id RETURN b.id, r.how ORDER BY b.id",
                &json!({ "id": id }),
            )
            .unwrap()
            .rows;
        out += &format!(
            "{id}: edges {edges:?} neighbors {neighbors:?} degree {} reached {:?} cypher {cypher:?}\n",
            db.degree(id, Direction::Both, None).unwrap(),
            reached(db, id),
        );
    }
    out
}

#[test]
fn a_link_made_while_another_device_deleted_its_node_stays_hidden_until_the_node_lives() {
    let (a, b) = (
        Database::open_in_memory().unwrap(),
        Database::open_in_memory().unwrap(),
    );
    for id in ["x", "y", "z"] {
        a.put(id, &json!({})).unwrap();
    }
    a.link("z", "knows", "y", None).unwrap();
    sync(&a, &b);
    // Both graphs are loaded, so they catch up with what follows change by change.
    assert_eq!(reached(&a, "z"), ["y"]);
    assert_eq!(reached(&b, "z"), ["y"]);
    let before = edges_seen(&a, &["x", "y", "z"]);

    // The edge events each device's subscribers are told, in order: "+from to" shown (linked
    // or changed), "-from to" gone.
    let told = |db: &Database| {
        let told = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let sink = told.clone();
        db.on_every_change(move |c| {
            if let Change::Edge(e) = c {
                let sign = if e.edge.is_some() { '+' } else { '-' };
                sink.lock()
                    .unwrap()
                    .push(format!("{sign}{} {}", e.from, e.to));
            }
        });
        move || std::mem::take(&mut *told.lock().unwrap())
    };
    let (told_a, told_b) = (told(&a), told(&b));
    // Concurrently: a deletes x, b links y to it (and to z, which stays).
    a.delete("x").unwrap();
    b.link("y", "knows", "x", Some(&json!({"how": "late"})))
        .unwrap();
    b.link("y", "knows", "z", Some(&json!({"how": "kept"})))
        .unwrap();
    sync(&a, &b);
    sync(&a, &b);
    assert_eq!(dump(&a), dump(&b));
    let seen = edges_seen(&a, &["x", "y", "z"]);
    assert_eq!(seen, edges_seen(&b, &["x", "y", "z"]));
    assert_ne!(seen, before);
    // No reader shows the link to x, which is gone; the one to z is there.
    assert!(!seen.contains("late") && !seen.contains("\"x\""), "{seen}");
    assert!(
        seen.contains("y knows z") && seen.contains("kept"),
        "{seen}"
    );
    assert!(seen.contains("x: unknown"), "{seen}");
    // a never showed the link to x; b showed it, and hid it when x's delete merged.
    assert_eq!(told_a(), ["+y z"]);
    assert_eq!(told_b(), ["+y x", "+y z", "-y x"]);
    for db in [&a, &b] {
        assert!(db.get_edge("y", "knows", "x").unwrap().is_none());
        assert!(!db.unlink("y", "knows", "x").unwrap());
        assert_eq!(db.edge_count().unwrap(), 2);
    }
    // Read afresh (a graph built from the tables), the same shows.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let c = Database::open(&path).unwrap();
    sync(&a, &c);
    drop(c);
    let c = Database::open(&path).unwrap();
    assert_eq!(edges_seen(&c, &["x", "y", "z"]), seen);

    // x put again (same id): the link nobody unlinked shows, on every device.
    a.put("x", &json!({"back": true})).unwrap();
    sync(&a, &b);
    sync(&a, &c);
    assert_eq!(told_a(), ["+y x"]);
    assert_eq!(told_b(), ["+y x"]);
    for db in [&a, &b, &c] {
        let edge = db
            .get_edge("y", "knows", "x")
            .unwrap()
            .expect("shown again");
        assert_eq!(json!(edge.data), json!({"how": "late"}));
        assert_eq!(reached(db, "y"), ["x", "z"]);
        assert_eq!(db.edge_count().unwrap(), 3);
    }
    assert_eq!(edges_seen(&a, &["x", "y"]), edges_seen(&b, &["x", "y"]));
    // Deleted here, x takes the link with it: put again, it has none.
    b.delete("x").unwrap();
    sync(&a, &b);
    a.put("x", &json!({})).unwrap();
    sync(&a, &b);
    for db in [&a, &b] {
        assert!(db.get_edge("y", "knows", "x").unwrap().is_none());
        assert_eq!(reached(db, "y"), ["z"]);
        assert_eq!(reached(db, "x"), Vec::<String>::new());
    }
}

#[test]
fn a_format_5_file_gets_the_edge_view_of_format_6_and_keeps_triggers_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("five.db");
    {
        let db = Database::open(&path).unwrap();
        for id in ["x", "y"] {
            db.put(id, &json!({})).unwrap();
        }
        db.link("y", "r", "x", None).unwrap();
        // x dead with its edge live (as a merged delete leaves a concurrent link), format 5's
        // view, and a trigger of the user's on it.
        db.exec(
            "UPDATE _pluresdb_nodes SET cl = 2 WHERE id = 'x';
             DROP VIEW pluresdb_edges;
             CREATE VIEW pluresdb_edges AS
                 SELECT src AS from_id, rel AS relation, dst AS to_id, data, created_hlc,
                        updated_hlc
                 FROM _pluresdb_edges_named WHERE cl % 2 = 1;
             CREATE TABLE gone(id TEXT);
             create trigger forget instead of delete on pluresdb_edges
                 begin insert into gone values (old.from_id); end;
             UPDATE _pluresdb_meta SET value = 5 WHERE key = 'format_version';",
        )
        .unwrap();
        assert_eq!(
            db.value("SELECT count(*) FROM pluresdb_edges", ()).unwrap(),
            Value::Integer(1)
        );
    }
    let db = Database::open(&path).unwrap();
    assert_eq!(
        db.value("SELECT count(*) FROM pluresdb_edges", ()).unwrap(),
        Value::Integer(0)
    );
    db.exec("UPDATE _pluresdb_nodes SET cl = 3 WHERE id = 'x'; DELETE FROM pluresdb_edges")
        .unwrap();
    assert_eq!(
        db.value("SELECT group_concat(id) FROM gone", ()).unwrap(),
        Value::Text("y".into())
    );
}

/// Rewrites a file written by this build into format 2's edge table (names as text, clocks in
/// `_pluresdb_clock`), as an older PluresDB left it, with one extra edge whose source never
/// had a node row here.
fn downgrade_to_format_2(db: &Database) {
    db.exec(
        "DROP VIEW pluresdb_edges;
         CREATE TABLE named_edges (
             eid         INTEGER PRIMARY KEY,
             src         TEXT NOT NULL,
             rel         TEXT NOT NULL,
             dst         TEXT NOT NULL,
             data        TEXT NOT NULL DEFAULT '{}',
             created_hlc INTEGER NOT NULL,
             updated_hlc INTEGER NOT NULL,
             site        BLOB NOT NULL,
             cl          INTEGER NOT NULL DEFAULT 1,
             UNIQUE (src, rel, dst)
         );
         INSERT INTO named_edges
             SELECT eid, src, rel, dst, data, created_hlc, updated_hlc, site, cl
             FROM _pluresdb_edges_named;
         INSERT INTO _pluresdb_clock(tbl, key, cl, seq, ver)
             SELECT 2, pluresdb_pack(src, rel, dst), cl, seq, ver
             FROM _pluresdb_edges_named WHERE ver IS NOT NULL;
         INSERT INTO named_edges(src, rel, dst, data, created_hlc, updated_hlc, site, cl)
             VALUES ('ghost', 'haunts', 'ada', '{}', 1, 1, zeroblob(16), 1);
         DROP VIEW _pluresdb_edges_named;
         DROP TABLE _pluresdb_edges;
         DROP TABLE _pluresdb_relations;
         DELETE FROM _pluresdb_nodes WHERE cl = 0;
         ALTER TABLE named_edges RENAME TO _pluresdb_edges;
         CREATE INDEX _pluresdb_edges_in ON _pluresdb_edges(dst, rel, src);
         CREATE VIEW pluresdb_edges AS
             SELECT src AS from_id, rel AS relation, dst AS to_id, data, created_hlc, updated_hlc
             FROM _pluresdb_edges WHERE cl % 2 = 1;
         UPDATE _pluresdb_meta SET value = 2 WHERE key = 'format_version';",
    )
    .unwrap();
}

#[test]
fn a_format_2_file_keeps_its_edges_their_sync_state_and_its_graph() {
    an_older_file_keeps_its_edges(downgrade_to_format_2);
}

/// Rewrites a file written by this build into format 3's edge table (by id, clocks in
/// `_pluresdb_clock`), with one extra edge whose source has only a placeholder row.
fn downgrade_to_format_3(db: &Database) {
    db.exec(
        "INSERT INTO _pluresdb_clock(tbl, key, cl, seq, ver)
             SELECT 2, pluresdb_pack(src, rel, dst), cl, seq, ver
             FROM _pluresdb_edges_named WHERE ver IS NOT NULL;
         INSERT INTO _pluresdb_nodes(id, data, created_hlc, updated_hlc, site, cl)
             VALUES ('ghost', '{}', 0, 0, zeroblob(16), 0);
         INSERT INTO _pluresdb_relations(name) VALUES ('haunts');
         INSERT INTO _pluresdb_edges(src, rel, dst, data, created_hlc, updated_hlc, site, cl)
             SELECT (SELECT rid FROM _pluresdb_nodes WHERE id = 'ghost'),
                    (SELECT id FROM _pluresdb_relations WHERE name = 'haunts'),
                    (SELECT rid FROM _pluresdb_nodes WHERE id = 'ada'),
                    '{}', 1, 1, zeroblob(16), 1;
         DROP VIEW pluresdb_edges;
         DROP VIEW _pluresdb_edges_named;
         ALTER TABLE _pluresdb_edges DROP COLUMN ver;
         ALTER TABLE _pluresdb_edges DROP COLUMN seq;
         UPDATE _pluresdb_meta SET value = 3 WHERE key = 'format_version';",
    )
    .unwrap();
}

#[test]
fn a_format_3_file_moves_its_edge_clocks_into_the_edge_rows() {
    an_older_file_keeps_its_edges(downgrade_to_format_3);
}

/// A file `downgrade` rewrote into an older edge layout: opened writable, it is upgraded with
/// its edges, their sync state and its graph as they were.
fn an_older_file_keeps_its_edges(downgrade: fn(&Database)) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let peer = Database::open_in_memory().unwrap();
    let before = {
        let db = Database::open(&path).unwrap();
        for id in ["ada", "alan", "grace"] {
            db.put(id, &json!({"name": id})).unwrap();
        }
        db.link("ada", "inspired", "alan", Some(&json!({"how": "notes"})))
            .unwrap();
        db.link("alan", "knew", "grace", None).unwrap();
        db.link("grace", "knew", "ada", None).unwrap();
        db.unlink("grace", "knew", "ada").unwrap();
        push(&db, &peer);
        let before = dump(&db);
        downgrade(&db);
        // A view of the user's on the edge view, which the upgrade must keep working.
        db.exec("CREATE VIEW my_edges AS SELECT from_id, to_id FROM pluresdb_edges")
            .unwrap();
        before
    };
    // Read-only, the old layout cannot be read (nor upgraded): the error says what to do.
    let err = OpenOptions::new()
        .read_only(true)
        .open(&path)
        .expect_err("an old layout is refused read-only");
    assert_eq!(err.kind(), ErrorKind::ReadOnly);
    assert!(err.message().contains("open it writable once"), "{err}");
    let db = Database::open(&path).unwrap();
    assert_eq!(
        db.value(
            "SELECT value FROM _pluresdb_meta WHERE key = 'format_version'",
            ()
        )
        .unwrap()
        .as_i64(),
        Some(pluresdb_core::FORMAT_VERSION)
    );
    // The edges as they were; the one from a node this file never had is kept, hidden.
    let ghosts = |db: &Database| {
        db.value(
            "SELECT count(*) FROM _pluresdb_edges_named WHERE src = 'ghost' AND cl = 1",
            (),
        )
        .unwrap()
    };
    assert_eq!(dump(&db), before);
    assert_eq!(ghosts(&db), Value::Integer(1));
    assert!(db.get_node("ghost").unwrap().is_none());
    assert_eq!(reached(&db, "ada"), ["alan", "grace"]);
    assert_eq!(
        db.value("SELECT count(*) FROM my_edges", ()).unwrap(),
        Value::Integer(2)
    );
    // The peer that synced before the upgrade is not sent anything again.
    assert_eq!(push(&db, &peer), 0);
    // Writes after the upgrade sync as usual, and a new peer gets everything.
    db.unlink("ada", "inspired", "alan").unwrap();
    db.link("grace", "knew", "ada", None).unwrap();
    assert!(push(&db, &peer) > 0);
    let fresh = Database::open_in_memory().unwrap();
    push(&db, &fresh);
    assert_eq!(dump(&db), dump(&peer));
    assert_eq!(dump(&peer), dump(&fresh));
    assert_eq!(reached(&db, "grace"), ["ada"]);
    // The ghost node put: its edge (which has no clock, so stays here) shows.
    db.put("ghost", &json!({})).unwrap();
    assert!(db.get_edge("ghost", "haunts", "ada").unwrap().is_some());
    assert_eq!(reached(&db, "ghost"), ["ada"]);
}

#[test]
fn edges_linked_in_bulk_carry_their_versions_and_merge_like_single_links() {
    let a = Database::open_in_memory().unwrap();
    let b = Database::open_in_memory().unwrap();
    for id in ["x", "y", "z"] {
        a.put(id, &json!({})).unwrap();
    }
    a.link_many([
        ("x", "r", "y", Some(&json!({"w": 1}))),
        ("y", "r", "z", None),
    ])
    .unwrap();
    let set = a.changes_since(0, None).unwrap();
    let edge_changes: Vec<&ChangeRecord> = set
        .changes
        .iter()
        .filter(|c| &*c.collection == EDGES)
        .collect();
    // A creation and a data field per edge, each stamped by a's site.
    assert_eq!(edge_changes.len(), 4, "{edge_changes:#?}");
    assert!(
        edge_changes
            .iter()
            .all(|c| c.version.site == a.site_id() && c.cl == 1)
    );
    push(&a, &b);
    assert_eq!(dump(&a), dump(&b));
    // A later single link on b wins over the bulk one; a later bulk update on a wins back.
    b.link("x", "r", "y", Some(&json!({"w": 2}))).unwrap();
    push(&b, &a);
    assert_eq!(a.get_edge("x", "r", "y").unwrap().unwrap().data["w"], 2);
    a.link_many([("x", "r", "y", Some(&json!({"w": 3})))])
        .unwrap();
    assert_eq!(push(&a, &b), 1, "only the changed field is sent");
    assert_eq!(b.get_edge("x", "r", "y").unwrap().unwrap().data["w"], 3);
    // A delete on b and a bulk re-link on a after it: the re-link is a later life.
    b.unlink("y", "r", "z").unwrap();
    push(&b, &a);
    assert!(a.get_edge("y", "r", "z").unwrap().is_none());
    a.link_many([("y", "r", "z", None)]).unwrap();
    push(&a, &b);
    push(&b, &a);
    assert!(b.get_edge("y", "r", "z").unwrap().is_some());
    assert_eq!(dump(&a), dump(&b));
    assert_eq!(push(&a, &b) + push(&b, &a), 0);
}

/// A table whose columns are all NOT NULL without a DEFAULT: a row merged without one of its
/// columns fails.
const STRICT: &str = "CREATE TABLE strict(id TEXT PRIMARY KEY NOT NULL, a TEXT NOT NULL, \
                      b TEXT NOT NULL, c INTEGER NOT NULL)";

/// A database file `name` in `dir` with `strict` synced, after the statements `more`.
fn strict_file(dir: &tempfile::TempDir, name: &str, more: &str) -> Database {
    let db = Database::open(dir.path().join(name)).unwrap();
    db.exec(STRICT).unwrap();
    db.exec(more).unwrap();
    db.sync_table("strict").unwrap();
    db
}

/// Random writes to `strict`: `inserts` new rows `{prefix}{n}`, then updates of some columns
/// of existing rows, deletes and re-inserts; `rnd(n)` gives numbers below `n`.
fn strict_writes(db: &Database, prefix: &str, inserts: u64, rnd: &mut impl FnMut(u64) -> u64) {
    db.transaction(|tx| {
        for n in 0..inserts {
            tx.run(
                "INSERT INTO strict(id, a, b, c) VALUES (?1, ?2, ?3, ?4)",
                (
                    format!("{prefix}{n}"),
                    rnd(1000) as i64,
                    "b",
                    rnd(100) as i64,
                ),
            )?;
        }
        let ids: Vec<(String,)> = tx.all_as("SELECT id FROM strict", ())?;
        for _ in 0..ids.len() / 2 {
            let (id,) = &ids[rnd(ids.len() as u64) as usize];
            let v = rnd(1000) as i64;
            let sql = match rnd(4) {
                0 => "UPDATE strict SET a = ?2 WHERE id = ?1",
                1 => "UPDATE strict SET b = ?2, c = c + 1 WHERE id = ?1",
                2 => "DELETE FROM strict WHERE id = ?1 AND ?2 IS NOT NULL",
                _ => "INSERT OR REPLACE INTO strict(id, a, b, c) VALUES (?1, ?2, 'r', 7)",
            };
            tx.run(sql, (id, v))?;
        }
        Ok::<_, pluresdb_core::Error>(())
    })
    .unwrap();
}

/// What `b` lacks from `a`, merged a batch of `batch` changes at a time, each batch in a
/// transaction of its own.
fn push_in_batches(a: &Database, b: &Database, batch: usize) {
    let since = b.peer_cursor(a.site_id()).unwrap();
    let db_version = a
        .for_each_change(since, Some(b.site_id()), batch, |changes| {
            b.apply_changes(changes).map(|_| ())
        })
        .unwrap();
    b.record_sync(
        a.site_id(),
        &SyncProgress {
            cursor: Some(db_version),
            ..Default::default()
        },
    )
    .unwrap();
}

#[test]
fn rows_of_not_null_columns_merge_whole_in_batches_of_any_size() {
    // Batches of 1, 2 and 3 changes, each merged in its own transaction: the reader never
    // splits a row's changes between batches, so each row is inserted whole. B added a
    // column `d NOT NULL DEFAULT` that A gains only later.
    for batch in 1..=3 {
        let dir = tempfile::tempdir().unwrap();
        let a = strict_file(&dir, "a.db", "");
        let b = strict_file(
            &dir,
            "b.db",
            "ALTER TABLE strict ADD COLUMN d TEXT NOT NULL DEFAULT 'none'",
        );
        let mut x = (batch as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut rnd = move |below: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % below
        };
        let common = |db: &Database| -> Vec<String> {
            db.all("SELECT id, a, b, c FROM strict ORDER BY id", ())
                .unwrap()
                .iter()
                .map(|r| r.to_json().to_string())
                .collect()
        };
        for round in 0..3 {
            strict_writes(&a, &format!("a{round}-"), 1 + rnd(30), &mut rnd);
            strict_writes(&b, &format!("b{round}-"), 1 + rnd(30), &mut rnd);
            push_in_batches(&a, &b, batch);
            push_in_batches(&b, &a, batch);
            assert_eq!(common(&a), common(&b), "batch {batch}, round {round}");
        }
        // B sets `d` on some rows; once A has `d`, it asks B for everything again and both
        // have the same rows.
        b.run("UPDATE strict SET d = 'from b' WHERE rowid % 2 = 0", ())
            .unwrap();
        push_in_batches(&b, &a, batch);
        a.exec("ALTER TABLE strict ADD COLUMN d TEXT NOT NULL DEFAULT 'none'")
            .unwrap();
        push_in_batches(&b, &a, batch);
        push_in_batches(&a, &b, batch);
        assert_eq!(dump(&a), dump(&b), "batch {batch}");
        assert!(dump(&a).contains("from b"));
    }
}

#[test]
fn a_row_made_again_by_a_peer_without_a_column_gets_that_columns_default() {
    // A lacks `d`. It deletes and inserts row r again (a new life); B merges both at once
    // while it still has r from its older life, whose `d` B had set. The new life has no
    // value of `d`: B gives it the DEFAULT, as an insert would (it kept the old life's
    // value, which no version covers, and the two never agreed once A added `d`).
    let dir = tempfile::tempdir().unwrap();
    let a = strict_file(&dir, "a.db", "");
    let b = strict_file(
        &dir,
        "b.db",
        "ALTER TABLE strict ADD COLUMN d TEXT NOT NULL DEFAULT 'none'",
    );
    a.run("INSERT INTO strict VALUES ('r', 'a', 'b', 1)", ())
        .unwrap();
    push_in_batches(&a, &b, 10);
    b.run("UPDATE strict SET d = 'old life'", ()).unwrap();
    push_in_batches(&b, &a, 10);
    a.run("DELETE FROM strict", ()).unwrap();
    a.run("INSERT INTO strict VALUES ('r', 'a2', 'b2', 2)", ())
        .unwrap();
    push_in_batches(&a, &b, 10);
    assert_eq!(
        b.value("SELECT d FROM strict", ()).unwrap(),
        Value::Text("none".into())
    );
    a.exec("ALTER TABLE strict ADD COLUMN d TEXT NOT NULL DEFAULT 'none'")
        .unwrap();
    push_in_batches(&b, &a, 10);
    push_in_batches(&a, &b, 10);
    assert_eq!(dump(&a), dump(&b));
}

#[test]
fn a_new_row_merged_without_a_not_null_column_is_refused_saying_which_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let a = strict_file(&dir, "a.db", "");
    let b = strict_file(&dir, "b.db", "");
    a.run("INSERT INTO strict VALUES ('r', 'a', 'b', 1)", ())
        .unwrap();
    let changes = a.changes_since(0, None).unwrap().changes;
    let without_b: Vec<ChangeRecord> = changes
        .iter()
        .filter(|c| &*c.field != "b")
        .cloned()
        .collect();
    let message = refused(&b.apply_changes(&without_b).unwrap(), "strict");
    assert!(
        message.contains("column \"b\"") && message.contains("NOT NULL without a DEFAULT"),
        "{message}"
    );
    assert!(
        message.contains("all the changes of a row in one call"),
        "{message}"
    );
    assert_eq!(
        b.value("SELECT count(*) FROM strict", ()).unwrap(),
        Value::Integer(0)
    );
    // All of them merge; then a change of one column updates the row in place.
    b.apply_changes(&changes).unwrap();
    a.run("UPDATE strict SET c = 2", ()).unwrap();
    let since = b.peer_cursor(a.site_id()).unwrap();
    let update = a.changes_since(since.max(1), None).unwrap().changes;
    assert!(update.iter().any(|c| &*c.field == "c"));
    b.apply_changes(&update).unwrap();
    assert_eq!(dump(&a), dump(&b));
    // A NULL value is a different failure: the generic error, naming the table.
    let mut null = update.clone();
    for c in &mut null {
        c.value = Some(Value::Null);
        c.version.hlc = pluresdb_core::Hlc::from_u64(c.version.hlc.as_u64() + 1);
    }
    let message = refused(&b.apply_changes(&null).unwrap(), "strict");
    assert!(
        message.contains("writing row [\"r\"] of strict") && !message.contains("DEFAULT"),
        "{message}"
    );
    assert_eq!(dump(&a), dump(&b), "nothing of the refused changes merged");
}

/// Writes `nodes` into `db` one `update_node` at a time (in one transaction), or with
/// `update_nodes`; returns how many nodes changed.
fn write_nodes(
    db: &Database,
    nodes: &[(&str, pluresdb_core::NodeUpdate<'_>)],
    bulk: bool,
) -> usize {
    if bulk {
        return db.update_nodes(nodes.iter().cloned()).unwrap();
    }
    db.transaction(|tx| {
        let mut changed = 0;
        for (id, update) in nodes {
            let before = tx.history(id)?.len();
            tx.update_node(id, update.clone())?;
            changed += usize::from(tx.history(id)?.len() > before);
        }
        Ok::<_, pluresdb_core::Error>(changed)
    })
    .unwrap()
}

#[test]
fn put_many_stores_versions_and_syncs_as_puts_in_a_loop_do() {
    use pluresdb_core::NodeUpdate;
    let put = |data| NodeUpdate {
        data: Some(data),
        ..NodeUpdate::default()
    };
    let (a1, b2, z, c1, deep, empty) = (
        json!({"z": 2, "a": 1}),
        json!({"b": 2}),
        json!({"a": 3}),
        json!({"c": 1}),
        json!({"k": {"y": [1, {"x": null}], "b": true}}),
        json!({}),
    );
    let vector = [0.5f32, 0.25];
    // More nodes than one statement inserts, with nodes that exist (alive and deleted) among
    // them, repeated ids, a type, a vector, and an update of a node that must exist.
    let many: Vec<String> = (0..300).map(|i| format!("m{i:03}")).collect();
    let mut nodes: Vec<(&str, NodeUpdate<'_>)> =
        many.iter().map(|id| (id.as_str(), put(&a1))).collect();
    nodes.splice(
        150..150,
        [
            ("n1", put(&a1)),
            ("alive", put(&b2)),
            ("n2", put(&empty)),
            ("n1", put(&z)),
            ("dead", put(&c1)),
            (
                "alive",
                NodeUpdate {
                    node_type: Some(Some("T")),
                    must_exist: true,
                    ..NodeUpdate::default()
                },
            ),
            (
                "n3",
                NodeUpdate {
                    data: Some(&deep),
                    node_type: Some(Some("Doc")),
                    vector: Some(Some(&vector)),
                    ..NodeUpdate::default()
                },
            ),
            ("m000", put(&a1)),
        ],
    );
    let (dir, mut dbs) = (tempfile::tempdir().unwrap(), Vec::new());
    for (i, bulk) in [false, true].into_iter().enumerate() {
        let db = Database::open(dir.path().join(format!("{i}.db"))).unwrap();
        db.put("alive", &json!({"b": 1})).unwrap();
        db.put("dead", &json!({"old": 1})).unwrap();
        db.delete("dead").unwrap();
        let stream = db.on_change();
        let changed = write_nodes(&db, &nodes, bulk);
        // 300 new, n1 twice, alive twice, n2, dead revived, n3; m000 again changes nothing.
        assert_eq!(changed, 307, "bulk: {bulk}");
        let events = stream
            .drain()
            .into_iter()
            .filter(|c| matches!(c, pluresdb_core::Change::Node(_)));
        assert_eq!(events.count(), 307, "bulk: {bulk}");
        dbs.push(db);
    }
    let (looped, bulk) = (&dbs[0], &dbs[1]);
    assert_eq!(dump(bulk), dump(looped));
    for id in ["n1", "n2", "n3", "alive", "dead", "m000", "m299"] {
        let versions = |db: &Database| {
            db.history(id)
                .unwrap()
                .into_iter()
                .map(|v| (v.deleted, v.node_type, v.data, v.vector))
                .collect::<Vec<_>>()
        };
        assert_eq!(versions(bulk), versions(looped), "{id}");
    }
    // Keys are stored sorted, whatever order they came in.
    let m = bulk
        .value("SELECT data FROM pluresdb_nodes WHERE id = 'm123'", ())
        .unwrap();
    assert_eq!(m, Value::Text(r#"{"a":1,"z":2}"#.into()));
    let n3 = bulk.get_node("n3").unwrap().unwrap();
    assert_eq!(
        (n3.node_type.as_deref(), n3.vector.as_deref()),
        (Some("Doc"), Some(&vector[..]))
    );
    // The same again changes nothing.
    assert_eq!(bulk.put_many([("n1", &z), ("m001", &a1)]).unwrap(), 0);
    // Another replica gets the same nodes, and a later write made elsewhere wins over them.
    let other = Database::open(dir.path().join("other.db")).unwrap();
    push(bulk, &other);
    assert_eq!(dump(&other), dump(bulk));
    other.put("m002", &json!({"c": 9})).unwrap();
    sync(&other, bulk);
    assert_eq!(bulk.get_node("m002").unwrap().unwrap().data["c"], 9);
    assert_eq!(dump(&other), dump(bulk));
}

#[test]
fn put_many_refuses_bad_input_and_writes_nothing() {
    let db = Database::open_in_memory().unwrap();
    db.put("kept", &json!({"v": 1})).unwrap();
    let ok = json!({"v": 2});
    let not_object = json!([1]);
    let err = db
        .put_many([("a", &ok), ("kept", &ok), ("b", &not_object)])
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.message().contains("node 3 (\"b\")"), "{err}");
    assert!(err.message().contains("must be a JSON object"), "{err}");
    let err = db.put_many([("a", &ok), ("", &ok)]).unwrap_err();
    assert!(err.message().contains("node 2"), "{err}");
    // A write that must find its node fails the whole call, after others were made in it.
    let err = db
        .update_nodes([
            (
                "a",
                pluresdb_core::NodeUpdate {
                    data: Some(&ok),
                    ..Default::default()
                },
            ),
            (
                "ghost",
                pluresdb_core::NodeUpdate {
                    node_type: Some(Some("T")),
                    must_exist: true,
                    ..Default::default()
                },
            ),
        ])
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let ids: Vec<String> = db.list("").unwrap().into_iter().map(|n| n.id).collect();
    assert_eq!(ids, ["kept"]);
    assert_eq!(db.get_node("kept").unwrap().unwrap().data["v"], 1);
    assert_eq!(db.history("a").unwrap().len(), 0);
    assert_eq!(db.put_many(std::iter::empty()).unwrap(), 0);
}

#[test]
fn defaults_written_as_names_are_the_strings_sqlite_reads_when_a_peer_lacks_their_column() {
    // SQLite reads `DEFAULT pending` and `DEFAULT "a"` as the strings 'pending' and 'a'. B's
    // table has two such columns that A's lacks; B merges A's rows (a new one, then a new life
    // of it) and gives those columns what an insert gives them.
    let dir = tempfile::tempdir().unwrap();
    let a = strict_file(&dir, "a.db", "");
    let b = strict_file(
        &dir,
        "b.db",
        "ALTER TABLE strict ADD COLUMN d TEXT DEFAULT pending;
         ALTER TABLE strict ADD COLUMN e TEXT DEFAULT \"a\";
         ALTER TABLE strict ADD COLUMN f TEXT DEFAULT CURRENT_DATE",
    );
    let defaults = |db: &Database| {
        db.all_as::<(String, String, bool)>(
            "SELECT d, e, f = CURRENT_DATE FROM strict ORDER BY id",
            (),
        )
        .unwrap()
    };
    let expected = vec![("pending".to_owned(), "a".to_owned(), true)];
    a.run("INSERT INTO strict VALUES ('r', 'x', 'y', 1)", ())
        .unwrap();
    push_in_batches(&a, &b, 10);
    assert_eq!(defaults(&b), expected);
    b.run("UPDATE strict SET d = 'old', e = 'old', f = 'old'", ())
        .unwrap();
    push_in_batches(&b, &a, 10);
    a.run("DELETE FROM strict", ()).unwrap();
    a.run("INSERT INTO strict VALUES ('r', 'x2', 'y2', 2)", ())
        .unwrap();
    push_in_batches(&a, &b, 10);
    assert_eq!(defaults(&b), expected);
}

#[test]
fn put_many_into_a_node_another_handle_made_at_the_same_time_merges_into_it() {
    // Two handles on one file (two processes, say) keep clocks of their own, each started
    // after the mark stored in the file: while the wall clock is behind that mark (set back,
    // or within the mark's millisecond) they hand out the same times. A node the other handle
    // made at the time of this put_many is not one this call made.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    {
        let db = Database::open(&path).unwrap();
        db.put("seed", &json!({})).unwrap();
    }
    {
        // The wall clock is a minute behind the stored mark.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute(
            "UPDATE _pluresdb_meta SET value = value + (60000 << 16) WHERE key = 'last_hlc'",
            [],
        )
        .unwrap();
    }
    let (a1, a2) = (
        Database::open(&path).unwrap(),
        Database::open(&path).unwrap(),
    );
    a1.put("x", &json!({"a": 1})).unwrap();
    assert_eq!(a2.put_many([("x", &json!({"b": 2}))]).unwrap(), 1);
    let x = a1.get_node("x").unwrap().unwrap();
    assert_eq!(Json::Object(x.data), json!({"a": 1, "b": 2}));
    let versions: Vec<Json> = a1
        .history("x")
        .unwrap()
        .into_iter()
        .map(|v| Json::Object(v.data))
        .collect();
    assert_eq!(versions, [json!({"a": 1}), json!({"a": 1, "b": 2})]);
}

#[test]
fn a_column_another_handle_added_is_covered_by_this_handles_later_writes() {
    // Handles on one file keep clocks of their own; the one that adds a column records when,
    // in its clock, which may be ahead of the other's. The other's writes after that must
    // still count as writing the column.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let behind = Database::open(&path).unwrap();
    behind
        .exec("CREATE TABLE todos(id TEXT PRIMARY KEY NOT NULL, title TEXT NOT NULL DEFAULT '', done INTEGER NOT NULL DEFAULT 0)")
        .unwrap();
    behind.sync_table("todos").unwrap();
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute(
            "UPDATE _pluresdb_meta SET value = value + (60000 << 16) WHERE key = 'last_hlc'",
            [],
        )
        .unwrap();
    }
    let ahead = Database::open(&path).unwrap();
    ahead
        .exec("ALTER TABLE todos ADD COLUMN prio TEXT; INSERT INTO todos(id) VALUES ('a1')")
        .unwrap();
    behind
        .run("INSERT INTO todos(id, prio) VALUES ('b1', 'high')", ())
        .unwrap();
    let peer = todo_db();
    peer.exec("ALTER TABLE todos ADD COLUMN prio TEXT").unwrap();
    push(&behind, &peer);
    assert_eq!(
        peer.value("SELECT prio FROM todos WHERE id = 'b1'", ())
            .unwrap(),
        Value::Text("high".into())
    );
}

/// `n` nested JSON arrays: `[[...]]`.
fn nested(n: usize) -> String {
    format!("{}{}", "[".repeat(n), "]".repeat(n))
}

#[test]
fn json_nested_deeper_than_a_local_write_allows_is_refused_and_nothing_changes() {
    let b = Database::open_in_memory().unwrap();
    b.put("keep", &json!({"k": 1})).unwrap();
    let before = dump(&b);
    let at = Version::new(
        pluresdb_core::Hlc::new(pluresdb_crdt_now(), 0),
        pluresdb_core::SiteId([5; 16]),
    );
    let node = |field: &str, value: String| ChangeRecord {
        collection: NODES.into(),
        key: vec![Value::Text("deep".into())].into(),
        field: field.into(),
        value: Some(Value::Text(value)),
        version: at,
        cl: 1,
    };
    let edge = |value: String| ChangeRecord {
        collection: EDGES.into(),
        key: vec![
            Value::Text("keep".into()),
            Value::Text("r".into()),
            Value::Text("deep".into()),
        ]
        .into(),
        field: "data".into(),
        value: Some(Value::Text(value)),
        version: at,
        cl: 1,
    };
    // A node's field sits one level inside its data object: 100 levels of field value make a
    // node of 101, deeper than a local write may make; 127 made one no read could parse back,
    // and every later merge into it failed.
    for depth in [100, 127] {
        let err = b
            .apply_changes(&[node("data.a", "1".into()), node("data.d", nested(depth))])
            .unwrap_err();
        assert!(err.message().starts_with("change 1 "), "{err}");
        assert!(
            err.message().contains("more than 99 levels deep"),
            "{depth}: {err}"
        );
        assert_eq!(dump(&b), before, "nothing applied");
    }
    let err = b
        .apply_changes(&[edge(format!("{{\"a\": {}}}", nested(100)))])
        .unwrap_err();
    assert!(err.message().contains("more than 100 levels deep"), "{err}");
    assert_eq!(dump(&b), before, "nothing applied");
    // What a local write can make merges, and reads back.
    b.apply_changes(&[node("data.d", nested(99))]).unwrap();
    b.apply_changes(&[edge(format!("{{\"a\": {}}}", nested(99)))])
        .unwrap();
    assert!(b.get_node("deep").unwrap().unwrap().data.contains_key("d"));
    assert_eq!(
        b.neighbors("keep", Direction::Out, None).unwrap().len(),
        1,
        "the edge is there"
    );
}

#[test]
fn a_key_the_table_here_would_store_as_another_value_is_refused_and_nothing_changes() {
    let b = Database::open_in_memory().unwrap();
    b.exec(
        "CREATE TABLE ints(id INTEGER PRIMARY KEY, v TEXT);
         CREATE TABLE texts(id TEXT PRIMARY KEY NOT NULL, v TEXT);
         CREATE TABLE nums(id INT PRIMARY KEY NOT NULL, v TEXT) WITHOUT ROWID;
         CREATE TABLE reals(id REAL PRIMARY KEY NOT NULL, v TEXT);
         CREATE TABLE blobs(id BLOB PRIMARY KEY NOT NULL, v TEXT);
         INSERT INTO ints VALUES (2, 'two');
         INSERT INTO texts VALUES ('5', 'five');",
    )
    .unwrap();
    for t in ["ints", "texts", "nums", "reals", "blobs"] {
        b.sync_table(t).unwrap();
    }
    let before = dump(&b);
    let at = Version::new(
        pluresdb_core::Hlc::new(pluresdb_crdt_now(), 0),
        pluresdb_core::SiteId([5; 16]),
    );
    let row = |table: &str, key: Value, value: Value| {
        let key: std::sync::Arc<[Value]> = vec![key].into();
        let change = |field: &str, value: Option<Value>| ChangeRecord {
            collection: table.into(),
            key: key.clone(),
            field: field.into(),
            value,
            version: at,
            cl: 1,
        };
        vec![change("", None), change("v", Some(value))]
    };
    let x = || Value::Text("x".into());
    // SQLite would store these keys converted (NaN as NULL: a new row with a rowid of its
    // own), so the row written would not be the row whose sync record the merge keeps: the
    // merge wrote row 2 for the keys 2.0 and '2', and a row 3 for NaN, that never synced.
    // (table, key, the key column's declared type; none: refused for being NaN.)
    for (table, key, declared) in [
        ("ints", Value::Real(f64::NAN), None),
        ("ints", Value::Real(2.0), Some("INTEGER")),
        ("ints", Value::Text("2".into()), Some("INTEGER")),
        ("ints", Value::Text(" -2.5e3 ".into()), Some("INTEGER")),
        // (A rowid takes no text or blob at all: SQLite's "datatype mismatch".)
        ("ints", Value::Text("c1".into()), Some("INTEGER")),
        ("ints", Value::Blob(vec![1]), Some("INTEGER")),
        ("texts", Value::Integer(5), Some("TEXT")),
        ("texts", Value::Real(0.5), Some("TEXT")),
        ("nums", Value::Text(".5".into()), Some("INT")),
        ("reals", Value::Integer(1), Some("REAL")),
        ("reals", Value::Text("1".into()), Some("REAL")),
    ] {
        let why = match declared {
            Some(t) => format!(
                "column id ({t}) here would not store the key {} as it is",
                key.to_json()
            ),
            None => "a key part is NaN".to_owned(),
        };
        // A key that is not a value at all fails the batch; another key type refuses the
        // table's changes (the rest of a batch would merge).
        let merged = b.apply_changes(&row(table, key.clone(), x()));
        let message = match declared {
            Some(_) => refused(&merged.unwrap(), table),
            None => merged.unwrap_err().to_string(),
        };
        assert!(message.contains(&why), "{table} {key:?}: {message}");
        assert_eq!(dump(&b), before, "nothing applied for {table} {key:?}");
    }
    // A NaN value would be stored as NULL.
    let err = b
        .apply_changes(&row(
            "texts",
            Value::Text("n".into()),
            Value::Real(f64::NAN),
        ))
        .unwrap_err();
    assert!(err.message().contains("NaN"), "{err}");
    assert_eq!(dump(&b), before, "nothing applied");
    // Keys stored as they come merge.
    for (table, key) in [
        ("ints", Value::Integer(7)),
        ("texts", Value::Text("2".into())),
        ("nums", Value::Text("abc".into())),
        ("nums", Value::Text("1x".into())),
        ("nums", Value::Real(1.5)),
        ("reals", Value::Real(2.0)),
        ("reals", Value::Blob(vec![1])),
        ("blobs", Value::Integer(3)),
        ("blobs", Value::Text("4".into())),
    ] {
        b.apply_changes(&row(table, key.clone(), x()))
            .unwrap_or_else(|e| panic!("{table} {key:?}: {e}"));
        let stored = b
            .all(&format!("SELECT id FROM {table} WHERE v = 'x'"), ())
            .unwrap();
        assert_eq!(stored.len(), 1, "{table} {key:?}");
        assert_eq!(stored[0].value(0).unwrap(), &key, "{table}");
        b.exec(&format!("DELETE FROM {table} WHERE v = 'x'"))
            .unwrap();
    }
}

#[test]
fn a_table_that_cannot_take_the_peers_rows_does_not_stop_the_rest_of_the_batch() {
    // One table's NOT NULL column (without a DEFAULT) that the peer's table lacks failed the
    // whole batch: no other table, no node merged until the tables matched.
    let a = with_synced(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT);
         CREATE TABLE u(id INTEGER PRIMARY KEY, v TEXT)",
        &["t", "u"],
    );
    let b_schema = "CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT, b TEXT NOT NULL);
                    CREATE TABLE u(id INTEGER PRIMARY KEY, v TEXT)";
    a.exec(
        "INSERT INTO u VALUES (1, 'before'); INSERT INTO t VALUES (1, 'x');
         INSERT INTO u VALUES (2, 'after')",
    )
    .unwrap();
    a.put("n1", &json!({"x": 1})).unwrap();
    let changes = a.changes_since(0, None).unwrap().changes;
    let merged_all_but_t = |db: &Database, report: &pluresdb_core::ApplyReport| {
        let why = refused(report, "t");
        assert!(why.contains("NOT NULL without a DEFAULT"), "{why}");
        assert_eq!(
            db.value("SELECT count(*) FROM u", ()).unwrap(),
            Value::Integer(2)
        );
        assert_eq!(
            db.value("SELECT count(*) FROM t", ()).unwrap(),
            Value::Integer(0)
        );
        assert!(db.get_node("n1").unwrap().is_some());
        // t's row is 2 changes (its creation and a); everything else won.
        assert_eq!(report.applied as usize, changes.len() - 2, "{report:?}");
    };
    let b = with_synced(b_schema, &["t", "u"]);
    let report = b.apply_changes_from(a.site_id(), &changes).unwrap();
    merged_all_but_t(&b, &report);
    // In a caller's transaction, only its savepoint starts over.
    let c = with_synced(b_schema, &["t", "u"]);
    c.transaction(|tx| {
        tx.exec("CREATE TABLE mine(x)")?;
        let report = tx.apply_changes(&changes)?;
        merged_all_but_t(tx, &report);
        Ok::<_, pluresdb_core::Error>(())
    })
    .unwrap();
    assert!(c.value("SELECT count(*) FROM mine", ()).is_ok());
    // The peer's table gains the column: the row merges whole.
    a.exec("ALTER TABLE t ADD COLUMN b TEXT NOT NULL DEFAULT 'filled'")
        .unwrap();
    a.run("UPDATE t SET b = 'given'", ()).unwrap();
    let report = b
        .apply_changes_from(a.site_id(), &a.changes_since(0, None).unwrap().changes)
        .unwrap();
    assert!(report.refused.is_empty(), "{report:?}");
    assert_eq!(
        b.value("SELECT a || b FROM t", ()).unwrap(),
        Value::Text("xgiven".into())
    );
}

#[test]
fn a_refusal_inside_a_callers_transaction_keeps_its_sites_and_its_rollback() {
    let a = with_synced(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT);
         CREATE TABLE u(id INTEGER PRIMARY KEY, v TEXT)",
        &["t", "u"],
    );
    a.exec("INSERT INTO u VALUES (1, 'x'); INSERT INTO t VALUES (1, 'x')")
        .unwrap();
    let changes = a.changes_since(0, None).unwrap().changes;
    // The first attempt added the peer's site row, which the savepoint's rollback took back
    // without telling: the retry stamped clocks with a site the file did not have.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.db");
    let b = synced_in(
        Database::open(&path).unwrap(),
        "CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT, b TEXT NOT NULL);
         CREATE TABLE u(id INTEGER PRIMARY KEY, v TEXT)",
        &["t", "u"],
    );
    b.transaction(|tx| {
        refused(&tx.apply_changes_from(a.site_id(), &changes)?, "t");
        Ok::<_, pluresdb_core::Error>(())
    })
    .unwrap();
    drop(b);
    let b = Database::open(&path).unwrap();
    let read = b.changes_since(0, None).unwrap().changes;
    assert!(read.iter().any(|c| c.version.site == a.site_id()));
    // A trigger's RAISE(ROLLBACK) undoes the caller's whole transaction: the call fails, and
    // the caller's rollback leaves nothing (the merge did not go on committing by itself).
    let c = with_synced(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT);
         CREATE TABLE u(id INTEGER PRIMARY KEY, v TEXT);
         CREATE TABLE mine(x);
         CREATE TRIGGER no BEFORE INSERT ON t BEGIN SELECT RAISE(ROLLBACK, 'not here'); END",
        &["t", "u"],
    );
    let out = c.transaction(|tx| {
        tx.exec("INSERT INTO mine VALUES (1)")?;
        tx.apply_changes(&changes)?;
        tx.exec("INSERT INTO mine VALUES (2)")?;
        Ok::<_, pluresdb_core::Error>(())
    });
    assert!(out.unwrap_err().message().contains("not here"));
    assert_eq!(
        c.value("SELECT count(*) FROM mine", ()).unwrap(),
        Value::Integer(0)
    );
    assert_eq!(
        c.value("SELECT count(*) FROM u", ()).unwrap(),
        Value::Integer(0)
    );
}

#[test]
fn a_merged_row_a_trigger_skips_is_refused_and_comes_again() {
    // A trigger's RAISE(IGNORE) skipped the row while its sync record said it merged: the row
    // never came, even after the trigger was dropped.
    let schema = "CREATE TABLE t(id TEXT PRIMARY KEY NOT NULL, x TEXT)";
    let a = with_synced(schema, &["t"]);
    let b = with_synced(schema, &["t"]);
    b.exec(
        "CREATE TRIGGER no_new BEFORE INSERT ON t BEGIN SELECT RAISE(IGNORE); END;
         CREATE TRIGGER no_x BEFORE UPDATE ON t WHEN NEW.x = 'skip' BEGIN SELECT RAISE(IGNORE); END",
    )
    .unwrap();
    a.exec("INSERT INTO t VALUES ('r1', 'a')").unwrap();
    let why = refused(&merge_all(&a, &b), "t");
    assert!(
        why.contains("was not written: a trigger on the table skipped it"),
        "{why}"
    );
    b.exec("DROP TRIGGER no_new").unwrap();
    let report = merge_all(&a, &b);
    assert!(report.refused.is_empty(), "{report:?}");
    a.exec("UPDATE t SET x = 'skip'").unwrap();
    refused(&merge_all(&a, &b), "t");
    b.exec("DROP TRIGGER no_x").unwrap();
    merge_all(&a, &b);
    assert_eq!(dump(&a), dump(&b));
    // A delete a trigger keeps from happening (a soft delete), and a table of key columns only.
    b.exec(
        "CREATE TRIGGER keep BEFORE DELETE ON t BEGIN SELECT RAISE(IGNORE); END;
         CREATE TABLE k(id TEXT PRIMARY KEY NOT NULL);
         CREATE TRIGGER no_k BEFORE INSERT ON k BEGIN SELECT RAISE(IGNORE); END;",
    )
    .unwrap();
    b.sync_table("k").unwrap();
    a.exec("CREATE TABLE k(id TEXT PRIMARY KEY NOT NULL)")
        .unwrap();
    a.sync_table("k").unwrap();
    a.exec("DELETE FROM t; INSERT INTO k VALUES ('k1')")
        .unwrap();
    let report = merge_all(&a, &b);
    let tables: Vec<&str> = report.refused.iter().map(|r| r.table.as_str()).collect();
    assert_eq!(tables, ["k", "t"], "{report:?}");
}

#[test]
fn a_table_refused_under_another_case_of_its_name_merges_nothing() {
    // Refused under the peer's spelling, the table's creations still merged here, onto
    // the wrong key.
    let a = with_synced(
        "CREATE TABLE Items(name TEXT PRIMARY KEY NOT NULL, code TEXT)",
        &["Items"],
    );
    let b = with_synced(
        "CREATE TABLE items(code TEXT PRIMARY KEY NOT NULL, name TEXT)",
        &["items"],
    );
    a.exec("INSERT INTO Items VALUES ('n1', 'c1')").unwrap();
    let report = merge_all(&a, &b);
    refused(&report, "items");
    assert_eq!(
        b.value("SELECT count(*) FROM items", ()).unwrap(),
        Value::Integer(0)
    );
}

/// The file `app.db` in `dir` with a synced table `todos(id, title)`.
fn todos_file(dir: &tempfile::TempDir) -> (std::path::PathBuf, Database) {
    let path = dir.path().join("app.db");
    let db = synced_in(
        Database::open(&path).unwrap(),
        "CREATE TABLE todos(id TEXT PRIMARY KEY NOT NULL, title TEXT)",
        &["todos"],
    );
    (path, db)
}

#[test]
fn check_finds_writes_another_program_made_to_a_synced_table() {
    let dir = tempfile::tempdir().unwrap();
    let (path, db) = todos_file(&dir);
    db.exec("INSERT INTO todos VALUES ('kept', 'a'), ('dropped', 'b')")
        .unwrap();
    assert!(db.check().unwrap().is_empty());
    let early = with_synced(
        "CREATE TABLE todos(id TEXT PRIMARY KEY NOT NULL, title TEXT)",
        &["todos"],
    );
    merge_all(&db, &early);
    // The app's own SQLite library writes the file (PluresDB sees none of it).
    let other = rusqlite::Connection::open(&path).unwrap();
    other
        .execute_batch(
            "INSERT INTO todos VALUES ('new', 'c'); DELETE FROM todos WHERE id = 'dropped';
             UPDATE todos SET title = 'changed' WHERE id = 'kept'",
        )
        .unwrap();
    drop(other);
    let problems = db.check().unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with(
            "synced table \"todos\" has 1 row(s) that PluresDB did not see written and 1 \
             row(s) it did not see deleted"
        ),
        "{problems:?}"
    );
    // A peer's update of the row deleted that way merges as before (it is not refused as if
    // a trigger had skipped it).
    early
        .exec("UPDATE todos SET title = 'p' WHERE id = 'dropped'")
        .unwrap();
    let report = merge_all(&early, &db);
    assert!(report.refused.is_empty(), "{report:?}");
    // What the message says to do: then a peer gets all three writes.
    db.exec(
        "INSERT OR REPLACE INTO todos SELECT * FROM todos WHERE id IN ('new', 'kept');
         INSERT INTO todos VALUES ('dropped', 'b'); DELETE FROM todos WHERE id = 'dropped'",
    )
    .unwrap();
    assert!(db.check().unwrap().is_empty());
    let peer = with_synced(
        "CREATE TABLE todos(id TEXT PRIMARY KEY NOT NULL, title TEXT)",
        &["todos"],
    );
    merge_all(&db, &peer);
    assert_eq!(
        peer.all("SELECT id, title FROM todos ORDER BY id", ())
            .unwrap()
            .iter()
            .map(|r| r.to_json().to_string())
            .collect::<Vec<_>>(),
        [
            r#"{"id":"kept","title":"changed"}"#,
            r#"{"id":"new","title":"c"}"#
        ]
    );
}

#[test]
fn a_read_only_check_that_cannot_look_for_foreign_writes_says_so() {
    // It said nothing (healthy) while it had skipped them.
    let dir = tempfile::tempdir().unwrap();
    let (path, db) = todos_file(&dir);
    db.exec("INSERT INTO todos VALUES ('a', 'x')").unwrap();
    let read_only = || OpenOptions::new().read_only(true).open(&path).unwrap();
    let problems = read_only().check().unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("were not looked for"), "{problems:?}");
    db.fold_change_log().unwrap();
    assert!(read_only().check().unwrap().is_empty());
}

#[test]
fn vacuum_runs_on_a_database_with_synced_tables() {
    // It was refused ("cannot VACUUM from within a transaction"): every statement run outside
    // a transaction was wrapped in one once a table synced.
    let dir = tempfile::tempdir().unwrap();
    let (_, db) = todos_file(&dir);
    db.exec("INSERT INTO todos VALUES ('a', 'x'), ('b', 'y'); DELETE FROM todos WHERE id = 'b'")
        .unwrap();
    db.exec("VACUUM").unwrap();
    db.run("VACUUM", ()).unwrap();
    let streamed: Vec<_> = db.iterate("VACUUM", ()).unwrap().collect();
    assert!(streamed.iter().all(|r| r.is_ok()), "{streamed:?}");
    let copy = dir.path().join("copy.db");
    db.run("VACUUM INTO ?1", (copy.to_str().unwrap(),)).unwrap();
    assert!(db.check().unwrap().is_empty());
    // Inside a transaction, SQLite's own refusal.
    let err = db
        .transaction(|tx| tx.exec("VACUUM"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot VACUUM from within a transaction"),
        "{err}"
    );
    db.exec("UPDATE todos SET title = 'z' WHERE id = 'a'")
        .unwrap();
    let peer = with_synced(
        "CREATE TABLE todos(id TEXT PRIMARY KEY NOT NULL, title TEXT)",
        &["todos"],
    );
    merge_all(&db, &peer);
    assert_eq!(
        peer.value("SELECT group_concat(id || title) FROM todos", ())
            .unwrap(),
        Value::Text("az".into())
    );
    let copied = Database::open(&copy).unwrap();
    assert_eq!(
        copied.value("SELECT count(*) FROM todos", ()).unwrap(),
        Value::Integer(1)
    );
}

#[test]
fn a_row_another_program_deleted_is_not_sent_as_a_row_of_nulls() {
    // It was: a peer got the row with every column NULL, or refused the table for a NOT NULL
    // column (every later sync again).
    const TODOS: &str = "CREATE TABLE todos(id TEXT PRIMARY KEY NOT NULL, title TEXT NOT NULL)";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let db = synced_in(Database::open(&path).unwrap(), TODOS, &["todos"]);
    // Rows written in bulk (their sync records packed), and one on its own.
    db.exec(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100)
         INSERT INTO todos SELECT 'r' || i, 't' || i FROM n",
    )
    .unwrap();
    db.fold_change_log().unwrap();
    db.exec("INSERT INTO todos VALUES ('single', 's')").unwrap();
    db.fold_change_log().unwrap();
    let other = rusqlite::Connection::open(&path).unwrap();
    other
        .execute_batch("DELETE FROM todos WHERE id IN ('r5', 'single')")
        .unwrap();
    drop(other);
    let peer = with_synced(TODOS, &["todos"]);
    let report = merge_all(&db, &peer);
    assert!(report.refused.is_empty(), "{report:?}");
    assert_eq!(
        peer.value("SELECT count(*) FROM todos", ()).unwrap(),
        Value::Integer(99)
    );
    assert_eq!(
        peer.value(
            "SELECT count(*) FROM todos WHERE id IN ('r5', 'single')",
            ()
        )
        .unwrap(),
        Value::Integer(0)
    );
}

#[test]
fn changes_stamped_too_far_ahead_wait_while_the_rest_merges() {
    // A device whose clock ran a day ahead stamped its writes so: they failed every batch
    // they were in, so nothing of that peer merged until the day had passed.
    let b = todo_db();
    let now = pluresdb_crdt_now();
    let node = |id: &str, at: u64| {
        vec![
            peer_change(at, NODES, id, "", None),
            peer_change(at, NODES, id, "data.a", Some(Value::Text("1".into()))),
        ]
    };
    let day = 86_400_000;
    // "half": created in time, a field written a day ahead: the row waits whole (merged
    // without that field, it would show a value no device wrote).
    let half = vec![
        peer_change(now, NODES, "half", "", None),
        peer_change(
            now + day,
            NODES,
            "half",
            "data.a",
            Some(Value::Text("2".into())),
        ),
    ];
    let changes: Vec<ChangeRecord> = [node("far", now + day), half, node("near", now)].concat();
    let report = b.apply_changes(&changes).unwrap();
    let why = refused(&report, NODES);
    assert!(
        why.starts_with(
            "rows with changes stamped more than 600000 ms ahead of this machine's clock"
        ),
        "{why}"
    );
    assert!(b.get_node("near").unwrap().is_some(), "{report:?}");
    assert!(b.get_node("far").unwrap().is_none());
    assert!(b.get_node("half").unwrap().is_none());
    // The clock stays where it was: a write now is not stamped a day ahead.
    b.put("mine", &json!({})).unwrap();
    assert!(b.get_node("mine").unwrap().unwrap().updated_at.millis() < now + day / 2);
    // Once its time has come (here: stamped within the limit), the change merges.
    let report = b.apply_changes(&node("far", now + 60_000)).unwrap();
    assert!(report.refused.is_empty());
    assert!(b.get_node("far").unwrap().is_some());
    // A device whose clock ran ahead wrote to many tables: more than a batch refuses whole.
    let tables: Vec<String> = (0..20).map(|i| format!("t{i}")).collect();
    let schema: Vec<String> = (tables.iter())
        .map(|t| format!("CREATE TABLE {t}(id TEXT PRIMARY KEY NOT NULL)"))
        .collect();
    let names: Vec<&str> = tables.iter().map(String::as_str).collect();
    let c = with_synced(&schema.join(";"), &names);
    let mut changes = node("near", now);
    for t in &tables {
        changes.push(ChangeRecord {
            collection: t.as_str().into(),
            ..node("x", now + day)[0].clone()
        });
    }
    let report = c.apply_changes(&changes).unwrap();
    assert_eq!(report.refused.len(), 20, "{report:?}");
    assert!(c.get_node("near").unwrap().is_some());
}

#[test]
fn a_refused_batch_leaves_the_clock_where_it_was() {
    let b = Database::open_in_memory().unwrap();
    b.exec("CREATE TABLE counts(id TEXT PRIMARY KEY NOT NULL, n INTEGER) STRICT")
        .unwrap();
    b.sync_table("counts").unwrap();
    // Stamped 5 minutes ahead (within the drift allowed), and refused by the table here.
    let ahead = pluresdb_crdt_now() + 5 * 60_000;
    let change = |field: &str, value| peer_change(ahead, "counts", "c", field, value);
    // With a change of another table that merges.
    let other = peer_change(pluresdb_crdt_now(), NODES, "merged", "", None);
    let report = b
        .apply_changes(&[
            change("", None),
            change("n", Some(Value::Text("many".into()))),
            other,
        ])
        .unwrap();
    let message = refused(&report, "counts");
    assert!(message.contains("cannot store TEXT value"), "{message}");
    assert!(b.get_node("merged").unwrap().is_some());
    // The refused changes' clock was not observed (otherwise this write would be stamped 5
    // minutes ahead, and would win over later writes elsewhere).
    b.put("after", &json!({})).unwrap();
    let stamped = b.get_node("after").unwrap().unwrap().updated_at.millis();
    assert!(
        stamped < ahead - 60_000,
        "stamped {stamped}, refused {ahead}"
    );
    // Accepted, the batch moves the clock.
    b.apply_changes(&[change("", None), change("n", Some(Value::Integer(1)))])
        .unwrap();
    b.put("later", &json!({})).unwrap();
    assert!(b.get_node("later").unwrap().unwrap().updated_at.millis() >= ahead);
}

#[test]
fn a_node_type_a_local_write_would_refuse_is_refused_and_nothing_changes() {
    let b = Database::open_in_memory().unwrap();
    b.put("keep", &json!({"k": 1})).unwrap();
    let before = dump(&b);
    let typed = |t: &str| ChangeRecord {
        collection: NODES.into(),
        key: vec![Value::Text("n".into())].into(),
        field: "type".into(),
        value: Some(Value::Text(t.into())),
        version: Version::new(
            pluresdb_core::Hlc::new(pluresdb_crdt_now(), 0),
            pluresdb_core::SiteId([5; 16]),
        ),
        cl: 1,
    };
    // `set_type` refuses each of these; merged, they were stored.
    for (t, why) in [
        ("", "node type must not be empty"),
        (
            &*"x".repeat(1025),
            "node type is 1025 bytes long; the limit is 1024",
        ),
        ("a\0b", "contains a NUL character"),
    ] {
        let err = b.apply_changes(&[typed(t)]).unwrap_err();
        assert!(err.message().contains(why), "{why}: {err}");
        assert_eq!(dump(&b), before, "nothing applied");
    }
    b.apply_changes(&[typed("person")]).unwrap();
    assert_eq!(
        b.get_node("n").unwrap().unwrap().node_type.as_deref(),
        Some("person")
    );
}

#[test]
fn a_vector_blob_that_is_not_whole_floats_is_refused_as_the_peers_fault() {
    let b = Database::open_in_memory().unwrap();
    let change = ChangeRecord {
        collection: NODES.into(),
        key: vec![Value::Text("v".into())].into(),
        field: "vector".into(),
        value: Some(Value::Blob(vec![0, 0, 128, 63, 1])),
        version: Version::new(
            pluresdb_core::Hlc::new(pluresdb_crdt_now(), 0),
            pluresdb_core::SiteId([5; 16]),
        ),
        cl: 1,
    };
    // It was reported as this database's corruption: "stored vector has 5 bytes".
    let err = b.apply_changes(&[change]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(
        err.message()
            .contains("a vector must be 4-byte floats, and this one has 5 bytes"),
        "{err}"
    );
    assert!(b.get_node("v").unwrap().is_none());
}

#[test]
fn a_peer_version_past_what_a_database_counts_to_is_refused_and_not_recorded() {
    let b = Database::open_in_memory().unwrap();
    let peer = pluresdb_core::SiteId([5; 16]);
    // A peer's Done (or a change file's) claiming u64::MAX was stored as -1 in SQLite's signed
    // integers and read back as u64::MAX: this database then told that peer it had all its
    // changes for ever, and the peer took it for a copy of itself.
    for (cursor, acked) in [(Some(u64::MAX), None), (None, Some(1 << 63))] {
        let progress = SyncProgress {
            cursor,
            acked,
            ..Default::default()
        };
        let err = b.record_sync(peer, &progress).unwrap_err();
        assert!(err.message().contains("is past"), "{err}");
        assert_eq!(b.peer_cursor(peer).unwrap(), 0);
        assert!(b.sync_status().unwrap().iter().all(|p| p.acked == 0));
    }
    let progress = SyncProgress {
        cursor: Some(i64::MAX as u64),
        ..Default::default()
    };
    b.record_sync(peer, &progress).unwrap();
    assert_eq!(b.peer_cursor(peer).unwrap(), i64::MAX as u64);
}

#[test]
fn json_naming_a_key_twice_is_refused_and_nothing_changes() {
    let b = Database::open_in_memory().unwrap();
    b.put("a", &json!({})).unwrap();
    b.put("b", &json!({})).unwrap();
    let before = dump(&b);
    let at = Version::new(
        pluresdb_core::Hlc::new(pluresdb_crdt_now(), 0),
        pluresdb_core::SiteId([5; 16]),
    );
    let edge = |value: &str| ChangeRecord {
        collection: EDGES.into(),
        key: vec![
            Value::Text("a".into()),
            Value::Text("r".into()),
            Value::Text("b".into()),
        ]
        .into(),
        field: "data".into(),
        value: Some(Value::Text(value.into())),
        version: at,
        cl: 1,
    };
    let node = |value: &str| ChangeRecord {
        collection: NODES.into(),
        key: vec![Value::Text("a".into())].into(),
        field: "data.d".into(),
        value: Some(Value::Text(value.into())),
        version: at,
        cl: 1,
    };
    // Stored as sent, the edge read w = 1 in SQL (json_extract takes the first) and w = 2
    // through the API and Cypher (serde_json keeps the last).
    for bad in [
        edge(r#"{"w": 1, "w": 2}"#),
        edge(r#"{"x": {"w": 1, "w": 2}}"#),
        node(r#"{"w": 1, "w": 2}"#),
    ] {
        let err = b.apply_changes(&[bad]).unwrap_err();
        assert!(err.message().contains("\"w\" appears twice"), "{err}");
        assert_eq!(dump(&b), before, "nothing applied");
    }
    b.apply_changes(&[edge(r#"{"w": 1, "x": {"w": 2}}"#)])
        .unwrap();
    assert_eq!(
        b.value("SELECT json_extract(data, '$.w') FROM pluresdb_edges", ())
            .unwrap(),
        Value::Integer(1)
    );
}

#[test]
fn a_change_stamped_with_clock_time_zero_is_refused_and_nothing_changes() {
    let b = Database::open_in_memory().unwrap();
    b.put("a", &json!({"k": 1})).unwrap();
    let before = dump(&b);
    let zero = Version::new(
        pluresdb_core::Hlc::from_u64(0),
        pluresdb_core::SiteId([5; 16]),
    );
    let edge = ChangeRecord {
        collection: EDGES.into(),
        key: vec![
            Value::Text("a".into()),
            Value::Text("s".into()),
            Value::Text("a".into()),
        ]
        .into(),
        field: "".into(),
        value: None,
        version: zero,
        cl: 1,
    };
    let node = ChangeRecord {
        collection: NODES.into(),
        key: vec![Value::Text("a".into())].into(),
        field: "data.k".into(),
        value: Some(Value::Text("2".into())),
        version: zero,
        cl: 1,
    };
    // Time 0 marks a creation not seen yet: this edge was stored here, and never passed on
    // (its creation looked unknown), so replicas of this database never had it.
    for bad in [edge, node] {
        let err = b.apply_changes(&[bad]).unwrap_err();
        assert!(err.message().contains("clock time 0"), "{err}");
        assert_eq!(dump(&b), before, "nothing applied");
    }
}

#[test]
fn keys_of_every_column_type_sync_as_the_sender_stored_them() {
    // What the check on merged keys must not refuse: keys as SQLite stored them on the
    // sender, converted by their column's type ('1e5' in NUMERIC is 100000, 1 in REAL is 1.0).
    let schema = "CREATE TABLE reals(id REAL PRIMARY KEY NOT NULL, v TEXT);
         CREATE TABLE nums(id NUMERIC PRIMARY KEY NOT NULL, v TEXT);
         CREATE TABLE texts(id TEXT PRIMARY KEY NOT NULL, v TEXT);
         CREATE TABLE ints(id INT PRIMARY KEY NOT NULL, v TEXT);
         CREATE TABLE untyped(id PRIMARY KEY NOT NULL, v TEXT);";
    let (a, b) = pair(schema, &["reals", "nums", "texts", "ints", "untyped"]);
    a.exec(
        "INSERT INTO reals VALUES (1, 'x'), (2.5, 'y'), (-0.0, 'z'), ('7', 'w');
         INSERT INTO nums VALUES ('1e5', 'x'), (3.0, 'y'), ('abc', 'z'), (x'01', 'b');
         INSERT INTO texts VALUES (5, 'x'), (1.5, 'y');
         INSERT INTO ints VALUES ('12', 'x'), (2.0, 'y'), (' 3 ', 'z'), ('4.5', 'w');
         INSERT INTO untyped VALUES ('12', 'x'), (2.0, 'y'), (3, 'z');
         UPDATE reals SET v = 'u'; UPDATE nums SET v = 'u'; UPDATE ints SET v = 'u';",
    )
    .unwrap();
    sync(&a, &b);
    assert_eq!(dump(&a), dump(&b));
    assert!(
        dump(&b).contains("reals {\"id\":2.5,\"v\":\"u\"}"),
        "{}",
        dump(&b)
    );
}

#[test]
fn a_write_after_another_handle_merged_a_newer_version_wins_everywhere() {
    // Two handles on one file (the app and a command-line process) keep clocks of their own.
    // One merges a peer's writes, stamped minutes ahead (a device whose clock runs fast,
    // within the drift allowed); then the other overwrites them. The overwrite is what the
    // file holds, so it must win on the peer too: it must be stamped after what it replaced.
    let dir = tempfile::tempdir().unwrap();
    let (merging, writing) = notes_and_other_handle(&dir.path().join("a.db"));
    merging.sync_table("notes").unwrap();
    let peer = with_synced(NOTES, &["notes"]);
    let ahead = pluresdb_crdt_now() + 5 * 60_000;
    let change = |at: u64, collection: &str, field: &str, value: Option<Value>| {
        peer_change(at, collection, "k", field, value)
    };
    // Each kind of write, after its own merge by the other handle.
    let nodes = [
        change(ahead, NODES, "", None),
        change(ahead, NODES, "data.v", Some(Value::Text("\"peer\"".into()))),
    ];
    peer.apply_changes(&nodes).unwrap();
    merging.apply_changes(&nodes).unwrap();
    writing.put("k", &json!({"v": "local"})).unwrap();
    let stamped = writing.get_node("k").unwrap().unwrap().updated_at.millis();
    assert!(stamped >= ahead, "stamped {stamped}, replaced {ahead}");
    // Further ahead than the clock the put moved.
    let later = ahead + 60_000;
    let rows = [
        change(later, "notes", "", None),
        change(later, "notes", "body", Some(Value::Text("peer".into()))),
    ];
    peer.apply_changes(&rows).unwrap();
    merging.apply_changes(&rows).unwrap();
    writing
        .run("UPDATE notes SET body = 'local' WHERE id = 'k'", ())
        .unwrap();
    push(&merging, &peer);
    assert_eq!(
        peer.value("SELECT body FROM notes WHERE id = 'k'", ())
            .unwrap(),
        Value::Text("local".into())
    );
    assert_eq!(peer.get_node("k").unwrap().unwrap().data["v"], "local");
    assert_eq!(dump(&peer), dump(&merging));
}

#[test]
fn a_write_in_a_deferred_transaction_after_another_handle_merged_a_newer_version_wins() {
    // As above, with the write in a transaction begun in SQL without taking the write lock
    // (BEGIN, BEGIN DEFERRED, SAVEPOINT): the other handle merges after it began, before the
    // write.
    for begin in ["BEGIN", "BEGIN DEFERRED", "SAVEPOINT s"] {
        let dir = tempfile::tempdir().unwrap();
        let (merging, writing) = notes_and_other_handle(&dir.path().join("a.db"));
        merging.sync_table("notes").unwrap();
        let peer = with_synced(NOTES, &["notes"]);
        let ahead = pluresdb_crdt_now() + 5 * 60_000;
        let rows = [
            peer_change(ahead, "notes", "k", "", None),
            peer_change(
                ahead,
                "notes",
                "k",
                "body",
                Some(Value::Text("peer".into())),
            ),
        ];
        peer.apply_changes(&rows).unwrap();
        writing.exec(begin).unwrap();
        merging.apply_changes(&rows).unwrap();
        writing
            .run("UPDATE notes SET body = 'local' WHERE id = 'k'", ())
            .unwrap();
        writing
            .exec(if begin.starts_with("SAVEPOINT") {
                "RELEASE s"
            } else {
                "COMMIT"
            })
            .unwrap();
        push(&merging, &peer);
        assert_eq!(
            peer.value("SELECT body FROM notes WHERE id = 'k'", ())
                .unwrap(),
            Value::Text("local".into()),
            "after {begin}"
        );
        assert_eq!(dump(&peer), dump(&merging));
    }
}

#[test]
fn a_graph_write_in_a_deferred_transaction_after_another_handle_merged_a_newer_version_wins() {
    // A put (a nested transaction of its own) inside a transaction begun in SQL, after the
    // other handle merged a version of the node stamped ahead: the put must come after it.
    for begin in ["BEGIN", "SAVEPOINT s"] {
        let dir = tempfile::tempdir().unwrap();
        let (merging, writing) = notes_and_other_handle(&dir.path().join("a.db"));
        let ahead = pluresdb_crdt_now() + 5 * 60_000;
        let node = [
            peer_change(ahead, NODES, "k", "", None),
            peer_change(
                ahead,
                NODES,
                "k",
                "data.v",
                Some(Value::Text("\"peer\"".into())),
            ),
        ];
        writing.exec(begin).unwrap();
        merging.apply_changes(&node).unwrap();
        writing.put("k", &json!({"v": "local"})).unwrap();
        writing
            .exec(if begin == "BEGIN" {
                "COMMIT"
            } else {
                "RELEASE s"
            })
            .unwrap();
        let stamped = writing.get_node("k").unwrap().unwrap().updated_at.millis();
        assert!(
            stamped >= ahead,
            "after {begin}: stamped {stamped}, replaced {ahead}"
        );
    }
}

#[test]
fn a_read_only_handle_runs_a_transaction_inside_a_begin() {
    // A nested transaction inside a transaction begun in SQL takes the write lock first (see
    // below), except on a handle that cannot write, a PluresDB file or a plain one.
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("a.db");
    Database::open(&ours).unwrap().exec(NOTES).unwrap();
    let plain = dir.path().join("plain.db");
    rusqlite::Connection::open(&plain)
        .unwrap()
        .execute_batch(NOTES)
        .unwrap();
    for path in [ours, plain] {
        let ro = pluresdb_core::OpenOptions::new()
            .read_only(true)
            .open(&path)
            .unwrap();
        ro.exec("BEGIN").unwrap();
        let count = ro.transaction(|tx| tx.value("SELECT count(*) FROM notes", ()));
        ro.exec("COMMIT").unwrap();
        assert_eq!(count.unwrap(), Value::Integer(0), "{path:?}");
    }
}

#[test]
fn a_write_in_a_deferred_transaction_waits_for_another_handles_write_lock() {
    // As in SQLite: the first write of a transaction begun without the write lock waits
    // (busy timeout) while another connection writes, rather than failing at once.
    let scripts: [&[&str]; 6] = [
        &[
            "BEGIN",
            "UPDATE notes SET body = 'a' WHERE id = 'n1'",
            "COMMIT",
        ],
        &[
            "BEGIN DEFERRED",
            "UPDATE notes SET body = 'a' WHERE id = 'n1'",
            "COMMIT",
        ],
        &["BEGIN; UPDATE notes SET body = 'a' WHERE id = 'n1'; COMMIT"],
        &[
            "SAVEPOINT s",
            "UPDATE notes SET body = 'a' WHERE id = 'n1'",
            "RELEASE s",
        ],
        &["BEGIN", "INSERT INTO notes VALUES ('n2', 'a')", "COMMIT"],
        &[
            "BEGIN",
            "iterate UPDATE notes SET body = 'a' WHERE id = 'n1' RETURNING id",
            "COMMIT",
        ],
    ];
    for script in scripts {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = notes_and_other_handle(&dir.path().join("a.db"));
        a.sync_table("notes").unwrap();
        a.run("INSERT INTO notes VALUES ('n1', 'x')", ()).unwrap();
        let locked = std::sync::Barrier::new(2);
        std::thread::scope(|s| {
            s.spawn(|| {
                b.transaction(|tx| {
                    tx.run("UPDATE notes SET body = 'b' WHERE id = 'n1'", ())?;
                    locked.wait();
                    std::thread::sleep(std::time::Duration::from_millis(200));
                    Ok::<_, pluresdb_core::Error>(())
                })
                .unwrap();
            });
            locked.wait();
            for sql in script {
                match sql.strip_prefix("iterate ") {
                    Some(sql) => {
                        for row in a.iterate_as::<(String,)>(sql, ()).unwrap() {
                            row.unwrap_or_else(|e| panic!("{script:?}: {e}"));
                        }
                    }
                    None => a.exec(sql).unwrap_or_else(|e| panic!("{script:?}: {e}")),
                }
            }
        });
        assert!(sends(&a, "body", "a"), "{script:?}");
    }
}

#[test]
fn a_table_or_column_another_handle_starts_syncing_is_sent_by_this_one() {
    // A long-running process (an app serving its peers) reads changes with the synced tables
    // and columns it loaded; another process (the command line) starts syncing a table, and
    // later adds a column. The first process's next reads must send them: it never wrote
    // since, and a peer's cursor moves past what a read leaves out, so it would never get it.
    let dir = tempfile::tempdir().unwrap();
    let (command_line, serving) = notes_and_other_handle(&dir.path().join("shared.db"));
    let peer = with_synced(NOTES, &["notes"]);
    push(&serving, &peer);
    command_line.sync_table("notes").unwrap();
    command_line
        .run("INSERT INTO notes VALUES ('n', 'first')", ())
        .unwrap();
    push(&serving, &peer);
    assert_eq!(
        peer.value("SELECT body FROM notes WHERE id = 'n'", ())
            .unwrap(),
        Value::Text("first".into())
    );
    for db in [&command_line, &peer] {
        db.exec("ALTER TABLE notes ADD COLUMN extra TEXT").unwrap();
    }
    command_line
        .run("UPDATE notes SET extra = 'e' WHERE id = 'n'", ())
        .unwrap();
    push(&serving, &peer);
    assert_eq!(
        peer.value("SELECT extra FROM notes WHERE id = 'n'", ())
            .unwrap(),
        Value::Text("e".into())
    );
    assert_eq!(dump(&peer), dump(&serving));
}

#[test]
fn syncing_a_table_from_sql_while_another_process_commits_waits_instead_of_failing() {
    // `SELECT pluresdb_sync_table('t')` is a read to SQLite that writes through the function:
    // run as a read, it wrote from the snapshot its reads began, and when another process
    // (here a second handle) committed after that, it failed at once with "database is
    // locked ... past the busy timeout". It must wait for the lock as a write does.
    let dir = tempfile::tempdir().unwrap();
    let (db, other) = notes_and_other_handle(&dir.path().join("shared.db"));
    db.exec(
        "CREATE TABLE log(x); CREATE TABLE big(x);
         WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 400000)
         INSERT INTO big SELECT i FROM c",
    )
    .unwrap();
    let mut took_long_enough = 0;
    // Each way of running SQL syncs the first table (no change capture running yet), then
    // stops syncing it (capture running).
    for through in ["exec", "all", "iterate"] {
        for function in [
            "pluresdb_sync_table('notes')",
            "pluresdb_unsync_table('notes')",
        ] {
            // Reads for a while before the function writes; the other handle commits meanwhile.
            let sql = format!("SELECT {function} FROM (SELECT max(x) FROM big)");
            let started = std::time::Instant::now();
            let writer = std::thread::spawn({
                let other = other.clone();
                move || {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    other.run("INSERT INTO log VALUES (1)", ()).unwrap();
                }
            });
            let ran = match through {
                "exec" => db.exec(&sql),
                "all" => db.all(&sql, ()).map(drop),
                _ => db
                    .iterate(&sql, ())
                    .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                    .map(drop),
            };
            let took = started.elapsed();
            writer.join().unwrap();
            ran.unwrap_or_else(|e| panic!("{sql} ({through}) failed after {took:?}: {e}"));
            took_long_enough += usize::from(took > std::time::Duration::from_millis(20));
        }
    }
    assert!(
        took_long_enough > 0,
        "the statements were too quick to test"
    );
    assert!(db.synced_tables().unwrap().is_empty());
    db.sync_table("notes").unwrap();
    db.run("INSERT INTO notes VALUES ('n', 'synced')", ())
        .unwrap();
    assert!(sends(&other, "body", "synced"));
}

#[test]
fn iterating_sql_that_stops_the_last_table_syncing_commits() {
    // `SELECT pluresdb_unsync_table(...)` writes through a PluresDB function, so it runs in a
    // transaction of its own; when it stops the last synced table, the change capture is no
    // longer active by the time the statement ends, and that transaction must still commit.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("u.db");
    let db = Database::open(&path).unwrap();
    db.exec("CREATE TABLE t(id TEXT PRIMARY KEY NOT NULL, v TEXT)")
        .unwrap();
    db.sync_table("t").unwrap();
    let rows: Vec<Vec<Value>> = db
        .iterate("SELECT pluresdb_unsync_table('t')", ())
        .unwrap()
        .map(|r| r.unwrap().into_values())
        .collect();
    assert_eq!(rows.len(), 1);
    assert!(
        !db.in_transaction(),
        "the statement's transaction was left open"
    );
    db.run("INSERT INTO t VALUES ('a', 'x')", ()).unwrap();
    // Another handle sees both the unsync and the insert: they were committed.
    let other = Database::open(&path).unwrap();
    assert_eq!(
        other.value("SELECT count(*) FROM t", ()).unwrap().as_i64(),
        Some(1)
    );
    drop(db);
    let reopened = Database::open(&path).unwrap();
    assert!(
        reopened
            .value("SELECT count(*) FROM t", ())
            .unwrap()
            .as_i64()
            == Some(1)
    );
}

#[test]
fn announcing_what_was_sent_leaves_the_synchronous_level_as_it_was() {
    // The record of what a peer was told is committed with `synchronous=FULL` (so it, and
    // every commit before it, survives a power cut); the handle's own level comes back after.
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path().join("a.db")).unwrap();
    let peer = Database::open_in_memory().unwrap().site_id();
    for (level, version) in [(1, 5), (0, 9)] {
        db.pragma(&format!("synchronous = {level}")).unwrap();
        assert_eq!(db.announce(Some(peer), version).unwrap(), version);
        assert_eq!(
            db.pragma_value("synchronous").unwrap(),
            Value::Integer(level)
        );
        assert_eq!(db.announced_bound(Some(peer)).unwrap(), Some(version));
    }
    // Inside a transaction it commits with it; nothing told is taken back.
    db.transaction(|tx| tx.announce(Some(peer), 12)).unwrap();
    assert_eq!(db.announce(Some(peer), 3).unwrap(), 3);
    assert_eq!(db.announced_bound(Some(peer)).unwrap(), Some(12));
    assert_eq!(db.pragma_value("synchronous").unwrap(), Value::Integer(0));
}

#[test]
fn a_merge_counts_the_synced_rows_triggers_write() {
    // A trigger run by a merged row that writes a synced table makes replicas differ (the
    // writing device sent the trigger's result too); the merge reports how many such rows.
    let shape = "CREATE TABLE task(id TEXT PRIMARY KEY NOT NULL, title TEXT);
        CREATE TABLE counter(id TEXT PRIMARY KEY NOT NULL, n INTEGER);
        CREATE TABLE audit(what TEXT);
        CREATE TRIGGER count_tasks AFTER INSERT ON task BEGIN
            UPDATE counter SET n = n + 1;
            INSERT INTO audit VALUES ('task ' || NEW.id);
        END;";
    let (a, b) = pair(shape, &["task"]);
    a.exec("INSERT INTO counter VALUES ('c', 0)").unwrap();
    b.exec("INSERT INTO counter VALUES ('c', 0)").unwrap();
    a.exec("INSERT INTO task VALUES ('t1', 'x'), ('t2', 'y')")
        .unwrap();
    // `counter` not synced: the trigger keeps it (and the audit log) up to date here.
    let report = push_report(&a, &b);
    assert_eq!((report.applied > 0, report.trigger_writes), (true, 0));
    assert_eq!(
        b.value("SELECT n FROM counter", ()).unwrap(),
        Value::Integer(2)
    );
    // Synced: each merged task's trigger writes a synced row.
    for db in [&a, &b] {
        db.sync_table("counter").unwrap();
    }
    a.exec("INSERT INTO task VALUES ('t3', 'z')").unwrap();
    let report = push_report(&a, &b);
    assert_eq!(report.trigger_writes, 1);
    // A merge that runs no such trigger reports none.
    a.exec("UPDATE task SET title = 'w' WHERE id = 't1'")
        .unwrap();
    assert_eq!(push_report(&a, &b).trigger_writes, 0);
}

#[test]
fn sync_warnings_name_the_triggers_that_write_synced_tables() {
    let db = Database::open_in_memory().unwrap();
    db.exec(
        "CREATE TABLE task(id TEXT PRIMARY KEY NOT NULL, title TEXT, done INTEGER);
         CREATE TABLE stats(id TEXT PRIMARY KEY NOT NULL, n INTEGER);
         CREATE TABLE audit(what TEXT);
         CREATE TRIGGER log_tasks AFTER INSERT ON task BEGIN
             INSERT INTO audit VALUES (NEW.id);
         END;
         CREATE TRIGGER count_done AFTER UPDATE OF done ON task BEGIN
             UPDATE stats SET n = n + 1;
         END;",
    )
    .unwrap();
    assert!(db.sync_warnings().unwrap().is_empty(), "nothing synced");
    db.sync_table("task").unwrap();
    db.sync_table("stats").unwrap();
    let warnings = db.sync_warnings().unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("trigger count_done writes synced table stats"),
        "{warnings:?}"
    );
    // The handle syncs as before after the probe, a column added after it too. (A probe left
    // on would not show here: the capture then compares every column, which is still right.)
    let other = Database::open_in_memory().unwrap();
    other
        .exec(
            "CREATE TABLE task(id TEXT PRIMARY KEY NOT NULL, title TEXT, done INTEGER);
             CREATE TABLE stats(id TEXT PRIMARY KEY NOT NULL, n INTEGER);
             CREATE TABLE audit(what TEXT);",
        )
        .unwrap();
    other.sync_table("task").unwrap();
    other.sync_table("stats").unwrap();
    db.exec("INSERT INTO task VALUES ('t', 'a', 0); UPDATE task SET title = 'b'")
        .unwrap();
    push(&db, &other);
    assert_eq!(dump(&db), dump(&other));
    for d in [&db, &other] {
        d.exec("ALTER TABLE task ADD COLUMN note TEXT").unwrap();
    }
    db.exec("UPDATE task SET note = 'n'").unwrap();
    push(&db, &other);
    assert_eq!(dump(&db), dump(&other));
}

/// The changes `from` has for `to` (as a sync would read them: after `to`'s cursor).
fn changes_for(from: &Database, to: &Database) -> Vec<ChangeRecord> {
    let since = to.peer_cursor(from.site_id()).unwrap();
    from.changes_since(since, Some(to.site_id()))
        .unwrap()
        .changes
}

#[test]
fn changes_merged_from_a_peer_are_not_sent_back_to_it() {
    // A hub and two devices: a device gets the other's changes from the hub.
    let schema = "CREATE TABLE todos(id TEXT PRIMARY KEY NOT NULL, title TEXT)";
    let (hub, a, b) = (
        with_synced(schema, &["todos"]),
        with_synced(schema, &["todos"]),
        with_synced(schema, &["todos"]),
    );
    b.run("INSERT INTO todos VALUES ('t1', 'from b')", ())
        .unwrap();
    b.put("n1", &json!({"by": "b"})).unwrap();
    b.put("n2", &json!({})).unwrap();
    b.link("n1", "knows", "n2", None).unwrap();
    a.run("INSERT INTO todos VALUES ('t2', 'from a')", ())
        .unwrap();
    push(&b, &hub);
    push(&a, &hub);
    // Until the hub's set is complete (its cursor recorded here), what merged from it is
    // still sent back: a restored backup of the hub that lacks it would not be told apart.
    let partial = hub.changes_since(0, Some(a.site_id())).unwrap().changes;
    let first = a.apply_changes_from(hub.site_id(), &partial).unwrap();
    assert_ne!(changes_for(&a, &hub), []);
    assert!(first.noted.is_some());
    // The set completes (nothing new merges): its cursor confirms that merge.
    push(&hub, &a);
    let complete = SyncProgress {
        cursor: Some(a.peer_cursor(hub.site_id()).unwrap()),
        confirm_through: first.noted,
        ..Default::default()
    };
    a.record_sync(hub.site_id(), &complete).unwrap();
    assert!(dump(&a).contains("from b") && dump(&a).contains("knows"));
    // b's changes, which a got from the hub, are not sent back to it (they were: as many
    // changes again as the hub sent), also when the hub asks for everything again (it does
    // when a column or table it left changes out for arrives there).
    assert_eq!(changes_for(&a, &hub), []);
    let everything = a.changes_since(0, Some(hub.site_id())).unwrap().changes;
    assert_eq!(
        everything.iter().map(|c| &c.value).collect::<Vec<_>>(),
        [&None, &Some(Value::from("from a"))]
    );
    // The hub still gets a's later edit of b's row, and a new device gets everything.
    a.run("UPDATE todos SET title = 'edited on a' WHERE id = 't1'", ())
        .unwrap();
    let back = changes_for(&a, &hub);
    assert_eq!(
        back.iter().map(|c| &c.value).collect::<Vec<_>>(),
        [&Some(Value::from("edited on a"))]
    );
    let c = with_synced(schema, &["todos"]);
    push(&a, &c);
    assert_eq!(dump(&c), dump(&a));
    // `sync --status` counts only that edit as pending for the hub.
    let status = a.sync_status().unwrap();
    let to_hub = status.iter().find(|p| p.site == hub.site_id()).unwrap();
    assert_eq!(to_hub.pending, 1);
    push(&a, &hub);
    assert_eq!(dump(&hub), dump(&a));
}

#[test]
fn a_merge_inside_a_callers_transaction_is_not_taken_as_the_peers_alone() {
    let schema = "CREATE TABLE todos(id TEXT PRIMARY KEY NOT NULL, title TEXT)";
    let (a, b) = pair(schema, &["todos"]);
    a.run("INSERT INTO todos VALUES ('t0', 'first')", ())
        .unwrap();
    push(&a, &b);
    b.run("INSERT INTO todos VALUES ('t1', 'from b')", ())
        .unwrap();
    let set = b.changes_since(0, Some(a.site_id())).unwrap();
    // The caller's own write shares the transaction's version with the merge: it is sent.
    a.transaction(|tx| {
        tx.apply_changes_from(b.site_id(), &set.changes)?;
        tx.run("INSERT INTO todos VALUES ('t2', 'from a')", ())?;
        Ok::<_, pluresdb_core::Error>(())
    })
    .unwrap();
    let back = changes_for(&a, &b);
    assert!(back.iter().any(|c| c.value == Some(Value::from("from a"))));
    push(&a, &b);
    assert_eq!(dump(&a), dump(&b));
}

#[test]
fn a_transaction_left_open_by_a_thread_that_ended_records_nothing() {
    let db = with_synced(
        "CREATE TABLE todos(id TEXT PRIMARY KEY NOT NULL, title TEXT)",
        &["todos"],
    );
    db.run("INSERT INTO todos VALUES ('t1', 'first')", ())
        .unwrap();
    let before = db.db_version().unwrap();
    // The thread's transaction is rolled back when it ends; its write was captured.
    let other = db.clone();
    std::thread::spawn(move || {
        other.exec("BEGIN").unwrap();
        other
            .run("UPDATE todos SET title = 'never' WHERE id = 't1'", ())
            .unwrap();
    })
    .join()
    .unwrap();
    // It was recorded with the next commit (as a change of t1's title, to its old value).
    db.run("INSERT INTO todos VALUES ('t2', 'second')", ())
        .unwrap();
    let changes = db.changes_since(before, None).unwrap().changes;
    assert!(
        changes.iter().all(|c| *c.key == [Value::from("t2")]),
        "{changes:?}"
    );
}

#[test]
fn a_file_from_before_merge_notes_opens_at_once_while_another_process_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let schema = "CREATE TABLE todos(id TEXT PRIMARY KEY NOT NULL, title TEXT)";
    let hub = with_synced(schema, &["todos"]);
    hub.run("INSERT INTO todos VALUES ('t1', 'from the hub')", ())
        .unwrap();
    {
        let db = Database::open(&path).unwrap();
        db.exec(schema).unwrap();
        db.sync_table("todos").unwrap();
        db.run("INSERT INTO todos VALUES ('t0', 'here')", ())
            .unwrap();
        push(&db, &hub);
        // As a file written before the notes of merges were kept.
        db.exec("DROP TABLE IF EXISTS _pluresdb_received").unwrap();
    }
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let started = std::time::Instant::now();
    let db = Database::open(&path).unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    other.execute_batch("ROLLBACK").unwrap();
    // Without the table, reads for peers and their records work as before it; the first
    // merge to note makes it.
    push(&db, &hub);
    push(&hub, &db);
    assert_eq!(dump(&db), dump(&hub));
    let tables = db
        .value(
            "SELECT count(*) FROM sqlite_schema WHERE name = '_pluresdb_received'",
            (),
        )
        .unwrap();
    assert_eq!(tables.as_i64(), Some(1));
}

#[test]
fn a_completed_set_confirms_only_the_merges_up_to_its_own() {
    let schema = "CREATE TABLE todos(id TEXT PRIMARY KEY NOT NULL, title TEXT)";
    let (hub, a, b) = (
        with_synced(schema, &["todos"]),
        with_synced(schema, &["todos"]),
        with_synced(schema, &["todos"]),
    );
    a.run("INSERT INTO todos VALUES ('a1', 'from a')", ())
        .unwrap();
    push(&a, &hub);
    b.run("INSERT INTO todos VALUES ('b1', 'first')", ())
        .unwrap();
    push(&b, &hub);
    // a merges the hub's first set, then (as a watching session can, before the first set's
    // cursor is recorded) part of its next one.
    let first = hub.changes_since(0, Some(a.site_id())).unwrap();
    let merged = a.apply_changes_from(hub.site_id(), &first.changes).unwrap();
    b.run("INSERT INTO todos VALUES ('b2', 'second')", ())
        .unwrap();
    push(&b, &hub);
    let next = hub
        .changes_since(first.db_version, Some(a.site_id()))
        .unwrap();
    a.apply_changes_from(hub.site_id(), &next.changes).unwrap();
    a.record_sync(
        hub.site_id(),
        &SyncProgress {
            cursor: Some(first.db_version),
            confirm_through: merged.noted,
            ..Default::default()
        },
    )
    .unwrap();
    // The first set's rows are left out for the hub; the next set's are not yet (the hub
    // might be a backup restored between the two, which lacks them).
    let back = changes_for(&a, &hub);
    let keys: Vec<_> = back.iter().map(|c| c.key[0].clone()).collect();
    assert!(keys.iter().all(|k| *k == Value::from("b2")), "{back:?}");
    assert!(!keys.is_empty());
}

/// The value of `sql` (one row, one column) in `db`.
fn one(db: &Database, sql: &str) -> Value {
    db.value(sql, ()).unwrap()
}

#[test]
fn a_write_after_a_merge_in_the_same_transaction_wins() {
    // A transaction's changes share one clock time, taken again once the clock moves past it:
    // kept, the update below was stamped before the merged change it overwrote, and lost.
    let schema = "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)";
    let (a, b) = (with_synced(schema, &["t"]), with_synced(schema, &["t"]));
    a.exec("INSERT INTO t VALUES (1, 'a0'), (2, 'x')").unwrap();
    sync(&a, &b);
    a.transaction(|tx| {
        tx.exec("UPDATE t SET v = 'a1' WHERE id = 2")?;
        std::thread::sleep(std::time::Duration::from_millis(5));
        b.exec("UPDATE t SET v = 'b' WHERE id = 1").unwrap();
        tx.apply_changes(&b.changes_since(0, None).unwrap().changes)?;
        // Written after seeing 'b'.
        tx.exec("UPDATE t SET v = 'a2' WHERE id = 1")?;
        Ok::<_, pluresdb_core::Error>(())
    })
    .unwrap();
    for _ in 0..2 {
        sync(&a, &b);
    }
    let v = "SELECT v FROM t WHERE id = 1";
    assert_eq!((one(&a, v), one(&b, v)), ("a2".into(), "a2".into()));
}

#[test]
fn a_column_added_in_a_transaction_syncs_the_values_written_after_it() {
    let schema = "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)";
    let (a, b) = (with_synced(schema, &["t"]), with_synced(schema, &["t"]));
    b.exec("ALTER TABLE t ADD COLUMN d TEXT DEFAULT 'dflt'")
        .unwrap();
    a.exec(
        "BEGIN; INSERT INTO t VALUES (1, 'x');
         ALTER TABLE t ADD COLUMN d TEXT DEFAULT 'dflt';
         INSERT INTO t(id, v, d) VALUES (2, 'y', 'mine'); COMMIT",
    )
    .unwrap();
    for _ in 0..2 {
        sync(&a, &b);
    }
    assert_eq!(one(&b, "SELECT d FROM t WHERE id = 2"), "mine".into());
}

#[test]
fn a_table_synced_again_in_a_transaction_syncs_the_values_written_after_it() {
    let schema = "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
                  CREATE TABLE u(id INTEGER PRIMARY KEY, w TEXT)";
    let (a, b) = (
        with_synced(schema, &["t", "u"]),
        with_synced(schema, &["t", "u"]),
    );
    b.exec("ALTER TABLE t ADD COLUMN d TEXT DEFAULT 'dflt'")
        .unwrap();
    a.exec("INSERT INTO t VALUES (1, 'x')").unwrap();
    a.unsync_table("t").unwrap();
    a.exec("ALTER TABLE t ADD COLUMN d TEXT DEFAULT 'dflt'")
        .unwrap();
    a.transaction(|tx| {
        tx.exec("INSERT INTO u VALUES (1, 'first')")?;
        tx.sync_table("t")?;
        tx.exec("INSERT INTO t(id, v, d) VALUES (2, 'y', 'mine')")?;
        Ok::<_, pluresdb_core::Error>(())
    })
    .unwrap();
    for _ in 0..2 {
        sync(&a, &b);
    }
    assert_eq!(one(&b, "SELECT d FROM t WHERE id = 2"), "mine".into());
}
