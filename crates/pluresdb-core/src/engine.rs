//! Connections: one writer and a pool of readers over one SQLite file.
//!
//! * Every write, every statement that depends on connection state (temp tables, attached
//!   databases, pragmas, `last_insert_rowid()`, transaction control) and everything inside a
//!   transaction runs on the writer connection.
//! * Plain reads of the main database run on reader connections (WAL lets them proceed while
//!   the writer writes), so many threads can read at once.
//! * A thread that opens a transaction (`BEGIN`, or [`Database::transaction`]) holds the
//!   writer's *lease* until it ends: its later calls join the transaction, other threads'
//!   writes wait (up to the busy timeout) instead of landing inside it.
//!
//! Which reads are safe for the pool is decided once per SQL text with SQLite's authorizer.

use std::cell::Cell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard, RwLock};
use rusqlite::Connection;
use rusqlite::hooks::{Action, PreUpdateCase};

use crate::conn::{CachedStmt, Conn};
use crate::connect::{
    AuthFlags, TxCounters, WriterAuth, check_path, install_authorizer, install_commit_hooks,
    open_connection,
};
use crate::error::{Error, ErrorKind, Result};
use crate::events::{Change, EventHub, RowChange, RowOp};
use crate::options::OpenOptions;
use crate::pool::{OwnedReader, PooledReader, ReaderPool};
use crate::row::Columns;
use crate::vector::drop_column;

/// Something that follows every statement run on the writer: replication's change capture.
pub(crate) trait WriteObserver: Send + Sync {
    /// True when writes must be observed (some table is replicated).
    fn active(&self) -> bool;
    /// A mark to discard captures after, if the statement fails.
    fn mark(&self) -> usize;
    /// Drops what was captured after `mark` (0: everything).
    fn discard_since(&self, mark: usize);
    /// Writes everything captured so far (before a transaction ends, or at its end).
    fn flush(&self, conn: &Connection) -> Result<()>;
    /// After a statement succeeded inside a transaction: may write part of what was captured.
    fn after_statement(&self, conn: &Connection) -> Result<()>;
    /// The writer's pre-update hook (installed while [`active`](Self::active)): a row of
    /// `table` in database `db` is about to change.
    fn preupdate(&self, db: &str, table: &str, case: &PreUpdateCase);
    /// Why the open transaction must not commit, if it must not.
    fn commit_refusal(&self) -> Option<Error>;
    /// Makes the open transaction unable to commit, for the reason `why` (its pending captures
    /// are dropped).
    fn refuse_commit(&self, why: String);
    /// True when what is observed must be read again before the next statement (a rollback
    /// may have undone a change to it).
    fn stale(&self) -> bool;
    /// A statement that begins or ends a transaction or savepoint ran.
    fn tx_control_ran(&self);
    /// Reads again what is observed.
    fn refresh(&self, conn: &Connection) -> Result<()>;
    /// Looks whether another connection (another handle or process) committed since the
    /// writer (`conn`) last looked, as `PRAGMA data_version` tells; if so, reads again what is
    /// observed and catches up with what that commit may have moved past this handle (the
    /// clock). Returns whether it did.
    fn catch_up(&self, conn: &Connection) -> Result<bool>;
}
/// A small per-thread number (thread ids are not convertible to integers on stable Rust).
pub(crate) fn thread_token() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local!(static TOKEN: u64 = NEXT.fetch_add(1, Ordering::Relaxed));
    TOKEN.with(|t| *t)
}

/// How a statement runs on the writer.
#[derive(Clone, Copy)]
pub(crate) struct WriterClass {
    /// It begins or ends a transaction or savepoint.
    pub(crate) tx_control: bool,
    /// SQLite takes it for a read (`sqlite3_stmt_readonly`).
    pub(crate) readonly: bool,
    /// It calls a PluresDB function that writes (see [`in_write_transaction`]).
    pub(crate) writes_through_function: bool,
    /// It changes the schema (see `WriterAuth::ddl`).
    pub(crate) ddl: bool,
    /// It runs outside any transaction (`VACUUM`): never wrapped in one, and it writes no
    /// rows of synced tables.
    pub(crate) outside_tx: bool,
}

impl WriterClass {
    /// Kept in [`SqlInfo::writer_class`]: 1 (known) | 2 | 4 | 8 | 16 | 32 for the flags in
    /// order.
    fn bits(self) -> u8 {
        1 | u8::from(self.tx_control) << 1
            | u8::from(self.readonly) << 2
            | u8::from(self.writes_through_function) << 3
            | u8::from(self.ddl) << 4
            | u8::from(self.outside_tx) << 5
    }

    /// Clears what the writer's authorizer notes per statement, before one is prepared.
    pub(crate) fn before_prepare(auth: &WriterAuth) {
        auth.tx_control.store(false, Ordering::Release);
        auth.writes_through_function.store(false, Ordering::Release);
        auth.ddl.store(false, Ordering::Release);
    }

    /// The class of the statement `sql` just prepared on the writer (after
    /// [`before_prepare`](Self::before_prepare)), which SQLite says is `readonly` or not.
    pub(crate) fn of_prepared(auth: &WriterAuth, sql: &str, readonly: bool) -> WriterClass {
        WriterClass {
            tx_control: auth.tx_control.load(Ordering::Acquire),
            readonly,
            writes_through_function: auth.writes_through_function.load(Ordering::Acquire),
            ddl: auth.ddl.load(Ordering::Acquire),
            outside_tx: matches!(crate::sql_text::next_token(sql), Some((w, _)) if w == "vacuum"),
        }
    }

