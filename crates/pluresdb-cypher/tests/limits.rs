//! Bounded work: huge depths on dense graphs, deep chains, row caps.

mod common;

use std::time::{Duration, Instant};

use common::*;
use pluresdb_cypher::{ErrorKind, ExecOptions, MemStore, execute};
use serde_json::json;

/// Every ordered pair of distinct nodes linked: n*(n-1) edges.
fn complete(n: usize) -> MemStore {
    let mut g = MemStore::new();
    for i in 0..n {
        g.add_node(&format!("v{i}"), Some("V"), json!({"i": i}));
    }
    for i in 0..n {
        for j in 0..n {
            if i != j {
                g.add_edge(&format!("v{i}"), "E", &format!("v{j}"), json!({}));
            }
        }
    }
    g
}

fn chain(n: usize) -> MemStore {
    let mut g = MemStore::new();
    for i in 0..n {
        g.add_node(&format!("c{i}"), None, json!({}));
        if i > 0 {
            g.add_edge(&format!("c{}", i - 1), "NEXT", &format!("c{i}"), json!({}));
        }
    }
    g
}

#[test]
fn huge_depth_on_a_dense_graph_fails_fast_with_a_clear_message() {
    let mut g = complete(20);
    let started = Instant::now();
    let e = fail(&mut g, "MATCH (a)-[*..50]->(b) RETURN a.i, b.i");
    // Unbounded, the walk would never end (20^50 paths); bounded, it takes about 6 s in a
    // debug build alone, and took 22 s under `cargo test` on a busy 2-core machine.
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(e.kind(), ErrorKind::Limit);
    assert_eq!(
        e.to_string(),
        "the pattern expanded to more than 1000000 paths; add a LIMIT, narrow the relation types \
         or lower the maximum depth (ExecOptions::max_paths)"
    );
    // Aggregating instead of returning rows hits the same bound (it streams, so it is the
    // path budget, not memory, that stops it).
    let opts = ExecOptions {
        max_paths: 10_000,
        ..ExecOptions::default()
    };
    let e = execute(
        &mut g,
        "MATCH (a)-[:E*]-(b) RETURN count(*)",
        &params(json!({})),
        &opts,
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Limit);
}

#[test]
fn limit_stops_a_huge_expansion_early() {
    let mut g = complete(20);
    let r = run(
        &mut g,
        "MATCH (a {id: 'v0'})-[*..50]->(b) RETURN b.i LIMIT 5",
    );
    assert_eq!(r.rows.len(), 5);
    let r = run(
        &mut g,
        "MATCH (a)-[*..50]->(b) WHERE b.i = 3 RETURN a.i, b.i LIMIT 2",
    );
    assert_eq!(r.rows.len(), 2);
}

#[test]
fn unbounded_patterns_use_max_depth() {
    let mut g = chain(40);
    let r = run(
        &mut g,
        "MATCH ({id: 'c0'})-[*]->(b) RETURN count(*), max(b.id)",
    );
    assert_eq!(rows(&r), json!([[15, "c9"]]));
    let opts = ExecOptions {
        max_depth: 30,
        ..ExecOptions::default()
    };
    let r = execute(
        &mut g,
        "MATCH ({id: 'c0'})-[*]->(b) RETURN count(*)",
        &params(json!({})),
        &opts,
    )
    .unwrap();
    assert_eq!(rows(&r), json!([[30]]));
    let e = fail(&mut g, "MATCH (a)-[*20..]->(b) RETURN a");
    assert_eq!(e.kind(), ErrorKind::Limit);
    assert!(
        e.message()
            .starts_with("the minimum length 20 is above the maximum depth 15"),
        "{e}"
    );
}

#[test]
fn long_explicit_depths_do_not_overflow_the_stack() {
    let mut g = chain(3000);
    let r = run(
        &mut g,
        "MATCH ({id: 'c0'})-[*..100000]->(b) RETURN count(*)",
    );
    assert_eq!(rows(&r), json!([[2999]]));
    let r = run(
        &mut g,
        "MATCH p = ({id: 'c0'})-[*2999]->(b) RETURN length(p), b.id",
    );
    assert_eq!(rows(&r), json!([[2999, "c2999"]]));
}

