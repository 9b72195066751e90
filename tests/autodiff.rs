//! Gradients: every differentiable op against central finite differences at random points
//! away from kinks, composite programs, and Kakade & Lee's subgradients at exact ties
//! (LANGUAGE.md section 7) with their exact expected values.

use ndarray::{ArrayD, IxDyn};

use traj::diag::SourceMap;
use traj::plan::Plan;
use traj::sema::Options;
use traj::sema::check::check_source;
use traj::tensor::Tensor;
use traj::train::{Backend, RunOptions, gradient, prepare};

struct Program {
    plan: Plan,
    theta: Vec<Tensor>,
    seed: u64,
}

fn program(src: &str) -> Program {
    let mut sources = SourceMap::default();
    let checked = match check_source("test.traj", None, src, &Options::default(), &mut sources) {
        Ok(c) => c,
        Err(d) => panic!(
            "{src}\n{}",
            d.iter()
                .map(|d| d.render(&sources, false))
                .collect::<String>()
        ),
    };
    let (statics, plan) = prepare(&checked, &sources, &RunOptions::default()).expect("prepare");
    let theta = plan
        .params
        .iter()
        .map(|p| statics.values[&format!("init:{}", p.name)].clone())
        .collect();
    Program {
        plan,
        theta,
        seed: traj::train::seed_of(&checked),
    }
}

fn flat(ts: &[Tensor]) -> Vec<f64> {
    ts.iter()
        .flat_map(|t| t.to_f64().iter().copied().collect::<Vec<_>>())
        .collect()
}

fn unflat(p: &Program, v: &[f64]) -> Vec<Tensor> {
    let mut at = 0;
    p.plan
        .params
        .iter()
        .map(|q| {
            let n: usize = q.shape.iter().product();
            let t = ArrayD::from_shape_vec(IxDyn(&q.shape), v[at..at + n].to_vec()).expect("shape");
            at += n;
            Tensor::Float(t)
        })
        .collect()
}

fn grad_at(p: &Program, theta: &[Tensor]) -> (f64, Vec<f64>) {
    let g = gradient(&p.plan, theta, 1, p.seed).expect("gradient");
    (g.loss, flat(&g.grads))
}

/// The plain gradient at x + t v, v the run's tie direction (stream "tie", step 1).
fn plain_gradient_along_tie_direction(p: &Program, t: f64) -> Vec<f64> {
    let rng = traj::rng::Stream::new(p.seed, "tie", 1);
    let moved: Vec<f64> = flat(&p.theta)
        .iter()
        .enumerate()
        .map(|(i, v)| v + t * rng.normal(i as u64))
        .collect();
    grad_at(p, &unflat(p, &moved)).1
}

/// Max relative error of the gradient against central differences.
fn fd_error(p: &Program) -> f64 {
    fd_error_on(p, Backend::Interp)
}

/// The loss and gradient at θ (update 1's draws) evaluated by `backend`: the plan's
/// gradient function on the interpreter, or compiled by the JIT (programs without ties).
fn loss_and_gradient_on(
    backend: Backend,
    p: &Program,
) -> impl Fn(&[Tensor]) -> (f64, Vec<f64>) + '_ {
    let compiled = (backend == Backend::Jit)
        .then(|| traj::jit::compile(&p.plan.grad_fast).expect("the JIT compiles the gradient"));
    move |theta: &[Tensor]| match &compiled {
        None => {
            let g = gradient(&p.plan, theta, 1, p.seed).expect("gradient");
            (g.loss, flat(&g.grads))
        }
        Some(f) => {
            let mut inputs = theta.to_vec();
            inputs.push(Tensor::Int(ArrayD::from_elem(IxDyn(&[]), 1)));
            let out = f.run(&inputs, p.seed).expect("the compiled gradient runs");
            let n = p.plan.params.len();
            assert_eq!(out[n + 1].to_f64().iter().sum::<f64>(), 0.0, "no ties here");
            (out[0].to_f64().iter().sum(), flat(&out[1..=n]))
        }
    }
}

