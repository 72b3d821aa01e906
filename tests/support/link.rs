//! A TCP link a test can break: it forwards loopback connections to a
//! target (kube-apiserver, PostgreSQL) until [`Link::cut`] drops every open
//! connection and refuses new ones, or [`Link::blackhole`] makes every
//! connection hang — open ones stop delivering bytes, new ones are accepted
//! and never answered — as a silent network does; [`Link::heal`] lets
//! traffic through again (bytes held by a blackhole are delivered then, as
//! TCP's retransmissions would). A network fault between one client and its
//! server, with nothing restarted on either side.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Open,
    Cut,
    Blackhole,
}

pub struct Link {
    pub addr: SocketAddr,
    state: watch::Sender<State>,
    accepting: tokio::task::JoinHandle<()>,
}

impl Link {
    pub async fn to(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (state, watching) = watch::channel(State::Open);
        let accepting = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *watching.borrow() == State::Cut {
                    continue; // dropped: the client sees the connection close
                }
                let mut state = watching.clone();
                tokio::spawn(async move {
                    // A connection made into a blackhole waits for the heal.
                    match state.wait_for(|s| *s != State::Blackhole).await.map(|s| *s) {
                        Ok(State::Open) => {}
                        _ => return,
                    }
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::select! {
                        _ = forward(client_read, server_write, state.clone()) => {}
                        _ = forward(server_read, client_write, state.clone()) => {}
                        _ = state.wait_for(|s| *s == State::Cut) => {}
                    }
                });
            }
        });
        Self {
            addr,
            state,
            accepting,
        }
    }

    /// Drops every connection through the link and refuses new ones.
    pub fn cut(&self) {
        self.state.send_replace(State::Cut);
    }

    /// Makes every connection through the link hang, new ones included.
    pub fn blackhole(&self) {
        self.state.send_replace(State::Blackhole);
    }

    pub fn heal(&self) {
        self.state.send_replace(State::Open);
    }
}

/// Copies `from` to `to` chunk by chunk; a chunk read while the link is a
/// blackhole is held until it heals. Ends at EOF, an error, or a cut.
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut state: watch::Receiver<State>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        match state.wait_for(|s| *s != State::Blackhole).await.map(|s| *s) {
            Ok(State::Open) => {}
            _ => return,
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}
