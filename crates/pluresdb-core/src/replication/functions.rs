//! SQL functions: key packing on every connection; change capture and
//! `pluresdb_sync_table` on the writer.

use std::sync::Arc;

use rusqlite::Connection;
use rusqlite::functions::FunctionFlags;

use super::clock::{RowClock, Stamp};
use super::keys;
use super::state::Replication;
use crate::error::{Result, user_function_error};
use crate::value::{Value, ValueRef};

fn to_sqlite(v: Value) -> rusqlite::types::Value {
    match v {
        Value::Null => rusqlite::types::Value::Null,
        Value::Integer(i) => rusqlite::types::Value::Integer(i),
        Value::Real(f) => rusqlite::types::Value::Real(f),
        Value::Text(s) => rusqlite::types::Value::Text(s),
        Value::Blob(b) => rusqlite::types::Value::Blob(b),
    }
}

/// Registers the pure functions every connection needs: `pluresdb_pack(values...)` and
/// `pluresdb_key_part(key, i)`.
pub(crate) fn register_pure(conn: &Connection) -> Result<()> {
    let pure = FunctionFlags::SQLITE_UTF8
        | FunctionFlags::SQLITE_DETERMINISTIC
        | FunctionFlags::SQLITE_INNOCUOUS;
    conn.create_scalar_function("pluresdb_pack", -1, pure, |ctx| {
        Ok(keys::pack(
            (0..ctx.len()).map(|i| ValueRef::from_sqlite(ctx.get_raw(i))),
        ))
    })?;
    conn.create_scalar_function("pluresdb_key_part", 2, pure, |ctx| {
        let key = match ctx.get_raw(0) {
            rusqlite::types::ValueRef::Blob(b) => b,
            _ => return Ok(rusqlite::types::Value::Null),
        };
        let i = ctx.get::<i64>(1)?;
        let parts = keys::unpack(key).map_err(user_function_error)?;
        Ok(usize::try_from(i)
            .ok()
            .and_then(|i| parts.into_iter().nth(i))
            .map_or(rusqlite::types::Value::Null, to_sqlite))
    })?;
    Ok(())
}

/// `pluresdb_clock_set(ver, hlc, site, seq, names)`: the row clock `ver` with the fields named
/// in the packed list `names` stamped `(hlc, site, seq)`.
fn clock_set(ctx: &rusqlite::functions::Context<'_>) -> rusqlite::Result<Vec<u8>> {
    let mut ver =
        RowClock::decode_or_empty(ctx.get_raw(0).as_blob().ok()).map_err(user_function_error)?;
    let stamp = Stamp {
        hlc: ctx.get::<i64>(1)? as u64,
        site: ctx.get::<i64>(2)? as u32,
        seq: ctx.get::<i64>(3)? as u64,
    };
    if let rusqlite::types::ValueRef::Blob(names) = ctx.get_raw(4) {
        ver.set_packed_fields(names, stamp)
            .map_err(user_function_error)?;
    }
    Ok(ver.encode())
}

/// `pluresdb_clock_rename(ver, old, added_at, new, seq)`: the row clock `ver` with field `new`
/// given the version of field `old` (a column that appeared at `added_at`), stored at `seq`.
fn clock_rename(ctx: &rusqlite::functions::Context<'_>) -> rusqlite::Result<Vec<u8>> {
    let mut ver =
        RowClock::decode_or_empty(ctx.get_raw(0).as_blob().ok()).map_err(user_function_error)?;
    let old: String = ctx.get(1)?;
    let added_at = ctx.get::<i64>(2)? as u64;
    let new: String = ctx.get(3)?;
    let seq = ctx.get::<i64>(4)? as u64;
    // The old name's version moves to the new name; none is left under either name that a
    // later column of that name could take for its own.
    match ver.column(&old, added_at) {
        Some(stamp) => ver.set_field(&new, Stamp { seq, ..stamp }),
        None => ver.remove_field(&new),
    }
    ver.remove_field(&old);
    Ok(ver.encode())
}

