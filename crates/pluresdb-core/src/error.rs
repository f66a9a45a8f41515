//! The one error type of PluresDB: a kind to match on and a message that names what was wrong.

use std::fmt;

/// What went wrong, broadly; match on this rather than on messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The SQL text could not be parsed (the error carries the SQL and the position).
    Syntax,
    /// Any other error SQLite reported for a statement (no such table, datatype mismatch, ...).
    Sql,
    /// A UNIQUE, NOT NULL, CHECK, FOREIGN KEY or PRIMARY KEY constraint failed.
    Constraint,
    /// The thing asked for (node, edge, file) does not exist.
    NotFound,
    /// The database stayed locked by another connection or thread past the busy timeout.
    Busy,
    /// A caller-supplied value was wrong: parameters, JSON, ids, options.
    InvalidInput,
    /// The database was opened read-only (or the file is not writable).
    ReadOnly,
    /// Reading or writing a file failed.
    Io,
    /// The file is not a database, is damaged, or was written by a newer PluresDB.
    Corrupt,
    /// A bug in PluresDB itself; please report it.
    Internal,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            ErrorKind::Syntax => "syntax error",
            ErrorKind::Sql => "SQL error",
            ErrorKind::Constraint => "constraint failed",
            ErrorKind::NotFound => "not found",
            ErrorKind::Busy => "database busy",
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::ReadOnly => "read-only",
            ErrorKind::Io => "I/O error",
            ErrorKind::Corrupt => "corrupt database",
            ErrorKind::Internal => "internal error",
        };
        f.write_str(name)
    }
}

/// A PluresDB error: a [`ErrorKind`], a message, and for SQL errors the SQL and byte offset.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    sql: Option<String>,
    offset: Option<usize>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
    /// SQLite's `SQLITE_BUSY_SNAPSHOT` (see [`Error::is_stale_snapshot`]).
    stale_snapshot: bool,
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            sql: None,
            offset: None,
            source: None,
            stale_snapshot: false,
        }
    }

    /// An [`ErrorKind::InvalidInput`] error.
    pub fn invalid(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::InvalidInput, message)
    }

    /// An [`ErrorKind::NotFound`] error.
    pub fn not_found(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::NotFound, message)
    }

    /// An [`ErrorKind::Internal`] error.
    pub fn internal(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Internal, message)
    }

    /// The kind of error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// A transaction that read before another connection or process wrote tried to write
    /// ([`ErrorKind::Busy`], SQLite's `SQLITE_BUSY_SNAPSHOT`): waiting longer does not help;
    /// roll it back and run it again. False for busy errors a longer busy timeout waits out.
    pub fn is_stale_snapshot(&self) -> bool {
        self.stale_snapshot
    }

    /// The message without the SQL excerpt.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The SQL the error is about, when there is one.
    pub fn sql(&self) -> Option<&str> {
        self.sql.as_deref()
    }

    /// The byte offset in [`sql`](Self::sql) where SQLite stopped, when it said.
    pub fn offset(&self) -> Option<usize> {
        self.offset
    }

    /// Attaches the SQL (and the offset of the problem in it) to the error.
    pub fn with_sql(mut self, sql: &str, offset: Option<usize>) -> Error {
        if self.sql.is_none() {
            self.sql = Some(sql.to_owned());
            self.offset = offset.filter(|&o| o <= sql.len());
        }
        self
    }

    /// The same error with another message (the kind and SQL kept).
    pub(crate) fn with_message(mut self, message: String) -> Error {
        self.message = message;
        self
    }

    /// Prefixes the message with context ("importing line 3: ...").
    pub fn context(mut self, context: impl fmt::Display) -> Error {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// Attaches an underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Error {
        self.source = Some(Box::new(source));
        self
    }

    /// Shifts the reported offset (used when the SQL was one statement of a larger script).
    pub(crate) fn shift_into(mut self, script: &str, start: usize) -> Error {
        self.offset = self.offset.map(|o| o + start);
        self.sql = Some(script.to_owned());
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(sql) = &self.sql {
            write_sql_excerpt(f, sql, self.offset)?;
        }
        Ok(())
    }
}

/// Writes the line of `sql` holding `offset` with a caret under the offending position.
/// How many characters of a long SQL line an error shows before and after its position.
const EXCERPT_BEFORE: usize = 60;
const EXCERPT_AFTER: usize = 60;

