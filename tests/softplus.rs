//! `autodiff::softplus`: which spellings of the stable softplus become `softplus(z)`, that their
//! values keep their bits on both backends, and that their gradient is then `softplus`'s
//! (`sigmoid(z)`), bit for bit, on both backends, 0.5 at `z = 0`.

mod common;
use std::path::Path;

use ndarray::{ArrayD, IxDyn};

use traj::interp::{self, Env};
use traj::ir::types::DType;
use traj::ir::{Binary, Builder, Func, Unary};
use traj::session::run;
use traj::tensor::Tensor;
use traj::train::{Backend, RunOptions, prepare};

/// A logistic regression whose loss is `mean(LOSS)` of the margins `z` (every one 0 at
/// the start), with a function `sp(u)` of the written-out form to call.
fn program(loss: &str, top: &str) -> String {
    format!(
        "{top}const seed = 4\ndata X = randn(40, 3)\ndata y = sign(X @ [1.0, -2.0, 0.5])\n\
         param w: [3] = 0\nlet z = -y * (X @ w)\nfn sp(u) = max(u, 0) + log1p(exp(-abs(u)))\n\
         loss = mean({loss})\ntrain {{\n  optimizer gd(lr = 1.0)\n  steps 30\n  \
         record every 1 {{ loss, w, g = grad(w), h = grad(mean({loss}), w) }}\n}}\n"
    )
}

/// The plan's gradient function of `text`, printed.
fn gradient_ir(text: &str) -> String {
    let (checked, sources) = common::check(Path::new("softplus.traj"), text).expect("checks");
    let (_, plan) = prepare(&checked, &sources, &RunOptions::default()).expect("prepare");
    traj::ir::print(&plan.grad_fast)
}

/// How many instructions of `ir` are `op`.
fn count(ir: &str, op: &str) -> usize {
    ir.matches(&format!("= {op} %")).count()
}

/// (loss, whether it is rewritten, the `softplus(...)` it equals).
const SPELLINGS: &[(&str, bool, &str)] = &[
    ("max(z, 0) + log1p(exp(-abs(z)))", true, "softplus(z)"),
    ("max(0, z) + log1p(exp(-abs(z)))", true, "softplus(z)"),
    ("log1p(exp(-abs(z))) + max(z, 0)", true, "softplus(z)"),
    ("max(z, 0.0) + log1p(exp(-abs(z)))", true, "softplus(z)"),
    ("relu(z) + log1p(exp(-abs(z)))", true, "softplus(z)"),
    ("sp(z)", true, "softplus(z)"),
    ("max(-z, 0) + log1p(exp(-abs(-z)))", true, "softplus(-z)"),
    ("max(-z, 0) + log1p(exp(-abs(z)))", true, "softplus(-z)"),
    ("sp(2 * z)", true, "softplus(2 * z)"),
    // `1 + e` rounds, so `log(1 + e)` is not `log1p(e)` bit for bit.
    ("max(z, 0) + log(1 + exp(-abs(z)))", false, ""),
    ("max(z, 1) + log1p(exp(-abs(z)))", false, ""),
    ("max(z, 0) + log1p(exp(abs(z)))", false, ""),
    ("max(z, 0) + log1p(exp(-abs(2 * z)))", false, ""),
    ("max(z, 0) - log1p(exp(-abs(z)))", false, ""),
    ("max(z, 0) + log1p(exp(-z))", false, ""),
];

#[test]
fn each_spelling_is_rewritten_or_left_as_the_table_says() {
    for (loss, rewritten, _) in SPELLINGS {
        let ir = gradient_ir(&program(loss, ""));
        let (softplus, sigmoid, log1p) = (
            count(&ir, "softplus"),
            count(&ir, "sigmoid"),
            count(&ir, "log1p"),
        );
        if *rewritten {
            assert_eq!((softplus, sigmoid, log1p), (1, 1, 0), "{loss}:\n{ir}");
        } else {
            assert_eq!((softplus, sigmoid), (0, 0), "{loss}:\n{ir}");
        }
    }
    // Under `precision f32` every instruction rounds to f32 and the kernel once: not
    // rewritten.
    let ir = gradient_ir(&program(SPELLINGS[0].0, "precision f32\n"));
    assert_eq!(count(&ir, "softplus"), 0, "{ir}");
    assert_eq!(count(&ir, "log1p"), 1, "{ir}");
}

