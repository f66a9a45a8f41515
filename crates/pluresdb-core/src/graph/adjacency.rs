//! The graph's in-memory adjacency as built from the node and edge tables, and brought up to
//! date with changed rows (see [`index`](super::index) for when).
//!
//! Edges are stored by their nodes' row ids; the adjacency keeps, next to the graph, each live
//! node row's index in it, so an edge is added or removed without looking its nodes up by id.

use std::collections::HashMap;

use pluresdb_graph::{EdgeRef, Graph, NodeIx, RelIx};
use rusqlite::{Connection, OptionalExtension};

use super::rid_map::RidMap;
use crate::error::{Error, Result};
use crate::index_log::{GRAPH_EDGES, GRAPH_NODES};

/// The graph, and the index in it of every live node row.
#[derive(Clone)]
pub(crate) struct Adjacency {
    pub(crate) graph: Graph,
    /// By node row id: the row's node while the row is live. Only live rows are kept: their
    /// nodes are declared, and a declared node leaves the graph only when its row dies (an
    /// implicit one, such as a placeholder's, goes with its last edge).
    slots: RidMap<NodeIx>,
}

impl Adjacency {
    fn new() -> Adjacency {
        Adjacency {
            graph: Graph::new(),
            slots: RidMap::new(NodeIx::MAX),
        }
    }

    /// Node row `rid`'s index, if the row was live when last seen.
    #[inline]
    fn slot(&self, rid: i64) -> Option<NodeIx> {
        self.slots.get(rid)
    }

    /// The node of row `rid`, which may be a placeholder or a dead row (an implicit node,
    /// created if need be); `None` when the row does not exist.
    fn intern(&mut self, conn: &Connection, names: &mut Names, rid: i64) -> Result<Option<NodeIx>> {
        if let Some(v) = self.slot(rid) {
            return Ok(Some(v));
        }
        if !names.look_up(conn, rid)? {
            return Ok(None);
        }
        Ok(names.node(rid).map(|id| self.graph.intern_node(id)))
    }

    /// The stored edge `(src, rel, dst)` in the graph's terms, interning what is new; `None`
    /// when a node row or the relation does not exist.
    fn intern_edge(
        &mut self,
        conn: &Connection,
        names: &mut Names,
        relations: &mut Relations,
        (src, rel, dst): (i64, i64, i64),
    ) -> Result<Option<EdgeRef>> {
        let (Some(from), Some(to)) = (
            self.intern(conn, names, src)?,
            self.intern(conn, names, dst)?,
        ) else {
            return Ok(None);
        };
        Ok(relations
            .get(&mut self.graph, names, rel, true)
            .map(|rel| EdgeRef { from, rel, to }))
    }

    /// The node of row `rid` if the graph has it (`Some(None)` if not); `None` when the row
    /// does not exist.
    fn find(
        &self,
        conn: &Connection,
        names: &mut Names,
        rid: i64,
    ) -> Result<Option<Option<NodeIx>>> {
        if let Some(v) = self.slot(rid) {
            return Ok(Some(Some(v)));
        }
        if !names.look_up(conn, rid)? {
            return Ok(None);
        }
        Ok(names.node(rid).map(|id| self.graph.node(id)))
    }
}

/// From this many logged edges with an end not among the live node rows seen before, a
/// catch-up reads every node id at once, not one by one.
const READ_ALL_NAMES_AT: usize = 4096;

/// Node ids and relation names by the integer ids edges are stored with, as one snapshot has
/// them.
struct Names {
    /// Node ids (placeholders' too: an edge may point at one) in one buffer, and where each
    /// row id's is.
    text: String,
    /// Start and end of each id in `text`, by row id.
    at: RidMap<(u32, u32)>,
    relations: HashMap<i64, String>,
}

/// An empty slot of [`Names::at`].
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
            at: RidMap::new(UNKNOWN),
            relations,
        })
    }

    fn push(&mut self, rid: i64, id: &str) -> Result<()> {
        let (Ok(start), Ok(end)) = (
            u32::try_from(self.text.len()),
            u32::try_from(self.text.len() + id.len()),
        ) else {
            return Err(Error::internal(format!(
                "the graph's loader holds node ids of at most 4 GiB in all; node row {rid}'s \
                 is past that"
            )));
        };
        self.at.set(rid, (start, end));
        self.text.push_str(id);
        Ok(())
    }

    /// Node row `rid`'s id, if it was read.
    fn node(&self, rid: i64) -> Option<&str> {
        let (start, end) = self.at.get(rid)?;
        Some(&self.text[start as usize..end as usize])
    }

    /// Reads every node row, passing each live node (row id, id, type) to `live` and keeping
    /// the ids of the others (placeholders, deleted nodes), which a live edge may point at.
    fn read_all(
        &mut self,
        conn: &Connection,
        mut live: impl FnMut(i64, &str, Option<&str>) -> Result<()>,
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
            let node_type = row.get_ref(2)?.as_str_or_null();
            live(rid, id, node_type.map_err(|e| bad("type", e))?)?;
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
}

