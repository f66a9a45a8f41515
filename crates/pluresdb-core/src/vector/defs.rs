//! Vector index definitions: the `_pluresdb_vector_indexes` table, and the triggers that write
//! to the index log (see `index_log`) in the same transaction as every write to an indexed
//! column, so the in-memory index can catch up with exactly the committed data.

use std::str::FromStr;

use pluresdb_vector::{HnswParams, Metric};
use rusqlite::{Connection, OptionalExtension};

use crate::error::{Error, Result};
use crate::replication::quote;

/// The graph's node table and its vector column, indexed under the name `nodes`.
pub(crate) const NODES_TABLE: &str = "_pluresdb_nodes";
pub(crate) const NODES_NAME: &str = "nodes";
/// The start of the error for a search over nodes before their index exists.
pub(crate) const NO_NODE_INDEX: &str = "there is no vector index on nodes yet";

const TABLES: &str = "
CREATE TABLE IF NOT EXISTS _pluresdb_vector_indexes (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    tbl             TEXT NOT NULL,
    col             TEXT NOT NULL,
    metric          TEXT NOT NULL,
    dim             INTEGER,
    m               INTEGER NOT NULL,
    ef_construction INTEGER NOT NULL,
    ef_search       INTEGER NOT NULL,
    embed_from      TEXT,
    snapshot_seq    INTEGER NOT NULL DEFAULT 0,
    UNIQUE (tbl, col)
);
CREATE TABLE IF NOT EXISTS _pluresdb_vector_snapshots (
    idx   INTEGER NOT NULL,
    chunk INTEGER NOT NULL,
    data  BLOB NOT NULL,
    PRIMARY KEY (idx, chunk)
);
";

/// One vector index as stored.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct IndexDef {
    pub(crate) id: i64,
    pub(crate) table: String,
    pub(crate) column: String,
    pub(crate) metric: Metric,
    pub(crate) dim: Option<usize>,
    pub(crate) params: HnswParams,
    /// The column (for nodes: the JSON path in `data`) the vector is embedded from.
    pub(crate) embed_from: Option<String>,
    pub(crate) snapshot_seq: i64,
}

impl IndexDef {
    /// The name users know the index by: `table.column`, or `nodes`.
    pub(crate) fn name(&self) -> String {
        if self.is_nodes() {
            NODES_NAME.to_owned()
        } else {
            format!("{}.{}", self.table, self.column)
        }
    }

    pub(crate) fn is_nodes(&self) -> bool {
        self.table == NODES_TABLE
    }

    /// SQL selecting `(rowid, vector)` of every row the index should hold.
    pub(crate) fn scan_sql(&self) -> String {
        format!(
            "SELECT rowid, {c} FROM {t} WHERE {c} IS NOT NULL{alive}",
            c = quote(&self.column),
            t = quote(&self.table),
            alive = if self.is_nodes() {
                " AND cl % 2 = 1"
            } else {
                ""
            }
        )
    }

    /// SQL reading one row's vector (no row: the label is gone).
    pub(crate) fn row_sql(&self) -> String {
        format!(
            "SELECT {c} FROM {t} WHERE rowid = ?1{alive}",
            c = quote(&self.column),
            t = quote(&self.table),
            alive = if self.is_nodes() {
                " AND cl % 2 = 1"
            } else {
                ""
            }
        )
    }
}

const DEF_COLUMNS: &str =
    "id, tbl, col, metric, dim, m, ef_construction, ef_search, embed_from, snapshot_seq";

fn read_def(r: &rusqlite::Row<'_>) -> rusqlite::Result<IndexDef> {
    let metric: String = r.get(3)?;
    Ok(IndexDef {
        id: r.get(0)?,
        table: r.get(1)?,
        column: r.get(2)?,
        metric: Metric::from_str(&metric).unwrap_or(Metric::Cosine),
        dim: r.get::<_, Option<i64>>(4)?.map(|d| d as usize),
        params: HnswParams {
            m: r.get::<_, i64>(5)? as usize,
            ef_construction: r.get::<_, i64>(6)? as usize,
            ef_search: r.get::<_, i64>(7)? as usize,
            ..HnswParams::default()
        }
        // Definitions saved before the bounds were checked may hold any breadth.
        .clamp_ef(),
        embed_from: r.get(8)?,
        snapshot_seq: r.get(9)?,
    })
}

pub(crate) fn tables_exist(conn: &Connection) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = '_pluresdb_vector_indexes'",
        )?
        .exists([])?)
}

