//! The run driver: static values, then the loop of LANGUAGE.md section 3.10 — row k holds
//! θ_k and every per-step value at row k uses update k+1's draws; at each k: the gradient
//! (resolving exact ties as `autodiff` documents), divergence, stop or the last step,
//! recording, then update k+1. Runs on the reference interpreter or the JIT's loop; rows
//! go to a [`Rows`] sink as they are recorded (the run folder's `trajectory.csv` appends
//! them), so no run holds its trajectory; an interrupt flag ends the loop at a step boundary.
//! [`advance`] runs the loop from a saved [`RunState`] up to a given step: `traj run` calls
//! it once, a REPL session once per `:step` (its rows kept in memory, in a [`Trajectory`]).

pub mod flow;
pub mod schedule;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ndarray::{ArrayD, IxDyn};

use crate::diag::SourceMap;
use crate::error::RunError;
use crate::interp::{self, Env};
use crate::ir::Func;
use crate::ir::types::Scalar;
use crate::jit::train_loop::{Exit, TrainLoop};
use crate::output::{Rows, RunInfo, Trajectory, column_names};
pub use crate::pipeline::backend::{Backend, Engine, Exec, RowFn, RowFns};
pub use crate::pipeline::{seed_of, statics};
use crate::plan::Plan;
use crate::rng::Stream;
use crate::sema::Checked;
use crate::tensor::Tensor;
use schedule::RecordSchedule;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Finished,
    Stopped,
    Diverged,
    Error,
    /// SIGINT or SIGTERM (the run's interrupt flag) ended the run at a step boundary.
    Interrupted,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Finished => "finished",
            Status::Stopped => "stopped",
            Status::Diverged => "diverged",
            Status::Error => "error",
            Status::Interrupted => "interrupted",
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// `--steps N`: overrides the train block's `steps`.
    pub steps: Option<u64>,
    /// `--time T`: overrides a gradient flow's `time`.
    pub time: Option<f64>,
    /// Told how far the loop is, at most [`PROGRESS_EVERY`] steps or [`PROGRESS_INTERVAL`]
    /// apart.
    pub progress: Option<Progress>,
    /// `--backend`.
    pub backend: Backend,
    /// Once set, the run ends at the next step boundary with status `interrupted`: the
    /// interpreter looks at every step, the JIT's loop returns to look at least every
    /// [`INTERRUPT_INTERVAL`].
    pub interrupt: Option<&'static AtomicBool>,
}

/// A progress callback: `(k, steps)` — the loop is at step k of at most `steps`.
#[derive(Clone)]
pub struct Progress(pub std::sync::Arc<dyn Fn(u64, u64) + Send + Sync>);

impl Progress {
    pub fn new(f: impl Fn(u64, u64) + Send + Sync + 'static) -> Progress {
        Progress(std::sync::Arc::new(f))
    }
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress(..)")
    }
}

/// The most steps between two progress calls.
pub const PROGRESS_EVERY: u64 = 1000;
/// The most time between two progress calls, however slow the steps.
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);
/// The most time the JIT's loop runs without looking at the interrupt flag.
pub const INTERRUPT_INTERVAL: Duration = Duration::from_millis(50);

#[derive(Clone, Debug)]
pub struct RunResult {
    pub status: Status,
    /// Updates applied to the saved params.
    pub steps: u64,
    /// The columns, and every row when the rows went to this trajectory (`session::run`);
    /// no rows when they went elsewhere (`session::run_with`).
    pub trajectory: Trajectory,
    /// The step of the last recorded row.
    pub last_step: Option<u64>,
    /// The last recorded value of each column that has one, in column order.
    pub last: Vec<(String, f64)>,
    /// The saved params (θ at the last row for a divergence).
    pub params: Vec<(String, Tensor)>,
    pub message: Option<String>,
    /// The error that ended the run (status `error`), with its step and spans.
    pub error: Option<RunError>,
    pub seed: u64,
    pub compile_seconds: f64,
    pub run_seconds: f64,
    /// A gradient flow's steps and gradient evaluations.
    pub flow: Option<crate::output::FlowCounts>,
}

