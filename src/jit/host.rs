//! Host functions that generated code calls: scalar math (the interpreter's own functions, so
//! results agree bit for bit), `kernels::vmath`'s ops over whole buffers, matmul and
//! logsumexp kernels, and `traj_host_op`, which
//! evaluates any one instruction with the interpreter on the planned buffers.

use std::panic::{AssertUnwindSafe, catch_unwind};

use ndarray::{ArrayD, IxDyn};

use crate::interp::{self, Env};
use crate::ir::ops::{Jit, UNARY_OPS};
use crate::ir::types::DType;
use crate::ir::{Binary, Draw, Func, Inst, Prim, Unary};
use crate::kernels;
use crate::kernels::math::MatOperand;
use crate::tensor::Tensor;

/// The Cranelift signature of a host function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Sig {
    /// `fn(f64) -> f64`
    Unary,
    /// `fn(f64, f64) -> f64`
    Binary,
    /// `fn(*const f64, i64) -> f64`: a reduction of a block
    Block,
    /// `fn(a: *const f64, b: *const f64, c: *mut f64, m: i64, k: i64, n: i64, transposed: i64)`
    MatMul,
    /// `fn(a, b, c, m, k, n, transposed, bias: *const f64) -> f64`: [`Sig::MatMul`]'s
    /// product with a ReLU, returning its count of zeros
    MatMulRelu,
    /// `fn(ctx: *mut HostCtx, inst: i64) -> i64`
    HostOp,
    /// `fn(ctx: *mut u8)`
    Ctx,
    /// `fn(a: *const f64, b: *const f64, out: *mut f64, n: i64)`: an op over whole buffers
    Slices,
    /// `fn(first: Half, first_totals: *mut f64, second: Half, second_totals: *mut f64,
    /// bufs: *const *mut u8)`
    Halves,
    /// `fn(xs: *const f64, out: *mut f64, rows: i64, cols: i64)`: a `[rows, cols]` matrix
    /// reduced along one axis
    Columns,
}

/// A half of a loop compiled as its own function (`emit::Emitter::elementwise_in_halves`):
/// it writes its part of the loop's output and its counts' sums into `totals`; `bufs` is
/// the buffer table of the function it belongs to (null for buffers at fixed addresses).
type Half = unsafe extern "C" fn(totals: *mut f64, bufs: *const *mut u8);

/// The host function computing `op`, when it is not emitted inline: its row's `scalar`
/// (`ir::ops`), registered under its symbol by [`symbols`].
pub(super) fn unary_shim(op: Unary) -> Option<&'static str> {
    match op.row().jit {
        Jit::Call(symbol) => Some(symbol),
        Jit::Inline => None,
    }
}

macro_rules! binary_shims {
    ($($name:ident => $op:ident),* $(,)?) => {
        $(extern "C" fn $name(a: f64, b: f64) -> f64 {
            interp::binary(Binary::$op, a, b)
        })*
        /// The host function computing float `op`, when it is not emitted inline.
        pub(super) fn binary_shim(op: Binary) -> Option<&'static str> {
            match op {
                $(Binary::$op => Some(stringify!($name)),)*
                _ => None,
            }
        }
        const BINARY: &[(&str, extern "C" fn(f64, f64) -> f64)] = &[$((stringify!($name), $name)),*];
    };
}

binary_shims! {
    traj_pow => Pow,
    traj_floordiv => FloorDiv,
    traj_rem => Rem,
    traj_logaddexp => LogAddExp,
}

/// `op.slice()` (`kernels::vmath`) over `n` values at `a` into `out`, in halves.
///
/// # Safety
/// `a` and `out` must point to `n` f64 each (non-null and aligned), not overlapping.
unsafe fn unary_over(op: Unary, a: *const f64, out: *mut f64, n: i64) {
    let Some(f) = op.slice() else { return };
    let (a, out) = (a as usize, out as usize);
    in_halves(n as usize, |part| {
        // SAFETY: see the contract; the buffers are planned with `n` values, and the halves
        // write disjoint parts of `out`.
        let (a, out) = unsafe {
            (
                std::slice::from_raw_parts((a as *const f64).add(part.start), part.len()),
                std::slice::from_raw_parts_mut((out as *mut f64).add(part.start), part.len()),
            )
        };
        f(a, out);
    });
}

