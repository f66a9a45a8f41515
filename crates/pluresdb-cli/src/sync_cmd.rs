//! `changes`, `apply`, `serve`, `sync`: moving changes between databases.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;

use pluresdb_core::{Database, Error, Refetch, Result, SiteId, VersionVector};
use pluresdb_sync::codec::DEFAULT_MAX_MESSAGE;
use pluresdb_sync::file::{apply_file, write_changes_for};
use pluresdb_sync::net::{WatchEvent, bind, serve, sync_with};
use pluresdb_sync::{
    OnProgress, OnSessionEnd, Progress, SessionOptions, SessionReport, Stop, left_out_note,
    peer_left_out_note, peer_refused_error, refused_error, waiting_note,
};
use serde_json::json;

use crate::output::{print_json, print_table};

/// `--max-message`: the largest sync message, for the commands that send or read them.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct MessageLimit {
    /// Largest sync message this side accepts and makes, in bytes or with a KiB, MiB or GiB
    /// suffix (1MiB to 1GiB). One value larger than the limit cannot sync: raise it to sync
    /// such values, giving both sides (or `changes` and `apply`) the same.
    #[arg(long = "max-message", value_name = "SIZE", default_value_t = DEFAULT_MAX_MESSAGE, value_parser = parse_size)]
    bytes: usize,
}

/// The sizes `--max-message` takes.
const MESSAGE_LIMITS: std::ops::RangeInclusive<usize> = (1 << 20)..=(1 << 30);

/// Parses a size such as `67108864`, `64MiB` or `64M` (binary units).
fn parse_size(text: &str) -> std::result::Result<usize, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => Some(0),
        "k" | "kib" => Some(10),
        "m" | "mib" => Some(20),
        "g" | "gib" => Some(30),
        _ => None,
    };
    let bytes = digits
        .parse::<usize>()
        .ok()
        .zip(shift)
        .and_then(|(n, shift)| n.checked_mul(1 << shift));
    match bytes {
        Some(n) if MESSAGE_LIMITS.contains(&n) => Ok(n),
        _ => Err(format!(
            "{text:?} is not a size from 1MiB to 1GiB: give bytes (16777216) or a number \
             with KiB, MiB or GiB (64MiB)"
        )),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::internal(format!("cannot start the async runtime: {e}")))
}

/// `pluresdb changes --since VECTOR [--for SITE] [-o FILE]`.
pub fn changes(
    db: &Database,
    since: &str,
    reader: Option<&str>,
    output: Option<&Path>,
    limit: &MessageLimit,
    json_out: bool,
) -> Result<()> {
    let have: VersionVector = since
        .parse()
        .map_err(|e: pluresdb_core::ParseVersionVectorError| Error::invalid(e.to_string()))?;
    let reader = reader
        .map(|r| {
            r.trim().parse::<SiteId>().map_err(|_| {
                Error::invalid(format!(
                    "--for {r:?} is not a site id: give the 32 hexadecimal digits that \
                     `pluresdb sync --status` prints on that device"
                ))
            })
        })
        .transpose()?;
    let written = match output {
        Some(path) => {
            let mut out = crate::output_file::OutputFile::create(path)?;
            let written = write_changes_for(db, &have, reader, &mut out, limit.bytes)?;
            out.commit()?;
            written
        }
        None => {
            if std::io::stdout().is_terminal() {
                return Err(Error::invalid(
                    "a change file is binary: redirect it (pluresdb changes > file) or use -o FILE",
                ));
            }
            let mut out = std::io::BufWriter::new(crate::output::stdout());
            write_changes_for(db, &have, reader, &mut out, limit.bytes)?
        }
    };
    let summary = json!({"changes": written.changes, "db_version": written.db_version, "site": db.site_id().to_string()});
    if json_out && output.is_some() {
        print_json(&mut crate::output::stdout(), &summary)?;
    } else {
        eprintln!(
            "wrote {} (up to version {} of {})",
            counted(written.changes, "change"),
            written.db_version,
            db.site_id()
        );
    }
    Ok(())
}

/// The command that makes a change file for this database (which has `vv`) on another
/// device.
fn changes_command(db: &Database, vv: &str) -> String {
    format!(
        "pluresdb changes --since {vv} --for {} -o FILE",
        db.site_id()
    )
}

