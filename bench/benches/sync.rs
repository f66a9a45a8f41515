//! Sync benchmarks, with cr-sqlite side by side when `bench/peers/build-crsqlite.sh` has built
//! it: write overhead of a synced table (in one transaction, and in many small ones), merging
//! 100K remote changes, initial sync of a
//! ~100 MB database over loopback, and the delay before a peer sees a new change.
//!
//! `cargo bench -p pluresdb-bench --bench sync` (`ROWS`, `SYNC_MB` change the sizes, `ROUNDS`
//! the rounds of the write benchmarks; `ONLY=write|bulk|small|merge|net` runs one part).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pluresdb_bench::{median, time};
use pluresdb_core::{Database, Error};
use pluresdb_sync::SessionOptions;
use pluresdb_sync::net::{bind, serve, sync_with};
use rusqlite::{Connection, params};

const TABLE: &str = "CREATE TABLE todos(id TEXT PRIMARY KEY NOT NULL, title TEXT NOT NULL DEFAULT '', done INTEGER NOT NULL DEFAULT 0, notes TEXT NOT NULL DEFAULT '')";
const INSERT: &str = "INSERT INTO todos(id, title, done, notes) VALUES (?1, ?2, ?3, ?4)";
const UPDATE: &str = "UPDATE todos SET done = 1 - done WHERE id = ?1";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn key(i: usize) -> String {
    // UUID-like: random order, as real synced tables use.
    format!(
        "{:016x}-{:08x}",
        (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        i
    )
}

fn crsqlite() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/out/crsqlite.so");
    p.exists().then_some(p)
}

fn open_crsql(path: &Path, ext: &Path) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
        .unwrap();
    // SAFETY: loading the cr-sqlite extension built by bench/peers/build-crsqlite.sh.
    unsafe {
        conn.load_extension_enable().unwrap();
        conn.load_extension(ext, Some("sqlite3_crsqlite_init"))
            .unwrap();
        conn.load_extension_disable().unwrap();
    }
    conn
}

/// A cr-sqlite database at `path` with the `todos` table, replicated (a CRR) when `crr`.
fn crsql_todos(path: &Path, ext: &Path, crr: bool) -> Connection {
    let conn = open_crsql(path, ext);
    conn.execute_batch(TABLE).unwrap();
    if crr {
        conn.query_row("SELECT crsql_as_crr('main', 'todos')", [], |_| Ok(()))
            .unwrap();
    }
    conn
}

/// A PluresDB database at `path` with the `todos` table, synced when `synced`.
fn ours_todos(path: &Path, synced: bool) -> Database {
    let db = Database::open(path).unwrap();
    db.exec(TABLE).unwrap();
    if synced {
        db.sync_table("todos").unwrap();
    }
    db
}

fn insert_ours(db: &Database, rows: usize, offset: usize) -> Duration {
    time(|| {
        db.transaction(|tx| {
            let stmt = tx.prepare(INSERT)?;
            for i in offset..offset + rows {
                stmt.run((
                    key(i),
                    format!("title {i}"),
                    (i % 2) as i64,
                    "some notes about this todo item",
                ))?;
            }
            Ok::<_, Error>(())
        })
        .unwrap();
    })
}

fn insert_rusqlite(conn: &mut Connection, rows: usize, offset: usize) -> Duration {
    time(|| {
        let tx = conn.transaction().unwrap();
        {
            let mut stmt = tx.prepare_cached(INSERT).unwrap();
            for i in offset..offset + rows {
                stmt.execute(params![
                    key(i),
                    format!("title {i}"),
                    (i % 2) as i64,
                    "some notes about this todo item"
                ])
                .unwrap();
            }
        }
        tx.commit().unwrap();
    })
}

/// Flips `done` of the rows `keys` in one transaction.
fn update_ours(db: &Database, keys: impl IntoIterator<Item = impl AsRef<str>>) {
    db.transaction(|tx| {
        let stmt = tx.prepare(UPDATE)?;
        for k in keys {
            stmt.run((k.as_ref(),))?;
        }
        Ok::<_, Error>(())
    })
    .unwrap();
}

