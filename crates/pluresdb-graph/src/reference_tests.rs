//! Randomized tests against a naive reference: a set of `(from, relation, to)` string triples
//! with breadth-first search, Bellman-Ford and union-find written over string maps.
//!
//! Small id spaces (10 nodes, 3 relations) make cycles, self-loops, parallel edges of
//! different relations, re-adds and deletions of nodes and edges common.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use proptest::prelude::*;

use crate::level::{BOTTOM_UP_LEVELS, FORCE_BOTTOM_UP};
use crate::{
    Direction, EdgeRef, Graph, GraphError, NodeIx, PageRankOptions, PathOptions, RelFilter,
    TraverseOptions,
};

const NODES: u8 = 10;
const RELS: u8 = 3;

fn nid(i: u8) -> String {
    format!("n{}", i % NODES)
}

fn rid(i: u8) -> String {
    format!("r{}", i % RELS)
}

#[derive(Clone, Debug)]
enum Op {
    AddNode(u8, Option<u8>),
    RemoveNode(u8),
    AddEdge(u8, u8, u8),
    RemoveEdge(u8, u8, u8),
    Bulk(Vec<(u8, u8, u8)>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (any::<u8>(), proptest::option::of(0u8..3)).prop_map(|(n, t)| Op::AddNode(n, t)),
        1 => any::<u8>().prop_map(Op::RemoveNode),
        8 => (any::<u8>(), any::<u8>(), any::<u8>()).prop_map(|(a, r, b)| Op::AddEdge(a, r, b)),
        3 => (any::<u8>(), any::<u8>(), any::<u8>()).prop_map(|(a, r, b)| Op::RemoveEdge(a, r, b)),
        1 => proptest::collection::vec((any::<u8>(), any::<u8>(), any::<u8>()), 0..30)
            .prop_map(Op::Bulk),
    ]
}

/// The reference: declared nodes with their types, and edges as string triples.
#[derive(Default, Debug)]
struct Model {
    declared: BTreeMap<String, Option<String>>,
    edges: BTreeSet<(String, String, String)>,
}

impl Model {
    fn nodes(&self) -> BTreeSet<String> {
        let mut n: BTreeSet<String> = self.declared.keys().cloned().collect();
        for (a, _, b) in &self.edges {
            n.insert(a.clone());
            n.insert(b.clone());
        }
        n
    }

    /// `HashMap<node, Vec<(relation, neighbour)>>` for one direction (Both = out then in).
    fn adjacency(&self, dir: Direction) -> HashMap<String, Vec<(String, String)>> {
        let mut adj: HashMap<String, Vec<(String, String)>> = HashMap::new();
        for (a, r, b) in &self.edges {
            if dir != Direction::In {
                adj.entry(a.clone())
                    .or_default()
                    .push((r.clone(), b.clone()));
            }
            if dir != Direction::Out {
                adj.entry(b.clone())
                    .or_default()
                    .push((r.clone(), a.clone()));
            }
        }
        adj
    }

    fn apply(&mut self, op: &Op) -> bool {
        match op {
            Op::AddNode(n, t) => {
                self.declared.insert(nid(*n), t.map(|t| format!("t{t}")));
                true
            }
            Op::RemoveNode(n) => {
                let id = nid(*n);
                let existed = self.nodes().contains(&id);
                self.declared.remove(&id);
                self.edges.retain(|(a, _, b)| *a != id && *b != id);
                existed
            }
            Op::AddEdge(a, r, b) => self.edges.insert((nid(*a), rid(*r), nid(*b))),
            Op::RemoveEdge(a, r, b) => self.edges.remove(&(nid(*a), rid(*r), nid(*b))),
            Op::Bulk(es) => {
                let before = self.edges.len();
                for &(a, r, b) in es {
                    self.edges.insert((nid(a), rid(r), nid(b)));
                }
                self.edges.len() != before
            }
        }
    }
}

fn apply(g: &mut Graph, op: &Op) -> bool {
    match op {
        Op::AddNode(n, t) => {
            let ty = t.map(|t| format!("t{t}"));
            g.add_node(&nid(*n), ty.as_deref());
            true
        }
        Op::RemoveNode(n) => g.remove_node(&nid(*n)),
        Op::AddEdge(a, r, b) => g.add_edge(&nid(*a), &rid(*r), &nid(*b)),
        Op::RemoveEdge(a, r, b) => g.remove_edge(&nid(*a), &rid(*r), &nid(*b)),
        Op::Bulk(es) => {
            let es: Vec<_> = es
                .iter()
                .map(|&(a, r, b)| (nid(a), rid(r), nid(b)))
                .collect();
            g.extend_edges(es) > 0
        }
    }
}

