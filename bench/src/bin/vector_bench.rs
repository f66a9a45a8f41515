//! Builds PluresDB's HNSW index over a data set written by `bench/vector/run.py`, sweeps the
//! search breadth `ef`, and prints one JSON engine result (the same shape the Python peers print),
//! so `run.py` can put every engine in one table.
//!
//! Files are raw little-endian arrays: `base` and `query` are f32 rows of `--dim` components,
//! `gt` is i32 rows holding the exact nearest labels of each query (nearest first; labels are row
//! numbers of `base`).
//!
//! Everything runs on one thread: inserts one by one, then each query on its own, timed over all
//! queries. A pass is repeated until `--min-seconds` have been spent (at most `--max-passes`) and
//! the fastest pass is reported. Times are wall clock (`qps`, `seconds`) and process CPU time
//! (`qps_cpu`, `cpu_seconds`).
//!
//! ```text
//! vector_bench --base B.f32 --query Q.f32 --gt G.i32 --dim 128 [--metric l2|cosine|ip]
//!              [--k 10] [--m 16] [--ef-construction 200] [--ef 10,16,32,...] [--seed N]
//!              [--min-seconds 0.3] [--max-passes 5] [--engine index|sql]
//! ```
//!
//! `--engine sql` measures the same index as users reach it from SQL: the rows go into a table
//! of a PluresDB database file (f32 BLOBs, one transaction), `pluresdb_vector_index` and the
//! first query build the index (the build time), and each query is one run of a prepared
//! `SELECT rowid FROM vector_search('items', 'embedding', ?, k, '{"ef": N}')`.

use std::collections::HashSet;
use std::process::ExitCode;
use std::time::Instant;

use pluresdb_bench::proc_status_bytes;
use pluresdb_core::Database;
use pluresdb_vector::{Hnsw, HnswParams, Metric};
use serde_json::{Value, json};

