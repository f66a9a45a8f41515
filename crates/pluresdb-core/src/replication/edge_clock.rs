//! Edge clocks, kept in the edge rows (`cl`, `seq`, `ver`; see the edge table in `schema.rs`)
//! rather than in `_pluresdb_clock`: an edge is written with its clock in one row, which is
//! what lets a bulk load of edges run at the speed of its inserts.

use rusqlite::{Connection, OptionalExtension};

use super::capture::GraphWrite;
use super::clock::{RowClock, Stamp};
use super::keys;
use crate::error::{Error, Result};
use crate::graph::ends::{self, EDGE_BY_NAMES};
use crate::value::Value;

/// The edge's names from its packed key.
fn names(key: &[u8]) -> Result<[String; 3]> {
    let parts = keys::unpack(key)?;
    match <[Value; 3]>::try_from(parts) {
        Ok([Value::Text(from), Value::Text(relation), Value::Text(to)]) => Ok([from, relation, to]),
        _ => Err(Error::internal("an edge key is not three names")),
    }
}

/// Records a local write to the edge with packed key `key` in its row (whose `cl` the write
/// set already).
pub(crate) fn write(
    conn: &Connection,
    key: &[u8],
    write: GraphWrite<&[String]>,
    stamp: Stamp,
) -> Result<()> {
    let [from, relation, to] = names(key)?;
    let Some(eid) = ends::edge_row(conn, &from, &relation, &to)? else {
        return Err(Error::internal(format!(
            "edge {from} -[{relation}]-> {to} was written but has no row"
        )));
    };
    let seq = stamp.seq as i64;
    match write {
        GraphWrite::Created | GraphWrite::Deleted | GraphWrite::CreatedWith(_) => {
            let clock = match write {
                GraphWrite::Created => RowClock::whole(stamp),
                GraphWrite::CreatedWith(fields) => {
                    let mut clock = RowClock::reset(stamp);
                    for field in fields {
                        clock.set_field(field, stamp);
                    }
                    clock
                }
                _ => RowClock::reset(stamp),
            };
            conn.prepare_cached("UPDATE _pluresdb_edges SET seq = ?2, ver = ?3 WHERE eid = ?1")?
                .execute(rusqlite::params![eid, seq, clock.encode()])?;
        }
        GraphWrite::Fields(fields) => {
            // A live edge without versions yet (stored before sync existed) is created now.
            let names = keys::pack(
                fields
                    .iter()
                    .map(|n| crate::value::ValueRef::Text(n.as_bytes())),
            );
            conn.prepare_cached(
                "UPDATE _pluresdb_edges SET seq = ?2,
                     ver = CASE WHEN ver IS NULL THEN ?3
                                ELSE pluresdb_clock_set(ver, ?4, ?5, ?2, ?6) END
                 WHERE eid = ?1",
            )?
            .execute(rusqlite::params![
                eid,
                seq,
                RowClock::whole(stamp).encode(),
                stamp.hlc as i64,
                i64::from(stamp.site),
                names
            ])?;
        }
    }
    Ok(())
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