#[test]
fn a_rewritten_spelling_runs_as_softplus_bit_for_bit_on_both_backends() {
    // Thirty steps from w = 0 (where every margin is 0, a tie of the spelling's `max` and
    // `abs`): each rewritten spelling records the loss, w, grad(w) and a record's own
    // `grad(mean(...), w)` of the program written with `softplus` bit for bit, on the
    // interpreter and the JIT alike; the first step is the exact derivative,
    // w₁ = mean(0.5 · y · x).
    let runs = |text: &str| {
        let (checked, sources) = common::check(Path::new("softplus.traj"), text).expect("checks");
        [Backend::Interp, Backend::Jit].map(|backend| {
            let options = RunOptions {
                backend,
                ..Default::default()
            };
            let r = run(&checked, &sources, &options).expect("runs");
            common::trajectory_bits(&r)
        })
    };
    for (loss, rewritten, plain) in SPELLINGS {
        if !rewritten {
            continue;
        }
        let want = runs(&program(plain, ""));
        assert_eq!(want[0], want[1], "{plain}: the backends differ");
        assert_eq!(want[0].len(), 31, "{plain}");
        let got = runs(&program(loss, ""));
        assert_eq!(got[0], want[0], "{loss} vs {plain} on the interpreter");
        assert_eq!(got[1], want[0], "{loss} vs {plain} on the JIT");
    }
}

#[test]
fn the_derivative_at_zero_is_one_half_without_a_tie() {
    // softplus'(0) = sigmoid(0) = 0.5 exactly, from the fast gradient (no tie counted: the
    // plan needs no directional gradient there), on both backends.
    let text = "param x: [] = 0\nloss = max(x, 0) + log1p(exp(-abs(x)))\ntrain {\n  optimizer gd(lr = 0.1)\n  steps 1\n}\n";
    let (checked, sources) = common::check(Path::new("zero.traj"), text).expect("checks");
    let (_, plan) = prepare(&checked, &sources, &RunOptions::default()).expect("prepare");
    let f = &plan.grad_fast;
    let inputs = [
        Tensor::Float(ArrayD::from_elem(IxDyn(&[]), 0.0)),
        Tensor::Int(ArrayD::from_elem(IxDyn(&[]), 1)),
    ];
    let interp = interp::eval(f, &inputs, Env::default()).expect("eval");
    let jit = traj::jit::compile(f)
        .expect("compiles")
        .run(&inputs, 0)
        .expect("runs");
    for out in [interp, jit] {
        let v: Vec<f64> = out.iter().map(|t| t.to_f64().iter().sum()).collect();
        assert_eq!(
            v,
            vec![std::f64::consts::LN_2, 0.5, 0.0],
            "loss, grad, ties"
        );
    }
}

/// Special values, subnormals, values around exp's underflow and log1p's switches, and
/// `n` pseudo-random ones (arbitrary bit patterns and values in [-40, 40]).
fn awkward(n: usize) -> Vec<f64> {
    let mut xs = vec![
        0.0,
        -0.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        -f64::NAN,
        f64::MIN_POSITIVE,
        -f64::MIN_POSITIVE,
        5e-324,
        -5e-324,
        2.2e-310,
        -2.2e-310,
        f64::MAX,
        -f64::MAX,
        f64::EPSILON,
        -f64::EPSILON,
    ];
    for edge in [745.13, 709.78, 36.7, 1e-16, 2f64.powi(-29), 0.5, 1.0] {
        for d in -2i64..=2 {
            let x = f64::from_bits(edge.to_bits().wrapping_add(d as u64));
            xs.extend([x, -x]);
        }
    }
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..n {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let unit = (s >> 11) as f64 / (1u64 << 53) as f64;
        xs.push(if i % 2 == 0 {
            f64::from_bits(s)
        } else {
            unit * 80.0 - 40.0
        });
    }
    xs
}

