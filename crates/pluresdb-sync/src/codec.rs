//! The sync protocol's messages and their compact, versioned binary encoding.
//!
//! Every message starts with the protocol version and a type byte. Values use PluresDB's wire
//! encoding (varints and tagged values). A message from an unknown version, of an unknown
//! type, malformed, or larger than the limit is rejected with an error; nothing is applied.

use std::collections::HashMap;
use std::sync::Arc;

use pluresdb_core::wire::{Reader, put_bytes, put_value, put_varint};
use pluresdb_core::{
    ChangeRecord, Error, ErrorKind, Hlc, PeerRefusals, Refetch, Refetching, Refused, Result,
    ResumePoint, SiteId, Value, Version, VersionVector,
};

/// The protocol version of every message but a resuming `Hello`, `Resume` and `Progress`.
pub const PROTOCOL_VERSION: u8 = 1;

/// The version of a `Hello` of a side that resumes, and of `Resume` and `Progress` (2 added
/// them). A build that speaks only version 1 refuses such a hello, saying to run the same
/// version on both sides; a server of this build answers a version 1 hello in version 1
/// (see [`answer_session`](crate::answer_session)). Change files carry version 1 hellos,
/// which every build reads.
pub const RESUMING_VERSION: u8 = 2;

/// The version of a `Resume` that asks for tables or columns again (3 added that; one that
/// asks for none stays version 2). It goes only to a peer whose hello said it takes it
/// ([`Message::Hello::refetches`]): a build that speaks only versions 1 and 2 refuses it.
pub const REFETCHING_VERSION: u8 = 3;

/// The version of `KeyColumns` (4 added it). It goes only to a peer whose hello said it takes
/// it ([`Message::Hello::key_columns`]), and into the change files of a database that syncs a
/// table keyed by more than one column: a build that speaks only versions 1 to 3 refuses it.
pub const KEY_COLUMNS_VERSION: u8 = 4;

/// The version of `Refused` (5 added it). It goes only to a peer whose hello said it takes it
/// ([`Message::Hello::refusals`]): a build that speaks only versions 1 to 4 refuses it.
pub const REFUSALS_VERSION: u8 = 5;

/// The site id under which a resuming hello's vector carries what the sender takes beyond
/// version 2 (no database has it: site ids are random). Builds of version 2 read it as a site
/// they have never heard of, and use only their own entry.
const FEATURES_SITE: SiteId = SiteId([0xff; 16]);

/// [`FEATURES_SITE`]'s bit: the sender takes version 3 `Resume`s.
const TAKES_REFETCH: u64 = 1;

/// [`FEATURES_SITE`]'s bit: the sender takes `KeyColumns` (version 4).
const TAKES_KEY_COLUMNS: u64 = 2;

/// [`FEATURES_SITE`]'s bit: the sender takes `Refused` (version 5).
const TAKES_REFUSALS: u64 = 4;

/// Most tables a `KeyColumns` names, and key columns per table.
const MAX_KEYED_TABLES: usize = 1 << 16;
const MAX_KEY_COLUMNS: usize = 2000;

/// Largest message accepted by default (a batch of changes), in bytes.
pub const DEFAULT_MAX_MESSAGE: usize = 16 << 20;

/// How to raise the message limit, for errors about it.
pub(crate) const RAISE_LIMIT: &str = "raise the limit on both sides with --max-message (pluresdb \
     sync, serve, changes and apply; SessionOptions::max_message in Rust)";

/// Largest `Changes` message a sender makes, in bytes: a quarter of what a peer accepts by
/// default, so batches of large values still arrive (a batch that encodes larger is split).
pub const TARGET_MESSAGE: usize = DEFAULT_MAX_MESSAGE / 4;

/// Longest text accepted inside a message (values may be larger: up to the message limit).
const MAX_NAME: usize = 64 * 1024;

/// Most tables and columns a `Resume` asks for again (a database remembers at most 256
/// left-out ones, see `pluresdb-core`'s `missed`).
const MAX_WANTED: usize = 4096;

const HELLO: u8 = 1;
const CHANGES: u8 = 2;
const DONE: u8 = 3;
const ACK: u8 = 4;
const ERROR: u8 = 5;
const PROGRESS: u8 = 6;
const RESUME: u8 = 7;
const KEY_COLUMNS: u8 = 8;
const REFUSED: u8 = 9;

