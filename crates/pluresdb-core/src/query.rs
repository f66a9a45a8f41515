//! Running one statement: `run`, `get`, `all`, and scripts of several statements.

use std::cell::Cell;
use std::sync::Arc;

pub(crate) use script_split::is_complete;
use script_split::next_statement;

use crate::engine::{Engine, SqlInfo, UndoMark, WriterClass, sql_error};
use crate::error::{Error, Result};
use crate::params::{Binder, Params};
use crate::row::{Columns, FromRow, Row, RowRef};

/// What a write did: the better-sqlite3 `RunResult`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize)]
pub struct RunResult {
    /// Rows inserted, updated or deleted by the statement (0 for reads).
    pub changes: u64,
    /// The rowid of the last row inserted on the writer connection.
    #[serde(rename = "lastInsertRowid")]
    pub last_insert_rowid: i64,
}

/// The outcome of a script (several statements): the rows of the last statement that
/// returns columns, and the changes of the whole script.
#[derive(Clone, Debug, Default)]
pub struct ScriptResult {
    /// Columns of the last statement that has result columns.
    pub columns: Arc<Columns>,
    /// Its rows.
    pub rows: Vec<Row>,
    /// Rows changed by all the statements.
    pub changes: u64,
    /// Number of statements run.
    pub statements: usize,
}

fn bind(stmt: &mut rusqlite::Statement<'_>, params: &dyn Params) -> Result<()> {
    let mut binder = Binder::new(stmt);
    params.bind(&mut binder)?;
    binder.finish()
}

impl Engine {
    pub(crate) fn run(&self, sql: &str, info: &SqlInfo, params: &dyn Params) -> Result<RunResult> {
        self.with_statement(sql, info, |conn, stmt, _| {
            bind(stmt, params)?;
            let before = conn.total_changes();
            if stmt.column_count() == 0 {
                stmt.raw_execute().map_err(|e| sql_error(e, sql))?;
            } else {
                let mut rows = stmt.raw_query();
                while rows.next().map_err(|e| sql_error(e, sql))?.is_some() {}
            }
            let changes = if conn.total_changes() == before {
                0
            } else {
                conn.changes()
            };
            Ok(RunResult {
                changes,
                last_insert_rowid: conn.last_insert_rowid(),
            })
        })
    }

    pub(crate) fn get<T: FromRow>(
        &self,
        sql: &str,
        info: &SqlInfo,
        params: &dyn Params,
    ) -> Result<Option<T>> {
        self.with_statement(sql, info, |_, stmt, info| {
            bind(stmt, params)?;
            let mut rows = stmt.raw_query();
            match rows.next().map_err(|e| sql_error(e, sql))? {
                // Columns are read after the first step: a schema change re-prepares there.
                Some(row) => {
                    T::from_row_ref(&RowRef::new(&info.columns(row.as_ref()), row)).map(Some)
                }
                None => Ok(None),
            }
        })
    }

    pub(crate) fn all<T: FromRow>(
        &self,
        sql: &str,
        info: &SqlInfo,
        params: &dyn Params,
    ) -> Result<Vec<T>> {
        self.with_statement(sql, info, |_, stmt, info| {
            bind(stmt, params)?;
            let mut out = Vec::new();
            let mut rows = stmt.raw_query();
            let mut columns = None;
            while let Some(row) = rows.next().map_err(|e| sql_error(e, sql))? {
                let columns = columns.get_or_insert_with(|| info.columns(row.as_ref()));
                out.push(T::from_row_ref(&RowRef::new(columns, row))?);
            }
            Ok(out)
        })
    }

