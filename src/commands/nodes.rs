//! `kiln nodes [KIND]`: the node reference, generated from the registry.

use kiln_engine::ids::did_you_mean;
use kiln_engine::{KindSpec, Registry, SettingDefault};

use crate::failure::Failure;

/// Lists kinds, or shows one in full.
pub fn nodes(kind: Option<&str>, registry: &Registry) -> Result<(), Failure> {
    match kind {
        None => {
            let width = registry.names().map(str::len).max().unwrap_or(0);
            let mut category = "";
            for r in registry.iter() {
                if r.spec.category() != category {
                    category = r.spec.category();
                    println!("{category}");
                }
                let runs_on = if r.kind.computes_on_device() {
                    "gpu"
                } else {
                    ""
                };
                println!(
                    "  {:width$}  {runs_on:3}  {}",
                    r.spec.name,
                    r.spec.summary()
                );
            }
            println!("\n`gpu`: the kind computes on its node's `device:` (cuda when built with the `cuda` feature); the others run on the CPU whatever `device:` says.");
            println!("`kiln nodes KIND` shows a kind's ports and settings.");
            Ok(())
        }
        Some(name) => match registry.get(name) {
            Some(r) => {
                print!("{}", describe(&r.spec, r.kind.computes_on_device()));
                Ok(())
            }
            None => {
                let hint = did_you_mean(name, registry.names())
                    .map(|m| format!(" (did you mean `{m}`?)"))
                    .unwrap_or_else(|| " (run `kiln nodes` for the list)".into());
                Err(Failure::Invalid(format!(
                    "error: unknown kind `{name}`{hint}"
                )))
            }
        },
    }
}

/// A kind's full description: doc, where it computes, inputs, outputs,
/// settings with defaults.
pub fn describe(spec: &KindSpec, on_device: bool) -> String {
    let mut out = format!("{} (version {})\n\n", spec.name, spec.version);
    for line in spec.doc.lines() {
        out.push_str(&format!("  {line}\n"));
    }
    out.push_str(match on_device {
        true => "\ndevice: computes on the node's `device:` (cpu, cuda, cuda:N or auto).\n",
        false => "\ndevice: runs on the CPU whatever `device:` says (the result is the same on every device).\n",
    });
    out.push_str("\ninputs:\n");
    if spec.inputs.is_empty() {
        out.push_str("  (none)\n");
    }
    for p in &spec.inputs {
        let need = if p.required { "required" } else { "optional" };
        let many = if p.multiple { ", one or a list" } else { "" };
        out.push_str(&format!(
            "  {:<12} {:<10} {need}{many}. {}\n",
            p.name,
            p.types_shown(),
            p.doc
        ));
    }
    out.push_str("\noutputs:\n");
    if spec.outputs.is_empty() {
        out.push_str("  (none: writes files)\n");
    }
    for (i, p) in spec.outputs.iter().enumerate() {
        let default = if i == 0 { " (default)" } else { "" };
        out.push_str(&format!(
            "  {:<12} {:<10} {}{default}\n",
            p.name, p.ty, p.doc
        ));
    }
    out.push_str("\nsettings:\n");
    if spec.settings.is_empty() {
        out.push_str("  (none)\n");
    }
    for s in &spec.settings {
        let default = match &s.default {
            SettingDefault::Required => "required".to_string(),
            SettingDefault::Optional => "optional".to_string(),
            SettingDefault::Value(v) => format!("default {}", kiln_engine::yaml::show(v)),
        };
        out.push_str(&format!(
            "  {:<12} {}; {default}. {}\n",
            s.name, s.ty, s.doc
        ));
    }
    out
}
