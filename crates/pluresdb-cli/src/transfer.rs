//! `import` and `export`: JSONL and CSV, into and out of tables or nodes, in one transaction.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use pluresdb_core::crash_point::crash_point;
use pluresdb_core::{Database, Error, Node, Result, Value, strict_json};
use serde_json::{Map, Value as Json};

use crate::csv_quotes::QuoteWatch;
use crate::output::{csv_error, csv_field};

/// File formats for import and export.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line.
    Jsonl,
    /// Comma-separated values with a header row.
    Csv,
}

impl Format {
    /// Guesses from the file extension (`.csv` is CSV, anything else JSONL).
    pub fn guess(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("csv") => Format::Csv,
            _ => Format::Jsonl,
        }
    }
}

/// Where imported records go.
pub enum Target<'a> {
    /// Rows of a table (created with the file's columns when missing).
    Table(&'a str),
    /// Nodes: `{"id", "type"?, "data"?, "vector"?}` or flat objects with an `id` field.
    Nodes,
    /// Edges between existing nodes: `{"from_id", "relation", "to_id", "data"?}`.
    Edges,
}

/// Counts of what an import did.
#[derive(Debug, Default, serde::Serialize)]
pub struct ImportReport {
    /// Records read.
    pub records: u64,
}

/// Quotes an SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn progress(path: &Path) -> ProgressBar {
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    // Small files finish before a bar would be useful; indicatif hides itself off a terminal.
    if len < 8 << 20 {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} importing {bar:40} {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)",
    ) {
        bar.set_style(style);
    }
    bar
}

/// Counts bytes read for the progress bar.
struct Counting<R> {
    inner: R,
    bar: ProgressBar,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

/// Opens a file to read, naming it in errors; a directory is refused here (opening one
/// succeeds, and the first read would fail with a bare "Is a directory").
pub fn open_input(path: &Path) -> Result<File> {
    let named =
        |e: std::io::Error| Error::from(e).context(format!("cannot read {}", path.display()));
    let file = File::open(path).map_err(named)?;
    if file.metadata().map_err(named)?.is_dir() {
        return Err(Error::invalid(format!(
            "cannot read {}: it is a directory",
            path.display()
        )));
    }
    Ok(file)
}

/// Imports `path` into `target` in one transaction: on any bad record nothing is imported
/// and the error names the line.
pub fn import(
    db: &Database,
    path: &Path,
    format: Format,
    target: Target<'_>,
) -> Result<ImportReport> {
    let file = open_input(path)?;
    let bar = progress(path);
    let reader = BufReader::new(Counting {
        inner: file,
        bar: bar.clone(),
    });
    let result = db.transaction(|tx| match format {
        Format::Jsonl => import_jsonl(tx, reader, &target),
        Format::Csv => import_csv(tx, reader, &target),
    });
    bar.finish_and_clear();
    result
}

/// Reads JSONL line by line as bytes, so a UTF-8 error names its line; a leading UTF-8 BOM
/// is skipped.
fn import_jsonl(
    db: &Database,
    mut reader: impl BufRead,
    target: &Target<'_>,
) -> Result<ImportReport> {
    let mut report = ImportReport::default();
    let mut table = TableWriter::default();
    let mut nodes = Batched::<NodeRecord>::default();
    let mut edges = Batched::<EdgeRecord>::default();
    let mut buf = Vec::new();
    for line_no in 1.. {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        let at = |e: Error| e.context(format!("line {line_no}"));
        let mut bytes = buf.as_slice();
        if line_no == 1 {
            bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        }
        let line = std::str::from_utf8(bytes).map_err(|e| {
            at(Error::invalid(format!(
                "not valid UTF-8 ({e}); save the file as UTF-8"
            )))
        })?;
        let line = line.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() {
            continue;
        }
        let record = strict_json::parse(line).map_err(|e| json_error(e, line_no))?;
        let Json::Object(object) = record else {
            return Err(at(Error::invalid("each line must be a JSON object")));
        };
        match target {
            Target::Table(name) => table.insert(db, name, &object).map_err(at)?,
            Target::Nodes => nodes.push(db, line_no as u64, read_node_record(object))?,
            Target::Edges => edges.push(db, line_no as u64, read_edge_record(object))?,
        }
        report.records += 1;
    }
    nodes.flush(db)?;
    edges.flush(db)?;
    Ok(report)
}

/// A JSON error on JSONL line `line_no`, its position said once ("line 4, column 9: invalid
/// JSON: expected value"; serde_json's message ends with its own position in the line).
fn json_error(err: serde_json::Error, line_no: usize) -> Error {
    let at = match err.line() {
        0 => format!("line {line_no}"),
        _ => format!("line {line_no}, column {}", err.column()),
    };
    json_message(&err).context(at)
}

/// A JSON error without serde_json's position (the caller says where); a repeated key is
/// valid JSON, so it is not called invalid.
fn json_message(err: &serde_json::Error) -> Error {
    let text = err.to_string();
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    let message = text.strip_suffix(&suffix).unwrap_or(&text);
    let invalid = if err.is_data() { "" } else { "invalid JSON: " };
    Error::invalid(format!("{invalid}{message}"))
}

/// A CSV reading error, its position said once ("line 3: ..."; the csv crate's message
/// repeats it). `headers` names the columns, when read.
fn csv_read_error(err: csv::Error, headers: &[String]) -> Error {
    let at = err.position().map(|p| format!("line {}", p.line()));
    let error = match err.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => Error::invalid(format!(
            "the record has {len} field{} but the header has {expected_len}; give every record \
             as many fields as the header (quote a field that contains a comma)",
            if *len == 1 { "" } else { "s" }
        )),
        csv::ErrorKind::Utf8 { err: utf8, .. } => {
            let field = match headers.get(utf8.field()) {
                Some(name) => format!("column {name:?}"),
                None => format!("field {}", utf8.field() + 1),
            };
            Error::invalid(format!(
                "{field} is not valid UTF-8; save the file as UTF-8"
            ))
        }
        _ => return csv_error(err),
    };
    match at {
        Some(at) => error.context(at),
        None => error,
    }
}

