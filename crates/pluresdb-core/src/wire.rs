//! Compact binary encoding of integers and values: LEB128 varints and tagged SQLite values.
//! Used for packed row keys, row clocks and (by the sync crate) the wire protocol.

use crate::error::{Error, ErrorKind, Result};
use crate::value::{Value, ValueRef};

const TAG_NULL: u8 = 0;
const TAG_INTEGER: u8 = 1;
const TAG_REAL: u8 = 2;
const TAG_TEXT: u8 = 3;
const TAG_BLOB: u8 = 4;

/// Appends `n` as an unsigned LEB128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Appends a signed integer (zigzag, then varint).
pub fn put_signed(out: &mut Vec<u8>, n: i64) {
    put_varint(out, ((n << 1) ^ (n >> 63)) as u64);
}

/// Appends length-prefixed bytes.
pub fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Appends a tagged value.
pub fn put_value(out: &mut Vec<u8>, value: ValueRef<'_>) {
    match value {
        ValueRef::Null => out.push(TAG_NULL),
        ValueRef::Integer(i) => {
            out.push(TAG_INTEGER);
            put_signed(out, i);
        }
        ValueRef::Real(f) => {
            out.push(TAG_REAL);
            out.extend_from_slice(&f.to_le_bytes());
        }
        ValueRef::Text(t) => {
            out.push(TAG_TEXT);
            put_bytes(out, t);
        }
        ValueRef::Blob(b) => {
            out.push(TAG_BLOB);
            put_bytes(out, b);
        }
    }
}

/// Reads encoded data with bounds checks; every error says what was malformed.
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// A reader over `data`; `what` names the data in error messages.
    pub fn new(data: &'a [u8], what: &'static str) -> Reader<'a> {
        Reader { data, pos: 0, what }
    }

    /// True when everything was read.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    /// How many bytes were read so far (for [`read_since`](Self::read_since)).
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The bytes read since position `start`.
    pub fn read_since(&self, start: usize) -> &'a [u8] {
        &self.data[start.min(self.pos)..self.pos]
    }

    /// An error about malformed input at the current position.
    #[cold]
    pub fn error(&self, problem: &str) -> Error {
        Error::new(
            ErrorKind::InvalidInput,
            format!("malformed {}: {problem} (at byte {})", self.what, self.pos),
        )
    }

    #[cold]
    fn short_of(&self, n: usize) -> Error {
        self.error(&format!("needs {n} more bytes, {} left", self.remaining()))
    }

    #[cold]
    fn over_limit(&self, n: u64, max: usize) -> Error {
        self.error(&format!("length {n} is over the limit of {max}"))
    }

    /// One byte.
    #[inline]
    pub fn byte(&mut self) -> Result<u8> {
        let b = *self
            .data
            .get(self.pos)
            .ok_or_else(|| self.error("unexpected end"))?;
        self.pos += 1;
        Ok(b)
    }

    /// `n` bytes.
    #[inline]
    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.short_of(n));
        }
        let slice = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(slice)
    }

    /// An unsigned varint.
    #[inline]
    pub fn varint(&mut self) -> Result<u64> {
        // Most varints are one byte (lengths of keys and names, small numbers).
        if let Some(&b) = self.data.get(self.pos)
            && b < 0x80
        {
            self.pos += 1;
            return Ok(u64::from(b));
        }
        self.long_varint()
    }

    fn long_varint(&mut self) -> Result<u64> {
        let mut n: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(self.error("varint longer than 10 bytes"))
    }

    /// A varint that must fit in `usize` and be at most `max`.
    #[inline]
    pub fn length(&mut self, max: usize) -> Result<usize> {
        let n = self.varint()?;
        if n > max as u64 {
            return Err(self.over_limit(n, max));
        }
        Ok(n as usize)
    }

    /// A zigzag signed integer.
    pub fn signed(&mut self) -> Result<i64> {
        let n = self.varint()?;
        Ok(((n >> 1) as i64) ^ -((n & 1) as i64))
    }

    /// Length-prefixed bytes of at most `max` bytes.
    #[inline]
    pub fn bytes(&mut self, max: usize) -> Result<&'a [u8]> {
        let n = self.length(max)?;
        self.take(n)
    }

    /// Length-prefixed UTF-8 text of at most `max` bytes.
    pub fn text(&mut self, max: usize) -> Result<&'a str> {
        let bytes = self.bytes(max)?;
        std::str::from_utf8(bytes).map_err(|_| self.error("text is not valid UTF-8"))
    }

    /// A tagged value whose text or blob is at most `max` bytes.
    pub fn value(&mut self, max: usize) -> Result<Value> {
        Ok(self.value_ref(max)?.to_owned_value())
    }

    /// [`value`](Self::value), reading text that is not UTF-8 (SQLite stores any bytes as
    /// text) the way queries read it: invalid bytes become U+FFFD.
    pub fn value_lossy(&mut self, max: usize) -> Result<Value> {
        if self.data.get(self.pos) == Some(&TAG_TEXT) {
            self.pos += 1;
            return Ok(ValueRef::Text(self.bytes(max)?).to_owned_value());
        }
        self.value(max)
    }

    /// [`value`](Self::value), borrowed from the data (text is checked to be UTF-8).
    pub fn value_ref(&mut self, max: usize) -> Result<ValueRef<'a>> {
        Ok(match self.byte()? {
            TAG_NULL => ValueRef::Null,
            TAG_INTEGER => ValueRef::Integer(self.signed()?),
            TAG_REAL => {
                let b = self.take(8)?;
                ValueRef::Real(f64::from_le_bytes(b.try_into().expect("8 bytes")))
            }
            TAG_TEXT => ValueRef::Text(self.text(max)?.as_bytes()),
            TAG_BLOB => ValueRef::Blob(self.bytes(max)?),
            tag => return Err(self.error(&format!("unknown value tag {tag}"))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        let values = [
            Value::Null,
            Value::Integer(0),
            Value::Integer(-1),
            Value::Integer(i64::MIN),
            Value::Integer(i64::MAX),
            Value::Real(-2.5),
            Value::Text("héllo".into()),
            Value::Blob(vec![0, 255, 3]),
        ];
        let mut out = Vec::new();
        for v in &values {
            put_value(&mut out, v.as_value_ref());
        }
        let mut r = Reader::new(&out, "test data");
        for v in &values {
            assert_eq!(&r.value(1024).unwrap(), v);
        }
        assert!(r.is_empty());
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let mut r = Reader::new(&[3, 200, 1], "test data");
        let err = r.value(1 << 20).unwrap_err();
        assert!(
            err.message()
                .starts_with("malformed test data: needs 200 more bytes"),
            "{err}"
        );
        let mut r = Reader::new(&[0xff; 12], "test data");
        assert!(
            r.varint()
                .unwrap_err()
                .message()
                .contains("longer than 10 bytes")
        );
        let mut r = Reader::new(&[9], "test data");
        assert!(
            r.value(10)
                .unwrap_err()
                .message()
                .contains("unknown value tag 9")
        );
        let mut out = Vec::new();
        put_bytes(&mut out, &[1; 50]);
        assert!(
            Reader::new(&out, "x")
                .bytes(10)
                .unwrap_err()
                .message()
                .contains("over the limit of 10")
        );
    }
}
