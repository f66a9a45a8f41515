//! Whether SQLite stores a value in a column as that same value: a column's type affinity
//! converts some values as they are stored (`'2'` becomes `2` in an INTEGER column, `5`
//! becomes `'5'` in a TEXT one, NaN becomes NULL in any). A merged key must be stored as it
//! came, or the row written is not the row whose sync record the merge keeps.

use crate::value::Value;

/// A column's type affinity, from its declared type (SQLite's rules, in its order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Affinity {
    Integer,
    Text,
    Blob,
    Real,
    Numeric,
}

fn affinity(declared: &str) -> Affinity {
    let t = declared.to_ascii_uppercase();
    let has = |s: &str| t.contains(s);
    if has("INT") {
        Affinity::Integer
    } else if has("CHAR") || has("CLOB") || has("TEXT") {
        Affinity::Text
    } else if has("BLOB") || t.is_empty() {
        Affinity::Blob
    } else if has("REAL") || has("FLOA") || has("DOUB") {
        Affinity::Real
    } else {
        Affinity::Numeric
    }
}

/// Whether `text` is what SQLite takes for a number when it stores text in a numeric column:
/// a decimal literal (sign, digits, point, exponent) between optional white space.
fn is_number_literal(text: &str) -> bool {
    let t = text.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r'));
    let b = t.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    };
    let mut mantissa = digits(&mut i);
    if b.get(i) == Some(&b'.') {
        i += 1;
        mantissa += digits(&mut i);
    }
    if mantissa == 0 {
        return false;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        i += usize::from(matches!(b.get(i), Some(b'+' | b'-')));
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// The type name of the affinity of a column declared `declared` (which stores every value as
/// a column so declared does).
pub(crate) fn affinity_type(declared: &str) -> &'static str {
    match affinity(declared) {
        Affinity::Integer => "INTEGER",
        Affinity::Text => "TEXT",
        Affinity::Blob => "BLOB",
        Affinity::Real => "REAL",
        Affinity::Numeric => "NUMERIC",
    }
}

/// Whether columns declared `a` and `b` store every value alike (they have one affinity).
pub(crate) fn same_affinity(a: &str, b: &str) -> bool {
    affinity(a) == affinity(b)
}

/// Whether SQLite stores `value` in a column declared `declared` as the same value and type.
pub(crate) fn stored_as_is(declared: &str, value: &Value) -> bool {
    match (affinity(declared), value) {
        (_, Value::Real(r)) if r.is_nan() => false,
        (_, Value::Null | Value::Blob(_)) | (Affinity::Blob, _) => true,
        (Affinity::Text, v) => matches!(v, Value::Text(_)),
        (_, Value::Text(t)) => !is_number_literal(t),
        // A whole real is stored as an integer and read back as a real: -0.0 comes back 0.0.
        (Affinity::Real, v) => matches!(v, Value::Real(r) if !(*r == 0.0 && r.is_sign_negative())),
        (_, Value::Integer(_)) => true,
        // A real that is a whole number strictly inside i64's range becomes an integer.
        (_, Value::Real(r)) => !(r.fract() == 0.0 && *r > i64::MIN as f64 && *r < i64::MAX as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rusqlite::Connection;

    const TYPES: [&str; 7] = ["INTEGER", "int", "TEXT", "", "BLOB", "REAL", "DECIMAL"];

    /// What SQLite itself does: stores `value` in a column of each of [`TYPES`] and reads it
    /// back.
    fn sqlite_keeps(conn: &Connection, value: &Value) -> Vec<bool> {
        TYPES
            .iter()
            .enumerate()
            .map(|(i, _)| {
                conn.execute(&format!("UPDATE t SET c{i} = ?1"), [value.as_param()])
                    .unwrap();
                let stored: rusqlite::types::Value = conn
                    .query_row(&format!("SELECT c{i} FROM t"), [], |r| r.get(0))
                    .unwrap();
                match (&stored, value) {
                    (rusqlite::types::Value::Integer(a), Value::Integer(b)) => a == b,
                    (rusqlite::types::Value::Real(a), Value::Real(b)) => a.to_bits() == b.to_bits(),
                    (rusqlite::types::Value::Text(a), Value::Text(b)) => a == b,
                    (rusqlite::types::Value::Blob(a), Value::Blob(b)) => a == b,
                    (rusqlite::types::Value::Null, Value::Null) => true,
                    _ => false,
                }
            })
            .collect()
    }

    fn table() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        let columns: Vec<String> = TYPES
            .iter()
            .enumerate()
            .map(|(i, t)| format!("c{i} {t}"))
            .collect();
        conn.execute_batch(&format!(
            "CREATE TABLE t({}); INSERT INTO t DEFAULT VALUES;",
            columns.join(", ")
        ))
        .unwrap();
        conn
    }

    fn ours(value: &Value) -> Vec<bool> {
        TYPES.iter().map(|t| stored_as_is(t, value)).collect()
    }

    #[test]
    fn agrees_with_sqlite_on_the_edge_cases() {
        let conn = table();
        let texts = [
            "2",
            " 2 ",
            "+2",
            "-2.",
            ".5",
            ".",
            "1e5",
            "1e",
            "1e+",
            "1E-3",
            "0x10",
            "abc",
            "1 2",
            "\t7\n",
            "1e999",
            "",
            " ",
            "9223372036854775808",
            "--1",
            "1.5x",
        ];
        let values = texts.iter().map(|t| Value::Text((*t).into())).chain([
            Value::Integer(0),
            Value::Integer(i64::MIN),
            Value::Real(2.0),
            Value::Real(-0.0),
            Value::Real(2.5),
            Value::Real(f64::NAN),
            Value::Real(f64::INFINITY),
            Value::Real(i64::MAX as f64),
            Value::Real(i64::MIN as f64),
            Value::Real(1e300),
            Value::Blob(vec![b'1']),
        ]);
        for v in values {
            assert_eq!(ours(&v), sqlite_keeps(&conn, &v), "{v:?} in {TYPES:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn agrees_with_sqlite_on_number_like_text(text in "[ 0-9.eE+x-]{0,6}") {
            let conn = table();
            let v = Value::Text(text);
            prop_assert_eq!(ours(&v), sqlite_keeps(&conn, &v), "{:?}", v);
        }

        #[test]
        fn agrees_with_sqlite_on_numbers(i in any::<i64>(), r in any::<f64>(), whole in -1e19f64..1e19) {
            let conn = table();
            for v in [Value::Integer(i), Value::Real(r), Value::Real(whole.trunc())] {
                prop_assert_eq!(ours(&v), sqlite_keeps(&conn, &v), "{:?}", v);
            }
        }
    }
}
