//! Change notifications: callbacks and streams that fire after a commit, never for work
//! that rolled back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;

use parking_lot::{Mutex, RwLock};

use crate::graph::{Edge, Node};
use crate::sql_text::{next_token, skip_blanks};

/// A node that was written or deleted.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeChange {
    /// The node id.
    pub id: String,
    /// The node after the change; `None` when it was deleted.
    pub node: Option<Node>,
}

/// An edge that was linked, changed or unlinked.
#[derive(Clone, Debug, PartialEq)]
pub struct EdgeChange {
    /// Source node id.
    pub from: String,
    /// Relation name.
    pub relation: String,
    /// Target node id.
    pub to: String,
    /// The edge after the change; `None` when it was unlinked.
    pub edge: Option<Edge>,
}

/// What a SQL statement did to a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowOp {
    /// INSERT.
    Insert,
    /// UPDATE.
    Update,
    /// DELETE.
    Delete,
}

/// A row of a user table changed by SQL. As with SQLite's update hook, `WITHOUT ROWID`
/// tables are not reported, nor rows removed by a `DELETE` without `WHERE` (SQLite's
/// truncate optimization).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowChange {
    /// The table name.
    pub table: String,
    /// What happened.
    pub op: RowOp,
    /// The row's rowid.
    pub rowid: i64,
}

/// One committed change.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// A node was written or deleted.
    Node(NodeChange),
    /// An edge was linked, changed or unlinked.
    Edge(EdgeChange),
    /// A row of a user table changed.
    Row(RowChange),
}

/// Identifies a subscription, for [`Database::off`](crate::Database::off).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SubscriptionId(u64);

/// Which node changes a subscription wants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum NodeFilter {
    Id(String),
    Prefix(String),
    Any,
}

impl NodeFilter {
    /// `"user:*"` watches a prefix, `"*"` everything, anything else one id.
    pub(crate) fn parse(pattern: &str) -> NodeFilter {
        match pattern.strip_suffix('*') {
            Some("") => NodeFilter::Any,
            Some(prefix) => NodeFilter::Prefix(prefix.to_owned()),
            None => NodeFilter::Id(pattern.to_owned()),
        }
    }

    fn matches(&self, id: &str) -> bool {
        match self {
            NodeFilter::Id(want) => want == id,
            NodeFilter::Prefix(prefix) => id.starts_with(prefix.as_str()),
            NodeFilter::Any => true,
        }
    }
}

type NodeCallback = Arc<dyn Fn(&NodeChange) + Send + Sync>;
type ChangeCallback = Arc<dyn Fn(&Change) -> bool + Send + Sync>;

enum Listener {
    Node(NodeFilter, NodeCallback),
    All(ChangeCallback),
}

/// Collects changes during a transaction and delivers them after it commits.
#[derive(Default)]
pub(crate) struct EventHub {
    pending: Mutex<Vec<Change>>,
    /// Savepoints opened in SQL, innermost last, with the pending length when each opened.
    savepoints: Mutex<Vec<(String, usize)>>,
    committed: Mutex<Committed>,
    /// `committed` is not empty (checked after every write without taking the lock).
    has_committed: AtomicBool,
    listeners: RwLock<Vec<(SubscriptionId, Arc<Listener>)>>,
    next_id: AtomicU64,
    /// Somebody listens: node changes are worth building.
    active: AtomicBool,
    /// Somebody listens to every change: row changes are worth recording.
    wants_rows: AtomicBool,
}

/// What a savepoint statement does.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum SavepointOp {
    Open,
    Release,
    RollbackTo,
}

/// A savepoint statement: what it does, and the savepoint's name as SQLite compares it
/// (unquoted, ASCII-lowercased).
pub(crate) type SavepointStmt = (SavepointOp, String);

/// The savepoint statement `sql` is, if it is one.
pub(crate) fn savepoint_statement(sql: &str) -> Option<SavepointStmt> {
    // Every statement comes here: most are told apart by their first word, without copying.
    let head = skip_blanks(sql);
    let word = &head[..head
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(head.len())];
    if !["savepoint", "release", "rollback"]
        .iter()
        .any(|w| w.eq_ignore_ascii_case(word))
    {
        return None;
    }
    let mut words = Vec::with_capacity(5);
    let mut rest = sql;
    while let Some((word, tail)) = next_token(rest) {
        if words.len() == 5 {
            return None;
        }
        words.push(word);
        rest = tail;
    }
    if !skip_blanks(skip_blanks(rest).trim_start_matches(';')).is_empty() {
        return None;
    }
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let (op, name) = match words.as_slice() {
        ["savepoint", name] => (SavepointOp::Open, name),
        ["release", name] | ["release", "savepoint", name] => (SavepointOp::Release, name),
        ["rollback", "to", name]
        | ["rollback", "to", "savepoint", name]
        | ["rollback", "transaction", "to", name]
        | ["rollback", "transaction", "to", "savepoint", name] => (SavepointOp::RollbackTo, name),
        _ => return None,
    };
    Some((op, (*name).to_owned()))
}

