//! Changes a merge left out because this database lacks their table or column (a peer on a
//! newer schema, or a table dropped or not synced here), remembered so that once the table or
//! column is here, this database asks every peer for all its changes again: the per-peer
//! cursors go back to 0, and the next sync with each peer sends everything, which merges as
//! a no-op except for what was left out. (A sync session asks for less: see
//! [`refetch`](super::refetch).)
//!
//! A merge never records the version of a change it left out, so a replica on an older schema
//! neither claims a value it dropped nor relays one it does not have.

use std::collections::BTreeSet;

use rusqlite::{Connection, MAIN_DB};

use super::collections::{Collections, Kind};
use super::meta_json;
use super::refetch::{Refetch, from_missed};
use crate::error::Result;

/// `(table, column)` pairs; an empty column stands for the whole table.
pub(crate) type Missed = BTreeSet<(String, String)>;

/// The `_pluresdb_meta` key that holds them (a JSON array of pairs).
const KEY: &str = "missed";

/// At most this many are remembered: past it, a peer sending changes for ever more unknown
/// tables or columns cannot grow the list. What does not fit is stood for by one entry,
/// [`OVERFLOW`] with the shape of the synced tables then: any change to that shape counts as
/// its arrival (a resync too many, rather than a left-out change never asked for again).
const MAX_MISSED: usize = 256;

/// The table name of the entry standing for misses that did not fit (no table is named so).
const OVERFLOW: &str = "";

/// Remembers `new` with those remembered before (in the open transaction); `collections` are
/// the synced tables as they are now.
pub(crate) fn remember(conn: &Connection, new: &Missed, collections: &Collections) -> Result<()> {
    if new.is_empty() {
        return Ok(());
    }
    let mut all = read(conn)?;
    let before = all.clone();
    for entry in new {
        if all.len() < MAX_MISSED {
            all.insert(entry.clone());
        } else if !all.contains(entry) && !all.iter().any(|(t, _)| t == OVERFLOW) {
            all.insert((OVERFLOW.to_owned(), shape(collections)));
        }
    }
    if all != before {
        write(conn, &all)?;
    }
    Ok(())
}

/// The synced tables and their columns, as one text (what an overflow entry compares).
fn shape(collections: &Collections) -> String {
    let mut out = String::new();
    for coll in collections.iter() {
        if let Kind::Table(info) = &coll.kind {
            let columns = info.exists.then(|| info.fields.join(","));
            out += &format!("{}:{columns:?};", coll.name);
        }
    }
    out
}

/// When a table or column that a merge left changes out for is here now (synced, and the
/// column among its columns), sets every peer's cursor back to 0 so that the next sync with
/// each sends all its changes (recording what arrived, for syncs that ask for less), and
/// forgets that miss. Does nothing on a read-only connection.
pub(crate) fn resync_if_arrived(conn: &Connection, collections: &Collections) -> Result<()> {
    if conn.is_readonly(MAIN_DB)? {
        return Ok(());
    }
    let all = read(conn)?;
    if all.is_empty() {
        return Ok(());
    }
    let here = |(table, column): &(String, String)| {
        if table == OVERFLOW {
            return *column != shape(collections);
        }
        collections
            .by_name(table)
            .is_some_and(|coll| match &coll.kind {
                Kind::Table(info) => {
                    info.exists
                        && (column.is_empty()
                            || info.fields.iter().any(|f| f.eq_ignore_ascii_case(column)))
                }
                _ => true,
            })
    };
    let (arrived, waiting): (Missed, Missed) = all.into_iter().partition(here);
    if arrived.is_empty() {
        return Ok(());
    }
    let unnamed = arrived.iter().any(|(table, _)| table == OVERFLOW);
    super::refetch::set_cursors_back(conn, &arrived, unnamed)?;
    write(conn, &waiting)
}

/// The remembered misses by name (the entry standing for those that did not fit left out).
pub(crate) fn named(conn: &Connection) -> Result<Vec<Refetch>> {
    let all = read(conn)?;
    Ok(from_missed(&all).filter(|r| r.table != OVERFLOW).collect())
}

fn read(conn: &Connection) -> Result<Missed> {
    let what = "a list of (table, column) pairs";
    Ok(meta_json::read(conn, KEY, what)?.unwrap_or_default())
}

fn write(conn: &Connection, all: &Missed) -> Result<()> {
    if all.is_empty() {
        meta_json::delete(conn, KEY)
    } else {
        meta_json::write(conn, KEY, all)
    }
}
