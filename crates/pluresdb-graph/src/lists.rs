//! Per-node neighbour lists for one direction, all kept in one arena.
//!
//! Each entry packs `(relation, neighbour)` into a `u64` (relation in the high half), and each
//! node's entries are a contiguous run of the arena sorted ascending, so the neighbours by one
//! relation are a contiguous sub-slice found by binary search. A node owns `cap` slots from
//! `off`; when a list outgrows them it moves to the end of the arena with twice the room (or
//! grows in place when it already is at the end), leaving its old slots dead. The arena is
//! compacted when more than half of it is dead, or less than a third of it holds entries (after
//! many removals), so inserts and removals cost O(degree) amortized and memory stays within a
//! small factor of the live entries. (A move leaves `cap` dead slots behind and takes `2 cap`
//! new ones, so it can never trigger a compaction by itself: no compaction thrash on a hub.)

/// Packs a relation and a neighbour into one sortable entry.
#[inline]
pub(crate) const fn pack(rel: u32, node: u32) -> u64 {
    ((rel as u64) << 32) | node as u64
}

/// The relation of an entry.
#[inline]
pub(crate) const fn rel_of(e: u64) -> u32 {
    (e >> 32) as u32
}

/// The neighbour of an entry.
#[inline]
pub(crate) const fn node_of(e: u64) -> u32 {
    e as u32
}

/// The entries of `list` (sorted) whose relation is `rel`.
#[inline]
pub(crate) fn rel_range(list: &[u64], rel: u32) -> &[u64] {
    let lo = pack(rel, 0);
    let start = list.partition_point(|&e| e < lo);
    let rest = &list[start..];
    let len = rest.partition_point(|&e| rel_of(e) == rel);
    &rest[..len]
}

/// Hints the CPU to fetch the cache line at `p` (as `pluresdb-vector` does); a no-op
/// elsewhere.
#[inline(always)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch(p.cast::<i8>(), std::arch::x86_64::_MM_HINT_T0);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Where a node's list lives in the arena.
#[derive(Clone, Copy, Debug, Default)]
struct Span {
    off: u32,
    len: u32,
    cap: u32,
}

/// Below this arena size compaction is not worth it.
const COMPACT_MIN: usize = 1 << 12;

/// The neighbour lists of every node slot, for one direction.
#[derive(Clone, Debug, Default)]
pub(crate) struct Lists {
    spans: Vec<Span>,
    arena: Vec<u64>,
    /// Entries in use (sum of span lengths).
    live: usize,
    /// Slots owned by spans (sum of capacities); the rest of the arena is dead.
    owned: usize,
    /// Compactions so far (tests only).
    #[cfg(test)]
    compactions: usize,
}

fn arena_offset(n: usize) -> u32 {
    u32::try_from(n).expect(
        "pluresdb-graph: adjacency arena over 4 billion entries (2 billion edges); \
         the in-memory graph cannot hold more",
    )
}

impl Lists {
    /// Makes room for node slots `0..slots`.
    pub(crate) fn ensure_slots(&mut self, slots: usize) {
        if self.spans.len() < slots {
            self.spans.resize(slots, Span::default());
        }
    }

    /// The sorted entries of node `v`.
    #[inline]
    pub(crate) fn get(&self, v: u32) -> &[u64] {
        match self.spans.get(v as usize) {
            Some(s) => &self.arena[s.off as usize..s.off as usize + s.len as usize],
            None => &[],
        }
    }

    /// Hints the CPU to load where node `v`'s list is (its span).
    #[inline]
    pub(crate) fn prefetch_span(&self, v: u32) {
        if let Some(s) = self.spans.get(v as usize) {
            prefetch(s);
        }
    }

    /// Hints the CPU to load the head of node `v`'s list (reads its span: prefetch that
    /// first, some steps earlier).
    #[inline]
    pub(crate) fn prefetch_list(&self, v: u32) {
        if let Some(e) = self
            .spans
            .get(v as usize)
            .and_then(|s| self.arena.get(s.off as usize))
        {
            prefetch(e);
        }
    }

