//! Breadth-first search one level at a time, each level expanded top-down or bottom-up,
//! whichever should read fewer edges (direction-optimizing BFS, Beamer, Asanović and
//! Patterson, SC 2012).
//!
//! Top-down follows every edge out of the frontier. Bottom-up instead asks each node not yet
//! reached whether one of its edges (read the other way) comes from the frontier, and stops
//! at the first that does. When the frontier is a large part of the graph, most of its edges
//! lead to nodes already reached, and bottom-up reads far fewer edges: a 3-hop walk both ways
//! on a power-law graph reaches most nodes on its last level.

use std::ops::ControlFlow;

use crate::graph::{Direction, Graph, NodeIx, RelFilter, RelIx};
use crate::lists::{List, node_of, pack, prefetch, rel_of};
use crate::visited::Bits;

/// Levels larger than this are expanded in node order, with lists prefetched, and may go
/// bottom-up.
const LARGE_LEVEL: usize = 64;

/// Levels of at least 1/this of the graph's node slots are put in node order through the
/// frontier bits instead of sorted (and are then marked there for bottom-up).
const BITS_ORDER_AT: usize = 32;

/// Bottom-up is chosen when the frontier's edges times this exceed the edges of the nodes
/// not yet reached plus their number (a bottom-up level looks at every node slot not yet
/// reached, edges or not; the paper's alpha is 14). Lower here: each node's first read (its
/// span, then its run) waits on memory, so a bottom-up check costs more than in the paper's
/// compact arrays. 4 measured best on the benchmark's power-law graph (3-hop both ways: p50
/// and p99 both lower than with 2, 8 or 14, and than top-down only; measured again with both
/// directions in one run per node, 2 to 16: 4 still gave the lowest p50).
const ALPHA: usize = 4;

#[cfg(test)]
thread_local! {
    /// Makes every level go bottom-up (`Some(true)`) or top-down (`Some(false)`), so tests
    /// check both on small graphs.
    pub(crate) static FORCE_BOTTOM_UP: std::cell::Cell<Option<bool>> =
        const { std::cell::Cell::new(None) };
    /// How many levels went bottom-up on this thread.
    pub(crate) static BOTTOM_UP_LEVELS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// What a search keeps per frontier node: the node, and what the caller adds to it (for a
/// traversal, where it recorded the node).
pub(crate) trait Item: Ord + Copy {
    /// What the item holds besides its node (kept per node for bottom-up levels).
    type Extra: Copy + Default;
    /// The node.
    fn node(self) -> NodeIx;
    /// What the item holds besides its node.
    fn extra(self) -> Self::Extra;
    /// The item of node `v` with `extra`.
    fn with(v: NodeIx, extra: Self::Extra) -> Self;
}

impl Item for NodeIx {
    type Extra = ();

    #[inline]
    fn node(self) -> NodeIx {
        self
    }

    #[inline]
    fn extra(self) {}

    #[inline]
    fn with(v: NodeIx, (): ()) -> Self {
        v
    }
}

impl Item for (NodeIx, u32) {
    type Extra = u32;

    #[inline]
    fn node(self) -> NodeIx {
        self.0
    }

    #[inline]
    fn extra(self) -> u32 {
        self.1
    }

    #[inline]
    fn with(v: NodeIx, extra: u32) -> Self {
        (v, extra)
    }
}

/// One breadth-first search over `graph` by `dir` and `rels`: which nodes it has reached, and
/// what it needs to pick each level's direction. `T` is what the caller keeps per frontier
/// node (the node, or the node and where it was recorded).
pub(crate) struct Bfs<'g, T: Item> {
    graph: &'g Graph,
    dir: Direction,
    rels: &'g RelFilter,
    /// The relations to follow, or `None` when that is every relation with edges (then no
    /// walk needs to look at relations).
    only: Option<&'g [RelIx]>,
    seen: Bits,
    /// Edges (read the other way) of the nodes not yet reached, over-estimated: the edges
    /// bottom-up may have to read.
    unexplored: usize,
    /// Whether the level being expanded goes bottom-up.
    bottom_up: bool,
    /// The frontier as bits, and each frontier node's item's extra, for bottom-up levels.
    frontier: Option<(Bits, Vec<T::Extra>)>,
    /// Nodes reached so far.
    reached: usize,
}

