//! A practical Cypher subset for PluresDB: a lexer and parser with positioned errors, a
//! planner that starts each pattern at its most selective node, and a streaming executor that
//! runs against any [`GraphStore`] (PluresDB's core implements it over its node and edge
//! tables; [`MemStore`] is an in-memory one).
//!
//! ```
//! use pluresdb_cypher::{ExecOptions, MemStore, execute};
//! use serde_json::{Map, json};
//!
//! let mut store = MemStore::new();
//! let opts = ExecOptions::default();
//! execute(
//!     &mut store,
//!     "CREATE (:Person {id: 'ada', name: 'Ada', age: 36})-[:KNOWS]->(:Person {name: 'Bob', age: 41})",
//!     &Map::new(),
//!     &opts,
//! )
//! .unwrap();
//! let mut params = Map::new();
//! params.insert("name".into(), json!("Ada"));
//! let result = execute(
//!     &mut store,
//!     "MATCH (a:Person {name: $name})-[:KNOWS*1..3]->(b) WHERE b.age > 30 RETURN b.name, count(*)",
//!     &params,
//!     &opts,
//! )
//! .unwrap();
//! assert_eq!(result.columns, ["b.name", "count(*)"]);
//! assert_eq!(result.rows, [[json!("Bob"), json!(1)]]);
//! ```
//!
//! Nodes map to Cypher as: the node id is `n.id` (and `id(n)`), the node's type is its only
//! label, its data object holds its properties. Relationships are identified by
//! `(from, type, to)`: there is at most one of each, and `CREATE` of an existing one merges
//! its properties instead of adding a second. `MERGE` of a pattern whose relationship exists
//! with other values for the pattern's properties is an error (Neo4j would add a second).
//!
//! # The supported subset
//!
//! * Clauses: `MATCH` (comma-separated patterns, several in a row), `OPTIONAL MATCH`,
//!   `WHERE`, `WITH` (with `WHERE`), `UNWIND`, `RETURN` (`AS`, `DISTINCT`, `*`),
//!   `ORDER BY` (`ASC`/`DESC`, several keys), `SKIP`, `LIMIT`, `UNION [ALL]`, `CREATE`,
//!   `MERGE` (with `ON CREATE SET` / `ON MATCH SET`), `SET n.k = v`, `SET n = map`,
//!   `SET n += map`, `SET n:Label`, `REMOVE n.k`, `REMOVE n:Label`, `DELETE`, `DETACH DELETE`.
//! * Patterns: `(v)`, `(v:Label {k: expr})`, `(:Label)`, `()`, `(v $map)`, `-[r:T]->`,
//!   `<-[:T]-`, `-[:A|B]-`, variable length `*`, `*2`, `*1..3`, `*..3`, `*2..` (unbounded
//!   means [`ExecOptions::max_depth`]), relationship properties, path variables `p = (..)`.
//!   Within one `MATCH` a relationship is used at most once (Cypher's relationship
//!   isomorphism), so cycles end.
//! * Expressions: literals (integers, floats, `'..'` and `".."` strings with escapes,
//!   booleans, null, lists, maps), `$params`, `a.k`, `a['k']`, `list[i]`, `list[a..b]`,
//!   `= <> < > <= >=` (chainable), `AND OR XOR NOT`, `+ - * / % ^`, `STARTS WITH`,
//!   `ENDS WITH`, `CONTAINS`, `IN`, `IS [NOT] NULL`, `n:Label`, `CASE`, list comprehensions
//!   `[x IN list WHERE .. | ..]`, with Cypher's null semantics.
//! * Functions: aggregates `count(*)`, `count([DISTINCT] x)`, `sum`, `avg`, `min`, `max`,
//!   `collect` (all with `DISTINCT`), grouping by the other returned expressions; `id`,
//!   `elementId`, `type`, `labels`, `keys`, `properties`, `size`, `length`, `nodes`,
//!   `relationships`, `startNode`, `endNode`, `head`, `last`, `tail`, `reverse`, `range`,
//!   `coalesce`, `toLower`, `toUpper`, `trim`, `ltrim`, `rtrim`, `replace`, `substring`,
//!   `split`, `left`, `right`, `toString`, `toInteger`, `toFloat`, `toBoolean`, `abs`,
//!   `ceil`, `floor`, `round`, `sqrt`, `sign`, `exp`, `log`, `log10`, `exists(n.k)`.
//!
//! Not supported: `shortestPath`, pattern expressions and `EXISTS {}` subqueries in `WHERE`,
//! map projections (`n {.k}`), `CALL`, `FOREACH`, `LOAD CSV`, regular expressions (`=~`),
//! temporal and spatial types, more than one label per node.

