//! Runs that are interrupted, killed or crowded, through the real binary: SIGINT and SIGTERM
//! end `traj run` (both backends) and `traj sweep` at a step boundary with every row so far,
//! status `interrupted` and the final params; SIGKILL leaves the rows flushed and a
//! `run.json` saying the run did not finish; an `--out` that cannot be made fails before
//! compiling; a folder holding a run is refused unless `--force`; concurrent runs never mix;
//! a sweep stopped by Ctrl-C resumes (`--resume`) to the sweep it would have been.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ndarray::ArrayD;
use traj::sweep::partial_dir as partial;

/// A scratch folder of one test, deleted when the test ends (the interrupted runs write
/// gigabytes of rows: nothing of them may stay behind in the temp dir).
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(tag: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("traj-interrupt-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    Scratch(dir)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf8 path")
}

fn traj(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_traj"))
        .args(args)
        .output()
        .expect("traj runs")
}

fn spawn(args: &[&str], cwd: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_traj"))
        .args(args)
        .current_dir(cwd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("traj starts")
}

/// Gradient descent on ½‖x‖² that never ends by itself; every step recorded.
const ENDLESS: &str = "\
param x: [2] = [1.0, 2.0]
loss = 0.5 * sum(x^2)
train {
  optimizer gd(lr = 1e-7)
  steps 1_000_000_000
  record every 1 { loss, x }
}
";

/// The complete data lines of `trajectory.csv` (a line still being written is left out).
fn rows(path: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind("\r\n").map_or("", |i| &text[..i + 2]);
    complete
        .split("\r\n")
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| l.split(',').map(String::from).collect())
        .collect()
}

/// Waits until `path` holds at least `n` complete rows.
fn wait_for_rows(path: &Path, n: usize, child: &mut Child) {
    let started = Instant::now();
    while rows(path).len() < n {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("traj ended ({status}) before recording {n} rows");
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no {n} rows in {} after 120 s",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn signal(child: &Child, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).expect("pid");
    // SAFETY: `kill` on the child this test spawned and has not yet waited for.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
}

fn run_json(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("run.json")).expect("run.json");
    serde_json::from_str(&text).expect("run.json is JSON")
}

fn npy(path: &Path) -> Vec<f64> {
    let a: ArrayD<f64> = ndarray_npy::read_npy(path).expect("npy");
    a.iter().copied().collect()
}

/// Rows 0, 1, 2, ... in order.
fn assert_consecutive(rows: &[Vec<String>]) {
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r[0], i.to_string(), "row {i}");
    }
}

/// Interrupts a `traj run` of [`ENDLESS`] with `sig` once it has recorded 200 rows, then
/// checks its folder against an uninterrupted run of as many steps.
fn interrupt_run(backend: &str, sig: libc::c_int, code: i32) {
    let dir = temp_dir(&format!("run-{backend}-{sig}"));
    let file = dir.join("endless.traj");
    std::fs::write(&file, ENDLESS).expect("write");
    let out = dir.join("out");
    let mut child = spawn(
        &["run", s(&file), "--backend", backend, "--out", s(&out)],
        &dir,
    );
    wait_for_rows(&out.join("trajectory.csv"), 200, &mut child);
    signal(&child, sig);
    let o = child.wait_with_output().expect("traj ends");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(code), "{stderr}");

    let info = run_json(&out);
    assert_eq!(info["status"], "interrupted", "{info}");
    let steps = info["steps"].as_u64().expect("steps");
    assert!(steps >= 199, "{info}");
    assert_eq!(info["message"], format!("interrupted at step {steps}"));
    let text = std::fs::read_to_string(out.join("trajectory.csv")).expect("csv");
    let got = rows(&out.join("trajectory.csv"));
    assert!(text.ends_with("\r\n"));
    assert_eq!(got.len() as u64, steps + 1);
    assert_consecutive(&got);
    // The saved params are the last row's, bit for bit.
    let x = npy(&out.join("params/x.npy"));
    let last: Vec<f64> = got[steps as usize][2..4]
        .iter()
        .map(|c| c.parse().expect("float"))
        .collect();
    assert_eq!(x.len(), 2);
    assert_eq!(x[0].to_bits(), last[0].to_bits());
    assert_eq!(x[1].to_bits(), last[1].to_bits());
    assert!(!out.join(".traj-lock").exists());

    // The same rows as a run that was told to stop there.
    let whole = dir.join("whole");
    let o = traj(&[
        "run",
        s(&file),
        "--backend",
        backend,
        "--steps",
        &steps.to_string(),
        "--out",
        s(&whole),
    ]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        std::fs::read_to_string(whole.join("trajectory.csv")).expect("csv"),
        text
    );
    assert_eq!(npy(&whole.join("params/x.npy")), x);
}