    /// Whether change capture observes it: it writes (a PluresDB function that writes counts,
    /// although SQLite calls it read-only), and not outside any transaction (`VACUUM`).
    pub(crate) fn observed(self) -> bool {
        (!self.readonly || self.writes_through_function) && !self.outside_tx
    }

    fn from_bits(bits: u8) -> WriterClass {
        WriterClass {
            tx_control: bits & 2 != 0,
            readonly: bits & 4 != 0,
            writes_through_function: bits & 8 != 0,
            ddl: bits & 16 != 0,
            outside_tx: bits & 32 != 0,
        }
    }
}

/// Runs `run`, a statement that writes through one of PluresDB's functions
/// (`SELECT pluresdb_sync_table('t')`), in a write transaction begun for it when `conn` is
/// outside any. SQLite takes such a statement for a read: run as one, it writes from the
/// snapshot its reads began, and when another process committed after that, the write fails
/// at once ("database is locked", without waiting for the busy timeout). Begun first, the
/// write transaction waits for the lock as any write does.
pub(crate) fn in_write_transaction<T>(
    conn: &Connection,
    run: impl FnOnce() -> Result<T>,
) -> Result<T> {
    if !begin_own_write(conn)? {
        return run();
    }
    let result = run();
    end_own_write(conn, result.is_ok())?;
    result
}

/// Begins the write transaction of [`in_write_transaction`] when `conn` is outside any;
/// whether it did (then [`end_own_write`] ends it).
pub(crate) fn begin_own_write(conn: &Connection) -> Result<bool> {
    if !conn.is_autocommit() {
        return Ok(false);
    }
    conn.execute_batch("BEGIN IMMEDIATE")?;
    Ok(true)
}

/// Ends a transaction begun by [`begin_own_write`]: commits after a statement that
/// succeeded, else rolls back (as it does when the commit fails, with the commit's error).
pub(crate) fn end_own_write(conn: &Connection, succeeded: bool) -> Result<()> {
    let committed = match succeeded {
        true => conn.execute_batch("COMMIT").map_err(Into::into),
        false => Ok(()),
    };
    if !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    committed
}

/// What PluresDB remembers about one SQL text.
pub(crate) struct SqlInfo {
    /// Key of the text's prepared statements in each connection's cache.
    pub(crate) id: u64,
    /// 0 = not yet known, 1 = safe on a reader, 2 = writer only.
    pool_safe: AtomicU8,
    /// On the writer: 0 = not yet known, else [`WriterClass::bits`].
    writer_class: AtomicU8,
    columns: RwLock<Arc<Columns>>,
}

impl SqlInfo {
    pub(crate) fn new() -> SqlInfo {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        SqlInfo {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            pool_safe: AtomicU8::new(0),
            writer_class: AtomicU8::new(0),
            columns: RwLock::new(Arc::new(Columns::default())),
        }
    }

    /// The statement's columns, refreshed when the schema changed them.
    pub(crate) fn columns(&self, stmt: &rusqlite::Statement<'_>) -> Arc<Columns> {
        let current = self.columns.read().clone();
        if current.matches(stmt) {
            return current;
        }
        let fresh = Arc::new(Columns::from_statement(stmt));
        *self.columns.write() = fresh.clone();
        fresh
    }
}

/// Who holds the writer's lease, for threads waiting for it.
#[derive(Default)]
struct Lease {
    /// Signalled when the lease is given up.
    released: Condvar,
    /// Thread token of the holder (0 = free).
    owner: AtomicU64,
}

/// The writer leases a thread holds: if the thread ends holding one (a `BEGIN` in SQL never
/// committed), its transaction is rolled back and the lease given up, as SQLite does for a
/// connection closed inside a transaction; else no other thread could ever write again.
struct HeldLeases(std::cell::RefCell<Vec<HeldLease>>);

/// One lease a thread took: the writer, its lease, and the thread's token.
type HeldLease = (
    std::sync::Weak<Mutex<WriterState>>,
    std::sync::Weak<Lease>,
    u64,
);

thread_local!(static HELD_LEASES: HeldLeases = const { HeldLeases(std::cell::RefCell::new(Vec::new())) });

impl HeldLeases {
    /// Remembers that this thread (token `me`) took `writer`'s lease.
    fn hold(&self, writer: &Arc<Mutex<WriterState>>, lease: &Arc<Lease>, me: u64) {
        let mut held = self.0.borrow_mut();
        // Entries of writers since dropped, or whose lease this thread gave up, go.
        held.retain(|(w, l, _)| {
            w.strong_count() > 0
                && l.upgrade()
                    .is_some_and(|l| l.owner.load(Ordering::Acquire) == me)
        });
        held.push((Arc::downgrade(writer), Arc::downgrade(lease), me));
    }
}

impl Drop for HeldLeases {
    fn drop(&mut self) {
        for (writer, lease, me) in self.0.take() {
            let (Some(writer), Some(lease)) = (writer.upgrade(), lease.upgrade()) else {
                continue;
            };
            let mut state = writer.lock();
            if state.owner != me {
                continue;
            }
            if !state.conn.get().is_autocommit() {
                let _ = state.conn.get().execute_batch("ROLLBACK");
            }
            state.owner = 0;
            state.savepoints = 0;
            lease.owner.store(0, Ordering::Release);
            lease.released.notify_all();
        }
    }
}

