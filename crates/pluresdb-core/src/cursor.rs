//! [`RowIter`]: rows streamed one at a time from a statement that keeps its connection.

use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::Arc;

use crate::conn::CachedStmt;
use crate::engine::{
    Engine, Holder, ObservedStatement, SqlInfo, UndoMark, WriteObserver, WriterClass,
    begin_own_write, end_own_write,
};
use crate::error::Result;
use crate::events::{SavepointStmt, savepoint_statement};
use crate::params::{Binder, Params};
use crate::row::{Columns, FromRow, Row, RowRef};

/// Rows of a query, read lazily (from [`Database::iterate`](crate::Database::iterate)).
///
/// The iterator keeps a connection until it is exhausted or dropped: a reader connection for
/// plain reads, the writer otherwise. While it holds the writer, other statements on the same
/// thread fail with a clear "busy" error instead of deadlocking.
pub struct RowIter<T = Row> {
    rows: Option<rusqlite::Rows<'static>>,
    stmt: Option<NonNull<CachedStmt>>,
    holder: Option<NonNull<Holder>>,
    key: u64,
    columns: Arc<Columns>,
    /// Set until the first row refreshed the columns (a schema change re-prepares there).
    info: Option<Arc<SqlInfo>>,
    /// A write on the writer under change capture: finished (and committed) in `finish`.
    observed: Option<ObservedWrite>,
    /// A write transaction begun for the statement (see `in_write_transaction`), to end with it.
    own_write: bool,
    /// On the writer: where the statement started, to undo its notifications if it fails.
    undo_mark: Option<(Arc<Engine>, UndoMark)>,
    /// On the writer, a savepoint statement: applied to the engine's savepoint marks once it
    /// has run (see [`EventHub::savepoint_done`](crate::events::EventHub::savepoint_done)).
    savepoint: Option<SavepointStmt>,
    failed: bool,
    _rows_as: PhantomData<fn() -> T>,
}

/// A writing statement streamed on the writer while changes are captured, with the observer
/// it started under (it must end under the same one: the statement itself may stop the last
/// table syncing, after which none is active).
struct ObservedWrite {
    observer: Arc<dyn WriteObserver>,
    statement: ObservedStatement,
}

impl<T: FromRow> RowIter<T> {
    pub(crate) fn open(engine: &Arc<Engine>, sql: &str, params: &dyn Params) -> Result<RowIter<T>> {
        let info: Arc<SqlInfo> = engine.info(sql);
        let holder = engine.holder_for(sql, &info)?;
        let mut iter = RowIter {
            rows: None,
            stmt: None,
            holder: Some(NonNull::from(Box::leak(Box::new(holder)))),
            key: info.id,
            columns: Arc::new(Columns::default()),
            info: None,
            observed: None,
            own_write: false,
            undo_mark: None,
            savepoint: None,
            failed: false,
            _rows_as: PhantomData,
        };
        // SAFETY: the holder is heap-allocated, never moved, and freed only in `finish`.
        let holder = unsafe { &mut *iter.holder.expect("just set").as_ptr() };
        // On the writer under capture: the observer of a statement it observes (see
        // `WriterClass::observed`).
        let class = match &*holder {
            Holder::Writer(_) => Some(engine.classify_on_writer(holder.conn_mut(), sql, &info)?),
            Holder::Reader(_) => None,
        };
        let observer = engine
            .active_observer_arc()
            .filter(|_| class.is_some_and(WriterClass::observed));
        let stmt = holder.conn_mut().take(info.id, sql)?;
        if observer.is_none() && class.is_some_and(|c| c.writes_through_function) {
            // With no capture running, such a statement still writes in a transaction of its
            // own, begun first (see `in_write_transaction`).
            iter.own_write = begin_own_write(holder.conn_mut().get())?;
        }
        if let Holder::Writer(_) = &*holder {
            let mark = UndoMark::take(&engine.hub, holder.conn_mut().get());
            iter.undo_mark = Some((engine.clone(), mark));
            iter.savepoint = savepoint_statement(sql);
        }
        if let Some(observer) = observer {
            let conn = holder.conn_mut().get();
            iter.observed = Some(ObservedWrite {
                statement: ObservedStatement::start(&*observer, conn, conn.is_autocommit(), true)?,
                observer,
            });
        }
        let stmt = NonNull::from(Box::leak(Box::new(stmt)));
        iter.stmt = Some(stmt);
        // Until the query starts, an early return (bad parameters) must roll back, not commit.
        iter.failed = true;
        // SAFETY: the statement is heap-allocated and reclaimed (back into its connection's
        // cache) only in `finish`, after the rows that borrow it are dropped.
        let stmt: &'static mut CachedStmt = unsafe { &mut *stmt.as_ptr() };
        let mut binder = Binder::new(stmt);
        params.bind(&mut binder)?;
        binder.finish()?;
        iter.columns = info.columns(stmt);
        iter.rows = Some(stmt.raw_query());
        iter.info = Some(info);
        iter.failed = false;
        Ok(iter)
    }
}

impl<T> RowIter<T> {
    /// The result columns.
    pub fn columns(&self) -> &Columns {
        &self.columns
    }

    /// Releases the statement (back to its connection's cache) and the connection now; an
    /// error when the write's captures could not be recorded (it was rolled back then).
    fn finish(&mut self) -> Result<()> {
        self.rows = None;
        let stmt = self.stmt.take().map(|stmt| {
            // SAFETY: created by Box::leak in `open`, reclaimed once here; no rows borrow it now.
            *unsafe { Box::from_raw(stmt.as_ptr()) }
        });
        if let Some(holder) = self.holder.take() {
            // SAFETY: created by Box::leak in `open`, reclaimed once here.
            let mut holder = unsafe { Box::from_raw(holder.as_ptr()) };
            if let Some(mut stmt) = stmt {
                stmt.clear_bindings();
                holder.conn_mut().put(self.key, stmt);
            }
            if let Some((engine, mark)) = self.undo_mark.take()
                && self.failed
            {
                mark.failed(&engine.hub, holder.conn_mut().get());
            }
            if let Some(observed) = self.observed.take() {
                return observed.finish(holder.conn_mut().get(), self.failed);
            }
            if std::mem::take(&mut self.own_write) {
                return end_own_write(holder.conn_mut().get(), !self.failed);
            }
        }
        Ok(())
    }
}

impl<T: FromRow> Iterator for RowIter<T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        let rows = self.rows.as_mut()?;
        match rows.next() {
            Ok(Some(row)) => {
                if let Some(info) = self.info.take() {
                    self.columns = info.columns(row.as_ref());
                }
                let row = T::from_row_ref(&RowRef::new(&self.columns, row));
                if row.is_err() {
                    let _ = self.finish();
                }
                Some(row)
            }
            // The write's captures are recorded at the end: a failure there is the last item.
            Ok(None) => {
                if let (Some(statement), Some((engine, _))) =
                    (self.savepoint.take(), &self.undo_mark)
                {
                    engine.hub.savepoint_done(statement);
                }
                self.finish().err().map(Err)
            }
            Err(e) => {
                self.failed = true;
                let _ = self.finish();
                Some(Err(e.into()))
            }
        }
    }
}

impl<T> Drop for RowIter<T> {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

impl ObservedWrite {
    /// Writes the captures (committing the wrapping transaction), or drops them on failure.
    fn finish(self, conn: &rusqlite::Connection, failed: bool) -> Result<()> {
        let done = self.statement.end(&*self.observer, conn, failed, false);
        if failed { Ok(()) } else { done }
    }
}
