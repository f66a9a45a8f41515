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
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};

use pluresdb_core::{
    ApplyReport, Database, Error, ErrorKind, PeerRefusals, Refetch, Refused, Result, ResumePoint,
    SiteId, SyncProgress, join_left_out, join_refused,
};

use crate::applier::Applier;
use crate::codec::{DEFAULT_MAX_MESSAGE, Message, RAISE_LIMIT, TARGET_MESSAGE};
use crate::key_map::{KeyMap, KeysTold};

/// How a session behaves.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// Keep the session open after the first exchange and send new changes as they commit.
    pub watch: bool,
    /// Changes per message.
    pub batch: usize,
    /// Largest message accepted from the peer, in bytes (also taken for the peer's limit:
    /// give both sides the same).
    pub max_message: usize,
    /// Where the peer is (recorded in the sync status).
    pub address: Option<String>,
    /// How long to wait for the peer: for the WebSocket handshake and its hello, and for a
    /// sign of life once it was silent for `keepalive`.
    pub timeout: Duration,
    /// A session that sent nothing for this long pings its peer (a WebSocket Ping, answered
    /// with a Pong), so a live peer is heard at least this often, even one that only
    /// receives. A peer heard nothing from for `keepalive + timeout` is taken for gone (its
    /// machine slept, or the network dropped the connection without closing it) and the
    /// session ends with an error naming it. Give both sides the same.
    pub keepalive: Duration,
    /// For [`serve`](crate::net::serve): sessions served at once, at most (each has a thread
    /// merging what it receives); connections beyond wait, unanswered, until one ends, so
    /// connections that never say hello cannot take up the machine.
    pub max_sessions: usize,
    /// Ends the sessions when stopped (on Ctrl-C, say): see [`Stop`].
    pub stop: Stop,
    /// Told what the session did each time it records its counters: after it sent a set of
    /// changes and after the peer's set merged (for a watching session, once per live
    /// exchange). `None`: nobody is told.
    pub on_progress: Option<OnProgress>,
    /// Told when a session with a peer whose hello was accepted ends: what it did in all, and
    /// the error it ended with (a peer refused at its hello, or a session still running when a
    /// stopped server gives up waiting, is not told of). `None`: nobody is told.
    pub on_session_end: Option<OnSessionEnd>,
}

/// Ends sessions, and [`serve`](crate::net::serve), on request. A session stopped sends what
/// it has queued, merges what it received, and closes the connection as the protocol says
/// (its peer hears a close, not a dropped connection); it returns its report. A watching
/// session whose peer's hello and `Resume` came first sends the changes committed before the
/// stop that it has not sent yet (by another process since it last looked, say) and waits for
/// the peer to confirm them, up to 2 s (300 ms for a set it was sending at the stop: a large
/// one is cut short; a peer stopping at the same time may leave them unconfirmed: the next
/// session sends them again). Clones stop together.
#[derive(Clone, Debug)]
pub struct Stop(Arc<tokio::sync::watch::Sender<bool>>);

impl Default for Stop {
    fn default() -> Self {
        Stop(Arc::new(tokio::sync::watch::Sender::new(false)))
    }
}

impl Stop {
    /// Stops every session (and server) given this handle or a clone of it.
    pub fn stop(&self) {
        self.0.send_replace(true);
    }

    /// Resolves once stopped.
    pub async fn stopped(&self) {
        let mut stopped = self.0.subscribe();
        let _ = stopped.wait_for(|s| *s).await;
    }
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            watch: false,
            batch: 2000,
            max_message: DEFAULT_MAX_MESSAGE,
            address: None,
            timeout: Duration::from_secs(60),
            keepalive: Duration::from_secs(30),
            max_sessions: 64,
            stop: Stop::default(),
            on_progress: None,
            on_session_end: None,
        }
    }
}

/// A callback given what a session did since it last called it (see
/// [`SessionOptions::on_progress`]); it runs on the session's task, so keep it short.
#[derive(Clone)]
pub struct OnProgress(pub Arc<dyn Fn(&Progress) + Send + Sync>);

impl std::fmt::Debug for OnProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnProgress(..)")
    }
}

/// What [`OnSessionEnd`] calls: a session's totals, and the error it ended with.
pub type SessionEndFn = dyn Fn(&SessionReport, Option<&Error>) + Send + Sync;

/// Told the totals of each session as it ends (see [`SessionOptions::on_session_end`]).
#[derive(Clone)]
pub struct OnSessionEnd(pub Arc<SessionEndFn>);

