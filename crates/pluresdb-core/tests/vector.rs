//! Vector search through SQL and the API: indexes follow inserts, updates, deletes and
//! rollbacks, survive reopening (or are rebuilt and say why), and bad input is refused clearly.

use std::time::{Duration, Instant};

use pluresdb_core::{
    Database, ErrorKind, HnswParams, LoadSource, OpenOptions, SearchOptions, Value,
    VectorIndexOptions,
};
use serde_json::json;

/// Deterministic pseudo-random vectors.
fn vectors(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            (0..dim)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
                })
                .collect()
        })
        .collect()
}

fn blob(v: &[f32]) -> Value {
    Value::Blob(v.iter().flat_map(|x| x.to_le_bytes()).collect())
}

fn json_vec(v: &[f32]) -> String {
    serde_json::to_string(v).unwrap()
}

fn docs(db: &Database, data: &[Vec<f32>]) {
    db.exec("CREATE TABLE docs(id INTEGER PRIMARY KEY, title TEXT, year INTEGER, embedding BLOB)")
        .unwrap();
    db.transaction(|tx| {
        for (i, v) in data.iter().enumerate() {
            tx.run(
                "INSERT INTO docs(id, title, year, embedding) VALUES (?, ?, ?, ?)",
                (
                    i as i64 + 1,
                    format!("doc {}", i + 1),
                    2000 + (i % 30) as i64,
                    blob(v),
                ),
            )?;
        }
        Ok::<_, pluresdb_core::Error>(())
    })
    .unwrap();
}

/// Row ids of the `k` nearest by SQL brute force with `vec_distance_cosine`.
fn brute(db: &Database, q: &[f32], k: usize, filter: &str) -> Vec<i64> {
    db.all_as::<(i64,)>(
        &format!(
            "SELECT id FROM docs WHERE embedding IS NOT NULL AND {filter}
             ORDER BY vec_distance_cosine(embedding, ?) LIMIT ?"
        ),
        (blob(q), k as i64),
    )
    .unwrap()
    .into_iter()
    .map(|r| r.0)
    .collect()
}

fn search(db: &Database, q: &[f32], k: usize) -> Vec<i64> {
    db.all_as::<(i64,)>(
        "SELECT s.rowid FROM vector_search('docs', 'embedding', ?, ?) s",
        (blob(q), k as i64),
    )
    .unwrap()
    .into_iter()
    .map(|r| r.0)
    .collect()
}

