//! The `vector_search(table, column, query, k [, options])` table-valued function.
//!
//! Rows come out nearest first with columns `id` (the node id for `nodes`, else the row id),
//! `distance`, and the row id as `rowid`, so they JOIN with the indexed table:
//! `SELECT d.title, s.distance FROM vector_search('docs', 'embedding', ?, 10) s
//!  JOIN docs d ON d.rowid = s.rowid`.

use std::borrow::Cow;
use std::ffi::{CStr, c_int};
use std::sync::Arc;

use rusqlite::types::ValueRef;
use rusqlite::vtab::{
    Context, Filters, IndexConstraintOp, IndexInfo, Module, VTab, VTabConfig, VTabConnection,
    VTabCursor,
};
use rusqlite::{Connection, ffi};

use super::defs::NODES_NAME;
use super::parse::parse_vector;
use super::registry::{Hit, Query, SearchOptions, SearchRequest, VectorRegistry};
use crate::error::Error;

const COL_ID: c_int = 0;
const COL_DISTANCE: c_int = 1;
/// The hidden argument columns, in call order.
const ARGS: [&str; 5] = ["table", "column", "query", "k", "options"];
const FIRST_ARG: c_int = 2;
/// Arguments that must be given (table, column, query, k).
const REQUIRED: c_int = 0b1111;

const USAGE: &str = "vector_search needs (table, column, query, k [, options_json]), e.g. \
                     SELECT * FROM vector_search('docs', 'embedding', ?, 10)";

pub(crate) fn register(conn: &Connection, registry: Arc<VectorRegistry>) -> rusqlite::Result<()> {
    const MODULE: Module<'static, SearchTab> = Module::eponymous_only_module();
    conn.create_module(c"vector_search", &MODULE, Some(registry))
}

#[repr(C)]
struct SearchTab {
    base: ffi::sqlite3_vtab,
    registry: Arc<VectorRegistry>,
    /// The connection this table belongs to (not owned: it is the one running the query). Its
    /// statement cache keeps the catch-up queries prepared between searches.
    conn: Connection,
}

unsafe impl<'vtab> VTab<'vtab> for SearchTab {
    type Aux = Arc<VectorRegistry>;
    type Cursor = SearchCursor<'vtab>;

    fn connect(
        db: &mut VTabConnection,
        aux: Option<&Arc<VectorRegistry>>,
        _module: &[u8],
        _database: &[u8],
        _table: &[u8],
        _args: &[&[u8]],
    ) -> rusqlite::Result<(Cow<'static, CStr>, SearchTab)> {
        let registry = aux
            .cloned()
            .ok_or_else(|| rusqlite::Error::ModuleError("vector_search has no database".into()))?;
        db.config(VTabConfig::Innocuous)?;
        // SAFETY: the handle outlives the table (SQLite disconnects eponymous tables before it
        // closes the connection), and the non-owning Connection never closes it.
        let conn = unsafe { Connection::from_handle(db.handle())? };
        Ok((
            Cow::Borrowed(
                c"CREATE TABLE x(id, distance, \"table\" HIDDEN, \"column\" HIDDEN, query HIDDEN, k HIDDEN, options HIDDEN)",
            ),
            SearchTab {
                base: ffi::sqlite3_vtab::default(),
                registry,
                conn,
            },
        ))
    }

    fn best_index(&self, info: &mut IndexInfo) -> rusqlite::Result<bool> {
        let mut given: c_int = 0;
        let mut unusable: c_int = 0;
        let mut slots: [Option<usize>; ARGS.len()] = [None; ARGS.len()];
        for (i, c) in info.constraints().enumerate() {
            let arg = c.column() - FIRST_ARG;
            if arg < 0 || arg as usize >= ARGS.len() {
                continue;
            }
            if !c.is_usable() {
                unusable |= 1 << arg;
            } else if c.operator() == IndexConstraintOp::SQLITE_INDEX_CONSTRAINT_EQ {
                given |= 1 << arg;
                slots[arg as usize] = Some(i);
            }
        }
        if unusable & !given != 0 {
            // An argument comes from a table SQLite has not read yet: ask for another order.
            return Ok(false);
        }
        let mut n = 0;
        for i in slots.iter().flatten() {
            n += 1;
            let mut usage = info.constraint_usage(*i);
            usage.set_argv_index(n);
            usage.set_omit(true);
        }
        if let Some(order) = info.order_bys().next()
            && order.column() == COL_DISTANCE
            && !order.is_order_by_desc()
            && info.num_of_order_by() == 1
        {
            info.set_order_by_consumed(true);
        }
        if given & REQUIRED == REQUIRED {
            info.set_estimated_cost(10.0);
            info.set_estimated_rows(10);
        } else {
            info.set_estimated_cost(1e12);
        }
        info.set_idx_num(given);
        Ok(true)
    }

