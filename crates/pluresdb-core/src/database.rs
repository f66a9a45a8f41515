//! [`Database`]: one SQLite file (or memory) with the better-sqlite3-style SQL API.

use std::path::Path;
use std::sync::Arc;

use pluresdb_crdt::{HybridClock, SiteId};
use rusqlite::Connection;

use crate::cursor::RowIter;
use crate::engine::Engine;
use crate::error::{Error, ErrorKind, Result};
use crate::events::EventHub;
use crate::graph::index::GraphIndex;
use crate::graph::sql::register_graph_functions;
use crate::options::OpenOptions;
use crate::params::Params;
use crate::query::{RunResult, ScriptResult};
use crate::replication::{Replication, register_writer};
use crate::row::{FromRow, Row};
use crate::schema;
use crate::statement::Statement;
use crate::value::Value;
use crate::vector::{VectorRegistry, register_stateful};

/// A PluresDB database: real SQLite SQL plus a graph of JSON nodes and edges, in one file.
///
/// Cheap to clone (clones share the connections) and safe to use from many threads: one
/// writer connection serializes writes, a pool of readers serves plain reads concurrently.
#[derive(Clone)]
pub struct Database {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Arc<Engine>,
    clock: Arc<HybridClock>,
    site: SiteId,
    graph: bool,
    repl: Arc<Replication>,
    vectors: Arc<VectorRegistry>,
    graph_index: Arc<GraphIndex>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Save vector graphs so the next open loads instead of rebuilding; a failure here only
        // costs a rebuild later.
        // Another process writing just means the next close saves. The graph log is trimmed
        // here too, for a process that writes the graph and never queries it.
        if !self.engine.options().read_only {
            let _ = self
                .engine
                .with_idle_writer(|conn| self.vectors.save_all(conn, 1));
            let _ = self.engine.with_idle_writer(|conn| {
                self.graph_index
                    .trim_on_close(conn, crate::graph::GRAPH_LOG_TRIM_AT_CLOSE)
            });
        }
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("path", &self.path())
            .field("site", &self.inner.site.to_string())
            .finish()
    }
}

impl Database {
    /// Opens (or creates) the database file at `path` with the default [`OpenOptions`].
    ///
    /// A file that is not a database, or was written by a newer PluresDB, is refused with
    /// an error and left untouched.
    pub fn open(path: impl AsRef<Path>) -> Result<Database> {
        OpenOptions::new().open(path)
    }

    /// Opens a new, private in-memory database.
    pub fn open_in_memory() -> Result<Database> {
        OpenOptions::new().open_in_memory()
    }

    /// Options for [`OpenOptions::open`].
    pub fn options() -> OpenOptions {
        OpenOptions::new()
    }

    pub(crate) fn open_with(path: Option<&Path>, opts: OpenOptions) -> Result<Database> {
        let hub = Arc::new(EventHub::default());
        let engine = Arc::new(Engine::open(path, opts.clone(), hub)?);
        let (state, clock, repl) = {
            let writer = engine.writer()?;
            let state =
                schema::prepare(writer.conn(), path.is_none(), &opts).map_err(|e| match path {
                    Some(p) if e.kind() == ErrorKind::Corrupt => e.context(p.display()),
                    _ => e,
                })?;
            let clock = Arc::new(HybridClock::starting_after(state.last_hlc));
            let repl = Arc::new(Replication::load(
                writer.conn(),
                state.site,
                clock.clone(),
                engine.tx.clone(),
                engine.writer_auth.clone(),
                state.graph,
            )?);
            register_writer(writer.conn(), &repl)?;
            if state.graph && !opts.read_only {
                crate::graph::index::install(writer.conn())?;
            }
            (state, clock, repl)
        };
        let vectors = Arc::new(VectorRegistry::new(path.is_some()));
        let graph_index = Arc::new(GraphIndex::default());
        {
            let writer = engine.writer()?;
            register_stateful(writer.conn(), &vectors, true)?;
            register_graph_functions(writer.conn(), &graph_index)?;
        }
        let (for_readers, graph_for_readers) = (vectors.clone(), graph_index.clone());
        engine.set_reader_setup(Box::new(move |conn| {
            register_stateful(conn, &for_readers, false)?;
            register_graph_functions(conn, &graph_for_readers)
        }));
        engine.set_observer(repl.clone());
        Ok(Database {
            inner: Arc::new(Inner {
                engine,
                clock,
                site: state.site,
                graph: state.graph,
                repl,
                vectors,
                graph_index,
            }),
        })
    }