/// Changes committed but not yet delivered.
#[derive(Default)]
struct Committed {
    changes: Vec<Change>,
    /// A thread is delivering: it also delivers whatever is queued meanwhile, so no other
    /// thread waits for it (a handler may be waiting for that thread).
    delivering: bool,
}

/// The right to deliver ([`Committed::delivering`]), given up when nothing is queued, or
/// on unwinding.
struct Delivering<'a>(&'a EventHub, bool);

impl Delivering<'_> {
    /// The changes queued now; `None` (and the right given up, under the same lock, so no
    /// commit is left behind) when there are none.
    fn next_batch(&mut self) -> Option<Vec<Change>> {
        let mut committed = self.0.committed.lock();
        self.0.has_committed.store(false, Ordering::Release);
        if committed.changes.is_empty() {
            committed.delivering = false;
            self.1 = false;
            return None;
        }
        Some(std::mem::take(&mut committed.changes))
    }
}

impl Drop for Delivering<'_> {
    fn drop(&mut self) {
        if self.1 {
            self.0.committed.lock().delivering = false;
        }
    }
}

impl EventHub {
    pub(crate) fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    pub(crate) fn wants_rows(&self) -> bool {
        self.wants_rows.load(Ordering::Acquire)
    }

    /// Records a change of the open transaction (or of the statement about to commit).
    pub(crate) fn record(&self, change: Change) {
        self.pending.lock().push(change);
    }

    pub(crate) fn pending_len(&self) -> usize {
        self.pending.lock().len()
    }

    /// Forgets changes recorded after `mark` (a savepoint rolled back).
    pub(crate) fn truncate_pending(&self, mark: usize) {
        self.pending.lock().truncate(mark);
    }

    /// A SQL statement (`SAVEPOINT`, `RELEASE`, `ROLLBACK TO`) succeeded: a rollback to a
    /// savepoint forgets the changes recorded since it opened.
    pub(crate) fn savepoint_ran(&self, sql: &str) {
        if let Some(statement) = savepoint_statement(sql) {
            self.savepoint_done(statement);
        }
    }

    /// The savepoint statement `statement` (see [`savepoint_statement`]) succeeded.
    pub(crate) fn savepoint_done(&self, (op, name): SavepointStmt) {
        let mut savepoints = self.savepoints.lock();
        let found = savepoints.iter().rposition(|(n, _)| *n == name);
        match (op, found) {
            (SavepointOp::Open, _) => savepoints.push((name, self.pending_len())),
            (SavepointOp::Release, Some(i)) => savepoints.truncate(i),
            (SavepointOp::RollbackTo, Some(i)) => {
                self.truncate_pending(savepoints[i].1);
                savepoints.truncate(i + 1);
            }
            (_, None) => {}
        }
    }

    /// Called by SQLite's commit hook.
    pub(crate) fn on_commit(&self) {
        self.savepoints.lock().clear();
        let mut pending = self.pending.lock();
        if !pending.is_empty() {
            self.committed.lock().changes.append(&mut pending);
            self.has_committed.store(true, Ordering::Release);
        }
    }

    /// Called by SQLite's rollback hook.
    pub(crate) fn on_rollback(&self) {
        self.savepoints.lock().clear();
        self.pending.lock().clear();
    }

    /// Delivers committed changes to listeners, in commit order, each once. When another
    /// thread (or an outer call on this one, from a handler) is delivering, returns at once
    /// and leaves the changes queued for it.
    pub(crate) fn deliver_committed(&self) {
        if !self.has_committed.load(Ordering::Acquire) {
            return;
        }
        {
            let mut committed = self.committed.lock();
            if committed.delivering {
                return;
            }
            committed.delivering = true;
        }
        let mut delivering = Delivering(self, true);
        while let Some(changes) = delivering.next_batch() {
            self.deliver(&changes);
        }
    }

