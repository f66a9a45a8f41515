//! Reading change sets: every field stored after a given `db_version`, from one consistent
//! snapshot, with the values as they are now.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value as Json;

use pluresdb_crdt::{Hlc, SiteId, Version, is_alive};

use super::clock::{RowClock, Stamp};
use super::collections::{Collection, Kind, quote};
use super::keys;
use super::state::read_sites;
use super::{ChangeRecord, EDGES, NODES};
use crate::database::Database;
use crate::error::{Error, Result};
use crate::value::Value;

/// How often reading changes folds the log and reads again, before it reads holding the write
/// lock.
const FOLD_ATTEMPTS: usize = 5;

#[cfg(test)]
thread_local! {
    /// Makes [`Database::for_each_change`] read holding the write lock at once, as when
    /// other writers keep logging changes (tests only).
    static READ_LOCKED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The changes a peer is missing, and how far they go.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChangeSet {
    /// The site that produced the set.
    pub site: SiteId,
    /// The producer's `db_version` when the set was read: after applying it, a peer has every
    /// change up to here and asks for "since" this next time.
    pub db_version: u64,
    /// The changes.
    pub changes: Vec<ChangeRecord>,
}

impl Database {
    /// Every change stored here after `since` (this site's `db_version`), except those made by
    /// `exclude` (the peer asking, which has them already). Loads them all; see
    /// [`for_each_change`](Self::for_each_change) to stream large sets.
    pub fn changes_since(&self, since: u64, exclude: Option<SiteId>) -> Result<ChangeSet> {
        let mut changes = Vec::new();
        let db_version = self.for_each_change(since, exclude, 4096, |batch| {
            changes.extend_from_slice(batch);
            Ok(())
        })?;
        Ok(ChangeSet {
            site: self.site_id(),
            db_version,
            changes,
        })
    }

    /// Streams the changes after `since` to `sink` in batches of up to `batch` changes, read from
    /// one snapshot; returns this database's `db_version` in that snapshot.
    ///
    /// A peer that is nearly up to date (live sync) gets its changes by looking up the rows
    /// written lately; others by a scan of the clock records. `sink` should not use this
    /// database: the snapshot holds a connection. (When the snapshot would hold up writers,
    /// with no WAL reader connection, or when other writers keep logging changes, the set is
    /// read holding the write lock, into memory, and passed to `sink` after.)
    pub fn for_each_change(
        &self,
        since: u64,
        exclude: Option<SiteId>,
        batch: usize,
        mut sink: impl FnMut(&[ChangeRecord]) -> Result<()>,
    ) -> Result<u64> {
        // The clock records are read from a snapshot without logged changes: the log is folded
        // first, and again if another handle logged changes before the snapshot began. `sink`
        // runs while the snapshot is open only when it holds up no writer of this handle (a
        // sink that waits, for a peer that waits for this database's writer, would deadlock).
        #[cfg(test)]
        let attempts = if READ_LOCKED.get() { 0 } else { FOLD_ATTEMPTS };
        #[cfg(not(test))]
        let attempts = FOLD_ATTEMPTS;
        if self.engine().snapshots_let_writers_commit() {
            for _ in 0..attempts {
                self.settle_clock()?;
                if let Some(db_version) = self.read_changes(since, exclude, batch, &mut sink)? {
                    return Ok(db_version);
                }
            }
        }
        // No such snapshot (no WAL reader), or other writers keep logging in between: fold and
        // read holding the write lock, into memory, and pass the batches to `sink` after the
        // lock is released.
        let mut batches: Vec<Vec<ChangeRecord>> = Vec::new();
        let db_version = self.transaction(|db| {
            db.settle_clock()?;
            db.read_changes(since, exclude, batch, &mut |b: &[ChangeRecord]| {
                batches.push(b.to_vec());
                Ok(())
            })?
            .ok_or_else(|| Error::internal("the change log was folded but is not empty"))
        })?;
        for b in &batches {
            sink(b)?;
        }
        Ok(db_version)
    }

    /// [`for_each_change`](Self::for_each_change) from one snapshot; `None` (and nothing sent)
    /// when the snapshot holds logged changes not folded into the clock.
    fn read_changes(
        &self,
        since: u64,
        exclude: Option<SiteId>,
        batch: usize,
        sink: &mut impl FnMut(&[ChangeRecord]) -> Result<()>,
    ) -> Result<Option<u64>> {
        let collections = self.replication().collections_cached();
        let by_id: HashMap<u32, &Collection> = collections.iter().map(|c| (c.id, &**c)).collect();
        self.engine().with_read_conn(|conn| {
            // The first read starts the snapshot; what is listed as recent is read after it, so
            // it covers every commit the snapshot holds.
            let (db_version, by): (i64, Option<i64>) = conn
                .prepare_cached(
                    "SELECT (SELECT value FROM _pluresdb_meta WHERE key = 'db_version'),
                            (SELECT value FROM _pluresdb_meta WHERE key = 'db_version_by')",
                )?
                .query_row([], |r| {
                    Ok((r.get::<_, Option<i64>>(0)?.unwrap_or(0), r.get(1)?))
                })?;
            let db_version = db_version as u64;
            let repl = self.replication();
            if repl.log_has_changes(conn)? {
                return Ok(None);
            }
            let sites = Sites::load(conn, exclude)?;
            let recent = repl
                .recent
                .lock()
                .since(since, db_version, by == Some(repl.token));
            let mut emitter = Emitter::new(&collections, since, &sites);
            let mut out: Vec<ChangeRecord> = Vec::with_capacity(batch.min(4096));
            let mut emit = |row: &rusqlite::Row<'_>| -> Result<()> {
                let tbl: i64 = row.get(0)?;
                let Some(coll) = u32::try_from(tbl).ok().and_then(|id| by_id.get(&id)) else {
                    return Ok(());
                };
                let key = keys::unpack(&row.get::<_, Vec<u8>>(1)?)?;
                let cl: i64 = row.get(2)?;
                let clock = RowClock::decode(&row.get::<_, Vec<u8>>(3)?)?;
                let vals = match row.get_ref(4)? {
                    rusqlite::types::ValueRef::Blob(b) => keys::unpack_values(b)?,
                    _ => Vec::new(),
                };
                emitter.row(coll, key, cl as u64, &clock, vals, &mut out)?;
                if out.len() >= batch {
                    sink(&out)?;
                    out.clear();
                }
                Ok(())
            };
            match recent {
                Some(rows) => {
                    // Sorted by collection: one statement per collection, one lookup per row.
                    for group in rows.chunk_by(|a, b| a.0 == b.0) {
                        let Some(sql) = by_id.get(&group[0].0).and_then(|c| branch_sql(c, true))
                        else {
                            continue;
                        };
                        let mut stmt = conn.prepare_cached(&sql)?;
                        for (_, key) in group {
                            let mut found = stmt.query(rusqlite::params![since as i64, &**key])?;
                            while let Some(row) = found.next()? {
                                emit(row)?;
                            }
                        }
                    }
                }
                None => {
                    let sql = collections
                        .iter()
                        .filter_map(|c| branch_sql(c, false))
                        .collect::<Vec<_>>()
                        .join("\nUNION ALL\n");
                    if !sql.is_empty() {
                        let mut stmt = conn.prepare(&sql)?;
                        let mut found = stmt.query([since as i64])?;
                        while let Some(row) = found.next()? {
                            emit(row)?;
                        }
                    }
                }
            }
            if !out.is_empty() {
                sink(&out)?;
            }
            Ok(Some(db_version))
        })
    }
}

