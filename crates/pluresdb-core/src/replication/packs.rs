//! Packed clock records: the clocks of rows written in bulk, stored a few hundred to a blob in
//! `_pluresdb_clock_pack` instead of one `_pluresdb_clock` record each.
//!
//! One record per row makes a fold of a bulk write cost about as much as the write itself
//! (SQLite alone writing the same records into an empty table: 1.6–1.8x the unsynced write);
//! the same clocks packed 256 to a blob cost a few hundred blob writes.
//!
//! The rules:
//! * A pack holds clocks of one collection's live rows in key order, between its `first` and
//!   `last` keys; the packs of a collection do not overlap. Its `seq` is its newest entry's.
//! * A fold of many creations or field updates writes packs ([`fold`]); every other write to
//!   a packed row moves its entry to a record first ([`materialize`]). A key has a record or
//!   an entry; should it have both, the record counts (readers skip such entries).
//! * What rewrites a whole collection's records (pausing it, renaming a column, a column
//!   appearing) unpacks it first ([`unpack`]); `check` and a table synced again read entries
//!   as records.

use std::borrow::Cow;
use std::rc::Rc;

use rusqlite::{Connection, OptionalExtension};

use super::capture::{Leftover, Op, Stamped, by_collection};
use super::clock::{RowClock, Stamp};
use super::collections::{TableInfo, quote};
use crate::error::Result;
use crate::wire::{Reader, put_bytes, put_varint};

/// Most entries in one pack.
const PACK_ROWS: usize = 256;

/// A pack is closed once its body reaches this size (rows with long keys or many field
/// versions): past a few pages, rewriting a pack for one of its rows costs too much.
const PACK_BYTES: usize = 16 << 10;

/// Fewest rows of a collection a fold packs: below it, records cost little anyway.
const MIN_ROWS: usize = 64;

/// A fold packs rows only when they are at least this many per pack it rewrites (a pack
/// rewritten for a few rows costs more than records for them).
const MIN_ROWS_PER_PACK: usize = 32;

#[cfg(test)]
thread_local! {
    /// Test-only: packing thresholds of folds on this thread (fewest rows, fewest rows per pack
    /// rewritten, most entries per pack), so that tests pack small tables.
    pub(crate) static PACKING_FOR_TESTS: std::cell::Cell<Option<(usize, usize, usize)>> =
        const { std::cell::Cell::new(None) };
}

/// The packing thresholds: [`MIN_ROWS`], [`MIN_ROWS_PER_PACK`], [`PACK_ROWS`].
fn thresholds() -> (usize, usize, usize) {
    #[cfg(test)]
    if let Some(t) = PACKING_FOR_TESTS.get() {
        return t;
    }
    (MIN_ROWS, MIN_ROWS_PER_PACK, PACK_ROWS)
}

/// One row's clock in a pack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry<'a> {
    pub(crate) key: Cow<'a, [u8]>,
    /// Causal length (odd: the entry's row is live).
    pub(crate) cl: u64,
    /// The local sequence number of the row's newest version.
    pub(crate) seq: u64,
    /// The encoded [`RowClock`].
    pub(crate) ver: Ver<'a>,
}

/// An entry's encoded [`RowClock`]: read from a pack body, or made by a fold, which shares it
/// between the entries a bulk write stamped alike (no copy for each).
#[derive(Clone, Debug)]
pub(crate) enum Ver<'a> {
    Read(&'a [u8]),
    Made(Rc<[u8]>),
}

impl std::ops::Deref for Ver<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Ver::Read(bytes) => bytes,
            Ver::Made(bytes) => bytes,
        }
    }
}

impl PartialEq for Ver<'_> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Ver<'_> {}

impl Entry<'_> {
    /// The entry, owning its key and clock; `made` is the clock an entry before was given, which
    /// this one shares when alike (the rows of a bulk write are).
    fn into_owned(self, made: &mut Option<Rc<[u8]>>) -> Entry<'static> {
        let ver = match self.ver {
            Ver::Made(bytes) => bytes,
            Ver::Read(bytes) => match made {
                Some(m) if **m == *bytes => m.clone(),
                _ => made.insert(bytes.into()).clone(),
            },
        };
        Entry {
            key: Cow::Owned(self.key.into_owned()),
            cl: self.cl,
            seq: self.seq,
            ver: Ver::Made(ver),
        }
    }
}

/// What a pack body that shares versions between entries starts with (format 8): a varint a
/// body of format 7 never starts with (it starts with its entry count, at most
/// [`PACK_BYTES`]), so that a format-7 process still open on an upgraded file fails on it
/// instead of reading no entries (and its next fold dropping them).
const SHARED_VERSIONS: u64 = 0x1f_ffff;

/// Entries of a pack body, in key order.
///
/// A body is [`SHARED_VERSIONS`], the entry count, then per entry its key, causal length and
/// either 0 (its sequence number and clock are the previous entry's: rows written by one
/// transaction have the same) or the clock's length plus one, its sequence number and clock.
/// Format 7 bodies (the count, then per entry key, causal length, sequence number and clock)
/// are read too.
pub(crate) fn decode(body: &[u8]) -> Result<Vec<Entry<'_>>> {
    let mut r = Reader::new(body, "clock pack");
    let first = r.varint()?;
    let shared = first == SHARED_VERSIONS;
    let n = match shared {
        true => r.length(PACK_BYTES)?,
        false if first <= PACK_BYTES as u64 => first as usize,
        false => return Err(r.error(&format!("{first} entries"))),
    };
    let mut entries: Vec<Entry<'_>> = Vec::with_capacity(n);
    for _ in 0..n {
        let key = Cow::Borrowed(r.bytes(super::keys::MAX_KEY_BYTES)?);
        let cl = r.varint()?;
        let (seq, ver) = if !shared {
            (r.varint()?, Ver::Read(r.bytes(1 << 24)?))
        } else {
            match r.length(1 << 24)? {
                0 => match entries.last() {
                    Some(prev) => (prev.seq, prev.ver.clone()),
                    None => return Err(r.error("the first entry has no clock")),
                },
                len => {
                    let seq = r.varint()?;
                    (seq, Ver::Read(r.take(len - 1)?))
                }
            }
        };
        entries.push(Entry { key, cl, seq, ver });
    }
    Ok(entries)
}

fn encode(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * 16 + 64);
    put_varint(&mut out, SHARED_VERSIONS);
    put_varint(&mut out, entries.len() as u64);
    let mut prev: Option<&Entry<'_>> = None;
    for e in entries {
        put_bytes(&mut out, &e.key);
        put_varint(&mut out, e.cl);
        if prev.is_some_and(|p| p.seq == e.seq && p.ver == e.ver) {
            out.push(0);
        } else {
            put_varint(&mut out, e.ver.len() as u64 + 1);
            put_varint(&mut out, e.seq);
            out.extend_from_slice(&e.ver);
        }
        prev = Some(e);
    }
    out
}

