//! Tables whose changes from a peer a merge refused (see [`Refused`]), remembered per peer in
//! `_pluresdb_meta` until a set of that peer's changes merges whole (its cursor recorded, see
//! [`Database::record_sync`](crate::Database::record_sync)): what
//! [`PeerStatus::refused`](super::PeerStatus::refused) and `sync --status` show.

use std::collections::BTreeMap;

use pluresdb_crdt::SiteId;
use rusqlite::Connection;

use super::apply::{Refused, join_refused};
use super::meta_json;
use crate::error::Result;

/// The `_pluresdb_meta` key that holds them (a JSON object: site id to refused tables).
const KEY: &str = "refused";

/// Refused tables by peer (its site id as text).
pub(crate) type ByPeer = BTreeMap<String, Vec<Refused>>;

/// All of them.
pub(crate) fn read(conn: &Connection) -> Result<ByPeer> {
    Ok(meta_json::read(conn, KEY, "refused tables by peer")?.unwrap_or_default())
}

/// Remembers that `peer`'s changes of the tables `refused` were refused (with those before).
pub(crate) fn remember(conn: &Connection, peer: SiteId, refused: &[Refused]) -> Result<()> {
    if refused.is_empty() {
        return Ok(());
    }
    let mut all = read(conn)?;
    let entry = all.entry(peer.to_string()).or_default();
    *entry = join_refused(std::mem::take(entry), refused.to_vec());
    meta_json::write(conn, KEY, &all)
}

/// Forgets `peer`'s refused tables: a set of its changes merged whole.
pub(crate) fn forget(conn: &Connection, peer: SiteId) -> Result<()> {
    let mut all = read(conn)?;
    if all.remove(&peer.to_string()).is_none() {
        return Ok(());
    }
    if all.is_empty() {
        meta_json::delete(conn, KEY)
    } else {
        meta_json::write(conn, KEY, &all)
    }
}
