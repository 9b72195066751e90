//! The Cranelift backend. `train_loop` compiles a plan's whole step loop into one native
//! function; `compile` compiles one IR `Func` (used at rows for record, stop and
//! Hessian-vector functions, and by the tests). Both agree bit for bit with `interp`.
//!
//! # Design
//! - **Buffers.** Every shape is static, so buffers of 8-byte elements (f64 or i64 bits,
//!   row-major) are planned at compile time (`plan`, following `layout`): one per
//!   instruction that owns one (an elementwise loop writing over the buffer of an operand
//!   nothing reads later, `layout::in_place`, shares it), views into their source for
//!   reshapes and contiguous slices, none for lazy and fused values, plus one scratch
//!   buffer. Const buffers are filled at compile time; nothing is allocated while code
//!   runs. The loop plans some outputs straight into their slots
//!   (`train_loop::outputs_in_slots`).
//! - **Code.** `emit` computes every instruction in order: fused elementwise trees in
//!   f64x2 loops unrolled 4×, broadcasts, transposes, slices, pads and float reductions
//!   as inline bottom-tested loops with static strides; `exp`, `log`, `log1p`, `tanh`,
//!   `sigmoid`, `softplus`, `sin`, `cos`, `logaddexp` and `pow` over whole buffers by the
//!   interpreter's vectorized `kernels::vmath` (`layout::slice_op`); the others, and all of
//!   these under `precision f32`, as calls to the interpreter's own scalar functions
//!   (`host`);
//!   float matmul through the interpreter's GEMM (`kernels::math::matmul_into`);
//!   everything else (scatter, concat, argmax, random draws, observables, int division
//!   and powers, int reductions) through `host::traj_host_op`, which runs the interpreter
//!   on that one instruction (a draw: `interp::draw_values` alone). Every `Func`
//!   therefore compiles.
//! - **Cores.** Elementwise loops over [`PARALLEL_LOOP`] entries or more run in two
//!   halves of their rows, one a core (`cores::join`), as products do in
//!   `kernels::math::matmul_into`, and `vmath` ops from 2^15 entries (`host::in_halves`);
//!   so do a param's update loops of any size when its gradient is a product
//!   `small_gemm` splits by rows (`train_loop::gradient_split_by_rows`: each core then
//!   updates the rows it computed). Each entry is computed as in one loop, and the
//!   halves' counts are added exactly, so the bits do not depend on the split.
//! - **Fused ReLU.** `max(p (+ bias), 0)` of a small product `p` nothing else reads, and
//!   its tie count, come out of the product's call (`layout::relus_after_products`,
//!   `kernels::math::matmul_relu_into`): no loop over the stored product.
//! - **Agreement.** Inline float code does what `interp::unary`/`interp::binary` do
//!   (`Max` keeps `a` when `a >= b || b.is_nan()`, comparisons give 1.0/0.0),
//!   reductions accumulate in the interpreter's order (each block in row-major order of
//!   the listed axes; float sums in `math::sum`'s eight lanes, which the flat vector loop
//!   holds as four f64x2 accumulators, other loops calling `math::sum` itself on the
//!   block; counts of 0/1 flags, exact in any order, may be counted in an earlier loop
//!   over the same operands, `layout::counts_in_loops`), and under `precision f32` every
//!   float result
//!   is rounded through f32 as the interpreter rounds it.
//! - **Errors.** Malformed IR is refused by `compile`; a failing host op (an int division
//!   by zero, an index out of range) makes `run` return `Err` naming the instruction.

mod emit;
pub mod flow_loop;
pub use emit::PARALLEL_LOOP;
mod host;
pub mod layout;
mod rowwise;
pub mod train_loop;

use std::cell::RefCell;
use std::collections::HashMap;

use cranelift_codegen::ir::{AbiParam, Function, Signature, types};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{FuncId, Linkage, Module, default_libcall_names};

use crate::ir::types::DType;
use crate::ir::{Func, Prim};
use crate::tensor::Tensor;
use host::{HostCtx, Sig};
use layout::Storage;

/// The native entry point: `bufs` is the buffer table, `ctx` a `host::HostCtx`.
type Entry = unsafe extern "C" fn(*const *mut u8, *mut u8) -> i64;

/// The planned buffers: owned by `data`, used only through `ptrs` (which never move).
struct Buffers {
    _data: Vec<Box<[u64]>>,
    ptrs: Vec<*mut u8>,
}

/// A `Func` compiled to native code, with its buffers.
pub struct Compiled {
    module: Option<JITModule>,
    entry: Entry,
    func: Func,
    buffers: RefCell<Buffers>,
}

impl Drop for Compiled {
    fn drop(&mut self) {
        if let Some(m) = self.module.take() {
            // SAFETY: `entry` points into this module and dies with `self`; nothing else
            // holds a pointer to its code.
            unsafe { m.free_memory() };
        }
    }
}

