//! Merging received changes on a thread of their own, so a session reads and decodes the next
//! message while the last one merges. Batches that arrive while a merge runs are merged
//! together, in one transaction: a peer that sends faster than this side merges (an initial
//! sync) gets fewer, larger transactions, each of which writes a touched page once; a live
//! change still merges on its own as soon as it arrives.
//!
//! A sender cuts its changes into messages by size, anywhere in a row (a row's changes stay
//! together and in order): the last row of what arrived waits for the next message, or for
//! the end of the set, so that every row merges whole (see [`split_off_last_row`]).

use std::sync::Arc;

use tokio::sync::mpsc;

use pluresdb_core::{
    ApplyReport, ChangeRecord, Database, Error, ErrorKind, Result, ResumePoint, SiteId,
};

use crate::key_map::KeyMap;

/// Received batches waiting to merge or merging, at most (the session stops reading the peer
/// when they are this many: memory stays bounded however fast the peer sends).
const QUEUE: usize = 8;

/// Received changes waiting to merge or merging, at most, however many batches hold them: a
/// change takes about 100 bytes once decoded, and a 16 MiB message of tiny ones holds
/// millions, so counting batches alone let a peer queue gigabytes. (A batch is taken whatever
/// its size once the queue has room: a single message is bounded by the message limit.)
const QUEUE_CHANGES: usize = 1 << 20;

/// Batches that queued up are merged together until they hold this many changes.
pub(crate) const GROUP_CHANGES: usize = 20_000;

/// What one merge did: how many batches (and received changes) it took, and its report.
#[derive(Clone, Debug, Default)]
pub(crate) struct Merged {
    pub(crate) batches: usize,
    pub(crate) changes: usize,
    pub(crate) report: ApplyReport,
}

/// Most changes of one row held back: more than a table row has (SQLite allows at most 32,767
/// columns), so a longer row is a node's many fields, which merge as well in parts, or a
/// faulty peer's repeats; held back, a row sent without end would fill memory.
pub(crate) const MAX_HELD: usize = 1 << 16;

/// Removes the changes of the last row of `changes` (those after the last change to another
/// row) and returns them: they may go on in the next message. Merged on their own, a new
/// row's first changes would insert it without its other columns: a NOT NULL one fails, and
/// a nullable one shows the row incomplete until the rest merges. A last row of more than
/// [`MAX_HELD`] changes stays: it merges now.
pub(crate) fn split_off_last_row(changes: &mut Vec<ChangeRecord>) -> Vec<ChangeRecord> {
    let Some(last) = changes.last() else {
        return Vec::new();
    };
    let same_row = |c: &ChangeRecord| {
        (Arc::ptr_eq(&c.key, &last.key) || c.key == last.key) && c.collection == last.collection
    };
    let row = changes.iter().rev().take_while(|c| same_row(c));
    let count = row.take(MAX_HELD + 1).count();
    if count > MAX_HELD {
        return Vec::new();
    }
    changes.split_off(changes.len() - count)
}

/// A received batch, and whether it ends the peer's set (its `Done` came next) or a
/// resumable part of it (a `Progress` came next): the changes held back then merge too.
struct Job {
    changes: Vec<ChangeRecord>,
    ends_set: bool,
    /// The point the peer's `Progress` gave, stored with the merge.
    point: Option<ResumePoint>,
    /// The peer that sent them.
    from: SiteId,
    /// How the peer's composite keys map onto this database's, as its last `KeyColumns`
    /// said when the batch arrived (`None`: no changes).
    keys: Option<Arc<KeyMap>>,
}

/// Puts the key values of `job` in this database's order (on the merging thread, which may
/// wait for the database; the session's task must not).
fn map_keys(db: &Database, job: &mut Job) -> Result<()> {
    match &job.keys {
        Some(keys) => keys.apply(db, &mut job.changes),
        None => Ok(()),
    }
}

/// The merging thread of one session, and how many batches it was given and has merged.
pub(crate) struct Applier {
    jobs: Option<mpsc::UnboundedSender<Job>>,
    results: mpsc::UnboundedReceiver<Result<Merged>>,
    /// Batches submitted so far.
    submitted: usize,
    /// Batches reported merged so far (they merge in the order submitted).
    merged: usize,
    /// Changes submitted and not yet reported merged.
    queued: usize,
}

