//! What the responses of OpenAI-compatible servers say about waiting: `retry-after-ms` /
//! `retry-after` on a 429 or 503, and the `x-ratelimit-remaining-*` / `x-ratelimit-reset-*`
//! budget on every answer (what the client's rate gate pauses on).

use std::time::Duration;

use reqwest::header::HeaderMap;

/// The wait a response asks for: `retry-after-ms` (milliseconds, OpenAI) or `retry-after`
/// (seconds), capped at 10 minutes. Pass the raw header values.
pub fn retry_after_values(
    retry_after_ms: Option<&str>,
    retry_after: Option<&str>,
) -> Option<Duration> {
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

fn get<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `retry-after-ms` or `retry-after` of a response.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    retry_after_values(get(headers, "retry-after-ms"), get(headers, "retry-after"))
}

/// `x-ratelimit-remaining-requests` and `x-ratelimit-reset-requests`, when both are there.
pub fn request_budget(headers: &HeaderMap) -> Option<(u64, Duration)> {
    let left = get(headers, "x-ratelimit-remaining-requests")?
        .trim()
        .parse::<u64>()
        .ok()?;
    let reset = get(headers, "x-ratelimit-reset-requests").and_then(parse_reset)?;
    Some((left, reset))
}

/// When the headers say the request or token budget is spent, how long until it resets.
pub fn ratelimit_pause(headers: &HeaderMap) -> Option<Duration> {
    let mut pause: Option<Duration> = None;
    for (remaining, reset, low) in [
        (
            "x-ratelimit-remaining-requests",
            "x-ratelimit-reset-requests",
            0u64,
        ),
        (
            "x-ratelimit-remaining-tokens",
            "x-ratelimit-reset-tokens",
            1000u64,
        ),
    ] {
        let Some(left) = get(headers, remaining).and_then(|v| v.trim().parse::<u64>().ok()) else {
            continue;
        };
        if left <= low {
            if let Some(d) = get(headers, reset).and_then(parse_reset) {
                pause = Some(pause.map_or(d, |p| p.max(d)));
            }
        }
    }
    pause
}

/// OpenAI's reset format: `1s`, `6m0s`, `120ms`, `1h2m3.5s` (capped at 10 minutes).
pub fn parse_reset(s: &str) -> Option<Duration> {
    let s = s.trim();
    let mut total = 0f64;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let value: f64 = num.parse().ok()?;
        num.clear();
        any = true;
        total += match c {
            'h' => value * 3600.0,
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                value / 1000.0
            }
            'm' => value * 60.0,
            's' => value,
            _ => return None,
        };
    }
    if !num.is_empty() {
        total += num.parse::<f64>().ok()?;
        any = true;
    }
    any.then(|| Duration::from_secs_f64(total.min(600.0)))
}

/// What went wrong with a request, in words without the URL (HTTP clients print the URL, which
/// may carry a query string or credentials).
pub fn transport_failure(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
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
            retry_after_values(Some("250"), Some("1")),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            retry_after_values(None, Some("2")),
            Some(Duration::from_secs(2))
        );
        assert_eq!(retry_after_values(None, Some("Wed, 21 Oct 2015")), None);
        assert_eq!(retry_after_values(Some("nan"), Some("inf")), None);
        assert_eq!(
            retry_after_values(Some("NaN"), Some("3")),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            retry_after_values(None, Some("99999")),
            Some(Duration::from_secs(600))
        );
    }

    #[test]
    fn reset_durations_parse() {
        assert_eq!(parse_reset("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_reset("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(parse_reset("120ms"), Some(Duration::from_millis(120)));
        assert_eq!(parse_reset("1m30.5s"), Some(Duration::from_secs_f64(90.5)));
        assert_eq!(parse_reset("x"), None);
    }

    #[test]
    fn a_spent_budget_pauses_until_its_reset() {
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-remaining-requests", "0".parse().unwrap());
        h.insert("x-ratelimit-reset-requests", "250ms".parse().unwrap());
        h.insert("x-ratelimit-remaining-tokens", "5000".parse().unwrap());
        h.insert("x-ratelimit-reset-tokens", "9s".parse().unwrap());
        assert_eq!(ratelimit_pause(&h), Some(Duration::from_millis(250)));
        assert_eq!(request_budget(&h), Some((0, Duration::from_millis(250))));
        h.insert("x-ratelimit-remaining-tokens", "10".parse().unwrap());
        assert_eq!(ratelimit_pause(&h), Some(Duration::from_secs(9)));
    }
}
