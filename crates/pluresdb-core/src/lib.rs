//! PluresDB core: an embedded database that is real SQLite, plus a graph of JSON nodes and
//! typed edges, in one file.
//!
//! ```
//! use pluresdb_core::{Database, Direction};
//! use serde_json::json;
//!
//! # fn main() -> pluresdb_core::Result<()> {
//! let db = Database::open_in_memory()?;
//!
//! // SQL, as in better-sqlite3.
//! db.exec("CREATE TABLE todos(id INTEGER PRIMARY KEY, title TEXT NOT NULL, done INTEGER DEFAULT 0)")?;
//! let info = db.run("INSERT INTO todos(title) VALUES (?)", ("write docs",))?;
//! assert_eq!(info.changes, 1);
//! let row = db.get("SELECT title FROM todos WHERE id = ?", (info.last_insert_rowid,))?.unwrap();
//! assert_eq!(row.get::<String>("title")?, "write docs");
//!
//! // Nodes and edges.
//! db.put("ada", &json!({"name": "Ada", "born": 1815}))?;
//! db.put("charles", &json!({"name": "Charles"}))?;
//! db.link("ada", "knows", "charles", None)?;
//! let friends = db.neighbors("ada", Direction::Out, Some("knows"))?;
//! assert_eq!(friends[0].data["name"], "Charles");
//!
//! // ...which SQL can read too.
//! let n: (i64,) = db.get_as("SELECT count(*) FROM pluresdb_edges WHERE relation = 'knows'", ())?.unwrap();
//! assert_eq!(n.0, 1);
//! # Ok(()) }
//! ```

mod backup;
mod bulk_cache;
mod conn;
mod connect;
#[doc(hidden)]
pub mod crash_point;
mod cursor;
mod database;
mod engine;
mod error;
mod events;
mod graph;
mod index_log;
mod options;
mod params;
mod pool;
mod query;
mod replication;
mod row;
mod schema;
mod sql_text;
mod statement;
pub mod strict_json;
mod table_fn;
mod transaction;
mod trigger_probe;
mod updated_columns;
mod value;
mod vector;
pub mod wire;

pub use cursor::RowIter;
pub use database::Database;
pub use error::{Error, ErrorKind, Result};
pub use events::{Change, ChangeStream, EdgeChange, NodeChange, RowChange, RowOp, SubscriptionId};
pub use graph::{
    CompareOp, CypherResult, Direction, Edge, GraphPath, MAX_ID_BYTES, Node, NodeQuery, NodeUpdate,
    PathQuery, Reached, Traverse, Walk,
};
pub use options::{OpenOptions, Synchronous};
pub use params::{Binder, NamedParams, Params};
pub use query::{RunResult, ScriptResult};
pub use replication::{
    ApplyReport, ChangeRecord, ChangeSet, EDGES, MAX_CLOCK_DRIFT, MAX_LEFT_OUT_NAMED, MAX_REFUSED,
    NODES, NodeVersion, PeerRefusals, PeerStatus, Refetch, Refetching, Refused, ResumePoint,
    SyncProgress, join_left_out, join_refused,
};
pub use row::{Column, ColumnIndex, Columns, FromRow, Row, RowRef};
pub use schema::FORMAT_VERSION;
pub use statement::Statement;
pub use value::{
    BLOB_JSON_KEY, FromValue, Param, ToParam, Value, ValueRef, base64_decode, base64_encode,
};
pub use vector::{
    EmbedError, Embedder, HybridHit, LoadSource, LoadedIndex, SearchOptions, VectorHit,
    VectorIndexInfo, VectorIndexOptions, VectorQuery,
};

pub use pluresdb_crdt::{
    Hlc, ParseVersionVectorError, SiteId, Version, VersionVector, wall_millis,
};
pub use pluresdb_cypher::ExecOptions as CypherOptions;
pub use pluresdb_vector::{HnswParams, Metric};

/// Whether `sql` ends with a complete statement (SQLite's `sqlite3_complete`), for shells.
pub fn is_complete_statement(sql: &str) -> bool {
    query::is_complete(sql)
}

/// The version of the bundled SQLite library.
pub fn sqlite_version() -> &'static str {
    rusqlite::version()
}
