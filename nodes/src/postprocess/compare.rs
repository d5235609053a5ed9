//! `postprocess.compare`: what each compression step bought and cost, in
//! one table.

use std::time::Instant;

use candle_core::{DType, Device};
use kiln_engine::kind::types_at;
use kiln_engine::{
    Config, InputSpec, InputTypes, KindSpec, NodeError, NodeKind, OutputPath, OutputSpec,
    OutputTypes, Outputs, PortName, RunContext, Settings, Value, ValueType,
};
use serde::Deserialize;
use serde_json::{json, Value as Json};

use crate::data::{Dataset, Features};
use crate::graph::Graph;
use crate::model::ModelValue;
use crate::postprocess::metrics::Scored;

/// Compares models on the same data.
pub struct Compare;

/// What `postprocess.compare` reads from `with:`.
#[derive(Config, Deserialize)]
struct CompareSettings {
    /// where to write the table as Markdown
    markdown: Option<OutputPath>,
    /// where to write it as JSON
    json: Option<OutputPath>,
    /// timed forward passes per batch size
    #[setting(default = 20, min = 1, max = 1000)]
    repeats: usize,
}

impl NodeKind for Compare {
    fn computes_on_device(&self) -> bool {
        true
    }

    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "postprocess.compare",
            version: 3,
            doc: "A table of the models it is given, scored on the same data: parameters, non-zero parameters, bytes (the saved file, and the weights stored sparsely: a bitmask and the non-zero values for pruned weights), the task's metric, and latency of a forward pass at batch 1 and 256 (median of several, milliseconds; these vary between runs, the rest does not).
`data` is one dataset for every model, or a list with one per model (the same examples prepared as each model reads them, e.g. embeddings for one and token ids for another).
Written as Markdown and JSON when paths are given; the table is also the `report` output.",
            inputs: vec![
                InputSpec::required("models", ValueType::Model, "trained models, in the order to show them").many(),
                InputSpec::required("data", ValueType::Dataset, "labelled examples every model is scored on, or a list: one per model (a graph is scored on its test part; its latency is one pass over the whole graph)").or(&[ValueType::Graph]).many(),
            ],
            outputs: vec![OutputSpec::new("report", ValueType::Report, "one row per model")],
            settings: CompareSettings::specs(),
            side_effects: false,
        }
    }

    fn output_types(
        &self,
        spec: &KindSpec,
        inputs: &InputTypes,
        _: &Settings,
    ) -> Result<OutputTypes, String> {
        let (models, data) = (
            types_at(inputs, "models").len(),
            types_at(inputs, "data").len(),
        );
        if data > 1 && data != models {
            return Err(format!(
                "`data` lists {data} datasets for {models} models: give one dataset for all, or one per model"
            ));
        }
        Ok(spec
            .outputs
            .iter()
            .map(|o| (o.name.clone(), o.ty))
            .collect())
    }

    fn run(&self, ctx: &RunContext<'_>) -> Result<Outputs, NodeError> {
        let s: CompareSettings = ctx.settings().read()?;
        let data = ctx.inputs("data");
        let names = ctx.input_sources("models");
        let repeats = s.repeats;
        let mut rows = Vec::new();
        for (i, value) in ctx.inputs("models").iter().enumerate() {
            let name = names
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("model {i}"));
            ctx.check_cancelled()?;
            let data = data
                .get(i)
                .or(data.first())
                .ok_or_else(|| NodeError::new("no `data`"))?;
            let mut row = measure(value, data, ctx.device(), repeats)
                .map_err(|e| e.context(format!("model `{name}`")))?;
            row["model"] = json!(name);
            rows.push(row);
        }
        let base = rows.first().cloned().unwrap_or(Json::Null);
        for row in &mut rows {
            row["smaller"] = json!(ratio(&base["sparse_bytes"], &row["sparse_bytes"]));
            row["faster_256"] = json!(ratio(&base["latency_ms_256"], &row["latency_ms_256"]));
        }
        let metric = match data.first() {
            Some(d) => metric_name(d)?,
            None => "accuracy",
        };
        let report = json!({ "models": rows, "metric": metric });
        let markdown = markdown(&report);
        if let Some(path) = &s.markdown {
            write(&ctx.output_file(path)?, markdown.as_bytes())?;
        }
        if let Some(path) = &s.json {
            let text = serde_json::to_string_pretty(&report).unwrap_or_default() + "\n";
            write(&ctx.output_file(path)?, text.as_bytes())?;
        }
        Ok(vec![(
            PortName::new_static("report"),
            Value::from_json(ValueType::Report, report),
        )])
    }
}

fn write(path: &std::path::Path, bytes: &[u8]) -> Result<(), NodeError> {
    std::fs::write(path, bytes)
        .map_err(|e| NodeError::new(format!("cannot write `{}`: {e}", path.display())))
}

fn ratio(base: &Json, this: &Json) -> Option<f64> {
    let (b, t) = (base.as_f64()?, this.as_f64()?);
    (t > 0.0).then(|| b / t)
}

