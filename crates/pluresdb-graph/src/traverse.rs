//! Breadth-first traversal with depth bounds, filters, a result limit and a visit budget.

use std::ops::ControlFlow;

use crate::error::GraphError;
use crate::graph::{Direction, EdgeRef, Graph, NodeIx, RelFilter, RelIx};
use crate::level::Bfs;
use crate::lists::{node_of, rel_of};

/// How many nodes a walk may reach by default before it fails with
/// [`GraphError::TooManyVisited`].
pub const DEFAULT_MAX_VISITED: usize = 1_000_000;

/// What a [`Graph::traverse`] walk follows and returns. Built with chained setters:
///
/// ```
/// # use pluresdb_graph::{Direction, Graph, TraverseOptions};
/// # let g = Graph::new();
/// let opts = TraverseOptions::new()
///     .direction(Direction::Both)
///     .relations(g.rel_filter(["knows", "follows"]))
///     .min_depth(1)
///     .max_depth(3)
///     .limit(100);
/// ```
#[derive(Clone)]
pub struct TraverseOptions<'a> {
    direction: Direction,
    relations: RelFilter,
    min_depth: i64,
    max_depth: Option<i64>,
    filter: Option<&'a dyn Fn(NodeIx) -> bool>,
    expand_if: Option<&'a dyn Fn(NodeIx) -> bool>,
    limit: Option<usize>,
    max_visited: usize,
}

impl Default for TraverseOptions<'_> {
    fn default() -> Self {
        TraverseOptions {
            direction: Direction::Out,
            relations: RelFilter::any(),
            min_depth: 1,
            max_depth: None,
            filter: None,
            expand_if: None,
            limit: None,
            max_visited: DEFAULT_MAX_VISITED,
        }
    }
}

impl std::fmt::Debug for TraverseOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraverseOptions")
            .field("direction", &self.direction)
            .field("relations", &self.relations)
            .field("min_depth", &self.min_depth)
            .field("max_depth", &self.max_depth)
            .field("filter", &self.filter.is_some())
            .field("expand_if", &self.expand_if.is_some())
            .field("limit", &self.limit)
            .field("max_visited", &self.max_visited)
            .finish()
    }
}

impl<'a> TraverseOptions<'a> {
    /// Defaults: outgoing edges of any relation, depths 1 and up (unbounded), no filter, no
    /// limit, at most [`DEFAULT_MAX_VISITED`] nodes reached.
    pub fn new() -> Self {
        Self::default()
    }

    /// Which way to follow edges (default [`Direction::Out`]).
    pub fn direction(mut self, direction: Direction) -> Self {
        self.direction = direction;
        self
    }

    /// Which relations to follow (default any).
    pub fn relations(mut self, relations: RelFilter) -> Self {
        self.relations = relations;
        self
    }

    /// The least depth returned (default 1). With 0 the start nodes are returned too.
    /// Negative values are rejected by the walk.
    pub fn min_depth(mut self, depth: i64) -> Self {
        self.min_depth = depth;
        self
    }

    /// The greatest depth walked (default unbounded). Negative values are rejected by the
    /// walk.
    pub fn max_depth(mut self, depth: i64) -> Self {
        self.max_depth = Some(depth);
        self
    }

    /// Walks with no depth bound (the default); the walk still ends when every reachable
    /// node has been seen, or at the limit or the visit budget.
    pub fn unbounded(mut self) -> Self {
        self.max_depth = None;
        self
    }

    /// Returns only nodes for which `filter` is true. The walk still continues through the
    /// others (see [`TraverseOptions::expand_if`] to stop there).
    pub fn filter(mut self, filter: &'a dyn Fn(NodeIx) -> bool) -> Self {
        self.filter = Some(filter);
        self
    }

    /// Follows edges only from nodes for which `expand` is true (the start nodes are always
    /// expanded). Other nodes are still returned if they pass the filter, but the walk does
    /// not go past them.
    pub fn expand_if(mut self, expand: &'a dyn Fn(NodeIx) -> bool) -> Self {
        self.expand_if = Some(expand);
        self
    }

    /// Returns at most `limit` nodes: the walk stops as soon as it has them.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Fails with [`GraphError::TooManyVisited`] once the walk has reached more than this
    /// many nodes (starts included) without finishing, rather than running on through a huge
    /// graph (default [`DEFAULT_MAX_VISITED`]).
    pub fn max_visited(mut self, max_visited: usize) -> Self {
        self.max_visited = max_visited;
        self
    }

