//! Automatic differentiation as IR → IR passes that append to a function under
//! construction: `grad_into` (reverse mode), `jvp_into` (forward mode) and `ties_into`
//! (the count of exact ties on the gradient's path). The JIT and the interpreter never
//! need to know what a gradient is. Each first puts the function in the form it
//! differentiates ([`softplus`]: the stable softplus written out becomes `softplus(z)`,
//! the same values, instruction numbers kept), so the loss's gradient, a record's
//! `grad(e, p)`, `ntk`, the sharpness's Hessian-vector products and the REPL's `:grad`
//! all differentiate the same form.
//!
//! # Subgradients at kinks (LANGUAGE.md section 7)
//!
//! Kakade & Lee 2018, "Provably Correct Automatic Subdifferentiation for Qualified
//! Programs" (NeurIPS; arXiv:1809.08530); `docs/subgradients.md` says it for users:
//!
//! 1. The forward pass computes, once, a count of exact ties on the path from the params
//!    to the loss (`ties_into`): `Max`/`Min` operands equal, repeated extremes of
//!    `ReduceMax`/`ReduceMin`, `Norm2` at 0, comparisons and `Sign` of active operands at
//!    equality. With no tie, plain reverse mode (`Ties::Default`) is exact.
//! 2. With a tie, one Gaussian direction v over all params is drawn (stream "tie", keyed by
//!    the step) and `jvp_into` with `ray = true` computes, in one forward sweep, the
//!    one-sided directional derivatives along v and the *ray values* lim_{t↓0} u(x + t v)
//!    of every instruction: class-D ops (comparisons, `Sign`) output the side the ray
//!    enters (`u > 0` at a tie becomes `u̇ > 0`), and everything downstream is recomputed
//!    from those. Max-type ops pick the piece that is largest on (value, tangent).
//! 3. Reverse mode then runs on the ray values with those selections
//!    (`Ties::Directional`): the result is lim_{t↓0} ∇f(x + t v), an element of the
//!    Clarke subdifferential with probability 1. Where tangents tie too (a harmless tie for
//!    max-type ops: the pieces' Jacobians agree with probability 1), the cotangent is
//!    split evenly among the tied pieces, which gives the same vector.
//!
//! Tie masks are computed once, as SSA values of the forward pass, and the backward pass
//! reads those values: nothing is recomputed on rematerialized operands.

pub mod softplus;

use std::collections::{HashMap, HashSet};

use crate::ir::ops::Kink;
use crate::ir::types::DType;
use crate::ir::{Binary, Builder, Prim, Reduce, Unary, Var};

/// The tangents (and, with `ray`, the ray values) of a forward region.
#[derive(Clone, Debug, Default)]
pub struct Directional {
    /// Tangent of each active instruction along the seed direction.
    pub tangent: HashMap<Var, Var>,
    /// lim_{t↓0} value(x + t v) where it differs from the value at x.
    pub ray: HashMap<Var, Var>,
    /// Count of class-D ties the first-order tangent cannot resolve (`ṗ = q̇` at `p = q`).
    pub unresolved: Option<Var>,
}

impl Directional {
    fn val(&self, v: Var) -> Var {
        self.ray.get(&v).copied().unwrap_or(v)
    }
}

/// How reverse mode chooses pieces at exact ties.
pub enum Ties<'a> {
    /// Any consistent choice: used when no tie occurred.
    Default,
    /// Kakade & Lee's choice along a direction (see the module docs).
    Directional(&'a Directional),
}

/// Instructions that depend on any of `wrt` (and so carry derivatives).
fn active_set(b: &Builder, wrt: &[Var]) -> HashSet<Var> {
    let mut active: HashSet<Var> = wrt.iter().copied().collect();
    for (i, inst) in b.func.insts.iter().enumerate() {
        if active.contains(&i) {
            continue;
        }
        let differentiable = !matches!(
            inst.prim,
            Prim::Argmax(_)
                | Prim::Argmin(_)
                | Prim::Random { .. }
                | Prim::Observe(_)
                | Prim::Unary(Unary::StopGrad)
        ) && inst.dtype == DType::Float;
        if differentiable && inst.args.iter().any(|a| active.contains(a)) {
            active.insert(i);
        }
    }
    active
}

/// Instructions `y` depends on.
fn needed_set(b: &Builder, y: Var) -> HashSet<Var> {
    let mut needed = HashSet::from([y]);
    for i in (0..=y).rev() {
        if needed.contains(&i) {
            needed.extend(b.func.insts[i].args.iter().copied());
        }
    }
    needed
}

