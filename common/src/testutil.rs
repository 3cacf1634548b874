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
    tls: Option<ServerTls>,
    /// `appendfsync` policy: `always` for the tests (nothing acknowledged is lost),
    /// `everysec` for benchmarks (Redis's default, what production servers run).
    fsync: &'static str,
    /// `maxclients` (the default 10,000 is below a fleet of 5,000 workers with two
    /// connections each).
    maxclients: Option<u32>,
}

/// Certificate files for a TLS-only test server (PEM). The test makes them (e.g. with
/// `rcgen`); this module only hands them to `redis-server`.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by this CA (`tls-auth-clients yes`).
    pub client_ca: Option<PathBuf>,
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
        Self::start_in_temp_dir(aof, password, None)
    }

    /// Start a server for benchmarks: AOF on with `appendfsync everysec` (Redis's default),
    /// room for 19,000 clients (as far as the open-file limit allows), in a fresh temp dir.
    pub fn start_everysec() -> std::io::Result<Self> {
        let mut s = Self::unstarted_in_temp_dir(true, None, None)?;
        s.fsync = "everysec";
        s.maxclients = Some(19_000);
        s.spawn()?;
        Ok(s)
    }

    /// Start a server that speaks only TLS (no plain-TCP port), AOF on; its
    /// [`url`](Self::url) is `rediss://127.0.0.1:PORT`.
    pub fn start_tls(tls: ServerTls, password: Option<&str>) -> std::io::Result<Self> {
        Self::start_in_temp_dir(true, password, Some(tls))
    }

    fn start_in_temp_dir(
        aof: bool,
        password: Option<&str>,
        tls: Option<ServerTls>,
    ) -> std::io::Result<Self> {
        let mut s = Self::unstarted_in_temp_dir(aof, password, tls)?;
        s.spawn()?;
        Ok(s)
    }

    fn unstarted_in_temp_dir(
        aof: bool,
        password: Option<&str>,
        tls: Option<ServerTls>,
    ) -> std::io::Result<Self> {
        let dir = std::env::temp_dir().join(format!("conftag-redis-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self {
            child: None,
            port: free_port(),
            dir,
            aof,
            password: password.map(str::to_owned),
            owns_dir: true,
            tls,
            fsync: "always",
            maxclients: None,
        })
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
            tls: None,
            fsync: "always",
            maxclients: None,
        };
        s.spawn()?;
        Ok(s)
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let mut cmd = Command::new("redis-server");
        match &self.tls {
            None => {
                cmd.arg("--port").arg(self.port.to_string());
            }
            Some(tls) => {
                cmd.args(["--port", "0", "--tls-port"])
                    .arg(self.port.to_string())
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
            .arg(&self.dir)
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg(if self.aof { "yes" } else { "no" })
            .arg("--appendfsync")
            .arg(self.fsync)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(p) = &self.password {
            cmd.arg("--requirepass").arg(p);
        }
        if let Some(n) = self.maxclients {
            cmd.arg("--maxclients").arg(n.to_string());
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
            // A server that refused its configuration (a bad TLS file, say) says why.
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

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        match &self.password {
            Some(p) => format!("{scheme}://:{p}@127.0.0.1:{}", self.port),
            None => format!("{scheme}://127.0.0.1:{}", self.port),
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

/// A Redis Cluster of `n` masters on loopback (no replicas), each a `redis-server` child.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<Child>,
    ports: Vec<u16>,
    dir: PathBuf,
}

impl RedisCluster {
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
        // Wait until every node agrees the cluster is up.
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

/// The byte range an HTTP `Range: bytes=A-B` header asks of a body of `len` bytes (the whole
/// body without one), for the test servers that stand in for the Hugging Face hub.
pub fn byte_range(range_header: Option<&str>, len: usize) -> (usize, usize) {
    let (a, b) = range_header
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split_once('-'))
        .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)))
        .unwrap_or((0, len.saturating_sub(1)));
    (a, b.min(len.saturating_sub(1)))
}

