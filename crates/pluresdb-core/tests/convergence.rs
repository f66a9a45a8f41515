//! Property tests: random writes on 2 to 4 replicas (some stopping and resuming a table's
//! sync meanwhile), random partial syncs with duplicated and reordered batches, and syncs cut
//! short at a resume point and gone on with later;
//! after a full sync round every replica holds the same state, and it is the state the merge
//! rules give for every write any replica made (so no acknowledged write is lost unless a
//! later write overrode it). After every merge, no reader shows an edge at a node that is not
//! live (a link merged next to a concurrent delete of its node waits hidden).

use pluresdb_core::{ChangeRecord, Database, Direction, SyncProgress, Value};
use pluresdb_crdt::Hlc;
use pluresdb_crdt::{Change, Model};
use proptest::prelude::*;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug)]
enum Op {
    Put {
        r: usize,
        node: u8,
        field: u8,
        value: i64,
    },
    Replace {
        r: usize,
        node: u8,
        field: u8,
        value: i64,
    },
    DeleteNode {
        r: usize,
        node: u8,
    },
    Link {
        r: usize,
        from: u8,
        to: u8,
        rel: u8,
    },
    Unlink {
        r: usize,
        from: u8,
        to: u8,
        rel: u8,
    },
    Upsert {
        r: usize,
        row: u8,
        title: u8,
    },
    SetDone {
        r: usize,
        row: u8,
        done: bool,
    },
    DeleteRow {
        r: usize,
        row: u8,
    },
    Sync {
        from: usize,
        to: usize,
        take: u8,
        duplicate: bool,
        reverse: bool,
    },
    /// Replica `r` stops syncing `todos` (its writes to it wait), or syncs it again.
    Pause {
        r: usize,
    },
    /// A sync that goes on from where the last one from `from` to `to` was cut short, and is
    /// itself cut short after its `cut`-th resume point (if it gets that far).
    Resume {
        from: usize,
        to: usize,
        cut: u8,
    },
}

fn op(replicas: usize) -> impl Strategy<Value = Op> {
    let r = 0..replicas;
    prop_oneof![
        1 => (r.clone(), 0u8..4, 0u8..3, 0i64..100).prop_map(|(r, node, field, value)| Op::Put {
            r,
            node,
            field,
            value
        }),
        1 => (r.clone(), 0u8..4, 0u8..3, 0i64..100).prop_map(|(r, node, field, value)| Op::Replace {
            r,
            node,
            field,
            value
        }),
        1 => (r.clone(), 0u8..4).prop_map(|(r, node)| Op::DeleteNode { r, node }),
        1 => (r.clone(), 0u8..4, 0u8..4, 0u8..2).prop_map(|(r, from, to, rel)| Op::Link {
            r,
            from,
            to,
            rel
        }),
        1 => (r.clone(), 0u8..4, 0u8..4, 0u8..2).prop_map(|(r, from, to, rel)| Op::Unlink {
            r,
            from,
            to,
            rel
        }),
        1 => (r.clone(), 0u8..4, 0u8..5).prop_map(|(r, row, title)| Op::Upsert { r, row, title }),
        1 => (r.clone(), 0u8..4, any::<bool>()).prop_map(|(r, row, done)| Op::SetDone { r, row, done }),
        1 => (r.clone(), 0u8..4).prop_map(|(r, row)| Op::DeleteRow { r, row }),
        1 => r.clone().prop_map(|r| Op::Pause { r }),
        3 => (r.clone(), r.clone(), 0u8..3).prop_map(|(from, to, cut)| Op::Resume { from, to, cut }),
        1 => (r.clone(), r, 0u8..10, any::<bool>(), any::<bool>()).prop_map(
            |(from, to, take, duplicate, reverse)| Op::Sync {
                from,
                to,
                take,
                duplicate,
                reverse
            }
        ),
    ]
}

/// A replica in `dir`: the handle that writes and merges, and a second one on its file that
/// reads changes for resumable syncs (a handle that did not write them scans the records in
/// key order, which is what gives resume points; the writer looks its recent rows up).
fn replica(dir: &tempfile::TempDir, i: usize) -> (Database, Database) {
    let path = dir.path().join(format!("r{i}.db"));
    let db = Database::open(&path).unwrap();
    db.exec("CREATE TABLE todos(id TEXT PRIMARY KEY NOT NULL, title TEXT NOT NULL DEFAULT '', done INTEGER NOT NULL DEFAULT 0)").unwrap();
    db.sync_table("todos").unwrap();
    (db, Database::open(&path).unwrap())
}

