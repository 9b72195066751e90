//! The Cranelift backend against the reference interpreter: every function of every
//! program's plan, and random elementwise/reduction/broadcast functions, must give
//! bit-identical outputs (NaNs compared as NaNs, whatever their payload).

mod common;
use common::programs;
use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use proptest::prelude::*;

use traj::diag::SourceMap;
use traj::interp::{self, Env};
use traj::ir::types::DType;
use traj::ir::{Binary, Builder, Func, Prim, Reduce, Unary};
use traj::sema::Options;
use traj::sema::check::check_source;
use traj::tensor::Tensor;
use traj::train::{RunOptions, prepare};

/// Bit-identical, except that any NaN matches any NaN.
fn same(a: &Tensor, b: &Tensor) -> Result<(), String> {
    if a.shape() != b.shape() {
        return Err(format!("shape {:?} vs {:?}", a.shape(), b.shape()));
    }
    match (a, b) {
        (Tensor::Float(x), Tensor::Float(y)) => {
            for (i, (p, q)) in x.iter().zip(y.iter()).enumerate() {
                if !(p.to_bits() == q.to_bits() || (p.is_nan() && q.is_nan())) {
                    return Err(format!("element {i}: interpreter {p:?}, JIT {q:?}"));
                }
            }
            Ok(())
        }
        (Tensor::Int(x), Tensor::Int(y)) if x == y => Ok(()),
        _ => Err(format!("{a:?} vs {b:?}")),
    }
}

/// Runs `f` on both backends; panics on any difference. Returns the interpreter's outputs.
fn agree(f: &Func, inputs: &[Tensor], seed: u64, what: &str) -> Option<Vec<Tensor>> {
    let want = interp::eval(f, inputs, Env { seed });
    let compiled = traj::jit::compile(f)
        .unwrap_or_else(|e| panic!("{what}: compile: {e}\n{}", traj::ir::print(f)));
    let got = compiled.run(inputs, seed);
    match (want, got) {
        (Ok(w), Ok(g)) => {
            assert_eq!(w.len(), g.len(), "{what}");
            for (k, (a, b)) in w.iter().zip(&g).enumerate() {
                if let Err(e) = same(a, b) {
                    panic!(
                        "{what}: output {} differs: {e}\n{}",
                        f.outputs[k].0,
                        traj::ir::print(f)
                    );
                }
            }
            Some(w)
        }
        (Err(_), Err(_)) => None,
        (w, g) => panic!("{what}: interpreter {w:?}, JIT {g:?}"),
    }
}

fn int_scalar(v: i64) -> Tensor {
    Tensor::Int(ArrayD::from_elem(IxDyn(&[]), v))
}

/// A float tensor of `shape` holding `v` in row-major order.
fn floats(v: Vec<f64>, shape: &[usize]) -> Tensor {
    Tensor::Float(ArrayD::from_shape_vec(IxDyn(shape), v).expect("shape"))
}

/// A float tensor of `shape` whose entry at row-major index `i` is `at(i)`.
fn filled(shape: &[usize], at: &dyn Fn(usize) -> f64) -> Tensor {
    floats((0..shape.iter().product()).map(at).collect(), shape)
}

/// An int tensor of `shape` holding `v` in row-major order.
fn int_tensor(v: Vec<i64>, shape: &[usize]) -> Tensor {
    Tensor::Int(ArrayD::from_shape_vec(IxDyn(shape), v).expect("shape"))
}

/// Deterministic pseudo-random normals of `shape`.
fn direction(shape: &[usize], key: u64) -> Tensor {
    let rng = traj::rng::Stream::new(7, "jit-test", key);
    let n: usize = shape.iter().product();
    floats((0..n as u64).map(|i| rng.normal(i)).collect(), shape)
}

fn check_program(path: &Path) {
    let what = path.display().to_string();
    let text = std::fs::read_to_string(path).expect("readable");
    let mut sources = SourceMap::default();
    let checked = check_source(
        &what,
        Some(path.to_path_buf()),
        &text,
        &Options::default(),
        &mut sources,
    )
    .unwrap_or_else(|_| panic!("{what}: does not check"));
    let (statics, plan) = prepare(&checked, &sources, &RunOptions::default())
        .unwrap_or_else(|e| panic!("{what}: prepare: {e}"));
    let seed = traj::train::seed_of(&checked);
    let theta: Vec<Tensor> = plan
        .params
        .iter()
        .map(|p| statics.values[&format!("init:{}", p.name)].clone())
        .collect();
    let n = theta.len();
    let mut inputs = theta.clone();
    inputs.push(int_scalar(1));
    let Some(out) = agree(&plan.grad_fast, &inputs, seed, &format!("{what} grad_fast")) else {
        return;
    };
    for varying in 1..=n {
        cut_computes_the_same(&plan.grad_fast, &inputs, varying, seed, &what);
    }
    let loss = out[0].clone();
    let grads: Vec<Tensor> = out[1..=n].to_vec();
    let gnorm = grads
        .iter()
        .flat_map(|g| g.to_f64().iter().copied().collect::<Vec<_>>())
        .map(|x| x * x)
        .sum::<f64>()
        .sqrt();
    let mut ray = inputs.clone();
    ray.extend(
        plan.params
            .iter()
            .enumerate()
            .map(|(k, p)| direction(&p.shape, k as u64)),
    );
    agree(&plan.grad_ray, &ray, seed, &format!("{what} grad_ray"));
    if let Some(h) = &plan.hvp {
        let saved = agree(&h.at, &inputs, seed, &format!("{what} hvp at")).unwrap_or_default();
        let mut apply = ray.clone();
        apply.extend(saved);
        agree(&h.apply, &apply, seed, &format!("{what} hvp apply"));
    }
    for (i, u) in plan.updates.iter().enumerate() {
        let Some(u) = u else { continue };
        let states = agree(
            &u.init,
            std::slice::from_ref(&theta[i]),
            seed,
            &format!("{what} init {i}"),
        )
        .unwrap_or_default();
        let mut step = vec![
            theta[i].clone(),
            grads[i].clone(),
            int_scalar(1),
            loss.clone(),
            Tensor::scalar(gnorm),
        ];
        step.extend(states);
        agree(&u.step, &step, seed, &format!("{what} update {i}"));
    }
    let mut rec = theta.clone();
    rec.push(int_scalar(1));
    rec.extend(grads.iter().cloned());
    rec.push(loss);
    rec.push(Tensor::scalar(gnorm));
    rec.push(Tensor::scalar(0.5));
    agree(&plan.record, &rec, seed, &format!("{what} record"));
    if let Some(s) = &plan.stop {
        agree(s, &rec, seed, &format!("{what} stop"));
    }
}

/// `f` cut at input `varying` (`plan::split_at_input`): the second part, given the first
/// part's outputs, gives `f`'s outputs bit for bit, on both backends.
fn cut_computes_the_same(f: &Func, inputs: &[Tensor], varying: usize, seed: u64, what: &str) {
    let what = format!("{what} cut at input {varying}");
    let (first, second) = traj::plan::split_at_input(f, varying);
    traj::ir::verify(&first).unwrap_or_else(|e| panic!("{what}: first part: {e}"));
    traj::ir::verify(&second).unwrap_or_else(|e| panic!("{what}: second part: {e}"));
    let whole = interp::eval(f, inputs, Env { seed }).expect("the whole function runs");
    let Some(saved) = agree(
        &first,
        &inputs[..varying],
        seed,
        &format!("{what}, first part"),
    ) else {
        panic!("{what}: the first part fails");
    };
    let mut rest = inputs.to_vec();
    rest.extend(saved);
    let Some(out) = agree(&second, &rest, seed, &format!("{what}, second part")) else {
        panic!("{what}: the second part fails");
    };
    assert_eq!(whole.len(), out.len(), "{what}");
    for (k, (a, b)) in whole.iter().zip(&out).enumerate() {
        if let Err(e) = same(a, b) {
            panic!(
                "{what}: output {} differs from the whole function's: {e}",
                f.outputs[k].0
            );
        }
    }
}

#[test]
fn the_hessian_vector_products_direction_free_work_is_in_its_first_part() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/edge_of_stability.traj");
    let text = std::fs::read_to_string(&path).expect("readable");
    let mut sources = SourceMap::default();
    let checked = check_source(
        "eos",
        Some(path.clone()),
        &text,
        &Options::default(),
        &mut sources,
    )
    .unwrap_or_else(|_| panic!("does not check"));
    let (_, plan) = prepare(&checked, &sources, &RunOptions::default()).expect("prepares");
    let hvp = plan.hvp.expect("edge_of_stability records sharpness");
    let tanh = |f: &Func| {
        f.insts
            .iter()
            .filter(|i| i.prim == Prim::Unary(Unary::Tanh))
            .count()
    };
    // tanh(X W') is computed once a sharpness, not once a product.
    assert_eq!((tanh(&hvp.at), tanh(&hvp.apply)), (1, 0));
    assert!(!hvp.at.outputs.is_empty());
    assert_eq!(hvp.apply.inputs.len(), 5 + hvp.at.outputs.len());
}

#[test]
fn every_plan_function_agrees_with_the_interpreter() {
    let programs = programs();
    assert!(programs.len() > 10, "found {} programs", programs.len());
    for p in &programs {
        check_program(p);
    }
}

#[test]
fn clif_text_prints_the_function() {
    let mut b = Builder::new();
    let x = b.input("x", DType::Float, vec![3]);
    let y = b.unary(Unary::Exp, x);
    let s = b.reduce(Reduce::Sum, y, None);
    b.output("s", s);
    let text = traj::jit::clif_text(&b.finish()).expect("clif");
    assert!(text.contains("function"), "{text}");
    assert!(text.contains("call"), "{text}");
    assert!(text.contains("brif"), "{text}");
}

#[test]
fn errors_are_values() {
    // An int division by zero is an error from both backends, not a panic.
    let mut b = Builder::new();
    let x = b.input("x", DType::Int, vec![2]);
    let y = b.input("y", DType::Int, vec![2]);
    let q = b.binary(Binary::FloorDiv, x, y);
    b.output("q", q);
    let f = b.finish();
    let c = traj::jit::compile(&f).expect("compiles");
    let ints = |v: Vec<i64>| Tensor::Int(ArrayD::from_shape_vec(IxDyn(&[2]), v).expect("shape"));
    let err = c.run(&[ints(vec![1, 2]), ints(vec![1, 0])], 0);
    assert!(err.is_err_and(|e| e.contains("division by zero")));
    // It recovers: the next run works.
    let ok = c
        .run(&[ints(vec![7, -7]), ints(vec![2, 2])], 0)
        .expect("runs");
    assert_eq!(ok[0], ints(vec![3, -4]));
    // Wrong inputs are refused.
    assert!(c.run(&[ints(vec![1, 2])], 0).is_err());
    assert!(c.run(&[Tensor::scalar(1.0), ints(vec![1, 2])], 0).is_err());
    // Malformed IR is refused at compile time.
    let mut bad = f.clone();
    bad.insts[2].args = vec![5, 0];
    assert!(traj::jit::compile(&bad).is_err());
}