/// `pluresdb apply FILE`.
pub fn apply(db: &Database, file: &Path, limit: &MessageLimit, json_out: bool) -> Result<()> {
    let f = crate::transfer::open_input(file)?;
    let applied = apply_file(
        db,
        &mut std::io::BufReader::new(f),
        Some(file.display().to_string()),
        limit.bytes,
    )?;
    let vv = db.version_vector()?.to_string();
    if json_out {
        print_json(
            &mut crate::output::stdout(),
            &json!({
                "from": applied.from.map(|s| s.to_string()),
                "received": applied.report.received,
                "applied": applied.report.applied,
                "rows": applied.report.rows,
                "skipped": applied.report.skipped,
                "left_out": applied.report.left_out,
                "trigger_writes": applied.report.trigger_writes,
                "refused": applied.report.refused,
                "missing": applied.gap.map(|(have, start)| json!({"have": have, "file_starts_after": start})),
                "version_vector": vv,
            }),
        )?;
    } else {
        println!(
            "applied {} of {} ({} changed); this database now has: {vv}",
            applied.report.applied,
            counted(applied.report.received, "change"),
            counted(applied.report.rows, "row"),
        );
    }
    note_merged(applied.report.skipped, &applied.report.left_out);
    warn_trigger_writes(applied.report.trigger_writes);
    if let Some((have, start)) = applied.gap {
        eprintln!(
            "warning: this file holds the changes after version {start} of its producer, but this \
             database has them only up to version {have}: the file was made for another \
             database, or an earlier file was not applied. Its changes were applied; to get the \
             rest, make a file with `{}` on the producer",
            changes_command(db, &vv)
        );
    }
    refused_error(&applied.report.refused).map_or(Ok(()), Err)
}

/// `pluresdb serve --listen ADDRESS`: serves sync until interrupted, `max_sessions` peers at
/// once, printing a line per exchange and per session's end. With `json_out`, its output is
/// JSON lines: `{"serving": URL}`, then one object per exchange and one (with `"ended":
/// true`) per session's end, and `{"ended": true}` when it stops.
pub fn serve_cmd(
    db: Database,
    listen: &str,
    max_sessions: usize,
    limit: &MessageLimit,
    json_out: bool,
) -> Result<()> {
    // Each exchange with each peer, as it happens.
    let on_progress = OnProgress(Arc::new(move |p: &Progress| {
        if json_out {
            say(&exchange_json(p).to_string());
        } else {
            for line in exchange_lines(p) {
                say(&format!("{}: {line}", p.peer));
            }
        }
    }));
    // And each session's totals as it ends (its error goes to standard error too).
    let on_session_end = OnSessionEnd(Arc::new(move |r: &SessionReport, error: Option<&Error>| {
        let peer = r.peer.map(|p| p.to_string()).unwrap_or_default();
        say(&if json_out {
            json!({"peer": peer, "ended": true, "sent": r.sent, "received": r.received, "applied": r.applied, "refused": r.refused, "peer_refusals": r.peer_refusals, "error": error.map(ToString::to_string)})
                .to_string()
        } else {
            format!(
                "{peer}: session {}: sent {}, received {} ({} applied)",
                if error.is_some() { "failed" } else { "ended" },
                counted(r.sent, "change"),
                r.received,
                r.applied
            )
        });
    }));
    let opts = SessionOptions {
        max_message: limit.bytes,
        max_sessions,
        on_progress: Some(on_progress),
        on_session_end: Some(on_session_end),
        ..SessionOptions::default()
    };
    runtime()?.block_on(async move {
        let (listener, addr) = bind(listen).await?;
        if json_out {
            println!("{}", json!({ "serving": format!("ws://{addr}") }));
        } else {
            println!("serving sync on ws://{addr} (Ctrl-C stops)");
        }
        std::io::stdout().flush()?;
        let stop = opts.stop.clone();
        stopping_on_ctrl_c(serve(db, listener, opts), &stop, true).await
    })?;
    // The last sessions' lines, before the process ends (JSON lines end with an `ended` line,
    // as a watch's do).
    all_said();
    if json_out {
        println!("{}", json!({"ended": true}));
    }
    Ok(())
}

/// What the progress printer is given: a line, or a request to say when all before it
/// are printed.
enum Said {
    Line(String),
    Flushed(std::sync::mpsc::SyncSender<()>),
}