/// `n` made-up BoolQ-shaped rows (answer `true` on even indices), for tests and benchmarks
/// of the queue, where the content does not matter.
pub fn synthetic_rows(n: u64) -> Vec<crate::dataset::InputRow> {
    (0..n)
        .map(|i| crate::dataset::InputRow {
            index: i,
            question: format!("question {i}"),
            prompt: format!("Read the passage and answer. Passage: text {i}. Question: q{i}?"),
            correct_answer: serde_json::Value::Bool(i % 2 == 0),
            options: None,
            answer_letter: None,
            id: None,
            max_tokens: None,
        })
        .collect()
}

/// `GET /metrics` from a process started with `--metrics-addr` (plain HTTP/1.0, no client
/// library needed in tests).
pub fn scrape_metrics(addr: std::net::SocketAddr) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}

/// The value of the first sample of `name` whose labels include every `labels` pair.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")));
            if all {
                value.parse().ok()
            } else {
                None
            }
        })
}

/// Values of one parquet column, for [`write_parquet`].
#[derive(Debug, Clone)]
pub enum ParquetValues {
    /// `BYTE_ARRAY (UTF8)`: the bytes are written as given, valid UTF-8 or not.
    Utf8(Vec<Vec<u8>>),
    Bool(Vec<bool>),
    Int64(Vec<i64>),
}

/// Write a one-row-group parquet file with REQUIRED columns (no row group when the columns
/// are empty), for tests of the dataset reader: valid files, files with wrong columns or
/// types, and, cut short, corrupt ones.
pub fn write_parquet(
    path: &Path,
    columns: &[(&str, ParquetValues)],
) -> Result<(), parquet::errors::ParquetError> {
    use parquet::column::writer::ColumnWriter;
    use parquet::data_type::ByteArray;
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use std::sync::Arc;

    let fields: Vec<String> = columns
        .iter()
        .map(|(name, v)| match v {
            ParquetValues::Utf8(_) => format!("REQUIRED BYTE_ARRAY {name} (UTF8);"),
            ParquetValues::Bool(_) => format!("REQUIRED BOOLEAN {name};"),
            ParquetValues::Int64(_) => format!("REQUIRED INT64 {name};"),
        })
        .collect();
    let schema = parquet::schema::parser::parse_message_type(&format!(
        "message schema {{ {} }}",
        fields.join(" ")
    ))?;
    let file = std::fs::File::create(path)?;
    let mut writer = SerializedFileWriter::new(
        file,
        Arc::new(schema),
        Arc::new(WriterProperties::builder().build()),
    )?;
    let rows = columns.first().map_or(0, |(_, v)| match v {
        ParquetValues::Utf8(x) => x.len(),
        ParquetValues::Bool(x) => x.len(),
        ParquetValues::Int64(x) => x.len(),
    });
    if rows > 0 {
        let mut group = writer.next_row_group()?;
        let mut values = columns.iter();
        while let Some(mut col) = group.next_column()? {
            let (_, v) = values.next().expect("one value list per column");
            match (col.untyped(), v) {
                (ColumnWriter::ByteArrayColumnWriter(w), ParquetValues::Utf8(x)) => {
                    let x: Vec<ByteArray> = x.iter().map(|b| ByteArray::from(b.clone())).collect();
                    w.write_batch(&x, None, None)?;
                }
                (ColumnWriter::BoolColumnWriter(w), ParquetValues::Bool(x)) => {
                    w.write_batch(x, None, None)?;
                }
                (ColumnWriter::Int64ColumnWriter(w), ParquetValues::Int64(x)) => {
                    w.write_batch(x, None, None)?;
                }
                _ => unreachable!("the schema follows the values"),
            }
            col.close()?;
        }
        group.close()?;
    }
    writer.close()?;
    Ok(())
}
