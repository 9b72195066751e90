//! The `traj` binary as a user meets it: exit codes, every error of a file reported with
//! `FILE:LINE:COL`, no colour off a terminal, `--set` overrides, `traj ir`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn traj(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_traj"))
        .args(args)
        .env_remove("NO_COLOR")
        .output()
        .expect("traj runs")
}

fn write_temp(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("traj-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

/// `(code, line, col)` of every report: the code from `[E0301]`, the position from the
/// header `╭─[ FILE:LINE:COL ]` that follows it.
fn reports(stderr: &str, file: &Path) -> Vec<(String, usize, usize)> {
    let mut out = Vec::new();
    let mut code = None;
    let marker = format!("{}:", file.display());
    for line in stderr.lines() {
        if let Some(rest) = line.strip_prefix('[') {
            code = rest.split(']').next().map(str::to_string);
        } else if let (Some(i), Some(c)) = (line.find(&marker), code.take()) {
            let pos = line[i + marker.len()..].trim_end_matches([' ', ']']);
            let (l, col) = pos.split_once(':').expect("LINE:COL");
            out.push((c, l.parse().expect("line"), col.parse().expect("col")));
        }
    }
    out
}

const THREE_MISTAKES: &str = "\
const n = 10, d = 5
data X = randn(n, d)
data y = randn(n + 1)
param w: [d] ~ normal(0, 1)
loss = mean((X @ w - y)^2) + lamda * sum(w^2)
train {
  optimizer gd(lr = 0.1, momentum = 0.9)
  steps 100
}
";

#[test]
fn three_unrelated_mistakes_are_all_reported() {
    let file = write_temp("three.traj", THREE_MISTAKES);
    let out = traj(&["check", file.to_str().expect("utf8")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let found = reports(&stderr, &file);
    assert_eq!(
        found,
        vec![
            ("E0301".to_string(), 5, 14), // [10] - [11]: both operands labelled
            ("E0101".to_string(), 5, 30), // `lamda`
            ("E0502".to_string(), 7, 26), // `momentum` is no argument of gd
        ],
        "{stderr}"
    );
    assert!(
        stderr.contains("this is [10]") && stderr.contains("this is [11]"),
        "{stderr}"
    );
    assert!(stderr.contains("3 errors"), "{stderr}");
}

#[test]
fn a_clean_program_exits_zero() {
    let file = write_temp(
        "clean.traj",
        "const n = 3\nparam w: [n] ~ normal(0, 1)\nloss = sum(w^2)\ntrain {\n  optimizer gd(lr = 0.1)\n  steps 10\n}\n",
    );
    let out = traj(&["check", file.to_str().expect("utf8")]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).ends_with(": ok\n"));
}

#[test]
fn no_colour_off_a_terminal() {
    let file = write_temp("colour.traj", "data X = randn(3)\ndata Y = X + Z\n");
    let out = traj(&["check", file.to_str().expect("utf8")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("E0101"), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "ANSI escapes in piped output: {stderr:?}"
    );
}

#[test]
fn set_overrides_consts_as_ints_or_floats() {
    let file = write_temp(
        "set.traj",
        "const n = 4\nparam W: [n, 2] ~ normal(0, 1)\nloss = sum(W^2)\n",
    );
    let path = file.to_str().expect("utf8");
    // An int override changes the shape.
    let out = traj(&["ir", path, "--stage", "ast", "--set", "n=7"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("# const     n: int [] = 7"), "{stdout}");
    assert!(stdout.contains("# param     W: float [7, 2]"), "{stdout}");
    // A float override makes the const a float, which cannot be a shape.
    let out = traj(&["check", path, "--set", "n=7.5"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        reports(&stderr, &file),
        vec![("E0201".to_string(), 2, 11)],
        "{stderr}"
    );
    assert!(stderr.contains("//"), "the hint names `//`: {stderr}");
    // An unknown const is reported against the command line.
    let out = traj(&["check", path, "--set", "m=1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("[E0204]") && stderr.contains("<command line>"),
        "{stderr}"
    );
    // `--seed N` is `--set seed=N`.
    let out = traj(&["ir", path, "--stage", "ast", "--set", "seed=12"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("# const     n: int [] = 4"));
}

#[test]
fn a_missing_file_is_an_error_not_a_panic() {
    let out = traj(&["check", "/nonexistent/prog.traj"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.starts_with("error: cannot read /nonexistent/prog.traj"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn ir_ast_dump_is_stable() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(env!("CARGO_BIN_EXE_traj"))
        .current_dir(root)
        .args([
            "ir",
            "tests/fixtures/ok/section1_online_sgd.traj",
            "--stage",
            "ast",
        ])
        .output()
        .expect("traj runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    insta::assert_snapshot!(String::from_utf8_lossy(&out.stdout));
}

#[test]
fn ir_stages_print_the_lowered_gradient_and_optimized_functions() {
    let file = write_temp(
        "stages.traj",
        "param x: [] = 0\nloss = relu(x) - relu(-x)\n",
    );
    let path = file.to_str().expect("utf8");
    for stage in ["ir", "grad", "opt"] {
        let out = traj(&["ir", path, "--stage", stage]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        insta::assert_snapshot!(
            format!("stage_{stage}"),
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn ir_stage_clif_prints_the_cranelift_function() {
    let file = write_temp("clif.traj", "param x: [] = 0\nloss = relu(x) - relu(-x)\n");
    let out = traj(&["ir", file.to_str().expect("utf8"), "--stage", "clif"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One native function; relu's max is a compare-and-select, not a call.
    assert!(text.starts_with("function u0:0("), "{text}");
    assert!(
        text.contains("fcmp ge") && text.contains("select"),
        "{text}"
    );
}

#[test]
fn traj_dump_clif_writes_the_cranelift_ir_during_a_jit_run() {
    let file = write_temp(
        "dump.traj",
        "param x: [] = 1\nloss = x^2\ntrain {\n  optimizer gd(lr = 0.1)\n  steps 2\n}\n",
    );
    let dir = std::env::temp_dir().join(format!("traj-cli-dump-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_traj"))
        .args([
            "run",
            file.to_str().expect("utf8"),
            "--backend",
            "jit",
            "--out",
        ])
        .arg(&dir)
        .env("TRAJ_DUMP", "clif")
        .output()
        .expect("traj runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    // The step loop (gradient, tie path and update in one function), then the record
    // function that runs at rows.
    assert_eq!(stderr.matches("function u0:0(").count(), 2, "{stderr}");
    assert!(
        stderr.contains("call_memcpy") || stderr.contains("brif"),
        "{stderr}"
    );
    let info = std::fs::read_to_string(dir.join("run.json")).expect("run.json");
    assert!(info.contains("\"backend\": \"jit\""), "{info}");
}
