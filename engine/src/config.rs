//! Typed settings, declared once: a kind's settings are one struct deriving
//! [`Config`] (and serde's `Deserialize`). Its fields give the declared
//! [`SettingSpec`]s, from which validation, `kiln nodes` and the JSON Schema
//! come, and [`Settings::read`] gives the kind the same struct at run time.
//!
//! ```
//! use kiln_engine::{Config, InputPath};
//!
//! #[derive(Config, serde::Deserialize)]
//! struct ReadSettings {
//!     /// the file to read
//!     path: InputPath,
//!     /// read only the first N rows
//!     #[setting(min = 1)]
//!     limit: Option<usize>,
//!     /// whether the first row holds column names
//!     #[setting(default = true)]
//!     header: bool,
//! }
//!
//! let specs = ReadSettings::specs();
//! assert_eq!(specs[1].ty.to_string(), "an integer ≥ 1");
//! ```

use std::collections::BTreeMap;
use std::ops::Deref;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value as Json;

use crate::error::NodeError;
use crate::settings::{SettingDefault, SettingSpec, SettingType, Settings};

pub use kiln_derive::Config;

/// A kind's settings as one struct: derive it (`#[derive(Config, Deserialize)]`).
pub trait Config: serde::de::DeserializeOwned {
    /// The settings its fields declare, in field order.
    fn specs() -> Vec<SettingSpec>;
}

/// A Rust type a setting may have, and the [`SettingType`] it declares.
pub trait Setting {
    /// The setting type of a field of this type (before any bounds).
    fn setting_type() -> SettingType;
}

impl Setting for bool {
    fn setting_type() -> SettingType {
        SettingType::Bool
    }
}

impl Setting for usize {
    fn setting_type() -> SettingType {
        SettingType::int_min(0)
    }
}

impl Setting for i64 {
    fn setting_type() -> SettingType {
        SettingType::int()
    }
}

impl Setting for f64 {
    fn setting_type() -> SettingType {
        SettingType::float()
    }
}

impl Setting for String {
    fn setting_type() -> SettingType {
        SettingType::Str
    }
}

impl Setting for Json {
    fn setting_type() -> SettingType {
        SettingType::Any
    }
}

impl<T: Setting> Setting for Vec<T> {
    fn setting_type() -> SettingType {
        SettingType::list(T::setting_type())
    }
}

impl<T: Setting> Setting for BTreeMap<String, T> {
    fn setting_type() -> SettingType {
        SettingType::Map(Box::new(T::setting_type()))
    }
}

impl<T: Setting> Setting for Option<T> {
    fn setting_type() -> SettingType {
        T::setting_type()
    }
}

/// A file or folder a node reads: resolved against the pipeline's folder
/// (or the kiln data folder) before the kind sees it; its content enters
/// the node's fingerprint and `kiln watch` watches it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct InputPath(PathBuf);

/// A file a node writes, relative to the run's output folder.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct OutputPath(PathBuf);

macro_rules! path_setting {
    ($name:ident, $ty:expr) => {
        impl Setting for $name {
            fn setting_type() -> SettingType {
                $ty
            }
        }

        impl Deref for $name {
            type Target = Path;
            fn deref(&self) -> &Path {
                &self.0
            }
        }

        impl AsRef<Path> for $name {
            fn as_ref(&self) -> &Path {
                &self.0
            }
        }
    };
}

path_setting!(InputPath, SettingType::InputPath);
path_setting!(OutputPath, SettingType::OutputPath);

impl Settings {
    /// The settings as the kind's struct. Validation has checked every value
    /// against the struct's own specs, so this fails only on a kind's bug.
    pub fn read<T: Config>(&self) -> Result<T, NodeError> {
        self.decode()
            .map_err(|(setting, problem)| NodeError::new(format!("setting `{setting}`: {problem}")))
    }

    /// [`read`](Self::read) for [`NodeKind::check`](crate::NodeKind::check),
    /// whose `Err` is the problems to return: none when a setting is absent
    /// because it failed its own check (validation has reported that), else
    /// the setting that doesn't read as the kind's struct and why (a CNN
    /// layer that isn't one, say).
    pub fn read_checked<T: Config>(&self) -> Result<T, Vec<(String, String)>> {
        // A setting that failed its own check is absent: its default (valid
        // by construction) stands in, so the others are still checked
        // against each other; without one there is nothing to check.
        let mut values = self.values().clone();
        for spec in T::specs() {
            if values.contains_key(spec.name) {
                continue;
            }
            match spec.default {
                SettingDefault::Value(v) => values.insert(spec.name.to_string(), v),
                SettingDefault::Optional => values.insert(spec.name.to_string(), Json::Null),
                SettingDefault::Required => return Err(Vec::new()),
            };
        }
        Settings::from_map(values)
            .decode()
            .map_err(|problem| vec![problem])
    }

