//! Gradient flow (`optimizer flow`, LANGUAGE.md 3.10): dθ/dt = −∇L(θ) by Dormand–Prince 5(4)
//! (Bogacki–Shampine 3(2) from `rtol` 1e-3 on: `jit::flow_loop::pair`).
//!
//! The reference algorithm is Hairer's DOPRI5 (Hairer, Nørsett & Wanner, *Solving ODEs I*,
//! II.4–5): seven stages a step, the last one the first of the next (FSAL: six gradients a
//! step), the error of the embedded 4th-order solution in the scaled RMS norm
//! `sk = atol + rtol·max(|y|, |y1|)`, a PI step-size controller (β = 0.04, safety 0.9,
//! the step grows at most 10× and shrinks at most 5× a step, never grows right after a
//! rejection), Hairer's initial step. Recorded values are at exactly the requested times:
//! θ there is the method's 4th-order dense output (the final time is hit by the last step
//! itself), and the row's loss, gradient and record entries are evaluated at that θ.
//! Every stage's gradient is [`super::gradient_on`]'s (Clarke subgradients at kinks, as
//! for `gd`). On the interpreter this file's loop is the whole algorithm (the reference);
//! with `--backend jit` the ordinary steps run in `jit::flow_loop`'s native loop over the
//! same [`FlowState`] (the same operations in the same order, the controller's `pow`
//! `kernels::math::pow` on both sides), which returns here for a step with a record time
//! inside it, a stop test, the last step, a tie, a non-finite value or a step that ends
//! the run; so the backends agree bit for bit.
//!
//! `--steps N` ends a flow after N accepted steps (status `finished`, at the time reached).
//!
//! A run that cannot make progress ends with status `error` and its rows kept: the step
//! size below `1e-12·T` (or `t + h == t`), or a sliding mode: over a run of steps each
//! shorter than `1e-4·T`, [`SLIDING_STEPS`] more of them rejected, or accepted across a
//! sign change of one entry's derivative, than half of the other accepted ones (the flow
//! chatters across a kink); the message names the time and the param to blame.

use ndarray::{ArrayD, IxDyn};

use super::{Exec, Gradient, RunOptions, Status, gradient_on, record_inputs, sharpness};
use crate::error::RunError;
use crate::jit::flow_loop::{
    BETA, COLLAPSE, Exit, FlowLoop, FlowState, GROW_MOST, Pair, SAFETY, SHORT, SHRINK_MOST,
    SLIDING_STEPS, pair,
};
use crate::kernels::math::pow;
use crate::output::FlowCounts;
use crate::output::Rows;
use crate::plan::{FlowSpec, Plan, TimeClause};
use crate::tensor::Tensor;

/// The record times of every clause, walked forward once.
struct Times {
    clauses: Vec<TimeClause>,
    /// Each clause's index of its next time.
    next: Vec<u64>,
    end: f64,
}

impl Times {
    fn new(clauses: &[TimeClause], end: f64) -> Times {
        Times {
            clauses: clauses.to_vec(),
            next: vec![0; clauses.len()],
            end,
        }
    }

    /// Time `i` of clause `c`, if it is at most the end.
    fn time(&self, c: TimeClause, i: u64) -> Option<f64> {
        let t = match c {
            TimeClause::Every(d) => i as f64 * d,
            TimeClause::Log(_) if i == 0 => 0.0,
            TimeClause::Log(n) if i > n => return None,
            TimeClause::Log(1) => self.end,
            TimeClause::Log(n) => {
                let back = (n - i) as f64 / (n - 1) as f64;
                self.end * 10f64.powf(-3.0 * back)
            }
        };
        (t <= self.end).then_some(t)
    }

    /// The next record time (∞ when none is left).
    fn peek(&self) -> f64 {
        (0..self.clauses.len())
            .filter_map(|c| self.time(self.clauses[c], self.next[c]))
            .reduce(f64::min)
            .unwrap_or(f64::INFINITY)
    }

