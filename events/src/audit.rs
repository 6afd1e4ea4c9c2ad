//! What lets an outsider check the log: the audit signing key, whose public half is recorded
//! in the log (`signing_key-<id>` streams, `SigningKeyRegistered`), and signed checkpoints of
//! the log's head (`checkpoint-<id>` streams, `CheckpointSigned`). The checkpoints are events
//! themselves, so the chain covers them.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, SubsecRound, Utc};
use ed25519_dalek::{Signer, Verifier};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::key_file;

pub const SIGNING_KEY_CATEGORY: &str = "signing_key";
pub const CHECKPOINT_CATEGORY: &str = "checkpoint";

/// The stream of a signing key: one per key id, so that registering a key twice conflicts.
pub fn signing_key_stream(kid: &str) -> String {
    crate::envelope::stream_id(
        SIGNING_KEY_CATEGORY,
        Uuid::new_v5(
            &Uuid::NAMESPACE_URL,
            format!("keyledger:kid:{kid}").as_bytes(),
        ),
    )
}

pub fn checkpoint_stream(checkpoint_id: Uuid) -> String {
    crate::envelope::stream_id(CHECKPOINT_CATEGORY, checkpoint_id)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum AuditEvent {
    SigningKeyRegistered(PublicKey),
    CheckpointSigned(SignedCheckpoint),
}

crate::event_payload!(AuditEvent {
    SigningKeyRegistered,
    CheckpointSigned
});

/// A public signing key as a JWK (RFC 7517, OKP/Ed25519 per RFC 8037).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKey {
    pub kty: String,
    pub crv: String,
    /// The public key, base64url without padding.
    pub x: String,
    /// The RFC 7638 thumbprint of the key.
    pub kid: String,
    #[serde(rename = "use")]
    pub use_: String,
    pub alg: String,
}

impl PublicKey {
    fn of(public: &[u8; 32]) -> PublicKey {
        let x = key_file::jwk_x(public);
        PublicKey {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            kid: key_file::thumbprint(&x),
            x,
            use_: "sig".into(),
            alg: "EdDSA".into(),
        }
    }

    fn verifying_key(&self) -> Option<ed25519_dalek::VerifyingKey> {
        if self.kty != "OKP" || self.crv != "Ed25519" {
            return None;
        }
        let bytes: [u8; 32] = URL_SAFE_NO_PAD.decode(&self.x).ok()?.try_into().ok()?;
        // A key whose id is not its own thumbprint is refused: the id names the key.
        if key_file::thumbprint(&self.x) != self.kid {
            return None;
        }
        ed25519_dalek::VerifyingKey::from_bytes(&bytes).ok()
    }
}

/// The service's audit signing key (`SIGNING_KEY_FILE`).
pub struct SigningKey {
    key: ed25519_dalek::SigningKey,
    public: PublicKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.public.kid)
            .finish()
    }
}

impl SigningKey {
    pub fn from_seed(seed: [u8; 32]) -> SigningKey {
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        let public = PublicKey::of(&key.verifying_key().to_bytes());
        SigningKey { key, public }
    }

    /// Reads the key file at `path`, creating it (mode 0600) when there is none; returns the
    /// key and whether the file was created.
    pub fn load_or_create(
        path: &std::path::Path,
    ) -> Result<(SigningKey, bool), key_file::KeyFileError> {
        let (seed, created) = key_file::load_or_create_seed(path)?;
        Ok((SigningKey::from_seed(seed), created))
    }

    pub fn kid(&self) -> &str {
        &self.public.kid
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// Signs the head `position`/`hash` of the log at `signed_at` (kept to the microsecond).
    pub fn sign_checkpoint(
        &self,
        position: i64,
        hash: &[u8],
        signed_at: DateTime<Utc>,
    ) -> SignedCheckpoint {
        let checkpoint = Checkpoint {
            position,
            hash: hex::encode(hash),
            signed_at: signed_at.trunc_subsecs(6),
            kid: self.public.kid.clone(),
        };
        let signature = self.key.sign(&checkpoint.signed_bytes());
        SignedCheckpoint {
            checkpoint,
            signature: URL_SAFE_NO_PAD.encode(signature.to_bytes()),
        }
    }
}

/// What a license certificate states. It travels as a JWS in compact form (a JWT:
/// `base64url(header).base64url(claims).base64url(signature)`, EdDSA, `kid` in the header), so
/// any JOSE library checks it with the published keys; `iat` and `exp` are the standard
/// claims for `issued_at` and `valid_until`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateClaims {
    pub iss: String,
    /// `license-certificate`.
    pub typ: String,
    pub certificate_id: Uuid,
    pub license_id: Uuid,
    pub tier: String,
    /// What the license is entitled to: its tier's entitlements and its own.
    pub entitlements: Vec<String>,
    /// The license's end (`null`: perpetual).
    pub expires_at: Option<DateTime<Utc>>,
    /// The installation the certificate is for (`null`: any).
    pub installation_id: Option<String>,
    pub issued_at: DateTime<Utc>,
    pub valid_until: DateTime<Utc>,
    pub iat: i64,
    pub exp: i64,
}

