//! Merging remote changes: validated first, then applied in one transaction by the causal
//! length and last-writer-wins rules. Applying the same changes again, or in another order,
//! leaves the same state.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use rusqlite::{CachedStatement, Connection, OptionalExtension};
use serde_json::Map;

use pluresdb_crdt::{
    FieldDecision, Hlc, RowDecision, SENTINEL, SiteId, Version, decide_field, decide_sentinel,
    is_alive,
};

use super::affinity;
use super::clock::{MAX_FIELD_BYTES, RowClock, Stamp};
use super::collections::{Collection, Kind, TableInfo, quote};
use super::edge_clock;
use super::history::append_history;
use super::keys;
use super::missed::{self, Missed};
use super::packs;
use super::received;
use super::refetch::{self, Refetch};
use super::refusals;
use super::resume::{self, ResumePoint};
use super::state::Replication;
use super::{ChangeRecord, MAX_CLOCK_DRIFT};
use crate::database::Database;
use crate::error::{Error, ErrorKind, Result};
use crate::events::{Change, EdgeChange, NodeChange};
use crate::graph::{
    Edge, MAX_JSON_DEPTH, Node, UPSERT_NODE, blob_to_vector, check_depth, check_id, ends,
    stored_text,
};
use crate::strict_json;
use crate::value::Value;

/// Largest value accepted in a change (text or blob), in bytes.
pub const MAX_VALUE_BYTES: usize = 64 << 20;

/// Largest causal length accepted from a peer: it is stored as a signed 64-bit integer and
/// counted up by local deletes and re-inserts, which must not overflow.
const MAX_CAUSAL_LENGTH: u64 = 1 << 62;

/// The sequence number a merge gives the versions it stores until the row is known to change
/// (then the transaction's `db_version` replaces it).
const PENDING_SEQ: u64 = u64::MAX;

/// What applying a batch of changes did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ApplyReport {
    /// Changes received.
    pub received: u64,
    /// Changes that won and were written.
    pub applied: u64,
    /// Changes that lost (older, duplicates, or about an older life of the row).
    pub ignored: u64,
    /// Rows (nodes, edges, table rows) that changed.
    pub rows: u64,
    /// Changes left out because this database lacks their table or column (a peer's newer
    /// schema, or a table dropped or not synced here). Once the table or column is here, this
    /// database asks its peers for all their changes again.
    pub skipped: u64,
    /// The tables and columns of the changes left out (`skipped`), sorted, at most
    /// [`MAX_LEFT_OUT_NAMED`].
    pub left_out: Vec<Refetch>,
    /// Rows of synced tables that triggers wrote as merged rows were written. The merge does
    /// not record them as changes (the device where the write was made ran its triggers and
    /// sent their results), so a trigger that writes a synced table makes the replicas
    /// differ: keep what such triggers derive in unsynced tables.
    pub trigger_writes: u64,
    /// This database's `db_version` of the merge when it was noted as the peer's (see
    /// [`Database::apply_changes_from`]; the latest of several merges): what
    /// [`SyncProgress::confirm_through`](crate::SyncProgress::confirm_through) takes.
    pub noted: Option<u64>,
    /// Tables whose changes were refused: none of this batch's changes of such a table merged
    /// (only those stamped too far ahead of this machine's clock, when that is the reason), and
    /// every other change did. A peer's cursor is not to be recorded past them (sync
    /// sessions and change files do not), so the next sync sends them again: they merge once
    /// the table here (or the peer's) is fixed. Sorted; at most [`MAX_REFUSED`] refused whole.
    pub refused: Vec<Refused>,
}

impl std::ops::AddAssign for ApplyReport {
    /// Adds another batch's counts (for merges of several batches).
    fn add_assign(&mut self, other: ApplyReport) {
        self.received += other.received;
        self.applied += other.applied;
        self.ignored += other.ignored;
        self.rows += other.rows;
        self.skipped += other.skipped;
        self.left_out = join_left_out(std::mem::take(&mut self.left_out), other.left_out);
        self.trigger_writes += other.trigger_writes;
        self.noted = self.noted.max(other.noted);
        self.refused = join_refused(std::mem::take(&mut self.refused), other.refused);
    }
}

/// A synced table (or `_pluresdb_nodes`, `_pluresdb_edges`) whose changes from a peer a merge
/// refused: this database cannot store them (its key differs from the peer's, or a constraint
/// or trigger rejects a row), or they are stamped too far ahead of this machine's clock.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Refused {
    /// The table's name.
    pub table: String,
    /// What was wrong, and how to fix it.
    pub reason: String,
}

impl std::fmt::Display for Refused {
    /// `table "t": reason` (`nodes: reason`, `edges: reason`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.table.as_str() {
            super::NODES => write!(f, "nodes: {}", self.reason),
            super::EDGES => write!(f, "edges: {}", self.reason),
            table => write!(f, "table {table:?}: {}", self.reason),
        }
    }
}

/// Most tables one merge refuses whole; a batch with more fails with the error of the next.
pub const MAX_REFUSED: usize = 64;

/// Why changes stamped too far ahead of this machine's clock were refused.
fn too_far_ahead() -> String {
    format!(
        "rows with changes stamped more than {} ms ahead of this machine's clock: the clock of \
         the device that wrote them was wrong then, or this one is now. They merge once this \
         machine's time reaches theirs (a sync that starts then brings them), and the other \
         rows merge meanwhile",
        MAX_CLOCK_DRIFT.as_millis()
    )
}

/// Refuses all the changes of `table` (adding it to `whole`) for `reason`, which replaces any
/// it had (changes stamped too far ahead); fails when more than [`MAX_REFUSED`] tables are
/// refused whole.
fn refuse_whole(
    refused: &mut Vec<Refused>,
    whole: &mut Vec<String>,
    table: &str,
    reason: String,
) -> Result<()> {
    if whole.len() >= MAX_REFUSED {
        return Err(Error::invalid(format!(
            "more than {MAX_REFUSED} tables refused the peer's changes; the next: table \
             {table:?}: {reason}"
        )));
    }
    refused.retain(|r| r.table != table);
    refused.push(Refused {
        table: table.to_owned(),
        reason,
    });
    whole.push(table.to_owned());
    Ok(())
}

/// A row that failed to be written, refused with its table or alone.
enum Refusing {
    /// A table row this database cannot store (a constraint, a trigger, a vector index of
    /// another size): the table's changes are refused.
    Table(String, String),
    /// A node this database cannot store (a vector of another size than the node index's), by
    /// group: that node's changes are refused.
    Node(usize, String),
}

impl Refusing {
    /// What the failure `e` to write group `i` refuses, if anything (other errors fail the
    /// batch).
    fn of(i: usize, group: &Group<'_>, e: &Error) -> Option<Refusing> {
        let reason = e.message().to_owned();
        // (A vector index's size check runs in SQL: its error comes back as SQLite's.)
        let vector_size = e.message().contains(crate::vector::WRONG_SIZE);
        let row = matches!(e.kind(), ErrorKind::Constraint | ErrorKind::InvalidInput);
        match &group.coll.kind {
            Kind::Table(_) if row || vector_size => {
                Some(Refusing::Table(group.coll.name.clone(), reason))
            }
            Kind::Nodes if vector_size => Some(Refusing::Node(i, reason)),
            _ => None,
        }
    }
}

