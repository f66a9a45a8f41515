//! Edges: `link`, `unlink`, `get_edge`, `edges` and `neighbors` (`link_many` is in `bulk_link`).

use serde_json::Value as Json;

use pluresdb_crdt::Hlc;

use pluresdb_graph::GraphError;

use super::ends::{EDGE_BY_NAMES, VISIBLE_EDGE_BY_NAMES, visible_edge};
use super::nodes::{NODE_COLUMNS, node_from_row};
use super::walk::graph_error;
use super::{Direction, Edge, Node, as_object, check_id, parse_object};
use crate::database::Database;
use crate::error::{Error, Result};
use crate::events::{Change, EdgeChange};
use crate::replication::pack_key_refs;
use crate::row::Row;
use crate::value::ValueRef;

const EDGE_COLUMNS: &str = "src, rel, dst, data, created_hlc, updated_hlc";

/// The columns of `_pluresdb_edges` that [`named_edge`] reads.
const EDGE_TIMES: &str = "data, created_hlc, updated_hlc";

/// The edge `from -[relation]-> to` from a row starting with [`EDGE_TIMES`].
fn named_edge(from: &str, relation: &str, to: &str, row: &Row) -> Result<Edge> {
    Ok(Edge {
        from: from.to_owned(),
        relation: relation.to_owned(),
        to: to.to_owned(),
        data: parse_object(&row.get::<String>(0)?)?,
        created_at: Hlc::from_u64(row.get::<i64>(1)? as u64),
        updated_at: Hlc::from_u64(row.get::<i64>(2)? as u64),
    })
}

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

