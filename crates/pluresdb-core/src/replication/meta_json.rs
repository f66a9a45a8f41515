//! Values kept as JSON text in `_pluresdb_meta` (missed changes, column times, dropped
//! columns).

use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// The value under `key`, if there is one; `what` names it for the error when it does not
/// read as one.
pub(crate) fn read<T: DeserializeOwned>(
    conn: &Connection,
    key: &str,
    what: &str,
) -> Result<Option<T>> {
    let text: Option<String> = conn
        .prepare_cached("SELECT value FROM _pluresdb_meta WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?;
    text.map(|t| {
        serde_json::from_str(&t)
            .map_err(|e| Error::internal(format!("_pluresdb_meta's {key:?} is not {what}: {e}")))
    })
    .transpose()
}

/// Stores `value` under `key`.
pub(crate) fn write<T: Serialize>(conn: &Connection, key: &str, value: &T) -> Result<()> {
    let text = serde_json::to_string(value).expect("maps and lists of names and numbers serialize");
    conn.prepare_cached(
        "INSERT INTO _pluresdb_meta(key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    )?
    .execute((key, text))?;
    Ok(())
}

/// Removes what is under `key`.
pub(crate) fn delete(conn: &Connection, key: &str) -> Result<()> {
    conn.prepare_cached("DELETE FROM _pluresdb_meta WHERE key = ?1")?
        .execute([key])?;
    Ok(())
}
