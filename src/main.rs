//! The `traj` command line: `check`, `run`, `sweep`, `ir`, `plot` and `repl`.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use traj::diag::SourceMap;
use traj::sema::{self, Options};

#[derive(Parser)]
#[command(
    name = "traj",
    version,
    about = "Experiments on the trajectory of gradient descent"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Parse, resolve and shape-check a program (every sweep point); report every error.
    Check {
        file: PathBuf,
        /// Override a const: `--set lr=0.5` (repeatable).
        #[arg(long = "set", value_name = "NAME=VALUE")]
        set: Vec<String>,
        /// Shorthand for `--set seed=N`.
        #[arg(long)]
        seed: Option<String>,
    },
    /// Compile and run a program; write its run folder.
    Run {
        file: PathBuf,
        #[command(flatten)]
        overrides: Overrides,
        /// The run folder (default `runs/NAME-TIMESTAMP/`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Replace the run already in `--out` (a folder holding another run is refused).
        #[arg(long)]
        force: bool,
        #[arg(long, value_enum, default_value = "jit")]
        backend: Backend,
    },
    /// Run every point of the program's `sweep` into one folder, with `sweep.csv`; or
    /// submit them to Slurm (`--slurm`); or look at, resume or collect a sweep folder.
    Sweep(Box<SweepArgs>),
    /// Print the program at a stage of the compiler.
    Ir {
        file: PathBuf,
        #[arg(long, value_enum, default_value = "ast")]
        stage: Stage,
        #[arg(long = "set", value_name = "NAME=VALUE")]
        set: Vec<String>,
    },
    /// Draw recorded columns of a run or sweep folder to a PNG or SVG file.
    Plot {
        /// A run folder (with trajectory.csv) or a sweep folder (with sweep.csv).
        dir: PathBuf,
        /// Columns to draw, by name or base name (`sv` draws sv[0], sv[1], ...);
        /// default `loss` if recorded, else every column.
        columns: Vec<String>,
        /// Logarithmic x axis.
        #[arg(long)]
        logx: bool,
        /// Logarithmic y axis.
        #[arg(long)]
        logy: bool,
        /// For a sweep: each column's final value against this swept const.
        #[arg(long, value_name = "CONST")]
        against: Option<String>,
        /// The file to write, .png or .svg (default DIR/plot[-COLUMNS].png).
        #[arg(short = 'o', long = "out", value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Load a program without running it; step it, evaluate expressions, change items.
    Repl {
        file: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "jit")]
        backend: Backend,
    },
}

/// The options `run` and `sweep` share: what a run takes from outside its program.
#[derive(clap::Args)]
struct Overrides {
    /// Override a const: `--set lr=0.5` (repeatable; a sweep sets it at every point).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    set: Vec<String>,
    /// Shorthand for `--set seed=N` (in a sweep, narrows a swept `seed` to N).
    #[arg(long)]
    seed: Option<String>,
    /// The most steps to take (overrides the train block's `steps`; at every point of a
    /// sweep).
    #[arg(long)]
    steps: Option<u64>,
    /// How long a gradient flow runs (overrides the train block's `time`; at every point of a
    /// sweep).
    #[arg(long, value_name = "T")]
    time: Option<f64>,
}

impl Overrides {
    /// The `--set` overrides, with `--seed N` last as `seed=N`.
    fn consts(&self) -> Vec<String> {
        let mut set = self.set.clone();
        if let Some(s) = &self.seed {
            set.push(format!("seed={s}"));
        }
        set
    }
}