#[test]
fn gathers_copy_rows_and_report_indices_out_of_range() {
    let mut b = Builder::new();
    let x = b.input("x", DType::Float, vec![3, 2]);
    let idx = b.input("idx", DType::Int, vec![4]);
    let g = b.gather(x, &[idx]);
    b.output("g", g);
    let f = b.finish();
    let c = traj::jit::compile(&f).expect("compiles");
    let x = Tensor::Float(
        ArrayD::from_shape_vec(IxDyn(&[3, 2]), vec![1.0, 2.0, 3.0, -0.0, 5.0, 6.0]).expect("shape"),
    );
    let ints = |v: Vec<i64>| Tensor::Int(ArrayD::from_shape_vec(IxDyn(&[4]), v).expect("shape"));
    let out = c
        .run(&[x.clone(), ints(vec![2, 0, 1, 2])], 0)
        .expect("runs");
    let want: [f64; 8] = [5.0, 6.0, 1.0, 2.0, 3.0, -0.0, 5.0, 6.0];
    let got = out[0].to_f64();
    assert_eq!(got.shape(), &[4, 2]);
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.to_bits(), w.to_bits());
    }
    for bad in [vec![0, 3, 1, 1], vec![0, -1, 1, 1]] {
        let e = c
            .run(&[x.clone(), ints(bad.clone())], 0)
            .expect_err("out of range");
        assert!(e.contains("out of range"), "{e}");
        let i = traj::interp::eval(&f, &[x.clone(), ints(bad)], traj::interp::Env { seed: 0 });
        assert!(i.is_err_and(|e| e.message.contains("out of range")));
    }
}

#[test]
fn gathers_copy_rows_of_any_length() {
    // Rows are copied in blocks of eight entries, then pairs, then one: every length
    // around those sizes, float rows (with -0.0 and NaN) and int rows, rows repeated.
    for inner in [1, 2, 3, 7, 8, 9, 15, 16, 17, 32, 35] {
        for dtype in [DType::Float, DType::Int] {
            let rows = 5;
            let mut b = Builder::new();
            let x = b.input("x", dtype, vec![rows, inner]);
            let idx = b.input("idx", DType::Int, vec![6]);
            let g = b.gather(x, &[idx]);
            b.output("g", g);
            let f = b.finish();
            let n = rows * inner;
            let x = match dtype {
                DType::Float => floats(
                    (0..n)
                        .map(|i| match i % 5 {
                            0 => -0.0,
                            1 => f64::NAN,
                            _ => i as f64 * 1.25,
                        })
                        .collect(),
                    &[rows, inner],
                ),
                DType::Int => int_tensor(
                    (0..n as i64).map(|i| i * 1_000_003 - 7).collect(),
                    &[rows, inner],
                ),
            };
            let idx = int_tensor(vec![4, 0, 2, 2, 1, 4], &[6]);
            let what = format!("gather of rows of {inner}, {dtype:?}");
            let out = agree(&f, &[x.clone(), idx], 0, &what).expect("no error");
            // Row 2 of the result is row 2 of x, entry by entry.
            let (got, want) = (out[0].to_f64(), x.to_f64());
            for k in 0..inner {
                let (g, w) = (got[[3, k]], want[[2, k]]);
                assert!(
                    g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                    "{what}"
                );
            }
        }
    }
}

#[test]
fn every_kind_of_draw_agrees_with_the_interpreter() {
    // Draws are called from compiled code with their step (an int, or a float) and a
    // Bernoulli draw's probability read from their buffers; the values must be the
    // interpreter's, bit for bit (under `precision f32` too, rounded as it rounds them),
    // and change with the step and the seed.
    use traj::ir::Draw;
    let draws = [
        (Draw::Normal, DType::Float, vec![3, 4]),
        (Draw::Uniform, DType::Float, vec![7]),
        (Draw::Bernoulli, DType::Float, vec![50]),
        (Draw::Randint { lo: -3, hi: 9 }, DType::Int, vec![40]),
        (Draw::Permutation, DType::Int, vec![12]),
        (Draw::Choose { n: 30 }, DType::Int, vec![6]),
        (Draw::Orthogonal, DType::Float, vec![5, 3]),
        (
            Draw::BatchRows {
                rows: 17,
                shuffle: false,
            },
            DType::Int,
            vec![32],
        ),
        (
            Draw::BatchRows {
                rows: 17,
                shuffle: true,
            },
            DType::Int,
            vec![32],
        ),
    ];
    for (draw, dtype, shape) in draws {
        for (float_step, f32) in [(false, false), (true, false), (true, true)] {
            let mut b = Builder::new();
            let step_type = if float_step { DType::Float } else { DType::Int };
            let step = b.input("step", step_type, vec![]);
            let p = b.input("p", DType::Float, vec![]);
            let extra = if draw == Draw::Bernoulli {
                vec![p]
            } else {
                vec![]
            };
            let r = b.random(draw.clone(), "s", step, &extra, dtype, shape.clone());
            b.output("r", r);
            let mut f = b.finish();
            f.f32 = f32;
            let mut seen = Vec::new();
            for (step, seed) in [(1, 0), (2, 0), (2, 9), (-4, 0)] {
                let step = if float_step {
                    Tensor::scalar(step as f64 + 0.75)
                } else {
                    int_scalar(step)
                };
                let inputs = [step, Tensor::scalar(0.3)];
                let what = format!("{draw:?}, float step {float_step}, f32 {f32}, seed {seed}");
                let out = agree(&f, &inputs, seed, &what).expect("no error");
                seen.push(out[0].to_f64());
            }
            // Another step or seed draws other values; a negative step is step 0.
            assert_ne!(seen[0], seen[1], "{draw:?}");
            assert_ne!(seen[1], seen[2], "{draw:?}");
        }
    }
}

#[test]
fn fused_row_broadcasts_and_reductions_agree() {
    // Rows of 19 (two f64x2 passes of 8 and a tail of 3) with a row vector and a column
    // broadcast along them, fused into one select and a tie count: the vector path along
    // rows, with ties, ±0 and a NaN.
    let (m, n) = (5, 19);
    let mut b = Builder::new();
    let x = b.input("x", DType::Float, vec![m, n]);
    let r = b.input("r", DType::Float, vec![n]);
    let c = b.input("c", DType::Float, vec![m, 1]);
    let xr = b.binary(Binary::Mul, x, r);
    let y = b.binary(Binary::Sub, xr, c);
    let zero = b.scalar(0.0);
    let pos = b.binary(Binary::Ge, y, zero);
    let s = b.select(pos, y, zero);
    let m1 = b.binary(Binary::Max, s, x);
    b.output("m", m1);
    let tied = b.binary(Binary::Eq, y, zero);
    let count = b.reduce(traj::ir::Reduce::Sum, tied, None);
    b.output("ties", count);
    let sq = b.binary(Binary::Mul, y, y);
    let total = b.reduce(traj::ir::Reduce::Sum, sq, None);
    b.output("total", total);
    let f = b.finish();
    let xs: Vec<f64> = (0..m * n)
        .map(|i| match i % 7 {
            0 => 0.0,
            1 => -0.0,
            2 => 1e300,
            3 => f64::NAN,
            _ => (i as f64 - 40.0) / 8.0,
        })
        .collect();
    let rs: Vec<f64> = (0..n)
        .map(|j| if j % 3 == 0 { 1.0 } else { -0.5 })
        .collect();
    let cs = vec![0.0, 1.0, -0.0, 2.5, 0.5];
    let inputs = [floats(xs, &[m, n]), floats(rs, &[n]), floats(cs, &[m, 1])];
    let out = agree(&f, &inputs, 0, "row broadcasts").expect("no error");
    // Exact ties are counted: y = 0 wherever x = ±0 and c = ±0, among others.
    assert!(out[1].to_f64()[[]] >= 2.0, "{:?}", out[1]);
}

#[test]
fn sums_take_one_lane_order_in_every_kind_of_loop() {
    // Entries where the order of addition shows (1e16 swallows a lone 1.0): every sum
    // must be `math::sum` of its entries in row-major order, whichever loop computes it:
    // a buffer read in place, a fused flat vector loop, a fused loop along rows (a
    // broadcast operand), the scalar loop of `precision f32`, a reduction along either
    // axis; blocks of 7 (plain order), 8 and more.
    use traj::kernels::math::sum;
    for (m, n) in [(5, 19), (3, 8), (1, 7), (4, 9)] {
        for f32 in [false, true] {
            let mut b = Builder::new();
            let x = b.input("x", DType::Float, vec![m, n]);
            let r = b.input("r", DType::Float, vec![n]);
            let whole = b.reduce(Reduce::Sum, x, None);
            b.output("whole", whole);
            let sq = b.binary(Binary::Mul, x, x);
            let flat = b.reduce(Reduce::Sum, sq, None);
            b.output("flat", flat);
            let xr = b.binary(Binary::Mul, x, r);
            let rows = b.reduce(Reduce::Sum, xr, None);
            b.output("rows", rows);
            let by_row = b.reduce(Reduce::Sum, x, Some(vec![1]));
            b.output("by_row", by_row);
            let by_col = b.reduce(Reduce::Sum, x, Some(vec![0]));
            b.output("by_col", by_col);
            let mut f = b.finish();
            f.f32 = f32;
            let big = if f32 { 1e8 } else { 1e16 };
            let xs: Vec<f64> = (0..m * n)
                .map(|i| match i % 5 {
                    0 => big,
                    2 => -big,
                    _ => 1.0 + (i % 3) as f64,
                })
                .collect();
            let rs: Vec<f64> = (0..n).map(|j| if j % 2 == 0 { 1.0 } else { 3.0 }).collect();
            let inputs = [floats(xs.clone(), &[m, n]), floats(rs.clone(), &[n])];
            let what = format!("sums of [{m}, {n}], f32 {f32}");
            let out = agree(&f, &inputs, 0, &what).expect("no error");
            if f32 {
                continue;
            }
            let scalar = |k: usize| out[k].to_f64()[[]];
            assert_eq!(scalar(0).to_bits(), sum(&xs).to_bits(), "{what}");
            let squares: Vec<f64> = xs.iter().map(|v| v * v).collect();
            assert_eq!(scalar(1).to_bits(), sum(&squares).to_bits(), "{what}");
            let scaled: Vec<f64> = (0..m * n).map(|i| xs[i] * rs[i % n]).collect();
            assert_eq!(scalar(2).to_bits(), sum(&scaled).to_bits(), "{what}");
            for i in 0..m {
                assert_eq!(out[3].to_f64()[[i]], sum(&xs[i * n..(i + 1) * n]), "{what}");
            }
            for j in 0..n {
                let col: Vec<f64> = (0..m).map(|i| xs[i * n + j]).collect();
                assert_eq!(out[4].to_f64()[[j]], sum(&col), "{what}");
            }
        }
    }
}

