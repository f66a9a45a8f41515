//! Writing and reading nodes: `put` (merge fields), `replace`, `set_type`, `set_vector`,
//! `delete`, `get_node`. Every write is captured for replication and recorded in history.

use serde_json::{Map, Value as Json};

use pluresdb_crdt::{Hlc, SiteId};

use super::edges::edge_key;
use super::{
    Node, UPSERT_NODE, as_object, blob_to_vector, check_id, parse_object, stored_text,
    vector_to_blob,
};
use crate::database::Database;
use crate::error::{Error, Result};
use crate::events::{Change, NodeChange};
use crate::replication::{MAX_FIELD_BYTES, NodeWrite, append_history, pack_key};
use crate::row::Row;
use crate::value::Value;

/// Columns read for a node, in the order [`node_from_row`] expects.
pub(crate) const NODE_COLUMNS: &str = "id, type, data, vector, created_hlc, updated_hlc, site";

/// One change to a node; fields left `None` keep their current value.
#[derive(Clone, Debug, Default)]
pub struct NodeUpdate<'a> {
    /// Fields to write (merged into the node's object, or replacing it with `replace`).
    pub data: Option<&'a Json>,
    /// Replace the whole object instead of merging top-level fields.
    pub replace: bool,
    /// New type: `Some(None)` clears it.
    pub node_type: Option<Option<&'a str>>,
    /// New vector: `Some(None)` clears it.
    pub vector: Option<Option<&'a [f32]>>,
    /// Fail with `NotFound` instead of creating a missing node.
    pub must_exist: bool,
}

pub(crate) fn node_from_row(row: &Row) -> Result<Node> {
    let vector = match row.value(3)? {
        Value::Blob(b) => Some(blob_to_vector(b)?),
        _ => None,
    };
    let site: Vec<u8> = row.get(6)?;
    Ok(Node {
        id: row.get(0)?,
        node_type: row.get(1)?,
        data: parse_object(&row.get::<String>(2)?)?,
        vector,
        created_at: Hlc::from_u64(row.get::<i64>(4)? as u64),
        updated_at: Hlc::from_u64(row.get::<i64>(5)? as u64),
        site: SiteId::from_slice(&site).unwrap_or_default(),
    })
}

/// Names of the replicated fields of a new node with `data`: each one is versioned, not
/// "every field".
pub(super) fn created_fields(data: &Map<String, Json>) -> Vec<String> {
    data.keys()
        .map(|k| format!("data.{k}"))
        .chain(["type".to_owned(), "vector".to_owned()])
        .collect()
}

/// Names of the replicated fields that differ between two versions of a node.
fn changed_fields(old: &Node, new: &Node) -> Vec<String> {
    let mut names: Vec<String> = new
        .data
        .iter()
        .filter(|(k, v)| old.data.get(*k) != Some(*v))
        .chain(old.data.iter().filter(|(k, _)| !new.data.contains_key(*k)))
        .map(|(k, _)| format!("data.{k}"))
        .collect();
    if old.node_type != new.node_type {
        names.push("type".into());
    }
    if old.vector != new.vector {
        names.push("vector".into());
    }
    names
}

/// What [`check_update`] found valid in a node write: its fields (an object) and its vector
/// as stored.
pub(super) struct CheckedUpdate<'a> {
    pub(super) patch: Option<&'a Map<String, Json>>,
    pub(super) vector_blob: Option<Vec<u8>>,
}

/// Checks a write of node `id` before anything is written: the id, the data (an object whose
/// field names fit a version record), the type and the vector.
pub(super) fn check_update<'a>(id: &str, update: &NodeUpdate<'a>) -> Result<CheckedUpdate<'a>> {
    check_id("node id", id)?;
    let patch = update.data.map(|d| as_object("node data", d)).transpose()?;
    // Each top-level field syncs as `data.<name>`, named in its version record.
    let max = MAX_FIELD_BYTES - "data.".len();
    if let Some(name) = patch
        .into_iter()
        .flat_map(|p| p.keys())
        .find(|name| name.len() > max)
    {
        return Err(Error::invalid(format!(
            "node field name {:?}... is {} bytes long; the limit is {max}",
            name.chars().take(20).collect::<String>(),
            name.len()
        )));
    }
    if let Some(Some(t)) = update.node_type {
        check_id("node type", t)?;
    }
    let vector_blob = match update.vector {
        Some(Some(v)) => Some(vector_to_blob(v)?),
        _ => None,
    };
    Ok(CheckedUpdate { patch, vector_blob })
}

