//! The change log: row changes of replicated SQL tables, kept compact while a transaction runs
//! and appended to `_pluresdb_clock_log` as one record per flush, then folded into
//! `_pluresdb_clock` in bulk before anything reads the clock (see
//! [`Replication::settle_clock`](super::state::Replication)).
//!
//! Writing a row's clock record costs about as much as the write itself (a B-tree seek and a
//! rewrite of the record); appending the change to one log blob costs a few bytes. Folding
//! sorts the changes of many transactions by row first, so each clock page is rewritten once
//! per fold rather than once per transaction.

use rusqlite::Connection;

use super::capture::Op;
use super::clock::Stamp;
use crate::error::Result;
use crate::wire::{Reader, put_bytes, put_varint};

/// Longest key or field list read back from the log (written locally, so only a sanity bound).
const MAX_PART_BYTES: usize = 1 << 30;

/// Where a captured change comes from: its collection, the statement that made it (see
/// `Replication::statements`) and its clock time.
#[derive(Clone, Copy)]
pub(crate) struct Origin {
    pub(crate) coll: u32,
    pub(crate) statement: u64,
    pub(crate) hlc: u64,
}

/// Captured row changes of the open transaction, encoded as the log stores them: per change
/// the collection, operation, clock time, key, new key (empty: unchanged) and changed field
/// names (packed).
#[derive(Default)]
pub(crate) struct CaptureBuf {
    bytes: Vec<u8>,
    count: usize,
    /// Where the last change starts, and the statement that made it.
    last: Option<(usize, u64)>,
    /// Reused to pack a key, and changed field names, before their length is known.
    pub(crate) scratch: Vec<u8>,
    pub(crate) fields_scratch: Vec<u8>,
}

impl CaptureBuf {
    /// Bytes captured (also the mark to discard back to).
    pub(crate) fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Appends a change. An insert right after the same statement's delete of the same row is
    /// `INSERT OR REPLACE` rewriting it: one write of the row in the same life, so the delete
    /// is dropped.
    pub(crate) fn push(
        &mut self,
        at: Origin,
        op: Op,
        key: &[u8],
        new_key: Option<&[u8]>,
        fields: &[u8],
    ) {
        if op == Op::Insert
            && let Some((start, s)) = self.last
            && s == at.statement
            && let Ok(prev) = Entry::read(&mut Reader::new(&self.bytes[start..], "change"))
            && prev.op == Op::Delete
            && prev.coll == at.coll
            && prev.key == key
        {
            self.bytes.truncate(start);
            self.count -= 1;
        }
        self.last = Some((self.bytes.len(), at.statement));
        put_varint(&mut self.bytes, u64::from(at.coll));
        self.bytes.push(op as u8);
        put_varint(&mut self.bytes, at.hlc);
        put_bytes(&mut self.bytes, key);
        put_bytes(&mut self.bytes, new_key.unwrap_or_default());
        put_bytes(&mut self.bytes, fields);
        self.count += 1;
    }

    /// Drops the changes captured after `mark` (a failed statement's).
    pub(crate) fn truncate(&mut self, mark: usize) {
        if mark >= self.bytes.len() {
            return;
        }
        self.bytes.truncate(mark);
        self.last = None;
        self.count = Entries(Reader::new(&self.bytes, "change")).count();
    }

    /// Takes the changes, leaving the buffer empty: `(encoded changes, how many)`.
    pub(crate) fn take(&mut self) -> (Vec<u8>, usize) {
        self.last = None;
        (
            std::mem::take(&mut self.bytes),
            std::mem::take(&mut self.count),
        )
    }

    pub(crate) fn clear(&mut self) {
        self.take();
    }
}

/// One change read back from the log.
#[derive(Debug)]
pub(crate) struct Entry<'a> {
    pub(crate) coll: u32,
    pub(crate) op: Op,
    pub(crate) hlc: u64,
    pub(crate) key: &'a [u8],
    pub(crate) new_key: Option<&'a [u8]>,
    pub(crate) fields: &'a [u8],
}

impl<'a> Entry<'a> {
    fn read(r: &mut Reader<'a>) -> Result<Entry<'a>> {
        let coll = u32::try_from(r.varint()?).map_err(|_| r.error("collection id too large"))?;
        let op = match r.byte()? {
            0 => Op::Insert,
            1 => Op::Update,
            2 => Op::Delete,
            other => return Err(r.error(&format!("unknown operation {other}"))),
        };
        let hlc = r.varint()?;
        let key = r.bytes(MAX_PART_BYTES)?;
        let new_key = Some(r.bytes(MAX_PART_BYTES)?).filter(|k| !k.is_empty());
        let fields = r.bytes(MAX_PART_BYTES)?;
        Ok(Entry {
            coll,
            op,
            hlc,
            key,
            new_key,
            fields,
        })
    }
}

/// The changes of an encoded buffer, in order.
pub(crate) struct Entries<'a>(pub(crate) Reader<'a>);

