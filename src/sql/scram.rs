//! SCRAM-SHA-256 password verifiers (RFC 5802/7677), computed client-side
//! the way libpq's `PQencryptPasswordConn` does, so the clear-text password
//! never reaches the server, its logs or `pg_stat_statements`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use rand::RngExt;
use sha2::{Digest, Sha256};

/// PostgreSQL's default iteration count (`scram_iterations`).
pub const ITERATIONS: u32 = 4096;

/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier(String);

impl ScramVerifier {
    /// A verifier for `password` with a fresh random salt.
    pub fn generate(password: &str) -> Self {
        let salt: [u8; 16] = rand::rng().random();
        Self::with_salt(password, &salt, ITERATIONS)
    }

    fn with_salt(password: &str, salt: &[u8], iterations: u32) -> Self {
        // Generated passwords are ASCII, for which SASLprep is the identity;
        // PostgreSQL, like libpq, uses the raw bytes when SASLprep fails.
        let salted = pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password.as_bytes(), salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key = Sha256::digest(client_key);
        let server_key = hmac(&salted, b"Server Key");
        Self(format!(
            "SCRAM-SHA-256${iterations}:{}${}:{}",
            STANDARD.encode(salt),
            STANDARD.encode(stored_key),
            STANDARD.encode(server_key)
        ))
    }

    /// A verifier as stored in `pg_authid.rolpassword`, if it is one.
    pub fn from_stored(stored: &str) -> Option<Self> {
        stored
            .starts_with("SCRAM-SHA-256$")
            .then(|| Self(stored.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `password` matches this verifier, as the server would decide.
    pub fn matches(&self, password: &str) -> bool {
        let parse = || -> Option<bool> {
            let rest = self.0.strip_prefix("SCRAM-SHA-256$")?;
            let (params, _keys) = rest.split_once('$')?;
            let (iterations, salt) = params.split_once(':')?;
            let salt = STANDARD.decode(salt).ok()?;
            Some(Self::with_salt(password, &salt, iterations.parse().ok()?) == *self)
        };
        parse().unwrap_or(false)
    }
}

impl std::fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramVerifier(<redacted>)")
    }
}

fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_its_own_password_only() {
        let verifier = ScramVerifier::generate("s3cret-password");
        assert!(verifier.matches("s3cret-password"));
        assert!(!verifier.matches("s3cret-passwore"));
        assert_ne!(
            verifier,
            ScramVerifier::generate("s3cret-password"),
            "fresh salt each time"
        );
    }
}
