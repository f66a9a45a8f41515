//! Edge clocks, kept in the edge rows (`cl`, `seq`, `ver`; see the edge table in `schema.rs`)
//! rather than in `_pluresdb_clock`: an edge is written with its clock in one row, which is
//! what lets a bulk load of edges run at the speed of its inserts.

use rusqlite::{Connection, OptionalExtension};

use super::capture::GraphWrite;
use super::clock::{RowClock, Stamp};
use super::keys;
use crate::error::{Error, Result};
use crate::value::Value;

/// The row of the edge named by `from`, `relation`, `to`, as a subquery on `?1`, `?2`, `?3`.
const EDGE_BY_NAME: &str = "(SELECT eid FROM _pluresdb_edges_named
                             WHERE src = ?1 AND rel = ?2 AND dst = ?3)";

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
    let seq = stamp.seq as i64;
    let changed = match write {
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
            conn.prepare_cached(&format!(
                "UPDATE _pluresdb_edges SET seq = ?4, ver = ?5 WHERE eid = {EDGE_BY_NAME}"
            ))?
            .execute(rusqlite::params![from, relation, to, seq, clock.encode()])?
        }
        GraphWrite::Fields(fields) => {
            // A live edge without versions yet (stored before sync existed) is created now.
            let names = keys::pack(
                fields
                    .iter()
                    .map(|n| crate::value::ValueRef::Text(n.as_bytes())),
            );
            conn.prepare_cached(&format!(
                "UPDATE _pluresdb_edges SET seq = ?4,
                     ver = CASE WHEN ver IS NULL THEN ?5
                                ELSE pluresdb_clock_set(ver, ?6, ?7, ?4, ?8) END
                 WHERE eid = {EDGE_BY_NAME}"
            ))?
            .execute(rusqlite::params![
                from,
                relation,
                to,
                seq,
                RowClock::whole(stamp).encode(),
                stamp.hlc as i64,
                i64::from(stamp.site),
                names
            ])?
        }
    };
    if changed == 0 {
        return Err(Error::internal(format!(
            "edge {from} -[{relation}]-> {to} was written but has no row"
        )));
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
        .prepare_cached(
            "SELECT cl, ver FROM _pluresdb_edges_named
             WHERE src = ?1 AND rel = ?2 AND dst = ?3 AND ver IS NOT NULL",
        )?
        .query_row([from, relation, to], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}