/// The axes along which `from` was broadcast to `to` (leading new axes and 1 → n axes).
fn broadcast_axes(from: &[usize], to: &[usize]) -> Vec<usize> {
    let lead = to.len() - from.len();
    (0..to.len())
        .filter(|&i| i < lead || (from[i - lead] == 1 && to[i] != 1))
        .collect()
}

/// Sums `g` (shaped `to`) back to `from`'s shape: the adjoint of a broadcast.
fn unbroadcast(b: &mut Builder, g: Var, from: &[usize]) -> Var {
    let to = b.shape(g);
    if to == from {
        return g;
    }
    let axes = broadcast_axes(from, &to);
    let s = b.reduce(Reduce::Sum, g, Some(axes));
    b.reshape(s, from)
}

/// A reduction result reshaped with 1s for the reduced axes and broadcast back.
fn expand(b: &mut Builder, r: Var, x_shape: &[usize], axes: &[usize]) -> Var {
    let keep: Vec<usize> = x_shape
        .iter()
        .enumerate()
        .map(|(i, d)| if axes.contains(&i) { 1 } else { *d })
        .collect();
    let r = b.reshape(r, &keep);
    b.broadcast(r, x_shape)
}

/// For each entry of `x`, the product of the other entries of its block along `axes`
/// (the derivative of `prod(x, axes)`): the product of the entries before it times the
/// product of those after it, each an exclusive scan, as JAX computes it. Nothing is
/// divided by an entry, so exact zeros give the exact gradient (`prod([0, 3])` has
/// gradient `[3, 0]`).
fn others_product(b: &mut Builder, x: Var, axes: &[usize]) -> Var {
    let xs = b.shape(x);
    // The reduced axes last, flattened to one: blocks are the rows of [rest, n].
    let kept: Vec<usize> = (0..xs.len()).filter(|a| !axes.contains(a)).collect();
    let perm: Vec<usize> = kept.iter().chain(axes).copied().collect();
    let rest: usize = kept.iter().map(|a| xs[*a]).product();
    let n: usize = axes.iter().map(|a| xs[*a]).product();
    let moved = b.transpose(x, &perm);
    let moved_shape = b.shape(moved);
    let rows = b.reshape(moved, &[rest, n]);
    let before = exclusive_product_scan(b, rows, false);
    let after = exclusive_product_scan(b, rows, true);
    let others = b.binary(Binary::Mul, before, after);
    let others = b.reshape(others, &moved_shape);
    let mut inverse = vec![0; perm.len()];
    for (i, p) in perm.iter().enumerate() {
        inverse[*p] = i;
    }
    b.transpose(others, &inverse)
}

/// Along the rows of `m` ([rest, n]): at column j the product of the entries before it
/// (after it when `reverse`), 1.0 where there are none. A Hillis–Steele scan: ⌈log₂ n⌉
/// products of the running result with itself shifted by 1, 2, 4, ... columns.
fn exclusive_product_scan(b: &mut Builder, m: Var, reverse: bool) -> Var {
    let (rest, n) = match b.shape(m)[..] {
        [rest, n] => (rest, n),
        _ => unreachable!("a matrix of blocks"),
    };
    // The row shifted `by` columns toward its end (its start when `reverse`), ones
    // filling the columns it leaves.
    let shift = |b: &mut Builder, a: Var, by: usize| -> Var {
        let one = b.scalar(1.0);
        if by >= n {
            return b.broadcast(one, &[rest, n]);
        }
        let ones = b.broadcast(one, &[rest, by]);
        if reverse {
            let kept = b.slice(a, &[(0, rest), (by, n)]);
            b.concat(&[kept, ones], 1)
        } else {
            let kept = b.slice(a, &[(0, rest), (0, n - by)]);
            b.concat(&[ones, kept], 1)
        }
    };
    let mut scan = shift(b, m, 1);
    let mut by = 1;
    while by < n {
        let shifted = shift(b, scan, by);
        scan = b.binary(Binary::Mul, scan, shifted);
        by *= 2;
    }
    scan
}

fn add_into(b: &mut Builder, ct: &mut HashMap<Var, Var>, v: Var, g: Var) {
    let g = match ct.get(&v) {
        Some(prev) => b.binary(Binary::Add, *prev, g),
        None => g,
    };
    ct.insert(v, g);
}

/// Puts what `b` holds so far in the form the passes here differentiate ([`softplus`]):
/// the same values, instruction numbers kept, so `b`'s vars still hold.
fn differentiable_form(b: &mut Builder) {
    softplus::rewrite(&mut b.func);
}

