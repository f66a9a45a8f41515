//! PluresDB's internal tables inside the user's SQLite file, and the checks made on open.
//!
//! Everything internal is named `_pluresdb_*`; the views `pluresdb_nodes` and
//! `pluresdb_edges` show live nodes and edges to SQL.

use rusqlite::{Connection, OptionalExtension};

use pluresdb_crdt::{Hlc, SiteId};

use crate::error::{Error, ErrorKind, Result};
use crate::options::OpenOptions;

/// The on-disk format this build writes and the newest it can read. Format 3 named edge ends by
/// row id, 4 moved edge clocks into the edge rows, 5 writes a row clock whose base version is
/// its sentinel without repeating it (11 bytes fewer per row written whole; older clocks are
/// read as they are) and records what it tells peers it has sent (`announced:*` in
/// `_pluresdb_meta`, from `announce_since`: the `db_version` at the upgrade). Format 6 shows
/// an edge in `pluresdb_edges` only while both its nodes are live (see `Database::get_edge`).
/// Format 7 packs the clocks of rows written in bulk (`_pluresdb_clock_pack`), which older
/// builds would not read. Format 8 writes pack bodies whose entries share the clocks they
/// have alike (all the changes of a transaction share its time), which format 7 builds would
/// read as empty; it reads format 7 bodies as they are.
pub const FORMAT_VERSION: i64 = 8;

/// What opening learned about the file.
pub(crate) struct SchemaState {
    pub(crate) site: SiteId,
    pub(crate) last_hlc: Hlc,
    /// The graph tables exist (false only for a read-only plain SQLite file).
    pub(crate) graph: bool,
}

/// The index of edges by target (incoming edges), dropped and rebuilt around bulk loads.
pub(crate) const EDGES_IN_INDEX: &str =
    "CREATE INDEX IF NOT EXISTS _pluresdb_edges_in ON _pluresdb_edges(dst, rel, src)";

/// Interned relation names.
const RELATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS _pluresdb_relations (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
)";

/// The columns of the edge table. Edges name their ends by node row id
/// (`_pluresdb_nodes.rid`) and their relation by `_pluresdb_relations.id`, which keeps the
/// table and its two indexes small (format 3; formats 1 and 2 stored the names as text). Each
/// edge keeps its sync clock in its row (format 4): `cl` is its causal length, `ver` its
/// versions (a `RowClock`; NULL: none, as for an edge stored before sync existed) and `seq`
/// the local `db_version` that last stored them; other collections keep theirs in
/// `_pluresdb_clock`. An edge that reaches a replica before one of its nodes points at a
/// placeholder node row with causal length 0 (never alive, no clock, not replicated) that a
/// later `put` or merged node fills in. The view `_pluresdb_edges_named` shows edges with
/// their names, for reads.
const EDGE_COLUMNS: &str = "(
    eid         INTEGER PRIMARY KEY,
    src         INTEGER NOT NULL,
    rel         INTEGER NOT NULL,
    dst         INTEGER NOT NULL,
    data        TEXT NOT NULL DEFAULT '{}',
    created_hlc INTEGER NOT NULL,
    updated_hlc INTEGER NOT NULL,
    site        BLOB NOT NULL,
    cl          INTEGER NOT NULL DEFAULT 1,
    seq         INTEGER NOT NULL DEFAULT 0,
    ver         BLOB,
    UNIQUE (src, rel, dst)
)";

/// The other internal tables and the views (created after the relation and edge tables).
const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS _pluresdb_meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value ANY
) WITHOUT ROWID, STRICT;

