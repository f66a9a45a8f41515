//! The graph's in-memory adjacency as built from the node and edge tables, and brought up to
//! date with changed rows (see [`index`](super::index) for when).
//!
//! Edges are stored by their nodes' row ids; the adjacency keeps, next to the graph, each live
//! node row's index in it, so an edge is added or removed without looking its nodes up by id.
//! The graph holds the visible edges: live ones between live nodes (see
//! `Database::get_edge`). A live edge at a node row that is not live waits, hidden, until the
//! row lives again.

use std::collections::{HashMap, HashSet};

use pluresdb_graph::{EdgeRef, Graph, NodeIx, RelIx};
use rusqlite::{Connection, OptionalExtension};

use super::rid_map::RidMap;
use crate::error::{Error, Result};
use crate::index_log::{GRAPH_EDGES, GRAPH_NODES};

/// The graph, and the index in it of every live node row.
#[derive(Clone)]
pub(crate) struct Adjacency {
    pub(crate) graph: Graph,
    /// By node row id: the row's node while the row is live. Only live rows are kept, and
    /// each has a declared node.
    slots: RidMap<NodeIx>,
    /// Node rows that are not live and may have live edges (seen when they died or when such
    /// an edge was stored): when one lives again, its edges are read back into the graph.
    /// A row here may have none left, which costs a lookup.
    waiting: HashSet<i64>,
}

impl Adjacency {
    fn new() -> Adjacency {
        Adjacency {
            graph: Graph::new(),
            slots: RidMap::new(NodeIx::MAX),
            waiting: HashSet::new(),
        }
    }

    /// Node row `rid`'s index, if the row was live when last seen.
    #[inline]
    fn slot(&self, rid: i64) -> Option<NodeIx> {
        self.slots.get(rid)
    }

    /// The live edge `(src, rel, dst)` in the graph's terms when both its node rows are live;
    /// otherwise `None`, and the rows that are not wait for it.
    fn visible(
        &mut self,
        relations: &mut Relations,
        (src, rel, dst): (i64, i64, i64),
    ) -> Option<(NodeIx, RelIx, NodeIx)> {
        let (Some(from), Some(to)) = (self.slot(src), self.slot(dst)) else {
            for rid in [src, dst] {
                if self.slot(rid).is_none() {
                    self.waiting.insert(rid);
                }
            }
            return None;
        };
        // An edge whose relation row is gone (deleted outside PluresDB) is left out, as the
        // edge views leave it out.
        relations
            .get(&mut self.graph, rel, true)
            .map(|rel| (from, rel, to))
    }
}

/// The graph's index of each relation by its stored id, interned as edges first use it.
struct Relations {
    names: HashMap<i64, String>,
    interned: HashMap<i64, RelIx>,
}

impl Relations {
    /// The relation names as stored, none interned yet.
    fn read(conn: &Connection) -> Result<Relations> {
        let names = conn
            .prepare_cached("SELECT id, name FROM _pluresdb_relations")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(Relations {
            names,
            interned: HashMap::new(),
        })
    }

    /// Relation `rel`'s index, interned if `add`; `None` when the relation row does not exist
    /// (or, without `add`, the graph never had it).
    fn get(&mut self, graph: &mut Graph, rel: i64, add: bool) -> Option<RelIx> {
        if let Some(&r) = self.interned.get(&rel) {
            return Some(r);
        }
        let name = self.names.get(&rel)?;
        let r = if add {
            graph.intern_relation(name)
        } else {
            graph.relation(name)?
        };
        self.interned.insert(rel, r);
        Some(r)
    }
}

/// Builds the graph from the tables (live nodes, then visible edges in one bulk load).
pub(crate) fn build(conn: &Connection) -> Result<Adjacency> {
    let mut adj = Adjacency::new();
    let mut stmt =
        conn.prepare_cached("SELECT rid, id, type FROM _pluresdb_nodes WHERE cl % 2 = 1")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let bad = |what: &str, e: rusqlite::types::FromSqlError| {
            Error::internal(format!("a node {what} in _pluresdb_nodes is not text: {e}"))
        };
        let id = row.get_ref(1)?.as_str().map_err(|e| bad("id", e))?;
        let node_type = row
            .get_ref(2)?
            .as_str_or_null()
            .map_err(|e| bad("type", e))?;
        let v = adj.graph.add_node(id, node_type);
        adj.slots.set(row.get(0)?, v);
    }
    let mut relations = Relations::read(conn)?;
    let mut edges: Vec<(NodeIx, RelIx, NodeIx)> = Vec::new();
    let mut stmt =
        conn.prepare_cached("SELECT src, rel, dst FROM _pluresdb_edges WHERE cl % 2 = 1")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let stored = (row.get(0)?, row.get(1)?, row.get(2)?);
        edges.extend(adj.visible(&mut relations, stored));
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
/// Node rows come first: a live one gets its node, a dead one's node goes with its edges.
/// Then changed edges go or come (those between live rows, in one batch), with the live edges
/// of rows that live again after waiting (see [`Adjacency::waiting`]).
pub(crate) fn apply(conn: &Connection, adj: &mut Adjacency, changed: &[Changed]) -> Result<bool> {
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
    let mut revived = Vec::new();
    for (&rid, (id, node_type, cl)) in rids.iter().zip(node_rows) {
        // A row whose id changed, or whose id another live row had (SQL edits of the table:
        // a rename, a row replaced without its delete logged): its edges are on another
        // node. A node is always some live row's, so one not in this row's slot is another
        // row's.
        let held = adj.slot(rid);
        let renamed = held.is_some_and(|v| adj.graph.get_id(v) != Some(id.as_str()));
        let taken = adj.graph.node(&id).is_some_and(|v| held != Some(v));
        if renamed || taken {
            return Ok(false);
        }
        if cl % 2 == 1 {
            let v = adj.graph.add_node(&id, node_type.as_deref());
            adj.slots.set(rid, v);
            if held.is_none() && adj.waiting.remove(&rid) {
                revived.push(rid);
            }
        } else if held.is_some() {
            adj.slots.remove(rid);
            adj.graph.remove_node(&id);
            adj.waiting.insert(rid);
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
    let mut relations = Relations::read(conn)?;
    for e in edges.iter().filter(|e| !e.live) {
        if !relations.names.contains_key(&e.rel) {
            return Ok(false);
        }
        let (Some(from), Some(to)) = (adj.slot(e.src), adj.slot(e.dst)) else {
            continue;
        };
        if let Some(rel) = relations.get(&mut adj.graph, e.rel, false) {
            adj.graph.remove_edge_ix(EdgeRef { from, rel, to });
        }
    }
    let mut added = Vec::new();
    for e in edges.iter().filter(|e| e.live) {
        if !relations.names.contains_key(&e.rel) {
            return Ok(false);
        }
        added.extend(adj.visible(&mut relations, (e.src, e.rel, e.dst)));
    }
    let mut stmt = conn.prepare_cached(
        "SELECT src, rel, dst FROM _pluresdb_edges WHERE (src = ?1 OR dst = ?1) AND cl % 2 = 1",
    )?;
    for rid in revived {
        let stored: Vec<(i64, i64, i64)> = stmt
            .query_map([rid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for edge in stored {
            added.extend(adj.visible(&mut relations, edge));
        }
    }
    // An index the graph does not know means the slots went wrong: build afresh.
    Ok(adj.graph.extend_edges_ix(&added).is_ok())
}
