//! `source.csv`: a table from a CSV file (gzip or not).

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;

use candle_core::{Device, Tensor};
use kiln_engine::{
    Config, InputPath, KindSpec, NodeError, NodeKind, OutputSpec, Outputs, PortName, RunContext,
    Setting, SettingType, Settings, ValueType,
};
use serde::Deserialize;

use crate::data::{Dataset, Target};

/// Reads a CSV file into a table.
pub struct CsvSource;

/// With `task: auto`, whole-number targets with at most this many distinct
/// values are classes.
const MAX_AUTO_CLASSES: usize = 30;

const DOC: &str = "Reads a CSV file (or .csv.gz) into a table of numeric features and an optional target.
A target that is not numeric becomes class indices, with the label names kept for decoding.
Empty cells, `NA` and `nan` read as missing (NaN). Text feature columns are listed under `categorical`; other text in a feature column is an error naming its line and column.";

kiln_engine::choices! {
    /// What a target column holds.
    pub enum Task {
        /// Text, or whole numbers with few distinct values, are classes; other numbers a quantity.
        Auto = "auto",
        /// Classes, whatever the cells look like.
        Classification = "classification",
        /// Numbers.
        Regression = "regression",
    }
}

/// A column, by name or by index (negative counts from the end).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ColumnRef {
    /// Its header.
    Name(String),
    /// Its position; -1 is the last.
    Index(i64),
}

impl Setting for ColumnRef {
    fn setting_type() -> SettingType {
        SettingType::OneOf(vec![SettingType::Str, SettingType::int()])
    }
}

/// What `source.csv` reads from `with:`.
#[derive(Config, Deserialize)]
struct CsvSettings {
    /// the CSV file, relative to the pipeline file; gzip is detected
    path: InputPath,
    /// the target column: a name, or an index (negative counts from the end, -1 is the last)
    target: Option<ColumnRef>,
    /// whether the first row holds column names
    #[setting(default = true)]
    header: bool,
    /// feature columns to keep (names or indices); default: all but the target
    columns: Option<Vec<ColumnRef>>,
    /// text feature columns: each becomes category indices, names kept (expand with `preprocess.onehot`)
    categorical: Option<Vec<ColumnRef>>,
    /// what the target is; `auto`: text, or whole numbers with at most 30 distinct values, are classes; other numbers regression
    #[setting(default = "auto")]
    task: Task,
    /// the field separator, one character
    #[setting(default = ",")]
    delimiter: String,
}

impl NodeKind for CsvSource {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "source.csv",
            version: 2,
            doc: DOC,
            inputs: vec![],
            outputs: vec![OutputSpec::new("data", ValueType::Table, "the rows read")],
            settings: CsvSettings::specs(),
            side_effects: false,
        }
    }

    fn check(&self, settings: &Settings) -> Vec<(String, String)> {
        let s = match settings.read_checked::<CsvSettings>() {
            Ok(s) => s,
            Err(problems) => return problems,
        };
        let mut problems = Vec::new();
        if s.delimiter.len() != 1 {
            problems.push((
                "delimiter".into(),
                "must be exactly one character, such as `,` or `;`".into(),
            ));
        }
        if s.task != Task::Auto && s.target.is_none() {
            problems.push(("task".into(), "needs a `target` column".into()));
        }
        problems
    }

    fn run(&self, ctx: &RunContext<'_>) -> Result<Outputs, NodeError> {
        let table = read_table(&ctx.settings().read()?)?;
        Ok(vec![(PortName::new_static("data"), table.into_value())])
    }
}

struct Raw {
    header: Vec<String>,
    /// Rows of cells, with the line each came from.
    rows: Vec<(u64, Vec<String>)>,
}