struct Args {
    base: String,
    query: String,
    gt: String,
    dim: usize,
    metric: Metric,
    k: usize,
    m: usize,
    ef_construction: usize,
    efs: Vec<usize>,
    seed: u64,
    min_seconds: f64,
    max_passes: usize,
    /// `index`: the `pluresdb-vector` crate directly; `sql`: a table in a PluresDB database,
    /// indexed with `pluresdb_vector_index` and queried with `vector_search` through SQL.
    engine: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        base: String::new(),
        query: String::new(),
        gt: String::new(),
        dim: 0,
        metric: Metric::L2,
        k: 10,
        m: 16,
        ef_construction: 200,
        efs: vec![10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512],
        seed: HnswParams::default().seed,
        min_seconds: 0.3,
        max_passes: 5,
        engine: "index".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let bad = |e: &dyn std::fmt::Display| format!("{flag}: {e}");
        match flag.as_str() {
            "--base" => args.base = value()?,
            "--query" => args.query = value()?,
            "--gt" => args.gt = value()?,
            "--dim" => args.dim = value()?.parse().map_err(|e| bad(&e))?,
            "--metric" => args.metric = value()?.parse().map_err(|e| bad(&e))?,
            "--k" => args.k = value()?.parse().map_err(|e| bad(&e))?,
            "--m" => args.m = value()?.parse().map_err(|e| bad(&e))?,
            "--ef-construction" => args.ef_construction = value()?.parse().map_err(|e| bad(&e))?,
            "--ef" => {
                args.efs = value()?
                    .split(',')
                    .map(|s| s.trim().parse::<usize>())
                    .collect::<Result<_, _>>()
                    .map_err(|e| bad(&e))?
            }
            "--seed" => args.seed = value()?.parse().map_err(|e| bad(&e))?,
            "--min-seconds" => args.min_seconds = value()?.parse().map_err(|e| bad(&e))?,
            "--max-passes" => args.max_passes = value()?.parse().map_err(|e| bad(&e))?,
            "--engine" => args.engine = value()?,
            "-h" | "--help" => {
                return Err(
                    "usage: vector_bench --base B.f32 --query Q.f32 --gt G.i32 --dim D \
                     [--metric l2|cosine|ip] [--k 10] [--m 16] [--ef-construction 200] \
                     [--ef 10,16,...] [--seed N] [--min-seconds 0.3] [--max-passes 5] [--engine index|sql]"
                        .into(),
                );
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    if !["index", "sql"].contains(&args.engine.as_str()) {
        return Err(format!("--engine {:?}: use index or sql", args.engine));
    }
    if args.base.is_empty() || args.query.is_empty() || args.gt.is_empty() || args.dim == 0 {
        return Err("--base, --query, --gt and --dim are required (try --help)".into());
    }
    Ok(args)
}

/// Reads a raw little-endian array of 4-byte values.
fn read_raw<T>(path: &str, conv: fn([u8; 4]) -> T) -> Result<Vec<T>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    if bytes.len() % 4 != 0 {
        return Err(format!(
            "{path}: size {} is not a multiple of 4",
            bytes.len()
        ));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| conv([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// Resident set size and its high-water mark, in bytes (None off Linux).
fn rss() -> Option<(u64, u64)> {
    Some((proc_status_bytes("VmRSS:")?, proc_status_bytes("VmHWM:")?))
}

/// CPU time of this process in seconds (`CLOCK_PROCESS_CPUTIME_ID`), the same clock as Python's
/// `time.process_time()`: less disturbed than wall time when other work shares the machine.
#[cfg(target_os = "linux")]
fn cpu_seconds() -> f64 {
    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }
    unsafe extern "C" {
        fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    }
    const CLOCK_PROCESS_CPUTIME_ID: i32 = 2;
    let mut ts = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec (64-bit fields on 64-bit Linux) through the pointer.
    let rc = unsafe { clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return f64::NAN;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

#[cfg(not(target_os = "linux"))]
fn cpu_seconds() -> f64 {
    f64::NAN
}

fn run(args: &Args) -> Result<Value, String> {
    let dim = args.dim;
    let base = read_raw(&args.base, f32::from_le_bytes)?;
    let queries = read_raw(&args.query, f32::from_le_bytes)?;
    let gt = read_raw(&args.gt, i32::from_le_bytes)?;
    if base.len() % dim != 0 || queries.len() % dim != 0 {
        return Err(format!("data files are not whole rows of {dim} floats"));
    }
    let (n, nq) = (base.len() / dim, queries.len() / dim);
    if nq == 0 || gt.len() % nq != 0 || gt.len() / nq < args.k {
        return Err(format!(
            "ground truth has {} labels for {nq} queries; need at least k={} per query",
            gt.len(),
            args.k
        ));
    }
    let gt_k = gt.len() / nq;

    let params = HnswParams {
        m: args.m,
        ef_construction: args.ef_construction,
        ef_search: args.efs.first().copied().unwrap_or(64),
        seed: args.seed,
    };
    // Reset the peak-RSS mark so VmHWM after the build is the peak of the build itself.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let rss_before = rss();
    let k = args.k;
    let built = if args.engine == "sql" {
        build_sql(args, &base)?
    } else {
        build_index(args, &base, params)?
    };
    let rss_after = rss();
    eprintln!(
        "{}: built {n} x {dim} in {:.2}s ({:.0} inserts/s)",
        built.name,
        built.seconds,
        n as f64 / built.seconds
    );
    let mut search = built.search;

    let mut found: Vec<i64> = vec![-1; nq * k];
    let mut sweep = Vec::new();
    for &ef in &args.efs {
        let mut best = f64::INFINITY;
        let mut best_cpu = f64::INFINITY;
        let mut spent = 0.0;
        let mut passes = 0;
        while passes < args.max_passes.max(1) && (passes == 0 || spent < args.min_seconds) {
            let cpu_start = cpu_seconds();
            let start = Instant::now();
            for (qi, q) in queries.chunks_exact(dim).enumerate() {
                let out = &mut found[qi * k..qi * k + k];
                out.fill(-1);
                search(q, k, ef, out)?;
            }
            let t = start.elapsed().as_secs_f64();
            best = best.min(t);
            best_cpu = best_cpu.min(cpu_seconds() - cpu_start);
            spent += t;
            passes += 1;
        }
        let mut hits = 0usize;
        for qi in 0..nq {
            let truth: HashSet<i64> = gt[qi * gt_k..qi * gt_k + k]
                .iter()
                .map(|&l| l as i64)
                .collect();
            hits += found[qi * k..qi * k + k]
                .iter()
                .filter(|l| truth.contains(l))
                .count();
        }
        let recall = hits as f64 / (nq * k) as f64;
        let qps = nq as f64 / best;
        eprintln!(
            "{}: ef={ef:<4} recall@{k}={recall:.4} qps={qps:.0}",
            built.name
        );
        sweep.push(json!({
            "ef": ef,
            "recall": recall,
            "qps": qps,
            "qps_cpu": nq as f64 / best_cpu,
            "passes": passes,
        }));
    }

    let rss_delta = match (rss_before, rss_after) {
        (Some((a, _)), Some((b, _))) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let hwm_delta = match (rss_before, rss_after) {
        (Some((a, _)), Some((_, b))) => Some(b.saturating_sub(a)),
        _ => None,
    };
    Ok(json!({
        "engine": built.name,
        "version": env!("CARGO_PKG_VERSION"),
        "detail": built.detail,
        "n": n,
        "dim": dim,
        "metric": args.metric.name(),
        "k": k,
        "params": {"m": args.m, "ef_construction": args.ef_construction, "seed": args.seed},
        "build": {"threads": 1, "seconds": built.seconds, "cpu_seconds": built.cpu_seconds},
        "query_mode": built.query_mode,
        "memory": {
            "index_bytes": built.index_bytes,
            "rss_delta_bytes": rss_delta,
            "peak_rss_delta_bytes": hwm_delta,
        },
        "len": built.len,
        "sweep": sweep,
    }))
}

/// Writes the labels of the `k` nearest to `query` at search breadth `ef` into `out`.
type Search<'a> = Box<dyn FnMut(&[f32], usize, usize, &mut [i64]) -> Result<(), String> + 'a>;

/// An index ready to query.
struct Built<'a> {
    name: &'static str,
    detail: String,
    query_mode: &'static str,
    seconds: f64,
    cpu_seconds: f64,
    index_bytes: Option<usize>,
    len: usize,
    search: Search<'a>,
}

/// Inserts every row into a [`Hnsw`] one at a time.
fn build_index(args: &Args, base: &[f32], params: HnswParams) -> Result<Built<'static>, String> {
    let cpu_start = cpu_seconds();
    let start = Instant::now();
    let mut index = Hnsw::new(args.dim, args.metric, params).map_err(|e| e.to_string())?;
    for (i, row) in base.chunks_exact(args.dim).enumerate() {
        index
            .insert(i as i64, row)
            .map_err(|e| format!("insert {i}: {e}"))?;
    }
    let (seconds, cpu_seconds) = (start.elapsed().as_secs_f64(), cpu_seconds() - cpu_start);
    Ok(Built {
        name: "pluresdb-vector",
        detail: format!("Hnsw, kernels {:?}", pluresdb_vector::Kernels::detect()),
        query_mode: "one Hnsw::search call per query, loop on 1 thread",
        seconds,
        cpu_seconds,
        index_bytes: Some(index.memory_bytes()),
        len: index.len(),
        search: Box::new(move |q, k, ef, out| {
            let res = index
                .search(q, k, Some(ef), None)
                .map_err(|e| e.to_string())?;
            for (slot, nb) in out.iter_mut().zip(&res) {
                *slot = nb.label;
            }
            Ok(())
        }),
    })
}

/// Loads the rows into a table of a database file and indexes them through SQL.
fn build_sql(args: &Args, base: &[f32]) -> Result<Built<'static>, String> {
    let err = |e: pluresdb_core::Error| e.to_string();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let db = Database::open(dir.path().join("vectors.db")).map_err(err)?;
    db.exec("CREATE TABLE items (id INTEGER PRIMARY KEY, embedding BLOB NOT NULL)")
        .map_err(err)?;
    let start = Instant::now();
    db.transaction(|tx| {
        let insert = tx.prepare("INSERT INTO items (id, embedding) VALUES (?1, ?2)")?;
        for (i, row) in base.chunks_exact(args.dim).enumerate() {
            let blob: Vec<u8> = row.iter().flat_map(|x| x.to_le_bytes()).collect();
            insert.run((i as i64, blob))?;
        }
        Ok::<_, pluresdb_core::Error>(())
    })
    .map_err(err)?;
    let load_seconds = start.elapsed().as_secs_f64();
    let options = json!({"m": args.m, "ef_construction": args.ef_construction}).to_string();
    let cpu_start = cpu_seconds();
    let start = Instant::now();
    db.run(
        "SELECT pluresdb_vector_index('items', 'embedding', ?1, ?2)",
        (args.metric.name(), options),
    )
    .map_err(err)?;
    let stmt = db
        .prepare("SELECT rowid FROM vector_search('items', 'embedding', ?1, ?2, ?3)")
        .map_err(err)?;
    // The index is built on its first use: count one query in the build.
    let first: Vec<u8> = base[..args.dim]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    stmt.run((first, 1, "{}")).map_err(err)?;
    let (seconds, cpu_seconds) = (start.elapsed().as_secs_f64(), cpu_seconds() - cpu_start);
    eprintln!("pluresdb-sql: table loaded in {load_seconds:.2}s (not counted in the build)");
    let len = base.len() / args.dim;
    let mut blob: Vec<u8> = Vec::with_capacity(args.dim * 4);
    let mut ef_options: (usize, String) = (0, String::new());
    Ok(Built {
        name: "pluresdb-sql",
        detail: "SQL vector_search over a table of f32 BLOBs, prepared statement".into(),
        query_mode: "one prepared SELECT ... FROM vector_search(...) per query, loop on 1 thread",
        seconds,
        cpu_seconds,
        index_bytes: None,
        len,
        search: Box::new(move |q, k, ef, out| {
            // Keeps the database directory alive as long as the search.
            let _ = &dir;
            blob.clear();
            blob.extend(q.iter().flat_map(|x| x.to_le_bytes()));
            if ef_options.0 != ef {
                ef_options = (ef, format!("{{\"ef\": {ef}}}"));
            }
            let rows: Vec<(i64,)> = stmt.all_as((&blob, k as i64, &ef_options.1)).map_err(err)?;
            for (slot, (rowid,)) in out.iter_mut().zip(rows) {
                *slot = rowid;
            }
            Ok(())
        }),
    })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(result) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&result).expect("JSON values serialize")
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vector_bench: {e}");
            ExitCode::FAILURE
        }
    }
}
