//! A table's sync paused and resumed: `unsync_table` keeps the table's sync records aside
//! (`_pluresdb_paused_rows`), each with a hash of every field's value, and `sync_table` on a
//! table of that name (or the table renamed) and key brings them back.
//!
//! Without them, syncing the table again counted every row as written at that moment, so a
//! row left alone meanwhile beat every newer edit other devices had made to it. Brought back,
//! a row keeps its versions, and what was done to the table while it was not synced counts as
//! done when it syncs again: fields whose value changed are stamped then (a column added
//! meanwhile: where it holds other than its default), new rows and rows made again start a
//! life then, and rows deleted meanwhile are deleted then, on every device. Every record is
//! stored anew (the versions it had, a new `db_version`), so peers that synced while the
//! table was not synced get them too.
//!
//! A table that holds none of the rows it held when it stopped syncing (dropped on this
//! device and made again, or emptied) is a new table: its rows count as written when it syncs
//! again, nothing is deleted elsewhere, and every peer is asked for the table again, so the
//! rows the other devices have come back. A table keyed otherwise (see [`same_key`]) is
//! another table.

use std::collections::BTreeSet;

use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::added_columns::{self, AddedAt};
use super::affinity::{affinity_type, same_affinity};
use super::clock::{RowClock, Stamp};
use super::collections::{TableInfo, quote, table_info};
use super::refetch;
use super::state::Replication;
use crate::error::{Error, Result};
use crate::schema::table_exists;
use crate::value::ValueRef;
use crate::wire::put_value;

const TABLES: &str = "CREATE TABLE IF NOT EXISTS _pluresdb_paused_tables (
    id    INTEGER PRIMARY KEY,
    name  TEXT NOT NULL UNIQUE COLLATE NOCASE,
    shape TEXT NOT NULL
)";

const ROWS: &str = "CREATE TABLE IF NOT EXISTS _pluresdb_paused_rows (
    tbl    INTEGER NOT NULL,
    key    BLOB NOT NULL,
    cl     INTEGER NOT NULL,
    seq    INTEGER NOT NULL,
    ver    BLOB NOT NULL,
    hashes BLOB,
    PRIMARY KEY (tbl, key)
) WITHOUT ROWID";

/// The form of the value hashes kept ([`value_hash`] of [`put_value`]'s encoding): kept
/// hashes of another form count as different from every value.
const HASH_FORM: u32 = 1;

/// A paused table as it was when it stopped syncing.
#[derive(Serialize, Deserialize)]
struct Shape {
    /// Its key columns and their declared types (which decide how keys are stored).
    pk: Vec<String>,
    pk_types: Vec<String>,
    /// Its other columns, in the order of each row's hashes.
    fields: Vec<String>,
    /// When each column appeared (see [`added_columns`]), if that was recorded.
    added_at: Option<AddedAt>,
    /// The form of the hashes ([`HASH_FORM`]).
    hash_form: u32,
    /// Its root page, which SQLite keeps when a table is renamed.
    #[serde(default)]
    rootpage: Option<i64>,
}

/// A stable 64-bit hash of a stored value (FNV-1a of its tagged form): equal for equal
/// values, whatever build computes it.
fn value_hash(value: ValueRef<'_>, buf: &mut Vec<u8>) -> u64 {
    use std::hash::Hasher;
    buf.clear();
    put_value(buf, value);
    let mut h = fnv::FnvHasher::default();
    h.write(buf);
    h.finish()
}

/// Keeps the sync records of table `name` (collection `coll`, about to stop syncing) aside,
/// with a hash of every field of each row it has, replacing what an earlier pause kept.
/// Keeps nothing for a table that no longer exists.
pub(super) fn pause(conn: &Connection, coll: u32, name: &str) -> Result<()> {
    discard(conn, name)?;
    let info = table_info(conn, name)?;
    if !info.exists {
        return Ok(());
    }
    conn.execute_batch(&format!("{TABLES}; {ROWS}"))?;
    let shape = Shape {
        pk: info.pk.clone(),
        pk_types: info.pk_types.clone(),
        fields: info.fields.clone(),
        added_at: added_columns::read(conn, coll)?,
        hash_form: HASH_FORM,
        rootpage: rootpage(conn, name)?,
    };
    let shape = serde_json::to_string(&shape).expect("names and numbers serialize");
    conn.execute(
        "INSERT INTO _pluresdb_paused_tables(name, shape) VALUES (?1, ?2)",
        (name, shape),
    )?;
    let id = conn.last_insert_rowid();
    conn.execute(
        "INSERT INTO _pluresdb_paused_rows(tbl, key, cl, seq, ver)
         SELECT ?1, key, cl, seq, ver FROM _pluresdb_clock WHERE tbl = ?2",
        (id, coll),
    )?;
    let mut rows = conn.prepare(&select_rows(name, &info))?;
    let mut set =
        conn.prepare("UPDATE _pluresdb_paused_rows SET hashes = ?3 WHERE tbl = ?1 AND key = ?2")?;
    let mut rows = rows.query([])?;
    let (mut buf, mut hashes) = (Vec::new(), Vec::new());
    while let Some(row) = rows.next()? {
        hashes.clear();
        for i in 0..info.fields.len() {
            let h = value_hash(ValueRef::from_sqlite(row.get_ref(i + 1)?), &mut buf);
            hashes.extend_from_slice(&h.to_le_bytes());
        }
        set.execute((id, key_of(row)?, &hashes))?;
    }
    Ok(())
}

