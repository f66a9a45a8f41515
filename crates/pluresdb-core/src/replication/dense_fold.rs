//! Folding many field updates of one collection in one pass over its clock records.
//!
//! Folded one at a time, each updated row costs a statement: a B-tree seek from the root, a
//! read, a rewrite. When the updated rows are a large share of the clock records in their key
//! range (a bulk `UPDATE`, or many small transactions touching the same rows between syncs),
//! one `UPDATE` scanning that range is cheaper: SQLite walks the leaf pages in order and
//! rewrites each hit where its cursor already is. SQL functions bound to this module's state
//! tell the scan which rows to rewrite and how (the keys are sorted like the table), so each
//! row costs a comparison instead of a seek.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;

use parking_lot::Mutex;
use rusqlite::Connection;
use rusqlite::functions::{Context, FunctionFlags};

use super::capture::{Leftover, Op, Stamped, by_collection};
use super::clock::{RowClock, Stamp};
use super::state::Replication;
use crate::error::{Error, Result, user_function_error};

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
        // Scans go forward (one row after another); one going backward (`PRAGMA
        // reverse_unordered_selects`) seeks.
        if self.at > 0 && key <= self.key(&self.rows[self.at - 1]) {
            self.at = self.rows.partition_point(|row| self.key(row) < key);
        }
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
    fn new_clock(&self, key: &[u8], ver: Option<&[u8]>) -> Result<Vec<u8>> {
        let row = self.current(key)?;
        let mut clock = RowClock::decode_or_empty(ver)?;
        for (names, stamp) in &self.updates[row.updates.clone()] {
            clock.set_packed_fields(&self.bytes[names.clone()], *stamp)?;
        }
        Ok(clock.encode())
    }

    /// The local sequence number of the last update of the row at `key` (what the record's
    /// `seq` becomes, as when its updates are folded one by one).
    fn last_seq(&self, key: &[u8]) -> Result<u64> {
        let row = self.current(key)?;
        let last = self.updates[row.updates.clone()].last();
        Ok(last.map_or(0, |(_, stamp)| stamp.seq))
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
        let key = blob(ctx, 0)?;
        let ver = ctx.get_raw(1).as_blob().ok();
        r.dense_fold
            .lock()
            .new_clock(key, ver)
            .map_err(user_function_error)
    })?;
    let r = repl.clone();
    conn.create_scalar_function("pluresdb_fold_seq", 1, flags, move |ctx| {
        let key = blob(ctx, 0)?;
        let seq = r
            .dense_fold
            .lock()
            .last_seq(key)
            .map_err(user_function_error)?;
        Ok(seq as i64)
    })?;
    Ok(())
}

fn blob<'a>(ctx: &'a Context<'_>, i: usize) -> rusqlite::Result<&'a [u8]> {
    Ok(ctx.get_raw(i).as_blob()?)
}

