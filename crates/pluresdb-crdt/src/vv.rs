//! [`VersionVector`]: for each site, the newest of its changes a replica has seen.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::SiteId;

/// For each site, the highest version (the site's own transaction counter) seen from it.
/// A peer asks for "everything after this vector", which makes sync incremental.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VersionVector {
    entries: BTreeMap<SiteId, u64>,
}

impl VersionVector {
    /// The empty vector (nothing seen).
    pub fn new() -> VersionVector {
        VersionVector::default()
    }

    /// The version seen from `site` (0 when none).
    pub fn get(&self, site: &SiteId) -> u64 {
        self.entries.get(site).copied().unwrap_or(0)
    }

    /// Records that `site`'s changes up to `version` were seen (never moves backwards).
    pub fn observe(&mut self, site: SiteId, version: u64) {
        let entry = self.entries.entry(site).or_insert(0);
        *entry = (*entry).max(version);
    }

    /// True when the change `version` of `site` is already covered.
    pub fn covers(&self, site: &SiteId, version: u64) -> bool {
        self.get(site) >= version
    }

    /// Takes the larger version for every site.
    pub fn merge(&mut self, other: &VersionVector) {
        for (site, version) in &other.entries {
            self.observe(*site, *version);
        }
    }

    /// The sites and versions, ordered by site.
    pub fn iter(&self) -> impl Iterator<Item = (&SiteId, &u64)> {
        self.entries.iter()
    }

    /// Number of sites.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing was seen.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl FromIterator<(SiteId, u64)> for VersionVector {
    fn from_iter<I: IntoIterator<Item = (SiteId, u64)>>(iter: I) -> Self {
        let mut vv = VersionVector::new();
        for (site, version) in iter {
            vv.observe(site, version);
        }
        vv
    }
}

/// Text form: `site=version` pairs separated by commas (`""` is the empty vector).
impl fmt::Display for VersionVector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (site, version)) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{site}={version}")?;
        }
        Ok(())
    }
}

/// A version vector text that does not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseVersionVectorError(pub String);

impl fmt::Display for ParseVersionVectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid version vector {:?}: expected SITE=VERSION pairs separated by commas, \
             SITE being 32 hexadecimal digits (an empty text means nothing seen)",
            self.0
        )
    }
}

impl std::error::Error for ParseVersionVectorError {}

impl FromStr for VersionVector {
    type Err = ParseVersionVectorError;

    fn from_str(s: &str) -> Result<VersionVector, ParseVersionVectorError> {
        let err = || ParseVersionVectorError(s.to_owned());
        let mut vv = VersionVector::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (site, version) = part.split_once('=').ok_or_else(err)?;
            let site: SiteId = site.trim().parse().map_err(|_| err())?;
            let version: u64 = version.trim().parse().map_err(|_| err())?;
            vv.observe(site, version);
        }
        Ok(vv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observe_merge_and_text_round_trip() {
        let a = SiteId([1; 16]);
        let b = SiteId([2; 16]);
        let mut vv = VersionVector::new();
        vv.observe(a, 5);
        vv.observe(a, 3);
        assert_eq!(vv.get(&a), 5);
        assert!(vv.covers(&a, 5) && !vv.covers(&a, 6) && !vv.covers(&b, 1));
        let other: VersionVector = [(b, 7), (a, 2)].into_iter().collect();
        vv.merge(&other);
        assert_eq!((vv.get(&a), vv.get(&b)), (5, 7));
        let text = vv.to_string();
        assert_eq!(text.parse::<VersionVector>().unwrap(), vv);
        assert_eq!("".parse::<VersionVector>().unwrap(), VersionVector::new());
        let err = "zz=1".parse::<VersionVector>().unwrap_err();
        assert!(err.to_string().contains("SITE=VERSION"));
        assert!(format!("{a}").parse::<VersionVector>().is_err());
    }
}