/// `op.slice()` (`kernels::vmath`) over `n` values at `a` and `b` into `out`, in halves.
///
/// # Safety
/// `a`, `b` and `out` must point to `n` f64 each (non-null and aligned), `out` not
/// overlapping the others.
unsafe fn binary_over(op: Binary, a: *const f64, b: *const f64, out: *mut f64, n: i64) {
    let Some(f) = op.slice() else { return };
    let (a, b, out) = (a as usize, b as usize, out as usize);
    in_halves(n as usize, |part| {
        // SAFETY: see the contract; the buffers are planned with `n` values, and the halves
        // write disjoint parts of `out`.
        let (a, b, out) = unsafe {
            (
                std::slice::from_raw_parts((a as *const f64).add(part.start), part.len()),
                std::slice::from_raw_parts((b as *const f64).add(part.start), part.len()),
                std::slice::from_raw_parts_mut((out as *mut f64).add(part.start), part.len()),
            )
        };
        f(a, b, out);
    });
}

/// Declares, for every `Unary` and `Binary` op, its whole-buffer host function (`Sig::Slices`)
/// and symbol, present exactly when the op table gives the op a slice form (`slice()`).
/// The `match`es list every op and have no other arm, so a new op does not compile until it
/// is listed here, and an op with a slice form cannot lack its shim.
macro_rules! slice_shims {
    (unary: $($u:ident),* ; binary: $($b:ident),* $(,)?) => {
        fn unary_slice_shim(op: Unary) -> Option<(&'static str, *const u8)> {
            op.slice()?;
            Some(match op {
                $(Unary::$u => {
                    /// # Safety
                    /// As [`unary_over`]'s (`_b` unused).
                    unsafe extern "C" fn shim(a: *const f64, _b: *const f64, out: *mut f64, n: i64) {
                        // SAFETY: the caller's contract is `unary_over`'s.
                        unsafe { unary_over(Unary::$u, a, out, n) }
                    }
                    (concat!("traj_", stringify!($u), "_into"), shim as *const u8)
                })*
            })
        }

        fn binary_slice_shim(op: Binary) -> Option<(&'static str, *const u8)> {
            op.slice()?;
            Some(match op {
                $(Binary::$b => {
                    /// # Safety
                    /// As [`binary_over`]'s.
                    unsafe extern "C" fn shim(a: *const f64, b: *const f64, out: *mut f64, n: i64) {
                        // SAFETY: the caller's contract is `binary_over`'s.
                        unsafe { binary_over(Binary::$b, a, b, out, n) }
                    }
                    (concat!("traj_", stringify!($b), "_into"), shim as *const u8)
                })*
            })
        }

        /// Every whole-buffer host function with its symbol.
        fn slice_symbols() -> impl Iterator<Item = (&'static str, *const u8)> {
            [$(unary_slice_shim(Unary::$u)),*]
                .into_iter()
                .chain([$(binary_slice_shim(Binary::$b)),*])
                .flatten()
        }
    };
}

slice_shims! {
    unary: Neg, Exp, Log, Log1p, Sqrt, Sigmoid, Tanh, Softplus, Sin, Cos, Erf, Sign, Not,
        StopGrad, ToFloat;
    binary: Add, Sub, Mul, Div, Pow, FloorDiv, Rem, Max, Min, LogAddExp, Lt, Le, Gt, Ge, Eq,
        Ne, And, Or,
}

/// The host function computing float `prim` over whole buffers (a `layout::slice_op`).
pub(super) fn slice_shim(prim: &Prim) -> Option<&'static str> {
    let shim = match prim {
        Prim::Unary(op) => unary_slice_shim(*op),
        Prim::Binary(op) => binary_slice_shim(*op),
        _ => None,
    };
    shim.map(|(symbol, _)| symbol)
}

