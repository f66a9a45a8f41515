//! [`Replication`]: the per-database replication state shared by capture, extraction and merge.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use rusqlite::{Connection, OptionalExtension};

use pluresdb_crdt::{Hlc, HybridClock, SiteId};

use super::changelog::CaptureBuf;
use super::clock::Stamp;
use super::collections::{Collection, Collections, Renamed, drop_legacy_triggers};
use super::dense_fold::DenseFold;
use super::recent::Recent;
use super::shape_stamp::ShapeStamp;
use crate::connect::{TxCounters, WriterAuth};
use crate::error::{Error, Result};

/// Replication state of one database.
pub(crate) struct Replication {
    pub(crate) site: SiteId,
    pub(crate) clock: Arc<HybridClock>,
    pub(crate) tx: Arc<TxCounters>,
    pub(crate) writer_auth: Arc<WriterAuth>,
    state: Mutex<State>,
    /// Row changes reported by the pre-update hook, not yet written to the change log.
    pub(crate) captured: Mutex<CaptureBuf>,
    /// The rows a folding scan is rewriting (see [`dense_fold`](super::dense_fold)).
    pub(crate) dense_fold: Mutex<DenseFold>,
    /// Replicated SQL tables, for the pre-update hook (a lock of its own: the hook runs inside
    /// statements that may be run while `state` is locked).
    pub(crate) tables: RwLock<Vec<Arc<Collection>>>,
    /// `generation + 1` of the transaction that added or removed a replicated table (until it
    /// ends, a savepoint rollback may undo that, so the collections are read before each
    /// statement); 0: none.
    collections_changed_in: AtomicU64,
    /// Rollbacks seen when the collections were last read.
    rollbacks_seen: AtomicU64,
    /// A transaction-control statement ran in the transaction that changed the collections.
    savepoint_undo: AtomicBool,
    /// Statements run under capture so far, to tell one statement's changes from the next
    /// one's.
    pub(crate) statements: AtomicU64,
    /// Rows whose clock records changed lately (for incremental change sets).
    pub(crate) recent: Mutex<Recent>,
    /// A random number naming this handle in `_pluresdb_meta.db_version_by`.
    pub(crate) token: i64,
    /// The file has PluresDB's tables (false for a plain SQLite file opened read-only).
    has_tables: bool,
    /// Why capturing a row change failed, and in which transaction (`TxCounters::generation`):
    /// every later statement of that transaction fails with it, and so does its commit.
    pub(crate) capture_error: Mutex<Option<(u64, String)>>,
    /// Some SQL table is replicated: writes must be observed.
    pub(crate) tables_synced: AtomicBool,
    /// Remote changes are being merged: the hook must not report them.
    pub(crate) suppress: AtomicBool,
    /// Rows of synced tables written by triggers while merges ran (see
    /// [`ApplyReport::trigger_writes`](super::ApplyReport::trigger_writes)).
    pub(crate) trigger_writes: AtomicU64,
    /// What the open transaction's own schema changes did to synced tables, to follow up
    /// before its next statement or its commit (see [`PendingDdl`]).
    pub(crate) pending_ddl: Mutex<PendingDdl>,
    /// The writer's `PRAGMA data_version` when last looked at: it changes when another
    /// connection (another process) commits (see `WriteObserver::catch_up`).
    pub(crate) data_version: AtomicI64,
}

/// Synced tables a transaction's own schema changes renamed or dropped, and columns they
/// renamed (see `Replication::follow_vanished` and `follow_renamed_columns`), noted for the
/// transaction `generation` only: one that ended without following them up (rolled back)
/// leaves nothing for the next.
#[derive(Default)]
pub(crate) struct PendingDdl {
    pub(crate) generation: u64,
    pub(crate) vanished: Vec<Arc<Collection>>,
    pub(crate) renamed_columns: Vec<(u32, Vec<Renamed>)>,
}

struct State {
    sites: SiteDict,
    collections: Collections,
    /// What `collections` were loaded from (`None`: not known).
    stamp: Option<ShapeStamp>,
    /// The transaction (generation) that has a `db_version`, and that version.
    tx_seq: Option<(u64, u64)>,
}

