//! Run semantics against values computed by hand (LANGUAGE.md sections 3.3–3.10, 6.4, 6.5
//! and 8): every optimizer of `std.optim` next to PyTorch's update written out in Rust,
//! per-param rules, user-defined optimizers, keyed random draws, batches, the record
//! schedule, `stop when`, consts computed from data, and files loaded at run time.

mod common;
use common::trajectory_bits;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use traj::diag::SourceMap;
use traj::sema::Options;
use traj::sema::check::check_source;
use traj::session::run;
use traj::train::{RunOptions, RunResult, Status};

// ---------------------------------------------------------------------------------------
// Running programs.
// ---------------------------------------------------------------------------------------

fn inline_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/semantics_inline.traj")
}

/// Checks and runs `text` as if it were the file `path`, with `--set` overrides and
/// `--steps`; an error of either stage comes back as text.
fn try_run_at(
    path: &Path,
    text: &str,
    overrides: &[&str],
    steps: Option<u64>,
) -> Result<RunResult, String> {
    let mut sources = SourceMap::default();
    let options = Options {
        overrides: overrides.iter().map(|s| s.to_string()).collect(),
        check_sweep: false,
    };
    let checked = check_source(
        &path.display().to_string(),
        Some(path.to_path_buf()),
        text,
        &options,
        &mut sources,
    )
    .map_err(|d| {
        d.iter()
            .map(|d| d.render(&sources, false))
            .collect::<String>()
    })?;
    run(
        &checked,
        &sources,
        &RunOptions {
            steps,
            ..Default::default()
        },
    )
}

fn run_at(path: &Path, text: &str, overrides: &[&str], steps: Option<u64>) -> RunResult {
    let r = try_run_at(path, text, overrides, steps)
        .unwrap_or_else(|e| panic!("the program failed:\n{text}\n{e}"));
    assert!(
        matches!(r.status, Status::Finished | Status::Stopped),
        "{:?} {:?}\n{text}",
        r.status,
        r.message
    );
    r
}

fn run_with(text: &str, overrides: &[&str], steps: Option<u64>) -> RunResult {
    run_at(&inline_path(), text, overrides, steps)
}

fn run_text(text: &str) -> RunResult {
    run_with(text, &[], None)
}

/// The steps of the recorded rows.
fn steps_of(r: &RunResult) -> Vec<u64> {
    r.trajectory.rows.iter().map(|(s, _)| *s).collect()
}

/// The indices of the columns of recorded value `name` (`name`, `name[i]`, `name[i,j]`),
/// in row-major order.
fn columns_of(r: &RunResult, name: &str) -> Vec<usize> {
    let prefix = format!("{name}[");
    let cols: Vec<usize> = r
        .trajectory
        .columns
        .iter()
        .enumerate()
        .filter(|(_, c)| *c == name || c.starts_with(&prefix))
        .map(|(i, _)| i)
        .collect();
    assert!(
        !cols.is_empty(),
        "no column `{name}` in {:?}",
        r.trajectory.columns
    );
    cols
}

/// The cells of recorded value `name` at row `row` (flattened, row-major).
fn cells_at(r: &RunResult, row: usize, name: &str) -> Vec<Option<f64>> {
    let cols = columns_of(r, name);
    cols.iter().map(|&c| r.trajectory.rows[row].1[c]).collect()
}

/// The values of recorded value `name` at row `row`, which must all be present.
fn at(r: &RunResult, row: usize, name: &str) -> Vec<f64> {
    cells_at(r, row, name)
        .into_iter()
        .map(|v| v.unwrap_or_else(|| panic!("`{name}` empty at row {row}")))
        .collect()
}

/// The values of recorded value `name` at every row.
fn series(r: &RunResult, name: &str) -> Vec<Vec<f64>> {
    (0..r.trajectory.rows.len())
        .map(|i| at(r, i, name))
        .collect()
}

/// The scalar recorded value `name` at row `row`.
fn scalar_at(r: &RunResult, row: usize, name: &str) -> f64 {
    let v = at(r, row, name);
    assert_eq!(v.len(), 1, "`{name}` is not a scalar");
    v[0]
}

fn bits(v: &[Vec<f64>]) -> Vec<Vec<u64>> {
    v.iter()
        .map(|r| r.iter().map(|x| x.to_bits()).collect())
        .collect()
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    a == b || (a - b).abs() <= rel * a.abs().max(b.abs())
}