/// The progress printer: a thread of its own, so sessions never wait on standard output.
fn printer() -> &'static std::sync::mpsc::SyncSender<Said> {
    static PRINTER: std::sync::OnceLock<std::sync::mpsc::SyncSender<Said>> =
        std::sync::OnceLock::new();
    PRINTER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Said>(1024);
        std::thread::spawn(move || {
            for said in rx {
                match said {
                    Said::Line(line) => {
                        let mut out = std::io::stdout().lock();
                        let _ = writeln!(out, "{line}").and_then(|()| out.flush());
                    }
                    Said::Flushed(done) => {
                        let _ = done.send(());
                    }
                }
            }
        });
        tx
    })
}

/// Prints a line of a running session's progress. A reader that went away (`serve | head`)
/// or does not read drops lines (beyond 1,024 waiting), not the sync.
fn say(line: &str) {
    let _ = printer().try_send(Said::Line(line.to_owned()));
}

/// Waits (up to a second) until the progress lines said so far are printed, so what comes
/// next follows them.
fn all_said() {
    let (done, printed) = std::sync::mpsc::sync_channel(1);
    if printer().try_send(Said::Flushed(done)).is_ok() {
        let _ = printed.recv_timeout(std::time::Duration::from_secs(1));
    }
}

/// `n` things named `thing` ("1 change", "2 changes").
fn counted(n: u64, thing: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

/// One exchange of a watch, as `sync --watch` prints it: "sent 2 changes", "received 5
/// changes (4 applied)", or both; then a line per table that refused the peer's changes, and
/// what the peer said it did not take.
fn exchange_lines(p: &Progress) -> Vec<String> {
    let counts = (p.sent + p.received > 0).then(|| exchange_line(p));
    let refused = p.refused.iter().map(|r| format!("refused, {r}"));
    let theirs = (p.peer_refusals.refused.iter())
        .map(|r| format!("the peer refused this database's changes, {r}"));
    let left_out = peer_left_out_note(&p.peer_refusals.left_out);
    (counts.into_iter().chain(refused).chain(theirs))
        .chain(left_out)
        .collect()
}

/// The counts of one exchange (see [`exchange_lines`]).
fn exchange_line(p: &Progress) -> String {
    let received = format!(
        "received {} ({} applied)",
        counted(p.received, "change"),
        p.applied
    );
    match (p.sent, p.received) {
        (_, 0) => format!("sent {}", counted(p.sent, "change")),
        (0, _) => received,
        _ => format!("sent {}, {received}", counted(p.sent, "change")),
    }
}

/// One exchange as a JSON line (`serve --json`, `sync --watch --json`).
fn exchange_json(p: &Progress) -> serde_json::Value {
    json!({"peer": p.peer.to_string(), "sent": p.sent, "received": p.received, "applied": p.applied, "refused": p.refused, "peer_refusals": p.peer_refusals})
}

/// `pluresdb sync URL [--watch]`. With `--watch --json` its output is JSON lines: one object
/// per exchange, then the totals with `"ended": true` (or, when it fails, `"ended": true` and
/// the `"error"`).
pub fn sync_cmd(
    db: Database,
    url: &str,
    watch: bool,
    limit: &MessageLimit,
    json_out: bool,
) -> Result<()> {
    // A watch says what each exchange did, as it happens (the totals come at the end).
    let on_progress = watch.then(|| {
        OnProgress(Arc::new(move |p: &Progress| {
            if json_out {
                say(&exchange_json(p).to_string());
            } else {
                exchange_lines(p).iter().for_each(|line| say(line));
            }
        }))
    });
    let opts = SessionOptions {
        watch,
        max_message: limit.bytes,
        on_progress,
        ..SessionOptions::default()
    };
    let result = if watch {
        // Connects again when the connection ends, until Ctrl-C, saying why and when.
        let mut dropped = false;
        let on_event = |event: WatchEvent<'_>| match event {
            WatchEvent::Connected if dropped => eprintln!("connected to {url} again"),
            WatchEvent::Connected => {}
            WatchEvent::Dropped { error, pause } => {
                dropped = true;
                let why = error.map_or_else(
                    || "the server closed the connection".to_owned(),
                    |e| e.to_string(),
                );
                eprintln!(
                    "{why}; connecting again in {} s (Ctrl-C stops)",
                    pause.as_secs()
                );
            }
        };
        runtime()?.block_on(stopping_on_ctrl_c(
            pluresdb_sync::net::watch(db.clone(), url, &opts, on_event),
            &opts.stop,
            true,
        ))
    } else {
        runtime()?.block_on(stopping_on_ctrl_c(
            sync_with(db.clone(), url, &opts),
            &opts.stop,
            true,
        ))
    };
    if watch {
        all_said();
        // The JSON lines end with an `ended` line however the watch ended.
        if let (true, Err(e)) = (json_out, &result) {
            println!("{}", json!({"ended": true, "error": e.to_string()}));
        }
    }
    let report = match result {
        Ok(report) => report,
        // A session that ended on its connection (not one that never connected, or was
        // stopped at once) kept what it merged.
        Err(e)
            if e.kind() == pluresdb_core::ErrorKind::Io
                && ![
                    "cannot connect",
                    "stopped at once",
                    pluresdb_sync::PEER_STOPPED,
                ]
                .iter()
                .any(|start| e.message().starts_with(start)) =>
        {
            return Err(pluresdb_core::Error::new(
                e.kind(),
                format!(
                    "{}; what merged before that is kept: sync again to go on from there",
                    e.message()
                ),
            ));
        }
        Err(e) => return Err(e),
    };
    if report.stopped && !watch {
        return Err(pluresdb_core::Error::new(
            pluresdb_core::ErrorKind::Io,
            format!(
                "stopped (Ctrl-C) before the sync finished, after sending {} and \
                 receiving {} ({} applied); what merged is kept: sync again to go on from there",
                counted(report.sent, "change"),
                report.received,
                report.applied
            ),
        ));
    }
    // What a stopped watch left unsent (a set cut short, or written as it stopped).
    let pending = match report.peer {
        Some(peer) if watch && report.stopped => db.pending_for(peer)?,
        _ => 0,
    };
    if json_out {
        let mut totals = json!({"peer": report.peer.map(|s| s.to_string()), "sent": report.sent, "received": report.received, "applied": report.applied, "skipped": report.skipped, "left_out": report.left_out, "trigger_writes": report.trigger_writes, "refused": report.refused, "peer_refusals": report.peer_refusals});
        if watch {
            // The last of the JSON lines.
            totals["ended"] = true.into();
            totals["pending"] = pending.into();
            let mut out = crate::output::stdout();
            writeln!(out, "{totals}")?;
            out.flush()?;
        } else {
            print_json(&mut crate::output::stdout(), &totals)?;
        }
    } else if report.peer.is_some() {
        println!(
            "synced with {url}: sent {}, received {} ({} applied)",
            counted(report.sent, "change"),
            report.received,
            report.applied
        );
    }
    if report.peer.is_none() {
        return Err(pluresdb_core::Error::new(
            pluresdb_core::ErrorKind::Io,
            format!("stopped before it ever connected to {url}"),
        ));
    }
    if pending > 0 {
        eprintln!(
            "note: {} not confirmed by the peer yet (the watch stopped first); the next \
             sync sends what it lacks",
            if pending == 1 {
                "1 change is".to_owned()
            } else {
                format!("{pending} changes are")
            }
        );
    }
    if watch {
        // A table left out early in a watch may sync since: say what still waits.
        if let Some(note) = waiting_note(&db.left_out()?) {
            eprintln!("note: {note}");
        }
    } else {
        note_merged(report.skipped, &report.left_out);
        if let Some(note) = peer_left_out_note(&report.peer_refusals.left_out) {
            eprintln!("note: {note}");
        }
    }
    warn_trigger_writes(report.trigger_writes);
    // Changes refused on either side: both said, the sync exits with status 1.
    let errors = [
        refused_error(&report.refused),
        peer_refused_error(&report.peer_refusals.refused),
    ];
    match errors {
        [Some(ours), Some(theirs)] => Err(pluresdb_core::Error::new(
            ours.kind(),
            format!("{} Also, {}", ours.message(), theirs.message()),
        )),
        [ours, theirs] => ours.or(theirs).map_or(Ok(()), Err),
    }
}

