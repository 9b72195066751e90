//! The whole training loop as one native function: each step's gradient (with the tie path
//! when an exact tie occurs), the finiteness checks, the per-step stop test and every
//! param's update, step after step, returning to the host only at a row to record, at the
//! end, or when a step needs the host's full logic (an error, a divergence).
//!
//! The plan's functions are emitted inline, each over its own planned buffers (as
//! `Compiled`), into one CLIF function; their inputs read the loop's slots (θ, the previous
//! θ, gradients, tie directions, optimizer states, step, loss, gnorm) directly, and their
//! outputs are copied into the slots. The loop allocates nothing.
//!
//! Before the step it returns at, the loop runs the plan's quiet gradient when it has one
//! (`opt::quiet`) and neither the stop test nor an update reads the loss: the loss slot
//! then holds a finite stand-in (the check's 1.0), and a failed bound check runs the full
//! gradient instead.

use std::collections::HashMap;

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{Block, Function, InstBuilder, MemFlagsData, Value, types};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::JITModule;
use cranelift_module::{FuncId, Module};
use ndarray::{ArrayD, IxDyn};

use super::emit::{Bufs, CountedLoop, KeepOld, emit_func, shim_ref};
use super::host::HostCtx;
use super::{Buffers, entry_signature, new_module};
use crate::ir::types::DType;
use crate::ir::{Binary, Func, Prim, product};
use crate::opt::nonfinite::nonfinite_spreads;
use crate::plan::Plan;
use crate::rng::Stream;
use crate::tensor::Tensor;

/// Why the native loop returned to the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// The gradient of step `k` is in the slots and θ_k passed every check; step `k` is
    /// the requested stop (`until`) or the stop condition held.
    Row,
    /// Step `k` needs the host: an error, a divergence, an unresolved tie. θ_k and the
    /// previous θ are in the slots; nothing of step k is.
    Fallback,
}

/// The loop's position, shared with generated code.
#[repr(C)]
struct LoopCtx {
    /// The step the loop is at (read on entry, written at every step).
    k: i64,
    /// Return with `Exit::Row` at this step.
    until: i64,
    /// Nonzero: step `k`'s gradient is in the slots; begin with update k+1.
    resume: i64,
    /// Which of the two previous-θ slots holds the previous θ (`Slots::prev`).
    prev_slot: i64,
}

/// What `traj_tie_direction` needs: where the direction goes and which stream it is.
pub(super) struct TieCtx {
    seed: u64,
    step: *const i64,
    dirs: Vec<(*mut f64, usize)>,
}

/// Fills the tie direction for the current step: one Gaussian draw per param entry from
/// stream "tie" keyed by (seed, step), exactly as `train::gradient_on` draws it.
///
/// # Safety
/// `tie` must be the `TieCtx` of a live `TrainLoop`.
pub(super) unsafe extern "C" fn traj_tie_direction(tie: *mut u8) {
    // SAFETY: see the contract; the slots it points to live as long as the loop.
    let tie = unsafe { &*tie.cast::<TieCtx>() };
    let step = unsafe { *tie.step } as u64;
    let rng = Stream::new(tie.seed, "tie", step);
    let mut offset = 0u64;
    for (p, n) in &tie.dirs {
        // SAFETY: each direction slot holds `n` f64.
        let out = unsafe { std::slice::from_raw_parts_mut(*p, *n) };
        for (i, o) in out.iter_mut().enumerate() {
            *o = rng.normal(offset + i as u64);
        }
        offset += *n as u64;
    }
}

/// A buffer of 8-byte elements that never moves.
struct Slot {
    data: Box<[u64]>,
    shape: Vec<usize>,
}

impl Slot {
    fn new(shape: &[usize]) -> Slot {
        let n: usize = shape.iter().product();
        Slot {
            data: vec![0u64; n.max(1)].into_boxed_slice(),
            shape: shape.to_vec(),
        }
    }

    fn len(&self) -> usize {
        self.shape.iter().product()
    }

    fn addr(&self) -> *mut u8 {
        self.data.as_ptr().cast_mut().cast::<u8>()
    }

    fn read(&self) -> Tensor {
        let n = self.len();
        let v = self.data[..n].iter().map(|b| f64::from_bits(*b)).collect();
        Tensor::Float(ArrayD::from_shape_vec(IxDyn(&self.shape), v).expect("slot shape"))
    }

    fn write(&mut self, t: &Tensor) {
        for (o, x) in self.data.iter_mut().zip(t.to_f64().iter()) {
            *o = x.to_bits();
        }
    }

    fn scalar(&self) -> f64 {
        f64::from_bits(self.data[0])
    }
}

/// Every value the loop keeps between its functions.
struct Slots {
    theta: Vec<Slot>,
    /// The previous θ: in `prev[ctx.prev_slot]`. When no update can fail
    /// (`LoopShape::two_prev`), update k+1 stores θ_k into the other slot and makes it the
    /// previous θ only when it commits, so a step handed back after its updates (a
    /// gradient found non-finite only through θ) still has θ_{k−1} there; else
    /// `prev[0]` alone, θ copied into it before the updates.
    prev: [Vec<Slot>; 2],
    grad: Vec<Slot>,
    dir: Vec<Slot>,
    states: Vec<Vec<Slot>>,
    step: Slot,
    loss: Slot,
    gnorm: Slot,
    sharpness: Slot,
    /// 0.0 when θ is all finite, else NaN: written where θ is (the entry's pass, the
    /// updates' own checks).
    theta_check: Slot,
}

/// One of the plan's functions as the loop runs it: its planned buffers (inputs pointing at
/// slots) and its host-op context.
struct Part {
    func: Box<Func>,
    buffers: Buffers,
    host: Box<HostCtx>,
}

/// The compiled loop with its slots.
pub struct TrainLoop {
    module: Option<JITModule>,
    entry: super::LoopEntry,
    slots: Slots,
    _parts: Vec<Part>,
    /// Staging buffers of `LoopEmitter::outputs_to`.
    _temps: Vec<Slot>,
    tie: Box<TieCtx>,
    ctx: Box<LoopCtx>,
}

impl Drop for TrainLoop {
    fn drop(&mut self) {
        if let Some(m) = self.module.take() {
            // SAFETY: `entry` points into this module and dies with `self`.
            unsafe { m.free_memory() };
        }
    }
}

