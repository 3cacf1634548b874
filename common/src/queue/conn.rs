//! Connecting to Redis: a single server (`redis://`, `rediss://` for TLS) or a Redis Cluster
//! (`redis+cluster://host1:port,host2:port`), behind one connection type that the queue uses.
//!
//! URLs carry passwords, so the URL type only ever displays a redacted form.
//!
//! TLS: `rediss://` (and `rediss+cluster://`) verify the server against the system's trust
//! store, or against the CA file given with `--redis-ca-cert` for a private CA or a
//! self-signed server; `--redis-client-cert`/`--redis-client-key` add a client certificate
//! for servers that require one (`tls-auth-clients yes`). The files are read when connecting,
//! so a missing or malformed one is named in the error, and a certificate the client does not
//! trust is reported as a TLS problem with the flag that fixes it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

/// Certificate files for TLS connections (PEM), given as paths and read at connect time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificate(s) that signed the server's certificate; replaces the system roots.
    pub ca_cert: Option<PathBuf>,
    /// Client certificate (chain) for mutual TLS; needs `client_key`.
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key.
    pub client_key: Option<PathBuf>,
}

impl TlsFiles {
    pub fn is_empty(&self) -> bool {
        self.ca_cert.is_none() && self.client_cert.is_none() && self.client_key.is_none()
    }

    /// Read and check the files (each must hold at least one PEM block of the right kind).
    fn load(&self) -> Result<redis::TlsCertificates, ConnectError> {
        let read = |path: &Path, what: &str, marker: &str| -> Result<Vec<u8>, ConnectError> {
            let bytes = std::fs::read(path).map_err(|e| ConnectError::TlsFile {
                path: path.to_owned(),
                detail: format!("cannot read the {what}: {e}"),
            })?;
            let text = String::from_utf8_lossy(&bytes);
            if !(text.contains("-----BEGIN ") && text.contains(marker)) {
                return Err(ConnectError::TlsFile {
                    path: path.to_owned(),
                    detail: format!("not a PEM {what} (no `-----BEGIN …{marker}` block)"),
                });
            }
            Ok(bytes)
        };
        let root_cert = match &self.ca_cert {
            Some(p) => Some(read(p, "CA certificate", "CERTIFICATE-----")?),
            None => None,
        };
        let client_tls = match (&self.client_cert, &self.client_key) {
            (Some(c), Some(k)) => Some(redis::ClientTlsConfig {
                client_cert: read(c, "client certificate", "CERTIFICATE-----")?,
                client_key: read(k, "client key", "PRIVATE KEY-----")?,
            }),
            (None, None) => None,
            (Some(c), None) => {
                return Err(ConnectError::TlsFile {
                    path: c.clone(),
                    detail:
                        "a client certificate needs its key (--redis-client-key / REDIS_CLIENT_KEY)"
                            .into(),
                })
            }
            (None, Some(k)) => return Err(ConnectError::TlsFile {
                path: k.clone(),
                detail:
                    "a client key needs its certificate (--redis-client-cert / REDIS_CLIENT_CERT)"
                        .into(),
            }),
        };
        Ok(redis::TlsCertificates {
            client_tls,
            root_cert,
        })
    }
}

/// The URL schemes conftag accepts.
const SCHEMES: &[&str] = &[
    "redis",
    "rediss",
    "redis+cluster",
    "rediss+cluster",
    "redis+unix",
    "unix",
];

/// A Redis URL whose `Display`/`Debug` hide the password, with the TLS files to use for it.
#[derive(Clone)]
pub struct RedisUrl {
    raw: String,
    tls: TlsFiles,
}

impl RedisUrl {
    pub fn new(raw: impl Into<String>) -> Self {
        Self {
            raw: raw.into(),
            tls: TlsFiles::default(),
        }
    }

    /// The same URL with certificate files for TLS (only valid with `rediss://`).
    pub fn with_tls(mut self, tls: TlsFiles) -> Self {
        self.tls = tls;
        self
    }

