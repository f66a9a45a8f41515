//! Opening files: options, bad files, newer formats, read-only, locks, backup, check.

use std::time::Duration;

use pluresdb_core::{Database, ErrorKind, OpenOptions, Synchronous, Value};

fn temp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn data_survives_reopen_and_wal_is_on() {
    let dir = temp();
    let path = dir.path().join("app.db");
    {
        let db = Database::open(&path).unwrap();
        db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (42);")
            .unwrap();
        db.put("n1", &serde_json::json!({"a": 1})).unwrap();
        assert_eq!(
            db.pragma_value("journal_mode").unwrap(),
            Value::Text("wal".into())
        );
        assert_eq!(db.pragma_value("synchronous").unwrap(), Value::Integer(1));
        assert_eq!(db.pragma_value("foreign_keys").unwrap(), Value::Integer(1));
    }
    let db = Database::open(&path).unwrap();
    assert_eq!(db.value("SELECT x FROM t", ()).unwrap(), Value::Integer(42));
    assert_eq!(db.get_node("n1").unwrap().unwrap().data["a"], 1);
    let site = db.site_id();
    drop(db);
    assert_eq!(
        Database::open(&path).unwrap().site_id(),
        site,
        "site id is stable"
    );
}

#[test]
fn options_are_applied() {
    let dir = temp();
    let db = OpenOptions::new()
        .synchronous(Synchronous::Full)
        .foreign_keys(false)
        .wal(false)
        .open(dir.path().join("o.db"))
        .unwrap();
    assert_eq!(db.pragma_value("synchronous").unwrap(), Value::Integer(2));
    assert_eq!(db.pragma_value("foreign_keys").unwrap(), Value::Integer(0));
    assert_eq!(
        db.pragma_value("journal_mode").unwrap(),
        Value::Text("delete".into())
    );
}

#[test]
fn the_memory_map_is_off_by_default_and_can_be_turned_on() {
    let dir = temp();
    // Read on the writer (pragma_value) and on a reader connection (value).
    let mapped = |db: &Database| {
        let writer = db.pragma_value("mmap_size").unwrap();
        let reader = db.value("PRAGMA mmap_size", ()).unwrap();
        assert_eq!(writer, reader);
        writer
    };
    let db = Database::open(dir.path().join("m.db")).unwrap();
    assert_eq!(mapped(&db), Value::Integer(0));
    let db = OpenOptions::new()
        .mmap_size_mib(64)
        .open(dir.path().join("n.db"))
        .unwrap();
    assert_eq!(mapped(&db), Value::Integer(64 << 20));
    db.put("a", &serde_json::json!({"x": 1})).unwrap();
    assert_eq!(db.get_node("a").unwrap().unwrap().data["x"], 1);
}

#[test]
fn a_file_that_is_not_a_database_is_refused_and_untouched() {
    let dir = temp();
    let path = dir.path().join("notes.txt");
    let content = b"These are my notes, not a database. ".repeat(200);
    std::fs::write(&path, &content).unwrap();
    let err = Database::open(&path).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    assert!(err.to_string().contains("not a database"), "{err}");
    assert!(err.to_string().contains("notes.txt"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), content);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        1,
        "no -wal/-shm files were created: {leftovers:?}"
    );
}

#[test]
fn a_newer_format_is_refused_and_untouched() {
    let dir = temp();
    let path = dir.path().join("future.db");
    Database::open(&path)
        .unwrap()
        .run(
            "UPDATE _pluresdb_meta SET value = 99 WHERE key = 'format_version'",
            (),
        )
        .unwrap();
    let before = std::fs::read(&path).unwrap();
    let err = Database::open(&path).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    assert!(
        err.to_string().contains("newer PluresDB (format 99"),
        "{err}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn a_plain_sqlite_file_gains_pluresdb_tables_and_keeps_its_own() {
    let dir = temp();
    let path = dir.path().join("legacy.db");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch("PRAGMA user_version = 7; CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT); INSERT INTO notes(body) VALUES ('hi');").unwrap();
    }
    let db = Database::open(&path).unwrap();
    assert_eq!(
        db.value("SELECT body FROM notes", ()).unwrap(),
        Value::Text("hi".into())
    );
    assert_eq!(
        db.pragma_value("user_version").unwrap(),
        Value::Integer(7),
        "user_version is the app's"
    );
    db.put("x", &serde_json::json!({})).unwrap();
}