/// The slot each input of a plan function reads, by position.
fn bind_inputs<'s>(f: &Func, slots: &[&'s Slot]) -> Result<Vec<&'s Slot>, String> {
    if f.inputs.len() != slots.len() {
        return Err(format!(
            "internal error: a loop function has {} inputs, the loop binds {}",
            f.inputs.len(),
            slots.len()
        ));
    }
    for ((name, _, shape), s) in f.inputs.iter().zip(slots) {
        if *shape != s.shape {
            return Err(format!(
                "internal error: loop input `{name}` is {shape:?}, its slot {:?}",
                s.shape
            ));
        }
    }
    Ok(slots.to_vec())
}

/// The outputs of `f` (from output `from` on, one for each of `outs`) that are computed
/// straight into their slot, sparing the copy after each step, as `(instruction, slot
/// address)` for `plan`. An output whose slot is one of `f`'s inputs (`inputs` holds their
/// addresses; an update's θ and states) only when `layout::overwrites_safely` says every
/// read of that input comes first, and `f` has no host op that could fail after the slot
/// is overwritten.
fn outputs_in_slots(
    f: &Func,
    inputs: &[*mut u8],
    from: usize,
    outs: &[&Slot],
) -> Vec<(usize, *mut u8)> {
    use super::layout::{self, Storage};
    let storage = layout::storage(f);
    let never_fails = never_fails(f);
    let mut external: Vec<(usize, *mut u8)> = Vec::new();
    for (o, slot) in outs.iter().enumerate() {
        let Some((_, v)) = f.outputs.get(from + o) else {
            break;
        };
        let owner = layout::owner(f, &storage, *v);
        let inst = &f.insts[owner];
        let owned = storage[owner] == Storage::Own
            && !matches!(inst.prim, Prim::Input(_) | Prim::Const(_))
            && inst.shape.iter().product::<usize>() == slot.len()
            && !external.iter().any(|(w, _)| *w == owner);
        let read_here: Vec<usize> = f
            .insts
            .iter()
            .enumerate()
            .filter(
                |(_, i)| matches!(i.prim, Prim::Input(k) if inputs.get(k) == Some(&slot.addr())),
            )
            .map(|(i, _)| i)
            .collect();
        let safe = read_here.is_empty()
            || (never_fails
                && read_here
                    .iter()
                    .all(|i| layout::overwrites_safely(f, &storage, owner, *i)));
        if owned && safe {
            external.push((owner, slot.addr()));
        }
    }
    external
}

/// Whether `f` has no op that can fail (a host op's error): it always runs to its end.
fn never_fails(f: &Func) -> bool {
    use super::layout;
    f.insts
        .iter()
        .enumerate()
        .all(|(i, inst)| match &inst.prim {
            Prim::Input(_) | Prim::Const(_) | Prim::Reshape(_) | Prim::Broadcast(_) => true,
            Prim::Unary(_) | Prim::Binary(_) | Prim::Select => layout::inline_elementwise(f, i),
            Prim::ReduceSum(_) | Prim::ReduceMax(_) | Prim::ReduceMin(_) | Prim::Norm2(_) => {
                inst.dtype == DType::Float && f.insts[inst.args[0]].dtype == DType::Float
            }
            _ => false,
        })
}

/// Whether param `p`'s gradient in `grad` (output `1 + p`: loss, grad:P..., ties) is a
/// product `kernels::small_gemm` computes in two halves of its rows, one a core
/// (`small_gemm::splits_rows`). The loops of that param's update then run in the same
/// halves (`PARALLEL_LOOP` aside): each core updates the rows of θ its half of the
/// gradient is in cache on, and of which its half of the next step's forward product
/// reads θ. sgd's `W` (`[256,32]`, its gradient `select(...)' @ xb`, its forward product
/// `xb @ W'` tiled by W's rows): 12.7–13.0 → 11.9–12.2 µs a step; the same split of the
/// update without the products' splits was 1 µs slower than none (the halves' rows
/// pulled from the other core's cache).
pub(crate) fn gradient_split_by_rows(grad: &Func, p: usize) -> bool {
    let Some(&(_, g)) = grad.outputs.get(1 + p) else {
        return false;
    };
    product(grad, g).is_some_and(|p| {
        grad.insts[g].dtype == DType::Float
            && crate::kernels::small_gemm::splits_rows(p.a_t, p.b_t, p.m, p.k, p.n)
    })
}

/// The instruction reading `f`'s input `k`, if one does.
fn input_inst(f: &Func, k: usize) -> Option<usize> {
    f.insts.iter().position(|i| i.prim == Prim::Input(k))
}

/// `update` with one more output, 0.0 when θ's new value is all finite, else NaN: `sum(t -
/// t)`, `t` that value computed again from the same operands (Cranelift merges the two),
/// which `layout::counts_in_loops` sums in the loop that writes θ: two vector ops more a
/// vector there instead of a pass of its own over θ. `None` when θ's new value is not an
/// elementwise loop's that can sum it; the loop then checks θ's slot by a pass after the
/// update.
fn with_theta_check(update: &Func) -> Option<Func> {
    use super::layout::{self, Storage};
    let (_, v) = *update.outputs.first()?;
    let before = layout::storage(update);
    if before[v] != Storage::Own || !layout::inline_elementwise(update, v) {
        return None;
    }
    let mut f = update.clone();
    let mut copies: HashMap<usize, usize> = HashMap::new();
    let t = copy_fused(&mut f, &before, v, &mut copies);
    let at = |f: &mut Func, prim: Prim, args: Vec<usize>, shape: Vec<usize>| {
        let span = f.insts[v].span;
        f.insts.push(crate::ir::Inst {
            prim,
            args,
            dtype: DType::Float,
            shape,
            span,
        });
        f.insts.len() - 1
    };
    let shape = f.insts[v].shape.clone();
    let d = at(&mut f, Prim::Binary(Binary::Sub), vec![t, t], shape.clone());
    let check = at(
        &mut f,
        Prim::ReduceSum((0..shape.len()).collect()),
        vec![d],
        vec![],
    );
    f.outputs.push(("theta_finite_check".to_string(), check));
    let after = layout::storage(&f);
    let counted = layout::counts_in_loops(&f, &after)
        .get(&v)
        .is_some_and(|c| c.contains(&check));
    (counted && after[..before.len()] == before[..]).then_some(f)
}