    pub fn is_cluster(&self) -> bool {
        self.raw.starts_with("redis+cluster://") || self.raw.starts_with("rediss+cluster://")
    }

    /// `rediss://` or `rediss+cluster://`.
    pub fn is_tls(&self) -> bool {
        self.raw.starts_with("rediss://") || self.raw.starts_with("rediss+cluster://")
    }

    /// Check the URL's shape before connecting, with a message that says what is wrong.
    pub fn validate(&self) -> Result<(), ConnectError> {
        let bad = |detail: String| ConnectError::BadUrl {
            url: self.redacted(),
            detail,
        };
        let Some((scheme, rest)) = self.raw.split_once("://") else {
            return Err(bad(
                "expected redis://[:PASSWORD@]HOST:PORT (or rediss://, redis+cluster://)".into(),
            ));
        };
        if !SCHEMES.contains(&scheme) {
            return Err(bad(format!(
                "unknown scheme `{scheme}://` (expected redis://, rediss:// for TLS, redis+cluster:// or rediss+cluster://)"
            )));
        }
        if scheme.ends_with("unix") {
            return Ok(());
        }
        let hosts = rest.rsplit_once('@').map(|(_, h)| h).unwrap_or(rest);
        let hosts = hosts.split(['/', '?']).next().unwrap_or("");
        for host in hosts.split(',') {
            let (name, port) = match host.strip_prefix('[') {
                // `[::1]:6379`, `[::1]`
                Some(v6) => match v6.split_once(']') {
                    Some((addr, tail)) => (addr, tail.strip_prefix(':')),
                    None => return Err(bad(format!("`{host}`: unclosed `[`"))),
                },
                None => match host.rsplit_once(':') {
                    Some((n, p)) => (n, Some(p)),
                    None => (host, None),
                },
            };
            if name.is_empty() {
                return Err(bad("no host name".into()));
            }
            if let Some(p) = port {
                match p.parse::<u32>() {
                    Ok(n) if (1..=65535).contains(&n) => {}
                    _ => return Err(bad(format!("port `{p}` is not a number from 1 to 65535"))),
                }
            }
        }
        if !self.is_tls() && !self.tls.is_empty() {
            return Err(bad(
                "TLS certificate files were given (--redis-ca-cert / --redis-client-cert) but the URL is not rediss://".into(),
            ));
        }
        Ok(())
    }

    /// The URL with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        redact_url(&self.raw)
    }

    /// Node URLs of a cluster URL (`redis+cluster://a:1,b:2/` → `redis://a:1/`, `redis://b:2/`),
    /// each with the credentials of the first.
    fn cluster_nodes(&self) -> Vec<String> {
        let (scheme, rest) = self.raw.split_once("://").unwrap_or(("redis", &self.raw));
        let scheme = scheme.replace("+cluster", "");
        let (creds, hosts) = match rest.rsplit_once('@') {
            Some((c, h)) => (format!("{c}@"), h),
            None => (String::new(), rest),
        };
        let hosts = hosts.trim_end_matches('/');
        hosts
            .split(',')
            .map(|h| format!("{scheme}://{creds}{h}"))
            .collect()
    }
}

impl std::fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisUrl({})", self.redacted())
    }
}

/// Replace the password (and a lone username used as password) of a URL with `***`.
pub fn redact_url(raw: &str) -> String {
    let Some((scheme, rest)) = raw.split_once("://") else {
        return raw.to_owned();
    };
    let Some((creds, host)) = rest.rsplit_once('@') else {
        return raw.to_owned();
    };
    let user = match creds.split_once(':') {
        Some((user, _)) => user,
        None => "",
    };
    format!("{scheme}://{user}:***@{host}")
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid Redis URL {url}: {detail}")]
    BadUrl { url: String, detail: String },
    #[error("TLS certificate file {path}: {detail}")]
    TlsFile { path: PathBuf, detail: String },
    /// Nothing answered (refused, reset, timed out) or Redis is still loading: worth waiting.
    #[error("cannot connect to Redis at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    /// Redis answered and said no (wrong password, unknown user, TLS mismatch): waiting
    /// will not help.
    #[error("Redis at {url} refused the connection: {detail}")]
    Rejected { url: String, detail: String },
}

