//! Per-node neighbour lists for one direction, all kept in one arena.
//!
//! Each entry is a `(relation, neighbour)` pair, kept as two parallel arrays (relations and
//! neighbours), so a walk that follows every relation, or one relation's run, reads only the
//! neighbours: 4 bytes an entry. Each node's entries are a contiguous run of the arena sorted
//! ascending by `(relation, neighbour)`, so the neighbours by one relation are a contiguous
//! sub-slice found by binary search. Entries cross this module's boundary packed into a `u64`
//! (relation in the high half; [`pack`]), which sorts the same way. A node owns `cap` slots
//! from `off`; when a list outgrows them it moves to the end of the arena with twice the room
//! (or grows in place when it already is at the end), leaving its old slots dead. The arena is
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

/// One node's list (or a run of it): relations and neighbours side by side.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct List<'a> {
    rels: &'a [u32],
    nodes: &'a [u32],
    /// The first and last relation (any values when empty), so a walk by relation can
    /// often skip reading `rels`.
    lo: u32,
    hi: u32,
}

impl<'a> List<'a> {
    /// Number of entries.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the list is empty.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The neighbours, in entry order.
    #[inline]
    pub(crate) fn nodes(&self) -> &'a [u32] {
        self.nodes
    }

    /// Entry `i`, packed (reads `rels` only when the list has several relations).
    #[inline]
    pub(crate) fn entry(&self, i: usize) -> u64 {
        let rel = if self.lo == self.hi {
            self.lo
        } else {
            self.rels[i]
        };
        pack(rel, self.nodes[i])
    }

    /// The entries, packed, in order.
    pub(crate) fn iter(self) -> impl ExactSizeIterator<Item = u64> + 'a {
        let (rels, nodes) = (self.rels, self.nodes);
        (0..nodes.len()).map(move |i| pack(rels[i], nodes[i]))
    }

    /// The entries whose relation is `rel`.
    #[inline]
    pub(crate) fn rel_range(&self, rel: u32) -> List<'a> {
        let (start, end) = self.rel_bounds(rel);
        List {
            rels: &self.rels[start..end],
            nodes: &self.nodes[start..end],
            lo: rel,
            hi: rel,
        }
    }

    /// Where the entries of relation `rel` start and end (where they would go, if none).
    #[inline]
    fn rel_bounds(&self, rel: u32) -> (usize, usize) {
        let rels = self.rels;
        if rels.is_empty() || rel < self.lo {
            return (0, 0);
        }
        if rel > self.hi {
            return (rels.len(), rels.len());
        }
        if self.lo == rel && self.hi == rel {
            return (0, rels.len());
        }
        let start = rels.partition_point(|&r| r < rel);
        (start, start + rels[start..].partition_point(|&r| r == rel))
    }

    /// Where entry `e` is, or where it would go.
    fn search(&self, e: u64) -> Result<usize, usize> {
        let (start, end) = self.rel_bounds(rel_of(e));
        self.nodes[start..end]
            .binary_search(&node_of(e))
            .map(|i| start + i)
            .map_err(|i| start + i)
    }
}

/// Hints the CPU to fetch the cache line at `p` (as `pluresdb-vector` does); a no-op
/// elsewhere.
#[inline(always)]
pub(crate) fn prefetch<T>(p: *const T) {
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
    /// The relations of the first and last entry (see [`List`]).
    lo: u32,
    hi: u32,
}

/// Below this arena size compaction is not worth it.
const COMPACT_MIN: usize = 1 << 12;