/// The writer connection and who holds its lease.
pub(crate) struct WriterState {
    pub(crate) conn: Conn,
    /// Thread token of the lease holder (0 = free).
    owner: u64,
    /// Depth of [`Database::transaction`] savepoints.
    pub(crate) savepoints: u32,
    rows_hook: bool,
    /// The observer's pre-update hook is installed.
    capture_hook: bool,
}

pub(crate) struct Engine {
    path: Option<PathBuf>,
    opts: OpenOptions,
    writer: Arc<Mutex<WriterState>>,
    lease: Arc<Lease>,
    /// Thread whose open iterator holds the writer (0 = none).
    iter_holder: AtomicU64,
    /// What the writer's authorizer noticed (pinning, transaction control, schema changes).
    pub(crate) writer_auth: Arc<WriterAuth>,
    /// Commits and rollbacks of the writer.
    pub(crate) tx: Arc<TxCounters>,
    /// Change capture, once replication is set up.
    observer: OnceLock<Arc<dyn WriteObserver>>,
    readers: Option<Arc<ReaderPool>>,
    sql_info: RwLock<HashMap<Box<str>, Arc<SqlInfo>>>,
    pub(crate) hub: Arc<EventHub>,
}

const SQL_INFO_LIMIT: usize = 4096;

impl Engine {
    pub(crate) fn open(
        path: Option<&Path>,
        opts: OpenOptions,
        hub: Arc<EventHub>,
    ) -> Result<Engine> {
        if let Some(p) = path {
            check_path(p, &opts)?;
        }
        let writer_auth = Arc::new(WriterAuth::default());
        let tx = Arc::new(TxCounters::default());
        let mut conn = open_connection(path, &opts, false)?;
        install_authorizer(
            &mut conn,
            Arc::new(AuthFlags::default()),
            Some(writer_auth.clone()),
        )?;
        install_commit_hooks(&mut conn, &hub, &tx)?;
        let conn = Conn::new(conn, opts.statement_cache);
        let readers = match path {
            Some(p) if opts.readers > 0 => {
                Some(Arc::new(ReaderPool::new(p.to_owned(), opts.clone())))
            }
            _ => None,
        };
        Ok(Engine {
            path: path.map(Path::to_owned),
            opts,
            writer: Arc::new(Mutex::new(WriterState {
                conn,
                owner: 0,
                savepoints: 0,
                rows_hook: false,
                capture_hook: false,
            })),
            lease: Arc::new(Lease::default()),
            iter_holder: AtomicU64::new(0),
            writer_auth,
            tx,
            observer: OnceLock::new(),
            readers,
            sql_info: RwLock::new(HashMap::new()),
            hub,
        })
    }

    pub(crate) fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub(crate) fn options(&self) -> &OpenOptions {
        &self.opts
    }

    /// Cached facts about `sql`.
    pub(crate) fn info(&self, sql: &str) -> Arc<SqlInfo> {
        if let Some(info) = self.sql_info.read().get(sql) {
            return info.clone();
        }
        let mut map = self.sql_info.write();
        if map.len() >= SQL_INFO_LIMIT {
            map.clear();
        }
        map.entry(sql.into())
            .or_insert_with(|| Arc::new(SqlInfo::new()))
            .clone()
    }

    /// True when this thread holds the writer's lease (it is inside a transaction).
    pub(crate) fn in_transaction_here(&self) -> bool {
        self.lease.owner.load(Ordering::Acquire) == thread_token()
    }

    fn iterator_check(&self, me: u64) -> Result<()> {
        if self.iter_holder.load(Ordering::Acquire) == me {
            return Err(Error::new(
                ErrorKind::Busy,
                "the connection is busy: a row iterator from iterate() on this thread is still \
                 open; read it to the end or drop it before running more statements",
            ));
        }
        Ok(())
    }