    /// The next record time if it is at most `until`, and which clauses are due then;
    /// those clauses move past it.
    fn take_until(&mut self, until: f64) -> Option<(f64, Vec<bool>)> {
        let nexts: Vec<Option<f64>> = (0..self.clauses.len())
            .map(|c| self.time(self.clauses[c], self.next[c]))
            .collect();
        let t = nexts.iter().flatten().copied().reduce(f64::min)?;
        if t > until {
            return None;
        }
        let due: Vec<bool> = nexts.iter().map(|n| *n == Some(t)).collect();
        for (c, d) in due.iter().enumerate() {
            if *d {
                self.next[c] += 1;
            }
        }
        Some((t, due))
    }
}

/// θ as the plan's params, from the flat vector `y`.
fn tensors(plan: &Plan, y: &[f64]) -> Result<Vec<Tensor>, String> {
    let mut at = 0;
    plan.params
        .iter()
        .map(|p| {
            let len: usize = p.shape.iter().product();
            at += len;
            ArrayD::from_shape_vec(IxDyn(&p.shape), y[at - len..at].to_vec())
                .map(Tensor::Float)
                .map_err(|e| e.to_string())
        })
        .collect()
}

fn flatten(ts: &[Tensor], out: &mut Vec<f64>) {
    out.clear();
    for t in ts {
        out.extend(t.to_f64().iter());
    }
}

/// The param holding flat entry `i`.
fn param_of(plan: &Plan, i: usize) -> String {
    let mut at = 0;
    for p in &plan.params {
        at += p.shape.iter().product::<usize>();
        if i < at {
            return p.name.clone();
        }
    }
    String::new()
}

/// `y + h·Σ a_j k_j`, entry by entry, the sum in the order of `a`.
fn stage(y: &[f64], h: f64, a: &[f64], k: &[Vec<f64>], out: &mut [f64]) {
    for (i, o) in out.iter_mut().enumerate() {
        let mut s = 0.0;
        for (j, aj) in a.iter().enumerate() {
            s += aj * k[j][i];
        }
        *o = y[i] + h * s;
    }
}

/// The scaled RMS norm of `v` against `sk`.
fn rms(v: impl Iterator<Item = f64>, n: usize) -> f64 {
    (v.map(|x| x * x).sum::<f64>() / n.max(1) as f64).sqrt()
}

/// A flow run between its steps.
struct Flow<'a> {
    exec: &'a Exec<'a>,
    seed: u64,
    spec: FlowSpec,
    rows: &'a mut dyn Rows,
    times: Times,
    counts: FlowCounts,
    /// The last value recorded in each column (`t` first).
    last: Vec<Option<f64>>,
    last_row: Option<(u64, f64)>,
    message: Option<String>,
    compile_seconds: f64,
}

/// A flow's outcome, for [`super::run_flow`].
pub struct Outcome {
    pub status: Status,
    pub theta: Vec<Tensor>,
    pub counts: FlowCounts,
    pub last: Vec<Option<f64>>,
    pub last_step: Option<u64>,
    pub message: Option<String>,
    /// The error that ended the run (status `error`), with its spans.
    pub error: Option<RunError>,
    /// The time spent compiling the native loop (`--backend jit`).
    pub compile_seconds: f64,
}

