//! The native gradient-flow loop: an embedded Runge–Kutta pair's steps (stages, error norm, PI control, sliding bookkeeping) as one Cranelift function.
//!
//! `train::flow` holds the reference algorithm; this is the same algorithm, the same float
//! operations in the same order (no fused multiply-add; `pow` is `kernels::math::pow`, the
//! `traj_pow` shim both sides call), over a [`FlowState`] the host hands in and takes
//! back. Each stage's gradient is the plan's fast gradient (`grad_fast`), emitted once as
//! a function of the module that the loop calls six times a step, reading θ from a fixed
//! buffer: nothing is allocated and nothing returns to the host between stages.
//!
//! The loop commits only ordinary steps: a rejected step that leaves the step size above
//! the collapse bound and does not complete a run of short rejections, and an accepted
//! step with no record time inside it, no `stop when` to test, not the last step, not
//! `--steps`' last, and no sliding mode completed. Any other step returns to the host:
//! [`Exit::Accepted`] (the stages and the error are in the state: the host records rows,
//! tests the stop condition and finishes the step) or [`Exit::Fallback`] (the host runs the
//! whole step itself, as the reference: the last step, a tie, a non-finite value, a host
//! op that failed, a step that ends the run); the state is then exactly as before that step.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{Function, InstBuilder, MemFlagsData, Value, types};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::JITModule;
use cranelift_module::{FuncId, Linkage, Module};

use super::emit::{Bufs, CountedLoop, emit_func, shim_ref};
use super::host::HostCtx;
use super::{Buffers, entry_signature, new_module};
use crate::ir::Func;
use crate::output::FlowCounts;
use crate::plan::Plan;

/// An embedded Runge–Kutta pair whose solution's derivative is the next step's first
/// stage (FSAL): rows 2..s of its tableau (the last row is the solution), the error
/// coefficients (higher minus lower order), the order the initial step and the controller
/// use, and the dense output's extra coefficients (`None`: cubic Hermite).
pub struct Pair {
    pub name: &'static str,
    pub a: &'static [&'static [f64]],
    pub e: &'static [f64],
    /// 1/(q + 1) for the error estimate's order q: the initial step's root and the
    /// controller's exponent `expo` = this − 0.75·β.
    pub root: f64,
    pub expo: f64,
    pub dense: Option<&'static [f64]>,
}

impl Pair {
    /// The stages a step (the first is the last step's FSAL stage).
    pub fn stages(&self) -> usize {
        self.a.len() + 1
    }
}

/// Dormand–Prince 5(4) (Hairer's DOPRI5).
pub const DOPRI5: Pair = Pair {
    name: "dopri5",
    a: &[
        &[1.0 / 5.0],
        &[3.0 / 40.0, 9.0 / 40.0],
        &[44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0],
        &[
            19372.0 / 6561.0,
            -25360.0 / 2187.0,
            64448.0 / 6561.0,
            -212.0 / 729.0,
        ],
        &[
            9017.0 / 3168.0,
            -355.0 / 33.0,
            46732.0 / 5247.0,
            49.0 / 176.0,
            -5103.0 / 18656.0,
        ],
        &[
            35.0 / 384.0,
            0.0,
            500.0 / 1113.0,
            125.0 / 192.0,
            -2187.0 / 6784.0,
            11.0 / 84.0,
        ],
    ],
    e: &[
        71.0 / 57600.0,
        0.0,
        -71.0 / 16695.0,
        71.0 / 1920.0,
        -17253.0 / 339200.0,
        22.0 / 525.0,
        -1.0 / 40.0,
    ],
    root: 1.0 / 5.0,
    expo: 0.2 - BETA * 0.75,
    dense: Some(&[
        -12715105075.0 / 11282082432.0,
        0.0,
        87487479700.0 / 32700410799.0,
        -10690763975.0 / 1880347072.0,
        701980252875.0 / 199316789632.0,
        -1453857185.0 / 822651844.0,
        69997945.0 / 29380423.0,
    ]),
};

/// Bogacki–Shampine 3(2) (MATLAB's `ode23`, diffrax's `Bosh3`): three gradients a step.
pub const BS3: Pair = Pair {
    name: "bs3",
    a: &[
        &[1.0 / 2.0],
        &[0.0, 3.0 / 4.0],
        &[2.0 / 9.0, 1.0 / 3.0, 4.0 / 9.0],
    ],
    // b − b̂, b̂ = (7/24, 1/4, 1/3, 1/8).
    e: &[-5.0 / 72.0, 1.0 / 12.0, 1.0 / 9.0, -1.0 / 8.0],
    root: 1.0 / 3.0,
    expo: 1.0 / 3.0 - BETA * 0.75,
    dense: None,
};

