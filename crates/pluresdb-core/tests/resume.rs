//! Going on with an interrupted read of changes from where it stopped (resume points).

use pluresdb_core::{ChangeRecord, Database, ResumePoint, SyncProgress, Value};
use serde_json::json;

const SCHEMA: &str = "CREATE TABLE t(id INTEGER PRIMARY KEY NOT NULL, v TEXT, w INTEGER)";

/// A database at `dir/name` syncing table `t`, with `rows` rows, as many nodes and an edge
/// from each node to the one before, opened again (a handle lists the rows it wrote lately, and reads for a peer that far
/// behind from that list: a fresh handle scans, as a server started on an existing file does).
fn source(dir: &tempfile::TempDir, name: &str, rows: i64) -> Database {
    let path = dir.path().join(name);
    {
        let db = Database::open(&path).unwrap();
        db.exec(SCHEMA).unwrap();
        db.sync_table("t").unwrap();
        db.transaction(|db| {
            for i in 0..rows {
                db.run("INSERT INTO t VALUES (?1, ?2, ?1)", (i, format!("row {i}")))?;
                db.put(&format!("n{i:05}"), &json!({ "i": i }))?;
                if i > 0 {
                    db.link(&format!("n{i:05}"), "next", &format!("n{:05}", i - 1), None)?;
                }
            }
            Ok::<_, pluresdb_core::Error>(())
        })
        .unwrap();
    }
    Database::open(&path).unwrap()
}

fn replica() -> Database {
    let db = Database::open_in_memory().unwrap();
    db.exec(SCHEMA).unwrap();
    db.sync_table("t").unwrap();
    db
}

/// Everything replicated, in a canonical text form.
fn dump(db: &Database) -> String {
    let mut out = String::new();
    for n in db.list("").unwrap() {
        out += &format!("node {} {}\n", n.id, json!(n.data));
    }
    for (f, r, t) in db
        .all_as::<(String, String, String)>(
            "SELECT from_id, relation, to_id FROM pluresdb_edges ORDER BY 1, 2, 3",
            (),
        )
        .unwrap()
    {
        out += &format!("edge {f} {r} {t}\n");
    }
    for row in db.all("SELECT * FROM t ORDER BY 1", ()).unwrap() {
        out += &format!("t {}\n", row.to_json());
    }
    out
}

/// The batches of a read of `a`'s changes for `b` (from `resume`, if given), each with the
/// point after it if any.
type Batches = Vec<(Vec<ChangeRecord>, Option<ResumePoint>)>;

fn read(a: &Database, b: &Database, since: u64, resume: Option<&ResumePoint>) -> (Batches, u64) {
    let mut batches = Vec::new();
    let db_version = a
        .for_each_change_resuming(since, b.site_id(), 500, 0, resume, |changes, point| {
            batches.push((changes.to_vec(), point));
            Ok(())
        })
        .unwrap();
    (batches, db_version)
}

fn count(batches: &[(Vec<ChangeRecord>, Option<ResumePoint>)]) -> usize {
    batches.iter().map(|(c, _)| c.len()).sum()
}

/// Merges into `b` the batches up to the point of batch `upto` (included), stored with the
/// last merge, as a session cut short after that point does.
fn merge_up_to(a: &Database, b: &Database, batches: &Batches, upto: usize) -> ResumePoint {
    let resets = b.cursor_resets().unwrap();
    for (changes, _) in &batches[..upto] {
        b.apply_changes_from(a.site_id(), changes).unwrap();
    }
    let (changes, point) = &batches[upto];
    let point = point.clone().expect("a point after that batch");
    b.apply_changes_resumable(a.site_id(), changes, &point, resets)
        .unwrap();
    point
}

/// Merges a whole set into `b` and records `b`'s cursor, as a completed session does.
fn complete(a: &Database, b: &Database, batches: &Batches, db_version: u64) {
    let mut noted = None;
    for (changes, _) in batches {
        noted = b
            .apply_changes_from(a.site_id(), changes)
            .unwrap()
            .noted
            .or(noted);
    }
    let progress = SyncProgress {
        cursor: Some(db_version),
        confirm_through: noted,
        ..Default::default()
    };
    b.record_sync(a.site_id(), &progress).unwrap();
}

