//! The cluster profile: what pods need that the pipeline does not say
//! (namespace, service account, the store's credentials, where GPU pods may
//! run). A small YAML file given with `--profile`, flags on top; the pipeline
//! stays the same on every cluster.
//!
//! ```yaml
//! namespace: ml
//! serviceAccountName: kiln
//! secret: kiln-store          # envFrom: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...
//! env: { AWS_REGION: eu-west-1 }
//! resources: { requests: { cpu: "2", memory: 4Gi } }
//! gpu:
//!   resource: nvidia.com/gpu
//!   nodeSelector: { nvidia.com/gpu.present: "true" }
//!   tolerations: [{ key: nvidia.com/gpu, operator: Exists, effect: NoSchedule }]
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Value as Json};

/// Cluster settings for exported workflows.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Profile {
    /// The namespace the workflow is created in.
    pub namespace: Option<String>,
    /// The service account pods run as.
    pub service_account_name: Option<String>,
    /// The container's `imagePullPolicy`.
    pub image_pull_policy: Option<String>,
    /// A secret whose keys become the pods' environment (store credentials).
    pub secret: Option<String>,
    /// Plain environment variables for every pod.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Where CPU pods may run.
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Every pod's `resources` (requests and limits).
    pub resources: Option<Json>,
    /// What GPU pods add.
    #[serde(default)]
    pub gpu: Gpu,
}

/// What a node on a CUDA device asks of the cluster.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gpu {
    /// The extended resource to request.
    #[serde(default = "default_resource")]
    pub resource: String,
    /// How many.
    #[serde(default = "one")]
    pub count: u32,
    /// Where GPU pods may run.
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Taints GPU pods tolerate.
    #[serde(default)]
    pub tolerations: Vec<Json>,
}

impl Default for Gpu {
    fn default() -> Self {
        Gpu {
            resource: default_resource(),
            count: 1,
            node_selector: None,
            tolerations: Vec::new(),
        }
    }
}

fn default_resource() -> String {
    "nvidia.com/gpu".into()
}

fn one() -> u32 {
    1
}

impl Profile {
    /// Reads a profile file.
    pub fn read(path: &std::path::Path) -> Result<Profile, String> {
        let name = path.display();
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read `{name}`: {e}"))?;
        let value = kiln_engine::yaml::parse_value(&text)
            .map_err(|e| format!("`{name}` is not valid YAML: {}", e.message))?
            .to_json();
        let value = if value.is_null() { json!({}) } else { value };
        serde_json::from_value(value).map_err(|e| format!("`{name}`: {e}"))
    }

    /// Adds a GPU node selector given as `KEY=VALUE`.
    pub fn select_gpu_nodes(&mut self, flag: &str) -> Result<(), String> {
        let (k, v) = flag
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| format!("`--gpu-node-selector {flag}`: write KEY=VALUE"))?;
        self.gpu
            .node_selector
            .get_or_insert_with(BTreeMap::new)
            .insert(k.into(), v.into());
        Ok(())
    }

    /// Adds a GPU toleration given as `KEY[=VALUE][:EFFECT]`.
    pub fn tolerate_on_gpu(&mut self, flag: &str) -> Result<(), String> {
        let (rest, effect) = match flag.rsplit_once(':') {
            Some((rest, effect)) => (rest, Some(effect)),
            None => (flag, None),
        };
        if let Some(e) = effect {
            if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&e) {
                return Err(format!(
                    "`--gpu-toleration {flag}`: the effect `{e}` is none of NoSchedule, PreferNoSchedule, NoExecute"
                ));
            }
        }
        let mut t = match rest.split_once('=') {
            Some((k, v)) => json!({ "key": k, "operator": "Equal", "value": v }),
            None => json!({ "key": rest, "operator": "Exists" }),
        };
        if t["key"].as_str().is_some_and(str::is_empty) {
            return Err(format!(
                "`--gpu-toleration {flag}`: write KEY[=VALUE][:EFFECT]"
            ));
        }
        if let Some(e) = effect {
            t["effect"] = json!(e);
        }
        self.gpu.tolerations.push(t);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_add_gpu_placement_and_bad_ones_say_the_form() {
        let mut p = Profile::default();
        p.select_gpu_nodes("gpu=h200").unwrap();
        p.tolerate_on_gpu("nvidia.com/gpu:NoSchedule").unwrap();
        p.tolerate_on_gpu("dedicated=ml:NoExecute").unwrap();
        assert_eq!(p.gpu.node_selector.as_ref().unwrap()["gpu"], "h200");
        assert_eq!(p.gpu.tolerations[0]["operator"], "Exists");
        assert_eq!(p.gpu.tolerations[1]["value"], "ml");
        assert!(p
            .select_gpu_nodes("novalue")
            .unwrap_err()
            .contains("KEY=VALUE"));
        assert!(p
            .tolerate_on_gpu("k:Sometimes")
            .unwrap_err()
            .contains("NoSchedule"));
    }

    #[test]
    fn profile_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.yaml");
        std::fs::write(&file, "namespace: ml\ngpu: { count: 2 }\n").unwrap();
        let p = Profile::read(&file).unwrap();
        assert_eq!((p.namespace.as_deref(), p.gpu.count), (Some("ml"), 2));
        std::fs::write(&file, "namespce: ml\n").unwrap();
        assert!(Profile::read(&file).unwrap_err().contains("namespce"));
    }
}
