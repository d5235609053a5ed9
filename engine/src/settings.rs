//! Typed settings: what a kind declares (`SettingSpec`), how a `with:` value
//! is checked against it, and the checked values a node reads at run time.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde_json::{json, Value as Json};

/// The type of a setting.
#[derive(Clone, Debug, PartialEq)]
pub enum SettingType {
    /// `true` or `false`.
    Bool,
    /// A whole number within `[min, max]`.
    Int {
        /// Smallest allowed value.
        min: Option<i64>,
        /// Largest allowed value.
        max: Option<i64>,
    },
    /// A number within the bounds.
    Float {
        /// Lower bound and whether it is excluded.
        min: Option<(f64, bool)>,
        /// Upper bound and whether it is excluded.
        max: Option<(f64, bool)>,
    },
    /// Free text.
    Str,
    /// One of a fixed set of words.
    Choice(&'static [&'static str]),
    /// A file or folder the node reads, relative to the pipeline file. Its
    /// content is part of the node's fingerprint and `kiln watch` watches it.
    InputPath,
    /// A file the node writes, relative to the run's output folder.
    OutputPath,
    /// A list of values of one type.
    List(Box<SettingType>),
    /// Any of several types (`string or int`).
    OneOf(Vec<SettingType>),
    /// A mapping whose keys the kind checks itself (layer specs and the like).
    Object,
    /// A mapping from names the user chooses to values of one type.
    Map(Box<SettingType>),
    /// Any value; the kind checks it itself (rows of mixed numbers and text).
    Any,
}

impl SettingType {
    /// A whole number with no bounds.
    pub fn int() -> Self {
        SettingType::Int {
            min: None,
            max: None,
        }
    }

    /// A whole number at least `min`.
    pub fn int_min(min: i64) -> Self {
        SettingType::Int {
            min: Some(min),
            max: None,
        }
    }

    /// A number strictly between `lo` and `hi`.
    pub fn float_open(lo: f64, hi: f64) -> Self {
        SettingType::Float {
            min: Some((lo, true)),
            max: Some((hi, true)),
        }
    }

    /// Any number.
    pub fn float() -> Self {
        SettingType::Float {
            min: None,
            max: None,
        }
    }

    /// A list of this type.
    pub fn list(of: SettingType) -> Self {
        SettingType::List(Box::new(of))
    }

    /// This type with an inclusive lower bound (of each item, for a list).
    pub fn at_least(self, bound: f64) -> Self {
        self.bounded(Some((bound, false)), None)
    }

    /// This type with an inclusive upper bound (of each item, for a list).
    pub fn at_most(self, bound: f64) -> Self {
        self.bounded(None, Some((bound, false)))
    }

    /// This type with an exclusive lower bound (of each item, for a list).
    pub fn above(self, bound: f64) -> Self {
        self.bounded(Some((bound, true)), None)
    }

    /// This type with an exclusive upper bound (of each item, for a list).
    pub fn below(self, bound: f64) -> Self {
        self.bounded(None, Some((bound, true)))
    }

    fn bounded(self, lo: Option<(f64, bool)>, hi: Option<(f64, bool)>) -> Self {
        // Integer bounds are inclusive: an exclusive one moves by one.
        let int_lo = |(b, open): (f64, bool)| {
            if open {
                b.floor() as i64 + 1
            } else {
                b.ceil() as i64
            }
        };
        let int_hi = |(b, open): (f64, bool)| {
            if open {
                b.ceil() as i64 - 1
            } else {
                b.floor() as i64
            }
        };
        match self {
            SettingType::Int { min, max } => SettingType::Int {
                min: lo.map(int_lo).or(min),
                max: hi.map(int_hi).or(max),
            },
            SettingType::Float { min, max } => SettingType::Float {
                min: lo.or(min),
                max: hi.or(max),
            },
            SettingType::List(of) => SettingType::List(Box::new(of.bounded(lo, hi))),
            SettingType::OneOf(types) => {
                SettingType::OneOf(types.into_iter().map(|t| t.bounded(lo, hi)).collect())
            }
            other => other,
        }
    }