    /// Runs `f` with the writer connection held (inside the caller's transaction, if any).
    /// Statements through the `Database` from `f` fail with a busy error instead of deadlocking.
    pub(crate) fn with_writer<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let writer = self.writer()?;
        self.run_holding(writer, f)
    }

    /// Runs `f` on the held `writer`; statements through the `Database` from `f` fail with a
    /// busy error instead of deadlocking.
    fn run_holding<T>(
        &self,
        writer: WriterGuard<'_>,
        f: impl FnOnce(&Connection) -> Result<T>,
    ) -> Result<T> {
        struct Held<'a>(&'a AtomicU64);
        impl Drop for Held<'_> {
            fn drop(&mut self) {
                self.0.store(0, Ordering::Release);
            }
        }
        self.iter_holder.store(writer.me, Ordering::Release);
        let _held = Held(&self.iter_holder);
        f(writer.conn())
    }

    /// Runs upkeep `f` (work that only saves work later, such as saving an index) with the
    /// writer, if it can be had at once: `None` when another thread holds it, when a
    /// transaction is open on it (this thread's too: the upkeep would commit or roll back with
    /// it), or when another connection (another process) holds the file's write lock. Such
    /// work waits for no one: waiting until the busy timeout would hold up the search or the
    /// close that runs it, and the next one does it instead.
    pub(crate) fn with_idle_writer<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T>,
    ) -> Result<Option<T>> {
        let me = thread_token();
        if self.iter_holder.load(Ordering::Acquire) == me {
            return Ok(None);
        }
        let Some(mut guard) = self.writer.try_lock() else {
            return Ok(None);
        };
        if guard.owner != 0 {
            return Ok(None);
        }
        // Catching up with another process's commit may write too: it waits for no one either.
        guard.conn.get().busy_timeout(Duration::ZERO)?;
        let hooks = self.sync_hooks(&mut guard);
        let writer = WriterGuard {
            engine: self,
            guard: Some(guard),
            me,
        };
        /// Gives the connection its busy timeout back, even if the upkeep panics.
        struct Waits<'c>(&'c Connection, Duration);
        impl Drop for Waits<'_> {
            fn drop(&mut self) {
                let _ = self.0.busy_timeout(self.1);
            }
        }
        let result = self.run_holding(writer, |conn| {
            let _waits = Waits(conn, self.opts.busy_timeout);
            hooks?;
            f(conn)
        });
        match result {
            Err(e) if e.kind() == ErrorKind::Busy => Ok(None),
            other => other.map(Some),
        }
    }

    fn busy_lease() -> Error {
        Error::new(
            ErrorKind::Busy,
            "database is busy: another thread kept a transaction open past the busy timeout; \
             keep transactions short, or raise the busy timeout. A transaction begun with BEGIN \
             in SQL belongs to its thread: end it with COMMIT or ROLLBACK on that same thread \
             (an async task may have moved to another; use Database::transaction instead), or \
             until then no other thread can write",
        )
    }

    /// Locks the writer once the lease is free or ours.
    pub(crate) fn writer(&self) -> Result<WriterGuard<'_>> {
        let me = thread_token();
        self.iterator_check(me)?;
        let mut deadline = None;
        let timeout = self.opts.busy_timeout;
        let mut deadline = move || *deadline.get_or_insert_with(|| Instant::now() + timeout);
        let mut guard = match self.writer.try_lock() {
            Some(guard) => guard,
            None => self
                .writer
                .try_lock_until(deadline())
                .ok_or_else(Self::busy_lease)?,
        };
        while guard.owner != 0 && guard.owner != me {
            if self
                .lease
                .released
                .wait_until(&mut guard, deadline())
                .timed_out()
            {
                return Err(Self::busy_lease());
            }
        }
        self.sync_hooks(&mut guard)?;
        Ok(WriterGuard {
            engine: self,
            guard: Some(guard),
            me,
        })
    }

    /// Like [`writer`](Self::writer) but the guard owns an `Arc` (for iterators).
    fn writer_owned(self: &Arc<Self>) -> Result<OwnedWriter> {
        let me = thread_token();
        self.iterator_check(me)?;
        let deadline = Instant::now() + self.opts.busy_timeout;
        loop {
            let mut guard = self
                .writer
                .try_lock_arc_until(deadline)
                .ok_or_else(Self::busy_lease)?;
            if guard.owner == 0 || guard.owner == me {
                self.sync_hooks(&mut guard)?;
                self.iter_holder.store(me, Ordering::Release);
                return Ok(OwnedWriter {
                    engine: self.clone(),
                    guard: Some(guard),
                    me,
                });
            }
            drop(guard);
            let mut guard = self
                .writer
                .try_lock_until(deadline)
                .ok_or_else(Self::busy_lease)?;
            while guard.owner != 0 && guard.owner != me {
                if self
                    .lease
                    .released
                    .wait_until(&mut guard, deadline)
                    .timed_out()
                {
                    return Err(Self::busy_lease());
                }
            }
        }
    }

    /// Installs or removes the writer's hooks to match what is wanted now.
    pub(crate) fn sync_hooks(&self, state: &mut WriterState) -> Result<()> {
        if state.conn.get().is_autocommit() {
            self.catch_up_foreign_commits(state)?;
        }
        if let Some(observer) = self.observer.get()
            && observer.stale()
        {
            observer.refresh(state.conn.get())?;
        }
        self.sync_capture_hook(state)?;
        self.sync_row_hook(state)
    }

    /// Reads the synced tables and their shapes again if another connection (another
    /// process: `pluresdb_sync_table`, `ALTER TABLE`) committed since the writer last looked,
    /// as `PRAGMA data_version` tells; returns whether it did. Run between transactions and
    /// right after `BEGIN IMMEDIATE` (see [`after_begin`](Self::after_begin)), when nothing
    /// else can commit until this transaction ends.
    fn catch_up_foreign_commits(&self, state: &WriterState) -> Result<bool> {
        let Some(observer) = self.observer.get() else {
            return Ok(false);
        };
        observer.catch_up(state.conn.get())
    }

    /// Brings capture up to date once a transaction holds the write lock: a commit that
    /// landed while `BEGIN IMMEDIATE` waited for the lock is seen before the first write.
    pub(crate) fn after_begin(&self, state: &mut WriterState) -> Result<()> {
        if self.catch_up_foreign_commits(state)? {
            self.sync_hooks(state)?;
        }
        Ok(())
    }

    /// The pre-update hook that feeds change capture, installed only while some table is
    /// replicated: with it, SQLite deletes every row of `DELETE FROM t` one by one instead of
    /// dropping the table's pages at once. Statements prepared before it changes are dropped,
    /// so none keeps the other plan.
    fn sync_capture_hook(&self, state: &mut WriterState) -> Result<()> {
        let observer = self.active_observer_arc();
        if observer.is_some() == state.capture_hook {
            return Ok(());
        }
        let conn = state.conn.get_mut();
        conn.flush_prepared_statement_cache();
        match observer {
            Some(observer) => conn.preupdate_hook(Some(
                move |_: Action, db: &str, table: &str, case: &PreUpdateCase| {
                    observer.preupdate(db, table, case)
                },
            ))?,
            None => conn.preupdate_hook(None::<fn(Action, &str, &str, &PreUpdateCase)>)?,
        }
        state.capture_hook = !state.capture_hook;
        Ok(())
    }

    /// Whether the observer or its capture hook must be brought up to date before the next
    /// statement.
    pub(crate) fn capture_hook_stale(&self, state: &WriterState) -> bool {
        self.observer.get().is_some_and(|o| o.stale())
            || self.active_observer().is_some() != state.capture_hook
    }

    fn sync_row_hook(&self, state: &mut WriterState) -> Result<()> {
        let want = self.hub.wants_rows();
        if want == state.rows_hook {
            return Ok(());
        }
        if want {
            let hub = self.hub.clone();
            state.conn.get_mut().update_hook(Some(
                move |action, db: &str, table: &str, rowid| {
                    if db != "main"
                        || table.starts_with("_pluresdb_")
                        || table.starts_with("sqlite_")
                    {
                        return;
                    }
                    let op = match action {
                        rusqlite::hooks::Action::SQLITE_INSERT => RowOp::Insert,
                        rusqlite::hooks::Action::SQLITE_DELETE => RowOp::Delete,
                        _ => RowOp::Update,
                    };
                    hub.record(Change::Row(RowChange {
                        table: table.to_owned(),
                        op,
                        rowid,
                    }));
                },
            ))?;
        } else {
            state
                .conn
                .get_mut()
                .update_hook(None::<fn(rusqlite::hooks::Action, &str, &str, i64)>)?;
        }
        state.rows_hook = want;
        Ok(())
    }

    /// Sets the lease from the connection's transaction state and wakes waiting threads.
    fn release(&self, state: &mut WriterState, me: u64) {
        if state.conn.get().is_autocommit() {
            state.owner = 0;
            state.savepoints = 0;
            self.lease.owner.store(0, Ordering::Release);
            self.lease.released.notify_all();
        } else {
            if state.owner != me {
                HELD_LEASES.with(|held| held.hold(&self.writer, &self.lease, me));
            }
            state.owner = me;
            self.lease.owner.store(me, Ordering::Release);
        }
    }

    fn use_readers(&self) -> bool {
        self.readers.is_some()
            && !self.writer_auth.pinned.load(Ordering::Acquire)
            && !self.in_transaction_here()
    }

    /// Runs `f` on a connection suited to `sql`: a reader for plain reads, else the writer.
    pub(crate) fn with_statement<T>(
        &self,
        sql: &str,
        info: &SqlInfo,
        f: impl FnOnce(&Connection, &mut CachedStmt, &SqlInfo) -> Result<T>,
    ) -> Result<T> {
        if let Some(mut reader) = self.reader_for(sql, info)? {
            return reader
                .conn_mut()
                .with_statement(info.id, sql, |c, s| f(c, s, info));
        }
        let writer = self.writer()?;
        let conn = &writer.state().conn;
        let run = || {
            let mark = UndoMark::take(&self.hub, conn.get());
            let result = conn.with_statement(info.id, sql, |c, s| f(c, s, info));
            let result = mark.end(&self.hub, conn.get(), result);
            if result.is_ok() {
                self.hub.savepoint_ran(sql);
            }
            result
        };
        let class = self.classify_on_writer(conn, sql, info)?;
        self.run_on_writer(conn.get(), class, &Cell::new(false), run)
    }

    /// Runs `run`, which runs a statement of `class` on the writer `conn`: observed while
    /// writes are captured (see [`observed_write`]), else in a write transaction of its own
    /// when it writes through a PluresDB function (see [`in_write_transaction`]), else as is.
    pub(crate) fn run_on_writer<T>(
        &self,
        conn: &Connection,
        class: WriterClass,
        wrapped: &Cell<bool>,
        run: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        if class.ddl {
            // Prepared once and cached, a DDL statement runs again without the authorizer
            // seeing it: what it changes is read again after it all the same.
            self.writer_auth
                .schema_changed
                .store(true, Ordering::Release);
        }
        match self.active_observer() {
            Some(observer) => {
                let readonly = !class.observed();
                observed_write(observer, conn, class.tx_control, readonly, wrapped, run)
            }
            None if class.writes_through_function => in_write_transaction(conn, run),
            None => run(),
        }
    }

    /// Sets the change-capture observer (once, when replication starts).
    pub(crate) fn set_observer(&self, observer: Arc<dyn WriteObserver>) {
        let _ = self.observer.set(observer);
    }

    /// Whether a snapshot taken by [`with_read_conn`](Self::with_read_conn) now lets this
    /// handle's writer commit while it lasts: a pooled reader on a WAL database (else the
    /// snapshot is the writer itself, or a rollback-journal read lock that blocks commits),
    /// or a read-only handle, which has no writer.
    pub(crate) fn snapshots_let_writers_commit(&self) -> bool {
        self.opts.read_only || (self.use_readers() && self.opts.wal && self.path.is_some())
    }

    /// Runs `f` on a reader inside one read transaction (a consistent snapshot), or on the
    /// writer when this thread is in a transaction or there are no readers.
    pub(crate) fn with_read_conn<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let snapshot = |conn: &Connection| {
            if !conn.is_autocommit() {
                return f(conn);
            }
            // Cached statements: preparing BEGIN and COMMIT anew costs more than a small query.
            conn.prepare_cached("BEGIN")?.execute([])?;
            let result = f(conn);
            // A read transaction has nothing to keep; ending it cannot lose anything.
            let _ = conn
                .prepare_cached("COMMIT")
                .and_then(|mut s| s.execute([]));
            result
        };
        if self.use_readers()
            && let Some(pool) = &self.readers
        {
            let mut reader = pool.get()?;
            return snapshot(reader.conn_mut().get());
        }
        self.with_writer(snapshot)
    }

    /// Sets what every reader connection gets when it opens (before any is opened).
    pub(crate) fn set_reader_setup(&self, setup: crate::pool::ReaderSetup) {
        if let Some(pool) = &self.readers {
            let _ = pool.setup.set(setup);
        }
    }

    /// The observer, active or not.
    pub(crate) fn observer(&self) -> Option<&dyn WriteObserver> {
        self.observer.get().map(|o| &**o)
    }

    /// The observer, when it has something to observe.
    pub(crate) fn active_observer(&self) -> Option<&dyn WriteObserver> {
        self.observer.get().map(|o| &**o).filter(|o| o.active())
    }

    /// [`active_observer`](Self::active_observer), shared.
    pub(crate) fn active_observer_arc(&self) -> Option<Arc<dyn WriteObserver>> {
        self.observer.get().filter(|o| o.active()).cloned()
    }

    /// How `sql` runs on the writer, decided once when it is first prepared there.
    pub(crate) fn classify_on_writer(
        &self,
        conn: &Conn,
        sql: &str,
        info: &SqlInfo,
    ) -> Result<WriterClass> {
        let bits = info.writer_class.load(Ordering::Acquire);
        if bits != 0 {
            return Ok(WriterClass::from_bits(bits));
        }
        // A statement never seen by this SqlInfo is not in the cache: preparing it runs the
        // authorizer.
        WriterClass::before_prepare(&self.writer_auth);
        let stmt = conn.take(info.id, sql)?;
        let class = WriterClass::of_prepared(&self.writer_auth, sql, stmt.readonly());
        conn.put(info.id, stmt);
        info.writer_class.store(class.bits(), Ordering::Release);
        Ok(class)
    }

    /// A reader connection when `sql` may run on one, classifying it on first use.
    fn reader_for(&self, sql: &str, info: &SqlInfo) -> Result<Option<PooledReader<'_>>> {
        if !self.use_readers() {
            return Ok(None);
        }
        let Some(pool) = &self.readers else {
            return Ok(None);
        };
        match info.pool_safe.load(Ordering::Acquire) {
            2 => return Ok(None),
            1 => return pool.get().map(Some),
            _ => {}
        }
        let reader = pool.get()?;
        match reader.classify(sql) {
            Ok(safe) => {
                info.pool_safe
                    .store(if safe { 1 } else { 2 }, Ordering::Release);
                Ok(safe.then_some(reader))
            }
            Err(e) if e.kind() == ErrorKind::Syntax => Err(e),
            // Unknown to the readers (for example a table created in an open transaction):
            // let the writer decide, without remembering.
            Err(_) => Ok(None),
        }
    }

    /// An owned connection holder for a streaming iterator over `sql`.
    pub(crate) fn holder_for(self: &Arc<Self>, sql: &str, info: &SqlInfo) -> Result<Holder> {
        if let Some(reader) = self.reader_for(sql, info)? {
            let pool = self.readers.clone().expect("a reader came from the pool");
            return Ok(Holder::Reader(reader.into_owned(pool)));
        }
        Ok(Holder::Writer(self.writer_owned()?))
    }
}

