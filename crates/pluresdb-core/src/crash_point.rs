//! Named points where a test can make the process die, to check what a kill there leaves.
//!
//! Debug builds only: when the environment variable [`CRASH_AT_ENV`] names a point, the
//! process aborts (as abruptly as a SIGKILL: no destructor runs, nothing is flushed) the
//! first time it reaches it. Release builds compile every point to nothing and never read
//! the variable.

/// The environment variable naming the point to abort at (debug builds only).
pub const CRASH_AT_ENV: &str = "PLURESDB_CRASH_AT";

/// Aborts the process if this is a debug build and [`CRASH_AT_ENV`] names `point`.
#[inline]
pub fn crash_point(point: &str) {
    #[cfg(debug_assertions)]
    if std::env::var_os(CRASH_AT_ENV).is_some_and(|at| at == point) {
        eprintln!("{CRASH_AT_ENV}: aborting at {point}");
        std::process::abort();
    }
    #[cfg(not(debug_assertions))]
    let _ = point;
}