/// From this `rtol` on a flow takes the cheaper 3(2) pair (LANGUAGE.md 3.10).
pub const LOOSE_RTOL: f64 = 1e-3;

/// The pair a flow with relative tolerance `rtol` integrates with.
pub fn pair(rtol: f64) -> &'static Pair {
    if rtol >= LOOSE_RTOL { &BS3 } else { &DOPRI5 }
}

// The PI controller (Hairer's DOPRI5 defaults).
pub const SAFETY: f64 = 0.9;
pub const BETA: f64 = 0.04;
/// The step shrinks at most 1/0.2 = 5× ...
pub const SHRINK_MOST: f64 = 5.0;
/// ... and grows at most 10× a step.
pub const GROW_MOST: f64 = 10.0;
/// The net sign changes of one entry's derivative over a run of short accepted steps that
/// make a sliding mode (each change counts 2, each step without one −1); as many short
/// rejections (2 each, an accepted short step −1) make one too.
pub const SLIDING_STEPS: u32 = 100;
/// A step shorter than this fraction of `time T` is short (for sliding).
pub const SHORT: f64 = 1e-4;
/// The step size collapses below this fraction of `time T`.
pub const COLLAPSE: f64 = 1e-12;

/// The integrator between steps: what the host's loop and the native one share.
#[derive(Clone, Debug, Default)]
pub struct FlowState {
    /// The time reached and the step size to try next.
    pub t: f64,
    pub h: f64,
    /// The error of the last accepted step (at least 1e-4), for the PI controller.
    pub err_old: f64,
    pub after_reject: bool,
    /// The accepted steps, the flat params y at `t`, and f = −∇L at y (`k[0]`); `k[1..7]`
    /// the stages of the step being taken, `k[6]` f at `y1`, its 5th-order solution.
    pub accepted: u64,
    pub y: Vec<f64>,
    pub y1: Vec<f64>,
    pub k: Vec<Vec<f64>>,
    /// Per entry, the sliding count of sign changes of its derivative.
    pub flips: Vec<u32>,
    /// The same count for short rejections (+2 each, −1 for a short accepted step).
    pub rejections: u32,
}

/// Why the native loop returned.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Exit {
    /// The host runs the next step itself; the state is as before it.
    Fallback,
    /// The next step was accepted with this error and loss at `y1` (stages in `k`, `y1`
    /// in the state, nothing else of it committed): the host finishes it.
    Accepted { err: f64, loss: f64 },
    /// The interrupt flag is set (looked at before each step).
    Interrupted,
}

/// The loop's scalars, shared with generated code (offsets in `Ctx::AT`).
#[repr(C)]
#[derive(Default)]
struct Ctx {
    t: f64,
    h: f64,
    err_old: f64,
    after_reject: i64,
    accepted: i64,
    rejected: i64,
    evaluations: i64,
    rejections: i64,
    /// The next record time (∞ when none is left).
    next_record: f64,
    /// `--steps`: the accepted step the host must finish (i64::MAX when none).
    most: i64,
    /// Written on `Exit::Accepted`.
    err: f64,
    loss: f64,
    /// The interrupt flag (an `AtomicBool`), or null.
    interrupt: i64,
    /// The loss at `y` after an ordinary accepted step.
    loss0: f64,
}

/// Byte offsets of `Ctx`'s fields.
mod at {
    pub const T: i32 = 0;
    pub const H: i32 = 8;
    pub const ERR_OLD: i32 = 16;
    pub const AFTER_REJECT: i32 = 24;
    pub const ACCEPTED: i32 = 32;
    pub const REJECTED: i32 = 40;
    pub const EVALUATIONS: i32 = 48;
    pub const REJECTIONS: i32 = 56;
    pub const NEXT_RECORD: i32 = 64;
    pub const MOST: i32 = 72;
    pub const ERR: i32 = 80;
    pub const LOSS: i32 = 88;
    pub const INTERRUPT: i32 = 96;
    pub const LOSS0: i32 = 104;
}

/// The compiled flow loop with its buffers.
pub struct FlowLoop {
    module: Option<JITModule>,
    entry: super::LoopEntry,
    n: usize,
    ctx: Box<Ctx>,
    y: Box<[f64]>,
    y1: Box<[f64]>,
    /// The gradient's input θ (each stage's point).
    _x: Box<[f64]>,
    /// The seven stages, one after another.
    k: Box<[f64]>,
    flips: Box<[i64]>,
    /// The step whose draws the stage gradients use (accepted + 1).
    _step: Box<[i64]>,
    _buffers: Buffers,
    host: Box<HostCtx>,
    _func: Box<Func>,
}