/// A module with every host function registered and declared.
fn new_module() -> Result<(JITModule, HashMap<&'static str, FuncId>), String> {
    let verify = if cfg!(debug_assertions) {
        "true"
    } else {
        "false"
    };
    let mut jb = JITBuilder::with_flags(
        &[("opt_level", "speed"), ("enable_verifier", verify)],
        default_libcall_names(),
    )
    .map_err(|e| format!("cannot start the JIT: {e}"))?;
    let syms = host::symbols();
    for (name, ptr, _) in &syms {
        jb.symbol(*name, *ptr);
    }
    let mut module = JITModule::new(jb);
    let ptr = module.target_config().pointer_type();
    // A product's operands, its shape and layout, then a ReLU's bias.
    let product = [
        ptr,
        ptr,
        ptr,
        types::I64,
        types::I64,
        types::I64,
        types::I64,
        ptr,
    ];
    let mut ids = HashMap::new();
    for (name, _, sig) in syms {
        let mut s = module.make_signature();
        let (params, ret): (&[types::Type], Option<types::Type>) = match sig {
            Sig::Unary => (&[types::F64], Some(types::F64)),
            Sig::Binary => (&[types::F64, types::F64], Some(types::F64)),
            Sig::Block => (&[ptr, types::I64], Some(types::F64)),
            Sig::MatMul => (&product[..7], None),
            Sig::MatMulRelu => (&product[..], Some(types::F64)),
            Sig::HostOp => (&[ptr, types::I64], Some(types::I64)),
            Sig::Ctx => (&[ptr], None),
            Sig::Slices => (&[ptr, ptr, ptr, types::I64], None),
            Sig::Halves => (&[ptr; 5], None),
            Sig::Columns => (&[ptr, ptr, types::I64, types::I64], None),
        };
        s.params.extend(params.iter().map(|t| AbiParam::new(*t)));
        s.returns.extend(ret.map(AbiParam::new));
        let id = module
            .declare_function(name, Linkage::Import, &s)
            .map_err(|e| format!("cannot declare {name}: {e}"))?;
        ids.insert(name, id);
    }
    Ok((module, ids))
}

fn entry_signature(module: &JITModule) -> Signature {
    let ptr = module.target_config().pointer_type();
    let mut sig = module.make_signature();
    sig.params.push(AbiParam::new(ptr));
    sig.params.push(AbiParam::new(ptr));
    sig.returns.push(AbiParam::new(types::I64));
    sig
}

/// Checks `f` and builds its CLIF function in `module`, with the functions it calls.
#[allow(clippy::type_complexity)]
fn lower(
    module: &mut JITModule,
    ids: &HashMap<&'static str, FuncId>,
    f: &Func,
) -> Result<(Function, Vec<(FuncId, Function)>), String> {
    crate::ir::verify(f).map_err(|e| format!("invalid IR: {e}"))?;
    let mut func = Function::new();
    func.signature = entry_signature(module);
    let helpers = emit::build(module, ids, f, &mut func)?;
    Ok((func, helpers))
}

/// The text of `func` and of the `helpers` it calls.
fn display(func: &Function, helpers: &[(FuncId, Function)]) -> String {
    let mut text = func.display().to_string();
    for (_, h) in helpers {
        text.push_str(&format!("\n{}", h.display()));
    }
    text
}

/// The textual Cranelift IR of `f` (before Cranelift's own optimizations), as
/// `traj ir --stage clif` prints it.
pub fn clif_text(f: &Func) -> Result<String, String> {
    let (mut module, ids) = new_module()?;
    let text = lower(&mut module, &ids, f).map(|(func, helpers)| display(&func, &helpers));
    // SAFETY: no function of this module was finalized, so no code pointer exists.
    unsafe { module.free_memory() };
    text
}

/// Compiles `f` to native code.
pub fn compile(f: &Func) -> Result<Compiled, String> {
    let (mut module, ids) = new_module()?;
    match define(&mut module, &ids, f) {
        Ok(code) => {
            // SAFETY: `code` is the finalized function `define` built with the signature
            // `entry_signature`: two pointer arguments and an i64 result, the platform's
            // C calling convention (`make_signature` uses the ISA default, which is
            // `extern "C"`). It stays valid while the module lives, which `Compiled`
            // ensures by owning the module.
            let entry = unsafe { std::mem::transmute::<*const u8, Entry>(code) };
            let buffers = plan(f, None, &[])?;
            Ok(Compiled {
                module: Some(module),
                entry,
                func: f.clone(),
                buffers: RefCell::new(buffers),
            })
        }
        Err(e) => {
            // SAFETY: nothing from this module is used after a failed definition.
            unsafe { module.free_memory() };
            Err(e)
        }
    }
}