/// Site ids by their small index in `_pluresdb_sites`, and back.
#[derive(Default)]
struct SiteDict {
    by_idx: HashMap<u32, SiteId>,
    by_site: HashMap<SiteId, u32>,
    /// Rollbacks seen when loaded: a rollback may have removed entries added since.
    loaded_at: u64,
    loaded: bool,
}

impl Replication {
    pub(crate) fn load(
        conn: &Connection,
        site: SiteId,
        clock: Arc<HybridClock>,
        tx: Arc<TxCounters>,
        writer_auth: Arc<WriterAuth>,
        has_tables: bool,
    ) -> Result<Replication> {
        if !has_tables {
            // A read-only plain SQLite file: nothing is replicated.
            return Ok(Replication {
                site,
                clock,
                tx,
                writer_auth,
                tables_synced: AtomicBool::new(false),
                state: Mutex::new(State {
                    sites: SiteDict::default(),
                    collections: Collections::default(),
                    stamp: None,
                    tx_seq: None,
                }),
                captured: Mutex::new(CaptureBuf::default()),
                dense_fold: Mutex::default(),
                tables: RwLock::new(Vec::new()),
                collections_changed_in: AtomicU64::new(0),
                rollbacks_seen: AtomicU64::new(0),
                savepoint_undo: AtomicBool::new(false),
                statements: AtomicU64::new(0),
                recent: Mutex::new(Recent::new(0)),
                token: 0,
                has_tables: false,
                capture_error: Mutex::new(None),
                suppress: AtomicBool::new(false),
                trigger_writes: AtomicU64::new(0),
                pending_ddl: Mutex::new(PendingDdl::default()),
                data_version: AtomicI64::new(0),
            });
        }
        let last_seq: i64 = conn
            .query_row(
                "SELECT value FROM _pluresdb_meta WHERE key = 'db_version'",
                [],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0);
        if let Some(mark) = stored_clock_mark(conn)? {
            clock.observe(mark);
        }
        let collections = load_recorded(conn, &clock)?;
        super::missed::resync_if_arrived(conn, &collections)?;
        if !conn.is_readonly(rusqlite::MAIN_DB)? {
            drop_legacy_triggers(conn)?;
        }
        let tables = RwLock::new(collections.tables());
        let rollbacks_seen = AtomicU64::new(tx.rollbacks.load(Ordering::Acquire));
        let repl = Replication {
            site,
            clock,
            tx,
            writer_auth,
            tables_synced: AtomicBool::new(collections.has_tables()),
            state: Mutex::new(State {
                sites: SiteDict::default(),
                collections,
                stamp: Some(ShapeStamp::read(conn)?),
                tx_seq: None,
            }),
            captured: Mutex::new(CaptureBuf::default()),
            dense_fold: Mutex::default(),
            tables,
            collections_changed_in: AtomicU64::new(0),
            rollbacks_seen,
            savepoint_undo: AtomicBool::new(false),
            statements: AtomicU64::new(0),
            recent: Mutex::new(Recent::new(last_seq as u64)),
            token: conn.query_row("SELECT random()", [], |r| r.get(0))?,
            has_tables: true,
            capture_error: Mutex::new(None),
            suppress: AtomicBool::new(false),
            trigger_writes: AtomicU64::new(0),
            pending_ddl: Mutex::new(PendingDdl::default()),
            data_version: AtomicI64::new(0),
        };
        Ok(repl)
    }

