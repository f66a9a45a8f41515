use super::*;

/// Seeded synthetic embeddings: Gaussian clusters in a 32-dimensional latent space, mapped to
/// `dim` dimensions by a fixed random linear map, plus a little isotropic noise. Real embeddings
/// have a low intrinsic dimension like this; pure isotropic noise in 128 dimensions does not.
pub(crate) fn clustered(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
    const LATENT: usize = 32;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |reseed: Option<u64>| {
        if let Some(s) = reseed {
            rng = s | 1;
        }
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut gauss = move |reseed: Option<u64>| {
        let (u, v) = (next(reseed).max(1e-12), next(None));
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    };
    // The map and the cluster centres are shared by every call; the points depend on `seed`.
    let _ = gauss(Some(42));
    let map: Vec<Vec<f32>> = (0..dim)
        .map(|_| (0..LATENT).map(|_| gauss(None)).collect())
        .collect();
    let centers: Vec<Vec<f32>> = (0..64)
        .map(|_| (0..LATENT).map(|_| gauss(None) * 2.0).collect())
        .collect();
    let _ = gauss(Some(seed));
    (0..n)
        .map(|i| {
            let z: Vec<f32> = centers[i % centers.len()]
                .iter()
                .map(|c| c + gauss(None))
                .collect();
            map.iter()
                .map(|row| row.iter().zip(&z).map(|(a, b)| a * b).sum::<f32>() + gauss(None) * 2.5)
                .collect()
        })
        .collect()
}

fn recall(index: &Hnsw, queries: &[Vec<f32>], k: usize, filter: Option<Filter<'_>>) -> f64 {
    let mut hits = 0;
    for q in queries {
        let truth: HashSet<i64> = index
            .exact_search(q, k, filter)
            .unwrap()
            .iter()
            .map(|n| n.label)
            .collect();
        let got = index.search(q, k, None, filter).unwrap();
        assert!(
            got.windows(2).all(|w| w[0].distance <= w[1].distance),
            "results are sorted"
        );
        hits += got.iter().filter(|n| truth.contains(&n.label)).count();
    }
    hits as f64 / (queries.len() * k) as f64
}

fn build(data: &[Vec<f32>], metric: Metric) -> Hnsw {
    let mut h = Hnsw::new(data[0].len(), metric, HnswParams::default()).unwrap();
    for (i, v) in data.iter().enumerate() {
        h.insert(i as i64, v).unwrap();
    }
    h
}

#[test]
fn recall_at_10_on_10k_x_128_meets_the_bar_for_every_metric() {
    let data = clustered(10_000, 128, 7);
    let queries = clustered(100, 128, 99);
    for metric in [Metric::Cosine, Metric::L2, Metric::InnerProduct] {
        let mut data = data.clone();
        let mut queries = queries.clone();
        if metric == Metric::InnerProduct {
            // Inner product on unit vectors is cosine; on raw vectors it is not a metric and HNSW
            // is not meant to rank it, so test it the way it is used.
            data.iter_mut()
                .chain(queries.iter_mut())
                .for_each(|v| normalize(v).unwrap());
        }
        let start = std::time::Instant::now();
        let mut h = build(&data, metric);
        eprintln!("{metric:?}: built 10K x 128 in {:?}", start.elapsed());
        let r = recall(&h, &queries, 10, None);
        assert!(r >= 0.95, "{metric:?}: recall@10 {r} at default settings");
        // A narrow beam still finds most neighbours only if the graph is well linked.
        h.set_ef_search(12);
        let r = recall(&h, &queries, 10, None);
        assert!(r >= 0.9, "{metric:?}: recall@10 {r} at ef 12");
    }
}

#[test]
fn deletes_updates_and_slot_reuse_keep_results_right() {
    let data = clustered(3_000, 32, 3);
    let mut h = build(&data, Metric::L2);
    let queries = clustered(50, 32, 11);
    // Delete a third; deleted labels never come back and recall stays high.
    for i in (0..3_000).step_by(3) {
        assert!(h.remove(i));
    }
    assert!(!h.remove(0), "removing twice reports it");
    assert_eq!(h.len(), 2_000);
    for q in &queries {
        assert!(
            h.search(q, 10, None, None)
                .unwrap()
                .iter()
                .all(|n| n.label % 3 != 0)
        );
    }
    assert!(recall(&h, &queries, 10, None) >= 0.95);
    // New inserts reuse the deleted slots, repairing the graph around them.
    let fresh = clustered(1_000, 32, 5);
    for (i, v) in fresh.iter().enumerate() {
        h.insert(10_000 + i as i64, v).unwrap();
    }
    assert_eq!(h.deleted_count(), 0);
    assert_eq!(h.labels.len(), 3_000, "no new slots were needed");
    // Updates move a vector: label 1 now sits exactly on a query.
    h.insert(1, &queries[0]).unwrap();
    let top = h.search(&queries[0], 1, None, None).unwrap();
    assert_eq!(top[0].label, 1);
    assert!(top[0].distance < 1e-3);
    assert_eq!(h.vector(1).unwrap(), &queries[0][..]);
    assert!(recall(&h, &queries, 10, None) >= 0.95);
}

#[test]
fn deleting_everything_then_inserting_works() {
    let data = clustered(200, 8, 1);
    let mut h = build(&data, Metric::Cosine);
    for i in 0..200 {
        h.remove(i);
    }
    assert!(h.is_empty());
    assert!(h.search(&data[0], 5, None, None).unwrap().is_empty());
    h.insert(5, &data[5]).unwrap();
    assert_eq!(h.search(&data[5], 5, None, None).unwrap()[0].label, 5);
}

#[test]
fn filtered_search_returns_only_kept_labels_on_both_paths() {
    let data = clustered(5_000, 32, 21);
    let h = build(&data, Metric::L2);
    let queries = clustered(30, 32, 8);
    // Broad filter (half the rows): the graph walk.
    let even = |l: i64| l % 2 == 0;
    let broad = Filter::Predicate {
        keep: &even,
        estimate: None,
    };
    for q in &queries {
        assert!(
            h.search(q, 10, None, Some(broad))
                .unwrap()
                .iter()
                .all(|n| n.label % 2 == 0)
        );
    }
    assert!(recall(&h, &queries, 10, Some(broad)) >= 0.95);
    // Selective filter (20 labels): exact, so recall is perfect even though the walk would miss.
    // Checked against brute force over the data itself, not against the index's own exact path.
    let brute = |q: &[f32], k: usize, keep: &dyn Fn(i64) -> bool| -> Vec<i64> {
        let mut all: Vec<(f32, i64)> = (0..data.len() as i64)
            .filter(|&l| keep(l))
            .map(|l| {
                let d: f32 = data[l as usize]
                    .iter()
                    .zip(q)
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum();
                (d, l)
            })
            .collect();
        all.sort_by(|a, b| a.0.total_cmp(&b.0));
        all.iter().take(k).map(|&(_, l)| l).collect()
    };
    let labels = |f: Filter<'_>, q: &[f32], k: usize| -> Vec<i64> {
        h.search(q, k, None, Some(f))
            .unwrap()
            .iter()
            .map(|n| n.label)
            .collect()
    };
    let few: HashSet<i64> = (0..20).map(|i| i * 251).collect();
    let rare = |l: i64| l % 997 == 0;
    for q in &queries {
        assert_eq!(
            labels(Filter::Labels(&few), q, 10),
            brute(q, 10, &|l| few.contains(&l))
        );
        let f = Filter::Predicate {
            keep: &rare,
            estimate: None,
        };
        assert_eq!(labels(f, q, 5), brute(q, 5, &rare));
    }
    let none = |_| false;
    assert!(
        h.search(
            &queries[0],
            5,
            None,
            Some(Filter::Predicate {
                keep: &none,
                estimate: None
            })
        )
        .unwrap()
        .is_empty()
    );
}

