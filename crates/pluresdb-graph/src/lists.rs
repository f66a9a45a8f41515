//! Per-node neighbour lists, both directions, all kept in one arena.
//!
//! Each entry is a `(relation, neighbour)` pair, kept as two parallel arrays (relations and
//! neighbours), so a walk that follows every relation, or one relation's run, reads only the
//! neighbours: 4 bytes an entry. A node owns one run of the arena: its outgoing entries, then
//! its incoming ones, each side sorted ascending by `(relation, neighbour)`, so a walk both
//! ways reads one place per node, and the neighbours by one relation are a contiguous
//! sub-slice found by binary search. Entries cross this module's boundary packed into a `u64`
//! (relation in the high half; [`pack`]), which sorts the same way. A node owns `cap` slots
//! from `off`; when its lists outgrow them they move to the end of the arena with twice the
//! room (or grow in place when they already are at the end), leaving the old slots dead. The
//! arena is compacted when more than half of it is dead, or less than a third of it holds
//! entries (after many removals), so inserts and removals cost O(degree) amortized and memory
//! stays within a small factor of the live entries. (A move leaves `cap` dead slots behind and
//! takes `2 cap` new ones, so it can never trigger a compaction by itself: no compaction
//! thrash on a hub.)

use crate::graph::Direction;

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

/// Where a node's lists live in the arena: one run of `cap` slots from `off`, its outgoing
/// entries first, then its incoming ones.
#[derive(Clone, Copy, Debug, Default)]
#[repr(align(32))]
struct Span {
    off: u32,
    cap: u32,
    /// Entries of each side (`[out, in]`).
    len: [u32; 2],
    /// Each side's first and last relation (see [`List`]).
    lo: [u32; 2],
    hi: [u32; 2],
}

impl Span {
    /// Entries of both sides.
    #[inline]
    fn total(&self) -> u32 {
        self.len[0] + self.len[1]
    }

    /// Where side `side`'s entries start.
    #[inline]
    fn start(&self, side: usize) -> usize {
        self.off as usize + if side == 0 { 0 } else { self.len[0] as usize }
    }
}

/// The index of a side: 0 for [`Direction::Out`], 1 for [`Direction::In`].
#[inline]
fn side_ix(side: Direction) -> usize {
    debug_assert!(side != Direction::Both, "a list is one side");
    usize::from(side == Direction::In)
}

/// Below this arena size compaction is not worth it.
const COMPACT_MIN: usize = 1 << 12;

/// Every node slot's two neighbour lists (outgoing and incoming edges), kept side by side in
/// one arena: a walk both ways reads one run per node.
#[derive(Clone, Debug, Default)]
pub(crate) struct Lists {
    spans: Vec<Span>,
    /// The arena: each slot's relation and neighbour (always the same length).
    rels: Vec<u32>,
    nodes: Vec<u32>,
    /// Entries in use on each side (sums of span lengths).
    live: [usize; 2],
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