    /// Checks a value; `Err` says what is wrong in a sentence fragment.
    pub fn check(&self, value: &Json) -> Result<(), String> {
        match (self, value) {
            (SettingType::Bool, Json::Bool(_)) => Ok(()),
            (SettingType::Int { min, max }, Json::Number(n)) if n.is_i64() || n.is_u64() => {
                let v = n.as_i64().unwrap_or(i64::MAX);
                match (min, max) {
                    (Some(lo), _) if v < *lo => Err(format!("{v} is out of range: {}", self)),
                    (_, Some(hi)) if v > *hi => Err(format!("{v} is out of range: {}", self)),
                    _ => Ok(()),
                }
            }
            (SettingType::Float { min, max }, Json::Number(n)) => {
                let v = n.as_f64().unwrap_or(f64::NAN);
                let below = min.is_some_and(|(lo, open)| if open { v <= lo } else { v < lo });
                let above = max.is_some_and(|(hi, open)| if open { v >= hi } else { v > hi });
                if below || above || !v.is_finite() {
                    Err(format!("{v} is out of range: {}", self))
                } else {
                    Ok(())
                }
            }
            (
                SettingType::Str | SettingType::InputPath | SettingType::OutputPath,
                Json::String(s),
            ) => {
                if s.is_empty() && *self != SettingType::Str {
                    Err("a path must not be empty".into())
                } else {
                    Ok(())
                }
            }
            (SettingType::Choice(options), Json::String(s)) => {
                if options.contains(&s.as_str()) {
                    Ok(())
                } else {
                    let hint = crate::ids::did_you_mean(s, options.iter().copied())
                        .map(|m| format!(" (did you mean `{m}`?)"))
                        .unwrap_or_default();
                    Err(format!("`{s}` is not {self}{hint}"))
                }
            }
            (SettingType::List(of), Json::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    of.check(item).map_err(|e| format!("item {i}: {e}"))?;
                }
                Ok(())
            }
            (SettingType::Object, Json::Object(_)) => Ok(()),
            (SettingType::Map(of), Json::Object(entries)) => {
                for (key, item) in entries {
                    of.check(item).map_err(|e| format!("`{key}`: {e}"))?;
                }
                Ok(())
            }
            (SettingType::Any, _) => Ok(()),
            (SettingType::OneOf(types), v) => {
                if types.iter().any(|t| t.check(v).is_ok()) {
                    Ok(())
                } else {
                    Err(format!("expected {self}, found {}", describe(v)))
                }
            }
            (t, v) => Err(format!("expected {t}, found {}", describe(v))),
        }
    }

    /// A JSON Schema fragment for editors.
    pub fn json_schema(&self) -> Json {
        match self {
            SettingType::Bool => json!({"type": "boolean"}),
            SettingType::Int { min, max } => {
                let mut s = json!({"type": "integer"});
                if let Some(lo) = min {
                    s["minimum"] = json!(lo);
                }
                if let Some(hi) = max {
                    s["maximum"] = json!(hi);
                }
                s
            }
            SettingType::Float { min, max } => {
                let mut s = json!({"type": "number"});
                if let Some((lo, open)) = min {
                    s[if *open { "exclusiveMinimum" } else { "minimum" }] = json!(lo);
                }
                if let Some((hi, open)) = max {
                    s[if *open { "exclusiveMaximum" } else { "maximum" }] = json!(hi);
                }
                s
            }
            SettingType::Str | SettingType::InputPath | SettingType::OutputPath => {
                json!({"type": "string"})
            }
            SettingType::Choice(options) => json!({"type": "string", "enum": options}),
            SettingType::List(of) => json!({"type": "array", "items": of.json_schema()}),
            SettingType::OneOf(types) => {
                json!({"anyOf": types.iter().map(SettingType::json_schema).collect::<Vec<_>>()})
            }
            SettingType::Object => json!({"type": "object"}),
            SettingType::Map(of) => {
                json!({"type": "object", "additionalProperties": of.json_schema()})
            }
            SettingType::Any => json!({}),
        }
    }
}

fn describe(value: &Json) -> String {
    match value {
        Json::Null => "nothing".into(),
        Json::Bool(b) => format!("`{b}`"),
        Json::Number(n) => format!("`{n}`"),
        Json::String(s) => format!("the string `{s}`"),
        Json::Array(_) => "a list".into(),
        Json::Object(_) => "a mapping".into(),
    }
}

fn bound(b: f64) -> String {
    if b.fract() == 0.0 && b.abs() < 1e15 {
        format!("{b:.0}")
    } else {
        b.to_string()
    }
}

