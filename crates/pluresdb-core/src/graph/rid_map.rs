//! Values by table row id: a vector over the dense range row ids fill when SQLite picks them
//! (1, 2, 3, ...), and a hash map for the others, which SQL can give a row (a negative id, or
//! one far past the rest), so such a row costs one entry, not a slot for every id below it.

use std::collections::HashMap;

/// A vector slot is made for a row id below twice the entries plus this many.
const DENSE_SLACK: usize = 1 << 16;

/// Values of type `T` by row id; `none` marks an empty vector slot (and is never stored).
#[derive(Clone)]
pub(crate) struct RidMap<T> {
    dense: Vec<T>,
    sparse: HashMap<i64, T>,
    none: T,
    /// Entries held (vector slots not `none`, and the map's).
    len: usize,
}

impl<T: Copy + PartialEq> RidMap<T> {
    /// An empty map whose empty slots hold `none`.
    pub(crate) fn new(none: T) -> Self {
        RidMap {
            dense: Vec::new(),
            sparse: HashMap::new(),
            none,
            len: 0,
        }
    }

    /// The value of row `rid`.
    #[inline]
    pub(crate) fn get(&self, rid: i64) -> Option<T> {
        if let Some(&v) = usize::try_from(rid).ok().and_then(|i| self.dense.get(i))
            && v != self.none
        {
            return Some(v);
        }
        if self.sparse.is_empty() {
            return None;
        }
        self.sparse.get(&rid).copied()
    }

    /// Sets row `rid`'s value (`v` must not be `none`).
    pub(crate) fn set(&mut self, rid: i64, v: T) {
        debug_assert!(v != self.none, "RidMap::set with the empty value");
        let slot = usize::try_from(rid)
            .ok()
            .filter(|&i| i < self.dense.len() || i < 2 * self.len + DENSE_SLACK);
        let Some(i) = slot else {
            self.len += usize::from(self.sparse.insert(rid, v).is_none());
            return;
        };
        if i >= self.dense.len() {
            self.dense.resize(i + 1, self.none);
        }
        let old = std::mem::replace(&mut self.dense[i], v);
        // A row set in the map while its id was past the vector is moved into it.
        let moved = !self.sparse.is_empty() && self.sparse.remove(&rid).is_some();
        self.len += usize::from(old == self.none && !moved);
    }

    /// Forgets row `rid`'s value.
    pub(crate) fn remove(&mut self, rid: i64) {
        if let Some(v) = usize::try_from(rid)
            .ok()
            .and_then(|i| self.dense.get_mut(i))
            && *v != self.none
        {
            *v = self.none;
            self.len -= 1;
        } else if !self.sparse.is_empty() && self.sparse.remove(&rid).is_some() {
            self.len -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{DENSE_SLACK, RidMap};

    #[test]
    fn far_and_negative_ids_take_no_vector_slots() {
        let mut m = RidMap::new(u32::MAX);
        for rid in 1..100 {
            m.set(rid, rid as u32);
        }
        let far = [-1, i64::MIN, 1 << 40, i64::MAX, 3 * DENSE_SLACK as i64];
        for (k, &rid) in far.iter().enumerate() {
            m.set(rid, 1000 + k as u32);
        }
        assert!(m.dense.len() <= 100);
        assert_eq!(m.len, 99 + far.len());
        for (k, &rid) in far.iter().enumerate() {
            assert_eq!(m.get(rid), Some(1000 + k as u32));
        }
        assert_eq!(m.get(50), Some(50));
        assert_eq!(m.get(0), None);
        assert_eq!(m.get(1 << 41), None);
        // Enough entries bring a far id into the vector's reach: set again, it moves there.
        for rid in 100..(2 * DENSE_SLACK as i64) {
            m.set(rid, 7);
        }
        let moved = 3 * DENSE_SLACK as i64;
        m.set(moved, 8);
        assert!(m.dense.len() > moved as usize);
        assert!(!m.sparse.contains_key(&moved));
        assert_eq!(m.get(moved), Some(8));
        let len = m.len;
        for rid in [moved, -1, 1 << 40, 50] {
            m.remove(rid);
            assert_eq!(m.get(rid), None);
        }
        m.remove(moved);
        assert_eq!(m.len, len - 4);
    }
}