    /// Number of entries of node `v`.
    #[inline]
    pub(crate) fn len_of(&self, v: u32) -> usize {
        self.spans.get(v as usize).map_or(0, |s| s.len as usize)
    }

    /// Entries in use.
    #[cfg(test)]
    pub(crate) fn live(&self) -> usize {
        self.live
    }

    /// Whether node `v` has entry `e`.
    pub(crate) fn contains(&self, v: u32, e: u64) -> bool {
        self.get(v).binary_search(&e).is_ok()
    }

    /// Adds entry `e` to node `v`; false if it was there already.
    pub(crate) fn insert(&mut self, v: u32, e: u64) -> bool {
        let pos = match self.get(v).binary_search(&e) {
            Ok(_) => return false,
            Err(p) => p,
        };
        let s = self.spans[v as usize];
        if s.len == s.cap {
            self.grow(v);
        }
        let s = &mut self.spans[v as usize];
        let start = s.off as usize;
        let end = start + s.len as usize;
        self.arena.copy_within(start + pos..end, start + pos + 1);
        self.arena[start + pos] = e;
        s.len += 1;
        self.live += 1;
        self.maybe_compact();
        true
    }

    /// Removes entry `e` from node `v`; false if it was not there.
    pub(crate) fn remove(&mut self, v: u32, e: u64) -> bool {
        let pos = match self.get(v).binary_search(&e) {
            Ok(p) => p,
            Err(_) => return false,
        };
        let s = &mut self.spans[v as usize];
        let start = s.off as usize;
        let end = start + s.len as usize;
        self.arena.copy_within(start + pos + 1..end, start + pos);
        s.len -= 1;
        self.live -= 1;
        self.maybe_compact();
        true
    }

    /// Empties node `v`'s list, giving its room back, and returns the entries it had.
    pub(crate) fn take(&mut self, v: u32) -> Vec<u64> {
        let taken = self.get(v).to_vec();
        if let Some(s) = self.spans.get_mut(v as usize) {
            self.live -= s.len as usize;
            self.owned -= s.cap as usize;
            *s = Span::default();
        }
        self.maybe_compact();
        taken
    }

    /// Gives node `v` room for at least one more entry.
    fn grow(&mut self, v: u32) {
        let s = self.spans[v as usize];
        let new_cap = (s.cap as usize * 2).max(1);
        let at_end = s.off as usize + s.cap as usize == self.arena.len();
        let needed = if at_end {
            new_cap - s.cap as usize
        } else {
            new_cap
        };
        let len = self.arena.len();
        if self.worth_compacting()
            && len + needed > self.arena.capacity()
            && (len - self.owned) * 4 >= len
        {
            // The arena is full and a quarter dead: reclaim the dead slots rather than
            // doubling the allocation (the copy costs the same as a reallocation).
            self.compact();
        }
        let s = self.spans[v as usize];
        let off = s.off as usize;
        if off + s.cap as usize == self.arena.len() {
            // Already at the end: grow in place.
            self.arena.resize(off + new_cap, 0);
            self.spans[v as usize].cap = arena_offset(new_cap);
            self.owned += new_cap - s.cap as usize;
            arena_offset(self.arena.len());
        } else {
            let new_off = self.arena.len();
            self.arena.extend_from_within(off..off + s.len as usize);
            self.arena.resize(new_off + new_cap, 0);
            self.owned += new_cap - s.cap as usize;
            arena_offset(self.arena.len());
            self.spans[v as usize] = Span {
                off: arena_offset(new_off),
                len: s.len,
                cap: arena_offset(new_cap),
            };
        }
    }

    fn maybe_compact(&mut self) {
        let len = self.arena.len();
        if self.worth_compacting() && ((len - self.owned) * 2 > len || self.live * 3 < len) {
            self.compact();
        }
    }