/// Runs one statement on the writer under change capture: captures are written before a
/// statement that ends a transaction, a write outside any transaction is wrapped in one so its
/// captures commit with it, and a failed statement's captures are dropped.
pub(crate) fn observed_write<T>(
    observer: &dyn WriteObserver,
    conn: &Connection,
    tx_control: bool,
    readonly: bool,
    wrapped: &Cell<bool>,
    run: impl FnOnce() -> Result<T>,
) -> Result<T> {
    // A transaction that must not commit: a COMMIT in SQL is turned into a rollback by the
    // commit hook, and this says why.
    if tx_control && let Err(e) = observer.flush(conn) {
        // The statement may be a ROLLBACK, which must still run; a COMMIT is refused instead.
        observer.refuse_commit(format!(
            "the transaction's changes could not be recorded for sync: {e}"
        ));
    }
    let refusal = tx_control.then(|| observer.commit_refusal()).flatten();
    let wrap = !readonly && !tx_control && conn.is_autocommit();
    let write = !readonly && !tx_control;
    let statement = ObservedStatement::start(observer, conn, wrap, write)?;
    wrapped.set(wrap);
    let ran = run();
    let result = statement
        .end(observer, conn, ran.is_err(), tx_control)
        .and(ran);
    result.map_err(|e| match refusal {
        Some(refusal) if conn.is_autocommit() => refusal,
        _ => e,
    })
}

