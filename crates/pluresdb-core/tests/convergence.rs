//! Property tests: random writes on 2 to 4 replicas, random partial syncs with duplicated
//! and reordered batches; after a full sync round every replica holds the same state, and it
//! is the state the merge rules give for every write any replica made (so no acknowledged
//! write is lost unless a later write overrode it).

use pluresdb_core::{ChangeRecord, Database, SyncProgress, Value};
use pluresdb_crdt::{Change, Model};
use proptest::prelude::*;
use serde_json::json;

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
}

fn op(replicas: usize) -> impl Strategy<Value = Op> {
    let r = 0..replicas;
    prop_oneof![
        (r.clone(), 0u8..4, 0u8..3, 0i64..100).prop_map(|(r, node, field, value)| Op::Put {
            r,
            node,
            field,
            value
        }),
        (r.clone(), 0u8..4, 0u8..3, 0i64..100).prop_map(|(r, node, field, value)| Op::Replace {
            r,
            node,
            field,
            value
        }),
        (r.clone(), 0u8..4).prop_map(|(r, node)| Op::DeleteNode { r, node }),
        (r.clone(), 0u8..4, 0u8..4, 0u8..2).prop_map(|(r, from, to, rel)| Op::Link {
            r,
            from,
            to,
            rel
        }),
        (r.clone(), 0u8..4, 0u8..4, 0u8..2).prop_map(|(r, from, to, rel)| Op::Unlink {
            r,
            from,
            to,
            rel
        }),
        (r.clone(), 0u8..4, 0u8..5).prop_map(|(r, row, title)| Op::Upsert { r, row, title }),
        (r.clone(), 0u8..4, any::<bool>()).prop_map(|(r, row, done)| Op::SetDone { r, row, done }),
        (r.clone(), 0u8..4).prop_map(|(r, row)| Op::DeleteRow { r, row }),
        (r.clone(), r, 0u8..10, any::<bool>(), any::<bool>()).prop_map(
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

fn replica() -> Database {
    let db = Database::open_in_memory().unwrap();
    db.exec("CREATE TABLE todos(id TEXT PRIMARY KEY NOT NULL, title TEXT NOT NULL DEFAULT '', done INTEGER NOT NULL DEFAULT 0)").unwrap();
    db.sync_table("todos").unwrap();
    db
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
        Op::Sync { .. } => Ok(()),
    };
    let me = db.site_id();
    db.changes_since(before, None)
        .unwrap()
        .changes
        .into_iter()
        .filter(|c| c.version.site == me)
        .collect()
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

fn check(replicas: usize, ops: &[Op]) -> Result<(), TestCaseError> {
    let dbs: Vec<Database> = (0..replicas).map(|_| replica()).collect();
    let mut reference = Reference::new();
    for op in ops {
        match op {
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
                b.apply_changes_from(a.site_id(), &batch).unwrap();
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
    for _ in 0..2 {
        for a in &dbs {
            for b in &dbs {
                if a.site_id() != b.site_id() {
                    full_push(a, b);
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