    fn deliver(&self, changes: &[Change]) {
        let listeners: Vec<_> = self
            .listeners
            .read()
            .iter()
            .map(|(id, l)| (*id, l.clone()))
            .collect();
        let mut closed = Vec::new();
        for change in changes {
            for (id, listener) in &listeners {
                let keep =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match &**listener {
                        Listener::Node(filter, callback) => {
                            if let Change::Node(node) = change
                                && filter.matches(&node.id)
                            {
                                callback(node);
                            }
                            true
                        }
                        Listener::All(callback) => callback(change),
                    }));
                match keep {
                    Ok(true) => {}
                    Ok(false) => closed.push(*id),
                    Err(_) => {
                        eprintln!("pluresdb: a change listener panicked; it was removed");
                        closed.push(*id);
                    }
                }
            }
        }
        for id in closed {
            self.remove(id);
        }
    }

    fn add(&self, listener: Listener) -> SubscriptionId {
        let id = SubscriptionId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let mut listeners = self.listeners.write();
        listeners.push((id, Arc::new(listener)));
        self.refresh_flags(&listeners);
        id
    }

    pub(crate) fn remove(&self, id: SubscriptionId) -> bool {
        let mut listeners = self.listeners.write();
        let before = listeners.len();
        listeners.retain(|(i, _)| *i != id);
        self.refresh_flags(&listeners);
        listeners.len() != before
    }

    fn refresh_flags(&self, listeners: &[(SubscriptionId, Arc<Listener>)]) {
        self.active.store(!listeners.is_empty(), Ordering::Release);
        let rows = listeners
            .iter()
            .any(|(_, l)| matches!(**l, Listener::All(_)));
        self.wants_rows.store(rows, Ordering::Release);
    }

    pub(crate) fn on_nodes(&self, filter: NodeFilter, callback: NodeCallback) -> SubscriptionId {
        self.add(Listener::Node(filter, callback))
    }

    pub(crate) fn on_all(&self, callback: ChangeCallback) -> SubscriptionId {
        self.add(Listener::All(callback))
    }

    /// A channel receiving every committed change; closing the receiver unsubscribes.
    pub(crate) fn stream(&self) -> ChangeStream {
        let (tx, rx) = mpsc::channel();
        let id = self.on_all(Arc::new(move |change: &Change| {
            tx.send(change.clone()).is_ok()
        }));
        ChangeStream { id, rx }
    }
}

/// Every committed change, in commit order, as a channel receiver (see
/// [`Database::on_change`](crate::Database::on_change)). Dropping it unsubscribes.
pub struct ChangeStream {
    id: SubscriptionId,
    rx: mpsc::Receiver<Change>,
}

impl ChangeStream {
    /// The subscription behind the stream.
    pub fn id(&self) -> SubscriptionId {
        self.id
    }

    /// Waits for the next change.
    pub fn recv(&self) -> Option<Change> {
        self.rx.recv().ok()
    }

    /// Waits up to `timeout` for the next change.
    pub fn recv_timeout(&self, timeout: std::time::Duration) -> Option<Change> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// The next change if one is waiting.
    pub fn try_recv(&self) -> Option<Change> {
        self.rx.try_recv().ok()
    }

    /// Every change waiting now.
    pub fn drain(&self) -> Vec<Change> {
        self.rx.try_iter().collect()
    }
}

impl Iterator for ChangeStream {
    type Item = Change;

    fn next(&mut self) -> Option<Change> {
        self.recv()
    }
}

#[cfg(test)]
mod tests {
    use super::{SavepointOp::*, savepoint_statement};

    #[test]
    fn savepoint_statements_are_recognized_with_comments_and_quoted_names() {
        let cases = [
            ("SAVEPOINT a", Some((Open, "a"))),
            ("  -- why\n/* x */ savepoint \"A b\";", Some((Open, "a b"))),
            ("RELEASE SAVEPOINT `x``y`", Some((Release, "x`y"))),
            ("release [s p]/* done */", Some((Release, "s p"))),
            (
                "ROLLBACK TRANSACTION TO SAVEPOINT \"q\"\"\"",
                Some((RollbackTo, "q\"")),
            ),
            ("rollback to s; ", Some((RollbackTo, "s"))),
            ("ROLLBACK", None),
            ("SAVEPOINT", None),
            ("SAVEPOINT a b", None),
            ("SELECT 1", None),
            ("savepoints", None),
            ("ROLLBACK TO \"unterminated", None),
        ];
        for (sql, want) in cases {
            let got = savepoint_statement(sql);
            let got = got.as_ref().map(|(op, name)| (*op, name.as_str()));
            assert_eq!(got, want, "{sql:?}");
        }
    }

    #[test]
    fn savepoint_names_end_where_sqlite_ends_them() {
        // SQLite ends a word at a quote (`SAVEPOINT"a"` is SAVEPOINT "a") and only at ASCII
        // whitespace: other characters beyond ASCII belong to the name.
        let cases = [
            ("SAVEPOINT\"a b\"", Some((Open, "a b"))),
            ("ROLLBACK TO\"a b\";", Some((RollbackTo, "a b"))),
            ("RELEASE['x']", Some((Release, "'x'"))),
            ("rollback to'q'", Some((RollbackTo, "q"))),
            ("SAVEPOINT a\u{a0}b", Some((Open, "a\u{a0}b"))),
            ("RELEASE \u{2003}x", Some((Release, "\u{2003}x"))),
            ("SAVEPOINT a(b", None),
        ];
        for (sql, want) in cases {
            let got = savepoint_statement(sql);
            let got = got.as_ref().map(|(op, name)| (*op, name.as_str()));
            assert_eq!(got, want, "{sql:?}");
        }
    }
}
