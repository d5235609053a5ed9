//! JSON values written as YAML (what `kubectl` and `argo submit` are given).

use serde_json::Value as Json;
use yaml_rust2::yaml::Hash;
use yaml_rust2::{Yaml, YamlEmitter};

/// `value` as a YAML document (strings that would read as other types are quoted).
pub fn render(value: &Json) -> String {
    let mut out = String::new();
    let mut emitter = YamlEmitter::new(&mut out);
    // Writing into a String cannot fail.
    let _ = emitter.dump(&to_yaml(value));
    out.push('\n');
    out
}

fn to_yaml(value: &Json) -> Yaml {
    match value {
        Json::Null => Yaml::Null,
        Json::Bool(b) => Yaml::Boolean(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Yaml::Integer(i),
            None => Yaml::Real(n.to_string()),
        },
        Json::String(s) => Yaml::String(s.clone()),
        Json::Array(items) => Yaml::Array(items.iter().map(to_yaml).collect()),
        Json::Object(map) => {
            let mut hash = Hash::new();
            for (k, v) in map {
                hash.insert(Yaml::String(k.clone()), to_yaml(v));
            }
            Yaml::Hash(hash)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_kilns_own_yaml_reader() {
        let value = serde_json::json!({
            "limit": "2", "yes": "true", "n": 3, "x": 0.5, "list": ["a b", "--set", "params.lr=0.1"],
            "empty": {}, "nested": { "k": [{ "a": null }] },
        });
        let text = render(&value);
        let back = kiln_engine::yaml::parse_value(&text).unwrap().to_json();
        assert_eq!(back, value, "{text}");
    }
}