pub const CERTIFICATE_TYPE: &str = "license-certificate";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    #[error("not a license certificate: {0}")]
    Malformed(String),
    #[error("no published key has the id {0}")]
    UnknownKey(String),
    #[error("the signature does not match the certificate")]
    BadSignature,
}

#[derive(Serialize, Deserialize)]
struct JwsHeader {
    alg: String,
    kid: String,
    typ: String,
}

impl SigningKey {
    /// The certificate for `claims`, signed with this key (the header names it).
    pub fn sign_certificate(&self, claims: &CertificateClaims) -> String {
        let header = JwsHeader {
            alg: "EdDSA".into(),
            kid: self.public.kid.clone(),
            typ: "JWT".into(),
        };
        let encode = |value: Vec<u8>| URL_SAFE_NO_PAD.encode(value);
        let signing_input = format!(
            "{}.{}",
            encode(serde_json::to_vec(&header).unwrap_or_default()),
            encode(serde_json::to_vec(claims).unwrap_or_default())
        );
        let signature = self.key.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", encode(signature.to_bytes().to_vec()))
    }
}

/// Checks a certificate's signature against the published keys and returns what it states.
/// Whether it is still valid (`valid_until`) is the caller's to compare with its clock.
pub fn verify_certificate(
    certificate: &str,
    keys: &KeySet,
) -> Result<CertificateClaims, CertificateError> {
    let malformed = |what: &str| CertificateError::Malformed(what.to_owned());
    let certificate = certificate.trim();
    let mut parts = certificate.split('.');
    let (Some(header), Some(claims), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("expected three dot-separated parts"));
    };
    let decode = |part: &str| URL_SAFE_NO_PAD.decode(part);
    let header: JwsHeader = decode(header)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| malformed("the header is not base64url JSON"))?;
    if header.alg != "EdDSA" {
        return Err(malformed("the algorithm is not EdDSA"));
    }
    let key = keys
        .find(&header.kid)
        .ok_or_else(|| CertificateError::UnknownKey(header.kid.clone()))?;
    let signature: [u8; 64] = decode(signature)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or(CertificateError::BadSignature)?;
    // Header and claims as sent: the signature covers those bytes, not a re-encoding.
    let signing_input = certificate
        .rsplit_once('.')
        .map_or(certificate, |(input, _)| input);
    key.verify(
        signing_input.as_bytes(),
        &ed25519_dalek::Signature::from_bytes(&signature),
    )
    .map_err(|_| CertificateError::BadSignature)?;
    let claims: CertificateClaims = decode(claims)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| malformed("the claims are not a license certificate's"))?;
    if claims.typ != CERTIFICATE_TYPE {
        return Err(malformed("the claims are not a license certificate's"));
    }
    Ok(claims)
}

/// What a checkpoint states: the log's head at `signed_at`, by the key `kid`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub position: i64,
    /// The head event's hash, hex.
    pub hash: String,
    pub signed_at: DateTime<Utc>,
    pub kid: String,
}

impl Checkpoint {
    /// The bytes the signature covers: the four members as canonical JSON (members sorted, no
    /// whitespace, `signed_at` in RFC 3339 with six fractional digits).
    pub fn signed_bytes(&self) -> Vec<u8> {
        crate::chain::canonical_json(&json!({
            "hash": self.hash,
            "kid": self.kid,
            "position": self.position,
            "signed_at": self.signed_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        }))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedCheckpoint {
    #[serde(flatten)]
    pub checkpoint: Checkpoint,
    /// Ed25519 over [`Checkpoint::signed_bytes`], base64url without padding.
    pub signature: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("no published key has the id {0}")]
    UnknownKey(String),
    #[error("the signature does not match the checkpoint")]
    BadSignature,
}

impl SignedCheckpoint {
    /// Checks the signature against the published keys.
    pub fn verify(&self, keys: &KeySet) -> Result<(), CheckpointError> {
        let kid = &self.checkpoint.kid;
        let key = keys
            .find(kid)
            .ok_or_else(|| CheckpointError::UnknownKey(kid.clone()))?;
        let signature: [u8; 64] = URL_SAFE_NO_PAD
            .decode(&self.signature)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or(CheckpointError::BadSignature)?;
        key.verify(
            &self.checkpoint.signed_bytes(),
            &ed25519_dalek::Signature::from_bytes(&signature),
        )
        .map_err(|_| CheckpointError::BadSignature)
    }
}

/// A JWK set of public signing keys (`GET /.well-known/keyledger-keys.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySet {
    pub keys: Vec<PublicKey>,
}

impl KeySet {
    /// The usable key with id `kid` (a key whose id is not its thumbprint is not usable).
    pub fn find(&self, kid: &str) -> Option<ed25519_dalek::VerifyingKey> {
        self.keys
            .iter()
            .filter(|key| key.kid == kid)
            .find_map(PublicKey::verifying_key)
    }

    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn keys_of(key: &SigningKey) -> KeySet {
        KeySet {
            keys: vec![key.public_key().clone()],
        }
    }

