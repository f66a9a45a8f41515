//! Vector search over nodes and SQL columns: HNSW indexes kept consistent with the data,
//! `vector_search(...)` in SQL, sqlite-vec-style scalar functions, and automatic embeddings.

mod defs;
pub(crate) mod drop_column;
mod embed;
mod functions;
mod hybrid;
pub(crate) mod parse;
mod registry;
mod vtab;

use std::sync::Arc;

pub use defs::NewIndex as VectorIndexOptions;
pub use embed::{EmbedError, Embedder};
pub use hybrid::HybridHit;
pub use registry::{LoadSource, SearchOptions};

pub(crate) use functions::{WRONG_SIZE, register_pure, register_stateful};
pub(crate) use registry::VectorRegistry;

use crate::database::Database;
use crate::error::{Error, ErrorKind, Result};

/// After this many changes since the last save, [`Database::vector_search`] saves the graph.
const SAVE_AFTER: usize = 10_000;

/// One search result.
#[derive(Clone, Debug, PartialEq)]
pub struct VectorHit {
    /// The row id in the indexed table (for nodes: the node's internal row).
    pub rowid: i64,
    /// The node id, for searches over nodes.
    pub id: Option<String>,
    /// The distance to the query; smaller is closer.
    pub distance: f32,
}

/// What to search for: a vector, or a text the configured model embeds.
#[derive(Clone, Debug, PartialEq)]
pub enum VectorQuery {
    /// A query vector.
    Vector(Vec<f32>),
    /// A text to embed with the database's [`Embedder`].
    Text(String),
}

impl From<Vec<f32>> for VectorQuery {
    fn from(v: Vec<f32>) -> VectorQuery {
        VectorQuery::Vector(v)
    }
}

impl From<&[f32]> for VectorQuery {
    fn from(v: &[f32]) -> VectorQuery {
        VectorQuery::Vector(v.to_vec())
    }
}

impl From<&Vec<f32>> for VectorQuery {
    fn from(v: &Vec<f32>) -> VectorQuery {
        VectorQuery::Vector(v.clone())
    }
}

impl<const N: usize> From<[f32; N]> for VectorQuery {
    fn from(v: [f32; N]) -> VectorQuery {
        VectorQuery::Vector(v.to_vec())
    }
}

impl From<&str> for VectorQuery {
    fn from(t: &str) -> VectorQuery {
        VectorQuery::Text(t.to_owned())
    }
}

/// A vector index as described by [`Database::vector_indexes`].
#[derive(Clone, Debug, PartialEq)]
pub struct VectorIndexInfo {
    /// `table.column`, or `nodes`.
    pub name: String,
    /// The indexed table (`_pluresdb_nodes` for nodes).
    pub table: String,
    /// The indexed column.
    pub column: String,
    /// `cosine`, `l2` or `ip`.
    pub metric: String,
    /// The vectors' dimension (`None` until the first vector).
    pub dim: Option<usize>,
    /// HNSW links per node.
    pub m: usize,
    /// Candidate list size while inserting.
    pub ef_construction: usize,
    /// Default candidate list size while searching.
    pub ef_search: usize,
    /// The column (for nodes: data field) vectors are embedded from, if any.
    pub embed_from: Option<String>,
    /// Set once the index is in memory in this process.
    pub loaded: Option<LoadedIndex>,
}

/// The in-memory state of a loaded index.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadedIndex {
    /// Vectors held.
    pub vectors: usize,
    /// Approximate memory used.
    pub memory_bytes: usize,
    /// How it was loaded (a rebuild says why the saved graph was not used).
    pub source: LoadSource,
    /// Changes applied since the graph was last saved to the file.
    pub unsaved: usize,
}

/// Splits `docs.embedding` (or `docs`, or `nodes`) into table and column.
fn split_collection(collection: &str) -> (&str, &str) {
    match collection.split_once('.') {
        Some((t, c)) => (t, c),
        None => (collection, ""),
    }
}

impl Database {
    pub(crate) fn vectors(&self) -> &Arc<VectorRegistry> {
        self.vector_registry()
    }

    /// Creates a vector index on `table.column` (or on nodes, with table `"nodes"`), like
    /// `SELECT pluresdb_vector_index(table, column, metric)`. Existing rows are indexed on first
    /// search; every later insert, update and delete is picked up in the same transaction.
    /// Returns the index's name; creating an identical index again is a no-op.
    pub fn create_vector_index(
        &self,
        table: &str,
        column: &str,
        options: &VectorIndexOptions,
    ) -> Result<String> {
        self.require_graph()?;
        self.transaction(|db| {
            db.with_writer_conn(|c| {
                let def = defs::create(c, table, column, options)?;
                db.vectors().forget_missing(c)?;
                Ok(def.name())
            })
        })
    }

