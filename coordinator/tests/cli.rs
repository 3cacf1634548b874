//! The `conftag` binary against a real Redis: bad input gets a clear error naming the
//! file/row/column/flag, a non-zero exit, and nothing half-written; status reports exactly.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use testkit::{files_under, samples_arg as samples, RedisServer, Submit};

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

/// Assert the command failed and its stderr names every one of `words`; `what` labels the case.
fn assert_refused(o: &Output, what: &str, words: &[&str]) {
    let e = stderr(o);
    assert!(!o.status.success(), "{what} accepted");
    for w in words {
        assert!(e.contains(w), "{what}: `{w}` missing from: {e}");
    }
    assert!(!e.contains("panicked"), "{what}: {e}");
}

/// `conftag submit --model m --dataset DATASETS` plus `extra`.
fn submit(redis: &str, datasets: &str, extra: &[&str]) -> Output {
    conftag(redis, &Submit::new("m", datasets).extra(extra).args())
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

    assert_refused(
        &submit(&url, "trivia", &[]),
        "dataset trivia",
        &["--dataset"],
    );

    let missing = dir.path().join("nope.jsonl");
    let bad = write(
        dir.path(),
        "bad.jsonl",
        "{\"question\":\"q\",\"answer\":true,\"passage\":\"p\"}\n{oops\n",
    );
    let typed = write(
        dir.path(),
        "typed.jsonl",
        "{\"question\":\"q\",\"answer\":\"yes\",\"passage\":\"p\"}\n",
    );
    for (path, words) in [
        (&missing, vec!["nope.jsonl", "--data"]),
        (&bad, vec!["bad.jsonl", "line 2"]),
        (&typed, vec!["`answer`", "a boolean"]),
    ] {
        let o = submit(&url, "boolq", &["--data", path.to_str().unwrap()]);
        assert_refused(&o, &path.display().to_string(), &words);
    }

    // With two datasets, one bad file means no job at all.
    let both = format!("math={}", samples("math.jsonl"));
    let broken = format!("boolq={}", bad.display());
    let o = submit(&url, "math,boolq", &["--data", &both, "--data", &broken]);
    assert_refused(&o, "one bad file of two", &["bad.jsonl"]);

    let boolq = samples("boolq.jsonl");
    let o = submit(&url, "boolq", &["--split", "../../etc", "--data", &boolq]);
    assert_refused(&o, "--split ../../etc", &["--split"]);

    assert_eq!(redis.dbsize(), 0, "nothing half-written");
}

