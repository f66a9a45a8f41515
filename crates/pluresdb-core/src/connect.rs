//! Opening SQLite connections: path checks, flags and settings, the authorizer that
//! classifies statements, and the commit hooks.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::{Connection, OpenFlags};

use crate::error::{Error, Result};
use crate::events::EventHub;
use crate::options::OpenOptions;
use crate::trigger_probe::TriggerProbe;
use crate::updated_columns::UpdatedColumns;

/// What the writer's authorizer noticed, shared with the engine.
#[derive(Default)]
pub(crate) struct WriterAuth {
    /// The writer created temp objects or attached a database: route everything to it.
    pub(crate) pinned: AtomicBool,
    /// The last statement prepared on the writer begins or ends a transaction or savepoint.
    pub(crate) tx_control: AtomicBool,
    /// A statement that changes the schema was prepared on the writer.
    pub(crate) schema_changed: AtomicBool,
    /// The last statement prepared on the writer changes the schema (DDL): each run of it
    /// (cached statements run without being prepared again) sets `schema_changed`.
    pub(crate) ddl: AtomicBool,
    /// The last statement prepared on the writer calls one of [`WRITING_FUNCTIONS`].
    pub(crate) writes_through_function: AtomicBool,
    /// Every column an UPDATE prepared on the writer names.
    pub(crate) updated: UpdatedColumns,
    /// Finds the user triggers that write synced tables ([`TriggerProbe`]).
    pub(crate) probe: TriggerProbe,
}

/// PluresDB's SQL functions that write through the connection running them. A statement
/// calling one is a read to SQLite (`SELECT pluresdb_sync_table('t')`), and is run in a write
/// transaction begun for it (see `engine::in_write_transaction`).
const WRITING_FUNCTIONS: [&str; 4] = [
    "pluresdb_sync_table",
    "pluresdb_unsync_table",
    "pluresdb_vector_index",
    "pluresdb_vector_index_drop",
];

/// Transaction ends seen by the writer's hooks.
#[derive(Default)]
pub(crate) struct TxCounters {
    /// Incremented at every commit and rollback: identifies the open transaction.
    pub(crate) generation: AtomicU64,
    /// Incremented at every rollback.
    pub(crate) rollbacks: AtomicU64,
    /// `generation + 1` of a transaction that must not commit (a change in it could not be
    /// recorded for sync): its commit is turned into a rollback. 0: none.
    pub(crate) refuse_commit: AtomicU64,
}

/// Decides per statement whether it is pool-safe; shared with the authorizer callback.
#[derive(Default)]
pub(crate) struct AuthFlags {
    /// The last prepared statement did something a reader must not do.
    pub(crate) unsafe_seen: AtomicBool,
}

pub(crate) fn check_path(path: &Path, opts: &OpenOptions) -> Result<()> {
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

/// Process-wide SQLite settings, applied once before the first connection opens: statement
/// journals (kept by statements that fire triggers or may abort) stay in memory up to
/// 128 KiB instead of 64 KiB before they go to a temporary file. That file is written in
/// chunks of this size, and SQLite's Unix VFS writes at most 128 KiB - 1 bytes at a time:
/// a larger value makes large statements fail with "database or disk is full".
fn configure_sqlite() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: sqlite3_config is called with a valid option and argument type; it returns
        // SQLITE_MISUSE (ignored) if SQLite was already initialized by someone else.
        unsafe {
            rusqlite::ffi::sqlite3_config(rusqlite::ffi::SQLITE_CONFIG_STMTJRNL_SPILL, 0x1ffff);
        }
    });
}

/// The page cache and memory map sizes of `opts`.
pub(crate) fn apply_cache_settings(conn: &Connection, opts: &OpenOptions) -> Result<()> {
    conn.pragma_update(None, "cache_size", -(opts.cache_kib as i64))?;
    conn.pragma_update(None, "mmap_size", i64::from(opts.mmap_mib) << 20)?;
    Ok(())
}

pub(crate) fn open_connection(
    path: Option<&Path>,
    opts: &OpenOptions,
    reader: bool,
) -> Result<Connection> {
    configure_sqlite();
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
    if reader {
        // The writer's are set after the file is known to be a database (see schema::prepare).
        apply_cache_settings(&conn, opts)?;
    }
    crate::replication::register_pure(&conn)?;
    crate::vector::register_pure(&conn)?;
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

pub(crate) fn install_authorizer(
    conn: &mut Connection,
    flags: Arc<AuthFlags>,
    writer: Option<Arc<WriterAuth>>,
) -> Result<()> {
    conn.authorizer(Some(move |ctx: AuthContext<'_>| {
        if let Some(w) = &writer {
            if w.probe.probing() {
                // Prepared only to see what their triggers write; nothing else is noted.
                w.probe.note(&ctx);
                return Authorization::Allow;
            }
            match ctx.action {
                AuthAction::Transaction { .. } | AuthAction::Savepoint { .. } => {
                    w.tx_control.store(true, Ordering::Release);
                }
                AuthAction::AlterTable { .. }
                | AuthAction::CreateTable { .. }
                | AuthAction::CreateIndex { .. }
                | AuthAction::DropTable { .. }
                | AuthAction::DropIndex { .. }
                | AuthAction::CreateTrigger { .. }
                | AuthAction::DropTrigger { .. } => {
                    w.schema_changed.store(true, Ordering::Release);
                    w.ddl.store(true, Ordering::Release);
                }
                AuthAction::Function { function_name }
                    if WRITING_FUNCTIONS
                        .iter()
                        .any(|f| f.eq_ignore_ascii_case(function_name)) =>
                {
                    w.writes_through_function.store(true, Ordering::Release);
                }
                AuthAction::Update {
                    table_name,
                    column_name,
                } => w.updated.note(table_name, column_name),
                _ => {}
            }
        }
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
                if let Some(w) = &writer {
                    w.pinned.store(true, Ordering::Release);
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

pub(crate) fn install_commit_hooks(
    conn: &mut Connection,
    hub: &Arc<EventHub>,
    counters: &Arc<TxCounters>,
) -> Result<()> {
    let (on_commit, commits) = (hub.clone(), counters.clone());
    conn.commit_hook(Some(move || {
        let generation = commits.generation.load(Ordering::Acquire);
        if commits.refuse_commit.load(Ordering::Acquire) == generation + 1 {
            // Rolled back instead; the rollback hook ends the generation.
            return true;
        }
        on_commit.on_commit();
        commits.generation.fetch_add(1, Ordering::AcqRel);
        false
    }))?;
    let (on_rollback, rollbacks) = (hub.clone(), counters.clone());
    conn.rollback_hook(Some(move || {
        on_rollback.on_rollback();
        rollbacks.rollbacks.fetch_add(1, Ordering::AcqRel);
        rollbacks.generation.fetch_add(1, Ordering::AcqRel);
    }))?;
    Ok(())
}
