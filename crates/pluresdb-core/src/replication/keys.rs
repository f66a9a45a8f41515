//! Packed row keys: the primary-key values of a row as one byte string.

use crate::error::Result;
use crate::value::{Value, ValueRef};
use crate::wire::{Reader, put_value};

/// Longest key part (a text or blob) sync reads back, locally or from a peer.
pub(crate) const MAX_KEY_BYTES: usize = 64 * 1024;

/// Refuses a key sync could not read back with [`unpack`]: a part longer than 64 KiB
/// ([`MAX_KEY_BYTES`]), or text that is not UTF-8 (SQLite stores any bytes as text).
pub(crate) fn check_key(key: &[u8]) -> Result<()> {
    let mut reader = Reader::new(key, "row key");
    while !reader.is_empty() {
        reader.value_ref(MAX_KEY_BYTES).map_err(|e| {
            crate::error::Error::invalid(format!(
                "sync cannot carry this key ({}): it carries key parts of up to 64 KiB, with \
                 text in UTF-8; use a shorter key (an id or a hash of the long value), or a \
                 BLOB key for bytes",
                e.message()
            ))
        })?;
    }
    Ok(())
}

/// Packs key values (in primary-key column order).
pub(crate) fn pack<'a>(values: impl IntoIterator<Item = ValueRef<'a>>) -> Vec<u8> {
    let mut out = Vec::with_capacity(24);
    for v in values {
        put_value(&mut out, v);
    }
    out
}

/// Packs owned key values.
pub(crate) fn pack_values(values: &[Value]) -> Vec<u8> {
    pack(values.iter().map(Value::as_value_ref))
}

/// Longest value unpacked from a row's packed column values (SQLite's own limit is 1 GB).
const MAX_VALUE_BYTES: usize = 1 << 30;

/// Unpacks a key.
pub(crate) fn unpack(bytes: &[u8]) -> Result<Vec<Value>> {
    let mut reader = Reader::new(bytes, "row key");
    let mut out = Vec::with_capacity(1);
    while !reader.is_empty() {
        out.push(reader.value(MAX_KEY_BYTES)?);
    }
    Ok(out)
}

/// Unpacks a row's column values, packed like a key, but each may be as long as SQLite allows,
/// and text that is not UTF-8 is read as queries read it (invalid bytes become U+FFFD).
pub(crate) fn unpack_values(bytes: &[u8]) -> Result<Vec<Value>> {
    let mut reader = Reader::new(bytes, "row values");
    let mut out = Vec::new();
    while !reader.is_empty() {
        out.push(reader.value_lossy(MAX_VALUE_BYTES)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let key = vec![
            Value::Text("a".into()),
            Value::Integer(-5),
            Value::Blob(vec![1]),
        ];
        assert_eq!(unpack(&pack_values(&key)).unwrap(), key);
        assert_ne!(
            pack_values(&[Value::Integer(1)]),
            pack_values(&[Value::Text("1".into())])
        );
    }
}
