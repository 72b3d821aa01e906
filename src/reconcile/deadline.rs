//! Client-side deadlines for calls on open admin connections. The pinned
//! `statement_timeout` and `lock_timeout` ([`crate::admin_session`]) bound
//! what the *server* does; they do nothing for a client whose server went
//! silent mid-call (a hung host, a network that drops packets without a
//! reset), which would otherwise wait for TCP to give up — a quarter of an
//! hour — holding the tenant's lock, an admin connection and a worker.
//! Every call the reconcile core makes on an open connection goes through
//! [`within`]; a call that runs out fails with a timeout error, and the
//! caller closes the connection instead of reusing it. A call that may
//! rightly take hours (an index build) is bounded instead by its server's
//! liveness ([`while_answering`]). I/O: timers, and the liveness check's
//! logins.

use std::future::Future;
use std::time::Duration;

/// Calls that answer in milliseconds unless the server is gone: catalog
/// reads, grants, comments, role changes, the tenant lock. Their only wait
/// on the server is for a lock, bounded there by the pinned `lock_timeout`
/// (10 s).
pub const ANSWER: Duration = Duration::from_secs(30);

/// Calls that may do real work on the server — CREATE/DROP DATABASE (a
/// checkpoint, a copy of the template), CREATE EXTENSION: the pinned
/// `statement_timeout` plus time for the server's own error to arrive.
pub const LONG: Duration = Duration::from_secs(300 + 30);

/// Runs `call`, failing with a timeout error (`std::io::ErrorKind::TimedOut`,
/// as sqlx reports its own) if the server has not answered within `limit`.
pub async fn within<T>(
    limit: Duration,
    call: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, sqlx::Error> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result,
        Err(_) => Err(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("the server did not answer within {} s", limit.as_secs()),
        ))),
    }
}

/// How often a long call's server is asked whether it is still there.
pub const LIVENESS_EVERY: Duration = ANSWER;

/// Runs `call`, which may rightly take hours (an index build), as long as
/// the server behind `options` keeps answering: every [`LIVENESS_EVERY`] a
/// fresh connection is tried on the side, and when no answer comes within
/// the connect timeout — not an error, which is an answer, but silence —
/// `call` is given up with a timeout error. A build is thereby bounded by
/// its server's liveness rather than by a duration.
pub async fn while_answering<T>(
    options: &sqlx::postgres::PgConnectOptions,
    call: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, sqlx::Error> {
    let mut call = std::pin::pin!(call);
    loop {
        tokio::select! {
            result = &mut call => return result,
            () = tokio::time::sleep(LIVENESS_EVERY) => {
                let checked = match crate::admin_access::connect(options).await {
                    Ok(conn) => within(ANSWER, sqlx::Connection::close(conn)).await,
                    Err(error) => Err(error),
                };
                if let Err(sqlx::Error::Io(io)) = checked
                    && io.kind() == std::io::ErrorKind::TimedOut
                {
                    return Err(sqlx::Error::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("the server stopped answering during a long call ({io})"),
                    )));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seconds(setting: &str) -> u64 {
        setting.strip_suffix('s').unwrap().parse().unwrap()
    }

    #[test]
    fn a_client_deadline_outlasts_what_the_server_may_take() {
        // The server's own error must arrive before the client gives up,
        // or a slow but healthy statement would be reported as silence.
        let statement = seconds(crate::admin_session::STATEMENT_TIMEOUT);
        let lock = seconds(crate::admin_session::LOCK_TIMEOUT);
        assert!(
            LONG.as_secs() > statement,
            "{LONG:?} vs statement_timeout {statement} s"
        );
        assert!(ANSWER.as_secs() > lock, "{ANSWER:?} vs lock_timeout {lock} s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_call_fails_with_a_timeout_at_its_deadline() {
        let silent = std::future::pending::<Result<(), sqlx::Error>>();
        let started = tokio::time::Instant::now();
        let error = within(ANSWER, silent).await.unwrap_err();
        assert_eq!(started.elapsed(), ANSWER);
        match error {
            sqlx::Error::Io(io) => {
                assert_eq!(io.kind(), std::io::ErrorKind::TimedOut);
                assert!(io.to_string().contains("did not answer within 30 s"), "{io}");
            }
            other => panic!("not a timeout: {other}"),
        }
        assert!(within(ANSWER, async { Ok(7) }).await.is_ok_and(|v| v == 7));
    }
}
