//! Graph queries answered from the in-memory adjacency: traversal, shortest and cheapest
//! paths, degree, connected components, PageRank and degree centrality.

use std::collections::{HashMap, HashSet};

use pluresdb_graph::{
    Graph, GraphError, Ids, NodeIx, PageRankOptions, PathOptions, RelFilter, Traversal,
    TraverseOptions, Visit,
};
use rusqlite::{Connection, OptionalExtension};

use super::ends::VISIBLE_EDGE_BY_NAMES;
use super::index::GraphView;
use super::query::json_path;
use super::{Direction, NodeQuery};
use crate::database::Database;
use crate::error::{Error, ErrorKind, Result};

/// After this many applied graph log entries, a query trims the log.
const TRIM_AFTER: i64 = 50_000;

/// A breadth-first walk: `Traverse::from(["ada"]).relation("knows").depth(1, 3)`.
#[derive(Clone, Debug)]
pub struct Traverse {
    starts: Vec<String>,
    relations: Vec<String>,
    direction: Direction,
    min_depth: i64,
    max_depth: Option<i64>,
    filter: Option<NodeQuery>,
    limit: Option<usize>,
    max_visited: usize,
}

impl Traverse {
    /// A walk from these nodes, by every relation, outgoing, depth 1 and deeper.
    pub fn from<S: AsRef<str>>(starts: impl IntoIterator<Item = S>) -> Traverse {
        Traverse {
            starts: starts.into_iter().map(|s| s.as_ref().to_owned()).collect(),
            relations: Vec::new(),
            direction: Direction::Out,
            min_depth: 1,
            max_depth: None,
            filter: None,
            limit: None,
            max_visited: pluresdb_graph::DEFAULT_MAX_VISITED,
        }
    }

    /// Follows only this relation (call again to add more; none given: every relation).
    pub fn relation(mut self, relation: impl Into<String>) -> Traverse {
        self.relations.push(relation.into());
        self
    }

    /// Which way to follow edges (default out).
    pub fn direction(mut self, direction: Direction) -> Traverse {
        self.direction = direction;
        self
    }

    /// Returns nodes from `min` to `max` hops away (default 1 to unlimited; 0 includes the
    /// starts).
    pub fn depth(mut self, min: i64, max: i64) -> Traverse {
        self.min_depth = min;
        self.max_depth = Some(max);
        self
    }

    /// Returns only nodes matching `filter` (type, id prefix, JSON field conditions); the walk
    /// still passes through the others.
    pub fn filter(mut self, filter: NodeQuery) -> Traverse {
        self.filter = Some(filter);
        self
    }

    /// Returns at most `n` nodes (nearest first).
    pub fn limit(mut self, n: usize) -> Traverse {
        self.limit = Some(n);
        self
    }

    /// Fails with a clear error instead of visiting more than `n` nodes (default 1,000,000).
    pub fn max_visited(mut self, n: usize) -> Traverse {
        self.max_visited = n;
        self
    }
}

/// The nodes a traversal reached, nearest first, each once (at its smallest depth), each
/// with the path that reached it. Ids and paths are looked up only when read, from a snapshot
/// of the graph's ids taken with the walk, so a walk that reaches most of the graph costs no
/// more than the walk itself. The snapshot shares the graph's id table: a walk kept after
/// the graph changes keeps the ids it saw alive (and the graph copies each 1024-id chunk it
/// then changes), so hold on to the ids you need, not to old walks.
#[derive(Clone, Debug, Default)]
pub struct Walk {
    ids: Ids,
    walk: Traversal,
    /// The nodes returned when a JSON filter dropped some of the walk's; else the walk's own.
    kept: Option<Vec<Visit>>,
}

impl Walk {
    fn visits(&self) -> &[Visit] {
        self.kept.as_deref().unwrap_or(self.walk.visits())
    }

    fn reached(&self, visit: Visit) -> Reached<'_> {
        Reached { walk: self, visit }
    }

    fn id_of(&self, v: NodeIx) -> &str {
        self.ids
            .get(v)
            .expect("a walk's nodes are live in the ids taken with it")
    }

    /// Number of nodes reached.
    pub fn len(&self) -> usize {
        self.visits().len()
    }

    /// Whether no node was reached.
    pub fn is_empty(&self) -> bool {
        self.visits().is_empty()
    }

    /// The `i`th node reached (0 is the nearest).
    pub fn get(&self, i: usize) -> Option<Reached<'_>> {
        self.visits().get(i).map(|&v| self.reached(v))
    }

    /// The nodes reached, nearest first.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Reached<'_>> + '_ {
        self.visits().iter().map(move |&v| self.reached(v))
    }

    /// The ids of the nodes reached, nearest first.
    pub fn ids(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.visits().iter().map(|v| self.id_of(v.node))
    }
}