/// Writes `entries` (sorted by key, none in another pack of `coll`) as packs.
fn write(conn: &Connection, coll: u32, entries: &[Entry<'_>]) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO _pluresdb_clock_pack(tbl, first, last, seq, body) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    let mut rest = entries;
    while !rest.is_empty() {
        // Packs of even size rather than a full run and a small tail.
        let packs = rest.len().div_ceil(thresholds().2);
        let mut n = rest.len().div_ceil(packs);
        let mut bytes = 0;
        for (i, e) in rest[..n].iter().enumerate() {
            bytes += e.key.len() + e.ver.len() + 4;
            if bytes >= PACK_BYTES {
                n = i + 1;
                break;
            }
        }
        let (pack, tail) = rest.split_at(n);
        rest = tail;
        let seq = pack.iter().map(|e| e.seq).max().unwrap_or(0);
        stmt.execute(rusqlite::params![
            i64::from(coll),
            &*pack[0].key,
            &*pack[n - 1].key,
            seq as i64,
            encode(pack)
        ])?;
    }
    Ok(())
}

/// Whether collection `coll` has packs.
pub(crate) fn any(conn: &Connection, coll: u32) -> Result<bool> {
    any_since(conn, coll, 0)
}

/// Whether collection `coll` has packs with versions stored after `since`. (A file of format
/// 6 or older opened read-only has no pack table: no packs.)
pub(crate) fn any_since(conn: &Connection, coll: u32, since: u64) -> Result<bool> {
    let sql = "SELECT 1 FROM _pluresdb_clock_pack WHERE tbl = ?1 AND seq > ?2 LIMIT 1";
    match conn.prepare_cached(sql) {
        Ok(mut stmt) => Ok(stmt.exists(rusqlite::params![i64::from(coll), since as i64])?),
        Err(_) if !crate::schema::table_exists(conn, "_pluresdb_clock_pack")? => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Finds pack entries by key, for keys asked in any order (fastest in key order: the pack last
/// read is kept, decoded), and takes entries out of their packs.
pub(crate) struct Lookup {
    coll: u32,
    /// The pack last read: its first and last keys and entries.
    pack: Option<(Vec<u8>, Vec<u8>, Vec<Entry<'static>>)>,
    /// Entries were taken out of it: it is written back before another is read.
    taken: bool,
    /// Tells which keys have records, for [`changed_since`](Self::changed_since).
    probe: Option<RecordProbe>,
    /// Keys between these two (exclusive; `None`: unbounded) are in no pack, as last read.
    gap: Option<Gap>,
}

/// A run of keys in no pack: after one key and before another (`None`: unbounded).
type Gap = (Option<Vec<u8>>, Option<Vec<u8>>);

impl Lookup {
    pub(crate) fn new(coll: u32) -> Lookup {
        Lookup {
            coll,
            pack: None,
            taken: false,
            probe: None,
            gap: None,
        }
    }

    /// Index of the entry of `key` in the pack read (which it reads), whether or not a record
    /// overrides it.
    fn find(&mut self, conn: &Connection, key: &[u8]) -> Result<Option<usize>> {
        let cached = self
            .pack
            .as_ref()
            .is_some_and(|(first, last, _)| first.as_slice() <= key && key <= last.as_slice());
        let in_gap = self.gap.as_ref().is_some_and(|(after, before)| {
            after.as_deref().is_none_or(|a| a < key) && before.as_deref().is_none_or(|b| key < b)
        });
        if in_gap {
            return Ok(None);
        }
        if !cached {
            self.write_back(conn)?;
            // (The body is read only when the key is in the pack's range.)
            // (first, last, body)
            type Found = (Vec<u8>, Vec<u8>, Option<Vec<u8>>);
            let found: Option<Found> = conn
                .prepare_cached(
                    "SELECT first, last, CASE WHEN last >= ?2 THEN body END
                     FROM _pluresdb_clock_pack
                     WHERE tbl = ?1 AND first <= ?2 ORDER BY first DESC LIMIT 1",
                )?
                .query_row(rusqlite::params![i64::from(self.coll), key], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()?;
            self.pack = match found {
                Some((first, last, Some(body))) => {
                    let mut made = None;
                    let entries = (decode(&body)?.into_iter())
                        .map(|e| e.into_owned(&mut made))
                        .collect();
                    Some((first, last, entries))
                }
                before => {
                    // In no pack: so are the keys up to the next pack's first (a run of keys
                    // between packs costs no query each).
                    let next: Option<Vec<u8>> = conn
                        .prepare_cached(
                            "SELECT first FROM _pluresdb_clock_pack WHERE tbl = ?1 AND first > ?2
                             ORDER BY first LIMIT 1",
                        )?
                        .query_row(rusqlite::params![i64::from(self.coll), key], |r| r.get(0))
                        .optional()?;
                    self.gap = Some((before.map(|(_, last, _)| last), next));
                    None
                }
            };
        }
        let Some((_, _, entries)) = &self.pack else {
            return Ok(None);
        };
        Ok(entries.binary_search_by(|e| (*e.key).cmp(key)).ok())
    }

    /// The entry of `key`, whether or not a record overrides it.
    pub(crate) fn entry(
        &mut self,
        conn: &Connection,
        key: &[u8],
    ) -> Result<Option<&Entry<'static>>> {
        let found = self.find(conn, key)?;
        Ok(found.and_then(|i| self.pack.as_ref().map(|(_, _, entries)| &entries[i])))
    }

    /// Takes the entry of `key` out of its pack (written back by
    /// [`write_back`](Self::write_back)).
    fn take(&mut self, conn: &Connection, key: &[u8]) -> Result<Option<Entry<'static>>> {
        let Some(i) = self.find(conn, key)? else {
            return Ok(None);
        };
        let Some((_, _, entries)) = &mut self.pack else {
            return Ok(None);
        };
        self.taken = true;
        Ok(Some(entries.remove(i)))
    }

    /// Writes the pack read back without the entries taken out of it.
    pub(crate) fn write_back(&mut self, conn: &Connection) -> Result<()> {
        if !std::mem::take(&mut self.taken) {
            return Ok(());
        }
        let Some((first, _, entries)) = self.pack.take() else {
            return Ok(());
        };
        conn.prepare_cached("DELETE FROM _pluresdb_clock_pack WHERE tbl = ?1 AND first = ?2")?
            .execute(rusqlite::params![i64::from(self.coll), first])?;
        write(conn, self.coll, &entries)
    }
}

/// Moves the pack entries of `keys` (of collection `coll`) to records, so the writes that
/// follow find them there; a key that has a record keeps it.
pub(crate) fn materialize<'k>(
    conn: &Connection,
    coll: u32,
    keys: impl IntoIterator<Item = &'k [u8]>,
) -> Result<()> {
    let mut keys: Vec<&[u8]> = keys.into_iter().collect();
    keys.sort_unstable();
    keys.dedup();
    let mut lookup = Lookup::new(coll);
    for key in keys {
        if let Some(e) = lookup.take(conn, key)? {
            insert_record(conn, coll, &e)?;
        }
    }
    lookup.write_back(conn)
}

/// Inserts `e` as a record of collection `coll`, unless its key has one.
fn insert_record(conn: &Connection, coll: u32, e: &Entry<'_>) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO _pluresdb_clock(tbl, key, cl, seq, ver) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(tbl, key) DO NOTHING",
    )?
    .execute(rusqlite::params![
        i64::from(coll),
        &*e.key,
        e.cl as i64,
        e.seq as i64,
        &*e.ver
    ])?;
    Ok(())
}

/// The bodies of collection `coll`'s packs, in key order.
fn bodies(conn: &Connection, coll: u32) -> Result<Vec<Vec<u8>>> {
    Ok(conn
        .prepare_cached("SELECT body FROM _pluresdb_clock_pack WHERE tbl = ?1 ORDER BY first")?
        .query_map([i64::from(coll)], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?)
}

/// Keys of the entries of collection `coll` that no record overrides, sorted.
pub(crate) fn live_keys(conn: &Connection, coll: u32) -> Result<Vec<Vec<u8>>> {
    let mut probe = RecordProbe::new(coll);
    let mut keys = Vec::new();
    for body in &bodies(conn, coll)? {
        for e in decode(body)? {
            if !probe.has(conn, &e.key)? {
                keys.push(e.key.into_owned());
            }
        }
    }
    Ok(keys)
}

/// Keys of the rows of `table` (collection `coll`, shaped `info`) that have no record, sorted
/// (a pack entry may hold their clocks: see [`live_keys`]).
pub(crate) fn rows_without_record(
    conn: &Connection,
    coll: u32,
    table: &str,
    info: &TableInfo,
) -> Result<Vec<Vec<u8>>> {
    let key = info.key_of_row();
    let mut rows: Vec<Vec<u8>> = conn
        .prepare(&format!(
            "SELECT {key} FROM {} r WHERE NOT EXISTS
             (SELECT 1 FROM _pluresdb_clock c WHERE c.tbl = ?1 AND c.key = {key})",
            quote(table)
        ))?
        .query_map([i64::from(coll)], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    rows.sort_unstable();
    Ok(rows)
}

/// How many of the entries `live` (see [`live_keys`]) have no row in `table` (shaped `info`).
pub(crate) fn entries_without_row(
    conn: &Connection,
    table: &str,
    info: &TableInfo,
    live: &[Vec<u8>],
) -> Result<usize> {
    let mut exists = conn.prepare(&format!(
        "SELECT EXISTS (SELECT 1 FROM {} r WHERE {})",
        quote(table),
        info.row_of_key("?1")
    ))?;
    let mut gone = 0;
    for key in live {
        if !exists.query_row([key], |r| r.get::<_, bool>(0))? {
            gone += 1;
        }
    }
    Ok(gone)
}

/// Turns every pack of collection `coll` into records (entries a record overrides are
/// dropped).
pub(crate) fn unpack(conn: &Connection, coll: u32) -> Result<()> {
    let bodies = bodies(conn, coll)?;
    if bodies.is_empty() {
        return Ok(());
    }
    for body in &bodies {
        for e in decode(body)? {
            insert_record(conn, coll, &e)?;
        }
    }
    drop_all(conn, coll)
}

/// Drops every pack of collection `coll` (its records go too, or were made from them).
pub(crate) fn drop_all(conn: &Connection, coll: u32) -> Result<()> {
    conn.prepare_cached("DELETE FROM _pluresdb_clock_pack WHERE tbl = ?1")?
        .execute([i64::from(coll)])?;
    Ok(())
}

/// Tells, for keys asked in ascending order, whether collection `coll` has a clock record of
/// each: one query per run of keys between two records.
pub(crate) struct RecordProbe {
    coll: u32,
    /// The smallest record key at or after the last key asked (`Some(None)`: none).
    next: Option<Option<Vec<u8>>>,
}

impl RecordProbe {
    pub(crate) fn new(coll: u32) -> RecordProbe {
        RecordProbe { coll, next: None }
    }

    /// Whether `key` (not less than the last one asked) has a record.
    pub(crate) fn has(&mut self, conn: &Connection, key: &[u8]) -> Result<bool> {
        let known = match &self.next {
            Some(None) => return Ok(false),
            Some(Some(next)) => next.as_slice() >= key,
            None => false,
        };
        if !known {
            self.next = Some(
                conn.prepare_cached(
                    "SELECT key FROM _pluresdb_clock WHERE tbl = ?1 AND key >= ?2
                     ORDER BY key LIMIT 1",
                )?
                .query_row(rusqlite::params![i64::from(self.coll), key], |r| r.get(0))
                .optional()?,
            );
        }
        Ok(matches!(&self.next, Some(Some(next)) if next.as_slice() == key))
    }
}

/// Up to `limit` entries of collection `coll` after key `after`, with versions stored after
/// `since` and no record overriding them, in key order.
pub(crate) fn page(
    conn: &Connection,
    coll: u32,
    since: u64,
    after: &[u8],
    limit: usize,
) -> Result<Vec<Entry<'static>>> {
    let mut stmt = conn.prepare_cached(
        "SELECT body FROM _pluresdb_clock_pack
         WHERE tbl = ?1 AND last > ?2 AND seq > ?3
           AND first >= coalesce((SELECT max(first) FROM _pluresdb_clock_pack
                                  WHERE tbl = ?1 AND first <= ?2), x'')
         ORDER BY first",
    )?;
    let mut packs = stmt.query(rusqlite::params![i64::from(coll), after, since as i64])?;
    let mut probe = RecordProbe::new(coll);
    let mut out = Vec::new();
    let mut made = None;
    while out.len() < limit
        && let Some(pack) = packs.next()?
    {
        let body = pack.get_ref(0)?.as_blob().map_err(rusqlite::Error::from)?;
        for e in decode(body)? {
            if out.len() == limit {
                break;
            }
            if &*e.key > after && e.seq > since && !probe.has(conn, &e.key)? {
                out.push(e.into_owned(&mut made));
            }
        }
    }
    Ok(out)
}

impl Lookup {
    /// The entry of `key` when no record overrides it and it holds versions stored after
    /// `since`; keys are asked in ascending order (records are looked for as by a
    /// [`RecordProbe`]).
    pub(crate) fn changed_since(
        &mut self,
        conn: &Connection,
        key: &[u8],
        since: u64,
    ) -> Result<Option<Entry<'static>>> {
        let probe = self
            .probe
            .get_or_insert_with(|| RecordProbe::new(self.coll));
        if probe.has(conn, key)? {
            return Ok(None);
        }
        Ok(self.entry(conn, key)?.filter(|e| e.seq > since).cloned())
    }
}

/// How a fold can pack one row's changes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Created (then perhaps updated): a new entry.
    Created,
    /// Fields updated: its entry rewritten.
    Updated,
}

fn shape(row: &[Stamped<'_>]) -> Option<Shape> {
    let updates = |items: &[Stamped<'_>]| {
        items
            .iter()
            .all(|(e, _)| e.op == Op::Update && e.new_key.is_none())
    };
    let (first, rest) = row.split_first()?;
    if first.0.op == Op::Insert && first.0.new_key.is_none() && updates(rest) {
        Some(Shape::Created)
    } else if updates(row) {
        Some(Shape::Updated)
    } else {
        None
    }
}

/// Folds into packs the rows of `items` created or updated in bulk, and moves the entries of
/// the other rows' keys to records; returns the items left to fold as records, in their order.
/// `items` are sorted by collection and key, except that the last may change a row's key.
pub(crate) fn fold<'i, 'a>(
    conn: &Connection,
    items: &'i [Stamped<'a>],
) -> Result<Cow<'i, [Stamped<'a>]>> {
    let mut left = Leftover::new(items);
    for (start, coll_items) in by_collection(items) {
        let coll = coll_items[0].0.coll;
        let packed = any(conn, coll)?;
        let rows: Vec<&[Stamped<'a>]> = coll_items.chunk_by(|a, b| a.0.key == b.0.key).collect();
        let candidates = rows.iter().filter(|r| shape(r).is_some()).count();
        let folded = if candidates >= thresholds().0 {
            fold_packs(conn, coll, &rows)?
        } else {
            vec![false; rows.len()]
        };
        if packed {
            let keys = (rows.iter().zip(&folded))
                .filter(|(_, folded)| !**folded)
                .flat_map(|(row, _)| row.iter())
                .flat_map(|(e, _)| std::iter::once(e.key).chain(e.new_key));
            materialize(conn, coll, keys)?;
        }
        if !folded.contains(&true) {
            continue;
        }
        let unfolded =
            (rows.iter().zip(folded)).filter_map(|(row, folded)| (!folded).then_some(*row));
        left.keep_only(start, coll_items, unfolded);
    }
    Ok(left.finish())
}

/// Packs the rows of one collection that can be (see [`Shape`]) when they are many enough;
/// says per row whether it was.
fn fold_packs(conn: &Connection, coll: u32, rows: &[&[Stamped<'_>]]) -> Result<Vec<bool>> {
    let mut folded = vec![false; rows.len()];
    // (Rows are in key order.)
    let packable: Vec<bool> = rows.iter().map(|r| shape(r).is_some()).collect();
    let first = packable.iter().position(|&p| p);
    let last = packable.iter().rposition(|&p| p);
    let (Some(first), Some(last)) = (first, last) else {
        return Ok(folded);
    };
    let (min, max) = (rows[first][0].0.key, rows[last][0].0.key);
    let candidates = packable.iter().filter(|&&p| p).count();
    let overlapping: Vec<(Vec<u8>, Vec<u8>)> = conn
        .prepare_cached(
            "SELECT first, body FROM _pluresdb_clock_pack
             WHERE tbl = ?1 AND first <= ?3 AND last >= ?2 ORDER BY first",
        )?
        .query_map(rusqlite::params![i64::from(coll), min, max], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let (min_rows, per_pack, _) = thresholds();
    if candidates < per_pack * overlapping.len() {
        return Ok(folded);
    }
    let old = (overlapping.iter())
        .map(|(_, body)| decode(body))
        .collect::<Result<Vec<_>>>()?;
    // Merge the rows into the old entries, both in key order.
    let mut probe = RecordProbe::new(coll);
    let olds: usize = old.iter().map(Vec::len).sum();
    let mut merged: Vec<Entry<'_>> = Vec::with_capacity(olds + candidates);
    let mut old_iter = old.into_iter().flatten().peekable();
    let mut count = 0;
    // The field names of the last update set in a stored clock, as packed and sorted (a bulk
    // update's rows change the same fields).
    let mut names_of: Option<(&[u8], Vec<&[u8]>)> = None;
    // The last clock made, and what it was made from: the rows of a bulk write are stamped
    // alike (one transaction, one time) and most had alike clocks before.
    let mut last_created: Option<(Stamp, Rc<[u8]>)> = None;
    let mut last_updated: Option<(Ver<'_>, Stamp, Rc<[u8]>)> = None;
    for (i, row) in rows.iter().enumerate() {
        let key = row[0].0.key;
        // Entries before this row stay, unless a row left to records overrides them.
        while let Some(e) = old_iter.next_if(|e| *e.key < *key) {
            merged.push(e);
        }
        let entry = old_iter.next_if(|e| *e.key == *key);
        // A row that creates over an entry, updates without one, or has a record, is left to
        // records (its entry, if any, is moved to one).
        let packable = match (shape(row), &entry) {
            (Some(Shape::Created), None) => Some(Shape::Created),
            (Some(Shape::Updated), Some(e)) if e.cl % 2 == 1 => Some(Shape::Updated),
            _ => None,
        };
        let recorded = match packable {
            Some(_) => probe.has(conn, key)?,
            None => true,
        };
        let Some(shape) = packable.filter(|_| !recorded) else {
            merged.extend(entry);
            continue;
        };
        let new = match (shape, entry) {
            (Shape::Created, None) => {
                let (first, updates) = row.split_first().expect("rows are not empty");
                let (seq, ver) = match &last_created {
                    Some((stamp, ver)) if updates.is_empty() && *stamp == first.1 => {
                        (stamp.seq, ver.clone())
                    }
                    _ => {
                        let mut clock = RowClock::whole(first.1);
                        for (e, stamp) in updates {
                            clock.set_packed_fields(e.fields, *stamp)?;
                        }
                        let ver: Rc<[u8]> = clock.encode().into();
                        if updates.is_empty() {
                            last_created = Some((first.1, ver.clone()));
                        }
                        (clock.newest_seq(), ver)
                    }
                };
                Entry {
                    key: Cow::Borrowed(key),
                    cl: 1,
                    seq,
                    ver: Ver::Made(ver),
                }
            }
            (Shape::Updated, Some(e)) => {
                let ver = if let [(update, stamp)] = row {
                    // One update (the usual case): set in the stored clock.
                    if names_of.as_ref().is_none_or(|(f, _)| *f != update.fields) {
                        let mut sorted = Vec::new();
                        RowClock::packed_names(update.fields, &mut sorted)?;
                        names_of = Some((update.fields, sorted));
                        last_updated = None;
                    }
                    match &last_updated {
                        Some((from, at, ver)) if **from == *e.ver && at == stamp => ver.clone(),
                        _ => {
                            let names = &names_of.as_ref().expect("just set").1;
                            let mut ver = Vec::with_capacity(e.ver.len() + 24);
                            RowClock::set_fields_stored(&e.ver, names, *stamp, &mut ver)?;
                            let ver: Rc<[u8]> = ver.into();
                            last_updated = Some((e.ver.clone(), *stamp, ver.clone()));
                            ver
                        }
                    }
                } else {
                    let mut clock = RowClock::decode(&e.ver)?;
                    for (u, stamp) in row.iter() {
                        clock.set_packed_fields(u.fields, *stamp)?;
                    }
                    clock.encode().into()
                };
                let seq = row.last().map_or(e.seq, |(_, stamp)| stamp.seq);
                Entry {
                    key: e.key,
                    cl: e.cl,
                    seq,
                    ver: Ver::Made(ver),
                }
            }
            (_, entry) => {
                merged.extend(entry);
                continue;
            }
        };
        merged.push(new);
        folded[i] = true;
        count += 1;
    }
    merged.extend(old_iter);
    if count < min_rows || count < per_pack * overlapping.len() {
        return Ok(vec![false; rows.len()]);
    }
    // The entries of rows left to records become records (the packs are written again
    // without them).
    let mut left: Vec<&[u8]> = (rows.iter().zip(&folded))
        .filter(|(_, f)| !**f)
        .map(|(r, _)| r[0].0.key)
        .collect();
    // (Sorted but for a last row that changes its key.)
    left.sort_unstable();
    for e in merged
        .iter()
        .filter(|e| left.binary_search(&&*e.key).is_ok())
    {
        insert_record(conn, coll, e)?;
    }
    merged.retain(|e| left.binary_search(&&*e.key).is_err());
    let mut delete =
        conn.prepare_cached("DELETE FROM _pluresdb_clock_pack WHERE tbl = ?1 AND first = ?2")?;
    for (first, _) in &overlapping {
        delete.execute(rusqlite::params![i64::from(coll), first])?;
    }
    write(conn, coll, &merged)?;
    Ok(folded)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use super::{PACKING_FOR_TESTS, decode};
    use crate::Database;
    use crate::replication::clock::{RowClock, Stamp};
    use crate::replication::dense_fold::tests::{RANDOM_SETUP, random_change, random_changes};

    /// Per row of the synced tables: causal length, sequence number and clock, from records
    /// or, where a row has none, from its pack entry; clock times left out (two databases
    /// written alike differ only in those).
    type Clocks = BTreeMap<(i64, Vec<u8>), (i64, i64, RowClock)>;

    fn timeless(ver: &[u8]) -> RowClock {
        let mut clock = RowClock::decode(ver).unwrap();
        let strip = |s: &mut Stamp| s.hlc = 0;
        strip(&mut clock.sentinel);
        clock.fields_base.as_mut().map(strip);
        clock.fields.iter_mut().for_each(|(_, s)| strip(s));
        clock
    }

    pub(super) fn clocks(db: &Database) -> (Clocks, usize) {
        db.with_writer_conn(|c| {
            let mut out = Clocks::new();
            let mut packed = 0;
            let mut stmt = c.prepare("SELECT tbl, body FROM _pluresdb_clock_pack")?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let tbl: i64 = r.get(0)?;
                let body: Vec<u8> = r.get(1)?;
                for e in decode(&body)? {
                    packed += 1;
                    let clock = timeless(&e.ver);
                    out.insert(
                        (tbl, e.key.into_owned()),
                        (e.cl as i64, e.seq as i64, clock),
                    );
                }
            }
            let mut stmt = c.prepare("SELECT tbl, key, cl, seq, ver FROM _pluresdb_clock")?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let ver: Vec<u8> = r.get(4)?;
                out.insert(
                    (r.get(0)?, r.get(1)?),
                    (r.get(2)?, r.get(3)?, timeless(&ver)),
                );
            }
            Ok((out, packed))
        })
        .unwrap()
    }

    /// The changes `db` has since `since`, without clock times and sites, sorted.
    pub(super) fn changes_read(db: &Database, since: u64) -> Vec<String> {
        let mut out: Vec<String> = (db.changes_since(since, None).unwrap().changes)
            .into_iter()
            .map(|c| {
                format!(
                    "{} {:?} {} {:?} {}",
                    c.collection, c.key, c.field, c.value, c.cl
                )
            })
            .collect();
        out.sort();
        out
    }

    fn rows(db: &Database, table: &str) -> Vec<String> {
        (db.all(&format!("SELECT * FROM {table} ORDER BY 1, 2"), ())
            .unwrap())
        .iter()
        .map(|r| format!("{r:?}"))
        .collect()
    }

    /// Packing on this thread: small packs, packed from a few rows up.
    pub(super) fn packing(on: bool) {
        PACKING_FOR_TESTS.set(Some(if on { (8, 1, 16) } else { (usize::MAX, 0, 16) }));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(12))]

        /// Random changes (bulk and single updates, deletes, re-inserts, replaces, key changes,
        /// commits and rollbacks), folded in phases by a database that packs clocks and by one
        /// that writes records only: both hold the same clocks, read the same changes (all, and
        /// since the first phase), and peers that merge them hold the same rows.
        #[test]
        fn random_changes_fold_into_packs_as_into_records(changes in random_changes()) {
            let dir = tempfile::tempdir().unwrap();
            let packed = Database::open(dir.path().join("packed.db")).unwrap();
            let records = Database::open(dir.path().join("records.db")).unwrap();
            // (Each phase written by one and then the other, so that each writes last in
            // some: when they exchange changes, both win some rows. Folded after every other
            // phase: a fold meets the changes of several transactions.)
            let both = |sql: &str, packed_first: bool, fold: bool| {
                let mut dbs = [(&packed, true), (&records, false)];
                if !packed_first {
                    dbs.reverse();
                }
                for (db, on) in dbs {
                    packing(on);
                    db.exec(sql).unwrap();
                    if fold {
                        db.fold_change_log().unwrap();
                    }
                }
            };
            both(RANDOM_SETUP, true, true);
            let (_, entries) = clocks(&packed);
            proptest::prop_assert!(entries >= 2400, "only {} rows were packed", entries);
            let first = packed.changes_since(0, None).unwrap().db_version;
            let phases = changes.chunks(6).count();
            for (i, phase) in changes.chunks(6).enumerate() {
                let mut sql = vec!["BEGIN".to_owned()];
                for &(kind, second, x, y) in phase {
                    sql.push(random_change(kind, if second { "tc" } else { "tt" }, x, y));
                }
                sql.push("COMMIT".to_owned());
                both(&sql.join(";\n"), i % 2 == 1, i % 2 == 1 || i + 1 == phases);
            }
            packing(true);
            let (a, _) = clocks(&packed);
            let (b, packs) = clocks(&records);
            proptest::prop_assert_eq!(packs, 0);
            proptest::prop_assert!(a == b, "packed clocks differ from records");
            proptest::prop_assert_eq!(changes_read(&packed, 0), changes_read(&records, 0));
            proptest::prop_assert_eq!(changes_read(&packed, first), changes_read(&records, first));
            for table in ["tt", "tc"] {
                proptest::prop_assert_eq!(rows(&packed, table), rows(&records, table));
            }
            let peer = Database::open(dir.path().join("peer.db")).unwrap();
            peer.exec(RANDOM_SETUP.split("SELECT pluresdb_sync_table").next().unwrap())
                .unwrap();
            peer.exec("SELECT pluresdb_sync_table('tt'), pluresdb_sync_table('tc')")
                .unwrap();
            peer.exec("DELETE FROM tt; DELETE FROM tc").unwrap();
            let set = packed.changes_since(0, None).unwrap();
            peer.apply_changes(&set.changes).unwrap();
            for table in ["tt", "tc"] {
                proptest::prop_assert_eq!(rows(&peer, table), rows(&packed, table));
            }
            // Merging into packed rows: each writes rows the other does not, the two exchange
            // their changes and converge.
            packing(true);
            packed.exec("UPDATE tt SET a = 1000 + n WHERE n % 3 = 0; UPDATE tc SET a = 7")
                .unwrap();
            packed.fold_change_log().unwrap();
            records.exec("UPDATE tt SET a = 2000 + n WHERE n % 2 = 0").unwrap();
            let to_records = packed.changes_since(0, None).unwrap();
            let to_packed = records.changes_since(0, None).unwrap();
            packed.apply_changes(&to_packed.changes).unwrap();
            records.apply_changes(&to_records.changes).unwrap();
            for table in ["tt", "tc"] {
                proptest::prop_assert_eq!(rows(&packed, table), rows(&records, table));
            }
        }
    }
}

#[cfg(test)]
/// Reads and checks of tables with packed clocks: paged reads, savepoint rollbacks, read-only
/// handles, and a table synced again.
mod reads {
    use super::tests::{changes_read as changes, clocks, packing};
    use crate::{Database, OpenOptions};

    const SETUP: &str = "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, w INTEGER);
                         SELECT pluresdb_sync_table('t');";

    fn count(db: &Database, sql: &str) -> i64 {
        db.value(sql, ()).unwrap().as_i64().unwrap()
    }
    fn packs(db: &Database) -> i64 {
        count(db, "SELECT count(*) FROM _pluresdb_clock_pack")
    }
    fn records(db: &Database) -> i64 {
        count(db, "SELECT count(*) FROM _pluresdb_clock WHERE tbl > 2")
    }
    /// A database in `dir` with the table `t` of [`SETUP`], packing (`pack`) or not.
    fn synced_t(dir: &tempfile::TempDir, pack: bool) -> Database {
        packing(pack);
        let db = Database::open(dir.path().join("a.db")).unwrap();
        db.exec(SETUP).unwrap();
        db
    }

    fn fill(db: &Database, from: i64, n: i64) {
        db.exec(&format!(
            "WITH RECURSIVE s(i) AS (SELECT {from} UNION ALL SELECT i + 1 FROM s WHERE i < {})
             INSERT INTO t SELECT i, 'v' || i, i FROM s",
            from + n - 1
        ))
        .unwrap();
        db.fold_change_log().unwrap();
    }

    /// A format-7 process still open on an upgraded file fails on a format-8 body (format 7
    /// read the entry count first, at most `PACK_BYTES`), instead of reading no entries; and
    /// damaged bodies are errors, not panics.
    #[test]
    fn bodies_a_format_7_process_cannot_misread_and_damaged_ones_fail() {
        use crate::wire::Reader;
        let ver = [1u8, 2, 3];
        let entries: Vec<super::Entry<'_>> = (0..3u8)
            .map(|k| super::Entry {
                key: std::borrow::Cow::Owned(vec![k]),
                cl: 1,
                seq: 4,
                ver: super::Ver::Read(&ver[..]),
            })
            .collect();
        let body = super::encode(&entries);
        assert_eq!(super::decode(&body).unwrap(), entries);
        assert!(Reader::new(&body, "old").length(super::PACK_BYTES).is_err());
        // The first entry "as the one before"; a body cut anywhere.
        let mut first_shared = Vec::new();
        crate::wire::put_varint(&mut first_shared, super::SHARED_VERSIONS);
        first_shared.extend([1, 1, b'k', 1, 0]);
        assert!(super::decode(&first_shared).is_err());
        for end in 0..body.len() {
            assert!(super::decode(&body[..end]).is_err(), "cut at {end}");
        }
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for len in 0..5000usize {
            let mut body = body[..4].to_vec();
            for _ in 0..(len % 40) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                body.push((x % 7) as u8);
            }
            let _ = super::decode(&body);
        }
    }

    /// Rows created, then updated, by several transactions whose changes one fold meets
    /// (each transaction's clocks alike, the next's not): packed as records have them.
    #[test]
    fn rows_of_transactions_folded_together_match_records() {
        let dir = tempfile::tempdir().unwrap();
        let dbs = [true, false].map(|pack| {
            packing(pack);
            let db = Database::open(dir.path().join(format!("{pack}.db"))).unwrap();
            db.exec(SETUP).unwrap();
            (db, pack)
        });
        let insert = |db: &Database, first: i64, step: i64| {
            db.exec(&format!(
                "WITH RECURSIVE s(i) AS (SELECT {first} UNION ALL SELECT i + {step} FROM s
                                         WHERE i + {step} <= {})
                 INSERT INTO t SELECT i, 'v', i FROM s",
                first + 399
            ))
            .unwrap();
        };
        for (db, pack) in &dbs {
            packing(*pack);
            // Rows 1-400 alike; rows 401-800 created by two transactions, taking turns.
            insert(db, 1, 1);
            db.fold_change_log().unwrap();
            insert(db, 401, 2);
            insert(db, 402, 2);
            db.fold_change_log().unwrap();
            // Rows alike before updated by two transactions, taking turns.
            for odd in [0, 1] {
                db.exec(&format!("UPDATE t SET w = w + 1 WHERE id % 2 = {odd}"))
                    .unwrap();
            }
            db.fold_change_log().unwrap();
        }
        packing(true);
        let (packed, entries) = clocks(&dbs[0].0);
        let (recorded, none) = clocks(&dbs[1].0);
        assert_eq!((entries, none), (800, 0));
        assert!(packed == recorded, "packed clocks differ from records");
    }

    /// Format 7 bodies (each entry with its own clock) read as they did, read-only and after
    /// the upgrade to format 8, whose bodies share the clocks entries have alike.
    #[test]
    fn a_format_7_file_reads_as_before() {
        use crate::wire::{put_bytes, put_varint};
        let dir = tempfile::tempdir().unwrap();
        let db = synced_t(&dir, true);
        fill(&db, 1, 300);
        db.exec("UPDATE t SET w = w + 1 WHERE id > 100").unwrap();
        db.fold_change_log().unwrap();
        assert!(packs(&db) > 0);
        let sizes = count(&db, "SELECT sum(length(body)) FROM _pluresdb_clock_pack");
        let read = changes(&db, 0);
        drop(db);
        // What format 7 wrote: per entry its key, causal length, sequence number and clock.
        let conn = rusqlite::Connection::open(dir.path().join("a.db")).unwrap();
        let bodies: Vec<(Vec<u8>, Vec<u8>)> = conn
            .prepare("SELECT first, body FROM _pluresdb_clock_pack")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        for (first, body) in bodies {
            let entries = super::decode(&body).unwrap();
            let mut old = Vec::new();
            put_varint(&mut old, entries.len() as u64);
            for e in &entries {
                put_bytes(&mut old, &e.key);
                put_varint(&mut old, e.cl);
                put_varint(&mut old, e.seq);
                put_bytes(&mut old, &e.ver);
            }
            assert!(
                2 * old.len() > 3 * body.len(),
                "{} vs {}",
                old.len(),
                body.len()
            );
            conn.execute(
                "UPDATE _pluresdb_clock_pack SET body = ?2 WHERE first = ?1",
                rusqlite::params![first, old],
            )
            .unwrap();
        }
        conn.execute(
            "UPDATE _pluresdb_meta SET value = 7 WHERE key = 'format_version'",
            [],
        )
        .unwrap();
        drop(conn);
        let ro = OpenOptions::new()
            .read_only(true)
            .open(dir.path().join("a.db"))
            .unwrap();
        assert_eq!(changes(&ro, 0), read);
        drop(ro);
        let db = Database::open(dir.path().join("a.db")).unwrap();
        assert_eq!(changes(&db, 0), read);
        assert!(2 * count(&db, "SELECT sum(length(body)) FROM _pluresdb_clock_pack") > 3 * sizes);
        // Packs rewritten by a bulk write take the new form.
        db.exec("UPDATE t SET v = v || '!'").unwrap();
        db.fold_change_log().unwrap();
        assert_eq!(db.check().unwrap(), Vec::<String>::new());
        assert!(count(&db, "SELECT sum(length(body)) FROM _pluresdb_clock_pack") < sizes * 3 / 2);
        assert_eq!(count(&db, "SELECT count(*) FROM t WHERE v LIKE '%!'"), 300);
    }

    /// A file of the previous format (6: no `_pluresdb_clock_pack`), opened read-only by this
    /// build (which does not upgrade it), must still read its changes and check.
    #[test]
    fn read_only_handle_reads_a_format_6_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        {
            let db = Database::open(&path).unwrap();
            db.exec(SETUP).unwrap();
            fill(&db, 1, 10);
        }
        // What the previous build wrote: the same schema, without the pack table.
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch(
                "DROP TABLE _pluresdb_clock_pack;
                 UPDATE _pluresdb_meta SET value = 6 WHERE key = 'format_version';",
            )
            .unwrap();
        let ro = OpenOptions::new().read_only(true).open(&path).unwrap();
        let read = ro.changes_since(0, None);
        assert!(read.is_ok(), "changes_since: {:?}", read.err());
        let checked = ro.check();
        assert!(checked.is_ok(), "check: {:?}", checked.err());
    }

    /// `check` on a read-only handle reports a row written by another program into a synced
    /// table, whether or not the table's clocks are packed.
    #[test]
    fn read_only_check_reports_unrecorded_rows_of_packed_tables() {
        for pack in [false, true] {
            packing(pack);
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("a.db");
            {
                let db = Database::open(&path).unwrap();
                db.exec(SETUP).unwrap();
                fill(&db, 1, 100);
                assert_eq!(packs(&db) > 0, pack);
            }
            rusqlite::Connection::open(&path)
                .unwrap()
                .execute_batch("INSERT INTO t VALUES (1000, 'outside', 0)")
                .unwrap();
            let ro = OpenOptions::new().read_only(true).open(&path).unwrap();
            let problems = ro.check().unwrap();
            assert!(
                problems
                    .iter()
                    .any(|p| p.contains("has 1 row(s) that PluresDB did not see")),
                "packed: {pack}; problems: {problems:?}"
            );
        }
    }

    /// `sync_table` is idempotent (apps call it at every start): calling it on a synced table
    /// whose clocks are packed must not turn every pack into records.
    #[test]
    fn syncing_a_synced_table_again_keeps_its_packs() {
        let dir = tempfile::tempdir().unwrap();
        let db = synced_t(&dir, true);
        fill(&db, 1, 1000);
        let (p, r) = (packs(&db), records(&db));
        assert!(p > 0);
        db.exec("SELECT pluresdb_sync_table('t')").unwrap();
        assert_eq!((packs(&db), records(&db)), (p, r), "(packs, records)");
    }

    /// Reads of more than a page (PAGE_ROWS) of rows mixing records and pack entries, in
    /// batches, send what a database of records sends.
    #[test]
    fn paged_reads_of_mixed_records_and_packs_match_records() {
        let mut all = Vec::new();
        for pack in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let db = synced_t(&dir, pack);
            fill(&db, 1, 9000);
            db.exec("UPDATE t SET v = 'x' WHERE id % 7 = 0; DELETE FROM t WHERE id % 11 = 0")
                .unwrap();
            db.fold_change_log().unwrap();
            let mut got = Vec::new();
            db.for_each_change(0, None, 37, |c| {
                got.extend(
                    c.iter()
                        .map(|c| format!("{:?} {} {:?} {}", c.key, c.field, c.value, c.cl)),
                );
                Ok(())
            })
            .unwrap();
            got.sort();
            assert_eq!(got, {
                let mut x: Vec<String> = changes(&db, 0)
                    .into_iter()
                    .map(|s| s[2..].to_owned())
                    .collect();
                x.sort();
                x
            });
            all.push(got);
        }
        assert!(all[0] == all[1]);
    }

    /// Folds inside a savepoint that is rolled back (a sync_table folds in the caller's
    /// transaction), then more writes: packed and record-only databases read alike.
    fn read_in_batches(db: &Database, since: u64, batch: usize) -> Vec<String> {
        let mut got = Vec::new();
        db.for_each_change(since, None, batch, |c| {
            got.extend(c.iter().map(|c| {
                format!(
                    "{} {:?} {} {:?} {}",
                    c.collection, c.key, c.field, c.value, c.cl
                )
            }));
            Ok(())
        })
        .unwrap();
        got.sort();
        got
    }

    /// Reads from several versions, in batches of several sizes, by the writing handle (recent
    /// rows) and by a handle opened afterwards (scans): packed and record-only databases read
    /// alike.
    #[test]
    fn reads_since_each_version_match_records() {
        let dir = tempfile::tempdir().unwrap();
        let mut versions = Vec::new();
        let mut outs: Vec<Vec<Vec<String>>> = Vec::new();
        for pack in [false, true] {
            packing(pack);
            let path = dir.path().join(format!("{pack}.db"));
            let db = Database::open(&path).unwrap();
            db.exec(
                "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, w INTEGER);
                     SELECT pluresdb_sync_table('t');",
            )
            .unwrap();
            let phases = [
                "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 3000)
                 INSERT INTO t SELECT i * 3, 'v' || i, i FROM s",
                "UPDATE t SET w = w + 1 WHERE id % 2 = 0",
                "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 3000)
                 INSERT INTO t SELECT i * 3 + 1, 'n' || i, i FROM s",
                "UPDATE t SET v = 'x' WHERE id % 7 = 0; DELETE FROM t WHERE id % 11 = 0",
                "UPDATE t SET w = 5 WHERE id % 3 = 1",
                "UPDATE t SET v = 'y' WHERE id = 300",
            ];
            let mut vs = vec![0];
            for p in phases {
                db.exec(p).unwrap();
                db.fold_change_log().unwrap();
                vs.push(db.changes_since(0, None).unwrap().db_version);
            }
            let mut out = Vec::new();
            for &since in &vs {
                for batch in [7, 5000] {
                    out.push(read_in_batches(&db, since, batch));
                }
            }
            drop(db);
            let db = Database::open(&path).unwrap();
            for &since in &vs {
                for batch in [7, 5000] {
                    out.push(read_in_batches(&db, since, batch));
                }
            }
            versions.push(vs);
            outs.push(out);
        }
        assert_eq!(versions[0], versions[1]);
        for (i, (a, b)) in outs[0].iter().zip(&outs[1]).enumerate() {
            assert!(a == b, "read {i}: {} vs {} changes", a.len(), b.len());
        }
    }

    /// Rows of packs written one by one move to records and leave their packs (no entry is
    /// kept that a record overrides), and a pack left empty goes.
    #[test]
    fn rows_written_one_by_one_leave_their_packs() {
        let dir = tempfile::tempdir().unwrap();
        let db = synced_t(&dir, true);
        fill(&db, 1, 100);
        let (_, entries) = super::tests::clocks(&db);
        assert_eq!((entries, records(&db)), (100, 0));
        db.exec("UPDATE t SET v = 'x' WHERE id = 5; DELETE FROM t WHERE id > 60")
            .unwrap();
        db.fold_change_log().unwrap();
        let (_, entries) = super::tests::clocks(&db);
        assert_eq!((entries, records(&db)), (59, 41));
        db.exec("DELETE FROM t").unwrap();
        db.fold_change_log().unwrap();
        assert_eq!((packs(&db), records(&db)), (0, 100));
    }

    /// A key column named like a column of the clock table (`key`): `check` on a table with
    /// packs and records reports nothing.
    #[test]
    fn check_finds_nothing_wrong_with_a_key_column_named_key() {
        packing(true);
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path().join("a.db")).unwrap();
        db.exec(
            "CREATE TABLE kv(key TEXT NOT NULL PRIMARY KEY, v INTEGER);
             SELECT pluresdb_sync_table('kv');
             WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 100)
             INSERT INTO kv SELECT 'k' || i, i FROM s",
        )
        .unwrap();
        db.fold_change_log().unwrap();
        assert!(packs(&db) > 0);
        // Three rows written one by one: their clocks move to records.
        db.exec("UPDATE kv SET v = 0 WHERE key IN ('k1', 'k2', 'k3')")
            .unwrap();
        db.fold_change_log().unwrap();
        assert_eq!(records(&db), 3);
        let problems = db.check().unwrap();
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn folds_rolled_back_to_a_savepoint_match_records() {
        let mut all = Vec::new();
        for pack in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let db = synced_t(&dir, pack);
            db.exec("CREATE TABLE u(id INTEGER PRIMARY KEY, x)")
                .unwrap();
            fill(&db, 1, 200);
            db.exec(
                "BEGIN;
                 WITH RECURSIVE s(i) AS (SELECT 1000 UNION ALL SELECT i + 1 FROM s WHERE i < 1100)
                 INSERT INTO t SELECT i, 'n', i FROM s;
                 SAVEPOINT a;
                 UPDATE t SET w = w + 1;
                 SELECT pluresdb_sync_table('u');
                 DELETE FROM t WHERE id % 5 = 0;
                 SELECT pluresdb_unsync_table('u');
                 ROLLBACK TO a;
                 UPDATE t SET v = 'z' WHERE id % 3 = 0;
                 UPDATE t SET id = id + 5000 WHERE id % 17 = 0;
                 COMMIT;",
            )
            .unwrap();
            db.fold_change_log().unwrap();
            all.push((changes(&db, 0), pack.then(|| packs(&db))));
        }
        eprintln!("packs: {:?}", all[1].1);
        assert!(all[0].0 == all[1].0);
    }
}
