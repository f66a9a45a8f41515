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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::{Condvar, Mutex, MutexGuard, RwLock};
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::{Connection, OpenFlags};

use crate::conn::{CachedStmt, Conn};
use crate::error::{Error, ErrorKind, Result};
use crate::events::{Change, EventHub, RowChange, RowOp};
use crate::options::OpenOptions;
use crate::row::Columns;

/// A small per-thread number (thread ids are not convertible to integers on stable Rust).
pub(crate) fn thread_token() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local!(static TOKEN: u64 = NEXT.fetch_add(1, Ordering::Relaxed));
    TOKEN.with(|t| *t)
}

/// What PluresDB remembers about one SQL text.
pub(crate) struct SqlInfo {
    /// Key of the text's prepared statements in each connection's cache.
    pub(crate) id: u64,
    /// 0 = not yet known, 1 = safe on a reader, 2 = writer only.
    pool_safe: AtomicU8,
    columns: RwLock<Arc<Columns>>,
}

impl SqlInfo {
    pub(crate) fn new() -> SqlInfo {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        SqlInfo {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            pool_safe: AtomicU8::new(0),
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

/// The writer connection and who holds its lease.
pub(crate) struct WriterState {
    pub(crate) conn: Conn,
    /// Thread token of the lease holder (0 = free).
    owner: u64,
    /// Depth of [`Database::transaction`] savepoints.
    pub(crate) savepoints: u32,
    rows_hook: bool,
}

/// Decides per statement whether it is pool-safe; shared with the authorizer callback.
#[derive(Default)]
struct AuthFlags {
    /// The last prepared statement did something a reader must not do.
    unsafe_seen: AtomicBool,
}

pub(crate) struct Engine {
    path: Option<PathBuf>,
    opts: OpenOptions,
    writer: Arc<Mutex<WriterState>>,
    lease_released: Condvar,
    lease_owner: AtomicU64,
    /// Thread whose open iterator holds the writer (0 = none).
    iter_holder: AtomicU64,
    /// The writer created temp objects or attached a database: route everything to it.
    pinned: Arc<AtomicBool>,
    readers: Option<ReaderPool>,
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
        let pinned = Arc::new(AtomicBool::new(false));
        let mut conn = open_connection(path, &opts, false)?;
        install_authorizer(
            &mut conn,
            Arc::new(AuthFlags::default()),
            Some(pinned.clone()),
        )?;
        install_commit_hooks(&mut conn, &hub)?;
        let conn = Conn::new(conn, opts.statement_cache);
        let readers = match path {
            Some(p) if opts.readers > 0 => Some(ReaderPool::new(p.to_owned(), opts.clone())),
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
            })),
            lease_released: Condvar::new(),
            lease_owner: AtomicU64::new(0),
            iter_holder: AtomicU64::new(0),
            pinned,
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
        self.lease_owner.load(Ordering::Acquire) == thread_token()
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

    fn busy_lease() -> Error {
        Error::new(
            ErrorKind::Busy,
            "database is busy: another thread kept a transaction open past the busy timeout; \
             keep transactions short, or raise the busy timeout",
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
                .lease_released
                .wait_until(&mut guard, deadline())
                .timed_out()
            {
                return Err(Self::busy_lease());
            }
        }
        self.sync_row_hook(&mut guard)?;
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
                self.sync_row_hook(&mut guard)?;
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
                    .lease_released
                    .wait_until(&mut guard, deadline)
                    .timed_out()
                {
                    return Err(Self::busy_lease());
                }
            }
        }
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
            self.lease_owner.store(0, Ordering::Release);
            self.lease_released.notify_all();
        } else {
            state.owner = me;
            self.lease_owner.store(me, Ordering::Release);
        }
    }

    fn use_readers(&self) -> bool {
        self.readers.is_some()
            && !self.pinned.load(Ordering::Acquire)
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
        let mut writer = self.writer()?;
        writer
            .state_mut()
            .conn
            .with_statement(info.id, sql, |c, s| f(c, s, info))
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
            return Ok(Holder::Reader(reader.into_owned(self.clone())));
        }
        Ok(Holder::Writer(self.writer_owned()?))
    }
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