#[test]
fn search_options_exact_and_ef_give_the_exact_answer() {
    let db = Database::open_in_memory().unwrap();
    let data = vectors(400, 16, 3);
    docs(&db, &data);
    db.value(
        "SELECT pluresdb_vector_index('docs', 'embedding', 'cosine')",
        (),
    )
    .unwrap();
    let with = |q: &[f32], options: &str| -> Vec<i64> {
        db.all_as::<(i64,)>(
            "SELECT rowid FROM vector_search('docs', 'embedding', ?, 10, ?)",
            (blob(q), options),
        )
        .unwrap()
        .into_iter()
        .map(|r| r.0)
        .collect()
    };
    for q in &vectors(20, 16, 77) {
        let truth = brute(&db, q, 10, "1");
        assert_eq!(with(q, r#"{"exact": true}"#), truth);
        // A search breadth covering every row makes the graph walk exhaustive.
        assert_eq!(with(q, r#"{"ef": 400}"#), truth);
    }
    let err = db
        .all(
            "SELECT rowid FROM vector_search('docs', 'embedding', ?, 10, '{\"ef\": -1}')",
            (blob(&data[0]),),
        )
        .unwrap_err();
    assert!(err.to_string().contains("ef"), "{err}");
}

#[test]
fn huge_search_breadths_are_refused_or_mean_every_row() {
    let db = Database::open_in_memory().unwrap();
    let data = vectors(5, 2, 4);
    docs(&db, &data);
    db.value(
        "SELECT pluresdb_vector_index('docs', 'embedding', 'cosine')",
        (),
    )
    .unwrap();
    let with = |options: &str| {
        db.all_as::<(i64,)>(
            "SELECT rowid FROM vector_search('docs', 'embedding', ?, 1, ?)",
            (blob(&data[0]), options),
        )
        .map(|rows| rows.into_iter().map(|r| r.0).collect::<Vec<_>>())
    };
    // Up to the bound: a breadth past the row count searches them all.
    assert_eq!(
        with(r#"{"ef": 100000}"#).unwrap(),
        brute(&db, &data[0], 1, "1")
    );
    for ef in [
        "18446744073709551615",
        "9223372036854775807",
        "1000000000000",
    ] {
        let err = with(&format!(r#"{{"ef": {ef}}}"#)).unwrap_err().to_string();
        assert!(
            err.contains(&format!("ef is {ef}; use a value from 1 to 100000")),
            "{err}"
        );
    }
}

#[test]
fn sql_vector_search_joins_and_matches_brute_force() {
    let db = Database::open_in_memory().unwrap();
    let data = vectors(500, 16, 1);
    docs(&db, &data);
    let name = db
        .value(
            "SELECT pluresdb_vector_index('docs', 'embedding', 'cosine')",
            (),
        )
        .unwrap();
    assert_eq!(name, Value::Text("docs.embedding".into()));
    let q = &vectors(1, 16, 99)[0];
    let rows = db
        .all_as::<(String, f64)>(
            "SELECT d.title, s.distance FROM vector_search('docs', 'embedding', ?, 10) s
             JOIN docs d ON d.rowid = s.rowid",
            (blob(q),),
        )
        .unwrap();
    assert_eq!(rows.len(), 10);
    assert!(rows.windows(2).all(|w| w[0].1 <= w[1].1), "nearest first");
    let want: Vec<String> = brute(&db, q, 10, "1")
        .iter()
        .map(|i| format!("doc {i}"))
        .collect();
    assert_eq!(rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>(), want);
    // The distance is the cosine distance sqlite-vec would compute.
    let exact = db
        .value(
            "SELECT vec_distance_cosine(embedding, ?) FROM docs WHERE title = ?",
            (blob(q), &rows[0].0),
        )
        .unwrap();
    assert!((exact.as_f64().unwrap() - rows[0].1).abs() < 1e-5);
    // JSON text queries work the same, and ORDER BY distance is satisfied by the index.
    let by_json = db
        .all_as::<(i64,)>(
            "SELECT rowid FROM vector_search('docs', 'embedding', ?, 10) ORDER BY distance",
            (json_vec(q),),
        )
        .unwrap();
    assert_eq!(
        by_json.iter().map(|r| r.0).collect::<Vec<_>>(),
        brute(&db, q, 10, "1")
    );
    // Filters are applied before ranking, so k rows still come back.
    let filtered = db
        .all_as::<(i64, i64)>(
            "SELECT d.id, d.year FROM vector_search('docs', 'embedding', ?, 5, '{\"filter\": \"year = 2003\"}') s
             JOIN docs d ON d.rowid = s.rowid",
            (blob(q),),
        )
        .unwrap();
    assert_eq!(filtered.len(), 5);
    assert!(filtered.iter().all(|r| r.1 == 2003));
    assert_eq!(
        filtered.iter().map(|r| r.0).collect::<Vec<_>>(),
        brute(&db, q, 5, "year = 2003")
    );
}

#[test]
fn writes_after_indexing_are_searchable_at_once_and_rollbacks_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path().join("v.db")).unwrap();
    let data = vectors(300, 8, 2);
    docs(&db, &data);
    db.create_vector_index("docs", "embedding", &VectorIndexOptions::default())
        .unwrap();
    let q = vectors(1, 8, 7).remove(0);
    assert_eq!(search(&db, &q, 5), brute(&db, &q, 5, "1"));
    // Insert the query itself: it becomes the nearest.
    db.run(
        "INSERT INTO docs(id, title, embedding) VALUES (1000, 'exact', ?)",
        (blob(&q),),
    )
    .unwrap();
    assert_eq!(search(&db, &q, 1), vec![1000]);
    // Update it away, and another row onto the query.
    db.run(
        "UPDATE docs SET embedding = ? WHERE id = 1000",
        (blob(&data[0].iter().map(|x| -x).collect::<Vec<_>>()),),
    )
    .unwrap();
    db.run("UPDATE docs SET embedding = ? WHERE id = 42", (blob(&q),))
        .unwrap();
    assert_eq!(search(&db, &q, 1), vec![42]);
    // Changing the row id moves the label; deleting removes it.
    db.run("UPDATE docs SET id = 4242 WHERE id = 42", ())
        .unwrap();
    assert_eq!(search(&db, &q, 1), vec![4242]);
    db.run("DELETE FROM docs WHERE id = 4242", ()).unwrap();
    db.run("UPDATE docs SET embedding = NULL WHERE id = 1000", ())
        .unwrap();
    assert_eq!(search(&db, &q, 5), brute(&db, &q, 5, "1"));
    // Inside a transaction the search sees its own writes; after rollback they are gone.
    db.transaction(|tx| {
        tx.run(
            "INSERT INTO docs(id, title, embedding) VALUES (7000, 'pending', ?)",
            (blob(&q),),
        )?;
        let inside = tx.all_as::<(i64,)>(
            "SELECT rowid FROM vector_search('docs', 'embedding', ?, 1)",
            (blob(&q),),
        )?;
        assert_eq!(inside, vec![(7000,)]);
        Err::<(), _>(pluresdb_core::Error::invalid("roll back"))
    })
    .unwrap_err();
    assert_eq!(search(&db, &q, 5), brute(&db, &q, 5, "1"));
    assert!(!search(&db, &q, 300).contains(&7000));
}

#[test]
fn bad_input_is_refused_and_nothing_is_stored() {
    let db = Database::open_in_memory().unwrap();
    db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
        .unwrap();
    // Empty index: no dimension yet, no results.
    db.value("SELECT pluresdb_vector_index('t', 'v', 'l2')", ())
        .unwrap();
    assert!(
        db.vector_search("t", vec![1.0, 2.0], 5, None)
            .unwrap()
            .is_empty()
    );
    db.run("INSERT INTO t(v) VALUES (vec_f32('[1, 2, 3]'))", ())
        .unwrap();
    let msg = |sql: &str| db.run(sql, ()).unwrap_err().to_string();
    assert!(
        msg("INSERT INTO t(v) VALUES (vec_f32('[1, 2]'))")
            .contains("has 2 dimensions but the index has 3")
    );
    assert!(msg("INSERT INTO t(v) VALUES ('[1, 2, \"x\"]')").contains("element 2 is not a number"));
    assert!(
        msg("INSERT INTO t(v) VALUES (x'0000c07f0000803f0000803f')").contains("component 0 is NaN")
    );
    assert!(msg("UPDATE t SET v = x'01' WHERE id = 1").contains("multiple of 4 bytes"));
    assert_eq!(
        db.value("SELECT count(*) FROM t", ()).unwrap(),
        Value::Integer(1),
        "nothing stored"
    );
    assert_eq!(
        db.value("SELECT vec_to_json(v) FROM t", ()).unwrap(),
        Value::Text("[1,2,3]".into()),
        "the stored row is untouched"
    );
    let q = blob(&[1.0, 2.0, 3.0]);
    let search_err = |sql: &str, p: Value| db.all(sql, (p,)).unwrap_err().to_string();
    assert!(
        search_err("SELECT * FROM vector_search('t', 'v', ?, 0)", q.clone())
            .contains("k must be at least 1")
    );
    assert!(
        search_err("SELECT * FROM vector_search('t', 'v', ?, 5)", blob(&[1.0]))
            .contains("has 1 dimensions but the index on t.v has 3")
    );
    assert!(
        search_err("SELECT * FROM vector_search('t', 'nope', ?, 5)", q.clone())
            .contains("no vector index on t.nope")
    );
    // A table searched without naming the column, with no index: no stray "t." in the message.
    db.exec("CREATE TABLE plain(v BLOB)").unwrap();
    let plain = db
        .vector_search("plain", vec![1.0f32, 2.0, 3.0], 5, None)
        .unwrap_err()
        .to_string();
    assert!(
        plain.contains("there is no vector index on plain; create one with"),
        "{plain}"
    );
    assert!(
        search_err(
            "SELECT * FROM vector_search('t', 'v', ?, 5, '{\"eff\": 3}')",
            q.clone()
        )
        .contains("unknown option \"eff\"")
    );
    assert!(
        search_err("SELECT * FROM vector_search('t', 'v', ?)", q.clone())
            .contains("vector_search needs (table, column, query, k")
    );
    assert!(
        search_err(
            "SELECT * FROM vector_search('t', 'v', ?, 5, '{\"filter\": \"nope > 1\"}')",
            q.clone()
        )
        .contains("no such column: nope")
    );
    // Huge k returns what there is.
    assert_eq!(
        db.all(
            "SELECT * FROM vector_search('t', 'v', ?, 1000000000000)",
            (q.clone(),)
        )
        .unwrap()
        .len(),
        1
    );
    // Index creation errors.
    let create = |sql: &str| db.value(sql, ()).unwrap_err().to_string();
    assert!(
        create("SELECT pluresdb_vector_index('t', 'v', 'manhattan')").contains("unknown metric")
    );
    assert!(create("SELECT pluresdb_vector_index('nope', 'v')").contains("no such table: nope"));
    assert!(create("SELECT pluresdb_vector_index('t', 'w')").contains("has no column \"w\""));
    assert!(
        create("SELECT pluresdb_vector_index('t', 'v', 'cosine')")
            .contains("already has a vector index with other settings")
    );
    db.exec("CREATE TABLE wr(k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID")
        .unwrap();
    assert!(create("SELECT pluresdb_vector_index('wr', 'v')").contains("WITHOUT ROWID"));
    // Known as such however the statement spells it, and only then.
    db.exec(
        "CREATE TABLE wr2(k TEXT PRIMARY KEY, v BLOB) WITHOUT
         ROWID;
         CREATE TABLE notes(k TEXT DEFAULT 'without rowid', v BLOB)",
    )
    .unwrap();
    assert!(create("SELECT pluresdb_vector_index('wr2', 'v')").contains("WITHOUT ROWID"));
    db.value("SELECT pluresdb_vector_index('notes', 'v')", ())
        .unwrap();
    db.exec("CREATE TABLE zero(v BLOB); INSERT INTO zero VALUES (vec_f32('[0, 0]'))")
        .unwrap();
    assert!(
        create("SELECT pluresdb_vector_index('zero', 'v', 'cosine')")
            .contains("row 1 of zero.v: a zero vector")
    );
    // Dropping the index lets any vector in again.
    assert_eq!(
        db.value("SELECT pluresdb_vector_index_drop('t', 'v')", ())
            .unwrap(),
        Value::Integer(1)
    );
    db.run("INSERT INTO t(v) VALUES (vec_f32('[1, 2]'))", ())
        .unwrap();
}

#[test]
fn indexes_survive_reopen_and_damage_is_rebuilt_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("persist.db");
    let data = vectors(2_000, 12, 3);
    let q = vectors(1, 12, 5).remove(0);
    let first = {
        let db = Database::open(&path).unwrap();
        docs(&db, &data);
        db.create_vector_index("docs", "embedding", &VectorIndexOptions::default())
            .unwrap();
        let hits = search(&db, &q, 10);
        assert_eq!(
            db.vector_indexes().unwrap()[0]
                .loaded
                .as_ref()
                .unwrap()
                .source,
            LoadSource::Built
        );
        hits
    };
    // Reopen: the saved graph is loaded, not rebuilt.
    {
        let db = Database::open(&path).unwrap();
        assert_eq!(search(&db, &q, 10), first);
        let info = &db.vector_indexes().unwrap()[0];
        assert_eq!(info.loaded.as_ref().unwrap().source, LoadSource::Saved);
        assert_eq!(info.loaded.as_ref().unwrap().vectors, 2_000);
        // Writes after the save, then a "crash" (no clean close, so no new save).
        db.run(
            "INSERT INTO docs(id, embedding) VALUES (9999, ?)",
            (blob(&q),),
        )
        .unwrap();
        db.run("DELETE FROM docs WHERE id = ?", (first[0],))
            .unwrap();
        std::mem::forget(db);
    }
    {
        let db = Database::open(&path).unwrap();
        let hits = search(&db, &q, 10);
        assert_eq!(hits[0], 9999, "the logged insert was caught up");
        assert!(!hits.contains(&first[0]), "the logged delete was caught up");
        assert_eq!(
            db.vector_indexes().unwrap()[0]
                .loaded
                .as_ref()
                .unwrap()
                .source,
            LoadSource::Saved
        );
    }
    // Damage the saved graph behind PluresDB's back.
    {
        let raw = rusqlite::Connection::open(&path).unwrap();
        raw.execute(
            "UPDATE _pluresdb_vector_snapshots SET data = x'0102030405'",
            [],
        )
        .unwrap();
    }
    let db = Database::open(&path).unwrap();
    let hits = search(&db, &q, 10);
    assert_eq!(hits, brute(&db, &q, 10, "1"));
    assert_rebuilt(&db, "damaged");
}

#[test]
fn index_breadths_are_bounded_and_absurd_saved_ones_still_search() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("breadth.db");
    let data = vectors(50, 4, 9);
    let q = &data[0];
    {
        let db = Database::open(&path).unwrap();
        docs(&db, &data);
        for (opts, says) in [
            (
                VectorIndexOptions {
                    params: HnswParams {
                        ef_construction: 1_000_000_000_000,
                        ..HnswParams::default()
                    },
                    ..VectorIndexOptions::default()
                },
                "ef_construction is 1000000000000; use a value from 1 to 100000",
            ),
            (
                VectorIndexOptions {
                    params: HnswParams {
                        ef_search: 1_000_000_000_000,
                        ..HnswParams::default()
                    },
                    ..VectorIndexOptions::default()
                },
                "ef_search is 1000000000000; use a value from 1 to 100000",
            ),
        ] {
            let err = db
                .create_vector_index("docs", "embedding", &opts)
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{err}");
            assert!(db.vector_indexes().unwrap().is_empty(), "nothing was saved");
        }
        db.create_vector_index("docs", "embedding", &VectorIndexOptions::default())
            .unwrap();
        assert_eq!(search(&db, q, 3), brute(&db, q, 3, "1"));
    }
    // A definition saved before the bounds were checked (or edited by hand).
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute(
            "UPDATE _pluresdb_vector_indexes SET ef_construction = 1000000000000, ef_search = -1",
            [],
        )
        .unwrap();
    for drop_graph in [false, true] {
        if drop_graph {
            // Rebuilt from the table, inserting with the saved ef_construction.
            rusqlite::Connection::open(&path)
                .unwrap()
                .execute("DELETE FROM _pluresdb_vector_snapshots", [])
                .unwrap();
        }
        let db = Database::open(&path).unwrap();
        assert_eq!(search(&db, q, 3), brute(&db, q, 3, "1"));
        let info = &db.vector_indexes().unwrap()[0];
        assert_eq!((info.ef_construction, info.ef_search), (100_000, 100_000));
    }
}

/// Asserts the first vector index was rebuilt on load, for a reason mentioning `reason`.
fn assert_rebuilt(db: &Database, reason: &str) {
    match &db.vector_indexes().unwrap()[0]
        .loaded
        .as_ref()
        .unwrap()
        .source
    {
        LoadSource::Rebuilt(why) => assert!(why.contains(reason), "{why}"),
        other => panic!("expected a reported rebuild, got {other:?}"),
    }
}

#[test]
fn vectors_changed_outside_the_log_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outside.db");
    let data = vectors(200, 4, 8);
    {
        let db = Database::open(&path).unwrap();
        docs(&db, &data);
        db.create_vector_index("docs", "embedding", &VectorIndexOptions::default())
            .unwrap();
        search(&db, &data[0], 3);
    }
    {
        // A foreign connection rewrites every vector and hides the log entries.
        let raw = rusqlite::Connection::open(&path).unwrap();
        for f in ["pluresdb_vector_dim", "pluresdb_vector_check"] {
            raw.create_scalar_function(
                f,
                -1,
                rusqlite::functions::FunctionFlags::SQLITE_UTF8,
                |_| Ok(0),
            )
            .unwrap();
        }
        raw.execute("UPDATE docs SET embedding = (SELECT embedding FROM docs d2 WHERE d2.id = 201 - docs.id)", [])
            .unwrap();
        raw.execute("DELETE FROM _pluresdb_index_log", []).unwrap();
    }
    let db = Database::open(&path).unwrap();
    let q = &data[5];
    assert_eq!(search(&db, q, 5), brute(&db, q, 5, "1"));
    assert_rebuilt(&db, "does not match the table");
}

#[test]
fn nodes_are_searchable_by_vector_with_type_filters() {
    let db = Database::open_in_memory().unwrap();
    let data = vectors(100, 6, 4);
    for (i, v) in data.iter().enumerate() {
        let ty = if i % 2 == 0 { "Even" } else { "Odd" };
        db.put(&format!("n{i}"), &json!({"i": i})).unwrap();
        db.set_type(&format!("n{i}"), Some(ty)).unwrap();
        db.set_vector(&format!("n{i}"), Some(v)).unwrap();
    }
    let hits = db.vector_search("nodes", &data[7], 3, None).unwrap();
    assert_eq!(hits[0].id.as_deref(), Some("n7"));
    assert!(hits[0].distance.abs() < 1e-5);
    let odd = SearchOptions {
        node_type: Some("Even".into()),
        ..SearchOptions::default()
    };
    let evens = db.vector_search_with("nodes", &data[7], 5, &odd).unwrap();
    assert_eq!(evens.len(), 5);
    assert!(
        evens
            .iter()
            .all(|h| h.id.as_ref().unwrap()[1..].parse::<usize>().unwrap() % 2 == 0)
    );
    // Deleted nodes and cleared vectors disappear from results.
    db.delete("n7").unwrap();
    db.set_vector("n9", None).unwrap();
    let ids: Vec<String> = db
        .vector_search("nodes", &data[7], 100, None)
        .unwrap()
        .into_iter()
        .map(|h| h.id.unwrap())
        .collect();
    assert_eq!(ids.len(), 98);
    assert!(!ids.contains(&"n7".to_owned()) && !ids.contains(&"n9".to_owned()));
    // SQL sees node ids too.
    let row = db
        .all_as::<(String,)>(
            "SELECT id FROM vector_search('nodes', 'vector', ?, 1)",
            (blob(&data[3]),),
        )
        .unwrap();
    assert_eq!(row, vec![("n3".to_owned(),)]);
    // A node vector of another dimension is refused once the index exists.
    let err = db.set_vector("n1", Some(&[1.0, 2.0])).unwrap_err();
    assert!(
        err.to_string()
            .contains("has 2 dimensions but the index has 6"),
        "{err}"
    );
    assert_eq!(db.get_node("n1").unwrap().unwrap().vector.unwrap().len(), 6);
}

#[test]
fn text_queries_without_a_model_say_how_to_configure_one() {
    let db = Database::open_in_memory().unwrap();
    db.exec("CREATE TABLE t(v BLOB)").unwrap();
    db.value("SELECT pluresdb_vector_index('t', 'v')", ())
        .unwrap();
    let err = db
        .vector_search("t", "hello", 3, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("PLURESDB_MODEL_DIR"), "{err}");
    let err = db
        .value("SELECT pluresdb_embed('hello')", ())
        .unwrap_err()
        .to_string();
    assert!(err.contains("no embedding model is configured"), "{err}");
    assert_eq!(db.embed("x").unwrap_err().kind(), ErrorKind::InvalidInput);
}

/// A stand-in model for tests about plumbing: words hashed into 32 buckets.
struct BagOfWords;

impl pluresdb_core::Embedder for BagOfWords {
    fn model_name(&self) -> &str {
        "bag-of-words"
    }
    fn dim(&self) -> usize {
        32
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, pluresdb_core::EmbedError> {
        Ok(texts
            .iter()
            .map(|t| {
                let mut v = vec![0.01f32; 32];
                for w in t.split_whitespace() {
                    let h = w
                        .to_lowercase()
                        .bytes()
                        .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
                    v[(h % 32) as usize] += 1.0;
                }
                v
            })
            .collect())
    }
}

#[test]
fn embedded_columns_follow_their_text_and_hybrid_search_fuses_both_rankings() {
    let db = Database::open_in_memory().unwrap();
    db.set_embedder(Some(std::sync::Arc::new(BagOfWords)));
    db.exec("CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT, emb BLOB)")
        .unwrap();
    db.run(
        "INSERT INTO notes(body) VALUES ('written before the index')",
        (),
    )
    .unwrap();
    let opts = VectorIndexOptions {
        embed_from: Some("body".into()),
        ..VectorIndexOptions::default()
    };
    db.create_vector_index("notes", "emb", &opts).unwrap();
    assert_eq!(
        db.value("SELECT vec_length(emb) FROM notes WHERE id = 1", ())
            .unwrap(),
        Value::Integer(32),
        "existing rows were embedded"
    );
    for body in [
        "red apples and green pears",
        "a fast red car",
        "green tea in the morning",
        "quiet morning walk",
    ] {
        db.run("INSERT INTO notes(body) VALUES (?)", (body,))
            .unwrap();
    }
    let top = db
        .vector_search("notes", "a fast red car", 1, None)
        .unwrap();
    assert_eq!(top[0].rowid, 3);
    // Text given as text is embedded even when it starts with '[' (it was read as a vector).
    let tagged = db
        .vector_search("notes", "[draft] a fast red car", 1, None)
        .unwrap();
    assert_eq!(tagged[0].rowid, 3);
    assert!(top[0].distance < 1e-5);
    // Editing the text re-embeds the row.
    db.run("UPDATE notes SET body = 'slow blue boat' WHERE id = 3", ())
        .unwrap();
    assert_eq!(
        db.vector_search("notes", "slow blue boat", 1, None)
            .unwrap()[0]
            .rowid,
        3
    );
    assert_ne!(
        db.vector_search("notes", "a fast red car", 1, None)
            .unwrap()[0]
            .rowid,
        3
    );
    // Hybrid: text matches (bm25) and vector neighbours fused by rank.
    db.create_text_index("notes", &["body"]).unwrap();
    db.create_text_index("notes", &["body"]).unwrap();
    assert_eq!(
        db.text_search("notes", "morning", 10, None).unwrap().len(),
        2
    );
    // A filter may name the indexed columns and rowid (they were ambiguous in the join).
    for (filter, want) in [("body LIKE 'quiet%'", vec![5]), ("rowid < 5", vec![4])] {
        assert_eq!(
            db.text_search("notes", "morning", 10, Some(filter))
                .unwrap(),
            want,
            "{filter}"
        );
    }
    let hits = db
        .hybrid_search("notes", "green morning", None, 3, None)
        .unwrap();
    assert_eq!(
        hits[0].rowid, 4,
        "matches both words and is the nearest vector: {hits:?}"
    );
    assert!(hits[0].text_rank.is_some() && hits[0].vector_rank.is_some());
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    // The text index follows deletes and updates.
    db.run("DELETE FROM notes WHERE id = 4", ()).unwrap();
    db.run("UPDATE notes SET body = 'evening' WHERE id = 5", ())
        .unwrap();
    assert!(
        db.text_search("notes", "morning", 10, None)
            .unwrap()
            .is_empty()
    );
    let err = db
        .text_search("nodes", "x", 3, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("has no text index"), "{err}");
}

#[test]
fn dropping_one_index_never_hides_later_writes_from_another() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path().join("two.db")).unwrap();
    db.exec("CREATE TABLE a(v BLOB); CREATE TABLE b(v BLOB)")
        .unwrap();
    db.value("SELECT pluresdb_vector_index('a', 'v', 'l2')", ())
        .unwrap();
    db.value("SELECT pluresdb_vector_index('b', 'v', 'l2')", ())
        .unwrap();
    for i in 0..10 {
        db.run(
            "INSERT INTO a(v) VALUES (vec_f32(?))",
            (format!("[{i}, 0]"),),
        )
        .unwrap();
    }
    for i in 0..10 {
        db.run(
            "INSERT INTO b(v) VALUES (vec_f32(?))",
            (format!("[{i}, 0]"),),
        )
        .unwrap();
    }
    // `a` is built after b's log entries, then b's entries go away with its index.
    assert_eq!(
        db.vector_search("a", vec![0.0, 0.0], 1, None).unwrap()[0].rowid,
        1
    );
    assert!(db.drop_vector_index("b", "v").unwrap());
    db.run("INSERT INTO a(v) VALUES (vec_f32('[0.5, 50]'))", ())
        .unwrap();
    let hits = db.vector_search("a", vec![0.5, 50.0], 1, None).unwrap();
    assert_eq!(hits[0].rowid, 11, "the new row is found");
}

#[test]
fn an_index_whose_table_was_dropped_or_column_renamed_says_so_and_can_be_made_again() {
    let db = two_docs_indexed();
    let make = "CREATE TABLE docs(id INTEGER PRIMARY KEY, e BLOB)";
    assert_eq!(nearest_doc(&db).unwrap(), [(1,)]);
    // Dropped and made again: the old index's triggers went with the table.
    db.exec(&format!("DROP TABLE docs; {make}")).unwrap();
    db.exec("INSERT INTO docs VALUES (7, vec_f32('[1, 0]'))")
        .unwrap();
    let err = nearest_doc(&db).unwrap_err();
    assert!(err.message().contains("was dropped"), "{err}");
    assert!(
        err.message()
            .contains("pluresdb_vector_index_drop('docs', 'e')"),
        "{err}"
    );
    // Creating it again replaces the stale one, and new rows are found.
    db.create_vector_index("docs", "e", &VectorIndexOptions::default())
        .unwrap();
    db.exec("INSERT INTO docs VALUES (8, vec_f32('[0, 1]'))")
        .unwrap();
    assert_eq!(nearest_doc(&db).unwrap(), [(7,)]);
    // A renamed column: an error, not an empty result.
    db.exec("ALTER TABLE docs RENAME COLUMN e TO emb").unwrap();
    let err = nearest_doc(&db).unwrap_err();
    assert!(err.message().contains("docs.e no longer exists"), "{err}");
    // The drop function refuses a call without arguments instead of panicking.
    let err = db
        .value("SELECT pluresdb_vector_index_drop()", ())
        .unwrap_err();
    assert!(
        err.message()
            .contains("use pluresdb_vector_index_drop(table"),
        "{err}"
    );
}

#[test]
fn a_text_index_survives_its_table_being_made_again_and_can_be_dropped() {
    let db = Database::open_in_memory().unwrap();
    let make = "CREATE TABLE docs(id INTEGER PRIMARY KEY, title TEXT, body TEXT)";
    db.exec(make).unwrap();
    db.exec("INSERT INTO docs VALUES (1, 'red bike', 'old')")
        .unwrap();
    db.create_text_index("docs", &["title"]).unwrap();
    assert_eq!(db.text_search("docs", "red", 5, None).unwrap(), [1]);
    // Dropped and made again: creating the index again replaces the stale one.
    db.exec(&format!("DROP TABLE docs; {make}")).unwrap();
    db.create_text_index("docs", &["title"]).unwrap();
    db.exec("INSERT INTO docs VALUES (2, 'red car', 'new')")
        .unwrap();
    assert_eq!(db.text_search("docs", "red", 5, None).unwrap(), [2]);
    // Other columns: refused with the way out, which works.
    let err = db
        .create_text_index("docs", &["title", "body"])
        .unwrap_err();
    assert!(
        err.message().contains("db.drop_text_index(\"docs\")"),
        "{err}"
    );
    assert!(db.drop_text_index("docs").unwrap());
    assert!(!db.drop_text_index("docs").unwrap());
    db.create_text_index("docs", &["title", "body"]).unwrap();
    assert_eq!(db.text_search("docs", "new", 5, None).unwrap(), [2]);
}

/// ALTER TABLE DROP COLUMN of a column a vector or text index uses is refused, as SQLite
/// refuses it for an ordinary index, naming the index and how to drop it (it was SQLite's
/// "error in trigger _pluresdb_vec_1_ins after drop column: no such column: NEW.e");
/// nothing changes, and once the index is dropped the column can be.
#[test]
fn dropping_an_indexed_column_names_the_index_to_drop_first() {
    let db = Database::open_in_memory().unwrap();
    db.set_embedder(Some(std::sync::Arc::new(BagOfWords)));
    db.exec(
        "CREATE TABLE docs(id INTEGER PRIMARY KEY, title TEXT, body TEXT, e BLOB, note TEXT);
         INSERT INTO docs VALUES (1, 'red bike', 'old', vec_f32('[1, 0]'), 'x'),
                                 (2, 'blue car', 'new', vec_f32('[0, 1]'), 'y');
         SELECT pluresdb_vector_index('docs', 'e');",
    )
    .unwrap();
    db.create_text_index("docs", &["title"]).unwrap();
    let vector_refusal = "cannot drop column \"e\" of table \"docs\": the vector index docs.e \
        uses it; drop the index first with SELECT pluresdb_vector_index_drop('docs', 'e') (or \
        pluresdb vector-index docs e --drop)";
    let err = db.exec("ALTER TABLE docs DROP COLUMN e").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Sql);
    assert_eq!(err.message(), vector_refusal);
    assert_eq!(err.sql(), Some("ALTER TABLE docs DROP COLUMN e"));
    let err = db
        .transaction(|tx| tx.run("ALTER TABLE docs DROP COLUMN title", ()))
        .unwrap_err();
    assert_eq!(
        err.message(),
        "cannot drop column \"title\" of table \"docs\": the text index on docs uses it; drop \
         the text index first (db.drop_text_index(\"docs\"), or pluresdb text-index docs \
         --drop), then create it again over the other columns"
    );
    // Nothing changed: every column and row, and both indexes answer.
    let nearest = || {
        db.all_as::<(i64,)>(
            "SELECT rowid FROM vector_search('docs', 'e', '[1, 0]', 1)",
            (),
        )
        .unwrap()
    };
    assert_eq!(nearest(), [(1,)]);
    assert_eq!(db.text_search("docs", "car", 5, None).unwrap(), [2]);
    assert_eq!(
        db.value("SELECT group_concat(title || body || note) FROM docs", ())
            .unwrap(),
        Value::Text("red bikeoldx,blue carnewy".into())
    );
    // A column no index uses can be dropped; an indexed one once its index is dropped.
    db.exec("ALTER TABLE docs DROP COLUMN note").unwrap();
    assert_eq!(nearest(), [(1,)]);
    db.value("SELECT pluresdb_vector_index_drop('docs', 'e')", ())
        .unwrap();
    db.exec("ALTER TABLE docs DROP COLUMN e").unwrap();
    assert!(db.drop_text_index("docs").unwrap());
    db.exec("ALTER TABLE docs DROP COLUMN title").unwrap();
    // The text column of an embedded vector index is used by that index too.
    db.exec("CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT, emb BLOB)")
        .unwrap();
    let opts = VectorIndexOptions {
        embed_from: Some("body".into()),
        ..VectorIndexOptions::default()
    };
    db.create_vector_index("notes", "emb", &opts).unwrap();
    let err = db.exec("ALTER TABLE notes DROP COLUMN body").unwrap_err();
    assert!(
        err.message().starts_with(
            "cannot drop column \"body\" of table \"notes\": the vector index notes.emb uses it"
        ),
        "{err}"
    );
}

