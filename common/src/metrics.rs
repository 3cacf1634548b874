//! Prometheus metrics. Every long-running process (both workers, `conftag monitor`) serves
//! `/metrics` in the Prometheus text format when given `--metrics-addr`; without it the
//! recording calls below are no-ops. The names live here so dashboards have one list:
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `conftag_shards_claimed_total` | counter | stage | leases taken |
//! | `conftag_shards_completed_total` | counter | stage | results stored |
//! | `conftag_shard_failures_total` | counter | stage, reason | attempts that did not complete (`transient`, `retry_after`, `permanent`, `fatal`, `stale`, `released`, `paused`) |
//! | `conftag_lease_renewals_total` | counter | stage, outcome | `renewed`, `lost`, `error` |
//! | `conftag_rows_in_flight` | gauge | stage | rows of the shards held |
//! | `conftag_<counter>_total` | counter | stage | every counter a shard adds to its job: `infer_rows`, `infer_prompt_tokens`, `infer_completion_tokens`, `infer_row_errors`, `judge_rows`, `judge_cost_micro_usd`, … (rate() of them is rows/s, tokens/s, spend/s) |
//! | `conftag_judge_http_429_total` | counter | | rate-limit answers from the judge API |
//! | `conftag_job_*` | gauge | job, model, dataset, split | from `conftag monitor`: rows, rows done per stage, shards by state, queue depth per stage, spend |
//! | `conftag_workers` | gauge | kind, alive | from `conftag monitor` |

use std::net::SocketAddr;

pub const SHARDS_CLAIMED: &str = "conftag_shards_claimed_total";
pub const SHARDS_COMPLETED: &str = "conftag_shards_completed_total";
pub const SHARD_FAILURES: &str = "conftag_shard_failures_total";
pub const LEASE_RENEWALS: &str = "conftag_lease_renewals_total";
pub const ROWS_IN_FLIGHT: &str = "conftag_rows_in_flight";
pub const JUDGE_HTTP_429: &str = "conftag_judge_http_429_total";

#[derive(Debug, thiserror::Error)]
#[error("--metrics-addr {addr}: cannot serve metrics: {detail}")]
pub struct MetricsError {
    addr: SocketAddr,
    detail: String,
}

/// Install the Prometheus recorder and serve `GET /metrics` on `addr` from the current tokio
/// runtime. Call once per process.
pub fn serve(addr: SocketAddr) -> Result<(), MetricsError> {
    // `install` binds synchronously, so a taken port is an error here, not a log line later.
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| MetricsError {
            addr,
            detail: e.to_string(),
        })?;
    tracing::info!(%addr, "serving Prometheus metrics at /metrics");
    Ok(())
}

/// Name of the counter a shard counter feeds: `infer_rows` → `conftag_infer_rows_total`.
pub fn shard_counter_name(counter: &str) -> String {
    let clean: String = counter
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("conftag_{clean}_total")
}

#[cfg(test)]
mod tests {
    #[test]
    fn shard_counters_get_prometheus_names() {
        assert_eq!(
            super::shard_counter_name("infer_completion_tokens"),
            "conftag_infer_completion_tokens_total"
        );
        assert_eq!(super::shard_counter_name("a-b.c"), "conftag_a_b_c_total");
    }
}
