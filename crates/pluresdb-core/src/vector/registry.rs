//! The in-memory indexes of one database, kept consistent with the committed data.
//!
//! Each index is loaded on first search (from its saved graph, or rebuilt from the table) and
//! then caught up from `_pluresdb_index_log`, which triggers fill in the same transaction as
//! the writes. Only committed log entries are applied to the shared index: a search inside a
//! write transaction sees its own uncommitted vectors through an exact "overlay" instead, so a
//! rollback never leaves anything behind.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use parking_lot::{Mutex, RwLock, RwLockUpgradableReadGuard};
use pluresdb_vector::{ExactSearch, Filter, Hnsw, MAX_EF, Neighbor};
use rusqlite::{Connection, OptionalExtension};

use super::defs::{self, IndexDef};
use super::embed::Embedder;
use super::parse::parse_vector;
use crate::error::{Error, Result};
use crate::replication::quote;

/// Saved graphs are stored in chunks of this many bytes.
const CHUNK: usize = 4 << 20;
/// Labels compared with the table after loading a saved graph.
const VERIFY_SAMPLES: usize = 64;
/// Graph searches one query may run while its results keep naming rows the table no longer
/// has; after that the table is scanned instead.
const STALE_ROUNDS: usize = 4;

/// What a search asks for.
pub(crate) struct SearchRequest<'a> {
    pub(crate) table: &'a str,
    pub(crate) column: &'a str,
    pub(crate) query: Query,
    pub(crate) k: usize,
    pub(crate) options: &'a SearchOptions,
}

/// The query: a vector, or text to embed.
pub(crate) enum Query {
    Vector(Vec<f32>),
    Text(String),
}

/// Options of one search (the `options` JSON of `vector_search`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SearchOptions {
    /// Search breadth (default: the index's `ef_search`); at most the number of stored vectors
    /// is used.
    pub ef: Option<usize>,
    /// Only rows of the indexed table matching this SQL condition.
    pub filter: Option<String>,
    /// For nodes: only nodes of this type.
    pub node_type: Option<String>,
    /// Compare against every vector instead of walking the graph.
    pub exact: bool,
    /// A text query is text to embed even when it looks like a JSON array (`"[draft] notes"`);
    /// by default text starting with `[` is read as a vector. Set by the API for
    /// [`VectorQuery::Text`](crate::VectorQuery::Text); `"text": true` in SQL.
    pub text_query: bool,
}

impl SearchOptions {
    /// Reads `{"ef": 100, "filter": "year > 2020", "type": "Person", "exact": true,
    /// "text": true}`.
    pub(crate) fn from_json(text: &str) -> Result<SearchOptions> {
        let bad = |why: String| Error::invalid(format!("vector_search options: {why}"));
        if text.trim().is_empty() {
            return Ok(SearchOptions::default());
        }
        let parsed: serde_json::Value =
            serde_json::from_str(text).map_err(|e| bad(format!("not JSON ({e})")))?;
        let obj = parsed
            .as_object()
            .ok_or_else(|| bad("must be a JSON object".into()))?;
        let mut out = SearchOptions::default();
        for (key, value) in obj {
            let text = || {
                value
                    .as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| bad(format!("{key} must be a string")))
            };
            match key.as_str() {
                "ef" | "ef_search" => {
                    let ef = value
                        .as_u64()
                        .filter(|&e| e > 0)
                        .ok_or_else(|| bad("ef must be a positive integer".into()))?;
                    if ef > MAX_EF as u64 {
                        return Err(bad(format!(
                            "ef is {ef}; use a value from 1 to {MAX_EF} (or leave it out \
                             for the index's ef_search)"
                        )));
                    }
                    out.ef = Some(ef as usize);
                }
                "filter" | "where" => out.filter = Some(text()?),
                "type" => out.node_type = Some(text()?),
                "exact" => {
                    out.exact = value
                        .as_bool()
                        .ok_or_else(|| bad("exact must be true or false".into()))?
                }
                "text" => {
                    out.text_query = value
                        .as_bool()
                        .ok_or_else(|| bad("text must be true or false".into()))?
                }
                other => {
                    return Err(bad(format!(
                        "unknown option {other:?}; use ef, filter, type or exact"
                    )));
                }
            }
        }
        Ok(out)
    }
}

