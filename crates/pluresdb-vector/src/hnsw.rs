//! The HNSW graph (Malkov & Yashunin): layered proximity graphs searched greedily from the top.
//!
//! Layout is built for the walk: one flat array of fixed-size blocks, one per node, holding its
//! layer-0 links (`[count, n1, n2, ...]`) followed by its vector, so expanding a node and
//! scoring it touch the same memory; upper-layer links are kept per slot. Labels (row ids) map to slots.
//! A delete marks the slot; the next insert reuses it after repairing the links of its old
//! neighbours, so the graph stays connected without a rebuild.

use std::cell::RefCell;
use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, HashSet};

use crate::VectorError;
use crate::blocks::{Blocks, LINE_WORDS};
use crate::distance::{Kernels, Metric, normalize};
use crate::visited::Visited;

/// Highest layer a node may be drawn on.
const MAX_LEVEL: usize = 15;

/// Largest `ef_construction` and `ef_search` accepted: far past where recall stops improving,
/// so a larger value is a mistake (a search never uses more than the stored vectors anyway).
pub const MAX_EF: usize = 100_000;

/// Index parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HnswParams {
    /// Links per node on upper layers (layer 0 keeps twice as many). More links: better recall,
    /// more memory, slower inserts. Default 16.
    pub m: usize,
    /// Candidate list size while inserting, 1 to [`MAX_EF`]. Default 200.
    pub ef_construction: usize,
    /// Candidate list size while searching (raised to `k` when smaller), 1 to [`MAX_EF`].
    /// Default 64.
    pub ef_search: usize,
    /// Seed of the level generator, so builds are reproducible.
    pub seed: u64,
}

impl Default for HnswParams {
    fn default() -> HnswParams {
        HnswParams {
            m: 16,
            ef_construction: 200,
            ef_search: 64,
            seed: 0x5eed_1234_abcd_0001,
        }
    }
}

impl HnswParams {
    pub(crate) fn check(&self) -> Result<(), VectorError> {
        if !(2..=256).contains(&self.m) {
            return Err(VectorError::Invalid(format!(
                "M is {}; use a value from 2 to 256 (16 is a good default)",
                self.m
            )));
        }
        let defaults = HnswParams::default();
        for (name, ef, default) in [
            (
                "ef_construction",
                self.ef_construction,
                defaults.ef_construction,
            ),
            ("ef_search", self.ef_search, defaults.ef_search),
        ] {
            if !(1..=MAX_EF).contains(&ef) {
                return Err(VectorError::Invalid(format!(
                    "{name} is {ef}; use a value from 1 to {MAX_EF} ({default} is a good default)"
                )));
            }
        }
        Ok(())
    }

    /// These parameters with `ef_construction` and `ef_search` brought into 1..=[`MAX_EF`], for
    /// definitions saved before those bounds were checked.
    pub fn clamp_ef(self) -> HnswParams {
        HnswParams {
            ef_construction: self.ef_construction.clamp(1, MAX_EF),
            ef_search: self.ef_search.clamp(1, MAX_EF),
            ..self
        }
    }

    /// Links kept per node on layer 0.
    pub(crate) fn m0(&self) -> usize {
        self.m * 2
    }
}

/// One search result: the label given at insert and the distance to the query (Euclidean, not
/// squared, for L2).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Neighbor {
    /// The label (for tables: the row id).
    pub label: i64,
    /// The distance; smaller is closer.
    pub distance: f32,
}

/// Restricts a search to some labels.
#[derive(Clone, Copy)]
pub enum Filter<'a> {
    /// Only these labels.
    Labels(&'a HashSet<i64>),
    /// Labels for which `keep` is true; `estimate` is the expected number of matches if known
    /// (otherwise the index samples the predicate).
    Predicate {
        /// The predicate.
        keep: &'a dyn Fn(i64) -> bool,
        /// Expected number of matching labels, if known.
        estimate: Option<usize>,
    },
}

impl Filter<'_> {
    #[inline]
    fn keeps(&self, label: i64) -> bool {
        match self {
            Filter::Labels(set) => set.contains(&label),
            Filter::Predicate { keep, .. } => keep(label),
        }
    }
}

