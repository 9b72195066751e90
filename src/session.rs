//! A session: a program checked and compiled, with its run state (params, optimizer
//! states, step, trajectory), stepped by `train::advance`. The one way to run a program:
//! `traj run` and each sweep point ([`run_to_folder`]) step one to the end, rows to the run
//! folder; the REPL steps one input by input (a file's items and items typed since) and
//! inspects it by evaluating typed expressions.
//!
//! The program text is composed from parts: the file, then every accepted typed input; an
//! item of a later part replaces the item of the same name (or the `loss`, `train`,
//! `sweep`, `precision`) of an earlier part, which is blanked out with spaces so that the
//! file's offsets and line numbers stay as they are. Diagnostics whose spans fall in a
//! typed part are moved to a file of their own holding just what was typed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use ndarray::{ArrayD, IxDyn};

use crate::diag::{Diagnostic, SourceMap, Span};
use crate::error::RunError;
use crate::interp::{self, Env};
use crate::ir::Func;
use crate::ir::types::{DType, Scalar};
use crate::jit::train_loop::TrainLoop;
use crate::output::{Rows, RunInfo, Trajectory};
use crate::plan;
use crate::sema::Checked;
use crate::sema::check::{Options, Val, check_source};
use crate::sema::modules::SymKind;
use crate::syntax::ast::{Expr, Item};
use crate::tensor::Tensor;
use crate::train::statics::{Kept, Statics};
use crate::train::{self, Backend, Progress, RunOptions, RunResult, RunState, Status};

/// The name a typed expression is bound to while it is checked.
const PROBE: &str = "it__";
const PROBE_PREFIX: &str = "let it__ = ";

/// What went wrong with an input; the session is as it was before it.
#[derive(Debug)]
pub enum SessionError {
    /// Errors in the program or in what was typed, with the sources to render them.
    Diagnostics(Vec<Diagnostic>, Box<SourceMap>),
    /// An error after checking (statics, compiling), with the sources its spans are in.
    Run(crate::error::RunError, Box<SourceMap>),
    Message(String),
}

impl SessionError {
    /// The report as `traj check` prints it.
    pub fn render(&self, color: bool) -> String {
        match self {
            SessionError::Diagnostics(diags, sources) => {
                let mut out = String::new();
                for d in diags {
                    out.push_str(&d.render(sources, color));
                }
                let n = diags.len();
                out.push_str(&format!("{n} error{}\n", if n == 1 { "" } else { "s" }));
                out
            }
            SessionError::Run(e, sources) => e.render(sources, color),
            SessionError::Message(m) => format!("error: {m}\n"),
        }
    }
}

impl From<crate::error::RunError> for SessionError {
    fn from(e: crate::error::RunError) -> SessionError {
        SessionError::Message(e.to_string())
    }
}

impl From<String> for SessionError {
    fn from(m: String) -> SessionError {
        SessionError::Message(m)
    }
}

pub type Result<T> = std::result::Result<T, SessionError>;

/// A typed part of the program: where it starts in the composed text, and the length of
/// text put before what was typed (the probe's `let it__ = `).
#[derive(Clone, Debug)]
struct Part {
    offset: usize,
    prefix: usize,
    typed: String,
}

/// The program checked and compiled: what `traj run` builds before its loop.
struct Build {
    checked: Checked,
    sources: SourceMap,
    statics: Statics,
    /// `None` when the program has no `train` block (or no loss): nothing to step.
    run: Option<crate::pipeline::Compiled>,
    /// Each param's definition as written, to tell which ones changed.
    param_defs: HashMap<String, String>,
}

/// The kind of an input line: items to add, or an expression to evaluate.
pub enum Input {
    Items,
    Expr,
}

/// A value's static description for `:type`.
#[derive(Clone, Debug)]
pub struct TypeInfo {
    pub val: Val,
}

impl TypeInfo {
    /// `float [8]  (uses params, observable)`
    pub fn describe(&self) -> String {
        let d = &self.val.deps;
        let mut uses = Vec::new();
        if d.param.is_some() {
            uses.push("params");
        }
        if d.step.is_some() {
            uses.push("per-step values");
        }
        if d.observable.is_some() {
            uses.push("observables");
        }
        if d.random.is_some() {
            uses.push("random draws");
        }
        let mut s = self.val.describe();
        if let Some(k) = self.val.known {
            s.push_str(&format!(" = {k}"));
        }
        if uses.is_empty() {
            s.push_str("  (static)");
        } else {
            s.push_str(&format!("  (uses {})", uses.join(", ")));
        }
        s
    }
}

pub struct Session {
    /// The program file, if the session was started with one.
    file: Option<PathBuf>,
    file_text: String,
    /// Accepted typed inputs, in order.
    typed: Vec<String>,
    /// `:set` overrides as `NAME=VALUE`.
    overrides: Vec<String>,
    backend: Backend,
    build: Build,
    /// The files `load`ed and static values evaluated so far: a rebuild takes what does
    /// not depend on the change from here; `:reload` reads and computes them all again.
    kept: Kept,
    state: Option<Run>,
    /// How the run ended, until the next recompile or reset.
    pub status: Option<Status>,
    /// Seconds spent in the loop and steps taken since the last compile.
    run_seconds: f64,
    steps_run: u64,
}

