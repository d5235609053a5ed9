//! `source.request`: the rows a served pipeline is asked about.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use candle_core::{Device, Tensor};
use kiln_engine::{
    Config, KindSpec, NodeError, NodeKind, NumberRows, OutputSpec, Outputs, PortName, RequestError,
    RunContext, Setting, SettingType, Settings, ValueType,
};
use serde::Deserialize;
use serde_json::Value as Json;

use crate::data::Dataset;

/// Rows of named numeric columns from a request (or from `example` in a run).
#[derive(Default)]
pub struct Request {
    /// Layouts already read, by the settings they come from (a served node
    /// reads the same settings for every request).
    layouts: Mutex<Vec<(Settings, Arc<Layout>)>>,
}

/// Layouts kept: one per served pipeline's request node, and some to spare.
const KEPT_LAYOUTS: usize = 16;

impl Request {
    /// The layout `settings` describe, read once per distinct settings.
    fn layout(&self, settings: &Settings) -> Result<Arc<Layout>, RequestError> {
        let mut kept = self.layouts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, layout)) = kept.iter().find(|(s, _)| s == settings) {
            return Ok(layout.clone());
        }
        let s: RequestSettings = settings
            .read()
            .map_err(|e| RequestError::new("", e.to_string()))?;
        let layout = Arc::new(
            Layout::of(&s)
                .map_err(|(k, m)| RequestError::new("", format!("setting `{k}`: {m}")))?,
        );
        if kept.len() == KEPT_LAYOUTS {
            kept.remove(0);
        }
        kept.push((settings.clone(), layout.clone()));
        Ok(layout)
    }
}

/// The columns of a row: their names, or how many (`col0`, `col1`, …).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum Columns {
    Names(Vec<String>),
    Count(usize),
}

impl Setting for Columns {
    fn setting_type() -> SettingType {
        SettingType::OneOf(vec![
            SettingType::list(SettingType::Str),
            SettingType::int_min(1),
        ])
    }
}

/// A name a text column may take, as written (`Biscoe`, `3`, `true`).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum CategoryName {
    Text(String),
    Number(serde_json::Number),
    Bool(bool),
}

impl CategoryName {
    fn into_name(self) -> String {
        match self {
            CategoryName::Text(s) => s,
            CategoryName::Number(n) => n.to_string(),
            CategoryName::Bool(b) => b.to_string(),
        }
    }
}

impl Setting for CategoryName {
    fn setting_type() -> SettingType {
        SettingType::OneOf(vec![
            SettingType::Str,
            SettingType::float(),
            SettingType::Bool,
        ])
    }
}

/// What `source.request` reads from `with:`.
#[derive(Config, Deserialize)]
struct RequestSettings {
    /// the columns a row holds, in order: names, or how many
    columns: Columns,
    /// text columns and the names each may take, e.g. `{ island: [Biscoe, Dream, Torgersen] }`
    categorical: Option<BTreeMap<String, Vec<CategoryName>>>,
    /// rows to use when the pipeline is run rather than served
    example: Option<Vec<Json>>,
}

impl NodeKind for Request {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "source.request",
            version: 1,
            doc: "The rows a served pipeline answers: each request's rows become a table with the declared `columns` (SPEC §7).
A row is an object (`{\"sepal_length\": 5.1, …}`, every column named once) or a list of values in column order; `null` is a missing value. `columns` is a list of names, or a count (names `col0`, `col1`, … as `source.csv` gives a file without header). A column listed in `categorical` takes one of its names (text), as `source.csv` reads text columns. In `kiln run` the node gives the `example` rows.",
            inputs: vec![],
            outputs: vec![OutputSpec::new("data", ValueType::Table, "the rows, as a table with the declared columns")],
            settings: RequestSettings::specs(),
            side_effects: false,
        }
    }

    fn check(&self, settings: &Settings) -> Vec<(String, String)> {
        let s = match settings.read_checked::<RequestSettings>() {
            Ok(s) => s,
            Err(problems) => return problems,
        };
        let layout = match Layout::of(&s) {
            Ok(l) => l,
            Err(problem) => return vec![problem],
        };
        let mut problems = Vec::new();
        if layout.columns.is_empty() {
            problems.push(("columns".into(), "list at least one column".into()));
        }
        for (i, c) in layout.columns.iter().enumerate() {
            if layout.columns[..i].contains(c) {
                problems.push(("columns".into(), format!("`{c}` is listed twice")));
            }
        }
        if let Some(example) = s.example {
            if let Err(e) = layout.table(&Json::Array(example)) {
                problems.push(("example".into(), e.within("example").to_string()));
            }
        }
        problems
    }

    fn run(&self, ctx: &RunContext<'_>) -> Result<Outputs, NodeError> {
        let s: RequestSettings = ctx.settings().read()?;
        let layout =
            Layout::of(&s).map_err(|(k, m)| NodeError::new(format!("setting `{k}`: {m}")))?;
        let example = s.example.ok_or_else(|| {
            NodeError::new(
                "this node takes its rows from requests (`kiln serve`); to run the pipeline, \
                 give it rows in setting `example`",
            )
        })?;
        let data = layout
            .table(&Json::Array(example))
            .map_err(|e| NodeError::new(e.within("example").to_string()))?;
        Ok(vec![(PortName::new_static("data"), data.into_value())])
    }

    fn takes_requests(&self) -> bool {
        true
    }

    fn serve_only(&self, settings: &Settings) -> bool {
        settings
            .read::<RequestSettings>()
            .map_or(true, |s| s.example.is_none())
    }

    fn request(&self, settings: &Settings, rows: &Json) -> Result<Outputs, RequestError> {
        let data = self.layout(settings)?.table(rows)?;
        Ok(vec![(PortName::new_static("data"), data.into_value())])
    }

    fn number_rows(&self, settings: &Settings) -> Option<usize> {
        let layout = self.layout(settings).ok()?;
        layout
            .categorical
            .is_empty()
            .then_some(layout.columns.len())
    }

    fn request_numbers(
        &self,
        settings: &Settings,
        rows: NumberRows,
    ) -> Result<Outputs, RequestError> {
        let layout = self.layout(settings)?;
        let n = rows.len();
        let features = Tensor::from_vec(rows.values, (n, rows.width), &Device::Cpu)
            .map_err(|e| RequestError::new("", e.to_string()))?;
        let data = Dataset {
            features: features.into(),
            columns: Some(layout.columns.clone()),
            target: None,
            categories: Default::default(),
        };
        Ok(vec![(PortName::new_static("data"), data.into_value())])
    }
}

