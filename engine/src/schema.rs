//! The JSON Schema of the pipeline format, for editor completion.
//!
//! The top level comes from the typed descriptors in [`crate::format`]
//! (schemars); each node kind adds a branch whose `with:` and `inputs:` are
//! generated from its spec, so neither can drift from what validation accepts.

use serde_json::{json, Map, Value as Json};

use crate::registry::Registry;
use crate::settings::SettingDefault;

/// The schema for pipelines using the kinds in `registry`.
pub fn pipeline_schema(registry: &Registry) -> Json {
    let mut schema = serde_json::to_value(schemars::schema_for!(crate::format::PipelineFile))
        .unwrap_or_else(|_| json!({}));
    let branches: Vec<Json> = registry
        .iter()
        .map(|r| {
            let spec = &r.spec;
            let mut settings = Map::new();
            let mut required = Vec::new();
            for s in &spec.settings {
                let mut prop = s.ty.json_schema();
                prop["description"] = json!(s.doc);
                match &s.default {
                    SettingDefault::Required => required.push(json!(s.name)),
                    SettingDefault::Value(v) => prop["default"] = v.clone(),
                    SettingDefault::Optional => {}
                }
                settings.insert(s.name.to_string(), prop);
            }
            let reference = json!({"type": "string", "pattern": "^[a-z0-9_]+(\\.[a-z0-9_]+)?$"});
            let inputs: Map<String, Json> = spec
                .inputs
                .iter()
                .map(|p| {
                    let mut prop = if p.multiple {
                        json!({"anyOf": [reference, {"type": "array", "items": reference}]})
                    } else {
                        reference.clone()
                    };
                    prop["description"] = json!(format!("{} ({})", p.doc, p.types_shown()));
                    (p.name.to_string(), prop)
                })
                .collect();
            let required_inputs: Vec<Json> = spec
                .inputs
                .iter()
                .filter(|p| p.required)
                .map(|p| json!(p.name.as_str()))
                .collect();
            let mut branch = json!({
                "if": {"properties": {"kind": {"const": spec.name}}, "required": ["kind"]},
                "then": {
                    "description": spec.summary(),
                    "properties": {
                        "with": {"type": "object", "properties": settings, "additionalProperties": false, "required": required},
                        "inputs": {"type": "object", "properties": inputs, "additionalProperties": false},
                    },
                },
            });
            if !required_inputs.is_empty() {
                branch["then"]["required"] = json!(["inputs"]);
                branch["then"]["properties"]["inputs"]["required"] = Json::Array(required_inputs);
            }
            branch
        })
        .collect();
    let kinds: Vec<&str> = registry.names().collect();
    if let Some(node) = schema.pointer_mut("/$defs/NodeFile") {
        node["properties"]["kind"]["enum"] = json!(kinds);
        node["allOf"] = Json::Array(branches);
    }
    schema["title"] = json!("kiln pipeline");
    schema
}
