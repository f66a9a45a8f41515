//! Composite keys across devices: a change carries its row's key values in the order of the
//! sending device's key columns, which a table made elsewhere may list in another order
//! (`PRIMARY KEY (a, b)` here, `(b, a)` there). The sender names its key columns
//! ([`Message::KeyColumns`](crate::codec::Message::KeyColumns)), again whenever they change;
//! the receiver puts each key's values in its own order when both name the same columns.
//! Otherwise keys go by position, as before: a key column renamed on one device is the same
//! table, and a table keyed by other columns is refused by the merge where it can tell (a
//! change of a column that is part of the key here).

use std::collections::HashMap;
use std::sync::Mutex;

use pluresdb_core::{ChangeRecord, Database, Result, Value};

use crate::codec::Message;

/// Tables, each with its key columns in key order.
type TableKeys = Vec<(String, Vec<String>)>;

/// This database's synced tables keyed by more than one column, with their key columns (what
/// a `KeyColumns` message tells a peer).
fn composite_keys(db: &Database) -> Result<TableKeys> {
    Ok(db
        .synced_table_keys()?
        .into_iter()
        .filter(|(_, key)| key.len() > 1)
        .collect())
}

/// The composite keys a peer was last told (`None`: none yet), shared by the session's
/// producing threads (one at a time), which tell it again before changes that follow a
/// change of them. A change file's writer starts with a new one.
#[derive(Default)]
pub(crate) struct KeysTold(Mutex<Option<TableKeys>>);

impl KeysTold {
    /// The `KeyColumns` message to send before the next changes, if the keys changed since
    /// the peer was last told (a table synced, or made again).
    pub(crate) fn news(&self, db: &Database) -> Result<Option<Message>> {
        let tables = composite_keys(db)?;
        let mut told = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if told.as_ref() == Some(&tables) {
            return Ok(None);
        }
        let news =
            (!tables.is_empty() || told.is_some()).then(|| Message::KeyColumns(tables.clone()));
        *told = Some(tables);
        Ok(news)
    }
}

/// A peer's composite keys (by table name in lower case: SQLite's names are ASCII
/// case-insensitive), matched against this database's tables as each batch arrives (a table
/// may start syncing here, or be made again, while a session runs).
#[derive(Default)]
pub(crate) struct KeyMap {
    theirs: HashMap<String, Vec<String>>,
}

impl KeyMap {
    /// The map for a peer whose composite keys are `theirs` (all of them: it replaces what the
    /// peer said before).
    pub(crate) fn new(theirs: TableKeys) -> KeyMap {
        KeyMap {
            theirs: theirs
                .into_iter()
                .map(|(table, key)| (table.to_ascii_lowercase(), key))
                .collect(),
        }
    }

    /// Puts the key values of `changes` in this database's order.
    pub(crate) fn apply(&self, db: &Database, changes: &mut [ChangeRecord]) -> Result<()> {
        if self.theirs.is_empty() {
            return Ok(());
        }
        let mut ours: Option<HashMap<String, Vec<String>>> = None;
        // Changes come grouped by table: the last table's mapping serves the next change.
        let mut last: Option<(String, Option<Vec<usize>>)> = None;
        for change in changes {
            let table = change.collection.to_ascii_lowercase();
            if last.as_ref().is_none_or(|(t, _)| *t != table) {
                let Some(their_key) = self.theirs.get(&table) else {
                    last = Some((table, None));
                    continue;
                };
                let ours = match &mut ours {
                    Some(ours) => ours,
                    None => ours.insert(
                        db.synced_table_keys()?
                            .into_iter()
                            .map(|(table, key)| (table.to_ascii_lowercase(), key))
                            .collect(),
                    ),
                };
                let order = match ours.get(&table) {
                    // Not synced here (or dropped): the merge leaves its changes out.
                    None => None,
                    Some(our_key) if our_key.is_empty() => None,
                    Some(our_key) => reorder(their_key, our_key),
                };
                last = Some((table, order));
            }
            let Some((_, Some(order))) = &last else {
                continue;
            };
            if change.key.len() != order.len() {
                // Left to the merge, which says what is wrong with such a key.
                continue;
            }
            let key: Vec<Value> = order.iter().map(|&p| change.key[p].clone()).collect();
            change.key = key.into();
        }
        Ok(())
    }
}

/// Where each of our key columns is in the peer's key, when both name the same columns in
/// another order (`None`: the same order, or other names, which go by position).
fn reorder(theirs: &[String], ours: &[String]) -> Option<Vec<usize>> {
    let position = |name: &String| theirs.iter().position(|t| t.eq_ignore_ascii_case(name));
    let order = ours.iter().map(position).collect::<Option<Vec<usize>>>()?;
    let moved = order.len() == theirs.len() && !order.iter().enumerate().all(|(i, &p)| i == p);
    moved.then_some(order)
}
