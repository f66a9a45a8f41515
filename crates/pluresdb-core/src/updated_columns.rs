//! Which columns an UPDATE on the writer can change: every column that SQLite's authorizer
//! reports as updated while a statement is prepared there (its SET list, and those of the
//! triggers, upserts and foreign-key actions it runs), for any statement ever prepared on the
//! writer. Change capture compares only these between a row's old and new values instead of
//! every column of every updated row: reading a value from the pre-update hook copies it, and
//! for `UPDATE todos SET done = 1 - done` over a 4-column table this was half the cost of
//! capturing the update.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

/// Columns named by an UPDATE in statements prepared on the writer, per table (a union that
/// only grows, so it covers every statement that can run there).
#[derive(Default)]
pub(crate) struct UpdatedColumns {
    /// Moves whenever a column is added, so cached masks know to be computed again.
    version: AtomicU64,
    /// Lowercased table name to lowercased column names.
    names: Mutex<HashMap<String, HashSet<String>>>,
}

impl UpdatedColumns {
    /// Called by the authorizer for each column an UPDATE being prepared may change.
    pub(crate) fn note(&self, table: &str, column: &str) {
        let mut names = self.names.lock();
        let table = table.to_ascii_lowercase();
        let column = column.to_ascii_lowercase();
        let known = names.get(&table).is_some_and(|c| c.contains(&column));
        if !known {
            names.entry(table).or_default().insert(column);
            self.version.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Which of a table's key columns and fields an UPDATE of it may change (see
    /// [`UpdateMask`]), by their names.
    fn mask(&self, table: &str, pk: &[String], fields: &[String]) -> UpdateMask {
        let names = self.names.lock();
        let Some(updated) = names.get(&table.to_ascii_lowercase()) else {
            // Nothing prepared here names this table: a row of it changing anyway is a case
            // this does not know of, so every column is compared.
            return UpdateMask::ALL;
        };
        let named = |name: &String| updated.contains(&name.to_ascii_lowercase());
        let is_column = |name: &String| {
            pk.iter()
                .chain(fields)
                .any(|c| c.eq_ignore_ascii_case(name))
        };
        // A name that is no column here may stand for any of them: the row id (which SQLite's
        // authorizer calls `ROWID` however it was named), or a column since renamed.
        if updated.iter().any(|name| !is_column(name)) {
            return UpdateMask::ALL;
        }
        let mut bits = u64::from(pk.iter().any(named)) << PK_BIT;
        for (i, field) in fields.iter().enumerate().take(PK_BIT as usize) {
            bits |= u64::from(named(field)) << i;
        }
        UpdateMask(bits)
    }
}

/// Bits of the fields an UPDATE may change (bit `i` for field `i`; fields from the 63rd on are
/// always compared) and, in the top bit, whether it may change the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct UpdateMask(u64);

const PK_BIT: u32 = 63;

impl UpdateMask {
    /// Every column may change.
    pub(crate) const ALL: UpdateMask = UpdateMask(u64::MAX);

    /// Whether an UPDATE may change the key.
    pub(crate) fn key(self) -> bool {
        self.0 >> PK_BIT != 0
    }

    /// Whether an UPDATE may change field `i`.
    pub(crate) fn field(self, i: usize) -> bool {
        i >= PK_BIT as usize || self.0 >> i & 1 != 0
    }
}

/// A table shape's [`UpdateMask`], computed when first needed and again whenever
/// [`UpdatedColumns`] has grown. Part of the shape (`TableInfo`), which is made anew when the
/// table changes; a copy starts empty.
#[derive(Debug, Default)]
pub(crate) struct MaskCache {
    /// The [`UpdatedColumns`] version it was computed at, plus one (0: never).
    version: AtomicU64,
    mask: AtomicU64,
}

impl MaskCache {
    /// The mask of the table `table` with key columns `pk` and fields `fields`.
    pub(crate) fn get(
        &self,
        updated: &UpdatedColumns,
        table: &str,
        pk: &[String],
        fields: &[String],
    ) -> UpdateMask {
        let now = updated.version.load(Ordering::Acquire) + 1;
        if self.version.load(Ordering::Acquire) == now {
            return UpdateMask(self.mask.load(Ordering::Relaxed));
        }
        // Computed from the names as they are now, at least those of version `now`.
        let mask = updated.mask(table, pk, fields);
        self.mask.store(mask.0, Ordering::Relaxed);
        self.version.store(now, Ordering::Release);
        mask
    }
}

impl Clone for MaskCache {
    fn clone(&self) -> Self {
        MaskCache::default()
    }
}

impl PartialEq for MaskCache {
    /// A cache says nothing about the shape it belongs to.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn masks_follow_the_columns_named() {
        let updated = UpdatedColumns::default();
        let (pk, fields) = (names(&["id"]), names(&["title", "done", "notes"]));
        let cache = MaskCache::default();
        // Nothing known of the table: everything is compared.
        assert_eq!(cache.get(&updated, "todos", &pk, &fields), UpdateMask::ALL);
        updated.note("Todos", "DONE");
        let mask = cache.get(&updated, "todos", &pk, &fields);
        assert_eq!(
            (0..3).map(|i| mask.field(i)).collect::<Vec<_>>(),
            [false, true, false]
        );
        assert!(!mask.key());
        // A later statement's columns are seen by the cached mask.
        updated.note("todos", "id");
        let mask = cache.get(&updated, "todos", &pk, &fields);
        assert!(mask.key() && mask.field(1) && !mask.field(0));
        // The row id, or a name that is no column, may be any column.
        updated.note("todos", "ROWID");
        assert_eq!(cache.get(&updated, "todos", &pk, &fields), UpdateMask::ALL);
        updated.note("other", "gone");
        let other = MaskCache::default();
        assert_eq!(other.get(&updated, "other", &pk, &fields), UpdateMask::ALL);
    }

    #[test]
    fn fields_past_the_mask_are_always_compared() {
        let updated = UpdatedColumns::default();
        let fields: Vec<String> = (0..70).map(|i| format!("f{i}")).collect();
        updated.note("wide", "f1");
        let mask = MaskCache::default().get(&updated, "wide", &names(&["id"]), &fields);
        assert!(mask.field(1) && !mask.field(0) && !mask.field(62));
        assert!(mask.field(63) && mask.field(69));
    }
}
