//! Where each instruction's value lives in compiled code: its own buffer, a view into
//! another's (reshapes, contiguous slices), nowhere at all because its users read its
//! source in place (transposes feeding matmuls, broadcasts feeding elementwise loops), or
//! inside its single consumer's loop (fused elementwise chains); which flag counts share
//! an earlier loop; which outputs may overwrite an input's buffer. A pure analysis of the
//! IR; `plan`, `emit` and `train_loop` follow it.

use std::collections::HashMap;

use crate::ir::matmul_source;
use crate::ir::types::DType;
use crate::ir::{Binary, Func, Prim, Unary};
use crate::kernels::math::SUM_LANES;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// Its own buffer.
    Own,
    /// The buffer of `src`, from `offset` bytes on (same elements, row-major).
    View { src: usize, offset: i64 },
    /// Never stored: every user reads the source in place.
    Lazy,
    /// Computed inside the loop of its only consumer.
    Fused,
}

/// Row-major strides of `shape`, in elements.
fn elem_strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for k in (0..shape.len().saturating_sub(1)).rev() {
        s[k] = s[k + 1] * shape[k + 1];
    }
    s
}

/// The element offset of a slice when it is one contiguous block of its source.
fn contiguous_slice(from: &[usize], ranges: &[(usize, usize)]) -> Option<usize> {
    if ranges.len() != from.len() {
        return None;
    }
    // From the last axis: full ranges, then one partial axis, then only length-1 ranges.
    let mut k = from.len();
    while k > 0 && ranges[k - 1] == (0, from[k - 1]) {
        k -= 1;
    }
    if k > 1 && ranges[..k - 1].iter().any(|(a, b)| b - a != 1) {
        return None;
    }
    let strides = elem_strides(from);
    Some(ranges.iter().zip(&strides).map(|((a, _), s)| a * s).sum())
}

/// A float elementwise op the emitter computes inline (no host path): every operand and
/// the result are floats, and it is not a [`slice_op`].
pub fn inline_elementwise(f: &Func, i: usize) -> bool {
    let inst = &f.insts[i];
    matches!(inst.prim, Prim::Unary(_) | Prim::Binary(_) | Prim::Select)
        && all_float(f, i)
        && !slice_op(f, i)
}

fn all_float(f: &Func, i: usize) -> bool {
    let inst = &f.insts[i];
    inst.dtype == DType::Float && inst.args.iter().all(|a| f.insts[*a].dtype == DType::Float)
}

/// A float `exp`, `log`, `log1p`, `tanh`, `sigmoid`, `softplus`, `sin`, `cos`, `logaddexp`
/// or `pow` (outside `precision f32`), computed over whole buffers by `kernels::vmath`'s
/// vectorized functions (~8× faster than libm entry by entry), so its operands and result
/// are stored, not fused.
pub fn slice_op(f: &Func, i: usize) -> bool {
    let inst = &f.insts[i];
    let op = match inst.prim {
        Prim::Unary(op) => op.slice().is_some(),
        Prim::Binary(op) => op.slice().is_some(),
        _ => false,
    };
    op && !f.f32 && all_float(f, i)
}

/// A reduction over every axis in row-major order: one flat loop over its operand.
pub fn full_reduction(f: &Func, i: usize) -> bool {
    let inst = &f.insts[i];
    match &inst.prim {
        Prim::ReduceSum(axes)
        | Prim::ReduceMax(axes)
        | Prim::ReduceMin(axes)
        | Prim::Norm2(axes) => {
            inst.dtype == DType::Float
                && f.insts[inst.args[0]].dtype == DType::Float
                && axes
                    .iter()
                    .copied()
                    .eq(0..f.insts[inst.args[0]].shape.len())
        }
        _ => false,
    }
}

/// For each instruction, whether it is one of `f`'s outputs.
fn outputs(f: &Func) -> Vec<bool> {
    let mut output = vec![false; f.insts.len()];
    for (_, v) in &f.outputs {
        output[*v] = true;
    }
    output
}

/// For each instruction, the instructions that read it (each once, in order).
fn users(f: &Func) -> Vec<Vec<usize>> {
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); f.insts.len()];
    for (i, inst) in f.insts.iter().enumerate() {
        for a in &inst.args {
            if !users[*a].contains(&i) {
                users[*a].push(i);
            }
        }
    }
    users
}