#[test]
fn a_graph_saved_by_another_handle_does_not_hide_its_writes() {
    // Two handles on one file stand for two processes. Saving a graph deletes the log entries
    // it includes: the other handle, whose graph is older, must not miss them.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("two.db");
    let data = vectors(50, 6, 11);
    let a = Database::open(&path).unwrap();
    docs(&a, &data);
    a.create_vector_index("docs", "embedding", &VectorIndexOptions::default())
        .unwrap();
    let q = &data[0];
    assert_eq!(search(&a, q, 50), brute(&a, q, 50, "1"));
    {
        let b = Database::open(&path).unwrap();
        b.run("DELETE FROM docs WHERE id = 1", ()).unwrap();
        let near: Vec<f32> = q.iter().map(|x| x * 2.0).collect();
        b.run(
            "INSERT INTO docs(id, embedding) VALUES (500, ?)",
            (blob(&near),),
        )
        .unwrap();
        assert_eq!(search(&b, q, 50)[0], 500);
        // Dropping the last handle saves its graph.
    }
    let hits = search(&a, q, 50);
    assert_eq!(hits, brute(&a, q, 50, "1"));
    assert_eq!(hits[0], 500);
    // Writes after that are caught up as usual, and the graph a saves then is complete.
    a.run("DELETE FROM docs WHERE id = 500", ()).unwrap();
    assert_eq!(search(&a, q, 50), brute(&a, q, 50, "1"));
    a.save_vector_indexes().unwrap();
    drop(a);
    let c = Database::open(&path).unwrap();
    assert_eq!(search(&c, q, 50), brute(&c, q, 50, "1"));
}

