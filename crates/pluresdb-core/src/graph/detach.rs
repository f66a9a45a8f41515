//! A live edge has two live ends. Deleting a node unlinks its edges (as Cypher's `DETACH
//! DELETE` does). A merge unlinks the live edges it finds at a node deleted here that were
//! linked before the delete (by clock time): linked on one device while another deleted the
//! node, they lose to the delete as the node's own concurrent edits do, and the unlinks are
//! sent on like any local write.
//!
//! An edge linked after the delete's time is left alone: it may belong to a later life of
//! the node (put again, then linked) whose creation has not arrived here yet, and unlinking it
//! would lose that link everywhere. Such an edge at a node that stays deleted remains (the same
//! on every device) until it is unlinked or the node is put again.

use rusqlite::Connection;

use pluresdb_crdt::Hlc;

use super::edges::edge_key;
use crate::database::Database;
use crate::error::Result;
use crate::events::{Change, EdgeChange};

/// A live edge: its row id and its names (from, relation, to).
pub(crate) type LiveEdge = (i64, String, String, String);

/// The live edges whose row ids `eids` lists (as a JSON array), with their names.
fn named(conn: &Connection, eids: &str) -> Result<Vec<LiveEdge>> {
    let mut stmt = conn.prepare_cached(
        "SELECT e.eid, s.id, r.name, d.id
         FROM _pluresdb_edges e, _pluresdb_nodes s, _pluresdb_relations r, _pluresdb_nodes d
         WHERE e.eid IN (SELECT value FROM json_each(?1)) AND e.cl % 2 = 1
           AND s.rid = e.src AND r.id = e.rel AND d.rid = e.dst",
    )?;
    let rows = stmt.query_map([eids], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The row ids of the live edges from or to node row `rid` linked before clock time `before`.
fn edges_at(conn: &Connection, rid: i64, before: i64, out: &mut Vec<i64>) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "SELECT eid FROM _pluresdb_edges WHERE src = ?1 AND cl % 2 = 1 AND created_hlc < ?2
         UNION
         SELECT eid FROM _pluresdb_edges WHERE dst = ?1 AND cl % 2 = 1 AND created_hlc < ?2",
    )?;
    for eid in stmt.query_map([rid, before], |r| r.get(0))? {
        out.push(eid?);
    }
    Ok(())
}

/// Unlinks every live edge from or to node row `rid` as one write of this site at `now` (a
/// local delete of the node).
pub(crate) fn unlink_all_at(db: &Database, conn: &Connection, rid: i64, now: Hlc) -> Result<()> {
    let mut eids = Vec::new();
    edges_at(conn, rid, i64::MAX, &mut eids)?;
    unlink(db, conn, &eids, now)?;
    Ok(())
}

/// Unlinks the live edges among `eids` as one write of this site at `now`, in the open
/// transaction (one statement): each edge keeps its clock in its row; the change hub and the
/// peers' next read hear of them. Returns how many it unlinked.
fn unlink(db: &Database, conn: &Connection, eids: &[i64], now: Hlc) -> Result<u64> {
    if eids.is_empty() {
        return Ok(0);
    }
    let eids = serde_json::to_string(eids)?;
    let edges = named(conn, &eids)?;
    if edges.is_empty() {
        return Ok(0);
    }
    let repl = db.replication();
    let clock = repl.edge_stamp(conn, now)?;
    conn.prepare_cached(
        "UPDATE _pluresdb_edges SET cl = cl + 1, updated_hlc = ?1, site = ?2, seq = ?3, ver = ?4
         WHERE eid IN (SELECT value FROM json_each(?5)) AND cl % 2 = 1",
    )?
    .execute(rusqlite::params![
        now.as_u64() as i64,
        db.site_id().as_bytes().as_slice(),
        clock.seq(),
        clock.deleted(),
        eids
    ])?;
    repl.note_edge_writes(conn, &clock, edges.len(), || {
        edges.iter().map(|(_, f, r, t)| edge_key(f, r, t)).collect()
    })?;
    let hub = &db.engine().hub;
    if hub.is_active() {
        for (_, from, relation, to) in &edges {
            hub.record(Change::Edge(EdgeChange {
                from: from.clone(),
                relation: relation.clone(),
                to: to.clone(),
                edge: None,
            }));
        }
    }
    Ok(edges.len() as u64)
}

/// After a merge: unlinks the live edges linked before the delete at the nodes `deleted` (ids
/// the merge deleted) and the edges `dangling` (row ids the merge left live at a node deleted
/// after they were linked). They are this site's writes, not the peer's: they take a
/// `db_version` of their own, so they are sent to that peer too (changes stored at the
/// merge's version are not; see `received`). Returns how many edges were unlinked.
pub(crate) fn after_merge(
    db: &Database,
    conn: &Connection,
    deleted: &[String],
    dangling: &[i64],
) -> Result<u64> {
    let mut eids: Vec<i64> = Vec::new();
    for id in deleted {
        let found = conn
            .prepare_cached(
                "SELECT rid, updated_hlc FROM _pluresdb_nodes
                 WHERE id = ?1 AND cl > 0 AND cl % 2 = 0",
            )?
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)));
        match found {
            Ok((rid, deleted_at)) => edges_at(conn, rid, deleted_at, &mut eids)?,
            Err(rusqlite::Error::QueryReturnedNoRows) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // Each checked again: a later change of the batch may have brought its node back.
    for &eid in dangling {
        let still: bool = conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM _pluresdb_edges e, _pluresdb_nodes n
                    WHERE e.eid = ?1 AND e.cl % 2 = 1 AND n.rid IN (e.src, e.dst)
                      AND n.cl > 0 AND n.cl % 2 = 0 AND e.created_hlc < n.updated_hlc)",
            )?
            .query_row([eid], |r| r.get(0))?;
        if still {
            eids.push(eid);
        }
    }
    eids.sort_unstable();
    eids.dedup();
    if eids.is_empty() {
        return Ok(0);
    }
    let repl = db.replication();
    repl.fresh_tx_seq(conn)?;
    unlink(db, conn, &eids, repl.clock.now())
}
