//! Cranelift code generation: one IR `Func` becomes one CLIF function
//! `fn(bufs: *const *mut u8, ctx: *mut HostCtx) -> i64` that computes every instruction in
//! order into its planned buffer (inline loops, or calls into `host`) and returns 0, or
//! `inst + 1` when a host op failed. Elementwise loops over `PARALLEL_LOOP` entries or more
//! are two more functions, one for each half of the rows, which `host`'s `traj_halves`
//! runs one a core.
//!
//! Every value is 8 bytes (f64 or i64), row-major and contiguous; `bufs[i]` is the buffer
//! of instruction `i`, `bufs[insts.len()]` a scratch buffer. Loops are bottom-tested
//! (JIT-NOTES 1.4), with static trip counts and byte strides.

use std::collections::HashMap;
use std::ops::Range;

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{
    self, AbiParam, Block, BlockArg, FuncRef, InstBuilder, MemFlagsData, Value, types,
};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use cranelift_jit::JITModule;
use cranelift_module::{FuncId, Module};

use super::host::{binary_shim, slice_shim, unary_shim};
use super::layout::{
    ReluAfter, Storage, column_sum, counts_in_loops, flag_count, full_reduction,
    inline_elementwise, relus_after_products, slice_op, storage,
};
use crate::ir::product;
use crate::ir::types::DType;
use crate::ir::{Binary, Func, Prim, Unary};
use crate::kernels::math::SUM_LANES;

/// Elementwise loops over at least this many entries (1 MB of output) run in two halves,
/// one a core: wide's two passes over `[1024,2048]` arrays (17.0–18.2 → 15.0–16.0 ms a
/// step), and since `cores` judges the partner by the time it saves rather than by each
/// slow half, the `[512,256]` and `[512,512]` loops of relu2, tanh and mlp (2026-12-07,
/// alternating binaries, µs a step: tanh 194–200 → 174–180, mlp 502–632 → 446–452; on a
/// host with a busy loop on the other core, tanh 307–333 → 313–318, relu2 218–220 →
/// 220–241). Under the previous judge, relu2's split lost on a busy host (median 316 →
/// 413: a half of ~10 µs is easily caught by the partner losing its core).
pub const PARALLEL_LOOP: usize = 1 << 17;

/// Every index of `shape`'s first axis (`0..1` for a scalar).
/// The condition code of a float comparison (1.0 where it holds, else 0.0).
fn float_cc(op: Binary) -> Option<FloatCC> {
    Some(match op {
        Binary::Lt => FloatCC::LessThan,
        Binary::Le => FloatCC::LessThanOrEqual,
        Binary::Gt => FloatCC::GreaterThan,
        Binary::Ge => FloatCC::GreaterThanOrEqual,
        Binary::Eq => FloatCC::Equal,
        // Cranelift's `ne` is true on unordered operands, as Rust's `!=`.
        Binary::Ne => FloatCC::NotEqual,
        _ => return None,
    })
}

fn all_rows(shape: &[usize]) -> Range<usize> {
    0..shape.first().copied().unwrap_or(1)
}

/// Row-major strides of `shape`, in bytes.
fn strides(shape: &[usize]) -> Vec<i64> {
    let mut s = vec![8i64; shape.len()];
    for k in (0..shape.len().saturating_sub(1)).rev() {
        s[k] = s[k + 1] * shape[k + 1] as i64;
    }
    s
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// The byte strides that read `from` broadcast to `to` (0 along broadcast axes).
fn broadcast_strides(from: &[usize], to: &[usize]) -> Option<Vec<i64>> {
    let from_strides = strides(from);
    let lead = to.len().checked_sub(from.len())?;
    let mut src = vec![0i64; to.len()];
    for (k, d) in from.iter().enumerate() {
        if *d == to[lead + k] {
            src[lead + k] = from_strides[k];
        } else if *d != 1 {
            return None;
        }
    }
    Some(src)
}

/// How a loop reads one leaf of a fused expression.
#[derive(Clone, Copy)]
enum LeafAt {
    /// A load at `base + off + disp`: an unrolled lane's constant `disp` stays in the
    /// load's address (one address a buffer an iteration; folded into `base + off`, every
    /// lane materialized its own 64-bit constant address).
    Mem { base: Value, off: Value, disp: i32 },
    /// The same value everywhere (a broadcast scalar), loaded before the loop.
    Splat(Value),
}

/// Elements per vector loop iteration: f64x2, unrolled 4 times.
const UNROLL: usize = 4;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Red {
    Sum,
    Max,
    Min,
    Norm2,
    LogSumExp,
}

impl Red {
    /// The accumulator's value before the first entry (sums from -0.0, as Rust's `Sum`).
    fn start(self) -> f64 {
        match self {
            Red::Max => f64::NEG_INFINITY,
            Red::Min => f64::INFINITY,
            _ => -0.0,
        }
    }
}

/// The innermost body of a loop nest: gets the emitter and each operand's byte offset.
type LoopBody<'f, E> = dyn FnMut(&mut E, &[Value]) -> Result<(), String> + 'f;

/// A bottom-tested loop (JIT-NOTES 1.4) whose counter runs 0, `step`, 2·`step`, … while
/// below `end`: `open` makes its body block current, with the counter's value in `at`.
pub(super) struct CountedLoop {
    counter: Variable,
    body: Block,
    pub at: Value,
}

impl CountedLoop {
    pub fn open(b: &mut FunctionBuilder) -> CountedLoop {
        let counter = b.declare_var(types::I64);
        let zero = b.ins().iconst(types::I64, 0);
        b.def_var(counter, zero);
        let body = b.create_block();
        b.ins().jump(body, &[]);
        b.switch_to_block(body);
        let at = b.use_var(counter);
        CountedLoop { counter, body, at }
    }

    /// Ends the body: adds `step`, branches back while below `end`, else to `exit`
    /// (left for the caller to switch to).
    pub fn close_to(self, b: &mut FunctionBuilder, step: i64, end: i64, exit: Block) {
        let next = b.ins().iadd_imm_s(self.at, step);
        b.def_var(self.counter, next);
        let more = b.ins().icmp_imm_s(IntCC::UnsignedLessThan, next, end);
        b.ins().brif(more, self.body, &[], exit, &[]);
        b.seal_block(self.body);
    }

    /// Ends the body as `close_to` does, going on in a new exit block.
    pub fn close(self, b: &mut FunctionBuilder, step: i64, end: i64) {
        let exit = b.create_block();
        self.close_to(b, step, end, exit);
        b.switch_to_block(exit);
        b.seal_block(exit);
    }
}

pub(super) struct Emitter<'a, 'b, 'c> {
    pub b: &'a mut FunctionBuilder<'b>,
    module: &'a mut JITModule,
    shims: &'a HashMap<&'static str, FuncId>,
    refs: &'a mut HashMap<&'static str, FuncRef>,
    /// Functions this one calls that the caller must define in `module`: the halves of
    /// loops run one a core (`elementwise_in_halves`).
    helpers: &'a mut Vec<(FuncId, ir::Function)>,
    f: &'a Func,
    /// The buffer table (a pointer), or each buffer's fixed address.
    bufs: Bufs<'c>,
    ctx: Value,
    /// Where a failing host op jumps, with its code (`inst + 1`) as the block argument.
    err: Option<Block>,
    storage: Vec<Storage>,
    /// The flag counts each elementwise loop also computes (`layout::counts_in_loops`).
    siblings: HashMap<usize, Vec<usize>>,
    /// The ReLUs products compute (`layout::relus_after_products`), by product.
    relus: HashMap<usize, ReluAfter>,
    /// Elementwise loops over this many entries or more run in two halves, one a core
    /// ([`PARALLEL_LOOP`], or fewer for an update whose gradient a split product gave).
    halves_from: usize,
    /// Whether each instruction was computed early, in another's loop.
    done: Vec<bool>,
    /// An input's old values the loop writing one value also stores elsewhere.
    keep_old: Option<&'a mut KeepOld>,
    /// The flag counts' roots whose vector value in the loop being emitted is their
    /// comparison's lane mask (i64x2 of 0 or -1), not its 1.0/0.0 (`Counts`).
    masked: Vec<usize>,
}

/// In the elementwise loop of instruction `root`, each element of `input` it loads (at
/// the element it writes) is also stored at `into` plus that element's byte offset: the
/// training loop keeps θ's old value in the previous-θ slot this way. `stored` is set when
/// the loop did so over all of `root`'s elements (its plain loop, or both halves of a loop
/// in halves, each over its rows; `input` read contiguously in f64, not under `precision
/// f32`).
pub(super) struct KeepOld {
    pub root: usize,
    pub input: usize,
    pub into: Value,
    pub stored: bool,
}

/// The accumulators of a loop's flag counts: each count's scalar sum (from -0.0, its
/// scalar entries) and `UNROLL` lane sums of its vector entries — f64x2 sums of its 1.0/0.0
/// flags, or, when it is a comparison (`masks`), i64x2 counts that subtract each lane mask
/// (0 or -1): one integer op instead of a blend of two constants and a float add. `turn`
/// counts the vector entries added.
struct Counts {
    each: Vec<(Variable, Vec<Variable>, bool)>,
    turn: usize,
}

/// How generated code finds instruction `i`'s buffer.
#[derive(Clone, Copy)]
pub(super) enum Bufs<'a> {
    /// Loaded from a table of pointers passed at run time.
    Table(Value),
    /// Fixed addresses known at compile time.
    Fixed(&'a [*mut u8]),
}

/// The reference to host function `name` inside `func`, declared there once (`refs`
/// remembers it).
pub(super) fn shim_ref(
    module: &mut JITModule,
    shims: &HashMap<&'static str, FuncId>,
    refs: &mut HashMap<&'static str, FuncRef>,
    func: &mut ir::Function,
    name: &'static str,
) -> Result<FuncRef, String> {
    if let Some(r) = refs.get(name) {
        return Ok(*r);
    }
    let id = *shims
        .get(name)
        .ok_or_else(|| format!("internal error: no host function {name}"))?;
    let r = module.declare_func_in_func(id, func);
    refs.insert(name, r);
    Ok(r)
}

