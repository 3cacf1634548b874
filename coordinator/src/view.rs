//! How `conftag` shows things to people: tables, and the `--watch` progress view.

use std::collections::HashMap;
use std::time::Duration;

use comfy_table::{presets::UTF8_BORDERS_ONLY, Table};
use common::dataset_spec::SpecCatalog;
use common::export::ExportedJob;
use common::job::{JobId, JobSpec};
use common::queue::{Queue, SubmitOutcome};
use common::status::{self, JobStatus, StatusDocument, WorkerInfo, WorkerStatus};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::error::CommandError;

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY).set_header(header.to_vec());
    t
}

pub fn submitted_table(created: &[(JobSpec, SubmitOutcome)]) -> String {
    let mut t = table(&[
        "job", "model", "dataset", "domain", "split", "rows", "result",
    ]);
    for (spec, outcome) in created {
        t.add_row(vec![
            spec.id().to_string(),
            spec.model.clone(),
            spec.dataset.clone(),
            spec.dataset_spec()
                .map(|d| d.domain.clone())
                .unwrap_or_default(),
            spec.split.clone(),
            spec.rows.to_string(),
            match outcome {
                SubmitOutcome::Created { shards } => format!("created, {shards} shards"),
                SubmitOutcome::AlreadyExists => "already submitted".into(),
            },
        ]);
    }
    t.to_string()
}

fn pct(x: Option<f64>) -> String {
    x.map_or("-".into(), |a| format!("{:.1}%", a * 100.0))
}

fn eta(s: Option<f64>) -> String {
    match s {
        None => "-".into(),
        Some(s) if s < 1.0 => "0s".into(),
        Some(s) => {
            let s = s as u64;
            if s >= 3600 {
                format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
            } else if s >= 60 {
                format!("{}m{:02}s", s / 60, s % 60)
            } else {
                format!("{s}s")
            }
        }
    }
}

pub fn status_text(doc: &StatusDocument) -> String {
    let mut t = table(&[
        "job",
        "domain",
        "state",
        "rows",
        "inferred",
        "judged",
        "acc",
        "shards q/l/done/fail",
        "tok/s",
        "rows/s",
        "ETA",
        "judge $ paid[/budget]",
    ]);
    for j in &doc.jobs {
        t.add_row(vec![
            j.id.to_string(),
            j.domain.clone(),
            format!("{:?}", j.state).to_lowercase(),
            j.rows.to_string(),
            j.rows_inferred.to_string(),
            j.rows_judged.to_string(),
            pct(j.accuracy),
            format!(
                "{}/{}/{}/{}",
                j.shards.queued.infer + j.shards.queued.judge,
                j.shards.leased.infer + j.shards.leased.judge,
                j.shards.done,
                j.shards.failed
            ),
            format!("{:.1}", j.rates.tokens_per_s),
            format!("{:.2}", j.rates.judge_rows_per_s),
            eta(j.eta_s),
            match j.judge.budget_usd {
                Some(b) => format!("{:.4}/{b:.2}", j.judge.paid_usd),
                None => format!("{:.4}", j.judge.paid_usd),
            },
        ]);
    }
    let mut out = if doc.jobs.is_empty() {
        "no jobs".to_owned()
    } else {
        t.to_string()
    };
    for j in &doc.jobs {
        for f in &j.failed_shards {
            out.push_str(&format!(
                "\n{} shard {} failed at {} after {} attempts: {}",
                j.id, f.shard, f.stage, f.attempts, f.error
            ));
        }
        if let Some(p) = &j.judge.paused {
            out.push_str(&format!("\n{}: judging paused: {p}", j.id));
        }
        if j.rows_infer_errors + j.rows_judge_errors > 0 {
            out.push_str(&format!(
                "\n{}: {} row(s) could not run, {} row(s) the judge could not decide",
                j.id, j.rows_infer_errors, j.rows_judge_errors
            ));
        }
        let f = &j.failures;
        if f != &Default::default() || j.judge.call_retries > 0 {
            out.push_str(&format!(
                "\n{}: ridden out: infer {} failed attempt(s), {} lapsed lease(s) ({} of unstarted shards, no attempt spent); judge {} failed attempt(s), {} lapsed lease(s) ({} of unstarted shards, no attempt spent), {} API call(s) retried",
                j.id,
                f.infer.attempts_failed,
                f.infer.leases_expired,
                f.infer.leases_lapsed_unstarted,
                f.judge.attempts_failed,
                f.judge.leases_expired,
                f.judge.leases_lapsed_unstarted,
                j.judge.call_retries
            ));
        }
    }
    let alive = doc.workers.iter().filter(|w| w.alive).count();
    out.push_str(&format!("\nworkers alive: {alive}"));
    for w in doc
        .workers
        .iter()
        .filter(|w| w.alive && w.info.kind == "infer")
    {
        out.push_str(&format!("\n  {} {}", w.info.id, throughput(&w.info)));
    }
    for w in doc
        .workers
        .iter()
        .filter(|w| w.info.state.starts_with("stopped"))
    {
        out.push_str(&format!("\n  worker {} {}", w.info.id, w.info.state));
    }
    out
}

