//! The SQL API against rusqlite used directly, on the same file settings, side by side.
//!
//! `cargo bench -p pluresdb-bench --bench sql_api` (set `ROWS` to change the table size).

use std::hint::black_box;
use std::path::Path;

use pluresdb_bench::{Comparison, compare, print_table, time};
use pluresdb_core::{Database, Error, Value};
use rusqlite::{Connection, params};

const SCHEMA: &str =
    "CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT NOT NULL, score REAL NOT NULL)";
const INSERT: &str = "INSERT INTO items(id, name, score) VALUES (?1, ?2, ?3)";
const SELECT_ONE: &str = "SELECT id, name, score FROM items WHERE id = ?1";
const SCAN: &str = "SELECT id, name, score FROM items";

/// One row of the benchmark table.
type Item = (i64, String, f64);

fn rusqlite_open(path: &Path) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
    )
    .unwrap();
    conn
}

fn names(rows: u64) -> Vec<String> {
    (0..rows).map(|i| format!("item-{i:08}")).collect()
}

fn insert_ours(db: &Database, names: &[String]) {
    db.exec("DELETE FROM items").unwrap();
    db.transaction(|tx| {
        let stmt = tx.prepare(INSERT)?;
        for (i, name) in names.iter().enumerate() {
            stmt.run((i as i64, name.as_str(), i as f64 * 0.5))?;
        }
        Ok::<_, Error>(())
    })
    .unwrap();
}

fn insert_peer(conn: &mut Connection, names: &[String]) {
    conn.execute_batch("DELETE FROM items").unwrap();
    let tx = conn.transaction().unwrap();
    {
        let mut stmt = tx.prepare_cached(INSERT).unwrap();
        for (i, name) in names.iter().enumerate() {
            stmt.execute(params![i as i64, name.as_str(), i as f64 * 0.5])
                .unwrap();
        }
    }
    tx.commit().unwrap();
}

fn main() {
    let rows: u64 = std::env::var("ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let lookups: u64 = rows.min(200_000);
    let rounds = 5;
    let dir = tempfile::tempdir().unwrap();
    let readers: usize = std::env::var("READERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let db = Database::options()
        .readers(readers)
        .open(dir.path().join("ours.db"))
        .unwrap();
    db.exec(SCHEMA).unwrap();
    let mut conn = rusqlite_open(&dir.path().join("peer.db"));
    conn.execute_batch(SCHEMA).unwrap();
    let names = names(rows);
    let mut results: Vec<Comparison> = Vec::new();
    let only = std::env::var("ONLY").unwrap_or_default();
    let run = |name: &str| only.is_empty() || name.contains(only.as_str());

    insert_ours(&db, &names);
    insert_peer(&mut conn, &names);
    if run("insert") {
        results.push(compare(
            "bulk insert in one transaction (prepared)",
            rows,
            3,
            || time(|| insert_ours(&db, &names)),
            || time(|| insert_peer(&mut conn, &names)),
        ));
    }

    // Point selects by primary key with a prepared statement, reading every column.
    let keys: Vec<i64> = (0..lookups).map(|i| ((i * 7919) % rows) as i64).collect();
    let select = db.prepare(SELECT_ONE).unwrap();
    let peer_select = |conn: &Connection| {
        time(|| {
            let mut stmt = conn.prepare_cached(SELECT_ONE).unwrap();
            for k in &keys {
                let row = stmt
                    .query_row([*k], |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, f64>(2)?,
                        ))
                    })
                    .unwrap();
                black_box(row);
            }
        })
    };
    if run("select") {
        results.push(compare(
            "point select by primary key, typed (get_as)",
            lookups,
            rounds,
            || {
                time(|| {
                    for k in &keys {
                        black_box(select.get_as::<Item>((*k,)).unwrap().unwrap());
                    }
                })
            },
            || peer_select(&conn),
        ));
        results.push(compare(
            "point select by primary key, Row (get)",
            lookups,
            rounds,
            || {
                time(|| {
                    for k in &keys {
                        black_box(select.get((*k,)).unwrap().unwrap());
                    }
                })
            },
            || peer_select(&conn),
        ));
    }

    let peer_stream = |conn: &Connection| {
        time(|| {
            let mut stmt = conn.prepare_cached(SCAN).unwrap();
            let mut q = stmt.query([]).unwrap();
            let mut n = 0u64;
            while let Some(r) = q.next().unwrap() {
                let row: Item = (r.get(0).unwrap(), r.get(1).unwrap(), r.get(2).unwrap());
                n = n.wrapping_add(row.0 as u64);
                black_box(&row);
            }
            black_box(n);
        })
    };
    let peer_collect = |conn: &Connection| {
        time(|| {
            let mut stmt = conn.prepare_cached(SCAN).unwrap();
            let all: Vec<Item> = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            drop(black_box(all));
        })
    };
    if run("stream") {
        results.push(compare(
            "full scan streamed, typed (iterate_as)",
            rows,
            rounds,
            || {
                time(|| {
                    let mut n = 0u64;
                    for row in db.iterate_as::<Item>(SCAN, ()).unwrap() {
                        let row = row.unwrap();
                        n = n.wrapping_add(row.0 as u64);
                        black_box(&row);
                    }
                    black_box(n);
                })
            },
            || peer_stream(&conn),
        ));
        results.push(compare(
            "full scan streamed, Row (iterate)",
            rows,
            rounds,
            || {
                time(|| {
                    let mut n = 0u64;
                    for row in db.iterate(SCAN, ()).unwrap() {
                        let row = row.unwrap();
                        if let Value::Integer(i) = row.values()[0] {
                            n = n.wrapping_add(i as u64);
                        }
                        black_box(&row);
                    }
                    black_box(n);
                })
            },
            || peer_stream(&conn),
        ));
    }
    if run("collect") {
        results.push(compare(
            "full scan collected, typed (all_as)",
            rows,
            rounds,
            || time(|| drop(black_box(db.all_as::<Item>(SCAN, ()).unwrap()))),
            || peer_collect(&conn),
        ));
        results.push(compare(
            "full scan collected, Row (all)",
            rows,
            rounds,
            || time(|| drop(black_box(db.all(SCAN, ()).unwrap()))),
            || peer_collect(&conn),
        ));
    }

    println!(
        "\nPluresDB SQL API vs rusqlite used directly (SQLite {}), {rows} rows, median of runs\n",
        rusqlite::version()
    );
    print_table("rusqlite", &results);
}