impl<'a> IntoIterator for &'a Walk {
    type Item = Reached<'a>;
    type IntoIter = Box<dyn ExactSizeIterator<Item = Reached<'a>> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

impl serde::Serialize for Walk {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

/// A node a traversal reached (borrowed from its [`Walk`]).
#[derive(Clone, Copy)]
pub struct Reached<'a> {
    walk: &'a Walk,
    visit: Visit,
}

impl<'a> Reached<'a> {
    /// The node id.
    pub fn id(&self) -> &'a str {
        self.walk.id_of(self.visit.node)
    }

    /// Hops from the nearest start.
    pub fn depth(&self) -> u32 {
        self.visit.depth
    }

    /// Node ids from a start to this node, both included (`depth + 1` of them).
    pub fn path(&self) -> Vec<&'a str> {
        let walk = self.walk;
        walk.walk
            .path(&self.visit)
            .into_iter()
            .map(|v| walk.id_of(v))
            .collect()
    }
}

impl std::fmt::Debug for Reached<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reached")
            .field("id", &self.id())
            .field("depth", &self.depth())
            .field("path", &self.path())
            .finish()
    }
}

impl serde::Serialize for Reached<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Reached", 3)?;
        st.serialize_field("id", self.id())?;
        st.serialize_field("depth", &self.depth())?;
        st.serialize_field("path", &self.path())?;
        st.end()
    }
}

/// A path between two nodes.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct GraphPath {
    /// Node ids from the start to the end.
    pub nodes: Vec<String>,
    /// The relation of each hop (`nodes.len() - 1` of them).
    pub relations: Vec<String>,
    /// Hops, or the sum of the weights for a weighted path.
    pub cost: f64,
}

/// How to find a path: `PathQuery::new().relation("road").weight("km")`.
#[derive(Clone, Debug, Default)]
pub struct PathQuery {
    relations: Vec<String>,
    direction: Direction,
    weight: Option<String>,
    max_depth: Option<i64>,
}

impl PathQuery {
    /// Any relation, outgoing edges, fewest hops.
    pub fn new() -> PathQuery {
        PathQuery::default()
    }

    /// Follows only this relation (call again to add more).
    pub fn relation(mut self, relation: impl Into<String>) -> PathQuery {
        self.relations.push(relation.into());
        self
    }

    /// Which way to follow edges (default out).
    pub fn direction(mut self, direction: Direction) -> PathQuery {
        self.direction = direction;
        self
    }

    /// Minimizes the sum of this numeric edge-data field instead of hops (edges without it
    /// are not used; negative values are an error).
    pub fn weight(mut self, field: impl Into<String>) -> PathQuery {
        self.weight = Some(field.into());
        self
    }

    /// At most this many hops (unweighted paths only).
    pub fn max_depth(mut self, hops: i64) -> PathQuery {
        self.max_depth = Some(hops);
        self
    }
}

pub(crate) fn to_graph_direction(d: Direction) -> pluresdb_graph::Direction {
    match d {
        Direction::Out => pluresdb_graph::Direction::Out,
        Direction::In => pluresdb_graph::Direction::In,
        Direction::Both => pluresdb_graph::Direction::Both,
    }
}

pub(crate) fn graph_error(e: GraphError) -> Error {
    let kind = match e {
        GraphError::UnknownNode(_) => ErrorKind::NotFound,
        _ => ErrorKind::InvalidInput,
    };
    Error::new(kind, e.to_string())
}

/// The relations named, or every relation when none is named.
pub(crate) fn rel_filter<S: AsRef<str>>(g: &Graph, names: &[S]) -> RelFilter {
    if names.is_empty() {
        RelFilter::any()
    } else {
        g.rel_filter(names)
    }
}

