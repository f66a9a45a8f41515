//! [`Version`]: the total order of writes, a clock time then the writing site.

use crate::{Hlc, SiteId};

/// The version of one write: compared by clock time, then by site id (the last tie-break).
/// Versions are unique: a site's clock never repeats and sites have distinct ids.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// When the write happened.
    pub hlc: Hlc,
    /// Who wrote it.
    pub site: SiteId,
}

impl Version {
    /// A version from its parts.
    pub fn new(hlc: Hlc, site: SiteId) -> Version {
        Version { hlc, site }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_first_then_site() {
        let a = Version::new(Hlc::new(10, 0), SiteId([9; 16]));
        let b = Version::new(Hlc::new(10, 1), SiteId([1; 16]));
        let c = Version::new(Hlc::new(10, 1), SiteId([2; 16]));
        assert!(a < b && b < c);
    }
}