/// The packed clock key of an edge (its three names).
pub(super) fn edge_key(from: &str, relation: &str, to: &str) -> Vec<u8> {
    pack_key_refs([from, relation, to].map(|t| ValueRef::Text(t.as_bytes())))
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
            let (src, dst) = db.with_writer_conn(|conn| {
                let end = |role: &str, id: &str| {
                    super::ends::live_node(conn, id)?.ok_or_else(|| {
                        Error::not_found(format!(
                            "{role} node {id:?} does not exist; create it with put before linking"
                        ))
                    })
                };
                Ok((end("source", from)?, end("target", to)?))
            })?;
            let now = db.clock().now();
            let site = db.site_id().as_bytes().to_vec();
            let current = db.get(
                &format!(
                    "SELECT {EDGE_TIMES}, eid, cl, ver FROM _pluresdb_edges WHERE {EDGE_BY_NAMES}"
                ),
                (from, relation, to),
            )?;
            let alive = match &current {
                Some(row) => row.get::<i64>(4)? % 2 == 1,
                None => false,
            };
            let old = match &current {
                Some(row) if alive => Some(named_edge(from, relation, to, row)?),
                _ => None,
            };
            if let Some(old) = &old
                && patch.is_none_or(|p| *p == old.data)
            {
                return Ok(old.clone());
            }
            // Something is written: the edge's clock goes in its row, in the same statement.
            let clock = db.with_writer_conn(|conn| db.replication().edge_stamp(conn, now))?;
            let stamp = now.as_u64() as i64;
            let edge = match (current, old) {
                (Some(row), Some(old)) => {
                    let data = patch.cloned().unwrap_or(old.data.clone());
                    let ver = row.get::<Option<Vec<u8>>>(5)?;
                    db.run(
                        "UPDATE _pluresdb_edges SET data = ?1, updated_hlc = ?2, site = ?3,
                                seq = ?5, ver = ?6
                         WHERE eid = ?4",
                        (
                            Json::Object(data.clone()).to_string(),
                            stamp,
                            &site,
                            row.get::<i64>(3)?,
                            clock.seq(),
                            clock.data_changed(ver.as_deref())?,
                        ),
                    )?;
                    Edge {
                        updated_at: now,
                        data,
                        ..old
                    }
                }
                (existing, _) => {
                    let data = patch.cloned().unwrap_or_default();
                    let text = Json::Object(data.clone()).to_string();
                    match existing {
                        Some(row) => db.run(
                            "UPDATE _pluresdb_edges SET data = ?1, created_hlc = ?2,
                                    updated_hlc = ?2, site = ?3, cl = cl + 1, seq = ?5, ver = ?6
                             WHERE eid = ?4",
                            (
                                text,
                                stamp,
                                &site,
                                row.get::<i64>(3)?,
                                clock.seq(),
                                clock.created(),
                            ),
                        )?,
                        None => {
                            let rel = db.with_writer_conn(|conn| {
                                super::ends::relation_or_insert(conn, relation)
                            })?;
                            db.run(
                                "INSERT INTO _pluresdb_edges
                                     (src, rel, dst, data, created_hlc, updated_hlc, site, cl,
                                      seq, ver)
                                 VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, 1, ?7, ?8)",
                                (
                                    src,
                                    rel,
                                    dst,
                                    text,
                                    stamp,
                                    &site,
                                    clock.seq(),
                                    clock.created(),
                                ),
                            )?
                        }
                    };
                    Edge {
                        from: from.to_owned(),
                        relation: relation.to_owned(),
                        to: to.to_owned(),
                        data,
                        created_at: now,
                        updated_at: now,
                    }
                }
            };
            db.with_writer_conn(|conn| {
                db.replication()
                    .note_edge_writes(conn, &clock, 1, || vec![edge_key(from, relation, to)])
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

    /// Removes the edge; returns whether it existed.
    pub fn unlink(&self, from: &str, relation: &str, to: &str) -> Result<bool> {
        self.require_graph()?;
        self.transaction(|db| {
            let now = db.clock().now();
            let live = format!("SELECT eid FROM _pluresdb_edges WHERE {VISIBLE_EDGE_BY_NAMES}");
            let Some((eid,)) = db.get_as::<(i64,)>(&live, (from, relation, to))? else {
                return Ok(false);
            };
            // The edge's clock goes in its row, in the same statement.
            let clock = db.with_writer_conn(|conn| db.replication().edge_stamp(conn, now))?;
            db.run(
                "UPDATE _pluresdb_edges SET cl = cl + 1, updated_hlc = ?2, site = ?3, seq = ?4,
                        ver = ?5
                 WHERE eid = ?1",
                (
                    eid,
                    now.as_u64() as i64,
                    db.site_id().as_bytes().to_vec(),
                    clock.seq(),
                    clock.deleted(),
                ),
            )?;
            db.with_writer_conn(|conn| {
                db.replication()
                    .note_edge_writes(conn, &clock, 1, || vec![edge_key(from, relation, to)])
            })?;
            if db.engine().hub.is_active() {
                db.engine().hub.record(Change::Edge(EdgeChange {
                    from: from.to_owned(),
                    relation: relation.to_owned(),
                    to: to.to_owned(),
                    edge: None,
                }));
            }
            Ok(true)
        })
    }

    /// The edge `from -[relation]-> to`, or `None`.
    ///
    /// Only an edge between two live nodes is found, here and in every other read (edge
    /// lists, counts, traversals, Cypher, the `pluresdb_edges` view). Sync can merge a live
    /// edge at a node that is not live: a link made on one device while another deleted one
    /// of its nodes, or an edge merged before its nodes. It is kept, hidden, and shows again
    /// when both its nodes are live (a node put again with the same id brings it back).
    pub fn get_edge(&self, from: &str, relation: &str, to: &str) -> Result<Option<Edge>> {
        self.require_graph()?;
        self.get(
            &format!("SELECT {EDGE_TIMES} FROM _pluresdb_edges WHERE {VISIBLE_EDGE_BY_NAMES}"),
            (from, relation, to),
        )?
        .map(|r| named_edge(from, relation, to, &r))
        .transpose()
    }

    /// Edges at node `id` in `direction`, optionally of one relation, ordered by relation and
    /// the other end's id; a self-loop is one edge, listed once for [`Direction::Both`]
    /// ([`degree`](Self::degree) counts it once per direction, as graph theory does). A node
    /// that does not exist is an [`ErrorKind::NotFound`] error, as in `degree` and
    /// [`traverse`](Self::traverse).
    ///
    /// [`ErrorKind::NotFound`]: crate::ErrorKind::NotFound
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
            let inward = self.edges_one_way(id, "dst", "src", relation)?;
            // A self-loop is one edge: both ways, it is listed once (with the outgoing ones).
            let both = matches!(direction, Direction::Both);
            out.extend(inward.into_iter().filter(|e| !(both && e.from == e.to)));
        }
        self.found_at(id, out)
    }

    /// Passes on what was found at node `id`; when it is nothing, checks that the node exists
    /// (a node with edges does), so an unknown id fails instead of having no edges.
    fn found_at<T>(&self, id: &str, found: Vec<T>) -> Result<Vec<T>> {
        if found.is_empty()
            && self
                .get(
                    "SELECT 1 FROM _pluresdb_nodes WHERE id = ?1 AND cl % 2 = 1",
                    (id,),
                )?
                .is_none()
        {
            return Err(graph_error(GraphError::UnknownNode(id.to_owned())));
        }
        Ok(found)
    }

    fn edges_one_way(
        &self,
        id: &str,
        here: &str,
        there: &str,
        relation: Option<&str>,
    ) -> Result<Vec<Edge>> {
        let visible = visible_edge("cl", "src_rid", "dst_rid");
        let sql = format!(
            "SELECT {EDGE_COLUMNS} FROM _pluresdb_edges_named
             WHERE {here} = ?1 AND (?2 IS NULL OR rel = ?2) AND {visible}
             ORDER BY rel, {there}"
        );
        self.all(&sql, (id, relation))?
            .iter()
            .map(edge_from_row)
            .collect()
    }

    /// The nodes at the other end of `id`'s edges (each once), ordered by id. A node that
    /// does not exist is an error, as in [`edges`](Self::edges).
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
        let visible = visible_edge("cl", "src_rid", "dst_rid");
        let sql = format!(
            "SELECT {NODE_COLUMNS} FROM _pluresdb_nodes WHERE cl % 2 = 1 AND id IN (
                 SELECT dst FROM _pluresdb_edges_named
                 WHERE ?3 AND src = ?1 AND (?2 IS NULL OR rel = ?2) AND {visible}
                 UNION
                 SELECT src FROM _pluresdb_edges_named
                 WHERE ?4 AND dst = ?1 AND (?2 IS NULL OR rel = ?2) AND {visible})
             ORDER BY id"
        );
        let found = self
            .all(&sql, (id, relation, out, inc))?
            .iter()
            .map(node_from_row)
            .collect::<Result<Vec<Node>>>()?;
        self.found_at(id, found)
    }
}