/// Runs `work` to its end. Ctrl-C (when `on_ctrl_c`) stops it through `stop`: its sessions
/// send what is queued, merge what arrived and close their connections as the protocol says
/// (then it ends, with its report); a second Ctrl-C ends it at once.
async fn stopping_on_ctrl_c<T>(
    work: impl std::future::Future<Output = Result<T>>,
    stop: &Stop,
    on_ctrl_c: bool,
) -> Result<T> {
    tokio::pin!(work);
    tokio::select! {
        result = &mut work => result,
        _ = tokio::signal::ctrl_c(), if on_ctrl_c => {
            stop.stop();
            tokio::select! {
                result = work => result,
                _ = tokio::signal::ctrl_c() => Err(pluresdb_core::Error::new(
                    pluresdb_core::ErrorKind::Io,
                    "stopped at once (Ctrl-C again): connections were dropped without closing; \
                     what was merged is kept, and the next sync sends the rest",
                )),
            }
        }
    }
}

/// Warns that triggers wrote synced rows while received changes merged (`apply` and `sync`).
fn warn_trigger_writes(rows: u64) {
    if rows > 0 {
        eprintln!(
            "warning: while the received changes were merged, triggers wrote {rows} row(s) of \
             synced tables; the device that made those changes sent its triggers' results too, \
             so these rows may now differ between devices. Keep what triggers derive in tables \
             that are not synced (or in views)"
        );
    }
}

