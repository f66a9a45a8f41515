//! Change capture: the writer's pre-update hook reports row changes of replicated tables to
//! [`Replication::capture_preupdate`], which encodes them in memory; before the transaction
//! ends (and in batches meanwhile) they are appended to the change log, which is folded into
//! `_pluresdb_clock` with this site's versions before anything reads the clock (see
//! [`changelog`](super::changelog)).
//!
//! A hook rather than triggers: a trigger makes every write to the table a multi-row statement
//! with its own statement journal (each page it touches is copied first) and runs a trigger
//! program per row; the hook costs a function call.

use std::borrow::{Borrow, Cow};
use std::sync::atomic::Ordering;

use rusqlite::Connection;
use rusqlite::hooks::PreUpdateCase;

use pluresdb_crdt::Hlc;

use super::changelog::{self, CaptureBuf, Entries, Entry, Origin};
use super::clock::{MAX_FIELD_BYTES, RowClock, Stamp};
use super::collections::{EDGES_ID, Kind, NODES_ID, TableInfo};
use super::dense_fold;
use super::edge_clock::EdgeStamp;
use super::keys;
use super::packs;
use super::state::Replication;
use crate::engine::WriteObserver;
use crate::error::{Error, Result, user_function_error};
use crate::updated_columns::UpdateMask;
use crate::value::ValueRef;
use crate::wire::put_value;

/// Captured changes are appended to the log in batches of this many bytes while a transaction
/// runs (about 45 bytes per change of a small row).
const FLUSH_AT: usize = 8 << 20;

/// The log is folded into the clock when a flush leaves it holding this many bytes: it bounds
/// the log's size and the time the next sync spends folding it.
const FOLD_AT: u64 = 8 << 20;

/// What happened to a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Insert = 0,
    Update = 1,
    Delete = 2,
}

/// A logged change, with the version it is stored under.
pub(crate) type Stamped<'a> = (Entry<'a>, Stamp);

/// The items of each collection in `items` (sorted by collection), with where they start.
pub(crate) fn by_collection<'i, 'a>(
    items: &'i [Stamped<'a>],
) -> impl Iterator<Item = (usize, &'i [Stamped<'a>])> {
    let mut start = 0;
    items.chunk_by(|a, b| a.0.coll == b.0.coll).map(move |c| {
        start += c.len();
        (start - c.len(), c)
    })
}

/// What a fold of some rows leaves of `items` for the next fold, in order: copied only once a
/// collection had rows folded.
pub(crate) struct Leftover<'i, 'a> {
    items: &'i [Stamped<'a>],
    /// `None`: all of `items` is left so far.
    rest: Option<Vec<Stamped<'a>>>,
    /// Items before this are in `rest`.
    copied: usize,
}

impl<'i, 'a> Leftover<'i, 'a> {
    pub(crate) fn new(items: &'i [Stamped<'a>]) -> Leftover<'i, 'a> {
        Leftover {
            items,
            rest: None,
            copied: 0,
        }
    }

    /// The collection whose items are `coll_items`, at `start`, had rows folded: only `left`
    /// of its rows are left (in order).
    pub(crate) fn keep_only(
        &mut self,
        start: usize,
        coll_items: &[Stamped<'a>],
        left: impl IntoIterator<Item = &'i [Stamped<'a>]>,
    ) {
        let items = self.items;
        let rest = self
            .rest
            .get_or_insert_with(|| Vec::with_capacity(items.len()));
        rest.extend_from_slice(&items[self.copied..start]);
        for row in left {
            rest.extend_from_slice(row);
        }
        self.copied = start + coll_items.len();
    }

    /// What is left.
    pub(crate) fn finish(self) -> Cow<'i, [Stamped<'a>]> {
        match self.rest {
            None => Cow::Borrowed(self.items),
            Some(mut rest) => {
                rest.extend_from_slice(&self.items[self.copied..]);
                Cow::Owned(rest)
            }
        }
    }
}