impl ConnectError {
    /// Whether a later attempt may succeed (Redis down, restarting, unreachable for now).
    pub fn is_transient(&self) -> bool {
        matches!(self, ConnectError::Unreachable { .. })
    }
}

/// Errors that say the server is not there (yet), as opposed to answering with a refusal.
pub(crate) fn is_unreachable(e: &redis::RedisError) -> bool {
    // A TLS failure (untrusted certificate, a server that does not speak TLS) arrives as an
    // I/O error too, but it fails the same way on every try.
    if is_tls_failure(e) {
        return false;
    }
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || matches!(
            e.kind(),
            redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading)
                | redis::ErrorKind::Server(redis::ServerErrorKind::TryAgain)
                | redis::ErrorKind::Server(redis::ServerErrorKind::ClusterDown)
        )
}

/// Whether rustls refused the connection: a `rustls::Error` anywhere in the error's source
/// chain (also inside an `io::Error`), or, where redis-rs keeps only the text, its words.
fn is_tls_failure(e: &redis::RedisError) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
            {
                return true;
            }
        }
        cur = err.source();
    }
    let text = e.to_string().to_ascii_lowercase();
    [
        "certificate",
        "unknownissuer",
        "corrupt message",
        "invalidcontenttype",
        "handshake",
    ]
    .iter()
    .any(|w| text.contains(w))
}

/// A multiplexed, auto-reconnecting connection to a server or a cluster.
#[derive(Clone)]
pub enum RedisConn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedisConn::Single(_) => f.write_str("RedisConn::Single"),
            RedisConn::Cluster(_) => f.write_str("RedisConn::Cluster"),
        }
    }
}

impl RedisConn {
    /// Connect, failing within `timeout` with the redacted URL in the message.
    pub async fn connect(url: &RedisUrl, timeout: Duration) -> Result<Self, ConnectError> {
        let bad = |e: redis::RedisError| ConnectError::BadUrl {
            url: url.redacted(),
            detail: scrub(&e.to_string(), url),
        };
        let unreachable = |detail: String| ConnectError::Unreachable {
            url: url.redacted(),
            detail: tls_hint(url, scrub(&detail, url)),
        };
        url.validate()?;
        tracing::debug!(redis = %url, tls = url.is_tls(), "connecting to Redis");
        let certs = if url.tls.is_empty() {
            None
        } else {
            Some(url.tls.load()?)
        };
        if url.is_tls() {
            // Both ring and aws-lc-rs may be compiled into rustls (through other crates); then
            // rustls cannot pick a provider by itself. Ignored if one is installed already.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let failed = |e: redis::RedisError| {
            if is_unreachable(&e) {
                unreachable(e.to_string())
            } else {
                ConnectError::Rejected {
                    url: url.redacted(),
                    detail: tls_hint(url, scrub(&e.to_string(), url)),
                }
            }
        };
        let fut = async {
            if url.is_cluster() {
                let mut builder = redis::cluster::ClusterClientBuilder::new(url.cluster_nodes())
                    .connection_timeout(timeout)
                    .response_timeout(Duration::from_secs(30));
                if let Some(certs) = certs {
                    builder = builder.certs(certs);
                }
                let client = builder.build().map_err(bad)?;
                let conn = client.get_async_connection().await.map_err(failed)?;
                Ok(RedisConn::Cluster(conn))
            } else {
                let client = match certs {
                    Some(certs) => redis::Client::build_with_tls(url.raw.as_str(), certs),
                    None => redis::Client::open(url.raw.as_str()),
                }
                .map_err(bad)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(Duration::from_secs(30)))
                    .set_number_of_retries(2);
                let conn = ConnectionManager::new_with_config(client, config)
                    .await
                    .map_err(failed)?;
                Ok(RedisConn::Single(conn))
            }
        };
        match tokio::time::timeout(timeout + Duration::from_secs(1), fut).await {
            Ok(r) => r,
            Err(_) => Err(unreachable(format!("no answer within {timeout:?}"))),
        }
    }
}

