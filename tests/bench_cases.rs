//! The eight reference cases of `bench/CASES.md`, written as `bench/*.traj`, end at the same
//! final loss as the JAX peer (to 1e-9 relative; the SGD case, whose random streams
//! differ, within an order of magnitude). The inputs are written by `traj` itself
//! (`bench/gen_inputs/*.traj`); JAX's final losses are the committed fixture
//! `tests/fixtures/jax_final_loss.csv`, made by `bench/write_jax_fixture.py`.

mod common;

use std::path::Path;

use traj::diag::SourceMap;
use traj::sema::Options;
use traj::sema::check::check_source;
use traj::session::run;
use traj::train::{RunOptions, Status};

/// `(case, final loss)` of every row of `tests/fixtures/jax_final_loss.csv`.
fn jax_final_losses() -> Vec<(String, f64)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jax_final_loss.csv");
    let text = std::fs::read_to_string(&path).expect("the JAX fixture");
    text.lines()
        .filter(|l| !l.starts_with('#') && *l != "case,final_loss")
        .map(|l| {
            let (case, loss) = l.split_once(',').expect("case,final_loss");
            (case.to_string(), loss.parse().expect("a float"))
        })
        .collect()
}

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
    let jax_losses = jax_final_losses();
    let cases: Vec<&str> = jax_losses.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(
        cases,
        common::BENCH_CASES,
        "the fixture covers every case, in order"
    );
    let dir = common::bench_workspace("jax");
    for (case, jax) in &jax_losses {
        let ours = final_loss(&dir.join(format!("{case}.traj")));
        if case == "sgd" {
            let ratio = ours / jax;
            assert!((0.1..10.0).contains(&ratio), "sgd: {ours} vs JAX {jax}");
        } else {
            let rel = (ours - jax).abs() / jax.abs();
            assert!(rel < 1e-9, "{case}: {ours} vs JAX {jax} (relative {rel:e})");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
