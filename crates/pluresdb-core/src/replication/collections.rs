//! Replicated collections: nodes, edges and opted-in SQL tables, with the shape checks that
//! decide whether a table can be replicated and where its key and fields sit for change capture.

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension};

use super::added_columns;
use super::clock::MAX_FIELD_BYTES;
use crate::error::{Error, Result};
use crate::updated_columns::MaskCache;

/// Collection ids of the graph store.
pub(crate) const NODES_ID: u32 = 1;
pub(crate) const EDGES_ID: u32 = 2;

/// What a collection holds.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Kind {
    Nodes,
    Edges,
    Table(TableInfo),
}

/// The shape of a replicated SQL table.
#[derive(Clone, Debug, PartialEq, Default)]
pub(crate) struct TableInfo {
    /// Primary-key columns in key order.
    pub(crate) pk: Vec<String>,
    /// Their declared types (which decide how SQLite converts the values stored in them).
    pub(crate) pk_types: Vec<String>,
    /// The other stored columns in table order (generated columns excluded).
    pub(crate) fields: Vec<String>,
    /// When each field appeared here (see [`added_columns`](super::added_columns)).
    pub(crate) added_at: Vec<u64>,
    /// Column positions (as the pre-update hook numbers them) of `pk` and of `fields`.
    pub(crate) pk_pos: Vec<usize>,
    pub(crate) field_pos: Vec<usize>,
    /// Number of columns, generated ones included (what the hook sees while this is current).
    pub(crate) columns: usize,
    /// False when the table no longer exists.
    pub(crate) exists: bool,
    /// The key is the table's rowid (`INTEGER PRIMARY KEY` of a rowid table): integers only.
    pub(crate) rowid_key: bool,
    /// Which columns an UPDATE may change, by the statements prepared so far.
    pub(crate) update_mask: MaskCache,
    /// Fields (by index) that PluresDB's own triggers write: vector columns filled from
    /// another column (`embed_from`; set by [`Collections::load`]).
    pub(crate) derived: Vec<usize>,
}