/// Relation filters by name: any, one, two, unknown, unknown + one.
fn rel_names(which: u8) -> Option<Vec<&'static str>> {
    match which % 5 {
        0 => None,
        1 => Some(vec!["r0"]),
        2 => Some(vec!["r1", "r2"]),
        3 => Some(vec!["nope"]),
        _ => Some(vec!["nope", "r2"]),
    }
}

fn rel_filter(g: &Graph, which: u8) -> RelFilter {
    match rel_names(which) {
        None => RelFilter::any(),
        Some(names) => g.rel_filter(names),
    }
}

fn rel_ok(which: u8, rel: &str) -> bool {
    rel_names(which).is_none_or(|names| names.contains(&rel))
}

fn direction(d: u8) -> Direction {
    [Direction::Out, Direction::In, Direction::Both][d as usize % 3]
}

/// Returned-node predicate used by the tests (by id, so both sides agree).
fn keep(id: &str) -> bool {
    !id.ends_with('3') && !id.ends_with('7')
}

/// Expansion predicate used by the tests.
fn expand_ok(id: &str) -> bool {
    !id.ends_with('5')
}

#[derive(Clone, Debug)]
struct Query {
    starts: Vec<u8>,
    dir: u8,
    rels: u8,
    min: u8,
    max: Option<u8>,
    filter: bool,
    expand: bool,
    limit: Option<u8>,
    budget: Option<u8>,
    to: u8,
}

fn query() -> impl Strategy<Value = Query> {
    (
        proptest::collection::vec(any::<u8>(), 1..4),
        0u8..3,
        0u8..5,
        0u8..3,
        proptest::option::of(0u8..6),
        any::<bool>(),
        any::<bool>(),
        proptest::option::of(0u8..8),
        proptest::option::of(0u8..12),
        any::<u8>(),
    )
        .prop_map(
            |(starts, dir, rels, min, max, filter, expand, limit, budget, to)| Query {
                starts,
                dir,
                rels,
                min,
                max: max.map(|m| m.max(min)),
                filter,
                expand,
                limit,
                budget,
                to,
            },
        )
}

/// Reference breadth-first search: depth of every node reached (starts at 0), expanding
/// nodes below `max` that pass `expand` (starts always).
fn reference_bfs(
    adj: &HashMap<String, Vec<(String, String)>>,
    starts: &[String],
    rels: u8,
    max: u32,
    expand: &dyn Fn(&str) -> bool,
) -> HashMap<String, u32> {
    let mut depth: HashMap<String, u32> = HashMap::new();
    let mut queue = VecDeque::new();
    for s in starts {
        if !depth.contains_key(s) {
            depth.insert(s.clone(), 0);
            queue.push_back(s.clone());
        }
    }
    while let Some(v) = queue.pop_front() {
        let d = depth[&v];
        if d >= max || (d > 0 && !expand(&v)) {
            continue;
        }
        for (r, w) in adj.get(&v).into_iter().flatten() {
            if rel_ok(rels, r) && !depth.contains_key(w) {
                depth.insert(w.clone(), d + 1);
                queue.push_back(w.clone());
            }
        }
    }
    depth
}

/// Whether `a` to `b` is a step along `edge` in direction `dir`.
fn step_ok(g: &Graph, m: &Model, a: NodeIx, b: NodeIx, edge: EdgeRef, dir: Direction) -> bool {
    let triple = (
        g.id(edge.from).to_owned(),
        g.relation_name(edge.rel).to_owned(),
        g.id(edge.to).to_owned(),
    );
    let along = edge.from == a && edge.to == b;
    let against = edge.to == a && edge.from == b;
    m.edges.contains(&triple)
        && match dir {
            Direction::Out => along,
            Direction::In => against,
            Direction::Both => along || against,
        }
}

