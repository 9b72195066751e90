//! Every program of `examples/` runs (with the JIT, fewer steps where the phenomenon shows
//! earlier) and shows what its header says, asserted on the recorded values.

use std::path::PathBuf;

use traj::diag::SourceMap;
use traj::sema::Options;
use traj::sema::check::check_source;
use traj::session::run;
use traj::train::{Backend, RunOptions, RunResult, Status};

fn example_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("examples/{name}.traj"))
}

/// Runs `text` as if it were `examples/NAME.traj`, with const overrides and `--steps`.
fn run_text(name: &str, text: &str, sets: &[&str], steps: Option<u64>) -> RunResult {
    let path = example_path(name);
    let mut sources = SourceMap::default();
    let options = Options {
        overrides: sets.iter().map(|s| s.to_string()).collect(),
        check_sweep: false,
    };
    let checked = check_source(
        &path.display().to_string(),
        Some(path.clone()),
        text,
        &options,
        &mut sources,
    )
    .unwrap_or_else(|d| {
        panic!(
            "{name}: {}",
            d.iter()
                .map(|d| d.render(&sources, false))
                .collect::<String>()
        )
    });
    let r = run(
        &checked,
        &sources,
        &RunOptions {
            steps,
            backend: Backend::Jit,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(
        matches!(r.status, Status::Finished | Status::Stopped),
        "{name} {sets:?}: {:?} {:?}",
        r.status,
        r.message
    );
    r
}

/// Runs `examples/NAME.traj` with const overrides and `--steps`.
fn run_example(name: &str, sets: &[&str], steps: Option<u64>) -> RunResult {
    let text = std::fs::read_to_string(example_path(name)).expect("readable");
    run_text(name, &text, sets, steps)
}

/// The recorded cells of column `name`: (step, value), rows where it was not due skipped.
fn column(r: &RunResult, name: &str) -> Vec<(u64, f64)> {
    let j = r
        .trajectory
        .columns
        .iter()
        .position(|c| c == name)
        .unwrap_or_else(|| panic!("no column {name} in {:?}", r.trajectory.columns));
    r.trajectory
        .rows
        .iter()
        .filter_map(|(step, row)| row[j].map(|v| (*step, v)))
        .collect()
}

fn values(r: &RunResult, name: &str) -> Vec<f64> {
    column(r, name).into_iter().map(|(_, v)| v).collect()
}

fn first(r: &RunResult, name: &str) -> f64 {
    values(r, name)[0]
}

fn last(r: &RunResult, name: &str) -> f64 {
    *values(r, name).last().expect("a recorded value")
}

/// The first recorded step at which `pred` holds for column `name`.
fn first_step(r: &RunResult, name: &str, pred: impl Fn(f64) -> bool) -> Option<u64> {
    column(r, name)
        .into_iter()
        .find(|(_, v)| pred(*v))
        .map(|(s, _)| s)
}

#[test]
fn every_example_has_a_test_here_and_a_header() {
    let tested = [
        "balancedness",
        "deep_matrix_completion",
        "diagonal_sparse",
        "edge_of_stability",
        "implicit_acceleration",
        "langevin_double_well",
        "lazy_vs_rich",
        "logistic_max_margin",
        "optimizers",
        "random_labels",
        "saxe_flow",
        "saxe_modes",
        "subgradients",
        "teacher_student",
    ];
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .expect("examples/")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "traj"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    found.sort();
    assert_eq!(
        found, tested,
        "a new example needs its test in tests/examples.rs"
    );
    for name in tested {
        let text = std::fs::read_to_string(example_path(name)).expect("readable");
        let header: Vec<&str> = text.lines().take_while(|l| l.starts_with('#')).collect();
        assert!(
            header.len() >= 4,
            "{name}: a header of {} lines",
            header.len()
        );
        assert!(
            header.iter().any(|l| l.contains("Look for")),
            "{name}: the header says what to look for"
        );
        assert!(
            text.contains("train {"),
            "{name}: an example is a program that trains"
        );
    }
}

#[test]
fn balancedness_is_conserved_and_drifts_more_with_a_larger_step() {
    let r = run_example("balancedness", &[], None);
    let (l0, l1) = (first(&r, "loss"), last(&r, "loss"));
    assert!(l1 < 1e-20 * l0, "loss {l0} -> {l1}");
    let imb0 = first(&r, "imb0");
    for v in values(&r, "imb") {
        assert!((v - imb0).abs() < 0.02 * imb0, "imb {v} vs imb0 {imb0}");
    }
    let drift = last(&r, "drift");
    assert!(drift < 0.02, "drift {drift}");
    // The layers grow (|W[1]| from ~0.9 to ~2.8) while the imbalance stays put.
    assert!(last(&r, "n1") > 2.0 * first(&r, "n1"));
    let big = run_example("balancedness", &["lr=0.05"], None);
    let drift_big = last(&big, "drift");
    assert!(
        drift_big > 3.0 * drift,
        "drift {drift} at lr 0.01, {drift_big} at 0.05"
    );
}

#[test]
fn deeper_factorization_completes_the_matrix_better() {
    let test: Vec<f64> = [1, 2, 3]
        .iter()
        .map(|depth| {
            let r = run_example("deep_matrix_completion", &[&format!("depth={depth}")], None);
            // Every depth fits the observed entries.
            assert!(
                last(&r, "loss") < 1e-5,
                "depth {depth}: loss {}",
                last(&r, "loss")
            );
            last(&r, "test")
        })
        .collect();
    // Depth 1 leaves the unseen entries at their (small) init: relative error ~1.
    assert!(test[0] > 0.9, "depth 1: test {}", test[0]);
    assert!(test[1] < 0.5 * test[0], "depth 2: test {:?}", test);
    assert!(test[2] < 0.01, "depth 3: test {:?}", test);
    assert!(test[2] < 0.1 * test[1], "depth 3 against 2: {:?}", test);
}

#[test]
fn deep_matrix_completion_finds_the_rank() {
    let r = run_example("deep_matrix_completion", &[], None);
    assert_eq!(r.status, Status::Stopped);
    let erank = last(&r, "erank");
    assert!((erank - 3.0).abs() < 0.2, "erank {erank}");
    // Three large singular values, a tail near 0.
    assert!(last(&r, "sv[2]") > 10.0, "sv[2] {}", last(&r, "sv[2]"));
    assert!(last(&r, "sv[3]") < 0.05, "sv[3] {}", last(&r, "sv[3]"));
}

#[test]
fn small_init_diagonal_network_finds_the_sparse_solution() {
    let small = run_example("diagonal_sparse", &[], None);
    let l1 = last(&small, "l1");
    assert!((l1 - 5.0).abs() < 0.05, "l1 {l1} against |w*|_1 = 5");
    assert!(last(&small, "err") < 0.01, "err {}", last(&small, "err"));
    assert_eq!(last(&small, "support"), 5.0);
    let large = run_example("diagonal_sparse", &["α=1"], None);
    assert!(last(&large, "loss") < 1e-10, "α = 1 interpolates too");
    assert!(
        last(&large, "l1") > 1.5 * l1,
        "α = 1: l1 {}",
        last(&large, "l1")
    );
    assert!(
        last(&large, "err") > 0.5,
        "α = 1: err {}",
        last(&large, "err")
    );
}

#[test]
fn sharpness_reaches_two_over_lr_and_the_loss_spikes() {
    let r = run_example("edge_of_stability", &[], Some(1_200));
    let limit = first(&r, "limit");
    assert!((limit - 2.0 / 0.3).abs() < 1e-12);
    let sharp = values(&r, "sharpness");
    // Progressive sharpening: from well below 2/lr ...
    assert!(sharp[0] < 0.75 * limit, "initial sharpness {}", sharp[0]);
    // ... to 2/lr within 10 %.
    let reach = first_step(&r, "sharpness", |s| (s / limit - 1.0).abs() <= 0.1)
        .expect("sharpness reaches 2/lr within 10 %");
    let top = sharp.iter().cloned().fold(f64::MIN, f64::max);
    assert!(top >= limit && top <= 1.15 * limit, "top sharpness {top}");
    // The loss rises at least once after that (and overall still falls).
    let loss = column(&r, "loss");
    let rises: Vec<u64> = loss
        .windows(2)
        .filter(|w| w[1].1 > w[0].1 && w[0].0 >= reach)
        .map(|w| w[1].0)
        .collect();
    assert!(!rises.is_empty(), "the loss never rises after step {reach}");
    let biggest = loss.windows(2).map(|w| w[1].1 / w[0].1).fold(0.0, f64::max);
    assert!(
        biggest > 2.0,
        "the largest spike multiplies the loss by {biggest}"
    );
    assert!(loss.last().unwrap().1 < 0.05 * loss[0].1);
}

#[test]
fn products_reach_the_loss_threshold_in_fewer_steps() {
    let r = run_example("implicit_acceleration", &[], None);
    let reach = |col: &str| {
        let l0 = first(&r, col);
        first_step(&r, col, |v| v < 1e-5 * l0).unwrap_or_else(|| panic!("{col} never reaches"))
    };
    let (lin, d2, d3) = (reach("lin"), reach("depth2"), reach("depth3"));
    assert!(
        lin >= 3 * d2 && d2 > d3,
        "steps to 1e-5 of the initial loss: linear {lin}, depth 2 {d2}, depth 3 {d3}"
    );
    assert!(lin >= 5 * d3, "linear {lin}, depth 3 {d3}");
    // Same start, same loss at step 0; the scalar factors grow.
    assert_eq!(first(&r, "lin"), first(&r, "depth2"));
    assert!(last(&r, "a") > 1.2, "a {}", last(&r, "a"));
}

#[test]
fn langevin_hops_between_wells_at_small_beta_only() {
    let hot = run_example("langevin_double_well", &[], Some(20_000));
    let frac = last(&hot, "frac_right");
    assert!((frac - 0.5).abs() < 0.1, "β = 2: frac_right {frac}");
    assert_eq!(first(&hot, "frac_right"), 1.0);
    let cold = run_example("langevin_double_well", &["β=20.0"], Some(20_000));
    assert!(last(&cold, "frac_right") > 0.95, "β = 20");
}

#[test]
fn parameter_change_falls_like_one_over_sqrt_width_and_with_alpha() {
    let moved: Vec<f64> = [64, 256, 1024]
        .iter()
        .map(|h| {
            let r = run_example("lazy_vs_rich", &[&format!("h={h}")], None);
            assert!(
                last(&r, "loss") < 1e-3,
                "h = {h}: loss {}",
                last(&r, "loss")
            );
            last(&r, "moved")
        })
        .collect();
    // Width x4 -> moved / 2.
    for w in moved.windows(2) {
        let ratio = w[0] / w[1];
        assert!((1.6..2.4).contains(&ratio), "moved {moved:?}");
    }
    let by_alpha: Vec<(f64, f64)> = ["0.1", "10.0"]
        .iter()
        .map(|a| {
            let r = run_example("lazy_vs_rich", &[&format!("α={a}")], None);
            (last(&r, "moved"), last(&r, "ntk_change"))
        })
        .collect();
    let (rich, lazy) = (by_alpha[0], by_alpha[1]);
    assert!(
        rich.0 > 20.0 * lazy.0,
        "moved: α 0.1 {} α 10 {}",
        rich.0,
        lazy.0
    );
    assert!(rich.1 > 1.0, "ntk changes by O(1) at α 0.1: {}", rich.1);
    assert!(lazy.1 < 0.05, "ntk fixed at α 10: {}", lazy.1);
}

/// The largest min_i y_i <x_i, u> over unit vectors u of the plane.
fn max_margin_2d(x: &[[f64; 2]], y: &[f64]) -> f64 {
    let margin = |th: f64| {
        let (c, s) = (th.cos(), th.sin());
        x.iter()
            .zip(y)
            .map(|(p, yi)| yi * (p[0] * c + p[1] * s))
            .fold(f64::INFINITY, f64::min)
    };
    let (mut best, mut width) = (0.0, std::f64::consts::TAU);
    for _ in 0..6 {
        let lo = best - width / 2.0;
        let grid = (0..=2000).map(|i| lo + width * i as f64 / 2000.0);
        best = grid
            .fold((best, f64::MIN), |(bt, bm), th| {
                let m = margin(th);
                if m > bm { (th, m) } else { (bt, bm) }
            })
            .0;
        width /= 500.0;
    }
    margin(best)
}

#[test]
fn logistic_margin_gap_falls_along_the_log_grid() {
    let text = std::fs::read_to_string(example_path("logistic_max_margin"))
        .expect("readable")
        .replace(
            "  steps 100_000\n",
            "  steps 100_000\n  record every 1_000_000 { Xr = X, yr = y }\n",
        );
    let r = run_text("logistic_max_margin", &text, &[], None);
    let n = 60;
    let x: Vec<[f64; 2]> = (0..n)
        .map(|i| {
            [
                first(&r, &format!("Xr[{i},0]")),
                first(&r, &format!("Xr[{i},1]")),
            ]
        })
        .collect();
    let y: Vec<f64> = (0..n).map(|i| first(&r, &format!("yr[{i}]"))).collect();
    let best = max_margin_2d(&x, &y);
    assert!(best > 0.1, "separable: max margin {best}");
    // Step 1 already leaves w = 0 (the subgradient of max(z, 0) at 0 is not 0).
    let wn = column(&r, "wn");
    assert_eq!(wn[0], (0, 0.0));
    assert_eq!(wn[1].0, 1);
    assert!(wn[1].1 > 0.0);
    let margin = column(&r, "margin");
    let gaps: Vec<(u64, f64)> = margin
        .iter()
        .filter(|(s, _)| *s >= 10)
        .map(|(s, m)| (*s, best - m))
        .collect();
    assert!(gaps.len() > 50);
    for w in gaps.windows(2) {
        assert!(
            w[1].1 <= w[0].1 + 1e-12 && w[1].1 > 0.0,
            "gap {:?} then {:?}",
            w[0],
            w[1]
        );
    }
    let (g10, gend) = (gaps[0].1, gaps.last().unwrap().1);
    assert!(gend < 0.25 * g10, "gap {g10} at step 10, {gend} at the end");
    // |w| grows like log t: about the same increment per decade.
    let at = |s: u64| wn.iter().find(|(k, _)| *k >= s).unwrap().1;
    let (d1, d2) = (at(10_000) - at(1_000), at(100_000) - at(10_000));
    assert!((d2 / d1 - 1.0).abs() < 0.2, "per decade {d1} then {d2}");
}

#[test]
fn optimizers_beat_gd_where_they_should() {
    let mine = run_example("optimizers", &[], None);
    let gd = run_example("optimizers", &["plain=1"], None);
    // Heavy ball on the ill-conditioned quadratic.
    assert!(
        last(&mine, "quad") < 1e-6 * last(&gd, "quad"),
        "quad {} vs gd {}",
        last(&mine, "quad"),
        last(&gd, "quad")
    );
    // Perturbed GD leaves the strict saddle for a minimum (-1/4); GD converges to it (0).
    assert!(
        (last(&mine, "saddle") + 0.25).abs() < 1e-3,
        "saddle {}",
        last(&mine, "saddle")
    );
    assert!(
        last(&gd, "saddle").abs() < 1e-12,
        "gd saddle {}",
        last(&gd, "saddle")
    );
    assert_eq!(last(&gd, "s[0]"), 0.0);
    // Normalized GD on the flat quartic.
    assert!(
        last(&mine, "flat") < 1e-3 * last(&gd, "flat"),
        "flat {} vs gd {}",
        last(&mine, "flat"),
        last(&gd, "flat")
    );
    // Mirror descent stays on the simplex and finds the projection of q.
    for (m, p) in values(&mine, "mass").iter().zip(values(&mine, "pmin")) {
        assert!((m - 1.0).abs() < 1e-12 && p > 0.0, "mass {m}, min {p}");
    }
    let want = [0.6, 0.4, 0.0, 0.0, 0.0];
    for (k, w) in want.iter().enumerate() {
        let p = last(&mine, &format!("p[{k}]"));
        assert!((p - w).abs() < 1e-9, "p[{k}] = {p}");
    }
    // GD on the same param converges to q itself, off the simplex.
    assert!(
        (last(&gd, "mass") - 1.4).abs() < 1e-9,
        "gd mass {}",
        last(&gd, "mass")
    );
}

#[test]
fn random_labels_are_memorized_later_with_chance_test_accuracy() {
    let r = run_example("random_labels", &[], None);
    let t_true = first_step(&r, "train_true", |a| a == 1.0).expect("true labels fitted");
    let t_rand = first_step(&r, "train_rand", |a| a == 1.0).expect("random labels fitted");
    assert!(
        t_rand >= 3 * t_true,
        "fitted at {t_true} (true), {t_rand} (random)"
    );
    assert_eq!(last(&r, "train_rand"), 1.0);
    assert_eq!(last(&r, "train_true"), 1.0);
    let (tt, tr) = (last(&r, "test_true"), last(&r, "test_rand"));
    assert!(tt > 0.85, "test accuracy on true labels {tt}");
    assert!(
        (tr - 0.5).abs() < 0.05,
        "test accuracy of the random-label net {tr}"
    );
}

#[test]
fn saxe_modes_are_learned_in_order_of_strength() {
    let r = run_example("saxe_modes", &[], None);
    let s = [4.0, 2.0, 1.0, 0.5];
    let half: Vec<u64> = s
        .iter()
        .enumerate()
        .map(|(k, sk)| {
            let col = format!("mode[{k}]");
            assert!(first(&r, &col).abs() < 1e-6, "{col} starts at ~0");
            assert!(
                (last(&r, &col) - sk).abs() < 1e-6,
                "{col} ends at {}",
                last(&r, &col)
            );
            first_step(&r, &col, |v| v > sk / 2.0).expect("learned")
        })
        .collect();
    for w in half.windows(2) {
        assert!(w[1] as f64 > 1.4 * w[0] as f64, "half-way steps {half:?}");
    }
    // Stages: when the strongest mode is half learned, the weakest has not started.
    let at = |col: &str, step: u64| {
        column(&r, col)
            .into_iter()
            .find(|(k, _)| *k == step)
            .unwrap()
            .1
    };
    assert!(at("mode[3]", half[0]) < 1e-3, "mode 3 at step {}", half[0]);
    assert!(at("mode[0]", half[1]) > 0.99 * s[0]);
}

#[test]
fn subgradients_at_kinks_are_the_clarke_ones() {
    let r = run_example("subgradients", &[], None);
    assert_eq!(first(&r, "ga"), -1.0);
    assert_eq!(first(&r, "gb"), 0.5);
    assert_eq!(first(&r, "gc"), 0.5);
    let a = column(&r, "a");
    assert_eq!(a[1], (1, 0.5));
    assert_eq!(last(&r, "a"), 1.0);
    let wn = column(&r, "wn");
    assert_eq!(wn[0], (0, 0.0));
    assert_eq!(wn[1].0, 1);
    assert!(wn[1].1 > 0.1, "|w| after step 1: {}", wn[1].1);
    assert!(last(&r, "acc") >= 0.98);
    assert!(last(&r, "b") < -5.0);
}

#[test]
fn the_student_aligns_with_the_teacher() {
    let r = run_example("teacher_student", &[], None);
    assert!(last(&r, "loss") < 1e-4, "train {}", last(&r, "loss"));
    let t = values(&r, "test");
    assert!(
        *t.last().unwrap() < 1e-3 * t[0],
        "test {} -> {}",
        t[0],
        t.last().unwrap()
    );
    for k in 0..4 {
        let col = format!("align[{k}]");
        assert!(
            first(&r, &col) < 0.95,
            "{col} starts at {}",
            first(&r, &col)
        );
        assert!(last(&r, &col) > 0.99, "{col} ends at {}", last(&r, &col));
    }
}

#[test]
fn saxe_flow_follows_the_closed_form_learning_curves() {
    let r = run_example("saxe_flow", &[], None);
    let (s, u0) = ([4.0, 2.0, 1.0, 0.5], 1e-3);
    let t: Vec<f64> = values(&r, "t");
    assert_eq!(t.len(), 241, "rows at t = 0, 0.05, ..., 12");
    let mut half = vec![];
    for (k, sk) in s.iter().enumerate() {
        let mode = values(&r, &format!("mode[{k}]"));
        for (t, u) in t.iter().zip(&mode) {
            let e = (2.0 * sk * t).exp();
            let want = sk * e / (e - 1.0 + sk / u0);
            // rtol 1e-8: within 10·rtol of the mode's scale.
            assert!(
                (u - want).abs() <= 1e-7 * sk,
                "mode {sk} at t = {t}: {u}, closed form {want}"
            );
        }
        let at = mode.iter().position(|u| *u > sk / 2.0).expect("learned");
        half.push(t[at]);
    }
    for (h, sk) in half.iter().zip(s) {
        let want = (sk / u0 - 1.0).ln() / (2.0 * sk);
        assert!(
            (h - want).abs() <= 0.05,
            "half-way at {h}, closed form {want}"
        );
    }
    // Balanced at the start, and the flow keeps it so.
    assert!(values(&r, "balance").iter().all(|b| *b < 1e-12));
}
