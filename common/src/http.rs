//! What the clients of OpenAI-compatible servers (the judge, the external inference engine)
//! share: reading how long a 429 or 503 asks them to wait.

use std::time::Duration;

/// The wait a response asks for: `retry-after-ms` (milliseconds, OpenAI) or `retry-after`
/// (seconds), capped at 10 minutes. Pass the raw header values.
pub fn retry_after(retry_after_ms: Option<&str>, retry_after: Option<&str>) -> Option<Duration> {
    // `nan` and `inf` parse as f64; a Duration cannot hold them.
    let seconds = |v: &str, scale: f64| {
        v.trim()
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .map(|x| Duration::from_secs_f64((x / scale).clamp(0.0, 600.0)))
    };
    retry_after_ms
        .and_then(|v| seconds(v, 1000.0))
        .or_else(|| retry_after.and_then(|v| seconds(v, 1.0)))
}

/// What went wrong with a request, in words without the URL (HTTP clients print the URL, which
/// may carry a query string or credentials): pass the client error's `is_timeout()`,
/// `is_connect()` and `is_body() || is_decode()`.
pub fn transport_failure(timeout: bool, connect: bool, body: bool) -> &'static str {
    if timeout {
        "timed out"
    } else if connect {
        "connection failed"
    } else if body {
        "bad response body"
    } else {
        "transport error"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_win_over_seconds_and_garbage_is_ignored() {
        assert_eq!(
            retry_after(Some("250"), Some("1")),
            Some(Duration::from_millis(250))
        );
        assert_eq!(retry_after(None, Some("2")), Some(Duration::from_secs(2)));
        assert_eq!(retry_after(None, Some("Wed, 21 Oct 2015")), None);
        assert_eq!(retry_after(Some("nan"), Some("inf")), None);
        assert_eq!(
            retry_after(Some("NaN"), Some("3")),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            retry_after(None, Some("99999")),
            Some(Duration::from_secs(600))
        );
    }
}