/// Appends the gradient of scalar `y` with respect to each of `wrt` (zeros where `y`
/// does not depend on it).
pub fn grad_into(b: &mut Builder, y: Var, wrt: &[Var], ties: &Ties) -> Result<Vec<Var>, String> {
    differentiable_form(b);
    if !b.shape(y).is_empty() {
        return Err("the gradient of a non-scalar".into());
    }
    let outer_span = b.span;
    let active = active_set(b, wrt);
    let needed = needed_set(b, y);
    let dir = match ties {
        Ties::Directional(d) => Some(*d),
        Ties::Default => None,
    };
    let val = |v: Var| dir.map_or(v, |d| d.val(v));
    let mut ct: HashMap<Var, Var> = HashMap::new();
    if active.contains(&y) {
        let one = b.scalar(1.0);
        ct.insert(y, one);
    }
    for i in (0..=y).rev() {
        if !(active.contains(&i) && needed.contains(&i)) {
            continue;
        }
        let Some(&g) = ct.get(&i) else { continue };
        let inst = b.func.insts[i].clone();
        // The derivative's instructions are located at the operation they differentiate.
        b.span = inst.span;
        let args: Vec<Var> = inst.args.clone();
        let act = |k: usize| active.contains(&args[k]);
        let out = val(i);
        match &inst.prim {
            Prim::Input(_) | Prim::Const(_) | Prim::Random { .. } | Prim::Observe(_) => {}
            Prim::Argmax(_) | Prim::Argmin(_) => {}
            Prim::Unary(op) => {
                if let Some(derivative) = op.row().derivative {
                    let d = derivative(b, val(args[0]), out, g);
                    add_into(b, &mut ct, args[0], d);
                }
            }
            Prim::Binary(op) => {
                let (x, y2) = (val(args[0]), val(args[1]));
                let (da, db): (Option<Var>, Option<Var>) = match op {
                    Binary::Add => (Some(g), Some(g)),
                    Binary::Sub => (Some(g), Some(b.unary(Unary::Neg, g))),
                    Binary::Mul => (
                        act(0).then(|| b.binary(Binary::Mul, g, y2)),
                        act(1).then(|| b.binary(Binary::Mul, g, x)),
                    ),
                    Binary::Div => (
                        act(0).then(|| b.binary(Binary::Div, g, y2)),
                        act(1).then(|| {
                            let q = b.binary(Binary::Div, out, y2);
                            let m = b.binary(Binary::Mul, g, q);
                            b.unary(Unary::Neg, m)
                        }),
                    ),
                    Binary::Pow => (
                        act(0).then(|| {
                            let one = b.scalar(1.0);
                            let e = b.binary(Binary::Sub, y2, one);
                            let p = b.binary(Binary::Pow, x, e);
                            let m = b.binary(Binary::Mul, y2, p);
                            b.binary(Binary::Mul, g, m)
                        }),
                        act(1).then(|| {
                            let l = b.unary(Unary::Log, x);
                            let m = b.binary(Binary::Mul, out, l);
                            b.binary(Binary::Mul, g, m)
                        }),
                    ),
                    Binary::Max | Binary::Min => {
                        let pick_a = piece_mask(b, *op, args[0], args[1], dir);
                        let z = b.fill_like(g, 0.0);
                        (Some(b.select(pick_a, g, z)), Some(b.select(pick_a, z, g)))
                    }
                    Binary::LogAddExp => {
                        let d1 = b.binary(Binary::Sub, x, y2);
                        let s1 = b.unary(Unary::Sigmoid, d1);
                        let d2 = b.binary(Binary::Sub, y2, x);
                        let s2 = b.unary(Unary::Sigmoid, d2);
                        (
                            Some(b.binary(Binary::Mul, g, s1)),
                            Some(b.binary(Binary::Mul, g, s2)),
                        )
                    }
                    Binary::Rem => (
                        Some(g),
                        act(1).then(|| {
                            let q = b.binary(Binary::FloorDiv, x, y2);
                            let m = b.binary(Binary::Mul, g, q);
                            b.unary(Unary::Neg, m)
                        }),
                    ),
                    // Piecewise constant: derivative 0 (class D).
                    _ => (None, None),
                };
                if let (Some(d), true) = (da, act(0)) {
                    add_into(b, &mut ct, args[0], d);
                }
                if let (Some(d), true) = (db, act(1)) {
                    add_into(b, &mut ct, args[1], d);
                }
            }
            Prim::Select => {
                let c = val(args[0]);
                let z = b.fill_like(g, 0.0);
                if act(1) {
                    let d = b.select(c, g, z);
                    add_into(b, &mut ct, args[1], d);
                }
                if act(2) {
                    let d = b.select(c, z, g);
                    add_into(b, &mut ct, args[2], d);
                }
            }
            Prim::Broadcast(_) => {
                let from = b.shape(args[0]);
                let d = unbroadcast(b, g, &from);
                add_into(b, &mut ct, args[0], d);
            }
            Prim::Reshape(_) => {
                let from = b.shape(args[0]);
                let d = b.reshape(g, &from);
                add_into(b, &mut ct, args[0], d);
            }
            Prim::Transpose(perm) => {
                let mut inv = vec![0; perm.len()];
                for (i, p) in perm.iter().enumerate() {
                    inv[*p] = i;
                }
                let d = b.transpose(g, &inv);
                add_into(b, &mut ct, args[0], d);
            }
            Prim::Slice(ranges) => {
                let from = b.shape(args[0]);
                let starts: Vec<usize> = ranges.iter().map(|r| r.0).collect();
                let d = b.pad(g, &starts, &from);
                add_into(b, &mut ct, args[0], d);
            }
            Prim::Pad { starts, .. } => {
                let from = b.shape(args[0]);
                let ranges: Vec<(usize, usize)> =
                    starts.iter().zip(&from).map(|(s, d)| (*s, s + d)).collect();
                let d = b.slice(g, &ranges);
                add_into(b, &mut ct, args[0], d);
            }
            Prim::Concat(axis) => {
                let shape = b.shape(g);
                let mut at = 0;
                for (k, a) in args.iter().enumerate() {
                    let n = b.shape(*a)[*axis];
                    if act(k) {
                        let mut r: Vec<(usize, usize)> = shape.iter().map(|d| (0, *d)).collect();
                        r[*axis] = (at, at + n);
                        let d = b.slice(g, &r);
                        add_into(b, &mut ct, *a, d);
                    }
                    at += n;
                }
            }
            Prim::Gather => {
                let shape = b.shape(args[0]);
                let d = b.scatter_add(g, &args[1..], &shape);
                add_into(b, &mut ct, args[0], d);
            }
            Prim::ScatterAdd(_) => {
                let d = b.gather(g, &args[1..]);
                add_into(b, &mut ct, args[0], d);
            }
            Prim::ReduceSum(axes) => {
                let xs = b.shape(args[0]);
                let d = expand(b, g, &xs, axes);
                add_into(b, &mut ct, args[0], d);
            }
            Prim::ReduceMax(axes) | Prim::ReduceMin(axes) => {
                let w = extreme_weights(b, i, args[0], axes, dir);
                let xs = b.shape(args[0]);
                let gb = expand(b, g, &xs, axes);
                let d = b.binary(Binary::Mul, gb, w);
                add_into(b, &mut ct, args[0], d);
            }
            Prim::ReduceProd(axes) => {
                let xs = b.shape(args[0]);
                let gb = expand(b, g, &xs, axes);
                let others = others_product(b, val(args[0]), axes);
                let d = b.binary(Binary::Mul, gb, others);
                add_into(b, &mut ct, args[0], d);
            }
            Prim::Norm2(axes) => {
                let xs = b.shape(args[0]);
                let x = val(args[0]);
                let ob = expand(b, out, &xs, axes);
                let gb = expand(b, g, &xs, axes);
                let zero = b.fill_like(ob, 0.0);
                let at_zero = b.binary(Binary::Eq, ob, zero);
                let one = b.fill_like(ob, 1.0);
                let safe = b.select(at_zero, one, ob);
                let unit = b.binary(Binary::Div, x, safe);
                // At 0 (class R): the gradient of ‖·‖ at the tangent, u̇/‖u̇‖ (0 if u̇ = 0).
                let at0 = match dir.and_then(|d| d.tangent.get(&args[0]).copied()) {
                    Some(t) => {
                        let tn = b.reduce(Reduce::Norm2, t, Some(axes.clone()));
                        let tnb = expand(b, tn, &xs, axes);
                        let tz = b.binary(Binary::Eq, tnb, zero);
                        let tsafe = b.select(tz, one, tnb);
                        b.binary(Binary::Div, t, tsafe)
                    }
                    None => b.fill_like(x, 0.0),
                };
                let local = b.select(at_zero, at0, unit);
                let d = b.binary(Binary::Mul, gb, local);
                add_into(b, &mut ct, args[0], d);
            }
            Prim::LogSumExp(axes) => {
                let xs = b.shape(args[0]);
                let ob = expand(b, out, &xs, axes);
                let gb = expand(b, g, &xs, axes);
                let diff = b.binary(Binary::Sub, val(args[0]), ob);
                let sm = b.unary(Unary::Exp, diff);
                let d = b.binary(Binary::Mul, gb, sm);
                add_into(b, &mut ct, args[0], d);
            }
            Prim::MatMul => {
                let (x, w) = (val(args[0]), val(args[1]));
                if act(0) {
                    let wt = b.transpose(w, &[1, 0]);
                    let d = b.matmul(g, wt);
                    add_into(b, &mut ct, args[0], d);
                }
                if act(1) {
                    let xt = b.transpose(x, &[1, 0]);
                    let d = b.matmul(xt, g);
                    add_into(b, &mut ct, args[1], d);
                }
            }
        }
    }
    b.span = outer_span;
    Ok(wrt
        .iter()
        .map(|w| match ct.get(w) {
            Some(g) => *g,
            None => b.fill_like(*w, 0.0),
        })
        .collect())
}

