//! API keys, as services present them: `klk_` + base58 of 256 random bits from the OS RNG.
//! The key is shown once, when it is created; everything stored holds only its SHA-256 hash
//! (hex) and its display prefix (`klk_` and the first eight characters of the body).

use rand::TryRngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};

pub const PREFIX: &str = "klk_";
const RANDOM_BYTES: usize = 32;
/// Characters of the key shown in listings: `klk_` and the first eight of the body.
const DISPLAY_CHARS: usize = PREFIX.len() + 8;

/// A key of the right shape: `klk_` and base58 that decodes to 32 bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeySecret(String);

impl std::fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeySecret({}…)", self.display_prefix())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the operating system's random number generator failed")]
pub struct RngFailed;

impl ApiKeySecret {
    /// A new key from 256 bits of the OS RNG.
    pub fn generate() -> Result<ApiKeySecret, RngFailed> {
        let mut bytes = [0u8; RANDOM_BYTES];
        OsRng.try_fill_bytes(&mut bytes).map_err(|_| RngFailed)?;
        Ok(ApiKeySecret(format!(
            "{PREFIX}{}",
            bs58::encode(bytes).into_string()
        )))
    }

    /// Accepts a well-formed key; says nothing about whether it exists.
    pub fn parse(text: &str) -> Option<ApiKeySecret> {
        let body = text.strip_prefix(PREFIX)?;
        let bytes = bs58::decode(body).into_vec().ok()?;
        (bytes.len() == RANDOM_BYTES).then(|| ApiKeySecret(text.to_owned()))
    }

    /// SHA-256 of the whole key, hex: what the log and the read table store.
    pub fn hash(&self) -> String {
        hash(&self.0)
    }

    pub fn display_prefix(&self) -> String {
        self.0.chars().take(DISPLAY_CHARS).collect()
    }

    /// The key itself, for the one response that shows it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// SHA-256 of a presented key, hex.
pub fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_new_key_is_klk_and_256_bits_and_parses_to_itself() {
        let key = ApiKeySecret::generate().unwrap();
        let text = key.expose();
        assert!(text.starts_with("klk_"));
        let bytes = bs58::decode(&text[PREFIX.len()..]).into_vec().unwrap();
        assert_eq!(bytes.len(), 32);
        assert_eq!(ApiKeySecret::parse(text), Some(key.clone()));
        assert_eq!(key.display_prefix(), text[..12]);
        assert_eq!(key.hash().len(), 64);
        assert!(!format!("{key:?}").contains(&text[12..]));
        assert_ne!(ApiKeySecret::generate().unwrap(), key);
    }

    #[test]
    fn other_tokens_are_not_api_keys() {
        for text in [
            "",
            "klk_",
            "klk_abc",
            "klr_4vJ9JU1bJJE96FWSJKvHsmmFADCg4gpZQff4P3bkLKi",
            "lic_4vJ9JU1bJJE96FWSJKvHsmmFADCg4gpZQff4P3bkLKi",
            // `0`, `O`, `I` and `l` are not base58.
            "klk_0vJ9JU1bJJE96FWSJKvHsmmFADCg4gpZQff4P3bkLKi",
        ] {
            assert_eq!(ApiKeySecret::parse(text), None, "{text:?}");
        }
    }

    proptest! {
        #[test]
        fn any_32_bytes_make_a_key_that_parses_back(bytes in proptest::array::uniform32(any::<u8>())) {
            let text = format!("{PREFIX}{}", bs58::encode(bytes).into_string());
            let key = ApiKeySecret::parse(&text).unwrap();
            prop_assert_eq!(key.expose(), text.as_str());
            prop_assert_eq!(key.hash(), hash(&text));
        }

        #[test]
        fn an_accepted_text_is_klk_and_base58_of_32_bytes(text in "(klk_)?[1-9A-Za-z_]{0,60}") {
            if let Some(key) = ApiKeySecret::parse(&text) {
                let body = key.expose().strip_prefix(PREFIX).unwrap();
                prop_assert_eq!(bs58::decode(body).into_vec().unwrap().len(), 32);
            }
        }
    }
}
