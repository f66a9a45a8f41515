//! The in-memory adjacency of the node/edge graph (see `pluresdb-graph`), kept consistent with
//! the committed tables through the index log, like the vector indexes.
//!
//! Built from the tables on the first graph query, then caught up before each query with the
//! log entries triggers wrote for node and edge rows. A query inside a write transaction that
//! changed the graph runs on a private copy with the pending changes applied, so a rollback
//! never reaches the shared graph.

use std::ops::Deref;

use parking_lot::{RwLock, RwLockReadGuard, RwLockUpgradableReadGuard, RwLockWriteGuard};
use pluresdb_graph::Graph;
use rusqlite::{Connection, OptionalExtension};

use super::adjacency::{Adjacency, Changed, apply, build};
use crate::engine::in_write_transaction;
use crate::error::Result;
use crate::index_log::{self, GRAPH_EDGES, GRAPH_NODES};

/// Triggers logging node and edge rows for the graph (`IF NOT EXISTS`: running them again
/// restores a dropped one).
const TRIGGERS: &str = "
CREATE TRIGGER IF NOT EXISTS _pluresdb_graph_node_ins AFTER INSERT ON _pluresdb_nodes BEGIN
    INSERT INTO _pluresdb_index_log(idx, rid) VALUES (-1, NEW.rid);
END;
CREATE TRIGGER IF NOT EXISTS _pluresdb_graph_node_upd AFTER UPDATE OF cl, type, id ON _pluresdb_nodes
WHEN NEW.cl IS NOT OLD.cl OR NEW.type IS NOT OLD.type OR NEW.id IS NOT OLD.id BEGIN
    INSERT INTO _pluresdb_index_log(idx, rid) VALUES (-1, NEW.rid);
END;
CREATE TRIGGER IF NOT EXISTS _pluresdb_graph_node_del AFTER DELETE ON _pluresdb_nodes BEGIN
    INSERT INTO _pluresdb_index_log(idx, rid) VALUES (-1, OLD.rid);
END;
CREATE TRIGGER IF NOT EXISTS _pluresdb_graph_edge_ins AFTER INSERT ON _pluresdb_edges BEGIN
    INSERT INTO _pluresdb_index_log(idx, rid) VALUES (-2, NEW.eid);
END;
CREATE TRIGGER IF NOT EXISTS _pluresdb_graph_edge_upd AFTER UPDATE OF cl, src, rel, dst ON _pluresdb_edges
WHEN NEW.cl IS NOT OLD.cl OR NEW.src IS NOT OLD.src OR NEW.rel IS NOT OLD.rel OR NEW.dst IS NOT OLD.dst BEGIN
    INSERT INTO _pluresdb_index_log(idx, rid) VALUES (-2, NEW.eid);
END;
CREATE TRIGGER IF NOT EXISTS _pluresdb_graph_edge_del AFTER DELETE ON _pluresdb_edges BEGIN
    INSERT INTO _pluresdb_index_log(idx, rid) VALUES (-2, OLD.eid);
END;
";

/// Meta key: graph log entries up to this sequence number were deleted.
const TRIMMED_KEY: &str = "graph_log_trimmed";

/// Creates the log and its graph triggers (on open, for read-write databases).
pub(crate) fn install(conn: &Connection) -> Result<()> {
    index_log::create(conn)?;
    conn.execute_batch(TRIGGERS)?;
    Ok(())
}

/// The trigger logging inserted edges (bulk loads drop it for a while).
const EDGE_INSERT_TRIGGER: &str = "_pluresdb_graph_edge_ins";

/// Stops logging inserted edges for the rest of the current write transaction, until
/// [`resume_edge_log`]: a bulk load as large as the graph is cheaper to rebuild the
/// adjacency from than to log and replay row by row.
pub(crate) fn pause_edge_log(conn: &Connection) -> Result<()> {
    conn.execute_batch(&format!("DROP TRIGGER IF EXISTS {EDGE_INSERT_TRIGGER}"))?;
    Ok(())
}

/// Logs inserted edges again, and sends every graph reader (this process and others) back to
/// the tables: a placeholder entry gives the unlogged load a sequence number, and the log is
/// marked trimmed up to it, which readers that applied less already obey by rebuilding.
pub(crate) fn resume_edge_log(conn: &Connection) -> Result<()> {
    conn.execute_batch(TRIGGERS)?;
    conn.execute(
        "INSERT INTO _pluresdb_index_log(idx, rid) VALUES (0, 0)",
        [],
    )?;
    set_trimmed_mark(conn, conn.last_insert_rowid())
}

