//! The plug-in boundary: what a node kind declares and how it runs.
//!
//! A kind declares its ports, settings and docs in a [`KindSpec`]; the engine
//! validates pipelines, prints `kiln nodes` and writes the JSON Schema from
//! that spec alone. The engine calls [`NodeKind::run`] with a [`RunContext`]
//! and never looks inside a kind.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::context::RunContext;
use crate::error::RequestError;
use crate::ids::PortName;
use crate::settings::{SettingSpec, Settings};
use crate::types::ValueType;
use crate::value::Value;

/// An input port a kind declares.
#[derive(Clone, Debug)]
pub struct InputSpec {
    /// The port's name.
    pub name: PortName,
    /// The type it takes.
    pub ty: ValueType,
    /// Other types it takes as well (a model's data port may take a graph).
    pub also: &'static [ValueType],
    /// Whether a pipeline must connect it.
    pub required: bool,
    /// Whether it takes a list of references.
    pub multiple: bool,
    /// One line for `kiln nodes`.
    pub doc: &'static str,
}

impl InputSpec {
    /// A required port taking one value.
    pub fn required(name: &'static str, ty: ValueType, doc: &'static str) -> Self {
        InputSpec {
            name: PortName::new_static(name),
            ty,
            also: &[],
            required: true,
            multiple: false,
            doc,
        }
    }

    /// An optional port taking one value.
    pub fn optional(name: &'static str, ty: ValueType, doc: &'static str) -> Self {
        InputSpec {
            required: false,
            ..InputSpec::required(name, ty, doc)
        }
    }

    /// Lets the port take values of `types` as well.
    pub fn or(mut self, types: &'static [ValueType]) -> Self {
        self.also = types;
        self
    }

    /// Whether the port takes a value of type `given`.
    pub fn takes(&self, given: ValueType) -> bool {
        self.ty.accepts(given) || self.also.iter().any(|t| t.accepts(given))
    }

    /// The types it takes, as users read them: `dataset or graph`.
    pub fn types_shown(&self) -> String {
        std::iter::once(self.ty)
            .chain(self.also.iter().copied())
            .map(ValueType::name)
            .collect::<Vec<_>>()
            .join(" or ")
    }

    /// Lets the port take a list of references as well as one.
    pub fn many(mut self) -> Self {
        self.multiple = true;
        self
    }
}

/// An output port a kind declares. The first is the node's default output.
#[derive(Clone, Debug)]
pub struct OutputSpec {
    /// The port's name.
    pub name: PortName,
    /// The type it gives.
    pub ty: ValueType,
    /// One line for `kiln nodes`.
    pub doc: &'static str,
}

impl OutputSpec {
    /// Declares an output port.
    pub fn new(name: &'static str, ty: ValueType, doc: &'static str) -> Self {
        OutputSpec {
            name: PortName::new_static(name),
            ty,
            doc,
        }
    }
}

/// Everything a kind declares about itself.
#[derive(Clone, Debug)]
pub struct KindSpec {
    /// `category.name`, e.g. `preprocess.split`.
    pub name: &'static str,
    /// Bumped when the kind's results change for the same inputs; part of every fingerprint.
    pub version: u32,
    /// What the kind does, first line a summary.
    pub doc: &'static str,
    /// Input ports.
    pub inputs: Vec<InputSpec>,
    /// Output ports (the first is the default output).
    pub outputs: Vec<OutputSpec>,
    /// Settings, in the order `kiln nodes` shows them.
    pub settings: Vec<SettingSpec>,
    /// Whether the kind has effects the engine can't see, so it must run on
    /// every run. Files named by `OutputPath` settings don't count: the cache
    /// records them and re-runs the node when they change or disappear.
    pub side_effects: bool,
}

impl KindSpec {
    /// The category: the part of the name before the dot.
    pub fn category(&self) -> &'static str {
        self.name.split('.').next().unwrap_or(self.name)
    }

    /// The first line of the doc.
    pub fn summary(&self) -> &'static str {
        self.doc.lines().next().unwrap_or("")
    }

    /// The declared input port of that name.
    pub fn input(&self, name: &str) -> Option<&InputSpec> {
        self.inputs.iter().find(|p| p.name.as_str() == name)
    }

    /// The declared setting of that name.
    pub fn setting(&self, name: &str) -> Option<&SettingSpec> {
        self.settings.iter().find(|s| s.name == name)
    }
}

/// The types of the values connected to each input port, as validation knows them.
pub type InputTypes = BTreeMap<PortName, Vec<ValueType>>;

/// The types connected to `port`, in order (empty when it is not connected).
pub fn types_at<'a>(inputs: &'a InputTypes, port: &str) -> &'a [ValueType] {
    inputs
        .iter()
        .find(|(p, _)| p.as_str() == port)
        .map_or(&[], |(_, types)| types.as_slice())
}