/// What a merge of groups takes besides them (see `Database::merge_groups`).
struct Merging<'a> {
    received: u64,
    skipped: u64,
    skipped_tables: &'a std::collections::BTreeSet<&'a str>,
    dropped: &'a std::collections::BTreeSet<u32>,
    from: Option<SiteId>,
    point: Option<(&'a ResumePoint, u64)>,
    /// Tables refused so far (told of in `_pluresdb_meta`), those of them refused whole (their
    /// groups are skipped), and the groups of nodes refused alone.
    refused: &'a [Refused],
    skipped_whole: &'a [String],
    skipped_nodes: &'a [usize],
}

/// Most tables and columns an [`ApplyReport`] names as left out.
pub const MAX_LEFT_OUT_NAMED: usize = 64;

/// The refused tables of `a` and `b`, sorted, each table once (its first reason).
pub fn join_refused(mut a: Vec<Refused>, b: Vec<Refused>) -> Vec<Refused> {
    a.extend(b);
    a.sort_unstable();
    a.dedup_by(|x, y| x.table == y.table);
    a
}

/// The tables and columns of `a` and `b`, sorted, each once, at most [`MAX_LEFT_OUT_NAMED`].
pub fn join_left_out(mut a: Vec<Refetch>, b: Vec<Refetch>) -> Vec<Refetch> {
    a.extend(b);
    a.sort_unstable();
    a.dedup();
    a.truncate(MAX_LEFT_OUT_NAMED);
    a
}

/// Resets the capture suppression when the merge ends, however it ends.
struct Suppress<'a>(&'a Replication);

impl Drop for Suppress<'_> {
    fn drop(&mut self) {
        self.0.suppress.store(false, Ordering::Release);
    }
}

/// CHECK constraints are left unchecked while a merge writes (`PRAGMA
/// ignore_check_constraints`), and checked again when it ends, however it ends.
///
/// Two edits each valid where it was made can merge into a row a CHECK over several columns
/// refuses (`lo` raised on one device, `hi` lowered on another): refused, that merge would fail
/// on every sync for good and hold back every later change. Let through, every replica holds
/// the same row, as with foreign keys (see `Database::merge_transaction`); `pluresdb check`
/// lists such rows.
/// (An app that turned the checks off keeps them off.)
struct ChecksOff<'c>(Option<&'c Connection>);

impl<'c> ChecksOff<'c> {
    fn new(conn: &'c Connection) -> Result<ChecksOff<'c>> {
        let ignored: bool = conn.query_row("PRAGMA ignore_check_constraints", [], |r| r.get(0))?;
        if ignored {
            return Ok(ChecksOff(None));
        }
        conn.execute_batch("PRAGMA ignore_check_constraints = ON")?;
        Ok(ChecksOff(Some(conn)))
    }
}

impl Drop for ChecksOff<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.0 {
            let _ = conn.execute_batch("PRAGMA ignore_check_constraints = OFF");
        }
    }
}

/// The changes of one row, in arrival order.
struct Group<'c> {
    coll: Arc<Collection>,
    key: Vec<u8>,
    key_values: Arc<[Value]>,
    changes: Vec<&'c ChangeRecord>,
}

impl Database {
    /// Merges changes from a peer in one transaction. Every change is checked first (key
    /// shape, field names, value types and sizes); if any is damaged, nothing is applied and
    /// the error names it. Changes to a table this database does not sync, or to a column it
    /// does not have, are left out and counted as [`skipped`](ApplyReport::skipped); those of a
    /// table that cannot store them, and those stamped too far ahead of this machine's clock,
    /// are [`refused`](ApplyReport::refused) while the rest merges.
    pub fn apply_changes(&self, changes: &[ChangeRecord]) -> Result<ApplyReport> {
        self.apply_changes_as(None, changes, None)
    }

    /// [`apply_changes`](Self::apply_changes) for changes received from `peer`, which has
    /// them: once the peer's set of changes is complete ([`record_sync`](Self::record_sync)
    /// records its cursor, confirming the merges through [`ApplyReport::noted`]), changes read
    /// for it leave out what this merge stored (unless it ran inside a caller's transaction).
    /// A device syncing with a hub then does not send the hub back the other devices' changes
    /// it got from there.
    pub fn apply_changes_from(
        &self,
        peer: SiteId,
        changes: &[ChangeRecord],
    ) -> Result<ApplyReport> {
        self.apply_changes_as(Some(peer), changes, None)
    }

    /// [`apply_changes_from`](Self::apply_changes_from) for the changes before a resume point
    /// in the peer's stream (see [`for_each_change_resuming`](Self::for_each_change_resuming)):
    /// the point is stored with them, in the same transaction, and given back by
    /// [`resume_point`](Self::resume_point) until the peer's set is complete. `resets_seen`
    /// is [`cursor_resets`](Self::cursor_resets) when the sync began: a point stored after
    /// the cursors were set back is not offered.
    pub fn apply_changes_resumable(
        &self,
        peer: SiteId,
        changes: &[ChangeRecord],
        point: &ResumePoint,
        resets_seen: u64,
    ) -> Result<ApplyReport> {
        self.apply_changes_as(Some(peer), changes, Some((point, resets_seen)))
    }

