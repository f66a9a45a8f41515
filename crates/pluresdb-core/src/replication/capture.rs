//! Change capture: triggers report row changes of replicated tables to `pluresdb_capture`,
//! which keeps them in memory; before the transaction ends (and in batches meanwhile) they
//! are written to `_pluresdb_clock` with this site's versions.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use rusqlite::Connection;
use rusqlite::functions::Context;
use smallvec::SmallVec;

use pluresdb_crdt::Hlc;

use super::clock::{RowClock, Stamp};
use super::collections::Kind;
use super::keys;
use super::state::Replication;
use crate::engine::WriteObserver;
use crate::error::Result;
use crate::value::ValueRef;

/// Captured changes are written in batches of this many rows while a transaction runs.
const FLUSH_AT: usize = 512;

/// What happened to a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Insert,
    Update,
    Delete,
}

/// One row change reported by a trigger.
#[derive(Debug)]
pub(crate) struct Captured {
    coll: u32,
    op: Op,
    /// The row's key (the old key for updates).
    key: Vec<u8>,
    /// For updates that change the key: the new key.
    new_key: Option<Vec<u8>>,
    /// For updates: which fields changed (bit i of word i / 62).
    mask: SmallVec<[u64; 1]>,
    hlc: Hlc,
}

fn arg_ref<'a>(ctx: &'a Context<'_>, i: usize) -> ValueRef<'a> {
    ValueRef::from_sqlite(ctx.get_raw(i))
}

impl Replication {
    /// Body of the SQL function `pluresdb_capture(coll, op, nkeys, keys...[, new keys..., masks...])`
    /// called by the capture triggers.
    pub(crate) fn capture_from_trigger(&self, ctx: &Context<'_>) -> rusqlite::Result<()> {
        if self.suppress.load(Ordering::Acquire) {
            return Ok(());
        }
        let bad = |what: &str| {
            rusqlite::Error::UserFunctionError(format!("pluresdb_capture: {what}").into())
        };
        let coll = u32::try_from(ctx.get::<i64>(0)?).map_err(|_| bad("bad collection"))?;
        let op = match ctx.get::<i64>(1)? {
            1 => Op::Insert,
            2 => Op::Update,
            3 => Op::Delete,
            _ => return Err(bad("bad operation")),
        };
        let n = usize::try_from(ctx.get::<i64>(2)?).map_err(|_| bad("bad key count"))?;
        if ctx.len() < 3 + n {
            return Err(bad("missing key values"));
        }
        let key = keys::pack((3..3 + n).map(|i| arg_ref(ctx, i)));
        let mut captured = Captured {
            coll,
            op,
            key,
            new_key: None,
            mask: SmallVec::new(),
            hlc: self.clock.now(),
        };
        if op == Op::Update {
            if ctx.len() < 3 + 2 * n {
                return Err(bad("missing new key values"));
            }
            let new_key = keys::pack((3 + n..3 + 2 * n).map(|i| arg_ref(ctx, i)));
            if new_key != captured.key {
                captured.new_key = Some(new_key);
            }
            for i in 3 + 2 * n..ctx.len() {
                captured.mask.push(ctx.get::<i64>(i)? as u64);
            }
        }
        self.captured.lock().push(captured);
        Ok(())
    }

