//! `traj sweep` (LANGUAGE.md section 3.11): every point of a `sweep`, run in parallel.
//!
//! Each point is checked, compiled and run on its own, as `traj run --set ...` would.
//!
//! # Layout
//! `DIR/k1=v1,k2=v2/` is each point's run folder, written exactly as `traj run` writes one
//! ([`run_info`], [`crate::output::write_run_folder`]); `DIR/sweep.csv` (RFC 4180, CRLF) has
//! one row per point in sweep order: the swept consts, `status`, `steps`, `run_seconds` (the
//! training loop alone, empty when the point never ran), the last recorded
//! value of every trajectory column (the union over points, in order of first appearance;
//! empty where a point has none), then `message`. `DIR/sweep_summary.csv` summarises the
//! points over their seeds ([`crate::sweep_summary`]).
//!
//! # Decisions
//! * Sweep values are const expressions evaluated once, at the defaults with the `--set`
//!   overrides ([`points`]); ints print as ints, floats in shortest round-trip form, which is
//!   also the override handed to the point, so a point reruns bit for bit with
//!   `traj run --set k=v ...`.
//! * A swept const is a float at every point if any of its values or its default is one.
//! * `--set k=v` of a swept const narrows that entry to the one value `v`.
//! * A point fails (status `error`) when it does not check, does not compile, hits an
//!   error while running, or its folder cannot be claimed or written; the other points
//!   still run. A `diverged` point is a result, not a failure.
//! * Once the interrupt flag is set (SIGINT, SIGTERM), running points end `interrupted`
//!   with their rows and params, no new point starts, and `sweep.csv` lists the points that
//!   ran; an interrupted point counts as failed.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use crate::diag::{Diagnostic, SourceMap, Span};
use crate::output::folder::RunFolder;
use crate::output::{RunInfo, Trajectory, format_float};
use crate::sema::check::{Checked, Options, check_file, check_program};
use crate::sema::modules::{SymKind, Symbol};
use crate::sema::types::Scalar;
use crate::syntax::ast::{Def, Expr, Ident, Item, SweepValues};
use crate::train::{self, Progress, RunOptions, RunResult, Status};

/// One sweep point: (const, value) in the order of the sweep's entries.
pub type Point = Vec<(String, Scalar)>;

/// Each point's thread runs the compiler, which recurses over expression trees: it gets
/// the same stack as the binary's compiler thread.
const POINT_STACK: usize = 256 << 20;

/// A swept value as it appears in folder names, `sweep.csv` and the point's override:
/// `3`, `0.1`, `1.0`, `1e-5`, `inf`.
pub fn format_value(v: Scalar) -> String {
    match v {
        Scalar::Int(i) => i.to_string(),
        Scalar::Float(f) => format_float(f),
    }
}

/// The point's folder name: `depth=2,lr=0.1,seed=0`.
pub fn point_name(point: &[(String, Scalar)]) -> String {
    let parts: Vec<String> = point
        .iter()
        .map(|(k, v)| format!("{k}={}", format_value(*v)))
        .collect();
    parts.join(",")
}

/// The const named by a `NAME=VALUE` override.
fn override_key(o: &str) -> &str {
    o.split_once('=').map_or(o, |(k, _)| k).trim()
}

/// The overrides that check a point: the command line's, less those of swept consts, then
/// the point's values.
pub fn point_overrides(overrides: &[String], point: &[(String, Scalar)]) -> Vec<String> {
    let swept: HashSet<&str> = point.iter().map(|(k, _)| k.as_str()).collect();
    overrides
        .iter()
        .filter(|o| !swept.contains(override_key(o)))
        .cloned()
        .chain(
            point
                .iter()
                .map(|(k, v)| format!("{k}={}", format_value(*v))),
        )
        .collect()
}

