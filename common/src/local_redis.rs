//! Start a throwaway local `redis-server` (or a Redis Cluster) for benchmarks and the demo.
//!
//! `conftag bench fleet` measures Redis itself, so it starts a fresh server (or a 3-master
//! cluster) per run instead of writing to whatever `--redis-url` points at; that is a
//! product feature, so the launcher lives here and not with the test fixtures. The test
//! suites reuse it through the dev-only `conftag-testkit` crate, which adds the test presets
//! (`appendfsync always`, kill and restart on the same data directory).
//!
//! Every server binds 127.0.0.1 on its own port with its own data directory and is killed
//! (SIGKILL) when dropped. Needs `redis-server` (and `redis-cli` for a cluster) on the PATH.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback TCP port (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// The AOF `appendfsync` policy of a local server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendFsync {
    /// Every write is on disk before Redis answers: nothing acknowledged is lost to a SIGKILL.
    Always,
    /// Redis's default, what production servers run (benchmarks use it).
    EverySec,
}

impl AppendFsync {
    fn as_arg(self) -> &'static str {
        match self {
            AppendFsync::Always => "always",
            AppendFsync::EverySec => "everysec",
        }
    }
}

/// Certificate files for a TLS-only server (PEM), handed to `redis-server` as they are.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by this CA (`tls-auth-clients yes`).
    pub client_ca: Option<PathBuf>,
}

/// How to start a [`RedisServer`].
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `None`: a free port.
    pub port: Option<u16>,
    /// `None`: a fresh directory under the system temp dir, removed on drop. A given
    /// directory is created if missing and kept.
    pub dir: Option<PathBuf>,
    pub aof: bool,
    pub fsync: AppendFsync,
    /// `requirepass`.
    pub password: Option<String>,
    /// TLS only (no plain-TCP port); the URL becomes `rediss://`.
    pub tls: Option<ServerTls>,
    /// `maxclients` (Redis's default 10,000 is below a fleet of 5,000 workers with two
    /// connections each).
    pub maxclients: Option<u32>,
}

impl Default for RedisOptions {
    /// AOF on with `appendfsync always`, a free port, a fresh temp dir.
    fn default() -> Self {
        Self {
            port: None,
            dir: None,
            aof: true,
            fsync: AppendFsync::Always,
            password: None,
            tls: None,
            maxclients: None,
        }
    }
}

/// A `redis-server` child process, killed (and its temp dir removed) when dropped.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    owns_dir: bool,
    url: String,
}

impl RedisServer {
    /// A server for benchmarks: AOF on with `appendfsync everysec` (Redis's default), room
    /// for 19,000 clients (as far as the open-file limit allows), in a fresh temp dir.
    pub fn start_everysec() -> std::io::Result<Self> {
        Self::start_with_options(&RedisOptions {
            fsync: AppendFsync::EverySec,
            maxclients: Some(19_000),
            ..RedisOptions::default()
        })
    }

    /// Start a server as `options` say and wait until it accepts connections (10 s at most);
    /// a server that refuses its configuration (a bad TLS file, say) is an error with the
    /// last lines of its log.
    pub fn start_with_options(options: &RedisOptions) -> std::io::Result<Self> {
        let port = options.port.unwrap_or_else(free_port);
        let (dir, owns_dir) = match &options.dir {
            Some(d) => (d.clone(), false),
            None => (
                std::env::temp_dir().join(format!("conftag-redis-{}", uuid::Uuid::new_v4())),
                true,
            ),
        };
        std::fs::create_dir_all(&dir)?;
        let scheme = if options.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        let url = match &options.password {
            Some(p) => format!("{scheme}://:{p}@127.0.0.1:{port}"),
            None => format!("{scheme}://127.0.0.1:{port}"),
        };
        let mut server = Self {
            child: None,
            port,
            dir,
            owns_dir,
            url,
        };
        server.child = Some(spawn(options, port, &server.dir)?);
        server.wait_ready(Duration::from_secs(10))?;
        Ok(server)
    }

