//! Real `redis-server` processes for tests, benchmarks and the local demo: each on a free
//! port with its own data directory, killed when dropped. Never a mock.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` child process.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    aof: bool,
    password: Option<String>,
    owns_dir: bool,
}

/// A free loopback TCP port (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

impl RedisServer {
    /// Start a server with AOF on (`appendfsync always`) in a fresh temp dir.
    pub fn start() -> std::io::Result<Self> {
        Self::start_with(true, None)
    }

    pub fn start_with(aof: bool, password: Option<&str>) -> std::io::Result<Self> {
        let dir = std::env::temp_dir().join(format!("conftag-redis-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir)?;
        let mut s = Self {
            child: None,
            port: free_port(),
            dir,
            aof,
            password: password.map(str::to_owned),
            owns_dir: true,
        };
        s.spawn()?;
        Ok(s)
    }

    /// Start in a given data directory (kept on drop), e.g. for the demo.
    pub fn start_in(dir: &Path, port: u16, aof: bool) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut s = Self {
            child: None,
            port,
            dir: dir.to_owned(),
            aof,
            password: None,
            owns_dir: false,
        };
        s.spawn()?;
        Ok(s)
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(&self.dir)
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg(if self.aof { "yes" } else { "no" })
            .arg("--appendfsync")
            .arg("always")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(p) = &self.password {
            cmd.arg("--requirepass").arg(p);
        }
        let child = cmd.spawn().map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot start redis-server (is it installed?): {e}"),
            )
        })?;
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(10))
    }

    fn wait_ready(&self, timeout: Duration) -> std::io::Result<()> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(std::io::Error::other(
            "redis-server did not start listening",
        ))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Kill the server hard (SIGKILL): whatever AOF holds is what survives.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again on the same port and data dir (after [`kill`](Self::kill)).
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.kill();
        self.spawn()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        if self.owns_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
