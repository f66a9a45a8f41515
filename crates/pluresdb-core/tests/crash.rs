//! A writer process killed with SIGKILL mid-stream loses no transaction it reported committed,
//! and the file passes the integrity check.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pluresdb_core::{Database, Error};
use serde_json::json;

const CHILD_ENV: &str = "PLURESDB_CRASH_CHILD_DB";

/// The child: commits transactions forever (bounded to a minute), reporting each one.
fn child(path: &str) {
    let db = Database::open(path).unwrap();
    db.exec("CREATE TABLE IF NOT EXISTS ledger(n INTEGER PRIMARY KEY, payload TEXT NOT NULL)")
        .unwrap();
    let stdout = std::io::stdout();
    let started = Instant::now();
    let mut n: i64 = db
        .value("SELECT coalesce(max(n), -1) + 1 FROM ledger", ())
        .unwrap()
        .as_i64()
        .unwrap();
    while started.elapsed() < Duration::from_secs(60) {
        db.transaction(|tx| {
            tx.run("INSERT INTO ledger VALUES (?, ?)", (n, "x".repeat(500)))?;
            tx.put(&format!("entry:{n}"), &json!({"n": n}))?;
            Ok::<_, Error>(())
        })
        .unwrap();
        let mut out = stdout.lock();
        writeln!(out, "committed {n}").unwrap();
        out.flush().unwrap();
        n += 1;
    }
}

#[test]
fn killed_writer_loses_no_committed_transaction() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        child(&path);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.db");
    let mut all_reported: Vec<i64> = Vec::new();
    for round in 0..3 {
        let mut proc = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "killed_writer_loses_no_committed_transaction",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut reported = Vec::new();
        let lines = BufReader::new(proc.stdout.take().unwrap()).lines();
        let target = 150 + round * 97;
        for line in lines {
            let line = line.unwrap();
            // libtest may print its own text before ours on the first line.
            if let Some(pos) = line.find("committed ") {
                reported.push(
                    line[pos + "committed ".len()..]
                        .trim()
                        .parse::<i64>()
                        .unwrap(),
                );
                if reported.len() >= target {
                    break;
                }
            }
        }
        proc.kill().unwrap(); // SIGKILL on Unix
        proc.wait().unwrap();
        assert!(
            reported.len() >= target,
            "child reported {} commits",
            reported.len()
        );

        let db = Database::open(&path).unwrap();
        assert_eq!(
            db.check().unwrap(),
            Vec::<String>::new(),
            "integrity check after SIGKILL"
        );
        all_reported.extend(&reported);
        let max = *reported.last().unwrap();
        let present: Vec<(i64,)> = db.all_as("SELECT n FROM ledger ORDER BY n", ()).unwrap();
        let present: Vec<i64> = present.into_iter().map(|(n,)| n).collect();
        // The child commits more after its last report before the kill lands: those may be
        // there too. Every reported one must be, and commits are sequential, so no holes.
        let missing: Vec<&i64> = all_reported
            .iter()
            .filter(|n| present.binary_search(n).is_err())
            .collect();
        assert!(
            missing.is_empty(),
            "reported commits lost in round {round}: {missing:?}"
        );
        let expected: Vec<i64> = (0..present.len() as i64).collect();
        assert_eq!(present, expected, "commits are contiguous, round {round}");
        assert!(db.get_node(&format!("entry:{max}")).unwrap().is_some());
        // Each transaction is atomic: rows and nodes match one to one.
        let rows = db.value("SELECT count(*) FROM ledger", ()).unwrap();
        let nodes = db.value("SELECT count(*) FROM pluresdb_nodes", ()).unwrap();
        assert_eq!(rows, nodes);
    }
}

/// The backup child: copies the database at `path` to `path` + `.bak`.
fn backup_child(path: &str) {
    let db = Database::open(path).unwrap();
    db.backup(format!("{path}.bak")).unwrap();
}