    #[test]
    fn a_checkpoint_verifies_with_the_published_key_only() {
        let ours = SigningKey::from_seed([5; 32]);
        let theirs = SigningKey::from_seed([6; 32]);
        let signed = ours.sign_checkpoint(42, &[7; 32], Utc::now());
        assert_eq!(signed.verify(&keys_of(&ours)), Ok(()));
        assert_eq!(
            signed.verify(&keys_of(&theirs)),
            Err(CheckpointError::UnknownKey(ours.kid().to_owned()))
        );
        // Their key published under our id is not our key.
        let mut forged = keys_of(&theirs);
        forged.keys[0].kid = ours.kid().to_owned();
        assert!(signed.verify(&forged).is_err());
    }

    #[test]
    fn a_checkpoint_survives_its_json_and_the_key_its_jwk() {
        let key = SigningKey::from_seed([9; 32]);
        let signed = key.sign_checkpoint(7, &[1; 32], Utc::now());
        let text = serde_json::to_string(&signed).unwrap();
        let back: SignedCheckpoint = serde_json::from_str(&text).unwrap();
        assert_eq!(back, signed);
        let keys: KeySet = serde_json::from_value(keys_of(&key).to_value()).unwrap();
        assert_eq!(back.verify(&keys), Ok(()));
    }

    fn claims() -> CertificateClaims {
        let at = DateTime::from_timestamp(1_764_000_000, 0).unwrap();
        CertificateClaims {
            iss: "keyledger".into(),
            typ: CERTIFICATE_TYPE.into(),
            certificate_id: Uuid::from_u128(1),
            license_id: Uuid::from_u128(2),
            tier: "pro".into(),
            entitlements: vec!["api".into(), "export".into()],
            expires_at: None,
            installation_id: Some("host-1".into()),
            issued_at: at,
            valid_until: at + chrono::Duration::days(30),
            iat: at.timestamp(),
            exp: (at + chrono::Duration::days(30)).timestamp(),
        }
    }

    #[test]
    fn a_certificate_verifies_with_the_published_key_only() {
        let ours = SigningKey::from_seed([5; 32]);
        let theirs = SigningKey::from_seed([6; 32]);
        let certificate = ours.sign_certificate(&claims());
        assert_eq!(
            verify_certificate(&certificate, &keys_of(&ours)),
            Ok(claims())
        );
        assert_eq!(
            verify_certificate(&certificate, &keys_of(&theirs)),
            Err(CertificateError::UnknownKey(ours.kid().to_owned()))
        );
        let forged = theirs
            .sign_certificate(&claims())
            .replace(theirs.kid(), ours.kid());
        assert!(verify_certificate(&forged, &keys_of(&ours)).is_err());
    }

    proptest! {
        #[test]
        fn any_changed_byte_of_a_certificate_fails_its_verification(
            index in 0usize..1000,
            byte in 0x21u8..0x7f,
        ) {
            let key = SigningKey::from_seed([8; 32]);
            let certificate = key.sign_certificate(&claims());
            let mut bytes = certificate.clone().into_bytes();
            let index = index % bytes.len();
            prop_assume!(bytes[index] != byte);
            bytes[index] = byte;
            let changed = String::from_utf8(bytes).unwrap();
            // A changed byte may still decode to the same bits (base64's last character carries
            // unused bits): what verifies must then be exactly the original claims.
            if let Ok(stated) = verify_certificate(&changed, &keys_of(&key)) {
                prop_assert_eq!(stated, claims());
            }
        }

        #[test]
        fn any_change_to_a_signed_checkpoint_fails_its_verification(
            position in 1i64..i64::MAX,
            other in 1i64..i64::MAX,
            micros in 0i64..4_000_000_000_000_000,
            flip in 0usize..86,
        ) {
            let key = SigningKey::from_seed([3; 32]);
            let at = DateTime::from_timestamp_micros(micros).unwrap();
            let signed = key.sign_checkpoint(position, &[2; 32], at);
            let keys = keys_of(&key);
            prop_assert_eq!(signed.verify(&keys), Ok(()));

            let mut moved = signed.clone();
            moved.checkpoint.position = other;
            prop_assume!(other != position);
            prop_assert_eq!(moved.verify(&keys), Err(CheckpointError::BadSignature));

            let mut later = signed.clone();
            later.checkpoint.signed_at += chrono::Duration::microseconds(1);
            prop_assert_eq!(later.verify(&keys), Err(CheckpointError::BadSignature));

            let mut garbled = signed.clone();
            let mut bytes = garbled.signature.into_bytes();
            let index = flip % bytes.len();
            bytes[index] = if bytes[index] == b'A' { b'B' } else { b'A' };
            garbled.signature = String::from_utf8(bytes).unwrap();
            prop_assert!(garbled.verify(&keys).is_err());
        }
    }
}