/// A writing statement under change capture, from its start to its end.
pub(crate) struct ObservedStatement {
    /// It runs in a transaction begun for it (it was run outside any).
    wrapped: bool,
    /// No transaction was open when it started (a BEGIN in SQL then opens one).
    outside: bool,
    mark: usize,
    /// The writer's `total_changes` before it ran.
    before: u64,
}

impl ObservedStatement {
    /// Starts a statement, in a transaction of its own when `wrap`; `write`: it may write.
    pub(crate) fn start(
        observer: &dyn WriteObserver,
        conn: &Connection,
        wrap: bool,
        write: bool,
    ) -> Result<ObservedStatement> {
        let outside = conn.is_autocommit();
        if wrap {
            conn.execute_batch("BEGIN IMMEDIATE")?;
            // Another process's commit that landed while this waited for the lock is read
            // before the statement runs (its schema changes are not taken for this one's).
            catch_up_after_begin(observer, conn)?;
        } else if write && !outside {
            // A deferred transaction (`BEGIN` or `SAVEPOINT` in SQL) takes the write lock at
            // its first write: another process's commit before that is read first, or this
            // write could be stamped before a change it replaces (which that process merged).
            if lock_for_write(conn)? {
                observer.catch_up(conn)?;
            }
        }
        Ok(ObservedStatement {
            wrapped: wrap,
            outside,
            mark: observer.mark(),
            before: conn.total_changes(),
        })
    }

