//! `update_nodes` and `put_many`: many node writes in one transaction. Writes that create
//! nodes are inserted, versioned and recorded in history a chunk of nodes per statement; the
//! others (nodes that exist, repeated ids) go one by one, in input order.

use std::collections::HashSet;

use serde_json::{Map, Value as Json};

use pluresdb_crdt::Hlc;

use super::nodes::{CheckedUpdate, NodeUpdate, check_update, created_fields};
use super::{Node, stored_text};
use crate::bulk_cache::BulkCache;
use crate::database::Database;
use crate::error::Result;
use crate::events::{Change, NodeChange};
use crate::replication::pack_key_refs;
use crate::value::ValueRef;

/// Nodes per multi-row INSERT.
const CHUNK: usize = 128;

/// A write that may create its node: its place in the input, and what the node would store.
struct Fresh<'a> {
    at: usize,
    id: &'a str,
    node_type: Option<&'a str>,
    data: Option<&'a Map<String, Json>>,
    /// `data` as stored: keys sorted (so replicas hold the same text however they merged).
    text: String,
    vector: Option<&'a [u8]>,
}

/// The statement that inserts `rows` nodes, or (`history`) their first versions: `?1` is the
/// time of the write, `?2` the site, then four per node: id, type, data and vector. Nodes that
/// exist already are left as they are (`OR IGNORE`: a statement that cannot abort needs no
/// statement journal).
fn insert_sql(history: bool, rows: usize) -> String {
    use std::fmt::Write;
    let mut sql = String::from(if history {
        "INSERT INTO _pluresdb_history(id, hlc, site, cl, type, data, vector) VALUES "
    } else {
        "INSERT OR IGNORE INTO _pluresdb_nodes
             (id, type, data, vector, created_hlc, updated_hlc, site, cl) VALUES "
    });
    for i in 0..rows {
        let p = 3 + 4 * i;
        let sep = if i == 0 { "" } else { ", " };
        let (t, d, v) = (p + 1, p + 2, p + 3);
        let _ = if history {
            write!(sql, "{sep}(?{p}, ?1, ?2, 1, ?{t}, ?{d}, ?{v})")
        } else {
            write!(sql, "{sep}(?{p}, ?{t}, ?{d}, ?{v}, ?1, ?1, ?2, 1)")
        };
    }
    sql
}

/// Statements from [`insert_sql`] for chunks of nodes: the one for full chunks is made once.
struct Inserts<'c> {
    conn: &'c rusqlite::Connection,
    history: bool,
    full: Option<rusqlite::CachedStatement<'c>>,
}

impl<'c> Inserts<'c> {
    fn new(conn: &'c rusqlite::Connection, history: bool) -> Inserts<'c> {
        Inserts {
            conn,
            history,
            full: None,
        }
    }

    /// Runs the insert for `chunk` (at most [`CHUNK`] nodes) written at `hlc` by `site`;
    /// returns how many rows it inserted.
    fn run(&mut self, chunk: &[&Fresh<'_>], hlc: i64, site: &[u8]) -> Result<usize> {
        let mut tail;
        let stmt = if chunk.len() == CHUNK {
            match &mut self.full {
                Some(stmt) => stmt,
                full => full.insert(self.conn.prepare_cached(&insert_sql(self.history, CHUNK))?),
            }
        } else {
            tail = self
                .conn
                .prepare_cached(&insert_sql(self.history, chunk.len()))?;
            &mut tail
        };
        stmt.raw_bind_parameter(1, hlc)?;
        stmt.raw_bind_parameter(2, site)?;
        for (i, node) in chunk.iter().enumerate() {
            let p = 3 + 4 * i;
            stmt.raw_bind_parameter(p, node.id)?;
            stmt.raw_bind_parameter(p + 1, node.node_type)?;
            stmt.raw_bind_parameter(p + 2, node.text.as_str())?;
            stmt.raw_bind_parameter(p + 3, node.vector)?;
        }
        Ok(stmt.raw_execute()?)
    }
}

/// A copy of `data` with its keys sorted, as stored (empty for none).
fn sorted(data: Option<&Map<String, Json>>) -> Map<String, Json> {
    let mut data = data.cloned().unwrap_or_default();
    data.sort_keys();
    data
}

/// Splits the writes: the first write of each id that may create its node (as [`Fresh`]),
/// and the places of the others.
fn plan<'a>(
    nodes: &[(&'a str, NodeUpdate<'a>)],
    checked: &'a [CheckedUpdate<'a>],
) -> (Vec<Fresh<'a>>, Vec<usize>) {
    let mut seen: HashSet<&str, foldhash::fast::RandomState> = HashSet::default();
    seen.reserve(nodes.len());
    let (mut fresh, mut each) = (Vec::with_capacity(nodes.len()), Vec::new());
    for (at, ((id, update), checked)) in nodes.iter().zip(checked).enumerate() {
        if seen.insert(id) && !update.must_exist {
            fresh.push(Fresh {
                at,
                id,
                node_type: update.node_type.flatten(),
                data: checked.patch,
                text: checked.patch.map_or_else(|| "{}".to_owned(), stored_text),
                vector: checked.vector_blob.as_deref(),
            });
        } else {
            each.push(at);
        }
    }
    (fresh, each)
}