fn read_raw(path: &Path, delimiter: u8, has_header: bool) -> Result<Raw, NodeError> {
    let shown = path.display();
    let bytes =
        std::fs::read(path).map_err(|e| NodeError::new(format!("cannot read `{shown}`: {e}")))?;
    let bytes = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .map_err(|e| NodeError::new(format!("`{shown}` is not a valid gzip file: {e}")))?;
        out
    } else {
        bytes
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(&bytes[..]);
    let mut header = Vec::new();
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| NodeError::new(format!("`{shown}`: {e}")))?;
        let line = record.position().map_or(i as u64 + 1, |p| p.line());
        let cells: Vec<String> = record.iter().map(|c| c.trim().to_string()).collect();
        if cells.iter().all(String::is_empty) {
            continue;
        }
        if i == 0 && has_header {
            header = cells;
            continue;
        }
        let width = if header.is_empty() {
            rows.first()
                .map_or(cells.len(), |(_, r): &(u64, Vec<String>)| r.len())
        } else {
            header.len()
        };
        if cells.len() != width {
            let what = if header.is_empty() {
                "the first row"
            } else {
                "the header"
            };
            return Err(NodeError::new(format!(
                "`{shown}` line {line}: {} fields, but {what} has {width}: every row needs the same number of fields",
                cells.len()
            )));
        }
        rows.push((line, cells));
    }
    if header.is_empty() {
        let width = rows.first().map_or(0, |(_, r)| r.len());
        header = (0..width).map(|i| format!("col{i}")).collect();
    }
    if rows.is_empty() {
        return Err(NodeError::new(format!("`{shown}` has no data rows")));
    }
    Ok(Raw { header, rows })
}

fn column_index(header: &[String], column: &ColumnRef, path: &Path) -> Result<usize, NodeError> {
    let n = header.len() as i64;
    match column {
        ColumnRef::Name(name) => header.iter().position(|h| h == name).ok_or_else(|| {
            let hint = kiln_engine::ids::did_you_mean(name, header.iter().map(String::as_str))
                .map(|m| format!(" (did you mean `{m}`?)"))
                .unwrap_or_else(|| format!(" (columns: {})", header.join(", ")));
            NodeError::new(format!("`{}` has no column `{name}`{hint}", path.display()))
        }),
        &ColumnRef::Index(i) => {
            let idx = if i < 0 { n + i } else { i };
            if (0..n).contains(&idx) {
                Ok(idx as usize)
            } else {
                Err(NodeError::new(format!(
                    "column index {i} is out of range: `{}` has {n} columns",
                    path.display()
                )))
            }
        }
    }
}

/// Cells that mean "no value".
fn is_missing(cell: &str) -> bool {
    matches!(
        cell,
        "" | "NA" | "na" | "N/A" | "NaN" | "nan" | "null" | "?"
    )
}

fn parse_cell(cell: &str) -> Option<f32> {
    if is_missing(cell) {
        Some(f32::NAN)
    } else {
        cell.parse::<f32>().ok()
    }
}