    /// Runs every statement of `script` on the writer; keeps the rows of the last statement
    /// with result columns when `keep_rows`.
    pub(crate) fn script(&self, script: &str, keep_rows: bool) -> Result<ScriptResult> {
        let mut writer = self.writer()?;
        let mut result = ScriptResult::default();
        let mut rest = script;
        loop {
            // A statement may have made a table replicated (`SELECT pluresdb_sync_table(...)`):
            // the capture hook must be in place before the next one writes to it.
            if self.capture_hook_stale(writer.state()) {
                self.sync_hooks(writer.state_mut())?;
            }
            let conn = writer.conn();
            WriterClass::before_prepare(&self.writer_auth);
            let Some((mut stmt, start, tail)) = next_statement(conn, script, rest)? else {
                break;
            };
            let class =
                WriterClass::of_prepared(&self.writer_auth, &script[start..tail], stmt.readonly());
            result.statements += 1;
            let with_rows = keep_rows && stmt.column_count() > 0;
            let columns = Arc::new(if with_rows {
                Columns::from_statement(&stmt)
            } else {
                Columns::default()
            });
            let before = conn.total_changes();
            let mark = UndoMark::take(&self.hub, conn);
            let mut read = || -> Result<Vec<Row>> {
                let mut rows_out = Vec::new();
                let mut rows = stmt.raw_query();
                loop {
                    match rows.next() {
                        Ok(Some(row)) if with_rows => rows_out.push(Row::read(&columns, row)?),
                        Ok(Some(_)) => {}
                        Ok(None) => return Ok(rows_out),
                        Err(e) => {
                            let err = Error::from(e);
                            return Err(if err.sql().is_some() {
                                err
                            } else {
                                err.with_sql(script[start..tail].trim(), None)
                            });
                        }
                    }
                }
            };
            let run = || {
                let rows = mark.end(&self.hub, conn, read())?;
                self.hub.savepoint_ran(&script[start..tail]);
                Ok(rows)
            };
            let rows_out = self.run_on_writer(conn, class, &Cell::new(false), run)?;
            if conn.total_changes() != before {
                result.changes += conn.changes();
            }
            if with_rows {
                result.columns = columns;
                result.rows = rows_out;
            }
            rest = &script[tail..];
        }
        Ok(result)
    }
}

/// Statement-by-statement preparation of a script, with error positions in the whole script.
mod script_split {
    use std::ffi::CString;

    use rusqlite::{Connection, Statement};

    use crate::error::{Error, Result};

    /// Prepares the first statement of `rest` (a suffix of `script`); returns it with its
    /// start and end offsets in `script`, or `None` when only whitespace/comments remain.
    pub(super) fn next_statement<'c>(
        conn: &'c Connection,
        script: &str,
        mut rest: &str,
    ) -> Result<Option<(Statement<'c>, usize, usize)>> {
        loop {
            let base = script.len() - rest.len();
            let len = first_statement_len(rest);
            let text = &rest[..len];
            if text.trim().is_empty() {
                return Ok(None);
            }
            match conn.prepare(text) {
                Ok(stmt) => return Ok(Some((stmt, base, base + len))),
                Err(rusqlite::Error::Empty) => {
                    if len == rest.len() {
                        return Ok(None);
                    }
                    rest = &rest[len..];
                }
                Err(e) => {
                    let err = Error::from(e);
                    return Err(match err.offset() {
                        Some(_) => err.shift_into(script, base),
                        None => err.with_sql(text.trim(), None),
                    });
                }
            }
        }
    }

    /// Byte length of the first complete statement in `sql` (through its `;`), or all of it.
    pub(crate) fn first_statement_len(sql: &str) -> usize {
        for (i, _) in sql.match_indices(';') {
            if is_complete(&sql[..=i]) {
                return i + 1;
            }
        }
        sql.len()
    }

    /// SQLite's own test for "this text ends a statement" (`sqlite3_complete`).
    pub(crate) fn is_complete(sql: &str) -> bool {
        let Ok(text) = CString::new(sql) else {
            return true;
        };
        // SAFETY: `text` is a valid NUL-terminated string that outlives the call;
        // sqlite3_complete only reads it.
        unsafe { rusqlite::ffi::sqlite3_complete(text.as_ptr()) != 0 }
    }
}
