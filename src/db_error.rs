//! What a PostgreSQL client error means, in one line a person can act on:
//! which of refused, timed out, host not found, TLS or authentication it
//! was (for a connection), or the server's own message with its detail and
//! hint (for a statement) — never sqlx's chain of wrappers, and never the
//! PostgreSQL source line that `PgDatabaseError`'s Display appends. No I/O.

use std::io::ErrorKind;

/// One line saying what went wrong with `error`, for `what` (e.g.
/// `127.0.0.1:5432`) — the address is named for connection failures.
pub fn describe(error: &sqlx::Error, address: &str) -> String {
    match error {
        sqlx::Error::Database(db) => {
            let mut line = db.message().to_owned();
            if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                if let Some(detail) = pg.detail() {
                    line.push_str(&format!(" ({detail})"));
                }
                if let Some(hint) = pg.hint() {
                    line.push_str(&format!("; hint: {hint}"));
                }
            }
            match db.code().as_deref() {
                Some("28P01" | "28000") => format!(
                    "{line} — check the username and password (the admin Secret, or --admin-url) and pg_hba.conf"
                ),
                Some("3D000") => format!("{line} — check the database name (spec.maintenanceDatabase)"),
                Some("53300") => format!("{line} — the server has no connection slot left (max_connections)"),
                _ => line,
            }
        }
        sqlx::Error::Io(io) => match io.kind() {
            ErrorKind::ConnectionRefused => format!(
                "connection to {address} refused: nothing listens there — is PostgreSQL running, and are the host and port right?"
            ),
            ErrorKind::TimedOut => format!(
                "no answer from {address} ({io}) — a firewall dropping packets, a wrong address, or a hung server"
            ),
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::UnexpectedEof => {
                format!(
                    "{address} closed the connection ({io}) — the server restarted, or something in between cut it"
                )
            }
            ErrorKind::NotFound => format!("host of {address} not found ({io}) — check the host name"),
            _ if is_lookup_failure(&io.to_string()) => {
                format!("host of {address} not found ({io}) — check the host name")
            }
            _ => format!("{address}: {io}"),
        },
        sqlx::Error::Tls(tls) => {
            format!("TLS with {address} failed: {tls} — check spec.sslMode and the CA (spec.caSecretRef)")
        }
        sqlx::Error::PoolTimedOut => format!(
            "no connection to {address} became available within the pool's timeout — the server may be down or out of connections"
        ),
        other => other.to_string(),
    }
}

/// Whether an I/O error's text is a failed host name lookup (the resolver
/// reports those as uncategorised errors).
fn is_lookup_failure(text: &str) -> bool {
    let text = text.to_ascii_lowercase();
    [
        "failed to lookup address",
        "name or service not known",
        "no address associated",
        "nodename nor servname",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(kind: ErrorKind, text: &str) -> sqlx::Error {
        sqlx::Error::Io(std::io::Error::new(kind, text.to_owned()))
    }

    #[test]
    fn each_connection_failure_says_which_it_was_and_where() {
        let at = "db.example:5432";
        let refused = describe(
            &io(ErrorKind::ConnectionRefused, "Connection refused (os error 111)"),
            at,
        );
        assert!(
            refused.starts_with("connection to db.example:5432 refused"),
            "{refused}"
        );
        let silent = describe(&io(ErrorKind::TimedOut, "connecting took longer than 10s"), at);
        assert!(silent.starts_with("no answer from db.example:5432"), "{silent}");
        let dns = describe(
            &io(
                ErrorKind::Other,
                "failed to lookup address information: Name or service not known",
            ),
            at,
        );
        assert!(dns.starts_with("host of db.example:5432 not found"), "{dns}");
        let tls = describe(&sqlx::Error::Tls("unknown issuer".into()), at);
        assert!(
            tls.starts_with("TLS with db.example:5432 failed: unknown issuer"),
            "{tls}"
        );
    }
}
