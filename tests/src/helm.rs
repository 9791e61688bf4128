//! The Helm chart rendered and linted with Helm's own code (PyPI `helm-python-sdk`), release
//! `opname` in namespace `opname-system`.

use std::process::Command;

use serde_json::Value;

use crate::workspace;

/// What Helm made of some values: its lint report, the rendered documents and `NOTES.txt`.
pub struct Rendered {
    pub lint: Value,
    pub docs: Vec<Value>,
    pub notes: String,
}

/// Lint report and rendered documents for `values`, which Helm must accept.
pub fn render(values: Value) -> (Value, Vec<Value>) {
    let r = try_render(values).unwrap_or_else(|refused| panic!("Helm refused: {refused}"));
    (r.lint, r.docs)
}

/// The rendering, or Helm's message when the chart refuses `values` (schema or `required`).
pub fn try_render(values: Value) -> Result<Rendered, String> {
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
    if let Some(refused) = v["refused"].as_str() {
        return Err(refused.to_string());
    }
    let mut docs = Vec::new();
    let mut notes = String::new();
    for (path, text) in v["manifests"].as_object().unwrap() {
        let text = text.as_str().unwrap();
        if path.ends_with("NOTES.txt") {
            notes = text.to_string();
        }
        if !path.ends_with(".yaml") {
            continue;
        }
        let parsed: Vec<Value> =
            serde_saphyr::from_multiple(text).unwrap_or_else(|e| panic!("{path}: {e}"));
        docs.extend(parsed.into_iter().filter(|d| d.is_object()));
    }
    Ok(Rendered {
        lint: v["lint"].clone(),
        docs,
        notes,
    })
}
