//! The compiler as one pipeline, one function a stage: text → checked program → statics →
//! IR → gradient → optimized → plan → backend. `traj run`, `sweep`, `ir` and a REPL
//! `Session` are its callers; nothing else assembles the stages.

use std::time::Instant;

pub mod backend;
pub mod statics;

use crate::diag::SourceMap;
use crate::error::RunError;
use crate::ir::Func;
use crate::jit::train_loop::TrainLoop;
use crate::plan::Plan;
use crate::sema::Checked;
use backend::{Backend, Engine, Exec};
use statics::{Kept, Statics};

/// Stages 1–2: text (`check_file`: a file, `check_text`: program text) → a checked
/// program (parsed, names resolved, consts, kinds, types and shapes checked), or every
/// error as a `Diagnostic`.
pub use crate::sema::check::{check_file, check_source as check_text};

/// Stage 3: the static values (consts from data, data, loaded files, initial params).
pub fn statics(checked: &Checked, sources: &SourceMap) -> Result<Statics, RunError> {
    statics_with(checked, sources, &mut Kept::default())
}

/// Stage 3 taking from `kept` what a session evaluated before and still holds.
pub fn statics_with(
    checked: &Checked,
    sources: &SourceMap,
    kept: &mut Kept,
) -> Result<Statics, RunError> {
    statics::evaluate_with(checked, sources, seed_of(checked), kept)
}

/// The run's seed: the const `seed` (default 0).
pub fn seed_of(checked: &Checked) -> u64 {
    use crate::ir::types::Scalar;
    match checked.consts.get("seed") {
        Some(Scalar::Int(s)) => *s as u64,
        Some(Scalar::Float(s)) => *s as u64,
        None => 0,
    }
}

/// Stage 4: the loss lowered to IR (output `loss`).
pub fn lower(checked: &Checked, statics: &Statics) -> Result<Func, RunError> {
    let params = crate::plan::params_of(checked);
    let (mut l, _, _) = crate::plan::with_params(checked, statics, &params);
    let loss = crate::plan::loss_var(&mut l, checked)?;
    l.b.output("loss", loss);
    Ok(l.b.finish())
}

/// Stage 5: the loss with its gradient by reverse mode and its tie count (outputs `loss`,
/// `grad:P`..., `ties`), verified.
pub fn gradient(checked: &Checked, statics: &Statics) -> Result<Func, RunError> {
    let f = crate::plan::gradient_func(checked, statics, &crate::plan::params_of(checked))?;
    crate::ir::verify(&f)?;
    Ok(f)
}

/// Stage 6's result: the simplified gradient, and its variant for steps that record
/// nothing where it is worth having (`opt::quiet`).
#[derive(Clone, Debug)]
pub struct Optimized {
    pub fast: Func,
    pub quiet: Option<Func>,
}

/// Stage 6: the simplification passes (`opt`) on the gradient.
pub fn optimize(gradient: Func) -> Result<Optimized, RunError> {
    let fast = crate::plan::fast_gradient(gradient)?;
    let quiet = crate::plan::quiet_gradient(&fast)?;
    Ok(Optimized { fast, quiet })
}

/// Stage 7: the plan both backends run (directional gradient, updates, records, stop,
/// HVP around the optimized gradient); `steps` overrides the train block's.
pub fn plan(
    checked: &Checked,
    statics: &Statics,
    optimized: Optimized,
    steps: Option<u64>,
) -> Result<Plan, RunError> {
    crate::plan::build(checked, statics, optimized.fast, optimized.quiet, steps)
}

/// Stage 8's result: a plan with what `backend` compiled of it (`train::Engine`: the step
/// loop as one native function and the row functions for the JIT, nothing for the
/// interpreter).
pub struct Compiled {
    pub plan: Plan,
    pub engine: Engine,
    pub backend: Backend,
    pub seed: u64,
    /// Seconds the stages from the gradient on took.
    pub compile_seconds: f64,
}

impl Compiled {
    /// The plan's functions on its backend (row functions compiled on the JIT).
    pub fn exec(&self) -> Exec<'_> {
        self.engine.exec(&self.plan)
    }

    /// The plan's functions on the interpreter.
    pub fn interp(&self) -> Exec<'_> {
        Exec::interp(&self.plan)
    }
}

/// Stage 8: the backend's compiled form of `plan`. `TRAJ_DUMP=clif` prints each compiled
/// function's Cranelift IR on stderr.
pub fn backend(plan: Plan, backend: Backend, seed: u64) -> Result<Compiled, RunError> {
    let t0 = Instant::now();
    let engine = Engine::compile(&plan, backend, seed)?;
    Ok(Compiled {
        plan,
        engine,
        backend,
        seed,
        compile_seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Stages 3–7: the statics and the plan of a checked program.
pub fn prepare(
    checked: &Checked,
    sources: &SourceMap,
    steps: Option<u64>,
) -> Result<(Statics, Plan), RunError> {
    let statics = statics(checked, sources)?;
    let plan = plan_of(checked, &statics, steps)?;
    Ok((statics, plan))
}

/// Stages 4–7 on given statics.
fn plan_of(checked: &Checked, statics: &Statics, steps: Option<u64>) -> Result<Plan, RunError> {
    let optimized = optimize(gradient(checked, statics)?)?;
    plan(checked, statics, optimized, steps)
}

/// Stages 4–8 on given statics: the compiled program (`compile_seconds` counts them all).
pub fn compile(
    checked: &Checked,
    statics: &Statics,
    steps: Option<u64>,
    backend_kind: Backend,
) -> Result<Compiled, RunError> {
    let t0 = Instant::now();
    let plan = plan_of(checked, statics, steps)?;
    let mut compiled = backend(plan, backend_kind, seed_of(checked))?;
    compiled.compile_seconds = t0.elapsed().as_secs_f64();
    Ok(compiled)
}

/// A stage `traj ir --stage` prints after checking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The loss lowered to IR.
    Ir,
    /// The loss, its gradient and the tie count.
    Grad,
    /// The gradient after the passes (and its quiet variant, where there is one).
    Opt,
    /// The Cranelift IR: of the whole step loop when the program trains, else of `Opt`.
    Clif,
}

/// The program at `stage`, as `traj ir --stage` prints it.
pub fn print(checked: &Checked, sources: &SourceMap, stage: Stage) -> Result<String, RunError> {
    let statics = statics(checked, sources)?;
    if stage == Stage::Ir {
        return Ok(crate::ir::print(&lower(checked, &statics)?));
    }
    let gradient = gradient(checked, &statics)?;
    if stage == Stage::Grad {
        return Ok(crate::ir::print(&gradient));
    }
    if stage == Stage::Clif && crate::plan::has_train(checked) {
        let plan = plan_of(checked, &statics, None)?;
        return Ok(TrainLoop::clif_text(&plan, seed_of(checked))?);
    }
    let optimized = optimize(gradient)?;
    if stage == Stage::Clif {
        return Ok(crate::jit::clif_text(&optimized.fast)?);
    }
    let mut text = crate::ir::print(&optimized.fast);
    if let Some(q) = &optimized.quiet {
        text.push_str("# at steps that record nothing (`opt::quiet`):\n");
        text.push_str(&crate::ir::print(q));
    }
    Ok(text)
}