impl Drop for FlowLoop {
    fn drop(&mut self) {
        if let Some(m) = self.module.take() {
            // SAFETY: `entry` points into this module and dies with `self`.
            unsafe { m.free_memory() };
        }
    }
}

/// Addresses the code is compiled for.
struct Addrs {
    n: usize,
    y: i64,
    y1: i64,
    x: i64,
    k: i64,
    flips: i64,
    step: i64,
    end: f64,
    rtol: f64,
    atol: f64,
    has_stop: bool,
    pair: &'static Pair,
    /// Each param's gradient output buffer and length, in order.
    grads: Vec<(i64, usize)>,
    loss: i64,
    ties: i64,
}

impl FlowLoop {
    /// Compiles the flow loop of `plan` (a flow) for a run with `seed`; `None` when the
    /// plan's gradient runs in rounded `precision f32`, which the host loop handles.
    pub fn compile(plan: &Plan, seed: u64) -> Result<Option<FlowLoop>, String> {
        let Some(spec) = &plan.flow else {
            return Ok(None);
        };
        let f = Box::new(plan.grad_fast.clone());
        if f.f32 {
            return Ok(None);
        }
        let np = plan.params.len();
        let lens: Vec<usize> = plan
            .params
            .iter()
            .map(|p| p.shape.iter().product())
            .collect();
        let n: usize = lens.iter().sum();
        let y = vec![0.0; n.max(1)].into_boxed_slice();
        let y1 = vec![0.0; n.max(1)].into_boxed_slice();
        let x = vec![0.0; n.max(1)].into_boxed_slice();
        let k = vec![0.0; 7 * n.max(1)].into_boxed_slice();
        let flips = vec![0i64; n.max(1)].into_boxed_slice();
        let step = vec![0i64; 1].into_boxed_slice();
        let xp = x.as_ptr().cast_mut().cast::<u8>();
        let mut inputs: Vec<*mut u8> = Vec::new();
        let mut off = 0;
        for len in &lens {
            // SAFETY: the offset stays inside `x` (n entries).
            inputs.push(unsafe { xp.add(8 * off) });
            off += len;
        }
        inputs.push(step.as_ptr().cast_mut().cast::<u8>());
        if f.inputs.len() != inputs.len() || f.outputs.len() < np + 2 {
            return Err("internal error: the flow's gradient has an unexpected signature".into());
        }
        let buffers = super::plan(&f, Some(&inputs), &[])?;
        let host = Box::new(HostCtx {
            func: &*f,
            bufs: buffers.ptrs.as_ptr(),
            nbufs: buffers.ptrs.len(),
            seed,
            error: None,
        });
        let out = |o: usize| buffers.ptrs[f.outputs[o].1] as i64;
        let addrs = Addrs {
            n,
            y: y.as_ptr() as i64,
            y1: y1.as_ptr() as i64,
            x: x.as_ptr() as i64,
            k: k.as_ptr() as i64,
            flips: flips.as_ptr() as i64,
            step: step.as_ptr() as i64,
            end: spec.time,
            rtol: spec.rtol,
            atol: spec.atol,
            has_stop: plan.stop.is_some(),
            pair: pair(spec.rtol),
            grads: (0..np).map(|p| (out(p + 1), lens[p])).collect(),
            loss: out(0),
            ties: out(np + 1),
        };
        let (mut module, ids) = new_module()?;
        let built = build(&mut module, &ids, &f, &buffers, &host, &addrs);
        let code = built.and_then(|(func, helpers)| {
            super::finish(&mut module, "traj_flow_loop", func, helpers)
        });
        let (module, entry) = super::loop_entry(module, code)?;
        Ok(Some(FlowLoop {
            module: Some(module),
            entry,
            n,
            ctx: Box::default(),
            y,
            y1,
            _x: x,
            k,
            flips,
            _step: step,
            _buffers: buffers,
            host,
            _func: f,
        }))
    }

