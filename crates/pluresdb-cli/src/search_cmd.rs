//! `pluresdb search`, `pluresdb vector-index` and `pluresdb text-index`.

use std::io::Write;

use pluresdb_core::{
    Database, Error, HnswParams, LoadSource, Metric, Result, Value, VectorIndexOptions,
};
use serde_json::{Value as Json, json};

use crate::output::{Mode, cell, print_json, print_rows, print_table};

/// What `pluresdb search` was asked.
pub struct SearchArgs<'a> {
    pub collection: &'a str,
    pub query: &'a str,
    pub k: usize,
    pub filter: Option<&'a str>,
    pub node_type: Option<&'a str>,
    pub ef: Option<usize>,
    pub exact: bool,
    pub hybrid: bool,
}

/// Splits `docs.embedding` into table and column (`""`: the table's only index).
fn split(collection: &str) -> (&str, &str) {
    collection.split_once('.').unwrap_or((collection, ""))
}

pub fn search(db: &Database, out: &mut dyn Write, mode: Mode, args: &SearchArgs<'_>) -> Result<()> {
    if args.hybrid {
        return hybrid(db, out, mode, args);
    }
    let (table, column) = split(args.collection);
    let mut options = serde_json::Map::new();
    if let Some(f) = args.filter {
        options.insert("filter".into(), json!(f));
    }
    if let Some(t) = args.node_type {
        options.insert("type".into(), json!(t));
    }
    if let Some(ef) = args.ef {
        options.insert("ef".into(), json!(ef));
    }
    if args.exact {
        options.insert("exact".into(), json!(true));
    }
    let nodes = table.eq_ignore_ascii_case("nodes");
    if nodes {
        // The first node search creates the node index; the API does that.
        let query = if args.query.trim_start().starts_with('[') {
            let v: Vec<f32> = serde_json::from_str(args.query).map_err(|e| {
                Error::invalid(format!(
                    "the query vector is not a JSON array of numbers: {e}"
                ))
            })?;
            pluresdb_core::VectorQuery::Vector(v)
        } else {
            pluresdb_core::VectorQuery::Text(args.query.to_owned())
        };
        let opts = pluresdb_core::SearchOptions {
            ef: args.ef,
            filter: args.filter.map(str::to_owned),
            node_type: args.node_type.map(str::to_owned),
            exact: args.exact,
            ..Default::default()
        };
        let hits = db.vector_search_with("nodes", query, args.k, &opts)?;
        let mut rows = Vec::with_capacity(hits.len());
        for hit in &hits {
            let id = hit.id.clone().unwrap_or_default();
            let node = db.get_node(&id)?;
            rows.push((id, hit.distance, node));
        }
        if mode == Mode::Json {
            let list: Vec<Json> = rows
                .iter()
                .map(|(id, d, n)| {
                    json!({
                        "id": id,
                        "distance": d,
                        "type": n.as_ref().and_then(|n| n.node_type.clone()),
                        "data": n.as_ref().map(|n| Json::Object(n.data.clone())),
                    })
                })
                .collect();
            return print_json(out, &list);
        }
        return print_table(
            out,
            &["id", "distance", "type", "data"],
            rows.into_iter().map(|(id, d, n)| {
                vec![
                    id,
                    format!("{d:.4}"),
                    n.as_ref()
                        .and_then(|n| n.node_type.clone())
                        .unwrap_or_default(),
                    n.map(|n| Json::Object(n.data).to_string())
                        .unwrap_or_default(),
                ]
            }),
        );
    }
    let shown = shown_columns(db, table, column)?;
    let sql = format!(
        "SELECT s.distance, {shown} FROM vector_search(?1, ?2, ?3, ?4, ?5) s
         JOIN \"{t}\" t ON t.rowid = s.rowid ORDER BY s.distance",
        t = table.replace('"', "\"\""),
    );
    let result = db.all(
        &sql,
        // A query like `[0.1, 0.2]` is a vector; other text is embedded by the model.
        (
            table,
            column,
            Value::Text(args.query.to_owned()),
            i64::try_from(args.k).unwrap_or(i64::MAX),
            Json::Object(options).to_string(),
        ),
    )?;
    let columns = result
        .first()
        .map(|r| r.columns().clone())
        .unwrap_or_default();
    print_rows(out, mode, &columns, &result)
}