impl std::fmt::Debug for OnSessionEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnSessionEnd(..)")
    }
}

/// What a session did since it last told [`OnProgress`]: changes sent, received, and of
/// those, applied, tables that refused the peer's changes, and what the peer did not take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The peer's site id.
    pub peer: SiteId,
    /// Changes sent.
    pub sent: u64,
    /// Changes received.
    pub received: u64,
    /// Received changes that won and were written.
    pub applied: u64,
    /// Tables that refused the peer's changes since it was last told (see
    /// [`SessionReport::refused`]).
    pub refused: Vec<Refused>,
    /// What the peer said it did not take of this side's changes since it was last told
    /// (see [`SessionReport::peer_refusals`]).
    pub peer_refusals: PeerRefusals,
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
    /// Received changes left out because this database does not sync their table or lacks
    /// their column (asked for again once it does).
    pub skipped: u64,
    /// Their tables and columns (see [`ApplyReport::left_out`]).
    pub left_out: Vec<Refetch>,
    /// Rows of synced tables that triggers wrote as received rows were merged (see
    /// [`ApplyReport::trigger_writes`]).
    pub trigger_writes: u64,
    /// Times the session ended to be connected again, so that a new hello asks for
    /// everything: a table or column that one side had left changes out for arrived there (see
    /// `Database::cursor_resets`), and a running session cannot ask again. A watching session
    /// ends when this database's count moves, telling the peer with WebSocket close code 1012
    /// (service restart); a session whose peer closes with that code ends too. Either way
    /// [`run_session`] returns with 1 here and its caller should connect again;
    /// [`sync_with`](crate::net::sync_with) does, and reports how many times.
    pub reconnected: u64,
    /// The session was ended by [`Stop`] (a session that was not watching may not have
    /// finished).
    pub stopped: bool,
    /// Tables whose changes from the peer were refused (see [`ApplyReport::refused`]): the
    /// peer's cursor was not recorded, so the next session receives them again.
    pub refused: Vec<Refused>,
    /// What the peer said it did not take of this side's changes: tables it refused (sent
    /// again by every session until they merge there) and tables and columns it does not sync
    /// (it asks for them once it does). A peer of an older build (protocol version 4 or
    /// older) says nothing. Recorded with the peer's `Ack`s for
    /// [`PeerStatus::peer_refusals`](pluresdb_core::PeerStatus::peer_refusals).
    pub peer_refusals: PeerRefusals,
}

impl SessionReport {
    /// Adds the counts of a later session with the same peer.
    pub(crate) fn add(&mut self, later: SessionReport) {
        self.peer = later.peer.or(self.peer);
        self.sent += later.sent;
        self.received += later.received;
        self.applied += later.applied;
        self.skipped += later.skipped;
        self.left_out = join_left_out(std::mem::take(&mut self.left_out), later.left_out);
        self.trigger_writes += later.trigger_writes;
        self.reconnected += later.reconnected;
        self.stopped |= later.stopped;
        self.refused = join_refused(std::mem::take(&mut self.refused), later.refused);
        self.peer_refusals.join(&later.peer_refusals);
    }
}

/// How the error of a session that the peer stopped begins (the peer's reason follows).
pub const PEER_STOPPED: &str = "the peer stopped the sync";

pub(crate) fn ws_error(err: WsError) -> Error {
    match err {
        WsError::Capacity(e) => Error::new(
            ErrorKind::InvalidInput,
            format!("the peer sent more than this side accepts ({e}); {RAISE_LIMIT}"),
        ),
        e => Error::new(ErrorKind::Io, format!("sync connection failed: {e}")),
    }
}

/// An encoded message from the thread that reads changes: its bytes, the number of changes in
/// it, and for the last one (`Done`) the `db_version` it reports.
type Produced = Result<(Vec<u8>, u64, Option<u64>)>;

/// Encoded messages waiting to be sent, at most (the reading thread waits while the socket is
/// slower: a large database is not read into memory ahead of the peer).
const SEND_QUEUE: usize = 8;

/// Changes sent, at least, between two `Progress` messages (about a merge transaction of the
/// peer's, which groups up to [`GROUP_CHANGES`](crate::applier::GROUP_CHANGES)).
const PROGRESS_CHANGES: usize = 20_000;

/// What a reading thread reads.
struct Production {
    since: u64,
    /// Where the peer's last set was cut short (from its `Resume`), to go on from.
    resume: Option<ResumePoint>,
    /// Tables and columns the peer asked for all the changes of (from its `Resume`).
    wanted: Vec<Refetch>,
    /// Whether the peer takes `Progress` messages.
    progress: bool,
    /// For a peer that takes `KeyColumns`: what it was told of them.
    keys_told: Option<Arc<KeysTold>>,
}