/// The storage of every instruction of `f`.
pub fn storage(f: &Func) -> Vec<Storage> {
    let n = f.insts.len();
    let users = users(f);
    let output = outputs(f);
    let mut s = vec![Storage::Own; n];
    for (i, inst) in f.insts.iter().enumerate() {
        let from = inst.args.first().map(|a| f.insts[*a].shape.as_slice());
        s[i] = match &inst.prim {
            Prim::Reshape(_) => Storage::View {
                src: inst.args[0],
                offset: 0,
            },
            Prim::Slice(r) => match contiguous_slice(from.unwrap_or(&[]), r) {
                Some(off) => Storage::View {
                    src: inst.args[0],
                    offset: off as i64 * 8,
                },
                None => Storage::Own,
            },
            Prim::Transpose(_)
                if !output[i]
                    && matmul_source(f, i).1
                    && !users[i].is_empty()
                    && users[i].iter().all(|u| {
                        let m = &f.insts[*u];
                        m.prim == Prim::MatMul
                            && m.dtype == DType::Float
                            && m.args.iter().all(|a| f.insts[*a].dtype == DType::Float)
                    }) =>
            {
                Storage::Lazy
            }
            Prim::Broadcast(_)
                if !output[i]
                    && inst.dtype == DType::Float
                    && !users[i].is_empty()
                    && users[i]
                        .iter()
                        .all(|u| inline_elementwise(f, *u) && f.insts[*u].shape == inst.shape) =>
            {
                Storage::Lazy
            }
            _ => Storage::Own,
        };
    }
    // Fusion, from the last instruction back, so a consumer's own fate is known: an inline
    // elementwise op whose consumers all loop over the same elements (an inline
    // elementwise op of its shape, itself computed in a loop, or a full reduction) is
    // computed in their loops: in the one loop of a single consumer or of several
    // (`one_loop`: computed once there), or again in each loop of several
    // when it is a few cheap ops (`recomputable`), so it is never stored.
    for i in (0..n).rev() {
        if output[i] || !inline_elementwise(f, i) || users[i].is_empty() {
            continue;
        }
        let in_loop = |u: &usize| {
            (inline_elementwise(f, *u) && f.insts[*u].shape == f.insts[i].shape)
                || full_reduction(f, *u)
        };
        if users[i].iter().all(in_loop)
            && (users[i].len() == 1 || one_loop(f, &s, &users[i]) || recomputable(f, i))
        {
            s[i] = Storage::Fused;
        }
    }
    fuse_under_counts(f, &users, &output, &mut s);
    s
}

/// Whether `users`, instructions whose storage is decided, are all computed in one loop
/// (fused into one expression), which then computes a value they share once.
fn one_loop(f: &Func, s: &[Storage], users: &[usize]) -> bool {
    let mut roots = users.iter().flat_map(|u| loop_roots(f, s, *u));
    let first = roots.next();
    roots.all(|r| Some(r) == first)
}

/// At most this many ops are computed again in each loop that reads a value of several
/// consumers instead of storing it: softplus written out, `max(z, 0) + log1p(exp(-abs(z)))`,
/// reads `z`, `-z`, `abs(z)` and `abs(z) > -z` in four loops of its gradient.
const RECOMPUTED_OPS: usize = 4;

/// Whether `v`'s value, with the inline elementwise ops it reads, is at most
/// [`RECOMPUTED_OPS`] ops, each cheap (no division, square root or call): computing them
/// again costs less than a store and the loads of the value.
fn recomputable(f: &Func, v: usize) -> bool {
    let mut ops = Vec::new();
    cheap_ops(f, v, &mut ops) && ops.len() <= RECOMPUTED_OPS
}