    fn open(&'vtab mut self) -> rusqlite::Result<SearchCursor<'vtab>> {
        Ok(SearchCursor {
            base: ffi::sqlite3_vtab_cursor::default(),
            tab: self,
            hits: Vec::new(),
            ids: Vec::new(),
            pos: 0,
        })
    }
}

#[repr(C)]
struct SearchCursor<'vtab> {
    base: ffi::sqlite3_vtab_cursor,
    tab: &'vtab SearchTab,
    hits: Vec<Hit>,
    /// Node ids, for searches over nodes.
    ids: Vec<String>,
    pos: usize,
}

fn fail(e: Error) -> rusqlite::Error {
    rusqlite::Error::ModuleError(e.to_string())
}

impl SearchCursor<'_> {
    fn run(&mut self, given: c_int, args: &Filters<'_>) -> crate::Result<()> {
        if given & REQUIRED != REQUIRED {
            return Err(Error::invalid(USAGE));
        }
        let mut values = args.iter();
        let mut next = || values.next().expect("one value per given argument");
        let text = |v: ValueRef<'_>, what: &str| -> crate::Result<String> {
            match v {
                ValueRef::Text(t) => Ok(String::from_utf8_lossy(t).into_owned()),
                _ => Err(Error::invalid(format!(
                    "vector_search: {what} must be text. {USAGE}"
                ))),
            }
        };
        let table = text(next(), "the table name")?;
        let column = match next() {
            ValueRef::Null => String::new(),
            v => text(v, "the column name")?,
        };
        let query = match next() {
            ValueRef::Text(t) if !t.trim_ascii_start().starts_with(b"[") => {
                Query::Text(String::from_utf8_lossy(t).into_owned())
            }
            v => Query::Vector(parse_vector(v)?.ok_or_else(|| {
                Error::invalid("vector_search: the query is NULL; give a vector or a text to embed")
            })?),
        };
        let k = match next() {
            ValueRef::Integer(k) if k >= 1 => k as usize,
            ValueRef::Integer(_) => {
                return Err(Error::invalid("vector_search: k must be at least 1"));
            }
            _ => return Err(Error::invalid("vector_search: k must be an integer")),
        };
        let options = if given & (1 << 4) != 0 {
            match next() {
                ValueRef::Null => SearchOptions::default(),
                v => SearchOptions::from_json(&text(v, "options")?)?,
            }
        } else {
            SearchOptions::default()
        };
        let conn = &self.tab.conn;
        let req = SearchRequest {
            table: &table,
            column: &column,
            query,
            k,
            options: &options,
        };
        self.hits = self.tab.registry.search(conn, &req)?;
        self.ids.clear();
        if table.eq_ignore_ascii_case(NODES_NAME) {
            let mut stmt = conn.prepare_cached("SELECT id FROM _pluresdb_nodes WHERE rid = ?1")?;
            for hit in &self.hits {
                self.ids.push(stmt.query_row([hit.label], |r| r.get(0))?);
            }
        }
        Ok(())
    }
}

unsafe impl VTabCursor for SearchCursor<'_> {
    fn filter(
        &mut self,
        idx_num: c_int,
        _idx_str: Option<&str>,
        args: &Filters<'_>,
    ) -> rusqlite::Result<()> {
        self.pos = 0;
        self.hits.clear();
        self.run(idx_num, args).map_err(fail)
    }

    fn next(&mut self) -> rusqlite::Result<()> {
        self.pos += 1;
        Ok(())
    }

    fn eof(&self) -> bool {
        self.pos >= self.hits.len()
    }

    fn column(&self, ctx: &mut Context, i: c_int) -> rusqlite::Result<()> {
        let hit = &self.hits[self.pos];
        match i {
            COL_ID => match self.ids.get(self.pos) {
                Some(id) => ctx.set_result(id),
                None => ctx.set_result(hit.label),
            },
            COL_DISTANCE => ctx.set_result(f64::from(hit.distance)),
            _ => ctx.set_result(rusqlite::types::Null),
        }
    }

    fn rowid(&self) -> rusqlite::Result<i64> {
        Ok(self.hits[self.pos].label)
    }
}