/// [`Op::Resume`]: `reader` reads `a`'s changes for `b` in batches of 2 from where the last
/// such sync stopped; `b` merges them up to the `cut`-th point (storing it), or all of them
/// and records its cursor.
fn resume(a: &Database, reader: &Database, b: &Database, cut: u8) {
    let since = b.peer_cursor(a.site_id()).unwrap();
    let point = b.resume_point(a.site_id()).unwrap();
    let mut batches = Vec::new();
    let db_version = reader
        .for_each_change_resuming(
            since,
            b.site_id(),
            2,
            0,
            point.as_ref(),
            |changes, point| {
                batches.push((changes.to_vec(), point));
                Ok(())
            },
        )
        .unwrap();
    let resets = b.cursor_resets().unwrap();
    let mut points = 0;
    for (changes, point) in batches {
        match point {
            Some(point) if points == cut => {
                b.apply_changes_resumable(a.site_id(), &changes, &point, resets)
                    .unwrap();
                return;
            }
            Some(_) => points += 1,
            None => {}
        }
        b.apply_changes_from(a.site_id(), &changes).unwrap();
    }
    b.record_sync(
        a.site_id(),
        &SyncProgress {
            cursor: Some(db_version),
            ..Default::default()
        },
    )
    .unwrap();
}

type Reference = Model<Option<Value>>;

fn to_model(c: &ChangeRecord) -> Change<Option<Value>> {
    Change {
        collection: c.collection.to_string(),
        key: format!("{:?}", c.key).into_bytes(),
        field: c.field.to_string(),
        value: c.value.clone(),
        version: c.version,
        cl: c.cl,
        origin_version: 0,
    }
}

/// The state of a replica, as a model built from everything it would send.
fn state(db: &Database) -> Reference {
    let mut m = Model::new();
    for c in db.changes_since(0, None).unwrap().changes {
        m.apply(&to_model(&c));
    }
    m
}

/// Runs one write; returns the changes it made (this replica's new local writes).
fn write(db: &Database, op: &Op) -> Vec<ChangeRecord> {
    let before = db.db_version().unwrap();
    let node = |n: u8| format!("n{n}");
    let _ = match op {
        Op::Put { node: n, field, value, .. } => db.put(&node(*n), &json!({ format!("f{field}"): value })).map(|_| ()),
        Op::Replace { node: n, field, value, .. } => db.replace(&node(*n), &json!({ format!("f{field}"): value })).map(|_| ()),
        Op::DeleteNode { node: n, .. } => db.delete(&node(*n)).map(|_| ()),
        Op::Link { from, to, rel, .. } => db.link(&node(*from), &format!("r{rel}"), &node(*to), Some(&json!({"w": from}))).map(|_| ()),
        Op::Unlink { from, to, rel, .. } => db.unlink(&node(*from), &format!("r{rel}"), &node(*to)).map(|_| ()),
        Op::Upsert { row, title, .. } => db
            .run("INSERT INTO todos(id, title) VALUES (?1, ?2) ON CONFLICT(id) DO UPDATE SET title = excluded.title", (format!("t{row}"), format!("title {title}")))
            .map(|_| ()),
        Op::SetDone { row, done, .. } => db.run("UPDATE todos SET done = ?2 WHERE id = ?1", (format!("t{row}"), *done)).map(|_| ()),
        Op::DeleteRow { row, .. } => db.run("DELETE FROM todos WHERE id = ?1", (format!("t{row}"),)).map(|_| ()),
        Op::Sync { .. } | Op::Resume { .. } | Op::Pause { .. } => Ok(()),
    };
    own_writes(db, before)
}

/// What `db` wrote as its own (its site's versions) after `db_version` `before`.
fn own_writes(db: &Database, before: u64) -> Vec<ChangeRecord> {
    let me = db.site_id();
    db.changes_since(before, None)
        .unwrap()
        .changes
        .into_iter()
        .filter(|c| c.version.site == me)
        .collect()
}

/// Runs `merge` into `b`, which must write nothing as `b`'s own (every version it stores is
/// the peer's).
fn merged(b: &Database, merge: impl FnOnce()) {
    let before = b.db_version().unwrap();
    merge();
    let own = own_writes(b, before);
    assert!(own.is_empty(), "a merge wrote changes of its own: {own:?}");
    edges_only_between_live_nodes(b);
}

