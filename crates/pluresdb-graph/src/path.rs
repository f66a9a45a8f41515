//! Shortest paths: fewest hops (bidirectional breadth-first search) and least total weight
//! (Dijkstra with a caller's weight function).

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};

use crate::error::GraphError;
use crate::graph::{Direction, EdgeRef, Graph, NodeIx, RelFilter};
use crate::hash::FxBuild;
use crate::lists::{node_of, rel_of};
use crate::traverse::{DEFAULT_MAX_VISITED, check_depths};

/// What a shortest-path search may follow.
#[derive(Clone, Debug)]
pub struct PathOptions {
    direction: Direction,
    relations: RelFilter,
    max_depth: Option<i64>,
    max_visited: usize,
}

impl Default for PathOptions {
    fn default() -> Self {
        PathOptions {
            direction: Direction::Out,
            relations: RelFilter::any(),
            max_depth: None,
            max_visited: DEFAULT_MAX_VISITED,
        }
    }
}

impl PathOptions {
    /// Defaults: outgoing edges of any relation, any length, at most
    /// [`DEFAULT_MAX_VISITED`] nodes reached.
    pub fn new() -> Self {
        Self::default()
    }

    /// Which way edges may be followed (default [`Direction::Out`]).
    pub fn direction(mut self, direction: Direction) -> Self {
        self.direction = direction;
        self
    }

    /// Which relations may be followed (default any).
    pub fn relations(mut self, relations: RelFilter) -> Self {
        self.relations = relations;
        self
    }

    /// The most hops a path may have (fewest-hops search only; negative values are
    /// rejected).
    pub fn max_depth(mut self, depth: i64) -> Self {
        self.max_depth = Some(depth);
        self
    }

    /// Fails with [`GraphError::TooManyVisited`] once the search has reached more than this
    /// many nodes (default [`DEFAULT_MAX_VISITED`]).
    pub fn max_visited(mut self, max_visited: usize) -> Self {
        self.max_visited = max_visited;
        self
    }
}

/// A path between two nodes.
#[derive(Clone, Debug, PartialEq)]
pub struct Path {
    /// The nodes from the source to the target, both included.
    pub nodes: Vec<NodeIx>,
    /// The edges walked, in order, each as stored (`from -[rel]-> to`; an edge walked against
    /// its direction has `to` first). One fewer than `nodes`.
    pub edges: Vec<EdgeRef>,
    /// The total weight (the hop count for the fewest-hops search).
    pub cost: f64,
}

/// How a search reached a node: the previous node and the edge from it.
#[derive(Clone, Copy)]
struct Link {
    parent: NodeIx,
    edge: EdgeRef,
}

const ROOT: NodeIx = NodeIx::MAX;

fn edge_at(v: NodeIx, e: u64, dir: Direction) -> EdgeRef {
    if dir == Direction::In {
        EdgeRef {
            from: node_of(e),
            rel: rel_of(e),
            to: v,
        }
    } else {
        EdgeRef {
            from: v,
            rel: rel_of(e),
            to: node_of(e),
        }
    }
}

/// Follows links from `v` back to the root; returns the nodes and edges from `v` outwards.
fn unwind(link: impl Fn(NodeIx) -> Option<Link>, mut v: NodeIx) -> (Vec<NodeIx>, Vec<EdgeRef>) {
    let mut nodes = vec![v];
    let mut edges = Vec::new();
    while let Some(l) = link(v).filter(|l| l.parent != ROOT) {
        edges.push(l.edge);
        nodes.push(l.parent);
        v = l.parent;
    }
    (nodes, edges)
}

/// One side of the bidirectional search.
struct Side {
    dir: Direction,
    links: HashMap<NodeIx, Link, FxBuild>,
    frontier: Vec<NodeIx>,
    depth: u32,
}

impl Side {
    fn new(root: NodeIx, dir: Direction) -> Side {
        let mut links = HashMap::with_hasher(FxBuild::default());
        let root_link = Link {
            parent: ROOT,
            edge: EdgeRef {
                from: root,
                rel: 0,
                to: root,
            },
        };
        links.insert(root, root_link);
        Side {
            dir,
            links,
            frontier: vec![root],
            depth: 0,
        }
    }

    /// Work to expand the frontier: the edges it would scan.
    fn cost(&self, g: &Graph, rels: &RelFilter) -> usize {
        self.frontier
            .iter()
            .map(|&v| g.degree(v, self.dir, rels))
            .sum()
    }
}