/// One result: the row id (for nodes: the node's row) and the distance.
pub(crate) type Hit = Neighbor;

/// How an index was last loaded, for reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoadSource {
    /// Read from the graph saved in the database file.
    Saved,
    /// Built from the table: there was no saved graph yet.
    Built,
    /// Built from the table because the saved graph could not be used; says why.
    Rebuilt(String),
}

pub(crate) struct Loaded {
    pub(crate) def: IndexDef,
    pub(crate) hnsw: Hnsw,
    /// Log entries up to here are applied.
    pub(crate) applied_seq: i64,
    /// Entries applied since the graph was last saved.
    pub(crate) unsaved: usize,
    pub(crate) source: LoadSource,
}

#[derive(Default)]
pub(crate) struct LiveIndex {
    pub(crate) state: RwLock<Option<Loaded>>,
    /// The file's `schema_version` when the definition was last found to fit its table
    /// ([`defs::check_current`]); 0 = not checked. Only a schema change can make it stale.
    checked_at: AtomicI64,
}

/// The indexes of one database and its embedding model.
pub(crate) struct VectorRegistry {
    live: Mutex<HashMap<i64, Arc<LiveIndex>>>,
    embedder: RwLock<Option<Arc<dyn Embedder>>>,
    /// File databases save graphs; in-memory ones don't.
    pub(crate) persistent: bool,
}

impl VectorRegistry {
    pub(crate) fn new(persistent: bool) -> VectorRegistry {
        VectorRegistry {
            live: Mutex::new(HashMap::new()),
            embedder: RwLock::new(None),
            persistent,
        }
    }

    pub(crate) fn set_embedder(&self, embedder: Option<Arc<dyn Embedder>>) {
        *self.embedder.write() = embedder;
    }

    pub(crate) fn embedder(&self) -> Result<Arc<dyn Embedder>> {
        self.embedder.read().clone().ok_or_else(|| {
            Error::invalid(
                "no embedding model is configured: set PLURESDB_MODEL_DIR to a directory with \
                 all-MiniLM-L6-v2's config.json, tokenizer.json and model.safetensors (the CLI \
                 also takes --model DIR), or call db.set_embedder(...) in code",
            )
        })
    }

    /// Embeds one text.
    pub(crate) fn embed(&self, text: &str) -> Result<Vec<f32>> {
        let embedder = self.embedder()?;
        embedder.embed_one(text).map_err(|e| {
            Error::invalid(format!(
                "embedding with {} failed: {e}",
                embedder.model_name()
            ))
        })
    }

    pub(crate) fn live(&self, id: i64) -> Arc<LiveIndex> {
        self.live.lock().entry(id).or_default().clone()
    }

    pub(crate) fn forget(&self, id: i64) {
        self.live.lock().remove(&id);
    }

    /// Frees the in-memory state of indexes whose definition is gone (replaced when stale, or
    /// dropped by another handle on the file). Ids only grow: one up to the highest `conn`
    /// has seen given out that it does not find was dropped, while a higher one may have been
    /// made since its snapshot began and is kept.
    pub(crate) fn forget_missing(&self, conn: &Connection) -> Result<()> {
        if !defs::tables_exist(conn)? {
            return Ok(());
        }
        let ids: HashSet<i64> = conn
            .prepare_cached("SELECT id FROM _pluresdb_vector_indexes")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let given_out: i64 = conn
            .prepare_cached(
                "SELECT coalesce(max(seq), 0) FROM sqlite_sequence
                 WHERE name = '_pluresdb_vector_indexes'",
            )?
            .query_row([], |r| r.get(0))?;
        self.live
            .lock()
            .retain(|id, _| *id > given_out || ids.contains(id));
        Ok(())
    }