/// The edge view, the edge count and the graph (caught up merge by merge, as the first call
/// loaded it) show the same edges, all between live nodes.
fn edges_only_between_live_nodes(db: &Database) {
    let live: BTreeSet<String> = db.list("").unwrap().into_iter().map(|n| n.id).collect();
    let shown = db
        .all_as::<(String, String, String)>(
            "SELECT from_id, relation, to_id FROM pluresdb_edges",
            (),
        )
        .unwrap();
    for (from, relation, to) in &shown {
        assert!(
            live.contains(from) && live.contains(to),
            "edge {from} -[{relation}]-> {to} shows at a node that is not live"
        );
    }
    assert_eq!(db.edge_count().unwrap() as usize, shown.len());
    for id in &live {
        let out = shown.iter().filter(|e| &e.0 == id).count();
        assert_eq!(
            db.degree(id, Direction::Out, None).unwrap(),
            out,
            "degree of {id}"
        );
    }
}

fn full_push(a: &Database, b: &Database) {
    let set = a
        .changes_since(b.peer_cursor(a.site_id()).unwrap(), Some(b.site_id()))
        .unwrap();
    b.apply_changes_from(a.site_id(), &set.changes).unwrap();
    b.record_sync(
        a.site_id(),
        &SyncProgress {
            cursor: Some(set.db_version),
            ..Default::default()
        },
    )
    .unwrap();
}

/// The rows of `todos` in `db`, by id: title and done.
fn rows(db: &Database) -> BTreeMap<String, (String, i64)> {
    db.all_as::<(String, String, i64)>("SELECT id, title, done FROM todos", ())
        .unwrap()
        .into_iter()
        .map(|(id, title, done)| (id, (title, done)))
        .collect()
}

/// A replica that stopped syncing `todos`: its rows then, and the newest version it had.
struct Paused {
    rows: BTreeMap<String, (String, i64)>,
    newest: Hlc,
}

/// The `(row id, field)` pairs that syncing `todos` again must stamp as written then, from
/// the rows when it paused to those now: the fields whose value changed, every one of a new
/// row (and its creation, `""`), the deletion of a row gone.
fn changed(
    then: &BTreeMap<String, (String, i64)>,
    now: &BTreeMap<String, (String, i64)>,
) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (id, (title, done)) in now {
        let mut add = |field: &str| out.insert((id.clone(), field.to_owned()));
        match then.get(id) {
            None => {
                add("");
                add("title");
                add("done");
            }
            Some((t, d)) => {
                if t != title {
                    add("title");
                }
                if d != done {
                    add("done");
                }
            }
        }
    }
    for id in then.keys().filter(|id| !now.contains_key(*id)) {
        out.insert((id.clone(), String::new()));
    }
    out
}

/// [`Op::Pause`]: replica `db` stops syncing `todos`, or syncs it again; what that stamps as
/// written then must be exactly what changed meanwhile, and is added to `reference`.
fn pause_or_resume(
    db: &Database,
    paused: &mut Option<Paused>,
    reference: &mut Reference,
) -> Result<(), TestCaseError> {
    match paused.take() {
        None => {
            let newest = (db.changes_since(0, None).unwrap().changes.iter())
                .map(|c| c.version.hlc)
                .max()
                .unwrap_or_default();
            assert!(db.unsync_table("todos").unwrap());
            *paused = Some(Paused {
                rows: rows(db),
                newest,
            });
        }
        Some(then) => {
            let before = db.db_version().unwrap();
            db.sync_table("todos").unwrap();
            let own = own_writes(db, before);
            let stamped: BTreeSet<(String, String)> = (own.iter())
                .filter(|c| &*c.collection == "todos" && c.version.hlc > then.newest)
                .map(|c| (c.key[0].as_str().unwrap().to_owned(), c.field.to_string()))
                .collect();
            prop_assert_eq!(stamped, changed(&then.rows, &rows(db)));
            for c in own {
                reference.apply(&to_model(&c));
            }
        }
    }
    Ok(())
}

