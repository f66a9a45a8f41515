//! [`Conn`]: a SQLite connection that keeps its prepared statements, keyed by a number.
//!
//! rusqlite's own statement cache copies the SQL text into a new `Arc<str>` on every lookup;
//! on hot paths (a prepared INSERT run a million times) that costs more than PluresDB's
//! whole budget over plain rusqlite. Here each distinct SQL text gets a number once, and a
//! lookup is one integer hash.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::ptr::NonNull;

use rusqlite::{Connection, PrepFlags, Statement};

use crate::engine::sql_error;
use crate::error::Result;

/// Hashes the statement numbers (already unique integers) with one multiplication.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A prepared statement that borrows the connection of the [`Conn`] holding it.
pub(crate) type CachedStmt = Statement<'static>;

/// A connection plus its prepared statements.
///
/// The statements borrow the connection, which lives on the heap at a fixed address and is
/// freed only after every statement is finalized (see `Drop`). A `Conn` is used by one thread
/// at a time (behind the writer mutex or checked out of the reader pool).
pub(crate) struct Conn {
    stmts: RefCell<HashMap<u64, CachedStmt, BuildHasherDefault<IdHasher>>>,
    capacity: usize,
    conn: NonNull<Connection>,
}

// SAFETY: the connection and the statements that borrow it always move together, and `Conn`
// is never shared between threads (it is not `Sync`); rusqlite's `Connection` is `Send` for the
// same reason.
unsafe impl Send for Conn {}

impl Conn {
    pub(crate) fn new(conn: Connection, capacity: usize) -> Conn {
        Conn {
            stmts: RefCell::new(HashMap::default()),
            capacity: capacity.max(1),
            conn: NonNull::from(Box::leak(Box::new(conn))),
        }
    }

    /// The connection.
    pub(crate) fn get(&self) -> &Connection {
        // SAFETY: allocated in `new`, freed only in `drop`.
        unsafe { self.conn.as_ref() }
    }

    fn get_static(&self) -> &'static Connection {
        // SAFETY: statements that hold this reference are stored in `self.stmts` or handed out
        // through `take` and returned or dropped before `self` is dropped (see `Drop`).
        unsafe { &*self.conn.as_ptr() }
    }

    /// The connection for changes that need `&mut` (hooks). Cached statements are finalized
    /// first, so no shared borrow of the connection is alive.
    pub(crate) fn get_mut(&mut self) -> &mut Connection {
        self.stmts.get_mut().clear();
        // SAFETY: as in `get`; no statement borrows the connection any more.
        unsafe { self.conn.as_mut() }
    }

    /// Takes the prepared statement for `sql` (numbered `key`) out of the cache, preparing it
    /// when missing. Give it back with [`put`](Self::put).
    pub(crate) fn take(&self, key: u64, sql: &str) -> Result<CachedStmt> {
        let cached = self.stmts.borrow_mut().remove(&key);
        match cached {
            Some(stmt) => Ok(stmt),
            None => self
                .get_static()
                .prepare_with_flags(sql, PrepFlags::SQLITE_PREPARE_PERSISTENT)
                .map_err(|e| sql_error(e, sql)),
        }
    }

    /// Returns a statement taken with [`take`](Self::take).
    pub(crate) fn put(&self, key: u64, stmt: CachedStmt) {
        let mut stmts = self.stmts.borrow_mut();
        if stmts.len() >= self.capacity {
            stmts.clear();
        }
        stmts.insert(key, stmt);
    }

    /// Runs `f` with the cached statement for `sql` (left in place, no copy). `f` must not
    /// use this `Conn`'s cache itself.
    pub(crate) fn with_statement<T>(
        &self,
        key: u64,
        sql: &str,
        f: impl FnOnce(&Connection, &mut CachedStmt) -> Result<T>,
    ) -> Result<T> {
        let conn = self.get_static();
        let mut stmts = self.stmts.borrow_mut();
        if !stmts.contains_key(&key) {
            if stmts.len() >= self.capacity {
                stmts.clear();
            }
            let stmt = conn
                .prepare_with_flags(sql, PrepFlags::SQLITE_PREPARE_PERSISTENT)
                .map_err(|e| sql_error(e, sql))?;
            stmts.insert(key, stmt);
        }
        let Some(stmt) = stmts.get_mut(&key) else {
            return Err(crate::Error::internal(
                "a statement vanished from the cache",
            ));
        };
        let result = f(conn, stmt);
        if result.is_err() {
            stmt.clear_bindings();
        }
        result
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.stmts.get_mut().clear();
        // SAFETY: allocated in `new`; no statement borrows it any more.
        drop(unsafe { Box::from_raw(self.conn.as_ptr()) });
    }
}
