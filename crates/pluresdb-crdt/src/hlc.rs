//! Hybrid logical clock (HLC): physical milliseconds in the high 48 bits, a logical counter in
//! the low 16 bits, so timestamps order like wall time but never go backwards or repeat.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const LOGICAL_BITS: u32 = 16;
const LOGICAL_MASK: u64 = (1 << LOGICAL_BITS) - 1;

/// One hybrid-logical-clock timestamp. Ordered; `Hlc::ZERO` is before everything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hlc(u64);

impl Hlc {
    /// The smallest timestamp.
    pub const ZERO: Hlc = Hlc(0);

    /// Builds a timestamp from physical milliseconds since the Unix epoch and a logical counter.
    pub fn new(millis: u64, logical: u16) -> Hlc {
        Hlc((millis << LOGICAL_BITS) | u64::from(logical))
    }

    /// The raw 64-bit form (what is stored and sent).
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// Rebuilds a timestamp from its raw 64-bit form.
    pub fn from_u64(raw: u64) -> Hlc {
        Hlc(raw)
    }

    /// Physical part: milliseconds since the Unix epoch.
    pub fn millis(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }

    /// Logical counter within the same millisecond.
    pub fn logical(self) -> u16 {
        (self.0 & LOGICAL_MASK) as u16
    }
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.millis(), self.logical())
    }
}

/// A thread-safe hybrid logical clock. `now()` is strictly increasing for one clock.
#[derive(Debug, Default)]
pub struct HybridClock {
    last: AtomicU64,
}

impl HybridClock {
    /// A clock that starts after `last` (for example the newest timestamp found on disk).
    pub fn starting_after(last: Hlc) -> HybridClock {
        HybridClock {
            last: AtomicU64::new(last.as_u64()),
        }
    }

    /// The latest timestamp handed out or observed.
    pub fn last(&self) -> Hlc {
        Hlc(self.last.load(Ordering::Acquire))
    }

    /// A new timestamp, later than every one this clock handed out or observed.
    pub fn now(&self) -> Hlc {
        self.tick_with(wall_millis())
    }

    /// Like [`now`](Self::now) with an explicit wall-clock reading (for tests and simulations).
    pub fn tick_with(&self, wall_millis: u64) -> Hlc {
        let wall = wall_millis << LOGICAL_BITS;
        let mut current = self.last.load(Ordering::Acquire);
        loop {
            let next = if wall > current { wall } else { current + 1 };
            match self.last.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Hlc(next),
                Err(seen) => current = seen,
            }
        }
    }

    /// Moves the clock forward past a timestamp seen elsewhere (a remote change).
    pub fn observe(&self, seen: Hlc) {
        self.last.fetch_max(seen.as_u64(), Ordering::AcqRel);
    }

    /// Accepts a remote timestamp unless it is more than `max_drift` ahead of this machine's
    /// clock (a peer with a wrong clock would otherwise drag every later write into the
    /// future and win every conflict).
    pub fn receive(&self, remote: Hlc, max_drift: Duration) -> Result<(), ClockDrift> {
        self.receive_at(remote, wall_millis(), max_drift)
    }

    /// [`receive`](Self::receive) with an explicit wall-clock reading.
    pub fn receive_at(
        &self,
        remote: Hlc,
        wall_millis: u64,
        max_drift: Duration,
    ) -> Result<(), ClockDrift> {
        check_drift_at(remote, wall_millis, max_drift)?;
        self.observe(remote);
        Ok(())
    }
}

/// Fails as [`HybridClock::receive`] does, without moving any clock: for a remote timestamp
/// to observe only once what carries it is accepted.
pub fn check_drift(remote: Hlc, max_drift: Duration) -> Result<(), ClockDrift> {
    check_drift_at(remote, wall_millis(), max_drift)
}

/// [`check_drift`] with an explicit wall-clock reading.
pub fn check_drift_at(
    remote: Hlc,
    wall_millis: u64,
    max_drift: Duration,
) -> Result<(), ClockDrift> {
    let limit = wall_millis.saturating_add(max_drift.as_millis() as u64);
    if remote.millis() > limit {
        return Err(ClockDrift {
            remote,
            local_millis: wall_millis,
            max_drift,
        });
    }
    Ok(())
}

/// The default bound on how far a peer's clock may run ahead of ours.
pub const DEFAULT_MAX_DRIFT: Duration = Duration::from_secs(10 * 60);

/// A remote timestamp too far in the future.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClockDrift {
    /// The timestamp received.
    pub remote: Hlc,
    /// This machine's clock when it arrived, in ms since the Unix epoch.
    pub local_millis: u64,
    /// The bound that was exceeded.
    pub max_drift: Duration,
}

impl fmt::Display for ClockDrift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a change is stamped {} ms ahead of this machine's clock (the limit is {} ms): the \
             peer's clock or this one is wrong; fix the clock, then sync again",
            self.remote.millis().saturating_sub(self.local_millis),
            self.max_drift.as_millis()
        )
    }
}

impl std::error::Error for ClockDrift {}

/// Milliseconds since the Unix epoch from the system clock (0 if the clock is before 1970).
pub fn wall_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_round_trip() {
        let t = Hlc::new(1_700_000_000_123, 7);
        assert_eq!(t.millis(), 1_700_000_000_123);
        assert_eq!(t.logical(), 7);
        assert_eq!(Hlc::from_u64(t.as_u64()), t);
        assert_eq!(t.to_string(), "1700000000123.7");
    }

    #[test]
    fn strictly_increasing_when_wall_clock_stalls_or_goes_back() {
        let clock = HybridClock::default();
        let a = clock.tick_with(1000);
        let b = clock.tick_with(1000);
        let c = clock.tick_with(900);
        let d = clock.tick_with(2000);
        assert!(a < b && b < c && c < d);
        assert_eq!(b.millis(), 1000);
        assert_eq!(b.logical(), 1);
        assert_eq!(c.millis(), 1000);
        assert_eq!(d, Hlc::new(2000, 0));
    }

    #[test]
    fn observe_moves_past_remote_time() {
        let clock = HybridClock::default();
        clock.observe(Hlc::new(5000, 3));
        let next = clock.tick_with(10);
        assert_eq!(next, Hlc::new(5000, 4));
    }

    #[test]
    fn receive_rejects_clocks_too_far_ahead() {
        let clock = HybridClock::default();
        let now = 1_000_000;
        let drift = Duration::from_secs(60);
        clock
            .receive_at(Hlc::new(now + 59_000, 3), now, drift)
            .unwrap();
        assert_eq!(clock.last(), Hlc::new(now + 59_000, 3));
        let err = clock
            .receive_at(Hlc::new(now + 61_000, 0), now, drift)
            .unwrap_err();
        assert!(err.to_string().contains("61000 ms ahead"), "{err}");
        assert_eq!(
            clock.last(),
            Hlc::new(now + 59_000, 3),
            "a rejected time is not observed"
        );
    }

    #[test]
    fn unique_across_threads() {
        let clock = std::sync::Arc::new(HybridClock::default());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let clock = clock.clone();
                std::thread::spawn(move || {
                    (0..1000).map(|_| clock.tick_with(1)).collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<Hlc> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 4000);
    }
}
