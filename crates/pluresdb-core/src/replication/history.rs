//! Node history: every version a node had, local or merged, until compaction.

use rusqlite::Connection;
use serde_json::{Map, Value as Json};

use pluresdb_crdt::{Hlc, SiteId, is_alive};

use crate::database::Database;
use crate::error::{Error, Result};
use crate::graph::{Node, NodeUpdate, blob_to_vector, parse_object};

/// One past (or the current) version of a node.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct NodeVersion {
    /// When this version was written.
    #[serde(serialize_with = "ser_hlc")]
    pub hlc: Hlc,
    /// Who wrote it.
    #[serde(serialize_with = "ser_site")]
    pub site: SiteId,
    /// True when this version is the node's deletion.
    pub deleted: bool,
    /// The node's type then.
    #[serde(rename = "type")]
    pub node_type: Option<String>,
    /// The node's fields then.
    pub data: Map<String, Json>,
    /// The node's vector then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vector: Option<Vec<f32>>,
}

fn ser_hlc<S: serde::Serializer>(hlc: &Hlc, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_u64(hlc.as_u64())
}

fn ser_site<S: serde::Serializer>(site: &SiteId, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(site)
}

/// Appends a node version (called for every local write and every merged change).
#[allow(clippy::too_many_arguments)]
pub(crate) fn append_history(
    conn: &Connection,
    id: &str,
    hlc: u64,
    site: SiteId,
    cl: u64,
    node_type: Option<&str>,
    data: &str,
    vector: Option<&[u8]>,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO _pluresdb_history(id, hlc, site, cl, type, data, vector) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(rusqlite::params![id, hlc as i64, site.as_bytes().as_slice(), cl as i64, node_type, data, vector])?;
    Ok(())
}

impl Database {
    /// Every recorded version of node `id`, oldest first (GunDB-style `getNodeHistory`).
    /// Versions can share an HLC (a local write and a merge into it); they are listed in the
    /// order they were recorded.
    pub fn history(&self, id: &str) -> Result<Vec<NodeVersion>> {
        self.require_graph()?;
        let rows = self.all_as::<(i64, Vec<u8>, i64, Option<String>, String, Option<Vec<u8>>)>(
            "SELECT hlc, site, cl, type, data, vector FROM _pluresdb_history WHERE id = ?1 ORDER BY hlc, rowid",
            (id,),
        )?;
        rows.into_iter()
            .map(|(hlc, site, cl, node_type, data, vector)| {
                Ok(NodeVersion {
                    hlc: Hlc::from_u64(hlc as u64),
                    site: SiteId::from_slice(&site).unwrap_or_default(),
                    deleted: !is_alive(cl as u64),
                    node_type,
                    data: parse_object(&data)?,
                    vector: vector.as_deref().map(blob_to_vector).transpose()?,
                })
            })
            .collect()
    }

    /// Writes the version of node `id` recorded at `hlc` back as its current value (a new
    /// write, so it replicates like any other). When several versions share `hlc`, the newest
    /// (the last [`history`](Self::history) lists) is restored.
    pub fn restore_node_version(&self, id: &str, hlc: Hlc) -> Result<Node> {
        let version = self
            .history(id)?
            .into_iter()
            .rfind(|v| v.hlc == hlc)
            .ok_or_else(|| {
                Error::not_found(format!(
                    "node {id:?} has no version at {hlc}; see history({id:?})"
                ))
            })?;
        if version.deleted {
            return Err(Error::invalid(format!(
                "the version of {id:?} at {hlc} is its deletion; use delete() to delete it again"
            )));
        }
        let data = Json::Object(version.data);
        self.update_node(
            id,
            NodeUpdate {
                data: Some(&data),
                replace: true,
                node_type: Some(version.node_type.as_deref()),
                vector: Some(version.vector.as_deref()),
                must_exist: false,
            },
        )
    }

    /// Removes history versions written before `before`, keeping each node's newest version.
    /// Returns how many were removed. Sync does not use history, so peers are unaffected.
    pub fn compact_history(&self, before: Hlc) -> Result<u64> {
        self.require_graph()?;
        Ok(self
            .run(
                "DELETE FROM _pluresdb_history WHERE hlc < ?1 AND rowid NOT IN (
                     SELECT max(rowid) FROM _pluresdb_history GROUP BY id)",
                (before.as_u64() as i64,),
            )?
            .changes)
    }
}