/// Adds `v` and the inline elementwise ops it reads to `ops` (each once); false at the
/// first one that is not cheap, or once there are more than [`RECOMPUTED_OPS`].
fn cheap_ops(f: &Func, v: usize, ops: &mut Vec<usize>) -> bool {
    if ops.contains(&v) {
        return true;
    }
    let cheap = match f.insts[v].prim {
        Prim::Unary(op) => matches!(
            op,
            Unary::Neg | Unary::Not | Unary::Sign | Unary::StopGrad | Unary::ToFloat
        ),
        Prim::Binary(op) => !matches!(
            op,
            Binary::Div | Binary::Pow | Binary::FloorDiv | Binary::Rem | Binary::LogAddExp
        ),
        Prim::Select => true,
        _ => false,
    };
    ops.push(v);
    cheap
        && ops.len() <= RECOMPUTED_OPS
        && f.insts[v]
            .args
            .iter()
            .all(|a| !inline_elementwise(f, *a) || cheap_ops(f, *a, ops))
}

/// Also fused: an inline elementwise op whose users are one consumer in whose loop it
/// could be computed and comparisons that only flag counts read, when every such count
/// is counted in that consumer's loop (`counts_in_loops`) and so reads the fused value
/// there. A bias add `h = X W' + b` read by its ReLU `max(h, 0)` and its tie count
/// `sum(h == 0)` is then computed in the ReLU's loop, never stored (mlp: one pass over a
/// `[512,512]` array less a step).
fn fuse_under_counts(f: &Func, users: &[Vec<usize>], output: &[bool], s: &mut Vec<Storage>) {
    for i in (0..f.insts.len()).rev() {
        if s[i] != Storage::Own || output[i] || !inline_elementwise(f, i) || users[i].len() < 2 {
            continue;
        }
        let counted = |c: usize| {
            s[c] == Storage::Fused
                && users[c].len() == 1
                && matches!(f.insts[c].prim, Prim::Binary(op) if op.is_comparison())
                && flag_count(f, s, users[c][0])
        };
        let (compared, consumers): (Vec<usize>, Vec<usize>) =
            users[i].iter().partition(|c| counted(**c));
        let [u] = consumers[..] else {
            continue;
        };
        if compared.is_empty()
            || !inline_elementwise(f, u)
            || f.insts[u].shape != f.insts[i].shape
            || !matches!(s[u], Storage::Own | Storage::Fused)
        {
            continue;
        }
        let mut trial = s.clone();
        trial[i] = Storage::Fused;
        let hosts = count_hosts(f, &trial);
        let [root] = loop_roots(f, &trial, u)[..] else {
            continue;
        };
        if compared
            .iter()
            .all(|c| hosts.get(&users[*c][0]) == Some(&root))
        {
            *s = trial;
        }
    }
}

/// The distinct leaves of `root`'s expression under `storage`: the operands it reads
/// that are not fused into it.
pub fn leaves(f: &Func, storage: &[Storage], root: usize, out: &mut Vec<usize>) {
    for &a in &f.insts[root].args {
        if storage[a] == Storage::Fused {
            leaves(f, storage, a, out);
        } else if !out.contains(&a) {
            out.push(a);
        }
    }
}

/// A count of flags: a full sum of a fused comparison or `not` (each entry 0.0 or 1.0, so
/// the sum is exact in any order), as the tie counts of reverse mode are, or of `x - x`
/// (0.0, or NaN where `x` is not finite: the train loop's check of θ).
pub fn flag_count(f: &Func, storage: &[Storage], i: usize) -> bool {
    let inst = &f.insts[i];
    let Some(&x) = inst.args.first() else {
        return false;
    };
    matches!(inst.prim, Prim::ReduceSum(_))
        && full_reduction(f, i)
        && storage[x] == Storage::Fused
        && match f.insts[x].prim {
            Prim::Binary(Binary::Sub) => f.insts[x].args[0] == f.insts[x].args[1],
            Prim::Binary(op) => op.is_comparison(),
            Prim::Unary(op) => op == Unary::Not,
            _ => false,
        }
}

