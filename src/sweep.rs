//! `traj sweep` (LANGUAGE.md section 3.11): every point of a `sweep`, run in parallel.
//!
//! Each point is checked, compiled and run on its own, as `traj run --set ...` would.
//!
//! # Layout
//! `DIR/k1=v1,k2=v2/` is each point's run folder, written exactly as `traj run` writes one
//! ([`crate::train::run_info`], [`crate::output::write_run_folder`]) under the name
//! `k1=v1,k2=v2.part/` ([`partial_dir`]) and renamed when the run ends. `DIR/sweep.json`
//! ([`Manifest`]) and `DIR/points.csv` record the sweep when it begins; `DIR/slurm/` holds
//! what [`crate::slurm`] writes. `DIR/sweep.csv` (RFC 4180, CRLF), written from the point
//! folders ([`collect`]), has one row per point that ended, in sweep order: the swept consts, `status`, `steps`, `run_seconds` (the
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
//! * A point is done when its `run.json` says `finished`, `stopped` or `diverged`
//!   ([`is_done`]); `--resume` runs every other point again (an error may be the machine's:
//!   a full disk, a node without the data), and only with the sources the sweep began
//!   with ([`Manifest::check_unchanged`]): data files are not hashed.
//! * A point that does not check gets a folder too, its `run.json` saying why, so a sweep's
//!   folders alone tell what became of every point that ran (`steps` 0 there).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use crate::diag::{Diagnostic, SourceMap, Span};
use crate::ir::types::Scalar;
use crate::output::RunInfo;
use crate::output::folder::RunFolder;
use crate::output::{Trajectory, format_float};
use crate::sema::check::{Checked, Options, check_file, check_program};
use crate::sema::modules::{SymKind, Symbol};
use crate::syntax::ast::{Def, Expr, Ident, Item, SweepValues};
use crate::train::{self, Progress, RunOptions, Status};

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
        points = crate::sema::check::sweep_product(&points, key, &values);
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
    /// `--time T`: a gradient flow's time at every point.
    pub time: Option<f64>,
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
    /// Point `point` (folder `name` in `dir`) before anything of it is known: an error
    /// until its run says otherwise.
    fn pending(point: &[(String, Scalar)], name: String, dir: PathBuf) -> PointOutcome {
        PointOutcome {
            point: point.to_vec(),
            name,
            dir,
            status: Status::Error,
            steps: None,
            message: None,
            report: None,
            last: Vec::new(),
            run_seconds: 0.0,
        }
    }

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

/// The folder a point's run writes while it runs: `DIR/NAME.part/`, renamed `DIR/NAME/`
/// once the run has ended (so a folder with the point's name always holds a run that
/// ended, and one a killed task left stays `.part`).
pub fn partial_dir(point_dir: &Path) -> PathBuf {
    let mut name = point_dir.as_os_str().to_owned();
    name.push(".part");
    PathBuf::from(name)
}

/// Checks, compiles and runs one point into `options.dir/NAME.part/`, then renames that
/// folder `options.dir/NAME/`. A point that does not check still gets a folder, with a
/// `run.json` saying why (status `error`, no steps).
pub fn run_point(
    program: &Path,
    point: &[(String, Scalar)],
    options: &SweepOptions,
    progress: Option<Progress>,
) -> PointOutcome {
    let name = point_name(point);
    let mut out = PointOutcome::pending(point, name.clone(), options.dir.join(&name));
    let part = partial_dir(&out.dir);
    let folder = match RunFolder::claim(&part, true) {
        Ok(f) => f,
        Err(message) => {
            out.message = Some(message);
            return out;
        }
    };
    let mut sources = SourceMap::default();
    let check = Options {
        overrides: point_overrides(&options.overrides, point),
        check_sweep: false,
    };
    let checked = match check_file(program, &check, &mut sources) {
        Ok(Ok(c)) => Some(c),
        Ok(Err(diags)) => {
            out.message = Some(summarize(&diags, &sources));
            out.report = Some(
                diags
                    .iter()
                    .map(|d| d.render(&sources, options.color))
                    .collect(),
            );
            None
        }
        Err(message) => {
            out.message = Some(message);
            None
        }
    };
    let ended = match checked {
        Some(checked) => {
            let run = RunOptions {
                steps: options.steps,
                time: options.time,
                progress,
                backend: options.backend,
                interrupt: options.interrupt,
            };
            match crate::session::run_to_folder(program, &checked, &sources, &run, folder) {
                Ok(result) => {
                    out.status = result.status;
                    out.steps = Some(result.steps);
                    out.message = result.message;
                    out.last = result.last;
                    out.run_seconds = result.run_seconds;
                }
                Err(message) => out.message = Some(message),
            }
            Ok(())
        }
        None => folder.write_info(&unchecked_info(program, point, &out, options)),
    };
    if let Err(e) = ended.and_then(|()| crate::output::folder::move_run(&part, &out.dir)) {
        out.status = Status::Error;
        out.message = Some(match out.message.take() {
            Some(m) => format!("{m}; {e}"),
            None => e,
        });
    }
    out
}

