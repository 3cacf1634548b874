//! The Hugging Face hub path for real: `../shared/data/hub/` served over HTTP on loopback with
//! the hub's download protocol (Range requests, `etag`, `x-repo-commit`, `content-range`),
//! `HF_ENDPOINT` pointed at it, and the rows compared with the JSONL copies.
//!
//! Needs `../shared/data` (the real rows, kept outside the repository); without it the test
//! says so and passes nothing off as checked.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use common::dataset::{load_split, DatasetSource};
use common::dataset_spec::builtin;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

fn shared_data() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data");
    p.join("hub").is_dir().then_some(p)
}

#[derive(Clone)]
struct Hub {
    root: PathBuf,
    requests: Arc<AtomicU64>,
    authorized: Arc<AtomicU64>,
}

async fn resolve(
    State(hub): State<Hub>,
    UrlPath((owner, name, _rev, path)): UrlPath<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    hub.requests.fetch_add(1, Ordering::Relaxed);
    if headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some("Bearer hf_test_token")
    {
        hub.authorized.fetch_add(1, Ordering::Relaxed);
    }
    let file = hub
        .root
        .join("datasets")
        .join(&owner)
        .join(&name)
        .join("resolve/main")
        .join(&path);
    let Ok(bytes) = std::fs::read(&file) else {
        return (StatusCode::NOT_FOUND, "Entry not found").into_response();
    };
    let len = bytes.len();
    let (a, b) = testkit::http::byte_range(
        headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
        len,
    );
    let mut out = HeaderMap::new();
    let etag = format!(
        "{:x}{:08x}",
        len,
        bytes
            .iter()
            .fold(0u32, |h, x| h.wrapping_mul(31).wrapping_add(*x as u32))
    );
    out.insert(
        header::ETAG,
        HeaderValue::from_str(&format!("\"{etag}\"")).unwrap(),
    );
    out.insert("x-repo-commit", HeaderValue::from_static(COMMIT));
    out.insert(
        header::CONTENT_RANGE,
        HeaderValue::from_str(&format!("bytes {a}-{b}/{len}")).unwrap(),
    );
    (StatusCode::PARTIAL_CONTENT, out, bytes[a..=b].to_vec()).into_response()
}

#[tokio::test]
async fn hub_parquet_rows_equal_the_jsonl_rows() {
    let Some(data) = shared_data() else {
        eprintln!("skipped: needs ../shared/data (the real rows) beside the repository");
        return;
    };
    let hub = Hub {
        root: data.join("hub"),
        requests: Arc::default(),
        authorized: Arc::default(),
    };
    let app = Router::new()
        .route(
            "/datasets/{owner}/{name}/resolve/{rev}/{*path}",
            get(resolve),
        )
        .with_state(hub.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let home = tempfile::tempdir().unwrap();
    // This test binary holds only this test, so the process environment is ours.
    std::env::set_var("HF_ENDPOINT", format!("http://{addr}"));
    std::env::set_var("HF_HOME", home.path());
    std::env::set_var("HF_TOKEN", "hf_test_token");

    for (dataset, jsonl) in [
        ("boolq", "boolq/test.jsonl"),
        ("math", "math/test.jsonl"),
        ("medqa", "medqa/test.jsonl"),
    ] {
        let spec = builtin(dataset).unwrap();
        let hub_rows = load_split(spec, &DatasetSource::hub(spec, "test").unwrap(), Some(200))
            .await
            .unwrap();
        let file_rows = load_split(
            spec,
            &DatasetSource::File {
                path: data.join(jsonl),
            },
            Some(200),
        )
        .await
        .unwrap();
        assert_eq!(hub_rows.len(), 200);
        assert_eq!(
            hub_rows, file_rows,
            "{dataset}: hub parquet and JSONL rows differ"
        );
    }
    assert!(
        hub.authorized.load(Ordering::Relaxed) > 0,
        "HF_TOKEN sent as a bearer token"
    );

    // Second load comes from the cache: no new requests.
    let before = hub.requests.load(Ordering::Relaxed);
    load_split(
        builtin("boolq").unwrap(),
        &DatasetSource::hub(builtin("boolq").unwrap(), "test").unwrap(),
        Some(5),
    )
    .await
    .unwrap();
    assert_eq!(
        hub.requests.load(Ordering::Relaxed),
        before,
        "served from the hub cache"
    );

    // A split that does not exist names the repo, the split and the endpoint.
    let err = load_split(
        builtin("boolq").unwrap(),
        &DatasetSource::hub(builtin("boolq").unwrap(), "train").unwrap(),
        None,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("train")
            && err.contains("huyxdang/boolq-split")
            && err.contains(&addr.to_string()),
        "{err}"
    );
    assert!(!err.contains("hf_test_token"));
}
