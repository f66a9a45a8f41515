//! [`RowClock`]: the versions of one row, stored as a small blob in `_pluresdb_clock`.
//!
//! A row usually has one version for all its fields (it was written whole); only fields
//! written later, or by other sites, carry their own. Each stamp also records the local
//! sequence number (transaction) that stored it, which is what "changes since" filters on.

use super::keys;
use crate::error::Result;
use crate::value::ValueRef;
use crate::wire::{Reader, put_bytes, put_varint};

/// Longest field name accepted.
pub(crate) const MAX_FIELD_BYTES: usize = 4096;

/// When a write happened (clock time), who made it (index in `_pluresdb_sites`), and the local
/// sequence number of the transaction that stored it here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub(crate) hlc: u64,
    pub(crate) site: u32,
    pub(crate) seq: u64,
}

/// The versions of one row.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RowClock {
    /// The last creation (alive rows) or deletion (deleted rows).
    pub(crate) sentinel: Stamp,
    /// The version of every field without its own entry (`None`: such fields have none).
    pub(crate) fields_base: Option<Stamp>,
    /// Fields with their own version, sorted by name.
    pub(crate) fields: Vec<(String, Stamp)>,
}

/// Flags after the sentinel: the row has no base version (it is deleted, or started a new life
/// whose fields all have their own versions), its base version follows, or its base version is
/// the sentinel (written by format 5 and later: 11 bytes fewer for a row written whole, about
/// a quarter of a table row's clock record and of an edge row).
const NO_BASE: u8 = 0;
const BASE_FOLLOWS: u8 = 1;
const BASE_IS_SENTINEL: u8 = 2;

/// The field names packed as capture records them (text values; others are skipped).
fn field_names(names: &[u8]) -> impl Iterator<Item = Result<&str>> {
    let mut r = Reader::new(names, "field names");
    let mut failed = false;
    std::iter::from_fn(move || {
        while !failed && !r.is_empty() {
            match r.value_ref(keys::MAX_KEY_BYTES) {
                // Text was checked to be UTF-8 by the reader.
                Ok(ValueRef::Text(name)) => match std::str::from_utf8(name) {
                    Ok(name) => return Some(Ok(name)),
                    Err(_) => continue,
                },
                Ok(_) => continue,
                Err(e) => {
                    failed = true;
                    return Some(Err(e));
                }
            }
        }
        None
    })
}

fn put_stamp(out: &mut Vec<u8>, s: Stamp) {
    put_varint(out, s.hlc);
    put_varint(out, u64::from(s.site));
    put_varint(out, s.seq);
}

fn read_stamp(r: &mut Reader<'_>) -> Result<Stamp> {
    let hlc = r.varint()?;
    let site = u32::try_from(r.varint()?).map_err(|_| r.error("site index too large"))?;
    Ok(Stamp {
        hlc,
        site,
        seq: r.varint()?,
    })
}

impl RowClock {
    /// A row written whole by one write.
    pub(crate) fn whole(stamp: Stamp) -> RowClock {
        RowClock {
            sentinel: stamp,
            fields_base: Some(stamp),
            fields: Vec::new(),
        }
    }

    /// A row that starts a new life (or dies) at `stamp`, with no field versions yet.
    pub(crate) fn reset(stamp: Stamp) -> RowClock {
        RowClock {
            sentinel: stamp,
            fields_base: None,
            fields: Vec::new(),
        }
    }

    /// The version of `field`.
    pub(crate) fn field(&self, field: &str) -> Option<Stamp> {
        match self.fields.binary_search_by(|(n, _)| n.as_str().cmp(field)) {
            Ok(i) => Some(self.fields[i].1),
            Err(_) => self.fields_base,
        }
    }

