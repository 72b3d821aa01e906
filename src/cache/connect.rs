//! Connections to a Redis server, as its admin user or as a tenant, each
//! with a connect and a response deadline. Only opens connections: what is
//! sent over them is in `observe` and `apply`.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo,
    TlsCertificates,
};

use super::error::CacheError;

/// Where a Redis server listens, and how to talk to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    /// The CacheServer's name, for messages.
    pub server: String,
    pub host: String,
    pub port: u16,
    /// TLS, when the server asks for it (`spec.tls`).
    pub tls: Option<Tls>,
}

/// TLS to a Redis server: its certificate and host name verified against
/// `ca_pem` (PEM), or the system's CA certificates when `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tls {
    pub ca_pem: Option<Vec<u8>>,
}

impl Address {
    /// Where `server` listens, with TLS when its spec asks for it (the CA,
    /// which lives in a Secret, is the caller's to add: [`Tls::ca_pem`]).
    /// Host names are case-insensitive: one Redis is one address however
    /// it is spelled.
    pub fn of(server: &crate::api::CacheServer) -> Self {
        Address {
            server: kube::ResourceExt::name_any(server),
            host: server.spec.host.to_ascii_lowercase(),
            port: u16::try_from(server.spec.port).unwrap_or(6379),
            tls: server.spec.tls.as_ref().map(|_| Tls::default()),
        }
    }

    /// `redis` or `rediss` (TLS), for URLs.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "rediss" } else { "redis" }
    }
}

/// How long connecting and each reply may take.
pub const DEADLINE: Duration = Duration::from_secs(5);

/// A client for `address` that logs in as `user` with `password`. The
/// password goes into the handshake only; no error or log line carries it.
pub fn client(address: &Address, user: &str, password: &str) -> Result<Client, CacheError> {
    let addr = match &address.tls {
        None => ConnectionAddr::Tcp(address.host.clone(), address.port),
        Some(_) => ConnectionAddr::TcpTls {
            host: address.host.clone(),
            port: address.port,
            insecure: false,
            tls_params: None,
        },
    };
    let info: ConnectionInfo = addr
        .into_connection_info()
        .map_err(|e| CacheError::redis(&address.server, "connect", e))?
        .set_redis_settings(
            RedisConnectionInfo::default()
                .set_username(user)
                .set_password(password)
                // `CLIENT SETINFO` is not on a tenant's command list.
                .set_skip_set_lib_name(),
        );
    let client = match &address.tls {
        Some(Tls { ca_pem: Some(pem) }) => Client::build_with_tls(
            info,
            TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            },
        ),
        _ => Client::open(info),
    };
    client.map_err(|e| CacheError::redis(&address.server, "connect", e))
}

/// A connection to `address` logged in as `user` with `password`, with
/// [`DEADLINE`] for connecting and for every reply.
pub async fn connect(
    address: &Address,
    user: &str,
    password: &str,
) -> Result<MultiplexedConnection, CacheError> {
    let client = client(address, user, password)?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(DEADLINE))
        .set_response_timeout(Some(DEADLINE));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| CacheError::redis(&address.server, &format!("log in as {user}"), e))
}
