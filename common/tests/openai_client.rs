//! The shared OpenAI-compatible client (`common::openai`) against a real HTTP server on
//! loopback that answers from a script: waits asked for by 429s are honoured, 5xx are retried,
//! refused credentials stop at once, the key never shows in an error, and the cause of a
//! failure stays reachable through `source()`.

use std::collections::VecDeque;
use std::error::Error as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use common::config::Secret;
use common::failure::{Failure, FailureKind};
use common::openai::{Client, ClientOptions, Service};
use serde_json::{json, Value};

const SERVICE: Service = Service {
    name: "test API",
    key_hint: "check TEST_API_KEY",
    missing_endpoint_is_fatal: false,
    rate_limited_counter: None,
};

const KEY: &str = "sk-test-never-shown-4417";

/// One scripted answer: status, headers, body. `{auth}` in the body is replaced by the
/// request's `Authorization` header (a server that echoes it).
#[derive(Clone)]
struct Answer(u16, Vec<(&'static str, &'static str)>, &'static str);

#[derive(Default)]
struct Script {
    answers: VecDeque<Answer>,
    requests: u64,
}

type Shared = Arc<Mutex<Script>>;

async fn answer(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let next = {
        let mut g = s.lock().unwrap();
        g.requests += 1;
        g.answers.pop_front()
    };
    let Answer(status, hs, body) = next.unwrap_or(Answer(200, vec![], r#"{"answer": 42}"#));
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut r = (
        StatusCode::from_u16(status).unwrap(),
        body.replace("{auth}", auth),
    )
        .into_response();
    for (k, v) in hs {
        r.headers_mut()
            .insert(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    r
}

struct Server {
    base_url: String,
    script: Shared,
}

impl Server {
    async fn start(answers: Vec<Answer>) -> Self {
        let script: Shared = Arc::new(Mutex::new(Script {
            answers: answers.into(),
            requests: 0,
        }));
        let app = Router::new().fallback(answer).with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            base_url: format!("http://{addr}/v1"),
            script,
        }
    }

    fn requests(&self) -> u64 {
        self.script.lock().unwrap().requests
    }
}

fn client(base_url: &str) -> Client {
    let mut o = ClientOptions::new(base_url, Some(Secret::new(KEY)));
    o.backoff_base = Duration::from_millis(5);
    o.backoff_max = Duration::from_millis(20);
    o.request_timeout = Duration::from_secs(5);
    o.max_retries = 3;
    Client::new(SERVICE, o).unwrap()
}

/// Accepts any JSON answer that has `answer`.
fn answer_of(v: &Value) -> Result<i64, Failure> {
    v["answer"]
        .as_i64()
        .ok_or_else(|| Failure::row("no answer in the body"))
}

async fn call(c: &Client) -> Result<common::openai::Call<i64>, Failure> {
    c.post_json("chat/completions", &json!({"q": 1}), answer_of)
        .await
}

#[tokio::test]
async fn a_429_waits_what_retry_after_asks_then_succeeds() {
    let s = Server::start(vec![
        Answer(
            429,
            vec![("retry-after-ms", "400")],
            r#"{"error":{"message":"slow down"}}"#,
        ),
        Answer(429, vec![("retry-after", "1")], "{}"),
    ])
    .await;
    let started = Instant::now();
    let call = call(&client(&s.base_url)).await.unwrap();
    // The backoff alone would wait milliseconds; the server asked for 0.4 s, then 1 s.
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        started.elapsed()
    );
    assert_eq!((call.value, call.retries, s.requests()), (42, 2, 3));
}

#[tokio::test]
async fn server_errors_are_retried_then_the_answer_comes_back() {
    let s = Server::start(vec![
        Answer(503, vec![], "overloaded"),
        Answer(500, vec![], r#"{"error":{"message":"boom"}}"#),
        Answer(200, vec![], "<html>gateway page</html>"),
    ])
    .await;
    let call = call(&client(&s.base_url)).await.unwrap();
    assert_eq!((call.value, call.retries, s.requests()), (42, 3, 4));
}

#[tokio::test]
async fn retries_run_out_into_a_transient_failure_with_its_cause_chain() {
    let s = Server::start(vec![
        Answer(
            502,
            vec![],
            r#"{"error":{"message":"bad gateway"}}"#
        );
        10
    ])
    .await;
    let e = call(&client(&s.base_url)).await.unwrap_err();
    assert_eq!(e.kind(), FailureKind::Transient);
    assert_eq!(s.requests(), 4, "the first try and 3 retries");
    let m = e.report();
    assert!(
        m.contains("gave up after 4 attempts")
            && m.contains("HTTP 502")
            && m.contains("bad gateway"),
        "{m}"
    );
    let cause = e
        .source()
        .expect("the last attempt's failure is the source");
    assert!(cause.to_string().contains("HTTP 502"), "{cause}");
}

#[tokio::test]
async fn refused_credentials_are_fatal_at_once_and_the_key_is_not_shown() {
    // The server echoes the Authorization header in its message.
    let s = Server::start(vec![Answer(
        401,
        vec![],
        r#"{"error":{"message":"Incorrect API key provided: {auth}"}}"#,
    )])
    .await;
    let c = client(&s.base_url);
    let e = call(&c).await.unwrap_err();
    assert_eq!(e.kind(), FailureKind::Fatal);
    assert_eq!(s.requests(), 1, "not retried");
    let m = e.report();
    assert!(
        m.contains("HTTP 401") && m.contains("check TEST_API_KEY") && m.contains("[redacted]"),
        "{m}"
    );
    for text in [m, format!("{e:?}"), format!("{c:?}")] {
        assert!(!text.contains(KEY), "key shown: {text}");
    }
}

#[tokio::test]
async fn a_spent_quota_is_fatal_and_a_rejected_request_is_the_rows_without_the_key() {
    let s = Server::start(vec![
        Answer(
            429,
            vec![],
            r#"{"error":{"message":"You exceeded your current quota.","code":"insufficient_quota"}}"#,
        ),
        Answer(400, vec![], "prompt too long; you sent {auth}"),
    ])
    .await;
    let c = client(&s.base_url);
    let e = call(&c).await.unwrap_err();
    assert_eq!(e.kind(), FailureKind::Fatal);
    assert!(e.report().contains("insufficient_quota"), "{}", e.report());
    let e = call(&c).await.unwrap_err();
    assert_eq!(e.kind(), FailureKind::Row);
    let m = e.report();
    assert!(
        m.contains("HTTP 400") && m.contains("prompt too long") && !m.contains(KEY),
        "{m}"
    );
    assert_eq!(s.requests(), 2, "neither was retried");
}

#[tokio::test]
async fn unusable_answers_are_asked_again_then_are_the_rows_failure() {
    let s = Server::start(vec![
        Answer(200, vec![], r#"{"nothing": 1}"#),
        Answer(200, vec![], r#"{"nothing": 2}"#),
    ])
    .await;
    // Two content retries: the third answer (the default, usable) is taken.
    let call = call(&client(&s.base_url)).await.unwrap();
    assert_eq!((call.value, call.retries), (42, 2));

    let s = Server::start(vec![Answer(200, vec![], r#"{"nothing": 1}"#); 5]).await;
    let mut o = ClientOptions::new(s.base_url.clone(), None);
    o.max_content_retries = 1;
    let c = Client::new(SERVICE, o).unwrap();
    let e = c.post_json("x", &json!({}), answer_of).await.unwrap_err();
    assert_eq!(e.kind(), FailureKind::Row);
    assert_eq!(s.requests(), 2);
}

#[tokio::test]
async fn a_connection_failure_keeps_the_transport_error_as_its_source() {
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let base = format!("http://user:pa55word@127.0.0.1:{port}/v1");
    let mut o = ClientOptions::new(base, Some(Secret::new(KEY)));
    o.max_retries = 1;
    o.backoff_base = Duration::from_millis(5);
    let c = Client::new(SERVICE, o).unwrap();
    let e = call(&c).await.unwrap_err();
    assert_eq!(e.kind(), FailureKind::Transient);
    // gave up → the attempt's failure → the HTTP client's error → ... → the OS error.
    let mut depth = 0;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(x) = cur {
        depth += 1;
        cur = x.source();
    }
    assert!(depth >= 3, "{depth}: {}", e.report());
    let m = e.report();
    assert!(
        m.contains("test API request failed: connection failed"),
        "{m}"
    );
    assert!(!m.contains("pa55word") && !m.contains(KEY), "{m}");
}

#[tokio::test]
async fn a_spent_request_budget_holds_the_next_request_until_its_reset() {
    let s = Server::start(vec![Answer(
        200,
        vec![
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "500ms"),
        ],
        r#"{"answer": 1}"#,
    )])
    .await;
    let c = client(&s.base_url);
    assert_eq!(call(&c).await.unwrap().value, 1);
    let started = Instant::now();
    assert_eq!(call(&c).await.unwrap().value, 42);
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
}