#[test]
fn flag_counts_share_the_loop_of_an_earlier_elementwise_op() {
    // A ReLU and its tie count read the same operand: the JIT counts `h == 0` in the
    // ReLU's loop (`layout::counts_in_loops`). The counts must be exact in every kind of
    // loop (flat vectors, rows with a broadcast operand, scalars under `precision f32`,
    // shapes with vector tails), with ±0 and NaN among the entries.
    use traj::jit::layout::{counts_in_loops, storage};
    for (m, n) in [(4, 9), (3, 8), (2, 3), (5, 17)] {
        for f32 in [false, true] {
            let mut b = Builder::new();
            let h = b.input("h", DType::Float, vec![m, n]);
            let r = b.input("r", DType::Float, vec![n]);
            let zero = b.scalar(0.0);
            let relu = b.binary(Binary::Max, h, zero);
            b.output("relu", relu);
            let shifted = b.binary(Binary::Mul, h, r);
            b.output("shifted", shifted);
            let tie = b.binary(Binary::Eq, h, zero);
            let ties = b.reduce(Reduce::Sum, tie, None);
            b.output("ties", ties);
            let below = b.binary(Binary::Lt, h, r);
            let count_below = b.reduce(Reduce::Sum, below, None);
            b.output("below", count_below);
            let mut f = b.finish();
            f.f32 = f32;
            let f = traj::opt::run(&f).expect("passes verify");
            let placed = counts_in_loops(&f, &storage(&f));
            let hosts: Vec<usize> = placed.keys().copied().collect();
            assert_eq!(
                placed.values().map(Vec::len).sum::<usize>(),
                2,
                "{placed:?}"
            );
            assert_eq!(
                hosts.len(),
                2,
                "one count in the ReLU's loop, one in h * r's"
            );
            assert!(hosts.iter().all(|i| matches!(
                f.insts[*i].prim,
                traj::ir::Prim::Binary(Binary::Max | Binary::Mul)
            )));
            let hs: Vec<f64> = (0..m * n)
                .map(|i| match i % 6 {
                    0 => 0.0,
                    1 => -0.0,
                    2 => f64::NAN,
                    3 => -1.5,
                    _ => i as f64,
                })
                .collect();
            let rs: Vec<f64> = (0..n)
                .map(|j| if j % 3 == 0 { -1.0 } else { 2.0 })
                .collect();
            let inputs = [floats(hs.clone(), &[m, n]), floats(rs.clone(), &[n])];
            let what = format!("counts over [{m}, {n}], f32 {f32}");
            let out = agree(&f, &inputs, 0, &what).expect("no error");
            let want_ties = hs.iter().filter(|x| **x == 0.0).count() as f64;
            let want_below = (0..m * n).filter(|i| hs[*i] < rs[i % n]).count() as f64;
            assert_eq!(out[2].to_f64()[[]], want_ties, "{what}");
            assert_eq!(out[3].to_f64()[[]], want_below, "{what}");
        }
    }
}

#[test]
fn flag_counts_from_lane_masks_have_the_interpreters_bits() {
    // A count of a comparison or `not` is counted from the comparison's lane masks in
    // integer lanes, converted once at the end; a count of `x - x` (0 or NaN) stays a
    // float sum. Every comparison, over shapes with no vector body (the sum of nothing is
    // -0.0 in both), a vector body alone, vector tails and rows, with ±0, ±inf and NaN on
    // either side: the same bits as the interpreter, and the counts a scan gives.
    for shape in [
        vec![0],
        vec![5],
        vec![8],
        vec![19],
        vec![64],
        vec![0, 8],
        vec![3, 8],
        vec![2, 13],
    ] {
        let n: usize = shape.iter().product();
        let hs: Vec<f64> = (0..n)
            .map(|i| match i % 7 {
                0 => 0.0,
                1 => -0.0,
                2 => f64::NAN,
                3 => f64::INFINITY,
                4 => -1.5,
                _ => i as f64,
            })
            .collect();
        let gs: Vec<f64> = (0..n)
            .map(|i| match i % 5 {
                0 => -0.0,
                1 => hs[i],
                2 => f64::NEG_INFINITY,
                3 => f64::NAN,
                _ => 3.0,
            })
            .collect();
        let inputs = [floats(hs.clone(), &shape), floats(gs.clone(), &shape)];
        let scan = |keep: &dyn Fn(f64, f64) -> bool| {
            (0..n).filter(|i| keep(hs[*i], gs[*i])).count() as f64
        };
        type Keep = fn(f64, f64) -> bool;
        let ops: [(Binary, Keep); 6] = [
            (Binary::Eq, |a, b| a == b),
            (Binary::Ne, |a, b| a != b),
            (Binary::Lt, |a, b| a < b),
            (Binary::Le, |a, b| a <= b),
            (Binary::Gt, |a, b| a > b),
            (Binary::Ge, |a, b| a >= b),
        ];
        for (op, keep) in ops {
            let mut b = Builder::new();
            let h = b.input("h", DType::Float, shape.clone());
            let g = b.input("g", DType::Float, shape.clone());
            let c = b.binary(op, h, g);
            let count = b.reduce(Reduce::Sum, c, None);
            b.output("count", count);
            let f = traj::opt::run(&b.finish()).expect("passes verify");
            let what = format!("sum({op:?}) over {shape:?}");
            let out = agree(&f, &inputs, 0, &what).expect("no error");
            let got = out[0].to_f64()[[]];
            assert_eq!(got, scan(&keep), "{what}");
            if n == 0 {
                assert_eq!(got.to_bits(), (-0.0f64).to_bits(), "{what}");
            }
        }
        let mut b = Builder::new();
        let h = b.input("h", DType::Float, shape.clone());
        let _ = b.input("g", DType::Float, shape.clone());
        let not = b.unary(Unary::Not, h);
        let zeros = b.reduce(Reduce::Sum, not, None);
        b.output("zeros", zeros);
        let d = b.binary(Binary::Sub, h, h);
        let finite = b.reduce(Reduce::Sum, d, None);
        b.output("finite", finite);
        let f = traj::opt::run(&b.finish()).expect("passes verify");
        let what = format!("sum(not h), sum(h - h) over {shape:?}");
        let out = agree(&f, &inputs, 0, &what).expect("no error");
        assert_eq!(out[0].to_f64()[[]], scan(&|a, _| a == 0.0), "{what}");
        let finite = out[1].to_f64()[[]];
        assert_eq!(finite.is_nan(), hs.iter().any(|x| !x.is_finite()), "{what}");
    }
}

#[test]
fn loops_from_parallel_loop_entries_run_in_two_halves_with_the_same_bits() {
    // wide's two passes: a ReLU with its tie count, then the masked back-propagation
    // `select(h >= 0, r a', 0)` with a per-row operand. From `PARALLEL_LOOP` entries each
    // loop is two functions, one a core; the counts of both halves are added. Exact ties
    // (and -0.0, NaN) lie in one half of the rows only, so a half's lost count shows.
    use traj::jit::PARALLEL_LOOP;
    for (m, n, f32, tied_rows) in [
        (1024, 1024, false, 0..512),
        (1024, 1024, false, 512..1024),
        (1023, 1025, false, 511..1023),
        (1024, 1024, true, 600..700),
        (1000, 1000, false, 0..1000),
        (362, 362, false, 100..200),
        // Below `PARALLEL_LOOP` (2^17): one loop, one function.
        (300, 400, false, 0..300),
    ] {
        let mut b = Builder::new();
        let h = b.input("h", DType::Float, vec![m, n]);
        let r = b.input("r", DType::Float, vec![m, 1]);
        let a = b.input("a", DType::Float, vec![1, n]);
        let zero = b.scalar(0.0);
        let relu = b.binary(Binary::Max, h, zero);
        b.output("relu", relu);
        let open = b.binary(Binary::Ge, h, zero);
        let ra = b.binary(Binary::Mul, r, a);
        let back = b.select(open, ra, zero);
        b.output("back", back);
        let tie = b.binary(Binary::Eq, h, zero);
        let ties = b.reduce(Reduce::Sum, tie, None);
        b.output("ties", ties);
        let mut f = b.finish();
        f.f32 = f32;
        let f = traj::opt::run(&f).expect("passes verify");
        let what = format!("[{m}, {n}], f32 {f32}, ties in rows {tied_rows:?}");
        // Two loops, each split in two functions, when they are large enough.
        let text = traj::jit::clif_text(&f).expect("clif");
        let functions =
            text.matches("\nfunction ").count() + text.starts_with("function ") as usize;
        let split = m * n >= PARALLEL_LOOP;
        assert_eq!(functions, if split { 5 } else { 1 }, "{what}");
        let hs: Vec<f64> = (0..m * n)
            .map(|i| {
                if !tied_rows.contains(&(i / n)) {
                    return (i % 7) as f64 - 3.5;
                }
                match i % 6 {
                    0 => 0.0,
                    1 => -0.0,
                    2 => f64::NAN,
                    3 => -1.5,
                    _ => (i % 5) as f64,
                }
            })
            .collect();
        let inputs = [
            floats(hs.clone(), &[m, n]),
            floats((0..m).map(|i| (i % 9) as f64 - 4.0).collect(), &[m, 1]),
            floats((0..n).map(|j| (j % 4) as f64 * 0.5).collect(), &[1, n]),
        ];
        let out = agree(&f, &inputs, 0, &what).expect("no error");
        let want_ties = hs.iter().filter(|x| **x == 0.0).count() as f64;
        assert!(want_ties > 0.0);
        assert_eq!(out[2].to_f64()[[]], want_ties, "{what}");
    }
}

#[test]
fn elementwise_loops_write_over_operands_nothing_reads_later() {
    // relu2's step: `h = x @ w`, a ReLU of it with its tie count, then the masked
    // back-propagation `select(h >= 0, 3 h, 0)`, the last loop to read `h`, writes over
    // h's buffer (`layout::in_place`). With `h` read again afterwards it must not.
    use traj::ir::Prim;
    use traj::jit::layout::{in_place, storage};
    for read_after in [false, true] {
        let (m, k, n) = (6, 4, 10);
        let mut b = Builder::new();
        let x = b.input("x", DType::Float, vec![m, k]);
        let w = b.input("w", DType::Float, vec![k, n]);
        let v = b.input("v", DType::Float, vec![n, 3]);
        let h = b.matmul(x, w);
        let zero = b.scalar(0.0);
        let relu = b.binary(Binary::Max, h, zero);
        let fwd = b.matmul(relu, v);
        b.output("fwd", fwd);
        let open = b.binary(Binary::Ge, h, zero);
        let three = b.scalar(3.0);
        let scaled = b.binary(Binary::Mul, h, three);
        let back = b.select(open, scaled, zero);
        let bwd = b.matmul(back, v);
        b.output("bwd", bwd);
        let total = b.reduce(Reduce::Sum, back, None);
        b.output("total", total);
        // After the select in the IR, but counted in the ReLU's earlier loop.
        let tie = b.binary(Binary::Eq, h, zero);
        let ties = b.reduce(Reduce::Sum, tie, None);
        b.output("ties", ties);
        if read_after {
            let again = b.matmul(h, v);
            b.output("again", again);
        }
        let f = traj::opt::run(&b.finish()).expect("passes verify");
        let over = in_place(&f, &storage(&f));
        let hv = (0..f.insts.len())
            .find(|i| f.insts[*i].prim == Prim::MatMul && f.insts[*i].shape == [m, n])
            .expect("h");
        let select = (0..f.insts.len())
            .find(|i| f.insts[*i].prim == Prim::Select)
            .expect("select");
        let want = (!read_after).then_some(hv);
        assert_eq!(over[select], want, "read after: {read_after}");
        let what = format!("in place, read after: {read_after}");
        // Entries of h that are exactly 0 (ties) and of either sign.
        let inputs = [
            filled(&[m, k], &|i| {
                if i % 5 == 0 {
                    0.0
                } else {
                    (i % 7) as f64 - 3.0
                }
            }),
            filled(&[k, n], &|i| {
                if i % 3 == 0 {
                    0.0
                } else {
                    (i % 4) as f64 - 1.5
                }
            }),
            filled(&[n, 3], &|i| (i % 5) as f64 * 0.25 - 0.5),
        ];
        let out = agree(&f, &inputs, 0, &what).expect("no error");
        if read_after {
            let matrix = |t: &Tensor| t.to_f64().into_dimensionality::<ndarray::Ix2>().unwrap();
            let want = matrix(&inputs[0])
                .dot(&matrix(&inputs[1]))
                .dot(&matrix(&inputs[2]));
            let got = matrix(&out[4]);
            assert!((&got - &want).iter().all(|d| d.abs() < 1e-12), "{what}");
        }
    }
}

