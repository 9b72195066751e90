//! `traj repl` through piped input (a scripted session: no prompts, no colour), every
//! command and its error paths checked against insta snapshots; and the real binary on a
//! pseudo-terminal (rexpect): stepping, a value, tab completion, an error the session
//! survives, Ctrl-C during a long `:run`, and `:quit` with status 0.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const PROGRAM: &str = "\
const n = 4, lr = 0.1
data A = randn(n, n) / 2 + eye(n)
param w: [n] ~ normal(0, 1)
let r = A @ w - ones(n)
loss = 0.5 * sum(r^2)
train {
  optimizer gd(lr = lr)
  steps 50
  record every 10 { loss, w }
}
";

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("traj-repl-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Runs `traj repl FILE` (from `dir`) with `input` piped in: (stdout, stderr, status).
fn piped(dir: &Path, file: &str, input: &str) -> (String, String, i32) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_traj"))
        .args(["repl", file])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("writes");
    let out = child.wait_with_output().expect("ends");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

/// Each input line followed by what it printed (stdout and stderr together), as a
/// transcript; and the exit status. One process runs the whole session; the replies are
/// told apart by a marker command after each line.
fn transcript(dir: &Path, file: &str, lines: &[&str]) -> (String, i32) {
    let mut input = String::new();
    for l in lines {
        input.push_str(l);
        input.push_str("\n:help quit\n");
    }
    let script = format!("exec '{}' repl '{file}' 2>&1", env!("CARGO_BIN_EXE_traj"));
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("writes");
    let output = child.wait_with_output().expect("ends");
    let status = output.status.code().unwrap_or(-1);
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    let marker = ":quit \n  leave (Ctrl-D too)\n";
    let mut text = String::new();
    for (l, r) in lines.iter().zip(out.split(marker)) {
        text.push_str(&format!("> {l}\n{r}"));
    }
    (text, status)
}

#[test]
fn a_scripted_session_covers_every_command() {
    let dir = temp_dir("script");
    std::fs::write(dir.join("p.traj"), PROGRAM).expect("writes");
    let lines = [
        ":help",
        ":help svals",
        ":help square_loss",
        ":show",
        "w",
        "A",
        "n * lr",
        ":type A @ w",
        ":step",
        ":step 19",
        "loss",
        ":grad sum(w^2)",
        "let s = sum(w)",
        "s",
        ":show s",
        ":set lr = 0.2",
        ":step 10",
        ":record",
        ":plot loss --logy",
        ":ir s",
        ":save out",
        "loss = 0.5 * sum(r^2) + 0.01 * sum(w^2)",
        ":run",
        ":step",
        ":reset",
        ":full w",
        ":reload",
        ":load p.traj",
        ":quit",
    ];
    let (text, status) = transcript(&dir, "p.traj", &lines);
    insta::assert_snapshot!("scripted_session", text);
    assert_eq!(status, 1, "`:step` after the end fails, so the script does");
    let csv = std::fs::read_to_string(dir.join("out/trajectory.csv")).expect("saved");
    assert_eq!(csv.lines().count(), 5, "{csv}");
    assert!(csv.lines().last().expect("row").starts_with("30,"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_scripted_session_reports_errors_and_goes_on() {
    let dir = temp_dir("errors");
    std::fs::write(dir.join("p.traj"), PROGRAM).expect("writes");
    let lines = [
        "A @ ones(3)",
        "loss = sum(q)",
        "let = 3",
        "param v: [2] ~ normal(0, 1) +",
        ":set nope = 1",
        ":set lr",
        ":step many",
        ":grad w",
        ":plot nothing",
        ":bogus",
        ":help nothing",
        ":load missing.traj",
        ":save",
        "sum(w) == sum(w)",
    ];
    let (text, status) = transcript(&dir, "p.traj", &lines);
    insta::assert_snapshot!("scripted_errors", text);
    assert_eq!(status, 1);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn an_error_or_a_divergence_while_stepping_is_reported_and_the_session_goes_on() {
    let dir = temp_dir("kink");
    std::fs::write(
        dir.join("kink.traj"),
        "const lr = 1.0\nparam x: [] = 1\nloss = sqrt(x^2)\ntrain {\n  optimizer gd(lr = lr)\n  steps 10\n  record every 1 { x, loss }\n}\n",
    )
    .expect("writes");
    let lines = [
        ":step 3",
        ":record",
        ":step",
        ":reset",
        ":set lr = 1e300",
        ":step 3",
        ":record",
        ":show x",
    ];
    let (text, status) = transcript(&dir, "kink.traj", &lines);
    insta::assert_snapshot!("stepping_errors", text);
    assert_eq!(status, 1);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn multi_line_input_is_joined_while_brackets_are_open() {
    let dir = temp_dir("multi");
    std::fs::write(dir.join("p.traj"), PROGRAM).expect("writes");
    let (out, err, code) = piped(
        &dir,
        "p.traj",
        "sum([1,\n  2,\n  3])\nfn f(x) = (\n  x + 1\n)\nf(1)\n",
    );
    assert_eq!(err, "");
    assert_eq!(out, "6  : int []\ndefined f\n2  : int []\n");
    assert_eq!(code, 0);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn time_and_clif_report_on_the_compiled_loop() {
    let dir = temp_dir("time");
    std::fs::write(dir.join("p.traj"), PROGRAM).expect("writes");
    let (out, err, code) = piped(&dir, "p.traj", ":step 20\n:time\n:clif\n");
    assert_eq!((err.as_str(), code), ("", 0));
    let time = out.lines().nth(1).expect("time line");
    assert!(
        time.starts_with("compile ")
            && time.contains("; 20 steps in ")
            && time.ends_with(" µs/step)"),
        "{time}"
    );
    assert!(out.contains("function "), "no Cranelift function in {out}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn on_a_terminal_it_steps_completes_survives_errors_and_stops_on_ctrl_c() {
    use rexpect::session::spawn_command;
    let dir = temp_dir("pty");
    std::fs::write(dir.join("p.traj"), PROGRAM).expect("writes");
    std::fs::write(
        dir.join("long.traj"),
        PROGRAM
            .replace("steps 50", "steps 2_000_000_000")
            .replace("every 10", "every 500_000_000"),
    )
    .expect("writes");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_traj"));
    cmd.args(["repl", "p.traj"])
        .current_dir(&dir)
        .env("XDG_DATA_HOME", dir.join("data"))
        .env("TERM", "xterm")
        .env("NO_COLOR", "1");
    let mut p = spawn_command(cmd, Some(30_000)).expect("spawns");
    p.exp_string("loaded p.traj: params w [4]; at step 0 of 50")
        .expect("banner");
    p.exp_string("traj[0]> ").expect("prompt");
    p.send_line(":step 20").expect("sends");
    p.exp_string("step 20 of 50: loss ").expect("stepped");
    p.exp_string("traj[20]> ").expect("prompt at 20");
    p.send_line("step * 2").expect("sends");
    p.exp_string("40  : int []").expect("value");
    // Tab completes a builtin: `sva<TAB>` becomes `svals`.
    p.send("sva").expect("sends");
    p.send("\t").expect("tab");
    p.send_line("(A)[0] > 0").expect("sends");
    p.exp_string("1.0  : float []").expect("completed svals");
    // An error, then the session goes on where it was.
    p.send_line("A @ ones(3)").expect("sends");
    p.exp_string("E03").expect("shape error");
    p.exp_string("traj[20]> ").expect("prompt kept");
    p.send_line("step").expect("sends");
    p.exp_string("20  : int []").expect("same step");
    // Ctrl-C stops a long run at a step boundary and returns to the prompt.
    p.send_line(":load long.traj").expect("sends");
    p.exp_string("at step 0 of 2000000000").expect("loaded");
    p.send_line(":run").expect("sends");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    p.send_control('c').expect("ctrl-c");
    p.exp_string("(interrupted after").expect("interrupted");
    p.send_line(":quit").expect("sends");
    p.exp_eof().expect("ends");
    let status = p.process().wait().expect("status");
    assert!(
        matches!(status, rexpect::process::WaitStatus::Exited(_, 0)),
        "{status:?}"
    );
    let history = std::fs::read_to_string(dir.join("data/traj/history")).expect("history");
    assert!(history.contains(":step 20"), "{history}");
    std::fs::remove_dir_all(&dir).ok();
}