/// A session's run: where the loop is, and the rows recorded so far (the in-memory sink
/// [`train::advance`] hands them to, replacing the last row when it is taken again).
#[derive(Clone, Debug)]
struct Run {
    state: RunState,
    trajectory: Trajectory,
}

/// The step of a trajectory's last row and each column's last value: what a run that
/// recorded it would have kept.
fn last_of(t: &Trajectory) -> (Option<u64>, Vec<Option<f64>>) {
    let mut last = vec![None; t.columns.len()];
    for (_, row) in &t.rows {
        for (l, cell) in last.iter_mut().zip(row) {
            if cell.is_some() {
                *l = *cell;
            }
        }
    }
    (t.rows.last().map(|(k, _)| *k), last)
}

/// The shown name of a file.
fn shown(path: &Path) -> String {
    path.display().to_string()
}

impl Session {
    /// A session on a program file.
    pub fn load(path: &Path, backend: Backend) -> Result<Session> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Session::from_parts(Some(path.to_path_buf()), text, backend)
    }

    /// A session on program text (`name` is shown in reports; relative paths resolve
    /// against the current directory).
    pub fn from_text(text: &str, backend: Backend) -> Result<Session> {
        Session::from_parts(None, text.to_string(), backend)
    }

    fn from_parts(file: Option<PathBuf>, text: String, backend: Backend) -> Result<Session> {
        let mut kept = Kept::default();
        let build = compose_and_build(file.as_deref(), &text, &[], &[], backend, &mut kept)?;
        let mut s = Session {
            file,
            file_text: text,
            typed: Vec::new(),
            overrides: Vec::new(),
            backend,
            build,
            kept,
            state: None,
            status: None,
            run_seconds: 0.0,
            steps_run: 0,
        };
        s.state = s.fresh_state()?;
        Ok(s)
    }

    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    pub fn checked(&self) -> &Checked {
        &self.build.checked
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The step the session is at.
    pub fn step_count(&self) -> u64 {
        self.state.as_ref().map_or(0, |s| s.state.k)
    }

    /// The train block's last step (0 without one).
    pub fn total_steps(&self) -> u64 {
        self.build.run.as_ref().map_or(0, |c| c.plan.steps)
    }

    /// The trajectory recorded so far.
    pub fn trajectory(&self) -> Trajectory {
        self.state
            .as_ref()
            .map(|s| s.trajectory.clone())
            .unwrap_or_default()
    }

    /// The current params by name, in the plan's order.
    pub fn params(&self) -> Vec<(String, Tensor)> {
        let names = plan::params_of(&self.build.checked);
        let theta = self.theta();
        names.into_iter().map(|p| p.name).zip(theta).collect()
    }

    /// The step-0 state of the current build: params at their initial values.
    fn fresh_state(&self) -> std::result::Result<Option<Run>, RunError> {
        let Some(c) = &self.build.run else {
            return Ok(None);
        };
        let exec = c.interp();
        let theta = train::initial_theta(&c.plan, &self.build.statics)?;
        Ok(Some(Run {
            state: RunState::start(&exec, theta, self.seed())?,
            trajectory: Trajectory {
                columns: train::trajectory_columns(&c.plan),
                rows: Vec::new(),
            },
        }))
    }

    fn seed(&self) -> u64 {
        train::seed_of(&self.build.checked)
    }

    /// θ now: the run's, or the initial values when there is nothing to step.
    fn theta(&self) -> Vec<Tensor> {
        if let Some(s) = &self.state {
            return s.state.theta.clone();
        }
        plan::params_of(&self.build.checked)
            .iter()
            .map(|p| {
                self.build
                    .statics
                    .values
                    .get(&format!("init:{}", p.name))
                    .cloned()
                    .unwrap_or_else(|| Tensor::Float(ArrayD::zeros(IxDyn(&p.shape))))
            })
            .collect()
    }

    /// Takes up to `n` steps (to the train block's end at most), reporting progress and
    /// stopping early at a step boundary once `interrupt` is set. Returns the run's
    /// status when it ended (finished, stopped, diverged, error), or `Interrupted` when
    /// the flag stopped it early (its row recorded in full; the run goes on from there).
    pub fn step(
        &mut self,
        n: u64,
        progress: Option<Progress>,
        interrupt: Option<&'static AtomicBool>,
    ) -> Result<Option<Status>> {
        let k = self.step_count();
        self.advance_to(k.saturating_add(n), progress, interrupt)
    }

    /// Runs to the train block's end.
    pub fn run(
        &mut self,
        progress: Option<Progress>,
        interrupt: Option<&'static AtomicBool>,
    ) -> Result<Option<Status>> {
        self.advance_to(self.total_steps(), progress, interrupt)
    }

    fn advance_to(
        &mut self,
        target: u64,
        progress: Option<Progress>,
        interrupt: Option<&'static AtomicBool>,
    ) -> Result<Option<Status>> {
        if self.build.run.is_none() {
            return Err("the program has no `train` block (and loss) to step"
                .to_string()
                .into());
        }
        if let Some(status) = self.status {
            return Err(format!(
                "the run has {} at step {} (`:reset` starts again; changing an item or a const continues from here)",
                past(status),
                self.step_count()
            )
            .into());
        }
        Ok(self.advance_into(target, progress, interrupt, None)?)
    }

    /// Runs the loop to step `target` (`train::advance`), handing the rows to `rows`, or
    /// to the session's own trajectory when `None`.
    fn advance_into(
        &mut self,
        target: u64,
        progress: Option<Progress>,
        interrupt: Option<&'static AtomicBool>,
        rows: Option<&mut dyn Rows>,
    ) -> std::result::Result<Option<Status>, RunError> {
        let (Some(c), Some(run)) = (&mut self.build.run, &mut self.state) else {
            return Err(RunError::new(
                "internal error: a compiled program without a run state",
            ));
        };
        let options = RunOptions {
            steps: None,
            time: None,
            progress,
            backend: self.backend,
            interrupt,
        };
        // The loop works on a copy, so that an internal error leaves the session as it was.
        let mut next = run.clone();
        let started = Instant::now();
        let k0 = next.state.k;
        let result = train::advance(
            &c.plan,
            &mut c.engine,
            &self.build.sources,
            &mut next.state,
            target,
            &options,
            match rows {
                Some(rows) => rows,
                None => &mut next.trajectory,
            },
        );
        let status = match result {
            Ok(s) => s,
            Err(e) => {
                // The native loop's slots may hold a later step: load them again.
                run.state.resume = false;
                return Err(e);
            }
        };
        self.run_seconds += started.elapsed().as_secs_f64();
        // A divergence hands back the step before the one that failed: k can go back.
        self.steps_run += next.state.k.saturating_sub(k0);
        *run = next;
        // An interrupted run pauses: it goes on at the next `step` or `run`.
        self.status = status.filter(|s| *s != Status::Interrupted);
        Ok(status)
    }

    /// The error that ended the run, rendered as `traj run` renders it (ariadne at the
    /// operation, spans in typed text shown in what was typed).
    pub fn error_report(&self, color: bool) -> Option<String> {
        let e = self.state.as_ref()?.state.error.as_ref()?;
        let sources = &self.build.sources;
        let Some(d) = e.diagnostic(sources) else {
            return Some(format!("error: {}\n", e.located(sources)));
        };
        let (_, parts) = compose(&self.file_text, &self.typed, None);
        let mut sources = sources.clone();
        let main = self.build.checked.program.main_file;
        let diags = retarget(vec![d], &mut sources, main, &parts);
        Some(diags.iter().map(|d| d.render(&sources, color)).collect())
    }

    /// The static values (`data`, consts from data, initial params) the last rebuild
    /// computed afresh rather than kept, by their keys in `Statics` (`init:P` for a param).
    pub fn statics_evaluated(&self) -> &[String] {
        &self.kept.evaluated
    }

    /// The run's message (a divergence or an error), if any.
    pub fn message(&self) -> Option<&str> {
        self.state.as_ref().and_then(|s| s.state.message.as_deref())
    }

    /// Back to step 0: params at their initial values, nothing recorded.
    pub fn reset(&mut self) -> Result<()> {
        let state = self.fresh_state()?;
        self.state = state;
        self.status = None;
        self.run_seconds = 0.0;
        self.steps_run = 0;
        Ok(())
    }

    /// Whether typed text is items (added to the program) or an expression.
    /// Text that starts with an item's keyword (or `loss =`) is items, so that a mistake
    /// in it is reported as one in an item.
    pub fn classify(text: &str) -> Input {
        let text = text.trim_start();
        let word: String = text
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let rest = text[word.len()..].trim_start();
        let loss_item = word == "loss" && rest.starts_with('=') && !rest.starts_with("==");
        let (module, diags) = crate::syntax::parse_module(0, text);
        if (word != "loss" && crate::syntax::ITEM_WORDS.contains(&word.as_str()))
            || loss_item
            || (diags.is_empty() && !module.items.is_empty())
        {
            Input::Items
        } else {
            Input::Expr
        }
    }

    /// Adds or replaces the items of `text`; everything is rechecked and recompiled, and
    /// params keep their values unless their own definition changed.
    pub fn define(&mut self, text: &str) -> Result<Vec<String>> {
        let (module, diags) = crate::syntax::parse_module(0, text);
        if !diags.is_empty() {
            let mut sources = SourceMap::default();
            let file = sources.add("<input>".into(), None, text.to_string());
            let diags = diags
                .into_iter()
                .map(|d| move_diag(d, |s| Span { file, ..s }))
                .collect();
            return Err(SessionError::Diagnostics(diags, Box::new(sources)));
        }
        let names: Vec<String> = module.items.iter().flat_map(item_keys).collect();
        let mut typed = self.typed.clone();
        typed.push(text.to_string());
        self.rebuild(self.file_text.clone(), typed, self.overrides.clone())?;
        Ok(names)
    }

    /// `:set k = v`: overrides a const and recompiles.
    pub fn set(&mut self, name: &str, value: &str) -> Result<()> {
        let mut overrides: Vec<String> = self
            .overrides
            .iter()
            .filter(|o| o.split('=').next().map(str::trim) != Some(name))
            .cloned()
            .collect();
        overrides.push(format!("{name}={value}"));
        self.rebuild(self.file_text.clone(), self.typed.clone(), overrides)
    }

    /// `:reload`: reads the file again (typed items and `:set`s kept).
    pub fn reload(&mut self) -> Result<()> {
        let Some(path) = &self.file else {
            return Err("the session has no file to reload".to_string().into());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let kept = std::mem::take(&mut self.kept);
        let result = self.rebuild(text, self.typed.clone(), self.overrides.clone());
        if result.is_err() {
            self.kept = kept;
        }
        result
    }

    /// Checks and compiles the program from these parts; on success the session takes
    /// it, carrying the run over; on failure nothing changes.
    fn rebuild(
        &mut self,
        file_text: String,
        typed: Vec<String>,
        overrides: Vec<String>,
    ) -> Result<()> {
        let build = compose_and_build(
            self.file.as_deref(),
            &file_text,
            &typed,
            &overrides,
            self.backend,
            &mut self.kept,
        )?;
        let old_params = self.params();
        let old_defs = std::mem::take(&mut self.build.param_defs);
        let old_state = self.state.take();
        let old_build = std::mem::replace(&mut self.build, build);
        match self.carry_over(old_state.clone(), &old_params, &old_defs) {
            Ok(state) => {
                self.state = state;
                self.file_text = file_text;
                self.typed = typed;
                self.overrides = overrides;
                self.status = None;
                self.run_seconds = 0.0;
                self.steps_run = 0;
                Ok(())
            }
            Err(e) => {
                self.build = old_build;
                self.build.param_defs = old_defs;
                self.state = old_state;
                Err(e)
            }
        }
    }

    /// The new build's run state from the old one: the step, trajectory (by column name)
    /// and each param whose definition and shape are unchanged, with its optimizer states
    /// when their shapes still fit.
    fn carry_over(
        &self,
        old: Option<Run>,
        old_params: &[(String, Tensor)],
        old_defs: &HashMap<String, String>,
    ) -> Result<Option<Run>> {
        let Some(Run {
            state: mut fresh,
            mut trajectory,
        }) = self.fresh_state()?
        else {
            return Ok(None);
        };
        let fresh_run = |state, trajectory| Ok(Some(Run { state, trajectory }));
        let Some(Run {
            state: old,
            trajectory: old_trajectory,
        }) = old
        else {
            return fresh_run(fresh, trajectory);
        };
        let Some(c) = &self.build.run else {
            return fresh_run(fresh, trajectory);
        };
        let old_names: Vec<&str> = old_params.iter().map(|(n, _)| n.as_str()).collect();
        for (i, p) in c.plan.params.iter().enumerate() {
            let same_def = old_defs.get(&p.name) == self.build.param_defs.get(&p.name);
            let Some(j) = old_names.iter().position(|n| *n == p.name) else {
                continue;
            };
            if same_def && old_params[j].1.shape() == p.shape.as_slice() {
                fresh.theta[i] = old_params[j].1.clone();
                if let Some(s) = old.states.get(j)
                    && s.len() == fresh.states[i].len()
                    && s.iter()
                        .zip(&fresh.states[i])
                        .all(|(a, b)| a.shape() == b.shape())
                {
                    fresh.states[i] = s.clone();
                }
            }
        }
        let exec = c.interp();
        if old.states.len() != fresh.states.len() {
            fresh.states = train::initial_states(&exec, &fresh.theta, fresh.seed)?;
        }
        fresh.k = old.k;
        fresh.previous = old.previous.filter(|(p, _)| {
            p.len() == fresh.theta.len()
                && p.iter()
                    .zip(&fresh.theta)
                    .all(|(a, b)| a.shape() == b.shape())
        });
        let at: Vec<Option<usize>> = trajectory
            .columns
            .iter()
            .map(|c| old_trajectory.columns.iter().position(|o| o == c))
            .collect();
        trajectory.rows = old_trajectory
            .rows
            .iter()
            .map(|(k, row)| (*k, at.iter().map(|i| i.and_then(|i| row[i])).collect()))
            .collect();
        (fresh.last_step, fresh.last) = last_of(&trajectory);
        fresh_run(fresh, trajectory)
    }

    /// Checks `expr` in the program (as a `let`), returning the checked program with it.
    fn probe(&self, expr: &str) -> Result<(Checked, Expr)> {
        let (checked, _) = check_composed(
            self.file.as_deref(),
            &self.file_text,
            &self.typed,
            &self.overrides,
            Some(expr),
        )?;
        let e = checked
            .program
            .lookup(PROBE)
            .and_then(|s| match &checked.program.items[s.item] {
                Item::Let(d) => Some(d.value.clone()),
                _ => None,
            })
            .ok_or_else(|| "internal error: the typed value is missing".to_string())?;
        Ok((checked, e))
    }

    /// The dtype, shape and kind of a typed expression.
    pub fn type_of(&self, expr: &str) -> Result<TypeInfo> {
        let (checked, _) = self.probe(expr)?;
        let val = checked
            .names
            .iter()
            .find(|(n, _, _)| n == PROBE)
            .map(|(_, _, v)| v.clone())
            .ok_or_else(|| "internal error: the typed value has no type".to_string())?;
        Ok(TypeInfo { val })
    }

    /// The IR of a typed expression's value, as lowered and simplified.
    pub fn ir_of(&self, expr: &str) -> Result<String> {
        let (checked, e) = self.probe(expr)?;
        let f = plan::build_probe(&checked, &self.build.statics, &e)?;
        Ok(crate::ir::print(&f))
    }

    /// The loss's gradient function as `traj ir --stage opt` prints it.
    pub fn ir_of_loss(&self) -> Result<String> {
        crate::pipeline::print(
            &self.build.checked,
            &self.build.sources,
            crate::pipeline::Stage::Opt,
        )
        .map_err(|e| SessionError::Run(e, Box::new(self.build.sources.clone())))
    }

    /// The Cranelift IR of the compiled loop.
    pub fn clif(&self) -> Result<String> {
        let c = self.compiled()?;
        Ok(TrainLoop::clif_text(&c.plan, self.seed())?)
    }

    fn compiled(&self) -> Result<&crate::pipeline::Compiled> {
        self.build.run.as_ref().ok_or_else(|| {
            "the program has no `train` block (and loss)"
                .to_string()
                .into()
        })
    }

    /// A typed expression's value at the current params (step, loss, gnorm and
    /// `grad(p)` are those of the current step, as in a record entry).
    pub fn eval(&self, expr: &str) -> Result<(Tensor, TypeInfo)> {
        let (checked, e) = self.probe(expr)?;
        let val = checked
            .names
            .iter()
            .find(|(n, _, _)| n == PROBE)
            .map(|(_, _, v)| v.clone())
            .ok_or_else(|| "internal error: the typed value has no type".to_string())?;
        let f = plan::build_probe(&checked, &self.build.statics, &e)?;
        let inputs = self.row_inputs()?;
        let out = run_func(&f, &inputs, self.seed())?;
        let value = out
            .into_iter()
            .next()
            .ok_or_else(|| "internal error: no value".to_string())?;
        Ok((value, TypeInfo { val }))
    }

    /// The record functions' inputs now.
    fn row_inputs(&self) -> Result<Vec<Tensor>> {
        let theta = self.theta();
        let k = self.step_count();
        if let (Some(c), Some(_)) = (&self.build.run, &self.state) {
            let exec = c.interp();
            return Ok(train::row_inputs(&exec, &theta, k, self.seed())?);
        }
        // Nothing to step: gradients, loss and gnorm are unknown.
        let nan = |shape: &[usize]| Tensor::Float(ArrayD::from_elem(IxDyn(shape), f64::NAN));
        let mut inputs = theta.clone();
        inputs.push(Tensor::Int(ArrayD::from_elem(IxDyn(&[]), k as i64 + 1)));
        inputs.extend(theta.iter().map(|t| nan(t.shape())));
        inputs.extend((0..3).map(|_| nan(&[])));
        Ok(inputs)
    }

    /// The gradient of a scalar expression with respect to every param, at the current
    /// params: (value, [(param, gradient)]).
    pub fn grad(&self, expr: &str) -> Result<(f64, Vec<(String, Tensor)>)> {
        let (checked, e) = self.probe(expr)?;
        let f = plan::build_probe_gradient(&checked, &self.build.statics, &e)?;
        let mut inputs = self.theta();
        inputs.push(Tensor::Int(ArrayD::from_elem(
            IxDyn(&[]),
            self.step_count() as i64 + 1,
        )));
        let out = run_func(&f, &inputs, self.seed())?;
        let value = out
            .first()
            .and_then(|t| t.to_f64().iter().next().copied())
            .unwrap_or(f64::NAN);
        let names = plan::params_of(&checked).into_iter().map(|p| p.name);
        Ok((value, names.zip(out.into_iter().skip(1)).collect()))
    }

    /// The session's top-level names with their kinds and types, without the standard
    /// library's.
    pub fn names(&self) -> Vec<(String, SymKind, Val)> {
        let prog = &self.build.checked.program;
        self.build
            .checked
            .names
            .iter()
            .filter(|(n, _, _)| {
                prog.symbols
                    .get(n)
                    .is_some_and(|s| s.span.file == prog.main_file)
            })
            .cloned()
            .collect()
    }

    /// The source text of a top-level item (a `fn`, an `optimizer`, ...).
    pub fn source_of(&self, name: &str) -> Option<String> {
        let prog = &self.build.checked.program;
        let sym = prog.lookup(name)?;
        let span = item_span(&prog.items[sym.item])?;
        let text = self.build.sources.text(span);
        Some(text.to_string())
    }

    /// Every name a completer may offer: the program's, the standard library's, consts.
    pub fn completion_names(&self) -> Vec<String> {
        let prog = &self.build.checked.program;
        let mut v: Vec<String> = prog
            .symbols
            .keys()
            .chain(prog.prelude.keys())
            .filter(|n| n.as_str() != PROBE)
            .cloned()
            .collect();
        v.extend(self.build.checked.consts.keys().cloned());
        v.sort();
        v.dedup();
        v
    }

    /// Compile seconds of the current build, and the loop's seconds and steps since.
    pub fn times(&self) -> (f64, f64, u64) {
        let compile = self.build.run.as_ref().map_or(0.0, |c| c.compile_seconds);
        (compile, self.run_seconds, self.steps_run)
    }

    /// Writes the run folder as `traj run` would for the steps taken: the trajectory with
    /// the current step's row recorded in full (unless the run ended with a row there),
    /// `run.json` and the params.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let c = self.compiled()?;
        let Some(Run { state, trajectory }) = &self.state else {
            return Err("nothing to save".to_string().into());
        };
        let trajectory = match self.status {
            Some(_) => trajectory.clone(),
            None => {
                let exec = c.interp();
                train::closed_trajectory(&exec, state, trajectory)?
            }
        };
        let (last_step, last) = last_of(&trajectory);
        let last = trajectory
            .columns
            .iter()
            .zip(last)
            .filter_map(|(c, v)| v.map(|v| (c.clone(), v)))
            .collect();
        let result = train::RunResult {
            status: self.status.unwrap_or(Status::Finished),
            steps: state.k,
            trajectory,
            last_step,
            last,
            params: self.params(),
            // An interrupt's message is not the saved run's: it went on or may.
            message: self.status.and(state.message.clone()),
            error: self.status.and(state.error.clone()),
            seed: self.seed(),
            compile_seconds: c.compile_seconds,
            run_seconds: self.run_seconds,
            flow: None,
        };
        let program = self.file.clone().unwrap_or_else(|| PathBuf::from("<repl>"));
        let mut info: RunInfo =
            crate::train::run_info(&program, &self.build.checked, &result, self.backend.name());
        if !self.typed.is_empty() || self.file.is_none() {
            // The program is not the file alone: hash what ran.
            let text = &self
                .build
                .sources
                .file(self.build.checked.program.main_file)
                .text;
            info.source_sha256 = crate::output::sha256_hex(text.as_bytes());
        }
        crate::output::write_run_folder(dir, &info, &result.trajectory, &result.params)?;
        Ok(())
    }
}

