//! The gradient function for steps that record nothing: there the loss is needed only to
//! know that it is finite, so the work that only the loss needs is replaced by a check
//! that its other operands lie within bounds under which interval arithmetic proves it
//! finite.
//!
//! The loss itself is not computed: the function's first output becomes `bounded`, 1.0
//! when every entry of the guarded values lies within ±B (so is not NaN), else 0.0. Gradients and the
//! tie count are the same instructions as before, so their bits are the same. A caller
//! that sees 0.0 computes the step again with the full function. Only worth it when the
//! loss-only work costs more than the check: logistic and cross-entropy losses, whose
//! `log`/`exp` work is done once more for the loss alone.

use crate::ir::ops::Jit;
use crate::ir::types::DType;
use crate::ir::{Binary, Builder, Func, Prim, Reduce, Unary, Var};

/// Every bound must stay within ±LIMIT, far enough from f64's largest value (1.8e308)
/// that the bounds' own rounding cannot matter.
const LIMIT: f64 = 1e300;

/// The bounds tried for the guarded values, widest first: the widest that proves the loss
/// finite is taken, so that the check fails only in runs near overflow.
const BOUNDS: [f64; 13] = [
    1e300, 1e250, 1e200, 1e150, 1e100, 1e50, 1e20, 1e10, 1e5, 600.0, 300.0, 100.0, 30.0,
];

/// Relative slack added to each bound: covers libm's error of an ulp or so and the
/// rounding of sums (reductions add `n · 2.3e-16` more).
const SLACK: f64 = 1e-6;

/// The values of an int tensor (any i64).
const INT_RANGE: Range = Range {
    lo: -9.3e18,
    hi: 9.3e18,
};

/// A closed interval that holds every entry of a value (so none is NaN).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Range {
    lo: f64,
    hi: f64,
}

impl Range {
    fn of(a: f64, b: f64) -> Range {
        Range {
            lo: a.min(b),
            hi: a.max(b),
        }
    }

    fn union(self, o: Range) -> Range {
        Range {
            lo: self.lo.min(o.lo),
            hi: self.hi.max(o.hi),
        }
    }

