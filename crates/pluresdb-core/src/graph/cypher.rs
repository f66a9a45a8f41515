//! Cypher over the node/edge store (`pluresdb-cypher` does the language): read queries walk
//! the in-memory adjacency, write queries run in one transaction through the node and edge API
//! (so they replicate like any other write).

use std::collections::HashMap;
use std::sync::LazyLock;

use pluresdb_cypher::{
    CypherError, Dir, EdgeRecord, ExecOptions, GraphStore, GraphStoreMut, NodeIter, NodeRecord,
    QueryResult,
};
use pluresdb_graph::Graph;
use rusqlite::{Connection, OptionalExtension};
use serde_json::{Map, Value as Json};

use super::ends::{VISIBLE_EDGE_BY_NAMES, visible_edge};
use super::query::json_path;
use super::walk::rel_filter;
use super::{NodeUpdate, parse_object};
use crate::database::Database;
use crate::error::{Error, ErrorKind, Result};
use crate::value::Value;

/// The result of a Cypher query: column names, rows of JSON values (nodes as
/// `{"id", "type", "data"}`, relationships as `{"from", "relation", "to", "data"}`) and write
/// counters.
pub type CypherResult = QueryResult;

fn node_record(id: String, label: Option<String>, data: &str) -> Result<NodeRecord> {
    Ok(NodeRecord {
        id,
        label,
        props: parse_object(data)?,
    })
}

/// SQL for nodes of an optional type with equal scalar fields (others are checked by the
/// executor, which re-checks everything).
fn scan_sql(label: Option<&str>, props: &[(String, Json)]) -> (String, Vec<Value>) {
    let mut sql = "SELECT id, type, data FROM _pluresdb_nodes WHERE cl % 2 = 1".to_owned();
    let mut params = Vec::new();
    if let Some(l) = label {
        params.push(Value::Text(l.to_owned()));
        sql += &format!(" AND type = ?{}", params.len());
    }
    for (key, value) in props {
        let scalar = match value {
            Json::Bool(b) => Value::Integer(i64::from(*b)),
            Json::Number(n) => n
                .as_i64()
                .map(Value::Integer)
                .or(n.as_f64().map(Value::Real))
                .unwrap_or(Value::Null),
            Json::String(s) => Value::Text(s.clone()),
            _ => continue,
        };
        // Keys a JSON path cannot name are left to the executor's re-check.
        let path = match json_path(key) {
            Ok(path) if !key.starts_with('$') => path,
            _ => continue,
        };
        params.push(Value::Text(path));
        sql += &format!(
            " AND json_extract(data, ?{}) = ?{}",
            params.len(),
            params.len() + 1
        );
        params.push(scalar);
    }
    sql += " ORDER BY id";
    (sql, params)
}

fn scan(
    conn: &Connection,
    label: Option<&str>,
    props: &[(String, Json)],
) -> Result<Vec<NodeRecord>> {
    let (sql, params) = scan_sql(label, props);
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(params.iter()), |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, Option<String>>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, label, data) = row?;
        out.push(node_record(id, label, &data)?);
    }
    Ok(out)
}

