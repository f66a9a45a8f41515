//! Reading SQL text the way SQLite's tokenizer does, for the few places that must look into
//! a statement: blanks and comments, words, quoted names and strings.

/// Whitespace as SQLite's tokenizer knows it (ASCII only: other characters may be in names).
const SQL_SPACE: [char; 5] = [' ', '\t', '\n', '\x0c', '\r'];

/// `sql` without the whitespace and comments (`-- ...` and `/* ... */`) it starts with.
pub(crate) fn skip_blanks(mut sql: &str) -> &str {
    loop {
        let trimmed = sql.trim_start_matches(SQL_SPACE);
        sql = if let Some(rest) = trimmed.strip_prefix("--") {
            rest.find('\n').map_or("", |i| &rest[i + 1..])
        } else if let Some(rest) = trimmed.strip_prefix("/*") {
            rest.find("*/").map_or("", |i| &rest[i + 2..])
        } else {
            return trimmed;
        };
    }
}

/// The first SQL token of `sql` (a word, or a quoted name unquoted) and what follows it.
pub(crate) fn next_token(sql: &str) -> Option<(String, &str)> {
    let sql = skip_blanks(sql);
    let close = match sql.as_bytes().first()? {
        b'"' => '"',
        b'\'' => '\'',
        b'`' => '`',
        b'[' => ']',
        _ => {
            // A word: the characters SQLite takes into one (anything else ends it, a quote
            // too).
            let end = sql
                .find(|c: char| {
                    !(c.is_ascii_alphanumeric() || c == '_' || c == '$' || !c.is_ascii())
                })
                .unwrap_or(sql.len());
            return (end > 0).then(|| (sql[..end].to_ascii_lowercase(), &sql[end..]));
        }
    };
    // A quoted name; the quote doubled stands for itself (not inside [...]).
    let mut name = String::new();
    let mut rest = &sql[1..];
    loop {
        let i = rest.find(close)?;
        name.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if close != ']' && rest.starts_with(close) {
            name.push(close);
            rest = &rest[1..];
        } else {
            return Some((name.to_ascii_lowercase(), rest));
        }
    }
}

/// Whether `sql` holds `word` (ASCII, any case) as a bare word: not inside a string, a quoted
/// name or a comment, nor as part of a longer word.
pub(crate) fn has_bare_word(sql: &str, word: &str) -> bool {
    let mut rest = skip_blanks(sql);
    while let Some(c) = rest.chars().next() {
        if matches!(c, '"' | '\'' | '`' | '[') {
            // A quoted name or string: skipped whole (an unclosed one runs to the end).
            rest = next_token(rest).map_or("", |(_, tail)| tail);
        } else if c.is_ascii_alphanumeric() || c == '_' || c == '$' || !c.is_ascii() {
            let Some((w, tail)) = next_token(rest) else {
                return false;
            };
            if w.eq_ignore_ascii_case(word) {
                return true;
            }
            rest = tail;
        } else {
            rest = &rest[c.len_utf8()..];
        }
        rest = skip_blanks(rest);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::has_bare_word;

    #[test]
    fn bare_words_are_found_outside_strings_names_and_comments() {
        let table = "CREATE TABLE t(id INTEGER PRIMARY KEY AUTOINCREMENT, x)";
        assert!(has_bare_word(table, "autoincrement"));
        assert!(has_bare_word("create table t(a)without rowid", "ROWID"));
        for not_there in [
            "CREATE TABLE t(id INTEGER PRIMARY KEY, note DEFAULT 'autoincrement')",
            "CREATE TABLE t(id INTEGER PRIMARY KEY, \"autoincrement\" TEXT)",
            "CREATE TABLE t(id INTEGER PRIMARY KEY, [autoincrement] TEXT, `autoincrement`)",
            "CREATE TABLE t(id INTEGER PRIMARY KEY -- AUTOINCREMENT\n)",
            "CREATE TABLE t(id INTEGER PRIMARY KEY /* AUTOINCREMENT */)",
            "CREATE TABLE t(id INTEGER PRIMARY KEY, no_autoincrement_here)",
            "CREATE TABLE t(id INTEGER PRIMARY KEY, note DEFAULT 'it''s autoincrement')",
        ] {
            assert!(!has_bare_word(not_there, "autoincrement"), "{not_there}");
        }
    }
}