/// One protocol message.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    /// Opens a session: who this is, its `db_version`, and what it already has from each site.
    Hello {
        /// The sender's site id.
        site: SiteId,
        /// The sender's `db_version`.
        db_version: u64,
        /// For each site, the `db_version` up to which the sender has its changes.
        have: VersionVector,
        /// The sender resumes sets cut short (version 2): after the peer's hello it sends a
        /// [`Resume`](Message::Resume), and it takes [`Progress`](Message::Progress). False
        /// for a version 1 hello (of an older build, or of a change file).
        resumes: bool,
        /// The sender (one that resumes) takes a `Resume` asking for tables and columns
        /// again (version 3). False for builds of version 2 and older.
        refetches: bool,
        /// The sender (one that resumes) takes [`KeyColumns`](Message::KeyColumns) (version
        /// 4). False for builds of version 3 and older.
        key_columns: bool,
        /// The sender (one that resumes) takes [`Refused`](Message::Refused) (version 5).
        /// False for builds of version 4 and older.
        refusals: bool,
    },
    /// The sender's synced tables keyed by more than one column, each with its key columns in
    /// the order its changes carry key values. Sent before any `Changes`, and again (all of
    /// them) before changes that follow a change of them; the receiver puts the values of a
    /// table keyed by the same columns in another order in its own.
    KeyColumns(Vec<(String, Vec<String>)>),
    /// A batch of changes.
    Changes(Vec<ChangeRecord>),
    /// The sender did not take some of the peer's changes: the tables it refused, with why,
    /// and the tables and columns it does not sync, so it left their changes out. Sent after
    /// the merge that met them (before the `Ack` of their set), naming each table once a
    /// session.
    Refused(PeerRefusals),
    /// Every change of the sender up to `db_version` has been sent.
    Done {
        /// The sender's `db_version` the batches were read at.
        db_version: u64,
    },
    /// The receiver applied everything the peer sent up to the peer's `db_version`.
    Ack {
        /// The peer's `db_version` now applied.
        db_version: u64,
    },
    /// The sender stops because of this problem.
    Error(String),
    /// Every change of the sender's current set before this message was sent: a session
    /// cut short after the receiver merged them can go on from this point (the receiver
    /// gives it back in the `Resume` of its next session).
    Progress(ResumePoint),
    /// Sent once after the peer's hello, by both sides when both resume; the peer starts
    /// sending when this arrives.
    Resume {
        /// Where the peer's last set of changes to the sender was cut short (the point of its
        /// last `Progress` merged), for the peer to go on from.
        point: Option<ResumePoint>,
        /// For a peer that [`refetches`](Message::Hello::refetches): tables and columns whose
        /// changes the sender left out before they arrived there, and the peer's cursor from
        /// before (see `Database::refetching`). The peer's first set then holds its changes
        /// after that cursor (not after the hello's, which is 0) and all of its changes of
        /// those. Sent in version 3.
        refetch: Option<Refetching>,
    },
}

/// Cuts `text` (at a character) to the longest a peer reads.
fn cut_text(text: &mut String) {
    if text.len() > MAX_NAME {
        // (str::floor_char_boundary is newer than the crates' minimum Rust.)
        let end = (0..=MAX_NAME).rev().find(|&i| text.is_char_boundary(i));
        text.truncate(end.unwrap_or(0));
    }
}

fn put_site(out: &mut Vec<u8>, site: &SiteId) {
    out.extend_from_slice(site.as_bytes());
}

fn read_point(r: &mut Reader<'_>) -> Result<ResumePoint> {
    Ok(ResumePoint::from_bytes(
        r.bytes(ResumePoint::MAX_BYTES)?.to_vec(),
    ))
}

/// Tables and columns: a count, then each table with its column (empty: the whole table).
fn put_refetches(out: &mut Vec<u8>, list: &[Refetch]) {
    put_varint(out, list.len() as u64);
    for w in list {
        put_bytes(out, w.table.as_bytes());
        put_bytes(out, w.column.as_deref().unwrap_or("").as_bytes());
    }
}

fn read_refetches(r: &mut Reader<'_>, max: usize) -> Result<Vec<Refetch>> {
    let n = r.length(max)?;
    (0..n)
        .map(|_| {
            let table = r.text(MAX_NAME)?.to_owned();
            let column = r.text(MAX_NAME)?;
            let column = (!column.is_empty()).then(|| column.to_owned());
            Ok(Refetch { table, column })
        })
        .collect()
}

fn read_site(r: &mut Reader<'_>) -> Result<SiteId> {
    let bytes = r.take(16)?;
    Ok(SiteId::from_slice(bytes).expect("16 bytes"))
}

impl Message {
    /// An `Error` message, its text cut (at a character) to the longest a peer reads.
    pub fn error(text: impl Into<String>) -> Message {
        let mut text = text.into();
        cut_text(&mut text);
        Message::Error(text)
    }