    /// The `db_version` of the open transaction, allocating (and persisting) one on first use.
    pub(crate) fn tx_seq(&self, conn: &Connection) -> Result<u64> {
        let generation = self.tx.generation.load(Ordering::Acquire);
        let mut state = self.state.lock();
        if let Some((g, seq)) = state.tx_seq
            && g == generation
        {
            return Ok(seq);
        }
        if conn.is_autocommit() {
            return Err(Error::internal("a replicated write outside a transaction"));
        }
        // Counted in the file, not in memory: another process may write it too. Who took the
        // last version is recorded next to it (by `persist_clock`, which every writer that
        // takes a version calls): if not this handle, versions may have been committed that the
        // recent-change list does not hold.
        let last_by: Option<i64> = conn
            .prepare_cached("SELECT value FROM _pluresdb_meta WHERE key = 'db_version_by'")?
            .query_row([], |r| r.get(0))
            .optional()?;
        let seq: i64 = conn
            .prepare_cached(
                "INSERT INTO _pluresdb_meta(key, value) VALUES ('db_version', 1)
                 ON CONFLICT(key) DO UPDATE SET value = value + 1 RETURNING value",
            )?
            .query_row([], |r| r.get(0))?;
        let seq = seq as u64;
        self.recent
            .lock()
            .allocated(seq, last_by != Some(self.token));
        state.tx_seq = Some((generation, seq));
        Ok(seq)
    }

    /// Records the clock's high-water mark so it never goes back after a restart.
    /// Also writes the transaction's `db_version` (and who took it) again: a `ROLLBACK TO`
    /// may have undone taking it, while the transaction keeps using it.
    ///
    /// The mark is stored at the end of the wall clock's current millisecond (or at the clock,
    /// when that is further ahead), so the writes that follow within that millisecond find it
    /// stored and only read it: a read instead of an upsert of three rows, which inside a
    /// nested transaction also copies the page to the savepoint's journal. Not further: a
    /// process that starts on the file (or another one that sees this write) stamps its writes
    /// after the mark, and a mark ahead of the wall clock would stamp a write made now after
    /// another device's made later, which would then lose to it.
    pub(crate) fn persist_clock(&self, conn: &Connection) -> Result<()> {
        let seq = self.tx_seq(conn)?;
        let last = self.clock.last().as_u64();
        // Read back rather than remembered: a `ROLLBACK TO` may have undone the last write.
        let stored: (Option<i64>, Option<i64>, Option<i64>) = conn
            .prepare_cached(
                "SELECT (SELECT value FROM _pluresdb_meta WHERE key = 'last_hlc'),
                        (SELECT value FROM _pluresdb_meta WHERE key = 'db_version'),
                        (SELECT value FROM _pluresdb_meta WHERE key = 'db_version_by')",
            )?
            // A value of another type reads as missing, so the upsert below runs.
            .query_row([], |r| {
                let int = |i| r.get::<_, Option<i64>>(i).ok().flatten();
                Ok((int(0), int(1), int(2)))
            })?;
        if stored.0 >= Some(last as i64)
            && stored.1 >= Some(seq as i64)
            && stored.2 == Some(self.token)
        {
            return Ok(());
        }
        let end_of_this_milli = Hlc::new(pluresdb_crdt::wall_millis(), u16::MAX).as_u64();
        let mark = last.max(end_of_this_milli);
        conn.prepare_cached(
            "INSERT INTO _pluresdb_meta(key, value)
                 VALUES ('last_hlc', ?1), ('db_version', ?2), ('db_version_by', ?3)
             ON CONFLICT(key) DO UPDATE SET value = CASE key
                 WHEN 'db_version_by' THEN excluded.value ELSE max(value, excluded.value) END",
        )?
        .execute([mark as i64, seq as i64, self.token])?;
        Ok(())
    }

    /// Moves the clock past the high-water mark stored in the file (see
    /// [`persist_clock`](Self::persist_clock)). Other handles on the file (other processes)
    /// keep clocks of their own, and one may have stamped a write, or merged a peer's, later
    /// than this clock has reached: a write this handle makes after seeing theirs must be
    /// stamped after it, or it would lose to what it replaced wherever both are merged. Run
    /// when another connection has committed, before this handle's next write.
    pub(crate) fn observe_stored_clock(&self, conn: &Connection) -> Result<()> {
        if !self.has_tables {
            return Ok(());
        }
        if let Some(mark) = stored_clock_mark(conn)? {
            self.clock.observe(mark);
        }
        Ok(())
    }