/// The table's columns except vector ones, as `t."a", t."b"`.
fn shown_columns(db: &Database, table: &str, column: &str) -> Result<String> {
    let indexed: Vec<String> = db
        .vector_indexes()?
        .into_iter()
        .filter(|i| i.table.eq_ignore_ascii_case(table))
        .map(|i| i.column)
        .collect();
    let cols = db.all_as::<(String,)>("SELECT name FROM pragma_table_info(?)", (table,))?;
    if cols.is_empty() {
        return Err(Error::not_found(format!("no such table: {table}")));
    }
    let shown: Vec<String> = cols
        .into_iter()
        .map(|c| c.0)
        .filter(|c| {
            !indexed.iter().any(|i| i.eq_ignore_ascii_case(c)) && !c.eq_ignore_ascii_case(column)
        })
        .map(|c| format!("t.\"{}\"", c.replace('"', "\"\"")))
        .collect();
    Ok(if shown.is_empty() {
        "t.rowid".into()
    } else {
        shown.join(", ")
    })
}

/// What a hybrid hit is: its table row (vector columns left out), or its node.
enum Found {
    Row(Option<pluresdb_core::Row>),
    Node(Option<pluresdb_core::Node>),
}

impl Found {
    /// The details of each of `hits` in `collection` (a table, or `nodes`).
    fn of(
        db: &Database,
        collection: &str,
        hits: &[pluresdb_core::HybridHit],
    ) -> Result<Vec<Found>> {
        let (table, column) = split(collection);
        if table.eq_ignore_ascii_case("nodes") {
            let node = |h: &pluresdb_core::HybridHit| match &h.id {
                Some(id) => db.get_node(id).map(Found::Node),
                None => Ok(Found::Node(None)),
            };
            return hits.iter().map(node).collect();
        }
        let sql = format!(
            "SELECT {} FROM \"{}\" t WHERE t.rowid = ?1",
            shown_columns(db, table, column)?,
            table.replace('"', "\"\"")
        );
        hits.iter()
            .map(|h| db.get(&sql, (h.rowid,)).map(Found::Row))
            .collect()
    }

    /// The names of the details shown in a table, from the first hit.
    fn headers(found: &[Found]) -> Vec<String> {
        match found.first() {
            Some(Found::Node(_)) => vec!["type".into(), "data".into()],
            Some(Found::Row(Some(row))) => row.columns().iter().map(|c| c.name.clone()).collect(),
            _ => Vec::new(),
        }
    }

    /// The details as table cells.
    fn cells(&self) -> Vec<String> {
        match self {
            Found::Row(row) => row
                .iter()
                .flat_map(|r| r.values().iter().map(|v| cell(v, "NULL")))
                .collect(),
            Found::Node(node) => vec![
                node.as_ref()
                    .and_then(|n| n.node_type.clone())
                    .unwrap_or_default(),
                node.as_ref()
                    .map(|n| Json::Object(n.data.clone()).to_string())
                    .unwrap_or_default(),
            ],
        }
    }

    /// The details as JSON: `"row"` for a table row, `"type"` and `"data"` for a node.
    fn add_to(&self, hit: &mut serde_json::Map<String, Json>) {
        match self {
            Found::Row(row) => {
                hit.insert(
                    "row".into(),
                    row.as_ref().map_or(Json::Null, |r| r.to_json()),
                );
            }
            Found::Node(node) => {
                hit.insert(
                    "type".into(),
                    json!(node.as_ref().and_then(|n| n.node_type.clone())),
                );
                hit.insert("data".into(), json!(node.as_ref().map(|n| &n.data)));
            }
        }
    }
}

fn hybrid(db: &Database, out: &mut dyn Write, mode: Mode, args: &SearchArgs<'_>) -> Result<()> {
    let hits = db.hybrid_search(args.collection, args.query, None, args.k, args.filter)?;
    let found = Found::of(db, args.collection, &hits)?;
    if mode == Mode::Json {
        let list: Vec<Json> = hits
            .iter()
            .zip(&found)
            .map(|(h, f)| {
                let mut hit = json!({
                    "rowid": h.rowid, "id": h.id, "score": h.score,
                    "text_rank": h.text_rank, "vector_rank": h.vector_rank, "distance": h.distance,
                });
                if let Json::Object(hit) = &mut hit {
                    f.add_to(hit);
                }
                hit
            })
            .collect();
        return print_json(out, &list);
    }
    let rank = |r: Option<usize>| r.map(|r| r.to_string()).unwrap_or_else(|| "-".into());
    let mut headers = vec![
        "rowid",
        "id",
        "score",
        "text rank",
        "vector rank",
        "distance",
    ];
    let details = Found::headers(&found);
    headers.extend(details.iter().map(String::as_str));
    print_table(
        out,
        &headers,
        hits.iter().zip(&found).map(|(h, f)| {
            let mut cells = vec![
                h.rowid.to_string(),
                h.id.clone().unwrap_or_default(),
                format!("{:.5}", h.score),
                rank(h.text_rank),
                rank(h.vector_rank),
                h.distance.map(|d| format!("{d:.4}")).unwrap_or_default(),
            ];
            cells.extend(f.cells());
            cells
        }),
    )
}