impl<'g, T: Item> Bfs<'g, T> {
    /// A search that has reached nothing yet.
    pub(crate) fn new(graph: &'g Graph, dir: Direction, rels: &'g RelFilter) -> Self {
        let sides = usize::from(dir.has_out()) + usize::from(dir.has_in());
        Bfs {
            graph,
            dir,
            rels,
            only: graph.rels_to_check(rels),
            seen: Bits::new(graph.node_bound()),
            unexplored: match rels.relations() {
                None => graph.edge_count(),
                Some(rs) => rs.iter().map(|&r| graph.rel_edge_count(r)).sum(),
            } * sides,
            bottom_up: false,
            frontier: None,
            reached: 0,
        }
    }

    /// Marks `v` reached (a start); false if it was already.
    pub(crate) fn reach(&mut self, v: NodeIx) -> bool {
        let fresh = self.seen.insert(v);
        self.reached += usize::from(fresh);
        fresh
    }

    /// Readies `level` (the next level's frontier) for [`Bfs::expand`] and chooses how to
    /// expand it; returns how many nodes it can reach at most. `level` may be reordered.
    pub(crate) fn plan(&mut self, level: &mut [T]) -> usize {
        let g = self.graph;
        let large = level.len() > LARGE_LEVEL;
        // In node order, each list's span and head are read front to back. A level of many
        // of the graph's nodes is put in order through the frontier bits (which a bottom-up
        // level needs anyway) in less time than a sort takes.
        if self.ordered_by_bits(level) {
            self.mark_frontier(level);
            let (bits, extras) = self.frontier.as_ref().expect("just marked");
            debug_assert_eq!(
                bits.iter().count(),
                level.len(),
                "a level holds a node twice"
            );
            for (slot, v) in level.iter_mut().zip(bits.iter()) {
                *slot = T::with(v, extras[v as usize]);
            }
        } else if large {
            level.sort_unstable();
        }
        let back = self.dir.reverse();
        let every = self.only.is_none();
        let degree = |v, dir| {
            if every {
                g.list_len(v, dir)
            } else {
                g.degree(v, dir, self.rels)
            }
        };
        let (mut ahead, mut behind) = (0, 0);
        for i in 0..level.len() {
            if large {
                prefetch_lists(g, level.get(i + 16).map(|&t| t.node()), self.dir, false);
            }
            ahead += degree(level[i].node(), self.dir);
            behind += degree(level[i].node(), back);
        }
        self.unexplored = self.unexplored.saturating_sub(behind);
        let unvisited = g.node_bound() - self.reached;
        self.bottom_up = large && ahead.saturating_mul(ALPHA) > self.unexplored + unvisited;
        #[cfg(test)]
        if let Some(force) = FORCE_BOTTOM_UP.get() {
            self.bottom_up = force && !level.is_empty();
        }
        ahead.min(g.node_bound())
    }

    /// Whether `plan` puts `level` in order through the frontier bits (and so marks it there).
    fn ordered_by_bits(&self, level: &[T]) -> bool {
        level.len() >= self.graph.node_bound() / BITS_ORDER_AT
    }

    /// Marks a level's nodes in the frontier bits and keeps their items' extras; `level`
    /// holds each node at most once.
    fn mark_frontier(&mut self, level: &[T]) {
        let n = self.graph.node_bound();
        let (bits, extras) = self
            .frontier
            .get_or_insert_with(|| (Bits::new(n), vec![T::Extra::default(); n]));
        bits.clear();
        for &t in level {
            bits.insert(t.node());
            extras[t.node() as usize] = t.extra();
        }
    }

