//! The error type: a kind to match on, a message, and for errors about the query text the
//! position with a caret excerpt (the same style as PluresDB's SQL errors).

use std::fmt;

/// What went wrong, broadly; match on this rather than on messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The query text could not be parsed; the error has the position.
    Syntax,
    /// The query parsed but does not make sense: an unknown variable or function, a missing
    /// parameter, an aggregate where none is allowed, a clause that is not supported.
    Semantic,
    /// Running the query failed: a type error, a division by zero, deleting a node that
    /// still has relationships, creating a node whose id is taken.
    Runtime,
    /// The query would have used more than [`ExecOptions`](crate::ExecOptions) allows.
    Limit,
    /// The query writes but was run with [`Query::run_read`](crate::Query::run_read).
    ReadOnly,
    /// The graph store reported an error; [`std::error::Error::source`] is the store's error.
    Store,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Syntax => "Cypher syntax error",
            ErrorKind::Semantic => "Cypher semantic error",
            ErrorKind::Runtime => "Cypher runtime error",
            ErrorKind::Limit => "Cypher limit exceeded",
            ErrorKind::ReadOnly => "read-only",
            ErrorKind::Store => "graph store error",
        })
    }
}

/// A position in the query text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Position {
    /// Byte offset from the start of the query.
    pub offset: usize,
    /// Line number, starting at 1.
    pub line: usize,
    /// Column in characters, starting at 1.
    pub column: usize,
}

impl Position {
    /// The position of byte `offset` in `text` (clamped to the text and a char boundary).
    pub fn of(text: &str, offset: usize) -> Position {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Position {
            offset,
            line: before.matches('\n').count() + 1,
            column: text[line_start..offset].chars().count() + 1,
        }
    }
}

/// An error from parsing or running a Cypher query.
#[derive(Debug)]
pub struct CypherError {
    kind: ErrorKind,
    message: String,
    query: Option<String>,
    position: Option<Position>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// `Result` with [`CypherError`].
pub type Result<T, E = CypherError> = std::result::Result<T, E>;

impl CypherError {
    /// A new error of `kind` with `message` and no position.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> CypherError {
        CypherError {
            kind,
            message: message.into(),
            query: None,
            position: None,
            source: None,
        }
    }

    /// An error about the text at byte `offset` of `query`; the message gets
    /// " at line L, column C" appended and Display shows the line with a caret.
    pub fn at(kind: ErrorKind, message: impl fmt::Display, query: &str, offset: usize) -> Self {
        let position = Position::of(query, offset);
        CypherError {
            kind,
            message: format!(
                "{message} at line {}, column {}",
                position.line, position.column
            ),
            query: Some(query.to_owned()),
            position: Some(position),
            source: None,
        }
    }

    pub(crate) fn runtime(message: impl Into<String>) -> CypherError {
        CypherError::new(ErrorKind::Runtime, message)
    }

    pub(crate) fn semantic(message: impl Into<String>) -> CypherError {
        CypherError::new(ErrorKind::Semantic, message)
    }

    pub(crate) fn limit(message: impl Into<String>) -> CypherError {
        CypherError::new(ErrorKind::Limit, message)
    }

    /// Wraps an error of the graph store.
    pub fn store(err: impl std::error::Error + Send + Sync + 'static) -> CypherError {
        CypherError {
            kind: ErrorKind::Store,
            message: err.to_string(),
            query: None,
            position: None,
            source: Some(Box::new(err)),
        }
    }

    /// The kind of error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message without the excerpt (with " at line L, column C" when positioned).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Where in the query the problem is, for syntax errors and most semantic errors.
    pub fn position(&self) -> Option<Position> {
        self.position
    }

    /// The query text the position refers to.
    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }

    /// The graph store's own error, for [`ErrorKind::Store`]; downcast it to the store's type.
    pub fn store_error(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.source.as_deref()
    }

    /// Takes the graph store's own error out, for [`ErrorKind::Store`].
    pub fn into_store_error(self) -> Option<Box<dyn std::error::Error + Send + Sync>> {
        self.source
    }
}

impl fmt::Display for CypherError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let (Some(query), Some(pos)) = (&self.query, self.position) {
            write_excerpt(f, query, pos.offset)?;
        }
        Ok(())
    }
}

/// Writes the line of `query` holding `offset` with a caret under the offending position
/// (a window of long lines, marked with "...").
fn write_excerpt(f: &mut fmt::Formatter<'_>, query: &str, offset: usize) -> fmt::Result {
    const WINDOW: usize = 60;
    let line_start = query[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = query[offset..]
        .find('\n')
        .map_or(query.len(), |i| offset + i);
    let line_no = query[..offset].matches('\n').count() + 1;
    let line = query[line_start..line_end].trim_end_matches('\r');
    let mut column = query[line_start..offset].chars().count();
    let chars: Vec<char> = line.chars().collect();
    let first = column.saturating_sub(WINDOW);
    let last = (column + WINDOW).min(chars.len());
    let mut shown: String = chars[first..last].iter().collect();
    if first > 0 {
        shown.insert_str(0, "...");
        column = column - first + 3;
    }
    if last < chars.len() {
        shown.push_str("...");
    }
    let prefix = if query.contains('\n') {
        format!("line {line_no}: ")
    } else {
        String::new()
    };
    write!(
        f,
        "\n  {prefix}{shown}\n  {}^ (at byte {offset})",
        " ".repeat(prefix.chars().count() + column)
    )
}

impl std::error::Error for CypherError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caret_points_at_offset() {
        let err = CypherError::at(ErrorKind::Syntax, "boom", "MATCH (n RETURN n", 9);
        assert_eq!(
            err.to_string(),
            "boom at line 1, column 10\n  MATCH (n RETURN n\n           ^ (at byte 9)"
        );
        assert_eq!(err.position().unwrap().column, 10);
    }

    #[test]
    fn multiline_names_the_line() {
        let q = "MATCH (n)\nRETURN m";
        let err = CypherError::at(ErrorKind::Semantic, "variable `m` is not defined", q, 17);
        assert_eq!(err.position().unwrap().line, 2);
        assert_eq!(err.position().unwrap().column, 8);
        assert!(err.to_string().contains("line 2: RETURN m\n"), "{err}");
        assert!(err.to_string().ends_with("^ (at byte 17)"), "{err}");
    }

    #[test]
    fn long_lines_show_a_window() {
        let q = format!("RETURN {}x", "1 + ".repeat(100));
        let err = CypherError::at(ErrorKind::Syntax, "boom", &q, q.len() - 1);
        let text = err.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[1].starts_with("  ...") && lines[1].ends_with("1 + x"),
            "{text}"
        );
        assert_eq!(lines[2].find('^'), lines[1].find('x'), "{text}");
    }

    #[test]
    fn columns_count_characters() {
        let q = "RETURN 'é', x";
        let pos = Position::of(q, q.find('x').unwrap());
        assert_eq!(pos.column, 13);
    }
}
