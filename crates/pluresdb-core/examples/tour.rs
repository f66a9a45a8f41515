//! The README's Rust tour, runnable: `cargo run -p pluresdb-core --example tour`.

use pluresdb_core::{Database, Direction, named_params};
use serde_json::json;

fn main() -> Result<(), pluresdb_core::Error> {
    let dir = std::env::temp_dir().join(format!("pluresdb-tour-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let db = Database::open(dir.join("app.db"))?; // WAL, foreign keys on, 5 s busy timeout

    // The SQL API, in the style of better-sqlite3.
    db.exec("CREATE TABLE IF NOT EXISTS notes(id INTEGER PRIMARY KEY, body TEXT NOT NULL)")?;
    let info = db.run("INSERT INTO notes(body) VALUES (?)", ("hello",))?; // changes, last_insert_rowid
    let row = db.get(
        "SELECT body FROM notes WHERE id = :id",
        named_params! {":id": info.last_insert_rowid},
    )?;
    println!("first note: {:?}", row.map(|r| r.to_json()));
    let insert = db.prepare("INSERT INTO notes(body) VALUES (@body)")?; // reusable, cached
    db.transaction(|tx| {
        insert.run(json!({"body": "one"}))?; // commits on Ok, rolls back on Err or panic
        tx.transaction(|tx2| tx2.run("DELETE FROM notes WHERE id = 1", ()))?; // nests with savepoints
        Ok::<_, pluresdb_core::Error>(())
    })?;
    let all: Vec<(i64, String)> = db.all_as("SELECT id, body FROM notes", ())?;
    println!("notes: {all:?}");
    for row in db.iterate("SELECT * FROM notes", ())? {
        println!("streamed: {}", row?.to_json()); // streamed, not loaded at once
    }

    // The graph, with the names PluresDB users know.
    let changes = db.on_change(); // every committed change: nodes, edges, SQL rows
    let sub = db.on("*", |change| println!("node {} changed", change.id));
    db.put("ada", &json!({"name": "Ada"}))?;
    db.put("alan", &json!({"name": "Alan"}))?;
    db.link("ada", "inspired", "alan", None)?;
    let next = db.neighbors("ada", Direction::Out, Some("inspired"))?;
    println!("ada inspired {}", next[0].data["name"]);
    db.off(sub);
    println!("{} changes so far", changes.drain().len());

    drop(db);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