/// The SQL that reads one collection's rows changed after `?1` with their current values: all
/// of them, or (`one_key`) the one with key `?2`.
fn branch_sql(coll: &Collection, one_key: bool) -> Option<String> {
    let part = |i: usize| format!("pluresdb_key_part(c.key, {i})");
    let (join, vals) = match &coll.kind {
        Kind::Nodes => (
            format!("LEFT JOIN _pluresdb_nodes r ON r.id = {}", part(0)),
            "pluresdb_pack(r.type, r.data, r.vector)".to_owned(),
        ),
        Kind::Edges => (
            format!(
                "LEFT JOIN _pluresdb_edges r ON r.src = {} AND r.rel = {} AND r.dst = {}",
                part(0),
                part(1),
                part(2)
            ),
            "pluresdb_pack(r.data)".to_owned(),
        ),
        Kind::Table(info) if info.exists => {
            let on: Vec<String> = info
                .pk
                .iter()
                .enumerate()
                .map(|(i, c)| format!("r.{} = {}", quote(c), part(i)))
                .collect();
            let fields: Vec<String> = info
                .fields
                .iter()
                .map(|f| format!("r.{}", quote(f)))
                .collect();
            (
                format!("LEFT JOIN {} r ON {}", quote(&coll.name), on.join(" AND ")),
                format!("pluresdb_pack({})", fields.join(", ")),
            )
        }
        Kind::Table(_) => return None,
    };
    Some(format!(
        "SELECT c.tbl, c.key, c.cl, c.ver, {vals} FROM _pluresdb_clock c {join} WHERE c.tbl = {}{} AND c.seq > ?1",
        coll.id,
        if one_key { " AND c.key = ?2" } else { "" }
    ))
}