/// The `run.json` of a point that did not check: its swept consts, status `error`, and why.
fn unchecked_info(
    program: &Path,
    point: &[(String, Scalar)],
    out: &PointOutcome,
    options: &SweepOptions,
) -> RunInfo {
    let json = |v: &Scalar| match v {
        Scalar::Int(i) => serde_json::json!(i),
        Scalar::Float(f) => serde_json::json!(f),
    };
    let seed = point.iter().find(|(k, _)| k == "seed").map(|(_, v)| v);
    RunInfo {
        program: program.display().to_string(),
        source_sha256: crate::output::sha256_hex(&std::fs::read(program).unwrap_or_default()),
        consts: point.iter().map(|(k, v)| (k.clone(), json(v))).collect(),
        seed: seed.map_or(0, |v| v.as_f64() as i64),
        backend: options.backend.name().into(),
        status: Status::Error.name().into(),
        steps: 0,
        compile_seconds: 0.0,
        run_seconds: 0.0,
        version: env!("CARGO_PKG_VERSION").into(),
        message: out.message.clone(),
        flow: None,
    }
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

// ---------------------------------------------------------------------------------------
// The sweep's record: what `--point`, `--resume`, `--status` and `--collect` read.

/// `DIR/sweep.json`: how the sweep's points are run, written when the sweep begins.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    /// The program file, absolute.
    pub program: PathBuf,
    /// The program's source files (the file, then each file it `use`s) and their SHA-256:
    /// a sweep is resumed only with the same sources.
    pub sources: Vec<SourceHash>,
    /// `--set` overrides, as typed (`--seed N` as `seed=N`).
    pub overrides: Vec<String>,
    /// `--steps N`.
    pub steps: Option<u64>,
    /// `--time T` (absent in a manifest written before it existed).
    #[serde(default)]
    pub time: Option<f64>,
    /// `jit` or `interp`.
    pub backend: String,
    /// The `traj` version that began the sweep.
    pub version: String,
}

/// One source file of a program and the SHA-256 of its bytes.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SourceHash {
    pub file: PathBuf,
    pub sha256: String,
}

/// The manifest's file name in a sweep folder.
pub const MANIFEST: &str = "sweep.json";
/// The points table's file name: `index,folder,CONST...`, one row per point in sweep order
/// (the index is the point's `--point` and its Slurm array index).
pub const POINTS: &str = "points.csv";

/// The source files of a checked program (the files it was loaded from, not the built-in
/// standard library), each hashed as it is on disk now.
pub fn source_hashes(sources: &SourceMap) -> Result<Vec<SourceHash>, String> {
    let mut out: Vec<SourceHash> = Vec::new();
    for file in &sources.files {
        let Some(path) = &file.path else { continue };
        let path = std::fs::canonicalize(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if out.iter().any(|h| h.file == path) {
            continue;
        }
        let bytes =
            std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        out.push(SourceHash {
            file: path,
            sha256: crate::output::sha256_hex(&bytes),
        });
    }
    Ok(out)
}

impl Manifest {
    /// The manifest of a sweep of `program`, checked into `sources`.
    pub fn new(
        program: &Path,
        sources: &SourceMap,
        options: &SweepOptions,
    ) -> Result<Manifest, String> {
        Ok(Manifest {
            program: std::fs::canonicalize(program)
                .map_err(|e| format!("cannot read {}: {e}", program.display()))?,
            sources: source_hashes(sources)?,
            overrides: options.overrides.clone(),
            steps: options.steps,
            time: options.time,
            backend: options.backend.name().into(),
            version: env!("CARGO_PKG_VERSION").into(),
        })
    }

    /// The backend named by [`Manifest::backend`].
    pub fn backend(&self) -> Result<train::Backend, String> {
        [train::Backend::Jit, train::Backend::Interp]
            .into_iter()
            .find(|b| b.name() == self.backend)
            .ok_or_else(|| format!("unknown backend `{}` in {MANIFEST}", self.backend))
    }

    /// Refuses a program whose sources changed since the sweep began (or that is not the
    /// sweep's program): its remaining points would not be points of the same sweep.
    pub fn check_unchanged(&self, program: &Path) -> Result<(), String> {
        let given = std::fs::canonicalize(program)
            .map_err(|e| format!("cannot read {}: {e}", program.display()))?;
        if given != self.program {
            return Err(format!(
                "{} is not the program of this sweep ({})",
                program.display(),
                self.program.display()
            ));
        }
        let mut changed = Vec::new();
        for h in &self.sources {
            match std::fs::read(&h.file) {
                Ok(bytes) if crate::output::sha256_hex(&bytes) == h.sha256 => {}
                Ok(bytes) => changed.push(format!(
                    "{} (sha256 {} when the sweep began, {} now)",
                    h.file.display(),
                    &h.sha256[..12.min(h.sha256.len())],
                    &crate::output::sha256_hex(&bytes)[..12]
                )),
                Err(e) => changed.push(format!("{} ({e})", h.file.display())),
            }
        }
        if changed.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "the program changed since the sweep began: {}; the sweep's remaining points \
                 would run another program. Restore it, or start a new sweep with another --out",
                changed.join(", ")
            ))
        }
    }
}

