//! The in-memory adjacency of the node/edge graph (see `pluresdb-graph`), kept consistent with
//! the committed tables through the index log, like the vector indexes.
//!
//! Built from the tables on the first graph query, then caught up before each query with the
//! log entries triggers wrote for node and edge rows. A query inside a write transaction that
//! changed the graph runs on a private copy with the pending changes applied, so a rollback
//! never reaches the shared graph.

use std::collections::{BTreeSet, HashMap};
use std::ops::Deref;

use parking_lot::{RwLock, RwLockReadGuard, RwLockUpgradableReadGuard, RwLockWriteGuard};
use pluresdb_graph::{Graph, NodeIx, RelIx};
use rusqlite::{Connection, OptionalExtension};

use crate::error::{Error, Result};
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
    graph: Graph,
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
            GraphView::Shared(g) => &g.as_ref().expect("loaded before viewing").graph,
            GraphView::Private(g) => g,
        }
    }
}

/// One node or edge row that changed.
type Entry = (i64, i64);

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
            let mut graph = loaded.graph.clone();
            if !apply(conn, &mut graph, &pending)? {
                graph = build(conn)?.graph;
            }
            return Ok(GraphView::Private(Box::new(graph)));
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
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let done = (|| -> Result<i64> {
            // Another handle may have moved the mark while this one waited for the lock (a
            // bulk load's mark sends readers back to the tables): never lower it.
            let now = trimmed_mark(conn)?;
            if now >= applied {
                return Ok(now);
            }
            index_log::delete(conn, GRAPH_NODES, applied)?;
            index_log::delete(conn, GRAPH_EDGES, applied)?;
            set_trimmed_mark(conn, applied)?;
            Ok(applied)
        })();
        match done {
            Ok(mark) => {
                conn.execute_batch("COMMIT")?;
                self.trimmed_seen
                    .store(mark, std::sync::atomic::Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }
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
fn entries_after(conn: &Connection, seq: i64) -> Result<(Vec<Entry>, i64)> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, idx, rid FROM _pluresdb_index_log WHERE seq > ?1 AND idx < 0 ORDER BY seq",
    )?;
    let mut rows = stmt.query([seq])?;
    let mut seen = BTreeSet::new();
    let mut last = seq;
    while let Some(row) = rows.next()? {
        last = row.get(0)?;
        seen.insert((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?));
    }
    // Nodes (-1) sort after edges (-2): apply edges first, then node removals and types.
    Ok((seen.into_iter().collect(), last))
}

fn catch_up(conn: &Connection, state: &mut Option<Loaded>) -> Result<()> {
    if let Some(loaded) = state.as_mut()
        && trimmed_mark(conn)? <= loaded.applied_seq
    {
        let (pending, last) = entries_after(conn, loaded.applied_seq)?;
        if apply(conn, &mut loaded.graph, &pending)? {
            loaded.applied_seq = last;
            return Ok(());
        }
    }
    *state = Some(build(conn)?);
    Ok(())
}

/// From this many logged edges a catch-up reads every node id at once, not one by one.
const READ_ALL_NAMES_AT: usize = 4096;

/// Node ids and relation names by the integer ids edges are stored with, as one snapshot has
/// them.
struct Names {
    /// Node ids (placeholders' too: an edge may point at one) in one buffer, and where each
    /// row id's is.
    text: String,
    /// Start and end of each id in `text`, by row id (`UNKNOWN` where not read).
    at: Vec<(u32, u32)>,
    relations: HashMap<i64, String>,
}

/// A row id whose node id was not read.
const UNKNOWN: (u32, u32) = (u32::MAX, u32::MAX);

impl Names {
    /// The relation names, and no node ids yet.
    fn new(conn: &Connection) -> Result<Names> {
        let relations = conn
            .prepare_cached("SELECT id, name FROM _pluresdb_relations")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(Names {
            text: String::new(),
            at: Vec::new(),
            relations,
        })
    }