#[test]
fn rows_deleted_by_or_replace_leave_the_results() {
    // REPLACE deletes the rows in its way without firing delete triggers (SQLite's rule unless
    // recursive triggers are on), so the log never names them.
    let db = Database::open_in_memory().unwrap();
    db.exec("CREATE TABLE docs(id INTEGER PRIMARY KEY, title TEXT UNIQUE, embedding BLOB)")
        .unwrap();
    let data = vectors(40, 6, 21);
    for (i, v) in data.iter().enumerate() {
        db.run(
            "INSERT INTO docs VALUES (?, ?, ?)",
            (i as i64 + 1, format!("t{}", i + 1), blob(v)),
        )
        .unwrap();
    }
    db.create_vector_index("docs", "embedding", &VectorIndexOptions::default())
        .unwrap();
    let check = |db: &Database, q: &[f32]| {
        assert_eq!(search(db, q, 40), brute(db, q, 40, "1"));
        let filtered = db
            .all_as::<(i64,)>(
                "SELECT rowid FROM vector_search('docs', 'embedding', ?, 5, '{\"filter\": \"id < 30\"}')",
                (blob(q),),
            )
            .unwrap()
            .into_iter()
            .map(|r| r.0)
            .collect::<Vec<_>>();
        assert_eq!(filtered, brute(db, q, 5, "id < 30"));
    };
    check(&db, &data[0]);
    // Same row id, no vector: no insert trigger fires either.
    db.run(
        "INSERT OR REPLACE INTO docs(id, title, embedding) VALUES (1, 't1', NULL)",
        (),
    )
    .unwrap();
    check(&db, &data[0]);
    // Another row id: row 2 goes for its title.
    db.run(
        "REPLACE INTO docs(id, title, embedding) VALUES (100, 't2', ?)",
        (blob(&vectors(1, 6, 99)[0]),),
    )
    .unwrap();
    check(&db, &data[1]);
    // An update taking row 3's title deletes row 3.
    db.run("UPDATE OR REPLACE docs SET title = 't3' WHERE id = 4", ())
        .unwrap();
    check(&db, &data[2]);
    // Inside a transaction the search sees them gone too, and a rollback brings them back.
    db.transaction(|tx| {
        tx.run(
            "INSERT OR REPLACE INTO docs(id, title, embedding) VALUES (200, 't5', NULL)",
            (),
        )?;
        check(tx, &data[4]);
        Err::<(), _>(pluresdb_core::Error::invalid("roll back"))
    })
    .unwrap_err();
    check(&db, &data[4]);
    assert_eq!(search(&db, &data[4], 1), [5]);
    // The graph drops what searches found gone.
    let held = db.vector_indexes().unwrap()[0]
        .loaded
        .as_ref()
        .unwrap()
        .vectors;
    let rows = db
        .value("SELECT count(*) FROM docs WHERE embedding IS NOT NULL", ())
        .unwrap();
    assert_eq!(Value::Integer(held as i64), rows);
}