fn metric_name(data: &Value) -> Result<&'static str, NodeError> {
    let target = if data.ty() == ValueType::Graph {
        Graph::from_value(data)?.target
    } else {
        Dataset::from_value(data)?.target
    };
    Ok(match target {
        Some(t) if t.is_classification() => "accuracy",
        _ => "r2",
    })
}

/// One row: sizes, the metric and latencies of one model.
fn measure(
    value: &Value,
    data: &Value,
    device: &Device,
    repeats: usize,
) -> Result<Json, NodeError> {
    let model = ModelValue::from_value(value)?;
    let prepared = crate::model::prepared(value, device)?;
    let trained = &prepared.trained;
    let mut params = 0usize;
    let mut nonzero = 0usize;
    let mut sparse_bytes = 0usize;
    for (name, t) in &model.weights {
        if crate::nn::batch_norm::is_statistic(name) {
            continue;
        }
        if let Some(q) = model.quantized.get(name) {
            // Block bytes: count the weights they hold, not the bytes.
            let w = q
                .decode(t, &Device::Cpu)?
                .dequantize(&Device::Cpu)?
                .narrow(1, 0, q.inputs)?;
            params += w.elem_count();
            nonzero += w.elem_count() - crate::nn::zeros_in(&w)?;
            sparse_bytes += t.elem_count();
            continue;
        }
        let n = t.elem_count();
        let nz = n - crate::nn::zeros_in(t)?;
        params += n;
        nonzero += nz;
        let bytes_per = t.dtype().size_in_bytes();
        sparse_bytes += if model.masks.contains_key(name) {
            n.div_ceil(8) + nz * bytes_per
        } else {
            n * bytes_per
        };
    }
    let file_bytes = value.to_bytes()?.len();
    let metrics = super::metrics::score_value(Scored::Model(prepared.clone()), data)?;
    let metric = metrics
        .get("accuracy")
        .or_else(|| metrics.get("r2"))
        .cloned()
        .unwrap_or(Json::Null);
    let (latency_1, latency_256, latency_graph) = if data.ty() == ValueType::Graph {
        let graph = Graph::from_value(data)?;
        let all: Vec<u32> = (0..graph.examples() as u32).collect();
        let pass = || trained.predict_graph(&graph, &all, device).map(|_| ());
        (None, None, Some(median_ms(pass, repeats)?))
    } else {
        let data = Dataset::from_value(data)?;
        let x = match &data.features {
            Features::Dense(t) => Features::Dense(t.to_device(device)?.to_dtype(DType::F32)?),
            sparse => sparse.clone(),
        };
        (
            Some(latency(trained, &x, 1, repeats)?),
            Some(latency(trained, &x, 256, repeats)?),
            None,
        )
    };
    Ok(json!({
        "params": params,
        "nonzero_params": nonzero,
        "file_bytes": file_bytes,
        "sparse_bytes": sparse_bytes,
        "metric": metric,
        "latency_ms_1": latency_1,
        "latency_ms_256": latency_256,
        "latency_ms_graph": latency_graph,
    }))
}

/// Median milliseconds of a forward pass over `batch` examples (the data's
/// first ones, repeated if it has fewer).
fn latency(
    trained: &crate::model::Trained,
    x: &Features,
    batch: usize,
    repeats: usize,
) -> Result<f64, NodeError> {
    let n = x.len();
    if n == 0 {
        return Err(NodeError::new("`data` has no examples"));
    }
    let idx: Vec<u32> = (0..batch).map(|i| (i % n) as u32).collect();
    let input = x.select(&idx)?;
    median_ms(
        || {
            let out = trained.forward(&input)?;
            Ok(out.device().synchronize()?)
        },
        repeats,
    )
}

/// Median milliseconds of `pass`, after one untimed pass that warms caches
/// and allocations.
fn median_ms(
    mut pass: impl FnMut() -> Result<(), NodeError>,
    repeats: usize,
) -> Result<f64, NodeError> {
    pass()?;
    let mut times = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let t0 = Instant::now();
        pass()?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// The report as a Markdown table.
fn markdown(report: &Json) -> String {
    let metric = report["metric"].as_str().unwrap_or("metric");
    let mut out = format!(
        "| model | params | non-zero | file bytes | sparse bytes | smaller | {metric} | ms @1 | ms @256 | faster @256 |\n|---|---|---|---|---|---|---|---|---|---|\n"
    );
    for row in report["models"].as_array().into_iter().flatten() {
        let num = |k: &str, digits: usize| {
            row[k]
                .as_f64()
                .map_or_else(|| "–".to_string(), |v| format!("{v:.digits$}"))
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {}× | {} | {} | {} | {}× |\n",
            row["model"].as_str().unwrap_or("?"),
            num("params", 0),
            num("nonzero_params", 0),
            num("file_bytes", 0),
            num("sparse_bytes", 0),
            num("smaller", 1),
            num("metric", 4),
            num("latency_ms_1", 3),
            num("latency_ms_256", 3),
            num("faster_256", 2),
        ));
    }
    out
}
