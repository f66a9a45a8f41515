//! Asking a peer again for only what a merge left out (`_pluresdb_refetch`).
//!
//! When a table or column whose changes a merge left out arrives here (see
//! [`missed`](super::missed)), every peer's cursor goes back to 0, so the next sync with each
//! sends everything. For a new table on a large database (an app upgrade that adds one,
//! rolled out device by device) that is the whole database again from every peer. So the
//! arrival also records, per peer, its cursor as it was and what arrived; a sync session that
//! can ask for it (protocol version 3, see `pluresdb-sync`) asks the peer for its changes
//! after that cursor plus every change of the arrived tables or columns, and change files,
//! older peers and callers of the core API, which see the cursor at 0, get everything as
//! before. The record goes once the peer's cursor is recorded again: the set that completes
//! it asked for what arrived, one way or the other. A record is good only while the cursors
//! have been set back as many times as when it was made (a build that keeps no records may
//! have set them back since, for more than it names).

use std::collections::{BTreeMap, BTreeSet};

use pluresdb_crdt::SiteId;
use rusqlite::Connection;

use super::missed::Missed;
use super::peers::RESETS_NOW;
use super::received::prepared;
use crate::error::{Error, Result};

const TABLE_NAME: &str = "_pluresdb_refetch";

const TABLE: &str = "CREATE TABLE IF NOT EXISTS _pluresdb_refetch (
    site   BLOB PRIMARY KEY NOT NULL,
    resets INTEGER NOT NULL,
    cursor INTEGER NOT NULL,
    wanted TEXT NOT NULL
) WITHOUT ROWID";

/// Most tables and columns one peer is asked for again; past it, the peer is asked for
/// everything (as many as [`missed`](super::missed) remembers).
const MAX_WANTED: usize = 256;

/// A table, or one column of it, whose changes a merge here left out before it was here (a
/// peer on a newer schema sent them): a peer is asked for all its changes of it again.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Refetch {
    /// The table's name.
    pub table: String,
    /// One column of it, or `None` for the whole table.
    pub column: Option<String>,
}

impl std::fmt::Display for Refetch {
    /// `table`, or `table.column`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.column {
            Some(column) => write!(f, "{}.{column}", self.table),
            None => f.write_str(&self.table),
        }
    }
}

/// What a sync asks one peer for: its changes after `cursor`, and all of those of `wanted`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Refetching {
    /// The peer's cursor before it was set back.
    pub cursor: u64,
    /// The tables and columns that arrived since.
    pub wanted: Vec<Refetch>,
}

/// Entries of [`Missed`] as [`Refetch`]es (an empty column stands for the whole table).
pub(crate) fn from_missed(missed: &Missed) -> impl Iterator<Item = Refetch> + '_ {
    missed.iter().map(|(table, column)| Refetch {
        table: table.clone(),
        column: (!column.is_empty()).then(|| column.clone()),
    })
}

/// Sets every peer's cursor back to 0 because `arrived` arrived, recording that each peer
/// can instead be asked for its changes after its cursor and all those of `arrived` (a peer
/// still waiting for an earlier arrival keeps its cursor from before and waits for both).
/// `unnamed`: what arrived cannot be named (more was left out than is remembered), and every
/// peer is asked for everything.
pub(crate) fn set_cursors_back(conn: &Connection, arrived: &Missed, unnamed: bool) -> Result<()> {
    // Before they go back: what peers wait for already (records still good), and the cursors.
    let mut waiting = all(conn)?;
    let cursors: Vec<(Vec<u8>, i64)> = conn
        .prepare_cached("SELECT site, cursor FROM _pluresdb_peers")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    conn.execute_batch(super::peers::SET_CURSORS_BACK)?;
    forget_all(conn)?;
    if unnamed {
        return Ok(());
    }
    let mut made = false;
    for (site, cursor) in cursors {
        let Some(site) = SiteId::from_slice(&site) else {
            continue;
        };
        let kept = waiting.remove(&site).unwrap_or_default();
        let cursor = (cursor as u64).max(kept.cursor);
        let mut wanted: BTreeSet<Refetch> = kept.wanted.into_iter().collect();
        wanted.extend(from_missed(arrived));
        // (A peer at cursor 0 is sent everything anyway, but not this database's own changes
        // of what arrived: a table made again here gets its rows back only by asking.)
        if wanted.len() > MAX_WANTED {
            continue;
        }
        let text = serde_json::to_string(&wanted.iter().map(pair).collect::<Vec<_>>())
            .expect("strings serialize");
        if !made {
            conn.execute_batch(TABLE)?;
            made = true;
        }
        // (At the count the cursors were just set back to.)
        conn.prepare_cached(&format!(
            "INSERT INTO _pluresdb_refetch(site, resets, cursor, wanted)
             VALUES (?1, {RESETS_NOW}, ?2, ?3)"
        ))?
        .execute((site.as_bytes(), cursor as i64, text))?;
    }
    Ok(())
}

fn pair(r: &Refetch) -> (&str, &str) {
    (&r.table, r.column.as_deref().unwrap_or(""))
}

fn decode(text: &str) -> Result<Vec<Refetch>> {
    let pairs: Vec<(String, String)> = serde_json::from_str(text).map_err(|e| {
        Error::internal(format!(
            "{TABLE_NAME} holds a list that is not (table, column) pairs: {e}"
        ))
    })?;
    Ok(pairs
        .into_iter()
        .map(|(table, column)| Refetch {
            table,
            column: (!column.is_empty()).then_some(column),
        })
        .collect())
}

/// What each peer waiting for an arrival is to be asked for.
pub(crate) fn all(conn: &Connection) -> Result<BTreeMap<SiteId, Refetching>> {
    // (A record of before the cursors were last set back without one is no longer good.)
    let sql =
        format!("SELECT site, cursor, wanted FROM _pluresdb_refetch WHERE resets = {RESETS_NOW}");
    let Some(mut stmt) = prepared(conn, TABLE_NAME, &sql)? else {
        return Ok(BTreeMap::new());
    };
    let rows: Vec<(Vec<u8>, i64, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    rows.into_iter()
        .filter_map(|(site, cursor, text)| {
            let site = SiteId::from_slice(&site)?;
            let cursor = cursor as u64;
            Some(decode(&text).map(|wanted| (site, Refetching { cursor, wanted })))
        })
        .collect()
}

/// Drops what `peer` was to be asked for: its cursor was just recorded, by a set that began
/// after the cursors were last set back (`resets_seen` is still their count; `None`: not
/// known, taken as so), which asked for it.
pub(crate) fn forget(conn: &Connection, peer: SiteId, resets_seen: Option<u64>) -> Result<()> {
    let sql = format!(
        "DELETE FROM _pluresdb_refetch WHERE site = ?1 AND (?2 IS NULL OR ?2 = {RESETS_NOW})"
    );
    if let Some(mut stmt) = prepared(conn, TABLE_NAME, &sql)? {
        stmt.execute((peer.as_bytes(), resets_seen.map(|r| r as i64)))?;
    }
    Ok(())
}

/// Drops every record. (Emptied, not dropped: other connections keep statements on it.)
fn forget_all(conn: &Connection) -> Result<()> {
    if let Some(mut stmt) = prepared(conn, TABLE_NAME, "DELETE FROM _pluresdb_refetch")? {
        stmt.execute([])?;
    }
    Ok(())
}
