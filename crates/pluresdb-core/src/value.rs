//! SQLite values as PluresDB sees them, and their conversions to and from Rust and JSON.
//!
//! Integers stay 64-bit integers end to end; nothing is silently turned into a float.

use serde_json::Value as Json;

use crate::error::{Error, Result};

/// One SQLite value.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Value {
    /// SQL NULL.
    #[default]
    Null,
    /// A 64-bit signed integer.
    Integer(i64),
    /// A 64-bit float.
    Real(f64),
    /// UTF-8 text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

/// The JSON key that marks a blob in JSON form: `{"$blob": "<base64>"}`.
pub const BLOB_JSON_KEY: &str = "$blob";

impl Value {
    /// SQLite's name for the value's storage class.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::Integer(_) => "INTEGER",
            Value::Real(_) => "REAL",
            Value::Text(_) => "TEXT",
            Value::Blob(_) => "BLOB",
        }
    }

    /// True for NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The integer, if this is one.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Integer(i) => Some(*i),
            _ => None,
        }
    }

    /// The number as a float, for integers and reals.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Integer(i) => Some(*i as f64),
            Value::Real(f) => Some(*f),
            _ => None,
        }
    }

    /// The text, if this is text.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    /// The bytes, if this is a blob.
    pub fn as_blob(&self) -> Option<&[u8]> {
        match self {
            Value::Blob(b) => Some(b),
            _ => None,
        }
    }

    /// Converts to JSON: integers stay exact, blobs become `{"$blob": "<base64>"}`,
    /// non-finite reals become `null`.
    pub fn to_json(&self) -> Json {
        match self {
            Value::Null => Json::Null,
            Value::Integer(i) => Json::from(*i),
            Value::Real(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
            Value::Text(s) => Json::String(s.clone()),
            Value::Blob(b) => {
                let mut map = serde_json::Map::new();
                map.insert(BLOB_JSON_KEY.into(), Json::String(base64_encode(b)));
                Json::Object(map)
            }
        }
    }

    /// Converts from JSON: numbers that are integers stay integers (an integer above
    /// `i64::MAX` is an error, never a rounded float), booleans become 1/0, strings text,
    /// `{"$blob": "<base64>"}` a blob, and other arrays and objects their JSON text.
    pub fn from_json(json: &Json) -> Result<Value> {
        Ok(match json {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Integer(i64::from(*b)),
            Json::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Value::Integer(i)
                } else if let Some(u) = n.as_u64() {
                    return Err(Error::invalid(format!(
                        "integer {u} does not fit in a 64-bit signed integer (SQLite's INTEGER); \
                         pass it as text to keep every digit"
                    )));
                } else {
                    Value::Real(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Json::String(s) => Value::Text(s.clone()),
            Json::Object(map) if map.len() == 1 && map.contains_key(BLOB_JSON_KEY) => {
                let Some(Json::String(text)) = map.get(BLOB_JSON_KEY) else {
                    return Err(Error::invalid("\"$blob\" must hold a base64 string"));
                };
                Value::Blob(base64_decode(text).ok_or_else(|| {
                    Error::invalid(format!("\"$blob\" is not valid base64: {text:?}"))
                })?)
            }
            other => Value::Text(other.to_string()),
        })
    }

    pub(crate) fn from_ref(value: rusqlite::types::ValueRef<'_>) -> Value {
        ValueRef::from_sqlite(value).to_owned_value()
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef as R};
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => R::Null,
            Value::Integer(i) => R::Integer(*i),
            Value::Real(f) => R::Real(*f),
            Value::Text(s) => R::Text(s.as_bytes()),
            Value::Blob(b) => R::Blob(b),
        }))
    }
}