    /// A `Refused` message, cut to what a peer reads (as many tables as a peer keeps, each
    /// reason as long as an `Error`).
    pub fn refused(mut said: PeerRefusals) -> Message {
        said.refused.truncate(PeerRefusals::MAX_NAMED);
        said.left_out.truncate(PeerRefusals::MAX_NAMED);
        for r in &mut said.refused {
            cut_text(&mut r.reason);
        }
        Message::Refused(said)
    }

    /// Encodes a `Changes` message from borrowed changes (no copy of the batch).
    pub fn encode_changes(changes: &[ChangeRecord]) -> Vec<u8> {
        let mut out = vec![PROTOCOL_VERSION, CHANGES];
        encode_changes(&mut out, changes);
        out
    }

    /// Encodes `changes` as `Changes` messages of at most `target` bytes each, halving a batch
    /// that encodes larger, and passes each message with its number of changes to `emit`. A
    /// single change that encodes larger than `limit` (what the peer accepts) is an error
    /// naming it, since no peer with that limit could receive it.
    pub fn encode_changes_within(
        changes: &[ChangeRecord],
        target: usize,
        limit: usize,
        emit: &mut impl FnMut(Vec<u8>, usize) -> Result<()>,
    ) -> Result<()> {
        // Cut where the estimated sizes reach the target, so large values cost no re-encoding.
        let mut start = 0;
        let mut size = 0;
        for (i, change) in changes.iter().enumerate() {
            let estimate = estimated_size(change);
            if i > start && size + estimate > target {
                Message::encode_within(&changes[start..i], target, limit, emit)?;
                (start, size) = (i, 0);
            }
            size += estimate;
        }
        if start < changes.len() {
            Message::encode_within(&changes[start..], target, limit, emit)?;
        }
        Ok(())
    }

    /// [`encode_changes_within`](Self::encode_changes_within) for a part whose estimate fits:
    /// halved if its encoding does not.
    fn encode_within(
        changes: &[ChangeRecord],
        target: usize,
        limit: usize,
        emit: &mut impl FnMut(Vec<u8>, usize) -> Result<()>,
    ) -> Result<()> {
        let bytes = Message::encode_changes(changes);
        if bytes.len() <= target {
            return emit(bytes, changes.len());
        }
        if let [change] = changes {
            if bytes.len() > limit {
                // Shortened: the error itself goes to the peer, whose texts are bounded.
                let key: Vec<String> = change.key.iter().map(|v| v.to_json().to_string()).collect();
                let key: String = format!("[{}]", key.join(",")).chars().take(200).collect();
                return Err(Error::invalid(format!(
                    "a change to {:?} (key {key}, field {:?}) takes {} bytes, over the \
                     {limit}-byte message limit of the peer: {RAISE_LIMIT}, or keep values \
                     this large out of synced tables",
                    change.collection,
                    change.field,
                    bytes.len()
                )));
            }
            return emit(bytes, 1);
        }
        let (first, rest) = changes.split_at(changes.len() / 2);
        Message::encode_within(first, target, limit, emit)?;
        Message::encode_within(rest, target, limit, emit)
    }