pub mod ast;

mod aggregate;
mod backend;
mod compile;
mod error;
mod exec;
mod expr;
mod functions;
mod lexer;
mod matcher;
mod matchplan;
mod mem;
mod parser;
mod plan;
mod stack;
mod store;
mod value;
mod write;

use serde_json::{Map, Value as Json};

pub use error::{CypherError, ErrorKind, Position, Result};
pub use mem::{MemStore, MemStoreError};
pub use store::{Dir, EdgeRecord, GraphStore, GraphStoreMut, NodeIter, NodeRecord};

use backend::{Backend, ReadOnly, ReadWrite};

/// Bounds on what one query may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecOptions {
    /// The most rows a query may hold at once: the result, and what `ORDER BY`, `DISTINCT`,
    /// aggregation and update clauses keep. Streaming steps (matching, filtering, `LIMIT`)
    /// hold nothing. It also bounds the values one list may hold, counting the elements of
    /// nested lists (`range()`, list comprehensions, `collect()`). Exceeding it is an
    /// [`ErrorKind::Limit`] error. Default 1,000,000.
    pub max_rows: usize,
    /// The upper bound used for variable-length patterns without one (`*`, `*2..`).
    /// Explicit bounds (`*..50`) are taken as written. Default 15.
    pub max_depth: u32,
    /// The most relationships all variable-length patterns of a query may walk in total
    /// (each step of each path counts). Exceeding it is an [`ErrorKind::Limit`] error
    /// naming the fix. Default 1,000,000.
    pub max_paths: u64,
}

impl Default for ExecOptions {
    fn default() -> ExecOptions {
        ExecOptions {
            max_rows: 1_000_000,
            max_depth: 15,
            max_paths: 1_000_000,
        }
    }
}

/// What a query changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Nodes created.
    pub nodes_created: u64,
    /// Nodes deleted.
    pub nodes_deleted: u64,
    /// Relationships created (not counting `CREATE` of one that existed).
    pub relationships_created: u64,
    /// Relationships deleted (including by `DETACH DELETE`).
    pub relationships_deleted: u64,
    /// Properties set or removed.
    pub properties_set: u64,
    /// Labels (node types) set.
    pub labels_added: u64,
    /// Labels (node types) removed or replaced.
    pub labels_removed: u64,
}

impl Counters {
    /// True when the query changed anything.
    pub fn contains_updates(&self) -> bool {
        *self != Counters::default()
    }

    /// The counters as a JSON object.
    pub fn to_json(&self) -> Json {
        serde_json::json!({
            "nodes_created": self.nodes_created,
            "nodes_deleted": self.nodes_deleted,
            "relationships_created": self.relationships_created,
            "relationships_deleted": self.relationships_deleted,
            "properties_set": self.properties_set,
            "labels_added": self.labels_added,
            "labels_removed": self.labels_removed,
        })
    }
}

/// The result of a query: column names and rows of JSON values. Nodes are
/// `{"id": .., "type": .., "data": {..}}`, relationships
/// `{"from": .., "relation": .., "to": .., "data": {..}}`, paths lists of alternating nodes
/// and relationships.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueryResult {
    /// Column names: the alias, or the expression's text.
    pub columns: Vec<String>,
    /// The rows, each with one value per column.
    pub rows: Vec<Vec<Json>>,
    /// What the query changed.
    pub counters: Counters,
}