impl Session {
    /// The session `traj run` steps: `checked` with `options`' `--steps` and `--time`,
    /// compiled for its backend, with no run state yet ([`run_with`] starts it). It has no
    /// file text: nothing is typed into it.
    fn for_run(
        checked: Checked,
        sources: SourceMap,
        options: &RunOptions,
    ) -> std::result::Result<Session, RunError> {
        let (statics, plan) = train::prepare(&checked, &sources, options)?;
        let run = crate::pipeline::backend(plan, options.backend, train::seed_of(&checked))?;
        Ok(Session {
            file: None,
            file_text: String::new(),
            typed: Vec::new(),
            overrides: Vec::new(),
            backend: options.backend,
            build: Build {
                param_defs: param_defs(&checked, &sources),
                checked,
                sources,
                statics,
                run: Some(run),
            },
            kept: Kept::default(),
            state: None,
            status: None,
            run_seconds: 0.0,
            steps_run: 0,
        })
    }
}

/// Runs a checked program, keeping every recorded row in the result's trajectory.
pub fn run(
    checked: &Checked,
    sources: &SourceMap,
    options: &RunOptions,
) -> std::result::Result<RunResult, String> {
    let mut trajectory = Trajectory::default();
    let mut result =
        run_with(checked, sources, options, &mut trajectory).map_err(|e| e.located(sources))?;
    result.trajectory = trajectory;
    Ok(result)
}