fn check_structure(g: &Graph, m: &Model) {
    g.check();
    let nodes: BTreeSet<String> = g.nodes().map(|v| g.id(v).to_owned()).collect();
    assert_eq!(nodes, m.nodes());
    assert_eq!(g.node_count(), nodes.len());
    assert_eq!(g.edge_count(), m.edges.len());
    let edges: BTreeSet<(String, String, String)> = g
        .edges()
        .map(|e| {
            (
                g.id(e.from).to_owned(),
                g.relation_name(e.rel).to_owned(),
                g.id(e.to).to_owned(),
            )
        })
        .collect();
    assert_eq!(edges, m.edges);
    for v in g.nodes() {
        let id = g.id(v);
        assert_eq!(g.is_implicit(v), !m.declared.contains_key(id), "{id}");
        let ty = m.declared.get(id).cloned().flatten();
        assert_eq!(g.node_type(v).map(str::to_owned), ty);
    }
    for d in 0..3 {
        let dir = direction(d);
        let adj = m.adjacency(dir);
        for rels in 0..5 {
            let filter = rel_filter(g, rels);
            for v in g.nodes() {
                let mut got: Vec<(String, String)> = g
                    .neighbors(v, dir, &filter)
                    .map(|n| (g.relation_name(n.rel).to_owned(), g.id(n.node).to_owned()))
                    .collect();
                let mut want: Vec<(String, String)> = adj
                    .get(g.id(v))
                    .into_iter()
                    .flatten()
                    .filter(|(r, _)| rel_ok(rels, r))
                    .cloned()
                    .collect();
                got.sort();
                want.sort();
                assert_eq!(got, want, "neighbors of {} {dir:?} rels {rels}", g.id(v));
                assert_eq!(g.degree(v, dir, &filter), want.len());
            }
        }
    }
}