/// One side of the weighted search: tentative distances, links and the queue.
struct WeightedSide {
    dir: Direction,
    best: HashMap<NodeIx, (f64, Link), FxBuild>,
    heap: BinaryHeap<Reverse<(Cost, NodeIx)>>,
}

impl WeightedSide {
    fn new(root: NodeIx, dir: Direction) -> WeightedSide {
        let mut best = HashMap::with_hasher(FxBuild::default());
        let link = Link {
            parent: ROOT,
            edge: EdgeRef {
                from: root,
                rel: 0,
                to: root,
            },
        };
        best.insert(root, (0.0, link));
        let mut heap = BinaryHeap::new();
        heap.push(Reverse((Cost(0.0), root)));
        WeightedSide { dir, best, heap }
    }

    /// The distance of the nearest node not yet settled.
    fn top(&self) -> Option<f64> {
        self.heap.peek().map(|Reverse((Cost(d), _))| *d)
    }
}

/// Orders path costs for the heap (weights are checked to be non-negative and not NaN).
#[derive(Clone, Copy, PartialEq)]
struct Cost(f64);

impl Eq for Cost {}

impl PartialOrd for Cost {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Cost {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl Graph {
    /// A path from `from` to `to` with the fewest hops, or `None` if there is none (within
    /// `max_depth`). Searches from both ends at once, each step growing the side with less to
    /// scan. A node is a path of length 0 to itself.
    pub fn shortest_path(
        &self,
        from: NodeIx,
        to: NodeIx,
        opts: &PathOptions,
    ) -> Result<Option<Path>, GraphError> {
        self.check_node(from)?;
        self.check_node(to)?;
        let max = match opts.max_depth {
            Some(m) => check_depths(0, Some(m))?.1,
            None => u32::MAX,
        };
        if from == to {
            return Ok(Some(Path {
                nodes: vec![from],
                edges: Vec::new(),
                cost: 0.0,
            }));
        }
        let rels = &opts.relations;
        let mut fwd = Side::new(from, opts.direction);
        let mut bwd = Side::new(to, opts.direction.reverse());
        loop {
            if fwd.frontier.is_empty() || bwd.frontier.is_empty() {
                return Ok(None);
            }
            // Any meeting found in the next level makes a path of exactly this length (every
            // shorter path would have met already), so the first meeting is a shortest path.
            if u64::from(fwd.depth) + u64::from(bwd.depth) + 1 > u64::from(max) {
                return Ok(None);
            }
            let forward = fwd.cost(self, rels) <= bwd.cost(self, rels);
            let (grow, other) = if forward {
                (&mut fwd, &bwd)
            } else {
                (&mut bwd, &fwd)
            };
            let mut next = Vec::new();
            let mut meeting = None;
            'level: for &v in &grow.frontier {
                for (seg, d) in self.segments(v, grow.dir, rels) {
                    for (i, &w) in seg.nodes().iter().enumerate() {
                        if grow.links.contains_key(&w) {
                            continue;
                        }
                        // `d` is the direction relative to the growing side's walk.
                        let edge = edge_at(v, seg.entry(i), d);
                        grow.links.insert(w, Link { parent: v, edge });
                        if grow.links.len() + other.links.len() > opts.max_visited {
                            return Err(GraphError::TooManyVisited {
                                max_visited: opts.max_visited,
                            });
                        }
                        if other.links.contains_key(&w) {
                            meeting = Some(w);
                            break 'level;
                        }
                        next.push(w);
                    }
                }
            }
            grow.frontier = next;
            grow.depth += 1;
            if let Some(w) = meeting {
                let (mut nodes, mut edges) = unwind(|v| fwd.links.get(&v).copied(), w);
                nodes.reverse();
                edges.reverse();
                let (back_nodes, back_edges) = unwind(|v| bwd.links.get(&v).copied(), w);
                nodes.extend_from_slice(&back_nodes[1..]);
                edges.extend(back_edges);
                let cost = edges.len() as f64;
                return Ok(Some(Path { nodes, edges, cost }));
            }
        }
    }