/// Runs a checked program, handing each recorded row to `rows` as it is recorded: a
/// [`Session`] stepped to the train block's end (a gradient flow, which a session cannot
/// step, integrates by `train::run_flow`).
pub fn run_with(
    checked: &Checked,
    sources: &SourceMap,
    options: &RunOptions,
    rows: &mut dyn Rows,
) -> std::result::Result<RunResult, RunError> {
    let seed = train::seed_of(checked);
    let t0 = Instant::now();
    let mut session = Session::for_run(checked.clone(), sources.clone(), options)?;
    let Some(c) = &session.build.run else {
        return Err(RunError::new(
            "internal error: a run without a compiled program",
        ));
    };
    if c.plan.flow.is_some() {
        let statics = &session.build.statics;
        return train::run_flow(&c.exec(), statics, sources, options, rows, seed, t0);
    }
    let compile_seconds = t0.elapsed().as_secs_f64();

    let t1 = Instant::now();
    session.state = session.fresh_state()?;
    let columns = session.trajectory().columns;
    rows.start(&columns)?;
    let total = session.total_steps();
    let status = session
        .advance_into(
            total,
            options.progress.clone(),
            options.interrupt,
            Some(rows),
        )?
        .unwrap_or(Status::Finished);
    let run_seconds = t1.elapsed().as_secs_f64();
    let (Some(c), Some(Run { state, .. })) = (session.build.run, session.state) else {
        return Err(RunError::new("internal error: a run without a run state"));
    };
    let params = c
        .plan
        .params
        .iter()
        .map(|p| p.name.clone())
        .zip(state.theta)
        .collect();
    let last = columns
        .iter()
        .zip(&state.last)
        .filter_map(|(c, v)| v.map(|v| (c.clone(), v)))
        .collect();
    Ok(RunResult {
        status,
        steps: state.k,
        trajectory: Trajectory {
            columns,
            rows: Vec::new(),
        },
        last_step: state.last_step,
        last,
        params,
        message: state.message,
        error: state.error,
        seed,
        compile_seconds,
        run_seconds,
        flow: None,
    })
}

