//! The `pluresdb` command: SQL, nodes and edges, import/export, checks and backups.

// The commands' doc comments are their `--help` text, written for the terminal: `FROM
// -[RELATION]-> TO` is not a link.
#![allow(rustdoc::broken_intra_doc_links)]

mod csv_quotes;
mod graph_cmd;
mod model;
mod output;
mod output_file;
mod search_cmd;
mod shell;
mod sync_cmd;
mod transfer;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pluresdb_core::{
    CompareOp, Database, Direction, Error, NodeQuery, NodeUpdate, OpenOptions, Result, strict_json,
};
use serde_json::Value as Json;

use output::{Mode, print_json, print_rows, print_table};
use transfer::{Format, Source, Target};

/// PluresDB: a local-first database with SQLite SQL, a graph of JSON nodes, and sync.
#[derive(Parser, Debug)]
#[command(name = "pluresdb", version, about, long_about = None)]
struct Cli {
    /// Database file.
    #[arg(
        long,
        global = true,
        env = "PLURESDB_DB",
        default_value = "pluresdb.db"
    )]
    db: PathBuf,
    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    json: bool,
    /// Open the database read-only.
    #[arg(long, global = true)]
    read_only: bool,
    /// How long to wait, in milliseconds, for another process's write to finish before
    /// failing with "database is locked" (default 5000).
    #[arg(long, global = true, env = "PLURESDB_BUSY_TIMEOUT", value_name = "MS")]
    busy_timeout: Option<u64>,
    /// Directory of the embedding model (all-MiniLM-L6-v2: config.json, tokenizer.json,
    /// model.safetensors) for text searches and embedded columns.
    #[arg(long, global = true, env = "PLURESDB_MODEL_DIR")]
    model: Option<PathBuf>,
    /// Output mode of `sql`: table, json, csv or line (before or after the command).
    #[arg(long, global = true)]
    mode: Option<Mode>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run SQL (several statements allowed; prints the rows of the last). Reads stdin when
    /// SQL is omitted.
    #[command(alias = "query")]
    Sql {
        /// The SQL text.
        sql: Option<String>,
        /// Parameters for a single statement, as a JSON array or object.
        #[arg(long)]
        params: Option<String>,
    },
    /// Interactive SQL shell (sqlite3-style dot commands; .help lists them).
    Shell,
    /// Create a node or merge fields into it.
    Put {
        /// Node id.
        id: String,
        /// A JSON object ("-" reads stdin).
        #[arg(value_name = "JSON")]
        data: String,
        /// Set the node's type.
        #[arg(long = "type")]
        node_type: Option<String>,
        /// Replace all fields instead of merging.
        #[arg(long)]
        replace: bool,
        /// Set the node's vector, for `search nodes` (a JSON array of numbers; `null` clears
        /// it). A `"vector"` field in the JSON is an ordinary field.
        #[arg(long, value_name = "JSON_ARRAY")]
        vector: Option<String>,
    },
    /// Print a node.
    Get {
        /// Node id.
        id: String,
    },
    /// Delete a node and its edges.
    Delete {
        /// Node id.
        id: String,
    },
    /// List nodes, optionally by id prefix, type and field conditions.
    List {
        /// Only ids starting with this prefix.
        prefix: Option<String>,
        #[command(flatten)]
        filter: NodeFilter,
    },
    /// Link FROM -[RELATION]-> TO, with optional JSON data.
    Link {
        /// Source node id.
        from: String,
        /// Relation name.
        relation: String,
        /// Target node id.
        to: String,
        /// Edge data as a JSON object.
        #[arg(value_name = "JSON")]
        data: Option<String>,
    },
    /// Remove the edge FROM -[RELATION]-> TO.
    Unlink {
        /// Source node id.
        from: String,
        /// Relation name.
        relation: String,
        /// Target node id.
        to: String,
    },
    /// List a node's edges.
    Edges {
        /// Node id.
        id: String,
        /// out, in or both.
        #[arg(long, default_value = "both")]
        direction: Direction,
        /// Only this relation.
        #[arg(long)]
        relation: Option<String>,
    },
    /// Import JSONL or CSV into a table or into nodes (one transaction: all or nothing).
    Import {
        /// The file to read.
        file: PathBuf,
        /// Target table (created from the file's columns when missing).
        #[arg(long, conflicts_with_all = ["nodes", "edges"], required_unless_present_any = ["nodes", "edges"])]
        table: Option<String>,
        /// Import nodes instead: {"id", "type", "data", "vector"} or flat objects with "id".
        #[arg(long, conflicts_with = "edges")]
        nodes: bool,
        /// Import edges instead (between existing nodes): {"from_id", "relation", "to_id",
        /// "data"}, as `export --edges` writes them.
        #[arg(long)]
        edges: bool,
        /// File format (default: by extension, .csv is CSV, otherwise JSONL).
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
    /// Export a table, a query, the nodes or the edges as JSONL or CSV (JSONL round-trips
    /// exactly; CSV is text only: NULL is empty, blobs are base64).
    Export {
        /// A table or view.
        #[arg(long, group = "source")]
        table: Option<String>,
        /// Any query.
        #[arg(long, group = "source")]
        query: Option<String>,
        /// All nodes.
        #[arg(long, group = "source")]
        nodes: bool,
        /// All edges.
        #[arg(long, group = "source")]
        edges: bool,
        /// Output format.
        #[arg(long, value_enum, default_value = "jsonl")]
        format: Format,
        /// Output file (default: standard output).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Check the database's integrity (exit status 1 when damaged).
    Check,
    /// Write the changes another device lacks to a file (sync without a network).
    Changes {
        /// What the other device has: its version vector (`pluresdb sync --status` there);
        /// empty means everything.
        #[arg(long, default_value = "")]
        since: String,
        /// The other device's site id (`pluresdb sync --status` there): its own changes, and
        /// those it sent here, are left out.
        #[arg(long = "for", value_name = "SITE")]
        reader: Option<String>,
        /// Output file (default: standard output, which must be redirected).
        #[arg(short, long)]
        output: Option<PathBuf>,
        #[command(flatten)]
        limit: sync_cmd::MessageLimit,
    },
    /// Apply a change file written by `pluresdb changes` on another device.
    Apply {
        /// The change file.
        file: PathBuf,
        #[command(flatten)]
        limit: sync_cmd::MessageLimit,
    },
    /// Serve sync over WebSocket until interrupted.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:34569")]
        listen: String,
        /// Sessions served at once; more connections wait until one ends.
        #[arg(long, default_value_t = 64)]
        max_sessions: usize,
        #[command(flatten)]
        limit: sync_cmd::MessageLimit,
    },
    /// Two-way sync with a `pluresdb serve` at URL (ws://host:port); --status shows peers.
    Sync {
        /// The server, as ws://host:port.
        #[arg(required_unless_present = "status")]
        url: Option<String>,
        /// Keep syncing live changes until interrupted (Ctrl-C), connecting again whenever
        /// the connection ends.
        #[arg(long)]
        watch: bool,
        /// Show this database's version vector and its peers instead of syncing.
        #[arg(long)]
        status: bool,
        #[command(flatten)]
        limit: sync_cmd::MessageLimit,
    },
    /// Print the recorded versions of a node (oldest first).
    History {
        /// Node id.
        id: String,
    },
    /// Nearest rows or nodes to a vector (`[0.1, ...]`) or a text (embedded by the model):
    /// `pluresdb search docs.embedding "red car"`, `pluresdb search nodes "[0.1, 0.2]"`.
    Search {
        /// `nodes`, a table with one vector index, or `table.column`.
        collection: String,
        /// A JSON array of numbers, or text to embed.
        query: String,
        /// How many results.
        #[arg(short, long, default_value_t = 10)]
        k: usize,
        /// Only rows matching this SQL condition on the table (`year > 2020`).
        #[arg(long)]
        filter: Option<String>,
        /// Only nodes of this type.
        #[arg(long = "type")]
        node_type: Option<String>,
        /// Search breadth (higher: better recall, slower).
        #[arg(long)]
        ef: Option<usize>,
        /// Compare with every vector instead of using the index.
        #[arg(long)]
        exact: bool,
        /// Fuse full-text (bm25) and vector results; needs a text index (see text-index).
        #[arg(long)]
        hybrid: bool,
    },
    /// Create a vector index (`pluresdb vector-index docs embedding --metric cosine`), list
    /// them (no arguments), or drop one (`--drop`).
    VectorIndex {
        /// The table (`nodes` for node vectors).
        table: Option<String>,
        /// The column holding vectors (f32 BLOBs or JSON arrays).
        column: Option<String>,
        /// cosine (default), l2 or ip.
        #[arg(long)]
        metric: Option<String>,
        /// The dimension (default: taken from the first vector).
        #[arg(long)]
        dim: Option<usize>,
        /// HNSW links per node (default 16).
        #[arg(long)]
        m: Option<usize>,
        /// Build breadth (default 200).
        #[arg(long)]
        ef_construction: Option<usize>,
        /// Default search breadth (default 64).
        #[arg(long)]
        ef_search: Option<usize>,
        /// Fill the column by embedding this text column on every insert and update.
        #[arg(long)]
        embed_from: Option<String>,
        /// Drop the index instead.
        #[arg(long)]
        drop: bool,
    },
    /// Create a full-text index (FTS5) over text columns, for `search --hybrid`, or drop one
    /// (`--drop`).
    TextIndex {
        /// The table (`nodes` indexes node data).
        table: String,
        /// Text columns.
        columns: Vec<String>,
        /// Drop the table's text index instead.
        #[arg(long, conflicts_with = "columns")]
        drop: bool,
    },
    /// Walk the graph breadth-first from one or more nodes: `pluresdb traverse ada --relation
    /// knows --max-depth 3`.
    Traverse {
        /// Start node ids.
        #[arg(required = true)]
        starts: Vec<String>,
        /// Follow only this relation (repeat for several; default any).
        #[arg(long = "relation", short = 'r')]
        relations: Vec<String>,
        /// out, in or both.
        #[arg(long, default_value = "out")]
        direction: Direction,
        /// Nearest depth to return (0 includes the starts).
        #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
        min_depth: i64,
        /// Farthest depth to walk (`--depth` is the same).
        #[arg(
            long,
            visible_alias = "depth",
            default_value_t = 3,
            allow_negative_numbers = true
        )]
        max_depth: i64,
        #[command(flatten)]
        filter: NodeFilter,
    },
    /// The shortest path between two nodes (fewest hops, or least total --weight).
    Path {
        /// From this node.
        from: String,
        /// To this node.
        to: String,
        /// Follow only this relation (repeat for several).
        #[arg(long = "relation", short = 'r')]
        relations: Vec<String>,
        /// out, in or both.
        #[arg(long, default_value = "out")]
        direction: Direction,
        /// Minimize the sum of this numeric edge field.
        #[arg(long)]
        weight: Option<String>,
    },
    /// Graph algorithms: components, pagerank, centrality.
    Graph {
        /// Which algorithm.
        #[arg(value_enum)]
        algorithm: graph_cmd::Algorithm,
        /// Only edges of this relation (repeat for several).
        #[arg(long = "relation", short = 'r')]
        relations: Vec<String>,
        /// For centrality: out, in or both.
        #[arg(long, default_value = "both")]
        direction: Direction,
        /// How many results to print.
        #[arg(long, default_value_t = 20)]
        top: usize,
    },
    /// Run a Cypher query: `pluresdb cypher "MATCH (a:Person)-[:KNOWS]->(b) RETURN b.name"`.
    Cypher {
        /// The query ("-" or nothing reads stdin).
        query: Option<String>,
        /// Parameters as a JSON object (`{"name": "Ada"}` for `$name`).
        #[arg(long)]
        params: Option<String>,
    },
    /// Write a consistent copy of the database to a new file.
    Backup {
        /// Destination file (must not exist).
        dest: PathBuf,
    },
    /// Give the database a new site id, after restoring it from a backup or copying its file:
    /// it then syncs as a new device and keeps its changes (close other programs using it)
    RenewSiteId,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let read_only = cli.read_only;
    match run(cli) {
        Ok(code) => code,
        // The reader of standard output went away (`| head`): stop quietly, as sqlite3 does.
        Err(_) if output::stdout_closed() => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            if e.kind() == pluresdb_core::ErrorKind::ReadOnly {
                eprintln!(
                    "{}",
                    match read_only {
                        true => "(the database was opened with --read-only; leave it out to write)",
                        false =>
                            "(the database file, or its folder, cannot be written by this user: \
                             check their permissions and owner, or pass --read-only to read it)",
                    }
                );
            }
            if waiting_longer_helps(&e) {
                eprintln!("{BUSY_HINT}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Whether `e` is a lock that a longer busy timeout would have waited out (a transaction
/// that read before another process wrote cannot write, however long it waits).
pub fn waiting_longer_helps(e: &Error) -> bool {
    e.kind() == pluresdb_core::ErrorKind::Busy && !e.is_stale_snapshot()
}

/// Printed after a "database is locked" error: how to wait longer from the command line.
pub const BUSY_HINT: &str = "(another process held the database; pass --busy-timeout MS, or set PLURESDB_BUSY_TIMEOUT, to wait longer)";

/// [`open`], for commands that only read: a database that is not there is an error (a
/// mistyped `--db` would otherwise create an empty one and report on it).
/// Refuses `--read-only` for a command that writes (`why` says what it writes).
fn writable(cli: &Cli, why: &str) -> Result<()> {
    if cli.read_only {
        return Err(Error::invalid(format!("{why}; leave out --read-only")));
    }
    Ok(())
}

fn open_existing(cli: &Cli) -> Result<Database> {
    // (An error asking is left to the open, which says what it is.)
    if matches!(cli.db.try_exists(), Ok(false)) {
        return Err(Error::new(
            pluresdb_core::ErrorKind::NotFound,
            format!(
                "there is no database at {}: this command reads one and does not create it; \
                 check the path (--db, or PLURESDB_DB)",
                cli.db.display()
            ),
        ));
    }
    open(cli)
}

fn open(cli: &Cli) -> Result<Database> {
    let mut options = OpenOptions::new().read_only(cli.read_only);
    if let Some(ms) = cli.busy_timeout {
        options = options.busy_timeout(std::time::Duration::from_millis(ms));
    }
    let db = options.open(&cli.db)?;
    if let Some(dir) = cli.model.as_ref().filter(|d| !d.as_os_str().is_empty()) {
        db.set_embedder(Some(std::sync::Arc::new(model::LazyModel::new(
            dir.clone(),
        ))));
    }
    Ok(db)
}

/// The JSON of a command-line argument (`-`: read from stdin); `what` names the argument.
fn parse_json(what: &str, text: &str) -> Result<Json> {
    let text = if text == "-" {
        let mut buf = String::new();
        std::io::stdin().read_to_string(&mut buf)?;
        buf
    } else {
        text.to_owned()
    };
    // As imports read JSON: an object naming a key twice is refused, not cut to its last.
    strict_json::parse(&text).map_err(|e| match e.is_data() {
        true => Error::invalid(format!("{what}: {e}")),
        false => Error::invalid(format!("{what} is not valid JSON: {e}")),
    })
}

/// Which nodes to return: `--type`, `--where` conditions and `--limit`.
#[derive(clap::Args, Debug)]
struct NodeFilter {
    /// Only nodes of this type.
    #[arg(long = "type")]
    node_type: Option<String>,
    /// Field conditions such as name=Ada or age>30 (JSON values allowed; repeatable).
    #[arg(long = "where")]
    conditions: Vec<String>,
    /// At most this many nodes.
    #[arg(long)]
    limit: Option<usize>,
}

impl NodeFilter {
    /// The type and field conditions as a node query (the limit is the caller's).
    fn query(&self) -> Result<NodeQuery> {
        let mut query = NodeQuery::new();
        if let Some(t) = &self.node_type {
            query = query.of_type(t);
        }
        for c in &self.conditions {
            let (field, op, value) = parse_condition(c)?;
            query = query.where_field(field, op, value);
        }
        Ok(query)
    }
}

/// Parses `field=value`, `field>=value` and the like; the value is JSON when it parses.
fn parse_condition(text: &str) -> Result<(String, CompareOp, Json)> {
    for op in [">=", "<=", "!=", "=", ">", "<"] {
        if let Some((field, value)) = text.split_once(op) {
            if field.is_empty() {
                break;
            }
            let value =
                serde_json::from_str(value).unwrap_or_else(|_| Json::String(value.to_owned()));
            return Ok((field.trim().to_owned(), op.parse()?, value));
        }
    }
    Err(Error::invalid(format!(
        "condition {text:?} must look like field=value, field>value, field<=value or field!=value"
    )))
}

/// Runs one statement with `--params` (JSON): prints its rows in `mode`, with the header
/// even when there are none (as without `--params`), or in JSON mode what it changed.
fn run_with_params(
    db: &Database,
    out: &mut dyn Write,
    mode: Mode,
    sql: &str,
    params: &str,
) -> Result<()> {
    let params = parse_json("--params", params)?;
    let stmt = db.prepare(sql).map_err(one_statement_error)?;
    if stmt.returns_rows() {
        // The columns come from the statement: a result without rows has them too.
        let rows = stmt.iterate(&params)?;
        let columns = rows.columns().clone();
        let rows = rows.collect::<Result<Vec<_>>>()?;
        print_rows(out, mode, &columns, &rows)?;
    } else {
        let result = stmt.run(&params)?;
        if mode == Mode::Json {
            print_json(out, &result)?;
        }
    }
    Ok(())
}

/// A preparing error of `sql --params`, the "more than one statement" one said for the command
/// line: the core's speaks to Rust callers ("prepare() takes one, use exec() for several").
/// The core has no kind of its own for it, so it is told by its message.
fn one_statement_error(err: Error) -> Error {
    if err.kind() == pluresdb_core::ErrorKind::InvalidInput
        && err.message().contains("more than one statement")
    {
        return Error::invalid(
            "--params binds one statement, but the SQL holds more than one; run one statement \
             per command when using --params (without --params, sql runs them all and prints \
             the rows of the last)",
        );
    }
    err
}

fn run(cli: Cli) -> Result<ExitCode> {
    let mut out = output::stdout();
    let mode = if cli.json { Mode::Json } else { Mode::Table };
    match &cli.command {
        Command::Sql { sql, params } => {
            let db = open(&cli)?;
            let sql = match sql {
                Some(s) if s != "-" => s.clone(),
                _ => {
                    let mut buf = String::new();
                    std::io::stdin().read_to_string(&mut buf)?;
                    buf
                }
            };
            let mode = cli.mode.unwrap_or(mode);
            match params {
                Some(p) => run_with_params(&db, &mut out, mode, &sql, p)?,
                None => {
                    let result = db.exec_script(&sql)?;
                    if !result.columns.is_empty() {
                        print_rows(&mut out, mode, &result.columns, &result.rows)?;
                    } else if mode == Mode::Json {
                        print_json(&mut out, &serde_json::json!({"changes": result.changes}))?;
                    }
                }
            }
        }
        Command::Shell => {
            let db = open(&cli)?;
            drop(out);
            let failed = shell::Shell::new(&db, mode).run()?;
            return Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            });
        }
        Command::Put {
            id,
            data,
            node_type,
            replace,
            vector,
        } => {
            let db = open(&cli)?;
            let data = parse_json("node data", data)?;
            let vector: Option<Option<Vec<f32>>> = vector
                .as_deref()
                .map(|v| {
                    serde_json::from_str(v).map_err(|e| {
                        Error::invalid(format!(
                            "--vector takes a JSON array of numbers, like [0.1, 0.2], or null: {e}"
                        ))
                    })
                })
                .transpose()?;
            let node = db.update_node(
                id,
                NodeUpdate {
                    data: Some(&data),
                    replace: *replace,
                    node_type: node_type.as_deref().map(Some),
                    vector: vector.as_ref().map(|v| v.as_deref()),
                    ..NodeUpdate::default()
                },
            )?;
            print_json(&mut out, &node)?;
        }
        Command::Get { id } => {
            let db = open(&cli)?;
            let node = db
                .get_node(id)?
                .ok_or_else(|| Error::not_found(format!("no node with id {id:?}")))?;
            print_json(&mut out, &node)?;
        }
        Command::Delete { id } => {
            let db = open(&cli)?;
            if !db.delete(id)? {
                return Err(Error::not_found(format!("no node with id {id:?}")));
            }
            if cli.json {
                print_json(&mut out, &serde_json::json!({"deleted": id}))?;
            } else {
                writeln!(out, "deleted {id}")?;
            }
        }
        Command::List { prefix, filter } => {
            let db = open(&cli)?;
            let mut query = filter.query()?;
            if let Some(p) = prefix {
                query = query.prefix(p);
            }
            if let Some(n) = filter.limit {
                query = query.limit(n);
            }
            let nodes = db.find(&query)?;
            if cli.json {
                print_json(&mut out, &nodes)?;
            } else {
                let rows = nodes.iter().map(|n| {
                    vec![
                        n.id.clone(),
                        n.node_type.clone().unwrap_or_default(),
                        Json::Object(n.data.clone()).to_string(),
                    ]
                });
                print_table(&mut out, &["id", "type", "data"], rows)?;
            }
        }
        Command::Link {
            from,
            relation,
            to,
            data,
        } => {
            let db = open(&cli)?;
            let data = data
                .as_deref()
                .map(|j| parse_json("edge data", j))
                .transpose()?;
            let edge = db.link(from, relation, to, data.as_ref())?;
            print_json(&mut out, &edge)?;
        }
        Command::Unlink { from, relation, to } => {
            let db = open(&cli)?;
            if !db.unlink(from, relation, to)? {
                // An edge at a node that is gone waits hidden: say how to reach it.
                let gone: Vec<&String> = [from, to]
                    .into_iter()
                    .filter(|id| !matches!(db.get_node(id), Ok(Some(_))))
                    .collect();
                let hint = match gone.first() {
                    Some(id) => format!(
                        " (node {id:?} does not exist; an edge it had stays hidden until it is \
                         put again, and can be unlinked then)"
                    ),
                    None => String::new(),
                };
                return Err(Error::not_found(format!(
                    "no edge {from} -[{relation}]-> {to}{hint}"
                )));
            }
            if cli.json {
                print_json(
                    &mut out,
                    &serde_json::json!({"unlinked": [from, relation, to]}),
                )?;
            } else {
                writeln!(out, "unlinked {from} -[{relation}]-> {to}")?;
            }
        }
        Command::Edges {
            id,
            direction,
            relation,
        } => {
            let db = open(&cli)?;
            let edges = db.edges(id, *direction, relation.as_deref())?;
            if cli.json {
                print_json(&mut out, &edges)?;
            } else {
                let rows = edges.iter().map(|e| {
                    vec![
                        e.from.clone(),
                        e.relation.clone(),
                        e.to.clone(),
                        Json::Object(e.data.clone()).to_string(),
                    ]
                });
                print_table(&mut out, &["from", "relation", "to", "data"], rows)?;
            }
        }
        Command::Import {
            file,
            table,
            nodes,
            edges,
            format,
        } => {
            let db = open(&cli)?;
            let format = format.unwrap_or_else(|| Format::guess(file));
            let target = match (table, nodes, edges) {
                (Some(t), ..) => Target::Table(t),
                (_, _, true) => Target::Edges,
                _ => Target::Nodes,
            };
            let report = transfer::import(&db, file, format, target)?;
            if cli.json {
                print_json(&mut out, &report)?;
            } else {
                let s = if report.records == 1 { "" } else { "s" };
                writeln!(out, "imported {} record{s}", report.records)?;
            }
        }
        Command::Export {
            table,
            query,
            nodes,
            edges,
            format,
            output,
        } => {
            let db = open_existing(&cli)?;
            let source = match (table, query, nodes, edges) {
                (Some(t), ..) => Source::Table(t),
                (_, Some(q), ..) => Source::Query(q),
                (_, _, true, _) => Source::Nodes,
                (_, _, _, true) => Source::Edges,
                _ => {
                    return Err(Error::invalid(
                        "say what to export: --table NAME, --query SQL, --nodes or --edges",
                    ));
                }
            };
            match output {
                Some(path) => {
                    let mut file = output_file::OutputFile::create(path)?;
                    let n = transfer::export(&db, source, *format, &mut file)?;
                    file.commit()?;
                    eprintln!("exported {n} records to {}", path.display());
                }
                None => {
                    let mut writer = std::io::BufWriter::new(out);
                    transfer::export(&db, source, *format, &mut writer)?;
                    writer.flush()?;
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
        Command::Check => {
            let db = open_existing(&cli)?;
            let problems = db.check()?;
            let warnings = db.sync_warnings()?;
            if cli.json {
                print_json(
                    &mut out,
                    &serde_json::json!({"ok": problems.is_empty(), "problems": problems, "warnings": warnings}),
                )?;
            } else {
                if problems.is_empty() {
                    writeln!(out, "ok")?;
                }
                for p in &problems {
                    writeln!(out, "{p}")?;
                }
                for w in &warnings {
                    eprintln!("warning: {w}");
                }
            }
            if !problems.is_empty() {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Changes {
            since,
            reader,
            output,
            limit,
        } => {
            let db = open_existing(&cli)?;
            drop(out);
            let reader = reader.as_deref();
            sync_cmd::changes(&db, since, reader, output.as_deref(), limit, cli.json)?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Apply { file, limit } => {
            let db = open(&cli)?;
            drop(out);
            sync_cmd::apply(&db, file, limit, cli.json)?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Serve {
            listen,
            max_sessions,
            limit,
        } => {
            if *max_sessions == 0 {
                return Err(Error::invalid(
                    "--max-sessions must be at least 1 (how many peers are served at once)",
                ));
            }
            writable(
                &cli,
                "serve merges what peers send, so it writes the database",
            )?;
            let db = open(&cli)?;
            drop(out);
            sync_cmd::serve_cmd(db, listen, *max_sessions, limit, cli.json)?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Sync {
            url,
            watch,
            status,
            limit,
        } => {
            if !*status {
                let why = "sync merges what the peer sends, so it writes the database (--status \
                           only reads)";
                writable(&cli, why)?;
            }
            let db = if *status {
                open_existing(&cli)?
            } else {
                open(&cli)?
            };
            drop(out);
            match (status, url) {
                (true, _) => sync_cmd::status(&db, cli.json)?,
                (false, Some(url)) => sync_cmd::sync_cmd(db, url, *watch, limit, cli.json)?,
                (false, None) => {
                    return Err(Error::invalid(
                        "give the server's ws://host:port, or --status",
                    ));
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        Command::History { id } => {
            let db = open_existing(&cli)?;
            let versions = db.history(id)?;
            if versions.is_empty() {
                return Err(Error::not_found(format!("no history for node {id:?}")));
            }
            if cli.json {
                print_json(&mut out, &versions)?;
            } else {
                let rows = versions.iter().map(|v| {
                    vec![
                        v.hlc.as_u64().to_string(),
                        v.site.to_string(),
                        if v.deleted {
                            "deleted".into()
                        } else {
                            Json::Object(v.data.clone()).to_string()
                        },
                    ]
                });
                print_table(&mut out, &["version", "site", "data"], rows)?;
            }
        }
        Command::Search {
            collection,
            query,
            k,
            filter,
            node_type,
            ef,
            exact,
            hybrid,
        } => {
            let db = open(&cli)?;
            let args = search_cmd::SearchArgs {
                collection,
                query,
                k: *k,
                filter: filter.as_deref(),
                node_type: node_type.as_deref(),
                ef: *ef,
                exact: *exact,
                hybrid: *hybrid,
            };
            search_cmd::search(&db, &mut out, mode, &args)?;
        }
        Command::VectorIndex {
            table,
            column,
            metric,
            dim,
            m,
            ef_construction,
            ef_search,
            embed_from,
            drop,
        } => {
            let db = open(&cli)?;
            let args = search_cmd::IndexArgs {
                table: table.as_deref(),
                column: column.as_deref(),
                metric: metric.as_deref(),
                dim: *dim,
                m: *m,
                ef_construction: *ef_construction,
                ef_search: *ef_search,
                embed_from: embed_from.as_deref(),
                drop: *drop,
            };
            search_cmd::vector_index(&db, &mut out, cli.json, &args)?;
        }
        Command::TextIndex {
            table,
            columns,
            drop,
        } => {
            let db = open(&cli)?;
            if *drop {
                search_cmd::drop_text_index(&db, &mut out, table)?;
            } else {
                search_cmd::text_index(&db, &mut out, table, columns)?;
            }
        }
        Command::Traverse {
            starts,
            relations,
            direction,
            min_depth,
            max_depth,
            filter,
        } => {
            let db = open(&cli)?;
            let limit = filter.limit;
            let filter = if filter.node_type.is_some() || !filter.conditions.is_empty() {
                Some(filter.query()?)
            } else {
                None
            };
            let args = graph_cmd::TraverseArgs {
                starts,
                relations,
                direction: *direction,
                min_depth: *min_depth,
                max_depth: *max_depth,
                filter,
                limit,
            };
            graph_cmd::traverse(&db, &mut out, cli.json, args)?;
        }
        Command::Path {
            from,
            to,
            relations,
            direction,
            weight,
        } => {
            let db = open(&cli)?;
            let args = graph_cmd::PathArgs {
                from,
                to,
                relations,
                direction: *direction,
                weight: weight.as_deref(),
            };
            graph_cmd::path(&db, &mut out, cli.json, args)?;
        }
        Command::Graph {
            algorithm,
            relations,
            direction,
            top,
        } => {
            let db = open(&cli)?;
            graph_cmd::algorithm(
                &db, &mut out, cli.json, *algorithm, relations, *direction, *top,
            )?;
        }
        Command::Cypher { query, params } => {
            let db = open(&cli)?;
            let query = match query {
                Some(q) if q != "-" => q.clone(),
                _ => {
                    let mut buf = String::new();
                    std::io::stdin().read_to_string(&mut buf)?;
                    buf
                }
            };
            let params = params
                .as_deref()
                .map(|p| parse_json("--params", p))
                .transpose()?
                .unwrap_or(Json::Null);
            let result = db.cypher(&query, &params)?;
            if cli.json {
                print_json(&mut out, &result.to_json())?;
            } else {
                let cell = |v: &Json| match v {
                    Json::String(s) => s.clone(),
                    Json::Null => "NULL".to_owned(),
                    other => other.to_string(),
                };
                let columns: Vec<&str> = result.columns.iter().map(String::as_str).collect();
                if !columns.is_empty() {
                    print_table(
                        &mut out,
                        &columns,
                        result.rows.iter().map(|r| r.iter().map(cell).collect()),
                    )?;
                }
                if result.counters.contains_updates() {
                    writeln!(out, "{}", result.counters.to_json())?;
                }
            }
        }
        Command::RenewSiteId => {
            writable(&cli, "renew-site-id changes the database")?;
            // (Read first only when there is a file: `open` would make one.)
            let old = match cli.db.is_file() {
                true => Some(open(&cli)?.site_id()),
                false => None,
            };
            let site = Database::renew_site_id(&cli.db)?;
            let old = old.map_or_else(String::new, |s| s.to_string());
            if cli.json {
                print_json(
                    &mut out,
                    &serde_json::json!({"site": site.to_string(), "previous": old}),
                )?;
            } else {
                writeln!(
                    out,
                    "site id {old} -> {site}: the next sync with each peer sends and takes \
                     everything again"
                )?;
            }
        }
        Command::Backup { dest } => {
            let db = open_existing(&cli)?;
            db.backup(dest)?;
            let size = std::fs::metadata(dest).map(|m| m.len()).unwrap_or(0);
            if cli.json {
                print_json(
                    &mut out,
                    &serde_json::json!({"backup": dest, "bytes": size}),
                )?;
            } else {
                writeln!(out, "backed up to {} ({size} bytes)", dest.display())?;
            }
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
