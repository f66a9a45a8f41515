//! Resuming an interrupted read of changes (`_pluresdb_resume`): where a peer's scan of its
//! clock records got to, kept by the receiving side with what it merged.
//!
//! A large first sync reads every clock record of the sender in key order. Without this, a
//! connection dropped near the end meant starting over, and on a link that drops more often
//! than a whole sync takes, a first sync never finished. The sender now says, every so often,
//! "everything before this point of my scan is sent" ([`ResumePoint`]); the receiver stores the
//! point in the transaction that merges the last change before it, and gives it back in its
//! next session with that peer. The sender then scans on from the point (with the same
//! `since`) and, for the part already sent, reads only what changed after the interrupted read
//! began.
//!
//! A point is only good for the cursor it was read from: it is dropped once the sender's set
//! is complete (its cursor recorded), and ignored once the cursors were set back (a table or
//! column whose changes were left out arrived: the part already sent must be read again).

use pluresdb_crdt::SiteId;
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension};

use super::peers::RESETS_NOW;
use super::received::prepared;
use crate::error::{Error, Result};
use crate::value::{Value, ValueRef};
use crate::wire::{Reader, put_value, put_varint};

/// The encoding of [`ResumePoint`]s this build writes (others are ignored).
const POINT_FORMAT: u8 = 1;

const TABLE_NAME: &str = "_pluresdb_resume";

const TABLE: &str = "CREATE TABLE IF NOT EXISTS _pluresdb_resume (
    site   BLOB PRIMARY KEY NOT NULL,
    resets INTEGER NOT NULL,
    since  INTEGER NOT NULL,
    stored INTEGER NOT NULL,
    point  BLOB NOT NULL
) WITHOUT ROWID";

/// Where a read of changes got to: every change stored at the producer between `since` and
/// `db_version` in the rows its scan passed was sent. Opaque to all but the producer, which
/// can go on from there (see [`Database::for_each_change_resuming`](crate::Database)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResumePoint(Vec<u8>);

/// A decoded point.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Position {
    pub(crate) producer: SiteId,
    /// The `since` of the read.
    pub(crate) since: u64,
    /// The producer's `db_version` when the read began.
    pub(crate) db_version: u64,
    /// The collection the scan was in, and the last key (edge id, for edges) it passed there.
    pub(crate) coll: u32,
    pub(crate) after: SqlValue,
}

impl ResumePoint {
    /// Longest point made or read (about 40 bytes and a key: a read at a longer key makes
    /// no point there).
    pub const MAX_BYTES: usize = 16 * 1024;

    /// A point received from a peer, as its bytes (checked when used).
    pub fn from_bytes(bytes: Vec<u8>) -> ResumePoint {
        ResumePoint(bytes)
    }

    /// The encoded point.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The site whose read the point is in (`None`: not a point this build reads).
    pub fn producer(&self) -> Option<SiteId> {
        self.decode().ok().map(|p| p.producer)
    }

    /// `p` encoded, unless longer than [`MAX_BYTES`](Self::MAX_BYTES).
    pub(crate) fn encode(p: &Position) -> Option<ResumePoint> {
        let mut out = vec![POINT_FORMAT];
        out.extend_from_slice(p.producer.as_bytes());
        put_varint(&mut out, p.since);
        put_varint(&mut out, p.db_version);
        put_varint(&mut out, u64::from(p.coll));
        put_value(&mut out, ValueRef::from_sqlite((&p.after).into()));
        (out.len() <= Self::MAX_BYTES).then_some(ResumePoint(out))
    }

    pub(crate) fn decode(&self) -> Result<Position> {
        let mut r = Reader::new(&self.0, "resume point");
        if r.byte()? != POINT_FORMAT {
            return Err(r.error("unknown format"));
        }
        let producer = SiteId::from_slice(r.take(16)?).expect("16 bytes");
        let since = r.varint()?;
        let db_version = r.varint()?;
        let coll = u32::try_from(r.varint()?).map_err(|_| r.error("collection id too large"))?;
        let after = match r.value(Self::MAX_BYTES)? {
            Value::Integer(i) => SqlValue::Integer(i),
            Value::Blob(b) => SqlValue::Blob(b),
            _ => return Err(r.error("the position is not a key")),
        };
        if !r.is_empty() || since > db_version {
            return Err(Error::invalid("resume point: malformed"));
        }
        Ok(Position {
            producer,
            since,
            db_version,
            coll,
            after,
        })
    }
}

/// Points kept at most (one per peer whose set was cut short; the oldest go first).
const MAX_KEPT: usize = 64;

/// Stores `point` as where the read of changes from `peer` got to, valid while the cursors
/// have been set back `resets` times. Called in the merge transaction of the last change before
/// the point. A point that `peer` did not make is refused: it would make another peer skip
/// changes this database never got.
pub(crate) fn record(
    conn: &Connection,
    peer: SiteId,
    resets: u64,
    point: &ResumePoint,
) -> Result<()> {
    let position = point.decode()?;
    if position.producer != peer {
        return Err(Error::invalid(format!(
            "the peer {peer} sent a resume point of another database ({}): it is not a \
             PluresDB sync peer, or a faulty one",
            position.producer
        )));
    }
    const UPSERT: &str =
        "INSERT OR REPLACE INTO _pluresdb_resume(site, resets, since, stored, point)
         VALUES (?1, ?2, ?3, ?4, ?5)";
    let mut stmt = match prepared(conn, TABLE_NAME, UPSERT)? {
        Some(stmt) => stmt,
        None => {
            conn.execute_batch(TABLE)?;
            conn.prepare_cached(UPSERT)?
        }
    };
    let stored = pluresdb_crdt::wall_millis() as i64;
    stmt.execute((
        peer.as_bytes(),
        resets as i64,
        position.since as i64,
        stored,
        point.as_bytes(),
    ))?;
    conn.prepare_cached(
        "DELETE FROM _pluresdb_resume WHERE site NOT IN
             (SELECT site FROM _pluresdb_resume ORDER BY stored DESC LIMIT ?1)",
    )?
    .execute([MAX_KEPT as i64])?;
    Ok(())
}

/// Drops the point of `peer` for a set before `cursor`, which is now complete (a point of its
/// next set, merged meanwhile, stays).
pub(crate) fn forget(conn: &Connection, peer: SiteId, cursor: u64) -> Result<()> {
    let sql = "DELETE FROM _pluresdb_resume WHERE site = ?1 AND since < ?2";
    if let Some(mut stmt) = prepared(conn, TABLE_NAME, sql)? {
        stmt.execute((peer.as_bytes(), cursor as i64))?;
    }
    Ok(())
}

/// The point stored for `peer` since the cursors were last set back (an older one would skip
/// changes left out before the reset).
pub(crate) fn stored(conn: &Connection, peer: SiteId) -> Result<Option<ResumePoint>> {
    let sql =
        format!("SELECT point FROM _pluresdb_resume WHERE site = ?1 AND resets = {RESETS_NOW}");
    let Some(mut stmt) = prepared(conn, TABLE_NAME, &sql)? else {
        return Ok(None);
    };
    Ok(stmt
        .query_row([peer.as_bytes()], |r| r.get::<_, Vec<u8>>(0))
        .optional()?
        .map(ResumePoint))
}
