//! The graph store: JSON nodes with optional type and vector, and typed directed edges.
//!
//! Nodes and edges live in internal tables of the same SQLite file, carry hybrid-logical-clock
//! timestamps, the writing site and a causal length (odd = alive, even = deleted) so that
//! replication can merge them later. SQL sees live ones through the `pluresdb_nodes` and
//! `pluresdb_edges` views.

mod adjacency;
mod bulk_link;
mod bulk_put;
pub(crate) mod cypher;
pub(crate) mod edge_events;
mod edges;
pub(crate) mod ends;
pub(crate) mod index;
mod nodes;
mod query;
mod rid_map;
pub(crate) mod sql;
mod subscribe;
pub(crate) mod walk;

use serde::Serialize;
use serde_json::{Map, Value as Json};

use pluresdb_crdt::{Hlc, SiteId};

use crate::error::{Error, Result};
use crate::vector::parse;

pub use cypher::CypherResult;
pub use nodes::NodeUpdate;
pub use query::{CompareOp, NodeQuery};
pub use walk::{GraphPath, PathQuery, Reached, Traverse, Walk};

/// A node: an id, a JSON object, an optional type and an optional vector.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Node {
    /// The node id.
    pub id: String,
    /// The node's type, if set (see [`Database::set_type`](crate::Database::set_type)).
    #[serde(rename = "type")]
    pub node_type: Option<String>,
    /// The node's fields.
    pub data: Map<String, Json>,
    /// The node's embedding, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vector: Option<Vec<f32>>,
    /// When the node was created (hybrid logical clock).
    #[serde(serialize_with = "ser_hlc")]
    pub created_at: Hlc,
    /// When the node last changed.
    #[serde(serialize_with = "ser_hlc")]
    pub updated_at: Hlc,
    /// The replica that made the last change.
    #[serde(serialize_with = "ser_site")]
    pub site: SiteId,
}

/// A directed, typed edge `from -[relation]-> to` with JSON data.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Edge {
    /// Source node id.
    pub from: String,
    /// Relation name.
    pub relation: String,
    /// Target node id.
    pub to: String,
    /// The edge's fields.
    pub data: Map<String, Json>,
    /// When the edge was linked.
    #[serde(serialize_with = "ser_hlc")]
    pub created_at: Hlc,
    /// When it last changed.
    #[serde(serialize_with = "ser_hlc")]
    pub updated_at: Hlc,
}

/// Which way to follow edges.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Edges leaving the node.
    #[default]
    Out,
    /// Edges arriving at the node.
    In,
    /// Both.
    Both,
}

impl std::str::FromStr for Direction {
    type Err = Error;

    fn from_str(s: &str) -> Result<Direction> {
        match s.to_ascii_lowercase().as_str() {
            "out" | "outgoing" => Ok(Direction::Out),
            "in" | "incoming" => Ok(Direction::In),
            "both" | "any" => Ok(Direction::Both),
            other => Err(Error::invalid(format!(
                "unknown direction {other:?}; use out, in or both"
            ))),
        }
    }
}

fn ser_hlc<S: serde::Serializer>(hlc: &Hlc, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_u64(hlc.as_u64())
}

fn ser_site<S: serde::Serializer>(site: &SiteId, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(site)
}

/// Longest id accepted for nodes and relations, in bytes.
pub const MAX_ID_BYTES: usize = 1024;

pub(crate) fn check_id(what: &str, id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::invalid(format!("{what} must not be empty")));
    }
    if id.len() > MAX_ID_BYTES {
        return Err(Error::invalid(format!(
            "{what} is {} bytes long; the limit is {MAX_ID_BYTES}",
            id.len()
        )));
    }
    if id.contains('\0') {
        return Err(Error::invalid(format!(
            "{what} {id:?} contains a NUL character"
        )));
    }
    Ok(())
}

/// Requires a JSON object, with a message that shows how to fix it.
pub(crate) fn as_object<'j>(what: &str, json: &'j Json) -> Result<&'j Map<String, Json>> {
    check_depth(what, json, MAX_JSON_DEPTH)?;
    json.as_object().ok_or_else(|| {
        let kind = match json {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Number(_) => "a number",
            Json::String(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        };
        Error::invalid(format!(
            "{what} must be a JSON object such as {{\"name\": \"Ada\"}}, not {kind}"
        ))
    })
}

/// The statement that stores a node's row (created, replaced or brought back): its id, type,
/// data, vector, creation and change times, the writing site and its causal length.
pub(crate) const UPSERT_NODE: &str =
    "INSERT INTO _pluresdb_nodes(id, type, data, vector, created_hlc, updated_hlc, site, cl)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
     ON CONFLICT(id) DO UPDATE SET type = excluded.type, data = excluded.data,
         vector = excluded.vector, created_hlc = excluded.created_hlc,
         updated_hlc = excluded.updated_hlc, site = excluded.site, cl = excluded.cl";

