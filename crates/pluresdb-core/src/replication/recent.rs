//! [`Recent`]: the rows whose clock records changed lately, so that a peer which is nearly up to
//! date (live sync) gets its changes by looking those rows up instead of scanning every clock
//! record of the database.

use std::collections::VecDeque;

/// Rows listed at most; past this the oldest are forgotten (peers further behind get a scan).
const CAPACITY: usize = 65_536;

/// Recently written clock records, by `db_version`.
pub(crate) struct Recent {
    /// Every clock record stored with a `db_version` above this one is listed. (Also some that
    /// are not stored: writes rolled back stay listed, and lookups skip them.)
    floor: u64,
    /// `(db_version, collection, key)`, in `db_version` order.
    rows: VecDeque<(u64, u32, Box<[u8]>)>,
}

impl Recent {
    /// Nothing listed yet: complete for versions after `db_version`, the database's current one.
    pub(crate) fn new(db_version: u64) -> Recent {
        Recent {
            floor: db_version,
            rows: VecDeque::new(),
        }
    }

    /// `seq` was handed out to a transaction of this handle; `other_wrote`: the version before
    /// it was taken by another handle or process, so rows stored with earlier versions may be
    /// missing here.
    pub(crate) fn allocated(&mut self, seq: u64, other_wrote: bool) {
        if other_wrote {
            self.forget_through(seq.saturating_sub(1));
        }
    }

    /// The clock record of row `key` of collection `coll` was written with version `seq`.
    pub(crate) fn record(&mut self, seq: u64, coll: u32, key: &[u8]) {
        if seq <= self.floor {
            return;
        }
        self.rows.push_back((seq, coll, key.into()));
        if self.rows.len() > CAPACITY
            && let Some(&(oldest, _, _)) = self.rows.front()
        {
            self.forget_through(oldest);
        }
    }

    /// Too many records were written with version `seq` to list them (a bulk operation).
    pub(crate) fn overflow(&mut self, seq: u64) {
        self.forget_through(seq);
    }

    /// Whether `count` records written with version `seq` can be listed (then list each with
    /// [`record`](Self::record)); if they are too many, they count as an overflow.
    pub(crate) fn room_for(&mut self, seq: u64, count: usize) -> bool {
        if count > CAPACITY {
            self.overflow(seq);
        }
        count <= CAPACITY
    }

    fn forget_through(&mut self, seq: u64) {
        self.floor = self.floor.max(seq);
        while self.rows.front().is_some_and(|r| r.0 <= self.floor) {
            self.rows.pop_front();
        }
    }

    /// The rows `(collection, key)` whose records may have been written after version `since`,
    /// sorted and without repeats, when every such row is listed; `db_version` is the current
    /// version as the caller's snapshot sees it and `ours` whether this handle took it (if not,
    /// another one committed after this handle's last write). `None`: scan instead.
    pub(crate) fn since(
        &self,
        since: u64,
        db_version: u64,
        ours: bool,
    ) -> Option<Vec<(u32, Box<[u8]>)>> {
        if db_version <= since {
            return Some(Vec::new());
        }
        if since < self.floor || !ours {
            return None;
        }
        let start = self.rows.partition_point(|r| r.0 <= since);
        let mut rows: Vec<(u32, Box<[u8]>)> = self
            .rows
            .range(start..)
            .map(|(_, coll, key)| (*coll, key.clone()))
            .collect();
        rows.sort_unstable();
        rows.dedup();
        Some(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(rows: Option<Vec<(u32, Box<[u8]>)>>) -> Option<Vec<(u32, Vec<u8>)>> {
        rows.map(|r| r.into_iter().map(|(c, k)| (c, k.into_vec())).collect())
    }

    #[test]
    fn lists_rows_after_a_version_and_refuses_what_it_cannot_vouch_for() {
        let mut r = Recent::new(10);
        r.allocated(11, false);
        r.record(11, 3, b"a");
        r.record(11, 3, b"b");
        r.allocated(12, false);
        r.record(12, 3, b"a");
        assert_eq!(
            keys(r.since(10, 12, true)),
            Some(vec![(3, b"a".to_vec()), (3, b"b".to_vec())])
        );
        assert_eq!(keys(r.since(11, 12, true)), Some(vec![(3, b"a".to_vec())]));
        assert_eq!(keys(r.since(12, 12, true)), Some(vec![]));
        // Older than what was listed from the start: unknown.
        assert_eq!(keys(r.since(9, 12, true)), None);
        // The snapshot's version was taken by another handle: unknown, unless nothing is newer.
        assert_eq!(keys(r.since(12, 13, false)), None);
        assert_eq!(keys(r.since(13, 13, false)), Some(vec![]));
        // Taking a version after another handle wrote: rows up to it are not vouched for.
        r.allocated(15, true);
        r.record(15, 3, b"c");
        assert_eq!(keys(r.since(12, 15, true)), None);
        assert_eq!(keys(r.since(14, 15, true)), Some(vec![(3, b"c".to_vec())]));
        // A bulk write is not listed row by row.
        r.allocated(16, false);
        r.overflow(16);
        r.record(16, 3, b"d");
        assert_eq!(keys(r.since(15, 16, true)), None);
        assert_eq!(keys(r.since(16, 16, true)), Some(vec![]));
    }

    #[test]
    fn forgets_the_oldest_versions_past_its_capacity() {
        let mut r = Recent::new(0);
        for i in 0..=CAPACITY as u64 {
            r.allocated(i + 1, false);
            r.record(i + 1, 3, &i.to_le_bytes());
        }
        let last = CAPACITY as u64 + 1;
        assert_eq!(r.since(0, last, true), None);
        assert_eq!(r.since(1, last, true).map(|v| v.len()), Some(CAPACITY));
    }
}