/// `read`'s result, unless the CSV file ended inside a quoted field: that is the error then,
/// naming the line the field starts on (the csv crate would read the rest of the file into
/// it without a word). `headers` names the columns, when read.
fn checked_read<T, R: Read>(
    csv: &csv::Reader<QuoteWatch<R>>,
    read: csv::Result<T>,
    headers: &[String],
) -> Result<T> {
    if let Some(line) = csv.get_ref().unclosed_quote() {
        return Err(Error::invalid(
            "a quoted field starts on this line and its quote is never closed (the file ends \
             inside it); add the closing '\"', or double each '\"' that is part of the value",
        )
        .context(format!("line {line}")));
    }
    read.map_err(|e| csv_read_error(e, headers))
}

fn import_csv(db: &Database, reader: impl Read, target: &Target<'_>) -> Result<ImportReport> {
    let mut report = ImportReport::default();
    let mut csv = csv::ReaderBuilder::new()
        .flexible(false)
        .from_reader(QuoteWatch::new(reader));
    let read = csv.headers().cloned();
    let headers: Vec<String> = checked_read(&csv, read, &[])?
        .iter()
        .map(str::to_owned)
        .collect();
    if headers.is_empty() || headers.iter().any(String::is_empty) {
        return Err(Error::invalid("the CSV header row must name every column"));
    }
    for (i, h) in headers.iter().enumerate() {
        if headers[..i].contains(h) {
            return Err(Error::invalid(format!(
                "the CSV header names column {h:?} twice; rename one so each column has its own name"
            )));
        }
    }
    let mut table = TableWriter::default();
    let mut nodes = Batched::<NodeRecord>::default();
    let mut edges = Batched::<EdgeRecord>::default();
    let mut record = csv::StringRecord::new();
    loop {
        let read = csv.read_record(&mut record);
        if !checked_read(&csv, read, &headers)? {
            break;
        }
        // The line the record starts on (quoted fields may span lines).
        let at = |e: Error| match record.position() {
            Some(p) => e.context(format!("line {}", p.line())),
            None => e,
        };
        let object: Map<String, Json> = headers
            .iter()
            .zip(record.iter())
            .map(|(h, v)| (h.clone(), Json::String(v.to_owned())))
            .collect();
        match target {
            Target::Table(name) => table.insert(db, name, &object).map_err(at)?,
            Target::Nodes | Target::Edges => {
                let line = record.position().map_or(0, csv::Position::line);
                match target {
                    Target::Nodes => nodes.push(db, line, read_node_record(object))?,
                    _ => edges.push(db, line, read_edge_record(object))?,
                }
            }
        }
        report.records += 1;
    }
    nodes.flush(db)?;
    edges.flush(db)?;
    Ok(report)
}

/// Inserts objects as rows, creating the table from the first record when it is missing.
#[derive(Default)]
struct TableWriter {
    checked: bool,
}