    /// Expands a level readied by [`Bfs::plan`]: calls `visit(item, entry, side)` once for
    /// each node not reached before that an edge from a node of `level` leads to, with the
    /// frontier node's item, the edge as that node's list holds it (`entry`'s node is the new
    /// node) and which of its lists that is, until `visit` breaks. Each new node is marked
    /// reached before `visit`.
    pub(crate) fn expand<B>(
        &mut self,
        level: &[T],
        visit: impl FnMut(T, u64, Direction) -> ControlFlow<B>,
    ) -> ControlFlow<B> {
        if self.bottom_up {
            #[cfg(test)]
            BOTTOM_UP_LEVELS.set(BOTTOM_UP_LEVELS.get() + 1);
            self.bottom_up(level, visit)
        } else {
            self.top_down(level, visit)
        }
    }

    /// Follows every edge out of the level's nodes. A large level is in node order, so the
    /// walk reads the arena (laid out in node order) front to back, and the lists of the node
    /// 8 places ahead (the spans of the one 16 ahead) are prefetched, so it waits less for
    /// each list to arrive from memory; and it marks the neighbours of a list [`NEW_CHUNK`]
    /// at a time without a branch each, then visits the new ones among them (whether a
    /// neighbour is new is a coin toss on a large level, and a mispredicted branch per edge
    /// cost more than the rest of the walk: 3 hops both ways on the bare adjacency of the
    /// benchmark graph went from 1.24-1.33 to 0.92-0.98 ms p50; reading before marking, see
    /// [`Bits::insert_each`], took it from 1.29-1.34 to 1.10-1.20 ms on a slower machine).
    /// Small levels, mostly of short lists, keep the branch.
    fn top_down<B>(
        &mut self,
        level: &[T],
        visit: impl FnMut(T, u64, Direction) -> ControlFlow<B>,
    ) -> ControlFlow<B> {
        if level.len() > LARGE_LEVEL {
            self.top_down_as::<true, B>(level, visit)
        } else {
            self.top_down_as::<false, B>(level, visit)
        }
    }

    /// [`Bfs::top_down`] of a large level (`LARGE`) or a small one.
    fn top_down_as<const LARGE: bool, B>(
        &mut self,
        level: &[T],
        mut visit: impl FnMut(T, u64, Direction) -> ControlFlow<B>,
    ) -> ControlFlow<B> {
        let (g, dir) = (self.graph, self.dir);
        let (seen, rels) = (&mut self.seen, self.only);
        let mut reached = 0;
        // Follows one run of a list (all of it, or one relation's part).
        let mut new = [0u8; NEW_CHUNK];
        let mut run = |list: List<'_>, item: T, side: Direction| {
            let nodes = list.nodes();
            if !LARGE {
                for (j, &u) in nodes.iter().enumerate() {
                    if seen.insert(u) {
                        reached += 1;
                        visit(item, list.entry(j), side)?;
                    }
                }
                return ControlFlow::Continue(());
            }
            for (c, chunk) in nodes.chunks(NEW_CHUNK).enumerate() {
                let n = seen.insert_each(chunk, &mut new);
                reached += n;
                for &j in &new[..n] {
                    visit(item, list.entry(c * NEW_CHUNK + j as usize), side)?;
                }
            }
            ControlFlow::Continue(())
        };
        let mut walk = || {
            for i in 0..level.len() {
                if LARGE {
                    prefetch_lists(g, level.get(i + 8).map(|&t| t.node()), dir, true);
                    prefetch_lists(g, level.get(i + 16).map(|&t| t.node()), dir, false);
                }
                let item = level[i];
                for side in sides(dir) {
                    let list = g.lists.get(item.node(), side);
                    match rels {
                        None => run(list, item, side)?,
                        Some(rels) => {
                            for &r in rels {
                                run(list.rel_range(r), item, side)?;
                            }
                        }
                    }
                }
            }
            ControlFlow::Continue(())
        };
        let flow = walk();
        self.reached += reached;
        flow
    }

    /// Looks, for each node not reached yet (in node order), for an edge from the level, and
    /// stops at the first.
    fn bottom_up<B>(
        &mut self,
        level: &[T],
        mut visit: impl FnMut(T, u64, Direction) -> ControlFlow<B>,
    ) -> ControlFlow<B> {
        let g = self.graph;
        let n = g.node_bound();
        if !self.ordered_by_bits(level) {
            // Else `plan` marked them.
            self.mark_frontier(level);
        }
        let (bits, extras) = self.frontier.as_ref().expect("marked");
        let back = self.dir.reverse();
        let rels = self.only;
        // Hits wait here until their parent's item has been fetched from memory.
        let mut hits = [(0, 0, Direction::Out); HIT_BATCH];
        let mut held = 0;
        for w in 0..n.div_ceil(64) {
            let mut free = self.seen.unset_in_word(w, n);
            while free != 0 {
                let v = (w * 64) as NodeIx + free.trailing_zeros();
                free &= free - 1;
                prefetch_lists(g, Some(v + 16).filter(|&p| (p as usize) < n), back, true);
                let found = match rels {
                    // Every edge counts: one scan of the node's run, both sides at once.
                    None => {
                        let (nodes, n_out) = g.lists.run(v, back);
                        nodes.iter().position(|&u| bits.contains(u)).map(|j| {
                            // The entry as its side's list holds it (which knows its
                            // relation without reading it when it has only one).
                            let (side, i) = if j < n_out {
                                (Direction::Out, j)
                            } else {
                                (Direction::In, j - n_out)
                            };
                            (g.lists.get(v, side).entry(i), side)
                        })
                    }
                    Some(rs) => sides(back).find_map(|side| {
                        first_in(g.lists.get(v, side), rs, bits).map(|e| (e, side))
                    }),
                };
                if let Some((e, side)) = found {
                    self.seen.insert(v);
                    self.reached += 1;
                    prefetch(extras.as_ptr().wrapping_add(node_of(e) as usize));
                    hits[held] = (v, e, side);
                    held += 1;
                    if held == HIT_BATCH {
                        visit_hits(&hits, extras, &mut visit)?;
                        held = 0;
                    }
                }
            }
        }
        visit_hits(&hits[..held], extras, &mut visit)
    }
}

