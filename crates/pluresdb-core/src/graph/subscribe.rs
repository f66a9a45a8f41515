//! Subscriptions with the names PluresDB (GunDB-style) users know: `on`, `off`, `on_any`,
//! and `on_change` for every committed change.

use std::sync::Arc;

use crate::database::Database;
use crate::events::{Change, ChangeStream, NodeChange, NodeFilter, SubscriptionId};

impl Database {
    /// Calls `callback` after every commit that wrote or deleted a matching node:
    /// `"user:1"` watches one id, `"user:*"` every id with that prefix, `"*"` all.
    /// Callbacks run on the committing thread, after the commit; keep them short. Changes
    /// committed while a thread is delivering (by a callback, or by a thread it waits for)
    /// are delivered by that thread, in commit order, after the current callback returns.
    /// Only commits through this handle (and its clones, merges included) are reported, not
    /// those of another process on the same file.
    pub fn on(
        &self,
        pattern: &str,
        callback: impl Fn(&NodeChange) + Send + Sync + 'static,
    ) -> SubscriptionId {
        self.engine()
            .hub
            .on_nodes(NodeFilter::parse(pattern), Arc::new(callback))
    }

    /// Calls `callback` after every committed node change (`on("*")`).
    pub fn on_any(&self, callback: impl Fn(&NodeChange) + Send + Sync + 'static) -> SubscriptionId {
        self.engine()
            .hub
            .on_nodes(NodeFilter::Any, Arc::new(callback))
    }

    /// Calls `callback` after every committed change of any kind: nodes, edges and rows of
    /// user tables changed by SQL.
    pub fn on_every_change(
        &self,
        callback: impl Fn(&Change) + Send + Sync + 'static,
    ) -> SubscriptionId {
        self.engine().hub.on_all(Arc::new(move |c: &Change| {
            callback(c);
            true
        }))
    }

    /// Removes a subscription; returns whether it existed.
    pub fn off(&self, id: SubscriptionId) -> bool {
        self.engine().hub.remove(id)
    }

    /// A stream of every change committed through this handle (nodes, edges, SQL rows), in
    /// commit order; another process's commits are not reported (see [`on`](Self::on)).
    pub fn on_change(&self) -> ChangeStream {
        self.engine().hub.stream()
    }
}
