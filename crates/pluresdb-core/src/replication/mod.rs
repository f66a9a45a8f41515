//! Replication: every replicated write becomes a versioned change in the same transaction,
//! change sets are read incrementally, and remote changes merge by the rules of
//! [`pluresdb_crdt`] (causal length, then per-field last writer wins).
//!
//! * Nodes and edges are always replicated. A SQL table opts in with
//!   `SELECT pluresdb_sync_table('todos')` or [`Database::sync_table`]; the writer's pre-update
//!   hook then reports its row changes, which are appended to a change log
//!   (`_pluresdb_clock_log`) in the same transaction and folded into `_pluresdb_clock` in bulk
//!   before anything reads or merges clock records. Rows written in bulk have their clocks
//!   packed a few hundred to a blob instead (see [`packs`]).
//! * `_pluresdb_clock` holds, per replicated row, its causal length and a [`RowClock`]: the
//!   version of each field plus the local sequence number (`db_version`) that stored it.
//!   Edges keep the same in their own rows (`cl`, `ver`, `seq`; see `edge_clock`).
//!   "Changes since N" are the fields stored after N.
//! * Peers exchange [`ChangeRecord`]s; [`Database::apply_changes`] merges a batch in one
//!   transaction, idempotently and in any order.

mod added_columns;
mod affinity;
mod apply;
mod capture;
mod changelog;
mod clock;
mod collections;
mod dense_fold;
mod edge_clock;
mod extract;
mod functions;
mod history;
mod keys;
mod meta_json;
mod missed;
mod packs;
mod paused;
mod peers;
mod received;
mod recent;
mod refetch;
mod refusals;
mod resume;
mod shape_stamp;
mod state;
mod tables;
mod unrecorded;

use std::sync::Arc;
use std::time::Duration;

use pluresdb_crdt::Version;

use crate::value::Value;

pub(crate) use capture::NodeWrite;
pub(crate) use clock::MAX_FIELD_BYTES;
pub(crate) use collections::{EDGES_ID, quote};
pub(crate) use functions::{register_pure, register_writer};
pub(crate) use history::append_history;
pub(crate) use keys::pack as pack_key_refs;
pub(crate) use keys::pack_values as pack_key;
pub(crate) use state::Replication;

pub use apply::{
    ApplyReport, MAX_LEFT_OUT_NAMED, MAX_REFUSED, Refused, join_left_out, join_refused,
};
pub use extract::ChangeSet;
pub use history::NodeVersion;
pub use peers::{PeerStatus, SyncProgress};
pub use refetch::{Refetch, Refetching};
pub use refusals::PeerRefusals;
pub use resume::ResumePoint;

/// The collection name of nodes in change records.
pub const NODES: &str = "_pluresdb_nodes";
/// The collection name of edges in change records.
pub const EDGES: &str = "_pluresdb_edges";

/// One replicated write, as exchanged between peers.
///
/// The names and the key are shared (`Arc`): the changes of one row, and of one table, point
/// to one copy, so reading, sending and merging large change sets does not copy them per
/// change. `"todos".into()`, `vec![...].into()` build them.
#[derive(Clone, Debug, PartialEq)]
pub struct ChangeRecord {
    /// The table name, or [`NODES`] / [`EDGES`].
    pub collection: Arc<str>,
    /// The row's primary-key values (a node's id; an edge's from, relation and to).
    pub key: Arc<[Value]>,
    /// The column, or for nodes `data.<field>`, `type` or `vector`, or for edges `data`;
    /// `""` for the row's creation or deletion.
    pub field: Arc<str>,
    /// The new value; `None` when a node field was removed (and for creation/deletion).
    pub value: Option<Value>,
    /// The write's version: clock time and writing site.
    pub version: Version,
    /// The row's causal length when written (odd: exists, even: deleted).
    pub cl: u64,
}

/// How far ahead of this machine's clock a peer's changes may be stamped.
pub const MAX_CLOCK_DRIFT: Duration = pluresdb_crdt::DEFAULT_MAX_DRIFT;
