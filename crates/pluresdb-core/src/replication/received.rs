//! Which merge transactions brought a peer's changes (`_pluresdb_received`): the peer has
//! everything such a transaction stored, so the changes read for that peer leave it out.
//!
//! Without it, a device syncing with a hub sends the hub back every change of the other
//! devices that it just got from the hub: the hub skips them as known, but they cross the
//! network again and count as pending until sent.
//!
//! A merge stamps everything it stores with its transaction's `db_version` (versions that
//! stay local keep theirs), so one row per merge transaction says it all. Only a merge that
//! is a transaction of its own is noted: in a caller's transaction, local writes share its
//! `db_version`. A note counts once the peer's set of changes it belongs to is complete (the
//! peer's cursor recorded, with the set's last merge): the peer has then announced, durably,
//! a version past those changes, so a restored backup of the peer that lacks them is told
//! apart as a copy (see `Database::announce`) rather than left without them. Notes at or
//! below what the peer confirmed having are dropped (changes read for it start after that,
//! unless it asks for everything again, and then it gets those changes back once).
//!
//! The first merge that notes makes the table (it holds the write lock then); until then,
//! everything is sent, as before the table existed.

use std::collections::HashSet;

use rusqlite::{CachedStatement, Connection};

use crate::error::Result;

const TABLE_NAME: &str = "_pluresdb_received";

const TABLE: &str = "CREATE TABLE IF NOT EXISTS _pluresdb_received (
    seq       INTEGER PRIMARY KEY,
    site      INTEGER NOT NULL,
    confirmed INTEGER NOT NULL DEFAULT 0
)";

/// `sql` prepared, or `None` when `table`, made when first needed, does not exist yet.
pub(crate) fn prepared<'c>(
    conn: &'c Connection,
    table: &str,
    sql: &str,
) -> Result<Option<CachedStatement<'c>>> {
    match conn.prepare_cached(sql) {
        Ok(stmt) => Ok(Some(stmt)),
        Err(_) if !crate::schema::table_exists(conn, table)? => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Runs `sql` with `params`, doing nothing when the table does not exist yet.
fn run(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<()> {
    if let Some(mut stmt) = prepared(conn, TABLE_NAME, sql)? {
        stmt.execute(params)?;
    }
    Ok(())
}

/// Notes, unconfirmed, that the merge transaction `seq` stored changes received from site
/// `site` (its index in `_pluresdb_sites`). Called in the merge's transaction.
pub(crate) fn record(conn: &Connection, seq: u64, site: u32) -> Result<()> {
    const INSERT: &str = "INSERT OR REPLACE INTO _pluresdb_received(seq, site) VALUES (?1, ?2)";
    let mut stmt = match prepared(conn, TABLE_NAME, INSERT)? {
        Some(stmt) => stmt,
        None => {
            conn.execute_batch(TABLE)?;
            conn.prepare_cached(INSERT)?
        }
    };
    stmt.execute((seq as i64, site))?;
    Ok(())
}

/// The peer `site` (its id) completed a set of changes, whose last merge here was `through`,
/// and its cursor was recorded (at least `cursor`): its notes up to `through` count from now
/// on.
pub(crate) fn confirm(conn: &Connection, site: &[u8], cursor: u64, through: u64) -> Result<()> {
    run(
        conn,
        "UPDATE _pluresdb_received SET confirmed = 1
         WHERE site = (SELECT idx FROM _pluresdb_sites WHERE site = ?1) AND seq <= ?3
         AND (SELECT cursor FROM _pluresdb_peers WHERE site = ?1) >= ?2",
        (site, cursor as i64, through as i64),
    )
}

/// Drops the notes of peer `site` (its id) at or below `acked`, the version of this
/// database it confirmed having.
pub(crate) fn forget_acked(conn: &Connection, site: &[u8], acked: u64) -> Result<()> {
    run(
        conn,
        "DELETE FROM _pluresdb_received
         WHERE site = (SELECT idx FROM _pluresdb_sites WHERE site = ?1) AND seq <= ?2",
        (site, acked as i64),
    )
}

/// The confirmed merge transactions after `since` that brought changes from site `site` (its
/// index); none while the table does not exist.
pub(crate) fn from_site(conn: &Connection, site: u32, since: u64) -> Result<HashSet<u64>> {
    let sql = "SELECT seq FROM _pluresdb_received WHERE site = ?1 AND seq > ?2 AND confirmed";
    let Some(mut stmt) = prepared(conn, TABLE_NAME, sql)? else {
        return Ok(HashSet::new());
    };
    let seqs = stmt.query_map((site, since as i64), |r| r.get::<_, i64>(0))?;
    Ok(seqs
        .map(|s| s.map(|s| s as u64))
        .collect::<rusqlite::Result<_>>()?)
}