fn scalar_of(t: &Tensor) -> f64 {
    t.to_f64().iter().next().copied().unwrap_or(f64::NAN)
}

fn int_tensor(v: i64) -> Tensor {
    Tensor::Int(ArrayD::from_elem(IxDyn(&[]), v))
}

/// The gradient at θ with update `step`'s draws: plain reverse mode, or, when an exact
/// tie occurs, Kakade & Lee's directional variant (see `autodiff`).
#[derive(Clone, Debug)]
pub struct Gradient {
    pub loss: f64,
    pub grads: Vec<Tensor>,
    /// The Euclidean norm of all gradients together.
    pub gnorm: f64,
}

pub fn gradient(plan: &Plan, theta: &[Tensor], step: u64, seed: u64) -> Result<Gradient, RunError> {
    gradient_on(&Exec::interp(plan), theta, step, seed)
}

/// The gradient at θ with update `step`'s draws, evaluated by `exec`.
pub fn gradient_on(
    exec: &Exec,
    theta: &[Tensor],
    step: u64,
    seed: u64,
) -> Result<Gradient, RunError> {
    let plan = exec.plan;
    let mut inputs: Vec<Tensor> = theta.to_vec();
    inputs.push(int_tensor(step as i64));
    let out = exec.eval_row(RowFn::Gradient, &inputs, seed)?;
    let n = plan.params.len();
    let ties = scalar_of(&out[n + 1]);
    let (loss, grads) = if ties > 0.0 {
        // One Gaussian direction over all params, keyed by (seed, step).
        let rng = Stream::new(seed, "tie", step);
        let mut offset = 0u64;
        for p in &plan.params {
            let len: usize = p.shape.iter().product();
            let v: Vec<f64> = (0..len as u64).map(|i| rng.normal(offset + i)).collect();
            offset += len as u64;
            inputs.push(Tensor::Float(
                ArrayD::from_shape_vec(IxDyn(&p.shape), v).map_err(|e| e.to_string())?,
            ));
        }
        let out = exec.eval(&plan.grad_ray, &inputs, seed)?;
        let loss = scalar_of(&out[0]);
        if scalar_of(&out[n + 1]) > 0.0 {
            return Err(RunError::new(
                "a comparison or `sign` sits exactly at a tie that the direction cannot resolve: no Clarke subgradient can be certified",
            ));
        }
        let ray_loss = scalar_of(&out[n + 2]);
        if loss.is_finite() && (ray_loss - loss).abs() > 1e-12 * (1.0 + loss.abs()) {
            return Err(RunError::new(format!(
                "the loss jumps at this point (it is {loss} here but tends to {ray_loss} along the tie direction): no Clarke subgradient"
            )));
        }
        (loss, out[1..=n].to_vec())
    } else {
        (scalar_of(&out[0]), out[1..=n].to_vec())
    };
    if loss.is_finite()
        && grads
            .iter()
            .any(|g| g.to_f64().iter().any(|x| !x.is_finite()))
    {
        let error = RunError::new(
            "the gradient is not finite: `sqrt`, `log`, a division or a negative power at 0 lies on its path, where no Clarke subgradient exists",
        );
        return Err(match singular_op(&plan.grad_fast, &inputs[..=n], seed) {
            Some((op, span)) => error.at(span, format!("`{op}` at 0")),
            None => error,
        });
    }
    let gnorm = norm(&grads);
    Ok(Gradient { loss, grads, gnorm })
}

/// The Euclidean norm of all of `grads` together: each tensor's Σ x² in order, summed.
fn norm(grads: &[Tensor]) -> f64 {
    grads
        .iter()
        .map(|t| t.to_f64().iter().map(|x| x * x).sum::<f64>())
        .sum::<f64>()
        .sqrt()
}

