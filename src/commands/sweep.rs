//! `kiln sweep`: every trial of the file's `sweep:` block, ranked.
//!
//! Each trial is the pipeline with its params set; trials run `parallel` at
//! a time over one cache. A node two trials share has one fingerprint, so it
//! runs once: the cache's single-flight makes a trial that reaches a node
//! another is computing wait for it and take it from the cache. Results go
//! to `--out` (default `runs/<pipeline>/sweep/`): `sweep.md`, `sweep.json`,
//! `sweep.csv` (best first), a plot of the metric against each swept param,
//! and each trial's `run.json` and `metrics.json` under `trial-N/`.

use std::path::Path;
use std::sync::{Arc, Mutex};

use kiln_engine::sweep::{SweepSpec, Trial};
use kiln_engine::{CacheMode, Plan, Quiet, Registry, RunOptions, Selection, Status};
use serde_json::{json, Value as Json};

use crate::cli::SweepArgs;
use crate::failure::Failure;

/// One trial's outcome.
struct Row {
    number: usize,
    trial: Trial,
    metric: Option<f64>,
    status: String,
    seconds: f64,
    ran: Vec<String>,
}

/// Runs `kiln sweep`.
pub fn sweep(args: &SweepArgs, registry: &Registry) -> Result<(), Failure> {
    let place = super::place::resolve(&args.file, args.cache.as_deref(), None)?;
    let plan = super::load::load(&place.file, &args.set, registry)?;
    let Some(spec) = plan.sweep.clone() else {
        return Err(Failure::Invalid(format!(
            "error: {}: there is no `sweep:` block: add one naming the params to vary and the metric, e.g. `sweep: {{ params: {{ lr: [0.001, 0.01] }}, metric: eval.metrics.accuracy }}`",
            args.file.display()
        )));
    };
    let sets = super::load::parse_sets(&args.set)?;
    let trials = kiln_engine::trials::plans(&plan, registry, &sets);
    let total = trials.len();
    let out = args.out.clone().unwrap_or_else(|| {
        plan.base_dir
            .join("runs")
            .join(plan.name.as_str())
            .join("sweep")
    });
    std::fs::create_dir_all(&out)
        .map_err(|e| Failure::Run(format!("error: cannot create `{}`: {e}", out.display())))?;
    let parallel = args
        .parallel
        .map_or(spec.parallel, usize::from)
        .clamp(1, trials.len().max(1));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let jobs = args.jobs.map_or((cores / parallel).max(1), usize::from);
    println!(
        "sweeping {}: {} trial{} ({}), {parallel} at a time",
        plan.name,
        trials.len(),
        if trials.len() == 1 { "" } else { "s" },
        spec.params
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(" × ")
    );

    let base = RunOptions {
        memo: None,
        jobs,
        cache: CacheMode::Use,
        out_dir: out.clone(),
        stores: place.stores.clone(),
        selection: Selection::All,
        cancel: Default::default(),
        observer: Arc::new(Quiet),
    };
    // What one trial computed or loaded, the next takes from memory.
    let memo = Arc::new(kiln_engine::Memo::default());
    let next = Mutex::new(trials.into_iter().enumerate());
    let rows = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..parallel {
            scope.spawn(|| loop {
                let Some((i, (trial, loaded))) =
                    next.lock().unwrap_or_else(|e| e.into_inner()).next()
                else {
                    return;
                };
                let opts = kiln_engine::trials::options(&base, &out, i + 1, &memo);
                let row = run_trial(i + 1, trial, loaded, &spec, &opts);
                println!("{}", line(&row, &spec, total));
                rows.lock().unwrap_or_else(|e| e.into_inner()).push(row);
            });
        }
    });
    let mut rows = rows.into_inner().unwrap_or_else(|e| e.into_inner());
    rows.sort_by(|a, b| match (a.metric, b.metric) {
        (Some(x), Some(y)) if spec.better(x, y) => std::cmp::Ordering::Less,
        (Some(x), Some(y)) if spec.better(y, x) => std::cmp::Ordering::Greater,
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        _ => a.number.cmp(&b.number),
    });
    write_tables(&plan, &spec, &rows, &out)?;
    plot(&plan, &spec, &rows, &out);
    let executions: usize = rows.iter().map(|r| r.ran.len()).sum();
    println!(
        "\n{}\n{executions} node runs over {} trials; results in {}",
        markdown(&spec, &rows),
        rows.len(),
        out.display()
    );
    let failed = rows.iter().filter(|r| r.status != "ok").count();
    if failed > 0 {
        return Err(Failure::Run(format!(
            "error: {failed} of {} trials failed (see {})",
            rows.len(),
            out.join("sweep.md").display()
        )));
    }
    Ok(())
}

