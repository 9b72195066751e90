//! The reference interpreter: evaluates an IR `Func` on ndarray tensors. It defines the
//! semantics the JIT must match. Elementwise math goes through `kernels::math` (and, over
//! whole arrays, `kernels::vmath`), the same functions the JIT calls, so both backends
//! agree bit for bit.

use ndarray::{ArrayD, Axis, IxDyn, Slice};

use crate::ir::{Binary, Draw, Func, Inst, Observable, Prim, Unary};
use crate::kernels::math;
use crate::observe::linalg;
use crate::rng::Stream;
use crate::tensor::Tensor;

/// What a run gives every evaluation besides the inputs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Env {
    pub seed: u64,
}

/// A failure while evaluating: what went wrong and at which instruction.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalError {
    pub inst: usize,
    pub message: String,
}

/// Evaluates `f` on `inputs`; returns every instruction's value.
pub fn eval_all(f: &Func, inputs: &[Tensor], env: Env) -> Result<Vec<Tensor>, EvalError> {
    let mut vals: Vec<Tensor> = Vec::with_capacity(f.insts.len());
    for (i, inst) in f.insts.iter().enumerate() {
        let v = match inst.prim {
            // Transposed operands are read in place, as the JIT reads them.
            Prim::MatMul if inst.args.len() == 2 => {
                let (a, a_t) = crate::ir::matmul_source(f, inst.args[0]);
                let (b, b_t) = crate::ir::matmul_source(f, inst.args[1]);
                matmul((&vals[a], a_t), (&vals[b], b_t), &inst.shape)
            }
            _ => eval_inst(inst, &vals, inputs, env),
        };
        let mut v = v.map_err(|message| EvalError { inst: i, message })?;
        if f.f32 {
            round_to_f32(&mut v);
        }
        debug_assert_eq!(v.shape(), inst.shape.as_slice(), "%{i} {:?}", inst.prim);
        vals.push(v);
    }
    Ok(vals)
}

/// Rounds every float of `t` through f32, as every value is under `precision f32`.
pub fn round_to_f32(t: &mut Tensor) {
    if let Tensor::Float(a) = t {
        a.mapv_inplace(|x| x as f32 as f64);
    }
}

/// `a @ b` for 2-D floats; an operand flagged `true` holds the transpose of the matrix
/// (see `math::matmul_source`).
fn matmul(
    (a, a_t): (&Tensor, bool),
    (b, b_t): (&Tensor, bool),
    shape: &[usize],
) -> Result<Tensor, String> {
    let (a, b) = (float(a), float(b));
    let (a, b) = (a.as_standard_layout(), b.as_standard_layout());
    let (m, k) = if a_t {
        (a.shape()[1], a.shape()[0])
    } else {
        (a.shape()[0], a.shape()[1])
    };
    let n = if b_t { b.shape()[0] } else { b.shape()[1] };
    if shape != [m, n] {
        return Err(format!(
            "a matmul of [{m}, {k}] @ [.., {n}] planned as {shape:?}"
        ));
    }
    let mut c = vec![0.0; m * n];
    let a = math::MatOperand {
        data: a.as_slice().ok_or("layout")?,
        transposed: a_t,
    };
    let b = math::MatOperand {
        data: b.as_slice().ok_or("layout")?,
        transposed: b_t,
    };
    math::matmul_into(a, b, &mut c, m, k, n);
    Ok(Tensor::Float(
        ArrayD::from_shape_vec(IxDyn(&[m, n]), c).map_err(|e| e.to_string())?,
    ))
}

/// Evaluates `f` and returns its outputs, in order.
pub fn eval(f: &Func, inputs: &[Tensor], env: Env) -> Result<Vec<Tensor>, EvalError> {
    let vals = eval_all(f, inputs, env)?;
    Ok(f.outputs.iter().map(|(_, v)| vals[*v].clone()).collect())
}

/// The values as floats, borrowed when they already are.
fn float(t: &Tensor) -> std::borrow::Cow<'_, ArrayD<f64>> {
    match t {
        Tensor::Float(a) => std::borrow::Cow::Borrowed(a),
        Tensor::Int(a) => std::borrow::Cow::Owned(a.mapv(|v| v as f64)),
    }
}