/// [`update_ours`] with rusqlite.
fn update_rusqlite(conn: &mut Connection, keys: impl IntoIterator<Item = impl AsRef<str>>) {
    let tx = conn.transaction().unwrap();
    {
        let mut stmt = tx.prepare_cached(UPDATE).unwrap();
        for k in keys {
            stmt.execute([k.as_ref()]).unwrap();
        }
    }
    tx.commit().unwrap();
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

/// `y` as a multiple of `x`.
fn ratio(x: Duration, y: Duration) -> String {
    format!("{:.2}x", y.as_secs_f64() / x.as_secs_f64())
}

/// Rounds of the write benchmarks (`ROUNDS`): their medians are reported.
fn rounds() -> usize {
    env("ROUNDS", 5)
}

fn write_overhead(rows: usize) {
    let rounds = rounds();
    println!(
        "\n## Writes: synced table vs the same table unsynced ({rows} rows, one transaction, median of {rounds})\n"
    );
    println!(
        "A synced write logs its changes; the fold that writes them into the sync records runs \
         when changes are next read (a sync) or the log reaches 8 MiB, timed here as `fold` \
         right after each transaction. `all in` counts both. Rows written in bulk have their \
         sync records packed a few hundred to a blob.\n"
    );
    println!(
        "| engine | insert unsynced | insert synced | ratio | fold | all in | update unsynced | update synced | ratio | fold | all in |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let dir = tempfile::tempdir().unwrap();
    // insert unsynced, insert synced, insert fold, update unsynced, update synced, update fold
    let mut ours: [Vec<Duration>; 6] = Default::default();
    let fold = |db: &Database| time(|| db.fold_change_log().unwrap());
    for round in 0..rounds {
        for (k, synced) in [(0, false), (1, true)] {
            let path = dir.path().join(format!("ours-{round}-{synced}.db"));
            let db = ours_todos(&path, synced);
            if let Ok(c) = std::env::var("CACHE") {
                db.pragma(&format!("cache_size = -{c}")).unwrap();
            }
            ours[k].push(insert_ours(&db, rows, 0));
            if synced {
                ours[2].push(fold(&db));
            }
            ours[k + 3].push(time(|| update_ours(&db, (0..rows).map(key))));
            if synced {
                ours[5].push(fold(&db));
            }
        }
    }
    let [a, b, bf, c, d, df] = ours.map(median);
    println!(
        "| PluresDB | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        ms(a),
        ms(b),
        ratio(a, b),
        ms(bf),
        ratio(a, b + bf),
        ms(c),
        ms(d),
        ratio(c, d),
        ms(df),
        ratio(c, d + df)
    );
    if let Some(ext) = crsqlite() {
        let mut peer = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
        for round in 0..rounds {
            for (k, crr) in [(0, false), (1, true)] {
                let path = dir.path().join(format!("crsql-{round}-{crr}.db"));
                let mut conn = crsql_todos(&path, &ext, crr);
                peer[k].push(insert_rusqlite(&mut conn, rows, 0));
                peer[k + 2].push(time(|| update_rusqlite(&mut conn, (0..rows).map(key))));
                conn.query_row("SELECT crsql_finalize()", [], |_| Ok(()))
                    .unwrap();
            }
        }
        let [a, b, c, d] = peer.map(median);
        println!(
            "| cr-sqlite 0.16 (rusqlite) | {} | {} | {} | – | {} | {} | {} | {} | – | {} |",
            ms(a),
            ms(b),
            ratio(a, b),
            ratio(a, b),
            ms(c),
            ms(d),
            ratio(c, d),
            ratio(c, d)
        );
    } else {
        println!("| cr-sqlite | not built: run bench/peers/build-crsqlite.sh | | | | | | | | | |");
    }
}

/// `transactions` transactions of `per_tx` updates of random rows of a `rows`-row table.
fn small_updates(rows: usize, transactions: usize, per_tx: usize, mut run: impl FnMut(&[String])) {
    let mut x: u64 = 12345;
    for _ in 0..transactions {
        let keys: Vec<String> = (0..per_tx)
            .map(|_| {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                key((x >> 33) as usize % rows)
            })
            .collect();
        run(&keys);
    }
}

/// The same updates in many small transactions, as an app makes them between syncs: here the
/// fold's batching (one sorted pass for all of them) pays off most.
fn small_transactions(rows: usize) {
    let rounds = rounds();
    let (transactions, per_tx) = (1000, rows.div_ceil(1000));
    println!(
        "\n## {transactions} transactions of {per_tx} updates of random rows ({rows}-row table, median of {rounds})\n"
    );
    println!("| engine | unsynced | synced | ratio | fold | all in |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    let dir = tempfile::tempdir().unwrap();
    // unsynced, synced, fold
    let mut ours: [Vec<Duration>; 3] = Default::default();
    for (round, synced) in (0..rounds).flat_map(|r| [(r, false), (r, true)]) {
        let db = ours_todos(
            &dir.path().join(format!("small-{round}-{synced}.db")),
            synced,
        );
        insert_ours(&db, rows, 0);
        db.fold_change_log().unwrap();
        let write =
            time(|| small_updates(rows, transactions, per_tx, |keys| update_ours(&db, keys)));
        ours[usize::from(synced)].push(write);
        if synced {
            ours[2].push(time(|| db.fold_change_log().unwrap()));
        }
    }
    let [plain, write, fold] = ours.map(median);
    println!(
        "| PluresDB | {} | {} | {} | {} | {} |",
        ms(plain),
        ms(write),
        ratio(plain, write),
        ms(fold),
        ratio(plain, write + fold)
    );
    if let Some(ext) = crsqlite() {
        let mut peer: [Vec<Duration>; 2] = Default::default();
        for (round, crr) in (0..rounds).flat_map(|r| [(r, false), (r, true)]) {
            let path = dir.path().join(format!("small-crsql-{round}-{crr}.db"));
            let mut conn = crsql_todos(&path, &ext, crr);
            insert_rusqlite(&mut conn, rows, 0);
            peer[usize::from(crr)].push(time(|| {
                small_updates(rows, transactions, per_tx, |keys| {
                    update_rusqlite(&mut conn, keys)
                })
            }));
            conn.query_row("SELECT crsql_finalize()", [], |_| Ok(()))
                .unwrap();
        }
        let [plain, crr] = peer.map(median);
        println!(
            "| cr-sqlite 0.16 (rusqlite) | {} | {} | {} | – | {} |",
            ms(plain),
            ms(crr),
            ratio(plain, crr),
            ratio(plain, crr)
        );
    }
}

fn merge(changes_wanted: usize) {
    println!("\n## Merging remote changes\n");
    let dir = tempfile::tempdir().unwrap();
    let src = ours_todos(&dir.path().join("src.db"), true);
    // Each inserted row is 4 changes here: its creation and 3 columns.
    let rows = changes_wanted / 4;
    insert_ours(&src, rows, 0);
    let set = src.changes_since(0, None).unwrap();
    let mut times = Vec::new();
    for round in 0..3 {
        let dst = ours_todos(&dir.path().join(format!("dst{round}.db")), true);
        times.push(time(|| {
            for batch in set.changes.chunks(2000) {
                dst.apply_changes(batch).unwrap();
            }
        }));
    }
    let t = median(times);
    println!("| engine | changes | time | changes/s |");
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| PluresDB apply_changes (batches of 2000) | {} | {:.0} ms | {:.0} |",
        set.changes.len(),
        t.as_secs_f64() * 1e3,
        set.changes.len() as f64 / t.as_secs_f64()
    );
    if let Some(ext) = crsqlite() {
        let mut conn = crsql_todos(&dir.path().join("crsrc.db"), &ext, true);
        // cr-sqlite records 3 changes per inserted row (its columns).
        insert_rusqlite(&mut conn, changes_wanted / 3, 0);
        type Crow = (
            String,
            Vec<u8>,
            String,
            rusqlite::types::Value,
            i64,
            i64,
            Vec<u8>,
            i64,
            i64,
        );
        let changes: Vec<Crow> = conn
            .prepare("SELECT \"table\", pk, cid, val, col_version, db_version, site_id, cl, seq FROM crsql_changes")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let mut times = Vec::new();
        for round in 0..3 {
            let mut dst = crsql_todos(&dir.path().join(format!("crdst{round}.db")), &ext, true);
            times.push(time(|| {
                for batch in changes.chunks(2000) {
                    let tx = dst.transaction().unwrap();
                    {
                        let mut stmt = tx
                            .prepare_cached("INSERT INTO crsql_changes (\"table\", pk, cid, val, col_version, db_version, site_id, cl, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
                            .unwrap();
                        for c in batch {
                            stmt.execute(params![c.0, c.1, c.2, c.3, c.4, c.5, c.6, c.7, c.8]).unwrap();
                        }
                    }
                    tx.commit().unwrap();
                }
            }));
        }
        let t = median(times);
        println!(
            "| cr-sqlite INSERT INTO crsql_changes (batches of 2000) | {} | {:.0} ms | {:.0} |",
            changes.len(),
            t.as_secs_f64() * 1e3,
            changes.len() as f64 / t.as_secs_f64()
        );
    }
}

fn network(mb: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = ours_todos(&dir.path().join("server.db"), true);
    let notes = "x".repeat(450);
    let rows = mb * 1024 * 1024 / 512;
    server
        .transaction(|tx| {
            let stmt = tx.prepare(INSERT)?;
            for i in 0..rows {
                stmt.run((key(i), format!("title {i}"), 0, &notes))?;
            }
            Ok::<_, Error>(())
        })
        .unwrap();
    server.pragma("wal_checkpoint(TRUNCATE)").unwrap();
    let size = std::fs::metadata(dir.path().join("server.db"))
        .unwrap()
        .len();
    let client = ours_todos(&dir.path().join("client.db"), true);
    println!("\n## Sync over a WebSocket on 127.0.0.1\n");
    rt.block_on(async {
        let (listener, addr) = bind("127.0.0.1:0").await.unwrap();
        tokio::spawn(serve(server.clone(), listener, SessionOptions::default()));
        let url = format!("ws://{addr}");
        let start = Instant::now();
        let report = sync_with(client.clone(), &url, &SessionOptions::default()).await.unwrap();
        let t = start.elapsed();
        println!("| measure | result |");
        println!("| --- | ---: |");
        println!(
            "| initial sync of a {:.0} MB database ({} rows, {} changes) | {:.2} s = {:.1} MB/s |",
            size as f64 / 1048576.0,
            rows,
            report.received,
            t.as_secs_f64(),
            size as f64 / 1048576.0 / t.as_secs_f64()
        );
        // Live: a change on the server, seen by a watching client.
        let watcher = client.clone();
        let watch_url = url.clone();
        let watching = SessionOptions { watch: true, ..Default::default() };
        let stop = watching.stop.clone();
        let session = tokio::spawn(async move { sync_with(watcher, &watch_url, &watching).await });
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut delays = Vec::new();
        for i in 0..50 {
            let id = format!("live-{i}");
            let start = Instant::now();
            server.run("INSERT INTO todos(id, title) VALUES (?, 'live')", (id.clone(),)).unwrap();
            while client.get("SELECT 1 FROM todos WHERE id = ?", (id.clone(),)).unwrap().is_none() {
                assert!(start.elapsed() < Duration::from_secs(10));
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            delays.push(start.elapsed());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        delays.sort();
        println!(
            "| incremental change seen by the other peer (50 changes) | median {:.1} ms, p95 {:.1} ms, max {:.1} ms |",
            delays[25].as_secs_f64() * 1e3,
            delays[47].as_secs_f64() * 1e3,
            delays[49].as_secs_f64() * 1e3
        );
        // Ended as Ctrl-C ends it: the server hears a close, not a dropped connection.
        stop.stop();
        session.await.unwrap().unwrap();
    });
}

fn main() {
    let only = std::env::var("ONLY").unwrap_or_default();
    // `write` runs both write benchmarks; `bulk` and `small` one of them.
    if only.is_empty() || only == "write" || only == "bulk" {
        write_overhead(env("ROWS", 100_000));
    }
    if only.is_empty() || only == "write" || only == "small" {
        small_transactions(env("ROWS", 100_000));
    }
    if only.is_empty() || only == "merge" {
        merge(env("CHANGES", 100_000));
    }
    if only.is_empty() || only == "net" {
        network(env("SYNC_MB", 100));
    }
}