    fn apply_changes_as(
        &self,
        from: Option<SiteId>,
        changes: &[ChangeRecord],
        point: Option<(&ResumePoint, u64)>,
    ) -> Result<ApplyReport> {
        self.require_graph()?;
        let repl = self.replication().clone();
        let changes = &*self.with_writer_conn(|conn| {
            repl.with_collections(conn, |colls| Ok(in_local_case(colls, changes)))
        })?;
        let mut skipped = 0;
        // Tables whose changes are refused (see `ApplyReport::refused`): all of them, for
        // those in `skipped_whole`, else some (stamped too far ahead).
        let mut refused: Vec<Refused> = Vec::new();
        let mut skipped_whole: Vec<String> = Vec::new();
        // Tables of skipped changes, and those of them synced but dropped here (by id).
        let mut skipped_tables = std::collections::BTreeSet::new();
        let mut dropped = std::collections::BTreeSet::new();
        let groups = self.with_writer_conn(|conn| {
            repl.with_collections(conn, |colls| {
                let mut order: Vec<Group<'_>> = Vec::new();
                let mut index: HashMap<(u32, Vec<u8>), usize> = HashMap::new();
                let context = |i: usize| {
                    let ch: &ChangeRecord = &changes[i];
                    let field = match &*ch.field {
                        "" => "its creation or deletion".to_owned(),
                        field => format!("field {:?}", shorten(field)),
                    };
                    format!(
                        "change {i} ({} row {}, {field})",
                        shorten(&ch.collection),
                        key_text(&ch.key),
                    )
                };
                // Collections with rows stamped too far ahead of this clock.
                let mut ahead: BTreeSet<String> = BTreeSet::new();
                let wall = pluresdb_crdt::wall_millis();
                let mut last: Option<usize> = None;
                for (i, ch) in changes.iter().enumerate() {
                    let coll = match validate(colls, ch).map_err(|e| e.context(context(i)))? {
                        Checked::Merge(coll) => coll,
                        Checked::LeftOut => {
                            skipped += 1;
                            skipped_tables.insert(&*ch.collection);
                            continue;
                        }
                        // (Under its name here: the peer's may differ in case.)
                        Checked::Refused(coll, reason) => {
                            if !skipped_whole.contains(&coll.name) {
                                refuse_whole(&mut refused, &mut skipped_whole, &coll.name, reason)?;
                            }
                            continue;
                        }
                    };
                    // A row's changes usually come one after another, sharing one key (as
                    // read and decoded): those join the previous change's row without packing
                    // the key again.
                    if let Some(prev) = last
                        && let Some(group) = order.get_mut(prev)
                        && Arc::ptr_eq(&group.coll, coll)
                        && Arc::ptr_eq(&group.key_values, &ch.key)
                    {
                        group.changes.push(ch);
                        continue;
                    }
                    let key = keys::pack_values(&ch.key);
                    let slot = *index.entry((coll.id, key.clone())).or_insert_with(|| {
                        order.push(Group {
                            coll: coll.clone(),
                            key,
                            key_values: ch.key.clone(),
                            changes: Vec::new(),
                        });
                        order.len() - 1
                    });
                    order[slot].changes.push(ch);
                    last = Some(slot);
                }
                dropped.extend(
                    skipped_tables
                        .iter()
                        .filter_map(|t| colls.by_name(t))
                        .map(|c| c.id),
                );
                // A row with a change stamped too far ahead is refused, not the batch: the
                // other rows of the peer go on merging while it waits for this clock. (Not
                // that change alone: the rest of its row would merge without it, a NOT NULL
                // column unset or a value nobody wrote.)
                order.retain(|group| {
                    let future = (group.changes.iter()).any(|c| {
                        pluresdb_crdt::check_drift_at(c.version.hlc, wall, MAX_CLOCK_DRIFT).is_err()
                    });
                    if future {
                        ahead.insert(group.coll.name.clone());
                    }
                    !future
                });
                for table in ahead {
                    if !skipped_whole.contains(&table) {
                        refused.push(Refused {
                            table,
                            reason: too_far_ahead(),
                        });
                    }
                }
                Ok(order)
            })
        })?;
        // A table whose rows this database cannot store (a constraint, a trigger refusing
        // them) has its changes refused; the merge starts over without them.
        // Nodes whose rows cannot be stored here (a vector of another size than the node
        // index's), by group: refused one by one.
        let mut skipped_nodes: Vec<usize> = Vec::new();
        loop {
            let mut refusing = None;
            let mut own = true;
            let merged = self.merge_groups(
                &repl,
                &groups,
                &mut refusing,
                &mut own,
                Merging {
                    received: changes.len() as u64,
                    skipped,
                    skipped_tables: &skipped_tables,
                    dropped: &dropped,
                    from,
                    point,
                    refused: &refused,
                    skipped_whole: &skipped_whole,
                    skipped_nodes: &skipped_nodes,
                },
            );
            match (merged, refusing) {
                (Ok(mut report), _) => {
                    refused.sort_unstable();
                    report.refused = refused;
                    return Ok(report);
                }
                // (Unless the refusal undid the caller's whole transaction, a trigger's
                // `RAISE(ROLLBACK)`: merging on would commit on its own.)
                (Err(e), Some(_))
                    if !own && self.with_writer_conn(|c| Ok(c.is_autocommit()))? =>
                {
                    return Err(e);
                }
                (Err(_), Some(Refusing::Table(table, reason))) => {
                    refuse_whole(&mut refused, &mut skipped_whole, &table, reason)?;
                }
                // (Past the limit, the nodes are refused whole: a peer that changed its
                // embedding model re-embeds them all.)
                (Err(_), Some(Refusing::Node(_, reason))) if skipped_nodes.len() >= MAX_REFUSED => {
                    refuse_whole(&mut refused, &mut skipped_whole, super::NODES, reason)?;
                }
                (Err(_), Some(Refusing::Node(i, reason))) => {
                    skipped_nodes.push(i);
                    match refused.iter_mut().find(|r| r.table == super::NODES) {
                        Some(nodes) => nodes.reason = format!("{}; {reason}", nodes.reason),
                        None => refused.push(Refused {
                            table: super::NODES.to_owned(),
                            reason,
                        }),
                    }
                }
                (Err(e), None) => return Err(e),
            }
        }
    }

    /// Merges `groups` but the refused ones (see [`Merging`]) in one transaction (`own`: its
    /// own, not a caller's). A row that fails to be written and may be refused says so in
    /// `refusing`.
    fn merge_groups(
        &self,
        repl: &Arc<Replication>,
        groups: &[Group<'_>],
        refusing: &mut Option<Refusing>,
        own: &mut bool,
        m: Merging<'_>,
    ) -> Result<ApplyReport> {
        let Merging {
            received,
            skipped,
            skipped_tables,
            dropped,
            from,
            point,
            refused,
            skipped_whole,
            skipped_nodes,
        } = m;
        let mut report = ApplyReport {
            received,
            skipped,
            ..ApplyReport::default()
        };
        self.merge_transaction(|db, own_transaction| {
            *own = own_transaction;
            db.with_writer_conn(|conn| {
                // Merging reads clock records: this database's own logged changes first.
                repl.settle_clock(conn)?;
                let trigger_writes = repl.trigger_writes.load(Ordering::Relaxed);
                repl.suppress.store(true, Ordering::Release);
                let _suppress = Suppress(repl);
                let _checks = ChecksOff::new(conn)?;
                let mut batch = Batch {
                    repl,
                    seq: None,
                    sql: TableSql::default(),
                    sites: Vec::new(),
                    missed: skipped_tables
                        .iter()
                        .map(|t| (t.to_string(), String::new()))
                        .collect(),
                    read_clock: conn.prepare_cached(
                        "SELECT cl, ver FROM _pluresdb_clock WHERE tbl = ?1 AND key = ?2",
                    )?,
                    write_clock: conn.prepare_cached(
                        "INSERT INTO _pluresdb_clock(tbl, key, cl, seq, ver) VALUES (?1, ?2, ?3, ?4, ?5)
                         ON CONFLICT(tbl, key) DO UPDATE SET cl = excluded.cl, seq = excluded.seq, ver = excluded.ver",
                    )?,
                };
                // A dropped table's sync records describe rows it no longer has: were they kept,
                // a table made again under that name would never receive those rows.
                for &id in dropped {
                    conn.prepare_cached("DELETE FROM _pluresdb_clock WHERE tbl = ?1")?
                        .execute([i64::from(id)])?;
                    packs::drop_all(conn, id)?;
                }
                records_of_packed_rows(conn, groups)?;
                // The newest clock of what is not refused (observed once the merge is in).
                let mut newest: Option<Hlc> = None;
                for (i, group) in groups.iter().enumerate() {
                    if skipped_whole.contains(&group.coll.name) || skipped_nodes.contains(&i) {
                        continue;
                    }
                    let group_newest = group.changes.iter().map(|c| c.version.hlc).max();
                    newest = newest.max(group_newest);
                    merge_row(db, conn, &mut batch, group, &mut report).inspect_err(|e| {
                        *refusing = Refusing::of(i, group, e);
                    })?;
                }
                report.trigger_writes =
                    repl.trigger_writes.load(Ordering::Relaxed) - trigger_writes;
                if !batch.missed.is_empty() {
                    repl.with_collections(conn, |colls| {
                        missed::remember(conn, &batch.missed, colls)
                    })?;
                    // (A set: sorted, each once.)
                    report.left_out = refetch::from_missed(&batch.missed)
                        .take(MAX_LEFT_OUT_NAMED)
                        .collect();
                }
                // Only what was stored must come before this site's next writes.
                if let Some(hlc) = newest.filter(|_| batch.seq.is_some()) {
                    repl.clock.observe(hlc);
                }
                if let Some(peer) = from
                    && own_transaction
                    && let Some(seq) = batch.seq
                {
                    received::record(conn, seq, repl.site_index(conn, peer)?)?;
                    report.noted = Some(seq);
                }
                if let Some(peer) = from {
                    refusals::remember(conn, peer, refused)?;
                }
                // (Not past refused changes: the peer sends them again from its cursor.)
                if let (Some(peer), Some((point, resets)), true) = (from, point, refused.is_empty()) {
                    resume::record(conn, peer, resets, point)?;
                }
                // A merge that changed nothing takes no `db_version` (applying a batch again
                // leaves the database as it was).
                if batch.seq.is_some() {
                    repl.persist_clock(conn)?;
                }
                Ok(())
            })
        })?;
        Ok(report)
    }
}

/// `text`, cut to its first 200 characters (with `...` when cut): a peer's key or name in an
/// error stays readable, and the error fits in a sync message however long they are.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(200) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_owned(),
    }
}