#[test]
fn row_caps() {
    let mut g = MemStore::new();
    let opts = ExecOptions {
        max_rows: 50,
        ..ExecOptions::default()
    };
    let p = params(json!({}));
    let e = execute(
        &mut g,
        "UNWIND range(1, 40) AS x UNWIND [1, 2] AS y RETURN x",
        &p,
        &opts,
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Limit);
    assert!(e.message().contains("more than 50 rows"), "{e}");
    // Streaming through LIMIT and aggregation holds nothing.
    let r = execute(
        &mut g,
        "UNWIND range(1, 40) AS x UNWIND range(1, 40) AS y RETURN count(*)",
        &p,
        &opts,
    )
    .unwrap();
    assert_eq!(rows(&r), json!([[1600]]));
    let r = execute(
        &mut g,
        "UNWIND range(1, 40) AS x UNWIND range(1, 40) AS y RETURN x, y LIMIT 3",
        &p,
        &opts,
    )
    .unwrap();
    assert_eq!(r.rows.len(), 3);
    // ORDER BY with LIMIT keeps only the top rows.
    let opts = ExecOptions {
        max_rows: 5000,
        ..ExecOptions::default()
    };
    let r = execute(
        &mut g,
        "UNWIND range(1, 100) AS x UNWIND range(1, 100) AS y RETURN x * y AS p ORDER BY p DESC LIMIT 2",
        &p,
        &opts,
    )
    .unwrap();
    assert_eq!(rows(&r), json!([[10000], [9900]]));
    let e = execute(&mut g, "RETURN size(range(1, 10000))", &p, &opts).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Limit);
    assert!(
        e.message()
            .starts_with("range() would make a list of 10000 elements"),
        "{e}"
    );
}

#[test]
fn nested_lists_count_every_element_against_max_rows() {
    let mut g = MemStore::new();
    let opts = ExecOptions {
        max_rows: 1000,
        ..ExecOptions::default()
    };
    let p = params(json!({}));
    let limit = |q: &str, needle: &str| {
        let e = execute(&mut MemStore::new(), q, &p, &opts).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Limit, "{q}: {e}");
        assert!(e.message().contains(needle), "{q}: {e}");
    };
    // Each inner list is under the limit; together they are not.
    limit(
        "RETURN size([x IN range(1, 100) | range(1, 100)])",
        "a list comprehension would hold more than 1000 values",
    );
    limit(
        "UNWIND range(1, 100) AS x RETURN size(collect(range(1, 100)))",
        "more than 1000 rows",
    );
    limit(
        "UNWIND range(1, 100) AS x RETURN count(DISTINCT range(1, x))",
        "more than 1000 rows",
    );
    // Result rows and rows waiting for an update clause count their lists' elements too;
    // rows of scalars count one each.
    limit(
        "UNWIND range(1, 100) AS x RETURN range(1, 100)",
        "more than 1000 rows",
    );
    limit(
        "UNWIND range(1, 100) AS x WITH x, range(1, 100) AS l CREATE (:N {l: l})",
        "more than 1000 rows",
    );
    let r = execute(
        &mut MemStore::new(),
        "UNWIND range(1, 900) AS x RETURN x, x + 1 AS y, x + 2 AS z",
        &p,
        &opts,
    )
    .unwrap();
    assert_eq!(r.rows.len(), 900);
    // Constant pattern properties are evaluated when compiling, under the same limit.
    limit(
        "MATCH (n {x: size(range(1, 5000))}) RETURN n",
        "range() would make a list of 5000 elements",
    );
    let r = execute(
        &mut g,
        "UNWIND range(1, 10) AS x RETURN size([y IN range(1, 10) | range(1, 10)]), \
         size(collect(range(1, 10)))",
        &p,
        &opts,
    )
    .unwrap();
    assert_eq!(rows(&r), json!([[10, 10]]));
    // The reviewer's query: ~10^10 elements, which aborted on allocation.
    let e = execute(
        &mut g,
        "RETURN size([x IN range(1, 100000) | range(1, 100000)])",
        &p,
        &ExecOptions::default(),
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Limit);
}