/// Site ids by index, and the index of the excluded site.
struct Sites {
    by_idx: HashMap<u32, SiteId>,
    exclude: Option<u32>,
}

impl Sites {
    fn load(conn: &rusqlite::Connection, exclude: Option<SiteId>) -> Result<Sites> {
        let by_idx: HashMap<u32, SiteId> = read_sites(conn)?.into_iter().collect();
        let excluded = by_idx
            .iter()
            .find(|(_, site)| Some(**site) == exclude)
            .map(|(idx, _)| *idx);
        Ok(Sites {
            by_idx,
            exclude: excluded,
        })
    }

    /// The version of `stamp` when it should be sent (stored after `since`, not by the peer).
    fn wanted(&self, stamp: Stamp, since: u64) -> Result<Option<Version>> {
        if stamp.seq <= since || Some(stamp.site) == self.exclude {
            return Ok(None);
        }
        let site = self.by_idx.get(&stamp.site).ok_or_else(|| {
            Error::new(
                crate::ErrorKind::Corrupt,
                format!(
                    "row clock names site #{}, which _pluresdb_sites does not have",
                    stamp.site
                ),
            )
        })?;
        Ok(Some(Version::new(Hlc::from_u64(stamp.hlc), *site)))
    }
}

/// What turning clock records into change records keeps across rows: the names they share
/// (one copy per collection and field, not one per change), the peer's cursor and the sites.
struct Emitter<'a> {
    since: u64,
    sites: &'a Sites,
    /// Each collection's name and its fields' names (table columns; `data` for edges; `type`
    /// and `vector` for nodes), by collection id.
    names: HashMap<u32, (Arc<str>, Vec<Arc<str>>)>,
    /// The sentinel's (empty) field name.
    sentinel: Arc<str>,
    /// Node field names (`data.<field>`) met so far.
    node_fields: HashMap<String, Arc<str>>,
}

