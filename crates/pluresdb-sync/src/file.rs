//! Change files: sync between devices with no network, by carrying a file.
//!
//! A file starts with [`MAGIC`], its format number (4 bytes, little-endian) and the
//! producer's `db_version` its changes start after (8 bytes); format 3, written for a named
//! reader, adds that reader's site id (16 bytes), which leaves out what the reader has. Then
//! come frames: a 4-byte little-endian length, the CRC-32 of the message (4 bytes), then a
//! protocol message: a `Hello` naming the producer, `Changes` batches, and a final `Done`.
//! The start lets the
//! receiver tell whether it holds everything of the producer's before the file (else it
//! applies the file but does not move its cursor past the changes it never got); the
//! checksums catch a damaged file before anything of a damaged frame is applied.

use std::io::{Read, Write};

use pluresdb_core::{
    ApplyReport, ChangeRecord, Database, Error, ErrorKind, Result, SiteId, SyncProgress,
    VersionVector,
};

use crate::applier::{GROUP_CHANGES, merge, split_off_last_row};
use crate::codec::{Message, RAISE_LIMIT, TARGET_MESSAGE};
use crate::key_map::{KeyMap, KeysTold};

/// What writing a change file did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WrittenFile {
    /// Changes written.
    pub changes: u64,
    /// The producer's `db_version` the changes go up to.
    pub db_version: u64,
}

/// What applying a change file did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppliedFile {
    /// The producer's site id.
    pub from: Option<SiteId>,
    /// The producer's `db_version` now applied here.
    pub db_version: u64,
    /// Totals over the file's batches.
    pub report: ApplyReport,
    /// `Some((have, start))` when the file's changes start after the producer's version
    /// `start` but this database had its changes only up to `have`: the file was made for
    /// another database, or an earlier file was not applied. Its changes were applied, but
    /// this database still asks for the producer's changes after `have`.
    pub gap: Option<(u64, u64)>,
}

/// What a change file starts with.
pub const MAGIC: &[u8; 16] = b"PluresDB changes";

/// The change file format this version writes for any reader.
const FORMAT: u32 = 2;

/// The format written for one named reader (its site id follows the header); read too.
const FORMAT_FOR_READER: u32 = 3;

fn write_frame(out: &mut dyn Write, message: &Message) -> Result<()> {
    write_bytes(out, &message.encode())
}

fn write_bytes(out: &mut dyn Write, bytes: &[u8]) -> Result<()> {
    out.write_all(&(bytes.len() as u32).to_le_bytes())?;
    out.write_all(&crc32fast::hash(bytes).to_le_bytes())?;
    out.write_all(bytes)?;
    Ok(())
}

/// Reads a file's start: the producer's version its changes start after, and the reader it
/// was made for, if any.
fn read_header(input: &mut dyn Read) -> Result<(u64, Option<SiteId>)> {
    let mut head = [0u8; 28];
    let got = read_up_to(input, &mut head)?;
    if got == 0 {
        return Err(Error::invalid(
            "the change file is empty: it was not written (or not completely); make it again \
             with `pluresdb changes`",
        ));
    }
    if got < MAGIC.len() || head[..MAGIC.len()] != MAGIC[..] {
        return Err(Error::invalid(
            "this is not a PluresDB change file (it does not start with \"PluresDB changes\"); \
             files made by PluresDB before change file format 2 must be made again",
        ));
    }
    if got < head.len() {
        return Err(Error::invalid(
            "the change file ends inside its header; it is truncated",
        ));
    }
    let format = u32::from_le_bytes(head[16..20].try_into().expect("4 bytes"));
    let start = u64::from_le_bytes(head[20..28].try_into().expect("8 bytes"));
    match format {
        FORMAT => Ok((start, None)),
        FORMAT_FOR_READER => {
            let mut reader = [0u8; 16];
            if read_up_to(input, &mut reader)? < reader.len() {
                return Err(Error::invalid(
                    "the change file ends inside its header; it is truncated",
                ));
            }
            Ok((start, Some(SiteId(reader))))
        }
        _ => Err(Error::invalid(format!(
            "this change file has format {format}, and this PluresDB reads formats {FORMAT} \
             and {FORMAT_FOR_READER}: update PluresDB, or make the file with the same version"
        ))),
    }
}

