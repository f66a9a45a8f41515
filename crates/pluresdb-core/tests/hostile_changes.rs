//! Whatever changes a peer sends, the merge never panics, refuses a batch without changing
//! anything, and what it accepts reads back and passes on: a replica that gets this one's
//! changes holds the same, and merging the batch again changes nothing.

use pluresdb_core::{ChangeRecord, Database, EDGES, Hlc, NODES, SiteId, Value, Version};
use proptest::prelude::*;
use serde_json::json;

/// Everything replicated, in a canonical text form.
fn dump(db: &Database) -> String {
    let mut out = String::new();
    for n in db.list("").unwrap() {
        out += &format!(
            "node {} {:?} {} {:?}\n",
            n.id,
            n.node_type,
            json!(n.data),
            n.vector
        );
    }
    for row in db
        .all(
            "SELECT from_id, relation, to_id, data FROM pluresdb_edges ORDER BY 1, 2, 3",
            (),
        )
        .unwrap()
    {
        out += &format!("edge {}\n", row.to_json());
    }
    for row in db.all("SELECT * FROM todos ORDER BY id", ()).unwrap() {
        out += &format!("todos {}\n", row.to_json());
    }
    for row in db.all("SELECT * FROM nums ORDER BY id", ()).unwrap() {
        out += &format!("nums {}\n", row.to_json());
    }
    out
}

fn db() -> Database {
    let db = Database::open_in_memory().unwrap();
    db.exec("CREATE TABLE todos(id TEXT PRIMARY KEY NOT NULL, title TEXT, done INTEGER NOT NULL DEFAULT 0)")
        .unwrap();
    db.sync_table("todos").unwrap();
    db.exec("CREATE TABLE nums(id INTEGER PRIMARY KEY, n INTEGER NOT NULL DEFAULT 0, s TEXT)")
        .unwrap();
    db.sync_table("nums").unwrap();
    db
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn text(samples: &'static [&'static str]) -> impl Strategy<Value = Value> {
    proptest::sample::select(samples).prop_map(|t| Value::Text(t.into()))
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        prop_oneof![Just(0i64), Just(1), Just(-7), Just(i64::MAX)].prop_map(Value::Integer),
        prop_oneof![Just(2.0), Just(0.5), Just(f64::NAN), Just(-0.0)].prop_map(Value::Real),
        text(&[
            "1",
            "\"s\"",
            "{\"a\": 1}",
            "{not",
            "[1, 2]",
            "{\"a\": 1, \"a\": 2}",
            "null",
            "x",
            "",
            "2",
            "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
        ]),
        proptest::collection::vec(any::<u8>(), 0..9).prop_map(Value::Blob),
    ]
}

fn change() -> impl Strategy<Value = ChangeRecord> {
    let collection = proptest::sample::select(&[NODES, EDGES, "todos", "nums", "elsewhere"][..]);
    let key = prop_oneof![
        3 => text(&["a", "b", "c"]).prop_map(|k| vec![k]),
        2 => prop_oneof![
            Just(Value::Integer(1)),
            Just(Value::Integer(2)),
            Just(Value::Real(1.0)),
            Just(Value::Text("1".into())),
        ]
        .prop_map(|k| vec![k]),
        2 => (text(&["a", "b"]), text(&["r", "s"]), text(&["a", "b", "c"]))
            .prop_map(|(f, r, t)| vec![f, r, t]),
        1 => proptest::collection::vec(value(), 0..4),
    ];
    let field = proptest::sample::select(
        &[
            "", "type", "vector", "data.x", "data.y", "bogus", "data", "title", "done", "id",
        ][..],
    );
    let hlc = prop_oneof![
        8 => (0u64..2000, any::<u16>()).prop_map(|(ms, l)| Hlc::new(now() - 1000 + ms, l)),
        1 => Just(Hlc::from_u64(0)),
        1 => Just(Hlc::new(now() + 86_400_000, 0)),
    ];
    let cl = prop_oneof![8 => 1u64..5, 1 => Just(0u64), 1 => Just(u64::MAX)];
    (
        collection,
        key,
        field,
        proptest::option::of(value()),
        hlc,
        1u8..3,
        cl,
    )
        .prop_map(
            |(collection, key, field, value, hlc, site, cl)| ChangeRecord {
                collection: collection.into(),
                key: key.into(),
                field: field.into(),
                value,
                version: Version::new(hlc, SiteId([site; 16])),
                cl,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_batch_is_refused_whole_or_merges_into_a_state_that_reads_and_passes_on(
        batch in proptest::collection::vec(change(), 1..6),
    ) {
        let here = db();
        here.put("a", &json!({"k": 1})).unwrap();
        here.put("b", &json!({})).unwrap();
        here.link("a", "r", "b", Some(&json!({"w": 1}))).unwrap();
        here.run("INSERT INTO todos(id, title) VALUES ('a', 'first')", ()).unwrap();
        here.run("INSERT INTO nums(id, n, s) VALUES (1, 5, 'five')", ()).unwrap();
        let before = dump(&here);
        match here.apply_changes(&batch) {
            Err(_) => prop_assert_eq!(dump(&here), before, "a refused batch changed nothing"),
            Ok(_) => {
                let after = dump(&here);
                here.apply_changes(&batch).unwrap();
                prop_assert_eq!(dump(&here), after.clone(), "merging again changes nothing");
                let there = db();
                there
                    .apply_changes(&here.changes_since(0, None).unwrap().changes)
                    .unwrap();
                // (Except for a new life of a row known here only by a column this table
                // lacks: its creation's version, unknown, is not passed on until it arrives.)
                let lacking = batch.iter().any(|c| match &*c.collection {
                    "todos" => !["", "title", "done"].contains(&&*c.field),
                    "nums" => !["", "n", "s"].contains(&&*c.field),
                    _ => false,
                });
                if !lacking {
                    prop_assert_eq!(dump(&there), after, "a replica of it holds the same");
                }
            }
        }
    }
}