#[test]
fn loops_never_write_over_an_operand_still_read_at_other_elements() {
    // `c = -x` read by `3 (c + V(c))`. Where V reads c in the loop at other elements
    // (a broadcast element, row or offset row of c: views of its buffer), the add must not
    // write over c; where V is computed before the loop (a strided column, a transpose) or
    // reads c at the element written (a reshape of all of it), it may.
    use traj::ir::Var;
    use traj::jit::layout::{in_place, storage};
    let (m, n) = (3, 3);
    type View = fn(&mut Builder, Var) -> Var;
    let cases: [(&str, View, bool); 6] = [
        (
            "element",
            |b, c| {
                let e = b.slice(c, &[(0, 1), (0, 1)]);
                b.reshape(e, &[])
            },
            false,
        ),
        ("first row", |b, c| b.slice(c, &[(0, 1), (0, 3)]), false),
        ("last row", |b, c| b.slice(c, &[(2, 3), (0, 3)]), false),
        ("column", |b, c| b.slice(c, &[(0, 3), (1, 2)]), true),
        ("transpose", |b, c| b.transpose(c, &[1, 0]), true),
        (
            "reshape of all",
            |b, c| {
                let flat = b.reshape(c, &[9]);
                b.reshape(flat, &[3, 3])
            },
            true,
        ),
    ];
    for (what, view, may_take) in cases {
        let mut b = Builder::new();
        let x = b.input("x", DType::Float, vec![m, n]);
        let c = b.unary(Unary::Neg, x);
        let v = view(&mut b, c);
        let sum = b.binary(Binary::Add, c, v);
        let three = b.scalar(3.0);
        let out = b.binary(Binary::Mul, sum, three);
        // Two reductions read it (so it is stored, not fused, and not an output).
        let rows = b.reduce(Reduce::Sum, out, Some(vec![1]));
        let cols = b.reduce(Reduce::Sum, out, Some(vec![0]));
        b.output("rows", rows);
        b.output("cols", cols);
        let f = b.finish();
        // The add is fused into the product's loop, which may take c's buffer.
        let over = in_place(&f, &storage(&f));
        assert_eq!(over[out] == Some(c), may_take, "{what}: {over:?}");
        let x = filled(&[m, n], &|i| i as f64 - 2.5);
        let got = agree(&f, std::slice::from_ref(&x), 0, what).expect("no error");
        // By hand: 3 (-x + V(-x)), summed along rows and columns (exact: quarters).
        let xs = x.to_f64();
        let want = |i: usize, j: usize| {
            let c = |i: usize, j: usize| -xs[[i, j]];
            let v = match what {
                "element" => c(0, 0),
                "first row" => c(0, j),
                "last row" => c(2, j),
                "column" => c(i, 1),
                "transpose" => c(j, i),
                _ => c(i, j),
            };
            3.0 * (c(i, j) + v)
        };
        let (rows, cols) = (got[0].to_f64(), got[1].to_f64());
        for k in 0..3 {
            let row: f64 = (0..n).map(|j| want(k, j)).sum();
            let col: f64 = (0..m).map(|i| want(i, k)).sum();
            assert_eq!(
                (rows[[k]], cols[[k]]),
                (row, col),
                "{what}: row and column {k}"
            );
        }
    }
}

#[test]
fn a_relu_step_runs_in_one_buffer_once_its_masks_read_the_relu() {
    // wide's step: `h = x @ w'`, `z = relu(h)` read by two matrix-vector products (one
    // through a lazy transpose), then `select(h >= 0, r v', 0)`. Once `opt::untied_masks`
    // makes the mask `z > 0`, the ReLU writes over h and the select over z (their last
    // readers come first), and every value keeps its bits where nothing ties. With the
    // transposed product of z after the select, the select must not write over z.
    use traj::ir::Prim;
    use traj::jit::layout::{in_place, storage};
    for late in [false, true] {
        let (m, k, n) = (8, 4, 12);
        let mut b = Builder::new();
        let x = b.input("x", DType::Float, vec![m, k]);
        let w = b.input("w", DType::Float, vec![n, k]);
        let v = b.input("v", DType::Float, vec![n, 1]);
        let r = b.input("r", DType::Float, vec![m, 1]);
        let wt = b.transpose(w, &[1, 0]);
        let h = b.matmul(x, wt);
        let zero = b.scalar(0.0);
        let z = b.binary(Binary::Max, h, zero);
        let f_out = b.matmul(z, v);
        b.output("f", f_out);
        let zt = b.transpose(z, &[1, 0]);
        if !late {
            let ga = b.matmul(zt, r);
            b.output("grad:v", ga);
        }
        let vt = b.transpose(v, &[1, 0]);
        let outer = b.matmul(r, vt);
        let open = b.binary(Binary::Ge, h, zero);
        let back = b.select(open, outer, zero);
        let bt = b.transpose(back, &[1, 0]);
        let gw = b.matmul(bt, x);
        b.output("grad:w", gw);
        if late {
            let ga = b.matmul(zt, r);
            b.output("grad:v", ga);
        }
        let tie = b.binary(Binary::Eq, h, zero);
        let ties = b.reduce(Reduce::Sum, tie, None);
        b.output("ties", ties);
        let plain = traj::opt::run(&b.finish()).expect("passes verify");
        let f = traj::opt::untied_masks(&plain);
        let over = in_place(&f, &storage(&f));
        let find = |p: &dyn Fn(&Prim) -> bool| (0..f.insts.len()).find(|i| p(&f.insts[*i].prim));
        let hv = (0..f.insts.len())
            .find(|i| f.insts[*i].prim == Prim::MatMul && f.insts[*i].shape == [m, n])
            .expect("h");
        let relu = find(&|p| *p == Prim::Binary(Binary::Max)).expect("relu");
        let select = find(&|p| *p == Prim::Select).expect("select");
        assert_eq!(over[relu], Some(hv), "late: {late}");
        assert_eq!(over[select], (!late).then_some(relu), "late: {late}");
        let inputs = [
            filled(&[m, k], &|i| ((i * 7) % 11) as f64 * 0.3 - 1.45),
            filled(&[n, k], &|i| ((i * 5) % 9) as f64 * 0.25 - 0.95),
            filled(&[n, 1], &|i| (i % 5) as f64 * 0.5 - 1.0),
            filled(&[m, 1], &|i| (i % 3) as f64 - 1.25),
        ];
        let got = agree(&f, &inputs, 0, "one buffer").expect("no error");
        assert_eq!(
            got[3].to_f64().iter().next(),
            Some(&0.0),
            "the inputs have no tie"
        );
        let want = interp::eval(&plain, &inputs, Env::default()).expect("eval");
        for (g, w) in got.iter().zip(&want) {
            same(g, w).expect("the rewrite keeps every bit");
        }
    }
}

#[test]
fn constant_powers_and_whole_array_tanh_and_log_agree_with_the_interpreter() {
    // After `opt::run` (constant powers as products, as every plan function is), on a
    // loss of powers, tanh and log and its gradient: the values of special and subnormal
    // inputs, and of the ranges where tanh's branches switch, in both backends.
    let specials = [
        0.0,
        -0.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        5e-324,
        -5e-324,
        2.2e-310,
        f64::MIN_POSITIVE,
        1.0,
        -1.0,
        0.2554,
        0.5493,
        20.0,
        -20.0,
        22.0,
        1.34e154,
        -1.34e154,
    ];
    let n = 4096;
    let x = filled(&[n], &|i| match specials.get(i) {
        Some(v) => *v,
        None => ((i as f64) * 0.61803).sin() * 24.0 / (1.0 + (i % 7) as f64),
    });
    for c in [2.0, 3.0, 4.0, -1.0, -2.0, 0.5, 1.0, 0.0, 1.5] {
        let mut b = Builder::new();
        let p = b.input("p", DType::Float, vec![n]);
        let e = b.fill_like(p, c);
        let pw = b.binary(Binary::Pow, p, e);
        let t = b.unary(Unary::Tanh, p);
        let l = b.unary(Unary::Log, pw);
        let s = b.binary(Binary::Add, pw, t);
        let s = b.binary(Binary::Add, s, l);
        let loss = b.reduce(Reduce::Sum, s, None);
        let grads = traj::autodiff::grad_into(&mut b, loss, &[p], &traj::autodiff::Ties::Default)
            .expect("gradient");
        b.output("power", pw);
        b.output("tanh", t);
        b.output("log", l);
        b.output("grad", grads[0]);
        let f = traj::opt::run(&b.finish()).expect("passes verify");
        if c == 2.0 {
            assert!(
                !traj::ir::print(&f).contains("= pow"),
                "{}",
                traj::ir::print(&f)
            );
        }
        agree(&f, std::slice::from_ref(&x), 0, &format!("x ^ {c}")).expect("no error");
    }
}

#[test]
fn empty_tensors_agree() {
    let mut b = Builder::new();
    let x = b.input("x", DType::Float, vec![0, 3]);
    let e = b.unary(Unary::Exp, x);
    let s = b.reduce(Reduce::Sum, e, Some(vec![0]));
    let m = b.reduce(Reduce::Max, x, Some(vec![0]));
    let l = b.reduce(Reduce::LogSumExp, x, Some(vec![0]));
    let t = b.transpose(x, &[1, 0]);
    b.output("e", e);
    b.output("s", s);
    b.output("m", m);
    b.output("l", l);
    b.output("t", t);
    let x = Tensor::Float(ArrayD::zeros(IxDyn(&[0, 3])));
    // Both backends must evaluate it (`agree` gives `None` when both fail), to NumPy's
    // values: sums of nothing are 0, maxima and logsumexps of nothing -inf.
    let out = agree(&b.finish(), &[x], 0, "empty").expect("both backends evaluate it");
    let inf = f64::NEG_INFINITY;
    assert_eq!(out[0], Tensor::Float(ArrayD::zeros(IxDyn(&[0, 3]))));
    assert_eq!(out[1], floats(vec![0.0; 3], &[3]));
    assert_eq!(out[2], floats(vec![inf; 3], &[3]));
    assert_eq!(out[3], floats(vec![inf; 3], &[3]));
    assert_eq!(out[4], Tensor::Float(ArrayD::zeros(IxDyn(&[3, 0]))));
}

#[test]
fn result_shapes_are_checked() {
    let mut b = Builder::new();
    let x = b.input("x", DType::Float, vec![2, 3]);
    let s = b.reduce(Reduce::Sum, x, Some(vec![1]));
    b.output("s", s);
    let mut f = b.finish();
    f.insts[1].shape = vec![7];
    assert!(traj::jit::compile(&f).is_err());
}