/// The neighbour lists of every node slot, for one direction.
#[derive(Clone, Debug, Default)]
pub(crate) struct Lists {
    spans: Vec<Span>,
    /// The arena: each slot's relation and neighbour (always the same length).
    rels: Vec<u32>,
    nodes: Vec<u32>,
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
    pub(crate) fn get(&self, v: u32) -> List<'_> {
        match self.spans.get(v as usize) {
            Some(s) => {
                let r = s.off as usize..s.off as usize + s.len as usize;
                List {
                    rels: &self.rels[r.clone()],
                    nodes: &self.nodes[r],
                    lo: s.lo,
                    hi: s.hi,
                }
            }
            None => List::default(),
        }
    }

    /// Hints the CPU to load where node `v`'s list is (its span).
    #[inline]
    pub(crate) fn prefetch_span(&self, v: u32) {
        if let Some(s) = self.spans.get(v as usize) {
            prefetch(s);
        }
    }

    /// Hints the CPU to load the head of node `v`'s neighbours (reads its span: prefetch
    /// that first, some steps earlier).
    #[inline]
    pub(crate) fn prefetch_list(&self, v: u32) {
        if let Some(e) = self
            .spans
            .get(v as usize)
            .and_then(|s| self.nodes.get(s.off as usize))
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
        self.get(v).search(e).is_ok()
    }

    /// Adds entry `e` to node `v`; false if it was there already.
    pub(crate) fn insert(&mut self, v: u32, e: u64) -> bool {
        let pos = match self.get(v).search(e) {
            Ok(_) => return false,
            Err(p) => p,
        };
        let s = self.spans[v as usize];
        if s.len == s.cap {
            self.grow(v);
        }
        let s = &mut self.spans[v as usize];
        let at = s.off as usize + pos;
        let end = s.off as usize + s.len as usize;
        s.len += 1;
        for (arena, x) in [(&mut self.rels, rel_of(e)), (&mut self.nodes, node_of(e))] {
            arena.copy_within(at..end, at + 1);
            arena[at] = x;
        }
        self.note_rels(v);
        self.live += 1;
        self.maybe_compact();
        true
    }

    /// Removes entry `e` from node `v`; false if it was not there.
    pub(crate) fn remove(&mut self, v: u32, e: u64) -> bool {
        let pos = match self.get(v).search(e) {
            Ok(p) => p,
            Err(_) => return false,
        };
        let s = &mut self.spans[v as usize];
        let at = s.off as usize + pos;
        let end = s.off as usize + s.len as usize;
        s.len -= 1;
        for arena in [&mut self.rels, &mut self.nodes] {
            arena.copy_within(at + 1..end, at);
        }
        self.note_rels(v);
        self.live -= 1;
        self.maybe_compact();
        true
    }

    /// Empties node `v`'s list, giving its room back, and returns the entries it had.
    pub(crate) fn take(&mut self, v: u32) -> Vec<u64> {
        let taken = self.get(v).iter().collect();
        if let Some(s) = self.spans.get_mut(v as usize) {
            self.live -= s.len as usize;
            self.owned -= s.cap as usize;
            *s = Span::default();
        }
        self.maybe_compact();
        taken
    }

    /// Records node `v`'s first and last relation in its span.
    #[inline]
    fn note_rels(&mut self, v: u32) {
        let s = &mut self.spans[v as usize];
        if s.len > 0 {
            s.lo = self.rels[s.off as usize];
            s.hi = self.rels[(s.off + s.len - 1) as usize];
        }
    }

    /// Gives node `v` room for at least one more entry.
    fn grow(&mut self, v: u32) {
        let s = self.spans[v as usize];
        let new_cap = (s.cap as usize * 2).max(1);
        let at_end = s.off as usize + s.cap as usize == self.nodes.len();
        let needed = if at_end {
            new_cap - s.cap as usize
        } else {
            new_cap
        };
        let len = self.nodes.len();
        if self.worth_compacting()
            && len + needed > self.nodes.capacity()
            && (len - self.owned) * 4 >= len
        {
            // The arena is full and a quarter dead: reclaim the dead slots rather than
            // doubling the allocation (the copy costs the same as a reallocation).
            self.compact();
        }
        let s = self.spans[v as usize];
        let off = s.off as usize;
        self.owned += new_cap - s.cap as usize;
        if off + s.cap as usize == self.nodes.len() {
            // Already at the end: grow in place.
            for arena in [&mut self.rels, &mut self.nodes] {
                arena.resize(off + new_cap, 0);
            }
            self.spans[v as usize].cap = arena_offset(new_cap);
        } else {
            let new_off = self.nodes.len();
            for arena in [&mut self.rels, &mut self.nodes] {
                arena.extend_from_within(off..off + s.len as usize);
                arena.resize(new_off + new_cap, 0);
            }
            self.spans[v as usize] = Span {
                off: arena_offset(new_off),
                cap: arena_offset(new_cap),
                ..s
            };
        }
        arena_offset(self.nodes.len());
    }

    fn maybe_compact(&mut self) {
        let len = self.nodes.len();
        if self.worth_compacting() && ((len - self.owned) * 2 > len || self.live * 3 < len) {
            self.compact();
        }
    }

    /// A compaction costs O(arena + nodes); it is only worth it when the arena is not tiny
    /// and not smaller than the node count (so its cost is paid for by the slots it frees).
    fn worth_compacting(&self) -> bool {
        self.nodes.len() >= COMPACT_MIN.max(self.spans.len())
    }

    /// Packs every list tightly (capacity = length).
    pub(crate) fn compact(&mut self) {
        let room = self.live + self.live / 4;
        let (mut rels, mut nodes) = (Vec::with_capacity(room), Vec::with_capacity(room));
        for s in &mut self.spans {
            let start = nodes.len();
            let r = s.off as usize..s.off as usize + s.len as usize;
            rels.extend_from_slice(&self.rels[r.clone()]);
            nodes.extend_from_slice(&self.nodes[r]);
            *s = Span {
                off: arena_offset(start),
                cap: s.len,
                ..*s
            };
        }
        (self.rels, self.nodes) = (rels, nodes);
        self.owned = self.live;
        #[cfg(test)]
        {
            self.compactions += 1;
        }
    }

    /// Packs every list tightly and gives spare memory back.
    pub(crate) fn shrink_to_fit(&mut self) {
        self.compact();
        self.rels.shrink_to_fit();
        self.nodes.shrink_to_fit();
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
        // starts[v + 1] is now the end of v's run; fill packed entries by walking each run's
        // cursor, then sort each run and split it into the two arrays.
        let mut arena = vec![0u64; total];
        let mut cursor: Vec<u32> = Vec::with_capacity(self.spans.len());
        for (v, s) in self.spans.iter().enumerate() {
            let begin = starts[v] as usize;
            for (slot, e) in arena[begin..].iter_mut().zip(self.get(v as u32).iter()) {
                *slot = e;
            }
            cursor.push(arena_offset(begin) + s.len);
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
                lo: run.first().map_or(0, |&e| rel_of(e)),
                hi: run[..len].last().map_or(0, |&e| rel_of(e)),
            };
        }
        self.rels = arena.iter().map(|&e| rel_of(e)).collect();
        self.nodes = arena.iter().map(|&e| node_of(e)).collect();
        self.owned = arena.len();
        self.live = live;
        self.maybe_compact();
        live - before
    }

    /// Bytes held (capacity, not just length).
    pub(crate) fn memory_bytes(&self) -> usize {
        self.spans.capacity() * std::mem::size_of::<Span>()
            + (self.rels.capacity() + self.nodes.capacity()) * std::mem::size_of::<u32>()
    }

    /// Checks the internal invariants (tests only).
    #[cfg(test)]
    pub(crate) fn check(&self) {
        assert_eq!(self.rels.len(), self.nodes.len());
        let mut live = 0;
        let mut owned: Vec<(usize, usize)> = Vec::new();
        for (v, s) in self.spans.iter().enumerate() {
            assert!(s.len <= s.cap);
            assert!(s.off as usize + s.cap as usize <= self.nodes.len());
            let l: Vec<u64> = self.get(v as u32).iter().collect();
            assert!(l.windows(2).all(|w| w[0] < w[1]), "list not sorted/unique");
            if let (Some(&first), Some(&last)) = (l.first(), l.last()) {
                assert_eq!((s.lo, s.hi), (rel_of(first), rel_of(last)));
            }
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

    fn entries(l: &Lists, v: u32) -> Vec<u64> {
        l.get(v).iter().collect()
    }

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
        assert!(l.get(5).iter().all(|e| rel_of(e) != 1));
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
        assert!(l.nodes.len() < 3 * l.live + COMPACT_MIN);
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
        assert_eq!(entries(&l, 1), [pack(0, 2), pack(0, 3)]);
        assert_eq!(entries(&l, 2), [pack(1, 0)]);
        assert_eq!(entries(&l, 3), [pack(2, 2)]);
        assert!(l.get(0).is_empty() && l.get(4).is_empty());
        // Lists keep working after a rebuild.
        l.insert(3, pack(0, 1));
        l.insert(0, pack(0, 1));
        l.check();
        assert_eq!(entries(&l, 3), [pack(0, 1), pack(2, 2)]);
    }

    #[test]
    fn rel_ranges() {
        let rels = [0, 0, 2, 2, u32::MAX];
        let nodes = [1, 5, 0, 9, 3];
        let list = List {
            rels: &rels,
            nodes: &nodes,
            lo: 0,
            hi: u32::MAX,
        };
        assert_eq!(list.rel_range(0).nodes(), &[1, 5]);
        assert!(list.rel_range(1).is_empty());
        assert_eq!(list.rel_range(2).nodes(), &[0, 9]);
        assert_eq!(list.rel_range(u32::MAX).nodes(), &[3]);
        assert_eq!(list.search(pack(2, 9)), Ok(3));
        assert_eq!(list.search(pack(1, 7)), Err(2));
        assert_eq!(list.search(pack(2, 5)), Err(3));
        let one = List {
            rels: &rels[2..4],
            nodes: &nodes[2..4],
            lo: 2,
            hi: 2,
        };
        assert!(one.rel_range(0).is_empty() && one.rel_range(3).is_empty());
        assert_eq!(one.search(pack(3, 0)), Err(2));
        assert_eq!(one.search(pack(1, 99)), Err(0));
        assert_eq!(one.rel_range(2).len(), 2);
        assert_eq!(one.search(pack(2, 0)), Ok(0));
    }
}