#[test]
fn sigint_ends_a_jit_run_with_its_rows_and_params() {
    interrupt_run("jit", libc::SIGINT, 130);
}

#[test]
fn sigterm_ends_a_jit_run_with_its_rows_and_params() {
    interrupt_run("jit", libc::SIGTERM, 143);
}

#[test]
fn sigint_ends_an_interpreted_run_with_its_rows_and_params() {
    interrupt_run("interp", libc::SIGINT, 130);
}

#[test]
fn sigterm_ends_an_interpreted_run_with_its_rows_and_params() {
    interrupt_run("interp", libc::SIGTERM, 143);
}

#[test]
fn sigkill_leaves_the_flushed_rows_and_an_unfinished_run_json() {
    for backend in ["jit", "interp"] {
        let dir = temp_dir(&format!("kill-{backend}"));
        let file = dir.join("endless.traj");
        std::fs::write(&file, ENDLESS).expect("write");
        let out = dir.join("out");
        let mut child = spawn(
            &["run", s(&file), "--backend", backend, "--out", s(&out)],
            &dir,
        );
        wait_for_rows(&out.join("trajectory.csv"), 300, &mut child);
        signal(&child, libc::SIGKILL);
        let o = child.wait_with_output().expect("traj ends");
        assert_eq!(o.status.code(), None);

        let info = run_json(&out);
        assert_eq!(info["status"], "running", "{info}");
        assert_eq!(info["backend"], backend);
        // Whole lines only, each as an uninterrupted run writes it.
        let text = std::fs::read_to_string(out.join("trajectory.csv")).expect("csv");
        assert!(text.ends_with("\r\n"), "a partial line was written");
        let got = rows(&out.join("trajectory.csv"));
        assert!(got.len() >= 300, "{}", got.len());
        assert_consecutive(&got);
        let whole = dir.join("whole");
        let steps = (got.len() - 1).to_string();
        let o = traj(&[
            "run",
            s(&file),
            "--backend",
            backend,
            "--steps",
            &steps,
            "--out",
            s(&whole),
        ]);
        assert_eq!(o.status.code(), Some(0));
        assert_eq!(
            std::fs::read_to_string(whole.join("trajectory.csv")).expect("csv"),
            text
        );

        // The killed run's folder is refused, then replaced with --force (its lock file is
        // not held by anyone).
        let o = traj(&["run", s(&file), "--steps", "3", "--out", s(&out)]);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("not empty") && stderr.contains("--force"),
            "{stderr}"
        );
        let o = traj(&["run", s(&file), "--steps", "3", "--out", s(&out), "--force"]);
        assert_eq!(o.status.code(), Some(0));
        assert_eq!(rows(&out.join("trajectory.csv")).len(), 4);
        assert_eq!(run_json(&out)["status"], "finished");
    }
}

#[test]
fn an_out_that_cannot_be_created_fails_before_the_run() {
    let dir = temp_dir("bad-out");
    let file = dir.join("endless.traj");
    std::fs::write(&file, ENDLESS).expect("write");
    std::fs::write(dir.join("blocker"), "a file").expect("write");
    // A billion steps: the error must come before them.
    for backend in ["jit", "interp"] {
        let bad = dir.join("blocker").join("out");
        let o = traj(&["run", s(&file), "--backend", backend, "--out", s(&bad)]);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("cannot create the run folder") && stderr.contains("blocker"),
            "{stderr}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(dir.join("blocker")).expect("read"),
        "a file"
    );
}