fn define(
    module: &mut JITModule,
    ids: &HashMap<&'static str, FuncId>,
    f: &Func,
) -> Result<*const u8, String> {
    let (func, helpers) = lower(module, ids, f)?;
    finish(module, "traj_func", func, helpers)
}

/// Compiles the CLIF function `func` as `name`, and the `helpers` it calls, and finalizes
/// the module: `func`'s code.
fn finish(
    module: &mut JITModule,
    name: &str,
    func: Function,
    helpers: Vec<(FuncId, Function)>,
) -> Result<*const u8, String> {
    let id = module
        .declare_function(name, Linkage::Export, &func.signature)
        .map_err(|e| e.to_string())?;
    let mut ctx = module.make_context();
    // `TRAJ_CODE_DIR=DIR`: each function's machine code in `DIR/NAME-ID.bin`, for
    // `objdump -D -b binary -mi386:x86-64` (perf's samples in `traj_loop` are offsets
    // from its address in `/tmp/perf-PID.map`).
    let code_dir = std::env::var("TRAJ_CODE_DIR").ok();
    for (id, func) in helpers.into_iter().chain([(id, func)]) {
        ctx.func = func;
        module
            .define_function(id, &mut ctx)
            .map_err(|e| format!("internal error: Cranelift refused `{name}`: {e:?}"))?;
        if let (Some(dir), Some(code)) = (&code_dir, ctx.compiled_code()) {
            let path = format!("{dir}/{name}-{}.bin", id.as_u32());
            std::fs::write(&path, code.code_buffer())
                .map_err(|e| format!("cannot write {path}: {e}"))?;
        }
        module.clear_context(&mut ctx);
    }
    module
        .finalize_definitions()
        .map_err(|e| format!("internal error: cannot finalize the JIT code: {e}"))?;
    Ok(module.get_finalized_function(id))
}

/// A compiled loop's entry (`train_loop`, `flow_loop`): its context and state pointers in,
/// its status out, in the platform's C convention.
pub(crate) type LoopEntry = unsafe extern "C" fn(*mut u8, *mut u8) -> i64;

/// The module and the entry of a loop whose code [`finish`] gave; on a failure, the
/// module's memory freed and the error returned.
fn loop_entry(
    module: JITModule,
    code: Result<*const u8, String>,
) -> Result<(JITModule, LoopEntry), String> {
    match code {
        // SAFETY: the loops are built with `entry_signature` (two pointers in, i64 out,
        // the platform's C convention); the code lives as long as the module returned.
        Ok(code) => Ok((module, unsafe {
            std::mem::transmute::<*const u8, LoopEntry>(code)
        })),
        Err(e) => {
            // SAFETY: nothing from this module is used after a failed definition.
            unsafe { module.free_memory() };
            Err(e)
        }
    }
}

/// One buffer per instruction that owns one (consts filled, rounded under `precision
/// f32`; an elementwise loop that writes over a dead operand shares its buffer,
/// `layout::in_place`) and the scratch buffer, large enough for any `LogSumExp` or
/// `ReduceSum` block and the lanes of any column sum a loop accumulates
/// (`layout::column_sum`); views point into their source's buffer (see `layout`). `inputs[k]`, when given, is where
/// input `k` is read in place; each `(i, addr)` of `external` makes `addr` instruction `i`'s
/// buffer (an owned one, holding its whole value).
fn plan(
    f: &Func,
    inputs: Option<&[*mut u8]>,
    external: &[(usize, *mut u8)],
) -> Result<Buffers, String> {
    let storage = layout::storage(f);
    let over = layout::in_place(f, &storage);
    let mut data: Vec<Box<[u64]>> = Vec::with_capacity(f.insts.len() + 1);
    let mut scratch = 1usize;
    for ((inst, s), over) in f.insts.iter().zip(&storage).zip(&over) {
        let n: usize = match (s, &inst.prim) {
            (_, Prim::Input(_)) if inputs.is_some() => 1,
            _ if over.is_some() => 1,
            (Storage::Own, _) => inst.shape.iter().product(),
            _ => 1,
        };
        let mut buf = vec![0u64; n.max(1)].into_boxed_slice();
        match &inst.prim {
            Prim::Const(t) => {
                if t.shape() != inst.shape.as_slice() {
                    return Err("invalid IR: const shape".into());
                }
                fill(&mut buf, t, f.f32);
            }
            Prim::LogSumExp(axes) | Prim::ReduceSum(axes) => {
                let from = &f.insts[inst.args[0]].shape;
                let block: usize = axes.iter().filter_map(|a| from.get(*a)).product();
                scratch = scratch.max(block);
            }
            _ => {}
        }
        data.push(buf);
    }
    for i in 0..f.insts.len() {
        if let Some((_, lanes)) = layout::column_sum(f, &storage, i) {
            scratch = scratch.max(lanes);
        }
    }
    data.push(vec![0u64; scratch].into_boxed_slice());
    let mut ptrs: Vec<*mut u8> = data
        .iter_mut()
        .map(|b| b.as_mut_ptr().cast::<u8>())
        .collect();
    for (i, inst) in f.insts.iter().enumerate() {
        match (inst.prim.clone(), storage[i], inputs) {
            (Prim::Input(k), _, Some(addrs)) => {
                ptrs[i] = *addrs.get(k).ok_or("internal error: unbound input")?;
            }
            (_, Storage::View { src, offset }, _) => {
                // SAFETY: the view lies inside its source's buffer (`layout::storage`).
                ptrs[i] = unsafe { ptrs[src].offset(offset as isize) };
            }
            (_, Storage::Own, _) => {
                if let Some((_, addr)) = external.iter().find(|(v, _)| *v == i) {
                    ptrs[i] = *addr;
                } else if let Some(s) = over[i] {
                    ptrs[i] = ptrs[s];
                }
            }
            _ => {}
        }
    }
    Ok(Buffers { _data: data, ptrs })
}

