//! Vectors as SQL values: f32 little-endian BLOBs (as sqlite-vec stores them) or JSON arrays.

use rusqlite::types::ValueRef;

use crate::error::{Error, Result};

/// Reads a vector from a SQL value; `None` for NULL. Components must be finite.
pub(crate) fn parse_vector(value: ValueRef<'_>) -> Result<Option<Vec<f32>>> {
    let v = match value {
        ValueRef::Null => return Ok(None),
        ValueRef::Blob(b) => {
            if b.is_empty() || !b.len().is_multiple_of(4) {
                return Err(Error::invalid(format!(
                    "a vector BLOB must hold f32 little-endian components (a non-zero multiple \
                     of 4 bytes), not {} bytes; use vec_f32('[1, 2, 3]') to make one",
                    b.len()
                )));
            }
            from_blob(b)
        }
        ValueRef::Text(t) => parse_json(t)?,
        ValueRef::Integer(_) | ValueRef::Real(_) => {
            return Err(Error::invalid(
                "a vector must be a BLOB of f32 values or a JSON array like '[0.1, 0.2]', not a \
                 number",
            ));
        }
    };
    check_finite(&v)?;
    Ok(Some(v))
}

fn parse_json(text: &[u8]) -> Result<Vec<f32>> {
    let bad = |why: String| {
        Error::invalid(format!(
            "a vector given as text must be a JSON array of numbers like '[0.1, 0.2]': {why}"
        ))
    };
    let parsed: serde_json::Value = serde_json::from_slice(text).map_err(|e| bad(e.to_string()))?;
    let serde_json::Value::Array(items) = parsed else {
        return Err(bad("it is not an array".into()));
    };
    if items.is_empty() {
        return Err(bad("it is empty".into()));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, x)| {
            x.as_f64()
                .map(|f| f as f32)
                .ok_or_else(|| bad(format!("element {i} is not a number")))
        })
        .collect()
}

pub(crate) fn check_finite(v: &[f32]) -> Result<()> {
    if let Some((i, x)) = v.iter().enumerate().find(|(_, x)| !x.is_finite()) {
        return Err(Error::invalid(format!(
            "vector component {i} is {x}; components must be finite numbers"
        )));
    }
    Ok(())
}

/// The f32 little-endian components of `b` (trailing bytes short of a component are ignored).
pub(crate) fn from_blob(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// A vector as an f32 little-endian BLOB.
pub(crate) fn to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A vector as a JSON array.
pub(crate) fn to_json(v: &[f32]) -> String {
    let mut out = String::with_capacity(v.len() * 10 + 2);
    out.push('[');
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&x.to_string());
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_and_json_parse_to_the_same_vector() {
        let v = vec![0.5f32, -1.25, 3.0];
        let blob = to_blob(&v);
        assert_eq!(
            parse_vector(ValueRef::Blob(&blob)).unwrap(),
            Some(v.clone())
        );
        assert_eq!(
            parse_vector(ValueRef::Text(to_json(&v).as_bytes())).unwrap(),
            Some(v)
        );
        assert_eq!(parse_vector(ValueRef::Null).unwrap(), None);
    }

    #[test]
    fn bad_vectors_say_what_is_wrong() {
        let msg = |v: ValueRef<'_>| parse_vector(v).unwrap_err().to_string();
        assert!(msg(ValueRef::Blob(&[1, 2, 3])).contains("not 3 bytes"));
        assert!(msg(ValueRef::Text(b"[1, \"x\"]")).contains("element 1 is not a number"));
        assert!(msg(ValueRef::Text(b"{\"a\": 1}")).contains("not an array"));
        assert!(msg(ValueRef::Text(b"[]")).contains("empty"));
        assert!(msg(ValueRef::Integer(3)).contains("not a number"));
        let nan = to_blob(&[1.0, f32::NAN]);
        assert!(msg(ValueRef::Blob(&nan)).contains("component 1 is NaN"));
        assert!(msg(ValueRef::Text(b"[1e39]")).contains("component 0 is inf"));
    }
}
