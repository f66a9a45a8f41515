//! The Rust side of the graph benchmark driven by `bench/graph/run.sh`: generates a seeded
//! power-law graph once, then measures PluresDB (through `pluresdb-core`, the user-facing API
//! and its SQL table functions), the raw in-memory adjacency (`pluresdb-graph`) and SQLite's
//! recursive CTE on the same data, writing one JSON file per run for `report.py`.
//!
//! ```text
//! graph_bench gen       --data DIR [--nodes 100000] [--edges 1000000] [--queries 1000] [--seed 42]
//! graph_bench pluresdb  --data DIR --out FILE.json [--warm 20]
//! graph_bench raw       --data DIR --out FILE.json [--warm 20]
//! graph_bench sqlite    --data DIR --out FILE.json [--warm 20] [--budget 60] [--timeout 10]
//! ```
//!
//! The graph: `nodes` nodes `n0..`, `edges` distinct directed edges of one relation (`link`), no
//! self-loops. Sources are drawn from a Zipf(0.5) weight over a random ranking of the nodes and
//! targets from an independent Zipf(0.8) ranking (Chung-Lu style), so in-degrees follow a power
//! law with exponent about 2.25 (a few hubs with tens of thousands of followers) and out-degrees
//! a milder one (exponent about 3). Query starts and path pairs are drawn uniformly and written to
//! `starts.txt` and `pairs.txt` so every engine answers the same queries.
//!
//! Each query is timed on its own (wall clock, one thread); latencies are per query, in
//! microseconds. Before timing, the first `--warm` queries run once untimed.

use std::collections::HashSet;
use std::fs;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use pluresdb_bench::proc_status_bytes;
use pluresdb_core::{Database, Direction, OpenOptions, PathQuery, Traverse};
use serde_json::{Value, json};

/// The one relation of the generated graph.
const REL: &str = "link";
/// Deepest shortest path the recursive CTE looks for (it has no visited set, so deeper levels
/// revisit the whole graph).
const CTE_MAX_DEPTH: u32 = 6;

struct Args {
    cmd: String,
    data: PathBuf,
    out: Option<PathBuf>,
    nodes: usize,
    edges: usize,
    queries: usize,
    seed: u64,
    warm: usize,
    budget: f64,
    timeout: f64,
}

