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

/// How many of the current statement's deletes of a table an insert into it looks back through
/// for the row it replaces (cascaded changes to other rows may come between the two).
const REPLACE_LOOKBACK: usize = 64;

/// The operation byte of a delete that an `INSERT OR REPLACE` turned into a rewrite of the
/// row: such entries are skipped when read.
const REPLACED: u8 = 3;

/// A flag of the operation byte: the change's clock time is left out, as the previous
/// change's in the same buffer (a transaction's changes share one time: 9 bytes fewer each).
/// Changes logged by format 7 always carry their time.
const SAME_TIME: u8 = 0x10;

/// Captured row changes of the open transaction, encoded as the log stores them: per change
/// the collection, operation, clock time (unless [`SAME_TIME`]), key, new key (empty:
/// unchanged) and changed field names (packed).
#[derive(Default)]
pub(crate) struct CaptureBuf {
    bytes: Vec<u8>,
    /// Changes in `bytes` (replaced deletes not counted).
    count: usize,
    /// Bytes taken by flushes so far: marks count from the handle's first change, so a mark
    /// taken before a flush still means "what came after it".
    flushed: usize,
    /// Where the first flush since the last mark began.
    taken_since_mark: Option<usize>,
    /// The statement whose deletes are listed: per collection, where the operation bytes of
    /// its latest deletes are.
    statement: u64,
    deletes: Vec<(u32, Vec<usize>)>,
    /// Reused to pack a key, and changed field names, before their length is known.
    pub(crate) scratch: Vec<u8>,
    pub(crate) fields_scratch: Vec<u8>,
    /// The transaction (its generation, see `TxCounters`) the changes were captured in.
    generation: u64,
    /// The clock time of that transaction's changes (see [`CaptureBuf::clock_time`]).
    hlc: Option<u64>,
    /// The clock time of the last change in `bytes`, if there is one.
    last_time: Option<u64>,
}

impl CaptureBuf {
    /// Makes the buffer hold changes of transaction `generation`: what it holds of an earlier
    /// one is dropped. A commit writes every captured change first, so what is left of an
    /// ended transaction was rolled back without the statement path seeing it (the thread that
    /// left its transaction open ended, or SQLite rolled back on its own).
    pub(crate) fn in_transaction(&mut self, generation: u64) -> &mut CaptureBuf {
        if self.generation != generation {
            self.clear();
            self.generation = generation;
            self.hlc = None;
        }
        self
    }

    /// The clock time of the transaction's changes: `now` when it makes its first, and again
    /// once the clock moved past that time (`last`: a merge in the transaction saw a later
    /// stamp, a column was recorded, a node was written), so that a change is later than
    /// everything it could have seen. Between such moves its changes share one time: a bulk
    /// write's sync records are alike but for their keys (packed small, see
    /// [`packs`](super::packs)).
    pub(crate) fn clock_time(&mut self, last: u64, now: impl FnOnce() -> u64) -> u64 {
        match self.hlc {
            Some(hlc) if hlc >= last => hlc,
            _ => *self.hlc.insert(now()),
        }
    }

    /// Where the buffer ends now: [`truncate`](Self::truncate) comes back to it.
    pub(crate) fn mark(&mut self) -> usize {
        self.taken_since_mark = None;
        self.flushed + self.bytes.len()
    }