/// A copy of `v` and of the values fused into it (`storage` `Fused`) appended to `f`,
/// reading the same operands; returns the copy of `v`.
fn copy_fused(
    f: &mut Func,
    storage: &[super::layout::Storage],
    v: usize,
    copies: &mut HashMap<usize, usize>,
) -> usize {
    if let Some(c) = copies.get(&v) {
        return *c;
    }
    let mut inst = f.insts[v].clone();
    inst.args = inst
        .args
        .iter()
        .map(|a| match storage[*a] {
            super::layout::Storage::Fused => copy_fused(f, storage, *a, copies),
            _ => *a,
        })
        .collect();
    f.insts.push(inst);
    copies.insert(v, f.insts.len() - 1);
    f.insts.len() - 1
}

/// Whether `f`, its inputs bound to `inputs`, uses the value of `slot`: an instruction
/// reads it, or an output is it (an optimizer's `s = loss`).
fn reads(f: &Func, inputs: &[&Slot], slot: &Slot) -> bool {
    f.insts.iter().enumerate().any(|(i, inst)| match inst.prim {
        Prim::Input(k) => {
            std::ptr::eq(inputs[k], slot)
                && (f.insts.iter().any(|u| u.args.contains(&i))
                    || f.outputs.iter().any(|(_, v)| *v == i))
        }
        _ => false,
    })
}

impl TrainLoop {
    /// Compiles `plan`'s loop for a run with `seed`.
    pub fn compile(plan: &Plan, seed: u64) -> Result<TrainLoop, String> {
        Self::build(plan, seed, None)
    }

    /// The textual Cranelift IR of `plan`'s loop (before Cranelift's own optimizations).
    pub fn clif_text(plan: &Plan, seed: u64) -> Result<String, String> {
        let mut text = String::new();
        Self::build(plan, seed, Some(&mut text))?;
        Ok(text)
    }

    fn build(plan: &Plan, seed: u64, text: Option<&mut String>) -> Result<TrainLoop, String> {
        let np = plan.params.len();
        let shapes: Vec<Vec<usize>> = plan.params.iter().map(|p| p.shape.clone()).collect();
        let per_param = || shapes.iter().map(|s| Slot::new(s)).collect::<Vec<_>>();
        let mut states = Vec::new();
        for u in &plan.updates {
            states.push(match u {
                Some(u) => u.step.inputs[5..]
                    .iter()
                    .map(|(_, _, s)| Slot::new(s))
                    .collect(),
                None => vec![],
            });
        }
        let mut sharpness = Slot::new(&[]);
        sharpness.data[0] = f64::NAN.to_bits();
        let slots = Slots {
            theta: per_param(),
            prev: [per_param(), per_param()],
            grad: per_param(),
            dir: per_param(),
            states,
            step: Slot::new(&[]),
            loss: Slot::new(&[]),
            gnorm: Slot::new(&[]),
            sharpness,
            theta_check: Slot::new(&[]),
        };
        let tie = Box::new(TieCtx {
            seed,
            step: slots.step.data.as_ptr().cast::<i64>(),
            dirs: slots
                .dir
                .iter()
                .map(|s| (s.addr().cast::<f64>(), s.len()))
                .collect(),
        });

        // Each function with the slots its inputs read.
        let theta: Vec<&Slot> = slots.theta.iter().collect();
        let mut gf_in = theta.clone();
        gf_in.push(&slots.step);
        let mut ray_in = gf_in.clone();
        ray_in.extend(slots.dir.iter());
        let mut funcs: Vec<(&Func, Vec<&Slot>)> = vec![
            (&plan.grad_fast, bind_inputs(&plan.grad_fast, &gf_in)?),
            (&plan.grad_ray, bind_inputs(&plan.grad_ray, &ray_in)?),
        ];
        let per_step_stop = plan.stop.as_ref().filter(|_| !plan.stop_at_records_only);
        if let Some(f) = per_step_stop {
            let mut inputs = gf_in.clone();
            inputs.extend(slots.grad.iter());
            inputs.extend([&slots.loss, &slots.gnorm, &slots.sharpness]);
            funcs.push((f, bind_inputs(f, &inputs)?));
        }
        let mut update_of = vec![None; np];
        for (p, u) in plan.updates.iter().enumerate() {
            let Some(u) = u else { continue };
            let mut inputs = vec![
                &slots.theta[p],
                &slots.grad[p],
                &slots.step,
                &slots.loss,
                &slots.gnorm,
            ];
            inputs.extend(slots.states[p].iter());
            update_of[p] = Some(funcs.len());
            funcs.push((&u.step, bind_inputs(&u.step, &inputs)?));
        }

        // The quiet gradient (`opt::quiet`) at steps that record nothing, unless the stop
        // test or an update reads the loss.
        let reads_loss = funcs[2..]
            .iter()
            .any(|(f, inputs)| reads(f, inputs, &slots.loss));
        let quiet = match &plan.grad_quiet {
            Some(q) if !reads_loss => {
                funcs.push((q, bind_inputs(q, &gf_in)?));
                Some(funcs.len() - 1)
            }
            _ => None,
        };

        // The slots each function's outputs go to, from its first output on: the
        // gradient functions' gradients, each update's θ and states.
        let grad_slots: Vec<&Slot> = slots.grad.iter().collect();
        let mut targets: Vec<(usize, Vec<&Slot>)> = vec![(1, grad_slots.clone()); 2];
        targets.resize(funcs.len(), (0, vec![]));
        if let Some(q) = quiet {
            targets[q] = (1, grad_slots);
        }
        for (p, j) in update_of.iter().enumerate() {
            if let Some(j) = j {
                let mut outs = vec![&slots.theta[p]];
                outs.extend(slots.states[p].iter());
                targets[*j] = (0, outs);
            }
        }
        let mut parts = Vec::new();
        let mut theta_check = vec![None; funcs.len()];
        for (j, ((f, inputs), (from, outs))) in funcs.iter().zip(&targets).enumerate() {
            let counted = update_of
                .contains(&Some(j))
                .then(|| with_theta_check(f))
                .flatten();
            theta_check[j] = counted.as_ref().map(|g| g.outputs.len() - 1);
            let func = Box::new(counted.unwrap_or_else(|| (*f).clone()));
            // Inputs read their slot in place, except under `precision f32`, where the
            // code copies them in rounded (as the interpreter rounds every input).
            let addrs: Vec<*mut u8> = inputs.iter().map(|s| s.addr()).collect();
            let external = if func.f32 {
                vec![]
            } else {
                outputs_in_slots(&func, &addrs, *from, outs)
            };
            let buffers = super::plan(&func, (!func.f32).then_some(addrs.as_slice()), &external)?;
            let host = Box::new(HostCtx {
                func: &*func,
                bufs: buffers.ptrs.as_ptr(),
                nbufs: buffers.ptrs.len(),
                seed,
                error: None,
            });
            parts.push(Part {
                func,
                buffers,
                host,
            });
        }
        // Two previous-θ slots when no update can fail (`Slots::prev`). A gradient whose
        // non-finite entries are sure to make its θ's new value non-finite
        // (`nonfinite_spreads`) is left to the update's θ check when the step can be
        // handed back after its updates: two previous-θ slots, and no optimizer states
        // (the updates overwrite them).
        let two_prev = plan.updates.iter().flatten().all(|u| never_fails(&u.step));
        let stateless = slots.states.iter().all(|s| s.is_empty());
        let grad_via_theta: Vec<bool> = plan
            .updates
            .iter()
            .map(|u| match u {
                Some(u) if two_prev && stateless => u
                    .step
                    .outputs
                    .first()
                    .is_some_and(|(_, v)| nonfinite_spreads(&u.step, 1, *v)),
                _ => false,
            })
            .collect();
        // gnorm is computed in the loop only when a loop function reads it.
        let needs_gnorm = funcs
            .iter()
            .any(|(f, inputs)| reads(f, inputs, &slots.gnorm));

        let (mut module, ids) = new_module()?;
        let mut func = Function::new();
        func.signature = entry_signature(&module);
        let shape = LoopShape {
            parts: &parts,
            inputs: funcs.iter().map(|(_, s)| s.clone()).collect(),
            slots: &slots,
            per_step_stop: per_step_stop.is_some(),
            update_of,
            theta_check,
            quiet,
            needs_gnorm,
            two_prev,
            grad_via_theta,
        };
        let built = emit_loop(&mut module, &ids, &shape, &mut func);
        if let (Some(t), Ok((_, helpers))) = (text, &built) {
            *t = super::display(&func, helpers);
        }
        let mut temps = Vec::new();
        let code = built.and_then(|(tmp, helpers)| {
            temps = tmp;
            super::finish(&mut module, "traj_loop", func, helpers)
        });
        let (module, entry) = super::loop_entry(module, code)?;
        Ok(TrainLoop {
            module: Some(module),
            entry,
            slots,
            _parts: parts,
            _temps: temps,
            tie,
            ctx: Box::new(LoopCtx {
                k: 0,
                until: 0,
                resume: 0,
                prev_slot: 0,
            }),
        })
    }