/// Reads the changes after `since` on a thread and queues them as encoded messages (each within
/// the size peers accept: `max_message` is assumed to be the peer's limit too), with a
/// `Progress` every [`PROGRESS_CHANGES`] or so, ending with `Done`.
fn produce(
    db: Database,
    read: Production,
    exclude: SiteId,
    batch: usize,
    max_message: usize,
    out: mpsc::Sender<Produced>,
) {
    std::thread::spawn(move || {
        let target = TARGET_MESSAGE.min(max_message);
        let send = |message: Produced| {
            out.blocking_send(message)
                .map_err(|_| Error::new(ErrorKind::Io, "sync session ended"))
        };
        let batches = |changes: &[pluresdb_core::ChangeRecord]| {
            Message::encode_changes_within(changes, target, max_message, &mut |bytes, n| {
                send(Ok((bytes, n as u64, None)))
            })
        };
        // A peer that does not resume gets no points (and none is recorded).
        let every = if read.progress {
            PROGRESS_CHANGES
        } else {
            usize::MAX
        };
        // Before the changes: this side's composite keys, if the peer has not heard them.
        let news = match &read.keys_told {
            Some(told) => told.news(&db),
            None => Ok(None),
        };
        let result = news.and_then(|news| match news {
            Some(news) => send(Ok((news.encode(), 0, None))),
            None => Ok(()),
        });
        let result = result.and_then(|()| {
            db.for_each_change_resuming(
                read.since,
                exclude,
                batch,
                every,
                read.resume.as_ref(),
                |changes, point| {
                    batches(changes)?;
                    match point {
                        Some(point) => send(Ok((Message::Progress(point).encode(), 0, None))),
                        None => Ok(()),
                    }
                },
            )
        });
        // Then all the changes of what the peer asked for again (it has the rest; of those,
        // its own too: it may have dropped their rows), in the same set: the peer's cursor is
        // recorded once all of it merged.
        let result = result.and_then(|db_version| {
            db.for_each_change_of(&read.wanted, batch, batches)?;
            Ok(db_version)
        });
        // Recorded before it is told (see `Database::announce`).
        let result = result.and_then(|db_version| db.announce(Some(exclude), db_version));
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

/// Runs a session with the peer at the other end of `ws`. It may end asking to be connected
/// again (see [`SessionReport::reconnected`]).
pub async fn run_session<S>(
    db: Database,
    ws: WebSocketStream<S>,
    opts: &SessionOptions,
) -> Result<SessionReport>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    reported(db, ws, opts, false).await
}

/// [`run_session`] for the side that accepted the connection (a server): it says hello once
/// the peer has, in the peer's protocol version, so a peer of an older build (version 1,
/// which resumes nothing) still syncs with it. It offers the peer only the peer's own resume
/// point. [`serve`](crate::net::serve) runs this.
pub async fn answer_session<S>(
    db: Database,
    ws: WebSocketStream<S>,
    opts: &SessionOptions,
) -> Result<SessionReport>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    reported(db, ws, opts, true).await
}

/// [`session`], returning its report.
async fn reported<S>(
    db: Database,
    ws: WebSocketStream<S>,
    opts: &SessionOptions,
    answering: bool,
) -> Result<SessionReport>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut counted = SessionReport::default();
    session(db, ws, opts, answering, &mut counted).await?;
    Ok(counted)
}

