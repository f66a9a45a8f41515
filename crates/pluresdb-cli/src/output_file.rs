//! Files the command writes (`export -o`, `changes -o`), which appear under their name only
//! once complete.
//!
//! Written in place, a command killed halfway left a file cut short under the name, in place
//! of the earlier complete one: a CSV export cut inside its last row imports that row cut
//! short without a word. The output is written to NAME`.partial` and renamed to NAME when
//! complete; a command that fails or is killed leaves NAME as it was (a killed one also
//! leaves NAME`.partial`, which the next write to NAME replaces).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use pluresdb_core::{Error, Result};

/// A file being written: under a temporary name until [`commit`](Self::commit).
pub struct OutputFile {
    path: PathBuf,
    /// Where it is written until complete; `None` when written in place (not a regular file)
    /// or once it has its name.
    partial: Option<PathBuf>,
    out: BufWriter<File>,
}

impl OutputFile {
    /// Starts writing `path`. Anything there but a regular file (a symbolic link such as
    /// `/dev/stdout`, a device, a pipe) is written in place, as before: replacing it would
    /// replace the link or device itself. A regular file there keeps its permissions.
    pub fn create(path: &Path) -> Result<OutputFile> {
        let existing = std::fs::symlink_metadata(path).ok();
        let in_place = existing.as_ref().is_some_and(|m| !m.is_file());
        let partial = (!in_place).then(|| {
            let mut name = path.as_os_str().to_owned();
            name.push(".partial");
            PathBuf::from(name)
        });
        let target = partial.as_deref().unwrap_or(path);
        let file = File::create(target)
            .map_err(|e| Error::from(e).context(format!("cannot create {}", target.display())))?;
        if let (Some(m), false) = (&existing, in_place) {
            file.set_permissions(m.permissions())?;
        }
        Ok(OutputFile {
            path: path.to_owned(),
            partial,
            out: BufWriter::new(file),
        })
    }

    /// Finishes the file: writes it out to the disk and gives it its name.
    pub fn commit(mut self) -> Result<()> {
        self.out.flush()?;
        let Some(partial) = &self.partial else {
            return Ok(());
        };
        self.out.get_ref().sync_all()?;
        std::fs::rename(partial, &self.path).map_err(|e| {
            Error::from(e).context(format!(
                "cannot rename {} to {}",
                partial.display(),
                self.path.display()
            ))
        })?;
        self.partial = None;
        Ok(())
    }
}

impl Write for OutputFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.out.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.out.write_all(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

impl Drop for OutputFile {
    /// An output never committed (the command failed) is removed; the name keeps what it had.
    fn drop(&mut self) {
        if let Some(partial) = &self.partial {
            let _ = std::fs::remove_file(partial);
        }
    }
}
