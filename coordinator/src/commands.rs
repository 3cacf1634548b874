//! One function per `conftag` subcommand.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use common::dataset::{self, DatasetSource, InputRow};
use common::dataset_spec::{Checker, DatasetSpec, SpecCatalog};
use common::export;
use common::job::{JobId, JobSpec, JudgeMode, JudgeSettings, PromptMode};
use common::queue::{Queue, QueueError, RequeueRequest, RequeueSelection, Stage, SubmitOutcome};
use common::status;
use serde_json::json;
use tracing::warn;

use crate::cli::{
    BenchCommand, CancelArgs, Cli, Command, DatasetsArgs, ExportArgs, MonitorArgs, RequeueArgs,
    StageArg, StatusArgs, SubmitArgs, WorkersArgs,
};
use crate::error::CommandError;
use crate::view;

/// Run one `conftag` command.
pub async fn run(cli: Cli) -> Result<(), CommandError> {
    if let Command::Monitor(_) = &cli.command {
        if cli.common.metrics_addr.is_none() {
            return Err(CommandError::Usage(
                "conftag monitor needs --metrics-addr ADDR (or CONFTAG_METRICS_ADDR), e.g. 0.0.0.0:9464".into(),
            ));
        }
    }
    if let Command::Bench(BenchCommand::Fleet {
        workers,
        seconds,
        idle_seconds,
        shard_secs,
        jitter,
        rows_per_shard,
        held_shards,
        row_bytes,
        lease_secs,
        idle_poll_ms,
        pickups,
        cluster,
        poll_only,
    }) = &cli.command
    {
        // Starts its own servers: no connection to --redis-url.
        let opts = crate::fleet::FleetOptions {
            workers: workers.clone(),
            seconds: *seconds,
            idle_seconds: *idle_seconds,
            shard_time: Duration::from_secs_f64(shard_secs.max(0.0)),
            jitter: jitter.clamp(0.0, 1.0),
            rows_per_shard: (*rows_per_shard).max(1),
            held_shards: (*held_shards).max(1),
            row_bytes: (row_bytes[0], row_bytes[1].max(row_bytes[0])),
            lease: Duration::from_secs((*lease_secs).max(3)),
            idle_poll: idle_poll_ms.map(Duration::from_millis),
            pickups: *pickups,
            cluster: *cluster,
            poll_only: *poll_only,
        };
        return crate::fleet::fleet_bench(&opts).await;
    }
    // Dataset specs are checked before Redis is reached: a bad spec costs nothing.
    let catalog = match &cli.command {
        Command::Datasets(a) => return datasets(a),
        Command::Submit(a) => Some(SpecCatalog::with_files(&a.dataset_specs)?),
        _ => None,
    };
    let queue = Queue::connect(&cli.common.redis_url()).await?;
    match cli.command {
        Command::Submit(a) => submit(&queue, a, &catalog.expect("loaded for submit")).await,
        Command::Datasets(_) => unreachable!("answered above"),
        Command::Status(a) => status_cmd(&queue, a).await,
        Command::Requeue(a) => requeue(&queue, a).await,
        Command::Export(a) => export_cmd(&queue, a).await,
        Command::Workers(a) => workers(&queue, a).await,
        Command::Cancel(a) => cancel(&queue, a).await,
        Command::Monitor(a) => monitor(&queue, &cli.common, a).await,
        Command::Bench(BenchCommand::Queue {
            workers,
            shards,
            rows_per_shard,
        }) => crate::bench::queue_bench(&queue, &workers, shards, rows_per_shard).await,
        Command::Bench(BenchCommand::Fleet { .. }) => unreachable!("handled above"),
        Command::Bench(BenchCommand::Status {
            rows,
            shard_size,
            repeats,
        }) => crate::bench::status_bench(&queue, rows, shard_size, repeats).await,
    }
}

/// The datasets to submit: those named by `--dataset`, in order, then the spec files' not
/// named there.
fn selected<'a>(
    args: &SubmitArgs,
    catalog: &'a SpecCatalog,
) -> Result<Vec<&'a DatasetSpec>, CommandError> {
    let mut out: Vec<&DatasetSpec> = Vec::new();
    for name in &args.datasets {
        let name = name.trim().to_lowercase();
        let spec = catalog.get(&name).ok_or_else(|| {
            CommandError::Usage(format!(
                "--dataset {name}: unknown dataset (known: {}; add your own with --dataset-spec FILE)",
                catalog.names()
            ))
        })?;
        if !out.iter().any(|s| s.name == spec.spec.name) {
            out.push(&spec.spec);
        }
    }
    for spec in catalog.given() {
        if !out.iter().any(|s| s.name == spec.spec.name) {
            out.push(&spec.spec);
        }
    }
    if out.is_empty() {
        return Err(CommandError::Usage(
            "no dataset to submit: give --dataset NAME or --dataset-spec FILE".into(),
        ));
    }
    Ok(out)
}

