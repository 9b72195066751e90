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
enum Stage {
    /// The parsed, resolved program with every top-level name's kind, type and shape.
    Ast,
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
        .spawn(move || run(cli))
        .and_then(|t| {
            t.join()
                .map_err(|_| std::io::Error::other("the compiler thread failed"))
        })
        .unwrap_or_else(|e| {
            eprintln!("error: {e}");
            ExitCode::from(3)
        })
}

fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Check { file, set, seed } => {
            let mut set = set;
            if let Some(s) = seed {
                set.push(format!("seed={s}"));
            }
            check(&file, &set, None)
        }
        Command::Ir { file, stage, set } => check(&file, &set, Some(stage)),
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
