//! Edges: `link`, `unlink`, `get_edge`, `edges` and `neighbors`.

use rusqlite::OptionalExtension;
use serde_json::Value as Json;

use pluresdb_crdt::Hlc;

use super::nodes::{NODE_COLUMNS, node_from_row};
use super::{Direction, Edge, Node, as_object, check_id, parse_object};
use crate::bulk_cache::BulkCache;
use crate::database::Database;
use crate::error::{Error, Result};
use crate::events::{Change, EdgeChange};
use crate::replication::{EDGES_ID, GraphWrite, pack_key, pack_key_refs};
use crate::row::Row;
use crate::value::{Value, ValueRef};

/// Edges per multi-row INSERT in `link_many`.
const INSERT_CHUNK: usize = 128;

/// Loads of at least this many edges may rebuild the incoming-edge index (see `link_many`).
const REBUILD_INDEX_AT: usize = 50_000;

/// From this many distinct endpoints `link_many` may scan the node table to check them.
const SCAN_NODES_AT: usize = 10_000;

/// An edge to link: `(from, relation, to, data)`.
type EdgeIn<'a> = (&'a str, &'a str, &'a str, Option<&'a Json>);

/// Inserts the edges of `chunk` (sorted by key) that do not exist yet, in one statement;
/// returns how many were inserted.
fn insert_new_edges(
    conn: &rusqlite::Connection,
    chunk: &[EdgeIn<'_>],
    stamp: i64,
    site: &[u8],
) -> Result<usize> {
    let rows: Vec<String> = (0..chunk.len())
        .map(|i| {
            let p = 3 + 4 * i;
            format!("(?{p}, ?{}, ?{}, ?{}, ?1, ?1, ?2, 1)", p + 1, p + 2, p + 3)
        })
        .collect();
    // OR IGNORE (rather than ON CONFLICT DO NOTHING, the same for these rows, which are
    // never NULL): a statement that cannot abort needs no statement journal, and on a loaded
    // graph each row of the chunk changes a page of the incoming-edge index at random, so the
    // journal would copy about a page per row and spill to a temporary file.
    let mut stmt = conn.prepare_cached(&format!(
        "INSERT OR IGNORE INTO _pluresdb_edges (src, rel, dst, data, created_hlc, updated_hlc, site, cl)
         VALUES {}",
        rows.join(", ")
    ))?;
    stmt.raw_bind_parameter(1, stamp)?;
    stmt.raw_bind_parameter(2, site)?;
    for (i, (from, relation, to, data)) in chunk.iter().enumerate() {
        let p = 3 + 4 * i;
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

const EDGE_COLUMNS: &str = "src, rel, dst, data, created_hlc, updated_hlc";

fn edge_from_row(row: &Row) -> Result<Edge> {
    Ok(Edge {
        from: row.get(0)?,
        relation: row.get(1)?,
        to: row.get(2)?,
        data: parse_object(&row.get::<String>(3)?)?,
        created_at: Hlc::from_u64(row.get::<i64>(4)? as u64),
        updated_at: Hlc::from_u64(row.get::<i64>(5)? as u64),
    })
}

/// Fails naming the first few ids that are not live nodes.
fn check_nodes_exist<'a>(
    conn: &rusqlite::Connection,
    ids: impl Iterator<Item = &'a str>,
) -> Result<()> {
    let mut wanted: std::collections::HashSet<&str> = ids.collect();
    let mut missing: Vec<String> = Vec::new();
    let scan = wanted.len() >= SCAN_NODES_AT && {
        let nodes: i64 = conn
            .prepare_cached("SELECT coalesce(max(rid), 0) FROM _pluresdb_nodes")?
            .query_row([], |r| r.get(0))?;
        wanted.len() as i64 * 4 >= nodes
    };
    if scan {
        // Endpoints make up much of the graph: one pass over the node table costs less than
        // a lookup each.
        let mut stmt = conn.prepare_cached("SELECT id FROM _pluresdb_nodes WHERE cl % 2 = 1")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            if let rusqlite::types::ValueRef::Text(id) = row.get_ref(0)? {
                wanted.remove(std::str::from_utf8(id).unwrap_or_default());
            }
        }
        missing.extend(wanted.into_iter().map(str::to_owned));
    } else {
        let mut exists =
            conn.prepare_cached("SELECT 1 FROM _pluresdb_nodes WHERE id = ?1 AND cl % 2 = 1")?;
        for id in wanted {
            if !exists.exists([id])? {
                missing.push(id.to_owned());
            }
        }
    }
    missing.sort();
    if missing.is_empty() {
        return Ok(());
    }
    let shown: Vec<String> = missing.iter().take(5).map(|m| format!("{m:?}")).collect();
    Err(Error::not_found(format!(
        "{} node{} do{} not exist ({}{}); create them with put before linking",
        missing.len(),
        if missing.len() == 1 { "" } else { "s" },
        if missing.len() == 1 { "es" } else { "" },
        shown.join(", "),
        if missing.len() > 5 { ", ..." } else { "" }
    )))
}

/// Sorts edges by `(source, relation, target)`, a repeated edge's copies staying in input
/// order. An 8-byte prefix of the source is compared first, so most comparisons read no
/// string (a tuple sort chases two pointers per comparison).
fn sort_edges(edges: &mut Vec<EdgeIn<'_>>) {
    let prefix = |s: &str| {
        let mut b = [0u8; 8];
        let n = s.len().min(8);
        b[..n].copy_from_slice(&s.as_bytes()[..n]);
        u64::from_be_bytes(b)
    };
    let mut order: Vec<(u64, u32)> = edges
        .iter()
        .enumerate()
        .map(|(i, e)| (prefix(e.0), i as u32))
        .collect();
    order.sort_unstable_by(|x, y| {
        x.0.cmp(&y.0)
            .then_with(|| {
                let (a, b) = (&edges[x.1 as usize], &edges[y.1 as usize]);
                (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2))
            })
            .then(x.1.cmp(&y.1))
    });
    *edges = order.iter().map(|&(_, i)| edges[i as usize]).collect();
}