/// The first `sqrt` or `log` of an exact 0, division by an exact 0 or 0 to a negative
/// power in `f`: where a gradient stops having a Clarke subgradient. Instructions of the
/// gradient carry the span of the operation they differentiate (`autodiff`).
fn singular_op(
    f: &Func,
    inputs: &[Tensor],
    seed: u64,
) -> Option<(&'static str, crate::diag::Span)> {
    use crate::ir::{Binary, Prim, Unary};
    let vals = interp::eval_all(f, inputs, Env { seed }).ok()?;
    let has_zero = |v: usize| vals[v].to_f64().iter().any(|x| *x == 0.0);
    let zero_to_negative = |x: usize, e: usize| {
        let (x, e) = (vals[x].to_f64(), vals[e].to_f64());
        x.iter().zip(e.iter()).any(|(x, e)| *x == 0.0 && *e < 0.0)
    };
    f.insts.iter().find_map(|inst| {
        let op = match inst.prim {
            Prim::Unary(Unary::Sqrt) if has_zero(inst.args[0]) => "sqrt",
            Prim::Unary(Unary::Log) if has_zero(inst.args[0]) => "log",
            Prim::Binary(Binary::Div) if has_zero(inst.args[1]) => "/",
            Prim::Binary(Binary::Pow) if zero_to_negative(inst.args[0], inst.args[1]) => "^",
            _ => return None,
        };
        Some((op, inst.span))
    })
}

/// Static values and the plan of a checked program (`pipeline::prepare`), with the run's
/// `--steps` and `--time`.
pub fn prepare(
    checked: &Checked,
    sources: &SourceMap,
    options: &RunOptions,
) -> Result<(statics::Statics, Plan), RunError> {
    let (statics, mut plan) = crate::pipeline::prepare(checked, sources, options.steps)?;
    if let Some(f) = &mut plan.flow {
        f.time = options.time.unwrap_or(f.time);
    }
    Ok((statics, plan))
}

/// Where a run is between steps: what the host keeps while either backend steps.
struct Driver<'a> {
    exec: &'a Exec<'a>,
    sources: &'a SourceMap,
    seed: u64,
    schedule: RecordSchedule,
    rows: &'a mut dyn Rows,
    interrupt: Option<&'static AtomicBool>,
    /// The step of the last row recorded.
    last_step: Option<u64>,
    /// The last value recorded in each column.
    last: Vec<Option<f64>>,
    /// θ_{k−1} and k−1, once an update was made.
    previous: Option<(Vec<Tensor>, u64)>,
    message: Option<String>,
    /// The error that ended the run, when one did.
    error: Option<RunError>,
}