    /// The index of `site` in `_pluresdb_sites`, adding it when new.
    pub(crate) fn site_index(&self, conn: &Connection, site: SiteId) -> Result<u32> {
        let mut state = self.state.lock();
        self.fresh_sites(conn, &mut state)?;
        if let Some(idx) = state.sites.by_site.get(&site) {
            return Ok(*idx);
        }
        // Another process may have added it since the list was read.
        self.read_sites_into(conn, &mut state)?;
        if let Some(idx) = state.sites.by_site.get(&site) {
            return Ok(*idx);
        }
        conn.prepare_cached("INSERT INTO _pluresdb_sites(site) VALUES (?1)")?
            .execute([site.as_bytes().as_slice()])?;
        let idx = u32::try_from(conn.last_insert_rowid())
            .map_err(|_| Error::internal("too many sites"))?;
        state.sites.by_site.insert(site, idx);
        state.sites.by_idx.insert(idx, site);
        Ok(idx)
    }

    /// The site with index `idx`.
    pub(crate) fn site_of(&self, conn: &Connection, idx: u32) -> Result<SiteId> {
        let mut state = self.state.lock();
        self.fresh_sites(conn, &mut state)?;
        if !state.sites.by_idx.contains_key(&idx) {
            // Added by another process since the list was read.
            self.read_sites_into(conn, &mut state)?;
        }
        state.sites.by_idx.get(&idx).copied().ok_or_else(|| {
            Error::new(
                crate::ErrorKind::Corrupt,
                format!("row clock names site #{idx}, which _pluresdb_sites does not have"),
            )
        })
    }

    fn fresh_sites(&self, conn: &Connection, state: &mut State) -> Result<()> {
        let rollbacks = self.tx.rollbacks.load(Ordering::Acquire);
        if state.sites.loaded && state.sites.loaded_at == rollbacks {
            return Ok(());
        }
        self.read_sites_into(conn, state)
    }

    /// Reads the site list from `_pluresdb_sites` as `conn` sees it now.
    fn read_sites_into(&self, conn: &Connection, state: &mut State) -> Result<()> {
        let rollbacks = self.tx.rollbacks.load(Ordering::Acquire);
        let mut dict = SiteDict {
            loaded_at: rollbacks,
            loaded: true,
            ..SiteDict::default()
        };
        for (idx, site) in read_sites(conn)? {
            dict.by_idx.insert(idx, site);
            dict.by_site.insert(site, idx);
        }
        state.sites = dict;
        Ok(())
    }

    /// Runs `f` with the replicated collections, reloaded first if the schema changed.
    pub(crate) fn with_collections<T>(
        &self,
        conn: &Connection,
        f: impl FnOnce(&Collections) -> Result<T>,
    ) -> Result<T> {
        let mut state = self.state.lock();
        if self
            .writer_auth
            .schema_changed
            .swap(false, Ordering::AcqRel)
        {
            if !conn.is_autocommit() {
                // A ROLLBACK TO may undo this schema change: the collections are read again
                // then, as after a table starts or stops syncing.
                let generation = self.tx.generation.load(Ordering::Acquire);
                self.collections_changed_in
                    .store(generation + 1, Ordering::Release);
            }
            self.load_collections(conn, &mut state, true)?;
        }
        f(&state.collections)
    }

    /// The collections as last loaded (no schema check; for readers), and what they were
    /// loaded from, to compare with a reader's snapshot.
    pub(crate) fn collections_cached(&self) -> (Vec<Arc<Collection>>, Option<ShapeStamp>) {
        let state = self.state.lock();
        (
            state.collections.iter().cloned().collect(),
            state.stamp.clone(),
        )
    }

    /// After registering or removing a collection in the open transaction: reloads them, and
    /// reloads them again after each transaction-control statement until the transaction ends
    /// (a `ROLLBACK TO` may undo the change).
    pub(crate) fn collections_changed(&self, conn: &Connection) -> Result<()> {
        let generation = self.tx.generation.load(Ordering::Acquire);
        self.collections_changed_in
            .store(generation + 1, Ordering::Release);
        self.reload_collections(conn)
    }