/// Emits the body of `func` (whose signature is set) for `f`; returns the functions it
/// calls that must be defined with it.
pub(super) fn build(
    module: &mut JITModule,
    shims: &HashMap<&'static str, FuncId>,
    f: &Func,
    func: &mut ir::Function,
) -> Result<Vec<(FuncId, ir::Function)>, String> {
    let mut fbc = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(func, &mut fbc);
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    b.seal_block(entry);
    let (bufs, ctx) = (b.block_params(entry)[0], b.block_params(entry)[1]);
    let mut refs = HashMap::new();
    let mut helpers = Vec::new();
    let err = emit_func(
        &mut b,
        module,
        shims,
        &mut refs,
        &mut helpers,
        f,
        Bufs::Table(bufs),
        ctx,
        None,
        None,
        PARALLEL_LOOP,
    )?;
    let zero = b.ins().iconst(types::I64, 0);
    b.ins().return_(&[zero]);
    if let Some(err) = err {
        b.switch_to_block(err);
        let code = b.block_params(err)[0];
        b.ins().return_(&[code]);
    }
    b.seal_all_blocks();
    let config = module.target_config();
    b.finalize(config);
    Ok(helpers)
}

/// Emits every instruction of `f`, in order, at the builder's current position; a failing
/// host op jumps to `err` (created when `None` and needed; returned) with its code. The
/// functions it calls that the caller must define are added to `helpers`.
#[allow(clippy::too_many_arguments)]
pub(super) fn emit_func<'a, 'b>(
    b: &'a mut FunctionBuilder<'b>,
    module: &'a mut JITModule,
    shims: &'a HashMap<&'static str, FuncId>,
    refs: &'a mut HashMap<&'static str, FuncRef>,
    helpers: &'a mut Vec<(FuncId, ir::Function)>,
    f: &'a Func,
    bufs: Bufs<'a>,
    ctx: Value,
    err: Option<Block>,
    keep_old: Option<&'a mut KeepOld>,
    halves_from: usize,
) -> Result<Option<Block>, String> {
    if (f.insts.len() + 1)
        .checked_mul(8)
        .is_none_or(|n| n > i32::MAX as usize)
    {
        return Err("the function has too many instructions for the JIT".into());
    }
    let storage = storage(f);
    let siblings = counts_in_loops(f, &storage);
    let relus = relus_after_products(f, &storage);
    let mut e = Emitter {
        b,
        module,
        shims,
        refs,
        helpers,
        f,
        bufs,
        ctx,
        err,
        storage,
        siblings,
        relus,
        halves_from,
        done: vec![false; f.insts.len()],
        keep_old,
        masked: Vec::new(),
    };
    for i in 0..f.insts.len() {
        e.inst(i)?;
    }
    Ok(e.err)
}

