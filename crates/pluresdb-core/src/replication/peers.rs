//! What this database knows about its peers: how far each sync got, and counters.

use std::collections::BTreeMap;

use super::apply::Refused;
use super::refetch::{Refetch, Refetching};
use super::refusals::PeerRefusals;
use super::resume::ResumePoint;
use pluresdb_crdt::{SiteId, VersionVector, wall_millis};

use crate::database::Database;
use crate::error::Result;

/// Sync status of one peer.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PeerStatus {
    /// The peer's site id.
    #[serde(serialize_with = "ser_site")]
    pub site: SiteId,
    /// Where it was last reached (URL or file), if known.
    pub address: Option<String>,
    /// When the last sync with it finished, in ms since the Unix epoch.
    pub last_sync_ms: Option<u64>,
    /// Changes sent to it, in total.
    pub sent: u64,
    /// Changes received from it, in total.
    pub received: u64,
    /// Its `db_version` up to which its changes are applied here.
    pub cursor: u64,
    /// This database's `db_version` up to which it confirmed having everything.
    pub acked: u64,
    /// Changes made or received here since what it confirmed, that it does not have (what
    /// the next sync will send).
    pub pending: u64,
    /// Its last set of changes for this database was cut short after part of it merged here:
    /// the next sync with it goes on where it stopped (see [`ResumePoint`]).
    pub cut_short: bool,
    /// Tables and columns that arrived here after a merge left their changes out: the next
    /// sync asks it for all of their changes (see [`Database::refetching`]).
    pub asks_again: Vec<Refetch>,
    /// Tables whose changes from it were refused since its last set that merged whole (see
    /// [`ApplyReport::refused`](crate::ApplyReport::refused)): the next sync brings them again.
    pub refused: Vec<Refused>,
    /// What it said it did not take of this database's changes: the tables it refused in the
    /// last session it acknowledged changes in, and the tables and columns it left out since
    /// it last asked for them (a peer of an older build says nothing).
    pub peer_refusals: PeerRefusals,
}

fn ser_site<S: serde::Serializer>(site: &SiteId, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(site)
}

/// A sync's outcome for one peer, recorded with [`Database::record_sync`].
#[derive(Clone, Debug, Default)]
pub struct SyncProgress {
    /// Where the peer was reached.
    pub address: Option<String>,
    /// Changes sent in this sync.
    pub sent: u64,
    /// Changes received in this sync.
    pub received: u64,
    /// The peer's `db_version` now fully applied here (`None`: unchanged).
    pub cursor: Option<u64>,
    /// This database's `db_version` the peer confirmed (`None`: unchanged).
    pub acked: Option<u64>,
    /// [`Database::cursor_resets`] when this sync began (read before its hello). When the
    /// cursors were set back since, `cursor` is not recorded: the changes this sync left out
    /// would otherwise never be asked for again.
    pub resets_seen: Option<u64>,
    /// With `cursor`: the latest merge of the set the cursor completes
    /// ([`ApplyReport::noted`](crate::ApplyReport::noted)). The notes of merges from the peer
    /// up to it count from now on; later ones (of its next set) wait for that set's cursor.
    pub confirm_through: Option<u64>,
    /// What the peer said in this session it did not take of this database's changes, when
    /// it acknowledged them (with `acked`): its refused tables replace those recorded, its
    /// left-out tables and columns join them (`None`: unchanged).
    pub peer_refusals: Option<PeerRefusals>,
}

/// `_pluresdb_meta` key counting the times every peer's cursor was set back to 0.
const CURSOR_RESETS: &str = "cursor_resets";

/// SQL for that count now (0 before the first), for statements that compare it with the count
/// a record or a sync was made at.
pub(crate) const RESETS_NOW: &str =
    "coalesce((SELECT value FROM _pluresdb_meta WHERE key = 'cursor_resets'), 0)";

/// Sets every peer's cursor back to 0, so that the next sync with each asks for all its
/// changes, and counts it (see [`Database::cursor_resets`]).
/// (The key is [`CURSOR_RESETS`].)
pub(crate) const SET_CURSORS_BACK: &str = "UPDATE _pluresdb_peers SET cursor = 0;
     INSERT INTO _pluresdb_meta(key, value) VALUES ('cursor_resets', 1)
         ON CONFLICT(key) DO UPDATE SET value = value + 1;";