    /// A transaction-control statement ran (it may have rolled back to a savepoint).
    pub(crate) fn tx_control_ran(&self) {
        // Sites added since the savepoint are gone from the file (no rollback hook tells).
        self.state.lock().sites.loaded = false;
        let generation = self.tx.generation.load(Ordering::Acquire);
        if self.collections_changed_in.load(Ordering::Acquire) == generation + 1 {
            self.savepoint_undo.store(true, Ordering::Release);
        }
    }

    /// True when the collections must be read again before the next statement: after a
    /// rollback, or a transaction-control statement in a transaction that changed them, or
    /// when that transaction ended.
    pub(crate) fn collections_stale(&self) -> bool {
        if !self.has_tables {
            return false;
        }
        let changed_in = self.collections_changed_in.load(Ordering::Acquire);
        let generation = self.tx.generation.load(Ordering::Acquire);
        (changed_in != 0
            && (changed_in != generation + 1 || self.savepoint_undo.load(Ordering::Acquire)))
            || self.tx.rollbacks.load(Ordering::Acquire)
                != self.rollbacks_seen.load(Ordering::Acquire)
    }

    /// Reads the collections again if the file's shape changed since they were loaded (see
    /// [`collections_stale`](Self::collections_stale); also after another process's commit).
    pub(crate) fn refresh_collections(&self, conn: &Connection) -> Result<()> {
        if !self.has_tables {
            return Ok(());
        }
        let rollbacks = self.tx.rollbacks.load(Ordering::Acquire);
        let generation = self.tx.generation.load(Ordering::Acquire);
        // After another process's commit, equal stamps mean equal collections (most commits
        // change no shape; a reload costs a few queries per synced table). After a rollback,
        // what was loaded inside the transaction (column times it recorded) may be gone.
        let reshaped = |state: &State| -> Result<bool> {
            Ok(state.stamp.as_ref() != Some(&ShapeStamp::read(conn)?))
        };
        let mut state = self.state.lock();
        if self.collections_stale() || reshaped(&state)? {
            self.load_collections(conn, &mut state, false)?;
        }
        drop(state);
        self.rollbacks_seen.store(rollbacks, Ordering::Release);
        self.savepoint_undo.store(false, Ordering::Release);
        if self.collections_changed_in.load(Ordering::Acquire) != generation + 1 {
            self.collections_changed_in.store(0, Ordering::Release);
        }
        Ok(())
    }

    /// Reloads the collections now.
    pub(crate) fn reload_collections(&self, conn: &Connection) -> Result<()> {
        self.load_collections(conn, &mut self.state.lock(), false)
    }

    /// Reads the collections into `state`, and what the capture hook looks at from them.
    /// After `own_ddl` (a schema change by this connection's open transaction), notes the
    /// synced tables and columns it renamed or dropped, and refuses to commit what sync
    /// cannot handle; a reload for another process's changes judges none of them (that process
    /// did, and they may be several statements seen at once).
    fn load_collections(&self, conn: &Connection, state: &mut State, own_ddl: bool) -> Result<()> {
        // The stamp first: read apart (outside a transaction), another process's commit in
        // between leaves a stamp older than the collections, which only costs a reload when
        // changes are next read; the other way round, a newer stamp would hide stale ones.
        let stamp = ShapeStamp::read(conn)?;
        let before = std::mem::replace(&mut state.collections, load_recorded(conn, &self.clock)?);
        state.stamp = Some(stamp);
        if own_ddl && !conn.is_autocommit() {
            self.judge_own_ddl(&before, &state.collections);
        }
        super::missed::resync_if_arrived(conn, &state.collections)?;
        *self.tables.write() = state.collections.tables();
        self.tables_synced
            .store(state.collections.has_tables(), Ordering::Release);
        Ok(())
    }