    /// Encodes the message.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![PROTOCOL_VERSION];
        match self {
            Message::Hello {
                site,
                db_version,
                have,
                resumes,
                refetches,
                key_columns,
                refusals,
            } => {
                out.push(HELLO);
                put_site(&mut out, site);
                put_varint(&mut out, *db_version);
                let bits = if *refetches { TAKES_REFETCH } else { 0 }
                    | if *key_columns { TAKES_KEY_COLUMNS } else { 0 }
                    | if *refusals { TAKES_REFUSALS } else { 0 };
                let features = (*resumes && bits != 0).then_some((&FEATURES_SITE, &bits));
                put_varint(
                    &mut out,
                    (have.len() + usize::from(features.is_some())) as u64,
                );
                for (s, v) in have.iter().chain(features) {
                    put_site(&mut out, s);
                    put_varint(&mut out, *v);
                }
                if *resumes {
                    out[0] = RESUMING_VERSION;
                }
            }
            Message::Progress(point) => {
                out[0] = RESUMING_VERSION;
                out.push(PROGRESS);
                put_bytes(&mut out, point.as_bytes());
            }
            Message::Resume { point, refetch } => {
                out[0] = RESUMING_VERSION;
                out.push(RESUME);
                match point {
                    Some(point) => {
                        out.push(1);
                        put_bytes(&mut out, point.as_bytes());
                    }
                    None => out.push(0),
                }
                if let Some(Refetching { cursor, wanted }) = refetch {
                    out[0] = REFETCHING_VERSION;
                    put_varint(&mut out, *cursor);
                    put_refetches(&mut out, wanted);
                }
            }
            Message::Refused(PeerRefusals { refused, left_out }) => {
                out[0] = REFUSALS_VERSION;
                out.push(REFUSED);
                put_varint(&mut out, refused.len() as u64);
                for r in refused {
                    put_bytes(&mut out, r.table.as_bytes());
                    put_bytes(&mut out, r.reason.as_bytes());
                }
                put_refetches(&mut out, left_out);
            }
            Message::KeyColumns(tables) => {
                out[0] = KEY_COLUMNS_VERSION;
                out.push(KEY_COLUMNS);
                put_varint(&mut out, tables.len() as u64);
                for (table, columns) in tables {
                    put_bytes(&mut out, table.as_bytes());
                    put_varint(&mut out, columns.len() as u64);
                    for c in columns {
                        put_bytes(&mut out, c.as_bytes());
                    }
                }
            }
            Message::Changes(changes) => return Message::encode_changes(changes),
            Message::Done { db_version } => {
                out.push(DONE);
                put_varint(&mut out, *db_version);
            }
            Message::Ack { db_version } => {
                out.push(ACK);
                put_varint(&mut out, *db_version);
            }
            Message::Error(text) => {
                out.push(ERROR);
                put_bytes(&mut out, text.as_bytes());
            }
        }
        out
    }

    /// Decodes a message of at most `max` bytes.
    pub fn decode(bytes: &[u8], max: usize) -> Result<Message> {
        if bytes.len() > max {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "sync message of {} bytes is over the limit of {max} bytes: {RAISE_LIMIT}",
                    bytes.len()
                ),
            ));
        }
        let mut r = Reader::new(bytes, "sync message");
        let version = r.byte()?;
        if !(PROTOCOL_VERSION..=REFUSALS_VERSION).contains(&version) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "the peer speaks sync protocol version {version}, this build speaks versions \
                     {PROTOCOL_VERSION} to {REFUSALS_VERSION}; run the same PluresDB version on \
                     both"
                ),
            ));
        }
        let kind = r.byte()?;
        if version == RESUMING_VERSION && ![HELLO, PROGRESS, RESUME].contains(&kind) {
            return Err(r.error(&format!("message type {kind} is not one of version 2")));
        }
        if version == REFETCHING_VERSION && kind != RESUME {
            return Err(r.error(&format!("message type {kind} is not one of version 3")));
        }
        if version == KEY_COLUMNS_VERSION && kind != KEY_COLUMNS {
            return Err(r.error(&format!("message type {kind} is not one of version 4")));
        }
        if version == REFUSALS_VERSION && kind != REFUSED {
            return Err(r.error(&format!("message type {kind} is not one of version 5")));
        }
        let message = match kind {
            HELLO => {
                let site = read_site(&mut r)?;
                let db_version = r.varint()?;
                let n = r.length(1 << 20)?;
                let mut have = VersionVector::new();
                let resumes = version == RESUMING_VERSION;
                let mut features = 0;
                for _ in 0..n {
                    let s = read_site(&mut r)?;
                    let v = r.varint()?;
                    match s == FEATURES_SITE && resumes {
                        true => features = v,
                        false => have.observe(s, v),
                    }
                }
                Message::Hello {
                    site,
                    db_version,
                    have,
                    resumes,
                    refetches: features & TAKES_REFETCH != 0,
                    key_columns: features & TAKES_KEY_COLUMNS != 0,
                    refusals: features & TAKES_REFUSALS != 0,
                }
            }
            KEY_COLUMNS if version == KEY_COLUMNS_VERSION => {
                let n = r.length(MAX_KEYED_TABLES)?;
                let mut tables = Vec::with_capacity(n.min(64));
                for _ in 0..n {
                    let table = r.text(MAX_NAME)?.to_owned();
                    let m = r.length(MAX_KEY_COLUMNS)?;
                    let columns = (0..m)
                        .map(|_| r.text(MAX_NAME).map(str::to_owned))
                        .collect::<Result<Vec<_>>>()?;
                    tables.push((table, columns));
                }
                Message::KeyColumns(tables)
            }
            PROGRESS if version == RESUMING_VERSION => Message::Progress(read_point(&mut r)?),
            RESUME if version != PROTOCOL_VERSION => {
                let point = match r.byte()? {
                    0 => None,
                    1 => Some(read_point(&mut r)?),
                    other => return Err(r.error(&format!("bad resume flag {other}"))),
                };
                let mut refetch = None;
                if version == REFETCHING_VERSION {
                    let cursor = r.varint()?;
                    let wanted = read_refetches(&mut r, MAX_WANTED)?;
                    if wanted.is_empty() {
                        return Err(r.error("a version 3 Resume asks for no table"));
                    }
                    refetch = Some(Refetching { cursor, wanted });
                }
                Message::Resume { point, refetch }
            }
            REFUSED if version == REFUSALS_VERSION => {
                let n = r.length(PeerRefusals::MAX_NAMED)?;
                let refused = (0..n)
                    .map(|_| {
                        Ok(Refused {
                            table: r.text(MAX_NAME)?.to_owned(),
                            reason: r.text(MAX_NAME)?.to_owned(),
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let left_out = read_refetches(&mut r, PeerRefusals::MAX_NAMED)?;
                Message::Refused(PeerRefusals { refused, left_out })
            }
            CHANGES => Message::Changes(decode_changes(&mut r, max)?),
            DONE => Message::Done {
                db_version: r.varint()?,
            },
            ACK => Message::Ack {
                db_version: r.varint()?,
            },
            ERROR => Message::Error(r.text(MAX_NAME)?.to_owned()),
            other => return Err(r.error(&format!("unknown message type {other}"))),
        };
        if !r.is_empty() {
            return Err(r.error(&format!(
                "{} unexpected bytes after the message",
                r.remaining()
            )));
        }
        Ok(message)
    }
}

/// Changes share their collection names and site ids through small tables at the start.
/// About how many bytes `change` takes encoded (its texts and blobs, plus a bound for the rest).
fn estimated_size(change: &ChangeRecord) -> usize {
    let value = |v: &Value| match v {
        Value::Text(t) => t.len() + 5,
        Value::Blob(b) => b.len() + 5,
        _ => 10,
    };
    let key: usize = change.key.iter().map(value).sum();
    48 + change.field.len() + key + change.value.as_ref().map_or(0, value)
}

fn encode_changes(out: &mut Vec<u8>, changes: &[ChangeRecord]) {
    let mut names: Vec<&str> = Vec::new();
    let mut sites: Vec<SiteId> = Vec::new();
    fn index<T: PartialEq>(list: &mut Vec<T>, item: T) -> usize {
        match list.iter().position(|x| *x == item) {
            Some(i) => i,
            None => {
                list.push(item);
                list.len() - 1
            }
        }
    }
    let refs: Vec<(usize, usize)> = changes
        .iter()
        .map(|c| {
            (
                index(&mut names, &*c.collection),
                index(&mut sites, c.version.site),
            )
        })
        .collect();
    put_varint(out, names.len() as u64);
    for n in &names {
        put_bytes(out, n.as_bytes());
    }
    put_varint(out, sites.len() as u64);
    for s in &sites {
        put_site(out, s);
    }
    put_varint(out, changes.len() as u64);
    for (c, (name, site)) in changes.iter().zip(refs) {
        put_varint(out, name as u64);
        put_varint(out, c.key.len() as u64);
        for k in c.key.iter() {
            put_value(out, k.as_value_ref());
        }
        put_bytes(out, c.field.as_bytes());
        match &c.value {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                put_value(out, v.as_value_ref());
            }
        }
        put_varint(out, c.version.hlc.as_u64());
        put_varint(out, site as u64);
        put_varint(out, c.cl);
    }
}

fn decode_changes(r: &mut Reader<'_>, max: usize) -> Result<Vec<ChangeRecord>> {
    let n_names = r.length(1 << 16)?;
    let names = (0..n_names)
        .map(|_| r.text(MAX_NAME).map(Arc::from))
        .collect::<Result<Vec<Arc<str>>>>()?;
    let n_sites = r.length(1 << 16)?;
    let sites = (0..n_sites)
        .map(|_| read_site(r))
        .collect::<Result<Vec<_>>>()?;
    // Each change takes at least 6 bytes: a count beyond that is malformed, not a reason to
    // reserve memory.
    let n = r.length(r.remaining() / 6 + 1)?;
    let mut out = Vec::with_capacity(n);
    // The changes share one copy of each field name, and consecutive changes with the same
    // key bytes (a row's fields) one copy of the key.
    let mut fields: HashMap<&str, Arc<str>> = HashMap::new();
    let mut last_key: (&[u8], Arc<[Value]>) = (&[], Arc::from([]));
    let mut parts = Vec::new();
    for _ in 0..n {
        let name = r.length(names.len().saturating_sub(1))?;
        let start = r.position();
        let key_len = r.length(64)?;
        parts.clear();
        for _ in 0..key_len {
            parts.push(r.value_ref(max)?);
        }
        let key_bytes = r.read_since(start);
        if key_bytes != last_key.0 {
            last_key = (
                key_bytes,
                parts.iter().map(|p| p.to_owned_value()).collect(),
            );
        }
        let field = r.text(MAX_NAME)?;
        let field = match fields.get(field) {
            Some(f) => f.clone(),
            None => fields.entry(field).or_insert_with(|| field.into()).clone(),
        };
        let value = match r.byte()? {
            0 => None,
            1 => Some(r.value(max)?),
            other => return Err(r.error(&format!("bad value flag {other}"))),
        };
        let hlc = Hlc::from_u64(r.varint()?);
        let site_index = r.length(sites.len().saturating_sub(1))?;
        let cl = r.varint()?;
        let (Some(collection), Some(site)) = (names.get(name), sites.get(site_index)) else {
            return Err(r.error("a change refers to a missing table entry"));
        };
        out.push(ChangeRecord {
            collection: collection.clone(),
            key: last_key.1.clone(),
            field,
            value,
            version: Version::new(hlc, *site),
            cl,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error of decoding `bytes` as a message of protocol `version`.
    fn decoded_as(mut bytes: Vec<u8>, version: u8) -> String {
        bytes[0] = version;
        Message::decode(&bytes, DEFAULT_MAX_MESSAGE)
            .unwrap_err()
            .to_string()
    }
    use pluresdb_core::Value;

    fn sample() -> Vec<ChangeRecord> {
        let site = SiteId([7; 16]);
        vec![
            ChangeRecord {
                collection: "todos".into(),
                key: vec![Value::Text("t1".into())].into(),
                field: "title".into(),
                value: Some(Value::Text("hello".into())),
                version: Version::new(Hlc::new(1_700_000_000_000, 3), site),
                cl: 1,
            },
            ChangeRecord {
                collection: "todos".into(),
                key: vec![Value::Text("t2".into())].into(),
                field: "".into(),
                value: None,
                version: Version::new(Hlc::new(1_700_000_000_001, 0), SiteId([9; 16])),
                cl: 2,
            },
        ]
    }

    fn hello(have: &VersionVector, resumes: bool, refetches: bool) -> Message {
        Message::Hello {
            site: SiteId([3; 16]),
            db_version: 9,
            have: have.clone(),
            resumes,
            refetches,
            key_columns: false,
            refusals: false,
        }
    }

    /// The table `notes` and the column `todos.prio`.
    fn notes_and_prio() -> Vec<Refetch> {
        vec![
            Refetch {
                table: "notes".into(),
                column: None,
            },
            Refetch {
                table: "todos".into(),
                column: Some("prio".into()),
            },
        ]
    }

    #[test]
    fn refusals_are_offered_in_a_version_2_hello_and_told_in_version_5() {
        let offer = |refusals| {
            let mut hello = hello(&VersionVector::new(), true, true);
            if let Message::Hello { refusals: r, .. } = &mut hello {
                *r = refusals;
            }
            hello
        };
        let (with, without) = (offer(true).encode(), offer(false).encode());
        assert_eq!(with[0], RESUMING_VERSION);
        assert_eq!(
            Message::decode(&with, DEFAULT_MAX_MESSAGE).unwrap(),
            offer(true)
        );
        assert_eq!(
            Message::decode(&without, DEFAULT_MAX_MESSAGE).unwrap(),
            offer(false)
        );
        // A build of version 4 reads it as the offers it knows (it tests only its bits).
        assert_eq!(with.len(), without.len());
        assert_eq!(with[with.len() - 1] & 3, without[without.len() - 1] & 3);
        let said = PeerRefusals {
            refused: vec![Refused {
                table: "pairs".into(),
                reason: "its key differs \u{e9}".into(),
            }],
            left_out: notes_and_prio(),
        };
        let bytes = Message::refused(said.clone()).encode();
        assert_eq!(bytes[..2], [REFUSALS_VERSION, REFUSED]);
        assert_eq!(
            Message::decode(&bytes, DEFAULT_MAX_MESSAGE).unwrap(),
            Message::Refused(said)
        );
        // Version 5 has nothing else, and a version 4 build refuses it.
        let err = decoded_as(bytes, KEY_COLUMNS_VERSION);
        assert!(err.contains("not one of version 4"), "{err}");
        let err = decoded_as(Message::Done { db_version: 1 }.encode(), REFUSALS_VERSION);
        assert!(err.contains("not one of version 5"), "{err}");
        // What is told stays within what a peer reads.
        let long = PeerRefusals {
            refused: (0..PeerRefusals::MAX_NAMED + 5)
                .map(|i| Refused {
                    table: format!("t{i}"),
                    reason: "\u{e9}".repeat(MAX_NAME),
                })
                .collect(),
            left_out: Vec::new(),
        };
        let Message::Refused(cut) =
            Message::decode(&Message::refused(long).encode(), usize::MAX).unwrap()
        else {
            panic!("not Refused");
        };
        assert_eq!(cut.refused.len(), PeerRefusals::MAX_NAMED);
        assert!(cut.refused[0].reason.len() <= MAX_NAME);
    }

    #[test]
    fn key_columns_are_offered_in_a_version_2_hello_and_sent_in_version_4() {
        let have = VersionVector::new();
        let offering = |refetches, key_columns| {
            let mut offer = hello(&have, true, refetches);
            if let Message::Hello { key_columns: k, .. } = &mut offer {
                *k = key_columns;
            }
            offer
        };
        for (refetches, key_columns) in [(false, true), (true, true), (true, false)] {
            let m = offering(refetches, key_columns);
            let bytes = m.encode();
            assert_eq!(bytes[0], RESUMING_VERSION);
            assert_eq!(Message::decode(&bytes, DEFAULT_MAX_MESSAGE).unwrap(), m);
        }
        // A build of version 3 reads the offer of both as the refetch offer alone (it tests
        // only its bit).
        let both = offering(true, true).encode();
        let refetch_only = offering(true, false).encode();
        assert_eq!(both.len(), refetch_only.len());
        assert_eq!(
            both[both.len() - 1] & TAKES_REFETCH as u8,
            TAKES_REFETCH as u8
        );
        let keys = Message::KeyColumns(vec![
            ("pairs".into(), vec!["b".into(), "a".into()]),
            ("t\u{e9}".into(), vec![]),
        ]);
        let bytes = keys.encode();
        assert_eq!(bytes[..2], [KEY_COLUMNS_VERSION, KEY_COLUMNS]);
        assert_eq!(Message::decode(&bytes, DEFAULT_MAX_MESSAGE).unwrap(), keys);
        // Version 4 has nothing else, and a version 3 build refuses it.
        let err = decoded_as(bytes, REFETCHING_VERSION);
        assert!(err.contains("not one of version 3"), "{err}");
        let err = decoded_as(
            Message::Done { db_version: 1 }.encode(),
            KEY_COLUMNS_VERSION,
        );
        assert!(err.contains("not one of version 4"), "{err}");
    }

    #[test]
    fn every_message_round_trips() {
        let mut have = VersionVector::new();
        have.observe(SiteId([1; 16]), 42);
        let point = ResumePoint::from_bytes(vec![1, 2, 3]);
        let hello = |resumes, refetches| hello(&have, resumes, refetches);
        for m in [
            hello(false, false),
            hello(true, false),
            hello(true, true),
            Message::Progress(point.clone()),
            Message::Resume {
                point: Some(point.clone()),
                refetch: None,
            },
            Message::Resume {
                point: None,
                refetch: None,
            },
            Message::Resume {
                point: Some(point),
                refetch: Some(Refetching {
                    cursor: 12,
                    wanted: notes_and_prio(),
                }),
            },
            Message::Changes(sample()),
            Message::Changes(Vec::new()),
            Message::Done { db_version: 77 },
            Message::Ack { db_version: 78 },
            Message::Error("boom".into()),
        ] {
            assert_eq!(
                Message::decode(&m.encode(), DEFAULT_MAX_MESSAGE).unwrap(),
                m
            );
        }
    }

    #[test]
    fn only_what_resuming_adds_is_version_2() {
        let hello = |resumes| hello(&VersionVector::new(), resumes, false);
        // What change files and version 1 builds send stays readable by those builds.
        assert_eq!(hello(false).encode()[0], PROTOCOL_VERSION);
        assert_eq!(Message::Changes(sample()).encode()[0], PROTOCOL_VERSION);
        assert_eq!(hello(true).encode()[0], RESUMING_VERSION);
        let resume = Message::Resume {
            point: None,
            refetch: None,
        };
        for added in [Message::Progress(ResumePoint::from_bytes(vec![7])), resume] {
            let bytes = added.encode();
            assert_eq!(bytes[0], RESUMING_VERSION);
            // Version 1 had neither.
            let err = decoded_as(bytes, PROTOCOL_VERSION);
            assert!(err.contains("unknown message type"), "{err}");
        }
        // And version 2 has no other messages than version 1.
        let err = decoded_as(Message::Done { db_version: 1 }.encode(), RESUMING_VERSION);
        assert!(err.contains("not one of version 2"), "{err}");
    }

    #[test]
    fn asking_again_is_offered_in_a_version_2_hello_and_asked_in_version_3() {
        let mut have = VersionVector::new();
        have.observe(SiteId([1; 16]), 42);
        let hello = |resumes, refetches| hello(&have, resumes, refetches);
        // The offer is one more vector entry of a version 2 hello, which a version 2 build
        // reads as a site it never heard of; this build reads it as the offer.
        let offering = hello(true, true).encode();
        let plain = hello(true, false).encode();
        assert_eq!(offering[0], RESUMING_VERSION);
        assert_eq!(offering.len(), plain.len() + 16 + 1);
        let Message::Hello {
            have: read,
            refetches,
            ..
        } = Message::decode(&offering, DEFAULT_MAX_MESSAGE).unwrap()
        else {
            panic!("not a hello");
        };
        assert_eq!((read, refetches), (have.clone(), true));
        // A version 1 hello (a change file's) offers nothing.
        assert_eq!(hello(false, true).encode(), hello(false, false).encode());
        // Asking is version 3, which a version 2 build refuses rather than ignore what it
        // asks for (it is sent only to a peer that offered); version 3 has nothing else, and
        // its Resume asks for something.
        let notes = Refetch {
            table: "notes".into(),
            column: None,
        };
        let asking = |wanted| Message::Resume {
            point: None,
            refetch: Some(Refetching { cursor: 5, wanted }),
        };
        let bytes = asking(vec![notes]).encode();
        assert_eq!(bytes[0], REFETCHING_VERSION);
        let err = decoded_as(bytes, RESUMING_VERSION);
        assert!(err.contains("unexpected bytes"), "{err}");
        let err = decoded_as(Message::Done { db_version: 1 }.encode(), REFETCHING_VERSION);
        assert!(err.contains("not one of version 3"), "{err}");
        let empty = asking(Vec::new()).encode();
        let err = Message::decode(&empty, DEFAULT_MAX_MESSAGE).unwrap_err();
        assert!(err.to_string().contains("asks for no table"), "{err}");
    }

    #[test]
    fn decoded_changes_share_their_names_and_a_row_shares_its_key() {
        let site = SiteId([7; 16]);
        let change = |key: &str, field: &str| ChangeRecord {
            collection: "todos".into(),
            key: vec![Value::Text(key.into())].into(),
            field: field.into(),
            value: Some(Value::Integer(1)),
            version: Version::new(Hlc::new(1_700_000_000_000, 0), site),
            cl: 1,
        };
        // Row a's fields, row b's, then row a again (not next to its first fields).
        let sent = vec![
            change("a", "title"),
            change("a", "done"),
            change("b", "title"),
            change("a", "done"),
        ];
        let Message::Changes(got) =
            Message::decode(&Message::encode_changes(&sent), DEFAULT_MAX_MESSAGE).unwrap()
        else {
            panic!("not a Changes message");
        };
        assert_eq!(got, sent);
        assert!(
            Arc::ptr_eq(&got[0].key, &got[1].key),
            "a row's changes share its key"
        );
        assert!(!Arc::ptr_eq(&got[1].key, &got[2].key));
        assert!(!Arc::ptr_eq(&got[2].key, &got[3].key));
        assert!(
            Arc::ptr_eq(&got[0].field, &got[2].field),
            "one copy of each field name"
        );
        assert!(Arc::ptr_eq(&got[1].field, &got[3].field));
        assert!(
            got.iter()
                .all(|c| Arc::ptr_eq(&c.collection, &got[0].collection))
        );
    }

    #[test]
    fn an_error_of_any_length_is_one_the_peer_reads() {
        let long = "\u{e9}".repeat(40_000);
        let Message::Error(text) =
            Message::decode(&Message::error(long.clone()).encode(), DEFAULT_MAX_MESSAGE).unwrap()
        else {
            panic!("not an Error message");
        };
        assert!(
            long.starts_with(&text) && text.len() > MAX_NAME - 2,
            "{}",
            text.len()
        );
        assert_eq!(Message::error("short"), Message::Error("short".into()));
    }

    #[test]
    fn bad_messages_are_rejected_with_a_reason() {
        let good = Message::Changes(sample()).encode();
        let mut wrong_version = good.clone();
        wrong_version[0] = 9;
        let err = Message::decode(&wrong_version, DEFAULT_MAX_MESSAGE).unwrap_err();
        assert!(err.message().contains("protocol version 9"), "{err}");
        let err = Message::decode(&good, 10).unwrap_err();
        assert!(
            err.message().contains("over the limit of 10 bytes"),
            "{err}"
        );
        let err = Message::decode(&[PROTOCOL_VERSION, 99], DEFAULT_MAX_MESSAGE).unwrap_err();
        assert!(err.message().contains("unknown message type 99"), "{err}");
        // Every truncation of a valid message is an error, never a panic.
        for cut in 0..good.len() {
            assert!(
                Message::decode(&good[..cut], DEFAULT_MAX_MESSAGE).is_err(),
                "cut at {cut}"
            );
        }
        let mut extra = Message::Done { db_version: 1 }.encode();
        extra.push(0);
        assert!(
            Message::decode(&extra, DEFAULT_MAX_MESSAGE)
                .unwrap_err()
                .message()
                .contains("unexpected bytes")
        );
        // A huge claimed count does not allocate.
        let mut lie = vec![PROTOCOL_VERSION, CHANGES, 0, 0];
        put_varint(&mut lie, u64::MAX >> 1);
        assert!(Message::decode(&lie, DEFAULT_MAX_MESSAGE).is_err());
    }
}