/// Idle reader connections, opened on demand up to the configured count.
struct ReaderPool {
    path: PathBuf,
    opts: OpenOptions,
    idle: Mutex<Vec<Reader>>,
    opened: Mutex<usize>,
    returned: Condvar,
}

struct Reader {
    conn: Conn,
    flags: Arc<AuthFlags>,
}

impl ReaderPool {
    fn new(path: PathBuf, opts: OpenOptions) -> ReaderPool {
        ReaderPool {
            path,
            opts,
            idle: Mutex::new(Vec::new()),
            opened: Mutex::new(0),
            returned: Condvar::new(),
        }
    }

    fn get(&self) -> Result<PooledReader<'_>> {
        if let Some(reader) = self.idle.lock().pop() {
            return Ok(PooledReader {
                pool: self,
                reader: Some(reader),
            });
        }
        {
            let mut opened = self.opened.lock();
            if *opened < self.opts.readers {
                *opened += 1;
                drop(opened);
                return match self.open_reader() {
                    Ok(reader) => Ok(PooledReader {
                        pool: self,
                        reader: Some(reader),
                    }),
                    Err(e) => {
                        *self.opened.lock() -= 1;
                        Err(e)
                    }
                };
            }
        }
        let deadline = Instant::now() + self.opts.busy_timeout;
        let mut idle = self.idle.lock();
        loop {
            if let Some(reader) = idle.pop() {
                return Ok(PooledReader {
                    pool: self,
                    reader: Some(reader),
                });
            }
            if self.returned.wait_until(&mut idle, deadline).timed_out() {
                return Err(Error::new(
                    ErrorKind::Busy,
                    "all reader connections stayed in use past the busy timeout; drop finished \
                     iterators, or open the database with more readers",
                ));
            }
        }
    }

    fn open_reader(&self) -> Result<Reader> {
        let mut conn = open_connection(Some(&self.path), &self.opts, true)?;
        let flags = Arc::new(AuthFlags::default());
        install_authorizer(&mut conn, flags.clone(), None)?;
        Ok(Reader {
            conn: Conn::new(conn, self.opts.statement_cache),
            flags,
        })
    }

    fn put_back(&self, reader: Reader) {
        self.idle.lock().push(reader);
        self.returned.notify_one();
    }
}

/// A reader checked out of the pool; it goes back on drop.
pub(crate) struct PooledReader<'p> {
    pool: &'p ReaderPool,
    reader: Option<Reader>,
}

impl PooledReader<'_> {
    fn conn_mut(&mut self) -> &mut Conn {
        &mut self.reader.as_mut().expect("held until drop").conn
    }

    /// Prepares `sql` afresh and reports whether a reader may run it.
    fn classify(&self, sql: &str) -> Result<bool> {
        let reader = self.reader.as_ref().expect("held until drop");
        reader.flags.unsafe_seen.store(false, Ordering::Release);
        let stmt = reader
            .conn
            .get()
            .prepare(sql)
            .map_err(|e| sql_error(e, sql))?;
        Ok(stmt.readonly() && !reader.flags.unsafe_seen.load(Ordering::Acquire))
    }

    fn into_owned(mut self, engine: Arc<Engine>) -> OwnedReader {
        let reader = self.reader.take().expect("held until drop");
        OwnedReader {
            engine,
            flags: Some(reader.flags),
            conn: Some(reader.conn),
        }
    }
}

impl Drop for PooledReader<'_> {
    fn drop(&mut self) {
        if let Some(reader) = self.reader.take() {
            self.pool.put_back(reader);
        }
    }
}

/// A reader owned by an iterator; it goes back to the pool on drop.
pub(crate) struct OwnedReader {
    engine: Arc<Engine>,
    flags: Option<Arc<AuthFlags>>,
    conn: Option<Conn>,
}