    /// The version of `field`, a column that appeared here at `added_at` (see
    /// [`added_columns`](super::added_columns)): a base version older than that was written
    /// without the column, so it does not cover it.
    pub(crate) fn column(&self, field: &str, added_at: u64) -> Option<Stamp> {
        match self.fields.binary_search_by(|(n, _)| n.as_str().cmp(field)) {
            Ok(i) => Some(self.fields[i].1),
            Err(_) => self.fields_base.filter(|base| base.hlc >= added_at),
        }
    }

    /// Gives `field` its own version.
    pub(crate) fn set_field(&mut self, field: &str, stamp: Stamp) {
        match self.fields.binary_search_by(|(n, _)| n.as_str().cmp(field)) {
            Ok(i) => self.fields[i].1 = stamp,
            Err(i) => self.fields.insert(i, (field.to_owned(), stamp)),
        }
    }

    /// Every stamp: the sentinel, the base version, the fields' own.
    fn stamps_mut(&mut self) -> impl Iterator<Item = &mut Stamp> {
        std::iter::once(&mut self.sentinel)
            .chain(self.fields_base.as_mut())
            .chain(self.fields.iter_mut().map(|(_, s)| s))
    }

    /// Gives every version stored at local sequence number `from` the number `to`.
    pub(crate) fn replace_seq(&mut self, from: u64, to: u64) {
        for stamp in self.stamps_mut().filter(|s| s.seq == from) {
            stamp.seq = to;
        }
    }

    /// Gives every version the local sequence number `seq` (the row is stored anew, with the
    /// versions it had).
    pub(crate) fn store_anew(&mut self, seq: u64) {
        for stamp in self.stamps_mut() {
            stamp.seq = seq;
        }
    }

    /// Drops `field`'s own version (it then has the base version, if any).
    pub(crate) fn remove_field(&mut self, field: &str) {
        self.fields.retain(|(n, _)| n != field);
    }

    /// Gives each field named in `names` (packed with [`keys::pack`], as capture records
    /// them) its own version `stamp`.
    pub(crate) fn set_packed_fields(&mut self, names: &[u8], stamp: Stamp) -> Result<()> {
        for name in field_names(names) {
            self.set_field(name?, stamp);
        }
        Ok(())
    }

    /// The newest local sequence number among the versions (what "changes since" filters on).
    pub(crate) fn newest_seq(&self) -> u64 {
        let fields = self.fields.iter().map(|(_, s)| s.seq);
        let base = self.fields_base.map(|s| s.seq);
        fields.chain(base).fold(self.sentinel.seq, u64::max)
    }