#[derive(clap::Args)]
struct SweepArgs {
    /// The program (not with --status, --resume or --collect, which read it from DIR).
    #[arg(required_unless_present_any = ["status", "resume", "collect"])]
    file: Option<PathBuf>,
    /// Points run at once (on this machine).
    #[arg(short = 'j', long = "jobs", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..))]
    jobs: u64,
    /// The sweep's folder (default `runs/NAME-sweep-TIMESTAMP/`).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    #[command(flatten)]
    overrides: Overrides,
    #[arg(long, value_enum, default_value = "jit")]
    backend: Backend,
    /// Run point I (its index in DIR/points.csv) of the sweep begun in `--out DIR`: what
    /// each Slurm task runs.
    #[arg(long, value_name = "I", requires = "out",
          conflicts_with_all = ["set", "seed", "steps", "time", "backend", "slurm", "jobs"])]
    point: Option<usize>,
    /// Submit the points to Slurm as one job array (and a job that collects them).
    #[arg(long)]
    slurm: bool,
    #[command(flatten)]
    slurm_options: SlurmArgs,
    /// Count the points of a sweep folder finished, diverged, failed, running and pending.
    #[arg(long, value_name = "DIR",
          conflicts_with_all = ["file", "out", "resume", "collect", "slurm", "point"])]
    status: Option<PathBuf>,
    /// Run (or with --slurm submit) the points of a sweep folder without a finished run.
    #[arg(long, value_name = "DIR",
          conflicts_with_all = ["file", "out", "collect", "set", "seed", "steps", "time", "backend", "point"])]
    resume: Option<PathBuf>,
    /// Write a sweep folder's sweep.csv and sweep_summary.csv from the points it holds.
    #[arg(long, value_name = "DIR",
          conflicts_with_all = ["file", "out", "slurm", "point", "jobs"])]
    collect: Option<PathBuf>,
}

/// The options of `--slurm`.
#[derive(clap::Args)]
struct SlurmArgs {
    /// The Slurm partition.
    #[arg(long, requires = "slurm")]
    partition: Option<String>,
    /// Each task's time limit (sbatch's `--time`).
    #[arg(long, value_name = "HH:MM:SS", requires = "slurm")]
    time_limit: Option<String>,
    /// CPUs of each task.
    #[arg(long, value_name = "N", requires = "slurm")]
    cpus_per_task: Option<u32>,
    /// Memory of each task (sbatch's `--mem`: `4G`).
    #[arg(long, value_name = "M", requires = "slurm")]
    mem: Option<String>,
    /// Tasks run at once (the array's `%K`).
    #[arg(long, value_name = "K", requires = "slurm",
          value_parser = clap::value_parser!(u32).range(1..))]
    max_parallel: Option<u32>,
    /// One more sbatch option, passed as is: `--sbatch-arg=--account=abc` (repeatable).
    #[arg(
        long = "sbatch-arg",
        value_name = "ARG",
        allow_hyphen_values = true,
        requires = "slurm"
    )]
    sbatch_arg: Vec<String>,
}