    /// Runs from step `k` (with update k+1 first when `resume`) until step `until` or an
    /// earlier exit; returns why and the step it stopped at.
    pub fn run(&mut self, k: u64, until: u64, resume: bool) -> (Exit, u64) {
        self.ctx.k = k as i64;
        self.ctx.until = until as i64;
        self.ctx.resume = resume as i64;
        let ctx = std::ptr::from_mut(&mut *self.ctx).cast::<u8>();
        let tie = std::ptr::from_mut(&mut *self.tie).cast::<u8>();
        // SAFETY: the code was compiled for these slots and buffers, which `self` owns and
        // which nothing else touches while it runs (`&mut self`).
        let code = unsafe { (self.entry)(ctx, tie) };
        let exit = if code == 0 { Exit::Row } else { Exit::Fallback };
        (exit, self.ctx.k as u64)
    }

    pub fn theta(&self) -> Vec<Tensor> {
        self.slots.theta.iter().map(Slot::read).collect()
    }

    /// θ before the last update.
    pub fn prev(&self) -> Vec<Tensor> {
        self.slots.prev[self.ctx.prev_slot as usize]
            .iter()
            .map(Slot::read)
            .collect()
    }

    pub fn states(&self) -> Vec<Vec<Tensor>> {
        self.slots
            .states
            .iter()
            .map(|s| s.iter().map(Slot::read).collect())
            .collect()
    }

    pub fn set_theta(&mut self, theta: &[Tensor]) {
        for (s, t) in self.slots.theta.iter_mut().zip(theta) {
            s.write(t);
        }
    }

    pub fn set_prev(&mut self, prev: &[Tensor]) {
        let slots = &mut self.slots.prev[self.ctx.prev_slot as usize];
        for (s, t) in slots.iter_mut().zip(prev) {
            s.write(t);
        }
    }

    pub fn set_states(&mut self, states: &[Vec<Tensor>]) {
        for (ss, ts) in self.slots.states.iter_mut().zip(states) {
            for (s, t) in ss.iter_mut().zip(ts) {
                s.write(t);
            }
        }
    }

    /// The last step's loss and gradients.
    pub fn gradient(&self) -> (f64, Vec<Tensor>) {
        (
            self.slots.loss.scalar(),
            self.slots.grad.iter().map(Slot::read).collect(),
        )
    }
}

/// What `emit_loop` lays out.
struct LoopShape<'a> {
    /// grad_fast, grad_ray, [stop], updates..., [quiet]
    parts: &'a [Part],
    inputs: Vec<Vec<&'a Slot>>,
    slots: &'a Slots,
    per_step_stop: bool,
    /// The part index of each param's update.
    update_of: Vec<Option<usize>>,
    /// For each part, the output that checks θ's new value (`with_theta_check`).
    theta_check: Vec<Option<usize>>,
    /// The part index of the quiet gradient, run at each step but `until`.
    quiet: Option<usize>,
    needs_gnorm: bool,
    /// Two previous-θ slots (`Slots::prev`): no update can fail.
    two_prev: bool,
    /// For each param, whether its gradient's finiteness is left to its update's θ check
    /// (and checked by a pass only before a row).
    grad_via_theta: Vec<bool>,
}