    /// The ids of the indexes with in-memory state.
    #[cfg(test)]
    pub(crate) fn live_ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.live.lock().keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Runs a search on `conn` (the connection running the SQL statement).
    pub(crate) fn search(&self, conn: &Connection, req: &SearchRequest<'_>) -> Result<Vec<Hit>> {
        if req.k == 0 {
            return Err(Error::invalid("k must be at least 1"));
        }
        let def = defs::find_def(conn, req.table, req.column)?;
        let live = self.live(def.id);
        // Whether the index still fits its table takes two schema lookups: done again only
        // after a schema change.
        let schema: i64 = conn
            .prepare_cached("PRAGMA schema_version")?
            .query_row([], |r| r.get(0))?;
        let schema_changed = live.checked_at.load(Ordering::Acquire) != schema;
        if schema_changed && let Err(e) = defs::check_current(conn, &def) {
            // Its table or column is gone: nothing in memory is worth keeping.
            self.forget(def.id);
            return Err(e);
        }
        let query = match &req.query {
            Query::Vector(v) => v.clone(),
            Query::Text(t) => self.embed(t)?,
        };
        super::parse::check_finite(&query)?;
        let Some(dim) = def.dim else {
            return Ok(Vec::new());
        };
        if query.len() != dim {
            return Err(Error::invalid(format!(
                "the query vector has {} dimensions but the index on {} has {dim}; use vectors \
                 from the same model",
                query.len(),
                def.name()
            )));
        }
        let allowed = allowed_rows(conn, &def, req.options)?;
        if req.options.exact {
            return exact_scan(conn, &def, &query, req.k, allowed.as_ref());
        }
        let in_write_tx =
            conn.transaction_state(None::<&str>)? == rusqlite::TransactionState::Write;
        if in_write_tx {
            // The schema change is checked for again by the next search outside it.
            return overlay_search(conn, &def, &live, &query, req, allowed.as_ref());
        }
        if schema_changed {
            // Dropping an index changes the schema: another handle may have dropped one.
            self.forget_missing(conn)?;
            recheck_rows(conn, &def, &live)?;
            live.checked_at.store(schema, Ordering::Release);
        }
        let state = live.state.upgradable_read();
        let fresh = match &*state {
            Some(l) if usable(l, &def) => !has_new_entries(conn, &def, l.applied_seq)?,
            _ => false,
        };
        let state = if fresh {
            RwLockUpgradableReadGuard::downgrade(state)
        } else {
            let mut state = RwLockUpgradableReadGuard::upgrade(state);
            ensure_current(conn, &def, &mut state)?;
            parking_lot::RwLockWriteGuard::downgrade(state)
        };
        let loaded = state.as_ref().expect("loaded above");
        let (hits, stale) = checked_search(
            conn,
            &def,
            loaded,
            &query,
            req,
            allowed.as_ref(),
            HashSet::new(),
        )?;
        drop(state);
        if !stale.is_empty() {
            repair(conn, &def, &live, &stale, hits.is_none())?;
        }
        match hits {
            Some(hits) => Ok(hits),
            None => exact_scan(conn, &def, &query, req.k, allowed.as_ref()),
        }
    }

    /// Writes every loaded index's graph into the file, so the next open needs no rebuild.
    /// `conn` must be the writer, outside any transaction. Returns how many were saved.
    pub(crate) fn save_all(&self, conn: &Connection, only_if_behind: usize) -> Result<usize> {
        if !self.persistent || !defs::tables_exist(conn)? {
            return Ok(0);
        }
        let mut saved = 0;
        for def in defs::all(conn)? {
            let Some(live) = self.live.lock().get(&def.id).cloned() else {
                continue;
            };
            let mut state = live.state.write();
            if state.is_none() {
                continue;
            }
            ensure_current(conn, &def, &mut state)?;
            let loaded = state.as_mut().expect("loaded above");
            if loaded.unsaved < only_if_behind.max(1) && def.snapshot_seq == loaded.applied_seq {
                continue;
            }
            if save_graph(conn, loaded)? {
                saved += 1;
            }
        }
        Ok(saved)
    }

