//! Embeds a word list with all-MiniLM-L6-v2 (`pluresdb-embed`) into raw little-endian f32 rows
//! (384 per word), the real-embedding data set of `bench/vector/run.sh --dataset words`.
//!
//! ```text
//! embed_words --input /usr/share/dict/words --model DIR --out words.f32 [--limit N]
//! ```
//!
//! Lines are trimmed; empty lines, lines with an apostrophe (possessives) and repeats are
//! skipped. The words kept are written next to the output as `<out>.txt`, one per row.

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use pluresdb_embed::{Embedder, MiniLm};

const USAGE: &str = "usage: embed_words --input FILE --model DIR --out FILE.f32 [--limit N]";

fn run() -> Result<(), String> {
    let (mut input, mut model, mut out, mut limit) = (None, None, None, usize::MAX);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--input" => input = Some(PathBuf::from(value()?)),
            "--model" => model = Some(PathBuf::from(value()?)),
            "--out" => out = Some(PathBuf::from(value()?)),
            "--limit" => limit = value()?.parse().map_err(|e| format!("--limit: {e}"))?,
            _ => return Err(USAGE.into()),
        }
    }
    let (Some(input), Some(model), Some(out)) = (input, model, out) else {
        return Err(USAGE.into());
    };
    let text = std::fs::read_to_string(&input).map_err(|e| format!("{}: {e}", input.display()))?;
    let mut seen = HashSet::new();
    let words: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|w| !w.is_empty() && !w.contains('\'') && seen.insert(*w))
        .take(limit)
        .collect();
    let embedder = MiniLm::load(&model).map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(&out).map_err(|e| format!("{}: {e}", out.display()))?,
    );
    for (i, batch) in words.chunks(256).enumerate() {
        for v in embedder.embed(batch).map_err(|e| e.to_string())? {
            for x in v {
                file.write_all(&x.to_le_bytes())
                    .map_err(|e| e.to_string())?;
            }
        }
        if i % 20 == 19 {
            eprintln!("embed_words: {} of {} words", (i + 1) * 256, words.len());
        }
    }
    file.flush().map_err(|e| e.to_string())?;
    let mut list = words.join("\n");
    list.push('\n');
    let list_path = PathBuf::from(format!("{}.txt", out.display()));
    std::fs::write(&list_path, list).map_err(|e| format!("{}: {e}", list_path.display()))?;
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "embed_words: {} words in {secs:.1}s ({:.0}/s) -> {}",
        words.len(),
        words.len() as f64 / secs,
        out.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("embed_words: {e}");
            ExitCode::FAILURE
        }
    }
}
