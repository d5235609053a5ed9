//! `sink.csv`: writes a table as CSV.

use std::path::Path;

use candle_core::{DType, Device};
use kiln_engine::{
    Config, InputSpec, KindSpec, NodeError, NodeKind, OutputPath, Outputs, RunContext, ValueType,
};
use serde::Deserialize;

use crate::data::Dataset;

/// Writes a table to a CSV file in the run's output folder.
pub struct CsvSink;

/// What `sink.csv` reads from `with:`.
#[derive(Config, Deserialize)]
struct CsvSinkSettings {
    /// the file to write, e.g. `predictions.csv`
    path: OutputPath,
}

impl NodeKind for CsvSink {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "sink.csv",
            version: 2,
            doc: "Writes a table as CSV with a header row; class targets are written as their label names.
The path is relative to the run's output folder (`--out`) unless absolute.",
            inputs: vec![InputSpec::required("data", ValueType::Dataset, "the rows to write (2-D features)")],
            outputs: vec![],
            settings: CsvSinkSettings::specs(),
            side_effects: false,
        }
    }

    fn run(&self, ctx: &RunContext<'_>) -> Result<Outputs, NodeError> {
        let data = Dataset::from_value(ctx.input("data")?)?;
        let path = ctx.output_file(ctx.settings().read::<CsvSinkSettings>()?.path)?;
        write_csv(&data, &path)?;
        Ok(vec![])
    }
}

fn write_csv(data: &Dataset, path: &Path) -> Result<(), NodeError> {
    let features = data
        .features
        .tensor()?
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?;
    if features.rank() != 2 {
        return Err(NodeError::new(format!(
            "sink.csv writes 2-D tables, but the features have shape {:?}",
            features.dims()
        )));
    }
    let rows: Vec<Vec<f32>> = features.to_vec2()?;
    let n_cols = features.dims()[1];
    let mut header: Vec<String> = data
        .columns
        .clone()
        .unwrap_or_else(|| (0..n_cols).map(|i| format!("col{i}")).collect());
    let target: Option<Vec<String>> = match &data.target {
        Some(t) => {
            header.push(t.name.clone());
            let values = t.values.to_device(&Device::Cpu)?;
            Some(match (&t.labels, t.is_classification()) {
                (Some(labels), true) => values
                    .to_vec1::<u32>()?
                    .into_iter()
                    .map(|i| {
                        labels
                            .get(i as usize)
                            .cloned()
                            .unwrap_or_else(|| i.to_string())
                    })
                    .collect(),
                _ => values
                    .to_dtype(DType::F32)?
                    .to_vec1::<f32>()?
                    .into_iter()
                    .map(|x| x.to_string())
                    .collect(),
            })
        }
        None => None,
    };
    let err = |e: csv::Error| NodeError::new(format!("cannot write `{}`: {e}", path.display()));
    let mut w = csv::Writer::from_path(path).map_err(err)?;
    w.write_record(&header).map_err(err)?;
    for (i, row) in rows.iter().enumerate() {
        // Categorical columns are written as their names; a missing one as empty.
        let mut record: Vec<String> = row
            .iter()
            .zip(&header)
            .map(|(x, col)| match data.categories.get(col) {
                Some(_) if x.is_nan() => String::new(),
                Some(names) => names
                    .get(*x as usize)
                    .cloned()
                    .unwrap_or_else(|| x.to_string()),
                None => x.to_string(),
            })
            .collect();
        if let Some(t) = &target {
            record.push(t[i].clone());
        }
        w.write_record(&record).map_err(err)?;
    }
    w.flush()
        .map_err(|e| NodeError::new(format!("cannot write `{}`: {e}", path.display())))
}