/// `154.3 tok/s on NVIDIA H100 80GB HBM3, 1.3 % of its 11,540 tok/s ceiling`.
fn throughput(w: &WorkerInfo) -> String {
    let rate = match w.tokens_per_s {
        Some(r) => format!("{r:.1} tok/s"),
        None => "– tok/s".to_owned(),
    };
    let device = w.device.as_deref().unwrap_or("unknown device");
    match w.ceiling_tokens_per_s {
        Some(c) if c > 0.0 => format!(
            "{rate} on {device}, {} of its {c:.0} tok/s ceiling",
            pct(w.tokens_per_s.map(|r| r / c))
        ),
        _ => format!("{rate} on {device} (no ceiling known)"),
    }
}

pub fn workers_table(list: &[WorkerStatus]) -> String {
    if list.is_empty() {
        return "no workers".into();
    }
    let mut t = table(&[
        "worker",
        "kind",
        "model",
        "state",
        "alive",
        "shards held",
        "rows done",
        "tok/s vs ceiling",
    ]);
    for w in list {
        t.add_row(vec![
            w.info.id.clone(),
            w.info.kind.clone(),
            w.info.model.clone().unwrap_or_default(),
            w.info.state.clone(),
            if w.alive {
                "yes"
            } else {
                "no (stale heartbeat)"
            }
            .into(),
            w.info.shards.join(" "),
            w.info.rows_done.to_string(),
            if w.info.kind == "infer" {
                throughput(&w.info)
            } else {
                String::new()
            },
        ]);
    }
    t.to_string()
}

pub fn export_table(done: &[ExportedJob]) -> String {
    let mut t = table(&[
        "job",
        "domain",
        "rows",
        "predicted",
        "tagged",
        "unjudged",
        "accuracy",
        "tagged file",
    ]);
    for d in done {
        let judged = d.tagged_rows;
        t.add_row(vec![
            d.job.to_string(),
            d.domain.clone(),
            d.rows.to_string(),
            d.predicted.to_string(),
            d.tagged_rows.to_string(),
            d.unjudged.to_string(),
            pct((judged > 0).then(|| d.correct as f64 / judged as f64)),
            d.tagged.display().to_string(),
        ]);
    }
    t.to_string()
}

/// `conftag datasets`: one line per dataset spec.
pub fn datasets_table(catalog: &SpecCatalog) -> String {
    let mut t = table(&[
        "dataset",
        "tokens",
        "checker",
        "max tokens",
        "source",
        "spec",
        "digest",
    ]);
    for l in catalog.all() {
        let s = &l.spec;
        let mut source: Vec<String> = s.source.hub.iter().map(|h| format!("hub:{h}")).collect();
        source.extend(
            s.source
                .files
                .iter()
                .map(|(split, p)| format!("{split}: {}", p.display())),
        );
        t.add_row(vec![
            s.name.clone(),
            format!("{} {}", s.confidence_token(true), s.confidence_token(false)),
            s.answer.name().to_owned(),
            s.max_tokens.to_string(),
            if source.is_empty() {
                "--data only".to_owned()
            } else {
                source.join("\n")
            },
            l.origin.to_string(),
            s.digest()[..12].to_owned(),
        ]);
    }
    t.to_string()
}

fn bar_message(j: &JobStatus) -> String {
    format!(
        "{} inferred {}/{} | {} | acc {} | {:.1} tok/s | ETA {}",
        format!("{:?}", j.state).to_lowercase(),
        j.rows_inferred,
        j.rows,
        if j.shards.failed > 0 {
            format!("{} failed shards", j.shards.failed)
        } else {
            "no failures".into()
        },
        pct(j.accuracy),
        j.rates.tokens_per_s,
        eta(j.eta_s)
    )
}

/// Refresh progress bars (rows judged / rows) until Ctrl-C.
pub async fn watch(queue: &Queue, jobs: &[JobId], interval: f64) -> Result<(), CommandError> {
    let multi = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix:40} [{bar:30}] {pos}/{len} judged  {msg}")
        .expect("valid template")
        .progress_chars("=> ");
    let mut bars: HashMap<JobId, ProgressBar> = HashMap::new();
    let interval = Duration::from_secs_f64(interval.max(0.2));
    loop {
        let doc = status::document(queue, jobs).await?;
        for j in &doc.jobs {
            let bar = bars.entry(j.id.clone()).or_insert_with(|| {
                let b = multi.add(ProgressBar::new(j.rows));
                b.set_style(style.clone());
                b.set_prefix(j.id.to_string());
                b
            });
            bar.set_length(j.rows);
            bar.set_position(j.rows_judged);
            bar.set_message(bar_message(j));
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    for b in bars.values() {
        b.abandon();
    }
    Ok(())
}
