//! The merge rules for one row: causal length first, then per-field last writer wins.

use crate::Version;

/// The field name of a row's sentinel change (creation and deletion).
pub const SENTINEL: &str = "";

/// True when a causal length means the row exists (odd).
pub fn is_alive(cl: u64) -> bool {
    cl % 2 == 1
}

/// What to do with an incoming sentinel change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowDecision {
    /// Older or equal causal length: nothing changes.
    Ignore,
    /// The row takes the new causal length and loses every field of its earlier life;
    /// it exists when the causal length is odd and is deleted when even.
    Reset {
        /// The new causal length.
        cl: u64,
    },
    /// Same life, but a later creation (or deletion) version: the row's sentinel version
    /// becomes the incoming one, nothing else changes. (Two sites that created the same row
    /// concurrently agree on one creation time this way.)
    Touch,
}

/// Decides an incoming sentinel change (`incoming_cl`, `incoming`) against a row whose causal
/// length is `local_cl` (0 when unknown) and whose sentinel version is `local` (`None` when
/// unknown).
pub fn decide_sentinel(
    local_cl: u64,
    local: Option<Version>,
    incoming_cl: u64,
    incoming: Version,
) -> RowDecision {
    if incoming_cl > local_cl {
        RowDecision::Reset { cl: incoming_cl }
    } else if incoming_cl == local_cl && local.is_none_or(|v| incoming > v) {
        RowDecision::Touch
    } else {
        RowDecision::Ignore
    }
}

/// What to do with an incoming field change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldDecision {
    /// It lost: an older causal length, an older version, or a change to a deleted row.
    Ignore,
    /// Write the field.
    Apply,
    /// The row starts a new life at `cl` (fields of earlier lives are dropped), then the field
    /// is written.
    ResetAndApply {
        /// The new causal length.
        cl: u64,
    },
}

/// Decides an incoming field change (`incoming_cl`, `incoming`) against the row's causal
/// length and the field's current version (`None` when the field has none).
pub fn decide_field(
    local_cl: u64,
    local: Option<Version>,
    incoming_cl: u64,
    incoming: Version,
) -> FieldDecision {
    if !is_alive(incoming_cl) || incoming_cl < local_cl {
        return FieldDecision::Ignore;
    }
    if incoming_cl > local_cl {
        return FieldDecision::ResetAndApply { cl: incoming_cl };
    }
    match local {
        Some(v) if v >= incoming => FieldDecision::Ignore,
        _ => FieldDecision::Apply,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Hlc, SiteId};

    fn v(t: u64, s: u8) -> Version {
        Version::new(Hlc::new(t, 0), SiteId([s; 16]))
    }

    #[test]
    fn delete_beats_older_writes_and_loses_to_reinsert() {
        assert_eq!(
            decide_sentinel(1, Some(v(1, 1)), 2, v(0, 0)),
            RowDecision::Reset { cl: 2 }
        );
        assert_eq!(
            decide_field(2, None, 1, v(99, 1)),
            FieldDecision::Ignore,
            "write of an earlier life"
        );
        assert_eq!(
            decide_field(2, None, 3, v(1, 1)),
            FieldDecision::ResetAndApply { cl: 3 }
        );
        assert_eq!(
            decide_sentinel(3, Some(v(5, 1)), 2, v(9, 9)),
            RowDecision::Ignore
        );
    }

    #[test]
    fn same_life_is_last_writer_wins() {
        assert_eq!(
            decide_field(1, Some(v(5, 1)), 1, v(6, 1)),
            FieldDecision::Apply
        );
        assert_eq!(
            decide_field(1, Some(v(6, 1)), 1, v(5, 9)),
            FieldDecision::Ignore
        );
        assert_eq!(
            decide_field(1, Some(v(6, 1)), 1, v(6, 2)),
            FieldDecision::Apply,
            "site breaks ties"
        );
        assert_eq!(
            decide_field(1, Some(v(6, 1)), 1, v(6, 1)),
            FieldDecision::Ignore,
            "idempotent"
        );
        assert_eq!(decide_field(1, None, 1, v(1, 1)), FieldDecision::Apply);
        assert_eq!(
            decide_field(0, None, 2, v(1, 1)),
            FieldDecision::Ignore,
            "fields never carry even lengths"
        );
    }

    #[test]
    fn concurrent_creations_agree_on_the_later_one() {
        assert_eq!(
            decide_sentinel(1, Some(v(5, 1)), 1, v(6, 2)),
            RowDecision::Touch
        );
        assert_eq!(
            decide_sentinel(1, Some(v(6, 2)), 1, v(5, 1)),
            RowDecision::Ignore
        );
        assert_eq!(decide_sentinel(1, None, 1, v(5, 1)), RowDecision::Touch);
        assert_eq!(
            decide_sentinel(1, Some(v(5, 1)), 1, v(5, 1)),
            RowDecision::Ignore,
            "idempotent"
        );
    }
}
