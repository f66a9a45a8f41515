//! Speed of the in-memory graph on a seeded power-law graph (about 100K nodes, 1M edges).
//!
//! ```text
//! cargo run --release -p pluresdb-graph --example graph_speed [nodes] [edges_per_node]
//! ```
//!
//! The graph grows by preferential attachment (each new node links to `m` earlier nodes,
//! half picked in proportion to degree, half uniformly), each edge oriented at random so hubs
//! have large in- and out-degrees, with 4 relations of skewed frequency.

use std::hint::black_box;
use std::time::{Duration, Instant};

use pluresdb_graph::{
    Direction, EdgeRef, Graph, PageRankOptions, PathOptions, RelFilter, TraverseOptions,
};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const RELS: [&str; 4] = ["knows", "follows", "likes", "works_with"];

fn power_law(nodes: usize, m: usize, seed: u64) -> Vec<(u32, u8, u32)> {
    let mut rng = Rng(seed);
    let mut edges: Vec<(u32, u8, u32)> = Vec::with_capacity(nodes * m);
    let mut ends: Vec<u32> = Vec::with_capacity(2 * nodes * m);
    for v in 1..nodes as u32 {
        for _ in 0..m.min(v as usize) {
            let t = if ends.is_empty() || rng.next().is_multiple_of(2) {
                rng.below(v as usize) as u32
            } else {
                ends[rng.below(ends.len())]
            };
            let rel = match rng.below(20) {
                0..10 => 0,
                10..15 => 1,
                15..18 => 2,
                _ => 3,
            };
            let (a, b) = if rng.next().is_multiple_of(2) {
                (v, t)
            } else {
                (t, v)
            };
            edges.push((a, rel, b));
            ends.push(a);
            ends.push(b);
        }
    }
    edges
}

