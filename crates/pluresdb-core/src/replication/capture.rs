//! Change capture: triggers report row changes of replicated tables to `pluresdb_capture`,
//! which keeps them in memory; before the transaction ends (and in batches meanwhile) they
//! are written to `_pluresdb_clock` with this site's versions.

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
            match (item.op, &item.new_key) {
                (Op::Insert, _) => {
                    let run = items[i..].iter().take_while(|c| c.op == Op::Insert).count();
                    let mut done = 0;
                    while done < run {
                        let size = [64, 16, 4, 1]
                            .into_iter()
                            .find(|s| *s <= run - done)
                            .unwrap_or(1);
                        let chunk = &items[i + done..i + done + size];
                        upsert_created(
                            conn,
                            chunk
                                .iter()
                                .map(|c| (c.coll, c.key.as_slice(), RowClock::whole(stamp(c)))),
                        )?;
                        done += size;
                    }
                    i += run;
                    continue;
                }
                (Op::Update, Some(new_key)) => {
                    mark_deleted(conn, item.coll, &item.key, stamp(item))?;
                    upsert_created(
                        conn,
                        [(item.coll, new_key.as_slice(), RowClock::whole(stamp(item)))],
                    )?;
                }
                (Op::Update, None) => {
                    let names = self.changed_fields(conn, item)?;
                    set_fields(conn, item.coll, &item.key, &names, stamp(item))?;
                }
                (Op::Delete, _) => mark_deleted(conn, item.coll, &item.key, stamp(item))?,
            }
            i += 1;
        }
        self.persist_clock(conn)
    }

    fn changed_fields(&self, conn: &Connection, item: &Captured) -> Result<Vec<String>> {
        self.with_collections(conn, |colls| {
            let Some(coll) = colls.by_id(item.coll) else {
                return Ok(Vec::new());
            };
            let Kind::Table(info) = &coll.kind else {
                return Ok(Vec::new());
            };
            Ok(info
                .fields
                .iter()
                .enumerate()
                .filter(|(i, _)| {
                    item.mask
                        .get(i / 62)
                        .is_some_and(|w| w & (1 << (i % 62)) != 0)
                })
                .map(|(_, n)| n.clone())
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
            GraphWrite::Fields(names) => set_fields(conn, coll, key, names, stamp)?,
            GraphWrite::Deleted => mark_deleted(conn, coll, key, stamp)?,
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

/// Fields of a live row written locally.
fn set_fields(
    conn: &Connection,
    coll: u32,
    key: &[u8],
    names: &[String],
    stamp: Stamp,
) -> Result<()> {
    let current: Option<(i64, Vec<u8>)> = {
        let mut stmt =
            conn.prepare_cached("SELECT cl, ver FROM _pluresdb_clock WHERE tbl = ?1 AND key = ?2")?;
        let mut rows = stmt.query(rusqlite::params![i64::from(coll), key])?;
        match rows.next()? {
            Some(r) => Some((r.get(0)?, r.get(1)?)),
            None => None,
        }
    };
    let Some((cl, ver)) = current.filter(|(cl, _)| cl % 2 == 1) else {
        // No record of the row (it predates replication): record it as created now.
        return upsert_created(conn, [(coll, key, RowClock::whole(stamp))]);
    };
    let mut clock = RowClock::decode(&ver)?;
    for name in names {
        clock.set_field(name, stamp);
    }
    conn.prepare_cached(
        "UPDATE _pluresdb_clock SET seq = ?1, ver = ?2 WHERE tbl = ?3 AND key = ?4",
    )?
    .execute(rusqlite::params![
        stamp.seq as i64,
        clock.encode(),
        i64::from(coll),
        key
    ])?;
    let _ = cl;
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