/// Runs a checked program of file `program` into its claimed folder: `run.json` saying
/// `running` first, `trajectory.csv` row by row as they are recorded, then the params and
/// the final `run.json`; dropping `folder` at the end releases its lock. An error while
/// compiling, running or writing is also written to `run.json` (status `error`).
pub fn run_to_folder(
    program: &Path,
    checked: &Checked,
    sources: &SourceMap,
    options: &RunOptions,
    folder: crate::output::folder::RunFolder,
) -> std::result::Result<RunResult, String> {
    let backend = options.backend.name();
    let not_run = RunResult {
        status: Status::Error,
        steps: 0,
        trajectory: Trajectory::default(),
        last_step: None,
        last: Vec::new(),
        params: Vec::new(),
        message: None,
        error: None,
        seed: train::seed_of(checked),
        compile_seconds: 0.0,
        run_seconds: 0.0,
        flow: None,
    };
    let mut info = train::run_info(program, checked, &not_run, backend);
    info.status = "running".into();
    folder.write_info(&info)?;
    let outcome = (|| -> std::result::Result<RunResult, String> {
        let mut csv = folder.trajectory()?;
        let result = run_with(checked, sources, options, &mut csv).map_err(|e| e.located(sources));
        let flushed = csv.flush();
        let result = result?;
        flushed?;
        folder.write_params(&result.params)?;
        folder.write_info(&train::run_info(program, checked, &result, backend))?;
        Ok(result)
    })();
    if let Err(e) = &outcome {
        info.status = Status::Error.name().into();
        info.message = Some(e.clone());
        // Best effort: the error is reported to the caller either way.
        let _ = folder.write_info(&info);
    }
    outcome
}

