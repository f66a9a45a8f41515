//! The SQL API: exec/run/get/all/iterate/prepare, parameters, values, errors.

use pluresdb_core::{Database, ErrorKind, Value, named_params, params};
use serde_json::json;

fn db_with_people() -> Database {
    let db = Database::open_in_memory().unwrap();
    db.exec(
        "CREATE TABLE people(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, age INTEGER, score REAL, photo BLOB);
         INSERT INTO people(name, age, score) VALUES ('Ada', 36, 9.5), ('Alan', 41, 8.25);",
    )
    .unwrap();
    db
}

#[test]
fn run_reports_changes_and_last_insert_rowid() {
    let db = db_with_people();
    let r = db
        .run("INSERT INTO people(name, age) VALUES (?, ?)", ("Grace", 85))
        .unwrap();
    assert_eq!(r.changes, 1);
    assert_eq!(r.last_insert_rowid, 3);
    let r = db.run("UPDATE people SET age = age + 1", ()).unwrap();
    assert_eq!(r.changes, 3);
    let r = db
        .run("UPDATE people SET age = 0 WHERE id = 999", ())
        .unwrap();
    assert_eq!(r.changes, 0);
    // A read through run changes nothing.
    assert_eq!(db.run("SELECT * FROM people", ()).unwrap().changes, 0);
    // RETURNING works through run (rows are consumed).
    let r = db
        .run("DELETE FROM people WHERE name = 'Alan' RETURNING id", ())
        .unwrap();
    assert_eq!(r.changes, 1);
}

#[test]
fn get_all_and_typed_rows() {
    let db = db_with_people();
    let row = db
        .get(
            "SELECT id, name, age, score FROM people WHERE name = ?",
            ("Ada",),
        )
        .unwrap()
        .unwrap();
    assert_eq!(row.get::<i64>("id").unwrap(), 1);
    assert_eq!(row.get::<String>(1).unwrap(), "Ada");
    assert_eq!(
        row.get::<f64>("SCORE").unwrap(),
        9.5,
        "names resolve case-insensitively"
    );
    assert_eq!(
        row.to_json(),
        json!({"id": 1, "name": "Ada", "age": 36, "score": 9.5})
    );
    assert!(
        db.get("SELECT * FROM people WHERE id = ?", (99,))
            .unwrap()
            .is_none()
    );

    let all: Vec<(String, Option<i64>)> = db
        .all_as("SELECT name, age FROM people ORDER BY id", ())
        .unwrap();
    assert_eq!(
        all,
        vec![("Ada".into(), Some(36)), ("Alan".into(), Some(41))]
    );

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Person {
        name: String,
        age: i64,
    }
    let p: Person = db
        .get("SELECT name, age FROM people WHERE id = 2", ())
        .unwrap()
        .unwrap()
        .deserialize()
        .unwrap();
    assert_eq!(
        p,
        Person {
            name: "Alan".into(),
            age: 41
        }
    );

    let err = row.get::<i64>("name").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(
        err.message(),
        "column 1 (\"name\"): expected INTEGER, found TEXT \"Ada\""
    );
    let err = row.get::<i64>("nope").unwrap_err();
    assert!(
        err.message()
            .contains("no column named \"nope\"; the row has id, name, age, score"),
        "{err}"
    );
}

#[test]
fn every_parameter_style_binds() {
    let db = db_with_people();
    let q = |sql: &str, p: &dyn pluresdb_core::Params| -> String {
        db.get(sql, p).unwrap().unwrap().get::<String>(0).unwrap()
    };
    assert_eq!(q("SELECT name FROM people WHERE id = ?", &(2,)), "Alan");
    assert_eq!(
        q(
            "SELECT name FROM people WHERE id = ?2 AND age > ?1",
            &(0, 2)
        ),
        "Alan"
    );
    assert_eq!(
        q(
            "SELECT name FROM people WHERE id = :id",
            &named_params! {":id": 2}
        ),
        "Alan"
    );
    assert_eq!(
        q(
            "SELECT name FROM people WHERE id = @id",
            &named_params! {"id": 1}
        ),
        "Ada"
    );
    assert_eq!(
        q("SELECT name FROM people WHERE id = $id", &json!({"id": 2})),
        "Alan"
    );
    assert_eq!(
        q(
            "SELECT name FROM people WHERE id = ? AND name = ?",
            &params![1, "Ada"]
        ),
        "Ada"
    );
    assert_eq!(
        q(
            "SELECT name FROM people WHERE id = ? AND age = ?",
            &json!([2, 41])
        ),
        "Alan"
    );
    assert_eq!(
        q(
            "SELECT name FROM people WHERE id = ?",
            &vec![Value::Integer(1)]
        ),
        "Ada"
    );
    // The same named parameter used twice binds once; extra names are ignored.
    assert_eq!(q("SELECT :a || :a", &json!({"a": "x", "unused": 1})), "xx");
}