impl Driver<'_> {
    /// Hands row k to the sink, keeping its values as the columns' last ones.
    fn push(&mut self, k: u64, row: Vec<Option<f64>>) -> Result<(), String> {
        for (last, cell) in self.last.iter_mut().zip(&row) {
            if cell.is_some() {
                *last = *cell;
            }
        }
        self.last_step = Some(k);
        self.rows.push(k, row)
    }

    fn interrupted(&self) -> bool {
        self.interrupt.is_some_and(|f| f.load(Ordering::Relaxed))
    }

    /// Ends the run at step k: its gradient could not be computed.
    fn error(&mut self, k: u64, e: RunError) -> Status {
        let e = e.at_step(k);
        self.message = Some(e.located(self.sources));
        self.error = Some(e);
        Status::Error
    }

    /// Step k after its gradient `g`: divergence, the stop test, the last row, recording.
    /// Returns the status when the run ends here (after a divergence `theta` and `k` are
    /// θ_{k−1} and k−1).
    fn after_gradient(
        &mut self,
        theta: &mut Vec<Tensor>,
        k: &mut u64,
        g: &Gradient,
    ) -> Result<Option<Status>, RunError> {
        let (exec, plan, seed) = (self.exec, self.exec.plan, self.seed);
        let bad_param = plan
            .params
            .iter()
            .zip(theta.iter())
            .find(|(_, t)| t.to_f64().iter().any(|x| !x.is_finite()))
            .map(|(p, _)| p.name.clone());
        if !g.loss.is_finite() || bad_param.is_some() {
            let what = match bad_param {
                Some(p) => format!("param `{p}` is not finite"),
                None => format!("loss = {}", crate::output::format_float(g.loss)),
            };
            self.message = Some(format!("diverged at step {k}: {what}"));
            // The last row and the saved params are θ_{k−1}.
            if let Some((prev, pk)) = self.previous.take() {
                if self.last_step != Some(pk) {
                    let gp = gradient_on(exec, &prev, pk + 1, seed)?;
                    let row = record_row(exec, &prev, &gp, pk, &self.schedule, seed, true)?;
                    self.push(pk, row)?;
                }
                *theta = prev;
                *k = pk;
            }
            return Ok(Some(Status::Diverged));
        }
        let due = self.schedule.due(*k);
        let stop = match &plan.stop {
            // The last row is recorded, so an observable condition is tested there too.
            Some(_) if !plan.stop_at_records_only || due || *k == plan.steps => {
                let inputs = record_inputs(plan, theta, g, *k, f64::NAN, f64::NAN);
                scalar_of(&exec.eval_row(RowFn::Stop, &inputs, seed)?[0]) != 0.0
            }
            _ => false,
        };
        let interrupted = self.interrupted();
        if stop || *k == plan.steps || interrupted {
            let row = record_row(exec, theta, g, *k, &self.schedule, seed, true)?;
            self.push(*k, row)?;
            let status = if stop {
                Status::Stopped
            } else if *k == plan.steps {
                Status::Finished
            } else {
                self.message = Some(format!("interrupted at step {k}"));
                Status::Interrupted
            };
            return Ok(Some(status));
        }
        if due {
            let row = record_row(exec, theta, g, *k, &self.schedule, seed, false)?;
            self.push(*k, row)?;
        }
        self.rows.tick()?;
        Ok(None)
    }

    /// Step k on the host: the gradient, `after_gradient`, then update k+1 (k advances).
    /// Returns the status when the run ends here.
    fn step(
        &mut self,
        theta: &mut Vec<Tensor>,
        states: &mut [Vec<Tensor>],
        k: &mut u64,
    ) -> Result<Option<Status>, RunError> {
        let g = match gradient_on(self.exec, theta, *k + 1, self.seed) {
            Ok(g) => g,
            Err(e) => return Ok(Some(self.error(*k, e))),
        };
        if let Some(status) = self.after_gradient(theta, k, &g)? {
            return Ok(Some(status));
        }
        self.update(theta, states, &g, *k)?;
        *k += 1;
        Ok(None)
    }

    /// Update k+1 of every param on the host, from gradients taken before any update.
    fn update(
        &mut self,
        theta: &mut [Tensor],
        states: &mut [Vec<Tensor>],
        g: &Gradient,
        k: u64,
    ) -> Result<(), RunError> {
        self.previous = Some((theta.to_vec(), k));
        for (i, u) in self.exec.plan.updates.iter().enumerate() {
            let Some(u) = u else { continue };
            let mut inputs = vec![
                theta[i].clone(),
                g.grads[i].clone(),
                int_tensor(k as i64 + 1),
                Tensor::scalar(g.loss),
                Tensor::scalar(g.gnorm),
            ];
            inputs.extend(states[i].iter().cloned());
            let out = self.exec.eval(&u.step, &inputs, self.seed)?;
            theta[i] = out[0].clone();
            states[i] = out[1..].to_vec();
        }
        Ok(())
    }
}

/// The `run.json` of a run of `program` (the path as given), as `traj run` writes it.
pub fn run_info(program: &Path, checked: &Checked, result: &RunResult, backend: &str) -> RunInfo {
    let text = std::fs::read(program).unwrap_or_default();
    RunInfo {
        program: program.display().to_string(),
        source_sha256: crate::output::sha256_hex(&text),
        consts: checked
            .consts
            .iter()
            .map(|(k, v)| {
                let j = match v {
                    Scalar::Int(i) => serde_json::json!(i),
                    Scalar::Float(f) => serde_json::json!(f),
                };
                (k.clone(), j)
            })
            .collect(),
        seed: result.seed as i64,
        backend: backend.into(),
        status: result.status.name().into(),
        steps: result.steps,
        compile_seconds: result.compile_seconds,
        run_seconds: result.run_seconds,
        version: env!("CARGO_PKG_VERSION").into(),
        message: result.message.clone(),
        flow: result.flow.clone(),
    }
}