struct LoopEmitter<'a, 'b, 'c> {
    b: &'a mut FunctionBuilder<'b>,
    module: &'a mut JITModule,
    shims: &'a HashMap<&'static str, FuncId>,
    refs: HashMap<&'static str, cranelift_codegen::ir::FuncRef>,
    shape: &'c LoopShape<'c>,
    host_err: Block,
    temps: Vec<Slot>,
    /// Functions the loop calls, to be defined with it (`emit_func`'s helpers).
    helpers: Vec<(FuncId, Function)>,
}

fn mf() -> MemFlagsData {
    MemFlagsData::trusted()
}

impl LoopEmitter<'_, '_, '_> {
    fn addr(&mut self, p: *mut u8) -> Value {
        self.b.ins().iconst(types::I64, p as i64)
    }

    fn load_f(&mut self, p: *mut u8) -> Value {
        let a = self.addr(p);
        self.b.ins().load(types::F64, mf(), a, 0)
    }

    /// Output `o` of part `j`: its buffer.
    fn out(&self, j: usize, o: usize) -> *mut u8 {
        let part = &self.shape.parts[j];
        let v = part.func.outputs[o].1;
        part.buffers.ptrs[v]
    }

    /// Copies `n` 8-byte elements.
    fn copy(&mut self, src: *mut u8, dst: *mut u8, n: usize) {
        if src == dst || n == 0 {
            return;
        }
        if n == 1 {
            let v = self.load_f(src);
            let at = self.addr(dst);
            self.b.ins().store(mf(), v, at, 0);
            return;
        }
        let (s, d) = (self.addr(src), self.addr(dst));
        self.memcpy(s, d, n);
    }

    /// A `memcpy` of `n` 8-byte elements from address `s` to address `d` (values of the
    /// code).
    fn memcpy(&mut self, s: Value, d: Value, n: usize) {
        let config = self.module.target_config();
        let size = self.b.ins().iconst(types::I64, (n * 8) as i64);
        self.b.call_memcpy(config, d, s, size);
    }

    /// Emits part `j`: its rounded input copies under `precision f32`, then its body.
    fn part(&mut self, j: usize) -> Result<(), String> {
        self.part_keeping(j, None)
    }

    /// `part`, its loop of `keep_old`'s root also storing the old values of its input.
    fn part_keeping(&mut self, j: usize, keep_old: Option<&mut KeepOld>) -> Result<(), String> {
        let shape = self.shape;
        let part = &shape.parts[j];
        let f = &*part.func;
        if f.f32 {
            for (i, inst) in f.insts.iter().enumerate() {
                let Prim::Input(k) = inst.prim else { continue };
                let slot = self.shape.inputs[j][k];
                let n = slot.len();
                if inst.dtype == DType::Int {
                    self.copy(slot.addr(), part.buffers.ptrs[i], n);
                    continue;
                }
                let (src, dst) = (self.addr(slot.addr()), self.addr(part.buffers.ptrs[i]));
                self.each(n, &mut |e, off| {
                    let a = e.b.ins().iadd(src, off);
                    let x = e.b.ins().load(types::F64, mf(), a, 0);
                    let x = e.b.ins().fdemote(types::F32, x);
                    let x = e.b.ins().fpromote(types::F64, x);
                    let a = e.b.ins().iadd(dst, off);
                    e.b.ins().store(mf(), x, a, 0);
                });
            }
        }
        let host = self.addr(std::ptr::from_ref(&*part.host).cast_mut().cast::<u8>());
        let halves_from = match self.shape.update_of.iter().position(|u| *u == Some(j)) {
            Some(p) if gradient_split_by_rows(&self.shape.parts[0].func, p) => 0,
            _ => super::PARALLEL_LOOP,
        };
        emit_func(
            self.b,
            self.module,
            self.shims,
            &mut self.refs,
            &mut self.helpers,
            f,
            Bufs::Fixed(&part.buffers.ptrs),
            host,
            Some(self.host_err),
            keep_old,
            halves_from,
        )?;
        Ok(())
    }

    /// Copies `n` 8-byte elements to the address `dst` (a value of the code), or from it.
    fn copy_dyn(&mut self, fixed: *mut u8, dst: Value, n: usize, to_fixed: bool) {
        if n == 0 {
            return;
        }
        let a = self.addr(fixed);
        let (s, d) = if to_fixed { (dst, a) } else { (a, dst) };
        self.memcpy(s, d, n);
    }

    /// A bottom-tested loop over `n` f64 elements; `body` gets the byte offset.
    fn each(&mut self, n: usize, body: &mut dyn FnMut(&mut Self, Value)) {
        self.each_step(n, 8, body);
    }

    /// A bottom-tested loop of `n` iterations `step` bytes apart; `body` gets the offset.
    fn each_step(&mut self, n: usize, step: usize, body: &mut dyn FnMut(&mut Self, Value)) {
        if n == 0 {
            return;
        }
        let lp = CountedLoop::open(self.b);
        body(self, lp.at);
        lp.close(self.b, step as i64, (n * step) as i64);
    }

    /// 0.0 when all `n` f64 at `p` are finite, else NaN: the sum of `x - x`, which is NaN
    /// in any order as soon as one term is, so it adds eight at a time (four f64x2 in a
    /// tree) into one f64x2 accumulator.
    fn finite_sum(&mut self, p: *mut u8, n: usize, acc: Value) -> Value {
        let base = self.addr(p);
        let wide = n / 8;
        let mut acc = acc;
        if wide > 0 {
            let zero = self.b.ins().f64const(0.0);
            let zero = self.b.ins().splat(types::F64X2, zero);
            let total = self.b.declare_var(types::F64X2);
            self.b.def_var(total, zero);
            self.each_step(wide, 64, &mut |e, off| {
                let a = e.b.ins().iadd(base, off);
                let d: Vec<Value> = (0..4)
                    .map(|k| {
                        let flags = MemFlagsData::new().with_notrap();
                        let x = e.b.ins().load(types::F64X2, flags, a, 16 * k);
                        e.b.ins().fsub(x, x)
                    })
                    .collect();
                let ab = e.b.ins().fadd(d[0], d[1]);
                let cd = e.b.ins().fadd(d[2], d[3]);
                let v = e.b.ins().fadd(ab, cd);
                let s = e.b.use_var(total);
                let s = e.b.ins().fadd(s, v);
                e.b.def_var(total, s);
            });
            let v = self.b.use_var(total);
            for lane in 0..2 {
                let x = self.b.ins().extractlane(v, lane);
                acc = self.b.ins().fadd(acc, x);
            }
        }
        let tail = self.b.ins().iadd_imm_s(base, (wide * 64) as i64);
        self.fold_in_order(tail, n - wide * 8, acc, |b, x| b.ins().fsub(x, x))
    }

    /// Σ x² of `n` f64 at `p`, from -0.0, in order (as `train::gradient_on` sums).
    fn sum_squares(&mut self, p: *mut u8, n: usize) -> Value {
        let base = self.addr(p);
        let z = self.b.ins().f64const(-0.0);
        self.fold_in_order(base, n, z, |b, x| b.ins().fmul(x, x))
    }

    /// `start` plus `term(x)` for each of the `n` f64 at `base`, added one by one in order
    /// (a scalar loop).
    fn fold_in_order(
        &mut self,
        base: Value,
        n: usize,
        start: Value,
        term: fn(&mut FunctionBuilder<'_>, Value) -> Value,
    ) -> Value {
        let var = self.b.declare_var(types::F64);
        self.b.def_var(var, start);
        self.each(n, &mut |e, off| {
            let a = e.b.ins().iadd(base, off);
            let x = e.b.ins().load(types::F64, mf(), a, 0);
            let t = term(e.b, x);
            let s = e.b.use_var(var);
            let s = e.b.ins().fadd(s, t);
            e.b.def_var(var, s);
        });
        self.b.use_var(var)
    }

    /// Copies part `j`'s outputs `[from, from + slots.len())` into `slots`; outputs that are
    /// the part's own inputs or views (perhaps of slots) go through a temporary first, so
    /// no slot is overwritten before it is read.
    fn outputs_to(&mut self, j: usize, from: usize, slots: &[&Slot]) {
        let shape = self.shape;
        let part = &shape.parts[j];
        let f = &*part.func;
        let mut staged = Vec::new();
        let storage = super::layout::storage(f);
        for (o, s) in slots.iter().enumerate() {
            let v = f.outputs[from + o].1;
            let src = part.buffers.ptrs[v];
            let aliased = matches!(f.insts[v].prim, Prim::Input(_))
                || matches!(storage[v], super::layout::Storage::View { .. });
            if aliased && src != s.addr() {
                staged.push((o, src, s.len()));
            }
        }
        let first = self.temps.len();
        for (_, src, n) in &staged {
            let t = Slot::new(&[*n]);
            self.copy(*src, t.addr(), *n);
            self.temps.push(t);
        }
        for (o, s) in slots.iter().enumerate() {
            let src = match staged.iter().position(|(k, _, _)| *k == o) {
                Some(t) => self.temps[first + t].addr(),
                None => self.out(j, from + o),
            };
            self.copy(src, s.addr(), s.len());
        }
    }
}

