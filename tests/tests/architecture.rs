//! The rules of ARCHITECTURE.md, checked on the source tree: the model imports no workspace
//! crate, the operator does not link the recorder, the sans-IO cores never import the edge or
//! tokio, no product file is over 600 lines, rooms import each other without cycles, and no
//! product file outside `model/` spells an object key.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use opname_tests::workspace;

/// Product sources of a crate (tests excluded), with their text before any `#[cfg(test)]`.
fn sources(dir: &str) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![workspace().join(dir)];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs")
                && p.file_name().unwrap() != "tests.rs"
            {
                let text = std::fs::read_to_string(&p).unwrap();
                let product = text
                    .split("#[cfg(test)]")
                    .next()
                    .unwrap_or_default()
                    .to_string();
                out.push((p, product));
            }
        }
    }
    out.sort();
    out
}

fn manifest_names(krate: &str, dependency: &str) -> bool {
    std::fs::read_to_string(workspace().join(krate).join("Cargo.toml"))
        .unwrap()
        .lines()
        .any(|l| l.trim_start().starts_with(&format!("{dependency} ")))
}

#[test]
fn crate_boundaries() {
    for dep in [
        "opname-recorder",
        "opname-operator",
        "opname-tools",
        "kube",
        "opus",
        "tokio",
    ] {
        assert!(
            !manifest_names("model", dep),
            "model must not depend on {dep}"
        );
    }
    assert!(!manifest_names("operator", "opname-recorder"));
    for dep in ["opname-operator", "opname-tools"] {
        assert!(
            !manifest_names("recorder", dep),
            "recorder must not depend on {dep}"
        );
    }
    for dep in ["opname-recorder", "opname-tools"] {
        assert!(
            !manifest_names("cli", dep),
            "the kubectl plugin must not depend on {dep}"
        );
    }
}

#[test]
fn cores_never_import_the_edge_or_tokio() {
    for (path, text) in sources("recorder/src") {
        let rel = path.strip_prefix(workspace().join("recorder/src")).unwrap();
        let core = ["protocol", "siprec", "media", "record.rs"]
            .iter()
            .any(|c| rel.starts_with(c));
        if core {
            assert!(
                !text.contains("crate::edge") && !text.contains("tokio"),
                "{} imports the edge or tokio",
                rel.display()
            );
        }
    }
}

#[test]
fn no_product_file_over_600_lines() {
    for dir in [
        "model/src",
        "recorder/src",
        "operator/src",
        "cli/src",
        "tools/src",
    ] {
        for (path, _) in sources(dir) {
            let lines = std::fs::read_to_string(&path).unwrap().lines().count();
            assert!(lines <= 600, "{} has {lines} lines", path.display());
        }
    }
}

/// The room a file belongs to: the first component under `src/`.
fn room(src: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

#[test]
fn rooms_import_each_other_without_cycles() {
    let re = regex::Regex::new(r"crate::(\w+)").unwrap();
    for dir in ["recorder/src", "operator/src"] {
        let src = workspace().join(dir);
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (path, text) in sources(dir) {
            let from = room(&src, &path);
            for c in re.captures_iter(&text) {
                if c[1] != from {
                    edges
                        .entry(from.clone())
                        .or_default()
                        .insert(c[1].to_string());
                }
            }
        }
        // A room may not reach itself through others.
        for start in edges.keys() {
            let mut seen = BTreeSet::new();
            let mut stack: Vec<&String> = edges[start].iter().collect();
            while let Some(n) = stack.pop() {
                assert!(n != start, "{dir}: {start} imports itself through {seen:?}");
                if seen.insert(n.clone()) {
                    stack.extend(edges.get(n).into_iter().flatten());
                }
            }
        }
    }
}

#[test]
fn only_the_model_spells_object_keys() {
    let key = regex::Regex::new(
        r#"format!\("[^"]*(r\{|held/|exports/|index/|audit/|\.access/|\.opus|\.json)"#,
    )
    .unwrap();
    let suffix =
        regex::Regex::new(r#"(strip_suffix|ends_with|trim_end_matches)\("\.(json|opus)"\)"#)
            .unwrap();
    for dir in ["recorder/src", "operator/src", "tools/src"] {
        for (path, text) in sources(dir) {
            for (n, line) in text.lines().enumerate() {
                // Download file names and lifecycle rule ids are not keys.
                let not_key = line.contains("_{}.opus")
                    || line.contains("_{}_{}_{}.opus")
                    || line.contains("{RULE_PREFIX}");
                assert!(
                    not_key || (!key.is_match(line) && !suffix.is_match(line)),
                    "{}:{}: spells an object key outside model::layout: {line}",
                    path.display(),
                    n + 1
                );
            }
        }
    }
}
