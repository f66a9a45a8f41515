//! Which user triggers write synced tables: found by preparing (never running) an INSERT, an
//! UPDATE of every column and a DELETE of each synced table on the writer, while its
//! authorizer notes the writes that triggers coded into them would make. A merge runs such
//! triggers again on every device, while the device that made the change sends their results
//! too, so the replicas can differ (see `ApplyReport::trigger_writes`).

use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use rusqlite::hooks::{AuthAction, AuthContext};

/// The authorizer's side of a probe, shared with the engine.
#[derive(Default)]
pub(crate) struct TriggerProbe {
    on: AtomicBool,
    /// `(trigger, table it writes)`, as the authorizer reported them.
    seen: Mutex<Vec<(String, String)>>,
}

impl TriggerProbe {
    /// Whether statements are being prepared for a probe: the authorizer then only notes
    /// what they would write (they never run).
    pub(crate) fn probing(&self) -> bool {
        self.on.load(Ordering::Acquire)
    }

    /// Called by the authorizer while probing: notes a write made by a user trigger.
    pub(crate) fn note(&self, ctx: &AuthContext<'_>) {
        let table = match ctx.action {
            AuthAction::Insert { table_name }
            | AuthAction::Delete { table_name }
            | AuthAction::Update { table_name, .. } => table_name,
            _ => return,
        };
        if let Some(trigger) = ctx.accessor.filter(|t| !t.starts_with("_pluresdb")) {
            let entry = (trigger.to_owned(), table.to_owned());
            let mut seen = self.seen.lock();
            if !seen.contains(&entry) {
                seen.push(entry);
            }
        }
    }

    /// Runs `prepare` (which prepares the probing statements) with the probe on; returns what
    /// the triggers in them write.
    pub(crate) fn run<E>(
        &self,
        prepare: impl FnOnce() -> Result<(), E>,
    ) -> Result<Vec<(String, String)>, E> {
        self.seen.lock().clear();
        self.on.store(true, Ordering::Release);
        let prepared = prepare();
        self.on.store(false, Ordering::Release);
        let seen = std::mem::take(&mut *self.seen.lock());
        prepared.map(|()| seen)
    }
}
