//! [`Statement`]: a prepared statement for repeated use (better-sqlite3's `db.prepare`).

use std::sync::Arc;

use crate::cursor::RowIter;
use crate::database::Database;
use crate::engine::SqlInfo;
use crate::error::Result;
use crate::params::Params;
use crate::query::RunResult;
use crate::row::{Column, Columns, FromRow, Row};

/// A prepared statement. It is checked when created, runs on whichever connection suits it,
/// and is kept compiled in each connection's statement cache, so repeated runs skip parsing.
/// Cheap to clone; usable from any thread.
#[derive(Clone)]
pub struct Statement {
    db: Database,
    sql: Arc<str>,
    info: Arc<SqlInfo>,
    readonly: bool,
    parameters: Arc<[Option<String>]>,
    columns: Arc<Columns>,
}

impl std::fmt::Debug for Statement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Statement").field("sql", &self.sql).finish()
    }
}

impl Statement {
    pub(crate) fn new(db: Database, sql: &str) -> Result<Statement> {
        let engine = db.engine().clone();
        let info = engine.info(sql);
        let (readonly, parameters, columns) =
            engine.with_statement(sql, &info, |_, stmt, info| {
                let parameters: Vec<Option<String>> = (1..=stmt.parameter_count())
                    .map(|i| stmt.parameter_name(i).map(str::to_owned))
                    .collect();
                Ok((stmt.readonly(), parameters, info.columns(stmt)))
            })?;
        Ok(Statement {
            db,
            sql: sql.into(),
            info,
            readonly,
            parameters: parameters.into(),
            columns,
        })
    }

    /// The SQL text.
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// True when the statement does not write (SQLite's `sqlite3_stmt_readonly`).
    pub fn readonly(&self) -> bool {
        self.readonly
    }

    /// True when the statement returns rows (it has result columns).
    pub fn returns_rows(&self) -> bool {
        !self.columns.is_empty()
    }

    /// Result columns with their declared types, as of preparation.
    pub fn columns(&self) -> Vec<Column> {
        self.columns.iter().cloned().collect()
    }

    /// Parameter names in order (`None` for positional `?`).
    pub fn parameters(&self) -> &[Option<String>] {
        &self.parameters
    }

    /// Runs the statement; returns rows changed and the last inserted rowid.
    pub fn run(&self, params: impl Params) -> Result<RunResult> {
        self.db.engine().run(&self.sql, &self.info, &params)
    }

    /// The first row, or `None`.
    pub fn get(&self, params: impl Params) -> Result<Option<Row>> {
        self.db.engine().get(&self.sql, &self.info, &params)
    }

    /// All rows.
    pub fn all(&self, params: impl Params) -> Result<Vec<Row>> {
        self.db.engine().all(&self.sql, &self.info, &params)
    }

    /// The first row converted to `T`, or `None`.
    pub fn get_as<T: FromRow>(&self, params: impl Params) -> Result<Option<T>> {
        self.db.engine().get(&self.sql, &self.info, &params)
    }

    /// All rows converted to `T`.
    pub fn all_as<T: FromRow>(&self, params: impl Params) -> Result<Vec<T>> {
        self.db.engine().all(&self.sql, &self.info, &params)
    }

    /// Streams the rows without loading them all.
    pub fn iterate(&self, params: impl Params) -> Result<RowIter> {
        RowIter::open(self.db.engine(), &self.sql, &params)
    }

    /// Streams the rows converted to `T`.
    pub fn iterate_as<T: FromRow>(&self, params: impl Params) -> Result<RowIter<T>> {
        RowIter::open(self.db.engine(), &self.sql, &params)
    }
}
