//! `link_many`: many edges linked in one transaction, with the endpoint checks, the inserts
//! and the sync metadata done in bulk.

use std::collections::{BTreeSet, HashMap};

use rusqlite::OptionalExtension;
use serde_json::Value as Json;

use super::edges::edge_key;
use super::{Edge, as_object, check_id, parse_object};
use crate::bulk_cache::BulkCache;
use crate::database::Database;
use crate::error::{Error, Result};
use crate::events::{Change, EdgeChange};

/// Edges per multi-row INSERT in `link_many`.
const INSERT_CHUNK: usize = 128;

/// Loads of at least this many edges may rebuild the incoming-edge index (see `link_many`).
const REBUILD_INDEX_AT: usize = 50_000;

/// From this many ends (two per edge) `link_many` may scan the node table to find them.
const SCAN_NODES_AT: usize = 10_000;

/// An edge to link: `(from, relation, to, data)`.
type EdgeIn<'a> = (&'a str, &'a str, &'a str, Option<&'a Json>);

/// An edge of `link_many` by the ids it is stored with: source row, relation, target row,
/// its place in the input and its data.
type EdgeIds<'a> = (i64, i64, i64, u32, Option<&'a Json>);

/// What `link_many` stores with each edge it creates or revives: its time, the writing site,
/// and its sync clock (the transaction's `db_version` and the versions).
struct Created<'a> {
    hlc: i64,
    site: &'a [u8],
    seq: i64,
    ver: &'a [u8],
}

/// The statement that inserts `rows` edges of `link_many` that do not exist yet. Its first
/// four parameters are what every row shares (see [`Created`]), then four per row: source,
/// relation, target and data.
fn insert_sql(rows: usize) -> String {
    use std::fmt::Write;
    // OR IGNORE (rather than ON CONFLICT DO NOTHING, the same for these rows, which are
    // never NULL): a statement that cannot abort needs no statement journal, and on a loaded
    // graph each row of the chunk changes a page of the incoming-edge index at random, so the
    // journal would copy about a page per row and spill to a temporary file.
    let mut sql = String::from(
        "INSERT OR IGNORE INTO _pluresdb_edges
             (src, rel, dst, data, created_hlc, updated_hlc, site, cl, seq, ver)
         VALUES ",
    );
    for i in 0..rows {
        let p = 5 + 4 * i;
        let sep = if i == 0 { "" } else { ", " };
        let _ = write!(
            sql,
            "{sep}(?{p}, ?{}, ?{}, ?{}, ?1, ?1, ?2, 1, ?3, ?4)",
            p + 1,
            p + 2,
            p + 3
        );
    }
    sql
}