/// Sets the trimmed mark. It only ever rises: a load's placeholder is the newest entry, and
/// `trim` checks the mark under the write lock before setting it.
fn set_trimmed_mark(conn: &Connection, seq: i64) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO _pluresdb_meta(key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    )?
    .execute(rusqlite::params![TRIMMED_KEY, seq])?;
    Ok(())
}

pub(crate) struct Loaded {
    adj: Adjacency,
    applied_seq: i64,
}

/// The shared graph of one database.
#[derive(Default)]
pub(crate) struct GraphIndex {
    state: RwLock<Option<Loaded>>,
    /// The trimmed mark as last seen, so deciding whether to trim needs no query.
    trimmed_seen: std::sync::atomic::AtomicI64,
}

/// A graph to query: the shared one, or a private copy with a transaction's changes.
pub(crate) enum GraphView<'a> {
    Shared(RwLockReadGuard<'a, Option<Loaded>>),
    Private(Box<Graph>),
}

impl Deref for GraphView<'_> {
    type Target = Graph;

    fn deref(&self) -> &Graph {
        match self {
            GraphView::Shared(g) => &g.as_ref().expect("loaded before viewing").adj.graph,
            GraphView::Private(g) => g,
        }
    }
}

impl GraphIndex {
    /// The graph as `conn` sees it. Outside a write transaction `conn` must be inside one read
    /// transaction for the whole call (a statement, or an explicit `BEGIN`).
    pub(crate) fn view(&self, conn: &Connection) -> Result<GraphView<'_>> {
        let write_tx = conn.transaction_state(None::<&str>)? == rusqlite::TransactionState::Write;
        if write_tx {
            let state = self.state.read();
            // No shared graph, or a bulk load left its edges out of the log: build a private
            // one (without holding the lock, which catching up elsewhere needs).
            let rebuild = match state.as_ref() {
                None => true,
                Some(loaded) => trimmed_mark(conn)? > loaded.applied_seq,
            };
            if rebuild {
                drop(state);
                return Ok(GraphView::Private(Box::new(build(conn)?.graph)));
            }
            let loaded = state.as_ref().expect("checked above");
            let (pending, _) = entries_after(conn, loaded.applied_seq)?;
            if pending.is_empty() {
                return Ok(GraphView::Shared(state));
            }
            let mut adj = loaded.adj.clone();
            if !apply(conn, &mut adj, &pending)? {
                adj = build(conn)?;
            }
            return Ok(GraphView::Private(Box::new(adj.graph)));
        }
        let state = self.state.upgradable_read();
        if let Some(loaded) = state.as_ref()
            && is_current(conn, loaded.applied_seq)?
        {
            return Ok(GraphView::Shared(RwLockUpgradableReadGuard::downgrade(
                state,
            )));
        }
        let mut state = RwLockUpgradableReadGuard::upgrade(state);
        catch_up(conn, &mut state)?;
        Ok(GraphView::Shared(RwLockWriteGuard::downgrade(state)))
    }

    /// Deletes graph log entries this process has applied, once there are many; other
    /// processes notice (through the trimmed mark) and rebuild. `conn` is the writer, outside
    /// any transaction.
    pub(crate) fn trim(&self, conn: &Connection, at_least: i64) -> Result<()> {
        let Some(applied) = self.applied() else {
            return Ok(());
        };
        let trimmed = trimmed_mark(conn)?;
        self.trimmed_seen
            .store(trimmed, std::sync::atomic::Ordering::Relaxed);
        if applied - trimmed < at_least {
            return Ok(());
        }
        let mark = in_write_transaction(conn, || {
            // Another handle may have moved the mark while this one waited for the lock (a
            // bulk load's mark sends readers back to the tables): never lower it.
            let now = trimmed_mark(conn)?;
            if now >= applied {
                return Ok(now);
            }
            trim_log_to(conn, applied)?;
            Ok(applied)
        })?;
        self.trimmed_seen
            .store(mark, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

impl GraphIndex {
    /// Trims the graph log on close when it holds at least `at_least` entries past the
    /// trimmed mark: up to what this process applied if it holds the graph, else all of them.
    /// A process that writes nodes and edges and never queries the graph otherwise grows the
    /// log by a row per write for ever; a process that holds the graph and applied less
    /// rebuilds it from the tables on its next query, as after any trim. `conn` is the
    /// writer, outside any transaction.
    pub(crate) fn trim_on_close(&self, conn: &Connection, at_least: i64) -> Result<()> {
        if self.is_loaded() {
            return self.trim(conn, at_least);
        }
        let pending = |conn: &Connection| -> Result<(i64, i64)> {
            let mark = trimmed_mark(conn)?;
            let (count, high): (i64, Option<i64>) = conn
                .prepare_cached(
                    "SELECT count(*), max(seq) FROM _pluresdb_index_log
                     WHERE seq > ?1 AND idx IN (?2, ?3)",
                )?
                .query_row([mark, GRAPH_NODES, GRAPH_EDGES], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
            Ok((count, high.unwrap_or(mark)))
        };
        if pending(conn)?.0 < at_least {
            return Ok(());
        }
        in_write_transaction(conn, || {
            let (count, high) = pending(conn)?;
            if count >= at_least {
                trim_log_to(conn, high)?;
            }
            Ok(())
        })
    }
}

/// Deletes the graph's log entries up to `mark` and moves the trimmed mark there (in the
/// caller's write transaction).
fn trim_log_to(conn: &Connection, mark: i64) -> Result<()> {
    index_log::delete(conn, GRAPH_NODES, mark)?;
    index_log::delete(conn, GRAPH_EDGES, mark)?;
    set_trimmed_mark(conn, mark)
}

impl GraphIndex {
    /// Whether this process holds the graph (built by an earlier graph query).
    pub(crate) fn is_loaded(&self) -> bool {
        self.state.read().is_some()
    }

    fn applied(&self) -> Option<i64> {
        self.state
            .try_read()
            .and_then(|s| s.as_ref().map(|l| l.applied_seq))
    }

    /// True when enough log entries were applied since the last trim to make one worth it.
    pub(crate) fn wants_trim(&self, at_least: i64) -> bool {
        self.applied().is_some_and(|a| {
            a - self.trimmed_seen.load(std::sync::atomic::Ordering::Relaxed) >= at_least
        })
    }
}

fn trimmed_mark(conn: &Connection) -> Result<i64> {
    Ok(conn
        .prepare_cached("SELECT value FROM _pluresdb_meta WHERE key = ?1")?
        .query_row([TRIMMED_KEY], |r| r.get::<_, i64>(0))
        .optional()?
        .unwrap_or(0))
}

/// True when no graph entry after `applied` exists and none up to it was trimmed away unseen.
fn is_current(conn: &Connection, applied: i64) -> Result<bool> {
    // One statement for both checks: this runs before every graph query.
    Ok(conn
        .prepare_cached(
            "SELECT NOT EXISTS (SELECT 1 FROM _pluresdb_index_log WHERE seq > ?1 AND idx < 0)
                AND coalesce((SELECT value FROM _pluresdb_meta WHERE key = ?2), 0) <= ?1",
        )?
        .query_row(rusqlite::params![applied, TRIMMED_KEY], |r| {
            r.get::<_, bool>(0)
        })?)
}

/// Graph entries after `seq`, each row once, and the last sequence number seen.
fn entries_after(conn: &Connection, seq: i64) -> Result<(Vec<Changed>, i64)> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, idx, rid FROM _pluresdb_index_log WHERE seq > ?1 AND idx < 0 ORDER BY seq",
    )?;
    let mut rows = stmt.query([seq])?;
    let mut changed = Vec::new();
    let mut last = seq;
    while let Some(row) = rows.next()? {
        last = row.get(0)?;
        changed.push((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?));
    }
    // Sorted, each row once (edge rows by row id: reading them goes forward).
    changed.sort_unstable();
    changed.dedup();
    Ok((changed, last))
}

fn catch_up(conn: &Connection, state: &mut Option<Loaded>) -> Result<()> {
    if let Some(loaded) = state.as_mut()
        && trimmed_mark(conn)? <= loaded.applied_seq
    {
        let (pending, last) = entries_after(conn, loaded.applied_seq)?;
        match apply(conn, &mut loaded.adj, &pending) {
            Ok(true) => {
                loaded.applied_seq = last;
                return Ok(());
            }
            Ok(false) => {}
            // Applied in part: the graph cannot take the same rows again (a node back from
            // the dead would not bring its edges), so none is kept.
            Err(e) => {
                *state = None;
                return Err(e);
            }
        }
    }
    *state = Some(load(conn)?);
    Ok(())
}

/// Builds the graph from the tables, as of the log's newest entry.
fn load(conn: &Connection) -> Result<Loaded> {
    let applied_seq: i64 = conn
        .prepare_cached("SELECT coalesce(max(seq), 0) FROM _pluresdb_index_log")?
        .query_row([], |r| r.get(0))?;
    Ok(Loaded {
        adj: build(conn)?,
        applied_seq,
    })
}