/// The graph's index of each relation by its stored id, interned as edges first use it.
#[derive(Default)]
struct Relations(HashMap<i64, RelIx>);

impl Relations {
    /// Relation `rel`'s index, interned if `add`; `None` when the relation row does not exist
    /// (or, without `add`, the graph never had it).
    fn get(&mut self, graph: &mut Graph, names: &Names, rel: i64, add: bool) -> Option<RelIx> {
        if let Some(&r) = self.0.get(&rel) {
            return Some(r);
        }
        let name = names.relations.get(&rel)?;
        let r = if add {
            graph.intern_relation(name)
        } else {
            graph.relation(name)?
        };
        self.0.insert(rel, r);
        Some(r)
    }
}

/// Builds the graph from the tables (live nodes, then live edges in one bulk load).
pub(crate) fn build(conn: &Connection) -> Result<Adjacency> {
    let mut adj = Adjacency::new();
    let mut names = Names::new(conn)?;
    names.read_all(conn, |rid, id, node_type| {
        let v = adj.graph.add_node(id, node_type);
        adj.slots.set(rid, v);
        Ok(())
    })?;
    // Rows that are not live (placeholders, deleted nodes) become implicit nodes when a live
    // edge points at one; they are few.
    let mut implicit: HashMap<i64, NodeIx> = HashMap::new();
    let mut relations = Relations::default();
    let mut edges: Vec<(NodeIx, RelIx, NodeIx)> = Vec::new();
    let mut stmt =
        conn.prepare_cached("SELECT src, rel, dst FROM _pluresdb_edges WHERE cl % 2 = 1")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let (src, rel, dst): (i64, i64, i64) = (row.get(0)?, row.get(1)?, row.get(2)?);
        let mut node = |rid: i64| -> Option<NodeIx> {
            if let Some(v) = adj.slot(rid) {
                return Some(v);
            }
            if let Some(&v) = implicit.get(&rid) {
                return Some(v);
            }
            let v = adj.graph.intern_node(names.node(rid)?);
            implicit.insert(rid, v);
            Some(v)
        };
        // An edge whose node row or relation is gone (deleted outside PluresDB) is left out,
        // as the edge views leave it out.
        let (Some(from), Some(to)) = (node(src), node(dst)) else {
            continue;
        };
        let Some(rel) = relations.get(&mut adj.graph, &names, rel, true) else {
            continue;
        };
        edges.push((from, rel, to));
    }
    adj.graph
        .extend_edges_ix(&edges)
        .map_err(|e| Error::internal(format!("loading the graph's edges: {e}")))?;
    Ok(adj)
}

/// One changed node or edge row: `(log index id, row id)`.
pub(crate) type Changed = (i64, i64);

/// A changed edge row as it is now.
struct EdgeRow {
    src: i64,
    rel: i64,
    dst: i64,
    live: bool,
}

/// A changed row read with the others of its range when at least this share of the range (in
/// row ids) changed: a bulk write's rows are consecutive, and reading forward over them costs
/// less than a lookup each.
const SCAN_WHEN_ONE_IN: i64 = 4;

/// The rows `ids` (sorted, each once) of `table` (keyed by its row id `key`), as `columns` (a
/// select list) read by `read`; `None` if one does not exist.
fn rows_by_id<T>(
    conn: &Connection,
    (table, key, columns): (&str, &str, &str),
    ids: &[i64],
    read: impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<Option<Vec<T>>> {
    let mut rows = Vec::with_capacity(ids.len());
    let (Some(&first), Some(&last)) = (ids.first(), ids.last()) else {
        return Ok(Some(rows));
    };
    let dense = last
        .checked_sub(first)
        .is_some_and(|span| span / SCAN_WHEN_ONE_IN < ids.len() as i64);
    if dense {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {columns}, {key} FROM {table} WHERE {key} BETWEEN ?1 AND ?2 ORDER BY {key}"
        ))?;
        let id_column = stmt.column_count() - 1;
        let mut found = stmt.query([first, last])?;
        let mut wanted = ids.iter().peekable();
        while let Some(row) = found.next()? {
            let id: i64 = row.get(id_column)?;
            // A wanted row before this one does not exist.
            if wanted.next_if(|&&w| w < id).is_some() {
                return Ok(None);
            }
            if wanted.next_if_eq(&&id).is_some() {
                rows.push(read(row)?);
            }
        }
        return Ok(wanted.peek().is_none().then_some(rows));
    }
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {columns} FROM {table} WHERE {key} = ?1"))?;
    for &id in ids {
        match stmt.query_row([id], &read).optional()? {
            Some(row) => rows.push(row),
            None => return Ok(None),
        }
    }
    Ok(Some(rows))
}