    /// Runs ordinary steps from `st` until a step the host must see (see the module
    /// doc); `st` and `counts` come back updated. `next_record` is the next record time,
    /// `most` the accepted step `--steps` ends at.
    pub fn run(
        &mut self,
        st: &mut FlowState,
        counts: &mut FlowCounts,
        next_record: f64,
        most: Option<u64>,
        interrupt: Option<&AtomicBool>,
    ) -> Exit {
        let n = self.n;
        self.y[..n].copy_from_slice(&st.y);
        self.k[..n].copy_from_slice(&st.k[0]);
        for (o, c) in self.flips.iter_mut().zip(&st.flips) {
            *o = *c as i64;
        }
        *self.ctx = Ctx {
            t: st.t,
            h: st.h,
            err_old: st.err_old,
            after_reject: st.after_reject as i64,
            accepted: st.accepted as i64,
            rejected: counts.rejected_steps as i64,
            evaluations: counts.gradient_evaluations as i64,
            rejections: st.rejections as i64,
            next_record,
            most: most.map_or(i64::MAX, |m| m.min(i64::MAX as u64) as i64),
            err: 0.0,
            loss: 0.0,
            interrupt: interrupt.map_or(0, |f| f.as_ptr() as i64),
            loss0: 0.0,
        };
        self.host.error = None;
        let ctx = std::ptr::from_mut(&mut *self.ctx).cast::<u8>();
        // SAFETY: the code was compiled for these buffers, which `self` owns and which
        // nothing else touches while it runs (`&mut self`).
        let code = unsafe { (self.entry)(ctx, std::ptr::null_mut()) };
        let c = &*self.ctx;
        st.t = c.t;
        st.h = c.h;
        st.err_old = c.err_old;
        st.after_reject = c.after_reject != 0;
        st.accepted = c.accepted as u64;
        st.rejections = c.rejections as u32;
        counts.accepted_steps = st.accepted;
        counts.rejected_steps = c.rejected as u64;
        counts.gradient_evaluations = c.evaluations as u64;
        counts.t = st.t;
        st.y.copy_from_slice(&self.y[..n]);
        for (o, c) in st.flips.iter_mut().zip(self.flips.iter()) {
            *o = *c as u32;
        }
        st.k[0].copy_from_slice(&self.k[..n]);
        match code {
            1 => {
                st.y1.copy_from_slice(&self.y1[..n]);
                for (j, kj) in st.k.iter_mut().enumerate().skip(1) {
                    kj.copy_from_slice(&self.k[j * n..(j + 1) * n]);
                }
                Exit::Accepted {
                    err: c.err,
                    loss: c.loss,
                }
            }
            2 => Exit::Interrupted,
            _ => Exit::Fallback,
        }
    }

    /// The loss at the state's `y` after the native loop took a step (valid when it did).
    pub fn loss_at_y(&self) -> f64 {
        self.ctx.loss0
    }
}

fn mf() -> MemFlagsData {
    MemFlagsData::trusted()
}