    /// Writes every captured change to the clock table (inside the open transaction).
    pub(crate) fn flush_captured(&self, conn: &Connection) -> Result<()> {
        self.refresh_schema(conn)?;
        let items = std::mem::take(&mut *self.captured.lock());
        if items.is_empty() {
            return Ok(());
        }
        let seq = self.tx_seq(conn)?;
        let me = self.site_index(conn, self.site)?;
        let stamp = |c: &Captured| Stamp {
            hlc: c.hlc.as_u64(),
            site: me,
            seq,
        };
        let mut i = 0;
        while i < items.len() {
            let item = &items[i];
            let run_of = |pred: &dyn Fn(&Captured) -> bool| {
                items[i..].iter().take_while(|c| pred(c)).count()
            };
            match (item.op, &item.new_key) {
                (Op::Insert, _) => {
                    // New rows: written without reading first (an existing record is upserted).
                    let run = run_of(&|c| c.op == Op::Insert);
                    for chunk in items[i..i + run].chunks(64) {
                        for part in chunk_sizes(chunk) {
                            upsert_created(
                                conn,
                                part.iter()
                                    .map(|c| (c.coll, c.key.as_slice(), RowClock::whole(stamp(c)))),
                            )?;
                        }
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
                (Op::Update | Op::Delete, None) => {
                    let run = run_of(&|c| c.op != Op::Insert && c.new_key.is_none());
                    for chunk in items[i..i + run].chunks(64) {
                        self.rewrite_clocks(conn, chunk, &stamp)?;
                    }
                    i += run;
                }
            }
        }
        self.persist_clock(conn)
    }

    /// Updates and deletes of existing rows. Updates go in batches through
    /// `pluresdb_clock_set` (one lookup per row); deletes one statement each.
    fn rewrite_clocks(
        &self,
        conn: &Connection,
        chunk: &[Captured],
        stamp: &dyn Fn(&Captured) -> Stamp,
    ) -> Result<()> {
        let names = self.field_names(conn)?;
        let mut batch: Vec<(&Captured, Vec<u8>)> = Vec::new();
        for c in chunk {
            if c.op == Op::Delete
                || batch
                    .iter()
                    .any(|(b, _)| b.coll == c.coll && b.key == c.key)
            {
                update_fields(conn, &batch, stamp)?;
                batch.clear();
            }
            if c.op == Op::Delete {
                mark_deleted(conn, c.coll, &c.key, stamp(c))?;
                continue;
            }
            let fields = names.get(&c.coll).map(|v| v.as_slice()).unwrap_or_default();
            let changed = fields
                .iter()
                .enumerate()
                .filter(|(i, _)| c.mask.get(i / 62).is_some_and(|w| w & (1 << (i % 62)) != 0))
                .map(|(_, n)| ValueRef::Text(n.as_bytes()));
            batch.push((c, keys::pack(changed)));
        }
        update_fields(conn, &batch, stamp)
    }

    /// Field names of the replicated tables, by collection id.
    fn field_names(&self, conn: &Connection) -> Result<HashMap<u32, Vec<String>>> {
        self.with_collections(conn, |colls| {
            Ok(colls
                .iter()
                .filter_map(|c| match &c.kind {
                    Kind::Table(info) => Some((c.id, info.fields.clone())),
                    _ => None,
                })
                .collect())
        })
    }

    /// Re-reads table shapes (and rebuilds triggers) when the writer changed the schema.
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
        // The same statement sizes as the trigger capture, so they stay prepared.
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

/// Gives changed fields of live rows this site's stamp, in one statement per part; rows with
/// no live record (they predate replication) are recorded as created now.
fn update_fields(
    conn: &Connection,
    batch: &[(&Captured, Vec<u8>)],
    stamp: &dyn Fn(&Captured) -> Stamp,
) -> Result<()> {
    for part in chunk_sizes(batch) {
        let values = vec!["(?, ?, ?, ?, ?, ?)"; part.len()].join(", ");
        let sql = format!(
            "WITH v(tbl, key, hlc, site, seq, names) AS (VALUES {values})
             UPDATE _pluresdb_clock SET seq = v.seq, ver = pluresdb_clock_set(ver, v.hlc, v.site, v.seq, v.names)
             FROM v
             WHERE _pluresdb_clock.tbl = v.tbl AND _pluresdb_clock.key = v.key AND _pluresdb_clock.cl % 2 = 1"
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        for (i, (c, names)) in part.iter().enumerate() {
            let s = stamp(c);
            stmt.raw_bind_parameter(6 * i + 1, i64::from(c.coll))?;
            stmt.raw_bind_parameter(6 * i + 2, c.key.as_slice())?;
            stmt.raw_bind_parameter(6 * i + 3, s.hlc as i64)?;
            stmt.raw_bind_parameter(6 * i + 4, i64::from(s.site))?;
            stmt.raw_bind_parameter(6 * i + 5, s.seq as i64)?;
            stmt.raw_bind_parameter(6 * i + 6, names.as_slice())?;
        }
        let updated = stmt.raw_execute()?;
        if updated < part.len() {
            for (c, _) in part.iter() {
                upsert_missing(conn, c.coll, &c.key, stamp(c))?;
            }
        }
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
        self.captured.lock().len()
    }

    fn discard_since(&self, mark: usize) {
        self.captured.lock().truncate(mark);
    }

    fn flush(&self, conn: &Connection) -> Result<()> {
        self.flush_captured(conn)
    }

    fn after_statement(&self, conn: &Connection) -> Result<()> {
        if self.captured.lock().len() >= FLUSH_AT {
            self.flush_captured(conn)
        } else {
            self.refresh_schema(conn)
        }
    }
}