fn node(conn: &Connection, id: &str) -> Result<Option<NodeRecord>> {
    let row: Option<(Option<String>, String)> = conn
        .prepare_cached("SELECT type, data FROM _pluresdb_nodes WHERE id = ?1 AND cl % 2 = 1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    row.map(|(label, data)| node_record(id.to_owned(), label, &data))
        .transpose()
}

fn edge_data(
    conn: &Connection,
    from: &str,
    rel: &str,
    to: &str,
) -> Result<Option<Map<String, Json>>> {
    let data: Option<String> = conn
        .prepare_cached(&format!(
            "SELECT data FROM _pluresdb_edges WHERE {VISIBLE_EDGE_BY_NAMES}"
        ))?
        .query_row([from, rel, to], |r| r.get(0))
        .optional()?;
    data.map(|d| parse_object(&d)).transpose()
}

/// The SQL that reads the visible edges whose `end` (`src` or `dst`) is node `?1`, by the
/// relations named in the JSON array `?2` (all when it is empty): one table with its names
/// looked up, not the `_pluresdb_edges_named` view, whose join SQLite plans again on every
/// use of a statement from rusqlite's cache.
fn edges_at(end: &str) -> String {
    let visible = visible_edge("e.cl", "e.src", "e.dst");
    format!(
        "SELECT (SELECT id FROM _pluresdb_nodes WHERE rid = e.src),
                (SELECT name FROM _pluresdb_relations WHERE id = e.rel),
                (SELECT id FROM _pluresdb_nodes WHERE rid = e.dst), e.data
         FROM _pluresdb_edges e
         WHERE e.{end} = (SELECT rid FROM _pluresdb_nodes WHERE id = ?1) AND {visible}
           AND (?2 = '[]' OR e.rel IN (SELECT r.id FROM _pluresdb_relations r
                                       WHERE r.name IN (SELECT value FROM json_each(?2))))"
    )
}

/// [`edges_at`] the source, and at the target.
static EDGES_AT: LazyLock<[String; 2]> = LazyLock::new(|| [edges_at("src"), edges_at("dst")]);

/// The live edges at `node` (by the given relations, or all) with their data, from the tables.
fn edge_rows(conn: &Connection, node: &str, dir: Dir, rels: &[String]) -> Result<Vec<EdgeRecord>> {
    let [from, to] = &*EDGES_AT;
    let queries: &[&String] = match dir {
        Dir::Out => &[from],
        Dir::In => &[to],
        Dir::Both => &[from, to],
    };
    let rels_json = serde_json::to_string(rels).expect("strings serialize");
    let mut out = Vec::new();
    for sql in queries {
        let mut stmt = conn.prepare_cached(sql)?;
        let mut rows = stmt.query([node, rels_json.as_str()])?;
        while let Some(r) = rows.next()? {
            out.push(EdgeRecord {
                from: r.get(0)?,
                rel: r.get(1)?,
                to: r.get(2)?,
                props: parse_object(&r.get::<_, String>(3)?)?,
            });
        }
    }
    Ok(out)
}

/// Reads: topology from the in-memory graph, data from the tables (one consistent snapshot).
struct ReadStore<'a> {
    graph: &'a Graph,
    conn: &'a Connection,
}

impl GraphStore for ReadStore<'_> {
    type Error = Error;

    fn node(&self, id: &str) -> Result<Option<NodeRecord>> {
        node(self.conn, id)
    }

    fn scan_nodes(
        &self,
        label: Option<&str>,
        props: &[(String, Json)],
    ) -> Result<NodeIter<'_, Error>> {
        Ok(Box::new(scan(self.conn, label, props)?.into_iter().map(Ok)))
    }

    fn edges(&self, node: &str, dir: Dir, rels: &[String]) -> Result<Vec<EdgeRecord>> {
        let g = self.graph;
        let Some(v) = g.node(node) else {
            return Ok(Vec::new());
        };
        let filter = rel_filter(g, rels);
        let graph_dir = dir;
        let dir = match dir {
            Dir::Out => pluresdb_graph::Direction::Out,
            Dir::In => pluresdb_graph::Direction::In,
            Dir::Both => pluresdb_graph::Direction::Both,
        };
        // The data of every edge at the node in one query, not one query per edge.
        let data: HashMap<(String, String, String), Map<String, Json>> =
            edge_rows(self.conn, node, graph_dir, rels)?
                .into_iter()
                .map(|e| ((e.from, e.rel, e.to), e.props))
                .collect();
        Ok(g.neighbors(v, dir, &filter)
            .map(|n| {
                let e = n.edge(v);
                let key = (
                    g.id(e.from).to_owned(),
                    g.relation_name(e.rel).to_owned(),
                    g.id(e.to).to_owned(),
                );
                let props = data.get(&key).cloned().unwrap_or_default();
                let (from, rel, to) = key;
                EdgeRecord {
                    from,
                    rel,
                    to,
                    props,
                }
            })
            .collect())
    }

    fn edge(&self, from: &str, rel: &str, to: &str) -> Result<Option<EdgeRecord>> {
        Ok(
            edge_data(self.conn, from, rel, to)?.map(|props| EdgeRecord {
                from: from.to_owned(),
                rel: rel.to_owned(),
                to: to.to_owned(),
                props,
            }),
        )
    }
}

