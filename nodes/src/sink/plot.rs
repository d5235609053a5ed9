//! `sink.plot`: training curves and confusion matrices as SVG or PNG.
//!
//! Charts are drawn as SVG with plotters; PNG files are that SVG rasterised
//! by resvg with an embedded font (DejaVu Sans), so no system font library
//! or font file is needed on the machine.

use std::sync::Arc;

use kiln_engine::{
    Config, InputSpec, KindSpec, NodeError, NodeKind, OutputPath, Outputs, RunContext, Settings,
    ValueType,
};
use plotters::prelude::*;
use serde::Deserialize;
use serde_json::Value as Json;

/// Draws a training history or a confusion matrix.
pub struct Plot;

const FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
const WIDTH: u32 = 900;

/// What `sink.plot` reads from `with:`.
#[derive(Config, Deserialize)]
struct PlotSettings {
    /// the file to write: `*.svg` or `*.png`
    path: OutputPath,
    /// the chart's title (default: what is drawn)
    title: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Format {
    Svg,
    Png,
}

/// The picture format a path's extension names.
fn file_format(path: &std::path::Path) -> Option<Format> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("svg") => Some(Format::Svg),
        Some("png") => Some(Format::Png),
        _ => None,
    }
}

impl NodeKind for Plot {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "sink.plot",
            version: 1,
            doc: "Draws a chart into the run's output folder, as SVG or PNG by the path's extension.
A training `history` (from `train.supervised`) gives loss per epoch, train against validation, and validation accuracy beside it; `metrics` with a confusion matrix (from `postprocess.metrics`) give a heatmap of true against predicted classes.",
            inputs: vec![InputSpec::required("data", ValueType::Any, "a training history (report) or classification metrics")],
            outputs: vec![],
            settings: PlotSettings::specs(),
            side_effects: false,
        }
    }

    fn check(&self, settings: &Settings) -> Vec<(String, String)> {
        match settings.read_checked::<PlotSettings>() {
            Ok(s) if file_format(&s.path).is_none() => {
                vec![(
                    "path".into(),
                    format!("`{}` should end in `.svg` or `.png`", s.path.display()),
                )]
            }
            Err(problems) => problems,
            Ok(_) => vec![],
        }
    }

    fn run(&self, ctx: &RunContext<'_>) -> Result<Outputs, NodeError> {
        let value = ctx.input("data")?;
        let meta = value.meta();
        let s: PlotSettings = ctx.settings().read()?;
        let title = s.title.as_deref();
        let svg = if meta.get("train_loss").is_some_and(Json::is_array) {
            history_svg(meta, title.unwrap_or("training"))?
        } else if meta.get("confusion").is_some_and(Json::is_array) {
            confusion_svg(meta, title.unwrap_or("confusion matrix"))?
        } else {
            return Err(NodeError::new(format!(
                "sink.plot draws training histories and classification metrics, not this {} value",
                value.ty()
            )));
        };
        let path = ctx.output_file(&s.path)?;
        let bytes = if file_format(&s.path) == Some(Format::Png) {
            to_png(&svg)?
        } else {
            svg.into_bytes()
        };
        std::fs::write(&path, bytes)
            .map_err(|e| NodeError::new(format!("cannot write `{}`: {e}", path.display())))?;
        Ok(vec![])
    }
}

fn numbers(meta: &Json, key: &str) -> Vec<f64> {
    meta.get(key)
        .and_then(Json::as_array)
        .map(|a| a.iter().filter_map(Json::as_f64).collect())
        .unwrap_or_default()
}

fn draw_err<E: std::fmt::Display>(e: E) -> NodeError {
    NodeError::new(format!("cannot draw the chart: {e}"))
}

