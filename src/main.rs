//! The `traj` command line: `check` and `ir`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

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
        #[arg(long = "set", value_name = "NAME=VALUE")]
        set: Vec<String>,
        #[arg(long)]
        seed: Option<String>,
        /// The most steps to take (overrides the train block's `steps`).
        #[arg(long)]
        steps: Option<u64>,
        /// The run folder (default `runs/NAME-TIMESTAMP/`).
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "interp")]
        backend: Backend,
    },
    /// Print the program at a stage of the compiler.
    Ir {
        file: PathBuf,
        #[arg(long, value_enum, default_value = "ast")]
        stage: Stage,
        #[arg(long = "set", value_name = "NAME=VALUE")]
        set: Vec<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Backend {
    /// The reference interpreter.
    Interp,
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
}

fn use_color() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal()
}

/// The compiler recurses over expression trees; its thread gets a stack far larger than the
/// deepest program the parser admits needs (see `syntax::parse::MAX_OPERATORS`).
const COMPILER_STACK: usize = 256 << 20;

fn main() -> ExitCode {
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
        Command::Run {
            file,
            set,
            seed,
            steps,
            out,
            backend: Backend::Interp,
        } => {
            let mut set = set;
            if let Some(s) = seed {
                set.push(format!("seed={s}"));
            }
            run_program(&file, &set, steps, out)
        }
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

fn run_program(
    file: &std::path::Path,
    set: &[String],
    steps: Option<u64>,
    out: Option<PathBuf>,
) -> ExitCode {
    let mut sources = SourceMap::default();
    let options = Options {
        overrides: set.to_vec(),
        check_sweep: false,
    };
    let checked = match sema::check::check_file(file, &options, &mut sources) {
        Ok(Ok(c)) => c,
        Ok(Err(diags)) => {
            report(&diags, &sources, file);
            return ExitCode::from(1);
        }
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    let result = match traj::train::run(&checked, &sources, &traj::train::RunOptions { steps }) {
        Ok(r) => r,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(1);
        }
    };
    let dir =
        out.unwrap_or_else(|| traj::output::default_run_dir(file, std::time::SystemTime::now()));
    let text = std::fs::read(file).unwrap_or_default();
    let info = traj::output::RunInfo {
        program: file.display().to_string(),
        source_sha256: traj::output::sha256_hex(&text),
        consts: checked
            .consts
            .iter()
            .map(|(k, v)| {
                let j = match v {
                    traj::sema::types::Scalar::Int(i) => serde_json::json!(i),
                    traj::sema::types::Scalar::Float(f) => serde_json::json!(f),
                };
                (k.clone(), j)
            })
            .collect(),
        seed: result.seed as i64,
        backend: "interp".into(),
        status: result.status.name().into(),
        steps: result.steps,
        compile_seconds: result.compile_seconds,
        run_seconds: result.run_seconds,
        version: env!("CARGO_PKG_VERSION").into(),
        message: result.message.clone(),
    };
    if let Err(e) = traj::output::write_run_folder(&dir, &info, &result.trajectory, &result.params)
    {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    if let Some(m) = &result.message {
        eprintln!("{m}");
    }
    let last = result
        .trajectory
        .rows
        .last()
        .map(|(s, cells)| {
            let shown: Vec<String> = result
                .trajectory
                .columns
                .iter()
                .zip(cells)
                .take(4)
                .filter_map(|(c, v)| v.map(|v| format!("{c} {}", traj::output::format_float(v))))
                .collect();
            format!("step {s}: {}", shown.join(", "))
        })
        .unwrap_or_default();
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
        _ => ExitCode::from(1),
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
                    let name = match stage {
                        Stage::Ir => "ir",
                        Stage::Grad => "grad",
                        _ => "opt",
                    };
                    let seed = traj::train::seed_of(&checked);
                    match traj::train::statics::evaluate(&checked, &sources, seed)
                        .and_then(|s| traj::train::compile::dump(&checked, &s, name))
                    {
                        Ok(text) => print!("{text}"),
                        Err(e) => {
                            eprintln!("error: {e}");
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