fn write_sql_excerpt(f: &mut fmt::Formatter<'_>, sql: &str, offset: Option<usize>) -> fmt::Result {
    let Some(offset) = offset.filter(|&o| sql.is_char_boundary(o)) else {
        let one_line: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
        return write!(f, "\n  in: {}", truncate_chars(&one_line, 200));
    };
    let line_start = sql[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = sql[offset..].find('\n').map_or(sql.len(), |i| offset + i);
    let line_no = sql[..offset].matches('\n').count() + 1;
    // A long line shows only the part around the error (a whole generated line could be
    // megabytes).
    let shown_start = sql[line_start..offset]
        .char_indices()
        .rev()
        .nth(EXCERPT_BEFORE - 1)
        .map_or(line_start, |(i, _)| line_start + i);
    let shown_end = sql[offset..line_end]
        .char_indices()
        .nth(EXCERPT_AFTER)
        .map_or(line_end, |(i, _)| offset + i);
    let lead = if shown_start > line_start { "..." } else { "" };
    let trail = if shown_end < line_end { "..." } else { "" };
    let line = &sql[shown_start..shown_end];
    let column = lead.len() + sql[shown_start..offset].chars().count();
    let prefix = if sql.contains('\n') {
        format!("line {line_no}: ")
    } else {
        String::new()
    };
    write!(
        f,
        "\n  {prefix}{lead}{line}{trail}\n  {}^",
        " ".repeat(prefix.len() + column)
    )?;
    write!(f, " (at byte {offset})")
}

fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// An error for SQLite to report from a function or hook PluresDB registered.
pub(crate) fn user_function_error(e: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::UserFunctionError(e.to_string().into())
}

impl From<rusqlite::Error> for Error {
    fn from(err: rusqlite::Error) -> Error {
        use rusqlite::Error as E;
        match err {
            E::SqlInputError {
                error,
                msg,
                sql,
                offset,
            } => {
                let kind = kind_of_code(error.code, &msg);
                Error::new(kind, msg).with_sql(&sql, usize::try_from(offset).ok())
            }
            E::SqliteFailure(code, msg) => {
                let msg = msg.unwrap_or_else(|| code.to_string());
                let kind = kind_of_code(code.code, &msg);
                let msg = if code.extended_code == rusqlite::ffi::SQLITE_BUSY_SNAPSHOT {
                    format!(
                        "{msg}: another connection or process wrote after this transaction \
                         began reading, so it cannot write, and waiting longer does not help; \
                         roll it back and run it again, beginning it with BEGIN IMMEDIATE (as \
                         Database::transaction does) so that it waits for the write lock instead"
                    )
                } else if kind == ErrorKind::Busy {
                    format!(
                        "{msg}: another connection or process held the lock past the busy timeout; \
                         retry, or raise the busy timeout"
                    )
                } else if kind == ErrorKind::Corrupt {
                    format!("{msg}: the file is not a SQLite/PluresDB database or it is damaged")
                } else if let Some(why) = unfinished_write(code.extended_code) {
                    format!("{msg}: {why}")
                } else {
                    msg
                };
                Error {
                    stale_snapshot: code.extended_code == rusqlite::ffi::SQLITE_BUSY_SNAPSHOT,
                    ..Error::new(kind, msg)
                }
            }
            E::InvalidParameterCount(given, expected) => Error::invalid(format!(
                "wrong number of parameters: the statement takes {expected}, {given} were given"
            )),
            E::InvalidParameterName(name) => {
                Error::invalid(format!("the statement has no parameter named {name}"))
            }
            E::MultipleStatement => Error::invalid(
                "the SQL holds more than one statement; prepare() takes one, use exec() for several",
            ),
            E::NulError(e) => Error::invalid(format!("text contains a NUL byte: {e}")),
            E::Utf8Error(_, e) => Error::invalid(format!("text is not valid UTF-8: {e}")),
            E::InvalidPath(p) => Error::invalid(format!("invalid path {}", p.display())),
            E::ToSqlConversionFailure(e) => {
                Error::invalid(format!("a parameter cannot be stored: {e}"))
            }
            E::UnwindingPanic => Error::internal("a callback panicked"),
            other => Error::new(ErrorKind::Sql, other.to_string()),
        }
    }
}

/// Why a read-only handle cannot read a file that a writer left unfinished (SQLite's
/// `SQLITE_READONLY_ROLLBACK`, `_RECOVERY` and `_CANTINIT`, which it reports as "attempt to
/// write a readonly database"), and what to do; `None` for other errors.
fn unfinished_write(extended_code: std::os::raw::c_int) -> Option<&'static str> {
    use rusqlite::ffi;
    match extended_code {
        ffi::SQLITE_READONLY_ROLLBACK => Some(
            "a process writing the file stopped in the middle of a transaction (killed, or a \
             crash), and its journal must be rolled back before the file can be read, which a \
             read-only handle cannot do; open the database writable once (without \
             --read-only, by any program that may write it) and the unfinished transaction is \
             undone",
        ),
        ffi::SQLITE_READONLY_RECOVERY | ffi::SQLITE_READONLY_CANTINIT => Some(
            "a process writing the file stopped in the middle of a transaction (killed, or a \
             crash), and its write-ahead log must be recovered before the file can be read, \
             which a read-only handle cannot do here; open the database writable once \
             (without --read-only, by any program that may write it)",
        ),
        _ => None,
    }
}

