//! The `vector_search(table, column, query, k [, options])` table-valued function.
//!
//! Rows come out nearest first with columns `id` (the node id for `nodes`, else the row id),
//! `distance`, and the row id as `rowid`, so they JOIN with the indexed table:
//! `SELECT d.title, s.distance FROM vector_search('docs', 'embedding', ?, 10) s
//!  JOIN docs d ON d.rowid = s.rowid`.

use std::ffi::CStr;
use std::sync::Arc;

use rusqlite::Connection;
use rusqlite::types::ValueRef;

use super::defs::NODES_NAME;
use super::parse::parse_vector;
use super::registry::{Query, SearchOptions, SearchRequest, VectorRegistry};
use crate::error::{Error, Result};
use crate::table_fn::{TableFunction, int_arg, register as register_fn, static_module, text_arg};
use crate::value::Value;

pub(crate) fn register(conn: &Connection, registry: Arc<VectorRegistry>) -> Result<()> {
    register_fn::<SearchFn>(conn, c"vector_search", registry)
}

struct SearchFn;

impl TableFunction for SearchFn {
    type State = Arc<VectorRegistry>;
    type Rows = Vec<(i64, Vec<Value>)>;
    const SCHEMA: &'static CStr = c"CREATE TABLE x(id, distance, \"table\" HIDDEN, \"column\" HIDDEN, query HIDDEN, k HIDDEN, options HIDDEN)";
    const COLUMNS: usize = 2;
    const ARGS: usize = 5;
    const REQUIRED: usize = 4;
    const USAGE: &'static str = "vector_search needs (table, column, query, k [, options_json]), e.g. \
                                 SELECT * FROM vector_search('docs', 'embedding', ?, 10)";
    const ORDERED_BY_SECOND: bool = true;

    static_module!(SearchFn);

    fn rows(
        registry: &Arc<VectorRegistry>,
        conn: &Connection,
        args: &[Option<ValueRef<'_>>],
    ) -> Result<Self::Rows> {
        let table = text_arg(args, 0, "vector_search: the table name")?
            .ok_or_else(|| Error::invalid(Self::USAGE))?;
        let column = text_arg(args, 1, "vector_search: the column name")?.unwrap_or_default();
        let options = match text_arg(args, 4, "vector_search: options")? {
            Some(text) => SearchOptions::from_json(&text)?,
            None => SearchOptions::default(),
        };
        let query = match args[2] {
            Some(ValueRef::Text(t))
                if options.text_query || !t.trim_ascii_start().starts_with(b"[") =>
            {
                Query::Text(String::from_utf8_lossy(t).into_owned())
            }
            Some(v) => Query::Vector(parse_vector(v)?.ok_or_else(|| {
                Error::invalid("vector_search: the query is NULL; give a vector or a text to embed")
            })?),
            None => return Err(Error::invalid(Self::USAGE)),
        };
        let k = match int_arg(args, 3, "vector_search: k")? {
            Some(k) if k >= 1 => k as usize,
            _ => return Err(Error::invalid("vector_search: k must be at least 1")),
        };
        let req = SearchRequest {
            table: &table,
            column: &column,
            query,
            k,
            options: &options,
        };
        let hits = registry.search(conn, &req)?;
        let mut node_id = if table.eq_ignore_ascii_case(NODES_NAME) {
            Some(conn.prepare_cached("SELECT id FROM _pluresdb_nodes WHERE rid = ?1")?)
        } else {
            None
        };
        hits.into_iter()
            .map(|hit| {
                let id = match &mut node_id {
                    Some(stmt) => Value::Text(stmt.query_row([hit.label], |r| r.get(0))?),
                    None => Value::Integer(hit.label),
                };
                Ok((hit.label, vec![id, Value::Real(f64::from(hit.distance))]))
            })
            .collect()
    }
}