/// A parameter value ready to bind, borrowing from the Rust value where it can.
#[derive(Clone, Debug, PartialEq)]
pub enum Param<'a> {
    /// SQL NULL.
    Null,
    /// A 64-bit integer.
    Integer(i64),
    /// A float.
    Real(f64),
    /// Borrowed text.
    Text(&'a str),
    /// Borrowed bytes.
    Blob(&'a [u8]),
    /// A value built for binding (for example JSON turned into text).
    Owned(Value),
}

impl Value {
    /// Borrows the value as a [`Param`].
    pub fn as_param(&self) -> Param<'_> {
        match self {
            Value::Null => Param::Null,
            Value::Integer(i) => Param::Integer(*i),
            Value::Real(f) => Param::Real(*f),
            Value::Text(s) => Param::Text(s),
            Value::Blob(b) => Param::Blob(b),
        }
    }
}

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef as R};
        Ok(match self {
            Param::Null => ToSqlOutput::Borrowed(R::Null),
            Param::Integer(i) => ToSqlOutput::Borrowed(R::Integer(*i)),
            Param::Real(f) => ToSqlOutput::Borrowed(R::Real(*f)),
            Param::Text(s) => ToSqlOutput::Borrowed(R::Text(s.as_bytes())),
            Param::Blob(b) => ToSqlOutput::Borrowed(R::Blob(b)),
            Param::Owned(v) => return v.to_sql(),
        })
    }
}

/// Converts a Rust value into a SQL parameter.
pub trait ToParam {
    /// The value to bind.
    fn to_param(&self) -> Result<Param<'_>>;

    /// Binds the value at a 1-based parameter index (types may bind without converting).
    #[doc(hidden)]
    #[inline]
    fn bind_at(&self, binder: &mut crate::Binder<'_, '_>, index: usize) -> Result<()> {
        binder.bind_param(index, self.to_param()?)
    }
}