/// Slice ops over at least this many entries run in two halves, one a core: tanh's
/// `[512,256]` (2.3 ns an entry on one core, ~45 % of its step) is far above the cost of
/// handing a half over (`cores`). Each entry is computed as in one call, so the bits do not
/// depend on the split.
const SLICE_HALVES: usize = 1 << 15;

/// `run(0..n)`, or `run` on each half of `0..n` (`cores::join`) from [`SLICE_HALVES`] up.
fn in_halves(n: usize, run: impl Fn(std::ops::Range<usize>) + Sync) {
    if n < SLICE_HALVES {
        return run(0..n);
    }
    let half = n / 2;
    let run = &run;
    crate::cores::join(|| run(0..half), move || run(half..n));
}

/// `kernels::math::logsumexp` of `n` contiguous values.
///
/// # Safety
/// `p` must point to `n` readable f64 (non-null and aligned even when `n` is 0).
unsafe extern "C" fn traj_logsumexp(p: *const f64, n: i64) -> f64 {
    // SAFETY: the caller passes the scratch buffer, which holds at least `n` values.
    let xs = unsafe { std::slice::from_raw_parts(p, n as usize) };
    kernels::math::logsumexp(xs.iter().copied())
}

/// `kernels::math::sum` of `n` contiguous values.
///
/// # Safety
/// `p` must point to `n` readable f64 (non-null and aligned even when `n` is 0).
unsafe extern "C" fn traj_sum(p: *const f64, n: i64) -> f64 {
    // SAFETY: the caller passes a buffer (or the scratch buffer) holding `n` values.
    let xs = unsafe { std::slice::from_raw_parts(p, n as usize) };
    kernels::math::sum(xs)
}

/// `out[c] = math::sum` of column `c` of the row-major `[rows, cols]` matrix at `xs`
/// (`rowwise::column_sums_into`).
///
/// # Safety
/// `xs` must point to `rows * cols` f64 and `out` to `cols` (non-null and aligned), not
/// overlapping.
unsafe extern "C" fn traj_column_sums(xs: *const f64, out: *mut f64, rows: i64, cols: i64) {
    let (rows, cols) = (rows as usize, cols as usize);
    // SAFETY: see the contract; the buffers are planned with these shapes.
    let (xs, out) = unsafe {
        (
            std::slice::from_raw_parts(xs, rows * cols),
            std::slice::from_raw_parts_mut(out, cols),
        )
    };
    super::rowwise::column_sums_into(xs, rows, cols, out);
}

/// Column sums from the lanes a loop accumulated as it wrote a `[rows, cols]` matrix, the
/// last `tail` rows in slots of their own (`rowwise::finish_column_lanes`).
///
/// # Safety
/// `lanes` must point to `(SUM_LANES + tail) * cols` f64 and `out` to `cols` (non-null
/// and aligned), not overlapping.
unsafe extern "C" fn traj_column_lanes(lanes: *const f64, out: *mut f64, tail: i64, cols: i64) {
    let (tail, cols) = (tail as usize, cols as usize);
    let n = (kernels::math::SUM_LANES + tail) * cols;
    // SAFETY: see the contract; the scratch buffer is planned this large.
    let (lanes, out) = unsafe {
        (
            std::slice::from_raw_parts(lanes, n),
            std::slice::from_raw_parts_mut(out, cols),
        )
    };
    super::rowwise::finish_column_lanes(lanes, tail, cols, out);
}

/// `out[r] = math::logsumexp` of row `r` of the row-major `[rows, cols]` matrix at `xs`
/// (`rowwise::logsumexp_rows_into`).
///
/// # Safety
/// `xs` must point to `rows * cols` f64 and `out` to `rows` (non-null and aligned), not
/// overlapping.
unsafe extern "C" fn traj_logsumexp_rows(xs: *const f64, out: *mut f64, rows: i64, cols: i64) {
    let (rows, cols) = (rows as usize, cols as usize);
    // SAFETY: see the contract; the buffers are planned with these shapes.
    let (xs, out) = unsafe {
        (
            std::slice::from_raw_parts(xs, rows * cols),
            std::slice::from_raw_parts_mut(out, rows),
        )
    };
    super::rowwise::logsumexp_rows_into(xs, rows, cols, out);
}

