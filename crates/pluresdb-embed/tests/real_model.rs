//! The real all-MiniLM-L6-v2, against values computed by sentence-transformers 6.2.0 (torch
//! 2.15, CPU) from the same files. Runs when PLURESDB_MODEL_DIR names the model directory
//! (`fetch-model.sh DIR` makes one); skipped otherwise, unless PLURESDB_REQUIRE_MODEL=1, which
//! makes a missing model a failure (for CI).

use std::sync::OnceLock;

use pluresdb_embed::{EmbedError, Embedder, MiniLm, cosine_similarity};

fn model() -> Option<&'static MiniLm> {
    static MODEL: OnceLock<Option<MiniLm>> = OnceLock::new();
    MODEL
        .get_or_init(|| match MiniLm::from_env() {
            Ok(model) => Some(model),
            Err(EmbedError::NotConfigured)
                if std::env::var("PLURESDB_REQUIRE_MODEL").as_deref() != Ok("1") =>
            {
                eprintln!("skipped: PLURESDB_MODEL_DIR is not set (see fetch-model.sh)");
                None
            }
            Err(e) => panic!("{e}"),
        })
        .as_ref()
}

/// sentence-transformers' vectors (first 5 components) for these texts.
const REFERENCE: &[(&str, [f32; 5])] = &[
    (
        "hello world",
        [
            -0.03447723,
            0.031023238,
            0.006735012,
            0.02610899,
            -0.039362032,
        ],
    ),
    (
        "a cat sits on the mat",
        [
            0.1287247,
            -0.03267293,
            -0.022915713,
            0.04023053,
            -0.035453916,
        ],
    ),
    (
        "",
        [
            -0.11883832,
            0.048298705,
            -0.0025481265,
            -0.011011166,
            0.05195079,
        ],
    ),
    (
        "Ünïcödé naïve café — 東京 🚀",
        [
            0.057324506,
            -0.009958272,
            0.053631976,
            -0.040761583,
            -0.049105726,
        ],
    ),
];

/// 40 copies of this sentence are 562 tokens: the reference cuts them to 256.
const LONG_SENTENCE: &str = "The quick brown fox jumps over the lazy dog near the riverbank.";
const LONG_REFERENCE: [f32; 5] = [
    0.07360307,
    -0.023192646,
    0.062571496,
    -0.00046026934,
    -0.0013895159,
];

fn assert_prefix_close(got: &[f32], want: &[f32; 5], what: &str) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() < 1e-4,
            "{what}: component {i} is {g}, reference {w}"
        );
    }
}

#[test]
fn matches_sentence_transformers() {
    let Some(model) = model() else { return };
    assert_eq!(model.dim(), 384);
    assert_eq!(model.max_seq_len(), 256);
    let long = vec![LONG_SENTENCE; 40].join(" ");
    let mut texts: Vec<&str> = REFERENCE.iter().map(|(t, _)| *t).collect();
    texts.push(&long);
    let vectors = model.embed(&texts).unwrap();
    for ((text, want), got) in REFERENCE.iter().zip(&vectors) {
        assert_eq!(got.len(), 384);
        assert_prefix_close(got, want, text);
        let norm: f32 = got.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{text}: norm {norm}");
    }
    assert_prefix_close(&vectors[REFERENCE.len()], &LONG_REFERENCE, "long text");
    assert_prefix_close(
        &model.embed_one("hello world").unwrap(),
        &REFERENCE[0].1,
        "embed_one",
    );
}

#[test]
fn similar_sentences_are_closer() {
    let Some(model) = model() else { return };
    let v = model
        .embed(&[
            "a cat sits on the mat",
            "a kitten is on the rug",
            "stock markets fell sharply",
        ])
        .unwrap();
    let related = cosine_similarity(&v[0], &v[1]);
    let unrelated = cosine_similarity(&v[0], &v[2]);
    // sentence-transformers: 0.6080 and 0.0536.
    assert!((related - 0.6080).abs() < 1e-3, "related {related}");
    assert!((unrelated - 0.0536).abs() < 1e-3, "unrelated {unrelated}");
    assert!(related > unrelated + 0.3);
}