fn check(replicas: usize, ops: &[Op]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let (dbs, readers): (Vec<Database>, Vec<Database>) =
        (0..replicas).map(|i| replica(&dir, i)).unzip();
    let mut reference = Reference::new();
    // Per replica, while it does not sync `todos`: what it had when it stopped.
    let mut paused: Vec<Option<Paused>> = (0..replicas).map(|_| None).collect();
    for op in ops {
        match op {
            Op::Pause { r } => pause_or_resume(&dbs[*r], &mut paused[*r], &mut reference)?,
            // A table that keeps none of the rows it had when it paused syncs again as a new
            // one (its rows deleted meanwhile are not deleted elsewhere, and come back only
            // when a peer is asked for the table again, which these syncs do not do): not
            // this test's case.
            Op::DeleteRow { r, row }
                if paused[*r].as_ref().is_some_and(|then| {
                    let now = rows(&dbs[*r]);
                    let id = format!("t{row}");
                    let kept = then.rows.keys().filter(|k| now.contains_key(*k)).count();
                    then.rows.contains_key(&id) && now.contains_key(&id) && kept == 1
                }) => {}
            Op::Sync {
                from,
                to,
                take,
                duplicate,
                reverse,
            } => {
                if from == to {
                    continue;
                }
                let (a, b) = (&dbs[*from], &dbs[*to]);
                let set = a
                    .changes_since(b.peer_cursor(a.site_id()).unwrap(), Some(b.site_id()))
                    .unwrap();
                let mut batch: Vec<ChangeRecord> = set.changes.clone();
                let complete = (*take as usize) >= 9 || batch.len() <= *take as usize;
                if !complete {
                    batch.truncate(*take as usize);
                }
                if *reverse {
                    batch.reverse();
                }
                if *duplicate {
                    let extra = batch.clone();
                    batch.extend(extra);
                }
                merged(b, || {
                    b.apply_changes_from(a.site_id(), &batch).unwrap();
                });
                if complete {
                    b.record_sync(
                        a.site_id(),
                        &SyncProgress {
                            cursor: Some(set.db_version),
                            ..Default::default()
                        },
                    )
                    .unwrap();
                }
            }
            Op::Resume { from, to, cut } => {
                if from != to {
                    merged(&dbs[*to], || {
                        resume(&dbs[*from], &readers[*from], &dbs[*to], *cut);
                    });
                }
            }
            Op::Put { r, .. }
            | Op::Replace { r, .. }
            | Op::DeleteNode { r, .. }
            | Op::Link { r, .. }
            | Op::Unlink { r, .. }
            | Op::Upsert { r, .. }
            | Op::SetDone { r, .. }
            | Op::DeleteRow { r, .. } => {
                for c in write(&dbs[*r], op) {
                    reference.apply(&to_model(&c));
                }
            }
        }
    }
    for (r, paused) in paused.iter_mut().enumerate() {
        if paused.is_some() {
            pause_or_resume(&dbs[r], paused, &mut reference)?;
        }
    }
    // Syncs cut short go on to their end first (the full syncs after them start from the
    // cursors these record: a change they missed would never arrive).
    for (i, a) in dbs.iter().enumerate() {
        for b in dbs.iter().filter(|b| b.site_id() != a.site_id()) {
            if b.resume_point(a.site_id()).unwrap().is_some() {
                merged(b, || resume(a, &readers[i], b, u8::MAX));
            }
        }
    }
    for _ in 0..2 {
        for a in &dbs {
            for b in &dbs {
                if a.site_id() != b.site_id() {
                    merged(b, || full_push(a, b));
                }
            }
        }
    }
    let first = state(&dbs[0]);
    for (i, db) in dbs.iter().enumerate() {
        prop_assert_eq!(&state(db), &first, "replica {} differs from replica 0", i);
        let nodes: Vec<String> = db
            .list("")
            .unwrap()
            .into_iter()
            .map(|n| format!("{} {}", n.id, json!(n.data)))
            .collect();
        let nodes0: Vec<String> = dbs[0]
            .list("")
            .unwrap()
            .into_iter()
            .map(|n| format!("{} {}", n.id, json!(n.data)))
            .collect();
        prop_assert_eq!(nodes, nodes0, "node SQL results differ on replica {}", i);
        let rows = db.all("SELECT * FROM todos ORDER BY id", ()).unwrap();
        let rows0 = dbs[0].all("SELECT * FROM todos ORDER BY id", ()).unwrap();
        prop_assert_eq!(rows, rows0, "table rows differ on replica {}", i);
        let edges = db
            .all("SELECT * FROM pluresdb_edges ORDER BY 1, 2, 3", ())
            .unwrap();
        let edges0 = dbs[0]
            .all("SELECT * FROM pluresdb_edges ORDER BY 1, 2, 3", ())
            .unwrap();
        prop_assert_eq!(edges, edges0, "edges differ on replica {}", i);
    }
    prop_assert_eq!(
        first,
        reference,
        "the replicas' state is not what the writes merge to"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn replicas_converge_to_the_merge_of_all_writes(
        (replicas, ops) in (2usize..=4).prop_flat_map(|n| (Just(n), proptest::collection::vec(op(n), 1..40)))
    ) {
        check(replicas, &ops)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    #[test]
    fn five_replicas_converge(ops in proptest::collection::vec(op(5), 1..60)) {
        check(5, &ops)?;
    }
}