/// The bits of `t` into `buf`, floats rounded through f32 when `f32`.
fn fill(buf: &mut [u64], t: &Tensor, f32: bool) {
    match t {
        // Row-major values as one slice rather than through ndarray's element iterator
        // (a Hessian-vector product's `apply` receives its saved values here each product).
        Tensor::Float(a) if !f32 && a.as_slice().is_some_and(|s| s.len() == buf.len()) => {
            let s = a.as_slice().unwrap_or_default();
            for (o, x) in buf.iter_mut().zip(s) {
                *o = x.to_bits();
            }
        }
        Tensor::Float(a) => {
            for (o, x) in buf.iter_mut().zip(a.iter()) {
                *o = if f32 { *x as f32 as f64 } else { *x }.to_bits();
            }
        }
        Tensor::Int(a) => {
            for (o, x) in buf.iter_mut().zip(a.iter()) {
                *o = *x as u64;
            }
        }
    }
}

impl Compiled {
    /// The function this was compiled from.
    pub fn func(&self) -> &Func {
        &self.func
    }

    /// Evaluates the function on `inputs` (in the order of `Func::inputs`) with the run's
    /// `seed`; returns the outputs in order, as `interp::eval` does.
    pub fn run(&self, inputs: &[Tensor], seed: u64) -> Result<Vec<Tensor>, String> {
        let bufs = self
            .buffers
            .try_borrow_mut()
            .map_err(|_| "a compiled function cannot run inside itself".to_string())?;
        let f = &self.func;
        for (i, inst) in f.insts.iter().enumerate() {
            let Prim::Input(k) = inst.prim else { continue };
            let t = inputs
                .get(k)
                .ok_or_else(|| format!("missing input (at instruction %{i})"))?;
            let dtype = match t {
                Tensor::Float(_) => DType::Float,
                Tensor::Int(_) => DType::Int,
            };
            if t.shape() != inst.shape.as_slice() || dtype != inst.dtype {
                return Err(format!(
                    "input {k} is {}{:?}, expected {}{:?}",
                    dtype.name(),
                    t.shape(),
                    inst.dtype.name(),
                    inst.shape
                ));
            }
            let n: usize = inst.shape.iter().product();
            // SAFETY: buffer i holds max(n, 1) elements and is used only through `ptrs`.
            let buf = unsafe { std::slice::from_raw_parts_mut(bufs.ptrs[i].cast::<u64>(), n) };
            fill(buf, t, f.f32);
        }
        let mut ctx = HostCtx {
            func: f,
            bufs: bufs.ptrs.as_ptr(),
            nbufs: bufs.ptrs.len(),
            seed,
            error: None,
        };
        // SAFETY: the buffer table matches the plan the code was generated for, and `ctx`
        // is the `HostCtx` that `host::traj_host_op` expects; the `RefCell` borrow keeps
        // the buffers exclusive for the call.
        let code = unsafe {
            (self.entry)(
                bufs.ptrs.as_ptr(),
                std::ptr::from_mut(&mut ctx).cast::<u8>(),
            )
        };
        if code != 0 {
            let message = ctx.error.take().unwrap_or_else(|| "unknown error".into());
            return Err(format!("{message} (at instruction %{})", code - 1));
        }
        f.outputs
            .iter()
            .map(|(_, v)| {
                let inst = f
                    .insts
                    .get(*v)
                    .ok_or_else(|| format!("output %{v} is not defined"))?;
                // SAFETY: buffer v was planned for this dtype and shape.
                unsafe { host::read(bufs.ptrs[*v], inst.dtype, &inst.shape) }
            })
            .collect()
    }
}