#[test]
fn rows_renumbered_by_vacuum_are_followed() {
    // VACUUM may renumber the rows of a table without an INTEGER PRIMARY KEY, and fires no
    // trigger: the row ids a graph holds then name other rows.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vacuum.db");
    let data = vectors(2_000, 8, 31);
    let nearest = |db: &Database, q: &[f32], exact: bool| {
        let sql = if exact {
            "SELECT rowid FROM notes WHERE embedding IS NOT NULL
             ORDER BY vec_distance_cosine(embedding, ?1) LIMIT 10"
        } else {
            "SELECT rowid FROM vector_search('notes', 'embedding', ?1, 10, '{\"ef\": 400}')"
        };
        db.all_as::<(i64,)>(sql, (blob(q),))
            .unwrap()
            .into_iter()
            .map(|r| r.0)
            .collect::<Vec<_>>()
    };
    let queries = [&data[1995], &data[1999], &data[1996], &data[1500]];
    {
        let db = Database::open(&path).unwrap();
        db.exec("CREATE TABLE notes(body TEXT, embedding BLOB)")
            .unwrap();
        db.transaction(|tx| {
            for v in &data {
                tx.run("INSERT INTO notes VALUES ('x', ?)", (blob(v),))?;
            }
            Ok::<_, pluresdb_core::Error>(())
        })
        .unwrap();
        db.create_vector_index("notes", "embedding", &VectorIndexOptions::default())
            .unwrap();
        nearest(&db, queries[0], false);
        // Only the rows after the gap move.
        db.exec("DELETE FROM notes WHERE rowid = 1990").unwrap();
        db.exec("VACUUM").unwrap();
        for q in queries {
            assert_eq!(nearest(&db, q, false), nearest(&db, q, true));
        }
        assert_rebuilt(&db, "renumbered");
        // A deleted row near the end, then the graph is saved as the handle closes.
        db.exec("DELETE FROM notes WHERE rowid = 1980").unwrap();
        nearest(&db, queries[0], false);
    }
    {
        // Another handle vacuums before the graph is loaded again.
        let db = Database::open(&path).unwrap();
        db.exec("VACUUM").unwrap();
    }
    let db = Database::open(&path).unwrap();
    for q in queries {
        assert_eq!(nearest(&db, q, false), nearest(&db, q, true));
    }
    assert_rebuilt(&db, "renumbered");
    // The last row has no vector: after a gap before it, VACUUM moves it to the row id the
    // graph holds the row before it under (the graph's highest id is still a row id).
    db.exec(
        "UPDATE notes SET embedding = NULL WHERE rowid = (SELECT max(rowid) FROM notes);
         DELETE FROM notes WHERE rowid = 10;",
    )
    .unwrap();
    nearest(&db, queries[0], false);
    db.exec("VACUUM").unwrap();
    for q in queries {
        assert_eq!(nearest(&db, q, false), nearest(&db, q, true));
    }
    assert_rebuilt(&db, "renumbered");
}