fn check_query(g: &Graph, m: &Model, q: &Query) {
    let live: Vec<String> = m.nodes().into_iter().collect();
    if live.is_empty() {
        return;
    }
    let pick = |i: u8| live[i as usize % live.len()].clone();
    let start_ids: Vec<String> = q.starts.iter().map(|&i| pick(i)).collect();
    let starts = g.resolve(&start_ids).unwrap();
    let dir = direction(q.dir);
    let adj = m.adjacency(dir);
    let max = q.max.map_or(u32::MAX, u32::from);

    // ----- traverse -----
    let filter = |v: NodeIx| keep(g.id(v));
    let expand = |v: NodeIx| expand_ok(g.id(v));
    let mut opts = TraverseOptions::new()
        .direction(dir)
        .relations(rel_filter(g, q.rels))
        .min_depth(i64::from(q.min));
    if let Some(mx) = q.max {
        opts = opts.max_depth(i64::from(mx));
    }
    if q.filter {
        opts = opts.filter(&filter);
    }
    if q.expand {
        opts = opts.expand_if(&expand);
    }
    if let Some(l) = q.limit {
        opts = opts.limit(usize::from(l));
    }
    let expand_ref = |id: &str| !q.expand || expand_ok(id);
    let depth = reference_bfs(&adj, &start_ids, q.rels, max, &expand_ref);
    let mut want: Vec<(u32, String)> = depth
        .iter()
        .filter(|(id, d)| **d >= u32::from(q.min) && (!q.filter || keep(id)))
        .map(|(id, d)| (*d, id.clone()))
        .collect();
    want.sort();
    if let Some(budget) = q.budget {
        let budgeted = opts.clone().max_visited(usize::from(budget));
        let res = g.traverse(&starts, &budgeted);
        if q.limit.is_none() {
            if depth.len() > usize::from(budget) {
                assert_eq!(
                    res.unwrap_err(),
                    GraphError::TooManyVisited {
                        max_visited: usize::from(budget)
                    }
                );
            } else {
                assert_eq!(res.unwrap().len(), want.len());
            }
        }
    }
    let t = g.traverse(&starts, &opts).unwrap();
    let got: Vec<(u32, String)> = t
        .visits()
        .iter()
        .map(|v| (v.depth, g.id(v.node).to_owned()))
        .collect();
    assert!(
        got.windows(2).all(|w| w[0].0 <= w[1].0),
        "not breadth-first"
    );
    match q.limit.map(usize::from) {
        Some(l) if l < want.len() || (l == want.len() && t.limit_reached()) => {
            assert_eq!(got.len(), l);
            assert!(t.limit_reached());
            for (d, id) in &got {
                assert_eq!(depth.get(id), Some(d), "{id}");
            }
            let got_depths: Vec<u32> = got.iter().map(|x| x.0).collect();
            let want_depths: Vec<u32> = want.iter().take(l).map(|x| x.0).collect();
            assert_eq!(got_depths, want_depths);
        }
        _ => {
            let mut sorted = got.clone();
            sorted.sort();
            assert_eq!(sorted, want);
            assert!(!t.limit_reached() || q.limit == Some(want.len() as u8));
        }
    }
    let distinct: BTreeSet<NodeIx> = t.visits().iter().map(|v| v.node).collect();
    assert_eq!(distinct.len(), t.len(), "a node returned twice");
    for v in t.visits() {
        let path = t.path(v);
        let edges = t.path_edges(v);
        assert_eq!(path.len(), v.depth as usize + 1);
        assert_eq!(edges.len(), v.depth as usize);
        assert!(starts.contains(&path[0]));
        assert_eq!(*path.last().unwrap(), v.node);
        for (i, e) in edges.iter().enumerate() {
            assert!(step_ok(g, m, path[i], path[i + 1], *e, dir));
            assert!(rel_ok(q.rels, g.relation_name(e.rel)));
        }
        for &mid in path.iter().skip(1).take(path.len().saturating_sub(2)) {
            assert!(expand_ref(g.id(mid)), "walked through an unexpanded node");
        }
    }

    // ----- expand -----
    let k = q.max.map_or(3, u32::from);
    let reach = reference_bfs(&adj, &start_ids, q.rels, k, &|_| true);
    let mut want_x: Vec<String> = reach
        .iter()
        .filter(|(_, d)| **d >= 1)
        .map(|(id, _)| id.clone())
        .collect();
    let mut got_x: Vec<String> = g
        .expand(&starts, k, dir, &rel_filter(g, q.rels))
        .unwrap()
        .into_iter()
        .map(|v| g.id(v).to_owned())
        .collect();
    want_x.sort();
    got_x.sort();
    assert_eq!(got_x, want_x);

    // ----- fewest hops -----
    let (from_id, to_id) = (start_ids[0].clone(), pick(q.to));
    let (from, to) = (g.node(&from_id).unwrap(), g.node(&to_id).unwrap());
    let dist = reference_bfs(&adj, std::slice::from_ref(&from_id), q.rels, max, &|_| true);
    let mut popts = PathOptions::new()
        .direction(dir)
        .relations(rel_filter(g, q.rels));
    if let Some(mx) = q.max {
        popts = popts.max_depth(i64::from(mx));
    }
    let p = g.shortest_path(from, to, &popts).unwrap();
    match (dist.get(&to_id), &p) {
        (None, None) => {}
        (Some(&d), Some(p)) => {
            assert_eq!(p.edges.len() as u32, d);
            assert_eq!(p.cost, f64::from(d));
            assert_eq!(p.nodes[0], from);
            assert_eq!(*p.nodes.last().unwrap(), to);
            for (i, e) in p.edges.iter().enumerate() {
                assert!(step_ok(g, m, p.nodes[i], p.nodes[i + 1], *e, dir));
                assert!(rel_ok(q.rels, g.relation_name(e.rel)));
            }
        }
        (want, got) => panic!("shortest path {from_id}->{to_id}: want {want:?}, got {got:?}"),
    }

    // ----- least weight (Bellman-Ford reference) -----
    let weight_of = |a: &str, r: &str, b: &str| -> Option<f64> {
        let h = a
            .bytes()
            .chain(r.bytes())
            .chain(b.bytes())
            .fold(7u32, |h, c| h.wrapping_mul(31).wrapping_add(u32::from(c)));
        (h % 7 != 0).then_some(f64::from(h % 5))
    };
    let mut best: HashMap<String, f64> = HashMap::from([(from_id.clone(), 0.0)]);
    for _ in 0..live.len() {
        for (a, r, b) in &m.edges {
            if !rel_ok(q.rels, r) {
                continue;
            }
            let Some(w) = weight_of(a, r, b) else {
                continue;
            };
            let mut relax = |x: &String, y: &String| {
                if let Some(&dx) = best.get(x)
                    && best.get(y).is_none_or(|&dy| dx + w < dy)
                {
                    best.insert(y.clone(), dx + w);
                }
            };
            if dir != Direction::In {
                relax(a, b);
            }
            if dir != Direction::Out {
                relax(b, a);
            }
        }
    }
    let popts = PathOptions::new()
        .direction(dir)
        .relations(rel_filter(g, q.rels));
    let mut calls = 0;
    let mut w = |e: EdgeRef| {
        calls += 1;
        weight_of(g.id(e.from), g.relation_name(e.rel), g.id(e.to))
    };
    let p = g.cheapest_path(from, to, &popts, &mut w).unwrap();
    match (best.get(&to_id), &p) {
        (None, None) => {}
        (Some(&c), Some(p)) => {
            assert_eq!(p.cost, c);
            let mut sum = 0.0;
            for (i, e) in p.edges.iter().enumerate() {
                assert!(step_ok(g, m, p.nodes[i], p.nodes[i + 1], *e, dir));
                sum += weight_of(g.id(e.from), g.relation_name(e.rel), g.id(e.to)).unwrap();
            }
            assert_eq!(sum, c);
        }
        (want, got) => panic!("cheapest path {from_id}->{to_id}: want {want:?}, got {got:?}"),
    }
}

