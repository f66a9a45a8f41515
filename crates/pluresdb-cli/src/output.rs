//! Printing results: tables for people, JSON and CSV for scripts.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use comfy_table::{ContentArrangement, Table, presets};
use pluresdb_core::{Columns, Result, Row, Value, base64_encode};
use serde_json::Value as Json;

/// Set once a write to standard output found the reader gone (`pluresdb ... | head`).
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Standard output (locked), noting when the reader has gone away so that the command can
/// stop quietly instead of reporting "Broken pipe" (as `sqlite3` and `cat` stop).
pub fn stdout() -> Stdout {
    Stdout(std::io::stdout().lock())
}

/// True once a write to standard output failed because nothing reads it any more.
pub fn stdout_closed() -> bool {
    STDOUT_CLOSED.load(Ordering::Relaxed)
}

/// See [`stdout`].
pub struct Stdout(std::io::StdoutLock<'static>);

impl Stdout {
    fn note<T>(result: std::io::Result<T>) -> std::io::Result<T> {
        if let Err(e) = &result
            && e.kind() == std::io::ErrorKind::BrokenPipe
        {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
        }
        result
    }
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Stdout::note(self.0.write(buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Stdout::note(self.0.flush())
    }
}

/// How rows are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A boxed table with a header.
    Table,
    /// A JSON array of objects (integers exact).
    Json,
    /// CSV with a header row.
    Csv,
    /// One `column = value` line per field, rows separated by a blank line.
    Line,
}

impl Mode {
    /// The mode's name, as `.mode` and `--mode` take it.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Table => "table",
            Mode::Json => "json",
            Mode::Csv => "csv",
            Mode::Line => "line",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Mode, String> {
        match s {
            "table" | "box" => Ok(Mode::Table),
            "json" => Ok(Mode::Json),
            "csv" => Ok(Mode::Csv),
            "line" => Ok(Mode::Line),
            other => Err(format!(
                "unknown mode {other:?}; use table, json, csv or line"
            )),
        }
    }
}

/// A value as text for a table cell or CSV field (NULL as `NULL` in tables, empty in CSV).
pub fn cell(value: &Value, null: &str) -> String {
    match value {
        Value::Null => null.to_owned(),
        Value::Integer(i) => i.to_string(),
        Value::Real(f) => format_real(*f),
        Value::Text(s) => s.clone(),
        Value::Blob(b) => format!("x'{}'", hex(b)),
    }
}

/// Reals as SQLite prints them: always with a decimal point or exponent (`3.0`, `1.0e+20`,
/// `1.0e-07`, `Inf`), so a real never reads as an integer; other values in full precision.
fn format_real(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Inf" } else { "-Inf" }.to_owned();
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-4..1e15).contains(&abs) {
        // Rust's shortest exponent form ("1e20", "-2.5e-7") in SQLite's spelling.
        let text = format!("{f:e}");
        let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
        let point = if mantissa.contains('.') { "" } else { ".0" };
        let (sign, digits) = match exponent.strip_prefix('-') {
            Some(d) => ('-', d),
            None => ('+', exponent),
        };
        return format!("{mantissa}{point}e{sign}{digits:0>2}");
    }
    if f == f.trunc() {
        format!("{f:.1}")
    } else {
        f.to_string()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Prints rows in `mode` to `out`.
pub fn print_rows(out: &mut dyn Write, mode: Mode, columns: &Columns, rows: &[Row]) -> Result<()> {
    match mode {
        Mode::Table => {
            if columns.is_empty() {
                return Ok(());
            }
            print_table(
                out,
                &columns.names(),
                rows.iter()
                    .map(|row| row.values().iter().map(|v| cell(v, "NULL")).collect()),
            )?;
        }
        Mode::Json => {
            let array = Json::Array(rows.iter().map(Row::to_json).collect());
            writeln!(out, "{}", serde_json::to_string_pretty(&array)?)?;
        }
        Mode::Csv => {
            let mut writer = csv::Writer::from_writer(out);
            if !columns.is_empty() {
                writer.write_record(columns.names()).map_err(csv_error)?;
            }
            for row in rows {
                writer
                    .write_record(row.values().iter().map(csv_field))
                    .map_err(csv_error)?;
            }
            writer.flush()?;
        }
        Mode::Line => {
            let width = columns
                .iter()
                .map(|c| c.name.chars().count())
                .max()
                .unwrap_or(0);
            for (i, row) in rows.iter().enumerate() {
                if i > 0 {
                    writeln!(out)?;
                }
                for (c, v) in columns.iter().zip(row.values()) {
                    writeln!(out, "{:>width$} = {}", c.name, cell(v, "NULL"))?;
                }
            }
        }
    }
    Ok(())
}

/// Prints a boxed table with a header row.
pub fn print_table(
    out: &mut dyn Write,
    header: &[&str],
    rows: impl Iterator<Item = Vec<String>>,
) -> Result<()> {
    let mut table = Table::new();
    table
        .load_style(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.to_vec());
    for row in rows {
        table.add_row(row);
    }
    writeln!(out, "{table}")?;
    Ok(())
}

/// A value as a CSV field: NULL empty, blobs base64.
pub fn csv_field(value: &Value) -> String {
    match value {
        Value::Blob(b) => base64_encode(b),
        other => cell(other, ""),
    }
}

/// Maps a CSV error into a PluresDB error.
pub fn csv_error(err: csv::Error) -> pluresdb_core::Error {
    pluresdb_core::Error::invalid(format!("CSV: {err}"))
}

/// Prints any serializable value as pretty JSON.
pub fn print_json(out: &mut dyn Write, value: &impl serde::Serialize) -> Result<()> {
    writeln!(out, "{}", serde_json::to_string_pretty(value)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::format_real;

    #[test]
    fn reals_always_read_as_reals() {
        for (value, text) in [
            (3.0, "3.0"),
            (-0.5, "-0.5"),
            (0.0, "0.0"),
            (0.30000000000000004, "0.30000000000000004"),
            (123456789012345.6, "123456789012345.6"),
            (1e15, "1.0e+15"),
            (1e20, "1.0e+20"),
            (-1.5e300, "-1.5e+300"),
            (1e-7, "1.0e-07"),
            (2.5e-300, "2.5e-300"),
            (0.0001, "0.0001"),
            (f64::INFINITY, "Inf"),
            (f64::NEG_INFINITY, "-Inf"),
        ] {
            assert_eq!(format_real(value), text, "{value:?}");
        }
    }
}