/// Runs `f` on the graph of a walk request's view, on `conn`.
pub(crate) fn run_traverse(g: &Graph, conn: &Connection, query: &Traverse) -> Result<Walk> {
    let starts = g.resolve(&query.starts).map_err(graph_error)?;
    let sql_filter = query.filter.as_ref().filter(|f| !f.only_type());
    let wanted_type = query
        .filter
        .as_ref()
        .and_then(|f| f.node_type())
        .and_then(|t| g.type_ix(t));
    let type_given = query
        .filter
        .as_ref()
        .is_some_and(|f| f.node_type().is_some());
    let by_type = |v: NodeIx| wanted_type.is_some_and(|t| g.node_type_ix(v) == Some(t));
    let mut opts = TraverseOptions::new()
        .direction(to_graph_direction(query.direction))
        .relations(rel_filter(g, &query.relations))
        .min_depth(query.min_depth)
        .max_visited(query.max_visited);
    if type_given {
        opts = opts.filter(&by_type);
    }
    opts = match query.max_depth {
        Some(d) => opts.max_depth(d),
        None => opts.unbounded(),
    };
    // JSON conditions are checked in SQL after the walk, so the limit applies after them.
    if let (Some(n), None) = (query.limit, sql_filter) {
        opts = opts.limit(n);
    }
    let walk = g.traverse(&starts, &opts).map_err(graph_error)?;
    let mut kept = None;
    if let Some(filter) = sql_filter {
        let ids: Vec<String> = walk
            .visits()
            .iter()
            .map(|v| g.id(v.node).to_owned())
            .collect();
        let keep: HashSet<String> = find_ids(conn, &filter.among(ids))?;
        let mut visits = walk.visits().to_vec();
        visits.retain(|v| keep.contains(g.id(v.node)));
        if let Some(n) = query.limit {
            visits.truncate(n);
        }
        kept = Some(visits);
    }
    Ok(Walk {
        ids: g.ids(),
        walk,
        kept,
    })
}

fn find_ids(conn: &Connection, query: &NodeQuery) -> Result<HashSet<String>> {
    let (sql, params) = query.sql()?;
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(params.iter()))?;
    let mut out = HashSet::new();
    while let Some(row) = rows.next()? {
        out.insert(row.get::<_, String>(0)?);
    }
    Ok(out)
}

pub(crate) fn run_path(
    g: &Graph,
    conn: &Connection,
    from: &str,
    to: &str,
    query: &PathQuery,
) -> Result<Option<GraphPath>> {
    let ends = g.resolve(&[from, to]).map_err(graph_error)?;
    let mut opts = PathOptions::new()
        .direction(to_graph_direction(query.direction))
        .relations(rel_filter(g, &query.relations));
    if let Some(d) = query.max_depth {
        opts = opts.max_depth(d);
    }
    let path = match &query.weight {
        None => g.shortest_path(ends[0], ends[1], &opts),
        Some(field) => {
            let path = json_path(field)?;
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT json_extract(data, ?4) FROM _pluresdb_edges
                 WHERE {VISIBLE_EDGE_BY_NAMES}"
            ))?;
            let mut cache: HashMap<(NodeIx, u32, NodeIx), Option<f64>> = HashMap::new();
            let mut failure: Option<Error> = None;
            let mut weight = |e: pluresdb_graph::EdgeRef| -> Option<f64> {
                *cache.entry((e.from, e.rel, e.to)).or_insert_with(|| {
                    let w: rusqlite::Result<Option<Option<f64>>> = stmt
                        .query_row(
                            rusqlite::params![
                                g.id(e.from),
                                g.relation_name(e.rel),
                                g.id(e.to),
                                path
                            ],
                            |r| match r.get_ref(0)? {
                                rusqlite::types::ValueRef::Integer(i) => Ok(Some(i as f64)),
                                rusqlite::types::ValueRef::Real(f) => Ok(Some(f)),
                                _ => Ok(None),
                            },
                        )
                        .optional();
                    match w {
                        Ok(w) => w.flatten(),
                        Err(err) => {
                            failure.get_or_insert(err.into());
                            None
                        }
                    }
                })
            };
            let found = g.cheapest_path(ends[0], ends[1], &opts, &mut weight);
            if let Some(e) = failure {
                return Err(e);
            }
            // Edges without the field are left out of the walk; when every edge it looked at
            // lacked it, the field name is the likelier problem than the graph.
            if matches!(found, Ok(None)) && !cache.is_empty() && cache.values().all(Option::is_none)
            {
                return Err(Error::invalid(format!(
                    "no path: none of the {} edges the walk reached has a numeric field {field:?} \
                     (edges without it are left out); check the weight field's name",
                    cache.len()
                )));
            }
            found
        }
    }
    .map_err(graph_error)?;
    Ok(path.map(|p| GraphPath {
        nodes: p.nodes.iter().map(|&n| g.id(n).to_owned()).collect(),
        relations: p
            .edges
            .iter()
            .map(|e| g.relation_name(e.rel).to_owned())
            .collect(),
        cost: p.cost,
    }))
}

