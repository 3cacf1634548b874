//! `conftag export --report`: a page a researcher can read at a glance: `report/summary.md`
//! (one row per model × dataset: accuracy, rows, tokens, judge spend, rules/LLM agreement)
//! and `report/accuracy.svg`, a grouped bar chart of accuracy per dataset and model drawn
//! with plotters. Everything comes from the jobs' counters, the same numbers `conftag status`
//! shows, so the report never disagrees with the status.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::export::{write_atomic, ExportError};
use common::status::JobStatus;
use plotters::prelude::*;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Write(#[from] ExportError),
    #[error("cannot draw the accuracy chart: {0}")]
    Chart(String),
}

/// Files written by [`write_report`].
#[derive(Debug, Clone)]
pub struct Report {
    pub summary: PathBuf,
    pub chart: PathBuf,
}

/// Write `out/report/summary.md` and `out/report/accuracy.svg` for `jobs`.
pub fn write_report(out: &Path, jobs: &[JobStatus]) -> Result<Report, ReportError> {
    let dir = out.join("report");
    let chart = dir.join("accuracy.svg");
    let summary = dir.join("summary.md");
    let svg = accuracy_svg(jobs)?;
    write_atomic(&chart, svg.as_bytes())?;
    write_atomic(&summary, summary_markdown(jobs).as_bytes())?;
    Ok(Report { summary, chart })
}

fn pct(x: Option<f64>) -> String {
    x.map_or("–".into(), |a| format!("{:.1} %", 100.0 * a))
}

/// The summary page: totals, then one table row per job.
pub fn summary_markdown(jobs: &[JobStatus]) -> String {
    let rows: u64 = jobs.iter().map(|j| j.rows).sum();
    let judged: u64 = jobs.iter().map(|j| j.rows_judged).sum();
    let correct: u64 = jobs.iter().map(|j| j.rows_correct).sum();
    let spend: f64 = jobs.iter().map(|j| j.judge.paid_usd).sum();
    let tokens: u64 = jobs.iter().map(|j| j.tokens_generated).sum();
    let mut md = String::from("# conftag report\n\n");
    md.push_str(&format!(
        "{} jobs, {rows} rows, {judged} judged, {correct} correct ({}), {tokens} tokens generated, judge spend ${spend:.4}.\n\n",
        jobs.len(),
        pct((judged > 0).then(|| correct as f64 / judged as f64)),
    ));
    md.push_str("![accuracy per model and dataset](accuracy.svg)\n\n");
    md.push_str("| model | dataset | split | rows | judged | correct | accuracy | row errors (infer / judge) | prompt tokens | output tokens | judge | judge calls | judge spend USD | rules decided | rules = LLM | rules ≠ LLM | domain |\n");
    md.push_str(
        "|---|---|---|---:|---:|---:|---:|---|---:|---:|---|---:|---:|---:|---:|---:|---|\n",
    );
    for j in jobs {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} / {} | {} | {} | {} ({}) | {} | {:.4} | {} | {} | {} | {} |\n",
            j.model,
            j.dataset,
            j.split,
            j.rows,
            j.rows_judged,
            j.rows_correct,
            pct(j.accuracy),
            j.rows_infer_errors,
            j.rows_judge_errors,
            j.prompt_tokens,
            j.tokens_generated,
            j.judge.model,
            j.judge.mode,
            j.judge.llm_calls,
            j.judge.paid_usd,
            j.judge.rules_decided,
            j.judge.rules_llm_agree,
            j.judge.rules_llm_disagree,
            j.domain,
        ));
    }
    md.push_str("\nRules/LLM agreement counts rows where both the rule judge and the LLM judge gave a verdict (hybrid mode, or `conftag requeue --stage judge` with another mode). The training file with every tagged row is `training/combined.jsonl`.\n");
    md
}

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// A grouped bar chart: datasets along x, one bar per model, accuracy in percent.
pub fn accuracy_svg(jobs: &[JobStatus]) -> Result<String, ReportError> {
    let err = |e: &dyn std::fmt::Display| ReportError::Chart(e.to_string());
    let datasets: Vec<String> = jobs
        .iter()
        .map(|j| j.dataset.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let models: Vec<String> = jobs
        .iter()
        .map(|j| j.model.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (860, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let groups = datasets.len().max(1) as f64;
        let mut chart = ChartBuilder::on(&root)
            .caption("Judged accuracy per model and dataset", ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(36)
            .y_label_area_size(52)
            .build_cartesian_2d(0.0..groups, 0.0..100.0)
            .map_err(|e| err(&e))?;
        let names = datasets.clone();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(datasets.len().max(1) * 2 + 1)
            .x_label_formatter(&|x| {
                let centre = x - x.floor();
                if (centre - 0.5).abs() < 1e-6 {
                    names.get(x.floor() as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_desc("accuracy (%)")
            .draw()
            .map_err(|e| err(&e))?;
        let width = 0.8 / models.len().max(1) as f64;
        for (m, model) in models.iter().enumerate() {
            let color = PALETTE[m % PALETTE.len()];
            let bars: Vec<(f64, f64, String)> = jobs
                .iter()
                .filter(|j| &j.model == model)
                .filter_map(|j| {
                    let g = datasets.iter().position(|d| d == &j.dataset)? as f64;
                    let x0 = g + 0.1 + m as f64 * width;
                    let label = format!("{} ({})", pct(j.accuracy), j.rows_judged);
                    Some((x0, 100.0 * j.accuracy.unwrap_or(0.0), label))
                })
                .collect();
            chart
                .draw_series(bars.iter().map(|(x0, y, _)| {
                    Rectangle::new([(*x0, 0.0), (*x0 + width * 0.92, *y)], color.filled())
                }))
                .map_err(|e| err(&e))?
                .label(model.clone())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                });
            chart
                .draw_series(bars.iter().map(|(x0, y, label)| {
                    Text::new(
                        label.clone(),
                        (*x0, (*y + 6.0).min(98.0)),
                        ("sans-serif", 12).into_font(),
                    )
                }))
                .map_err(|e| err(&e))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}