fn ints(t: &Tensor) -> Result<&ArrayD<i64>, String> {
    match t {
        Tensor::Int(a) => Ok(a),
        Tensor::Float(_) => Err("expected an int tensor".into()),
    }
}

/// Applies the same shape operation to either dtype.
fn map_any(
    t: &Tensor,
    f: impl Fn(ArrayD<f64>) -> ArrayD<f64>,
    g: impl Fn(ArrayD<i64>) -> ArrayD<i64>,
) -> Tensor {
    match t {
        Tensor::Float(a) => Tensor::Float(f(a.clone())),
        Tensor::Int(a) => Tensor::Int(g(a.clone())),
    }
}

fn reshape<T: Clone>(a: ArrayD<T>, shape: &[usize]) -> ArrayD<T> {
    let a = a.as_standard_layout().into_owned();
    a.into_shape_with_order(IxDyn(shape))
        .expect("reshape of a verified size")
}

fn broadcast<T: Clone>(a: ArrayD<T>, shape: &[usize]) -> ArrayD<T> {
    a.broadcast(IxDyn(shape))
        .expect("verified broadcast")
        .to_owned()
}

fn slice<T: Clone>(a: ArrayD<T>, ranges: &[(usize, usize)]) -> ArrayD<T> {
    a.slice_each_axis(|ax| {
        let (s, e) = ranges[ax.axis.index()];
        Slice::from(s..e)
    })
    .to_owned()
}

fn pad<T: Clone + Default>(a: ArrayD<T>, starts: &[usize], shape: &[usize]) -> ArrayD<T> {
    let mut out = ArrayD::from_elem(IxDyn(shape), T::default());
    out.slice_each_axis_mut(|ax| {
        let s = starts[ax.axis.index()];
        Slice::from(s..s + a.shape()[ax.axis.index()])
    })
    .assign(&a);
    out
}

fn reduce<T: Clone>(
    a: &ArrayD<T>,
    axes: &[usize],
    f: impl Fn(ndarray::ArrayViewD<T>) -> T,
) -> ArrayD<T> {
    let keep: Vec<usize> = (0..a.ndim()).filter(|i| !axes.contains(i)).collect();
    let out_shape: Vec<usize> = keep.iter().map(|i| a.shape()[*i]).collect();
    // Move the kept axes first, then view each output element's reduced block.
    let mut perm = keep.clone();
    perm.extend_from_slice(axes);
    let moved = a.view().permuted_axes(IxDyn(&perm));
    let n_out: usize = out_shape.iter().product();
    let block: Vec<usize> = axes.iter().map(|i| a.shape()[*i]).collect();
    let std = moved.as_standard_layout().into_owned();
    let flat = std
        .into_shape_with_order(IxDyn(&[n_out, block.iter().product()]))
        .expect("reduce reshape");
    let vals: Vec<T> = flat
        .outer_iter()
        .map(|row| {
            let r = row
                .to_owned()
                .into_shape_with_order(IxDyn(&block))
                .expect("block");
            f(r.view())
        })
        .collect();
    ArrayD::from_shape_vec(IxDyn(&out_shape), vals).expect("reduce result")
}

pub fn unary(op: Unary, x: f64) -> f64 {
    (op.row().scalar)(x)
}

pub fn binary(op: Binary, a: f64, b: f64) -> f64 {
    use math::*;
    match op {
        Binary::Add => a + b,
        Binary::Sub => a - b,
        Binary::Mul => a * b,
        Binary::Div => a / b,
        Binary::Pow => pow(a, b),
        Binary::FloorDiv => floor(a / b),
        Binary::Rem => a - b * floor(a / b),
        Binary::Max => {
            if a >= b || b.is_nan() {
                a
            } else {
                b
            }
        }
        Binary::Min => {
            if a <= b || b.is_nan() {
                a
            } else {
                b
            }
        }
        Binary::LogAddExp => logaddexp(a, b),
        Binary::Lt => f64::from(a < b),
        Binary::Le => f64::from(a <= b),
        Binary::Gt => f64::from(a > b),
        Binary::Ge => f64::from(a >= b),
        Binary::Eq => f64::from(a == b),
        Binary::Ne => f64::from(a != b),
        Binary::And => f64::from(a != 0.0 && b != 0.0),
        Binary::Or => f64::from(a != 0.0 || b != 0.0),
    }
}

