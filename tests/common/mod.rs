//! Helpers shared by the integration tests.

use std::path::PathBuf;

/// Every program of `tests/fixtures/ok` and `examples` with a train block (modules and
/// programs without one are checked, not run), sorted.
pub fn programs() -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for dir in ["tests/fixtures/ok", "examples"] {
        for e in std::fs::read_dir(root.join(dir)).expect("dir").flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "traj") {
                let text = std::fs::read_to_string(&p).expect("readable");
                if text.contains("train {") || text.contains("train{") {
                    out.push(p);
                }
            }
        }
    }
    out.sort();
    out
}