    /// The depth range as unsigned bounds, or an error for a negative or empty range.
    pub(crate) fn depths(&self) -> Result<(u32, u32), GraphError> {
        check_depths(self.min_depth, self.max_depth)
    }
}

/// Validates a depth range; returns it clamped to `u32` (`u32::MAX` = unbounded).
pub(crate) fn check_depths(min: i64, max: Option<i64>) -> Result<(u32, u32), GraphError> {
    let bad = min < 0 || max.is_some_and(|m| m < 0 || m < min);
    if bad {
        return Err(GraphError::InvalidDepth { min, max });
    }
    let clamp = |d: i64| u32::try_from(d).unwrap_or(u32::MAX);
    Ok((clamp(min), max.map_or(u32::MAX, clamp)))
}

/// One node returned by a walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Visit {
    /// The node.
    pub node: NodeIx,
    /// Hops from the nearest start node (the shortest distance by the followed edges).
    pub depth: u32,
    step: u32,
}

impl Visit {
    /// Where this node is in [`Traversal::steps`].
    pub fn step(&self) -> usize {
        self.step as usize
    }
}

/// One node reached by a walk, with the edge it was reached by.
#[derive(Clone, Copy, Debug)]
struct Step {
    node: NodeIx,
    /// Index of the step it was reached from (`u32::MAX` for a start).
    parent: u32,
    /// The edge's relation, and in the top bit whether it was followed along its direction
    /// (12 bytes a step, not 16: a walk writes one per node it reaches).
    rel_out: u32,
}

impl Step {
    fn rel(self) -> RelIx {
        self.rel_out & !OUT
    }

    fn out(self) -> bool {
        self.rel_out & OUT != 0
    }
}

/// [`Step::rel_out`]'s direction bit.
const OUT: u32 = 1 << 31;

/// The result of [`Graph::traverse`]: the returned nodes in breadth-first order, and the
/// tree of edges they were reached by (so each path costs nothing until asked for).
#[derive(Clone, Debug, Default)]
pub struct Traversal {
    steps: Vec<Step>,
    visits: Vec<Visit>,
    limit_reached: bool,
}

impl Traversal {
    /// The nodes returned, in breadth-first order (depth never decreases).
    pub fn visits(&self) -> &[Visit] {
        &self.visits
    }

    /// Number of nodes returned.
    pub fn len(&self) -> usize {
        self.visits.len()
    }

    /// Whether no node was returned.
    pub fn is_empty(&self) -> bool {
        self.visits.is_empty()
    }

    /// Whether the walk stopped because it had `limit` results (more may exist).
    pub fn limit_reached(&self) -> bool {
        self.limit_reached
    }

    /// How many nodes the walk reached (returned or not, starts included).
    pub fn reached(&self) -> usize {
        self.steps.len()
    }

    /// Every node the walk reached, in the order it reached them (starts first), as
    /// `(node, index of the step it was reached from, or None for a start)`.
    pub fn steps(&self) -> impl ExactSizeIterator<Item = (NodeIx, Option<usize>)> + '_ {
        self.steps
            .iter()
            .map(|s| (s.node, (s.parent != u32::MAX).then_some(s.parent as usize)))
    }

    /// The nodes from a start node to `visit.node`, both included (`depth + 1` nodes).
    /// `visit` must come from this traversal (else this may panic or give a wrong path).
    pub fn path(&self, visit: &Visit) -> Vec<NodeIx> {
        let mut path = Vec::with_capacity(visit.depth as usize + 1);
        let mut i = visit.step;
        while i != u32::MAX {
            let s = self.steps[i as usize];
            path.push(s.node);
            i = s.parent;
        }
        path.reverse();
        path
    }

    /// The edges from a start node to `visit.node`, in walking order; each as stored
    /// (`from -[rel]-> to`), so an edge followed against its direction has `to` first.
    pub fn path_edges(&self, visit: &Visit) -> Vec<EdgeRef> {
        let mut edges = Vec::with_capacity(visit.depth as usize);
        let mut i = visit.step;
        loop {
            let s = self.steps[i as usize];
            if s.parent == u32::MAX {
                break;
            }
            let p = self.steps[s.parent as usize].node;
            edges.push(if s.out() {
                EdgeRef {
                    from: p,
                    rel: s.rel(),
                    to: s.node,
                }
            } else {
                EdgeRef {
                    from: s.node,
                    rel: s.rel(),
                    to: p,
                }
            });
            i = s.parent;
        }
        edges.reverse();
        edges
    }
}