impl Applier {
    /// Starts the thread that merges into `db`, for a session that began when the cursors had
    /// been set back `resets_seen` times (see [`Database::apply_changes_resumable`]).
    pub(crate) fn start(db: Database, resets_seen: u64) -> Applier {
        let (jobs, mut queue) = mpsc::unbounded_channel::<Job>();
        let (done, results) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            // The last row received, until the rest of it (or the end of the set) arrives; a
            // session that ends before then drops it: the peer sends it again next time.
            let mut held = Vec::new();
            // A table refused the peer's changes: no later resume point is recorded past them.
            let mut refused = false;
            'jobs: while let Some(mut job) = queue.blocking_recv() {
                if let Err(e) = map_keys(&db, &mut job) {
                    let _ = done.send(Err(e));
                    break;
                }
                let mut changes = std::mem::take(&mut held);
                let mut taken = job.changes.len();
                let from = job.from;
                let mut last = job;
                changes.append(&mut last.changes);
                // The latest resume point of the group: every change before it is in the group
                // (a row held back below comes after it).
                let mut point = last.point.take();
                // The group ends with whole rows: its set ended, or a point came last.
                let mut ends_whole = last.ends_set || point.is_some();
                let mut batches = 1;
                // A group ends with its set: the next set's last row may go on.
                while !last.ends_set && changes.len() < GROUP_CHANGES {
                    match queue.try_recv() {
                        Ok(mut more) => {
                            if let Err(e) = map_keys(&db, &mut more) {
                                let _ = done.send(Err(e));
                                break 'jobs;
                            }
                            taken += more.changes.len();
                            changes.append(&mut more.changes);
                            ends_whole = more.ends_set || more.point.is_some();
                            point = more.point.take().or(point);
                            (batches, last) = (batches + 1, more);
                        }
                        Err(_) => break,
                    }
                }
                if !ends_whole {
                    held = split_off_last_row(&mut changes);
                }
                let merged = match point.as_ref().filter(|_| !refused) {
                    Some(point) => db.apply_changes_resumable(from, &changes, point, resets_seen),
                    None => merge(&db, from, &changes),
                };
                refused |= matches!(&merged, Ok(report) if !report.refused.is_empty());
                let merged = merged.map(|report| Merged {
                    batches,
                    changes: taken,
                    report,
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
            submitted: 0,
            merged: 0,
            queued: 0,
        }
    }

    /// Queues a received batch, its keys to be put in this database's order by `keys` (the
    /// caller waits for [`has_room`](Self::has_room) first: the session keeps running while
    /// batches merge, so it still pings its peer).
    pub(crate) fn submit(
        &mut self,
        from: SiteId,
        changes: Vec<ChangeRecord>,
        keys: &Arc<KeyMap>,
    ) -> Result<()> {
        self.queue(Job {
            changes,
            ends_set: false,
            point: None,
            from,
            keys: Some(keys.clone()),
        })
    }

    /// Queues the peer's resume point: stored with the merge of every change before it.
    pub(crate) fn mark(&mut self, from: SiteId, point: ResumePoint) -> Result<()> {
        self.queue(Job {
            changes: Vec::new(),
            ends_set: false,
            point: Some(point),
            from,
            keys: None,
        })
    }

    /// Marks the end of the peer's set (its `Done`): the row held back merges. Counts as a
    /// batch, so waiting for the batches up to it waits for that row too.
    pub(crate) fn end_set(&mut self, from: SiteId) -> Result<()> {
        self.queue(Job {
            changes: Vec::new(),
            ends_set: true,
            point: None,
            from,
            keys: None,
        })
    }

    fn queue(&mut self, job: Job) -> Result<()> {
        let jobs = self.jobs.as_ref().ok_or_else(stopped)?;
        // A thread that stopped did so on an error, which `merged` reports (the batch counts
        // as submitted, so the caller still asks for it).
        self.queued += job.changes.len();
        let _ = jobs.send(job);
        self.submitted += 1;
        Ok(())
    }

    /// Whether another batch may be queued.
    pub(crate) fn has_room(&self) -> bool {
        self.submitted - self.merged < QUEUE && self.queued < QUEUE_CHANGES
    }

    /// Batches submitted so far.
    pub(crate) fn submitted(&self) -> usize {
        self.submitted
    }

    /// Whether the first `batches` submitted batches have merged.
    pub(crate) fn has_merged(&self, batches: usize) -> bool {
        self.merged >= batches
    }

    /// Whether every submitted batch was reported merged.
    pub(crate) fn idle(&self) -> bool {
        self.has_merged(self.submitted)
    }

    /// The next merge's result (a merge error, or an error if the thread stopped).
    pub(crate) async fn merged(&mut self) -> Result<Merged> {
        let merged = self.results.recv().await.ok_or_else(stopped)??;
        self.merged += merged.batches;
        self.queued -= merged.changes;
        Ok(merged)
    }

    /// Waits for what is still queued to merge, lets the thread end, and returns what those
    /// merges did.
    pub(crate) async fn finish(&mut self) -> Result<ApplyReport> {
        self.jobs = None;
        let mut total = ApplyReport::default();
        while !self.idle() {
            total += self.merged().await?.report;
        }
        Ok(total)
    }
}

/// Merges `changes` received from `from`, if any (an empty merge would still take the write
/// lock).
pub(crate) fn merge(db: &Database, from: SiteId, changes: &[ChangeRecord]) -> Result<ApplyReport> {
    if changes.is_empty() {
        return Ok(ApplyReport::default());
    }
    db.apply_changes_from(from, changes)
}

fn stopped() -> Error {
    Error::new(
        ErrorKind::Io,
        "the merging thread of the sync session stopped",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A change setting field `field` of node `n` to "1" at clock time `millis`.
    fn node_change(field: String, millis: u64) -> ChangeRecord {
        ChangeRecord {
            collection: pluresdb_core::NODES.into(),
            key: vec![pluresdb_core::Value::Text("n".into())].into(),
            field: field.into(),
            value: Some(pluresdb_core::Value::Text("1".into())),
            version: pluresdb_core::Version::new(
                pluresdb_core::Hlc::new(millis, 0),
                pluresdb_core::SiteId([5; 16]),
            ),
            cl: 1,
        }
    }

    /// The peer the test batches come from.
    const PEER: SiteId = SiteId([6; 16]);

    #[test]
    fn a_row_longer_than_any_table_row_is_not_held_back() {
        let change = |i: usize| node_change(format!("data.f{i}"), 1);
        let mut short: Vec<ChangeRecord> = (0..3).map(change).collect();
        assert_eq!(split_off_last_row(&mut short).len(), 3);
        // A peer sending one row without end (duplicates, say) had it all held in memory,
        // message after message.
        let mut long: Vec<ChangeRecord> = (0..MAX_HELD + 1).map(change).collect();
        assert!(split_off_last_row(&mut long).is_empty());
        assert_eq!(long.len(), MAX_HELD + 1, "all merge now");
    }

    #[tokio::test]
    async fn the_queue_is_bounded_by_changes_as_well_as_batches() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path().join("db.db")).unwrap();
        let change = node_change("data.f".into(), pluresdb_core::wall_millis());
        let mut applier = Applier::start(db, 0);
        // One batch of many changes fills the queue; a batch of a few does not.
        applier
            .submit(PEER, vec![change.clone(); 3], &Arc::default())
            .unwrap();
        assert!(applier.has_room());
        applier
            .submit(PEER, vec![change; QUEUE_CHANGES], &Arc::default())
            .unwrap();
        assert!(
            !applier.has_room(),
            "two batches, but over a million changes"
        );
        while !applier.idle() {
            applier.merged().await.unwrap();
        }
        assert!(applier.has_room(), "merged: room again");
    }