/// `DATASET=PATH` pairs, or one bare PATH when one dataset is submitted.
fn data_files(
    args: &SubmitArgs,
    datasets: &[&DatasetSpec],
) -> Result<BTreeMap<String, PathBuf>, CommandError> {
    let mut out = BTreeMap::new();
    for item in &args.data {
        let (dataset, path) = match item.split_once('=') {
            Some((name, path)) => (name.trim().to_lowercase(), PathBuf::from(path)),
            None if datasets.len() == 1 => (datasets[0].name.clone(), PathBuf::from(item)),
            None => {
                return Err(CommandError::Usage(format!(
                    "--data {item}: with several datasets, write --data DATASET=PATH"
                )))
            }
        };
        if !datasets.iter().any(|d| d.name == dataset) {
            let names: Vec<&str> = datasets.iter().map(|d| d.name.as_str()).collect();
            return Err(CommandError::Usage(format!(
                "--data {item}: unknown dataset `{dataset}` for this submit (submitting: {})",
                names.join(", ")
            )));
        }
        if path.is_dir() {
            return Err(CommandError::Usage(format!(
                "--data {item}: {} is a directory, not a dataset file",
                path.display()
            )));
        }
        if !path.is_file() {
            return Err(CommandError::Usage(format!(
                "--data {item}: {} is not a readable file",
                path.display()
            )));
        }
        out.insert(dataset, path);
    }
    Ok(out)
}

/// Where the rows of `split` of a dataset come from: `--data`, else the spec's file for the
/// split, else its hub repo.
fn source_of(
    spec: &DatasetSpec,
    split: &str,
    files: &BTreeMap<String, PathBuf>,
) -> Result<DatasetSource, CommandError> {
    if let Some(path) = files.get(&spec.name) {
        return Ok(DatasetSource::File { path: path.clone() });
    }
    if let Some(path) = spec.source.files.get(split) {
        return Ok(DatasetSource::File { path: path.clone() });
    }
    let splits = || {
        let mut all: Vec<&str> = spec.source.splits.iter().map(String::as_str).collect();
        all.extend(spec.source.files.keys().map(String::as_str));
        all.sort_unstable();
        all.dedup();
        all.join(", ")
    };
    if !spec.source.splits.is_empty() && !spec.source.splits.iter().any(|s| s == split) {
        return Err(CommandError::Usage(format!(
            "--split {split}: dataset `{}` has the splits {}; or give --data {}=PATH",
            spec.name,
            splits(),
            spec.name
        )));
    }
    DatasetSource::hub(spec, split).ok_or_else(|| {
        let known = splits();
        CommandError::Usage(format!(
            "dataset `{}` has no source for split `{split}` (its spec names no hub repo{}); give --data {}=PATH",
            spec.name,
            if known.is_empty() {
                String::new()
            } else {
                format!(", and files for {known} only")
            },
            spec.name
        ))
    })
}

