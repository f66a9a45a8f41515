//! What a peer's bytes can do to the decoder: any bytes, and valid messages damaged, decode to
//! a message or an error, never a panic, and a message accepted encodes back to what decodes
//! the same.

use pluresdb_core::{ChangeRecord, Hlc, ResumePoint, SiteId, Value, Version, VersionVector};
use pluresdb_sync::codec::{DEFAULT_MAX_MESSAGE, Message};
use proptest::prelude::*;

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::Integer),
        any::<f64>().prop_map(Value::Real),
        "[a-c\u{e9}]{0,4}".prop_map(Value::Text),
        proptest::collection::vec(any::<u8>(), 0..4).prop_map(Value::Blob),
    ]
}

fn change() -> impl Strategy<Value = ChangeRecord> {
    (
        prop_oneof![Just("todos"), Just("_pluresdb_nodes"), Just("")],
        proptest::collection::vec(value(), 0..3),
        "(|data\\.[a-b]{0,2}|title)",
        proptest::option::of(value()),
        any::<u64>(),
        0u8..3,
        any::<u64>(),
    )
        .prop_map(
            |(collection, key, field, value, hlc, site, cl)| ChangeRecord {
                collection: collection.into(),
                key: key.into(),
                field: field.into(),
                value,
                version: Version::new(Hlc::from_u64(hlc), SiteId([site; 16])),
                cl,
            },
        )
}

/// A resume point: opaque bytes to the protocol.
fn point() -> impl Strategy<Value = ResumePoint> {
    proptest::collection::vec(any::<u8>(), 0..40).prop_map(ResumePoint::from_bytes)
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (
            0u8..3,
            any::<u64>(),
            proptest::collection::vec((0u8..4, any::<u64>()), 0..3),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(
                |(site, db_version, have, resumes, refetches, key_columns, refusals)| {
                    Message::Hello {
                        site: SiteId([site; 16]),
                        db_version,
                        have: have
                            .into_iter()
                            .map(|(s, v)| (SiteId([s; 16]), v))
                            .collect::<VersionVector>(),
                        resumes,
                        // (Only a resuming hello offers them.)
                        refetches: resumes && refetches,
                        key_columns: resumes && key_columns,
                        refusals: resumes && refusals,
                    }
                }
            ),
        proptest::collection::vec(
            (
                "[a-z\u{e9}]{0,6}",
                proptest::collection::vec("[a-z]{0,4}", 0..4)
            ),
            0..3
        )
        .prop_map(Message::KeyColumns),
        point().prop_map(Message::Progress),
        (
            proptest::option::of(point()),
            proptest::option::of((
                any::<u64>(),
                proptest::collection::vec(("[a-z]{1,6}", proptest::option::of("[a-z]{1,6}")), 1..3)
            ))
        )
            .prop_map(|(point, refetch)| Message::Resume {
                point,
                refetch: refetch.map(|(cursor, wanted)| pluresdb_core::Refetching {
                    cursor,
                    wanted: wanted
                        .into_iter()
                        .map(|(table, column)| pluresdb_core::Refetch { table, column })
                        .collect(),
                }),
            }),
        (
            proptest::collection::vec(("[a-z\u{e9}]{0,6}", "[a-z \u{e9}]{0,12}"), 0..3),
            proptest::collection::vec(("[a-z]{1,6}", proptest::option::of("[a-z]{1,6}")), 0..3)
        )
            .prop_map(|(refused, left_out)| Message::Refused(
                pluresdb_core::PeerRefusals {
                    refused: refused
                        .into_iter()
                        .map(|(table, reason)| pluresdb_core::Refused { table, reason })
                        .collect(),
                    left_out: left_out
                        .into_iter()
                        .map(|(table, column)| pluresdb_core::Refetch { table, column })
                        .collect(),
                }
            )),
        proptest::collection::vec(change(), 0..5).prop_map(Message::Changes),
        any::<u64>().prop_map(|db_version| Message::Done { db_version }),
        any::<u64>().prop_map(|db_version| Message::Ack { db_version }),
        "[a-z \u{e9}]{0,10}".prop_map(Message::Error),
    ]
}

/// How to damage a message's bytes.
#[derive(Clone, Debug)]
enum Damage {
    Set(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Cut(usize),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Damage::Set(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Damage::Insert(i, b)),
        any::<usize>().prop_map(Damage::Remove),
        any::<usize>().prop_map(Damage::Cut),
    ]
}

