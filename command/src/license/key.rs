//! License keys: `lic_` + base58(256 random bits from the OS RNG + a 4-byte checksum).
//! Keys imported from the legacy service (`XXXXX-XXXXX-XXXXX-XXXXX-XXXXX`) have no checksum;
//! their shape alone is checked, and the lookup decides.
//!
//! The key is shown once, at issuance. Everything stored holds only its SHA-256 hash and a
//! display prefix. The checksum lets validation reject mistyped keys without a lookup.

use rand::TryRngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};

const PREFIX: &str = "lic_";
const RANDOM_BYTES: usize = 32;
const CHECKSUM_BYTES: usize = 4;
/// Characters of the key shown in listings: `lic_` and the first eight of the body.
const DISPLAY_CHARS: usize = PREFIX.len() + 8;
/// Characters of a legacy key shown in listings: its first group and dash.
const LEGACY_DISPLAY_CHARS: usize = 6;

/// A key that passed the shape and checksum check.
#[derive(Clone, PartialEq, Eq)]
pub struct LicenseKey(String);

impl std::fmt::Debug for LicenseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LicenseKey({}…)", self.display_prefix())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the operating system's random number generator failed")]
    Rng,
}

impl LicenseKey {
    /// A new key from 256 bits of the OS RNG.
    pub fn generate() -> Result<LicenseKey, KeyError> {
        let mut bytes = [0u8; RANDOM_BYTES + CHECKSUM_BYTES];
        OsRng
            .try_fill_bytes(&mut bytes[..RANDOM_BYTES])
            .map_err(|_| KeyError::Rng)?;
        let checksum = checksum(&bytes[..RANDOM_BYTES]);
        bytes[RANDOM_BYTES..].copy_from_slice(&checksum);
        Ok(LicenseKey(format!(
            "{PREFIX}{}",
            bs58::encode(bytes).into_string()
        )))
    }

    /// Accepts a well-formed key with a correct checksum, or a legacy key of the legacy shape.
    pub fn parse(text: &str) -> Option<LicenseKey> {
        if is_legacy(text) {
            return Some(LicenseKey(text.to_owned()));
        }
        let body = text.strip_prefix(PREFIX)?;
        let bytes = bs58::decode(body).into_vec().ok()?;
        if bytes.len() != RANDOM_BYTES + CHECKSUM_BYTES {
            return None;
        }
        let (random, check) = bytes.split_at(RANDOM_BYTES);
        (checksum(random) == check).then(|| LicenseKey(text.to_owned()))
    }

    /// SHA-256 of the key, hex: what the log and the read tables store.
    pub fn hash(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }

    /// SHA-256 of the key: what the validation view is keyed by.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
    }

    pub fn display_prefix(&self) -> String {
        let chars = if is_legacy(&self.0) {
            LEGACY_DISPLAY_CHARS
        } else {
            DISPLAY_CHARS
        };
        self.0.chars().take(chars).collect()
    }

    /// The key itself, for the one response that shows it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Five groups of five upper-case letters or digits, separated by dashes.
pub fn is_legacy(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups.iter().all(|g| {
            g.len() == 5
                && g.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        })
}

fn checksum(random: &[u8]) -> [u8; CHECKSUM_BYTES] {
    let digest = Sha256::digest(random);
    let mut out = [0u8; CHECKSUM_BYTES];
    out.copy_from_slice(&digest[..CHECKSUM_BYTES]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_parses_and_hides_itself_in_debug_output() {
        let key = LicenseKey::generate().unwrap();
        assert!(key.expose().starts_with("lic_"));
        assert_eq!(LicenseKey::parse(key.expose()), Some(key.clone()));
        assert!(!format!("{key:?}").contains(key.expose()));
        assert_eq!(key.display_prefix().len(), 12);
        assert_eq!(key.hash().len(), 64);
    }

    #[test]
    fn a_key_with_one_character_changed_is_malformed() {
        let key = LicenseKey::generate().unwrap();
        let text = key.expose();
        let last = text.chars().last().unwrap();
        let replacement = if last == 'z' { 'y' } else { 'z' };
        let typo = format!("{}{replacement}", &text[..text.len() - 1]);
        assert_eq!(LicenseKey::parse(&typo), None);
    }

    #[test]
    fn keys_of_the_wrong_shape_are_malformed() {
        for text in ["", "lic_", "lic_0OIl", "key_abc", "lic_3mJr7AoUXx2Wqd"] {
            assert_eq!(LicenseKey::parse(text), None, "{text}");
        }
    }

    #[test]
    fn legacy_keys_pass_the_shape_check_and_show_their_first_group() {
        let key = LicenseKey::parse("K3DEG-ZDPCF-54ERF-5DHQD-3DQCJ").unwrap();
        assert_eq!(key.display_prefix(), "K3DEG-");
        for text in [
            "K3DEG-ZDPCF-54ERF-5DHQD",
            "k3deg-zdpcf-54erf-5dhqd-3dqcj",
            "K3DEG-ZDPCF-54ERF-5DHQD-3DQC!",
        ] {
            assert_eq!(LicenseKey::parse(text), None, "{text}");
        }
    }

    #[test]
    fn two_keys_differ() {
        assert_ne!(
            LicenseKey::generate().unwrap(),
            LicenseKey::generate().unwrap()
        );
    }
}
