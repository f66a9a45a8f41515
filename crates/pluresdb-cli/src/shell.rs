//! `pluresdb shell`: an interactive SQL shell in the style of `sqlite3`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use pluresdb_core::{Database, Error, ErrorKind, Result, is_complete_statement};

use crate::output::{Mode, print_json, print_rows};
use crate::transfer::{self, Format, Target};

const HELP: &str = "\
.help                  show this help
.tables [PATTERN]      list tables and views (LIKE pattern)
.schema [TABLE]        show CREATE statements
.mode [MODE]           show or set output: table, json, csv, line
.import FILE TABLE     import CSV or JSONL (by extension) into TABLE
.read FILE             run the SQL in FILE
.nodes [PREFIX]        list graph nodes
.quit, .exit           leave the shell
SQL statements end with ';' and may span lines.";

/// The shell's state.
pub struct Shell<'a> {
    db: &'a Database,
    mode: Mode,
    failed: bool,
    /// How many `.read` files are being read (a file that reads itself stops at a limit).
    depth: usize,
}

/// How deeply `.read` files may read other files.
const MAX_READ_DEPTH: usize = 25;

impl<'a> Shell<'a> {
    /// A shell over `db` printing in `mode`.
    pub fn new(db: &'a Database, mode: Mode) -> Shell<'a> {
        Shell {
            db,
            mode,
            failed: false,
            depth: 0,
        }
    }

    /// Reads commands until end of input or `.quit`. Interactive on a terminal (line editing
    /// and history), plain line reading otherwise. Returns whether any command failed.
    pub fn run(mut self) -> Result<bool> {
        if std::io::stdin().is_terminal() {
            self.run_interactive()?;
        } else {
            let stdin = std::io::stdin();
            let mut buffer = String::new();
            for line in stdin.lock().lines() {
                if !self.feed(&mut buffer, &line?) {
                    return Ok(self.failed);
                }
            }
            self.flush(&mut buffer);
        }
        Ok(self.failed)
    }

    fn run_interactive(&mut self) -> Result<()> {
        let mut editor = rustyline::DefaultEditor::new()
            .map_err(|e| Error::invalid(format!("cannot start the line editor: {e}")))?;
        let history = history_path();
        if let Some(h) = &history {
            let _ = editor.load_history(h);
        }
        println!(
            "PluresDB {} (SQLite {}) - {}. Type .help for help.",
            env!("CARGO_PKG_VERSION"),
            pluresdb_core::sqlite_version(),
            self.db
                .path()
                .map_or_else(|| "in memory".to_owned(), |p| p.display().to_string())
        );
        let mut buffer = String::new();
        loop {
            let prompt = if buffer.is_empty() {
                "pluresdb> "
            } else {
                "     ...> "
            };
            match editor.readline(prompt) {
                Ok(line) => {
                    if !line.trim().is_empty() {
                        let _ = editor.add_history_entry(line.as_str());
                    }
                    if !self.feed(&mut buffer, &line) {
                        break;
                    }
                }
                Err(rustyline::error::ReadlineError::Interrupted) => buffer.clear(),
                Err(rustyline::error::ReadlineError::Eof) => break,
                Err(e) => return Err(Error::invalid(format!("reading input: {e}"))),
            }
        }
        self.flush(&mut buffer);
        if let Some(h) = &history {
            let _ = editor.save_history(h);
        }
        Ok(())
    }

    /// Handles one input line; returns false when the shell should stop (`.quit`, or
    /// standard output closed by its reader).
    fn feed(&mut self, buffer: &mut String, line: &str) -> bool {
        if crate::output::stdout_closed() {
            return false;
        }
        if buffer.is_empty() && line.trim_start().starts_with('.') {
            return match self.dot(line.trim()) {
                Ok(keep_going) => keep_going,
                Err(e) => {
                    self.report(&e);
                    true
                }
            };
        }
        if buffer.is_empty() && line.trim().is_empty() {
            return true;
        }
        buffer.push_str(line);
        buffer.push('\n');
        if is_complete_statement(buffer) {
            self.flush(buffer);
        }
        true
    }

    fn flush(&mut self, buffer: &mut String) {
        if buffer.trim().is_empty() {
            buffer.clear();
            return;
        }
        let sql = std::mem::take(buffer);
        if let Err(e) = self.sql(&sql) {
            self.report(&e);
        }
    }

    fn report(&mut self, err: &Error) {
        if crate::output::stdout_closed() {
            return;
        }
        self.failed = true;
        eprintln!("Error: {err}");
        if err.kind() == ErrorKind::ReadOnly && self.db.is_read_only() {
            eprintln!("(the database was opened with --read-only; leave it out to write)");
        }
        if crate::waiting_longer_helps(err) {
            eprintln!("{}", crate::BUSY_HINT);
        }
    }

    /// Runs the statements in `sql` one at a time, printing the rows of each (as `sqlite3`
    /// does); stops at the first error.
    fn sql(&self, sql: &str) -> Result<()> {
        for statement in split_statements(sql) {
            let result = self.db.exec_script(statement)?;
            let mut out = crate::output::stdout();
            if !result.columns.is_empty() {
                print_rows(&mut out, self.mode, &result.columns, &result.rows)?;
            }
            out.flush()?;
        }
        Ok(())
    }

    /// Runs FILE line by line as if typed: SQL and dot commands, going on after errors.
    /// Returns false when the file said `.quit`.
    fn read(&mut self, file: &str) -> Result<bool> {
        if self.depth >= MAX_READ_DEPTH {
            return Err(Error::invalid(format!(
                "cannot read {file}: .read files nested more than {MAX_READ_DEPTH} deep"
            )));
        }
        let text = read_input(Path::new(file))?;
        self.depth += 1;
        let mut buffer = String::new();
        let mut keep_going = true;
        for line in text.lines() {
            if !self.feed(&mut buffer, line) {
                keep_going = false;
                break;
            }
        }
        if keep_going {
            self.flush(&mut buffer);
        }
        self.depth -= 1;
        Ok(keep_going)
    }

    /// Runs a dot command; returns false for `.quit`.
    fn dot(&mut self, line: &str) -> Result<bool> {
        let parts = split_args(line);
        let command = parts.first().map_or("", String::as_str);
        let args: Vec<&str> = parts.iter().skip(1).map(String::as_str).collect();
        let mut out = crate::output::stdout();
        match command {
            ".quit" | ".exit" | ".q" => return Ok(false),
            ".help" => writeln!(out, "{HELP}")?,
            ".mode" => match args.first() {
                None => writeln!(out, "current mode: {}", self.mode.name())?,
                Some(m) => self.mode = m.parse().map_err(Error::invalid)?,
            },
            ".tables" => {
                let pattern = args.first().copied().unwrap_or("%");
                let names: Vec<(String,)> = self.db.all_as(
                    "SELECT name FROM sqlite_schema WHERE type IN ('table', 'view')
                       AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name NOT LIKE '\\_pluresdb\\_%' ESCAPE '\\'
                       AND name LIKE ?1 ORDER BY name",
                    (pattern,),
                )?;
                for (name,) in names {
                    writeln!(out, "{name}")?;
                }
            }
            ".schema" => {
                let rows: Vec<(String,)> = self.db.all_as(
                    "SELECT sql FROM sqlite_schema WHERE sql IS NOT NULL
                       AND name NOT LIKE '\\_pluresdb\\_%' ESCAPE '\\'
                       AND (?1 IS NULL OR tbl_name = ?1) ORDER BY tbl_name, type DESC, name",
                    (args.first().copied(),),
                )?;
                for (sql,) in rows {
                    writeln!(out, "{sql};")?;
                }
            }
            ".import" => {
                let [file, table] = args[..] else {
                    return Err(Error::invalid("usage: .import FILE TABLE"));
                };
                let path = Path::new(file);
                let report =
                    transfer::import(self.db, path, Format::guess(path), Target::Table(table))?;
                writeln!(out, "imported {} records into {table}", report.records)?;
            }
            ".read" => {
                let [file] = args[..] else {
                    return Err(Error::invalid("usage: .read FILE"));
                };
                drop(out);
                return self.read(file);
            }
            ".nodes" => {
                let nodes = self.db.list(args.first().copied().unwrap_or(""))?;
                let records: Vec<_> = nodes
                    .iter()
                    .map(transfer::node_record)
                    .collect::<Result<_>>()?;
                print_json(&mut out, &records)?;
            }
            other => {
                return Err(Error::invalid(format!(
                    "unknown command {other}; type .help for the list"
                )));
            }
        }
        Ok(true)
    }
}

/// Reads a whole text file, naming it in errors (a directory is refused by name).
fn read_input(path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| Error::from(e).context(format!("cannot read {}", path.display())))
}

/// Splits a buffer of complete SQL into its statements, each ending with its `;` (SQLite's
/// own completeness test, so a `;` in a string, comment or trigger body does not split);
/// text after the last `;` is the last piece.
fn split_statements(sql: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    for (i, _) in sql.match_indices(';') {
        let piece = &sql[start..=i];
        if is_complete_statement(piece) {
            pieces.push(piece.trim_start());
            start = i + 1;
        }
    }
    let rest = &sql[start..];
    if !rest.trim().is_empty() {
        pieces.push(rest.trim_start());
    }
    pieces
}

/// Splits a dot command into words as `sqlite3` does: spaces separate them, and '...' or
/// "..." keeps spaces in one (`.import "my file.csv" t`).
fn split_args(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&first) = chars.peek() else {
            break;
        };
        let mut word = String::new();
        if first == '"' || first == '\'' {
            chars.next();
            for c in chars.by_ref() {
                if c == first {
                    break;
                }
                word.push(c);
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                word.push(c);
            }
        }
        words.push(word);
    }
    words
}

fn history_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PLURESDB_HISTORY") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pluresdb_history"))
}