/// Writes of every kind to nodes, edges and rows early and late in each one's scan order.
fn write_everywhere(a: &Database) {
    a.transaction(|db| {
        db.run("UPDATE t SET v = 'changed' WHERE id IN (3, 1999)", ())?;
        db.run("DELETE FROM t WHERE id IN (5, 1998)", ())?;
        db.run("UPDATE t SET id = 4000 WHERE id = 7", ())?;
        db.run(
            "INSERT INTO t VALUES (-1, 'new, first', 0), (5000, 'new, last', 0)",
            (),
        )?;
        db.put("n00001", &json!({ "i": "changed" }))?;
        db.delete("n00002")?;
        db.put("n01999", &json!({ "i": "changed too" }))?;
        db.put("a-new-first-node", &json!({}))?;
        db.link("n00001", "late", "n01999", None)?;
        db.unlink("n00020", "next", "n00019")?;
        db.unlink("n01990", "next", "n01989")?;
        Ok::<_, pluresdb_core::Error>(())
    })
    .unwrap();
}

#[test]
fn an_interrupted_read_goes_on_from_its_point_and_misses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Where to cut: the batches after which a point comes, and the collection each ends in.
    let probe = source(&dir, "probe.db", 2000);
    let (whole, _) = read(&probe, &replica(), 0, None);
    let cuts: Vec<(usize, String)> = (whole.iter().enumerate())
        .filter(|(_, (_, p))| p.is_some())
        .map(|(i, (c, _))| (i, c.last().unwrap().collection.to_string()))
        .collect();
    let in_each = |coll: &str| {
        let at: Vec<usize> = (cuts.iter())
            .filter(|(_, c)| c == coll)
            .map(|(i, _)| *i)
            .collect();
        assert!(at.len() > 1, "points in {coll}: {cuts:?}");
        [at[0], at[at.len() / 2]]
    };
    let mut tried = Vec::new();
    for coll in [pluresdb_core::NODES, pluresdb_core::EDGES, "t"] {
        tried.extend(in_each(coll));
    }
    tried.push(cuts.last().unwrap().0);
    for (n, upto) in tried.into_iter().enumerate() {
        let a = source(&dir, &format!("a{n}.db"), 2000);
        let b = replica();
        let (whole, _) = read(&a, &b, 0, None);
        let point = merge_up_to(&a, &b, &whole, upto);
        assert_eq!(b.resume_point(a.site_id()).unwrap(), Some(point.clone()));
        assert_eq!(point.producer(), Some(a.site_id()));
        let sent_before = count(&whole[..=upto]);
        write_everywhere(&a);
        let resume = b.resume_point(a.site_id()).unwrap();
        let (rest, db_version) = read(&a, &b, 0, resume.as_ref());
        complete(&a, &b, &rest, db_version);
        assert_eq!(
            dump(&b),
            dump(&a),
            "cut after batch {upto}: everything arrived"
        );
        // Each change once: what was written meanwhile after the point went with the rest of
        // the scan, and is not read again with what changed before it.
        let mut seen = std::collections::HashSet::new();
        for c in rest.iter().flat_map(|(c, _)| c) {
            let change = format!("{} {:?} {}", c.collection, c.key, c.field);
            assert!(
                seen.insert(change.clone()),
                "cut after batch {upto}: {change} twice"
            );
        }
        let (everything, _) = read(&a, &replica(), 0, None);
        assert!(
            count(&rest) + sent_before - 100 < count(&everything),
            "cut after batch {upto}: the part already sent is not sent again: {} after \
             {sent_before}, {} in all",
            count(&rest),
            count(&everything)
        );
        assert_eq!(
            b.resume_point(a.site_id()).unwrap(),
            None,
            "the set is complete"
        );
    }
}

#[test]
fn a_point_for_another_read_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let a = source(&dir, "a.db", 600);
    let backup = dir.path().join("backup.db");
    a.backup(&backup).unwrap();
    a.exec("INSERT INTO t VALUES (-1, 'after the backup', 0)")
        .unwrap();
    let other = source(&dir, "other.db", 600);
    let b = replica();
    let (whole, _) = read(&a, &b, 0, None);
    let mine = whole.iter().find_map(|(_, p)| p.clone()).unwrap();
    let (theirs, _) = read(&other, &b, 0, None);
    let theirs = theirs.iter().find_map(|(_, p)| p.clone()).unwrap();
    // Another database's point, a point read from another `since`, one given to another
    // peer, and bytes that are no point: each read is whole.
    let c = replica();
    for (point, since, to) in [
        (theirs, 0, &b),
        (mine.clone(), 1, &b),
        (mine.clone(), 0, &c),
        (ResumePoint::from_bytes(vec![1, 2, 3]), 0, &b),
    ] {
        let (batches, _) = read(&a, to, since, Some(&point));
        let (expected, _) = read(&a, to, since, None);
        assert_eq!(count(&batches), count(&expected));
    }
    let (good, _) = read(&a, &b, 0, Some(&mine));
    assert!(count(&good) < count(&whole), "the point itself is good");
    // A restored backup of `a` from before it gave the point did not give it, even once it has
    // written past the point's version: what it wrote since the backup, before the point's
    // key, would be left out.
    let restored = Database::open(&backup).unwrap();
    assert_eq!(restored.site_id(), a.site_id());
    while restored.db_version().unwrap() <= a.db_version().unwrap() {
        restored
            .exec("INSERT OR REPLACE INTO t VALUES (-2, 'restored', 0)")
            .unwrap();
    }
    let (batches, _) = read(&restored, &b, 0, Some(&mine));
    let (expected, _) = read(&restored, &b, 0, None);
    assert_eq!(count(&batches), count(&expected));
}

