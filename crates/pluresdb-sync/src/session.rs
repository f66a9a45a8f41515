//! A two-way sync session over one WebSocket: both sides say hello, send what the other
//! lacks, apply what they receive, confirm, and (in watch mode) keep pushing new changes.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};

use pluresdb_core::{ApplyReport, Database, Error, ErrorKind, Result, SiteId, SyncProgress};

use crate::applier::Applier;
use crate::codec::{DEFAULT_MAX_MESSAGE, Message, TARGET_MESSAGE};

/// How a session behaves.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// Keep the session open after the first exchange and send new changes as they commit.
    pub watch: bool,
    /// Changes per message.
    pub batch: usize,
    /// Largest message accepted from the peer, in bytes.
    pub max_message: usize,
    /// Where the peer is (recorded in the sync status).
    pub address: Option<String>,
    /// How long to wait for the peer before giving up (outside watch mode).
    pub timeout: Duration,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            watch: false,
            batch: 2000,
            max_message: DEFAULT_MAX_MESSAGE,
            address: None,
            timeout: Duration::from_secs(60),
        }
    }
}

/// What a session did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionReport {
    /// The peer's site id.
    pub peer: Option<SiteId>,
    /// Changes sent.
    pub sent: u64,
    /// Changes received.
    pub received: u64,
    /// Received changes that won and were written.
    pub applied: u64,
}

pub(crate) fn ws_error(err: WsError) -> Error {
    Error::new(ErrorKind::Io, format!("sync connection failed: {err}"))
}

/// An encoded message from the thread that reads changes: its bytes, the number of changes in
/// it, and for the last one (`Done`) the `db_version` it reports.
type Produced = Result<(Vec<u8>, u64, Option<u64>)>;

/// Encoded messages waiting to be sent, at most (the reading thread waits while the socket is
/// slower: a large database is not read into memory ahead of the peer).
const SEND_QUEUE: usize = 8;

/// Reads the changes after `since` on a thread and queues them as encoded messages (each within
/// the size peers accept: `max_message` is assumed to be the peer's limit too), ending with
/// `Done`.
fn produce(
    db: Database,
    since: u64,
    exclude: SiteId,
    batch: usize,
    max_message: usize,
    out: mpsc::Sender<Produced>,
) {
    std::thread::spawn(move || {
        let target = TARGET_MESSAGE.min(max_message);
        let result = db.for_each_change(since, Some(exclude), batch, |changes| {
            Message::encode_changes_within(changes, target, max_message, &mut |bytes, n| {
                out.blocking_send(Ok((bytes, n as u64, None)))
                    .map_err(|_| Error::new(ErrorKind::Io, "sync session ended"))
            })
        });
        let _ = match result {
            Ok(db_version) => out.blocking_send(Ok((
                Message::Done { db_version }.encode(),
                0,
                Some(db_version),
            ))),
            Err(e) => out.blocking_send(Err(e)),
        };
    });
}

/// Runs a session with the peer at the other end of `ws`.
pub async fn run_session<S>(
    db: Database,
    ws: WebSocketStream<S>,
    opts: &SessionOptions,
) -> Result<SessionReport>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = ws.split();
    let hello = Message::Hello {
        site: db.site_id(),
        db_version: db.db_version()?,
        have: db.version_vector()?,
    };
    let local = Arc::new(Notify::new());
    let subscription = opts.watch.then(|| {
        let local = local.clone();
        db.on_every_change(move |_| local.notify_one())
    });
    let (tx, rx) = mpsc::channel(SEND_QUEUE);
    let mut session = Session {
        db: &db,
        opts,
        report: SessionReport::default(),
        peer: None,
        peer_done: false,
        our_done: None,
        acked: false,
        producing: false,
        dirty: false,
        sent_through: 0,
        sent_recorded: 0,
        received_recorded: 0,
        tx,
        applier: Applier::start(db.clone()),
        peer_done_at: VecDeque::new(),
        outbox: VecDeque::from([WsMessage::binary(hello.encode())]),
        unflushed: false,
    };
    let mut result = session.drive(&mut sink, &mut stream, rx, &local).await;
    // Whatever was received merges before the session returns (or fails with the merge); the
    // peer's last Done is then recorded, even if the connection closed before the Ack.
    let merged = session.applier.finish().await;
    match merged {
        Ok(merged) => {
            session.count(merged);
            if let Some((_, db_version)) = session.peer_done_at.back().copied()
                && let Err(e) = session.record(Some(db_version), None)
                && result.is_ok()
            {
                result = Err(e);
            }
        }
        Err(e) if result.is_ok() => result = Err(e),
        Err(_) => {}
    }
    if let Some(id) = subscription {
        db.off(id);
    }
    if let Err(e) = &result {
        // The error goes first: queued changes would only be sent again.
        session.outbox.clear();
        session.send(Message::Error(e.to_string()).encode());
    }
    // What is still queued goes out (an Ack, the error), unless the peer stopped reading.
    let outbox = std::mem::take(&mut session.outbox);
    let _ = tokio::time::timeout(FINAL_FLUSH.min(opts.timeout), async {
        for message in outbox {
            if sink.feed(message).await.is_err() {
                break;
            }
        }
        sink.close().await
    })
    .await;
    result.map(|()| session.report)
}