// ---- random functions ----

const POOL: &[f64] = &[
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.5,
    2.0,
    3.0,
    -2.5,
    1e300,
    -1e300,
    1e-300,
    5e-324,
    -5e-324,
    700.0,
    -700.0,
    1e-8,
    f64::INFINITY,
    f64::NEG_INFINITY,
    f64::NAN,
];

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        3 => proptest::sample::select(POOL),
        // Few distinct values: exact ties between operands and inside reductions.
        2 => (-2i32..=2).prop_map(f64::from),
        3 => -10.0..10.0f64,
    ]
}

/// Every row of the op table on both backends, in f64x2 loops with a scalar tail and under
/// `precision f32`: the JIT computes each op (a row it cannot compute fails here, not in a
/// user's run), bit for bit the row's scalar function; ops that keep ints, on ints.
#[test]
fn every_op_of_the_table_agrees_with_its_scalar_function() {
    let xs: Vec<f64> = POOL
        .iter()
        .copied()
        .chain((0..23).map(|i| (i as f64 - 11.0) * 0.37))
        .collect();
    let ks: Vec<i64> = vec![-3, -1, 0, 1, 2, i64::MIN, i64::MAX];
    for row in traj::ir::ops::UNARY_OPS {
        for f32 in [false, true] {
            let mut b = Builder::new();
            let x = b.input("x", DType::Float, vec![xs.len()]);
            let y = b.unary(row.op, x);
            b.output("y", y);
            let mut f = b.finish();
            f.f32 = f32;
            let what = format!("{:?} (f32: {f32})", row.op);
            let out = agree(&f, &[floats(xs.clone(), &[xs.len()])], 0, &what)
                .unwrap_or_else(|| panic!("{what}: an error on both backends"));
            if !f32 {
                let want: Vec<f64> = xs.iter().map(|x| (row.scalar)(*x)).collect();
                same(&out[0], &floats(want, &[xs.len()])).unwrap_or_else(|e| panic!("{what}: {e}"));
            }
        }
        let Some(int) = row.int else { continue };
        let mut b = Builder::new();
        let k = b.input("k", DType::Int, vec![ks.len()]);
        let y = b.unary(row.op, k);
        b.output("y", y);
        let f = b.finish();
        let what = format!("{:?} on ints", row.op);
        let out = agree(&f, &[int_tensor(ks.clone(), &[ks.len()])], 0, &what)
            .unwrap_or_else(|| panic!("{what}: an error on both backends"));
        let want: Vec<i64> = ks.iter().map(|k| int(*k)).collect();
        assert_eq!(out[0], int_tensor(want, &[ks.len()]), "{what}");
    }
}

/// Every op of the table but `ToFloat` (the functions' operands here are floats).
fn unary_ops() -> Vec<Unary> {
    traj::ir::ops::UNARY_OPS
        .iter()
        .map(|r| r.op)
        .filter(|op| *op != Unary::ToFloat)
        .collect()
}

const BINARY: &[Binary] = &[
    Binary::Add,
    Binary::Sub,
    Binary::Mul,
    Binary::Div,
    Binary::Pow,
    Binary::FloorDiv,
    Binary::Rem,
    Binary::Max,
    Binary::Min,
    Binary::LogAddExp,
    Binary::Lt,
    Binary::Le,
    Binary::Gt,
    Binary::Ge,
    Binary::Eq,
    Binary::Ne,
    Binary::And,
    Binary::Or,
];

const INT_BINARY: &[Binary] = &[
    Binary::Add,
    Binary::Sub,
    Binary::Mul,
    Binary::Max,
    Binary::Min,
    Binary::FloorDiv,
    Binary::Lt,
    Binary::Eq,
];

const REDUCE: &[Reduce] = &[
    Reduce::Sum,
    Reduce::Max,
    Reduce::Min,
    Reduce::Norm2,
    Reduce::LogSumExp,
];

/// Builds a function from op codes: each op reads earlier values (`p`, `q` pick them)
/// and every value is an output.
/// `random_func` with every value an output (so nothing is fused) or, when `last_only`,
/// only the last float and int values (so values read by several loops are fused into
/// them, or computed again in each: `layout::storage`).
fn random_func(shape: &[usize], ops: &[(u8, u8, u8)], f32: bool) -> Func {
    random_func_outputs(shape, ops, f32, false)
}

fn random_func_outputs(shape: &[usize], ops: &[(u8, u8, u8)], f32: bool, last_only: bool) -> Func {
    let mut b = Builder::new();
    let x = b.input("x", DType::Float, shape.to_vec());
    let y = b.input("y", DType::Float, shape.to_vec());
    let k = b.input("k", DType::Int, shape.to_vec());
    let mut fl = vec![x, y];
    let mut ints = vec![k];
    for &(op, p, q) in ops {
        let a = fl[p as usize % fl.len()];
        let c = fl[q as usize % fl.len()];
        let sa = b.shape(a);
        let compatible =
            |b: &Builder, u, v| traj::ir::types::broadcast(&b.shape(u), &b.shape(v)).is_some();
        let v = match op % 12 {
            0 | 1 => {
                let ops = unary_ops();
                b.unary(ops[(p as usize / 7 + q as usize) % ops.len()], a)
            }
            2..=4 if compatible(&b, a, c) => {
                b.binary(BINARY[(p as usize * 3 + q as usize) % BINARY.len()], a, c)
            }
            5 if compatible(&b, a, c) => {
                let d = fl[(p as usize + q as usize) % fl.len()];
                if compatible(&b, d, c) && compatible(&b, d, a) {
                    b.select(d, a, c)
                } else {
                    continue;
                }
            }
            6 => {
                // A subset of the axes, in a scrambled order.
                let mut axes: Vec<usize> = (0..sa.len()).filter(|i| (q >> i) & 1 == 1).collect();
                if p & 1 == 1 {
                    axes.reverse();
                }
                b.reduce(REDUCE[p as usize / 2 % REDUCE.len()], a, Some(axes))
            }
            7 if sa.len() >= 2 => {
                let perm: Vec<usize> = (0..sa.len()).rev().collect();
                b.transpose(a, &perm)
            }
            8 if !sa.is_empty() => {
                let ranges: Vec<(usize, usize)> =
                    sa.iter().map(|d| ((p as usize) % d, *d)).collect();
                b.slice(a, &ranges)
            }
            9 => {
                let starts: Vec<usize> = sa.iter().map(|_| q as usize % 2).collect();
                let shape: Vec<usize> = sa.iter().map(|d| d + 2).collect();
                b.pad(a, &starts, &shape)
            }
            10 => {
                let n: usize = sa.iter().product();
                if p & 1 == 0 {
                    b.reshape(a, &[n])
                } else {
                    let mut s = vec![2];
                    s.extend_from_slice(&sa);
                    b.broadcast(a, &s)
                }
            }
            11 => {
                let i = ints[p as usize % ints.len()];
                let j = ints[q as usize % ints.len()];
                let r = match q % 4 {
                    0 => b.unary(Unary::Neg, i),
                    1 => b.unary(Unary::Sign, i),
                    _ => b.binary(INT_BINARY[p as usize % INT_BINARY.len()], i, j),
                };
                if b.dtype(r) == DType::Int {
                    ints.push(r);
                    continue;
                }
                r
            }
            _ => continue,
        };
        fl.push(v);
    }
    let outs: Vec<usize> = if last_only {
        fl.last().into_iter().chain(ints.last()).copied().collect()
    } else {
        fl[2..].iter().chain(&ints[1..]).copied().collect()
    };
    for (n, v) in outs.into_iter().enumerate() {
        b.output(&format!("o{n}"), v);
    }
    let mut f = b.finish();
    f.f32 = f32;
    f
}

/// A shape, the values of x, y and k, the op codes, and whether the function is f32.
type Case = (
    Vec<usize>,
    Vec<f64>,
    Vec<f64>,
    Vec<i64>,
    Vec<(u8, u8, u8)>,
    bool,
);

