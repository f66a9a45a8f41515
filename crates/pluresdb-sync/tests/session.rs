//! Sync sessions over real WebSockets on 127.0.0.1, and change files.

use std::time::{Duration, Instant};

use pluresdb_core::{Database, ErrorKind, Value, VersionVector};
use pluresdb_sync::codec::{DEFAULT_MAX_MESSAGE as MAX, Message};
use pluresdb_sync::file::{apply_file, write_changes};
use pluresdb_sync::net::{bind, serve, sync_with};
use pluresdb_sync::{SessionOptions, run_session};
use serde_json::json;

fn open(dir: &tempfile::TempDir, name: &str) -> Database {
    with_todos(Database::open(dir.path().join(name)).unwrap())
}

/// `db` with the synced table `todos`.
fn with_todos(db: Database) -> Database {
    db.exec("CREATE TABLE IF NOT EXISTS todos(id TEXT PRIMARY KEY NOT NULL, title TEXT NOT NULL DEFAULT '', done INTEGER NOT NULL DEFAULT 0)").unwrap();
    db.sync_table("todos").unwrap();
    db
}

/// Fills `todos` with 60,000 rows: about 6 MB of changes, more than the socket buffers and a
/// sender's queue hold.
fn fill_beyond_buffers(db: &Database) {
    fill(
        db,
        "row",
        60_000,
        "a title of about sixty bytes, long enough to fill",
    );
}

fn rows(db: &Database) -> Vec<String> {
    let mut out: Vec<String> = db
        .all("SELECT * FROM todos ORDER BY id", ())
        .unwrap()
        .iter()
        .map(|r| r.to_json().to_string())
        .collect();
    out.extend(
        db.list("")
            .unwrap()
            .into_iter()
            .map(|n| format!("{} {}", n.id, json!(n.data))),
    );
    out.extend(
        db.all(
            "SELECT from_id, relation, to_id, data FROM pluresdb_edges ORDER BY 1, 2, 3",
            (),
        )
        .unwrap()
        .iter()
        .map(|r| r.to_json().to_string()),
    );
    out
}

/// Inserts rows `{prefix}-00000`, `{prefix}-00001`, ... with `title`, in one transaction.
fn fill(db: &Database, prefix: &str, rows: usize, title: &str) {
    db.transaction(|tx| {
        let stmt = tx.prepare("INSERT INTO todos(id, title) VALUES (?1, ?2)")?;
        for i in 0..rows {
            stmt.run((format!("{prefix}-{i:05}"), title))?;
        }
        Ok::<_, pluresdb_core::Error>(())
    })
    .unwrap();
}

/// A peer speaking the protocol by hand, over a real WebSocket.
type RawPeer =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects a hand-driven peer to `url` and sends its hello (as site `site`, which has
/// nothing from anyone).
async fn raw_peer(url: &str, site: pluresdb_core::SiteId, db_version: u64) -> RawPeer {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    raw_send(&mut ws, raw_hello(site, db_version, false).encode()).await;
    ws
}

/// The hello of a hand-driven peer (site `site`, which has nothing from anyone); one that
/// `resumes` is of protocol version 2.
fn raw_hello(site: pluresdb_core::SiteId, db_version: u64, resumes: bool) -> Message {
    Message::Hello {
        site,
        db_version,
        have: VersionVector::new(),
        resumes,
        refetches: false,
        key_columns: false,
        refusals: false,
    }
}

/// Sends an encoded message from a hand-driven peer.
async fn raw_send(ws: &mut RawPeer, bytes: Vec<u8>) {
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::binary(bytes))
        .await
        .unwrap();
}

/// The next message a hand-driven peer receives; fails the test if the server closed the
/// connection or stopped with an error.
async fn raw_receive(ws: &mut RawPeer) -> Message {
    use futures_util::StreamExt;
    loop {
        match ws.next().await {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Binary(bytes))) => {
                match Message::decode(&bytes, usize::MAX).unwrap() {
                    Message::Error(e) => panic!("the server stopped: {e}"),
                    m => return m,
                }
            }
            Some(Ok(_)) => {}
            other => panic!("the server closed the connection: {other:?}"),
        }
    }
}

/// Runs a session between `a` and `b` over an in-process pipe that buffers 64 KiB (no TCP).
async fn sync_over_pipe(
    a: &Database,
    b: &Database,
) -> (
    pluresdb_core::Result<pluresdb_sync::SessionReport>,
    pluresdb_core::Result<pluresdb_sync::SessionReport>,
) {
    let (left, right) = tokio::io::duplex(1 << 16);
    let (ws_a, ws_b) = tokio::join!(
        tokio_tungstenite::client_async("ws://pipe/", left),
        tokio_tungstenite::accept_async(right)
    );
    let (ws_a, _) = ws_a.unwrap();
    let ws_b = ws_b.unwrap();
    let opts = SessionOptions::default();
    tokio::join!(
        run_session(a.clone(), ws_a, &opts),
        run_session(b.clone(), ws_b, &opts)
    )
}

/// [`sync_over_pipe`], which must succeed on both sides.
async fn sync_ok(a: &Database, b: &Database) {
    let (ra, rb) = sync_over_pipe(a, b).await;
    ra.unwrap();
    rb.unwrap();
}

async fn start_server(db: Database) -> String {
    start_server_with(db, &SessionOptions::default()).await
}

