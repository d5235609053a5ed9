//! One node on its own: its kind, its settings (types, ranges, defaults,
//! `${params.X}`), and the files it reads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::Value as Json;

use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::ids::did_you_mean;
use crate::kind::{KindRef, KindSpec};
use crate::load::NodeDecl;
use crate::params::substitute;
use crate::registry::Registry;
use crate::settings::{SettingDefault, SettingType, Settings};

pub(super) type CheckedNode = (KindRef, Arc<KindSpec>, Settings, Json, Vec<PathBuf>);

pub(super) fn check_node(
    n: &NodeDecl,
    registry: &Registry,
    params: &IndexMap<String, Json>,
    base_dir: &Path,
    diags: &mut Diagnostics,
) -> Option<CheckedNode> {
    let node = n.id.as_str();
    let kind_name = n.kind.as_ref()?;
    let Some(reg) = registry.get(&kind_name.value) else {
        let hint = did_you_mean(&kind_name.value, registry.names())
            .map(|m| format!(" (did you mean `{m}`?)"))
            .unwrap_or_else(|| " (run `kiln nodes` for the list)".to_string());
        diags.push(
            Diagnostic::at(
                kind_name.pos,
                format!("unknown kind `{}`{hint}", kind_name.value),
            )
            .in_node(node),
        );
        return None;
    };
    let spec = &reg.spec;
    let mut values: BTreeMap<String, Json> = BTreeMap::new();
    let mut ok = true;
    for (key, doc) in &n.settings {
        let Some(setting) = spec.setting(&key.value) else {
            let hint = did_you_mean(&key.value, spec.settings.iter().map(|s| s.name))
                .map(|m| format!(" (did you mean `{m}`?)"))
                .unwrap_or_else(|| {
                    if spec.settings.is_empty() {
                        format!(" (`{}` has no settings)", spec.name)
                    } else {
                        format!(
                            " (`{}` takes: {})",
                            spec.name,
                            spec.settings
                                .iter()
                                .map(|s| s.name)
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    }
                });
            diags.push(
                Diagnostic::at(key.pos, format!("unknown setting `{}`{hint}", key.value))
                    .in_node(node),
            );
            ok = false;
            continue;
        };
        let mut problems = Vec::new();
        let value = substitute(doc, params, &mut problems);
        if !problems.is_empty() {
            for p in problems {
                diags.push(
                    Diagnostic::at(p.pos, format!("setting `{}`: {}", key.value, p.message))
                        .in_node(node),
                );
            }
            ok = false;
            continue;
        }
        if let Err(e) = setting.ty.check(&value) {
            diags.push(
                Diagnostic::at(doc.pos, format!("setting `{}`: {e}", key.value)).in_node(node),
            );
            ok = false;
            continue;
        }
        values.insert(key.value.clone(), value);
    }
    for setting in &spec.settings {
        if values.contains_key(setting.name)
            || n.settings.iter().any(|(k, _)| k.value == setting.name)
        {
            continue;
        }
        match &setting.default {
            SettingDefault::Required => {
                diags.push(
                    Diagnostic::at(
                        n.pos,
                        format!(
                            "the required setting `{}` is missing ({}: {})",
                            setting.name, setting.ty, setting.doc
                        ),
                    )
                    .in_node(node),
                );
                ok = false;
            }
            SettingDefault::Optional => {
                values.insert(setting.name.to_string(), Json::Null);
            }
            SettingDefault::Value(v) => {
                values.insert(setting.name.to_string(), v.clone());
            }
        }
    }
    // Settings that passed are checked against each other even when others
    // failed, so every problem shows at once.
    let written = Json::Object(values.clone().into_iter().collect());
    let mut settings = Settings::from_map(values);
    let mut files = Vec::new();
    for setting in spec
        .settings
        .iter()
        .filter(|s| s.ty == SettingType::InputPath)
    {
        let Some(Json::String(p)) = settings.get(setting.name) else {
            continue;
        };
        let path = crate::data::resolve(base_dir, p);
        if !path.exists() && !crate::fingerprint::is_vouched(&path) {
            let pos = n
                .settings
                .iter()
                .find(|(k, _)| k.value == setting.name)
                .map_or(n.pos, |(_, d)| d.pos);
            let hint = if crate::data::in_folder(p).is_some() {
                format!(
                    "it is in the kiln data folder: fetch it with `{}`, or set KILN_DATA to a folder that has it",
                    crate::data::FETCH_COMMAND
                )
            } else {
                "paths are relative to the pipeline file".to_string()
            };
            diags.push(
                Diagnostic::at(
                    pos,
                    format!(
                        "setting `{}`: `{p}` does not exist (looked for `{}`; {hint})",
                        setting.name,
                        path.display()
                    ),
                )
                .in_node(node),
            );
            ok = false;
        }
        files.push(path);
    }
    settings.resolve_paths(&spec.settings, base_dir);
    for (setting, problem) in reg.kind.check(&settings) {
        let pos = n
            .settings
            .iter()
            .find(|(k, _)| k.value == setting)
            .map_or(n.pos, |(_, d)| d.pos);
        diags.push(Diagnostic::at(pos, format!("setting `{setting}`: {problem}")).in_node(node));
        ok = false;
    }
    ok.then(|| (reg.kind.clone(), reg.spec.clone(), settings, written, files))
}