fn kind_of_code(code: rusqlite::ErrorCode, msg: &str) -> ErrorKind {
    use rusqlite::ErrorCode as C;
    match code {
        C::ConstraintViolation => ErrorKind::Constraint,
        C::DatabaseBusy | C::DatabaseLocked => ErrorKind::Busy,
        C::NotADatabase | C::DatabaseCorrupt => ErrorKind::Corrupt,
        C::ReadOnly => ErrorKind::ReadOnly,
        C::CannotOpen | C::SystemIoFailure | C::DiskFull | C::FileLockingProtocolFailed => {
            ErrorKind::Io
        }
        C::NotFound => ErrorKind::NotFound,
        C::TooBig | C::TypeMismatch | C::ParameterOutOfRange => ErrorKind::InvalidInput,
        C::InternalMalfunction | C::ApiMisuse => ErrorKind::Internal,
        _ if is_syntax_message(msg) => ErrorKind::Syntax,
        _ => ErrorKind::Sql,
    }
}

fn is_syntax_message(msg: &str) -> bool {
    msg.contains("syntax error")
        || msg.contains("incomplete input")
        || msg.contains("unrecognized token")
}

impl From<serde_json::Error> for Error {
    fn from(err: serde_json::Error) -> Error {
        Error::invalid(format!("invalid JSON: {err}"))
    }
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Error {
        let kind = if err.kind() == std::io::ErrorKind::NotFound {
            ErrorKind::NotFound
        } else {
            ErrorKind::Io
        };
        Error::new(kind, err.to_string()).with_source(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caret_points_at_offset() {
        let err = Error::new(ErrorKind::Syntax, "near \"FORM\": syntax error")
            .with_sql("SELECT * FORM t", Some(9));
        let text = err.to_string();
        assert_eq!(
            text,
            "near \"FORM\": syntax error\n  SELECT * FORM t\n           ^ (at byte 9)"
        );
    }

    #[test]
    fn a_long_line_is_shown_around_the_error_only() {
        let sql = format!("SELECT 1 AS 1{}", " + 1".repeat(100_000));
        let err =
            Error::new(ErrorKind::Syntax, "near \"1\": syntax error").with_sql(&sql, Some(12));
        let text = err.to_string();
        assert!(text.len() < 300, "{} bytes", text.len());
        let expected_line = format!("  {}...", &sql[..72]);
        assert_eq!(text.lines().nth(1), Some(expected_line.as_str()), "{text}");
        assert_eq!(text.lines().nth(2), Some("              ^ (at byte 12)"));
        let sql = format!("SELECT {}x FORM t", "1 + ".repeat(100_000));
        let at = sql.find("FORM").unwrap();
        let err = Error::new(ErrorKind::Syntax, "boom").with_sql(&sql, Some(at));
        let text = err.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[1].starts_with("  ...") && lines[1].ends_with("x FORM t"),
            "{text}"
        );
        assert_eq!(lines[2].find('^'), lines[1].find("FORM"), "{text}");
    }

    #[test]
    fn multiline_sql_names_the_line() {
        let err = Error::new(ErrorKind::Syntax, "boom").with_sql("SELECT 1;\nSELEC 2;", Some(10));
        assert!(err.to_string().contains("line 2: SELEC 2;"), "{err}");
    }
}
