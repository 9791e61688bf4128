//! `crds/` (and the chart's copy) must be exactly what `opname-operator crd` generates.

use std::path::Path;

#[test]
fn checked_in_crds_are_fresh() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let generated = opname_operator::crd::crd_yaml().unwrap();
    for dir in ["crds", "charts/opname/files/crds"] {
        let mut files: Vec<String> = std::fs::read_dir(root.join(dir))
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        let mut names: Vec<String> = generated.iter().map(|(n, _)| n.clone()).collect();
        names.sort();
        assert_eq!(files, names, "{dir} holds exactly the generated CRDs");
        for (name, yaml) in &generated {
            let on_disk = std::fs::read_to_string(root.join(dir).join(name)).unwrap();
            assert!(
                on_disk == *yaml,
                "{dir}/{name} is stale: run `cargo run -p opname-operator -- crd --out {dir}`"
            );
        }
    }
}