/// A node's data as stored: JSON text with its top-level keys sorted, so replicas that
/// merged in any order hold the same text.
pub(crate) fn stored_text(data: &Map<String, Json>) -> String {
    let text = |data: &Map<String, Json>| {
        serde_json::to_string(data).expect("a JSON map always serializes")
    };
    if data.keys().is_sorted() {
        return text(data);
    }
    let mut sorted = data.clone();
    sorted.sort_keys();
    text(&sorted)
}

pub(crate) fn parse_object(text: &str) -> Result<Map<String, Json>> {
    match serde_json::from_str(text) {
        Ok(Json::Object(map)) => Ok(map),
        Ok(_) => Err(Error::new(
            crate::ErrorKind::Corrupt,
            format!("stored JSON is not an object: {}", truncate(text, 80)),
        )),
        Err(e) => Err(Error::new(
            crate::ErrorKind::Corrupt,
            format!("stored JSON cannot be read ({e}): {}", truncate(text, 80)),
        )),
    }
}

/// The deepest nesting of objects and arrays stored in node or edge data (the object itself
/// counts 1): reading JSON back stops at 128 levels, so deeper data could be written but
/// never read again.
pub(crate) const MAX_JSON_DEPTH: usize = 100;

/// A closing handle trims the graph log once it holds this many entries past the last trim
/// (see `GraphIndex::trim_on_close`): a process that holds the graph and is behind then
/// rebuilds it once, at most every this many graph writes.
pub(crate) const GRAPH_LOG_TRIM_AT_CLOSE: i64 = 10_000;

/// Fails when `json` nests objects and arrays more than `max` levels deep (`json` itself
/// counts 1): [`MAX_JSON_DEPTH`] for node or edge data, one less for a node field's value,
/// which sits inside its node's data.
pub(crate) fn check_depth(what: &str, json: &Json, max: usize) -> Result<()> {
    // Without recursing (the value may be deeper than the stack) or a buffer per container.
    let mut open = vec![(json, 1)];
    while let Some((v, depth)) = open.pop() {
        let (items, map) = match v {
            Json::Array(items) => (items.as_slice(), None),
            Json::Object(map) => (&[][..], Some(map)),
            _ => continue,
        };
        if depth > max {
            return Err(Error::invalid(format!(
                "{what} nests objects and arrays more than {max} levels deep; \
                 flatten it (store the deep part as a JSON string if it must be kept as is)"
            )));
        }
        let inner = items.iter().chain(map.into_iter().flat_map(Map::values));
        open.extend(inner.map(|c| (c, depth + 1)));
    }
    Ok(())
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

pub(crate) fn vector_to_blob(vector: &[f32]) -> Result<Vec<u8>> {
    if vector.is_empty() {
        return Err(Error::invalid("a vector must have at least one component"));
    }
    parse::check_finite(vector)?;
    Ok(parse::to_blob(vector))
}

pub(crate) fn blob_to_vector(blob: &[u8]) -> Result<Vec<f32>> {
    if !blob.len().is_multiple_of(4) {
        return Err(Error::new(
            crate::ErrorKind::Corrupt,
            format!(
                "stored vector has {} bytes, not a multiple of 4",
                blob.len()
            ),
        ));
    }
    Ok(parse::from_blob(blob))
}

/// The smallest string greater than every string that starts with `prefix`
/// (`None` when there is none).
pub(crate) fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(c) = chars.pop() {
        let mut next = c as u32 + 1;
        if next == 0xD800 {
            next = 0xE000;
        }
        if let Some(c) = char::from_u32(next) {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_bounds() {
        assert_eq!(prefix_upper_bound("user:").as_deref(), Some("user;"));
        assert_eq!(prefix_upper_bound("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_upper_bound("\u{D7FF}").as_deref(), Some("\u{E000}"));
        assert_eq!(prefix_upper_bound(""), None);
        assert_eq!(prefix_upper_bound("\u{10FFFF}"), None);
    }

    #[test]
    fn vectors_round_trip_and_reject_non_finite() {
        let v = vec![1.0f32, -2.5, 0.0];
        assert_eq!(blob_to_vector(&vector_to_blob(&v).unwrap()).unwrap(), v);
        let err = vector_to_blob(&[1.0, f32::NAN]).unwrap_err();
        assert_eq!(
            err.message(),
            "vector component 1 is NaN; components must be finite numbers"
        );
        assert!(vector_to_blob(&[]).is_err());
    }
}
