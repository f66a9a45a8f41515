//! Whole-graph algorithms: weakly connected components, PageRank, degree centrality.

use crate::error::GraphError;
use crate::graph::{Direction, Graph, NodeIx, RelFilter};

/// Label of node slots that are not live in [`Components::labels`].
pub const NO_COMPONENT: u32 = u32::MAX;

/// Weakly connected components (edges taken as undirected), from
/// [`Graph::connected_components`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Components {
    labels: Vec<u32>,
    sizes: Vec<usize>,
}

impl Components {
    /// The component of node `v` (`None` if it is not a live node). Components are numbered
    /// from 0 in the order of their lowest node index.
    pub fn of(&self, v: NodeIx) -> Option<usize> {
        match self.labels.get(v as usize) {
            Some(&c) if c != NO_COMPONENT => Some(c as usize),
            _ => None,
        }
    }

    /// The number of components.
    pub fn count(&self) -> usize {
        self.sizes.len()
    }

    /// The number of nodes in each component.
    pub fn sizes(&self) -> &[usize] {
        &self.sizes
    }

    /// The component of every node slot ([`NO_COMPONENT`] for slots not live).
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// The largest component (the lowest-numbered among equals), if the graph has nodes.
    pub fn largest(&self) -> Option<usize> {
        (0..self.sizes.len()).rev().max_by_key(|&c| self.sizes[c])
    }

    /// The nodes of component `c`, by index.
    pub fn members(&self, c: usize) -> impl Iterator<Item = NodeIx> + '_ {
        self.labels
            .iter()
            .enumerate()
            .filter(move |&(_, &l)| l as usize == c && l != NO_COMPONENT)
            .map(|(v, _)| v as NodeIx)
    }
}

/// PageRank settings; [`PageRankOptions::default`] gives the usual ones.
#[derive(Clone, Debug, PartialEq)]
pub struct PageRankOptions {
    /// The chance of following an edge rather than jumping to a random node (0 to 1,
    /// default 0.85).
    pub damping: f64,
    /// The most iterations (default 100).
    pub max_iterations: usize,
    /// Stop when the scores move less than this in total (L1), default 1e-9.
    pub tolerance: f64,
    /// The relations whose edges count as links (default any).
    pub relations: RelFilter,
}

impl Default for PageRankOptions {
    fn default() -> Self {
        PageRankOptions {
            damping: 0.85,
            max_iterations: 100,
            tolerance: 1e-9,
            relations: RelFilter::any(),
        }
    }
}

/// PageRank scores from [`Graph::pagerank`].
#[derive(Clone, Debug, PartialEq)]
pub struct PageRank {
    /// The score of every node slot (0 for slots not live); live scores sum to 1.
    pub scores: Vec<f64>,
    /// Iterations run.
    pub iterations: usize,
    /// Whether the scores moved less than the tolerance before the iteration cap.
    pub converged: bool,
}

impl Graph {
    /// Weakly connected components over the edges of the given relations (every live node
    /// belongs to one; a node without such edges is a component of its own).
    pub fn connected_components(&self, rels: &RelFilter) -> Components {
        let n = self.node_bound();
        let mut parent: Vec<u32> = (0..n as u32).collect();
        let mut size = vec![1u32; n];
        fn find(parent: &mut [u32], mut v: u32) -> u32 {
            while parent[v as usize] != v {
                let p = parent[v as usize];
                parent[v as usize] = parent[p as usize];
                v = p;
            }
            v
        }
        for v in self.nodes() {
            for (seg, _) in self.segments(v, Direction::Out, rels) {
                for &w in seg.nodes() {
                    let (a, b) = (find(&mut parent, v), find(&mut parent, w));
                    if a != b {
                        let (big, small) = if size[a as usize] >= size[b as usize] {
                            (a, b)
                        } else {
                            (b, a)
                        };
                        parent[small as usize] = big;
                        size[big as usize] += size[small as usize];
                    }
                }
            }
        }
        let mut labels = vec![NO_COMPONENT; n];
        let mut root_label = vec![NO_COMPONENT; n];
        let mut sizes = Vec::new();
        for v in self.nodes() {
            let r = find(&mut parent, v) as usize;
            if root_label[r] == NO_COMPONENT {
                root_label[r] = sizes.len() as u32;
                sizes.push(0);
            }
            labels[v as usize] = root_label[r];
            sizes[root_label[r] as usize] += 1;
        }
        Components { labels, sizes }
    }