const SHORT: &str = "\
param x: [3] ~ normal(0, 1)
loss = 0.5 * sum(x^2)
train {
  optimizer gd(lr = 0.1)
  steps 2000
  record every 1 { loss, x }
}
";

#[test]
fn a_folder_holding_a_run_is_refused_unless_forced() {
    let dir = temp_dir("reuse");
    let file = dir.join("short.traj");
    std::fs::write(&file, SHORT).expect("write");
    let out = dir.join("out");
    let o = traj(&["run", s(&file), "--out", s(&out), "--steps", "5"]);
    assert_eq!(o.status.code(), Some(0));
    let before = std::fs::read_to_string(out.join("trajectory.csv")).expect("csv");
    let info_before = std::fs::read_to_string(out.join("run.json")).expect("json");

    let o = traj(&["run", s(&file), "--out", s(&out), "--seed", "3"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("is not empty") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("trajectory.csv")).expect("csv"),
        before
    );
    assert_eq!(
        std::fs::read_to_string(out.join("run.json")).expect("json"),
        info_before
    );

    // --force replaces the run: nothing of the old one is left.
    let o = traj(&[
        "run",
        s(&file),
        "--out",
        s(&out),
        "--seed",
        "3",
        "--steps",
        "2",
        "--force",
    ]);
    assert_eq!(o.status.code(), Some(0));
    let info = run_json(&out);
    assert_eq!(
        (info["seed"].as_i64(), info["steps"].as_u64()),
        (Some(3), Some(2))
    );
    assert_eq!(rows(&out.join("trajectory.csv")).len(), 3);

    // A file no run wrote is never deleted, even with --force.
    std::fs::write(out.join("notes.txt"), "mine").expect("write");
    let o = traj(&["run", s(&file), "--out", s(&out), "--force"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("notes.txt"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(out.join("notes.txt")).expect("notes"),
        "mine"
    );
    assert_eq!(run_json(&out)["seed"], 3);

    // An empty folder is taken as it is.
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let o = traj(&["run", s(&file), "--out", s(&empty), "--steps", "1"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(rows(&empty.join("trajectory.csv")).len(), 2);
}

#[test]
fn two_runs_into_one_out_never_mix() {
    let dir = temp_dir("race");
    let file = dir.join("short.traj");
    std::fs::write(&file, SHORT).expect("write");
    // What each seed writes on its own.
    let mut alone = Vec::new();
    for seed in ["1", "2"] {
        let out = dir.join(format!("alone-{seed}"));
        let o = traj(&["run", s(&file), "--seed", seed, "--out", s(&out)]);
        assert_eq!(o.status.code(), Some(0));
        alone.push(std::fs::read_to_string(out.join("trajectory.csv")).expect("csv"));
    }
    assert_ne!(alone[0], alone[1]);
    for round in 0..8 {
        let out = dir.join(format!("shared-{round}"));
        let children: Vec<Child> = ["1", "2"]
            .iter()
            .map(|seed| spawn(&["run", s(&file), "--seed", seed, "--out", s(&out)], &dir))
            .collect();
        let outputs: Vec<Output> = children
            .into_iter()
            .map(|c| c.wait_with_output().expect("traj ends"))
            .collect();
        let codes: Vec<Option<i32>> = outputs.iter().map(|o| o.status.code()).collect();
        let winner = codes
            .iter()
            .position(|c| *c == Some(0))
            .unwrap_or_else(|| panic!("no run succeeded: {codes:?}"));
        let loser = &outputs[1 - winner];
        let stderr = String::from_utf8_lossy(&loser.stderr);
        assert_eq!(loser.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("another run is writing") || stderr.contains("is not empty"),
            "{stderr}"
        );
        let info = run_json(&out);
        assert_eq!(info["seed"].as_u64(), Some(winner as u64 + 1), "{info}");
        assert_eq!(info["status"], "finished");
        assert_eq!(
            std::fs::read_to_string(out.join("trajectory.csv")).expect("csv"),
            alone[winner]
        );
    }
}

#[test]
fn runs_started_together_get_their_own_default_folders() {
    let dir = temp_dir("default-names");
    let file = dir.join("short.traj");
    std::fs::write(&file, SHORT).expect("write");
    let seeds = ["1", "2", "3", "4"];
    let children: Vec<Child> = seeds
        .iter()
        .map(|seed| spawn(&["run", s(&file), "--seed", seed, "--steps", "50"], &dir))
        .collect();
    for c in children {
        let o = c.wait_with_output().expect("traj ends");
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let mut found: Vec<u64> = std::fs::read_dir(dir.join("runs"))
        .expect("runs/")
        .map(|e| {
            let run = e.expect("entry").path();
            assert_eq!(rows(&run.join("trajectory.csv")).len(), 51);
            run_json(&run)["seed"].as_u64().expect("seed")
        })
        .collect();
    found.sort_unstable();
    assert_eq!(found, vec![1, 2, 3, 4]);
}

/// A sweep whose first point ends at once and whose others never end.
const SWEEP: &str = "\
const n = 5
param x: [2] = [1.0, 2.0]
loss = 0.5 * sum(x^2)
train {
  optimizer gd(lr = 1e-7)
  steps n
  record every 1 { loss, x }
}
sweep { n in [5, 1_000_000_000, 1_000_000_001, 1_000_000_002] }
";

fn sweep_rows(path: &Path) -> Vec<Vec<String>> {
    let mut r = csv::Reader::from_path(path).expect("sweep.csv");
    let header: Vec<String> = r
        .headers()
        .expect("header")
        .iter()
        .map(String::from)
        .collect();
    let mut out = vec![header];
    for rec in r.records() {
        out.push(rec.expect("record").iter().map(String::from).collect());
    }
    out
}

fn interrupt_sweep(jobs: &str, sig: libc::c_int, code: i32) {
    let dir = temp_dir(&format!("sweep-{jobs}-{sig}"));
    let file = dir.join("sweep.traj");
    std::fs::write(&file, SWEEP).expect("write");
    let out = dir.join("out");
    let mut child = spawn(&["sweep", s(&file), "-j", jobs, "--out", s(&out)], &dir);
    // A running point writes `NAME.part/`, renamed `NAME/` when its run ends.
    wait_for_rows(
        &out.join("n=1000000000.part").join("trajectory.csv"),
        100,
        &mut child,
    );
    if jobs == "2" {
        // The second long point starts once the short one is done.
        wait_for_rows(
            &out.join("n=1000000001.part").join("trajectory.csv"),
            100,
            &mut child,
        );
    }
    signal(&child, sig);
    let o = child.wait_with_output().expect("traj ends");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(code), "{stderr}");

    let long: &[&str] = if jobs == "2" {
        &["n=1000000000", "n=1000000001"]
    } else {
        &["n=1000000000"]
    };
    let table = sweep_rows(&out.join("sweep.csv"));
    assert_eq!(table.len(), 2 + long.len(), "{table:?}");
    let col = |name: &str| table[0].iter().position(|c| c == name).expect(name);
    assert_eq!(table[1][col("n")], "5");
    assert_eq!(table[1][col("status")], "finished");
    assert_eq!(table[1][col("steps")], "5");
    for (i, name) in long.iter().enumerate() {
        let row = &table[2 + i];
        assert_eq!(format!("n={}", row[col("n")]), *name);
        assert_eq!(row[col("status")], "interrupted");
        let point = out.join(name);
        assert!(!partial(&point).exists(), "{name}.part was renamed");
        let info = run_json(&point);
        assert_eq!(info["status"], "interrupted");
        let steps = info["steps"].as_u64().expect("steps");
        assert_eq!(row[col("steps")], steps.to_string());
        let got = rows(&point.join("trajectory.csv"));
        assert_eq!(got.len() as u64, steps + 1);
        assert_consecutive(&got);
        let x = npy(&point.join("params/x.npy"));
        let last = &got[steps as usize];
        for (i, v) in x.iter().enumerate() {
            assert_eq!(
                v.to_bits(),
                last[2 + i].parse::<f64>().expect("x").to_bits()
            );
        }
        assert_eq!(row[col("x[1]")], last[3]);
    }
    // The points not started have no folder.
    assert!(!out.join("n=1000000002").exists());
    assert!(stderr.contains("not started"), "{stderr}");
}

#[test]
fn sigint_ends_a_sweep_keeping_its_finished_points() {
    interrupt_sweep("1", libc::SIGINT, 130);
}

#[test]
fn sigterm_ends_a_parallel_sweep_keeping_its_finished_points() {
    interrupt_sweep("2", libc::SIGTERM, 143);
}

#[test]
fn a_sweep_never_writes_into_a_folder_that_holds_something() {
    let dir = temp_dir("sweep-reuse");
    let file = dir.join("sweep.traj");
    std::fs::write(&file, SWEEP.replace("1_000_000_00", "")).expect("write");
    let out = dir.join("out");
    let o = traj(&["sweep", s(&file), "--out", s(&out)]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let before = std::fs::read_to_string(out.join("sweep.csv")).expect("sweep.csv");
    assert_eq!(sweep_rows(&out.join("sweep.csv")).len(), 5);
    assert!(!out.join(".traj-lock").exists());

    let o = traj(&["sweep", s(&file), "--out", s(&out), "--seed", "4"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("is not empty") && stderr.contains("sweep.csv"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("sweep.csv")).expect("sweep.csv"),
        before
    );
}

/// Four points; the third long (60 million steps, seconds), recorded every million steps.
const RESUMABLE: &str = "\
const n = 5
param x: [2] ~ normal(0, 1)
loss = 0.5 * sum(x^2)
train {
  optimizer gd(lr = 1e-7)
  steps n
  record every 1_000_000 { loss, x }
}
sweep { n in [3, 4, 60_000_000, 6] }
";

/// `sweep.csv` without `run_seconds` (wall time).
fn sweep_table(path: &Path) -> Vec<Vec<String>> {
    let table = sweep_rows(path);
    let col = table[0]
        .iter()
        .position(|c| c == "run_seconds")
        .expect("run_seconds");
    table
        .into_iter()
        .map(|mut row| {
            row.remove(col);
            row
        })
        .collect()
}

#[test]
fn a_sweep_stopped_by_ctrl_c_resumes_to_the_sweep_it_would_have_been() {
    let dir = temp_dir("sweep-resume");
    let file = dir.join("sweep.traj");
    std::fs::write(&file, RESUMABLE).expect("write");
    let out = dir.join("out");
    let mut child = spawn(&["sweep", s(&file), "--out", s(&out)], &dir);
    wait_for_rows(&out.join("n=60000000.part/trajectory.csv"), 2, &mut child);
    signal(&child, libc::SIGINT);
    let o = child.wait_with_output().expect("traj ends");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains(&format!("`traj sweep --resume {}`", out.display())),
        "{stderr}"
    );
    let cut = sweep_rows(&out.join("sweep.csv"));
    let col = cut[0].iter().position(|c| c == "status").expect("status");
    let statuses: Vec<&str> = cut[1..].iter().map(|r| r[col].as_str()).collect();
    assert_eq!(statuses, ["finished", "finished", "interrupted"], "{cut:?}");
    let first = std::fs::read(out.join("n=3/run.json")).expect("run.json");

    let o = traj(&["sweep", "--resume", s(&out)]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("resumed 2 of 4 points (2 finished)"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(out.join("n=3/run.json")).expect("run.json"),
        first
    );

    let whole = dir.join("whole");
    let o = traj(&["sweep", s(&file), "-j", "2", "--out", s(&whole)]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        sweep_table(&out.join("sweep.csv")),
        sweep_table(&whole.join("sweep.csv"))
    );
    for n in ["3", "4", "60000000", "6"] {
        let name = format!("n={n}/trajectory.csv");
        assert_eq!(
            std::fs::read(out.join(&name)).expect("resumed"),
            std::fs::read(whole.join(&name)).expect("whole"),
            "{name}"
        );
    }
}
