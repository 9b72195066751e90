//! Simplification passes, each IR → IR and value-preserving: `fold` (constant folding of
//! small elementwise work, with the interpreter's own functions, so results are
//! bit-identical), `outer_products`, `pad_sums` and `transposed_products` (cheaper forms
//! of what reverse mode makes), `transposed_constants` (a layout for small matrix-vector
//! products), `broadcast_later` and `identities` (work on broadcast scalars done once, or
//! not at all), `powers` (constant powers as products, `x ^ 2` bit for bit, `x ^ 3`,
//! `x ^ 4` and `x ^ -2` within two ulps of `pow`: the one pass that may move a value),
//! `cse` (common subexpressions) and `dce` (dead code). `run` applies them all
//! and verifies the result. `untied_masks` (for the plan's fast gradient only: it keeps
//! values where nothing ties) makes piece masks read the max they select from. `quiet`
//! derives the gradient function of steps that record nothing (the loss replaced by a
//! check that proves it finite). `nonfinite` is an analysis, not a pass: whether a non-finite input entry
//! surely makes a value non-finite at the same entry (the JIT's loop reads it).

pub mod nonfinite;
pub mod quiet;

use std::collections::HashMap;

use crate::interp::{self, Env};
use crate::ir::{Func, Inst, Prim, Var, verify};

/// Constants up to this many entries are folded.
const FOLD_LIMIT: usize = 64;

/// Rebuilds `f` keeping the instructions `keep` (in order), renumbering operands.
fn rebuild(f: &Func, keep: &[bool], replace: &HashMap<Var, Var>) -> Func {
    let mut new_index = vec![usize::MAX; f.insts.len()];
    let mut insts = Vec::new();
    let resolve = |v: Var, new_index: &[usize]| {
        let mut v = v;
        while let Some(r) = replace.get(&v) {
            v = *r;
        }
        new_index[v]
    };
    for (i, inst) in f.insts.iter().enumerate() {
        if !keep[i] {
            continue;
        }
        let mut inst = inst.clone();
        inst.args = inst.args.iter().map(|a| resolve(*a, &new_index)).collect();
        new_index[i] = insts.len();
        insts.push(inst);
    }
    let outputs = f
        .outputs
        .iter()
        .map(|(n, v)| (n.clone(), resolve(*v, &new_index)))
        .collect();
    Func {
        insts,
        inputs: f.inputs.clone(),
        outputs,
        f32: f.f32,
    }
}

/// Removes instructions no output depends on (inputs are kept: they are the signature).
pub fn dce(f: &Func) -> Func {
    let mut live = vec![false; f.insts.len()];
    for (_, v) in &f.outputs {
        live[*v] = true;
    }
    for i in (0..f.insts.len()).rev() {
        if live[i] || matches!(f.insts[i].prim, Prim::Input(_)) {
            live[i] = true;
            for a in &f.insts[i].args {
                live[*a] = true;
            }
        }
    }
    rebuild(f, &live, &HashMap::new())
}

/// Merges instructions with the same op, operands and type (random draws included: they
/// are pure functions of their stream and step).
pub fn cse(f: &Func) -> Func {
    let mut seen: HashMap<String, Var> = HashMap::new();
    let mut replace: HashMap<Var, Var> = HashMap::new();
    let keep = vec![true; f.insts.len()];
    for (i, inst) in f.insts.iter().enumerate() {
        let args: Vec<Var> = inst
            .args
            .iter()
            .map(|a| *replace.get(a).unwrap_or(a))
            .collect();
        if let Some(k) = crate::ir::identity(inst, &args) {
            match seen.get(&k) {
                Some(prev) => {
                    replace.insert(i, *prev);
                }
                None => {
                    seen.insert(k, i);
                }
            }
        }
    }
    // Replaced instructions become dead; `dce` removes them.
    dce(&rebuild(f, &keep, &replace))
}

/// Evaluates elementwise and shape instructions whose operands are all constants: small
/// ones, and elementwise ones of any size that are no larger than an operand (`-y` of a
/// data vector, which would otherwise be negated again at every step).
pub fn fold(f: &Func) -> Func {
    let mut out = f.clone();
    for i in 0..out.insts.len() {
        let inst = &out.insts[i];
        let entries = |v: Var| out.insts[v].shape.iter().product::<usize>();
        let largest = inst.args.iter().map(|a| entries(*a)).max().unwrap_or(0);
        let elementwise = matches!(inst.prim, Prim::Unary(_) | Prim::Binary(_) | Prim::Select);
        let foldable = (elementwise || matches!(inst.prim, Prim::Broadcast(_) | Prim::Reshape(_)))
            && (entries(i) <= FOLD_LIMIT || (elementwise && entries(i) <= largest))
            && inst
                .args
                .iter()
                .all(|a| matches!(out.insts[*a].prim, Prim::Const(_)));
        if !foldable {
            continue;
        }
        // Evaluate the one instruction on its constant operands.
        let mut mini = Func {
            f32: out.f32,
            ..Func::default()
        };
        let mut args = Vec::new();
        for a in &inst.args {
            args.push(mini.insts.len());
            mini.insts.push(out.insts[*a].clone());
        }
        let mut single = inst.clone();
        single.args = args;
        mini.insts.push(single);
        mini.outputs.push(("v".into(), mini.insts.len() - 1));
        if let Ok(mut v) = interp::eval(&mini, &[], Env::default())
            && let Some(t) = v.pop()
        {
            out.insts[i].prim = Prim::Const(t);
            out.insts[i].args.clear();
        }
    }
    dce(&out)
}