pub fn binary_int(op: Binary, a: i64, b: i64) -> Result<i64, String> {
    Ok(match op {
        Binary::Add => a.wrapping_add(b),
        Binary::Sub => a.wrapping_sub(b),
        Binary::Mul => a.wrapping_mul(b),
        Binary::FloorDiv | Binary::Rem => {
            if b == 0 {
                return Err("integer division by zero".into());
            }
            // Wrapping, as every int op here (NumPy's int64): `i64::MIN // -1` wraps.
            let q = a
                .wrapping_div_euclid(b)
                .wrapping_sub(i64::from(b < 0 && a.wrapping_rem_euclid(b) != 0));
            if op == Binary::FloorDiv {
                q
            } else {
                a.wrapping_sub(b.wrapping_mul(q))
            }
        }
        Binary::Pow => u32::try_from(b)
            .map(|e| a.wrapping_pow(e))
            .map_err(|_| "negative int power")?,
        Binary::Max => a.max(b),
        Binary::Min => a.min(b),
        _ => return Err(format!("{op:?} of ints")),
    })
}

fn eval_inst(inst: &Inst, vals: &[Tensor], inputs: &[Tensor], env: Env) -> Result<Tensor, String> {
    let arg = |k: usize| &vals[inst.args[k]];
    Ok(match &inst.prim {
        Prim::Input(k) => inputs.get(*k).cloned().ok_or("missing input")?,
        Prim::Const(t) => t.clone(),
        Prim::Unary(op) => match (arg(0), op.row().int) {
            (Tensor::Int(a), Some(f)) => Tensor::Int(a.mapv(f)),
            (t, _) => {
                let a = float(t);
                match a.as_slice() {
                    Some(xs) if op.slice().is_some() => {
                        let mut out = vec![0.0; xs.len()];
                        (op.slice().expect("a slice op"))(xs, &mut out);
                        Tensor::Float(
                            ArrayD::from_shape_vec(a.raw_dim(), out).map_err(|e| e.to_string())?,
                        )
                    }
                    _ => {
                        let f = op.row().scalar;
                        Tensor::Float(a.mapv(|x| f(x)))
                    }
                }
            }
        },
        Prim::Binary(op) => match (arg(0), arg(1)) {
            (Tensor::Int(a), Tensor::Int(b)) if inst.dtype == crate::ir::types::DType::Int => {
                let mut out = ArrayD::zeros(IxDyn(&inst.shape));
                for ((o, x), y) in out.iter_mut().zip(a.iter()).zip(b.iter()) {
                    *o = binary_int(*op, *x, *y)?;
                }
                Tensor::Int(out)
            }
            (a, b) => {
                let (a, b) = (float(a), float(b));
                if let (true, Some(xs), Some(ys)) =
                    (op.slice().is_some(), a.as_slice(), b.as_slice())
                    && a.shape() == b.shape()
                {
                    let mut out = vec![0.0; xs.len()];
                    (op.slice().expect("a slice op"))(xs, ys, &mut out);
                    return Ok(Tensor::Float(
                        ArrayD::from_shape_vec(a.raw_dim(), out).map_err(|e| e.to_string())?,
                    ));
                }
                Tensor::Float(
                    ndarray::Zip::from(&*a)
                        .and(&*b)
                        .map_collect(|x, y| binary(*op, *x, *y)),
                )
            }
        },
        Prim::Select => {
            let c = float(arg(0));
            match (arg(1), arg(2)) {
                (Tensor::Int(a), Tensor::Int(b)) => Tensor::Int(
                    ndarray::Zip::from(&*c)
                        .and(a)
                        .and(b)
                        .map_collect(|c, a, b| if *c != 0.0 { *a } else { *b }),
                ),
                (a, b) => {
                    let (a, b) = (float(a), float(b));
                    Tensor::Float(
                        ndarray::Zip::from(&*c)
                            .and(&*a)
                            .and(&*b)
                            .map_collect(|c, a, b| if *c != 0.0 { *a } else { *b }),
                    )
                }
            }
        }
        Prim::Broadcast(s) => map_any(arg(0), |a| broadcast(a, s), |a| broadcast(a, s)),
        Prim::Reshape(s) => map_any(arg(0), |a| reshape(a, s), |a| reshape(a, s)),
        Prim::Transpose(p) => map_any(
            arg(0),
            |a| a.permuted_axes(IxDyn(p)).as_standard_layout().into_owned(),
            |a| a.permuted_axes(IxDyn(p)).as_standard_layout().into_owned(),
        ),
        Prim::Slice(r) => map_any(arg(0), |a| slice(a, r), |a| slice(a, r)),
        Prim::Pad { starts, shape } => {
            map_any(arg(0), |a| pad(a, starts, shape), |a| pad(a, starts, shape))
        }
        Prim::Concat(axis) => {
            if inst.dtype == crate::ir::types::DType::Int {
                let parts: Result<Vec<_>, _> = inst
                    .args
                    .iter()
                    .map(|a| ints(&vals[*a]).map(|x| x.view()))
                    .collect();
                Tensor::Int(ndarray::concatenate(Axis(*axis), &parts?).map_err(|e| e.to_string())?)
            } else {
                let parts: Vec<_> = inst.args.iter().map(|a| float(&vals[*a])).collect();
                let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
                Tensor::Float(ndarray::concatenate(Axis(*axis), &views).map_err(|e| e.to_string())?)
            }
        }
        Prim::Gather => gather(inst, vals)?,
        Prim::ScatterAdd(shape) => scatter_add(inst, vals, shape)?,
        Prim::ReduceSum(axes) => match arg(0) {
            Tensor::Int(a) => Tensor::Int(reduce(a, axes, |v| {
                v.iter().fold(0, |s: i64, x| s.wrapping_add(*x))
            })),
            t => Tensor::Float(reduce(&float(t), axes, |v| match v.as_slice() {
                Some(xs) => math::sum(xs),
                None => math::sum(&v.iter().copied().collect::<Vec<_>>()),
            })),
        },
        Prim::ReduceProd(axes) => match arg(0) {
            Tensor::Int(a) => Tensor::Int(reduce(a, axes, |v| {
                v.iter().fold(1, |p: i64, x| p.wrapping_mul(*x))
            })),
            t => Tensor::Float(reduce(&float(t), axes, |v| v.iter().product())),
        },
        Prim::ReduceMax(axes) => match arg(0) {
            Tensor::Int(a) => Tensor::Int(reduce(a, axes, |v| {
                v.iter().copied().max().unwrap_or(i64::MIN)
            })),
            t => Tensor::Float(reduce(&float(t), axes, |v| {
                v.iter()
                    .fold(f64::NEG_INFINITY, |m, x| binary(Binary::Max, m, *x))
            })),
        },
        Prim::ReduceMin(axes) => match arg(0) {
            Tensor::Int(a) => Tensor::Int(reduce(a, axes, |v| {
                v.iter().copied().min().unwrap_or(i64::MAX)
            })),
            t => Tensor::Float(reduce(&float(t), axes, |v| {
                v.iter()
                    .fold(f64::INFINITY, |m, x| binary(Binary::Min, m, *x))
            })),
        },
        Prim::Norm2(axes) => Tensor::Float(reduce(&float(arg(0)), axes, |v| {
            math::sqrt(v.iter().map(|x| x * x).sum())
        })),
        Prim::LogSumExp(axes) => Tensor::Float(reduce(&float(arg(0)), axes, |v| {
            math::logsumexp(v.iter().copied())
        })),
        Prim::Argmax(axis) | Prim::Argmin(axis) => {
            let max = matches!(inst.prim, Prim::Argmax(_));
            let a = float(arg(0));
            // The first extreme entry, as NumPy's argmax.
            let idx = reduce(&a, &[*axis], |v| {
                let mut best = 0usize;
                for (i, x) in v.iter().enumerate() {
                    let b = v[[best]];
                    if (max && *x > b) || (!max && *x < b) {
                        best = i;
                    }
                }
                best as f64
            });
            Tensor::Int(idx.mapv(|i| i as i64))
        }
        Prim::MatMul => matmul((arg(0), false), (arg(1), false), &inst.shape)?,
        Prim::Random { draw, stream } => random(inst, draw, stream, vals, env)?,
        Prim::Observe(obs) => observe(*obs, &float(arg(0)))?,
    })
}

