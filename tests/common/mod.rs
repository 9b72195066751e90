//! Helpers shared by the integration tests.
// Each test crate includes this module and uses only some of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use traj::diag::SourceMap;
use traj::sema::check::check_source;
use traj::sema::{Checked, Options};

/// Checks program `text` (as if read from `path`); the rendered diagnostics on failure.
pub fn check(path: &Path, text: &str) -> Result<(Checked, SourceMap), String> {
    let mut sources = SourceMap::default();
    match check_source(
        &path.display().to_string(),
        Some(path.to_path_buf()),
        text,
        &Options::default(),
        &mut sources,
    ) {
        Ok(c) => Ok((c, sources)),
        Err(d) => Err(d
            .iter()
            .map(|d| d.render(&sources, false))
            .collect::<String>()),
    }
}

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

/// The reference cases of `bench/CASES.md`, each a `bench/CASE.traj` program.
pub const BENCH_CASES: &[&str] = &[
    "dln", "logreg", "dmf", "relu2", "wide", "sgd", "tanh", "mlp",
];

/// `(case, input)` drawn as a float param with integral values and written as int64, as
/// `bench/gen_inputs.py`'s `INT_INPUTS` (params are always float).
pub const BENCH_INT_INPUTS: &[(&str, &str)] = &[("mlp", "labels")];

/// A temp folder (`traj-bench-TAG-PID`) holding the programs of `bench/` and their inputs,
/// written as `bench/gen_inputs.py` writes them: each `bench/gen_inputs/CASE.traj` is run
/// (its inputs are its params, nothing is trained) and its params saved as
/// `inputs/CASE/NAME.npy`, those of `BENCH_INT_INPUTS` as int64. Needs nothing but `traj`.
pub fn bench_workspace(tag: &str) -> PathBuf {
    let bench = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench");
    let dir = std::env::temp_dir().join(format!("traj-bench-{tag}-{}", std::process::id()));
    for case in BENCH_CASES {
        let program = bench.join("gen_inputs").join(format!("{case}.traj"));
        let text = std::fs::read_to_string(&program)
            .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
        let (checked, sources) = check(&program, &text).unwrap_or_else(|e| panic!("{e}"));
        let r = traj::session::run(&checked, &sources, &traj::train::RunOptions::default())
            .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
        assert_eq!(r.status, traj::train::Status::Finished, "{:?}", r.message);
        let out = dir.join("inputs").join(case);
        std::fs::create_dir_all(&out).expect("temp dir");
        for (name, tensor) in &r.params {
            let path = out.join(format!("{name}.npy"));
            let written = match tensor {
                traj::tensor::Tensor::Float(a)
                    if BENCH_INT_INPUTS.contains(&(*case, name.as_str())) =>
                {
                    assert!(
                        a.iter().all(|x| x.fract() == 0.0),
                        "{case}/{name}: not integral"
                    );
                    ndarray_npy::write_npy(&path, &a.mapv(|x| x as i64))
                }
                traj::tensor::Tensor::Float(a) => ndarray_npy::write_npy(&path, a),
                traj::tensor::Tensor::Int(a) => ndarray_npy::write_npy(&path, a),
            };
            written.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
        let source = bench.join(format!("{case}.traj"));
        std::fs::copy(&source, dir.join(format!("{case}.traj")))
            .unwrap_or_else(|e| panic!("{}: {e}", source.display()));
    }
    dir
}

/// Every recorded row of a run, each cell as its bits: two runs that agree bit for bit
/// give equal vectors.
pub fn trajectory_bits(r: &traj::train::RunResult) -> Vec<(u64, Vec<Option<u64>>)> {
    r.trajectory
        .rows
        .iter()
        .map(|(k, row)| (*k, row.iter().map(|x| x.map(f64::to_bits)).collect()))
        .collect()
}

/// Runs the `traj` binary with `args`.
pub fn traj(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_traj"))
        .args(args)
        .output()
        .expect("traj runs")
}

/// A path as the `&str` a command line takes.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf8 path")
}

/// What `traj sweep --status DIR` prints (it must succeed).
pub fn sweep_status(dir: &Path) -> String {
    let o = traj(&["sweep", "--status", s(dir)]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}