/// `fd_error` with the gradient and the losses evaluated by `backend`.
fn fd_error_on(p: &Program, backend: Backend) -> f64 {
    let eval = loss_and_gradient_on(backend, p);
    let grad_at = |_: &Program, theta: &[Tensor]| eval(theta);
    let loss_at = |p: &Program, x: &[f64]| grad_at(p, &unflat(p, x)).0;
    let x = flat(&p.theta);
    let (_, g) = grad_at(p, &p.theta);
    let h = 1e-6;
    let mut worst: f64 = 0.0;
    let scale = g.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
    for i in 0..x.len() {
        let (mut a, mut b) = (x.clone(), x.clone());
        a[i] += h;
        b[i] -= h;
        let fd = (loss_at(p, &a) - loss_at(p, &b)) / (2.0 * h);
        worst = worst.max((fd - g[i]).abs() / scale);
    }
    worst
}

const HEADER: &str = "\
const seed = 3
param a: [4] ~ normal(0, 1)
param B: [4, 3] ~ normal(0, 1)
param c: [] = 0.7
data X = randn(5, 4)
data idx = randint(0, 4, 6)
";

fn with_loss(loss: &str) -> String {
    format!("{HEADER}loss = {loss}\ntrain {{\n  optimizer gd(lr = 0.1)\n  steps 1\n}}\n")
}

#[test]
fn every_differentiable_op_matches_finite_differences() {
    let losses = [
        "sum(exp(a)) + exp(c)",
        "sum(log(1 + a^2)) + log(c)",
        "sum(log1p(a^2))",
        "sum(sqrt(1 + a^2))",
        "sum(sigmoid(B)) + sum(tanh(a))",
        "sum(softplus(B))",
        "sum(sin(a) * cos(B'))",
        "sum(square(B))",
        "sum(abs(a)) + sum(relu(B))",
        "sum(max(a, 0.1)) + sum(min(B, 0.2))",
        "sum(clamp(B, -0.5, 0.5))",
        "sum(leaky_relu(B, 0.1))",
        "sum(logaddexp(a, 2 * a))",
        "sum(sum(B, axis = 0)^2) + sum(mean(B, axis = 1)^3)",
        "prod(1 + a^2) + max(B) - min(B)",
        "sum(max(B, axis = 1)) + sum(min(B, axis = 0))",
        "logsumexp(B) + sum(logsumexp(B, axis = 1))",
        "norm(B) + sum(norm(B, axis = 0)) + norm(a, 1) + norm(a, inf) + norm(a, 3)",
        "sum(softmax(B, axis = 1) * B) + sum(log_softmax(B) * B)",
        "sum(reshape(B, [3, 4]) @ a) + sum(flat(B) * flat(B'))",
        "sum(transpose(B) @ B) + sum(concat([a, a * c], 0)^2)",
        "sum(stack([a, 2 * a])^2) + sum([c, c^2, 3 * c])",
        "trace(B' @ B) + sum(diag(a) @ B) + sum(diag(B @ B'))",
        "sum(outer(a, a) * (B @ B'))",
        "sum(matprod(stack([B @ B', B @ B', B @ B']))) / 100",
        "a @ B @ B' @ a + sum(X @ a) + sum(a @ X')",
        "sum(B[1]) + sum(B[1:3, 0:2]^2) + sum(B[:, 2]) + B[-1, -1]^2 + a[0] * a[-1]",
        "sum(a[idx]^2) + sum(B[idx[0:3], idx[3:6] % 3])",
        "sum(if a > 0.1 then a^2 else 3 * a)",
        "c^c + sum(a^2 / (1 + B[0:4, 0]^2)) + 2^c",
        "sum([a[i] * i for i in 0..4]) + sum([B[i] for i in 0..2] @ B[3])",
        "mean((X @ a - 1)^2) + sum(onehot(idx, 4) @ a)",
    ];
    for loss in losses {
        let p = program(&with_loss(loss));
        let err = fd_error(&p);
        assert!(err < 1e-6, "loss = {loss}: relative error {err:e}");
    }
}