/// Tells the user what merges left out, if anything (`apply` and `sync`).
fn note_merged(skipped: u64, left_out: &[Refetch]) {
    if let Some(note) = left_out_note(skipped, left_out) {
        eprintln!("note: {note}");
    }
}

/// `pluresdb sync --status`.
pub fn status(db: &Database, json_out: bool) -> Result<()> {
    let peers = db.sync_status()?;
    let mut out = crate::output::stdout();
    if json_out {
        return print_json(
            &mut out,
            &json!({
                "site": db.site_id().to_string(),
                "db_version": db.db_version()?,
                "version_vector": db.version_vector()?.to_string(),
                "peers": peers,
                "left_out": db.left_out()?,
            }),
        );
    }
    writeln!(
        out,
        "this database: site {} at version {}",
        db.site_id(),
        db.db_version()?
    )?;
    let vv = db.version_vector()?.to_string();
    writeln!(
        out,
        "it has: {vv}\nto bring it another device's changes without a network, run there: {}",
        changes_command(db, &vv)
    )?;
    if let Some(note) = waiting_note(&db.left_out()?) {
        writeln!(out, "left out: {note}")?;
    }
    if peers.is_empty() {
        writeln!(out, "not synced with any peer yet")?;
        return Ok(());
    }
    let now = pluresdb_core::wall_millis();
    let rows = peers.iter().map(|p| {
        vec![
            p.site.to_string(),
            p.address.clone().unwrap_or_default(),
            p.last_sync_ms.map_or_else(String::new, |t| {
                format!("{}s ago", now.saturating_sub(t) / 1000)
            }),
            p.sent.to_string(),
            p.received.to_string(),
            p.pending.to_string(),
        ]
    });
    print_table(
        &mut out,
        &[
            "peer",
            "address",
            "last sync",
            "sent",
            "received",
            "pending",
        ],
        rows,
    )?;
    for peer in peers.iter().filter(|p| p.cut_short) {
        writeln!(
            out,
            "the last sync of {}'s changes was cut short; the next sync with it goes on where \
             it stopped",
            peer.site
        )?;
    }
    for peer in &peers {
        for refused in &peer.refused {
            writeln!(
                out,
                "changes from {} refused, {refused}; the next sync brings them again",
                peer.site
            )?;
        }
    }
    for peer in &peers {
        for refused in &peer.peer_refusals.refused {
            writeln!(
                out,
                "{} refused this database's changes, {refused}; every sync sends them again",
                peer.site
            )?;
        }
        if let Some(note) = peer_left_out_note(&peer.peer_refusals.left_out) {
            writeln!(out, "{}: {note}", peer.site)?;
        }
    }
    for peer in peers.iter().filter(|p| !p.asks_again.is_empty()) {
        let names: Vec<String> = peer.asks_again.iter().map(ToString::to_string).collect();
        writeln!(
            out,
            "{} arrived here after their changes were left out; the next sync asks {} for all \
             of their changes",
            names.join(", "),
            peer.site
        )?;
    }
    Ok(())
}