impl From<SlurmArgs> for traj::slurm::SlurmOptions {
    fn from(a: SlurmArgs) -> Self {
        traj::slurm::SlurmOptions {
            partition: a.partition,
            time: a.time_limit,
            cpus_per_task: a.cpus_per_task,
            mem: a.mem,
            max_parallel: a.max_parallel,
            sbatch_args: a.sbatch_arg,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Backend {
    /// The reference interpreter.
    Interp,
    /// The step loop compiled to one native function with Cranelift (the default).
    Jit,
}

impl From<Backend> for traj::train::Backend {
    fn from(b: Backend) -> Self {
        match b {
            Backend::Interp => traj::train::Backend::Interp,
            Backend::Jit => traj::train::Backend::Jit,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Stage {
    /// The parsed, resolved program with every top-level name's kind, type and shape.
    Ast,
    /// The loss lowered to IR.
    Ir,
    /// The loss, its gradient (reverse mode) and the tie count.
    Grad,
    /// The gradient function after constant folding, CSE and DCE.
    Opt,
    /// The Cranelift IR the JIT compiles the gradient function to.
    Clif,
}

fn use_color() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal()
}

/// The compiler recurses over expression trees; its thread gets a stack far larger than the
/// deepest program the parser admits needs (see `syntax::parse::MAX_OPERATORS`).
const COMPILER_STACK: usize = 256 << 20;

/// Keeps freed heap memory in the process instead of returning it to the OS after every
/// free, and serves tensors up to 32 MiB (glibc's cap) from the heap instead of fresh
/// mmaps. Measured with glibc's defaults: each matrix product's scratch buffers and each
/// large tensor faulted in fresh pages, and the interpreter took 2.9 s instead of 1.6 s on
/// `bench/dln.traj`, 6.0 s instead of 2.0 s on `bench/dmf.traj`.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only changes allocator tuning parameters; it is called once, before
    // any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// Set by the first SIGINT or SIGTERM: the run ends at the next step boundary.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// The signal that set [`INTERRUPTED`].
static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_interrupt(signal: libc::c_int) {
    SIGNAL.store(signal, Ordering::Relaxed);
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// From now on SIGINT and SIGTERM set [`INTERRUPTED`] instead of ending the process; a
/// second one ends it at once (the handler is reset when it runs).
fn catch_interrupts() -> Option<&'static AtomicBool> {
    #[cfg(unix)]
    // SAFETY: the handler only stores to atomics, which is async-signal-safe; the action
    // struct is fully initialized (zeroed, then its fields set).
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESETHAND | libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        for signal in [libc::SIGINT, libc::SIGTERM] {
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
    Some(&INTERRUPTED)
}

/// The exit code of a command ended by an interrupt: 128 + the signal, as a shell reports.
fn interrupted_exit() -> ExitCode {
    ExitCode::from(128u8.saturating_add(SIGNAL.load(Ordering::Relaxed).clamp(0, 127) as u8))
}

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    std::thread::Builder::new()
        .stack_size(COMPILER_STACK)
        .spawn(move || dispatch(cli))
        .and_then(|t| {
            t.join()
                .map_err(|_| std::io::Error::other("the compiler thread failed"))
        })
        .unwrap_or_else(|e| {
            eprintln!("error: {e}");
            ExitCode::from(3)
        })
}

fn dispatch(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Check { file, set, seed } => {
            let mut set = set;
            if let Some(s) = seed {
                set.push(format!("seed={s}"));
            }
            check(&file, &set, None)
        }
        Command::Ir { file, stage, set } => check(&file, &set, Some(stage)),
        Command::Plot {
            dir,
            columns,
            logx,
            logy,
            against,
            out,
        } => plot(traj::plot::PlotOptions {
            dir,
            columns,
            logx,
            logy,
            against,
            out,
        }),
        Command::Repl { file, backend } => repl(file.as_deref(), backend.into()),
        Command::Run {
            file,
            overrides,
            out,
            force,
            backend,
        } => run_program(
            &file,
            &overrides.consts(),
            (overrides.steps, overrides.time),
            out,
            force,
            backend.into(),
        ),
        Command::Sweep(args) => sweep_command(*args),
    }
}

/// `traj repl`: on a terminal, the line editor; otherwise commands read line by line
/// from stdin, answered without prompts or colour (exit 1 if any failed).
fn repl(file: Option<&std::path::Path>, backend: traj::train::Backend) -> ExitCode {
    let terminal = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let color = terminal && use_color();
    let mut repl = match traj::repl::Repl::new(file, backend, color) {
        Ok(r) => r,
        Err(e) => {
            eprint!("{}", e.render(color));
            return ExitCode::from(1);
        }
    };
    if terminal {
        match traj::repl::terminal::interactive(&mut repl, color) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        }
    } else if traj::repl::piped(&mut repl, std::io::stdin().lock()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn report(diags: &[traj::diag::Diagnostic], sources: &SourceMap, file: &std::path::Path) {
    let color = use_color();
    for d in diags {
        eprint!("{}", d.render(sources, color));
    }
    let n = diags.len();
    eprintln!(
        "{}: {n} error{}",
        file.display(),
        if n == 1 { "" } else { "s" }
    );
}

/// Checks a program at its default point (with `--set` overrides), reporting its errors;
/// `Err` carries the exit code.
fn checked_or_report(
    file: &std::path::Path,
    set: &[String],
) -> Result<(traj::sema::Checked, SourceMap), ExitCode> {
    let mut sources = SourceMap::default();
    let options = Options {
        overrides: set.to_vec(),
        check_sweep: false,
    };
    match sema::check::check_file(file, &options, &mut sources) {
        Ok(Ok(c)) => Ok((c, sources)),
        Ok(Err(diags)) => {
            report(&diags, &sources, file);
            Err(ExitCode::from(1))
        }
        Err(message) => {
            eprintln!("error: {message}");
            Err(ExitCode::from(2))
        }
    }
}

/// `length`: `--steps` and `--time`.
fn run_program(
    file: &std::path::Path,
    set: &[String],
    (steps, time): (Option<u64>, Option<f64>),
    out: Option<PathBuf>,
    force: bool,
    backend: traj::train::Backend,
) -> ExitCode {
    let (checked, sources) = match checked_or_report(file, set) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // The folder is claimed before compiling: a folder that cannot be written, or holds
    // another run, is found before any work is done.
    let folder = match &out {
        Some(dir) => traj::output::folder::RunFolder::claim(dir, force),
        None => traj::output::folder::RunFolder::claim_new(&traj::output::default_run_dir(
            file,
            std::time::SystemTime::now(),
        )),
    };
    let folder = match folder {
        Ok(f) => f,
        Err(e) => return folder_error(&e),
    };
    let dir = folder.dir().to_path_buf();
    let bar = std::io::stderr().is_terminal().then(|| {
        StepBar::new(
            &MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10)),
            String::new(),
        )
    });
    let options = traj::train::RunOptions {
        steps,
        time,
        progress: bar.as_ref().map(StepBar::progress),
        backend,
        interrupt: catch_interrupts(),
    };
    let result = traj::session::run_to_folder(file, &checked, &sources, &options, folder);
    if let Some(bar) = &bar {
        bar.finish();
    }
    let result = match result {
        Ok(r) => r,
        Err(message) => {
            eprintln!("error: {message} (run folder {})", dir.display());
            return ExitCode::from(1);
        }
    };
    match (&result.error, &result.message) {
        (Some(e), _) => eprint!("{}", e.render(&sources, use_color())),
        (None, Some(m)) => eprintln!("{m}"),
        (None, None) => {}
    }
    let last = result
        .last_step
        .map(|s| format!("step {s}: {}", show_values(&result.last)))
        .unwrap_or_default();
    if let Some(f) = &result.flow {
        eprintln!(
            "gradient flow to t = {}: {} accepted and {} rejected steps, {} gradient evaluations",
            traj::output::format_float(f.t),
            f.accepted_steps,
            f.rejected_steps,
            f.gradient_evaluations
        );
    }
    eprintln!(
        "{}: {} after {} steps in {:.3} s (compile {:.3} s); {last} → {}",
        file.display(),
        result.status.name(),
        result.steps,
        result.run_seconds,
        result.compile_seconds,
        dir.display()
    );
    match result.status {
        traj::train::Status::Finished | traj::train::Status::Stopped => ExitCode::SUCCESS,
        traj::train::Status::Interrupted => interrupted_exit(),
        _ => ExitCode::from(1),
    }
}

/// The first few `name value` pairs of a row, for one-line summaries.
fn show_values(values: &[(String, f64)]) -> String {
    let shown: Vec<String> = values
        .iter()
        .take(4)
        .map(|(c, v)| format!("{c} {}", traj::output::format_float(*v)))
        .collect();
    shown.join(", ")
}

/// The bar template's style; the plain bar if the template were refused.
fn bar_style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// A terminal bar over one run's steps, added to `multi` when the loop first reports (once
/// the program is compiled and the number of steps known); drawn at most 10 times a second.
#[derive(Clone)]
struct StepBar {
    multi: MultiProgress,
    prefix: String,
    bar: Arc<OnceLock<ProgressBar>>,
}

impl StepBar {
    fn new(multi: &MultiProgress, prefix: String) -> StepBar {
        StepBar {
            multi: multi.clone(),
            prefix,
            bar: Arc::default(),
        }
    }

    fn progress(&self) -> traj::train::Progress {
        let me = self.clone();
        traj::train::Progress::new(move |k, total| {
            let bar = me.bar.get_or_init(|| {
                let bar = me.multi.add(ProgressBar::with_draw_target(
                    Some(total),
                    ProgressDrawTarget::hidden(),
                ));
                bar.set_style(bar_style(
                    "{prefix}[{wide_bar}] {pos}/{len} steps ({elapsed}, eta {eta})",
                ));
                bar.set_prefix(me.prefix.clone());
                bar
            });
            bar.set_position(k);
        })
    }

    fn finish(&self) {
        if let Some(bar) = self.bar.get() {
            bar.finish_and_clear();
            self.multi.remove(bar);
        }
    }
}

/// What `traj sweep` shows: a line per finished point and, on a terminal, a bar over the
/// points with one bar per running point under it.
struct SweepUi {
    multi: Option<MultiProgress>,
    points: ProgressBar,
    running: Mutex<HashMap<usize, StepBar>>,
    total: usize,
    done: AtomicUsize,
}

impl SweepUi {
    fn new(total: usize) -> SweepUi {
        let multi = std::io::stderr()
            .is_terminal()
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10)));
        let points = match &multi {
            Some(m) => {
                let bar = m.add(ProgressBar::with_draw_target(
                    Some(total as u64),
                    ProgressDrawTarget::hidden(),
                ));
                bar.set_style(bar_style(
                    "[{wide_bar}] {pos}/{len} points ({elapsed}, eta {eta})",
                ));
                bar.tick();
                bar
            }
            None => ProgressBar::hidden(),
        };
        SweepUi {
            multi,
            points,
            running: Mutex::default(),
            total,
            done: AtomicUsize::new(0),
        }
    }

