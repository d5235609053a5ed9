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