    fn corners(a: Range, b: Range, op: impl Fn(f64, f64) -> f64) -> Range {
        let c = [
            op(a.lo, b.lo),
            op(a.lo, b.hi),
            op(a.hi, b.lo),
            op(a.hi, b.hi),
        ];
        Range {
            lo: c.iter().copied().fold(f64::INFINITY, f64::min),
            hi: c.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }

    /// Widened by `rel` of each end's magnitude (a zero end stays: a sign is exact), or
    /// `None` beyond ±LIMIT (NaN ends included).
    fn widened(self, rel: f64) -> Option<Range> {
        let r = Range {
            lo: self.lo - self.lo.abs() * rel,
            hi: self.hi + self.hi.abs() * rel,
        };
        (r.lo >= -LIMIT && r.hi <= LIMIT).then_some(r)
    }
}

/// The quiet variant of `grad` (outputs `loss, grad:P..., ties`), or `None` when the loss
/// cannot be proven finite from bounds, when the check would cost about what it saves, or
/// under `precision f32` (whose overflow threshold is f32's).
pub fn quiet(grad: &Func) -> Option<Func> {
    if grad.f32 {
        return None;
    }
    let (name, loss) = grad.outputs.first()?;
    if name != "loss" {
        return None;
    }
    let only = loss_only(grad, *loss);
    if !only[*loss] {
        // A gradient reads the loss: it is computed anyway.
        return None;
    }
    let known = ranges(grad, &[], 0.0);
    let mut guarded: Vec<Var> = Vec::new();
    for (i, inst) in grad.insts.iter().enumerate() {
        if !only[i] {
            continue;
        }
        for &a in &inst.args {
            if !only[a] && known[a].is_none() && !guarded.contains(&a) {
                guarded.push(a);
            }
        }
    }
    let proves = |guarded: &[Var], b: f64| ranges(grad, guarded, b)[*loss].is_some();
    let bound = BOUNDS.iter().copied().find(|&b| proves(&guarded, b))?;
    // A guard whose value the others bound is not needed (`exp(-|z|)` once `z` is
    // guarded).
    for i in (0..guarded.len()).rev() {
        let mut fewer = guarded.clone();
        fewer.remove(i);
        if proves(&fewer, bound) {
            guarded = fewer;
        }
    }
    let saved: f64 = (0..grad.insts.len())
        .filter(|&i| only[i])
        .map(|i| cost(grad, i))
        .sum();
    let check: f64 = guarded.iter().map(|&g| 3.0 * entries(grad, g)).sum();
    if saved <= 2.0 * check {
        return None;
    }

    let mut b = Builder {
        func: grad.clone(),
        span: grad.insts[*loss].span,
    };
    // How many guarded entries lie within ±bound (a sum of 0/1 flags: exact in any
    // order, and a vectorized sum where a minimum would be a chain), against how many
    // there are.
    let mut within = None;
    let mut total = 0.0;
    for &g in &guarded {
        let (hi, lo) = (b.scalar(bound), b.scalar(-bound));
        let below = b.binary(Binary::Le, g, hi);
        let above = b.binary(Binary::Ge, g, lo);
        let both = b.binary(Binary::Mul, below, above);
        let count = b.reduce(Reduce::Sum, both, None);
        within = Some(match within {
            Some(w) => b.binary(Binary::Add, w, count),
            None => count,
        });
        total += entries(grad, g);
    }
    let flag = match within {
        Some(w) => {
            let total = b.scalar(total);
            b.binary(Binary::Eq, w, total)
        }
        None => b.scalar(1.0),
    };
    let mut f = b.finish();
    f.outputs[0] = ("bounded".to_string(), flag);
    Some(super::dce(&f))
}

/// Which instructions only the loss needs: the loss and whatever only such instructions
/// read (inputs, constants and draws are leaves, never counted).
fn loss_only(f: &Func, loss: Var) -> Vec<bool> {
    let n = f.insts.len();
    let mut uses: Vec<Vec<Var>> = vec![Vec::new(); n];
    for (i, inst) in f.insts.iter().enumerate() {
        for &a in &inst.args {
            uses[a].push(i);
        }
    }
    let leaf = |i: usize| {
        matches!(
            f.insts[i].prim,
            Prim::Input(_) | Prim::Const(_) | Prim::Random { .. }
        )
    };
    let mut only = vec![false; n];
    let other_output = |i: usize| f.outputs[1..].iter().any(|(_, v)| *v == i);
    only[loss] = !leaf(loss) && !other_output(loss);
    for i in (0..loss).rev() {
        only[i] =
            !leaf(i) && !other_output(i) && !uses[i].is_empty() && uses[i].iter().all(|&u| only[u]);
    }
    only
}

fn entries(f: &Func, v: Var) -> f64 {
    f.insts[v].shape.iter().product::<usize>() as f64
}

/// A rough cost of instruction `i`: its entries, sixteen times over for a libm function,
/// multiply-adds for a product.
fn cost(f: &Func, i: usize) -> f64 {
    let inst = &f.insts[i];
    let arg = |k: usize| entries(f, inst.args[k]);
    match &inst.prim {
        Prim::Unary(op) if matches!(op.row().jit, Jit::Call(_)) => 16.0 * entries(f, i),
        Prim::Binary(Binary::LogAddExp | Binary::Pow) => 16.0 * entries(f, i),
        Prim::LogSumExp(_) => 16.0 * arg(0),
        Prim::ReduceSum(_)
        | Prim::ReduceMax(_)
        | Prim::ReduceMin(_)
        | Prim::ReduceProd(_)
        | Prim::Norm2(_) => arg(0),
        Prim::MatMul => entries(f, i) * f.insts[inst.args[0]].shape[1] as f64,
        Prim::Reshape(_) => 0.0,
        _ => entries(f, i),
    }
}

/// The range of each value of `f` that bounds prove: constants', ints', those of
/// `guarded` (±`bound`), and what is computed from known ranges.
fn ranges(f: &Func, guarded: &[Var], bound: f64) -> Vec<Option<Range>> {
    let mut out: Vec<Option<Range>> = Vec::with_capacity(f.insts.len());
    for (i, inst) in f.insts.iter().enumerate() {
        let args: Option<Vec<Range>> = inst.args.iter().map(|&a| out[a]).collect();
        let computed = || args.and_then(|args| range_of(f, i, &args));
        // Int arithmetic wraps: only moved or constant ints keep a range of their own.
        let moves = matches!(
            inst.prim,
            Prim::Const(_)
                | Prim::Broadcast(_)
                | Prim::Reshape(_)
                | Prim::Transpose(_)
                | Prim::Slice(_)
                | Prim::Concat(_)
                | Prim::Gather
        );
        let r = if guarded.contains(&i) {
            Some(within(inst, bound))
        } else if inst.dtype == DType::Int {
            Some(if moves {
                computed().unwrap_or(INT_RANGE)
            } else {
                INT_RANGE
            })
        } else {
            computed()
        };
        out.push(r);
    }
    out
}

/// What an op can give whatever its operands: a unary op's row's codomain, norms at least
/// 0, a flag within [0, 1]; anything for the others.
fn codomain(prim: &Prim) -> Range {
    let (lo, hi) = match prim {
        Prim::Unary(op) => op.row().codomain,
        Prim::Norm2(_) => (0.0, f64::INFINITY),
        Prim::Binary(op) if op.gives_flag() => (0.0, 1.0),
        _ => (f64::NEG_INFINITY, f64::INFINITY),
    };
    Range { lo, hi }
}

/// The range of a guarded value: ±`bound`, narrowed to its op's [`codomain`].
fn within(inst: &crate::ir::Inst, bound: f64) -> Range {
    let c = codomain(&inst.prim);
    Range {
        lo: c.lo.max(-bound),
        hi: c.hi.min(bound),
    }
}

/// The range of float instruction `i` of `f` from its operands' ranges.
fn range_of(f: &Func, i: usize, args: &[Range]) -> Option<Range> {
    let inst = &f.insts[i];
    let reduced = |axes: &[usize]| -> f64 {
        let s = &f.insts[inst.args[0]].shape;
        axes.iter().map(|&a| s[a]).product::<usize>() as f64
    };
    let sum_of = |n: f64, x: Range| Range::of(n * x.lo, n * x.hi).widened(n * 2.3e-16);
    let r = match &inst.prim {
        Prim::Const(t) => {
            let v = t.to_f64();
            if v.iter().any(|x| !x.is_finite()) {
                return None;
            }
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if v.is_empty() {
                Range::of(0.0, 0.0)
            } else {
                Range { lo, hi }
            }
        }
        Prim::Input(_) | Prim::Random { .. } | Prim::Observe(_) | Prim::ScatterAdd(_) => {
            return None;
        }
        // `abs(x)` lowers to `max(x, -x)`.
        Prim::Binary(Binary::Max)
            if matches!(f.insts[inst.args[1]].prim, Prim::Unary(Unary::Neg))
                && f.insts[inst.args[1]].args[0] == inst.args[0] =>
        {
            Range::of(0.0, args[0].lo.abs().max(args[0].hi.abs()))
        }
        Prim::Unary(op) => unary(*op, args[0])?,
        Prim::Binary(op) => binary(*op, args[0], args[1])?,
        Prim::Select => args[1].union(args[2]),
        Prim::Broadcast(_)
        | Prim::Reshape(_)
        | Prim::Transpose(_)
        | Prim::Slice(_)
        | Prim::Gather => args[0],
        Prim::Pad { .. } => args[0].union(Range::of(0.0, 0.0)),
        Prim::Concat(_) => args.iter().copied().reduce(Range::union)?,
        Prim::ReduceSum(axes) => sum_of(reduced(axes), args[0])?,
        Prim::ReduceMax(axes) | Prim::ReduceMin(axes) if reduced(axes) >= 1.0 => args[0],
        Prim::Norm2(axes) => {
            let m = args[0].lo.abs().max(args[0].hi.abs());
            Range::of(0.0, reduced(axes).sqrt() * m)
        }
        Prim::LogSumExp(axes) if reduced(axes) >= 1.0 => {
            Range::of(args[0].lo, args[0].hi + reduced(axes).ln())
        }
        Prim::MatMul => {
            let k = f.insts[inst.args[0]].shape[1] as f64;
            sum_of(k, Range::corners(args[0], args[1], |a, b| a * b))?
        }
        _ => return None,
    };
    r.widened(SLACK)
}

fn unary(op: Unary, x: Range) -> Option<Range> {
    let row = op.row();
    let (lo, hi) = match row.interval {
        Some(rule) => rule(x.lo, x.hi)?,
        None => row.codomain,
    };
    Some(Range::of(lo, hi))
}

fn binary(op: Binary, a: Range, b: Range) -> Option<Range> {
    Some(match op {
        Binary::Add => Range::of(a.lo + b.lo, a.hi + b.hi),
        Binary::Sub => Range::of(a.lo - b.hi, a.hi - b.lo),
        Binary::Mul => Range::corners(a, b, |x, y| x * y),
        Binary::Div if b.lo > 1e-300 || b.hi < -1e-300 => Range::corners(a, b, |x, y| x / y),
        Binary::Max => Range::of(a.lo.max(b.lo), a.hi.max(b.hi)),
        Binary::Min => Range::of(a.lo.min(b.lo), a.hi.min(b.hi)),
        // log(e^a + e^b) lies between max(a, b) and max(a, b) + ln 2.
        Binary::LogAddExp => Range::of(a.lo.max(b.lo), a.hi.max(b.hi) + 1.0),
        op if op.gives_flag() => codomain(&Prim::Binary(op)),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interp::{self, Env};
    use crate::kernels::math;
    use crate::opt::tests::floats;
    use crate::tensor::Tensor;
    use ndarray::{ArrayD, IxDyn};

    /// Logistic regression's gradient function as `plan` lays it out: outputs
    /// loss = mean(logaddexp(z, 0)) with z = X w, grad:w = X' sigmoid(z) / 5, ties.
    fn logistic(loss_of: impl Fn(&mut Builder, Var) -> Var) -> Func {
        let mut b = Builder::new();
        let w = b.input("w", DType::Float, vec![3]);
        b.input("step", DType::Int, vec![]);
        let x: Vec<f64> = (0..15).map(|i| ((i * 7 % 11) as f64 - 5.0) / 4.0).collect();
        let x = b.constant(floats(x, &[5, 3]));
        let z = b.matmul(x, w);
        let loss = loss_of(&mut b, z);
        let s = b.unary(Unary::Sigmoid, z);
        let fifth = b.fill_like(s, 0.2);
        let s = b.binary(Binary::Mul, s, fifth);
        let xt = b.transpose(x, &[1, 0]);
        let g = b.matmul(xt, s);
        let ties = b.scalar(0.0);
        b.output("loss", loss);
        b.output("grad:w", g);
        b.output("ties", ties);
        b.finish()
    }

    fn mean_logaddexp(b: &mut Builder, z: Var) -> Var {
        let zero = b.fill_like(z, 0.0);
        let l = b.binary(Binary::LogAddExp, z, zero);
        let s = b.reduce(Reduce::Sum, l, None);
        let n = b.scalar(5.0);
        b.binary(Binary::Div, s, n)
    }

    fn eval(f: &Func, w: [f64; 3]) -> Vec<Tensor> {
        let step = Tensor::Int(ArrayD::from_elem(IxDyn(&[]), 1));
        interp::eval(f, &[floats(w.to_vec(), &[3]), step], Env::default()).expect("eval")
    }

    fn bits(t: &Tensor) -> Vec<u64> {
        t.to_f64().iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn a_logistic_loss_is_replaced_by_a_bound_check_and_the_gradient_kept_bit_for_bit() {
        let f = logistic(mean_logaddexp);
        let q = quiet(&f).expect("a quiet variant");
        assert_eq!(q.outputs[0].0, "bounded");
        let printed = crate::ir::print(&q);
        assert!(!printed.contains("log_add_exp"), "{printed}");
        // |z| <= 1e200 passes the check (the widest bound tried that proves the mean of
        // 5 logaddexps finite is 1e250); beyond it, or NaN, fails it.
        for (w, bounded) in [
            ([0.5, -1.0, 2.0], 1.0),
            ([0.0, -0.0, 0.0], 1.0),
            ([1e199, -1e199, 3e198], 1.0),
            ([1e260, 0.0, 0.0], 0.0),
            ([-1e260, 0.0, 0.0], 0.0),
            ([f64::NAN, 0.0, 0.0], 0.0),
            ([f64::INFINITY, 0.0, 0.0], 0.0),
        ] {
            let (full, quiet) = (eval(&f, w), eval(&q, w));
            assert_eq!(quiet[0].to_f64()[[]], bounded, "{w:?}");
            assert_eq!(bits(&full[1]), bits(&quiet[1]), "{w:?}");
            assert_eq!(bits(&full[2]), bits(&quiet[2]), "{w:?}");
            if bounded == 1.0 {
                assert!(full[0].to_f64()[[]].is_finite());
            }
        }
    }

    /// softplus spelled out, as `examples/logistic_max_margin.traj` writes it: the
    /// gradient also reads `e = exp(-abs(z))`, so `z` and `e` are both operands of the
    /// loss-only work, but guarding `z` bounds `e` (`abs` lowers to `max(z, -z)`, at
    /// least 0, so `e` lies within [0, 1]): one guard.
    #[test]
    fn a_value_the_other_guards_bound_is_not_guarded() {
        let mut f = logistic(|b, z| {
            let minus = b.unary(Unary::Neg, z);
            let abs = b.binary(Binary::Max, z, minus);
            let minus_abs = b.unary(Unary::Neg, abs);
            let e = b.unary(Unary::Exp, minus_abs);
            let zero = b.fill_like(z, 0.0);
            let relu = b.binary(Binary::Max, z, zero);
            let l = b.unary(Unary::Log1p, e);
            let l = b.binary(Binary::Add, relu, l);
            b.reduce(Reduce::Sum, l, None)
        });
        let e = f
            .insts
            .iter()
            .position(|i| i.prim == Prim::Unary(Unary::Exp));
        f.outputs.push(("e".into(), e.expect("exp")));
        let q = quiet(&f).expect("a quiet variant");
        let printed = crate::ir::print(&q);
        assert_eq!(printed.matches("= le ").count(), 1, "{printed}");
        assert!(!printed.contains("log1p"), "{printed}");
        for (w, bounded) in [([0.5, -1.0, 2.0], 1.0), ([1e260, 0.0, 0.0], 0.0)] {
            assert_eq!(eval(&q, w)[0].to_f64()[[]], bounded, "{w:?}");
        }
    }

    #[test]
    fn no_quiet_variant_where_the_loss_is_cheap_unbounded_needed_or_in_f32() {
        // 0.5 * sum(z * z): the check would cost what it spares.
        let cheap = logistic(|b, z| {
            let sq = b.binary(Binary::Mul, z, z);
            b.reduce(Reduce::Sum, sq, None)
        });
        assert!(quiet(&cheap).is_none());
        // log(sigmoid(z)): sigmoid may underflow to 0, so no bound proves it finite.
        let unbounded = logistic(|b, z| {
            let s = b.unary(Unary::Sigmoid, z);
            let l = b.unary(Unary::Log, s);
            b.reduce(Reduce::Sum, l, None)
        });
        assert!(quiet(&unbounded).is_none());
        let mut f32 = logistic(mean_logaddexp);
        f32.f32 = true;
        assert!(quiet(&f32).is_none());
        // A loss a gradient output also reads.
        let mut shared = logistic(mean_logaddexp);
        let loss = shared.outputs[0].1;
        shared.outputs[1].1 = loss;
        assert!(quiet(&shared).is_none());
    }

    type BinaryFn = fn(f64, f64) -> f64;

    /// Each rule's range holds what the interpreter's own functions compute at the ends,
    /// at zero and at points between.
    #[test]
    fn every_rule_holds_the_values_it_bounds() {
        let ranges = [
            Range::of(-3.0, 2.0),
            Range::of(0.5, 4.0),
            Range::of(-1e5, -1e-3),
            Range::of(-700.0, 700.0),
            Range::of(-0.5, 0.5),
            Range::of(0.0, 0.0),
        ];
        let points = |r: Range| -> Vec<f64> {
            let mut v: Vec<f64> = (0..=16)
                .map(|i| r.lo + (r.hi - r.lo) * i as f64 / 16.0)
                .collect();
            if r.lo <= 0.0 && r.hi >= 0.0 {
                v.extend([0.0, -0.0]);
            }
            v
        };
        let holds = |r: Range, x: f64| x >= r.lo && x <= r.hi;
        for row in crate::ir::ops::UNARY_OPS {
            let (op, f) = (row.op, row.scalar);
            for r in ranges {
                let Some(out) = unary(op, r).and_then(|o| o.widened(SLACK)) else {
                    continue;
                };
                for x in points(r) {
                    assert!(
                        holds(out, f(x)),
                        "{op:?} {r:?} at {x}: {} not in {out:?}",
                        f(x)
                    );
                }
            }
        }
        let binaries: [(Binary, BinaryFn); 7] = [
            (Binary::Add, |a, b| a + b),
            (Binary::Sub, |a, b| a - b),
            (Binary::Mul, |a, b| a * b),
            (Binary::Div, |a, b| a / b),
            (Binary::Max, f64::max),
            (Binary::Min, f64::min),
            (Binary::LogAddExp, math::logaddexp),
        ];
        for (op, f) in binaries {
            for ra in ranges {
                for rb in ranges {
                    let Some(out) = binary(op, ra, rb).and_then(|o| o.widened(SLACK)) else {
                        continue;
                    };
                    for a in points(ra) {
                        for b in points(rb) {
                            let v = f(a, b);
                            assert!(holds(out, v), "{op:?} {ra:?} {rb:?} at {a}, {b}: {v}");
                        }
                    }
                }
            }
        }
        // The rules that must refuse: log of a range reaching 0, a division by one
        // holding 0, exp beyond overflow.
        assert!(unary(Unary::Log, Range::of(0.0, 1.0)).is_none());
        assert!(unary(Unary::Sqrt, Range::of(-1e-300, 1.0)).is_none());
        assert!(binary(Binary::Div, Range::of(1.0, 2.0), Range::of(-1.0, 1.0)).is_none());
        assert!(unary(Unary::Exp, Range::of(0.0, 710.0)).is_none());
        assert!(Range::of(0.0, 2e300).widened(SLACK).is_none());
    }
}
