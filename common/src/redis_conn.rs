//! Connecting to Redis: a single server (`redis://`, `rediss://` for TLS) or a Redis Cluster
//! (`redis+cluster://host1:port,host2:port`), behind one connection type that the queue uses.
//!
//! URLs carry passwords, so the URL type only ever displays a redacted form.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

/// A Redis URL whose `Display`/`Debug` hide the password.
#[derive(Clone)]
pub struct RedisUrl {
    raw: String,
}

impl RedisUrl {
    pub fn new(raw: impl Into<String>) -> Self {
        Self { raw: raw.into() }
    }

    pub fn is_cluster(&self) -> bool {
        self.raw.starts_with("redis+cluster://") || self.raw.starts_with("rediss+cluster://")
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
            detail: scrub(&detail, url),
        };
        let failed = |e: redis::RedisError| {
            if is_unreachable(&e) {
                unreachable(e.to_string())
            } else {
                ConnectError::Rejected {
                    url: url.redacted(),
                    detail: scrub(&e.to_string(), url),
                }
            }
        };
        let fut = async {
            if url.is_cluster() {
                let client = redis::cluster::ClusterClientBuilder::new(url.cluster_nodes())
                    .connection_timeout(timeout)
                    .response_timeout(Duration::from_secs(30))
                    .build()
                    .map_err(bad)?;
                let conn = client.get_async_connection().await.map_err(failed)?;
                Ok(RedisConn::Cluster(conn))
            } else {
                let client = redis::Client::open(url.raw.as_str()).map_err(bad)?;
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
    fn cluster_urls_expand_to_nodes() {
        let u = RedisUrl::new("redis+cluster://:pw@127.0.0.1:7000,127.0.0.1:7001/");
        assert!(u.is_cluster());
        assert_eq!(
            u.cluster_nodes(),
            vec!["redis://:pw@127.0.0.1:7000", "redis://:pw@127.0.0.1:7001"]
        );
    }
}