/// Registers the writer's functions: `pluresdb_clock_set`, `pluresdb_clock_rename`,
/// `pluresdb_sync_table(name)`,
/// `pluresdb_unsync_table(name)` and the folding scan's.
pub(crate) fn register_writer(conn: &Connection, repl: &Arc<Replication>) -> Result<()> {
    conn.create_scalar_function(
        "pluresdb_clock_set",
        5,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| clock_set(ctx),
    )?;
    conn.create_scalar_function(
        "pluresdb_clock_rename",
        5,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| clock_rename(ctx),
    )?;
    let r = repl.clone();
    conn.create_scalar_function(
        "pluresdb_sync_table",
        1,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DIRECTONLY,
        move |ctx| {
            let table: String = ctx.get(0)?;
            // SAFETY: the handle is the writer connection running this statement, used on this
            // thread only, for the duration of the call.
            let conn = unsafe { ctx.get_connection()? };
            r.sync_table_on(&conn, &table)
                .map_err(user_function_error)?;
            Ok(1)
        },
    )?;
    let r = repl.clone();
    conn.create_scalar_function(
        "pluresdb_unsync_table",
        1,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DIRECTONLY,
        move |ctx| {
            let table: String = ctx.get(0)?;
            // SAFETY: as above.
            let conn = unsafe { ctx.get_connection()? };
            r.unsync_table_on(&conn, &table)
                .map(i64::from)
                .map_err(user_function_error)
        },
    )?;
    super::dense_fold::register(conn, repl)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(hlc: u64, seq: u64) -> Stamp {
        Stamp { hlc, site: 1, seq }
    }

    /// `pluresdb_clock_rename` on `clock`, as the rename of column `old` (appeared at
    /// `added_at`) to `new` stored at `seq` runs it.
    fn renamed(clock: &RowClock, old: &str, added_at: u64, new: &str, seq: u64) -> RowClock {
        let conn = Connection::open_in_memory().unwrap();
        conn.create_scalar_function("rename", 5, FunctionFlags::SQLITE_UTF8, |ctx| {
            clock_rename(ctx)
        })
        .unwrap();
        let ver: Vec<u8> = conn
            .query_row(
                "SELECT rename(?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![clock.encode(), old, added_at as i64, new, seq as i64],
                |r| r.get(0),
            )
            .unwrap();
        RowClock::decode(&ver).unwrap()
    }

    #[test]
    fn a_rename_moves_the_old_columns_version_and_leaves_none_behind() {
        let mut clock = RowClock::whole(stamp(10, 1));
        clock.set_field("y", stamp(20, 2));
        clock.set_field("yy", stamp(5, 1));
        // The old column's own version moves to the new name, stored at the rename's seq.
        let moved = renamed(&clock, "y", 0, "yy", 9);
        assert_eq!(moved.field("yy"), Some(stamp(20, 9)));
        // None is left under the old name: a column added later under it has only the base.
        assert_eq!(moved.field("y"), Some(stamp(10, 1)));
        // The base version covers the old column only if it is newer than the column: a
        // column that appeared after the row was written gives the new name no version, and
        // one left from before under that name goes.
        let base_only = RowClock::whole(stamp(10, 1));
        assert_eq!(
            renamed(&base_only, "y", 0, "yy", 9).field("yy"),
            Some(stamp(10, 9))
        );
        let mut stale = RowClock::whole(stamp(10, 1));
        stale.set_field("yy", stamp(5, 1));
        let gone = renamed(&stale, "y", 11, "yy", 9);
        assert_eq!(gone.column("yy", u64::MAX), None);
        // Not recorded (u64::MAX, passed as -1) covers nothing either.
        assert_eq!(
            renamed(&base_only, "y", u64::MAX, "yy", 9).column("yy", u64::MAX),
            None
        );
    }
}