struct Session<'a> {
    db: &'a Database,
    opts: &'a SessionOptions,
    report: SessionReport,
    peer: Option<SiteId>,
    /// The peer sent everything it had.
    peer_done: bool,
    /// This side's `db_version` of its last `Done`.
    our_done: Option<u64>,
    /// The peer confirmed the last `Done`.
    acked: bool,
    /// A thread is reading changes to send.
    producing: bool,
    /// Local changes committed while producing: produce again after.
    dirty: bool,
    /// This side's `db_version` up to which changes were sent.
    sent_through: u64,
    sent_recorded: u64,
    received_recorded: u64,
    tx: mpsc::Sender<Produced>,
    /// Merges what the peer sends.
    applier: Applier,
    /// The peer's `Done`s not acknowledged yet: how many batches came before each, and the
    /// peer's `db_version` it reports. Each is acknowledged once those batches merged.
    peer_done_at: VecDeque<(usize, u64)>,
    /// Messages waiting for the connection. The session keeps reading the peer while they
    /// wait: two peers that both send more than the connection buffers would otherwise each
    /// wait for the other to read, forever.
    outbox: VecDeque<WsMessage>,
    /// Messages were handed to the connection and not flushed yet.
    unflushed: bool,
}

/// How long the last messages of a session may take to leave (a peer that stopped reading
/// does not hold the session open).
const FINAL_FLUSH: Duration = Duration::from_secs(5);

/// Queued messages, at most, before the session takes no more from its reading thread.
const OUTBOX: usize = 2;

/// How often a watching session looks for commits made by other processes (this process's
/// own commits wake it at once): a command-line write, for example, is another process.
const WATCH_POLL: Duration = Duration::from_millis(50);

/// Hands queued messages to `sink` and flushes them, as far as it takes them now; ready
/// (with the first error) once all are flushed. Nothing is lost if this is dropped pending.
fn pump<Si>(
    sink: &mut Si,
    outbox: &mut VecDeque<WsMessage>,
    unflushed: &mut bool,
    cx: &mut Context<'_>,
) -> Poll<std::result::Result<(), WsError>>
where
    Si: Sink<WsMessage, Error = WsError> + Unpin,
{
    while !outbox.is_empty() {
        ready!(sink.poll_ready_unpin(cx))?;
        if let Some(message) = outbox.pop_front() {
            sink.start_send_unpin(message)?;
            *unflushed = true;
        }
    }
    if *unflushed {
        ready!(sink.poll_flush_unpin(cx))?;
        *unflushed = false;
    }
    Poll::Ready(Ok(()))
}