/// Something ranked by distance, ties broken by the item (a slot, or a label).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Scored<T> {
    pub(crate) d: f32,
    pub(crate) item: T,
}

impl<T: Ord> Eq for Scored<T> {}

impl<T: Ord> PartialOrd for Scored<T> {
    fn partial_cmp(&self, other: &Scored<T>) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T: Ord> Ord for Scored<T> {
    fn cmp(&self, other: &Scored<T>) -> Ordering {
        self.d.total_cmp(&other.d).then(self.item.cmp(&other.item))
    }
}

/// A graph node (slot) with its distance to the query.
pub(crate) type Cand = Scored<u32>;

thread_local! {
    static SEARCH_VISITED: RefCell<Visited> = RefCell::new(Visited::new(0));
}

/// An HNSW index over `dim`-dimensional f32 vectors, each under an `i64` label.
pub struct Hnsw {
    pub(crate) dim: usize,
    pub(crate) metric: Metric,
    pub(crate) params: HnswParams,
    pub(crate) kernels: Kernels,

    pub(crate) labels: Vec<i64>,
    pub(crate) levels: Vec<u8>,
    /// Layer 0: per slot a block of [`Hnsw::stride0`] words: the link count and the links,
    /// padded to a cache line, then the vector's bits (normalized for cosine), so a vector
    /// starts on a cache line and a distance reads no line more than it needs.
    pub(crate) level0: Blocks,
    /// Upper-layer links of each slot: `level` blocks of stride `m + 1`.
    pub(crate) upper: Vec<Vec<u32>>,
    pub(crate) deleted: Vec<bool>,
    pub(crate) slots: HashMap<i64, u32>,
    /// Deleted slots waiting for reuse.
    pub(crate) free: Vec<u32>,
    pub(crate) entry: Option<u32>,
    pub(crate) max_level: usize,
    pub(crate) rng: u64,
    /// Scratch for inserts.
    pub(crate) build_visited: Visited,
}

impl std::fmt::Debug for Hnsw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hnsw")
            .field("dim", &self.dim)
            .field("metric", &self.metric)
            .field("len", &self.len())
            .field("deleted", &self.free.len())
            .field("params", &self.params)
            .finish()
    }
}

impl Hnsw {
    /// An empty index for `dim`-dimensional vectors.
    pub fn new(dim: usize, metric: Metric, params: HnswParams) -> Result<Hnsw, VectorError> {
        if dim == 0 || dim > 65_536 {
            return Err(VectorError::Invalid(format!(
                "a vector index needs 1 to 65536 dimensions, not {dim}"
            )));
        }
        params.check()?;
        Ok(Hnsw {
            dim,
            metric,
            params,
            kernels: Kernels::detect(),

            labels: Vec::new(),
            levels: Vec::new(),
            level0: Blocks::new(level0_stride(dim, params.m0())),
            upper: Vec::new(),
            deleted: Vec::new(),
            slots: HashMap::new(),
            free: Vec::new(),
            entry: None,
            max_level: 0,
            rng: params.seed | 1,
            build_visited: Visited::new(0),
        })
    }

    /// The vectors' dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The distance metric.
    pub fn metric(&self) -> Metric {
        self.metric
    }

    /// The parameters.
    pub fn params(&self) -> HnswParams {
        self.params
    }

    /// Changes the default search breadth (brought into 1..=[`MAX_EF`]).
    pub fn set_ef_search(&mut self, ef: usize) {
        self.params.ef_search = ef.clamp(1, MAX_EF);
    }

    /// Number of live (not deleted) vectors.
    pub fn len(&self) -> usize {
        self.labels.len() - self.free.len()
    }

    /// True when no live vectors are stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of deleted slots kept for reuse.
    pub fn deleted_count(&self) -> usize {
        self.free.len()
    }

    /// True when `label` is stored.
    pub fn contains(&self, label: i64) -> bool {
        self.slots.contains_key(&label)
    }

    /// The stored (for cosine: normalized) vector of `label`.
    pub fn vector(&self, label: i64) -> Option<&[f32]> {
        self.slots.get(&label).map(|&s| self.vec_of(s))
    }