    /// Names of fields with their own version.
    pub(crate) fn named_fields(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|(n, _)| n.as_str())
    }

    /// The stored form: the sentinel, then the base version ([`BASE_IS_SENTINEL`] when it is
    /// the sentinel, as for every row written whole), then the fields with their own version
    /// (their count left out when there are none).
    pub(crate) fn encode(&self) -> Vec<u8> {
        // A stamp takes up to 20 bytes (clock times take 9 or 10).
        let names: usize = self.fields.iter().map(|(n, _)| n.len() + 2).sum();
        let mut out = Vec::with_capacity(44 + names + self.fields.len() * 20);
        put_stamp(&mut out, self.sentinel);
        match self.fields_base {
            Some(b) if b == self.sentinel => out.push(BASE_IS_SENTINEL),
            Some(b) => {
                out.push(BASE_FOLLOWS);
                put_stamp(&mut out, b);
            }
            None => out.push(NO_BASE),
        }
        if !self.fields.is_empty() {
            put_varint(&mut out, self.fields.len() as u64);
        }
        for (name, stamp) in &self.fields {
            put_bytes(&mut out, name.as_bytes());
            put_stamp(&mut out, *stamp);
        }
        out
    }

    /// Names packed as capture records them (see [`set_packed_fields`](Self::set_packed_fields)),
    /// sorted and without repeats, into `out`.
    pub(crate) fn packed_names<'a>(names: &'a [u8], out: &mut Vec<&'a [u8]>) -> Result<()> {
        out.clear();
        for name in field_names(names) {
            out.push(name?.as_bytes());
        }
        out.sort_unstable();
        out.dedup();
        Ok(())
    }

    /// Gives the fields `names` (sorted, without repeats, see [`packed_names`](Self::packed_names))
    /// of the stored clock `ver` their own version `stamp`, writing the stored result to `out`:
    /// what [`decode`](Self::decode), [`set_field`](Self::set_field) and
    /// [`encode`](Self::encode) give, without building the clock (a bulk update's fold does
    /// this for every row).
    pub(crate) fn set_fields_stored(
        ver: &[u8],
        names: &[&[u8]],
        stamp: Stamp,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let mut r = Reader::new(ver, "row clock");
        read_stamp(&mut r)?;
        match r.byte()? {
            NO_BASE | BASE_IS_SENTINEL => {}
            BASE_FOLLOWS => {
                read_stamp(&mut r)?;
            }
            other => return Err(r.error(&format!("bad flag {other}"))),
        }
        out.clear();
        out.extend_from_slice(r.read_since(0));
        let n = if r.is_empty() { 0 } else { r.length(1 << 20)? };
        // The fields it has, with their stored stamps.
        let mut own: Vec<(&[u8], &[u8])> = Vec::with_capacity(n);
        for _ in 0..n {
            let name = r.text(MAX_FIELD_BYTES)?.as_bytes();
            let at = r.position();
            read_stamp(&mut r)?;
            own.push((name, r.read_since(at)));
        }
        let mut stamp_bytes = Vec::with_capacity(20);
        put_stamp(&mut stamp_bytes, stamp);
        let added = names
            .iter()
            .filter(|n| own.binary_search_by(|(o, _)| o.cmp(n)).is_err())
            .count();
        if own.len() + added > 0 {
            put_varint(out, (own.len() + added) as u64);
        }
        let (mut i, mut j) = (0, 0);
        while i < own.len() || j < names.len() {
            let take_new = match (own.get(i), names.get(j)) {
                (Some((o, _)), Some(n)) => n <= o,
                (None, Some(_)) => true,
                _ => false,
            };
            if take_new {
                if own.get(i).is_some_and(|(o, _)| *o == names[j]) {
                    i += 1;
                }
                put_bytes(out, names[j]);
                out.extend_from_slice(&stamp_bytes);
                j += 1;
            } else {
                put_bytes(out, own[i].0);
                out.extend_from_slice(own[i].1);
                i += 1;
            }
        }
        Ok(())
    }

    /// [`decode`](Self::decode)s a stored clock; a value that is not a blob counts as empty.
    pub(crate) fn decode_or_empty(bytes: Option<&[u8]>) -> Result<RowClock> {
        bytes.map_or(Ok(RowClock::default()), RowClock::decode)
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<RowClock> {
        let mut r = Reader::new(bytes, "row clock");
        let sentinel = read_stamp(&mut r)?;
        let fields_base = match r.byte()? {
            NO_BASE => None,
            BASE_FOLLOWS => Some(read_stamp(&mut r)?),
            BASE_IS_SENTINEL => Some(sentinel),
            other => return Err(r.error(&format!("bad flag {other}"))),
        };
        // Format 4 always wrote the count.
        let n = if r.is_empty() { 0 } else { r.length(1 << 20)? };
        let mut fields = Vec::with_capacity(n);
        for _ in 0..n {
            let name = r.text(MAX_FIELD_BYTES)?.to_owned();
            fields.push((name, read_stamp(&mut r)?));
        }
        Ok(RowClock {
            sentinel,
            fields_base,
            fields,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(hlc: u64, site: u32, seq: u64) -> Stamp {
        Stamp { hlc, site, seq }
    }

    #[test]
    fn fields_set_in_a_stored_clock_are_as_set_in_the_clock() {
        let names = ["a", "b", "done", "zz"];
        let mut out = Vec::new();
        for (i, base) in [
            RowClock::whole(s(100, 1, 5)),
            RowClock::reset(s(100, 1, 5)),
            RowClock {
                fields_base: Some(s(90, 2, 4)),
                ..RowClock::whole(s(100, 1, 5))
            },
        ]
        .into_iter()
        .enumerate()
        {
            for own in 0..16u32 {
                for set in 0..16u32 {
                    let mut clock = base.clone();
                    for (k, n) in names.iter().enumerate() {
                        if own & (1 << k) != 0 {
                            clock.set_field(n, s(110 + k as u64, 3, 6));
                        }
                    }
                    let stamp = s(200 + i as u64, 1, 9);
                    let picked: Vec<&str> = (names.iter().enumerate())
                        .filter(|(k, _)| set & (1 << k) != 0)
                        .map(|(_, n)| *n)
                        .collect();
                    let packed =
                        keys::pack(picked.iter().rev().map(|n| ValueRef::Text(n.as_bytes())));
                    let mut sorted = Vec::new();
                    RowClock::packed_names(&packed, &mut sorted).unwrap();
                    RowClock::set_fields_stored(&clock.encode(), &sorted, stamp, &mut out).unwrap();
                    let mut expected = clock.clone();
                    expected.set_packed_fields(&packed, stamp).unwrap();
                    assert_eq!(out, expected.encode(), "own {own:b}, set {set:b}");
                }
            }
        }
    }

    #[test]
    fn field_versions_and_round_trip() {
        let mut c = RowClock::whole(s(100, 1, 5));
        assert_eq!(c.field("anything"), Some(s(100, 1, 5)));
        c.set_field("b", s(200, 2, 7));
        c.set_field("a", s(150, 1, 6));
        c.set_field("b", s(210, 2, 8));
        assert_eq!(c.field("b"), Some(s(210, 2, 8)));
        assert_eq!(c.named_fields().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(RowClock::decode(&c.encode()).unwrap(), c);
        let r = RowClock::reset(s(300, 3, 9));
        assert_eq!(r.field("a"), None);
        assert_eq!(RowClock::decode(&r.encode()).unwrap(), r);
        assert!(RowClock::decode(&[1, 2]).is_err());
    }

    /// What format 4 wrote: the base always in full, the field count always.
    fn format_4(c: &RowClock) -> Vec<u8> {
        let mut out = Vec::new();
        put_stamp(&mut out, c.sentinel);
        match c.fields_base {
            Some(b) => {
                out.push(BASE_FOLLOWS);
                put_stamp(&mut out, b);
            }
            None => out.push(NO_BASE),
        }
        put_varint(&mut out, c.fields.len() as u64);
        for (name, stamp) in &c.fields {
            put_bytes(&mut out, name.as_bytes());
            put_stamp(&mut out, *stamp);
        }
        out
    }

    #[test]
    fn a_row_written_whole_stores_its_stamp_once_and_older_clocks_still_read() {
        let stamp = s(0x0190_0000_1234_5678, 3, 70_000);
        let whole = RowClock::whole(stamp);
        let old = format_4(&whole);
        let new = whole.encode();
        // The stamp takes 9 + 1 + 3 bytes; format 4 wrote it twice, plus a count.
        assert_eq!((new.len(), old.len()), (14, 28));
        let mut updated = whole.clone();
        updated.set_field("done", s(0x0190_0000_2234_5678, 3, 70_001));
        let mut other_base = RowClock::reset(stamp);
        other_base.fields_base = Some(s(0x0190_0000_0034_5678, 1, 5));
        let dead = RowClock::reset(stamp);
        for c in [whole, updated, other_base, dead] {
            assert_eq!(RowClock::decode(&c.encode()).unwrap(), c);
            assert_eq!(RowClock::decode(&format_4(&c)).unwrap(), c);
        }
        assert!(RowClock::decode(&[1, 1, 1, 3]).is_err(), "unknown flag");
    }
}
