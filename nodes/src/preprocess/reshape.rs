//! `preprocess.reshape`: gives each example a shape (flat pixels -> C×H×W).

use kiln_engine::{
    Config, InputSpec, KindSpec, NodeError, NodeKind, OutputSpec, Outputs, PortName, RunContext,
    ValueType,
};
use serde::Deserialize;

use crate::data::Dataset;

/// Reshapes every example's features.
pub struct Reshape;

/// What `preprocess.reshape` reads from `with:`.
#[derive(Config, Deserialize)]
struct ReshapeSettings {
    /// the shape of one example, e.g. [1, 8, 8]
    #[setting(min = 1)]
    shape: Vec<usize>,
}

impl NodeKind for Reshape {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "preprocess.reshape",
            version: 1,
            doc: "Gives each example's features a shape, e.g. 784 pixels -> [1, 28, 28] for a CNN; the number of values must stay the same.",
            inputs: vec![InputSpec::required("data", ValueType::Dataset, "the examples")],
            outputs: vec![OutputSpec::new("data", ValueType::Dataset, "the same examples, reshaped (targets kept)")],
            settings: ReshapeSettings::specs(),
            side_effects: false,
        }
    }

    fn run(&self, ctx: &RunContext<'_>) -> Result<Outputs, NodeError> {
        let data = Dataset::from_value(ctx.input("data")?)?;
        let ReshapeSettings { shape } = ctx.settings().read()?;
        let per_example: usize = data.features.dims()[1..].iter().product();
        if shape.iter().product::<usize>() != per_example {
            return Err(NodeError::new(format!(
                "setting `shape`: {shape:?} holds {} values, but each example has {per_example}",
                shape.iter().product::<usize>()
            )));
        }
        let mut full = vec![data.len()];
        full.extend_from_slice(&shape);
        let reshaped = Dataset {
            features: data.features.tensor()?.reshape(full)?.into(),
            columns: None,
            target: data.target,
            categories: Default::default(),
        };
        Ok(vec![(PortName::new_static("data"), reshaped.into_value())])
    }
}