#[test]
fn bad_input_is_refused_clearly() {
    let mut h = Hnsw::new(3, Metric::Cosine, HnswParams::default()).unwrap();
    assert!(
        h.search(&[1.0, 0.0, 0.0], 5, None, None)
            .unwrap()
            .is_empty(),
        "empty index"
    );
    let e = h.insert(1, &[1.0, 2.0]).unwrap_err();
    assert_eq!(
        e,
        VectorError::Dimension {
            expected: 3,
            got: 2
        }
    );
    assert!(
        e.to_string()
            .contains("has 2 dimensions but the index has 3")
    );
    let e = h.insert(1, &[1.0, f32::NAN, 0.0]).unwrap_err();
    assert_eq!(e, VectorError::NotFinite { index: 1 });
    assert_eq!(
        h.insert(1, &[0.0, 0.0, 0.0]).unwrap_err(),
        VectorError::ZeroVector
    );
    assert!(h.is_empty(), "refused vectors are not stored");
    h.insert(1, &[1.0, 0.0, 0.0]).unwrap();
    h.insert(2, &[0.0, 1.0, 0.0]).unwrap();
    assert!(
        h.search(&[1.0, 0.0, 0.0], 0, None, None)
            .unwrap_err()
            .to_string()
            .contains("k must be at least 1")
    );
    assert!(h.search(&[1.0, 0.0], 1, None, None).is_err());
    assert!(h.search(&[f32::INFINITY, 0.0, 0.0], 1, None, None).is_err());
    let all = h.search(&[1.0, 0.0, 0.0], usize::MAX, None, None).unwrap();
    assert_eq!(
        all.iter().map(|n| n.label).collect::<Vec<_>>(),
        vec![1, 2],
        "huge k returns everything"
    );
    assert!(Hnsw::new(0, Metric::L2, HnswParams::default()).is_err());
    let bad = HnswParams {
        m: 1,
        ..HnswParams::default()
    };
    assert!(
        Hnsw::new(4, Metric::L2, bad)
            .unwrap_err()
            .to_string()
            .contains("M is 1")
    );
}