/// Rewrites elementwise work on broadcast values as the broadcast of that work on the
/// values before broadcasting: `to_float(broadcast(c))` as `broadcast(to_float(c))`, and
/// `broadcast(a) op broadcast(b)` (sources of one shape) as `broadcast(a op b)`. Each entry
/// is the same operation on the same operands, done once instead of once an entry (and
/// then folded when the operands are constants).
pub fn broadcast_later(f: &Func) -> Func {
    rewrite(f, |_, mut inst, insts, _| {
        let source = |v: Var| match insts[v].prim {
            Prim::Broadcast(_) => Some(insts[v].args[0]),
            _ => None,
        };
        let sources: Option<Vec<Var>> = match inst.prim {
            Prim::Unary(_) | Prim::Binary(_) => inst.args.iter().map(|a| source(*a)).collect(),
            _ => None,
        };
        let Some(sources) = sources else { return inst };
        let shape = insts[sources[0]].shape.clone();
        if sources.iter().any(|s| insts[*s].shape != shape) {
            return inst;
        }
        insts.push(Inst {
            prim: inst.prim.clone(),
            args: sources,
            dtype: inst.dtype,
            shape,
            span: inst.span,
        });
        inst.args = vec![insts.len() - 1];
        inst.prim = Prim::Broadcast(inst.shape.clone());
        inst
    })
}

/// The value of a float constant whose entries all have the same bits (a scalar, or the
/// fold of a scalar's broadcast), seen through broadcasts and reshapes.
pub fn scalar_constant(insts: &[Inst], v: Var) -> Option<f64> {
    let inst = &insts[v];
    match &inst.prim {
        Prim::Const(crate::tensor::Tensor::Float(t)) => {
            let first = *t.iter().next()?;
            t.iter()
                .all(|x| x.to_bits() == first.to_bits())
                .then_some(first)
        }
        Prim::Broadcast(_) | Prim::Reshape(_) => scalar_constant(insts, inst.args[0]),
        _ => None,
    }
}

/// Rewrites each float power `x ^ c` of a constant exponent `c` (every entry the same) as
/// cheap elementwise work the JIT fuses (`pow` is a stored `kernels::vmath` pass, ~10 ns
/// an entry): with libm's own shortcuts, bit for bit, `x ^ 2` as `x * x`, `x ^ -1` as
/// `1 / x` and `x ^ 0.5` as
/// `sqrt(x + 0.0)` (libm gives +0.0 at -0.0), or +∞ where `x` is -∞, `x ^ 0` as 1.0 (`x ^ 1`
/// is `x`, see `identities`); and by products, within two ulps of `pow` (1e-322 near the
/// subnormals; tested): `x ^ 3` as `(x * x) * x`, `x ^ 4` as `(x * x) * (x * x)`, `x ^ -2`
/// as `(1 / x) * (1 / x)`.
/// Reverse mode differentiates the power before this runs, so the derivative of `x ^ 2`,
/// `2 * x ^ 1`, becomes `2 * x`, and that of `x ^ 3`, `3 * x ^ 2`, `3 * (x * x)`.
pub fn powers(f: &Func) -> Func {
    use crate::ir::types::DType;
    use crate::ir::{Binary, Unary};
    rewrite(f, |_, mut inst, insts, _| {
        if inst.prim != Prim::Binary(Binary::Pow) || inst.dtype != DType::Float {
            return inst;
        }
        let [x, e] = inst.args[..] else { return inst };
        if insts[x].dtype != DType::Float || insts[x].shape != inst.shape {
            return inst;
        }
        let Some(c) = scalar_constant(insts, e) else {
            return inst;
        };
        let (shape, span) = (inst.shape.clone(), inst.span);
        let push = |insts: &mut Vec<Inst>, prim: Prim, args: Vec<Var>| {
            insts.push(Inst {
                prim,
                args,
                dtype: DType::Float,
                shape: shape.clone(),
                span,
            });
            insts.len() - 1
        };
        // A constant of the result's shape: a scalar, broadcast unless the result is one.
        let fill = |insts: &mut Vec<Inst>, value: f64| {
            let scalar = ndarray::ArrayD::from_elem(ndarray::IxDyn(&[]), value);
            insts.push(Inst {
                prim: Prim::Const(crate::tensor::Tensor::Float(scalar)),
                args: vec![],
                dtype: DType::Float,
                shape: vec![],
                span,
            });
            let v = insts.len() - 1;
            if shape.is_empty() {
                v
            } else {
                push(insts, Prim::Broadcast(shape.clone()), vec![v])
            }
        };
        let (prim, args) = if c == 0.0 {
            // 1.0, even at a NaN: the last instruction `fill` pushes takes this one's place.
            fill(insts, 1.0);
            return insts.pop().expect("`fill` pushed the constant");
        } else if c == 2.0 {
            (Binary::Mul, vec![x, x])
        } else if c == 3.0 {
            let sq = push(insts, Prim::Binary(Binary::Mul), vec![x, x]);
            (Binary::Mul, vec![sq, x])
        } else if c == 4.0 {
            let sq = push(insts, Prim::Binary(Binary::Mul), vec![x, x]);
            (Binary::Mul, vec![sq, sq])
        } else if c == -1.0 {
            let one = fill(insts, 1.0);
            (Binary::Div, vec![one, x])
        } else if c == -2.0 {
            let one = fill(insts, 1.0);
            let r = push(insts, Prim::Binary(Binary::Div), vec![one, x]);
            (Binary::Mul, vec![r, r])
        } else if c == 0.5 {
            let zero = fill(insts, 0.0);
            let plus = push(insts, Prim::Binary(Binary::Add), vec![x, zero]);
            let root = push(insts, Prim::Unary(Unary::Sqrt), vec![plus]);
            let minus_inf = fill(insts, f64::NEG_INFINITY);
            let at = push(insts, Prim::Binary(Binary::Eq), vec![x, minus_inf]);
            let inf = fill(insts, f64::INFINITY);
            inst.prim = Prim::Select;
            inst.args = vec![at, inf, root];
            return inst;
        } else {
            return inst;
        };
        inst.prim = Prim::Binary(prim);
        inst.args = args;
        inst
    })
}