/// `_pluresdb_meta` key prefix of the highest `db_version` this database told each peer (by
/// site id in hex) it had sent everything up to; `announced:files` for change files.
const ANNOUNCED: &str = "announced:";

/// `_pluresdb_meta` key prefix of the highest `db_version` named by resume points this
/// database gave each peer (by site id in hex).
const RESUMABLE: &str = "resumable:";

/// `_pluresdb_meta` key of this database's `db_version` when it began recording what it
/// announces (0 for a file made since; absent in a file no build that records has written).
const ANNOUNCE_SINCE: &str = "announce_since";

/// `PRAGMA synchronous` level FULL: a commit syncs the write-ahead log.
const SYNCHRONOUS_FULL: i64 = 2;

/// The meta key of what was announced to `peer` (`None`: change files).
fn announced_key(peer: Option<SiteId>) -> String {
    match peer {
        Some(site) => format!("{ANNOUNCED}{site}"),
        None => format!("{ANNOUNCED}files"),
    }
}

impl Database {
    /// Records, before telling it, that this database tells `peer` (`None`: whoever reads a
    /// change file) that it has sent every change up to `db_version`; returns the version to
    /// tell. A peer's cursor for this database then never passes the record, which is how
    /// [`Database::announced_bound`] tells a copy or a restored backup, whose record is
    /// older. A read-only handle records nothing and tells at most what is recorded already
    /// (the peer gets the changes after it again next time; merging them twice is harmless).
    /// For a change file that is what was recorded for change files: what was told only to
    /// some peer is not recorded for the file's reader, who may be another peer.
    pub fn announce(&self, peer: Option<SiteId>, db_version: u64) -> Result<u64> {
        if self.is_read_only() {
            let bound = match peer {
                Some(_) => self.announced_bound(peer)?,
                None => self.announced_to(&[announced_key(None)])?,
            };
            return Ok(bound.map_or(db_version, |b| b.min(db_version)));
        }
        self.record_durably(&announced_key(peer), db_version)?;
        Ok(db_version)
    }

    /// Records, before telling it, that this database tells `peer` where its read of changes
    /// read at `db_version` got to ([`ResumePoint`]s naming that version): a point is taken
    /// only up to the record, so a restored backup, whose record is older, does not go on
    /// from a point whose earlier part it may not hold.
    pub(crate) fn issue_points(&self, peer: SiteId, db_version: u64) -> Result<()> {
        self.record_durably(&format!("{RESUMABLE}{peer}"), db_version)
    }

    /// The highest `db_version` recorded by [`issue_points`](Self::issue_points) for `peer`.
    pub(crate) fn points_issued(&self, peer: SiteId) -> Result<u64> {
        Ok(self.meta_int(&format!("{RESUMABLE}{peer}"))?.unwrap_or(0) as u64)
    }

    /// The integer `_pluresdb_meta` holds under `key`, if any.
    fn meta_int(&self, key: &str) -> Result<Option<i64>> {
        Ok(self
            .value("SELECT value FROM _pluresdb_meta WHERE key = ?1", (key,))?
            .as_i64())
    }

    /// Raises the `_pluresdb_meta` value `key` to `db_version`, durably (before a peer is told
    /// something that depends on it).
    fn record_durably(&self, key: &str, db_version: u64) -> Result<()> {
        let recorded = self.meta_int(key)?;
        if recorded.is_some_and(|r| r >= db_version as i64) {
            return Ok(());
        }
        // Durable before the peer is told: a power cut must not leave this database with less
        // of its own history than a peer holds (the peer would then take it for a copy and
        // refuse it). Committed with `synchronous=FULL`, the record's commit syncs the
        // write-ahead log, and with it every commit before it: one sync per record.
        self.with_writer_conn(|conn| {
            let level: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
            let raise = conn.is_autocommit() && level < SYNCHRONOUS_FULL;
            if raise {
                conn.execute_batch(&format!("PRAGMA synchronous = {SYNCHRONOUS_FULL}"))?;
            }
            let written = conn
                .prepare_cached(
                    "INSERT INTO _pluresdb_meta(key, value) VALUES (?1, ?2)
                     ON CONFLICT(key) DO UPDATE SET value = max(value, excluded.value)",
                )
                .and_then(|mut stmt| stmt.execute((key, db_version as i64)));
            if raise {
                conn.execute_batch(&format!("PRAGMA synchronous = {level}"))?;
            }
            written?;
            Ok(())
        })
    }

