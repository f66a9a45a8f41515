//! Pure building blocks for PluresDB replication: the hybrid logical clock and site ids.
//!
//! Nothing here does I/O; the storage crates persist these values.

mod hlc;
mod site;

pub use hlc::{Hlc, HybridClock};
pub use site::{ParseSiteIdError, SiteId};