impl Database {
    /// Puts many nodes in one transaction: each `(id, data)` as [`put`](Self::put) does
    /// (creates the node, or merges `data`'s top-level fields into it). Nodes new to the
    /// database are written in bulk, several times faster than `put` in a loop. Returns how
    /// many nodes were created or changed; nothing is written if any write is refused.
    pub fn put_many<'a, I>(&self, nodes: I) -> Result<usize>
    where
        I: IntoIterator<Item = (&'a str, &'a Json)>,
    {
        self.update_nodes(nodes.into_iter().map(|(id, data)| {
            let update = NodeUpdate {
                data: Some(data),
                ..NodeUpdate::default()
            };
            (id, update)
        }))
    }

    /// Many [`update_node`](Self::update_node) writes in one transaction, with the same
    /// result as making them in order; nodes new to the database are written in bulk (their
    /// change events come first, then those of the other writes, in order). Returns how many
    /// nodes were created or changed; nothing is written if any write is refused.
    pub fn update_nodes<'a, I>(&self, nodes: I) -> Result<usize>
    where
        I: IntoIterator<Item = (&'a str, NodeUpdate<'a>)>,
    {
        self.require_graph()?;
        let nodes: Vec<(&str, NodeUpdate<'_>)> = nodes.into_iter().collect();
        let checked = nodes
            .iter()
            .enumerate()
            .map(|(i, (id, update))| {
                check_update(id, update).map_err(|e| e.context(format!("node {} ({id:?})", i + 1)))
            })
            .collect::<Result<Vec<_>>>()?;
        if nodes.is_empty() {
            return Ok(0);
        }
        let _cache = BulkCache::raise(self, nodes.len())?;
        self.transaction(|db| {
            let (fresh, mut each) = plan(&nodes, &checked);
            let now = db.clock().now();
            let (created, existing) =
                db.with_writer_conn(|conn| db.create_nodes(conn, &fresh, now))?;
            // Writes to nodes that existed, in input order (an id's later writes follow its
            // first).
            each.extend(existing);
            each.sort_unstable();
            let mut changed = created;
            for at in each {
                let (id, update) = &nodes[at];
                changed += usize::from(db.write_node(id, update, &checked[at])?.1);
            }
            Ok(changed)
        })
    }

    /// Inserts the nodes of `fresh` that do not exist yet, with their clocks and first
    /// versions, written at `now`; returns how many it created and the input places of the
    /// others.
    fn create_nodes(
        &self,
        conn: &rusqlite::Connection,
        fresh: &[Fresh<'_>],
        now: Hlc,
    ) -> Result<(usize, Vec<usize>)> {
        let hlc = now.as_u64() as i64;
        let site = self.site_id();
        let site_bytes = site.as_bytes().as_slice();
        let mut created: Vec<&Fresh<'_>> = Vec::with_capacity(fresh.len());
        let mut existing = Vec::new();
        // Rows inserted from here on get a larger `rid` (the largest plus one). Not their
        // time: another handle on the file (another process) keeps a clock of its own and
        // may have written a node at this very time.
        let floor: i64 = conn
            .prepare_cached("SELECT coalesce(max(rid), 0) FROM _pluresdb_nodes")?
            .query_row([], |r| r.get(0))?;
        let mut nodes = Inserts::new(conn, false);
        let all: Vec<&Fresh<'_>> = fresh.iter().collect();
        for chunk in all.chunks(CHUNK) {
            if nodes.run(chunk, hlc, site_bytes)? == chunk.len() {
                created.extend(chunk);
                continue;
            }
            // Some existed (alive or deleted).
            let mut made =
                conn.prepare_cached("SELECT 1 FROM _pluresdb_nodes WHERE id = ?1 AND rid > ?2")?;
            for &node in chunk {
                if made.exists(rusqlite::params![node.id, floor])? {
                    created.push(node);
                } else {
                    existing.push(node.at);
                }
            }
        }
        let mut history = Inserts::new(conn, true);
        for chunk in created.chunks(CHUNK) {
            history.run(chunk, hlc, site_bytes)?;
        }
        let clocks: Vec<(Vec<u8>, Vec<String>)> = created
            .iter()
            .map(|n| {
                let key = pack_key_refs([ValueRef::Text(n.id.as_bytes())]);
                (key, created_fields(n.data.unwrap_or(&Map::new())))
            })
            .collect();
        self.replication()
            .capture_nodes_created(conn, &clocks, now)?;
        let hub = &self.engine().hub;
        if hub.is_active() {
            for node in &created {
                hub.record(Change::Node(NodeChange {
                    id: node.id.to_owned(),
                    node: Some(Node {
                        id: node.id.to_owned(),
                        node_type: node.node_type.map(str::to_owned),
                        data: sorted(node.data),
                        vector: node.vector.map(super::blob_to_vector).transpose()?,
                        created_at: now,
                        updated_at: now,
                        site,
                    }),
                }));
            }
        }
        Ok((created.len(), existing))
    }
}
