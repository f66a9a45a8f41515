//! Full-text indexes (SQLite FTS5, kept in step by triggers) and hybrid search: bm25 text
//! matches and vector neighbours fused by reciprocal rank.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension};

use super::defs::{NODES_NAME, NODES_TABLE};
use super::{VectorQuery, split_collection};
use crate::database::Database;
use crate::error::{Error, Result};
use crate::replication::quote;

/// Reciprocal rank fusion's constant (from Cormack et al.; what most engines use).
const RRF_K: f64 = 60.0;

/// One hybrid search result.
#[derive(Clone, Debug, PartialEq)]
pub struct HybridHit {
    /// Row id in the table (for nodes: the node's row).
    pub rowid: i64,
    /// The node id, for searches over nodes.
    pub id: Option<String>,
    /// The fused score: higher is better.
    pub score: f64,
    /// Position among the text matches (1 = best), if it matched the text.
    pub text_rank: Option<usize>,
    /// Position among the vector neighbours (1 = nearest), if it was one.
    pub vector_rank: Option<usize>,
    /// Vector distance, if it was a neighbour.
    pub distance: Option<f32>,
}

fn fts_name(table: &str) -> String {
    format!("_pluresdb_fts_{table}")
}

fn resolve(table: &str) -> &str {
    if table.eq_ignore_ascii_case(NODES_NAME) {
        NODES_TABLE
    } else {
        table
    }
}

/// Turns search-box text into an FTS5 query: every word, any of them (`"a" OR "b"`).
pub(crate) fn fts_query(text: &str) -> Option<String> {
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| format!("\"{w}\""))
        .collect();
    (!words.is_empty()).then(|| words.join(" OR "))
}

fn create_text_index_on(conn: &Connection, table: &str, columns: &[&str]) -> Result<String> {
    let table = resolve(table);
    let is_nodes = table == NODES_TABLE;
    if !is_nodes && (table.starts_with("_pluresdb") || table.starts_with("sqlite_")) {
        return Err(Error::invalid(format!("{table} is an internal table")));
    }
    let columns: Vec<&str> = if is_nodes {
        vec!["data"]
    } else {
        columns.to_vec()
    };
    if columns.is_empty() {
        return Err(Error::invalid("name at least one text column to index"));
    }
    let known: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info(?1)")?
        .query_map([table], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    if known.is_empty() {
        return Err(Error::not_found(format!("no such table: {table}")));
    }
    for c in &columns {
        if !known.iter().any(|k| k == c) {
            return Err(Error::not_found(format!(
                "{table} has no column {c:?} (its columns: {})",
                known.join(", ")
            )));
        }
    }
    let fts = fts_name(table);
    let exists = text_index_columns(conn, table)?;
    let list = columns.join(",");
    // A table dropped or renamed since took the index's triggers, and an index of the older
    // kind (see below) kept the words of rows replaced by INSERT OR REPLACE: either is made
    // again.
    let dropped_table = exists.is_some() && !fits_its_table(conn, table)?;
    let older_kind = exists.as_ref() == Some(&list) && !forgets_by_rowid(conn, &fts)?;
    if dropped_table || older_kind {
        drop_text_index_on(conn, table)?;
    } else if let Some(existing) = exists {
        if existing == list {
            return Ok(fts);
        }
        return Err(Error::invalid(format!(
            "{table} already has a text index on {existing}; drop it first with \
             db.drop_text_index(\"{table}\")"
        )));
    }
    let cols = columns
        .iter()
        .map(|c| quote(c))
        .collect::<Vec<_>>()
        .join(", ");
    let new_vals = columns
        .iter()
        .map(|c| format!("NEW.{}", quote(c)))
        .collect::<Vec<_>>()
        .join(", ");
    let (f, t) = (quote(&fts), quote(table));
    let trig = |what: &str| quote(&text_trigger(&fts, what));
    // A contentless-delete FTS5 table forgets a row's words by its rowid alone. An external
    // content table needs the old values to forget them, and an INSERT OR REPLACE leaves
    // none: the replaced row's words stayed, and kept matching, under its rowid (SQLite fires
    // no delete trigger for the rows a REPLACE removes). Forgetting NEW.rowid before adding
    // its words also clears words a row removed that way left behind.
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS _pluresdb_text_indexes(tbl TEXT PRIMARY KEY, columns TEXT NOT NULL);
         CREATE VIRTUAL TABLE {f} USING fts5({cols}, content='', contentless_delete=1, tokenize='unicode61 remove_diacritics 2');
         CREATE TRIGGER {ai} AFTER INSERT ON {t} BEGIN
             DELETE FROM {f} WHERE rowid = NEW.rowid;
             INSERT INTO {f}(rowid, {cols}) VALUES (NEW.rowid, {new_vals});
         END;
         CREATE TRIGGER {ad} AFTER DELETE ON {t} BEGIN
             DELETE FROM {f} WHERE rowid = OLD.rowid;
         END;
         CREATE TRIGGER {au} AFTER UPDATE ON {t} BEGIN
             DELETE FROM {f} WHERE rowid IN (OLD.rowid, NEW.rowid);
             INSERT INTO {f}(rowid, {cols}) VALUES (NEW.rowid, {new_vals});
         END;
         INSERT INTO {f}(rowid, {cols}) SELECT rowid, {cols} FROM {t};",
        ai = trig("ai"),
        ad = trig("ad"),
        au = trig("au"),
    ))?;
    conn.execute(
        "INSERT INTO _pluresdb_text_indexes(tbl, columns) VALUES (?1, ?2)",
        [table, &list],
    )?;
    Ok(fts)
}