    fn wait_ready(&mut self, timeout: Duration) -> std::io::Result<()> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                // Drain the log so the server never blocks on a full pipe.
                if let Some(mut out) = self.child.as_mut().and_then(|c| c.stdout.take()) {
                    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
                }
                return Ok(());
            }
            if let Some(mut child) = self.child.take_if(|c| matches!(c.try_wait(), Ok(Some(_)))) {
                let mut log = String::new();
                if let Some(mut out) = child.stdout.take() {
                    use std::io::Read;
                    let _ = out.read_to_string(&mut log);
                }
                return Err(std::io::Error::other(format!(
                    "redis-server exited at start: {}",
                    log.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
                )));
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

    /// `redis://[:PASSWORD@]127.0.0.1:PORT` (`rediss://` with TLS).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn spawn(options: &RedisOptions, port: u16, dir: &Path) -> std::io::Result<Child> {
    let mut cmd = Command::new("redis-server");
    match &options.tls {
        None => {
            cmd.arg("--port").arg(port.to_string());
        }
        Some(tls) => {
            cmd.args(["--port", "0", "--tls-port"])
                .arg(port.to_string())
                .arg("--tls-cert-file")
                .arg(&tls.cert)
                .arg("--tls-key-file")
                .arg(&tls.key);
            match &tls.client_ca {
                Some(ca) => cmd
                    .arg("--tls-ca-cert-file")
                    .arg(ca)
                    .args(["--tls-auth-clients", "yes"]),
                None => cmd.args(["--tls-auth-clients", "no"]),
            };
        }
    }
    cmd.arg("--bind")
        .arg("127.0.0.1")
        .arg("--dir")
        .arg(dir)
        .arg("--save")
        .arg("")
        .arg("--appendonly")
        .arg(if options.aof { "yes" } else { "no" })
        .arg("--appendfsync")
        .arg(options.fsync.as_arg())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(p) = &options.password {
        cmd.arg("--requirepass").arg(p);
    }
    if let Some(n) = options.maxclients {
        cmd.arg("--maxclients").arg(n.to_string());
    }
    cmd.spawn().map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot start redis-server (is it installed?): {e}"),
        )
    })
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if self.owns_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A Redis Cluster of `n` masters on loopback (no replicas), each a `redis-server` child.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<Child>,
    ports: Vec<u16>,
    dir: PathBuf,
}

impl RedisCluster {
    /// Start `n` nodes (AOF on), join them with `redis-cli --cluster create` and wait until
    /// every node reports `cluster_state:ok`.
    pub fn start(n: usize) -> std::io::Result<Self> {
        let dir = std::env::temp_dir().join(format!("conftag-cluster-{}", uuid::Uuid::new_v4()));
        let mut cluster = Self {
            nodes: Vec::new(),
            ports: Vec::new(),
            dir,
        };
        for i in 0..n {
            let port = free_port();
            let node_dir = cluster.dir.join(format!("node{i}"));
            std::fs::create_dir_all(&node_dir)?;
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .arg("--dir")
                .arg(&node_dir)
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--appendonly",
                    "yes",
                    "--save",
                    "",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            cluster.nodes.push(child);
            cluster.ports.push(port);
            let start = Instant::now();
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                if start.elapsed() > Duration::from_secs(10) {
                    return Err(std::io::Error::other("cluster node did not start"));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for p in &cluster.ports {
            create.arg(format!("127.0.0.1:{p}"));
        }
        let out = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()?;
        if !out.status.success() {
            return Err(std::io::Error::other(format!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&out.stdout)
            )));
        }
        let start = Instant::now();
        loop {
            let ok = cluster.ports.iter().all(|p| {
                Command::new("redis-cli")
                    .args(["-p", &p.to_string(), "cluster", "info"])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
                    .unwrap_or(false)
            });
            if ok {
                break;
            }
            if start.elapsed() > Duration::from_secs(20) {
                return Err(std::io::Error::other(
                    "cluster did not reach cluster_state:ok",
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(cluster)
    }

    /// The masters' ports (to reach one node directly, e.g. for `INFO`).
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,…`
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for c in &mut self.nodes {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
