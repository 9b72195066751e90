//! The documentation is tested: every `traj` code block of `docs/*.md` and `README.md`
//! parses, checks or runs as its fence says, every `traj` command of a `sh` block exists,
//! and the reference lists every builtin (with its arguments), every stdlib function and
//! optimizer (with its parameters) and every subcommand.
//!
//! Fences: `traj` a whole program that checks clean; `traj parse` a fragment that parses
//! (its names are defined elsewhere); `traj run` a program that checks and runs (20 steps,
//! or to its end and compared with the `csv` block that follows it, exactly); `traj
//! run-fails` a program that checks and ends its run with status `error`; `traj error
//! CODE` a program the checker refuses with that code. `sh` blocks: each line starting
//! with `traj` names a command that exists; `sh not-run` blocks (features being built)
//! are not checked. `text` and `csv` blocks are output.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use traj::sema::builtins;
use traj::session::run;
use traj::train::{RunOptions, Status};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fenced code block: its info string, its text, the line of its opening fence.
struct Block {
    info: String,
    text: String,
    line: usize,
}

/// Every fenced block of a Markdown text, in order.
fn blocks(markdown: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in markdown.lines().enumerate() {
        let fence = line.trim_start().strip_prefix("```");
        match (&mut open, fence) {
            (None, Some(info)) => {
                open = Some(Block {
                    info: info.trim().to_string(),
                    text: String::new(),
                    line: i + 1,
                })
            }
            (Some(_), Some(_)) => out.push(open.take().expect("open")),
            (Some(b), None) => {
                b.text.push_str(line);
                b.text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "a code block is not closed");
    out
}

/// `docs/*.md` and `README.md`, relative to the root, sorted.
fn doc_files() -> Vec<PathBuf> {
    let mut out = vec![PathBuf::from("README.md")];
    for e in std::fs::read_dir(root().join("docs"))
        .expect("docs/")
        .flatten()
    {
        if e.path().extension().is_some_and(|x| x == "md") {
            out.push(Path::new("docs").join(e.file_name()));
        }
    }
    out.sort();
    out
}

/// The run's `trajectory.csv`, as `traj run` writes it.
fn trajectory_csv(r: &traj::train::RunResult, tag: &str) -> String {
    let path = std::env::temp_dir().join(format!("traj-docs-{tag}-{}.csv", std::process::id()));
    traj::output::write_trajectory_csv(&path, &r.trajectory).expect("written");
    let text = std::fs::read_to_string(&path).expect("readable");
    let _ = std::fs::remove_file(&path);
    text.replace("\r\n", "\n")
}

/// What is wrong with one `traj` block (`None` when it is as its fence says); `expected`
/// is the `csv` block that follows it, if any.
fn test_block(file: &Path, b: &Block, expected: Option<&str>) -> Option<String> {
    let path = root().join(file);
    let mut words = b.info.split_whitespace().skip(1);
    let mode = words.next().unwrap_or("check");
    if mode == "parse" {
        let (_, diagnostics) = traj::syntax::parse_module(0, &b.text);
        return (!diagnostics.is_empty()).then(|| {
            let d: Vec<_> = diagnostics.iter().map(|d| (d.code, &d.message)).collect();
            format!("does not parse: {d:?}")
        });
    }
    if mode == "error" {
        let code = words.next().unwrap_or("(no code given)");
        return match common::check(&path, &b.text) {
            Ok(_) => Some(format!("checks, but the fence expects {code}")),
            Err(report) if report.contains(&format!("[{code}]")) => None,
            Err(report) => Some(format!("expected {code}, got:\n{report}")),
        };
    }
    let (checked, sources) = match common::check(&path, &b.text) {
        Ok(c) => c,
        Err(report) => return Some(format!("does not check:\n{report}")),
    };
    match mode {
        "check" => None,
        "run" | "run-fails" => {
            let options = RunOptions {
                steps: if expected.is_some() { None } else { Some(20) },
                ..Default::default()
            };
            let r = match run(&checked, &sources, &options) {
                Ok(r) => r,
                Err(e) => return Some(format!("does not run: {e}")),
            };
            let ok = if mode == "run" {
                matches!(r.status, Status::Finished | Status::Stopped)
            } else {
                r.status == Status::Error
            };
            if !ok {
                return Some(format!("ends {:?}: {:?}", r.status, r.message));
            }
            let csv = trajectory_csv(&r, &b.line.to_string());
            match expected {
                Some(e) if e != csv => Some(format!("trajectory.csv is\n{csv}not\n{e}")),
                _ => None,
            }
        }
        other => Some(format!("unknown fence `traj {other}`")),
    }
}

#[test]
fn every_traj_block_of_the_docs_checks_or_runs_as_marked() {
    let mut failures = Vec::new();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for file in doc_files() {
        let text = std::fs::read_to_string(root().join(&file)).expect("readable");
        let bs = blocks(&text);
        for (i, b) in bs.iter().enumerate() {
            if b.info.is_empty() {
                failures.push(format!(
                    "{}:{}: a block without a language",
                    file.display(),
                    b.line
                ));
            }
            if b.info != "traj" && !b.info.starts_with("traj ") {
                continue;
            }
            let expected = bs
                .get(i + 1)
                .filter(|n| n.info == "csv" && b.info == "traj run")
                .map(|n| n.text.as_str());
            *counts.entry(b.info.clone()).or_default() += 1;
            if let Some(e) = test_block(&file, b, expected) {
                failures.push(format!("{}:{}: {e}", file.display(), b.line));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    for fence in ["traj", "traj parse", "traj run", "traj error E0302"] {
        assert!(counts.get(fence).is_some_and(|&n| n > 0), "{counts:?}");
    }
}

#[test]
fn a_wrong_block_fails() {
    let block = |info: &str, text: &str| Block {
        info: info.to_string(),
        text: text.to_string(),
        line: 1,
    };
    let file = Path::new("docs/reference.md");
    let program = "param w: [] = 1\nloss = w^2\ntrain {\n  optimizer gd(lr = 0.25)\n  steps 1\n  record every 1 { loss }\n}\n";
    assert_eq!(test_block(file, &block("traj run", program), None), None);
    let right = "step,loss\n0,1.0\n1,0.25\n";
    assert_eq!(
        test_block(file, &block("traj run", program), Some(right)),
        None
    );
    let wrong = "step,loss\n0,1.0\n1,0.5\n";
    assert!(test_block(file, &block("traj run", program), Some(wrong)).is_some());
    assert!(test_block(file, &block("traj run-fails", program), None).is_some());
    assert!(test_block(file, &block("traj error E0302", program), None).is_some());
    assert!(test_block(file, &block("traj", "data x = y\n"), None).is_some());
    assert_eq!(
        test_block(file, &block("traj parse", "data x = y\n"), None),
        None
    );
    assert!(test_block(file, &block("traj parse", "data x = = y\n"), None).is_some());
    assert!(test_block(file, &block("traj runn", program), None).is_some());
}

#[test]
fn every_traj_command_of_a_sh_block_exists() {
    let mut failures = Vec::new();
    let mut seen = 0;
    for file in doc_files() {
        let text = std::fs::read_to_string(root().join(&file)).expect("readable");
        for b in blocks(&text).iter().filter(|b| b.info == "sh") {
            for line in b.text.lines() {
                let mut words = line.split_whitespace();
                if words.next() != Some("traj") {
                    continue;
                }
                let word = words.next().unwrap_or("");
                let args: Vec<&str> = if word.starts_with('-') {
                    vec![word]
                } else {
                    vec![word, "--help"]
                };
                let out = Command::new(env!("CARGO_BIN_EXE_traj"))
                    .args(&args)
                    .output()
                    .expect("traj runs");
                seen += 1;
                if !out.status.success() {
                    failures.push(format!("{}:{}: `{line}`", file.display(), b.line));
                }
            }
        }
    }
    assert!(seen >= 5, "only {seen} commands found");
    assert!(
        failures.is_empty(),
        "unknown commands:\n{}",
        failures.join("\n")
    );
}

fn reference() -> String {
    std::fs::read_to_string(root().join("docs/reference.md")).expect("docs/reference.md")
}

/// The text of `## N.` up to the next `## ` heading.
fn section(text: &str, number: &str) -> String {
    let head = format!("\n## {number}. ");
    let start = text
        .find(&head)
        .unwrap_or_else(|| panic!("no section {number}"));
    let rest = &text[start + head.len()..];
    rest[..rest.find("\n## ").unwrap_or(rest.len())].to_string()
}

/// Every `` `name(args)` `` in the first cell of a table row: (name, argument names,
/// whether `dims...` is among them). `name = default` counts as `name`.
fn documented_signatures(text: &str) -> Vec<(String, BTreeSet<String>, bool)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(cell) = line.strip_prefix("| ").and_then(|l| l.split(" |").next()) else {
            continue;
        };
        for code in cell.split('`').skip(1).step_by(2) {
            let Some((name, args)) = code.split_once('(') else {
                out.push((code.to_string(), BTreeSet::new(), false));
                continue;
            };
            let args = args.trim_end_matches(')');
            let variadic = args.contains("dims...");
            let names = args
                .split(',')
                .map(|a| a.split('=').next().unwrap_or("").trim())
                .filter(|a| !a.is_empty() && *a != "dims...")
                .map(str::to_string)
                .collect();
            out.push((name.to_string(), names, variadic));
        }
    }
    out
}

fn signature_names(s: &builtins::Signature) -> BTreeSet<String> {
    s.required
        .iter()
        .chain(s.optional)
        .chain(s.kw_only)
        .map(|a| a.to_string())
        .collect()
}

#[test]
fn the_reference_lists_every_builtin_with_its_arguments() {
    let text = reference();
    let builtins_section = section(&text, "6");
    // Union of the argument names documented for each name (`max` has two rows).
    let mut documented: BTreeMap<String, (BTreeSet<String>, bool)> = BTreeMap::new();
    for (name, args, variadic) in documented_signatures(&builtins_section) {
        let entry = documented.entry(name).or_default();
        entry.0.extend(args);
        entry.1 |= variadic;
    }
    let mut failures = Vec::new();
    for name in builtins::all_names() {
        match builtins::signature(name) {
            Some(sig) => match documented.get(name) {
                None => failures.push(format!("`{name}(...)` is not in section 6")),
                Some((args, variadic)) => {
                    if *args != signature_names(&sig) || *variadic != sig.variadic {
                        failures.push(format!(
                            "`{name}`: documented {args:?} (dims... {variadic}), the table has {:?} (dims... {})",
                            signature_names(&sig),
                            sig.variadic
                        ));
                    }
                }
            },
            None => {
                if !text.contains(&format!("`{name}`")) {
                    failures.push(format!("`{name}` is not in the reference"));
                }
            }
        }
    }
    for name in documented.keys() {
        if builtins::signature(name).is_none() && !builtins::builtin_value(name) {
            failures.push(format!("section 6 documents `{name}`, which is no builtin"));
        }
    }
    for name in builtins::OPTIMIZER_NAMES {
        if !section(&text, "3").contains(&format!("| `{name}` |")) {
            failures.push(format!("`{name}` is not in the table of section 3.9"));
        }
    }
    // The distributions of `param ~` (section 3).
    for (name, args, _) in documented_signatures(&section(&text, "3")) {
        if let Some(sig) = builtins::distribution(&name)
            && args != signature_names(&sig)
        {
            failures.push(format!(
                "distribution `{name}`: documented {args:?}, the table has {:?}",
                signature_names(&sig)
            ));
        }
    }
    for name in [
        "normal",
        "uniform",
        "zeros",
        "ones",
        "constant",
        "orthogonal",
        "identity",
    ] {
        assert!(builtins::distribution(name).is_some(), "{name}");
        if !section(&text, "3").contains(&format!("`{name}")) {
            failures.push(format!("distribution `{name}` is not in section 3"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_reference_lists_every_stdlib_function_and_optimizer_as_defined() {
    let text = section(&reference(), "8");
    let mut failures = Vec::new();
    let mut seen = 0;
    for e in std::fs::read_dir(root().join("stdlib/std"))
        .expect("stdlib")
        .flatten()
    {
        let module = std::fs::read_to_string(e.path()).expect("readable");
        for line in module.lines() {
            let Some(rest) = line
                .strip_prefix("fn ")
                .or_else(|| line.strip_prefix("optimizer "))
            else {
                continue;
            };
            // `name(params)` exactly as defined.
            let head = &rest[..rest.find(')').expect("a parameter list") + 1];
            seen += 1;
            if !text.contains(&format!("`{head}`")) {
                failures.push(format!("`{head}` ({})", e.path().display()));
            }
        }
    }
    assert!(seen >= 40, "only {seen} stdlib definitions found");
    assert!(
        failures.is_empty(),
        "not in section 8 as defined:\n{}",
        failures.join("\n")
    );
}

#[test]
fn the_reference_lists_every_subcommand() {
    let out = Command::new(env!("CARGO_BIN_EXE_traj"))
        .arg("--help")
        .output()
        .expect("traj runs");
    let help = String::from_utf8_lossy(&out.stdout).to_string();
    let commands: Vec<&str> = help
        .split("Commands:")
        .nth(1)
        .expect("a list of commands")
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .take_while(|w| !w.ends_with(':'))
        .filter(|w| *w != "help")
        .collect();
    assert!(commands.contains(&"run"), "{help}");
    let text = section(&reference(), "9");
    for c in commands {
        assert!(
            text.contains(&format!("`traj {c} ")),
            "`traj {c}` is not in section 9"
        );
    }
}
