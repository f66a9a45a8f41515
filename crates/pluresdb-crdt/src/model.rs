//! [`Model`]: an in-memory replica that applies changes by the merge rules. It is the
//! reference the storage engine is tested against, and it documents the rules as code.

use std::collections::BTreeMap;

use crate::Version;
use crate::causal::{
    FieldDecision, RowDecision, SENTINEL, decide_field, decide_sentinel, is_alive,
};

/// One replicated write: a field of a row in a collection, with its value and stamps.
#[derive(Clone, Debug, PartialEq)]
pub struct Change<V> {
    /// The table (or node/edge store) the row belongs to.
    pub collection: String,
    /// The row's packed primary key.
    pub key: Vec<u8>,
    /// The field (column) name; [`SENTINEL`] for creation/deletion.
    pub field: String,
    /// The new value (meaningless for the sentinel).
    pub value: V,
    /// The write's version (clock time and site).
    pub version: Version,
    /// The row's causal length when the write was made.
    pub cl: u64,
    /// The writing site's transaction counter when the write was made.
    pub origin_version: u64,
}

/// One row of the model: its causal length and the winning version and value of each field.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ModelRow<V> {
    /// Causal length (odd = exists).
    pub cl: u64,
    /// Version of the creation or deletion that started this life (`None` while only
    /// fields of it were seen).
    pub sentinel: Option<Version>,
    /// Field name to winning version and value.
    pub fields: BTreeMap<String, (Version, V)>,
}

/// A replica's state under the merge rules.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Model<V> {
    rows: BTreeMap<(String, Vec<u8>), ModelRow<V>>,
}

impl<V: Clone> Model<V> {
    /// An empty replica.
    pub fn new() -> Model<V> {
        Model {
            rows: BTreeMap::new(),
        }
    }

    /// Applies one change; returns whether the state changed.
    pub fn apply(&mut self, change: &Change<V>) -> bool {
        let row = self
            .rows
            .entry((change.collection.clone(), change.key.clone()))
            .or_insert_with(|| ModelRow {
                cl: 0,
                sentinel: None,
                fields: BTreeMap::new(),
            });
        if change.field == SENTINEL {
            return match decide_sentinel(row.cl, row.sentinel, change.cl, change.version) {
                RowDecision::Ignore => false,
                RowDecision::Reset { cl } => {
                    row.cl = cl;
                    row.sentinel = Some(change.version);
                    row.fields.clear();
                    true
                }
                RowDecision::Touch => {
                    row.sentinel = Some(change.version);
                    true
                }
            };
        }
        let local = row.fields.get(&change.field).map(|(v, _)| *v);
        match decide_field(row.cl, local, change.cl, change.version) {
            FieldDecision::Ignore => false,
            FieldDecision::Apply => {
                row.fields
                    .insert(change.field.clone(), (change.version, change.value.clone()));
                true
            }
            FieldDecision::ResetAndApply { cl } => {
                row.cl = cl;
                row.sentinel = None;
                row.fields.clear();
                row.fields
                    .insert(change.field.clone(), (change.version, change.value.clone()));
                true
            }
        }
    }

    /// The row of `collection` with `key`, if the model knows it (alive or deleted).
    pub fn row(&self, collection: &str, key: &[u8]) -> Option<&ModelRow<V>> {
        self.rows.get(&(collection.to_owned(), key.to_vec()))
    }

    /// Live rows with their field values, ordered by collection and key.
    pub fn live(&self) -> impl Iterator<Item = (&str, &[u8], BTreeMap<&str, &V>)> {
        self.rows
            .iter()
            .filter(|(_, row)| is_alive(row.cl))
            .map(|((c, k), row)| {
                let fields = row
                    .fields
                    .iter()
                    .map(|(f, (_, v))| (f.as_str(), v))
                    .collect();
                (c.as_str(), k.as_slice(), fields)
            })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::{Hlc, SiteId};

    fn change(key: u8, field: &str, value: i32, t: u64, site: u8, cl: u64) -> Change<i32> {
        Change {
            collection: "t".into(),
            key: vec![key],
            field: field.into(),
            value,
            version: Version::new(Hlc::new(t, 0), SiteId([site; 16])),
            cl,
            origin_version: t,
        }
    }

    #[test]
    fn reinsert_drops_fields_of_the_earlier_life() {
        let mut m = Model::new();
        m.apply(&change(1, SENTINEL, 0, 1, 1, 1));
        m.apply(&change(1, "a", 10, 2, 1, 1));
        m.apply(&change(1, "b", 20, 3, 1, 1));
        m.apply(&change(1, SENTINEL, 0, 4, 1, 2));
        m.apply(&change(1, "a", 11, 5, 1, 3));
        let live: Vec<_> = m.live().collect();
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].2.len(), 1, "b belonged to the deleted life");
        assert_eq!(*live[0].2["a"], 11);
    }

    fn arb_change() -> impl Strategy<Value = Change<i32>> {
        (
            0u8..3,
            prop_oneof![Just(""), Just("a"), Just("b")],
            0u64..20,
            0u8..3,
            1u64..5,
        )
            .prop_map(|(key, field, t, site, cl)| {
                // Fields are only written while a row exists (odd lengths); sentinels carry any.
                let cl = if field.is_empty() { cl } else { cl | 1 };
                // A site never writes two values with one version: derive the value from it.
                let value = (t as i32) * 7 + i32::from(site) * 1000 + i32::from(key);
                change(key, field, value, t, site, cl)
            })
    }

    proptest! {
        /// Any order, any number of repeats: the same state.
        #[test]
        fn order_and_duplicates_do_not_matter(
            changes in proptest::collection::vec(arb_change(), 0..40),
            seed in any::<u64>(),
        ) {
            let mut forward = Model::new();
            for c in &changes {
                forward.apply(c);
            }
            let mut shuffled = changes.clone();
            // Deterministic shuffle from the seed, then duplicate a prefix.
            let mut s = seed | 1;
            for i in (1..shuffled.len()).rev() {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                shuffled.swap(i, (s % (i as u64 + 1)) as usize);
            }
            let extra: Vec<_> = shuffled.iter().take(shuffled.len() / 2).cloned().collect();
            shuffled.extend(extra);
            let mut other = Model::new();
            for c in &shuffled {
                other.apply(c);
            }
            prop_assert_eq!(forward, other);
        }
    }
}