    fn println(&self, text: &str) {
        match &self.multi {
            Some(m) => {
                if m.println(text).is_err() {
                    eprintln!("{text}");
                }
            }
            None => eprintln!("{text}"),
        }
    }

    fn finish(&self) {
        self.points.finish_and_clear();
        if let Some(m) = &self.multi {
            m.remove(&self.points);
        }
    }
}

impl traj::sweep::Observer for SweepUi {
    fn started(&self, index: usize, name: &str) -> Option<traj::train::Progress> {
        let multi = self.multi.as_ref()?;
        let bar = StepBar::new(multi, format!("{name} "));
        let progress = bar.progress();
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(index, bar);
        Some(progress)
    }

    fn finished(&self, index: usize, outcome: &traj::sweep::PointOutcome) {
        let bar = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&index);
        if let Some(bar) = bar {
            bar.finish();
        }
        let k = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        let mut line = format!(
            "[{k}/{}] {}: {}",
            self.total,
            outcome.name,
            outcome.status.name()
        );
        if let Some(steps) = outcome.steps {
            line += &format!(" after {steps} steps in {:.3} s", outcome.run_seconds);
            if !outcome.last.is_empty() {
                line += &format!("; {}", show_values(&outcome.last));
            }
        }
        match (&outcome.report, &outcome.message) {
            (Some(report), _) => line += &format!("\n{}", report.trim_end()),
            (None, Some(m)) => line += &format!("\n  {m}"),
            (None, None) => {}
        }
        self.println(&line);
        self.points.inc(1);
    }
}