/// Flag counts computed in an earlier elementwise loop instead of a pass of their own: a
/// count whose expression reads only what an earlier inline elementwise instruction of
/// the same shape reads (a tie count `sum(h == 0)` and the `max(h, 0)` of a ReLU) goes
/// into the first such instruction's loop. The map lists, for each such instruction, the
/// counts it computes.
pub fn counts_in_loops(f: &Func, storage: &[Storage]) -> HashMap<usize, Vec<usize>> {
    let mut into: HashMap<usize, Vec<usize>> = HashMap::new();
    for j in 0..f.insts.len() {
        if !flag_count(f, storage, j) {
            continue;
        }
        let x = f.insts[j].args[0];
        let mut wanted = Vec::new();
        leaves(f, storage, x, &mut wanted);
        let host = (0..j).find(|&i| {
            if storage[i] != Storage::Own
                || !inline_elementwise(f, i)
                || f.insts[i].shape != f.insts[x].shape
            {
                return false;
            }
            let mut read = Vec::new();
            leaves(f, storage, i, &mut read);
            wanted.iter().all(|l| read.contains(l))
        });
        if let Some(i) = host {
            into.entry(i).or_default().push(j);
        }
    }
    into
}

/// Most entries of the lanes a loop keeps for a column sum it accumulates (512 KB).
const COLUMN_LANES: usize = 1 << 16;

/// The sum over the first axis of matrix `i` (a dense layer's bias gradient, `sum(G,
/// axis = 0)`) that `i`'s own elementwise loop accumulates as it writes each row, instead
/// of a pass of its own re-reading the matrix, and the entries of the lanes it keeps
/// (`rowwise::finish_column_lanes`: eight rows of lanes and one row for each of the last
/// `rows mod 8` rows). `i` is an inline float loop into its own buffer with at least eight
/// rows; the sum comes after it with nothing computed in between, so computing it in
/// `i`'s loop changes no order of reads and writes.
pub fn column_sum(f: &Func, storage: &[Storage], i: usize) -> Option<(usize, usize)> {
    let inst = &f.insts[i];
    let &[rows, cols] = inst.shape.as_slice() else {
        return None;
    };
    let lanes = (SUM_LANES + rows % SUM_LANES) * cols;
    if f.f32
        || storage[i] != Storage::Own
        || !inline_elementwise(f, i)
        || rows < SUM_LANES
        || lanes > COLUMN_LANES
    {
        return None;
    }
    let r = (i + 1..f.insts.len()).find(|&r| {
        let x = &f.insts[r];
        !matches!(x.prim, Prim::Input(_) | Prim::Const(_)) && storage[r] == Storage::Own
    })?;
    let sums_columns = matches!(&f.insts[r].prim, Prim::ReduceSum(axes) if axes.as_slice() == [0]);
    (sums_columns && f.insts[r].args[0] == i).then_some((r, lanes))
}

/// The instructions whose loops compute `v`: `v` itself, or for a fused value, the roots
/// of the expressions it is fused into (several when it is computed again in each).
fn loop_roots(f: &Func, storage: &[Storage], v: usize) -> Vec<usize> {
    if storage[v] != Storage::Fused {
        return vec![v];
    }
    let mut roots = Vec::new();
    for u in (v + 1..f.insts.len()).filter(|u| f.insts[*u].args.contains(&v)) {
        for r in loop_roots(f, storage, u) {
            if !roots.contains(&r) {
                roots.push(r);
            }
        }
    }
    if roots.is_empty() {
        roots.push(v);
    }
    roots
}

/// The instruction whose buffer holds `v`'s whole value: `v`, or the source of a view that
/// is all of it.
pub fn owner(f: &Func, storage: &[Storage], v: usize) -> usize {
    let mut r = v;
    while let Storage::View { src, offset: 0 } = storage[r] {
        if f.insts[src].shape.iter().product::<usize>()
            != f.insts[r].shape.iter().product::<usize>()
        {
            break;
        }
        r = src;
    }
    r
}

/// Whether `v`, an inline elementwise op computed in its own loop, may write its value
/// over the buffer of `input` (of its shape): no value still to be read lives in that
/// buffer. Every read of `input`, directly or through a view, lazy transpose or lazy
/// broadcast, happens in a loop before `v`'s, or inside `v`'s at the element being
/// written; and neither `input` nor a view of it is an output (read after every loop).
pub fn overwrites_safely(f: &Func, storage: &[Storage], v: usize, input: usize) -> bool {
    overwrites(f, storage, &count_hosts(f, storage), &outputs(f), v, input)
}

