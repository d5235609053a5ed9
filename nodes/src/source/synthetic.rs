//! `source.synthetic`: seeded sequence tasks whose answer is known exactly.

use candle_core::{Device, Tensor};
use kiln_engine::{
    Config, KindSpec, NodeError, NodeKind, OutputSpec, Outputs, PortName, RunContext, ValueType,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

use crate::data::{Dataset, Target};

kiln_engine::choices! {
    /// The sequence task (the `task` setting).
    enum Task {
        /// Sum the two marked numbers of a sequence.
        Adding = "adding",
        /// Whether a bit sequence holds an odd number of ones.
        Parity = "parity",
    }
}

/// Generates sequence tasks from the node's seed.
pub struct Synthetic;

/// What `source.synthetic` reads from `with:`.
#[derive(Config, Deserialize)]
struct SyntheticSettings {
    /// which task
    #[setting(default = "adding")]
    task: Task,
    /// how many sequences
    #[setting(default = 2000, min = 2, max = 10_000_000)]
    examples: usize,
    /// steps per sequence
    #[setting(default = 20, min = 2, max = 100_000)]
    length: usize,
}

impl NodeKind for Synthetic {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "source.synthetic",
            version: 1,
            doc: "Generates a sequence task with a known answer, the same on every run (from the node's seed).
`adding` (Hochreiter & Schmidhuber's adding problem): each step holds a random value in [0, 1) and a marker; exactly two steps are marked, one in each half, and the target is the sum of their values (regression; always predicting the mean scores an MSE of about 0.167).
`parity`: each step holds a bit; the class is `even` or `odd` by the number of ones.",
            inputs: vec![],
            outputs: vec![OutputSpec::new("data", ValueType::Dataset, "sequences shaped [examples, length, features] with their target")],
            settings: SyntheticSettings::specs(),
            side_effects: false,
        }
    }

    fn run(&self, ctx: &RunContext<'_>) -> Result<Outputs, NodeError> {
        let s: SyntheticSettings = ctx.settings().read()?;
        let (n, len) = (s.examples, s.length);
        let mut rng = ChaCha8Rng::seed_from_u64(ctx.seed());
        let data = match s.task {
            Task::Parity => parity(&mut rng, n, len)?,
            Task::Adding => adding(&mut rng, n, len)?,
        };
        Ok(vec![(PortName::new_static("data"), data.into_value())])
    }
}

fn adding(rng: &mut ChaCha8Rng, n: usize, len: usize) -> Result<Dataset, NodeError> {
    let mut features = vec![0f32; n * len * 2];
    let mut targets = Vec::with_capacity(n);
    let half = len / 2;
    for i in 0..n {
        let seq = &mut features[i * len * 2..(i + 1) * len * 2];
        for t in 0..len {
            seq[t * 2] = rng.random::<f32>();
        }
        let a = rng.random_range(0..half.max(1));
        let b = rng.random_range(half..len);
        seq[a * 2 + 1] = 1.0;
        seq[b * 2 + 1] = 1.0;
        targets.push(seq[a * 2] + seq[b * 2]);
    }
    Ok(Dataset {
        features: Tensor::from_vec(features, (n, len, 2), &Device::Cpu)?.into(),
        columns: None,
        target: Some(Target {
            name: "sum".into(),
            values: Tensor::from_vec(targets, n, &Device::Cpu)?,
            labels: None,
        }),
        categories: Default::default(),
    })
}

fn parity(rng: &mut ChaCha8Rng, n: usize, len: usize) -> Result<Dataset, NodeError> {
    let mut features = Vec::with_capacity(n * len);
    let mut targets = Vec::with_capacity(n);
    for _ in 0..n {
        let mut ones = 0u32;
        for _ in 0..len {
            let bit = rng.random_bool(0.5);
            ones += u32::from(bit);
            features.push(if bit { 1.0f32 } else { 0.0 });
        }
        targets.push(ones % 2);
    }
    Ok(Dataset {
        features: Tensor::from_vec(features, (n, len, 1), &Device::Cpu)?.into(),
        columns: None,
        target: Some(Target {
            name: "parity".into(),
            values: Tensor::from_vec(targets, n, &Device::Cpu)?,
            labels: Some(vec!["even".into(), "odd".into()]),
        }),
        categories: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adding_targets_are_the_sum_of_the_two_marked_values() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let d = adding(&mut rng, 50, 10).unwrap();
        let x: Vec<Vec<Vec<f32>>> = d.features.tensor().unwrap().to_vec3().unwrap();
        let y: Vec<f32> = d.target.unwrap().values.to_vec1().unwrap();
        for (seq, target) in x.iter().zip(y) {
            let marked: Vec<f32> = seq.iter().filter(|s| s[1] == 1.0).map(|s| s[0]).collect();
            assert_eq!(marked.len(), 2);
            assert_eq!(marked[0] + marked[1], target);
        }
    }

    #[test]
    fn parity_counts_ones() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let d = parity(&mut rng, 20, 7).unwrap();
        let x: Vec<Vec<Vec<f32>>> = d.features.tensor().unwrap().to_vec3().unwrap();
        let y: Vec<u32> = d.target.unwrap().values.to_vec1().unwrap();
        for (seq, class) in x.iter().zip(y) {
            let ones = seq.iter().filter(|s| s[0] == 1.0).count() as u32;
            assert_eq!(ones % 2, class);
        }
    }
}