/// A gradient flow's run (`flow::integrate`) for `session::run_with`, which steps every
/// other program in a `Session`.
pub fn run_flow(
    exec: &Exec,
    statics: &statics::Statics,
    sources: &SourceMap,
    options: &RunOptions,
    rows: &mut dyn Rows,
    seed: u64,
    t0: Instant,
) -> Result<RunResult, RunError> {
    let plan = exec.plan;
    let compile_seconds = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let theta = initial_theta(plan, statics)?;
    let columns = flow::columns(plan);
    rows.start(&columns)?;
    let out = flow::integrate(exec, sources, &theta, seed, options, rows)?;
    let run_seconds = t1.elapsed().as_secs_f64() - out.compile_seconds;
    Ok(RunResult {
        status: out.status,
        steps: out.counts.accepted_steps,
        trajectory: Trajectory {
            columns: columns.clone(),
            rows: Vec::new(),
        },
        last_step: out.last_step,
        last: columns
            .iter()
            .zip(&out.last)
            .filter_map(|(c, v)| v.map(|v| (c.clone(), v)))
            .collect(),
        params: plan
            .params
            .iter()
            .map(|p| p.name.clone())
            .zip(out.theta)
            .collect(),
        message: out.message,
        error: out.error,
        seed,
        compile_seconds: compile_seconds + out.compile_seconds,
        run_seconds,
        flow: Some(out.counts),
    })
}

/// Every param's initial value, in the plan's order.
pub fn initial_theta(plan: &Plan, statics: &statics::Statics) -> Result<Vec<Tensor>, RunError> {
    plan.params
        .iter()
        .map(|p| {
            statics
                .values
                .get(&format!("init:{}", p.name))
                .cloned()
                .ok_or_else(|| RunError::new(format!("no initial value for `{}`", p.name)))
        })
        .collect()
}

/// Where a run is between two calls of [`advance`]: what `traj run` carries from step 0
/// to its end in one call, and a REPL session keeps between `:step`s. The rows are not
/// here: each call hands them to its [`Rows`] sink.
#[derive(Clone, Debug)]
pub struct RunState {
    pub theta: Vec<Tensor>,
    pub states: Vec<Vec<Tensor>>,
    /// The step the run is at: θ is θ_k.
    pub k: u64,
    /// Step k's gradient is computed and its row handled: update k+1 comes next. Set to
    /// false whenever θ, the states or the compiled loop are replaced.
    pub resume: bool,
    /// Step k's gradient when `resume` on the interpreter.
    pending: Option<Gradient>,
    /// θ_{k−1} and k−1, once an update was made.
    pub previous: Option<(Vec<Tensor>, u64)>,
    /// Why the last call of [`advance`] ended the run (or was interrupted), located.
    pub message: Option<String>,
    /// The error that ended the run (status `error`), with its step and spans.
    pub error: Option<RunError>,
    /// The step of the last row recorded.
    pub last_step: Option<u64>,
    /// The last value recorded in each column.
    pub last: Vec<Option<f64>>,
    pub seed: u64,
}

impl RunState {
    /// Step 0 at `theta`, the optimizer states initialized from it, nothing recorded.
    pub fn start(exec: &Exec, theta: Vec<Tensor>, seed: u64) -> Result<RunState, RunError> {
        let states = initial_states(exec, &theta, seed)?;
        Ok(RunState {
            theta,
            states,
            k: 0,
            resume: false,
            pending: None,
            previous: None,
            message: None,
            error: None,
            last_step: None,
            last: vec![None; trajectory_columns(exec.plan).len()],
            seed,
        })
    }
}