/// A session; the side `answering` says hello after the peer. What it did goes to `counted`,
/// also when it ends with an error.
pub(crate) async fn session<S>(
    db: Database,
    ws: WebSocketStream<S>,
    opts: &SessionOptions,
    answering: bool,
    counted: &mut SessionReport,
) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = ws.split();
    // Read before the vector: cursors set back after it are then noticed (see
    // `SyncProgress::resets_seen`).
    let resets_seen = db.cursor_resets()?;
    let have = db.version_vector()?;
    let hello = Message::Hello {
        site: db.site_id(),
        db_version: db.db_version()?,
        have,
        resumes: true,
        refetches: true,
        key_columns: true,
        refusals: true,
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
        applied_recorded: 0,
        refused_told: 0,
        peer_refusals_told: PeerRefusals::default(),
        told_peer: PeerRefusals::default(),
        peer_takes_refusals: false,
        stopped_at: None,
        noted_through: None,
        tx,
        applier: Applier::start(db.clone(), resets_seen),
        resume: None,
        wanted: Vec::new(),
        peer_resumes: false,
        key_map: Arc::default(),
        keys_told: None,
        awaiting_resume: None,
        peer_done_at: VecDeque::new(),
        outbox: VecDeque::new(),
        hello: None,
        unflushed: false,
        liveness: Liveness::new(),
        resets_seen,
        peer_asked_to_reconnect: false,
    };
    if answering {
        session.hello = Some(hello);
    } else {
        session.send(hello.encode());
    }
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
    // A session cut short still counts what it sent and merged (best effort: its outcome
    // stands whether or not the counts could be written).
    if session.report.sent > session.sent_recorded
        || session.report.received > session.received_recorded
    {
        let _ = session.record(None, None);
    }
    if let Some(id) = subscription {
        db.off(id);
    }
    if let Err(e) = &result {
        // The error goes first: queued changes would only be sent again.
        session.outbox.clear();
        session.send(Message::error(e.to_string()).encode());
    }
    if result.is_ok() && session.report.reconnected > 0 && !session.peer_asked_to_reconnect {
        session.outbox.push_back(WsMessage::Close(Some(CloseFrame {
            code: CloseCode::Restart,
            reason: "connect again: this side has new tables to ask for".into(),
        })));
    }
    // What is still queued goes out (an Ack, the error), unless the peer stopped reading. Then
    // what the peer sent meanwhile is read (and left) up to its answering Close: a connection
    // dropped with data unread ends with a reset, which the peer reports as an error.
    let outbox = std::mem::take(&mut session.outbox);
    // (A stopped session has as long from its stop: a stopped server waits 5 s for all of its
    // sessions.)
    let flush_for = FINAL_FLUSH.min(opts.timeout);
    let flush_until = match session.stopped_at {
        Some(at) => (at + flush_for).max(Instant::now() + STOP_FLUSH_LEAST),
        None => Instant::now() + flush_for,
    };
    let _ = tokio::time::timeout_at(flush_until, async {
        for message in outbox {
            if sink.feed(message).await.is_err() {
                return;
            }
        }
        if sink.close().await.is_ok() {
            while let Some(Ok(_)) = stream.next().await {}
        }
    })
    .await;
    if let Some(OnSessionEnd(tell)) = &opts.on_session_end
        && session.report.peer.is_some()
    {
        tell(&session.report, result.as_ref().err());
    }
    *counted = session.report;
    result
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
    applied_recorded: u64,
    /// How many of `report.refused` (which grows at its end) [`OnProgress`] was told of.
    refused_told: usize,
    /// What of `report.peer_refusals` [`OnProgress`] was told of.
    peer_refusals_told: PeerRefusals,
    /// What this side told the peer it did not take of its changes.
    told_peer: PeerRefusals,
    /// The peer's hello said it takes `Refused`.
    peer_takes_refusals: bool,
    /// When [`Stop`] stopped the session.
    stopped_at: Option<Instant>,
    /// The latest merge of this session noted as the peer's (results arrive in order, so when
    /// a set's last batch has merged, this is that set's last merge). Notes of a session cut
    /// short stay unconfirmed: the next session sends their changes back once, and the peer's
    /// ack then drops them.
    noted_through: Option<u64>,
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
    /// When the peer was last heard, and when this side last sent.
    liveness: Liveness,
    /// How many times the cursors had been set back when the session began (a watching
    /// session ends when they are set back again, see [`SessionReport::reconnected`]).
    resets_seen: u64,
    /// The peer closed the connection with code 1012: connect again.
    peer_asked_to_reconnect: bool,
    /// Where the peer's last set of changes from this side was cut short (its `Resume`
    /// says), for the first read to go on from.
    resume: Option<ResumePoint>,
    /// What the peer asked for all the changes of (its `Resume` says), for the first read.
    wanted: Vec<Refetch>,
    /// The peer's hello was of version 2: it sends a `Resume` and takes `Progress`.
    peer_resumes: bool,
    /// How the peer's composite keys map onto this database's (from its `KeyColumns`),
    /// applied to each batch on the merging thread.
    key_map: Arc<KeyMap>,
    /// For a peer whose hello said it takes `KeyColumns`: what it was told of them.
    keys_told: Option<Arc<KeysTold>>,
    /// Sending waits for the peer's `Resume`, asked for then (the peer's hello came).
    awaiting_resume: Option<Instant>,
    /// For a side that answers: its hello, sent once the peer's came (in its version).
    hello: Option<Message>,
}

