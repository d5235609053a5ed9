//! Node ids as Argo task and template names: DNS labels (lowercase letters,
//! digits and `-`, starting with a letter, at most 63 characters), one-to-one.
//!
//! An id that already is such a label keeps its name. Any other is written
//! as the nearest label plus six hex digits of its own hash (`fit_MLP` ->
//! `fit-mlp-3fa9c1`), so `a_b` and `a-b` stay apart; a clash left after that
//! (or with a reserved name) takes more digits.

use std::collections::HashSet;

/// The longest name Kubernetes accepts for these objects.
pub const MAX_LEN: usize = 63;

/// Whether `name` is a DNS label Argo accepts as a template name.
pub fn is_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !name.is_empty()
        && name.len() <= MAX_LEN
        && bytes[0].is_ascii_lowercase()
        && bytes[bytes.len() - 1] != b'-'
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// One label per id, in order: distinct from each other and from `reserved`.
pub fn labels(ids: &[&str], reserved: &[&str]) -> Vec<String> {
    let mut taken: HashSet<String> = reserved.iter().map(|s| s.to_string()).collect();
    // Ids that are labels already claim their names first.
    for id in ids.iter().filter(|id| is_label(id)) {
        taken.insert(id.to_string());
    }
    ids.iter()
        .map(|id| {
            if is_label(id) && !reserved.contains(id) {
                return id.to_string();
            }
            let base = nearest(id);
            let hash = blake3::hash(id.as_bytes()).to_hex().to_string();
            let name = (6..=hash.len())
                .map(|digits| {
                    let keep = MAX_LEN - digits - 1;
                    let stem = base[..base.len().min(keep)].trim_end_matches('-');
                    format!("{stem}-{}", &hash[..digits])
                })
                .find(|n| !taken.contains(n))
                .unwrap_or_else(|| format!("n-{}", &hash[..MAX_LEN - 2]));
            taken.insert(name.clone());
            name
        })
        .collect()
}

/// `id` lowercased, other characters as `-`, runs of `-` folded, starting with a letter.
fn nearest(id: &str) -> String {
    let mut out = String::new();
    for c in id.chars() {
        let c = c.to_ascii_lowercase();
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '-'
        };
        if !(c == '-' && (out.is_empty() || out.ends_with('-'))) {
            out.push(c);
        }
    }
    let out = out.trim_end_matches('-');
    if out.starts_with(|c: char| c.is_ascii_lowercase()) {
        out.to_string()
    } else {
        format!("n-{out}").trim_end_matches('-').to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_valid_distinct_and_stable() {
        let long = "x".repeat(80);
        let ids = [
            "fit", "fit_mlp", "fit-mlp", "Fit", "9lives", "_", "a__b", &long, "main", "été",
        ];
        let names = labels(&ids, &["main"]);
        assert_eq!(names[0], "fit");
        assert_eq!(names[2], "fit-mlp");
        assert!(names[1].starts_with("fit-mlp-") && names[1] != names[2]);
        assert!(names[3].starts_with("fit-"));
        assert!(names[4].starts_with("n-9lives-"));
        assert_ne!(names[8], "main");
        let unique: HashSet<&String> = names.iter().collect();
        assert_eq!(unique.len(), ids.len());
        for n in &names {
            assert!(is_label(n), "{n}");
        }
        assert_eq!(labels(&ids, &["main"]), names);
    }

    #[test]
    fn ids_differing_only_past_the_length_limit_stay_apart() {
        let a = format!("{}_a", "y".repeat(70));
        let b = format!("{}_b", "y".repeat(70));
        let names = labels(&[&a, &b], &[]);
        assert_ne!(names[0], names[1]);
        assert!(names.iter().all(|n| is_label(n)));
    }
}