impl QueryResult {
    /// The values of one column, by name.
    pub fn column(&self, name: &str) -> Option<Vec<&Json>> {
        let i = self.columns.iter().position(|c| c == name)?;
        Some(self.rows.iter().map(|r| &r[i]).collect())
    }

    /// `{"columns": [..], "rows": [[..]], "counters": {..}}`.
    pub fn to_json(&self) -> Json {
        serde_json::json!({
            "columns": self.columns,
            "rows": self.rows,
            "counters": self.counters.to_json(),
        })
    }
}

/// A parsed query, ready to run any number of times with different parameters.
#[derive(Clone, Debug)]
pub struct Query {
    text: String,
    statement: ast::Statement,
}

/// Parses `text`; syntax errors carry the position.
pub fn parse(text: &str) -> Result<Query> {
    Ok(Query {
        statement: parser::parse_statement(text)?,
        text: text.to_owned(),
    })
}

impl Query {
    /// The query text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The syntax tree.
    pub fn statement(&self) -> &ast::Statement {
        &self.statement
    }

    /// True when the query has no update clause (CREATE, MERGE, SET, REMOVE, DELETE), so
    /// [`run_read`](Self::run_read) can run it.
    pub fn is_read_only(&self) -> bool {
        self.statement.parts.iter().all(|p| {
            p.clauses.iter().all(|c| {
                matches!(
                    c,
                    ast::Clause::Match(_)
                        | ast::Clause::Unwind { .. }
                        | ast::Clause::With(_)
                        | ast::Clause::Return(_)
                )
            })
        })
    }

    /// Checks the query against `params` (unknown variables and functions, missing
    /// parameters, misplaced aggregates) without running it.
    pub fn check(&self, params: &Map<String, Json>, opts: &ExecOptions) -> Result<()> {
        compile::compile(&self.text, &self.statement, params, opts).map(|_| ())
    }

    /// Runs the query, reading and writing `store`.
    pub fn run<S: GraphStoreMut + ?Sized>(
        &self,
        store: &mut S,
        params: &Map<String, Json>,
        opts: &ExecOptions,
    ) -> Result<QueryResult> {
        self.run_on(&mut ReadWrite(store), params, opts)
    }

    /// Runs a read-only query; a query with update clauses fails with
    /// [`ErrorKind::ReadOnly`] before anything runs.
    pub fn run_read<S: GraphStore + ?Sized>(
        &self,
        store: &S,
        params: &Map<String, Json>,
        opts: &ExecOptions,
    ) -> Result<QueryResult> {
        if !self.is_read_only() {
            return Err(CypherError::new(
                ErrorKind::ReadOnly,
                "this query has update clauses (CREATE, MERGE, SET, REMOVE or DELETE) but was \
                 run read-only",
            ));
        }
        self.run_on(&mut ReadOnly(store), params, opts)
    }

    fn run_on(
        &self,
        backend: &mut dyn Backend,
        params: &Map<String, Json>,
        opts: &ExecOptions,
    ) -> Result<QueryResult> {
        let plan = compile::compile(&self.text, &self.statement, params, opts)?;
        exec::run(&plan, backend, *opts)
    }
}

/// Parses and runs `query` against `store` with `params` (`$name` in the query).
pub fn execute<S: GraphStoreMut + ?Sized>(
    store: &mut S,
    query: &str,
    params: &Map<String, Json>,
    opts: &ExecOptions,
) -> Result<QueryResult> {
    parse(query)?.run(store, params, opts)
}

/// Parses and runs a read-only `query`; update clauses fail with [`ErrorKind::ReadOnly`].
pub fn execute_read<S: GraphStore + ?Sized>(
    store: &S,
    query: &str,
    params: &Map<String, Json>,
    opts: &ExecOptions,
) -> Result<QueryResult> {
    parse(query)?.run_read(store, params, opts)
}
