//! Real `redis-server` processes for tests, never a mock: each on a free port with a data
//! directory of its own, AOF on with `appendfsync always` (nothing acknowledged is lost to a
//! SIGKILL), killed when dropped. [`RedisServer::kill`] and [`RedisServer::restart`] crash
//! and revive it on the same port and data, as the recovery tests need.

use std::path::Path;
use std::process::Command;

pub use common::local_redis::{free_port, RedisCluster, ServerTls};
use common::local_redis::{RedisOptions, RedisServer as LocalRedis};

/// A test's own `redis-server`.
#[derive(Debug)]
pub struct RedisServer {
    server: Option<LocalRedis>,
    options: RedisOptions,
    url: String,
    /// Removed on drop (after the server is killed) unless the caller gave the directory.
    _temp: Option<tempfile::TempDir>,
}

impl RedisServer {
    /// AOF on (`appendfsync always`), no password, a fresh temp dir.
    pub fn start() -> std::io::Result<Self> {
        Self::start_with(true, None)
    }

    pub fn start_with(aof: bool, password: Option<&str>) -> std::io::Result<Self> {
        Self::launch(RedisOptions {
            aof,
            password: password.map(str::to_owned),
            ..RedisOptions::default()
        })
    }

    /// A server that speaks only TLS (no plain-TCP port), AOF on; its [`url`](Self::url) is
    /// `rediss://127.0.0.1:PORT`.
    pub fn start_tls(tls: ServerTls, password: Option<&str>) -> std::io::Result<Self> {
        Self::launch(RedisOptions {
            tls: Some(tls),
            password: password.map(str::to_owned),
            ..RedisOptions::default()
        })
    }

    /// Start on a given port in a given data directory (kept on drop).
    pub fn start_in(dir: &Path, port: u16, aof: bool) -> std::io::Result<Self> {
        Self::launch(RedisOptions {
            dir: Some(dir.to_owned()),
            port: Some(port),
            aof,
            ..RedisOptions::default()
        })
    }

    fn launch(mut options: RedisOptions) -> std::io::Result<Self> {
        // Port and directory are fixed here, so that a restart finds the same server.
        let temp = match &options.dir {
            Some(_) => None,
            None => {
                let t = tempfile::Builder::new()
                    .prefix("conftag-redis-")
                    .tempdir()?;
                options.dir = Some(t.path().to_owned());
                Some(t)
            }
        };
        options.port = Some(options.port.unwrap_or_else(free_port));
        let server = LocalRedis::start_with_options(&options)?;
        Ok(Self {
            url: server.url(),
            server: Some(server),
            options,
            _temp: temp,
        })
    }

    pub fn port(&self) -> u16 {
        self.options.port.expect("fixed at start")
    }

    /// `redis://[:PASSWORD@]127.0.0.1:PORT` (`rediss://` with TLS); the same after a restart.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Kill the server hard (SIGKILL): whatever AOF holds is what survives.
    pub fn kill(&mut self) {
        self.server = None;
    }

    /// Start again on the same port and data dir (after [`kill`](Self::kill)).
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.kill();
        self.server = Some(LocalRedis::start_with_options(&self.options)?);
        Ok(())
    }

    /// `DBSIZE` through `redis-cli` (with the password, if any).
    pub fn dbsize(&self) -> u64 {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-p", &self.port().to_string()]);
        if let Some(p) = &self.options.password {
            cmd.args(["-a", p, "--no-auth-warning"]);
        }
        let out = cmd.arg("DBSIZE").output().expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("DBSIZE: {}", String::from_utf8_lossy(&out.stdout)))
    }
}