#[test]
fn parameter_mistakes_are_clear_errors() {
    let db = db_with_people();
    let err = db
        .get("SELECT * FROM people WHERE id = ? AND age = ?", (1,))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(
        err.message(),
        "wrong number of parameters: the statement takes 2 (?1, ?2), 1 was given"
    );
    let err = db
        .run("INSERT INTO people(name) VALUES (?)", ("x", "y"))
        .unwrap_err();
    assert_eq!(
        err.message(),
        "wrong number of parameters: the statement takes 1 (?1), 2 were given"
    );
    let err = db
        .get(
            "SELECT * FROM people WHERE id = :id AND age = :age",
            json!({"id": 1}),
        )
        .unwrap_err();
    assert_eq!(err.message(), "missing value for named parameter :age");
    let err = db
        .get("SELECT * FROM people WHERE id = ?", json!({"id": 1}))
        .unwrap_err();
    assert!(err.message().contains("positional"), "{err}");
    let err = db.get("SELECT ?", json!([u64::MAX])).unwrap_err();
    assert!(
        err.message()
            .contains("does not fit in a 64-bit signed integer"),
        "{err}"
    );
    // Nothing changed.
    assert_eq!(db.all("SELECT * FROM people", ()).unwrap().len(), 2);
}

#[test]
fn values_round_trip_exactly() {
    let db = Database::open_in_memory().unwrap();
    db.exec("CREATE TABLE v(i INTEGER, r REAL, t TEXT, b BLOB, n)")
        .unwrap();
    let blob = vec![0u8, 1, 2, 255];
    db.run(
        "INSERT INTO v VALUES (?, ?, ?, ?, ?)",
        params![
            i64::MAX,
            0.1f64,
            "héllo\u{1F600}",
            blob.clone(),
            Value::Null
        ],
    )
    .unwrap();
    db.run(
        "INSERT INTO v VALUES (?, ?, ?, ?, ?)",
        params![i64::MIN, -1e300, "", Vec::<u8>::new(), true],
    )
    .unwrap();
    let rows = db.all("SELECT * FROM v ORDER BY rowid", ()).unwrap();
    assert_eq!(
        rows[0].values(),
        &[
            Value::Integer(i64::MAX),
            Value::Real(0.1),
            Value::Text("héllo\u{1F600}".into()),
            Value::Blob(blob.clone()),
            Value::Null,
        ]
    );
    assert_eq!(rows[1].value(0).unwrap(), &Value::Integer(i64::MIN));
    assert_eq!(
        rows[1].value(4).unwrap(),
        &Value::Integer(1),
        "bool binds as 1"
    );
    // Integers beyond 2^53 survive JSON output exactly.
    assert_eq!(rows[0].to_json()["i"].to_string(), "9223372036854775807");
    assert_eq!(rows[0].to_json()["b"], json!({"$blob": "AAEC/w=="}));
    // JSON parameters: objects become JSON text that JSON1 can read back.
    db.run("INSERT INTO v(t) VALUES (?)", (json!({"k": [1, 2]}),))
        .unwrap();
    let k = db
        .value(
            "SELECT json_extract(t, '$.k[1]') FROM v WHERE t LIKE '{%'",
            (),
        )
        .unwrap();
    assert_eq!(k, Value::Integer(2));
}