#[test]
fn a_backup_killed_midway_leaves_no_file_that_passes_for_a_backup() {
    const BACKUP_CHILD_ENV: &str = "PLURESDB_CRASH_BACKUP_CHILD_DB";
    if let Ok(path) = std::env::var(BACKUP_CHILD_ENV) {
        backup_child(&path);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("src.db");
    let dest = dir.path().join("src.db.bak");
    let db = Database::open(&path).unwrap();
    // Large enough for the backup to take several steps of 1024 pages.
    db.exec(
        "CREATE TABLE big(id INTEGER PRIMARY KEY, b BLOB NOT NULL);
         WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 3000)
         INSERT INTO big SELECT i, randomblob(4000) FROM c;",
    )
    .unwrap();
    db.put("ada", &json!({"name": "Ada"})).unwrap();
    drop(db);
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_backup_killed_midway_leaves_no_file_that_passes_for_a_backup",
            "--test-threads=1",
        ])
        .env(BACKUP_CHILD_ENV, &path)
        .env(pluresdb_core::crash_point::CRASH_AT_ENV, "backup:copying")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(
        !status.success(),
        "the child was to abort during the backup"
    );
    // No backup was made: nothing at the destination claims to be one (a partial copy there
    // rolled back by its journal, opened later, is an empty database that checks fine).
    assert!(
        !dest.exists(),
        "a killed backup left a file at its destination"
    );
    // And backing up again works, and gives the whole database.
    let db = Database::open(&path).unwrap();
    db.backup(&dest).unwrap();
    let copy = Database::open(&dest).unwrap();
    assert_eq!(copy.check().unwrap(), Vec::<String>::new());
    assert_eq!(
        copy.value("SELECT count(*) FROM big", ()).unwrap().as_i64(),
        Some(3000)
    );
    assert!(copy.get_node("ada").unwrap().is_some());
    assert_eq!(copy.site_id(), db.site_id());
}

/// A backup started inside a transaction waited for ever (SQLite refuses to copy a database
/// its own connection is writing, and the backup retried without end); it is refused at once.
#[test]
fn a_backup_inside_a_transaction_is_refused_instead_of_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path().join("a.db")).unwrap();
    db.exec("CREATE TABLE t(id TEXT PRIMARY KEY NOT NULL, v INTEGER)")
        .unwrap();
    let dest = dir.path().join("b.db");
    let (tx_db, done) = (db.clone(), std::sync::mpsc::channel());
    let dest_in = dest.clone();
    std::thread::spawn(move || {
        let result = tx_db.transaction(|tx| {
            tx.run("INSERT INTO t VALUES ('x', 1)", ())?;
            tx.backup(&dest_in)
        });
        let _ = done.0.send(result);
    });
    let result = done
        .1
        .recv_timeout(Duration::from_secs(20))
        .expect("the backup inside a transaction never returned");
    let err = result.unwrap_err();
    assert!(err.message().contains("transaction"), "{err}");
    assert!(!dest.exists());
    // Nothing of the transaction was committed, and a backup outside one works.
    assert_eq!(
        db.value("SELECT count(*) FROM t", ()).unwrap().as_i64(),
        Some(0)
    );
    db.backup(&dest).unwrap();
}

/// The hot-journal child: an app's plain SQLite file (rollback journal), killed in the middle
/// of a transaction large enough to have written pages into the file.
fn hot_journal_child(path: &str) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = DELETE; PRAGMA cache_size = 10;
         CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, b BLOB);
         BEGIN;
         WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 2000)
         INSERT INTO t SELECT i, randomblob(1000) FROM c;",
    )
    .unwrap();
    pluresdb_core::crash_point::crash_point("app:mid-transaction");
}

/// A file whose writer was killed mid-transaction, opened read-only (`pluresdb --read-only
/// check`, which leaves the file byte for byte as it is): SQLite cannot roll the transaction
/// back without writing, and said only "attempt to write a readonly database", as if the
/// command had tried to write. The error says what happened and what to do.
#[test]
fn a_file_left_mid_transaction_opened_read_only_says_why_it_cannot_be_read() {
    const HOT_JOURNAL_CHILD_ENV: &str = "PLURESDB_CRASH_HOT_JOURNAL_CHILD_DB";
    if let Ok(path) = std::env::var(HOT_JOURNAL_CHILD_ENV) {
        hot_journal_child(&path);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_file_left_mid_transaction_opened_read_only_says_why_it_cannot_be_read",
            "--test-threads=1",
        ])
        .env(HOT_JOURNAL_CHILD_ENV, &path)
        .env(
            pluresdb_core::crash_point::CRASH_AT_ENV,
            "app:mid-transaction",
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the child was to abort mid-transaction");
    assert!(
        dir.path().join("app.db-journal").exists(),
        "a hot journal is left"
    );
    let err = pluresdb_core::OpenOptions::new()
        .read_only(true)
        .open(&path)
        .and_then(|db| db.check())
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("stopped in the middle of a transaction") && text.contains("writable"),
        "{text}"
    );
    // Opened writable once, the unfinished transaction is rolled back and the file is whole.
    let db = Database::open(&path).unwrap();
    assert_eq!(db.check().unwrap(), Vec::<String>::new());
    assert_eq!(
        db.value("SELECT count(*) FROM t", ()).unwrap().as_i64(),
        Some(0)
    );
}
