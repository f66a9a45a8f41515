//! Edge events for a node that died or lives again: an edge shows only while both its nodes
//! live (see `Database::get_edge`), so such a node hides or shows its live edges, and the
//! subscribers that saw them are told.

use pluresdb_crdt::Hlc;
use rusqlite::Connection;

use super::{Edge, parse_object};
use crate::error::Result;
use crate::events::{Change, EdgeChange};

/// The live edges at node `id` whose other node lives (a loop's is `id` itself), as events:
/// shown (with the edge) when `id` now lives, hidden otherwise.
pub(crate) fn edges_shown_or_hidden(
    conn: &Connection,
    id: &str,
    lives: bool,
) -> Result<Vec<Change>> {
    let mut stmt = conn.prepare_cached(
        "SELECT src, rel, dst, data, created_hlc, updated_hlc FROM _pluresdb_edges_named
         WHERE (src = ?1 OR dst = ?1) AND cl % 2 = 1
           AND (src_rid = dst_rid OR (SELECT cl FROM _pluresdb_nodes
                WHERE rid = iif(src = ?1, dst_rid, src_rid)) % 2 = 1)",
    )?;
    let mut rows = stmt.query([id])?;
    let mut events = Vec::new();
    while let Some(row) = rows.next()? {
        let (from, relation, to): (String, String, String) =
            (row.get(0)?, row.get(1)?, row.get(2)?);
        let edge = if lives {
            Some(Edge {
                from: from.clone(),
                relation: relation.clone(),
                to: to.clone(),
                data: parse_object(&row.get::<_, String>(3)?)?,
                created_at: Hlc::from_u64(row.get::<_, i64>(4)? as u64),
                updated_at: Hlc::from_u64(row.get::<_, i64>(5)? as u64),
            })
        } else {
            None
        };
        events.push(Change::Edge(EdgeChange {
            from,
            relation,
            to,
            edge,
        }));
    }
    Ok(events)
}