fn check_algorithms(g: &Graph, m: &Model, rels: u8) {
    // Components against union-find over strings.
    let mut parent: HashMap<String, String> =
        m.nodes().into_iter().map(|n| (n.clone(), n)).collect();
    fn find(p: &mut HashMap<String, String>, x: &str) -> String {
        let mut x = x.to_owned();
        while p[&x] != x {
            x = p[&x].clone();
        }
        x
    }
    for (a, r, b) in &m.edges {
        if rel_ok(rels, r) {
            let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
            parent.insert(ra, rb);
        }
    }
    let c = g.connected_components(&rel_filter(g, rels));
    let ids: Vec<String> = m.nodes().into_iter().collect();
    let roots: BTreeSet<String> = ids.iter().map(|i| find(&mut parent, i)).collect();
    assert_eq!(c.count(), roots.len());
    for a in &ids {
        for b in &ids {
            let same_ref = find(&mut parent, a) == find(&mut parent, b);
            let same = c.of(g.node(a).unwrap()) == c.of(g.node(b).unwrap());
            assert_eq!(same, same_ref, "{a} {b}");
        }
    }
    assert_eq!(c.sizes().iter().sum::<usize>(), ids.len());

    // PageRank against a direct string-keyed computation of the same formula.
    let pr = g
        .pagerank(&PageRankOptions {
            relations: rel_filter(g, rels),
            max_iterations: 60,
            tolerance: 0.0,
            ..Default::default()
        })
        .unwrap();
    if !ids.is_empty() {
        let n = ids.len() as f64;
        let links: Vec<&(String, String, String)> =
            m.edges.iter().filter(|(_, r, _)| rel_ok(rels, r)).collect();
        let mut outdeg: HashMap<&str, f64> = HashMap::new();
        for (a, _, _) in &links {
            *outdeg.entry(a.as_str()).or_default() += 1.0;
        }
        let mut s: HashMap<&str, f64> = ids.iter().map(|i| (i.as_str(), 1.0 / n)).collect();
        for _ in 0..60 {
            let dangling: f64 = ids
                .iter()
                .filter(|i| !outdeg.contains_key(i.as_str()))
                .map(|i| s[i.as_str()])
                .sum();
            let mut next: HashMap<&str, f64> = ids
                .iter()
                .map(|i| (i.as_str(), 0.15 / n + 0.85 * dangling / n))
                .collect();
            for (a, _, b) in &links {
                *next.get_mut(b.as_str()).unwrap() += 0.85 * s[a.as_str()] / outdeg[a.as_str()];
            }
            s = next;
        }
        let total: f64 = pr.scores.iter().sum();
        assert!((total - 1.0).abs() < 1e-9, "pagerank sums to {total}");
        for i in &ids {
            let got = pr.scores[g.node(i).unwrap() as usize];
            assert!(
                (got - s[i.as_str()]).abs() < 1e-9,
                "{i}: {got} vs {}",
                s[i.as_str()]
            );
        }
    }

    // Degree centrality.
    let dc = g.degree_centrality(Direction::Both, &rel_filter(g, rels));
    for v in g.nodes() {
        let d = g.degree(v, Direction::Both, &rel_filter(g, rels)) as f64;
        let want = if ids.len() > 1 {
            d / (ids.len() - 1) as f64
        } else {
            0.0
        };
        assert_eq!(dc[v as usize], want);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Random edits (with checks part-way), then random queries, against the reference.
    #[test]
    fn matches_reference(
        ops in proptest::collection::vec(op(), 0..80),
        queries in proptest::collection::vec(query(), 1..6),
        rels in 0u8..5,
    ) {
        let mut g = Graph::new();
        let mut m = Model::default();
        for (i, op) in ops.iter().enumerate() {
            let want = m.apply(op);
            let got = apply(&mut g, op);
            prop_assert_eq!(got, want, "op {:?}", op);
            if i % 16 == 15 {
                check_structure(&g, &m);
            }
        }
        check_structure(&g, &m);
        for force in [None, Some(false), Some(true)] {
            FORCE_BOTTOM_UP.set(force);
            for q in &queries {
                check_query(&g, &m, q);
            }
        }
        FORCE_BOTTOM_UP.set(None);
        check_algorithms(&g, &m, rels);
    }

    /// Bulk load equals one-by-one adds, whatever the batch split.
    #[test]
    fn bulk_equals_incremental(
        edges in proptest::collection::vec((any::<u8>(), any::<u8>(), any::<u8>()), 0..200),
        split in 0usize..200,
    ) {
        let named: Vec<(String, String, String)> =
            edges.iter().map(|&(a, r, b)| (nid(a), rid(r), nid(b))).collect();
        let split = split.min(named.len());
        let mut bulk = Graph::new();
        bulk.extend_edges(named[..split].iter().map(|(a, r, b)| (a, r, b)));
        bulk.extend_edges(named[split..].iter().map(|(a, r, b)| (a, r, b)));
        let mut m = Model::default();
        for (a, r, b) in &named {
            m.edges.insert((a.clone(), r.clone(), b.clone()));
        }
        check_structure(&bulk, &m);
    }
}

/// A seeded xorshift generator: `rnd(n)` is in `0..n`.
fn xorshift(mut state: u64) -> impl FnMut(u64) -> u64 {
    move |n| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    }
}