/// Loss (train, valid) and accuracy (valid) by epoch.
fn history_svg(meta: &Json, title: &str) -> Result<String, NodeError> {
    let epochs = numbers(meta, "epoch");
    let train = numbers(meta, "train_loss");
    let valid = numbers(meta, "valid_loss");
    let accuracy = numbers(meta, "valid_accuracy");
    if epochs.is_empty() {
        return Err(NodeError::new("the history has no epochs to draw"));
    }
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let root = root.titled(title, ("sans-serif", 22)).map_err(draw_err)?;
        let panels = if accuracy.is_empty() {
            vec![root]
        } else {
            root.split_evenly((1, 2))
        };
        let last = *epochs.last().unwrap_or(&1.0);
        let max_loss = train
            .iter()
            .chain(&valid)
            .copied()
            .fold(0.0f64, f64::max)
            .max(1e-9)
            * 1.05;
        let mut chart = ChartBuilder::on(&panels[0])
            .caption("loss", ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(1.0..last.max(2.0), 0.0..max_loss)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .draw()
            .map_err(draw_err)?;
        for (series, color, name) in [(&train, BLUE, "train"), (&valid, RED, "valid")] {
            if series.is_empty() {
                continue;
            }
            chart
                .draw_series(LineSeries::new(
                    epochs.iter().copied().zip(series.iter().copied()),
                    color.stroke_width(2),
                ))
                .map_err(draw_err)?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(draw_err)?;
        if let Some(panel) = panels.get(1) {
            let lo = accuracy.iter().copied().fold(1.0f64, f64::min).min(0.9) - 0.02;
            let mut chart = ChartBuilder::on(panel)
                .caption("validation accuracy", ("sans-serif", 16))
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(56)
                .build_cartesian_2d(1.0..last.max(2.0), lo.max(0.0)..1.0)
                .map_err(draw_err)?;
            chart
                .configure_mesh()
                .x_desc("epoch")
                .draw()
                .map_err(draw_err)?;
            chart
                .draw_series(LineSeries::new(
                    epochs.iter().copied().zip(accuracy.iter().copied()),
                    GREEN.stroke_width(2),
                ))
                .map_err(draw_err)?;
        }
        root_present(&panels[0])?;
    }
    Ok(svg)
}

fn root_present<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
) -> Result<(), NodeError>
where
    DB::ErrorType: 'static,
{
    area.present().map_err(draw_err)
}

/// True classes down, predicted across; cells shaded by row share, with counts.
fn confusion_svg(meta: &Json, title: &str) -> Result<String, NodeError> {
    let rows: Vec<Vec<u64>> = serde_json::from_value(meta["confusion"].clone())
        .map_err(|e| NodeError::new(format!("the confusion matrix is malformed: {e}")))?;
    let k = rows.len();
    let labels: Vec<String> = meta
        .get("labels")
        .and_then(|l| serde_json::from_value(l.clone()).ok())
        .unwrap_or_else(|| (0..k).map(|i| i.to_string()).collect());
    if k == 0 {
        return Err(NodeError::new("the confusion matrix is empty"));
    }
    let size = 560u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (size + 120, size + 120)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(80)
            .build_cartesian_2d(0..k, 0..k)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(k)
            .y_labels(k)
            .x_label_formatter(&|_| String::new())
            .y_label_formatter(&|_| String::new())
            .x_desc("predicted")
            .y_desc("true")
            .draw()
            .map_err(draw_err)?;
        // Class names at cell centres: predicted along the bottom, true down the left.
        let label_font = ("sans-serif", 14).into_font();
        for (i, name) in labels.iter().enumerate() {
            let (x0, y0) = chart.backend_coord(&(i, 0));
            let (x1, _) = chart.backend_coord(&(i + 1, 0));
            root.draw(&Text::new(
                name.clone(),
                ((x0 + x1) / 2 - 4 * name.len() as i32, y0 + 8),
                label_font.clone(),
            ))
            .map_err(draw_err)?;
            let (xl, yt) = chart.backend_coord(&(0, k - i));
            let (_, yb) = chart.backend_coord(&(0, k - 1 - i));
            root.draw(&Text::new(
                name.clone(),
                (xl - 12 - 8 * name.len() as i32, (yt + yb) / 2 - 7),
                label_font.clone(),
            ))
            .map_err(draw_err)?;
        }
        for (t, row) in rows.iter().enumerate() {
            let total = row.iter().sum::<u64>().max(1) as f64;
            for (p, &count) in row.iter().enumerate() {
                let share = count as f64 / total;
                let y = k - 1 - t;
                let shade = RGBColor(
                    (255.0 - 200.0 * share) as u8,
                    (255.0 - 140.0 * share) as u8,
                    255,
                );
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(p, y), (p + 1, y + 1)],
                        shade.filled(),
                    )))
                    .map_err(draw_err)?;
                let color = if share > 0.6 { WHITE } else { BLACK };
                let (cx, cy) = chart.backend_coord(&(p, y + 1));
                let (cx2, cy2) = chart.backend_coord(&(p + 1, y));
                root.draw(&Text::new(
                    count.to_string(),
                    ((cx + cx2) / 2 - 8, (cy + cy2) / 2 - 8),
                    ("sans-serif", 16).into_font().color(&color),
                ))
                .map_err(draw_err)?;
            }
        }
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