/// `erf` (a row of the op table) and `gelu` (std.nets, written with it) against central
/// differences on both backends, and their exact derivatives at 0: erf'(0) = 2/sqrt(pi),
/// gelu'(0) = 1/2.
#[test]
fn erf_and_gelu_match_finite_differences_on_both_backends() {
    for loss in [
        "sum(erf(B)) + erf(c) + sum(erf(3 * a) * a)",
        "sum(gelu(B)) + gelu(c) + sum(gelu(X @ a))",
    ] {
        let p = program(&format!("use std.nets\n{}", with_loss(loss)));
        for backend in [Backend::Interp, Backend::Jit] {
            let err = fd_error_on(&p, backend);
            assert!(
                err < 1e-6,
                "loss = {loss} ({backend:?}): relative error {err:e}"
            );
        }
    }
    for (loss, want) in [
        ("erf(x)", std::f64::consts::FRAC_2_SQRT_PI),
        ("gelu(x)", 0.5),
    ] {
        let p = program(&format!(
            "use std.nets\nparam x: [] = 0\nloss = {loss}\ntrain {{\n  optimizer gd(lr = 0.1)\n  steps 1\n}}\n"
        ));
        for backend in [Backend::Interp, Backend::Jit] {
            let (value, grads) = loss_and_gradient_on(backend, &p)(&p.theta);
            assert_eq!(value, 0.0, "{loss} at 0 ({backend:?})");
            assert_eq!(grads, vec![want], "d/dx {loss} at 0 ({backend:?})");
        }
    }
}

#[test]
fn composite_programs_match_finite_differences() {
    let programs = [
        // deep linear network
        "const d = 4\ndata X = randn(8, d)\ndata Y = randn(8, d)\nparam W: [3, d, d] ~ normal(0, 0.5)\nloss = 0.5 * sum((X @ matprod(W)' - Y)^2) / 8\ntrain {\n optimizer gd(lr = 0.1)\n steps 1\n}\n",
        // two-layer ReLU net
        "data X = randn(10, 3)\ndata y = randn(10)\nparam W: [6, 3] ~ normal(0, 1)\nparam a: [6] ~ normal(0, 1)\nloss = 0.5 * mean((relu(X @ W') @ a - y)^2)\ntrain {\n optimizer gd(lr = 0.1)\n steps 1\n}\n",
        // matrix completion with gathers
        "const n = 6\ndata M = randn(n, 2) @ randn(2, n)\ndata rows = randint(0, n, 12)\ndata cols = randint(0, n, 12)\nparam U: [n, 2] ~ normal(0, 1)\nparam V: [n, 2] ~ normal(0, 1)\nloss = 0.5 * mean(((U @ V')[rows, cols] - M[rows, cols])^2)\ntrain {\n optimizer gd(lr = 0.1)\n steps 1\n}\n",
    ];
    for src in programs {
        let p = program(src);
        let err = fd_error(&p);
        assert!(err < 1e-6, "{src}: relative error {err:e}");
    }
}

fn scalar_program(loss: &str, x0: &str) -> Program {
    program(&format!(
        "param x: [] = {x0}\nloss = {loss}\ntrain {{\n  optimizer gd(lr = 0.1)\n  steps 1\n}}\n"
    ))
}

#[test]
fn kinks_give_the_clarke_subgradient_of_the_function_not_of_its_spelling() {
    let cases = [
        ("relu(x) - relu(-x)", 1.0), // the identity: JAX/PyTorch give 0
        ("max(x, 0) + log1p(exp(-abs(x)))", 0.5), // softplus: JAX/PyTorch give 0
        ("abs(x) - abs(-x)", 0.0),   // zero function
        ("leaky_relu(x, 0.1) - leaky_relu(-x, 0.1)", 1.1), // 1 + a
        ("relu(x)^2", 0.0),          // C^1 at the kink
        ("clamp(x, 0, 1) + clamp(x, -1, 0)", 1.0), // x near 0, ties at both bounds
        ("if x > 0 then x else x", 1.0), // a class-D tie, harmless
        ("(x > 0) * x + (x <= 0) * x", 1.0),
    ];
    for (loss, want) in cases {
        let p = scalar_program(loss, "0");
        let (_, g) = grad_at(&p, &p.theta);
        assert_eq!(g, vec![want], "d/dx [{loss}] at 0");
    }
}

