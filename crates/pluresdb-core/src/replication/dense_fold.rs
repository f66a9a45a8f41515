//! Folding many field updates of one collection in one pass over its clock records.
//!
//! Folded one at a time, each updated row costs a statement: a B-tree seek from the root, a
//! read, a rewrite. When the updated rows are a large share of the clock records in their key
//! range (a bulk `UPDATE`, or many small transactions touching the same rows between syncs),
//! one `UPDATE` scanning that range is cheaper: SQLite walks the leaf pages in order and
//! rewrites each hit where its cursor already is. SQL functions bound to this module's state
//! tell the scan which rows to rewrite and how (the keys are sorted like the table), so each
//! row costs a comparison instead of a seek.

use std::ops::Range;
use std::sync::Arc;

use parking_lot::Mutex;
use rusqlite::Connection;
use rusqlite::functions::{Context, FunctionFlags};

use super::capture::{Op, Stamped};
use super::clock::{RowClock, Stamp};
use super::state::Replication;
use crate::error::{Error, Result};

/// Fewest updated rows of a collection folded by a scan: below it, seeks cost little anyway.
const MIN_ROWS: usize = 256;

/// A scan folds the updates when the clock records in their key range are at most this many
/// times the updated rows. Measured on 100K records (all or 10% updated): a scanned record costs
/// about a quarter of a seek and a rewrite costs the same either way.
const MAX_RECORDS_PER_ROW: usize = 3;