/// Inserts the edges of `chunk` (sorted by key) that do not exist yet with `stmt`, a
/// statement from [`insert_sql`] for `chunk.len()` rows; returns how many were inserted.
fn insert_new_edges(
    stmt: &mut rusqlite::Statement<'_>,
    chunk: &[EdgeIds<'_>],
    created: &Created<'_>,
) -> Result<usize> {
    stmt.raw_bind_parameter(1, created.hlc)?;
    stmt.raw_bind_parameter(2, created.site)?;
    stmt.raw_bind_parameter(3, created.seq)?;
    stmt.raw_bind_parameter(4, created.ver)?;
    for (i, &(from, relation, to, _, data)) in chunk.iter().enumerate() {
        let p = 5 + 4 * i;
        stmt.raw_bind_parameter(p, from)?;
        stmt.raw_bind_parameter(p + 1, relation)?;
        stmt.raw_bind_parameter(p + 2, to)?;
        match data {
            Some(d) => stmt.raw_bind_parameter(p + 3, d.to_string())?,
            None => stmt.raw_bind_parameter(p + 3, "{}")?,
        }
    }
    Ok(stmt.raw_execute()?)
}

/// Finds the row ids of live nodes for `link_many`.
enum LiveNodes<'a> {
    /// Every live node, read in one pass: for loads whose ends make up much of the graph.
    /// (A load looks up two ends per edge: foldhash hashes a short id several times faster
    /// than the standard library's SipHash.)
    All(HashMap<Box<str>, i64, foldhash::fast::RandomState>),
    /// Looked up one by one (and remembered).
    Each(HashMap<&'a str, Option<i64>>),
}

impl<'a> LiveNodes<'a> {
    /// Picks the way for a load of `edges` edges.
    fn for_load(conn: &rusqlite::Connection, edges: usize) -> Result<Self> {
        let ends = edges.saturating_mul(2);
        let scan = ends >= SCAN_NODES_AT && {
            let nodes: i64 = conn
                .prepare_cached("SELECT coalesce(max(rid), 0) FROM _pluresdb_nodes")?
                .query_row([], |r| r.get(0))?;
            ends as i64 * 4 >= nodes
        };
        if !scan {
            return Ok(LiveNodes::Each(HashMap::new()));
        }
        let mut all = HashMap::default();
        let mut stmt =
            conn.prepare_cached("SELECT rid, id FROM _pluresdb_nodes WHERE cl % 2 = 1")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            if let rusqlite::types::ValueRef::Text(id) = row.get_ref(1)?
                && let Ok(id) = std::str::from_utf8(id)
            {
                all.insert(id.into(), row.get(0)?);
            }
        }
        Ok(LiveNodes::All(all))
    }

    fn get(&mut self, conn: &rusqlite::Connection, id: &'a str) -> Result<Option<i64>> {
        match self {
            LiveNodes::All(all) => Ok(all.get(id).copied()),
            LiveNodes::Each(seen) => match seen.get(id) {
                Some(&rid) => Ok(rid),
                None => {
                    let rid = super::ends::live_node(conn, id)?;
                    seen.insert(id, rid);
                    Ok(rid)
                }
            },
        }
    }
}

/// The error for ends of edges that are not live nodes, naming the first few.
fn missing_nodes(missing: BTreeSet<&str>) -> Error {
    let shown: Vec<String> = missing.iter().take(5).map(|m| format!("{m:?}")).collect();
    Error::not_found(format!(
        "{} node{} do{} not exist ({}{}); create them with put before linking",
        missing.len(),
        if missing.len() == 1 { "" } else { "s" },
        if missing.len() == 1 { "es" } else { "" },
        shown.join(", "),
        if missing.len() > 5 { ", ..." } else { "" }
    ))
}

/// The edges of a `link_many` by stored ids, sorted by them: in key order the inserts walk
/// the edge B-trees front to back instead of jumping around them, and a repeated edge's
/// copies stay in input order (its last data wins). Interns new relations; fails if an end
/// is not a live node.
fn edge_ids<'a>(conn: &rusqlite::Connection, edges: &[EdgeIn<'a>]) -> Result<Vec<EdgeIds<'a>>> {
    let mut nodes = LiveNodes::for_load(conn, edges.len())?;
    let mut missing: BTreeSet<&str> = BTreeSet::new();
    let mut relations: HashMap<&str, i64> = HashMap::new();
    let mut last_rel: Option<(&str, i64)> = None;
    let mut ids = Vec::with_capacity(edges.len());
    for (at, &(from, relation, to, data)) in edges.iter().enumerate() {
        let (Some(src), Some(dst)) = (nodes.get(conn, from)?, nodes.get(conn, to)?) else {
            for id in [from, to] {
                if nodes.get(conn, id)?.is_none() {
                    missing.insert(id);
                }
            }
            continue;
        };
        // Edges often come grouped by relation (or all of one): a repeat needs no lookup.
        let rel = match last_rel {
            Some((name, rel)) if name == relation => rel,
            _ => match relations.get(relation) {
                Some(&rel) => rel,
                None => {
                    let rel = super::ends::relation_or_insert(conn, relation)?;
                    relations.insert(relation, rel);
                    rel
                }
            },
        };
        last_rel = Some((relation, rel));
        ids.push((src, rel, dst, at as u32, data));
    }
    if !missing.is_empty() {
        return Err(missing_nodes(missing));
    }
    ids.sort_unstable_by_key(|&(src, rel, dst, at, _)| (src, rel, dst, at));
    Ok(ids)
}