    fn push(&mut self, rid: i64, id: &str) -> Result<()> {
        let (Ok(slot), Ok(start), Ok(end)) = (
            usize::try_from(rid),
            u32::try_from(self.text.len()),
            u32::try_from(self.text.len() + id.len()),
        ) else {
            return Err(Error::internal(format!(
                "node row {rid} is out of the range the graph's loader reads"
            )));
        };
        if self.at.len() <= slot {
            self.at.resize(slot + 1, UNKNOWN);
        }
        self.at[slot] = (start, end);
        self.text.push_str(id);
        Ok(())
    }

    /// Node row `rid`'s id, if it was read.
    fn node(&self, rid: i64) -> Option<&str> {
        let &(start, end) = self.at.get(usize::try_from(rid).ok()?)?;
        (start != u32::MAX).then(|| &self.text[start as usize..end as usize])
    }

    /// Reads every node row, passing each live node (row id, id, type) to `live` and keeping
    /// the ids of the others (placeholders, deleted nodes), which a live edge may point at.
    fn read_all(
        &mut self,
        conn: &Connection,
        mut live: impl FnMut(i64, &str, Option<&str>),
    ) -> Result<()> {
        let bad = |what: &str, e: rusqlite::types::FromSqlError| {
            Error::internal(format!("a node {what} in _pluresdb_nodes is not text: {e}"))
        };
        let mut stmt = conn.prepare_cached("SELECT rid, id, type, cl FROM _pluresdb_nodes")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let rid: i64 = row.get(0)?;
            let id = row.get_ref(1)?.as_str().map_err(|e| bad("id", e))?;
            if row.get::<_, i64>(3)? % 2 == 0 {
                self.push(rid, id)?;
                continue;
            }
            if rid < 0 {
                return Err(Error::internal(format!(
                    "node row {rid} is out of the range the graph's loader reads"
                )));
            }
            live(
                rid,
                id,
                row.get_ref(2)?
                    .as_str_or_null()
                    .map_err(|e| bad("type", e))?,
            );
        }
        Ok(())
    }

    /// Reads every node row's id, from the id index (a fraction of the table's pages).
    fn read_ids(&mut self, conn: &Connection) -> Result<()> {
        let mut stmt = conn.prepare_cached("SELECT rid, id FROM _pluresdb_nodes ORDER BY id")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let id = row.get_ref(1)?.as_str().map_err(|e| {
                Error::internal(format!("a node id in _pluresdb_nodes is not text: {e}"))
            })?;
            self.push(row.get(0)?, id)?;
        }
        Ok(())
    }

    /// Makes sure node row `rid`'s id is known; false when the row does not exist.
    fn look_up(&mut self, conn: &Connection, rid: i64) -> Result<bool> {
        if self.node(rid).is_some() {
            return Ok(true);
        }
        let id: Option<String> = conn
            .prepare_cached("SELECT id FROM _pluresdb_nodes WHERE rid = ?1")?
            .query_row([rid], |r| r.get(0))
            .optional()?;
        match id {
            Some(id) => self.push(rid, &id).map(|()| true),
            None => Ok(false),
        }
    }

    /// The edge `(src, rel, dst)` by name, looking up node ids not read yet; `None` when a
    /// node row or the relation does not exist.
    fn edge(
        &mut self,
        conn: &Connection,
        (src, rel, dst): (i64, i64, i64),
    ) -> Result<Option<(&str, &str, &str)>> {
        if !self.look_up(conn, src)? || !self.look_up(conn, dst)? {
            return Ok(None);
        }
        let relation = self.relations.get(&rel).map(String::as_str);
        Ok(match (self.node(src), relation, self.node(dst)) {
            (Some(src), Some(rel), Some(dst)) => Some((src, rel, dst)),
            _ => None,
        })
    }
}

