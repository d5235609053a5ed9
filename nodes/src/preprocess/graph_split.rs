//! `preprocess.graph_split`: train/valid/test parts of a graph's examples,
//! seeded and stratified.

use std::collections::BTreeMap;

use kiln_engine::{
    Config, InputSpec, KindSpec, NodeError, NodeKind, OutputSpec, Outputs, PortName, RunContext,
    Settings, Value, ValueType,
};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;
use serde_json::json;

use crate::graph::{Graph, Part};

/// Splits a graph's examples into parts.
pub struct GraphSplit;

const DOC: &str = "Marks a graph's labelled examples (nodes, or graphs for graph classification) as train, valid or test; the graph itself is unchanged, so every node still passes messages.
Parts are drawn per class (stratified) from the node's seed: `train` and `valid` are shares of each class, the rest is test. `per_class` takes that many training examples of each class instead (the semi-supervised setting), and `train_ids` names them.";

/// What `preprocess.graph_split` reads from `with:`.
#[derive(Config, Deserialize)]
struct GraphSplitSettings {
    /// share of each class for training
    #[setting(default = 0.6, min = 0.0, max = 1.0)]
    train: f64,
    /// share of each class for validation (the rest is test)
    #[setting(default = 0.2, min = 0.0, max = 1.0)]
    valid: f64,
    /// training examples per class, instead of `train`
    #[setting(min = 1)]
    per_class: Option<usize>,
    /// the training examples by id, instead of `train`
    train_ids: Option<Vec<String>>,
}

impl NodeKind for GraphSplit {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "preprocess.graph_split",
            version: 1,
            doc: DOC,
            inputs: vec![InputSpec::required(
                "graph",
                ValueType::Graph,
                "a graph with a target",
            )],
            outputs: vec![
                OutputSpec::new(
                    "graph",
                    ValueType::Graph,
                    "the same graph with its examples split",
                ),
                OutputSpec::new("report", ValueType::Metrics, "examples per part and class"),
            ],
            settings: GraphSplitSettings::specs(),
            side_effects: false,
        }
    }

    fn check(&self, settings: &Settings) -> Vec<(String, String)> {
        let s = match settings.read_checked::<GraphSplitSettings>() {
            Ok(s) => s,
            Err(problems) => return problems,
        };
        let mut problems = Vec::new();
        if s.per_class.is_some() && s.train_ids.is_some() {
            problems.push((
                "train_ids".into(),
                "choose the training examples one way: `per_class` or `train_ids`".into(),
            ));
        }
        if s.per_class.is_none() && s.train_ids.is_none() && s.train + s.valid > 1.0 {
            problems.push((
                "valid".into(),
                format!(
                    "`train` + `valid` is {}: the shares can't exceed 1",
                    s.train + s.valid
                ),
            ));
        }
        problems
    }

    fn run(&self, ctx: &RunContext<'_>) -> Result<Outputs, NodeError> {
        let s: GraphSplitSettings = ctx.settings().read()?;
        let mut graph = Graph::from_value(ctx.input("graph")?)?;
        let target = graph.target.as_ref().ok_or_else(|| {
            NodeError::new(
                "the graph has no target: name the label column on `source.graph` (`target:`)",
            )
        })?;
        let classes: Vec<u32> = target.values.to_dtype(candle_core::DType::U32)?.to_vec1()?;
        let labels = target.labels.clone().unwrap_or_default();
        let labelled: Vec<bool> = (0..classes.len())
            .map(|i| graph.split.get(i).is_none_or(|&p| p != Part::None as u8))
            .collect();
        let mut by_class: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for (i, &c) in classes.iter().enumerate() {
            if labelled[i] {
                by_class.entry(c).or_default().push(i as u32);
            }
        }
        let mut rng = ChaCha8Rng::seed_from_u64(ctx.seed());
        let mut split = vec![Part::None as u8; classes.len()];
        let valid_share = s.valid;
        let ids = s.train_ids.as_ref();
        let chosen: Option<Vec<u32>> = ids
            .map(|ids| {
                let names = match graph.level {
                    crate::graph::Level::Node => &graph.node_ids,
                    crate::graph::Level::Graph => &graph.graph_ids,
                };
                ids.iter()
                    .map(|id| {
                        let i = names.iter().position(|n| n == id).ok_or_else(|| {
                            NodeError::new(format!(
                                "setting `train_ids`: the graph has no example `{id}`"
                            ))
                        })?;
                        if !labelled[i] {
                            return Err(NodeError::new(format!(
                                "setting `train_ids`: example `{id}` has no label"
                            )));
                        }
                        Ok(i as u32)
                    })
                    .collect::<Result<Vec<u32>, NodeError>>()
            })
            .transpose()?;
        for (class, members) in &mut by_class {
            members.shuffle(&mut rng);
            let n = members.len();
            let train: Vec<u32> = match (&chosen, s.per_class) {
                (Some(ids), _) => members
                    .iter()
                    .copied()
                    .filter(|m| ids.contains(m))
                    .collect(),
                (None, Some(k)) => {
                    if k > n {
                        let name = labels
                            .get(*class as usize)
                            .cloned()
                            .unwrap_or_else(|| class.to_string());
                        return Err(NodeError::new(format!(
                            "setting `per_class`: class `{name}` has only {n} labelled examples, {k} asked"
                        )));
                    }
                    members[..k].to_vec()
                }
                (None, None) => members[..(s.train * n as f64).round() as usize].to_vec(),
            };
            let rest: Vec<u32> = members
                .iter()
                .copied()
                .filter(|m| !train.contains(m))
                .collect();
            let valid = ((valid_share * n as f64).round() as usize).min(rest.len());
            for &m in &train {
                split[m as usize] = Part::Train as u8;
            }
            for (k, &m) in rest.iter().enumerate() {
                split[m as usize] = if k < valid { Part::Valid } else { Part::Test } as u8;
            }
        }
        let count = |part: Part| split.iter().filter(|&&p| p == part as u8).count();
        if count(Part::Train) == 0 {
            return Err(NodeError::new(
                "the split leaves no training examples: raise `train`",
            ));
        }
        let report = json!({
            "train": count(Part::Train),
            "valid": count(Part::Valid),
            "test": count(Part::Test),
            "unlabelled": count(Part::None),
        });
        graph.split = split;
        Ok(vec![
            (PortName::new_static("graph"), graph.into_value()?),
            (
                PortName::new_static("report"),
                Value::from_json(ValueType::Metrics, report),
            ),
        ])
    }
}