impl Emitter<'_, '_, '_> {
    fn flags() -> MemFlagsData {
        MemFlagsData::trusted()
    }

    fn dtype(&self, v: usize) -> DType {
        self.f.insts[v].dtype
    }

    /// The address of buffer `v`.
    fn buf(&mut self, v: usize) -> Value {
        let ptr = self.module.target_config().pointer_type();
        match self.bufs {
            Bufs::Table(t) => {
                self.b
                    .ins()
                    .load(ptr, Self::flags().with_readonly(), t, (v * 8) as i32)
            }
            Bufs::Fixed(addrs) => self.b.ins().iconst(ptr, addrs[v] as i64),
        }
    }

    fn scratch(&mut self) -> Value {
        self.buf(self.f.insts.len())
    }

    fn shim(&mut self, name: &'static str) -> Result<FuncRef, String> {
        shim_ref(self.module, self.shims, self.refs, self.b.func, name)
    }

    fn call(&mut self, name: &'static str, args: &[Value]) -> Result<Option<Value>, String> {
        let r = self.shim(name)?;
        let call = self.b.ins().call(r, args);
        Ok(self.b.inst_results(call).first().copied())
    }

    fn call1(&mut self, name: &'static str, args: &[Value]) -> Result<Value, String> {
        self.call(name, args)?
            .ok_or_else(|| format!("internal error: {name} returns nothing"))
    }

    /// Element of operand `v` at `base + off`, as f64 (ints converted as `as f64` does).
    fn ld_f(&mut self, v: usize, base: Value, off: Value) -> Value {
        let addr = self.b.ins().iadd(base, off);
        if self.dtype(v) == DType::Int {
            let x = self.b.ins().load(types::I64, Self::flags(), addr, 0);
            self.b.ins().fcvt_from_sint(types::F64, x)
        } else {
            self.b.ins().load(types::F64, Self::flags(), addr, 0)
        }
    }

    fn ld_i(&mut self, base: Value, off: Value) -> Value {
        let addr = self.b.ins().iadd(base, off);
        self.b.ins().load(types::I64, Self::flags(), addr, 0)
    }

    /// Stores a float result, rounded to f32 first under `precision f32` (as the
    /// interpreter rounds every float result).
    fn st_f(&mut self, x: Value, base: Value, off: Value) {
        let x = if self.f.f32 {
            let s = self.b.ins().fdemote(types::F32, x);
            self.b.ins().fpromote(types::F64, s)
        } else {
            x
        };
        let addr = self.b.ins().iadd(base, off);
        self.b.ins().store(Self::flags(), x, addr, 0);
    }

    fn st_i(&mut self, x: Value, base: Value, off: Value) {
        let addr = self.b.ins().iadd(base, off);
        self.b.ins().store(Self::flags(), x, addr, 0);
    }

    fn fconst(&mut self, x: f64) -> Value {
        self.b.ins().f64const(x)
    }

    /// Whether `x` is an f64x2 vector (else a scalar).
    fn is_vector(&self, x: Value) -> bool {
        self.b.func.dfg.value_type(x).is_vector()
    }

    /// The constant `x` shaped like `like`: a scalar, or splat into both lanes.
    fn konst(&mut self, x: f64, like: Value) -> Value {
        let c = self.fconst(x);
        if self.is_vector(like) {
            self.b.ins().splat(types::F64X2, c)
        } else {
            c
        }
    }

    /// `a` where the condition `c` (a scalar flag or a vector lane mask) holds, else `b`.
    fn pick(&mut self, c: Value, a: Value, b: Value) -> Value {
        if self.is_vector(a) {
            let le = MemFlagsData::new().with_endianness(ir::Endianness::Little);
            let m = self.b.ins().bitcast(types::F64X2, le, c);
            self.b.ins().bitselect(m, a, b)
        } else {
            self.b.ins().select(c, a, b)
        }
    }

    /// 1.0 where `c`, else 0.0, shaped like `like`.
    fn bool_f(&mut self, c: Value, like: Value) -> Value {
        let (one, zero) = (self.konst(1.0, like), self.konst(0.0, like));
        self.pick(c, one, zero)
    }

    /// Host function `name` on `args`: once on scalars, lane by lane on vectors (host
    /// functions have no vector form).
    fn call_lanes(&mut self, name: &'static str, args: &[Value]) -> Result<Value, String> {
        if !self.is_vector(args[0]) {
            return self.call1(name, args);
        }
        let mut out = Vec::new();
        for lane in 0..2u8 {
            let xs: Vec<Value> = args
                .iter()
                .map(|a| self.b.ins().extractlane(*a, lane))
                .collect();
            out.push(self.call1(name, &xs)?);
        }
        let r = self.b.ins().splat(types::F64X2, out[0]);
        Ok(self.b.ins().insertlane(r, out[1], 1))
    }

    /// A loop nest over `dims` (outermost first); `strides[k][d]` is operand k's byte
    /// stride along dim d and `base[k]` its starting byte offset. `body` gets each
    /// operand's offset. Each loop is bottom-tested; a dim of 1 emits no loop.
    fn nest(
        &mut self,
        dims: &[usize],
        strides: &[Vec<i64>],
        base: &[Value],
        body: &mut LoopBody<'_, Self>,
    ) -> Result<(), String> {
        let Some((&n, rest)) = dims.split_first() else {
            return body(self, base);
        };
        if n == 0 || rest.contains(&0) {
            return Ok(());
        }
        let inner: Vec<Vec<i64>> = strides.iter().map(|s| s[1..].to_vec()).collect();
        if n == 1 {
            return self.nest(rest, &inner, base, body);
        }
        let offs: Vec<Variable> = base
            .iter()
            .map(|v| {
                let var = self.b.declare_var(types::I64);
                self.b.def_var(var, *v);
                var
            })
            .collect();
        let lp = CountedLoop::open(self.b);
        let cur: Vec<Value> = offs.iter().map(|v| self.b.use_var(*v)).collect();
        self.nest(rest, &inner, &cur, body)?;
        for (k, var) in offs.iter().enumerate() {
            let o = self.b.use_var(*var);
            let o = self.b.ins().iadd_imm_s(o, strides[k][0]);
            self.b.def_var(*var, o);
        }
        lp.close(self.b, 1, n as i64);
        Ok(())
    }

    /// A flat loop over `n` elements of contiguous operands; `body` gets the byte offset.
    fn flat(
        &mut self,
        n: usize,
        body: &mut dyn FnMut(&mut Self, Value) -> Result<(), String>,
    ) -> Result<(), String> {
        let zero = self.b.ins().iconst(types::I64, 0);
        self.nest(&[n], &[vec![8]], &[zero], &mut |e, offs| body(e, offs[0]))
    }

    /// Copies 8-byte elements from buffer `src` (at `src_base` bytes, with `src_strides`)
    /// into buffer `dst` (at `dst_base`, with `dst_strides`) over `dims`.
    fn copy(
        &mut self,
        (src, dst): (usize, usize),
        dims: &[usize],
        (src_strides, dst_strides): (Vec<i64>, Vec<i64>),
        (src_base, dst_base): (i64, i64),
    ) -> Result<(), String> {
        let (s, d) = (self.buf(src), self.buf(dst));
        let sb = self.b.ins().iconst(types::I64, src_base);
        let db = self.b.ins().iconst(types::I64, dst_base);
        // Axes that are contiguous on both sides are merged; a contiguous innermost run of
        // at least `MEMCPY_RUN` elements is one `memcpy`.
        const MEMCPY_RUN: usize = 8;
        let (mut dims, mut ss, mut ds) = (dims.to_vec(), src_strides, dst_strides);
        let mut k = dims.len();
        while k >= 2 {
            k -= 1;
            let n = dims[k] as i64;
            if ss[k - 1] == ss[k] * n && ds[k - 1] == ds[k] * n {
                dims[k - 1] *= dims[k];
                dims.remove(k);
                ss.remove(k - 1);
                ds.remove(k - 1);
            }
        }
        if let (Some(&run), Some(8), Some(8)) = (dims.last(), ss.last(), ds.last())
            && run >= MEMCPY_RUN
        {
            let outer = dims.len() - 1;
            let (ss, ds) = (ss[..outer].to_vec(), ds[..outer].to_vec());
            return self.nest(&dims[..outer], &[ss, ds], &[sb, db], &mut |e, o| {
                let from = e.b.ins().iadd(s, o[0]);
                let to = e.b.ins().iadd(d, o[1]);
                let size = e.b.ins().iconst(types::I64, (run * 8) as i64);
                let config = e.module.target_config();
                e.b.call_memcpy(config, to, from, size);
                Ok(())
            });
        }
        self.nest(&dims, &[ss, ds], &[sb, db], &mut |e, o| {
            let v = e.ld_i(s, o[0]);
            e.st_i(v, d, o[1]);
            Ok(())
        })
    }

    /// Evaluates instruction `i` with the interpreter (`host::traj_host_op`); returns
    /// early with its code when that fails.
    fn host(&mut self, i: usize) -> Result<(), String> {
        let idx = self.b.ins().iconst(types::I64, i as i64);
        let ctx = self.ctx;
        let code = self.call1("traj_host_op", &[ctx, idx])?;
        let err = match self.err {
            Some(b) => b,
            None => {
                let b = self.b.create_block();
                self.b.append_block_param(b, types::I64);
                self.err = Some(b);
                b
            }
        };
        let cont = self.b.create_block();
        self.b
            .ins()
            .brif(code, err, &[BlockArg::Value(code)], cont, &[]);
        self.b.switch_to_block(cont);
        self.b.seal_block(cont);
        Ok(())
    }

    fn inst(&mut self, i: usize) -> Result<(), String> {
        let f = self.f;
        let inst = &f.insts[i];
        let arg_shape = |k: usize| f.insts[inst.args[k]].shape.as_slice();
        // Inline code writes as many elements as the op computes: the planned shape must
        // be that (`ir::verify` does not check these ops' result shapes).
        let expect = |want: &[usize]| {
            if inst.shape == want {
                Ok(())
            } else {
                Err(format!(
                    "invalid IR: %{i} has shape {:?}, its op gives {want:?}",
                    inst.shape
                ))
            }
        };
        if self.storage[i] != Storage::Own || self.done[i] {
            // A view shares its source's buffer; lazy and fused values are computed where
            // they are used.
            return Ok(());
        }
        if inline_elementwise(f, i) {
            return self.elementwise(i);
        }
        if full_reduction(f, i) && self.storage[inst.args[0]] == Storage::Fused {
            return self.fused_reduction(i);
        }
        match &inst.prim {
            // Inputs are copied in (and rounded) by `Compiled::run`; consts are planned.
            Prim::Input(_) | Prim::Const(_) => Ok(()),
            Prim::Unary(op) => self.unary(i, *op),
            Prim::Binary(op) => self.binary(i, *op),
            Prim::Select => self.select(i),
            Prim::Reshape(_) => {
                let n = numel(&inst.shape);
                self.copy((inst.args[0], i), &[n], (vec![8], vec![8]), (0, 0))
            }
            Prim::Broadcast(s) => {
                expect(s)?;
                let src = broadcast_strides(arg_shape(0), s)
                    .ok_or_else(|| format!("%{i}: cannot broadcast {:?} to {s:?}", arg_shape(0)))?;
                self.copy((inst.args[0], i), s, (src, strides(s)), (0, 0))
            }
            Prim::Transpose(p) => {
                let from = arg_shape(0);
                let mut seen = vec![false; from.len()];
                if p.len() != from.len() || p.iter().any(|a| *a >= from.len()) {
                    return Err(format!("%{i}: bad transpose {p:?}"));
                }
                for a in p {
                    seen[*a] = true;
                }
                if seen.contains(&false) {
                    return Err(format!("%{i}: bad transpose {p:?}"));
                }
                expect(&p.iter().map(|a| from[*a]).collect::<Vec<_>>())?;
                let fs = strides(from);
                let src = p.iter().map(|a| fs[*a]).collect();
                self.copy(
                    (inst.args[0], i),
                    &inst.shape,
                    (src, strides(&inst.shape)),
                    (0, 0),
                )
            }
            Prim::Slice(r) => {
                let from = arg_shape(0);
                if r.len() != from.len() || r.iter().zip(from).any(|((a, b), d)| a > b || b > d) {
                    return Err(format!("%{i}: bad slice {r:?} of {from:?}"));
                }
                expect(&r.iter().map(|(a, b)| b - a).collect::<Vec<_>>())?;
                let fs = strides(from);
                let base = r.iter().zip(&fs).map(|((a, _), s)| *a as i64 * s).sum();
                self.copy(
                    (inst.args[0], i),
                    &inst.shape,
                    (fs, strides(&inst.shape)),
                    (base, 0),
                )
            }
            Prim::Pad { starts, shape } => {
                let from = arg_shape(0);
                if starts.len() != from.len()
                    || shape.len() != from.len()
                    || (0..from.len()).any(|k| starts[k] + from[k] > shape[k])
                {
                    return Err(format!(
                        "%{i}: bad pad {starts:?} of {from:?} into {shape:?}"
                    ));
                }
                expect(shape)?;
                let out = self.buf(i);
                let size = self.b.ins().iconst(types::I64, (numel(shape) * 8) as i64);
                let zero = self.b.ins().iconst(types::I8, 0);
                let config = self.module.target_config();
                self.b.call_memset(config, out, zero, size);
                let os = strides(shape);
                let base = starts.iter().zip(&os).map(|(a, s)| *a as i64 * s).sum();
                self.copy((inst.args[0], i), from, (strides(from), os), (0, base))
            }
            Prim::Concat(axis) => {
                let axis = *axis;
                let os = strides(&inst.shape);
                let mut at = 0;
                for (k, &a) in inst.args.iter().enumerate() {
                    let from = arg_shape(k);
                    let fits = from.len() == inst.shape.len()
                        && axis < from.len()
                        && (0..from.len()).all(|j| j == axis || from[j] == inst.shape[j]);
                    if !fits || self.dtype(a) != inst.dtype {
                        return Err(format!(
                            "%{i}: bad concat of {from:?} into {:?}",
                            inst.shape
                        ));
                    }
                    self.copy(
                        (a, i),
                        from,
                        (strides(from), os.clone()),
                        (0, at * os[axis]),
                    )?;
                    at += from[axis] as i64;
                }
                if at != inst.shape[axis] as i64 {
                    return Err(format!("%{i}: concat fills {at} of {:?}", inst.shape));
                }
                Ok(())
            }
            Prim::ReduceSum(axes) => self.reduce(i, Red::Sum, axes),
            Prim::ReduceMax(axes) => self.reduce(i, Red::Max, axes),
            Prim::ReduceMin(axes) => self.reduce(i, Red::Min, axes),
            Prim::Norm2(axes) => self.reduce(i, Red::Norm2, axes),
            Prim::LogSumExp(axes) => self.reduce(i, Red::LogSumExp, axes),
            Prim::MatMul => self.matmul(i),
            Prim::Gather if inst.args.len() == 2 && !arg_shape(0).is_empty() => self.gather(i),
            Prim::Gather
            | Prim::ScatterAdd(_)
            | Prim::ReduceProd(_)
            | Prim::Argmax(_)
            | Prim::Argmin(_)
            | Prim::Random { .. }
            | Prim::Observe(_) => self.host(i),
        }
    }

    fn unary(&mut self, i: usize, op: Unary) -> Result<(), String> {
        let f = self.f;
        let inst = &f.insts[i];
        let x = inst.args[0];
        let n = numel(&inst.shape);
        let int_in = self.dtype(x) == DType::Int;
        if inst.dtype == DType::Int {
            if !int_in || !matches!(op, Unary::Neg | Unary::Sign | Unary::StopGrad) {
                return self.host(i);
            }
            let (src, out) = (self.buf(x), self.buf(i));
            return self.flat(n, &mut |e, o| {
                let v = e.ld_i(src, o);
                let r = match op {
                    Unary::Neg => e.b.ins().ineg(v),
                    Unary::Sign => {
                        let one = e.b.ins().iconst(types::I64, 1);
                        let m1 = e.b.ins().iconst(types::I64, -1);
                        let zero = e.b.ins().iconst(types::I64, 0);
                        let gt = e.b.ins().icmp_imm_s(IntCC::SignedGreaterThan, v, 0);
                        let lt = e.b.ins().icmp_imm_s(IntCC::SignedLessThan, v, 0);
                        let neg = e.b.ins().select(lt, m1, zero);
                        e.b.ins().select(gt, one, neg)
                    }
                    _ => v,
                };
                e.st_i(r, out, o);
                Ok(())
            });
        }
        if int_in && matches!(op, Unary::Neg | Unary::Sign | Unary::StopGrad) {
            // The interpreter keeps these ints; a float result here is not its semantics.
            return self.host(i);
        }
        let (src, out) = (self.buf(x), self.buf(i));
        if slice_op(f, i) {
            return self.over_slices(i, &[src, src]);
        }
        self.flat(n, &mut |e, o| {
            let v = e.ld_f(x, src, o);
            let r = e.funary(op, v)?;
            e.st_f(r, out, o);
            Ok(())
        })
    }

    fn binary(&mut self, i: usize, op: Binary) -> Result<(), String> {
        let f = self.f;
        let inst = &f.insts[i];
        let (a, b) = (inst.args[0], inst.args[1]);
        let n = numel(&inst.shape);
        let ints = self.dtype(a) == DType::Int && self.dtype(b) == DType::Int;
        if inst.dtype == DType::Int {
            let inline = matches!(
                op,
                Binary::Add | Binary::Sub | Binary::Mul | Binary::Max | Binary::Min
            );
            if !ints || !inline {
                // FloorDiv and Rem can fail (division by zero), Pow too (negative powers).
                return self.host(i);
            }
            let (pa, pb, out) = (self.buf(a), self.buf(b), self.buf(i));
            return self.flat(n, &mut |e, o| {
                let x = e.ld_i(pa, o);
                let y = e.ld_i(pb, o);
                let r = match op {
                    Binary::Add => e.b.ins().iadd(x, y),
                    Binary::Sub => e.b.ins().isub(x, y),
                    Binary::Mul => e.b.ins().imul(x, y),
                    Binary::Max => e.b.ins().smax(x, y),
                    _ => e.b.ins().smin(x, y),
                };
                e.st_i(r, out, o);
                Ok(())
            });
        }
        let (pa, pb, out) = (self.buf(a), self.buf(b), self.buf(i));
        if slice_op(f, i) {
            return self.over_slices(i, &[pa, pb]);
        }
        self.flat(n, &mut |e, o| {
            let x = e.ld_f(a, pa, o);
            let y = e.ld_f(b, pb, o);
            let r = e.fbinary(op, x, y)?;
            e.st_f(r, out, o);
            Ok(())
        })
    }

    /// Instruction `i`, a `layout::slice_op`, by its host function over the buffers of its
    /// operands `args` (the one operand twice for a unary op).
    fn over_slices(&mut self, i: usize, args: &[Value; 2]) -> Result<(), String> {
        let name = slice_shim(&self.f.insts[i].prim).ok_or("internal error: no slice shim")?;
        let out = self.buf(i);
        let n = self
            .b
            .ins()
            .iconst(types::I64, numel(&self.f.insts[i].shape) as i64);
        self.call(name, &[args[0], args[1], out, n])?;
        Ok(())
    }

    /// `interp::binary(op, x, y)`, on scalars or lane by lane on f64x2 vectors.
    fn fbinary(&mut self, op: Binary, x: Value, y: Value) -> Result<Value, String> {
        let cmp = |e: &mut Self, cc: FloatCC| {
            let c = e.b.ins().fcmp(cc, x, y);
            e.bool_f(c, x)
        };
        if let Some(cc) = float_cc(op) {
            return Ok(cmp(self, cc));
        }
        Ok(match op {
            Binary::Add => self.b.ins().fadd(x, y),
            Binary::Sub => self.b.ins().fsub(x, y),
            Binary::Mul => self.b.ins().fmul(x, y),
            Binary::Div => self.b.ins().fdiv(x, y),
            // `if x >= y || y.is_nan() { x } else { y }`, and the same with `<=`.
            Binary::Max | Binary::Min => {
                let cc = if op == Binary::Max {
                    FloatCC::GreaterThanOrEqual
                } else {
                    FloatCC::LessThanOrEqual
                };
                let c = self.b.ins().fcmp(cc, x, y);
                let nan = self.b.ins().fcmp(FloatCC::Unordered, y, y);
                let c = self.b.ins().bor(c, nan);
                self.pick(c, x, y)
            }
            Binary::And | Binary::Or => {
                let zero = self.konst(0.0, x);
                let cx = self.b.ins().fcmp(FloatCC::NotEqual, x, zero);
                let cy = self.b.ins().fcmp(FloatCC::NotEqual, y, zero);
                let c = if op == Binary::And {
                    self.b.ins().band(cx, cy)
                } else {
                    self.b.ins().bor(cx, cy)
                };
                self.bool_f(c, x)
            }
            // Pow, FloorDiv, Rem, LogAddExp (comparisons are above).
            _ => {
                let name = binary_shim(op).ok_or("internal error: no binary shim")?;
                self.call_lanes(name, &[x, y])?
            }
        })
    }

    fn select(&mut self, i: usize) -> Result<(), String> {
        let f = self.f;
        let inst = &f.insts[i];
        let (c, a, b) = (inst.args[0], inst.args[1], inst.args[2]);
        let n = numel(&inst.shape);
        let ints = self.dtype(a) == DType::Int && self.dtype(b) == DType::Int;
        if ints != (inst.dtype == DType::Int) {
            return self.host(i);
        }
        let (pc, pa, pb, out) = (self.buf(c), self.buf(a), self.buf(b), self.buf(i));
        self.flat(n, &mut |e, o| {
            let cv = e.ld_f(c, pc, o);
            let zero = e.fconst(0.0);
            // `c != 0.0`: NaN selects the first branch, as in the interpreter.
            let cond = e.b.ins().fcmp(FloatCC::NotEqual, cv, zero);
            if ints {
                let x = e.ld_i(pa, o);
                let y = e.ld_i(pb, o);
                let r = e.b.ins().select(cond, x, y);
                e.st_i(r, out, o);
            } else {
                let x = e.ld_f(a, pa, o);
                let y = e.ld_f(b, pb, o);
                let r = e.b.ins().select(cond, x, y);
                e.st_f(r, out, o);
            }
            Ok(())
        })
    }

    /// A reduction over `axes`, visiting each reduced block in row-major order of `axes`
    /// (as listed), from the interpreter's start value: sums from -0.0 (Rust's `Sum`),
    /// maxima from -inf with `Binary::Max`, minima from +inf.
    fn reduce(&mut self, i: usize, kind: Red, axes: &[usize]) -> Result<(), String> {
        let f = self.f;
        let inst = &f.insts[i];
        let x = inst.args[0];
        let from = f.insts[x].shape.clone();
        let mut seen = vec![false; from.len()];
        for a in axes {
            if *a >= from.len() || seen[*a] {
                return Err(format!("%{i}: bad reduction axes {axes:?} of {from:?}"));
            }
            seen[*a] = true;
        }
        if inst.dtype == DType::Int {
            return self.host(i);
        }
        let fs = strides(&from);
        let keep: Vec<usize> = (0..from.len()).filter(|k| !seen[*k]).collect();
        let outer: Vec<usize> = keep.iter().map(|k| from[*k]).collect();
        if inst.shape != outer {
            return Err(format!(
                "invalid IR: %{i} has shape {:?}, its reduction gives {outer:?}",
                inst.shape
            ));
        }
        let inner: Vec<usize> = axes.iter().map(|k| from[*k]).collect();
        let outer_strides = vec![keep.iter().map(|k| fs[*k]).collect(), strides(&outer)];
        let inner_strides: Vec<i64> = axes.iter().map(|k| fs[*k]).collect();
        let block = numel(&inner);
        let (src, out) = (self.buf(x), self.buf(i));
        // `math::sum`'s lanes only start at 8 entries; below, it is the plain sum inline.
        let lanes = kind == Red::Sum && block >= SUM_LANES;
        let contiguous = axes.iter().copied().eq(keep.len()..from.len());
        if lanes && contiguous {
            // Each block is a run of the source: `math::sum` reads it in place.
            let zero = self.b.ins().iconst(types::I64, 0);
            return self.nest(&outer, &outer_strides, &[zero, zero], &mut |e, o| {
                let at = e.b.ins().iadd(src, o[0]);
                let len = e.b.ins().iconst(types::I64, block as i64);
                let r = e.call1("traj_sum", &[at, len])?;
                e.st_f(r, out, o[1]);
                Ok(())
            });
        }
        if lanes
            && axes.iter().copied().eq(0..axes.len())
            && self.dtype(x) == DType::Float
            && !f.f32
        {
            // Sums over the leading axes: columns of a `[block, rest]` matrix, summed a row
            // at a time (`rowwise::column_sums_into`) rather than a column at a stride.
            let rows = self.b.ins().iconst(types::I64, block as i64);
            let cols = self.b.ins().iconst(types::I64, numel(&outer) as i64);
            self.call("traj_column_sums", &[src, out, rows, cols])?;
            return Ok(());
        }
        if kind == Red::LogSumExp && contiguous && self.dtype(x) == DType::Float && !f.f32 {
            // Each block is a row of a `[rest, block]` matrix: `exp` over many rows by one
            // `vmath` call (`rowwise::logsumexp_rows_into`).
            let rows = self.b.ins().iconst(types::I64, numel(&outer) as i64);
            let cols = self.b.ins().iconst(types::I64, block as i64);
            self.call("traj_logsumexp_rows", &[src, out, rows, cols])?;
            return Ok(());
        }
        let scratch = if kind == Red::LogSumExp || lanes {
            Some(self.scratch())
        } else {
            None
        };
        let zero = self.b.ins().iconst(types::I64, 0);
        self.nest(&outer, &outer_strides, &[zero, zero], &mut |e, o| {
            let (in_off, out_off) = (o[0], o[1]);
            let r = if let Some(s) = scratch {
                let z = e.b.ins().iconst(types::I64, 0);
                e.nest(
                    &inner,
                    &[inner_strides.clone(), strides(&inner)],
                    &[in_off, z],
                    &mut |e, o| {
                        let v = e.ld_f(x, src, o[0]);
                        let addr = e.b.ins().iadd(s, o[1]);
                        e.b.ins().store(Self::flags(), v, addr, 0);
                        Ok(())
                    },
                )?;
                let len = e.b.ins().iconst(types::I64, block as i64);
                let name = if lanes { "traj_sum" } else { "traj_logsumexp" };
                e.call1(name, &[s, len])?
            } else {
                let acc = e.b.declare_var(types::F64);
                let init = e.fconst(kind.start());
                e.b.def_var(acc, init);
                e.nest(
                    &inner,
                    std::slice::from_ref(&inner_strides),
                    &[in_off],
                    &mut |e, o| {
                        let v = e.ld_f(x, src, o[0]);
                        e.accumulate(kind, acc, v)
                    },
                )?;
                let a = e.b.use_var(acc);
                if kind == Red::Norm2 {
                    e.b.ins().sqrt(a)
                } else {
                    a
                }
            };
            e.st_f(r, out, out_off);
            Ok(())
        })
    }

    /// Float `[m,k] @ [k,n]` through `host::traj_matmul` (the interpreter's product),
    /// reading a transposed operand in place (`math::matmul_source`); ints through the
    /// host path.
    fn matmul(&mut self, i: usize) -> Result<(), String> {
        let f = self.f;
        let floats = f.insts[i]
            .args
            .iter()
            .all(|a| self.dtype(*a) == DType::Float);
        let Some(p) = product(f, i).filter(|_| self.dtype(i) == DType::Float && floats) else {
            return self.host(i);
        };
        let (m, k, n) = (p.m as i64, p.k as i64, p.n as i64);
        let (pa, pb, out) = (self.buf(p.a), self.buf(p.b), self.buf(i));
        let mut args: Vec<Value> = [m, k, n, p.a_t as i64 | (p.b_t as i64) << 1]
            .iter()
            .map(|d| self.b.ins().iconst(types::I64, *d))
            .collect();
        let relu = self.relus.get(&i).cloned();
        if let Some(r) = relu.filter(|r| self.keep_old.as_ref().is_none_or(|k| k.root != r.relu)) {
            // The ReLU and its tie count from the product's call; the product unstored.
            let out = self.buf(r.relu);
            let ptr = self.module.target_config().pointer_type();
            let bias = match r.bias {
                Some(s) => self.buf(s),
                None => self.b.ins().iconst(ptr, 0),
            };
            args.splice(0..0, [pa, pb, out]);
            args.push(bias);
            let zeros = self.call1("traj_matmul_relu", &args)?;
            let at = self.b.ins().iconst(types::I64, 0);
            for c in &r.counts {
                let total = self.buf(*c);
                self.st_f(zeros, total, at);
                self.done[*c] = true;
            }
            self.done[r.relu] = true;
            return Ok(());
        }
        args.splice(0..0, [pa, pb, out]);
        self.call("traj_matmul", &args)?;
        if self.f.f32 {
            self.flat((m * n) as usize, &mut |e, o| {
                let v = e.ld_f(i, out, o);
                e.st_f(v, out, o);
                Ok(())
            })?;
        }
        Ok(())
    }
}

