//! Sync over the network: a WebSocket server and client on TCP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{accept_async_with_config, connect_async_with_config};

use pluresdb_core::{Database, Error, ErrorKind, Result};

use crate::notes::{left_out_note, refused_error};
use crate::session::{SessionOptions, SessionReport, answer_session, session, ws_error};

/// Accepts sync sessions on `listener` until `opts.stop` is stopped (or the future is
/// dropped), at most `opts.max_sessions` at once. Each session stays open (watch mode) as long
/// as the peer keeps it, so peers that watch get changes live. Stopped, it takes no more
/// connections, and returns once its sessions have closed theirs (or after a few seconds).
pub async fn serve(db: Database, listener: TcpListener, opts: SessionOptions) -> Result<()> {
    let most = opts.max_sessions.max(1);
    let sessions = Arc::new(Semaphore::new(most));
    loop {
        // A connection is taken once a session may start (the others wait in the backlog).
        let permit = tokio::select! {
            permit = sessions.clone().acquire_owned() => permit
                .map_err(|_| Error::internal("the sync server's session limit was closed"))?,
            () = opts.stop.stopped() => break,
        };
        let (tcp, addr) = tokio::select! {
            accepted = listener.accept() => accepted.map_err(|e| {
                Error::new(
                    ErrorKind::Io,
                    format!("accepting a sync connection failed: {e}"),
                )
            })?,
            () = opts.stop.stopped() => break,
        };
        // Small sync messages must not wait for Nagle's algorithm.
        let _ = tcp.set_nodelay(true);
        let db = db.clone();
        let opts = SessionOptions {
            watch: true,
            address: Some(addr.to_string()),
            ..opts.clone()
        };
        tokio::spawn(async move {
            let handshake = accept_async_with_config(tcp, Some(ws_config(&opts)));
            let result = match tokio::time::timeout(opts.timeout, handshake).await {
                Ok(Ok(ws)) => answer_session(db, ws, &opts)
                    .await
                    .map(|report| note_merged(addr, &report)),
                Ok(Err(e)) => Err(ws_error(e)),
                Err(_) => Err(Error::new(
                    ErrorKind::Io,
                    format!("no WebSocket handshake within {:?}", opts.timeout),
                )),
            };
            if let Err(e) = result {
                eprintln!("pluresdb: sync with {addr} ended: {e}");
            }
            drop(permit);
        });
    }
    // Each session ends on the stop too, closing its connection.
    let all = u32::try_from(most).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(STOP_WAIT, sessions.acquire_many(all)).await;
    Ok(())
}

/// Tells the server's user what a session's merges left out, as its errors are.
fn note_merged(addr: SocketAddr, report: &SessionReport) {
    if let Some(note) = left_out_note(report.skipped, &report.left_out) {
        eprintln!("pluresdb: sync with {addr}: {note}");
    }
    if let Some(e) = refused_error(&report.refused) {
        eprintln!("pluresdb: sync with {addr}: {e}");
    }
}

/// How long a stopped server waits for its sessions to close their connections.
const STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// WebSocket limits that let through every message the session accepts (a message goes as
/// one frame).
fn ws_config(opts: &SessionOptions) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(opts.max_message))
        .max_frame_size(Some(opts.max_message))
}

/// Binds a sync server on `addr` (for example `127.0.0.1:34569`).
pub async fn bind(addr: &str) -> Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Error::new(ErrorKind::Io, format!("cannot listen on {addr}: {e}")))?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// Runs one sync session with the server at `url` (`ws://host:port`).
pub async fn sync_with(db: Database, url: &str, opts: &SessionOptions) -> Result<SessionReport> {
    let mut counted = SessionReport::default();
    sync_counted(db, url, opts, &mut counted, &mut || {}).await?;
    Ok(counted)
}

