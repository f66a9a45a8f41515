//! Which merge transactions brought a peer's changes (`_pluresdb_received`): the peer has
//! everything such a transaction stored, so the changes read for that peer leave it out.
//!
//! Without it, a device syncing with a hub sends the hub back every change of the other
//! devices that it just got from the hub: the hub skips them as known, but they cross the
//! network again and count as pending until sent.
//!
//! A merge stamps everything it stores with its transaction's `db_version` (versions that
//! stay local keep theirs), so one row per merge transaction says it all. Only a merge that
//! is a transaction of its own is recorded: in a caller's transaction, local writes share its
//! `db_version`. Rows at or below what the peer confirmed having are dropped, since changes
//! read for it start after that.

use std::collections::HashSet;

use rusqlite::Connection;

use crate::error::Result;

/// The table, created on open (files made before it get it on their first writable open).
pub(crate) const TABLE: &str = "CREATE TABLE IF NOT EXISTS _pluresdb_received (
    seq  INTEGER PRIMARY KEY,
    site INTEGER NOT NULL
)";

/// Records that the merge transaction `seq` stored changes received from site `site` (its
/// index in `_pluresdb_sites`).
pub(crate) fn record(conn: &Connection, seq: u64, site: u32) -> Result<()> {
    conn.prepare_cached("INSERT OR REPLACE INTO _pluresdb_received(seq, site) VALUES (?1, ?2)")?
        .execute((seq as i64, site))?;
    Ok(())
}

/// The merge transactions after `since` that brought changes from site `site`. Empty for a
/// file that has no such table (opened read-only before a writable open made it).
pub(crate) fn from_site(conn: &Connection, site: u32, since: u64) -> Result<HashSet<u64>> {
    let mut stmt = match conn
        .prepare_cached("SELECT seq FROM _pluresdb_received WHERE site = ?1 AND seq > ?2")
    {
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