    /// Deserializes the settings; `Err` names the setting and the problem.
    fn decode<T: Config>(&self) -> Result<T, (String, String)> {
        // Straight from the values (kinds on a served path read their
        // settings on every batch); only a failure pays for finding where.
        let borrowed = serde::de::value::MapDeserializer::<_, serde_json::Error>::new(
            self.values().iter().map(|(k, v)| (k.as_str(), v)),
        );
        if let Ok(read) = T::deserialize(borrowed) {
            return Ok(read);
        }
        let object = Json::Object(
            self.values()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        );
        serde_path_to_error::deserialize(&object).map_err(|e| {
            let setting = match e.path().iter().next() {
                Some(serde_path_to_error::Segment::Map { key }) => key.clone(),
                _ => String::new(),
            };
            let mut at = e.path().to_string();
            at = at.strip_prefix(&setting).unwrap_or(&at).to_string();
            let problem = e.into_inner().to_string();
            let problem = if at.is_empty() {
                problem
            } else {
                format!("{at}: {problem}")
            };
            (setting, problem)
        })
    }
}

/// Declares a choice-valued setting's type once: the enum a kind reads
/// (`settings.parse::<T>(name)`), its names as written in a pipeline file
/// (`T::NAMES`, for [`SettingType::Choice`], so `kiln nodes`, the schema
/// and validation list exactly the variants) and serde's reading of them.
///
/// ```
/// kiln_engine::choices! {
///     /// How a column's fill value is chosen.
///     pub enum Strategy { Mean = "mean", Median = "median" }
/// }
/// assert_eq!(Strategy::NAMES, ["mean", "median"]);
/// assert_eq!(Strategy::Median.name(), "median");
/// ```
#[macro_export]
macro_rules! choices {
    ($(#[$meta:meta])* $vis:vis enum $name:ident {
        $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)?
    }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        $vis enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every choice, as written in a pipeline file.
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            /// This choice as written in a pipeline file.
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl $crate::Setting for $name {
            fn setting_type() -> $crate::SettingType {
                $crate::SettingType::Choice($name::NAMES)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    crate::choices! {
        /// A choice.
        enum Colour { Red = "red", Green = "green" }
    }

    #[derive(Config, Deserialize, Debug, PartialEq)]
    struct Example {
        /// units of each layer
        #[setting(default = [64], min = 1, max = 4096)]
        hidden: Vec<usize>,
        /// a share
        #[setting(default = 0.5, min = 0.0, lt = 1.0)]
        share: f64,
        /// the colour
        #[setting(default = "red")]
        colour: Colour,
        /// a file
        path: InputPath,
        /// when set
        #[serde(rename = "type")]
        kind: Option<String>,
    }

    #[test]
    fn fields_declare_their_settings() {
        let specs = Example::specs();
        let names: Vec<_> = specs.iter().map(|s| s.name).collect();
        assert_eq!(names, ["hidden", "share", "colour", "path", "type"]);
        assert_eq!(
            specs[0].ty.to_string(),
            "a list of (an integer in 1..=4096)"
        );
        assert_eq!(specs[0].default, SettingDefault::Value(json!([64])));
        assert_eq!(specs[1].ty.to_string(), "a number in [0, 1)");
        assert_eq!(specs[2].ty, SettingType::Choice(&["red", "green"]));
        assert_eq!(Colour::Green.name(), "green");
        assert_eq!(specs[3].ty, SettingType::InputPath);
        assert_eq!(specs[3].default, SettingDefault::Required);
        assert_eq!(specs[4].default, SettingDefault::Optional);
        assert_eq!(specs[4].doc, "when set");
    }

    #[test]
    fn settings_read_into_the_struct() {
        let values: BTreeMap<String, Json> = [
            ("hidden", json!([3, 4])),
            ("share", json!(0.25)),
            ("colour", json!("green")),
            ("path", json!("/data/x.csv")),
            ("type", Json::Null),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let read: Example = Settings::from_map(values).read().unwrap();
        assert_eq!(read.hidden, [3, 4]);
        assert_eq!(read.colour, Colour::Green);
        assert_eq!(&*read.path, Path::new("/data/x.csv"));
        assert_eq!(read.kind, None);
    }

    fn settings(pairs: &[(&str, Json)]) -> Settings {
        Settings::from_map(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    }

    #[test]
    fn a_setting_that_failed_its_check_leaves_the_others_checkable() {
        // `colour` failed its own check, so validation left it out: its
        // default stands in and the rest still read.
        let s = settings(&[
            ("hidden", json!([])),
            ("share", json!(0.25)),
            ("path", json!("/x")),
        ]);
        let read: Example = s.read_checked().unwrap();
        assert_eq!((read.colour, read.hidden.len()), (Colour::Red, 0));
        // A required one has no stand-in: nothing more to report.
        let s = settings(&[("hidden", json!([])), ("share", json!(0.25))]);
        assert!(s.read_checked::<Example>().unwrap_err().is_empty());
        // Values that pass their types but not the struct name the setting.
        let s = settings(&[("hidden", json!([1])), ("path", json!(3))]);
        let problems = s.read_checked::<Example>().unwrap_err();
        assert_eq!(problems[0].0, "path", "{problems:?}");
    }
}