fn index_lists(inst: &Inst, vals: &[Tensor], x_shape: &[usize]) -> Result<Vec<Vec<usize>>, String> {
    let mut lists = Vec::new();
    for (axis, a) in inst.args[1..].iter().enumerate() {
        let idx = ints(&vals[*a])?;
        let dim = x_shape[axis] as i64;
        let mut l = Vec::with_capacity(idx.len());
        for &i in idx.iter() {
            if i < 0 || i >= dim {
                return Err(format!(
                    "index {i} is out of range for an axis of length {dim}"
                ));
            }
            l.push(i as usize);
        }
        lists.push(l);
    }
    Ok(lists)
}

/// Row-major offset of the leading-axes position `pos` in a tensor of `shape`.
fn leading_offset(pos: &[usize], shape: &[usize]) -> usize {
    let inner: usize = shape[pos.len()..].iter().product();
    let mut off = 0;
    for (k, p) in pos.iter().enumerate() {
        off = off * shape[k] + p;
    }
    off * inner
}

fn gather(inst: &Inst, vals: &[Tensor]) -> Result<Tensor, String> {
    let x = &vals[inst.args[0]];
    let lists = index_lists(inst, vals, x.shape())?;
    let n = lists.first().map_or(0, Vec::len);
    let inner: usize = x.shape()[lists.len()..].iter().product();
    let offsets: Vec<usize> = (0..n)
        .map(|j| leading_offset(&lists.iter().map(|l| l[j]).collect::<Vec<_>>(), x.shape()))
        .collect();
    // The `inner` entries from each offset, in order, shaped as the result.
    fn pick<T: Copy>(
        a: &ArrayD<T>,
        offsets: &[usize],
        inner: usize,
        shape: &[usize],
    ) -> Result<ArrayD<T>, String> {
        let a = a.as_standard_layout();
        let s = a.as_slice().ok_or("layout")?;
        let v: Vec<T> = offsets
            .iter()
            .flat_map(|o| s[*o..o + inner].iter().copied())
            .collect();
        ArrayD::from_shape_vec(IxDyn(shape), v).map_err(|e| e.to_string())
    }
    Ok(match x {
        Tensor::Float(a) => Tensor::Float(pick(a, &offsets, inner, &inst.shape)?),
        Tensor::Int(a) => Tensor::Int(pick(a, &offsets, inner, &inst.shape)?),
    })
}

