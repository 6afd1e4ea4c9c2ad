//! Ed25519 private keys kept in files (PKCS#8 PEM, mode 0600), created on first start: the
//! access-token key (`JWT_KEY_FILE`) and the audit signing key (`SIGNING_KEY_FILE`).

use std::io::Write;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

/// PKCS#8 v1 DER of an Ed25519 private key: this prefix, then the 32-byte seed (RFC 8410).
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read the key file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the operating system's random number generator failed")]
    Rng,
    #[error("the key file {path} does not hold an Ed25519 PKCS#8 private key in PEM")]
    Format { path: String },
}

/// Reads the Ed25519 seed in the key file at `path`; creates the file (mode 0600) with a new
/// random key when there is none. Returns the seed and whether the file was created.
pub fn load_or_create_seed(path: &Path) -> Result<([u8; 32], bool), KeyFileError> {
    let shown = path.display().to_string();
    let io = |source| KeyFileError::Io {
        path: shown.clone(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => return Ok((seed_from_pem(&text, &shown)?, false)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(io(error)),
    }
    let mut seed = [0u8; 32];
    rand::TryRngCore::try_fill_bytes(&mut rand::rngs::OsRng, &mut seed)
        .map_err(|_| KeyFileError::Rng)?;
    // Written under a name of its own, then linked into place: a concurrent start either
    // links first or reads the complete file of the one that did.
    let staging = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&staging).and_then(|mut file| {
        file.write_all(to_pem(&seed).as_bytes())?;
        file.sync_all()
    });
    let linked = written.and_then(|()| std::fs::hard_link(&staging, path));
    let _ = std::fs::remove_file(&staging);
    match linked {
        Ok(()) => Ok((seed, true)),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = std::fs::read_to_string(path).map_err(io)?;
            Ok((seed_from_pem(&text, &shown)?, false))
        }
        Err(error) => Err(io(error)),
    }
}

fn seed_from_pem(text: &str, shown: &str) -> Result<[u8; 32], KeyFileError> {
    let format = || KeyFileError::Format {
        path: shown.to_owned(),
    };
    let body: String = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with("-----"))
        .collect();
    if !text.contains("-----BEGIN PRIVATE KEY-----") {
        return Err(format());
    }
    let der = STANDARD.decode(body).map_err(|_| format())?;
    if der.len() != 48 || der[..16] != PKCS8_ED25519_PREFIX {
        return Err(format());
    }
    let mut seed = [0u8; 32];
    seed.copy_from_slice(&der[16..]);
    Ok(seed)
}

/// The PKCS#8 DER of a seed (what `EncodingKey::from_ed_der` takes).
pub fn pkcs8_der(seed: &[u8; 32]) -> Vec<u8> {
    let mut der = PKCS8_ED25519_PREFIX.to_vec();
    der.extend_from_slice(seed);
    der
}

/// The PEM text of a seed's key file.
pub fn to_pem(seed: &[u8; 32]) -> String {
    let encoded = STANDARD.encode(pkcs8_der(seed));
    format!("-----BEGIN PRIVATE KEY-----\n{encoded}\n-----END PRIVATE KEY-----\n")
}

/// The public key as the `x` of an OKP JWK (base64url, no padding).
pub fn jwk_x(public: &[u8; 32]) -> String {
    URL_SAFE_NO_PAD.encode(public)
}

/// The key's id: its RFC 7638 JWK thumbprint (the required members in lexicographic order, no
/// whitespace, SHA-256, base64url).
pub fn thumbprint(x: &str) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}