/// Drops float operations that give back their operand bit for bit: `x - 0.0`,
/// `x + (-0.0)`, `(-0.0) + x`, `x * 1.0`, `1.0 * x`, `x / 1.0` and `x ^ 1.0` (a constant
/// scalar, perhaps broadcast; `x + 0.0` is not one: it turns -0.0 into 0.0). Reverse mode makes
/// `sigmoid(z - 0)` for the derivative of `logaddexp(z, 0)`.
pub fn identities(f: &Func) -> Func {
    use crate::ir::Binary;
    use crate::ir::types::DType;
    let mut replace: HashMap<Var, Var> = HashMap::new();
    for (i, inst) in f.insts.iter().enumerate() {
        let Prim::Binary(op) = inst.prim else {
            continue;
        };
        let [a, b] = inst.args[..] else { continue };
        let is = |v: Var, c: f64| {
            scalar_constant(&f.insts, v).is_some_and(|x| x.to_bits() == c.to_bits())
        };
        let kept = match op {
            // libm's `pow(x, 1.0)` is `x` (a NaN `x` comes back as `x + 1.0`, a NaN).
            Binary::Pow if is(b, 1.0) => Some(a),
            Binary::Sub if is(b, 0.0) => Some(a),
            Binary::Add if is(b, -0.0) => Some(a),
            Binary::Add if is(a, -0.0) => Some(b),
            Binary::Mul | Binary::Div if is(b, 1.0) => Some(a),
            Binary::Mul if is(a, 1.0) => Some(b),
            _ => None,
        };
        if let Some(x) = kept
            && inst.dtype == DType::Float
            && f.insts[x].dtype == DType::Float
            && f.insts[x].shape == inst.shape
        {
            replace.insert(i, *replace.get(&x).unwrap_or(&x));
        }
    }
    dce(&rebuild(f, &vec![true; f.insts.len()], &replace))
}

/// Rewrites each float product `[m, 1] @ [1, n]` (an outer product, as reverse mode makes
/// for `x @ v` with a vector) as the elementwise product of the two broadcast to
/// `[m, n]`: the same value without a GEMM call (each entry is one rounded product either
/// way; faer computes it as `fma(a, b, 0)`, which differs only in the sign of a zero
/// product), and the JIT then fuses it into the elementwise work that reads it.
pub fn outer_products(f: &Func) -> Func {
    use crate::ir::Binary;
    use crate::ir::types::DType;
    rewrite(f, |_, mut inst, insts, _| {
        let outer = inst.prim == Prim::MatMul
            && inst.dtype == DType::Float
            && inst.args.len() == 2
            && inst.args.iter().all(|a| insts[*a].dtype == DType::Float)
            && insts[inst.args[0]].shape.len() == 2
            && insts[inst.args[0]].shape[1] == 1
            && insts[inst.args[1]].shape.len() == 2
            && insts[inst.args[1]].shape[0] == 1;
        if outer {
            let mut wide = Vec::new();
            for a in inst.args.clone() {
                wide.push(insts.len());
                insts.push(Inst {
                    prim: Prim::Broadcast(inst.shape.clone()),
                    args: vec![a],
                    dtype: DType::Float,
                    shape: inst.shape.clone(),
                    span: inst.span,
                });
            }
            inst.prim = Prim::Binary(Binary::Mul);
            inst.args = wide;
        }
        inst
    })
}

/// Rewrites each transpose of a float product, `(A @ B)'` whose product has no other use,
/// as `B' @ A'`, the transposes of operands read in place by both backends (a transpose
/// of a transpose is its operand): reverse mode makes these for the gradient of `x @ W'`,
/// and a strided copy of a wide product is slow (each of its reads is a cache miss). The
/// same sums of the same products, though faer may add them in another order.
pub fn transposed_products(f: &Func) -> Func {
    use crate::ir::types::DType;
    let mut uses = vec![0usize; f.insts.len()];
    for inst in &f.insts {
        for a in &inst.args {
            uses[*a] += 1;
        }
    }
    for (_, v) in &f.outputs {
        uses[*v] += 1;
    }
    let swap = Prim::Transpose(vec![1, 0]);
    rewrite(f, |i, mut inst, insts, index| {
        let old_args = &f.insts[i].args;
        let product = old_args.first().map(|p| &f.insts[*p]);
        let product_of_transpose = inst.prim == swap
            && product.is_some_and(|p| {
                p.prim == Prim::MatMul
                    && p.dtype == DType::Float
                    && p.args.len() == 2
                    && p.args
                        .iter()
                        .all(|a| f.insts[*a].dtype == DType::Float && f.insts[*a].shape.len() == 2)
                    && uses[old_args[0]] == 1
            });
        if product_of_transpose {
            let product = &f.insts[old_args[0]];
            let mut args = Vec::with_capacity(2);
            for &a in product.args.iter().rev() {
                let old = &f.insts[a];
                if old.prim == swap {
                    args.push(index[old.args[0]]);
                } else {
                    args.push(insts.len());
                    insts.push(Inst {
                        prim: swap.clone(),
                        args: vec![index[a]],
                        dtype: DType::Float,
                        shape: vec![old.shape[1], old.shape[0]],
                        span: old.span,
                    });
                }
            }
            inst.prim = Prim::MatMul;
            inst.args = args;
        }
        inst
    })
}