fn apply(bytes: &mut Vec<u8>, damage: &Damage) {
    let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
    match *damage {
        Damage::Set(i, b) if !bytes.is_empty() => {
            let i = at(i, bytes.len());
            bytes[i] = b;
        }
        Damage::Insert(i, b) => bytes.insert(at(i, bytes.len() + 1), b),
        Damage::Remove(i) if !bytes.is_empty() => {
            bytes.remove(at(i, bytes.len()));
        }
        Damage::Cut(i) => bytes.truncate(at(i, bytes.len() + 1)),
        _ => {}
    }
}

/// Decodes `bytes`; when accepted, the message must encode to bytes that decode to a message
/// encoding the same (compared encoded: a NaN value is not equal to itself).
fn decodes_consistently(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(message) = Message::decode(bytes, DEFAULT_MAX_MESSAGE) {
        let encoded = message.encode();
        let again = Message::decode(&encoded, DEFAULT_MAX_MESSAGE)
            .map_err(|e| TestCaseError::fail(format!("{message:?} re-encoded fails: {e}")))?;
        prop_assert_eq!(again.encode(), encoded, "{:?}", message);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn valid_messages_round_trip(m in message()) {
        let encoded = m.encode();
        let decoded = Message::decode(&encoded, DEFAULT_MAX_MESSAGE).unwrap();
        prop_assert_eq!(decoded.encode(), encoded);
    }

    #[test]
    fn any_bytes_decode_or_fail_without_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..64),
        version in proptest::bool::ANY,
        kind in 1u8..6,
    ) {
        // Mostly past the version and type bytes, where the rest of the decoder is.
        let mut bytes = bytes;
        if version {
            bytes.splice(0..0, [1, kind]);
        }
        decodes_consistently(&bytes)?;
    }

    #[test]
    fn damaged_messages_decode_or_fail_without_panic(
        m in message(),
        damages in proptest::collection::vec(damage(), 1..4),
    ) {
        let mut bytes = m.encode();
        for d in &damages {
            apply(&mut bytes, d);
        }
        decodes_consistently(&bytes)?;
    }
}

/// A database with the `todos` table synced.
fn todos_db() -> pluresdb_core::Database {
    let db = pluresdb_core::Database::open_in_memory().unwrap();
    db.exec("CREATE TABLE todos(id TEXT PRIMARY KEY NOT NULL, title TEXT, done INTEGER)")
        .unwrap();
    db.sync_table("todos").unwrap();
    db
}

/// Rows and nodes of `db`, one string each.
fn contents(db: &pluresdb_core::Database) -> Vec<String> {
    let mut out: Vec<String> = db
        .all("SELECT * FROM todos", ())
        .unwrap()
        .iter()
        .map(|r| r.to_json().to_string())
        .collect();
    out.extend(
        db.list("")
            .unwrap()
            .into_iter()
            .map(|n| format!("{} {:?} {:?}", n.id, n.node_type, n.data)),
    );
    out
}

/// A change file of a few rows and nodes, and what its producer holds.
fn sample_file() -> &'static (Vec<u8>, Vec<String>) {
    static FILE: std::sync::OnceLock<(Vec<u8>, Vec<String>)> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let db = todos_db();
        db.exec(
            "INSERT INTO todos VALUES ('1', 'one', 0), ('2', 'two', 1);
             UPDATE todos SET title = 'uno' WHERE id = '1';",
        )
        .unwrap();
        db.put("n", &serde_json::json!({"s": "hello", "k": [1, 2]}))
            .unwrap();
        let mut file = Vec::new();
        pluresdb_sync::file::write_changes(&db, &VersionVector::new(), &mut file, 1 << 20).unwrap();
        (file, contents(&db))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// A damaged change file applies or fails without a panic, and never stores a row or a
    /// node that is not the producer's.
    #[test]
    fn a_damaged_change_file_never_stores_what_its_producer_does_not_hold(
        damages in proptest::collection::vec(damage(), 1..3),
    ) {
        let (file, theirs) = sample_file();
        let mut bytes = file.clone();
        for d in &damages {
            apply(&mut bytes, d);
        }
        let db = todos_db();
        let _ = pluresdb_sync::file::apply_file(&db, &mut bytes.as_slice(), None, 1 << 20);
        for item in contents(&db) {
            prop_assert!(theirs.contains(&item), "{} is not the producer's", item);
        }
    }
}
