//! Writes to synced tables that PluresDB did not see (made by another program on the file,
//! such as the `sqlite3` shell or an app's own SQLite library, or a merged row a trigger
//! skipped), found by [`Database::check`](crate::Database::check): rows with no live sync
//! record, and live sync records whose row is gone. Such writes do not sync. (Stopping and
//! starting the table's sync is no repair: it compares rows with what they were when the
//! sync stopped, and a table emptied meanwhile counts as made again.)

use std::sync::Arc;

use rusqlite::Connection;

use super::collections::{Collection, Kind, TableInfo, quote};
use super::packs;
use super::state::Replication;
use crate::error::Result;

impl Replication {
    /// A line per synced table that holds writes made without PluresDB (the clock must be
    /// settled first).
    pub(crate) fn writes_not_recorded(&self, conn: &Connection) -> Result<Vec<String>> {
        let tables: Vec<Arc<Collection>> = self.with_collections(conn, |colls| {
            Ok(colls
                .iter()
                .filter(|c| matches!(&c.kind, Kind::Table(info) if info.exists))
                .cloned()
                .collect())
        })?;
        let mut problems = Vec::new();
        for coll in tables {
            if let Kind::Table(info) = &coll.kind
                && let Some(problem) = count_unrecorded(conn, coll.id, &coll.name, info)?
            {
                problems.push(problem);
            }
        }
        Ok(problems)
    }
}

/// The line [`Replication::writes_not_recorded`] gives table `name` (collection `id`, shaped
/// `info`), if it holds writes made without PluresDB.
fn count_unrecorded(
    conn: &Connection,
    id: u32,
    name: &str,
    info: &TableInfo,
) -> Result<Option<String>> {
    let table = quote(name);
    let key = info.key_of_row();
    let on = info.row_of_clock_key();
    let count = |sql: String| conn.query_row(&sql, [], |r| r.get::<_, i64>(0));
    let mut unrecorded = count(format!(
        "SELECT count(*) FROM {table} r WHERE NOT EXISTS (SELECT 1 FROM _pluresdb_clock c \
         WHERE c.tbl = {id} AND c.key = {key} AND c.cl % 2 = 1)"
    ))?;
    let mut gone = count(format!(
        "SELECT count(*) FROM _pluresdb_clock c WHERE c.tbl = {id} AND c.cl % 2 = 1 \
         AND NOT EXISTS (SELECT 1 FROM {table} r WHERE {on})"
    ))?;
    if packs::any(conn, id)? {
        // A row with no record may have its clock in a pack (always a live row's); an entry
        // whose row is gone was deleted by another program.
        let live = packs::live_keys(conn, id)?;
        let packed = packs::rows_without_record(conn, id, name, info)?
            .iter()
            .filter(|k| live.binary_search(k).is_ok())
            .count();
        unrecorded -= packed as i64;
        gone += packs::entries_without_row(conn, name, info, &live)? as i64;
    }
    if unrecorded + gone > 0 {
        return Ok(Some(format!(
            "synced table {name:?} has {unrecorded} row(s) that PluresDB did not see \
                     written and {gone} row(s) it did not see deleted (written by another \
                     program, such as the sqlite3 shell or an app's own SQLite library, or \
                     skipped by a trigger's RAISE(IGNORE) as they merged): other devices do not \
                     get those writes, nor do they undo them here. Make writes to synced tables \
                     through PluresDB; to sync such rows as they are here, write them again \
                     through PluresDB (INSERT OR REPLACE them; a deleted one: insert it and \
                     delete it)"
        )));
    }
    Ok(None)
}