/// Reads until `buf` is full or the input ends; returns how many bytes were read.
fn read_up_to(input: &mut dyn Read, buf: &mut [u8]) -> Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

/// Reads frame number `n` (from 1) of at most `max_message` bytes, or `None` at the end of
/// the file.
fn read_frame(input: &mut dyn Read, n: usize, max_message: usize) -> Result<Option<Message>> {
    let mut head = [0u8; 8];
    match input.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
    if len > max_message {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "frame {n} of the change file claims {len} bytes, over the limit of \
                 {max_message} bytes: the file was made with a larger limit ({RAISE_LIMIT}), or \
                 it is damaged"
            ),
        ));
    }
    let mut bytes = vec![0; len];
    input.read_exact(&mut bytes).map_err(|_| {
        Error::invalid("the change file ends in the middle of a frame; it is truncated")
    })?;
    if crc32fast::hash(&bytes).to_le_bytes() != head[4..] {
        return Err(Error::invalid(format!(
            "frame {n} of the change file does not match its checksum: the file is damaged \
             (the rows before it were applied); make it again"
        )));
    }
    Message::decode(&bytes, max_message)
        .map(Some)
        .map_err(|e| e.context(format!("frame {n} of the change file")))
}

/// Whether `input` has nothing more to read: a file's `Done` is its last frame, and bytes after
/// it (another file appended, say) would otherwise be left out without a word.
fn at_end(input: &mut dyn Read) -> Result<bool> {
    let mut byte = [0u8];
    loop {
        match input.read(&mut byte) {
            Ok(n) => return Ok(n == 0),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Fails when the holder of `have` (`peer`, or the unknown reader of a change file) has more
/// of this database's changes than it made, or than it ever told that peer it had sent: this
/// database is then a copy, or a restored backup, of the one that made them, sharing its site
/// id, and the changes it made under versions the peer already has would never be sent (nor
/// would the peer send back the changes this one lost).
pub(crate) fn check_not_a_copy(
    db: &Database,
    have: &VersionVector,
    peer: Option<SiteId>,
) -> Result<()> {
    let (theirs, ours) = (have.get(&db.site_id()), db.db_version()?);
    let why = if theirs > ours {
        format!("it is at version {ours}")
    } else if let Some(told) = db.announced_bound(peer)?.filter(|&told| theirs > told) {
        format!("it never sent that peer changes past version {told}")
    } else {
        return Ok(());
    };
    // Named, not "this database": the peer shows the message too, where "this" is the peer.
    let (this, renew) = match db.path() {
        Some(path) => {
            let path = path.display().to_string();
            let arg = match path.contains(char::is_whitespace) {
                true => format!("'{path}'"),
                false => path.clone(),
            };
            (
                format!("the database {path}"),
                format!("pluresdb --db {arg} renew-site-id"),
            )
        }
        None => (
            "the in-memory database".to_owned(),
            "pluresdb renew-site-id".to_owned(),
        ),
    };
    let site = db.site_id();
    Err(Error::invalid(format!(
        "{this} (site id {site}) is a copy or a restored backup: its peer has its changes up to \
         version {theirs}, but {why}, so the changes it made since would be taken for ones the \
         peer has. Give {this} a new site id, on the device that holds it (`{renew}` with \
         every other program using it closed, or \
         `Database::renew_site_id`), and sync again: it then syncs as a new device and keeps \
         its changes. Leave the device it syncs with as it is: that one holds the newer changes"
    )))
}

/// Writes every change the holder of `have` lacks (for this database's site: the changes
/// after `have`'s entry for it), in frames of at most `max_message` bytes (the limit
/// [`apply_file`] is given on the other side; [`DEFAULT_MAX_MESSAGE`] unless raised).
///
/// [`DEFAULT_MAX_MESSAGE`]: crate::codec::DEFAULT_MAX_MESSAGE
pub fn write_changes(
    db: &Database,
    have: &VersionVector,
    out: &mut dyn Write,
    max_message: usize,
) -> Result<WrittenFile> {
    write_changes_for(db, have, None, out, max_message)
}

/// [`write_changes`] for the device with site id `reader`, when known: its own changes, and
/// those merged here from it, are left out (it has them).
pub fn write_changes_for(
    db: &Database,
    have: &VersionVector,
    reader: Option<SiteId>,
    out: &mut dyn Write,
    max_message: usize,
) -> Result<WrittenFile> {
    if reader == Some(db.site_id()) {
        return Err(Error::invalid(format!(
            "--for names this database itself ({}): give the site id of the device that will \
             apply the file (`pluresdb sync --status` there prints it)",
            db.site_id()
        )));
    }
    check_not_a_copy(db, have, None)?;
    let since = have.get(&db.site_id());
    out.write_all(MAGIC)?;
    let format = if reader.is_some() {
        FORMAT_FOR_READER
    } else {
        FORMAT
    };
    out.write_all(&format.to_le_bytes())?;
    out.write_all(&since.to_le_bytes())?;
    if let Some(reader) = reader {
        out.write_all(reader.as_bytes())?;
    }
    write_frame(
        out,
        &Message::Hello {
            site: db.site_id(),
            db_version: db.db_version()?,
            have: db.version_vector()?,
            // A version 1 hello: every build reads the file.
            resumes: false,
            refetches: false,
            key_columns: false,
            refusals: false,
        },
    )?;
    // Tables keyed by more than one column: how their key values are ordered (a build that
    // speaks only versions 1 to 3 refuses this frame, and the file).
    if let Some(keys) = KeysTold::default().news(db)? {
        write_frame(out, &keys)?;
    }
    let mut changes = 0u64;
    let db_version = db.for_each_change(since, reader, 2000, |batch| {
        changes += batch.len() as u64;
        // Frames stay within what `apply_file` reads.
        Message::encode_changes_within(
            batch,
            TARGET_MESSAGE.min(max_message),
            max_message,
            &mut |bytes, _| write_bytes(out, &bytes),
        )
    })?;
    // A read-only handle tells no more than was recorded for files, or than the file starts
    // from: a reader records the file's version only when it had everything before the start.
    let db_version = db.announce(None, db_version)?.max(since.min(db_version));
    write_frame(out, &Message::Done { db_version })?;
    out.flush()?;
    Ok(WrittenFile {
        changes,
        db_version,
    })
}

/// Applies a change file whose frames take at most `max_message` bytes. Its batches are applied in transactions of about 20,000 changes
/// (any order, any number of times is safe); the producer's version is recorded only when the
/// file is complete, and only when this database had everything of the producer's before it
/// (see [`AppliedFile::gap`]). A damaged frame stops the apply before anything of it is
/// applied; so do bytes after the last frame (files joined into one), before it is recorded.
pub fn apply_file(
    db: &Database,
    input: &mut dyn Read,
    address: Option<String>,
    max_message: usize,
) -> Result<AppliedFile> {
    // Read before anything merges: a table or column that arrives while the file applies
    // sets the cursors back, and its changes the file brought before are then asked for
    // again, so its cursor is not recorded (see `SyncProgress::resets_seen`).
    let resets_seen = db.cursor_resets()?;
    let (start, reader) = read_header(input)?;
    if let Some(reader) = reader.filter(|r| *r != db.site_id()) {
        return Err(Error::invalid(format!(
            "this change file was made for the device with site id {reader} (`pluresdb changes \
             --for {reader}`) and leaves out what that device has, so this database ({}) would \
             miss changes: apply it on that device, or make one for this database with the \
             command `pluresdb sync --status` prints here",
            db.site_id()
        )));
    }
    let Some(Message::Hello { site, have, .. }) = read_frame(input, 1, max_message)? else {
        return Err(Error::invalid(
            "this is not a PluresDB change file (it does not start with a hello)",
        ));
    };
    if site == db.site_id() {
        return Err(Error::invalid(
            "this change file was written by this database's site id: by this database, or \
             by a copy of its file (a copied or restored database keeps the site id, and the two \
             cannot sync with each other until one of them gets a new one: `pluresdb \
             renew-site-id`)",
        ));
    }
    // The writer says what it has of this database: more than this file ever told it, and
    // this file is a copy or a restored backup (as a session's hello tells).
    check_not_a_copy(db, &have, Some(site))?;
    let has_ours = have.get(&db.site_id());
    let mut out = AppliedFile {
        from: Some(site),
        ..AppliedFile::default()
    };
    // Batches are merged together, several to a transaction (each touched page is written
    // once per transaction), each row whole: the last row read waits for the next frame.
    let mut pending: Vec<ChangeRecord> = Vec::new();
    let mut key_map = KeyMap::default();
    let mut n = 1;
    loop {
        n += 1;
        let frame = read_frame(input, n, max_message);
        let frame = match frame {
            Ok(Some(Message::KeyColumns(tables))) => {
                key_map = KeyMap::new(tables);
                continue;
            }
            other => other,
        };
        if let Ok(Some(Message::Changes(mut batch))) = frame {
            key_map.apply(db, &mut batch)?;
            pending.extend(batch);
            if pending.len() >= GROUP_CHANGES {
                merge_whole_rows(db, site, &mut pending, &mut out.report)?;
            }
            continue;
        }
        // Whatever ends the file (or fails to read) comes after the rows before it merged. The
        // last row is known whole only at the file's end: a damaged or truncated file's is
        // left out (its cursor does not move, so the next file brings that row again).
        if !matches!(frame, Ok(Some(Message::Done { .. }))) {
            split_off_last_row(&mut pending);
        }
        out.report += merge(db, site, &pending)?;
        // A damaged or cut file: how much of it got in.
        let frame = frame.map_err(|e| match out.report.received {
            0 => e,
            n => e.context(format!(
                "the first {n} changes of the change file were merged, then"
            )),
        });
        match frame? {
            Some(Message::Done { db_version }) => {
                if !at_end(input)? {
                    return Err(Error::invalid(format!(
                        "the change file goes on after its last frame (frame {n}): are several \
                         change files joined into one? Apply each on its own (the rows before \
                         were applied, but the file is not recorded as complete)"
                    )));
                }
                out.db_version = db_version;
                let have = db.peer_cursor(site)?;
                out.gap = (start > have).then_some((have, start));
                db.record_sync(
                    site,
                    &SyncProgress {
                        address,
                        received: out.report.received,
                        // (Not past refused changes: the next file brings them again.)
                        cursor: (out.gap.is_none() && out.report.refused.is_empty())
                            .then_some(db_version),
                        // What the writer said it has of this database.
                        acked: Some(has_ours),
                        confirm_through: out.report.noted,
                        resets_seen: Some(resets_seen),
                        ..SyncProgress::default()
                    },
                )?;
                return Ok(out);
            }
            Some(other) => {
                return Err(Error::invalid(format!(
                    "unexpected message in a change file: {other:?}"
                )));
            }
            None => {
                return Err(Error::invalid(
                    "the change file ends before its last frame; it is truncated (the rows read \
                     were applied; apply a complete file to finish)",
                ));
            }
        }
    }
}

/// Merges the whole rows of `pending` (received from `from`) in one transaction and adds what it did to `report`;
/// leaves in `pending` the last row, which may go on in the next frame.
fn merge_whole_rows(
    db: &Database,
    from: SiteId,
    pending: &mut Vec<ChangeRecord>,
    report: &mut ApplyReport,
) -> Result<()> {
    let last = split_off_last_row(pending);
    *report += merge(db, from, pending)?;
    *pending = last;
    Ok(())
}