    /// Bytes captured and not flushed.
    pub(crate) fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Appends a change. An insert after the same statement's delete of the same row is
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
        if at.statement != self.statement {
            self.statement = at.statement;
            self.deletes.clear();
        }
        if op == Op::Insert
            && let Some((_, list)) = self.deletes.iter_mut().find(|(c, _)| *c == at.coll)
        {
            let bytes = &self.bytes;
            let replaced = list
                .iter()
                .enumerate()
                .rev()
                .take(REPLACE_LOOKBACK)
                .find(|(_, op_at)| deleted_key(bytes, **op_at) == Some(key))
                .map(|(i, _)| i);
            if let Some(i) = replaced {
                let op_at = list.remove(i);
                self.bytes[op_at] = REPLACED | (self.bytes[op_at] & SAME_TIME);
                self.count -= 1;
            }
        }
        put_varint(&mut self.bytes, u64::from(at.coll));
        if op == Op::Delete {
            let op_at = self.bytes.len();
            match self.deletes.iter_mut().find(|(c, _)| *c == at.coll) {
                Some((_, list)) => {
                    // Only the latest are looked at: a large delete keeps a bounded list.
                    if list.len() >= 2 * REPLACE_LOOKBACK {
                        list.drain(..REPLACE_LOOKBACK);
                    }
                    list.push(op_at);
                }
                None => self.deletes.push((at.coll, vec![op_at])),
            }
        }
        if self.last_time == Some(at.hlc) {
            self.bytes.push(op as u8 | SAME_TIME);
        } else {
            self.bytes.push(op as u8);
            put_varint(&mut self.bytes, at.hlc);
            self.last_time = Some(at.hlc);
        }
        put_bytes(&mut self.bytes, key);
        put_bytes(&mut self.bytes, new_key.unwrap_or_default());
        put_bytes(&mut self.bytes, fields);
        self.count += 1;
    }

    /// Drops the changes captured after `mark` (a failed statement's; 0: all). A flush since
    /// the mark happened inside that statement, and SQLite undid it with the statement: false
    /// when that flush also took changes from before the mark, which are then lost.
    pub(crate) fn truncate(&mut self, mark: usize) -> bool {
        self.deletes.clear();
        self.last_time = None;
        self.bytes.truncate(mark.saturating_sub(self.flushed));
        // A failed statement's path: counting again is simpler than marking counts.
        self.count = Entries::new(&self.bytes, "change").count();
        self.taken_since_mark.is_none_or(|start| start >= mark)
    }

    /// Takes the changes to flush them, leaving the buffer empty: `(encoded changes, how
    /// many)`.
    pub(crate) fn take(&mut self) -> (Vec<u8>, usize) {
        self.taken_since_mark.get_or_insert(self.flushed);
        let count = self.count;
        let bytes = std::mem::take(&mut self.bytes);
        self.clear();
        self.flushed += bytes.len();
        (bytes, count)
    }

    /// Drops every change (marks taken before stay valid: they count as before all of them).
    pub(crate) fn clear(&mut self) {
        self.deletes.clear();
        self.last_time = None;
        self.flushed += self.bytes.len();
        self.bytes.clear();
        self.count = 0;
    }
}

/// The key of the delete whose operation byte is at `op_at` (if it is still a delete).
fn deleted_key(bytes: &[u8], op_at: usize) -> Option<&[u8]> {
    let op = *bytes.get(op_at)?;
    if op & !SAME_TIME != Op::Delete as u8 {
        return None;
    }
    let mut r = Reader::new(&bytes[op_at + 1..], "change");
    if op & SAME_TIME == 0 {
        r.varint().ok()?;
    }
    r.bytes(MAX_PART_BYTES).ok()
}

/// One change read back from the log.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Entry<'a> {
    pub(crate) coll: u32,
    pub(crate) op: Op,
    pub(crate) hlc: u64,
    pub(crate) key: &'a [u8],
    pub(crate) new_key: Option<&'a [u8]>,
    pub(crate) fields: &'a [u8],
}

impl<'a> Entry<'a> {
    /// The next change; `None` for a delete that an `INSERT OR REPLACE` undid. `time` is the
    /// clock time of the change before (set to this one's).
    fn read(r: &mut Reader<'a>, time: &mut Option<u64>) -> Result<Option<Entry<'a>>> {
        let coll = u32::try_from(r.varint()?).map_err(|_| r.error("collection id too large"))?;
        let byte = r.byte()?;
        let op = match byte & !SAME_TIME {
            0 => Some(Op::Insert),
            1 => Some(Op::Update),
            2 => Some(Op::Delete),
            REPLACED => None,
            _ => return Err(r.error(&format!("unknown operation {byte}"))),
        };
        let hlc = match (byte & SAME_TIME != 0, *time) {
            (false, _) => r.varint()?,
            (true, Some(hlc)) => hlc,
            (true, None) => return Err(r.error("the first change has no clock time")),
        };
        *time = Some(hlc);
        let key = r.bytes(MAX_PART_BYTES)?;
        let new_key = Some(r.bytes(MAX_PART_BYTES)?).filter(|k| !k.is_empty());
        let fields = r.bytes(MAX_PART_BYTES)?;
        Ok(op.map(|op| Entry {
            coll,
            op,
            hlc,
            key,
            new_key,
            fields,
        }))
    }
}

/// The changes of an encoded buffer, in order (reading stops at the first malformed one).
pub(crate) struct Entries<'a> {
    reader: Reader<'a>,
    failed: bool,
    /// The clock time of the last change read.
    time: Option<u64>,
}