/// Maps what users write (`nodes`, a table name) to the stored table and column. `column` may be
/// empty when the table has exactly one vector index.
pub(crate) fn find(conn: &Connection, table: &str, column: &str) -> Result<IndexDef> {
    let def = find_def(conn, table, column)?;
    check_current(conn, &def)?;
    Ok(def)
}

/// Fails when `def` no longer fits its table: the table was dropped (which drops the index's
/// triggers, so a table made again under that name would never be indexed) or renamed (its
/// triggers go with it, so a table made under the old name would be searched with the
/// renamed table's rows), or the column was renamed or dropped (the index would read nothing,
/// or, when a column of the old name was added since, a column its triggers do not watch).
pub(crate) fn check_current(conn: &Connection, def: &IndexDef) -> Result<()> {
    // The table the index's triggers are on now, and their SQL (which SQLite rewrites when a
    // column they name is renamed).
    let trigger = crate::schema::trigger(conn, &trigger_ident(def, "ins"))?;
    let has_trigger = trigger
        .as_ref()
        .is_some_and(|(t, _)| t.eq_ignore_ascii_case(&def.table));
    let watches_column = trigger.as_ref().is_some_and(|(_, sql)| {
        let new_value = format!("NEW.{}", quote(&def.column)).to_lowercase();
        sql.to_lowercase().contains(&new_value)
    });
    let has_column = def.table == NODES_TABLE
        || conn
            .prepare_cached("SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2 COLLATE NOCASE")?
            .exists([&def.table, &def.column])?;
    if has_trigger && has_column && watches_column {
        return Ok(());
    }
    let what = match trigger {
        Some(_) if has_trigger && has_column => format!(
            "its column {}.{} was renamed (the column of that name now is another one)",
            def.table, def.column
        ),
        Some(_) if has_trigger => format!(
            "{}.{} no longer exists (the column or the table was renamed or dropped)",
            def.table, def.column
        ),
        Some((renamed, _)) => format!(
            "{} was renamed to {renamed} (and perhaps made again) since",
            def.table
        ),
        None => format!("{} was dropped (and perhaps made again) since", def.table),
    };
    Err(Error::invalid(format!(
        "the vector index {} no longer fits its table: {what}; drop it with SELECT \
         pluresdb_vector_index_drop('{}', '{}') and create it again",
        def.name(),
        def.table,
        def.column
    )))
}