/// The gradient as a function of the module (returns 0, or 1 when a host op failed), and
/// the loop calling it; the functions to define with the loop.
#[allow(clippy::type_complexity)]
fn build(
    module: &mut JITModule,
    shims: &HashMap<&'static str, FuncId>,
    f: &Func,
    buffers: &Buffers,
    host: &HostCtx,
    a: &Addrs,
) -> Result<(Function, Vec<(FuncId, Function)>), String> {
    let mut helpers = Vec::new();
    // The gradient.
    let sig = entry_signature(module);
    let grad_id = module
        .declare_function("traj_flow_gradient", Linkage::Local, &sig)
        .map_err(|e| e.to_string())?;
    let mut gfunc = Function::new();
    gfunc.signature = sig;
    {
        let mut fbc = FunctionBuilderContext::new();
        let mut b = FunctionBuilder::new(&mut gfunc, &mut fbc);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let host_err = b.create_block();
        b.append_block_param(host_err, types::I64);
        let hp = b
            .ins()
            .iconst(types::I64, std::ptr::from_ref(host).cast::<u8>() as i64);
        let mut refs = HashMap::new();
        emit_func(
            &mut b,
            module,
            shims,
            &mut refs,
            &mut helpers,
            f,
            Bufs::Fixed(&buffers.ptrs),
            hp,
            Some(host_err),
            None,
            super::PARALLEL_LOOP,
        )?;
        let zero = b.ins().iconst(types::I64, 0);
        b.ins().return_(&[zero]);
        b.switch_to_block(host_err);
        let one = b.ins().iconst(types::I64, 1);
        b.ins().return_(&[one]);
        b.seal_all_blocks();
        b.finalize(module.target_config());
    }

    let mut func = Function::new();
    func.signature = entry_signature(module);
    let grad_ref = module.declare_func_in_func(grad_id, &mut func);
    let mut fbc = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(&mut func, &mut fbc);
    let mut refs = HashMap::new();
    let pow = shim_ref(module, shims, &mut refs, b.func, "traj_pow")?;
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let ctx = b.block_params(entry)[0];
    let mut e = Em { b: &mut b, ctx };
    let fallback = e.b.create_block();
    let accepted_exit = e.b.create_block();
    let interrupted = e.b.create_block();
    let top = e.b.create_block();
    e.b.ins().jump(top, &[]);

    // Before each step: the interrupt flag, then the last step (the host's).
    e.b.switch_to_block(top);
    let flag = e.ld_i(at::INTERRUPT);
    let go = e.b.create_block();
    let check_flag = e.b.create_block();
    e.b.ins().brif(flag, check_flag, &[], go, &[]);
    e.b.switch_to_block(check_flag);
    let byte = e.b.ins().uload8(types::I64, mf(), flag, 0);
    e.b.ins().brif(byte, interrupted, &[], go, &[]);
    e.b.switch_to_block(go);
    let t = e.ld_f(at::T);
    let h = e.ld_f(at::H);
    let end = e.b.ins().f64const(a.end);
    let c101 = e.b.ins().f64const(1.01);
    let reach = e.b.ins().fmul(c101, h);
    let reach = e.b.ins().fadd(t, reach);
    let last = e.b.ins().fcmp(FloatCC::GreaterThanOrEqual, reach, end);
    let stages = e.b.create_block();
    e.b.ins().brif(last, fallback, &[], stages, &[]);
    e.b.switch_to_block(stages);
    let accepted = e.ld_i(at::ACCEPTED);
    let step = e.b.ins().iadd_imm_s(accepted, 1);
    let sp = e.b.ins().iconst(types::I64, a.step);
    e.b.ins().store(mf(), step, sp, 0);

    let n = a.n;
    let nb = (8 * n) as i64;
    let last = a.pair.a.len();
    for (s, row) in a.pair.a.iter().enumerate() {
        let s = s + 1;
        // x = y + h·Σ_j a_j k_j, the sum in order from 0.0 (the 5th-order y1 too at s = 6).
        e.each(n, &mut |e, off| {
            let mut sum = e.b.ins().f64const(0.0);
            for (j, aj) in row.iter().enumerate() {
                let c = e.b.ins().f64const(*aj);
                let kv = e.load_at(a.k + j as i64 * nb, off);
                let p = e.b.ins().fmul(c, kv);
                sum = e.b.ins().fadd(sum, p);
            }
            let yv = e.load_at(a.y, off);
            let hs = e.b.ins().fmul(h, sum);
            let v = e.b.ins().fadd(yv, hs);
            e.store_at(a.x, off, v);
            if s == last {
                e.store_at(a.y1, off, v);
            }
        });
        let null = e.b.ins().iconst(types::I64, 0);
        let call = e.b.ins().call(grad_ref, &[null, null]);
        let failed = e.b.inst_results(call)[0];
        let ok = e.b.create_block();
        e.b.ins().brif(failed, fallback, &[], ok, &[]);
        e.b.switch_to_block(ok);
        let z = e.zero();
        let ties = e.load_at(a.ties, z);
        let zero = e.b.ins().f64const(0.0);
        let tied = e.b.ins().fcmp(FloatCC::GreaterThan, ties, zero);
        let ok = e.b.create_block();
        e.b.ins().brif(tied, fallback, &[], ok, &[]);
        e.b.switch_to_block(ok);
        // k_s = −gradient; NaN in `acc` when an entry is not finite.
        let mut acc = e.b.ins().f64const(0.0);
        let mut base = a.k + s as i64 * nb;
        for (g, len) in &a.grads {
            let var = e.b.declare_var(types::F64);
            e.b.def_var(var, acc);
            let (g, dst) = (*g, base);
            e.each(*len, &mut |e, off| {
                let v = e.load_at(g, off);
                let v = e.b.ins().fneg(v);
                e.store_at(dst, off, v);
                let d = e.b.ins().fsub(v, v);
                let s0 = e.b.use_var(var);
                let s1 = e.b.ins().fadd(s0, d);
                e.b.def_var(var, s1);
            });
            acc = e.b.use_var(var);
            base += (8 * len) as i64;
        }
        if s == last {
            // The loss at y1 and y1 itself must be finite too.
            let z = e.zero();
            let loss = e.load_at(a.loss, z);
            let d = e.b.ins().fsub(loss, loss);
            acc = e.b.ins().fadd(acc, d);
            let var = e.b.declare_var(types::F64);
            e.b.def_var(var, acc);
            e.each(n, &mut |e, off| {
                let v = e.load_at(a.y1, off);
                let d = e.b.ins().fsub(v, v);
                let s0 = e.b.use_var(var);
                let s1 = e.b.ins().fadd(s0, d);
                e.b.def_var(var, s1);
            });
            acc = e.b.use_var(var);
            e.st_f(at::LOSS, loss);
        }
        let finite = e.b.ins().fcmp(FloatCC::Equal, acc, acc);
        let ok = e.b.create_block();
        e.b.ins().brif(finite, ok, &[], fallback, &[]);
        e.b.switch_to_block(ok);
    }

    // The error: the scaled RMS norm of h·Σ_j e_j k_j against atol + rtol·max(|y|, |y1|).
    let var = e.b.declare_var(types::F64);
    let z = e.b.ins().f64const(-0.0);
    e.b.def_var(var, z);
    e.each(n, &mut |e, off| {
        let mut sum = e.b.ins().f64const(0.0);
        for (j, ej) in a.pair.e.iter().enumerate() {
            let c = e.b.ins().f64const(*ej);
            let kv = e.load_at(a.k + j as i64 * nb, off);
            let p = e.b.ins().fmul(c, kv);
            sum = e.b.ins().fadd(sum, p);
        }
        let yv = e.load_at(a.y, off);
        let y1v = e.load_at(a.y1, off);
        let ya = e.b.ins().fabs(yv);
        let y1a = e.b.ins().fabs(y1v);
        let m = e.b.ins().fmax(ya, y1a);
        let rtol = e.b.ins().f64const(a.rtol);
        let atol = e.b.ins().f64const(a.atol);
        let sk = e.b.ins().fmul(rtol, m);
        let sk = e.b.ins().fadd(atol, sk);
        let hs = e.b.ins().fmul(h, sum);
        let q = e.b.ins().fdiv(hs, sk);
        let q2 = e.b.ins().fmul(q, q);
        let s0 = e.b.use_var(var);
        let s1 = e.b.ins().fadd(s0, q2);
        e.b.def_var(var, s1);
    });
    let total = e.b.use_var(var);
    let count = e.b.ins().f64const(n.max(1) as f64);
    let mean = e.b.ins().fdiv(total, count);
    let err = e.b.ins().sqrt(mean);
    let d = e.b.ins().fsub(err, err);
    let finite = e.b.ins().fcmp(FloatCC::Equal, d, d);
    let judged = e.b.create_block();
    e.b.ins().brif(finite, judged, &[], fallback, &[]);
    e.b.switch_to_block(judged);
    e.st_f(at::ERR, err);
    let one = e.b.ins().f64const(1.0);
    let small = e.b.ins().fcmp(FloatCC::LessThanOrEqual, err, one);
    let accept = e.b.create_block();
    let reject = e.b.create_block();
    let short_bound = e.b.ins().f64const(SHORT * a.end);
    let expo = e.b.ins().f64const(a.pair.expo);
    e.b.ins().brif(small, accept, &[], reject, &[]);

    // Accepted: the host's unless the step is ordinary.
    e.b.switch_to_block(accept);
    let t_new = e.b.ins().fadd(t, h);
    let short = e.b.ins().fcmp(FloatCC::LessThan, h, short_bound);
    let mut host_accept = e.b.ins().iconst(types::I8, a.has_stop as i64);
    let most = e.ld_i(at::MOST);
    let at_most = e.b.ins().icmp(IntCC::SignedGreaterThanOrEqual, step, most);
    host_accept = e.b.ins().bor(host_accept, at_most);
    let next_record = e.ld_f(at::NEXT_RECORD);
    let due = e.b.ins().fcmp(FloatCC::LessThanOrEqual, next_record, t_new);
    host_accept = e.b.ins().bor(host_accept, due);
    let slides = e.b.create_block();
    let ordinary = e.b.create_block();
    e.b.ins().brif(host_accept, accepted_exit, &[], slides, &[]);
    // A sliding mode completed by this step is the host's too.
    e.b.switch_to_block(slides);
    let short_i = e.b.ins().uextend(types::I64, short);
    let var = e.b.declare_var(types::I64);
    let zi = e.b.ins().iconst(types::I64, 0);
    e.b.def_var(var, zi);
    let k6 = a.k + last as i64 * nb;
    e.each(n, &mut |e, off| {
        let (_, flip, _, c) = e.sign_flip(a.k, k6, a.flips, off);
        let full = e.b.ins().icmp_imm_s(
            IntCC::SignedGreaterThanOrEqual,
            c,
            2 * SLIDING_STEPS as i64 - 2,
        );
        let hit = e.b.ins().band(flip, full);
        let hit = e.b.ins().uextend(types::I64, hit);
        let s0 = e.b.use_var(var);
        let s1 = e.b.ins().bor(s0, hit);
        e.b.def_var(var, s1);
    });
    let hit = e.b.use_var(var);
    let hit = e.b.ins().band(hit, short_i);
    e.b.ins().brif(hit, accepted_exit, &[], ordinary, &[]);

    // An ordinary accepted step: commit it.
    e.b.switch_to_block(ordinary);
    e.st_i(at::ACCEPTED, step);
    e.add_i(at::EVALUATIONS, last as i64);
    let loss = e.ld_f(at::LOSS);
    e.st_f(at::LOSS0, loss);
    // rejections: short ? rejections − 1 (at least 0) : 0
    let r = e.ld_i(at::REJECTIONS);
    let r1 = e.b.ins().iadd_imm_s(r, -1);
    let zi = e.b.ins().iconst(types::I64, 0);
    let r1 = e.b.ins().smax(r1, zi);
    let r = e.b.ins().select(short, r1, zi);
    e.st_i(at::REJECTIONS, r);
    e.each(n, &mut |e, off| {
        let (k6v, flip, fa, c) = e.sign_flip(a.k, k6, a.flips, off);
        let up = e.b.ins().iadd_imm_s(c, 2);
        let down = e.b.ins().iadd_imm_s(c, -1);
        let zi = e.b.ins().iconst(types::I64, 0);
        let down = e.b.ins().smax(down, zi);
        let v = e.b.ins().select(flip, up, down);
        let v = e.b.ins().select(short, v, zi);
        e.b.ins().store(mf(), v, fa, 0);
        // y = y1, k0 = k6
        let y1v = e.load_at(a.y1, off);
        e.store_at(a.y, off, y1v);
        e.store_at(a.k, off, k6v);
    });
    e.st_f(at::T, t_new);
    // The PI controller.
    let fac11 = e.b.ins().call(pow, &[err, expo]);
    let fac11 = e.b.inst_results(fac11)[0];
    let err_old = e.ld_f(at::ERR_OLD);
    let beta = e.b.ins().f64const(BETA);
    let po = e.b.ins().call(pow, &[err_old, beta]);
    let po = e.b.inst_results(po)[0];
    let fac = e.b.ins().fdiv(fac11, po);
    let safety = e.b.ins().f64const(SAFETY);
    let fac = e.b.ins().fdiv(fac, safety);
    let lo = e.b.ins().f64const(1.0 / GROW_MOST);
    let hi = e.b.ins().f64const(SHRINK_MOST);
    let below = e.b.ins().fcmp(FloatCC::LessThan, fac, lo);
    let fac = e.b.ins().select(below, lo, fac);
    let above = e.b.ins().fcmp(FloatCC::GreaterThan, fac, hi);
    let fac = e.b.ins().select(above, hi, fac);
    let h_new = e.b.ins().fdiv(h, fac);
    let after = e.ld_i(at::AFTER_REJECT);
    let smaller = e.b.ins().fcmp(FloatCC::LessThan, h_new, h);
    let capped = e.b.ins().select(smaller, h_new, h);
    let h_new = e.b.ins().select(after, capped, h_new);
    let zi = e.b.ins().iconst(types::I64, 0);
    e.st_i(at::AFTER_REJECT, zi);
    let floor = e.b.ins().f64const(1e-4);
    let larger = e.b.ins().fcmp(FloatCC::GreaterThan, err, floor);
    let eo = e.b.ins().select(larger, err, floor);
    e.st_f(at::ERR_OLD, eo);
    e.st_f(at::H, h_new);
    e.b.ins().jump(top, &[]);

    // Rejected: commit it unless it ends the run.
    e.b.switch_to_block(reject);
    let short = e.b.ins().fcmp(FloatCC::LessThan, h, short_bound);
    let r = e.ld_i(at::REJECTIONS);
    let r2 = e.b.ins().iadd_imm_s(r, 2);
    let r_new = e.b.ins().select(short, r2, r);
    let slid = e.b.ins().icmp_imm_s(
        IntCC::SignedGreaterThanOrEqual,
        r_new,
        2 * SLIDING_STEPS as i64,
    );
    let shrink = e.b.create_block();
    e.b.ins().brif(slid, fallback, &[], shrink, &[]);
    e.b.switch_to_block(shrink);
    let fac11 = e.b.ins().call(pow, &[err, expo]);
    let fac11 = e.b.inst_results(fac11)[0];
    let safety = e.b.ins().f64const(SAFETY);
    let q = e.b.ins().fdiv(fac11, safety);
    let hi = e.b.ins().f64const(SHRINK_MOST);
    // f64::min(5, q), q finite
    let less = e.b.ins().fcmp(FloatCC::LessThan, q, hi);
    let div = e.b.ins().select(less, q, hi);
    let h_new = e.b.ins().fdiv(h, div);
    let bound = e.b.ins().f64const(COLLAPSE * a.end);
    let tiny = e.b.ins().fcmp(FloatCC::LessThan, h_new, bound);
    let th = e.b.ins().fadd(t, h_new);
    let stuck = e.b.ins().fcmp(FloatCC::Equal, th, t);
    let collapsed = e.b.ins().bor(tiny, stuck);
    let commit = e.b.create_block();
    e.b.ins().brif(collapsed, fallback, &[], commit, &[]);
    e.b.switch_to_block(commit);
    e.add_i(at::REJECTED, 1);
    e.add_i(at::EVALUATIONS, last as i64);
    let one_i = e.b.ins().iconst(types::I64, 1);
    e.st_i(at::AFTER_REJECT, one_i);
    e.st_i(at::REJECTIONS, r_new);
    e.st_f(at::H, h_new);
    e.b.ins().jump(top, &[]);

    for (blk, code) in [(fallback, 0), (accepted_exit, 1), (interrupted, 2)] {
        e.b.switch_to_block(blk);
        let c = e.b.ins().iconst(types::I64, code);
        e.b.ins().return_(&[c]);
    }
    b.seal_all_blocks();
    b.finalize(module.target_config());
    helpers.push((grad_id, gfunc));
    Ok((func, helpers))
}