/// Every point of the program's `sweep` block (the Cartesian product of its entries, the
/// last varying fastest), or `None` when the program file has no `sweep`. `checked` is the
/// program checked with `overrides`; each value expression is evaluated as a const of the
/// program at that point, by the checker itself.
pub fn points(
    checked: &Checked,
    sources: &mut SourceMap,
    overrides: &[String],
) -> Result<Option<Vec<Point>>, Vec<Diagnostic>> {
    let prog = &checked.program;
    let Some(sweep) = prog.items.iter().find_map(|i| match i {
        Item::Sweep(s) if s.span.file == prog.main_file => Some(s),
        _ => None,
    }) else {
        return Ok(None);
    };
    let mut set: HashMap<&str, Scalar> = HashMap::new();
    for o in overrides {
        if let Some((k, v)) = o.split_once('=')
            && let Some(s) = Scalar::parse(v)
        {
            set.insert(k.trim(), s);
        }
    }

    // Each value expression becomes a const of a copy of the program; its name has a space,
    // so it cannot clash with a name of the program.
    let mut program = prog.clone();
    let mut wanted: Vec<Vec<(String, Span)>> = Vec::new();
    for (i, entry) in sweep.entries.iter().enumerate() {
        let mut names = Vec::new();
        if !set.contains_key(entry.name.name.as_str()) {
            let exprs: Vec<&Expr> = match &entry.values {
                SweepValues::Range(lo, hi) => vec![lo, hi],
                SweepValues::List(items) => items.iter().collect(),
            };
            for (j, e) in exprs.into_iter().enumerate() {
                let name = format!("sweep value {i}.{j}");
                program.symbols.insert(
                    name.clone(),
                    Symbol {
                        kind: SymKind::Const,
                        span: e.span,
                        item: program.items.len(),
                    },
                );
                program.items.push(Item::Const(Def {
                    name: Ident {
                        name: name.clone(),
                        span: e.span,
                    },
                    value: e.clone(),
                    span: e.span,
                }));
                names.push((name, e.span));
            }
        }
        wanted.push(names);
    }
    let options = Options {
        overrides: overrides.to_vec(),
        check_sweep: false,
    };
    let known = check_program(&program, &options, sources)?.consts;

    let mut diags = Vec::new();
    let mut points: Vec<Point> = vec![vec![]];
    for (entry, names) in sweep.entries.iter().zip(&wanted) {
        let key = entry.name.name.as_str();
        let mut values: Vec<Scalar> = match set.get(key) {
            Some(v) => vec![*v],
            None => {
                let mut got = Vec::new();
                for (name, span) in names {
                    match known.get(name) {
                        Some(v) => got.push(*v),
                        None => diags.push(
                            Diagnostic::new(
                                "E0206",
                                format!(
                                    "a value of the sweep over `{key}` is not known before the run"
                                ),
                                *span,
                            )
                            .label("not a compile-time scalar")
                            .hint("sweep values are const expressions"),
                        ),
                    }
                }
                if got.len() < names.len() {
                    continue;
                }
                match (&entry.values, got.as_slice()) {
                    (SweepValues::Range(..), [Scalar::Int(a), Scalar::Int(b)]) => {
                        (*a..*b).map(Scalar::Int).collect()
                    }
                    (SweepValues::Range(..), _) => {
                        diags.push(
                            Diagnostic::new(
                                "E0206",
                                format!("the range of the sweep over `{key}` needs int bounds"),
                                entry.span,
                            )
                            .label("a float bound")
                            .hint("use `//` for an int"),
                        );
                        continue;
                    }
                    (SweepValues::List(_), _) => got,
                }
            }
        };
        if values.is_empty() {
            diags.push(
                Diagnostic::new(
                    "E0206",
                    format!("the sweep over `{key}` has no values"),
                    entry.span,
                )
                .label("empty"),
            );
            continue;
        }
        // A const is int only if its default and every value are ints (section 3.1).
        let float = values.iter().any(|v| matches!(v, Scalar::Float(_)))
            || matches!(checked.consts.get(key), Some(Scalar::Float(_)));
        if float {
            for v in &mut values {
                *v = Scalar::Float(v.as_f64());
            }
        }
        let mut next = Vec::with_capacity(points.len() * values.len());
        for p in &points {
            for v in &values {
                let mut q = p.clone();
                q.push((key.to_string(), *v));
                next.push(q);
            }
        }
        points = next;
    }
    if diags.is_empty() {
        Ok(Some(points))
    } else {
        Err(diags)
    }
}

/// The default sweep folder, `runs/NAME-sweep-YYYYMMDD-HHMMSS` (see
/// [`crate::output::default_run_dir`]).
pub fn default_sweep_dir(program: &Path, now: SystemTime) -> PathBuf {
    let stem = program
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "run".to_string());
    crate::output::default_run_dir(Path::new(&format!("{stem}-sweep.traj")), now)
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