/// Whether the row ids of `def`'s table are its INTEGER PRIMARY KEY, which VACUUM keeps. The
/// rows of other tables may be renumbered by VACUUM (every row after a gap moves), without
/// any trigger firing.
pub(crate) fn rowids_are_stable(conn: &Connection, def: &IndexDef) -> Result<bool> {
    let keys: Vec<String> = conn
        .prepare_cached("SELECT type FROM pragma_table_info(?1) WHERE pk > 0")?
        .query_map([&def.table], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(matches!(keys.as_slice(), [t] if t.eq_ignore_ascii_case("INTEGER")))
}

/// The definition of the index on `table`.`column` as stored, current or not (see [`find`]).
pub(crate) fn find_def(conn: &Connection, table: &str, column: &str) -> Result<IndexDef> {
    let table = if table.eq_ignore_ascii_case(NODES_NAME) {
        NODES_TABLE
    } else {
        table
    };
    let column = if table == NODES_TABLE && column.is_empty() {
        "vector"
    } else {
        column
    };
    let missing = || {
        Error::not_found(if table == NODES_TABLE {
            format!(
                "{NO_NODE_INDEX}; search nodes once with db.vector_search(\"nodes\", ...), or \
                 create it with SELECT pluresdb_vector_index('nodes', 'vector', 'cosine')"
            )
        } else if column.is_empty() {
            format!(
                "there is no vector index on {table}; create one with SELECT \
                 pluresdb_vector_index('{table}', 'COLUMN', 'cosine'), naming the column that \
                 holds the vectors"
            )
        } else {
            format!(
                "there is no vector index on {table}.{column}; create one with SELECT \
                 pluresdb_vector_index('{table}', '{column}', 'cosine')"
            )
        })
    };
    if !tables_exist(conn)? {
        return Err(missing());
    }
    let mut found: Vec<IndexDef> = conn
        .prepare_cached(&format!(
            "SELECT {DEF_COLUMNS} FROM _pluresdb_vector_indexes
             WHERE tbl = ?1 COLLATE NOCASE AND (?2 = '' OR col = ?2 COLLATE NOCASE)"
        ))?
        .query_map([table, column], read_def)?
        .collect::<rusqlite::Result<_>>()?;
    match found.len() {
        0 => Err(missing()),
        1 => Ok(found.pop().expect("one")),
        _ => Err(Error::invalid(format!(
            "{table} has several vector indexes ({}); name the column",
            found
                .iter()
                .map(|d| d.column.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Every index.
pub(crate) fn all(conn: &Connection) -> Result<Vec<IndexDef>> {
    if !tables_exist(conn)? {
        return Ok(Vec::new());
    }
    let defs = conn
        .prepare_cached(&format!(
            "SELECT {DEF_COLUMNS} FROM _pluresdb_vector_indexes ORDER BY id"
        ))?
        .query_map([], read_def)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(defs)
}

/// Settings of a new vector index.
#[derive(Clone, Debug, Default)]
pub struct NewIndex {
    /// Distance metric (default cosine).
    pub metric: Option<Metric>,
    /// The dimension; by default taken from the first vector.
    pub dim: Option<usize>,
    /// HNSW parameters (M, ef_construction, default ef_search).
    pub params: HnswParams,
    /// Embed vectors from this text column (for nodes: this `data` field) with the
    /// database's embedding model, on every insert and update.
    pub embed_from: Option<String>,
}

impl NewIndex {
    /// Reads `{"dim": 384, "m": 16, "ef_construction": 200, "ef_search": 64, "embed_from": "body"}`.
    pub(crate) fn from_json(metric: Option<&str>, options: Option<&str>) -> Result<NewIndex> {
        let mut new = NewIndex {
            metric: metric
                .map(Metric::from_str)
                .transpose()
                .map_err(|e| Error::invalid(e.to_string()))?,
            ..NewIndex::default()
        };
        let Some(options) = options.filter(|o| !o.trim().is_empty()) else {
            return Ok(new);
        };
        let bad = |why: &str| Error::invalid(format!("vector index options: {why}"));
        let parsed: serde_json::Value =
            serde_json::from_str(options).map_err(|e| bad(&format!("not JSON ({e})")))?;
        let obj = parsed
            .as_object()
            .ok_or_else(|| bad("must be a JSON object"))?;
        for (key, value) in obj {
            let count = || {
                value
                    .as_u64()
                    .map(|v| v as usize)
                    .ok_or_else(|| bad(&format!("{key} must be a positive integer")))
            };
            match key.as_str() {
                "dim" => new.dim = Some(count()?),
                "m" | "M" => new.params.m = count()?,
                "ef_construction" => new.params.ef_construction = count()?,
                "ef_search" | "ef" => new.params.ef_search = count()?,
                "embed_from" => {
                    new.embed_from = Some(
                        value
                            .as_str()
                            .ok_or_else(|| bad("embed_from must be a column name"))?
                            .to_owned(),
                    )
                }
                "metric" => {
                    new.metric = Some(
                        Metric::from_str(value.as_str().unwrap_or_default())
                            .map_err(|e| Error::invalid(e.to_string()))?,
                    )
                }
                other => {
                    return Err(bad(&format!(
                        "unknown option {other:?}; use dim, m, ef_construction, ef_search, \
                         embed_from or metric"
                    )));
                }
            }
        }
        Ok(new)
    }
}

/// Creates an index (or returns the existing one when nothing differs).
pub(crate) fn create(
    conn: &Connection,
    table: &str,
    column: &str,
    new: &NewIndex,
) -> Result<IndexDef> {
    let is_nodes = table.eq_ignore_ascii_case(NODES_NAME) || table == NODES_TABLE;
    let (table, column) = if is_nodes {
        if !column.is_empty() && column != "vector" {
            return Err(Error::invalid(format!(
                "nodes keep their vector in the `vector` field, not {column:?}"
            )));
        }
        (NODES_TABLE.to_owned(), "vector".to_owned())
    } else {
        check_table(conn, table, column, new.embed_from.as_deref())?
    };
    pluresdb_vector::Hnsw::new(
        new.dim.unwrap_or(1),
        new.metric.unwrap_or(Metric::Cosine),
        new.params,
    )
    .map_err(|e| Error::invalid(e.to_string()))?;
    conn.execute_batch(TABLES)?;
    crate::index_log::create(conn)?;
    if let Ok(existing) = find_def(conn, &table, &column)
        && check_current(conn, &existing).is_err()
    {
        // Left behind by a dropped table or a renamed column: replaced by a new index.
        drop_index(conn, &existing.table, &existing.column)?;
    }
    if let Ok(existing) = find_def(conn, &table, &column) {
        let same = new.metric.is_none_or(|m| m == existing.metric)
            && new.dim.is_none_or(|d| Some(d) == existing.dim)
            && new
                .embed_from
                .as_ref()
                .is_none_or(|e| Some(e) == existing.embed_from.as_ref())
            && new.params == existing.params;
        return if same {
            Ok(existing)
        } else {
            Err(Error::invalid(format!(
                "{} already has a vector index with other settings; drop it first with SELECT \
                 pluresdb_vector_index_drop('{}', '{}')",
                existing.name(),
                existing.table,
                existing.column
            )))
        };
    }
    let metric = new.metric.unwrap_or(Metric::Cosine);
    conn.execute(
        "INSERT INTO _pluresdb_vector_indexes(tbl, col, metric, dim, m, ef_construction, ef_search, embed_from)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        rusqlite::params![
            table,
            column,
            metric.name(),
            new.dim.map(|d| d as i64),
            new.params.m as i64,
            new.params.ef_construction as i64,
            new.params.ef_search as i64,
            new.embed_from,
        ],
    )?;
    let def = find_def(conn, &table, &column)?;
    create_triggers(conn, &def)?;
    // Existing rows: check them now (a bad one refuses the index) and fix the dimension.
    let mut dim = def.dim;
    {
        let mut stmt = conn.prepare(&def.scan_sql())?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let rowid: i64 = row.get(0)?;
            let v = super::parse::parse_vector(row.get_ref(1)?)
                .map_err(|e| e.context(row_name(conn, &def, rowid)))?
                .unwrap_or_default();
            let d = *dim.get_or_insert(v.len());
            super::functions::check_vector(&v, d, metric)
                .map_err(|e| e.context(row_name(conn, &def, rowid)))?;
        }
    }
    if dim != def.dim {
        conn.execute(
            "UPDATE _pluresdb_vector_indexes SET dim = ?1 WHERE id = ?2",
            rusqlite::params![dim.map(|d| d as i64), def.id],
        )?;
    }
    if let Some(source) = &def.embed_from {
        // Rows with text but no vector yet get one now.
        conn.execute(
            &format!(
                "UPDATE {t} SET {c} = pluresdb_embed({s}) WHERE {c} IS NULL AND {s} IS NOT NULL",
                t = quote(&def.table),
                c = quote(&def.column),
                s = source_expr(&def, source, ""),
            ),
            [],
        )?;
    }
    find(conn, &def.table, &def.column)
}

/// How an error names a row of `def`'s table: `node "ada"` for nodes (their row ids mean
/// nothing to users), else `row 7 of docs.embedding`.
fn row_name(conn: &Connection, def: &IndexDef, rowid: i64) -> String {
    let id: Option<String> = if def.is_nodes() {
        conn.query_row(
            &format!("SELECT id FROM {NODES_TABLE} WHERE rid = ?1"),
            [rowid],
            |r| r.get(0),
        )
        .ok()
    } else {
        None
    };
    match id {
        Some(id) => format!("node {id:?}"),
        None => format!("row {rowid} of {}", def.name()),
    }
}

/// What the vector is embedded from, as an SQL expression over `prefix` (`NEW.` in triggers).
fn source_expr(def: &IndexDef, source: &str, prefix: &str) -> String {
    if def.is_nodes() {
        let path = if source.starts_with('$') {
            source.to_owned()
        } else {
            format!("$.{source}")
        };
        format!("json_extract({prefix}data, '{}')", path.replace('\'', "''"))
    } else {
        format!("{prefix}{}", quote(source))
    }
}

fn check_table(
    conn: &Connection,
    table: &str,
    column: &str,
    embed_from: Option<&str>,
) -> Result<(String, String)> {
    if table.starts_with("_pluresdb") || table.starts_with("sqlite_") {
        return Err(Error::invalid(format!(
            "{table} is an internal table; index a table of your own"
        )));
    }
    let name: Option<String> = conn
        .query_row(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name = ?1 COLLATE NOCASE",
            [table],
            |r| r.get(0),
        )
        .optional()?;
    let Some(table) = name else {
        return Err(Error::not_found(format!("no such table: {table}")));
    };
    // Asked of SQLite rather than read from the CREATE statement, where the words may be split
    // over lines or appear in a default value.
    let without_rowid = conn
        .prepare("SELECT 1 FROM pragma_table_list WHERE schema = 'main' AND name = ?1 AND wr")?
        .exists([&table])?;
    if without_rowid {
        return Err(Error::invalid(format!(
            "{table} is a WITHOUT ROWID table; vector indexes find rows by rowid, so index a \
             table that has one"
        )));
    }
    let columns: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info(?1)")?
        .query_map([&table], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let find_col = |name: &str| {
        columns
            .iter()
            .find(|c| c.eq_ignore_ascii_case(name))
            .cloned()
            .ok_or_else(|| {
                Error::not_found(format!(
                    "{table} has no column {name:?} (its columns: {})",
                    columns.join(", ")
                ))
            })
    };
    let column = find_col(column)?;
    if let Some(source) = embed_from {
        find_col(source)?;
    }
    Ok((table, column))
}

fn trigger_name(def: &IndexDef, what: &str) -> String {
    quote(&trigger_ident(def, what))
}

/// [`trigger_name`], unquoted (as `sqlite_schema` has it).
fn trigger_ident(def: &IndexDef, what: &str) -> String {
    format!("_pluresdb_vec_{}_{what}", def.id)
}

/// The triggers that log writes (and check vectors, and embed text) for `def`.
fn create_triggers(conn: &Connection, def: &IndexDef) -> Result<()> {
    let t = quote(&def.table);
    let c = quote(&def.column);
    let id = def.id;
    let set_dim = format!(
        "UPDATE _pluresdb_vector_indexes SET dim = pluresdb_vector_dim(NEW.{c}) WHERE id = {id} AND dim IS NULL AND NEW.{c} IS NOT NULL;"
    );
    // Checks the vector (the function raises the error) and logs the row, in one statement.
    let log_new = format!(
        "INSERT INTO _pluresdb_index_log(idx, rid) SELECT {id}, NEW.rowid FROM _pluresdb_vector_indexes
         WHERE id = {id} AND (NEW.{c} IS NULL OR pluresdb_vector_check(NEW.{c}, dim, metric) IS NULL);"
    );
    let alive_changed = if def.is_nodes() {
        " OR NEW.cl IS NOT OLD.cl"
    } else {
        ""
    };
    let mut sql = format!(
        "CREATE TRIGGER {ins} AFTER INSERT ON {t} WHEN NEW.{c} IS NOT NULL BEGIN
            {set_dim} {log_new}
         END;
         CREATE TRIGGER {upd} AFTER UPDATE ON {t}
         WHEN NEW.{c} IS NOT OLD.{c} OR NEW.rowid IS NOT OLD.rowid{alive_changed} BEGIN
            {set_dim}
            INSERT INTO _pluresdb_index_log(idx, rid) SELECT {id}, OLD.rowid WHERE OLD.rowid IS NOT NEW.rowid;
            {log_new}
         END;
         CREATE TRIGGER {del} AFTER DELETE ON {t} WHEN OLD.{c} IS NOT NULL BEGIN
            INSERT INTO _pluresdb_index_log(idx, rid) VALUES ({id}, OLD.rowid);
         END;",
        ins = trigger_name(def, "ins"),
        upd = trigger_name(def, "upd"),
        del = trigger_name(def, "del"),
    );
    if let Some(source) = &def.embed_from {
        let new_src = source_expr(def, source, "NEW.");
        let old_src = source_expr(def, source, "OLD.");
        let key = if def.is_nodes() { "rid" } else { "rowid" };
        sql.push_str(&format!(
            "CREATE TRIGGER {ein} AFTER INSERT ON {t} WHEN NEW.{c} IS NULL AND {new_src} IS NOT NULL BEGIN
                UPDATE {t} SET {c} = pluresdb_embed({new_src}) WHERE {key} = NEW.{key};
             END;
             CREATE TRIGGER {eup} AFTER UPDATE ON {t} WHEN {new_src} IS NOT {old_src} BEGIN
                UPDATE {t} SET {c} = pluresdb_embed({new_src}) WHERE {key} = NEW.{key};
             END;",
            ein = trigger_name(def, "embed_ins"),
            eup = trigger_name(def, "embed_upd"),
        ));
    }
    conn.execute_batch(&sql)?;
    Ok(())
}

/// Drops an index: its triggers, log, saved graph and definition. Returns whether it existed.
pub(crate) fn drop_index(conn: &Connection, table: &str, column: &str) -> Result<Option<IndexDef>> {
    let def = match find_def(conn, table, column) {
        Ok(def) => def,
        Err(e) if e.kind() == crate::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    for what in ["ins", "upd", "del", "embed_ins", "embed_upd"] {
        conn.execute_batch(&format!(
            "DROP TRIGGER IF EXISTS {}",
            trigger_name(&def, what)
        ))?;
    }
    crate::index_log::delete(conn, def.id, i64::MAX)?;
    conn.execute(
        "DELETE FROM _pluresdb_vector_snapshots WHERE idx = ?1",
        [def.id],
    )?;
    conn.execute(
        "DELETE FROM _pluresdb_vector_indexes WHERE id = ?1",
        [def.id],
    )?;
    Ok(Some(def))
}