    pub(crate) fn engine(&self) -> &Arc<Engine> {
        &self.inner.engine
    }

    pub(crate) fn clock(&self) -> &HybridClock {
        &self.inner.clock
    }

    pub(crate) fn graph_index(&self) -> &Arc<GraphIndex> {
        &self.inner.graph_index
    }

    pub(crate) fn vector_registry(&self) -> &Arc<VectorRegistry> {
        &self.inner.vectors
    }

    pub(crate) fn replication(&self) -> &Arc<Replication> {
        &self.inner.repl
    }

    /// Runs `f` with the writer connection (inside this thread's transaction, if any).
    pub(crate) fn with_writer_conn<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T>,
    ) -> Result<T> {
        self.inner.engine.with_writer(f)
    }

    /// Writes captured row changes of this thread's open transaction to the change log.
    pub(crate) fn flush_captured(&self) -> Result<()> {
        if self.in_transaction() {
            self.with_writer_conn(|c| self.inner.repl.flush_captured(c))
        } else {
            Ok(())
        }
    }

    /// Writes the changes that recent transactions logged for sync into the sync records now.
    ///
    /// A write to a synced table only appends its changes to a log, which costs far less than
    /// updating each row's versions. Reading or merging changes folds the log in first, and so
    /// does a commit that leaves it holding 8 MiB (about 200,000 changes of small rows); an app may call
    /// this when idle so that its next sync starts at once.
    pub fn fold_change_log(&self) -> Result<()> {
        self.require_graph()?;
        self.settle_clock()
    }

    /// Folds the change log into the clock records (in this thread's transaction, or in one of
    /// its own when the log holds changes), so that they can be read.
    pub(crate) fn settle_clock(&self) -> Result<()> {
        let repl = &self.inner.repl;
        if self.in_transaction() {
            return self.with_writer_conn(|c| repl.settle_clock(c));
        }
        if !self.engine().with_read_conn(|c| repl.log_has_changes(c))? {
            return Ok(());
        }
        if self.is_read_only() {
            return Err(Error::new(
                ErrorKind::ReadOnly,
                "the database's latest changes are not in its sync records yet (they are \
                 written there by the next write or sync); open it writable to read changes",
            ));
        }
        self.transaction(|db| db.with_writer_conn(|c| repl.settle_clock(c)))
    }

    /// Replicates `table` from now on (like `SELECT pluresdb_sync_table('table')`): checks
    /// that sync can handle its shape (a non-null primary key, no AUTOINCREMENT, no other
    /// UNIQUE index) and refuses with the reason otherwise. Existing rows count as written now;
    /// for a table that synced before ([`unsync_table`](Self::unsync_table)), rows left alone
    /// since keep their versions, and what was changed meanwhile (deletes too) counts as done
    /// now; a table that holds none of the rows it held then is a new one, and asks every
    /// peer for the table again (see the README).
    pub fn sync_table(&self, table: &str) -> Result<()> {
        self.require_graph()?;
        self.transaction(|db| db.with_writer_conn(|c| db.inner.repl.sync_table_on(c, table)))
    }

    /// Stops replicating `table` (its rows stay; its sync records are kept aside until it syncs
    /// again). Returns whether it was replicated. For a table not replicated, drops the
    /// records kept so, if any: it will sync as a new table.
    pub fn unsync_table(&self, table: &str) -> Result<bool> {
        self.require_graph()?;
        self.transaction(|db| db.with_writer_conn(|c| db.inner.repl.unsync_table_on(c, table)))
    }

    /// The replicated SQL tables.
    pub fn synced_tables(&self) -> Result<Vec<String>> {
        self.with_writer_conn(|c| self.inner.repl.synced_tables(c))
    }

    /// The replicated SQL tables, each with its primary-key columns in key order (the order
    /// of [`ChangeRecord::key`](crate::ChangeRecord::key)'s values).
    pub fn synced_table_keys(&self) -> Result<Vec<(String, Vec<String>)>> {
        self.with_writer_conn(|c| self.inner.repl.synced_table_keys(c))
    }

    pub(crate) fn require_graph(&self) -> Result<()> {
        if self.inner.graph {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::ReadOnly,
                "this file has no PluresDB graph tables yet and was opened read-only; open it \
                 read-write once to add them",
            ))
        }
    }

    /// The file path, or `None` for an in-memory database.
    pub fn path(&self) -> Option<&Path> {
        self.inner.engine.path()
    }

    /// This replica's site id (16 random bytes made when the file was created).
    pub fn site_id(&self) -> SiteId {
        self.inner.site
    }

    /// True when opened read-only.
    pub fn is_read_only(&self) -> bool {
        self.inner.engine.options().read_only
    }

    /// True when this thread is inside a transaction on this database.
    pub fn in_transaction(&self) -> bool {
        self.inner.engine.in_transaction_here()
    }

    /// Runs one or more SQL statements separated by `;` (no parameters, rows ignored).
    pub fn exec(&self, sql: &str) -> Result<()> {
        self.inner.engine.script(sql, false).map(|_| ())
    }

    /// Runs a script of statements and returns the rows of the last one that has result
    /// columns (what the `pluresdb sql` command prints).
    pub fn exec_script(&self, sql: &str) -> Result<ScriptResult> {
        self.inner.engine.script(sql, true)
    }

    /// Runs one statement; returns rows changed and the last inserted rowid.
    pub fn run(&self, sql: &str, params: impl Params) -> Result<RunResult> {
        let info = self.inner.engine.info(sql);
        self.inner.engine.run(sql, &info, &params)
    }

    /// The first row of a query, or `None`.
    pub fn get(&self, sql: &str, params: impl Params) -> Result<Option<Row>> {
        let info = self.inner.engine.info(sql);
        self.inner.engine.get(sql, &info, &params)
    }

    /// All rows of a query.
    pub fn all(&self, sql: &str, params: impl Params) -> Result<Vec<Row>> {
        let info = self.inner.engine.info(sql);
        self.inner.engine.all(sql, &info, &params)
    }

    /// The first row converted to `T` (a tuple such as `(i64, String)`), or `None`.
    /// Tuples are read straight from SQLite, without an intermediate [`Row`].
    pub fn get_as<T: FromRow>(&self, sql: &str, params: impl Params) -> Result<Option<T>> {
        let info = self.inner.engine.info(sql);
        self.inner.engine.get(sql, &info, &params)
    }

    /// All rows converted to `T` (read straight from SQLite for tuples).
    pub fn all_as<T: FromRow>(&self, sql: &str, params: impl Params) -> Result<Vec<T>> {
        let info = self.inner.engine.info(sql);
        self.inner.engine.all(sql, &info, &params)
    }

    /// The first column of the first row (`Value::Null` when there is no row).
    pub fn value(&self, sql: &str, params: impl Params) -> Result<Value> {
        Ok(self
            .get(sql, params)?
            .and_then(|r| r.into_values().into_iter().next())
            .unwrap_or(Value::Null))
    }

    /// Streams the rows of a query without loading them all; see [`RowIter`].
    pub fn iterate(&self, sql: &str, params: impl Params) -> Result<RowIter> {
        RowIter::open(&self.inner.engine, sql, &params)
    }

    /// Streams the rows converted to `T` (tuples are read straight from SQLite).
    pub fn iterate_as<T: FromRow>(&self, sql: &str, params: impl Params) -> Result<RowIter<T>> {
        RowIter::open(&self.inner.engine, sql, &params)
    }

    /// Prepares one statement for repeated use; errors in the SQL are reported now.
    pub fn prepare(&self, sql: &str) -> Result<Statement> {
        Statement::new(self.clone(), sql)
    }

    /// Runs a pragma on the writer connection and returns its rows:
    /// `db.pragma("cache_size = -20000")`, `db.pragma("table_info(users)")`.
    pub fn pragma(&self, pragma: &str) -> Result<Vec<Row>> {
        let sql = format!("PRAGMA {pragma}");
        let writer = self.inner.engine.writer()?;
        let mut stmt = writer
            .conn()
            .prepare(&sql)
            .map_err(|e| crate::engine::sql_error(e, &sql))?;
        let columns = Arc::new(crate::row::Columns::from_statement(&stmt));
        let mut rows = stmt.raw_query();
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(Row::read(&columns, row)?);
        }
        Ok(out)
    }

    /// The first value a pragma returns (`Value::Null` when none): `db.pragma_value("user_version")`.
    pub fn pragma_value(&self, pragma: &str) -> Result<Value> {
        Ok(self
            .pragma(pragma)?
            .into_iter()
            .next()
            .and_then(|r| r.into_values().into_iter().next())
            .unwrap_or(Value::Null))
    }

    /// Warnings about how this database's schema syncs (not damage: [`check`](Self::check)
    /// reports that): each user trigger that writes a synced table when a synced table is
    /// written. A merge runs it again on every device, while the device that made the change
    /// sends its result too, so the replicas can differ; keep what it derives in a table that
    /// is not synced, a view, or the app.
    pub fn sync_warnings(&self) -> Result<Vec<String>> {
        let tables = self.synced_tables()?;
        if tables.is_empty() {
            return Ok(Vec::new());
        }
        let mut probes = Vec::new();
        for table in &tables {
            let columns: Vec<String> = self
                .all_as::<(String,)>(
                    "SELECT name FROM pragma_table_xinfo(?1) WHERE hidden = 0",
                    (table,),
                )?
                .into_iter()
                .map(|(c,)| crate::replication::quote(&c))
                .collect();
            let t = crate::replication::quote(table);
            let set: Vec<String> = columns.iter().map(|c| format!("{c} = {c}")).collect();
            probes.push(format!("INSERT INTO {t} DEFAULT VALUES"));
            probes.push(format!("UPDATE {t} SET {}", set.join(", ")));
            probes.push(format!("DELETE FROM {t}"));
        }
        let written = self.with_writer_conn(|conn| {
            let probe = &self.engine().writer_auth.probe;
            probe.run(|| {
                for sql in &probes {
                    drop(conn.prepare(sql)?);
                }
                Ok::<_, Error>(())
            })
        })?;
        let synced = |t: &str| tables.iter().any(|s| s.eq_ignore_ascii_case(t));
        Ok(written
            .into_iter()
            .filter(|(_, table)| synced(table))
            .map(|(trigger, table)| {
                format!(
                    "trigger {trigger} writes synced table {table} when synced rows change: \
                     merges run it again on each device while the device that made the change \
                     sends its result too, so the devices can differ (keep what it derives in \
                     a table that is not synced, a view, or the app)"
                )
            })
            .collect())
    }

    /// SQLite's `integrity_check` and `foreign_key_check`, edge rows whose node or relation row
    /// is gone (deleted outside PluresDB), and rows of synced tables written or deleted by
    /// another program (which do not sync); an empty list means healthy. (A read-only handle
    /// whose change log holds writes cannot look for the last: it says so, as a problem.)
    pub fn check(&self) -> Result<Vec<String>> {
        let mut problems: Vec<String> = self
            .pragma("integrity_check")?
            .iter()
            .filter_map(|r| r.get::<String>(0).ok())
            .filter(|s| s != "ok")
            .collect();
        for r in self.pragma("foreign_key_check")? {
            let table: String = r.get(0).unwrap_or_default();
            let rowid: Option<i64> = r.get(1).unwrap_or_default();
            let parent: String = r.get(2).unwrap_or_default();
            problems.push(format!(
                "foreign key violation: {table} row {} references a missing row in {parent}",
                rowid.map_or_else(|| "?".to_owned(), |r| r.to_string())
            ));
        }
        if self.inner.graph {
            // Writes to synced tables that bypassed PluresDB (read once the log is folded: a
            // read-only handle whose log holds changes leaves this out).
            let settled = match self.settle_clock() {
                Err(e) if e.kind() == ErrorKind::ReadOnly => false,
                settled => settled.map(|()| true)?,
            };
            if settled {
                let repl = &self.inner.repl;
                problems.extend(self.with_writer_conn(|c| repl.writes_not_recorded(c))?);
            } else {
                problems.push(
                    "rows of synced tables written or deleted by another program were not \
                     looked for: the database's latest writes are not in its sync records yet, \
                     which a read-only handle cannot do; run check on a writable handle (or \
                     after the next sync or write)"
                        .to_owned(),
                );
            }
            let broken = self
                .value(
                    "SELECT count(*) FROM _pluresdb_edges e
                     WHERE NOT EXISTS (SELECT 1 FROM _pluresdb_nodes WHERE rid = e.src)
                        OR NOT EXISTS (SELECT 1 FROM _pluresdb_nodes WHERE rid = e.dst)
                        OR NOT EXISTS (SELECT 1 FROM _pluresdb_relations WHERE id = e.rel)",
                    (),
                )?
                .as_i64()
                .unwrap_or(0);
            if broken > 0 {
                problems.push(format!(
                    "{broken} edge row(s) in _pluresdb_edges point at a node or relation row \
                     that is gone (deleted outside PluresDB, by SQL on the internal tables): \
                     reads leave them out, `edge_count` counts them; to remove them: DELETE \
                     FROM _pluresdb_edges WHERE src NOT IN (SELECT rid FROM _pluresdb_nodes) \
                     OR dst NOT IN (SELECT rid FROM _pluresdb_nodes) OR rel NOT IN (SELECT id \
                     FROM _pluresdb_relations); delete nodes with PluresDB, not by SQL"
                ));
            }
        }
        Ok(problems)
    }
}
