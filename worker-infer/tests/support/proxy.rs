//! A TCP proxy between workers and Redis that can make Redis unreachable on demand: an
//! outage drops every live connection at once and, for its duration, closes each new one as
//! soon as it is accepted (what a worker sees when a network path or a load balancer goes
//! away). Redis itself keeps running, so an outage tests the workers' reconnects and lease
//! handling, not Redis durability (that is what restarting Redis is for).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Debug)]
struct State {
    upstream: SocketAddr,
    /// Refuse connections until then.
    down_until: Mutex<Option<Instant>>,
    /// Cancelled to drop every connection opened before an outage.
    generation: Mutex<CancellationToken>,
    accepted: AtomicU64,
    refused: AtomicU64,
    cut: AtomicU64,
}

/// A running proxy; it stops when dropped.
#[derive(Debug)]
pub struct RedisProxy {
    addr: SocketAddr,
    state: Arc<State>,
    stop: CancellationToken,
}

/// What the proxy did, for the test's summary.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProxyCounts {
    pub accepted: u64,
    /// Connections closed on arrival during an outage.
    pub refused: u64,
    /// Live connections dropped when an outage began.
    pub cut: u64,
}

impl RedisProxy {
    /// Listen on a free loopback port and forward to `127.0.0.1:upstream_port`.
    pub async fn start(upstream_port: u16) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            upstream: SocketAddr::from(([127, 0, 0, 1], upstream_port)),
            down_until: Mutex::new(None),
            generation: Mutex::new(CancellationToken::new()),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            cut: AtomicU64::new(0),
        });
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, state.clone(), stop.clone()));
        Ok(Self { addr, state, stop })
    }

    /// `redis://127.0.0.1:PORT` of the proxy.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Drop every live connection now and refuse new ones for `length`.
    pub fn outage(&self, length: Duration) {
        *self.state.down_until.lock().unwrap() = Some(Instant::now() + length);
        let old = std::mem::replace(
            &mut *self.state.generation.lock().unwrap(),
            CancellationToken::new(),
        );
        old.cancel();
    }

    pub fn counts(&self) -> ProxyCounts {
        ProxyCounts {
            accepted: self.state.accepted.load(Ordering::Relaxed),
            refused: self.state.refused.load(Ordering::Relaxed),
            cut: self.state.cut.load(Ordering::Relaxed),
        }
    }
}

impl Drop for RedisProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.state.generation.lock().unwrap().cancel();
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>, stop: CancellationToken) {
    loop {
        let client = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(_) => continue,
            },
        };
        let down = state
            .down_until
            .lock()
            .unwrap()
            .is_some_and(|t| t > Instant::now());
        if down {
            state.refused.fetch_add(1, Ordering::Relaxed);
            drop(client);
            continue;
        }
        state.accepted.fetch_add(1, Ordering::Relaxed);
        let generation = state.generation.lock().unwrap().clone();
        tokio::spawn(forward(client, state.clone(), generation));
    }
}

async fn forward(mut client: TcpStream, state: Arc<State>, generation: CancellationToken) {
    let connect = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(state.upstream));
    // Redis down (restarting): close the client's connection, as Redis would refuse it.
    let Ok(Ok(mut upstream)) = connect.await else {
        return;
    };
    tokio::select! {
        _ = generation.cancelled() => {
            state.cut.fetch_add(1, Ordering::Relaxed);
        }
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
    }
    // Both sockets close here: the worker sees its connection drop mid-flight.
}
