//! The graph's table-valued SQL functions: `graph_traverse`, `graph_neighbors` and
//! `graph_shortest_path`, answered from the in-memory adjacency, so they JOIN with
//! `pluresdb_nodes`, user tables and `vector_search`.

use std::sync::Arc;

use rusqlite::Connection;
use rusqlite::types::ValueRef;
use rusqlite::vtab::Context;

use super::Direction;
use super::index::GraphIndex;
use super::walk::{
    PathQuery, Traverse, Walk, graph_error, rel_filter, run_path, run_traverse, to_graph_direction,
};
use crate::error::Result;
use crate::table_fn::{RowSet, TableFunction, int_arg, register, static_module, text_arg};
use crate::value::Value;

/// Registers the graph functions on `conn`.
pub(crate) fn register_graph_functions(conn: &Connection, index: &Arc<GraphIndex>) -> Result<()> {
    register::<TraverseFn>(conn, c"graph_traverse", index.clone())?;
    register::<NeighborsFn>(conn, c"graph_neighbors", index.clone())?;
    register::<PathFn>(conn, c"graph_shortest_path", index.clone())?;
    Ok(())
}

/// `relation` may list several, comma-separated; NULL or '' or '*' means any.
fn relations(arg: Option<String>) -> Vec<String> {
    arg.map(|r| {
        r.split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty() && *r != "*")
            .map(str::to_owned)
            .collect()
    })
    .unwrap_or_default()
}

fn direction(arg: Option<String>, default: Direction) -> Result<Direction> {
    arg.map_or(Ok(default), |d| d.parse())
}

struct TraverseFn;

impl TableFunction for TraverseFn {
    type State = Arc<GraphIndex>;
    type Rows = Walk;
    const SCHEMA: &'static std::ffi::CStr = c"CREATE TABLE x(id, depth, path, start HIDDEN, relation HIDDEN, direction HIDDEN, min_depth HIDDEN, max_depth HIDDEN)";
    const COLUMNS: usize = 3;
    const ARGS: usize = 5;
    const REQUIRED: usize = 1;
    const USAGE: &'static str = "use graph_traverse(start [, relation [, direction [, min_depth [, max_depth]]]]), \
        e.g. SELECT * FROM graph_traverse('ada', 'knows', 'out', 1, 3)";

    static_module!(TraverseFn);

    fn rows(
        index: &Arc<GraphIndex>,
        conn: &Connection,
        args: &[Option<ValueRef<'_>>],
    ) -> Result<Self::Rows> {
        // A NULL start (a join's row without one) reaches nothing, as NULL matches nothing.
        let Some(start) = text_arg(args, 0, "graph_traverse: start")? else {
            return Ok(Walk::default());
        };
        let mut query = Traverse::from([start]).direction(direction(
            text_arg(args, 2, "graph_traverse: direction")?,
            Direction::Out,
        )?);
        for r in relations(text_arg(args, 1, "graph_traverse: relation")?) {
            query = query.relation(r);
        }
        let min = int_arg(args, 3, "graph_traverse: min_depth")?.unwrap_or(1);
        query = match int_arg(args, 4, "graph_traverse: max_depth")? {
            Some(max) => query.depth(min, max),
            None => query.depth(min, i64::from(u32::MAX)),
        };
        let view = index.view(conn)?;
        run_traverse(&view, conn, &query)
    }
}

/// Rows `(id, depth, path)`; the path (a JSON array) is built only when read.
impl RowSet for Walk {
    fn len(&self) -> usize {
        Walk::len(self)
    }

    fn rowid(&self, row: usize) -> i64 {
        row as i64 + 1
    }