impl TableWriter {
    fn insert(&mut self, db: &Database, table: &str, object: &Map<String, Json>) -> Result<()> {
        if object.is_empty() {
            return Err(Error::invalid("the record has no fields"));
        }
        if !self.checked {
            let exists = db
                .get(
                    "SELECT 1 FROM sqlite_schema WHERE type IN ('table', 'view') AND name = ?",
                    (table,),
                )?
                .is_some();
            if !exists {
                // Like sqlite3's .import: untyped columns named by the first record.
                let cols: Vec<String> = object.keys().map(|k| quote_ident(k)).collect();
                db.exec(&format!(
                    "CREATE TABLE {}({})",
                    quote_ident(table),
                    cols.join(", ")
                ))?;
            }
            self.checked = true;
        }
        let cols: Vec<String> = object.keys().map(|k| quote_ident(k)).collect();
        let marks: Vec<String> = (1..=object.len()).map(|i| format!("?{i}")).collect();
        let sql = format!(
            "INSERT INTO {} ({}) VALUES ({})",
            quote_ident(table),
            cols.join(", "),
            marks.join(", ")
        );
        let values: Vec<Value> = object
            .values()
            .map(Value::from_json)
            .collect::<Result<_>>()?;
        db.run(&sql, values)?;
        Ok(())
    }
}

/// A graph record an import writes: many at once, or one (to name the one refused).
trait GraphRecord: Sized {
    /// Writes `records` together (nothing of them when one is refused).
    fn write_all(db: &Database, records: &[(u64, Self)]) -> Result<()>;
    /// Writes this record alone.
    fn write_one(&self, db: &Database) -> Result<()>;
}

/// Graph records read and not written yet, each with the line it starts on: written together
/// (several times faster than one by one) every [`BATCH`] records and at the end.
struct Batched<R> {
    records: Vec<(u64, R)>,
}

impl<R> Default for Batched<R> {
    fn default() -> Self {
        Batched {
            records: Vec::new(),
        }
    }
}

/// Graph records written together by [`Batched`].
const BATCH: usize = 10_000;

impl<R: GraphRecord> Batched<R> {
    /// Adds `record` (read from line `line`), and writes the records read so far when they
    /// are a batch.
    fn push(&mut self, db: &Database, line: u64, record: Result<R>) -> Result<()> {
        let record = record.map_err(|e| e.context(format!("line {line}")))?;
        self.records.push((line, record));
        if self.records.len() >= BATCH {
            self.flush(db)?;
        }
        Ok(())
    }

    /// Writes the records read so far.
    fn flush(&mut self, db: &Database) -> Result<()> {
        if let Err(err) = R::write_all(db, &self.records) {
            // Nothing of the batch was written: write it one by one to name the record at
            // fault by its line.
            for (line, r) in &self.records {
                r.write_one(db)
                    .map_err(|e| e.context(format!("line {line}")))?;
            }
            return Err(err);
        }
        self.records.clear();
        Ok(())
    }
}

impl GraphRecord for NodeRecord {
    fn write_all(db: &Database, records: &[(u64, Self)]) -> Result<()> {
        db.update_nodes(records.iter().map(|(_, r)| (r.id.as_str(), r.update())))
            .map(drop)
    }

    fn write_one(&self, db: &Database) -> Result<()> {
        db.update_node(&self.id, self.update()).map(drop)
    }
}

impl GraphRecord for EdgeRecord {
    fn write_all(db: &Database, records: &[(u64, Self)]) -> Result<()> {
        let edges = records.iter().map(|(_, r)| {
            (
                r.from.as_str(),
                r.relation.as_str(),
                r.to.as_str(),
                r.data.as_ref(),
            )
        });
        db.link_many(edges).map(drop)
    }

    fn write_one(&self, db: &Database) -> Result<()> {
        db.link(&self.from, &self.relation, &self.to, self.data.as_ref())
            .map(drop)
    }
}

/// An edge as an import record gives it: its data replaces the edge's when given.
struct EdgeRecord {
    from: String,
    relation: String,
    to: String,
    data: Option<Json>,
}