    /// A compaction costs O(arena + nodes); it is only worth it when the arena is not tiny
    /// and not smaller than the node count (so its cost is paid for by the slots it frees).
    fn worth_compacting(&self) -> bool {
        self.arena.len() >= COMPACT_MIN.max(self.spans.len())
    }

    /// Packs every list tightly (capacity = length).
    pub(crate) fn compact(&mut self) {
        let mut arena = Vec::with_capacity(self.live + self.live / 4);
        for s in &mut self.spans {
            let start = arena.len();
            arena.extend_from_slice(&self.arena[s.off as usize..s.off as usize + s.len as usize]);
            *s = Span {
                off: arena_offset(start),
                len: s.len,
                cap: s.len,
            };
        }
        self.arena = arena;
        self.owned = self.live;
        #[cfg(test)]
        {
            self.compactions += 1;
        }
    }

    /// Packs every list tightly and gives spare memory back.
    pub(crate) fn shrink_to_fit(&mut self) {
        self.compact();
        self.arena.shrink_to_fit();
        self.spans.shrink_to_fit();
    }

    /// Rebuilds every list from the current entries plus `extra` `(node, entry)` pairs in one
    /// pass (counting sort by node, then a sort and dedup of each node's run). `extra` is
    /// iterated twice. Returns the number of entries added (duplicates not counted).
    pub(crate) fn rebuild_with<I>(&mut self, slots: usize, extra: I) -> usize
    where
        I: Iterator<Item = (u32, u64)> + Clone,
    {
        self.ensure_slots(slots);
        let before = self.live;
        let mut starts = vec![0u32; self.spans.len() + 1];
        for (v, s) in self.spans.iter().enumerate() {
            starts[v + 1] = s.len;
        }
        for (v, _) in extra.clone() {
            starts[v as usize + 1] += 1;
        }
        let mut total = 0usize;
        for c in starts.iter_mut() {
            total += *c as usize;
            *c = arena_offset(total);
        }
        // starts[v + 1] is now the end of v's run; fill by walking each run's cursor.
        let mut arena = vec![0u64; total];
        let mut cursor: Vec<u32> = Vec::with_capacity(self.spans.len());
        for (v, s) in self.spans.iter().enumerate() {
            let begin = starts[v];
            let old = &self.arena[s.off as usize..s.off as usize + s.len as usize];
            arena[begin as usize..begin as usize + old.len()].copy_from_slice(old);
            cursor.push(begin + s.len);
        }
        for (v, e) in extra {
            let c = &mut cursor[v as usize];
            arena[*c as usize] = e;
            *c += 1;
        }
        let mut live = 0usize;
        for v in 0..self.spans.len() {
            let begin = starts[v] as usize;
            let end = starts[v + 1] as usize;
            let run = &mut arena[begin..end];
            let old_len = self.spans[v].len as usize;
            let len = if run.len() == old_len {
                old_len
            } else {
                run.sort_unstable();
                dedup_sorted(run)
            };
            live += len;
            self.spans[v] = Span {
                off: arena_offset(begin),
                len: arena_offset(len),
                cap: arena_offset(end - begin),
            };
        }
        self.owned = arena.len();
        self.arena = arena;
        self.live = live;
        self.maybe_compact();
        live - before
    }

    /// Bytes held (capacity, not just length).
    pub(crate) fn memory_bytes(&self) -> usize {
        self.spans.capacity() * std::mem::size_of::<Span>()
            + self.arena.capacity() * std::mem::size_of::<u64>()
    }

