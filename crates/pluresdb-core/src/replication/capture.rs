//! Change capture: the writer's pre-update hook reports row changes of replicated tables to
//! [`Replication::capture_preupdate`], which keeps them in memory; before the transaction ends
//! (and in batches meanwhile) they are written to `_pluresdb_clock` with this site's versions.
//!
//! A hook rather than triggers: a trigger makes every write to the table a multi-row statement
//! with its own statement journal (each page it touches is copied first) and runs a trigger
//! program per row; the hook costs a function call.

use std::sync::atomic::Ordering;

use rusqlite::Connection;
use rusqlite::hooks::PreUpdateCase;

use pluresdb_crdt::Hlc;

use super::clock::{RowClock, Stamp};
use super::collections::{Kind, TableInfo};
use super::keys;
use super::state::Replication;
use crate::engine::WriteObserver;
use crate::error::{Error, Result};
use crate::value::ValueRef;
use crate::wire::put_value;

/// Captured changes are written in batches of this many rows while a transaction runs
/// (sorted by key first: the larger the batch, the closer to one ordered pass over the clock).
const FLUSH_AT: usize = 16_384;

/// What happened to a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Insert,
    Update,
    Delete,
}

/// One row change reported by the hook.
#[derive(Debug)]
pub(crate) struct Captured {
    coll: u32,
    op: Op,
    /// The row's key (the old key for updates).
    key: Vec<u8>,
    /// For updates that change the key: the new key.
    new_key: Option<Vec<u8>>,
    /// For updates: the names of the fields that changed, packed.
    fields: Vec<u8>,
    hlc: Hlc,
    /// Which statement made the change (see `Replication::statements`).
    statement: u64,
}