impl Session<'_> {
    async fn drive<Si, St>(
        &mut self,
        sink: &mut Si,
        stream: &mut St,
        mut rx: mpsc::Receiver<Produced>,
        local: &Notify,
    ) -> Result<()>
    where
        Si: Sink<WsMessage, Error = WsError> + Unpin,
        St: Stream<Item = std::result::Result<WsMessage, WsError>> + Unpin,
    {
        let mut poll = tokio::time::interval(WATCH_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seen_version = if self.opts.watch {
            self.db.db_version()?
        } else {
            0
        };
        loop {
            let sent = self.outbox.is_empty() && !self.unflushed;
            if !self.opts.watch && self.peer_done && self.acked && sent {
                return Ok(());
            }
            // A watching session waits for its peer's changes as long as it takes, once the
            // peer has said hello: a peer that never does is dropped (it held a thread).
            let timeout = if self.opts.watch && self.peer.is_some() {
                Duration::MAX
            } else {
                self.opts.timeout
            };
            tokio::select! {
                incoming = tokio::time::timeout(timeout, stream.next()) => {
                    let Ok(incoming) = incoming else {
                        return Err(Error::new(ErrorKind::Io, format!("the peer sent nothing for {timeout:?}; giving up")));
                    };
                    if !self.handle(incoming).await? {
                        return if self.opts.watch || (self.peer_done && self.acked) {
                            Ok(())
                        } else {
                            Err(Error::new(ErrorKind::Io, "the peer closed the connection before the sync finished"))
                        };
                    }
                }
                Some(produced) = rx.recv(), if self.outbox.len() < OUTBOX => {
                    self.take_produced(produced?)?;
                }
                pumped = poll_fn(|cx| pump(sink, &mut self.outbox, &mut self.unflushed, cx)),
                    if !sent => pumped.map_err(ws_error)?,
                merged = self.applier.merged(), if !self.applier.idle() => {
                    self.count(merged?.report);
                    self.ack_when_merged()?;
                }
                () = local.notified(), if self.opts.watch && self.peer.is_some() => {
                    self.local_changes();
                }
                _ = poll.tick(), if self.opts.watch && self.peer.is_some() => {
                    let version = self.db.db_version()?;
                    if version != seen_version {
                        seen_version = version;
                        self.local_changes();
                    }
                }
            }
        }
    }

    /// This database has new changes: send them now, or after the ones being read.
    fn local_changes(&mut self) {
        if self.producing {
            self.dirty = true;
        } else {
            self.start_producing();
        }
    }

    fn start_producing(&mut self) {
        if let Some(peer) = self.peer {
            self.producing = true;
            produce(
                self.db.clone(),
                self.sent_through,
                peer,
                self.opts.batch,
                self.opts.max_message,
                self.tx.clone(),
            );
        }
    }

    /// Counts merged changes in the report.
    fn count(&mut self, merged: ApplyReport) {
        self.report.received += merged.received;
        self.report.applied += merged.applied;
    }

    /// Queues a message for the peer.
    fn send(&mut self, bytes: Vec<u8>) {
        self.outbox.push_back(WsMessage::binary(bytes));
    }

    /// Queues a message from the reading thread; after its `Done`, notes what was sent.
    fn take_produced(&mut self, (bytes, count, done): (Vec<u8>, u64, Option<u64>)) -> Result<()> {
        self.send(bytes);
        self.report.sent += count;
        let Some(db_version) = done else {
            return Ok(());
        };
        self.our_done = Some(db_version);
        self.acked = false;
        self.sent_through = db_version;
        self.producing = false;
        self.record(None, None)?;
        if self.dirty {
            self.dirty = false;
            self.start_producing();
        }
        Ok(())
    }

    /// Once every batch before a `Done` of the peer merged: records the peer's cursor and
    /// acknowledges it (the peer may then forget what it sent). Later batches need not have
    /// merged: a peer that keeps sending still gets its Acks.
    fn ack_when_merged(&mut self) -> Result<()> {
        let mut done = None;
        while let Some(&(batches, db_version)) = self.peer_done_at.front() {
            if !self.applier.has_merged(batches) {
                break;
            }
            self.peer_done_at.pop_front();
            done = Some(db_version);
        }
        let Some(db_version) = done else {
            return Ok(());
        };
        self.record(Some(db_version), None)?;
        self.peer_done = true;
        self.send(Message::Ack { db_version }.encode());
        Ok(())
    }

    /// Records counters (as increments) and cursors for the peer.
    fn record(&mut self, cursor: Option<u64>, acked: Option<u64>) -> Result<()> {
        let Some(peer) = self.peer else {
            return Ok(());
        };
        self.db.record_sync(
            peer,
            &SyncProgress {
                address: self.opts.address.clone(),
                sent: self.report.sent - self.sent_recorded,
                received: self.report.received - self.received_recorded,
                cursor,
                acked,
            },
        )?;
        self.sent_recorded = self.report.sent;
        self.received_recorded = self.report.received;
        Ok(())
    }

    /// Handles one incoming message; returns false when the connection closed.
    async fn handle(
        &mut self,
        incoming: Option<std::result::Result<WsMessage, WsError>>,
    ) -> Result<bool> {
        let bytes = match incoming {
            None | Some(Ok(WsMessage::Close(_))) => return Ok(false),
            Some(Err(e)) => return Err(ws_error(e)),
            Some(Ok(WsMessage::Binary(b))) => b,
            Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_))) => {
                return Ok(true);
            }
            Some(Ok(WsMessage::Text(_))) => {
                return Err(Error::invalid(
                    "the peer sent a text message; the sync protocol is binary",
                ));
            }
        };
        let message = Message::decode(&bytes, self.opts.max_message)?;
        match (message, self.peer) {
            (Message::Hello { site, have, .. }, None) => {
                if site == self.db.site_id() {
                    return Err(Error::invalid(
                        "the peer has this database's site id: it is this database, or a copy \
                         of its file (a copied or restored database keeps the site id, and the \
                         two cannot sync with each other)",
                    ));
                }
                crate::file::check_not_a_copy(self.db, &have)?;
                self.peer = Some(site);
                self.report.peer = Some(site);
                self.sent_through = have.get(&self.db.site_id());
                self.start_producing();
            }
            (Message::Hello { .. }, Some(_)) => {
                return Err(Error::invalid("the peer said hello twice"));
            }
            (_, None) => return Err(Error::invalid("the peer sent data before saying hello")),
            (Message::Changes(changes), Some(_)) => self.applier.submit(changes).await?,
            (Message::Done { db_version }, Some(_)) => {
                self.peer_done_at
                    .push_back((self.applier.submitted(), db_version));
                self.ack_when_merged()?;
            }
            (Message::Ack { db_version }, Some(_)) => {
                self.record(None, Some(db_version))?;
                if self.our_done.is_some_and(|v| db_version >= v) {
                    self.acked = true;
                }
            }
            (Message::Error(text), Some(_)) => {
                return Err(Error::new(
                    ErrorKind::Io,
                    format!("the peer stopped the sync: {text}"),
                ));
            }
        }
        Ok(true)
    }
}