fn scatter_add(inst: &Inst, vals: &[Tensor], shape: &[usize]) -> Result<Tensor, String> {
    let upd = float(&vals[inst.args[0]]);
    let upd = upd.as_standard_layout();
    let u = upd.as_slice().ok_or("layout")?;
    let lists = index_lists(inst, vals, shape)?;
    let inner: usize = shape[lists.len()..].iter().product();
    let mut out = vec![0.0; shape.iter().product()];
    for j in 0..lists.first().map_or(0, Vec::len) {
        let o = leading_offset(&lists.iter().map(|l| l[j]).collect::<Vec<_>>(), shape);
        for k in 0..inner {
            out[o + k] += u[j * inner + k];
        }
    }
    Ok(Tensor::Float(
        ArrayD::from_shape_vec(IxDyn(shape), out).map_err(|e| e.to_string())?,
    ))
}

fn random(
    inst: &Inst,
    draw: &Draw,
    stream: &str,
    vals: &[Tensor],
    env: Env,
) -> Result<Tensor, String> {
    let operands: Vec<&Tensor> = inst.args.iter().map(|a| &vals[*a]).collect();
    draw_values(draw, stream, env.seed, &operands, &inst.shape)
}

/// The values of a random draw of `shape` from its `operands`: the step (its first entry,
/// 0 when negative) and a Bernoulli draw's probability (its first entry). What
/// `Prim::Random` evaluates to, and what the JIT's draws call.
pub fn draw_values(
    draw: &Draw,
    stream: &str,
    seed: u64,
    operands: &[&Tensor],
    shape: &[usize],
) -> Result<Tensor, String> {
    let step = match operands[0] {
        Tensor::Int(a) => a.iter().next().copied().unwrap_or(0).max(0) as u64,
        Tensor::Float(a) => a.iter().next().copied().unwrap_or(0.0).max(0.0) as u64,
    };
    let p = match draw {
        Draw::Bernoulli => float(operands[1]).iter().next().copied().unwrap_or(0.0),
        _ => 0.0,
    };
    let rng = Stream::new(seed, stream, step);
    let n: usize = shape.iter().product();
    let shape = IxDyn(shape);
    let floats = |v: Vec<f64>| {
        ArrayD::from_shape_vec(shape.clone(), v)
            .map(Tensor::Float)
            .map_err(|e| e.to_string())
    };
    let ints_of = |v: Vec<i64>| {
        ArrayD::from_shape_vec(shape.clone(), v)
            .map(Tensor::Int)
            .map_err(|e| e.to_string())
    };
    match draw {
        Draw::Normal => {
            let mut v = vec![0.0; n];
            rng.fill_normal(&mut v);
            floats(v)
        }
        Draw::Uniform => {
            let mut v = vec![0.0; n];
            rng.fill_uniform(&mut v);
            floats(v)
        }
        Draw::Bernoulli => floats((0..n as u64).map(|i| rng.bernoulli(p, i)).collect()),
        Draw::Randint { lo, hi } => {
            let mut v = vec![0; n];
            rng.fill_randint(*lo, *hi, &mut v);
            ints_of(v)
        }
        Draw::Permutation => ints_of(rng.permutation(n)),
        Draw::Choose { n: total } => ints_of(rng.choose(*total, n)),
        Draw::Orthogonal => {
            let (r, c) = (shape[0], shape[1]);
            floats(rng.orthogonal(r, c).into_iter().collect())
        }
        Draw::BatchRows { rows, shuffle } => {
            let mut v = vec![0; n];
            batch_rows(seed, stream, step, *rows, *shuffle, &mut v);
            ints_of(v)
        }
    }
}