/// `max(z, 0) + log1p(exp(-abs(z)))` of an input `z` of `n` entries as lowering makes it,
/// with `max(0, z)` when `relu_first`, and `zero` the constant (an int 0 made float, as
/// `max(z, 0)` is lowered, or a float zero of either sign).
fn written_out(n: usize, relu_first: bool, zero: Option<f64>) -> Func {
    let mut b = Builder::new();
    let z = b.input("z", DType::Float, vec![n]);
    let c = match zero {
        Some(c) => b.fill_like(z, c),
        None => {
            let zero = b.int_scalar(0);
            let zero = b.broadcast(zero, &[n]);
            b.to_float(zero)
        }
    };
    let m = if relu_first {
        b.binary(Binary::Max, c, z)
    } else {
        b.binary(Binary::Max, z, c)
    };
    let nz = b.unary(Unary::Neg, z);
    let a = b.binary(Binary::Max, z, nz);
    let na = b.unary(Unary::Neg, a);
    let e = b.unary(Unary::Exp, na);
    let l = b.unary(Unary::Log1p, e);
    let v = b.binary(Binary::Add, m, l);
    b.output("v", v);
    b.finish()
}

#[test]
fn the_rewritten_values_are_the_written_out_ones_and_the_kernels_on_both_backends() {
    // Two million inputs: the written-out form and its rewrite (one `softplus`), each on
    // the interpreter and the JIT, give the same bits (any NaN for a NaN), which are
    // `math::softplus`'s: in either order of the `max`, with either zero.
    let xs = awkward(2_000_000);
    let n = xs.len();
    let input = [Tensor::Float(
        ArrayD::from_shape_vec(IxDyn(&[n]), xs.clone()).expect("shape"),
    )];
    for (relu_first, zero) in [(false, None), (true, Some(0.0)), (false, Some(-0.0))] {
        let f = written_out(n, relu_first, zero);
        let g = traj::opt::run(&traj::autodiff::softplus::softplus(&f)).expect("verifies");
        let printed = traj::ir::print(&g);
        assert_eq!(count(&printed, "softplus"), 1, "{printed}");
        assert_eq!(count(&printed, "log1p"), 0, "{printed}");
        let want = interp::eval(&f, &input, Env::default()).expect("eval")[0].to_f64();
        for (x, w) in xs.iter().zip(want.iter()) {
            let kernel = traj::kernels::math::softplus(*x);
            let same = w.to_bits() == kernel.to_bits() || (w.is_nan() && kernel.is_nan());
            assert!(same, "written out at {x:e}: {w:e}, the kernel {kernel:e}");
        }
        for (func, what) in [(&f, "written out"), (&g, "rewritten")] {
            let outs = [
                interp::eval(func, &input, Env::default()).expect("eval"),
                traj::jit::compile(func)
                    .expect("compiles")
                    .run(&input, 0)
                    .expect("runs"),
            ];
            for (out, backend) in outs.iter().zip(["interpreter", "JIT"]) {
                let got = out[0].to_f64();
                for (x, (w, o)) in xs.iter().zip(want.iter().zip(got.iter())) {
                    let same = w.to_bits() == o.to_bits() || (w.is_nan() && o.is_nan());
                    assert!(same, "{what} on the {backend} at {x:e}: {o:e}, not {w:e}");
                }
            }
        }
    }
}

#[test]
fn instruction_numbers_are_kept_and_precision_f32_is_left_alone() {
    let f = written_out(3, false, Some(0.0));
    let g = traj::autodiff::softplus::softplus(&f);
    assert_eq!(g.insts.len(), f.insts.len());
    let v = g.outputs[0].1;
    assert_eq!(g.insts[v].prim, traj::ir::Prim::Unary(Unary::Softplus));
    assert_eq!(g.insts[v].args, vec![0]);
    let f32 = Func { f32: true, ..f };
    assert_eq!(
        traj::ir::print(&traj::autodiff::softplus::softplus(&f32)),
        traj::ir::print(&f32)
    );
}
