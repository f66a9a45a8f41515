//! Property test: variable-length patterns on random small graphs match a naive enumeration
//! of trails (walks that use each relationship at most once).

use pluresdb_cypher::{ExecOptions, MemStore, execute};
use proptest::prelude::*;
use serde_json::{Map, Value as Json, json};

const TYPES: [&str; 2] = ["A", "B"];

#[derive(Clone, Debug)]
struct Case {
    nodes: usize,
    edges: Vec<(usize, usize, usize)>,
    start: usize,
    dir: u8,
    types: Vec<usize>,
    min: u64,
    max: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (1usize..6)
        .prop_flat_map(|n| {
            (
                Just(n),
                prop::collection::vec((0..n, 0..2usize, 0..n), 0..10),
                0..n,
                0u8..3,
                prop::sample::subsequence(vec![0usize, 1], 0..=2),
                0u64..3,
                0u64..4,
            )
        })
        .prop_map(|(nodes, edges, start, dir, types, min, extra)| Case {
            nodes,
            edges,
            start,
            dir,
            types,
            min,
            max: min + extra,
        })
}

/// Every trail from `start` by brute force: (edge indices in walk order, end node).
fn trails(c: &Case, edges: &[(usize, usize, usize)]) -> Vec<(Vec<usize>, usize)> {
    fn walk(
        c: &Case,
        edges: &[(usize, usize, usize)],
        at: usize,
        used: &mut Vec<usize>,
        out: &mut Vec<(Vec<usize>, usize)>,
    ) {
        let depth = used.len() as u64;
        if depth >= c.min && depth <= c.max {
            out.push((used.clone(), at));
        }
        if depth == c.max {
            return;
        }
        for (i, &(f, t, to)) in edges.iter().enumerate() {
            if used.contains(&i) || (!c.types.is_empty() && !c.types.contains(&t)) {
                continue;
            }
            let next = match c.dir {
                0 if f == at => to,
                1 if to == at => f,
                2 if f == at => to,
                2 if to == at => f,
                _ => continue,
            };
            used.push(i);
            walk(c, edges, next, used, out);
            used.pop();
        }
    }
    let mut out = Vec::new();
    walk(c, edges, c.start, &mut Vec::new(), &mut out);
    out
}

fn edge_json(edges: &[(usize, usize, usize)], i: usize) -> Json {
    let (f, t, to) = edges[i];
    json!([format!("n{f}"), TYPES[t], format!("n{to}")])
}

/// Builds the graph (deduplicating edges like the store) and the pattern text.
fn setup(c: &Case) -> (MemStore, Vec<(usize, usize, usize)>, String, String) {
    let mut g = MemStore::new();
    for i in 0..c.nodes {
        g.add_node(&format!("n{i}"), None, json!({}));
    }
    let mut edges: Vec<(usize, usize, usize)> = Vec::new();
    for &(f, t, to) in &c.edges {
        if !edges.contains(&(f, t, to)) {
            edges.push((f, t, to));
            g.add_edge(&format!("n{f}"), TYPES[t], &format!("n{to}"), json!({}));
        }
    }
    let types: Vec<&str> = c.types.iter().map(|&t| TYPES[t]).collect();
    let rel = if types.is_empty() {
        String::new()
    } else {
        format!(":{}", types.join("|"))
    };
    let (l, r) = match c.dir {
        0 => ("-", "->"),
        1 => ("<-", "-"),
        _ => ("-", "-"),
    };
    let rel = format!("{l}[rs{rel}*{}..{}]{r}", c.min, c.max);
    let mirrored = match c.dir {
        0 => format!("<-{}", &rel[1..rel.len() - 2]) + "-",
        1 => format!("-{}", &rel[2..rel.len() - 1]) + "->",
        _ => rel.clone(),
    };
    (g, edges, rel, mirrored)
}

fn run_sorted(g: &mut MemStore, query: &str, start: usize) -> Vec<String> {
    let mut params = Map::new();
    params.insert("start".into(), json!(format!("n{start}")));
    let result = execute(g, query, &params, &ExecOptions::default()).unwrap();
    let mut rows: Vec<String> = result
        .rows
        .iter()
        .map(|row| Json::Array(row.clone()).to_string())
        .collect();
    rows.sort();
    rows
}

const LIST: &str = "[x IN rs | [startNode(x).id, type(x), endNode(x).id]]";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn var_length_matches_reference(c in case()) {
        let (mut g, edges, rel, _) = setup(&c);
        let query = format!("MATCH (a {{id: $start}}){rel}(b) RETURN {LIST}, b.id");
        let got = run_sorted(&mut g, &query, c.start);
        let mut want: Vec<String> = trails(&c, &edges)
            .into_iter()
            .map(|(used, end)| {
                let list: Vec<Json> = used.iter().map(|&i| edge_json(&edges, i)).collect();
                json!([list, format!("n{end}")]).to_string()
            })
            .collect();
        want.sort();
        prop_assert_eq!(got, want, "query: {}", query);
    }

    #[test]
    fn var_length_walked_from_the_right_end_matches_reference(c in case()) {
        // The bound node is on the right, so the planner walks the pattern backwards; the
        // list must still come out in pattern order (left to right).
        let (mut g, edges, _, mirrored) = setup(&c);
        let query = format!("MATCH (b){mirrored}(a {{id: $start}}) RETURN b.id, {LIST}");
        let got = run_sorted(&mut g, &query, c.start);
        let mut want: Vec<String> = trails(&c, &edges)
            .into_iter()
            .map(|(used, end)| {
                let list: Vec<Json> = used.iter().rev().map(|&i| edge_json(&edges, i)).collect();
                json!([format!("n{end}"), list]).to_string()
            })
            .collect();
        want.sort();
        prop_assert_eq!(got, want, "query: {}", query);
    }
}