impl<'a> Entries<'a> {
    pub(crate) fn new(bytes: &'a [u8], what: &'static str) -> Entries<'a> {
        Entries {
            reader: Reader::new(bytes, what),
            failed: false,
            time: None,
        }
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<Entry<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.failed && !self.reader.is_empty() {
            match Entry::read(&mut self.reader, &mut self.time) {
                Ok(Some(entry)) => return Some(Ok(entry)),
                Ok(None) => {}
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
        None
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
    let pending: i64 = conn
        .prepare_cached(
            "INSERT INTO _pluresdb_clock_log(seq, site, n, pending, changes)
             VALUES (?1, ?2, ?3, coalesce((SELECT pending FROM _pluresdb_clock_log
                                          ORDER BY id DESC LIMIT 1), 0) + length(?4), ?4)
             RETURNING pending",
        )?
        .query_row(
            rusqlite::params![seq as i64, site, count as i64, changes],
            |r| r.get(0),
        )?;
    Ok(pending as u64)
}

/// True when the log holds changes not folded into the clock yet. A file of format 1 opened
/// read-only has no log.
pub(crate) fn has_changes(conn: &Connection) -> Result<bool> {
    match conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM _pluresdb_clock_log)") {
        Ok(mut stmt) => Ok(stmt.query_row([], |r| r.get(0))?),
        Err(_) if !crate::schema::table_exists(conn, "_pluresdb_clock_log")? => Ok(false),
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

    fn entries(bytes: &[u8]) -> Vec<(u32, Op, Vec<u8>)> {
        Entries::new(bytes, "change")
            .map(|e| e.map(|e| (e.coll, e.op, e.key.to_vec())).unwrap())
            .collect()
    }

    fn at(coll: u32, statement: u64, hlc: u64) -> Origin {
        Origin {
            coll,
            statement,
            hlc,
        }
    }

    #[test]
    fn changes_round_trip_and_replace_rewrites_in_place() {
        let mut buf = CaptureBuf::default();
        buf.push(at(7, 1, 100), Op::Insert, b"a", None, b"");
        buf.push(at(7, 1, 101), Op::Update, b"a", Some(b"b"), b"xy");
        let mark = buf.mark();
        // Replaced: the delete is dropped even with a cascaded change in between.
        buf.push(at(7, 2, 102), Op::Delete, b"b", None, b"");
        buf.push(at(8, 2, 103), Op::Delete, b"b", None, b"");
        buf.push(at(7, 2, 104), Op::Insert, b"b", None, b"");
        // Another statement's insert after a delete is a new life.
        buf.push(at(7, 3, 105), Op::Delete, b"c", None, b"");
        buf.push(at(7, 4, 106), Op::Insert, b"c", None, b"");
        assert_eq!(
            entries(&buf.bytes),
            [
                (7, Op::Insert, b"a".to_vec()),
                (7, Op::Update, b"a".to_vec()),
                (8, Op::Delete, b"b".to_vec()),
                (7, Op::Insert, b"b".to_vec()),
                (7, Op::Delete, b"c".to_vec()),
                (7, Op::Insert, b"c".to_vec()),
            ]
        );
        let all: Vec<_> = Entries::new(&buf.bytes, "change")
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(
            (all[1].new_key, all[1].fields, all[1].hlc),
            (Some(&b"b"[..]), &b"xy"[..], 101)
        );
        // The running count leaves the replaced delete out, as reading does.
        assert_eq!(buf.count, 6);
        assert!(buf.truncate(mark));
        assert_eq!(entries(&buf.bytes).len(), 2);
        let (bytes, n) = buf.take();
        assert_eq!(n, 2);
        assert_eq!(buf.len(), 0);
        // A mark from before a flush drops everything captured since; what that flush took
        // from before the mark is reported lost.
        let mark = buf.mark();
        buf.push(at(7, 5, 107), Op::Insert, b"d", None, b"");
        buf.take();
        buf.push(at(7, 5, 108), Op::Insert, b"e", None, b"");
        assert!(buf.truncate(mark));
        assert_eq!(buf.len(), 0);
        buf.push(at(7, 6, 109), Op::Insert, b"f", None, b"");
        let mark = buf.mark();
        buf.take();
        assert!(!buf.truncate(mark));
        // Malformed input: one error, then nothing.
        let mut bad = bytes.clone();
        bad.extend([7, 9]);
        let read: Vec<_> = Entries::new(&bad, "change").collect();
        assert_eq!(read.len(), 3);
        assert!(read[2].is_err());
    }

    #[test]
    fn changes_at_the_time_of_the_one_before_leave_it_out() {
        let times = |bytes: &[u8]| -> Vec<(Op, Vec<u8>, u64)> {
            Entries::new(bytes, "change")
                .map(|e| e.map(|e| (e.op, e.key.to_vec(), e.hlc)).unwrap())
                .collect()
        };
        // A clock time as the clock makes them (milliseconds since 1970, shifted).
        const T: u64 = 1_700_000_000_000 << 16;
        let mut buf = CaptureBuf::default();
        buf.push(at(7, 1, T), Op::Insert, b"a", None, b"");
        let one = buf.len();
        buf.push(at(7, 1, T), Op::Insert, b"b", None, b"");
        assert_eq!(buf.len() - one, one - 9, "the time is left out");
        // A replaced delete at the same time is skipped, and what follows keeps its time.
        buf.push(at(7, 2, T), Op::Delete, b"b", None, b"");
        buf.push(at(7, 2, T), Op::Insert, b"b", None, b"");
        buf.push(at(7, 3, T + 1), Op::Update, b"a", None, b"x");
        buf.push(at(7, 3, T + 1), Op::Delete, b"b", None, b"");
        let want = [
            (Op::Insert, b"a".to_vec(), T),
            (Op::Insert, b"b".to_vec(), T),
            (Op::Insert, b"b".to_vec(), T),
            (Op::Update, b"a".to_vec(), T + 1),
            (Op::Delete, b"b".to_vec(), T + 1),
        ];
        assert_eq!(times(&buf.bytes), want);
        // After a statement's changes are dropped, and in the next flush, a change carries its
        // time again (what it followed is gone).
        let mark = buf.mark();
        buf.push(at(7, 4, 5), Op::Insert, b"c", None, b"");
        assert!(buf.truncate(mark));
        buf.push(at(7, 5, 5), Op::Insert, b"d", None, b"");
        assert_eq!(
            times(&buf.bytes).last(),
            Some(&(Op::Insert, b"d".to_vec(), 5))
        );
        buf.take();
        buf.push(at(7, 6, 5), Op::Insert, b"e", None, b"");
        assert_eq!(times(&buf.bytes), [(Op::Insert, b"e".to_vec(), 5)]);
        // Format 7 logged every time: read as before.
        let mut old = Vec::new();
        for (key, hlc) in [(b"p", 9u64), (b"q", 9)] {
            put_varint(&mut old, 7);
            old.push(Op::Insert as u8);
            put_varint(&mut old, hlc);
            put_bytes(&mut old, key);
            put_bytes(&mut old, b"");
            put_bytes(&mut old, b"");
        }
        assert_eq!(
            times(&old),
            [
                (Op::Insert, b"p".to_vec(), 9),
                (Op::Insert, b"q".to_vec(), 9)
            ]
        );
    }
}