impl<'a> Emitter<'a> {
    fn new(collections: &[Arc<Collection>], since: u64, sites: &'a Sites) -> Emitter<'a> {
        let names = collections
            .iter()
            .map(|c| {
                let (name, fields): (&str, Vec<&str>) = match &c.kind {
                    Kind::Nodes => (NODES, vec!["type", "vector"]),
                    Kind::Edges => (EDGES, vec!["data"]),
                    Kind::Table(info) => {
                        (&c.name, info.fields.iter().map(String::as_str).collect())
                    }
                };
                (
                    c.id,
                    (name.into(), fields.into_iter().map(Arc::from).collect()),
                )
            })
            .collect();
        Emitter {
            since,
            sites,
            names,
            sentinel: "".into(),
            node_fields: HashMap::new(),
        }
    }

    /// Appends to `out` the changes of one row that the peer lacks: its sentinel, then its
    /// fields, with their current values (`vals`, as `branch_sql` reads them).
    fn row(
        &mut self,
        coll: &Collection,
        key: Vec<Value>,
        cl: u64,
        clock: &RowClock,
        vals: Vec<Value>,
        out: &mut Vec<ChangeRecord>,
    ) -> Result<()> {
        let (since, sites) = (self.since, self.sites);
        let Some((name, fields)) = self.names.get(&coll.id) else {
            return Ok(());
        };
        let key: Arc<[Value]> = key.into();
        let mut push = |field: &Arc<str>, stamp: Option<Stamp>, value: Option<Value>| {
            if let Some(stamp) = stamp
                && let Some(version) = sites.wanted(stamp, since)?
            {
                out.push(ChangeRecord {
                    collection: name.clone(),
                    key: key.clone(),
                    field: field.clone(),
                    value,
                    version,
                    cl,
                });
            }
            Ok::<_, Error>(())
        };
        // A creation version of 0 is not known yet (only fields of the life were seen).
        push(
            &self.sentinel,
            (clock.sentinel.hlc != 0).then_some(clock.sentinel),
            None,
        )?;
        if !is_alive(cl) {
            return Ok(());
        }
        let mut vals = vals.into_iter();
        let mut next = || Some(vals.next().unwrap_or(Value::Null));
        match &coll.kind {
            Kind::Table(_) | Kind::Edges => {
                for f in fields {
                    push(f, clock.field(f), next())?;
                }
            }
            Kind::Nodes => {
                let (node_type, data, vector) = (next(), next(), next());
                push(&fields[0], clock.field("type"), node_type)?;
                push(&fields[1], clock.field("vector"), vector)?;
                let data = match data {
                    Some(Value::Text(t)) => {
                        serde_json::from_str::<serde_json::Map<String, Json>>(&t)
                            .unwrap_or_default()
                    }
                    _ => serde_json::Map::new(),
                };
                let mut names: Vec<String> = data.keys().map(|k| format!("data.{k}")).collect();
                names.extend(
                    clock
                        .named_fields()
                        .filter(|n| n.starts_with("data."))
                        .map(str::to_owned),
                );
                names.sort();
                names.dedup();
                for n in names {
                    let value = data
                        .get(&n["data.".len()..])
                        .map(|v| Value::Text(v.to_string()));
                    let stamp = clock.field(&n);
                    let field = self
                        .node_fields
                        .entry(n)
                        .or_insert_with_key(|n| n.as_str().into());
                    push(field, stamp, value)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::READ_LOCKED;
    use crate::{Database, OpenOptions};

    #[test]
    fn a_set_read_holding_the_write_lock_reaches_the_sink_after_the_lock_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let db = Database::open(&path).unwrap();
        db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY NOT NULL, v TEXT)")
            .unwrap();
        db.sync_table("t").unwrap();
        db.transaction(|tx| {
            let stmt = tx.prepare("INSERT INTO t(id, v) VALUES (?1, 'x')")?;
            for i in 0..5000 {
                stmt.run((i,))?;
            }
            Ok::<_, crate::Error>(())
        })
        .unwrap();
        // Another handle (as a peer's session would be, waiting for its own write) writes
        // from the sink: it must not wait for the reader's lock.
        let other = OpenOptions::new()
            .busy_timeout(Duration::from_millis(50))
            .open(&path)
            .unwrap();
        let expected = db.db_version().unwrap();
        READ_LOCKED.set(true);
        let mut seen = 0;
        let mut n = 0;
        let version = db.for_each_change(0, None, 1000, |batch| {
            seen += batch.len();
            n += 1;
            other.run(
                "INSERT INTO t(id, v) VALUES (?1, 'from the sink')",
                (100_000 + n,),
            )?;
            Ok(())
        });
        READ_LOCKED.set(false);
        assert_eq!(version.unwrap(), expected);
        // Each row's creation and its v: read as one set, in batches of 1,000.
        assert_eq!(seen, 10_000);
        assert_eq!(n, 10);
        let rows = other.value("SELECT count(*) FROM t", ()).unwrap();
        assert_eq!(rows, crate::Value::Integer(5010));
    }
}