    /// Ends the statement. Its captures stay when it succeeded, or failed but kept the rows
    /// it changed first (see [`failure_kept_changes`]): they are written, and a wrapping
    /// transaction commits. Otherwise they are dropped, and the earlier statements' too when
    /// the failure rolled the whole transaction back (`OR ROLLBACK`, `RAISE(ROLLBACK)`, an
    /// I/O error). An error is from keeping them (the statement's own is the caller's).
    pub(crate) fn end(
        &self,
        observer: &dyn WriteObserver,
        conn: &Connection,
        failed: bool,
        tx_control: bool,
    ) -> Result<()> {
        let kept = !failed || failure_kept_changes(conn, self.before);
        let done = if !kept {
            Ok(())
        } else if self.wrapped {
            commit_observed(observer, conn)
        } else if tx_control {
            observer.tx_control_ran();
            // A BEGIN IMMEDIATE (or EXCLUSIVE) in SQL: another process's commit that landed
            // while it waited for the lock is read now, before the transaction's statements.
            // (A deferred BEGIN is left alone: its first write takes the lock and catches up,
            // see `start`.) Not caught up, the transaction it opened is ended with it.
            match self.outside && !conn.is_autocommit() && holds_write_lock(conn) {
                true => catch_up_after_begin(observer, conn),
                false => Ok(()),
            }
        } else if !conn.is_autocommit() {
            observer.after_statement(conn)
        } else {
            Ok(())
        };
        if !kept || done.is_err() {
            observer.discard_since(if conn.is_autocommit() { 0 } else { self.mark });
            if self.wrapped && !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
        }
        done
    }
}

/// Before a write in a transaction begun without the write lock (`BEGIN` or `SAVEPOINT` in
/// SQL): takes the lock if the transaction has read nothing yet, waiting for it as the write
/// would (after a read, SQLite fails a write at once while another connection writes).
/// Returns whether the transaction did not hold the lock, so what other processes committed
/// before must be caught up with.
/// (A read-only handle writes nothing: nothing is taken.)
pub(crate) fn lock_for_write(conn: &Connection) -> Result<bool> {
    match conn.transaction_state(Some(rusqlite::MAIN_DB))? {
        rusqlite::TransactionState::Write => Ok(false),
        _ if conn.is_readonly(rusqlite::MAIN_DB)? => Ok(false),
        rusqlite::TransactionState::None => {
            conn.prepare_cached("DELETE FROM main._pluresdb_meta WHERE 0")?
                .execute([])?;
            Ok(true)
        }
        _ => Ok(true),
    }
}

/// Whether the open transaction on `conn` holds the write lock.
fn holds_write_lock(conn: &Connection) -> bool {
    conn.transaction_state(Some(rusqlite::MAIN_DB))
        .is_ok_and(|s| s == rusqlite::TransactionState::Write)
}

/// Catches `observer` up with another process's commits once a transaction just begun holds
/// the write lock; when that fails, the transaction is ended (its caller sees the error).
fn catch_up_after_begin(observer: &dyn WriteObserver, conn: &Connection) -> Result<()> {
    observer.catch_up(conn).map(|_| ()).inspect_err(|_| {
        let _ = conn.execute_batch("ROLLBACK");
    })
}