fn past(status: Status) -> &'static str {
    match status {
        Status::Finished => "finished",
        Status::Stopped => "stopped",
        Status::Diverged => "diverged",
        Status::Error => "ended with an error",
        Status::Interrupted => "been interrupted",
    }
}

/// Evaluates a probe function on the reference interpreter.
fn run_func(f: &Func, inputs: &[Tensor], seed: u64) -> Result<Vec<Tensor>> {
    interp::eval(f, inputs, Env { seed }).map_err(|e| SessionError::Message(e.message))
}

/// The keys an item defines, for replacing an earlier definition: its names, or the
/// singleton blocks by keyword.
fn item_keys(item: &Item) -> Vec<String> {
    match item {
        Item::Const(d) | Item::Data(d) | Item::Sample(d) | Item::Let(d) => {
            vec![d.name.name.clone()]
        }
        Item::Param(p) => vec![p.name.name.clone()],
        Item::Fn(f) => vec![f.name.name.clone()],
        Item::Optimizer(o) => vec![o.name.name.clone()],
        Item::Batch(b) => b.names.iter().map(|n| n.name.clone()).collect(),
        Item::Loss(_) => vec!["loss".into()],
        Item::Train(_) => vec![" train".into()],
        Item::Sweep(_) => vec![" sweep".into()],
        Item::Precision(_) => vec![" precision".into()],
        Item::Use(_) => vec![],
    }
}