/// Writes `DIR/sweep.json` and `DIR/points.csv`.
pub fn write_manifest(dir: &Path, manifest: &Manifest, points: &[Point]) -> Result<(), String> {
    let path = dir.join(MANIFEST);
    let fail = |e: &dyn std::fmt::Display| format!("cannot write {}: {e}", path.display());
    let mut json = serde_json::to_string_pretty(manifest).map_err(|e| fail(&e))?;
    json.push('\n');
    std::fs::write(&path, json).map_err(|e| fail(&e))?;

    let path = dir.join(POINTS);
    let fail = |e: &dyn std::fmt::Display| format!("cannot write {}: {e}", path.display());
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_path(&path)
        .map_err(|e| fail(&e))?;
    let keys: Vec<&str> = points
        .first()
        .map(|p| p.iter().map(|(k, _)| k.as_str()).collect())
        .unwrap_or_default();
    w.write_record(["index", "folder"].into_iter().chain(keys))
        .map_err(|e| fail(&e))?;
    for (i, p) in points.iter().enumerate() {
        let record = [i.to_string(), point_name(p)]
            .into_iter()
            .chain(p.iter().map(|(_, v)| format_value(*v)));
        w.write_record(record).map_err(|e| fail(&e))?;
    }
    w.flush().map_err(|e| fail(&e))
}

/// Reads `DIR/sweep.json` and `DIR/points.csv`.
pub fn read_manifest(dir: &Path) -> Result<(Manifest, Vec<Point>), String> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!(
                "{} is not a sweep folder (it has no {MANIFEST}; a sweep begun by an older traj \
                 cannot be resumed)",
                dir.display()
            )
        } else {
            format!("cannot read {}: {e}", path.display())
        }
    })?;
    let manifest: Manifest =
        serde_json::from_str(&text).map_err(|e| format!("cannot read {}: {e}", path.display()))?;

    let path = dir.join(POINTS);
    let fail = |e: &dyn std::fmt::Display| format!("cannot read {}: {e}", path.display());
    let mut r = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(&path)
        .map_err(|e| fail(&e))?;
    let header: Vec<String> = r
        .headers()
        .map_err(|e| fail(&e))?
        .iter()
        .map(str::to_string)
        .collect();
    if header.get(..2) != Some(&["index".to_string(), "folder".to_string()][..]) {
        return Err(fail(&"its header does not begin `index,folder`"));
    }
    let mut points = Vec::new();
    for (i, record) in r.records().enumerate() {
        let record = record.map_err(|e| fail(&e))?;
        let row: Vec<&str> = record.iter().collect();
        if row.len() != header.len() || row[0] != i.to_string() {
            return Err(fail(&format!("row {} is not point {i}", i + 1)));
        }
        let mut point = Point::new();
        for (key, text) in header[2..].iter().zip(&row[2..]) {
            let value = Scalar::parse(text)
                .ok_or_else(|| fail(&format!("`{text}` of point {i} is not a number")))?;
            point.push((key.clone(), value));
        }
        if point_name(&point) != row[1] {
            return Err(fail(&format!("the folder of point {i} is not its name")));
        }
        points.push(point);
    }
    Ok((manifest, points))
}

