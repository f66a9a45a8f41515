//! The integer ids edges are stored with: node row ids for their ends and interned relation
//! ids (see the edge table in `schema.rs`).
//!
//! Point lookups of an edge by name go through these single-table lookups rather than the
//! `_pluresdb_edges_named` view: a statement over the view's join, cached by rusqlite (which
//! clears its bindings when it goes back to the cache), is planned again on every use (about
//! 25 µs); a lookup on one table is not.

use rusqlite::{Connection, OptionalExtension};

use crate::error::Result;

/// A condition on `_pluresdb_edges` that picks the edge named `?1 -[?2]-> ?3`, by lookups of
/// one table each (see the module doc).
pub(crate) const EDGE_BY_NAMES: &str = "src = (SELECT rid FROM _pluresdb_nodes WHERE id = ?1)
    AND rel = (SELECT id FROM _pluresdb_relations WHERE name = ?2)
    AND dst = (SELECT rid FROM _pluresdb_nodes WHERE id = ?3)";

/// The row id of node `id` if it is alive.
pub(crate) fn live_node(conn: &Connection, id: &str) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT rid FROM _pluresdb_nodes WHERE id = ?1 AND cl % 2 = 1")?
        .query_row([id], |r| r.get(0))
        .optional()?)
}

/// The row id of node `id`, alive or not, if it has a row.
pub(crate) fn node_row(conn: &Connection, id: &str) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT rid FROM _pluresdb_nodes WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?)
}

/// The row id of node `id`, adding a placeholder row (causal length 0: never alive, no clock)
/// when it has none, for an edge merged before its node.
pub(crate) fn node_row_or_placeholder(conn: &Connection, id: &str) -> Result<i64> {
    if let Some(rid) = node_row(conn, id)? {
        return Ok(rid);
    }
    Ok(conn
        .prepare_cached(
            "INSERT INTO _pluresdb_nodes(id, data, created_hlc, updated_hlc, site, cl)
             VALUES (?1, '{}', 0, 0, zeroblob(16), 0) RETURNING rid",
        )?
        .query_row([id], |r| r.get(0))?)
}

/// The id of relation `name`, if an edge ever had it.
pub(crate) fn relation(conn: &Connection, name: &str) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT id FROM _pluresdb_relations WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?)
}

/// The id of relation `name`, interning it when new.
pub(crate) fn relation_or_insert(conn: &Connection, name: &str) -> Result<i64> {
    if let Some(id) = relation(conn, name)? {
        return Ok(id);
    }
    Ok(conn
        .prepare_cached("INSERT INTO _pluresdb_relations(name) VALUES (?1) RETURNING id")?
        .query_row([name], |r| r.get(0))?)
}

/// The id (`eid`) of the edge `from -[relation]-> to`, alive or not, if it has a row.
pub(crate) fn edge_row(
    conn: &Connection,
    from: &str,
    relation: &str,
    to: &str,
) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT eid FROM _pluresdb_edges WHERE {EDGE_BY_NAMES}"
        ))?
        .query_row([from, relation, to], |r| r.get(0))
        .optional()?)
}