/// Where a change's table and field names are (shared by the changes of a batch).
type Names = (*const u8, *const u8);

/// `changes` with the columns of this database's tables named as they are here: SQLite takes
/// names in any case, so a peer whose table says `PRIO` writes this one's `prio` (tables are
/// looked up in any case already; a node's fields are JSON keys, which keep their case).
fn in_local_case<'c>(
    colls: &super::collections::Collections,
    changes: &'c [ChangeRecord],
) -> std::borrow::Cow<'c, [ChangeRecord]> {
    let local = |ch: &ChangeRecord| -> Option<Arc<str>> {
        let Kind::Table(info) = &colls.by_name(&ch.collection)?.kind else {
            return None;
        };
        // (A table has no two columns whose names differ only in case.)
        let field = info
            .fields
            .iter()
            .find(|f| f.eq_ignore_ascii_case(&ch.field))?;
        (*field != *ch.field).then(|| field.as_str().into())
    };
    // Changes share their names (see `ChangeRecord`): each pair is looked at once.
    let mut seen: Vec<(Names, Option<Arc<str>>)> = Vec::new();
    let mut renamed: Option<Vec<ChangeRecord>> = None;
    for (i, ch) in changes.iter().enumerate() {
        let names = (ch.collection.as_ptr(), ch.field.as_ptr());
        let field = match seen.iter().find(|(n, _)| *n == names) {
            Some((_, field)) => field.clone(),
            None => {
                let field = local(ch);
                if seen.len() < 64 {
                    seen.push((names, field.clone()));
                }
                field
            }
        };
        if let Some(field) = field {
            renamed.get_or_insert_with(|| changes.to_vec())[i].field = field;
        }
    }
    renamed.map_or(std::borrow::Cow::Borrowed(changes), std::borrow::Cow::Owned)
}

/// What [`validate`] makes of a change.
enum Checked<'a> {
    /// To merge into this collection.
    Merge(&'a Arc<Collection>),
    /// Of a table this database does not sync (or no longer has): left out.
    LeftOut,
    /// Of this table, whose key differs here: its changes are refused (see
    /// [`ApplyReport::refused`]), for this reason.
    Refused(&'a Arc<Collection>, String),
}

/// Checks one change (all but its clock, which [`Database::apply_changes`] compares with this
/// machine's).
fn validate<'a>(
    colls: &'a super::collections::Collections,
    ch: &ChangeRecord,
) -> Result<Checked<'a>> {
    let Some(coll) = colls.by_name(&ch.collection) else {
        if ch.collection.len() > MAX_FIELD_BYTES {
            return Err(Error::invalid("table name too long"));
        }
        return Ok(Checked::LeftOut);
    };
    if ch.cl == 0 {
        return Err(Error::invalid("causal length 0 is not valid"));
    }
    // No clock gives 0, which sync records keep for a creation not seen yet: a row made by such
    // a change would never be passed on.
    if ch.version.hlc == Hlc::ZERO {
        return Err(Error::invalid(
            "clock time 0 is not valid (no clock gives it): the sending peer's data is damaged",
        ));
    }
    if ch.cl > MAX_CAUSAL_LENGTH {
        return Err(Error::invalid(format!(
            "causal length {} is over the limit of 2^62 (it counts a row's deletes and \
             re-inserts, so no real history reaches it): the sending peer's data is damaged",
            ch.cl
        )));
    }
    if !ch.field.is_empty() && !is_alive(ch.cl) {
        return Err(Error::invalid(
            "a field change must carry an odd causal length",
        ));
    }
    if ch.field.len() > MAX_FIELD_BYTES {
        return Err(Error::invalid("field name too long"));
    }
    // A longer key part could be stored but not read back: every later sync would fail.
    let key_parts = ch
        .key
        .iter()
        .map(|v| (v, keys::MAX_KEY_BYTES, "a key part"));
    let values = ch.value.iter().map(|v| (v, MAX_VALUE_BYTES, "a value"));
    for (v, max, what) in key_parts.chain(values) {
        if matches!(v, Value::Real(r) if r.is_nan()) {
            return Err(Error::invalid(format!(
                "{what} is NaN, which SQLite does not store (it would be NULL)"
            )));
        }
        let size = match v {
            Value::Text(t) => t.len(),
            Value::Blob(b) => b.len(),
            _ => 0,
        };
        if size > max {
            return Err(Error::invalid(format!(
                "{what} of {size} bytes is over the limit of {max} (64 KiB for keys)"
            )));
        }
    }
    let text_key = |n: usize| -> Result<()> {
        if ch.key.len() != n || ch.key.iter().any(|k| !matches!(k, Value::Text(_))) {
            return Err(Error::invalid(format!("the key must be {n} text value(s)")));
        }
        ch.key
            .iter()
            .try_for_each(|k| check_id("key", k.as_str().unwrap_or_default()))
    };
    match &coll.kind {
        Kind::Nodes => {
            text_key(1)?;
            match (&*ch.field, &ch.value) {
                (SENTINEL, _) => {}
                ("type", Some(Value::Null)) => {}
                // What `set_type` accepts.
                ("type", Some(Value::Text(t))) => check_id("node type", t)?,
                ("vector", Some(Value::Null)) => {}
                ("vector", Some(Value::Blob(b))) => {
                    // (The peer's fault, not a corrupt file here, as reading it would say.)
                    if !b.len().is_multiple_of(4) {
                        return Err(Error::invalid(format!(
                            "a vector must be 4-byte floats, and this one has {} bytes",
                            b.len()
                        )));
                    }
                    let v = blob_to_vector(b)?;
                    if v.is_empty() {
                        return Err(Error::invalid("a vector must have at least one component"));
                    }
                    if v.iter().any(|x| !x.is_finite()) {
                        return Err(Error::invalid("vector components must be finite"));
                    }
                }
                (f, None) if f.starts_with("data.") => {}
                (f, Some(Value::Text(json))) if f.starts_with("data.") => {
                    let value = strict_json::parse(json).map_err(|e| {
                        Error::invalid(format!("node field value is not JSON: {e}"))
                    })?;
                    // As deep as a local write may make the node's data, which holds it: a
                    // deeper node could be stored but never read back.
                    check_depth("node field value", &value, MAX_JSON_DEPTH - 1)?;
                }
                (f, _) => {
                    return Err(Error::invalid(format!(
                        "node field {f:?} with this value is not valid"
                    )));
                }
            }
        }
        Kind::Edges => {
            text_key(3)?;
            match (&*ch.field, &ch.value) {
                (SENTINEL, _) => {}
                ("data", Some(Value::Text(json))) => {
                    // Stored as sent: a key named twice would read one value in SQL and
                    // another through the API.
                    let data = strict_json::parse(json)
                        .map_err(|e| Error::invalid(format!("edge data is not JSON: {e}")))?;
                    if !data.is_object() {
                        return Err(Error::invalid("edge data must be a JSON object"));
                    }
                    check_depth("edge data", &data, MAX_JSON_DEPTH)?;
                }
                (f, _) => {
                    return Err(Error::invalid(format!(
                        "edge field {f:?} with this value is not valid"
                    )));
                }
            }
        }
        Kind::Table(info) => {
            if !info.exists {
                return Ok(Checked::LeftOut);
            }
            if ch.key.iter().any(Value::is_null) {
                return Err(Error::invalid(format!(
                    "the key must be {} non-NULL value(s) ({})",
                    info.pk.len(),
                    info.pk.join(", ")
                )));
            }
            if !ch.field.is_empty() && ch.value.is_none() {
                return Err(Error::invalid("a column change needs a value"));
            }
            if let Some(why) = key_differs(info, ch) {
                return Ok(Checked::Refused(coll, why));
            }
        }
    }
    Ok(Checked::Merge(coll))
}

