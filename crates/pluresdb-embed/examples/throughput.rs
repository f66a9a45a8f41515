//! Model load time and embedding throughput on short sentences.
//!
//! `PLURESDB_MODEL_DIR=DIR cargo run --release --example throughput [N_SENTENCES]`

use std::time::Instant;

use pluresdb_embed::{Embedder, MiniLm};

const SUBJECTS: &[&str] = &[
    "the cat",
    "a developer",
    "my neighbour",
    "the old train",
    "our team",
];
const VERBS: &[&str] = &[
    "quietly watched",
    "repaired",
    "wrote about",
    "forgot",
    "carried",
];
const OBJECTS: &[&str] = &[
    "the garden",
    "a broken laptop",
    "the morning news",
    "two red apples",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1024);
    let started = Instant::now();
    let model = MiniLm::from_env()?;
    println!("load: {:.0} ms", started.elapsed().as_secs_f64() * 1e3);

    let sentences: Vec<String> = (0..n)
        .map(|i| {
            let s = SUBJECTS[i % SUBJECTS.len()];
            let v = VERBS[(i / SUBJECTS.len()) % VERBS.len()];
            let o = OBJECTS[(i / 7) % OBJECTS.len()];
            format!("{s} {v} {o} on day {i}.")
        })
        .collect();
    let texts: Vec<&str> = sentences.iter().map(String::as_str).collect();
    model.embed(&texts[..32.min(n)])?; // warm-up

    let started = Instant::now();
    let vectors = model.embed(&texts)?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "embed: {n} short sentences in {secs:.2} s = {:.0} sentences/s (batches of 32)",
        n as f64 / secs
    );

    let started = Instant::now();
    for text in texts.iter().take(100) {
        model.embed_one(text)?;
    }
    let per_one = started.elapsed().as_secs_f64() / 100.0_f64.min(n as f64);
    println!("embed_one: {:.2} ms per sentence", per_one * 1e3);
    assert_eq!(vectors.len(), n);
    Ok(())
}