impl Database {
    /// Creates the node or merges `data`'s top-level fields into it (GunDB's `put`);
    /// returns the node as stored. `data` must be a JSON object.
    pub fn put(&self, id: &str, data: &Json) -> Result<Node> {
        self.update_node(
            id,
            NodeUpdate {
                data: Some(data),
                ..NodeUpdate::default()
            },
        )
    }

    /// Creates the node or replaces all of its fields with `data`.
    pub fn replace(&self, id: &str, data: &Json) -> Result<Node> {
        self.update_node(
            id,
            NodeUpdate {
                data: Some(data),
                replace: true,
                ..NodeUpdate::default()
            },
        )
    }

    /// Sets (or with `None` clears) an existing node's type.
    pub fn set_type(&self, id: &str, node_type: Option<&str>) -> Result<Node> {
        self.update_node(
            id,
            NodeUpdate {
                node_type: Some(node_type),
                must_exist: true,
                ..NodeUpdate::default()
            },
        )
    }

    /// Sets (or with `None` clears) an existing node's vector.
    pub fn set_vector(&self, id: &str, vector: Option<&[f32]>) -> Result<Node> {
        self.update_node(
            id,
            NodeUpdate {
                vector: Some(vector),
                must_exist: true,
                ..NodeUpdate::default()
            },
        )
    }

    /// The general node write behind `put`, `replace`, `set_type` and `set_vector`.
    pub fn update_node(&self, id: &str, update: NodeUpdate<'_>) -> Result<Node> {
        self.require_graph()?;
        let checked = check_update(id, &update)?;
        self.transaction(|db| db.write_node(id, &update, &checked))
            .map(|(node, _)| node)
    }