/// Why the peer's table of `ch` cannot merge into this one, whose key differs (other
/// columns, or other types): its rows would land on other keys here.
fn key_differs(info: &TableInfo, ch: &ChangeRecord) -> Option<String> {
    if ch.key.len() != info.pk.len() {
        let columns = |n: usize| {
            if n == 1 {
                "1 column".to_owned()
            } else {
                format!("{n} columns")
            }
        };
        return Some(format!(
            "the peer keys table {:?} by {}, and this database by {} ({}); give the \
             table the same primary key on every device",
            ch.collection,
            columns(ch.key.len()),
            columns(info.pk.len()),
            info.pk.join(", ")
        ));
    }
    // A key stored converted would write another row than the one whose sync record
    // the merge keeps (a peer whose key column has another type sent it); a rowid
    // takes no text or blob at all.
    let converted = info.pk.iter().zip(&info.pk_types).zip(ch.key.iter());
    for ((column, declared), key) in converted {
        let not_rowid = info.rowid_key && !matches!(key, Value::Integer(_));
        if not_rowid || !affinity::stored_as_is(declared, key) {
            return Some(format!(
                "column {column} ({declared}) here would not store the key {} as it \
                 is: the peer's table {:?} declares its key differently; give the \
                 table the same primary key, of the same types, on every device",
                key.to_json(),
                ch.collection
            ));
        }
    }
    // Keyed by other columns there, the peer's rows would land on wrong keys here.
    if !ch.field.is_empty() && info.pk.iter().any(|k| k.eq_ignore_ascii_case(&ch.field)) {
        return Some(format!(
            "column {} is part of the primary key of table {:?} here ({}), and the \
             peer sends it as an ordinary column: its table is keyed by other columns; \
             give the table the same primary key on every device",
            ch.field,
            ch.collection,
            info.pk.join(", ")
        ));
    }
    None
}

/// The row's state while its changes are merged.
struct Merge<'c> {
    cl: u64,
    clock: RowClock,
    reset: bool,
    /// Winning field writes, latest per field.
    applied: Vec<(&'c str, Option<&'c Value>)>,
    changed: bool,
    /// Creation time, last change time and its site, from the merged clock (so every replica
    /// shows the same).
    times: Option<(u64, u64, pluresdb_crdt::SiteId)>,
}

/// A stamp whose version is known (`hlc` 0 marks an unknown creation version).
fn known(stamp: Stamp) -> Option<Stamp> {
    (stamp.hlc != 0).then_some(stamp)
}

/// Creation time, last change time and the site of the last change of a row.
fn row_times(
    repl: &Replication,
    conn: &Connection,
    clock: &RowClock,
) -> Result<(u64, u64, pluresdb_crdt::SiteId)> {
    let newest = std::iter::once(clock.sentinel)
        .chain(clock.fields_base)
        .chain(clock.fields.iter().map(|(_, s)| *s))
        .filter(|s| s.hlc != 0)
        .max_by_key(|s| s.hlc)
        .unwrap_or_default();
    let site = if newest.hlc == 0 {
        SiteId::default()
    } else {
        repl.site_of(conn, newest.site)?
    };
    let created = if clock.sentinel.hlc != 0 {
        clock.sentinel.hlc
    } else {
        newest.hlc
    };
    Ok((created, newest.hlc, site))
}

/// What the merge of one batch keeps between rows, its statements among them (taken from the
/// connection's cache once per batch, not once per row).
struct Batch<'r, 'c> {
    repl: &'r Replication,
    /// This transaction's `db_version`, once a row changed (see [`Batch::seq`]).
    seq: Option<u64>,
    sql: TableSql<'c>,
    /// Sites and their indexes seen in this batch (a handful: a short list beats a map).
    sites: Vec<(SiteId, u32)>,
    read_clock: CachedStatement<'c>,
    write_clock: CachedStatement<'c>,
    /// Tables and columns this batch left changes out for.
    missed: Missed,
}

impl Batch<'_, '_> {
    /// This transaction's `db_version`, taken when the first row changes.
    fn seq(&mut self, conn: &Connection) -> Result<u64> {
        if let Some(seq) = self.seq {
            return Ok(seq);
        }
        let seq = self.repl.tx_seq(conn)?;
        self.seq = Some(seq);
        Ok(seq)
    }

