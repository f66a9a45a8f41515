//! When each column of a synced table appeared here, as a time of this replica's clock.
//!
//! A row written whole here has one version for all its fields (`RowClock::fields_base`).
//! That version covers the columns the table had when the row was written, not one added
//! later: a row written while this replica lacked column `d` wrote no `d`, so a value of `d`
//! a peer wrote, even an older one, must win over the DEFAULT that `ALTER TABLE ... ADD
//! COLUMN d` gave the row here. Knowing when `d` appeared tells the two apart (local clock
//! times only grow): a row's base version covers `d` only if it is newer.
//!
//! Kept in `_pluresdb_meta` under `columns:<collection id>` as a JSON object from column name
//! to the time it appeared (0: it was there when the table started syncing, or when this was
//! first recorded), and the columns dropped since under `dropped_columns:<collection id>`: one
//! added again has no version here, so every peer is asked for its values again (see
//! [`refetch`]).

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::{Connection, MAIN_DB};

use super::clock::RowClock;
use super::collections::{Collections, Kind};
use super::meta_json;
use super::missed::Missed;
use super::refetch;
use crate::error::Result;

/// Column name to the time it appeared here.
pub(crate) type AddedAt = BTreeMap<String, u64>;

fn key(collection: u32) -> String {
    format!("columns:{collection}")
}

/// The recorded times of collection `collection`'s columns; `None` when none are recorded
/// (a table synced by a version that did not record them).
pub(crate) fn read(conn: &Connection, collection: u32) -> Result<Option<AddedAt>> {
    meta_json::read(conn, &key(collection), "an object of column times")
}

/// Records `times` as collection `collection`'s column times.
pub(crate) fn write(conn: &Connection, collection: u32, times: &AddedAt) -> Result<()> {
    meta_json::write(conn, &key(collection), times)
}

/// Forgets collection `collection`'s column times (it stopped syncing: a table synced later
/// may be given its id).
pub(crate) fn forget(conn: &Connection, collection: u32) -> Result<()> {
    meta_json::delete(conn, &key(collection))?;
    meta_json::delete(conn, &dropped_key(collection))
}

/// The time field `field` appeared, from `recorded`: 0 when nothing is recorded for the
/// table (then every column counts as there from the start, as before this was recorded),
/// and never (`u64::MAX`) for a column not recorded yet (no base version covers it until the
/// writer records it, which it does before writing with it).
pub(crate) fn added_at(recorded: Option<&AddedAt>, field: &str) -> u64 {
    recorded.map_or(0, |r| r.get(field).copied().unwrap_or(u64::MAX))
}

/// Records, for every synced table, the columns that appeared since last recorded (at `now`,
/// this replica's clock time) and forgets dropped ones; returns whether anything changed.
/// Does nothing on a read-only connection.
///
/// Another process on the file may see the same new column at the same moment and record it
/// at a time of its own clock: the first time recorded must stay (rows written with the
/// column after it count on it). So when something is to be recorded, it is read again and
/// written under the write lock (waiting for the other process's write, as any write does).
pub(crate) fn record(
    conn: &Connection,
    collections: &Collections,
    now: impl Fn() -> u64,
) -> Result<bool> {
    if conn.is_readonly(MAIN_DB)? || to_record(conn, collections, &now)?.is_empty() {
        return Ok(false);
    }
    crate::engine::in_write_transaction(conn, || {
        let collections = Collections::load(conn)?;
        let changes = to_record(conn, &collections, &now)?;
        let mut back = Missed::new();
        for (collection, before, times) in &changes {
            if let (Some(before), Some(coll)) = (before, collections.by_id(*collection)) {
                for column in note_dropped(conn, *collection, before, times)? {
                    forget_versions(conn, *collection, &column)?;
                    back.insert((coll.name.clone(), column));
                }
            }
            write(conn, *collection, times)?;
        }
        if !back.is_empty() {
            refetch::set_cursors_back(conn, &back, false)?;
        }
        Ok(!changes.is_empty())
    })
}

/// Drops the versions of `column` that rows of collection `collection` kept from before it was
/// dropped (a merged row has one per column): added again, it holds none of those values.
fn forget_versions(conn: &Connection, collection: u32, column: &str) -> Result<()> {
    super::packs::unpack(conn, collection)?;
    let rows: Vec<(Vec<u8>, Vec<u8>)> = conn
        .prepare("SELECT key, ver FROM _pluresdb_clock WHERE tbl = ?1")?
        .query_map([collection], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut set =
        conn.prepare("UPDATE _pluresdb_clock SET ver = ?3 WHERE tbl = ?1 AND key = ?2")?;
    for (key, ver) in rows {
        let mut clock = RowClock::decode(&ver)?;
        if clock.named_fields().any(|f| f == column) {
            clock.remove_field(column);
            set.execute((collection, key, clock.encode()))?;
        }
    }
    Ok(())
}

/// The key of the columns collection `collection` dropped (a JSON list).
fn dropped_key(collection: u32) -> String {
    format!("dropped_columns:{collection}")
}

/// Notes the columns of collection `collection` that are gone from `before` to `now` as
/// dropped, and returns those in `now` that were: added again, they have no version here
/// (see the module's doc), and the values the other devices kept in them never come back
/// unless every peer is asked for the column again (they sent them before).
fn note_dropped(
    conn: &Connection,
    collection: u32,
    before: &AddedAt,
    now: &AddedAt,
) -> Result<Vec<String>> {
    let key = dropped_key(collection);
    let mut dropped: BTreeSet<String> =
        meta_json::read(conn, &key, "a list of columns")?.unwrap_or_default();
    let was = dropped.clone();
    dropped.extend(before.keys().filter(|c| !now.contains_key(*c)).cloned());
    let back: Vec<String> = (now.keys())
        .filter(|c| !before.contains_key(*c) && dropped.remove(*c))
        .cloned()
        .collect();
    if dropped != was {
        if dropped.is_empty() {
            meta_json::delete(conn, &key)?;
        } else {
            meta_json::write(conn, &key, &dropped)?;
        }
    }
    Ok(back)
}

/// A collection's id, its column times as recorded (if they are) and as they are to be.
type Recording = (u32, Option<AddedAt>, AddedAt);

/// The column times to record, by collection id, with those recorded before (if any): for
/// each synced table whose recorded columns differ from its columns now (or that has none
/// recorded yet).
fn to_record(
    conn: &Connection,
    collections: &Collections,
    now: &impl Fn() -> u64,
) -> Result<Vec<Recording>> {
    let mut changes = Vec::new();
    for coll in collections.tables() {
        let Kind::Table(info) = &coll.kind else {
            continue;
        };
        let before = read(conn, coll.id)?;
        // First recorded: every column counts as there from the start.
        let start = if before.is_some() { now() } else { 0 };
        let had = |f: &String| before.as_ref().and_then(|b| b.get(f).copied());
        let after: AddedAt = (info.fields.iter())
            .map(|f| (f.clone(), had(f).unwrap_or(start)))
            .collect();
        if before.as_ref() != Some(&after) {
            changes.push((coll.id, before, after));
        }
    }
    Ok(changes)
}