#[cfg(test)]
thread_local! {
    /// Test-only: fold every row one at a time (the reference a scan must match).
    static NO_SCAN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Test-only: rows rewritten by scans on this thread.
    static SCANNED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Updated rows per scanning statement: their pages (about 70 clock records each) fit the
/// statement journal's 64 KiB kept in memory.
const ROWS_PER_STATEMENT: usize = 256;

/// The rows a running scan rewrites, sorted by key, with the updates to apply to each. The SQL
/// functions of [`register`] read it; only [`fold_field_updates`] fills it.
#[derive(Default)]
pub(crate) struct DenseFold {
    /// Keys and packed field names, end to end.
    bytes: Vec<u8>,
    rows: Vec<Row>,
    /// Per update: its field names (in `bytes`) and stamp.
    updates: Vec<(Range<usize>, Stamp)>,
    /// The row the scan is at (rows before it are behind the scan).
    at: usize,
}

/// One row to rewrite: its key (in `bytes`), its updates, and whether the scan found it live.
struct Row {
    key: Range<usize>,
    updates: Range<usize>,
    hit: bool,
}

impl DenseFold {
    fn key(&self, row: &Row) -> &[u8] {
        &self.bytes[row.key.clone()]
    }

    /// Moves to `key` (the scan's next record): true when that row has updates and is live.
    fn hit(&mut self, key: &[u8], cl: i64) -> bool {
        while self.at < self.rows.len() && self.key(&self.rows[self.at]) < key {
            self.at += 1;
        }
        let Some(row) = self.rows.get(self.at) else {
            return false;
        };
        let live = cl % 2 == 1 && self.key(row) == key;
        self.rows[self.at].hit |= live;
        live
    }

    /// The row at `key`, which the scan must have just hit.
    fn current(&self, key: &[u8]) -> Result<&Row> {
        self.rows
            .get(self.at)
            .filter(|row| row.hit && self.key(row) == key)
            .ok_or_else(|| Error::internal("a folding scan rewrote a row it did not select"))
    }

    /// The clock `ver` of the row at `key` with its updates applied.
    fn new_clock(&self, key: &[u8], ver: &[u8]) -> Result<Vec<u8>> {
        let row = self.current(key)?;
        let mut clock = RowClock::decode(ver)?;
        for (names, stamp) in &self.updates[row.updates.clone()] {
            clock.set_packed_fields(&self.bytes[names.clone()], *stamp)?;
        }
        Ok(clock.encode())
    }

    /// The newest local sequence number among the updates of the row at `key`.
    fn newest_seq(&self, key: &[u8]) -> Result<u64> {
        let row = self.current(key)?;
        Ok(self.updates[row.updates.clone()]
            .iter()
            .map(|(_, s)| s.seq)
            .max()
            .unwrap_or(0))
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.rows.clear();
        self.updates.clear();
        self.at = 0;
    }
}

/// Registers the scan's functions on the writer: `pluresdb_fold_hit(key, cl)` selects the
/// records to rewrite, `pluresdb_fold_ver(key, ver)` and `pluresdb_fold_seq(key)` give their new
/// clock and sequence number.
pub(crate) fn register(conn: &Connection, repl: &Arc<Replication>) -> Result<()> {
    // Not deterministic: the answers depend on the scan's position.
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DIRECTONLY;
    let r = repl.clone();
    conn.create_scalar_function("pluresdb_fold_hit", 2, flags, move |ctx| {
        let key = blob(ctx, 0)?;
        Ok(r.dense_fold.lock().hit(key, ctx.get(1)?))
    })?;
    let r = repl.clone();
    conn.create_scalar_function("pluresdb_fold_ver", 2, flags, move |ctx| {
        let (key, ver) = (blob(ctx, 0)?, blob(ctx, 1)?);
        r.dense_fold.lock().new_clock(key, ver).map_err(user_error)
    })?;
    let r = repl.clone();
    conn.create_scalar_function("pluresdb_fold_seq", 1, flags, move |ctx| {
        let key = blob(ctx, 0)?;
        let seq = r.dense_fold.lock().newest_seq(key).map_err(user_error)?;
        Ok(seq as i64)
    })?;
    Ok(())
}

fn blob<'a>(ctx: &'a Context<'_>, i: usize) -> rusqlite::Result<&'a [u8]> {
    Ok(ctx.get_raw(i).as_blob()?)
}

fn user_error(e: Error) -> rusqlite::Error {
    rusqlite::Error::UserFunctionError(e.to_string().into())
}

/// Folds, by scanning, the rows of `items` whose only changes are field updates, where they are
/// dense enough; returns the items left to fold one row at a time, in their order. `items` are
/// sorted by collection and key, except that the last may change a row's key.
pub(crate) fn fold_field_updates<'a>(
    conn: &Connection,
    state: &Mutex<DenseFold>,
    items: &[Stamped<'a>],
) -> Result<Vec<Stamped<'a>>> {
    let mut rest = Vec::with_capacity(items.len());
    for coll_items in items.chunk_by(|a, b| a.0.coll == b.0.coll) {
        let rows: Vec<&[Stamped<'a>]> = coll_items.chunk_by(|a, b| a.0.key == b.0.key).collect();
        let updated = |row: &&[Stamped<'_>]| {
            row.iter()
                .all(|(e, _)| e.op == Op::Update && e.new_key.is_none())
        };
        let scanned: Vec<&[Stamped<'a>]> = rows.iter().copied().filter(updated).collect();
        if !worth_a_scan(conn, coll_items[0].0.coll, &scanned)? {
            rest.extend_from_slice(coll_items);
            continue;
        }
        let mut found = scan(conn, state, coll_items[0].0.coll, &scanned)?.into_iter();
        // Rows the scan did not find live are folded one at a time (they are recorded as
        // created there), in their place among the rows with other changes.
        for row in rows {
            if !(updated(&row) && found.next() == Some(true)) {
                rest.extend_from_slice(row);
            }
        }
    }
    Ok(rest)
}

/// True when the update-only `rows` of collection `coll` are many and dense in their key range.
fn worth_a_scan(conn: &Connection, coll: u32, rows: &[&[Stamped<'_>]]) -> Result<bool> {
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return Ok(false);
    };
    #[cfg(test)]
    if NO_SCAN.get() {
        return Ok(false);
    }
    if rows.len() < MIN_ROWS {
        return Ok(false);
    }
    let records: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM _pluresdb_clock WHERE tbl = ?1 AND key >= ?2 AND key <= ?3",
        )?
        .query_row(
            rusqlite::params![i64::from(coll), first[0].0.key, last[0].0.key],
            |r| r.get(0),
        )?;
    Ok(records as u64 <= (rows.len() * MAX_RECORDS_PER_ROW) as u64)
}

/// Rewrites the clock records of `rows` (each the updates of one row, sorted by key) in one
/// scan of their key range; returns, per row, whether it was found live (and rewritten).
fn scan(
    conn: &Connection,
    state: &Mutex<DenseFold>,
    coll: u32,
    rows: &[&[Stamped<'_>]],
) -> Result<Vec<bool>> {
    {
        let mut s = state.lock();
        s.clear();
        let updates: usize = rows.iter().map(|r| r.len()).sum();
        let bytes: usize = rows
            .iter()
            .map(|r| r[0].0.key.len() + r.iter().map(|(e, _)| e.fields.len()).sum::<usize>())
            .sum();
        s.bytes.reserve_exact(bytes);
        s.rows.reserve_exact(rows.len());
        s.updates.reserve_exact(updates);
        for row in rows {
            let start = s.bytes.len();
            s.bytes.extend_from_slice(row[0].0.key);
            let key = start..s.bytes.len();
            let first = s.updates.len();
            for (e, stamp) in row.iter() {
                let start = s.bytes.len();
                s.bytes.extend_from_slice(e.fields);
                let names = start..s.bytes.len();
                s.updates.push((names, *stamp));
            }
            let updates = first..s.updates.len();
            s.rows.push(Row {
                key,
                updates,
                hit: false,
            });
        }
    }
    // Slices of the range, one statement each: a statement that calls functions keeps a
    // journal of the pages it changes (to undo itself if a call fails), and a small one stays
    // in memory instead of spilling to a file.
    let ran = conn
        .prepare_cached(
            "UPDATE _pluresdb_clock
             SET seq = max(seq, pluresdb_fold_seq(key)), ver = pluresdb_fold_ver(key, ver)
             WHERE tbl = ?1 AND key >= ?2 AND key <= ?3 AND pluresdb_fold_hit(key, cl)",
        )
        .and_then(|mut stmt| {
            for slice in rows.chunks(ROWS_PER_STATEMENT) {
                let (first, last) = (slice[0][0].0.key, slice[slice.len() - 1][0].0.key);
                stmt.execute(rusqlite::params![i64::from(coll), first, last])?;
            }
            Ok(())
        });
    let done = std::mem::take(&mut *state.lock());
    ran?;
    #[cfg(test)]
    SCANNED.set(SCANNED.get() + done.rows.iter().filter(|row| row.hit).count());
    Ok(done.rows.iter().map(|row| row.hit).collect())
}

#[cfg(test)]
mod tests {
    use super::{NO_SCAN, SCANNED};
    use crate::Database;

    type ClockRow = (i64, Vec<u8>, i64, i64, Vec<u8>);

    fn clock(db: &Database) -> Vec<ClockRow> {
        db.with_writer_conn(|c| {
            let mut stmt =
                c.prepare("SELECT tbl, key, cl, seq, ver FROM _pluresdb_clock ORDER BY tbl, key")?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<ClockRow>>>()?)
        })
        .unwrap()
    }

    /// Folds the log of the database at `path`, by scans or row by row; returns the clock
    /// records and how many rows scans rewrote.
    fn fold(path: &std::path::Path, scan: bool) -> (Vec<ClockRow>, usize) {
        let db = Database::open(path).unwrap();
        NO_SCAN.set(!scan);
        SCANNED.set(0);
        db.fold_change_log().unwrap();
        NO_SCAN.set(false);
        (clock(&db), SCANNED.get())
    }

    #[test]
    fn scans_fold_dense_updates_to_the_records_row_by_row_folding_writes() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.db");
        {
            let db = Database::open(&a).unwrap();
            db.exec(
                "CREATE TABLE t(id TEXT PRIMARY KEY NOT NULL, a INT, b INT, c INT);
                 CREATE TABLE u(x INTEGER PRIMARY KEY NOT NULL, y INT);
                 SELECT pluresdb_sync_table('t'), pluresdb_sync_table('u');
                 WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 1999)
                 INSERT INTO t SELECT printf('k%04d', i), i, i, i FROM n;
                 WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 599)
                 INSERT INTO u SELECT i, i FROM n;",
            )
            .unwrap();
            // Some rows get a field version of their own before the fold under test.
            db.exec("UPDATE t SET a = -a WHERE id < 'k0100'").unwrap();
            db.fold_change_log().unwrap();
            // Several updates of one row, rows deleted, re-inserted, updated then deleted, a
            // changed key (updates after it are folded after it), two tables, two transactions.
            db.exec(
                "BEGIN;
                 UPDATE t SET b = b + 1 WHERE id < 'k1500';
                 UPDATE t SET a = 7, c = 7 WHERE id >= 'k0500' AND id < 'k0700';
                 DELETE FROM t WHERE id >= 'k1600' AND id < 'k1650';
                 WITH RECURSIVE n(i) AS (SELECT 1600 UNION ALL SELECT i + 1 FROM n WHERE i < 1609)
                 INSERT INTO t SELECT printf('k%04d', i), 1, 1, 1 FROM n;
                 UPDATE t SET b = -1 WHERE id >= 'k1700' AND id < 'k1800';
                 DELETE FROM t WHERE id >= 'k1750' AND id < 'k1800';
                 UPDATE t SET id = 'x0010' WHERE id = 'k0010';
                 UPDATE t SET c = 9 WHERE id < 'k0600';
                 UPDATE u SET y = y + 1;
                 COMMIT;
                 UPDATE t SET c = -c WHERE id >= 'k0300' AND id < 'k0900';",
            )
            .unwrap();
        }
        let b = dir.path().join("b.db");
        std::fs::copy(&a, &b).unwrap();
        let (scanned, rows) = fold(&a, true);
        let (row_by_row, none) = fold(&b, false);
        assert_eq!(none, 0);
        // t: 1500 rows updated in the first segment, 599 after the key change; u: 600.
        assert!(rows > 2500, "only {rows} rows were folded by scans");
        assert_eq!(scanned.len(), row_by_row.len());
        assert!(
            scanned == row_by_row,
            "the scan's records differ from row-by-row folding"
        );
    }

    #[test]
    fn the_scan_functions_called_from_sql_fail_cleanly() {
        let db = Database::open_in_memory().unwrap();
        let hit = db
            .get("SELECT pluresdb_fold_hit(x'01', 1)", ())
            .unwrap()
            .unwrap();
        assert_eq!(hit.get::<i64>(0).unwrap(), 0);
        let err = db
            .get("SELECT pluresdb_fold_ver(x'01', x'00')", ())
            .unwrap_err();
        assert!(err.to_string().contains("did not select"), "{err}");
    }
}
