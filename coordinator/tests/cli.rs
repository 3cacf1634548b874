//! The `conftag` binary against a real Redis: bad input gets a clear error naming the
//! file/row/column/flag, a non-zero exit, and nothing half-written; status reports exactly.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::testutil::RedisServer;

fn conftag(redis: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_conftag"))
        .arg("--redis-url")
        .arg(redis)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn samples(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../data/samples")
        .join(name)
        .display()
        .to_string()
}

fn dbsize(redis: &RedisServer) -> u64 {
    let out = Command::new("redis-cli")
        .args(["-p", &redis.port().to_string(), "DBSIZE"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn help_explains_commands_and_env() {
    let out = Command::new(env!("CARGO_BIN_EXE_conftag"))
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for word in ["submit", "status", "requeue", "export", "REDIS_URL"] {
        assert!(text.contains(word), "{word} missing from --help:\n{text}");
    }
}

#[test]
fn bad_input_is_refused_with_a_clear_message_and_nothing_written() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let dir = tempfile::tempdir().unwrap();

    let o = conftag(&url, &["submit", "--model", "m", "--dataset", "trivia"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--dataset"), "{}", stderr(&o));

    let missing = dir.path().join("nope.jsonl");
    let o = conftag(
        &url,
        &[
            "submit",
            "--model",
            "m",
            "--dataset",
            "boolq",
            "--data",
            missing.to_str().unwrap(),
        ],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("nope.jsonl") && stderr(&o).contains("--data"),
        "{}",
        stderr(&o)
    );

    let bad = write(
        dir.path(),
        "bad.jsonl",
        "{\"question\":\"q\",\"answer\":true,\"passage\":\"p\"}\n{oops\n",
    );
    let o = conftag(
        &url,
        &[
            "submit",
            "--model",
            "m",
            "--dataset",
            "boolq",
            "--data",
            bad.to_str().unwrap(),
        ],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("bad.jsonl") && stderr(&o).contains("line 2"),
        "{}",
        stderr(&o)
    );

    let typed = write(
        dir.path(),
        "typed.jsonl",
        "{\"question\":\"q\",\"answer\":\"yes\",\"passage\":\"p\"}\n",
    );
    let o = conftag(
        &url,
        &[
            "submit",
            "--model",
            "m",
            "--dataset",
            "boolq",
            "--data",
            typed.to_str().unwrap(),
        ],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("`answer`") && stderr(&o).contains("a boolean"),
        "{}",
        stderr(&o)
    );

    // With two datasets, one bad file means no job at all.
    let both = format!("math={}", samples("math.jsonl"));
    let broken = format!("boolq={}", bad.display());
    let o = conftag(
        &url,
        &[
            "submit",
            "--model",
            "m",
            "--dataset",
            "math,boolq",
            "--data",
            &both,
            "--data",
            &broken,
        ],
    );
    assert!(!o.status.success());

    let o = conftag(
        &url,
        &[
            "submit",
            "--model",
            "m",
            "--dataset",
            "boolq",
            "--split",
            "../../etc",
            "--data",
            &samples("boolq.jsonl"),
        ],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--split"), "{}", stderr(&o));

    assert_eq!(dbsize(&redis), 0, "nothing half-written");
}

#[test]
fn an_unreachable_redis_names_the_url_but_not_the_password() {
    let port = common::testutil::free_port();
    let url = format!("redis://:topsecret@127.0.0.1:{port}");
    let o = conftag(&url, &["status"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains(&format!("127.0.0.1:{port}")) && e.contains("***"),
        "{e}"
    );
    assert!(!e.contains("topsecret"), "{e}");
}

#[test]
fn submit_status_resubmit_requeue_and_export_behave() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let data = samples("medqa.jsonl");
    let o = conftag(
        &url,
        &[
            "submit",
            "--model",
            "org/Model-1.5B",
            "--dataset",
            "medqa",
            "--split",
            "test",
            "--data",
            &data,
            "--shard-size",
            "4",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let created: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let id = created["jobs"][0]["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("model15b_medqa_test-"), "{id}");
    assert_eq!(created["jobs"][0]["created"], true);

    // Same again: a no-op. Other settings: refused, naming the difference.
    let o = conftag(
        &url,
        &[
            "submit",
            "--model",
            "org/Model-1.5B",
            "--dataset",
            "medqa",
            "--split",
            "test",
            "--data",
            &data,
            "--shard-size",
            "4",
            "--json",
        ],
    );
    assert!(o.status.success());
    let again: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(again["jobs"][0]["created"], false);
    let o = conftag(
        &url,
        &[
            "submit",
            "--model",
            "org/Model-1.5B",
            "--dataset",
            "medqa",
            "--split",
            "test",
            "--data",
            &data,
            "--max-tokens",
            "9",
        ],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("max_tokens"), "{}", stderr(&o));

    let o = conftag(&url, &["status", "--json"]);
    assert!(o.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["schema"], 1);
    let job = &doc["jobs"][0];
    assert_eq!(
        (job["id"].as_str().unwrap(), job["state"].as_str().unwrap()),
        (id.as_str(), "queued")
    );
    assert_eq!(
        (job["rows"].as_u64(), job["shards"]["total"].as_u64()),
        (Some(6), Some(2))
    );
    assert_eq!(job["model"], "org/Model-1.5B");
    assert_eq!(
        (job["dataset"].as_str(), job["split"].as_str()),
        (Some("medqa"), Some("test"))
    );

    let o = conftag(&url, &["requeue", &id]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--failed"), "{}", stderr(&o));

    let out = tempfile::tempdir().unwrap();
    let o = conftag(
        &url,
        &["export", &id, "--out", out.path().to_str().unwrap()],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("not finished") && stderr(&o).contains("shards 0, 1"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        std::fs::read_dir(out.path()).unwrap().count(),
        0,
        "nothing written"
    );

    // A job prefix is enough; cancel then shows up in status.
    let o = conftag(&url, &["cancel", &id[..12]]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = conftag(&url, &["status", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["jobs"][0]["state"], "cancelled");
}

#[test]
fn a_redis_password_never_reaches_output_logs_or_redis() {
    let redis = RedisServer::start_with(true, Some("s3cr3t-redis-pw")).unwrap();
    let url = redis.url();
    assert!(url.contains("s3cr3t-redis-pw"));
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_conftag"))
            .args(args)
            .env("REDIS_URL", &url)
            .env("RUST_LOG", "trace")
            .env("OPENAI_API_KEY", "sk-never-printed")
            .output()
            .unwrap()
    };
    let data = samples("boolq.jsonl");
    let outputs = [
        run(&[
            "submit",
            "--model",
            "m",
            "--dataset",
            "boolq",
            "--split",
            "test",
            "--data",
            &data,
        ]),
        run(&["status", "--json"]),
        run(&["status"]),
        run(&["workers", "--json"]),
        run(&["--help"]),
        run(&["--log-format", "json", "status"]),
    ];
    for o in &outputs {
        assert!(o.status.success(), "{}", stderr(o));
        for text in [
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
        ] {
            assert!(
                !text.contains("s3cr3t-redis-pw"),
                "password printed:\n{text}"
            );
            assert!(
                !text.contains("sk-never-printed"),
                "API key printed:\n{text}"
            );
        }
    }
    // Wrong password: a clear error, still without the password.
    let bad = Command::new(env!("CARGO_BIN_EXE_conftag"))
        .args(["status"])
        .env("REDIS_URL", url.replace("s3cr3t-redis-pw", "wr0ng-pw"))
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(!stderr(&bad).contains("wr0ng-pw"), "{}", stderr(&bad));
    // Nothing in Redis holds either secret.
    let dump = Command::new("redis-cli")
        .args([
            "-p",
            &redis.port().to_string(),
            "-a",
            "s3cr3t-redis-pw",
            "--no-auth-warning",
            "--scan",
        ])
        .output()
        .unwrap();
    let keys = String::from_utf8_lossy(&dump.stdout).to_string();
    assert!(!keys.trim().is_empty());
    for key in keys.lines() {
        let v = Command::new("redis-cli")
            .args([
                "-p",
                &redis.port().to_string(),
                "-a",
                "s3cr3t-redis-pw",
                "--no-auth-warning",
                "DUMP",
                key,
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&v.stdout);
        assert!(
            !text.contains("s3cr3t-redis-pw") && !text.contains("sk-never-printed"),
            "secret in {key}"
        );
    }
}
