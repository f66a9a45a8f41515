//! [`RowIter`]: rows streamed one at a time from a statement that keeps its connection.

use std::ptr::NonNull;
use std::sync::Arc;

use rusqlite::{CachedStatement, Connection};

use crate::engine::{Engine, Holder, SqlInfo, sql_error};
use crate::error::Result;
use crate::params::{Binder, Params};
use crate::row::{Columns, Row};

/// Rows of a query, read lazily (from [`Database::iterate`](crate::Database::iterate)).
///
/// The iterator keeps a connection until it is exhausted or dropped: a reader connection for
/// plain reads, the writer otherwise. While it holds the writer, other statements on the same
/// thread fail with a clear "busy" error instead of deadlocking.
pub struct RowIter {
    // Field order is not relied on: `finish` releases in the right order.
    rows: Option<rusqlite::Rows<'static>>,
    stmt: Option<NonNull<CachedStatement<'static>>>,
    holder: Option<NonNull<Holder>>,
    columns: Arc<Columns>,
    /// Set until the first row refreshed the columns (a schema change re-prepares there).
    info: Option<Arc<SqlInfo>>,
}

impl RowIter {
    pub(crate) fn open(engine: &Arc<Engine>, sql: &str, params: &dyn Params) -> Result<RowIter> {
        let info: Arc<SqlInfo> = engine.info(sql);
        let holder = engine.holder_for(sql, &info)?;
        let mut iter = RowIter {
            rows: None,
            stmt: None,
            holder: Some(NonNull::from(Box::leak(Box::new(holder)))),
            columns: Arc::new(Columns::default()),
            info: None,
        };
        // SAFETY: the holder is heap-allocated, never moved, and freed only in `finish`, after
        // the statement and rows that borrow its connection.
        let conn: &'static Connection = unsafe { iter.holder.expect("just set").as_ref() }.conn();
        let stmt = conn.prepare_cached(sql).map_err(|e| sql_error(e, sql))?;
        let stmt = NonNull::from(Box::leak(Box::new(stmt)));
        iter.stmt = Some(stmt);
        // SAFETY: as above; the statement lives until `finish` frees it after the rows.
        let stmt: &'static mut CachedStatement<'static> = unsafe { &mut *stmt.as_ptr() };
        let mut binder = Binder::new(stmt);
        params.bind(&mut binder)?;
        binder.finish()?;
        iter.columns = info.columns(stmt);
        iter.rows = Some(stmt.raw_query());
        iter.info = Some(info);
        Ok(iter)
    }

    /// The result columns.
    pub fn columns(&self) -> &Columns {
        &self.columns
    }

    /// Releases the statement and the connection now.
    fn finish(&mut self) {
        self.rows = None;
        if let Some(stmt) = self.stmt.take() {
            // SAFETY: created by Box::leak in `open`, freed once here; no rows borrow it now.
            drop(unsafe { Box::from_raw(stmt.as_ptr()) });
        }
        if let Some(holder) = self.holder.take() {
            // SAFETY: created by Box::leak in `open`, freed once here after the statement.
            drop(unsafe { Box::from_raw(holder.as_ptr()) });
        }
    }
}

impl Iterator for RowIter {
    type Item = Result<Row>;

    fn next(&mut self) -> Option<Result<Row>> {
        let rows = self.rows.as_mut()?;
        match rows.next() {
            Ok(Some(row)) => {
                if let Some(info) = self.info.take() {
                    self.columns = info.columns(row.as_ref());
                }
                let row = Row::read(&self.columns, row);
                if row.is_err() {
                    self.finish();
                }
                Some(row)
            }
            Ok(None) => {
                self.finish();
                None
            }
            Err(e) => {
                self.finish();
                Some(Err(e.into()))
            }
        }
    }
}

impl Drop for RowIter {
    fn drop(&mut self) {
        self.finish();
    }
}