fn item_span(item: &Item) -> Option<Span> {
    Some(match item {
        Item::Use(u) => u.span,
        Item::Const(d) | Item::Data(d) | Item::Sample(d) | Item::Let(d) => d.span,
        Item::Param(p) => p.span,
        Item::Fn(f) => f.span,
        Item::Loss(l) => l.span,
        Item::Batch(b) => b.span,
        Item::Optimizer(o) => o.span,
        Item::Train(t) => t.span,
        Item::Sweep(s) => s.span,
        Item::Precision(p) => p.span,
    })
}

/// The bytes to blank to remove an item: its span, and for one definition of a
/// `const a = 1, b = 2` list, the comma beside it (or the keyword when it is alone).
fn removal_range(text: &str, item: &Item) -> Option<std::ops::Range<usize>> {
    let span = item_span(item)?;
    let (mut start, mut end) = (span.start as usize, span.end as usize);
    if let Item::Const(_) = item {
        let before = text[..start].trim_end();
        let after = text[end..].trim_start();
        if before.ends_with(',') {
            start = before.len() - 1;
        } else if after.starts_with(',') {
            end = text.len() - after.len() + 1;
        } else if before.ends_with("const") {
            start = before.len() - "const".len();
        }
    }
    Some(start..end)
}

/// Replaces a range by spaces, keeping line breaks.
fn blank(text: &mut String, range: std::ops::Range<usize>) {
    let blanked: String = text[range.clone()]
        .chars()
        .map(|c| if c == '\n' { '\n' } else { ' ' })
        .collect();
    // A multi-byte character becomes one space: pad to keep every later offset.
    let pad = range.len() - blanked.len();
    text.replace_range(range, &(blanked + &" ".repeat(pad)));
}

/// The composed program text: the file, then each typed part, each item replaced by a
/// later part's item of the same key blanked; then `probe` as `let it__ = ...`.
fn compose(file_text: &str, typed: &[String], probe: Option<&str>) -> (String, Vec<Part>) {
    let mut texts: Vec<String> = std::iter::once(file_text.to_string())
        .chain(typed.iter().cloned())
        .collect();
    let keys: Vec<Vec<(Vec<String>, Item)>> = texts
        .iter()
        .map(|t| {
            let (module, _) = crate::syntax::parse_module(0, t);
            module
                .items
                .into_iter()
                .map(|i| (item_keys(&i), i))
                .collect()
        })
        .collect();
    for (i, items) in keys.iter().enumerate() {
        let later: Vec<&String> = keys[i + 1..]
            .iter()
            .flatten()
            .flat_map(|(k, _)| k)
            .collect();
        let mut ranges: Vec<std::ops::Range<usize>> = items
            .iter()
            .filter(|(k, _)| k.iter().any(|k| later.contains(&k)))
            .filter_map(|(_, item)| removal_range(&texts[i], item))
            .collect();
        ranges.sort_by_key(|r| std::cmp::Reverse(r.start));
        for r in ranges {
            blank(&mut texts[i], r);
        }
    }
    let mut text = texts[0].clone();
    let mut parts = Vec::new();
    let probe_text = probe.map(|p| format!("{PROBE_PREFIX}{p}"));
    for (i, t) in texts[1..].iter().chain(probe_text.iter()).enumerate() {
        if !text.ends_with('\n') {
            text.push('\n');
        }
        let is_probe = i == typed.len();
        parts.push(Part {
            offset: text.len(),
            prefix: if is_probe { PROBE_PREFIX.len() } else { 0 },
            typed: if is_probe {
                probe.unwrap_or_default().to_string()
            } else {
                typed[i].clone()
            },
        });
        text.push_str(t);
    }
    text.push('\n');
    (text, parts)
}