/// The loop's builder with its context pointer.
struct Em<'a, 'b> {
    b: &'a mut FunctionBuilder<'b>,
    ctx: Value,
}

impl Em<'_, '_> {
    fn zero(&mut self) -> Value {
        self.b.ins().iconst(types::I64, 0)
    }

    fn ld_f(&mut self, off: i32) -> Value {
        self.b.ins().load(types::F64, mf(), self.ctx, off)
    }

    fn ld_i(&mut self, off: i32) -> Value {
        self.b.ins().load(types::I64, mf(), self.ctx, off)
    }

    fn st_f(&mut self, off: i32, v: Value) {
        self.b.ins().store(mf(), v, self.ctx, off);
    }

    fn st_i(&mut self, off: i32, v: Value) {
        self.b.ins().store(mf(), v, self.ctx, off);
    }

    fn add_i(&mut self, off: i32, d: i64) {
        let v = self.ld_i(off);
        let v = self.b.ins().iadd_imm_s(v, d);
        self.st_i(off, v);
    }

    fn load_at(&mut self, base: i64, off: Value) -> Value {
        let p = self.b.ins().iconst(types::I64, base);
        let p = self.b.ins().iadd(p, off);
        self.b.ins().load(types::F64, mf(), p, 0)
    }

    fn store_at(&mut self, base: i64, off: Value, v: Value) {
        let p = self.b.ins().iconst(types::I64, base);
        let p = self.b.ins().iadd(p, off);
        self.b.ins().store(mf(), v, p, 0);
    }