    #[tokio::test]
    async fn a_failed_merge_is_reported_with_its_own_error() {
        let dir = tempfile::tempdir().unwrap();
        let open = |name: &str| {
            let db = Database::open(dir.path().join(name)).unwrap();
            db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY NOT NULL, v TEXT)")
                .unwrap();
            db.sync_table("t").unwrap();
            db
        };
        let source = open("source.db");
        source.exec("INSERT INTO t VALUES (1, 'x')").unwrap();
        let good = source.changes_since(0, None).unwrap().changes;
        let mut bad = good.clone();
        bad[0].cl = 0;
        let mut applier = Applier::start(open("db.db"), 0);
        applier.submit(PEER, good, &Arc::default()).unwrap();
        applier.end_set(PEER).unwrap();
        // The good batch (and the end of its set) merge alone first: sent at once, the two
        // sets would merge as one group and fail together.
        let mut merged = 0;
        while merged < 2 {
            merged += applier.merged().await.unwrap().batches;
        }
        applier.submit(PEER, bad, &Arc::default()).unwrap();
        applier.end_set(PEER).unwrap();
        // A batch after the bad one is taken without an error (the thread may have stopped);
        // the merge reports the bad one's own error.
        applier.submit(PEER, Vec::new(), &Arc::default()).unwrap();
        // (When the thread took the bad batch before its end was queued, it held the row
        // back and first reported an empty merge.)
        let err = loop {
            match applier.merged().await {
                Ok(merged) => assert_eq!(merged.report.received, 0),
                Err(e) => break e,
            }
        };
        assert!(err.to_string().contains("causal length 0"), "{err}");
    }
}
