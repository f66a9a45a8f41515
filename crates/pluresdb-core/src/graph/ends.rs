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

/// [`EDGE_BY_NAMES`] for a visible edge: live, between two live nodes.
///
/// An edge is visible only when both its nodes are live. Sync can store a live edge at a node
/// that is not: one linked on a device while another deleted the node (the delete could not
/// unlink what it never saw), or merged before its nodes arrived. Such an edge is kept, hidden
/// from every read, and shows when both nodes live again; every replica decides this from the
/// same merged rows, so they agree.
pub(crate) const VISIBLE_EDGE_BY_NAMES: &str =
    "src = (SELECT rid FROM _pluresdb_nodes WHERE id = ?1 AND cl % 2 = 1)
    AND rel = (SELECT id FROM _pluresdb_relations WHERE name = ?2)
    AND dst = (SELECT rid FROM _pluresdb_nodes WHERE id = ?3 AND cl % 2 = 1)
    AND cl % 2 = 1";

/// A condition that holds when an edge is visible (see [`VISIBLE_EDGE_BY_NAMES`]), given the
/// SQL expressions of its causal length and its two node row ids (`e.cl`, `e.src`, `e.dst`
/// on `_pluresdb_edges`; `cl`, `src_rid`, `dst_rid` on `_pluresdb_edges_named`).
pub(crate) fn visible_edge(cl: &str, src: &str, dst: &str) -> String {
    format!(
        "{cl} % 2 = 1
         AND (SELECT cl FROM _pluresdb_nodes WHERE rid = {src}) % 2 = 1
         AND (SELECT cl FROM _pluresdb_nodes WHERE rid = {dst}) % 2 = 1"
    )
}

/// The id the one-column query `sql` finds for `key`, if any.
fn find(conn: &Connection, sql: &str, key: &str) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached(sql)?
        .query_row([key], |r| r.get(0))
        .optional()?)
}

/// The id `sql` finds for `key`, or else the one `insert` (`... RETURNING` it) gives it.
fn find_or_insert(conn: &Connection, sql: &str, insert: &str, key: &str) -> Result<i64> {
    match find(conn, sql, key)? {
        Some(id) => Ok(id),
        None => Ok(conn
            .prepare_cached(insert)?
            .query_row([key], |r| r.get(0))?),
    }
}

/// The row id of node `id` if it is alive.
pub(crate) fn live_node(conn: &Connection, id: &str) -> Result<Option<i64>> {
    find(
        conn,
        "SELECT rid FROM _pluresdb_nodes WHERE id = ?1 AND cl % 2 = 1",
        id,
    )
}

/// The row id of node `id`, adding a placeholder row (causal length 0: never alive, no clock)
/// when it has none, for an edge merged before its node.
pub(crate) fn node_row_or_placeholder(conn: &Connection, id: &str) -> Result<i64> {
    find_or_insert(
        conn,
        "SELECT rid FROM _pluresdb_nodes WHERE id = ?1",
        "INSERT INTO _pluresdb_nodes(id, data, created_hlc, updated_hlc, site, cl)
         VALUES (?1, '{}', 0, 0, zeroblob(16), 0) RETURNING rid",
        id,
    )
}

/// The id of relation `name`, interning it when new.
pub(crate) fn relation_or_insert(conn: &Connection, name: &str) -> Result<i64> {
    find_or_insert(
        conn,
        "SELECT id FROM _pluresdb_relations WHERE name = ?1",
        "INSERT INTO _pluresdb_relations(name) VALUES (?1) RETURNING id",
        name,
    )
}