    /// At byte offset `off` of the step's first and last stages (`k0`, `k6`): the last
    /// stage's value, whether the derivative changed sign (`k0·k6 < 0`), and the address
    /// and value of the entry's sign-change count in `flips`.
    fn sign_flip(
        &mut self,
        k0: i64,
        k6: i64,
        flips: i64,
        off: Value,
    ) -> (Value, Value, Value, Value) {
        let k0v = self.load_at(k0, off);
        let k6v = self.load_at(k6, off);
        let p = self.b.ins().fmul(k0v, k6v);
        let zero = self.b.ins().f64const(0.0);
        let flip = self.b.ins().fcmp(FloatCC::LessThan, p, zero);
        let fa = self.b.ins().iconst(types::I64, flips);
        let fa = self.b.ins().iadd(fa, off);
        let c = self.b.ins().load(types::I64, mf(), fa, 0);
        (k6v, flip, fa, c)
    }

    /// A bottom-tested loop over `n` f64 elements; `body` gets the byte offset.
    fn each(&mut self, n: usize, body: &mut dyn FnMut(&mut Self, Value)) {
        if n == 0 {
            return;
        }
        let lp = CountedLoop::open(self.b);
        body(self, lp.at);
        lp.close(self.b, 8, (n * 8) as i64);
    }
}