    fn site_index(&mut self, conn: &Connection, site: SiteId) -> Result<u32> {
        if let Some((_, idx)) = self.sites.iter().find(|(s, _)| *s == site) {
            return Ok(*idx);
        }
        let idx = self.repl.site_index(conn, site)?;
        self.sites.push((site, idx));
        Ok(idx)
    }

    fn version_of(&mut self, conn: &Connection, stamp: Stamp) -> Result<Version> {
        let site = match self.sites.iter().find(|(_, i)| *i == stamp.site) {
            Some((site, _)) => *site,
            None => {
                let site = self.repl.site_of(conn, stamp.site)?;
                self.sites.push((site, stamp.site));
                site
            }
        };
        Ok(Version::new(Hlc::from_u64(stamp.hlc), site))
    }
}

/// Gives the rows of `groups` whose clocks are packed records of them (merging reads and
/// writes records).
fn records_of_packed_rows(conn: &Connection, groups: &[Group<'_>]) -> Result<()> {
    let mut tables: BTreeMap<u32, Vec<&[u8]>> = BTreeMap::new();
    for group in groups {
        if matches!(group.coll.kind, Kind::Table(_)) {
            tables.entry(group.coll.id).or_default().push(&group.key);
        }
    }
    for (id, keys) in tables {
        if packs::any(conn, id)? {
            packs::materialize(conn, id, keys)?;
        }
    }
    Ok(())
}

fn merge_row<'c>(
    db: &Database,
    conn: &'c Connection,
    batch: &mut Batch<'_, 'c>,
    group: &Group<'_>,
    report: &mut ApplyReport,
) -> Result<()> {
    let repl = batch.repl;
    // Stamps are stored under the transaction's `db_version`, taken only once the row changes.
    let seq = PENDING_SEQ;
    let local: Option<(i64, Vec<u8>)> = match group.coll.kind {
        Kind::Edges => edge_clock::read(conn, &group.key_values)?,
        _ => batch
            .read_clock
            .query_row(
                rusqlite::params![i64::from(group.coll.id), group.key],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?,
    };
    let (cl_before, clock) = match local {
        Some((cl, ver)) => (cl as u64, RowClock::decode(&ver)?),
        None => (0, RowClock::reset(Stamp::default())),
    };
    let mut m = Merge {
        cl: cl_before,
        clock,
        reset: false,
        applied: Vec::new(),
        changed: false,
        times: None,
    };
    for ch in &group.changes {
        let stamp = Stamp {
            hlc: ch.version.hlc.as_u64(),
            site: batch.site_index(conn, ch.version.site)?,
            seq,
        };
        let won = if ch.field.is_empty() {
            let local = known(m.clock.sentinel)
                .map(|s| batch.version_of(conn, s))
                .transpose()?;
            match decide_sentinel(m.cl, local, ch.cl, ch.version) {
                RowDecision::Ignore => false,
                RowDecision::Reset { cl } => {
                    m.cl = cl;
                    m.clock = RowClock::reset(stamp);
                    m.reset = true;
                    m.applied.clear();
                    true
                }
                RowDecision::Touch => {
                    m.clock.sentinel = stamp;
                    true
                }
            }
        } else {
            // A column this replica lacks: its value and version are left out, not kept as if
            // stored (see `missed`).
            // (A field named like a key column here was refused: see `validate`.)
            let (lacking, local) = match &group.coll.kind {
                Kind::Table(info) => match info.fields.iter().position(|c| *c == *ch.field) {
                    Some(i) => (false, m.clock.column(&ch.field, info.added_at(i))),
                    // No base version covers a column this replica does not have.
                    None => (true, m.clock.column(&ch.field, u64::MAX)),
                },
                _ => (false, m.clock.field(&ch.field)),
            };
            let local = local.map(|s| batch.version_of(conn, s)).transpose()?;
            let decision = decide_field(m.cl, local, ch.cl, ch.version);
            // (A set of a few entries: looked through before copying the names for it.)
            if lacking
                && !matches!(decision, FieldDecision::Ignore)
                && !batch
                    .missed
                    .iter()
                    .any(|(t, f)| *t == *group.coll.name && *f == *ch.field)
            {
                batch
                    .missed
                    .insert((group.coll.name.to_string(), ch.field.to_string()));
            }
            match decision {
                FieldDecision::Ignore => false,
                FieldDecision::Apply if lacking => {
                    report.skipped += 1;
                    continue;
                }
                FieldDecision::Apply => {
                    m.clock.set_field(&ch.field, stamp);
                    m.applied.retain(|(f, _)| *f != &*ch.field);
                    m.applied.push((&ch.field, ch.value.as_ref()));
                    true
                }
                FieldDecision::ResetAndApply { cl } => {
                    // A field of a life whose creation was not seen yet: the creation's version
                    // stays unknown until its sentinel arrives.
                    m.cl = cl;
                    m.clock = RowClock::reset(Stamp {
                        hlc: 0,
                        site: 0,
                        seq,
                    });
                    m.reset = true;
                    m.applied.clear();
                    if !lacking {
                        m.clock.set_field(&ch.field, stamp);
                        m.applied.push((&ch.field, ch.value.as_ref()));
                    }
                    true
                }
            }
        };
        if won {
            report.applied += 1;
            m.changed = true;
        } else {
            report.ignored += 1;
        }
    }
    if !m.changed {
        return Ok(());
    }
    report.rows += 1;
    let seq = batch.seq(conn)?;
    m.clock.replace_seq(PENDING_SEQ, seq);
    debug_assert!(m.clock.newest_seq() != PENDING_SEQ);
    m.times = Some(row_times(repl, conn, &m.clock)?);
    let alive_before = is_alive(cl_before);
    match &group.coll.kind {
        Kind::Table(info) => write_table_row(
            conn,
            &mut batch.sql,
            &group.coll,
            info,
            &group.key_values,
            alive_before,
            &m,
        )?,
        Kind::Nodes => write_node(db, conn, group, alive_before, &m).map_err(|e| {
            let id = group.key_values.first().and_then(Value::as_str);
            e.context(format!(
                "merging node {:?} from a peer",
                id.unwrap_or_default()
            ))
        })?,
        // An edge's row holds its clock too.
        Kind::Edges => write_edge(db, conn, group, alive_before, &m, seq)?,
    }
    if !matches!(group.coll.kind, Kind::Edges) {
        batch.write_clock.execute(rusqlite::params![
            i64::from(group.coll.id),
            group.key,
            m.cl as i64,
            seq as i64,
            m.clock.encode()
        ])?;
    }
    repl.recent.lock().record(seq, group.coll.id, &group.key);
    Ok(())
}

fn bind_all<'v>(
    stmt: &mut rusqlite::CachedStatement<'_>,
    values: impl Iterator<Item = &'v Value>,
) -> Result<()> {
    for (i, v) in values.enumerate() {
        stmt.raw_bind_parameter(i + 1, v.as_param())?;
    }
    Ok(())
}