/// [`sync_with`], adding what its sessions did to `counted` also when one fails.
async fn sync_counted(
    db: Database,
    url: &str,
    opts: &SessionOptions,
    counted: &mut SessionReport,
    on_connected: &mut (dyn FnMut() + Send),
) -> Result<()> {
    // A session ends to be connected again when a table or column that one side left changes
    // out for arrives there: the new hellos ask for everything (a running session cannot).
    for _ in 0..MOST_RECONNECTS {
        let mut report = SessionReport::default();
        let ended = connect_and_sync(db.clone(), url, opts, &mut report, on_connected).await;
        let again = report.reconnected > 0 && !report.stopped;
        counted.add(report);
        ended?;
        if !again {
            return Ok(());
        }
    }
    Err(Error::new(
        ErrorKind::Io,
        format!(
            "the sync with {url} ended {MOST_RECONNECTS} times in a row to be connected again \
             (tables or columns keep arriving on one side); giving up for now: sync again"
        ),
    ))
}

/// Sessions in a row that [`sync_with`] connects again for, at most (one is the rule: a
/// peer that keeps asking would otherwise be connected to again without end).
const MOST_RECONNECTS: usize = 16;

/// What [`watch`] tells as it goes.
#[derive(Debug)]
pub enum WatchEvent<'a> {
    /// It connected to the server (a session starts).
    Connected,
    /// The session ended, for `error` (`None`: the server closed the connection); it connects
    /// again after `pause`.
    Dropped {
        error: Option<&'a Error>,
        pause: Duration,
    },
}

/// Pause before a new connection of [`watch`] after one that worked, doubled after each that
/// failed up to [`LONGEST_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_secs(1);
const LONGEST_PAUSE: Duration = Duration::from_secs(30);