    /// The highest `db_version` of this database that `peer` can have been told it has
    /// everything up to (`None`: any peer, as for a change file, whose reader is not known),
    /// or `None` when the file predates these records. A peer holding more of this database
    /// than that got it from another file with this site id: a copy, or the database this one
    /// is a restored backup of.
    pub fn announced_bound(&self, peer: Option<SiteId>) -> Result<Option<u64>> {
        match peer {
            Some(_) => self.announced_to(&[announced_key(peer), announced_key(None)]),
            None => {
                let Some(since) = self.announce_since()? else {
                    return Ok(None);
                };
                let told = self.value(
                    "SELECT max(value) FROM _pluresdb_meta WHERE key > ?1 AND key < ?2",
                    (ANNOUNCED, "announced;"),
                )?;
                Ok(Some(since.max(told.as_i64().unwrap_or(0)) as u64))
            }
        }
    }

    /// `announce_since`, or `None` when the file predates these records.
    fn announce_since(&self) -> Result<Option<i64>> {
        self.meta_int(ANNOUNCE_SINCE)
    }

    /// The highest version recorded under any of the meta `keys` (at least `announce_since`),
    /// or `None` when the file predates these records.
    fn announced_to(&self, keys: &[String]) -> Result<Option<u64>> {
        let Some(mut told) = self.announce_since()? else {
            return Ok(None);
        };
        for key in keys {
            told = told.max(self.meta_int(key)?.unwrap_or(0));
        }
        Ok(Some(told as u64))
    }

    /// Gives the database file at `path` a new site id, for a file restored from a backup or
    /// copied from another device's: it then syncs as a new device (its peers send it what
    /// they have, and take everything it has, its own changes made under the old id
    /// included), where under the shared id each side would take the other's different
    /// changes for ones it already has. What it had of each peer was told to the old id, so
    /// its next sync with each takes everything again (merging what it has is harmless).
    /// Close every other handle on the file first: one that stays open keeps writing under
    /// the old id. Returns the new id.
    pub fn renew_site_id(path: impl AsRef<std::path::Path>) -> Result<SiteId> {
        let path = path.as_ref();
        if !path.is_file() {
            return Err(crate::Error::invalid(format!(
                "there is no database file at {}",
                path.display()
            )));
        }
        let db = Database::open(path)?;
        // Logged changes are recorded under the old id first.
        db.fold_change_log()?;
        db.exec(&format!(
            "BEGIN IMMEDIATE;
             UPDATE _pluresdb_meta SET value = randomblob(16) WHERE key = 'site_id';
             INSERT INTO _pluresdb_sites(site) SELECT value FROM _pluresdb_meta WHERE key = 'site_id';
             DELETE FROM _pluresdb_meta WHERE key > 'announced:' AND key < 'announced;';
             DELETE FROM _pluresdb_meta WHERE key > 'resumable:' AND key < 'resumable;';
             INSERT INTO _pluresdb_meta(key, value) VALUES ('announce_since', 0)
                 ON CONFLICT(key) DO UPDATE SET value = 0;
             UPDATE _pluresdb_peers SET acked = 0;
             {SET_CURSORS_BACK}
             COMMIT;"
        ))?;
        let site = db.value("SELECT value FROM _pluresdb_meta WHERE key = 'site_id'", ())?;
        site.as_blob()
            .and_then(SiteId::from_slice)
            .ok_or_else(|| crate::Error::internal("the new site id was not stored"))
    }

    /// This database's `db_version`: the number of its last transaction that changed
    /// replicated data.
    pub fn db_version(&self) -> Result<u64> {
        Ok(self.meta_int("db_version")?.unwrap_or(0) as u64)
    }