/// `c = a @ b` for `[m,k] @ [k,n]`, by the same function the interpreter uses
/// (`kernels::math::matmul_into`, faer's GEMM), so the sums are accumulated in the same
/// order. Bit 0 of `transposed` says `a` holds the row-major `[k,m]` transpose of the left
/// operand, bit 1 that `b` holds the `[n,k]` transpose of the right one.
///
/// # Safety
/// `a`, `b` and `c` must point to `m*k`, `k*n` and `m*n` f64 (non-null and aligned), `c`
/// not overlapping the others.
unsafe extern "C" fn traj_matmul(
    a: *const f64,
    b: *const f64,
    c: *mut f64,
    m: i64,
    k: i64,
    n: i64,
    transposed: i64,
) {
    // SAFETY: as this function's contract.
    let (a, b, c, [m, k, n]) = unsafe { product_operands(a, b, c, [m, k, n], transposed) };
    crate::kernels::math::matmul_into(a, b, c, m, k, n);
}

/// A product's operands and output from [`traj_matmul`]'s arguments.
///
/// # Safety
/// As [`traj_matmul`]'s.
unsafe fn product_operands<'a>(
    a: *const f64,
    b: *const f64,
    c: *mut f64,
    shape: [i64; 3],
    transposed: i64,
) -> (MatOperand<'a>, MatOperand<'a>, &'a mut [f64], [usize; 3]) {
    let [m, k, n] = shape.map(|d| d as usize);
    // SAFETY: see the function's contract; the buffers are planned with these shapes.
    let (a, b, c) = unsafe {
        (
            std::slice::from_raw_parts(a, m * k),
            std::slice::from_raw_parts(b, k * n),
            std::slice::from_raw_parts_mut(c, m * n),
        )
    };
    let a = MatOperand {
        data: a,
        transposed: transposed & 1 != 0,
    };
    let b = MatOperand {
        data: b,
        transposed: transposed & 2 != 0,
    };
    (a, b, c, [m, k, n])
}

/// `c = max(a @ b + bias, 0)` as [`traj_matmul`]'s product, then a bias add (`bias`
/// non-null: an `n`-vector added to every row) and the ReLU
/// (`kernels::math::matmul_relu_into`); returns how many entries of `a @ b + bias` are
/// exactly zero, as a float.
///
/// # Safety
/// As [`traj_matmul`]'s; `bias` is null or points to `n` f64.
#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn traj_matmul_relu(
    a: *const f64,
    b: *const f64,
    c: *mut f64,
    m: i64,
    k: i64,
    n: i64,
    transposed: i64,
    bias: *const f64,
) -> f64 {
    // SAFETY: as this function's contract.
    let (a, b, c, [m, k, n]) = unsafe { product_operands(a, b, c, [m, k, n], transposed) };
    // SAFETY: `bias` is null or holds `n` f64.
    let bias = unsafe { (!bias.is_null()).then(|| std::slice::from_raw_parts(bias, n)) };
    crate::kernels::math::matmul_relu_into(a, b, bias, c, m, k, n) as f64
}

/// Runs the two halves of a loop, one a core (`cores::join`).
///
/// # Safety
/// `first` and `second` must be halves the JIT compiled in a module that is alive, writing
/// disjoint parts of their buffers; each `totals` must hold as many f64 as its half's
/// loop has counts (at least one).
unsafe extern "C" fn traj_halves(
    first: Half,
    first_totals: *mut f64,
    second: Half,
    second_totals: *mut f64,
    bufs: *const *mut u8,
) {
    // Raw pointers are not `Send`; the second half only touches its own part of the
    // buffers and its own totals, and reads the table.
    let (second_totals, table) = (second_totals as usize, bufs as usize);
    crate::cores::join(
        // SAFETY: see the function's contract.
        || unsafe { first(first_totals, bufs) },
        move || unsafe { second(second_totals as *mut f64, table as *const *mut u8) },
    );
}

/// What `traj_host_op` needs: the function, the buffer table and the run's seed; it leaves
/// an error message here when it returns nonzero. The pointers must stay valid while
/// generated code that was given this context can run.
pub(super) struct HostCtx {
    pub func: *const Func,
    pub bufs: *const *mut u8,
    pub nbufs: usize,
    pub seed: u64,
    pub error: Option<String>,
}