/// 1.0 where the first operand of `Max`/`Min` is the chosen piece. Without a direction,
/// ties go to the first operand; along a direction, to the operand largest (smallest) on
/// (value, tangent).
fn piece_mask(b: &mut Builder, op: Binary, a: Var, c: Var, dir: Option<&Directional>) -> Var {
    let (strict, weak) = if op == Binary::Max {
        (Binary::Gt, Binary::Ge)
    } else {
        (Binary::Lt, Binary::Le)
    };
    match dir {
        None => b.binary(weak, a, c),
        Some(d) => {
            let (va, vc) = (d.val(a), d.val(c));
            let wins = b.binary(strict, va, vc);
            let tie = b.binary(Binary::Eq, va, vc);
            let ta = tangent_or_zero(b, d, a);
            let tc = tangent_or_zero(b, d, c);
            let tan_wins = b.binary(weak, ta, tc);
            let at_tie = b.binary(Binary::And, tie, tan_wins);
            b.binary(Binary::Or, wins, at_tie)
        }
    }
}

fn tangent_or_zero(b: &mut Builder, d: &Directional, v: Var) -> Var {
    match d.tangent.get(&v) {
        Some(t) => *t,
        None => b.fill_like(v, 0.0),
    }
}

/// Weights of each entry in the adjoint of a max/min reduction: the extreme entries (on
/// value, then tangent along the direction), each weighted 1/count.
fn extreme_weights(
    b: &mut Builder,
    out: Var,
    x: Var,
    axes: &[usize],
    dir: Option<&Directional>,
) -> Var {
    let xs = b.shape(x);
    let is_max = matches!(b.func.insts[out].prim, Prim::ReduceMax(_));
    let (xv, ov) = match dir {
        Some(d) => (d.val(x), d.val(out)),
        None => (x, out),
    };
    let ob = expand(b, ov, &xs, axes);
    let mut cand = b.binary(Binary::Eq, xv, ob);
    if let Some(d) = dir
        && let Some(t) = d.tangent.get(&x).copied()
    {
        let fill = b.fill_like(
            t,
            if is_max {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            },
        );
        let masked = b.select(cand, t, fill);
        let kind = if is_max { Reduce::Max } else { Reduce::Min };
        let best = b.reduce(kind, masked, Some(axes.to_vec()));
        let bb = expand(b, best, &xs, axes);
        let tbest = b.binary(Binary::Eq, t, bb);
        cand = b.binary(Binary::And, cand, tbest);
    }
    let count = b.reduce(Reduce::Sum, cand, Some(axes.to_vec()));
    let cb = expand(b, count, &xs, axes);
    b.binary(Binary::Div, cand, cb)
}