impl<'a> Iterator for Entries<'a> {
    type Item = Result<Entry<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        (!self.0.is_empty()).then(|| Entry::read(&mut self.0))
    }
}

/// Appends one flush's changes, stored by this site (`site`) in transaction `seq`; returns the
/// bytes the log holds now.
pub(crate) fn append(
    conn: &Connection,
    seq: u64,
    site: u32,
    count: usize,
    changes: &[u8],
) -> Result<u64> {
    // (Not one INSERT ... RETURNING: SQLite then fails with "database or disk is full" for
    // blobs of a few MB.)
    let before: i64 = conn
        .prepare_cached(
            "SELECT coalesce((SELECT pending FROM _pluresdb_clock_log ORDER BY id DESC LIMIT 1), 0)",
        )?
        .query_row([], |r| r.get(0))?;
    let pending = before + changes.len() as i64;
    conn.prepare_cached(
        "INSERT INTO _pluresdb_clock_log(seq, site, n, pending, changes) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(rusqlite::params![seq as i64, site, count as i64, pending, changes])?;
    Ok(pending as u64)
}

/// True when the log holds changes not folded into the clock yet. A file of format 1 opened
/// read-only has no log.
pub(crate) fn has_changes(conn: &Connection) -> Result<bool> {
    match conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM _pluresdb_clock_log)") {
        Ok(mut stmt) => Ok(stmt.query_row([], |r| r.get(0))?),
        Err(e)
            if conn.is_readonly(rusqlite::MAIN_DB)? && e.to_string().contains("no such table") =>
        {
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

/// Every logged flush, oldest first: `(stamp without its time, how many changes, changes)`.
pub(crate) fn read_all(conn: &Connection) -> Result<Vec<(Stamp, usize, Vec<u8>)>> {
    let mut stmt =
        conn.prepare_cached("SELECT seq, site, n, changes FROM _pluresdb_clock_log ORDER BY id")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            Stamp {
                hlc: 0,
                site: r.get(1)?,
                seq: r.get::<_, i64>(0)? as u64,
            },
            r.get::<_, i64>(2)? as usize,
            r.get(3)?,
        ))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Empties the log (after folding it).
pub(crate) fn clear(conn: &Connection) -> Result<()> {
    conn.prepare_cached("DELETE FROM _pluresdb_clock_log")?
        .execute([])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(buf: &CaptureBuf) -> Vec<(u32, Op, Vec<u8>)> {
        Entries(Reader::new(&buf.bytes, "change"))
            .map(|e| e.map(|e| (e.coll, e.op, e.key.to_vec())).unwrap())
            .collect()
    }

    fn at(statement: u64, hlc: u64) -> Origin {
        Origin {
            coll: 7,
            statement,
            hlc,
        }
    }

    #[test]
    fn changes_round_trip_and_replace_rewrites_in_place() {
        let mut buf = CaptureBuf::default();
        buf.push(at(1, 100), Op::Insert, b"a", None, b"");
        buf.push(at(1, 101), Op::Update, b"a", Some(b"b"), b"xy");
        let mark = buf.len();
        buf.push(at(2, 102), Op::Delete, b"b", None, b"");
        buf.push(at(2, 103), Op::Insert, b"b", None, b"");
        // Another statement's insert after a delete is a new life.
        buf.push(at(3, 104), Op::Delete, b"c", None, b"");
        buf.push(at(4, 105), Op::Insert, b"c", None, b"");
        assert_eq!(
            entries(&buf),
            [
                (7, Op::Insert, b"a".to_vec()),
                (7, Op::Update, b"a".to_vec()),
                (7, Op::Insert, b"b".to_vec()),
                (7, Op::Delete, b"c".to_vec()),
                (7, Op::Insert, b"c".to_vec()),
            ]
        );
        assert_eq!(buf.count, 5);
        let all: Vec<_> = Entries(Reader::new(&buf.bytes, "change"))
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(
            (all[1].new_key, all[1].fields, all[1].hlc),
            (Some(&b"b"[..]), &b"xy"[..], 101)
        );
        buf.truncate(mark);
        assert_eq!(buf.count, 2);
        let (bytes, n) = buf.take();
        assert_eq!(n, 2);
        assert!(buf.len() == 0 && !bytes.is_empty());
        assert!(
            Entries(Reader::new(&[0, 9], "change"))
                .next()
                .unwrap()
                .is_err()
        );
    }
}
