//! The `conftag-judge` binary refuses a bad judge URL or Redis URL before it claims anything:
//! non-zero exit, the flag or variable named, no secret printed, nothing written to Redis.

use std::process::{Command, Output};

use testkit::{output_text as text, RedisServer};

fn judge(redis_url: &str, base_url: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_conftag-judge"))
        .args(["--exit-when-done"])
        .env("REDIS_URL", redis_url)
        .env("OPENAI_BASE_URL", base_url)
        .env("OPENAI_API_KEY", "sk-test-cli-0f9e8d")
        .env("RUST_LOG", "trace")
        .output()
        .unwrap()
}

#[test]
fn a_garbage_judge_url_is_refused_naming_openai_base_url() {
    let redis = RedisServer::start_with(true, Some("judge-cli-pw")).unwrap();
    let url = redis.url();
    for bad in [
        "not a url",
        "ftp://example.com/v1",
        "http://",
        "https://user:sk-in-url-77@[::1",
        "",
    ] {
        let o = judge(&url, bad);
        let t = text(&o);
        assert!(!o.status.success(), "OPENAI_BASE_URL={bad:?} accepted: {t}");
        assert!(
            t.contains("OPENAI_BASE_URL") && t.contains("invalid judge base URL"),
            "{bad:?}: {t}"
        );
        for secret in ["judge-cli-pw", "sk-test-cli-0f9e8d", "sk-in-url-77"] {
            assert!(!t.contains(secret), "{bad:?}: {secret} printed: {t}");
        }
    }
    assert_eq!(redis.dbsize(), 0, "no worker registered, nothing written");
}

#[test]
fn a_bad_redis_url_is_refused_by_the_judge_too() {
    for (bad, word) in [
        ("http://127.0.0.1:6379", "unknown scheme"),
        ("redis://:@", "no host"),
        ("redis://127.0.0.1:123456", "port `123456`"),
    ] {
        let o = judge(bad, "http://127.0.0.1:9/v1");
        assert!(!o.status.success(), "{bad} accepted");
        assert!(text(&o).contains(word), "{bad}: {}", text(&o));
    }
}
