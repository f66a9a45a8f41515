//! Opting SQL tables in and out of replication.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use rusqlite::{Connection, OptionalExtension};

use super::added_columns;
use super::clock::RowClock;
use super::collections::{Collection, Kind, Renamed, TableInfo, check_shape, quote, table_info};
use super::packs;
use super::state::Replication;
use crate::error::{Error, Result};

/// `table` as the schema names it (SQLite takes table names in any case: `notes` is the
/// table made as `NOTES`), or as given when there is no such table.
fn schema_name(conn: &Connection, table: &str) -> Result<String> {
    let named: Option<String> = conn
        .query_row(
            "SELECT name FROM sqlite_schema
             WHERE type IN ('table', 'view') AND name = ?1 COLLATE NOCASE",
            [table],
            |r| r.get(0),
        )
        .optional()?;
    Ok(named.unwrap_or_else(|| table.to_owned()))
}

impl Replication {
    /// Makes `table` replicated: checks its shape and records every existing row as written
    /// now (or, for a table that synced before, brings back its rows' versions: see
    /// [`paused`](super::paused)); the writer's pre-update hook reports its changes from the
    /// next statement on. Idempotent. Runs in the caller's transaction.
    pub(crate) fn sync_table_on(&self, conn: &Connection, table: &str) -> Result<()> {
        if conn.is_autocommit() {
            // Called as `SELECT pluresdb_sync_table(...)` outside a transaction.
            conn.execute_batch("SAVEPOINT pluresdb_sync_table")?;
            let done = self.sync_table_on(conn, table);
            conn.execute_batch(if done.is_ok() {
                "RELEASE pluresdb_sync_table"
            } else {
                "ROLLBACK TO pluresdb_sync_table; RELEASE pluresdb_sync_table"
            })?;
            return done;
        }
        // Changes captured so far belong to the tables synced so far.
        self.settle_clock(conn)?;
        let table = &schema_name(conn, table)?;
        let info = check_shape(conn, table)?;
        let added = conn
            .prepare_cached(
                "INSERT OR IGNORE INTO _pluresdb_collections(name, kind) VALUES (?1, 'table')",
            )?
            .execute([table])?
            == 1;
        let id: i64 = conn.query_row(
            "SELECT id FROM _pluresdb_collections WHERE name = ?1 AND kind = 'table'",
            [table],
            |r| r.get(0),
        )?;
        let id = u32::try_from(id).map_err(|_| Error::internal("collection id out of range"))?;
        if added {
            // (Column times recorded by a file from before they went with their table.)
            added_columns::forget(conn, id)?;
        }
        if !(added && self.resume_table(conn, id, table, &info)?) {
            self.stamp_unrecorded_rows(conn, id, table, &info)?;
        }
        // Every existing row was recorded at once: too many to list as recent changes.
        self.recent.lock().overflow(self.tx_seq(conn)?);
        self.persist_clock(conn)?;
        self.collections_changed(conn)
    }

    /// Records every row of `table` (collection `id`) that has no version yet as written now.
    fn stamp_unrecorded_rows(
        &self,
        conn: &Connection,
        id: u32,
        table: &str,
        info: &TableInfo,
    ) -> Result<()> {
        let stamp = self.local_stamp(conn, self.clock.now())?;
        let keys = info.key_list();
        let params = rusqlite::params![
            i64::from(id),
            stamp.seq as i64,
            RowClock::whole(stamp).encode()
        ];
        if !packs::any(conn, id)? {
            conn.execute(
                &format!(
                    "INSERT INTO _pluresdb_clock(tbl, key, cl, seq, ver)
                     SELECT ?1, pluresdb_pack({keys}), 1, ?2, ?3 FROM {}
                     WHERE true ON CONFLICT(tbl, key) DO NOTHING",
                    quote(table)
                ),
                params,
            )?;
            return Ok(());
        }
        // Rows whose clocks are packed have them already.
        let mut insert = conn.prepare(
            "INSERT INTO _pluresdb_clock(tbl, key, cl, seq, ver) VALUES (?1, ?4, 1, ?2, ?3)
             ON CONFLICT(tbl, key) DO NOTHING",
        )?;
        let live = packs::live_keys(conn, id)?;
        for key in packs::rows_without_record(conn, id, table, info)? {
            if live.binary_search(&key).is_err() {
                insert.execute((params[0], params[1], params[2], key))?;
            }
        }
        Ok(())
    }

