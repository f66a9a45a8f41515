//! `Database::transaction`: commit on `Ok`, roll back on `Err` or panic, nest with savepoints.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use crate::database::Database;
use crate::engine::commit_observed;
use crate::error::{Error, Result};

/// How a transaction level was opened.
enum Level {
    /// `BEGIN`; with foreign keys to enforce again once it ends (see
    /// [`Database::merge_transaction`]).
    Outer {
        foreign_keys_off: bool,
    },
    Savepoint(String),
}

/// Change-capture bookkeeping around one transaction level.
struct Observed {
    /// Captures before this mark belong to outer levels.
    mark: usize,
}

impl Database {
    /// Runs `f` in a transaction: `BEGIN IMMEDIATE` at the outermost level, a savepoint when
    /// nested. `Ok` commits (or releases the savepoint); `Err` or a panic rolls back and is
    /// passed on.
    ///
    /// While `f` runs, this thread holds the database's write lease: every call it makes on
    /// this `Database` (or a clone) joins the transaction, and other threads' writes wait.
    ///
    /// ```
    /// # use pluresdb_core::{Database, Result};
    /// # fn main() -> Result<()> {
    /// let db = Database::open_in_memory()?;
    /// db.exec("CREATE TABLE t(x)")?;
    /// let n = db.transaction(|tx| {
    ///     tx.run("INSERT INTO t VALUES (?)", (1,))?;
    ///     tx.run("INSERT INTO t VALUES (?)", (2,))?;
    ///     Ok::<_, pluresdb_core::Error>(tx.get_as::<(i64,)>("SELECT count(*) FROM t", ())?)
    /// })?;
    /// assert_eq!(n, Some((2,)));
    /// # Ok(()) }
    /// ```
    pub fn transaction<T, E>(&self, f: impl FnOnce(&Database) -> Result<T, E>) -> Result<T, E>
    where
        E: From<Error>,
    {
        self.transaction_as(false, |db, _| f(db))
    }

    /// [`transaction`](Self::transaction) for merging remote changes: begun here, it does not
    /// enforce foreign keys. A merge writes each row as the peers agree it is, and their
    /// actions (cascades) ran where the writes were made and arrive as changes of their own;
    /// run again here, or checked in the middle of a batch, they would make the replicas
    /// differ, or refuse for good a batch whose rows refer to a row deleted concurrently
    /// elsewhere. Nested in a caller's transaction, foreign keys stay as they are there. `f`
    /// is told whether the transaction is its own (false: nested in a caller's).
    pub(crate) fn merge_transaction<T>(
        &self,
        f: impl FnOnce(&Database, bool) -> Result<T>,
    ) -> Result<T> {
        self.transaction_as(true, f)
    }