    /// Live labels, in slot order.
    pub fn labels(&self) -> impl Iterator<Item = i64> + '_ {
        self.labels
            .iter()
            .zip(&self.deleted)
            .filter(|(_, d)| !**d)
            .map(|(l, _)| *l)
    }

    /// Approximate heap memory used, in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.level0.memory_bytes()
            + self.labels.capacity() * 8
            + self.levels.capacity()
            + self
                .upper
                .iter()
                .map(|u| u.capacity() * 4 + 24)
                .sum::<usize>()
            + self.deleted.capacity()
            + self.slots.capacity() * 16
            + self.free.capacity() * 4
    }

    /// Checks a vector against the index (dimension, finite components, non-zero for cosine)
    /// and returns the form that is stored and compared.
    pub fn prepare(&self, v: &[f32]) -> Result<Vec<f32>, VectorError> {
        if v.len() != self.dim {
            return Err(VectorError::Dimension {
                expected: self.dim,
                got: v.len(),
            });
        }
        if let Some(index) = v.iter().position(|x| !x.is_finite()) {
            return Err(VectorError::NotFinite { index });
        }
        let mut v = v.to_vec();
        if self.metric == Metric::Cosine {
            normalize(&mut v)?;
        }
        Ok(v)
    }

    /// Words per layer-0 block (whole cache lines).
    #[inline]
    pub(crate) fn stride0(&self) -> usize {
        self.level0.stride()
    }

    /// Where the vector starts in a layer-0 block: after the count and links, on a line.
    #[inline]
    pub(crate) fn vector_at0(&self) -> usize {
        vector_offset(self.params.m0())
    }

    #[inline]
    pub(crate) fn vec_of(&self, slot: u32) -> &[f32] {
        let at = self.vector_at0();
        as_f32(&self.level0.block(slot)[at..at + self.dim])
    }

    /// Stores `v` as the vector of `slot`.
    pub(crate) fn write_vector(&mut self, slot: u32, v: &[f32]) {
        let (at, dim) = (self.vector_at0(), self.dim);
        for (w, x) in self.level0.block_mut(slot)[at..at + dim].iter_mut().zip(v) {
            *w = x.to_bits();
        }
    }

    #[inline]
    fn dist(&self, q: &[f32], slot: u32) -> f32 {
        self.kernels.distance(self.metric, q, self.vec_of(slot))
    }

    #[inline]
    fn dist_slots(&self, a: u32, b: u32) -> f32 {
        self.kernels
            .distance(self.metric, self.vec_of(a), self.vec_of(b))
    }

    /// Distance as reported to users: the root for L2.
    fn reported(&self, d: f32) -> f32 {
        match self.metric {
            Metric::L2 => d.max(0.0).sqrt(),
            _ => d,
        }
    }

    #[inline]
    pub(crate) fn links(&self, slot: u32, layer: usize) -> &[u32] {
        if layer == 0 {
            let block = self.level0.block(slot);
            &block[1..1 + block[0] as usize]
        } else {
            let stride = self.params.m + 1;
            let block = &self.upper[slot as usize][(layer - 1) * stride..layer * stride];
            &block[1..1 + block[0] as usize]
        }
    }

    fn set_links(&mut self, slot: u32, layer: usize, links: &[u32]) {
        let (block, cap) = if layer == 0 {
            let m0 = self.params.m0();
            (&mut self.level0.block_mut(slot)[..1 + m0], m0)
        } else {
            let stride = self.params.m + 1;
            (
                &mut self.upper[slot as usize][(layer - 1) * stride..layer * stride],
                stride - 1,
            )
        };
        debug_assert!(links.len() <= cap);
        let n = links.len().min(cap);
        block[0] = n as u32;
        block[1..1 + n].copy_from_slice(&links[..n]);
    }

    fn cap(&self, layer: usize) -> usize {
        if layer == 0 {
            self.params.m0()
        } else {
            self.params.m
        }
    }

    fn random_level(&mut self) -> usize {
        // xorshift64*
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11;
        let u = (r as f64 + 1.0) / (1u64 << 53) as f64;
        let ml = 1.0 / (self.params.m as f64).ln();
        ((-u.ln() * ml) as usize).min(MAX_LEVEL)
    }

    /// Inserts `v` under `label`, or replaces the vector already stored under it.
    pub fn insert(&mut self, label: i64, v: &[f32]) -> Result<(), VectorError> {
        let v = self.prepare(v)?;
        self.insert_prepared(label, &v);
        Ok(())
    }

    /// Inserts an already prepared vector (see [`Hnsw::prepare`]).
    pub(crate) fn insert_prepared(&mut self, label: i64, v: &[f32]) {
        if self.slots.contains_key(&label) {
            self.remove(label);
        }
        let (slot, level) = match self.free.pop() {
            // A reused slot keeps its level: stale links from other nodes may still point at it
            // on any of its layers.
            Some(slot) => {
                self.repair_around(slot);
                self.deleted[slot as usize] = false;
                self.labels[slot as usize] = label;
                self.write_vector(slot, v);
                (slot, self.levels[slot as usize] as usize)
            }
            None => {
                let level = self.random_level();
                let slot = self.level0.push_zeroed();
                debug_assert_eq!(self.level0.len(), self.labels.len() + 1);
                self.labels.push(label);
                self.deleted.push(false);
                self.levels.push(0);
                self.write_vector(slot, v);
                self.upper.push(Vec::new());
                (slot, level)
            }
        };
        self.levels[slot as usize] = level as u8;
        self.level0.block_mut(slot)[0] = 0;
        self.upper[slot as usize] = vec![0; level * (self.params.m + 1)];
        self.slots.insert(label, slot);
        self.link(slot, level);
    }

    /// Connects a freshly stored slot into the graph.
    fn link(&mut self, slot: u32, level: usize) {
        let Some(entry) = self.entry.filter(|&e| e != slot) else {
            self.entry = Some(slot);
            self.max_level = level;
            return;
        };
        let q = self.vec_of(slot).to_vec();
        let mut cur = Cand {
            d: self.dist(&q, entry),
            item: entry,
        };
        for layer in (level + 1..=self.max_level).rev() {
            cur = self.greedy(&q, cur, layer);
        }
        let mut eps = vec![cur];
        for layer in (0..=level.min(self.max_level)).rev() {
            let mut visited = std::mem::replace(&mut self.build_visited, Visited::new(0));
            let found = self.search_layer(
                &q,
                &eps,
                self.params.ef_construction,
                layer,
                &mut visited,
                Some(slot),
            );
            self.build_visited = visited;
            let mut found = found.into_sorted_vec();
            let chosen = self.select(&mut found, self.params.m);
            let links: Vec<u32> = chosen.iter().map(|c| c.item).collect();
            self.set_links(slot, layer, &links);
            for c in &chosen {
                self.add_link(c.item, slot, c.d, layer);
            }
            if let Some(&nearest) = found.first() {
                eps = vec![nearest];
            }
        }
        if level > self.max_level {
            self.max_level = level;
            self.entry = Some(slot);
        }
    }

    /// Adds `new` to `at`'s links on `layer`, pruning with the heuristic when full.
    fn add_link(&mut self, at: u32, new: u32, d: f32, layer: usize) {
        let cap = self.cap(layer);
        let current = self.links(at, layer);
        if current.contains(&new) {
            return;
        }
        if current.len() < cap {
            let mut links = current.to_vec();
            links.push(new);
            self.set_links(at, layer, &links);
            return;
        }
        let mut cands: Vec<Cand> = current
            .iter()
            .map(|&s| Cand {
                d: self.dist_slots(at, s),
                item: s,
            })
            .collect();
        cands.push(Cand { d, item: new });
        cands.sort_unstable();
        let chosen = self.select(&mut cands, cap);
        let links: Vec<u32> = chosen.iter().map(|c| c.item).collect();
        self.set_links(at, layer, &links);
    }

    /// The neighbour selection heuristic: walk candidates nearest first and keep one only if it
    /// is closer to the base than to every candidate kept so far. `cands` must be sorted.
    fn select(&self, cands: &mut [Cand], m: usize) -> Vec<Cand> {
        // Fewer than m: all kept. Exactly m are still pruned, as in hnswlib.
        if cands.len() < m {
            return cands.to_vec();
        }
        let mut kept: Vec<Cand> = Vec::with_capacity(m);
        for &c in cands.iter() {
            if kept.len() >= m {
                break;
            }
            if kept.iter().all(|k| self.dist_slots(c.item, k.item) >= c.d) {
                kept.push(c);
            }
        }
        kept
    }

    /// Before a deleted slot is reused, gives each of its old neighbours that linked back to it
    /// a replacement chosen from the slot's own neighbours.
    fn repair_around(&mut self, slot: u32) {
        let level = self.levels[slot as usize] as usize;
        for layer in 0..=level {
            let old: Vec<u32> = self.links(slot, layer).to_vec();
            for &n in &old {
                if n == slot || !self.links(n, layer).contains(&slot) {
                    continue;
                }
                let mut cands: Vec<Cand> = Vec::with_capacity(old.len() + self.cap(layer));
                for &c in self.links(n, layer).iter().chain(&old) {
                    if c != slot && c != n && !cands.iter().any(|x| x.item == c) {
                        cands.push(Cand {
                            d: self.dist_slots(n, c),
                            item: c,
                        });
                    }
                }
                cands.sort_unstable();
                let chosen = self.select(&mut cands, self.cap(layer));
                let links: Vec<u32> = chosen.iter().map(|c| c.item).collect();
                self.set_links(n, layer, &links);
            }
        }
        if self.entry == Some(slot) {
            self.pick_new_entry(slot);
        }
    }

    /// Chooses the highest live node other than `not` as the entry point.
    fn pick_new_entry(&mut self, not: u32) {
        let best = (0..self.labels.len() as u32)
            .filter(|&s| s != not && !self.deleted[s as usize])
            .max_by_key(|&s| self.levels[s as usize]);
        self.entry = best;
        self.max_level = best.map_or(0, |s| self.levels[s as usize] as usize);
    }

    /// Removes `label`; returns false if it was not stored. The slot stays in the graph for
    /// routing until an insert reuses it.
    pub fn remove(&mut self, label: i64) -> bool {
        let Some(slot) = self.slots.remove(&label) else {
            return false;
        };
        self.deleted[slot as usize] = true;
        self.free.push(slot);
        if self.is_empty() {
            self.clear();
        }
        true
    }

    /// Removes everything (keeping the parameters).
    pub fn clear(&mut self) {
        let fresh = Hnsw::new(self.dim, self.metric, self.params).expect("parameters were checked");
        *self = fresh;
    }

    /// Greedy descent on one upper layer.
    fn greedy(&self, q: &[f32], mut cur: Cand, layer: usize) -> Cand {
        loop {
            let mut changed = false;
            for &n in self.links(cur.item, layer) {
                let d = self.dist(q, n);
                if d < cur.d {
                    cur = Cand { d, item: n };
                    changed = true;
                }
            }
            if !changed {
                return cur;
            }
        }
    }

    /// Beam search on one layer for inserts: returns up to `ef` nearest slots (deleted ones
    /// included, they still route), never `skip`.
    fn search_layer(
        &self,
        q: &[f32],
        eps: &[Cand],
        ef: usize,
        layer: usize,
        visited: &mut Visited,
        skip: Option<u32>,
    ) -> BinaryHeap<Cand> {
        // A layer holds at most every slot, so a wider beam changes nothing.
        let ef = ef.clamp(1, self.labels.len().max(1));
        visited.reset(self.labels.len());
        let mut cands: BinaryHeap<Reverse<Cand>> =
            BinaryHeap::with_capacity(ef.saturating_mul(2).min(self.labels.len()));
        let mut top: BinaryHeap<Cand> = BinaryHeap::with_capacity(ef + 1);
        if let Some(s) = skip {
            visited.insert(s);
        }
        for &e in eps {
            if visited.insert(e.item) {
                cands.push(Reverse(e));
                top.push(e);
            }
        }
        while top.len() > ef {
            top.pop();
        }
        while let Some(Reverse(c)) = cands.pop() {
            if top.len() >= ef && top.peek().is_some_and(|t| c.d > t.d) {
                break;
            }
            for &n in self.links(c.item, layer) {
                if !visited.insert(n) {
                    continue;
                }
                let d = self.dist(q, n);
                if top.len() < ef || top.peek().is_some_and(|t| d < t.d) {
                    cands.push(Reverse(Cand { d, item: n }));
                    top.push(Cand { d, item: n });
                    if top.len() > ef {
                        top.pop();
                    }
                }
            }
        }
        top
    }

    /// The `k` nearest live vectors to `query`, searching with breadth `ef` (default:
    /// the index's `ef_search`, raised to `k`), optionally restricted by `filter`. `k` and `ef`
    /// past the number of live vectors mean all of them.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: Option<usize>,
        filter: Option<Filter<'_>>,
    ) -> Result<Vec<Neighbor>, VectorError> {
        if k == 0 {
            return Err(VectorError::Invalid("k must be at least 1".into()));
        }
        if ef == Some(0) {
            return Err(VectorError::Invalid("ef must be at least 1".into()));
        }
        let q = self.prepare(query)?;
        let live = self.len();
        if live == 0 {
            return Ok(Vec::new());
        }
        let k = k.min(live);
        let ef = ef.unwrap_or(self.params.ef_search).clamp(k, live);
        if let Some(filter) = filter {
            let matches = self.estimate_matches(&filter);
            if matches == 0 {
                return Ok(Vec::new());
            }
            // A filtered walk visits about ef / selectivity nodes with m0 distances each; an exact
            // scan computes one distance per match. Choose the cheaper.
            let selectivity = matches as f64 / live as f64;
            let walk_cost = ef as f64 * self.params.m0() as f64 / selectivity;
            if matches as f64 <= walk_cost || k * 2 >= matches {
                return Ok(self.exact(&q, k, Some(filter)));
            }
            return Ok(self.walk(&q, k, ef, Some(filter)));
        }
        if k * 2 >= live {
            return Ok(self.exact(&q, k, None));
        }
        Ok(self.walk(&q, k, ef, None))
    }

    fn estimate_matches(&self, filter: &Filter<'_>) -> usize {
        match filter {
            Filter::Labels(set) => set.len().min(self.len()),
            Filter::Predicate {
                estimate: Some(n), ..
            } => (*n).min(self.len()),
            Filter::Predicate {
                keep,
                estimate: None,
            } => {
                let n = self.labels.len();
                let samples = n.min(256);
                let step = (n / samples).max(1);
                let (mut seen, mut kept) = (0usize, 0usize);
                for s in (0..n).step_by(step).take(samples) {
                    if !self.deleted[s] {
                        seen += 1;
                        kept += keep(self.labels[s]) as usize;
                    }
                }
                if seen == 0 {
                    return self.len();
                }
                // Never estimate zero from a sample: a few matches may hide between samples.
                ((kept as f64 / seen as f64 * self.len() as f64).ceil() as usize).max(1)
            }
        }
    }

    /// Exact search: the true `k` nearest (among the filter's labels), by scanning.
    pub fn exact_search(
        &self,
        query: &[f32],
        k: usize,
        filter: Option<Filter<'_>>,
    ) -> Result<Vec<Neighbor>, VectorError> {
        if k == 0 {
            return Err(VectorError::Invalid("k must be at least 1".into()));
        }
        let q = self.prepare(query)?;
        Ok(self.exact(&q, k.min(self.len()), filter))
    }

    fn exact(&self, q: &[f32], k: usize, filter: Option<Filter<'_>>) -> Vec<Neighbor> {
        let mut top: BinaryHeap<Cand> = BinaryHeap::with_capacity(k + 1);
        let mut offer = |slot: u32| {
            let d = self.dist(q, slot);
            if top.len() < k {
                top.push(Cand { d, item: slot });
            } else if top.peek().is_some_and(|t| d < t.d) {
                top.pop();
                top.push(Cand { d, item: slot });
            }
        };
        match filter {
            Some(Filter::Labels(set)) if set.len() < self.len() => {
                for label in set {
                    if let Some(&slot) = self.slots.get(label) {
                        offer(slot);
                    }
                }
            }
            _ => {
                for slot in 0..self.labels.len() as u32 {
                    if !self.deleted[slot as usize]
                        && filter
                            .as_ref()
                            .is_none_or(|f| f.keeps(self.labels[slot as usize]))
                    {
                        offer(slot);
                    }
                }
            }
        }
        self.finish(top)
    }

    fn finish(&self, top: BinaryHeap<Cand>) -> Vec<Neighbor> {
        top.into_sorted_vec()
            .into_iter()
            .map(|c| Neighbor {
                label: self.labels[c.item as usize],
                distance: self.reported(c.d),
            })
            .collect()
    }

    /// The graph walk: descend the upper layers greedily, then a beam search on layer 0 where
    /// deleted and filtered-out nodes route but are not returned.
    fn walk(&self, q: &[f32], k: usize, ef: usize, filter: Option<Filter<'_>>) -> Vec<Neighbor> {
        let Some(entry) = self.entry else {
            return Vec::new();
        };
        let mut cur = Cand {
            d: self.dist(q, entry),
            item: entry,
        };
        for layer in (1..=self.max_level).rev() {
            cur = self.greedy(q, cur, layer);
        }
        // Deleted slots wait in `free` until reused, so with none waiting nothing is deleted
        // and the walk need not look the flags up.
        let any_deleted = !self.free.is_empty();
        let accept = |slot: u32| -> bool {
            !(any_deleted && self.deleted[slot as usize])
                && filter
                    .as_ref()
                    .is_none_or(|f| f.keeps(self.labels[slot as usize]))
        };
        let exact_graph = filter.is_none() && !any_deleted;
        SEARCH_VISITED.with(|v| {
            let mut visited = v.borrow_mut();
            visited.reset(self.labels.len());
            let mut cands: BinaryHeap<Reverse<Cand>> =
                BinaryHeap::with_capacity(ef.saturating_mul(4).min(self.labels.len()));
            let mut top: BinaryHeap<Cand> = BinaryHeap::with_capacity(ef + 1);
            visited.insert(cur.item);
            cands.push(Reverse(cur));
            if accept(cur.item) {
                top.push(cur);
            }
            let mut bound = if top.len() >= ef {
                cur.d
            } else {
                f32::INFINITY
            };
            let vector_at = self.vector_at0();
            let l0 = &self.level0;
            while let Some(Reverse(c)) = cands.pop() {
                if c.d > bound && (top.len() >= ef || exact_graph) {
                    break;
                }
                let block = l0.block(c.item);
                let links = &block[1..1 + block[0] as usize];
                if let Some(&first) = links.first() {
                    prefetch(l0.ptr(first).wrapping_add(vector_at));
                }
                for (i, &nb) in links.iter().enumerate() {
                    if let Some(&next) = links.get(i + 1) {
                        prefetch(l0.ptr(next).wrapping_add(vector_at));
                        visited.prefetch(next);
                    }
                    if !visited.insert(nb) {
                        continue;
                    }
                    let d = self.dist(q, nb);
                    if top.len() < ef || d < bound {
                        cands.push(Reverse(Cand { d, item: nb }));
                        if accept(nb) {
                            top.push(Cand { d, item: nb });
                            if top.len() > ef {
                                top.pop();
                            }
                            if top.len() >= ef {
                                bound = top.peek().map_or(f32::INFINITY, |t| t.d);
                            }
                        }
                    }
                }
                // The next node to expand: fetch its links while the heap is sorted out.
                if let Some(Reverse(next)) = cands.peek() {
                    prefetch(l0.ptr(next.item));
                }
            }
            while top.len() > k {
                top.pop();
            }
            self.finish(top)
        })
    }
}

/// Words per layer-0 block for vectors of `dim` with up to `m0` links.
pub(crate) fn level0_stride(dim: usize, m0: usize) -> usize {
    vector_offset(m0) + dim.next_multiple_of(LINE_WORDS)
}

/// Where the vector starts in a layer-0 block: after the count and `m0` links, on a line.
#[inline]
fn vector_offset(m0: usize) -> usize {
    (1 + m0).next_multiple_of(LINE_WORDS)
}

/// Views vector words as floats.
#[inline]
fn as_f32(words: &[u32]) -> &[f32] {
    // SAFETY: u32 and f32 have the same size and alignment, and every bit pattern is a valid
    // f32; the slice covers exactly the same memory.
    unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<f32>(), words.len()) }
}

/// Hints the CPU to fetch the cache line at `p`; a no-op elsewhere.
#[inline(always)]
pub(crate) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching never faults, whatever the address.
    #[allow(unused_unsafe)]
    unsafe {
        std::arch::x86_64::_mm_prefetch(p.cast::<i8>(), std::arch::x86_64::_MM_HINT_T0);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests;
