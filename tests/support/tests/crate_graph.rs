//! The crate graph of docs/ARCHITECTURE.md holds: workers use shared crates and never each
//! other, shared crates never use workers, and only the trainer (through `oleg-model`) links
//! libtorch — tests aside.

use std::collections::BTreeMap;

/// Each workspace crate: where it lives (`workers`, `shared` or `tests`) and its normal
/// (non-dev, non-build) dependencies.
fn workspace() -> BTreeMap<String, (String, Vec<String>)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(oleg_testkit::repo_root())
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let root = oleg_testkit::repo_root();
    metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|package| {
            let manifest = std::path::Path::new(package["manifest_path"].as_str().unwrap());
            let area = manifest
                .strip_prefix(&root)
                .unwrap()
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy()
                .into_owned();
            let normal = package["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["kind"].is_null())
                .map(|d| d["name"].as_str().unwrap().to_owned())
                .collect();
            (package["name"].as_str().unwrap().to_owned(), (area, normal))
        })
        .collect()
}

#[test]
fn workers_use_shared_crates_only_and_only_the_trainer_links_libtorch() {
    let crates = workspace();
    let in_area = |area: &str| -> Vec<&String> {
        crates
            .iter()
            .filter(|(_, (a, _))| a == area)
            .map(|(name, _)| name)
            .collect()
    };
    let (workers, tests) = (in_area("workers"), in_area("tests"));
    assert_eq!(workers.len(), 6, "five workers and oleg-admin: {workers:?}");
    for (name, (area, dependencies)) in &crates {
        for dependency in dependencies {
            if area == "workers" || area == "shared" {
                assert!(
                    !workers.contains(&dependency) && !tests.contains(&dependency),
                    "{name} ({area}) depends on {dependency}"
                );
            }
            if dependency == "tch" || dependency == "oleg-model" {
                assert!(
                    ["oleg-model", "oleg-trainer"].contains(&name.as_str()),
                    "{name} links libtorch through {dependency}"
                );
            }
        }
    }
}
