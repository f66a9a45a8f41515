//! Merging received changes on a thread of their own, so a session reads and decodes the next
//! message while the last one merges. Batches that arrive while a merge runs are merged
//! together, in one transaction: a peer that sends faster than this side merges (an initial
//! sync) gets fewer, larger transactions, each of which writes a touched page once; a live
//! change still merges on its own as soon as it arrives.

use tokio::sync::mpsc;

use pluresdb_core::{ChangeRecord, Database, Error, ErrorKind, Result};

/// Received batches waiting to merge, at most (the session stops reading the peer when they
/// are this many: memory stays bounded however fast the peer sends).
const QUEUE: usize = 4;

/// Batches that queued up are merged together until they hold this many changes.
pub(crate) const GROUP_CHANGES: usize = 20_000;

/// What one merge did.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Merged {
    /// Batches it merged.
    pub(crate) batches: usize,
    /// Changes in them.
    pub(crate) received: u64,
    /// Changes that won.
    pub(crate) applied: u64,
}

/// The merging thread of one session, and the batches it has not reported yet.
pub(crate) struct Applier {
    jobs: Option<mpsc::Sender<Vec<ChangeRecord>>>,
    results: mpsc::UnboundedReceiver<Result<Merged>>,
    /// Batches submitted and not yet reported merged.
    pending: usize,
}

impl Applier {
    /// Starts the thread that merges into `db`.
    pub(crate) fn start(db: Database) -> Applier {
        let (jobs, mut queue) = mpsc::channel::<Vec<ChangeRecord>>(QUEUE);
        let (done, results) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            while let Some(mut changes) = queue.blocking_recv() {
                let mut batches = 1;
                while changes.len() < GROUP_CHANGES {
                    match queue.try_recv() {
                        Ok(more) => {
                            changes.extend(more);
                            batches += 1;
                        }
                        Err(_) => break,
                    }
                }
                let merged = db.apply_changes(&changes).map(|r| Merged {
                    batches,
                    received: changes.len() as u64,
                    applied: r.applied,
                });
                let failed = merged.is_err();
                if done.send(merged).is_err() || failed {
                    break;
                }
            }
        });
        Applier {
            jobs: Some(jobs),
            results,
            pending: 0,
        }
    }

    /// Queues a received batch; waits while the queue is full.
    pub(crate) async fn submit(&mut self, changes: Vec<ChangeRecord>) -> Result<()> {
        let jobs = self.jobs.as_ref().ok_or_else(stopped)?;
        if jobs.send(changes).await.is_err() {
            // The thread stopped on an error: report that one.
            return match self.results.recv().await {
                Some(Err(e)) => Err(e),
                _ => Err(stopped()),
            };
        }
        self.pending += 1;
        Ok(())
    }

    /// Whether every submitted batch was reported merged.
    pub(crate) fn idle(&self) -> bool {
        self.pending == 0
    }

    /// The next merge's result (call only when not [`idle`](Self::idle)).
    pub(crate) async fn merged(&mut self) -> Result<Merged> {
        let merged = self.results.recv().await.ok_or_else(stopped)??;
        self.pending = self.pending.saturating_sub(merged.batches);
        Ok(merged)
    }

    /// Waits for what is still queued to merge, lets the thread end, and returns what those
    /// merges did.
    pub(crate) async fn finish(mut self) -> Result<Merged> {
        self.jobs = None;
        let mut total = Merged::default();
        while !self.idle() {
            let m = self.merged().await?;
            total.received += m.received;
            total.applied += m.applied;
        }
        Ok(total)
    }
}

fn stopped() -> Error {
    Error::new(
        ErrorKind::Io,
        "the merging thread of the sync session stopped",
    )
}
