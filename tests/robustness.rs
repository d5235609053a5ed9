//! Whatever file `kiln validate` is given, it answers with a sentence and
//! exit code 2, never a panic.

use std::fs;

use crate::common::{assert_exit, kiln, root, text};

fn validate_gives_2(dir: &std::path::Path, file: &str) -> String {
    let out = kiln(dir, &["validate", file]);
    assert_exit(&out, 2);
    let (_, stderr) = text(&out);
    assert!(!stderr.trim().is_empty(), "{file}: no message");
    stderr
}

#[test]
fn every_truncation_of_a_pipeline_is_handled() {
    let dir = tempfile::tempdir().unwrap();
    fs::copy(
        root().join("pipelines/data/iris.csv"),
        dir.path().join("iris.csv"),
    )
    .unwrap();
    let full = fs::read_to_string(root().join("tests/data/invalid/many_problems.yaml")).unwrap();
    let good = fs::read_to_string(root().join("pipelines/iris-prep.yaml")).unwrap();
    for text in [full, good.replace("data/iris.csv", "iris.csv")] {
        let bytes = text.as_bytes();
        for cut in (0..bytes.len()).step_by(7) {
            let path = dir.path().join("cut.yaml");
            fs::write(&path, &bytes[..cut]).unwrap();
            let out = kiln(dir.path(), &["validate", "cut.yaml"]);
            let code = out.status.code();
            assert!(
                code == Some(0) || code == Some(2),
                "cut at {cut}: exit {code:?}"
            );
            assert!(!text_of(&out).contains("panicked"), "cut at {cut}");
        }
    }
}

fn text_of(out: &std::process::Output) -> String {
    let (a, b) = text(out);
    a + &b
}

#[test]
fn junk_files_are_refused_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    fs::write(p.join("empty.yaml"), "").unwrap();
    let junk: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    fs::write(p.join("junk.yaml"), &junk).unwrap();
    fs::write(p.join("nul.yaml"), "pipeline: a\0b\nnodes: {}\n").unwrap();
    fs::write(p.join("deep.yaml"), "[".repeat(100_000)).unwrap();
    fs::write(p.join("bomb.yaml"), "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\ng: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\n").unwrap();
    let mut big = String::from("pipeline: big\nnodes:\n");
    while big.len() < 10_000_000 {
        big.push_str(&format!("  n{}: {{ kind: nope.nope }}\n", big.len()));
    }
    fs::write(p.join("big.yaml"), &big).unwrap();
    fs::create_dir(p.join("folder.yaml")).unwrap();

    assert!(validate_gives_2(p, "empty.yaml").contains("empty file"));
    assert!(validate_gives_2(p, "junk.yaml").contains("junk.yaml"));
    validate_gives_2(p, "nul.yaml");
    let deep = validate_gives_2(p, "deep.yaml");
    assert!(
        deep.contains("invalid YAML") && deep.contains("deep.yaml:1:"),
        "{deep}"
    );
    assert!(validate_gives_2(p, "bomb.yaml").contains("too many values"));
    assert!(validate_gives_2(p, "big.yaml").contains("unknown kind `nope.nope`"));
    assert!(validate_gives_2(p, "folder.yaml").contains("it is a folder"));
    assert!(
        validate_gives_2(p, "missing.yaml").contains("cannot read `missing.yaml`: no such file")
    );
}