impl fmt::Display for SettingType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SettingType::Bool => f.write_str("a boolean"),
            SettingType::Int {
                min: None,
                max: None,
            } => f.write_str("an integer"),
            SettingType::Int {
                min: Some(lo),
                max: None,
            } => write!(f, "an integer ≥ {lo}"),
            SettingType::Int {
                min: None,
                max: Some(hi),
            } => write!(f, "an integer ≤ {hi}"),
            SettingType::Int {
                min: Some(lo),
                max: Some(hi),
            } => {
                write!(f, "an integer in {lo}..={hi}")
            }
            SettingType::Float {
                min: None,
                max: None,
            } => f.write_str("a number"),
            SettingType::Float { min, max } => {
                f.write_str("a number in ")?;
                match min {
                    Some((lo, open)) => {
                        write!(f, "{}{}", if *open { "(" } else { "[" }, bound(*lo))?
                    }
                    None => f.write_str("(-∞")?,
                }
                match max {
                    Some((hi, open)) => {
                        write!(f, ", {}{}", bound(*hi), if *open { ")" } else { "]" })
                    }
                    None => f.write_str(", ∞)"),
                }
            }
            SettingType::Str => f.write_str("a string"),
            SettingType::InputPath => f.write_str("a path to read"),
            SettingType::OutputPath => f.write_str("a path to write"),
            SettingType::Choice(options) => write!(f, "one of {}", options.join(", ")),
            SettingType::List(of) => write!(f, "a list of ({of})"),
            SettingType::Object => f.write_str("a mapping"),
            SettingType::Map(of) => write!(f, "a mapping to ({of})"),
            SettingType::Any => f.write_str("any value"),
            SettingType::OneOf(types) => {
                let names: Vec<String> = types.iter().map(ToString::to_string).collect();
                f.write_str(&names.join(" or "))
            }
        }
    }
}

/// What happens when a setting is left out.
#[derive(Clone, Debug, PartialEq)]
pub enum SettingDefault {
    /// It must be given.
    Required,
    /// It may be left out; the node then sees no value.
    Optional,
    /// It takes this value.
    Value(Json),
}

/// A setting a kind declares.
#[derive(Clone, Debug)]
pub struct SettingSpec {
    /// Its name in `with:`.
    pub name: &'static str,
    /// Its type.
    pub ty: SettingType,
    /// Its default.
    pub default: SettingDefault,
    /// One line for `kiln nodes`.
    pub doc: &'static str,
}

impl SettingSpec {
    /// A setting that must be given.
    pub fn required(name: &'static str, ty: SettingType, doc: &'static str) -> Self {
        SettingSpec {
            name,
            ty,
            default: SettingDefault::Required,
            doc,
        }
    }

    /// A setting that may be left out.
    pub fn optional(name: &'static str, ty: SettingType, doc: &'static str) -> Self {
        SettingSpec {
            default: SettingDefault::Optional,
            ..SettingSpec::required(name, ty, doc)
        }
    }

    /// A setting with a default value.
    pub fn with_default(
        name: &'static str,
        ty: SettingType,
        default: Json,
        doc: &'static str,
    ) -> Self {
        SettingSpec {
            default: SettingDefault::Value(default),
            ..SettingSpec::required(name, ty, doc)
        }
    }
}

/// A node's settings after substitution, checking and defaults. A kind
/// reads them as its own struct ([`Settings::read`]); paths to read are
/// already resolved against the pipeline's folder.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Settings {
    values: BTreeMap<String, Json>,
}

impl Settings {
    /// Settings from checked values (the engine builds these; tests may too).
    pub fn from_map(values: BTreeMap<String, Json>) -> Self {
        Settings { values }
    }

    /// All values, sorted by name (this order feeds the fingerprint).
    pub fn values(&self) -> &BTreeMap<String, Json> {
        &self.values
    }

    /// The raw value of a setting, if set.
    pub fn get(&self, name: &str) -> Option<&Json> {
        self.values.get(name).filter(|v| !v.is_null())
    }

    /// Resolves every `InputPath` setting against `base`, in place.
    pub(crate) fn resolve_paths(&mut self, specs: &[SettingSpec], base: &Path) {
        for spec in specs.iter().filter(|s| s.ty == SettingType::InputPath) {
            if let Some(Json::String(p)) = self.values.get_mut(spec.name) {
                *p = crate::data::resolve(base, p).to_string_lossy().into_owned();
            }
        }
    }
}