/// `traj sweep`: one of its five modes.
fn sweep_command(args: SweepArgs) -> ExitCode {
    let slurm = args
        .slurm
        .then(|| traj::slurm::SlurmOptions::from(args.slurm_options));
    let jobs = usize::try_from(args.jobs).unwrap_or(usize::MAX);
    if let Some(dir) = &args.status {
        return sweep_status(dir);
    }
    if let Some(dir) = &args.collect {
        return sweep_collect(dir);
    }
    if let Some(dir) = &args.resume {
        return sweep_resume(dir, jobs, slurm.as_ref());
    }
    let Some(file) = &args.file else {
        // clap requires FILE without --status, --resume or --collect.
        return ExitCode::from(2);
    };
    if let (Some(index), Some(dir)) = (args.point, &args.out) {
        return sweep_point(file, index, dir);
    }
    sweep(
        file,
        &args.overrides.consts(),
        jobs,
        (args.overrides.steps, args.overrides.time),
        args.out,
        args.backend.into(),
        slurm.as_ref(),
    )
}

/// Each point's outcome counted by status, in order of first appearance: `3 finished, 1 error`.
fn count_statuses(outcomes: &[traj::sweep::PointOutcome]) -> Vec<String> {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for o in outcomes {
        let name = o.status.name();
        match counts.iter_mut().find(|(n, _)| *n == name) {
            Some((_, c)) => *c += 1,
            None => counts.push((name, 1)),
        }
    }
    counts.iter().map(|(n, c)| format!("{c} {n}")).collect()
}