// ---------------------------------------------------------------------------------------
// Reading back what the points wrote.

/// The status a point's `run.json` names.
fn status_named(name: &str) -> Option<Status> {
    [
        Status::Finished,
        Status::Stopped,
        Status::Diverged,
        Status::Error,
        Status::Interrupted,
    ]
    .into_iter()
    .find(|s| s.name() == name)
}

/// What a point's folder `DIR/NAME/` says of its run, or `None` when there is no such
/// folder (the point has not run, or runs, or its run was killed before it ended).
pub fn read_point(dir: &Path, point: &[(String, Scalar)]) -> Option<PointOutcome> {
    let name = point_name(point);
    let point_dir = dir.join(&name);
    let info_path = point_dir.join("run.json");
    let mut out = PointOutcome::pending(point, name, point_dir.clone());
    let text = match std::fs::read_to_string(&info_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !point_dir.exists() => {
            return None;
        }
        Err(e) => {
            out.message = Some(format!("cannot read {}: {e}", info_path.display()));
            return Some(out);
        }
    };
    let info: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            out.message = Some(format!("cannot read {}: {e}", info_path.display()));
            return Some(out);
        }
    };
    let status = info["status"].as_str().unwrap_or_default();
    out.message = info["message"].as_str().map(str::to_string);
    let Some(status) = status_named(status) else {
        out.message = Some(format!(
            "{} says the run is `{status}`, but it has ended",
            info_path.display()
        ));
        return Some(out);
    };
    out.status = status;
    out.steps = info["steps"].as_u64();
    out.run_seconds = info["run_seconds"].as_f64().unwrap_or(0.0);
    let csv = point_dir.join("trajectory.csv");
    match crate::output::read_trajectory_csv(&csv) {
        Ok(t) => out.last = last_values(&t),
        // A point that never ran has no rows.
        Err(_) if !csv.exists() => {}
        Err(e) => {
            out.status = Status::Error;
            out.message = Some(e);
        }
    }
    Some(out)
}

/// Every point with a folder of its own (a run that ended), in sweep order.
pub fn collect(dir: &Path, points: &[Point]) -> Vec<PointOutcome> {
    points.iter().filter_map(|p| read_point(dir, p)).collect()
}

/// A run whose point needs no rerun: it ended `finished`, `stopped` or `diverged`.
pub fn is_done(status: Status) -> bool {
    matches!(
        status,
        Status::Finished | Status::Stopped | Status::Diverged
    )
}

/// The indices of the points without a finished `run.json` (see [`is_done`]).
pub fn unfinished(dir: &Path, points: &[Point]) -> Vec<usize> {
    (0..points.len())
        .filter(|&i| !read_point(dir, &points[i]).is_some_and(|o| is_done(o.status)))
        .collect()
}

/// Where a point of a sweep is, for `traj sweep --status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PointState {
    /// Ended `finished` or `stopped`.
    Finished,
    Diverged,
    /// Ended `error` or `interrupted`, or its run was killed (a `.part` folder no live
    /// process writes, and no task of the queue runs it).
    Failed,
    /// A task of the queue runs it, or a live process on this machine writes its `.part`.
    Running,
    /// Not run yet (waiting in the queue, or in no queue at all).
    Pending,
}

impl PointState {
    pub const ALL: [PointState; 5] = [
        PointState::Finished,
        PointState::Diverged,
        PointState::Failed,
        PointState::Running,
        PointState::Pending,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PointState::Finished => "finished",
            PointState::Diverged => "diverged",
            PointState::Failed => "failed",
            PointState::Running => "running",
            PointState::Pending => "pending",
        }
    }
}

/// Each point's state, from its folders and from `queued`: the points a scheduler's queue
/// lists as running or pending (by index), which wins over what the folders say.
pub fn point_states(
    dir: &Path,
    points: &[Point],
    queued: &HashMap<usize, PointState>,
) -> Vec<PointState> {
    points
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if let Some(state) = queued.get(&i) {
                return *state;
            }
            let part = partial_dir(&dir.join(point_name(p)));
            if crate::output::folder::live_writer(&part).is_some() {
                return PointState::Running;
            }
            match read_point(dir, p) {
                Some(o) if matches!(o.status, Status::Finished | Status::Stopped) => {
                    PointState::Finished
                }
                Some(o) if o.status == Status::Diverged => PointState::Diverged,
                Some(_) => PointState::Failed,
                None if part.exists() => PointState::Failed,
                None => PointState::Pending,
            }
        })
        .collect()
}