/// Runs one trial (its plan, or why it is invalid) and reads its metric.
fn run_trial(
    number: usize,
    trial: Trial,
    loaded: Result<Plan, kiln_engine::EngineError>,
    spec: &SweepSpec,
    opts: &RunOptions,
) -> Row {
    let mut row = Row {
        number,
        trial,
        metric: None,
        status: "ok".into(),
        seconds: 0.0,
        ran: Vec::new(),
    };
    let plan = match loaded {
        Ok(plan) => plan,
        Err(e) => {
            row.status = format!("invalid: {}", e.to_string().lines().next().unwrap_or(""));
            return row;
        }
    };
    let report = match kiln_engine::run(&plan, opts) {
        Ok(r) => r,
        Err(e) => {
            row.status = format!("failed: {e}");
            return row;
        }
    };
    row.seconds = report.seconds;
    row.ran = report
        .nodes
        .iter()
        .filter(|n| n.status == Status::Ran)
        .map(|n| n.id.clone())
        .collect();
    if let Some(n) = report.nodes.iter().find(|n| n.status == Status::Failed) {
        row.status = format!(
            "failed: node `{}`: {}",
            n.id,
            n.error.as_deref().unwrap_or("unknown cause")
        );
    }
    let outputs = super::run::outputs_json(&plan, &report);
    let _ = super::run::write_results(&plan, &report, &outputs, &opts.out_dir, opts.jobs);
    let outlet = kiln_engine::Outlet {
        node: spec.metric_output.1,
        port: spec.metric_output.2.clone(),
    };
    let value = report
        .value(&outlet)
        .and_then(|h| h.get().ok())
        .map(|v| v.meta().clone());
    row.metric = value.as_ref().and_then(|m| spec.metric_in(m));
    if row.metric.is_none() && row.status == "ok" {
        row.status = format!(
            "no metric: `{}` has no number `{}`",
            spec.metric_output.0, spec.metric_key
        );
    }
    row
}

fn shown(v: &Json) -> String {
    kiln_engine::yaml::show(v)
}

fn line(row: &Row, spec: &SweepSpec, total: usize) -> String {
    let params: Vec<String> = row
        .trial
        .params
        .iter()
        .map(|(k, v)| format!("{k}={}", shown(v)))
        .collect();
    let result = match row.metric {
        Some(m) if row.status == "ok" => format!("{} {m:.4}", spec.metric_key),
        _ => row.status.clone(),
    };
    format!(
        "trial {}/{total} {}: {result} (ran {}) in {:.2}s",
        row.number,
        params.join(" "),
        row.ran.len(),
        row.seconds
    )
}

fn markdown(spec: &SweepSpec, rows: &[Row]) -> String {
    let names: Vec<&str> = spec.params.iter().map(|(n, _)| n.as_str()).collect();
    let mut md = format!(
        "| rank | trial | {} | {} | status | seconds | nodes run |\n|---|---|{}---|---|---|---|\n",
        names.join(" | "),
        spec.metric_key,
        "---|".repeat(names.len())
    );
    for (rank, r) in rows.iter().enumerate() {
        let values: Vec<String> = r.trial.params.iter().map(|(_, v)| shown(v)).collect();
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.2} | {} |\n",
            rank + 1,
            r.number,
            values.join(" | "),
            r.metric.map_or("—".into(), |m| format!("{m:.4}")),
            r.status.replace('|', "\\|"),
            r.seconds,
            r.ran.len()
        ));
    }
    md
}