/// A borrowed SQLite value: what a row holds before it is copied out.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ValueRef<'a> {
    /// SQL NULL.
    Null,
    /// A 64-bit signed integer.
    Integer(i64),
    /// A 64-bit float.
    Real(f64),
    /// Text (UTF-8 as SQLite stores it).
    Text(&'a [u8]),
    /// Bytes.
    Blob(&'a [u8]),
}

impl<'a> ValueRef<'a> {
    /// Copies the value out.
    pub fn to_owned_value(self) -> Value {
        match self {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(i) => Value::Integer(i),
            ValueRef::Real(f) => Value::Real(f),
            ValueRef::Text(t) => Value::Text(text_of(t)),
            ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        }
    }

    pub(crate) fn from_sqlite(value: rusqlite::types::ValueRef<'a>) -> ValueRef<'a> {
        use rusqlite::types::ValueRef as R;
        match value {
            R::Null => ValueRef::Null,
            R::Integer(i) => ValueRef::Integer(i),
            R::Real(f) => ValueRef::Real(f),
            R::Text(t) => ValueRef::Text(t),
            R::Blob(b) => ValueRef::Blob(b),
        }
    }
}

impl Value {
    /// Borrows the value as a [`ValueRef`].
    pub fn as_value_ref(&self) -> ValueRef<'_> {
        match self {
            Value::Null => ValueRef::Null,
            Value::Integer(i) => ValueRef::Integer(*i),
            Value::Real(f) => ValueRef::Real(*f),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }
    }
}

fn text_of(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// Converts a SQL value into a Rust value, with an error naming the mismatch.
pub trait FromValue: Sized {
    /// Converts a borrowed value; errors say what type was found.
    fn from_value_ref(value: ValueRef<'_>) -> Result<Self>;

    /// Converts an owned value.
    fn from_value(value: &Value) -> Result<Self> {
        Self::from_value_ref(value.as_value_ref())
    }
}

fn mismatch(expected: &str, found: ValueRef<'_>) -> Error {
    let found = found.to_owned_value();
    Error::invalid(format!(
        "expected {expected}, found {} {}",
        found.type_name(),
        preview(&found)
    ))
}

fn preview(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Text(s) if s.chars().count() > 40 => {
            format!("{:?}...", s.chars().take(40).collect::<String>())
        }
        Value::Text(s) => format!("{s:?}"),
        Value::Blob(b) => format!("({} bytes)", b.len()),
        Value::Integer(i) => i.to_string(),
        Value::Real(f) => f.to_string(),
    }
}

macro_rules! int_conversions {
    ($($t:ty),*) => {$(
        impl ToParam for $t {
            #[inline]
            fn bind_at(&self, binder: &mut crate::Binder<'_, '_>, index: usize) -> Result<()> {
                match i64::try_from(*self) {
                    Ok(v) => binder.bind_native(index, v),
                    Err(_) => binder.bind_param(index, self.to_param()?),
                }
            }

            fn to_param(&self) -> Result<Param<'_>> {
                i64::try_from(*self).map(Param::Integer).map_err(|_| {
                    Error::invalid(format!(
                        "integer {} does not fit in a 64-bit signed integer (SQLite's INTEGER)", self
                    ))
                })
            }
        }
        impl FromValue for $t {
            #[inline]
            fn from_value_ref(value: ValueRef<'_>) -> Result<Self> {
                match value {
                    ValueRef::Integer(i) => <$t>::try_from(i).map_err(|_| {
                        Error::invalid(format!("integer {i} does not fit in {}", stringify!($t)))
                    }),
                    other => Err(mismatch("INTEGER", other)),
                }
            }
        }
    )*};
}
int_conversions!(i8, i16, i32, i64, isize, u8, u16, u32, u64, usize);

impl ToParam for f64 {
    fn to_param(&self) -> Result<Param<'_>> {
        Ok(Param::Real(*self))
    }

    #[inline]
    fn bind_at(&self, binder: &mut crate::Binder<'_, '_>, index: usize) -> Result<()> {
        binder.bind_native(index, *self)
    }
}
impl ToParam for f32 {
    fn to_param(&self) -> Result<Param<'_>> {
        Ok(Param::Real(f64::from(*self)))
    }
}
impl FromValue for f64 {
    #[inline]
    fn from_value_ref(value: ValueRef<'_>) -> Result<Self> {
        match value {
            ValueRef::Real(f) => Ok(f),
            ValueRef::Integer(i) => Ok(i as f64),
            other => Err(mismatch("REAL", other)),
        }
    }
}
impl ToParam for bool {
    fn to_param(&self) -> Result<Param<'_>> {
        Ok(Param::Integer(i64::from(*self)))
    }
}
impl FromValue for bool {
    fn from_value_ref(value: ValueRef<'_>) -> Result<Self> {
        match value {
            ValueRef::Integer(i) => Ok(i != 0),
            other => Err(mismatch("INTEGER (0 or 1)", other)),
        }
    }
}
impl ToParam for str {
    fn to_param(&self) -> Result<Param<'_>> {
        Ok(Param::Text(self))
    }

    #[inline]
    fn bind_at(&self, binder: &mut crate::Binder<'_, '_>, index: usize) -> Result<()> {
        binder.bind_native(index, self)
    }
}
impl ToParam for String {
    fn to_param(&self) -> Result<Param<'_>> {
        Ok(Param::Text(self))
    }

    #[inline]
    fn bind_at(&self, binder: &mut crate::Binder<'_, '_>, index: usize) -> Result<()> {
        binder.bind_native(index, self.as_str())
    }
}
impl FromValue for String {
    #[inline]
    fn from_value_ref(value: ValueRef<'_>) -> Result<Self> {
        match value {
            ValueRef::Text(t) => Ok(text_of(t)),
            other => Err(mismatch("TEXT", other)),
        }
    }
}
impl ToParam for [u8] {
    fn to_param(&self) -> Result<Param<'_>> {
        Ok(Param::Blob(self))
    }
}
impl ToParam for Vec<u8> {
    fn to_param(&self) -> Result<Param<'_>> {
        Ok(Param::Blob(self))
    }
}
impl FromValue for Vec<u8> {
    fn from_value_ref(value: ValueRef<'_>) -> Result<Self> {
        match value {
            ValueRef::Blob(b) | ValueRef::Text(b) => Ok(b.to_vec()),
            other => Err(mismatch("BLOB", other)),
        }
    }
}
impl ToParam for Value {
    fn to_param(&self) -> Result<Param<'_>> {
        Ok(self.as_param())
    }
}
impl FromValue for Value {
    fn from_value_ref(value: ValueRef<'_>) -> Result<Self> {
        Ok(value.to_owned_value())
    }