impl Flow<'_> {
    /// The loss and gradient at `y` (draws of step `step`), and f = −∇L flattened.
    fn derivative(&mut self, y: &[f64], step: u64, f: &mut Vec<f64>) -> Result<Gradient, RunError> {
        self.counts.gradient_evaluations += 1;
        let g = gradient_on(self.exec, &tensors(self.exec.plan, y)?, step, self.seed)?;
        flatten(&g.grads, f);
        for x in f.iter_mut() {
            *x = -*x;
        }
        Ok(g)
    }

    /// Records the row at time `t` (θ = `y`, its gradient `g`, `k` accepted steps): the
    /// clauses `due` (every clause when `None`: the last row).
    fn row(
        &mut self,
        y: &[f64],
        g: &Gradient,
        k: u64,
        t: f64,
        due: Option<&[bool]>,
    ) -> Result<(), RunError> {
        if self.last_row == Some((k, t)) {
            return Ok(());
        }
        let plan = self.exec.plan;
        let theta = tensors(plan, y)?;
        let sharp = match &plan.hvp {
            Some(_) => sharpness(self.exec, &theta, k, self.seed)?,
            None => f64::NAN,
        };
        let inputs = record_inputs(plan, &theta, g, k, sharp, t);
        let out = self
            .exec
            .eval_row(super::RowFn::Record, &inputs, self.seed)?;
        let mut row = vec![Some(t)];
        for (c, v) in plan.columns.iter().zip(out) {
            let on = due.is_none_or(|d| d[c.clause]);
            row.extend(v.to_f64().iter().map(|x| on.then_some(*x)));
        }
        for (last, cell) in self.last.iter_mut().zip(&row) {
            if cell.is_some() {
                *last = *cell;
            }
        }
        self.last_row = Some((k, t));
        self.rows.push_timed(k, row)?;
        Ok(self.rows.tick()?)
    }

    /// Whether `stop when` holds at `y` with gradient `g` after `k` accepted steps, time `t`.
    fn stops(&self, y: &[f64], g: &Gradient, k: u64, t: f64) -> Result<bool, RunError> {
        let plan = self.exec.plan;
        if plan.stop.is_none() {
            return Ok(false);
        }
        let inputs = record_inputs(plan, &tensors(plan, y)?, g, k, f64::NAN, t);
        Ok(
            super::scalar_of(&self.exec.eval_row(super::RowFn::Stop, &inputs, self.seed)?[0])
                != 0.0,
        )
    }

    /// The scaled weights `atol + rtol·max(|y|, |y1|)`.
    fn scale(&self, y: &[f64], y1: &[f64]) -> Vec<f64> {
        y.iter()
            .zip(y1)
            .map(|(a, b)| self.spec.atol + self.spec.rtol * a.abs().max(b.abs()))
            .collect()
    }

    /// Hairer's initial step from θ0 = `y` and f0 (one more gradient).
    fn initial_step(&mut self, y: &[f64], f0: &[f64]) -> Result<f64, RunError> {
        let n = y.len();
        let sk = self.scale(y, y);
        let dnf: f64 = f0.iter().zip(&sk).map(|(f, s)| (f / s) * (f / s)).sum();
        let dny: f64 = y.iter().zip(&sk).map(|(v, s)| (v / s) * (v / s)).sum();
        let end = self.spec.time;
        let mut h = if dnf <= 1e-10 || dny <= 1e-10 {
            1e-6
        } else {
            (dny / dnf).sqrt() * 0.01
        };
        h = h.min(end);
        let y1: Vec<f64> = y.iter().zip(f0).map(|(v, f)| v + h * f).collect();
        let mut f1 = Vec::with_capacity(n);
        self.derivative(&y1, 1, &mut f1)?;
        let der2 = f1
            .iter()
            .zip(f0)
            .zip(&sk)
            .map(|((a, b), s)| ((a - b) / s) * ((a - b) / s))
            .sum::<f64>()
            .sqrt()
            / h;
        let der12 = der2.abs().max(dnf.sqrt());
        let h1 = if der12 <= 1e-15 {
            (h * 1e-3).max(1e-6)
        } else {
            pow(0.01 / der12, pair(self.spec.rtol).root)
        };
        Ok((100.0 * h).min(h1).min(end))
    }
}

/// Runs the flow of `exec`'s plan from θ0 = `theta`, rows to `rows` (whose `start` the
/// caller has called with [`columns`]).
pub fn integrate(
    exec: &Exec,
    sources: &crate::diag::SourceMap,
    theta: &[Tensor],
    seed: u64,
    options: &RunOptions,
    rows: &mut dyn Rows,
) -> Result<Outcome, RunError> {
    let plan = exec.plan;
    let spec = plan.flow.clone().ok_or("internal error: not a flow")?;
    let ncols = columns(plan).len();
    let mut fl = Flow {
        exec,
        seed,
        times: Times::new(&spec.records, spec.time),
        spec,
        rows,
        counts: FlowCounts::default(),
        last: vec![None; ncols],
        last_row: None,
        message: None,
        compile_seconds: 0.0,
    };
    let mut y = Vec::new();
    flatten(theta, &mut y);
    let status = steps(&mut fl, &mut y, options)?;
    let (status, error) = match status {
        Ok(s) => (s, None),
        Err(e) => {
            fl.message = Some(e.located(sources));
            (Status::Error, Some(e))
        }
    };
    Ok(Outcome {
        status,
        theta: tensors(plan, &y)?,
        counts: fl.counts,
        last: fl.last,
        last_step: fl.last_row.map(|(k, _)| k),
        message: fl.message,
        error,
        compile_seconds: fl.compile_seconds,
    })
}