/// When the peer was last heard and when this side last sent something: when to ping the
/// peer, and when to take it for gone.
///
/// A side that sent nothing for `keepalive` pings: a heartbeat the peer hears, and a request
/// for a Pong. So a live peer is heard at least every `keepalive` even when one side only
/// receives (it pings while it reads), and only a peer not heard from for
/// `keepalive + timeout` is gone. The times are when things happened, so other work of the
/// session (a watch poll, a merge) does not postpone them.
struct Liveness {
    started: Instant,
    /// When the last frame (of any kind) arrived.
    heard: Instant,
    /// When this side last handed a frame to the connection.
    sent: Instant,
}

impl Liveness {
    fn new() -> Liveness {
        let now = Instant::now();
        Liveness {
            started: now,
            heard: now,
            sent: now,
        }
    }

    /// When to give up on the peer: `timeout` after the start if it has not said hello
    /// (nothing else counts), else `keepalive + timeout` after it was last heard.
    fn gone_at(&self, opts: &SessionOptions, said_hello: bool) -> Instant {
        if said_hello {
            after(self.heard, opts.keepalive.saturating_add(opts.timeout))
        } else {
            after(self.started, opts.timeout)
        }
    }

    /// When to ping the peer.
    fn ping_at(&self, opts: &SessionOptions) -> Instant {
        after(self.sent, opts.keepalive)
    }
}

/// `start + wait`, or a time that never comes when that is past what an `Instant` holds.
fn after(start: Instant, wait: Duration) -> Instant {
    start
        .checked_add(wait)
        .unwrap_or_else(|| start + Duration::from_secs(100 * 365 * 86_400))
}

/// Ready at `at`; never when `None`.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// How long a stopped watching session goes on sending what was committed before the stop
/// (a large set is cut short, and the next session sends the rest). Its last messages then
/// have what is left of [`FINAL_FLUSH`] from the stop, and at least [`STOP_FLUSH_LEAST`].
const STOP_SEND: Duration = Duration::from_secs(2);
/// How long a stopped watching session goes on with a set it was sending at the stop.
const STOP_SEND_SENDING: Duration = Duration::from_millis(300);
/// The least time a stopped session's last messages get to leave.
const STOP_FLUSH_LEAST: Duration = Duration::from_millis(500);

/// How long the last messages of a session may take to leave (a peer that stopped reading
/// does not hold the session open).
const FINAL_FLUSH: Duration = Duration::from_secs(5);