/// Walks from `start` up to `depth` hops by `dir` and `rels`, and checks the nodes and depths
/// against a breadth-first search of `adj` (the model's adjacency, already limited to
/// `rels`), that each path is made of edges of those relations, and that `expand` reaches as
/// many nodes.
fn check_walk(
    g: &Graph,
    m: &Model,
    adj: &HashMap<String, Vec<(String, String)>>,
    start: &str,
    dir: Direction,
    rels: &RelFilter,
    depth: i64,
) {
    let want = reference_bfs(adj, &[start.to_owned()], 0, depth as u32, &|_| true);
    let t = g
        .traverse(
            &[g.node(start).unwrap()],
            &TraverseOptions::new()
                .direction(dir)
                .relations(rels.clone())
                .min_depth(0)
                .max_depth(depth),
        )
        .unwrap();
    let got: HashMap<String, u32> = t
        .visits()
        .iter()
        .map(|v| (g.id(v.node).to_owned(), v.depth))
        .collect();
    assert_eq!(got, want, "{dir:?} from {start}");
    // Large levels go in node order or bottom-up: the paths must still be edges.
    for v in t.visits() {
        let path = t.path(v);
        assert_eq!(path.len(), v.depth as usize + 1);
        for (i, e) in t.path_edges(v).iter().enumerate() {
            assert!(step_ok(g, m, path[i], path[i + 1], *e, dir));
            assert!(rels.matches(e.rel), "{dir:?} from {start}");
        }
    }
    let reached = g.expand(&[g.node(start).unwrap()], depth as u32, dir, rels);
    assert_eq!(reached.unwrap().len(), want.len() - 1);
}