/// Statements of table writes, by collection, kind and the list of columns written: prepared
/// once per batch instead of once per row. Found by the list's hash, so a lookup copies
/// nothing.
#[derive(Default)]
struct TableSql<'c>(HashMap<(u32, u8, u64), Vec<ColumnsStatement<'c>>>);

/// A list of columns written, and the statement that writes them.
type ColumnsStatement<'c> = (Vec<u16>, CachedStatement<'c>);

impl<'c> TableSql<'c> {
    /// The statement for these columns, prepared from `build`'s SQL the first time.
    fn get(
        &mut self,
        conn: &'c Connection,
        (coll, kind, columns): (u32, u8, &[u16]),
        build: impl FnOnce() -> String,
    ) -> Result<&mut CachedStatement<'c>> {
        let hash = self.0.hasher().hash_one(columns);
        let stmts = self.0.entry((coll, kind, hash)).or_default();
        let i = match stmts.iter().position(|(c, _)| c == columns) {
            Some(i) => i,
            None => {
                stmts.push((columns.to_vec(), conn.prepare_cached(&build())?));
                stmts.len() - 1
            }
        };
        Ok(&mut stmts[i].1)
    }
}

const DELETE: u8 = 0;
const UPSERT: u8 = 1;
const UPDATE: u8 = 2;

#[allow(clippy::too_many_arguments)]
fn write_table_row<'c>(
    conn: &'c Connection,
    sql_cache: &mut TableSql<'c>,
    coll: &Collection,
    info: &TableInfo,
    key: &[Value],
    alive_before: bool,
    m: &Merge<'_>,
) -> Result<()> {
    let table = &coll.name;
    let key_match = || info.key_match();
    if !is_alive(m.cl) {
        if alive_before {
            let stmt = sql_cache.get(conn, (coll.id, DELETE, &[]), || {
                format!("DELETE FROM {} WHERE {}", quote(table), key_match())
            })?;
            bind_all(stmt, key.iter())?;
            // (A row still there was kept by a trigger: see `skipped_by_trigger`.)
            if stmt.raw_execute()? == 0 && row_exists(conn, table, info, key)? {
                return Err(skipped_by_trigger(table, key));
            }
        }
        return Ok(());
    }
    // Columns this replica does not have (a newer peer's schema) are left out.
    let mut columns: Vec<u16> = Vec::with_capacity(m.applied.len());
    let mut values: Vec<&Value> = Vec::with_capacity(m.applied.len());
    for (f, v) in &m.applied {
        if let (Some(i), Some(v)) = (info.fields.iter().position(|c| c == f), v) {
            columns.push(i as u16);
            values.push(v);
        }
    }
    let names = |columns: &[u16]| -> Vec<String> {
        columns
            .iter()
            .map(|&i| quote(&info.fields[usize::from(i)]))
            .collect()
    };
    let n = info.pk.len();
    let upsert = !alive_before || m.reset;
    let stmt = if upsert {
        sql_cache.get(conn, (coll.id, UPSERT, &columns), || {
            let fields = names(&columns);
            let pk: Vec<String> = info.pk.iter().map(|c| quote(c)).collect();
            let cols: Vec<&String> = pk.iter().chain(&fields).collect();
            let marks: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();
            // A new life replaces a row this replica still has from an older one: the columns
            // it does not carry (a peer's older schema) take what an insert gives them, their
            // DEFAULT as SQLite reads it (`excluded` holds it: a DEFAULT's text is no
            // expression to copy, `DEFAULT pending` and `DEFAULT "a"` are strings).
            let sets: Vec<String> = info
                .fields
                .iter()
                .map(|f| {
                    let q = quote(f);
                    format!("{q} = excluded.{q}")
                })
                .collect();
            let on_conflict = if sets.is_empty() {
                "DO NOTHING".to_owned()
            } else {
                format!("DO UPDATE SET {}", sets.join(", "))
            };
            format!(
                "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) {on_conflict}",
                quote(table),
                cols.iter()
                    .map(|c| c.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                marks.join(", "),
                pk.join(", ")
            )
        })
    } else if !columns.is_empty() {
        sql_cache.get(conn, (coll.id, UPDATE, &columns), || {
            let sets: Vec<String> = names(&columns)
                .iter()
                .enumerate()
                .map(|(i, q)| format!("{q} = ?{}", n + i + 1))
                .collect();
            format!(
                "UPDATE {} SET {} WHERE {}",
                quote(table),
                sets.join(", "),
                key_match()
            )
        })
    } else {
        return Ok(());
    }?;
    bind_all(stmt, key.iter().chain(values))?;
    let written = stmt.raw_execute().map_err(|e| {
        let written = |c: &str| {
            info.pk.iter().any(|p| p == c)
                || columns.iter().any(|&i| info.fields[usize::from(i)] == c)
        };
        row_write_error(e.into(), table, key, written)
    })?;
    // A row not written was skipped by a trigger's RAISE(IGNORE) (or a column's ON CONFLICT
    // IGNORE). Its sync record would say it merged: refused instead, so it comes again. (Not
    // an upsert of key columns only whose row is there, nor an update of a row another
    // program deleted: `check` reports those.)
    if written == 0 {
        let skipped = match (upsert, info.fields.is_empty()) {
            (true, false) => true,
            (true, true) => !row_exists(conn, table, info, key)?,
            (false, _) => row_exists(conn, table, info, key)?,
        };
        if skipped {
            return Err(skipped_by_trigger(table, key));
        }
    }
    Ok(())
}

/// The error of a merged write of row `key` of `table` that SQLite skipped.
fn skipped_by_trigger(table: &str, key: &[Value]) -> Error {
    Error::new(
        ErrorKind::Constraint,
        format!(
            "row {} of {table} was not written: a trigger on the table skipped it \
             (RAISE(IGNORE)), or a column's ON CONFLICT IGNORE clause did; drop or change it",
            key_text(key)
        ),
    )
}

/// Whether `table` has the row `key`.
fn row_exists(conn: &Connection, table: &str, info: &TableInfo, key: &[Value]) -> Result<bool> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT EXISTS (SELECT 1 FROM {} WHERE {})",
        quote(table),
        info.key_match()
    ))?;
    bind_all(&mut stmt, key.iter())?;
    Ok(stmt
        .raw_query()
        .next()?
        .is_some_and(|r| r.get(0).unwrap_or(false)))
}

/// The error of a failed write of a row of `table`. When the row was written without a value
/// for a NOT NULL column (`written` tells the columns it had), the error says so and how to
/// fix it, instead of SQLite's bare "NOT NULL constraint failed".
fn row_write_error(
    err: Error,
    table: &str,
    key: &[Value],
    written: impl Fn(&str) -> bool,
) -> Error {
    let left_out = err
        .message()
        .strip_prefix("NOT NULL constraint failed: ")
        .and_then(|c| c.rsplit_once('.'))
        .map(|(_, column)| column)
        .filter(|column| !written(column));
    let key = key_text(key);
    let Some(column) = left_out else {
        return err.context(format!("writing row {key} of {table}"));
    };
    Error::new(
        ErrorKind::Constraint,
        format!(
            "row {key} of {table} cannot be inserted: the changes merged have no value for its \
             column {column:?}, which is NOT NULL without a DEFAULT here. Merge all the changes \
             of a row in one call (sync sessions and change files do), or, if the peer's table \
             has no such column, rebuild this table with a DEFAULT for it (ALTER TABLE cannot \
             add one: stop syncing it, rebuild it, sync it again; a column added on the peer \
             sends values only for rows written there after)"
        ),
    )
}

