//! What this database knows about its peers: how far each sync got, and counters.

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
}

impl Database {
    /// This database's `db_version`: the number of its last transaction that changed
    /// replicated data.
    pub fn db_version(&self) -> Result<u64> {
        Ok(self
            .value(
                "SELECT value FROM _pluresdb_meta WHERE key = 'db_version'",
                (),
            )?
            .as_i64()
            .unwrap_or(0) as u64)
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

    /// Records a sync with a peer (counters add up; cursors never move back).
    pub fn record_sync(&self, site: SiteId, progress: &SyncProgress) -> Result<()> {
        self.run(
            "INSERT INTO _pluresdb_peers(site, address, last_sync, sent, received, cursor, acked)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT(site) DO UPDATE SET
                 address = coalesce(excluded.address, address),
                 last_sync = excluded.last_sync,
                 sent = sent + excluded.sent,
                 received = received + excluded.received,
                 cursor = max(cursor, excluded.cursor),
                 acked = max(acked, excluded.acked)",
            (
                site.as_bytes().to_vec(),
                progress.address.clone(),
                wall_millis() as i64,
                progress.sent as i64,
                progress.received as i64,
                progress.cursor.unwrap_or(0) as i64,
                progress.acked.unwrap_or(0) as i64,
            ),
        )?;
        Ok(())
    }

    /// Sync status of every peer this database has synced with.
    pub fn sync_status(&self) -> Result<Vec<PeerStatus>> {
        let rows = self.all_as::<(Vec<u8>, Option<String>, Option<i64>, i64, i64, i64, i64)>(
            "SELECT site, address, last_sync, sent, received, cursor, acked FROM _pluresdb_peers ORDER BY last_sync DESC",
            (),
        )?;
        rows.into_iter()
            .map(|(site, address, last, sent, received, cursor, acked)| {
                let site = SiteId::from_slice(&site).unwrap_or_default();
                let mut pending = 0u64;
                self.for_each_change(acked as u64, Some(site), 4096, |batch| {
                    pending += batch.len() as u64;
                    Ok(())
                })?;
                Ok(PeerStatus {
                    site,
                    address,
                    last_sync_ms: last.map(|l| l as u64),
                    sent: sent as u64,
                    received: received as u64,
                    cursor: cursor as u64,
                    acked: acked as u64,
                    pending,
                })
            })
            .collect()
    }
}