/// Rewrites each small matrix-vector product `C @ v` of a constant matrix `C` with more
/// rows than `math::REGISTER_SUMS` and at most that many columns as `(C')' @ v`: the
/// constant stored transposed and read in place, so that `math::small_gemv` sums
/// `REGISTER_SUMS` rows at once along contiguous columns rather than one short row at a
/// time (logreg's `X @ w`, `[200,10] @ [10]`). Each entry is the same sum in the same
/// order, so the bits are the same.
pub fn transposed_constants(f: &Func) -> Func {
    use crate::ir::types::DType;
    use crate::kernels::math::{REGISTER_SUMS, SMALL_GEMV};
    use crate::tensor::Tensor;
    let swap = Prim::Transpose(vec![1, 0]);
    rewrite(f, |i, mut inst, insts, _| {
        let old = &f.insts[i];
        if old.prim != Prim::MatMul || old.dtype != DType::Float || old.args.len() != 2 {
            return inst;
        }
        let (c, v) = (&f.insts[old.args[0]], &f.insts[old.args[1]]);
        let Prim::Const(Tensor::Float(values)) = &c.prim else {
            return inst;
        };
        let [m, k] = c.shape[..] else { return inst };
        if v.shape != [k, 1] || k > REGISTER_SUMS || m <= REGISTER_SUMS || m * k > SMALL_GEMV {
            return inst;
        }
        let transposed = values.t().as_standard_layout().into_owned();
        insts.push(Inst {
            prim: Prim::Const(Tensor::Float(transposed)),
            args: vec![],
            dtype: DType::Float,
            shape: vec![k, m],
            span: c.span,
        });
        insts.push(Inst {
            prim: swap.clone(),
            args: vec![insts.len() - 1],
            dtype: DType::Float,
            shape: vec![m, k],
            span: c.span,
        });
        inst.args[0] = insts.len() - 1;
        inst
    })
}

/// Rewrites each float sum of pads whose pieces tile one axis without overlapping, as
/// reverse mode makes for the slices of a stacked param (`matprod(W)`, `W[0]`), as the
/// concat of the pieces, gaps filled with zeros: the same value (each entry is one piece's
/// entry plus zeros, which only turns a -0.0 into +0.0) without filling and adding whole
/// arrays of zeros. The adds it replaces are left to `dce`.
pub fn pad_sums(f: &Func) -> Func {
    use crate::ir::Binary;
    use crate::ir::types::DType;
    // The pieces of a pad or of a sum of pads: (source, its shape, its starts).
    type Pieces = Vec<(Var, Vec<usize>, Vec<usize>)>;
    let mut pieces: Vec<Option<Pieces>> = vec![None; f.insts.len()];
    rewrite(f, |i, mut inst, insts, _| {
        let old_args = &f.insts[i].args;
        if inst.dtype == DType::Float {
            match &inst.prim {
                Prim::Pad { starts, .. } => {
                    let src = inst.args[0];
                    pieces[i] = Some(vec![(src, insts[src].shape.clone(), starts.clone())]);
                }
                Prim::Binary(Binary::Add) if old_args.len() == 2 => {
                    if let (Some(a), Some(b)) = (&pieces[old_args[0]], &pieces[old_args[1]]) {
                        let same = old_args.iter().all(|a| f.insts[*a].shape == inst.shape);
                        if same {
                            pieces[i] = Some(a.iter().chain(b).cloned().collect());
                        }
                    }
                }
                _ => {}
            }
        }
        if let (Prim::Binary(Binary::Add), Some(p)) = (&inst.prim, &pieces[i])
            && let Some((axis, parts)) = tiling(p, &inst.shape)
        {
            let mut args = Vec::with_capacity(parts.len());
            for part in parts {
                match part {
                    Ok(v) => args.push(v),
                    Err(gap) => {
                        args.push(insts.len());
                        insts.push(Inst {
                            prim: Prim::Const(crate::tensor::Tensor::Float(
                                ndarray::ArrayD::zeros(ndarray::IxDyn(&gap)),
                            )),
                            args: vec![],
                            dtype: DType::Float,
                            shape: gap,
                            span: inst.span,
                        });
                    }
                }
            }
            inst.prim = Prim::Concat(axis);
            inst.args = args;
        }
        inst
    })
}