    /// Writes node `id` as `update` says (checked by [`check_update`]), inside a transaction;
    /// returns the node as stored and whether anything changed.
    pub(super) fn write_node(
        &self,
        id: &str,
        update: &NodeUpdate<'_>,
        checked: &CheckedUpdate<'_>,
    ) -> Result<(Node, bool)> {
        let patch = checked.patch;
        let current = self.get(
            &format!("SELECT {NODE_COLUMNS}, cl FROM _pluresdb_nodes WHERE id = ?1"),
            (id,),
        )?;
        let cl = current
            .as_ref()
            .map(|r| r.get::<i64>(7))
            .transpose()?
            .unwrap_or(0);
        let alive = cl % 2 == 1;
        if update.must_exist && !alive {
            return Err(Error::not_found(format!(
                "node {id:?} does not exist; create it first with put"
            )));
        }
        let old = match (&current, alive) {
            (Some(row), true) => Some(node_from_row(row)?),
            _ => None,
        };
        let now = self.clock().now();
        let site = self.site_id();
        let mut node = old.clone().unwrap_or_else(|| Node {
            id: id.to_owned(),
            node_type: None,
            data: Map::new(),
            vector: None,
            created_at: now,
            updated_at: now,
            site,
        });
        if update.replace {
            node.data = Map::new();
        }
        if let Some(patch) = patch {
            node.data
                .extend(patch.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        if let Some(t) = update.node_type {
            node.node_type = t.map(str::to_owned);
        }
        if let Some(v) = update.vector {
            node.vector = v.map(<[f32]>::to_vec);
        }
        let write = match &old {
            Some(old) => {
                let names = changed_fields(old, &node);
                if names.is_empty() {
                    return Ok((node, false));
                }
                NodeWrite::Fields(names)
            }
            None => NodeWrite::Created(created_fields(&node.data)),
        };
        node.updated_at = now;
        node.site = site;
        let new_cl = if alive { cl } else { cl + 1 };
        // Keys are stored sorted, so replicas that merged in any order hold the same text.
        node.data.sort_keys();
        let text = stored_text(&node.data);
        let blob = match (&checked.vector_blob, update.vector) {
            (Some(b), _) => Some(b.clone()),
            (None, Some(None)) => None,
            (None, _) => node.vector.as_deref().map(vector_to_blob).transpose()?,
        };
        self.run(
            UPSERT_NODE,
            (
                id,
                &node.node_type,
                &text,
                &blob,
                node.created_at.as_u64() as i64,
                now.as_u64() as i64,
                site.as_bytes().to_vec(),
                new_cl,
            ),
        )?;
        self.with_writer_conn(|conn| {
            let repl = self.replication();
            let key = pack_key(&[Value::Text(id.to_owned())]);
            repl.capture_node_write(conn, &key, write.as_ref(), now)?;
            append_history(
                conn,
                id,
                now.as_u64(),
                site,
                new_cl as u64,
                node.node_type.as_deref(),
                &text,
                blob.as_deref(),
            )
        })?;
        let hub = &self.engine().hub;
        if hub.is_active() {
            hub.record(Change::Node(NodeChange {
                id: id.to_owned(),
                node: Some(node.clone()),
            }));
            // A node put again shows the live edges it kept (see `Database::get_edge`).
            if current.is_some() && !alive {
                let shown = self.with_writer_conn(|conn| {
                    super::edge_events::edges_shown_or_hidden(conn, id, true)
                })?;
                shown.into_iter().for_each(|e| hub.record(e));
            }
        }
        Ok((node, true))
    }

    /// The node with this id, or `None`.
    pub fn get_node(&self, id: &str) -> Result<Option<Node>> {
        self.require_graph()?;
        self.get(
            &format!("SELECT {NODE_COLUMNS} FROM _pluresdb_nodes WHERE id = ?1 AND cl % 2 = 1"),
            (id,),
        )?
        .map(|r| node_from_row(&r))
        .transpose()
    }

    /// Deletes the node and unlinks its edges; returns whether it existed.
    pub fn delete(&self, id: &str) -> Result<bool> {
        self.require_graph()?;
        check_id("node id", id)?;
        self.transaction(|db| {
            let now = db.clock().now();
            let stamp = now.as_u64() as i64;
            let site = db.site_id();
            let Some((rid, cl)) = db.get_as::<(i64, i64)>(
                "UPDATE _pluresdb_nodes SET cl = cl + 1, data = '{}', type = NULL, vector = NULL,
                        updated_hlc = ?1, site = ?2
                 WHERE id = ?3 AND cl % 2 = 1
                 RETURNING rid, cl",
                (stamp, site.as_bytes().to_vec(), id),
            )?
            else {
                return Ok(false);
            };
            let hub = &db.engine().hub;
            // The edges readers saw go away for them (read before they are unlinked).
            let hidden = match hub.is_active() {
                true => db.with_writer_conn(|conn| {
                    super::edge_events::edges_shown_or_hidden(conn, id, false)
                })?,
                false => Vec::new(),
            };
            // Hidden ones go too (their other node is not live), so none comes back with it.
            let edges: Vec<(String, String, String)> = db.all_as(
                "SELECT src, rel, dst FROM _pluresdb_edges_named
                 WHERE (src_rid = ?1 OR dst_rid = ?1) AND cl % 2 = 1",
                (rid,),
            )?;
            db.with_writer_conn(|conn| {
                let repl = db.replication();
                let key = pack_key(&[Value::Text(id.to_owned())]);
                repl.capture_node_write(conn, &key, NodeWrite::Deleted, now)?;
                append_history(conn, id, now.as_u64(), site, cl as u64, None, "{}", None)
            })?;
            if !edges.is_empty() {
                // Its edges go too, each with its clock in its row.
                let clock = db.with_writer_conn(|conn| db.replication().edge_stamp(conn, now))?;
                db.run(
                    "UPDATE _pluresdb_edges SET cl = cl + 1, updated_hlc = ?1, site = ?2,
                            seq = ?4, ver = ?5
                     WHERE (src = ?3 OR dst = ?3) AND cl % 2 = 1",
                    (
                        stamp,
                        site.as_bytes().to_vec(),
                        rid,
                        clock.seq(),
                        clock.deleted(),
                    ),
                )?;
                db.with_writer_conn(|conn| {
                    db.replication()
                        .note_edge_writes(conn, &clock, edges.len(), || {
                            edges.iter().map(|(f, r, t)| edge_key(f, r, t)).collect()
                        })
                })?;
            }
            if hub.is_active() {
                hidden.into_iter().for_each(|e| hub.record(e));
                hub.record(Change::Node(NodeChange {
                    id: id.to_owned(),
                    node: None,
                }));
            }
            Ok(true)
        })
    }
}
