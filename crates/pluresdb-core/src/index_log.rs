//! The index log: one row per write to something an in-memory index mirrors (a vector column,
//! the graph's nodes and edges), written by triggers in the same transaction as the write.
//! An index applies the committed entries after the last sequence number it has seen, so it
//! follows every writer (this process, sync, other processes) and never sees a rolled-back
//! write. Index ids: vector indexes are positive; the graph uses [`GRAPH_NODES`] and
//! [`GRAPH_EDGES`]; 0 marks the high-water placeholder.

use rusqlite::Connection;

use crate::error::Result;

/// Log index id of node rows (for the graph).
pub(crate) const GRAPH_NODES: i64 = -1;
/// Log index id of edge rows (for the graph).
pub(crate) const GRAPH_EDGES: i64 = -2;

/// Creates the log table if needed.
pub(crate) fn create(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS _pluresdb_index_log (
             seq INTEGER PRIMARY KEY,
             idx INTEGER NOT NULL,
             rid INTEGER NOT NULL
         );",
    )?;
    Ok(())
}

/// Deletes the entries of index `idx` up to `seq`. The log's highest sequence number is kept
/// (as a placeholder row of index 0 if need be) so new entries never reuse a number an index
/// has already applied.
pub(crate) fn delete(conn: &Connection, idx: i64, seq: i64) -> Result<()> {
    let high: Option<i64> =
        conn.query_row("SELECT max(seq) FROM _pluresdb_index_log", [], |r| r.get(0))?;
    conn.execute(
        "DELETE FROM _pluresdb_index_log WHERE idx = ?1 AND seq <= ?2",
        [idx, seq],
    )?;
    if let Some(high) = high {
        conn.execute(
            "INSERT OR IGNORE INTO _pluresdb_index_log(seq, idx, rid) VALUES (?1, 0, 0)",
            [high],
        )?;
        conn.execute(
            "DELETE FROM _pluresdb_index_log WHERE idx = 0 AND seq < ?1",
            [high],
        )?;
    }
    Ok(())
}