#[test]
fn an_unreachable_redis_names_the_url_but_not_the_password() {
    let port = testkit::free_port();
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
    let medqa = Submit::new("org/Model-1.5B", "medqa")
        .split("test")
        .data(samples("medqa.jsonl"));
    let o = conftag(&url, &medqa.clone().shard_size(4).json().args());
    assert!(o.status.success(), "{}", stderr(&o));
    let created: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let id = created["jobs"][0]["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("model15b_medqa_test-"), "{id}");
    assert_eq!(created["jobs"][0]["created"], true);

    // Same again: a no-op. Other settings: refused, naming the difference.
    let o = conftag(&url, &medqa.clone().shard_size(4).json().args());
    assert!(o.status.success());
    let again: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(again["jobs"][0]["created"], false);
    let o = conftag(&url, &medqa.max_tokens(9).args());
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
    let boolq = Submit::new("m", "boolq")
        .split("test")
        .data(samples("boolq.jsonl"));
    let outputs = [
        run(&boolq.args()),
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

fn boolq_line(q: &str, answer: &str, passage: &str) -> String {
    format!("{{\"question\":{q:?},\"answer\":{answer},\"passage\":{passage:?}}}\n")
}

/// The malformed-file corpus (see `common/tests/bad_input.rs` for the reader's side) through
/// `conftag submit`: each refused with the file, row/line and column named, and not one key
/// written to Redis.
#[test]
fn malformed_dataset_files_are_refused_by_submit_and_nothing_is_written() {
    use testkit::parquet::{write_parquet, ParquetValues};
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    let good_parquet = d.join("good.parquet");
    write_parquet(
        &good_parquet,
        &[
            ("question", ParquetValues::Utf8(vec![b"q".to_vec(); 40])),
            ("answer", ParquetValues::Bool(vec![true; 40])),
            ("passage", ParquetValues::Utf8(vec![b"p".to_vec(); 40])),
        ],
    )
    .unwrap();
    let bytes = std::fs::read(&good_parquet).unwrap();
    let wrong_type_parquet = d.join("int_answer.parquet");
    write_parquet(
        &wrong_type_parquet,
        &[
            ("question", ParquetValues::Utf8(vec![b"q".to_vec()])),
            ("answer", ParquetValues::Int64(vec![1])),
            ("passage", ParquetValues::Utf8(vec![b"p".to_vec()])),
        ],
    )
    .unwrap();
    let mut latin1 = boolq_line("q", "true", "p").into_bytes();
    latin1.extend_from_slice(b"{\"question\":\"caf\xE9\",\"answer\":true,\"passage\":\"p\"}\n");
    let huge = boolq_line("q", "true", &"x".repeat(50 << 20));
    let folder = d.join("folder.jsonl");
    std::fs::create_dir(&folder).unwrap();

    let cases: Vec<(PathBuf, Vec<&str>)> = vec![
        (
            write(
                d,
                "missing.jsonl",
                &(boolq_line("q", "true", "p") + "{\"question\":\"q\",\"answer\":true}\n"),
            ),
            vec![
                "missing.jsonl",
                "row 1 (line 2)",
                "missing column `passage`",
            ],
        ),
        (
            write(
                d,
                "typed.json",
                r#"[{"question":"q","answer":1,"passage":"p"}]"#,
            ),
            vec!["typed.json", "row 0", "column `answer` is a number"],
        ),
        (
            wrong_type_parquet,
            vec!["int_answer.parquet", "row 0", "column `answer` is a number"],
        ),
        (
            {
                let p = d.join("cut.parquet");
                std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
                p
            },
            vec!["cut.parquet", "not a readable parquet file"],
        ),
        (
            {
                let p = d.join("latin1.jsonl");
                std::fs::write(&p, &latin1).unwrap();
                p
            },
            vec!["latin1.jsonl", "line 2", "not valid UTF-8"],
        ),
        (
            write(d, "huge.jsonl", &huge),
            vec!["huge.jsonl", "row 0 (line 1)", "column `passage`", "1 MiB"],
        ),
        (write(d, "none.json", "[]"), vec!["none.json", "no rows"]),
        (
            write(d, "empty.jsonl", ""),
            vec!["empty.jsonl", "the file is empty"],
        ),
        (folder, vec!["folder.jsonl", "--data", "is a directory"]),
        (
            write(d, "rows.csv", "question,answer\n"),
            vec!["rows.csv", "unsupported file type"],
        ),
    ];
    for (path, words) in &cases {
        let o = submit(
            &url,
            "boolq",
            &["--split", "test", "--data", path.to_str().unwrap()],
        );
        assert_refused(&o, &path.display().to_string(), words);
        assert_eq!(
            redis.dbsize(),
            0,
            "{}: something was written",
            path.display()
        );
    }
    // The good file next to them is accepted: the corpus is refused for what is wrong in it.
    let o = submit(&url, "boolq", &["--data", good_parquet.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn bad_urls_and_flags_are_refused_naming_the_problem() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let data = samples("boolq.jsonl");

    for (bad, words) in [
        (
            "http://127.0.0.1:6379",
            vec!["invalid Redis URL", "unknown scheme `http://`"],
        ),
        ("mongodb://:pw-x@h:1", vec!["unknown scheme `mongodb://`"]),
        ("redis://:@", vec!["invalid Redis URL", "no host"]),
        (
            "redis://127.0.0.1:70000",
            vec!["port `70000`", "1 to 65535"],
        ),
        ("127.0.0.1:6379", vec!["expected redis://"]),
    ] {
        let o = submit(bad, "boolq", &["--data", &data]);
        assert_refused(&o, bad, &words);
        assert!(!stderr(&o).contains("pw-x"), "{}", stderr(&o));
    }

    for (extra, words) in [
        (vec!["--shard-size", "0"], vec!["--shard-size"]),
        (vec!["--limit", "0"], vec!["--limit"]),
        (vec!["--max-attempts", "0"], vec!["--max-attempts"]),
        (vec!["--max-tokens", "0"], vec!["--max-tokens"]),
        (
            vec!["--judge-budget-usd=-1"],
            vec!["--judge-budget-usd", "non-negative"],
        ),
        (
            vec!["--judge-budget-usd", "NaN"],
            vec!["--judge-budget-usd", "non-negative"],
        ),
        (vec!["--judge-mode", "vibes"], vec!["--judge-mode", "vibes"]),
        (vec!["--split", ""], vec!["--split"]),
        (vec!["--split", "a/b"], vec!["--split"]),
        (vec!["--model", ""], vec!["--model"]),
        (vec!["--shard-size", "many"], vec!["--shard-size", "many"]),
    ] {
        let mut args = vec!["--data", data.as_str()];
        args.extend_from_slice(&extra);
        assert_refused(&submit(&url, "boolq", &args), &format!("{extra:?}"), &words);
    }
    let o = submit(&url, "boolq", &["--data", &format!("trivia={data}")]);
    assert_refused(&o, "--data trivia=…", &["unknown dataset `trivia`"]);
    let mut args = vec!["--redis-ca-cert", &data];
    let boolq = Submit::new("m", "boolq").data(&data);
    args.extend(boolq.args());
    let o = conftag(&url, &args);
    assert_refused(&o, "--redis-ca-cert with redis://", &["not rediss://"]);
    let o = conftag(&url, &["--redis-client-cert", &data, "status"]);
    assert_refused(&o, "--redis-client-cert alone", &["--redis-client-key"]);

    assert_eq!(redis.dbsize(), 0, "nothing written");
}

/// Model, split and job names cannot steer `conftag export` out of `--out`: file stems keep
/// only `[a-z0-9_]`, and job arguments must be job ids.
#[test]
fn export_stays_inside_the_output_directory() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let data = samples("boolq.jsonl");
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("a/b/out");
    std::fs::create_dir_all(&out).unwrap();
    for (model, split) in [
        ("../../etc/x", "test"),
        ("..", "test"),
        ("/abs/../../y", ".."),
        ("org/..\\..\\z", "..\\.."),
    ] {
        let o = conftag(
            &url,
            &Submit::new(model, "boolq").split(split).data(&data).args(),
        );
        assert!(o.status.success(), "{model} {split}: {}", stderr(&o));
    }
    for bad in ["../../etc", "/etc/passwd", "x/../../y"] {
        let o = conftag(
            &url,
            &["export", bad, "--out", out.to_str().unwrap(), "--partial"],
        );
        assert!(!o.status.success(), "export {bad} accepted");
    }
    assert!(
        files_under(root.path()).is_empty(),
        "nothing written for bad job names"
    );

    let o = conftag(
        &url,
        &[
            "export",
            "--all",
            "--partial",
            "--out",
            out.to_str().unwrap(),
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let written = files_under(root.path());
    assert!(written.len() >= 8, "{written:?}");
    for f in &written {
        let canon = f.canonicalize().unwrap();
        assert!(
            canon.starts_with(out.canonicalize().unwrap()),
            "{} is outside {}",
            f.display(),
            out.display()
        );
        let name = f.file_name().unwrap().to_str().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.".contains(c)),
            "{name}"
        );
    }
}

fn spec_path(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../data/specs")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn dataset_specs_are_listed_submitted_beside_builtins_and_bad_ones_write_nothing() {
    let numqa = spec_path("numqa.toml");
    // `conftag datasets` needs no Redis.
    let o = conftag(
        "redis://127.0.0.1:1",
        &["datasets", "--dataset-spec", &numqa, "--json"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let listed: Vec<(&str, &str, bool)> = doc["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["name"].as_str().unwrap(),
                d["domain"].as_str().unwrap(),
                d["builtin"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![
            ("math", "MATH", true),
            ("medqa", "MED", true),
            ("boolq", "READ", true),
            ("numqa", "NUM", false)
        ]
    );
    let o = conftag("redis://127.0.0.1:1", &["datasets"]);
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(
        table.contains("<CN_MED>") && table.contains("boxed_math"),
        "{table}"
    );

    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(&numqa)
        .unwrap()
        .replace("../samples/numqa.jsonl", &samples("numqa.jsonl"));

    // Bad specs, alone or beside a good built-in: refused, nothing written.
    let boolq = format!("boolq={}", samples("boolq.jsonl"));
    for (name, text, words) in [
        (
            "checker.toml",
            good.replace("\"numeric\"", "\"fuzzy\""),
            vec![
                "checker.toml:",
                "`answer.checker`",
                "unknown checker `fuzzy`",
            ],
        ),
        (
            "tag.toml",
            good.replace("\"NUM\"", "\"READ\""),
            vec!["tag.toml:7", "`domain`", "<CN_READ>"],
        ),
        (
            "column.toml",
            good.replace("extra = [\"unit\"]", "extra = [\"unit\"]\nanswr = \"x\""),
            vec!["column.toml:", "columns.answr"],
        ),
        (
            "placeholder.toml",
            good.replace("Unit: {unit}\n\nAnswer:", "Unit: {units}\n\nAnswer:"),
            vec!["placeholder.toml:", "`prompt.template`", "`{units}`"],
        ),
    ] {
        let p = write(dir.path(), name, &text);
        let o = submit(
            &url,
            "boolq",
            &[
                "--data",
                &boolq,
                "--split",
                "test",
                "--dataset-spec",
                p.to_str().unwrap(),
            ],
        );
        assert_refused(&o, name, &words);
    }
    // A spec the rules cannot judge, under --judge-mode rules.
    let none = write(
        dir.path(),
        "none.toml",
        &good
            .replace("checker = \"numeric\"", "checker = \"none\"")
            .replace("tolerance = 0\nrelative_tolerance = 0.01\n", ""),
    );
    let o = conftag(
        &url,
        &Submit::model("m")
            .dataset_spec(&none)
            .split("test")
            .judge_mode("rules")
            .args(),
    );
    assert_refused(&o, "rules on a none checker", &["numqa", "no rule checker"]);
    // A split the spec has no source for.
    let good_path = write(dir.path(), "numqa.toml", &good);
    let o = conftag(
        &url,
        &Submit::model("m")
            .dataset_spec(&good_path)
            .split("train")
            .args(),
    );
    assert_refused(
        &o,
        "no source for train",
        &["split `train`", "--data numqa=PATH"],
    );
    assert_eq!(redis.dbsize(), 0, "nothing written by refused submits");

    // The spec beside a built-in: two jobs, each with its domain; the same again is a no-op.
    let args = [
        "--data",
        boolq.as_str(),
        "--split",
        "test",
        "--dataset-spec",
        good_path.to_str().unwrap(),
        "--json",
    ];
    let jobs = |o: &Output| -> Vec<(String, String, bool)> {
        assert!(o.status.success(), "{}", stderr(o));
        let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        doc["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| {
                (
                    j["id"].as_str().unwrap().to_owned(),
                    j["domain"].as_str().unwrap().to_owned(),
                    j["created"].as_bool().unwrap(),
                )
            })
            .collect()
    };
    let first = jobs(&submit(&url, "boolq", &args));
    assert_eq!(first.len(), 2);
    assert!(first[0].0.starts_with("m_boolq_test-") && first[0].1 == "READ" && first[0].2);
    assert!(first[1].0.starts_with("m_numqa_test-") && first[1].1 == "NUM" && first[1].2);
    let again = jobs(&submit(&url, "boolq", &args));
    assert_eq!(
        again.iter().map(|j| (&j.0, j.2)).collect::<Vec<_>>(),
        first.iter().map(|j| (&j.0, false)).collect::<Vec<_>>()
    );
    // A changed spec is another job over the same rows.
    let changed = write(
        dir.path(),
        "numqa.toml",
        &good.replace("relative_tolerance = 0.01", "relative_tolerance = 0.1"),
    );
    let o = conftag(
        &url,
        &Submit::model("m")
            .dataset_spec(&changed)
            .split("test")
            .json()
            .args(),
    );
    let third = jobs(&o);
    assert!(third[0].2 && third[0].0 != first[1].0, "{third:?}");

    // Status shows the domain.
    let o = conftag(&url, &["status", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let domains: Vec<&str> = doc["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["domain"].as_str().unwrap())
        .collect();
    assert_eq!(
        domains.iter().filter(|d| **d == "NUM").count(),
        2,
        "{domains:?}"
    );
    assert!(domains.contains(&"READ"));
    let o = conftag(&url, &["status"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("NUM"));
}