#[test]
fn a_plain_sqlite_file_opened_read_only_survives_rollbacks() {
    let dir = temp();
    let path = dir.path().join("plain.db");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2);")
            .unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let ro = OpenOptions::new().read_only(true).open(&path).unwrap();
    ro.exec("BEGIN; ROLLBACK").unwrap();
    ro.exec("BEGIN; SELECT * FROM t; ROLLBACK").unwrap();
    assert_eq!(
        ro.value("SELECT count(*) FROM t", ()).unwrap(),
        pluresdb_core::Value::Integer(2)
    );
    drop(ro);
    // What the README promises: read-only leaves the file byte for byte as it was.
    assert!(std::fs::read(&path).unwrap() == before, "the file changed");
}

#[test]
fn read_only_refuses_writes_and_never_creates() {
    let dir = temp();
    let path = dir.path().join("ro.db");
    let err = OpenOptions::new().read_only(true).open(&path).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(!path.exists());
    Database::open(&path)
        .unwrap()
        .exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
        .unwrap();
    let ro = OpenOptions::new().read_only(true).open(&path).unwrap();
    assert!(ro.is_read_only());
    assert_eq!(ro.value("SELECT x FROM t", ()).unwrap(), Value::Integer(1));
    let err = ro.run("INSERT INTO t VALUES (2)", ()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ReadOnly);
    let err = ro.put("n", &serde_json::json!({})).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ReadOnly);
    assert_eq!(
        ro.value("SELECT count(*) FROM t", ()).unwrap(),
        Value::Integer(1)
    );
}

#[test]
fn missing_directory_and_empty_path_are_clear() {
    let dir = temp();
    let err = Database::open(dir.path().join("no/such/dir/x.db")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(
        err.message().contains("does not exist; create it first"),
        "{err}"
    );
    let err = Database::open("").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let err = Database::open(dir.path()).unwrap_err();
    assert!(err.message().contains("is a directory"), "{err}");
}

#[test]
fn a_database_locked_by_another_process_gives_busy_and_loses_nothing() {
    let dir = temp();
    let path = dir.path().join("locked.db");
    let db = OpenOptions::new()
        .busy_timeout(Duration::from_millis(100))
        .open(&path)
        .unwrap();
    db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();
    let other = rusqlite::Connection::open(&path).unwrap();
    other
        .execute_batch("BEGIN EXCLUSIVE; INSERT INTO t VALUES (99);")
        .unwrap();
    let started = std::time::Instant::now();
    let err = db.run("INSERT INTO t VALUES (2)", ()).unwrap_err();
    assert!(
        started.elapsed() >= Duration::from_millis(90),
        "waited for the busy timeout"
    );
    assert_eq!(err.kind(), ErrorKind::Busy);
    assert!(err.to_string().contains("busy timeout"), "{err}");
    other.execute_batch("ROLLBACK").unwrap();
    assert_eq!(db.all_as::<(i64,)>("SELECT x FROM t", ()).unwrap(), [(1,)]);
    db.run("INSERT INTO t VALUES (2)", ()).unwrap();
}

#[test]
fn a_damaged_file_is_reported_by_check() {
    let dir = temp();
    let path = dir.path().join("damaged.db");
    {
        let db = OpenOptions::new().wal(false).open(&path).unwrap();
        db.exec("CREATE TABLE big(x TEXT); CREATE INDEX big_x ON big(x);")
            .unwrap();
        db.transaction(|tx| {
            for i in 0..2000 {
                tx.run(
                    "INSERT INTO big VALUES (?)",
                    (format!("row number {i} with some padding text"),),
                )?;
            }
            Ok::<_, pluresdb_core::Error>(())
        })
        .unwrap();
    }
    let mut bytes = std::fs::read(&path).unwrap();
    let len = bytes.len();
    // Scribble over pages in the middle of the file (not the header).
    for b in &mut bytes[len / 2..len / 2 + 8192] {
        *b = 0x5A;
    }
    std::fs::write(&path, &bytes).unwrap();
    let result = Database::open(&path).and_then(|db| db.check());
    match result {
        Ok(problems) => assert!(!problems.is_empty(), "check must find the damage"),
        Err(e) => assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}"),
    }
}

#[test]
fn backup_makes_a_consistent_copy() {
    let dir = temp();
    let db = Database::open(dir.path().join("src.db")).unwrap();
    db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (3);")
        .unwrap();
    db.put("n", &serde_json::json!({"k": "v"})).unwrap();
    let dest = dir.path().join("copy.db");
    db.backup(&dest).unwrap();
    let copy = Database::open(&dest).unwrap();
    assert_eq!(
        copy.value("SELECT sum(x) FROM t", ()).unwrap(),
        Value::Integer(6)
    );
    assert_eq!(copy.get_node("n").unwrap().unwrap().data["k"], "v");
    assert!(copy.check().unwrap().is_empty());
    let err = db.backup(&dest).unwrap_err();
    assert!(err.message().contains("already exists"), "{err}");
}

