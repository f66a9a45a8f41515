//! The `pluresdb` binary, run as a real process.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

struct Cli {
    dir: tempfile::TempDir,
}

impl Cli {
    fn new() -> Cli {
        Cli {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("test.db")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run_with(&self, args: &[&str], stdin: Option<&str>) -> Output {
        self.spawn(args, stdin).wait_with_output().unwrap()
    }

    /// Starts `pluresdb` on this database with `stdin` written to it and closed, its output
    /// piped.
    fn spawn(&self, args: &[&str], stdin: Option<&str>) -> std::process::Child {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        child
    }

    /// `pluresdb` on this database with `args`, not started.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pluresdb"));
        cmd.arg("--db")
            .arg(self.db())
            .args(args)
            .env_remove("PLURESDB_DB")
            .env_remove("PLURESDB_MODEL_DIR")
            .env_remove("PLURESDB_CRASH_AT")
            .env("PLURESDB_HISTORY", self.path("history"));
        cmd
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run_with(args, None);
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs and expects failure; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run_with(args, None);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(out.stdout.is_empty(), "errors go to stderr only");
        String::from_utf8(out.stderr).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).unwrap()
    }
}

#[test]
fn sql_prints_tables_for_people_and_exact_json_for_scripts() {
    let cli = Cli::new();
    let table = cli.ok(&[
        "sql",
        "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, big INTEGER); \
         INSERT INTO t(name, big) VALUES ('Ada', 9007199254740993), ('Alan', NULL); SELECT * FROM t",
    ]);
    assert!(
        table.contains("│ 1  ┆ Ada  ┆ 9007199254740993 │"),
        "{table}"
    );
    assert!(table.contains("NULL"), "{table}");
    let out = cli.ok(&["--json", "query", "SELECT id, name, big FROM t ORDER BY id"]);
    assert!(
        out.contains("\"big\": 9007199254740993"),
        "integers beyond 2^53 print exactly: {out}"
    );
    let rows: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        rows[0],
        json!({"id": 1, "name": "Ada", "big": 9007199254740993_i64})
    );
    let keys: Vec<&str> = out
        .lines()
        .filter_map(|l| l.trim().split('"').nth(1))
        .take(3)
        .collect();
    assert_eq!(keys, ["id", "name", "big"], "columns keep their order");
    let one = cli.json(&["sql", "SELECT name FROM t WHERE id = ?", "--params", "[2]"]);
    assert_eq!(one, json!([{"name": "Alan"}]));
    let changed = cli.json(&["sql", "UPDATE t SET big = 1"]);
    assert_eq!(changed, json!({"changes": 2}));
    let csv = cli.ok(&["sql", "--mode", "csv", "SELECT id, name FROM t"]);
    assert_eq!(csv, "id,name\n1,Ada\n2,Alan\n");
    // Given before the command too (it was refused with a usage line about --model).
    assert_eq!(
        cli.ok(&["--mode", "csv", "sql", "SELECT id, name FROM t"]),
        csv
    );
    let from_stdin = cli.run_with(&["sql"], Some("SELECT 40 + 2 AS answer;"));
    assert!(String::from_utf8_lossy(&from_stdin.stdout).contains("42"));
}

#[test]
fn sql_errors_go_to_stderr_with_the_position() {
    let cli = Cli::new();
    let err = cli.fails(&["sql", "SELECT * FORM nowhere"]);
    assert_eq!(
        err,
        "error: near \"FORM\": syntax error\n  SELECT * FORM nowhere\n           ^ (at byte 9)\n"
    );
    let err = cli.fails(&["sql", "SELECT * FROM nowhere"]);
    assert!(err.starts_with("error: no such table: nowhere"), "{err}");
    let err = cli.fails(&["sql", "SELECT ?", "--params", "[1, 2]"]);
    assert!(err.contains("wrong number of parameters"), "{err}");
}

