//! Dataset specs end to end in `common`: the built-ins give the job ids the hard-wired
//! datasets gave (pinned here, computed independently of this code from the sample rows), the
//! example spec loads its own rows, a changed spec is another job, and bad specs are refused
//! with the file, line and key.

use std::path::{Path, PathBuf};

use common::dataset::{load_split, DatasetSource};
use common::dataset_spec::{builtin, load_spec_file, SpecCatalog};
use common::job::{JobSpec, PromptMode};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Job ids of `tiny` × each sample file, as the code before dataset specs computed them
/// (sha256 over model, name, split and the rows' digest; the rows re-derived from the seed's
/// prompt formats outside Rust).
const PINNED: [(&str, u64, &str, &str); 3] = [
    (
        "math",
        8,
        "686730796a682061a42d1e679c15e0f4c28d32ea888efc27c76d797e62734eed",
        "tiny_math_test-34cbf9b9",
    ),
    (
        "medqa",
        6,
        "0dff79cccfe71432603c39714587205b83bcaee1568de5b03cde2a08f3942ee5",
        "tiny_medqa_test-0b37157e",
    ),
    (
        "boolq",
        8,
        "b923aa2bcbc50beae6fb23ee311cc6bf0ea1cf94767516322ab31f67f0d60d13",
        "tiny_boolq_test-d9d7519d",
    ),
];

#[tokio::test]
async fn builtin_job_ids_and_stored_specs_are_unchanged() {
    for (name, rows, digest, id) in PINNED {
        let spec = builtin(name).unwrap();
        let source = DatasetSource::File {
            path: repo(&format!("data/samples/{name}.jsonl")),
        };
        let r = load_split(spec, &source, None).await.unwrap();
        let job = JobSpec::for_rows(
            "tiny",
            spec,
            "test",
            source.label(),
            &r,
            24,
            PromptMode::Raw,
        );
        assert_eq!(job.rows, rows);
        assert_eq!(job.rows_digest, digest, "{name}");
        assert_eq!(job.id().as_str(), id, "{name}");
        // The spec stored in Redis has the fields it always had, the dataset as its name.
        let stored: serde_json::Value = serde_json::from_str(&job.canonical_json()).unwrap();
        assert_eq!(
            stored.as_object().unwrap().keys().collect::<Vec<_>>(),
            vec![
                "model",
                "dataset",
                "split",
                "source",
                "rows",
                "max_tokens",
                "prompt_mode",
                "rows_digest"
            ]
        );
        assert_eq!(stored["dataset"], name);
        // A spec file with a built-in's content is that built-in.
        let copy = load_spec_file(&repo(&format!("data/specs/builtin/{name}.toml")))
            .unwrap()
            .spec;
        assert!(copy.is_builtin());
        let again = JobSpec::for_rows(
            "tiny",
            &copy,
            "test",
            source.label(),
            &r,
            24,
            PromptMode::Raw,
        );
        assert_eq!(again.id(), job.id());
        // A job stored before dataset specs reads back and finds its built-in spec.
        let old = format!(
            r#"{{"model":"tiny","dataset":"{name}","split":"test","source":"x","rows":{rows},"max_tokens":24,"prompt_mode":"raw","rows_digest":"{digest}"}}"#
        );
        let old: JobSpec = serde_json::from_str(&old).unwrap();
        assert_eq!(old.id().as_str(), id);
        assert_eq!(old.dataset_spec().unwrap().domain, spec.domain);
    }
}

