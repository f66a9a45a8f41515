//! A live edge has two live ends. Deleting a node unlinks its edges (as Cypher's `DETACH
//! DELETE` does); a merge unlinks the edges it finds at a node deleted here: linked on one
//! device while another deleted the node, they lose to the delete as the node's own
//! concurrent edits do. Every replica comes to the same answer from the same changes, and the
//! unlinks are sent on like any local write.

use rusqlite::Connection;

use pluresdb_crdt::Hlc;

use super::edges::edge_key;
use crate::database::Database;
use crate::error::Result;
use crate::events::{Change, EdgeChange};

/// A live edge: its row id and its names (from, relation, to).
pub(crate) type LiveEdge = (i64, String, String, String);

/// The named edges of `_pluresdb_edges_named` that are live and match `cond` (on `?1`).
fn live(conn: &Connection, cond: &str, param: i64) -> Result<Vec<LiveEdge>> {
    let sql = format!(
        "SELECT eid, src, rel, dst FROM _pluresdb_edges_named WHERE ({cond}) AND cl % 2 = 1"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([param], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The live edges from or to node row `rid`.
pub(crate) fn live_edges_at(conn: &Connection, rid: i64) -> Result<Vec<LiveEdge>> {
    live(conn, "src_rid = ?1 OR dst_rid = ?1", rid)
}

/// Unlinks `edges` (live, each once) as one write of this site at `now`, in the open
/// transaction: each edge keeps its clock in its row; the change hub and the peers' next read
/// hear of them.
pub(crate) fn unlink(db: &Database, conn: &Connection, edges: &[LiveEdge], now: Hlc) -> Result<()> {
    if edges.is_empty() {
        return Ok(());
    }
    let repl = db.replication();
    let clock = repl.edge_stamp(conn, now)?;
    let deleted = clock.deleted();
    let site = db.site_id();
    let mut stmt = conn.prepare_cached(
        "UPDATE _pluresdb_edges SET cl = cl + 1, updated_hlc = ?1, site = ?2, seq = ?3, ver = ?4
         WHERE eid = ?5 AND cl % 2 = 1",
    )?;
    for (eid, ..) in edges {
        stmt.execute(rusqlite::params![
            now.as_u64() as i64,
            site.as_bytes().as_slice(),
            clock.seq(),
            deleted,
            eid
        ])?;
    }
    repl.note_edge_writes(conn, &clock, edges.len(), || {
        edges.iter().map(|(_, f, r, t)| edge_key(f, r, t)).collect()
    })?;
    let hub = &db.engine().hub;
    if hub.is_active() {
        for (_, from, relation, to) in edges {
            hub.record(Change::Edge(EdgeChange {
                from: from.clone(),
                relation: relation.clone(),
                to: to.clone(),
                edge: None,
            }));
        }
    }
    Ok(())
}

/// After a merge: unlinks the live edges at the nodes `deleted` (ids the merge deleted) and the
/// edges `dangling` (row ids the merge left live with a deleted end). They are this site's
/// writes, not the peer's: they take a `db_version` of their own, so they are sent to that
/// peer too (changes stored at the merge's version are not; see `received`). Returns how many
/// edges were unlinked.
pub(crate) fn after_merge(
    db: &Database,
    conn: &Connection,
    deleted: &[String],
    dangling: &[i64],
) -> Result<u64> {
    let mut edges: Vec<LiveEdge> = Vec::new();
    for id in deleted {
        let rid = conn
            .prepare_cached("SELECT rid FROM _pluresdb_nodes WHERE id = ?1 AND cl % 2 = 0")?
            .query_row([id], |r| r.get(0));
        match rid {
            Ok(rid) => edges.extend(live_edges_at(conn, rid)?),
            Err(rusqlite::Error::QueryReturnedNoRows) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // (Each end checked again: a later change of the batch may have brought its node back.)
    for &eid in dangling {
        let cond = "eid = ?1 AND EXISTS (SELECT 1 FROM _pluresdb_nodes n
                    WHERE n.rid IN (src_rid, dst_rid) AND n.cl > 0 AND n.cl % 2 = 0)";
        edges.extend(live(conn, cond, eid)?);
    }
    edges.sort_unstable_by_key(|e| e.0);
    edges.dedup_by_key(|e| e.0);
    if edges.is_empty() {
        return Ok(0);
    }
    let repl = db.replication();
    repl.fresh_tx_seq(conn)?;
    unlink(db, conn, &edges, repl.clock.now())?;
    Ok(edges.len() as u64)
}