/// What a row holds: column names, and the names text columns may take.
struct Layout {
    columns: Vec<String>,
    categorical: BTreeMap<String, Vec<String>>,
}

impl Layout {
    fn of(s: &RequestSettings) -> Result<Layout, (String, String)> {
        let columns: Vec<String> = match &s.columns {
            Columns::Count(n) => (0..*n).map(|i| format!("col{i}")).collect(),
            Columns::Names(names) => names.clone(),
        };
        let mut categorical = BTreeMap::new();
        for (col, names) in s.categorical.iter().flatten() {
            if !columns.contains(col) {
                return Err((
                    "categorical".into(),
                    format!("`{col}` is not one of the columns ({})", columns.join(", ")),
                ));
            }
            let names = names.iter().cloned().map(CategoryName::into_name).collect();
            categorical.insert(col.clone(), names);
        }
        Ok(Layout {
            columns,
            categorical,
        })
    }

    /// Reads rows into a table; errors name the row and column.
    fn table(&self, rows: &Json) -> Result<Dataset, RequestError> {
        let mut data = table(&self.columns, &self.categorical, rows)?;
        data.categories = self.categorical.clone();
        Ok(data)
    }
}

/// Reads rows (a list of objects or of value lists; one object alone is
/// one row) into a table with `columns`; a text cell of a `categorical`
/// column becomes its name's index. Errors name the row and column.
pub fn table(
    columns: &[String],
    categorical: &BTreeMap<String, Vec<String>>,
    rows: &Json,
) -> Result<Dataset, RequestError> {
    let rows: &[Json] = match rows {
        Json::Array(rows) => rows,
        Json::Object(_) => std::slice::from_ref(rows),
        other => {
            return Err(RequestError::new(
                "",
                format!(
                    "expected a list of rows (objects with {} or lists of {} numbers), not {}",
                    columns.join(", "),
                    columns.len(),
                    json_kind(other)
                ),
            ))
        }
    };
    if rows.is_empty() {
        return Err(RequestError::new(
            "",
            "there are no rows: send at least one",
        ));
    }
    let mut values = Vec::with_capacity(rows.len() * columns.len());
    for (i, row) in rows.iter().enumerate() {
        let at = |field: &str| {
            if field.is_empty() {
                format!("[{i}]")
            } else {
                format!("[{i}].{field}")
            }
        };
        match row {
            Json::Object(cells) => {
                if let Some(unknown) = cells.keys().find(|k| !columns.contains(k)) {
                    let hint =
                        kiln_engine::ids::did_you_mean(unknown, columns.iter().map(String::as_str))
                            .map(|m| format!(" (did you mean `{m}`?)"))
                            .unwrap_or_default();
                    return Err(RequestError::new(
                        at(unknown),
                        format!(
                            "unknown column{hint}; the columns are {}",
                            columns.join(", ")
                        ),
                    ));
                }
                for c in columns {
                    let cell = cells.get(c).ok_or_else(|| {
                        RequestError::new(
                            at(c),
                            "missing: every row needs every column (null for a missing value)",
                        )
                    })?;
                    values.push(
                        value(cell, categorical.get(c)).map_err(|m| RequestError::new(at(c), m))?,
                    );
                }
            }
            Json::Array(cells) => {
                if cells.len() != columns.len() {
                    return Err(RequestError::new(
                        at(""),
                        format!(
                            "has {} values, but a row has {} ({})",
                            cells.len(),
                            columns.len(),
                            columns.join(", ")
                        ),
                    ));
                }
                for (j, (cell, c)) in cells.iter().zip(columns).enumerate() {
                    values.push(value(cell, categorical.get(c)).map_err(|m| {
                        RequestError::new(format!("[{i}][{j}]"), format!("({c}) {m}"))
                    })?);
                }
            }
            other => {
                return Err(RequestError::new(
                    at(""),
                    format!(
                        "a row is an object or a list of numbers, not {}",
                        json_kind(other)
                    ),
                ))
            }
        }
    }
    let features = Tensor::from_vec(values, (rows.len(), columns.len()), &Device::Cpu)
        .map_err(|e| RequestError::new("", e.to_string()))?;
    Ok(Dataset {
        features: features.into(),
        columns: Some(columns.to_vec()),
        target: None,
        categories: Default::default(),
    })
}

