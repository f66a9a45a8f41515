//! Edges: `link`, `unlink`, `get_edge`, `edges` and `neighbors`.

use rusqlite::OptionalExtension;
use serde_json::Value as Json;

use pluresdb_crdt::Hlc;

use super::nodes::{NODE_COLUMNS, node_from_row};
use super::{Direction, Edge, Node, as_object, check_id, parse_object};
use crate::database::Database;
use crate::error::{Error, Result};
use crate::events::{Change, EdgeChange};
use crate::replication::{EDGES_ID, GraphWrite, pack_key};
use crate::row::Row;
use crate::value::Value;

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
    let wanted: std::collections::BTreeSet<&str> = ids.collect();
    let wanted: Vec<&str> = wanted.into_iter().collect();
    let mut missing: Vec<String> = Vec::new();
    let mut stmt = conn.prepare_cached(
        "SELECT value FROM json_each(?1)
         WHERE value NOT IN (SELECT id FROM _pluresdb_nodes WHERE cl % 2 = 1 AND id IN (SELECT value FROM json_each(?1)))",
    )?;
    for chunk in wanted.chunks(2000) {
        let list = serde_json::to_string(chunk).expect("strings serialize");
        let mut rows = stmt.query([list])?;
        while let Some(row) = rows.next()? {
            missing.push(row.get(0)?);
        }
    }
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
        I: IntoIterator<Item = (&'a str, &'a str, &'a str, Option<&'a Json>)>,
    {
        self.require_graph()?;
        let edges: Vec<_> = edges.into_iter().collect();
        for (i, (from, relation, to, data)) in edges.iter().enumerate() {
            let at = |e: Error| e.context(format!("edge {} ({from} -[{relation}]-> {to})", i + 1));
            check_id("source node id", from).map_err(at)?;
            check_id("relation", relation).map_err(at)?;
            check_id("target node id", to).map_err(at)?;
            if let Some(d) = data {
                as_object("edge data", d).map_err(at)?;
            }
        }
        self.transaction(|db| {
            db.with_writer_conn(|conn| {
                check_nodes_exist(conn, edges.iter().flat_map(|(f, _, t, _)| [*f, *t]))?;
                let now = db.clock().now();
                let stamp = now.as_u64() as i64;
                let site = db.site_id().as_bytes().to_vec();
                let mut find = conn.prepare_cached(
                    "SELECT eid, cl, data FROM _pluresdb_edges WHERE src = ?1 AND rel = ?2 AND dst = ?3",
                )?;
                let mut insert = conn.prepare_cached(
                    "INSERT INTO _pluresdb_edges (src, rel, dst, data, created_hlc, updated_hlc, site, cl)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, 1) ON CONFLICT (src, rel, dst) DO NOTHING",
                )?;
                let mut revive = conn.prepare_cached(
                    "UPDATE _pluresdb_edges SET data = ?1, created_hlc = ?2, updated_hlc = ?2, site = ?3,
                            cl = cl + 1 WHERE eid = ?4",
                )?;
                let mut update = conn.prepare_cached(
                    "UPDATE _pluresdb_edges SET data = ?1, updated_hlc = ?2, site = ?3 WHERE eid = ?4",
                )?;
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
                for (from, relation, to, data) in &edges {
                    let key = pack_key(&[
                        Value::Text((*from).to_owned()),
                        Value::Text((*relation).to_owned()),
                        Value::Text((*to).to_owned()),
                    ]);
                    let text = data.map(|d| d.to_string());
                    // Most edges of a bulk load are new: try the insert first.
                    if insert.execute(rusqlite::params![from, relation, to, text.as_deref().unwrap_or("{}"), stamp, site])? == 1 {
                        created.push(key);
                        changed += 1;
                        record(from, relation, to, data);
                        continue;
                    }
                    let current: Option<(i64, i64, String)> = find
                        .query_row([from, relation, to], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                        .optional()?;
                    match current {
                        None => unreachable!("the insert found the edge"),
                        Some((eid, cl, _)) if cl % 2 == 0 => {
                            revive.execute(rusqlite::params![text.as_deref().unwrap_or("{}"), stamp, site, eid])?;
                            created.push(key);
                        }
                        Some((eid, _, old)) => {
                            let Some(new) = data else { continue };
                            if parse_object(&old)? == *new.as_object().expect("checked above") {
                                continue;
                            }
                            update.execute(rusqlite::params![text, stamp, site, eid])?;
                            db.replication().capture_graph_write(
                                conn,
                                EDGES_ID,
                                &key,
                                GraphWrite::Fields(vec!["data".to_owned()]).as_ref(),
                                now,
                            )?;
                        }
                    }
                    changed += 1;
                    record(from, relation, to, data);
                }
                db.replication().capture_created(conn, EDGES_ID, &created, now)?;
                Ok(changed)
            })
        })
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