fn write_tables(plan: &Plan, spec: &SweepSpec, rows: &[Row], out: &Path) -> Result<(), Failure> {
    let names: Vec<&str> = spec.params.iter().map(|(n, _)| n.as_str()).collect();
    let json_rows: Vec<Json> = rows
        .iter()
        .enumerate()
        .map(|(rank, r)| {
            json!({
                "rank": rank + 1,
                "trial": r.number,
                "params": r.trial.params.iter().cloned().collect::<serde_json::Map<_, _>>(),
                "metric": r.metric,
                "status": r.status,
                "seconds": r.seconds,
                "ran": r.ran,
            })
        })
        .collect();
    let doc = json!({
        "pipeline": plan.name.as_str(),
        "metric": format!("{}.{}", spec.metric_output.0, spec.metric_key),
        "goal": format!("{:?}", spec.goal).to_lowercase(),
        "trials": json_rows,
    });
    let mut csv = csv::Writer::from_writer(Vec::new());
    let mut header = vec!["rank", "trial"];
    header.extend(&names);
    header.extend([spec.metric_key.as_str(), "status", "seconds", "nodes_run"]);
    let _ = csv.write_record(&header);
    for (rank, r) in rows.iter().enumerate() {
        let mut record = vec![(rank + 1).to_string(), r.number.to_string()];
        record.extend(r.trial.params.iter().map(|(_, v)| match v {
            Json::String(s) => s.clone(),
            other => other.to_string(),
        }));
        record.extend([
            r.metric.map_or(String::new(), |m| m.to_string()),
            r.status.clone(),
            format!("{:.3}", r.seconds),
            r.ran.len().to_string(),
        ]);
        let _ = csv.write_record(&record);
    }
    let csv = csv.into_inner().unwrap_or_default();
    let files: [(&str, Vec<u8>); 3] = [
        ("sweep.md", markdown(spec, rows).into_bytes()),
        (
            "sweep.json",
            (serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n").into_bytes(),
        ),
        ("sweep.csv", csv),
    ];
    for (name, bytes) in files {
        let path = out.join(name);
        std::fs::write(&path, bytes)
            .map_err(|e| Failure::Run(format!("error: cannot write `{}`: {e}", path.display())))?;
    }
    Ok(())
}

/// `sweep-<param>.png`: the metric against each swept param.
fn plot(plan: &Plan, spec: &SweepSpec, rows: &[Row], out: &Path) {
    for (i, (name, domain)) in spec.params.iter().enumerate() {
        let numeric = rows
            .iter()
            .all(|r| r.trial.params.get(i).is_some_and(|(_, v)| v.is_number()));
        let labels: Option<Vec<String>> = match domain {
            kiln_engine::sweep::Domain::Values(values) if !numeric => {
                Some(values.iter().map(shown).collect())
            }
            _ => None,
        };
        let points: Vec<(f64, f64)> = rows
            .iter()
            .filter_map(|r| {
                let (_, v) = r.trial.params.get(i)?;
                let x = match &labels {
                    Some(l) => l.iter().position(|s| *s == shown(v))? as f64,
                    None => v.as_f64()?,
                };
                Some((x, r.metric?))
            })
            .collect();
        let title = format!("{}: {} by {name}", plan.name, spec.metric_key);
        match kiln_nodes::sink::plot::sweep_png(
            &title,
            &spec.metric_key,
            name,
            &points,
            labels.as_deref(),
        ) {
            Ok(png) => {
                let _ = std::fs::write(out.join(format!("sweep-{name}.png")), png);
            }
            Err(e) => eprintln!("warning: no plot for `{name}`: {e}"),
        }
    }
}
