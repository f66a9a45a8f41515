//! `pluresdb traverse`, `pluresdb path` and `pluresdb graph` (algorithms).

use std::io::Write;

use pluresdb_core::{Database, Direction, Error, NodeQuery, PathQuery, Result, Traverse};
use serde_json::json;

use crate::output::{print_json, print_table};

/// What `pluresdb traverse` was asked.
pub struct TraverseArgs<'a> {
    pub starts: &'a [String],
    pub relations: &'a [String],
    pub direction: Direction,
    pub min_depth: i64,
    pub max_depth: i64,
    pub filter: Option<NodeQuery>,
    pub limit: Option<usize>,
}

pub fn traverse(
    db: &Database,
    out: &mut dyn Write,
    json_out: bool,
    args: TraverseArgs<'_>,
) -> Result<()> {
    let mut query = Traverse::from(args.starts)
        .direction(args.direction)
        .depth(args.min_depth, args.max_depth);
    for r in args.relations {
        query = query.relation(r);
    }
    if let Some(f) = args.filter {
        query = query.filter(f);
    }
    if let Some(n) = args.limit {
        query = query.limit(n);
    }
    let reached = db.traverse(&query)?;
    if json_out {
        return print_json(out, &reached);
    }
    print_table(
        out,
        &["id", "depth", "path"],
        reached.iter().map(|r| {
            vec![
                r.id().to_owned(),
                r.depth().to_string(),
                r.path().join(" -> "),
            ]
        }),
    )
}

/// What `pluresdb path` was asked.
pub struct PathArgs<'a> {
    pub from: &'a str,
    pub to: &'a str,
    pub relations: &'a [String],
    pub direction: Direction,
    pub weight: Option<&'a str>,
}

pub fn path(db: &Database, out: &mut dyn Write, json_out: bool, args: PathArgs<'_>) -> Result<()> {
    let mut query = PathQuery::new().direction(args.direction);
    for r in args.relations {
        query = query.relation(r);
    }
    if let Some(w) = args.weight {
        query = query.weight(w);
    }
    let Some(path) = db.shortest_path(args.from, args.to, &query)? else {
        return Err(Error::not_found(format!(
            "no path from {} to {} (check the relation and direction)",
            args.from, args.to
        )));
    };
    if json_out {
        return print_json(out, &path);
    }
    let mut line = path.nodes[0].clone();
    for (rel, node) in path.relations.iter().zip(&path.nodes[1..]) {
        line.push_str(&format!(" -[{rel}]-> {node}"));
    }
    writeln!(out, "{line}")?;
    writeln!(out, "cost {}", path.cost)?;
    Ok(())
}

/// Which algorithm `pluresdb graph` runs.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Algorithm {
    /// Weakly connected components, largest first.
    Components,
    /// PageRank scores, highest first.
    Pagerank,
    /// Degree centrality (degree / (n - 1)), highest first.
    Centrality,
}

pub fn algorithm(
    db: &Database,
    out: &mut dyn Write,
    json_out: bool,
    algo: Algorithm,
    relations: &[String],
    direction: Direction,
    top: usize,
) -> Result<()> {
    let rels: Vec<&str> = relations.iter().map(String::as_str).collect();
    let scores = match algo {
        Algorithm::Components => {
            let comps = db.connected_components(&rels)?;
            if json_out {
                return print_json(
                    out,
                    &json!({"count": comps.len(), "components": comps.iter().take(top).collect::<Vec<_>>()}),
                );
            }
            writeln!(out, "{} components", comps.len())?;
            return print_table(
                out,
                &["size", "members"],
                comps.iter().take(top).map(|c| {
                    let shown: Vec<&str> = c.iter().take(10).map(String::as_str).collect();
                    let more = if c.len() > 10 {
                        format!(", ... ({} more)", c.len() - 10)
                    } else {
                        String::new()
                    };
                    vec![c.len().to_string(), format!("{}{more}", shown.join(", "))]
                }),
            );
        }
        Algorithm::Pagerank => db.pagerank(&rels, 0.85)?,
        Algorithm::Centrality => db.degree_centrality(direction, &rels)?,
    };
    let shown: Vec<&(String, f64)> = scores.iter().take(top).collect();
    if json_out {
        let list: Vec<_> = shown
            .iter()
            .map(|(id, s)| json!({"id": id, "score": s}))
            .collect();
        return print_json(out, &list);
    }
    print_table(
        out,
        &["id", "score"],
        shown
            .iter()
            .map(|(id, s)| vec![id.clone(), format!("{s:.6}")]),
    )
}