/// For each flag count computed in an earlier loop, that loop's instruction.
fn count_hosts(f: &Func, storage: &[Storage]) -> HashMap<usize, usize> {
    counts_in_loops(f, storage)
        .into_iter()
        .flat_map(|(host, counts)| counts.into_iter().map(move |c| (c, host)))
        .collect()
}

fn overwrites(
    f: &Func,
    storage: &[Storage],
    hosts: &HashMap<usize, usize>,
    output: &[bool],
    v: usize,
    input: usize,
) -> bool {
    storage[v] == Storage::Own
        && inline_elementwise(f, v)
        && f.insts[v].shape == f.insts[input].shape
        && read_by(f, storage, hosts, output, input, v, true)
}

/// Whether `x`'s buffer holds nothing still to be read once `v`'s loop has written an
/// element: `x` is not an output, and every read of `x` happens in a loop (or call) before
/// `v`'s, or in `v`'s own loop at the element it writes when `same_element` (`x` is
/// indexed as `v` is). A view or lazy value of `x` is read where its own users read it;
/// one that maps its elements to other positions (a broadcast, a transpose, a slice that
/// is not all of `x`) is read at other elements, so its reads must all come before.
fn read_by(
    f: &Func,
    storage: &[Storage],
    hosts: &HashMap<usize, usize>,
    output: &[bool],
    x: usize,
    v: usize,
    same_element: bool,
) -> bool {
    if output[x] {
        return false;
    }
    let n = |i: usize| f.insts[i].shape.iter().product::<usize>();
    f.insts.iter().enumerate().all(|(u, inst)| {
        if !inst.args.contains(&x) {
            return true;
        }
        match storage[u] {
            // The loop that reads `x` for `u`: a flag count's host loop, if it has one.
            Storage::Own | Storage::Fused => loop_roots(f, storage, u).iter().all(|root| {
                let at = hosts.get(root).copied().unwrap_or(*root);
                at < v || (at == v && same_element)
            }),
            Storage::View { offset, .. } => {
                let whole = offset == 0 && n(u) == n(x);
                read_by(f, storage, hosts, output, u, v, same_element && whole)
            }
            Storage::Lazy => read_by(f, storage, hosts, output, u, v, false),
        }
    })
}

/// A ReLU its product computes as it stores its sums (`kernels::math::matmul_relu_into`),
/// instead of a loop of its own over the stored product.
#[derive(Clone, Debug, PartialEq)]
pub struct ReluAfter {
    /// The `max(x, 0)`, `x` the product or the product plus a bias row.
    pub relu: usize,
    /// The `[n]` or `[1,n]` value broadcast to every row of the product and added to it.
    pub bias: Option<usize>,
    /// The flag counts of `x == 0` (the ReLU's ties) its loop would have computed.
    pub counts: Vec<usize>,
}

