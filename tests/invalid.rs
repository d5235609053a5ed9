//! Every class of invalid pipeline in `tests/data/invalid/` gives exit code 2
//! and exactly its snapshot message (`tests/snapshots/`).

use crate::common::{assert_exit, kiln, text};

#[test]
fn invalid_pipelines_report_every_problem() {
    insta::glob!("data/invalid/*.yaml", |path| {
        let name = path.file_name().unwrap().to_str().unwrap();
        // A CUDA build may have the GPU this file asks for.
        if cfg!(feature = "cuda") && name == "device_unavailable.yaml" {
            return;
        }
        let out = kiln(path.parent().unwrap(), &["validate", name]);
        assert_exit(&out, 2);
        let (stdout, stderr) = text(&out);
        assert!(stdout.is_empty(), "{name}: nothing on stdout, got {stdout}");
        insta::assert_snapshot!(stderr);
    });
}

#[test]
fn run_refuses_an_invalid_pipeline_before_running_anything() {
    let dir = crate::common::root().join("tests/data/invalid");
    let out = kiln(
        &dir,
        &["run", "many_problems.yaml", "--out", "/nonexistent/never"],
    );
    assert_exit(&out, 2);
    let (stdout, stderr) = text(&out);
    assert!(stdout.is_empty());
    assert!(stderr.contains("9 problems found"), "{stderr}");
    assert!(
        !dir.join(".kiln").exists(),
        "validation must not touch the cache"
    );
}

#[test]
fn every_choice_setting_of_every_kind_refuses_an_unknown_choice_naming_the_choices() {
    let registry = kiln_nodes::registry();
    let mut checked = 0;
    for reg in registry.iter() {
        for setting in &reg.spec.settings {
            let kiln_engine::SettingType::Choice(choices) = &setting.ty else {
                continue;
            };
            let yaml = format!(
                "pipeline: t\nnodes:\n  n:\n    kind: {}\n    with: {{ {}: not_a_choice }}\n",
                reg.spec.name, setting.name
            );
            let Err(kiln_engine::EngineError::Invalid(diags)) =
                kiln_engine::load_str(&yaml, std::path::Path::new("t.yaml"), &registry, &[])
            else {
                panic!(
                    "{}: `{}: not_a_choice` was accepted",
                    reg.spec.name, setting.name
                );
            };
            let text = diags.to_string();
            let expected = format!(
                "t.yaml:5:{}: error: node `n`: setting `{}`: `not_a_choice` is not one of {}",
                15 + setting.name.len(),
                setting.name,
                choices.join(", ")
            );
            assert!(
                text.contains(&expected),
                "{}:\n{text}\nwanted: {expected}",
                reg.spec.name
            );
            checked += 1;
        }
    }
    // Every choice-valued setting of the registry (22 today).
    assert!(checked >= 22, "only {checked} choice settings found");
}
