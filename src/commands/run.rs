//! `kiln run`: validate, run, report.

use std::path::Path;
use std::sync::Arc;

use kiln_engine::{CacheMode, Plan, Registry, RunOptions, RunReport, Selection, Status};
use serde_json::json;

use crate::cli::RunArgs;
use crate::failure::Failure;
use crate::progress::Bars;

/// Runs a pipeline and writes `run.json` and `metrics.json`.
pub fn run(args: &RunArgs, registry: &Registry) -> Result<(), Failure> {
    let place = super::place::resolve(&args.file, args.cache.as_deref(), args.out.as_deref())?;
    let plan = super::load::load(&place.file, &args.set, registry)?;
    let selection = selection(&plan, args)?;
    place.fetch_inputs(&plan, &selection)?;
    let out_dir = place
        .out_dir
        .clone()
        .unwrap_or_else(|| plan.base_dir.join("runs").join(plan.name.as_str()));
    let jobs = args.jobs.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        usize::from,
    );
    let opts = RunOptions {
        memo: None,
        jobs,
        cache: if args.no_cache {
            CacheMode::Refresh
        } else {
            CacheMode::Use
        },
        out_dir: out_dir.clone(),
        stores: place.stores.clone(),
        selection,
        cancel: Default::default(),
        observer: Arc::new(Bars::for_stderr()),
    };
    if let Some(input) = &args.input {
        return answer_input(plan, input, &opts);
    }
    let Some(addr) = &args.ui else {
        let result = run_and_report(&plan, &opts);
        // One node's run (a pod's) leaves its result in the cache; the
        // run-level files describe whole runs only.
        if args.only.is_none() {
            super::place::publish(&opts.stores, &out_dir, &["run.json", "metrics.json"])?;
        }
        return result;
    };
    // The live view: the same run, its events also drawn in the browser,
    // and the page kept up until Ctrl-C.
    let board = crate::ui::Board::new();
    let stop = std::sync::mpsc::channel::<()>();
    let on_signal = stop.0.clone();
    ctrlc::set_handler(move || {
        let _ = on_signal.send(());
    })
    .map_err(|e| Failure::Run(format!("error: cannot catch Ctrl-C: {e}")))?;
    let local = crate::ui::start(addr, board.clone()).map_err(Failure::Invalid)?;
    println!("live view on http://{local}");
    let opts = RunOptions {
        observer: Arc::new(crate::ui::Tee(vec![
            opts.observer.clone(),
            Arc::new(crate::ui::BoardObserver(board.clone())),
        ])),
        ..opts
    };
    board.started(&plan, &[], &opts.out_dir);
    let result = run_and_report_with(&plan, &opts, |report| {
        board.finished(&plan, report, summary(report), false)
    });
    println!("live view on http://{local} stays up; Ctrl-C to stop");
    let _ = stop.1.recv();
    result
}

/// Runs `plan`, prints and writes its results; `Err` when a node failed.
fn run_and_report(plan: &Plan, opts: &RunOptions) -> Result<(), Failure> {
    run_and_report_with(plan, opts, |_| ())
}

/// As [`run_and_report`], calling `done` with the report before judging it.
fn run_and_report_with(
    plan: &Plan,
    opts: &RunOptions,
    done: impl FnOnce(&RunReport),
) -> Result<(), Failure> {
    let (out_dir, jobs) = (&opts.out_dir, opts.jobs);
    let report = kiln_engine::run(plan, opts)?;
    done(&report);
    print_table(&report);
    let outputs = outputs_json(plan, &report);
    for (name, value) in outputs.as_object().into_iter().flatten() {
        println!("{name} = {}", readable(value, 0));
    }
    write_results(plan, &report, &outputs, out_dir, jobs)?;
    println!("{}", summary(&report));
    if report.succeeded() {
        return Ok(());
    }
    let mut msg = String::new();
    for n in report.nodes.iter().filter(|n| n.status == Status::Failed) {
        msg.push_str(&format!(
            "error: node `{}` ({}) failed: {}\n",
            n.id,
            n.kind,
            n.error.as_deref().unwrap_or("unknown cause")
        ));
    }
    let skipped = report.count(Status::Skipped);
    if skipped > 0 {
        msg.push_str(&format!(
            "{skipped} node{} not run because of it\n",
            if skipped == 1 { "" } else { "s" }
        ));
    }
    Err(Failure::Run(msg.trim_end().to_string()))
}