    /// Checks the internal invariants (tests only).
    #[cfg(test)]
    pub(crate) fn check(&self) {
        let mut live = 0;
        let mut owned: Vec<(usize, usize)> = Vec::new();
        for s in &self.spans {
            assert!(s.len <= s.cap);
            assert!(s.off as usize + s.cap as usize <= self.arena.len());
            let l = &self.arena[s.off as usize..(s.off + s.len) as usize];
            assert!(l.windows(2).all(|w| w[0] < w[1]), "list not sorted/unique");
            live += s.len as usize;
            if s.cap > 0 {
                owned.push((s.off as usize, (s.off + s.cap) as usize));
            }
        }
        owned.sort_unstable();
        assert!(owned.windows(2).all(|w| w[0].1 <= w[1].0), "spans overlap");
        assert_eq!(live, self.live);
        let caps: usize = self.spans.iter().map(|s| s.cap as usize).sum();
        assert_eq!(caps, self.owned);
    }
}

/// Removes adjacent duplicates in place; returns the new length (kept entries are at the front).
fn dedup_sorted(run: &mut [u64]) -> usize {
    if run.is_empty() {
        return 0;
    }
    let mut w = 1;
    for r in 1..run.len() {
        if run[r] != run[w - 1] {
            run[w] = run[r];
            w += 1;
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_remove_keep_sorted_and_compact() {
        let mut l = Lists::default();
        l.ensure_slots(300);
        for round in 0..20u32 {
            for v in 0..300u32 {
                l.insert(v, pack(round % 3, (v * 7 + round) % 50));
            }
        }
        l.check();
        for v in 0..300u32 {
            for n in 0..50 {
                l.remove(v, pack(1, n));
            }
        }
        l.check();
        assert!(l.get(5).iter().all(|&e| rel_of(e) != 1));
        let taken = l.take(7);
        assert!(!taken.is_empty());
        assert!(l.get(7).is_empty());
        l.check();
    }

    #[test]
    fn no_compaction_thrash_on_a_hub() {
        // One node holds most entries and is not last in the arena: growing it must not
        // compact on every insert.
        let mut l = Lists::default();
        l.ensure_slots(2);
        for i in 0..100_000 {
            l.insert(1, pack(0, i));
        }
        for i in 0..200_000 {
            l.insert(0, pack(0, i));
        }
        l.compact();
        let before = l.compactions;
        for i in 200_000..300_000 {
            l.insert(0, pack(0, i));
        }
        assert!(
            l.compactions - before <= 2,
            "{} compactions",
            l.compactions - before
        );
        l.check();
        // Removing most entries compacts.
        for i in 0..250_000 {
            l.remove(0, pack(0, i));
        }
        l.check();
        assert!(l.arena.len() < 3 * l.live + COMPACT_MIN);
    }

    #[test]
    fn rebuild_merges_and_dedups() {
        let mut l = Lists::default();
        l.ensure_slots(4);
        l.insert(1, pack(0, 3));
        l.insert(2, pack(1, 0));
        let extra = [
            (1u32, pack(0, 3)),
            (1, pack(0, 2)),
            (3, pack(2, 2)),
            (3, pack(2, 2)),
        ];
        let added = l.rebuild_with(5, extra.iter().copied());
        assert_eq!(added, 2);
        l.check();
        assert_eq!(l.get(1), &[pack(0, 2), pack(0, 3)]);
        assert_eq!(l.get(2), &[pack(1, 0)]);
        assert_eq!(l.get(3), &[pack(2, 2)]);
        assert!(l.get(0).is_empty() && l.get(4).is_empty());
        // Lists keep working after a rebuild.
        l.insert(3, pack(0, 1));
        l.insert(0, pack(0, 1));
        l.check();
        assert_eq!(l.get(3), &[pack(0, 1), pack(2, 2)]);
    }

    #[test]
    fn rel_ranges() {
        let list = [
            pack(0, 1),
            pack(0, 5),
            pack(2, 0),
            pack(2, 9),
            pack(u32::MAX, 3),
        ];
        assert_eq!(rel_range(&list, 0), &list[0..2]);
        assert!(rel_range(&list, 1).is_empty());
        assert_eq!(rel_range(&list, 2), &list[2..4]);
        assert_eq!(rel_range(&list, u32::MAX), &list[4..5]);
    }
}
