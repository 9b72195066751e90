//! The six reference cases of `../shared/bench/CASES.md`, written as `bench/*.traj`, end
//! at the same final loss as the JAX runner (to 1e-9 relative; the SGD case, whose random
//! streams differ, within an order of magnitude). The inputs come from
//! `../shared/bench/gen_inputs.py` (needs numpy; `.ci/run` installs it).

mod common;

use std::path::Path;

use traj::diag::SourceMap;
use traj::sema::Options;
use traj::sema::check::check_source;
use traj::train::{RunOptions, Status, run};

/// Final losses printed by `peers/run_jax.py` (JAX 0.10.2, float64, CPU) on this machine,
/// 2026-11-23, for inputs from `gen_inputs.py` (seed 20190127).
const JAX_FINAL_LOSS: &[(&str, f64)] = &[
    ("dln", 0.0001381674372103784),
    ("logreg", 0.0006664942120702736),
    ("dmf", 2.0838081475390897e-06),
    ("relu2", 0.0018294706771364285),
    ("wide", 0.19623704876919607),
    ("sgd", 1.5845008039715777e-08),
];

fn final_loss(path: &Path) -> f64 {
    let text = std::fs::read_to_string(path).expect("readable");
    let mut sources = SourceMap::default();
    let checked = check_source(
        &path.display().to_string(),
        Some(path.to_path_buf()),
        &text,
        &Options::default(),
        &mut sources,
    )
    .unwrap_or_else(|d| {
        panic!(
            "{}",
            d.iter()
                .map(|d| d.render(&sources, false))
                .collect::<String>()
        )
    });
    let r = run(&checked, &sources, &RunOptions::default()).expect("run");
    assert_eq!(
        r.status,
        Status::Finished,
        "{}: {:?}",
        path.display(),
        r.message
    );
    r.trajectory
        .rows
        .last()
        .and_then(|(_, v)| v[0])
        .expect("a final loss")
}

#[test]
fn reference_cases_end_at_the_jax_final_loss() {
    let dir = common::bench_workspace("jax").unwrap_or_else(|e| panic!("{e}"));
    for (case, jax) in JAX_FINAL_LOSS {
        let ours = final_loss(&dir.join(format!("{case}.traj")));
        if *case == "sgd" {
            let ratio = ours / jax;
            assert!((0.1..10.0).contains(&ratio), "sgd: {ours} vs JAX {jax}");
        } else {
            let rel = (ours - jax).abs() / jax.abs();
            assert!(rel < 1e-9, "{case}: {ours} vs JAX {jax} (relative {rel:e})");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