#[test]
fn nodes_and_edges_from_the_command_line() {
    let cli = Cli::new();
    let ada = cli.json(&[
        "put",
        "ada",
        r#"{"name": "Ada", "born": 1815}"#,
        "--type",
        "Person",
    ]);
    assert_eq!(ada["type"], "Person");
    cli.ok(&["put", "ada", r#"{"field": "math"}"#]);
    cli.ok(&["put", "alan", r#"{"name": "Alan"}"#]);
    let got = cli.json(&["get", "ada"]);
    assert_eq!(
        got["data"],
        json!({"name": "Ada", "born": 1815, "field": "math"})
    );
    let edge = cli.json(&["link", "ada", "knows", "alan", r#"{"since": 1936}"#]);
    assert_eq!(edge["data"]["since"], 1936);
    // JSON naming a key twice is refused, as imports refuse it, and nothing changes.
    let err = cli.fails(&["put", "ada", r#"{"field": "logic", "field": "poetry"}"#]);
    assert!(
        err.contains("node data: key \"field\" appears twice"),
        "{err}"
    );
    let err = cli.fails(&["link", "ada", "likes", "alan", r#"{"a": 1, "a": 2}"#]);
    assert!(err.contains("edge data: key \"a\" appears twice"), "{err}");
    assert_eq!(cli.json(&["get", "ada"])["data"]["field"], "math");
    let err = cli.fails(&["put", "ada", "{oops"]);
    assert!(err.contains("node data is not valid JSON"), "{err}");
    let edges = cli.json(&["edges", "alan", "--direction", "in"]);
    assert_eq!(edges[0]["from"], "ada");
    let listed = cli.json(&["list", "--type", "Person", "--where", "born<1900"]);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let table = cli.ok(&["list"]);
    let huge = cli.json(&["list", "--limit", "18446744073709551615"]);
    assert!(!huge.as_array().unwrap().is_empty(), "{huge}");
    assert!(
        table.contains("alan") && table.contains("Person"),
        "{table}"
    );
    assert_eq!(
        cli.ok(&["unlink", "ada", "knows", "alan"]),
        "unlinked ada -[knows]-> alan\n"
    );
    assert!(
        cli.fails(&["unlink", "ada", "knows", "alan"])
            .contains("no edge ada -[knows]-> alan")
    );
    assert_eq!(cli.ok(&["delete", "alan"]), "deleted alan\n");
    let err = cli.fails(&["unlink", "ada", "knows", "alan"]);
    assert!(
        err.contains("node \"alan\" does not exist; an edge it had stays hidden"),
        "{err}"
    );
    let err = cli.fails(&["get", "alan"]);
    assert_eq!(err, "error: no node with id \"alan\"\n");
    let err = cli.fails(&["put", "x", "{not json"]);
    assert!(
        err.starts_with("error: node data is not valid JSON"),
        "{err}"
    );
    let err = cli.fails(&["put", "x", "[1, 2]"]);
    assert!(err.contains("must be a JSON object"), "{err}");
    let err = cli.fails(&["link", "ada", "knows", "ghost"]);
    assert!(
        err.contains("target node \"ghost\" does not exist"),
        "{err}"
    );
    let err = cli.fails(&["list", "--where", "nonsense"]);
    assert!(err.contains("must look like field=value"), "{err}");
    // Put from stdin.
    let out = cli.run_with(&["put", "piped", "-"], Some(r#"{"from": "stdin"}"#));
    assert!(out.status.success());
    assert_eq!(cli.json(&["get", "piped"])["data"]["from"], "stdin");
}

#[test]
fn import_and_export_round_trip_jsonl_and_csv() {
    let cli = Cli::new();
    let jsonl = cli.path("people.jsonl");
    std::fs::write(&jsonl, "{\"id\": 1, \"name\": \"Ada\", \"tags\": [\"math\"]}\n\n{\"id\": 2, \"name\": \"Alan\", \"tags\": []}\n").unwrap();
    assert_eq!(
        cli.ok(&["import", jsonl.to_str().unwrap(), "--table", "people"]),
        "imported 2 records\n"
    );
    let rows = cli.json(&[
        "sql",
        "SELECT id, name, tags ->> '$[0]' AS first FROM people ORDER BY id",
    ]);
    assert_eq!(
        rows,
        json!([{"id": 1, "name": "Ada", "first": "math"}, {"id": 2, "name": "Alan", "first": null}])
    );

    let csv_out = cli.path("people.csv");
    cli.ok(&[
        "export",
        "--table",
        "people",
        "--format",
        "csv",
        "-o",
        csv_out.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&csv_out).unwrap();
    assert_eq!(text.lines().next(), Some("id,name,tags"));
    // CSV into a new table: text columns, like sqlite3's .import.
    cli.ok(&["import", csv_out.to_str().unwrap(), "--table", "copy"]);
    let rows = cli.json(&["sql", "SELECT * FROM copy ORDER BY id"]);
    assert_eq!(rows[1], json!({"id": "2", "name": "Alan", "tags": "[]"}));

    // A bad line aborts the whole import and names the line.
    let bad = cli.path("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"id\": 3, \"name\": \"Grace\"}\n{\"id\": 4, \"nope\": 1}\n",
    )
    .unwrap();
    let err = cli.fails(&["import", bad.to_str().unwrap(), "--table", "people"]);
    assert!(err.contains("line 2") && err.contains("nope"), "{err}");
    let bad_json = cli.path("bad2.jsonl");
    std::fs::write(&bad_json, "{\"id\": 5}\n{oops\n").unwrap();
    let err = cli.fails(&["import", bad_json.to_str().unwrap(), "--table", "people"]);
    assert!(
        err.contains("line 2, column 2: invalid JSON: key must be a string\n"),
        "{err}"
    );
    assert_eq!(
        cli.json(&["sql", "SELECT count(*) AS n FROM people"]),
        json!([{"n": 2}])
    );

    // Nodes: export then import into another database.
    cli.ok(&["put", "a", r#"{"x": 1}"#, "--type", "T"]);
    cli.ok(&["put", "b", r#"{"y": {"z": true}}"#]);
    let nodes = cli.path("nodes.jsonl");
    cli.ok(&["export", "--nodes", "-o", nodes.to_str().unwrap()]);
    let other = Cli::new();
    other.ok(&["import", nodes.to_str().unwrap(), "--nodes"]);
    assert_eq!(other.json(&["get", "a"])["type"], "T");
    assert_eq!(other.json(&["get", "b"])["data"], json!({"y": {"z": true}}));
    let nodes_csv = cli.path("nodes.csv");
    cli.ok(&[
        "export",
        "--nodes",
        "--format",
        "csv",
        "-o",
        nodes_csv.to_str().unwrap(),
    ]);
    let third = Cli::new();
    third.ok(&["import", nodes_csv.to_str().unwrap(), "--nodes"]);
    assert_eq!(third.json(&["get", "b"])["data"], json!({"y": {"z": true}}));
    assert_eq!(third.json(&["get", "a"])["type"], "T");
    // Flat objects with an id become nodes.
    let flat = cli.path("flat.jsonl");
    std::fs::write(&flat, "{\"id\": \"f1\", \"name\": \"Flat\"}\n").unwrap();
    third.ok(&["import", flat.to_str().unwrap(), "--nodes"]);
    assert_eq!(third.json(&["get", "f1"])["data"], json!({"name": "Flat"}));
    let edges = cli.ok(&["export", "--edges"]);
    assert_eq!(edges, "");
    let err = cli.fails(&[
        "import",
        cli.path("missing.jsonl").to_str().unwrap(),
        "--table",
        "x",
    ]);
    assert!(err.contains("cannot read"), "{err}");
}

#[test]
fn check_and_backup() {
    let cli = Cli::new();
    // Commands that only read do not make a database at a mistyped path and report on it.
    for args in [
        &["check"][..],
        &["sync", "--status"],
        &["changes", "-o", "x.bin"],
    ] {
        let err = cli.fails(args);
        assert!(err.contains("there is no database at"), "{args:?}: {err}");
        assert!(!cli.db().exists(), "{args:?}");
    }
    cli.ok(&["sql", "CREATE TABLE t(x); INSERT INTO t VALUES (1)"]);
    assert_eq!(cli.ok(&["check"]), "ok\n");
    assert_eq!(
        cli.json(&["check"]),
        json!({"ok": true, "problems": [], "warnings": []})
    );
    let dest = cli.path("backup.db");
    let out = cli.ok(&["backup", dest.to_str().unwrap()]);
    assert!(out.starts_with("backed up to"), "{out}");
    let copy = Command::new(env!("CARGO_BIN_EXE_pluresdb"))
        .args([
            "--db",
            dest.to_str().unwrap(),
            "--json",
            "sql",
            "SELECT x FROM t",
        ])
        .output()
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&copy.stdout).unwrap(),
        json!([{"x": 1}])
    );
    let err = cli.fails(&["backup", dest.to_str().unwrap()]);
    assert!(err.contains("already exists"), "{err}");
}

#[test]
fn a_file_that_is_not_a_database_is_refused() {
    let cli = Cli::new();
    std::fs::write(cli.db(), "hello, I am a text file").unwrap();
    let err = cli.fails(&["sql", "SELECT 1"]);
    assert!(err.contains("not a database"), "{err}");
    assert_eq!(
        std::fs::read_to_string(cli.db()).unwrap(),
        "hello, I am a text file"
    );
}

#[test]
fn shell_runs_sql_and_dot_commands_from_a_pipe() {
    let cli = Cli::new();
    let csv = cli.path("in.csv");
    std::fs::write(&csv, "a,b\n1,x\n2,y\n").unwrap();
    let script = format!(
        "CREATE TABLE z(a INTEGER, b TEXT);\n\
         .import {} z\n\
         SELECT a, b\n  FROM z\n  ORDER BY a;\n\
         .tables\n\
         .schema z\n\
         .mode json\n\
         SELECT count(*) AS n FROM z;\n\
         .mode csv\n\
         SELECT b FROM z ORDER BY a;\n\
         .quit\n\
         SELECT 'not reached';\n",
        csv.display()
    );
    let out = cli.run_with(&["shell"], Some(&script));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("imported 2 records into z"), "{stdout}");
    assert!(stdout.contains("│ 2 ┆ y │"), "{stdout}");
    assert!(stdout.contains("\nz\n"), ".tables lists z: {stdout}");
    assert!(
        !stdout.contains("_pluresdb"),
        "internal tables are hidden: {stdout}"
    );
    assert!(
        stdout.contains("CREATE TABLE z(a INTEGER, b TEXT);"),
        "{stdout}"
    );
    assert!(stdout.contains("\"n\": 2"), "{stdout}");
    assert!(stdout.ends_with("b\nx\ny\n"), "{stdout}");
    assert!(!stdout.contains("not reached"));

    let out = cli.run_with(
        &["shell"],
        Some("SELECT 1;\n.nope\nSELEC 2;\nSELECT 3 AS three;\n"),
    );
    assert!(
        !out.status.success(),
        "errors make the exit status non-zero"
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("unknown command .nope"), "{stderr}");
    assert!(stderr.contains("syntax error"), "{stderr}");
    assert!(
        String::from_utf8(out.stdout).unwrap().contains("three"),
        "the shell goes on after an error"
    );
}

#[test]
fn read_only_flag_refuses_writes() {
    let cli = Cli::new();
    cli.ok(&["sql", "CREATE TABLE t(x)"]);
    let err = cli.fails(&["--read-only", "sql", "INSERT INTO t VALUES (1)"]);
    assert!(err.contains("readonly"), "{err}");
    assert!(err.contains("opened with --read-only"), "{err}");
    let err = cli.fails(&["--read-only", "put", "n", "{}"]);
    assert!(err.contains("opened with --read-only"), "{err}");
    assert!(Path::new(&cli.db()).exists());
    // Without the flag, a database SQLite cannot write (here made so by a pragma; a file
    // without write permission says the same) gets a hint about permissions instead.
    let err = cli.fails(&["sql", "PRAGMA query_only = 1; INSERT INTO t VALUES (1)"]);
    assert!(err.contains("readonly"), "{err}");
    assert!(err.contains("check their permissions"), "{err}");
    assert!(!err.contains("opened with --read-only"), "{err}");
}

#[test]
fn search_finds_nearest_rows_and_nodes_and_explains_a_missing_model() {
    let cli = Cli::new();
    cli.ok(&[
        "sql",
        "CREATE TABLE docs(id INTEGER PRIMARY KEY, title TEXT, emb BLOB);
         INSERT INTO docs(title, emb) VALUES
           ('north', vec_f32('[0, 1, 0]')), ('east', vec_f32('[1, 0, 0]')),
           ('north-east', vec_f32('[0.7, 0.7, 0]')), ('up', vec_f32('[0, 0, 1]'))",
    ]);
    let listed = cli.json(&["vector-index", "docs", "emb", "--metric", "cosine"]);
    assert_eq!(listed[0]["name"], "docs.emb");
    assert_eq!(listed[0]["dim"], 3);
    assert_eq!(listed[0]["vectors"], 4);
    assert_eq!(listed[0]["loaded"], "built", "{listed}");
    assert_eq!(listed[0]["rebuilt_because"], Value::Null);
    // Creating it again loads it: from the graph saved when the last command closed.
    let again = cli.json(&["vector-index", "docs", "emb", "--metric", "cosine"]);
    assert_eq!(again[0]["loaded"], "saved", "{again}");
    let hits = cli.json(&["search", "docs", "[0.9, 0.8, 0]", "-k", "2"]);
    assert_eq!(hits[0]["title"], "north-east", "{hits}");
    assert_eq!(hits[1]["title"], "east");
    assert!(
        hits[0].get("emb").is_none(),
        "vector columns are not printed"
    );
    let filtered = cli.json(&[
        "search",
        "docs.emb",
        "[0.9, 0.8, 0]",
        "-k",
        "1",
        "--filter",
        "title LIKE 'n%'",
    ]);
    assert_eq!(filtered[0]["title"], "north-east");
    let every = cli.json(&["search", "docs", "[0, 0, 1]", "-k", "18446744073709551615"]);
    assert_eq!(
        every.as_array().unwrap().len(),
        4,
        "a huge k means all: {every}"
    );
    let table = cli.ok(&["search", "docs", "[0, 0, 1]", "-k", "1"]);
    assert!(
        table.contains("up") && table.contains("distance"),
        "{table}"
    );
    // Nodes: the first search creates their index.
    cli.ok(&["sql", "SELECT 1"]);
    for (id, v) in [("a", "[1, 0]"), ("b", "[0, 1]")] {
        cli.ok(&["put", id, "{}", "--vector", v]);
    }
    let nodes = cli.json(&["search", "nodes", "[0.1, 0.9]", "-k", "1"]);
    assert_eq!(nodes[0]["id"], "b");
    // (A "vector" field of the JSON is data, not the node's vector.)
    cli.ok(&["put", "c", r#"{"vector": [0.1, 0.9]}"#]);
    assert_eq!(
        cli.json(&["search", "nodes", "[0.1, 0.9]", "-k", "1"])[0]["id"],
        "b"
    );
    let err = cli.fails(&["put", "c", "{}", "--vector", "[1, \"x\"]"]);
    assert!(
        err.contains("--vector takes a JSON array of numbers"),
        "{err}"
    );
    cli.ok(&["put", "b", "{}", "--vector", "null"]);
    assert_eq!(
        cli.json(&["search", "nodes", "[0.1, 0.9]", "-k", "1"])[0]["id"],
        "a"
    );
    // Text queries need a model; the error says how to configure one.
    let err = cli.fails(&["search", "docs", "a red car"]);
    assert!(err.contains("PLURESDB_MODEL_DIR"), "{err}");
    let err = cli.fails(&["search", "docs", "[1, 2]"]);
    assert!(
        err.contains("has 2 dimensions but the index on docs.emb has 3"),
        "{err}"
    );
    cli.ok(&["vector-index", "docs", "emb", "--drop"]);
    assert_eq!(
        cli.json(&["vector-index"]),
        json!([{"name": "nodes", "metric": "cosine", "dim": 2, "m": 16,
        "ef_construction": 200, "ef_search": 64, "embed_from": null, "vectors": null,
        "loaded": null, "rebuilt_because": null}])
    );
}

#[test]
fn traverse_path_and_graph_algorithms_from_the_command_line() {
    let cli = Cli::new();
    for id in ["ada", "bob", "cy", "dee"] {
        cli.ok(&[
            "put",
            id,
            &format!("{{\"name\": \"{id}\"}}"),
            "--type",
            "Person",
        ]);
    }
    cli.ok(&["link", "ada", "knows", "bob", "{\"years\": 5}"]);
    cli.ok(&["link", "bob", "knows", "cy", "{\"years\": 1}"]);
    cli.ok(&["link", "ada", "knows", "cy", "{\"years\": 9}"]);
    let reached = cli.json(&["traverse", "ada", "--relation", "knows", "--max-depth", "2"]);
    assert_eq!(
        reached,
        json!([
            {"id": "bob", "depth": 1, "path": ["ada", "bob"]},
            {"id": "cy", "depth": 1, "path": ["ada", "cy"]},
        ])
    );
    // `--depth N` (the name in the design) is `--max-depth N`.
    let near = cli.json(&["traverse", "bob", "--depth", "1", "--direction", "both"]);
    assert_eq!(near.as_array().unwrap().len(), 2, "{near}");
    assert_eq!(
        near,
        cli.json(&["traverse", "bob", "--max-depth", "1", "--direction", "both"])
    );
    let filtered = cli.json(&["traverse", "cy", "--direction", "in", "--where", "name=bob"]);
    assert_eq!(filtered[0]["id"], "bob");
    let table = cli.ok(&["path", "ada", "cy", "--weight", "years"]);
    assert!(
        table.contains("ada -[knows]-> bob -[knows]-> cy"),
        "{table}"
    );
    assert!(table.contains("cost 6"), "{table}");
    let err = cli.fails(&["path", "cy", "ada"]);
    assert!(err.contains("no path from cy to ada"), "{err}");
    // An unknown node fails every graph command with the same message (edges listed none).
    for args in [
        &["edges", "nobody"][..],
        &[
            "edges",
            "nobody",
            "--direction",
            "out",
            "--relation",
            "knows",
        ],
        &["traverse", "nobody"],
        &["path", "nobody", "ada"],
        &["path", "ada", "nobody", "--weight", "years"],
    ] {
        let err = cli.fails(args);
        assert!(
            err.contains("no node with id \"nobody\" is in the graph; check the id"),
            "{args:?}: {err}"
        );
    }
    let err = cli.fails(&["traverse", "ada", "--min-depth", "-2"]);
    assert!(err.contains("-2"), "{err}");
    let comps = cli.json(&["graph", "components"]);
    assert_eq!(comps["count"], 2);
    let ranks = cli.json(&["graph", "pagerank", "--top", "1"]);
    assert_eq!(ranks[0]["id"], "cy");
    let central = cli.ok(&["graph", "centrality"]);
    assert!(
        central.contains("ada") && central.contains("0.666667"),
        "{central}"
    );
    // Weights whose total passes f64::MAX: said, with the fix (it was "no path").
    for (from, to) in [("far1", "far2"), ("far2", "far3")] {
        cli.ok(&["put", to, "{}"]);
        cli.ok(&["put", from, "{}"]);
        cli.ok(&["link", from, "knows", to, "{\"years\": 1e308}"]);
    }
    let err = cli.fails(&["path", "far1", "far3", "--weight", "years"]);
    assert!(
        err.contains("cost more than the largest number") && err.contains("use smaller weights"),
        "{err}"
    );
}

/// The real model's directory, when configured (CI sets it and PLURESDB_REQUIRE_MODEL=1).
fn model_dir() -> Option<String> {
    match std::env::var("PLURESDB_MODEL_DIR") {
        Ok(dir) if !dir.is_empty() => Some(dir),
        _ if std::env::var("PLURESDB_REQUIRE_MODEL").as_deref() == Ok("1") => {
            panic!(
                "PLURESDB_REQUIRE_MODEL=1 but PLURESDB_MODEL_DIR is not set (see crates/pluresdb-embed/fetch-model.sh)"
            )
        }
        _ => {
            eprintln!("skipped: PLURESDB_MODEL_DIR is not set");
            None
        }
    }
}

#[test]
fn text_search_with_the_real_model_finds_meaning_not_just_words() {
    let Some(model) = model_dir() else {
        return;
    };
    let cli = Cli::new();
    fn with<'a>(model: &'a str, args: &[&'a str]) -> Vec<&'a str> {
        [&["--model", model][..], args].concat()
    }
    cli.ok(&with(
        &model,
        &[
            "sql",
            "CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT, emb BLOB)",
        ],
    ));
    cli.ok(&with(
        &model,
        &["vector-index", "notes", "emb", "--embed-from", "body"],
    ));
    cli.ok(&with(
        &model,
        &[
            "sql",
            "INSERT INTO notes(body) VALUES ('A kitten is sleeping on the rug'), \
         ('Stock markets fell sharply today'), ('The recipe needs two eggs and flour'), \
         ('Quarterly earnings beat expectations')",
        ],
    ));
    let dims = cli.json(&["sql", "SELECT vec_length(emb) AS d FROM notes LIMIT 1"]);
    assert_eq!(dims[0]["d"], 384, "rows were embedded on insert");
    // No shared words with the best answer: only meaning connects them.
    let hits = cli.json(&with(
        &model,
        &["search", "notes", "a cat naps on the carpet", "-k", "1"],
    ));
    assert_eq!(hits[0]["body"], "A kitten is sleeping on the rug", "{hits}");
    let hits = cli.json(&with(
        &model,
        &["search", "notes", "the economy and finance", "-k", "2"],
    ));
    let bodies: Vec<&str> = hits
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["body"].as_str().unwrap())
        .collect();
    assert!(
        bodies.contains(&"Stock markets fell sharply today")
            && bodies.contains(&"Quarterly earnings beat expectations"),
        "{bodies:?}"
    );
    // Editing the text re-embeds it.
    cli.ok(&with(
        &model,
        &[
            "sql",
            "UPDATE notes SET body = 'Baking bread at home' WHERE id = 1",
        ],
    ));
    let hits = cli.json(&with(
        &model,
        &["search", "notes", "a homemade loaf", "-k", "1"],
    ));
    assert_eq!(hits[0]["id"], 1, "{hits}");
    // Hybrid: bm25 over the words plus the vectors.
    cli.ok(&with(&model, &["text-index", "notes", "body"]));
    let fused = cli.json(&with(
        &model,
        &[
            "search",
            "notes",
            "a recipe with eggs",
            "--hybrid",
            "-k",
            "2",
        ],
    ));
    assert_eq!(fused[0]["rowid"], 3, "{fused}");
    assert!(fused[0]["text_rank"].is_number() && fused[0]["vector_rank"].is_number());
    // Each hit shows its row (without the vector), as a plain search does.
    assert_eq!(
        fused[0]["row"],
        json!({"id": 3, "body": "The recipe needs two eggs and flour"})
    );
    let table = cli.ok(&with(
        &model,
        &[
            "search",
            "notes",
            "a recipe with eggs",
            "--hybrid",
            "-k",
            "1",
        ],
    ));
    assert!(
        table.contains("body") && table.contains("The recipe needs two eggs and flour"),
        "{table}"
    );
}

#[test]
fn cypher_from_the_command_line() {
    let cli = Cli::new();
    let created = cli.json(&[
        "cypher",
        "CREATE (a:Person {id: 'ada', name: 'Ada'})-[:KNOWS]->(b:Person {id: 'bob', name: 'Bob'}) RETURN a.name, b.name",
    ]);
    assert_eq!(created["rows"], json!([["Ada", "Bob"]]));
    assert_eq!(created["counters"]["nodes_created"], 2);
    let table = cli.ok(&[
        "cypher",
        "MATCH (a {id: $id})-[:KNOWS]->(b) RETURN b.name AS friend",
        "--params",
        "{\"id\": \"ada\"}",
    ]);
    assert!(table.contains("friend") && table.contains("Bob"), "{table}");
    assert_eq!(
        cli.json(&["get", "bob"])["type"],
        "Person",
        "the nodes are ordinary nodes"
    );
    let err = cli.fails(&["cypher", "MATCH (a RETURN a"]);
    assert!(err.contains("line 1, column") && err.contains('^'), "{err}");
}

#[test]
fn columns_with_the_same_name_are_all_kept_in_json_and_jsonl() {
    let cli = Cli::new();
    cli.ok(&[
        "sql",
        "CREATE TABLE a(id, v); INSERT INTO a VALUES (1, 'x'); \
         CREATE TABLE b(id, v); INSERT INTO b VALUES (2, 'y')",
    ]);
    let rows = cli.json(&["query", "SELECT a.id, b.id, a.v, b.v FROM a, b"]);
    assert_eq!(rows, json!([{"id": 1, "id:1": 2, "v": "x", "v:1": "y"}]));
    let out = cli.ok(&["export", "--query", "SELECT a.id, b.id FROM a, b"]);
    assert_eq!(out, "{\"id\":1,\"id:1\":2}\n");
}

#[test]
fn import_refuses_a_csv_header_naming_a_column_twice() {
    let cli = Cli::new();
    // A repeated CSV header would keep only one of the columns.
    let dup = cli.path("dup.csv");
    std::fs::write(&dup, "a,a\n1,2\n").unwrap();
    let err = cli.fails(&["import", dup.to_str().unwrap(), "--table", "t3"]);
    assert!(err.contains("\"a\" twice"), "{err}");
    let err = cli.fails(&["sql", "SELECT * FROM t3"]);
    assert!(err.contains("no such table"), "{err}");
}

#[test]
fn import_refuses_a_jsonl_object_naming_a_key_twice() {
    let cli = Cli::new();
    // serde_json keeps the last value of a repeated key: one of the values would be lost.
    let dup = cli.path("dup.jsonl");
    std::fs::write(&dup, "{\"a\": 1}\n{\"a\": 1, \"b\": 2, \"a\": 3}\n").unwrap();
    let err = cli.fails(&["import", dup.to_str().unwrap(), "--table", "t"]);
    assert_eq!(
        err,
        "error: line 2, column 20: key \"a\" appears twice in one object; remove one so each \
         key appears once\n"
    );
    let err = cli.fails(&["sql", "SELECT * FROM t"]);
    assert!(err.contains("no such table"), "{err}");
    // Nested objects too (a node's data).
    std::fs::write(&dup, "{\"id\": \"x\", \"data\": {\"k\": 1, \"k\": 2}}\n").unwrap();
    let err = cli.fails(&["import", dup.to_str().unwrap(), "--nodes"]);
    assert!(
        err.starts_with("error: line 1, column 32: key \"k\" appears twice"),
        "{err}"
    );
}

#[test]
fn import_of_a_node_record_with_extra_keys_keeps_every_field() {
    let cli = Cli::new();
    // A record with keys beyond id/type/data/vector is flat: every field is kept.
    let nodes = cli.path("n.jsonl");
    std::fs::write(&nodes, "{\"id\":\"x\",\"data\":{\"a\":1},\"other\":5}\n").unwrap();
    cli.ok(&["import", nodes.to_str().unwrap(), "--nodes"]);
    assert_eq!(
        cli.json(&["get", "x"])["data"],
        json!({"data": {"a": 1}, "other": 5})
    );
}

#[test]
fn a_node_import_in_batches_names_the_line_of_a_refused_node_and_imports_nothing() {
    let cli = Cli::new();
    cli.ok(&["put", "kept", "{\"v\": 1}"]);
    // More records than one batch, repeated ids, the existing node, and on line 10,050 an id
    // the database refuses (the file reads fine).
    let mut lines: Vec<String> = (0..10_049)
        .map(|i| format!("{{\"id\": \"n{}\", \"v\": {i}}}", i % 10_020))
        .collect();
    lines[5] = r#"{"id": "kept", "v": 2}"#.to_owned();
    lines.push(r#"{"id": "bad\u0000id", "v": 0}"#.to_owned());
    let file = cli.path("nodes.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let err = cli.fails(&["import", file.to_str().unwrap(), "--nodes"]);
    assert!(err.starts_with("error: line 10050: node id"), "{err}");
    assert!(err.contains("NUL"), "{err}");
    assert_eq!(
        cli.json(&["sql", "SELECT count(*) AS n FROM pluresdb_nodes"]),
        json!([{"n": 1}])
    );
    assert_eq!(cli.json(&["get", "kept"])["data"], json!({"v": 1}));
    // Without it, every record is written, later ones of an id last.
    lines.pop();
    std::fs::write(&file, lines.join("\n")).unwrap();
    assert_eq!(
        cli.ok(&["import", file.to_str().unwrap(), "--nodes"]),
        "imported 10049 records\n"
    );
    assert_eq!(
        cli.json(&["sql", "SELECT count(*) AS n FROM pluresdb_nodes"]),
        json!([{"n": 10_021}])
    );
    assert_eq!(cli.json(&["get", "n3"])["data"], json!({"v": 10_023}));
    assert_eq!(cli.json(&["get", "kept"])["data"], json!({"v": 2}));
}

#[test]
fn import_errors_name_the_line_the_record_is_on() {
    let cli = Cli::new();
    // A quoted field spanning lines: the bad record is on line 6, not 4.
    let multi = cli.path("m.csv");
    std::fs::write(&multi, "a,b\n1,\"one\ntwo\nthree\"\n2,3\n4\n").unwrap();
    let err = cli.fails(&["import", multi.to_str().unwrap(), "--table", "m"]);
    // The position is said once (the csv crate's message repeated it).
    assert_eq!(
        err,
        "error: line 6: the record has 1 field but the header has 2; give every record as many \
         fields as the header (quote a field that contains a comma)\n"
    );
    let bad = cli.path("bad.csv");
    std::fs::write(&bad, b"a,b\n1,2\n3,caf\xe9\n").unwrap();
    let err = cli.fails(&["import", bad.to_str().unwrap(), "--table", "m"]);
    assert_eq!(
        err,
        "error: line 3: column \"b\" is not valid UTF-8; save the file as UTF-8\n"
    );
    std::fs::write(&bad, b"a,\xff\n1,2\n").unwrap();
    let err = cli.fails(&["import", bad.to_str().unwrap(), "--table", "m"]);
    assert_eq!(
        err,
        "error: line 1: field 2 is not valid UTF-8; save the file as UTF-8\n"
    );
    // JSON: the line and the column in it, once.
    let broken = cli.path("broken.jsonl");
    std::fs::write(&broken, "{\"a\": 1}\n{\"a\": }\r\n").unwrap();
    let err = cli.fails(&["import", broken.to_str().unwrap(), "--table", "m"]);
    assert_eq!(
        err,
        "error: line 2, column 7: invalid JSON: expected value\n"
    );
    std::fs::write(&broken, "{\"a\": 1}\n{\"a\":\n").unwrap();
    let err = cli.fails(&["import", broken.to_str().unwrap(), "--table", "m"]);
    assert_eq!(
        err,
        "error: line 2, column 5: invalid JSON: EOF while parsing a value\n"
    );

    // JSONL: a UTF-8 BOM is skipped; invalid UTF-8 names its line.
    let bom = cli.path("bom.jsonl");
    std::fs::write(&bom, "\u{feff}{\"id\": 1}\r\n{\"id\": 2}\r\n").unwrap();
    assert_eq!(
        cli.ok(&["import", bom.to_str().unwrap(), "--table", "bom"]),
        "imported 2 records\n"
    );
    let latin1 = cli.path("latin1.jsonl");
    std::fs::write(&latin1, b"{\"id\": 1}\n{\"name\": \"caf\xe9\"}\n").unwrap();
    let err = cli.fails(&["import", latin1.to_str().unwrap(), "--table", "bom"]);
    assert!(err.contains("line 2") && err.contains("UTF-8"), "{err}");
    assert_eq!(
        cli.json(&["sql", "SELECT count(*) AS n FROM bom"]),
        json!([{"n": 2}])
    );
}

#[test]
fn jsonl_round_trips_integers_null_and_blobs_exactly() {
    // What the README promises: JSONL keeps types, CSV is text only.
    let cli = Cli::new();
    cli.ok(&[
        "sql",
        "CREATE TABLE todos(id INTEGER PRIMARY KEY, n, b BLOB, t TEXT); \
         INSERT INTO todos VALUES (1, NULL, x'00ff', '12')",
    ]);
    let file = cli.path("todos.jsonl");
    cli.ok(&["export", "--table", "todos", "-o", file.to_str().unwrap()]);
    cli.ok(&["import", file.to_str().unwrap(), "--table", "todos_copy"]);
    let types = "SELECT typeof(id) AS i, typeof(n) AS n, hex(b) AS b, typeof(t) AS t FROM ";
    assert_eq!(
        cli.json(&["sql", &format!("{types} todos_copy")]),
        cli.json(&["sql", &format!("{types} todos")])
    );
}

#[test]
fn dropping_an_indexed_column_says_which_index_to_drop_first() {
    let cli = Cli::new();
    cli.ok(&[
        "sql",
        "CREATE TABLE t(id INTEGER PRIMARY KEY, body TEXT, emb BLOB); \
         INSERT INTO t(body, emb) VALUES ('red car', vec_f32('[1, 0]')); \
         SELECT pluresdb_vector_index('t', 'emb')",
    ]);
    cli.ok(&["text-index", "t", "body"]);
    let err = cli.fails(&["sql", "ALTER TABLE t DROP COLUMN emb"]);
    assert!(
        err.starts_with(
            "error: cannot drop column \"emb\" of table \"t\": the vector index t.emb uses it; \
             drop the index first with SELECT pluresdb_vector_index_drop('t', 'emb') (or \
             pluresdb vector-index t emb --drop)"
        ),
        "{err}"
    );
    let err = cli.fails(&["sql", "ALTER TABLE t DROP COLUMN body"]);
    assert!(err.contains("pluresdb text-index t --drop"), "{err}");
    // The ways out named work, and then the columns can be dropped.
    cli.ok(&["vector-index", "t", "emb", "--drop"]);
    cli.ok(&["sql", "ALTER TABLE t DROP COLUMN emb"]);
    assert_eq!(
        cli.ok(&["text-index", "t", "--drop"]),
        "dropped the text index on t\n"
    );
    let err = cli.fails(&["text-index", "t", "--drop"]);
    assert!(err.contains("there is no text index on t"), "{err}");
    cli.ok(&["sql", "ALTER TABLE t DROP COLUMN body"]);
    assert_eq!(cli.json(&["sql", "SELECT * FROM t"]), json!([{"id": 1}]));
}

#[test]
fn importing_or_applying_a_directory_names_it() {
    let cli = Cli::new();
    let dir = cli.path("a_directory");
    std::fs::create_dir(&dir).unwrap();
    let dir = dir.to_str().unwrap();
    for args in [
        &["import", dir, "--table", "t"][..],
        &["import", dir, "--nodes"][..],
        &["apply", dir][..],
    ] {
        let err = cli.fails(args);
        assert!(
            err.contains(&format!("cannot read {dir}: it is a directory")),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn reals_never_print_as_integers() {
    let cli = Cli::new();
    let table = cli.ok(&["sql", "SELECT 1e20 AS big, 1e-7 AS small, 2.0 AS two"]);
    assert!(
        table.contains("│ 1.0e+20 ┆ 1.0e-07 ┆ 2.0 │"),
        "a real of 1e20 is not 100000000000000000000: {table}"
    );
    let csv = cli.ok(&["sql", "--mode", "csv", "SELECT 1e20 AS big, 9e999 AS inf"]);
    assert_eq!(csv, "big,inf\n1.0e+20,Inf\n");
}

#[test]
fn shell_dot_command_arguments_may_be_quoted() {
    let cli = Cli::new();
    std::fs::create_dir(cli.path("my data")).unwrap();
    let csv = cli.path("my data/in put.csv");
    std::fs::write(&csv, "a,b\n1,x\n").unwrap();
    let out = cli.run_with(
        &["shell"],
        Some(&format!(
            ".import \"{}\" t\n.import '{}' 'u'\nSELECT count(*) AS n FROM t, u;\n",
            csv.display(),
            csv.display()
        )),
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("imported 1 records into t"), "{stdout}");
    assert!(stdout.contains("imported 1 records into u"), "{stdout}");
}

#[test]
fn the_shell_says_when_a_write_failed_because_of_read_only() {
    let cli = Cli::new();
    cli.ok(&["sql", "CREATE TABLE t(x)"]);
    let out = cli.run_with(
        &["--read-only", "shell"],
        Some("INSERT INTO t VALUES (1);\n"),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("opened with --read-only"), "{stderr}");
}

#[test]
fn shell_prints_the_rows_of_every_statement_on_a_line() {
    let cli = Cli::new();
    let out = cli.run_with(
        &["shell"],
        Some(
            "SELECT 'first' AS a; SELECT 'second' AS b;\n\
             CREATE TABLE t(x); CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; SELECT 2; END;\n\
             INSERT INTO t VALUES ('a;b'); SELECT x AS semi FROM t; -- a comment; with a semicolon\n\
             .mode csv\n\
             SELECT 3 AS c; SELECT 4 AS d;\n",
        ),
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("first"),
        "like sqlite3, not only the last: {stdout}"
    );
    assert!(stdout.contains("second"), "{stdout}");
    assert!(stdout.contains("│ a;b  │"), "{stdout}");
    assert!(stdout.ends_with("c\n3\nd\n4\n"), "{stdout}");
}

#[test]
fn shell_read_runs_a_file_as_if_typed() {
    let cli = Cli::new();
    let script = cli.path("script.sql");
    std::fs::write(
        &script,
        ".mode csv\n\
         CREATE TABLE r(x);\n\
         INSERT INTO r VALUES (1);\n\
         SELECT nope;\n\
         INSERT INTO r VALUES (2);\n\
         SELECT count(*) AS n FROM r;\n",
    )
    .unwrap();
    let looping = cli.path("loop.sql");
    std::fs::write(&looping, format!(".read {}\n", looping.display())).unwrap();
    let out = cli.run_with(
        &["shell"],
        Some(&format!(
            ".read {}\n.read {}\n.mode\n",
            script.display(),
            looping.display()
        )),
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        !out.status.success(),
        "an error in the file fails the shell"
    );
    assert!(stderr.contains("no such column: nope"), "{stderr}");
    assert!(
        stdout.contains("n\n2\n"),
        "dot commands run, and the file goes on after an error (as sqlite3's .read): {stdout}"
    );
    assert!(stderr.contains("nested more than"), "{stderr}");
    assert!(stdout.ends_with("current mode: csv\n"), "{stdout}");
}

/// Starts a `pluresdb shell` process that runs `write` (SQL) in a transaction it keeps open,
/// and returns once it holds the write lock; it commits when its input gets `COMMIT;`.
fn hold_write_lock(cli: &Cli, write: &str) -> (std::process::Child, std::process::ChildStdin) {
    let mut holder = Command::new(env!("CARGO_BIN_EXE_pluresdb"))
        .arg("--db")
        .arg(cli.db())
        .arg("shell")
        .env("PLURESDB_HISTORY", cli.path("history"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = holder.stdin.take().unwrap();
    input
        .write_all(format!("BEGIN IMMEDIATE;\n{write};\nSELECT 'held' AS h;\n").as_bytes())
        .unwrap();
    input.flush().unwrap();
    // Wait until the holder has the write lock (it printed the row after its write).
    let mut stdout = holder.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !String::from_utf8_lossy(&seen).contains("held") {
        assert_eq!(std::io::Read::read(&mut stdout, &mut byte).unwrap(), 1);
        seen.push(byte[0]);
    }
    (holder, input)
}

#[test]
fn a_locked_database_says_how_to_wait_longer() {
    let cli = Cli::new();
    cli.ok(&["sql", "CREATE TABLE t(x)"]);
    let (mut holder, mut input) = hold_write_lock(&cli, "INSERT INTO t VALUES (1)");
    let err = cli.fails(&["--busy-timeout", "200", "sql", "INSERT INTO t VALUES (2)"]);
    assert!(err.contains("database is locked"), "{err}");
    assert!(err.contains("--busy-timeout"), "the hint says how: {err}");
    input.write_all(b"COMMIT;\n").unwrap();
    drop(input);
    assert!(holder.wait().unwrap().success());
    cli.ok(&["--busy-timeout", "200", "sql", "INSERT INTO t VALUES (2)"]);
}

#[test]
fn a_search_while_another_process_writes_does_not_wait_for_it() {
    // `search` loads the vector index and saves its graph when it closes; while another
    // process (an app) holds the write lock, that upkeep is left for later instead of holding
    // the command up until the busy timeout.
    let cli = Cli::new();
    cli.ok(&[
        "sql",
        "CREATE TABLE docs(id INTEGER PRIMARY KEY, title TEXT, embedding BLOB)",
    ]);
    cli.ok(&["vector-index", "docs", "embedding", "--metric", "cosine"]);
    cli.ok(&[
        "sql",
        "INSERT INTO docs(title, embedding) VALUES ('a', vec_f32('[0.1, 0.9, 0.3]')), ('b', vec_f32('[0.9, 0.1, 0.3]'))",
    ]);
    let (holder, mut input) = hold_write_lock(
        &cli,
        "INSERT INTO docs(title, embedding) VALUES ('c', vec_f32('[0.5, 0.5, 0.5]'))",
    );
    let started = std::time::Instant::now();
    let found = cli.json(&[
        "--busy-timeout",
        "4000",
        "search",
        "docs",
        "[0.1, 0.8, 0.2]",
        "-k",
        "1",
    ]);
    let took = started.elapsed();
    input.write_all(b"COMMIT;\n").unwrap();
    drop(input);
    assert!(holder.wait_with_output().unwrap().status.success());
    assert_eq!(found[0]["title"], "a", "{found}");
    assert!(
        took < std::time::Duration::from_secs(2),
        "search took {took:?} while another process held the write lock"
    );
}

#[test]
fn a_reader_that_goes_away_stops_the_output_quietly() {
    let cli = Cli::new();
    let many = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100000) \
                SELECT x FROM c";
    let shell_input = format!(".mode csv\n{many};\nCREATE TABLE after(x);\n");
    for (args, stdin) in [
        (vec!["sql", many], None),
        (vec!["--json", "sql", many], None),
        (vec!["export", "--query", many], None),
        (vec!["shell"], Some(shell_input.as_str())),
    ] {
        let mut child = cli.spawn(&args, stdin);
        // Read a little, then go away like `| head -1`.
        let mut stdout = child.stdout.take().unwrap();
        let mut first = [0u8; 16];
        std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
        drop(stdout);
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
        assert!(out.status.success(), "{args:?}");
    }
    let tables = cli.ok(&["shell"]);
    assert!(!tables.contains("after"), "the shell stopped: {tables}");
}

#[test]
fn a_syntax_error_in_a_long_line_shows_only_its_surroundings() {
    let cli = Cli::new();
    let sql = format!("SELECT 1 AS 1{};", " + 1".repeat(100_000));
    let out = cli.run_with(&["sql"], Some(&sql));
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.len() < 400, "{} bytes of error", stderr.len());
    assert!(stderr.contains("syntax error"), "{stderr}");
    assert!(stderr.contains("^ (at byte 12)"), "{stderr}");
}

#[test]
fn a_csv_file_ending_inside_a_quoted_field_is_refused() {
    let cli = Cli::new();
    // The csv crate reads the rest of the file into the open field without an error.
    let open = cli.path("open.csv");
    std::fs::write(&open, "a,b\n1,x\n2,\"two\nlines\"\n3,\"unterminated\n4,y\n").unwrap();
    let expected = "error: line 5: a quoted field starts on this line and its quote is never \
                    closed (the file ends inside it); add the closing '\"', or double each '\"' \
                    that is part of the value\n";
    let err = cli.fails(&["import", open.to_str().unwrap(), "--table", "t"]);
    assert_eq!(err, expected);
    let err = cli.fails(&["sql", "SELECT * FROM t"]);
    assert!(err.contains("no such table"), "{err}");
    // Into an existing table, into nodes, and where the open field leaves its record short of
    // fields: the same error, and nothing imported.
    cli.ok(&["sql", "CREATE TABLE t(a, b)"]);
    let err = cli.fails(&["import", open.to_str().unwrap(), "--table", "t"]);
    assert_eq!(err, expected);
    std::fs::write(&open, "id,a,b\n1,\"x\",y\n2,\"open,z\n").unwrap();
    let err = cli.fails(&["import", open.to_str().unwrap(), "--nodes"]);
    assert!(err.starts_with("error: line 3: a quoted field"), "{err}");
    assert_eq!(
        cli.json(&[
            "sql",
            "SELECT (SELECT count(*) FROM t) + (SELECT count(*) FROM pluresdb_nodes) AS n"
        ]),
        json!([{"n": 0}])
    );
    // Closed quotes, a doubled quote and a quote inside an unquoted field are fine.
    std::fs::write(&open, "a,b\n1,\"x \"\"q\"\"\"\n2,y\"z\n").unwrap();
    assert_eq!(
        cli.ok(&["import", open.to_str().unwrap(), "--table", "t"]),
        "imported 2 records\n"
    );
}

#[test]
fn import_refuses_csv_node_data_naming_a_key_twice() {
    let cli = Cli::new();
    // A node's data as JSON text in a CSV cell is read as strictly as a JSONL line: with
    // serde_json's own parser the last "a" won and the other value was lost.
    let dup = cli.path("dup.csv");
    std::fs::write(
        &dup,
        "id,type,data\nok,,\"{\"\"a\"\": 1}\"\nn1,T,\"{\"\"a\"\": 1, \"\"b\"\": {\"\"c\"\": 2}, \"\"a\"\": 2}\"\n",
    )
    .unwrap();
    let err = cli.fails(&["import", dup.to_str().unwrap(), "--nodes"]);
    assert_eq!(
        err,
        "error: line 3: the \"data\" field: key \"a\" appears twice in one object; remove one \
         so each key appears once\n"
    );
    std::fs::write(
        &dup,
        "id,data\nn2,\"{\"\"b\"\": {\"\"c\"\": 1, \"\"c\"\": 2}}\"\n",
    )
    .unwrap();
    let err = cli.fails(&["import", dup.to_str().unwrap(), "--nodes"]);
    assert!(
        err.starts_with("error: line 2: the \"data\" field: key \"c\" appears twice"),
        "{err}"
    );
    assert_eq!(
        cli.json(&["sql", "SELECT count(*) AS n FROM pluresdb_nodes"]),
        json!([{"n": 0}])
    );
    // Data that is not JSON stays a field of a flat record, as before.
    std::fs::write(&dup, "id,data\nn3,{not json\n").unwrap();
    cli.ok(&["import", dup.to_str().unwrap(), "--nodes"]);
    assert_eq!(
        cli.json(&["get", "n3"])["data"],
        json!({"data": "{not json"})
    );
}

#[test]
fn sql_with_params_prints_the_header_of_a_result_without_rows() {
    let cli = Cli::new();
    cli.ok(&["sql", "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT)"]);
    // With --params the columns were taken from the first row, so no row meant no header.
    for mode in ["table", "csv", "line", "json"] {
        let plain = cli.ok(&["sql", "--mode", mode, "SELECT id, name FROM t WHERE id = 7"]);
        let with_params = cli.ok(&[
            "sql",
            "--mode",
            mode,
            "SELECT id, name FROM t WHERE id = ?",
            "--params",
            "[7]",
        ]);
        assert_eq!(with_params, plain, "--mode {mode}");
    }
    let table = cli.ok(&[
        "sql",
        "SELECT id, name FROM t WHERE id = ?",
        "--params",
        "[7]",
    ]);
    assert!(table.contains("│ id ┆ name │"), "{table}");
    let csv = cli.ok(&[
        "sql",
        "--mode",
        "csv",
        "SELECT id FROM t WHERE id > ?",
        "--params",
        "[0]",
    ]);
    assert_eq!(csv, "id\n");
    assert_eq!(
        cli.json(&["sql", "SELECT id FROM t WHERE id = ?", "--params", "[7]"]),
        json!([])
    );
}

#[test]
fn sql_with_params_and_several_statements_says_what_to_do() {
    let cli = Cli::new();
    cli.ok(&["sql", "CREATE TABLE t(x)"]);
    // The error spoke of the Rust API: "prepare() takes one, use exec() for several".
    let err = cli.fails(&[
        "sql",
        "INSERT INTO t VALUES (?); SELECT * FROM t",
        "--params",
        "[1]",
    ]);
    assert_eq!(
        err,
        "error: --params binds one statement, but the SQL holds more than one; run one \
         statement per command when using --params (without --params, sql runs them all and \
         prints the rows of the last)\n"
    );
    assert_eq!(
        cli.json(&["sql", "SELECT count(*) AS n FROM t"]),
        json!([{"n": 0}])
    );
    // One statement, with a trailing semicolon and comment, still runs.
    cli.ok(&["sql", "INSERT INTO t VALUES (?); -- one", "--params", "[1]"]);
    assert_eq!(cli.json(&["sql", "SELECT x FROM t"]), json!([{"x": 1}]));
}

#[test]
fn processes_that_sync_a_table_and_write_to_it_at_once_all_succeed() {
    // Each runs `SELECT pluresdb_sync_table('t')` and an insert, as a setup script of an app
    // or an extension would, at the same time as the others: none may fail with "database is
    // locked" (they did, at once, when another had committed after their statement began).
    let cli = Cli::new();
    for round in 0..3 {
        let table = format!("t{round}");
        cli.ok(&[
            "sql",
            &format!("CREATE TABLE {table}(id TEXT PRIMARY KEY NOT NULL, v TEXT)"),
        ]);
        let script = |i: usize| {
            format!(
                "SELECT pluresdb_sync_table('{table}'); INSERT INTO {table} VALUES ('k{i}', 'v')"
            )
        };
        let children: Vec<_> = (0..6)
            .map(|i| cli.spawn(&["sql", &script(i)], None))
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let rows = cli.json(&["sql", &format!("SELECT count(*) AS n FROM {table}")]);
        assert_eq!(rows[0]["n"], 6);
    }
}

#[test]
fn an_export_killed_midway_leaves_the_previous_file_whole() {
    let cli = Cli::new();
    cli.ok(&[
        "sql",
        "CREATE TABLE t(id INTEGER PRIMARY KEY, body TEXT NOT NULL);
         WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 5000)
         INSERT INTO t SELECT i, printf('row %d ', i) || hex(randomblob(40)) FROM c",
    ]);
    for format in ["csv", "jsonl"] {
        let file = cli.path(&format!("t.{format}"));
        let file = file.to_str().unwrap();
        cli.ok(&["export", "--table", "t", "--format", format, "-o", file]);
        let before = std::fs::read(file).unwrap();
        // A second export to the same file, killed halfway through the rows.
        let out = cli
            .command(&["export", "--table", "t", "--format", format, "-o", file])
            .env("PLURESDB_CRASH_AT", "export:midway")
            .output()
            .unwrap();
        assert!(!out.status.success(), "the export was to abort");
        // The file is the earlier export, whole: not a truncated one whose last row imports cut short.
        assert!(
            std::fs::read(file).unwrap() == before,
            "a killed {format} export left {file} cut short"
        );
        // The next export replaces what the killed one left, and imports whole.
        cli.ok(&["export", "--table", "t", "--format", format, "-o", file]);
        let copy = format!("copy_{format}");
        cli.ok(&["import", file, "--table", &copy]);
        let n = cli.ok(&[
            "--json",
            "query",
            &format!("SELECT count(*) AS n FROM {copy}"),
        ]);
        assert!(n.contains("5000"), "{n}");
    }
}

/// Exports are written under a temporary name and renamed (see the test above): a symbolic
/// link named as the output stays a link, its target gets the export, and a file replaced
/// keeps its permissions.
#[cfg(unix)]
#[test]
fn an_export_through_a_symbolic_link_writes_its_target_and_keeps_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let cli = Cli::new();
    cli.ok(&["sql", "CREATE TABLE t(a); INSERT INTO t VALUES (1), (2)"]);
    let target = cli.path("target.jsonl");
    let link = cli.path("link.jsonl");
    std::fs::write(&target, "old\n").unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink(&target, &link).unwrap();
    cli.ok(&["export", "--table", "t", "-o", link.to_str().unwrap()]);
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        "{\"a\":1}\n{\"a\":2}\n"
    );
    cli.ok(&["export", "--table", "t", "-o", target.to_str().unwrap()]);
    let mode = std::fs::metadata(&target).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn edges_export_and_import_back_as_jsonl_and_csv() {
    let cli = Cli::new();
    for id in ["a", "b", "c"] {
        cli.ok(&["put", id, "{}"]);
    }
    cli.ok(&[
        "link",
        "a",
        "knows",
        "b",
        r#"{"since": 2020, "tags": ["x"]}"#,
    ]);
    cli.ok(&["link", "b", "knows", "c"]);
    cli.ok(&["link", "c", "likes", "c"]);
    let nodes = cli.path("nodes.jsonl");
    cli.ok(&["export", "--nodes", "-o", nodes.to_str().unwrap()]);
    let edges = cli.path("edges.jsonl");
    cli.ok(&["export", "--edges", "-o", edges.to_str().unwrap()]);
    // Data is exported as the object it is, as for nodes.
    let first: Value = serde_json::from_str(
        std::fs::read_to_string(&edges)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        first,
        json!({"from_id": "a", "relation": "knows", "to_id": "b", "data": {"since": 2020, "tags": ["x"]}})
    );
    let edges_csv = cli.path("edges.csv");
    cli.ok(&[
        "export",
        "--edges",
        "--format",
        "csv",
        "-o",
        edges_csv.to_str().unwrap(),
    ]);
    let all = |c: &Cli| c.json(&["sql", "SELECT * FROM pluresdb_edges ORDER BY 1, 2, 3"]);
    let shown = |c: &Cli| {
        all(c)
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["from_id"].clone(),
                    e["relation"].clone(),
                    e["to_id"].clone(),
                    e["data"].clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    // (The CSV file's first record is on line 2, after its header.)
    for (file, first_line) in [(&edges, "line 1"), (&edges_csv, "line 2")] {
        let other = Cli::new();
        // Edges need their nodes: importing them first fails, naming the line, and links none.
        let err = other.fails(&["import", file.to_str().unwrap(), "--edges"]);
        assert!(
            err.contains(&format!("{first_line}: source node \"a\" does not exist")),
            "{err}"
        );
        assert_eq!(all(&other), json!([]));
        other.ok(&["import", nodes.to_str().unwrap(), "--nodes"]);
        assert_eq!(
            other
                .ok(&["import", file.to_str().unwrap(), "--edges"])
                .trim(),
            "imported 3 records"
        );
        assert_eq!(shown(&other), shown(&cli));
    }
    // An edge as `link --json` prints it is taken too.
    let printed = cli.path("printed.jsonl");
    let edge = cli.json(&["link", "c", "knows", "a", r#"{"w": 1}"#]);
    std::fs::write(&printed, format!("{edge}\n")).unwrap();
    let other = Cli::new();
    other.ok(&["import", nodes.to_str().unwrap(), "--nodes"]);
    assert_eq!(
        other
            .ok(&["import", printed.to_str().unwrap(), "--edges"])
            .trim(),
        "imported 1 record"
    );
    assert_eq!(
        other.json(&["sql", "SELECT from_id, to_id, data FROM pluresdb_edges"]),
        json!([{"from_id": "c", "to_id": "a", "data": "{\"w\":1}"}])
    );
    // A record that is not an edge says what one is.
    let bad = cli.path("bad.jsonl");
    std::fs::write(&bad, "{\"from_id\": \"a\", \"to_id\": \"b\"}\n").unwrap();
    let err = cli.fails(&["import", bad.to_str().unwrap(), "--edges"]);
    assert!(
        err.contains("line 1") && err.contains("no \"relation\" field"),
        "{err}"
    );
    std::fs::write(
        &bad,
        "{\"from_id\": \"a\", \"relation\": \"r\", \"to_id\": \"b\", \"weight\": 2}\n",
    )
    .unwrap();
    let err = cli.fails(&["import", bad.to_str().unwrap(), "--edges"]);
    assert!(err.contains("unknown field \"weight\""), "{err}");
}