#[test]
fn large_random_graph_against_reference() {
    // A bigger graph than the proptest's, with deletions, to exercise arena moves and
    // compaction; spot-check traversals from many starts.
    let mut rnd = xorshift(0x9e37_79b9_7f4a_7c15);
    let mut g = Graph::new();
    let mut m = Model::default();
    for step in 0..60_000 {
        let a = format!("v{}", rnd(2000));
        let b = format!("v{}", rnd(2000));
        let r = format!("r{}", rnd(4));
        if rnd(10) < 7 {
            assert_eq!(g.add_edge(&a, &r, &b), m.edges.insert((a, r, b)));
        } else if rnd(50) == 0 {
            let existed =
                m.declared.contains_key(&a) || m.edges.iter().any(|(x, _, y)| *x == a || *y == a);
            m.edges.retain(|(x, _, y)| *x != a && *y != a);
            m.declared.remove(&a);
            assert_eq!(g.remove_node(&a), existed);
        } else {
            assert_eq!(g.remove_edge(&a, &r, &b), m.edges.remove(&(a, r, b)));
        }
        if step % 20_000 == 19_999 {
            check_structure(&g, &m);
        }
    }
    let ids: Vec<String> = m.nodes().into_iter().collect();
    for dir in [Direction::Out, Direction::In, Direction::Both] {
        let adj = m.adjacency(dir);
        // Auto (large levels go bottom-up when that reads fewer edges), then all bottom-up.
        for force in [None, Some(true)] {
            FORCE_BOTTOM_UP.set(force);
            BOTTOM_UP_LEVELS.set(0);
            for i in 0..30 {
                let s = &ids[(i * 37) % ids.len()];
                check_walk(&g, &m, &adj, s, dir, &RelFilter::any(), 3);
            }
            if force.is_none() && dir == Direction::Both {
                assert!(
                    BOTTOM_UP_LEVELS.get() > 0,
                    "the heuristic never went bottom-up"
                );
            }
        }
    }
    FORCE_BOTTOM_UP.set(None);
}

#[test]
fn small_walks_in_a_large_sparse_graph_stay_top_down() {
    // A bottom-up level looks at every node slot not yet reached: a walk through a small
    // component of a graph of mostly edgeless nodes (or by a rare relation) must not pay that.
    let mut g = Graph::new();
    for i in 0..50_000 {
        g.add_node(&format!("lonely{i}"), None);
    }
    for s in 0..100 {
        g.add_edge("hub", "a", &format!("s{s}"));
        for l in 0..30 {
            g.add_edge(&format!("s{s}"), "a", &format!("leaf{s}-{l}"));
            g.add_edge(&format!("s{s}"), "b", &format!("leaf{s}-{l}"));
        }
        g.add_edge("hub", "b", &format!("s{s}"));
    }
    g.add_edge("rare", "b", "hub");
    let hub = g.node("hub").unwrap();
    let rare = g.node("rare").unwrap();
    FORCE_BOTTOM_UP.set(None);
    for (start, rels, want) in [
        (hub, RelFilter::any(), 3100),
        (hub, g.rel_filter(["b"]), 3100),
        (rare, g.rel_filter(["b"]), 3101),
    ] {
        BOTTOM_UP_LEVELS.set(0);
        let t = g
            .traverse(
                &[start],
                &TraverseOptions::new().relations(rels).max_depth(3),
            )
            .unwrap();
        assert_eq!(t.len(), want);
        assert_eq!(
            BOTTOM_UP_LEVELS.get(),
            0,
            "went bottom-up from {}",
            g.id(start)
        );
    }
}

/// A filter that names every relation with edges is walked as no filter: filters naming all,
/// some, none, unknown and emptied relations must still give exactly the reference's nodes.
#[test]
fn walks_by_filters_naming_all_some_no_or_emptied_relations_match_the_reference() {
    let mut rnd = xorshift(0x2545_f491_4f6c_dd1d);
    for round in 0..6 {
        let mut g = Graph::new();
        let mut m = Model::default();
        let n = 300 + 200 * round;
        for _ in 0..n * 4 {
            let a = format!("v{}", rnd(n));
            let b = format!("v{}", rnd(n));
            let r = ["a", "b", "c", "d"][rnd(4) as usize].to_owned();
            g.add_edge(&a, &r, &b);
            m.edges.insert((a, r, b));
        }
        // Relation "c" loses every edge; "d" keeps a few.
        let cs: Vec<_> = m.edges.iter().filter(|e| e.1 == "c").cloned().collect();
        for (a, r, b) in cs {
            assert!(g.remove_edge(&a, &r, &b));
            m.edges.remove(&(a, r, b));
        }
        if round % 2 == 1 {
            let ds: Vec<_> = m.edges.iter().filter(|e| e.1 == "d").cloned().collect();
            for (a, r, b) in ds.into_iter().skip(3) {
                assert!(g.remove_edge(&a, &r, &b));
                m.edges.remove(&(a, r, b));
            }
        }
        g.check();
        let filters: Vec<Option<Vec<&str>>> = vec![
            None,
            Some(vec![]),
            Some(vec!["a", "b", "c", "d"]),
            Some(vec!["a", "b", "d"]),
            Some(vec!["a", "b", "d", "nope"]),
            Some(vec!["a", "b"]),
            Some(vec!["c"]),
            Some(vec!["d"]),
            Some(vec!["c", "nope"]),
        ];
        let ids: Vec<String> = m.nodes().into_iter().collect();
        for dir in [Direction::Out, Direction::In, Direction::Both] {
            for names in &filters {
                let rf = match names {
                    None => RelFilter::any(),
                    Some(ns) if ns.is_empty() => RelFilter::none(),
                    Some(ns) => g.rel_filter(ns.iter().copied()),
                };
                let ok = |r: &str| names.as_ref().is_none_or(|ns| ns.contains(&r));
                let mut adj = m.adjacency(dir);
                adj.values_mut().for_each(|n| n.retain(|(r, _)| ok(r)));
                for force in [None, Some(false), Some(true)] {
                    FORCE_BOTTOM_UP.set(force);
                    for i in 0..8 {
                        let s = &ids[(i * 53) % ids.len()];
                        check_walk(&g, &m, &adj, s, dir, &rf, 4);
                    }
                }
            }
        }
        FORCE_BOTTOM_UP.set(None);
    }
}