impl Replication {
    /// Called by the writer's pre-update hook before a row of any table changes: records the
    /// change when the table is replicated (and the write is not a remote change being merged).
    pub(crate) fn capture_preupdate(&self, db: &str, table: &str, case: &PreUpdateCase) {
        if db != "main" {
            return;
        }
        let merging = self.suppress.load(Ordering::Acquire);
        if merging && trigger_depth(case) == 0 {
            return;
        }
        let tables = self.tables.read();
        // SQLite names are case-insensitive (a table renamed to another case stays synced).
        let Some(coll) = tables.iter().find(|c| c.name.eq_ignore_ascii_case(table)) else {
            return;
        };
        let Kind::Table(info) = &coll.kind else {
            return;
        };
        if merging {
            // A trigger run by a merged row wrote a synced row: counted, not recorded (unless
            // it is PluresDB's own, filling an embedding from the merged text).
            if !fills_embeddings_only(info, case) {
                self.trigger_writes.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        let mask = match case {
            PreUpdateCase::Update { .. } => {
                let updated = &self.writer_auth.updated;
                info.update_mask.get(updated, table, &info.pk, &info.fields)
            }
            _ => UpdateMask::ALL,
        };
        let generation = self.tx.generation.load(Ordering::Acquire);
        let mut captured = self.captured.lock();
        let buf = captured.in_transaction(generation);
        let at = Origin {
            coll: coll.id,
            statement: self.statements.load(Ordering::Relaxed),
            hlc: buf.clock_time(self.clock.last().as_u64(), || self.clock.now().as_u64()),
        };
        match capture(info, case, mask, buf, at) {
            Ok(()) => {}
            Err(why) => {
                drop(captured);
                // Shapes are read again before the next statement (and for a retry).
                self.writer_auth
                    .schema_changed
                    .store(true, Ordering::Release);
                self.refuse(format!(
                    "cannot record a change to table {table:?} for sync, so the transaction \
                     cannot commit: {why}"
                ));
            }
        }
    }

    /// Makes the open transaction unable to commit; the first reason given is reported.
    pub(super) fn refuse(&self, why: String) {
        let generation = self.tx.generation.load(Ordering::Acquire);
        self.tx
            .refuse_commit
            .store(generation + 1, Ordering::Release);
        let mut error = self.capture_error.lock();
        if !matches!(&*error, Some((g, _)) if *g == generation) {
            *error = Some((generation, why));
        }
    }

    /// Why the open transaction must not commit: a change in it could not be recorded.
    fn capture_failure(&self) -> Option<Error> {
        let generation = self.tx.generation.load(Ordering::Acquire);
        let mut error = self.capture_error.lock();
        match error.as_ref() {
            Some((g, why)) if *g == generation => Some(Error::invalid(why.clone())),
            Some(_) => {
                *error = None;
                None
            }
            None => None,
        }
    }

    /// Appends every captured change to the change log (inside the open transaction), and
    /// folds the log into the clock when it has grown large.
    pub(crate) fn flush_captured(&self, conn: &Connection) -> Result<()> {
        self.refresh_schema(conn)?;
        let generation = self.tx.generation.load(Ordering::Acquire);
        let (changes, count) = self.captured.lock().in_transaction(generation).take();
        if count == 0 {
            return Ok(());
        }
        let seq = self.tx_seq(conn)?;
        {
            let mut recent = self.recent.lock();
            if recent.room_for(seq, count) {
                for e in Entries::new(&changes, "change") {
                    let e = e?;
                    recent.record(seq, e.coll, e.key);
                    if let Some(key) = e.new_key {
                        recent.record(seq, e.coll, key);
                    }
                }
            }
        }
        let me = self.site_index(conn, self.site)?;
        let pending = changelog::append(conn, seq, me, count, &changes)?;
        if pending >= FOLD_AT {
            self.fold_log(conn)?;
        }
        self.persist_clock(conn)
    }

    /// Brings `_pluresdb_clock` up to date in the open transaction: captured changes are
    /// logged and the log is folded in. Everything that reads or rewrites clock records of SQL
    /// tables calls this first.
    pub(crate) fn settle_clock(&self, conn: &Connection) -> Result<()> {
        self.flush_captured(conn)?;
        self.fold_log(conn)
    }

    /// True when the change log holds changes not in the clock records yet.
    pub(crate) fn log_has_changes(&self, conn: &Connection) -> Result<bool> {
        changelog::has_changes(conn)
    }

    /// Writes the logged changes to the clock, oldest first, and empties the log.
    fn fold_log(&self, conn: &Connection) -> Result<()> {
        let flushes = changelog::read_all(conn)?;
        if flushes.is_empty() {
            return Ok(());
        }
        let mut items: Vec<Stamped<'_>> =
            Vec::with_capacity(flushes.iter().map(|(_, n, _)| n).sum());
        for (stamp, _, changes) in &flushes {
            for e in Entries::new(changes, "change log") {
                let e = e?;
                let stamp = Stamp {
                    hlc: e.hlc,
                    ..*stamp
                };
                items.push((e, stamp));
            }
        }
        sort_by_key(&mut items);
        // Between key changes, rows created or updated in bulk are packed, then dense field
        // updates of records are folded by a scan; the rest (other rows) keep their order.
        for part in items.split_inclusive(|c| c.0.new_key.is_some()) {
            let unpacked = packs::fold(conn, part)?;
            let rest = dense_fold::fold_field_updates(conn, &self.dense_fold, &unpacked)?;
            write_clock(conn, &rest)?;
        }
        changelog::clear(conn)
    }

    /// Re-reads table shapes when the writer changed the schema, and follows synced tables it
    /// renamed or dropped.
    fn refresh_schema(&self, conn: &Connection) -> Result<()> {
        self.with_collections(conn, |_| Ok(()))?;
        self.follow_own_ddl(conn)
    }

    /// Records a local write to one node (in the open transaction; edges store their clocks
    /// in their rows, see [`Replication::edge_stamp`]).
    pub(crate) fn capture_node_write(
        &self,
        conn: &Connection,
        key: &[u8],
        write: NodeWrite<&[String]>,
        hlc: Hlc,
    ) -> Result<()> {
        let stamp = self.local_stamp(conn, hlc)?;
        self.recent.lock().record(stamp.seq, NODES_ID, key);
        match write {
            NodeWrite::Created(names) => {
                upsert_created(conn, [(NODES_ID, key, created_clock(stamp, names))])?;
            }
            NodeWrite::Fields(names) => {
                let names = keys::pack(names.iter().map(|n| ValueRef::Text(n.as_bytes())));
                update_row(conn, NODES_ID, key, stamp, &names)?;
            }
            NodeWrite::Deleted => mark_deleted(conn, NODES_ID, key, stamp)?,
        }
        self.persist_clock(conn)
    }
}

impl Replication {
    /// Records the creation of many nodes by one write at `hlc` (in the open transaction):
    /// `nodes` holds each one's key and the fields it was created with (see
    /// [`capture_node_write`](Self::capture_node_write)).
    pub(crate) fn capture_nodes_created(
        &self,
        conn: &Connection,
        nodes: &[(Vec<u8>, Vec<String>)],
        hlc: Hlc,
    ) -> Result<()> {
        let stamp = self.local_stamp(conn, hlc)?;
        let mut recent = self.recent.lock();
        if recent.room_for(stamp.seq, nodes.len()) {
            for (key, _) in nodes {
                recent.record(stamp.seq, NODES_ID, key);
            }
        }
        drop(recent);
        for chunk in nodes.chunks(CLOCK_CHUNK) {
            let clocks = chunk
                .iter()
                .map(|(key, names)| (NODES_ID, key.as_slice(), created_clock(stamp, names)));
            upsert_created(conn, clocks)?;
        }
        self.persist_clock(conn)
    }

    /// This site's stamp for a write of edges in the open transaction at `hlc`, with the
    /// versions the write stores in the edge rows (see [`Replication::note_edge_writes`]).
    pub(crate) fn edge_stamp(&self, conn: &Connection, hlc: Hlc) -> Result<EdgeStamp> {
        Ok(EdgeStamp::new(self.local_stamp(conn, hlc)?))
    }

    /// Records that a write stamped `stamp` stored `count` edges with their clocks; `keys`
    /// gives their keys, asked for only when the rows written lately have room for them (for
    /// the peers' next read). Called after every [`edge_stamp`](Self::edge_stamp), even if
    /// nothing was written: the stamp took a `db_version`.
    pub(crate) fn note_edge_writes(
        &self,
        conn: &Connection,
        stamp: &EdgeStamp,
        count: usize,
        keys: impl FnOnce() -> Vec<Vec<u8>>,
    ) -> Result<()> {
        let seq = stamp.stamp.seq;
        let mut recent = self.recent.lock();
        if recent.room_for(seq, count) {
            for key in keys() {
                recent.record(seq, EDGES_ID, &key);
            }
        }
        drop(recent);
        self.persist_clock(conn)
    }
}

/// Whether an update changes nothing but fields that PluresDB's embedding triggers fill.
fn fills_embeddings_only(info: &TableInfo, case: &PreUpdateCase) -> bool {
    let PreUpdateCase::Update {
        old_value_accessor: old,
        new_value_accessor: new,
    } = case
    else {
        return false;
    };
    if info.derived.is_empty() {
        return false;
    }
    let same = |pos: usize| {
        let pos = pos as i32;
        matches!(
            (old.get_old_column_value(pos), new.get_new_column_value(pos)),
            (Ok(a), Ok(b)) if a == b
        )
    };
    info.pk_pos.iter().all(|&pos| same(pos))
        && (info.field_pos.iter().enumerate())
            .all(|(i, &pos)| info.derived.contains(&i) || same(pos))
}

/// How deep in triggers the hook's write is (0: written by the statement itself).
fn trigger_depth(case: &PreUpdateCase) -> i32 {
    match case {
        PreUpdateCase::Insert(new) => new.get_query_depth(),
        PreUpdateCase::Delete(old) => old.get_query_depth(),
        PreUpdateCase::Update {
            old_value_accessor: old,
            ..
        } => old.get_query_depth(),
        PreUpdateCase::Unknown => 0,
    }
}

/// Encodes a row change from the hook into `buf`: the key columns, and for updates which
/// fields changed (nothing for an update that changed nothing), looking only at the columns
/// `mask` says an update may change.
fn capture(
    info: &TableInfo,
    case: &PreUpdateCase,
    mask: UpdateMask,
    buf: &mut CaptureBuf,
    at: Origin,
) -> std::result::Result<(), String> {
    let columns = match case {
        PreUpdateCase::Insert(new) => new.get_column_count(),
        PreUpdateCase::Delete(old) => old.get_column_count(),
        PreUpdateCase::Update {
            old_value_accessor: old,
            ..
        } => old.get_column_count(),
        PreUpdateCase::Unknown => return Ok(()),
    };
    if usize::try_from(columns).ok() != Some(info.columns) {
        return Err(format!(
            "its columns changed (another connection altered it: {} columns, {columns} now); \
             retry the write",
            info.columns
        ));
    }
    read_change(info, case, mask, buf, at).map_err(|e| e.to_string())
}

/// [`capture`] for a table of known shape.
fn read_change(
    info: &TableInfo,
    case: &PreUpdateCase,
    mask: UpdateMask,
    buf: &mut CaptureBuf,
    at: Origin,
) -> rusqlite::Result<()> {
    let pk = info.pk_pos.as_slice();
    let mut key = std::mem::take(&mut buf.scratch);
    key.clear();
    match case {
        PreUpdateCase::Insert(new) => {
            pack_columns(&mut key, pk, |i| new.get_new_column_value(i))?;
            keys::check_key(&key).map_err(user_function_error)?;
            buf.push(at, Op::Insert, &key, None, &[]);
        }
        PreUpdateCase::Delete(old) => {
            pack_columns(&mut key, pk, |i| old.get_old_column_value(i))?;
            buf.push(at, Op::Delete, &key, None, &[]);
        }
        PreUpdateCase::Update {
            old_value_accessor: old,
            new_value_accessor: new,
        } => {
            pack_columns(&mut key, pk, |i| old.get_old_column_value(i))?;
            let mut key_changed = false;
            for &pos in pk.iter().filter(|_| mask.key()) {
                let pos = pos as i32;
                key_changed |= old.get_old_column_value(pos)? != new.get_new_column_value(pos)?;
            }
            let new_key = if key_changed {
                let mut new_key = Vec::with_capacity(key.len());
                pack_columns(&mut new_key, pk, |i| new.get_new_column_value(i))?;
                keys::check_key(&new_key).map_err(user_function_error)?;
                Some(new_key)
            } else {
                None
            };
            // The names of the changed fields, packed as they are stored.
            let mut changed = std::mem::take(&mut buf.fields_scratch);
            changed.clear();
            for (i, (name, &pos)) in info.fields.iter().zip(&info.field_pos).enumerate() {
                let pos = pos as i32;
                if mask.field(i)
                    && old.get_old_column_value(pos)? != new.get_new_column_value(pos)?
                {
                    // A column added (or renamed) since the table started syncing.
                    if name.len() > MAX_FIELD_BYTES {
                        return Err(user_function_error(Error::invalid(format!(
                            "column names of up to {MAX_FIELD_BYTES} bytes sync; this one is {}",
                            name.len()
                        ))));
                    }
                    put_value(&mut changed, ValueRef::Text(name.as_bytes()));
                }
            }
            if new_key.is_some() || !changed.is_empty() {
                buf.push(at, Op::Update, &key, new_key.as_deref(), &changed);
            }
            buf.fields_scratch = changed;
        }
        PreUpdateCase::Unknown => {}
    }
    buf.scratch = key;
    Ok(())
}

/// Packs the values of the columns at `positions` as a row key, into `key`.
fn pack_columns<'a>(
    key: &mut Vec<u8>,
    positions: &[usize],
    get: impl Fn(i32) -> rusqlite::Result<rusqlite::types::ValueRef<'a>>,
) -> rusqlite::Result<()> {
    for &pos in positions {
        put_value(key, ValueRef::from_sqlite(get(pos as i32)?));
    }
    Ok(())
}

/// A local write to a node.
pub(crate) enum NodeWrite<F = Vec<String>> {
    /// Created (or re-created after a delete) with exactly these fields.
    Created(F),
    /// These fields changed.
    Fields(F),
    /// Deleted.
    Deleted,
}

impl NodeWrite {
    /// Borrows the field names.
    pub(crate) fn as_ref(&self) -> NodeWrite<&[String]> {
        match self {
            NodeWrite::Created(f) => NodeWrite::Created(f.as_slice()),
            NodeWrite::Fields(f) => NodeWrite::Fields(f.as_slice()),
            NodeWrite::Deleted => NodeWrite::Deleted,
        }
    }
}

/// Orders changes by row key, so the clock table's B-tree is written front to back rather than
/// at random. Changes to one row keep their order (the sort is stable), and no change moves
/// across one that changes a row's key (it touches two rows).
///
/// A radix sort by collection and the first 12 key bytes (read as two numbers) orders most
/// changes without comparing keys; only keys that share those bytes are compared whole.
fn sort_by_key(items: &mut [Stamped<'_>]) {
    // The collection and the key's first 4 bytes, and its next 8.
    let prefix = |coll: u32, key: &[u8]| {
        let mut b = [0u8; 12];
        let n = key.len().min(12);
        b[..n].copy_from_slice(&key[..n]);
        let (high, low) = b.split_at(4);
        let high = u32::from_be_bytes(high.try_into().expect("4 bytes"));
        let low = u64::from_be_bytes(low.try_into().expect("8 bytes"));
        (u64::from(coll) << 32 | u64::from(high), low)
    };
    for segment in items.split_mut(|c| c.0.new_key.is_some()) {
        // Rows written in key order (sequential or time-ordered keys) need no sort.
        if segment
            .windows(2)
            .all(|w| (w[0].0.coll, w[0].0.key) <= (w[1].0.coll, w[1].0.key))
        {
            continue;
        }
        let mut order: Vec<(u64, u64, u32)> = segment
            .iter()
            .enumerate()
            .map(|(i, (e, _))| {
                let (high, low) = prefix(e.coll, e.key);
                (high, low, i as u32)
            })
            .collect();
        radsort::sort_by_key(&mut order, |o| (o.0, o.1));
        for run in order.chunk_by_mut(|x, y| (x.0, x.1) == (y.0, y.1)) {
            if run.len() > 1 {
                run.sort_by(|x, y| segment[x.2 as usize].0.key.cmp(segment[y.2 as usize].0.key));
            }
        }
        let sorted: Vec<Stamped<'_>> = order.iter().map(|o| segment[o.2 as usize]).collect();
        segment.copy_from_slice(&sorted);
    }
}

/// Writes logged changes (sorted by [`sort_by_key`]) to the clock table. A row's creation
/// and the updates of its fields right after it become one record, written without a read.
fn write_clock(conn: &Connection, items: &[Stamped<'_>]) -> Result<()> {
    // Creations waiting to be upserted together.
    let mut created: Vec<(u32, &[u8], RowClock)> = Vec::new();
    let mut rest = items;
    while let Some(((item, stamp), tail)) = rest.split_first() {
        rest = tail;
        let stamp = *stamp;
        if item.op != Op::Insert {
            upsert_all_created(conn, &mut created)?;
        }
        match (item.op, item.new_key) {
            (Op::Insert, _) => {
                let mut clock = RowClock::whole(stamp);
                while let Some(((update, at), tail)) = rest.split_first()
                    && update.op == Op::Update
                    && update.new_key.is_none()
                    && (update.coll, update.key) == (item.coll, item.key)
                {
                    clock.set_packed_fields(update.fields, *at)?;
                    rest = tail;
                }
                created.push((item.coll, item.key, clock));
            }
            (Op::Update | Op::Delete, Some(new_key)) => {
                // A changed key: the old row is deleted and a new one created.
                mark_deleted(conn, item.coll, item.key, stamp)?;
                upsert_created(conn, [(item.coll, new_key, RowClock::whole(stamp))])?;
            }
            (Op::Update, None) => update_row(conn, item.coll, item.key, stamp, item.fields)?,
            (Op::Delete, None) => mark_deleted(conn, item.coll, item.key, stamp)?,
        }
    }
    upsert_all_created(conn, &mut created)
}

/// Upserts `rows` as created (without reading first), a few statement sizes at a time, and
/// empties the list.
fn upsert_all_created(conn: &Connection, rows: &mut Vec<(u32, &[u8], RowClock)>) -> Result<()> {
    for part in chunk_sizes(rows) {
        upsert_created(
            conn,
            part.iter().map(|(coll, key, clock)| (*coll, *key, clock)),
        )?;
    }
    rows.clear();
    Ok(())
}

/// Splits a chunk into parts of 64, 16, 4 and 1 rows (few distinct statements to cache).
fn chunk_sizes<T>(mut rest: &[T]) -> Vec<&[T]> {
    let mut parts = Vec::new();
    while !rest.is_empty() {
        let size = [64, 16, 4, 1]
            .into_iter()
            .find(|s| *s <= rest.len())
            .unwrap_or(1);
        let (head, tail) = rest.split_at(size);
        parts.push(head);
        rest = tail;
    }
    parts
}

/// Gives the fields `names` (packed) of a live row this site's stamp; a row with no live
/// record (it predates replication) is recorded as created now.
fn update_row(conn: &Connection, coll: u32, key: &[u8], stamp: Stamp, names: &[u8]) -> Result<()> {
    let updated = conn
        .prepare_cached(
            "UPDATE _pluresdb_clock SET seq = ?3, ver = pluresdb_clock_set(ver, ?4, ?5, ?3, ?6)
             WHERE tbl = ?1 AND key = ?2 AND cl % 2 = 1",
        )?
        .execute(rusqlite::params![
            i64::from(coll),
            key,
            stamp.seq as i64,
            stamp.hlc as i64,
            i64::from(stamp.site),
            names
        ])?;
    if updated == 0 {
        upsert_missing(conn, coll, key, stamp)?;
    }
    Ok(())
}

/// Records a live row that has no live clock record as created by `stamp`.
fn upsert_missing(conn: &Connection, coll: u32, key: &[u8], stamp: Stamp) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO _pluresdb_clock(tbl, key, cl, seq, ver) VALUES (?1, ?2, 1, ?3, ?4)
         ON CONFLICT(tbl, key) DO UPDATE SET cl = cl + 1, seq = excluded.seq, ver = excluded.ver
         WHERE cl % 2 = 0",
    )?
    .execute(rusqlite::params![
        i64::from(coll),
        key,
        stamp.seq as i64,
        RowClock::whole(stamp).encode()
    ])?;
    Ok(())
}

/// Rows created by one write each: a new life (odd causal length) with all fields stamped.
/// Clock records per statement of [`upsert_created`] in bulk writes.
const CLOCK_CHUNK: usize = 128;

/// The clock of a row created at `stamp` with the fields `names`.
fn created_clock(stamp: Stamp, names: &[String]) -> RowClock {
    let mut clock = RowClock::reset(stamp);
    for name in names {
        clock.set_field(name, stamp);
    }
    clock
}

fn upsert_created<'a, C: Borrow<RowClock>>(
    conn: &Connection,
    rows: impl IntoIterator<Item = (u32, &'a [u8], C)>,
) -> Result<()> {
    let rows: Vec<_> = rows.into_iter().collect();
    if rows.is_empty() {
        return Ok(());
    }
    let values = vec!["(?, ?, 1, ?, ?)"; rows.len()].join(", ");
    let sql = format!(
        "INSERT INTO _pluresdb_clock(tbl, key, cl, seq, ver) VALUES {values}
         ON CONFLICT(tbl, key) DO UPDATE SET cl = cl + (cl % 2 = 0), seq = excluded.seq, ver = excluded.ver"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut i = 1;
    for (coll, key, clock) in &rows {
        stmt.raw_bind_parameter(i, i64::from(*coll))?;
        stmt.raw_bind_parameter(i + 1, *key)?;
        let clock = clock.borrow();
        stmt.raw_bind_parameter(i + 2, clock.newest_seq() as i64)?;
        stmt.raw_bind_parameter(i + 3, clock.encode())?;
        i += 4;
    }
    stmt.raw_execute()?;
    Ok(())
}

/// A row deleted by a local write: the causal length becomes even.
fn mark_deleted(conn: &Connection, coll: u32, key: &[u8], stamp: Stamp) -> Result<()> {
    let ver = RowClock::reset(stamp).encode();
    let changed = conn
        .prepare_cached(
            "UPDATE _pluresdb_clock SET cl = cl + 1, seq = ?1, ver = ?2
             WHERE tbl = ?3 AND key = ?4 AND cl % 2 = 1",
        )?
        .execute(rusqlite::params![
            stamp.seq as i64,
            ver,
            i64::from(coll),
            key
        ])?;
    if changed == 0 {
        conn.prepare_cached(
            "INSERT INTO _pluresdb_clock(tbl, key, cl, seq, ver) VALUES (?1, ?2, 2, ?3, ?4)
             ON CONFLICT(tbl, key) DO NOTHING",
        )?
        .execute(rusqlite::params![
            i64::from(coll),
            key,
            stamp.seq as i64,
            ver
        ])?;
    }
    Ok(())
}

impl WriteObserver for Replication {
    fn active(&self) -> bool {
        self.tables_synced.load(Ordering::Acquire)
    }

    fn mark(&self) -> usize {
        self.statements.fetch_add(1, Ordering::Relaxed);
        self.captured.lock().mark()
    }

    fn discard_since(&self, mark: usize) {
        if !self.captured.lock().truncate(mark) {
            self.refuse(
                "a statement that failed had already written earlier changes of the \
                 transaction to the change log (pluresdb_sync_table inside a failing \
                 statement), and SQLite undid that; roll the transaction back"
                    .to_owned(),
            );
        }
    }

    fn preupdate(&self, db: &str, table: &str, case: &PreUpdateCase) {
        self.capture_preupdate(db, table, case);
    }

    fn commit_refusal(&self) -> Option<Error> {
        self.capture_failure()
    }

    fn stale(&self) -> bool {
        self.collections_stale()
    }

    fn tx_control_ran(&self) {
        Replication::tx_control_ran(self);
    }

    fn refuse_commit(&self, why: String) {
        self.captured.lock().clear();
        self.refuse(why);
    }

    fn refresh(&self, conn: &Connection) -> Result<()> {
        self.refresh_collections(conn)
    }

    fn catch_up(&self, conn: &Connection) -> Result<bool> {
        // Only this handle ever writes an in-memory database.
        if conn.path().is_none_or(str::is_empty) {
            return Ok(false);
        }
        let version: i64 = conn
            .prepare_cached("PRAGMA data_version")?
            .query_row([], |r| r.get(0))?;
        let foreign = self.data_version.swap(version, Ordering::AcqRel) != version;
        if foreign {
            self.observe_stored_clock(conn)?;
            self.refresh_collections(conn)?;
        }
        Ok(foreign)
    }

    fn flush(&self, conn: &Connection) -> Result<()> {
        self.flush_captured(conn)
    }

    fn after_statement(&self, conn: &Connection) -> Result<()> {
        if let Some(e) = self.capture_failure() {
            self.refresh_schema(conn)?;
            return Err(e);
        }
        if self.captured.lock().len() >= FLUSH_AT {
            self.flush_captured(conn)
        } else {
            self.refresh_schema(conn)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_order_is_a_stable_sort_by_row_within_key_changes() {
        // Keys sharing a long prefix, keys that differ early, short keys and keys that are
        // another's prefix (padded alike), repeated keys, two collections, one key change.
        let keys: Vec<Vec<u8>> = (0..400u32)
            .map(|i| match i % 3 {
                0 => format!("0123456789abcdef-{}", (i * 7) % 9).into_bytes(),
                1 => format!("{:x}", i.wrapping_mul(2_654_435_761) % 5000).into_bytes(),
                _ => [b'k', (i % 5) as u8, 0, 0][..1 + (i as usize / 3) % 4].to_vec(),
            })
            .collect();
        let entry = |i: usize| Entry {
            coll: 1 + (i % 2) as u32,
            op: Op::Update,
            hlc: i as u64,
            key: &keys[i],
            new_key: (i == 250).then_some(&b"z"[..]),
            fields: &[],
        };
        let mut items: Vec<Stamped<'_>> = (0..keys.len())
            .map(|i| (entry(i), Stamp::default()))
            .collect();
        sort_by_key(&mut items);
        let mut expected: Vec<usize> = (0..keys.len()).collect();
        for part in expected.split_mut(|&i| i == 250) {
            part.sort_by(|&a, &b| {
                (entry(a).coll, entry(a).key).cmp(&(entry(b).coll, entry(b).key))
            });
        }
        let got: Vec<usize> = items.iter().map(|(e, _)| e.hlc as usize).collect();
        assert_eq!(got, expected);
    }
}