    fn column(&self, row: usize, col: usize, ctx: &mut Context) -> rusqlite::Result<()> {
        let Some(r) = self.get(row) else {
            return ctx.set_result(rusqlite::types::Null);
        };
        match col {
            0 => ctx.set_result(r.id()),
            1 => ctx.set_result(i64::from(r.depth())),
            _ => ctx.set_result(serde_json::to_string(&r.path()).expect("strings serialize")),
        }
    }
}

struct NeighborsFn;

impl TableFunction for NeighborsFn {
    type State = Arc<GraphIndex>;
    type Rows = Vec<(i64, Vec<Value>)>;
    const SCHEMA: &'static std::ffi::CStr =
        c"CREATE TABLE x(id, relation, direction, node HIDDEN, rel HIDDEN, dir HIDDEN)";
    const COLUMNS: usize = 3;
    const ARGS: usize = 3;
    const REQUIRED: usize = 1;
    const USAGE: &'static str = "use graph_neighbors(id [, relation [, direction]]), e.g. \
        SELECT * FROM graph_neighbors('ada', 'knows', 'both')";

    static_module!(NeighborsFn);

    fn rows(
        index: &Arc<GraphIndex>,
        conn: &Connection,
        args: &[Option<ValueRef<'_>>],
    ) -> Result<Self::Rows> {
        let Some(id) = text_arg(args, 0, "graph_neighbors: id")? else {
            return Ok(Vec::new());
        };
        let rels = relations(text_arg(args, 1, "graph_neighbors: relation")?);
        let dir = direction(
            text_arg(args, 2, "graph_neighbors: direction")?,
            Direction::Both,
        )?;
        let g = index.view(conn)?;
        let v = g.resolve(&[id.as_str()]).map_err(graph_error)?[0];
        let filter = rel_filter(&g, &rels);
        Ok(g.neighbors(v, to_graph_direction(dir), &filter)
            .enumerate()
            .map(|(i, n)| {
                let way = if n.dir == pluresdb_graph::Direction::In {
                    "in"
                } else {
                    "out"
                };
                (
                    i as i64 + 1,
                    vec![
                        Value::Text(g.id(n.node).to_owned()),
                        Value::Text(g.relation_name(n.rel).to_owned()),
                        Value::Text(way.to_owned()),
                    ],
                )
            })
            .collect())
    }
}

struct PathFn;

impl TableFunction for PathFn {
    type State = Arc<GraphIndex>;
    type Rows = Vec<(i64, Vec<Value>)>;
    const SCHEMA: &'static std::ffi::CStr = c"CREATE TABLE x(step, id, relation, cost, from_id HIDDEN, to_id HIDDEN, rel HIDDEN, direction HIDDEN, weight HIDDEN)";
    const COLUMNS: usize = 4;
    const ARGS: usize = 5;
    const REQUIRED: usize = 2;
    const USAGE: &'static str = "use graph_shortest_path(from, to [, relation [, direction [, weight_field]]]), \
        e.g. SELECT * FROM graph_shortest_path('ada', 'bob', 'knows')";

    static_module!(PathFn);

    fn rows(
        index: &Arc<GraphIndex>,
        conn: &Connection,
        args: &[Option<ValueRef<'_>>],
    ) -> Result<Self::Rows> {
        let (Some(from), Some(to)) = (
            text_arg(args, 0, "graph_shortest_path: from")?,
            text_arg(args, 1, "graph_shortest_path: to")?,
        ) else {
            return Ok(Self::Rows::default());
        };
        let mut query = PathQuery::new().direction(direction(
            text_arg(args, 3, "graph_shortest_path: direction")?,
            Direction::Out,
        )?);
        for r in relations(text_arg(args, 2, "graph_shortest_path: relation")?) {
            query = query.relation(r);
        }
        if let Some(w) = text_arg(args, 4, "graph_shortest_path: weight")? {
            query = query.weight(w);
        }
        let g = index.view(conn)?;
        let Some(path) = run_path(&g, conn, &from, &to, &query)? else {
            return Ok(Vec::new());
        };
        Ok(path
            .nodes
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let rel = if i == 0 {
                    Value::Null
                } else {
                    Value::Text(path.relations[i - 1].clone())
                };
                (
                    i as i64,
                    vec![
                        Value::Integer(i as i64),
                        Value::Text(id.clone()),
                        rel,
                        Value::Real(path.cost),
                    ],
                )
            })
            .collect())
    }
}