/// Writes (and the reads of a writing query): the node and edge API inside one transaction,
/// so every read sees the query's earlier writes.
struct TxStore<'a> {
    db: &'a Database,
}

impl TxStore<'_> {
    fn on_writer<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        self.db.flush_captured()?;
        self.db.with_writer_conn(f)
    }
}

impl GraphStore for TxStore<'_> {
    type Error = Error;

    fn node(&self, id: &str) -> Result<Option<NodeRecord>> {
        self.on_writer(|c| node(c, id))
    }

    fn scan_nodes(
        &self,
        label: Option<&str>,
        props: &[(String, Json)],
    ) -> Result<NodeIter<'_, Error>> {
        let nodes = self.on_writer(|c| scan(c, label, props))?;
        Ok(Box::new(nodes.into_iter().map(Ok)))
    }

    fn edges(&self, node: &str, dir: Dir, rels: &[String]) -> Result<Vec<EdgeRecord>> {
        self.on_writer(|c| edge_rows(c, node, dir, rels))
    }

    fn edge(&self, from: &str, rel: &str, to: &str) -> Result<Option<EdgeRecord>> {
        let props = self.on_writer(|c| edge_data(c, from, rel, to))?;
        Ok(props.map(|props| EdgeRecord {
            from: from.to_owned(),
            rel: rel.to_owned(),
            to: to.to_owned(),
            props,
        }))
    }
}

impl GraphStoreMut for TxStore<'_> {
    fn create_node(
        &mut self,
        id: Option<&str>,
        label: Option<&str>,
        props: &Map<String, Json>,
    ) -> Result<NodeRecord> {
        let id = match id {
            Some(id) => id.to_owned(),
            None => self.on_writer(|c| {
                Ok(c.query_row("SELECT lower(hex(randomblob(12)))", [], |r| {
                    r.get::<_, String>(0)
                })?)
            })?,
        };
        let data = Json::Object(props.clone());
        let node = self.db.update_node(
            &id,
            NodeUpdate {
                data: Some(&data),
                replace: true,
                node_type: Some(label),
                ..NodeUpdate::default()
            },
        )?;
        Ok(NodeRecord {
            id: node.id,
            label: node.node_type,
            props: node.data,
        })
    }

    fn create_edge(
        &mut self,
        from: &str,
        rel: &str,
        to: &str,
        props: &Map<String, Json>,
    ) -> Result<EdgeRecord> {
        let edge = self
            .db
            .link(from, rel, to, Some(&Json::Object(props.clone())))?;
        Ok(EdgeRecord {
            from: edge.from,
            rel: edge.relation,
            to: edge.to,
            props: edge.data,
        })
    }

    fn set_node_props(&mut self, id: &str, props: &Map<String, Json>) -> Result<()> {
        self.db.replace(id, &Json::Object(props.clone()))?;
        Ok(())
    }

    fn set_node_label(&mut self, id: &str, label: Option<&str>) -> Result<()> {
        self.db.set_type(id, label)?;
        Ok(())
    }

    fn set_edge_props(
        &mut self,
        from: &str,
        rel: &str,
        to: &str,
        props: &Map<String, Json>,
    ) -> Result<()> {
        self.db
            .link(from, rel, to, Some(&Json::Object(props.clone())))?;
        Ok(())
    }

    fn delete_node(&mut self, id: &str) -> Result<()> {
        self.db.delete(id)?;
        Ok(())
    }

    fn delete_edge(&mut self, from: &str, rel: &str, to: &str) -> Result<bool> {
        self.db.unlink(from, rel, to)
    }
}