/// Appends, for the instructions `0..end`, the tangent along `seeds` (input var →
/// tangent var) of every instruction that depends on a seed. With `ray`, also the ray
/// values of class-D ops and of everything computed from them, and the count of
/// unresolved class-D ties (see the module docs).
pub fn jvp_into(b: &mut Builder, end: usize, seeds: &[(Var, Var)], ray: bool) -> Directional {
    differentiable_form(b);
    let outer_span = b.span;
    let mut d = Directional::default();
    for (x, t) in seeds {
        d.tangent.insert(*x, *t);
    }
    let mut unresolved: Option<Var> = None;
    for i in 0..end {
        if d.tangent.contains_key(&i) {
            continue;
        }
        let inst = b.func.insts[i].clone();
        b.span = inst.span;
        let args = inst.args.clone();
        let ray_changed = ray && args.iter().any(|a| d.ray.contains_key(a));
        let any_tangent = args.iter().any(|a| d.tangent.contains_key(a));
        if !any_tangent && !ray_changed {
            continue;
        }
        // Ray value of a continuous op whose operands moved: the op on the moved operands.
        let rv: Vec<Var> = args.iter().map(|a| d.val(*a)).collect();
        let is_d = matches!(&inst.prim, Prim::Binary(op) if op.is_comparison())
            || matches!(inst.prim, Prim::Unary(op) if op.row().kink == Kink::Jump);
        if ray && is_d && any_tangent {
            let (value, unres) = class_d_ray(b, &inst.prim, &rv, &args, &d);
            d.ray.insert(i, value);
            unresolved = Some(match unresolved {
                Some(u) => b.binary(Binary::Add, u, unres),
                None => unres,
            });
        } else if ray_changed {
            let v = re_emit(b, i, &rv);
            d.ray.insert(i, v);
        }
        // An op whose operands moved only along the ray (e.g. `d @ sign(w)`: `sign` is
        // piecewise constant and has no tangent) has a ray value but no tangent.
        if inst.dtype != DType::Float || !any_tangent {
            continue;
        }
        if let Some(t) = tangent_rule(b, i, &rv, &args, &d) {
            d.tangent.insert(i, t);
        }
    }
    b.span = outer_span;
    d.unresolved = unresolved;
    d
}

