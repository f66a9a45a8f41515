//! Deterministic network simulation (turmoil): a hub and two devices; one device is cut off,
//! both sides keep writing, the network heals, and everyone converges.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use pluresdb_core::Database;
use pluresdb_sync::{SessionOptions, run_session};
use serde_json::json;

const PORT: u16 = 9000;

fn open(dir: &tempfile::TempDir, name: &str) -> Database {
    let db = Database::open(dir.path().join(name)).unwrap();
    db.exec("CREATE TABLE notes(id TEXT PRIMARY KEY NOT NULL, body TEXT NOT NULL DEFAULT '', pinned INTEGER NOT NULL DEFAULT 0)").unwrap();
    db.sync_table("notes").unwrap();
    db
}

fn state(db: &Database) -> Vec<String> {
    let mut out: Vec<String> = db
        .all("SELECT * FROM notes ORDER BY id", ())
        .unwrap()
        .iter()
        .map(|r| r.to_json().to_string())
        .collect();
    out.extend(
        db.list("")
            .unwrap()
            .into_iter()
            .map(|n| format!("{} {}", n.id, json!(n.data))),
    );
    out
}

fn opts() -> SessionOptions {
    SessionOptions {
        // Simulated time runs on while sessions wait for real threads (database work), so
        // a loaded machine must not turn into a simulated timeout.
        timeout: Duration::from_secs(3600),
        ..SessionOptions::default()
    }
}

async fn sync_with_hub(db: &Database) -> Result<u64, Box<dyn std::error::Error>> {
    let tcp = turmoil::net::TcpStream::connect(("hub", PORT)).await?;
    let (ws, _) = tokio_tungstenite::client_async("ws://hub/", tcp).await?;
    let report = run_session(db.clone(), ws, &opts()).await?;
    Ok(report.received)
}

async fn wait_for(step: &AtomicU8, at_least: u8) {
    while step.load(Ordering::SeqCst) < at_least {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn partitioned_device_converges_after_the_network_heals() {
    let dir = tempfile::tempdir().unwrap();
    let hub = open(&dir, "hub.db");
    let laptop = open(&dir, "laptop.db");
    let phone = open(&dir, "phone.db");
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(36_000))
        .rng_seed(7)
        .build();
    let hub_db = hub.clone();
    sim.host("hub", move || {
        let db = hub_db.clone();
        async move {
            let listener = turmoil::net::TcpListener::bind(("0.0.0.0", PORT)).await?;
            loop {
                let (tcp, _) = listener.accept().await?;
                let db = db.clone();
                tokio::spawn(async move {
                    if let Ok(ws) = tokio_tungstenite::accept_async(tcp).await {
                        let _ = run_session(
                            db,
                            ws,
                            &SessionOptions {
                                watch: true,
                                ..opts()
                            },
                        )
                        .await;
                    }
                });
            }
        }
    });
    // 0: start, 1: the laptop's first note is on the hub, 2: phone cut off, 3: laptop wrote
    // and synced, 4: phone back and synced.
    let step = Arc::new(AtomicU8::new(0));
    let (laptop_db, laptop_step) = (laptop.clone(), step.clone());
    sim.client("laptop", async move {
        laptop_db.run(
            "INSERT INTO notes(id, body) VALUES ('l1', 'laptop before')",
            (),
        )?;
        sync_with_hub(&laptop_db).await?;
        laptop_step.store(1, Ordering::SeqCst);
        wait_for(&laptop_step, 2).await;
        // The phone's first note reached the hub before it was cut off: fetch it, then edit it.
        sync_with_hub(&laptop_db).await?;
        laptop_db.run(
            "INSERT INTO notes(id, body) VALUES ('l2', 'laptop during')",
            (),
        )?;
        let edited = laptop_db.run("UPDATE notes SET body = 'laptop edit' WHERE id = 'p1'", ())?;
        assert_eq!(edited.changes, 1, "the laptop has the phone's note");
        laptop_db.put("shared", &json!({"laptop": true}))?;
        sync_with_hub(&laptop_db).await?;
        laptop_step.store(3, Ordering::SeqCst);
        wait_for(&laptop_step, 4).await;
        sync_with_hub(&laptop_db).await?;
        Ok(())
    });
    let (phone_db, phone_step) = (phone.clone(), step.clone());
    sim.client("phone", async move {
        phone_db.run(
            "INSERT INTO notes(id, body) VALUES ('p1', 'phone before')",
            (),
        )?;
        // The phone must know l1 before it deletes it offline.
        wait_for(&phone_step, 1).await;
        sync_with_hub(&phone_db).await?;
        turmoil::partition("phone", "hub");
        phone_step.store(2, Ordering::SeqCst);
        // Offline: writes still work, and a sync attempt fails cleanly.
        phone_db.run("UPDATE notes SET pinned = 1 WHERE id = 'p1'", ())?;
        phone_db.run("DELETE FROM notes WHERE id = 'l1'", ())?;
        phone_db.put("shared", &json!({"phone": true}))?;
        let offline = tokio::time::timeout(Duration::from_secs(5), sync_with_hub(&phone_db)).await;
        assert!(
            !matches!(offline, Ok(Ok(_))),
            "sync must not succeed while partitioned"
        );
        wait_for(&phone_step, 3).await;
        turmoil::repair("phone", "hub");
        sync_with_hub(&phone_db).await?;
        phone_step.store(4, Ordering::SeqCst);
        Ok(())
    });
    sim.run().unwrap();
    let expected = state(&hub);
    assert_eq!(state(&laptop), expected);
    assert_eq!(state(&phone), expected);
    // Both sides' writes made during the partition survived: different fields merge,
    // the delete of l1 wins over nothing newer.
    let joined = expected.join("\n");
    assert!(
        joined.contains("\"id\":\"p1\",\"body\":\"laptop edit\",\"pinned\":1"),
        "{joined}"
    );
    assert!(joined.contains("\"id\":\"l2\""), "{joined}");
    assert!(!joined.contains("\"id\":\"l1\""), "{joined}");
    assert!(
        joined.contains("shared {\"laptop\":true,\"phone\":true}"),
        "{joined}"
    );
}