impl Graph {
    /// Walks breadth-first from `starts` (all at depth 0), reaching each node once, at its
    /// least depth, and returns the nodes within the depth range that pass the filter, up to
    /// the limit. Duplicate starts count once; a start reached again is not returned again.
    /// Within one depth the order is unspecified (a large level is expanded in node order,
    /// which walks memory front to back), and so is which of several equally near parents a
    /// node's path goes through.
    ///
    /// Errors: a start that is not a live node, a negative or empty depth range, or more
    /// than `max_visited` nodes reached before the walk finished.
    pub fn traverse(
        &self,
        starts: &[NodeIx],
        opts: &TraverseOptions<'_>,
    ) -> Result<Traversal, GraphError> {
        let (min, max) = opts.depths()?;
        for &s in starts {
            self.check_node(s)?;
        }
        let mut w = Walker {
            t: Traversal::default(),
            opts,
            min,
            limit: opts.limit.unwrap_or(usize::MAX),
        };
        if w.limit == 0 {
            w.t.limit_reached = true;
            return Ok(w.t);
        }
        let (dir, rels) = (opts.direction, &opts.relations);
        let mut bfs = Bfs::<(NodeIx, u32)>::new(self, dir, rels);
        for &s in starts {
            if !bfs.reach(s) {
                continue;
            }
            if let ControlFlow::Break(end) = w.reach(s, u32::MAX, 0, true, 0) {
                return end.map(|()| w.t);
            }
        }
        // The steps of the current level to expand, as `(node, step)`.
        let mut expanding: Vec<(NodeIx, u32)> = Vec::new();
        let mut level = 0..w.t.steps.len();
        let mut depth = 0u32;
        while !level.is_empty() && depth < max {
            expanding.clear();
            expanding.extend(
                level
                    .clone()
                    .map(|i| (w.t.steps[i].node, i as u32))
                    .filter(|&(v, _)| depth == 0 || opts.expand_if.is_none_or(|f| f(v))),
            );
            let next = depth + 1;
            let most = bfs.plan(&mut expanding).min(opts.max_visited);
            w.t.steps.reserve(most);
            w.t.visits.reserve(most.min(w.limit));
            let flow = if w.returns_all() {
                bfs.expand(&expanding, |(_, step), e, side| {
                    w.step(node_of(e), step, rel_of(e), side == Direction::Out)
                })
            } else {
                bfs.expand(&expanding, |(_, step), e, side| {
                    w.reach(node_of(e), step, rel_of(e), side == Direction::Out, next)
                })
            };
            if let ControlFlow::Break(end) = flow {
                return end.map(|()| w.t);
            }
            level = level.end..w.t.steps.len();
            if w.returns_all() {
                w.visit_level(level.clone(), next);
            }
            depth = next;
        }
        Ok(w.t)
    }

    /// The distinct nodes within 1 to `depth` hops of `starts` (the starts themselves
    /// excluded), in breadth-first order: the fast path for "everything within k hops" that
    /// keeps no paths. The result is bounded by the node count.
    pub fn expand(
        &self,
        starts: &[NodeIx],
        depth: u32,
        dir: Direction,
        rels: &RelFilter,
    ) -> Result<Vec<NodeIx>, GraphError> {
        let mut bfs = Bfs::<NodeIx>::new(self, dir, rels);
        let mut order = Vec::with_capacity(starts.len());
        for &s in starts {
            self.check_node(s)?;
            if bfs.reach(s) {
                order.push(s);
            }
        }
        let n_starts = order.len();
        let mut frontier = Vec::new();
        let mut level = 0..order.len();
        for _ in 0..depth {
            if level.is_empty() {
                break;
            }
            frontier.clear();
            frontier.extend_from_slice(&order[level.clone()]);
            order.reserve(bfs.plan(&mut frontier));
            let _ = bfs.expand(&frontier, |_, e, _| {
                order.push(node_of(e));
                ControlFlow::<()>::Continue(())
            });
            level = level.end..order.len();
        }
        order.drain(..n_starts);
        Ok(order)
    }
}

/// A traversal being collected, with what decides which nodes it returns.
struct Walker<'o, 'a> {
    t: Traversal,
    opts: &'o TraverseOptions<'a>,
    min: u32,
    limit: usize,
}

impl Walker<'_, '_> {
    /// Whether every node reached is returned, with no limit: then a level's visits are
    /// recorded after it, all at once ([`Walker::visit_level`]), and each node reached only
    /// takes a step ([`Walker::step`]).
    fn returns_all(&self) -> bool {
        self.opts.filter.is_none() && self.limit == usize::MAX
    }