/// For each float product the kernels compute with a ReLU inside
/// (`kernels::math::relu_in_product`), its [`ReluAfter`] when nothing else reads what the
/// ReLU's loop would have read: the product `p` (or `x = p + bias`, fused into that loop)
/// is read only by `max(x, 0)` and by flag counts of `x == 0` counted in its loop, so the
/// ReLU's values and its tie count come out of the product's call and `p` is never stored.
/// The ReLU writes its own buffer or the product's (`in_place`), so writing it at the
/// product's place in the program overwrites nothing still to be read. sgd's
/// `relu(xb @ W')` and its tie count (`opt::untied_masks`) this way.
pub fn relus_after_products(f: &Func, storage: &[Storage]) -> HashMap<usize, ReluAfter> {
    let mut found = HashMap::new();
    let output = outputs(f);
    // The products `small_gemm` computes, with their `n`.
    let products: Vec<(usize, usize)> = (0..f.insts.len())
        .filter(|&p| !f.f32 && storage[p] == Storage::Own && !output[p] && all_float(f, p))
        .filter_map(|p| {
            let q = crate::ir::product(f, p)?;
            crate::kernels::math::relu_in_product(q.a_t, q.b_t, q.m, q.k, q.n).then_some((p, q.n))
        })
        .collect();
    if products.is_empty() {
        return found;
    }
    let users = users(f);
    let over = in_place(f, storage);
    let hosts = count_hosts(f, storage);
    let is_zero = |v: usize| {
        storage[v] == Storage::Lazy
            && crate::opt::scalar_constant(&f.insts, v).is_some_and(|z| z.to_bits() == 0)
    };
    for (p, n) in products {
        // `x`: the product, or a fused `p + bias` (either order) of a row broadcast.
        let mut x = p;
        let mut bias = None;
        if let [u] = users[p][..]
            && storage[u] == Storage::Fused
            && f.insts[u].prim == Prim::Binary(Binary::Add)
        {
            let other = f.insts[u].args.iter().copied().find(|v| *v != p);
            let row = other.and_then(|o| {
                let bi = &f.insts[o];
                let src = *bi.args.first()?;
                let ss = &f.insts[src].shape;
                (matches!(bi.prim, Prim::Broadcast(_))
                    && storage[o] == Storage::Lazy
                    && (ss[..] == [n] || ss[..] == [1, n])
                    && f.insts[src].dtype == DType::Float
                    && matches!(storage[src], Storage::Own | Storage::View { .. }))
                .then_some(src)
            });
            if let Some(src) = row {
                x = u;
                bias = Some(src);
            }
        }
        // `max(x, 0)` and `x == 0` flags, each read by one count hosted in its loop.
        let relu = users[x].iter().copied().find(|&j| {
            f.insts[j].prim == Prim::Binary(Binary::Max)
                && f.insts[j].args[0] == x
                && is_zero(f.insts[j].args[1])
        });
        let Some(j) = relu else { continue };
        let flag = |e: usize| {
            storage[e] == Storage::Fused
                && f.insts[e].prim == Prim::Binary(Binary::Eq)
                && f.insts[e].args.contains(&x)
                && f.insts[e].args.iter().any(|v| *v != x && is_zero(*v))
                && matches!(users[e][..], [c] if flag_count(f, storage, c) && hosts.get(&c) == Some(&j))
        };
        let flags: Vec<usize> = users[x].iter().copied().filter(|e| *e != j).collect();
        if storage[j] != Storage::Own
            || !inline_elementwise(f, j)
            || !flags.iter().all(|e| flag(*e))
            || (x != p && users[p][..] != [x])
            || over[j].is_some_and(|s| s != p)
        {
            continue;
        }
        let counts: Vec<usize> = flags.iter().map(|e| users[*e][0]).collect();
        if hosts.iter().any(|(c, h)| *h == j && !counts.contains(c)) {
            continue;
        }
        found.insert(
            p,
            ReluAfter {
                relu: j,
                bias,
                counts,
            },
        );
    }
    found
}

/// For each instruction, the earlier one whose buffer it writes its value over: an inline
/// elementwise loop takes the buffer of a float operand of its shape that nothing reads
/// after this loop (`overwrites`), and that is neither an input, a constant nor an
/// output. In relu2's and wide's fast gradient (`opt::untied_masks`), `relu(h)` writes
/// over `h = X W'` and the back-propagation `select(relu(h) > 0, r a', 0)` over `relu(h)`
/// (its matrix-vector products, one through a lazy transpose, read it first): one buffer
/// where there were three (wide: 16 MB, not 48; 15.5–15.8 → 14.7–14.8 ms a step).
pub fn in_place(f: &Func, storage: &[Storage]) -> Vec<Option<usize>> {
    let hosts = count_hosts(f, storage);
    let output = outputs(f);
    let mut taken = vec![false; f.insts.len()];
    let mut over = vec![None; f.insts.len()];
    for v in 0..f.insts.len() {
        if output[v] || storage[v] != Storage::Own || !inline_elementwise(f, v) {
            continue;
        }
        let mut read = Vec::new();
        leaves(f, storage, v, &mut read);
        let free = read.into_iter().find(|&s| {
            let inst = &f.insts[s];
            storage[s] == Storage::Own
                && !output[s]
                && !taken[s]
                && !matches!(inst.prim, Prim::Input(_) | Prim::Const(_))
                && inst.dtype == DType::Float
                && overwrites(f, storage, &hosts, &output, v, s)
        });
        if let Some(s) = free {
            taken[s] = true;
            over[v] = Some(s);
        }
    }
    over
}
