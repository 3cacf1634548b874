//! The fake OpenAI-compatible server in tests: started on a free loopback port, its counters
//! read and its faults switched over its admin API.
//!
//! The server itself stays in worker-judge (`worker_judge::fake`): it is a user-facing
//! command, `conftag-judge serve-fake`, that the README's demo (`deploy/local/demo.sh`) and
//! the judge benchmark run. Only the test conveniences live here.

use worker_judge::fake::{FakeConfig, FakeServer};

/// Start the fake server with `config` on a free loopback port.
pub async fn start(config: FakeConfig) -> FakeServer {
    FakeServer::start(([127, 0, 0, 1], 0).into(), config)
        .await
        .expect("start the fake OpenAI-compatible server")
}

/// `GET /admin/stats`: what the server answered so far.
pub async fn stats(server: &FakeServer) -> serde_json::Value {
    reqwest::get(format!("http://{}/admin/stats", server.addr))
        .await
        .expect("GET /admin/stats")
        .json()
        .await
        .expect("stats are JSON")
}

/// `POST /admin/faults`: misbehave with `fault` (a `worker_judge::fake::Fault` or its
/// snake_case name) for the next `count` requests (0: until switched off).
pub async fn set_fault(server: &FakeServer, fault: impl serde::Serialize, count: u64) {
    let r = reqwest::Client::new()
        .post(format!("http://{}/admin/faults", server.addr))
        .json(&serde_json::json!({"fault": fault, "count": count}))
        .send()
        .await
        .expect("POST /admin/faults");
    assert!(
        r.status().is_success(),
        "POST /admin/faults: {}",
        r.status()
    );
}

/// `DELETE /admin/faults`: answer normally again.
pub async fn clear_faults(server: &FakeServer) {
    let r = reqwest::Client::new()
        .delete(format!("http://{}/admin/faults", server.addr))
        .send()
        .await
        .expect("DELETE /admin/faults");
    assert!(
        r.status().is_success(),
        "DELETE /admin/faults: {}",
        r.status()
    );
}