    /// True when some loaded index has at least `threshold` changes not saved yet.
    pub(crate) fn needs_save(&self, threshold: usize) -> bool {
        self.persistent
            && self.live.lock().values().any(|l| {
                l.state
                    .try_read()
                    .is_some_and(|s| s.as_ref().is_some_and(|l| l.unsaved >= threshold))
            })
    }

    /// Reports of the loaded indexes: size and how each was loaded.
    pub(crate) fn status(&self, id: i64) -> Option<(usize, usize, LoadSource, usize)> {
        let live = self.live.lock().get(&id).cloned()?;
        let state = live.state.read();
        state.as_ref().map(|l| {
            (
                l.hnsw.len(),
                l.hnsw.memory_bytes(),
                l.source.clone(),
                l.unsaved,
            )
        })
    }

    /// Loads an index now (instead of at its first search); `conn` must not be in a write
    /// transaction.
    pub(crate) fn load(&self, conn: &Connection, def: &IndexDef) -> Result<()> {
        let live = self.live(def.id);
        let mut state = live.state.write();
        ensure_current(conn, def, &mut state)
    }
}

/// Definitions that build the same graph (only the saved position differs).
fn same_shape(a: &IndexDef, b: &IndexDef) -> bool {
    a.id == b.id && a.metric == b.metric && a.dim == b.dim && a.params == b.params
}

/// Whether `loaded` can be caught up to `def` from the log. Saving a graph deletes the log
/// entries up to the saved position, so once another handle on the file (another process) has
/// saved past what `loaded` applied, the entries in between are gone and it must be loaded
/// again.
fn usable(loaded: &Loaded, def: &IndexDef) -> bool {
    same_shape(&loaded.def, def) && loaded.applied_seq >= def.snapshot_seq
}

fn has_new_entries(conn: &Connection, def: &IndexDef, after: i64) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM _pluresdb_index_log WHERE seq > ?1 AND idx = ?2 LIMIT 1")?
        .exists([after, def.id])?)
}

/// Loads (or reloads, if the definition changed) and catches up with the log.
fn ensure_current(conn: &Connection, def: &IndexDef, state: &mut Option<Loaded>) -> Result<()> {
    if !state.as_ref().is_some_and(|l| usable(l, def)) {
        *state = Some(load(conn, def)?);
    }
    let loaded = state.as_mut().expect("loaded above");
    loaded.def.snapshot_seq = def.snapshot_seq;
    catch_up(conn, loaded)
}

fn new_index(def: &IndexDef) -> Result<Hnsw> {
    Hnsw::new(def.dim.unwrap_or(1), def.metric, def.params)
        .map_err(|e| Error::invalid(e.to_string()))
}

/// The saved graph if it is usable, else a build from the table.
fn load(conn: &Connection, def: &IndexDef) -> Result<Loaded> {
    let saved = read_saved(conn, def)?;
    let reason = match saved {
        None => None,
        Some(Err(why)) => Some(why),
        Some(Ok(hnsw)) => {
            let mut loaded = Loaded {
                def: def.clone(),
                hnsw,
                applied_seq: def.snapshot_seq,
                unsaved: 0,
                source: LoadSource::Saved,
            };
            catch_up(conn, &mut loaded)?;
            match verify(conn, &loaded) {
                Ok(()) => return Ok(loaded),
                Err(why) => Some(why),
            }
        }
    };
    build(conn, def, reason)
}

fn read_saved(
    conn: &Connection,
    def: &IndexDef,
) -> Result<Option<std::result::Result<Hnsw, String>>> {
    let mut bytes = Vec::new();
    let mut stmt =
        conn.prepare("SELECT data FROM _pluresdb_vector_snapshots WHERE idx = ?1 ORDER BY chunk")?;
    let mut rows = stmt.query([def.id])?;
    while let Some(row) = rows.next()? {
        bytes.extend_from_slice(row.get_ref(0)?.as_blob().unwrap_or_default());
    }
    if bytes.is_empty() {
        return Ok((def.snapshot_seq > 0).then(|| Err("its saved graph is missing".into())));
    }
    Ok(Some(match Hnsw::load(&bytes) {
        Err(e) => Err(e.to_string()),
        Ok(h)
            if h.dim() != def.dim.unwrap_or(0)
                || h.metric() != def.metric
                || h.params().m != def.params.m =>
        {
            Err("the saved graph was built with other settings".into())
        }
        Ok(mut h) => {
            h.set_ef_search(def.params.ef_search);
            Ok(h)
        }
    }))
}