/// Rasterises SVG with the embedded font.
fn to_png(svg: &str) -> Result<Vec<u8>, NodeError> {
    let mut fonts = resvg::usvg::fontdb::Database::new();
    fonts.load_font_data(FONT.to_vec());
    fonts.set_sans_serif_family("DejaVu Sans");
    let options = resvg::usvg::Options {
        fontdb: Arc::new(fonts),
        font_family: "DejaVu Sans".into(),
        ..Default::default()
    };
    let tree = resvg::usvg::Tree::from_str(svg, &options)
        .map_err(|e| NodeError::new(format!("cannot render the chart: {e}")))?;
    let size = tree.size().to_int_size();
    let mut pixmap = resvg::tiny_skia::Pixmap::new(size.width(), size.height())
        .ok_or_else(|| NodeError::new("the chart has no area"))?;
    pixmap.fill(resvg::tiny_skia::Color::WHITE);
    resvg::render(
        &tree,
        resvg::tiny_skia::Transform::default(),
        &mut pixmap.as_mut(),
    );
    pixmap
        .encode_png()
        .map_err(|e| NodeError::new(format!("cannot encode the PNG: {e}")))
}

/// One dot per trial of a sweep: `metric` against one swept param, as PNG.
/// A param whose values are not numbers is drawn by position, each position
/// labelled with its value (`labels`).
pub fn sweep_png(
    title: &str,
    metric: &str,
    param: &str,
    points: &[(f64, f64)],
    labels: Option<&[String]>,
) -> Result<Vec<u8>, NodeError> {
    if points.is_empty() {
        return Err(NodeError::new("no trial has a value to draw"));
    }
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in points {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    let pad = |lo: f64, hi: f64| {
        let d = ((hi - lo) * 0.08).max(hi.abs() * 1e-3).max(1e-9);
        (lo - d)..(hi + d)
    };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (640, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d(pad(x0, x1), pad(y0, y1))
            .map_err(draw_err)?;
        let label = |x: &f64| match labels {
            Some(names) => {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 {
                    names.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            }
            None => format!("{x:.3}"),
        };
        chart
            .configure_mesh()
            .x_desc(param)
            .y_desc(metric)
            .x_label_formatter(&label)
            .x_labels(labels.map_or(8, |l| l.len() * 2 + 1))
            .draw()
            .map_err(draw_err)?;
        chart
            .draw_series(
                points
                    .iter()
                    .map(|&(x, y)| Circle::new((x, y), 5, BLUE.mix(0.7).filled())),
            )
            .map_err(draw_err)?;
        root.present().map_err(draw_err)?;
    }
    to_png(&svg)
}