/// Rewrites a diagnostic's spans.
fn move_diag(mut d: Diagnostic, f: impl Fn(Span) -> Span) -> Diagnostic {
    d.span = f(d.span);
    for (s, _) in &mut d.related {
        *s = f(*s);
    }
    d
}

/// Points spans that fall in typed parts of the main file at files of their own.
fn retarget(
    diags: Vec<Diagnostic>,
    sources: &mut SourceMap,
    main: u32,
    parts: &[Part],
) -> Vec<Diagnostic> {
    // What was just typed is `<input>`; earlier typed parts `<typed N>`.
    let ids: Vec<u32> = parts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let name = if i + 1 == parts.len() {
                "<input>".to_string()
            } else {
                format!("<typed {}>", i + 1)
            };
            sources.add(name, None, p.typed.clone())
        })
        .collect();
    let map = |s: Span| -> Span {
        if s.file != main {
            return s;
        }
        let Some(i) = parts.iter().rposition(|p| s.start as usize >= p.offset) else {
            return s;
        };
        let p = &parts[i];
        let len = p.typed.len() as u32;
        let at = |x: u32| {
            (x as usize)
                .saturating_sub(p.offset + p.prefix)
                .min(len as usize) as u32
        };
        let (start, end) = (at(s.start), at(s.end));
        Span {
            file: ids[i],
            start,
            end: end.max(start),
        }
    };
    diags.into_iter().map(|d| move_diag(d, map)).collect()
}

/// Checks the composed program (with `probe`, a typed expression, as `let it__`).
fn check_composed(
    file: Option<&Path>,
    file_text: &str,
    typed: &[String],
    overrides: &[String],
    probe: Option<&str>,
) -> Result<(Checked, SourceMap)> {
    let (text, parts) = compose(file_text, typed, probe);
    let mut sources = SourceMap::default();
    let name = file.map(shown).unwrap_or_else(|| "<repl>".into());
    let options = Options {
        overrides: overrides.to_vec(),
        check_sweep: false,
    };
    let path = file.map(Path::to_path_buf);
    match check_source(&name, path, &text, &options, &mut sources) {
        Ok(c) => Ok((c, sources)),
        Err(diags) => {
            // The main file is the first one loaded.
            let diags = retarget(diags, &mut sources, 0, &parts);
            Err(SessionError::Diagnostics(diags, Box::new(sources)))
        }
    }
}

/// Each param's definition as written.
fn param_defs(checked: &Checked, sources: &SourceMap) -> HashMap<String, String> {
    let mut defs = HashMap::new();
    for (name, sym) in &checked.program.symbols {
        if sym.kind == SymKind::Param
            && let Some(span) = item_span(&checked.program.items[sym.item])
        {
            defs.insert(name.clone(), sources.text(span).to_string());
        }
    }
    defs
}

/// Checks the composed program and compiles its run, taking from `kept` what still holds.
fn compose_and_build(
    file: Option<&Path>,
    file_text: &str,
    typed: &[String],
    overrides: &[String],
    backend: Backend,
    kept: &mut Kept,
) -> Result<Build> {
    let (checked, sources) = check_composed(file, file_text, typed, overrides, None)?;
    let statics = crate::pipeline::statics_with(&checked, &sources, kept)
        .map_err(|e| SessionError::Run(e, Box::new(sources.clone())))?;
    let param_defs = param_defs(&checked, &sources);
    let has_loss = checked
        .program
        .items
        .iter()
        .any(|i| matches!(i, Item::Loss(_)));
    let run = if has_loss && plan::has_train(&checked) {
        Some(
            crate::pipeline::compile(&checked, &statics, None, backend)
                .map_err(|e| SessionError::Run(e, Box::new(sources.clone())))?,
        )
    } else {
        None
    };
    Ok(Build {
        checked,
        sources,
        statics,
        run,
        param_defs,
    })
}

/// A scalar's value as a `Scalar` when it is one (for printing consts).
pub fn scalar_value(t: &Tensor) -> Option<Scalar> {
    if !t.shape().is_empty() {
        return None;
    }
    match t {
        Tensor::Float(a) => a.iter().next().map(|x| Scalar::Float(*x)),
        Tensor::Int(a) => a.iter().next().map(|x| Scalar::Int(*x)),
    }
}

/// The dtype of a tensor.
pub fn dtype_of(t: &Tensor) -> DType {
    match t {
        Tensor::Float(_) => DType::Float,
        Tensor::Int(_) => DType::Int,
    }
}