#[test]
fn a_peer_cannot_hand_on_another_databases_point() {
    let dir = tempfile::tempdir().unwrap();
    let a = source(&dir, "a.db", 600);
    let b = replica();
    let (whole, _) = read(&a, &b, 0, None);
    let point = whole.iter().find_map(|(_, p)| p.clone()).unwrap();
    // `c` sends `b` a's point as its own: b would offer it to a, and miss a's rows before it.
    let c = replica();
    let err = b
        .apply_changes_resumable(c.site_id(), &[], &point, 0)
        .unwrap_err();
    assert!(
        err.to_string().contains("resume point of another database"),
        "{err}"
    );
    assert_eq!(b.resume_point(a.site_id()).unwrap(), None);
    assert_eq!(b.resume_point(c.site_id()).unwrap(), None);
}

#[test]
fn points_are_dropped_when_the_cursors_are_set_back() {
    let dir = tempfile::tempdir().unwrap();
    let a = source(&dir, "a.db", 600);
    a.exec("CREATE TABLE u(id INTEGER PRIMARY KEY NOT NULL)")
        .unwrap();
    a.sync_table("u").unwrap();
    a.exec("INSERT INTO u VALUES (1)").unwrap();
    let b = replica();
    let (whole, _) = read(&a, &b, 0, None);
    let upto = whole.iter().position(|(_, p)| p.is_some()).unwrap();
    merge_up_to(&a, &b, &whole, upto);
    let point = b.resume_point(a.site_id()).unwrap();
    assert!(point.is_some());
    // Table u's row was left out (b does not sync it): once b does, every peer is asked for
    // everything again, and the point would skip the part that row may be in.
    let (rest, _) = read(&a, &b, 0, point.as_ref());
    let skipped: u64 = rest
        .iter()
        .map(|(c, _)| b.apply_changes_from(a.site_id(), c).unwrap().skipped)
        .sum();
    assert!(skipped > 0);
    b.exec("CREATE TABLE u(id INTEGER PRIMARY KEY NOT NULL)")
        .unwrap();
    b.sync_table("u").unwrap();
    assert_eq!(b.resume_point(a.site_id()).unwrap(), None);
}

#[test]
fn a_write_during_a_resumed_read_to_a_row_it_passed_is_not_lost() {
    let dir = tempfile::tempdir().unwrap();
    let a = source(&dir, "a.db", 2000);
    let b = replica();
    let (whole, _) = read(&a, &b, 0, None);
    let upto = whole.iter().position(|(_, p)| p.is_some()).unwrap();
    merge_up_to(&a, &b, &whole, upto);
    let resume = b.resume_point(a.site_id()).unwrap();
    // While the rest of the scan runs, the app changes a row the scan has just passed.
    let mut rest = Vec::new();
    let cursor = a
        .for_each_change_resuming(0, b.site_id(), 500, 0, resume.as_ref(), |changes, _| {
            if rest.is_empty() {
                let passed = changes.last().unwrap();
                assert_eq!(&*passed.collection, pluresdb_core::NODES);
                let Value::Text(id) = &passed.key[0] else {
                    panic!("a node id")
                };
                a.put(id, &json!({ "changed": "while read" })).unwrap();
            }
            rest.extend_from_slice(changes);
            Ok(())
        })
        .unwrap();
    complete(&a, &b, &vec![(rest, None)], cursor);
    // The next sync starts at the cursor the resumed read gave.
    let (next, db_version) = read(&a, &b, b.peer_cursor(a.site_id()).unwrap(), None);
    complete(&a, &b, &next, db_version);
    assert_eq!(dump(&b), dump(&a));
}
