//! Access tokens: EdDSA (Ed25519) JWTs with a `kid`, signed with a key kept in a file
//! (`JWT_KEY_FILE`, PKCS#8 PEM, created with mode 0600 on first start), and the public key as
//! a JWK set for `GET /.well-known/jwks.json`.

use std::path::Path;

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use keyledger_events::key_file;
use keyledger_events::user::Role;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// How long an access token is good for.
pub const ACCESS_TOKEN_SECONDS: i64 = 15 * 60;

/// The `iss` of every token this service signs.
pub const ISSUER: &str = "keyledger";

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// The user's id.
    pub sub: String,
    pub role: Role,
    pub jti: String,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
    /// The user's token generation at issue: the token is refused once the user's generation
    /// (`users.token_generation`) has moved past it.
    #[serde(default, rename = "gen")]
    pub generation: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Not a JWT, not signed by our key, or not our claims.
    Invalid,
    /// Well signed, but past its `exp`.
    Expired,
}

pub use keyledger_events::key_file::KeyFileError;

/// The signing key and what is derived from it.
pub struct JwtKeys {
    kid: String,
    /// The key's seed, from which secrets for other uses are derived.
    seed: [u8; 32],
    x: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys").field("kid", &self.kid).finish()
    }
}

impl JwtKeys {
    /// The key pair of a 32-byte Ed25519 seed.
    pub fn from_seed(seed: [u8; 32]) -> JwtKeys {
        let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
        let public = signing.verifying_key().to_bytes();
        let x = key_file::jwk_x(&public);
        JwtKeys {
            kid: key_file::thumbprint(&x),
            seed,
            encoding: EncodingKey::from_ed_der(&key_file::pkcs8_der(&seed)),
            decoding: DecodingKey::from_ed_der(&public),
            x,
        }
    }

    /// Reads the key at `path`; creates it (mode 0600) when there is none. Returns the keys
    /// and whether the file was created.
    pub fn load_or_create(path: &Path) -> Result<(JwtKeys, bool), KeyFileError> {
        let (seed, created) = key_file::load_or_create_seed(path)?;
        Ok((JwtKeys::from_seed(seed), created))
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// A secret of its own for `purpose` (HMAC-SHA256 of the purpose under the signing key's
    /// seed): every node with the key file derives the same one, and it reveals nothing of
    /// the key.
    pub fn derive_secret(&self, purpose: &str) -> [u8; 32] {
        crate::session::hmac_sha256(&self.seed, purpose.as_bytes())
    }

    /// Signs an access token for `sub` with `role` in the user's token `generation`, issued
    /// at `now`.
    pub fn issue(
        &self,
        sub: &str,
        role: Role,
        generation: i64,
        now: DateTime<Utc>,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let iat = now.timestamp();
        let claims = Claims {
            sub: sub.to_owned(),
            role,
            jti: uuid::Uuid::new_v4().to_string(),
            iat,
            exp: iat + ACCESS_TOKEN_SECONDS,
            iss: ISSUER.to_owned(),
            generation,
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding)
    }

    /// Checks the signature, the key id, the issuer and the expiry against `now`.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        if header.alg != Algorithm::EdDSA || header.kid.as_deref() != Some(self.kid.as_str()) {
            return Err(TokenError::Invalid);
        }
        let mut validation = Validation::new(Algorithm::EdDSA);
        // Expiry is checked against the service's clock below.
        validation.validate_exp = false;
        validation.required_spec_claims = ["exp", "iat", "iss", "sub"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        validation.set_issuer(&[ISSUER]);
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map_err(|_| TokenError::Invalid)?;
        if data.claims.exp <= now.timestamp() {
            return Err(TokenError::Expired);
        }
        Ok(data.claims)
    }

    /// The public key as a JWK set (RFC 7517, OKP per RFC 8037).
    pub fn jwks(&self) -> Value {
        json!({
            "keys": [{
                "kty": "OKP",
                "crv": "Ed25519",
                "x": self.x,
                "kid": self.kid,
                "alg": "EdDSA",
                "use": "sig",
            }]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_token_verifies_until_it_expires() {
        let keys = JwtKeys::from_seed([7; 32]);
        let now = Utc::now();
        let token = keys.issue("u1", Role::Operator, 3, now).unwrap();
        let claims = keys.verify(&token, now).unwrap();
        assert_eq!(claims.sub, "u1");
        assert_eq!(claims.role, Role::Operator);
        assert_eq!(claims.exp - claims.iat, ACCESS_TOKEN_SECONDS);
        assert_eq!(claims.iss, ISSUER);
        assert_eq!(claims.generation, 3);
        let later = now + chrono::Duration::seconds(ACCESS_TOKEN_SECONDS);
        assert_eq!(keys.verify(&token, later), Err(TokenError::Expired));
    }

    #[test]
    fn a_token_of_another_key_is_invalid() {
        let ours = JwtKeys::from_seed([1; 32]);
        let theirs = JwtKeys::from_seed([2; 32]);
        let token = theirs.issue("u1", Role::Admin, 0, Utc::now()).unwrap();
        assert_eq!(ours.verify(&token, Utc::now()), Err(TokenError::Invalid));
    }

    #[test]
    fn the_key_file_is_created_once_with_owner_only_permissions_and_read_back() {
        let path = std::env::temp_dir().join(format!("kl-jwt-{}.key", uuid::Uuid::new_v4()));
        let (first, created) = JwtKeys::load_or_create(&path).unwrap();
        assert!(created);
        let (second, created_again) = JwtKeys::load_or_create(&path).unwrap();
        assert!(!created_again);
        assert_eq!(first.kid(), second.kid());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "not a key").unwrap();
        assert!(JwtKeys::load_or_create(&path).is_err());
        let _ = std::fs::remove_file(&path);
    }

    proptest! {
        #[test]
        fn no_text_other_than_a_signed_token_verifies(text in ".{0,300}") {
            let keys = JwtKeys::from_seed([3; 32]);
            prop_assert_eq!(keys.verify(&text, Utc::now()), Err(TokenError::Invalid));
        }

        #[test]
        fn any_change_to_a_signed_token_makes_it_invalid(index in 0usize..400, byte in 0u8..128) {
            let keys = JwtKeys::from_seed([4; 32]);
            let token = keys.issue("u1", Role::Viewer, 0, Utc::now()).unwrap();
            let mut bytes = token.clone().into_bytes();
            let index = index % bytes.len();
            prop_assume!(bytes[index] != byte);
            bytes[index] = byte;
            let changed = String::from_utf8_lossy(&bytes).into_owned();
            prop_assert!(keys.verify(&changed, Utc::now()).is_err());
        }
    }
}