/// In a gradient function whose values are used only when its `ties` output is 0 (the
/// plan's fast gradient; at a tie the directional one runs instead), rewrites each piece
/// mask `a >= c` of a `max(a, c)` whose ties `a == c` that output counts as
/// `max(a, c) > c` (and `a <= c` of a `min(a, c)` as `min(a, c) < c`). Where no entry
/// ties, both are `a > c` (`a < c`), entry for entry, NaNs included (false either way), so
/// every value is unchanged; `a` is then read only where the max is computed (and its tie
/// count), so the ReLU's loop can write over `a` (`X W'`) and the back-propagation reads
/// the ReLU's output: one buffer fewer (wide's `[1024, 2048]`: 16 MB of the 48 its step
/// went through).
pub fn untied_masks(f: &Func) -> Func {
    use crate::ir::Binary;
    use crate::ir::types::DType;
    let Some(&(_, ties)) = f.outputs.iter().find(|(name, _)| name == "ties") else {
        return f.clone();
    };
    // The operand pairs whose equal entries `ties` counts: it is a sum of flag counts.
    let mut counted = std::collections::HashSet::new();
    let mut todo = vec![ties];
    while let Some(v) = todo.pop() {
        let inst = &f.insts[v];
        match inst.prim {
            Prim::Binary(Binary::Add) => todo.extend(&inst.args),
            Prim::ReduceSum(_) => {
                let e = &f.insts[inst.args[0]];
                if e.prim == Prim::Binary(Binary::Eq) {
                    counted.insert((e.args[0], e.args[1]));
                }
            }
            _ => {}
        }
    }
    let floats = |v: Var| f.insts[v].dtype == DType::Float;
    let mut piece: HashMap<(Binary, Var, Var), Var> = HashMap::new();
    rewrite(f, |i, mut inst, _, index| {
        let orig = &f.insts[i];
        let Prim::Binary(op) = orig.prim else {
            return inst;
        };
        let [a, c] = orig.args[..] else { return inst };
        if matches!(op, Binary::Max | Binary::Min) {
            piece.entry((op, a, c)).or_insert(i);
            return inst;
        }
        let (of, strict) = match op {
            Binary::Ge => (Binary::Max, Binary::Gt),
            Binary::Le => (Binary::Min, Binary::Lt),
            _ => return inst,
        };
        let untied = counted.contains(&(a, c)) || counted.contains(&(c, a));
        match piece.get(&(of, a, c)) {
            Some(&m) if untied && floats(a) && floats(c) => {
                inst.prim = Prim::Binary(strict);
                inst.args = vec![index[m], index[c]];
                inst
            }
            _ => inst,
        }
    })
}

/// Rebuilds `f` instruction by instruction: `step(i, inst, insts, index)` gets
/// instruction `i` with its operands renumbered, may push new instructions before it onto
/// `insts` (`index` maps the old numbers to the new), and returns what takes its place.
fn rewrite(f: &Func, mut step: impl FnMut(usize, Inst, &mut Vec<Inst>, &[Var]) -> Inst) -> Func {
    let mut insts: Vec<Inst> = Vec::with_capacity(f.insts.len());
    let mut index = vec![0usize; f.insts.len()];
    for (i, inst) in f.insts.iter().enumerate() {
        let mut inst = inst.clone();
        inst.args = inst.args.iter().map(|a| index[*a]).collect();
        let inst = step(i, inst, &mut insts, &index);
        index[i] = insts.len();
        insts.push(inst);
    }
    Func {
        insts,
        inputs: f.inputs.clone(),
        outputs: f
            .outputs
            .iter()
            .map(|(n, v)| (n.clone(), index[*v]))
            .collect(),
        f32: f.f32,
    }
}

/// When `pieces` (at least two) lie along one axis of `shape`, each full along every other
/// axis and none overlapping: that axis and, in order, each piece (`Ok`) or the shape of
/// the zeros between pieces (`Err`).
#[allow(clippy::type_complexity)]
fn tiling(
    pieces: &[(Var, Vec<usize>, Vec<usize>)],
    shape: &[usize],
) -> Option<(usize, Vec<Result<Var, Vec<usize>>>)> {
    if pieces.len() < 2 {
        return None;
    }
    let rank = shape.len();
    let axis = (0..rank).find(|&k| {
        pieces.iter().all(|(_, s, st)| {
            s.len() == rank
                && st.len() == rank
                && (0..rank).all(|j| j == k || (st[j] == 0 && s[j] == shape[j]))
        })
    })?;
    let mut sorted: Vec<_> = pieces.iter().collect();
    sorted.sort_by_key(|(_, _, st)| st[axis]);
    let mut parts = Vec::new();
    let mut at = 0;
    let gap = |len: usize| {
        let mut g = shape.to_vec();
        g[axis] = len;
        Err(g)
    };
    for (v, s, st) in sorted {
        if st[axis] < at {
            return None;
        }
        if st[axis] > at {
            parts.push(gap(st[axis] - at));
        }
        parts.push(Ok(*v));
        at = st[axis] + s[axis];
    }
    if at < shape[axis] {
        parts.push(gap(shape[axis] - at));
    }
    Some((axis, parts))
}