#[test]
fn ties_in_max_give_a_point_of_the_simplex() {
    let p = program(
        "param x: [2] = [1.0, 1.0]\nloss = max(x[0], x[1])\ntrain {\n optimizer gd(lr = 0.1)\n steps 1\n}\n",
    );
    let (_, g) = grad_at(&p, &p.theta);
    assert!(
        g.iter().all(|v| *v >= 0.0) && (g[0] + g[1] - 1.0).abs() < 1e-15,
        "{g:?}"
    );
    let p = program(
        "param x: [3] = [2.0, 2.0, 1.0]\nloss = max(x)\ntrain {\n optimizer gd(lr = 0.1)\n steps 1\n}\n",
    );
    let (_, g) = grad_at(&p, &p.theta);
    assert!(
        g.iter().all(|v| *v >= 0.0) && (g.iter().sum::<f64>() - 1.0).abs() < 1e-15 && g[2] == 0.0,
        "{g:?}"
    );
}

#[test]
fn norm_at_zero_gives_a_finite_element_of_the_unit_ball() {
    let p = program(
        "param x: [3] = 0\nloss = norm(x)\ntrain {\n optimizer gd(lr = 0.1)\n steps 1\n}\n",
    );
    let (_, g) = grad_at(&p, &p.theta);
    let n: f64 = g.iter().map(|v| v * v).sum::<f64>().sqrt();
    assert!(g.iter().all(|v| v.is_finite()) && n <= 1.0 + 1e-12, "{g:?}");
    // The ray rule gives v/‖v‖ exactly: a unit vector.
    assert!((n - 1.0).abs() < 1e-12, "{g:?}");
}

#[test]
fn logistic_regression_written_with_max_and_abs_leaves_zero() {
    let src = "\
data X = randn(20, 3)
data y = sign(X @ [1.0, -2.0, 0.5])
param w: [3] = 0
let z = -y * (X @ w)
loss = mean(max(z, 0) + log1p(exp(-abs(z))))
train {
  optimizer gd(lr = 1.0)
  steps 1
}
";
    let p = program(src);
    let (_, g) = grad_at(&p, &p.theta);
    // At w = 0 every z is exactly 0, a kink of each spelling term; the gradient of the
    // smooth function there is -mean(y x) / 2.
    assert!(g.iter().any(|v| *v != 0.0), "{g:?}");
    let plain = program(&src.replace("max(z, 0) + log1p(exp(-abs(z)))", "softplus(z)"));
    let (_, want) = grad_at(&plain, &plain.theta);
    for (a, b) in g.iter().zip(&want) {
        assert!((a - b).abs() < 1e-15, "{g:?} vs {want:?}");
    }
}

#[test]
fn at_forced_ties_the_result_is_the_plain_gradient_just_along_the_direction() {
    // Piecewise-linear programs with exact ties: the returned g equals the gradient at
    // x + t v for tiny t, v the run's tie direction (stream "tie", step 1).
    let programs = [
        "param W: [4, 3] = [[1, -1, 0], [0, 0, 0], [2, 1, -3], [0, 1, -1]]\ndata x = [1.0, 1.0, 1.0]\nloss = sum(relu(W @ x)) + max(W[0, 0], W[2, 0] - 1)\n",
        "param u: [5] = [0, 0, 1, -1, 0]\nloss = sum(abs(u)) - max(u) + min(u[0], u[1]) + sum(clamp(u, -1, 1))\n",
        "param a: [3] = [0, 0, 0]\nloss = max(a) + relu(a[0] - a[1]) - abs(a[2] - a[0])\n",
    ];
    for body in programs {
        let src = format!("{body}train {{\n optimizer gd(lr = 0.1)\n steps 1\n}}\n");
        let p = program(&src);
        let (_, g) = grad_at(&p, &p.theta);
        let plain = plain_gradient_along_tie_direction(&p, 1e-7);
        for (a, b) in g.iter().zip(&plain) {
            assert!((a - b).abs() < 1e-12, "{body}\n{g:?}\n{plain:?}");
        }
    }
}