#[test]
fn prepared_statements_are_reusable_and_describe_themselves() {
    let db = db_with_people();
    let insert = db
        .prepare("INSERT INTO people(name, age) VALUES (@name, @age)")
        .unwrap();
    assert!(!insert.readonly());
    assert_eq!(
        insert.parameters(),
        &[Some("@name".to_string()), Some("@age".to_string())]
    );
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        let r = insert.run(json!({"name": name, "age": i})).unwrap();
        assert_eq!(r.changes, 1);
    }
    let select = db
        .prepare("SELECT id, name AS who, age * 2 FROM people WHERE age < ?")
        .unwrap();
    assert!(select.readonly());
    assert!(select.returns_rows());
    let cols = select.columns();
    assert_eq!(
        cols.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["id", "who", "age * 2"]
    );
    assert_eq!(cols[0].decl_type.as_deref(), Some("INTEGER"));
    assert_eq!(cols[1].decl_type.as_deref(), Some("TEXT"));
    assert_eq!(cols[2].decl_type, None);
    assert_eq!(select.all((3,)).unwrap().len(), 3);
    assert_eq!(
        select
            .get((1,))
            .unwrap()
            .unwrap()
            .get::<String>("who")
            .unwrap(),
        "a"
    );
    let names: Vec<String> = select
        .iterate((100,))
        .unwrap()
        .map(|r| r.unwrap().get(1).unwrap())
        .collect();
    assert_eq!(names, ["Ada", "Alan", "a", "b", "c"]);

    let err = db.prepare("SELECT 1; SELECT 2").unwrap_err();
    assert!(err.message().contains("more than one statement"), "{err}");
    // Prepared statement keeps working after the schema changes.
    let star = db.prepare("SELECT * FROM people WHERE id = 1").unwrap();
    db.exec("ALTER TABLE people ADD COLUMN email TEXT").unwrap();
    let row = star.get(()).unwrap().unwrap();
    assert_eq!(row.columns().names().last(), Some(&"email"));
}

#[test]
fn iterate_streams_and_guards_the_connection() {
    let db = Database::open_in_memory().unwrap();
    db.exec("CREATE TABLE n(x INTEGER)").unwrap();
    db.transaction(|tx| {
        let ins = tx.prepare("INSERT INTO n VALUES (?)")?;
        for i in 0..10_000 {
            ins.run((i,))?;
        }
        Ok::<_, pluresdb_core::Error>(())
    })
    .unwrap();
    let mut it = db.iterate("SELECT x FROM n ORDER BY x", ()).unwrap();
    assert_eq!(it.columns().names(), ["x"]);
    let first = it.next().unwrap().unwrap();
    assert_eq!(first.get::<i64>(0).unwrap(), 0);
    // In-memory databases have one connection: using it while the iterator is open on the
    // same thread is a clear error, not a deadlock.
    let err = db.run("INSERT INTO n VALUES (1)", ()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Busy);
    assert!(err.message().contains("iterate()"), "{err}");
    let sum: i64 = it.map(|r| r.unwrap().get::<i64>(0).unwrap()).sum();
    assert_eq!(sum, (1..10_000).sum::<i64>());
    // Exhausted: the connection is free again.
    db.run("INSERT INTO n VALUES (1)", ()).unwrap();
    // Dropping early frees it too.
    let mut it = db.iterate("SELECT x FROM n", ()).unwrap();
    it.next();
    drop(it);
    db.run("INSERT INTO n VALUES (2)", ()).unwrap();
}