/// Whether a statement that failed kept the rows it changed before failing, given the
/// connection's `total_changes` before it ran. SQLite undoes a failed statement (ABORT, the
/// default) or the whole transaction (ROLLBACK), except under FAIL (`INSERT OR FAIL`, a
/// column's `ON CONFLICT FAIL`, `RAISE(FAIL)`), which keeps the rows already changed. Only
/// then does `changes()` count them: `total_changes` alone also counts what a trigger of an
/// undone statement wrote. (Missed: under FAIL, a first row that failed after its own
/// BEFORE triggers wrote to a synced table; SQLite's counters are then the same as for ABORT,
/// and those triggers' rows stay but are not sent.)
fn failure_kept_changes(conn: &Connection, before: u64) -> bool {
    !conn.is_autocommit() && conn.total_changes() != before && conn.changes() > 0
}

/// What a statement on the writer starts from: the change notifications recorded so far and
/// the writer's `total_changes`. A statement that fails and whose rows SQLite undid has its
/// notifications forgotten back to this mark.
#[derive(Clone, Copy)]
pub(crate) struct UndoMark {
    pending: usize,
    total_changes: u64,
}

impl UndoMark {
    /// The mark before a statement on `conn` (the writer).
    pub(crate) fn take(hub: &EventHub, conn: &Connection) -> UndoMark {
        UndoMark {
            pending: hub.pending_len(),
            total_changes: conn.total_changes(),
        }
    }

    /// Passes on the statement's result, after [`failed`](Self::failed) when it is an error,
    /// which is reworded when an index's trigger stopped a DROP COLUMN
    /// ([`drop_column::explain`]).
    pub(crate) fn end<T>(self, hub: &EventHub, conn: &Connection, result: Result<T>) -> Result<T> {
        result.map_err(|e| {
            self.failed(hub, conn);
            drop_column::explain(conn, e)
        })
    }

    /// The statement failed: forgets its notifications unless it kept rows (see
    /// [`failure_kept_changes`]).
    pub(crate) fn failed(self, hub: &EventHub, conn: &Connection) {
        if !failure_kept_changes(conn, self.total_changes) {
            hub.truncate_pending(self.pending);
        }
    }
}

/// Commits the open transaction with its captures written first; a transaction that must not
/// commit (a change in it could not be recorded) fails with the reason instead.
pub(crate) fn commit_observed(observer: &dyn WriteObserver, conn: &Connection) -> Result<()> {
    observer.flush(conn)?;
    if let Some(refusal) = observer.commit_refusal() {
        return Err(refusal);
    }
    conn.execute_batch("COMMIT")?;
    Ok(())
}

/// Maps a rusqlite error about `sql`, keeping the SQL for the message.
pub(crate) fn sql_error(err: rusqlite::Error, sql: &str) -> Error {
    let err = Error::from(err);
    if err.sql().is_some() {
        err
    } else {
        match err.kind() {
            ErrorKind::Syntax | ErrorKind::Sql | ErrorKind::Constraint => err.with_sql(sql, None),
            _ => err,
        }
    }
}

/// The writer, locked; releasing it updates the lease and delivers committed changes.
pub(crate) struct WriterGuard<'e> {
    engine: &'e Engine,
    guard: Option<MutexGuard<'e, WriterState>>,
    me: u64,
}

impl WriterGuard<'_> {
    pub(crate) fn conn(&self) -> &Connection {
        self.state().conn.get()
    }

    pub(crate) fn state(&self) -> &WriterState {
        self.guard
            .as_ref()
            .expect("writer guard is held until drop")
    }

    pub(crate) fn state_mut(&mut self) -> &mut WriterState {
        self.guard
            .as_mut()
            .expect("writer guard is held until drop")
    }
}

impl Drop for WriterGuard<'_> {
    fn drop(&mut self) {
        if let Some(mut guard) = self.guard.take() {
            self.engine.release(&mut guard, self.me);
            drop(guard);
            self.engine.hub.deliver_committed();
        }
    }
}

/// The writer held by an iterator.
pub(crate) struct OwnedWriter {
    engine: Arc<Engine>,
    guard: Option<parking_lot::ArcMutexGuard<parking_lot::RawMutex, WriterState>>,
    me: u64,
}

impl Drop for OwnedWriter {
    fn drop(&mut self) {
        if let Some(mut guard) = self.guard.take() {
            self.engine.iter_holder.store(0, Ordering::Release);
            self.engine.release(&mut guard, self.me);
            drop(guard);
            self.engine.hub.deliver_committed();
        }
    }
}

/// A connection owned by a row iterator.
pub(crate) enum Holder {
    Writer(OwnedWriter),
    Reader(OwnedReader),
}

impl Holder {
    pub(crate) fn conn_mut(&mut self) -> &mut Conn {
        match self {
            Holder::Writer(w) => &mut w.guard.as_mut().expect("held until drop").conn,
            Holder::Reader(r) => r.conn.as_mut().expect("held until drop"),
        }
    }
}

impl Drop for Engine {
    /// Rolls back a transaction left open and removes the hooks before the writer closes
    /// (SQLite would otherwise call the rollback hook while the connection is being torn down).
    fn drop(&mut self) {
        let mut guard = self.writer.lock();
        let conn = guard.conn.get_mut();
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        let _ = conn.commit_hook(None::<fn() -> bool>);
        let _ = conn.rollback_hook(None::<fn()>);
        let _ = conn.update_hook(None::<fn(rusqlite::hooks::Action, &str, &str, i64)>);
        let _ = conn.preupdate_hook(None::<fn(Action, &str, &str, &PreUpdateCase)>);
    }
}