/// The columns (comma-separated) of `table`'s text index, if it has one.
fn text_index_columns(conn: &Connection, table: &str) -> Result<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT columns FROM _pluresdb_text_indexes WHERE tbl = ?1",
            [table],
            |r| r.get(0),
        )
        .optional()
        // No text index was ever made: the table is missing.
        .or_else(|e| match e {
            rusqlite::Error::SqliteFailure(..) => Ok(None),
            e => Err(e),
        })?)
}

/// Whether the triggers of `table`'s text index are on `table`: DROP TABLE drops them, and
/// ALTER TABLE ... RENAME takes them to the renamed table, while the index keeps the old rows'
/// words under their row ids.
fn fits_its_table(conn: &Connection, table: &str) -> Result<bool> {
    let on = crate::schema::trigger(conn, &text_trigger(&fts_name(table), "ai"))?;
    Ok(on.is_some_and(|(t, _)| t.eq_ignore_ascii_case(table)))
}

/// Whether the text index `fts` is a contentless-delete table, which forgets a row by its
/// rowid alone (indexes made before were external-content tables).
fn forgets_by_rowid(conn: &Connection, fts: &str) -> Result<bool> {
    let sql: Option<String> = conn
        .query_row(
            "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ?1",
            [fts],
            |r| r.get(0),
        )
        .optional()?;
    Ok(sql.is_some_and(|s| s.contains("contentless_delete=1")))
}

/// The (unquoted) name of the trigger `what` (`ai`, `ad`, `au`) of the text index `fts`.
fn text_trigger(fts: &str, what: &str) -> String {
    format!("{fts}_{what}")
}

/// Drops `table`'s text index (its triggers, its FTS table and its definition); false when
/// it has none.
fn drop_text_index_on(conn: &Connection, table: &str) -> Result<bool> {
    if text_index_columns(conn, table)?.is_none() {
        return Ok(false);
    }
    let fts = fts_name(table);
    for what in ["ai", "ad", "au"] {
        conn.execute_batch(&format!(
            "DROP TRIGGER IF EXISTS {}",
            quote(&text_trigger(&fts, what))
        ))?;
    }
    conn.execute_batch(&format!("DROP TABLE IF EXISTS {}", quote(&fts)))?;
    conn.execute("DELETE FROM _pluresdb_text_indexes WHERE tbl = ?1", [table])?;
    Ok(true)
}

impl Database {
    /// Drops the full-text index of `table` (for `"nodes"`: of their data); returns whether
    /// there was one.
    pub fn drop_text_index(&self, table: &str) -> Result<bool> {
        self.require_graph()?;
        let table = resolve(table);
        self.transaction(|db| db.with_writer_conn(|c| drop_text_index_on(c, table)))
    }

    /// Creates a full-text index (SQLite FTS5, bm25 ranking) over text `columns` of `table`
    /// (for `"nodes"`: over their data), kept up to date by triggers. Creating the same index
    /// again is a no-op.
    pub fn create_text_index(&self, table: &str, columns: &[&str]) -> Result<()> {
        self.require_graph()?;
        self.transaction(|db| db.with_writer_conn(|c| create_text_index_on(c, table, columns)))?;
        Ok(())
    }