async fn submit(
    queue: &Queue,
    args: SubmitArgs,
    catalog: &SpecCatalog,
) -> Result<(), CommandError> {
    if args.shard_size == 0 {
        return Err(CommandError::Usage(
            "--shard-size must be at least 1".into(),
        ));
    }
    if args.limit == Some(0) {
        return Err(CommandError::Usage(
            "--limit must be at least 1 (a job needs rows)".into(),
        ));
    }
    if args.max_attempts == 0 {
        return Err(CommandError::Usage(
            "--max-attempts must be at least 1".into(),
        ));
    }
    if args.max_tokens == Some(0) {
        return Err(CommandError::Usage(
            "--max-tokens must be at least 1".into(),
        ));
    }
    if args.split.trim().is_empty() || args.split.contains('/') {
        return Err(CommandError::Usage(format!(
            "--split {:?}: not a split name (train, validation, test, …)",
            args.split
        )));
    }
    for m in &args.models {
        if m.trim().is_empty() {
            return Err(CommandError::Usage("--model must not be empty".into()));
        }
    }
    let datasets = selected(&args, catalog)?;
    if args.judge_mode == JudgeMode::Rules {
        if let Some(d) = datasets.iter().find(|d| d.answer == Checker::None) {
            return Err(CommandError::Usage(format!(
                "--judge-mode rules: dataset `{}` has no rule checker (answer.checker = \"none\"); judge it with llm, hybrid or batch",
                d.name
            )));
        }
    }
    let files = data_files(&args, &datasets)?;

    // Load and check every split before anything is written.
    let mut loaded: Vec<(&DatasetSpec, PromptMode, String, Vec<InputRow>)> = Vec::new();
    for d in &datasets {
        let source = source_of(d, &args.split, &files)?;
        let prompt_mode = if args.chat_template || d.prompt.chat {
            PromptMode::Chat
        } else {
            PromptMode::Raw
        };
        let rows = dataset::load_split_for(d, &source, args.limit, prompt_mode).await?;
        loaded.push((*d, prompt_mode, source.label(), rows));
    }

    if queue.aof_enabled().await == Some(false) {
        warn!(
            redis = %queue.url(),
            "Redis runs without AOF persistence: results held in Redis would not survive a restart (set `appendonly yes`)"
        );
    }

    let judge = JudgeSettings {
        model: args.judge_model.clone(),
        mode: args.judge_mode,
        budget_micro_usd: budget(args.judge_budget_usd, "--judge-budget-usd")?,
    };
    let mut created = Vec::new();
    for model in &args.models {
        for (d, prompt_mode, label, rows) in &loaded {
            let max_tokens = args.max_tokens.unwrap_or(d.max_tokens);
            let spec = JobSpec::for_rows(
                model.clone(),
                d,
                args.split.clone(),
                label.clone(),
                rows,
                max_tokens,
                *prompt_mode,
            );
            let outcome = queue
                .submit(&spec, &judge, rows, args.shard_size, args.max_attempts)
                .await?;
            created.push((spec, outcome));
        }
    }
    if args.json {
        let jobs: Vec<_> = created
            .iter()
            .map(|(spec, outcome)| {
                let domain = spec.dataset_spec().map(|d| d.domain.clone()).ok();
                json!({
                    "id": spec.id(),
                    "model": spec.model,
                    "dataset": spec.dataset,
                    "domain": domain,
                    "split": spec.split,
                    "rows": spec.rows,
                    "created": matches!(outcome, SubmitOutcome::Created { .. }),
                })
            })
            .collect();
        println!("{}", json!({ "jobs": jobs }));
    } else {
        println!("{}", view::submitted_table(&created));
    }
    Ok(())
}

/// `conftag datasets`: the built-ins and the given spec files, each checked whole.
fn datasets(args: &DatasetsArgs) -> Result<(), CommandError> {
    let catalog = SpecCatalog::with_files(&args.dataset_specs)?;
    if args.json {
        let list: Vec<_> = catalog
            .all()
            .iter()
            .map(|l| {
                let s = &l.spec;
                json!({
                    "name": s.name,
                    "domain": s.domain,
                    "tokens": [s.confidence_token(true), s.confidence_token(false)],
                    "checker": s.answer.name(),
                    "max_tokens": s.max_tokens,
                    "hub": s.source.hub,
                    "files": s.source.files,
                    "origin": l.origin.to_string(),
                    "builtin": s.is_builtin(),
                    "digest": s.digest(),
                    "description": s.description,
                })
            })
            .collect();
        println!("{}", json!({ "datasets": list }));
    } else {
        println!("{}", view::datasets_table(&catalog));
    }
    Ok(())
}

/// USD from a flag → micro-USD, refusing negative or non-finite amounts.
fn budget(usd: Option<f64>, flag: &str) -> Result<Option<u64>, CommandError> {
    match usd {
        None => Ok(None),
        Some(v) if v.is_finite() && v >= 0.0 => Ok(Some((v * 1e6).round() as u64)),
        Some(v) => Err(CommandError::Usage(format!(
            "{flag} {v}: expected a non-negative amount of USD"
        ))),
    }
}