/// How to run a sweep.
#[derive(Clone, Debug)]
pub struct SweepOptions {
    /// Points run at once (at least 1).
    pub jobs: usize,
    /// The sweep's folder.
    pub dir: PathBuf,
    /// `--set` overrides, as typed (`--seed N` as `seed=N`).
    pub overrides: Vec<String>,
    /// `--steps N`.
    pub steps: Option<u64>,
    /// Render a failed check's diagnostics with ANSI colors.
    pub color: bool,
    /// `--backend`.
    pub backend: train::Backend,
    /// Set by SIGINT or SIGTERM: running points stop, no other starts.
    pub interrupt: Option<&'static AtomicBool>,
}

/// What became of one point.
#[derive(Clone, Debug)]
pub struct PointOutcome {
    pub point: Point,
    /// [`point_name`].
    pub name: String,
    /// Its run folder (written unless the point failed before or while writing it).
    pub dir: PathBuf,
    /// `Error` also for a point that did not check or compile.
    pub status: Status,
    /// Updates applied; `None` when the point never ran.
    pub steps: Option<u64>,
    /// The run's message, or why the point failed.
    pub message: Option<String>,
    /// A failed check's diagnostics, rendered.
    pub report: Option<String>,
    /// The last recorded value of each trajectory column that has one, in column order.
    pub last: Vec<(String, f64)>,
    pub run_seconds: f64,
}

impl PointOutcome {
    pub fn failed(&self) -> bool {
        matches!(self.status, Status::Error | Status::Interrupted)
    }
}

/// Follows a sweep as it runs; called from the points' threads.
pub trait Observer: Sync {
    /// A point starts; the returned callback, if any, follows its steps.
    fn started(&self, _index: usize, _name: &str) -> Option<Progress> {
        None
    }
    /// A point is done (its folder written).
    fn finished(&self, _index: usize, _outcome: &PointOutcome) {}
}

/// Follows nothing.
impl Observer for () {}

/// The last recorded value of each column that has one.
pub fn last_values(t: &Trajectory) -> Vec<(String, f64)> {
    t.columns
        .iter()
        .enumerate()
        .filter_map(|(c, name)| {
            t.rows
                .iter()
                .rev()
                .find_map(|(_, row)| row.get(c).copied().flatten())
                .map(|v| (name.clone(), v))
        })
        .collect()
}

/// One line for `sweep.csv`: each diagnostic's code, place and message.
fn summarize(diags: &[Diagnostic], sources: &SourceMap) -> String {
    let parts: Vec<String> = diags
        .iter()
        .map(|d| {
            let (line, col) = sources.line_col(d.span);
            let file = &sources.file(d.span.file).name;
            format!("{} at {file}:{line}:{col}: {}", d.code, d.message)
        })
        .collect();
    parts.join("; ")
}

/// Checks, compiles and runs one point, and writes its folder `options.dir/NAME/`.
pub fn run_point(
    program: &Path,
    point: &[(String, Scalar)],
    options: &SweepOptions,
    progress: Option<Progress>,
) -> PointOutcome {
    let name = point_name(point);
    let mut out = PointOutcome {
        point: point.to_vec(),
        dir: options.dir.join(&name),
        name,
        status: Status::Error,
        steps: None,
        message: None,
        report: None,
        last: Vec::new(),
        run_seconds: 0.0,
    };
    let mut sources = SourceMap::default();
    let check = Options {
        overrides: point_overrides(&options.overrides, point),
        check_sweep: false,
    };
    let checked = match check_file(program, &check, &mut sources) {
        Ok(Ok(c)) => c,
        Ok(Err(diags)) => {
            out.message = Some(summarize(&diags, &sources));
            out.report = Some(
                diags
                    .iter()
                    .map(|d| d.render(&sources, options.color))
                    .collect(),
            );
            return out;
        }
        Err(message) => {
            out.message = Some(message);
            return out;
        }
    };
    let run = RunOptions {
        steps: options.steps,
        time: None,
        progress,
        backend: options.backend,
        interrupt: options.interrupt,
    };
    let result = RunFolder::claim(&out.dir, false)
        .and_then(|folder| train::run_to_folder(program, &checked, &sources, &run, folder));
    match result {
        Ok(result) => {
            out.status = result.status;
            out.steps = Some(result.steps);
            out.message = result.message;
            out.last = result.last;
            out.run_seconds = result.run_seconds;
        }
        Err(message) => out.message = Some(message),
    }
    out
}