fn case() -> impl Strategy<Value = Case> {
    // Small axes, and some long enough for the f64x2 loops (8 elements a pass) and
    // their scalar tails.
    let axis = prop_oneof![3 => 1usize..=3, 1 => 8usize..=11];
    proptest::collection::vec(axis, 0..=3).prop_flat_map(|shape| {
        let n: usize = shape.iter().product();
        (
            Just(shape),
            proptest::collection::vec(value(), n),
            proptest::collection::vec(value(), n),
            proptest::collection::vec(-3i64..=3, n),
            proptest::collection::vec(any::<(u8, u8, u8)>(), 1..12),
            proptest::bool::weighted(0.2),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn random_functions_agree((shape, xs, ys, ks, ops, f32) in case()) {
        let f = random_func(&shape, &ops, f32);
        let k = int_tensor(ks, &shape);
        agree(&f, &[floats(xs, &shape), floats(ys, &shape), k], 0, "random function");
    }

    #[test]
    fn random_functions_with_one_output_agree((shape, xs, ys, ks, ops, f32) in case()) {
        // Intermediate values are fused into their consumers' loops, cheap ones read by
        // several loops computed again in each, selects blend on their comparisons' masks.
        let f = random_func_outputs(&shape, &ops, f32, true);
        let k = int_tensor(ks, &shape);
        agree(&f, &[floats(xs, &shape), floats(ys, &shape), k], 0, "one output");
    }
}

/// Builds the function `build` makes of inputs x and y (both `[xs.len()]`), with and without
/// `precision f32`, and checks what a whole-buffer (`kernels::vmath`) op must be: `slices`
/// slice ops, each stored and reading stored operands, none under f32; both backends
/// agreeing; and output k equal to `want[k](i)` bit for bit at every entry i.
fn assert_slice_ops_match_libm(
    label: &str,
    xs: &[f64],
    ys: &[f64],
    slices: usize,
    build: impl Fn(&mut Builder, traj::ir::Var, traj::ir::Var),
    want: &[&dyn Fn(usize) -> f64],
) {
    use traj::jit::layout::{Storage, slice_op, storage};
    let n = xs.len();
    for f32 in [false, true] {
        let mut b = Builder::new();
        let x = b.input("x", DType::Float, vec![n]);
        let y = b.input("y", DType::Float, vec![n]);
        build(&mut b, x, y);
        let mut f = b.finish();
        f.f32 = f32;
        let f = traj::opt::run(&f).expect("passes verify");
        let st = storage(&f);
        let found: Vec<usize> = (0..f.insts.len()).filter(|i| slice_op(&f, *i)).collect();
        if f32 {
            assert!(found.is_empty(), "{found:?}");
        } else {
            assert_eq!(found.len(), slices, "{}", traj::ir::print(&f));
            for i in &found {
                assert_eq!(st[*i], Storage::Own, "%{i}");
                for a in &f.insts[*i].args {
                    assert_ne!(st[*a], Storage::Fused, "operand %{a} of %{i}");
                }
            }
        }
        let out = agree(
            &f,
            &[floats(xs.to_vec(), &[n]), floats(ys.to_vec(), &[n])],
            0,
            &format!("{label}, f32 {f32}"),
        )
        .expect("no error");
        if f32 {
            continue;
        }
        for (k, want) in want.iter().enumerate() {
            for (i, g) in out[k].to_f64().iter().enumerate() {
                let w = want(i);
                assert!(
                    g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                    "{} at x = {:e}, y = {:e}: {g:e}, want {w:e}",
                    f.outputs[k].0,
                    xs[i],
                    ys[i]
                );
            }
        }
    }
}

#[test]
fn transcendentals_run_over_whole_buffers_with_libm_bits() {
    // `exp`, `log1p`, `sigmoid`, `softplus` and `logaddexp` are computed over whole
    // buffers by `kernels::vmath` (both backends): their operands are stored, not fused, and
    // every entry must be the scalar libm-based function's, bit for bit, including entries
    // outside libm's main range (overflow, -1, NaN, ±∞) and vector tails. Under
    // `precision f32` they stay entry-by-entry calls.
    use traj::kernels::math;
    let n = 1037;
    let xs: Vec<f64> = (0..n)
        .map(|i| match i % 13 {
            0 => [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1.0, -2.0][i / 13 % 5],
            1 => [800.0, -800.0, 709.9, -745.5, -0.0][i / 13 % 5],
            2 => 1e-300 * i as f64,
            _ => (i as f64 * 0.731).sin() * 30.0 / (1 + i % 7) as f64,
        })
        .collect();
    let ys: Vec<f64> = xs.iter().rev().map(|y| y * 0.5).collect();
    let build = |b: &mut Builder, x, y| {
        let half = b.scalar(0.5);
        let scaled = b.binary(Binary::Mul, x, half);
        let e = b.unary(Unary::Exp, scaled);
        let two = b.scalar(2.0);
        let e2 = b.binary(Binary::Mul, e, two);
        b.output("exp", e2);
        for (name, op) in [
            ("log1p", Unary::Log1p),
            ("sigmoid", Unary::Sigmoid),
            ("softplus", Unary::Softplus),
        ] {
            let v = b.unary(op, x);
            b.output(name, v);
        }
        let l = b.binary(Binary::LogAddExp, x, y);
        b.output("logaddexp", l);
    };
    assert_slice_ops_match_libm(
        "transcendentals",
        &xs,
        &ys,
        5,
        build,
        &[
            &|i| math::exp(xs[i] * 0.5) * 2.0,
            &|i| math::log1p(xs[i]),
            &|i| math::sigmoid(xs[i]),
            &|i| math::softplus(xs[i]),
            &|i| math::logaddexp(xs[i], ys[i]),
        ],
    );
}

#[test]
fn sin_cos_and_pow_run_over_whole_buffers_with_libm_bits() {
    // `sin`, `cos` and `pow` (an array exponent, or a constant one `opt::powers` leaves)
    // are `kernels::vmath` slice ops on both backends: every entry is libm's, bit for bit,
    // including arguments beyond 2^20 π/2 (Payne–Hanek reduction, the scalar function),
    // multiples of π/2, ±0, subnormals, NaN and ±∞, negative bases with integer
    // exponents, results that overflow or are subnormal, and vector tails. Under
    // `precision f32` they stay entry-by-entry calls.
    use traj::kernels::math;
    let n = 1037;
    let xs: Vec<f64> = (0..n)
        .map(|i| match i % 11 {
            0 => [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0, 0.0][i / 11 % 5],
            1 => [1e300, -3e7, 1.7e6, 5e-324, -1e-310][i / 11 % 5],
            2 => (i as f64) * std::f64::consts::FRAC_PI_2,
            3 => -(i as f64) * 0.25,
            _ => (i as f64 * 0.731).sin() * 40.0 / (1 + i % 5) as f64,
        })
        .collect();
    let ys: Vec<f64> = (0..n)
        .map(|i| match i % 7 {
            0 => (i % 9) as f64 - 4.0,
            1 => [0.5, -1.0, 2.0, 1e10, -700.0][i / 7 % 5],
            _ => (i as f64 * 0.377).cos() * 6.0,
        })
        .collect();
    let build = |b: &mut Builder, x, y| {
        let s = b.unary(Unary::Sin, x);
        b.output("sin", s);
        let half = b.scalar(0.5);
        let scaled = b.binary(Binary::Mul, x, half);
        let c = b.unary(Unary::Cos, scaled);
        b.output("cos", c);
        let p = b.binary(Binary::Pow, x, y);
        b.output("pow", p);
        let a = b.unary(Unary::Neg, x);
        let a = b.binary(Binary::Max, x, a);
        let e = b.scalar(1.7);
        let e = b.broadcast(e, &[n]);
        let q = b.binary(Binary::Pow, a, e);
        b.output("pow_const", q);
    };
    assert_slice_ops_match_libm(
        "sin, cos, pow",
        &xs,
        &ys,
        4,
        build,
        &[
            &|i| math::sin(xs[i]),
            &|i| math::cos(xs[i] * 0.5),
            &|i| math::pow(xs[i], ys[i]),
            &|i| math::pow(xs[i].abs(), 1.7),
        ],
    );
}

#[test]
fn tanh_erf_and_log_run_over_whole_buffers_with_libm_bits() {
    // `tanh`, `erf` and `log` are `kernels::vmath` slice ops on both backends: every entry
    // is libm's, bit for bit, at tanh's and erf's switch points (|x| near 0.2554, 0.5493,
    // 0.84375, 1.25, 2.857, 6, 20), in erfc's range on some entries of a block and not
    // others, at ±0, subnormals, NaN and ±∞, and in vector tails. Under `precision f32`
    // they stay entry-by-entry calls.
    use traj::kernels::math;
    let n = 1037;
    let switches = [0.2554, 0.5493, 0.84375, 1.25, 2.857, 6.0, 19.06, 20.0];
    let xs: Vec<f64> = (0..n)
        .map(|i| match i % 9 {
            0 => [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0, 0.0][i / 9 % 5],
            1 => [5e-324, -1e-310, 1e-20, -3e-9, 1e300][i / 9 % 5],
            2 => switches[i / 9 % 8] * (1.0 + (i as f64 - 500.0) * 1e-15),
            3 => -switches[i / 9 % 8],
            _ => (i as f64 * 0.731).sin() * 4.0 / (1 + i % 3) as f64,
        })
        .collect();
    let ys: Vec<f64> = xs.iter().map(|x| x.abs() * 3.0).collect();
    let build = |b: &mut Builder, x, y| {
        let t = b.unary(Unary::Tanh, x);
        b.output("tanh", t);
        let e = b.unary(Unary::Erf, x);
        b.output("erf", e);
        let l = b.unary(Unary::Log, y);
        b.output("log", l);
    };
    assert_slice_ops_match_libm(
        "tanh, erf, log",
        &xs,
        &ys,
        3,
        build,
        &[&|i| math::tanh(xs[i]), &|i| math::erf(xs[i]), &|i| {
            math::log(ys[i])
        }],
    );
}

#[test]
fn sums_over_leading_axes_and_row_logsumexps_keep_the_interpreters_bits() {
    // The JIT sums over leading axes a row at a time and takes a row's logsumexp with one
    // vectorized `exp` over many rows (`jit::rowwise`); the bits must be `math::sum` of
    // each column and `math::logsumexp` of each row. Entries where the order of addition
    // shows (1e16 swallows a lone 1.0); rows of -inf alone, NaN and +inf; shapes around
    // the 8 lanes, the 128-column block and the 1024-entry exp block.
    use traj::kernels::math::{logsumexp, sum};
    for shape in [
        vec![8, 3],
        vec![9, 130],
        vec![17, 5],
        vec![40, 1],
        vec![4, 3, 129],
        vec![300, 10],
        vec![3, 1500],
    ] {
        let n: usize = shape.iter().product();
        let last = *shape.last().expect("2-D or more");
        let lead = n / last;
        let mut b = Builder::new();
        let x = b.input("x", DType::Float, shape.clone());
        let by_col = b.reduce(Reduce::Sum, x, Some(vec![0]));
        b.output("by_col", by_col);
        let leading: Vec<usize> = (0..shape.len() - 1).collect();
        let by_lead = b.reduce(Reduce::Sum, x, Some(leading));
        b.output("by_lead", by_lead);
        let lse = b.reduce(Reduce::LogSumExp, x, Some(vec![shape.len() - 1]));
        b.output("lse", lse);
        let f = traj::opt::run(&b.finish()).expect("passes verify");
        let mut xs: Vec<f64> = (0..n)
            .map(|i| match i % 5 {
                0 => 1e16,
                2 => -1e16,
                _ => 1.0 + (i % 3) as f64 + (i % 7) as f64 * 0.125,
            })
            .collect();
        let mut lse_in: Vec<f64> = (0..n)
            .map(|i| ((i * 37) % 101) as f64 * 0.5 - 20.0)
            .collect();
        if lead >= 3 {
            lse_in[..last].fill(f64::NEG_INFINITY);
            lse_in[last] = f64::NAN;
            lse_in[2 * last] = f64::INFINITY;
            xs[1] = f64::NAN;
        }
        let what = format!("sums and logsumexps of {shape:?}");
        for (k, input) in [xs, lse_in].into_iter().enumerate() {
            let out = agree(&f, &[floats(input.clone(), &shape)], 0, &what).expect("no error");
            if k == 1 {
                for r in 0..lead {
                    let want = logsumexp(input[r * last..(r + 1) * last].iter().copied());
                    let got = out[2].to_f64().as_slice().expect("contiguous")[r];
                    assert!(got.to_bits() == want.to_bits() || got.is_nan() && want.is_nan());
                }
                continue;
            }
            let cols = n / shape[0];
            for c in 0..cols {
                let col: Vec<f64> = (0..shape[0]).map(|r| input[r * cols + c]).collect();
                let got = out[0].to_f64().as_slice().expect("contiguous")[c];
                assert!(
                    got.to_bits() == sum(&col).to_bits() || got.is_nan(),
                    "{what}"
                );
            }
            for c in 0..last {
                let col: Vec<f64> = (0..lead).map(|r| input[r * last + c]).collect();
                let got = out[1].to_f64().as_slice().expect("contiguous")[c];
                assert!(
                    got.to_bits() == sum(&col).to_bits() || got.is_nan(),
                    "{what}"
                );
            }
        }
    }
}

#[test]
fn cheap_values_read_by_several_loops_are_computed_again_in_each() {
    // Softplus written out, `max(z, 0) + log1p(exp(-abs(z)))`, and its gradient as reverse
    // mode makes it (`abs` as `max(z, -z)`). `z = y * u`, `-z`, `abs(z)` and `abs(z) > -z`
    // are read by several loops and computed again in each (`layout::storage`), never
    // stored; the division's value, read by two selects of one loop, is computed once
    // there; `-abs(z)` feeds `exp`, a whole-buffer op, so it is stored. Both backends
    // agree bit for bit, with and without `precision f32`, on ±0, ±inf, NaN and ties.
    use traj::jit::layout::{Storage, storage};
    for (n, f32) in [
        (5, false),
        (8, false),
        (200, false),
        (1001, false),
        (200, true),
    ] {
        let mut b = Builder::new();
        let u = b.input("u", DType::Float, vec![n]);
        let y = b.input("y", DType::Float, vec![n]);
        let z = b.binary(Binary::Mul, y, u);
        let zero = b.scalar(0.0);
        let relu = b.binary(Binary::Max, z, zero);
        let nz = b.unary(Unary::Neg, z);
        let abs = b.binary(Binary::Max, z, nz);
        let nabs = b.unary(Unary::Neg, abs);
        let e = b.unary(Unary::Exp, nabs);
        let l = b.unary(Unary::Log1p, e);
        let sp = b.binary(Binary::Add, relu, l);
        let loss = b.reduce(Reduce::Sum, sp, None);
        b.output("loss", loss);
        let one = b.scalar(1.0);
        let g = b.scalar(0.005);
        let den = b.binary(Binary::Add, one, e);
        let q = b.binary(Binary::Div, g, den);
        let qe = b.binary(Binary::Mul, q, e);
        let t = b.unary(Unary::Neg, qe);
        let pos = b.binary(Binary::Gt, abs, nz);
        let zs = b.broadcast(zero, &[n]);
        let s1 = b.select(pos, t, zs);
        let s2 = b.select(pos, zs, t);
        let s2n = b.unary(Unary::Neg, s2);
        let s = b.binary(Binary::Add, s1, s2n);
        let up = b.binary(Binary::Gt, relu, zero);
        let gs = b.broadcast(g, &[n]);
        let r = b.select(up, gs, zs);
        let dz = b.binary(Binary::Add, s, r);
        let du = b.binary(Binary::Mul, dz, y);
        b.output("du", du);
        let tie1 = b.binary(Binary::Eq, z, zero);
        let ties1 = b.reduce(Reduce::Sum, tie1, None);
        let tie2 = b.binary(Binary::Eq, z, nz);
        let ties2 = b.reduce(Reduce::Sum, tie2, None);
        let ties = b.binary(Binary::Add, ties1, ties2);
        b.output("ties", ties);
        let mut f = b.finish();
        f.f32 = f32;
        let st = storage(&f);
        let what = format!("n {n}, f32 {f32}");
        for (v, name) in [
            (z, "z"),
            (nz, "-z"),
            (abs, "abs"),
            (pos, "abs > -z"),
            (t, "-q e"),
        ] {
            assert_eq!(st[v], Storage::Fused, "{what}: {name}");
        }
        if !f32 {
            assert_eq!(st[nabs], Storage::Own, "{what}: exp's operand");
        }
        let us: Vec<f64> = (0..n)
            .map(|i| match i % 9 {
                0 => 0.0,
                1 => -0.0,
                2 if i > 9 => f64::NAN,
                3 if i > 9 => f64::INFINITY,
                4 if i > 9 => f64::NEG_INFINITY,
                _ => ((i * 37 % 23) as f64 - 11.0) * 0.37,
            })
            .collect();
        let ys: Vec<f64> = (0..n)
            .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        let out =
            agree(&f, &[floats(us.clone(), &[n]), floats(ys, &[n])], 0, &what).expect("no error");
        let zeros = us.iter().filter(|x| **x == 0.0).count() as f64;
        assert_eq!(out[2].to_f64()[[]], 2.0 * zeros, "{what}: ties");
    }
}

#[test]
fn a_bias_add_read_by_its_relu_and_tie_count_is_fused_into_the_relus_loop() {
    // mlp's `h = X W' + b`: read by `max(h, 0)` and by the tie count `sum(h == 0)`. It is
    // computed in the ReLU's loop, never stored (`layout::storage`); with a reader that
    // needs it in memory (a whole-buffer op) it must be stored. Ties, -0.0 and NaN among the sums; the counts and the ReLU must
    // match the interpreter's bits.
    use traj::jit::layout::{Storage, storage};
    for (m, n, another_reader) in [(6, 9, false), (5, 8, false), (6, 9, true), (64, 64, false)] {
        let mut b = Builder::new();
        let xw = b.input("xw", DType::Float, vec![m, n]);
        let bias = b.input("bias", DType::Float, vec![n]);
        let wide = b.broadcast(bias, &[m, n]);
        let h = b.binary(Binary::Add, xw, wide);
        let zero = b.scalar(0.0);
        let relu = b.binary(Binary::Max, h, zero);
        b.output("relu", relu);
        let tie = b.binary(Binary::Eq, h, zero);
        let ties = b.reduce(Reduce::Sum, tie, None);
        b.output("ties", ties);
        if another_reader {
            // `exp` runs over whole buffers, so `h` must be stored for it.
            let th = b.unary(Unary::Exp, h);
            let back = b.binary(Binary::Mul, th, relu);
            b.output("back", back);
        }
        let f = traj::opt::run(&b.finish()).expect("passes verify");
        let st = storage(&f);
        let add = (0..f.insts.len())
            .find(|i| f.insts[*i].prim == traj::ir::Prim::Binary(Binary::Add))
            .expect("the bias add");
        let what = format!("[{m}, {n}], another reader {another_reader}");
        assert_eq!(
            st[add] == Storage::Fused,
            !another_reader,
            "{what}: {:?}",
            st[add]
        );
        let xws: Vec<f64> = (0..m * n)
            .map(|i| match i % 7 {
                0 => -((i % n) as f64) * 0.25,
                1 => -0.0,
                2 if i > n => f64::NAN,
                _ => (i % 11) as f64 - 5.0,
            })
            .collect();
        let biases: Vec<f64> = (0..n).map(|j| j as f64 * 0.25).collect();
        let inputs = [floats(xws.clone(), &[m, n]), floats(biases.clone(), &[n])];
        let out = agree(&f, &inputs, 0, &what).expect("no error");
        let want = (0..m * n)
            .filter(|i| xws[*i] + biases[i % n] == 0.0)
            .count() as f64;
        assert!(want > 0.0, "{what}: no ties");
        assert_eq!(out[1].to_f64()[[]], want, "{what}");
    }
}

#[test]
fn slice_ops_in_two_halves_keep_every_entry() {
    // `tanh`, `exp`, `log` and `logaddexp` from 2^15 entries run in two halves, one a core
    // (`host::in_halves`); each entry must be the scalar function's, at both ends of the
    // split and in odd lengths.
    use traj::kernels::math;
    for n in [32_767, 32_768, 40_001, 65_536] {
        let mut b = Builder::new();
        let x = b.input("x", DType::Float, vec![n]);
        let y = b.input("y", DType::Float, vec![n]);
        let t = b.unary(Unary::Tanh, x);
        b.output("tanh", t);
        let e = b.unary(Unary::Exp, x);
        b.output("exp", e);
        let l = b.unary(Unary::Log, y);
        b.output("log", l);
        let la = b.binary(Binary::LogAddExp, x, y);
        b.output("logaddexp", la);
        let f = traj::opt::run(&b.finish()).expect("passes verify");
        let xs: Vec<f64> = (0..n).map(|i| (i as f64 - n as f64 / 2.0) * 1e-3).collect();
        let ys: Vec<f64> = (0..n).map(|i| (i % 977) as f64 * 0.01 + 1e-3).collect();
        let inputs = [floats(xs.clone(), &[n]), floats(ys.clone(), &[n])];
        let what = format!("{n} entries");
        let out = agree(&f, &inputs, 0, &what).expect("no error");
        for i in [0, n / 2 - 1, n / 2, n / 2 + 1, n - 1] {
            let at = |k: usize| out[k].to_f64().as_slice().expect("contiguous")[i];
            assert_eq!(at(0).to_bits(), math::tanh(xs[i]).to_bits(), "{what} {i}");
            assert_eq!(at(1).to_bits(), math::exp(xs[i]).to_bits(), "{what} {i}");
            assert_eq!(at(2).to_bits(), math::log(ys[i]).to_bits(), "{what} {i}");
            let want = math::logaddexp(xs[i], ys[i]);
            assert_eq!(at(3).to_bits(), want.to_bits(), "{what} {i}");
        }
    }
}

/// Every op of the table with a whole-slice form (`Unary::slice`, `Binary::slice`) is a
/// `layout::slice_op` of a float array, and both backends compute it — the JIT by the
/// op's host shim (`jit::host`'s `slice_shims!`, generated from the same `slice()`) — bit for
/// bit the scalar function at every entry, below and above the two-halves size.
#[test]
fn every_op_with_a_slice_form_runs_over_whole_buffers_on_both_backends() {
    use traj::jit::layout::slice_op;
    let unary: Vec<Unary> = unary_ops()
        .into_iter()
        .filter(|op| op.slice().is_some())
        .collect();
    let binary: Vec<Binary> = BINARY
        .iter()
        .copied()
        .filter(|op| op.slice().is_some())
        .collect();
    assert!(unary.contains(&Unary::Tanh) && binary.contains(&Binary::Pow));
    for n in [1037, 40_001] {
        let xs: Vec<f64> = (0..n)
            .map(|i| match i % 17 {
                0 => [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0, 0.0][i / 17 % 5],
                1 => [800.0, -800.0, 1e-300, -1.0, 3e7][i / 17 % 5],
                _ => (i as f64 * 0.731).sin() * 20.0 / (1 + i % 7) as f64,
            })
            .collect();
        let ys: Vec<f64> = (0..n)
            .map(|i| match i % 5 {
                0 => (i % 9) as f64 - 4.0,
                _ => (i as f64 * 0.377).cos() * 6.0,
            })
            .collect();
        let inputs = [floats(xs.clone(), &[n]), floats(ys.clone(), &[n])];
        let ops = unary
            .iter()
            .map(|op| (format!("{op:?}"), Prim::Unary(*op)))
            .chain(
                binary
                    .iter()
                    .map(|op| (format!("{op:?}"), Prim::Binary(*op))),
            );
        for (name, prim) in ops {
            let mut b = Builder::new();
            let x = b.input("x", DType::Float, vec![n]);
            let y = b.input("y", DType::Float, vec![n]);
            let v = match prim {
                Prim::Unary(op) => b.unary(op, x),
                Prim::Binary(op) => b.binary(op, x, y),
                _ => unreachable!(),
            };
            b.output("v", v);
            let f = b.finish();
            let what = format!("{name} over {n} entries");
            assert!(slice_op(&f, v), "{what}: not a slice op");
            let out = agree(&f, &inputs, 0, &what).expect("no error");
            for (i, g) in out[0].to_f64().iter().enumerate() {
                let w = match prim {
                    Prim::Unary(op) => (op.row().scalar)(xs[i]),
                    Prim::Binary(op) => interp::binary(op, xs[i], ys[i]),
                    _ => unreachable!(),
                };
                assert!(
                    g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                    "{what} at x = {:e}, y = {:e}: {g:e}, want {w:e}",
                    xs[i],
                    ys[i]
                );
            }
        }
    }
}

/// A generated matrix-writing loop of the bias-gradient class: an elementwise expression
/// of `x`, `y` (`[m, n]`), a row vector broadcast down (`[n]`) and a column broadcast
/// across (`[m, 1]`), stored (it is an output and a product reads it), then summed over
/// its rows; `tie` adds a tie count `sum(x == 0)` to the same loop.
fn column_sum_func(m: usize, n: usize, ops: &[(u8, u8, u8)], tie: bool) -> Func {
    let mut b = Builder::new();
    let x = b.input("x", DType::Float, vec![m, n]);
    let y = b.input("y", DType::Float, vec![m, n]);
    let row = b.input("row", DType::Float, vec![n]);
    let col = b.input("col", DType::Float, vec![m, 1]);
    let row = b.broadcast(row, &[m, n]);
    let col = b.broadcast(col, &[m, n]);
    let zero = b.scalar(0.0);
    let zeros = b.broadcast(zero, &[m, n]);
    let mut pool = vec![x, y, row, col];
    for &(op, p, q) in ops {
        let a = pool[p as usize % pool.len()];
        let c = pool[q as usize % pool.len()];
        let v = match op % 8 {
            0 => b.binary(Binary::Add, a, c),
            1 => b.binary(Binary::Sub, a, c),
            2 => b.binary(Binary::Mul, a, c),
            3 => b.binary(Binary::Max, a, zeros),
            4 => {
                let mask = b.binary(Binary::Gt, a, zeros);
                b.select(mask, c, zeros)
            }
            5 => b.binary(Binary::Div, a, c),
            6 => b.unary(Unary::Neg, a),
            _ => b.binary(Binary::Min, a, c),
        };
        pool.push(v);
    }
    // Added to `y` last, so the matrix is an elementwise loop of its own however the
    // passes simplify the rest.
    let last = *pool.last().expect("x at least");
    let g = b.binary(Binary::Add, last, y);
    b.output("g", g);
    let sums = b.reduce(Reduce::Sum, g, Some(vec![0]));
    b.output("sums", sums);
    let gt = b.transpose(g, &[1, 0]);
    let prod = b.matmul(gt, y);
    b.output("g' y", prod);
    if tie {
        let eq = b.binary(Binary::Eq, x, zeros);
        let ties = b.reduce(Reduce::Sum, eq, None);
        b.output("ties", ties);
    }
    traj::opt::run(&b.finish()).expect("passes verify")
}

/// Entries whose sums round differently in different orders, with signed zeros, infinities
/// and NaN among them (`key` picks the stream).
fn spread(len: usize, key: u64) -> Vec<f64> {
    let rng = traj::rng::Stream::new(11, "column-sums", key);
    (0..len as u64)
        .map(|i| match (rng.normal(i).abs() * 1e6) as u64 % 89 {
            0 => -0.0,
            1 => 0.0,
            2 => f64::INFINITY,
            3 => f64::NEG_INFINITY,
            4 => f64::NAN,
            5..=14 => 0.0,
            k => rng.normal(i + len as u64) * 10f64.powi(k as i32 % 17 - 8),
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(120))]
    #[test]
    fn column_sums_are_added_up_in_the_loop_that_writes_the_matrix(
        m in prop_oneof![Just(8usize), Just(9), Just(15), Just(16), Just(17), Just(23), Just(64), Just(131)],
        n in prop_oneof![Just(1usize), Just(2), Just(3), Just(10), Just(33)],
        ops in proptest::collection::vec(any::<(u8, u8, u8)>(), 1..6),
        tie in any::<bool>(),
        key in 0u64..1000,
    ) {
        // `layout::column_sum` puts the sum into the matrix's loop (row r into lane r mod 8,
        // the last m mod 8 rows into slots of their own); the sums must be the
        // interpreter's, which are `math::sum` of each column.
        use traj::jit::layout::{column_sum, storage};
        let f = column_sum_func(m, n, &ops, tie);
        let sum = (0..f.insts.len())
            .find(|i| matches!(&f.insts[*i].prim, Prim::ReduceSum(a) if a.as_slice() == [0]))
            .expect("the column sum");
        let g = f.insts[sum].args[0];
        let fused = column_sum(&f, &storage(&f), g);
        prop_assert_eq!(fused.map(|(r, _)| r), Some(sum), "{}", traj::ir::print(&f));
        let inputs = [
            floats(spread(m * n, key), &[m, n]),
            floats(spread(m * n, key + 1000), &[m, n]),
            floats(spread(n, key + 2000), &[n]),
            floats(spread(m, key + 3000), &[m, 1]),
        ];
        let out = agree(&f, &inputs, 0, "column sums").expect("no error");
        let gs = out[0].to_f64();
        let gs = gs.as_slice().expect("contiguous");
        let sums = out[1].to_f64();
        for c in 0..n {
            let column: Vec<f64> = (0..m).map(|r| gs[r * n + c]).collect();
            let want = traj::kernels::math::sum(&column);
            let got = sums.as_slice().expect("contiguous")[c];
            prop_assert!(got.to_bits() == want.to_bits() || got.is_nan() && want.is_nan());
        }
    }
}

#[test]
fn a_column_sum_after_other_work_gets_a_pass_of_its_own() {
    // With a loop between the matrix's and the sum, the sum is not moved into the matrix's
    // loop (`layout::column_sum`); both backends still agree.
    use traj::jit::layout::{column_sum, storage};
    let (m, n) = (16, 5);
    let mut b = Builder::new();
    let x = b.input("x", DType::Float, vec![m, n]);
    let y = b.input("y", DType::Float, vec![m, n]);
    let g = b.binary(Binary::Mul, x, y);
    b.output("g", g);
    let h = b.binary(Binary::Sub, x, y);
    b.output("h", h);
    let sums = b.reduce(Reduce::Sum, g, Some(vec![0]));
    b.output("sums", sums);
    let f = traj::opt::run(&b.finish()).expect("passes verify");
    let st = storage(&f);
    let at = (0..f.insts.len())
        .find(|i| f.insts[*i].prim == Prim::Binary(Binary::Mul))
        .expect("g");
    assert_eq!(column_sum(&f, &st, at), None, "{}", traj::ir::print(&f));
    let inputs = [
        floats(spread(m * n, 1), &[m, n]),
        floats(spread(m * n, 2), &[m, n]),
    ];
    agree(&f, &inputs, 0, "a sum after other work");
}

#[test]
fn relus_computed_by_their_products_have_the_interpreters_bits() {
    // `max(x @ w (+ bias), 0)` and its tie count `sum(x @ w (+ bias) == 0)`, where nothing
    // else reads the product, come out of the product's call
    // (`layout::relus_after_products`, `kernels::math::matmul_relu_into`): both routes of
    // `small_gemm` (sgd's `xb @ W'` is computed as its transpose), either operand held
    // transposed, a bias on either side of the add, chains that start from a product
    // (k ≤ 16), and entries that are exactly ±0 (ties) or NaN. Where the product is read
    // again, or the ReLU's loop counts anything else, the loop stays; either way the JIT
    // gives the interpreter's bits, and the count is the exact number of zeros.
    use traj::jit::layout::{relus_after_products, storage};
    // (m, k, n, x held transposed, w held transposed, bias: 0 none, 1 after, 2 before)
    let cases = [
        (32, 32, 256, false, true, 0),
        (32, 32, 256, false, true, 1),
        (16, 16, 16, false, false, 2),
        (8, 24, 16, true, false, 1),
        (5, 12, 24, false, false, 1),
        (24, 40, 8, true, true, 2),
        (12, 6, 32, false, true, 0),
    ];
    for (m, k, n, x_t, w_t, bias) in cases {
        for variant in [
            "fused",
            "relu returned",
            "product read again",
            "another count",
        ] {
            let mut b = Builder::new();
            let xs = if x_t { vec![k, m] } else { vec![m, k] };
            let ws = if w_t { vec![n, k] } else { vec![k, n] };
            let x = b.input("x", DType::Float, xs.clone());
            let w = b.input("w", DType::Float, ws.clone());
            let c = b.input("c", DType::Float, vec![n]);
            let x2 = if x_t { b.transpose(x, &[1, 0]) } else { x };
            let w2 = if w_t { b.transpose(w, &[1, 0]) } else { w };
            let p = b.matmul(x2, w2);
            let h = match bias {
                0 => p,
                1 => b.binary(Binary::Add, p, c),
                _ => b.binary(Binary::Add, c, p),
            };
            let zero = b.scalar(0.0);
            let relu = b.binary(Binary::Max, h, zero);
            let v = b.input("v", DType::Float, vec![n, 3]);
            let out = b.matmul(relu, v);
            b.output("out", out);
            let tie = b.binary(Binary::Eq, h, zero);
            let ties = b.reduce(Reduce::Sum, tie, None);
            b.output("ties", ties);
            match variant {
                "relu returned" => b.output("relu", relu),
                "product read again" => {
                    let again = b.matmul(p, v);
                    b.output("again", again);
                }
                "another count" => {
                    let below = b.binary(Binary::Lt, h, c);
                    let count = b.reduce(Reduce::Sum, below, None);
                    b.output("below", count);
                }
                _ => {}
            }
            let f = traj::opt::run(&b.finish()).expect("passes verify");
            let fused = relus_after_products(&f, &storage(&f));
            let what = format!("{m}x{k}x{n} x_t {x_t} w_t {w_t} bias {bias}: {variant}");
            let fits = n % 8 == 0 && m >= 4;
            assert_eq!(
                fused.len(),
                usize::from(fits && matches!(variant, "fused" | "relu returned")),
                "{what}: {fused:?}"
            );
            // Zero rows of x (ties wherever the bias is 0 too): of -0.0, whose products
            // with w's positive columns (j % 4 == 0) are -0.0 where a chain starts from
            // its first product (k ≤ 16), and -0.0 plus a -0.0 bias is -0.0 (the ReLU
            // keeps -0.0); a NaN; signed values.
            let xv = |i: usize| {
                let (r, col) = if x_t { (i % m, i / m) } else { (i / k, i % k) };
                match (r % 4, (r + col) % 11) {
                    (0, _) if r % 8 == 0 => -0.0,
                    (0, _) => 0.0,
                    (_, 3) if r == 5 => f64::NAN,
                    _ => ((r * 7 + col * 3) % 13) as f64 * 0.25 - 1.5,
                }
            };
            let wv = |i: usize| {
                let (q, j) = if w_t { (i % k, i / k) } else { (i / n, i % n) };
                if j % 4 == 0 {
                    0.5 + q as f64 * 0.25
                } else {
                    ((i * 5) % 9) as f64 * 0.5 - 2.0
                }
            };
            let cv = |j: usize| match j % 6 {
                0 => -0.0,
                3 => 0.0,
                _ => j as f64 * 0.125 - 1.0,
            };
            let inputs = [
                filled(&xs, &xv),
                filled(&ws, &wv),
                filled(&[n], &cv),
                filled(&[n, 3], &|i| (i % 5) as f64 - 2.0),
            ];
            let got = agree(&f, &inputs, 0, &what).expect("no error");
            // The count, by a scan of the interpreter's h.
            let xm = inputs[0].to_f64();
            let wm = inputs[1].to_f64();
            let mut zeros = 0;
            for i in 0..m {
                for j in 0..n {
                    let mut s = 0.0f64;
                    for q in 0..k {
                        let a = if x_t { xm[[q, i]] } else { xm[[i, q]] };
                        let bq = if w_t { wm[[j, q]] } else { wm[[q, j]] };
                        s = a.mul_add(bq, s);
                    }
                    let hv = if bias == 0 { s } else { s + cv(j) };
                    zeros += usize::from(hv == 0.0);
                }
            }
            assert_eq!(got[1].to_f64()[[]], zeros as f64, "{what}");
            assert!(zeros > 0, "{what}: the inputs make ties");
            if variant == "relu returned" && k <= 16 && m * k * n <= 4096 {
                let relu = got[2].to_f64();
                assert!(
                    relu.iter().any(|v| v.to_bits() == (-0.0f64).to_bits()),
                    "{what}: a -0.0 kept"
                );
            }
        }
    }
}
