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
//! peer's cursor recorded, with the set's last merge): the peer has then announced, durably, a version past those
//! changes, so a restored backup of the peer that lacks them is told apart as a copy (see
//! `Database::announce`) rather than left without them. Notes at or below what the peer
//! confirmed having are dropped, since changes read for it start after that.

use std::collections::HashSet;
use std::time::Duration;

use rusqlite::Connection;

use crate::error::Result;

/// The table, made on a writable open (one that finds the file locked by another writer goes
/// on without it, and the first merge it notes makes it). Without it, everything is sent, as
/// before it existed.
pub(crate) const TABLE: &str = "CREATE TABLE IF NOT EXISTS _pluresdb_received (
    seq       INTEGER PRIMARY KEY,
    site      INTEGER NOT NULL,
    confirmed INTEGER NOT NULL DEFAULT 0
)";

/// Makes the table, unless another connection holds the write lock (not waited for: an open
/// must not stall behind another process's transaction for this); `busy_timeout` is the
/// connection's, restored after.
pub(crate) fn create(conn: &Connection, busy_timeout: Duration) -> Result<()> {
    if crate::schema::table_exists(conn, "_pluresdb_received")? {
        return Ok(());
    }
    conn.busy_timeout(Duration::ZERO)?;
    let created = conn.execute_batch(TABLE);
    conn.busy_timeout(busy_timeout)?;
    match created {
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::DatabaseBusy =>
        {
            Ok(())
        }
        other => Ok(other?),
    }
}

/// Runs `sql` with `params`, doing nothing when the table is missing.
fn run(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<()> {
    if !crate::schema::table_exists(conn, "_pluresdb_received")? {
        return Ok(());
    }
    conn.prepare_cached(sql)?.execute(params)?;
    Ok(())
}

/// Notes that the merge transaction `seq` stored changes received from site `site` (its index
/// in `_pluresdb_sites`), unconfirmed.
/// Called in the merge's transaction, which holds the write lock: the table is made here if
/// the open could not make it.
pub(crate) fn record(conn: &Connection, seq: u64, site: u32) -> Result<()> {
    if !crate::schema::table_exists(conn, "_pluresdb_received")? {
        conn.execute_batch(TABLE)?;
    }
    conn.prepare_cached("INSERT OR REPLACE INTO _pluresdb_received(seq, site) VALUES (?1, ?2)")?
        .execute((seq as i64, site))?;
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
/// database it confirmed having: what is read for it starts after that.
pub(crate) fn forget_acked(conn: &Connection, site: &[u8], acked: u64) -> Result<()> {
    run(
        conn,
        "DELETE FROM _pluresdb_received
         WHERE site = (SELECT idx FROM _pluresdb_sites WHERE site = ?1) AND seq <= ?2",
        (site, acked as i64),
    )
}

/// The confirmed merge transactions after `since` that brought changes from site `site`
/// (its index). Empty for a
/// file that has no such table (opened read-only before a writable open made it).
pub(crate) fn from_site(conn: &Connection, site: u32, since: u64) -> Result<HashSet<u64>> {
    let mut stmt = match conn.prepare_cached(
        "SELECT seq FROM _pluresdb_received WHERE site = ?1 AND seq > ?2 AND confirmed",
    ) {
        Ok(stmt) => stmt,
        Err(_) if !crate::schema::table_exists(conn, "_pluresdb_received")? => {
            return Ok(HashSet::new());
        }
        Err(e) => return Err(e.into()),
    };
    let seqs = stmt.query_map((site, since as i64), |r| r.get::<_, i64>(0))?;
    Ok(seqs
        .map(|s| s.map(|s| s as u64))
        .collect::<rusqlite::Result<_>>()?)
}
