//! `traj run` on the reference interpreter: every LANGUAGE.md program and example runs,
//! two runs give identical trajectories, divergence keeps what was computed, and the
//! observables `sharpness` and `ntk` agree with dense computations.

mod common;
use common::programs;
use std::path::{Path, PathBuf};

use traj::diag::SourceMap;
use traj::sema::Options;
use traj::sema::check::check_source;
use traj::session::run;
use traj::train::{RunOptions, RunResult, Status, gradient, prepare};

fn checked(path: &Path, text: &str) -> (traj::sema::Checked, SourceMap) {
    common::check(path, text).unwrap_or_else(|e| panic!("{e}"))
}

fn run_text(text: &str, steps: Option<u64>) -> RunResult {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/inline.traj");
    let (c, s) = checked(&path, text);
    run(
        &c,
        &s,
        &RunOptions {
            steps,
            ..Default::default()
        },
    )
    .expect("run")
}

fn run_file(path: &Path, steps: u64) -> RunResult {
    let text = std::fs::read_to_string(path).expect("readable");
    let (c, s) = checked(path, &text);
    run(
        &c,
        &s,
        &RunOptions {
            steps: Some(steps),
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_program_runs_and_reruns_bit_identically() {
    let programs = programs();
    assert!(programs.len() >= 25, "only {} programs", programs.len());
    for p in &programs {
        let a = run_file(p, 12);
        assert!(
            matches!(a.status, Status::Finished | Status::Stopped),
            "{}: {:?} {:?}",
            p.display(),
            a.status,
            a.message
        );
        assert!(!a.trajectory.rows.is_empty(), "{}: no rows", p.display());
        let b = run_file(p, 12);
        assert_eq!(
            common::trajectory_bits(&a),
            common::trajectory_bits(&b),
            "{}: two runs differ",
            p.display()
        );
    }
}

#[test]
fn the_loop_records_row_k_with_theta_k_as_section_3_10_says() {
    let r = run_text(
        "param w: [] = 1\nloss = 0.5 * w^2\ntrain {\n  optimizer gd(lr = 0.5)\n  steps 4\n  record every 2 { loss, w, g = grad(w) }\n}\n",
        None,
    );
    assert_eq!(r.status, Status::Finished);
    assert_eq!(r.trajectory.columns, ["loss", "w", "g"]);
    // w_k = 0.5^k; loss = w^2 / 2; grad = w.
    let want = [(0, 1.0), (2, 0.25), (4, 0.0625)];
    assert_eq!(r.trajectory.rows.len(), 3);
    for ((step, row), (ws, w)) in r.trajectory.rows.iter().zip(want) {
        assert_eq!(*step, ws);
        assert_eq!(row, &vec![Some(0.5 * w * w), Some(w), Some(w)]);
    }
    assert_eq!(r.steps, 4);
}

#[test]
fn stop_when_ends_the_run_with_status_stopped() {
    let r = run_text(
        "param w: [] = 1\nloss = w^2\ntrain {\n  optimizer gd(lr = 0.25)\n  steps 100\n  stop when loss < 1e-4\n  record every 50 { loss }\n}\n",
        None,
    );
    assert_eq!(r.status, Status::Stopped);
    // w_k = 0.5^k, loss = 0.25^k < 1e-4 first at k = 7.
    assert_eq!(r.steps, 7);
    assert_eq!(r.trajectory.rows.last().map(|(s, _)| *s), Some(7));
}

#[test]
fn divergence_ends_the_run_and_keeps_the_trajectory() {
    let r = run_text(
        "param w: [2] = [1.0, -1.0]\nloss = sum(w^2)\ntrain {\n  optimizer gd(lr = 1e6)\n  steps 1000\n  record every 10 { loss }\n}\n",
        None,
    );
    assert_eq!(r.status, Status::Diverged);
    let msg = r.message.clone().unwrap_or_default();
    assert!(msg.starts_with("diverged at step "), "{msg}");
    let k: u64 = msg["diverged at step ".len()..]
        .split(':')
        .next()
        .and_then(|s| s.parse().ok())
        .expect("a step");
    // The last row and the saved params are θ_{k-1}, all finite.
    let (last, row) = r.trajectory.rows.last().expect("rows");
    assert_eq!(*last, k - 1);
    assert!(row.iter().all(|v| v.is_some_and(f64::is_finite)), "{row:?}");
    assert!(r.params[0].1.to_f64().iter().all(|v| v.is_finite()));
}

#[test]
fn logistic_regression_with_the_spelled_out_softplus_moves_on_its_first_step() {
    let r = run_text(
        "data X = randn(30, 3)\ndata y = sign(X @ [1.0, -1.0, 2.0])\nparam w: [3] = 0\nlet z = -y * (X @ w)\nloss = mean(max(z, 0) + log1p(exp(-abs(z))))\ntrain {\n  optimizer gd(lr = 1.0)\n  steps 1\n  record every 1 { n = norm(w) }\n}\n",
        None,
    );
    let rows = &r.trajectory.rows;
    assert_eq!(rows[0].1, vec![Some(0.0)]);
    assert!(rows[1].1[0].is_some_and(|n| n > 0.01), "{rows:?}");
}

/// Every recorded row's cells, without the step.
fn row_values(r: &RunResult) -> Vec<Vec<Option<f64>>> {
    r.trajectory
        .rows
        .iter()
        .map(|(_, row)| row.clone())
        .collect()
}

#[test]
fn a_records_grad_of_loss_is_the_gradient_of_the_loss() {
    // `grad(loss, w)` differentiates the loss's definition (it was 0: `loss` is a record's
    // input); here it equals `grad(w)` and `grad(w * w, w)` = 2w at every row.
    let r = run_text(
        "param w: [] = 2\nloss = w * w\ntrain {\n  optimizer gd(lr = 0.1)\n  steps 2\n  record every 1 { g = grad(w), h = grad(loss, w), k = grad(w * w, w) }\n}\n",
        None,
    );
    let rows = row_values(&r);
    let want = [4.0, 4.0 * 0.8, 4.0 * 0.8 * 0.8];
    assert_eq!(rows.len(), 3);
    for (row, w) in rows.iter().zip(want) {
        for cell in row {
            let v = cell.expect("recorded");
            assert!((v - w).abs() < 1e-12, "{rows:?}");
        }
        assert_eq!(
            row[0].map(f64::to_bits),
            row[1].map(f64::to_bits),
            "{rows:?}"
        );
    }
}

fn record_at_zero(src: &str) -> RunResult {
    run_text(src, Some(0))
}

#[test]
fn sharpness_is_the_top_eigenvalue_of_the_hessian() {
    let src = "const seed = 5\ndata X = randn(6, 2)\ndata y = randn(6)\nparam W: [3, 2] ~ normal(0, 1)\nparam a: [3] ~ normal(0, 1)\nloss = 0.5 * mean((tanh(X @ W') @ a - y)^2)\ntrain {\n  optimizer gd(lr = 0.1)\n  steps 1\n  record every 1 { sharpness }\n}\n";
    let r = record_at_zero(src);
    let got = r.trajectory.rows[0].1[0].expect("sharpness");
    // Dense Hessian by central differences of the gradient.
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/inline.traj");
    let (c, s) = checked(&path, src);
    let (statics, plan) = prepare(&c, &s, &RunOptions::default()).expect("prepare");
    let theta: Vec<_> = plan
        .params
        .iter()
        .map(|p| statics.values[&format!("init:{}", p.name)].clone())
        .collect();
    let flat: Vec<f64> = theta
        .iter()
        .flat_map(|t| t.to_f64().iter().copied().collect::<Vec<_>>())
        .collect();
    let n = flat.len();
    let unflat = |v: &[f64]| -> Vec<traj::tensor::Tensor> {
        let mut at = 0;
        plan.params
            .iter()
            .map(|p| {
                let k: usize = p.shape.iter().product();
                let t = ndarray::ArrayD::from_shape_vec(
                    ndarray::IxDyn(&p.shape),
                    v[at..at + k].to_vec(),
                )
                .expect("shape");
                at += k;
                traj::tensor::Tensor::Float(t)
            })
            .collect()
    };
    let grad = |v: &[f64]| -> Vec<f64> {
        let g = gradient(&plan, &unflat(v), 1, 5).expect("gradient");
        g.grads
            .iter()
            .flat_map(|t| t.to_f64().iter().copied().collect::<Vec<_>>())
            .collect()
    };
    let h = 1e-5;
    let mut hess = ndarray::Array2::<f64>::zeros((n, n));
    for j in 0..n {
        let (mut p, mut m) = (flat.clone(), flat.clone());
        p[j] += h;
        m[j] -= h;
        let (gp, gm) = (grad(&p), grad(&m));
        for i in 0..n {
            hess[[i, j]] = (gp[i] - gm[i]) / (2.0 * h);
        }
    }
    let sym = (&hess + &hess.t()) / 2.0;
    let top = traj::observe::linalg::eigvals(sym.view()).expect("eigvals")[0];
    assert!(
        (got - top).abs() <= 1e-6 * top.abs(),
        "sharpness {got} vs dense {top}"
    );
}

#[test]
fn ntk_is_the_gram_matrix_of_the_jacobian() {
    let src = "const seed = 2\ndata X = randn(4, 2)\nparam W: [3, 2] ~ normal(0, 1)\nparam a: [3] ~ normal(0, 1)\nfn f(x) = tanh(x @ W') @ a\nloss = sum(a^2) + sum(W^2)\ntrain {\n  optimizer gd(lr = 0.1)\n  steps 1\n  record every 1 { K = ntk(f, X) }\n}\n";
    let r = record_at_zero(src);
    let got: Vec<f64> = r.trajectory.rows[0]
        .1
        .iter()
        .map(|v| v.expect("cell"))
        .collect();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/inline.traj");
    let (c, s) = checked(&path, src);
    let (statics, _) = prepare(&c, &s, &RunOptions::default()).expect("prepare");
    let x = statics.values["X"].to_f64();
    let w = statics.values["init:W"].to_f64();
    let a = statics.values["init:a"].to_f64();
    // Explicit Jacobian of f(x) = a · tanh(W x): params in definition order (W, then a).
    let jac: Vec<Vec<f64>> = (0..4)
        .map(|i| {
            let h: Vec<f64> = (0..3)
                .map(|j| (w[[j, 0]] * x[[i, 0]] + w[[j, 1]] * x[[i, 1]]).tanh())
                .collect();
            let mut row = Vec::new();
            for j in 0..3 {
                for k in 0..2 {
                    row.push(a[[j]] * (1.0 - h[j] * h[j]) * x[[i, k]]);
                }
            }
            row.extend(h);
            row
        })
        .collect();
    for i in 0..4 {
        for j in 0..4 {
            let want: f64 = jac[i].iter().zip(&jac[j]).map(|(p, q)| p * q).sum();
            let g = got[i * 4 + j];
            assert!(
                (g - want).abs() <= 1e-12 * (1.0 + want.abs()),
                "K[{i},{j}] = {g}, explicit {want}"
            );
        }
    }
}

#[test]
fn a_missing_load_file_is_a_diagnostic_not_a_panic() {
    let mut sources = SourceMap::default();
    let r = check_source(
        "m.traj",
        None,
        "data X = load(\"nowhere.npy\")\n",
        &Options::default(),
        &mut sources,
    );
    let diags = r.expect_err("an error");
    assert_eq!(diags[0].code, "E0801");
    assert_eq!(sources.line_col(diags[0].span), (1, 15));
}

#[test]
fn no_clarke_subgradient_ends_the_run_naming_the_step_and_the_operation() {
    let r = run_text(
        "param x: [] = 1\nloss = sqrt(x^2)\ntrain {\n  optimizer gd(lr = 1.0)\n  steps 10\n  record every 1 { x }\n}\n",
        None,
    );
    // x goes 1 → 0 on the first step; at 0, sqrt's derivative is infinite.
    assert_eq!(r.status, Status::Error, "{:?}", r.message);
    let msg = r.message.clone().unwrap_or_default();
    assert!(msg.starts_with("step 1: "), "{msg}");
    assert!(
        msg.contains("`sqrt` at 0") && msg.contains("inline.traj:2:8"),
        "{msg}"
    );
    // What was computed before is kept.
    assert_eq!(r.trajectory.rows.first(), Some(&(0, vec![Some(1.0)])));
}

#[test]
fn precision_f32_rounds_every_float_to_f32() {
    let src = "precision f32\nparam w: [] = 0.1\nloss = w^2 / 3\ntrain {\n  optimizer gd(lr = 0.1)\n  steps 1\n  record every 1 { w, loss }\n}\n";
    let r = run_text(src, None);
    let row0 = &r.trajectory.rows[0].1;
    let w0 = 0.1f32;
    assert_eq!(row0[0], Some(f64::from(w0)));
    let loss = ((f64::from(w0) * f64::from(w0)) as f32 as f64 / 3.0) as f32;
    assert_eq!(row0[1], Some(f64::from(loss)));
    // Every recorded value is an f32.
    for (_, row) in &r.trajectory.rows {
        for v in row.iter().flatten() {
            assert_eq!(*v, f64::from(*v as f32));
        }
    }
    // In f64 the same program records 0.1 exactly.
    let r64 = run_text(&src.replace("precision f32\n", ""), None);
    assert_eq!(r64.trajectory.rows[0].1[0], Some(0.1));
}

#[test]
fn every_program_gives_the_same_trajectory_on_both_backends() {
    use traj::train::Backend;
    for p in &programs() {
        let text = std::fs::read_to_string(p).expect("readable");
        let (c, s) = checked(p, &text);
        let go = |backend| {
            let options = RunOptions {
                steps: Some(12),
                backend,
                ..Default::default()
            };
            run(&c, &s, &options).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        };
        let (a, b) = (go(Backend::Interp), go(Backend::Jit));
        assert_eq!((a.status, a.steps), (b.status, b.steps), "{}", p.display());
        assert_eq!(a.trajectory.columns, b.trajectory.columns);
        for ((sa, ra), (sb, rb)) in a.trajectory.rows.iter().zip(&b.trajectory.rows) {
            assert_eq!(sa, sb, "{}", p.display());
            for (x, y) in ra.iter().zip(rb) {
                let same = match (x, y) {
                    (Some(x), Some(y)) => x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
                    (None, None) => true,
                    _ => false,
                };
                assert!(same, "{} step {sa}: interp {x:?} vs jit {y:?}", p.display());
            }
        }
        assert_eq!(
            a.trajectory.rows.len(),
            b.trajectory.rows.len(),
            "{}",
            p.display()
        );
    }
}

/// Programs for the interrupt tests: momentum and Adam states, sparse and overlapping
/// records, a loss only the rows need (the JIT's quiet gradient between rows), noise.
const INTERRUPTED_PROGRAMS: [&str; 4] = [
    "param x: [2] = [1.0, 2.0]\nloss = 0.5 * sum(x^2)\ntrain {\n  optimizer momentum(lr = 1e-6)\n  steps 100_000_000\n  record every 1 { loss, x }\n}\n",
    "param W: [3, 3] ~ normal(0, 0.5)\ndata M = randn(3, 3)\nloss = sum((W @ W - M)^2)\ntrain {\n  optimizer adam(lr = 1e-4)\n  steps 100_000_000\n  record every 7 { loss }\n  record every 5 { w = W[0] }\n}\n",
    "data X = randn(20, 4)\ndata y = sign(randn(20))\nparam w: [4] ~ normal(0, 1)\nloss = mean(log1p(exp(-y * (X @ w))))\ntrain {\n  optimizer gd(lr = 1e-3)\n  steps 100_000_000\n  record every 1000 { loss, w }\n}\n",
    "param x: [3] ~ normal(0, 1)\nloss = sum(x^4)\ntrain {\n  optimizer langevin(lr = 1e-4, beta = 100.0)\n  steps 100_000_000\n  record every 3 { loss, x }\n}\n",
];

/// An interrupt ends a run at a step boundary with status `interrupted`: its rows and
/// params are those of a run told to stop at that step, bit for bit, on both backends.
#[test]
fn an_interrupt_ends_the_run_as_if_it_had_been_its_last_step() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use traj::train::{Backend, Progress};
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/inline.traj");
    for text in INTERRUPTED_PROGRAMS {
        let (c, s) = checked(&path, text);
        for backend in [Backend::Interp, Backend::Jit] {
            let flag: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
            let options = RunOptions {
                backend,
                interrupt: Some(flag),
                // Interrupted from the loop itself once it passed step 3000.
                progress: Some(Progress::new(move |k, _| {
                    if k >= 3000 {
                        flag.store(true, Ordering::Relaxed);
                    }
                })),
                ..Default::default()
            };
            let a = run(&c, &s, &options).expect("run");
            assert_eq!(a.status, Status::Interrupted, "{text}");
            assert!(a.steps >= 3000 && a.steps < 100_000, "{}", a.steps);
            assert_eq!(
                a.message.as_deref(),
                Some(format!("interrupted at step {}", a.steps).as_str())
            );
            let b = run(
                &c,
                &s,
                &RunOptions {
                    backend,
                    steps: Some(a.steps),
                    ..Default::default()
                },
            )
            .expect("run");
            assert_eq!(b.status, Status::Finished);
            assert_eq!(a.trajectory, b.trajectory, "{text}");
            assert_eq!(a.trajectory.rows.last().map(|r| r.0), Some(a.steps));
            assert_eq!(a.last_step, Some(a.steps));
            assert_eq!(a.last, b.last);
            assert_eq!(a.params, b.params, "{text}");
        }
    }
}

/// The JIT's loop returning to the host between rows (to look at the interrupt flag and
/// report progress) changes nothing it computes.
#[test]
fn returning_between_rows_leaves_the_jit_trajectory_unchanged() {
    use std::sync::atomic::AtomicBool;
    use std::sync::atomic::{AtomicU64, Ordering};
    use traj::train::{Backend, Progress};
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/inline.traj");
    for text in INTERRUPTED_PROGRAMS {
        let (c, s) = checked(&path, text);
        let straight = RunOptions {
            backend: Backend::Jit,
            steps: Some(20_000),
            ..Default::default()
        };
        let a = run(&c, &s, &straight).expect("run");
        let returns: &'static AtomicU64 = Box::leak(Box::new(AtomicU64::new(0)));
        let sliced = RunOptions {
            interrupt: Some(Box::leak(Box::new(AtomicBool::new(false)))),
            progress: Some(Progress::new(|_, _| {
                returns.fetch_add(1, Ordering::Relaxed);
            })),
            ..straight.clone()
        };
        let b = run(&c, &s, &sliced).expect("run");
        // At most PROGRESS_EVERY steps between two returns.
        assert!(returns.load(Ordering::Relaxed) >= 20, "{text}");
        assert_eq!(a.status, Status::Finished);
        assert_eq!(a.trajectory, b.trajectory, "{text}");
        assert_eq!(a.params, b.params, "{text}");
    }
}

/// A `.npy` file: version 1.0 header for `descr` and `shape`, then `data`.
fn npy_bytes(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let tuple = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {tuple}, }}");
    // Magic, version and length take 10 bytes; the header ends in '\n' at a multiple of 64.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    out.extend(data);
    out
}