impl Database {
    /// Runs `f` on the graph as this thread sees it (its own transaction's writes included).
    pub(crate) fn with_graph<T>(
        &self,
        f: impl FnOnce(&Graph, &Connection) -> Result<T>,
    ) -> Result<T> {
        self.require_graph()?;
        let index = self.graph_index().clone();
        let result = self.engine().with_read_conn(|conn| {
            let view: GraphView<'_> = index.view(conn)?;
            f(&view, conn)
        })?;
        if !self.in_transaction() && !self.is_read_only() && index.wants_trim(TRIM_AFTER) {
            // Trimming only keeps the log small; a busy writer just means a later query trims.
            let _ = self
                .engine()
                .with_idle_writer(|c| index.trim(c, TRIM_AFTER));
        }
        Ok(result)
    }

    /// Nodes reached by a breadth-first walk, nearest first, each once (at its smallest
    /// depth), with the path that reached it.
    pub fn traverse(&self, query: &Traverse) -> Result<Walk> {
        self.with_graph(|g, conn| run_traverse(g, conn, query))
    }

    /// The path from `from` to `to` with the fewest hops (or, with [`PathQuery::weight`], the
    /// least total weight); `None` when `to` cannot be reached.
    pub fn shortest_path(
        &self,
        from: &str,
        to: &str,
        query: &PathQuery,
    ) -> Result<Option<GraphPath>> {
        self.with_graph(|g, conn| run_path(g, conn, from, to, query))
    }

    /// Number of edges at node `id` (each parallel edge counts; a self-loop counts once per
    /// direction).
    pub fn degree(&self, id: &str, direction: Direction, relation: Option<&str>) -> Result<usize> {
        self.with_graph(|g, _| {
            let v = g.resolve(&[id]).map_err(graph_error)?[0];
            let rels = rel_filter(g, relation.as_slice());
            Ok(g.degree(v, to_graph_direction(direction), &rels))
        })
    }

    /// Weakly connected components (by the given relations, or all), largest first, each a
    /// sorted list of node ids.
    pub fn connected_components(&self, relations: &[&str]) -> Result<Vec<Vec<String>>> {
        self.with_graph(|g, _| {
            let comps = g.connected_components(&rel_filter(g, relations));
            let mut out: Vec<Vec<String>> = (0..comps.count())
                .map(|c| {
                    let mut ids: Vec<String> =
                        comps.members(c).map(|v| g.id(v).to_owned()).collect();
                    ids.sort();
                    ids
                })
                .collect();
            out.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
            Ok(out)
        })
    }

    /// PageRank over the given relations (or all), highest first, scores summing to 1.
    pub fn pagerank(&self, relations: &[&str], damping: f64) -> Result<Vec<(String, f64)>> {
        self.with_graph(|g, _| {
            let opts = PageRankOptions {
                damping,
                relations: rel_filter(g, relations),
                ..PageRankOptions::default()
            };
            let ranks = g.pagerank(&opts).map_err(graph_error)?;
            Ok(ranked(g, &ranks.scores))
        })
    }

    /// Degree centrality (degree divided by n - 1), highest first.
    pub fn degree_centrality(
        &self,
        direction: Direction,
        relations: &[&str],
    ) -> Result<Vec<(String, f64)>> {
        self.with_graph(|g, _| {
            let scores =
                g.degree_centrality(to_graph_direction(direction), &rel_filter(g, relations));
            Ok(ranked(g, &scores))
        })
    }
}

/// Scores per node index as `(id, score)`, highest first, ties by id.
fn ranked(g: &Graph, scores: &[f64]) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = g
        .nodes()
        .map(|v| (g.id(v).to_owned(), scores[v as usize]))
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out
}