/// `--input FILE`: builds what the serve path reads, then answers the rows
/// in FILE through the same [`Service`] `kiln serve` uses.
///
/// [`Service`]: kiln_engine::Service
fn answer_input(plan: Plan, input: &Path, opts: &RunOptions) -> Result<(), Failure> {
    let name = input.display();
    let text = std::fs::read_to_string(input)
        .map_err(|e| Failure::Invalid(format!("error: cannot read `{name}`: {e}")))?;
    let body: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Failure::Invalid(format!("error: `{name}` is not valid JSON: {e}")))?;
    let Some(spec) = plan.serve.clone() else {
        return Err(Failure::Invalid(format!(
            "error: `--input` answers rows through the pipeline's `serve:` block, and `{}` has none",
            plan.file.display()
        )));
    };
    let request_node = plan.node(spec.input).id.to_string();
    let invalid = |e: kiln_engine::RequestError| {
        let field = if e.field.is_empty() {
            String::new()
        } else {
            format!("`{}`: ", e.field)
        };
        Failure::Invalid(format!("error: {name}: {field}{}", e.message))
    };
    let rows =
        serde_json::Value::Array(crate::serve::rows_of(body, &request_node).map_err(invalid)?);
    // Checked before anything runs.
    kiln_engine::serve::check_request(&plan, &rows)
        .map_err(|e| invalid(e.within(&format!("inputs.{request_node}"))))?;
    let (service, report) = kiln_engine::Service::start(Arc::new(plan), opts)
        .map_err(|e| Failure::Run(format!("error: {e}")))?;
    print_table(&report);
    let value = service
        .infer(&rows)
        .map_err(|e| Failure::Run(format!("error: {e}")))?;
    let answer =
        kiln_nodes::data::answer(&value).map_err(|e| Failure::Run(format!("error: {e}")))?;
    let plan = service.plan();
    let mut outputs = serde_json::Map::new();
    outputs.insert(plan.outlet_name(&spec.output), answer);
    let outputs = serde_json::Value::Object(outputs);
    for (key, value) in outputs.as_object().into_iter().flatten() {
        println!("{key} = {}", readable(value, 0));
    }
    write_results(plan, &report, &outputs, &opts.out_dir, opts.jobs)?;
    println!("{} (model {})", summary(&report), service.fingerprint());
    Ok(())
}