    /// The rows of `collection` best matching the words of `text` (any word; bm25 order).
    pub fn text_search(
        &self,
        collection: &str,
        text: &str,
        k: usize,
        filter: Option<&str>,
    ) -> Result<Vec<i64>> {
        let (table, _) = split_collection(collection);
        let table = resolve(table);
        let Some(query) = fts_query(text) else {
            return Ok(Vec::new());
        };
        let (has_index, fits) = self.engine().with_read_conn(|c| {
            Ok((
                text_index_columns(c, table)?.is_some(),
                fits_its_table(c, table)?,
            ))
        })?;
        if has_index && !fits {
            return Err(Error::invalid(format!(
                "the text index on {table} no longer fits its table: {table} was dropped or \
                 renamed (and perhaps made again) since; create it again with \
                 db.create_text_index(\"{table}\", ...) or `pluresdb text-index {table} ...`"
            )));
        }
        let fts = quote(&fts_name(table));
        let alive = if table == NODES_TABLE {
            " AND t.cl % 2 = 1"
        } else {
            ""
        };
        // In a subquery on the table alone: the text index shares column names (and `rowid`)
        // with it, which made the filter's names ambiguous in the join.
        let filter = filter
            .map(|f| {
                format!(
                    " AND t.rowid IN (SELECT rowid FROM {} WHERE {f})",
                    quote(table)
                )
            })
            .unwrap_or_default();
        let sql = format!(
            "SELECT f.rowid FROM {fts} f JOIN {t} t ON t.rowid = f.rowid
             WHERE {fts} MATCH ?1{alive}{filter} ORDER BY bm25({fts}) LIMIT ?2",
            t = quote(table),
        );
        let rows = self.all_as::<(i64,)>(&sql, (query, i64::try_from(k).unwrap_or(i64::MAX)));
        match rows {
            Err(e)
                if e.to_string().contains("no such table")
                    && e.to_string().contains("_pluresdb_fts_") =>
            {
                Err(Error::not_found(format!(
                    "{table} has no text index; create one with db.create_text_index(\"{table}\", \
                     &[\"title\", \"body\"]) or `pluresdb text-index {table} title body`"
                )))
            }
            other => Ok(other?.into_iter().map(|r| r.0).collect()),
        }
    }

    /// Hybrid search: the best `k` rows of `collection` for `text`, fusing full-text matches
    /// (bm25) and vector neighbours (of `vector`, or of `text` embedded by the configured model)
    /// by reciprocal rank. Needs a text index and a vector index on the table.
    pub fn hybrid_search(
        &self,
        collection: &str,
        text: &str,
        vector: Option<&[f32]>,
        k: usize,
        filter: Option<&str>,
    ) -> Result<Vec<HybridHit>> {
        if k == 0 {
            return Err(Error::invalid("k must be at least 1"));
        }
        let pool = k.saturating_mul(4).max(50);
        let by_text = self.text_search(collection, text, pool, filter)?;
        let query = match vector {
            Some(v) => VectorQuery::Vector(v.to_vec()),
            None => VectorQuery::Text(text.to_owned()),
        };
        let by_vector = self.vector_search(collection, query, pool, filter)?;
        let mut fused: HashMap<i64, HybridHit> = HashMap::new();
        let blank = |rowid: i64| HybridHit {
            rowid,
            id: None,
            score: 0.0,
            text_rank: None,
            vector_rank: None,
            distance: None,
        };
        for (i, rowid) in by_text.iter().enumerate() {
            let hit = fused.entry(*rowid).or_insert_with(|| blank(*rowid));
            hit.text_rank = Some(i + 1);
            hit.score += 1.0 / (RRF_K + (i + 1) as f64);
        }
        for (i, v) in by_vector.iter().enumerate() {
            let hit = fused.entry(v.rowid).or_insert_with(|| blank(v.rowid));
            hit.vector_rank = Some(i + 1);
            hit.distance = Some(v.distance);
            hit.id.clone_from(&v.id);
            hit.score += 1.0 / (RRF_K + (i + 1) as f64);
        }
        let mut hits: Vec<HybridHit> = fused.into_values().collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.rowid.cmp(&b.rowid)));
        hits.truncate(k);
        if resolve(split_collection(collection).0) == NODES_TABLE {
            for hit in hits.iter_mut().filter(|h| h.id.is_none()) {
                hit.id = self
                    .get_as::<(String,)>(
                        "SELECT id FROM _pluresdb_nodes WHERE rid = ?",
                        (hit.rowid,),
                    )?
                    .map(|r| r.0);
            }
        }
        Ok(hits)
    }
}

#[cfg(test)]
mod tests {
    use super::fts_query;

    #[test]
    fn search_box_text_becomes_a_safe_fts_query() {
        assert_eq!(
            fts_query("cats, on the mat!").unwrap(),
            "\"cats\" OR \"on\" OR \"the\" OR \"mat\""
        );
        assert_eq!(
            fts_query("\"NEAR(\" AND -"),
            Some("\"NEAR\" OR \"AND\"".into())
        );
        assert_eq!(fts_query("  ..  "), None);
    }
}
