//! Tables whose changes from a peer a merge refused (see [`Refused`]), remembered per peer in
//! `_pluresdb_meta` until a set of that peer's changes merges whole (its cursor recorded, see
//! [`Database::record_sync`](crate::Database::record_sync)): what
//! [`PeerStatus::refused`](super::PeerStatus::refused) and `sync --status` show. And the other
//! way round, what a peer said it did not take of this database's changes
//! ([`PeerRefusals`]), as of its last acknowledgement.

use std::collections::BTreeMap;

use pluresdb_crdt::SiteId;
use rusqlite::Connection;

use super::apply::{Refused, join_refused};
use super::meta_json;
use super::refetch::Refetch;
use crate::error::Result;

/// The `_pluresdb_meta` key that holds them (a JSON object: site id to refused tables).
const KEY: &str = "refused";

/// The `_pluresdb_meta` key that holds what peers did not take of this database's changes (a
/// JSON object: site id to [`PeerRefusals`]).
const THEIRS: &str = "refused_by_peers";

/// What a peer said, in a sync session, it did not take of this database's changes (sync
/// protocol version 5; a peer of an older build says nothing).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PeerRefusals {
    /// Tables whose changes it refused, and why (see
    /// [`ApplyReport::refused`](crate::ApplyReport::refused)): every new session sends them
    /// again until they merge there.
    pub refused: Vec<Refused>,
    /// Tables and columns it does not sync (yet), so it left their changes out (see
    /// [`ApplyReport::left_out`](crate::ApplyReport::left_out)): it asks for them once it
    /// does. Until then they do not pass through it to other devices.
    pub left_out: Vec<Refetch>,
}

impl PeerRefusals {
    /// Neither refused nor left out anything.
    pub fn is_empty(&self) -> bool {
        self.refused.is_empty() && self.left_out.is_empty()
    }

    /// Adds what is in `more` and not here yet (a table once, a column once); true when
    /// something was added.
    pub fn join(&mut self, more: &PeerRefusals) -> bool {
        let before = (self.refused.len(), self.left_out.len());
        for r in &more.refused {
            if !self.refused.iter().any(|have| have.table == r.table) {
                self.refused.push(r.clone());
            }
        }
        for l in &more.left_out {
            if !self.left_out.contains(l) {
                self.left_out.push(l.clone());
            }
        }
        before != (self.refused.len(), self.left_out.len())
    }

    /// What is here and not in `told`.
    pub fn since(&self, told: &PeerRefusals) -> PeerRefusals {
        let mut news = PeerRefusals::default();
        news.join(self);
        news.refused
            .retain(|r| !told.refused.iter().any(|t| t.table == r.table));
        news.left_out.retain(|l| !told.left_out.contains(l));
        news
    }
}

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

/// What each peer last said it did not take of this database's changes, by site id (as text).
pub(crate) fn read_theirs(conn: &Connection) -> Result<BTreeMap<String, PeerRefusals>> {
    Ok(meta_json::read(conn, THEIRS, "refusals by peer")?.unwrap_or_default())
}

/// Records what `peer` said in its last session that it did not take (replacing what it said
/// before; nothing: forgotten).
pub(crate) fn record_theirs(conn: &Connection, peer: SiteId, said: &PeerRefusals) -> Result<()> {
    let mut all = read_theirs(conn)?;
    let key = peer.to_string();
    let changed = match said.is_empty() {
        true => all.remove(&key).is_some(),
        false => all.insert(key, said.clone()).as_ref() != Some(said),
    };
    match (changed, all.is_empty()) {
        (false, _) => Ok(()),
        (true, true) => meta_json::delete(conn, THEIRS),
        (true, false) => meta_json::write(conn, THEIRS, &all),
    }
}
