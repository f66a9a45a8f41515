//! One `Database` shared by several threads: no "database is locked", nothing lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

use pluresdb_core::{Database, Error, Value};
use serde_json::json;

#[test]
fn four_threads_mixed_workload() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path().join("busy.db")).unwrap();
    db.exec("CREATE TABLE events(id INTEGER PRIMARY KEY, worker INTEGER, n INTEGER, payload TEXT)")
        .unwrap();
    const THREADS: u64 = 4;
    const ROUNDS: u64 = 300;
    let reads = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..THREADS)
        .map(|w| {
            let db = db.clone();
            let reads = reads.clone();
            thread::spawn(move || -> Result<(), Error> {
                let insert =
                    db.prepare("INSERT INTO events(worker, n, payload) VALUES (?, ?, ?)")?;
                let count = db.prepare("SELECT count(*) FROM events WHERE worker = ?")?;
                for i in 0..ROUNDS {
                    match i % 6 {
                        0 => {
                            insert.run((w, i, "single"))?;
                        }
                        1 => db.transaction(|tx| {
                            tx.run(
                                "INSERT INTO events(worker, n, payload) VALUES (?, ?, 'tx-a')",
                                (w, i),
                            )?;
                            tx.run(
                                "INSERT INTO events(worker, n, payload) VALUES (?, ?, 'tx-b')",
                                (w, i),
                            )?;
                            Ok::<_, Error>(())
                        })?,
                        2 => {
                            db.put(&format!("w{w}:{i}"), &json!({"worker": w, "i": i}))?;
                        }
                        3 => {
                            let _ = count.get((w,))?;
                            let rows =
                                db.all("SELECT * FROM events ORDER BY id DESC LIMIT 20", ())?;
                            assert!(rows.len() <= 20);
                            reads.fetch_add(1, Ordering::Relaxed);
                        }
                        4 => {
                            let n = db
                                .iterate("SELECT id FROM events WHERE worker = ?", (w,))?
                                .count();
                            assert!(n as u64 > 0);
                            let _ = db
                                .get_node(&format!("w{w}:{}", i - 2))?
                                .expect("own node is visible");
                            reads.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            db.exec("BEGIN IMMEDIATE")?;
                            db.run(
                                "UPDATE events SET payload = 'touched' WHERE worker = ? AND n = ?",
                                (w, i - 5),
                            )?;
                            db.exec("COMMIT")?;
                        }
                    }
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join()
            .expect("worker thread panicked")
            .expect("no errors such as 'database is locked'");
    }
    let per_round = |w: u64| {
        db.value("SELECT count(*) FROM events WHERE worker = ?", (w,))
            .unwrap()
    };
    for w in 0..THREADS {
        // 50 single inserts + 50 transactions of two rows.
        assert_eq!(per_round(w), Value::Integer(150), "worker {w}");
    }
    assert_eq!(db.node_count().unwrap(), THREADS * 50);
    assert_eq!(reads.load(Ordering::Relaxed), THREADS * 100);
    assert!(db.check().unwrap().is_empty());
}