fn pct(mut d: Vec<Duration>) -> String {
    d.sort();
    let at = |p: f64| d[((d.len() as f64 * p) as usize).min(d.len() - 1)];
    format!(
        "p50 {:>9.1?}  p99 {:>9.1?}  max {:>9.1?}",
        at(0.50),
        at(0.99),
        d[d.len() - 1]
    )
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let m: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let raw = power_law(n, m, 42);
    let ids: Vec<String> = (0..n).map(|i| format!("node:{i:08}")).collect();
    let named: Vec<(&str, &str, &str)> = raw
        .iter()
        .map(|&(a, r, b)| (&*ids[a as usize], RELS[r as usize], &*ids[b as usize]))
        .collect();
    println!("graph: {n} nodes, {} edges (with duplicates)", named.len());

    // ----- building -----
    let t = Instant::now();
    let mut g = Graph::new();
    for (i, id) in ids.iter().enumerate() {
        g.add_node(id, Some(if i % 3 == 0 { "person" } else { "post" }));
    }
    let nodes_took = t.elapsed();
    let t = Instant::now();
    let added = g.extend_edges(named.iter().copied());
    let bulk = t.elapsed();
    println!(
        "add_node x{n}: {nodes_took:.1?} ({:.2} M nodes/s)",
        n as f64 / nodes_took.as_secs_f64() / 1e6
    );
    println!(
        "bulk extend_edges: {added} edges in {bulk:.1?} = {:.2} M edges/s; {} nodes, {} edges, \
         memory {:.1} MB",
        named.len() as f64 / bulk.as_secs_f64() / 1e6,
        g.node_count(),
        g.edge_count(),
        g.memory_bytes() as f64 / 1e6
    );

    let t = Instant::now();
    let mut inc = Graph::new();
    for &(a, r, b) in &named {
        inc.add_edge(a, r, b);
    }
    let took = t.elapsed();
    println!(
        "one-by-one add_edge: {:.2} M edges/s; memory {:.1} MB",
        named.len() as f64 / took.as_secs_f64() / 1e6,
        inc.memory_bytes() as f64 / 1e6
    );
    inc.shrink_to_fit();
    println!(
        "  after shrink_to_fit: memory {:.1} MB",
        inc.memory_bytes() as f64 / 1e6
    );
    let mut rng = Rng(7);
    let victims: Vec<(&str, &str, &str)> = (0..100_000)
        .map(|_| named[rng.below(named.len())])
        .collect();
    let t = Instant::now();
    let mut removed = 0;
    for &(a, r, b) in &victims {
        removed += usize::from(inc.remove_edge(a, r, b));
    }
    let took = t.elapsed();
    println!(
        "remove_edge: {removed} removed, {:.2} M ops/s",
        victims.len() as f64 / took.as_secs_f64() / 1e6
    );
    let t = Instant::now();
    for &(a, r, b) in &victims {
        inc.add_edge(a, r, b);
    }
    let took = t.elapsed();
    println!(
        "re-add after removals: {:.2} M ops/s",
        victims.len() as f64 / took.as_secs_f64() / 1e6
    );
    drop(inc);

    // ----- queries -----
    let starts: Vec<u32> = (0..1000).map(|_| rng.below(n) as u32).collect();
    let targets: Vec<u32> = (0..1000).map(|_| rng.below(n) as u32).collect();
    let any = RelFilter::any();
    let knows = g.rel_filter(["knows"]);
    let s = |i: u32| g.node(&ids[i as usize]).unwrap();

    let mut times = Vec::new();
    for &v in &starts {
        let v = s(v);
        let t = Instant::now();
        black_box(g.neighbors(v, Direction::Both, &any).count());
        times.push(t.elapsed());
    }
    println!("neighbors (both, count):       {}", pct(times));

    for (dir, rels, label) in [
        (Direction::Out, &any, "out, any relation"),
        (Direction::Both, &any, "both, any relation"),
        (Direction::Both, &knows, "both, 'knows'"),
    ] {
        for depth in [1, 2, 3] {
            let mut times = Vec::new();
            let mut total = 0usize;
            for &v in &starts {
                let v = s(v);
                let t = Instant::now();
                let r = g.expand(&[v], depth, dir, rels).unwrap();
                times.push(t.elapsed());
                total += r.len();
            }
            println!(
                "expand {depth}-hop distinct ({label}): {}  avg {:.0} nodes",
                pct(times),
                total as f64 / starts.len() as f64
            );
        }
    }

    for (opts, label) in [
        (
            TraverseOptions::new().max_depth(3),
            "traverse 3-hop out (paths kept)",
        ),
        (
            TraverseOptions::new()
                .direction(Direction::Both)
                .max_depth(3),
            "traverse 3-hop both (paths kept)",
        ),
        (
            TraverseOptions::new()
                .direction(Direction::Both)
                .max_depth(3)
                .limit(100),
            "traverse 3-hop both, limit 100",
        ),
    ] {
        let mut times = Vec::new();
        for &v in &starts {
            let v = s(v);
            let t = Instant::now();
            let walk = g.traverse(&[v], &opts).unwrap();
            if let Some(last) = walk.visits().last() {
                black_box(walk.path(last));
            }
            times.push(t.elapsed());
        }
        println!("{label}: {}", pct(times));
    }
    let err = g
        .traverse(
            &[s(starts[0])],
            &TraverseOptions::new().direction(Direction::Both),
        )
        .map(|w| w.len());
    println!("unbounded traverse of the whole graph: {err:?}");

    for (dir, label) in [(Direction::Out, "out"), (Direction::Both, "both")] {
        let mut times = Vec::new();
        let mut found = 0;
        let mut hops = 0;
        let opts = PathOptions::new().direction(dir);
        for (&a, &b) in starts.iter().zip(&targets) {
            let (a, b) = (s(a), s(b));
            let t = Instant::now();
            let p = g.shortest_path(a, b, &opts).unwrap();
            times.push(t.elapsed());
            if let Some(p) = p {
                found += 1;
                hops += p.edges.len();
            }
        }
        println!(
            "shortest_path ({label}): {}  found {found}/1000, avg {:.1} hops",
            pct(times),
            hops as f64 / found.max(1) as f64
        );
    }
    let mut times = Vec::new();
    let opts = PathOptions::new().direction(Direction::Both);
    for (&a, &b) in starts.iter().zip(&targets).take(200) {
        let (a, b) = (s(a), s(b));
        let mut w = |e: EdgeRef| Some(1.0 + f64::from((e.from ^ e.to) % 7));
        let t = Instant::now();
        black_box(g.cheapest_path(a, b, &opts, &mut w).unwrap());
        times.push(t.elapsed());
    }
    println!("cheapest_path (both, 200 pairs): {}", pct(times));

    let t = Instant::now();
    let c = g.connected_components(&any);
    println!(
        "connected_components: {} components in {:.1?}",
        c.count(),
        t.elapsed()
    );
    let t = Instant::now();
    let pr = g
        .pagerank(&PageRankOptions {
            tolerance: 1e-6,
            ..Default::default()
        })
        .unwrap();
    println!(
        "pagerank: {} iterations (converged {}) in {:.1?}",
        pr.iterations,
        pr.converged,
        t.elapsed()
    );
    let t = Instant::now();
    black_box(g.degree_centrality(Direction::Both, &any));
    println!("degree_centrality: {:.1?}", t.elapsed());
}
