//! Validated SQL identifiers, always rendered double-quoted.

use std::fmt;

use crate::api::common::PG_IDENTIFIER_MAX_BYTES;

/// An identifier that is safe to splice into SQL: 1 to 63 bytes of ASCII
/// letters, digits, `_` and `$`, not starting with a digit or `$`. It is
/// still always rendered quoted, so case is kept exactly and keywords
/// (`user`, `order`) are fine.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ident(String);

/// Why a string is not an acceptable identifier.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdentError {
    #[error("must not be empty")]
    Empty,
    #[error("is {0} bytes; PostgreSQL identifiers are at most 63 bytes")]
    TooLong(usize),
    #[error("contains {0:?}; only ASCII letters, digits, '_' and '$' are allowed")]
    BadCharacter(char),
    #[error("must start with a letter or '_'")]
    BadStart,
}

impl Ident {
    pub fn parse(name: &str) -> Result<Self, IdentError> {
        let Some(first) = name.chars().next() else {
            return Err(IdentError::Empty);
        };
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '$'))
        {
            return Err(IdentError::BadCharacter(bad));
        }
        if name.len() > PG_IDENTIFIER_MAX_BYTES {
            return Err(IdentError::TooLong(name.len()));
        }
        if !(first.is_ascii_alphabetic() || first == '_') {
            return Err(IdentError::BadStart);
        }
        Ok(Self(name.to_owned()))
    }

    /// An extension name: like [`Ident::parse`], but `-` is allowed too
    /// (`uuid-ossp`), which the quoting makes safe.
    pub fn parse_extension(name: &str) -> Result<Self, IdentError> {
        Self::parse(&name.replace('-', "_")).map(|_| Self(name.to_owned()))
    }

    /// The name as PostgreSQL stores it (unquoted), e.g. for bound parameters.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Ident {
    /// The quoted form. Validation leaves no `"` to escape.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names_and_quotes_them() {
        assert_eq!(
            Ident::parse("tenant_acme").unwrap().to_string(),
            "\"tenant_acme\""
        );
        assert_eq!(Ident::parse("User").unwrap().to_string(), "\"User\"");
        assert_eq!(Ident::parse(&"a".repeat(63)).unwrap().as_str().len(), 63);
    }

    #[test]
    fn refuses_hostile_names() {
        for (name, expected) in [
            ("", IdentError::Empty),
            ("a\"b", IdentError::BadCharacter('"')),
            ("a;drop", IdentError::BadCharacter(';')),
            ("a b", IdentError::BadCharacter(' ')),
            ("a\0b", IdentError::BadCharacter('\0')),
            ("a--b", IdentError::BadCharacter('-')),
            ("аcme", IdentError::BadCharacter('а')), // Cyrillic а
            ("1abc", IdentError::BadStart),
            ("$abc", IdentError::BadStart),
        ] {
            assert_eq!(Ident::parse(name), Err(expected), "{name:?}");
        }
        assert_eq!(Ident::parse(&"a".repeat(64)), Err(IdentError::TooLong(64)));
    }
}
