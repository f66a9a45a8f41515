//! Pure building blocks for PluresDB replication: the hybrid logical clock, site ids,
//! versions, the causal-length and last-writer-wins merge rules, version vectors, and a
//! reference model of a replica used to test the storage engine against.
//!
//! Nothing here does I/O; the storage crates persist these values.
//!
//! The rules (after cr-sqlite):
//! * Every replicated write is a change to one *field* of one *row* (a node field, an edge's
//!   data, a SQL column), stamped with a [`Version`]: a hybrid-logical-clock time and the
//!   writing site. The greatest version wins (last writer wins, per field).
//! * Each row has a causal length: odd while it exists, even once deleted. Every change
//!   carries the row's causal length when it was made; a greater causal length wins over any
//!   field version, so a delete beats older writes and loses to a later re-insert.
//! * The *sentinel* field `""` records creation and deletion.

mod causal;
mod hlc;
mod model;
mod site;
mod version;
mod vv;

pub use causal::{FieldDecision, RowDecision, SENTINEL, decide_field, decide_sentinel, is_alive};
pub use hlc::{
    ClockDrift, DEFAULT_MAX_DRIFT, Hlc, HybridClock, check_drift, check_drift_at, wall_millis,
};
pub use model::{Change, Model, ModelRow};
pub use site::{ParseSiteIdError, SiteId};
pub use version::Version;
pub use vv::{ParseVersionVectorError, VersionVector};
