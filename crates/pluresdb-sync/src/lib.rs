//! PluresDB sync: moves changes between databases so they converge.
//!
//! * [`codec`]: the protocol's messages in a compact, versioned binary form.
//! * [`run_session`]: a two-way sync over a WebSocket (any transport stream);
//!   [`answer_session`] for the side that accepted the connection.
//! * [`net`]: `serve` and `sync` over TCP.
//! * [`file`](mod@file): change files for devices without a network between them.

mod applier;
pub mod codec;
pub mod file;
mod key_map;
pub mod net;
mod notes;
mod session;

pub use notes::{
    left_out_note, peer_left_out_note, peer_refused_error, refused_error, waiting_note,
};
pub use session::{
    OnProgress, OnSessionEnd, PEER_STOPPED, Progress, SessionEndFn, SessionOptions, SessionReport,
    Stop, answer_session, run_session,
};
