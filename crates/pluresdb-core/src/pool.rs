//! The pool of reader connections: opened on demand, handed out one per statement or iterator.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

use crate::conn::Conn;
use crate::connect::{AuthFlags, install_authorizer, open_connection};
use crate::engine::sql_error;
use crate::error::{Error, ErrorKind, Result};
use crate::options::OpenOptions;

/// Idle reader connections, opened on demand up to the configured count.
pub(crate) struct ReaderPool {
    path: PathBuf,
    opts: OpenOptions,
    idle: Mutex<Vec<Reader>>,
    opened: Mutex<usize>,
    returned: Condvar,
    /// Registers per-database functions on each new reader.
    pub(crate) setup: OnceLock<ReaderSetup>,
}

/// What every new reader connection gets before use.
pub(crate) type ReaderSetup = Box<dyn Fn(&rusqlite::Connection) -> Result<()> + Send + Sync>;

struct Reader {
    conn: Conn,
    flags: Arc<AuthFlags>,
}

impl ReaderPool {
    pub(crate) fn new(path: PathBuf, opts: OpenOptions) -> ReaderPool {
        ReaderPool {
            path,
            opts,
            idle: Mutex::new(Vec::new()),
            opened: Mutex::new(0),
            returned: Condvar::new(),
            setup: OnceLock::new(),
        }
    }

    pub(crate) fn get(&self) -> Result<PooledReader<'_>> {
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
        if let Some(setup) = self.setup.get() {
            setup(&conn)?;
        }
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
    pub(crate) fn conn_mut(&mut self) -> &mut Conn {
        &mut self.reader.as_mut().expect("held until drop").conn
    }

    /// Prepares `sql` afresh and reports whether a reader may run it.
    pub(crate) fn classify(&self, sql: &str) -> Result<bool> {
        let reader = self.reader.as_ref().expect("held until drop");
        reader.flags.unsafe_seen.store(false, Ordering::Release);
        let stmt = reader
            .conn
            .get()
            .prepare(sql)
            .map_err(|e| sql_error(e, sql))?;
        Ok(stmt.readonly() && !reader.flags.unsafe_seen.load(Ordering::Acquire))
    }

    pub(crate) fn into_owned(mut self, pool: Arc<ReaderPool>) -> OwnedReader {
        let reader = self.reader.take().expect("held until drop");
        OwnedReader {
            pool,
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
    pool: Arc<ReaderPool>,
    flags: Option<Arc<AuthFlags>>,
    pub(crate) conn: Option<Conn>,
}

impl Drop for OwnedReader {
    fn drop(&mut self) {
        if let (Some(conn), Some(flags)) = (self.conn.take(), self.flags.take()) {
            self.pool.put_back(Reader { conn, flags });
        }
    }
}