impl Emitter<'_, '_, '_> {
    /// `x[idx]` along the first axis: row copies; an index out of range sends the whole
    /// instruction to the host path, which reports it.
    fn gather(&mut self, i: usize) -> Result<(), String> {
        let f = self.f;
        let inst = &f.insts[i];
        let (x, idx) = (inst.args[0], inst.args[1]);
        let xs = &f.insts[x].shape;
        if self.dtype(idx) != DType::Int || self.dtype(x) != inst.dtype {
            return self.host(i);
        }
        let n = numel(&f.insts[idx].shape);
        let inner = numel(&xs[1..]);
        let mut want = f.insts[idx].shape.clone();
        want.extend_from_slice(&xs[1..]);
        if inst.shape != want {
            return Err(format!(
                "invalid IR: %{i} has shape {:?}, gather gives {want:?}",
                inst.shape
            ));
        }
        if n == 0 || inner == 0 {
            return Ok(());
        }
        let (src, ids, out) = (self.buf(x), self.buf(idx), self.buf(i));
        let row = (inner * 8) as i64;
        let (ok, slow, exit) = (
            self.b.create_block(),
            self.b.create_block(),
            self.b.create_block(),
        );
        let lp = CountedLoop::open(self.b);
        let jv = lp.at;
        let at = self.b.ins().ishl_imm_u(jv, 3);
        let r = self.ld_i(ids, at);
        let out_of_range =
            self.b
                .ins()
                .icmp_imm_u(IntCC::UnsignedGreaterThanOrEqual, r, xs[0] as i64);
        self.b.ins().brif(out_of_range, slow, &[], ok, &[]);
        self.b.switch_to_block(ok);
        self.b.seal_block(ok);
        let from = self.b.ins().imul_imm_s(r, row);
        let to = self.b.ins().imul_imm_s(jv, row);
        let (from, to) = (self.b.ins().iadd(src, from), self.b.ins().iadd(out, to));
        self.copy_row(from, to, inner);
        lp.close_to(self.b, 1, n as i64, exit);
        self.b.switch_to_block(slow);
        self.b.seal_block(slow);
        self.host(i)?;
        self.b.ins().jump(exit, &[]);
        self.b.switch_to_block(exit);
        self.b.seal_block(exit);
        Ok(())
    }

    /// Copies `n` 8-byte elements from address `from` to `to` (not overlapping): 16-byte
    /// vectors, four to a loop iteration, then what is left (sgd's gather of 32 rows of
    /// 32, one element an iteration before: 36.8 → 36.3 µs a step).
    fn copy_row(&mut self, from: Value, to: Value, n: usize) {
        let flags = Self::vflags();
        let move_at = |e: &mut Self, ty: types::Type, off: Value, at: i32| {
            let src = e.b.ins().iadd(from, off);
            let v = e.b.ins().load(ty, flags, src, at);
            let dst = e.b.ins().iadd(to, off);
            e.b.ins().store(flags, v, dst, at);
        };
        let blocks = n / 8;
        if blocks > 0 {
            let lp = CountedLoop::open(self.b);
            for u in 0..4 {
                move_at(self, types::I64X2, lp.at, 16 * u);
            }
            lp.close(self.b, 64, 64 * blocks as i64);
        }
        let zero = self.b.ins().iconst(types::I64, 0);
        for k in (8 * blocks..n).step_by(2) {
            let ty = if k + 1 < n { types::I64X2 } else { types::I64 };
            move_at(self, ty, zero, 8 * k as i32);
        }
    }
}

