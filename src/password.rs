//! Generating passwords: 32+ characters from the operating system's
//! cryptographically secure generator (through `rand`'s thread RNG, a CSPRNG
//! seeded and reseeded from the OS).

use rand::RngExt;
use rand::distr::Alphanumeric;

/// Length of every password tenantdb generates: 40 alphanumeric characters,
/// about 238 bits of entropy, and safe in URLs, shells and YAML unquoted.
pub const PASSWORD_LENGTH: usize = 40;

/// A new random password, wrapped so it cannot leak through `Debug`.
pub fn generate_password() -> crate::admin_access::Password {
    crate::admin_access::Password::new(generate())
}

/// A new random password of [`PASSWORD_LENGTH`] alphanumeric characters.
pub fn generate() -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(PASSWORD_LENGTH)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_long_alphanumeric_and_distinct() {
        let a = generate();
        let b = generate();
        assert_eq!(a.len(), PASSWORD_LENGTH);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }
}
