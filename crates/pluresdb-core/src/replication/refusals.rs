//! Tables whose changes from a peer a merge refused (see [`Refused`]), remembered per peer in
//! `_pluresdb_meta` until a set of that peer's changes merges whole (its cursor recorded, see
//! [`Database::record_sync`](crate::Database::record_sync)): what
//! [`PeerStatus::refused`](super::PeerStatus::refused) and `sync --status` show. And the other
//! way round, what a peer said it did not take of this database's changes
//! ([`PeerRefusals`]), as of its last acknowledgement.

use std::collections::{BTreeMap, HashSet};

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
    /// Most tables, and most tables and columns, one holds: what one peer says beyond is
    /// dropped (a faulty peer cannot grow it without bound).
    pub const MAX_NAMED: usize = 4096;

    /// Neither refused nor left out anything.
    pub fn is_empty(&self) -> bool {
        self.refused.is_empty() && self.left_out.is_empty()
    }

    /// Adds what is in `more` and not here yet (a table once, a column once), up to
    /// [`MAX_NAMED`](Self::MAX_NAMED) of each.
    pub fn join(&mut self, more: &PeerRefusals) {
        let mut tables: HashSet<String> = self.refused.iter().map(|r| r.table.clone()).collect();
        for r in &more.refused {
            if self.refused.len() < Self::MAX_NAMED && tables.insert(r.table.clone()) {
                self.refused.push(r.clone());
            }
        }
        let mut named: HashSet<Refetch> = self.left_out.iter().cloned().collect();
        for l in &more.left_out {
            if self.left_out.len() < Self::MAX_NAMED && named.insert(l.clone()) {
                self.left_out.push(l.clone());
            }
        }
    }

    /// What is here and not in `told`.
    pub fn since(&self, told: &PeerRefusals) -> PeerRefusals {
        let tables: HashSet<&str> = told.refused.iter().map(|r| r.table.as_str()).collect();
        let named: HashSet<&Refetch> = told.left_out.iter().collect();
        PeerRefusals {
            refused: (self.refused.iter())
                .filter(|r| !tables.contains(r.table.as_str()))
                .cloned()
                .collect(),
            left_out: (self.left_out.iter())
                .filter(|l| !named.contains(l))
                .cloned()
                .collect(),
        }
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

/// Records what `peer` said in a session as it acknowledged its changes: the tables it
/// refused replace those it refused before (every session sends them again, so a session
/// without them means they merged); the tables and columns it left out join those before
/// (their changes are not sent again: it asks for them once it takes them, see
/// [`forget_left_out`]).
pub(crate) fn record_theirs(conn: &Connection, peer: SiteId, said: &PeerRefusals) -> Result<()> {
    update_theirs(conn, peer, |theirs| {
        theirs.refused.clone_from(&said.refused);
        theirs.join(&PeerRefusals {
            refused: Vec::new(),
            left_out: said.left_out.clone(),
        });
    })
}

/// Forgets that `peer` left out this database's changes of `asked` (a table asked for whole
/// covers its columns), or of everything (`None`): it asked for them again.
pub(crate) fn forget_left_out(
    conn: &Connection,
    peer: SiteId,
    asked: Option<&[Refetch]>,
) -> Result<()> {
    update_theirs(conn, peer, |theirs| {
        theirs.left_out.retain(|l| {
            asked.is_some_and(|asked| {
                !asked.iter().any(|a| {
                    let column = match (&a.column, &l.column) {
                        (None, _) => true,
                        (Some(a), Some(l)) => a.eq_ignore_ascii_case(l),
                        (Some(_), None) => false,
                    };
                    column && a.table.eq_ignore_ascii_case(&l.table)
                })
            })
        });
    })
}

/// Changes what `peer` said by `change`, and stores it (nothing left: forgotten).
fn update_theirs(
    conn: &Connection,
    peer: SiteId,
    change: impl FnOnce(&mut PeerRefusals),
) -> Result<()> {
    let mut all = read_theirs(conn)?;
    let key = peer.to_string();
    let before = all.get(&key).cloned().unwrap_or_default();
    let mut theirs = before.clone();
    change(&mut theirs);
    if theirs == before {
        return Ok(());
    }
    if theirs.is_empty() {
        all.remove(&key);
    } else {
        all.insert(key, theirs);
    }
    if all.is_empty() {
        meta_json::delete(conn, THEIRS)
    } else {
        meta_json::write(conn, THEIRS, &all)
    }
}
