//! Change files: sync between devices with no network, by carrying a file.
//!
//! A file is a sequence of frames (a 4-byte little-endian length, then a protocol message):
//! a `Hello` naming the producer, `Changes` batches, and a final `Done`.

use std::io::{Read, Write};

use pluresdb_core::{
    ApplyReport, ChangeRecord, Database, Error, ErrorKind, Result, SiteId, SyncProgress,
    VersionVector,
};

use crate::applier::GROUP_CHANGES;
use crate::codec::{DEFAULT_MAX_MESSAGE, Message, TARGET_MESSAGE};

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
}

fn write_frame(out: &mut dyn Write, message: &Message) -> Result<()> {
    write_bytes(out, &message.encode())
}

fn write_bytes(out: &mut dyn Write, bytes: &[u8]) -> Result<()> {
    out.write_all(&(bytes.len() as u32).to_le_bytes())?;
    out.write_all(bytes)?;
    Ok(())
}

fn read_frame(input: &mut dyn Read) -> Result<Option<Message>> {
    let mut len = [0u8; 4];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > DEFAULT_MAX_MESSAGE {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("change file frame of {len} bytes is over the limit; the file is damaged"),
        ));
    }
    let mut bytes = vec![0; len];
    input.read_exact(&mut bytes).map_err(|_| {
        Error::invalid("the change file ends in the middle of a frame; it is truncated")
    })?;
    Message::decode(&bytes, DEFAULT_MAX_MESSAGE).map(Some)
}

/// Writes every change the holder of `have` lacks (for this database's site: the changes
/// after `have`'s entry for it).
pub fn write_changes(
    db: &Database,
    have: &VersionVector,
    out: &mut dyn Write,
) -> Result<WrittenFile> {
    write_frame(
        out,
        &Message::Hello {
            site: db.site_id(),
            db_version: db.db_version()?,
            have: db.version_vector()?,
        },
    )?;
    let mut changes = 0u64;
    let db_version = db.for_each_change(have.get(&db.site_id()), None, 2000, |batch| {
        changes += batch.len() as u64;
        // Frames stay within what `apply_file` reads.
        Message::encode_changes_within(
            batch,
            TARGET_MESSAGE,
            DEFAULT_MAX_MESSAGE,
            &mut |bytes, _| write_bytes(out, &bytes),
        )
    })?;
    write_frame(out, &Message::Done { db_version })?;
    out.flush()?;
    Ok(WrittenFile {
        changes,
        db_version,
    })
}

/// Applies a change file. Its batches are applied in transactions of about 20,000 changes
/// (any order, any number of times is safe); the producer's version is recorded only when the
/// file is complete.
pub fn apply_file(
    db: &Database,
    input: &mut dyn Read,
    address: Option<String>,
) -> Result<AppliedFile> {
    let Some(Message::Hello { site, .. }) = read_frame(input)? else {
        return Err(Error::invalid(
            "this is not a PluresDB change file (it does not start with a hello)",
        ));
    };
    if site == db.site_id() {
        return Err(Error::invalid(
            "this change file was written by this same database",
        ));
    }
    let mut out = AppliedFile {
        from: Some(site),
        ..AppliedFile::default()
    };
    // Batches are merged together, several to a transaction (each touched page is written
    // once per transaction).
    let mut pending: Vec<ChangeRecord> = Vec::new();
    loop {
        let frame = read_frame(input);
        if let Ok(Some(Message::Changes(batch))) = frame {
            pending.extend(batch);
            if pending.len() >= GROUP_CHANGES {
                merge(db, &mut pending, &mut out.report)?;
            }
            continue;
        }
        // Whatever ends the file (or fails to read) comes after the batches before it merged.
        merge(db, &mut pending, &mut out.report)?;
        match frame? {
            Some(Message::Done { db_version }) => {
                out.db_version = db_version;
                db.record_sync(
                    site,
                    &SyncProgress {
                        address,
                        received: out.report.received,
                        cursor: Some(db_version),
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
                    "the change file ends before its last frame; it is truncated (the batches read \
                     were applied; apply a complete file to finish)",
                ));
            }
        }
    }
}

/// Merges `pending` (if any) in one transaction, adds what it did to `report`, and empties it.
fn merge(db: &Database, pending: &mut Vec<ChangeRecord>, report: &mut ApplyReport) -> Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    *report += db.apply_changes(pending)?;
    pending.clear();
    Ok(())
}
