//! Writing and reading nodes: `put` (merge fields), `replace`, `set_type`, `set_vector`,
//! `delete`, `get_node`.

use serde_json::{Map, Value as Json};

use pluresdb_crdt::{Hlc, SiteId};

use super::{Node, as_object, blob_to_vector, check_id, parse_object, vector_to_blob};
use crate::database::Database;
use crate::error::{Error, Result};
use crate::events::{Change, EdgeChange, NodeChange};
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
        check_id("node id", id)?;
        let patch = update.data.map(|d| as_object("node data", d)).transpose()?;
        if let Some(Some(t)) = update.node_type {
            check_id("node type", t)?;
        }
        let vector_blob = match update.vector {
            Some(Some(v)) => Some(Some(vector_to_blob(v)?)),
            Some(None) => Some(None),
            None => None,
        };
        self.transaction(|db| {
            let current = db.get(
                &format!("SELECT {NODE_COLUMNS}, rid, cl FROM _pluresdb_nodes WHERE id = ?1"),
                (id,),
            )?;
            let alive = current
                .as_ref()
                .map(|r| r.get::<i64>(8))
                .transpose()?
                .is_some_and(|cl| cl % 2 == 1);
            if update.must_exist && !alive {
                return Err(Error::not_found(format!(
                    "node {id:?} does not exist; create it first with put"
                )));
            }
            let now = db.clock().now();
            let site = db.site_id();
            let node = match (&current, alive) {
                (Some(row), true) => {
                    let old = node_from_row(row)?;
                    let mut data = if update.replace { Map::new() } else { old.data };
                    if let Some(patch) = patch {
                        data.extend(patch.iter().map(|(k, v)| (k.clone(), v.clone())));
                    }
                    let node_type = match update.node_type {
                        Some(t) => t.map(str::to_owned),
                        None => old.node_type,
                    };
                    let vector = match update.vector {
                        Some(v) => v.map(<[f32]>::to_vec),
                        None => old.vector,
                    };
                    let blob = match &vector_blob {
                        Some(b) => b.clone(),
                        None => row.value(3)?.as_blob().map(<[u8]>::to_vec),
                    };
                    db.run(
                        "UPDATE _pluresdb_nodes SET type = ?1, data = ?2, vector = ?3,
                                updated_hlc = ?4, site = ?5 WHERE rid = ?6",
                        (
                            &node_type,
                            Json::Object(data.clone()).to_string(),
                            blob,
                            now.as_u64() as i64,
                            site.as_bytes().to_vec(),
                            row.get::<i64>(7)?,
                        ),
                    )?;
                    Node {
                        id: id.to_owned(),
                        node_type,
                        data,
                        vector,
                        created_at: old.created_at,
                        updated_at: now,
                        site,
                    }
                }
                (existing, _) => {
                    let data = patch.cloned().unwrap_or_default();
                    let node_type = update.node_type.flatten().map(str::to_owned);
                    let vector = update.vector.flatten().map(<[f32]>::to_vec);
                    let blob = vector_blob.clone().flatten();
                    let text = Json::Object(data.clone()).to_string();
                    match existing {
                        // A deleted node comes back: the causal length moves to the next odd value.
                        Some(row) => db.run(
                            "UPDATE _pluresdb_nodes SET type = ?1, data = ?2, vector = ?3,
                                    created_hlc = ?4, updated_hlc = ?4, site = ?5, cl = cl + 1
                             WHERE rid = ?6",
                            (
                                &node_type,
                                text,
                                blob,
                                now.as_u64() as i64,
                                site.as_bytes().to_vec(),
                                row.get::<i64>(7)?,
                            ),
                        )?,
                        None => db.run(
                            "INSERT INTO _pluresdb_nodes
                                 (id, type, data, vector, created_hlc, updated_hlc, site, cl)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, 1)",
                            (
                                id,
                                &node_type,
                                text,
                                blob,
                                now.as_u64() as i64,
                                site.as_bytes().to_vec(),
                            ),
                        )?,
                    };
                    Node {
                        id: id.to_owned(),
                        node_type,
                        data,
                        vector,
                        created_at: now,
                        updated_at: now,
                        site,
                    }
                }
            };
            if db.engine().hub.is_active() {
                db.engine().hub.record(Change::Node(NodeChange {
                    id: id.to_owned(),
                    node: Some(node.clone()),
                }));
            }
            Ok(node)
        })
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
            let now = db.clock().now().as_u64() as i64;
            let site = db.site_id().as_bytes().to_vec();
            let deleted = db.run(
                "UPDATE _pluresdb_nodes SET cl = cl + 1, data = '{}', type = NULL, vector = NULL,
                        updated_hlc = ?1, site = ?2
                 WHERE id = ?3 AND cl % 2 = 1",
                (now, &site, id),
            )?;
            if deleted.changes == 0 {
                return Ok(false);
            }
            let hub = &db.engine().hub;
            if hub.is_active() {
                let edges = db.all(
                    "SELECT src, rel, dst FROM _pluresdb_edges
                     WHERE (src = ?1 OR dst = ?1) AND cl % 2 = 1",
                    (id,),
                )?;
                for e in edges {
                    hub.record(Change::Edge(EdgeChange {
                        from: e.get(0)?,
                        relation: e.get(1)?,
                        to: e.get(2)?,
                        edge: None,
                    }));
                }
            }
            db.run(
                "UPDATE _pluresdb_edges SET cl = cl + 1, updated_hlc = ?1, site = ?2
                 WHERE (src = ?3 OR dst = ?3) AND cl % 2 = 1",
                (now, &site, id),
            )?;
            if hub.is_active() {
                hub.record(Change::Node(NodeChange {
                    id: id.to_owned(),
                    node: None,
                }));
            }
            Ok(true)
        })
    }
}