/// `docs(id, e)` with rows 1 at [1, 0] and 2 at [0, 1], indexed.
fn two_docs_indexed() -> Database {
    let db = Database::open_in_memory().unwrap();
    db.exec(
        "CREATE TABLE docs(id INTEGER PRIMARY KEY, e BLOB);
         INSERT INTO docs VALUES (1, vec_f32('[1, 0]')), (2, vec_f32('[0, 1]'))",
    )
    .unwrap();
    db.create_vector_index("docs", "e", &VectorIndexOptions::default())
        .unwrap();
    db
}

/// The row of `docs` nearest [1, 0], by the index.
fn nearest_doc(db: &Database) -> pluresdb_core::Result<Vec<(i64,)>> {
    db.all_as::<(i64,)>(
        "SELECT rowid FROM vector_search('docs', 'e', '[1, 0]', 1)",
        (),
    )
}

#[test]
fn an_index_whose_table_was_renamed_is_not_used_for_a_new_table_of_that_name() {
    // SQLite's way to change a table: rename it, make the new one, copy the rows over.
    let db = two_docs_indexed();
    assert_eq!(nearest_doc(&db).unwrap(), [(1,)]);
    db.exec(
        "ALTER TABLE docs RENAME TO docs_old;
         CREATE TABLE docs(id INTEGER PRIMARY KEY, title TEXT, e BLOB);
         INSERT INTO docs(id, e) SELECT id + 10, e FROM docs_old",
    )
    .unwrap();
    // The index's triggers went with the renamed table: its graph is not the new table's.
    let err = nearest_doc(&db).unwrap_err();
    assert!(err.message().contains("renamed to docs_old"), "{err}");
    db.create_vector_index("docs", "e", &VectorIndexOptions::default())
        .unwrap();
    assert_eq!(nearest_doc(&db).unwrap(), [(11,)]);
    db.exec("DROP TABLE docs_old; INSERT INTO docs(id, e) VALUES (20, vec_f32('[1, 0.01]'))")
        .unwrap();
    assert_eq!(nearest_doc(&db).unwrap(), [(11,)]);
    db.exec("DELETE FROM docs WHERE id = 11").unwrap();
    assert_eq!(nearest_doc(&db).unwrap(), [(20,)]);
}

#[test]
fn a_first_search_over_nodes_says_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nodes.db");
    let db = Database::open(&path).unwrap();
    db.put("a", &json!({})).unwrap();
    db.set_vector("a", Some(&[1.0, 0.0, 0.0])).unwrap();
    // A read-only handle cannot make the index its first search needs.
    let ro = Database::options().read_only(true).open(&path).unwrap();
    let err = ro
        .vector_search("nodes", vec![1.0, 0.0, 0.0], 1, None)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.message().contains("read-only"), "{err}");
    // A query of another dimension than the nodes' vectors is the query's fault.
    let err = db
        .vector_search("nodes", vec![1.0, 0.0, 0.0, 0.0], 1, None)
        .unwrap_err();
    assert!(
        err.message()
            .contains("the query vector has 4 dimensions but the index on nodes has 3"),
        "{err}"
    );
    let hits = db.vector_search("nodes", vec![1.0, 0.0, 0.0], 1, None);
    assert_eq!(hits.unwrap()[0].id.as_deref(), Some("a"));
    assert_eq!(
        ro.vector_search("nodes", vec![1.0, 0.0, 0.0], 1, None)
            .unwrap()[0]
            .id
            .as_deref(),
        Some("a")
    );
    // Nodes of mixed dimensions are named by id when the index is made.
    db.drop_vector_index("nodes", "vector").unwrap();
    db.put("b", &json!({})).unwrap();
    db.set_vector("b", Some(&[1.0, 0.0])).unwrap();
    let err = db
        .vector_search("nodes", vec![1.0, 0.0, 0.0], 1, None)
        .unwrap_err();
    assert!(err.message().contains("node \"b\""), "{err}");
}

#[test]
fn an_index_whose_column_was_renamed_is_not_used_for_a_new_column_of_that_name() {
    // Changing a column's type: rename it, add the new one, copy, drop the old one.
    let db = two_docs_indexed();
    assert_eq!(nearest_doc(&db).unwrap(), [(1,)]);
    db.exec(
        "ALTER TABLE docs RENAME COLUMN e TO e_old;
         ALTER TABLE docs ADD COLUMN e BLOB;
         UPDATE docs SET e = vec_f32('[0, 1]') WHERE id = 1;
         UPDATE docs SET e = vec_f32('[1, 0]') WHERE id = 2",
    )
    .unwrap();
    // The index's triggers watch e_old: its graph is not the new column's.
    let err = nearest_doc(&db).unwrap_err();
    assert!(err.message().contains("docs.e was renamed"), "{err}");
    db.create_vector_index("docs", "e", &VectorIndexOptions::default())
        .unwrap();
    assert_eq!(nearest_doc(&db).unwrap(), [(2,)]);
    db.exec("ALTER TABLE docs DROP COLUMN e_old").unwrap();
    db.exec("UPDATE docs SET e = vec_f32('[1, 0.1]') WHERE id = 1; DELETE FROM docs WHERE id = 2")
        .unwrap();
    assert_eq!(nearest_doc(&db).unwrap(), [(1,)]);
}

