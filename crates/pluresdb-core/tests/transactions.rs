//! Transactions: commit, rollback on error and panic, nesting, explicit BEGIN, isolation.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use pluresdb_core::{Database, Error, ErrorKind, OpenOptions, Value};

fn count(db: &Database) -> i64 {
    db.value("SELECT count(*) FROM t", ())
        .unwrap()
        .as_i64()
        .unwrap()
}

fn setup(db: &Database) {
    db.exec("CREATE TABLE t(x INTEGER PRIMARY KEY)").unwrap();
}

#[test]
fn ok_commits_err_rolls_back() {
    let db = Database::open_in_memory().unwrap();
    setup(&db);
    db.transaction(|tx| tx.run("INSERT INTO t VALUES (1)", ()).map(|_| ()))
        .unwrap();
    assert_eq!(count(&db), 1);
    let err = db
        .transaction(|tx| {
            tx.run("INSERT INTO t VALUES (2)", ())?;
            tx.run("INSERT INTO t VALUES (1)", ())?; // duplicate key
            Ok::<_, Error>(())
        })
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Constraint);
    assert_eq!(count(&db), 1, "the whole transaction rolled back");
    assert!(!db.in_transaction());
}

#[test]
fn a_panic_rolls_back_and_propagates() {
    let db = Database::open_in_memory().unwrap();
    setup(&db);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        db.transaction(|tx| {
            tx.run("INSERT INTO t VALUES (1)", ())?;
            panic!("boom");
            #[allow(unreachable_code)]
            Ok::<_, Error>(())
        })
    }));
    assert!(result.is_err());
    assert_eq!(count(&db), 0);
    db.run("INSERT INTO t VALUES (5)", ()).unwrap();
    assert_eq!(count(&db), 1, "the database is usable afterwards");
}

#[test]
fn nested_transactions_use_savepoints() {
    let db = Database::open_in_memory().unwrap();
    setup(&db);
    db.transaction(|tx| {
        tx.run("INSERT INTO t VALUES (1)", ())?;
        let inner: Result<(), Error> = tx.transaction(|tx2| {
            tx2.run("INSERT INTO t VALUES (2)", ())?;
            Err(Error::invalid("changed my mind"))
        });
        assert!(inner.is_err());
        // An inner closure that released its own savepoint and failed: its error, not the
        // failed rollback's ("no such savepoint"), reaches the caller.
        let inner: Result<(), Error> = tx.transaction(|tx2| {
            tx2.exec("RELEASE pluresdb_tx_1")?;
            Err(Error::invalid("mine"))
        });
        assert_eq!(inner.unwrap_err().message(), "mine");
        tx.transaction(|tx2| tx2.run("INSERT INTO t VALUES (3)", ()).map(|_| ()))?;
        assert!(tx.in_transaction());
        Ok::<_, Error>(())
    })
    .unwrap();
    assert_eq!(
        db.all_as::<(i64,)>("SELECT x FROM t ORDER BY x", ())
            .unwrap(),
        [(1,), (3,)]
    );
}

#[test]
fn user_error_types_work() {
    #[derive(Debug)]
    enum AppError {
        Db(#[allow(dead_code)] Error),
        Rule(&'static str),
    }
    impl From<Error> for AppError {
        fn from(e: Error) -> Self {
            AppError::Db(e)
        }
    }
    let db = Database::open_in_memory().unwrap();
    setup(&db);
    let r: Result<(), AppError> = db.transaction(|tx| {
        tx.run("INSERT INTO t VALUES (1)", ())?;
        Err(AppError::Rule("no"))
    });
    assert!(matches!(r, Err(AppError::Rule("no"))));
    assert_eq!(count(&db), 0);
    let r: Result<(), AppError> = db.transaction(|tx| {
        tx.run("INSERT INTO nowhere VALUES (1)", ())?;
        Ok(())
    });
    assert!(matches!(r, Err(AppError::Db(_))));
}

#[test]
fn explicit_begin_commit_in_sql_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path().join("t.db")).unwrap();
    setup(&db);
    db.exec("BEGIN").unwrap();
    db.run("INSERT INTO t VALUES (1)", ()).unwrap();
    assert!(db.in_transaction());
    // This thread reads its own uncommitted write.
    assert_eq!(count(&db), 1);
    // Another thread reads the last committed state without waiting.
    let other = db.clone();
    let seen = thread::spawn(move || count(&other)).join().unwrap();
    assert_eq!(seen, 0);
    db.exec("COMMIT").unwrap();
    assert!(!db.in_transaction());
    let other = db.clone();
    assert_eq!(thread::spawn(move || count(&other)).join().unwrap(), 1);
    db.exec("BEGIN; INSERT INTO t VALUES (2); ROLLBACK;")
        .unwrap();
    assert_eq!(count(&db), 1);
}