/// After a schema change (VACUUM is one): a loaded graph over a table whose rows VACUUM may
/// renumber is compared with every row, and built again if they differ.
fn recheck_rows(conn: &Connection, def: &IndexDef, live: &LiveIndex) -> Result<()> {
    if defs::rowids_are_stable(conn, def)? {
        return Ok(());
    }
    let mut state = live.state.write();
    let Some(loaded) = state.as_mut().filter(|l| usable(l, def)) else {
        return Ok(());
    };
    catch_up(conn, loaded)?;
    if let Err(why) = verify(conn, loaded) {
        *state = Some(build(conn, def, Some(why))?);
    }
    Ok(())
}

/// Compares the graph with the table: every row when the table's row ids are not an INTEGER
/// PRIMARY KEY (VACUUM may have renumbered any of them), else a sample.
fn verify(conn: &Connection, loaded: &Loaded) -> std::result::Result<(), String> {
    let mismatch = "the saved graph does not match the table (rows were renumbered, e.g. by \
                    VACUUM, or changed without PluresDB)";
    match defs::rowids_are_stable(conn, &loaded.def) {
        Ok(true) => {}
        Ok(false) => {
            return match holds_every_row(conn, loaded) {
                Ok(true) => Ok(()),
                Ok(false) => Err(mismatch.into()),
                Err(e) => Err(e.to_string()),
            };
        }
        Err(e) => return Err(e.to_string()),
    }
    let labels: Vec<i64> = loaded.hnsw.labels().collect();
    let step = (labels.len() / VERIFY_SAMPLES).max(1);
    let sql = loaded.def.row_sql();
    let mut stmt = conn.prepare(&sql).map_err(|e| e.to_string())?;
    for &label in labels.iter().step_by(step) {
        let row = row_vector(&mut stmt, label).map_err(|e| e.to_string())?;
        if !row.is_some_and(|v| holds(&loaded.hnsw, label, &v)) {
            return Err(mismatch.into());
        }
    }
    Ok(())
}

/// Whether the graph holds a vector under the row id of every row that has one, and under no
/// other. VACUUM renumbers rows keeping their order, and a renumbering that moved any row
/// with a vector changes that set of row ids (an order-keeping map of a set onto itself moves
/// nothing), so the vectors themselves are read only for rows the graph lacks (a row whose
/// vector does not fit the index is not held; see `build`).
fn holds_every_row(conn: &Connection, loaded: &Loaded) -> Result<bool> {
    let mut stmt = conn.prepare(&loaded.def.scan_sql())?;
    let mut rows = stmt.query([])?;
    let mut held = 0;
    while let Some(row) = rows.next()? {
        if loaded.hnsw.contains(row.get(0)?) {
            held += 1;
            continue;
        }
        let fits =
            matches!(parse_vector(row.get_ref(1)?), Ok(Some(v)) if loaded.hnsw.prepare(&v).is_ok());
        if fits {
            return Ok(false);
        }
    }
    Ok(held == loaded.hnsw.len())
}

/// Whether `hnsw` holds `v` (a row's vector as read from the table) under `label`.
fn holds(hnsw: &Hnsw, label: i64, v: &[f32]) -> bool {
    match (hnsw.prepare(v), hnsw.vector(label)) {
        (Ok(v), Some(stored)) => v.iter().zip(stored).all(|(a, b)| (a - b).abs() <= 1e-5),
        _ => false,
    }
}

/// The vector of one row (`None`: no such row, or no valid vector), read with `def.row_sql()`.
fn row_vector(stmt: &mut rusqlite::Statement<'_>, rowid: i64) -> Result<Option<Vec<f32>>> {
    Ok(stmt
        .query_row([rowid], |r| Ok(parse_vector(r.get_ref(0)?).ok().flatten()))
        .optional()?
        .flatten())
}

