//! Edge clocks, kept in the edge rows (`cl`, `seq`, `ver`; see the edge table in `schema.rs`)
//! rather than in `_pluresdb_clock`: a local write stores an edge's clock in the statement that
//! writes the edge ([`EdgeStamp`]), which is what lets a bulk load of edges run at the speed of
//! its inserts.

use rusqlite::{Connection, OptionalExtension};

use super::clock::{RowClock, Stamp};
use crate::error::{Error, Result};
use crate::graph::ends::EDGE_BY_NAMES;
use crate::value::Value;

/// The versions a local write in the open transaction stores in the edges it writes.
pub(crate) struct EdgeStamp {
    pub(crate) stamp: Stamp,
    created: Vec<u8>,
    deleted: Vec<u8>,
}

impl EdgeStamp {
    pub(crate) fn new(stamp: Stamp) -> EdgeStamp {
        EdgeStamp {
            stamp,
            created: RowClock::whole(stamp).encode(),
            deleted: RowClock::reset(stamp).encode(),
        }
    }

    /// The `seq` column of the edges this write stores.
    pub(crate) fn seq(&self) -> i64 {
        self.stamp.seq as i64
    }

    /// The versions of an edge this write creates or revives.
    pub(crate) fn created(&self) -> &[u8] {
        &self.created
    }

    /// The versions of an edge this write deletes.
    pub(crate) fn deleted(&self) -> &[u8] {
        &self.deleted
    }

    /// The versions of a live edge with versions `ver` whose data this write changes (an edge
    /// without versions, stored before sync existed, is recorded as created now).
    pub(crate) fn data_changed(&self, ver: Option<&[u8]>) -> Result<Vec<u8>> {
        let Some(ver) = ver else {
            return Ok(self.created.clone());
        };
        let mut clock = RowClock::decode(ver)?;
        clock.set_field("data", self.stamp);
        Ok(clock.encode())
    }
}

/// The causal length and versions of the edge `key_values` (its three names), if it has
/// versions.
pub(crate) fn read(conn: &Connection, key_values: &[Value]) -> Result<Option<(i64, Vec<u8>)>> {
    let [Value::Text(from), Value::Text(relation), Value::Text(to)] = key_values else {
        return Err(Error::internal("an edge key is not three names"));
    };
    Ok(conn
        .prepare_cached(&format!(
            "SELECT cl, ver FROM _pluresdb_edges WHERE {EDGE_BY_NAMES} AND ver IS NOT NULL"
        ))?
        .query_row([from, relation, to], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}