#[test]
fn another_threads_write_waits_for_the_transaction_and_never_joins_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path().join("t.db")).unwrap();
    setup(&db);
    let (started_tx, started_rx) = mpsc::channel();
    let (wrote_tx, wrote_rx) = mpsc::channel();
    let writer = db.clone();
    let handle = thread::spawn(move || {
        started_rx.recv().unwrap();
        writer.run("INSERT INTO t VALUES (100)", ()).unwrap();
        wrote_tx.send(()).unwrap();
    });
    let result: Result<(), Error> = db.transaction(|tx| {
        tx.run("INSERT INTO t VALUES (1)", ())?;
        started_tx.send(()).unwrap();
        // The other thread's insert must not land while we hold the transaction.
        assert!(wrote_rx.recv_timeout(Duration::from_millis(200)).is_err());
        Err(Error::invalid("roll back"))
    });
    assert!(result.is_err());
    wrote_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the other write proceeds after rollback");
    handle.join().unwrap();
    // Only the other thread's row exists: it did not join our rolled-back transaction.
    assert_eq!(
        db.all_as::<(i64,)>("SELECT x FROM t", ()).unwrap(),
        [(100,)]
    );
}

#[test]
fn a_thread_that_ends_inside_a_sql_transaction_gives_the_writer_back() {
    let dir = tempfile::tempdir().unwrap();
    let db = OpenOptions::new()
        .busy_timeout(Duration::from_millis(300))
        .open(dir.path().join("t.db"))
        .unwrap();
    setup(&db);
    let other = db.clone();
    thread::spawn(move || {
        other.exec("BEGIN").unwrap();
        other.run("INSERT INTO t VALUES (1)", ()).unwrap();
    })
    .join()
    .unwrap();
    // Its transaction was rolled back when it ended (it locked out every write before).
    db.run("INSERT INTO t VALUES (2)", ()).unwrap();
    assert!(!db.in_transaction());
    assert_eq!(db.all_as::<(i64,)>("SELECT x FROM t", ()).unwrap(), [(2,)]);
    // A thread that ends after committing leaves nothing to undo.
    let other = db.clone();
    thread::spawn(move || {
        other
            .exec("BEGIN; INSERT INTO t VALUES (3); COMMIT")
            .unwrap();
        other.exec("BEGIN").unwrap();
        other.run("INSERT INTO t VALUES (4)", ()).unwrap();
        other.exec("COMMIT").unwrap();
    })
    .join()
    .unwrap();
    db.run("INSERT INTO t VALUES (5)", ()).unwrap();
    assert_eq!(count(&db), 4);
}