/// Builds the index from every row of the table.
fn build(conn: &Connection, def: &IndexDef, reason: Option<String>) -> Result<Loaded> {
    let mut hnsw = new_index(def)?;
    // The log position first: the scan below (same read transaction) includes everything up to
    // it, and entries after it are applied by the next catch-up.
    let applied_seq: i64 = conn
        .prepare_cached("SELECT coalesce(max(seq), 0) FROM _pluresdb_index_log")?
        .query_row([], |r| r.get(0))?;
    let mut stmt = conn.prepare(&def.scan_sql())?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let rowid: i64 = row.get(0)?;
        if let Ok(Some(v)) = parse_vector(row.get_ref(1)?) {
            // Rows that do not fit the index (only possible if written around the triggers)
            // are left out rather than failing every search.
            let _ = hnsw.insert(rowid, &v);
        }
    }
    Ok(Loaded {
        def: def.clone(),
        hnsw,
        applied_seq,
        unsaved: usize::MAX / 2,
        source: reason.map_or(LoadSource::Built, LoadSource::Rebuilt),
    })
}

/// Applies committed log entries after `applied_seq`.
fn catch_up(conn: &Connection, loaded: &mut Loaded) -> Result<()> {
    let mut changed: Vec<i64> = Vec::new();
    let mut last = loaded.applied_seq;
    {
        let mut stmt = conn.prepare_cached(
            "SELECT seq, rid FROM _pluresdb_index_log WHERE seq > ?1 AND idx = ?2 ORDER BY seq",
        )?;
        let mut rows = stmt.query([loaded.applied_seq, loaded.def.id])?;
        while let Some(row) = rows.next()? {
            last = row.get(0)?;
            changed.push(row.get(1)?);
        }
    }
    if changed.is_empty() {
        return Ok(());
    }
    changed.sort_unstable();
    changed.dedup();
    let sql = loaded.def.row_sql();
    let mut stmt = conn.prepare_cached(&sql)?;
    for &rid in &changed {
        apply_row(&mut loaded.hnsw, &mut stmt, rid)?;
    }
    loaded.applied_seq = last;
    loaded.unsaved = loaded.unsaved.saturating_add(changed.len());
    Ok(())
}

/// Makes the graph hold row `rid` as the table has it (`stmt` from `def.row_sql()`): its
/// vector, or nothing when the row is gone or has no valid vector.
fn apply_row(hnsw: &mut Hnsw, stmt: &mut rusqlite::Statement<'_>, rid: i64) -> Result<()> {
    match row_vector(stmt, rid)? {
        Some(v) if hnsw.insert(rid, &v).is_ok() => {}
        _ => {
            hnsw.remove(rid);
        }
    }
    Ok(())
}

/// Brings the labels a search found stale up to date in the shared graph, or when the search
/// gave up on the graph (`rebuild`: so many rows were removed behind the log's back) builds it
/// again; only when `conn` sees exactly the data the graph was caught up to (a reader on an
/// older snapshot may not).
fn repair(
    conn: &Connection,
    def: &IndexDef,
    live: &LiveIndex,
    stale: &[i64],
    rebuild: bool,
) -> Result<()> {
    let seen: i64 = conn
        .prepare_cached("SELECT coalesce(max(seq), 0) FROM _pluresdb_index_log")?
        .query_row([], |r| r.get(0))?;
    let mut state = live.state.write();
    let current = match state.as_ref().filter(|l| usable(l, def)) {
        Some(l) => l.applied_seq <= seen && !has_new_entries(conn, def, l.applied_seq)?,
        None => false,
    };
    if !current {
        return Ok(());
    }
    if rebuild {
        let why = "searches kept finding rows the graph holds gone from the table (removed by \
                   INSERT OR REPLACE, or changed without PluresDB)";
        *state = Some(build(conn, def, Some(why.into()))?);
        return Ok(());
    }
    let loaded = state.as_mut().expect("checked above");
    let sql = def.row_sql();
    let mut stmt = conn.prepare_cached(&sql)?;
    for &rid in stale {
        apply_row(&mut loaded.hnsw, &mut stmt, rid)?;
    }
    loaded.unsaved = loaded.unsaved.saturating_add(stale.len());
    Ok(())
}

