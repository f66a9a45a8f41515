//! Loading errors and the whole pipeline on a tiny random BERT written by the test itself, so
//! these run without the real model.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use candle_transformers::models::bert::{BertModel, Config};
use pluresdb_embed::{EmbedError, Embedder, MiniLm, MiniLmOptions};
use tokenizers::Tokenizer;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;

const WORDS: [&str; 20] = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "cat", "sat", "on", "mat", "a", "dog", "ran", "in",
    "park", "stock", "market", "fell", "hello", "world", "##s",
];

const HIDDEN: usize = 16;

fn tiny_config() -> Config {
    Config {
        vocab_size: WORDS.len(),
        hidden_size: HIDDEN,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 32,
        max_position_embeddings: 64,
        ..Config::default()
    }
}

fn config_json(c: &Config) -> String {
    format!(
        r#"{{"architectures": ["BertModel"], "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
            "attention_probs_dropout_prob": 0.1, "hidden_size": {}, "initializer_range": 0.02,
            "intermediate_size": {}, "layer_norm_eps": 1e-12, "max_position_embeddings": {},
            "model_type": "bert", "num_attention_heads": {}, "num_hidden_layers": {},
            "pad_token_id": 0, "type_vocab_size": 2, "vocab_size": {}}}"#,
        c.hidden_size,
        c.intermediate_size,
        c.max_position_embeddings,
        c.num_attention_heads,
        c.num_hidden_layers,
        c.vocab_size
    )
}

fn write_tokenizer(path: &Path) {
    let vocab: [(String, u32); WORDS.len()] =
        std::array::from_fn(|i| (WORDS[i].to_string(), i as u32));
    let wordpiece = WordPiece::builder()
        .vocab(vocab)
        .unk_token("[UNK]".into())
        .build()
        .unwrap();
    let mut tokenizer = Tokenizer::new(wordpiece);
    tokenizer
        .with_normalizer(Some(BertNormalizer::default()))
        .unwrap()
        .with_pre_tokenizer(Some(BertPreTokenizer))
        .with_post_processor(Some(BertProcessing::new(
            ("[SEP]".into(), 3),
            ("[CLS]".into(), 2),
        )));
    tokenizer.save(path, false).unwrap();
}

/// Random weights of the tiny config, keyed by their names without a prefix.
fn tiny_weights() -> HashMap<String, Tensor> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    BertModel::load(vb, &tiny_config()).unwrap();
    let data = varmap.data().lock().unwrap();
    data.iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect()
}

/// Writes a complete tiny model directory; `prefix` is put before every tensor name.
fn write_model(dir: &Path, weights: &HashMap<String, Tensor>, prefix: &str) {
    std::fs::write(dir.join("config.json"), config_json(&tiny_config())).unwrap();
    write_tokenizer(&dir.join("tokenizer.json"));
    let named: HashMap<String, Tensor> = weights
        .iter()
        .map(|(k, v)| (format!("{prefix}{k}"), v.clone()))
        .collect();
    candle_core::safetensors::save(&named, dir.join("model.safetensors")).unwrap();
}

fn tiny_model(prefix: &str) -> (tempfile::TempDir, MiniLm) {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), &tiny_weights(), prefix);
    let model = MiniLm::load(dir.path()).unwrap();
    (dir, model)
}

fn assert_close(a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len());
    let worst = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= tol, "vectors differ by {worst} (> {tol})");
}

#[test]
fn nonexistent_dir_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let err = MiniLm::load(&missing).unwrap_err();
    assert!(matches!(err, EmbedError::NotADirectory { .. }), "{err:?}");
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn each_missing_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    let expect_missing = |file: &str| {
        let err = MiniLm::load(path).unwrap_err();
        match &err {
            EmbedError::MissingFile { file: f, dir: d } => {
                assert_eq!(*f, file);
                assert_eq!(d, path);
            }
            other => panic!("expected MissingFile({file}), got {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains(&format!("has no {file}")), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
    };
    expect_missing("config.json");
    std::fs::write(path.join("config.json"), config_json(&tiny_config())).unwrap();
    expect_missing("tokenizer.json");
    write_tokenizer(&path.join("tokenizer.json"));
    expect_missing("model.safetensors");
}

#[test]
fn bad_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    write_model(path, &tiny_weights(), "");

    std::fs::write(path.join("model.safetensors"), b"not safetensors").unwrap();
    let err = MiniLm::load(path).unwrap_err();
    assert!(matches!(err, EmbedError::InvalidFile { .. }), "{err:?}");
    assert!(err.to_string().contains("model.safetensors"), "{err}");

    // Weights of another model: no BERT tensor names.
    let other = HashMap::from([(
        "foo".to_string(),
        Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
    )]);
    candle_core::safetensors::save(&other, path.join("model.safetensors")).unwrap();
    let err = MiniLm::load(path).unwrap_err().to_string();
    assert!(err.contains("no BERT weights"), "{err}");

    // Weights whose shapes do not fit config.json.
    write_model(path, &tiny_weights(), "");
    let mut wrong = tiny_config();
    wrong.hidden_size = 32;
    std::fs::write(path.join("config.json"), config_json(&wrong)).unwrap();
    let err = MiniLm::load(path).unwrap_err().to_string();
    assert!(
        err.contains("model.safetensors") && err.contains("do not fit"),
        "{err}"
    );

    std::fs::write(path.join("config.json"), "{").unwrap();
    let err = MiniLm::load(path).unwrap_err().to_string();
    assert!(err.contains("config.json"), "{err}");

    std::fs::write(path.join("config.json"), config_json(&tiny_config())).unwrap();
    std::fs::write(path.join("tokenizer.json"), "[]").unwrap();
    let err = MiniLm::load(path).unwrap_err().to_string();
    assert!(err.contains("tokenizer.json"), "{err}");
}

