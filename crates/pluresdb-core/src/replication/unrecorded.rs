//! Writes to synced tables that PluresDB did not see (made by another program on the file,
//! such as the `sqlite3` shell or an app's own SQLite library, or a merged row a trigger
//! skipped), found by [`Database::check`](crate::Database::check): rows with no live sync
//! record, and live sync records whose row is gone. Such writes do not sync. (Stopping and
//! starting the table's sync is no repair: it compares rows with what they were when the
//! sync stopped, and a table emptied meanwhile counts as made again.)

use rusqlite::Connection;

use super::collections::{Kind, quote};
use super::state::Replication;
use crate::error::Result;

impl Replication {
    /// A line per synced table that holds writes made without PluresDB (the clock must be
    /// settled first).
    pub(crate) fn writes_not_recorded(&self, conn: &Connection) -> Result<Vec<String>> {
        // (id, name, key columns as packed, the join of a row to its clock record)
        let tables: Vec<(u32, String, String, String)> = self.with_collections(conn, |colls| {
            Ok(colls
                .iter()
                .filter_map(|c| match &c.kind {
                    Kind::Table(info) if info.exists => {
                        let packed: Vec<String> =
                            info.pk.iter().map(|k| format!("r.{}", quote(k))).collect();
                        Some((
                            c.id,
                            c.name.clone(),
                            packed.join(", "),
                            info.row_of_clock_key(),
                        ))
                    }
                    _ => None,
                })
                .collect())
        })?;
        let mut problems = Vec::new();
        for (id, name, packed, on) in tables {
            let table = quote(&name);
            let unrecorded: i64 = conn.query_row(
                &format!(
                    "SELECT count(*) FROM {table} r WHERE NOT EXISTS (SELECT 1 FROM \
                     _pluresdb_clock c WHERE c.tbl = {id} AND c.key = pluresdb_pack({packed}) \
                     AND c.cl % 2 = 1)"
                ),
                [],
                |r| r.get(0),
            )?;
            let gone: i64 = conn.query_row(
                &format!(
                    "SELECT count(*) FROM _pluresdb_clock c WHERE c.tbl = {id} AND c.cl % 2 = 1 \
                     AND NOT EXISTS (SELECT 1 FROM {table} r WHERE {on})"
                ),
                [],
                |r| r.get(0),
            )?;
            if unrecorded + gone > 0 {
                problems.push(format!(
                    "synced table {name:?} has {unrecorded} row(s) that PluresDB did not see \
                     written and {gone} row(s) it did not see deleted (written by another \
                     program, such as the sqlite3 shell or an app's own SQLite library, or \
                     skipped by a trigger's RAISE(IGNORE) as they merged): other devices do not \
                     get those writes, nor do they undo them here. Make writes to synced tables \
                     through PluresDB; to sync such rows as they are here, write them again \
                     through PluresDB (INSERT OR REPLACE them; a deleted one: insert it and \
                     delete it)"
                ));
            }
        }
        Ok(problems)
    }
}