/// JSON for people: indented, but lists of plain values kept on one line
/// (a confusion matrix reads as a matrix).
fn readable(value: &serde_json::Value, depth: usize) -> String {
    use serde_json::Value as J;
    let pad = "  ".repeat(depth + 1);
    let close = "  ".repeat(depth);
    match value {
        J::Array(items) if items.iter().all(|v| !v.is_array() && !v.is_object()) => {
            serde_json::to_string(value).unwrap_or_default()
        }
        J::Array(items)
            if items.iter().all(|v| {
                v.as_array()
                    .is_some_and(|a| a.iter().all(|x| !x.is_array() && !x.is_object()))
            }) =>
        {
            let rows: Vec<String> = items
                .iter()
                .map(|v| format!("{pad}{}", serde_json::to_string(v).unwrap_or_default()))
                .collect();
            format!("[\n{}\n{close}]", rows.join(",\n"))
        }
        J::Array(items) => {
            let rows: Vec<String> = items
                .iter()
                .map(|v| format!("{pad}{}", readable(v, depth + 1)))
                .collect();
            format!("[\n{}\n{close}]", rows.join(",\n"))
        }
        J::Object(map)
            if map.len() <= 6 && map.values().all(|v| !v.is_array() && !v.is_object()) =>
        {
            let fields: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {v}", J::String(k.clone())))
                .collect();
            format!("{{ {} }}", fields.join(", "))
        }
        J::Object(map) if !map.is_empty() => {
            let rows: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{pad}{}: {}", J::String(k.clone()), readable(v, depth + 1)))
                .collect();
            format!("{{\n{}\n{close}}}", rows.join(",\n"))
        }
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

/// The one-line summary of a run: `ran 3, reused 9, failed 0 in 1.42s`.
pub fn summary(report: &RunReport) -> String {
    format!(
        "ran {}, reused {}, failed {} in {:.2}s",
        report.count(Status::Ran),
        report.count(Status::Cached),
        report.count(Status::Failed),
        report.seconds
    )
}

fn selection(plan: &Plan, args: &RunArgs) -> Result<Selection, Failure> {
    let find = |flag: &str, id: &str| {
        plan.index_of(id).ok_or_else(|| {
            let hint = kiln_engine::ids::did_you_mean(id, plan.nodes.iter().map(|n| n.id.as_str()))
                .map(|m| format!(" (did you mean `{m}`?)"))
                .unwrap_or_default();
            Failure::Invalid(format!(
                "error: `{flag} {id}`: the pipeline has no node `{id}`{hint}"
            ))
        })
    };
    Ok(match (&args.only, &args.until) {
        (Some(id), _) => Selection::Only(find("--only", id)?),
        (None, Some(id)) => Selection::Until(find("--until", id)?),
        (None, None) => Selection::All,
    })
}

fn print_table(report: &RunReport) {
    let w_id = report
        .nodes
        .iter()
        .map(|n| n.id.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let w_kind = report
        .nodes
        .iter()
        .map(|n| n.kind.len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!(
        "{:<w_id$}  {:<w_kind$}  {:<10}  {:>8}",
        "node", "kind", "status", "time"
    );
    for n in &report.nodes {
        println!(
            "{:<w_id$}  {:<w_kind$}  {:<10}  {:>7.3}s",
            n.id,
            n.kind,
            n.status.as_str(),
            n.seconds
        );
    }
}

/// The values named in `outputs:` as JSON, by `node.port`.
pub fn outputs_json(plan: &Plan, report: &RunReport) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for outlet in &plan.outputs {
        let Some(handle) = report.value(outlet) else {
            continue;
        };
        let json = handle
            .get()
            .and_then(kiln_nodes::show::to_json)
            .unwrap_or_else(|e| json!({ "error": e.to_string() }));
        map.insert(plan.outlet_name(outlet), json);
    }
    serde_json::Value::Object(map)
}

pub fn write_results(
    plan: &Plan,
    report: &RunReport,
    outputs: &serde_json::Value,
    out_dir: &Path,
    jobs: usize,
) -> Result<(), Failure> {
    let run = json!({
        "pipeline": plan.name.as_str(),
        "file": plan.file.display().to_string(),
        "seed": plan.seed,
        "jobs": jobs,
        "seconds": report.seconds,
        "nodes": report.nodes,
    });
    for (name, value) in [("run.json", run), ("metrics.json", outputs.clone())] {
        let path = out_dir.join(name);
        let text = serde_json::to_string_pretty(&value).unwrap_or_default() + "\n";
        std::fs::write(&path, text)
            .map_err(|e| Failure::Run(format!("error: cannot write `{}`: {e}", path.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::readable;
    use serde_json::json;

    #[test]
    fn matrices_read_as_rows_and_small_records_as_lines() {
        let shown = readable(
            &json!({"confusion": [[1, 0], [2, 3]], "class": {"f1": 0.5, "support": 2}, "labels": ["a", "b"]}),
            0,
        );
        assert!(shown.contains("\n    [1,0],\n    [2,3]\n  ]"), "{shown}");
        assert!(
            shown.contains("\"class\": { \"f1\": 0.5, \"support\": 2 }"),
            "{shown}"
        );
        assert!(shown.contains("\"labels\": [\"a\",\"b\"]"), "{shown}");
        let back: serde_json::Value = serde_json::from_str(&shown).unwrap();
        assert_eq!(back["confusion"][1][0], 2);
    }
}