#[test]
fn sqlite_features_work_because_it_is_sqlite() {
    let db = Database::open_in_memory().unwrap();
    // JSON1
    assert_eq!(
        db.value("SELECT json_extract('{\"a\":{\"b\":7}}', '$.a.b')", ())
            .unwrap(),
        Value::Integer(7)
    );
    assert_eq!(
        db.value("SELECT '{\"a\":3}' ->> 'a'", ()).unwrap(),
        Value::Integer(3)
    );
    // FTS5 with bm25
    db.exec("CREATE VIRTUAL TABLE docs USING fts5(body);
             INSERT INTO docs VALUES ('the quick brown fox'), ('lazy dogs sleep'), ('quick quick fox');").unwrap();
    let hits: Vec<(String,)> = db
        .all_as(
            "SELECT body FROM docs WHERE docs MATCH 'quick' ORDER BY bm25(docs)",
            (),
        )
        .unwrap();
    assert_eq!(
        hits,
        [
            ("quick quick fox".to_string(),),
            ("the quick brown fox".to_string(),)
        ]
    );
    // Window functions and CTEs
    let ranks: Vec<(i64, i64)> = db
        .all_as(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 4)
                 SELECT x, sum(x) OVER (ORDER BY x) FROM c",
            (),
        )
        .unwrap();
    assert_eq!(ranks, [(1, 1), (2, 3), (3, 6), (4, 10)]);
    // STRICT tables, generated columns and RETURNING
    db.exec("CREATE TABLE s(id INTEGER PRIMARY KEY, a INTEGER NOT NULL, twice INTEGER GENERATED ALWAYS AS (a * 2)) STRICT").unwrap();
    let row = db
        .get("INSERT INTO s(a) VALUES (21) RETURNING id, twice", ())
        .unwrap()
        .unwrap();
    assert_eq!(row.get::<i64>("twice").unwrap(), 42);
    let err = db
        .run("INSERT INTO s(a) VALUES ('not a number')", ())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Constraint);
    assert!(
        err.to_string()
            .contains("cannot store TEXT value in INTEGER column s.a"),
        "{err}"
    );
    // UPSERT
    db.exec("CREATE TABLE kv(k TEXT PRIMARY KEY, v INTEGER)")
        .unwrap();
    for _ in 0..3 {
        db.run(
            "INSERT INTO kv VALUES ('a', 1) ON CONFLICT(k) DO UPDATE SET v = v + 1",
            (),
        )
        .unwrap();
    }
    assert_eq!(db.value("SELECT v FROM kv", ()).unwrap(), Value::Integer(3));
}

#[test]
fn syntax_errors_show_the_sql_and_the_position() {
    let db = db_with_people();
    let err = db.all("SELECT * FORM people", ()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Syntax);
    assert_eq!(err.offset(), Some(9));
    assert_eq!(
        err.to_string(),
        "near \"FORM\": syntax error\n  SELECT * FORM people\n           ^ (at byte 9)"
    );
    // In a script the position is within the whole script.
    let err = db
        .exec("CREATE TABLE ok(x);\nINSERT INTO ok VALUES (1);\nSELEC 2;")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Syntax);
    assert_eq!(err.offset(), Some(47));
    assert!(err.to_string().contains("line 3: SELEC 2;"), "{err}");
    // Statements before the error ran (as in sqlite3_exec); those after did not.
    assert_eq!(
        db.value("SELECT count(*) FROM ok", ()).unwrap(),
        Value::Integer(1)
    );

    let err = db.all("SELECT * FROM nowhere", ()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Sql);
    assert!(
        err.to_string().starts_with("no such table: nowhere"),
        "{err}"
    );
    let err = db
        .run("INSERT INTO people(name) VALUES ('Ada')", ())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Constraint);
    assert!(
        err.to_string()
            .contains("UNIQUE constraint failed: people.name"),
        "{err}"
    );
    assert_eq!(db.all("SELECT * FROM people", ()).unwrap().len(), 2);
}

#[test]
fn scripts_return_the_last_statements_rows() {
    let db = Database::open_in_memory().unwrap();
    let out = db
        .exec_script(
            "CREATE TABLE t(x); INSERT INTO t VALUES (1), (2); SELECT x * 10 AS y FROM t; -- done",
        )
        .unwrap();
    assert_eq!(out.statements, 3);
    assert_eq!(out.columns.names(), ["y"]);
    assert_eq!(out.rows.len(), 2);
    assert_eq!(out.changes, 2);
    // Triggers with inner semicolons are one statement.
    db.exec(
        "CREATE TABLE log(msg); CREATE TRIGGER t_ins AFTER INSERT ON t BEGIN INSERT INTO log VALUES ('a'); INSERT INTO log VALUES ('b'); END; INSERT INTO t VALUES (3);",
    )
    .unwrap();
    assert_eq!(
        db.value("SELECT count(*) FROM log", ()).unwrap(),
        Value::Integer(2)
    );
    assert!(db.exec("").is_ok());
    assert!(db.exec("  -- only a comment\n").is_ok());
}

#[test]
fn to_json_keeps_columns_with_the_same_name() {
    let db = Database::open_in_memory().unwrap();
    let row = db
        .get("SELECT 1 AS id, 2 AS id, 3 AS \"id:1\", 4 AS id", ())
        .unwrap()
        .unwrap();
    assert_eq!(
        row.to_json(),
        json!({"id": 1, "id:1": 2, "id:1:1": 3, "id:2": 4})
    );
}