/// Reads the file as the settings say.
fn read_table(s: &CsvSettings) -> Result<Dataset, NodeError> {
    let path: &Path = &s.path;
    let delimiter = s.delimiter.bytes().next().unwrap_or(b',');
    let raw = read_raw(path, delimiter, s.header)?;
    let target_idx = s
        .target
        .as_ref()
        .map(|t| column_index(&raw.header, t, path))
        .transpose()?;
    let feature_idx: Vec<usize> = match &s.columns {
        Some(cols) => cols
            .iter()
            .map(|c| column_index(&raw.header, c, path))
            .collect::<Result<_, _>>()?,
        None => (0..raw.header.len())
            .filter(|i| Some(*i) != target_idx)
            .collect(),
    };
    if feature_idx.is_empty() {
        return Err(NodeError::new(format!(
            "`{}`: no feature columns are left",
            path.display()
        )));
    }
    let categorical: Vec<usize> = s
        .categorical
        .iter()
        .flatten()
        .map(|c| column_index(&raw.header, c, path))
        .collect::<Result<_, _>>()?;
    // Category names per categorical column, sorted; cells hold their index.
    let mut categories = std::collections::BTreeMap::new();
    for &j in feature_idx.iter().filter(|j| categorical.contains(j)) {
        let names: BTreeSet<&str> = raw
            .rows
            .iter()
            .map(|(_, r)| r[j].as_str())
            .filter(|c| !is_missing(c))
            .collect();
        categories.insert(j, names.into_iter().map(String::from).collect::<Vec<_>>());
    }
    let n = raw.rows.len();
    let mut features = Vec::with_capacity(n * feature_idx.len());
    for (line, row) in &raw.rows {
        for &j in &feature_idx {
            let cell = &row[j];
            if let Some(names) = categories.get(&j) {
                features.push(
                    names
                        .iter()
                        .position(|c| c == cell)
                        .map_or(f32::NAN, |i| i as f32),
                );
                continue;
            }
            features.push(parse_cell(cell).ok_or_else(|| {
                NodeError::new(format!(
                    "`{}` line {line}, column {} (`{}`): `{cell}` is not a number; \
                     list text columns under `categorical`",
                    path.display(),
                    j + 1,
                    raw.header[j]
                ))
            })?);
        }
    }
    let categories = categories
        .into_iter()
        .map(|(j, names)| (raw.header[j].clone(), names))
        .collect();
    let features = Tensor::from_vec(features, (n, feature_idx.len()), &Device::Cpu)?;
    let columns = feature_idx.iter().map(|&j| raw.header[j].clone()).collect();
    let target = match target_idx {
        Some(j) => Some(read_target(&raw, j, s.task, path)?),
        None => None,
    };
    Ok(Dataset {
        features: features.into(),
        columns: Some(columns),
        target,
        categories,
    })
}