/// `traj sweep FILE`: checks, writes the sweep folder's record, then runs the points here
/// or submits them to Slurm.
fn sweep(
    file: &std::path::Path,
    set: &[String],
    jobs: usize,
    (steps, time): (Option<u64>, Option<f64>),
    out: Option<PathBuf>,
    backend: traj::train::Backend,
    slurm: Option<&traj::slurm::SlurmOptions>,
) -> ExitCode {
    let started = std::time::Instant::now();
    if slurm.is_some() {
        // Every point is checked before anything is submitted, as `traj check` does.
        let mut sources = SourceMap::default();
        let options = Options {
            overrides: set.to_vec(),
            check_sweep: true,
        };
        match sema::check::check_file(file, &options, &mut sources) {
            Ok(Ok(_)) => {}
            Ok(Err(diags)) => {
                report(&diags, &sources, file);
                return ExitCode::from(1);
            }
            Err(message) => {
                eprintln!("error: {message}");
                return ExitCode::from(2);
            }
        }
    }
    let (checked, mut sources) = match checked_or_report(file, set) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let points = match traj::sweep::points(&checked, &mut sources, set) {
        Ok(Some(points)) => points,
        Ok(None) => {
            eprintln!(
                "error: {} has no `sweep` block (`traj run` runs its defaults)",
                file.display()
            );
            return ExitCode::from(1);
        }
        Err(diags) => {
            report(&diags, &sources, file);
            return ExitCode::from(1);
        }
    };
    // The sweep's folder is claimed as a run's is: locked, and refused if it holds anything.
    let folder = match &out {
        Some(dir) => traj::output::folder::RunFolder::claim_sweep(dir),
        None => traj::output::folder::RunFolder::claim_new(&traj::sweep::default_sweep_dir(
            file,
            std::time::SystemTime::now(),
        )),
    };
    let folder = match folder {
        Ok(f) => f,
        Err(e) => return folder_error(&e),
    };
    let dir = folder.dir().to_path_buf();
    let options = traj::sweep::SweepOptions {
        jobs,
        dir: dir.clone(),
        overrides: set.to_vec(),
        steps,
        time,
        color: use_color(),
        backend,
        interrupt: catch_interrupts(),
    };
    let recorded = traj::sweep::Manifest::new(file, &sources, &options)
        .and_then(|m| traj::sweep::write_manifest(&dir, &m, &points).map(|()| m));
    let manifest = match recorded {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(slurm) = slurm {
        let all: Vec<usize> = (0..points.len()).collect();
        return submit(&dir, &manifest, &all, slurm);
    }
    let (outcomes, counts) = match run_sweep_points(file, &points, &points, &options, folder) {
        Ok(done) => done,
        Err(code) => return code,
    };
    eprintln!(
        "{}: {} points ({}) in {:.3} s → {}",
        file.display(),
        outcomes.len(),
        counts.join(", "),
        started.elapsed().as_secs_f64(),
        dir.join("sweep.csv").display()
    );
    sweep_exit(&dir, &outcomes)
}

/// Runs `points` of the sweep in `options.dir` (its lock `folder` held until the results
/// are written), rebuilds `sweep.csv` and the summary from the folders of all of `every`,
/// and counts the outcomes by status (and those that never started).
fn run_sweep_points<F>(
    program: &std::path::Path,
    points: &[traj::sweep::Point],
    every: &[traj::sweep::Point],
    options: &traj::sweep::SweepOptions,
    folder: F,
) -> Result<(Vec<traj::sweep::PointOutcome>, Vec<String>), ExitCode> {
    let ui = SweepUi::new(points.len());
    let outcomes = traj::sweep::run_points(program, points, options, &ui);
    ui.finish();
    let dir = &options.dir;
    let written = traj::sweep_summary::write_results(dir, &traj::sweep::collect(dir, every));
    drop(folder);
    if let Err(e) = written {
        eprintln!("error: {e}");
        return Err(ExitCode::from(2));
    }
    let mut counts = count_statuses(&outcomes);
    let not_started = points.len() - outcomes.len();
    if not_started > 0 {
        counts.push(format!("{not_started} not started"));
    }
    Ok((outcomes, counts))
}

/// A local sweep's exit code: 128 + the signal when interrupted (with how to go on), 1 when
/// a point failed.
fn sweep_exit(dir: &std::path::Path, outcomes: &[traj::sweep::PointOutcome]) -> ExitCode {
    if INTERRUPTED.load(Ordering::Relaxed) {
        eprintln!(
            "interrupted: `traj sweep --resume {}` runs the points not finished",
            dir.display()
        );
        interrupted_exit()
    } else if outcomes.iter().any(traj::sweep::PointOutcome::failed) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Submits the points `indices` of the sweep in `dir` to Slurm (writing its scripts first
/// if the sweep has none) and prints the job ids.
fn submit(
    dir: &std::path::Path,
    manifest: &traj::sweep::Manifest,
    indices: &[usize],
    slurm: &traj::slurm::SlurmOptions,
) -> ExitCode {
    let scripts = traj::slurm::slurm_dir(dir).join("point.sbatch");
    let submitted = std::fs::canonicalize(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))
        .and_then(|dir| {
            if !scripts.exists() {
                let exe = std::env::current_exe()
                    .map_err(|e| format!("cannot find the traj binary: {e}"))?;
                traj::slurm::write_scripts(&dir, &exe, &manifest.program, slurm)?;
            }
            traj::slurm::submit(&dir, indices, slurm)
        });
    match submitted {
        Ok(s) => {
            println!("{}", s.array_job);
            println!("{}", s.collect_job);
            eprintln!(
                "submitted job array {} over {} point{} (--array={}) and job {}, which \
                 collects them → {}",
                s.array_job,
                indices.len(),
                if indices.len() == 1 { "" } else { "s" },
                s.array,
                s.collect_job,
                dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// `traj sweep FILE --point I --out DIR`: one point of a sweep begun with its record.
fn sweep_point(file: &std::path::Path, index: usize, dir: &std::path::Path) -> ExitCode {
    let read = traj::sweep::read_manifest(dir).and_then(|(manifest, points)| {
        manifest.check_unchanged(file)?;
        let backend = manifest.backend()?;
        let point = points.get(index).cloned().ok_or_else(|| {
            format!(
                "the sweep in {} has {} points: there is no point {index}",
                dir.display(),
                points.len()
            )
        })?;
        Ok((manifest, backend, point))
    });
    let (manifest, backend, point) = match read {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let options = traj::sweep::SweepOptions {
        jobs: 1,
        dir: dir.to_path_buf(),
        overrides: manifest.overrides,
        steps: manifest.steps,
        time: manifest.time,
        color: use_color(),
        backend,
        interrupt: catch_interrupts(),
    };
    let outcome = traj::sweep::run_point(file, &point, &options, None);
    let mut line = format!("point {index} {}: {}", outcome.name, outcome.status.name());
    if let Some(steps) = outcome.steps {
        line += &format!(" after {steps} steps in {:.3} s", outcome.run_seconds);
    }
    match (&outcome.report, &outcome.message) {
        (Some(report), _) => line += &format!("\n{}", report.trim_end()),
        (None, Some(m)) => line += &format!("\n  {m}"),
        (None, None) => {}
    }
    eprintln!("{line}");
    match outcome.status {
        traj::train::Status::Interrupted => interrupted_exit(),
        _ if outcome.failed() => ExitCode::from(1),
        _ => ExitCode::SUCCESS,
    }
}

/// `traj sweep --resume DIR [--slurm]`: the points without a finished run, run here or
/// submitted; refused when the program changed since the sweep began.
fn sweep_resume(
    dir: &std::path::Path,
    jobs: usize,
    slurm: Option<&traj::slurm::SlurmOptions>,
) -> ExitCode {
    let started = std::time::Instant::now();
    let read = traj::sweep::read_manifest(dir).and_then(|(manifest, points)| {
        manifest.check_unchanged(&manifest.program)?;
        let backend = manifest.backend()?;
        let folder = traj::output::folder::RunFolder::reopen_sweep(dir)?;
        Ok((manifest, points, backend, folder))
    });
    let (manifest, points, backend, folder) = match read {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut todo = traj::sweep::unfinished(dir, &points);
    if let Some(slurm) = slurm {
        // Points still in the queue are not submitted twice.
        let queued = match traj::slurm::queued(dir) {
            Ok(q) => q.unwrap_or_default(),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
        let in_queue = todo.iter().filter(|i| queued.contains_key(i)).count();
        todo.retain(|i| !queued.contains_key(i));
        if todo.is_empty() {
            eprintln!(
                "{}: nothing to submit: {} point{} finished, {in_queue} in the queue",
                dir.display(),
                points.len() - in_queue,
                if points.len() - in_queue == 1 {
                    ""
                } else {
                    "s"
                }
            );
            return ExitCode::SUCCESS;
        }
        return submit(dir, &manifest, &todo, slurm);
    }
    let options = traj::sweep::SweepOptions {
        jobs,
        dir: dir.to_path_buf(),
        overrides: manifest.overrides.clone(),
        steps: manifest.steps,
        time: manifest.time,
        color: use_color(),
        backend,
        interrupt: catch_interrupts(),
    };
    let rerun: Vec<traj::sweep::Point> = todo.iter().map(|&i| points[i].clone()).collect();
    let (outcomes, counts) =
        match run_sweep_points(&manifest.program, &rerun, &points, &options, folder) {
            Ok(done) => done,
            Err(code) => return code,
        };
    eprintln!(
        "{}: resumed {} of {} points ({}) in {:.3} s → {}",
        manifest.program.display(),
        outcomes.len(),
        points.len(),
        if counts.is_empty() {
            "all had finished".to_string()
        } else {
            counts.join(", ")
        },
        started.elapsed().as_secs_f64(),
        dir.join("sweep.csv").display()
    );
    sweep_exit(dir, &outcomes)
}

/// `traj sweep --collect DIR`: `sweep.csv` and the summary from the points' folders.
fn sweep_collect(dir: &std::path::Path) -> ExitCode {
    let written = traj::sweep::read_manifest(dir).and_then(|(_, points)| {
        let folder = traj::output::folder::RunFolder::reopen_sweep(dir)?;
        let outcomes = traj::sweep::collect(dir, &points);
        traj::sweep_summary::write_results(dir, &outcomes)?;
        drop(folder);
        Ok((outcomes, points.len()))
    });
    match written {
        Ok((outcomes, total)) => {
            let counts = count_statuses(&outcomes);
            eprintln!(
                "{}: {} of {total} points have ended{} → {}",
                dir.display(),
                outcomes.len(),
                if counts.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", counts.join(", "))
                },
                dir.join("sweep.csv").display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// `traj sweep --status DIR`: the points counted by state on stdout, then each failed
/// point and why.
fn sweep_status(dir: &std::path::Path) -> ExitCode {
    let (_, points) = match traj::sweep::read_manifest(dir) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let queued = match traj::slurm::queued(dir) {
        Ok(q) => q.unwrap_or_default(),
        Err(e) => {
            eprintln!("warning: {e}; the states are from the folders alone");
            HashMap::new()
        }
    };
    let states = traj::sweep::point_states(dir, &points, &queued);
    let counts: Vec<String> = traj::sweep::PointState::ALL
        .iter()
        .map(|s| format!("{} {}", states.iter().filter(|t| *t == s).count(), s.name()))
        .collect();
    println!(
        "{}: {} points: {}",
        dir.display(),
        points.len(),
        counts.join(", ")
    );
    for (point, state) in points.iter().zip(&states) {
        if *state != traj::sweep::PointState::Failed {
            continue;
        }
        let why = match traj::sweep::read_point(dir, point) {
            Some(o) => format!(
                "{}{}",
                o.status.name(),
                o.message.map(|m| format!(": {m}")).unwrap_or_default()
            ),
            None => "killed before its run ended (its folder is still .part)".into(),
        };
        println!("failed {}: {why}", traj::sweep::point_name(point));
    }
    ExitCode::SUCCESS
}

/// `traj plot`: the file written on stdout, what was skipped on stderr.
fn plot(options: traj::plot::PlotOptions) -> ExitCode {
    match traj::plot::plot(&options) {
        Ok(plotted) => {
            for note in &plotted.notes {
                eprintln!("note: {note}");
            }
            println!("{}", plotted.path.display());
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(1)
        }
    }
}

fn check(file: &std::path::Path, set: &[String], stage: Option<Stage>) -> ExitCode {
    let mut sources = SourceMap::default();
    let options = Options {
        overrides: set.to_vec(),
        check_sweep: stage.is_none(),
    };
    let result = match sema::check::check_file(file, &options, &mut sources) {
        Ok(r) => r,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(checked) => {
            match stage {
                None => eprintln!("{}: ok", file.display()),
                Some(Stage::Ast) => print!("{}", checked.dump(&sources)),
                Some(stage) => {
                    let stage = match stage {
                        Stage::Ir => traj::pipeline::Stage::Ir,
                        Stage::Grad => traj::pipeline::Stage::Grad,
                        Stage::Clif => traj::pipeline::Stage::Clif,
                        _ => traj::pipeline::Stage::Opt,
                    };
                    match traj::pipeline::print(&checked, &sources, stage) {
                        Ok(text) => print!("{text}"),
                        Err(e) => {
                            eprint!("{}", e.render(&sources, use_color()));
                            return ExitCode::from(1);
                        }
                    }
                }
            }
            ExitCode::SUCCESS
        }
        Err(diags) => {
            let color = use_color();
            for d in &diags {
                eprint!("{}", d.render(&sources, color));
            }
            let n = diags.len();
            eprintln!(
                "{}: {n} error{}",
                file.display(),
                if n == 1 { "" } else { "s" }
            );
            ExitCode::from(1)
        }
    }
}

/// A run or sweep folder that could not be claimed: said before any work is done.
fn folder_error(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(2)
}