#[test]
fn changes_merged_from_a_peer_reach_a_loaded_index() {
    let make = || {
        let db = Database::open_in_memory().unwrap();
        db.exec("CREATE TABLE docs(id TEXT PRIMARY KEY NOT NULL, embedding BLOB)")
            .unwrap();
        db.sync_table("docs").unwrap();
        db.create_vector_index("docs", "embedding", &VectorIndexOptions::default())
            .unwrap();
        db
    };
    let (a, b) = (make(), make());
    let push = |from: &Database, to: &Database| {
        let since = to.peer_cursor(from.site_id()).unwrap();
        let set = from.changes_since(since, Some(to.site_id())).unwrap();
        to.apply_changes(&set.changes).unwrap();
    };
    let data = vectors(30, 5, 41);
    for (i, v) in data.iter().enumerate() {
        a.run("INSERT INTO docs VALUES (?, ?)", (format!("d{i}"), blob(v)))
            .unwrap();
        a.put(&format!("n{i}"), &json!({})).unwrap();
        a.set_vector(&format!("n{i}"), Some(v)).unwrap();
    }
    push(&a, &b);
    let q = &data[0];
    let rows = |db: &Database| {
        db.all_as::<(String,)>(
            "SELECT d.id FROM vector_search('docs', 'embedding', ?, 40) s
             JOIN docs d ON d.rowid = s.rowid",
            (blob(q),),
        )
        .unwrap()
    };
    let nodes = |db: &Database| -> Vec<String> {
        db.vector_search("nodes", q, 40, None)
            .unwrap()
            .into_iter()
            .map(|h| h.id.unwrap())
            .collect()
    };
    // b's indexes are loaded before the next merge.
    assert_eq!(rows(&b), rows(&a));
    assert_eq!(nodes(&b), nodes(&a));
    let near: Vec<f32> = q.iter().map(|x| x * 2.0 + 0.01).collect();
    a.exec("DELETE FROM docs WHERE id = 'd0'; UPDATE docs SET embedding = NULL WHERE id = 'd1'")
        .unwrap();
    a.run(
        "UPDATE docs SET embedding = ? WHERE id = 'd2'",
        (blob(&near),),
    )
    .unwrap();
    a.delete("n0").unwrap();
    a.set_vector("n1", None).unwrap();
    a.set_vector("n2", Some(&near)).unwrap();
    push(&a, &b);
    let (got_rows, got_nodes) = (rows(&b), nodes(&b));
    assert_eq!(got_rows, rows(&a));
    assert_eq!(got_nodes, nodes(&a));
    assert_eq!((got_rows.len(), got_rows[0].0.as_str()), (28, "d2"));
    assert_eq!((got_nodes.len(), got_nodes[0].as_str()), (28, "n2"));
}

#[test]
fn text_search_forgets_the_words_of_rows_replaced_or_removed_by_or_replace() {
    let db = Database::open_in_memory().unwrap();
    db.exec(
        "CREATE TABLE docs(id INTEGER PRIMARY KEY, slug TEXT UNIQUE, body TEXT);
         INSERT INTO docs VALUES (1, 'a', 'red apples'), (2, 'b', 'green pears'),
                                 (3, 'c', 'blue sky')",
    )
    .unwrap();
    db.create_text_index("docs", &["body"]).unwrap();
    let found = |word: &str| db.text_search("docs", word, 10, None).unwrap();
    assert_eq!(found("red"), [1]);
    // The same row id: the old words must go.
    db.exec("INSERT OR REPLACE INTO docs VALUES (1, 'a', 'yellow bananas')")
        .unwrap();
    assert_eq!(found("red"), [] as [i64; 0]);
    assert_eq!(found("yellow"), [1]);
    // Row 2 goes for its slug (no delete trigger fires), and its row id is used again.
    db.exec("INSERT OR REPLACE INTO docs VALUES (10, 'b', 'purple grapes')")
        .unwrap();
    assert_eq!(found("green"), [] as [i64; 0]);
    db.exec("INSERT INTO docs VALUES (2, 'd', 'grey stones')")
        .unwrap();
    assert_eq!(found("green"), [] as [i64; 0]);
    assert_eq!(found("grey"), [2]);
    // Updates, deletes and upserts as before.
    db.exec(
        "UPDATE docs SET body = 'red sky' WHERE id = 3;
         DELETE FROM docs WHERE id = 10;
         INSERT INTO docs VALUES (1, 'a', 'red wine') ON CONFLICT(id) DO UPDATE SET body = excluded.body",
    )
    .unwrap();
    assert_eq!(found("red"), [1, 3]);
    assert_eq!(found("purple blue bananas"), [] as [i64; 0]);
}

#[test]
fn a_text_index_of_the_older_kind_is_made_again_when_created_again() {
    // Text indexes used to be external-content FTS5 tables, which keep a replaced row's words.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    Database::open(&path)
        .unwrap()
        .exec("CREATE TABLE docs(id INTEGER PRIMARY KEY, body TEXT); INSERT INTO docs VALUES (1, 'red apples')")
        .unwrap();
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(
            "CREATE TABLE _pluresdb_text_indexes(tbl TEXT PRIMARY KEY, columns TEXT NOT NULL);
             CREATE VIRTUAL TABLE _pluresdb_fts_docs USING fts5(body, content='docs');
             CREATE TRIGGER _pluresdb_fts_docs_ai AFTER INSERT ON docs BEGIN
                 INSERT INTO _pluresdb_fts_docs(rowid, body) VALUES (NEW.rowid, NEW.body);
             END;
             INSERT INTO _pluresdb_fts_docs(_pluresdb_fts_docs) VALUES ('rebuild');
             INSERT INTO _pluresdb_text_indexes VALUES ('docs', 'body');",
        )
        .unwrap();
    let db = Database::open(&path).unwrap();
    assert_eq!(db.text_search("docs", "red", 5, None).unwrap(), [1]);
    db.create_text_index("docs", &["body"]).unwrap();
    db.exec("INSERT OR REPLACE INTO docs VALUES (1, 'yellow bananas')")
        .unwrap();
    assert_eq!(
        db.text_search("docs", "red", 5, None).unwrap(),
        [] as [i64; 0]
    );
    assert_eq!(db.text_search("docs", "yellow", 5, None).unwrap(), [1]);
}

#[test]
fn a_text_index_whose_table_was_dropped_or_renamed_says_so_and_can_be_made_again() {
    let db = Database::open_in_memory().unwrap();
    let make = "CREATE TABLE docs(id INTEGER PRIMARY KEY, body TEXT)";
    db.exec(&format!(
        "{make}; INSERT INTO docs VALUES (1, 'red apples'), (2, 'green pears')"
    ))
    .unwrap();
    db.create_text_index("docs", &["body"]).unwrap();
    // The index still holds the old rows' words under their row ids: not an answer.
    db.exec(&format!(
        "DROP TABLE docs; {make}; INSERT INTO docs VALUES (1, 'blue sky'), (2, 'red wine')"
    ))
    .unwrap();
    let err = db.text_search("docs", "red", 5, None).unwrap_err();
    assert!(err.message().contains("dropped or renamed"), "{err}");
    db.create_text_index("docs", &["body"]).unwrap();
    assert_eq!(db.text_search("docs", "red", 5, None).unwrap(), [2]);
    // Renamed, and a new table under the old name.
    db.exec(&format!(
        "ALTER TABLE docs RENAME TO docs_old; {make}; INSERT INTO docs VALUES (1, 'green tea'), (2, 'blue car')"
    ))
    .unwrap();
    let err = db.text_search("docs", "red", 5, None).unwrap_err();
    assert!(err.message().contains("dropped or renamed"), "{err}");
    db.create_text_index("docs", &["body"]).unwrap();
    assert_eq!(
        db.text_search("docs", "red", 5, None).unwrap(),
        [] as [i64; 0]
    );
    assert_eq!(db.text_search("docs", "green", 5, None).unwrap(), [1]);
    db.exec("INSERT INTO docs_old VALUES (3, 'green grass')")
        .unwrap();
    assert_eq!(db.text_search("docs", "green", 5, None).unwrap(), [1]);
}

#[test]
fn a_graph_holding_many_rows_removed_by_or_replace_is_built_again() {
    let db = Database::open_in_memory().unwrap();
    db.exec("CREATE TABLE docs(id INTEGER PRIMARY KEY, slug TEXT UNIQUE, embedding BLOB)")
        .unwrap();
    let data = vectors(200, 6, 51);
    let q = &data[0];
    for (i, v) in data.iter().enumerate() {
        // Rows 1-10 are the query's nearest.
        let v: Vec<f32> = if i < 10 {
            q.iter()
                .map(|x| x * (1.0 + i as f32 / 100.0) + 0.001 * i as f32)
                .collect()
        } else {
            v.clone()
        };
        db.run(
            "INSERT INTO docs VALUES (?, ?, ?)",
            (i as i64 + 1, format!("s{}", i + 1), blob(&v)),
        )
        .unwrap();
    }
    db.create_vector_index("docs", "embedding", &VectorIndexOptions::default())
        .unwrap();
    assert_eq!(search(&db, q, 1), [1]);
    // Each of them goes for its slug: the graph's ten nearest are all gone.
    for i in 1..=10 {
        let far: Vec<f32> = q.iter().map(|x| -x).collect();
        db.run(
            "INSERT OR REPLACE INTO docs VALUES (?, ?, ?)",
            (1000 + i, format!("s{i}"), blob(&far)),
        )
        .unwrap();
    }
    assert_eq!(search(&db, q, 1), brute(&db, q, 1, "1"));
    assert_rebuilt(&db, "removed by INSERT OR REPLACE");
    let held = db.vector_indexes().unwrap()[0]
        .loaded
        .as_ref()
        .unwrap()
        .vectors;
    assert_eq!(held, 200);
    assert_eq!(search(&db, q, 20), brute(&db, q, 20, "1"));
}