/// Lays out the loop (see the module doc) in `func`; returns the staging buffers the code
/// uses and the functions it calls that must be defined with it.
#[allow(clippy::type_complexity)]
fn emit_loop(
    module: &mut JITModule,
    shims: &HashMap<&'static str, FuncId>,
    shape: &LoopShape,
    func: &mut Function,
) -> Result<(Vec<Slot>, Vec<(FuncId, Function)>), String> {
    let mut fbc = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(func, &mut fbc);
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let (ctx, tie) = (b.block_params(entry)[0], b.block_params(entry)[1]);
    let host_err = b.create_block();
    b.append_block_param(host_err, types::I64);
    let mut e = LoopEmitter {
        b: &mut b,
        module,
        shims,
        refs: HashMap::new(),
        shape,
        host_err,
        temps: Vec::new(),
        helpers: Vec::new(),
    };
    let slots = shape.slots;
    let np = slots.theta.len();
    let kvar = e.b.declare_var(types::I64);
    let k0 = e.b.ins().load(types::I64, mf(), ctx, 0);
    e.b.def_var(kvar, k0);
    let until = e.b.ins().load(types::I64, mf(), ctx, 8);
    let resume = e.b.ins().load(types::I64, mf(), ctx, 16);
    let top = e.b.create_block();
    let update = e.b.create_block();
    let row = e.b.create_block();
    let row_return = e.b.create_block();
    let fallback = e.b.create_block();
    let start = e.b.create_block();
    e.b.ins().brif(resume, update, &[], start, &[]);

    // θ as the host left it, checked once; the updates check what they write.
    e.b.switch_to_block(start);
    let mut bad = e.b.ins().f64const(0.0);
    for s in &slots.theta {
        bad = e.finite_sum(s.addr(), s.len(), bad);
    }
    let at = e.addr(slots.theta_check.addr());
    e.b.ins().store(mf(), bad, at, 0);
    e.b.ins().jump(top, &[]);

    // The gradient of step k with update k+1's draws.
    e.b.switch_to_block(top);
    let k = e.b.use_var(kvar);
    e.b.ins().store(mf(), k, ctx, 0);
    let step = e.b.ins().iadd_imm_s(k, 1);
    let step_at = e.addr(slots.step.addr());
    e.b.ins().store(mf(), step, step_at, 0);
    let ray = e.b.create_block();
    let checks = e.b.create_block();
    if let Some(q) = shape.quiet {
        // Before `until` the loss is only tested for being finite: the quiet gradient
        // proves it is (its `bounded`, 1.0, then stands in for the loss in its slot),
        // else the full one runs.
        let full = e.b.create_block();
        let quiet = e.b.create_block();
        let at_until = e.b.ins().icmp(IntCC::Equal, k, until);
        e.b.ins().brif(at_until, full, &[], quiet, &[]);
        e.b.switch_to_block(quiet);
        e.part(q)?;
        let bounded = e.load_f(e.out(q, 0));
        let one = e.b.ins().f64const(1.0);
        let proven = e.b.ins().fcmp(FloatCC::Equal, bounded, one);
        let quiet_ok = e.b.create_block();
        e.b.ins().brif(proven, quiet_ok, &[], full, &[]);
        e.b.switch_to_block(quiet_ok);
        e.unless_positive(q, np + 1, ray);
        e.gradient_to_slots(q, checks);
        e.b.switch_to_block(full);
    }
    e.part(0)?;
    e.unless_positive(0, np + 1, ray);
    e.gradient_to_slots(0, checks);

    // An exact tie: the gradient along a random direction (Kakade & Lee).
    e.b.switch_to_block(ray);
    let fill = e.shim("traj_tie_direction")?;
    e.b.ins().call(fill, &[tie]);
    e.part(1)?;
    e.unless_positive(1, np + 1, fallback);
    let loss = e.load_f(e.out(1, 0));
    let ray_loss = e.load_f(e.out(1, np + 2));
    let d = e.b.ins().fsub(ray_loss, loss);
    let d = e.b.ins().fabs(d);
    let one = e.b.ins().f64const(1.0);
    let tol = e.b.ins().fabs(loss);
    let tol = e.b.ins().fadd(one, tol);
    let eps = e.b.ins().f64const(1e-12);
    let tol = e.b.ins().fmul(eps, tol);
    let jumps = e.b.ins().fcmp(FloatCC::GreaterThan, d, tol);
    let fin = e.b.ins().fsub(loss, loss);
    let finite = e.b.ins().fcmp(FloatCC::Equal, fin, fin);
    let jumps = e.b.ins().band(jumps, finite);
    let smooth = e.b.create_block();
    e.b.ins().brif(jumps, fallback, &[], smooth, &[]);
    e.b.switch_to_block(smooth);
    e.gradient_to_slots(1, checks);

    // Loss, gradients and θ all finite, else the host decides (error or divergence).
    e.b.switch_to_block(checks);
    let loss = e.load_f(slots.loss.addr());
    let mut acc = e.b.ins().fsub(loss, loss);
    for (s, via_theta) in slots.grad.iter().zip(&shape.grad_via_theta) {
        if !via_theta {
            acc = e.finite_sum(s.addr(), s.len(), acc);
        }
    }
    let bad = e.load_f(slots.theta_check.addr());
    let acc = e.b.ins().fadd(acc, bad);
    let ok = e.b.ins().fcmp(FloatCC::Equal, acc, acc);
    let good = e.b.create_block();
    e.b.ins().brif(ok, good, &[], fallback, &[]);
    e.b.switch_to_block(good);
    if shape.needs_gnorm {
        let mut total = e.b.ins().f64const(-0.0);
        for s in &slots.grad {
            let sq = e.sum_squares(s.addr(), s.len());
            total = e.b.ins().fadd(total, sq);
        }
        let g = e.b.ins().sqrt(total);
        let at = e.addr(slots.gnorm.addr());
        e.b.ins().store(mf(), g, at, 0);
    }
    if shape.per_step_stop {
        e.part(2)?;
        let v = e.load_f(e.out(2, 0));
        let zero = e.b.ins().f64const(0.0);
        let stop = e.b.ins().fcmp(FloatCC::NotEqual, v, zero);
        let go = e.b.create_block();
        e.b.ins().brif(stop, row, &[], go, &[]);
        e.b.switch_to_block(go);
    }
    let k = e.b.use_var(kvar);
    let at_until = e.b.ins().icmp(IntCC::Equal, k, until);
    e.b.ins().brif(at_until, row, &[], update, &[]);

    // Update k+1 of every param, from gradients taken before any update. θ_k goes to the
    // previous-θ slot not in use (`Slots::prev`; `prev[0]` itself with one slot): stored
    // by the loop of the update that reads it (`KeepOld`; each half of a loop in halves
    // its own rows) where that loop reads θ at every element it writes, else copied before
    // the updates (a param without an update, θ's new value not an elementwise loop of θ,
    // a loop with a column sum, `precision f32`, or one slot: an update that can fail
    // would leave some θ's stored and others not).
    e.b.switch_to_block(update);
    let cur = e.b.ins().load(types::I64, mf(), ctx, 24);
    let prev_at: Vec<Value> = (0..np)
        .map(|p| {
            let first = e.addr(slots.prev[0][p].addr());
            if !shape.two_prev {
                return first;
            }
            let second = e.addr(slots.prev[1][p].addr());
            e.b.ins().select(cur, first, second)
        })
        .collect();
    let copies = e.b.create_block();
    let updates = e.b.create_block();
    e.b.ins().jump(copies, &[]);
    e.b.switch_to_block(updates);
    let mut kept = vec![false; np];
    // θ_{k+1}'s check: each update's, or a pass over its θ (a param without an update
    // keeps the θ the entry checked).
    let mut bad = e.b.ins().f64const(0.0);
    for p in 0..np {
        let Some(j) = shape.update_of[p] else {
            continue;
        };
        let f = &*shape.parts[j].func;
        let mut keep = match (shape.two_prev, f.outputs.first(), input_inst(f, 0)) {
            (true, Some((_, root)), Some(input)) => Some(KeepOld {
                root: *root,
                input,
                into: prev_at[p],
                stored: false,
            }),
            _ => None,
        };
        e.part_keeping(j, keep.as_mut())?;
        kept[p] = keep.is_some_and(|k| k.stored);
        let mut outs: Vec<&Slot> = vec![&slots.theta[p]];
        outs.extend(slots.states[p].iter());
        e.outputs_to(j, 0, &outs);
        bad = match shape.theta_check[j] {
            Some(o) => {
                let check = e.load_f(e.out(j, o));
                e.b.ins().fadd(bad, check)
            }
            None => e.finite_sum(slots.theta[p].addr(), slots.theta[p].len(), bad),
        };
    }
    if shape.grad_via_theta.contains(&true) {
        // A new θ not finite: when a gradient left to this check is not finite either,
        // step k goes back to the host as the checks would have handed it: θ_k restored
        // from the slot just written, the previous θ still θ_{k−1} (there are no states).
        let commit = e.b.create_block();
        let recheck = e.b.create_block();
        let undo = e.b.create_block();
        let finite = e.b.ins().fcmp(FloatCC::Equal, bad, bad);
        e.b.ins().brif(finite, commit, &[], recheck, &[]);
        e.b.switch_to_block(recheck);
        let grads_bad = e.skipped_grads_check();
        let fine = e.b.ins().fcmp(FloatCC::Equal, grads_bad, grads_bad);
        e.b.ins().brif(fine, commit, &[], undo, &[]);
        e.b.switch_to_block(undo);
        for ((t, at), u) in slots.theta.iter().zip(&prev_at).zip(&shape.update_of) {
            if u.is_some() {
                e.copy_dyn(t.addr(), *at, t.len(), true);
            }
        }
        e.b.ins().jump(fallback, &[]);
        e.b.switch_to_block(commit);
    }
    let at = e.addr(slots.theta_check.addr());
    e.b.ins().store(mf(), bad, at, 0);
    if shape.two_prev {
        let other = e.b.ins().bxor_imm_u(cur, 1);
        e.b.ins().store(mf(), other, ctx, 24);
    }
    let k = e.b.use_var(kvar);
    let k1 = e.b.ins().iadd_imm_s(k, 1);
    e.b.def_var(kvar, k1);
    e.b.ins().jump(top, &[]);

    // θ_k into the previous-θ slot where no update's loop stores it.
    e.b.switch_to_block(copies);
    for ((t, at), kept) in slots.theta.iter().zip(&prev_at).zip(&kept) {
        if !kept {
            e.copy_dyn(t.addr(), *at, t.len(), false);
        }
    }
    e.b.ins().jump(updates, &[]);

    // A row hands step k's gradient to the host: the gradients left to the updates' θ
    // checks are checked here first.
    e.b.switch_to_block(row);
    if shape.grad_via_theta.contains(&true) {
        let grads_bad = e.skipped_grads_check();
        let fine = e.b.ins().fcmp(FloatCC::Equal, grads_bad, grads_bad);
        e.b.ins().brif(fine, row_return, &[], fallback, &[]);
    } else {
        e.b.ins().jump(row_return, &[]);
    }

    for (blk, code) in [(row_return, 0), (fallback, 1)] {
        e.b.switch_to_block(blk);
        let c = e.b.ins().iconst(types::I64, code);
        e.b.ins().return_(&[c]);
    }
    e.b.switch_to_block(host_err);
    let c = e.b.ins().iconst(types::I64, 1);
    e.b.ins().return_(&[c]);
    let temps = std::mem::take(&mut e.temps);
    let helpers = std::mem::take(&mut e.helpers);
    b.seal_all_blocks();
    let config = module.target_config();
    b.finalize(config);
    Ok((temps, helpers))
}

