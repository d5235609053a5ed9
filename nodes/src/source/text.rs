//! `source.text`: documents from a CSV column or a file with one per line.

use std::path::Path;

use candle_core::{Device, Tensor};
use kiln_engine::{
    Config, InputPath, KindSpec, NodeError, NodeKind, OutputSpec, Outputs, PortName, RunContext,
    Settings, ValueType,
};
use serde::Deserialize;

use crate::data::Target;
use crate::text::Texts;

/// Reads documents.
pub struct TextSource;

/// What `source.text` reads from `with:`.
#[derive(Config, Deserialize)]
struct TextSettings {
    /// a .csv file, a text file with one document per line, or a folder of text files
    path: InputPath,
    /// CSV: the column holding the text
    #[setting(default = "text")]
    column: String,
    /// CSV: the column holding each document's label
    target: Option<String>,
    /// CSV: only rows with these labels, e.g. [fresh, rotten]
    keep: Option<Vec<String>>,
}

impl NodeKind for TextSource {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "source.text",
            version: 1,
            doc: "Reads documents: a column of a CSV file (quoted text may span lines), a plain text file with one document per line, or a folder with one document per file.
With `target`, a CSV column of labels becomes the class target (names sorted); in a folder, files inside subfolders take the subfolder's name as their label (`reviews/pos/1.txt` is `pos`). `keep` keeps only documents whose label is listed.",
            inputs: vec![],
            outputs: vec![OutputSpec::new("text", ValueType::Text, "the documents, with their target if labelled")],
            settings: TextSettings::specs(),
            side_effects: false,
        }
    }

    fn check(&self, settings: &Settings) -> Vec<(String, String)> {
        let s = match settings.read_checked::<TextSettings>() {
            Ok(s) => s,
            Err(problems) => return problems,
        };
        if is_csv(&s.path) && s.keep.is_some() && s.target.is_none() {
            return vec![(
                "keep".into(),
                "filters by label: name the label column in `target` too".into(),
            )];
        }
        Vec::new()
    }

    fn run(&self, ctx: &RunContext<'_>) -> Result<Outputs, NodeError> {
        let s: TextSettings = ctx.settings().read()?;
        let path = &s.path;
        let shown = path.display().to_string();
        let texts = if path.is_dir() {
            read_folder(path, &s)?
        } else if is_csv(path) {
            read_csv(path, &s)?
        } else {
            let text = std::fs::read_to_string(path)
                .map_err(|e| NodeError::new(format!("cannot read `{shown}`: {e}")))?;
            Texts {
                texts: text
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(String::from)
                    .collect(),
                target: None,
            }
        };
        if texts.texts.is_empty() {
            return Err(NodeError::new(format!("`{shown}` holds no documents")));
        }
        Ok(vec![(PortName::new_static("text"), texts.into_value())])
    }
}

fn is_csv(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
}

/// One document per file, in path order; files in subfolders are labelled
/// with the subfolder's name.
fn read_folder(dir: &Path, s: &TextSettings) -> Result<Texts, NodeError> {
    let keep = s.keep.as_ref();
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d)
            .map_err(|e| NodeError::new(format!("cannot read `{}`: {e}", d.display())))?;
        for entry in entries.flatten() {
            let p = entry.path();
            let hidden = p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if hidden {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut texts = Vec::new();
    let mut labels = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(dir).unwrap_or(f);
        let label = rel
            .parent()
            .and_then(|p| p.components().next())
            .map(|c| c.as_os_str().to_string_lossy().into_owned());
        if let (Some(k), Some(l)) = (&keep, &label) {
            if !k.contains(l) {
                continue;
            }
        }
        let bytes = std::fs::read(f)
            .map_err(|e| NodeError::new(format!("cannot read `{}`: {e}", f.display())))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| NodeError::new(format!("`{}` is not UTF-8 text", f.display())))?;
        texts.push(text.trim().to_string());
        labels.push(label);
    }
    let labelled = labels.iter().filter(|l| l.is_some()).count();
    if labelled != 0 && labelled != labels.len() {
        return Err(NodeError::new(format!(
            "`{}` mixes files in subfolders (labelled by the folder) with files at its top: put every document in a label folder, or none",
            dir.display()
        )));
    }
    let target = if labelled == 0 {
        None
    } else {
        let labels: Vec<String> = labels.into_iter().flatten().collect();
        Some(class_target("label", &labels)?)
    };
    Ok(Texts { texts, target })
}

/// Labels as a class target: names sorted, each document its name's index.
fn class_target(name: &str, labels: &[String]) -> Result<Target, NodeError> {
    let mut names: Vec<String> = labels.to_vec();
    names.sort();
    names.dedup();
    let idx: Vec<u32> = labels
        .iter()
        .map(|l| names.iter().position(|n| n == l).unwrap_or(0) as u32)
        .collect();
    let n = idx.len();
    Ok(Target {
        name: name.to_string(),
        values: Tensor::from_vec(idx, n, &Device::Cpu)?,
        labels: Some(names),
    })
}

fn read_csv(path: &Path, s: &TextSettings) -> Result<Texts, NodeError> {
    let shown = path.display().to_string();
    let err = |e: csv::Error| NodeError::new(format!("`{shown}`: {e}"));
    let mut reader = csv::Reader::from_path(path).map_err(err)?;
    let header: Vec<String> = reader
        .headers()
        .map_err(err)?
        .iter()
        .map(String::from)
        .collect();
    let find = |name: &str, setting: &str| {
        header.iter().position(|h| h == name).ok_or_else(|| {
            let hint = kiln_engine::ids::did_you_mean(name, header.iter().map(String::as_str))
                .map(|m| format!(" (did you mean `{m}`?)"))
                .unwrap_or_default();
            NodeError::new(format!(
                "setting `{setting}`: `{shown}` has no column `{name}`{hint}; its columns: {}",
                header.join(", ")
            ))
        })
    };
    let text_col = find(&s.column, "column")?;
    let target_col = s.target.as_deref().map(|t| find(t, "target")).transpose()?;
    let keep = s.keep.as_ref();
    let mut texts = Vec::new();
    let mut labels = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(err)?;
        let cell = |col: usize| {
            record.get(col).map(str::to_string).ok_or_else(|| {
                NodeError::new(format!(
                    "`{shown}`: record {} has no column {}",
                    i + 2,
                    col + 1
                ))
            })
        };
        if let Some(t) = target_col {
            let label = cell(t)?;
            if keep.as_ref().is_some_and(|k| !k.contains(&label)) {
                continue;
            }
            labels.push(label);
        }
        texts.push(cell(text_col)?);
    }
    let target = target_col
        .map(|t| class_target(&header[t], &labels))
        .transpose()?;
    Ok(Texts { texts, target })
}
