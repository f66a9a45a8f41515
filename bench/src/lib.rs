//! Helpers shared by the benchmarks: timing, medians and the side-by-side table.

use std::time::{Duration, Instant};

/// Runs `f` once and returns how long it took.
pub fn time(f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

/// A byte count from `/proc/self/status` (`"VmRSS:"`, `"VmHWM:"`, ...); None off Linux.
pub fn proc_status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// The median of some durations.
pub fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// One line of a comparison: what was measured, our time and the peer's for `ops` operations.
pub struct Comparison {
    /// What was measured.
    pub name: String,
    /// Operations per run.
    pub ops: u64,
    /// Median time of PluresDB.
    pub ours: Duration,
    /// Median time of the peer.
    pub peer: Duration,
}

impl Comparison {
    /// PluresDB's time divided by the peer's (1.05 means 5% overhead).
    pub fn ratio(&self) -> f64 {
        self.ours.as_secs_f64() / self.peer.as_secs_f64()
    }
}

/// Prints comparisons as a Markdown table.
pub fn print_table(peer: &str, rows: &[Comparison]) {
    println!(
        "| benchmark | ops | PluresDB ops/s | {peer} ops/s | time ratio (PluresDB / {peer}) |"
    );
    println!("| --- | ---: | ---: | ---: | ---: |");
    for r in rows {
        let rate = |d: Duration| r.ops as f64 / d.as_secs_f64();
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.3} |",
            r.name,
            r.ops,
            rate(r.ours),
            rate(r.peer),
            r.ratio()
        );
    }
}

/// Measures `ours` and `peer` alternately `rounds` times and keeps the medians.
pub fn compare(
    name: &str,
    ops: u64,
    rounds: usize,
    mut ours: impl FnMut() -> Duration,
    mut peer: impl FnMut() -> Duration,
) -> Comparison {
    let mut a = Vec::with_capacity(rounds);
    let mut b = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        a.push(ours());
        b.push(peer());
    }
    Comparison {
        name: name.to_owned(),
        ops,
        ours: median(a),
        peer: median(b),
    }
}