/// Receives each loop root's value at one element (or f64x2 pair, when the flag says
/// vector) with its row-major byte offset in the loop, as a value and a constant
/// displacement to add to it (the unrolled lane's; give it to the store's address).
type Sink<'f, E> = dyn FnMut(&mut E, &[Value], Value, i32, bool) -> Result<(), String> + 'f;

/// Fused elementwise loops: an inline elementwise instruction computes the expression tree
/// of the fused instructions below it in one loop, in f64x2 vectors unrolled `UNROLL`
/// times when every leaf is contiguous or a broadcast scalar, else element by element.
impl Emitter<'_, '_, '_> {
    fn vflags() -> MemFlagsData {
        MemFlagsData::new().with_notrap()
    }

    /// The distinct leaves of `root`'s expression: the operands that are not fused.
    fn leaves(&self, root: usize, out: &mut Vec<usize>) {
        super::layout::leaves(self.f, &self.storage, root, out);
    }

    /// The buffer a leaf is read from and its byte strides over a loop on `shape`.
    fn leaf_access(&self, leaf: usize, shape: &[usize]) -> Result<(usize, Vec<i64>), String> {
        let inst = &self.f.insts[leaf];
        if self.storage[leaf] == Storage::Lazy {
            let src = inst.args[0];
            let st = broadcast_strides(&self.f.insts[src].shape, shape)
                .ok_or_else(|| format!("internal error: lazy broadcast %{leaf}"))?;
            return Ok((src, st));
        }
        if inst.shape != shape {
            return Err(format!(
                "invalid IR: elementwise operand %{leaf} is {:?} in a loop over {shape:?}",
                inst.shape
            ));
        }
        Ok((leaf, strides(shape)))
    }

    /// The leaves of the `roots`' expressions, where each is read (buffer, strides over
    /// `shape`), and whether `expr_loop` runs one flat vector loop over them: all floats,
    /// contiguous or scalar, at least one unrolled body long, not under `precision f32`.
    #[allow(clippy::type_complexity)]
    fn loop_leaves(
        &self,
        roots: &[usize],
        shape: &[usize],
    ) -> Result<(Vec<usize>, Vec<(usize, Vec<i64>)>, bool), String> {
        let mut leaves = Vec::new();
        for root in roots {
            self.leaves(*root, &mut leaves);
        }
        let access: Vec<(usize, Vec<i64>)> = leaves
            .iter()
            .map(|l| self.leaf_access(*l, shape))
            .collect::<Result<_, _>>()?;
        let scalar_leaf = |k: usize| numel(&self.f.insts[access[k].0].shape) == 1;
        let flat = !self.f.f32
            && numel(shape) >= 2 * UNROLL
            && (0..leaves.len()).all(|k| {
                self.dtype(access[k].0) == DType::Float
                    && (access[k].1 == strides(shape) || scalar_leaf(k))
            });
        Ok((leaves, access, flat))
    }

    /// Evaluates each root's expression (its own op over its fused operands) at every
    /// element of `shape` whose first index is in `rows` (all of them for a scalar), in
    /// row-major order, handing the values to `sink` with offsets into the whole output.
    fn expr_loop(
        &mut self,
        roots: &[usize],
        shape: &[usize],
        rows: Range<usize>,
        sink: &mut Sink<'_, Self>,
    ) -> Result<(), String> {
        let (leaves, access, vector) = self.loop_leaves(roots, shape)?;
        let bases: Vec<Value> = access.iter().map(|(b, _)| self.buf(*b)).collect();
        // The loops run over `part`, from each leaf's (and the output's) offset of row
        // `rows.start`.
        let mut part = shape.to_vec();
        if let Some(first) = part.first_mut() {
            *first = rows.len();
        }
        let n = numel(&part);
        let row_stride = |st: &[i64]| st.first().copied().unwrap_or(0);
        let mut starts: Vec<Value> = access
            .iter()
            .map(|(_, st)| rows.start as i64 * row_stride(st))
            .chain([rows.start as i64 * row_stride(&strides(shape))])
            .map(|o| self.b.ins().iconst(types::I64, o))
            .collect();
        let out = starts.pop().expect("the output's start");
        if vector {
            // One flat vector loop; broadcast scalars are splat.
            let splat: Vec<bool> = (0..leaves.len())
                .map(|k| access[k].1 != strides(shape))
                .collect();
            return self.vector_run(roots, (&leaves, &bases, &starts, &splat), n, out, sink);
        }
        starts.push(out);
        let rank = shape.len();
        let inner = shape.last().copied().unwrap_or(1);
        let by_rows = !self.f.f32
            && rank >= 2
            && inner >= 2 * UNROLL
            && (0..leaves.len()).all(|k| {
                self.dtype(access[k].0) == DType::Float && matches!(access[k].1[rank - 1], 0 | 8)
            });
        let mut st: Vec<Vec<i64>> = access.iter().map(|(_, s)| s.clone()).collect();
        st.push(strides(shape));
        if by_rows {
            // Scalar loops over the leading axes, a vector loop along the last: a leaf
            // broadcast along it is splat once per row.
            let outer: Vec<Vec<i64>> = st.iter().map(|s| s[..rank - 1].to_vec()).collect();
            let splat: Vec<bool> = (0..leaves.len())
                .map(|k| access[k].1[rank - 1] == 0)
                .collect();
            return self.nest(&part[..rank - 1], &outer, &starts, &mut |e, offs| {
                let n_leaves = leaves.len();
                e.vector_run(
                    roots,
                    (&leaves, &bases, &offs[..n_leaves], &splat),
                    inner,
                    offs[n_leaves],
                    sink,
                )
            });
        }
        self.nest(&part, &st, &starts, &mut |e, offs| {
            let at: HashMap<usize, LeafAt> = leaves
                .iter()
                .enumerate()
                .map(|(k, l)| {
                    (
                        *l,
                        LeafAt::Mem {
                            base: bases[k],
                            off: offs[k],
                            disp: 0,
                        },
                    )
                })
                .collect();
            let vs = e.nodes(roots, &at, false)?;
            sink(e, &vs, offs[leaves.len()], 0, false)
        })
    }

    /// `n` consecutive elements of the `roots`' expressions in f64x2 vectors (unrolled),
    /// then a scalar tail. Leaf k is read from `bases[k] + offs[k]` on: contiguous, or, when
    /// `splat[k]`, one value for all `n`. `sink` gets offsets from `out`.
    fn vector_run(
        &mut self,
        roots: &[usize],
        (leaves, bases, offs, splat): (&[usize], &[Value], &[Value], &[bool]),
        n: usize,
        out: Value,
        sink: &mut Sink<'_, Self>,
    ) -> Result<(), String> {
        let mut starts = Vec::new();
        let mut scalars = HashMap::new();
        let mut vsplats = HashMap::new();
        for (k, l) in leaves.iter().enumerate() {
            let at = self.b.ins().iadd(bases[k], offs[k]);
            starts.push(at);
            if splat[k] {
                // Vector runs only read float leaves.
                let x = self.b.ins().load(types::F64, Self::flags(), at, 0);
                scalars.insert(*l, x);
                let v = self.b.ins().splat(types::F64X2, x);
                vsplats.insert(*l, v);
            }
        }
        let at = |off: Value, disp: i32, vector: bool| -> HashMap<usize, LeafAt> {
            leaves
                .iter()
                .enumerate()
                .map(|(k, l)| {
                    let fixed = if vector {
                        vsplats.get(l)
                    } else {
                        scalars.get(l)
                    };
                    match fixed {
                        Some(v) => (*l, LeafAt::Splat(*v)),
                        None => (
                            *l,
                            LeafAt::Mem {
                                base: starts[k],
                                off,
                                disp,
                            },
                        ),
                    }
                })
                .collect()
        };
        let step = 2 * UNROLL;
        let main = n / step * step;
        if main > 0 {
            let lp = CountedLoop::open(self.b);
            let i = lp.at;
            let o = self.b.ins().iadd(out, i);
            for u in 0..UNROLL {
                let disp = (u * 16) as i32;
                let vs = self.nodes(roots, &at(i, disp, true), true)?;
                sink(self, &vs, o, disp, true)?;
            }
            lp.close(self.b, (step * 8) as i64, (main * 8) as i64);
        }
        // The tail, element by element.
        for j in main..n {
            let off = self.b.ins().iconst(types::I64, (j * 8) as i64);
            let vs = self.nodes(roots, &at(off, 0, false), false)?;
            let o = self.b.ins().iadd(out, off);
            sink(self, &vs, o, 0, false)?;
        }
        Ok(())
    }

    /// The value of each of `roots` at the loop's current element (`node`, sharing what
    /// they have in common).
    fn nodes(
        &mut self,
        roots: &[usize],
        at: &HashMap<usize, LeafAt>,
        vector: bool,
    ) -> Result<Vec<Value>, String> {
        let mut memo = HashMap::new();
        roots
            .iter()
            .map(|r| match self.comparison(*r, at) {
                Some((cc, x, y)) if vector && self.masked.contains(r) => {
                    let x = self.node(x, at, &mut memo, vector)?;
                    let y = match y {
                        Some(y) => self.node(y, at, &mut memo, vector)?,
                        None => self.konst(0.0, x),
                    };
                    Ok(self.b.ins().fcmp(cc, x, y))
                }
                _ => self.node(*r, at, &mut memo, vector),
            })
            .collect()
    }

    /// The value of `v` at the loop's current element: a leaf's load, or its op applied
    /// to its operands' values (memoized, so a shared operand is computed once).
    fn node(
        &mut self,
        v: usize,
        at: &HashMap<usize, LeafAt>,
        memo: &mut HashMap<usize, Value>,
        vector: bool,
    ) -> Result<Value, String> {
        if let Some(x) = memo.get(&v) {
            return Ok(*x);
        }
        let value = match at.get(&v) {
            Some(LeafAt::Splat(x)) => *x,
            Some(LeafAt::Mem { base, off, disp }) => {
                if vector {
                    let addr = self.b.ins().iadd(*base, *off);
                    self.b.ins().load(types::F64X2, Self::vflags(), addr, *disp)
                } else {
                    let at = self.b.ins().iadd_imm_s(*off, *disp as i64);
                    self.ld_f(v, *base, at)
                }
            }
            None if self.f.insts[v].prim == Prim::Select => {
                // The condition's lane mask straight from its comparison when that is
                // computed here: `c != 0.0` of a comparison's 1.0/0.0 is the comparison.
                let args = self.f.insts[v].args.clone();
                let cond = match self.comparison(args[0], at) {
                    Some((cc, x, y)) => {
                        let x = self.node(x, at, memo, vector)?;
                        let y = match y {
                            Some(y) => self.node(y, at, memo, vector)?,
                            None => self.konst(0.0, x),
                        };
                        self.b.ins().fcmp(cc, x, y)
                    }
                    None => {
                        let c = self.node(args[0], at, memo, vector)?;
                        let zero = self.konst(0.0, c);
                        // `c != 0.0`: NaN selects the first branch, as in the interpreter.
                        self.b.ins().fcmp(FloatCC::NotEqual, c, zero)
                    }
                };
                let a = self.node(args[1], at, memo, vector)?;
                let b = self.node(args[2], at, memo, vector)?;
                let r = self.pick(cond, a, b);
                if vector { r } else { self.round(r) }
            }
            None => {
                let args: Vec<Value> = self.f.insts[v]
                    .args
                    .clone()
                    .iter()
                    .map(|a| self.node(*a, at, memo, vector))
                    .collect::<Result<_, _>>()?;
                let r = self.op(v, &args)?;
                // Vector loops never run under `precision f32`.
                if vector { r } else { self.round(r) }
            }
        };
        memo.insert(v, value);
        Ok(value)
    }

    /// When `c` is a comparison computed in this loop (not a leaf read from memory), its
    /// condition code and operands (`None`: the constant 0.0 of `not`).
    fn comparison(
        &self,
        c: usize,
        at: &HashMap<usize, LeafAt>,
    ) -> Option<(FloatCC, usize, Option<usize>)> {
        let inst = &self.f.insts[c];
        if at.contains_key(&c) || inst.args.iter().any(|a| self.dtype(*a) != DType::Float) {
            return None;
        }
        match inst.prim {
            Prim::Binary(op) => Some((float_cc(op)?, inst.args[0], Some(inst.args[1]))),
            Prim::Unary(Unary::Not) => Some((FloatCC::Equal, inst.args[0], None)),
            _ => None,
        }
    }

    /// Whether every entry of `v` is a constant that is not NaN (a broadcast of one too).
    fn never_nan(&self, v: usize) -> bool {
        let inst = &self.f.insts[v];
        match &inst.prim {
            Prim::Const(crate::tensor::Tensor::Float(a)) => a.iter().all(|x| !x.is_nan()),
            Prim::Broadcast(_) => self.never_nan(inst.args[0]),
            _ => false,
        }
    }

    /// Rounds through f32 under `precision f32`.
    fn round(&mut self, x: Value) -> Value {
        if self.f.f32 {
            let s = self.b.ins().fdemote(types::F32, x);
            self.b.ins().fpromote(types::F64, s)
        } else {
            x
        }
    }

    /// `interp::unary(op, x)` on a float, or lane by lane on an f64x2 vector.
    fn funary(&mut self, op: Unary, x: Value) -> Result<Value, String> {
        Ok(match op {
            Unary::Neg => self.b.ins().fneg(x),
            Unary::Sign => {
                let zero = self.konst(0.0, x);
                let (one, m1) = (self.konst(1.0, x), self.konst(-1.0, x));
                let gt = self.b.ins().fcmp(FloatCC::GreaterThan, x, zero);
                let lt = self.b.ins().fcmp(FloatCC::LessThan, x, zero);
                let neg = self.pick(lt, m1, zero);
                self.pick(gt, one, neg)
            }
            Unary::Not => {
                let zero = self.konst(0.0, x);
                let c = self.b.ins().fcmp(FloatCC::Equal, x, zero);
                self.bool_f(c, x)
            }
            Unary::StopGrad | Unary::ToFloat => x,
            // IEEE sqrt is correctly rounded, as is `libm::sqrt`.
            Unary::Sqrt => self.b.ins().sqrt(x),
            _ => {
                let name = unary_shim(op).ok_or("internal error: no unary shim")?;
                self.call_lanes(name, &[x])?
            }
        })
    }

    /// Instruction `v`'s op (what `interp::unary`/`binary`/select do) on scalar floats or
    /// f64x2 vectors.
    fn op(&mut self, v: usize, args: &[Value]) -> Result<Value, String> {
        let inst = &self.f.insts[v];
        Ok(match inst.prim {
            Prim::Unary(op) => self.funary(op, args[0])?,
            // `max(x, c)` and `min(x, c)` with a constant `c` that is not NaN (a ReLU's
            // 0.0): `x >= c` alone decides, and the mask goes straight to the blend.
            Prim::Binary(op @ (Binary::Max | Binary::Min)) if self.never_nan(inst.args[1]) => {
                let cc = if op == Binary::Max {
                    FloatCC::GreaterThanOrEqual
                } else {
                    FloatCC::LessThanOrEqual
                };
                let c = self.b.ins().fcmp(cc, args[0], args[1]);
                self.pick(c, args[0], args[1])
            }
            Prim::Binary(op) => self.fbinary(op, args[0], args[1])?,
            Prim::Select => {
                let zero = self.konst(0.0, args[0]);
                // `c != 0.0`: NaN selects the first branch, as in the interpreter.
                let cond = self.b.ins().fcmp(FloatCC::NotEqual, args[0], zero);
                self.pick(cond, args[1], args[2])
            }
            _ => return Err(format!("internal error: %{v} is not elementwise")),
        })
    }

    /// An inline float elementwise instruction (with what is fused into it) into its
    /// buffer; the flag counts `siblings` assigns it are counted in the same loop. Over
    /// [`PARALLEL_LOOP`] entries or more, in two halves, one a core.
    fn elementwise(&mut self, i: usize) -> Result<(), String> {
        let shape = self.f.insts[i].shape.clone();
        let counts = self.siblings.get(&i).cloned().unwrap_or_default();
        for c in &counts {
            self.done[*c] = true;
        }
        let rows = all_rows(&shape);
        if numel(&shape) >= self.halves_from && rows.len() >= 2 {
            return self.elementwise_in_halves(i, &counts, rows);
        }
        if let Some((r, _)) = column_sum(self.f, &self.storage, i)
            && self.rows_of_vectors(i, &counts)?
        {
            return self.elementwise_with_column_sum(i, &counts, r);
        }
        let totals = self.elementwise_rows(i, &counts, rows)?;
        let zero = self.b.ins().iconst(types::I64, 0);
        for (c, total) in counts.iter().zip(totals) {
            let out = self.buf(*c);
            self.st_f(total, out, zero);
        }
        Ok(())
    }

    /// Instruction `i`'s loop over the entries whose first index is in `rows`; returns its
    /// `counts`' sums over them. It also stores the old values of `keep_old`'s input over
    /// these rows when `i` is its root.
    fn elementwise_rows(
        &mut self,
        i: usize,
        counts: &[usize],
        rows: Range<usize>,
    ) -> Result<Vec<Value>, String> {
        let shape = self.f.insts[i].shape.clone();
        let out = self.buf(i);
        let mut roots = vec![i];
        roots.extend(counts.iter().map(|c| self.f.insts[*c].args[0]));
        let keep_into = match &self.keep_old {
            Some(k) if k.root == i => {
                let (leaves, access, _) = self.loop_leaves(&roots, &shape)?;
                let at = leaves.iter().position(|l| *l == k.input);
                let read_whole = at.is_some_and(|a| {
                    access[a] == (k.input, strides(&shape))
                        && self.dtype(k.input) == DType::Float
                        && self.storage[k.input] == Storage::Own
                });
                (read_whole && !self.f.f32).then_some((k.input, k.into))
            }
            _ => None,
        };
        let mut accs = self.counts(&roots[1..]);
        if let Some((input, _)) = keep_into {
            roots.push(input);
        }
        self.expr_loop(&roots, &shape, rows, &mut |e, vs, off, disp, vector| {
            let addr = e.b.ins().iadd(out, off);
            let flags = if vector {
                Self::vflags()
            } else {
                Self::flags()
            };
            e.b.ins().store(flags, vs[0], addr, disp);
            if let Some((_, into)) = keep_into {
                let at = e.b.ins().iadd(into, off);
                e.b.ins().store(flags, vs[vs.len() - 1], at, disp);
            }
            e.add_counts(&mut accs, &vs[1..], vector);
            Ok(())
        })?;
        if let (Some(_), Some(k)) = (keep_into, self.keep_old.as_deref_mut()) {
            k.stored = true;
        }
        Ok(self.count_totals(&accs))
    }

    /// Whether `i`'s loop (with its `counts`) can run a row at a time in vectors: every
    /// leaf a float read along the row or one value a row.
    fn rows_of_vectors(&self, i: usize, counts: &[usize]) -> Result<bool, String> {
        let shape = &self.f.insts[i].shape;
        let mut roots = vec![i];
        roots.extend(counts.iter().map(|c| self.f.insts[*c].args[0]));
        let (_, access, _) = self.loop_leaves(&roots, shape)?;
        Ok(access
            .iter()
            .all(|(l, st)| self.dtype(*l) == DType::Float && matches!(st.last(), Some(0 | 8))))
    }

    /// Instruction `i`'s loop a row at a time, each row also added into the lanes of the
    /// column sum `r` (`layout::column_sum`) in the scratch buffer: row `r` into lane `r mod
    /// 8`, the last `rows mod 8` rows each into a slot of its own; `traj_column_lanes`
    /// then combines them as `rowwise::column_sums_into` would have over the stored
    /// matrix, bit for bit. Its counts as in `elementwise`.
    fn elementwise_with_column_sum(
        &mut self,
        i: usize,
        counts: &[usize],
        r: usize,
    ) -> Result<(), String> {
        let shape = self.f.insts[i].shape.clone();
        let (rows, cols) = (shape[0], shape[1]);
        let main = rows / SUM_LANES * SUM_LANES;
        let tail = rows - main;
        let row_bytes = (cols * 8) as i64;
        let lanes = self.scratch();
        let zero = self.b.ins().iconst(types::I64, 0);
        let minus_zero = self.fconst(-0.0);
        self.flat((SUM_LANES + tail) * cols, &mut |e, o| {
            let at = e.b.ins().iadd(lanes, o);
            e.b.ins().store(Self::flags(), minus_zero, at, 0);
            Ok(())
        })?;
        let out = self.buf(i);
        let mut roots = vec![i];
        roots.extend(counts.iter().map(|c| self.f.insts[*c].args[0]));
        let (leaves, access, _) = self.loop_leaves(&roots, &shape)?;
        let bases: Vec<Value> = access.iter().map(|(b, _)| self.buf(*b)).collect();
        let splat: Vec<bool> = access.iter().map(|(_, st)| st[1] == 0).collect();
        let mut accs = self.counts(&roots[1..]);
        // The lane row's address minus the output row's offset, set at each row.
        let lane_at = self.b.declare_var(types::I64);
        self.b.def_var(lane_at, zero);
        let n_leaves = leaves.len();
        let mut row = |e: &mut Self, offs: &[Value]| -> Result<(), String> {
            let (row_out, lane_row) = (offs[n_leaves], offs[n_leaves + 1]);
            let base = e.b.ins().iadd(lanes, lane_row);
            let at = e.b.ins().isub(base, row_out);
            e.b.def_var(lane_at, at);
            e.vector_run(
                &roots,
                (&leaves, &bases, &offs[..n_leaves], &splat),
                cols,
                row_out,
                &mut |e, vs, off, disp, vector| {
                    let flags = if vector {
                        Self::vflags()
                    } else {
                        Self::flags()
                    };
                    let addr = e.b.ins().iadd(out, off);
                    e.b.ins().store(flags, vs[0], addr, disp);
                    let lane = e.b.use_var(lane_at);
                    let lane = e.b.ins().iadd(lane, off);
                    let ty = e.b.func.dfg.value_type(vs[0]);
                    let sum = e.b.ins().load(ty, flags, lane, disp);
                    let sum = e.b.ins().fadd(sum, vs[0]);
                    e.b.ins().store(flags, sum, lane, disp);
                    e.add_counts(&mut accs, &vs[1..], vector);
                    Ok(())
                },
            )
        };
        // The rows before the last `rows mod 8`: blocks of eight, row k of a block into
        // lane k; then the last rows, each into its own slot after the lanes.
        let row_strides: Vec<i64> = access.iter().map(|(_, st)| st[0]).collect();
        let lanes_row = SUM_LANES as i64;
        let mut block: Vec<Vec<i64>> = row_strides
            .iter()
            .map(|s| vec![lanes_row * s, *s])
            .collect();
        block.push(vec![lanes_row * row_bytes, row_bytes]);
        block.push(vec![0, row_bytes]);
        let starts = vec![zero; n_leaves + 2];
        self.nest(&[main / SUM_LANES, SUM_LANES], &block, &starts, &mut row)?;
        if tail > 0 {
            let mut last: Vec<Vec<i64>> = row_strides.iter().map(|s| vec![*s]).collect();
            last.push(vec![row_bytes]);
            last.push(vec![row_bytes]);
            let starts: Vec<Value> = row_strides
                .iter()
                .map(|s| main as i64 * s)
                .chain([main as i64 * row_bytes, lanes_row * row_bytes])
                .map(|o| self.b.ins().iconst(types::I64, o))
                .collect();
            self.nest(&[tail], &last, &starts, &mut row)?;
        }
        let sums = self.buf(r);
        let (tail_rows, n_cols) = (
            self.b.ins().iconst(types::I64, tail as i64),
            self.b.ins().iconst(types::I64, cols as i64),
        );
        self.call("traj_column_lanes", &[lanes, sums, tail_rows, n_cols])?;
        self.done[r] = true;
        let totals = self.count_totals(&accs);
        for (c, total) in counts.iter().zip(totals) {
            let out = self.buf(*c);
            self.st_f(total, out, zero);
        }
        Ok(())
    }

    /// Instruction `i`'s loop as two functions, one for each half of its `rows` (split
    /// where the shape alone says), run by `traj_halves` one a core (`cores::join`); each
    /// half's counts are added after both are done. Every entry is computed as in one
    /// loop, and the counts are sums of 0/1 flags, exact in any order: the same bits.
    /// Each half stores the old values of `keep_old`'s input over its rows (at the
    /// address the caller leaves after the half's totals), as one loop would.
    fn elementwise_in_halves(
        &mut self,
        i: usize,
        counts: &[usize],
        rows: Range<usize>,
    ) -> Result<(), String> {
        let ptr = self.module.target_config().pointer_type();
        let mid = rows.start + rows.len() / 2;
        let mut halves = Vec::new();
        let keep = self
            .keep_old
            .as_deref()
            .filter(|k| k.root == i)
            .map(|k| (k.input, k.into));
        let n = counts.len();
        let mut kept = false;
        for half in [rows.start..mid, mid..rows.end] {
            // fn(totals: *mut f64, bufs: *const *mut u8): the half's loop, its counts'
            // sums into `totals` (then the old values' address, read); `bufs` is this
            // function's buffer table, if it has one.
            let mut sig = self.module.make_signature();
            sig.params.extend([AbiParam::new(ptr); 2]);
            let id = self
                .module
                .declare_anonymous_function(&sig)
                .map_err(|e| format!("internal error: cannot declare a loop half: {e}"))?;
            let mut func =
                ir::Function::with_name_signature(ir::UserFuncName::user(0, id.as_u32()), sig);
            let mut fbc = FunctionBuilderContext::new();
            let mut b = FunctionBuilder::new(&mut func, &mut fbc);
            let entry = b.create_block();
            b.append_block_params_for_function_params(entry);
            b.switch_to_block(entry);
            let (totals_at, table) = (b.block_params(entry)[0], b.block_params(entry)[1]);
            let bufs = match self.bufs {
                Bufs::Table(_) => Bufs::Table(table),
                fixed => fixed,
            };
            // Elementwise loops call no host op, which alone reads the context.
            let no_ctx = b.ins().iconst(ptr, 0);
            let mut refs = HashMap::new();
            let mut keep_old = keep.map(|(input, _)| KeepOld {
                root: i,
                input,
                into: b.ins().load(ptr, Self::flags(), totals_at, (8 * n) as i32),
                stored: false,
            });
            let mut e = Emitter {
                b: &mut b,
                module: self.module,
                shims: self.shims,
                refs: &mut refs,
                helpers: self.helpers,
                f: self.f,
                bufs,
                ctx: no_ctx,
                err: None,
                storage: self.storage.clone(),
                siblings: self.siblings.clone(),
                relus: HashMap::new(),
                halves_from: self.halves_from,
                done: self.done.clone(),
                keep_old: keep_old.as_mut(),
                masked: Vec::new(),
            };
            let totals = e.elementwise_rows(i, counts, half)?;
            for (k, total) in totals.into_iter().enumerate() {
                e.b.ins()
                    .store(Self::flags(), total, totals_at, (8 * k) as i32);
            }
            e.b.ins().return_(&[]);
            kept = keep_old.is_some_and(|k| k.stored);
            b.seal_all_blocks();
            b.finalize(self.module.target_config());
            self.helpers.push((id, func));
            let r = self.module.declare_func_in_func(id, self.b.func);
            halves.push(self.b.ins().func_addr(ptr, r));
        }
        // Each half's totals, then the address of the old values.
        let slot = self.b.create_sized_stack_slot(ir::StackSlotData::new(
            ir::StackSlotKind::ExplicitSlot,
            (16 * (n + 1)) as u32,
            3,
        ));
        let totals = [0, 8 * (n + 1)].map(|o| self.b.ins().stack_addr(ptr, slot, o as i32));
        if let Some((_, into)) = keep {
            for t in totals {
                self.b.ins().store(Self::flags(), into, t, (8 * n) as i32);
            }
        }
        let table = match self.bufs {
            Bufs::Table(t) => t,
            Bufs::Fixed(_) => self.b.ins().iconst(ptr, 0),
        };
        self.call(
            "traj_halves",
            &[halves[0], totals[0], halves[1], totals[1], table],
        )?;
        if let Some(k) = self.keep_old.as_deref_mut().filter(|_| kept) {
            k.stored = true;
        }
        let zero = self.b.ins().iconst(types::I64, 0);
        for (k, c) in counts.iter().enumerate() {
            let [a, b] = totals.map(|t| {
                self.b
                    .ins()
                    .load(types::F64, Self::flags(), t, (8 * k) as i32)
            });
            let total = self.b.ins().fadd(a, b);
            let out = self.buf(*c);
            self.st_f(total, out, zero);
        }
        Ok(())
    }

    /// A scalar accumulator starting at `start`.
    fn accumulator(&mut self, start: f64) -> Variable {
        let acc = self.b.declare_var(types::F64);
        let init = self.fconst(start);
        self.b.def_var(acc, init);
        acc
    }

    /// `UNROLL` f64x2 accumulators of a sum's lanes, each starting at -0.0.
    fn lane_accumulators(&mut self) -> Vec<Variable> {
        let minus_zero = self.fconst(-0.0);
        let vinit = self.b.ins().splat(types::F64X2, minus_zero);
        (0..UNROLL)
            .map(|_| {
                let var = self.b.declare_var(types::F64X2);
                self.b.def_var(var, vinit);
                var
            })
            .collect()
    }

    /// The accumulators of the flag counts whose expressions are `roots`, in a loop about
    /// to be emitted; the comparisons among them are counted from their lane masks.
    fn counts(&mut self, roots: &[usize]) -> Counts {
        self.masked = roots
            .iter()
            .copied()
            .filter(|r| self.comparison(*r, &HashMap::new()).is_some())
            .collect();
        let each = roots
            .iter()
            .map(|r| {
                let masks = self.masked.contains(r);
                let lanes = if masks {
                    self.mask_accumulators()
                } else {
                    self.lane_accumulators()
                };
                (self.accumulator(-0.0), lanes, masks)
            })
            .collect();
        Counts { each, turn: 0 }
    }

    /// The counts' values at one element (or f64x2 pair, lane masks for comparisons) added
    /// into their accumulators.
    fn add_counts(&mut self, counts: &mut Counts, vs: &[Value], vector: bool) {
        for ((acc, lanes, masks), v) in counts.each.iter().zip(vs) {
            let var = if vector {
                lanes[counts.turn % UNROLL]
            } else {
                *acc
            };
            let a = self.b.use_var(var);
            let sum = if vector && *masks {
                // A true lane's mask is -1.
                self.b.ins().isub(a, *v)
            } else {
                self.b.ins().fadd(a, *v)
            };
            self.b.def_var(var, sum);
        }
        counts.turn += vector as usize;
    }

    /// Each count's total: its lanes combined into its scalar sum.
    fn count_totals(&mut self, counts: &Counts) -> Vec<Value> {
        self.masked.clear();
        counts
            .each
            .iter()
            .map(|(acc, lanes, masks)| {
                if *masks {
                    self.combine_mask_lanes(*acc, lanes, counts.turn > 0);
                } else {
                    self.combine_lanes(*acc, lanes);
                }
                self.b.use_var(*acc)
            })
            .collect()
    }

    /// `UNROLL` i64x2 counters of a count's lanes, each starting at 0.
    fn mask_accumulators(&mut self) -> Vec<Variable> {
        let zero = self.b.ins().iconst(types::I64, 0);
        let vinit = self.b.ins().splat(types::I64X2, zero);
        (0..UNROLL)
            .map(|_| {
                let var = self.b.declare_var(types::I64X2);
                self.b.def_var(var, vinit);
                var
            })
            .collect()
    }

    /// `acc += ` the lanes' count as a float, when the loop had vector entries (`used`).
    /// The same bits as `combine_lanes` on float lanes of 1.0/0.0 flags: every partial sum
    /// is an integer below 2^53 (no value has more than 2^40 entries), so exact, and a
    /// zero count is +0.0 there too once a vector entry was added; without one, those
    /// lanes held -0.0, which leaves `acc` as it is.
    fn combine_mask_lanes(&mut self, acc: Variable, lanes: &[Variable], used: bool) {
        if !used {
            return;
        }
        let [v0, v1, v2, v3] = [0, 1, 2, 3].map(|k| self.b.use_var(lanes[k]));
        let a = self.b.ins().iadd(v0, v1);
        let b = self.b.ins().iadd(v2, v3);
        let t = self.b.ins().iadd(a, b);
        let (l0, l1) = (
            self.b.ins().extractlane(t, 0),
            self.b.ins().extractlane(t, 1),
        );
        let n = self.b.ins().iadd(l0, l1);
        let x = self.b.ins().fcvt_from_sint(types::F64, n);
        let r = self.b.use_var(acc);
        let r = self.b.ins().fadd(r, x);
        self.b.def_var(acc, r);
    }

    /// One scalar entry `x` into the accumulator of a sum, sum of squares, max or min.
    fn accumulate(&mut self, kind: Red, acc: Variable, x: Value) -> Result<(), String> {
        let a = self.b.use_var(acc);
        let r = match kind {
            Red::Sum => self.b.ins().fadd(a, x),
            Red::Norm2 => {
                let sq = self.b.ins().fmul(x, x);
                self.b.ins().fadd(a, sq)
            }
            Red::Max => self.fbinary(Binary::Max, a, x)?,
            _ => self.fbinary(Binary::Min, a, x)?,
        };
        self.b.def_var(acc, r);
        Ok(())
    }

    /// `acc += lane 0 + lane 1` of `(v0 + v1) + (v2 + v3)`: `math::sum`'s combination of
    /// its eight lanes, held as four f64x2.
    fn combine_lanes(&mut self, acc: Variable, vacc: &[Variable]) {
        let [v0, v1, v2, v3] = [0, 1, 2, 3].map(|k| self.b.use_var(vacc[k]));
        let a = self.b.ins().fadd(v0, v1);
        let b = self.b.ins().fadd(v2, v3);
        let t = self.b.ins().fadd(a, b);
        let mut r = self.b.use_var(acc);
        for l in 0..2u8 {
            let x = self.b.ins().extractlane(t, l);
            r = self.b.ins().fadd(r, x);
        }
        self.b.def_var(acc, r);
    }

    /// A full reduction of a fused expression, in one loop, as `math::sum` or `reduce`
    /// computes it (see below); a sum of comparison flags (0.0 or 1.0, exact in any order)
    /// uses one accumulator per vector lane and unroll in any loop.
    fn fused_reduction(&mut self, i: usize) -> Result<(), String> {
        const _: () = assert!(2 * UNROLL == SUM_LANES);
        let f = self.f;
        let inst = &f.insts[i];
        let x = inst.args[0];
        let kind = match inst.prim {
            Prim::ReduceSum(_) => Red::Sum,
            Prim::ReduceMax(_) => Red::Max,
            Prim::ReduceMin(_) => Red::Min,
            _ => Red::Norm2,
        };
        // Sums of 0/1 flags are exact in any order.
        let flags = flag_count(f, &self.storage, i);
        let shape = f.insts[x].shape.clone();
        let n = numel(&shape);
        let (_, _, flat) = self.loop_leaves(&[x], &shape)?;
        // A sum follows `math::sum`: in the flat loop, unrolled slot `u` accumulates lanes
        // `2u, 2u+1` in one f64x2, and the lanes are combined before the scalar tail. In
        // any other loop, the entries go to the scratch buffer for `math::sum` itself.
        let lanes = kind == Red::Sum && (flat || flags);
        let via_scratch = kind == Red::Sum && !lanes && n >= SUM_LANES;
        let scratch = if via_scratch {
            Some(self.scratch())
        } else {
            None
        };
        // A count's lanes (comparisons by their masks), or a sum's f64x2 lanes.
        let mut counts = if flags {
            self.counts(&[x])
        } else {
            let (acc, lanes) = (self.accumulator(kind.start()), self.lane_accumulators());
            Counts {
                each: vec![(acc, lanes, false)],
                turn: 0,
            }
        };
        let acc = counts.each[0].0;
        let mut combined = false;
        self.expr_loop(
            &[x],
            &shape,
            all_rows(&shape),
            &mut |e, vs, o, disp, vector| {
                let v = vs[0];
                if let Some(s) = scratch {
                    let addr = e.b.ins().iadd(s, o);
                    e.b.ins().store(Self::vflags(), v, addr, disp);
                    return Ok(());
                }
                if vector && lanes {
                    e.add_counts(&mut counts, vs, true);
                    return Ok(());
                }
                if flat && lanes && !combined {
                    // The flat loop's scalar tail follows its vector body once.
                    e.count_totals(&counts);
                    combined = true;
                }
                let xs: Vec<Value> = if vector {
                    (0..2u8).map(|l| e.b.ins().extractlane(v, l)).collect()
                } else {
                    vec![v]
                };
                for x in xs {
                    e.accumulate(kind, acc, x)?;
                }
                Ok(())
            },
        )?;
        if lanes && !combined {
            self.count_totals(&counts);
        }
        let mut r = self.b.use_var(acc);
        if let Some(s) = scratch {
            let len = self.b.ins().iconst(types::I64, n as i64);
            r = self.call1("traj_sum", &[s, len])?;
        }
        if kind == Red::Norm2 {
            r = self.b.ins().sqrt(r);
        }
        let out = self.buf(i);
        let zero = self.b.ins().iconst(types::I64, 0);
        self.st_f(r, out, zero);
        Ok(())
    }
}
