//! Password hashing: argon2id with OWASP's parameters (m = 19456 KiB, t = 2, p = 1), run on
//! the blocking pool so an async worker never spends ~tens of ms hashing.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::OnceCell;

pub const MIN_PASSWORD_CHARS: usize = 8;
pub const MAX_PASSWORD_CHARS: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("argon2: {0}")]
    Hash(String),
    #[error("the hashing task failed: {0}")]
    Task(String),
}

fn argon2id() -> Result<Argon2<'static>, PasswordError> {
    let params = Params::new(19_456, 2, 1, None).map_err(|e| PasswordError::Hash(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// A new password must have 8 to 256 characters.
pub fn check_new(password: &str) -> Result<(), String> {
    let chars = password.chars().count();
    if !(MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&chars) {
        return Err(format!(
            "must have {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters"
        ));
    }
    Ok(())
}

/// The PHC string of `password` with a fresh salt.
pub async fn hash(password: String) -> Result<String, PasswordError> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        argon2id()?
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|e| PasswordError::Hash(e.to_string()))
    })
    .await
    .map_err(|e| PasswordError::Task(e.to_string()))?
}

/// Whether `password` matches the PHC string `phc` (with the parameters the string names).
pub async fn verify(password: String, phc: String) -> Result<bool, PasswordError> {
    tokio::task::spawn_blocking(move || {
        let parsed = PasswordHash::new(&phc).map_err(|e| PasswordError::Hash(e.to_string()))?;
        Ok(argon2id()?
            .verify_password(password.as_bytes(), &parsed)
            .is_ok())
    })
    .await
    .map_err(|e| PasswordError::Task(e.to_string()))?
}

/// A hash of a password nobody knows: verified against when the email is unknown, so an
/// unknown email costs the same time as a wrong password.
pub async fn dummy_hash() -> Result<&'static str, PasswordError> {
    static DUMMY: OnceCell<String> = OnceCell::const_new();
    DUMMY
        .get_or_try_init(|| hash(uuid::Uuid::new_v4().to_string()))
        .await
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_password_verifies_against_its_own_argon2id_hash_only() {
        let phc = hash("correct horse".into()).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(!phc.contains("correct horse"));
        assert!(verify("correct horse".into(), phc.clone()).await.unwrap());
        assert!(!verify("correct horsE".into(), phc).await.unwrap());
    }

    #[test]
    fn a_new_password_has_eight_to_256_characters() {
        assert!(check_new("1234567").is_err());
        assert!(check_new("12345678").is_ok());
        assert!(check_new(&"x".repeat(257)).is_err());
    }
}