impl LoopEmitter<'_, '_, '_> {
    /// Jumps to `to` when output `o` of part `j` (a count) is above 0; else goes on in a
    /// new block.
    fn unless_positive(&mut self, j: usize, o: usize, to: Block) {
        let count = self.load_f(self.out(j, o));
        let zero = self.b.ins().f64const(0.0);
        let positive = self.b.ins().fcmp(FloatCC::GreaterThan, count, zero);
        let next = self.b.create_block();
        self.b.ins().brif(positive, to, &[], next, &[]);
        self.b.switch_to_block(next);
    }

    /// 0.0 when every gradient left to the updates' θ checks is finite, else NaN.
    fn skipped_grads_check(&mut self) -> Value {
        let slots = self.shape.slots;
        let mut acc = self.b.ins().f64const(0.0);
        for (s, via_theta) in slots.grad.iter().zip(&self.shape.grad_via_theta) {
            if *via_theta {
                acc = self.finite_sum(s.addr(), s.len(), acc);
            }
        }
        acc
    }

    /// Part `j`'s first output (the loss) and its gradients into their slots, then on to
    /// `checks`.
    fn gradient_to_slots(&mut self, j: usize, checks: Block) {
        let slots = self.shape.slots;
        self.copy(self.out(j, 0), slots.loss.addr(), 1);
        let grads: Vec<&Slot> = slots.grad.iter().collect();
        self.outputs_to(j, 1, &grads);
        self.b.ins().jump(checks, &[]);
    }

    fn shim(&mut self, name: &'static str) -> Result<cranelift_codegen::ir::FuncRef, String> {
        shim_ref(self.module, self.shims, &mut self.refs, self.b.func, name)
    }
}