/// Applies changed rows; false when a row is gone (deleted outside PluresDB), which needs a
/// rebuild.
fn apply(conn: &Connection, graph: &mut Graph, entries: &[Entry]) -> Result<bool> {
    let mut edge =
        conn.prepare_cached("SELECT src, rel, dst, cl FROM _pluresdb_edges WHERE eid = ?1")?;
    let mut node =
        conn.prepare_cached("SELECT id, type, cl FROM _pluresdb_nodes WHERE rid = ?1")?;
    let mut names = Names::new(conn)?;
    let edges = entries
        .iter()
        .filter(|(idx, _)| *idx == GRAPH_EDGES)
        .count();
    if edges >= READ_ALL_NAMES_AT {
        names.read_ids(conn)?;
    }
    for &(idx, rid) in entries {
        if idx == GRAPH_EDGES {
            let row: Option<(i64, i64, i64, i64)> = edge
                .query_row([rid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .optional()?;
            let Some((src, rel, dst, cl)) = row else {
                return Ok(false);
            };
            let Some((src, rel, dst)) = names.edge(conn, (src, rel, dst))? else {
                return Ok(false);
            };
            if cl % 2 == 1 {
                graph.add_edge(src, rel, dst);
            } else {
                graph.remove_edge(src, rel, dst);
            }
        } else if idx == GRAPH_NODES {
            let row: Option<(String, Option<String>, i64)> = node
                .query_row([rid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?;
            let Some((id, node_type, cl)) = row else {
                return Ok(false);
            };
            if cl % 2 == 1 {
                graph.add_node(&id, node_type.as_deref());
            } else if graph.remove_node(&id) {
                // Its live edges stay, with the node implicit, as a rebuild has them: an edge
                // merged before its nodes (whose placeholder rows log a dead node), or one a
                // peer linked while another deleted the node.
                let mut live = conn.prepare_cached(
                    "SELECT src, rel, dst FROM _pluresdb_edges
                     WHERE (src = ?1 OR dst = ?1) AND cl % 2 = 1",
                )?;
                let edges: Vec<(i64, i64, i64)> = live
                    .query_map([rid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<rusqlite::Result<_>>()?;
                for ids in edges {
                    let Some((src, rel, dst)) = names.edge(conn, ids)? else {
                        return Ok(false);
                    };
                    graph.add_edge(src, rel, dst);
                }
            }
        }
    }
    Ok(true)
}

/// Builds the graph from the tables (live nodes, then live edges in one bulk load).
fn build(conn: &Connection) -> Result<Loaded> {
    let applied_seq: i64 = conn
        .prepare_cached("SELECT coalesce(max(seq), 0) FROM _pluresdb_index_log")?
        .query_row([], |r| r.get(0))?;
    let mut graph = Graph::new();
    let mut names = Names::new(conn)?;
    // The graph's index of each live node, by row id; other rows (placeholders, deleted
    // nodes) become implicit nodes when a live edge points at one.
    let mut slots: Vec<NodeIx> = Vec::new();
    names.read_all(conn, |rid, id, node_type| {
        let slot = rid as usize;
        if slots.len() <= slot {
            slots.resize(slot + 1, NodeIx::MAX);
        }
        slots[slot] = graph.add_node(id, node_type);
    })?;
    let mut relations: HashMap<i64, RelIx> = HashMap::new();
    let mut edges: Vec<(NodeIx, RelIx, NodeIx)> = Vec::new();
    let mut stmt =
        conn.prepare_cached("SELECT src, rel, dst FROM _pluresdb_edges WHERE cl % 2 = 1")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let (src, rel, dst): (i64, i64, i64) = (row.get(0)?, row.get(1)?, row.get(2)?);
        let mut node = |rid: i64| -> Option<NodeIx> {
            let slot = usize::try_from(rid).ok()?;
            if let Some(&v) = slots.get(slot).filter(|&&v| v != NodeIx::MAX) {
                return Some(v);
            }
            let v = graph.intern_node(names.node(rid)?);
            if slots.len() <= slot {
                slots.resize(slot + 1, NodeIx::MAX);
            }
            slots[slot] = v;
            Some(v)
        };
        // An edge whose node row or relation is gone (deleted outside PluresDB) is left out,
        // as the edge views leave it out.
        let (Some(from), Some(to)) = (node(src), node(dst)) else {
            continue;
        };
        let rel = match relations.get(&rel) {
            Some(&r) => r,
            None => {
                let Some(name) = names.relations.get(&rel) else {
                    continue;
                };
                let r = graph.intern_relation(name);
                relations.insert(rel, r);
                r
            }
        };
        edges.push((from, rel, to));
    }
    graph
        .extend_edges_ix(&edges)
        .map_err(|e| Error::internal(format!("loading the graph's edges: {e}")))?;
    Ok(Loaded { graph, applied_seq })
}