/// Evaluates instruction `inst` with the interpreter; 0 on success, else `inst + 1` with
/// the message in the context.
///
/// # Safety
/// `ctx` must be the `HostCtx` that `Compiled::run` passes, its buffers planned for its
/// function.
unsafe extern "C" fn traj_host_op(ctx: *mut u8, inst: i64) -> i64 {
    // SAFETY: the caller passes a live, exclusive `&mut HostCtx` as `ctx`, whose function
    // and buffer table are alive (see `HostCtx`).
    let ctx = unsafe { &mut *ctx.cast::<HostCtx>() };
    let (func, bufs) = unsafe { (&*ctx.func, std::slice::from_raw_parts(ctx.bufs, ctx.nbufs)) };
    let i = inst as usize;
    let r = catch_unwind(AssertUnwindSafe(|| eval_one(func, bufs, ctx.seed, i)));
    let message = match r {
        Ok(Ok(())) => return 0,
        Ok(Err(e)) => e,
        Err(_) => "internal error: the interpreter panicked in a host op".to_string(),
    };
    ctx.error = Some(message);
    inst + 1
}

/// Every host function, with its symbol name and signature.
pub(super) fn symbols() -> Vec<(&'static str, *const u8, Sig)> {
    let mut out: Vec<(&'static str, *const u8, Sig)> = Vec::new();
    out.extend(UNARY_OPS.iter().filter_map(|row| match row.jit {
        Jit::Call(symbol) => Some((symbol, row.scalar as *const u8, Sig::Unary)),
        Jit::Inline => None,
    }));
    out.extend(
        BINARY
            .iter()
            .map(|(n, f)| (*n, *f as *const u8, Sig::Binary)),
    );
    out.extend(slice_symbols().map(|(n, f)| (n, f, Sig::Slices)));
    out.push(("traj_logsumexp", traj_logsumexp as *const u8, Sig::Block));
    out.push(("traj_sum", traj_sum as *const u8, Sig::Block));
    out.push((
        "traj_logsumexp_rows",
        traj_logsumexp_rows as *const u8,
        Sig::Columns,
    ));
    out.push((
        "traj_column_sums",
        traj_column_sums as *const u8,
        Sig::Columns,
    ));
    out.push((
        "traj_column_lanes",
        traj_column_lanes as *const u8,
        Sig::Columns,
    ));
    out.push(("traj_matmul", traj_matmul as *const u8, Sig::MatMul));
    out.push((
        "traj_matmul_relu",
        traj_matmul_relu as *const u8,
        Sig::MatMulRelu,
    ));
    out.push(("traj_host_op", traj_host_op as *const u8, Sig::HostOp));
    out.push(("traj_halves", traj_halves as *const u8, Sig::Halves));
    out.push((
        "traj_tie_direction",
        super::train_loop::traj_tie_direction as *const u8,
        Sig::Ctx,
    ));
    out
}

/// Evaluates `f.insts[i]` by running the interpreter on a one-instruction function whose
/// inputs are the operands, read from their buffers.
fn eval_one(f: &Func, bufs: &[*mut u8], seed: u64, i: usize) -> Result<(), String> {
    let inst = f
        .insts
        .get(i)
        .ok_or("internal error: no such instruction")?;
    // A batch of rows is drawn straight into its buffer (sgd: nothing allocated a step).
    if let Prim::Random {
        draw: Draw::BatchRows { rows, shuffle },
        stream,
    } = &inst.prim
        && inst.dtype == DType::Int
        && let [s] = inst.args[..]
        && f.insts[s].dtype == DType::Int
    {
        let n: usize = inst.shape.iter().product();
        // SAFETY: buffers are planned for their instruction's dtype and shape: the step
        // is an int scalar, the batch `n` ints.
        let (step, out) = unsafe {
            (
                *bufs[s].cast::<i64>(),
                std::slice::from_raw_parts_mut(bufs[i].cast::<i64>(), n),
            )
        };
        interp::batch_rows(seed, stream, step.max(0) as u64, *rows, *shuffle, out);
        return Ok(());
    }
    let mut operands = Vec::with_capacity(inst.args.len());
    for &a in &inst.args {
        let op = &f.insts[a];
        // SAFETY: operand buffers are planned for their instruction's dtype and shape.
        operands.push(unsafe { read(bufs[a], op.dtype, &op.shape) }?);
    }
    if let Prim::Random { draw, stream } = &inst.prim {
        // A draw needs only its operands, not a function around it (sgd's batch of rows:
        // ~0.4 µs a step less). Under `precision f32` the interpreter rounds its operands
        // (as inputs) and its result.
        if f.f32 {
            operands.iter_mut().for_each(interp::round_to_f32);
        }
        let operands: Vec<&Tensor> = operands.iter().collect();
        let mut t = interp::draw_values(draw, stream, seed, &operands, &inst.shape)?;
        if f.f32 {
            interp::round_to_f32(&mut t);
        }
        // SAFETY: the result buffer is planned for the instruction's dtype and shape.
        return unsafe { write(bufs[i], inst.dtype, &inst.shape, &t) };
    }
    let mut g = Func {
        f32: f.f32,
        ..Func::default()
    };
    for (k, &a) in inst.args.iter().enumerate() {
        let op = &f.insts[a];
        g.inputs.push((format!("%{a}"), op.dtype, op.shape.clone()));
        g.insts.push(Inst {
            prim: Prim::Input(k),
            args: vec![],
            dtype: op.dtype,
            shape: op.shape.clone(),
            span: op.span,
        });
    }
    let mut one = inst.clone();
    one.args = (0..inst.args.len()).collect();
    g.insts.push(one);
    g.outputs.push(("out".into(), inst.args.len()));
    let out = interp::eval(&g, &operands, Env { seed }).map_err(|e| e.message)?;
    let t = out.first().ok_or("internal error: no result")?;
    // SAFETY: the result buffer is planned for the instruction's dtype and shape.
    unsafe { write(bufs[i], inst.dtype, &inst.shape, t) }
}

/// The tensor in a buffer.
///
/// # Safety
/// `p` must point to `shape`'s element count of 8-byte values.
pub(super) unsafe fn read(p: *mut u8, dtype: DType, shape: &[usize]) -> Result<Tensor, String> {
    let n: usize = shape.iter().product();
    // SAFETY: see the contract.
    let bits = unsafe { std::slice::from_raw_parts(p.cast::<u64>().cast_const(), n) };
    let t = match dtype {
        DType::Float => ArrayD::from_shape_vec(
            IxDyn(shape),
            bits.iter().map(|b| f64::from_bits(*b)).collect(),
        )
        .map(Tensor::Float),
        DType::Int => {
            ArrayD::from_shape_vec(IxDyn(shape), bits.iter().map(|b| *b as i64).collect())
                .map(Tensor::Int)
        }
    };
    t.map_err(|e| e.to_string())
}

/// Writes `t` into a buffer planned for `dtype` and `shape`, refusing any other type.
///
/// # Safety
/// `p` must point to `shape`'s element count of writable 8-byte values.
pub(super) unsafe fn write(
    p: *mut u8,
    dtype: DType,
    shape: &[usize],
    t: &Tensor,
) -> Result<(), String> {
    if t.shape() != shape {
        return Err(format!(
            "a value of shape {:?} where {:?} was planned",
            t.shape(),
            shape
        ));
    }
    let n: usize = shape.iter().product();
    // SAFETY: see the contract.
    let out = unsafe { std::slice::from_raw_parts_mut(p.cast::<u64>(), n) };
    match (t, dtype) {
        (Tensor::Float(a), DType::Float) => {
            for (o, x) in out.iter_mut().zip(a.iter()) {
                *o = x.to_bits();
            }
        }
        (Tensor::Int(a), DType::Int) => {
            for (o, x) in out.iter_mut().zip(a.iter()) {
                *o = *x as u64;
            }
        }
        _ => {
            return Err(format!(
                "a value of the wrong dtype where {dtype:?} was planned"
            ));
        }
    }
    Ok(())
}