/// Runs every point on `options.jobs` threads, each point taken in sweep order by the next
/// free thread; the outcomes come back in sweep order.
pub fn run_points(
    program: &Path,
    points: &[Point],
    options: &SweepOptions,
    observer: &dyn Observer,
) -> Vec<PointOutcome> {
    let next = AtomicUsize::new(0);
    let slots: Mutex<Vec<Option<PointOutcome>>> = Mutex::new(vec![None; points.len()]);
    let work = || {
        loop {
            if interrupted(options) {
                break;
            }
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(point) = points.get(i) else { break };
            let progress = observer.started(i, &point_name(point));
            let outcome = run_point(program, point, options, progress);
            observer.finished(i, &outcome);
            if let Some(slot) = slots
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get_mut(i)
            {
                *slot = Some(outcome);
            }
        }
    };
    let jobs = options.jobs.clamp(1, points.len().max(1));
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..jobs)
            .filter_map(|_| {
                std::thread::Builder::new()
                    .stack_size(POINT_STACK)
                    .spawn_scoped(s, work)
                    .ok()
            })
            .collect();
        if handles.is_empty() {
            work();
        }
        for h in handles {
            // A thread that panicked leaves its point's slot empty, reported below.
            let _ = h.join();
        }
    });
    let slots = slots.into_inner().unwrap_or_else(PoisonError::into_inner);
    let started = next.load(Ordering::Relaxed);
    slots
        .into_iter()
        .zip(points)
        .enumerate()
        // An interrupted sweep leaves out the points it never started.
        .filter(|(i, _)| *i < started)
        .map(|(_, (slot, point))| {
            slot.unwrap_or_else(|| {
                let name = point_name(point);
                PointOutcome {
                    point: point.clone(),
                    dir: options.dir.join(&name),
                    name,
                    status: Status::Error,
                    steps: None,
                    message: Some("internal error: the point's thread stopped".into()),
                    report: None,
                    last: Vec::new(),
                    run_seconds: 0.0,
                }
            })
        })
        .collect()
}

fn interrupted(options: &SweepOptions) -> bool {
    options.interrupt.is_some_and(|f| f.load(Ordering::Relaxed))
}

/// Writes `sweep.csv` (see the module docs), creating its folder.
pub fn write_sweep_csv(path: &Path, outcomes: &[PointOutcome]) -> Result<(), String> {
    let fail = |e: &dyn std::fmt::Display| format!("cannot write {}: {e}", path.display());
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    let keys: Vec<&str> = outcomes
        .first()
        .map(|o| o.point.iter().map(|(k, _)| k.as_str()).collect())
        .unwrap_or_default();
    let mut columns: Vec<&str> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for o in outcomes {
        for (c, _) in &o.last {
            if seen.insert(c.as_str()) {
                columns.push(c.as_str());
            }
        }
    }
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_path(path)
        .map_err(|e| fail(&e))?;
    let header = keys
        .iter()
        .copied()
        .chain(["status", "steps", "run_seconds"])
        .chain(columns.iter().copied())
        .chain(["message"]);
    w.write_record(header).map_err(|e| fail(&e))?;
    for o in outcomes {
        let last: HashMap<&str, f64> = o.last.iter().map(|(c, v)| (c.as_str(), *v)).collect();
        let consts = keys.iter().map(|k| {
            o.point
                .iter()
                .find(|(name, _)| name == k)
                .map(|(_, v)| format_value(*v))
                .unwrap_or_default()
        });
        let record = consts
            .chain([
                o.status.name().to_string(),
                o.steps.map(|s| s.to_string()).unwrap_or_default(),
                o.steps
                    .map(|_| format_float(o.run_seconds))
                    .unwrap_or_default(),
            ])
            .chain(
                columns
                    .iter()
                    .map(|c| last.get(c).map(|v| format_float(*v)).unwrap_or_default()),
            )
            .chain([o.message.clone().unwrap_or_default()]);
        w.write_record(record).map_err(|e| fail(&e))?;
    }
    w.flush().map_err(|e| fail(&e))
}
