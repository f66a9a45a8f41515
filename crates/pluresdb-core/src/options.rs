//! How a database is opened: read-only, busy timeout, WAL, `synchronous`, reader pool size.

use std::path::Path;
use std::time::Duration;

use crate::database::Database;
use crate::error::Result;

/// SQLite's `PRAGMA synchronous` levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// No syncs: fastest, a power cut can corrupt the file.
    Off,
    /// Sync at checkpoints (the default with WAL): a crash of the app loses nothing committed,
    /// a power cut can lose the last transactions but never corrupts the file.
    #[default]
    Normal,
    /// Sync at every commit: committed transactions survive a power cut.
    Full,
    /// Like `Full`, and also syncs the directory after deleting journals.
    Extra,
}

impl Synchronous {
    pub(crate) fn pragma_value(self) -> &'static str {
        match self {
            Synchronous::Off => "OFF",
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
            Synchronous::Extra => "EXTRA",
        }
    }
}

/// Options for opening a [`Database`]; `OpenOptions::new()` gives the defaults.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    pub(crate) read_only: bool,
    pub(crate) create: bool,
    pub(crate) busy_timeout: Duration,
    pub(crate) wal: bool,
    pub(crate) synchronous: Synchronous,
    pub(crate) foreign_keys: bool,
    pub(crate) readers: usize,
    pub(crate) statement_cache: usize,
    pub(crate) cache_kib: u32,
    pub(crate) mmap_mib: u32,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            read_only: false,
            create: true,
            busy_timeout: Duration::from_secs(5),
            wal: true,
            synchronous: Synchronous::Normal,
            foreign_keys: true,
            readers: 4,
            statement_cache: 128,
            cache_kib: 16 * 1024,
            mmap_mib: 0,
        }
    }
}

impl OpenOptions {
    /// The defaults: read-write, create if missing, WAL, `synchronous=NORMAL`, foreign keys
    /// enforced (as better-sqlite3 does), 5 s busy timeout, up to 4 reader connections.
    pub fn new() -> OpenOptions {
        OpenOptions::default()
    }

    /// Opens read-only: every write fails with [`ErrorKind::ReadOnly`](crate::ErrorKind::ReadOnly).
    pub fn read_only(mut self, yes: bool) -> Self {
        self.read_only = yes;
        self
    }

    /// Creates the file when missing (default `true`); with `false` a missing file is an error.
    pub fn create(mut self, yes: bool) -> Self {
        self.create = yes;
        self
    }

    /// How long a call waits for a lock held elsewhere before failing with
    /// [`ErrorKind::Busy`](crate::ErrorKind::Busy).
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// Write-ahead logging (default on): readers never block the writer.
    pub fn wal(mut self, yes: bool) -> Self {
        self.wal = yes;
        self
    }

    /// The `synchronous` level (default [`Synchronous::Normal`]).
    pub fn synchronous(mut self, level: Synchronous) -> Self {
        self.synchronous = level;
        self
    }

    /// Enforce foreign keys (default `true`, as better-sqlite3).
    pub fn foreign_keys(mut self, yes: bool) -> Self {
        self.foreign_keys = yes;
        self
    }

    /// Maximum number of extra read-only connections used for reads from several threads
    /// (default 4; 0 sends every statement through the one writer connection).
    pub fn readers(mut self, count: usize) -> Self {
        self.readers = count;
        self
    }

    /// Prepared statements kept per connection (default 128).
    pub fn statement_cache(mut self, capacity: usize) -> Self {
        self.statement_cache = capacity;
        self
    }

    /// SQLite page cache per connection, in KiB (default 16 MiB; SQLite's own default is 2).
    pub fn cache_size_kib(mut self, kib: u32) -> Self {
        self.cache_kib = kib;
        self
    }

    /// How much of the file SQLite reads through a memory map on every connection, in MiB
    /// (default 0: off, as in SQLite). Pages read through the map skip a copy and a system call
    /// each: the graph bench (`bench/graph`) builds the graph of its 147 MB database 5-20%
    /// faster with 256 MiB. SQLite's documented cost: an I/O error while a mapped page is read
    /// (a file on a drive that was pulled out) ends the process with SIGBUS instead of
    /// returning an error.
    pub fn mmap_size_mib(mut self, mib: u32) -> Self {
        self.mmap_mib = mib;
        self
    }

    /// Opens (or creates) the database file at `path`.
    pub fn open(&self, path: impl AsRef<Path>) -> Result<Database> {
        Database::open_with(Some(path.as_ref()), self.clone())
    }

    /// Opens a new, private in-memory database.
    pub fn open_in_memory(&self) -> Result<Database> {
        Database::open_with(None, self.clone())
    }
}