/// A cell's value: a number, or for a text column its name's index.
fn value(cell: &Json, names: Option<&Vec<String>>) -> Result<f32, String> {
    let Some(names) = names else {
        return number(cell);
    };
    match cell {
        Json::Null => Ok(f32::NAN),
        Json::String(s) => names
            .iter()
            .position(|n| n == s)
            .map(|i| i as f32)
            .ok_or_else(|| {
                let hint = kiln_engine::ids::did_you_mean(s, names.iter().map(String::as_str))
                    .map(|m| format!(" (did you mean \"{m}\"?)"))
                    .unwrap_or_default();
                format!("\"{s}\" is not one of {}{hint}", names.join(", "))
            }),
        other => Err(format!(
            "should be one of {}, not {}",
            names.join(", "),
            json_kind(other)
        )),
    }
}

fn number(cell: &Json) -> Result<f32, String> {
    match cell {
        Json::Null => Ok(f32::NAN),
        Json::Number(n) => {
            let v = n.as_f64().unwrap_or(f64::NAN) as f32;
            if v.is_finite() {
                Ok(v)
            } else {
                Err(format!("{n} is out of range for a 32-bit float"))
            }
        }
        other => Err(format!("should be a number, not {}", json_kind(other))),
    }
}

fn json_kind(v: &Json) -> String {
    match v {
        Json::Null => "null".into(),
        Json::Bool(b) => format!("`{b}`"),
        Json::Number(n) => format!("the number {n}"),
        Json::String(s) if s.len() <= 40 => format!("the string \"{s}\""),
        Json::String(_) => "a string".into(),
        Json::Array(_) => "a list".into(),
        Json::Object(_) => "an object".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cols() -> Vec<String> {
        vec!["a".into(), "b".into()]
    }

    fn table(columns: &[String], rows: &Json) -> Result<Dataset, RequestError> {
        super::table(columns, &BTreeMap::new(), rows)
    }

    #[test]
    fn text_columns_take_their_names() {
        let cats = BTreeMap::from([("b".to_string(), vec!["x".to_string(), "y".to_string()])]);
        let t = super::table(&cols(), &cats, &json!([{"a": 1, "b": "y"}, [2, "x"]])).unwrap();
        assert_eq!(
            t.features.tensor().unwrap().to_vec2::<f32>().unwrap(),
            vec![vec![1.0, 1.0], vec![2.0, 0.0]]
        );
        let e = super::table(&cols(), &cats, &json!([{"a": 1, "b": "z"}])).unwrap_err();
        assert_eq!(e.field, "[0].b");
        assert!(e.message.contains("x, y"), "{}", e.message);
    }

    #[test]
    fn objects_and_lists_give_the_same_table() {
        let t1 = table(&cols(), &json!([{"b": 2, "a": 1.5}, [3, null]])).unwrap();
        let v = t1.features.tensor().unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(v[0], vec![1.5, 2.0]);
        assert_eq!(v[1][0], 3.0);
        assert!(v[1][1].is_nan());
        assert_eq!(table(&cols(), &json!({"a": 1, "b": 2})).unwrap().len(), 1);
    }

    #[test]
    fn bad_rows_name_the_field() {
        let field = |rows: Json| table(&cols(), &rows).unwrap_err().field;
        assert_eq!(
            field(json!([{"a": 1, "b": 2}, {"a": 1, "bb": 2}])),
            "[1].bb"
        );
        assert_eq!(field(json!([{"a": 1}])), "[0].b");
        assert_eq!(field(json!([{"a": "x", "b": 1}])), "[0].a");
        assert_eq!(field(json!([[1, 2, 3]])), "[0]");
        assert_eq!(field(json!([[1, true]])), "[0][1]");
        assert_eq!(field(json!([7])), "[0]");
        assert_eq!(field(json!("rows")), "");
        assert_eq!(field(json!([])), "");
        assert_eq!(field(json!([{"a": 1e300, "b": 1}])), "[0].a");
    }
}