/// Saves `loaded`'s graph and deletes the log entries it includes; returns false (saving
/// nothing) when another handle has saved a newer one.
fn save_graph(conn: &Connection, loaded: &mut Loaded) -> Result<bool> {
    let bytes = loaded.hnsw.save();
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let result = (|| -> Result<bool> {
        let id = loaded.def.id;
        // Another handle may have saved a newer graph (and deleted the log entries before it)
        // since this one caught up: keep that one.
        let saved_at: Option<i64> = conn
            .query_row(
                "SELECT snapshot_seq FROM _pluresdb_vector_indexes WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()?;
        if saved_at.is_none_or(|at| at > loaded.applied_seq) {
            return Ok(false);
        }
        conn.execute(
            "DELETE FROM _pluresdb_vector_snapshots WHERE idx = ?1",
            [id],
        )?;
        let mut insert = conn.prepare_cached(
            "INSERT INTO _pluresdb_vector_snapshots(idx, chunk, data) VALUES (?1, ?2, ?3)",
        )?;
        for (i, chunk) in bytes.chunks(CHUNK).enumerate() {
            insert.execute(rusqlite::params![id, i as i64, chunk])?;
        }
        conn.execute(
            "UPDATE _pluresdb_vector_indexes SET snapshot_seq = ?1 WHERE id = ?2",
            [loaded.applied_seq, id],
        )?;
        crate::index_log::delete(conn, id, loaded.applied_seq)?;
        Ok(true)
    })();
    match result {
        Ok(true) => {
            conn.execute_batch("COMMIT")?;
            loaded.unsaved = 0;
            loaded.def.snapshot_seq = loaded.applied_seq;
            Ok(true)
        }
        Ok(false) => {
            conn.execute_batch("ROLLBACK")?;
            Ok(false)
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// Row ids allowed by the options' filter and node type (`None`: all).
fn allowed_rows(
    conn: &Connection,
    def: &IndexDef,
    opts: &SearchOptions,
) -> Result<Option<HashSet<i64>>> {
    if opts.filter.is_none() && opts.node_type.is_none() {
        return Ok(None);
    }
    if opts.node_type.is_some() && !def.is_nodes() {
        return Err(Error::invalid(
            "the type option only applies to nodes; use filter for tables",
        ));
    }
    let mut sql = format!("SELECT rowid FROM {} WHERE 1", quote(&def.table));
    if let Some(f) = &opts.filter {
        sql.push_str(&format!(" AND ({f})"));
    }
    if opts.node_type.is_some() {
        sql.push_str(" AND type = ?1 AND cl % 2 = 1");
    }
    let mut stmt = conn
        .prepare(&sql)
        .map_err(|e| Error::from(e).context("in the vector_search filter"))?;
    if !stmt.readonly() {
        return Err(Error::invalid("the vector_search filter must only read"));
    }
    let rows = match &opts.node_type {
        Some(t) => stmt
            .query_map([t], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>(),
        None => stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>(),
    };
    Ok(Some(rows.map_err(|e| {
        Error::from(e).context("in the vector_search filter")
    })?))
}

/// Exact search by reading every (allowed) row on `conn`.
fn exact_scan(
    conn: &Connection,
    def: &IndexDef,
    query: &[f32],
    k: usize,
    allowed: Option<&HashSet<i64>>,
) -> Result<Vec<Hit>> {
    let mut exact =
        ExactSearch::new(def.metric, query, k).map_err(|e| Error::invalid(e.to_string()))?;
    let mut stmt = conn.prepare(&def.scan_sql())?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let rowid: i64 = row.get(0)?;
        if allowed.is_some_and(|a| !a.contains(&rowid)) {
            continue;
        }
        if let Ok(Some(v)) = parse_vector(row.get_ref(1)?) {
            let _ = exact.offer(rowid, &v);
        }
    }
    Ok(exact.finish())
}

/// A search inside a write transaction: the shared index (committed data) minus the rows this
/// transaction's log touched, which are ranked exactly as they are now.
fn overlay_search(
    conn: &Connection,
    def: &IndexDef,
    live: &LiveIndex,
    query: &[f32],
    req: &SearchRequest<'_>,
    allowed: Option<&HashSet<i64>>,
) -> Result<Vec<Hit>> {
    let state = live.state.read();
    let Some(loaded) = state.as_ref().filter(|l| usable(l, def)) else {
        drop(state);
        return exact_scan(conn, def, query, req.k, allowed);
    };
    let mut pending: HashSet<i64> = HashSet::new();
    {
        let mut stmt =
            conn.prepare_cached("SELECT rid FROM _pluresdb_index_log WHERE seq > ?1 AND idx = ?2")?;
        let mut rows = stmt.query([loaded.applied_seq, def.id])?;
        while let Some(row) = rows.next()? {
            pending.insert(row.get(0)?);
        }
    }
    // Stale labels are left for a search outside the transaction to repair: what this one
    // sees may still roll back.
    match checked_search(conn, def, loaded, query, req, allowed, pending)? {
        (Some(hits), _) => Ok(hits),
        (None, _) => {
            drop(state);
            exact_scan(conn, def, query, req.k, allowed)
        }
    }
}

/// The `k` nearest to `query` in `loaded`'s graph, as checked against the rows `conn` sees.
/// The rows in `overrides` (a transaction's own writes) are read from the table and ranked
/// exactly instead of from the graph, and so is every row the graph returns with a vector the
/// table no longer has: rows deleted by `INSERT OR REPLACE` or `UPDATE OR REPLACE` fire no
/// delete trigger (SQLite's rule without recursive triggers), so the log never names them.
/// Returns the hits (`None` when the graph is so far behind the table that scanning the table
/// is quicker) and those stale labels.
fn checked_search(
    conn: &Connection,
    def: &IndexDef,
    loaded: &Loaded,
    query: &[f32],
    req: &SearchRequest<'_>,
    allowed: Option<&HashSet<i64>>,
    mut overrides: HashSet<i64>,
) -> Result<(Option<Vec<Hit>>, Vec<i64>)> {
    let sql = def.row_sql();
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut stale = Vec::new();
    let mut rounds = 0;
    let mut hits = loop {
        let keep =
            |label: i64| !overrides.contains(&label) && allowed.is_none_or(|a| a.contains(&label));
        let filter = if overrides.is_empty() {
            allowed.map(Filter::Labels)
        } else {
            Some(Filter::Predicate {
                keep: &keep,
                estimate: allowed.map(|a| a.len()),
            })
        };
        let hits = loaded
            .hnsw
            .search(query, req.k, req.options.ef, filter)
            .map_err(|e| Error::invalid(e.to_string()))?;
        let found = stale.len();
        for hit in &hits {
            let row = row_vector(&mut stmt, hit.label)?;
            if !row.is_some_and(|v| holds(&loaded.hnsw, hit.label, &v)) {
                stale.push(hit.label);
            }
        }
        if stale.len() == found {
            break hits;
        }
        rounds += 1;
        if rounds == STALE_ROUNDS {
            return Ok((None, stale));
        }
        overrides.extend(&stale[found..]);
    };
    if overrides.is_empty() {
        return Ok((Some(hits), stale));
    }
    let mut exact =
        ExactSearch::new(def.metric, query, req.k).map_err(|e| Error::invalid(e.to_string()))?;
    for &rid in &overrides {
        if allowed.is_some_and(|a| !a.contains(&rid)) {
            continue;
        }
        if let Some(v) = row_vector(&mut stmt, rid)? {
            let _ = exact.offer(rid, &v);
        }
    }
    hits.extend(exact.finish());
    hits.sort_by(|a, b| a.distance.total_cmp(&b.distance));
    hits.truncate(req.k);
    Ok((Some(hits), stale))
}