/// Folds, by scanning, the rows of `items` whose only changes are field updates, where they are
/// dense enough; returns the items left to fold one row at a time, in their order. `items` are
/// sorted by collection and key, except that the last may change a row's key.
pub(crate) fn fold_field_updates<'i, 'a>(
    conn: &Connection,
    state: &Mutex<DenseFold>,
    items: &'i [Stamped<'a>],
) -> Result<Cow<'i, [Stamped<'a>]>> {
    let updated = |row: &[Stamped<'_>]| {
        row.iter()
            .all(|(e, _)| e.op == Op::Update && e.new_key.is_none())
    };
    let mut left = Leftover::new(items);
    for (start, coll_items) in by_collection(items) {
        // Most folds have too few updates for a scan: tell without comparing keys.
        let updates = coll_items
            .iter()
            .filter(|item| updated(std::slice::from_ref(item)));
        if updates.count() < MIN_ROWS {
            continue;
        }
        let rows: Vec<&[Stamped<'a>]> = coll_items.chunk_by(|a, b| a.0.key == b.0.key).collect();
        let scanned: Vec<&[Stamped<'a>]> = rows.iter().copied().filter(|r| updated(r)).collect();
        if !worth_a_scan(conn, coll_items[0].0.coll, &scanned)? {
            continue;
        }
        let mut found = scan(conn, state, coll_items[0].0.coll, &scanned)?.into_iter();
        // Rows the scan did not find live are folded one at a time (they are recorded as
        // created there), in their place among the rows with other changes.
        let unscanned = rows
            .into_iter()
            .filter(|row| !(updated(row) && found.next() == Some(true)));
        left.keep_only(start, coll_items, unscanned);
    }
    Ok(left.finish())
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
    // Counting stops past the bound: updates spread over a large table cost no full count.
    let bound = rows.len() * MAX_RECORDS_PER_ROW;
    let records: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM (SELECT 1 FROM _pluresdb_clock
                                   WHERE tbl = ?1 AND key >= ?2 AND key <= ?3 LIMIT ?4)",
        )?
        .query_row(
            rusqlite::params![
                i64::from(coll),
                first[0].0.key,
                last[0].0.key,
                bound as i64 + 1
            ],
            |r| r.get(0),
        )?;
    Ok(records as u64 <= bound as u64)
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
        // Empty: every scan takes its state back when it ends.
        let mut s = state.lock();
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
    // The updates of one transaction (the usual fold) all leave the same sequence number:
    // it is bound once instead of asked for per row.
    let last_seq = |row: &&[Stamped<'_>]| row.last().map(|(_, stamp)| stamp.seq as i64);
    let seq = rows.first().and_then(last_seq);
    let seq = seq.filter(|&seq| rows.iter().all(|row| last_seq(row) == Some(seq)));
    // Slices of the range, one statement each: a statement that calls functions keeps a
    // journal of the pages it changes (to undo itself if a call fails), and a small one stays
    // in memory instead of spilling to a file.
    let ran = conn
        .prepare_cached(
            "UPDATE _pluresdb_clock
             SET seq = coalesce(?4, pluresdb_fold_seq(key)), ver = pluresdb_fold_ver(key, ver)
             WHERE tbl = ?1 AND key >= ?2 AND key <= ?3 AND pluresdb_fold_hit(key, cl)",
        )
        .map_err(Error::from)
        .and_then(|mut stmt| {
            for (i, slice) in rows.chunks(ROWS_PER_STATEMENT).enumerate() {
                let (first, last) = (slice[0][0].0.key, slice[slice.len() - 1][0].0.key);
                let params = rusqlite::params![i64::from(coll), first, last, seq];
                if let Err(e) = stmt.execute(params) {
                    // SQLite undid the statement. A plan that does not rewrite rows as it
                    // selects them (a trigger on the table makes one) fails this way: its rows
                    // are folded one at a time instead. Outside a transaction (SQLite rolled
                    // it back), the error stands.
                    if conn.is_autocommit() {
                        return Err(e.into());
                    }
                    let start = i * ROWS_PER_STATEMENT;
                    let mut s = state.lock();
                    for row in &mut s.rows[start..start + slice.len()] {
                        row.hit = false;
                    }
                }
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
pub(crate) mod tests {
    use super::{NO_SCAN, SCANNED};
    use crate::Database;

    /// Makes folds on this thread write records only (these tests are about records).
    fn records_only() {
        crate::replication::packs::PACKING_FOR_TESTS.set(Some((usize::MAX, 0, 256)));
    }

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
        fold_db(&Database::open(path).unwrap(), scan)
    }

    fn fold_db(db: &Database, scan: bool) -> (Vec<ClockRow>, usize) {
        NO_SCAN.set(!scan);
        SCANNED.set(0);
        db.fold_change_log().unwrap();
        NO_SCAN.set(false);
        (clock(db), SCANNED.get())
    }

    #[test]
    fn scans_fold_dense_updates_to_the_records_row_by_row_folding_writes() {
        records_only();
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

    /// Two synced tables (a text key, a composite key) of 1,200 rows, some fields with versions
    /// of their own, folded; `pool` lists the row numbers for re-inserts.
    pub(crate) const RANDOM_SETUP: &str = "
        CREATE TABLE pool(i INTEGER PRIMARY KEY);
        WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < 1199)
        INSERT INTO pool SELECT i FROM s;
        CREATE TABLE tt(id TEXT PRIMARY KEY NOT NULL, n INT, a INT, b INT);
        CREATE TABLE tc(k1 TEXT NOT NULL, k2 INT NOT NULL, n INT, a INT, b INT,
                        PRIMARY KEY (k1, k2));
        SELECT pluresdb_sync_table('tt'), pluresdb_sync_table('tc');
        INSERT INTO tt SELECT printf('k%x', i * 2654435761 % 4294967296), i, i, i FROM pool;
        INSERT INTO tc SELECT substr('abcde', 1 + i % 5), i, i, i, i FROM pool;
        UPDATE tt SET b = -b WHERE n % 7 = 0;
        UPDATE tc SET b = -b WHERE n % 7 = 0;";

    /// Up to 23 random changes for [`random_change`]: kind, second table, `x`, `y`.
    pub(crate) fn random_changes()
    -> impl proptest::strategy::Strategy<Value = Vec<(u8, bool, u32, u32)>> {
        proptest::collection::vec((0u8..9, proptest::bool::ANY, 0u32..1000, 0u32..1000), 1..24)
    }

    /// The SQL of one random change to table `t` (`x`, `y` pick the rows).
    pub(crate) fn random_change(kind: u8, t: &str, x: u32, y: u32) -> String {
        let (key, rekey) = if t == "tt" {
            (
                "printf('k%x', i * 2654435761 % 4294967296), i, 0, 0",
                "id = id || 'r'",
            )
        } else {
            ("substr('abcde', 1 + i % 5), i, i, 0, 0", "k2 = k2 + 100000")
        };
        match kind {
            0 => format!(
                "UPDATE {t} SET a = a + 1 WHERE (n * 7 + {x}) % 100 < {}",
                y % 101
            ),
            1 => format!("UPDATE {t} SET a = -a, b = b + 1 WHERE (n + {x}) % 3 = 0"),
            2 => format!("DELETE FROM {t} WHERE (n * 13 + {x}) % 1000 < {}", y % 60),
            3 => format!(
                "INSERT OR IGNORE INTO {t} SELECT {key} FROM pool WHERE (i * 13 + {x}) % 1000 < {}",
                y % 80
            ),
            4 => format!(
                "INSERT OR REPLACE INTO {t} SELECT * FROM {t} WHERE (n + {x}) % 500 < {}",
                y % 4
            ),
            5 => format!("UPDATE OR IGNORE {t} SET {rekey} WHERE (n + {x}) % 400 = 0"),
            6 => format!("UPDATE {t} SET b = b * 2 WHERE n = {}", x % 1200),
            _ if y.is_multiple_of(8) => "ROLLBACK; BEGIN".to_owned(),
            _ => "COMMIT; BEGIN".to_owned(),
        }
    }

    /// Folds a copy of the database at `path` the way `setup` prepares it (a pragma, a trigger);
    /// returns the records and how many rows scans rewrote.
    fn fold_copy(path: &std::path::Path, name: &str, setup: &str) -> (Vec<ClockRow>, usize) {
        let copy = path.with_file_name(name);
        std::fs::copy(path, &copy).unwrap();
        let db = Database::open(&copy).unwrap();
        db.with_writer_conn(|c| Ok(c.execute_batch(setup)?))
            .unwrap();
        fold_db(&db, !setup.is_empty() || name != "by-row.db")
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(12))]

        /// Random changes (bulk and single updates, deletes, re-inserts, replaces, key changes,
        /// commits and rollbacks) over rows some of which have no live record: folded by scans
        /// (forward, backward, or failing under a trigger and falling back), the records are
        /// those of row-by-row folding.
        #[test]
        fn random_changes_fold_by_scans_as_row_by_row(changes in random_changes()) {
            records_only();
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("a.db");
            {
                let db = Database::open(&path).unwrap();
                db.exec(RANDOM_SETUP).unwrap();
                db.fold_change_log().unwrap();
                // Live rows without a live record: their updates are folded row by row.
                db.exec(
                    "DELETE FROM _pluresdb_clock WHERE tbl = (SELECT id FROM _pluresdb_collections
                     WHERE name = 'tt') AND key IN (SELECT pluresdb_pack(id) FROM tt WHERE n % 50 = 1);
                     UPDATE _pluresdb_clock SET cl = cl + 1 WHERE tbl = (SELECT id FROM
                     _pluresdb_collections WHERE name = 'tc') AND key IN
                     (SELECT pluresdb_pack(k1, k2) FROM tc WHERE n % 50 = 2);",
                )
                .unwrap();
                // Committed first, so that scans have rows to fold whatever follows.
                let mut sql = vec!["UPDATE tt SET a = a + 1; BEGIN".to_owned()];
                for (kind, second, x, y) in changes {
                    sql.push(random_change(kind, if second { "tc" } else { "tt" }, x, y));
                }
                sql.push("COMMIT".to_owned());
                db.exec(&sql.join(";\n")).unwrap();
            }
            let (by_row, none) = fold_copy(&path, "by-row.db", "");
            proptest::prop_assert_eq!(none, 0);
            let (scanned, rows) = fold_copy(&path, "scan.db", "");
            proptest::prop_assert!(rows >= 256, "only {} rows were folded by scans", rows);
            proptest::prop_assert!(scanned == by_row, "scans differ from row-by-row folding");
            let (backward, rows) =
                fold_copy(&path, "backward.db", "PRAGMA reverse_unordered_selects = ON");
            proptest::prop_assert!(rows >= 256, "backward scans folded only {} rows", rows);
            proptest::prop_assert!(backward == by_row, "backward scans differ");
            let (fallback, rows) = fold_copy(
                &path,
                "trigger.db",
                "CREATE TRIGGER t AFTER UPDATE ON _pluresdb_clock BEGIN SELECT 1; END",
            );
            // Two passes fail every statement that selects two rows or more.
            proptest::prop_assert!(rows < 256, "{} rows were folded under a trigger", rows);
            proptest::prop_assert!(fallback == by_row, "falling back under a trigger differs");
        }
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