    /// Stops replicating `table`: its clock records are kept aside (see
    /// [`paused`](super::paused)) until it syncs again; for a table not synced, drops the
    /// records kept so. Its rows stay.
    pub(crate) fn unsync_table_on(&self, conn: &Connection, table: &str) -> Result<bool> {
        if conn.is_autocommit() {
            conn.execute_batch("SAVEPOINT pluresdb_unsync_table")?;
            let done = self.unsync_table_on(conn, table);
            conn.execute_batch(if done.is_ok() {
                "RELEASE pluresdb_unsync_table"
            } else {
                "ROLLBACK TO pluresdb_unsync_table; RELEASE pluresdb_unsync_table"
            })?;
            return done;
        }
        let found: Option<(u32, String)> = conn
            .query_row(
                "SELECT id, name FROM _pluresdb_collections
                 WHERE name = ?1 COLLATE NOCASE AND kind = 'table'",
                [table],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((id, name)) = found else {
            // Not synced: the records it kept when it stopped, if any, go (it syncs afresh).
            super::paused::discard(conn, table)?;
            return Ok(false);
        };
        // Changes captured so far are recorded before the table stops being synced.
        self.settle_clock(conn)?;
        packs::unpack(conn, id)?;
        super::paused::pause(conn, id, &name)?;
        added_columns::forget(conn, id)?;
        conn.execute("DELETE FROM _pluresdb_clock WHERE tbl = ?1", [id])?;
        conn.execute("DELETE FROM _pluresdb_collections WHERE id = ?1", [id])?;
        self.collections_changed(conn)?;
        Ok(true)
    }

    /// Follows up what the open transaction's own schema changes did to synced tables (noted
    /// when the collections were read again after the statement; see `PendingDdl`).
    pub(crate) fn follow_own_ddl(&self, conn: &Connection) -> Result<()> {
        let generation = self.tx.generation.load(Ordering::Acquire);
        let pending = std::mem::take(&mut *self.pending_ddl.lock());
        if pending.generation != generation || conn.is_autocommit() {
            return Ok(());
        }
        let followed = (|| {
            if !pending.vanished.is_empty() {
                self.follow_vanished(conn, pending.vanished)?;
            }
            if !pending.renamed_columns.is_empty() {
                self.follow_renamed_columns(conn, pending.renamed_columns)?;
            }
            Ok(())
        })();
        // Not followed, the schema change must not commit either.
        if let Err(e) = &followed {
            self.refuse(format!(
                "a schema change of a synced table could not be recorded for sync: {e}"
            ));
        }
        followed
    }

    /// Follows the synced tables the open transaction renamed, and refuses to commit one that
    /// dropped a synced table.
    ///
    /// A table renamed (`ALTER TABLE t RENAME TO t2`) keeps syncing under its new name, with
    /// its rows' versions: SQLite keeps its root page, and its columns are the same. A table
    /// dropped would keep rows on the other devices that this one would not take back (a sync
    /// sends a device none of its own changes), and its sync records would describe rows it
    /// no longer has; so the drop is refused, saying what to do instead.
    fn follow_vanished(&self, conn: &Connection, vanished: Vec<Arc<Collection>>) -> Result<()> {
        let mut renamed_any = false;
        for old in vanished {
            let (id, name) = (old.id, &old.name);
            let Kind::Table(shape) = &old.kind else {
                continue;
            };
            let renamed: Option<String> = conn
                .prepare(
                    "SELECT name FROM sqlite_schema WHERE type = 'table' AND rootpage = ?1
                     AND name NOT IN (SELECT name FROM _pluresdb_collections)",
                )?
                .query_row([old.rootpage], |r| r.get(0))
                .optional()?;
            // (With auto_vacuum, a drop may move another table into the freed root page: the
            // columns tell that one apart.)
            match renamed {
                Some(new) if same_columns(&table_info(conn, &new)?, shape) => {
                    conn.execute(
                        "UPDATE _pluresdb_collections SET name = ?1 WHERE id = ?2",
                        rusqlite::params![new, id],
                    )?;
                    renamed_any = true;
                }
                _ => self.refuse(format!(
                    "table {name:?} syncs, so it cannot be dropped: other devices would keep its \
                     rows, which this one could not take back. To delete its rows on every \
                     device, DELETE FROM it; to change its columns, ALTER TABLE it (ADD, RENAME \
                     or DROP COLUMN); to drop it on this device only, or to rebuild it (SQLite's \
                     way of changing a column's type or constraints), stop syncing it first \
                     (SELECT pluresdb_unsync_table('{}')) and sync it again after (rows left alone keep \
                     their versions; what changed meanwhile counts as done then, so rows the \
                     rebuilt table no longer has are deleted on every device)",
                    name.replace('\'', "''")
                )),
            }
        }
        if renamed_any {
            self.collections_changed(conn)?;
        }
        Ok(())
    }

    /// Follows the columns of synced tables the open transaction renamed.
    ///
    /// Changes name their column: to its peers, a renamed column is a new one, and the values
    /// it holds (written under the old name) had no version under the new name, so they were
    /// never sent, and two devices that renamed it kept different values for good. Each row's
    /// value now keeps the version it had under the old name, stored anew (so it is sent):
    /// it reaches every device that has the column (one that has not renamed it yet leaves it
    /// out and asks for it once it has), and the value written last wins, as for any write.
    fn follow_renamed_columns(
        &self,
        conn: &Connection,
        renamed: Vec<(u32, Vec<Renamed>)>,
    ) -> Result<()> {
        // Changes captured before the rename are recorded first, under the names they had.
        self.settle_clock(conn)?;
        let seq = self.tx_seq(conn)?;
        let mut stmt = conn.prepare(
            "UPDATE _pluresdb_clock SET seq = ?2, ver = pluresdb_clock_rename(ver, ?3, ?4, ?5, ?2)
             WHERE tbl = ?1 AND cl % 2 = 1",
        )?;
        for (id, columns) in renamed {
            packs::unpack(conn, id)?;
            for (old, added_at, new) in columns {
                stmt.execute(rusqlite::params![
                    i64::from(id),
                    seq as i64,
                    old,
                    added_at as i64,
                    new
                ])?;
            }
        }
        // Every row was stored anew at once: too many to list as recent changes.
        self.recent.lock().overflow(seq);
        self.persist_clock(conn)
    }

    /// Names of the replicated SQL tables.
    pub(crate) fn synced_tables(&self, conn: &Connection) -> Result<Vec<String>> {
        Ok(self
            .synced_table_keys(conn)?
            .into_iter()
            .map(|(name, _)| name)
            .collect())
    }

    /// The replicated SQL tables, each with its key columns in key order.
    pub(crate) fn synced_table_keys(
        &self,
        conn: &Connection,
    ) -> Result<Vec<(String, Vec<String>)>> {
        self.with_collections(conn, |colls| {
            Ok(colls
                .iter()
                .filter_map(|c| match &c.kind {
                    super::collections::Kind::Table(info) => {
                        Some((c.name.clone(), info.pk.clone()))
                    }
                    _ => None,
                })
                .collect())
        })
    }
}

/// Whether table shape `now` has the key and columns of `old`.
fn same_columns(now: &TableInfo, old: &TableInfo) -> bool {
    now.exists && now.pk == old.pk && now.fields == old.fields
}
