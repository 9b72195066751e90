//! `softplus`: the stable softplus written out as `softplus(z)`, before reverse mode.
//!
//! The kernel is that very formula, `math::softplus(x) = x.max(0.0) + log1p(exp(-x.abs()))`,
//! and the written-out form gives the same bits at every `z` that is not a NaN (a NaN stays a
//! NaN, perhaps of the other sign). The IR's `max` of `z` and a zero and its `abs(z)`,
//! `max(z, -z)`, are `z.max(0.0)` and `|z|` wherever `z` is not 0 or NaN; at `z = ±0`
//! every spelling adds a zero to `log1p(exp(∓0)) = ln 2`, which is `ln 2` whatever the zeros'
//! signs; where `exp(-|z|)` underflows and `log1p` gives +0, `z < 0` adds a zero to it,
//! +0 whatever its sign, as the kernel's `0.0 + 0.0`; `exp` and `log1p` are the kernel's
//! own functions and the add is commutative. So
//! the value is unchanged, and reverse mode, run after this, differentiates `softplus`: the
//! gradient is `sigmoid(z)`, the exact derivative, also at `z = 0` (0.5, where the spelling's
//! `max` and `abs` tie and the plan would take the directional gradient). The IR is then
//! `softplus(z)`'s: `bench/spellings.py` measured the written-out logreg at 1.59–1.61×
//! `softplus(z)`'s CPU time before, 1.01–1.03× after.
//!
//! Rewritten, in either order of the `+` and of each `max`: `max(z, 0)` or `relu(z)` (the
//! zero any float or int zero constant, perhaps broadcast), plus `log1p(exp(-abs(z)))` or
//! `log1p(exp(-abs(-z)))` (`abs(x)` is `max(x, -x)`); `z` the same value in both (the same
//! instruction or two computing it, as `-z` written twice). Not rewritten: `log(1 +
//! exp(-abs(z)))` (`1 + e` rounds: other bits), a `max` of another operand, and anything
//! under `precision f32` (every instruction rounds to f32 there, the kernel once).

use std::collections::HashMap;

use crate::ir::types::DType;
use crate::ir::{Binary, Func, Inst, Prim, Unary, Var};
use crate::tensor::Tensor;

/// `f` with each stable-softplus sum replaced, in place, by `softplus(z)` ([`rewrite`]).
pub fn softplus(f: &Func) -> Func {
    let mut out = f.clone();
    rewrite(&mut out);
    out
}

/// Replaces each stable-softplus sum of `f` by `softplus(z)`: instruction numbers are
/// unchanged (so a function under construction can be rewritten before reverse mode and its
/// builder's vars still hold); the pieces it no longer reads are left to `dce`. Every
/// autodiff pass runs it, on a function that grows as it goes (`ntk` differentiates once a
/// row): where no float sum has a `log1p` operand, as after a rewrite, it is one look at
/// each instruction, with nothing copied or numbered.
pub fn rewrite(f: &mut Func) {
    if f.f32 {
        return;
    }
    let log1p = |v: Var| f.insts[v].prim == Prim::Unary(Unary::Log1p);
    let sums: Vec<usize> = (0..f.insts.len())
        .filter(|&i| {
            let inst = &f.insts[i];
            inst.prim == Prim::Binary(Binary::Add)
                && inst.dtype == DType::Float
                && inst.args.iter().any(|a| log1p(*a))
        })
        .collect();
    if sums.is_empty() {
        return;
    }
    let same = value_numbers(f);
    let found: Vec<(usize, Var)> = sums
        .into_iter()
        .filter_map(|i| {
            let inst = &f.insts[i];
            let [a, b] = inst.args[..] else { return None };
            let z = idiom(f, &same, inst, a, b).or_else(|| idiom(f, &same, inst, b, a))?;
            Some((i, z))
        })
        .collect();
    for (i, z) in found {
        f.insts[i].prim = Prim::Unary(Unary::Softplus);
        f.insts[i].args = vec![z];
    }
}

/// The `z` of `m + l` when `m` is `max(z, 0)` and `l` is `log1p(exp(-abs(±z)))`, `z` a
/// float of the sum's shape.
fn idiom(f: &Func, same: &[usize], sum: &Inst, m: Var, l: Var) -> Option<Var> {
    let insts = &f.insts;
    let z = relu_of(insts, m)?;
    if insts[z].dtype != DType::Float || insts[z].shape != sum.shape {
        return None;
    }
    let e = unary_of(insts, l, Unary::Log1p)?;
    let n = unary_of(insts, e, Unary::Exp)?;
    let a = unary_of(insts, n, Unary::Neg)?;
    let (x, y) = binary_of(insts, a, Binary::Max)?;
    // `max(x, -x)` or `max(-x, x)`: |x|, and |x| = |-x|, so `x` may be `z` or `-z`.
    let negates =
        |p: Var, q: Var| unary_of(insts, q, Unary::Neg).is_some_and(|q| same[q] == same[p]);
    let abs = negates(x, y) || negates(y, x);
    (abs && (same[x] == same[z] || same[y] == same[z])).then_some(z)
}

/// The operand of `v` when it is `op` of one operand.
fn unary_of(insts: &[Inst], v: Var, op: Unary) -> Option<Var> {
    (insts[v].prim == Prim::Unary(op)).then(|| insts[v].args[0])
}

/// The operands of `v` when it is the float `op` of two.
fn binary_of(insts: &[Inst], v: Var, op: Binary) -> Option<(Var, Var)> {
    match insts[v].args[..] {
        [x, y] if insts[v].prim == Prim::Binary(op) && insts[v].dtype == DType::Float => {
            Some((x, y))
        }
        _ => None,
    }
}

/// The `z` of `v = max(z, 0)` or `max(0, z)`.
fn relu_of(insts: &[Inst], v: Var) -> Option<Var> {
    let (x, y) = binary_of(insts, v, Binary::Max)?;
    if zero(insts, y) {
        Some(x)
    } else if zero(insts, x) {
        Some(y)
    } else {
        None
    }
}

/// Whether `v` is a constant whose every entry is a zero (0.0, -0.0 or the int 0), seen
/// through broadcasts, reshapes and `to_float`.
fn zero(insts: &[Inst], v: Var) -> bool {
    let inst = &insts[v];
    match &inst.prim {
        Prim::Const(Tensor::Float(t)) => t.iter().all(|x| *x == 0.0),
        Prim::Const(Tensor::Int(t)) => t.iter().all(|x| *x == 0),
        Prim::Broadcast(_) | Prim::Reshape(_) | Prim::Unary(Unary::ToFloat) => {
            zero(insts, inst.args[0])
        }
        _ => false,
    }
}

/// A number for each instruction, equal for two that compute the same value: the same op
/// of the same numbers (`cse`'s identity, without changing the function).
fn value_numbers(f: &Func) -> Vec<usize> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut numbers = Vec::with_capacity(f.insts.len());
    for (i, inst) in f.insts.iter().enumerate() {
        let args: Vec<Var> = inst.args.iter().map(|a| numbers[*a]).collect();
        let n = match crate::ir::identity(inst, &args) {
            Some(k) => *seen.entry(k).or_insert(i),
            None => i,
        };
        numbers.push(n);
    }
    numbers
}