const USAGE: &str = "usage: graph_bench gen|pluresdb|ingest|raw|sqlite --data DIR [--out FILE.json] \
    [--nodes 100000] [--edges 1000000] [--queries 1000] [--seed 42] [--warm 20] \
    [--budget SECONDS per measurement (sqlite; default 60)] [--timeout SECONDS per query (sqlite; default 10)]";

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let cmd = it.next().ok_or(USAGE)?;
    if cmd == "-h" || cmd == "--help" {
        return Err(USAGE.into());
    }
    let mut args = Args {
        cmd,
        data: PathBuf::new(),
        out: None,
        nodes: 100_000,
        edges: 1_000_000,
        queries: 1000,
        seed: 42,
        warm: 20,
        budget: 60.0,
        timeout: 10.0,
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let bad = |e: &dyn std::fmt::Display| format!("{flag}: {e}");
        match flag.as_str() {
            "--data" => args.data = value()?.into(),
            "--out" => args.out = Some(value()?.into()),
            "--nodes" => args.nodes = value()?.parse().map_err(|e| bad(&e))?,
            "--edges" => args.edges = value()?.parse().map_err(|e| bad(&e))?,
            "--queries" => args.queries = value()?.parse().map_err(|e| bad(&e))?,
            "--seed" => args.seed = value()?.parse().map_err(|e| bad(&e))?,
            "--warm" => args.warm = value()?.parse().map_err(|e| bad(&e))?,
            "--budget" => args.budget = value()?.parse().map_err(|e| bad(&e))?,
            "--timeout" => args.timeout = value()?.parse().map_err(|e| bad(&e))?,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if args.data.as_os_str().is_empty() {
        return Err(format!("--data is required\n{USAGE}"));
    }
    Ok(args)
}

type Res<T> = Result<T, String>;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let result = match args.cmd.as_str() {
        "gen" => generate(&args),
        "pluresdb" | "ingest" => run_pluresdb(&args),
        "raw" => run_raw(&args),
        "sqlite" => run_sqlite(&args),
        other => Err(format!("unknown command {other:?}\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("graph_bench {}: {e}", args.cmd);
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The graph

/// SplitMix64: small, seeded, good enough for sampling.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        (self.unit() * n as f64) as usize
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

/// Draws node indices with probability proportional to `(rank + 1)^-alpha`, ranks assigned by
/// a random permutation.
struct Zipf {
    cumulative: Vec<f64>,
    node_of_rank: Vec<u32>,
}

impl Zipf {
    fn new(n: usize, alpha: f64, rng: &mut Rng) -> Zipf {
        let mut total = 0.0;
        let cumulative = (0..n)
            .map(|k| {
                total += ((k + 1) as f64).powf(-alpha);
                total
            })
            .collect();
        let mut node_of_rank: Vec<u32> = (0..n as u32).collect();
        rng.shuffle(&mut node_of_rank);
        Zipf {
            cumulative,
            node_of_rank,
        }
    }

    fn sample(&self, rng: &mut Rng) -> u32 {
        let x = rng.unit() * self.cumulative.last().copied().unwrap_or(0.0);
        let k = self.cumulative.partition_point(|&c| c <= x);
        self.node_of_rank[k.min(self.node_of_rank.len() - 1)]
    }
}

fn generate(args: &Args) -> Res<()> {
    let (n, m) = (args.nodes, args.edges);
    if n < 2 || m as f64 > 0.5 * n as f64 * (n as f64 - 1.0) {
        return Err(format!(
            "{m} edges do not fit sparsely in {n} nodes; use fewer edges"
        ));
    }
    fs::create_dir_all(&args.data).map_err(err)?;
    let t = Instant::now();
    let mut rng = Rng(args.seed);
    let sources = Zipf::new(n, 0.5, &mut rng);
    let targets = Zipf::new(n, 0.8, &mut rng);
    let mut seen: HashSet<u64> = HashSet::with_capacity(m);
    let mut edges: Vec<(u32, u32)> = Vec::with_capacity(m);
    while edges.len() < m {
        let (s, d) = (sources.sample(&mut rng), targets.sample(&mut rng));
        if s != d && seen.insert(u64::from(s) << 32 | u64::from(d)) {
            edges.push((s, d));
        }
    }
    drop(seen);

    let write = |name: &str, body: &mut dyn FnMut(&mut dyn Write) -> std::io::Result<()>| {
        let path = args.data.join(name);
        let mut w = BufWriter::new(fs::File::create(&path).map_err(|e| format!("{path:?}: {e}"))?);
        body(&mut w)
            .and_then(|()| w.flush())
            .map_err(|e| format!("{path:?}: {e}"))
    };
    write("nodes.csv", &mut |w| {
        writeln!(w, "id,n")?;
        (0..n as u32).try_for_each(|i| writeln!(w, "n{i},{i}"))
    })?;
    write("edges.csv", &mut |w| {
        writeln!(w, "src,dst")?;
        edges.iter().try_for_each(|(s, d)| writeln!(w, "n{s},n{d}"))
    })?;
    // Queries come from their own stream so they do not depend on how many edges were drawn.
    let mut qrng = Rng(args.seed ^ 0x5DEE_CE66_D1CE_5EED);
    let starts: Vec<u32> = (0..args.queries).map(|_| qrng.below(n) as u32).collect();
    let pairs: Vec<(u32, u32)> = (0..args.queries)
        .map(|_| {
            loop {
                let (a, b) = (qrng.below(n) as u32, qrng.below(n) as u32);
                if a != b {
                    break (a, b);
                }
            }
        })
        .collect();
    write("starts.txt", &mut |w| {
        starts.iter().try_for_each(|s| writeln!(w, "n{s}"))
    })?;
    write("pairs.txt", &mut |w| {
        pairs.iter().try_for_each(|(a, b)| writeln!(w, "n{a} n{b}"))
    })?;

    let mut out_deg = vec![0u32; n];
    let mut in_deg = vec![0u32; n];
    for &(s, d) in &edges {
        out_deg[s as usize] += 1;
        in_deg[d as usize] += 1;
    }
    let summary = |deg: &mut Vec<u32>| {
        deg.sort_unstable();
        json!({
            "max": deg[n - 1], "p99": deg[n * 99 / 100], "p50": deg[n / 2],
            "zero": deg.iter().take_while(|&&d| d == 0).count(),
        })
    };
    let meta = json!({
        "nodes": n, "edges": m, "queries": args.queries, "seed": args.seed, "relation": REL,
        "model": "directed Chung-Lu: sources Zipf(0.5), targets Zipf(0.8) over random rankings; distinct edges, no self-loops",
        "out_degree": summary(&mut out_deg), "in_degree": summary(&mut in_deg),
        "generate_s": t.elapsed().as_secs_f64(),
    });
    fs::write(
        args.data.join("meta.json"),
        serde_json::to_string_pretty(&meta).map_err(err)?,
    )
    .map_err(err)?;
    eprintln!(
        "generated {n} nodes, {m} edges in {:.1}s: {meta}",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

struct Data {
    nodes: Vec<String>,
    edges: Vec<(String, String)>,
    starts: Vec<String>,
    pairs: Vec<(String, String)>,
}

fn read_lines(path: &Path) -> Res<Vec<String>> {
    let f =
        fs::File::open(path).map_err(|e| format!("{path:?}: {e} (run `graph_bench gen` first)"))?;
    BufReader::new(f)
        .lines()
        .collect::<std::io::Result<_>>()
        .map_err(|e| format!("{path:?}: {e}"))
}

fn split2(line: &str, sep: char) -> Res<(String, String)> {
    let (a, b) = line
        .split_once(sep)
        .ok_or_else(|| format!("bad line {line:?}"))?;
    Ok((a.to_owned(), b.to_owned()))
}

fn load(dir: &Path, with_graph: bool) -> Res<Data> {
    let (nodes, edges) = if with_graph {
        let nodes = read_lines(&dir.join("nodes.csv"))?
            .iter()
            .skip(1)
            .map(|l| split2(l, ',').map(|(id, _)| id))
            .collect::<Res<_>>()?;
        let edges = read_lines(&dir.join("edges.csv"))?
            .iter()
            .skip(1)
            .map(|l| split2(l, ','))
            .collect::<Res<_>>()?;
        (nodes, edges)
    } else {
        (Vec::new(), Vec::new())
    };
    let starts = read_lines(&dir.join("starts.txt"))?;
    let pairs = read_lines(&dir.join("pairs.txt"))?
        .iter()
        .map(|l| split2(l, ' '))
        .collect::<Res<_>>()?;
    Ok(Data {
        nodes,
        edges,
        starts,
        pairs,
    })
}

// ---------------------------------------------------------------------------------------------
// Measuring

/// Why a query gave no answer.
enum Miss {
    Timeout,
    Error(String),
}

/// One measured query kind: latencies and answers (None: not run, timed out or failed).
struct Measured {
    lat_us: Vec<f64>,
    lat_by_query: Vec<Option<f64>>,
    answers: Vec<Option<i64>>,
    timeouts: usize,
    errors: Vec<String>,
    timeout_us: Option<f64>,
    budget_hit: bool,
}

impl Measured {
    fn to_json(&self) -> Value {
        let mut sorted = self.lat_us.clone();
        // A timed-out query counts at the timeout, so percentiles are lower bounds then.
        if let Some(t) = self.timeout_us {
            sorted.extend(std::iter::repeat_n(t, self.timeouts));
        }
        sorted.sort_by(f64::total_cmp);
        let pct = |p: f64| -> Value {
            if sorted.is_empty() {
                return Value::Null;
            }
            let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
            json!(sorted[rank - 1])
        };
        let mean = if sorted.is_empty() {
            Value::Null
        } else {
            json!(sorted.iter().sum::<f64>() / sorted.len() as f64)
        };
        json!({
            "n": self.lat_us.len(), "attempted": self.lat_us.len() + self.timeouts + self.errors.len(),
            "p50_us": pct(0.50), "p99_us": pct(0.99), "mean_us": mean, "max_us": pct(1.0),
            "timeouts": self.timeouts, "timeout_s": self.timeout_us.map(|t| t / 1e6),
            "errors": self.errors.len(), "first_error": self.errors.first(),
            "budget_hit": self.budget_hit, "answers": self.answers,
            "lat_us": self.lat_by_query,
        })
    }
}

/// Runs `f` on the first `warm` items untimed, then on each item timed, until `budget_s` is
/// spent (the rest stay unanswered).
fn measure<T>(
    label: &str,
    items: &[T],
    warm: usize,
    budget_s: f64,
    timeout_s: Option<f64>,
    mut f: impl FnMut(&T) -> Result<i64, Miss>,
) -> Measured {
    for item in items.iter().take(warm) {
        let _ = f(item);
    }
    let mut m = Measured {
        lat_us: Vec::with_capacity(items.len()),
        lat_by_query: vec![None; items.len()],
        answers: vec![None; items.len()],
        timeouts: 0,
        errors: Vec::new(),
        timeout_us: timeout_s.map(|t| t * 1e6),
        budget_hit: false,
    };
    let began = Instant::now();
    for (i, item) in items.iter().enumerate() {
        if began.elapsed().as_secs_f64() > budget_s {
            m.budget_hit = true;
            break;
        }
        let t = Instant::now();
        let r = f(item);
        let us = t.elapsed().as_secs_f64() * 1e6;
        match r {
            Ok(v) => {
                m.lat_us.push(us);
                m.lat_by_query[i] = Some(us);
                m.answers[i] = Some(v);
            }
            Err(Miss::Timeout) => m.timeouts += 1,
            Err(Miss::Error(e)) => m.errors.push(e),
        }
    }
    let j = m.to_json();
    eprintln!(
        "  {label:<28} n={:<5} p50={:>10.1}us p99={:>10.1}us timeouts={} errors={}{}",
        m.lat_us.len(),
        j["p50_us"].as_f64().unwrap_or(f64::NAN),
        j["p99_us"].as_f64().unwrap_or(f64::NAN),
        m.timeouts,
        m.errors.len(),
        if m.budget_hit { " (budget spent)" } else { "" }
    );
    m
}

fn miss(e: impl std::fmt::Display) -> Miss {
    Miss::Error(e.to_string())
}

fn write_json(args: &Args, value: &Value) -> Res<()> {
    let text = serde_json::to_string(value).map_err(err)?;
    match &args.out {
        Some(p) => fs::write(p, text).map_err(|e| format!("{p:?}: {e}")),
        None => {
            println!("{text}");
            Ok(())
        }
    }
}

fn file_bytes(path: &Path) -> u64 {
    ["", "-wal", "-shm"]
        .iter()
        .filter_map(|suffix| {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            fs::metadata(PathBuf::from(p)).ok().map(|m| m.len())
        })
        .sum()
}

fn remove_db(path: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = fs::remove_file(PathBuf::from(p));
    }
}

fn path_len(nodes: Option<usize>) -> i64 {
    nodes.map_or(-1, |n| n as i64 - 1)
}

// ---------------------------------------------------------------------------------------------
// PluresDB through pluresdb-core

fn run_pluresdb(args: &Args) -> Res<()> {
    let data = load(&args.data, true)?;
    let work = args.data.join("work");
    fs::create_dir_all(&work).map_err(err)?;
    let path = work.join("pluresdb.db");
    remove_db(&path);
    eprintln!("PluresDB: ingest into {path:?}");

    let db = Database::open(&path).map_err(err)?;
    let t = Instant::now();
    let fields: Vec<serde_json::Value> = (0..data.nodes.len()).map(|i| json!({ "n": i })).collect();
    db.put_many(data.nodes.iter().map(String::as_str).zip(&fields))
        .map_err(err)?;
    let nodes_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let linked = db
        .link_many(
            data.edges
                .iter()
                .map(|(s, d)| (s.as_str(), REL, d.as_str(), None)),
        )
        .map_err(err)?;
    let edges_s = t.elapsed().as_secs_f64();
    if linked != data.edges.len() {
        return Err(format!(
            "link_many created {linked} of {} edges",
            data.edges.len()
        ));
    }
    eprintln!(
        "  nodes: {:.2}s ({:.0}/s)  edges: {:.2}s ({:.0}/s)",
        nodes_s,
        data.nodes.len() as f64 / nodes_s,
        edges_s,
        data.edges.len() as f64 / edges_s
    );
    if args.cmd == "ingest" {
        // Only the load, for timing it alone.
        return Ok(());
    }
    drop(db);
    let bytes = file_bytes(&path);

    // Reopen: the adjacency is built from the tables by the first graph query.
    let t = Instant::now();
    let db = Database::open(&path).map_err(err)?;
    let open_s = t.elapsed().as_secs_f64();
    // Seconds for one small graph query (the first one after a write catches the graph up).
    let timed_query = || -> Res<f64> {
        let t = Instant::now();
        db.degree(&data.starts[0], Direction::Out, Some(REL))
            .map_err(err)?;
        Ok(t.elapsed().as_secs_f64())
    };
    let first_query_s = timed_query()?;
    let second_query_s = timed_query()?;
    eprintln!(
        "  reopen: open {:.3}s, first query (adjacency build) {:.3}s, second query {:.6}s",
        open_s, first_query_s, second_query_s
    );
    // The adjacency build on fresh handles, without and with SQLite's memory map, alternated:
    // medians of BUILDS each.
    const BUILDS: usize = 5;
    let mut builds: [Vec<f64>; 2] = Default::default();
    for _ in 0..BUILDS {
        for (mib, times) in [0, 256].into_iter().zip(builds.iter_mut()) {
            let fresh = OpenOptions::new()
                .mmap_size_mib(mib)
                .open(&path)
                .map_err(err)?;
            let t = Instant::now();
            fresh
                .degree(&data.starts[0], Direction::Out, Some(REL))
                .map_err(err)?;
            times.push(t.elapsed().as_secs_f64());
        }
    }
    let [build_plain_s, build_mmap_s] = builds.map(|mut times| {
        times.sort_by(f64::total_cmp);
        times[BUILDS / 2]
    });
    eprintln!(
        "  adjacency build, median of {BUILDS}: {build_plain_s:.3}s, with a 256 MiB memory map {build_mmap_s:.3}s"
    );

    let (w, b) = (args.warm, f64::INFINITY);
    let starts = &data.starts;
    let pairs = &data.pairs;
    let walk = |id: &String, dir: Direction, max: i64| -> Result<i64, Miss> {
        db.traverse(
            &Traverse::from([id])
                .relation(REL)
                .direction(dir)
                .depth(1, max),
        )
        .map(|r| r.len() as i64)
        .map_err(miss)
    };
    let path_api = |(a, z): &(String, String), dir: Direction| -> Result<i64, Miss> {
        db.shortest_path(a, z, &PathQuery::new().relation(REL).direction(dir))
            .map(|p| path_len(p.map(|p| p.nodes.len())))
            .map_err(miss)
    };
    eprintln!("PluresDB Rust API:");
    let api = [
        (
            "1hop",
            measure("1-hop traverse(1..1)", starts, w, b, None, |s| {
                walk(s, Direction::Out, 1)
            }),
        ),
        (
            "3hop_out",
            measure("3-hop traverse out", starts, w, b, None, |s| {
                walk(s, Direction::Out, 3)
            }),
        ),
        (
            "3hop_both",
            measure("3-hop traverse both", starts, w, b, None, |s| {
                walk(s, Direction::Both, 3)
            }),
        ),
        (
            "sp_out",
            measure("shortest_path out", pairs, w, b, None, |p| {
                path_api(p, Direction::Out)
            }),
        ),
        (
            "sp_both",
            measure("shortest_path both", pairs, w, b, None, |p| {
                path_api(p, Direction::Both)
            }),
        ),
        (
            "1hop_neighbors",
            measure("1-hop db.neighbors() (SQL)", starts, w, b, None, |s| {
                db.neighbors(s, Direction::Out, Some(REL))
                    .map(|n| n.len() as i64)
                    .map_err(miss)
            }),
        ),
        (
            "1hop_degree",
            measure("1-hop db.degree()", starts, w, b, None, |s| {
                db.degree(s, Direction::Out, Some(REL))
                    .map(|n| n as i64)
                    .map_err(miss)
            }),
        ),
    ];

    eprintln!("PluresDB SQL table functions:");
    let count = |sql: &str, params: &[&str]| -> Result<i64, Miss> {
        db.value(sql, params)
            .map_err(miss)?
            .as_i64()
            .ok_or_else(|| Miss::Error("count is not an integer".into()))
    };
    let sql = [
        (
            "1hop",
            measure("1-hop graph_neighbors", starts, w, b, None, |s| {
                count(
                    &format!("SELECT count(*) FROM graph_neighbors(?1, '{REL}', 'out')"),
                    &[s],
                )
            }),
        ),
        (
            "3hop_out",
            measure("3-hop graph_traverse out", starts, w, b, None, |s| {
                count(
                    &format!("SELECT count(*) FROM graph_traverse(?1, '{REL}', 'out', 1, 3)"),
                    &[s],
                )
            }),
        ),
        (
            "3hop_both",
            measure("3-hop graph_traverse both", starts, w, b, None, |s| {
                count(
                    &format!("SELECT count(*) FROM graph_traverse(?1, '{REL}', 'both', 1, 3)"),
                    &[s],
                )
            }),
        ),
        (
            "sp_out",
            measure("graph_shortest_path out", pairs, w, b, None, |(a, z)| {
                count(
                    &format!(
                        "SELECT count(*) - 1 FROM graph_shortest_path(?1, ?2, '{REL}', 'out')"
                    ),
                    &[a, z],
                )
            }),
        ),
        (
            "sp_both",
            measure("graph_shortest_path both", pairs, w, b, None, |(a, z)| {
                count(
                    &format!(
                        "SELECT count(*) - 1 FROM graph_shortest_path(?1, ?2, '{REL}', 'both')"
                    ),
                    &[a, z],
                )
            }),
        ),
    ];

    // A live handle: the adjacency is loaded, then a bulk write lands; the next query catches up
    // through the index log (one row lookup per changed edge).
    let extra = (data.edges.len() / 10).clamp(1, 100_000);
    let mut rng = Rng(args.seed ^ 0xE47A);
    let mut extra_edges: Vec<(&str, &str)> = Vec::with_capacity(extra);
    let mut seen = HashSet::new();
    while extra_edges.len() < extra {
        let (a, z) = (rng.below(data.nodes.len()), rng.below(data.nodes.len()));
        if a != z && seen.insert((a, z)) {
            extra_edges.push((&data.nodes[a], &data.nodes[z]));
        }
    }
    let t = Instant::now();
    db.link_many(extra_edges.iter().map(|&(a, z)| (a, "extra", z, None)))
        .map_err(err)?;
    let extra_ingest_s = t.elapsed().as_secs_f64();
    let catch_up_s = timed_query()?;
    eprintln!(
        "  live handle: link_many of {extra} more edges {:.2}s ({:.0}/s), next query (catch-up) {:.3}s",
        extra_ingest_s,
        extra as f64 / extra_ingest_s,
        catch_up_s
    );

    let to_obj = |ms: &[(&str, Measured)]| -> Value {
        Value::Object(
            ms.iter()
                .map(|(k, m)| ((*k).to_owned(), m.to_json()))
                .collect(),
        )
    };
    let ingest = json!({
        "nodes": data.nodes.len(), "edges": data.edges.len(),
        "nodes_s": nodes_s, "edges_s": edges_s,
        "nodes_per_s": data.nodes.len() as f64 / nodes_s,
        "edges_per_s": data.edges.len() as f64 / edges_s,
        "file_bytes": bytes,
    });
    let open = json!({
        "open_s": open_s, "first_query_s": first_query_s, "second_query_s": second_query_s,
        "build_plain_s": build_plain_s, "build_mmap_s": build_mmap_s,
    });
    write_json(
        args,
        &json!({
            "rows": [
                { "engine": "PluresDB (Rust API)", "key": "pluresdb_api", "ingest": ingest, "open": open, "metrics": to_obj(&api) },
                { "engine": "PluresDB (SQL table functions)", "key": "pluresdb_sql", "metrics": to_obj(&sql) },
            ],
            "live_handle": {
                "extra_edges": extra, "link_many_s": extra_ingest_s,
                "edges_per_s": extra as f64 / extra_ingest_s, "catch_up_query_s": catch_up_s,
            },
            "peak_rss_bytes": proc_status_bytes("VmHWM:"),
        }),
    )
}

// ---------------------------------------------------------------------------------------------
// The raw in-memory adjacency (pluresdb-graph), no database around it

fn run_raw(args: &Args) -> Res<()> {
    use pluresdb_graph::{Direction as D, Graph, PathOptions};
    let data = load(&args.data, true)?;
    eprintln!("pluresdb-graph raw adjacency:");
    let t = Instant::now();
    let mut g = Graph::new();
    for id in &data.nodes {
        g.add_node(id, None);
    }
    g.extend_edges(
        data.edges
            .iter()
            .map(|(s, d)| (s.as_str(), REL, d.as_str())),
    );
    let build_s = t.elapsed().as_secs_f64();
    eprintln!(
        "  build from {} in-memory edges: {:.3}s, {} MB",
        data.edges.len(),
        build_s,
        g.memory_bytes() / 1_000_000
    );
    let rels = g.rel_filter([REL]);
    let node = |id: &str| {
        g.node(id)
            .ok_or_else(|| Miss::Error(format!("no node {id}")))
    };
    let (w, b) = (args.warm, f64::INFINITY);
    let expand = |id: &String, dir: D, depth: u32| -> Result<i64, Miss> {
        g.expand(&[node(id)?], depth, dir, &rels)
            .map(|v| v.len() as i64)
            .map_err(miss)
    };
    let path = |(a, z): &(String, String), dir: D| -> Result<i64, Miss> {
        let opts = PathOptions::new().direction(dir).relations(rels.clone());
        g.shortest_path(node(a)?, node(z)?, &opts)
            .map(|p| path_len(p.map(|p| p.nodes.len())))
            .map_err(miss)
    };
    let ms = [
        (
            "1hop",
            measure("1-hop degree", &data.starts, w, b, None, |s| {
                Ok(g.degree(node(s)?, D::Out, &rels) as i64)
            }),
        ),
        (
            "3hop_out",
            measure("3-hop expand out", &data.starts, w, b, None, |s| {
                expand(s, D::Out, 3)
            }),
        ),
        (
            "3hop_both",
            measure("3-hop expand both", &data.starts, w, b, None, |s| {
                expand(s, D::Both, 3)
            }),
        ),
        (
            "3hop_both_traverse",
            measure("3-hop traverse both", &data.starts, w, b, None, |s| {
                let opts = pluresdb_graph::TraverseOptions::new()
                    .direction(D::Both)
                    .relations(rels.clone())
                    .max_depth(3);
                g.traverse(&[node(s)?], &opts)
                    .map(|t| t.len() as i64)
                    .map_err(miss)
            }),
        ),
        (
            "sp_out",
            measure("shortest_path out", &data.pairs, w, b, None, |p| {
                path(p, D::Out)
            }),
        ),
        (
            "sp_both",
            measure("shortest_path both", &data.pairs, w, b, None, |p| {
                path(p, D::Both)
            }),
        ),
    ];
    write_json(
        args,
        &json!({
            "rows": [{
                "engine": "pluresdb-graph (raw adjacency, no DB)", "key": "raw",
                "open": { "build_s": build_s, "memory_bytes": g.memory_bytes() },
                "metrics": Value::Object(ms.iter().map(|(k, m)| ((*k).to_owned(), m.to_json())).collect()),
            }],
        }),
    )
}

// ---------------------------------------------------------------------------------------------
// SQLite: a plain edge table and recursive CTEs

const SQLITE_SCHEMA: &str = "
CREATE TABLE nodes (id TEXT PRIMARY KEY, n INTEGER NOT NULL);
CREATE TABLE edges (src TEXT NOT NULL, dst TEXT NOT NULL);
CREATE INDEX edges_src ON edges(src, dst);
CREATE INDEX edges_dst ON edges(dst, src);
";

const SQLITE_PRAGMAS: &str =
    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA cache_size = -16384;";

/// Distinct nodes within 1..3 hops: a depth-bounded BFS. `UNION` drops repeated (id, depth)
/// rows only, so a node reached at several depths is expanded once per depth; the outer
/// `count(DISTINCT id) - 1` removes those duplicates and the start (always present at depth 0).
const CTE_3HOP_OUT: &str = "
WITH RECURSIVE r(id, d) AS (
    SELECT ?1, 0
    UNION
    SELECT e.dst, r.d + 1 FROM r JOIN edges e ON e.src = r.id WHERE r.d < 3)
SELECT count(DISTINCT id) - 1 FROM r";

const CTE_3HOP_BOTH: &str = "
WITH RECURSIVE r(id, d) AS (
    SELECT ?1, 0
    UNION
    SELECT e.dst, r.d + 1 FROM r JOIN edges e ON e.src = r.id WHERE r.d < 3
    UNION
    SELECT e.src, r.d + 1 FROM r JOIN edges e ON e.dst = r.id WHERE r.d < 3)
SELECT count(DISTINCT id) - 1 FROM r";

/// Fewest hops: SQLite's recursive CTE queue is FIFO, so rows come out in nondecreasing depth
/// and `LIMIT 1` stops the recursion at the first row that reaches the target.
fn cte_path(both: bool) -> String {
    let back = if both {
        format!(
            "UNION SELECT e.src, r.d + 1 FROM r JOIN edges e ON e.dst = r.id WHERE r.d < {CTE_MAX_DEPTH}"
        )
    } else {
        String::new()
    };
    format!(
        "WITH RECURSIVE r(id, d) AS (
            SELECT ?1, 0
            UNION
            SELECT e.dst, r.d + 1 FROM r JOIN edges e ON e.src = r.id WHERE r.d < {CTE_MAX_DEPTH}
            {back})
        SELECT d FROM r WHERE id = ?2 LIMIT 1"
    )
}

fn run_sqlite(args: &Args) -> Res<()> {
    use rusqlite::{Connection, ErrorCode, OptionalExtension};
    let data = load(&args.data, true)?;
    let work = args.data.join("work");
    fs::create_dir_all(&work).map_err(err)?;
    let path = work.join("sqlite.db");
    remove_db(&path);
    eprintln!("SQLite: ingest into {path:?}");
    let mut conn = Connection::open(&path).map_err(err)?;
    conn.execute_batch(SQLITE_PRAGMAS).map_err(err)?;
    conn.execute_batch(SQLITE_SCHEMA).map_err(err)?;
    let t = Instant::now();
    {
        let tx = conn.transaction().map_err(err)?;
        {
            let mut ins = tx
                .prepare("INSERT INTO nodes VALUES (?1, ?2)")
                .map_err(err)?;
            for (i, id) in data.nodes.iter().enumerate() {
                ins.execute(rusqlite::params![id, i as i64]).map_err(err)?;
            }
        }
        tx.commit().map_err(err)?;
    }
    let nodes_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    {
        let tx = conn.transaction().map_err(err)?;
        {
            let mut ins = tx
                .prepare("INSERT INTO edges VALUES (?1, ?2)")
                .map_err(err)?;
            for (s, d) in &data.edges {
                ins.execute([s, d]).map_err(err)?;
            }
        }
        tx.commit().map_err(err)?;
    }
    let edges_s = t.elapsed().as_secs_f64();
    conn.execute_batch("ANALYZE").map_err(err)?;
    drop(conn);
    let bytes = file_bytes(&path);
    eprintln!(
        "  nodes: {:.2}s ({:.0}/s)  edges: {:.2}s ({:.0}/s)",
        nodes_s,
        data.nodes.len() as f64 / nodes_s,
        edges_s,
        data.edges.len() as f64 / edges_s
    );

    let t = Instant::now();
    let mut conn = Connection::open(&path).map_err(err)?;
    conn.execute_batch(SQLITE_PRAGMAS).map_err(err)?;
    let open_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let _: i64 = conn
        .query_row(
            "SELECT count(*) FROM edges WHERE src = ?1",
            [&data.starts[0]],
            |r| r.get(0),
        )
        .map_err(err)?;
    let first_query_s = t.elapsed().as_secs_f64();

    // Each query gets a deadline; the progress handler interrupts it past the deadline.
    let base = Instant::now();
    let deadline = Arc::new(AtomicU64::new(u64::MAX));
    {
        let deadline = deadline.clone();
        conn.progress_handler(
            10_000,
            Some(move || base.elapsed().as_nanos() as u64 > deadline.load(Ordering::Relaxed)),
        )
        .map_err(err)?;
    }
    let timeout = args.timeout;
    let run = |sql: &str, params: &[&str]| -> Result<i64, Miss> {
        let until = base.elapsed().as_nanos() as u64 + (timeout * 1e9) as u64;
        deadline.store(until, Ordering::Relaxed);
        let mut stmt = conn.prepare_cached(sql).map_err(miss)?;
        let r = stmt
            .query_row(rusqlite::params_from_iter(params), |r| r.get::<_, i64>(0))
            .optional();
        deadline.store(u64::MAX, Ordering::Relaxed);
        match r {
            Ok(v) => Ok(v.unwrap_or(-1)),
            Err(e) if e.sqlite_error_code() == Some(ErrorCode::OperationInterrupted) => {
                Err(Miss::Timeout)
            }
            Err(e) => Err(miss(e)),
        }
    };
    let (w, b, to) = (args.warm.min(3), args.budget, Some(args.timeout));
    let path_out = cte_path(false);
    let path_both = cte_path(true);
    eprintln!(
        "SQLite recursive CTE (per measurement: budget {}s, timeout {}s per query):",
        args.budget, args.timeout
    );
    let ms = [
        (
            "1hop",
            measure(
                "1-hop SELECT count(*)",
                &data.starts,
                args.warm,
                b,
                to,
                |s| run("SELECT count(*) FROM edges WHERE src = ?1", &[s]),
            ),
        ),
        (
            "3hop_out",
            measure("3-hop CTE out", &data.starts, w, b, to, |s| {
                run(CTE_3HOP_OUT, &[s])
            }),
        ),
        (
            "3hop_both",
            measure("3-hop CTE both", &data.starts, w, b, to, |s| {
                run(CTE_3HOP_BOTH, &[s])
            }),
        ),
        (
            "sp_out",
            measure("shortest path CTE out", &data.pairs, w, b, to, |(a, z)| {
                run(&path_out, &[a, z])
            }),
        ),
        (
            "sp_both",
            measure("shortest path CTE both", &data.pairs, w, b, to, |(a, z)| {
                run(&path_both, &[a, z])
            }),
        ),
    ];
    write_json(
        args,
        &json!({
            "rows": [{
                "engine": format!("SQLite {} recursive CTE", rusqlite::version()), "key": "sqlite_cte",
                "ingest": {
                    "nodes": data.nodes.len(), "edges": data.edges.len(),
                    "nodes_s": nodes_s, "edges_s": edges_s,
                    "nodes_per_s": data.nodes.len() as f64 / nodes_s,
                    "edges_per_s": data.edges.len() as f64 / edges_s,
                    "file_bytes": bytes,
                },
                "open": { "open_s": open_s, "first_query_s": first_query_s },
                "metrics": Value::Object(ms.iter().map(|(k, m)| ((*k).to_owned(), m.to_json())).collect()),
                "schema": SQLITE_SCHEMA.trim(),
                "sp_max_depth": CTE_MAX_DEPTH,
                "queries": { "3hop_out": CTE_3HOP_OUT.trim(), "3hop_both": CTE_3HOP_BOTH.trim(), "sp_out": path_out, "sp_both": path_both },
            }],
        }),
    )
}