/// Runs `f` on a 2 MB stack, the default for spawned threads.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

#[test]
fn long_queries_run_on_a_small_stack() {
    // Each clause and each matched pattern is a level of recursion; past the stack's end they
    // continue on the heap.
    let counts = on_small_stack(|| {
        let mut g = chain(1001);
        let wide: serde_json::Map<_, _> =
            (0..10_000).map(|i| (format!("k{i}"), json!(i))).collect();
        g.add_node("wide", None, wide.into());
        let deep = "- ".repeat(60);
        let counts = [
            // 2,000 matching clauses.
            format!(
                "{}RETURN {deep}count(*)",
                "MATCH ({id: 'c0'}) ".repeat(2000)
            ),
            // A 499-hop chain (999 patterns) then 2,000 more clauses.
            format!(
                "MATCH (a {{id: 'c0'}}){} {}RETURN {deep}count(*)",
                "-->()".repeat(499),
                "WITH * ".repeat(2000)
            ),
            // 200 comma-separated patterns.
            format!(
                "MATCH {} RETURN {deep}count(*)",
                (0..200)
                    .map(|i| format!("(n{i} {{id: 'c0'}})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            // Filters loop: many properties and conjuncts add no depth.
            format!(
                "MATCH (n {{{}}}) WHERE {} RETURN {deep}count(*)",
                (0..10_000)
                    .map(|i| format!("k{i}: {i}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                vec!["n.k1 = 1"; 80].join(" AND ")
            ),
        ]
        .map(|q| rows(&run(&mut g, &q)));
        // A generated import: 3,000 CREATE clauses in one query.
        let import: String = (0..3000)
            .map(|i| format!("CREATE (:Item {{i: {i}}}) "))
            .collect();
        run(&mut g, &import);
        let items = rows(&run(&mut g, "MATCH (n:Item) RETURN count(*)"));
        (counts, items)
    });
    assert_eq!(counts.0.to_vec(), vec![json!([[1]]); 4]);
    assert_eq!(counts.1, json!([[3000]]));
}

#[test]
fn too_long_queries_are_errors() {
    let mut g = chain(30);
    for (q, message) in [
        (
            format!("WITH 1 AS x {}RETURN x", "WITH x AS x ".repeat(20_000)),
            "the query has more than 10000 clauses; split it into several queries",
        ),
        (
            format!(
                "MATCH {} RETURN count(*)",
                (0..1001)
                    .map(|i| format!("(n{i})"))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            "the clause matches more than 1000 node and relationship patterns; split it into \
             several clauses or queries, or use a variable-length relationship",
        ),
        (
            format!(
                "MATCH ({{id: 'c0'}}){} RETURN count(*)",
                "-->()".repeat(500)
            ),
            "the clause matches more than 1000 node and relationship patterns",
        ),
        (
            format!("MATCH (n) SET n.{} = 1", vec!["a"; 100_000].join(".")),
            "the expression chains more than 250 operators",
        ),
        (
            format!("MATCH (n) REMOVE n.{}", vec!["a"; 100_000].join(".")),
            "the expression chains more than 250 operators",
        ),
    ] {
        let e = fail(&mut g, &q);
        assert_eq!(e.kind(), ErrorKind::Syntax, "{e}");
        assert!(e.message().starts_with(message), "{e}");
    }
    // Each UNION part counts alone.
    let part = format!("MATCH ({{id: 'c0'}}){} RETURN 1 AS x", "-->()".repeat(24));
    let q = format!("{part} UNION {part}");
    assert_eq!(rows(&run(&mut g, &q)), json!([[1]]));
}