#[cfg(test)]
mod tests {
    use super::gradient_split_by_rows;
    use crate::ir::types::DType;
    use crate::ir::{Builder, Func};

    /// A gradient function whose output 1 (param 0's gradient) is `a @ b`, `a` held as its
    /// transpose when `a_t`, `b` when `b_t`.
    fn gradient(m: usize, k: usize, n: usize, a_t: bool, b_t: bool) -> Func {
        let mut b = Builder::new();
        let x = b.input("x", DType::Float, if a_t { vec![k, m] } else { vec![m, k] });
        let y = b.input("y", DType::Float, if b_t { vec![n, k] } else { vec![k, n] });
        let x = if a_t { b.transpose(x, &[1, 0]) } else { x };
        let y = if b_t { b.transpose(y, &[1, 0]) } else { y };
        let g = b.matmul(x, y);
        let loss = b.scalar(0.0);
        b.output("loss", loss);
        b.output("grad:W", g);
        b.finish()
    }

    #[test]
    fn an_update_runs_in_halves_after_a_gradient_split_by_rows() {
        // sgd's `select(...)' @ xb` for W `[256,32]`: split by W's rows.
        assert!(gradient_split_by_rows(
            &gradient(256, 32, 32, true, false),
            0
        ));
        assert!(gradient_split_by_rows(
            &gradient(128, 64, 16, false, false),
            0
        ));
        // Below `SPLIT_GEMM`; tiled by columns (`b` held transposed, m < n: sgd's
        // forward product); left to faer (n 512, or ragged n).
        assert!(!gradient_split_by_rows(
            &gradient(64, 32, 32, true, false),
            0
        ));
        assert!(!gradient_split_by_rows(
            &gradient(32, 32, 256, false, true),
            0
        ));
        assert!(!gradient_split_by_rows(
            &gradient(32, 16, 512, false, false),
            0
        ));
        assert!(!gradient_split_by_rows(
            &gradient(256, 32, 30, false, false),
            0
        ));
        // Another param's gradient.
        assert!(!gradient_split_by_rows(
            &gradient(256, 32, 32, true, false),
            1
        ));
    }
}