/// The edge rows `eids` (sorted, each once) as they are now; `None` if one does not exist.
fn edge_rows(conn: &Connection, eids: &[i64]) -> Result<Option<Vec<EdgeRow>>> {
    rows_by_id(
        conn,
        ("_pluresdb_edges", "eid", "src, rel, dst, cl"),
        eids,
        |r| {
            Ok(EdgeRow {
                src: r.get(0)?,
                rel: r.get(1)?,
                dst: r.get(2)?,
                live: r.get::<_, i64>(3)? % 2 == 1,
            })
        },
    )
}

/// Applies changed rows (each once); false when a row is gone (deleted outside PluresDB),
/// which needs a rebuild.
///
/// Live node rows come first, so the edges find their nodes by row id; then removed edges,
/// then added ones in one batch (nothing leaves the graph between resolving their nodes and
/// adding them); then dead node rows, whose nodes go with their edges (live edges that still
/// point at one come back with the node implicit, as a rebuild has them).
pub(crate) fn apply(conn: &Connection, adj: &mut Adjacency, changed: &[Changed]) -> Result<bool> {
    let mut names = Names::new(conn)?;
    let rids: Vec<i64> = changed
        .iter()
        .filter(|(idx, _)| *idx == GRAPH_NODES)
        .map(|&(_, rid)| rid)
        .collect();
    let read = |r: &rusqlite::Row<'_>| -> rusqlite::Result<(String, Option<String>, i64)> {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    };
    let Some(node_rows) = rows_by_id(
        conn,
        ("_pluresdb_nodes", "rid", "id, type, cl"),
        &rids,
        read,
    )?
    else {
        return Ok(false);
    };
    let mut dead = Vec::new();
    for (&rid, (id, node_type, cl)) in rids.iter().zip(node_rows) {
        // A row whose id changed, or whose id another live row had (SQL edits of the table:
        // a rename, a row replaced without its delete logged): its edges are on another
        // node. A declared node is always some live row's, so one not in this row's slot is
        // another row's.
        let held = adj.slot(rid);
        let renamed = held.is_some_and(|v| adj.graph.get_id(v) != Some(id.as_str()));
        let taken = adj
            .graph
            .node(&id)
            .is_some_and(|v| held != Some(v) && !adj.graph.is_implicit(v));
        if renamed || taken {
            return Ok(false);
        }
        if cl % 2 == 1 {
            let v = adj.graph.add_node(&id, node_type.as_deref());
            adj.slots.set(rid, v);
        } else {
            // Found by id until it goes: a row dying after it may free its node first.
            adj.slots.remove(rid);
            dead.push((rid, id));
        }
    }
    let eids: Vec<i64> = changed
        .iter()
        .filter(|(idx, _)| *idx == GRAPH_EDGES)
        .map(|&(_, eid)| eid)
        .collect();
    let Some(edges) = edge_rows(conn, &eids)? else {
        return Ok(false);
    };
    let unseen = edges
        .iter()
        .flat_map(|e| [e.src, e.dst])
        .filter(|&rid| adj.slot(rid).is_none())
        .count();
    if unseen >= READ_ALL_NAMES_AT {
        names.read_ids(conn)?;
    }
    let mut relations = Relations::default();
    for e in edges.iter().filter(|e| !e.live) {
        let (Some(from), Some(to)) = (
            adj.find(conn, &mut names, e.src)?,
            adj.find(conn, &mut names, e.dst)?,
        ) else {
            return Ok(false);
        };
        if !names.relations.contains_key(&e.rel) {
            return Ok(false);
        }
        let rel = relations.get(&mut adj.graph, &names, e.rel, false);
        if let (Some(from), Some(rel), Some(to)) = (from, rel, to) {
            adj.graph.remove_edge_ix(EdgeRef { from, rel, to });
        }
    }
    let mut added = Vec::new();
    for e in edges.iter().filter(|e| e.live) {
        match adj.intern_edge(conn, &mut names, &mut relations, (e.src, e.rel, e.dst))? {
            Some(edge) => added.push((edge.from, edge.rel, edge.to)),
            None => return Ok(false),
        }
    }
    // An index the graph does not know means the slots went wrong: build afresh.
    if adj.graph.extend_edges_ix(&added).is_err() {
        return Ok(false);
    }
    for (rid, id) in dead {
        let removed = adj.graph.remove_node(&id);
        let mut live = conn.prepare_cached(
            "SELECT src, rel, dst FROM _pluresdb_edges WHERE (src = ?1 OR dst = ?1) AND cl % 2 = 1",
        )?;
        let ends: Vec<(i64, i64, i64)> = live
            .query_map([rid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        if !removed {
            // Live edges at a row the graph has no node for: the row's id changed (by SQL).
            if !ends.is_empty() {
                return Ok(false);
            }
            continue;
        }
        for stored in ends {
            let Some(edge) = adj.intern_edge(conn, &mut names, &mut relations, stored)? else {
                return Ok(false);
            };
            if adj.graph.add_edge_ix(edge).is_err() {
                return Ok(false);
            }
        }
    }
    Ok(true)
}
