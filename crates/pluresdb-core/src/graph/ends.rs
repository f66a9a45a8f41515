//! The integer ids edges are stored with: node row ids for their ends and interned relation
//! ids (see the edge table in `schema.rs`).

use rusqlite::{Connection, OptionalExtension};

use crate::error::Result;

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
