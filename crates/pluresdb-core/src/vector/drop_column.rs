//! A clear error for `ALTER TABLE ... DROP COLUMN` of a column that a vector or text index
//! uses: SQLite refuses it (as for a column of an ordinary index) but names only the index's
//! trigger ("error in trigger _pluresdb_vec_1_ins after drop column: no such column: NEW.emb").

use rusqlite::types::FromSql;
use rusqlite::{Connection, ToSql};

use crate::error::Error;

/// `err`, reworded to name the index and how to drop it when it is SQLite refusing to drop a
/// column that the triggers of a vector or text index read.
pub(crate) fn explain(conn: &Connection, err: Error) -> Error {
    match index_in_the_way(conn, err.message()) {
        Some(message) => err.with_message(message),
        None => err,
    }
}

/// The message for SQLite's `message`, when it is about one of PluresDB's index triggers.
fn index_in_the_way(conn: &Connection, message: &str) -> Option<String> {
    let (trigger, why) = message
        .strip_prefix("error in trigger ")?
        .split_once(" after drop column: ")?;
    let column = why.strip_prefix("no such column: ")?;
    let column = column
        .strip_prefix("NEW.")
        .or_else(|| column.strip_prefix("OLD."))
        .unwrap_or(column);
    let (table, _) = crate::schema::trigger(conn, trigger).ok()??;
    let refused = format!("cannot drop column {column:?} of table {table:?}");
    if let Some(rest) = trigger.strip_prefix("_pluresdb_vec_") {
        let id: i64 = rest.split('_').next()?.parse().ok()?;
        let indexed: String = lookup(
            conn,
            "SELECT col FROM _pluresdb_vector_indexes WHERE id = ?1",
            id,
        )?;
        let literal = |s: &str| format!("'{}'", s.replace('\'', "''"));
        return Some(format!(
            "{refused}: the vector index {table}.{indexed} uses it; drop the index first with \
             SELECT pluresdb_vector_index_drop({}, {}) (or pluresdb vector-index {} {} --drop)",
            literal(&table),
            literal(&indexed),
            shell_word(&table),
            shell_word(&indexed)
        ));
    }
    trigger.starts_with("_pluresdb_fts_").then(|| {
        format!(
            "{refused}: the text index on {table} uses it; drop the text index first \
             (db.drop_text_index({table:?}), or pluresdb text-index {} --drop), then \
             create it again over the other columns",
            shell_word(&table)
        )
    })
}

/// `name` as one word of a shell command line (single-quoted unless it is plain).
fn shell_word(name: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    if !name.is_empty() && name.chars().all(plain) {
        return name.to_owned();
    }
    format!("'{}'", name.replace('\'', "'\\''"))
}

/// The first value `sql` gives for `param`; `None` when there is none (or it fails: the
/// caller then keeps SQLite's own message).
fn lookup<T: FromSql>(conn: &Connection, sql: &str, param: impl ToSql) -> Option<T> {
    conn.query_row(sql, [param], |r| r.get(0)).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_quoted_for_the_shell_when_they_need_it() {
        assert_eq!(super::shell_word("docs"), "docs");
        assert_eq!(super::shell_word("my docs"), "'my docs'");
        assert_eq!(super::shell_word("it's"), "'it'\\''s'");
    }
}