#[test]
fn a_transaction_held_too_long_gives_busy_to_other_writers() {
    let dir = tempfile::tempdir().unwrap();
    let db = OpenOptions::new()
        .busy_timeout(Duration::from_millis(100))
        .open(dir.path().join("t.db"))
        .unwrap();
    setup(&db);
    db.exec("BEGIN").unwrap();
    db.run("INSERT INTO t VALUES (1)", ()).unwrap();
    let other = db.clone();
    let err = thread::spawn(move || other.run("INSERT INTO t VALUES (2)", ()).unwrap_err())
        .join()
        .unwrap();
    assert_eq!(err.kind(), ErrorKind::Busy);
    assert!(
        err.message()
            .contains("another thread kept a transaction open"),
        "{err}"
    );
    db.exec("COMMIT").unwrap();
    assert_eq!(
        db.value("SELECT group_concat(x) FROM t", ()).unwrap(),
        Value::Text("1".into())
    );
}

#[test]
fn temp_tables_and_connection_functions_behave_as_on_one_connection() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path().join("t.db")).unwrap();
    setup(&db);
    db.run("INSERT INTO t VALUES (41)", ()).unwrap();
    assert_eq!(
        db.value("SELECT last_insert_rowid()", ()).unwrap(),
        Value::Integer(41)
    );
    assert_eq!(db.value("SELECT changes()", ()).unwrap(), Value::Integer(1));
    db.exec("CREATE TEMP TABLE scratch(v); INSERT INTO scratch VALUES ('tmp');")
        .unwrap();
    assert_eq!(
        db.value("SELECT v FROM scratch", ()).unwrap(),
        Value::Text("tmp".into())
    );
    let other = db.clone();
    let v = thread::spawn(move || other.value("SELECT v FROM scratch", ()).unwrap())
        .join()
        .unwrap();
    assert_eq!(v, Value::Text("tmp".into()));
}

#[test]
fn a_statement_changing_many_rows_inside_a_transaction_succeeds() {
    // The statement may abort (NOT NULL), so SQLite keeps a statement journal; here it
    // outgrows memory and goes to a temporary file, written in chunks of the spill size; a
    // spill size over 128 KiB made this fail with "database or disk is full".
    for synced in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path().join("many.db")).unwrap();
        db.exec(
            "CREATE TABLE t(id TEXT PRIMARY KEY NOT NULL, note TEXT NOT NULL, n INTEGER NOT NULL)",
        )
        .unwrap();
        if synced {
            db.sync_table("t").unwrap();
        }
        db.exec(
            "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < 60000)
             INSERT INTO t SELECT printf('row-%08d', i), printf('%090d', i), 0 FROM k",
        )
        .unwrap();
        db.exec("BEGIN; UPDATE t SET n = n + 1; COMMIT")
            .unwrap_or_else(|e| panic!("synced = {synced}: {e}"));
        assert_eq!(
            db.value("SELECT sum(n) FROM t", ()).unwrap().as_i64(),
            Some(60000)
        );
    }
}

#[test]
fn a_transaction_that_read_before_another_process_wrote_says_why_it_cannot_write() {
    // A transaction begun with a plain BEGIN reads from a snapshot; once another process
    // (here a second handle) commits, it cannot write, at once and however long it would
    // wait. The error said "held the lock past the busy timeout; raise the busy timeout".
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("two.db");
    let db = Database::open(&path).unwrap();
    db.exec("CREATE TABLE t(x)").unwrap();
    let other = Database::open(&path).unwrap();
    db.exec("BEGIN").unwrap();
    db.all("SELECT * FROM t", ()).unwrap();
    other.run("INSERT INTO t VALUES (1)", ()).unwrap();
    let err = db.run("INSERT INTO t VALUES (2)", ()).unwrap_err();
    db.exec("ROLLBACK").unwrap();
    assert_eq!(err.kind(), ErrorKind::Busy);
    assert!(err.is_stale_snapshot());
    assert!(err.message().contains("BEGIN IMMEDIATE"), "{err}");
    assert!(!err.message().contains("busy timeout"), "{err}");
    // Begun as it says, it waits for the lock and writes.
    db.exec("BEGIN IMMEDIATE; INSERT INTO t VALUES (2); COMMIT")
        .unwrap();
    assert_eq!(
        db.value("SELECT count(*) FROM t", ()).unwrap(),
        Value::Integer(2)
    );
}
