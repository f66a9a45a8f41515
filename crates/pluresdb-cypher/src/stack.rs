//! Running a query recurses once per clause and once per matched pattern, so a long query
//! (a generated import of thousands of `CREATE`s) would overflow the thread's stack; these
//! steps continue on a new stack segment from the heap when little stack is left.

/// Stack left below which a step continues on a new segment.
const RED_ZONE: usize = 128 * 1024;

/// Size of each new segment.
const SEGMENT: usize = 2 * 1024 * 1024;

/// Runs `f`, on a new stack segment if this thread's stack is nearly used up.
#[inline]
pub(crate) fn deeper<R>(f: impl FnOnce() -> R) -> R {
    stacker::maybe_grow(RED_ZONE, SEGMENT, f)
}