fn assert_traj_close(got: &[Vec<f64>], want: &[Vec<f64>], rel: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: row count");
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len(), "{what}: row {k} width");
        for (i, (a, b)) in g.iter().zip(w).enumerate() {
            assert!(
                close(*a, *b, rel),
                "{what}: row {k}, entry {i}: traj {a:e}, by hand {b:e} (rel. diff {:e})",
                (a - b).abs() / b.abs()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// 1. Optimizers against PyTorch's formulas.
// ---------------------------------------------------------------------------------------

const C: [f64; 2] = [1.0, 3.0];
const W0: [f64; 2] = [1.0, -2.0];
const QUAD: &str = "data c = [1.0, 3.0]\nparam w: [2] = [1.0, -2.0]\nloss = 0.5 * sum(c * w^2)\n";
const REL: f64 = 1e-14;

/// `w` at steps 0..=4 of the quadratic `0.5 * sum(c * w^2)` under `rule`.
fn quad_traj(rule: &str, overrides: &[&str]) -> Vec<Vec<f64>> {
    let src =
        format!("{QUAD}train {{\n  optimizer {rule}\n  steps 4\n  record every 1 {{ w }}\n}}\n");
    let r = run_with(&src, overrides, None);
    assert_eq!(r.status, Status::Finished);
    assert_eq!(steps_of(&r), [0, 1, 2, 3, 4]);
    series(&r, "w")
}

/// Gradient steps by hand on `0.5 * sum(c * w^2)` (gradient `c * w`): `update(t, w, g)`
/// applies update t (1 for the first).
fn by_hand(
    c: &[f64],
    w0: &[f64],
    steps: usize,
    mut update: impl FnMut(usize, &mut [f64], &[f64]),
) -> Vec<Vec<f64>> {
    let mut w = w0.to_vec();
    let mut out = vec![w.clone()];
    for t in 1..=steps {
        let g: Vec<f64> = c.iter().zip(&w).map(|(c, w)| c * w).collect();
        update(t, &mut w, &g);
        out.push(w.clone());
    }
    out
}

fn gd_by_hand(lr: f64) -> Vec<Vec<f64>> {
    by_hand(&C, &W0, 4, |_, w, g| {
        for (w, g) in w.iter_mut().zip(g) {
            *w -= lr * g;
        }
    })
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

#[test]
fn gd_and_sgd_follow_w_minus_lr_grad() {
    let want = gd_by_hand(0.1);
    assert_traj_close(&quad_traj("gd(lr = 0.1)", &[]), &want, REL, "gd");
    assert_traj_close(&quad_traj("sgd(lr = 0.1)", &[]), &want, REL, "sgd");
    // Keyword or positional, and a hyperparameter from a const overridden by --set.
    assert_traj_close(&quad_traj("gd(0.1)", &[]), &want, REL, "gd positional");
    let src = format!(
        "const lr = 0.5\n{QUAD}train {{\n  optimizer gd(lr = lr)\n  steps 4\n  record every 1 {{ w }}\n}}\n"
    );
    let r = run_with(&src, &["lr=0.1"], None);
    assert_traj_close(&series(&r, "w"), &want, REL, "gd with --set lr=0.1");
}

#[test]
fn gd_with_a_learning_rate_that_depends_on_t() {
    let want = by_hand(&C, &W0, 4, |t, w, g| {
        let lr = 0.5 / (t as f64).sqrt();
        for (w, g) in w.iter_mut().zip(g) {
            *w -= lr * g;
        }
    });
    assert_traj_close(
        &quad_traj("gd(lr = 0.5 / sqrt(t))", &[]),
        &want,
        REL,
        "gd(lr = 0.5 / sqrt(t))",
    );
}

/// torch.optim.SGD(momentum = beta, dampening = 0, nesterov): the buffer starts as the
/// first gradient, then buf = beta * buf + g; the step is buf, or g + beta * buf.
fn sgd_momentum_by_hand(lr: f64, beta: f64, nesterov: bool) -> Vec<Vec<f64>> {
    let mut buf: Vec<f64> = Vec::new();
    by_hand(&C, &W0, 4, |t, w, g| {
        if t == 1 {
            buf = g.to_vec();
        } else {
            for (b, g) in buf.iter_mut().zip(g) {
                *b = beta * *b + g;
            }
        }
        for ((w, g), b) in w.iter_mut().zip(g).zip(&buf) {
            let d = if nesterov { g + beta * b } else { *b };
            *w -= lr * d;
        }
    })
}

#[test]
fn momentum_is_torch_sgd_with_momentum() {
    // Default beta = 0.9.
    assert_traj_close(
        &quad_traj("momentum(lr = 0.1)", &[]),
        &sgd_momentum_by_hand(0.1, 0.9, false),
        REL,
        "momentum default beta",
    );
    assert_traj_close(
        &quad_traj("momentum(lr = 0.05, beta = 0.5)", &[]),
        &sgd_momentum_by_hand(0.05, 0.5, false),
        REL,
        "momentum beta 0.5",
    );
}

#[test]
fn nesterov_is_torch_sgd_with_nesterov() {
    assert_traj_close(
        &quad_traj("nesterov(lr = 0.1)", &[]),
        &sgd_momentum_by_hand(0.1, 0.9, true),
        REL,
        "nesterov default beta",
    );
    assert_traj_close(
        &quad_traj("nesterov(lr = 0.05, beta = 0.5)", &[]),
        &sgd_momentum_by_hand(0.05, 0.5, true),
        REL,
        "nesterov beta 0.5",
    );
}

/// torch.optim.Adagrad (lr_decay = 0, initial_accumulator_value = 0).
fn adagrad_by_hand(lr: f64, eps: f64) -> Vec<Vec<f64>> {
    let mut sum = [0.0; 2];
    by_hand(&C, &W0, 4, |_, w, g| {
        for ((w, g), sum) in w.iter_mut().zip(g).zip(sum.iter_mut()) {
            *sum += g * g;
            let std = sum.sqrt() + eps;
            *w -= lr * g / std;
        }
    })
}

#[test]
fn adagrad_is_torch_adagrad() {
    // PyTorch's defaults: lr = 0.01, eps = 1e-10.
    assert_traj_close(
        &quad_traj("adagrad()", &[]),
        &adagrad_by_hand(0.01, 1e-10),
        REL,
        "adagrad defaults",
    );
    assert_traj_close(
        &quad_traj("adagrad(lr = 0.5, eps = 0.1)", &[]),
        &adagrad_by_hand(0.5, 0.1),
        REL,
        "adagrad",
    );
}

/// torch.optim.RMSprop (no momentum, not centered).
fn rmsprop_by_hand(lr: f64, alpha: f64, eps: f64) -> Vec<Vec<f64>> {
    let mut sq = [0.0; 2];
    by_hand(&C, &W0, 4, |_, w, g| {
        for ((w, g), sq) in w.iter_mut().zip(g).zip(sq.iter_mut()) {
            *sq = alpha * *sq + (1.0 - alpha) * g * g;
            let avg = sq.sqrt() + eps;
            *w -= lr * g / avg;
        }
    })
}

#[test]
fn rmsprop_is_torch_rmsprop() {
    // PyTorch's defaults: lr = 0.01, alpha = 0.99, eps = 1e-8.
    assert_traj_close(
        &quad_traj("rmsprop()", &[]),
        &rmsprop_by_hand(0.01, 0.99, 1e-8),
        REL,
        "rmsprop defaults",
    );
    assert_traj_close(
        &quad_traj("rmsprop(lr = 0.1, alpha = 0.5, eps = 0.01)", &[]),
        &rmsprop_by_hand(0.1, 0.5, 0.01),
        REL,
        "rmsprop",
    );
}

/// torch.optim.Adam (amsgrad = False, no weight decay), in PyTorch's own arrangement:
/// step_size = lr / bc1, denom = sqrt(v) / sqrt(bc2) + eps.
fn adam_by_hand(lr: f64, beta1: f64, beta2: f64, eps: f64) -> Vec<Vec<f64>> {
    let (mut m, mut v) = ([0.0; 2], [0.0; 2]);
    by_hand(&C, &W0, 4, |t, w, g| {
        let bc1 = 1.0 - beta1.powi(t as i32);
        let bc2 = 1.0 - beta2.powi(t as i32);
        let step_size = lr / bc1;
        for (((w, g), m), v) in w.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            *m = beta1 * *m + (1.0 - beta1) * g;
            *v = beta2 * *v + (1.0 - beta2) * g * g;
            let denom = v.sqrt() / bc2.sqrt() + eps;
            *w -= step_size * *m / denom;
        }
    })
}

#[test]
fn adam_is_torch_adam() {
    // PyTorch's defaults: lr = 1e-3, betas = (0.9, 0.999), eps = 1e-8.
    assert_traj_close(
        &quad_traj("adam()", &[]),
        &adam_by_hand(1e-3, 0.9, 0.999, 1e-8),
        REL,
        "adam defaults",
    );
    assert_traj_close(
        &quad_traj("adam(lr = 0.1)", &[]),
        &adam_by_hand(0.1, 0.9, 0.999, 1e-8),
        REL,
        "adam lr 0.1",
    );
    assert_traj_close(
        &quad_traj("adam(lr = 0.2, beta1 = 0.5, beta2 = 0.75, eps = 0.1)", &[]),
        &adam_by_hand(0.2, 0.5, 0.75, 0.1),
        REL,
        "adam",
    );
}

#[test]
fn normalized_gd_takes_steps_of_length_lr() {
    let want = by_hand(&C, &W0, 4, |_, w, g| {
        let n = norm(g);
        for (w, g) in w.iter_mut().zip(g) {
            *w -= 0.25 * g / n;
        }
    });
    let got = quad_traj("normalized_gd(lr = 0.25)", &[]);
    assert_traj_close(&got, &want, REL, "normalized_gd");
    for k in 1..got.len() {
        let d: Vec<f64> = got[k].iter().zip(&got[k - 1]).map(|(a, b)| a - b).collect();
        assert!(
            (norm(&d) - 0.25).abs() < 1e-14,
            "step {k}: length {}",
            norm(&d)
        );
    }
}

#[test]
fn normalized_gd_divides_by_the_norm_of_the_whole_gradient() {
    // Two params: gnorm is over both, not per param.
    let src = "data c = [1.0, 3.0]\nparam u: [2] = [1.0, -2.0]\nparam v: [] = 4.0\nloss = 0.5 * sum(c * u^2) + 0.5 * v^2 + sum(u) * v\ntrain {\n  optimizer normalized_gd(lr = 0.25)\n  steps 3\n  record every 1 { u, v }\n}\n";
    let r = run_text(src);
    let (mut u, mut v) = (W0.to_vec(), 4.0);
    for k in 0..=3 {
        assert_traj_close(&[at(&r, k, "u")], &[u.clone()], REL, &format!("u, row {k}"));
        assert_traj_close(&[at(&r, k, "v")], &[vec![v]], REL, &format!("v, row {k}"));
        let su: f64 = u.iter().sum();
        let gu: Vec<f64> = (0..2).map(|i| C[i] * u[i] + v).collect();
        let gv = v + su;
        let gnorm = (gu.iter().map(|x| x * x).sum::<f64>() + gv * gv).sqrt();
        for (u, g) in u.iter_mut().zip(&gu) {
            *u -= 0.25 * g / gnorm;
        }
        v -= 0.25 * gv / gnorm;
    }
}

#[test]
fn gnorm_counts_the_gradient_of_frozen_params_too() {
    // gnorm is "the norm of the whole gradient, all params together".
    let src = "data c = [1.0, 3.0]\nparam u: [2] = [1.0, -2.0]\nparam z: [] = 2.0\nloss = 0.5 * sum(c * u^2) + z * sum(u)\ntrain {\n  optimizer normalized_gd(lr = 0.25)\n  optimizer none for z\n  steps 3\n  record every 1 { u, z }\n}\n";
    let r = run_text(src);
    let z = 2.0;
    let mut u = W0.to_vec();
    for k in 0..=3 {
        assert_traj_close(&[at(&r, k, "u")], &[u.clone()], REL, &format!("u, row {k}"));
        assert_eq!(scalar_at(&r, k, "z"), z);
        let gu: Vec<f64> = (0..2).map(|i| C[i] * u[i] + z).collect();
        let gz: f64 = u.iter().sum();
        let gnorm = (gu.iter().map(|x| x * x).sum::<f64>() + gz * gz).sqrt();
        for (u, g) in u.iter_mut().zip(&gu) {
            *u -= 0.25 * g / gnorm;
        }
    }
}

#[test]
fn sign_gd_steps_by_lr_along_the_sign() {
    let want = by_hand(&C, &W0, 4, |_, w, g| {
        for (w, g) in w.iter_mut().zip(g) {
            *w -= 0.1 * g.signum();
        }
    });
    assert_traj_close(&quad_traj("sign_gd(lr = 0.1)", &[]), &want, REL, "sign_gd");
}

#[test]
fn eg_is_multiplicative_and_stays_on_the_simplex() {
    let src = "data c = [1.0, 3.0, -2.0]\nparam w: [3] = [0.2, 0.3, 0.5]\nloss = 0.5 * sum(c * w^2)\ntrain {\n  optimizer eg(lr = 0.7)\n  steps 4\n  record every 1 { w }\n}\n";
    let got = series(&run_text(src), "w");
    let want = by_hand(&[1.0, 3.0, -2.0], &[0.2, 0.3, 0.5], 4, |_, w, g| {
        for (w, g) in w.iter_mut().zip(g) {
            *w *= (-0.7 * g).exp();
        }
        let s: f64 = w.iter().sum();
        for x in w.iter_mut() {
            *x /= s;
        }
    });
    assert_traj_close(&got, &want, REL, "eg");
    for row in &got {
        assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-15);
        assert!(row.iter().all(|x| *x > 0.0));
    }
}

#[test]
fn per_param_rules_frozen_params_and_simultaneous_updates() {
    // A coupled loss: every gradient depends on the other params, so updating one param
    // before taking the other's gradient would show.
    let src = "data c = [1.0, 3.0]\nparam u: [2] = [1.0, -2.0]\nparam w: [2] = [0.5, 0.25]\nparam z: [2] = [2.0, 1.0]\nloss = 0.5 * sum(c * u^2) + 0.5 * sum(c * w^2) + sum(u * w) + sum(z^2) + sum(z * u)\ntrain {\n  optimizer momentum(lr = 0.1)\n  optimizer gd(lr = 0.05) for w\n  optimizer none for z\n  steps 4\n  record every 1 { u, w, z, gz = grad(z) }\n}\n";
    let r = run_text(src);
    let (mut u, mut w, z) = (vec![1.0, -2.0], vec![0.5, 0.25], vec![2.0, 1.0]);
    let mut buf = vec![0.0; 2];
    for k in 0..=4 {
        let what = format!("row {k}");
        assert_traj_close(&[at(&r, k, "u")], &[u.clone()], REL, &format!("u {what}"));
        assert_traj_close(&[at(&r, k, "w")], &[w.clone()], REL, &format!("w {what}"));
        // Frozen: bit for bit the initial value, though its gradient is not zero.
        assert_eq!(at(&r, k, "z"), z, "z {what}");
        let gz: Vec<f64> = (0..2).map(|i| 2.0 * z[i] + u[i]).collect();
        assert_traj_close(&[at(&r, k, "gz")], &[gz], REL, &format!("grad(z) {what}"));
        let gu: Vec<f64> = (0..2).map(|i| C[i] * u[i] + w[i] + z[i]).collect();
        let gw: Vec<f64> = (0..2).map(|i| C[i] * w[i] + u[i]).collect();
        for (b, g) in buf.iter_mut().zip(&gu) {
            *b = if k == 0 { *g } else { 0.9 * *b + g };
        }
        for (u, b) in u.iter_mut().zip(&buf) {
            *u -= 0.1 * b;
        }
        for (w, g) in w.iter_mut().zip(&gw) {
            *w -= 0.05 * g;
        }
    }
}

#[test]
fn a_rule_for_several_params_governs_each_of_them() {
    let src = "param u: [] = 1.0\nparam w: [2] = [2.0, -4.0]\nparam z: [] = 3.0\nloss = 0.5 * u^2 + 0.5 * sum(w^2) + 0.5 * z^2\ntrain {\n  optimizer gd(lr = 0.5) for u, w\n  optimizer none for z\n  steps 2\n  record every 1 { u, w, z }\n}\n";
    let r = run_text(src);
    for k in 0..=2 {
        let f = 0.5f64.powi(k as i32);
        assert_eq!(at(&r, k, "u"), [f]);
        assert_eq!(at(&r, k, "w"), [2.0 * f, -4.0 * f]);
        assert_eq!(at(&r, k, "z"), [3.0]);
    }
}

#[test]
fn a_user_defined_optimizer_with_state_runs_its_body_in_order() {
    // `state s = param` is set from the initial value; the later statements see the
    // earlier ones (`s` is updated from the already-moved param); `t` is 1 first and
    // `loss` is the loss at θ_k.
    let src = "data c = [1.0, 3.0]\nparam w: [2] = [1.0, -2.0]\nloss = 0.5 * sum(c * w^2)\noptimizer mine(lr, rho = 0.5) {\n  state s = param\n  state n = ones\n  let step_lr = lr / t\n  n = n + 1\n  param -= step_lr * grad / n\n  s = rho * s + (1 - rho) * param\n  param += 0.25 * (s - param) - 0.01 * loss * param\n}\ntrain {\n  optimizer mine(lr = 0.2)\n  steps 4\n  record every 1 { w }\n}\n";
    let got = series(&run_text(src), "w");
    let mut s = W0.to_vec();
    let mut n = [1.0; 2];
    let want = by_hand(&C, &W0, 4, |t, w, g| {
        let loss: f64 = 0.5 * (0..2).map(|i| C[i] * w[i] * w[i]).sum::<f64>();
        let step_lr = 0.2 / t as f64;
        for (((w, g), n), s) in w.iter_mut().zip(g).zip(n.iter_mut()).zip(s.iter_mut()) {
            *n += 1.0;
            *w -= step_lr * g / *n;
            *s = 0.5 * *s + 0.5 * *w;
            *w += 0.25 * (*s - *w) - 0.01 * loss * *w;
        }
    });
    assert_traj_close(&got, &want, REL, "user-defined optimizer");
}

#[test]
fn hyperparameters_may_use_loss_and_gnorm() {
    // lr = 0.1 * loss and lr = 0.25 / gnorm, both at θ_k.
    let want = by_hand(&C, &W0, 4, |_, w, g| {
        let loss: f64 = 0.5 * (0..2).map(|i| C[i] * w[i] * w[i]).sum::<f64>();
        for (w, g) in w.iter_mut().zip(g) {
            *w -= 0.1 * loss * g;
        }
    });
    assert_traj_close(
        &quad_traj("gd(lr = 0.1 * loss)", &[]),
        &want,
        REL,
        "lr = 0.1 * loss",
    );
    let want = by_hand(&C, &W0, 4, |_, w, g| {
        let n = norm(g);
        for (w, g) in w.iter_mut().zip(g) {
            *w -= 0.25 / n * g;
        }
    });
    assert_traj_close(
        &quad_traj("gd(lr = 0.25 / gnorm)", &[]),
        &want,
        REL,
        "lr = 0.25 / gnorm",
    );
}

#[test]
fn a_scalar_state_from_a_const_is_a_step_counter() {
    let src = format!(
        "{QUAD}optimizer counted(lr) {{\n  state k = 0\n  state m = 0.5 * ones + param\n  k = k + 1\n  m = m + grad\n  param -= lr * m / k\n}}\ntrain {{\n  optimizer counted(lr = 0.1)\n  steps 4\n  record every 1 {{ w }}\n}}\n"
    );
    let mut m: Vec<f64> = W0.iter().map(|w| 0.5 + w).collect();
    let want = by_hand(&C, &W0, 4, |t, w, g| {
        for ((w, g), m) in w.iter_mut().zip(g).zip(m.iter_mut()) {
            *m += g;
            *w -= 0.1 * *m / t as f64;
        }
    });
    assert_traj_close(&series(&run_text(&src), "w"), &want, REL, "counted");
}

#[test]
fn optimizer_rules_must_cover_each_param_once() {
    let base = "param u: [] = 1\nparam w: [] = 1\nloss = u^2 + w^2\n";
    let twice = format!(
        "{base}train {{\n  optimizer gd(lr = 0.1) for u, w\n  optimizer none for w\n  steps 1\n  record every 1 {{ u }}\n}}\n"
    );
    let missing = format!(
        "{base}train {{\n  optimizer gd(lr = 0.1) for u\n  steps 1\n  record every 1 {{ u }}\n}}\n"
    );
    for src in [twice, missing] {
        let r = try_run_at(&inline_path(), &src, &[], None);
        assert!(
            r.is_err() || r.as_ref().is_ok_and(|r| r.status == Status::Error),
            "accepted:\n{src}"
        );
    }
}

#[test]
fn nparams_counts_every_entry_of_every_param() {
    let src = "param u: [2, 3] = 1.0\nparam v: [4] = 1.0\nloss = 0.5 * sum(u^2) + 0.5 * sum(v^2)\noptimizer scaled(lr) {\n  param -= lr * nparams * grad\n}\ntrain {\n  optimizer scaled(lr = 0.01)\n  steps 1\n  record every 1 { u, v }\n}\n";
    let r = run_text(src);
    // nparams = 10: one step multiplies everything by 1 - 0.1.
    for x in at(&r, 1, "u").into_iter().chain(at(&r, 1, "v")) {
        assert!(close(x, 1.0 - 0.01 * 10.0, REL), "{x}");
    }
}

#[test]
fn each_occurrence_of_noise_draws_anew_and_a_let_keeps_one_draw() {
    let prog = |body: &str| {
        format!(
            "{QUAD}optimizer jitter(a) {{\n{body}\n}}\ntrain {{\n  optimizer jitter(a = 0.5)\n  steps 2\n  record every 1 {{ w }}\n}}\n"
        )
    };
    let two = series(&run_text(&prog("  param += a * noise - a * noise")), "w");
    assert!(
        two[1] != two[0] && two[2] != two[1],
        "two occurrences of noise gave the same draw: {two:?}"
    );
    let one = series(
        &run_text(&prog("  let z = noise\n  param += a * z - a * z")),
        "w",
    );
    assert_eq!(bits(&one), bits(&[W0.to_vec(), W0.to_vec(), W0.to_vec()]));
}

fn langevin_src(beta: &str) -> String {
    format!(
        "{QUAD}train {{\n  optimizer langevin(lr = 0.1, beta = {beta})\n  steps 4\n  record every 1 {{ w }}\n}}\n"
    )
}

#[test]
fn langevin_is_reproducible_seeded_and_gd_at_huge_beta() {
    let a = run_text(&langevin_src("1.0"));
    let b = run_text(&langevin_src("1.0"));
    assert_eq!(
        trajectory_bits(&a),
        trajectory_bits(&b),
        "same seed, different trajectories"
    );
    let c = run_with(&langevin_src("1.0"), &["seed=1"], None);
    assert_ne!(
        series(&a, "w")[1],
        series(&c, "w")[1],
        "--seed 1 did not change the noise"
    );
    // Noise of scale sqrt(2 lr / beta) ~ 1: the trajectory is far from gd's.
    let gd = gd_by_hand(0.1);
    let far = series(&a, "w")
        .iter()
        .zip(&gd)
        .any(|(x, y)| (x[0] - y[0]).abs() > 1e-3);
    assert!(
        far,
        "langevin at beta = 1 follows gd: {:?}",
        series(&a, "w")
    );
    // beta = 1e12: noise of scale ~4.5e-7 per step.
    let cold = series(&run_text(&langevin_src("1e12")), "w");
    for (k, (x, y)) in cold.iter().zip(&gd).enumerate() {
        for (a, b) in x.iter().zip(y) {
            assert!((a - b).abs() < 1e-5, "row {k}: langevin {a} vs gd {b}");
        }
    }
    assert_ne!(cold[4], gd[4], "no noise at all at beta = 1e12");
}

fn perturbed_src(threshold: &str) -> String {
    format!(
        "{QUAD}train {{\n  optimizer perturbed_gd(lr = 0.1, radius = 0.1, threshold = {threshold})\n  steps 4\n  record every 1 {{ w }}\n}}\n"
    )
}

/// The kick of update k+1 of `perturbed_gd(lr = 0.1, ...)` on the quadratic, as a
/// multiple of `radius / sqrt(nparams)`: the `noise` it drew.
fn recovered_noise(w: &[Vec<f64>], k: usize) -> Vec<f64> {
    (0..2)
        .map(|i| (w[k + 1][i] - (w[k][i] - 0.1 * C[i] * w[k][i])) * 2f64.sqrt() / 0.1)
        .collect()
}

#[test]
fn perturbed_gd_kicks_only_below_the_threshold_and_is_seeded() {
    // Threshold 0: never kicks, exactly gd.
    let never = series(&run_text(&perturbed_src("0")), "w");
    assert_traj_close(&never, &gd_by_hand(0.1), REL, "perturbed_gd, threshold 0");

    let a = run_text(&perturbed_src("1e9"));
    let b = run_text(&perturbed_src("1e9"));
    assert_eq!(
        trajectory_bits(&a),
        trajectory_bits(&b),
        "same seed, different trajectories"
    );
    let c = run_with(&perturbed_src("1e9"), &["seed=3"], None);
    assert_ne!(
        series(&a, "w")[1],
        series(&c, "w")[1],
        "--seed 3 changed nothing"
    );

    // Every step kicks with fresh N(0, 1) noise.
    let w = series(&a, "w");
    let mut seen: Vec<f64> = Vec::new();
    for k in 0..4 {
        for z in recovered_noise(&w, k) {
            assert!(z.abs() > 1e-6 && z.abs() < 7.0, "step {k}: noise {z}");
            assert!(
                seen.iter().all(|s| (s - z).abs() > 1e-6),
                "noise repeats: {z} in {seen:?}"
            );
            seen.push(z);
        }
    }

    // gnorm is 6.08 at θ_0 and 4.30 at θ_1: threshold 5 kicks from update 2 on.
    let mid = series(&run_text(&perturbed_src("5")), "w");
    let gd = gd_by_hand(0.1);
    assert_traj_close(&mid[..2], &gd[..2], REL, "no kick above the threshold");
    assert!(
        norm(&recovered_noise(&mid, 1)) > 1e-3,
        "no kick below the threshold: {mid:?}"
    );
}

#[test]
fn noise_is_keyed_by_param() {
    // Two params with identical deterministic dynamics part ways only through noise.
    let src = "data c = [1.0, 3.0]\nparam u: [2] = [1.0, -2.0]\nparam w: [2] = [1.0, -2.0]\nloss = 0.5 * sum(c * u^2) + 0.5 * sum(c * w^2)\ntrain {\n  optimizer langevin(lr = 0.1, beta = 1.0)\n  steps 2\n  record every 1 { u, w }\n}\n";
    let r = run_text(src);
    assert_eq!(at(&r, 0, "u"), at(&r, 0, "w"));
    assert_ne!(
        at(&r, 1, "u"),
        at(&r, 1, "w"),
        "u and w drew the same noise"
    );
}

// ---------------------------------------------------------------------------------------
// 2. Keyed random draws (section 6.4).
// ---------------------------------------------------------------------------------------

const KEYED: &str = "data A = randn(2, 3)\nparam W: [2, 2] ~ normal(0, 1)\nsample x = randn(2)\nloss = 0.5 * sum((W @ x)^2)\n";

#[test]
fn adding_items_with_draws_changes_no_other_draw() {
    let tail = "train {\n  optimizer gd(lr = 0.01)\n  steps 3\n  record every 1 { A, W0 = init(W), x }\n}\n";
    let a = run_text(&format!("{KEYED}{tail}"));
    // New items before and after, drawing from every kind of source.
    let b = run_text(&format!(
        "data B = randn(5)\nsample y = rand(3)\nparam V: [3] ~ normal(0, 1)\n{KEYED}data D = randn(2, 3) + bernoulli(0.5, 2, 3)\nlet extra = sum(V^2) + sum(y) + sum(B) + sum(D)\n{}",
        tail.replace("A, W0", "extra, A, W0")
    ));
    for name in ["A", "W0", "x"] {
        assert_eq!(
            bits(&series(&a, name)),
            bits(&series(&b, name)),
            "`{name}` changed when items were added"
        );
    }
    // And the values are random draws, not constants.
    let x = series(&a, "x");
    assert!(
        x[0] != x[1] && x[1] != x[2],
        "the sample is not redrawn: {x:?}"
    );
    let aa = at(&a, 0, "A");
    assert!(aa.windows(2).all(|p| p[0] != p[1]), "{aa:?}");
}

#[test]
fn the_teacher_does_not_depend_on_the_students_width() {
    let src = "const d = 3, k = 5\ndata A = randn(4, d) / sqrt(d)\nparam W: [k, d] ~ normal(0, 1)\nsample x = randn(2, d)\nfn teacher(z) = sum(relu(z @ A'), axis = 1)\nfn student(z) = relu(z @ W') @ ones(k)\nloss = 0.5 * mean((student(x) - teacher(x))^2)\ntrain {\n  optimizer gd(lr = 0.01)\n  steps 2\n  record every 1 { A, x, W0 = init(W) }\n}\n";
    let narrow = run_with(src, &[], None);
    let wide = run_with(src, &["k=7"], None);
    assert_eq!(bits(&series(&narrow, "A")), bits(&series(&wide, "A")));
    assert_eq!(bits(&series(&narrow, "x")), bits(&series(&wide, "x")));
    // Initial values are keyed by element: the first 5 rows of the wider W (row-major,
    // same d) are the narrower W.
    let (w5, w7) = (at(&narrow, 0, "W0"), at(&wide, 0, "W0"));
    assert_eq!((w5.len(), w7.len()), (15, 21));
    assert_eq!(w5[..], w7[..15]);
    // A different seed gives a different teacher.
    let other = run_with(src, &["seed=1"], None);
    assert_ne!(at(&narrow, 0, "A"), at(&other, 0, "A"));
}

#[test]
fn samples_differ_between_steps_and_repeat_across_runs() {
    let src = "param w: [3] = 0\nsample s = randn(3)\nsample e = 0.1 * randn(3)\nloss = 0.5 * sum((w - s - e)^2)\ntrain {\n  optimizer gd(lr = 0.5)\n  steps 4\n  record every 1 { s, e }\n}\n";
    let a = run_text(src);
    let b = run_text(src);
    assert_eq!(trajectory_bits(&a), trajectory_bits(&b));
    let s = series(&a, "s");
    for (i, si) in s.iter().enumerate() {
        for (j, sj) in s[..i].iter().enumerate() {
            assert_ne!(si, sj, "rows {j} and {i} drew the same sample");
        }
    }
    // Two samples of one program are independent draws.
    let e = series(&a, "e");
    for (si, ei) in s.iter().zip(&e) {
        let scaled: Vec<f64> = si.iter().map(|x| 0.1 * x).collect();
        assert_ne!(&scaled, ei);
    }
    let c = run_with(src, &["seed=2"], None);
    assert_ne!(series(&c, "s"), s);
}

#[test]
fn the_sample_recorded_at_row_k_is_the_one_update_k_plus_1_uses() {
    // gd with lr = 1 on 0.5 |w - s|^2 jumps to the sample: w_{k+1} = s at row k.
    let src = "param w: [3] = 0\nsample s = randn(3)\nloss = 0.5 * sum((w - s)^2)\ntrain {\n  optimizer gd(lr = 1.0)\n  steps 4\n  record every 1 { w, s }\n}\n";
    let r = run_text(src);
    let (w, s) = (series(&r, "w"), series(&r, "s"));
    for k in 0..4 {
        assert_traj_close(
            &[w[k + 1].clone()],
            &[s[k].clone()],
            REL,
            &format!("row {k}"),
        );
    }
}

#[test]
fn the_seed_const_sets_the_default_and_seed_overrides_it() {
    let src = "data A = randn(3)\nparam w: [] = 1\nloss = w^2\ntrain {\n  optimizer gd(lr = 0.1)\n  steps 1\n  record every 1 { A }\n}\n";
    let seven = at(&run_with(src, &["seed=7"], None), 0, "A");
    let zero = at(&run_text(src), 0, "A");
    assert_ne!(seven, zero);
    let with_const = format!("const seed = 7\n{src}");
    assert_eq!(at(&run_text(&with_const), 0, "A"), seven);
    assert_eq!(at(&run_with(&with_const, &["seed=0"], None), 0, "A"), zero);
}

#[test]
fn adding_a_param_changes_no_other_params_noise() {
    let base = "data c = [1.0, 3.0]\nparam w: [2] = [1.0, -2.0]\n";
    let tail = "train {\n  optimizer langevin(lr = 0.1, beta = 1.0)\n  steps 3\n  record every 1 { w }\n}\n";
    let a = run_text(&format!("{base}loss = 0.5 * sum(c * w^2)\n{tail}"));
    let b = run_text(&format!(
        "param v: [3] = 1.0\n{base}loss = 0.5 * sum(c * w^2) + 0.5 * sum(v^2)\n{tail}"
    ));
    assert_eq!(bits(&series(&a, "w")), bits(&series(&b, "w")));
}

#[test]
fn random_draws_have_their_ranges_and_distributions() {
    let defs = "data U = rand(2000)\ndata N = randn(2000)\ndata Bn = bernoulli(0.3, 2000)\ndata Ri = randint(2, 5, 300)\ndata Ch = choose(10, 4)\ndata P = permutation(6)\ndata Q = orthogonal(4, 2)";
    let r = data_values(defs, "U, N, Bn, Ri, Ch, P, Q");
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let u = at(&r, 0, "U");
    assert!(u.iter().all(|x| *x > 0.0 && *x < 1.0));
    assert!((mean(&u) - 0.5).abs() < 0.03, "mean of rand {}", mean(&u));
    let n = at(&r, 0, "N");
    let var = n.iter().map(|x| x * x).sum::<f64>() / n.len() as f64;
    assert!(
        mean(&n).abs() < 0.1 && (var - 1.0).abs() < 0.1,
        "randn: {} {var}",
        mean(&n)
    );
    let b = at(&r, 0, "Bn");
    assert!(b.iter().all(|x| *x == 0.0 || *x == 1.0));
    assert!(
        (mean(&b) - 0.3).abs() < 0.04,
        "bernoulli(0.3): {}",
        mean(&b)
    );
    let ri = at(&r, 0, "Ri");
    let seen: BTreeSet<i64> = ri.iter().map(|x| *x as i64).collect();
    assert_eq!(seen, BTreeSet::from([2, 3, 4]), "randint(2, 5)");
    let ch: Vec<i64> = at(&r, 0, "Ch").iter().map(|x| *x as i64).collect();
    let distinct: BTreeSet<i64> = ch.iter().copied().collect();
    assert!(
        distinct.len() == 4 && ch.iter().all(|x| (0..10).contains(x)),
        "{ch:?}"
    );
    let p: Vec<i64> = at(&r, 0, "P").iter().map(|x| *x as i64).collect();
    assert!(is_permutation(&p, 6), "{p:?}");
    // orthogonal(4, 2): orthonormal columns.
    let q = at(&r, 0, "Q");
    for a in 0..2 {
        for b in 0..2 {
            let dot: f64 = (0..4).map(|i| q[i * 2 + a] * q[i * 2 + b]).sum();
            let want = if a == b { 1.0 } else { 0.0 };
            assert!((dot - want).abs() < 1e-14, "Q'Q[{a},{b}] = {dot}");
        }
    }
}

fn data_values(defs: &str, record: &str) -> RunResult {
    run_text(&format!(
        "{defs}\nparam w: [] = 1\nloss = w^2\ntrain {{\n  optimizer gd(lr = 0.1)\n  steps 1\n  record every 1 {{ {record} }}\n}}\n"
    ))
}

#[test]
fn two_draws_inside_one_item_are_different_numbers() {
    // Observed: the first draw of an item is the item's single draw (draws are numbered
    // within the item), so adding a second draw does not change the first.
    let one = at(&data_values("data R = randn(3)", "R"), 0, "R");
    let two = at(
        &data_values("data R = randn(3) + 0 * randn(3)", "R"),
        0,
        "R",
    );
    assert_eq!(one, two);
    // Two draws of one item are not the same numbers.
    let d = at(&data_values("data D = randn(4) - randn(4)", "D"), 0, "D");
    assert!(d.iter().all(|x| x.abs() > 1e-12), "{d:?}");
    // randn(n, 1) @ randn(1, n): equal draws would make M = u u' symmetric PSD.
    let m = at(
        &data_values("data M = randn(4, 1) @ randn(1, 4)", "M"),
        0,
        "M",
    );
    let asym = (0..4)
        .flat_map(|i| (0..4).map(move |j| (i, j)))
        .map(|(i, j)| (m[i * 4 + j] - m[j * 4 + i]).abs())
        .fold(0.0, f64::max);
    assert!(asym > 1e-6, "M is symmetric: {m:?}");
    // randn(3, 2) @ randn(2, 3): the first factor is the item's first draw; the second
    // is not the same numbers reshaped.
    let u = at(&data_values("data M = randn(3, 2)", "M"), 0, "M");
    let m = at(
        &data_values("data M = randn(3, 2) @ randn(2, 3)", "M"),
        0,
        "M",
    );
    let same: Vec<f64> = (0..3)
        .flat_map(|i| (0..3).map(move |j| (i, j)))
        .map(|(i, j)| (0..2).map(|k| u[i * 2 + k] * u[k * 3 + j]).sum())
        .collect();
    assert!(
        m.iter().zip(&same).any(|(a, b)| (a - b).abs() > 1e-6),
        "the second factor repeats the first's numbers: {m:?}"
    );
}

#[test]
fn comprehension_draws_differ_per_index() {
    let r = data_values("data R = [randn(3) for i in 0..2]", "R");
    let v = at(&r, 0, "R");
    assert_eq!(v.len(), 6);
    assert!(
        (0..3).all(|j| v[j] != v[3 + j]),
        "the two rows are the same draw: {v:?}"
    );
    // Also in a param initializer: two different orthogonal matrices.
    let src = "param Ws: [2, 2, 2] = [orthogonal(2) for _ in 0..2]\nloss = sum(Ws^2)\ntrain {\n  optimizer gd(lr = 0.1)\n  steps 1\n  record every 1 { Ws }\n}\n";
    let ws = at(&run_text(src), 0, "Ws");
    assert_ne!(ws[..4], ws[4..]);
    for q in [&ws[..4], &ws[4..]] {
        // Q'Q = I.
        let g = |a: usize, b: usize| q[a] * q[b] + q[2 + a] * q[2 + b];
        assert!((g(0, 0) - 1.0).abs() < 1e-14 && (g(1, 1) - 1.0).abs() < 1e-14);
        assert!(g(0, 1).abs() < 1e-14);
    }
}

// ---------------------------------------------------------------------------------------
// 3. Batches (section 3.8).
// ---------------------------------------------------------------------------------------

/// The recorded batch rows (as row indices of `X = 0, 1, ..., rows - 1`) at every row.
fn batch_program(rows: usize, size: usize, shuffle: bool, steps: u64) -> Vec<Vec<i64>> {
    let src = format!(
        "data X = reshape(linspace(0, {last}, {rows}), [{rows}, 1])\nparam w: [] = 0\nbatch xb from X size {size}{sh}\nlet b = xb\nloss = 0.5 * (w - mean(xb))^2\ntrain {{\n  optimizer sgd(lr = 0.1)\n  steps {steps}\n  record every 1 {{ b }}\n}}\n",
        last = rows - 1,
        sh = if shuffle { " shuffle" } else { "" }
    );
    let r = run_text(&src);
    assert_eq!(r.trajectory.rows.len() as u64, steps + 1);
    series(&r, "b")
        .into_iter()
        .map(|row| {
            assert_eq!(row.len(), size);
            row.into_iter()
                .map(|x| {
                    assert!(x.fract() == 0.0 && (0.0..rows as f64).contains(&x), "{x}");
                    x as i64
                })
                .collect()
        })
        .collect()
}

fn is_permutation(v: &[i64], n: usize) -> bool {
    let mut s = v.to_vec();
    s.sort();
    s == (0..n as i64).collect::<Vec<_>>()
}

#[test]
fn shuffled_batches_walk_a_fresh_permutation_each_epoch() {
    // 8 rows, size 2: rows 0..3 are epoch 0, rows 4..7 epoch 1.
    let b = batch_program(8, 2, true, 8);
    let epoch0: Vec<i64> = b[0..4].concat();
    let epoch1: Vec<i64> = b[4..8].concat();
    assert!(is_permutation(&epoch0, 8), "epoch 0: {epoch0:?}");
    assert!(is_permutation(&epoch1, 8), "epoch 1: {epoch1:?}");
    assert_ne!(
        epoch0, epoch1,
        "the second epoch repeats the first permutation"
    );
    assert_ne!(epoch0, (0..8).collect::<Vec<_>>(), "no shuffle at all");
}

#[test]
fn shuffled_batches_wrap_into_the_next_epoch() {
    // 5 rows, size 2: every batch is full, and the concatenated stream of indices is a
    // sequence of permutations of 0..5.
    let b = batch_program(5, 2, true, 9);
    let all: Vec<i64> = b.concat();
    assert_eq!(all.len(), 20);
    for (e, chunk) in all.chunks(5).enumerate() {
        assert!(is_permutation(chunk, 5), "epoch {e}: {chunk:?} in {all:?}");
    }
}

#[test]
fn plain_batches_draw_uniformly_with_replacement() {
    let b = batch_program(8, 4, false, 40);
    let all: Vec<i64> = b.concat();
    // Every index shows up over 164 draws, the batches vary, and some batch repeats
    // an index (with replacement).
    let seen: BTreeSet<i64> = all.iter().copied().collect();
    assert_eq!(seen, (0..8).collect::<BTreeSet<_>>());
    assert!(b.windows(2).any(|p| p[0] != p[1]));
    assert!(
        b.iter().any(|row| {
            let s: BTreeSet<i64> = row.iter().copied().collect();
            s.len() < row.len()
        }),
        "no batch ever repeated an index: {b:?}"
    );
    // Roughly uniform: each index between 8 and 40 times of 164 (expected 20.5).
    for i in 0..8 {
        let n = all.iter().filter(|x| **x == i).count();
        assert!((8..=40).contains(&n), "index {i} drawn {n} times");
    }
}

#[test]
fn the_tensors_of_one_batch_share_rows_and_separate_batches_draw_independently() {
    let src = "data X = reshape(linspace(0, 7, 8), [8, 1])\ndata y = 10 * linspace(0, 7, 8)\nparam w: [] = 0\nbatch xb, yb from X, y size 2 shuffle\nbatch zb from X size 2 shuffle\nloss = 0.5 * (w - mean(xb) - mean(zb) - mean(yb))^2\ntrain {\n  optimizer sgd(lr = 0.1)\n  steps 4\n  record every 1 { xb, yb, zb }\n}\n";
    let r = run_text(src);
    let (xb, yb, zb) = (series(&r, "xb"), series(&r, "yb"), series(&r, "zb"));
    for (k, (x, y)) in xb.iter().zip(&yb).enumerate() {
        let want: Vec<f64> = x.iter().map(|v| 10.0 * v).collect();
        assert_eq!(y, &want, "row {k}: yb is not y at xb's rows");
    }
    let (x0, z0): (Vec<f64>, Vec<f64>) = (xb[..4].concat(), zb[..4].concat());
    let to_int = |v: &[f64]| v.iter().map(|x| *x as i64).collect::<Vec<_>>();
    assert!(is_permutation(&to_int(&x0), 8) && is_permutation(&to_int(&z0), 8));
    assert_ne!(x0, z0, "two batch items drew the same permutation");
}

#[test]
fn the_batch_recorded_at_row_k_is_the_one_update_k_plus_1_uses() {
    // sgd with lr = 1 on 0.5 (w - mean(xb))^2 jumps to the batch mean.
    let src = "data X = reshape(linspace(0, 7, 8), [8, 1])\nparam w: [] = 0\nbatch xb from X size 2\nloss = 0.5 * (w - mean(xb))^2\ntrain {\n  optimizer sgd(lr = 1.0)\n  steps 6\n  record every 1 { w, xb }\n}\n";
    let r = run_text(src);
    for k in 0..6 {
        let b = at(&r, k, "xb");
        assert_eq!(scalar_at(&r, k + 1, "w"), (b[0] + b[1]) / 2.0, "row {k}");
    }
}

#[test]
fn adding_a_batch_item_changes_no_other_batch() {
    let base =
        "data X = reshape(linspace(0, 7, 8), [8, 1])\nparam w: [] = 0\nbatch xb from X size 3\n";
    let tail = "train {\n  optimizer sgd(lr = 0.1)\n  steps 5\n  record every 1 { xb }\n}\n";
    let a = run_text(&format!("{base}loss = 0.5 * (w - mean(xb))^2\n{tail}"));
    let b = run_text(&format!(
        "batch zb from X size 2 shuffle\n{base}loss = 0.5 * (w - mean(xb) - mean(zb))^2\n{tail}"
    ));
    assert_eq!(bits(&series(&a, "xb")), bits(&series(&b, "xb")));
}

#[test]
fn a_plain_batch_may_be_larger_than_the_data() {
    let b = batch_program(3, 5, false, 3);
    assert!(b.iter().all(|row| row.len() == 5));
}

#[test]
fn a_shuffled_batch_larger_than_the_data_is_an_error() {
    let src = "data X = reshape(linspace(0, 7, 8), [8, 1])\nparam w: [] = 0\nbatch xb from X size 9 shuffle\nloss = 0.5 * (w - mean(xb))^2\ntrain {\n  optimizer sgd(lr = 0.1)\n  steps 4\n  record every 1 { w }\n}\n";
    let r = try_run_at(&inline_path(), src, &[], None);
    assert!(
        r.is_err() || r.as_ref().is_ok_and(|r| r.status == Status::Error),
        "size 9 of 8 rows with shuffle ran: {:?}",
        r.map(|r| (r.status, r.message))
    );
}

// ---------------------------------------------------------------------------------------
// 4. Records and stopping (section 3.10).
// ---------------------------------------------------------------------------------------

const SCALAR: &str = "param w: [] = 1\nloss = 0.5 * w^2\n";

fn log_schedule(s: u64, n: u64) -> Vec<u64> {
    let mut out: BTreeSet<u64> = (0..n)
        .map(|i| (s as f64).powf(i as f64 / (n - 1) as f64).round() as u64)
        .collect();
    out.insert(0);
    out.into_iter().collect()
}

#[test]
fn record_log_records_at_rounded_powers_of_the_steps() {
    let src = format!(
        "{SCALAR}train {{\n  optimizer gd(lr = 0.001)\n  steps 1000\n  record log 5 {{ w }}\n}}\n"
    );
    let r = run_text(&src);
    let want = log_schedule(1000, 5);
    assert_eq!(want, [0, 1, 6, 32, 178, 1000]);
    assert_eq!(steps_of(&r), want);
    // Each row holds θ_k: w_k = 0.999^k.
    for (i, k) in want.iter().enumerate() {
        let w = scalar_at(&r, i, "w");
        assert!(close(w, 0.999f64.powi(*k as i32), 1e-12), "step {k}: {w}");
    }
    // With --steps 100 the schedule uses S = 100.
    let r = run_with(&src, &[], Some(100));
    assert_eq!(steps_of(&r), log_schedule(100, 5));
    assert_eq!(steps_of(&r), [0, 1, 3, 10, 32, 100]);
}

#[test]
fn two_record_clauses_fill_only_the_cells_that_are_due() {
    let src = format!(
        "{SCALAR}train {{\n  optimizer gd(lr = 0.5)\n  steps 15\n  record every 3 {{ a = w }}\n  record every 5 {{ b = 2 * w }}\n}}\n"
    );
    let r = run_text(&src);
    assert_eq!(steps_of(&r), [0, 3, 5, 6, 9, 10, 12, 15]);
    assert_eq!(r.trajectory.columns, ["a", "b"]);
    for (i, k) in steps_of(&r).into_iter().enumerate() {
        let w = 0.5f64.powi(k as i32);
        let a = (k % 3 == 0).then_some(w);
        let b = (k % 5 == 0).then_some(2.0 * w);
        assert_eq!(cells_at(&r, i, "a"), [a], "a at step {k}");
        assert_eq!(cells_at(&r, i, "b"), [b], "b at step {k}");
    }
}

#[test]
fn bare_record_entries_are_named_by_their_source_text() {
    let src = "param w: [2] = [1.0, -2.0]\nloss = 0.5 * sum(w^2)\ntrain {\n  optimizer gd(lr = 0.5)\n  steps 1\n  record every 1 { loss, 2 * w, n = norm(w), w[0] + 1 }\n}\n";
    let r = run_text(src);
    assert_eq!(
        r.trajectory.columns,
        ["loss", "2*w[0]", "2*w[1]", "n", "w[0]+1"]
    );
    assert_eq!(
        r.trajectory.rows[0].1,
        [
            Some(2.5),
            Some(2.0),
            Some(-4.0),
            Some(5f64.sqrt()),
            Some(2.0)
        ]
    );
}

#[test]
fn the_last_step_is_always_recorded() {
    let src = format!(
        "{SCALAR}train {{\n  optimizer gd(lr = 0.5)\n  steps 10\n  record every 3 {{ w }}\n}}\n"
    );
    let r = run_text(&src);
    assert_eq!(r.status, Status::Finished);
    assert_eq!(r.steps, 10);
    assert_eq!(steps_of(&r), [0, 3, 6, 9, 10]);
    assert_eq!(scalar_at(&r, 4, "w"), 0.5f64.powi(10));
}

#[test]
fn steps_from_the_command_line_override_the_train_block() {
    let src = format!(
        "{SCALAR}train {{\n  optimizer gd(lr = 0.5)\n  steps 100\n  record every 2 {{ w }}\n}}\n"
    );
    let r = run_with(&src, &[], Some(7));
    assert_eq!(r.status, Status::Finished);
    assert_eq!(r.steps, 7);
    assert_eq!(steps_of(&r), [0, 2, 4, 6, 7]);
    assert_eq!(scalar_at(&r, 4, "w"), 0.5f64.powi(7));
    assert_eq!(r.params[0].1.to_f64().iter().next(), Some(&0.5f64.powi(7)));
    // --steps 0: only row 0.
    let r = run_with(&src, &[], Some(0));
    assert_eq!(
        (r.status, r.steps, steps_of(&r)),
        (Status::Finished, 0, vec![0])
    );
    // Longer than the block's steps, too.
    let r = run_with(&src, &[], Some(101));
    assert_eq!(r.steps, 101);
    assert_eq!(steps_of(&r).last(), Some(&101));
}

#[test]
fn a_stop_condition_on_an_observable_is_tested_at_record_steps_only() {
    // W_k = (1 + k/8) I: spectral(W) = 1 + k/8 exceeds 3.06 first at k = 17; loss =
    // -2 (1 + k/8) falls below -6.1 first at k = 17 as well.
    let prog = |cond: &str| {
        format!(
            "param W: [2, 2] = eye(2)\nloss = -trace(W)\ntrain {{\n  optimizer gd(lr = 0.125)\n  steps 100\n  stop when {cond}\n  record every 5 {{ s = spectral(W) }}\n}}\n"
        )
    };
    // With two clauses a step is a record step if either is due: every 6 and every 7
    // test at 0, 6, 7, 12, 14, 18, ... — the run stops at 18.
    let two = prog("spectral(W) > 3.06").replace(
        "record every 5 { s = spectral(W) }",
        "record every 6 { s = spectral(W) }\n  record every 7 { w = W[0, 0] }",
    );
    let r = run_text(&two);
    assert_eq!((r.status, r.steps), (Status::Stopped, 18));
    assert_eq!(steps_of(&r), [0, 6, 7, 12, 14, 18]);
    // An observable: tested at 0, 5, 10, 15, 20 — the run stops at 20.
    let r = run_text(&prog("spectral(W) > 3.06"));
    assert_eq!(r.status, Status::Stopped);
    assert_eq!(r.steps, 20);
    assert_eq!(steps_of(&r), [0, 5, 10, 15, 20]);
    assert!((scalar_at(&r, 4, "s") - 3.5).abs() < 1e-12);
    // The loss: tested every step — the run stops at 17, which is recorded.
    let r = run_text(&prog("loss < -6.1"));
    assert_eq!(r.status, Status::Stopped);
    assert_eq!(r.steps, 17);
    assert_eq!(steps_of(&r), [0, 5, 10, 15, 17]);
    assert!((scalar_at(&r, 4, "s") - 3.125).abs() < 1e-12);
    // A condition true at step 0 stops before any update.
    let r = run_text(&prog("loss < 0"));
    assert_eq!(
        (r.status, r.steps, steps_of(&r)),
        (Status::Stopped, 0, vec![0])
    );
    // `gnorm` and `step` are tested every step as well.
    let r = run_text(&prog("step >= 17"));
    assert_eq!((r.status, r.steps), (Status::Stopped, 17));
    let r = run_text(&prog("gnorm < 2 and step > 12"));
    assert_eq!((r.status, r.steps), (Status::Stopped, 13));
}

#[test]
fn stopped_wins_over_finished_at_the_last_step() {
    // Section 3.10, step 2: at k = steps the row is recorded and the run ends "with status
    // stopped or finished (stopped wins when both hold)". spectral(W) = 3.25 > 3.06 at
    // k = 18, the last step, which is recorded.
    let src = "param W: [2, 2] = eye(2)\nloss = -trace(W)\ntrain {\n  optimizer gd(lr = 0.125)\n  steps 18\n  stop when spectral(W) > 3.06\n  record every 5 { s = spectral(W) }\n}\n";
    let r = run_text(src);
    assert_eq!(steps_of(&r), [0, 5, 10, 15, 18]);
    assert!((scalar_at(&r, 4, "s") - 3.25).abs() < 1e-12);
    assert_eq!(r.status, Status::Stopped);
}

// ---------------------------------------------------------------------------------------
// 5. Consts computed from data.
// ---------------------------------------------------------------------------------------

#[test]
fn a_const_from_an_observable_of_data_is_a_learning_rate() {
    // Diagonal X: spectral(X) = 3, so η = 1/3.
    let src = "data X = [[3.0, 0.0], [0.0, 0.5]]\nconst η = 1 / spectral(X)\nparam w: [2] = [1.0, -2.0]\nloss = 0.5 * sum((X @ w)^2)\ntrain {\n  optimizer gd(lr = η)\n  steps 2\n  record every 1 { w, eta = η, s = spectral(X) }\n}\n";
    let r = run_text(src);
    let eta = scalar_at(&r, 0, "eta");
    assert!(close(eta, 1.0 / 3.0, 1e-15), "η = {eta}");
    assert!(close(scalar_at(&r, 0, "s"), 3.0, 1e-15));
    // grad = X'X w = [9 w0, 0.25 w1].
    let want = by_hand(&[9.0, 0.25], &W0, 2, |_, w, g| {
        for (w, g) in w.iter_mut().zip(g) {
            *w -= eta * g;
        }
    });
    assert_traj_close(&series(&r, "w"), &want, REL, "gd(lr = η)");
}

#[test]
fn a_const_from_random_data_is_one_over_its_recorded_value() {
    let src = "data X = randn(5, 3)\ndata y = randn(5)\nconst η = 1 / spectral(X)^2\nparam w: [3] = 0\nloss = 0.5 * sum((X @ w - y)^2)\ntrain {\n  optimizer gd(lr = η)\n  steps 1\n  record every 1 { w, X, y, s = spectral(X), eta = η }\n}\n";
    let r = run_text(src);
    let (x, y, s) = (at(&r, 0, "X"), at(&r, 0, "y"), scalar_at(&r, 0, "s"));
    let eta = scalar_at(&r, 0, "eta");
    assert!(close(eta, 1.0 / (s * s), 1e-14), "η = {eta}, spectral {s}");
    // From w = 0 the gradient is -X'y: w_1 = η X'y.
    let xty: Vec<f64> = (0..3)
        .map(|j| (0..5).map(|i| x[i * 3 + j] * y[i]).sum())
        .collect();
    let want: Vec<f64> = xty.iter().map(|v| eta * v).collect();
    assert_traj_close(&[at(&r, 1, "w")], &[want], 1e-13, "first update");
}

// ---------------------------------------------------------------------------------------
// 6. Files loaded at run time.
// ---------------------------------------------------------------------------------------

#[test]
fn csv_and_npy_files_load_relative_to_the_program() {
    use ndarray::ShapeBuilder;
    use ndarray_npy::WriteNpyExt;
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("semantics_load");
    std::fs::create_dir_all(dir.join("files")).expect("dir");
    std::fs::write(
        dir.join("files/table.csv"),
        "first,second,third\n1.5,2,3\n4,5,6.25\n",
    )
    .expect("csv");
    let write = |name: &str, f: &dyn Fn(std::fs::File)| {
        f(std::fs::File::create(dir.join("files").join(name)).expect("file"))
    };
    write("w0.npy", &|f| {
        ndarray::arr1(&[0.5f64, -1.5, 2.0])
            .write_npy(f)
            .expect("npy")
    });
    // Fortran order: the logical matrix is [[1, 2, 3], [4, 5, 6]].
    let fortran =
        ndarray::Array2::from_shape_vec((2, 3).f(), vec![1.0f64, 4.0, 2.0, 5.0, 3.0, 6.0])
            .expect("shape");
    assert_eq!(fortran[[0, 1]], 2.0);
    write("f.npy", &|f| fortran.write_npy(f).expect("npy"));
    let header = std::fs::read(dir.join("files/f.npy")).expect("read");
    assert!(
        String::from_utf8_lossy(&header[..80]).contains("'fortran_order': True"),
        "the test file is not in Fortran order"
    );
    write("i.npy", &|f| {
        ndarray::arr1(&[1i64, 0]).write_npy(f).expect("npy")
    });
    write("b.npy", &|f| {
        ndarray::arr1(&[true, false, true])
            .write_npy(f)
            .expect("npy")
    });
    write("h.npy", &|f| {
        ndarray::arr2(&[[0.5f32, -0.25], [3.0, 1e-3]])
            .write_npy(f)
            .expect("npy")
    });

    let src = "data T = load(\"files/table.csv\")\ndata F = load(\"files/f.npy\")\ndata I = load(\"files/i.npy\")\ndata Bo = load(\"files/b.npy\")\ndata H = load(\"files/h.npy\")\nparam w: [3] = load(\"files/w0.npy\")\nloss = 0.5 * sum((T @ w)^2)\ntrain {\n  optimizer gd(lr = 0.01)\n  steps 1\n  record every 1 { T, F, w, swapped = T[I], s = sum(T @ w), Bo, H }\n}\n";
    let r = run_at(&dir.join("loads.traj"), src, &[], None);
    let t = [1.5, 2.0, 3.0, 4.0, 5.0, 6.25];
    assert_eq!(at(&r, 0, "T"), t);
    assert_eq!(at(&r, 0, "F"), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert_eq!(at(&r, 0, "swapped"), [4.0, 5.0, 6.25, 1.5, 2.0, 3.0]);
    assert_eq!(at(&r, 0, "Bo"), [1.0, 0.0, 1.0]);
    // f32 files become the program's f64, value for value.
    assert_eq!(at(&r, 0, "H"), [0.5, -0.25, 3.0, f64::from(1e-3f32)]);
    let w0 = [0.5, -1.5, 2.0];
    assert_eq!(at(&r, 0, "w"), w0);
    let tw: Vec<f64> = (0..2)
        .map(|i| (0..3).map(|j| t[i * 3 + j] * w0[j]).sum())
        .collect();
    assert!(close(scalar_at(&r, 0, "s"), tw.iter().sum(), REL));
    // One gd step: w - 0.01 T'(T w).
    let w1: Vec<f64> = (0..3)
        .map(|j| w0[j] - 0.01 * (0..2).map(|i| t[i * 3 + j] * tw[i]).sum::<f64>())
        .collect();
    assert_traj_close(&[at(&r, 1, "w")], &[w1], REL, "gd on loaded data");
}