/// The trajectory's column names for a plan's record entries.
pub fn trajectory_columns(plan: &Plan) -> Vec<String> {
    let mut columns = Vec::new();
    for c in &plan.columns {
        columns.extend(column_names(&c.name, &c.shape));
    }
    columns
}

/// Every param's optimizer states, initialized from `theta`.
pub fn initial_states(
    exec: &Exec,
    theta: &[Tensor],
    seed: u64,
) -> Result<Vec<Vec<Tensor>>, RunError> {
    let mut states: Vec<Vec<Tensor>> = Vec::new();
    for (u, th) in exec.plan.updates.iter().zip(theta) {
        states.push(match u {
            Some(u) => exec.eval(&u.init, std::slice::from_ref(th), seed)?,
            None => vec![],
        });
    }
    Ok(states)
}

/// Runs the loop from `state` until step `target` (θ_target reached, its gradient taken
/// and its row recorded if due: `None` is returned), or an end of the run (the train
/// block's last step, the stop condition, a divergence, an error, or `options.interrupt`
/// raised: its status is returned), handing the rows recorded to `rows` (whose `start`
/// the caller has called). An interrupted run records its row in full as a last row and
/// is left ready to go on: a later call continues with update k+1. On the JIT the steps
/// run in the compiled loop (`jit::train_loop`), in chunks when there is a progress
/// callback or an interrupt flag to look at; on the interpreter, one by one.
pub fn advance(
    plan: &Plan,
    engine: &mut Engine,
    sources: &SourceMap,
    state: &mut RunState,
    target: u64,
    options: &RunOptions,
    rows: &mut dyn Rows,
) -> Result<Option<Status>, RunError> {
    let (exec, native) = engine.split(plan);
    let mut d = Driver {
        exec: &exec,
        sources,
        seed: state.seed,
        schedule: RecordSchedule::new(&plan.clauses, plan.steps),
        rows,
        interrupt: options.interrupt,
        last_step: state.last_step,
        last: std::mem::take(&mut state.last),
        previous: state.previous.take(),
        message: None,
        error: None,
    };
    let result = advance_with(&mut d, native, state, target, options);
    state.last_step = d.last_step;
    state.last = d.last;
    state.previous = d.previous;
    state.message = d.message;
    state.error = d.error;
    result
}