async fn start_server_with(db: Database, opts: &SessionOptions) -> String {
    let (listener, addr) = bind("127.0.0.1:0").await.unwrap();
    tokio::spawn(serve(db, listener, opts.clone()));
    format!("ws://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_way_sync_over_websocket_converges() {
    let dir = tempfile::tempdir().unwrap();
    let server_db = open(&dir, "server.db");
    let client_db = open(&dir, "client.db");
    for i in 0..300 {
        server_db
            .run(
                "INSERT INTO todos(id, title) VALUES (?, ?)",
                (format!("s{i}"), "from server"),
            )
            .unwrap();
    }
    server_db.put("ada", &json!({"name": "Ada"})).unwrap();
    client_db
        .run(
            "INSERT INTO todos(id, title) VALUES ('c1', 'from client')",
            (),
        )
        .unwrap();
    client_db.put("alan", &json!({"name": "Alan"})).unwrap();
    let url = start_server(server_db.clone()).await;
    let report = sync_with(client_db.clone(), &url, &SessionOptions::default())
        .await
        .unwrap();
    assert_eq!(report.peer, Some(server_db.site_id()));
    assert!(report.received >= 300, "{report:?}");
    assert!(report.sent >= 2, "{report:?}");
    // The server applied the client's batches before acknowledging.
    assert_eq!(rows(&client_db), rows(&server_db));
    // Sync status on both sides.
    let status = client_db.sync_status().unwrap();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].address.as_deref(), Some(url.as_str()));
    assert_eq!(status[0].pending, 0);
    assert!(status[0].last_sync_ms.is_some());
    // A second sync is incremental: nothing to send either way.
    let again = sync_with(client_db.clone(), &url, &SessionOptions::default())
        .await
        .unwrap();
    assert_eq!((again.sent, again.received), (0, 0), "{again:?}");
    // Rows of a table the client does not sync are left out, and the report says how many.
    server_db
        .exec("CREATE TABLE notes(id TEXT PRIMARY KEY NOT NULL, body TEXT)")
        .unwrap();
    server_db.sync_table("notes").unwrap();
    server_db
        .run("INSERT INTO notes VALUES ('n1', 'x'), ('n2', 'y')", ())
        .unwrap();
    let skipping = sync_with(client_db.clone(), &url, &SessionOptions::default())
        .await
        .unwrap();
    assert_eq!(
        (skipping.received, skipping.skipped),
        (4, 4),
        "{skipping:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_mode_delivers_new_changes_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let server_db = open(&dir, "server.db");
    let client_db = open(&dir, "client.db");
    let url = start_server(server_db.clone()).await;
    let session = watching(&client_db, &url);
    // Let the initial exchange finish.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut latencies = Vec::new();
    for i in 0..5 {
        let id = format!("live{i}");
        let start = Instant::now();
        server_db
            .run(
                "INSERT INTO todos(id, title) VALUES (?, 'live')",
                (id.clone(),),
            )
            .unwrap();
        loop {
            if client_db
                .get("SELECT 1 FROM todos WHERE id = ?", (id.clone(),))
                .unwrap()
                .is_some()
            {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "change {i} never arrived"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        latencies.push(start.elapsed());
        // And the other direction.
        let id = format!("back{i}");
        let start = Instant::now();
        client_db
            .run(
                "INSERT INTO todos(id, title) VALUES (?, 'back')",
                (id.clone(),),
            )
            .unwrap();
        loop {
            if server_db
                .get("SELECT 1 FROM todos WHERE id = ?", (id.clone(),))
                .unwrap()
                .is_some()
            {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "change back{i} never arrived"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        latencies.push(start.elapsed());
    }
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    assert!(
        median < Duration::from_millis(250),
        "median latency {median:?}"
    );
    session.abort();
    assert_eq!(rows(&client_db), rows(&server_db));
}

/// A watching session of `db` with the server at `url`, running until aborted.
fn watching(
    db: &Database,
    url: &str,
) -> tokio::task::JoinHandle<pluresdb_core::Result<pluresdb_sync::SessionReport>> {
    let (db, url) = (db.clone(), url.to_owned());
    tokio::spawn(async move {
        let opts = SessionOptions {
            watch: true,
            ..Default::default()
        };
        sync_with(db, &url, &opts).await
    })
}

/// Waits up to 5 s for the row `id` of `todos` to exist in `db`.
async fn arrives(db: &Database, id: &str) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if db
            .get("SELECT 1 FROM todos WHERE id = ?", (id,))
            .unwrap()
            .is_some()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_mode_sends_writes_made_by_other_processes() {
    // Another handle on the same file stands for another process (such as a `pluresdb sql`
    // command): its commits do not wake this handle's watchers.
    let dir = tempfile::tempdir().unwrap();
    let server_db = open(&dir, "server.db");
    let client_db = open(&dir, "client.db");
    let url = start_server(server_db.clone()).await;
    let session = watching(&client_db, &url);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let client_other = Database::open(dir.path().join("client.db")).unwrap();
    client_other
        .run(
            "INSERT INTO todos(id, title) VALUES ('from-other', 'x')",
            (),
        )
        .unwrap();
    assert!(
        arrives(&server_db, "from-other").await,
        "the client never sent it"
    );
    let server_other = Database::open(dir.path().join("server.db")).unwrap();
    server_other
        .run("INSERT INTO todos(id, title) VALUES ('to-client', 'y')", ())
        .unwrap();
    assert!(
        arrives(&client_db, "to-client").await,
        "the server never sent it"
    );
    session.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_dropped_and_made_again_gets_its_own_rows_back_from_the_peer() {
    let dir = tempfile::tempdir().unwrap();
    let (server_db, client_db) = (open(&dir, "server.db"), open(&dir, "client.db"));
    client_db
        .run(
            "INSERT INTO todos(id, title) VALUES ('mine', 'written here')",
            (),
        )
        .unwrap();
    server_db
        .run(
            "INSERT INTO todos(id, title) VALUES ('theirs', 'written there')",
            (),
        )
        .unwrap();
    sync_ok(&client_db, &server_db).await;
    // The table stops syncing here, is dropped and made again empty, and syncs again.
    client_db.unsync_table("todos").unwrap();
    client_db
        .exec(
            "DROP TABLE todos;
             CREATE TABLE todos(id TEXT PRIMARY KEY NOT NULL, title TEXT NOT NULL DEFAULT '',
                                done INTEGER NOT NULL DEFAULT 0);",
        )
        .unwrap();
    client_db.sync_table("todos").unwrap();
    let report = sync_over_pipe(&client_db, &server_db).await.0.unwrap();
    // The peer sends the rows written here too, and nothing was deleted anywhere.
    assert!(report.applied >= 2, "{report:?}");
    for db in [&client_db, &server_db] {
        assert_eq!(
            db.all_as::<(String, String)>("SELECT id, title FROM todos ORDER BY id", ())
                .unwrap(),
            [
                ("mine".to_owned(), "written here".to_owned()),
                ("theirs".to_owned(), "written there".to_owned())
            ]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_synced_while_a_watch_runs_gets_its_left_out_rows() {
    // The watching client connects again itself.
    left_out_rows_arrive_once_the_table_syncs(Side::Client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_synced_on_the_server_while_a_client_watches_gets_its_left_out_rows() {
    // The server cannot connect: it ends the session with close code 1012, and the client
    // connects again.
    left_out_rows_arrive_once_the_table_syncs(Side::Server).await;
}

#[derive(Clone, Copy, PartialEq)]
enum Side {
    Server,
    Client,
}

/// A client watches a server. One side (`late`) leaves out the other's `notes` rows: it has
/// the table and does not sync it. Another process then syncs it there, which sets that side's
/// cursors back so that a sync asks for everything. The running watch must not undo that by
/// recording newer versions (the rows were then never asked for again), and the two connect
/// again so that the late side asks for them; the watch goes on.
async fn left_out_rows_arrive_once_the_table_syncs(late: Side) {
    let dir = tempfile::tempdir().unwrap();
    let server_db = open(&dir, "server.db");
    let client_db = open(&dir, "client.db");
    let (late_name, late_db, early_db) = match late {
        Side::Server => ("server.db", &server_db, &client_db),
        Side::Client => ("client.db", &client_db, &server_db),
    };
    let notes = "CREATE TABLE notes(id TEXT PRIMARY KEY NOT NULL, body TEXT)";
    early_db.exec(notes).unwrap();
    early_db.sync_table("notes").unwrap();
    early_db
        .run("INSERT INTO notes VALUES ('n1', 'x')", ())
        .unwrap();
    late_db.exec(notes).unwrap();
    let url = start_server(server_db.clone()).await;
    let session = watching(&client_db, &url);
    early_db
        .run("INSERT INTO todos(id, title) VALUES ('before', 'x')", ())
        .unwrap();
    assert!(arrives(late_db, "before").await);
    let late_other = Database::open(dir.path().join(late_name)).unwrap();
    // Waits until a merge has left the notes out (they may come after `before`).
    let started = Instant::now();
    while late_db
        .value("SELECT value FROM _pluresdb_meta WHERE key = 'missed'", ())
        .unwrap()
        == Value::Null
    {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "notes never left out"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    late_other.sync_table("notes").unwrap();
    assert_eq!(late_db.cursor_resets().unwrap(), 1);
    let started = Instant::now();
    while late_db.value("SELECT body FROM notes", ()).unwrap() != Value::Text("x".into()) {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the left-out rows were never asked for again"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // And the watch goes on, both ways.
    server_db
        .run("INSERT INTO todos(id, title) VALUES ('after', 'x')", ())
        .unwrap();
    assert!(arrives(&client_db, "after").await);
    client_db
        .run(
            "INSERT INTO todos(id, title) VALUES ('after-client', 'x')",
            (),
        )
        .unwrap();
    assert!(arrives(&server_db, "after-client").await);
    assert!(!session.is_finished());
    session.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_sessions_and_servers_close_their_connections_cleanly() {
    // Ctrl-C dropped a watching session (or the whole server) without a close: the other
    // side failed with "Connection reset without closing handshake".
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(&dir, "a.db"), open(&dir, "b.db"));
    let watching = |stop: &pluresdb_sync::Stop| SessionOptions {
        watch: true,
        stop: stop.clone(),
        ..Default::default()
    };
    // Two watching sessions over a pipe; one is stopped: both end without an error.
    let (left, right) = tokio::io::duplex(1 << 16);
    let (ws_a, ws_b) = tokio::join!(
        tokio_tungstenite::client_async("ws://pipe/", left),
        tokio_tungstenite::accept_async(right)
    );
    let (stop_a, stop_b) = (
        pluresdb_sync::Stop::default(),
        pluresdb_sync::Stop::default(),
    );
    let (opts_a, opts_b) = (watching(&stop_a), watching(&stop_b));
    let side_a = run_session(a.clone(), ws_a.unwrap().0, &opts_a);
    let side_b = run_session(b.clone(), ws_b.unwrap(), &opts_b);
    let writer = b.clone();
    let (ra, rb, ()) = tokio::join!(side_a, side_b, async {
        writer
            .run("INSERT INTO todos(id, title) VALUES ('live', 'x')", ())
            .unwrap();
        assert!(arrives(&a, "live").await);
        stop_a.stop();
    });
    assert!(ra.unwrap().stopped);
    assert!(!rb.unwrap().stopped);
    // A stopped server closes its sessions: the watching client's ends without an error.
    let (listener, addr) = bind("127.0.0.1:0").await.unwrap();
    let stop = pluresdb_sync::Stop::default();
    let server = tokio::spawn(serve(a.clone(), listener, watching(&stop)));
    let client = tokio::spawn({
        let (b, opts) = (b.clone(), watching(&pluresdb_sync::Stop::default()));
        async move { sync_with(b, &format!("ws://{addr}"), &opts).await }
    });
    a.run("INSERT INTO todos(id, title) VALUES ('served', 'x')", ())
        .unwrap();
    assert!(arrives(&b, "served").await);
    stop.stop();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        (server.await.unwrap(), client.await.unwrap())
    });
    let (served, synced) = ended
        .await
        .expect("the stopped server or its client never ended");
    served.unwrap();
    synced.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_stopped_right_after_another_process_commits_sends_that_commit() {
    // A watch looks for other processes' commits every 50 ms: one stopped in between ended
    // without sending what was committed before the stop.
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(&dir, "a.db"), open(&dir, "b.db"));
    let url = start_server(b.clone()).await;
    // Another process's handle on the watching side's file: its commits wake no one.
    let other = Database::open(dir.path().join("a.db")).unwrap();
    for round in 0..5 {
        let stop = pluresdb_sync::Stop::default();
        let opts = SessionOptions {
            watch: true,
            stop: stop.clone(),
            ..Default::default()
        };
        let session = tokio::spawn({
            let (a, url) = (a.clone(), url.clone());
            async move { sync_with(a, &url, &opts).await }
        });
        let first = format!("first-{round}");
        a.run("INSERT INTO todos(id) VALUES (?)", (first.as_str(),))
            .unwrap();
        assert!(arrives(&b, &first).await);
        // And confirmed: the session is idle again (a stop while it sends a set cuts the set
        // short, which is another case).
        let started = Instant::now();
        while a.pending_for(b.site_id()).unwrap() > 0 {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "never confirmed"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let last = format!("last-{round}");
        other
            .run("INSERT INTO todos(id) VALUES (?)", (last.as_str(),))
            .unwrap();
        stop.stop();
        let report = session.await.unwrap().unwrap();
        assert!(report.stopped, "{report:?}");
        // Sent, merged and confirmed before the watch ended.
        let there = b.get("SELECT 1 FROM todos WHERE id = ?", (last.as_str(),));
        assert!(
            there.unwrap().is_some(),
            "round {round}: {last} was not sent"
        );
        let status = a.sync_status().unwrap();
        let peer = status.iter().find(|p| p.site == b.site_id()).unwrap();
        assert_eq!(peer.pending, 0, "round {round}: not confirmed: {peer:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_the_handshake_times_out() {
    // Accepts TCP connections and never speaks (a hung server, or another service).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(socket);
    });
    let dir = tempfile::tempdir().unwrap();
    let opts = SessionOptions {
        timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let started = Instant::now();
    let err = sync_with(open(&dir, "c.db"), &url, &opts)
        .await
        .unwrap_err();
    assert!(err.message().contains("no answer within"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    held.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_drops_a_client_that_never_says_hello() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SessionOptions {
        timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let url = start_server_with(open(&dir, "s.db"), &opts).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    use futures_util::StreamExt;
    // The server's hello arrives; then, as this client says nothing, the server closes.
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(message)) = ws.next().await {
            if message.is_close() {
                break;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server kept a silent client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_serves_at_most_max_sessions_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SessionOptions {
        max_sessions: 1,
        ..Default::default()
    };
    let server = open(&dir, "s.db");
    server.put("x", &json!({})).unwrap();
    let url = start_server_with(server, &opts).await;
    // A client that connects and never says hello holds the only session.
    let (silent, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let client = open(&dir, "c.db");
    let quick = SessionOptions {
        timeout: Duration::from_millis(500),
        ..Default::default()
    };
    let err = sync_with(client.clone(), &url, &quick).await.unwrap_err();
    assert!(err.message().contains("no answer within"), "{err}");
    assert!(client.get_node("x").unwrap().is_none());
    // Once it goes, the next client is served.
    drop(silent);
    let report = sync_with(client.clone(), &url, &SessionOptions::default())
        .await
        .unwrap();
    assert_eq!(report.peer, Some(open(&dir, "s.db").site_id()));
    assert!(client.get_node("x").unwrap().is_some());
}

/// Options that ping a silent peer after 200 ms and give up on it 300 ms later: both longer
/// than the 50 ms watch poll, which must not postpone them.
fn quick_keepalive() -> SessionOptions {
    SessionOptions {
        keepalive: Duration::from_millis(200),
        timeout: Duration::from_millis(300),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_drops_a_client_that_stops_answering_after_its_hello() {
    let dir = tempfile::tempdir().unwrap();
    let url = start_server_with(open(&dir, "s.db"), &quick_keepalive()).await;
    let mut ws = raw_peer(&url, pluresdb_core::SiteId([7; 16]), 0).await;
    // The client now reads nothing, so it answers no ping: a peer whose machine slept, with
    // the TCP connection still open. (The error it is sent is checked on the client side
    // below: reading it here races with the server's close.)
    tokio::time::sleep(Duration::from_millis(1500)).await;
    use futures_util::StreamExt;
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    assert!(
        closed.is_ok(),
        "the server kept a client that stopped answering"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watching_client_gives_up_on_a_server_that_stopped_answering() {
    // A server that says hello and everything it has, then reads nothing (its machine slept).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        use futures_util::SinkExt;
        let hello = raw_hello(pluresdb_core::SiteId([8; 16]), 0, false);
        for message in [hello, Message::Done { db_version: 0 }] {
            ws.send(tokio_tungstenite::tungstenite::Message::binary(
                message.encode(),
            ))
            .await
            .unwrap();
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let dir = tempfile::tempdir().unwrap();
    let opts = SessionOptions {
        watch: true,
        ..quick_keepalive()
    };
    let started = Instant::now();
    let err = tokio::time::timeout(
        Duration::from_secs(5),
        sync_with(open(&dir, "c.db"), &url, &opts),
    )
    .await
    .expect("the client kept waiting for a server that stopped answering")
    .unwrap_err();
    assert!(err.message().contains("no answer to a ping"), "{err}");
    assert!(err.message().contains(&url), "{err}");
    assert!(started.elapsed() >= Duration::from_millis(500), "{err}");
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_watch_session_answers_pings_and_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let server_db = open(&dir, "server.db");
    let client_db = open(&dir, "client.db");
    let url = start_server_with(server_db.clone(), &quick_keepalive()).await;
    let watcher = client_db.clone();
    let session = tokio::spawn(async move {
        let opts = SessionOptions {
            watch: true,
            ..quick_keepalive()
        };
        sync_with(watcher, &url, &opts).await
    });
    // Idle for several rounds of pings on both sides.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!session.is_finished(), "{:?}", session.await);
    server_db
        .run("INSERT INTO todos(id) VALUES ('after-idle')", ())
        .unwrap();
    assert!(arrives(&client_db, "after-idle").await);
    client_db
        .run("INSERT INTO todos(id) VALUES ('back-after-idle')", ())
        .unwrap();
    assert!(arrives(&server_db, "back-after-idle").await);
    session.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_only_receives_a_large_sync_is_not_taken_for_gone() {
    // The receiving side sends nothing but its pings while batches stream in, and the
    // sender's pings wait behind megabytes of batches before the receiver reads them: pinging
    // every 10 ms, each side still hears the other well within the timeout, both ways. (The
    // timeout leaves room for a debug build on a loaded machine, where a merge and the
    // threads' turns for the CPU take hundreds of milliseconds.)
    let dir = tempfile::tempdir().unwrap();
    let server_db = open(&dir, "server.db");
    let client_db = open(&dir, "client.db");
    fill_beyond_buffers(&server_db);
    let opts = SessionOptions {
        keepalive: Duration::from_millis(10),
        timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let url = start_server_with(server_db.clone(), &opts).await;
    sync_with(client_db.clone(), &url, &opts).await.unwrap();
    fill(
        &client_db,
        "client",
        60_000,
        "a title of about sixty bytes, long enough to fill",
    );
    sync_with(client_db.clone(), &url, &opts).await.unwrap();
    assert_eq!(rows(&client_db), rows(&server_db));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_speaking_another_version_is_refused_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let server_db = open(&dir, "server.db");
    server_db
        .run("INSERT INTO todos(id) VALUES ('keep')", ())
        .unwrap();
    let before = rows(&server_db);
    let url = start_server(server_db.clone()).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    use futures_util::{SinkExt, StreamExt};
    let mut bad = Message::Done { db_version: 1 }.encode();
    bad[0] = 42;
    ws.send(tokio_tungstenite::tungstenite::Message::binary(bad))
        .await
        .unwrap();
    let mut error = None;
    while let Some(Ok(msg)) = ws.next().await {
        if let tokio_tungstenite::tungstenite::Message::Binary(b) = msg
            && let Ok(Message::Error(text)) = Message::decode(&b, usize::MAX)
        {
            error = Some(text);
        }
    }
    let error = error.expect("the server explains why it stopped");
    assert!(error.contains("protocol version 42"), "{error}");
    assert_eq!(rows(&server_db), before);
    // Garbage after a valid hello is refused too.
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let hello = raw_hello(pluresdb_core::SiteId([5; 16]), 0, false);
    ws.send(tokio_tungstenite::tungstenite::Message::binary(
        hello.encode(),
    ))
    .await
    .unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::binary(vec![
        1, 2, 0xff, 0xff,
    ]))
    .await
    .unwrap();
    let mut error = None;
    while let Some(Ok(msg)) = ws.next().await {
        if let tokio_tungstenite::tungstenite::Message::Binary(b) = msg
            && let Ok(Message::Error(text)) = Message::decode(&b, usize::MAX)
        {
            error = Some(text);
        }
    }
    assert!(error.unwrap().contains("malformed sync message"));
    assert_eq!(rows(&server_db), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_for_versions_never_sent_is_refused_and_not_recorded() {
    use futures_util::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let server_db = open(&dir, "server.db");
    server_db
        .run("INSERT INTO todos(id) VALUES ('keep')", ())
        .unwrap();
    let url = start_server(server_db.clone()).await;
    let site = pluresdb_core::SiteId([5; 16]);
    let mut ws = raw_peer(&url, site, 0).await;
    let sent = loop {
        if let Message::Done { db_version } = raw_receive(&mut ws).await {
            break db_version;
        }
    };
    // The peer claims versions the server never sent: it was recorded as the peer's, and the
    // status said nothing was pending for it.
    raw_send(
        &mut ws,
        Message::Ack {
            db_version: sent + 1000,
        }
        .encode(),
    )
    .await;
    let error = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(msg)) = ws.next().await {
            if let tokio_tungstenite::tungstenite::Message::Binary(b) = msg
                && let Ok(Message::Error(text)) = Message::decode(&b, usize::MAX)
            {
                return Some(text);
            }
        }
        None
    })
    .await;
    let error = error.ok().flatten().expect("the server says why it stops");
    assert!(
        error.contains(&format!(
            "acknowledged version {} of this database, which sent it changes up to version {sent}",
            sent + 1000
        )),
        "{error}"
    );
    let status = server_db.sync_status().unwrap();
    let peer = status.iter().find(|p| p.site == site);
    assert!(
        peer.is_none_or(|p| p.acked <= sent && p.pending > 0),
        "{peer:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_about_a_huge_key_still_reaches_the_peer() {
    use futures_util::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let server_db = open(&dir, "server.db");
    let url = start_server(server_db.clone()).await;
    let mut ws = raw_peer(&url, pluresdb_core::SiteId([5; 16]), 0).await;
    let change = pluresdb_core::ChangeRecord {
        collection: "todos".into(),
        key: vec![Value::Text("k".repeat(100_000))].into(),
        field: "".into(),
        value: None,
        version: pluresdb_core::Version::new(
            pluresdb_core::Hlc::new(1_700_000_000_000, 0),
            pluresdb_core::SiteId([5; 16]),
        ),
        cl: 1,
    };
    raw_send(&mut ws, Message::encode_changes(&[change])).await;
    raw_send(&mut ws, Message::Done { db_version: 1 }.encode()).await;
    // The server's error quoted the whole key: a message over the 64 KiB a peer reads as an
    // error's text, so the peer saw only "malformed sync message".
    let error = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(msg)) = ws.next().await {
            if let tokio_tungstenite::tungstenite::Message::Binary(b) = msg
                && let Ok(Message::Error(text)) = Message::decode(&b, MAX)
            {
                return Some(text);
            }
        }
        None
    })
    .await;
    let error = error
        .ok()
        .flatten()
        .expect("the peer reads the server's error");
    assert!(
        error.contains("a key part of 100000 bytes is over the limit"),
        "{}",
        &error[..error.len().min(500)]
    );
    assert!(error.len() < 4096, "{} bytes", error.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_values_are_sent_in_messages_the_peer_accepts() {
    // One batch (2,000 changes) of these rows encodes to 18 MB: past both a 1 MiB message
    // limit and the 16 MiB frames a change file holds.
    let dir = tempfile::tempdir().unwrap();
    let server_db = open(&dir, "server.db");
    let client_db = open(&dir, "client.db");
    let title = "t".repeat(30_000);
    server_db
        .transaction(|tx| {
            for i in 0..600 {
                tx.run(
                    "INSERT INTO todos(id, title) VALUES (?, ?)",
                    (format!("s{i:04}"), title.as_str()),
                )?;
            }
            Ok::<_, pluresdb_core::Error>(())
        })
        .unwrap();
    let opts = SessionOptions {
        max_message: 1 << 20,
        ..SessionOptions::default()
    };
    let url = start_server_with(server_db.clone(), &opts).await;
    let report = sync_with(client_db.clone(), &url, &opts).await.unwrap();
    assert!(report.received >= 1_800, "{report:?}");
    assert_eq!(rows(&client_db), rows(&server_db));
    // So does a change file.
    let by_file = open(&dir, "file.db");
    let mut file = Vec::new();
    write_changes(
        &server_db,
        &by_file.version_vector().unwrap(),
        &mut file,
        MAX,
    )
    .unwrap();
    apply_file(&by_file, &mut file.as_slice(), None, MAX).unwrap();
    assert_eq!(rows(&by_file), rows(&server_db));
    // One value larger than the peer accepts cannot be sent: the error says which and why.
    server_db
        .run(
            "INSERT INTO todos(id, title) VALUES ('huge', ?)",
            ("h".repeat(2 << 20),),
        )
        .unwrap();
    let err = sync_with(client_db.clone(), &url, &opts).await.unwrap_err();
    assert!(err.message().contains("message limit"), "{err}");
    assert!(err.message().contains("huge"), "{err}");
    // Values past 64 KiB (the longest key part) sync with the default limit, in rows and nodes.
    server_db
        .put("big", &json!({"text": "x".repeat(100_000)}))
        .unwrap();
    let big = open(&dir, "big.db");
    let mut file = Vec::new();
    write_changes(&server_db, &big.version_vector().unwrap(), &mut file, MAX).unwrap();
    apply_file(&big, &mut file.as_slice(), None, MAX).unwrap();
    assert_eq!(rows(&big), rows(&server_db));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raised_message_limit_carries_values_past_16_mib() {
    let dir = tempfile::tempdir().unwrap();
    let server_db = open(&dir, "server.db");
    let client_db = open(&dir, "client.db");
    server_db
        .run(
            "INSERT INTO todos(id, title) VALUES ('big', ?)",
            ("b".repeat(20 << 20),),
        )
        .unwrap();
    let opts = SessionOptions {
        max_message: 64 << 20,
        ..SessionOptions::default()
    };
    let url = start_server_with(server_db.clone(), &opts).await;
    sync_with(client_db.clone(), &url, &opts).await.unwrap();
    assert_eq!(rows(&client_db), rows(&server_db));
}

#[tokio::test]
async fn connecting_to_nothing_is_a_clear_error() {
    let db = Database::open_in_memory().unwrap();
    let err = sync_with(db.clone(), "ws://127.0.0.1:1", &SessionOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    assert!(
        err.message()
            .starts_with("cannot connect to ws://127.0.0.1:1: nothing accepts connections"),
        "{err}"
    );
    let err = sync_with(db, "http://example", &SessionOptions::default())
        .await
        .unwrap_err();
    assert!(err.message().contains("ws://host:port"), "{err}");
}

#[test]
fn change_files_carry_changes_between_devices() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(&dir, "a.db");
    let b = open(&dir, "b.db");
    a.run(
        "INSERT INTO todos(id, title) VALUES ('1', 'one'), ('2', 'two')",
        (),
    )
    .unwrap();
    a.put("n", &json!({"v": 1})).unwrap();
    let mut file = Vec::new();
    let written = write_changes(&a, &b.version_vector().unwrap(), &mut file, MAX).unwrap();
    assert!(written.changes >= 5, "{written:?}");
    let applied = apply_file(&b, &mut file.as_slice(), Some("usb".into()), MAX).unwrap();
    assert_eq!(applied.from, Some(a.site_id()));
    assert_eq!(rows(&a), rows(&b));
    // Applying the same file again changes nothing.
    let again = apply_file(&b, &mut file.as_slice(), None, MAX).unwrap();
    assert_eq!(again.report.applied, 0);
    // The next file only has what is new since b's version vector.
    a.run("UPDATE todos SET done = 1 WHERE id = '1'", ())
        .unwrap();
    let mut next = Vec::new();
    let written = write_changes(&a, &b.version_vector().unwrap(), &mut next, MAX).unwrap();
    assert_eq!(written.changes, 1);
    apply_file(&b, &mut next.as_slice(), None, MAX).unwrap();
    assert_eq!(
        b.value("SELECT done FROM todos WHERE id = '1'", ())
            .unwrap(),
        Value::Integer(1)
    );
    // A truncated file applies its complete batches but does not claim completion.
    let cursor = b.peer_cursor(a.site_id()).unwrap();
    a.run("INSERT INTO todos(id) VALUES ('3')", ()).unwrap();
    let mut cut = Vec::new();
    write_changes(&a, &b.version_vector().unwrap(), &mut cut, MAX).unwrap();
    cut.truncate(cut.len() - 3);
    let err = apply_file(&b, &mut cut.as_slice(), None, MAX).unwrap_err();
    assert!(err.message().contains("truncated"), "{err}");
    assert_eq!(b.peer_cursor(a.site_id()).unwrap(), cursor);
    let err = apply_file(&b, &mut &b"not a change file"[..], None, MAX).unwrap_err();
    assert!(
        err.message().contains("damaged")
            || err.message().contains("not a PluresDB change file")
            || err.message().contains("malformed"),
        "{err}"
    );
    let err = apply_file(&b, &mut &b""[..], None, MAX).unwrap_err();
    assert!(err.message().contains("the change file is empty"), "{err}");
    // Cut inside a later frame: the error says how much got in.
    fill(&a, "many", 3000, "a title");
    let mut cut = Vec::new();
    write_changes(&a, &b.version_vector().unwrap(), &mut cut, MAX).unwrap();
    cut.truncate(cut.len() * 3 / 4);
    let err = apply_file(&b, &mut cut.as_slice(), None, MAX).unwrap_err();
    assert!(
        err.message()
            .contains("changes of the change file were merged, then")
            && err.message().contains("truncated"),
        "{err}"
    );
}

/// A change file of everything `a` has that `b` lacks.
fn file_for(a: &Database, b: &Database) -> Vec<u8> {
    let mut file = Vec::new();
    write_changes(a, &b.version_vector().unwrap(), &mut file, MAX).unwrap();
    file
}

#[test]
fn a_change_file_made_for_another_database_does_not_move_the_cursor_past_what_it_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (open(&dir, "a.db"), open(&dir, "b.db"), open(&dir, "c.db"));
    a.put("n1", &json!({"v": 1})).unwrap();
    a.put("n2", &json!({"v": 2})).unwrap();
    apply_file(&b, &mut file_for(&a, &b).as_slice(), None, MAX).unwrap();
    a.put("n3", &json!({"v": 3})).unwrap();
    // The file made for B reaches C, which has nothing of A's yet.
    let for_b = file_for(&a, &b);
    let applied = apply_file(&c, &mut for_b.as_slice(), None, MAX).unwrap();
    let (have, start) = applied.gap.expect("C lacks A's earlier changes");
    assert_eq!(have, 0);
    assert!(start > 0);
    assert!(c.get_node("n3").unwrap().is_some());
    assert_eq!(c.peer_cursor(a.site_id()).unwrap(), 0);
    // C's next file brings what it lacked; B's own file applies with no gap.
    let applied = apply_file(&c, &mut file_for(&a, &c).as_slice(), None, MAX).unwrap();
    assert_eq!(applied.gap, None);
    assert_eq!(rows(&a), rows(&c));
    assert_eq!(
        apply_file(&b, &mut for_b.as_slice(), None, MAX)
            .unwrap()
            .gap,
        None
    );
    assert_eq!(rows(&a), rows(&b));
}

#[test]
fn a_damaged_change_file_is_refused_before_its_damaged_frame_applies() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(&dir, "a.db"), open(&dir, "b.db"));
    a.put("n", &json!({"s": "hello"})).unwrap();
    let file = file_for(&a, &b);
    let at = file
        .windows(5)
        .position(|w| w == b"hello")
        .expect("the value is in the file");
    let mut damaged = file.clone();
    damaged[at] = b'j';
    let err = apply_file(&b, &mut damaged.as_slice(), None, MAX).unwrap_err();
    assert!(
        err.message().contains("does not match its checksum"),
        "{err}"
    );
    assert!(b.get_node("n").unwrap().is_none());
    // A file from a newer format, and one that is not a change file, say so.
    let mut newer = file.clone();
    newer[16] = 4;
    let err = apply_file(&b, &mut newer.as_slice(), None, MAX).unwrap_err();
    assert!(err.message().contains("format 4"), "{err}");
    let err = apply_file(&b, &mut &b"id,title\n1,one\n"[..], None, MAX).unwrap_err();
    assert!(
        err.message().contains("not a PluresDB change file"),
        "{err}"
    );
    apply_file(&b, &mut file.as_slice(), None, MAX).unwrap();
    assert_eq!(b.get_node("n").unwrap().unwrap().data["s"], "hello");
}

#[test]
fn change_files_joined_into_one_are_refused_instead_of_the_second_being_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (open(&dir, "a.db"), open(&dir, "b.db"), open(&dir, "c.db"));
    a.put("from-a", &json!({})).unwrap();
    c.put("from-c", &json!({})).unwrap();
    // `cat a.changes c.changes > both.changes`: the apply stopped at the first file's end and
    // reported success, and C's changes were silently left out.
    let mut both = file_for(&a, &b);
    both.extend(file_for(&c, &b));
    let err = apply_file(&b, &mut both.as_slice(), None, MAX).unwrap_err();
    assert!(
        err.message().contains("goes on after its last frame"),
        "{err}"
    );
    assert_eq!(
        b.peer_cursor(a.site_id()).unwrap(),
        0,
        "not recorded as complete"
    );
    // Any bytes after the end are refused alike.
    let mut trailing = file_for(&a, &b);
    trailing.push(0);
    let err = apply_file(&b, &mut trailing.as_slice(), None, MAX).unwrap_err();
    assert!(
        err.message().contains("goes on after its last frame"),
        "{err}"
    );
    // Each file on its own applies.
    apply_file(&b, &mut file_for(&a, &b).as_slice(), None, MAX).unwrap();
    apply_file(&b, &mut file_for(&c, &b).as_slice(), None, MAX).unwrap();
    assert!(b.get_node("from-a").unwrap().is_some());
    assert!(b.get_node("from-c").unwrap().is_some());
    assert!(b.peer_cursor(a.site_id()).unwrap() > 0);
}

#[test]
fn a_restored_backup_behind_its_peer_is_refused_instead_of_its_changes_being_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(&dir, "a.db"), open(&dir, "b.db"));
    a.put("x", &json!({})).unwrap();
    a.backup(dir.path().join("backup.db")).unwrap();
    a.put("y", &json!({})).unwrap();
    apply_file(&b, &mut file_for(&a, &b).as_slice(), None, MAX).unwrap();
    drop(a);
    // Restored, it is behind what B has of it: found out before its new changes go unsent.
    let restored = Database::open(dir.path().join("backup.db")).unwrap();
    let mut file = Vec::new();
    let err = write_changes(&restored, &b.version_vector().unwrap(), &mut file, MAX).unwrap_err();
    assert!(err.message().contains("copy or a restored backup"), "{err}");
    assert!(
        err.message().contains("but it is at version")
            && err.message().contains(&format!(
                "the database {}",
                dir.path().join("backup.db").display()
            )),
        "{err}"
    );
    // Still once it has made more versions than B has of it: it never sent B (nor anyone)
    // those versions.
    let have = b.version_vector().unwrap();
    for i in 0.. {
        if restored.db_version().unwrap() > have.get(&restored.site_id()) {
            break;
        }
        restored.put("new", &json!({ "i": i })).unwrap();
    }
    assert!(restored.db_version().unwrap() > have.get(&restored.site_id()));
    let err = write_changes(&restored, &have, &mut file, MAX).unwrap_err();
    assert!(
        err.message()
            .contains("never sent that peer changes past version 0"),
        "{err}"
    );
    // Also when it only takes files: B's file says what B has of it.
    let before = rows(&restored);
    let from_b = file_for(&b, &restored);
    let err = apply_file(&restored, &mut from_b.as_slice(), None, MAX).unwrap_err();
    assert!(err.message().contains("restored backup"), "{err}");
    assert_eq!(rows(&restored), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_backup_that_caught_up_with_its_peer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (open(&dir, "a.db"), open(&dir, "b.db"), open(&dir, "c.db"));
    a.put("x", &json!({"v": 1})).unwrap();
    sync_ok(&a, &b).await;
    a.backup(dir.path().join("backup.db")).unwrap();
    // After the backup, A changes x and tells B; then A is lost.
    a.put("x", &json!({"v": 2})).unwrap();
    a.put("y", &json!({})).unwrap();
    sync_ok(&a, &b).await;
    let b_has = b.version_vector().unwrap().get(&a.site_id());
    drop(a);
    // The restored copy syncs with C first (what it merges moves its version on too), then
    // writes until it is past what B has of A: the version numbers alone look fine.
    let restored = Database::open(dir.path().join("backup.db")).unwrap();
    fill(&c, "c", 5, "from c");
    sync_ok(&restored, &c).await;
    for i in 0.. {
        if restored.db_version().unwrap() > b_has {
            break;
        }
        restored.put("z", &json!({ "i": i })).unwrap();
    }
    let before = rows(&b);
    let (rr, rb) = sync_over_pipe(&restored, &b).await;
    let err = rr.unwrap_err();
    assert!(err.message().contains("copy or a restored backup"), "{err}");
    // B's side ends too, and says why, naming the copy (not "this database", which B took
    // for itself: renewing B's site id then let the syncs go on with the two different).
    let err = rb.unwrap_err();
    assert!(err.message().contains("the peer stopped the sync"), "{err}");
    assert!(err.message().contains("copy or a restored backup"), "{err}");
    let copy = dir.path().join("backup.db");
    assert!(
        err.message()
            .contains(&format!("the database {} (site id", copy.display())),
        "{err}"
    );
    // Nothing was exchanged: B keeps x = 2, which a sync would otherwise never give back to
    // the restored copy (B counts it as the copy's own), and never gets z.
    assert_eq!(rows(&b), before);
    assert!(b.get_node("z").unwrap().is_none());
    // With a new site id it syncs as a new device: B gets z, the copy gets x = 2 back.
    let old_site = restored.site_id();
    drop(restored);
    let site = Database::renew_site_id(dir.path().join("backup.db")).unwrap();
    let restored = open(&dir, "backup.db");
    assert_eq!(restored.site_id(), site);
    assert_ne!(site, old_site);
    sync_ok(&restored, &b).await;
    assert_eq!(rows(&restored), rows(&b));
    assert_eq!(restored.get_node("x").unwrap().unwrap().data["v"], 2);
    assert!(b.get_node("z").unwrap().is_some());
    // Its writes from now on are its new site's, and sync on.
    restored.put("after", &json!({})).unwrap();
    sync_ok(&restored, &b).await;
    let after = b.get_node("after").unwrap().unwrap();
    assert_eq!(after.site, site);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_refuses_a_hello_tells_the_other_why() {
    let dir = tempfile::tempdir().unwrap();
    let (server, client) = (open(&dir, "server.db"), open(&dir, "client.db"));
    // The client claims more of the server than the server ever made: the server refuses as
    // soon as it reads the hello, maybe before its own went out.
    client
        .record_sync(
            server.site_id(),
            &pluresdb_core::SyncProgress {
                cursor: Some(1_000),
                ..Default::default()
            },
        )
        .unwrap();
    let url = start_server(server.clone()).await;
    let over_tcp = sync_with(client.clone(), &url, &SessionOptions::default()).await;
    // Over a pipe, the client's hello is there before the server's session first writes.
    let (over_pipe, refused) = sync_over_pipe(&client, &server).await;
    assert!(refused.is_err());
    for err in [over_tcp.unwrap_err(), over_pipe.unwrap_err()] {
        assert!(err.message().contains("the peer stopped the sync"), "{err}");
        assert!(err.message().contains("restored backup"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_file_from_a_read_only_handle_does_not_make_its_database_look_copied() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(&dir, "a.db"), open(&dir, "b.db"));
    a.put("x", &json!({})).unwrap();
    sync_ok(&a, &b).await;
    a.put("y", &json!({})).unwrap();
    a.fold_change_log().unwrap();
    // A read-only handle cannot record what it tells: its file announces only what was
    // recorded (B gets y now, and again next time).
    let read_only = pluresdb_core::OpenOptions::new()
        .read_only(true)
        .open(dir.path().join("a.db"))
        .unwrap();
    let recorded = a.announced_bound(Some(b.site_id())).unwrap().unwrap();
    assert!(a.db_version().unwrap() > recorded);
    let mut file = Vec::new();
    let written = write_changes(&read_only, &b.version_vector().unwrap(), &mut file, MAX).unwrap();
    assert_eq!(written.db_version, recorded);
    apply_file(&b, &mut file.as_slice(), None, MAX).unwrap();
    assert!(b.get_node("y").unwrap().is_some());
    // A later session is no false alarm, and every later file or session is recorded first.
    a.put("z", &json!({})).unwrap();
    sync_ok(&a, &b).await;
    apply_file(&b, &mut file_for(&a, &b).as_slice(), None, MAX).unwrap();
    sync_ok(&b, &a).await;
    assert_eq!(rows(&a), rows(&b));
    assert_eq!(
        a.announced_bound(Some(b.site_id())).unwrap(),
        Some(a.db_version().unwrap())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_file_from_a_read_only_handle_announces_nothing_told_only_to_another_peer() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (open(&dir, "a.db"), open(&dir, "b.db"), open(&dir, "c.db"));
    a.put("x", &json!({})).unwrap();
    // A tells C (and only C) that it has sent everything up to its version.
    sync_ok(&a, &c).await;
    a.fold_change_log().unwrap();
    let read_only = pluresdb_core::OpenOptions::new()
        .read_only(true)
        .open(dir.path().join("a.db"))
        .unwrap();
    let mut file = Vec::new();
    write_changes(&read_only, &b.version_vector().unwrap(), &mut file, MAX).unwrap();
    apply_file(&b, &mut file.as_slice(), None, MAX).unwrap();
    // B's cursor of A must not pass what A recorded telling B (or any file reader): A is no
    // copy, and its next session with B goes through.
    sync_ok(&a, &b).await;
    assert_eq!(rows(&a), rows(&b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_of_a_file_made_before_announcements_were_recorded_still_sync() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(&dir, "a.db"), open(&dir, "b.db"));
    a.put("x", &json!({})).unwrap();
    sync_ok(&a, &b).await;
    // As a format 4 file: B has A's changes, and A has no record of telling it.
    a.exec(
        "DELETE FROM _pluresdb_meta WHERE key LIKE 'announce%';
         UPDATE _pluresdb_meta SET value = 4 WHERE key = 'format_version'",
    )
    .unwrap();
    let version = a.db_version().unwrap();
    drop(a);
    let a = open(&dir, "a.db");
    assert_eq!(
        a.announced_bound(None).unwrap(),
        Some(version),
        "the upgrade counts everything before it as told"
    );
    a.put("y", &json!({})).unwrap();
    sync_ok(&a, &b).await;
    assert_eq!(rows(&a), rows(&b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_runs_over_any_stream() {
    // Two in-process ends joined by a duplex pipe: the session does not care about TCP.
    let dir = tempfile::tempdir().unwrap();
    let a = open(&dir, "a.db");
    let b = open(&dir, "b.db");
    a.put("x", &json!({"from": "a"})).unwrap();
    b.put("y", &json!({"from": "b"})).unwrap();
    let (ra, rb) = sync_over_pipe(&a, &b).await;
    ra.unwrap();
    rb.unwrap();
    assert_eq!(rows(&a), rows(&b));
}

#[test]
fn a_change_file_merges_its_batches_in_few_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(&dir, "a.db");
    let b = open(&dir, "b.db");
    // 2,500 rows: 7,500 changes (creation, title, done), written as 4 frames of up to 2,000.
    fill(&a, "row", 2500, "a title");
    let mut file = Vec::new();
    let written = write_changes(&a, &b.version_vector().unwrap(), &mut file, MAX).unwrap();
    assert_eq!(written.changes, 7_500);
    let before = b.db_version().unwrap();
    let applied = apply_file(&b, &mut file.as_slice(), None, MAX).unwrap();
    assert_eq!(applied.report.received, 7_500);
    assert_eq!(rows(&a), rows(&b));
    // One transaction for all four frames (each was one before).
    assert_eq!(b.db_version().unwrap(), before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_is_acknowledged_only_once_its_changes_merged() {
    let dir = tempfile::tempdir().unwrap();
    let server_db = open(&dir, "server.db");
    let source = open(&dir, "source.db");
    fill(&source, "row", 8000, "a title");
    let set = source.changes_since(0, None).unwrap();
    let url = start_server(server_db.clone()).await;
    // A peer that sends everything at once, in 16 messages, then its Done, without waiting.
    let mut ws = raw_peer(&url, set.site, set.db_version).await;
    for batch in set.changes.chunks(2000) {
        raw_send(&mut ws, Message::encode_changes(batch)).await;
    }
    let done = Message::Done {
        db_version: set.db_version,
    };
    raw_send(&mut ws, done.encode()).await;
    // When the Ack for that Done arrives, every change before it is in the server's database
    // and its cursor for this peer is recorded.
    while !matches!(raw_receive(&mut ws).await, Message::Ack { db_version } if db_version == set.db_version)
    {
    }
    assert_eq!(
        server_db.value("SELECT count(*) FROM todos", ()).unwrap(),
        Value::Integer(8000)
    );
    assert_eq!(rows(&server_db), rows(&source));
    assert_eq!(server_db.peer_cursor(set.site).unwrap(), set.db_version);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_reads_hold_up_its_writer_still_serves_a_slow_peer() {
    // In memory, a read is the writer's; without WAL, a read lock blocks commits. Either way
    // the server must not hold its snapshot while it waits for the peer to take its messages,
    // since recording the peer's progress needs the writer.
    let dir = tempfile::tempdir().unwrap();
    let servers = [
        Database::open_in_memory().unwrap(),
        pluresdb_core::OpenOptions::new()
            .wal(false)
            .open(dir.path().join("rollback.db"))
            .unwrap(),
    ];
    for server in servers {
        let server = with_todos(server);
        fill_beyond_buffers(&server);
        let url = start_server(server.clone()).await;
        let mut ws = raw_peer(&url, pluresdb_core::SiteId([42; 16]), 0).await;
        // The peer reads nothing for a while (the server's queue fills), then says it is done.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(finish_and_count(&mut ws).await, 180_000);
    }
}

/// Tells a raw peer's server it is done sending, and counts the changes the server sends
/// until its own Done.
async fn finish_and_count(ws: &mut RawPeer) -> usize {
    raw_send(ws, Message::Done { db_version: 0 }.encode()).await;
    let mut received = 0;
    loop {
        match raw_receive(ws).await {
            Message::Changes(c) => received += c.len(),
            Message::Done { .. } => return received,
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_that_take_their_changes_slowly_hold_up_no_reader() {
    // The server has one reader connection. Two peers ask for everything and read nothing for
    // a while: the app's own reads must still get the reader (they used to wait for a sending
    // session's snapshot, and fail after the busy timeout, since these peers never read on).
    let dir = tempfile::tempdir().unwrap();
    let server = pluresdb_core::OpenOptions::new()
        .readers(1)
        .busy_timeout(Duration::from_secs(2))
        .open(dir.path().join("server.db"))
        .unwrap();
    let server = with_todos(server);
    fill_beyond_buffers(&server);
    // Folded now, so that no session folds it while the others wait for the writer.
    server.fold_change_log().unwrap();
    let url = start_server(server.clone()).await;
    let mut a = raw_peer(&url, pluresdb_core::SiteId([42; 16]), 0).await;
    let mut b = raw_peer(&url, pluresdb_core::SiteId([43; 16]), 0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..5 {
        let count = tokio::task::spawn_blocking({
            let server = server.clone();
            move || server.value("SELECT count(*) FROM todos", ())
        })
        .await
        .unwrap();
        assert_eq!(count.unwrap(), pluresdb_core::Value::Integer(60_000));
    }
    assert_eq!(finish_and_count(&mut a).await, 180_000);
    assert_eq!(finish_and_count(&mut b).await, 180_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_peers_sending_more_than_the_connection_buffers_both_finish() {
    // Each side sends megabytes over a pipe that buffers 64 KiB: a side waiting to send must
    // keep reading, or both wait for each other forever.
    let dir = tempfile::tempdir().unwrap();
    let a = open(&dir, "a.db");
    let b = open(&dir, "b.db");
    fill(&a, "a", 30_000, "a title of about forty bytes, or so");
    fill(&b, "b", 20_000, "a title of about forty bytes, or so");
    let (ra, rb) = tokio::time::timeout(Duration::from_secs(60), sync_over_pipe(&a, &b))
        .await
        .expect("the two sessions waited for each other");
    assert_eq!(ra.unwrap().received, 60_000);
    assert_eq!(rb.unwrap().received, 90_000);
    assert_eq!(rows(&a), rows(&b));
}

/// A synced table whose columns are all NOT NULL without a DEFAULT: a row merged without one
/// of its columns fails.
const STRICT: &str = "CREATE TABLE strict(id TEXT PRIMARY KEY NOT NULL, a TEXT NOT NULL, \
                      b TEXT NOT NULL, c INTEGER NOT NULL)";

/// A database at `name` in `dir` with the synced table `strict`.
fn open_strict(dir: &tempfile::TempDir, name: &str) -> Database {
    let db = Database::open(dir.path().join(name)).unwrap();
    db.exec(STRICT).unwrap();
    db.sync_table("strict").unwrap();
    db
}

/// The rows of `strict`, every column, in key order.
fn strict_rows(db: &Database) -> Vec<String> {
    db.all("SELECT * FROM strict ORDER BY id", ())
        .unwrap()
        .iter()
        .map(|r| r.to_json().to_string())
        .collect()
}

/// A xorshift generator of numbers below its argument, from `seed`.
fn random(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    move |below| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % below
    }
}

/// Random writes to `strict` in `db`: `inserts` new rows `{prefix}{n}` (text of 50 to 650
/// bytes, so that rows split across messages of 1 KiB at varied places), then updates of some
/// columns of existing rows, deletes, and re-inserts of deleted keys.
fn strict_writes(db: &Database, prefix: &str, inserts: u64, rnd: &mut impl FnMut(u64) -> u64) {
    let text = |rnd: &mut dyn FnMut(u64) -> u64| "x".repeat(50 + rnd(600) as usize);
    db.transaction(|tx| {
        for n in 0..inserts {
            tx.run(
                "INSERT INTO strict(id, a, b, c) VALUES (?1, ?2, ?3, ?4)",
                (
                    format!("{prefix}{n}"),
                    text(rnd),
                    text(rnd),
                    rnd(100) as i64,
                ),
            )?;
        }
        let ids: Vec<(String,)> = tx.all_as("SELECT id FROM strict", ())?;
        for _ in 0..ids.len() / 2 {
            let (id,) = &ids[rnd(ids.len() as u64) as usize];
            match rnd(5) {
                0 => tx.run("UPDATE strict SET a = ?2 WHERE id = ?1", (id, text(rnd)))?,
                1 => tx.run(
                    "UPDATE strict SET b = ?2, c = c + 1 WHERE id = ?1",
                    (id, text(rnd)),
                )?,
                2 => tx.run("DELETE FROM strict WHERE id = ?1", (id,))?,
                3 => tx.run(
                    "INSERT OR REPLACE INTO strict(id, a, b, c) VALUES (?1, ?2, 'b', 7)",
                    (id, text(rnd)),
                )?,
                _ => tx.run("UPDATE strict SET c = c * 2 WHERE id = ?1", (id,))?,
            };
        }
        Ok::<_, pluresdb_core::Error>(())
    })
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_of_not_null_columns_arrive_whole_in_messages_of_any_size() {
    // Batches of 1, 2 and 3 changes (never more than a row: the reader keeps a row's changes
    // in one batch) and messages of at most 1 KiB, which split most rows: the receiver merged
    // each message's part of a row on its own, and failed with "NOT NULL constraint failed".
    for batch in 1..=3 {
        let dir = tempfile::tempdir().unwrap();
        let server = open_strict(&dir, "server.db");
        let client = open_strict(&dir, "client.db");
        let mut rnd = random(batch as u64);
        let opts = SessionOptions {
            batch,
            max_message: 1024,
            ..SessionOptions::default()
        };
        let url = start_server_with(server.clone(), &opts).await;
        for round in 0..3 {
            strict_writes(&server, &format!("s{round}-"), 5 + rnd(40), &mut rnd);
            strict_writes(&client, &format!("c{round}-"), 5 + rnd(40), &mut rnd);
            sync_with(client.clone(), &url, &opts)
                .await
                .unwrap_or_else(|e| panic!("batch {batch}, round {round}: {e}"));
            assert_eq!(strict_rows(&client), strict_rows(&server), "batch {batch}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_a_peer_splits_across_messages_merges_whole() {
    // A peer may cut its changes anywhere (here every 1, 2 or 3 changes, then every 5, 7
    // and 11): each row still arrives whole, and the Ack comes once every row merged.
    let dir = tempfile::tempdir().unwrap();
    let source = open_strict(&dir, "source.db");
    strict_writes(&source, "r", 200, &mut random(7));
    let set = source.changes_since(0, None).unwrap();
    for (i, chunk) in [1, 2, 3, 5, 7, 11].into_iter().enumerate() {
        let server = open_strict(&dir, &format!("server{i}.db"));
        let url = start_server(server.clone()).await;
        let mut ws = raw_peer(&url, set.site, set.db_version).await;
        for part in set.changes.chunks(chunk) {
            raw_send(&mut ws, Message::encode_changes(part)).await;
        }
        let done = Message::Done {
            db_version: set.db_version,
        };
        raw_send(&mut ws, done.encode()).await;
        while !matches!(raw_receive(&mut ws).await, Message::Ack { db_version } if db_version == set.db_version)
        {
        }
        assert_eq!(
            strict_rows(&server),
            strict_rows(&source),
            "chunks of {chunk}"
        );
        assert_eq!(server.peer_cursor(set.site).unwrap(), set.db_version);
    }
}

#[test]
fn a_change_file_of_rows_split_across_frames_merges_them_whole() {
    // Frames of at most 1 KiB split most rows, and more than 20,000 changes make the file
    // merge in several transactions: a row cut where one ends used to fail to merge.
    let dir = tempfile::tempdir().unwrap();
    let a = open_strict(&dir, "a.db");
    let b = open_strict(&dir, "b.db");
    strict_writes(&a, "r", 6_000, &mut random(3));
    let mut file = Vec::new();
    let written = write_changes(&a, &b.version_vector().unwrap(), &mut file, 1024).unwrap();
    assert!(written.changes > 20_000, "{written:?}");
    let applied = apply_file(&b, &mut file.as_slice(), None, 1024).unwrap();
    assert_eq!(applied.report.received, written.changes);
    assert_eq!(strict_rows(&b), strict_rows(&a));
    assert_eq!(b.peer_cursor(a.site_id()).unwrap(), written.db_version);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_over_the_message_limit_stops_the_sync_saying_so_and_keeps_no_part_of_its_row() {
    // The row's other columns fit in a message; its b cannot be sent. The receiver reports
    // the sender's reason (not a NOT NULL failure of the part it got) and stores nothing of
    // the row.
    let dir = tempfile::tempdir().unwrap();
    let server = open_strict(&dir, "server.db");
    let client = open_strict(&dir, "client.db");
    server
        .run(
            "INSERT INTO strict VALUES ('a-small', 'a', 'b', 1), ('huge', 'a', ?1, 2)",
            ("h".repeat(2 << 20),),
        )
        .unwrap();
    let opts = SessionOptions {
        max_message: 1 << 20,
        batch: 1,
        ..SessionOptions::default()
    };
    let url = start_server_with(server.clone(), &opts).await;
    let err = sync_with(client.clone(), &url, &opts).await.unwrap_err();
    let message = err.message();
    assert!(message.contains("message limit"), "{err}");
    assert!(
        message.contains("huge") && message.contains("\"b\""),
        "{err}"
    );
    assert!(!message.contains("NOT NULL"), "{err}");
    assert_eq!(
        client
            .value("SELECT count(*) FROM strict WHERE id = 'huge'", ())
            .unwrap(),
        Value::Integer(0)
    );
    // Once the limit is raised on both sides, the row arrives.
    let opts = SessionOptions {
        max_message: 4 << 20,
        ..opts
    };
    let url = start_server_with(server.clone(), &opts).await;
    sync_with(client.clone(), &url, &opts).await.unwrap();
    assert_eq!(strict_rows(&client), strict_rows(&server));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_a_newer_column_syncs_rows_split_across_messages() {
    // The server added `d NOT NULL DEFAULT 'none'` later; the client has no `d` yet. Rows
    // split across messages merge whole both ways; once the client adds `d` too, it asks for
    // everything again and both have the same rows, `d` included.
    let dir = tempfile::tempdir().unwrap();
    let server = open_strict(&dir, "server.db");
    let client = open_strict(&dir, "client.db");
    server
        .exec("ALTER TABLE strict ADD COLUMN d TEXT NOT NULL DEFAULT 'none'")
        .unwrap();
    let mut rnd = random(11);
    strict_writes(&server, "s", 60, &mut rnd);
    server
        .run("UPDATE strict SET d = 'set ' || id WHERE rowid % 3 = 0", ())
        .unwrap();
    strict_writes(&client, "c", 60, &mut rnd);
    let opts = SessionOptions {
        batch: 2,
        max_message: 1024,
        ..SessionOptions::default()
    };
    let url = start_server_with(server.clone(), &opts).await;
    sync_with(client.clone(), &url, &opts).await.unwrap();
    let common = |db: &Database| -> Vec<String> {
        db.all("SELECT id, a, b, c FROM strict ORDER BY id", ())
            .unwrap()
            .iter()
            .map(|r| r.to_json().to_string())
            .collect()
    };
    assert_eq!(common(&client), common(&server));
    client
        .exec("ALTER TABLE strict ADD COLUMN d TEXT NOT NULL DEFAULT 'none'")
        .unwrap();
    sync_with(client.clone(), &url, &opts).await.unwrap();
    assert_eq!(strict_rows(&client), strict_rows(&server));
    assert!(
        strict_rows(&client).iter().any(|r| r.contains("set s")),
        "the server's values of d arrived"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_does_not_send_a_hub_back_what_it_got_from_there() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, a, b) = (open(&dir, "hub.db"), open(&dir, "a.db"), open(&dir, "b.db"));
    fill(&b, "b", 500, "from b");
    sync_ok(&b, &hub).await;
    fill(&a, "a", 10, "from a");
    let (first, _) = sync_over_pipe(&a, &hub).await;
    let first = first.unwrap();
    // (Three changes a row: its creation, title and done.)
    assert_eq!((first.sent, first.applied), (30, 1500));
    // b's rows came from the hub: the next sync sends it nothing (it sent them all back).
    let (again, _) = sync_over_pipe(&a, &hub).await;
    assert_eq!(again.unwrap().sent, 0);
    let pending: u64 = a.sync_status().unwrap().iter().map(|p| p.pending).sum();
    assert_eq!(pending, 0);
    // A's edit of one of them reaches the hub and, from there, b.
    a.run("UPDATE todos SET done = 1 WHERE id = 'b-00007'", ())
        .unwrap();
    let (edit, _) = sync_over_pipe(&a, &hub).await;
    assert_eq!(edit.unwrap().sent, 1);
    sync_ok(&b, &hub).await;
    assert_eq!(rows(&b), rows(&a));
    assert_eq!(rows(&hub), rows(&a));
}

#[test]
fn a_change_file_for_a_known_device_leaves_out_what_it_has() {
    use pluresdb_sync::file::write_changes_for;
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (open(&dir, "a.db"), open(&dir, "b.db"), open(&dir, "c.db"));
    fill(&a, "a", 10, "from a");
    fill(&c, "c", 10, "from c");
    let file_for = |from: &Database, to: &Database, reader: Option<pluresdb_core::SiteId>| {
        let mut file = Vec::new();
        let have = to.version_vector().unwrap();
        let written = write_changes_for(from, &have, reader, &mut file, MAX).unwrap();
        (file, written.changes)
    };
    let carry = |from: &Database, to: &Database| {
        let (file, _) = file_for(from, to, Some(to.site_id()));
        apply_file(to, &mut file.as_slice(), None, MAX).unwrap();
    };
    // c's rows reach b through a.
    carry(&c, &a);
    carry(&a, &b);
    assert_eq!(rows(&b), rows(&a));
    // A file from b for a leaves out a's own rows and c's, which came from a; one for a
    // device not named holds them all.
    assert_eq!(file_for(&b, &a, Some(a.site_id())).1, 0);
    assert_eq!(file_for(&b, &a, None).1, 60);
    // A file made for one device is refused by another, which would miss what it left out.
    let (file, _) = file_for(&b, &a, Some(a.site_id()));
    let d = open(&dir, "d.db");
    let err = apply_file(&d, &mut file.as_slice(), None, MAX).unwrap_err();
    assert!(err.to_string().contains("was made for the device"), "{err}");
    assert_eq!(rows(&d), rows(&open(&dir, "empty.db")));
    // And a file cannot be made for its producer.
    let mut file = Vec::new();
    let have = VersionVector::new();
    let err = write_changes_for(&b, &have, Some(b.site_id()), &mut file, MAX).unwrap_err();
    assert!(
        err.to_string().contains("names this database itself"),
        "{err}"
    );
}

/// A TCP proxy on 127.0.0.1 to `upstream` (host:port) for one connection, which it drops once
/// `cut_after` bytes came back from there: a link that went down mid-sync. Returns its URL.
async fn link_that_drops(upstream: &str, cut_after: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let upstream = upstream.to_owned();
    tokio::spawn(async move {
        let (mut client, _) = listener.accept().await.unwrap();
        let mut server = tokio::net::TcpStream::connect(upstream).await.unwrap();
        let (mut from_client, mut to_client) = client.split();
        let (mut from_server, mut to_server) = server.split();
        let up = tokio::io::copy(&mut from_client, &mut to_server);
        let down = async {
            let mut buf = vec![0; 1 << 16];
            let mut passed = 0;
            while passed < cut_after {
                let n = from_server.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                to_client.write_all(&buf[..n]).await?;
                passed += n;
            }
            Ok::<_, std::io::Error>(())
        };
        tokio::select! {
            _ = up => {}
            _ = down => {}
        }
        // Both connections drop here, mid-message.
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_sync_cut_short_goes_on_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    {
        let server_db = open(&dir, "server.db");
        fill_beyond_buffers(&server_db);
    }
    // Opened again, as a server started on an existing file is (it scans its records).
    let server_db = open(&dir, "server.db");
    let client_db = open(&dir, "client.db");
    let everything = server_db.changes_since(0, None).unwrap().changes.len() as u64;
    let url = start_server(server_db.clone()).await;
    // The link drops after 3 MB, about halfway through the changes.
    let dropping = link_that_drops(url.trim_start_matches("ws://"), 3 << 20).await;
    let err = sync_with(client_db.clone(), &dropping, &SessionOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    let point = client_db.resume_point(server_db.site_id()).unwrap();
    assert!(point.is_some());
    let status = client_db.sync_status().unwrap();
    assert!(
        status
            .iter()
            .any(|p| p.site == server_db.site_id() && p.cut_short && p.received > 10_000),
        "what the cut-short sync merged is counted: {status:?}"
    );
    let merged = client_db
        .value("SELECT count(*) FROM todos", ())
        .unwrap()
        .as_i64()
        .unwrap();
    assert!(merged > 10_000, "merged before the drop: {merged}");
    // The next sync goes on from there: the rows merged are not sent again.
    let report = sync_with(client_db.clone(), &url, &SessionOptions::default())
        .await
        .unwrap();
    assert!(
        report.received < everything * 3 / 4,
        "received {} of {everything} again",
        report.received
    );
    assert_eq!(rows(&client_db), rows(&server_db));
    assert_eq!(client_db.resume_point(server_db.site_id()).unwrap(), None);
    assert!(!client_db.sync_status().unwrap()[0].cut_short);
    let again = sync_with(client_db.clone(), &url, &SessionOptions::default())
        .await
        .unwrap();
    assert_eq!((again.sent, again.received), (0, 0), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_connects_again_until_stopped() {
    use pluresdb_sync::Stop;
    use pluresdb_sync::net::{WatchEvent, watch};
    let dir = tempfile::tempdir().unwrap();
    let server_db = open(&dir, "server.db");
    let client_db = open(&dir, "client.db");
    let serving = |listener, stop: Stop| {
        let opts = SessionOptions {
            stop,
            ..Default::default()
        };
        tokio::spawn(serve(server_db.clone(), listener, opts))
    };
    let (listener, addr) = bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{addr}");
    let server_stop = Stop::default();
    let server = serving(listener, server_stop.clone());
    let client_stop = Stop::default();
    let opts = SessionOptions {
        stop: client_stop.clone(),
        ..Default::default()
    };
    // Each event in order: a drop (its error and pause), or `None` for a connection.
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let drops = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let watching = tokio::spawn({
        let (db, url) = (client_db.clone(), url.clone());
        let (drops, events) = (drops.clone(), events.clone());
        async move {
            watch(db, &url, &opts, |event| match event {
                WatchEvent::Dropped { error, pause } => {
                    let drop = (error.map(|e| e.to_string()), pause);
                    drops.lock().unwrap().push(drop.clone());
                    events.lock().unwrap().push(Some(drop));
                }
                WatchEvent::Connected => events.lock().unwrap().push(None),
            })
            .await
        }
    });
    server_db
        .run("INSERT INTO todos(id) VALUES ('first')", ())
        .unwrap();
    assert!(arrives(&client_db, "first").await);
    // The server stops (closing the connection), and is down for a while.
    server_stop.stop();
    server.await.unwrap().unwrap();
    // Down until the client found it so once.
    let started = Instant::now();
    while drops.lock().unwrap().len() < 2 {
        assert!(started.elapsed() < Duration::from_secs(10), "{drops:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server_db
        .run("INSERT INTO todos(id) VALUES ('while-down')", ())
        .unwrap();
    let (listener, _) = bind(&addr.to_string()).await.unwrap();
    let again_stop = Stop::default();
    let server = serving(listener, again_stop.clone());
    assert!(arrives(&client_db, "while-down").await);
    // It stops again: the session that worked started the pauses over.
    again_stop.stop();
    server.await.unwrap().unwrap();
    let started = Instant::now();
    while drops.lock().unwrap().len() < 3 {
        assert!(started.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    client_stop.stop();
    let report = watching.await.unwrap().unwrap();
    assert!(report.stopped && report.received >= 2, "{report:?}");
    let drops = drops.lock().unwrap().clone();
    // Closed by the server, then refused while it was down (the pause doubling), then
    // closed again after a session that worked.
    assert_eq!(drops[0], (None, Duration::from_secs(1)), "{drops:?}");
    assert!(
        drops[1]
            .0
            .as_deref()
            .unwrap()
            .contains("nothing accepts connections"),
        "{drops:?}"
    );
    assert_eq!(drops[1].1, Duration::from_secs(2));
    assert_eq!(drops[2], (None, Duration::from_secs(1)), "{drops:?}");
    // It said when it connected: first, and after the restart (not when refused).
    let events = events.lock().unwrap().clone();
    let connected: Vec<bool> = events.iter().map(|e| e.is_none()).collect();
    assert_eq!(
        &connected[..5],
        &[true, false, false, true, false],
        "{events:?}"
    );
    // A copy of the server's file has its site id: refused, and tried again (it works once
    // the copy gets a new site id), saying why each time.
    let copy = dir.path().join("copy.db");
    server_db.backup(&copy).unwrap();
    let (listener, addr) = bind("127.0.0.1:0").await.unwrap();
    let server = serving(listener, Stop::default());
    let stop = Stop::default();
    let opts = SessionOptions {
        stop: stop.clone(),
        ..Default::default()
    };
    let report = watch(
        Database::open(&copy).unwrap(),
        &format!("ws://{addr}"),
        &opts,
        |event| {
            if let WatchEvent::Dropped { error, .. } = event {
                let e = error.expect("an error");
                assert!(e.to_string().contains("site id"), "{e}");
                stop.stop();
            }
        },
    )
    .await
    .unwrap();
    assert!(report.stopped);
    // An address that is not one ends it at once.
    let err = watch(
        client_db.clone(),
        "ws://127.0.0.1:99999",
        &SessionOptions::default(),
        |event| panic!("{event:?}"),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("not a port number"), "{err}");
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_answers_a_client_of_an_older_build_in_its_version() {
    // A version 1 client (as builds before resuming): the server says hello in version 1 and
    // sends its whole set without the Resume and Progress that client would refuse.
    let dir = tempfile::tempdir().unwrap();
    {
        fill_beyond_buffers(&open(&dir, "server.db"));
    }
    let server_db = open(&dir, "server.db");
    let url = start_server(server_db.clone()).await;
    let mut ws = raw_peer(&url, pluresdb_core::SiteId([5; 16]), 0).await;
    let Message::Hello { resumes, .. } = raw_receive(&mut ws).await else {
        panic!("no hello first");
    };
    assert!(!resumes, "a version 1 hello");
    let mut changes = 0;
    loop {
        match raw_receive(&mut ws).await {
            Message::Changes(batch) => changes += batch.len(),
            Message::Done { .. } => break,
            other => panic!("not a version 1 message: {other:?}"),
        }
    }
    assert_eq!(changes, 180_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_says_where_to_go_on_from_is_given_up_on() {
    use futures_util::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let server_db = open(&dir, "server.db");
    let opts = SessionOptions {
        timeout: Duration::from_millis(500),
        keepalive: Duration::from_millis(100),
        ..Default::default()
    };
    let url = start_server_with(server_db.clone(), &opts).await;
    // A version 2 hello, then pongs (tungstenite answers the server's pings) but no Resume.
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let hello = raw_hello(pluresdb_core::SiteId([5; 16]), 0, true);
    raw_send(&mut ws, hello.encode()).await;
    let started = Instant::now();
    let mut error = None;
    while let Some(Ok(msg)) = ws.next().await {
        if let tokio_tungstenite::tungstenite::Message::Binary(b) = msg
            && let Ok(Message::Error(text)) = Message::decode(&b, usize::MAX)
        {
            error = Some(text);
        }
    }
    let error = error.expect("the server says why it stopped");
    assert!(error.contains("(its Resume)"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_keeps_asking_to_connect_again_is_given_up_on() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    // Each connection is closed with 1012 ("connect again") once the client said hello.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let server = tokio::spawn({
        let accepted = accepted.clone();
        async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
                let _hello = ws.next().await;
                let _ = ws
                    .send(tokio_tungstenite::tungstenite::Message::Close(Some(
                        CloseFrame {
                            code: CloseCode::Restart,
                            reason: "again".into(),
                        },
                    )))
                    .await;
            }
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let client = open(&dir, "client.db");
    let started = Instant::now();
    let err = sync_with(client, &url, &SessionOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("times in a row"), "{err}");
    assert_eq!(accepted.load(std::sync::atomic::Ordering::Relaxed), 16);
    assert!(started.elapsed() < Duration::from_secs(30));
    server.abort();
}

/// `early` syncs `notes`, `late` has no such table; `late` gets `early`'s 500 todos and
/// leaves the notes out, then makes and syncs the table: `early` is to be asked for it.
async fn late_table() -> (tempfile::TempDir, Database, Database) {
    let dir = tempfile::tempdir().unwrap();
    let (early, late) = (open(&dir, "early.db"), open(&dir, "late.db"));
    let notes = "CREATE TABLE notes(id TEXT PRIMARY KEY NOT NULL, body TEXT)";
    early.exec(notes).unwrap();
    early.sync_table("notes").unwrap();
    early
        .run("INSERT INTO notes VALUES ('n1', 'x'), ('n2', 'y')", ())
        .unwrap();
    fill(&early, "row", 500, "t");
    sync_ok(&early, &late).await;
    assert_eq!(
        late.value("SELECT count(*) FROM todos", ()).unwrap(),
        Value::Integer(500)
    );
    late.exec(notes).unwrap();
    late.sync_table("notes").unwrap();
    assert!(late.refetching().unwrap().contains_key(&early.site_id()));
    (dir, early, late)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_that_arrives_late_is_asked_for_alone() {
    // Before, the arrival set every cursor back and the next sync sent all 1,500 changes of
    // the todos again.
    let (_dir, early, late) = late_table().await;
    let status = late.sync_status().unwrap();
    let names: Vec<String> = status[0].asks_again.iter().map(|r| r.to_string()).collect();
    assert_eq!(names, ["notes"]);
    early
        .run("INSERT INTO todos(id, title) VALUES ('new', 'n')", ())
        .unwrap();
    let (from_early, from_late) = sync_over_pipe(&early, &late).await;
    from_early.unwrap();
    // The new row (its creation, title and done) and the two notes (creation and body).
    assert_eq!(from_late.unwrap().received, 3 + 2 * 2);
    assert_eq!(rows(&early), rows(&late));
    let notes = |db: &Database| db.all("SELECT * FROM notes ORDER BY id", ()).unwrap();
    assert_eq!(notes(&late).len(), 2);
    assert_eq!(notes(&early), notes(&late));
    // Asked and answered: the next sync sends nothing.
    assert!(late.refetching().unwrap().is_empty());
    assert!(late.sync_status().unwrap()[0].asks_again.is_empty());
    let (_, again) = sync_over_pipe(&early, &late).await;
    assert_eq!(again.unwrap().received, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_that_arrives_late_is_asked_for_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (early, late) = (open(&dir, "early.db"), open(&dir, "late.db"));
    fill(&early, "row", 300, "t");
    sync_ok(&early, &late).await;
    // A newer schema on one side: its values of the new column are left out by the other.
    early
        .exec("ALTER TABLE todos ADD COLUMN prio INTEGER")
        .unwrap();
    early
        .run("UPDATE todos SET prio = 7 WHERE id < 'row-00005'", ())
        .unwrap();
    let (_, first) = sync_over_pipe(&early, &late).await;
    assert_eq!(first.unwrap().skipped, 5);
    late.exec("ALTER TABLE todos ADD COLUMN prio INTEGER")
        .unwrap();
    let (_, second) = sync_over_pipe(&early, &late).await;
    assert_eq!(second.unwrap().received, 5);
    assert_eq!(rows(&early), rows(&late));
    assert!(late.refetching().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_asks_an_older_client_for_everything_and_a_newer_one_for_what_arrived() {
    // The late side serves; the early side connects by hand as a client of version 1 and of
    // version 2 (they cannot be asked for a table, and the server's hello says it has nothing
    // of theirs), and of this version (a version 3 Resume asks for its changes after its
    // cursor from before, and for the table).
    let (_dir, early, late) = late_table().await;
    let cursor = late.refetching().unwrap()[&early.site_id()].cursor;
    assert!(cursor > 0);
    let url = start_server(late.clone()).await;
    let site = early.site_id();
    let db_version = early.db_version().unwrap();
    let mut ws = raw_peer(&url, site, db_version).await;
    let Message::Hello { have, .. } = raw_receive(&mut ws).await else {
        panic!("no hello first");
    };
    assert_eq!(have.get(&site), 0);
    drop(ws);
    for refetches in [false, true] {
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        let mut hello = raw_hello(site, db_version, true);
        if let Message::Hello { refetches: r, .. } = &mut hello {
            *r = refetches;
        }
        raw_send(&mut ws, hello.encode()).await;
        let Message::Hello { have, .. } = raw_receive(&mut ws).await else {
            panic!("no hello first");
        };
        assert_eq!(have.get(&site), 0);
        let Message::Resume { refetch, .. } = raw_receive(&mut ws).await else {
            panic!("no Resume after the hello");
        };
        let notes = pluresdb_core::Refetch {
            table: "notes".into(),
            column: None,
        };
        let asked = pluresdb_core::Refetching {
            cursor,
            wanted: vec![notes],
        };
        assert_eq!(refetch, refetches.then_some(asked));
    }
}

/// A table keyed by two columns, listed in `order` ("a, b" or "b, a").
fn keyed_by(dir: &tempfile::TempDir, name: &str, order: &str) -> Database {
    pairs_table(dir, name, "a TEXT NOT NULL, b TEXT NOT NULL, v TEXT", order)
}

/// A database `name` in `dir` with a synced table `pairs` of `columns` keyed by `key`.
fn pairs_table(dir: &tempfile::TempDir, name: &str, columns: &str, key: &str) -> Database {
    let db = Database::open(dir.path().join(name)).unwrap();
    db.exec(&format!(
        "CREATE TABLE pairs({columns}, PRIMARY KEY ({key}))"
    ))
    .unwrap();
    db.sync_table("pairs").unwrap();
    db
}

fn pairs(db: &Database) -> Vec<(String, String, Option<String>)> {
    db.all_as("SELECT a, b, v FROM pairs ORDER BY a, b", ())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_keyed_by_the_same_columns_in_another_order_sync_row_for_row() {
    // Keys travel as values in the sender's key order: without the names, a row (a=x, b=y)
    // written on one device landed on (a=y, b=x) on the other, and overwrote that row.
    let dir = tempfile::tempdir().unwrap();
    let (ab, ba) = (
        keyed_by(&dir, "ab.db", "a, b"),
        keyed_by(&dir, "ba.db", "b, a"),
    );
    ab.exec("INSERT INTO pairs VALUES ('x', 'y', 'from ab'), ('y', 'x', 'other row')")
        .unwrap();
    ba.exec("INSERT INTO pairs VALUES ('p', 'q', 'from ba')")
        .unwrap();
    sync_ok(&ba, &ab).await;
    let want = [
        ("p", "q", "from ba"),
        ("x", "y", "from ab"),
        ("y", "x", "other row"),
    ]
    .map(|(a, b, v)| (a.to_owned(), b.to_owned(), Some(v.to_owned())));
    assert_eq!(pairs(&ab), want);
    assert_eq!(pairs(&ba), want);
    // Updates and deletes find their rows too, and so do change files.
    ba.exec("UPDATE pairs SET v = 'changed on ba' WHERE a = 'x' AND b = 'y'; DELETE FROM pairs WHERE a = 'y'")
        .unwrap();
    let mut file = Vec::new();
    write_changes(&ba, &ab.version_vector().unwrap(), &mut file, MAX).unwrap();
    apply_file(&ab, &mut file.as_slice(), None, MAX).unwrap();
    assert_eq!(pairs(&ab), pairs(&ba));
    assert_eq!(
        pairs(&ab)[1],
        ("x".into(), "y".into(), Some("changed on ba".into()))
    );
    assert_eq!(pairs(&ab).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_column_renamed_on_one_device_still_syncs_by_position() {
    let dir = tempfile::tempdir().unwrap();
    let (ab, renamed) = (
        keyed_by(&dir, "ab.db", "a, b"),
        keyed_by(&dir, "renamed.db", "a, b"),
    );
    renamed
        .exec("ALTER TABLE pairs RENAME COLUMN a TO aa")
        .unwrap();
    ab.exec("INSERT INTO pairs VALUES ('x', 'y', 'from ab')")
        .unwrap();
    renamed
        .exec("INSERT INTO pairs VALUES ('p', 'q', 'from renamed')")
        .unwrap();
    sync_ok(&renamed, &ab).await;
    let rows = |db: &Database, a: &str| -> Vec<(String, String, Option<String>)> {
        db.all_as(&format!("SELECT {a}, b, v FROM pairs ORDER BY 1, 2"), ())
            .unwrap()
    };
    assert_eq!(rows(&ab, "a"), rows(&renamed, "aa"));
    assert_eq!(rows(&ab, "a").len(), 2);
    assert_eq!(rows(&ab, "a")[1].0, "x");
}

/// A database with the synced table `pairs(a, b, c)` keyed by `key`, then `todos` (so that
/// `pairs` comes first in a scan of changes).
fn pairs_db(dir: &tempfile::TempDir, name: &str, key: &str) -> Database {
    with_todos(pairs_table(dir, name, PAIRS_COLUMNS, key))
}

const PAIRS_COLUMNS: &str = "a TEXT NOT NULL, b TEXT NOT NULL, c TEXT NOT NULL";

/// Rebuilds `pairs` in `db` keyed by `key` (unsynced meanwhile, as a rebuild must be).
fn rebuild_pairs(db: &Database, key: &str) {
    db.unsync_table("pairs").unwrap();
    db.exec(&format!(
        "DROP TABLE pairs; CREATE TABLE pairs({PAIRS_COLUMNS}, PRIMARY KEY ({key}))"
    ))
    .unwrap();
    db.sync_table("pairs").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_keyed_by_other_columns_is_refused_naming_the_column_and_the_rest_syncs() {
    // One table that cannot merge stopped every table's sync with that peer.
    let dir = tempfile::tempdir().unwrap();
    let (ab, ac) = (
        pairs_db(&dir, "ab.db", "a, b"),
        pairs_db(&dir, "ac.db", "a, c"),
    );
    ab.exec("INSERT INTO pairs VALUES ('1', '2', '3'); INSERT INTO todos(id) VALUES ('t1')")
        .unwrap();
    let count = |db: &Database, table: &str| db.value(&format!("SELECT count(*) FROM {table}"), ());
    // A change file: the table is refused, saying why; the rest merges; the cursor stays.
    let mut file = Vec::new();
    write_changes(&ab, &ac.version_vector().unwrap(), &mut file, MAX).unwrap();
    let applied = apply_file(&ac, &mut file.as_slice(), None, MAX).unwrap();
    let refused = &applied.report.refused;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].table, "pairs");
    assert!(
        refused[0].reason.contains(
            "column c is part of the primary key of table \"pairs\" here (a, c), and the peer \
             sends it as an ordinary column"
        ),
        "{refused:?}"
    );
    assert_eq!(count(&ac, "pairs").unwrap(), Value::Integer(0));
    assert_eq!(count(&ac, "todos").unwrap(), Value::Integer(1));
    assert_eq!(ac.peer_cursor(ab.site_id()).unwrap(), 0);
    // A session: the same, both sides end without an error.
    ab.exec("INSERT INTO todos(id) VALUES ('t2')").unwrap();
    let (here, there) = sync_over_pipe(&ac, &ab).await;
    let (here, there) = (here.unwrap(), there.unwrap());
    assert_eq!(here.refused, *refused, "{here:?}");
    assert_eq!(count(&ac, "todos").unwrap(), Value::Integer(2));
    assert_eq!(
        ac.peer_cursor(ab.site_id()).unwrap(),
        0,
        "not past the refused rows"
    );
    // The sender hears it too, and keeps it in its status for that peer.
    assert_eq!(there.peer_refusals.refused, *refused, "{there:?}");
    assert!(here.peer_refusals.is_empty(), "{here:?}");
    let said = |db: &Database| db.sync_status().unwrap()[0].peer_refusals.clone();
    assert_eq!(said(&ab).refused, *refused);
    assert!(said(&ac).is_empty());
    // Rebuilt keyed as on the peer, the table gets its rows at the next sync.
    rebuild_pairs(&ac, "a, b");
    let (here, there) = sync_over_pipe(&ac, &ab).await;
    assert!(here.unwrap().refused.is_empty());
    assert!(there.unwrap().peer_refusals.is_empty());
    assert!(said(&ab).is_empty(), "{:?}", said(&ab));
    assert_eq!(count(&ac, "pairs").unwrap(), Value::Integer(1));
    assert!(ac.peer_cursor(ab.site_id()).unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_hears_which_of_its_tables_a_peer_leaves_out() {
    // A hub that does not sync a table passes none of its rows on: the devices that send
    // them are told, and their status says so until the hub takes them.
    let dir = tempfile::tempdir().unwrap();
    let (device, hub) = (open(&dir, "device.db"), open(&dir, "hub.db"));
    let notes = "CREATE TABLE notes(id TEXT PRIMARY KEY NOT NULL, body TEXT)";
    device.exec(notes).unwrap();
    device.sync_table("notes").unwrap();
    device
        .exec("INSERT INTO notes VALUES ('n1', 'x'); INSERT INTO todos(id) VALUES ('t1')")
        .unwrap();
    let url = start_server(hub.clone()).await;
    let report = sync_with(device.clone(), &url, &SessionOptions::default())
        .await
        .unwrap();
    let left_out: Vec<String> = (report.peer_refusals.left_out.iter())
        .map(ToString::to_string)
        .collect();
    assert_eq!(left_out, ["notes"], "{report:?}");
    assert!(report.peer_refusals.refused.is_empty());
    let status = device.sync_status().unwrap();
    assert_eq!(status[0].peer_refusals, report.peer_refusals);
    // A later sync that sends none of them (they are not sent again) does not forget it.
    device.exec("INSERT INTO todos(id) VALUES ('t2')").unwrap();
    let report = sync_with(device.clone(), &url, &SessionOptions::default())
        .await
        .unwrap();
    assert!(report.peer_refusals.is_empty(), "{report:?}");
    let status = device.sync_status().unwrap();
    assert_eq!(status[0].peer_refusals.left_out.len(), 1, "{status:?}");
    // Once the hub syncs the table, it asks for the rows; the device's status clears.
    hub.exec(notes).unwrap();
    hub.sync_table("notes").unwrap();
    let report = sync_with(device.clone(), &url, &SessionOptions::default())
        .await
        .unwrap();
    assert!(report.peer_refusals.is_empty(), "{report:?}");
    assert!(device.sync_status().unwrap()[0].peer_refusals.is_empty());
    assert_eq!(
        hub.value("SELECT count(*) FROM notes", ()).unwrap(),
        Value::Integer(1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_cannot_make_this_side_keep_more_than_it_holds_of_what_was_not_taken() {
    // A faulty peer sending Refused after Refused grew the list without bound, each message
    // costing more than the last.
    let dir = tempfile::tempdir().unwrap();
    let server_db = open(&dir, "server.db");
    let url = start_server(server_db.clone()).await;
    let site = pluresdb_core::SiteId([7; 16]);
    let mut ws = raw_peer(&url, site, 0).await;
    let done = loop {
        if let Message::Done { db_version } = raw_receive(&mut ws).await {
            break db_version;
        }
    };
    let started = Instant::now();
    for m in 0..6 {
        let said = pluresdb_core::PeerRefusals {
            refused: (0..4096)
                .map(|i| pluresdb_core::Refused {
                    table: format!("t{m}_{i}"),
                    reason: "no".into(),
                })
                .collect(),
            left_out: Vec::new(),
        };
        raw_send(&mut ws, Message::Refused(said).encode()).await;
    }
    raw_send(&mut ws, Message::Ack { db_version: done }.encode()).await;
    let recorded = loop {
        let status = server_db.sync_status().unwrap();
        if let Some(p) = status.iter().find(|p| p.site == site)
            && !p.peer_refusals.is_empty()
        {
            break p.peer_refusals.refused.len();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "never recorded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(recorded, pluresdb_core::PeerRefusals::MAX_NAMED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_of_an_older_build_is_not_told_what_was_left_out() {
    // A build of protocol version 4 or older refuses a version 5 message: only a peer whose
    // hello offers to take it is told.
    let dir = tempfile::tempdir().unwrap();
    let (source, server_db) = (open(&dir, "source.db"), open(&dir, "server.db"));
    source
        .exec("CREATE TABLE notes(id TEXT PRIMARY KEY NOT NULL, body TEXT)")
        .unwrap();
    source.sync_table("notes").unwrap();
    source
        .run("INSERT INTO notes VALUES ('n1', 'x')", ())
        .unwrap();
    let set = source.changes_since(0, None).unwrap();
    let url = start_server(server_db.clone()).await;
    let mut ws = raw_peer(&url, set.site, set.db_version).await;
    raw_send(&mut ws, Message::encode_changes(&set.changes)).await;
    let done = Message::Done {
        db_version: set.db_version,
    };
    raw_send(&mut ws, done.encode()).await;
    loop {
        match raw_receive(&mut ws).await {
            Message::Ack { db_version } if db_version == set.db_version => break,
            Message::Refused(said) => panic!("an older peer was sent {said:?}"),
            _ => {}
        }
    }
    assert_eq!(server_db.left_out().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_table_is_sent_again_after_a_set_with_resume_points() {
    // The peer marks how far its scan got every 20,000 changes or so; a mark stored after a
    // refused table's changes would start the next session's read past them.
    let dir = tempfile::tempdir().unwrap();
    let (ab, ac) = (
        pairs_db(&dir, "ab.db", "a, b"),
        pairs_db(&dir, "ac.db", "a, c"),
    );
    ab.exec("INSERT INTO pairs VALUES ('1', '2', '3')").unwrap();
    fill_beyond_buffers(&ab);
    let (here, there) = sync_over_pipe(&ac, &ab).await;
    there.unwrap();
    assert_eq!(here.unwrap().refused.len(), 1);
    assert_eq!(rows(&ac).len(), 60_000);
    assert_eq!(
        ac.resume_point(ab.site_id()).unwrap(),
        None,
        "no mark past the refused rows"
    );
    rebuild_pairs(&ac, "a, b");
    sync_ok(&ac, &ab).await;
    assert_eq!(
        ac.value("SELECT count(*) FROM pairs", ()).unwrap(),
        Value::Integer(1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_keyed_in_another_order_that_starts_syncing_during_a_watch_syncs_row_for_row() {
    // The key columns go out again when they change: a table synced after the hello on both
    // sides, then written, must not land on swapped keys.
    let dir = tempfile::tempdir().unwrap();
    let (server_db, client_db) = (open(&dir, "server.db"), open(&dir, "client.db"));
    let url = start_server(server_db.clone()).await;
    let session = watching(&client_db, &url);
    server_db
        .run("INSERT INTO todos(id, title) VALUES ('hello', 'x')", ())
        .unwrap();
    assert!(arrives(&client_db, "hello").await);
    for (db, order) in [(&client_db, "a, b"), (&server_db, "b, a")] {
        db.exec(&format!(
            "CREATE TABLE pairs(a TEXT NOT NULL, b TEXT NOT NULL, v TEXT, PRIMARY KEY ({order}))"
        ))
        .unwrap();
        db.sync_table("pairs").unwrap();
    }
    server_db
        .exec("INSERT INTO pairs VALUES ('x', 'y', 'from the server')")
        .unwrap();
    client_db
        .exec("INSERT INTO pairs VALUES ('p', 'q', 'from the client')")
        .unwrap();
    let want = [("p", "q", "from the client"), ("x", "y", "from the server")]
        .map(|(a, b, v)| (a.to_owned(), b.to_owned(), Some(v.to_owned())));
    let started = Instant::now();
    while pairs(&client_db) != want || pairs(&server_db) != want {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "client {:?}, server {:?}",
            pairs(&client_db),
            pairs(&server_db)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!session.is_finished());
    session.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_table_keyed_by_two_columns_does_not_stop_the_sync() {
    let dir = tempfile::tempdir().unwrap();
    let (ab, dropped) = (
        keyed_by(&dir, "ab.db", "a, b"),
        keyed_by(&dir, "dropped.db", "a, b"),
    );
    // Dropped by another tool (PluresDB refuses to drop a synced table).
    drop(dropped);
    let plain = rusqlite::Connection::open(dir.path().join("dropped.db")).unwrap();
    plain.execute_batch("DROP TABLE pairs").unwrap();
    drop(plain);
    let dropped = Database::open(dir.path().join("dropped.db")).unwrap();
    ab.exec("INSERT INTO pairs VALUES ('x', 'y', 'v')").unwrap();
    ab.put("node", &serde_json::json!({})).unwrap();
    let report = sync_over_pipe(&dropped, &ab).await.0.unwrap();
    // The dropped table's changes are left out (for when it is made again), the rest merges.
    assert!(report.skipped > 0, "{report:?}");
    assert!(dropped.get_node("node").unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_rebuilt_with_its_key_columns_in_another_order_syncs_on_as_the_same_table() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        keyed_by(&dir, "a.db", "a, b"),
        keyed_by(&dir, "b.db", "a, b"),
    );
    a.exec("INSERT INTO pairs VALUES ('1', '2', 'x'), ('2', '1', 'y'), ('3', '4', 'z')")
        .unwrap();
    sync_ok(&b, &a).await;
    // B rebuilds the table keyed (b, a) while it does not sync, deleting a row meanwhile; A
    // edits a row B left alone.
    b.exec(
        "SELECT pluresdb_unsync_table('pairs');
         CREATE TABLE p2(a TEXT NOT NULL, b TEXT NOT NULL, v TEXT, PRIMARY KEY (b, a));
         INSERT INTO p2 SELECT * FROM pairs; DROP TABLE pairs; ALTER TABLE p2 RENAME TO pairs;
         DELETE FROM pairs WHERE a = '3'",
    )
    .unwrap();
    b.sync_table("pairs").unwrap();
    a.exec("UPDATE pairs SET v = 'x, edited on A' WHERE a = '1'")
        .unwrap();
    sync_ok(&b, &a).await;
    let want = [("1", "2", "x, edited on A"), ("2", "1", "y")]
        .map(|(a, b, v)| (a.to_owned(), b.to_owned(), Some(v.to_owned())));
    assert_eq!(pairs(&a), want);
    assert_eq!(pairs(&b), want);
}