/// Re-emits instruction `i` on other operands.
fn re_emit(b: &mut Builder, i: Var, args: &[Var]) -> Var {
    let mut inst = b.func.insts[i].clone();
    inst.args = args.to_vec();
    b.func.insts.push(inst);
    b.func.insts.len() - 1
}

/// The one-sided limit along the ray of a comparison or `Sign` at x, and the count of its
/// ties the tangents leave undecided.
fn class_d_ray(
    b: &mut Builder,
    prim: &Prim,
    rv: &[Var],
    args: &[Var],
    d: &Directional,
) -> (Var, Var) {
    let zero_t = |b: &mut Builder, v: Var| tangent_or_zero(b, d, v);
    match prim {
        Prim::Unary(op) => {
            let x = rv[0];
            let t = zero_t(b, args[0]);
            let z = b.fill_like(x, 0.0);
            let tie = b.binary(Binary::Eq, x, z);
            let st = b.unary(*op, t);
            let sx = b.unary(*op, x);
            let value = b.select(tie, st, sx);
            let tz = b.binary(Binary::Eq, t, z);
            let un = b.binary(Binary::And, tie, tz);
            (value, b.reduce(Reduce::Sum, un, None))
        }
        Prim::Binary(op) => {
            let (p, q) = (rv[0], rv[1]);
            let (tp, tq) = (zero_t(b, args[0]), zero_t(b, args[1]));
            let tie = b.binary(Binary::Eq, p, q);
            let strict = b.binary(*op, p, q);
            // At a tie the comparison of the values is decided by the tangents.
            let by_tangent = b.binary(*op, tp, tq);
            let value = b.select(tie, by_tangent, strict);
            let teq = b.binary(Binary::Eq, tp, tq);
            let un = b.binary(Binary::And, tie, teq);
            (value, b.reduce(Reduce::Sum, un, None))
        }
        _ => unreachable!("class D ops are comparisons and unary ops of kink `Jump`"),
    }
}