#[test]
fn breadths_past_the_bound_are_refused_or_clamped() {
    for (params, says) in [
        (
            HnswParams {
                ef_construction: 1_000_000_000_000,
                ..HnswParams::default()
            },
            "ef_construction is 1000000000000; use a value from 1 to 100000",
        ),
        (
            HnswParams {
                ef_search: MAX_EF + 1,
                ..HnswParams::default()
            },
            "ef_search is 100001; use a value from 1 to 100000",
        ),
    ] {
        let err = Hnsw::new(4, Metric::L2, params).unwrap_err().to_string();
        assert!(err.contains(says), "{err}");
        let clamped = params.clamp_ef();
        assert!(clamped.ef_construction <= MAX_EF && clamped.ef_search <= MAX_EF);
        assert!(Hnsw::new(4, Metric::L2, clamped).is_ok());
    }
    let data = clustered(40, 2, 6);
    let mut h = build(&data, Metric::L2);
    h.set_ef_search(usize::MAX);
    assert_eq!(h.params().ef_search, MAX_EF);
    assert_eq!(
        h.search(&data[3], 3, None, None).unwrap(),
        h.exact_search(&data[3], 3, None).unwrap()
    );
}

#[test]
fn huge_k_and_ef_mean_every_vector() {
    let data = clustered(40, 2, 5);
    let h = build(&data, Metric::Cosine);
    let q = &data[7];
    let truth = h.exact_search(q, 3, None).unwrap();
    for ef in [usize::MAX, 1 << 40, 41] {
        // k = 3 of 40 takes the graph walk, whose heaps were sized by ef.
        assert_eq!(h.search(q, 3, Some(ef), None).unwrap(), truth, "ef {ef}");
    }
    assert_eq!(h.exact_search(q, usize::MAX, None).unwrap().len(), 40);
}

#[test]
fn distances_are_reported_in_user_units() {
    let mut h = Hnsw::new(2, Metric::L2, HnswParams::default()).unwrap();
    h.insert(1, &[3.0, 4.0]).unwrap();
    assert_eq!(
        h.search(&[0.0, 0.0], 1, None, None).unwrap()[0].distance,
        5.0
    );
    let mut h = Hnsw::new(2, Metric::Cosine, HnswParams::default()).unwrap();
    h.insert(1, &[0.0, 2.0]).unwrap();
    h.insert(2, &[-1.0, 0.0]).unwrap();
    let r = h.search(&[0.0, 1.0], 2, None, None).unwrap();
    assert!(r[0].distance.abs() < 1e-6 && (r[1].distance - 1.0).abs() < 1e-6);
}

#[test]
fn every_stored_vector_starts_on_a_cache_line() {
    for dim in [3, 16, 100, 384] {
        let mut index = Hnsw::new(dim, Metric::L2, HnswParams::default()).unwrap();
        for (i, v) in clustered(300, dim, 7).iter().enumerate() {
            index.insert(i as i64, v).unwrap();
        }
        let loaded = Hnsw::load(&index.save()).unwrap();
        for h in [&index, &loaded] {
            for slot in 0..300 {
                let v = h.vec_of(slot);
                assert_eq!(v.len(), dim);
                assert_eq!(v.as_ptr() as usize % 64, 0, "dim {dim}, slot {slot}");
            }
            assert_eq!(h.search(h.vec_of(42), 1, None, None).unwrap()[0].label, 42);
        }
    }
}
