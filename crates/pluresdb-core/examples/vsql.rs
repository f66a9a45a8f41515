use pluresdb_core::{Database, Value, VectorIndexOptions};
use std::time::Instant;
fn main() {
    let n = 100_000;
    let dim = 128;
    let mut x = 88172645463325252u64;
    let mut rnd = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let data: Vec<Vec<f32>> = (0..n).map(|_| (0..dim).map(|_| rnd()).collect()).collect();
    let blob = |v: &[f32]| Value::Blob(v.iter().flat_map(|x| x.to_le_bytes()).collect());
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path().join("v.db")).unwrap();
    db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
        .unwrap();
    let t = Instant::now();
    db.transaction(|tx| {
        for (i, v) in data.iter().enumerate() {
            tx.run("INSERT INTO t VALUES (?, ?)", (i as i64, blob(v)))?;
        }
        Ok::<_, pluresdb_core::Error>(())
    })
    .unwrap();
    println!("insert no index {:?}", t.elapsed());
    db.exec("CREATE TABLE t2(id INTEGER PRIMARY KEY, v BLOB)")
        .unwrap();
    db.create_vector_index(
        "t2",
        "v",
        &VectorIndexOptions {
            dim: Some(dim),
            ..Default::default()
        },
    )
    .unwrap();
    let t = Instant::now();
    db.transaction(|tx| {
        for (i, v) in data.iter().enumerate() {
            tx.run("INSERT INTO t2 VALUES (?, ?)", (i as i64, blob(v)))?;
        }
        Ok::<_, pluresdb_core::Error>(())
    })
    .unwrap();
    println!("insert with index (log) {:?}", t.elapsed());
    let t = Instant::now();
    db.load_vector_index("t2").unwrap();
    println!("build (catch-up from log) {:?}", t.elapsed());
    let t = Instant::now();
    db.save_vector_indexes().unwrap();
    println!("save {:?}", t.elapsed());
    let qs: Vec<Vec<f32>> = (0..1000)
        .map(|_| (0..dim).map(|_| rnd()).collect())
        .collect();
    let t = Instant::now();
    for q in &qs {
        let r = db
            .all_as::<(i64, f64)>(
                "SELECT rowid, distance FROM vector_search('t2', 'v', ?, 10)",
                (blob(q),),
            )
            .unwrap();
        assert_eq!(r.len(), 10);
    }
    let sql = t.elapsed();
    let t = Instant::now();
    for q in &qs {
        let r = db.vector_search("t2", q.as_slice(), 10, None).unwrap();
        assert_eq!(r.len(), 10);
    }
    let api = t.elapsed();
    println!(
        "sql {:.0} qps, api {:.0} qps",
        1000.0 / sql.as_secs_f64(),
        1000.0 / api.as_secs_f64()
    );
    drop(db);
    let t = Instant::now();
    let db = Database::open(dir.path().join("v.db")).unwrap();
    db.load_vector_index("t2").unwrap();
    println!(
        "reopen + load saved {:?} {:?}",
        t.elapsed(),
        db.vector_indexes().unwrap()[0]
            .loaded
            .as_ref()
            .unwrap()
            .source
    );
}
