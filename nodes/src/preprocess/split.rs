//! `preprocess.split`: train/test split, shuffled and stratified from the node's seed.

use kiln_engine::kind::types_at;
use kiln_engine::{
    Config, InputSpec, InputTypes, KindSpec, NodeError, NodeKind, OutputSpec, OutputTypes, Outputs,
    PortName, RunContext, Settings, Value, ValueType,
};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

use crate::data::Dataset;
use crate::text::Texts;

/// Splits a dataset into train and test parts.
pub struct Split;

/// What `preprocess.split` reads from `with:`.
#[derive(Config, Deserialize)]
struct SplitSettings {
    /// fraction of examples held out
    #[setting(default = 0.2, gt = 0.0, lt = 1.0)]
    test: f64,
    /// shuffle before splitting (from the node's seed)
    #[setting(default = true)]
    shuffle: bool,
    /// keep class proportions in both parts (classification targets)
    #[setting(default = false)]
    stratify: bool,
}

impl NodeKind for Split {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "preprocess.split",
            version: 1,
            doc: "Splits examples into `train` and `test` parts.
With `stratify`, each class keeps its share in both parts. Shuffling follows the node's seed, so the split is the same on every run.",
            inputs: vec![InputSpec::required("data", ValueType::Dataset, "the examples (or documents) to split").or(&[ValueType::Text])],
            outputs: vec![
                OutputSpec::new("train", ValueType::Dataset, "the training part (same type as the input)"),
                OutputSpec::new("test", ValueType::Dataset, "the held-out part (same type as the input)"),
            ],
            settings: SplitSettings::specs(),
            side_effects: false,
        }
    }

    fn output_types(
        &self,
        spec: &KindSpec,
        inputs: &InputTypes,
        _: &Settings,
    ) -> Result<OutputTypes, String> {
        let ty = types_at(inputs, "data")
            .first()
            .copied()
            .unwrap_or(ValueType::Dataset);
        Ok(spec.outputs.iter().map(|o| (o.name.clone(), ty)).collect())
    }

    fn run(&self, ctx: &RunContext<'_>) -> Result<Outputs, NodeError> {
        let s: SplitSettings = ctx.settings().read()?;
        let value = ctx.input("data")?;
        // Documents split as a dataset of their targets would, row for row.
        let texts = (value.ty() == ValueType::Text)
            .then(|| Texts::from_value(value))
            .transpose()?;
        let data = match &texts {
            Some(t) => t.as_targets()?,
            None => Dataset::from_value(value)?,
        };
        let n = data.len();
        let (train, test) = split_indices(
            n,
            s.test,
            s.shuffle,
            if s.stratify {
                Some(data.class_indices()?.ok_or_else(|| {
                    NodeError::new("`stratify: true` needs a classification target (set `target` on the source)")
                })?)
            } else {
                None
            },
            ctx.seed(),
        )?;
        let part = |rows: &[u32]| -> Result<Value, NodeError> {
            Ok(match &texts {
                Some(t) => t.select(rows)?.into_value(),
                None => data.select(rows)?.into_value(),
            })
        };
        Ok(vec![
            (PortName::new_static("train"), part(&train)?),
            (PortName::new_static("test"), part(&test)?),
        ])
    }
}

/// Row indices of the two parts. Per class when `classes` is given.
fn split_indices(
    n: usize,
    test: f64,
    shuffle: bool,
    classes: Option<Vec<u32>>,
    seed: u64,
) -> Result<(Vec<u32>, Vec<u32>), NodeError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let groups: Vec<Vec<u32>> = match classes {
        Some(c) => {
            let k = c.iter().copied().max().map_or(0, |m| m as usize + 1);
            let mut groups = vec![Vec::new(); k];
            for (i, class) in c.iter().enumerate() {
                groups[*class as usize].push(i as u32);
            }
            groups.retain(|g| !g.is_empty());
            groups
        }
        None => vec![(0..n as u32).collect()],
    };
    let (mut train, mut test_rows) = (Vec::new(), Vec::new());
    for mut group in groups {
        if shuffle {
            group.shuffle(&mut rng);
        }
        let n_test = ((group.len() as f64) * test).round() as usize;
        test_rows.extend_from_slice(&group[..n_test]);
        train.extend_from_slice(&group[n_test..]);
    }
    if shuffle {
        train.shuffle(&mut rng);
        test_rows.shuffle(&mut rng);
    } else {
        train.sort_unstable();
        test_rows.sort_unstable();
    }
    if train.is_empty() || test_rows.is_empty() {
        return Err(NodeError::new(format!(
            "`test: {test}` of {n} examples leaves one part empty: use more data or another fraction"
        )));
    }
    Ok((train, test_rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stratified_split_keeps_class_shares_and_is_seeded() {
        let classes: Vec<u32> = (0..150).map(|i| (i / 50) as u32).collect();
        let (train, test) = split_indices(150, 0.2, true, Some(classes.clone()), 7).unwrap();
        assert_eq!((train.len(), test.len()), (120, 30));
        for c in 0..3 {
            assert_eq!(
                test.iter().filter(|&&i| classes[i as usize] == c).count(),
                10
            );
        }
        let again = split_indices(150, 0.2, true, Some(classes.clone()), 7).unwrap();
        assert_eq!(again, (train.clone(), test.clone()));
        let other = split_indices(150, 0.2, true, Some(classes), 8).unwrap();
        assert_ne!(other.1, test);
        let mut all: Vec<u32> = train.into_iter().chain(test).collect();
        all.sort();
        assert_eq!(all, (0..150).collect::<Vec<u32>>());
    }

    #[test]
    fn unshuffled_split_keeps_order() {
        let (train, test) = split_indices(10, 0.3, false, None, 0).unwrap();
        assert_eq!(test, vec![0, 1, 2]);
        assert_eq!(train, (3..10).collect::<Vec<u32>>());
    }

    #[test]
    fn empty_parts_are_an_error() {
        assert!(split_indices(2, 0.1, true, None, 0).is_err());
    }
}