/// Neighbours marked per step of a top-down walk before the new ones among them are visited.
const NEW_CHUNK: usize = 64;

/// How many bottom-up hits are held while their parents' items load.
const HIT_BATCH: usize = 16;

/// Visits bottom-up hits `(node, entry from the node to its parent, side of the node's
/// list)`, in order, from their parents' items.
#[inline]
fn visit_hits<T: Item, B>(
    hits: &[(NodeIx, u64, Direction)],
    extras: &[T::Extra],
    visit: &mut impl FnMut(T, u64, Direction) -> ControlFlow<B>,
) -> ControlFlow<B> {
    for &(v, e, side) in hits {
        let u = node_of(e);
        visit(
            T::with(u, extras[u as usize]),
            pack(rel_of(e), v),
            side.reverse(),
        )?;
    }
    ControlFlow::Continue(())
}

/// Prefetches node `v`'s lists in direction `dir` (`lists`), or where they are (its span).
#[inline]
fn prefetch_lists(g: &Graph, v: Option<NodeIx>, dir: Direction, lists: bool) {
    let Some(v) = v else { return };
    if !lists {
        g.lists.prefetch_span(v);
        return;
    }
    // Both sides are one run: its head is the out side's.
    let first = if dir.has_out() {
        Direction::Out
    } else {
        Direction::In
    };
    g.lists.prefetch_list(v, first);
}

/// The sides of a node's lists that `dir` follows: `Out` and/or `In`.
#[inline]
fn sides(dir: Direction) -> impl Iterator<Item = Direction> {
    let out = dir.has_out().then_some(Direction::Out);
    let inn = dir.has_in().then_some(Direction::In);
    out.into_iter().chain(inn)
}

/// The first entry of `list` by one of `rels` whose node is in `bits`.
#[inline]
fn first_in(list: List<'_>, rels: &[RelIx], bits: &Bits) -> Option<u64> {
    rels.iter().find_map(|&r| {
        let run = list.rel_range(r);
        let i = run.nodes().iter().position(|&u| bits.contains(u))?;
        Some(run.entry(i))
    })
}
