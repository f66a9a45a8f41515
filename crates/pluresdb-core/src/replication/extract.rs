//! Reading change sets: every field stored after a given `db_version`, with the values as they
//! are now, a page of rows per snapshot.

use std::cell::OnceCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde_json::Value as Json;

use pluresdb_crdt::{Hlc, SiteId, Version, is_alive};

use super::clock::{RowClock, Stamp};
use super::collections::{Collection, Collections, Kind, quote};
use super::keys;
use super::packs;
use super::received;
use super::refetch::Refetch;
use super::resume::{Position, ResumePoint};
use super::shape_stamp::ShapeStamp;
use super::state::read_sites;
use super::{ChangeRecord, EDGES, EDGES_ID, NODES};
use crate::database::Database;
use crate::error::{Error, Result};
use crate::value::Value;
use rusqlite::OptionalExtension;
use rusqlite::types::Value as SqlValue;

/// How often reading changes folds the log and reads again, before it reads holding the write
/// lock.
const FOLD_ATTEMPTS: usize = 5;

#[cfg(test)]
thread_local! {
    /// Makes [`Database::for_each_change`] read holding the write lock at once, as when
    /// other writers keep logging changes (tests only).
    static READ_LOCKED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The changes a peer is missing, and how far they go.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChangeSet {
    /// The site that produced the set.
    pub site: SiteId,
    /// The producer's `db_version` when the set was read: after applying it, a peer has every
    /// change up to here and asks for "since" this next time.
    pub db_version: u64,
    /// The changes.
    pub changes: Vec<ChangeRecord>,
}

impl Database {
    /// Every change stored here after `since` (this site's `db_version`), except those made by
    /// `exclude` (the peer asking, which has them already) and those merged from it (see
    /// [`apply_changes_from`](Self::apply_changes_from)). Loads them all; see
    /// [`for_each_change`](Self::for_each_change) to stream large sets.
    pub fn changes_since(&self, since: u64, exclude: Option<SiteId>) -> Result<ChangeSet> {
        let mut changes = Vec::new();
        let db_version = self.for_each_change(since, exclude, 4096, |batch| {
            changes.extend_from_slice(batch);
            Ok(())
        })?;
        Ok(ChangeSet {
            site: self.site_id(),
            db_version,
            changes,
        })
    }

    /// Streams the changes after `since` to `sink` in batches of about `batch` changes (a
    /// row's changes are never split between batches); returns this database's `db_version`
    /// when the read began. Every change stored up to that version is sent, with its row's
    /// values as they are when its row is read.
    ///
    /// The rows are read a page at a time (about two batches, at most 4,096 rows), each page
    /// from a snapshot of its own, and `sink` runs between pages with no connection held: a
    /// peer that takes its changes slowly holds up no other reader, and no checkpoint. Rows
    /// written during the read may be sent already; they are sent again next time (merging is
    /// idempotent). Each page is read from a snapshot whose change log is folded into the clock
    /// records, so a row's values and versions always agree. A table that starts or stops
    /// syncing, or whose columns change, during the read is read as the schema is at each page.
    /// A peer that is nearly up to date (live sync) gets its changes by looking up the rows
    /// written lately; others by a scan of the clock records in key order (of edges, in edge id
    /// order). (When a snapshot
    /// would hold up writers, with no WAL reader connection, or when other writers keep logging
    /// changes, a page is read holding the write lock, which is released before `sink` runs. A
    /// read-only handle, which can fold nothing, reads every page from one snapshot, and `sink`
    /// runs inside it.)
    pub fn for_each_change(
        &self,
        since: u64,
        exclude: Option<SiteId>,
        batch: usize,
        mut sink: impl FnMut(&[ChangeRecord]) -> Result<()>,
    ) -> Result<u64> {
        let mut reading = self.reading(since, exclude, batch, Points::None);
        self.read(&mut reading, &mut |changes, _| sink(changes))
    }

    /// [`for_each_change`](Self::for_each_change) for the peer `peer`, able to go on from
    /// where an interrupted read stopped. While it scans the clock records (not for a peer
    /// nearly up to date), it passes `sink`, with a batch after at least `every` changes since
    /// the last, a [`ResumePoint`]: every change of the read in the rows before it has been
    /// passed (the first is recorded durably before it goes out, one disk sync per read). A
    /// later read with the same `since` given that point (`resume`) scans on from there, then
    /// reads what changed after the interrupted read began in the rows before the point:
    /// together they send what a whole read would, and no change twice (unless written while
    /// the reads ran). A point this database did not give `peer` for that `since` (one of
    /// another database, or one a restored backup of this one never gave) is ignored: the read
    /// starts from the beginning. A read-only handle, which cannot record the points it gives,
    /// gives none.
    pub fn for_each_change_resuming(
        &self,
        since: u64,
        peer: SiteId,
        batch: usize,
        every: usize,
        resume: Option<&ResumePoint>,
        mut sink: impl FnMut(&[ChangeRecord], Option<ResumePoint>) -> Result<()>,
    ) -> Result<u64> {
        let exclude = Some(peer);
        if self.is_read_only() {
            return self.for_each_change(since, exclude, batch, |changes| sink(changes, None));
        }
        let Some(from) = self.resumable(resume, since, peer)? else {
            let mut reading = self.reading(since, exclude, batch, Points::AtReadStart);
            reading.points_every = every;
            return self.read(&mut reading, &mut sink);
        };
        // The rest of the interrupted scan, whose points still say its `db_version` (what
        // was sent before it covers no later one)...
        let mut rest = self.reading(since, exclude, batch, Points::At(from.db_version));
        rest.points_every = every;
        rest.plan = Plan::Scan {
            coll: from.coll,
            after: Some(from.after.clone()),
        };
        // Every change up to this version is sent once both reads are done: the rows past
        // the point are read (each at this version or later) by the first, those before it
        // by the second (which begins later). A change past the point made after the first
        // read passed its row, before the second began, goes next time.
        let db_version = self.db_version()?;
        self.read(&mut rest, &mut sink)?;
        // ... then what changed after it began in the part it had passed (the rest just went
        // out whole).
        let mut newer = self.reading(from.db_version, exclude, batch, Points::None);
        newer.upto = Some((from.coll, from.after));
        self.read(&mut newer, &mut sink)?;
        Ok(db_version)
    }

    /// Streams to `sink`, in batches of about `batch` changes, every change of the tables and
    /// columns `wanted` (all of a table's, or only those of one column), those the asking peer
    /// made too: what a peer asks for when they arrived there after it left their changes out,
    /// or when it made a table it had dropped again (see [`refetching`](Self::refetching); its
    /// own rows come back to it, and its own changes it has merge as no-ops). Names that are
    /// not synced tables here are passed over.
    pub fn for_each_change_of(
        &self,
        wanted: &[Refetch],
        batch: usize,
        mut sink: impl FnMut(&[ChangeRecord]) -> Result<()>,
    ) -> Result<()> {
        if wanted.is_empty() {
            return Ok(());
        }
        let mut only: BTreeMap<String, Option<HashSet<String>>> = BTreeMap::new();
        // (In lower case: SQLite's names are ASCII case-insensitive, and the peer's may be
        // cased otherwise.)
        for w in wanted {
            let table = w.table.to_ascii_lowercase();
            let columns = only.entry(table).or_insert_with(|| Some(HashSet::new()));
            match (&w.column, columns) {
                (Some(column), Some(columns)) => {
                    columns.insert(column.to_ascii_lowercase());
                }
                (None, columns) => *columns = None,
                (Some(_), None) => {}
            }
        }
        let mut reading = self.reading(0, None, batch, Points::None);
        reading.emitter.only = Some(Arc::new(only));
        let (collections, _) = self.replication().collections_cached();
        reading.emitter.reload(&collections);
        self.read(&mut reading, &mut |changes, _| sink(changes))?;
        Ok(())
    }

    /// `point`, decoded, if this database gave it to `peer` in a read after `since` and the
    /// position fits its collection (an edge id in edges, a key elsewhere).
    fn resumable(
        &self,
        point: Option<&ResumePoint>,
        since: u64,
        peer: SiteId,
    ) -> Result<Option<Position>> {
        let Some(p) = point.and_then(|p| p.decode().ok()) else {
            return Ok(None);
        };
        if p.producer != self.site_id()
            || p.since != since
            || p.db_version > self.points_issued(peer)?
            || p.db_version > self.db_version()?
        {
            return Ok(None);
        }
        let (collections, _) = self.replication().collections_cached();
        let fits = match collections.iter().find(|c| c.id == p.coll).map(|c| &c.kind) {
            Some(Kind::Edges) => matches!(p.after, SqlValue::Integer(_)),
            Some(_) => matches!(p.after, SqlValue::Blob(_)),
            None => true,
        };
        Ok(fits.then_some(p))
    }

    /// A read of the changes after `since`, from the start.
    fn reading(
        &self,
        since: u64,
        exclude: Option<SiteId>,
        batch: usize,
        points: Points,
    ) -> Reading {
        let (collections, stamp) = self.replication().collections_cached();
        Reading {
            since,
            exclude,
            emitter: Emitter::new(&collections, since),
            stamp,
            db_version: 0,
            plan: Plan::Start,
            batch: batch.max(1),
            points,
            upto: None,
            points_every: 0,
            unmarked: 0,
            site: self.site_id(),
        }
    }

    /// Runs `reading` to its end, passing the changes to `sink`; returns its `db_version`.
    fn read(
        &self,
        reading: &mut Reading,
        sink: &mut impl FnMut(&[ChangeRecord], Option<ResumePoint>) -> Result<()>,
    ) -> Result<u64> {
        let mut out = Batches::default();
        if self.is_read_only() {
            self.read_in_one_snapshot(reading, &mut out, sink)?;
        }
        // The points a read gives are recorded (once) before the first goes out.
        let mut issued = false;
        while !reading.done() {
            self.read_page(reading, &mut out)?;
            let issue = match (reading.points, reading.exclude) {
                (Points::AtReadStart, Some(peer)) => Some((peer, reading.db_version)),
                _ => None,
            };
            out.send_full(reading, &mut |changes, point| {
                if let (Some(_), Some((peer, db_version)), false) = (&point, issue, issued) {
                    self.issue_points(peer, db_version)?;
                    issued = true;
                }
                sink(changes, point)
            })?;
        }
        if !out.changes.is_empty() {
            sink(&out.changes, None)?;
        }
        Ok(reading.db_version)
    }

    /// Reads every page from one snapshot, with `sink` running inside it: how a read-only
    /// handle reads, since it cannot fold what other handles log while it reads, and holds up
    /// no writer of its own.
    fn read_in_one_snapshot(
        &self,
        reading: &mut Reading,
        out: &mut Batches,
        sink: &mut impl FnMut(&[ChangeRecord], Option<ResumePoint>) -> Result<()>,
    ) -> Result<()> {
        for _ in 0..FOLD_ATTEMPTS {
            // Fails, saying why, when the log holds changes.
            self.settle_clock()?;
            let read = self.engine().with_read_conn(|conn| {
                while !reading.done() {
                    if !reading.page(conn, self, out)? {
                        return Ok(false);
                    }
                    out.send_full(reading, sink)?;
                }
                Ok(true)
            })?;
            if read {
                return Ok(());
            }
        }
        self.settle_clock()
    }

    /// Reads the next page of `reading` into `out`, from a snapshot without logged changes:
    /// the log is folded when a snapshot holds some, and the page read again.
    fn read_page(&self, reading: &mut Reading, out: &mut Batches) -> Result<()> {
        #[cfg(test)]
        let attempts = if READ_LOCKED.get() { 0 } else { FOLD_ATTEMPTS };
        #[cfg(not(test))]
        let attempts = FOLD_ATTEMPTS;
        if self.engine().snapshots_let_writers_commit() {
            for _ in 0..attempts {
                if self
                    .engine()
                    .with_read_conn(|conn| reading.page(conn, self, out))?
                {
                    return Ok(());
                }
                self.settle_clock()?;
            }
        }
        // No such snapshot (no WAL reader), or other writers keep logging in between: fold and
        // read holding the write lock.
        self.transaction(|db| {
            db.settle_clock()?;
            if db
                .engine()
                .with_read_conn(|conn| reading.page(conn, db, out))?
            {
                Ok(())
            } else {
                Err(Error::internal(
                    "the change log was folded but is not empty",
                ))
            }
        })
    }
}

/// Rows read from one snapshot by [`Database::for_each_change`] at most (a page also ends at
/// two batches of changes).
const PAGE_ROWS: usize = 4096;

/// A read of changes under way.
struct Reading {
    since: u64,
    exclude: Option<SiteId>,
    /// Turns clock records into changes, for the synced collections as the page's snapshot
    /// has them.
    emitter: Emitter,
    /// What the emitter's collections were read from (at first, this handle's cache; `None`
    /// when that is not known).
    stamp: Option<ShapeStamp>,
    /// The `db_version` when the first page was read.
    db_version: u64,
    plan: Plan,
    /// Changes per batch (at least; a row's changes are never split).
    batch: usize,
    /// Which `db_version` the resume points of a scan name.
    points: Points,
    /// Rows past this position (a collection, and a key or edge id in it) are left out.
    upto: Option<(u32, SqlValue)>,
    /// Changes between two resume points, at least, and those passed since the last.
    points_every: usize,
    unmarked: usize,
    /// This database's site id (the points' producer).
    site: SiteId,
}

/// Whether a read's scan passes resume points, and which `db_version` they name.
#[derive(Clone, Copy)]
enum Points {
    None,
    /// The read's own (when its first page was read).
    AtReadStart,
    /// An earlier read's, which this one goes on with.
    At(u64),
}

impl Reading {
    /// The resume point after the row at `after` of collection `coll`, when scanning.
    fn point(&self, coll: u32, after: SqlValue) -> Option<ResumePoint> {
        let db_version = match self.points {
            Points::None => return None,
            Points::AtReadStart => self.db_version,
            Points::At(v) => v,
        };
        ResumePoint::encode(&Position {
            producer: self.site,
            since: self.since,
            db_version,
            coll,
            after,
        })
    }
}

/// Changes read and not sent yet, and where the full batches among them end.
#[derive(Default)]
struct Batches {
    changes: Vec<ChangeRecord>,
    /// The end of each full batch (each at the end of a row), and when scanning, that row's
    /// collection and scan position.
    ends: Vec<(usize, Option<(u32, SqlValue)>)>,
}

impl Batches {
    /// Passes the full batches to `sink`, with resume points when `reading` passes them; the
    /// rest waits for more rows.
    fn send_full(
        &mut self,
        reading: &mut Reading,
        sink: &mut impl FnMut(&[ChangeRecord], Option<ResumePoint>) -> Result<()>,
    ) -> Result<()> {
        let mut start = 0;
        for (end, at) in self.ends.drain(..) {
            reading.unmarked += end - start;
            let point = at
                .filter(|_| reading.unmarked >= reading.points_every)
                .and_then(|(coll, after)| reading.point(coll, after));
            if point.is_some() {
                reading.unmarked = 0;
            }
            sink(&self.changes[start..end], point)?;
            start = end;
        }
        self.changes.drain(..start);
        self.ends.clear();
        Ok(())
    }
}

/// Which rows a read of changes reads next.
enum Plan {
    /// The first page decides.
    Start,
    /// The rows written lately, from `next` on.
    Rows {
        rows: Vec<(u32, Box<[u8]>)>,
        next: usize,
    },
    /// Every clock record of the collections with ids from `coll` on: first those of the
    /// first such collection after `after` (a key, or an edge id for edges; `None`: from the
    /// first).
    Scan {
        coll: u32,
        after: Option<rusqlite::types::Value>,
    },
    Done,
}

impl Reading {
    /// Whether every page has been read.
    fn done(&self) -> bool {
        matches!(self.plan, Plan::Done)
    }

    /// Reads the next page into `out` and moves the plan past it; false (with nothing read)
    /// when the snapshot holds logged changes not folded into the clock.
    fn page(
        &mut self,
        conn: &rusqlite::Connection,
        db: &Database,
        out: &mut Batches,
    ) -> Result<bool> {
        let repl = db.replication();
        // The first read starts the snapshot; what is listed as recent is read after it, so it
        // covers every commit the snapshot holds.
        if repl.log_has_changes(conn)? {
            return Ok(false);
        }
        if let Plan::Start = self.plan {
            let (db_version, by): (i64, Option<i64>) = conn
                .prepare_cached(
                    "SELECT (SELECT value FROM _pluresdb_meta WHERE key = 'db_version'),
                            (SELECT value FROM _pluresdb_meta WHERE key = 'db_version_by')",
                )?
                .query_row([], |r| {
                    Ok((r.get::<_, Option<i64>>(0)?.unwrap_or(0), r.get(1)?))
                })?;
            self.db_version = db_version as u64;
            let recent =
                repl.recent
                    .lock()
                    .since(self.since, self.db_version, by == Some(repl.token));
            self.plan = match recent {
                Some(rows) => Plan::Rows { rows, next: 0 },
                None => Plan::Scan {
                    coll: 0,
                    after: None,
                },
            };
        }
        // A table that starts or stops syncing, or whose columns change, since this handle
        // loaded them (another process did it) or between pages: read as the snapshot has it.
        let stamp = ShapeStamp::read(conn)?;
        if self.stamp.as_ref() != Some(&stamp) {
            let collections: Vec<Arc<Collection>> =
                Collections::load(conn)?.iter().cloned().collect();
            self.emitter.reload(&collections);
            self.stamp = Some(stamp);
        }
        self.emitter.sites = Sites::load(conn, self.exclude, self.since)?;
        let emitter = &mut self.emitter;
        let batch = self.batch;
        // A page ends after a row that brings it to two batches (about what the sender queues
        // while the next page is read), or after PAGE_ROWS rows.
        let first = out.changes.len();
        // Only a scan's position says which rows are behind it.
        let scanning = matches!(self.plan, Plan::Scan { .. });
        let upto = self.upto.as_ref();
        // Per row: where a scan goes on after it, whether the page is full, and whether the
        // row is past `upto` (and left out).
        let mut emit =
            |emitter: &mut Emitter, found: Found| -> Result<(rusqlite::types::Value, bool, bool)> {
                let Found {
                    tbl,
                    key,
                    cl,
                    ver,
                    vals,
                    cursor,
                } = found;
                let Ok(tbl) = u32::try_from(tbl) else {
                    return Ok((cursor, false, false));
                };
                if upto.is_some_and(|upto| is_past(tbl, &cursor, upto)) {
                    return Ok((cursor, false, true));
                }
                // A live row of a table whose row is gone was deleted by another program:
                // that write does not sync (`check` reports it), and peers must not get a
                // row of NULLs for it.
                if vals.is_none() && cl % 2 == 1 && emitter.is_table(tbl) {
                    return Ok((cursor, false, false));
                }
                let key = keys::unpack(&key)?;
                let clock = RowClock::decode(&ver)?;
                let vals = match vals {
                    Some(b) => keys::unpack_values(&b)?,
                    None => Vec::new(),
                };
                emitter.row(tbl, key, cl as u64, &clock, vals, &mut out.changes)?;
                let start = out.ends.last().map_or(0, |(end, _)| *end);
                if out.changes.len() - start >= batch {
                    let at = scanning.then(|| (tbl, cursor.clone()));
                    out.ends.push((out.changes.len(), at));
                }
                Ok((cursor, out.changes.len() - first >= 2 * batch, false))
            };
        let since = self.since as i64;
        // Rows read (or looked up) in this page.
        let mut rows_read = 0;
        match &mut self.plan {
            Plan::Start | Plan::Done => {}
            Plan::Rows { rows, next } => {
                // Sorted by collection: one statement per collection, one lookup per row.
                // (With a lookup of its packed clocks, if it has some.)
                let mut stmt: Option<(u32, rusqlite::CachedStatement<'_>, Option<packs::Lookup>)> =
                    None;
                let mut full = false;
                while *next < rows.len() && !full && rows_read < PAGE_ROWS {
                    let (coll, key) = &rows[*next];
                    *next += 1;
                    rows_read += 1;
                    if stmt.as_ref().is_none_or(|(c, _, _)| c != coll) {
                        let Some(sql) = emitter.sql(*coll, true) else {
                            continue;
                        };
                        let packed = emitter.is_table(*coll) && packs::any(conn, *coll)?;
                        let lookup = packed.then(|| packs::Lookup::new(*coll));
                        stmt = Some((*coll, conn.prepare_cached(sql)?, lookup));
                    }
                    let (_, stmt, packed) = stmt.as_mut().expect("just prepared");
                    let mut found = stmt.query(rusqlite::params![since, &**key])?;
                    let mut any = false;
                    while let Some(row) = found.next()? {
                        any = true;
                        full = emit(emitter, Found::of_record(row)?)?.1;
                    }
                    if !any
                        && let Some(lookup) = packed
                        && let Some(entry) = lookup.changed_since(conn, key, self.since)?
                    {
                        let found = emitter.packed(conn, *coll, entry)?;
                        full = emit(emitter, found)?.1;
                    }
                }
                if *next == rows.len() {
                    self.plan = Plan::Done;
                }
            }
            Plan::Scan { coll, after } => loop {
                let Some(id) = emitter.next_collection(*coll).filter(|&id| {
                    // (A scan with an end reads no collection past it.)
                    upto.is_none_or(|(end, _)| id <= *end)
                }) else {
                    self.plan = Plan::Done;
                    break;
                };
                // A scan resumed in a collection that is gone goes on at the next one's start.
                if id != *coll {
                    (*coll, *after) = (id, None);
                }
                let Some(sql) = emitter.sql(id, false) else {
                    (*coll, *after) = (id + 1, None);
                    continue;
                };
                let mut stmt = conn.prepare_cached(sql)?;
                let limit = PAGE_ROWS - rows_read;
                let from = after.clone().unwrap_or_else(|| emitter.scan_start(id));
                let mut found = stmt.query(rusqlite::params![since, &from, limit as i64])?;
                let (mut read, mut full) = (0, false);
                let mut past = false;
                // The page stops short of the collection's end: a source was read to its limit.
                let mut cut = false;
                if emitter.is_table(id) && packs::any_since(conn, id, self.since)? {
                    // Records and packed clocks, merged in key order; a packed row's values
                    // are read when it is emitted.
                    let SqlValue::Blob(from) = &from else {
                        return Err(Error::internal("a table's scan position is not a key"));
                    };
                    // A page ends at two batches of changes: rows past that are not read.
                    let cap = limit.min(2 * batch + 1);
                    let entries = packs::page(conn, id, self.since, from, cap)?;
                    let all_entries = entries.len() < cap;
                    let mut entries = entries.into_iter().peekable();
                    let mut fetched = 0;
                    let mut next_record = |fetched: &mut usize| -> Result<Option<Found>> {
                        match found.next()? {
                            Some(row) => {
                                *fetched += 1;
                                Found::of_record(row).map(Some)
                            }
                            None => Ok(None),
                        }
                    };
                    let mut record = next_record(&mut fetched)?;
                    while !full && !past {
                        let all_records = fetched < limit;
                        let from_record = match (&record, entries.peek()) {
                            (Some(r), Some(e)) => r.key.as_slice() < &*e.key,
                            (Some(_), None) if all_entries => true,
                            (None, Some(_)) if all_records => false,
                            (None, None) if all_entries && all_records => break,
                            _ => {
                                cut = true;
                                break;
                            }
                        };
                        let row = if from_record {
                            let row = record.take().expect("compared");
                            record = next_record(&mut fetched)?;
                            row
                        } else {
                            let entry = entries.next().expect("compared");
                            emitter.packed(conn, id, entry)?
                        };
                        let (cursor, page_full, row_past) = emit(emitter, row)?;
                        (*after, full, past) = (Some(cursor), page_full, row_past);
                        read += 1;
                    }
                } else {
                    while !full
                        && !past
                        && let Some(row) = found.next()?
                    {
                        let (cursor, page_full, row_past) = emit(emitter, Found::of_record(row)?)?;
                        (*after, full, past) = (Some(cursor), page_full, row_past);
                        read += 1;
                    }
                }
                rows_read += read;
                if past {
                    // The scan's end (rows in scan order from here on are all past it).
                    self.plan = Plan::Done;
                    break;
                }
                if full || cut || read == limit {
                    break;
                }
                // The collection is done.
                *coll += 1;
                *after = None;
            },
        }
        Ok(true)
    }
}

/// A row a page reads: its clock (a record, or an entry of a pack), its values (packed; `None`
/// when the row is gone) and where a scan goes on after it.
struct Found {
    tbl: i64,
    key: Vec<u8>,
    cl: i64,
    ver: Vec<u8>,
    vals: Option<Vec<u8>>,
    cursor: SqlValue,
}

impl Found {
    /// A row read by [`branch_sql`].
    fn of_record(row: &rusqlite::Row<'_>) -> Result<Found> {
        Ok(Found {
            tbl: row.get(0)?,
            key: row.get(1)?,
            cl: row.get(2)?,
            ver: row.get(3)?,
            vals: match row.get_ref(4)? {
                rusqlite::types::ValueRef::Blob(b) => Some(b.to_vec()),
                _ => None,
            },
            cursor: row.get(5)?,
        })
    }
}

/// Whether the row at scan position `cursor` of collection `coll` comes after `upto` in scan
/// order (collections by id; keys as SQLite orders blobs, edge ids as integers).
fn is_past(coll: u32, cursor: &SqlValue, upto: &(u32, SqlValue)) -> bool {
    match coll.cmp(&upto.0) {
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Equal => match (cursor, &upto.1) {
            (SqlValue::Integer(a), SqlValue::Integer(b)) => a > b,
            (SqlValue::Blob(a), SqlValue::Blob(b)) => a > b,
            _ => false,
        },
    }
}

/// The SQL that reads one collection's rows changed after `?1` with their current values: the
/// one with key `?2` (`one_key`), or the first `?3` in key order whose keys come after `?2`.
/// The last column is where a scan's next page starts (the key; an edge's id for edges).
fn branch_sql(coll: &Collection, one_key: bool) -> Option<String> {
    let part = |i: usize| format!("pluresdb_key_part(c.key, {i})");
    let (join, vals) = match &coll.kind {
        Kind::Nodes => (
            format!("LEFT JOIN _pluresdb_nodes r ON r.id = {}", part(0)),
            "pluresdb_pack(r.type, r.data, r.vector)".to_owned(),
        ),
        // Edges keep their clocks in their rows.
        Kind::Edges => return Some(edges_sql(one_key)),
        Kind::Table(info) if info.exists => {
            let fields: Vec<String> = info
                .fields
                .iter()
                .map(|f| format!("r.{}", quote(f)))
                .collect();
            // NULL when the row is gone (deleted by another program): it is not sent.
            (
                format!(
                    "LEFT JOIN {} r ON {}",
                    quote(&coll.name),
                    info.row_of_clock_key()
                ),
                format!(
                    "CASE WHEN r.{} IS NOT NULL THEN pluresdb_pack({}) END",
                    quote(&info.pk[0]),
                    fields.join(", ")
                ),
            )
        }
        Kind::Table(_) => return None,
    };
    Some(format!(
        "SELECT c.tbl, c.key, c.cl, c.ver, {vals}, c.key FROM _pluresdb_clock c {join} WHERE c.tbl = {} AND c.seq > ?1{}",
        coll.id,
        if one_key {
            " AND c.key = ?2"
        } else {
            " AND c.key > ?2 ORDER BY c.key LIMIT ?3"
        }
    ))
}

/// [`branch_sql`] for edges, whose clocks are in their rows: a scan goes in edge id order (the
/// last column, where the next page starts), a lookup finds the edge by its names.
fn edges_sql(one_key: bool) -> String {
    format!(
        "SELECT {EDGES_ID}, pluresdb_pack(s.id, r.name, d.id), e.cl, e.ver, pluresdb_pack(e.data),
                e.eid
         FROM _pluresdb_edges e
         JOIN _pluresdb_nodes s ON s.rid = e.src
         JOIN _pluresdb_relations r ON r.id = e.rel
         JOIN _pluresdb_nodes d ON d.rid = e.dst
         WHERE e.ver IS NOT NULL AND e.seq > ?1{}",
        if one_key {
            " AND s.id = pluresdb_key_part(?2, 0) AND r.name = pluresdb_key_part(?2, 1)
              AND d.id = pluresdb_key_part(?2, 2)"
        } else {
            " AND e.eid > ?2 ORDER BY e.eid LIMIT ?3"
        }
    )
}

/// Site ids by index, the index of the excluded site, and the merge transactions that brought
/// its changes (see [`received`](super::received)).
#[derive(Default)]
struct Sites {
    by_idx: HashMap<u32, SiteId>,
    exclude: Option<u32>,
    from_exclude: HashSet<u64>,
}

impl Sites {
    fn load(conn: &rusqlite::Connection, exclude: Option<SiteId>, since: u64) -> Result<Sites> {
        let by_idx: HashMap<u32, SiteId> = read_sites(conn)?.into_iter().collect();
        let excluded = by_idx
            .iter()
            .find(|(_, site)| Some(**site) == exclude)
            .map(|(idx, _)| *idx);
        // Also for a peer asking for everything (its cursors set back): what it left out was
        // never among what it sent.
        let from_exclude = match excluded {
            Some(idx) => received::from_site(conn, idx, since)?,
            None => HashSet::new(),
        };
        Ok(Sites {
            by_idx,
            exclude: excluded,
            from_exclude,
        })
    }

    /// The version of `stamp` when it should be sent (stored after `since`, neither made by
    /// the peer nor merged from it).
    fn wanted(&self, stamp: Stamp, since: u64) -> Result<Option<Version>> {
        if stamp.seq <= since
            || Some(stamp.site) == self.exclude
            || self.from_exclude.contains(&stamp.seq)
        {
            return Ok(None);
        }
        let site = self.by_idx.get(&stamp.site).ok_or_else(|| {
            Error::new(
                crate::ErrorKind::Corrupt,
                format!(
                    "row clock names site #{}, which _pluresdb_sites does not have",
                    stamp.site
                ),
            )
        })?;
        Ok(Some(Version::new(Hlc::from_u64(stamp.hlc), *site)))
    }
}

/// What turning clock records into change records keeps across rows and pages: each synced
/// collection's names (one copy per collection and field, not one per change) and the SQL
/// that reads it, and the peer's cursor.
struct Emitter {
    since: u64,
    /// The sites, as the page being read has them (a merge may add some between pages).
    sites: Sites,
    /// The synced collections by id.
    sources: BTreeMap<u32, Source>,
    /// The sentinel's (empty) field name.
    sentinel: Arc<str>,
    /// Node field names (`data.<field>`) met so far.
    node_fields: HashMap<String, Arc<str>>,
    /// Only these tables are read, and of a table with columns named, only those columns'
    /// changes (see [`Database::for_each_change_of`]).
    only: Option<Arc<Only>>,
}

/// Tables by name, each with the columns whose changes are read (`None`: all of them, and
/// its rows' creations and deletions), all in lower case.
type Only = BTreeMap<String, Option<HashSet<String>>>;

/// One synced collection as a read of changes uses it.
struct Source {
    coll: Arc<Collection>,
    /// The collection's name and its fields' names (table columns; `data` for edges; `type`
    /// and `vector` for nodes).
    name: Arc<str>,
    fields: Vec<Arc<str>>,
    /// [`branch_sql`] for a page of rows (`[0]`) and for one row (`[1]`), made when first
    /// used.
    sql: [OnceCell<Option<String>>; 2],
    /// For a table, the SQL that reads a row's values by its key (`?1`), for packed clocks.
    values: OnceCell<String>,
    /// Per field, whether its changes are read (`None`: all, with the rows' creations and
    /// deletions; see [`Emitter::only`]).
    read_fields: Option<Vec<bool>>,
}

impl Emitter {
    fn new(collections: &[Arc<Collection>], since: u64) -> Emitter {
        let mut emitter = Emitter {
            since,
            sites: Sites::default(),
            sources: BTreeMap::new(),
            sentinel: "".into(),
            node_fields: HashMap::new(),
            only: None,
        };
        emitter.reload(collections);
        emitter
    }

    /// Takes `collections` as the synced ones from now on.
    fn reload(&mut self, collections: &[Arc<Collection>]) {
        let only = self.only.clone();
        // Of the collections `only` names, with the fields it names.
        let wanted = |c: &Collection| match (&only, &c.kind) {
            (None, _) => Some(None),
            (Some(only), Kind::Table(_)) => only.get(&c.name.to_ascii_lowercase()).cloned(),
            (Some(_), _) => None,
        };
        self.sources = collections
            .iter()
            .filter_map(|c| Some((c, wanted(c)?)))
            .map(|(c, only_fields)| {
                let (name, fields): (&str, Vec<&str>) = match &c.kind {
                    Kind::Nodes => (NODES, vec!["type", "vector"]),
                    Kind::Edges => (EDGES, vec!["data"]),
                    Kind::Table(info) => {
                        (&c.name, info.fields.iter().map(String::as_str).collect())
                    }
                };
                let read_fields = only_fields.map(|only| {
                    let read = |f: &&str| only.contains(&f.to_ascii_lowercase());
                    fields.iter().map(read).collect()
                });
                let source = Source {
                    coll: c.clone(),
                    name: name.into(),
                    fields: fields.into_iter().map(Arc::from).collect(),
                    sql: Default::default(),
                    values: OnceCell::new(),
                    read_fields,
                };
                (c.id, source)
            })
            .collect();
    }

    /// The id of the first synced collection whose id is `from` or more.
    fn next_collection(&self, from: u32) -> Option<u32> {
        self.sources.range(from..).next().map(|(&id, _)| id)
    }

    /// Where a scan of collection `id` starts: before its first key (edges: its first id).
    fn scan_start(&self, id: u32) -> rusqlite::types::Value {
        match self.sources.get(&id).map(|s| &s.coll.kind) {
            Some(Kind::Edges) => rusqlite::types::Value::Integer(0),
            _ => rusqlite::types::Value::Blob(Vec::new()),
        }
    }

    /// Whether collection `id` is a synced table (whose clocks may be packed).
    fn is_table(&self, id: u32) -> bool {
        self.sources
            .get(&id)
            .is_some_and(|s| matches!(&s.coll.kind, Kind::Table(info) if info.exists))
    }

    /// A pack entry of table `id` as a row read, with the row's values.
    fn packed(
        &self,
        conn: &rusqlite::Connection,
        id: u32,
        entry: packs::Entry<'static>,
    ) -> Result<Found> {
        let source = self
            .sources
            .get(&id)
            .ok_or_else(|| Error::internal("a packed clock of a collection not read"))?;
        let Kind::Table(info) = &source.coll.kind else {
            return Err(Error::internal(
                "a packed clock of a collection that is not a table",
            ));
        };
        let sql = source.values.get_or_init(|| {
            let fields: Vec<String> = (info.fields.iter())
                .map(|f| format!("r.{}", quote(f)))
                .collect();
            format!(
                "SELECT pluresdb_pack({}) FROM {} r WHERE {}",
                fields.join(", "),
                quote(&source.coll.name),
                info.row_of_key("?1")
            )
        });
        let key = entry.key.into_owned();
        let vals = conn
            .prepare_cached(sql)?
            .query_row([&key], |r| r.get(0))
            .optional()?;
        Ok(Found {
            tbl: i64::from(id),
            cursor: SqlValue::Blob(key.clone()),
            key,
            cl: entry.cl as i64,
            ver: entry.ver.to_vec(),
            vals,
        })
    }

    /// The SQL that reads collection `id`'s changed rows: one (`one_key`), or a page.
    fn sql(&self, id: u32, one_key: bool) -> Option<&str> {
        let source = self.sources.get(&id)?;
        source.sql[usize::from(one_key)]
            .get_or_init(|| branch_sql(&source.coll, one_key))
            .as_deref()
    }

    /// Appends to `out` the changes of one row that the peer lacks: its sentinel, then its
    /// fields, with their current values (`vals`, as `branch_sql` reads them).
    /// Rows of collections not synced (any more) are skipped.
    fn row(
        &mut self,
        tbl: u32,
        key: Vec<Value>,
        cl: u64,
        clock: &RowClock,
        vals: Vec<Value>,
        out: &mut Vec<ChangeRecord>,
    ) -> Result<()> {
        let (since, sites) = (self.since, &self.sites);
        let Some(Source {
            coll,
            name,
            fields,
            read_fields,
            ..
        }) = self.sources.get(&tbl)
        else {
            return Ok(());
        };
        let key: Arc<[Value]> = key.into();
        let mut push = |field: &Arc<str>, stamp: Option<Stamp>, value: Option<Value>| {
            if let Some(stamp) = stamp
                && let Some(version) = sites.wanted(stamp, since)?
            {
                out.push(ChangeRecord {
                    collection: name.clone(),
                    key: key.clone(),
                    field: field.clone(),
                    value,
                    version,
                    cl,
                });
            }
            Ok::<_, Error>(())
        };
        // A creation version of 0 is not known yet (only fields of the life were seen).
        push(
            &self.sentinel,
            (clock.sentinel.hlc != 0 && read_fields.is_none()).then_some(clock.sentinel),
            None,
        )?;
        if !is_alive(cl) {
            return Ok(());
        }
        let mut vals = vals.into_iter();
        let mut next = || Some(vals.next().unwrap_or(Value::Null));
        match &coll.kind {
            Kind::Table(info) => {
                for (i, f) in fields.iter().enumerate() {
                    let value = next();
                    if read_fields.as_ref().is_none_or(|read| read[i]) {
                        push(f, clock.column(f, info.added_at(i)), value)?;
                    }
                }
            }
            Kind::Edges => push(&fields[0], clock.field("data"), next())?,
            Kind::Nodes => {
                let (node_type, data, vector) = (next(), next(), next());
                push(&fields[0], clock.field("type"), node_type)?;
                push(&fields[1], clock.field("vector"), vector)?;
                let data = match data {
                    Some(Value::Text(t)) => {
                        serde_json::from_str::<serde_json::Map<String, Json>>(&t)
                            .unwrap_or_default()
                    }
                    _ => serde_json::Map::new(),
                };
                let mut names: Vec<String> = data.keys().map(|k| format!("data.{k}")).collect();
                names.extend(
                    clock
                        .named_fields()
                        .filter(|n| n.starts_with("data."))
                        .map(str::to_owned),
                );
                names.sort();
                names.dedup();
                for n in names {
                    let value = data
                        .get(&n["data.".len()..])
                        .map(|v| Value::Text(v.to_string()));
                    let stamp = clock.field(&n);
                    let field = self
                        .node_fields
                        .entry(n)
                        .or_insert_with_key(|n| n.as_str().into());
                    push(field, stamp, value)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{PAGE_ROWS, READ_LOCKED};
    use crate::{Database, OpenOptions, Value};

    /// The table `t(id, v NOT NULL)`.
    const T: &str = "CREATE TABLE t(id INTEGER PRIMARY KEY NOT NULL, v TEXT NOT NULL)";

    /// Synced tables made by `tables` (each with columns `id` and `v`), `rows` rows in each,
    /// written by one handle and reopened with a single reader: the new handle has no list of
    /// recent rows, so reading changes scans the clock records.
    fn reopened_with_rows(path: &std::path::Path, tables: &[&str], rows: i64) -> Database {
        {
            let db = Database::open(path).unwrap();
            for name in synced_tables(&db, tables) {
                db.transaction(|tx| {
                    let stmt =
                        tx.prepare(&format!("INSERT INTO {name}(id, v) VALUES (?1, 'x' || ?1)"))?;
                    for i in 0..rows {
                        stmt.run((i,))?;
                    }
                    Ok::<_, crate::Error>(())
                })
                .unwrap();
            }
        }
        OpenOptions::new()
            .readers(1)
            .busy_timeout(Duration::from_millis(100))
            .open(path)
            .unwrap()
    }

    /// Runs the `CREATE TABLE` statements `tables` and syncs the tables; returns their names.
    fn synced_tables<'a>(db: &Database, tables: &[&'a str]) -> Vec<&'a str> {
        let mut names = Vec::new();
        for ddl in tables {
            db.exec(ddl).unwrap();
            let name = ddl.split_whitespace().nth(2).unwrap();
            let name = &name[..name.find('(').unwrap_or(name.len())];
            db.sync_table(name).unwrap();
            names.push(name);
        }
        names
    }

    /// An in-memory peer with the tables made by `tables`, synced.
    fn peer_with(tables: &[&str]) -> Database {
        let peer = Database::open_in_memory().unwrap();
        synced_tables(&peer, tables);
        peer
    }

    fn dump(db: &Database, table: &str) -> Vec<(i64, String)> {
        db.all_as(&format!("SELECT id, v FROM {table} ORDER BY id"), ())
            .unwrap()
    }

    #[test]
    fn a_sink_that_reads_the_database_gets_a_reader_and_whole_rows() {
        let dir = tempfile::tempdir().unwrap();
        let rows = (PAGE_ROWS * 2 + 100) as i64;
        let db = reopened_with_rows(&dir.path().join("db"), &[T], rows);
        // The only reader is free whenever the sink runs: before pages, the read held it for
        // the whole set, and this query failed with "all reader connections stayed in use".
        let mut seen = 0;
        let mut last_key = None;
        db.for_each_change(0, None, 1000, |batch| {
            assert_eq!(
                db.value("SELECT count(*) FROM t", ())?,
                Value::Integer(rows)
            );
            seen += batch.len();
            // A row's changes (its creation and its v) are never split between batches.
            assert_ne!(last_key.as_ref(), Some(&batch[0].key));
            last_key = Some(batch[batch.len() - 1].key.clone());
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, 2 * rows as usize);
    }

    #[test]
    fn rows_written_while_changes_are_read_reach_the_peer_by_the_next_read() {
        let dir = tempfile::tempdir().unwrap();
        let rows = (PAGE_ROWS * 3) as i64;
        let db = reopened_with_rows(&dir.path().join("db"), &[T], rows);
        let peer = peer_with(&[T]);
        let start = db.db_version().unwrap();
        // Between pages: update rows already sent and rows not read yet, delete some of both,
        // and add new ones; every batch the peer merges must hold whole, consistent rows (v
        // is NOT NULL, so a row sent with a stale version and no value would fail).
        let mut round = 0;
        let version = db
            .for_each_change(0, None, 2000, |batch| {
                peer.apply_changes(batch)?;
                round += 1;
                let (early, late) = (round * 7, rows - round * 11);
                db.run(
                    "UPDATE t SET v = 'changed' WHERE id IN (?1, ?2)",
                    (early, late),
                )?;
                db.run("DELETE FROM t WHERE id IN (?1, ?2)", (early + 1, late - 1))?;
                db.run("INSERT INTO t(id, v) VALUES (?1, 'new')", (rows + round,))?;
                Ok(())
            })
            .unwrap();
        assert!(round > 2, "the set came in {round} batches");
        assert_eq!(version, start, "the version is the one the read began at");
        let rest = db.changes_since(version, None).unwrap();
        peer.apply_changes(&rest.changes).unwrap();
        assert_eq!(dump(&peer, "t"), dump(&db, "t"));
        assert_eq!(
            peer.value("SELECT count(*) FROM t WHERE v = 'changed'", ())
                .unwrap(),
            Value::Integer(2 * round)
        );
    }

    #[test]
    fn a_schema_change_between_pages_leaves_the_rest_read_as_the_schema_now_is() {
        // A column of one synced table and the whole of another (no longer synced) are dropped
        // after the first batch: the read goes on without them (it used to fail with "no such
        // column").
        let dir = tempfile::tempdir().unwrap();
        let tables = [
            "CREATE TABLE t(id INTEGER PRIMARY KEY NOT NULL, v TEXT NOT NULL, w TEXT DEFAULT 'w')",
            "CREATE TABLE u(id INTEGER PRIMARY KEY NOT NULL, v TEXT NOT NULL)",
        ];
        let rows = (PAGE_ROWS * 2) as i64;
        let db = reopened_with_rows(&dir.path().join("db"), &tables, rows);
        let peer = peer_with(&tables);
        let mut n = 0;
        let version = db
            .for_each_change(0, None, 1000, |batch| {
                peer.apply_changes(batch)?;
                n += 1;
                if n == 1 {
                    db.exec(
                        "ALTER TABLE t DROP COLUMN w;
                         SELECT pluresdb_unsync_table('u'); DROP TABLE u",
                    )?;
                }
                Ok(())
            })
            .unwrap();
        peer.apply_changes(&db.changes_since(version, None).unwrap().changes)
            .unwrap();
        assert_eq!(dump(&peer, "t"), dump(&db, "t"));
    }

    #[test]
    fn a_read_only_handle_reads_while_another_handle_writes() {
        // A read-only handle cannot fold what a writer logs meanwhile: it reads every page
        // from one snapshot (paging from fresh ones failed with "open it writable").
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let writer = reopened_with_rows(&path, &[T], (PAGE_ROWS * 2) as i64);
        writer.fold_change_log().unwrap();
        let ro = OpenOptions::new().read_only(true).open(&path).unwrap();
        let mut seen = 0;
        ro.for_each_change(0, None, 1000, |batch| {
            seen += batch.len();
            writer.run("UPDATE t SET v = 'later' WHERE id = ?1", (seen as i64,))?;
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, 4 * PAGE_ROWS);
    }

    #[test]
    fn writes_by_two_handles_between_pages_reach_the_peer_by_the_next_read() {
        // Random updates, deletes, replacements and key moves in two tables, by this handle
        // and another, after every batch: the peer merges each batch, then the changes since
        // the version the read returned, and has the same rows.
        let tables = [
            T,
            "CREATE TABLE u(id INTEGER PRIMARY KEY NOT NULL, v TEXT NOT NULL)",
        ];
        let rows = (PAGE_ROWS * 2) as i64;
        for seed in 1..4u64 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("db");
            let db = reopened_with_rows(&path, &tables, rows);
            let other = Database::open(&path).unwrap();
            let peer = peer_with(&tables);
            let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let mut rnd = move |m: i64| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % m as u64) as i64
            };
            let version = db
                .for_each_change(0, None, 500, |batch| {
                    peer.apply_changes(batch)?;
                    for _ in 0..20 {
                        let h = if rnd(2) == 0 { &db } else { &other };
                        let t = ["t", "u"][rnd(2) as usize];
                        let (id, to) = (rnd(rows * 2), rnd(rows * 3));
                        let sql = match rnd(4) {
                            0 => format!("UPDATE {t} SET v = 'c' || ?2 WHERE id = ?1"),
                            1 => format!("DELETE FROM {t} WHERE id = ?1 OR id = ?2"),
                            2 => {
                                format!("INSERT OR REPLACE INTO {t}(id, v) VALUES (?1, 'r' || ?2)")
                            }
                            _ => format!("UPDATE OR IGNORE {t} SET id = ?2 WHERE id = ?1"),
                        };
                        h.run(&sql, (id, to))?;
                    }
                    Ok(())
                })
                .unwrap();
            peer.apply_changes(&db.changes_since(version, None).unwrap().changes)
                .unwrap();
            for t in ["t", "u"] {
                assert!(dump(&peer, t) == dump(&db, t), "seed {seed}: {t} differs");
            }
        }
    }

    #[test]
    fn a_set_read_holding_the_write_lock_reaches_the_sink_after_the_lock_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let db = Database::open(&path).unwrap();
        db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY NOT NULL, v TEXT)")
            .unwrap();
        db.sync_table("t").unwrap();
        db.transaction(|tx| {
            let stmt = tx.prepare("INSERT INTO t(id, v) VALUES (?1, 'x')")?;
            for i in 0..5000 {
                stmt.run((i,))?;
            }
            Ok::<_, crate::Error>(())
        })
        .unwrap();
        // Another handle (as a peer's session would be, waiting for its own write) writes
        // from the sink: it must not wait for the reader's lock.
        let other = OpenOptions::new()
            .busy_timeout(Duration::from_millis(50))
            .open(&path)
            .unwrap();
        let expected = db.db_version().unwrap();
        READ_LOCKED.set(true);
        let mut seen = 0;
        let mut n = 0;
        let version = db.for_each_change(0, None, 1000, |batch| {
            let old =
                |c: &&crate::ChangeRecord| matches!(c.key[0], crate::Value::Integer(i) if i < 5000);
            seen += batch.iter().filter(old).count();
            n += 1;
            other.run(
                "INSERT INTO t(id, v) VALUES (?1, 'from the sink')",
                (100_000 + n,),
            )?;
            Ok(())
        });
        READ_LOCKED.set(false);
        assert_eq!(version.unwrap(), expected);
        // Each row's creation and its v, in batches of 1,000 (and rows the sink wrote, which
        // may be read after it wrote them).
        assert_eq!(seen, 10_000);
        assert!(n >= 10, "{n} batches");
        let rows = other.value("SELECT count(*) FROM t", ()).unwrap();
        assert_eq!(rows, crate::Value::Integer(5000 + n));
    }
}