fn cypher_error(e: CypherError) -> Error {
    use pluresdb_cypher::ErrorKind as K;
    let kind = match e.kind() {
        K::Syntax => ErrorKind::Syntax,
        K::ReadOnly => ErrorKind::ReadOnly,
        K::Store => {
            return match e.into_store_error().map(|s| s.downcast::<Error>()) {
                Some(Ok(inner)) => *inner,
                Some(Err(other)) => Error::new(ErrorKind::Internal, other.to_string()),
                None => Error::new(ErrorKind::Internal, "a store error without a cause"),
            };
        }
        _ => ErrorKind::InvalidInput,
    };
    let offset = e.position().map(|p| p.offset);
    let query = e.query().map(str::to_owned);
    let mut err = Error::new(kind, e.message().to_owned());
    if let Some(q) = query {
        err = err.with_sql(&q, offset);
    }
    err
}

impl Database {
    /// Runs a Cypher query (a practical subset: MATCH with variable-length patterns, WHERE,
    /// RETURN with aggregates, ORDER BY, SKIP, LIMIT, CREATE, MERGE, SET, DELETE; see
    /// `pluresdb-cypher`). `params` is a JSON object for `$name` parameters. Read queries walk
    /// the in-memory graph; write queries run in one transaction.
    pub fn cypher(&self, query: &str, params: &Json) -> Result<CypherResult> {
        self.cypher_with(query, params, &ExecOptions::default())
    }

    /// [`cypher`](Self::cypher) with limits (rows held, paths walked, default maximum depth).
    pub fn cypher_with(
        &self,
        query: &str,
        params: &Json,
        opts: &ExecOptions,
    ) -> Result<CypherResult> {
        let empty = Map::new();
        let params = match params {
            Json::Null => &empty,
            Json::Object(map) => map,
            _ => {
                return Err(Error::invalid(
                    "Cypher parameters must be a JSON object like {\"name\": \"Ada\"}",
                ));
            }
        };
        let parsed = pluresdb_cypher::parse(query).map_err(cypher_error)?;
        if parsed.is_read_only() {
            return self.with_graph(|graph, conn| {
                parsed
                    .run_read(&ReadStore { graph, conn }, params, opts)
                    .map_err(cypher_error)
            });
        }
        self.require_graph()?;
        self.transaction(|db| {
            parsed
                .run(&mut TxStore { db }, params, opts)
                .map_err(cypher_error)
        })
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::StatementStatus;
    use serde_json::json;

    use super::*;
    use crate::graph::ends::VISIBLE_EDGE_BY_NAMES;

    /// The edge reads keep their plans when their cached statements are used again (a join
    /// over bound names would be planned again each time, about 25 µs).
    #[test]
    fn edge_reads_are_not_planned_again_on_each_use() {
        let db = Database::open_in_memory().unwrap();
        for id in ["a", "b", "c"] {
            db.put(id, &json!({})).unwrap();
        }
        db.link("a", "r", "b", Some(&json!({"w": 1}))).unwrap();
        db.link("b", "s", "c", None).unwrap();
        db.with_writer_conn(|conn| {
            for _ in 0..20 {
                let both = edge_rows(conn, "b", Dir::Both, &[])?;
                let mut names: Vec<_> = both.iter().map(|e| (&*e.from, &*e.rel, &*e.to)).collect();
                names.sort();
                assert_eq!(names, [("a", "r", "b"), ("b", "s", "c")]);
                assert_eq!(edge_rows(conn, "b", Dir::Out, &["r".into()])?.len(), 0);
                assert_eq!(edge_rows(conn, "b", Dir::In, &["r".into()])?.len(), 1);
                assert_eq!(edge_data(conn, "a", "r", "b")?.unwrap()["w"], 1);
                assert_eq!(edge_data(conn, "a", "s", "b")?, None);
            }
            let by_names =
                format!("SELECT data FROM _pluresdb_edges WHERE {VISIBLE_EDGE_BY_NAMES}");
            for sql in [&EDGES_AT[0], &EDGES_AT[1], &by_names] {
                let stmt = conn.prepare_cached(sql)?;
                assert_eq!(stmt.get_status(StatementStatus::RePrepare), 0, "{sql}");
            }
            Ok(())
        })
        .unwrap();
    }
}