/// Say what to do about a TLS failure: rustls' own words ("invalid peer certificate:
/// UnknownIssuer") do not name the flag that fixes it.
fn tls_hint(url: &RedisUrl, detail: String) -> String {
    let lower = detail.to_ascii_lowercase();
    if !url.is_tls() {
        return detail;
    }
    if lower.contains("certificate") || lower.contains("unknownissuer") {
        format!(
            "{detail} (TLS: the server's certificate is not trusted or does not match the host; \
             for a private CA or a self-signed server pass its CA with --redis-ca-cert / REDIS_CA_CERT)"
        )
    } else if lower.contains("corrupt message") || lower.contains("handshake") {
        format!("{detail} (TLS handshake failed: is the server listening for TLS on this port?)")
    } else {
        detail
    }
}

/// Make sure an error text cannot carry the URL's password.
fn scrub(text: &str, url: &RedisUrl) -> String {
    let mut out = text.replace(&url.raw, &url.redacted());
    if let Some((_, rest)) = url.raw.split_once("://") {
        if let Some((creds, _)) = rest.rsplit_once('@') {
            let pass = creds.split_once(':').map(|(_, p)| p).unwrap_or(creds);
            if !pass.is_empty() {
                out = out.replace(pass, "***");
            }
        }
    }
    out
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            RedisConn::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_never_show_passwords() {
        let u = RedisUrl::new("redis://:s3cret@localhost:6379/0");
        assert_eq!(u.to_string(), "redis://:***@localhost:6379/0");
        assert!(!format!("{u:?}").contains("s3cret"));
        let u = RedisUrl::new("redis://user:pw@h:1");
        assert_eq!(u.redacted(), "redis://user:***@h:1");
        assert_eq!(RedisUrl::new("redis://h:1").redacted(), "redis://h:1");
    }

    #[test]
    fn malformed_urls_are_refused_before_connecting() {
        for (raw, expect) in [
            ("http://127.0.0.1:6379", "unknown scheme `http://`"),
            ("ftp://:pw@h:1", "unknown scheme"),
            ("127.0.0.1:6379", "expected redis://"),
            ("redis://:@", "no host"),
            ("redis://:pw@", "no host"),
            ("redis://127.0.0.1:99999", "port `99999`"),
            ("redis://127.0.0.1:0", "port `0`"),
            ("redis://h:abc", "port `abc`"),
            ("redis+cluster://h:1,:2", "no host"),
        ] {
            let e = RedisUrl::new(raw).validate().unwrap_err().to_string();
            assert!(e.contains(expect), "{raw}: {e}");
            assert!(!e.contains("pw@"), "{raw}: {e}");
        }
        for ok in [
            "redis://127.0.0.1:6379",
            "redis://:pw@h:1/0",
            "rediss://u:p@h",
            "redis+cluster://a:1,b:2/",
            "redis://[::1]:6379",
            "redis://[::1]",
            "unix:///tmp/redis.sock",
        ] {
            RedisUrl::new(ok).validate().unwrap();
        }
        let e = RedisUrl::new("redis://h:1")
            .with_tls(TlsFiles {
                ca_cert: Some("ca.pem".into()),
                ..TlsFiles::default()
            })
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("not rediss://"), "{e}");
    }

    #[test]
    fn cluster_urls_expand_to_nodes() {
        let u = RedisUrl::new("redis+cluster://:pw@127.0.0.1:7000,127.0.0.1:7001/");
        assert!(u.is_cluster());
        assert_eq!(
            u.cluster_nodes(),
            vec!["redis://:pw@127.0.0.1:7000", "redis://:pw@127.0.0.1:7001"]
        );
    }
}