/// How long a session whose write failed reads on for the peer's Close.
const CLOSE_READ: Duration = Duration::from_secs(1);

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
        // Once stopped, a watching session sends what was committed before the stop (and
        // waits, up to then, for the peer to confirm it); see `stop_watching`.
        let mut stopping: Option<Instant> = None;
        loop {
            let sent = self.outbox.is_empty() && !self.unflushed;
            if !self.opts.watch && self.peer_done && self.acked && sent {
                return Ok(());
            }
            if stopping.is_some()
                && sent
                && !self.producing
                && (self.acked || self.our_done.is_none())
            {
                return Ok(());
            }
            // The stream is polled before the deadline: a frame that already arrived counts,
            // however long this side was busy.
            let mut gone_at = self.liveness.gone_at(self.opts, self.peer.is_some());
            if let Some(asked) = self.awaiting_resume {
                gone_at = gone_at.min(after(asked, self.opts.timeout));
            }
            let ping_at = self.liveness.ping_at(self.opts);
            tokio::select! {
                // Read while merges have room (memory stays bounded; the loop runs on, pinging).
                incoming = tokio::time::timeout_at(gone_at, stream.next()), if self.applier.has_room() => {
                    let Ok(incoming) = incoming else {
                        return Err(self.gone());
                    };
                    self.liveness.heard = Instant::now();
                    if !self.handle(incoming)? {
                        return self.peer_closed();
                    }
                }
                Some(produced) = rx.recv(), if self.outbox.len() < OUTBOX => {
                    self.take_produced(produced?)?;
                }
                pumped = poll_fn(|cx| {
                    let queued = self.outbox.len();
                    let pumped = pump(sink, &mut self.outbox, &mut self.unflushed, cx);
                    if self.outbox.len() < queued {
                        self.liveness.sent = Instant::now();
                    }
                    pumped
                }), if !sent => {
                    if let Err(e) = pumped {
                        // A peer that closed the connection (it was stopped) may have said so
                        // before this side's write failed: its Close is read first.
                        return match self.read_to_close(stream).await? {
                            true => self.peer_closed(),
                            false => Err(ws_error(e)),
                        };
                    }
                }
                () = tokio::time::sleep_until(ping_at), if self.peer.is_some() => {
                    self.ping();
                }
                merged = self.applier.merged(), if !self.applier.idle() => {
                    self.count(merged?.report);
                    self.ack_when_merged()?;
                }
                () = local.notified(), if self.opts.watch && self.peer.is_some() && stopping.is_none() => {
                    self.local_changes();
                }
                () = self.opts.stop.stopped(), if stopping.is_none() => {
                    self.report.stopped = true;
                    self.stopped_at = Some(Instant::now());
                    // A set being sent goes on briefly (a small one, a write just made,
                    // finishes); a large one is cut short.
                    let sending = self.producing;
                    if !self.stop_watching(seen_version)? {
                        return Ok(());
                    }
                    let wait = if sending { STOP_SEND_SENDING } else { STOP_SEND };
                    stopping = Some(Instant::now() + wait.min(self.opts.timeout));
                }
                () = sleep_until_some(stopping) => return Ok(()),
                _ = poll.tick(), if self.opts.watch && self.peer.is_some() && stopping.is_none() => {
                    if self.db.cursor_resets()? != self.resets_seen {
                        self.report.reconnected = 1;
                        return Ok(());
                    }
                    let version = self.db.db_version()?;
                    if version != seen_version {
                        seen_version = version;
                        self.local_changes();
                    }
                }
            }
        }
    }

    /// On a stop: a watching session with local changes it has not sent (committed by another
    /// process since it last looked, or by this one just before the stop) sends them before it
    /// ends; true when there is such a last send to wait for (a set already being sent goes on
    /// for [`STOP_SEND_SENDING`], a new one for [`STOP_SEND`]: a large set is cut short, and
    /// the next session sends the rest).
    fn stop_watching(&mut self, seen_version: u64) -> Result<bool> {
        if !self.opts.watch || self.peer.is_none() || self.awaiting_resume.is_some() {
            return Ok(false);
        }
        if !self.producing && self.db.db_version()? != seen_version {
            self.local_changes();
        }
        Ok(self.producing)
    }

    /// How the session ends when the peer closed the connection.
    fn peer_closed(&self) -> Result<()> {
        let finished = self.peer_done && self.acked;
        if self.opts.watch || finished || self.peer_asked_to_reconnect {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::Io,
                "the peer closed the connection before the sync finished",
            ))
        }
    }

    /// After a failed write: handles what the peer sent before the connection went, briefly;
    /// true when that ends with the peer closing it.
    async fn read_to_close<St>(&mut self, stream: &mut St) -> Result<bool>
    where
        St: Stream<Item = std::result::Result<WsMessage, WsError>> + Unpin,
    {
        let deadline = Instant::now() + CLOSE_READ;
        while let Ok(incoming) = tokio::time::timeout_at(deadline, stream.next()).await {
            if matches!(incoming, None | Some(Err(_))) {
                return Ok(false);
            }
            if !self.handle(incoming)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Queues a Ping first in line (it still waits behind what the connection holds), unless
    /// one waits there already.
    fn ping(&mut self) {
        if !matches!(self.outbox.front(), Some(WsMessage::Ping(_))) {
            self.outbox.push_front(WsMessage::Ping(Default::default()));
        }
        self.liveness.sent = Instant::now();
    }

    /// The error for a peer that was silent too long.
    fn gone(&self) -> Error {
        let message = if self.awaiting_resume.is_some() {
            format!(
                "{} said hello but not where to go on from (its Resume) within {:?}: it is not \
                 a PluresDB sync peer, or a faulty one; giving up",
                self.peer_name(),
                self.opts.timeout
            )
        } else if self.peer.is_none() {
            format!(
                "{} did not say hello within {:?} (is it a PluresDB sync peer?); giving up",
                self.peer_name(),
                self.opts.timeout
            )
        } else {
            format!(
                "{} sent nothing for {:.1} s, no answer to a ping nor a ping of its own: it is \
                 gone (its machine slept or lost the network, or the connection was dropped on \
                 the way); giving up. Sync again once it is back",
                self.peer_name(),
                self.liveness.heard.elapsed().as_secs_f64()
            )
        };
        Error::new(ErrorKind::Io, message)
    }

    /// The peer as messages name it: its site id (once known) and address.
    fn peer_name(&self) -> String {
        let mut name = String::from("the peer");
        if let Some(site) = self.peer {
            name.push_str(&format!(" {site}"));
        }
        if let Some(address) = &self.opts.address {
            name.push_str(&format!(" at {address}"));
        }
        name
    }

    /// This database has new changes: send them now, or after the ones being read.
    fn local_changes(&mut self) {
        // (Before the peer's `Resume`, nothing is sent: its answer starts the first read.)
        if self.producing || self.awaiting_resume.is_some() {
            self.dirty = true;
        } else {
            self.start_producing();
        }
    }

    fn start_producing(&mut self) {
        if let Some(peer) = self.peer {
            self.producing = true;
            let read = Production {
                since: self.sent_through,
                resume: self.resume.take(),
                wanted: std::mem::take(&mut self.wanted),
                progress: self.peer_resumes,
                keys_told: self.keys_told.clone(),
            };
            produce(
                self.db.clone(),
                read,
                peer,
                self.opts.batch,
                self.opts.max_message,
                self.tx.clone(),
            );
        }
    }

    /// Before the first set for `peer`, which holds all of this side's changes of `wanted`
    /// (of everything, when it has none of them): what it said it left out, it asks for.
    fn peer_asks(&self, peer: SiteId, wanted: &[Refetch]) -> Result<()> {
        match (self.sent_through, wanted) {
            (0, _) => self.db.peer_asks_again(peer, None),
            (_, []) => Ok(()),
            (_, wanted) => self.db.peer_asks_again(peer, Some(wanted)),
        }
    }

    /// Counts merged changes in the report.
    fn count(&mut self, merged: ApplyReport) {
        let news = !merged.refused.is_empty() || !merged.left_out.is_empty();
        self.noted_through = self.noted_through.max(merged.noted);
        self.report.received += merged.received;
        self.report.applied += merged.applied;
        self.report.skipped += merged.skipped;
        self.report.left_out =
            join_left_out(std::mem::take(&mut self.report.left_out), merged.left_out);
        self.report.trigger_writes += merged.trigger_writes;
        // New ones go last: `record` tells of those after the ones told.
        for refused in merged.refused {
            if !self.report.refused.iter().any(|r| r.table == refused.table) {
                self.report.refused.push(refused);
            }
        }
        if news {
            self.tell_peer_what_was_not_taken();
        }
    }

    /// Tells a peer that takes `Refused` what of its changes this side refused or left out
    /// since it last told it (queued before the `Ack` of their set).
    fn tell_peer_what_was_not_taken(&mut self) {
        if !self.peer_takes_refusals {
            return;
        }
        let now = PeerRefusals {
            refused: self.report.refused.clone(),
            left_out: self.report.left_out.clone(),
        };
        let news = now.since(&self.told_peer);
        if !news.is_empty() {
            self.told_peer.join(&news);
            self.send(Message::refused(news).encode());
        }
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
        // Not past changes refused here: the next session receives them again.
        let cursor = cursor.filter(|_| self.report.refused.is_empty());
        self.db.record_sync(
            peer,
            &SyncProgress {
                address: self.opts.address.clone(),
                sent: self.report.sent - self.sent_recorded,
                received: self.report.received - self.received_recorded,
                cursor,
                acked,
                resets_seen: Some(self.resets_seen),
                confirm_through: cursor.and(self.noted_through),
                // What the peer said of this session's sets, as of its acknowledgement.
                peer_refusals: acked.map(|_| self.report.peer_refusals.clone()),
            },
        )?;
        let progress = Progress {
            peer,
            sent: self.report.sent - self.sent_recorded,
            received: self.report.received - self.received_recorded,
            applied: self.report.applied - self.applied_recorded,
            refused: self.report.refused[self.refused_told..].to_vec(),
            peer_refusals: self.report.peer_refusals.since(&self.peer_refusals_told),
        };
        self.sent_recorded = self.report.sent;
        self.received_recorded = self.report.received;
        self.applied_recorded = self.report.applied;
        self.refused_told = self.report.refused.len();
        self.peer_refusals_told.join(&progress.peer_refusals);
        if let Some(OnProgress(tell)) = &self.opts.on_progress
            && (progress.sent + progress.received > 0
                || !progress.refused.is_empty()
                || !progress.peer_refusals.is_empty())
        {
            tell(&progress);
        }
        Ok(())
    }

    /// Handles one incoming message; returns false when the connection closed.
    fn handle(
        &mut self,
        incoming: Option<std::result::Result<WsMessage, WsError>>,
    ) -> Result<bool> {
        let bytes = match incoming {
            Some(Ok(WsMessage::Close(Some(frame)))) if frame.code == CloseCode::Restart => {
                self.peer_asked_to_reconnect = true;
                self.report.reconnected = 1;
                return Ok(false);
            }
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
            (
                Message::Hello {
                    site,
                    have,
                    resumes,
                    refetches,
                    key_columns,
                    refusals,
                    ..
                },
                None,
            ) => {
                if site == self.db.site_id() {
                    return Err(Error::invalid(
                        "the peer has this database's site id: it is this database, or a copy \
                         of its file (a copied or restored database keeps the site id, and the \
                         two cannot sync with each other until one of them gets a new one: \
                         `pluresdb renew-site-id`)",
                    ));
                }
                crate::file::check_not_a_copy(self.db, &have, Some(site))?;
                self.peer = Some(site);
                self.report.peer = Some(site);
                self.sent_through = have.get(&self.db.site_id());
                self.peer_resumes = resumes;
                if let Some(mut hello) = self.hello.take() {
                    // In the peer's version.
                    if let Message::Hello { resumes: ours, .. } = &mut hello {
                        *ours = resumes;
                    }
                    self.send(hello.encode());
                }
                self.keys_told = key_columns.then(Arc::default);
                self.peer_takes_refusals = refusals;
                if resumes {
                    // Where this side's last set from the peer stopped, for it to go on; and
                    // when tables or columns arrived here since its cursor was recorded, its
                    // cursor from before and what it is to send all of. (A peer that cannot
                    // be asked sends everything: its cursor in the hello is 0. Read after the
                    // hello's vector: a cursor recorded in between, which drops the peer's
                    // entry, is in the vector.)
                    let point = self.db.resume_point(site)?;
                    let refetch = match refetches {
                        true => self.db.refetching()?.remove(&site),
                        false => None,
                    };
                    self.send(Message::Resume { point, refetch }.encode());
                    self.awaiting_resume = Some(Instant::now());
                } else {
                    self.peer_asks(site, &[])?;
                    self.start_producing();
                }
            }
            (Message::Resume { point, refetch }, Some(peer)) if self.awaiting_resume.is_some() => {
                self.awaiting_resume = None;
                self.resume = point;
                if let Some(refetch) = refetch {
                    // The peer had this side's changes up to its cursor from before.
                    let had = [(self.db.site_id(), refetch.cursor)].into_iter().collect();
                    crate::file::check_not_a_copy(self.db, &had, Some(peer))?;
                    self.sent_through = refetch.cursor;
                    self.wanted = refetch.wanted;
                }
                self.peer_asks(peer, &self.wanted.clone())?;
                self.start_producing();
            }
            (Message::Resume { .. }, Some(_)) => {
                return Err(Error::invalid(
                    "the peer sent a Resume it was not asked for: it is not a PluresDB sync \
                     peer, or a faulty one",
                ));
            }
            (Message::Hello { .. }, Some(_)) => {
                return Err(Error::invalid("the peer said hello twice"));
            }
            // A peer that failed on this side's hello says why before its own hello went out.
            (Message::Error(text), _) => {
                return Err(Error::new(ErrorKind::Io, format!("{PEER_STOPPED}: {text}")));
            }
            (_, None) => return Err(Error::invalid("the peer sent data before saying hello")),
            (Message::KeyColumns(tables), Some(_)) => self.key_map = Arc::new(KeyMap::new(tables)),
            (Message::Changes(changes), Some(peer)) => {
                self.applier.submit(peer, changes, &self.key_map)?
            }
            (Message::Progress(point), Some(peer)) => self.applier.mark(peer, point)?,
            // (At most `PeerRefusals::MAX_NAMED` of each are kept.)
            (Message::Refused(said), Some(_)) => self.report.peer_refusals.join(&said),
            (Message::Done { db_version }, Some(peer)) => {
                self.applier.end_set(peer)?;
                self.peer_done_at
                    .push_back((self.applier.submitted(), db_version));
                self.ack_when_merged()?;
            }
            (Message::Ack { db_version }, Some(_)) => {
                // Only what this side said it sent can be acknowledged: a higher version
                // recorded would show the peer as having changes it lacks.
                let sent = self.our_done.unwrap_or(0);
                if db_version > sent {
                    return Err(Error::invalid(format!(
                        "the peer acknowledged version {db_version} of this database, which \
                         sent it changes up to version {sent} only: the peer is not a \
                         PluresDB sync peer, or a faulty one"
                    )));
                }
                self.record(None, Some(db_version))?;
                if self.our_done == Some(db_version) {
                    self.acked = true;
                }
            }
        }
        Ok(true)
    }
}