fn advance_with(
    d: &mut Driver,
    native: Option<&mut TrainLoop>,
    state: &mut RunState,
    target: u64,
    options: &RunOptions,
) -> Result<Option<Status>, RunError> {
    let plan = d.exec.plan;
    let progress = |k: u64, told: &mut Instant, force: bool| {
        if let Some(p) = &options.progress
            && (force || k.is_multiple_of(PROGRESS_EVERY) || told.elapsed() >= PROGRESS_INTERVAL)
        {
            (p.0)(k, plan.steps);
            *told = Instant::now();
        }
    };
    let mut told = Instant::now();
    let RunState {
        theta,
        states,
        k,
        resume,
        pending,
        ..
    } = state;
    if *resume && *k >= target {
        return Ok(None);
    }
    let Some(native) = native else {
        loop {
            if *resume {
                if let Some(g) = pending.take() {
                    d.update(theta, states, &g, *k)?;
                    *k += 1;
                }
                *resume = false;
            }
            progress(*k, &mut told, false);
            let g = match gradient_on(d.exec, theta, *k + 1, d.seed) {
                Ok(g) => g,
                Err(e) => return Ok(Some(d.error(*k, e))),
            };
            let status = d.after_gradient(theta, k, &g)?;
            if status.is_none_or(|s| s == Status::Interrupted) {
                *pending = Some(g);
                *resume = true;
            }
            if status.is_some() {
                return Ok(status);
            }
            if *k >= target {
                return Ok(None);
            }
        }
    };
    if !*resume {
        native.set_theta(theta);
        native.set_states(states);
        if let Some((prev, _)) = &d.previous {
            native.set_prev(prev);
        }
    }
    // Steps per native call: as many as take one interval (between progress reports, or
    // between looks at the interrupt flag), adapted to their speed.
    let (interval, most) = match (&options.progress, options.interrupt) {
        (Some(_), _) => (
            Some(PROGRESS_INTERVAL.min(INTERRUPT_INTERVAL)),
            PROGRESS_EVERY,
        ),
        (None, Some(_)) => (Some(INTERRUPT_INTERVAL), u64::MAX / 2),
        (None, None) => (None, u64::MAX),
    };
    let mut chunk: u64 = if interval.is_some() { 1 } else { u64::MAX };
    loop {
        progress(*k, &mut told, true);
        let first = *k + *resume as u64;
        let next_due = d.schedule.next_due(first).unwrap_or(plan.steps);
        let until = next_due
            .min(plan.steps)
            .min(target.max(first))
            .min(first.saturating_add(chunk - 1));
        let started = Instant::now();
        let (exit, at) = native.run(*k, until, *resume);
        if let Some(interval) = interval {
            let per_step = started.elapsed().as_secs_f64() / (at + 1 - first) as f64;
            let fit = interval.as_secs_f64() / per_step.max(1e-9);
            chunk = (fit as u64).clamp(1, most);
        }
        *k = at;
        *theta = native.theta();
        d.previous = (*k > 0).then(|| (native.prev(), *k - 1));
        match exit {
            Exit::Row => {
                let (loss, grads) = native.gradient();
                let gnorm = norm(&grads);
                let g = Gradient { loss, grads, gnorm };
                let status = d.after_gradient(theta, k, &g)?;
                // The compiled loop holds step k's gradient: it goes on from there.
                *resume = status.is_none_or(|s| s == Status::Interrupted);
                if status.is_some() {
                    *states = native.states();
                    return Ok(status);
                }
            }
            Exit::Fallback => {
                // The step that needs the host runs there (its gradient on the
                // interpreter: `exec` compiles only the row functions).
                *states = native.states();
                if let Some(status) = d.step(theta, states, k)? {
                    // Interrupted: the next call takes step k's gradient again.
                    *resume = false;
                    return Ok(Some(status));
                }
                native.set_theta(theta);
                native.set_states(states);
                if let Some((prev, _)) = &d.previous {
                    native.set_prev(prev);
                }
                *resume = false;
            }
        }
        if *k >= target {
            *states = native.states();
            return Ok(None);
        }
    }
}

/// The inputs of the record functions at θ_k (params, step, gradients, loss, gnorm,
/// sharpness — NaN unless the plan records `sharpness`), for values a session evaluates.
pub fn row_inputs(
    exec: &Exec,
    theta: &[Tensor],
    k: u64,
    seed: u64,
) -> Result<Vec<Tensor>, RunError> {
    let g = gradient_on(exec, theta, k + 1, seed)?;
    let sharp = match &exec.plan.hvp {
        Some(_) => sharpness(exec, theta, k, seed)?,
        None => f64::NAN,
    };
    Ok(record_inputs(exec.plan, theta, &g, k, sharp, f64::NAN))
}

/// `trajectory` of a run paused at `state` as `traj run --steps k` leaves it: row k
/// recorded in full (replacing row k if it is the last row already).
pub fn closed_trajectory(
    exec: &Exec,
    state: &RunState,
    trajectory: &Trajectory,
) -> Result<Trajectory, RunError> {
    let g = gradient_on(exec, &state.theta, state.k + 1, state.seed)?;
    let schedule = RecordSchedule::new(&exec.plan.clauses, exec.plan.steps);
    let row = record_row(exec, &state.theta, &g, state.k, &schedule, state.seed, true)?;
    let mut t = trajectory.clone();
    t.push(state.k, row)?;
    Ok(t)
}

