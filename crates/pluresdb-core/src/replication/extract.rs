//! Reading change sets: every field stored after a given `db_version`, from one consistent
//! snapshot, with the values as they are now.

use std::collections::HashMap;

use serde_json::Value as Json;

use pluresdb_crdt::{Hlc, SiteId, Version, is_alive};

use super::clock::{RowClock, Stamp};
use super::collections::{Collection, EDGES_ID, Kind, NODES_ID, quote};
use super::keys;
use super::{ChangeRecord, EDGES, NODES};
use crate::database::Database;
use crate::error::{Error, Result};
use crate::value::Value;

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
    pub fn for_each_change(
        &self,
        since: u64,
        exclude: Option<SiteId>,
        batch: usize,
        mut sink: impl FnMut(&[ChangeRecord]) -> Result<()>,
    ) -> Result<u64> {
        self.flush_captured()?;
        let collections = self.replication().collections_cached();
        let mut branches = vec![
            "SELECT 0 AS tbl, NULL AS key, NULL AS cl, NULL AS ver, \
             pluresdb_pack((SELECT value FROM _pluresdb_meta WHERE key = 'db_version')) AS vals"
                .to_owned(),
        ];
        for coll in &collections {
            if let Some(branch) = branch_sql(coll) {
                branches.push(branch);
            }
        }
        let sql = branches.join("\nUNION ALL\n");
        let by_id: HashMap<u32, &Collection> = collections.iter().map(|c| (c.id, &**c)).collect();
        // Sites are read before the snapshot. A site added by a commit in between shows up as
        // unknown; it is then read again (from another connection, when the rows come from a
        // reader; when they come from the writer, nothing can commit in between).
        let mut sites = Sites::load(self, exclude)?;
        let mut rows = self.iterate(&sql, (since as i64,))?;
        let on_writer = rows.on_writer();
        let mut db_version = 0u64;
        let mut out: Vec<ChangeRecord> = Vec::with_capacity(batch.min(4096));
        for row in rows.by_ref() {
            let row = row?;
            let tbl: i64 = row.get(0)?;
            let vals = keys::unpack(row.value(4)?.as_blob().unwrap_or_default())?;
            if tbl == 0 {
                db_version = vals.first().and_then(Value::as_i64).unwrap_or(0) as u64;
                continue;
            }
            let Some(coll) = u32::try_from(tbl).ok().and_then(|id| by_id.get(&id)) else {
                continue;
            };
            let key_bytes: Vec<u8> = row.get(1)?;
            let cl: i64 = row.get(2)?;
            let clock = RowClock::decode(&row.get::<Vec<u8>>(3)?)?;
            let key = keys::unpack(&key_bytes)?;
            if !on_writer && !sites.knows(&clock) {
                sites = Sites::load(self, exclude)?;
            }
            emit_row(coll, key, cl as u64, &clock, &vals, since, &sites, &mut out)?;
            if out.len() >= batch {
                sink(&out)?;
                out.clear();
            }
        }
        if !out.is_empty() {
            sink(&out)?;
        }
        Ok(db_version)
    }
}

/// The SQL that reads one collection's changed rows with their current values.
fn branch_sql(coll: &Collection) -> Option<String> {
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
        "SELECT c.tbl, c.key, c.cl, c.ver, {vals} FROM _pluresdb_clock c {join} WHERE c.tbl = {} AND c.seq > ?1",
        coll.id
    ))
}

/// Site ids by index, and the index of the excluded site.
struct Sites {
    by_idx: HashMap<u32, SiteId>,
    exclude: Option<u32>,
}

impl Sites {
    fn load(db: &Database, exclude: Option<SiteId>) -> Result<Sites> {
        let mut by_idx = HashMap::new();
        let mut excluded = None;
        for (idx, site) in
            db.all_as::<(i64, Vec<u8>)>("SELECT idx, site FROM _pluresdb_sites", ())?
        {
            if let (Ok(idx), Some(site)) = (u32::try_from(idx), SiteId::from_slice(&site)) {
                if Some(site) == exclude {
                    excluded = Some(idx);
                }
                by_idx.insert(idx, site);
            }
        }
        Ok(Sites {
            by_idx,
            exclude: excluded,
        })
    }

    /// True when every site the clock names is known.
    fn knows(&self, clock: &RowClock) -> bool {
        std::iter::once(clock.sentinel)
            .filter(|s| s.hlc != 0)
            .map(|s| s.site)
            .chain(clock.fields_base.map(|s| s.site))
            .chain(clock.fields.iter().map(|(_, s)| s.site))
            .all(|s| self.by_idx.contains_key(&s))
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