/// The tangent of instruction `i` from its operands' ray values `rv` and tangents; `None`
/// where it has none (no operand has a tangent, or the op is piecewise constant). A
/// missing operand tangent counts as zero.
fn tangent_rule(b: &mut Builder, i: Var, rv: &[Var], args: &[Var], d: &Directional) -> Option<Var> {
    let inst = b.func.insts[i].clone();
    let t = |k: usize| d.tangent.get(&args[k]).copied();
    let out = d.val(i);
    let zeros = |b: &mut Builder, k: usize| b.fill_like(rv[k], 0.0);
    let tz = |b: &mut Builder, k: usize| t(k).unwrap_or_else(|| zeros(b, k));
    Some(match &inst.prim {
        Prim::Input(_) | Prim::Const(_) | Prim::Random { .. } | Prim::Observe(_) => return None,
        Prim::Argmax(_) | Prim::Argmin(_) => return None,
        Prim::Unary(op) => {
            let derivative = op.row().derivative?;
            let tx = t(0)?;
            derivative(b, rv[0], out, tx)
        }
        Prim::Binary(op) => {
            let (x, y) = (rv[0], rv[1]);
            if t(0).is_none() && t(1).is_none() {
                return None;
            }
            match op {
                Binary::Add => {
                    let (a, c) = (tz(b, 0), tz(b, 1));
                    b.binary(Binary::Add, a, c)
                }
                Binary::Sub => {
                    let (a, c) = (tz(b, 0), tz(b, 1));
                    b.binary(Binary::Sub, a, c)
                }
                Binary::Mul => sum_terms(b, [t(0).map(|ta| (ta, y)), t(1).map(|tc| (tc, x))])?,
                Binary::Div => {
                    let (a, c) = (tz(b, 0), tz(b, 1));
                    let m = b.binary(Binary::Mul, out, c);
                    let n = b.binary(Binary::Sub, a, m);
                    b.binary(Binary::Div, n, y)
                }
                Binary::Pow => {
                    let mut acc = None;
                    if let Some(ta) = t(0) {
                        let one = b.scalar(1.0);
                        let e = b.binary(Binary::Sub, y, one);
                        let p = b.binary(Binary::Pow, x, e);
                        let m = b.binary(Binary::Mul, y, p);
                        acc = Some(b.binary(Binary::Mul, m, ta));
                    }
                    if let Some(tc) = t(1) {
                        let l = b.unary(Unary::Log, x);
                        let m = b.binary(Binary::Mul, out, l);
                        let term = b.binary(Binary::Mul, m, tc);
                        acc = Some(match acc {
                            Some(a) => b.binary(Binary::Add, a, term),
                            None => term,
                        });
                    }
                    acc?
                }
                Binary::Max | Binary::Min => {
                    let mask = piece_mask(b, *op, args[0], args[1], Some(d));
                    let (a, c) = (tz(b, 0), tz(b, 1));
                    b.select(mask, a, c)
                }
                Binary::LogAddExp => {
                    let d1 = b.binary(Binary::Sub, x, y);
                    let s1 = b.unary(Unary::Sigmoid, d1);
                    let d2 = b.binary(Binary::Sub, y, x);
                    let s2 = b.unary(Unary::Sigmoid, d2);
                    let (a, c) = (tz(b, 0), tz(b, 1));
                    let p = b.binary(Binary::Mul, s1, a);
                    let q = b.binary(Binary::Mul, s2, c);
                    b.binary(Binary::Add, p, q)
                }
                Binary::Rem => {
                    let (a, c) = (tz(b, 0), tz(b, 1));
                    let q = b.binary(Binary::FloorDiv, x, y);
                    let m = b.binary(Binary::Mul, q, c);
                    b.binary(Binary::Sub, a, m)
                }
                _ => return None,
            }
        }
        Prim::Select => {
            if t(1).is_none() && t(2).is_none() {
                return None;
            }
            let (a, c) = (tz(b, 1), tz(b, 2));
            b.select(rv[0], a, c)
        }
        Prim::Broadcast(s) => b.broadcast(t(0)?, &s.clone()),
        Prim::Reshape(s) => b.reshape(t(0)?, &s.clone()),
        Prim::Transpose(p) => b.transpose(t(0)?, &p.clone()),
        Prim::Slice(r) => b.slice(t(0)?, &r.clone()),
        Prim::Pad { starts, shape } => b.pad(t(0)?, &starts.clone(), &shape.clone()),
        Prim::Concat(axis) => {
            if (0..args.len()).all(|k| t(k).is_none()) {
                return None;
            }
            let parts: Vec<Var> = (0..args.len()).map(|k| tz(b, k)).collect();
            b.concat(&parts, *axis)
        }
        Prim::Gather => b.gather(t(0)?, &args[1..]),
        Prim::ScatterAdd(s) => b.scatter_add(t(0)?, &args[1..], &s.clone()),
        Prim::ReduceSum(axes) => b.reduce(Reduce::Sum, t(0)?, Some(axes.clone())),
        Prim::ReduceMax(axes) | Prim::ReduceMin(axes) => {
            let tx = t(0)?;
            let is_max = matches!(inst.prim, Prim::ReduceMax(_));
            let xs = b.shape(rv[0]);
            let ob = expand(b, out, &xs, axes);
            let cand = b.binary(Binary::Eq, rv[0], ob);
            let fill = b.fill_like(
                tx,
                if is_max {
                    f64::NEG_INFINITY
                } else {
                    f64::INFINITY
                },
            );
            let masked = b.select(cand, tx, fill);
            b.reduce(
                if is_max { Reduce::Max } else { Reduce::Min },
                masked,
                Some(axes.clone()),
            )
        }
        Prim::ReduceProd(axes) => {
            let tx = t(0)?;
            let others = others_product(b, rv[0], axes);
            let m = b.binary(Binary::Mul, others, tx);
            b.reduce(Reduce::Sum, m, Some(axes.clone()))
        }
        Prim::Norm2(axes) => {
            let tx = t(0)?;
            let dot = b.binary(Binary::Mul, rv[0], tx);
            let dot = b.reduce(Reduce::Sum, dot, Some(axes.clone()));
            let zero = b.fill_like(out, 0.0);
            let at0 = b.binary(Binary::Eq, out, zero);
            let one = b.fill_like(out, 1.0);
            let safe = b.select(at0, one, out);
            let smooth = b.binary(Binary::Div, dot, safe);
            // At 0 the one-sided derivative is ‖u̇‖.
            let tn = b.reduce(Reduce::Norm2, tx, Some(axes.clone()));
            b.select(at0, tn, smooth)
        }
        Prim::LogSumExp(axes) => {
            let tx = t(0)?;
            let xs = b.shape(rv[0]);
            let ob = expand(b, out, &xs, axes);
            let diff = b.binary(Binary::Sub, rv[0], ob);
            let sm = b.unary(Unary::Exp, diff);
            let m = b.binary(Binary::Mul, sm, tx);
            b.reduce(Reduce::Sum, m, Some(axes.clone()))
        }
        Prim::MatMul => sum_products(
            b,
            [
                t(0).map(|ta| (ta, rv[1], true)),
                t(1).map(|tc| (rv[0], tc, false)),
            ],
        )?,
    })
}