/// A row's key as errors show it: its values as JSON (`["r1"]`, `[1, "a"]`), cut when long.
fn key_text(key: &[Value]) -> String {
    let values: Vec<_> = key.iter().map(Value::to_json).collect();
    shorten(&serde_json::Value::Array(values).to_string())
}

fn write_node(
    db: &Database,
    conn: &Connection,
    group: &Group<'_>,
    alive_before: bool,
    m: &Merge,
) -> Result<()> {
    let id = group.key_values[0].as_str().unwrap_or_default().to_owned();
    let (created, hlc, site) = m.times.unwrap_or((0, 0, db.site_id()));
    let existing: Option<(String, Option<String>, Option<Vec<u8>>)> = conn
        .prepare_cached("SELECT data, type, vector FROM _pluresdb_nodes WHERE id = ?1")?
        .query_row([&id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let keep = alive_before && !m.reset;
    let (mut data, mut node_type, mut vector) = match (&existing, keep) {
        (Some((d, t, v)), true) => (crate::graph::parse_object(d)?, t.clone(), v.clone()),
        _ => (Map::new(), None, None),
    };
    if is_alive(m.cl) {
        for (field, value) in &m.applied {
            match (*field, value) {
                ("type", v) => node_type = v.and_then(|v| v.as_str()).map(str::to_owned),
                ("vector", v) => vector = v.and_then(|v| v.as_blob()).map(<[u8]>::to_vec),
                (f, Some(Value::Text(json))) => {
                    data.insert(f["data.".len()..].to_owned(), serde_json::from_str(json)?);
                }
                (f, _) => {
                    data.remove(&f["data.".len()..]);
                }
            }
        }
    } else {
        data.clear();
        node_type = None;
        vector = None;
    }
    data.sort_keys();
    let text = stored_text(&data);
    conn.prepare_cached(UPSERT_NODE)?
        .execute(rusqlite::params![
            id,
            node_type,
            text,
            vector,
            created as i64,
            hlc as i64,
            site.as_bytes().as_slice(),
            m.cl as i64
        ])?;
    append_history(
        conn,
        &id,
        hlc,
        site,
        m.cl,
        node_type.as_deref(),
        &text,
        vector.as_deref(),
    )?;
    let hub = &db.engine().hub;
    if hub.is_active() {
        // Its edges hide or show with it.
        let edges = if alive_before == is_alive(m.cl) {
            Vec::new()
        } else {
            crate::graph::edge_events::edges_shown_or_hidden(conn, &id, is_alive(m.cl))?
        };
        if !is_alive(m.cl) {
            edges.iter().cloned().for_each(|e| hub.record(e));
        }
        let node = is_alive(m.cl)
            .then(|| -> Result<Node> {
                Ok(Node {
                    id: id.clone(),
                    node_type: node_type.clone(),
                    data,
                    vector: vector.as_deref().map(blob_to_vector).transpose()?,
                    created_at: pluresdb_crdt::Hlc::from_u64(created),
                    updated_at: pluresdb_crdt::Hlc::from_u64(hlc),
                    site,
                })
            })
            .transpose()?;
        let lives = node.is_some();
        hub.record(Change::Node(NodeChange { id, node }));
        if lives {
            edges.into_iter().for_each(|e| hub.record(e));
        }
    }
    Ok(())
}

fn write_edge(
    db: &Database,
    conn: &Connection,
    group: &Group<'_>,
    alive_before: bool,
    m: &Merge,
    seq: u64,
) -> Result<()> {
    let part = |i: usize| group.key_values[i].as_str().unwrap_or_default().to_owned();
    let (from, relation, to) = (part(0), part(1), part(2));
    let (created, hlc, site) = m.times.unwrap_or((0, 0, db.site_id()));
    // Ends this replica has no node for yet get placeholder rows (see `schema.rs`).
    let src = ends::node_row_or_placeholder(conn, &from)?;
    let rel = ends::relation_or_insert(conn, &relation)?;
    let dst = ends::node_row_or_placeholder(conn, &to)?;
    let existing: Option<String> = conn
        .prepare_cached(
            "SELECT data FROM _pluresdb_edges WHERE src = ?1 AND rel = ?2 AND dst = ?3",
        )?
        .query_row([src, rel, dst], |r| r.get(0))
        .optional()?;
    let keep = alive_before && !m.reset;
    let mut data = match (&existing, keep) {
        (Some(d), true) => d.clone(),
        _ => "{}".to_owned(),
    };
    if is_alive(m.cl) {
        if let Some((_, Some(Value::Text(json)))) = m.applied.iter().find(|(f, _)| *f == "data") {
            data = json.clone();
        }
    } else {
        data = "{}".to_owned();
    }
    conn.prepare_cached(
        "INSERT INTO _pluresdb_edges
             (src, rel, dst, data, created_hlc, updated_hlc, site, cl, seq, ver)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT(src, rel, dst) DO UPDATE SET data = excluded.data,
             created_hlc = excluded.created_hlc, updated_hlc = excluded.updated_hlc,
             site = excluded.site, cl = excluded.cl, seq = excluded.seq, ver = excluded.ver",
    )?
    .execute(rusqlite::params![
        src,
        rel,
        dst,
        data,
        created as i64,
        hlc as i64,
        site.as_bytes().as_slice(),
        m.cl as i64,
        seq as i64,
        m.clock.encode()
    ])?;
    let hub = &db.engine().hub;
    // Subscribers see the edge as reads do: only between live nodes (an edge at a node that
    // is not live showed neither before nor after).
    if hub.is_active()
        && conn
            .prepare_cached(
                "SELECT coalesce((SELECT cl FROM _pluresdb_nodes WHERE rid = ?1) % 2 = 1
                    AND (SELECT cl FROM _pluresdb_nodes WHERE rid = ?2) % 2 = 1, 0)",
            )?
            .query_row([src, dst], |r| r.get::<_, bool>(0))?
    {
        let edge = is_alive(m.cl)
            .then(|| -> Result<Edge> {
                Ok(Edge {
                    from: from.clone(),
                    relation: relation.clone(),
                    to: to.clone(),
                    data: crate::graph::parse_object(&data)?,
                    created_at: pluresdb_crdt::Hlc::from_u64(created),
                    updated_at: pluresdb_crdt::Hlc::from_u64(hlc),
                })
            })
            .transpose()?;
        hub.record(Change::Edge(EdgeChange {
            from,
            relation,
            to,
            edge,
        }));
    }
    Ok(())
}