/// The packed key in the first column of `row`.
fn key_of<'r>(row: &'r rusqlite::Row<'_>) -> Result<&'r [u8]> {
    match row.get_ref(0)? {
        rusqlite::types::ValueRef::Blob(key) => Ok(key),
        _ => Err(Error::internal("a packed key is not a blob")),
    }
}

/// SQL reading every row of table `name` (of shape `info`): its packed key, then its fields.
fn select_rows(name: &str, info: &TableInfo) -> String {
    let key = info.key_list();
    let fields: String = info
        .fields
        .iter()
        .map(|f| format!(", {}", quote(f)))
        .collect();
    format!("SELECT pluresdb_pack({key}){fields} FROM {}", quote(name))
}

/// The paused table named `name` (in any case), if there is one.
fn find(conn: &Connection, name: &str) -> Result<Option<(i64, Shape)>> {
    if !table_exists(conn, "_pluresdb_paused_tables")? {
        return Ok(None);
    }
    let found: Option<(i64, String)> = conn
        .query_row(
            "SELECT id, shape FROM _pluresdb_paused_tables WHERE name = ?1",
            [name],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    found
        .map(|(id, text)| {
            let shape = serde_json::from_str(&text).map_err(|e| {
                Error::internal(format!(
                    "_pluresdb_paused_tables holds a shape for {name:?} that does not read: {e}"
                ))
            })?;
            Ok((id, shape))
        })
        .transpose()
}

/// Drops the records kept for table `name` when it stopped syncing, if any: it syncs again as
/// a new table.
pub(super) fn discard(conn: &Connection, name: &str) -> Result<()> {
    if let Some((id, _)) = find(conn, name)? {
        forget(conn, id)?;
    }
    Ok(())
}

/// The root page of table `name`, if there is such a table.
fn rootpage(conn: &Connection, name: &str) -> Result<Option<i64>> {
    Ok(conn
        .query_row(
            "SELECT rootpage FROM sqlite_schema WHERE type = 'table' AND name = ?1 COLLATE NOCASE",
            [name],
            |r| r.get(0),
        )
        .optional()?)
}

/// The paused table that table `name` (of shape `info`) was before a rename (`ALTER TABLE ...
/// RENAME TO`, which keeps a table's root page and columns) while it did not sync: one whose
/// name no table has now, with the root page and the columns `name` has. (A table dropped
/// while paused leaves its root page to the next table made, which has other columns.)
fn find_renamed(conn: &Connection, name: &str, info: &TableInfo) -> Result<Option<(i64, Shape)>> {
    if !table_exists(conn, "_pluresdb_paused_tables")? {
        return Ok(None);
    }
    let Some(root) = rootpage(conn, name)? else {
        return Ok(None);
    };
    let gone: Vec<String> = conn
        .prepare(
            "SELECT name FROM _pluresdb_paused_tables
             WHERE name NOT IN (SELECT name FROM sqlite_schema WHERE type = 'table')",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for old in gone {
        if let Some((id, shape)) = find(conn, &old)?
            && shape.rootpage == Some(root)
            && same_names(&shape.pk, &info.pk)
            && same_names(&shape.fields, &info.fields)
        {
            return Ok(Some((id, shape)));
        }
    }
    Ok(None)
}

/// Drops paused table `id` and its records.
fn forget(conn: &Connection, id: i64) -> Result<()> {
    conn.execute("DELETE FROM _pluresdb_paused_rows WHERE tbl = ?1", [id])?;
    conn.execute("DELETE FROM _pluresdb_paused_tables WHERE id = ?1", [id])?;
    Ok(())
}

/// What a field of the table now was when it paused.
enum Was {
    /// Field `j` of the paused shape.
    Field(usize),
    /// Not there: it appeared while paused; the hash of its default (`None`: not known).
    New(Option<u64>),
}

/// A row's record kept aside.
struct Kept {
    cl: i64,
    ver: Vec<u8>,
    /// Each field's value hash, in the paused shape's order (none: the row was not there).
    hashes: Option<Vec<u8>>,
}

/// How a kept row's field compares with its value now.
enum Field {
    Same,
    Changed,
    /// A column added while paused that holds its default: no version of this row's covers it.
    Default,
}

impl Kept {
    /// How field `was` holding `value` compares (kept hashes of form `form`).
    fn field(&self, was: &Was, form: u32, value: ValueRef<'_>, buf: &mut Vec<u8>) -> Field {
        let now = value_hash(value, buf);
        match *was {
            Was::Field(j) => {
                let old = self.hashes.as_deref().and_then(|h| h.get(j * 8..j * 8 + 8));
                if form == HASH_FORM && old == Some(&now.to_le_bytes()[..]) {
                    Field::Same
                } else {
                    Field::Changed
                }
            }
            // (A default this cannot tell counts as held: what the peers wrote stays.)
            Was::New(default) if default.is_none_or(|d| d == now) => Field::Default,
            Was::New(_) => Field::Changed,
        }
    }
}

impl Replication {
    /// Brings back the records kept when table `name` (collection `coll` now, of shape `info`)
    /// stopped syncing, if there are any and it is the same table: see the module's doc.
    /// Returns false when there were none (the caller records every row as written now).
    pub(super) fn resume_table(
        &self,
        conn: &Connection,
        coll: u32,
        name: &str,
        info: &TableInfo,
    ) -> Result<bool> {
        let found = match find(conn, name)? {
            Some(found) => Some(found),
            None => find_renamed(conn, name, info)?,
        };
        let Some((id, mut shape)) = found else {
            return Ok(false);
        };
        if reordered(&shape.pk, &info.pk) {
            // The same key columns in another order: the kept keys go in the new one (peers
            // put each key in their own order, see pluresdb-sync's `KeyColumns`).
            let order: Vec<usize> = (info.pk.iter())
                .filter_map(|n| shape.pk.iter().position(|o| o.eq_ignore_ascii_case(n)))
                .collect();
            rekey(conn, id, &order)?;
            shape.pk_types = order.iter().map(|&p| shape.pk_types[p].clone()).collect();
            shape.pk = info.pk.clone();
        }
        let same_key = same_key(&shape, info);
        if !same_key {
            // Another table under that name: its rows are not the paused one's.
            forget(conn, id)?;
            return Ok(false);
        }
        // Dropped and made again, or emptied: see the module's doc.
        let made_again = !holds_a_kept_row(conn, id, name, info)?;
        let defaults = defaults(conn, name, info, &shape.fields)?;
        let was: Vec<Was> = info
            .fields
            .iter()
            .zip(defaults)
            .map(
                |(f, default)| match shape.fields.iter().position(|o| o.eq_ignore_ascii_case(f)) {
                    Some(j) => Was::Field(j),
                    None => Was::New(default),
                },
            )
            .collect();
        // Columns added while paused appear before this resume's writes and after every
        // version kept: those do not cover them. (Without recorded times, the kept columns
        // count as there from the start, as `added_columns` would have them.)
        let appeared = self.clock.now().as_u64();
        let kept_times = shape
            .added_at
            .unwrap_or_else(|| shape.fields.iter().map(|f| (f.clone(), 0)).collect());
        let times = (info.fields.iter())
            .map(|f| {
                let kept = kept_times.iter().find(|(k, _)| k.eq_ignore_ascii_case(f));
                (f.clone(), kept.map_or(appeared, |(_, &t)| t))
            })
            .collect();
        added_columns::write(conn, coll, &times)?;
        let stamp = self.local_stamp(conn, self.clock.now())?;
        let mut put = conn.prepare(
            "INSERT OR REPLACE INTO _pluresdb_clock(tbl, key, cl, seq, ver)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut put = |key: &[u8], cl: i64, clock: RowClock| -> Result<()> {
            put.execute((coll, key, cl, stamp.seq as i64, clock.encode()))?;
            Ok(())
        };
        let rows = Rows {
            id,
            name,
            info,
            was: &was,
            form: shape.hash_form,
        };
        rows.bring_back(conn, stamp, &mut put)?;
        // Kept records of rows no longer here: deleted now (unless the table was made again:
        // then they come back from the peers), or still deleted.
        let gone: Vec<(Vec<u8>, i64, Vec<u8>)> = conn
            .prepare(
                "SELECT key, cl, ver FROM _pluresdb_paused_rows p WHERE tbl = ?1
                 AND NOT EXISTS (SELECT 1 FROM _pluresdb_clock c WHERE c.tbl = ?2 AND c.key = p.key)",
            )?
            .query_map((id, coll), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for (key, cl, ver) in gone {
            if cl % 2 == 1 {
                if !made_again {
                    put(&key, cl + 1, RowClock::reset(stamp))?;
                }
            } else {
                let mut clock = RowClock::decode(&ver)?;
                clock.store_anew(stamp.seq);
                put(&key, cl, clock)?;
            }
        }
        forget(conn, id)?;
        if made_again {
            // Every peer is asked for the table again (its changes after the cursor it had,
            // and all of the table's, this device's own too).
            let table = BTreeSet::from([(name.to_owned(), String::new())]);
            refetch::set_cursors_back(conn, &table, false)?;
        }
        Ok(true)
    }
}

/// Whether key columns `now` are those of `was` in another order.
fn reordered(was: &[String], now: &[String]) -> bool {
    let sorted = |names: &[String]| {
        let mut names: Vec<String> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
        names.sort();
        names
    };
    !same_names(was, now) && sorted(was) == sorted(now)
}

/// Puts the keys kept for paused table `id` in another order: key value `i` becomes the one
/// at `order[i]`. (All at once: a key may become one another row had.)
fn rekey(conn: &Connection, id: i64, order: &[usize]) -> Result<()> {
    type Kept = (Vec<u8>, i64, i64, Vec<u8>, Option<Vec<u8>>);
    let kept: Vec<Kept> = conn
        .prepare("SELECT key, cl, seq, ver, hashes FROM _pluresdb_paused_rows WHERE tbl = ?1")?
        .query_map([id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    conn.execute("DELETE FROM _pluresdb_paused_rows WHERE tbl = ?1", [id])?;
    let mut put = conn.prepare(
        "INSERT INTO _pluresdb_paused_rows(tbl, key, cl, seq, ver, hashes)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for (key, cl, seq, ver, hashes) in kept {
        let values = super::keys::unpack(&key)?;
        if values.len() != order.len() {
            return Err(Error::internal(format!(
                "a key kept for a paused table has {} values, its table {}",
                values.len(),
                order.len()
            )));
        }
        let key =
            super::keys::pack_values(&order.iter().map(|&p| values[p].clone()).collect::<Vec<_>>());
        put.execute(rusqlite::params![id, key, cl, seq, ver, hashes])?;
    }
    Ok(())
}

/// Whether two lists of column names are the same (SQLite's names are ASCII
/// case-insensitive).
fn same_names(a: &[String], b: &[String]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a.eq_ignore_ascii_case(b))
}

/// Whether the table of shape `now` is keyed as the paused one was: as many key columns, of
/// the same affinities, each the same column or one renamed (a name the table did not have;
/// keys sync by position). Another column made the key makes another table (the same key
/// columns in another order are the same table: the kept keys take the new order, see
/// [`rekey`]).
fn same_key(was: &Shape, now: &TableInfo) -> bool {
    let had = |name: &str| (was.pk.iter().chain(&was.fields)).any(|c| c.eq_ignore_ascii_case(name));
    was.pk.len() == now.pk.len()
        && (was.pk.iter().zip(&now.pk)).all(|(a, b)| a.eq_ignore_ascii_case(b) || !had(b))
        && (was.pk_types.iter().zip(&now.pk_types)).all(|(a, b)| same_affinity(a, b))
}

/// Whether table `name` holds a row whose record, kept as paused table `id`, is alive (a
/// table that holds none is another one, or one emptied: see the module's doc); also true
/// when no such record was kept (an empty table paused).
fn holds_a_kept_row(conn: &Connection, id: i64, name: &str, info: &TableInfo) -> Result<bool> {
    // (The keys packed apart: a key column may be named like a column of the kept rows.)
    let sql = format!(
        "SELECT NOT EXISTS (SELECT 1 FROM _pluresdb_paused_rows WHERE tbl = ?1 AND cl % 2 = 1)
             OR EXISTS (SELECT 1 FROM (SELECT pluresdb_pack({}) AS k FROM {}) t
                        JOIN _pluresdb_paused_rows p ON p.tbl = ?1 AND p.key = t.k
                        AND p.cl % 2 = 1)",
        info.key_list(),
        quote(name)
    );
    Ok(conn.query_row(&sql, [id], |r| r.get(0))?)
}

/// The hash of the value each field of `info` not among `kept` gets by default, as SQLite
/// stores it; `None` for the others, and for a default this cannot tell.
fn defaults(
    conn: &Connection,
    name: &str,
    info: &TableInfo,
    kept: &[String],
) -> Result<Vec<Option<u64>>> {
    let mut out = vec![None; info.fields.len()];
    let is_kept = |f: &String| kept.iter().any(|k| k.eq_ignore_ascii_case(f));
    if info.fields.iter().all(is_kept) {
        return Ok(out);
    }
    let declared: Vec<(String, String, Option<String>)> = conn
        .prepare("SELECT name, type, dflt_value FROM pragma_table_xinfo(?1)")?
        .query_map([name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (i, f) in info.fields.iter().enumerate() {
        if is_kept(f) {
            continue;
        }
        if let Some((_, ty, default)) = declared.iter().find(|(n, ..)| n == f) {
            out[i] = default_hash(ty, default.as_deref())?;
        }
    }
    Ok(out)
}

/// The hash of the value a column declared `ty` with DEFAULT text `default` gets, as SQLite
/// stores it, found by making a row of a table so declared in a private in-memory database
/// (of the type's affinity: the declared type's text is not spliced in): a DEFAULT's text is
/// no expression to evaluate alone (`DEFAULT pending` is a string, the column's type converts
/// it, and the text of `DEFAULT (1 + 1)` comes without its parentheses). `None` when it
/// cannot tell.
fn default_hash(ty: &str, default: Option<&str>) -> Result<Option<u64>> {
    let probe = Connection::open_in_memory()?;
    let ty = affinity_type(ty);
    let forms = match default {
        None => vec![String::new()],
        Some(d) => vec![format!(" DEFAULT {d}"), format!(" DEFAULT ({d})")],
    };
    for form in forms {
        // (One statement each: `execute` refuses text after it.)
        let made = format!("CREATE TABLE d(v {ty}{form})");
        if probe.execute(&made, []).is_err() {
            continue;
        }
        let hash = probe
            .execute("INSERT INTO d DEFAULT VALUES", [])
            .and_then(|_| {
                probe.query_row("SELECT v FROM d", [], |r| {
                    Ok(value_hash(
                        ValueRef::from_sqlite(r.get_ref(0)?),
                        &mut Vec::new(),
                    ))
                })
            });
        if let Ok(hash) = hash {
            return Ok(Some(hash));
        }
        probe.execute("DROP TABLE d", [])?;
    }
    Ok(None)
}

/// The rows of a table syncing again, and what its fields were when it paused.
struct Rows<'a> {
    /// The paused table's id.
    id: i64,
    name: &'a str,
    info: &'a TableInfo,
    was: &'a [Was],
    /// The form of the kept hashes.
    form: u32,
}

impl Rows<'_> {
    /// Stores (with `put`) a record for every row of the table: the kept one stored anew, with
    /// fields changed while paused stamped `stamp`; `stamp` for a row new or made again.
    fn bring_back(
        &self,
        conn: &Connection,
        stamp: Stamp,
        put: &mut impl FnMut(&[u8], i64, RowClock) -> Result<()>,
    ) -> Result<()> {
        let mut rows = conn.prepare(&select_rows(self.name, self.info))?;
        let mut kept = conn.prepare(
            "SELECT cl, ver, hashes FROM _pluresdb_paused_rows WHERE tbl = ?1 AND key = ?2",
        )?;
        let mut buf = Vec::new();
        let mut rows = rows.query([])?;
        while let Some(row) = rows.next()? {
            let key = key_of(row)?;
            let kept = kept
                .query_row((self.id, key), |r| {
                    Ok(Kept {
                        cl: r.get(0)?,
                        ver: r.get(1)?,
                        hashes: r.get(2)?,
                    })
                })
                .optional()?;
            match kept {
                None => put(key, 1, RowClock::whole(stamp))?,
                Some(kept) if kept.cl % 2 == 0 => put(key, kept.cl + 1, RowClock::whole(stamp))?,
                Some(kept) => {
                    let mut clock = RowClock::decode(&kept.ver)?;
                    clock.store_anew(stamp.seq);
                    for (i, was) in self.was.iter().enumerate() {
                        let value = ValueRef::from_sqlite(row.get_ref(i + 1)?);
                        let field = &self.info.fields[i];
                        match kept.field(was, self.form, value, &mut buf) {
                            Field::Same => {}
                            Field::Changed => clock.set_field(field, stamp),
                            Field::Default => clock.remove_field(field),
                        }
                    }
                    put(key, kept.cl, clock)?;
                }
            }
        }
        Ok(())
    }
}