impl Database {
    /// Links `from -[relation]-> to` (both nodes must exist). Linking an existing edge
    /// replaces its data when `data` is given and keeps it otherwise.
    pub fn link(&self, from: &str, relation: &str, to: &str, data: Option<&Json>) -> Result<Edge> {
        self.require_graph()?;
        check_id("source node id", from)?;
        check_id("relation", relation)?;
        check_id("target node id", to)?;
        let patch = data.map(|d| as_object("edge data", d)).transpose()?;
        self.transaction(|db| {
            for (role, id) in [("source", from), ("target", to)] {
                let exists = db.get(
                    "SELECT 1 FROM _pluresdb_nodes WHERE id = ?1 AND cl % 2 = 1",
                    (id,),
                )?;
                if exists.is_none() {
                    return Err(Error::not_found(format!(
                        "{role} node {id:?} does not exist; create it with put before linking"
                    )));
                }
            }
            let now = db.clock().now();
            let site = db.site_id().as_bytes().to_vec();
            let current = db.get(
                &format!(
                    "SELECT {EDGE_COLUMNS}, eid, cl FROM _pluresdb_edges
                     WHERE src = ?1 AND rel = ?2 AND dst = ?3"
                ),
                (from, relation, to),
            )?;
            let key = pack_key(&[
                Value::Text(from.to_owned()),
                Value::Text(relation.to_owned()),
                Value::Text(to.to_owned()),
            ]);
            let (edge, write) = match current {
                Some(row) if row.get::<i64>(7)? % 2 == 1 => {
                    let old = edge_from_row(&row)?;
                    if patch.is_none_or(|p| *p == old.data) {
                        return Ok(old);
                    }
                    let data = patch.cloned().unwrap_or(old.data.clone());
                    db.run(
                        "UPDATE _pluresdb_edges SET data = ?1, updated_hlc = ?2, site = ?3
                         WHERE eid = ?4",
                        (
                            Json::Object(data.clone()).to_string(),
                            now.as_u64() as i64,
                            &site,
                            row.get::<i64>(6)?,
                        ),
                    )?;
                    (
                        Edge {
                            updated_at: now,
                            data,
                            ..old
                        },
                        GraphWrite::Fields(vec!["data".to_owned()]),
                    )
                }
                existing => {
                    let data = patch.cloned().unwrap_or_default();
                    let text = Json::Object(data.clone()).to_string();
                    let stamp = now.as_u64() as i64;
                    match existing {
                        Some(row) => db.run(
                            "UPDATE _pluresdb_edges SET data = ?1, created_hlc = ?2,
                                    updated_hlc = ?2, site = ?3, cl = cl + 1
                             WHERE eid = ?4",
                            (text, stamp, &site, row.get::<i64>(6)?),
                        )?,
                        None => db.run(
                            "INSERT INTO _pluresdb_edges
                                 (src, rel, dst, data, created_hlc, updated_hlc, site, cl)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, 1)",
                            (from, relation, to, text, stamp, &site),
                        )?,
                    };
                    (
                        Edge {
                            from: from.to_owned(),
                            relation: relation.to_owned(),
                            to: to.to_owned(),
                            data,
                            created_at: now,
                            updated_at: now,
                        },
                        GraphWrite::Created,
                    )
                }
            };
            db.with_writer_conn(|conn| {
                db.replication()
                    .capture_graph_write(conn, EDGES_ID, &key, write.as_ref(), now)
            })?;
            if db.engine().hub.is_active() {
                db.engine().hub.record(Change::Edge(EdgeChange {
                    from: from.to_owned(),
                    relation: relation.to_owned(),
                    to: to.to_owned(),
                    edge: Some(edge.clone()),
                }));
            }
            Ok(edge)
        })
    }

    /// Links many edges in one transaction: `(from, relation, to, data)` each, with the
    /// semantics of [`link`](Self::link) (both nodes must exist; an existing edge keeps its data
    /// unless new data is given). Much faster than calling `link` in a loop: endpoints are
    /// checked in batches and the sync metadata is written in bulk. Returns how many edges were
    /// created or changed. Nothing is written if any edge is refused.
    pub fn link_many<'a, I>(&self, edges: I) -> Result<usize>
    where
        I: IntoIterator<Item = EdgeIn<'a>>,
    {
        self.require_graph()?;
        let mut edges: Vec<EdgeIn<'a>> = edges.into_iter().collect();
        for (i, (from, relation, to, data)) in edges.iter().enumerate() {
            let at = |e: Error| e.context(format!("edge {} ({from} -[{relation}]-> {to})", i + 1));
            check_id("source node id", from).map_err(at)?;
            check_id("relation", relation).map_err(at)?;
            check_id("target node id", to).map_err(at)?;
            if let Some(d) = data {
                as_object("edge data", d).map_err(at)?;
            }
        }
        // In key order the inserts walk the edge B-trees front to back instead of jumping
        // around them (a repeated edge's last data still wins).
        sort_edges(&mut edges);
        let _cache = BulkCache::raise(self, edges.len())?;
        let (changed, unlogged) = self.transaction(|db| {
            db.with_writer_conn(|conn| {
                // Sorted by source: each source once, then every target.
                let mut sources: Vec<&str> = edges.iter().map(|e| e.0).collect();
                sources.dedup();
                check_nodes_exist(conn, sources.into_iter().chain(edges.iter().map(|e| e.2)))?;
                let now = db.clock().now();
                let stamp = now.as_u64() as i64;
                let site = db.site_id().as_bytes().to_vec();
                let mut find = conn.prepare_cached(
                    "SELECT eid, cl, data, created_hlc FROM _pluresdb_edges WHERE src = ?1 AND rel = ?2 AND dst = ?3",
                )?;
                let mut revive = conn.prepare_cached(
                    "UPDATE _pluresdb_edges SET data = ?1, created_hlc = ?2, updated_hlc = ?2, site = ?3,
                            cl = cl + 1 WHERE eid = ?4",
                )?;
                let mut update = conn.prepare_cached(
                    "UPDATE _pluresdb_edges SET data = ?1, updated_hlc = ?2, site = ?3 WHERE eid = ?4",
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
                let mut created: Vec<Vec<u8>> = Vec::new();
                let mut changed = 0;
                let record = |from: &str, relation: &str, to: &str, data: &Option<&Json>| {
                    if db.engine().hub.is_active() {
                        db.engine().hub.record(Change::Edge(EdgeChange {
                            from: from.to_owned(),
                            relation: relation.to_owned(),
                            to: to.to_owned(),
                            edge: Some(Edge {
                                from: from.to_owned(),
                                relation: relation.to_owned(),
                                to: to.to_owned(),
                                data: data.and_then(|d| d.as_object().cloned()).unwrap_or_default(),
                                created_at: now,
                                updated_at: now,
                            }),
                        }));
                    }
                };
                let key_of = |from: &str, relation: &str, to: &str| {
                    pack_key_refs([from, relation, to].map(|t| ValueRef::Text(t.as_bytes())))
                };
                // The previous edge of the load: a repeat of it is not new.
                let mut previous: Option<(&str, &str, &str)> = None;
                for chunk in edges.chunks(INSERT_CHUNK) {
                    // Most edges of a bulk load are new: insert the chunk in one statement
                    // (a statement journals each page it changes once, not once per row).
                    let inserted = insert_new_edges(conn, chunk, stamp, &site)?;
                    if inserted == chunk.len() {
                        for (from, relation, to, data) in chunk {
                            created.push(key_of(from, relation, to));
                            record(from, relation, to, data);
                        }
                        changed += chunk.len();
                        previous = chunk.last().map(|e| (e.0, e.1, e.2));
                        continue;
                    }
                    // Some existed: tell each edge's case from its row. One this load created
                    // carries its stamp and a first life (a revived one has a later life).
                    for (from, relation, to, data) in chunk {
                        let repeat = previous == Some((from, relation, to));
                        previous = Some((from, relation, to));
                        let current: Option<(i64, i64, String, i64)> = find
                            .query_row([from, relation, to], |r| {
                                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                            })
                            .optional()?;
                        let text = data.map(|d| d.to_string());
                        match current {
                            None => {
                                return Err(Error::internal(format!(
                                    "edge {from} -[{relation}]-> {to} is neither new nor stored"
                                )));
                            }
                            Some((_, 1, _, created_hlc)) if created_hlc == stamp && !repeat => {
                                created.push(key_of(from, relation, to));
                            }
                            Some((eid, cl, _, _)) if cl % 2 == 0 => {
                                revive.execute(rusqlite::params![text.as_deref().unwrap_or("{}"), stamp, site, eid])?;
                                created.push(key_of(from, relation, to));
                            }
                            Some((eid, _, old, _)) => {
                                let Some(new) = data else { continue };
                                if parse_object(&old)? == *new.as_object().expect("checked above") {
                                    continue;
                                }
                                update.execute(rusqlite::params![text, stamp, site, eid])?;
                                db.replication().capture_graph_write(
                                    conn,
                                    EDGES_ID,
                                    &key_of(from, relation, to),
                                    GraphWrite::Fields(vec!["data".to_owned()]).as_ref(),
                                    now,
                                )?;
                            }
                        }
                        changed += 1;
                        record(from, relation, to, data);
                    }
                }
                db.replication().capture_created(conn, EDGES_ID, &created, now)?;
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

    /// Removes the edge; returns whether it existed.
    pub fn unlink(&self, from: &str, relation: &str, to: &str) -> Result<bool> {
        self.require_graph()?;
        self.transaction(|db| {
            let now = db.clock().now();
            let changed = db.run(
                "UPDATE _pluresdb_edges SET cl = cl + 1, updated_hlc = ?1, site = ?2
                 WHERE src = ?3 AND rel = ?4 AND dst = ?5 AND cl % 2 = 1",
                (
                    now.as_u64() as i64,
                    db.site_id().as_bytes().to_vec(),
                    from,
                    relation,
                    to,
                ),
            )?;
            if changed.changes > 0 {
                let key = pack_key(&[
                    Value::Text(from.to_owned()),
                    Value::Text(relation.to_owned()),
                    Value::Text(to.to_owned()),
                ]);
                db.with_writer_conn(|conn| {
                    db.replication().capture_graph_write(
                        conn,
                        EDGES_ID,
                        &key,
                        GraphWrite::Deleted,
                        now,
                    )
                })?;
            }
            if changed.changes > 0 && db.engine().hub.is_active() {
                db.engine().hub.record(Change::Edge(EdgeChange {
                    from: from.to_owned(),
                    relation: relation.to_owned(),
                    to: to.to_owned(),
                    edge: None,
                }));
            }
            Ok(changed.changes > 0)
        })
    }

    /// The edge `from -[relation]-> to`, or `None`.
    pub fn get_edge(&self, from: &str, relation: &str, to: &str) -> Result<Option<Edge>> {
        self.require_graph()?;
        self.get(
            &format!(
                "SELECT {EDGE_COLUMNS} FROM _pluresdb_edges
                 WHERE src = ?1 AND rel = ?2 AND dst = ?3 AND cl % 2 = 1"
            ),
            (from, relation, to),
        )?
        .map(|r| edge_from_row(&r))
        .transpose()
    }

    /// Edges at node `id` in `direction`, optionally of one relation, ordered by relation and
    /// the other end's id.
    pub fn edges(
        &self,
        id: &str,
        direction: Direction,
        relation: Option<&str>,
    ) -> Result<Vec<Edge>> {
        self.require_graph()?;
        let mut out = Vec::new();
        if matches!(direction, Direction::Out | Direction::Both) {
            out.extend(self.edges_one_way(id, "src", "dst", relation)?);
        }
        if matches!(direction, Direction::In | Direction::Both) {
            out.extend(self.edges_one_way(id, "dst", "src", relation)?);
        }
        Ok(out)
    }

    fn edges_one_way(
        &self,
        id: &str,
        here: &str,
        there: &str,
        relation: Option<&str>,
    ) -> Result<Vec<Edge>> {
        let sql = format!(
            "SELECT {EDGE_COLUMNS} FROM _pluresdb_edges
             WHERE {here} = ?1 AND (?2 IS NULL OR rel = ?2) AND cl % 2 = 1
             ORDER BY rel, {there}"
        );
        self.all(&sql, (id, relation))?
            .iter()
            .map(edge_from_row)
            .collect()
    }

    /// The nodes at the other end of `id`'s edges (each once), ordered by id.
    pub fn neighbors(
        &self,
        id: &str,
        direction: Direction,
        relation: Option<&str>,
    ) -> Result<Vec<Node>> {
        self.require_graph()?;
        let (out, inc) = match direction {
            Direction::Out => (1, 0),
            Direction::In => (0, 1),
            Direction::Both => (1, 1),
        };
        let sql = format!(
            "SELECT {NODE_COLUMNS} FROM _pluresdb_nodes WHERE cl % 2 = 1 AND id IN (
                 SELECT dst FROM _pluresdb_edges
                 WHERE ?3 AND src = ?1 AND (?2 IS NULL OR rel = ?2) AND cl % 2 = 1
                 UNION
                 SELECT src FROM _pluresdb_edges
                 WHERE ?4 AND dst = ?1 AND (?2 IS NULL OR rel = ?2) AND cl % 2 = 1)
             ORDER BY id"
        );
        self.all(&sql, (id, relation, out, inc))?
            .iter()
            .map(node_from_row)
            .collect()
    }
}