    /// Drops the vector index on `table.column`; returns whether there was one.
    pub fn drop_vector_index(&self, table: &str, column: &str) -> Result<bool> {
        let dropped =
            self.transaction(|db| db.with_writer_conn(|c| defs::drop_index(c, table, column)))?;
        if let Some(def) = &dropped {
            self.vectors().forget(def.id);
        }
        Ok(dropped.is_some())
    }

    /// Every vector index, with its in-memory state when loaded.
    pub fn vector_indexes(&self) -> Result<Vec<VectorIndexInfo>> {
        let defs = self.with_writer_conn(defs::all)?;
        Ok(defs
            .into_iter()
            .map(|d| VectorIndexInfo {
                name: d.name(),
                loaded: self.vectors().status(d.id).map(
                    |(vectors, memory_bytes, source, unsaved)| LoadedIndex {
                        vectors,
                        memory_bytes,
                        source,
                        unsaved,
                    },
                ),
                table: d.table,
                column: d.column,
                metric: d.metric.name().to_owned(),
                dim: d.dim,
                m: d.params.m,
                ef_construction: d.params.ef_construction,
                ef_search: d.params.ef_search,
                embed_from: d.embed_from,
            })
            .collect())
    }

    /// The `k` rows (or nodes) nearest to `query` in `collection` (`"nodes"`, `"docs"` or
    /// `"docs.embedding"`), nearest first; `filter` is an SQL condition on the indexed table
    /// (`"year > 2020"`). A text query is embedded with the configured model. Searching nodes
    /// creates their index (cosine) on first use.
    pub fn vector_search(
        &self,
        collection: &str,
        query: impl Into<VectorQuery>,
        k: usize,
        filter: Option<&str>,
    ) -> Result<Vec<VectorHit>> {
        let options = SearchOptions {
            filter: filter.map(str::to_owned),
            ..SearchOptions::default()
        };
        self.vector_search_with(collection, query, k, &options)
    }

    /// [`vector_search`](Self::vector_search) with all options (breadth, node type, exact).
    pub fn vector_search_with(
        &self,
        collection: &str,
        query: impl Into<VectorQuery>,
        k: usize,
        options: &SearchOptions,
    ) -> Result<Vec<VectorHit>> {
        let (table, column) = split_collection(collection);
        let query = query.into();
        let param = match &query {
            VectorQuery::Vector(v) => crate::Value::Blob(parse::to_blob(v)),
            VectorQuery::Text(t) => crate::Value::Text(t.clone()),
        };
        let options_json = serde_json::json!({
            "ef": options.ef,
            "filter": options.filter,
            "type": options.node_type,
            "exact": options.exact,
            "text": options.text_query || matches!(query, VectorQuery::Text(_)),
        });
        let options_json: serde_json::Map<_, _> = options_json
            .as_object()
            .expect("an object")
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let k = i64::try_from(k).unwrap_or(i64::MAX);
        let sql = "SELECT rowid, id, distance FROM vector_search(?1, ?2, ?3, ?4, ?5)";
        let run = || {
            self.all_as::<(i64, crate::Value, f64)>(
                sql,
                (
                    table,
                    column,
                    param.clone(),
                    k,
                    serde_json::Value::Object(options_json.clone()).to_string(),
                ),
            )
        };
        let rows = match run() {
            Err(e)
                if table.eq_ignore_ascii_case(defs::NODES_NAME)
                    && e.to_string().contains(defs::NO_NODE_INDEX) =>
            {
                if self.is_read_only() {
                    return Err(Error::not_found(format!(
                        "{}, and this handle is read-only so searching cannot create it; search \
                         nodes once with a writable handle, or create it with SELECT \
                         pluresdb_vector_index('nodes', 'vector', 'cosine')",
                        defs::NO_NODE_INDEX
                    )));
                }
                self.create_node_index(&query)?;
                run()?
            }
            other => other?,
        };
        if !self.in_transaction() && !self.is_read_only() && self.vectors().needs_save(SAVE_AFTER) {
            // Saving is an optimisation: a busy writer just means the next search saves.
            self.engine()
                .with_idle_writer(|c| self.vectors().save_all(c, SAVE_AFTER))?;
        }
        Ok(rows
            .into_iter()
            .map(|(rowid, id, distance)| VectorHit {
                rowid,
                id: match id {
                    crate::Value::Text(s) => Some(s),
                    _ => None,
                },
                distance: distance as f32,
            })
            .collect())
    }