CREATE TABLE IF NOT EXISTS _pluresdb_nodes (
    rid         INTEGER PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    type        TEXT,
    data        TEXT NOT NULL DEFAULT '{}',
    vector      BLOB,
    created_hlc INTEGER NOT NULL,
    updated_hlc INTEGER NOT NULL,
    site        BLOB NOT NULL,
    cl          INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS _pluresdb_nodes_by_type ON _pluresdb_nodes(type, id) WHERE cl % 2 = 1;

CREATE TABLE IF NOT EXISTS _pluresdb_sites (
    idx  INTEGER PRIMARY KEY,
    site BLOB NOT NULL UNIQUE
);

CREATE TABLE IF NOT EXISTS _pluresdb_collections (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL
);
INSERT OR IGNORE INTO _pluresdb_collections(id, name, kind)
    VALUES (1, '_pluresdb_nodes', 'nodes'), (2, '_pluresdb_edges', 'edges');

CREATE TABLE IF NOT EXISTS _pluresdb_clock (
    tbl INTEGER NOT NULL,
    key BLOB NOT NULL,
    cl  INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    ver BLOB NOT NULL,
    PRIMARY KEY (tbl, key)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS _pluresdb_clock_pack (
    tbl   INTEGER NOT NULL,
    first BLOB NOT NULL,
    last  BLOB NOT NULL,
    seq   INTEGER NOT NULL,
    body  BLOB NOT NULL,
    PRIMARY KEY (tbl, first)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS _pluresdb_clock_log (
    id      INTEGER PRIMARY KEY,
    seq     INTEGER NOT NULL,
    site    INTEGER NOT NULL,
    n       INTEGER NOT NULL,
    pending INTEGER NOT NULL,
    changes BLOB NOT NULL
);

CREATE TABLE IF NOT EXISTS _pluresdb_peers (
    site      BLOB PRIMARY KEY NOT NULL,
    address   TEXT,
    last_sync INTEGER,
    sent      INTEGER NOT NULL DEFAULT 0,
    received  INTEGER NOT NULL DEFAULT 0,
    cursor    INTEGER NOT NULL DEFAULT 0,
    acked     INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS _pluresdb_history (
    id     TEXT NOT NULL,
    hlc    INTEGER NOT NULL,
    site   BLOB NOT NULL,
    cl     INTEGER NOT NULL,
    type   TEXT,
    data   TEXT NOT NULL,
    vector BLOB
);
CREATE INDEX IF NOT EXISTS _pluresdb_history_by_node ON _pluresdb_history(id, hlc);

CREATE VIEW IF NOT EXISTS pluresdb_nodes AS
    SELECT id, type, data, vector, created_hlc, updated_hlc
    FROM _pluresdb_nodes WHERE cl % 2 = 1;

CREATE VIEW IF NOT EXISTS _pluresdb_edges_named AS
    SELECT e.eid, s.id AS src, r.name AS rel, d.id AS dst, e.data, e.created_hlc,
           e.updated_hlc, e.site, e.cl, e.seq, e.ver, e.src AS src_rid, e.rel AS rel_id,
           e.dst AS dst_rid
    FROM _pluresdb_edges e
    JOIN _pluresdb_nodes s ON s.rid = e.src
    JOIN _pluresdb_relations r ON r.id = e.rel
    JOIN _pluresdb_nodes d ON d.rid = e.dst;

CREATE VIEW IF NOT EXISTS pluresdb_edges AS
    SELECT s.id AS from_id, r.name AS relation, d.id AS to_id, e.data, e.created_hlc,
           e.updated_hlc
    FROM _pluresdb_edges e
    JOIN _pluresdb_nodes s ON s.rid = e.src
    JOIN _pluresdb_relations r ON r.id = e.rel
    JOIN _pluresdb_nodes d ON d.rid = e.dst
    WHERE e.cl % 2 = 1 AND s.cl % 2 = 1 AND d.cl % 2 = 1;
"#;

/// Checks the file, applies connection settings and creates or upgrades internal tables.
/// Nothing is written before the file is known to be a database this build can read.
pub(crate) fn prepare(
    conn: &Connection,
    in_memory: bool,
    opts: &OpenOptions,
) -> Result<SchemaState> {
    conn.query_row("PRAGMA schema_version", [], |r| r.get::<_, i64>(0))
        .map_err(|e| not_a_database(e.into()))?;
    crate::connect::apply_cache_settings(conn, opts)?;
    let has_meta = table_exists(conn, "_pluresdb_meta")?;
    let version = if has_meta { stored_version(conn)? } else { 0 };
    if version > FORMAT_VERSION {
        return Err(Error::new(
            ErrorKind::Corrupt,
            format!(
                "this database was written by a newer PluresDB (format {version}; this build \
                 reads formats up to {FORMAT_VERSION}); upgrade PluresDB to open it"
            ),
        ));
    }
    if opts.read_only {
        if edge_layout(conn)?.is_some_and(|l| l != EdgeLayout::Current) {
            return Err(Error::new(
                ErrorKind::ReadOnly,
                format!(
                    "this database was written by an older PluresDB (format {version}), which \
                     stored edges differently; open it writable once to upgrade it to format \
                     {FORMAT_VERSION}"
                ),
            ));
        }
        return read_state(conn, has_meta);
    }
    if !in_memory && opts.wal {
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::new(
                ErrorKind::Io,
                format!("could not switch the database to WAL mode (it stayed in {mode} mode)"),
            ));
        }
    }
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {}; PRAGMA foreign_keys = {};",
        opts.synchronous.pragma_value(),
        if opts.foreign_keys { "ON" } else { "OFF" }
    ))?;
    if version < FORMAT_VERSION {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        // The user's triggers on the edge view go with it when it is made again: they are
        // made again after it.
        let view_triggers = conn
            .prepare(
                "SELECT sql FROM sqlite_schema
                 WHERE type = 'trigger' AND tbl_name = 'pluresdb_edges' AND sql IS NOT NULL",
            )
            .and_then(|mut stmt| {
                stmt.query_map([], |r| r.get::<_, String>(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()
            });
        let upgrade = view_triggers.and_then(|triggers| upgrade_edges(conn).map(|()| triggers));
        let created = upgrade
            .and_then(|triggers| {
                conn.execute_batch(&format!(
                    "{RELATIONS_TABLE}; CREATE TABLE IF NOT EXISTS _pluresdb_edges {EDGE_COLUMNS};"
                ))?;
                conn.execute_batch(SCHEMA)?;
                for sql in triggers {
                    conn.execute_batch(&sql.replacen("CREATE TRIGGER", "CREATE TRIGGER IF NOT EXISTS", 1))?;
                }
                Ok(())
            })
            .and_then(|()| {
            conn.execute_batch(EDGES_IN_INDEX)?;
            conn.execute(
                "INSERT INTO _pluresdb_meta(key, value) VALUES ('format_version', ?1)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [FORMAT_VERSION],
            )?;
            conn.execute_batch(
                "INSERT OR IGNORE INTO _pluresdb_meta(key, value) VALUES ('site_id', randomblob(16));
                 INSERT OR IGNORE INTO _pluresdb_meta(key, value) VALUES ('db_version', 0);
                 INSERT OR IGNORE INTO _pluresdb_meta(key, value)
                     SELECT 'announce_since', value FROM _pluresdb_meta WHERE key = 'db_version';
                 INSERT OR IGNORE INTO _pluresdb_sites(site)
                     SELECT value FROM _pluresdb_meta WHERE key = 'site_id';",
            )?;
            Ok(())
        });
        match created {
            Ok(()) => conn.execute_batch("COMMIT")?,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(Error::from(e).context("creating PluresDB's internal tables"));
            }
        }
    }
    read_state(conn, true)
}

/// How a file stores its edges.
#[derive(Clone, Copy, Debug, PartialEq)]
enum EdgeLayout {
    /// By name, clocks in `_pluresdb_clock` (formats 1 and 2).
    Named,
    /// By node row and relation id, clocks in `_pluresdb_clock` (format 3).
    ById,
    /// By id, clocks in the edge rows (format 4).
    Current,
}

/// The file's edge layout (`None`: no edge table).
fn edge_layout(conn: &Connection) -> rusqlite::Result<Option<EdgeLayout>> {
    let exists = |name: &str| {
        conn.prepare_cached("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1")?
            .exists([name])
    };
    if !exists("_pluresdb_edges")? {
        return Ok(None);
    }
    if !exists("_pluresdb_relations")? {
        return Ok(Some(EdgeLayout::Named));
    }
    let has_clock = conn
        .prepare("SELECT 1 FROM pragma_table_info('_pluresdb_edges') WHERE name = 'ver'")?
        .exists([])?;
    Ok(Some(if has_clock {
        EdgeLayout::Current
    } else {
        EdgeLayout::ById
    }))
}

/// Brings the edge table of a file older than format 4 up to date (nothing for a new file).
fn upgrade_edges(conn: &Connection) -> rusqlite::Result<()> {
    let Some(layout) = edge_layout(conn)? else {
        return Ok(());
    };
    // Made again with the edge table's columns as they are now, and (before format 6) with
    // edges at nodes that are not live left out (see `SCHEMA`).
    conn.execute_batch(
        "DROP VIEW IF EXISTS _pluresdb_edges_named; DROP VIEW IF EXISTS pluresdb_edges;",
    )?;
    if layout == EdgeLayout::Named {
        // The new table has the clock columns.
        migrate_named_edges(conn)?;
    }
    if layout == EdgeLayout::Current {
        return Ok(());
    }
    if layout == EdgeLayout::ById {
        conn.execute_batch(
            "ALTER TABLE _pluresdb_edges ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE _pluresdb_edges ADD COLUMN ver BLOB;",
        )?;
    }
    // Formats 1 to 3: edge clocks move from `_pluresdb_clock` into the edge rows (a record
    // without an edge row, which nothing writes, goes).
    conn.execute_batch(
        "UPDATE _pluresdb_edges AS e SET cl = c.cl, seq = c.seq, ver = c.ver
         FROM _pluresdb_nodes s, _pluresdb_relations r, _pluresdb_nodes d, _pluresdb_clock c
         WHERE s.rid = e.src AND r.id = e.rel AND d.rid = e.dst
           AND c.tbl = 2 AND c.key = pluresdb_pack(s.id, r.name, d.id);
         DELETE FROM _pluresdb_clock WHERE tbl = 2;",
    )
}

/// Format 2 to 3: edges stored their ends and relation as text; they now point at node rows
/// and interned relations. Edge ids stay, so the graph's log and the clock (keyed by the
/// names) stay valid. Ends without a node row get a placeholder row (see [`EDGE_COLUMNS`]).
fn migrate_named_edges(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(&format!(
        "{RELATIONS_TABLE};
         INSERT INTO _pluresdb_relations(name) SELECT DISTINCT rel FROM _pluresdb_edges ORDER BY rel;
         INSERT INTO _pluresdb_nodes(id, data, created_hlc, updated_hlc, site, cl)
             SELECT id, '{{}}', 0, 0, zeroblob(16), 0
             FROM (SELECT src AS id FROM _pluresdb_edges UNION SELECT dst FROM _pluresdb_edges)
             WHERE id NOT IN (SELECT id FROM _pluresdb_nodes)
             ORDER BY id;
         CREATE TABLE _pluresdb_edges_by_rid {EDGE_COLUMNS};
         INSERT INTO _pluresdb_edges_by_rid
             (eid, src, rel, dst, data, created_hlc, updated_hlc, site, cl)
             SELECT e.eid, s.rid, r.id, d.rid, e.data, e.created_hlc, e.updated_hlc, e.site, e.cl
             FROM _pluresdb_edges e
             JOIN _pluresdb_nodes s ON s.id = e.src
             JOIN _pluresdb_relations r ON r.name = e.rel
             JOIN _pluresdb_nodes d ON d.id = e.dst
             ORDER BY e.eid;
         DROP TABLE _pluresdb_edges;"
    ))?;
    // The legacy rename leaves views and triggers alone: one of the user's on the
    // `pluresdb_edges` view (dropped by `upgrade_edges` and made again by `SCHEMA`) would
    // fail a checked rename, and with it the upgrade.
    conn.execute_batch(
        "PRAGMA legacy_alter_table = ON;
         ALTER TABLE _pluresdb_edges_by_rid RENAME TO _pluresdb_edges;",
    )
    .and(conn.execute_batch("PRAGMA legacy_alter_table = OFF"))
}

fn not_a_database(err: Error) -> Error {
    if err.kind() == ErrorKind::Corrupt {
        Error::new(
            ErrorKind::Corrupt,
            "the file is not a database (or it is encrypted or damaged); nothing was changed",
        )
    } else {
        err
    }
}

/// Whether the main database has a table named `name`.
pub(crate) fn table_exists(conn: &Connection, name: &str) -> Result<bool> {
    schema_has(conn, "table", name)
}

/// The table the trigger `name` of the main database is on, and its SQL, if there is one.
pub(crate) fn trigger(conn: &Connection, name: &str) -> Result<Option<(String, String)>> {
    Ok(conn
        .prepare_cached(
            "SELECT tbl_name, sql FROM sqlite_schema WHERE type = 'trigger' AND name = ?1",
        )?
        .query_row([name], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}

/// Whether the main database has an object of type `kind` named `name`.
fn schema_has(conn: &Connection, kind: &str, name: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM sqlite_schema WHERE type = ?1 AND name = ?2")?
        .exists([kind, name])?)
}

fn stored_version(conn: &Connection) -> Result<i64> {
    let v: Option<i64> = conn
        .query_row(
            "SELECT value FROM _pluresdb_meta WHERE key = 'format_version'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok(v.unwrap_or(0))
}

fn read_state(conn: &Connection, has_meta: bool) -> Result<SchemaState> {
    if !has_meta {
        return Ok(SchemaState {
            site: SiteId::default(),
            last_hlc: Hlc::ZERO,
            graph: false,
        });
    }
    let site: Vec<u8> = conn
        .query_row(
            "SELECT value FROM _pluresdb_meta WHERE key = 'site_id'",
            [],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or_default();
    let site = SiteId::from_slice(&site).unwrap_or_default();
    let last: Option<i64> = conn.query_row(
        "SELECT max(m) FROM (SELECT max(updated_hlc) AS m FROM _pluresdb_nodes
                             UNION ALL SELECT max(updated_hlc) FROM _pluresdb_edges)",
        [],
        |r| r.get(0),
    )?;
    Ok(SchemaState {
        site,
        last_hlc: Hlc::from_u64(last.unwrap_or(0) as u64),
        graph: true,
    })
}