/// A job id, or a unique prefix of one.
async fn resolve_job(queue: &Queue, given: &str) -> Result<JobId, CommandError> {
    let all = queue.job_ids().await?;
    if let Some(id) = all.iter().find(|id| id.as_str() == given) {
        return Ok(id.clone());
    }
    let matches: Vec<&JobId> = all
        .iter()
        .filter(|id| id.as_str().starts_with(given))
        .collect();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(CommandError::Usage(format!(
            "no job `{given}` (see `conftag status`)"
        ))),
        many => Err(CommandError::Usage(format!(
            "`{given}` matches several jobs: {}",
            many.iter()
                .map(|j| j.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

async fn status_cmd(queue: &Queue, args: StatusArgs) -> Result<(), CommandError> {
    let mut jobs = Vec::new();
    for j in &args.jobs {
        jobs.push(resolve_job(queue, j).await?);
    }
    if args.watch {
        return view::watch(queue, &jobs, args.interval).await;
    }
    let doc = status::document(queue, &jobs).await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).expect("status serializes")
        );
    } else {
        println!("{}", view::status_text(&doc));
    }
    Ok(())
}

async fn monitor(
    queue: &Queue,
    common: &common::config::CommonArgs,
    args: MonitorArgs,
) -> Result<(), CommandError> {
    if !(args.interval.is_finite() && args.interval > 0.0) {
        return Err(CommandError::Usage(format!(
            "--interval {}: expected a positive number of seconds",
            args.interval
        )));
    }
    common
        .serve_metrics()
        .map_err(|e| CommandError::Usage(e.to_string()))?;
    let shutdown = common::worker::shutdown_on_signals();
    crate::monitor::run(queue, Duration::from_secs_f64(args.interval), shutdown).await?;
    Ok(())
}

async fn requeue(queue: &Queue, args: RequeueArgs) -> Result<(), CommandError> {
    let job = resolve_job(queue, &args.job).await?;
    let chosen = [args.failed, args.stuck, args.all, !args.shards.is_empty()]
        .iter()
        .filter(|b| **b)
        .count();
    if chosen != 1 {
        return Err(CommandError::Usage(
            "say which shards: exactly one of --failed, --stuck, --all or --shard ID".into(),
        ));
    }
    let selection = if args.failed {
        RequeueSelection::Failed
    } else if args.stuck {
        RequeueSelection::Stuck
    } else if args.all {
        RequeueSelection::All
    } else {
        RequeueSelection::Shards(args.shards.clone())
    };
    let target = args.stage.map(|s| match s {
        StageArg::Infer => Stage::Infer,
        StageArg::Judge => Stage::Judge,
    });
    let judge = if args.judge_model.is_some()
        || args.judge_mode.is_some()
        || args.judge_budget_usd.is_some()
    {
        if target != Some(Stage::Judge) && target != Some(Stage::Infer) {
            return Err(CommandError::Usage(
                "--judge-model/--judge-mode/--judge-budget-usd need --stage judge (or infer)"
                    .into(),
            ));
        }
        let (_, current) = queue
            .job_spec(&job)
            .await?
            .ok_or_else(|| QueueError::NoSuchJob(job.clone()))?;
        Some(JudgeSettings {
            model: args.judge_model.clone().unwrap_or(current.model),
            mode: args.judge_mode.unwrap_or(current.mode),
            budget_micro_usd: match args.judge_budget_usd {
                Some(b) => budget(Some(b), "--judge-budget-usd")?,
                None => current.budget_micro_usd,
            },
        })
    } else {
        None
    };
    let force = args.force || (args.all && target == Some(Stage::Judge));
    let out = queue
        .requeue(
            &job,
            &RequeueRequest {
                selection,
                target,
                force,
                judge,
            },
        )
        .await?;
    if args.json {
        println!(
            "{}",
            json!({"job": job, "requeued": out.requeued, "skipped": out.skipped})
        );
    } else {
        println!("{job}: requeued {} shard(s)", out.requeued);
        if !out.skipped.is_empty() && !args.all {
            println!(
                "skipped (done or live lease; use --force): {}",
                out.skipped
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    Ok(())
}

async fn export_cmd(queue: &Queue, args: ExportArgs) -> Result<(), CommandError> {
    let jobs = if args.all {
        queue.job_ids().await?
    } else {
        let mut v = Vec::new();
        for j in &args.jobs {
            v.push(resolve_job(queue, j).await?);
        }
        v
    };
    if jobs.is_empty() {
        return Err(CommandError::Usage("no jobs to export".into()));
    }
    let done = export::export_jobs(queue, &jobs, &args.out, args.partial).await?;
    let report = if args.report {
        let ids: Vec<JobId> = done.iter().map(|d| d.job.clone()).collect();
        let statuses = status::document(queue, &ids).await?.jobs;
        Some(crate::report::write_report(&args.out, &statuses)?)
    } else {
        None
    };
    if args.json {
        let list: Vec<_> = done
            .iter()
            .map(|d| {
                json!({
                    "job": d.job, "predictions": d.predictions, "tagged": d.tagged,
                    "rows": d.rows, "predicted": d.predicted, "tagged_rows": d.tagged_rows,
                    "unjudged": d.unjudged, "correct": d.correct,
                })
            })
            .collect();
        let report = report.map(|r| json!({"summary": r.summary, "chart": r.chart}));
        println!("{}", json!({ "exported": list, "report": report }));
    } else {
        println!("{}", view::export_table(&done));
        if let Some(r) = report {
            println!("report: {} and {}", r.summary.display(), r.chart.display());
        }
    }
    Ok(())
}

async fn workers(queue: &Queue, args: WorkersArgs) -> Result<(), CommandError> {
    let list = status::workers(queue).await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&list).expect("workers serialize")
        );
    } else {
        println!("{}", view::workers_table(&list));
    }
    Ok(())
}

async fn cancel(queue: &Queue, args: CancelArgs) -> Result<(), CommandError> {
    let job = resolve_job(queue, &args.job).await?;
    let changed = queue.cancel(&job).await?;
    if args.purge {
        queue.purge(&job).await?;
        println!("{job}: cancelled and deleted from Redis");
    } else if changed {
        println!("{job}: cancelled");
    } else {
        println!("{job}: already cancelled");
    }
    Ok(())
}