    /// What the open transaction's own schema change did, from the collections `before` it to
    /// those `now`: synced tables and columns it renamed or dropped are noted (see
    /// [`PendingDdl`]), and what sync cannot handle makes the transaction unable to commit.
    fn judge_own_ddl(&self, before: &Collections, now: &Collections) {
        let generation = self.tx.generation.load(Ordering::Acquire);
        let mut pending = self.pending_ddl.lock();
        if pending.generation != generation {
            *pending = PendingDdl {
                generation,
                ..PendingDdl::default()
            };
        }
        pending.vanished.extend(now.vanished_since(before));
        pending
            .renamed_columns
            .extend(now.renamed_columns_since(before));
        drop(pending);
        // A column sync cannot name (ALTER TABLE ... ADD or RENAME COLUMN).
        let long_before = before.unsyncable_columns();
        let long = now.unsyncable_columns();
        if let Some((table, column)) = long.iter().find(|c| !long_before.contains(c)) {
            self.refuse(format!(
                "table {table:?} syncs, and sync names columns of up to {} bytes; column {:?}... \
                 is {} bytes: use a shorter name",
                super::clock::MAX_FIELD_BYTES,
                column.chars().take(20).collect::<String>(),
                column.len()
            ));
        }
        // A UNIQUE index: merged rows could break it, and a merge that does fails on every
        // sync after, holding back every later change.
        let unique_before = before.unique_indexes();
        let unique = now.unique_indexes();
        if let Some((id, name)) = unique.iter().find(|u| !unique_before.contains(u))
            && let Some(coll) = now.by_id(*id)
        {
            let index = (coll.unique_indexes.iter())
                .find(|(n, _)| n == name)
                .map_or(name.as_str(), |(_, described)| described.as_str());
            self.refuse(format!(
                "table {:?} syncs, and {index} could be broken by rows merged from \
                 other devices (each device checks it only where it writes), which would stop \
                 every sync after: leave the index out (a plain index), or make those columns \
                 part of the primary key",
                coll.name
            ));
        }
    }

    /// This site's stamp for a write made now in the open transaction.
    pub(crate) fn local_stamp(&self, conn: &Connection, hlc: Hlc) -> Result<Stamp> {
        let seq = self.tx_seq(conn)?;
        let site = self.site_index(conn, self.site)?;
        Ok(Stamp {
            hlc: hlc.as_u64(),
            site,
            seq,
        })
    }
}

/// The collections, once the columns that appeared in their tables are recorded (on a
/// writable connection).
fn load_recorded(conn: &Connection, clock: &HybridClock) -> Result<Collections> {
    let mut collections = Collections::load(conn)?;
    if super::added_columns::record(conn, &collections, || clock.now().as_u64())? {
        collections = Collections::load(conn)?;
    }
    // Another process on the file may have recorded a column at a time of its own clock:
    // this one's writes from now on, which may write the column, must come after it.
    clock.observe(Hlc::from_u64(collections.newest_column()));
    Ok(collections)
}

/// The clock's high-water mark stored in the file (`last_hlc`), if there is one; a value of
/// another type reads as none.
fn stored_clock_mark(conn: &Connection) -> Result<Option<Hlc>> {
    let mark = conn
        .prepare_cached("SELECT value FROM _pluresdb_meta WHERE key = 'last_hlc'")?
        .query_row([], |r| Ok(r.get::<_, i64>(0).ok()))
        .optional()?
        .flatten();
    Ok(mark.map(|h| Hlc::from_u64(h as u64)))
}

/// The sites of `_pluresdb_sites` as `conn` sees them, by their small index.
pub(crate) fn read_sites(conn: &Connection) -> Result<Vec<(u32, SiteId)>> {
    let mut stmt = conn.prepare_cached("SELECT idx, site FROM _pluresdb_sites")?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let idx: i64 = row.get(0)?;
        let bytes: Vec<u8> = row.get(1)?;
        if let (Ok(idx), Some(site)) = (u32::try_from(idx), SiteId::from_slice(&bytes)) {
            out.push((idx, site));
        }
    }
    Ok(out)
}