#[test]
fn a_jump_is_an_error_not_a_wrong_gradient() {
    let p = scalar_program("sign(x) + x", "0");
    let err = gradient(&p.plan, &p.theta, 1, p.seed).expect_err("an error");
    assert!(err.message.contains("jumps"), "{err}");
    let p = scalar_program("sqrt(x^2 + x * 0)", "0");
    let err = gradient(&p.plan, &p.theta, 1, p.seed).expect_err("an error");
    assert!(err.message.contains("not finite"), "{err}");
}

/// A random piecewise-linear program over `p: [4]` with small-integer weights, so that
/// exact ties (relu at 0, equal max operands, equal entries of a max reduction, clamp at
/// a bound) are common at the integer starting point.
fn random_pl_program(w: &[i8], c: &[i8], p0: &[i8], ops: &[u8]) -> String {
    let row = |k: usize| {
        format!(
            "[{}]",
            (0..4)
                .map(|j| w[4 * k + j].to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let mut terms = Vec::new();
    for (k, op) in ops.iter().enumerate() {
        let z = format!("({} @ p - {})", row(k), c[k]);
        terms.push(match op % 6 {
            0 => format!("relu{z}"),
            1 => format!("abs{z}"),
            2 => format!("max({z}, p[{}])", k % 4),
            3 => format!("min({z}, -{z})"),
            4 => format!("clamp({z}, -1, 1)"),
            _ => format!("leaky_relu({z}, 0.25)"),
        });
    }
    let init = format!(
        "[{}]",
        p0.iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    format!(
        "param p: [4] = {init}\nlet z = [{}]\nloss = sum(z) + max(z) - relu(max(p) - 1)\ntrain {{\n optimizer gd(lr = 0.1)\n steps 1\n}}\n",
        terms.join(", ")
    )
}

/// Kakade & Lee: at a point with exact ties, the returned g is lim ∇f(x + t v) for the
/// run's direction v; for a piecewise-linear f that is the plain gradient at x + t v for
/// any small enough t. Most generated starting points have exact ties (checked).
#[test]
fn random_piecewise_linear_programs_at_ties() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    let mut runner = TestRunner::new(Config {
        cases: 300,
        failure_persistence: None,
        ..Config::default()
    });
    let with_ties = std::cell::Cell::new(0usize);
    let strategy = (
        proptest::collection::vec(-2i8..=2, 24),
        proptest::collection::vec(-1i8..=1, 6),
        proptest::collection::vec(-1i8..=1, 4),
        proptest::collection::vec(0u8..6, 2..=6),
    );
    runner
        .run(&strategy, |(w, c, p0, ops)| {
            let src = random_pl_program(&w, &c, &p0, &ops);
            let p = program(&src);
            let mut inputs = p.theta.clone();
            inputs.push(Tensor::Int(ArrayD::from_elem(IxDyn(&[]), 1)));
            let out = traj::interp::eval(
                &p.plan.grad_fast,
                &inputs,
                traj::interp::Env { seed: p.seed },
            )
            .expect("eval");
            let ties = out
                .last()
                .map(|t| t.to_f64().iter().sum::<f64>())
                .unwrap_or(0.0);
            if ties > 0.0 {
                with_ties.set(with_ties.get() + 1);
            }
            let (_, g) = grad_at(&p, &p.theta);
            let plain = plain_gradient_along_tie_direction(&p, 1e-9);
            for (a, b) in g.iter().zip(&plain) {
                prop_assert!(
                    (a - b).abs() < 1e-12,
                    "{}\nK&L {:?}\nat x + t v {:?}",
                    src,
                    g,
                    plain
                );
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        with_ties.get() > 200,
        "only {} of 300 programs had exact ties",
        with_ties.get()
    );
}