/// A walk that returns every node it reaches records its visits a level at a time, and large
/// levels mark long lists in chunks: the result must be what the per-node path (taken when a
/// filter is given, here one that keeps everything) records, step for step.
#[test]
fn a_walk_returning_everything_records_what_the_per_node_path_records() {
    let mut rnd = xorshift(0x1234_5678_9abc_def1);
    let mut g = Graph::new();
    // A hub one hop from 150 nodes with 50 to 350 edges each (lists of several chunks, and
    // levels over the large-level threshold), in a sparser graph of 4,000 nodes.
    for i in 0..150 {
        g.add_edge("hub", "r0", &format!("n{i}"));
        for _ in 0..50 + rnd(300) {
            g.add_edge(
                &format!("n{i}"),
                &format!("r{}", rnd(3)),
                &format!("n{}", rnd(4000)),
            );
        }
    }
    for _ in 0..20_000 {
        let (a, r, b) = (rnd(4000), rnd(3), rnd(4000));
        g.add_edge(&format!("n{a}"), &format!("r{r}"), &format!("n{b}"));
    }
    let starts = [g.node("hub").unwrap(), g.node("n7").unwrap()];
    let all = |_: NodeIx| true;
    let some = |v: NodeIx| !v.is_multiple_of(3);
    for force in [Some(false), None, Some(true)] {
        FORCE_BOTTOM_UP.set(force);
        for dir in [Direction::Out, Direction::In, Direction::Both] {
            for rels in [RelFilter::any(), g.rel_filter(["r0", "r2"])] {
                for (min, max) in [(0, 1), (1, 3), (2, 3), (5, 6), (0, 9)] {
                    for expand_if in [None, Some(&some as &dyn Fn(NodeIx) -> bool)] {
                        let mut opts = TraverseOptions::new()
                            .direction(dir)
                            .relations(rels.clone())
                            .min_depth(min)
                            .max_depth(max);
                        if let Some(f) = expand_if {
                            opts = opts.expand_if(f);
                        }
                        let fast = g.traverse(&starts, &opts).unwrap();
                        let per_node = g.traverse(&starts, &opts.clone().filter(&all)).unwrap();
                        let case = format!("{force:?} {dir:?} {min}..{max}");
                        assert_eq!(fast.visits(), per_node.visits(), "{case}");
                        assert!(fast.steps().eq(per_node.steps()), "{case}");
                        for v in fast.visits() {
                            assert_eq!(fast.path_edges(v), per_node.path_edges(v), "{case}");
                            assert!(fast.path_edges(v).into_iter().all(|e| g.has_edge(e)));
                        }
                        let budget = opts.clone().max_visited(151);
                        assert_eq!(
                            g.traverse(&starts, &budget).is_err(),
                            g.traverse(&starts, &budget.clone().filter(&all)).is_err(),
                            "{case}"
                        );
                    }
                }
            }
        }
    }
    FORCE_BOTTOM_UP.set(None);
}