/// Syncs with the server at `url` and keeps syncing live changes until `opts.stop` is stopped
/// (watch mode, whatever `opts.watch` says), connecting again whenever a session ends: the
/// network dropped, the machine slept, the server restarted or was stopped, or the session
/// failed. It tells `on_event` each time it connects, and before each new connection why the
/// last one ended and how long it waits (1 s after a session that worked, doubling up to
/// 30 s while connecting fails). A sync cut short goes on where it stopped. A refusal by the
/// server (another protocol version, the same site id, a restored copy) is tried again too:
/// it ends once the server is upgraded or the device given a new site id. It ends with an
/// error only for an address that is not one, and for this database's own state (read-only,
/// damaged, a bug).
/// Returns the counts of all its sessions, added up (`peer` is `None` if none connected).
pub async fn watch(
    db: Database,
    url: &str,
    opts: &SessionOptions,
    mut on_event: impl FnMut(WatchEvent<'_>) + Send,
) -> Result<SessionReport> {
    check_address(url)?;
    let opts = SessionOptions {
        watch: true,
        ..opts.clone()
    };
    let mut total = SessionReport::default();
    let mut pause = FIRST_PAUSE;
    loop {
        let mut report = SessionReport::default();
        let started = tokio::time::Instant::now();
        let ended = sync_counted(db.clone(), url, &opts, &mut report, &mut || {
            on_event(WatchEvent::Connected)
        })
        .await;
        // One that worked (it ended as the protocol says, merged changes from the peer, or
        // outlasted the wait for an answer) starts the pauses again; one refused each time
        // keeps doubling them.
        let worked = report.peer.is_some()
            && (ended.is_ok() || report.received > 0 || started.elapsed() > opts.timeout);
        if worked {
            pause = FIRST_PAUSE;
        }
        let stopped = report.stopped;
        total.add(report);
        let error = match ended {
            Ok(()) if stopped => return Ok(total),
            Ok(()) => None,
            Err(e) if mended_by_connecting_again(&e) => Some(e),
            Err(e) => return Err(e),
        };
        on_event(WatchEvent::Dropped {
            error: error.as_ref(),
            pause,
        });
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = opts.stop.stopped() => {
                total.stopped = true;
                return Ok(total);
            }
        }
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}

/// Whether a session's error may go away on a later connection: any but those about this
/// database itself.
fn mended_by_connecting_again(e: &Error) -> bool {
    !matches!(
        e.kind(),
        ErrorKind::ReadOnly | ErrorKind::Corrupt | ErrorKind::Internal
    )
}

/// One session of [`sync_with`].
async fn connect_and_sync(
    db: Database,
    url: &str,
    opts: &SessionOptions,
    counted: &mut SessionReport,
    on_connected: &mut (dyn FnMut() + Send),
) -> Result<()> {
    check_address(url)?;
    // A server that accepts the connection but never answers the handshake must not hold
    // the client for ever.
    let connect = connect_async_with_config(url, Some(ws_config(opts)), true);
    let connected = tokio::select! {
        connected = tokio::time::timeout(opts.timeout, connect) => connected,
        // Stopped while connecting: there is no session to close.
        () = opts.stop.stopped() => {
            counted.stopped = true;
            return Ok(());
        }
    };
    let (ws, _) = connected
        .map_err(|_| {
            Error::new(
                ErrorKind::Io,
                format!(
                    "cannot connect to {url}: no answer within {:?} (is it a PluresDB sync server? \
                     one serving as many sessions as it may, --max-sessions, answers when one ends)",
                    opts.timeout
                ),
            )
        })?
        .map_err(|e| match e {
            WsError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => Error::new(
                ErrorKind::Io,
                format!(
                    "cannot connect to {url}: nothing accepts connections there (is `pluresdb \
                     serve` running on that machine and port?)"
                ),
            ),
            e => Error::new(ErrorKind::Io, format!("cannot connect to {url}: {e}")),
        })?;
    on_connected();
    let opts = SessionOptions {
        address: Some(url.to_owned()),
        ..opts.clone()
    };
    session(db, ws, &opts, false, counted).await
}

/// Checks that `url` is a `ws://host[:port]` address (the port, 80 when left out, must be a
/// number from 1 to 65535).
fn check_address(url: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::invalid(format!(
            "cannot sync with {url:?}: {why}; give a ws://host:port address, as `pluresdb serve` \
             prints it"
        )))
    };
    let Some(rest) = url.strip_prefix("ws://") else {
        return bad(
            "it is not a ws:// address (TLS is not supported yet; put a TLS proxy in \
                    front for wss://)",
        );
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // (user:password@ is passed on as given.)
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if !authority.starts_with('[') && authority.matches(':').count() > 1 {
        return bad("an IPv6 address goes in brackets, as in ws://[::1]:9000");
    }
    let port = match authority.strip_prefix('[') {
        // [IPv6]:port
        Some(v6) => match v6.split_once(']') {
            Some((_, after)) => after.strip_prefix(':'),
            None => return bad("its IPv6 address has no closing ]"),
        },
        None => authority.rsplit_once(':').map(|(_, port)| port),
    };
    let host_missing = authority.is_empty() || authority.starts_with(':');
    if host_missing {
        return bad("it names no host");
    }
    match port {
        Some(port) if !matches!(port.parse::<u16>(), Ok(1..)) => {
            bad(&format!("{port:?} is not a port number (1 to 65535)"))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::check_address;

    #[test]
    fn addresses_are_checked_before_connecting() {
        for good in [
            "ws://127.0.0.1:9000",
            "ws://host",
            "ws://[::1]:9000/",
            "ws://user:pw@host:1",
            "ws://user@[::1]",
            "ws://h:1/x?y",
        ] {
            assert!(check_address(good).is_ok(), "{good}");
        }
        for (bad, says) in [
            ("ws://127.0.0.1:99999", "\"99999\" is not a port number"),
            ("ws://127.0.0.1:abc", "\"abc\" is not a port number"),
            ("ws://host:0", "\"0\" is not a port number"),
            ("ws://:9000", "names no host"),
            ("ws://user@:1", "names no host"),
            ("ws://::1:9000", "goes in brackets"),
            ("ws://[::1:9000", "no closing ]"),
            ("http://host:9000", "not a ws:// address"),
        ] {
            let err = check_address(bad).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
