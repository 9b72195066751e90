//! Stage 8, the backend: a plan compiled for the interpreter or the JIT (`Engine`), and
//! its functions evaluated by role (`Exec`).

use crate::error::RunError;
use crate::interp::{self, Env};
use crate::ir::Func;
use crate::jit::train_loop::TrainLoop;
use crate::plan::Plan;
use crate::tensor::Tensor;

/// Which backend evaluates a plan's functions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// The reference interpreter.
    Interp,
    /// The step loop compiled to one native function with Cranelift (`jit::train_loop`).
    #[default]
    Jit,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Interp => "interp",
            Backend::Jit => "jit",
        }
    }
}

/// A function of the plan evaluated at rows, which the JIT backend compiles (its step loop,
/// `jit::train_loop`, computes the gradients and updates between rows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowFn {
    /// The fast gradient, compiled only for a gradient flow (whose stages call it from the
    /// host; a `gd` run's gradients are the step loop's).
    Gradient,
    Record,
    Stop,
    /// The Hessian-vector product's part that does not depend on the direction
    /// (`plan::Hvp`), and the rest.
    HvpAt,
    HvpApply,
}

/// The row functions of a plan compiled by the JIT.
pub struct RowFns {
    gradient: Option<crate::jit::Compiled>,
    record: crate::jit::Compiled,
    stop: Option<crate::jit::Compiled>,
    hvp: Option<[crate::jit::Compiled; 2]>,
}

/// A plan compiled for one backend: nothing for the interpreter; for the JIT, the step
/// loop as one native function (`jit::train_loop`) and the row functions.
pub enum Engine {
    Interp,
    Jit {
        rows: Box<RowFns>,
        /// `None` for a gradient flow, which runs no steps of its own.
        step_loop: Option<Box<TrainLoop>>,
    },
}

impl Engine {
    /// The plan's functions on this engine: row functions compiled on the JIT.
    pub fn exec<'p>(&'p self, plan: &'p Plan) -> Exec<'p> {
        let rows = match self {
            Engine::Interp => None,
            Engine::Jit { rows, .. } => Some(&**rows),
        };
        Exec { plan, rows }
    }

    /// The plan's functions and its step loop (`None` on the interpreter or for a flow),
    /// borrowed together for the loop (`train::advance`).
    pub fn split<'p>(&'p mut self, plan: &'p Plan) -> (Exec<'p>, Option<&'p mut TrainLoop>) {
        match self {
            Engine::Interp => (Exec::interp(plan), None),
            Engine::Jit { rows, step_loop } => (
                Exec {
                    plan,
                    rows: Some(&**rows),
                },
                step_loop.as_deref_mut(),
            ),
        }
    }

    pub fn compile(plan: &Plan, backend: Backend, seed: u64) -> Result<Engine, String> {
        if backend == Backend::Interp {
            return Ok(Engine::Interp);
        }
        // `TRAJ_DUMP=clif`: each function's Cranelift IR on stderr as it is compiled.
        let dump = std::env::var("TRAJ_DUMP").is_ok_and(|v| v == "clif");
        let compile = |f: &Func| {
            if dump {
                eprintln!("{}", crate::jit::clif_text(f)?);
            }
            crate::jit::compile(f)
        };
        let rows = Box::new(RowFns {
            gradient: plan
                .flow
                .is_some()
                .then(|| compile(&plan.grad_fast))
                .transpose()?,
            record: compile(&plan.record)?,
            stop: plan.stop.as_ref().map(compile).transpose()?,
            hvp: match &plan.hvp {
                Some(h) => Some([compile(&h.at)?, compile(&h.apply)?]),
                None => None,
            },
        });
        if dump {
            eprintln!("{}", TrainLoop::clif_text(plan, seed)?);
        }
        if plan.flow.is_some() {
            return Ok(Engine::Jit {
                rows,
                step_loop: None,
            });
        }
        let step_loop = Some(Box::new(TrainLoop::compile(plan, seed)?));
        Ok(Engine::Jit { rows, step_loop })
    }
}

/// One plan on one backend, for the loop: [`Exec::eval`] runs any function of the plan on
/// the interpreter, [`Exec::eval_row`] a row function, compiled when the backend is the JIT.
pub struct Exec<'p> {
    pub plan: &'p Plan,
    rows: Option<&'p RowFns>,
}

impl<'p> Exec<'p> {
    /// Every function of `plan` on the interpreter.
    pub fn interp(plan: &'p Plan) -> Exec<'p> {
        Exec { plan, rows: None }
    }

    /// Whether the row functions are compiled (the JIT backend).
    pub fn is_compiled(&self) -> bool {
        self.rows.is_some()
    }

    /// Evaluates `f`, a function of the plan, on the interpreter.
    pub fn eval(&self, f: &Func, inputs: &[Tensor], seed: u64) -> Result<Vec<Tensor>, RunError> {
        eval(f, inputs, seed)
    }

    /// Evaluates row function `which`: compiled on the JIT backend, else interpreted.
    pub fn eval_row(
        &self,
        which: RowFn,
        inputs: &[Tensor],
        seed: u64,
    ) -> Result<Vec<Tensor>, RunError> {
        let plan = self.plan;
        let (f, compiled) = match which {
            RowFn::Gradient => (
                Some(&plan.grad_fast),
                self.rows.and_then(|r| r.gradient.as_ref()),
            ),
            RowFn::Record => (Some(&plan.record), self.rows.map(|r| &r.record)),
            RowFn::Stop => (plan.stop.as_ref(), self.rows.and_then(|r| r.stop.as_ref())),
            RowFn::HvpAt => (
                plan.hvp.as_ref().map(|h| &h.at),
                self.rows.and_then(|r| r.hvp.as_ref()).map(|h| &h[0]),
            ),
            RowFn::HvpApply => (
                plan.hvp.as_ref().map(|h| &h.apply),
                self.rows.and_then(|r| r.hvp.as_ref()).map(|h| &h[1]),
            ),
        };
        match (compiled, f) {
            (Some(c), _) => Ok(c.run(inputs, seed)?),
            (None, Some(f)) => eval(f, inputs, seed),
            (None, None) => Err(RunError::new(format!(
                "internal error: the plan has no {which:?} function"
            ))),
        }
    }
}

fn eval(f: &Func, inputs: &[Tensor], seed: u64) -> Result<Vec<Tensor>, RunError> {
    interp::eval(f, inputs, Env { seed }).map_err(|e| {
        let error = RunError::new(e.message);
        match f.insts.get(e.inst) {
            Some(inst) => error.at(inst.span, ""),
            None => error,
        }
    })
}