    fn transaction_as<T, E>(
        &self,
        merging: bool,
        f: impl FnOnce(&Database, bool) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<Error>,
    {
        let (level, observed) = self.begin_level(merging)?;
        let mark = self.engine().hub.pending_len();
        let own = matches!(level, Level::Outer { .. });
        match catch_unwind(AssertUnwindSafe(|| f(self, own))) {
            Ok(Ok(value)) => match self.commit_level(&level) {
                Ok(()) => Ok(value),
                Err(e) => {
                    let _ = self.rollback_level(&level, mark, &observed);
                    Err(e.into())
                }
            },
            Ok(Err(e)) => {
                // The closure's own error is what the caller needs, even when undoing its
                // level failed too (it may have released the level's savepoint itself).
                let _ = self.rollback_level(&level, mark, &observed);
                Err(e)
            }
            Err(panic) => {
                let _ = self.rollback_level(&level, mark, &observed);
                resume_unwind(panic)
            }
        }
    }

    fn begin_level(&self, merging: bool) -> Result<(Level, Observed)> {
        let mut writer = self.engine().writer()?;
        let observer = self.engine().active_observer();
        if writer.conn().is_autocommit() {
            let foreign_keys_off = merging
                && writer
                    .conn()
                    .query_row("PRAGMA foreign_keys", [], |r| r.get::<_, bool>(0))?;
            let level = Level::Outer { foreign_keys_off };
            if foreign_keys_off {
                writer.conn().execute_batch("PRAGMA foreign_keys = OFF")?;
            }
            let begun = writer
                .conn()
                .execute_batch("BEGIN IMMEDIATE")
                .map_err(Error::from)
                .and_then(|()| self.engine().after_begin(writer.state_mut()));
            if let Err(e) = begun {
                if !writer.conn().is_autocommit() {
                    let _ = writer.conn().execute_batch("ROLLBACK");
                }
                restore_foreign_keys(writer.conn(), &level);
                return Err(e);
            }
            Ok((level, Observed { mark: 0 }))
        } else {
            // In a transaction begun in SQL without the write lock, the lock is taken and
            // other processes' commits caught up with, as after `BEGIN IMMEDIATE`.
            if crate::engine::lock_for_write(writer.conn())? {
                self.engine().after_begin(writer.state_mut())?;
            }
            // Captures so far belong to the enclosing level: write them before the savepoint.
            if let Some(o) = observer {
                o.flush(writer.conn())?;
            }
            let state = writer.state_mut();
            state.savepoints += 1;
            let name = format!("pluresdb_tx_{}", state.savepoints);
            // Cached: a put or link inside a transaction opens one per call.
            writer
                .conn()
                .prepare_cached(&format!("SAVEPOINT {name}"))?
                .execute([])?;
            let mark = observer.map_or(0, |o| o.mark());
            Ok((Level::Savepoint(name), Observed { mark }))
        }
    }

    fn commit_level(&self, level: &Level) -> Result<()> {
        let mut writer = self.engine().writer()?;
        if writer.conn().is_autocommit() {
            // The closure ended the transaction itself (explicit COMMIT/ROLLBACK in SQL).
            restore_foreign_keys(writer.conn(), level);
            return Ok(());
        }
        let observer = self.engine().active_observer();
        match level {
            Level::Outer { .. } => {
                match observer {
                    Some(o) => commit_observed(o, writer.conn())?,
                    None => writer.conn().execute_batch("COMMIT")?,
                }
                // (After a failed commit, the rollback that follows restores them.)
                restore_foreign_keys(writer.conn(), level);
            }
            Level::Savepoint(name) => {
                if let Some(o) = observer {
                    o.flush(writer.conn())?;
                }
                writer
                    .conn()
                    .prepare_cached(&format!("RELEASE {name}"))?
                    .execute([])?;
                let state = writer.state_mut();
                state.savepoints = state.savepoints.saturating_sub(1);
            }
        }
        Ok(())
    }

    fn rollback_level(&self, level: &Level, mark: usize, observed: &Observed) -> Result<()> {
        if let Some(o) = self.engine().active_observer() {
            o.discard_since(observed.mark);
        }
        let mut writer = self.engine().writer()?;
        if writer.conn().is_autocommit() {
            self.engine().hub.truncate_pending(mark);
            restore_foreign_keys(writer.conn(), level);
            return Ok(());
        }
        match level {
            Level::Outer { .. } => {
                let rolled_back = writer.conn().execute_batch("ROLLBACK");
                restore_foreign_keys(writer.conn(), level);
                rolled_back?
            }
            Level::Savepoint(name) => {
                writer
                    .conn()
                    .execute_batch(&format!("ROLLBACK TO {name}; RELEASE {name}"))?;
                if let Some(o) = self.engine().observer() {
                    o.tx_control_ran();
                }
                let state = writer.state_mut();
                state.savepoints = state.savepoints.saturating_sub(1);
                self.engine().hub.truncate_pending(mark);
            }
        }
        Ok(())
    }
}

/// Enforces foreign keys again after a transaction level that stopped it, once no transaction
/// is open (the setting cannot change inside one).
fn restore_foreign_keys(conn: &rusqlite::Connection, level: &Level) {
    if let Level::Outer {
        foreign_keys_off: true,
    } = level
        && conn.is_autocommit()
    {
        let _ = conn.execute_batch("PRAGMA foreign_keys = ON");
    }
}