    /// What this database has: its own `db_version`, and for each peer the `db_version` up to
    /// which that peer's changes are applied here.
    pub fn version_vector(&self) -> Result<VersionVector> {
        let mut vv: VersionVector = self
            .all_as::<(Vec<u8>, i64)>("SELECT site, cursor FROM _pluresdb_peers", ())?
            .into_iter()
            .filter_map(|(s, c)| SiteId::from_slice(&s).map(|s| (s, c as u64)))
            .collect();
        vv.observe(self.site_id(), self.db_version()?);
        Ok(vv)
    }

    /// How many times this database set every peer's cursor back to 0 so that each sends all
    /// its changes again: when a table or column that a merge left changes out for arrived,
    /// and at [`Database::renew_site_id`]. A sync reads it before it begins and records its
    /// cursor only if it has not changed ([`SyncProgress::resets_seen`]).
    pub fn cursor_resets(&self) -> Result<u64> {
        Ok(self.meta_int(CURSOR_RESETS)?.unwrap_or(0) as u64)
    }

    /// What a sync asks each peer for when a table or column whose changes a merge here left
    /// out has arrived since its cursor was last recorded: rather than everything (its cursor
    /// is at 0, which is what [`version_vector`](Self::version_vector) says, for change files
    /// and older peers), its changes after its cursor from before, plus all of its changes of
    /// what arrived ([`for_each_change_of`](Self::for_each_change_of)). Recording its cursor
    /// ([`record_sync`](Self::record_sync)) drops the peer's entry.
    pub fn refetching(&self) -> Result<BTreeMap<SiteId, Refetching>> {
        self.engine().with_read_conn(super::refetch::all)
    }

    /// The tables and columns whose changes merges here left out and that are still not
    /// here (not synced, or lacking the column): once one is, the next sync asks for its
    /// changes again. Sorted; past 256 of them, the rest are not named.
    pub fn left_out(&self) -> Result<Vec<Refetch>> {
        self.engine().with_read_conn(super::missed::named)
    }

    /// Where the last read of `peer`'s changes for this database got to, if it was cut short
    /// after a [`ResumePoint`] merged here (see
    /// [`apply_changes_resumable`](Self::apply_changes_resumable)): the next sync with `peer`
    /// gives it back for the peer to go on from there.
    pub fn resume_point(&self, peer: SiteId) -> Result<Option<ResumePoint>> {
        self.engine()
            .with_read_conn(|conn| super::resume::stored(conn, peer))
    }

    /// The peer's `db_version` up to which its changes are applied here (0 if never synced).
    pub fn peer_cursor(&self, site: SiteId) -> Result<u64> {
        Ok(self
            .value(
                "SELECT cursor FROM _pluresdb_peers WHERE site = ?1",
                (site.as_bytes().to_vec(),),
            )?
            .as_i64()
            .unwrap_or(0) as u64)
    }

    /// Records a sync with a peer (counters add up; cursors never move back, and are not
    /// recorded by a sync that began before they were set back: see
    /// [`SyncProgress::resets_seen`]). A cursor or
    /// acknowledged version past `i64::MAX` (no database counts that far: versions are SQLite
    /// integers) is refused, since it would be stored as a negative number.
    pub fn record_sync(&self, site: SiteId, progress: &SyncProgress) -> Result<()> {
        let versions = [
            ("its", progress.cursor),
            ("this database's", progress.acked),
        ];
        for (whose, version) in versions {
            if let Some(v) = version.filter(|&v| i64::try_from(v).is_err()) {
                return Err(crate::Error::invalid(format!(
                    "the peer {site} says {whose} version {v}, which is past any version a \
                     database counts to ({}): it is not a PluresDB peer, or a faulty one",
                    i64::MAX
                )));
            }
        }
        // Whether the cursors were set back since the sync began, read in the statement
        // itself (a reset committed between a separate read and this write would count as
        // seen).
        let reset = format!("(?8 IS NOT NULL AND ?8 != {RESETS_NOW})");
        self.run(
            &format!(
                "INSERT INTO _pluresdb_peers(site, address, last_sync, sent, received, cursor, acked)
                 VALUES (?1, ?2, ?3, ?4, ?5, CASE WHEN {reset} THEN 0 ELSE ?6 END, ?7)
                 ON CONFLICT(site) DO UPDATE SET
                     address = coalesce(excluded.address, address),
                     last_sync = excluded.last_sync,
                     sent = sent + excluded.sent,
                     received = received + excluded.received,
                     cursor = CASE WHEN {reset} THEN cursor ELSE max(cursor, excluded.cursor) END,
                     acked = max(acked, excluded.acked)"
            ),
            (
                site.as_bytes().to_vec(),
                progress.address.clone(),
                wall_millis() as i64,
                progress.sent as i64,
                progress.received as i64,
                progress.cursor.unwrap_or(0) as i64,
                progress.acked.unwrap_or(0) as i64,
                progress.resets_seen.map(|seen| seen as i64),
            ),
        )?;
        self.with_writer_conn(|conn| {
            // The peer's set is complete: what merged from it counts as its, unless the
            // cursors were set back meanwhile and the cursor was not recorded.
            if let (Some(cursor), Some(through)) = (progress.cursor, progress.confirm_through) {
                super::received::confirm(conn, site.as_bytes(), cursor, through)?;
            }
            if let Some(acked) = progress.acked {
                super::received::forget_acked(conn, site.as_bytes(), acked)?;
            }
            if let Some(said) = &progress.peer_refusals {
                super::refusals::record_theirs(conn, site, said)?;
            }
            // The peer's set is complete: nothing to go on with, and, when the cursor was
            // recorded, nothing left to ask it for again.
            if let Some(cursor) = progress.cursor {
                super::resume::forget(conn, site, cursor)?;
                super::refetch::forget(conn, site, progress.resets_seen)?;
                super::refusals::forget(conn, site)?;
            }
            Ok(())
        })
    }