    /// The sorted entries of node `v` on `side` (`Out` or `In`).
    #[inline]
    pub(crate) fn get(&self, v: u32, side: Direction) -> List<'_> {
        let i = side_ix(side);
        match self.spans.get(v as usize) {
            Some(s) => {
                let start = s.start(i);
                let r = start..start + s.len[i] as usize;
                List {
                    rels: &self.rels[r.clone()],
                    nodes: &self.nodes[r],
                    lo: s.lo[i],
                    hi: s.hi[i],
                }
            }
            None => List::default(),
        }
    }

    /// The neighbours of node `v`'s lists in `dir` as one slice (`Both`: the outgoing
    /// entries, then the incoming ones), and how many of the leading ones are outgoing.
    #[inline]
    pub(crate) fn run(&self, v: u32, dir: Direction) -> (&[u32], usize) {
        let Some(s) = self.spans.get(v as usize) else {
            return (&[], 0);
        };
        let (from, n_out) = match dir {
            Direction::In => (s.len[0] as usize, 0),
            _ => (0, s.len[0] as usize),
        };
        let to = match dir {
            Direction::Out => s.len[0],
            _ => s.total(),
        } as usize;
        (
            &self.nodes[s.off as usize + from..s.off as usize + to],
            n_out,
        )
    }

    /// Hints the CPU to load where node `v`'s lists are (its span).
    #[inline]
    pub(crate) fn prefetch_span(&self, v: u32) {
        if let Some(s) = self.spans.get(v as usize) {
            prefetch(s);
        }
    }

    /// Hints the CPU to load the head of node `v`'s `side` list (reads its span: prefetch
    /// that first, some steps earlier).
    #[inline]
    pub(crate) fn prefetch_list(&self, v: u32, side: Direction) {
        if let Some(e) = self
            .spans
            .get(v as usize)
            .and_then(|s| self.nodes.get(s.start(side_ix(side))))
        {
            prefetch(e);
        }
    }

    /// Number of entries of node `v` on `side`.
    #[inline]
    pub(crate) fn len_of(&self, v: u32, side: Direction) -> usize {
        self.spans
            .get(v as usize)
            .map_or(0, |s| s.len[side_ix(side)] as usize)
    }

    /// Entries in use on `side`.
    #[cfg(test)]
    pub(crate) fn live(&self, side: Direction) -> usize {
        self.live[side_ix(side)]
    }

    /// Whether node `v` has entry `e` on `side`.
    pub(crate) fn contains(&self, v: u32, side: Direction, e: u64) -> bool {
        self.get(v, side).search(e).is_ok()
    }

    /// Adds entry `e` to node `v`'s `side` list; false if it was there already.
    pub(crate) fn insert(&mut self, v: u32, side: Direction, e: u64) -> bool {
        let pos = match self.get(v, side).search(e) {
            Ok(_) => return false,
            Err(p) => p,
        };
        let i = side_ix(side);
        let s = self.spans[v as usize];
        if s.total() == s.cap {
            self.grow(v);
        }
        let s = &mut self.spans[v as usize];
        let at = s.start(i) + pos;
        let end = s.off as usize + s.total() as usize;
        s.len[i] += 1;
        for (arena, x) in [(&mut self.rels, rel_of(e)), (&mut self.nodes, node_of(e))] {
            arena.copy_within(at..end, at + 1);
            arena[at] = x;
        }
        self.note_rels(v, i);
        self.live[i] += 1;
        self.maybe_compact();
        true
    }

    /// Removes entry `e` from node `v`'s `side` list; false if it was not there.
    pub(crate) fn remove(&mut self, v: u32, side: Direction, e: u64) -> bool {
        let pos = match self.get(v, side).search(e) {
            Ok(p) => p,
            Err(_) => return false,
        };
        let i = side_ix(side);
        let s = &mut self.spans[v as usize];
        let at = s.start(i) + pos;
        let end = s.off as usize + s.total() as usize;
        s.len[i] -= 1;
        for arena in [&mut self.rels, &mut self.nodes] {
            arena.copy_within(at + 1..end, at);
        }
        self.note_rels(v, i);
        self.live[i] -= 1;
        self.maybe_compact();
        true
    }

    /// Empties node `v`'s lists, giving their room back, and returns the entries they had
    /// (`[out, in]`).
    pub(crate) fn take(&mut self, v: u32) -> [Vec<u64>; 2] {
        let taken = [Direction::Out, Direction::In].map(|d| self.get(v, d).iter().collect());
        if let Some(s) = self.spans.get_mut(v as usize) {
            self.live[0] -= s.len[0] as usize;
            self.live[1] -= s.len[1] as usize;
            self.owned -= s.cap as usize;
            *s = Span::default();
        }
        self.maybe_compact();
        taken
    }

    /// Records the first and last relation of node `v`'s side `i` in its span.
    #[inline]
    fn note_rels(&mut self, v: u32, i: usize) {
        let s = &mut self.spans[v as usize];
        if s.len[i] > 0 {
            let start = s.start(i);
            s.lo[i] = self.rels[start];
            s.hi[i] = self.rels[start + s.len[i] as usize - 1];
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
                arena.extend_from_within(off..off + s.total() as usize);
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
        let live = self.live[0] + self.live[1];
        if self.worth_compacting() && ((len - self.owned) * 2 > len || live * 3 < len) {
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
        let live = self.live[0] + self.live[1];
        let room = live + live / 4;
        let (mut rels, mut nodes) = (Vec::with_capacity(room), Vec::with_capacity(room));
        for s in &mut self.spans {
            let start = nodes.len();
            let r = s.off as usize..s.off as usize + s.total() as usize;
            rels.extend_from_slice(&self.rels[r.clone()]);
            nodes.extend_from_slice(&self.nodes[r]);
            *s = Span {
                off: arena_offset(start),
                cap: s.total(),
                ..*s
            };
        }
        (self.rels, self.nodes) = (rels, nodes);
        self.owned = live;
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

    /// Rebuilds every list from the current entries plus `extra` `(node, side, entry)` in one
    /// pass (counting sort by node and side, then a sort and dedup of each list). `extra` is
    /// iterated twice. Returns the number of entries added on each side (duplicates not
    /// counted).
    pub(crate) fn rebuild_with<I>(&mut self, slots: usize, extra: I) -> [usize; 2]
    where
        I: Iterator<Item = (u32, Direction, u64)> + Clone,
    {
        self.ensure_slots(slots);
        let before = self.live;
        // Bucket 2 v + i holds node v's side i: a node's two buckets are next to each other,
        // as its run keeps them.
        let bucket = |v: u32, side: Direction| 2 * v as usize + side_ix(side);
        let mut starts = vec![0u32; 2 * self.spans.len() + 1];
        for (v, s) in self.spans.iter().enumerate() {
            starts[2 * v + 1] = s.len[0];
            starts[2 * v + 2] = s.len[1];
        }
        for (v, side, _) in extra.clone() {
            starts[bucket(v, side) + 1] += 1;
        }
        let mut total = 0usize;
        for c in starts.iter_mut() {
            total += *c as usize;
            *c = arena_offset(total);
        }
        // starts[b + 1] is now the end of bucket b; fill packed entries by walking each
        // bucket's cursor, then sort each bucket and split it into the two arrays.
        let mut arena = vec![0u64; total];
        let mut cursor: Vec<u32> = Vec::with_capacity(2 * self.spans.len());
        for v in 0..self.spans.len() as u32 {
            for side in [Direction::Out, Direction::In] {
                let b = bucket(v, side);
                let mut c = starts[b] as usize;
                for e in self.get(v, side).iter() {
                    arena[c] = e;
                    c += 1;
                }
                cursor.push(arena_offset(c));
            }
        }
        for (v, side, e) in extra {
            let c = &mut cursor[bucket(v, side)];
            arena[*c as usize] = e;
            *c += 1;
        }
        let mut live = [0usize; 2];
        for v in 0..self.spans.len() {
            let begin = starts[2 * v] as usize;
            let end = starts[2 * v + 2] as usize;
            let mut len = [0u32; 2];
            let mut lo = [0u32; 2];
            let mut hi = [0u32; 2];
            let mut fill = begin;
            for i in 0..2 {
                let (b0, b1) = (starts[2 * v + i] as usize, starts[2 * v + i + 1] as usize);
                let run = &mut arena[b0..b1];
                let n = if run.len() == self.spans[v].len[i] as usize {
                    run.len()
                } else {
                    run.sort_unstable();
                    dedup_sorted(run)
                };
                // The in side moves up behind the out side when duplicates were dropped.
                arena.copy_within(b0..b0 + n, fill);
                let kept = &arena[fill..fill + n];
                (lo[i], hi[i]) = (
                    kept.first().map_or(0, |&e| rel_of(e)),
                    kept.last().map_or(0, |&e| rel_of(e)),
                );
                len[i] = arena_offset(n);
                live[i] += n;
                fill += n;
            }
            self.spans[v] = Span {
                off: arena_offset(begin),
                cap: arena_offset(end - begin),
                len,
                lo,
                hi,
            };
        }
        self.rels = arena.iter().map(|&e| rel_of(e)).collect();
        self.nodes = arena.iter().map(|&e| node_of(e)).collect();
        self.owned = arena.len();
        self.live = live;
        self.maybe_compact();
        [live[0] - before[0], live[1] - before[1]]
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
        let mut live = [0; 2];
        let mut owned: Vec<(usize, usize)> = Vec::new();
        for (v, s) in self.spans.iter().enumerate() {
            assert!(s.total() <= s.cap);
            assert!(s.off as usize + s.cap as usize <= self.nodes.len());
            for (i, side) in [Direction::Out, Direction::In].into_iter().enumerate() {
                let l: Vec<u64> = self.get(v as u32, side).iter().collect();
                assert!(l.windows(2).all(|w| w[0] < w[1]), "list not sorted/unique");
                if let (Some(&first), Some(&last)) = (l.first(), l.last()) {
                    assert_eq!((s.lo[i], s.hi[i]), (rel_of(first), rel_of(last)));
                }
                live[i] += s.len[i] as usize;
            }
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
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    const OUT: Direction = Direction::Out;
    const IN: Direction = Direction::In;

    fn entries(l: &Lists, v: u32, side: Direction) -> Vec<u64> {
        l.get(v, side).iter().collect()
    }

    #[test]
    fn insert_remove_keep_sorted_and_compact() {
        let mut l = Lists::default();
        l.ensure_slots(300);
        for round in 0..20u32 {
            for v in 0..300u32 {
                // Both sides of one node grow together in its run.
                l.insert(v, OUT, pack(round % 3, (v * 7 + round) % 50));
                l.insert(v, IN, pack(round % 2, (v * 3 + round) % 40));
            }
        }
        l.check();
        let ins_before = entries(&l, 9, IN);
        for v in 0..300u32 {
            for n in 0..50 {
                l.remove(v, OUT, pack(1, n));
            }
        }
        l.check();
        assert!(l.get(5, OUT).iter().all(|e| rel_of(e) != 1));
        assert_eq!(
            entries(&l, 9, IN),
            ins_before,
            "the other side is untouched"
        );
        assert!(l.contains(9, IN, ins_before[0]) && !l.contains(9, OUT, pack(1, 0)));
        let [outs, ins] = l.take(7);
        assert!(!outs.is_empty() && !ins.is_empty());
        assert!(l.get(7, OUT).is_empty() && l.get(7, IN).is_empty());
        l.check();
    }

    #[test]
    fn no_compaction_thrash_on_a_hub() {
        // One node holds most entries and is not last in the arena: growing it must not
        // compact on every insert.
        let mut l = Lists::default();
        l.ensure_slots(2);
        for i in 0..100_000 {
            l.insert(1, OUT, pack(0, i));
        }
        for i in 0..200_000 {
            l.insert(0, IN, pack(0, i));
        }
        l.compact();
        let before = l.compactions;
        for i in 200_000..300_000 {
            l.insert(0, IN, pack(0, i));
        }
        assert!(
            l.compactions - before <= 2,
            "{} compactions",
            l.compactions - before
        );
        l.check();
        // Removing most entries compacts.
        for i in 0..250_000 {
            l.remove(0, IN, pack(0, i));
        }
        l.check();
        assert!(l.nodes.len() < 3 * (l.live[0] + l.live[1]) + COMPACT_MIN);
    }

    #[test]
    fn rebuild_merges_and_dedups() {
        let mut l = Lists::default();
        l.ensure_slots(4);
        l.insert(1, OUT, pack(0, 3));
        l.insert(1, IN, pack(0, 9));
        l.insert(2, IN, pack(1, 0));
        let extra = [
            (1u32, OUT, pack(0, 3)),
            (1, OUT, pack(0, 2)),
            (1, IN, pack(0, 8)),
            (3, OUT, pack(2, 2)),
            (3, OUT, pack(2, 2)),
            (3, IN, pack(2, 2)),
            (3, IN, pack(2, 1)),
        ];
        let added = l.rebuild_with(5, extra.iter().copied());
        assert_eq!(added, [2, 3]);
        l.check();
        assert_eq!(entries(&l, 1, OUT), [pack(0, 2), pack(0, 3)]);
        assert_eq!(entries(&l, 1, IN), [pack(0, 8), pack(0, 9)]);
        assert_eq!(entries(&l, 2, IN), [pack(1, 0)]);
        assert!(l.get(2, OUT).is_empty());
        // Node 3's duplicate out entry was dropped and its in side moved up behind it.
        assert_eq!(entries(&l, 3, OUT), [pack(2, 2)]);
        assert_eq!(entries(&l, 3, IN), [pack(2, 1), pack(2, 2)]);
        assert!(l.get(0, OUT).is_empty() && l.get(4, IN).is_empty());
        // Lists keep working after a rebuild.
        l.insert(3, OUT, pack(0, 1));
        l.insert(0, IN, pack(0, 1));
        l.check();
        assert_eq!(entries(&l, 3, OUT), [pack(0, 1), pack(2, 2)]);
        assert_eq!(entries(&l, 3, IN), [pack(2, 1), pack(2, 2)]);
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

    /// Xorshift: small and seeded.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// Checks every list of nodes `0..nodes`, and the ways to read it, against the model.
    fn compare(l: &Lists, m: &BTreeMap<(u32, usize), BTreeSet<u64>>, nodes: u32) {
        l.check();
        for v in 0..nodes {
            let mut all = Vec::new();
            let mut n_out_want = 0;
            for (i, side) in [Direction::Out, Direction::In].into_iter().enumerate() {
                let want: Vec<u64> = m.get(&(v, i)).into_iter().flatten().copied().collect();
                let list = l.get(v, side);
                let got: Vec<u64> = list.iter().collect();
                assert_eq!(got, want, "node {v} side {i}");
                for (j, &e) in want.iter().enumerate() {
                    assert_eq!(list.entry(j), e);
                    assert!(l.contains(v, side, e));
                }
                assert_eq!(l.len_of(v, side), want.len());
                for r in 0..5 {
                    let by_rel: Vec<u64> = list.rel_range(r).iter().collect();
                    let w: Vec<u64> = want.iter().copied().filter(|&e| rel_of(e) == r).collect();
                    assert_eq!(by_rel, w);
                }
                all.extend(want.iter().map(|&e| node_of(e)));
                if i == 0 {
                    n_out_want = want.len();
                }
            }
            let (both, n_out) = l.run(v, Direction::Both);
            assert_eq!((both, n_out), (&all[..], n_out_want));
            let (outs, n) = l.run(v, Direction::Out);
            assert_eq!((outs, n), (&all[..n_out_want], n_out_want));
            let (ins, n) = l.run(v, Direction::In);
            assert_eq!((ins, n), (&all[n_out_want..], 0));
        }
    }

    #[test]
    fn random_operations_on_both_sides_match_a_model() {
        for seed in 1..=8u64 {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (seed * 0x1234_5678_9abc));
            let nodes = 1 + rng.next(60) as u32;
            let span = 1 + rng.next(300) as u32; // neighbour range
            let mut l = Lists::default();
            l.ensure_slots(nodes as usize);
            let mut m: BTreeMap<(u32, usize), BTreeSet<u64>> = BTreeMap::new();
            let sides = [Direction::Out, Direction::In];
            for step in 0..40_000u32 {
                let v = rng.next(nodes as u64) as u32;
                let i = rng.next(2) as usize;
                let e = pack(rng.next(4) as u32, rng.next(span as u64) as u32);
                match rng.next(1000) {
                    0..=599 => {
                        assert_eq!(
                            l.insert(v, sides[i], e),
                            m.entry((v, i)).or_default().insert(e)
                        );
                    }
                    600..=979 => {
                        assert_eq!(
                            l.remove(v, sides[i], e),
                            m.entry((v, i)).or_default().remove(&e)
                        );
                    }
                    980..=989 => {
                        let [o, n] = l.take(v);
                        let mo: Vec<u64> =
                            m.remove(&(v, 0)).unwrap_or_default().into_iter().collect();
                        let mi: Vec<u64> =
                            m.remove(&(v, 1)).unwrap_or_default().into_iter().collect();
                        assert_eq!((o, n), (mo, mi));
                    }
                    990..=995 => {
                        let k = rng.next(400) as usize;
                        let extra: Vec<(u32, Direction, u64)> = (0..k)
                            .map(|_| {
                                let v = rng.next(nodes as u64 + 3) as u32;
                                let i = rng.next(2) as usize;
                                (
                                    v,
                                    sides[i],
                                    pack(rng.next(4) as u32, rng.next(span as u64) as u32),
                                )
                            })
                            .collect();
                        let slots = nodes as usize + 3;
                        let mut added = [0; 2];
                        for &(v, d, e) in &extra {
                            let i = usize::from(d == Direction::In);
                            if m.entry((v, i)).or_default().insert(e) {
                                added[i] += 1;
                            }
                        }
                        assert_eq!(l.rebuild_with(slots, extra.iter().copied()), added);
                    }
                    996..=997 => l.compact(),
                    _ => l.shrink_to_fit(),
                }
                if step % 4000 == 0 {
                    compare(&l, &m, nodes + 3);
                }
            }
            compare(&l, &m, nodes + 3);
        }
    }
}
