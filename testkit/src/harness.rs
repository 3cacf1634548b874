//! libtest's command line for `harness = false` test targets.
//!
//! A test that needs a process running code of this tree (a judge worker, a worker killed
//! with SIGKILL) re-executes its own binary in that role: cargo builds only the package's own
//! binaries for its integration tests, and a binary in a production crate just for tests is
//! what issue #14 removed. Such a target has no libtest `main`, so these functions answer what
//! cargo and a developer pass (`--list`, a name filter, `--skip`) as libtest would.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::ExitCode;

/// What libtest's arguments (as cargo passes them) ask of one test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Harness {
    Run,
    List,
    FilteredOut,
}

/// `--list`, a name filter that does not match `name`, or a `--skip` that does; other flags
/// are ignored (`--exact` too: filters match as substrings).
pub fn harness_request(name: &str, args: &[String]) -> Harness {
    let mut filters = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--list" => return Harness::List,
            "--skip" => {
                if it.next().is_some_and(|skip| name.contains(skip.as_str())) {
                    return Harness::FilteredOut;
                }
            }
            "--test-threads" | "--format" | "--color" | "--logfile" | "-Z" => {
                it.next();
            }
            s if s.starts_with('-') => {}
            s => filters.push(s),
        }
    }
    if filters.is_empty() || filters.iter().any(|f| name.contains(f)) {
        Harness::Run
    } else {
        Harness::FilteredOut
    }
}

/// Run `test` as libtest would run a single test called `name`; `test` panics on failure and
/// returns the word after `test NAME ... ` (`ok`, or why it skipped).
pub fn run_as_test(name: &str, args: &[String], test: impl FnOnce() -> String) -> ExitCode {
    match harness_request(name, args) {
        Harness::List => println!("{name}: test"),
        Harness::FilteredOut => println!("running 0 tests ({name} filtered out)"),
        Harness::Run => {
            println!("running 1 test");
            let outcome = test();
            println!("test {name} ... {outcome}");
        }
    }
    ExitCode::SUCCESS
}

/// Run several tests one after another, as libtest would with `--test-threads 1`: each
/// selected test runs (a panic fails it, not the others), then a libtest summary line;
/// the exit code fails if any test did.
pub fn run_tests(args: &[String], tests: &[(&str, fn())]) -> ExitCode {
    let mut selected = Vec::new();
    let mut filtered = 0;
    for (name, test) in tests {
        match harness_request(name, args) {
            Harness::List => println!("{name}: test"),
            Harness::FilteredOut => filtered += 1,
            Harness::Run => selected.push((*name, *test)),
        }
    }
    if args.iter().any(|a| a == "--list") {
        return ExitCode::SUCCESS;
    }
    println!("running {} tests", selected.len());
    let mut failed = Vec::new();
    for (name, test) in &selected {
        let outcome = catch_unwind(AssertUnwindSafe(test));
        println!(
            "test {name} ... {}",
            if outcome.is_ok() { "ok" } else { "FAILED" }
        );
        if outcome.is_err() {
            failed.push(*name);
        }
    }
    println!(
        "\ntest result: {}. {} passed; {} failed; 0 ignored; 0 measured; {filtered} filtered out",
        if failed.is_empty() { "ok" } else { "FAILED" },
        selected.len() - failed.len(),
        failed.len()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!("failures: {}", failed.join(", "));
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn filters_skips_and_list_are_read_as_libtest_reads_them() {
        assert_eq!(harness_request("kill_worker", &args(&[])), Harness::Run);
        assert_eq!(
            harness_request("kill_worker", &args(&["kill"])),
            Harness::Run
        );
        assert_eq!(
            harness_request("kill_worker", &args(&["other"])),
            Harness::FilteredOut
        );
        assert_eq!(
            harness_request("kill_worker", &args(&["--skip", "kill"])),
            Harness::FilteredOut
        );
        assert_eq!(
            harness_request("kill_worker", &args(&["--test-threads", "other", "--list"])),
            Harness::List
        );
        assert_eq!(
            harness_request("kill_worker", &args(&["--format", "x", "kill"])),
            Harness::Run
        );
    }

    #[test]
    fn a_failing_test_fails_the_run_and_not_its_neighbours() {
        fn pass() {}
        fn fail() {
            panic!("expected failure");
        }
        let both: [(&str, fn()); 2] = [("a", pass), ("b", fail)];
        let code = |c: ExitCode| format!("{c:?}");
        let failure = code(ExitCode::FAILURE);
        let success = code(ExitCode::SUCCESS);
        assert_eq!(code(run_tests(&[], &both)), failure);
        assert_eq!(code(run_tests(&[], &both[..1])), success);
        assert_eq!(code(run_tests(&args(&["a"]), &both)), success);
    }
}