/// Changes the loaded index of `docs` holds that are not saved in the file yet.
fn unsaved(db: &Database) -> usize {
    db.vector_indexes().unwrap()[0]
        .loaded
        .as_ref()
        .unwrap()
        .unsaved
}

#[test]
fn saving_a_graph_never_waits_for_another_processs_write() {
    // Saving a graph (after many changes, and on close) only spares a rebuild later: while
    // another process (here a second handle) holds the write lock, a search or a close must
    // not wait for it until the busy timeout, and the graph is saved later instead.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("busy.db");
    let timeout = Duration::from_secs(4);
    let a = OpenOptions::new()
        .busy_timeout(timeout)
        .open(&path)
        .unwrap();
    let data = vectors(10_002, 4, 3);
    docs(&a, &data[..1]);
    a.create_vector_index("docs", "embedding", &VectorIndexOptions::default())
        .unwrap();
    assert_eq!(search(&a, &data[0], 1), [1]);
    // More changes than a search saves the graph after; a search through SQL catches up.
    a.transaction(|tx| {
        for (i, v) in data.iter().enumerate().skip(1) {
            tx.run(
                "INSERT INTO docs(id, embedding) VALUES (?, ?)",
                (i as i64 + 1, blob(v)),
            )?;
        }
        Ok::<_, pluresdb_core::Error>(())
    })
    .unwrap();
    assert_eq!(search(&a, &data[5], 1), [6]);
    assert!(unsaved(&a) >= 10_000);
    let other = Database::open(&path).unwrap();
    other.exec("BEGIN IMMEDIATE").unwrap();
    let started = Instant::now();
    let hits = a.vector_search("docs", data[7].clone(), 1, None).unwrap();
    assert_eq!(hits[0].rowid, 8);
    assert!(
        started.elapsed() < timeout / 2,
        "the search waited {:?} for the other handle's write lock",
        started.elapsed()
    );
    assert!(unsaved(&a) >= 10_000, "saved while another handle wrote");
    other.exec("COMMIT").unwrap();
    a.vector_search("docs", data[7].clone(), 1, None).unwrap();
    assert_eq!(unsaved(&a), 0, "saved once the lock was free");
    // Closing saves too, unless another process is writing.
    a.run("DELETE FROM docs WHERE id = 8", ()).unwrap();
    assert_eq!(search(&a, &data[7], 1).len(), 1);
    other.exec("BEGIN IMMEDIATE").unwrap();
    let started = Instant::now();
    drop(a);
    assert!(
        started.elapsed() < timeout / 2,
        "closing waited {:?} for the other handle's write lock",
        started.elapsed()
    );
    other.exec("COMMIT").unwrap();
    let hits = other
        .vector_search("docs", data[7].clone(), 1, None)
        .unwrap();
    assert_ne!(hits[0].rowid, 8);
}

/// `SELECT pluresdb_vector_index(..., '{"embed_from": ...}')` fills the vector column of
/// existing rows. On a synced table, those writes committed when the SELECT ended, without
/// their changes in the change log: the changes waited in memory for the next transaction, so
/// a process killed or closed first never sent them, and peers kept rows without vectors.
#[test]
fn embeddings_filled_by_sql_vector_index_on_a_synced_table_reach_peers_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let b = Database::open_in_memory().unwrap();
    let styles = ["exec", "run", "iterate"];
    let mut since = 0;
    {
        let a = Database::open(&path).unwrap();
        a.set_embedder(Some(std::sync::Arc::new(BagOfWords)));
        for db in [&a, &b] {
            for t in styles {
                db.exec(&format!(
                    "CREATE TABLE {t}(id TEXT PRIMARY KEY NOT NULL, body TEXT, emb BLOB);
                     SELECT pluresdb_sync_table('{t}');"
                ))
                .unwrap();
            }
        }
        for t in styles {
            a.exec(&format!(
                "INSERT INTO {t}(id, body) VALUES ('1', 'red car'), ('2', 'green tea')"
            ))
            .unwrap();
        }
        let set = a.changes_since(0, None).unwrap();
        b.apply_changes(&set.changes).unwrap();
        since = since.max(set.db_version);
        for t in styles {
            let sql = format!(
                "SELECT pluresdb_vector_index('{t}', 'emb', 'cosine', '{{\"embed_from\": \"body\"}}')"
            );
            match t {
                "exec" => a.exec(&sql).unwrap(),
                "run" => {
                    a.run(&sql, ()).unwrap();
                }
                _ => {
                    let rows: Vec<_> = a.iterate(&sql, ()).unwrap().collect();
                    assert_eq!(rows.len(), 1);
                }
            }
        }
    }
    let a = Database::open(&path).unwrap();
    b.apply_changes(&a.changes_since(since, None).unwrap().changes)
        .unwrap();
    for t in styles {
        let q = format!("SELECT id, body, vec_length(emb) FROM {t} ORDER BY id");
        let ra: Vec<(String, String, Option<i64>)> = a.all_as(&q, ()).unwrap();
        let rb: Vec<(String, String, Option<i64>)> = b.all_as(&q, ()).unwrap();
        assert_eq!(ra[0].2, Some(32), "{t}: embedded here");
        assert_eq!(ra, rb, "{t}: the peer got the embeddings");
    }
}

#[test]
fn merging_into_a_table_whose_embeddings_pluresdb_fills_warns_of_no_trigger_writes() {
    // PluresDB's own embedding triggers run when a merged row's text changes (both devices
    // compute the same vector); only user triggers writing synced tables are reported.
    let (a, b) = (
        Database::open_in_memory().unwrap(),
        Database::open_in_memory().unwrap(),
    );
    for db in [&a, &b] {
        db.set_embedder(Some(std::sync::Arc::new(BagOfWords)));
        db.exec(
            "CREATE TABLE docs(id TEXT PRIMARY KEY NOT NULL, body TEXT, emb BLOB);
             SELECT pluresdb_sync_table('docs');
             SELECT pluresdb_vector_index('docs', 'emb', 'cosine', '{\"embed_from\": \"body\"}');
             CREATE TABLE tally(id TEXT PRIMARY KEY NOT NULL, n INTEGER);
             SELECT pluresdb_sync_table('tally');
             INSERT INTO tally VALUES ('docs', 0);",
        )
        .unwrap();
    }
    a.run("INSERT INTO docs(id, body) VALUES ('1', 'red car')", ())
        .unwrap();
    a.run("UPDATE docs SET body = 'green tea' WHERE id = '1'", ())
        .unwrap();
    let report = b
        .apply_changes(&a.changes_since(0, Some(b.site_id())).unwrap().changes)
        .unwrap();
    assert!(report.applied > 0);
    assert_eq!(report.trigger_writes, 0, "{report:?}");
    assert_eq!(
        b.value("SELECT emb FROM docs", ()).unwrap(),
        a.value("SELECT emb FROM docs", ()).unwrap()
    );
    // A user trigger beside them is still reported.
    for db in [&a, &b] {
        db.exec(
            "CREATE TRIGGER count_docs AFTER UPDATE OF body ON docs BEGIN
                 UPDATE tally SET n = n + 1;
             END;",
        )
        .unwrap();
    }
    a.run("UPDATE docs SET body = 'blue sky' WHERE id = '1'", ())
        .unwrap();
    let since = b.peer_cursor(a.site_id()).unwrap();
    let report = b
        .apply_changes(&a.changes_since(since, Some(b.site_id())).unwrap().changes)
        .unwrap();
    assert_eq!(report.trigger_writes, 1, "{report:?}");
}
