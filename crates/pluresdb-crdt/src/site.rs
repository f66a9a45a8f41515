//! Site ids: 16 random bytes naming one replica, the last tie-break between equal clocks.

use std::fmt;
use std::str::FromStr;

/// The identity of one replica (one database file).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SiteId(pub [u8; 16]);

impl SiteId {
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Builds a site id from a 16-byte slice; `None` when the length is wrong.
    pub fn from_slice(bytes: &[u8]) -> Option<SiteId> {
        bytes.try_into().ok().map(SiteId)
    }
}

impl fmt::Display for SiteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A site id string that is not 32 hexadecimal digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseSiteIdError(pub String);

impl fmt::Display for ParseSiteIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid site id {:?}: expected 32 hexadecimal digits",
            self.0
        )
    }
}

impl std::error::Error for ParseSiteIdError {}

impl FromStr for SiteId {
    type Err = ParseSiteIdError;

    fn from_str(s: &str) -> Result<SiteId, ParseSiteIdError> {
        let err = || ParseSiteIdError(s.to_owned());
        // `from_str_radix` takes a leading `+`: only hex digits are a site id.
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(err());
        }
        let mut out = [0u8; 16];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| err())?;
        }
        Ok(SiteId(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_errors() {
        let id = SiteId([0xab; 16]);
        let text = id.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(text.parse::<SiteId>().unwrap(), id);
        let err = "xyz".parse::<SiteId>().unwrap_err();
        assert!(err.to_string().contains("32 hexadecimal digits"), "{err}");
        assert!("zz".repeat(16).parse::<SiteId>().is_err());
        // A sign is not a digit, though `u8::from_str_radix` takes one.
        assert!(format!("+1{}", "ab".repeat(15)).parse::<SiteId>().is_err());
        assert_eq!(SiteId::from_slice(&[1; 15]), None);
    }
}