/// The flow's steps from t = 0; `y` ends as the saved params. The inner error is the
/// run's (its status `error`, the message given), the outer one the sink's or a bug.
fn steps(
    fl: &mut Flow,
    y: &mut Vec<f64>,
    options: &RunOptions,
) -> Result<Result<Status, RunError>, RunError> {
    let n = y.len();
    let mut st = FlowState {
        y: std::mem::take(y),
        y1: vec![0.0; n],
        k: vec![vec![0.0; n]; 7],
        flips: vec![0; n],
        err_old: 1e-4,
        ..FlowState::default()
    };
    let out = steps_from(fl, &mut st, options);
    *y = st.y;
    out
}

/// The gradient whose negation is `f` and whose loss is `loss`, as a stage computed it.
fn gradient_from(plan: &Plan, loss: f64, f: &[f64]) -> Result<Gradient, RunError> {
    let g: Vec<f64> = f.iter().map(|x| -x).collect();
    let grads = tensors(plan, &g)?;
    let gnorm = super::norm(&grads);
    Ok(Gradient { loss, grads, gnorm })
}

fn steps_from(
    fl: &mut Flow,
    st: &mut FlowState,
    options: &RunOptions,
) -> Result<Result<Status, RunError>, RunError> {
    let plan = fl.exec.plan;
    let n = st.y.len();
    let end = fl.spec.time;
    let pair: &Pair = pair(fl.spec.rtol);
    let last_stage = pair.a.len();
    let interrupted = || {
        options
            .interrupt
            .is_some_and(|f| f.load(std::sync::atomic::Ordering::Relaxed))
    };
    // The JIT backend's native loop, for the ordinary steps.
    let compiling = std::time::Instant::now();
    let mut native = if fl.exec.is_compiled() {
        FlowLoop::compile(plan, fl.seed)?
    } else {
        None
    };
    fl.compile_seconds = compiling.elapsed().as_secs_f64();
    let mut g0 = match fl.derivative(&st.y, 1, &mut st.k[0]) {
        Ok(g) => g,
        Err(e) => return Ok(Err(e.prefixed("t = 0: "))),
    };
    if !g0.loss.is_finite() || st.y.iter().any(|x| !x.is_finite()) {
        fl.message = Some("diverged at t = 0: the loss or a param is not finite".into());
        return Ok(Ok(Status::Diverged));
    }
    // Rows at t = 0, then the stop test and the end.
    if fl.stops(&st.y, &g0, 0, 0.0)? {
        fl.row(&st.y, &g0, 0, 0.0, None)?;
        return Ok(Ok(Status::Stopped));
    }
    if end == 0.0 || options.steps == Some(0) {
        fl.row(&st.y, &g0, 0, 0.0, None)?;
        return Ok(Ok(Status::Finished));
    }
    if let Some((_, due)) = fl.times.take_until(0.0) {
        fl.row(&st.y, &g0, 0, 0.0, Some(&due))?;
    }
    st.h = match fl.initial_step(&st.y, &st.k[0].clone()) {
        Ok(h) => h,
        Err(e) => return Ok(Err(e.prefixed("t = 0: "))),
    };
    let mut ys = vec![0.0; n];
    loop {
        if interrupted() {
            fl.row(&st.y, &g0, st.accepted, st.t, None)?;
            fl.message = Some(format!(
                "interrupted at t = {}",
                crate::output::format_float(st.t)
            ));
            return Ok(Ok(Status::Interrupted));
        }
        // The native loop takes the ordinary steps and returns at the first other one.
        let mut from_native = None;
        if let Some(nl) = native.as_mut() {
            let before = st.accepted;
            let exit = nl.run(
                st,
                &mut fl.counts,
                fl.times.peek(),
                options.steps,
                options.interrupt,
            );
            fl.counts.native_steps += st.accepted - before;
            if st.accepted != before {
                g0 = gradient_from(plan, nl.loss_at_y(), &st.k[0])?;
            }
            match exit {
                Exit::Interrupted => continue,
                Exit::Fallback => {}
                Exit::Accepted { err, loss } => from_native = Some((err, loss)),
            }
        }
        let step = st.accepted + 1;
        let (err, g7, last, errs) = match from_native {
            Some((err, loss)) => {
                fl.counts.gradient_evaluations += last_stage as u64;
                fl.counts.native_steps += 1;
                (
                    err,
                    gradient_from(plan, loss, &st.k[last_stage])?,
                    false,
                    vec![],
                )
            }
            None => {
                let last = st.t + 1.01 * st.h >= end;
                if last {
                    st.h = end - st.t;
                }
                let (t, h) = (st.t, st.h);
                // Stages 2..6, then the 5th-order solution y1 and its derivative (stage 7).
                for (s, a) in pair.a[..last_stage - 1].iter().enumerate() {
                    stage(&st.y, h, a, &st.k, &mut ys);
                    if let Err(e) = fl.derivative(&ys, step, &mut st.k[s + 1]) {
                        return Ok(Err(
                            e.prefixed(&format!("t = {}: ", crate::output::format_float(t)))
                        ));
                    }
                }
                stage(&st.y, h, pair.a[last_stage - 1], &st.k, &mut st.y1);
                let g7 = match fl.derivative(&st.y1, step, &mut st.k[last_stage]) {
                    Ok(g) => g,
                    Err(e) => {
                        return Ok(Err(e.prefixed(&format!(
                            "t = {}: ",
                            crate::output::format_float(t + h)
                        ))));
                    }
                };
                let sk = fl.scale(&st.y, &st.y1);
                let errs: Vec<f64> = (0..n)
                    .map(|i| {
                        let mut s = 0.0;
                        for (j, e) in pair.e.iter().enumerate() {
                            s += e * st.k[j][i];
                        }
                        h * s / sk[i]
                    })
                    .collect();
                (rms(errs.iter().copied(), n), g7, last, errs)
            }
        };
        let (t, h) = (st.t, st.h);
        let t_new = if last { end } else { t + h };
        let finite = err.is_finite() && g7.loss.is_finite() && st.y1.iter().all(|x| x.is_finite());
        if finite && err <= 1.0 {
            st.accepted += 1;
            let accepted = st.accepted;
            fl.counts.accepted_steps = accepted;
            // Rows at record times inside the step, by the dense output.
            while let Some((tr, due)) = fl.times.take_until(t_new) {
                if tr == t_new {
                    fl.row(&st.y1, &g7, accepted, tr, Some(&due))?;
                    continue;
                }
                let th = (tr - t) / h;
                let yr = dense(pair, &st.y, &st.y1, &st.k, h, th);
                let mut fr = Vec::new();
                let gr = match fl.derivative(&yr, accepted + 1, &mut fr) {
                    Ok(g) => g,
                    Err(e) => {
                        return Ok(Err(
                            e.prefixed(&format!("t = {}: ", crate::output::format_float(tr)))
                        ));
                    }
                };
                fl.row(&yr, &gr, accepted, tr, Some(&due))?;
            }
            // Sliding: over a run of short steps, an entry's derivative keeps changing
            // sign (+2 a step across which it does, −1 a step across which it does not).
            let short = h < SHORT * end;
            let mut slider = None;
            st.rejections = if short {
                st.rejections.saturating_sub(1)
            } else {
                0
            };
            for (i, c) in st.flips.iter_mut().enumerate() {
                *c = match (short, st.k[0][i] * st.k[last_stage][i] < 0.0) {
                    (false, _) => 0,
                    (true, true) => *c + 2,
                    (true, false) => c.saturating_sub(1),
                };
                if *c >= 2 * SLIDING_STEPS {
                    slider = Some(i);
                }
            }
            st.t = t_new;
            std::mem::swap(&mut st.y, &mut st.y1);
            st.k.swap(0, last_stage);
            g0 = g7;
            fl.counts.t = st.t;
            if fl.stops(&st.y, &g0, accepted, st.t)? {
                fl.row(&st.y, &g0, accepted, st.t, None)?;
                return Ok(Ok(Status::Stopped));
            }
            if last || options.steps.is_some_and(|most| accepted >= most) {
                fl.row(&st.y, &g0, accepted, st.t, None)?;
                return Ok(Ok(Status::Finished));
            }
            if let Some(i) = slider {
                let p = param_of(plan, i);
                fl.row(&st.y, &g0, accepted, st.t, None)?;
                return Ok(Err(RunError::new(format!(
                    "the flow slides along a kink at t = {}: across most of its last steps (the last {} long) the derivative of param `{p}` changed sign; a gradient flow cannot follow a sliding mode",
                    crate::output::format_float(st.t),
                    crate::output::format_float(h),
                ))));
            }
            // The PI controller.
            let fac11 = pow(err, pair.expo);
            let fac = (fac11 / pow(st.err_old, BETA) / SAFETY).clamp(1.0 / GROW_MOST, SHRINK_MOST);
            let mut h_new = h / fac;
            if st.after_reject {
                h_new = h_new.min(h);
            }
            st.after_reject = false;
            st.err_old = err.max(1e-4);
            st.h = h_new;
        } else {
            fl.counts.rejected_steps += 1;
            st.after_reject = true;
            let worst = (0..errs.len())
                .filter(|i| errs[*i].is_finite())
                .max_by(|a, b| errs[*a].abs().total_cmp(&errs[*b].abs()))
                .unwrap_or(0);
            if h < SHORT * end {
                st.rejections += 2;
                if st.rejections >= 2 * SLIDING_STEPS {
                    let p = param_of(plan, worst);
                    fl.row(&st.y, &g0, st.accepted, t, None)?;
                    return Ok(Err(RunError::new(format!(
                        "the flow slides along a kink at t = {}: most of its last steps (the last tried {} long) were rejected, the error largest in param `{p}`; a gradient flow cannot follow a sliding mode",
                        crate::output::format_float(t),
                        crate::output::format_float(h),
                    ))));
                }
            }
            st.h = if err.is_finite() {
                let fac11 = pow(err, pair.expo);
                h / SHRINK_MOST.min(fac11 / SAFETY)
            } else {
                h / SHRINK_MOST
            };
            if st.h < COLLAPSE * end || t + st.h == t {
                let p = param_of(plan, worst);
                fl.row(&st.y, &g0, st.accepted, t, None)?;
                if !finite {
                    fl.message = Some(format!(
                        "diverged at t = {}: the flow is not finite after any step (param `{p}`)",
                        crate::output::format_float(t)
                    ));
                    return Ok(Ok(Status::Diverged));
                }
                return Ok(Err(RunError::new(format!(
                    "the step size collapsed to {} at t = {}: the error of param `{p}` stays above the tolerance (a kink of the loss?)",
                    crate::output::format_float(st.h),
                    crate::output::format_float(t)
                ))));
            }
        }
    }
}