impl Replication {
    /// Called by the writer's pre-update hook before a row of any table changes: records the
    /// change when the table is replicated (and the write is not a remote change being merged).
    pub(crate) fn capture_preupdate(&self, db: &str, table: &str, case: &PreUpdateCase) {
        if db != "main" || self.suppress.load(Ordering::Acquire) {
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
        let captured = capture(info, case).map(|c| {
            c.map(|(op, key, new_key, fields)| Captured {
                coll: coll.id,
                op,
                key,
                new_key,
                fields,
                hlc: self.clock.now(),
                statement: self.statements.load(Ordering::Relaxed),
            })
        });
        match captured {
            Ok(Some(c)) => self.captured.lock().push(c),
            Ok(None) => {}
            Err(why) => {
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
    fn refuse(&self, why: String) {
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

    /// Writes every captured change to the clock table (inside the open transaction).
    pub(crate) fn flush_captured(&self, conn: &Connection) -> Result<()> {
        self.refresh_schema(conn)?;
        let mut items = std::mem::take(&mut *self.captured.lock());
        if items.is_empty() {
            return Ok(());
        }
        sort_by_key(&mut items);
        drop_replaced(&mut items);
        let seq = self.tx_seq(conn)?;
        {
            let mut recent = self.recent.lock();
            for c in &items {
                recent.record(seq, c.coll, &c.key);
                if let Some(key) = &c.new_key {
                    recent.record(seq, c.coll, key);
                }
            }
        }
        let me = self.site_index(conn, self.site)?;
        let stamp = |c: &Captured| Stamp {
            hlc: c.hlc.as_u64(),
            site: me,
            seq,
        };
        let mut i = 0;
        while i < items.len() {
            let item = &items[i];
            match (item.op, &item.new_key) {
                (Op::Insert, _) => {
                    // New rows: written without reading first (an existing record is upserted).
                    let run = items[i..].iter().take_while(|c| c.op == Op::Insert).count();
                    for part in chunk_sizes(&items[i..i + run]) {
                        upsert_created(
                            conn,
                            part.iter()
                                .map(|c| (c.coll, c.key.as_slice(), RowClock::whole(stamp(c)))),
                        )?;
                    }
                    i += run;
                }
                (Op::Update | Op::Delete, Some(new_key)) => {
                    // A changed key: the old row is deleted and a new one created.
                    mark_deleted(conn, item.coll, &item.key, stamp(item))?;
                    upsert_created(
                        conn,
                        [(item.coll, new_key.as_slice(), RowClock::whole(stamp(item)))],
                    )?;
                    i += 1;
                }
                (Op::Update, None) => {
                    update_row(conn, item.coll, &item.key, stamp(item), &item.fields)?;
                    i += 1;
                }
                (Op::Delete, None) => {
                    mark_deleted(conn, item.coll, &item.key, stamp(item))?;
                    i += 1;
                }
            }
        }
        self.persist_clock(conn)
    }

    /// Re-reads table shapes when the writer changed the schema.
    fn refresh_schema(&self, conn: &Connection) -> Result<()> {
        self.with_collections(conn, |_| Ok(()))
    }

    /// Records a local write to one row of the node or edge store (in the open transaction).
    pub(crate) fn capture_graph_write(
        &self,
        conn: &Connection,
        coll: u32,
        key: &[u8],
        write: GraphWrite<&[String]>,
        hlc: Hlc,
    ) -> Result<()> {
        let stamp = self.local_stamp(conn, hlc)?;
        self.recent.lock().record(stamp.seq, coll, key);
        match write {
            GraphWrite::Created => upsert_created(conn, [(coll, key, RowClock::whole(stamp))])?,
            GraphWrite::CreatedWith(names) => {
                let mut clock = RowClock::reset(stamp);
                for name in names {
                    clock.set_field(name, stamp);
                }
                upsert_created(conn, [(coll, key, clock)])?;
            }
            GraphWrite::Fields(names) => {
                let names = keys::pack(names.iter().map(|n| ValueRef::Text(n.as_bytes())));
                update_row(conn, coll, key, stamp, &names)?;
            }
            GraphWrite::Deleted => mark_deleted(conn, coll, key, stamp)?,
        }
        self.persist_clock(conn)
    }
}

impl Replication {
    /// Records that the rows `keys` of a graph collection were created (in the open transaction),
    /// all at `hlc`: one batched clock write for a bulk load.
    pub(crate) fn capture_created(
        &self,
        conn: &Connection,
        coll: u32,
        keys: &[Vec<u8>],
        hlc: Hlc,
    ) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let stamp = self.local_stamp(conn, hlc)?;
        {
            let mut recent = self.recent.lock();
            for key in keys {
                recent.record(stamp.seq, coll, key);
            }
        }
        // The same statement sizes as the captured inserts, so they stay prepared.
        for part in chunk_sizes(keys) {
            upsert_created(
                conn,
                part.iter()
                    .map(|k| (coll, k.as_slice(), RowClock::whole(stamp))),
            )?;
        }
        self.persist_clock(conn)
    }
}

/// A captured row change: operation, key, new key (when it changed), changed fields (packed);
/// `None` for an update that changed nothing.
type RowChange = (Op, Vec<u8>, Option<Vec<u8>>, Vec<u8>);

/// Reads a row change from the hook: the key columns, and for updates which fields changed.
fn capture(
    info: &TableInfo,
    case: &PreUpdateCase,
) -> std::result::Result<Option<RowChange>, String> {
    let columns = match case {
        PreUpdateCase::Insert(new) => new.get_column_count(),
        PreUpdateCase::Delete(old) => old.get_column_count(),
        PreUpdateCase::Update {
            old_value_accessor: old,
            ..
        } => old.get_column_count(),
        PreUpdateCase::Unknown => return Ok(None),
    };
    if usize::try_from(columns).ok() != Some(info.columns) {
        return Err(format!(
            "its columns changed (another connection altered it: {} columns, {columns} now); \
             retry the write",
            info.columns
        ));
    }
    read_change(info, case).map_err(|e| e.to_string())
}

/// The key, and for updates the changed fields, of a row change of a table of known shape.
fn read_change(info: &TableInfo, case: &PreUpdateCase) -> rusqlite::Result<Option<RowChange>> {
    let pk = info.pk_pos.as_slice();
    Ok(match case {
        PreUpdateCase::Insert(new) => Some((
            Op::Insert,
            pack_columns(pk, |i| new.get_new_column_value(i))?,
            None,
            Vec::new(),
        )),
        PreUpdateCase::Delete(old) => Some((
            Op::Delete,
            pack_columns(pk, |i| old.get_old_column_value(i))?,
            None,
            Vec::new(),
        )),
        PreUpdateCase::Update {
            old_value_accessor: old,
            new_value_accessor: new,
        } => {
            let key = pack_columns(pk, |i| old.get_old_column_value(i))?;
            let new_key = pack_columns(pk, |i| new.get_new_column_value(i))?;
            // The names of the changed fields, packed as they are stored.
            let mut changed = Vec::new();
            for (name, &pos) in info.fields.iter().zip(&info.field_pos) {
                let pos = pos as i32;
                if old.get_old_column_value(pos)? != new.get_new_column_value(pos)? {
                    put_value(&mut changed, ValueRef::Text(name.as_bytes()));
                }
            }
            if new_key == key && changed.is_empty() {
                return Ok(None);
            }
            let new_key = (new_key != key).then_some(new_key);
            Some((Op::Update, key, new_key, changed))
        }
        PreUpdateCase::Unknown => None,
    })
}

/// Packs the values of the columns at `positions` as a row key.
fn pack_columns<'a>(
    positions: &[usize],
    get: impl Fn(i32) -> rusqlite::Result<rusqlite::types::ValueRef<'a>>,
) -> rusqlite::Result<Vec<u8>> {
    let mut key = Vec::with_capacity(24);
    for &pos in positions {
        put_value(&mut key, ValueRef::from_sqlite(get(pos as i32)?));
    }
    Ok(key)
}

/// A local write to a node or an edge.
pub(crate) enum GraphWrite<F = Vec<String>> {
    /// Created (or re-created after a delete): every field is new.
    Created,
    /// Created with exactly these fields.
    CreatedWith(F),
    /// These fields changed.
    Fields(F),
    /// Deleted.
    Deleted,
}

impl GraphWrite {
    /// Borrows the field names.
    pub(crate) fn as_ref(&self) -> GraphWrite<&[String]> {
        match self {
            GraphWrite::Created => GraphWrite::Created,
            GraphWrite::CreatedWith(f) => GraphWrite::CreatedWith(f.as_slice()),
            GraphWrite::Fields(f) => GraphWrite::Fields(f.as_slice()),
            GraphWrite::Deleted => GraphWrite::Deleted,
        }
    }
}

/// Orders changes by row key, so the clock table's B-tree is written front to back rather than
/// at random. Changes to one row keep their order (the sort is stable), and no change moves
/// across one that changes a row's key (it touches two rows).
fn sort_by_key(items: &mut [Captured]) {
    for segment in items.split_mut(|c| c.new_key.is_some()) {
        segment.sort_by(|a, b| (a.coll, &a.key).cmp(&(b.coll, &b.key)));
    }
}

/// `INSERT OR REPLACE` of an existing row reports the row's deletion and then its insertion,
/// in one statement: that is one write of the row (all fields new, same life), as a trigger
/// saw it, not a delete and a re-creation. `items` must be sorted by key.
fn drop_replaced(items: &mut Vec<Captured>) {
    let replaced = |a: &Captured, b: &Captured| {
        a.op == Op::Delete
            && b.op == Op::Insert
            && a.statement == b.statement
            && a.coll == b.coll
            && a.key == b.key
    };
    if !items.windows(2).any(|w| replaced(&w[0], &w[1])) {
        return;
    }
    let mut out: Vec<Captured> = Vec::with_capacity(items.len());
    for c in items.drain(..) {
        if out.last().is_some_and(|last| replaced(last, &c)) {
            out.pop();
        }
        out.push(c);
    }
    *items = out;
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
fn upsert_created<'a>(
    conn: &Connection,
    rows: impl IntoIterator<Item = (u32, &'a [u8], RowClock)>,
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
        stmt.raw_bind_parameter(i + 2, clock.sentinel.seq as i64)?;
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
        self.captured.lock().len()
    }

    fn discard_since(&self, mark: usize) {
        self.captured.lock().truncate(mark);
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