    /// Creates the nodes' index for their first search. Its dimension is the one of the
    /// nodes' vectors, so that a query of another one is refused as such; without any, the
    /// query's.
    fn create_node_index(&self, query: &VectorQuery) -> Result<()> {
        let has_vectors = self.value(
            &format!(
                "SELECT EXISTS (SELECT 1 FROM {} WHERE vector IS NOT NULL AND cl % 2 = 1)",
                defs::NODES_TABLE
            ),
            (),
        )? == crate::Value::Integer(1);
        let dim = match query {
            _ if has_vectors => None,
            VectorQuery::Vector(v) => Some(v.len()),
            VectorQuery::Text(_) => Some(self.vectors().embedder()?.dim()),
        };
        let options = VectorIndexOptions {
            dim,
            ..VectorIndexOptions::default()
        };
        match self.create_vector_index(defs::NODES_NAME, "vector", &options) {
            Err(e)
                if e.kind() == ErrorKind::InvalidInput && e.to_string().contains("already has") =>
            {
                Ok(())
            }
            other => other.map(|_| ()),
        }
    }

    /// Saves every loaded index's graph into the file now (it is also saved when the last
    /// handle to the database is dropped, and after many changes), so the next open loads it
    /// instead of rebuilding. Returns how many were saved.
    pub fn save_vector_indexes(&self) -> Result<usize> {
        if self.in_transaction() {
            return Err(Error::invalid(
                "finish the open transaction before saving vector indexes",
            ));
        }
        self.with_writer_conn(|c| self.vectors().save_all(c, 0))
    }

    /// Loads (or builds) an index now rather than at its first search.
    pub fn load_vector_index(&self, collection: &str) -> Result<()> {
        if self.in_transaction() {
            return Err(Error::invalid(
                "finish the open transaction before loading a vector index",
            ));
        }
        let (table, column) = split_collection(collection);
        self.with_writer_conn(|c| {
            let def = defs::find(c, table, column)?;
            self.vectors().load(c, &def)
        })
    }

    /// Sets (or with `None` removes) the model that embeds text for `embed_from` indexes,
    /// text queries and `pluresdb_embed(text)`.
    pub fn set_embedder(&self, embedder: Option<Arc<dyn Embedder>>) {
        self.vectors().set_embedder(embedder);
    }

    /// Embeds `text` with the configured model.
    pub fn embed(&self, text: &str) -> Result<Vec<f32>> {
        self.vectors().embed(text)
    }
}

#[cfg(test)]
mod tests {
    use crate::{Database, VectorIndexOptions};

    const MAKE: &str = "CREATE TABLE docs(id INTEGER PRIMARY KEY, e BLOB);
                        INSERT INTO docs VALUES (1, vec_f32('[1, 0]'))";
    const SEARCH: &str = "SELECT rowid FROM vector_search('docs', 'e', '[1, 0]', 1)";

    /// A database with a loaded index on `docs.e` whose table was then dropped and made
    /// again; returns the stale index's id.
    fn stale_index() -> (Database, i64) {
        let db = Database::open_in_memory().unwrap();
        db.exec(MAKE).unwrap();
        db.create_vector_index("docs", "e", &VectorIndexOptions::default())
            .unwrap();
        db.all(SEARCH, ()).unwrap();
        let ids = db.vectors().live_ids();
        assert_eq!(ids.len(), 1);
        db.exec(&format!("DROP TABLE docs; {MAKE}")).unwrap();
        (db, ids[0])
    }

    #[test]
    fn a_search_that_finds_its_index_stale_frees_it() {
        let (db, _) = stale_index();
        db.all(SEARCH, ()).unwrap_err();
        assert_eq!(db.vectors().live_ids(), [] as [i64; 0]);
    }

    #[test]
    fn an_index_dropped_by_another_handle_is_freed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("two.db");
        let a = Database::open(&path).unwrap();
        a.exec(MAKE).unwrap();
        a.create_vector_index("docs", "e", &VectorIndexOptions::default())
            .unwrap();
        a.all(SEARCH, ()).unwrap();
        let old = a.vectors().live_ids();
        // Another process drops the index and makes it again (under a new id).
        let b = Database::open(&path).unwrap();
        b.drop_vector_index("docs", "e").unwrap();
        b.create_vector_index("docs", "e", &VectorIndexOptions::default())
            .unwrap();
        a.all(SEARCH, ()).unwrap();
        let now = a.vectors().live_ids();
        assert!(now.len() == 1 && now != old, "{old:?} -> {now:?}");
    }

    #[test]
    fn an_index_made_again_frees_the_stale_one() {
        let (db, old) = stale_index();
        db.create_vector_index("docs", "e", &VectorIndexOptions::default())
            .unwrap();
        db.all(SEARCH, ()).unwrap();
        let ids = db.vectors().live_ids();
        assert!(ids.len() == 1 && ids[0] != old, "{ids:?}");
        // The same when made again in SQL.
        db.exec(&format!("DROP TABLE docs; {MAKE}")).unwrap();
        db.value("SELECT pluresdb_vector_index('docs', 'e')", ())
            .unwrap();
        db.all(SEARCH, ()).unwrap();
        let again = db.vectors().live_ids();
        assert!(again.len() == 1 && again != ids, "{again:?}");
    }
}
