//! [`Database::backup`]: a consistent copy of the database in a new file, which appears under
//! its name only once it is complete.
//!
//! SQLite's online backup writes the copy page by page. Written straight to the destination, a
//! backup killed halfway left a file there (with a journal that rolls it back to nothing): the
//! next program to open it found an empty database, which PluresDB filled with its tables and
//! a new site id, so it checked fine and passed for the backup, and a new backup to the same
//! name was refused because the file existed. The copy is now made under a temporary name next
//! to the destination and linked to its name when complete (a hard link, which fails rather
//! than replace a file that took the name meanwhile; renamed after a check where the file
//! system has no hard links).

use std::path::{Path, PathBuf};

use crate::crash_point::crash_point;
use crate::database::Database;
use crate::error::{Error, ErrorKind, Result};
use rusqlite::backup::StepResult;

/// The name a backup to `dest` is written under until it is complete: `dest` + `.partial`.
pub(crate) fn partial_path(dest: &Path) -> PathBuf {
    let mut name = dest.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// Removes `path` and the journal files SQLite may have left next to it (an earlier backup
/// killed before it was complete).
fn remove_with_journals(path: &Path) -> Result<()> {
    for suffix in ["", "-journal", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        match std::fs::remove_file(&name) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::from(e).context(format!(
                    "cannot remove {} (left by an unfinished backup)",
                    Path::new(&name).display()
                )));
            }
        }
    }
    Ok(())
}

/// Makes a rename in `dir` durable (a no-op where directories cannot be synced).
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = std::fs::File::open(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    }) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

impl Database {
    /// Copies the whole database to `dest` with SQLite's online backup: a consistent
    /// snapshot, even while other threads and other processes write (the copy is read in one
    /// read transaction, which in WAL mode holds up no writer; copied a part at a time, it
    /// would start over after every commit of another process, and never end while an app
    /// keeps writing).
    ///
    /// `dest` must not exist, and no transaction be open on this thread. The copy is written
    /// to `dest` + `.partial` and given the name `dest` once complete, so a backup that is
    /// interrupted (the process killed) leaves nothing at `dest`; the next backup replaces
    /// what it left under the temporary name. A file that appears at `dest` meanwhile is kept
    /// and the backup fails.
    pub fn backup(&self, dest: impl AsRef<Path>) -> Result<()> {
        let dest = dest.as_ref();
        let exists = || {
            Error::invalid(format!(
                "{} already exists; choose a new file for the backup",
                dest.display()
            ))
        };
        if dest.exists() {
            return Err(exists());
        }
        if self.in_transaction() {
            // Its connection would be writing, which a backup waits for: for ever, here.
            return Err(Error::invalid(
                "finish the open transaction before backing up (a backup copies what is \
                 committed)",
            ));
        }
        let partial = partial_path(dest);
        remove_with_journals(&partial)?;
        let copied = self.copy_to(&partial);
        let renamed = copied.and_then(|()| {
            crash_point("backup:before-rename");
            // A file that took the name meanwhile (another backup, another program) is never
            // replaced: a hard link fails when the name exists, where a rename replaces it.
            match std::fs::hard_link(&partial, dest) {
                Ok(()) => {
                    let _ = std::fs::remove_file(&partial);
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(exists()),
                // File systems without hard links (FAT on a USB stick): checked, then renamed.
                Err(_) if dest.exists() => return Err(exists()),
                Err(_) => {}
            }
            std::fs::rename(&partial, dest).map_err(|e| {
                Error::from(e).context(format!(
                    "cannot rename {} to {}",
                    partial.display(),
                    dest.display()
                ))
            })
        });
        if let Err(e) = renamed {
            let _ = remove_with_journals(&partial);
            return Err(e);
        }
        sync_dir(dest.parent().unwrap_or(Path::new("")));
        Ok(())
    }

    /// Runs SQLite's online backup into a new file at `path`, and closes it.
    fn copy_to(&self, path: &Path) -> Result<()> {
        let mut target = rusqlite::Connection::open(path)
            .map_err(|e| Error::from(e).context(format!("cannot create {}", path.display())))?;
        let timeout = self.engine().options().busy_timeout;
        self.engine().with_read_conn(|source| {
            let backup = rusqlite::backup::Backup::new(source, &mut target)?;
            let started = std::time::Instant::now();
            loop {
                match backup.step(-1)? {
                    StepResult::Done => return Ok(()),
                    StepResult::More => {}
                    // Busy or locked: retried until the busy timeout.
                    _ if started.elapsed() < timeout => {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                    _ => {
                        return Err(Error::new(
                            ErrorKind::Busy,
                            "database is locked: the backup could not read it within the busy \
                             timeout; retry, or raise the busy timeout",
                        ));
                    }
                }
            }
        })?;
        crash_point("backup:copying");
        // Closed before the rename: its commit has synced the file and removed its journal.
        target
            .close()
            .map_err(|(_, e)| Error::from(e).context(format!("cannot close {}", path.display())))
    }
}