/// The output ports a node will have, with their types.
pub type OutputTypes = Vec<(PortName, ValueType)>;

/// What a node produced: a value per output port.
pub type Outputs = Vec<(PortName, Value)>;

/// A node kind: the one trait a new kind implements.
pub trait NodeKind: Send + Sync {
    /// Ports, settings and docs.
    fn spec(&self) -> KindSpec;

    /// The output ports and their types for these input types and settings.
    /// The default is the declared outputs; kinds whose outputs follow their
    /// inputs (a split of a table gives tables) override it. Called during
    /// validation: it must not read files or allocate tensors.
    fn output_types(
        &self,
        spec: &KindSpec,
        inputs: &InputTypes,
        settings: &Settings,
    ) -> Result<OutputTypes, String> {
        let _ = (inputs, settings);
        Ok(spec
            .outputs
            .iter()
            .map(|o| (o.name.clone(), o.ty))
            .collect())
    }

    /// Checks settings against each other (one setting's range is checked by
    /// its spec already). Returns `(setting, problem)` pairs. No I/O.
    fn check(&self, settings: &Settings) -> Vec<(String, String)> {
        let _ = settings;
        Vec::new()
    }

    /// Does the work.
    fn run(&self, ctx: &RunContext<'_>) -> Result<Outputs, crate::NodeError>;

    /// Whether the node computes with tensors on its device (`device:`): a
    /// model trained, run or scored there. The other kinds read, describe,
    /// reshape or write data on the CPU whatever `device:` says: the plan
    /// places them on the CPU, so `run.json` says `cpu`, their fingerprint
    /// (their cached result) is the same for every device, and an exported
    /// workflow asks no GPU for them.
    fn computes_on_device(&self) -> bool {
        false
    }

    /// Whether the node's value comes from outside when the pipeline is
    /// served: `serve.input` must name a node of such a kind (SPEC §7).
    fn takes_requests(&self) -> bool {
        false
    }

    /// Prepares, before the first request, what serving this node needs
    /// from the inputs that stay the same between requests (`fixed`, by
    /// port: a trained model, a fitted transform), such as a network built
    /// and its weights decoded on `device`. A service calls it when it
    /// starts and before a hot swap, so no request pays for it.
    fn prepare(
        &self,
        fixed: &[(PortName, Vec<Value>)],
        device: &candle_core::Device,
    ) -> Result<(), crate::NodeError> {
        let _ = (fixed, device);
        Ok(())
    }

    /// Whether the node has a value only when serving (a request source with
    /// no example rows): `kiln run` reports it and its descendants as
    /// serve-only instead of running them.
    fn serve_only(&self, settings: &Settings) -> bool {
        let _ = settings;
        false
    }

    /// The node's outputs for one request: `rows` is the JSON the client sent
    /// for this node. Only called on kinds that take requests; every problem
    /// with the client's input is a [`RequestError`] naming the field.
    fn request(
        &self,
        settings: &Settings,
        rows: &serde_json::Value,
    ) -> Result<Outputs, RequestError> {
        let _ = (settings, rows);
        Err(RequestError::new("", "this node does not take requests"))
    }

    /// How many numbers a request's row holds when this kind also reads
    /// rows as plain numbers ([`NodeKind::request_numbers`]); a server then
    /// reads a body whose rows are all lists of that many numbers without
    /// building JSON values for them.
    fn number_rows(&self, settings: &Settings) -> Option<usize> {
        let _ = settings;
        None
    }

    /// [`NodeKind::request`] for rows of plain numbers, called only with at
    /// least one row of the width [`NodeKind::number_rows`] gave: the
    /// outputs are what `request` gives for the same rows as JSON lists.
    fn request_numbers(
        &self,
        settings: &Settings,
        rows: NumberRows,
    ) -> Result<Outputs, RequestError> {
        let _ = (settings, rows);
        Err(RequestError::new(
            "",
            "this node does not read rows as plain numbers",
        ))
    }
}

/// A request's rows, every one a list of `width` numbers, in one buffer:
/// read from a body as numbers (a 32-image request parses in 0.2 ms so,
/// 1.0 ms as JSON values).
#[derive(Clone, Debug, PartialEq)]
pub struct NumberRows {
    /// Numbers per row (at least one).
    pub width: usize,
    /// The rows one after another.
    pub values: Vec<f32>,
}

impl NumberRows {
    /// How many rows there are.
    pub fn len(&self) -> usize {
        self.values.len() / self.width.max(1)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The rows as JSON lists (for a batch that mixes them with rows of
    /// other forms).
    pub fn to_json(&self) -> Vec<serde_json::Value> {
        self.values
            .chunks(self.width.max(1))
            .map(|row| {
                serde_json::Value::from(row.iter().map(|&v| f64::from(v)).collect::<Vec<_>>())
            })
            .collect()
    }
}

/// A shared handle to a kind.
pub type KindRef = Arc<dyn NodeKind>;
