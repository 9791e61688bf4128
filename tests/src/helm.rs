//! The Helm chart rendered and linted with Helm's own code (PyPI `helm-python-sdk`), release
//! `opname` in namespace `opname-system`.

use std::process::Command;

use serde_json::Value;

use crate::workspace;

/// Lint report and rendered documents for `values`.
pub fn render(values: Value) -> (Value, Vec<Value>) {
    let probe = Command::new("python3")
        .args(["-c", "import helm_python"])
        .status()
        .expect("python3");
    assert!(
        probe.success(),
        "helm-python-sdk is not installed: pip install helm-python-sdk (bash .ci/run installs it)"
    );
    let out = Command::new("python3")
        .arg(workspace().join("tests/helm/render_chart.py"))
        .arg(workspace().join("charts/opname"))
        .arg(values.to_string())
        .output()
        .expect("render_chart.py");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut docs = Vec::new();
    for (path, text) in v["manifests"].as_object().unwrap() {
        if !path.ends_with(".yaml") {
            continue;
        }
        let parsed: Vec<Value> = serde_saphyr::from_multiple(text.as_str().unwrap())
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        docs.extend(parsed.into_iter().filter(|d| d.is_object()));
    }
    (v["lint"].clone(), docs)
}