/// An edge record: `{"from_id", "relation", "to_id", "data"?}` as exported (`data` an object,
/// or from CSV JSON text of one; empty or null: the edge keeps its data).
fn read_edge_record(mut object: Map<String, Json>) -> Result<EdgeRecord> {
    // (An edge as `link --json` and `edges --json` print it is taken too: `from`, `to`, and
    // times, which the link sets anew.)
    for time in ["created_at", "updated_at"] {
        object.remove(time);
    }
    for (short, long) in [("from", "from_id"), ("to", "to_id")] {
        if !object.contains_key(long)
            && let Some(v) = object.remove(short)
        {
            object.insert(long.to_owned(), v);
        }
    }
    let mut text = |key: &str| match object.remove(key) {
        Some(Json::String(s)) => Ok(s),
        Some(Json::Number(n)) => Ok(n.to_string()),
        Some(_) => Err(Error::invalid(format!(
            "the {key:?} field must be a string or a number"
        ))),
        None => Err(Error::invalid(format!(
            "the record has no {key:?} field (an edge record has \"from_id\", \"relation\", \
             \"to_id\" and, optionally, \"data\")"
        ))),
    };
    let (from, relation, to) = (text("from_id")?, text("relation")?, text("to_id")?);
    let data = match object.remove("data") {
        None | Some(Json::Null) => None,
        Some(Json::String(t)) if t.is_empty() => None,
        Some(Json::String(t)) => match parse_data_text(&t)? {
            Some(parsed @ Json::Object(_)) => Some(parsed),
            _ => return Err(Error::invalid("the \"data\" field must be a JSON object")),
        },
        Some(other @ Json::Object(_)) => Some(other),
        Some(_) => return Err(Error::invalid("the \"data\" field must be a JSON object")),
    };
    if let Some(key) = object.keys().next() {
        return Err(Error::invalid(format!(
            "unknown field {key:?}: an edge record has \"from_id\", \"relation\", \"to_id\" \
             and, optionally, \"data\""
        )));
    }
    Ok(EdgeRecord {
        from,
        relation,
        to,
        data,
    })
}

/// A node as an import record gives it: it replaces the node's data, and sets its type and
/// vector when given.
struct NodeRecord {
    id: String,
    data: Json,
    node_type: Option<String>,
    vector: Option<Vec<f32>>,
}

impl NodeRecord {
    fn update(&self) -> pluresdb_core::NodeUpdate<'_> {
        pluresdb_core::NodeUpdate {
            data: Some(&self.data),
            replace: true,
            node_type: self.node_type.as_deref().map(Some),
            vector: self.vector.as_deref().map(Some),
            must_exist: false,
        }
    }
}

/// A node record: `{"id", "type", "data", "vector"}` as exported, or a flat object whose
/// `id` field names the node and whose other fields are its data. A record is read as an
/// export record only when `data` is an object (or, from CSV, JSON text of one) and it has
/// no other keys; otherwise it is flat, so no field is dropped.
fn read_node_record(mut object: Map<String, Json>) -> Result<NodeRecord> {
    let id = match object.remove("id") {
        Some(Json::String(s)) => s,
        Some(Json::Number(n)) => n.to_string(),
        Some(_) => {
            return Err(Error::invalid(
                "the \"id\" field must be a string or a number",
            ));
        }
        None => return Err(Error::invalid("the record has no \"id\" field")),
    };
    let export_keys = object
        .keys()
        .all(|k| matches!(k.as_str(), "type" | "data" | "vector"));
    // CSV exports carry data as JSON text, read as JSONL is: a repeated key is refused.
    if export_keys
        && let Some(Json::String(text)) = object.get("data")
        && let Some(parsed @ Json::Object(_)) = parse_data_text(text)?
    {
        object.insert("data".into(), parsed);
        if object.get("type").is_some_and(|t| t == "") {
            object.insert("type".into(), Json::Null);
        }
    }
    let exported = export_keys && matches!(object.get("data"), Some(Json::Object(_)));
    let (data, node_type, vector) = if exported {
        let data = object.remove("data").unwrap_or_default();
        let node_type = match object.remove("type") {
            Some(Json::String(t)) => Some(t),
            Some(Json::Null) | None => None,
            Some(_) => return Err(Error::invalid("the \"type\" field must be a string")),
        };
        let vector = match object.remove("vector") {
            Some(Json::Array(items)) => Some(
                items
                    .iter()
                    .map(|v| v.as_f64().map(|f| f as f32))
                    .collect::<Option<Vec<f32>>>()
                    .ok_or_else(|| Error::invalid("\"vector\" must be an array of numbers"))?,
            ),
            Some(Json::Null) | None => None,
            Some(_) => return Err(Error::invalid("\"vector\" must be an array of numbers")),
        };
        (data, node_type, vector)
    } else {
        (Json::Object(object), None, None)
    };
    Ok(NodeRecord {
        id,
        data,
        node_type,
        vector,
    })
}