impl TableInfo {
    /// The key columns, quoted, as a list (`"a", "b"`).
    pub(crate) fn key_list(&self) -> String {
        self.pk
            .iter()
            .map(|c| quote(c))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The packed key of row `r` of the table (SQL; the columns qualified, so that a key column
    /// named like a column of `_pluresdb_clock` is the table's).
    pub(crate) fn key_of_row(&self) -> String {
        let columns: Vec<String> = self.pk.iter().map(|c| format!("r.{}", quote(c))).collect();
        format!("pluresdb_pack({})", columns.join(", "))
    }

    /// The condition that picks the row whose key is bound as `?1`, `?2`, ...
    pub(crate) fn key_match(&self) -> String {
        (self.pk.iter().enumerate())
            .map(|(i, c)| format!("{} = ?{}", quote(c), i + 1))
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    /// The condition that joins row `r` of the table to clock record `c` of its key.
    pub(crate) fn row_of_clock_key(&self) -> String {
        self.row_of_key("c.key")
    }

    /// The condition that picks row `r` of the table whose packed key is `key` (SQL).
    pub(crate) fn row_of_key(&self, key: &str) -> String {
        (self.pk.iter().enumerate())
            .map(|(i, c)| format!("r.{} = pluresdb_key_part({key}, {i})", quote(c)))
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    /// When field `i` appeared here (0 when not known: there from the start).
    pub(crate) fn added_at(&self, i: usize) -> u64 {
        self.added_at.get(i).copied().unwrap_or(0)
    }
}

/// A column renamed: its old name, when the old column appeared here (see
/// [`TableInfo::added_at`]), and its new name.
pub(crate) type Renamed = (String, u64, String);

/// One replicated collection.
#[derive(Debug)]
pub(crate) struct Collection {
    pub(crate) id: u32,
    pub(crate) name: String,
    pub(crate) kind: Kind,
    /// A table's root page (0: none): a table renamed keeps it (see
    /// `Replication::follow_vanished`).
    pub(crate) rootpage: i64,
    /// A table's UNIQUE indexes besides its key: `(name, name on (columns))` (see
    /// [`extra_unique_indexes`]).
    pub(crate) unique_indexes: Vec<(String, String)>,
}

/// The replicated collections of a database.
#[derive(Default)]
pub(crate) struct Collections {
    by_id: HashMap<u32, Arc<Collection>>,
    by_name: HashMap<String, u32>,
    /// The same by name in lower case (SQLite's names are ASCII case-insensitive).
    by_lower_name: HashMap<String, u32>,
}

impl Collections {
    pub(crate) fn load(conn: &Connection) -> Result<Collections> {
        let mut out = Collections::default();
        let mut stmt =
            conn.prepare("SELECT id, name, kind FROM _pluresdb_collections ORDER BY id")?;
        let rows: Vec<(i64, String, String)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let embedded = embedded_columns(conn)?;
        for (id, name, kind) in rows {
            let id =
                u32::try_from(id).map_err(|_| Error::internal("collection id out of range"))?;
            let (rootpage, unique_indexes) = match kind.as_str() {
                "table" => (
                    conn.prepare_cached(
                        "SELECT rootpage FROM sqlite_schema WHERE type = 'table' AND name = ?1",
                    )?
                    .query_row([&name], |r| r.get(0))
                    .optional()?
                    .unwrap_or(0),
                    extra_unique_indexes(conn, &name)?,
                ),
                _ => (0, Vec::new()),
            };
            let kind = match kind.as_str() {
                "nodes" => Kind::Nodes,
                "edges" => Kind::Edges,
                _ => {
                    let mut info = table_info(conn, &name)?;
                    let recorded = added_columns::read(conn, id)?;
                    info.added_at = info
                        .fields
                        .iter()
                        .map(|f| added_columns::added_at(recorded.as_ref(), f))
                        .collect();
                    info.derived = (info.fields.iter().enumerate())
                        .filter(|(_, f)| {
                            embedded.iter().any(|(t, c)| {
                                t.eq_ignore_ascii_case(&name) && c.eq_ignore_ascii_case(f)
                            })
                        })
                        .map(|(i, _)| i)
                        .collect();
                    Kind::Table(info)
                }
            };
            out.by_name.insert(name.clone(), id);
            out.by_lower_name.insert(name.to_ascii_lowercase(), id);
            out.by_id.insert(
                id,
                Arc::new(Collection {
                    id,
                    name,
                    kind,
                    rootpage,
                    unique_indexes,
                }),
            );
        }
        Ok(out)
    }

    /// The replicated SQL tables that exist, with where their key and fields sit.
    pub(crate) fn tables(&self) -> Vec<Arc<Collection>> {
        self.by_id
            .values()
            .filter(|c| matches!(&c.kind, Kind::Table(info) if info.exists))
            .cloned()
            .collect()
    }

    /// The synced tables that existed in `before` and exist no longer (dropped or renamed):
    /// the collection as it was in `before`.
    pub(crate) fn vanished_since(&self, before: &Collections) -> Vec<Arc<Collection>> {
        let mut gone = Vec::new();
        for c in self.by_id.values() {
            if let Kind::Table(info) = &c.kind
                && !info.exists
                && let Some(old) = before.by_id.get(&c.id)
                && matches!(&old.kind, Kind::Table(old) if old.exists)
            {
                gone.push(old.clone());
            }
        }
        gone
    }

    /// The columns of synced tables renamed since `before` (`ALTER TABLE ... RENAME COLUMN`
    /// keeps a column's place; a column dropped and another added would move it to the end):
    /// per collection, `(old name, when the old column appeared, new name)`.
    pub(crate) fn renamed_columns_since(&self, before: &Collections) -> Vec<(u32, Vec<Renamed>)> {
        let mut renamed = Vec::new();
        for c in self.tables() {
            let (Kind::Table(now), Some(Kind::Table(old))) =
                (&c.kind, before.by_id.get(&c.id).map(|c| &c.kind))
            else {
                continue;
            };
            if !old.exists || old.fields.len() != now.fields.len() {
                continue;
            }
            let names: Vec<Renamed> = (old.fields.iter().zip(&now.fields).enumerate())
                .filter(|(_, (o, n))| o != n && !now.fields.contains(o) && !old.fields.contains(n))
                .map(|(i, (o, n))| (o.clone(), old.added_at(i), n.clone()))
                .collect();
            if !names.is_empty() {
                renamed.push((c.id, names));
            }
        }
        renamed
    }

    /// The UNIQUE indexes of the synced tables besides their keys: `(collection id, index
    /// name)`, which a rename of the table or of a column keeps.
    pub(crate) fn unique_indexes(&self) -> Vec<(u32, String)> {
        let tables = self.tables();
        let each = tables.iter().flat_map(|c| {
            c.unique_indexes
                .iter()
                .map(|(name, _)| (c.id, name.clone()))
        });
        each.collect()
    }

    /// The collection `id`.
    pub(crate) fn by_id(&self, id: u32) -> Option<&Arc<Collection>> {
        self.by_id.get(&id)
    }

    /// `(table, column)` of the synced tables' columns whose names are too long to sync.
    pub(crate) fn unsyncable_columns(&self) -> Vec<(String, String)> {
        let mut found = Vec::new();
        for c in self.tables() {
            if let Kind::Table(info) = &c.kind {
                let long = info.fields.iter().filter(|f| f.len() > MAX_FIELD_BYTES);
                found.extend(long.map(|f| (c.name.clone(), f.clone())));
            }
        }
        found
    }

    /// The latest time a column of a synced table was recorded as appearing (0: none).
    pub(crate) fn newest_column(&self) -> u64 {
        self.tables()
            .iter()
            .filter_map(|c| match &c.kind {
                Kind::Table(info) => info
                    .added_at
                    .iter()
                    .copied()
                    .filter(|&t| t != u64::MAX)
                    .max(),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }

    pub(crate) fn has_tables(&self) -> bool {
        self.by_id
            .values()
            .any(|c| matches!(c.kind, Kind::Table(_)))
    }

    /// The collection `name`, in any case (as SQLite names tables: a peer's `NOTES` is this
    /// database's `notes`).
    pub(crate) fn by_name(&self, name: &str) -> Option<&Arc<Collection>> {
        let id = match self.by_name.get(name) {
            Some(id) => id,
            None => self.by_lower_name.get(&name.to_ascii_lowercase())?,
        };
        self.by_id.get(id)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<Collection>> {
        let mut all: Vec<_> = self.by_id.values().collect();
        all.sort_by_key(|c| c.id);
        all.into_iter()
    }
}

/// Quotes an SQL identifier.
pub(crate) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// One column: `(name, declared type, not null, pk position, hidden)`, in table order.
type ColumnRow = (String, String, bool, i64, i64);

/// Columns of `table`.
fn columns(conn: &Connection, table: &str) -> Result<Vec<ColumnRow>> {
    let mut stmt =
        conn.prepare("SELECT name, type, \"notnull\", pk, hidden FROM pragma_table_xinfo(?1)")?;
    let rows = stmt
        .query_map([table], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get::<_, i64>(2)? != 0,
                r.get(3)?,
                r.get(4)?,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

pub(crate) fn table_info(conn: &Connection, table: &str) -> Result<TableInfo> {
    let cols = columns(conn, table)?;
    if cols.is_empty() {
        return Ok(TableInfo::default());
    }
    let mut pk: Vec<(i64, usize)> = cols
        .iter()
        .enumerate()
        .filter(|(_, c)| c.3 > 0)
        .map(|(pos, c)| (c.3, pos))
        .collect();
    pk.sort();
    let without_rowid: bool = conn
        .prepare_cached("SELECT wr FROM pragma_table_list WHERE schema = 'main' AND name = ?1")?
        .query_row([table], |r| r.get(0))
        .optional()?
        .unwrap_or(false);
    let rowid_key =
        pk.len() == 1 && cols[pk[0].1].1.eq_ignore_ascii_case("INTEGER") && !without_rowid;
    let field_pos: Vec<usize> = (0..cols.len())
        .filter(|&pos| cols[pos].3 == 0 && cols[pos].4 == 0)
        .collect();
    Ok(TableInfo {
        pk: pk.iter().map(|&(_, pos)| cols[pos].0.clone()).collect(),
        pk_types: pk.iter().map(|&(_, pos)| cols[pos].1.clone()).collect(),
        fields: field_pos.iter().map(|&pos| cols[pos].0.clone()).collect(),
        added_at: Vec::new(),
        pk_pos: pk.into_iter().map(|(_, pos)| pos).collect(),
        field_pos,
        columns: cols.len(),
        exists: true,
        rowid_key,
        update_mask: MaskCache::default(),
        derived: Vec::new(),
    })
}

/// `(table, column)` of every vector column that an index fills from another column (its
/// triggers write it).
fn embedded_columns(conn: &Connection) -> Result<Vec<(String, String)>> {
    let indexes_exist = conn
        .query_row(
            "SELECT 1 FROM sqlite_schema WHERE name = '_pluresdb_vector_indexes'",
            [],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    if !indexes_exist {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare_cached(
        "SELECT tbl, col FROM _pluresdb_vector_indexes WHERE embed_from IS NOT NULL",
    )?;
    let columns = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(columns)
}

/// Checks that `table` can be replicated; the error says why not and what to change.
pub(crate) fn check_shape(conn: &Connection, table: &str) -> Result<TableInfo> {
    let refuse = |why: String| Error::invalid(format!("cannot sync table {table:?}: {why}"));
    if table.starts_with("_pluresdb") || table.starts_with("sqlite_") {
        return Err(refuse("it is an internal table".into()));
    }
    let row: Option<(String, Option<String>)> = conn
        .query_row(
            "SELECT type, sql FROM sqlite_schema WHERE name = ?1",
            [table],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((kind, sql)) = row else {
        return Err(Error::not_found(format!(
            "cannot sync table {table:?}: there is no such table"
        )));
    };
    let sql = sql.unwrap_or_default();
    // SQLite tells virtual tables (FTS5, R*Tree) and their shadow tables from ordinary ones.
    let kind = match kind.as_str() {
        "table" => conn
            .query_row(
                "SELECT type FROM pragma_table_list WHERE schema = 'main' AND name = ?1",
                [table],
                |r| r.get::<_, String>(0),
            )
            .optional()?
            .unwrap_or(kind),
        _ => kind,
    };
    if kind != "table" {
        let kind = match kind.as_str() {
            "virtual" => "virtual table (its rows are kept by its module)",
            "shadow" => "shadow table (a virtual table keeps its data there)",
            other => other,
        };
        return Err(refuse(format!(
            "it is a {kind}, not an ordinary table; sync the ordinary tables its rows come from"
        )));
    }
    let cols = columns(conn, table)?;
    if let Some(c) = cols.iter().find(|c| c.0.len() > MAX_FIELD_BYTES) {
        return Err(refuse(format!(
            "a column name is {} bytes long, and sync names columns of up to {MAX_FIELD_BYTES} \
             bytes; rename column {:?}...",
            c.0.len(),
            c.0.chars().take(20).collect::<String>()
        )));
    }
    let mut pk: Vec<&ColumnRow> = cols.iter().filter(|c| c.3 > 0).collect();
    pk.sort_by_key(|c| c.3);
    if pk.is_empty() {
        return Err(refuse(
            "it has no primary key, and sync needs one to recognize a row on every device; \
             add one (a TEXT key holding a UUID is best)"
                .into(),
        ));
    }
    // Asked of SQLite, not looked for in the CREATE statement (where a default value or a
    // comment may hold the words).
    let without_rowid = conn
        .prepare("SELECT 1 FROM pragma_table_list WHERE schema = 'main' AND name = ?1 AND wr")?
        .exists([table])?;
    let rowid_alias = pk.len() == 1 && pk[0].1.eq_ignore_ascii_case("INTEGER") && !without_rowid;
    for c in &pk {
        if !c.2 && !rowid_alias {
            return Err(refuse(format!(
                "primary key column {:?} may hold NULL (SQLite allows that for keys); declare it NOT NULL",
                c.0
            )));
        }
    }
    // AUTOINCREMENT goes only with a rowid alias; SQLite does not say whether a table has it.
    if rowid_alias && crate::sql_text::has_bare_word(&sql, "autoincrement") {
        return Err(refuse(
            "it uses AUTOINCREMENT, whose keys collide between devices that insert offline; use \
             TEXT keys (UUIDs) instead"
                .into(),
        ));
    }
    if let Some((_, index)) = extra_unique_indexes(conn, table)?.first() {
        // (A constraint's index cannot be dropped: the table is rebuilt without it.)
        let remove = if index.starts_with(UNIQUE_CONSTRAINT) {
            "rebuild the table without it"
        } else {
            "drop it"
        };
        return Err(refuse(format!(
            "{index} could be violated by rows merged from other devices: {remove} (a plain \
             index instead), or make those columns part of the primary key"
        )));
    }
    for (name, _, origin) in index_list(conn, table)? {
        if origin == "pk" {
            let collations: Vec<String> = conn
                .prepare("SELECT coll FROM pragma_index_xinfo(?1) WHERE key = 1")?
                .query_map([name], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            if let Some(c) = collations
                .iter()
                .find(|c| !c.eq_ignore_ascii_case("BINARY"))
            {
                return Err(refuse(format!(
                    "its primary key uses collation {c}; sync compares keys byte for byte, so use \
                     the default BINARY collation"
                )));
            }
        }
    }
    table_info(conn, table)
}

/// The indexes of `table`: `(name, unique, origin)` (`pk`, `u` for a UNIQUE constraint, `c`
/// for CREATE INDEX).
fn index_list(conn: &Connection, table: &str) -> Result<Vec<(String, bool, String)>> {
    let mut stmt =
        conn.prepare_cached("SELECT name, \"unique\", origin FROM pragma_index_list(?1)")?;
    let rows = stmt.query_map([table], |r| {
        Ok((r.get(0)?, r.get::<_, i64>(1)? != 0, r.get(2)?))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// How [`extra_unique_indexes`] names the index of a UNIQUE constraint in the table's
/// definition (as opposed to `unique index NAME`), which no DROP INDEX removes.
const UNIQUE_CONSTRAINT: &str = "the UNIQUE constraint";

/// The UNIQUE indexes of `table` besides its primary key: `(name, name on (columns))`. Rows
/// merged from other devices could break them (each device kept the index where it wrote).
pub(crate) fn extra_unique_indexes(
    conn: &Connection,
    table: &str,
) -> Result<Vec<(String, String)>> {
    let mut found = Vec::new();
    for (name, unique, origin) in index_list(conn, table)? {
        if !unique || origin == "pk" {
            continue;
        }
        let cols: Vec<String> = conn
            .prepare_cached("SELECT name FROM pragma_index_info(?1) ORDER BY seqno")?
            .query_map([&name], |r| r.get::<_, Option<String>>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?
            .into_iter()
            .map(|c| c.unwrap_or_else(|| "<expression>".into()))
            .collect();
        let described = if origin == "u" {
            format!("{UNIQUE_CONSTRAINT} on ({})", cols.join(", "))
        } else {
            format!("unique index {name} on ({})", cols.join(", "))
        };
        found.push((name, described));
    }
    Ok(found)
}

/// Drops the capture triggers that earlier versions installed (changes are now reported by the
/// writer's pre-update hook), wherever they are: also on a synced table renamed since.
pub(crate) fn drop_legacy_triggers(conn: &Connection) -> Result<()> {
    let names: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_schema
             WHERE type = 'trigger' AND sql LIKE '%pluresdb_capture(%'",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for name in names {
        conn.execute_batch(&format!("DROP TRIGGER IF EXISTS {}", quote(&name)))?;
    }
    Ok(())
}