/// The row indices of the batch drawn at `step` (1 for the first update): with
/// replacement, or walking per-epoch permutations (epoch e uses the stream's permutation
/// keyed by e), wrapping from one epoch into the next so every batch is full.
/// The batch is `out`, as many rows as it holds (the JIT writes them into its buffer).
pub fn batch_rows(seed: u64, stream: &str, step: u64, rows: usize, shuffle: bool, out: &mut [i64]) {
    if !shuffle {
        Stream::new(seed, stream, step).fill_randint(0, rows as i64, out);
        return;
    }
    let start = step.saturating_sub(1) * out.len() as u64;
    let mut epoch = u64::MAX;
    let mut perm = Vec::new();
    for (o, k) in out.iter_mut().zip(start..) {
        let e = k / rows as u64;
        if e != epoch {
            epoch = e;
            perm = Stream::new(seed, &format!("{stream}#epoch"), e).permutation(rows);
        }
        *o = perm[(k % rows as u64) as usize];
    }
}

fn observe(obs: Observable, a: &ArrayD<f64>) -> Result<Tensor, String> {
    let m = a
        .view()
        .into_dimensionality::<ndarray::Ix2>()
        .map_err(|e| e.to_string())?;
    let scalar = |v: f64| Ok(Tensor::scalar(v));
    match obs {
        Observable::Svals => Ok(Tensor::Float(
            ndarray::Array1::from(linalg::svals(m)?).into_dyn(),
        )),
        Observable::Eigvals => Ok(Tensor::Float(
            ndarray::Array1::from(linalg::eigvals(m)?).into_dyn(),
        )),
        Observable::Rank(tol) => Ok(Tensor::Int(ArrayD::from_elem(
            IxDyn(&[]),
            linalg::rank(m, tol)?,
        ))),
        Observable::Erank => scalar(linalg::erank(m)?),
        Observable::Nuclear => scalar(linalg::nuclear(m)?),
        Observable::Spectral => scalar(linalg::spectral(m)?),
        Observable::Cond => scalar(linalg::cond(m)?),
    }
}
