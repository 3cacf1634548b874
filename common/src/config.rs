//! Flags every binary shares (`--redis-url`, the TLS files for `rediss://`, `--log-format`), secret handling and tracing
//! setup. Every flag also reads an environment variable; secrets come from the environment
//! only and never print.

use std::path::PathBuf;

use clap::ValueEnum;

/// Flags shared by `conftag`, `conftag-infer` and `conftag-judge`.
#[derive(clap::Args, Debug, Clone)]
pub struct CommonArgs {
    /// Redis to use: `redis://[:PASSWORD@]HOST:PORT[/DB]`, `rediss://…` for TLS,
    /// `redis+cluster://[:PASSWORD@]HOST:PORT,HOST:PORT` for a Redis Cluster.
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true,
        hide_default_value = false
    )]
    pub redis_url: String,

    /// CA certificate (PEM) to verify a `rediss://` server with, instead of the system's trust
    /// store: for a private CA or a self-signed server.
    #[arg(long, env = "REDIS_CA_CERT", value_name = "PATH")]
    pub redis_ca_cert: Option<PathBuf>,

    /// Client certificate (PEM) for servers that require one (`tls-auth-clients yes`).
    #[arg(
        long,
        env = "REDIS_CLIENT_CERT",
        value_name = "PATH",
        requires = "redis_client_key"
    )]
    pub redis_client_cert: Option<PathBuf>,

    /// The client certificate's private key (PEM).
    #[arg(
        long,
        env = "REDIS_CLIENT_KEY",
        value_name = "PATH",
        requires = "redis_client_cert"
    )]
    pub redis_client_key: Option<PathBuf>,

    /// Log format on stderr: `pretty` for people, `json` (one object per line) for log shippers.
    #[arg(long, env = "CONFTAG_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,

    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 0.0.0.0:9464); off when unset.
    #[arg(long, env = "CONFTAG_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

impl CommonArgs {
    /// The Redis URL with the TLS files given by flag or environment.
    pub fn redis_url(&self) -> crate::redis_conn::RedisUrl {
        crate::redis_conn::RedisUrl::new(self.redis_url.clone()).with_tls(
            crate::redis_conn::TlsFiles {
                ca_cert: self.redis_ca_cert.clone(),
                client_cert: self.redis_client_cert.clone(),
                client_key: self.redis_client_key.clone(),
            },
        )
    }

    /// Start the `/metrics` endpoint when `--metrics-addr` is given (needs a tokio runtime).
    pub fn serve_metrics(&self) -> Result<(), crate::metrics::MetricsError> {
        match self.metrics_addr {
            Some(addr) => crate::metrics::serve(addr),
            None => Ok(()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// A secret (API key, token): `Debug` and `Display` print `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// From an environment variable; empty counts as unset.
    pub fn from_env(var: &str) -> Option<Self> {
        std::env::var(var).ok().filter(|s| !s.is_empty()).map(Self)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Install the global tracing subscriber (stderr; `RUST_LOG` filters, default `info`).
pub fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Pretty => builder.with_target(false).try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// How an idle worker looks for work (`conftag-infer` and `conftag-judge`); see
/// `docs/scale.md` for what to set for a large fleet.
#[derive(clap::Args, Debug, Clone)]
pub struct IdleArgs {
    /// First pause after a claim round found nothing, in ms; it doubles (with jitter) while
    /// rounds keep finding nothing, up to --idle-poll-max-ms. With wake-ups on, the pause is
    /// the timeout of a blocking wait that a submit, completion or requeue cuts short.
    #[arg(long, env = "CONFTAG_IDLE_POLL_MS", default_value_t = 500)]
    pub idle_poll_ms: u64,
    /// The longest idle pause, in ms: the fallback poll of an idle worker (it also reaps
    /// lapsed leases when no other worker claims). At most 10 × --idle-poll-ms.
    #[arg(long, env = "CONFTAG_IDLE_POLL_MAX_MS", default_value_t = 5000)]
    pub idle_poll_max_ms: u64,
    /// Sleep through idle pauses instead of waiting on the wake-up list (Redis setups that
    /// forbid blocking commands).
    #[arg(long, env = "CONFTAG_NO_WAKE_UPS")]
    pub no_wake_ups: bool,
}

impl IdleArgs {
    /// Set the idle behaviour of `config`.
    pub fn apply(&self, config: &mut crate::worker::WorkerConfig) {
        config.idle_poll = std::time::Duration::from_millis(self.idle_poll_ms.max(10));
        config.idle_poll_max = std::time::Duration::from_millis(self.idle_poll_max_ms.max(10));
        config.wake_ups = !self.no_wake_ups;
    }
}

/// Print an error with its whole source chain, one cause per line. A cause whose text is
/// already shown is skipped: conftag's own failures ([`crate::failure::Failure`]) keep their
/// causes out of their message, but errors of other layers print their source in their own
/// message too (`redis command failed: {0}`, `cannot read the model: {0}`).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    crate::failure::chain(e, "\n  caused by: ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_flags_set_the_worker_config() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct T {
            #[command(flatten)]
            idle: IdleArgs,
        }
        let mut c = crate::worker::WorkerConfig::new(crate::Stage::Judge);
        T::parse_from(["t"]).idle.apply(&mut c);
        assert_eq!(c.idle_poll, std::time::Duration::from_millis(500));
        assert_eq!(c.idle_poll_max, std::time::Duration::from_secs(5));
        assert!(c.wake_ups);
        let t = T::parse_from([
            "t",
            "--idle-poll-ms",
            "100",
            "--idle-poll-max-ms",
            "800",
            "--no-wake-ups",
        ]);
        t.idle.apply(&mut c);
        assert_eq!(c.idle_poll, std::time::Duration::from_millis(100));
        assert_eq!(c.idle_poll_max, std::time::Duration::from_millis(800));
        assert!(!c.wake_ups);
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("sk-abc");
        assert_eq!(format!("{s:?} {s}"), "[redacted] [redacted]");
        assert_eq!(s.expose(), "sk-abc");
    }
}