    /// A path from `from` to `to` of least total weight, or `None` if there is none.
    ///
    /// `weight` is asked for each edge considered, as stored (`from -[rel]-> to`, whichever
    /// way it is walked): `None` or an infinite weight means the edge cannot be used; a
    /// negative or NaN weight is an error ([`GraphError::BadWeight`]), and so is a path
    /// whose total is beyond `f64::MAX` when no cheaper path exists
    /// ([`GraphError::CostOverflow`]). The search is
    /// Dijkstra's from both ends at once (an edge may be asked about from each end).
    /// `max_depth` is not supported here (it is an [`GraphError::InvalidArgument`] error).
    pub fn cheapest_path(
        &self,
        from: NodeIx,
        to: NodeIx,
        opts: &PathOptions,
        weight: &mut dyn FnMut(EdgeRef) -> Option<f64>,
    ) -> Result<Option<Path>, GraphError> {
        self.check_node(from)?;
        self.check_node(to)?;
        if opts.max_depth.is_some() {
            return Err(GraphError::InvalidArgument(
                "max_depth (a hop limit) is not supported by the weighted path search; use \
                 shortest_path for hop limits, or give long paths a high weight"
                    .to_owned(),
            ));
        }
        if from == to {
            return Ok(Some(Path {
                nodes: vec![from],
                edges: Vec::new(),
                cost: 0.0,
            }));
        }
        let mut fwd = WeightedSide::new(from, opts.direction);
        let mut bwd = WeightedSide::new(to, opts.direction.reverse());
        // The best path found so far goes through `meet`; it is final once the two nearest
        // unsettled nodes are together at least as far as it (weights are non-negative).
        let mut best = f64::INFINITY;
        let mut meet = None;
        // A path was found whose cost is beyond f64 (it summed to infinity).
        let mut overflowed = false;
        // When one side's queue runs dry it has settled everything it can reach. While no
        // path is known, an infinite `tf + tb` (a sum beyond f64) does not end the search:
        // it goes on to learn whether a path exists at all.
        while let (Some(tf), Some(tb)) = (fwd.top(), bwd.top()) {
            if tf + tb >= best && (best.is_finite() || overflowed) {
                break;
            }
            let (side, other) = if tf <= tb {
                (&mut fwd, &bwd)
            } else {
                (&mut bwd, &fwd)
            };
            let Some(Reverse((Cost(d), v))) = side.heap.pop() else {
                break;
            };
            if side.best.get(&v).is_some_and(|&(b, _)| d > b) {
                continue; // stale entry
            }
            for (seg, dir) in self.segments(v, side.dir, &opts.relations) {
                for e in seg.iter() {
                    let edge = edge_at(v, e, dir);
                    let Some(wt) = weight(edge) else { continue };
                    if wt.is_nan() || wt < 0.0 {
                        return Err(GraphError::BadWeight {
                            from: self.id(edge.from).to_owned(),
                            relation: self.relation_name(edge.rel).to_owned(),
                            to: self.id(edge.to).to_owned(),
                            weight: wt,
                        });
                    }
                    if wt.is_infinite() {
                        continue;
                    }
                    let w = node_of(e);
                    let nd = d + wt;
                    if side.best.get(&w).is_some_and(|&(b, _)| nd >= b) {
                        continue;
                    }
                    side.best.insert(w, (nd, Link { parent: v, edge }));
                    side.heap.push(Reverse((Cost(nd), w)));
                    if side.best.len() + other.best.len() > opts.max_visited {
                        return Err(GraphError::TooManyVisited {
                            max_visited: opts.max_visited,
                        });
                    }
                    if let Some(&(dw, _)) = other.best.get(&w) {
                        if nd + dw < best {
                            best = nd + dw;
                            meet = Some(w);
                        } else if (nd + dw).is_infinite() {
                            overflowed = true;
                        }
                    }
                }
            }
        }
        let Some(w) = meet else {
            if overflowed {
                return Err(GraphError::CostOverflow {
                    from: self.id(from).to_owned(),
                    to: self.id(to).to_owned(),
                });
            }
            return Ok(None);
        };
        let (mut nodes, mut edges) = unwind(|v| fwd.best.get(&v).map(|&(_, l)| l), w);
        nodes.reverse();
        edges.reverse();
        let (back_nodes, back_edges) = unwind(|v| bwd.best.get(&v).map(|&(_, l)| l), w);
        nodes.extend_from_slice(&back_nodes[1..]);
        edges.extend(back_edges);
        Ok(Some(Path {
            nodes,
            edges,
            cost: best,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph() -> Graph {
        let mut g = Graph::new();
        for (f, r, t) in [
            ("a", "road", "b"),
            ("b", "road", "c"),
            ("c", "road", "d"),
            ("a", "ferry", "d"),
            ("d", "road", "e"),
            ("e", "road", "e"),
        ] {
            g.add_edge(f, r, t);
        }
        g
    }

    fn ids(g: &Graph, p: &Path) -> Vec<String> {
        p.nodes.iter().map(|&v| g.id(v).to_owned()).collect()
    }

    #[test]
    fn fewest_hops() {
        let g = graph();
        let (a, e) = (g.node("a").unwrap(), g.node("e").unwrap());
        let p = g.shortest_path(a, e, &PathOptions::new()).unwrap().unwrap();
        assert_eq!(ids(&g, &p), ["a", "d", "e"]);
        assert_eq!(p.cost, 2.0);
        let road = PathOptions::new().relations(g.rel_filter(["road"]));
        let p = g.shortest_path(a, e, &road).unwrap().unwrap();
        assert_eq!(ids(&g, &p), ["a", "b", "c", "d", "e"]);
        assert_eq!(g.relation_name(p.edges[0].rel), "road");
        assert!(
            g.shortest_path(e, a, &PathOptions::new())
                .unwrap()
                .is_none()
        );
        let back = PathOptions::new().direction(Direction::In);
        let p = g.shortest_path(e, a, &back).unwrap().unwrap();
        assert_eq!(ids(&g, &p), ["e", "d", "a"]);
        assert_eq!(
            p.edges[0],
            EdgeRef {
                from: g.node("d").unwrap(),
                rel: 0,
                to: e
            }
        );
        assert!(
            g.shortest_path(a, e, &road.clone().max_depth(3))
                .unwrap()
                .is_none()
        );
        assert!(g.shortest_path(a, e, &road.max_depth(4)).unwrap().is_some());
        let p = g.shortest_path(a, a, &PathOptions::new()).unwrap().unwrap();
        assert_eq!(p.nodes, [a]);
        assert!(matches!(
            g.shortest_path(a, e, &PathOptions::new().max_depth(-1)),
            Err(GraphError::InvalidDepth { .. })
        ));
    }

    #[test]
    fn least_weight() {
        let g = graph();
        let (a, e) = (g.node("a").unwrap(), g.node("e").unwrap());
        let ferry = g.relation("ferry").unwrap();
        let mut w = |edge: EdgeRef| Some(if edge.rel == ferry { 10.0 } else { 1.0 });
        let p = g
            .cheapest_path(a, e, &PathOptions::new(), &mut w)
            .unwrap()
            .unwrap();
        assert_eq!(ids(&g, &p), ["a", "b", "c", "d", "e"]);
        assert_eq!(p.cost, 4.0);
        let mut no_ferry = |edge: EdgeRef| (edge.rel != ferry).then_some(5.0);
        let p = g
            .cheapest_path(a, e, &PathOptions::new(), &mut no_ferry)
            .unwrap()
            .unwrap();
        assert_eq!(p.cost, 20.0);
        let mut negative = |_: EdgeRef| Some(-1.0);
        let err = g
            .cheapest_path(a, e, &PathOptions::new(), &mut negative)
            .unwrap_err();
        assert!(matches!(err, GraphError::BadWeight { .. }));
        assert!(err.to_string().contains("\"a\""), "{err}");
        let mut none = |_: EdgeRef| None;
        assert!(
            g.cheapest_path(a, e, &PathOptions::new(), &mut none)
                .unwrap()
                .is_none()
        );
        assert!(matches!(
            g.cheapest_path(a, e, &PathOptions::new().max_depth(3), &mut w),
            Err(GraphError::InvalidArgument(_))
        ));
    }

    /// Weights whose sums pass f64::MAX: an error says so (the path was "no path"), and a
    /// path whose sum fits is still found next to one that overflows.
    #[test]
    fn costs_beyond_f64_are_an_error_not_no_path() {
        let g = graph();
        let (a, e) = (g.node("a").unwrap(), g.node("e").unwrap());
        let mut huge = |_: EdgeRef| Some(1e308);
        let err = g
            .cheapest_path(a, e, &PathOptions::new(), &mut huge)
            .unwrap_err();
        assert_eq!(
            err,
            GraphError::CostOverflow {
                from: "a".into(),
                to: "e".into()
            }
        );
        assert!(err.to_string().contains("use smaller weights"), "{err}");
        // Ferry then road overflows (1.7e308 + 2e307); four roads (8e307) fit.
        let ferry = g.relation("ferry").unwrap();
        let mut w = |edge: EdgeRef| Some(if edge.rel == ferry { 1.7e308 } else { 2e307 });
        let p = g
            .cheapest_path(a, e, &PathOptions::new(), &mut w)
            .unwrap()
            .unwrap();
        assert_eq!(ids(&g, &p), ["a", "b", "c", "d", "e"]);
        assert_eq!(p.cost, 8e307);
        let back = PathOptions::new().direction(Direction::In);
        assert!(matches!(
            g.cheapest_path(e, a, &back, &mut huge),
            Err(GraphError::CostOverflow { .. })
        ));
    }
}