/// What `pluresdb vector-index` was asked.
pub struct IndexArgs<'a> {
    pub table: Option<&'a str>,
    pub column: Option<&'a str>,
    pub metric: Option<&'a str>,
    pub dim: Option<usize>,
    pub m: Option<usize>,
    pub ef_construction: Option<usize>,
    pub ef_search: Option<usize>,
    pub embed_from: Option<&'a str>,
    pub drop: bool,
}

pub fn vector_index(
    db: &Database,
    out: &mut dyn Write,
    json_out: bool,
    args: &IndexArgs<'_>,
) -> Result<()> {
    let Some(table) = args.table else {
        return list(db, out, json_out);
    };
    let column = args
        .column
        .unwrap_or(if table == "nodes" { "vector" } else { "" });
    if args.drop {
        let dropped = db.drop_vector_index(table, column)?;
        if !dropped {
            return Err(Error::not_found(format!(
                "there is no vector index on {table}.{column}"
            )));
        }
        writeln!(out, "dropped the vector index on {table}.{column}")?;
        return Ok(());
    }
    if column.is_empty() {
        return Err(Error::invalid(
            "name the column to index: pluresdb vector-index TABLE COLUMN",
        ));
    }
    let defaults = HnswParams::default();
    let options = VectorIndexOptions {
        metric: args
            .metric
            .map(|m| {
                m.parse::<Metric>()
                    .map_err(|e| Error::invalid(e.to_string()))
            })
            .transpose()?,
        dim: args.dim,
        params: HnswParams {
            m: args.m.unwrap_or(defaults.m),
            ef_construction: args.ef_construction.unwrap_or(defaults.ef_construction),
            ef_search: args.ef_search.unwrap_or(defaults.ef_search),
            ..defaults
        },
        embed_from: args.embed_from.map(str::to_owned),
    };
    let name = db.create_vector_index(table, column, &options)?;
    // Build it now, so the first search is fast and the graph is saved on exit.
    db.load_vector_index(&name)?;
    list(db, out, json_out)
}

fn list(db: &Database, out: &mut dyn Write, json_out: bool) -> Result<()> {
    let indexes = db.vector_indexes()?;
    if json_out {
        let list: Vec<Json> = indexes
            .iter()
            .map(|i| {
                json!({
                    "name": i.name, "metric": i.metric, "dim": i.dim, "m": i.m,
                    "ef_construction": i.ef_construction, "ef_search": i.ef_search,
                    "embed_from": i.embed_from,
                    "vectors": i.loaded.as_ref().map(|l| l.vectors),
                    // How this process loaded it: from the saved graph, built, or rebuilt (why).
                    "loaded": i.loaded.as_ref().map(|l| match &l.source {
                        LoadSource::Saved => "saved",
                        LoadSource::Built => "built",
                        LoadSource::Rebuilt(_) => "rebuilt",
                    }),
                    "rebuilt_because": i.loaded.as_ref().and_then(|l| match &l.source {
                        LoadSource::Rebuilt(why) => Some(why.as_str()),
                        _ => None,
                    }),
                })
            })
            .collect();
        return print_json(out, &list);
    }
    print_table(
        out,
        &[
            "index",
            "metric",
            "dim",
            "M",
            "ef_construction",
            "ef_search",
            "embed from",
            "vectors",
            "loaded",
        ],
        indexes.iter().map(|i| {
            vec![
                i.name.clone(),
                i.metric.clone(),
                i.dim.map(|d| d.to_string()).unwrap_or_else(|| "-".into()),
                i.m.to_string(),
                i.ef_construction.to_string(),
                i.ef_search.to_string(),
                i.embed_from.clone().unwrap_or_default(),
                i.loaded
                    .as_ref()
                    .map(|l| l.vectors.to_string())
                    .unwrap_or_default(),
                i.loaded
                    .as_ref()
                    .map(|l| format!("{:?}", l.source))
                    .unwrap_or_default(),
            ]
        }),
    )
}

/// `pluresdb text-index TABLE --drop`.
pub fn drop_text_index(db: &Database, out: &mut dyn Write, table: &str) -> Result<()> {
    if !db.drop_text_index(table)? {
        return Err(Error::not_found(format!(
            "there is no text index on {table}"
        )));
    }
    writeln!(out, "dropped the text index on {table}")?;
    Ok(())
}

/// `pluresdb text-index TABLE COLUMN...`.
pub fn text_index(
    db: &Database,
    out: &mut dyn Write,
    table: &str,
    columns: &[String],
) -> Result<()> {
    let cols: Vec<&str> = columns.iter().map(String::as_str).collect();
    db.create_text_index(table, &cols)?;
    writeln!(
        out,
        "text index on {table} ({})",
        if cols.is_empty() {
            "data".into()
        } else {
            cols.join(", ")
        }
    )?;
    Ok(())
}