/// The JSON value of `data` given as text (from CSV), `None` when the text is not JSON (it
/// is then a field of a flat record); an error when it is JSON naming a key twice in an object.
fn parse_data_text(text: &str) -> Result<Option<Json>> {
    match strict_json::parse(text) {
        Ok(value) => Ok(Some(value)),
        Err(e) if e.is_data() => Err(json_message(&e).context("the \"data\" field")),
        Err(_) => Ok(None),
    }
}

/// What to export.
pub enum Source<'a> {
    /// A table or view.
    Table(&'a str),
    /// Any query.
    Query(&'a str),
    /// All nodes.
    Nodes,
    /// All edges.
    Edges,
}

/// Rows an export writes before its crash point `export:midway` (for tests that kill it).
const CRASH_AFTER_ROWS: u64 = 1000;

/// Counts a row an export wrote (and passes its crash point at [`CRASH_AFTER_ROWS`]).
fn row_written(count: &mut u64) {
    *count += 1;
    if *count == CRASH_AFTER_ROWS {
        crash_point("export:midway");
    }
}

/// Streams `source` to `out` in `format`; returns the number of records written.
pub fn export(
    db: &Database,
    source: Source<'_>,
    format: Format,
    out: &mut dyn Write,
) -> Result<u64> {
    if let Source::Nodes = source {
        return export_nodes(db, format, out);
    }
    let sql = match source {
        Source::Table(t) => format!("SELECT * FROM {}", quote_ident(t)),
        Source::Query(q) => q.to_owned(),
        Source::Edges => "SELECT from_id, relation, to_id, data FROM pluresdb_edges ORDER BY from_id, relation, to_id".to_owned(),
        Source::Nodes => unreachable!("handled above"),
    };
    let rows = db.iterate(&sql, ())?;
    let names: Vec<String> = rows.columns().iter().map(|c| c.name.clone()).collect();
    let mut count = 0;
    match format {
        Format::Jsonl => {
            let edges = matches!(source, Source::Edges);
            for row in rows {
                let mut record = row?.to_json();
                // An edge's data as the object it is (as nodes export theirs).
                if edges
                    && let Some(data) = record.get_mut("data")
                    && let Json::String(text) = data
                {
                    *data = strict_json::parse(text).map_err(|e| json_message(&e))?;
                }
                serde_json::to_writer(&mut *out, &record)?;
                writeln!(out)?;
                row_written(&mut count);
            }
        }
        Format::Csv => {
            let mut writer = csv::Writer::from_writer(out);
            let mut header_written = false;
            for row in rows {
                let row = row?;
                if !header_written {
                    writer
                        .write_record(row.columns().names())
                        .map_err(csv_error)?;
                    header_written = true;
                }
                writer
                    .write_record(row.values().iter().map(csv_field))
                    .map_err(csv_error)?;
                row_written(&mut count);
            }
            if !header_written && !names.is_empty() {
                writer.write_record(&names).map_err(csv_error)?;
            }
            writer.flush()?;
        }
    }
    Ok(count)
}

fn export_nodes(db: &Database, format: Format, out: &mut dyn Write) -> Result<u64> {
    let mut count = 0;
    let nodes = db.iterate_nodes(&pluresdb_core::NodeQuery::new())?;
    match format {
        Format::Jsonl => {
            for node in nodes {
                serde_json::to_writer(&mut *out, &node_record(&node?)?)?;
                writeln!(out)?;
                count += 1;
            }
        }
        Format::Csv => {
            let mut writer = csv::Writer::from_writer(out);
            writer
                .write_record(["id", "type", "data"])
                .map_err(csv_error)?;
            for node in nodes {
                let node = node?;
                writer
                    .write_record([
                        node.id.as_str(),
                        node.node_type.as_deref().unwrap_or(""),
                        &Json::Object(node.data).to_string(),
                    ])
                    .map_err(csv_error)?;
                count += 1;
            }
            writer.flush()?;
        }
    }
    Ok(count)
}

/// A node as an export record: `{"id", "type", "data", "vector"?}`.
pub fn node_record(node: &Node) -> Result<Json> {
    let mut record = Map::new();
    record.insert("id".into(), Json::String(node.id.clone()));
    record.insert(
        "type".into(),
        node.node_type.clone().map_or(Json::Null, Json::String),
    );
    record.insert("data".into(), Json::Object(node.data.clone()));
    if let Some(v) = &node.vector {
        record.insert("vector".into(), serde_json::to_value(v)?);
    }
    Ok(Json::Object(record))
}