/// The checker takes a loaded file's dtype and shape from `data::file_shape`, the reader
/// `load` uses: for a file of every `.npy` type `load` reads (and upper-case extensions,
/// and `.csv` files of every kind of cell), the check's dtype and shape are what `load`
/// gives, a file `load` refuses is refused with the same words, and a program loading every
/// file checks and runs.
#[test]
fn every_file_load_reads_checks_with_its_dtype_and_shape_and_runs() {
    let dir = std::env::temp_dir().join(format!("traj-load-dtypes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let six = |size: usize, f: &dyn Fn(u8) -> Vec<u8>| -> Vec<u8> {
        let bytes: Vec<u8> = (0..6u8).flat_map(f).collect();
        assert_eq!(bytes.len(), 6 * size);
        bytes
    };
    // (file, contents, dtype `load` gives: true for float)
    let mut files: Vec<(String, Vec<u8>, bool)> = vec![
        (
            "f8.npy".into(),
            npy_bytes(
                "<f8",
                &[2, 3],
                &six(8, &|v| (f64::from(v) * 0.5).to_le_bytes().to_vec()),
            ),
            true,
        ),
        (
            "f4.npy".into(),
            npy_bytes(
                "<f4",
                &[2, 3],
                &six(4, &|v| (f32::from(v) * 0.5).to_le_bytes().to_vec()),
            ),
            true,
        ),
        (
            "f8_big_endian.npy".into(),
            npy_bytes(
                ">f8",
                &[6],
                &six(8, &|v| f64::from(v).to_be_bytes().to_vec()),
            ),
            true,
        ),
        (
            "b1.npy".into(),
            npy_bytes("|b1", &[2, 3], &six(1, &|v| vec![v % 2])),
            true,
        ),
    ];
    for (descr, size) in [
        ("<i8", 8),
        ("<i4", 4),
        ("<i2", 2),
        ("|i1", 1),
        ("<u8", 8),
        ("<u4", 4),
        ("<u2", 2),
        ("|u1", 1),
    ] {
        let name = format!("{}.npy", descr.trim_start_matches(['<', '|']));
        let contents = npy_bytes(
            descr,
            &[3, 2],
            &six(size, &|v| {
                let mut b = vec![0; size];
                b[0] = v;
                b
            }),
        );
        files.push((name, contents, false));
    }
    files.push(("upper.NPY".into(), npy_bytes("<f8", &[2], &[0; 16]), true));
    files.push(("ints.csv".into(), b"a,b\n1,2\n+3,-4\n".to_vec(), false));
    files.push((
        "specials.csv".into(),
        b"nan, inf\n-Infinity, 1e3\n".to_vec(),
        true,
    ));
    files.push(("column.CSV".into(), b"0.5\n2\n".to_vec(), true));
    for (name, contents, _) in &files {
        std::fs::write(dir.join(name), contents).expect("write");
    }
    for (name, _, float) in &files {
        let path = dir.join(name);
        let loaded = traj::data::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (dtype, shape) =
            traj::data::file_shape(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let want = if *float {
            traj::ir::types::DType::Float
        } else {
            traj::ir::types::DType::Int
        };
        assert_eq!(dtype, want, "{name}");
        assert_eq!(
            matches!(loaded, traj::tensor::Tensor::Float(_)),
            *float,
            "{name}"
        );
        assert_eq!(shape, loaded.shape(), "{name}");
    }
    // Files `load` refuses: the check refuses them with `load`'s words.
    for (name, contents) in [
        ("underscore.csv", &b"1, 2\n1_000, 4\n"[..]),
        ("ragged.csv", b"1, 2\n3\n"),
        ("empty.csv", b"x, y\n"),
        ("short.npy", &npy_bytes("<f8", &[4], &[0; 8])),
        ("complex.npy", &npy_bytes("<c16", &[1], &[0; 16])),
        // NumPy's other codes of int8 and uint8, which ndarray-npy does not read.
        ("b.npy", &npy_bytes("|b", &[1], &[0])),
        ("B.npy", &npy_bytes("|B", &[1], &[0])),
        ("data.txt", b"1\n"),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, contents).expect("write");
        let load = traj::data::load(&path).expect_err(name);
        let check = traj::data::file_shape(&path).expect_err(name);
        assert_eq!(load, format!("{}: {check}", path.display()), "{name}");
    }
    // A program loading every readable file checks and runs; each file's entries enter the
    // loss, and the data's sum decides the gradient at step 0.
    let mut text = String::new();
    let mut terms = Vec::new();
    for (i, (name, _, _)) in files
        .iter()
        .enumerate()
        .filter(|(_, f)| f.0 != "specials.csv")
    {
        text.push_str(&format!(
            "data X{i} = load(\"{}\")\n",
            dir.join(name).display()
        ));
        terms.push(format!("sum(X{i})"));
    }
    text.push_str("data S = load(\"");
    text.push_str(&dir.join("specials.csv").display().to_string());
    text.push_str("\")\nparam w: [] = 0.0\n");
    text.push_str(&format!(
        "loss = (w - ({}))^2 + 0 * shape(S, 0)\ntrain {{\n  optimizer gd(lr = 0.25)\n  steps 1\n  record every 1 {{ loss, w }}\n}}\n",
        terms.join(" + ")
    ));
    // Every entry is a small multiple of 1/2: the sums are exact in any order.
    let total: f64 = files
        .iter()
        .filter(|f| f.0 != "specials.csv")
        .map(|f| {
            traj::data::load(&dir.join(&f.0))
                .expect("loads")
                .to_f64()
                .sum()
        })
        .sum();
    assert!(total > 10.0, "{total}");
    let r = run_text(&text, None);
    assert_eq!(r.status, Status::Finished, "{:?}\n{text}", r.message);
    // w_0 = 0, loss_0 = total^2; gd with lr 1/4 on (w - total)^2: w_1 = total / 2.
    let rows = row_values(&r);
    assert_eq!(
        rows,
        [
            vec![Some(total * total), Some(0.0)],
            vec![Some(total * total / 4.0), Some(total / 2.0)]
        ]
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Optimizers for the non-finite gradient tables: the standard ones, and ones written in
/// the program whose θ does not surely turn non-finite with the gradient (`sign`, `clamp`,
/// a division by it, `max`), with whether `opt::nonfinite` proves that it does.
const NONFINITE_OPTIMIZERS: [(&str, &str, bool); 9] = [
    ("sgd(lr = 0.01)", "", true),
    ("momentum(lr = 0.01)", "", true),
    ("adam(lr = 0.01)", "", true),
    ("normalized_gd(lr = 0.01)", "", true),
    (
        "damped(lr = 0.01)",
        "optimizer damped(lr) {\n  param -= lr * grad / (abs(grad) + 1)\n}\n",
        true,
    ),
    (
        "by_sign(lr = 0.01)",
        "optimizer by_sign(lr) {\n  param -= lr * sign(grad)\n}\n",
        false,
    ),
    (
        "clamped(lr = 0.01)",
        "optimizer clamped(lr) {\n  param -= lr * clamp(grad, -1, 1)\n}\n",
        false,
    ),
    (
        "inverse(lr = 0.01)",
        "optimizer inverse(lr) {\n  param -= lr / (grad + 10)\n}\n",
        false,
    ),
    (
        "rectified(lr = 0.01)",
        "optimizer rectified(lr) {\n  param -= lr * max(grad, 0)\n}\n",
        false,
    ),
];

/// A program whose gradient is NaN (`sqrt` at 0 times 0) at the step its batch draws the
/// zero row, whatever the optimizer; its loss stays finite. `{opt}`, `{defs}` and
/// `{every}` are filled in.
const SQRT_AT_ZERO: &str =
    "data X = [[1.0, 2.0], [0.5, 1.5], [2.0, 0.25], [0.0, 0.0], [1.0, 1.0], [3.0, 0.5]]
param w: [2] = [1.0, 2.0]
batch xb from X size 1
loss = mean(sqrt(w * xb[0]))
{defs}train {
  optimizer {opt}
  steps 200
  record every {every} { loss, w }
}
";

/// A program whose θ overflows with a large step: a divergence, its last row and params
/// those of the step before (the previous θ).
const OVERFLOW: &str = "param w: [3] = [1.0, -2.0, 0.5]
loss = sum(w^4) / 4
{defs}train {
  optimizer {opt}
  steps 200
  record every {every} { loss, w }
}
";

fn fill(program: &str, (opt, defs): (&str, &str), every: u64) -> String {
    program
        .replace("{opt}", opt)
        .replace("{defs}", defs)
        .replace("{every}", &every.to_string())
}

/// Both backends on `text`: the same status, step, message (with the error's location),
/// rows and params, bit for bit.
fn same_on_both_backends(text: &str) -> RunResult {
    use traj::train::Backend;
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/inline.traj");
    let (c, s) = checked(&path, text);
    let go = |backend| {
        let options = RunOptions {
            backend,
            ..Default::default()
        };
        run(&c, &s, &options).unwrap_or_else(|e| panic!("{e}\n{text}"))
    };
    let (a, b) = (go(Backend::Interp), go(Backend::Jit));
    assert_eq!(
        (a.status, a.steps, &a.message),
        (b.status, b.steps, &b.message),
        "{text}"
    );
    assert_eq!(
        common::trajectory_bits(&a),
        common::trajectory_bits(&b),
        "{text}"
    );
    let bits = |r: &RunResult| -> Vec<(String, Vec<u64>)> {
        r.params
            .iter()
            .map(|(n, t)| (n.clone(), t.to_f64().iter().map(|x| x.to_bits()).collect()))
            .collect()
    };
    assert_eq!(bits(&a), bits(&b), "{text}");
    a
}

/// A gradient that turns NaN between rows or at a row, and θ that overflows, end the JIT's
/// run as the interpreter's for every optimizer, whether the loop checks the gradient by
/// its own pass or leaves it to the update's θ check (and hands the step back after it).
#[test]
fn a_non_finite_gradient_or_theta_ends_the_run_as_on_the_interpreter() {
    for (opt, defs, _) in NONFINITE_OPTIMIZERS {
        for every in [1, 50] {
            let r = same_on_both_backends(&fill(SQRT_AT_ZERO, (opt, defs), every));
            assert_eq!(r.status, Status::Error, "{opt}: {:?}", r.message);
            let msg = r.message.clone().unwrap_or_default();
            assert!(msg.contains("`sqrt` at 0"), "{opt}: {msg}");
            // The zero row is drawn after some updates: the previous θ is in play.
            let k = r.error.as_ref().and_then(|e| e.step).expect("a step");
            assert!(k > 0, "{opt}: {msg}");
            let overflow =
                same_on_both_backends(&fill(OVERFLOW, (&opt.replace("0.01", "10.0"), defs), every));
            if opt.starts_with("sgd") {
                assert_eq!(overflow.status, Status::Diverged, "{opt}");
            }
        }
    }
}

/// `opt::nonfinite` on the updates of the table's optimizers: proven along sums,
/// products and numerators, not through `sign`, `clamp`, a division by the gradient or
/// `max`.
#[test]
fn nonfinite_spreads_is_proven_only_through_sums_products_and_numerators() {
    for (opt, defs, proven) in NONFINITE_OPTIMIZERS {
        let text = fill(SQRT_AT_ZERO, (opt, defs), 1);
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/inline.traj");
        let (c, s) = checked(&path, &text);
        let (_, plan) = prepare(&c, &s, &RunOptions::default()).expect("prepare");
        let update = &plan.updates[0].as_ref().expect("an update").step;
        let theta = update.outputs[0].1;
        assert_eq!(
            traj::opt::nonfinite::nonfinite_spreads(update, 1, theta),
            proven,
            "{opt}"
        );
        // θ itself (input 0) reaches θ's new value in each: `param -= ...`.
        assert!(
            traj::opt::nonfinite::nonfinite_spreads(update, 0, theta),
            "{opt}"
        );
        // The step (input 2, an int) reaches nothing.
        assert!(
            !traj::opt::nonfinite::nonfinite_spreads(update, 2, theta),
            "{opt}"
        );
    }
}