    /// Notes that `peer` asked for all of this database's changes of `asked` (of everything,
    /// when `None`), so it no longer leaves them out as it said it did (see
    /// [`PeerStatus::peer_refusals`]); if it still does, it says so again.
    pub fn peer_asks_again(&self, peer: SiteId, asked: Option<&[Refetch]>) -> Result<()> {
        self.with_writer_conn(|conn| super::refusals::forget_left_out(conn, peer, asked))
    }

    /// Changes made or received here that `peer` has not confirmed having (what the next sync
    /// with it sends; [`PeerStatus::pending`] without reading every peer's status).
    pub fn pending_for(&self, peer: SiteId) -> Result<u64> {
        let acked = self
            .value(
                "SELECT coalesce((SELECT acked FROM _pluresdb_peers WHERE site = ?1), 0)",
                (peer.as_bytes().to_vec(),),
            )?
            .as_i64()
            .unwrap_or(0);
        self.pending_since(peer, acked as u64)
    }

    /// The changes for `peer` after `acked`, counted.
    fn pending_since(&self, peer: SiteId, acked: u64) -> Result<u64> {
        let mut pending = 0u64;
        self.for_each_change(acked, Some(peer), 4096, |batch| {
            pending += batch.len() as u64;
            Ok(())
        })?;
        Ok(pending)
    }

    /// Sync status of every peer this database has synced with.
    pub fn sync_status(&self) -> Result<Vec<PeerStatus>> {
        let rows = self.all_as::<(Vec<u8>, Option<String>, Option<i64>, i64, i64, i64, i64)>(
            "SELECT site, address, last_sync, sent, received, cursor, acked FROM _pluresdb_peers ORDER BY last_sync DESC",
            (),
        )?;
        let mut refetching = self.refetching()?;
        let (mut refused, mut theirs) = self.engine().with_read_conn(|conn| {
            Ok((
                super::refusals::read(conn)?,
                super::refusals::read_theirs(conn)?,
            ))
        })?;
        rows.into_iter()
            .map(|(site, address, last, sent, received, cursor, acked)| {
                let site = SiteId::from_slice(&site).unwrap_or_default();
                let pending = self.pending_since(site, acked as u64)?;
                Ok(PeerStatus {
                    site,
                    address,
                    last_sync_ms: last.map(|l| l as u64),
                    sent: sent as u64,
                    received: received as u64,
                    cursor: cursor as u64,
                    acked: acked as u64,
                    pending,
                    cut_short: self.resume_point(site)?.is_some(),
                    asks_again: refetching.remove(&site).unwrap_or_default().wanted,
                    refused: refused.remove(&site.to_string()).unwrap_or_default(),
                    peer_refusals: theirs.remove(&site.to_string()).unwrap_or_default(),
                })
            })
            .collect()
    }
}