impl Drop for OwnedReader {
    fn drop(&mut self) {
        if let (Some(conn), Some(flags), Some(pool)) = (
            self.conn.take(),
            self.flags.take(),
            self.engine.readers.as_ref(),
        ) {
            pool.put_back(Reader { conn, flags });
        }
    }
}

fn check_path(path: &Path, opts: &OpenOptions) -> Result<()> {
    if path.as_os_str().is_empty() {
        return Err(Error::invalid(
            "the database path is empty; give a file path, or use open_in_memory()",
        ));
    }
    if path.is_dir() {
        return Err(Error::invalid(format!(
            "{} is a directory; give the path of a database file inside it",
            path.display()
        )));
    }
    if !path.exists() && (opts.read_only || !opts.create) {
        return Err(Error::not_found(format!(
            "database file {} does not exist{}",
            path.display(),
            if opts.read_only {
                " (opening read-only never creates it)"
            } else {
                ""
            }
        )));
    }
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
        && !parent.exists()
    {
        return Err(Error::not_found(format!(
            "directory {} does not exist; create it first",
            parent.display()
        )));
    }
    Ok(())
}

fn open_connection(path: Option<&Path>, opts: &OpenOptions, reader: bool) -> Result<Connection> {
    let conn = match path {
        None => Connection::open_in_memory()?,
        Some(p) => {
            let mut flags = OpenFlags::SQLITE_OPEN_NO_MUTEX;
            if opts.read_only {
                flags |= OpenFlags::SQLITE_OPEN_READ_ONLY;
            } else {
                flags |= OpenFlags::SQLITE_OPEN_READ_WRITE;
                if opts.create && !reader {
                    flags |= OpenFlags::SQLITE_OPEN_CREATE;
                }
            }
            Connection::open_with_flags(p, flags)
                .map_err(|e| Error::from(e).context(format!("cannot open {}", p.display())))?
        }
    };
    conn.busy_timeout(opts.busy_timeout)?;
    conn.set_prepared_statement_cache_capacity(opts.statement_cache);
    if reader {
        conn.pragma_update(None, "query_only", true)?;
    }
    Ok(conn)
}

/// Functions whose result depends on the connection that runs them.
const CONNECTION_FUNCTIONS: [&str; 4] = [
    "last_insert_rowid",
    "changes",
    "total_changes",
    "sqlite_offset",
];

fn install_authorizer(
    conn: &mut Connection,
    flags: Arc<AuthFlags>,
    pin: Option<Arc<AtomicBool>>,
) -> Result<()> {
    conn.authorizer(Some(move |ctx: AuthContext<'_>| {
        let safe = match ctx.action {
            AuthAction::Select | AuthAction::Recursive => true,
            // `count(*)` reads with no database name; temp tables and attached databases pin
            // everything to the writer anyway.
            AuthAction::Read { .. } => matches!(ctx.database_name, None | Some("main")),
            AuthAction::Function { function_name } => !CONNECTION_FUNCTIONS
                .iter()
                .any(|f| f.eq_ignore_ascii_case(function_name)),
            AuthAction::CreateTempTable { .. }
            | AuthAction::CreateTempView { .. }
            | AuthAction::CreateTempIndex { .. }
            | AuthAction::CreateTempTrigger { .. }
            | AuthAction::Attach { .. } => {
                if let Some(pin) = &pin {
                    pin.store(true, Ordering::Release);
                }
                false
            }
            _ => false,
        };
        if !safe {
            flags.unsafe_seen.store(true, Ordering::Release);
        }
        Authorization::Allow
    }))?;
    Ok(())
}

fn install_commit_hooks(conn: &mut Connection, hub: &Arc<EventHub>) -> Result<()> {
    let on_commit = hub.clone();
    conn.commit_hook(Some(move || {
        on_commit.on_commit();
        false
    }))?;
    let on_rollback = hub.clone();
    conn.rollback_hook(Some(move || on_rollback.on_rollback()))?;
    Ok(())
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
    }
}
