//! Composite keys across devices: a change carries its row's key values in the order of the
//! sending device's key columns, which a table made elsewhere may list in another order
//! (`PRIMARY KEY (a, b)` here, `(b, a)` there). The sender names its key columns
//! ([`Message::KeyColumns`](crate::codec::Message::KeyColumns)); the receiver puts each
//! key's values in its own order, and refuses a table keyed by other columns.

use std::collections::HashMap;
use std::sync::Arc;

use pluresdb_core::{ChangeRecord, Database, Error, Result, Value};

/// This database's synced tables keyed by more than one column, with their key columns (what
/// a `KeyColumns` message tells a peer).
pub(crate) fn composite_keys(db: &Database) -> Result<Vec<(String, Vec<String>)>> {
    Ok(db
        .synced_table_keys()?
        .into_iter()
        .filter(|(_, key)| key.len() > 1)
        .collect())
}

/// How a peer's key values map onto this database's, for the tables whose keys differ (by
/// table name in lower case: SQLite's names are ASCII case-insensitive).
#[derive(Default)]
pub(crate) struct KeyMap(HashMap<String, Mapping>);

enum Mapping {
    /// Position here -> position in the peer's key.
    Reorder(Vec<usize>),
    /// Keyed by other columns: changes of the table are refused with this text.
    Refuse(String),
}

impl KeyMap {
    /// The map for a peer whose composite keys are `theirs`, against this database's.
    pub(crate) fn new(db: &Database, theirs: &[(String, Vec<String>)]) -> Result<KeyMap> {
        let ours: HashMap<String, Vec<String>> = db
            .synced_table_keys()?
            .into_iter()
            .map(|(table, key)| (table.to_ascii_lowercase(), key))
            .collect();
        let mut map = KeyMap::default();
        for (table, their_key) in theirs {
            let lower = table.to_ascii_lowercase();
            let Some(our_key) = ours.get(&lower) else {
                continue;
            };
            let position =
                |name: &String| their_key.iter().position(|t| t.eq_ignore_ascii_case(name));
            let order: Option<Vec<usize>> = our_key.iter().map(position).collect();
            let mapping = match order {
                Some(order) if order.len() == their_key.len() => {
                    if order.iter().enumerate().all(|(i, &p)| i == p) {
                        continue;
                    }
                    Mapping::Reorder(order)
                }
                _ => Mapping::Refuse(format!(
                    "the peer keys table {table:?} by ({}), this database by ({}): give the \
                     table the same primary key on every device",
                    their_key.join(", "),
                    our_key.join(", ")
                )),
            };
            map.0.insert(lower, mapping);
        }
        Ok(map)
    }

    /// Puts the key values of `changes` in this database's order; an error for a change of
    /// a table keyed by other columns here.
    pub(crate) fn apply(&self, changes: &mut [ChangeRecord]) -> Result<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        // Changes come grouped by table: the last lookup serves the next change.
        let mut last: Option<(Arc<str>, Option<&Mapping>)> = None;
        for change in changes {
            let mapping = match &last {
                Some((name, mapping)) if Arc::ptr_eq(name, &change.collection) => *mapping,
                _ => {
                    let mapping = self.0.get(&change.collection.to_ascii_lowercase());
                    last = Some((change.collection.clone(), mapping));
                    mapping
                }
            };
            match mapping {
                None => {}
                Some(Mapping::Refuse(why)) => return Err(Error::invalid(why.clone())),
                Some(Mapping::Reorder(order)) => {
                    if change.key.len() != order.len() {
                        // Left to the merge, which says what is wrong with such a key.
                        continue;
                    }
                    let key: Vec<Value> = order.iter().map(|&p| change.key[p].clone()).collect();
                    change.key = key.into();
                }
            }
        }
        Ok(())
    }
}