#[test]
fn a_file_made_at_the_destination_during_a_backup_is_kept() {
    // Another program (or backup) takes the name while the copy is written: the finished
    // copy must not replace that file. Each round, the other program makes the file as soon
    // as the copy is under way, unless the backup got the name first; whoever made the file
    // first must own it.
    let dir = temp();
    let db = Database::open(dir.path().join("src.db")).unwrap();
    db.exec(
        "CREATE TABLE big(id INTEGER PRIMARY KEY, b BLOB);
         WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 16000)
         INSERT INTO big SELECT i, randomblob(1000) FROM c;",
    )
    .unwrap();
    let dest = dir.path().join("copy.db");
    let partial = dir.path().join("copy.db.partial");
    let mut theirs_kept = 0;
    for _ in 0..20 {
        let _ = std::fs::remove_file(&dest);
        let other = {
            let (dest, partial) = (dest.clone(), partial.clone());
            std::thread::spawn(move || {
                let started = std::time::Instant::now();
                while !partial.exists() && started.elapsed() < Duration::from_secs(10) {
                    std::thread::yield_now();
                }
                let made = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&dest);
                made.map(|mut f| std::io::Write::write_all(&mut f, b"not a backup").unwrap())
                    .is_ok()
            })
        };
        let backup = db.backup(&dest);
        let they_made_it = other.join().unwrap();
        assert!(!partial.exists(), "the unfinished copy was left behind");
        if they_made_it {
            let err = backup.expect_err("the backup replaced a file made during the copy");
            assert!(err.message().contains("already exists"), "{err}");
            assert_eq!(std::fs::read(&dest).unwrap(), b"not a backup");
            theirs_kept += 1;
        } else {
            backup.unwrap();
            assert!(Database::open(&dest).unwrap().check().unwrap().is_empty());
        }
        if theirs_kept >= 3 {
            break;
        }
    }
    assert!(
        theirs_kept > 0,
        "the other program never made the file during a copy"
    );
}

#[test]
fn a_backup_finishes_while_another_process_keeps_writing() {
    // An online backup copied 1024 pages at a time, and started over whenever another
    // connection (another process: the app, while `pluresdb backup` runs) committed between
    // two steps: against an app that writes often, it never finished.
    let dir = temp();
    let path = dir.path().join("src.db");
    let db = Database::open(&path).unwrap();
    db.exec(
        "CREATE TABLE big(id INTEGER PRIMARY KEY, b BLOB); CREATE TABLE w(id INTEGER PRIMARY KEY);
         WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 16000)
         INSERT INTO big SELECT i, randomblob(1000) FROM c;",
    )
    .unwrap();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (done, path) = (done.clone(), path.clone());
        std::thread::spawn(move || {
            let other = Database::open(&path).unwrap();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                other.run("INSERT INTO w DEFAULT VALUES", ()).unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let dest = dir.path().join("copy.db");
    {
        let (db, dest) = (db.clone(), dest.clone());
        std::thread::spawn(move || tx.send(db.backup(&dest)));
    }
    let result = rx.recv_timeout(Duration::from_secs(30));
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    result
        .expect("the backup never finished while another process wrote")
        .unwrap();
    let copy = Database::open(&dest).unwrap();
    assert!(copy.check().unwrap().is_empty());
    assert_eq!(
        copy.value("SELECT count(*) FROM big", ()).unwrap(),
        Value::Integer(16000)
    );
    // Inside a transaction the connection is writing, which a backup would wait for until
    // it ends: that is, for ever.
    let err = db
        .transaction(|tx| tx.backup(dir.path().join("in-tx.db")))
        .unwrap_err();
    assert!(
        err.message().contains("finish the open transaction"),
        "{err}"
    );
}

#[test]
fn check_reports_foreign_key_violations() {
    let db = OpenOptions::new()
        .foreign_keys(false)
        .open_in_memory()
        .unwrap();
    db.exec("CREATE TABLE p(id INTEGER PRIMARY KEY); CREATE TABLE c(pid REFERENCES p(id)); INSERT INTO c VALUES (5);").unwrap();
    let problems = db.check().unwrap();
    assert_eq!(
        problems,
        ["foreign key violation: c row 1 references a missing row in p"]
    );
}