impl Database {
    /// Links many edges in one transaction: `(from, relation, to, data)` each, with the
    /// semantics of [`link`](Self::link) (both nodes must exist; an existing edge keeps its data
    /// unless new data is given). Much faster than calling `link` in a loop: endpoints are
    /// checked in one pass and each edge's sync clock is written with its row. Returns how many edges were
    /// created or changed. Nothing is written if any edge is refused.
    pub fn link_many<'a, I>(&self, edges: I) -> Result<usize>
    where
        I: IntoIterator<Item = EdgeIn<'a>>,
    {
        self.require_graph()?;
        let edges: Vec<EdgeIn<'a>> = edges.into_iter().collect();
        for (i, (from, relation, to, data)) in edges.iter().enumerate() {
            let at = |e: Error| e.context(format!("edge {} ({from} -[{relation}]-> {to})", i + 1));
            check_id("source node id", from).map_err(at)?;
            check_id("relation", relation).map_err(at)?;
            check_id("target node id", to).map_err(at)?;
            if let Some(d) = data {
                as_object("edge data", d).map_err(at)?;
            }
        }
        if edges.is_empty() {
            return Ok(0);
        }
        let _cache = BulkCache::raise(self, edges.len())?;
        let (changed, unlogged) = self.transaction(|db| {
            db.with_writer_conn(|conn| {
                let ids = edge_ids(conn, &edges)?;
                let now = db.clock().now();
                let stamp = now.as_u64() as i64;
                let site = db.site_id().as_bytes().to_vec();
                // Edges keep their sync clock in their rows: each one this load creates
                // stores the same one.
                let clock = db.replication().edge_stamp(conn, now)?;
                let new_rows = Created {
                    hlc: stamp,
                    site: &site,
                    seq: clock.seq(),
                    ver: clock.created(),
                };
                let mut find = conn.prepare_cached(
                    "SELECT eid, cl, data, created_hlc, ver FROM _pluresdb_edges
                     WHERE src = ?1 AND rel = ?2 AND dst = ?3",
                )?;
                let mut revive = conn.prepare_cached(
                    "UPDATE _pluresdb_edges SET data = ?1, created_hlc = ?2, updated_hlc = ?2, site = ?3,
                            cl = cl + 1, seq = ?5, ver = ?6 WHERE eid = ?4",
                )?;
                let mut update = conn.prepare_cached(
                    "UPDATE _pluresdb_edges SET data = ?1, updated_hlc = ?2, site = ?3, seq = ?5,
                            ver = ?6 WHERE eid = ?4",
                )?;
                // A load at least as large as the graph's edges builds the incoming-edge index
                // afterwards, in one sorted pass, instead of inserting every entry at a random
                // place (which costs more than the rest of the load).
                let rebuild = edges.len() >= REBUILD_INDEX_AT && {
                    let existing: Option<i64> = conn
                        .query_row("SELECT max(eid) FROM _pluresdb_edges", [], |r| r.get(0))?;
                    edges.len() as i64 >= existing.unwrap_or(0)
                };
                // Such a load also leaves its edges out of the graph's log: readers rebuild the
                // adjacency from the table, which costs less than logging and replaying each.
                if rebuild {
                    conn.execute_batch("DROP INDEX IF EXISTS _pluresdb_edges_in")?;
                    super::index::pause_edge_log(conn)?;
                }
                // Which edges of the input this load created, revived or gave new data.
                let mut written = vec![false; edges.len()];
                let mut changed = 0;
                let record = |(from, relation, to, data): &EdgeIn<'_>| {
                    if db.engine().hub.is_active() {
                        db.engine().hub.record(Change::Edge(EdgeChange {
                            from: (*from).to_owned(),
                            relation: (*relation).to_owned(),
                            to: (*to).to_owned(),
                            edge: Some(Edge {
                                from: (*from).to_owned(),
                                relation: (*relation).to_owned(),
                                to: (*to).to_owned(),
                                data: data.and_then(|d| d.as_object().cloned()).unwrap_or_default(),
                                created_at: now,
                                updated_at: now,
                            }),
                        }));
                    }
                };
                // The previous edge of the load: a repeat of it is not new.
                let mut previous: Option<(i64, i64, i64)> = None;
                // Every chunk but the last has INSERT_CHUNK edges: they share one statement,
                // made once (building its text for each chunk took about 3.5% of a 1M-edge load).
                let mut full = (ids.len() >= INSERT_CHUNK)
                    .then(|| conn.prepare_cached(&insert_sql(INSERT_CHUNK)))
                    .transpose()?;
                for chunk in ids.chunks(INSERT_CHUNK) {
                    // Most edges of a bulk load are new: insert the chunk in one statement
                    // (a statement journals each page it changes once, not once per row).
                    let inserted = match full.as_mut().filter(|_| chunk.len() == INSERT_CHUNK) {
                        Some(stmt) => insert_new_edges(stmt, chunk, &new_rows)?,
                        None => {
                            let mut tail = conn.prepare_cached(&insert_sql(chunk.len()))?;
                            insert_new_edges(&mut tail, chunk, &new_rows)?
                        }
                    };
                    if inserted == chunk.len() {
                        for &(.., at, _) in chunk {
                            written[at as usize] = true;
                            record(&edges[at as usize]);
                        }
                        changed += chunk.len();
                        previous = chunk.last().map(|e| (e.0, e.1, e.2));
                        continue;
                    }
                    // Some existed: tell each edge's case from its row. One this load created
                    // carries its stamp and a first life (a revived one has a later life).
                    for &(src, rel, dst, at, data) in chunk {
                        let repeat = previous == Some((src, rel, dst));
                        previous = Some((src, rel, dst));
                        let edge = &edges[at as usize];
                        type Row = (i64, i64, String, i64, Option<Vec<u8>>);
                        let current: Option<Row> = find
                            .query_row([src, rel, dst], |r| {
                                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                            })
                            .optional()?;
                        let text = data.map(|d| d.to_string());
                        match current {
                            None => {
                                return Err(Error::internal(format!(
                                    "edge {} -[{}]-> {} is neither new nor stored",
                                    edge.0, edge.1, edge.2
                                )));
                            }
                            Some((_, 1, _, created_hlc, _)) if created_hlc == stamp && !repeat => {}
                            Some((eid, cl, ..)) if cl % 2 == 0 => {
                                revive.execute(rusqlite::params![
                                    text.as_deref().unwrap_or("{}"),
                                    stamp,
                                    site,
                                    eid,
                                    new_rows.seq,
                                    new_rows.ver
                                ])?;
                            }
                            Some((eid, _, old, _, ver)) => {
                                let Some(new) = data else { continue };
                                if parse_object(&old)? == *new.as_object().expect("checked above") {
                                    continue;
                                }
                                update.execute(rusqlite::params![
                                    text,
                                    stamp,
                                    site,
                                    eid,
                                    new_rows.seq,
                                    clock.data_changed(ver.as_deref())?
                                ])?;
                            }
                        }
                        written[at as usize] = true;
                        changed += 1;
                        record(edge);
                    }
                }
                let count = written.iter().filter(|w| **w).count();
                db.replication().note_edge_writes(conn, &clock, count, || {
                    let written = edges.iter().zip(&written).filter(|(_, w)| **w);
                    written.map(|(e, _)| edge_key(e.0, e.1, e.2)).collect()
                })?;
                if rebuild {
                    super::index::resume_edge_log(conn)?;
                    conn.execute_batch(crate::schema::EDGES_IN_INDEX)?;
                }
                Ok((changed, rebuild))
            })
        })?;
        // The load left the graph's log: bring this process's graph up to date now, if it
        // has one, rather than have every graph query inside a write transaction rebuild a
        // private copy until a read outside one catches it up.
        if unlogged && !self.in_transaction() && self.graph_index().is_loaded() {
            self.with_graph(|_, _| Ok(()))?;
        }
        Ok(changed)
    }
}
