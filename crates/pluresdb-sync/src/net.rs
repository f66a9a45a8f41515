//! Sync over the network: a WebSocket server and client on TCP.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{accept_async_with_config, connect_async_with_config};

use pluresdb_core::{Database, Error, ErrorKind, Result};

use crate::session::{SessionOptions, SessionReport, run_session, ws_error};

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
                Ok(Ok(ws)) => run_session(db, ws, &opts).await.map(|_| ()),
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
    let mut report = connect_and_sync(db.clone(), url, opts).await?;
    // A session ends to be connected again when a table or column that one side left changes
    // out for arrives there: the new hellos ask for everything (a running session cannot).
    let mut ended_to_reconnect = report.reconnected > 0;
    while ended_to_reconnect {
        let again = connect_and_sync(db.clone(), url, opts).await?;
        ended_to_reconnect = again.reconnected > 0;
        report.add(again);
    }
    Ok(report)
}

/// One session of [`sync_with`].
async fn connect_and_sync(db: Database, url: &str, opts: &SessionOptions) -> Result<SessionReport> {
    if !url.starts_with("ws://") {
        return Err(Error::invalid(format!(
            "cannot sync with {url:?}: give a ws://host:port address (TLS is not supported yet; \
             put a TLS proxy in front for wss://)"
        )));
    }
    // A server that accepts the connection but never answers the handshake must not hold
    // the client for ever.
    let connect = connect_async_with_config(url, Some(ws_config(opts)), true);
    let (ws, _) = tokio::time::timeout(opts.timeout, connect)
        .await
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
        .map_err(|e| Error::new(ErrorKind::Io, format!("cannot connect to {url}: {e}")))?;
    let opts = SessionOptions {
        address: Some(url.to_owned()),
        ..opts.clone()
    };
    run_session(db, ws, &opts).await
}