/// The record/stop functions' inputs at θ_k; a flow's end with its time `t` (ignored for
/// a run by steps).
fn record_inputs(
    plan: &Plan,
    theta: &[Tensor],
    g: &Gradient,
    k: u64,
    sharpness: f64,
    t: f64,
) -> Vec<Tensor> {
    let mut inputs: Vec<Tensor> = theta.to_vec();
    inputs.push(int_tensor(k as i64 + 1));
    inputs.extend(g.grads.iter().cloned());
    debug_assert_eq!(theta.len(), plan.params.len());
    inputs.push(Tensor::scalar(g.loss));
    inputs.push(Tensor::scalar(g.gnorm));
    inputs.push(Tensor::scalar(sharpness));
    if plan.flow.is_some() {
        inputs.push(Tensor::scalar(t));
    }
    inputs
}

/// The recorded cells of row k; clauses not due leave theirs empty (all are filled on the
/// last row).
fn record_row(
    exec: &Exec,
    theta: &[Tensor],
    g: &Gradient,
    k: u64,
    schedule: &RecordSchedule,
    seed: u64,
    last: bool,
) -> Result<Vec<Option<f64>>, RunError> {
    let plan = exec.plan;
    let sharp = match &plan.hvp {
        Some(_) => sharpness(exec, theta, k, seed)?,
        None => f64::NAN,
    };
    let inputs = record_inputs(plan, theta, g, k, sharp, f64::NAN);
    let out = exec.eval_row(RowFn::Record, &inputs, seed)?;
    let mut row = Vec::new();
    for (c, v) in plan.columns.iter().zip(out) {
        let due = last || schedule.clause_due(c.clause, k);
        for x in v.to_f64().iter() {
            row.push(due.then_some(*x));
        }
    }
    Ok(row)
}

/// The largest eigenvalue of the loss Hessian at θ, by Lanczos on Hessian-vector products
/// to 1e-8 relative, from a start drawn from stream "sharpness" at the step.
fn sharpness(exec: &Exec, theta: &[Tensor], k: u64, seed: u64) -> Result<f64, RunError> {
    let plan = exec.plan;
    let n = plan.nparams;
    if n == 0 {
        // A Hessian over no entries has no eigenvalue: recorded as `nan`.
        return Ok(f64::NAN);
    }
    let rng = Stream::new(seed, "sharpness", k + 1);
    let start: Vec<f64> = (0..n as u64).map(|i| rng.normal(i)).collect();
    // What does not depend on the direction, once; then the inputs of `HvpApply`: the
    // params, the step, the direction (replaced at each product) and those values.
    let mut inputs: Vec<Tensor> = theta.to_vec();
    inputs.push(int_tensor(k as i64 + 1));
    let saved = exec.eval_row(RowFn::HvpAt, &inputs, seed)?;
    let dirs = inputs.len();
    for p in &plan.params {
        inputs.push(Tensor::Float(ArrayD::zeros(IxDyn(&p.shape))));
    }
    inputs.extend(saved);
    // An error of the Hvp keeps its spans here; `top_eigenvalue` sees its text.
    let mut failure: Option<RunError> = None;
    let mut apply = |v: &[f64], out: &mut [f64]| -> Result<(), String> {
        let mut at = 0;
        for (p, dir) in plan.params.iter().zip(&mut inputs[dirs..]) {
            let len: usize = p.shape.iter().product();
            *dir = Tensor::Float(
                ArrayD::from_shape_vec(IxDyn(&p.shape), v[at..at + len].to_vec())
                    .map_err(|e| e.to_string())?,
            );
            at += len;
        }
        let res = match exec.eval_row(RowFn::HvpApply, &inputs, seed) {
            Ok(res) => res,
            Err(e) => {
                let message = e.to_string();
                failure = Some(e);
                return Err(message);
            }
        };
        let mut at = 0;
        for t in res {
            for x in t.to_f64().iter() {
                out[at] = *x;
                at += 1;
            }
        }
        Ok(())
    };
    let top = crate::observe::linalg::top_eigenvalue(n, &start, &mut apply, 1e-8);
    match failure {
        Some(e) => Err(e),
        None => Ok(top?),
    }
}
