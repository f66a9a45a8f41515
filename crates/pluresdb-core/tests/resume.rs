//! Going on with an interrupted read of changes from where it stopped (resume points).

use pluresdb_core::{ChangeRecord, Database, ResumePoint, SyncProgress};
use serde_json::json;

const SCHEMA: &str = "CREATE TABLE t(id INTEGER PRIMARY KEY NOT NULL, v TEXT, w INTEGER)";

/// A database at `dir/name` syncing table `t`, with `rows` rows and as many nodes and some
/// edges, opened again (a handle lists the rows it wrote lately, and reads for a peer that far
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
                if i % 10 == 0 && i > 0 {
                    db.link(
                        &format!("n{i:05}"),
                        "next",
                        &format!("n{:05}", i - 10),
                        None,
                    )?;
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
        .for_each_change_resuming(since, Some(b.site_id()), 500, resume, |changes, point| {
            batches.push((changes.to_vec(), point));
            Ok(())
        })
        .unwrap();
    (batches, db_version)
}

fn count(batches: &Batches) -> usize {
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

#[test]
fn an_interrupted_read_goes_on_from_its_point_and_misses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let a = source(&dir, "a.db", 2000);
    let b = replica();
    let (whole, _) = read(&a, &b, 0, None);
    let points: Vec<usize> = (whole.iter().enumerate())
        .filter(|(_, (_, p))| p.is_some())
        .map(|(i, _)| i)
        .collect();
    assert!(points.len() > 4, "a scan passes points: {}", points.len());
    // Cut short in the middle (in the nodes, the first collection scanned).
    let upto = points[points.len() / 2];
    let point = merge_up_to(&a, &b, &whole, upto);
    assert_eq!(b.resume_points().unwrap(), vec![point.clone()]);
    assert_eq!(point.producer(), Some(a.site_id()));
    let sent_before: usize = whole[..=upto].iter().map(|(c, _)| c.len()).sum();

    // Meanwhile, writes before and after the point, of every kind.
    a.transaction(|db| {
        db.run("UPDATE t SET v = 'changed' WHERE id IN (3, 1999)", ())?;
        db.run("DELETE FROM t WHERE id IN (5, 1998)", ())?;
        db.run(
            "INSERT INTO t VALUES (-1, 'new, first', 0), (5000, 'new, last', 0)",
            (),
        )?;
        db.put("n00001", &json!({ "i": "changed" }))?;
        db.delete("n00002")?;
        db.put("n01999", &json!({ "i": "changed too" }))?;
        db.put("a-new-first-node", &json!({}))?;
        db.link("n00001", "late", "n01999", None)?;
        Ok::<_, pluresdb_core::Error>(())
    })
    .unwrap();

    let resume = b.resume_points().unwrap();
    let (rest, db_version) = read(&a, &b, 0, resume.first());
    complete(&a, &b, &rest, db_version);
    assert_eq!(dump(&b), dump(&a), "the two reads sent everything");
    let (everything, _) = read(&a, &replica(), 0, None);
    assert!(
        count(&rest) + sent_before / 2 < count(&everything),
        "the part already sent is not sent again: {} after {sent_before}, {} in all",
        count(&rest),
        count(&everything)
    );
    assert!(b.resume_points().unwrap().is_empty(), "the set is complete");
}

#[test]
fn a_point_for_another_read_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let a = source(&dir, "a.db", 600);
    let other = source(&dir, "other.db", 600);
    let backup = dir.path().join("backup.db");
    a.backup(&backup).unwrap();
    a.exec("INSERT INTO t VALUES (-1, 'after the backup', 0)")
        .unwrap();
    let b = replica();
    let (whole, _) = read(&a, &b, 0, None);
    let mine = whole.iter().find_map(|(_, p)| p.clone()).unwrap();
    let (theirs, _) = read(&other, &b, 0, None);
    let theirs = theirs.iter().find_map(|(_, p)| p.clone()).unwrap();
    // Another database's point, a point read from another `since`, and bytes that are no
    // point: each read is whole.
    for (point, since) in [
        (theirs, 0),
        (mine.clone(), 1),
        (ResumePoint::from_bytes(vec![1, 2, 3]), 0),
    ] {
        let (batches, _) = read(&a, &b, since, Some(&point));
        let (expected, _) = read(&a, &b, since, None);
        assert_eq!(count(&batches), count(&expected));
    }
    // A point past what the database holds (read from it after a backup that was then
    // restored) too.
    let restored = Database::open(&backup).unwrap();
    assert_eq!(restored.site_id(), a.site_id());
    let (batches, _) = read(&restored, &b, 0, Some(&mine));
    let (expected, _) = read(&restored, &b, 0, None);
    assert_eq!(count(&batches), count(&expected));
    let (good, _) = read(&a, &b, 0, Some(&mine));
    assert!(count(&good) < count(&whole), "the point itself is good");
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
    assert_eq!(b.resume_points().unwrap().len(), 1);
    // Table u's row was left out (b does not sync it): once b does, every peer is asked for
    // everything again, and the point would skip the part that row may be in.
    let (rest, _) = read(&a, &b, 0, b.resume_points().unwrap().first());
    let skipped: u64 = rest
        .iter()
        .map(|(c, _)| b.apply_changes_from(a.site_id(), c).unwrap().skipped)
        .sum();
    assert!(skipped > 0);
    b.exec("CREATE TABLE u(id INTEGER PRIMARY KEY NOT NULL)")
        .unwrap();
    b.sync_table("u").unwrap();
    assert!(b.resume_points().unwrap().is_empty());
}