#[tokio::test]
async fn the_example_spec_loads_its_rows_and_its_digest_makes_the_job() {
    let path = repo("data/specs/numqa.toml");
    let catalog = SpecCatalog::with_files(std::slice::from_ref(&path)).unwrap();
    let spec = &catalog.get("numqa").unwrap().spec;
    assert!(!spec.is_builtin());
    assert_eq!(spec.confidence_token(true), "<CN_NUM>");
    let source = DatasetSource::File {
        path: spec.source.files["test"].clone(),
    };
    let rows = load_split(spec, &source, None).await.unwrap();
    assert_eq!(rows.len(), 10);
    assert_eq!(rows[0].id.as_deref(), Some("nq-001"));
    assert_eq!(rows[0].correct_answer, serde_json::json!(8));
    assert_eq!(rows[9].correct_answer, serde_json::json!("3,000"));
    assert_eq!(
        rows[0].prompt,
        "Answer the question with a single number.\n\nQuestion: How many legs does a spider have?\nUnit: legs\n\nAnswer:"
    );
    let chat = common::dataset::load_split_for(spec, &source, Some(1), PromptMode::Chat)
        .await
        .unwrap();
    assert!(chat[0]
        .prompt
        .starts_with("Answer the question with a single number and nothing else.\n"));

    let job = JobSpec::for_rows(
        "tiny",
        spec,
        "test",
        source.label(),
        &rows,
        16,
        PromptMode::Raw,
    );
    assert_eq!(job.spec_digest.as_deref(), Some(spec.digest().as_str()));
    assert_eq!(job.dataset_spec().unwrap(), spec);
    // Stored and read back (as a worker does), the job keeps its spec and id.
    let back: JobSpec = serde_json::from_str(&job.canonical_json()).unwrap();
    assert_eq!(back.id(), job.id());
    assert_eq!(back.dataset_spec().unwrap().domain, "NUM");

    // The same rows under a changed spec (another tolerance): another job.
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("relative_tolerance = 0.01", "relative_tolerance = 0.05")
        .replace(
            "../samples/numqa.jsonl",
            &repo("data/samples/numqa.jsonl").display().to_string(),
        );
    let changed = load_spec_file(&write(dir.path(), "numqa.toml", &text))
        .unwrap()
        .spec;
    let other = JobSpec::for_rows(
        "tiny",
        &changed,
        "test",
        source.label(),
        &rows,
        16,
        PromptMode::Raw,
    );
    assert_eq!(other.rows_digest, job.rows_digest);
    assert_ne!(other.id(), job.id());
    assert!(other.id().as_str().starts_with("tiny_numqa_test-"));
}

#[test]
fn bad_specs_are_refused_with_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(repo("data/specs/numqa.toml")).unwrap();
    let line_of = |needle: &str| good.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let refused = |name: &str, text: String, words: &[&str]| {
        let p = write(dir.path(), name, &text);
        let e = SpecCatalog::with_files(&[p]).unwrap_err().to_string();
        assert!(
            e.contains(name),
            "{name}: the message does not name the file: {e}"
        );
        for w in words {
            assert!(e.contains(w), "{name}: `{w}` not in: {e}");
        }
    };

    // An unknown column part.
    refused(
        "unknown_column.toml",
        good.replace("id = \"qid\"", "row_id = \"qid\""),
        &[
            &format!(":{}:", line_of("id = \"qid\"")),
            "columns.row_id",
            "unknown field",
        ],
    );
    // A placeholder without a column.
    refused(
        "placeholder.toml",
        good.replace(
            "Unit: {unit}\n\nAnswer:",
            "Unit: {unit}\n{passage}\n\nAnswer:",
        ),
        &[
            &format!(":{}:", line_of("template = '''")),
            "`prompt.template`",
            "placeholder `{passage}` has no column",
        ],
    );
    // A tag that collides with a built-in, and a built-in's name.
    refused(
        "tag.toml",
        good.replace("domain = \"NUM\"", "domain = \"MATH\""),
        &[":7: `domain`", "<CN_MATH>", "built-in dataset `math`"],
    );
    refused(
        "name.toml",
        good.replace("name = \"numqa\"", "name = \"boolq\""),
        &[":6: `name`", "built-in dataset `boolq`"],
    );
    // An unknown checker.
    refused(
        "checker.toml",
        good.replace("checker = \"numeric\"", "checker = \"regex\""),
        &[
            &format!(":{}:", line_of("checker = \"numeric\"")),
            "`answer.checker`",
            "unknown checker `regex`",
            "boxed_math",
        ],
    );
    // Two given specs with one tag.
    let a = write(dir.path(), "a.toml", &good);
    let b = write(
        dir.path(),
        "b.toml",
        &good.replace("name = \"numqa\"", "name = \"numqa2\""),
    );
    let e = SpecCatalog::with_files(&[a, b]).unwrap_err().to_string();
    assert!(
        e.contains("b.toml") && e.contains("a.toml (`numqa`)"),
        "{e}"
    );
    // A file that is not there.
    let e = SpecCatalog::with_files(&[dir.path().join("absent.toml")])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("absent.toml") && e.contains("cannot read"),
        "{e}"
    );
}