#[test]
fn with_and_without_bert_prefix_give_the_same_vectors() {
    let weights = tiny_weights();
    let (plain_dir, prefixed_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_model(plain_dir.path(), &weights, "");
    write_model(prefixed_dir.path(), &weights, "bert.");
    let plain = MiniLm::load(plain_dir.path()).unwrap();
    let prefixed = MiniLm::load(prefixed_dir.path()).unwrap();
    let texts = ["the cat sat on the mat", "hello world"];
    let (a, b) = (
        plain.embed(&texts).unwrap(),
        prefixed.embed(&texts).unwrap(),
    );
    for (x, y) in a.iter().zip(&b) {
        assert_close(x, y, 0.0);
    }
}

#[test]
fn vectors_have_dim_and_unit_length() {
    let (_dir, model) = tiny_model("");
    assert_eq!(model.dim(), HIDDEN);
    assert_eq!(model.model_name(), "all-MiniLM-L6-v2");
    // 256 by default, but capped by the tiny model's max_position_embeddings.
    assert_eq!(model.max_seq_len(), 64);
    let vectors = model.embed(&["the cat sat", "", "zebra quagga"]).unwrap();
    assert_eq!(vectors.len(), 3);
    for v in &vectors {
        assert_eq!(v.len(), HIDDEN);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
    }
    assert!(model.embed(&[]).unwrap().is_empty());
}

#[test]
fn batching_and_padding_do_not_change_vectors() {
    let (dir, model) = tiny_model("");
    let texts = [
        "hello",
        "the cat sat on the mat in the park and the dog ran in the park",
        "stock market fell",
        "a dog",
        "the cat sat on the mat",
    ];
    let together = model.embed(&texts).unwrap();
    for (text, v) in texts.iter().zip(&together) {
        assert_close(&model.embed_one(text).unwrap(), v, 1e-5);
    }
    let options = MiniLmOptions {
        batch_size: 2,
        ..MiniLmOptions::default()
    };
    let small_batches = MiniLm::load_with(dir.path(), options).unwrap();
    for (a, b) in small_batches.embed(&texts).unwrap().iter().zip(&together) {
        assert_close(a, b, 1e-5);
    }
    // Different texts give different vectors. (Not compared by cosine: with the tiny model's
    // random weights, two texts' vectors were once 0.999 alike, which failed a CI run.)
    let differ = |a: &[f32], b: &[f32]| a.iter().zip(b).any(|(x, y)| (x - y).abs() > 1e-4);
    assert!(differ(&together[0], &together[2]));
    assert!(differ(&together[1], &together[4]));
}

#[test]
fn long_texts_are_cut_to_max_seq_len() {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), &tiny_weights(), "");
    let options = MiniLmOptions {
        max_seq_len: Some(4),
        model_name: Some("tiny".into()),
        ..MiniLmOptions::default()
    };
    let model = MiniLm::load_with(dir.path(), options).unwrap();
    assert_eq!(model.model_name(), "tiny");
    // [CLS] hello world [SEP]: the rest is cut.
    let cut = model
        .embed(&["hello world the cat sat", "hello world"])
        .unwrap();
    assert_close(&cut[0], &cut[1], 1e-6);

    // sentence_bert_config.json's max_seq_length is used when no option is given.
    std::fs::write(
        dir.path().join("sentence_bert_config.json"),
        r#"{"max_seq_length": 5}"#,
    )
    .unwrap();
    assert_eq!(MiniLm::load(dir.path()).unwrap().max_seq_len(), 5);
}

#[test]
fn embedder_is_object_safe_and_shareable() {
    let (_dir, model) = tiny_model("");
    let shared: std::sync::Arc<dyn Embedder> = std::sync::Arc::new(model);
    let expected = shared.embed_one("the cat sat").unwrap();
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let m = shared.clone();
            std::thread::spawn(move || m.embed_one("the cat sat").unwrap())
        })
        .collect();
    for h in handles {
        assert_close(&h.join().unwrap(), &expected, 1e-6);
    }
}