    /// PageRank over the edges of the given relations (parallel edges of different
    /// relations count as separate links; self-loops count). Nodes without outgoing links
    /// spread their score evenly over all nodes, so the scores always sum to 1.
    pub fn pagerank(&self, opts: &PageRankOptions) -> Result<PageRank, GraphError> {
        let d = opts.damping;
        if !(0.0..=1.0).contains(&d) {
            return Err(GraphError::InvalidArgument(format!(
                "PageRank damping {d} is outside 0..=1; the usual value is 0.85"
            )));
        }
        if opts.tolerance.is_nan() || opts.tolerance < 0.0 {
            return Err(GraphError::InvalidArgument(format!(
                "PageRank tolerance {} must be zero or a positive number",
                opts.tolerance
            )));
        }
        let bound = self.node_bound();
        let live: Vec<NodeIx> = self.nodes().collect();
        let mut scores = vec![0.0; bound];
        if live.is_empty() {
            return Ok(PageRank {
                scores,
                iterations: 0,
                converged: true,
            });
        }
        let n = live.len() as f64;
        let rels = &opts.relations;
        let out_deg: Vec<u32> = (0..bound as NodeIx)
            .map(|v| self.degree(v, Direction::Out, rels) as u32)
            .collect();
        for &v in &live {
            scores[v as usize] = 1.0 / n;
        }
        let mut share = vec![0.0; bound];
        let mut next = vec![0.0; bound];
        let mut iterations = 0;
        let mut converged = false;
        while iterations < opts.max_iterations {
            iterations += 1;
            let mut dangling = 0.0;
            for &v in &live {
                let k = out_deg[v as usize];
                if k == 0 {
                    dangling += scores[v as usize];
                    share[v as usize] = 0.0;
                } else {
                    share[v as usize] = scores[v as usize] / f64::from(k);
                }
            }
            let base = (1.0 - d) / n + d * dangling / n;
            let mut moved = 0.0;
            let mut total = 0.0;
            for &v in &live {
                let mut sum = 0.0;
                for (seg, _) in self.segments(v, Direction::In, rels) {
                    for &u in seg.nodes() {
                        sum += share[u as usize];
                    }
                }
                let s = base + d * sum;
                next[v as usize] = s;
                total += s;
            }
            // Renormalize against rounding drift, then measure the change.
            for &v in &live {
                let s = next[v as usize] / total;
                moved += (s - scores[v as usize]).abs();
                next[v as usize] = s;
            }
            std::mem::swap(&mut scores, &mut next);
            if moved < opts.tolerance {
                converged = true;
                break;
            }
        }
        Ok(PageRank {
            scores,
            iterations,
            converged,
        })
    }

    /// Degree centrality of every node slot: its degree ([`Graph::degree`]) over `n - 1`
    /// for `n` live nodes (0 for slots not live, and when `n <= 1`). Parallel edges each
    /// count, so values above 1 are possible in multigraphs.
    pub fn degree_centrality(&self, dir: Direction, rels: &RelFilter) -> Vec<f64> {
        let mut c = vec![0.0; self.node_bound()];
        let n = self.node_count();
        if n <= 1 {
            return c;
        }
        let norm = (n - 1) as f64;
        for v in self.nodes() {
            c[v as usize] = self.degree(v, dir, rels) as f64 / norm;
        }
        c
    }

    /// The `k` live nodes with the highest scores (e.g. from [`Graph::pagerank`]), best
    /// first; ties go to the lower index.
    pub fn top_nodes(&self, scores: &[f64], k: usize) -> Vec<(NodeIx, f64)> {
        let mut all: Vec<(NodeIx, f64)> = self
            .nodes()
            .filter_map(|v| scores.get(v as usize).map(|&s| (v, s)))
            .collect();
        let by_score =
            |a: &(NodeIx, f64), b: &(NodeIx, f64)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if k < all.len() {
            all.select_nth_unstable_by(k, by_score);
            all.truncate(k);
        }
        all.sort_by(by_score);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components() {
        let mut g = Graph::new();
        g.add_edge("a", "r", "b");
        g.add_edge("c", "r", "b");
        g.add_edge("d", "s", "e");
        g.add_edge("e", "s", "e");
        g.add_node("lonely", None);
        let c = g.connected_components(&RelFilter::any());
        assert_eq!(c.count(), 3);
        assert_eq!(c.sizes(), &[3, 2, 1]);
        assert_eq!(c.largest(), Some(0));
        let of = |id: &str| c.of(g.node(id).unwrap()).unwrap();
        assert_eq!(of("a"), of("c"));
        assert_ne!(of("a"), of("d"));
        assert_eq!(c.members(of("d")).count(), 2);
        let only_r = g.connected_components(&g.rel_filter(["r"]));
        assert_eq!(only_r.count(), 4, "d and e apart without relation s");
    }

    #[test]
    fn pagerank_cycle_is_uniform_and_sums_to_one() {
        let mut g = Graph::new();
        for i in 0..5 {
            g.add_edge(&format!("n{i}"), "r", &format!("n{}", (i + 1) % 5));
        }
        let pr = g.pagerank(&PageRankOptions::default()).unwrap();
        assert!(pr.converged);
        for v in g.nodes() {
            assert!((pr.scores[v as usize] - 0.2).abs() < 1e-9);
        }
        // A star: the hub ranks first; the dangling hub's score is spread, sum stays 1.
        let mut s = Graph::new();
        for i in 0..10 {
            s.add_edge(&format!("leaf{i}"), "r", "hub");
        }
        let pr = s.pagerank(&PageRankOptions::default()).unwrap();
        let sum: f64 = pr.scores.iter().sum();
        assert!((sum - 1.0).abs() < 1e-9);
        let top = s.top_nodes(&pr.scores, 1);
        assert_eq!(s.id(top[0].0), "hub");
        assert!(
            s.pagerank(&PageRankOptions {
                damping: 1.5,
                ..Default::default()
            })
            .is_err()
        );
        let empty = Graph::new().pagerank(&PageRankOptions::default()).unwrap();
        assert!(empty.scores.is_empty());
    }

    #[test]
    fn degree_centrality_normalizes() {
        let mut g = Graph::new();
        for i in 0..4 {
            g.add_edge("hub", "r", &format!("x{i}"));
        }
        let c = g.degree_centrality(Direction::Out, &RelFilter::any());
        assert_eq!(c[g.node("hub").unwrap() as usize], 1.0);
        assert_eq!(c[g.node("x0").unwrap() as usize], 0.0);
        let c = g.degree_centrality(Direction::Both, &RelFilter::any());
        assert_eq!(c[g.node("x0").unwrap() as usize], 0.25);
    }
}
