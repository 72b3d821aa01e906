//! The only module that builds SQL text at run time.
//!
//! PostgreSQL's utility statements (CREATE ROLE, CREATE DATABASE, ALTER …)
//! take no bind parameters, so names and the few literals they need are
//! rendered here, and only here: every name through [`Ident`] (validated,
//! then always double-quoted), every password as a SCRAM verifier (never the
//! clear text, so a statement log cannot leak it). Everything else is a
//! static query with bound values.

pub mod expression;
mod ident;
pub mod index;
pub mod scram;
pub mod statements;

pub use ident::{Ident, IdentError};
pub use scram::ScramVerifier;

/// A statement rendered here, ready for `sqlx::query`.
pub type Statement = sqlx::AssertSqlSafe<String>;

/// `'text'` as a standard-conforming string literal. Callers pass only
/// values that are not secrets and that this module produced or validated.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `CREATE ROLE` for the administrative role tenantdb itself logs in as:
/// LOGIN, CREATEDB and CREATEROLE, and no superuser.
pub fn create_admin_role(role: &Ident, password: &ScramVerifier) -> Statement {
    sqlx::AssertSqlSafe(format!(
        "CREATE ROLE {role} LOGIN CREATEDB CREATEROLE PASSWORD {}",
        literal(password.as_str())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_double_single_quotes() {
        assert_eq!(literal("it's"), "'it''s'");
    }

    #[test]
    fn admin_role_statement_holds_the_verifier_not_the_password() {
        let verifier = ScramVerifier::generate("correct horse battery staple");
        let sql = create_admin_role(&Ident::parse("tenantdb_admin").unwrap(), &verifier).0;
        assert!(sql.starts_with(
            "CREATE ROLE \"tenantdb_admin\" LOGIN CREATEDB CREATEROLE PASSWORD 'SCRAM-SHA-256$4096:"
        ));
        assert!(!sql.contains("correct horse"));
    }
}