/// All passes, verified after each.
pub fn run(f: &Func) -> Result<Func, String> {
    let mut f = f.clone();
    for (name, pass) in [
        ("outer_products", outer_products as fn(&Func) -> Func),
        ("pad_sums", pad_sums),
        ("transposed_products", transposed_products),
        ("transposed_constants", transposed_constants),
        ("broadcast_later", broadcast_later),
        ("fold", fold),
        ("powers", powers),
        ("identities", identities),
        ("cse", cse),
        ("dce", dce),
    ] {
        f = pass(&f);
        verify(&f)
            .map_err(|e| format!("internal error: IR after `{name}` does not verify: {e}"))?;
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::types::DType;
    use crate::ir::{Binary, Builder, Unary};
    use crate::tensor::Tensor;

    fn outputs(f: &Func, inputs: &[Tensor]) -> Vec<Tensor> {
        interp::eval(f, inputs, Env::default()).expect("eval")
    }

    pub(super) fn floats(v: Vec<f64>, shape: &[usize]) -> Tensor {
        Tensor::Float(ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(shape), v).expect("shape"))
    }

    fn bits(ts: &[Tensor]) -> Vec<Vec<u64>> {
        ts.iter()
            .map(|t| t.to_f64().iter().map(|x| x.to_bits()).collect())
            .collect()
    }

    #[test]
    fn passes_preserve_values_and_shrink_the_function() {
        let mut b = Builder::new();
        let x = b.input("x", DType::Float, vec![3]);
        let two = b.scalar(2.0);
        let three = b.scalar(3.0);
        let six = b.binary(Binary::Mul, two, three); // folds to 6
        let a = b.binary(Binary::Mul, x, six);
        let a2 = b.binary(Binary::Mul, x, six); // same as `a`
        b.unary(Unary::Exp, x); // dead: no output uses it
        let s = b.binary(Binary::Add, a, a2);
        b.output("s", s);
        let f = b.finish();
        let g = run(&f).expect("passes verify");
        let input = [floats(vec![1.0, -2.0, 0.5], &[3])];
        assert_eq!(outputs(&f, &input), outputs(&g, &input));
        assert!(g.insts.len() < f.insts.len(), "{}", crate::ir::print(&g));
        // One multiply by x remains, the constant product is folded, exp is gone.
        let printed = crate::ir::print(&g);
        assert_eq!(printed.matches("= mul").count(), 1, "{printed}");
        assert!(!printed.contains("exp"), "{printed}");
        // 2 * 3 and its broadcast are one constant now.
        assert_eq!(printed.matches("= const").count(), 1, "{printed}");
        assert!(!printed.contains("broadcast"), "{printed}");
    }

    #[test]
    fn dce_keeps_inputs_and_outputs() {
        let mut b = Builder::new();
        let x = b.input("x", DType::Float, vec![]);
        let _y = b.input("y", DType::Float, vec![]);
        b.output("x", x);
        let g = dce(&b.finish());
        assert_eq!(g.inputs.len(), 2);
        assert_eq!(g.insts.len(), 2);
        verify(&g).expect("verifies");
    }

    #[test]
    fn sums_of_pads_that_tile_an_axis_become_one_concat() {
        // Rows 0 and 3..5 of a [5, 2] from two pads, row 1..3 left as zeros: a concat of
        // three pieces; pads that overlap, or that are not full along the other axis, stay.
        let mut b = Builder::new();
        let a = b.input("a", DType::Float, vec![1, 2]);
        let c = b.input("c", DType::Float, vec![2, 2]);
        let pa = b.pad(a, &[0, 0], &[5, 2]);
        let pc = b.pad(c, &[3, 0], &[5, 2]);
        let s = b.binary(Binary::Add, pc, pa);
        b.output("s", s);
        let overlap = b.pad(c, &[0, 0], &[5, 2]);
        let o = b.binary(Binary::Add, pa, overlap);
        b.output("o", o);
        let f = b.finish();
        let g = run(&f).expect("passes verify");
        let input = [
            floats(vec![1.0, -2.0], &[1, 2]),
            floats(vec![3.0, 4.0, 5.0, f64::INFINITY], &[2, 2]),
        ];
        assert_eq!(outputs(&f, &input), outputs(&g, &input));
        let concat = |h: &Func| {
            h.insts
                .iter()
                .filter(|i| matches!(i.prim, Prim::Concat(0)))
                .count()
        };
        assert_eq!(concat(&f), 0);
        assert_eq!(concat(&g), 1, "{}", crate::ir::print(&g));
        let s_inst = &g.insts[g.outputs[0].1];
        assert_eq!(s_inst.prim, Prim::Concat(0));
        assert_eq!(s_inst.args.len(), 3);
        assert_eq!(g.insts[s_inst.args[1]].shape, vec![2, 2]);
        assert!(matches!(
            g.insts[g.outputs[1].1].prim,
            Prim::Binary(Binary::Add)
        ));
    }

    #[test]
    fn small_products_of_constant_matrices_read_them_transposed() {
        // `C @ v` for constants of 17+ rows and ≤ 16 columns reads a transposed copy of C,
        // with every entry's sum unchanged bit for bit; other shapes are left alone.
        let entry = |i: usize| match i % 7 {
            0 => 1e16,
            1 => -1e16,
            2 => -0.0,
            _ => ((i * 7919) % 1000) as f64 / 37.0 - 13.0,
        };
        for (m, k, rewritten) in [
            (200, 10, true),
            (17, 16, true),
            (16, 10, false),
            (40, 17, false),
        ] {
            let mut b = Builder::new();
            let v = b.input("v", DType::Float, vec![k, 1]);
            let c = b.constant(floats((0..m * k).map(entry).collect(), &[m, k]));
            let p = b.matmul(c, v);
            b.output("p", p);
            let f = b.finish();
            let g = transposed_constants(&f);
            verify(&g).expect("verifies");
            let printed = crate::ir::print(&g);
            let transposes = printed.matches("transpose").count();
            assert_eq!(transposes, rewritten as usize, "[{m},{k}]: {printed}");
            let input = [floats((0..k).map(|p| entry(p + 3)).collect(), &[k, 1])];
            let (want, got) = (outputs(&f, &input), outputs(&g, &input));
            assert_eq!(bits(&want), bits(&got), "[{m},{k}]");
        }
    }

    #[test]
    fn a_transposed_product_becomes_the_product_of_transposes() {
        // (A @ B')' = B @ A': the transpose of B' is B itself, A' is read in place; a
        // product with another use keeps its transpose.
        let mut b = Builder::new();
        let a = b.input("a", DType::Float, vec![3, 2]);
        let bt = b.input("b", DType::Float, vec![4, 2]);
        let bb = b.transpose(bt, &[1, 0]);
        let p = b.matmul(a, bb);
        let t = b.transpose(p, &[1, 0]);
        b.output("t", t);
        let q = b.matmul(a, bb);
        let u = b.transpose(q, &[1, 0]);
        b.output("u", u);
        b.output("q", q);
        let f = b.finish();
        let g = run(&f).expect("passes verify");
        let t_inst = &g.insts[g.outputs[0].1];
        assert_eq!(t_inst.prim, Prim::MatMul, "{}", crate::ir::print(&g));
        assert_eq!(
            t_inst.args[0],
            1,
            "B is read as it is: {}",
            crate::ir::print(&g)
        );
        assert_eq!(g.insts[t_inst.args[1]].prim, Prim::Transpose(vec![1, 0]));
        assert_eq!(g.insts[g.outputs[1].1].prim, Prim::Transpose(vec![1, 0]));
        let input = [
            floats(vec![1.0, 2.0, -3.0, 0.5, 4.0, -1.0], &[3, 2]),
            floats(vec![2.0, 1.0, 0.0, -1.0, 3.0, 5.0, -2.0, 0.25], &[4, 2]),
        ];
        let (want, got) = (outputs(&f, &input), outputs(&g, &input));
        for (w, h) in want.iter().zip(&got) {
            assert_eq!(w.shape(), h.shape());
            for (x, y) in w.to_f64().iter().zip(h.to_f64().iter()) {
                assert!((x - y).abs() <= 1e-12 * x.abs().max(1.0), "{x} vs {y}");
            }
        }
        assert_eq!(got[0].to_f64()[[0, 0]], 1.0 * 2.0 + 2.0 * 1.0);
    }

    #[test]
    fn exact_identities_are_dropped_and_the_others_kept() {
        // x - 0.0, x + (-0.0), 1.0 * x and x / 1.0 are x bit for bit; x + 0.0 (-0.0 becomes
        // 0.0), x - (-0.0) and x * 2.0 are not.
        let mut b = Builder::new();
        let x = b.input("x", DType::Float, vec![4]);
        let mut kept = Vec::new();
        for (op, c, left, identity) in [
            (Binary::Sub, 0.0, false, true),
            (Binary::Add, -0.0, false, true),
            (Binary::Add, -0.0, true, true),
            (Binary::Mul, 1.0, true, true),
            (Binary::Div, 1.0, false, true),
            (Binary::Add, 0.0, false, false),
            (Binary::Sub, -0.0, false, false),
            (Binary::Mul, 2.0, false, false),
        ] {
            let c = b.fill_like(x, c);
            let v = if left {
                b.binary(op, c, x)
            } else {
                b.binary(op, x, c)
            };
            b.output("v", v);
            kept.push(!identity);
        }
        let f = b.finish();
        let g = identities(&f);
        for ((_, v), kept) in g.outputs.iter().zip(kept) {
            assert_eq!(*v != x, kept, "{}", crate::ir::print(&g));
        }
        let input = [floats(vec![-0.0, 0.0, f64::NAN, -3.5e-310], &[4])];
        assert_eq!(bits(&outputs(&f, &input)), bits(&outputs(&g, &input)));
    }

    #[test]
    fn work_on_broadcast_scalars_is_done_once_and_large_constant_work_is_folded() {
        // to_float(broadcast(3)) and broadcast(2) * broadcast(3) become broadcasts of folded
        // scalars; -c of a constant of 200 entries is folded, the broadcast of a scalar to
        // 200 entries (larger than its operand) is not.
        let mut b = Builder::new();
        let x = b.input("x", DType::Float, vec![200]);
        let three = b.int_scalar(3);
        let wide = b.broadcast(three, &[200]);
        let f3 = b.to_float(wide);
        let two = b.fill_like(x, 2.0);
        let six = b.binary(Binary::Mul, two, f3);
        let c = b.constant(floats((0..200).map(|i| i as f64 - 99.5).collect(), &[200]));
        let minus_c = b.unary(Unary::Neg, c);
        let y = b.binary(Binary::Mul, x, six);
        let y = b.binary(Binary::Add, y, minus_c);
        b.output("y", y);
        let f = b.finish();
        let g = run(&f).expect("passes verify");
        let printed = crate::ir::print(&g);
        assert!(!printed.contains("to_float"), "{printed}");
        assert!(!printed.contains("neg"), "{printed}");
        assert_eq!(printed.matches("= mul").count(), 1, "{printed}");
        assert_eq!(printed.matches("= broadcast").count(), 1, "{printed}");
        let input = [floats((0..200).map(|i| (i as f64).sin()).collect(), &[200])];
        assert_eq!(bits(&outputs(&f, &input)), bits(&outputs(&g, &input)));
    }

    #[test]
    fn piece_masks_read_the_pieces_where_ties_are_counted() {
        // `ties` counts `x == c` (the max's pair), not `x == d` (the min's): only the max's
        // mask is rewritten, and where nothing ties every value keeps its bits.
        let mut b = Builder::new();
        let x = b.input("x", DType::Float, vec![6]);
        let c = b.input("c", DType::Float, vec![6]);
        let d = b.input("d", DType::Float, vec![6]);
        let hi = b.binary(Binary::Max, x, c);
        let lo = b.binary(Binary::Min, x, d);
        let ge = b.binary(Binary::Ge, x, c);
        let le = b.binary(Binary::Le, x, d);
        let s = b.select(ge, hi, lo);
        let t = b.select(le, lo, hi);
        b.output("s", s);
        b.output("t", t);
        let tie = b.binary(Binary::Eq, x, c);
        let ties = b.reduce(crate::ir::Reduce::Sum, tie, None);
        b.output("ties", ties);
        let f = run(&b.finish()).expect("passes verify");
        let g = untied_masks(&f);
        verify(&g).expect("verifies");
        let printed = crate::ir::print(&g);
        assert!(printed.contains("= gt %"), "{printed}");
        assert!(!printed.contains("= ge %"), "{printed}");
        assert!(printed.contains("= le %"), "{printed}");
        let (inf, nan) = (f64::INFINITY, f64::NAN);
        let input = [
            floats(vec![1.0, -2.0, nan, inf, -0.0, 3.0], &[6]),
            floats(vec![0.5, -1.0, 0.0, 2.0, 1.0, nan], &[6]),
            floats(vec![2.0, -3.0, 1.0, -inf, -1.0, 3.5], &[6]),
        ];
        assert_eq!(bits(&outputs(&f, &input)), bits(&outputs(&g, &input)));
        // At a tie the two differ: the rewritten mask is for untied points only.
        let tied = [input[0].clone(), input[0].clone(), input[2].clone()];
        assert_ne!(bits(&outputs(&f, &tied)), bits(&outputs(&g, &tied)));
        // Without a `ties` output nothing is rewritten.
        let mut h = f.clone();
        h.outputs.retain(|(name, _)| name != "ties");
        assert_eq!(crate::ir::print(&untied_masks(&h)), crate::ir::print(&h));
    }

    /// Special values, subnormals, values at the edges of overflow and underflow for small
    /// powers, and `n` pseudo-random ones: arbitrary bit patterns and values in [-4, 4].
    pub(super) fn awkward_floats(n: usize) -> Vec<f64> {
        let mut xs = vec![
            0.0,
            -0.0,
            1.0,
            -1.0,
            2.0,
            0.5,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            -f64::NAN,
            f64::MIN_POSITIVE,
            -f64::MIN_POSITIVE,
            5e-324,
            -5e-324,
            2.2e-310,
            f64::MAX,
            -f64::MAX,
            f64::EPSILON,
        ];
        for edge in [
            1.34e154f64,
            5.6e102,
            1.1e77,
            1.5e-162,
            1.2e-154,
            7.4e-155,
            1e-108,
        ] {
            for d in -2i64..=2 {
                let x = f64::from_bits(edge.to_bits().wrapping_add(d as u64));
                xs.extend([x, -x]);
            }
        }
        let mut s = 0x2545_f491_4f6c_dd1du64;
        for i in 0..n {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let unit = (s >> 11) as f64 / (1u64 << 53) as f64;
            xs.push(if i % 2 == 0 {
                f64::from_bits(s)
            } else {
                unit * 8.0 - 4.0
            });
        }
        xs
    }

    /// How many floats lie between `a` and `b` (0 for two NaNs; a sign change counts the
    /// zeros between).
    fn ulps(a: f64, b: f64) -> u64 {
        if a.is_nan() || b.is_nan() {
            return if a.is_nan() && b.is_nan() {
                0
            } else {
                u64::MAX
            };
        }
        let key = |x: f64| {
            let bits = x.to_bits() as i64;
            if bits < 0 { i64::MIN - bits } else { bits }
        };
        key(a).abs_diff(key(b))
    }

    #[test]
    fn constant_powers_and_their_gradients_are_products_within_two_ulps_of_pow() {
        // The loss sum(x ^ c) and its gradient c * x ^ (c - 1), before and after `run`, on
        // a million inputs: `x ^ 2` keeps every bit of value and gradient (so do `x ^ 1`
        // and `x ^ 0.5`, `x ^ -1` of its value), the others stay within two ulps (or
        // 1e-322 where results are about subnormal).
        let xs = awkward_floats(1_000_000);
        let n = xs.len();
        let input = [floats(xs.clone(), &[n])];
        // (c, whether the value keeps its bits, whether the gradient does, the pows left:
        // those of the gradients x ^ -0.5 and x ^ -3).
        for (c, exact_value, exact_grad, pows_left) in [
            (2.0, true, true, 0),
            (-1.0, true, false, 0),
            (0.5, true, true, 1),
            (1.0, true, true, 0),
            (3.0, false, true, 0),
            (4.0, false, false, 0),
            (-2.0, false, true, 1),
        ] {
            let mut b = Builder::new();
            let x = b.input("x", DType::Float, vec![n]);
            let e = b.fill_like(x, c);
            let p = b.binary(Binary::Pow, x, e);
            let loss = b.reduce(crate::ir::Reduce::Sum, p, None);
            let grads =
                crate::autodiff::grad_into(&mut b, loss, &[x], &crate::autodiff::Ties::Default)
                    .expect("gradient");
            b.output("value", p);
            b.output("grad", grads[0]);
            let f = b.finish();
            let g = run(&f).expect("passes verify");
            let printed = crate::ir::print(&g);
            let pows = printed.matches("= pow").count();
            assert_eq!(pows, pows_left, "x ^ {c}:\n{printed}");
            let (want, got) = (outputs(&f, &input), outputs(&g, &input));
            for (k, what, exact) in [(0, "value", exact_value), (1, "gradient", exact_grad)] {
                let (w, o) = (want[k].to_f64(), got[k].to_f64());
                for (x, (w, o)) in xs.iter().zip(w.iter().zip(o.iter())) {
                    let d = ulps(*w, *o);
                    let ok = if exact {
                        w.to_bits() == o.to_bits() || (w.is_nan() && o.is_nan())
                    } else {
                        // Near the subnormals, where an ulp is 2^-1074 and the gradient's
                        // factor c scales a subnormal power's one-ulp difference.
                        d <= 2 || (w - o).abs() <= 1e-322
                    };
                    assert!(ok, "{what} of x ^ {c} at {x:e}: pow gives {w:e}, now {o:e}");
                }
            }
        }
    }
}
