//! [`ShapeStamp`]: everything the synced collections are read from, summed up in one value,
//! so that a reader can tell whether the collections it holds are the ones its snapshot has.
//! Another process on the file may have started or stopped syncing a table, or changed its
//! columns, since this handle loaded them; a read of changes with the older ones would leave
//! out what that process synced, while the peer's cursor moves past it.

use rusqlite::Connection;

use crate::error::Result;

/// The schema, the synced collections and the recorded appearance times of their columns, as
/// one snapshot has them. Equal stamps mean equal collections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ShapeStamp {
    schema_version: i64,
    /// Each collection (id, kind, name) with its recorded column times, one a line.
    collections: Option<String>,
}

impl ShapeStamp {
    /// Reads the stamp from `conn`'s snapshot, in one statement.
    pub(crate) fn read(conn: &Connection) -> Result<ShapeStamp> {
        Ok(conn
            .prepare_cached(
                "SELECT (SELECT schema_version FROM pragma_schema_version),
                        (SELECT group_concat(line, char(10)) FROM (
                            SELECT c.id || ' ' || c.kind || ' ' || c.name || ' ' ||
                                   coalesce(m.value, '') AS line
                            FROM _pluresdb_collections c
                            LEFT JOIN _pluresdb_meta m ON m.key = 'columns:' || c.id
                            ORDER BY c.id))",
            )?
            .query_row([], |r| {
                Ok(ShapeStamp {
                    schema_version: r.get(0)?,
                    collections: r.get(1)?,
                })
            })?)
    }
}