fn read_target(raw: &Raw, j: usize, task: Task, path: &Path) -> Result<Target, NodeError> {
    let cells: Vec<&str> = raw.rows.iter().map(|(_, r)| r[j].as_str()).collect();
    let numbers: Option<Vec<f64>> = cells.iter().map(|c| c.parse::<f64>().ok()).collect();
    let whole = numbers
        .as_ref()
        .is_some_and(|ns| ns.iter().all(|x| x.fract() == 0.0 && x.is_finite()));
    // Whole numbers are classes when there are few distinct ones (digits,
    // ratings), quantities otherwise (prices, counts).
    let few_values = || {
        let distinct: BTreeSet<i64> = numbers.iter().flatten().map(|x| *x as i64).collect();
        let n = cells.len();
        distinct.len() <= MAX_AUTO_CLASSES && (n < 10 || distinct.len() * 2 <= n)
    };
    let classify = match task {
        Task::Classification => true,
        Task::Regression => false,
        Task::Auto => numbers.is_none() || (whole && few_values()),
    };
    let name = raw.header[j].clone();
    let n = cells.len();
    if !classify {
        let values = numbers.ok_or_else(|| {
            let (line, cell) = raw
                .rows
                .iter()
                .find(|(_, r)| r[j].parse::<f64>().is_err())
                .map_or((0, ""), |(l, r)| (*l, r[j].as_str()));
            NodeError::new(format!(
                "`{}` line {line}: target `{cell}` is not a number, but `task: regression` needs numbers",
                path.display()
            ))
        })?;
        let values: Vec<f32> = values.into_iter().map(|x| x as f32).collect();
        return Ok(Target {
            name,
            values: Tensor::from_vec(values, n, &Device::Cpu)?,
            labels: None,
        });
    }
    // Class names sorted (numerically when they are numbers) so indices are stable.
    let labels: Vec<String> = match &numbers {
        Some(ns) if whole => {
            let set: BTreeSet<i64> = ns.iter().map(|x| *x as i64).collect();
            set.into_iter().map(|x| x.to_string()).collect()
        }
        _ => {
            let set: BTreeSet<&str> = cells.iter().copied().collect();
            set.into_iter().map(String::from).collect()
        }
    };
    let index_of = |cell: &str| -> u32 {
        let key = match &numbers {
            Some(_) if whole => cell
                .parse::<f64>()
                .map_or(cell.to_string(), |x| (x as i64).to_string()),
            _ => cell.to_string(),
        };
        labels.iter().position(|l| *l == key).unwrap_or(0) as u32
    };
    let values: Vec<u32> = cells.iter().map(|c| index_of(c)).collect();
    Ok(Target {
        name,
        values: Tensor::from_vec(values, n, &Device::Cpu)?,
        labels: Some(labels),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value as Json};
    use std::collections::BTreeMap;

    fn settings(file: &tempfile::NamedTempFile, pairs: &[(&str, Json)]) -> CsvSettings {
        let mut map: BTreeMap<String, Json> = BTreeMap::from([
            ("path".to_string(), json!(file.path())),
            ("header".to_string(), json!(true)),
            ("task".to_string(), json!("auto")),
            ("delimiter".to_string(), json!(",")),
        ]);
        for (k, v) in pairs {
            map.insert(k.to_string(), v.clone());
        }
        Settings::from_map(map).read().unwrap()
    }

    fn write(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn text_targets_become_sorted_classes() {
        let f = write("a,b,label\n1,2,dog\n3,4,cat\n5,6,dog\n");
        let t = read_table(&settings(&f, &[("target", json!("label"))])).unwrap();
        let target = t.target.unwrap();
        assert_eq!(target.labels.unwrap(), vec!["cat", "dog"]);
        assert_eq!(target.values.to_vec1::<u32>().unwrap(), vec![1, 0, 1]);
        assert_eq!(
            t.features.tensor().unwrap().to_vec2::<f32>().unwrap(),
            vec![vec![1., 2.], vec![3., 4.], vec![5., 6.]]
        );
    }

    #[test]
    fn ragged_rows_and_bad_cells_name_their_line() {
        let f = write("a,b\n1,2\n3\n");
        let e = read_table(&settings(&f, &[])).unwrap_err();
        assert!(e.message().contains("line 3"), "{e}");
        let f = write("a,b\n1,2\n3,x\n");
        let e = read_table(&settings(&f, &[])).unwrap_err();
        assert!(e.message().contains("line 3, column 2 (`b`)"), "{e}");
    }

    #[test]
    fn many_distinct_whole_numbers_are_a_quantity_not_classes() {
        let rows: String = (0..200)
            .map(|i| format!("{i},{}\n", i * 1000 + 7))
            .collect();
        let f = write(&format!("x,price\n{rows}"));
        let t = read_table(&settings(&f, &[("target", json!("price"))])).unwrap();
        assert!(!t.target.unwrap().is_classification());
        let t = read_table(&settings(
            &f,
            &[
                ("target", json!("price")),
                ("task", json!("classification")),
            ],
        ))
        .unwrap();
        assert_eq!(t.target.unwrap().labels.unwrap().len(), 200);
    }

    #[test]
    fn categorical_columns_keep_their_names_and_missing_cells() {
        let f = write("colour,size,label\nred,1,a\nblue,NA,b\nNA,3,a\nred,4,b\n");
        let t = read_table(&settings(
            &f,
            &[
                ("target", json!("label")),
                ("categorical", json!(["colour"])),
            ],
        ))
        .unwrap();
        assert_eq!(t.categories["colour"], vec!["blue", "red"]);
        let x: Vec<Vec<f32>> = t.features.tensor().unwrap().to_vec2().unwrap();
        assert_eq!((x[0][0], x[1][0], x[3][0]), (1.0, 0.0, 1.0));
        assert!(x[2][0].is_nan() && x[1][1].is_nan());
    }

    #[test]
    fn headerless_files_take_negative_target_indices() {
        let f = write("1,2,7\n3,4,9\n");
        let t = read_table(&settings(
            &f,
            &[("header", json!(false)), ("target", json!(-1))],
        ))
        .unwrap();
        assert_eq!(t.columns.unwrap(), vec!["col0", "col1"]);
        assert_eq!(t.target.unwrap().labels.unwrap(), vec!["7", "9"]);
    }
}
