//! A larger page cache for the length of one bulk write.
//!
//! A transaction that touches more pages than the cache holds spills dirty pages to the WAL
//! and reads them back on the next B-tree descent; loading a million edges that way spends
//! most of its time copying pages through the kernel. Bulk writes raise the writer's cache
//! to fit the rows they write and put it back afterwards (SQLite allocates cache pages only
//! as they are used and frees the excess when the limit drops).

use crate::database::Database;
use crate::error::Result;

/// Bytes of cache per written row (rows, index entries and sync metadata of one edge take
/// about 250 bytes of pages).
const BYTES_PER_ROW: u64 = 512;
/// The most a bulk write raises the cache to.
const MAX_KIB: i64 = 1024 * 1024;
/// Writes smaller than this keep the configured cache.
const MIN_ROWS: usize = 20_000;

/// Restores the writer's cache size when dropped.
pub(crate) struct BulkCache<'a> {
    db: &'a Database,
    restore_kib: Option<i64>,
}

impl<'a> BulkCache<'a> {
    /// Raises the writer's cache for a write of about `rows` rows (if it is larger than
    /// the configured cache would hold).
    pub(crate) fn raise(db: &'a Database, rows: usize) -> Result<BulkCache<'a>> {
        let mut guard = BulkCache {
            db,
            restore_kib: None,
        };
        if rows < MIN_ROWS {
            return Ok(guard);
        }
        let want = ((rows as u64 * BYTES_PER_ROW) / 1024).min(MAX_KIB as u64) as i64;
        db.with_writer_conn(|c| {
            let current: i64 = c.query_row("PRAGMA cache_size", [], |r| r.get(0))?;
            // Negative values are KiB, positive ones pages.
            let current_kib = if current < 0 {
                -current
            } else {
                let page: i64 = c.query_row("PRAGMA page_size", [], |r| r.get(0))?;
                current * page / 1024
            };
            if want > current_kib {
                c.pragma_update(None, "cache_size", -want)?;
                guard.restore_kib = Some(current);
            }
            Ok(())
        })?;
        Ok(guard)
    }
}

impl Drop for BulkCache<'_> {
    fn drop(&mut self) {
        if let Some(size) = self.restore_kib {
            // Failing to shrink only leaves a larger cache; nothing to report.
            let _ = self
                .db
                .with_writer_conn(|c| Ok(c.pragma_update(None, "cache_size", size)?));
        }
    }
}