    /// Records the step to node `v` from step `parent` by an edge of relation `rel` (followed
    /// along its direction if `out`). Breaks with an error past the visit budget.
    #[inline]
    fn step(
        &mut self,
        v: NodeIx,
        parent: u32,
        rel: RelIx,
        out: bool,
    ) -> ControlFlow<Result<(), GraphError>> {
        let t = &mut self.t;
        if t.steps.len() >= self.opts.max_visited {
            return ControlFlow::Break(Err(GraphError::TooManyVisited {
                max_visited: self.opts.max_visited,
            }));
        }
        debug_assert!(rel < OUT, "relation index {rel} is too large");
        t.steps.push(Step {
            node: v,
            parent,
            rel_out: rel | if out { OUT } else { 0 },
        });
        ControlFlow::Continue(())
    }

    /// Returns the nodes of the steps `steps` (one level, at `depth`), when the depth range
    /// takes them: for a walk that [returns all](Walker::returns_all) it reaches.
    fn visit_level(&mut self, steps: std::ops::Range<usize>, depth: u32) {
        if depth < self.min {
            return;
        }
        let t = &mut self.t;
        t.visits.extend(steps.map(|i| Visit {
            node: t.steps[i].node,
            depth,
            step: i as u32,
        }));
    }

    /// Records node `v`, just seen at `depth` from step `parent` by an edge of relation `rel`
    /// (followed along its direction if `out`). Breaks with `Ok` at the limit and with an
    /// error past the visit budget.
    #[inline]
    fn reach(
        &mut self,
        v: NodeIx,
        parent: u32,
        rel: RelIx,
        out: bool,
        depth: u32,
    ) -> ControlFlow<Result<(), GraphError>> {
        self.step(v, parent, rel, out)?;
        let t = &mut self.t;
        if depth >= self.min && self.opts.filter.is_none_or(|f| f(v)) {
            t.visits.push(Visit {
                node: v,
                depth,
                step: t.steps.len() as u32 - 1,
            });
            if t.visits.len() == self.limit {
                t.limit_reached = true;
                return ControlFlow::Break(Ok(()));
            }
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain() -> Graph {
        // a -> b -> c -> d, plus a -> c by another relation, and d -> a (a cycle).
        let mut g = Graph::new();
        for (f, r, t) in [
            ("a", "next", "b"),
            ("b", "next", "c"),
            ("c", "next", "d"),
            ("a", "skip", "c"),
            ("d", "next", "a"),
        ] {
            g.add_edge(f, r, t);
        }
        g
    }

    fn names(g: &Graph, t: &Traversal) -> Vec<(String, u32)> {
        t.visits()
            .iter()
            .map(|v| (g.id(v.node).to_owned(), v.depth))
            .collect()
    }

    #[test]
    fn depths_paths_and_relations() {
        let g = chain();
        let a = g.node("a").unwrap();
        let t = g.traverse(&[a], &TraverseOptions::new()).unwrap();
        assert_eq!(
            names(&g, &t),
            [("b".into(), 1), ("c".into(), 1), ("d".into(), 2)]
        );
        let d = t.visits()[2];
        let path: Vec<&str> = t.path(&d).iter().map(|&v| g.id(v)).collect();
        assert_eq!(path, ["a", "c", "d"]);
        let edges = t.path_edges(&d);
        assert_eq!(g.relation_name(edges[0].rel), "skip");
        assert_eq!(edges[1].to, d.node);

        let next = g.rel_filter(["next"]);
        let t = g
            .traverse(
                &[a],
                &TraverseOptions::new()
                    .relations(next)
                    .min_depth(0)
                    .max_depth(2),
            )
            .unwrap();
        assert_eq!(
            names(&g, &t),
            [("a".into(), 0), ("b".into(), 1), ("c".into(), 2)]
        );

        // Against the edges: walking In from a reaches d first.
        let t = g
            .traverse(&[a], &TraverseOptions::new().direction(Direction::In))
            .unwrap();
        assert_eq!(names(&g, &t)[0], ("d".into(), 1));
        let first = t.visits()[0];
        let e = t.path_edges(&first)[0];
        assert_eq!((g.id(e.from), g.id(e.to)), ("d", "a"));
    }

    #[test]
    fn filters_limits_and_budget() {
        let g = chain();
        let a = g.node("a").unwrap();
        let c = g.node("c").unwrap();
        let not_c = |v: NodeIx| v != c;
        let t = g
            .traverse(&[a], &TraverseOptions::new().filter(&not_c))
            .unwrap();
        assert_eq!(names(&g, &t), [("b".into(), 1), ("d".into(), 2)]);
        let t = g
            .traverse(&[a], &TraverseOptions::new().expand_if(&not_c))
            .unwrap();
        assert_eq!(names(&g, &t), [("b".into(), 1), ("c".into(), 1)]);
        let t = g.traverse(&[a], &TraverseOptions::new().limit(2)).unwrap();
        assert_eq!(t.len(), 2);
        assert!(t.limit_reached());
        let t = g.traverse(&[a], &TraverseOptions::new().limit(3)).unwrap();
        assert_eq!(t.len(), 3);
        let err = g
            .traverse(&[a], &TraverseOptions::new().max_visited(2))
            .unwrap_err();
        assert_eq!(err, GraphError::TooManyVisited { max_visited: 2 });
        assert!(err.to_string().contains("add a limit"));
        // A limit reached before the budget is fine.
        assert!(
            g.traverse(&[a], &TraverseOptions::new().max_visited(3).limit(2))
                .is_ok()
        );
    }

    #[test]
    fn bad_input() {
        let mut g = chain();
        let a = g.node("a").unwrap();
        for (min, max) in [(-1, Some(3)), (0, Some(-2)), (3, Some(2))] {
            let mut o = TraverseOptions::new().min_depth(min);
            if let Some(m) = max {
                o = o.max_depth(m);
            }
            let err = g.traverse(&[a], &o).unwrap_err();
            assert_eq!(err, GraphError::InvalidDepth { min, max });
            assert!(!err.to_string().is_empty());
        }
        // Huge depths are fine (the walk ends when the graph is exhausted).
        let t = g
            .traverse(&[a], &TraverseOptions::new().max_depth(i64::MAX))
            .unwrap();
        assert_eq!(t.len(), 3);
        let b = g.node("b").unwrap();
        g.remove_node("b");
        assert_eq!(
            g.traverse(&[b], &TraverseOptions::new()).unwrap_err(),
            GraphError::StaleNode(b)
        );
        assert_eq!(
            g.expand(&[b], 2, Direction::Out, &RelFilter::any()),
            Err(GraphError::StaleNode(b))
        );
    }

    #[test]
    fn huge_depth_on_a_dense_graph_is_bounded() {
        // A complete directed graph with self-loops on 300 nodes, two relations: 180K edges.
        let mut g = Graph::new();
        let ids: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
        let edges = ids.iter().flat_map(|a| {
            ids.iter()
                .flat_map(move |b| [(a.as_str(), "x", b.as_str()), (a.as_str(), "y", b.as_str())])
        });
        g.extend_edges(edges);
        assert_eq!(g.edge_count(), 180_000);
        let s = g.node("k0").unwrap();
        let deep = TraverseOptions::new()
            .direction(Direction::Both)
            .max_depth(i64::MAX);
        // Each node is reached once, so even an unbounded walk ends with every node once.
        let all = g.traverse(&[s], &deep).unwrap();
        assert_eq!(all.len(), 299);
        assert!(all.visits().iter().all(|v| v.depth == 1));
        let t = g.traverse(&[s], &deep.clone().limit(50)).unwrap();
        assert_eq!(t.len(), 50);
        assert!(t.limit_reached());
        let never = |_: NodeIx| false;
        let err = g
            .traverse(&[s], &deep.clone().filter(&never).max_visited(100))
            .unwrap_err();
        assert_eq!(err, GraphError::TooManyVisited { max_visited: 100 });
        assert_eq!(
            g.expand(&[s], u32::MAX, Direction::Both, &RelFilter::any())
                .unwrap()
                .len(),
            299
        );
    }

    #[test]
    fn graph_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Graph>();
        check::<Traversal>();
    }

    #[test]
    fn expand_counts_distinct_nodes() {
        let g = chain();
        let a = g.node("a").unwrap();
        let any = RelFilter::any();
        assert_eq!(g.expand(&[a], 0, Direction::Out, &any).unwrap().len(), 0);
        assert_eq!(g.expand(&[a], 1, Direction::Out, &any).unwrap().len(), 2);
        assert_eq!(g.expand(&[a], 9, Direction::Out, &any).unwrap().len(), 3);
        assert_eq!(
            g.expand(&[a, a], 1, Direction::Both, &any).unwrap().len(),
            3
        );
    }
}