/// θ at `t + th·h` inside an accepted step from `y` to `y1` (stages `k`, the last one
/// f(y1)): DOPRI5's 4th-order dense output, or (a pair without one) the cubic Hermite
/// interpolant of y, y1 and their derivatives, which is the same formula without `r5`.
fn dense(pair: &Pair, y: &[f64], y1: &[f64], k: &[Vec<f64>], h: f64, th: f64) -> Vec<f64> {
    let th1 = 1.0 - th;
    let last = pair.a.len();
    (0..y.len())
        .map(|i| {
            let ydiff = y1[i] - y[i];
            let bspl = h * k[0][i] - ydiff;
            let r4 = ydiff - h * k[last][i] - bspl;
            match pair.dense {
                Some(d) => {
                    let mut s = 0.0;
                    for (j, d) in d.iter().enumerate() {
                        s += d * k[j][i];
                    }
                    let r5 = h * s;
                    y[i] + th * (ydiff + th1 * (bspl + th * (r4 + th1 * r5)))
                }
                None => y[i] + th * (ydiff + th1 * (bspl + th * r4)),
            }
        })
        .collect()
}

/// A flow's trajectory columns: `t`, then the record entries'.
pub fn columns(plan: &Plan) -> Vec<String> {
    let mut c = vec!["t".to_string()];
    c.extend(super::trajectory_columns(plan));
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::jit::flow_loop::{BS3, DOPRI5};

    /// Each pair with its nodes c_1 = 0, c_2, ..., c_s and order.
    fn pairs() -> [(&'static Pair, Vec<f64>, i32); 2] {
        [
            (
                &DOPRI5,
                vec![0.0, 1.0 / 5.0, 3.0 / 10.0, 4.0 / 5.0, 8.0 / 9.0, 1.0, 1.0],
                5,
            ),
            (&BS3, vec![0.0, 1.0 / 2.0, 3.0 / 4.0, 1.0], 3),
        ]
    }

    #[test]
    fn tableau_rows_sum_to_their_nodes_and_orders_hold() {
        for (pair, c, order) in pairs() {
            assert_eq!(pair.stages(), c.len());
            assert_eq!(pair.e.len(), c.len());
            for (r, c) in pair.a.iter().zip(&c[1..]) {
                assert!((r.iter().sum::<f64>() - c).abs() < 1e-15, "{r:?}");
            }
            // The error coefficients are b − b̂ of two solutions of order ≥ 1: they sum
            // to 0.
            assert!(pair.e.iter().sum::<f64>().abs() < 1e-16, "{}", pair.name);
            // Order p: Σ b_i c_i^(q−1) = 1/q for q ≤ p.
            let b = pair.a[pair.a.len() - 1];
            for q in 1..=order {
                let s: f64 = b.iter().zip(&c).map(|(b, c)| b * c.powi(q - 1)).sum();
                assert!(
                    (s - 1.0 / q as f64).abs() < 1e-14,
                    "{}: order condition {q}: {s}",
                    pair.name
                );
            }
            // The embedded solution b̂ = b − e has order one less, not more.
            let bh: Vec<f64> = b
                .iter()
                .chain([&0.0])
                .zip(pair.e)
                .map(|(b, e)| b - e)
                .collect();
            let s: f64 = bh.iter().zip(&c).map(|(b, c)| b * c.powi(order - 1)).sum();
            assert!((s - 1.0 / order as f64).abs() > 1e-6, "{}", pair.name);
        }
    }

    #[test]
    fn dense_output_hits_both_ends_and_is_exact_on_cubics() {
        for (pair, c, _) in pairs() {
            // y' = 3t² from t = 1, h = 0.5: stages at t + c_i h; y(t) = t³.
            let (t0, h) = (1.0, 0.5);
            let mut k: Vec<Vec<f64>> = c
                .iter()
                .map(|ci| vec![3.0 * (t0 + ci * h).powi(2)])
                .collect();
            k.resize(7, vec![0.0]);
            let mut y1 = [0.0];
            stage(&[1.0], h, pair.a[pair.a.len() - 1], &k, &mut y1);
            assert!((y1[0] - 1.5f64.powi(3)).abs() < 1e-14, "{}", pair.name);
            for th in [0.0, 0.1, 0.37, 0.5, 0.9, 1.0] {
                let y = dense(pair, &[1.0], &y1, &k, h, th)[0];
                let want = (t0 + th * h).powi(3);
                assert!((y - want).abs() < 1e-13, "θ = {th}: {y} vs {want}");
            }
        }
    }

    #[test]
    fn record_times_are_exact_and_merged() {
        let mut t = Times::new(&[TimeClause::Every(0.5), TimeClause::Every(0.75)], 1.5);
        let mut got = vec![];
        while let Some((x, due)) = t.take_until(10.0) {
            got.push((x, due));
        }
        let want = [
            (0.0, vec![true, true]),
            (0.5, vec![true, false]),
            (0.75, vec![false, true]),
            (1.0, vec![true, false]),
            (1.5, vec![true, true]),
        ];
        assert_eq!(got, want);
        let mut t = Times::new(&[TimeClause::Log(4)], 20.0);
        let mut got = vec![];
        while let Some((x, _)) = t.take_until(100.0) {
            got.push(x);
        }
        assert_eq!(got.len(), 5);
        assert_eq!(got[0], 0.0);
        assert_eq!(got[4], 20.0);
        for (a, w) in got[1..].iter().zip([0.02, 0.2, 2.0, 20.0]) {
            assert!((a - w).abs() < 1e-12 * w, "{a} vs {w}");
        }
    }
}
