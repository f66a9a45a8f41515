//! Reading change sets: every field stored after a given `db_version`, from one consistent
//! snapshot, with the values as they are now.

use std::collections::HashMap;

use serde_json::Value as Json;

use pluresdb_crdt::{Hlc, SiteId, Version, is_alive};

use super::clock::{RowClock, Stamp};
use super::collections::{Collection, EDGES_ID, Kind, NODES_ID, quote};
use super::keys;
use super::state::read_sites;
use super::{ChangeRecord, EDGES, NODES};
use crate::database::Database;
use crate::error::{Error, Result};
use crate::value::Value;

/// How often reading changes folds the log and reads again, before it reads holding the write
/// lock.
const FOLD_ATTEMPTS: usize = 5;

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
    /// database: the snapshot holds a connection, and, while other writers keep logging
    /// changes, the write lock.
    pub fn for_each_change(
        &self,
        since: u64,
        exclude: Option<SiteId>,
        batch: usize,
        mut sink: impl FnMut(&[ChangeRecord]) -> Result<()>,
    ) -> Result<u64> {
        // The clock records are read from a snapshot without logged changes: the log is folded
        // first, and again if another handle logged changes before the snapshot began.
        for _ in 0..FOLD_ATTEMPTS {
            self.settle_clock()?;
            if let Some(db_version) = self.read_changes(since, exclude, batch, &mut sink)? {
                return Ok(db_version);
            }
        }
        // Other writers keep logging in between: fold and read holding the write lock (then
        // `sink` runs in that transaction, and other writers wait for it).
        self.transaction(|db| {
            db.settle_clock()?;
            db.read_changes(since, exclude, batch, &mut sink)?
                .ok_or_else(|| Error::internal("the change log was folded but is not empty"))
        })
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
                emit_row(coll, key, cl as u64, &clock, &vals, since, &sites, &mut out)?;
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

#[allow(clippy::too_many_arguments)]
fn emit_row(
    coll: &Collection,
    key: Vec<Value>,
    cl: u64,
    clock: &RowClock,
    vals: &[Value],
    since: u64,
    sites: &Sites,
    out: &mut Vec<ChangeRecord>,
) -> Result<()> {
    let name = match coll.id {
        NODES_ID => NODES,
        EDGES_ID => EDGES,
        _ => coll.name.as_str(),
    };
    let mut push = |field: String, value: Option<Value>, version: Version| {
        out.push(ChangeRecord {
            collection: name.to_owned(),
            key: key.clone(),
            field,
            value,
            version,
            cl,
        });
    };
    // A creation version of 0 is not known yet (only fields of the life were seen).
    if clock.sentinel.hlc != 0
        && let Some(v) = sites.wanted(clock.sentinel, since)?
    {
        push(String::new(), None, v);
    }
    if !is_alive(cl) {
        return Ok(());
    }
    let mut field = |name: &str, value: Option<Value>| -> Result<()> {
        if let Some(stamp) = clock.field(name)
            && let Some(v) = sites.wanted(stamp, since)?
        {
            push(name.to_owned(), value, v);
        }
        Ok(())
    };
    match &coll.kind {
        Kind::Table(info) => {
            for (i, f) in info.fields.iter().enumerate() {
                field(f, Some(vals.get(i).cloned().unwrap_or(Value::Null)))?;
            }
        }
        Kind::Edges => field("data", Some(vals.first().cloned().unwrap_or(Value::Null)))?,
        Kind::Nodes => {
            field("type", Some(vals.first().cloned().unwrap_or(Value::Null)))?;
            field("vector", Some(vals.get(2).cloned().unwrap_or(Value::Null)))?;
            let data = match vals.get(1) {
                Some(Value::Text(t)) => {
                    serde_json::from_str::<serde_json::Map<String, Json>>(t).unwrap_or_default()
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
                field(&n, value)?;
            }
        }
    }
    Ok(())
}