    fn from_value(value: &Value) -> Result<Self> {
        Ok(value.clone())
    }
}
impl ToParam for Json {
    fn to_param(&self) -> Result<Param<'_>> {
        match self {
            Json::String(s) => Ok(Param::Text(s)),
            other => Value::from_json(other).map(Param::Owned),
        }
    }
}
impl FromValue for Json {
    fn from_value_ref(value: ValueRef<'_>) -> Result<Self> {
        Ok(value.to_owned_value().to_json())
    }

    fn from_value(value: &Value) -> Result<Self> {
        Ok(value.to_json())
    }
}
impl<T: ToParam> ToParam for Option<T> {
    fn to_param(&self) -> Result<Param<'_>> {
        match self {
            Some(v) => v.to_param(),
            None => Ok(Param::Null),
        }
    }
}
impl<T: FromValue> FromValue for Option<T> {
    #[inline]
    fn from_value_ref(value: ValueRef<'_>) -> Result<Self> {
        match value {
            ValueRef::Null => Ok(None),
            other => T::from_value_ref(other).map(Some),
        }
    }
}
impl<T: ToParam + ?Sized> ToParam for &T {
    fn to_param(&self) -> Result<Param<'_>> {
        (**self).to_param()
    }

    #[inline]
    fn bind_at(&self, binder: &mut crate::Binder<'_, '_>, index: usize) -> Result<()> {
        (**self).bind_at(binder, index)
    }
}

macro_rules! value_from {
    ($($t:ty => $arm:expr),* $(,)?) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Value {
                let f: fn($t) -> Value = $arm;
                f(v)
            }
        }
    )*};
}
value_from! {
    i64 => Value::Integer,
    i32 => |v| Value::Integer(v.into()),
    f64 => Value::Real,
    bool => |v| Value::Integer(v.into()),
    String => Value::Text,
    &str => |v| Value::Text(v.to_owned()),
    Vec<u8> => Value::Blob,
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (blobs in JSON).
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 (padding optional); `None` on a bad character or length.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let v = B64.iter().position(|&b| b == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn integers_survive_json_both_ways() {
        let big = i64::MAX - 1;
        let v = Value::from_json(&json!(big)).unwrap();
        assert_eq!(v, Value::Integer(big));
        assert_eq!(v.to_json().to_string(), big.to_string());
        let err = Value::from_json(&json!(u64::MAX)).unwrap_err();
        assert!(err.message().contains("does not fit"), "{err}");
    }

    #[test]
    fn json_shapes_map_to_sqlite_values() {
        assert_eq!(Value::from_json(&json!(true)).unwrap(), Value::Integer(1));
        assert_eq!(Value::from_json(&json!(1.5)).unwrap(), Value::Real(1.5));
        assert_eq!(
            Value::from_json(&json!({"a": [1, 2]})).unwrap(),
            Value::Text("{\"a\":[1,2]}".into())
        );
        let blob = Value::Blob(vec![0, 1, 2, 250, 255]);
        assert_eq!(Value::from_json(&blob.to_json()).unwrap(), blob);
        assert!(Value::from_json(&json!({"$blob": "!!"})).is_err());
        assert_eq!(Value::Real(f64::NAN).to_json(), Json::Null);
    }

    #[test]
    fn base64_matches_known_vectors() {
        for (raw, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
        ] {
            assert_eq!(base64_encode(raw.as_bytes()), enc);
            assert_eq!(base64_decode(enc).unwrap(), raw.as_bytes());
        }
        assert_eq!(base64_decode("Z"), None);
    }

    #[test]
    fn from_value_reports_the_mismatch() {
        let err = i64::from_value(&Value::Text("abc".into())).unwrap_err();
        assert_eq!(err.message(), "expected INTEGER, found TEXT \"abc\"");
        assert_eq!(
            u8::from_value(&Value::Integer(300)).unwrap_err().message(),
            "integer 300 does not fit in u8"
        );
        assert_eq!(Option::<i64>::from_value(&Value::Null).unwrap(), None);
        assert!(u64::MAX.to_param().is_err());
    }
}