/// Σ tangent · factor over the operands that have a tangent; `None` if none has.
fn sum_terms(b: &mut Builder, terms: [Option<(Var, Var)>; 2]) -> Option<Var> {
    let mut acc: Option<Var> = None;
    for (t, f) in terms.into_iter().flatten() {
        let m = b.binary(Binary::Mul, t, f);
        acc = Some(match acc {
            Some(a) => b.binary(Binary::Add, a, m),
            None => m,
        });
    }
    acc
}

/// Σ of the matrix products of the operands that have a tangent (the product rule of
/// `@`); `None` if none has.
fn sum_products(b: &mut Builder, terms: [Option<(Var, Var, bool)>; 2]) -> Option<Var> {
    let mut acc: Option<Var> = None;
    for (x, y, _) in terms.into_iter().flatten() {
        let m = b.matmul(x, y);
        acc = Some(match acc {
            Some(a) => b.binary(Binary::Add, a, m),
            None => m,
        });
    }
    acc
}

/// Appends the count of exact ties on the path from `wrt` to `y` (a float scalar): where
/// reverse mode alone cannot know which piece is active (module docs, step 1).
pub fn ties_into(b: &mut Builder, y: Var, wrt: &[Var]) -> Var {
    differentiable_form(b);
    let active = active_set(b, wrt);
    let needed = needed_set(b, y);
    let outer_span = b.span;
    let mut total: Option<Var> = None;
    for i in 0..=y {
        if !needed.contains(&i) {
            continue;
        }
        let inst = b.func.insts[i].clone();
        b.span = inst.span;
        let args = inst.args.clone();
        let any_active = args.iter().any(|a| active.contains(a));
        if !any_active {
            continue;
        }
        let count = match &inst.prim {
            Prim::Binary(op) if matches!(op, Binary::Max | Binary::Min) || op.is_comparison() => {
                let e = b.binary(Binary::Eq, args[0], args[1]);
                Some(b.reduce(Reduce::Sum, e, None))
            }
            Prim::Unary(op) if op.row().kink == Kink::Jump => {
                let z = b.fill_like(args[0], 0.0);
                let e = b.binary(Binary::Eq, args[0], z);
                Some(b.reduce(Reduce::Sum, e, None))
            }
            Prim::ReduceMax(axes) | Prim::ReduceMin(axes) => {
                let xs = b.shape(args[0]);
                let ob = expand(b, i, &xs, axes);
                let e = b.binary(Binary::Eq, args[0], ob);
                let s = b.reduce(Reduce::Sum, e, None);
                let n: usize = b.shape(i).iter().product();
                let nv = b.scalar(n as f64);
                Some(b.binary(Binary::Sub, s, nv))
            }
            Prim::Norm2(_) => {
                let z = b.fill_like(i, 0.0);
                let e = b.binary(Binary::Eq, i, z);
                Some(b.reduce(Reduce::Sum, e, None))
            }
            _ => None,
        };
        if let Some(c) = count {
            total = Some(match total {
                Some(t) => b.binary(Binary::Add, t, c),
                None => c,
            });
        }
    }
    b.span = outer_span;
    total.unwrap_or_else(|| b.scalar(0.0))
}
