//! `traj sweep --slurm` on a real Slurm cluster (`ci/slurm-up.sh` starts a one-node one on
//! this machine; `.ci/run` runs it, then `cargo test --features slurm-tests --test slurm`).
//! A 12-point sweep goes out as one job array of at most 2 tasks at a time; one task is
//! cancelled mid-run with `scancel`; `--status` counts the points along the way; `--resume
//! --slurm` submits exactly the cancelled point; the collecting job's `sweep.csv` then equals
//! a local `traj sweep`'s, and every point's trajectory is the local one byte for byte.
//! Without a Slurm whose node is up, the test fails: it never skips.

mod common;

use std::path::{Path, PathBuf};

use common::{s, sweep_status, traj};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Runs a Slurm command; panics, saying how to get Slurm, if it cannot run.
fn slurm(program: &str, args: &[&str]) -> String {
    let o = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `{program}` ({e}): these tests need a Slurm cluster; start one with \
             ci/slurm-up.sh (as root)"
            )
        });
    assert!(
        o.status.success(),
        "`{program} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Slurm is up and its node can take jobs.
fn require_slurm() {
    let states = slurm("sinfo", &["--noheader", "--format=%T"]);
    assert!(
        states
            .lines()
            .any(|l| ["idle", "mixed", "allocated"].contains(&l.trim().trim_end_matches('*'))),
        "no Slurm node is up (sinfo says {states:?}): start one with ci/slurm-up.sh (as root)"
    );
}

/// Waits for `done`, polling; panics with `what` (and the queue) after `limit`.
fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > limit {
            let queue = slurm("squeue", &["--array"]);
            panic!("timed out after {limit:?} waiting for {what}; squeue:\n{queue}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether any of `jobs` (array jobs count their tasks) is still in the queue.
fn in_queue(jobs: &[u64]) -> bool {
    slurm("squeue", &["--noheader", "--array", "--format=%F %i"])
        .lines()
        .any(|l| {
            l.split_whitespace()
                .filter_map(|w| w.split('_').next()?.parse::<u64>().ok())
                .any(|j| jobs.contains(&j))
        })
}

/// The two job ids a submission prints: the array's, then the collecting job's.
fn job_ids(o: &Output) -> [u64; 2] {
    let stdout = String::from_utf8_lossy(&o.stdout);
    let ids: Vec<u64> = stdout
        .lines()
        .map(|l| l.trim().parse().expect("a job id a line"))
        .collect();
    assert_eq!(
        ids.len(),
        2,
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    [ids[0], ids[1]]
}

/// The counts of a `--status` report: finished, diverged, failed, running, pending.
fn counts(report: &str) -> [usize; 5] {
    let first = report.lines().next().expect("a status line");
    let list = first.split_once(" points: ").expect("N points: ...").1;
    let mut out = [0; 5];
    for (i, name) in ["finished", "diverged", "failed", "running", "pending"]
        .iter()
        .enumerate()
    {
        out[i] = list
            .split(", ")
            .find_map(|part| part.strip_suffix(&format!(" {name}")))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count of {name} in {first:?}"));
    }
    out
}

/// `sweep.csv` without its `run_seconds` column (wall time, the one cell that differs).
fn without_run_seconds(path: &Path) -> Vec<Vec<String>> {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_path(path)
        .expect("sweep.csv");
    let rows: Vec<Vec<String>> = r
        .records()
        .map(|rec| rec.expect("row").iter().map(str::to_string).collect())
        .collect();
    let col = rows[0]
        .iter()
        .position(|c| c == "run_seconds")
        .expect("run_seconds");
    rows.into_iter()
        .map(|mut row| {
            row.remove(col);
            row
        })
        .collect()
}

/// Twelve points, `k=0,seed=0` long (100 million steps, seconds), the others short; seeds give different
/// starts.
const PROGRAM: &str = "\
const k = 0
const long = 1 // (1 + k + seed)
param x: [2] ~ normal(0, 1)
loss = 0.5 * sum(x^2)
train {
  optimizer gd(lr = 1e-7 * (k + 1))
  steps 2_000 + 100_000_000 * long
  record every 1_000_000 { loss, x }
}
sweep {
  k in 0..3
  seed in 0..4
}
";

const NAMES: [&str; 12] = [
    "k=0,seed=0",
    "k=0,seed=1",
    "k=0,seed=2",
    "k=0,seed=3",
    "k=1,seed=0",
    "k=1,seed=1",
    "k=1,seed=2",
    "k=1,seed=3",
    "k=2,seed=0",
    "k=2,seed=1",
    "k=2,seed=2",
    "k=2,seed=3",
];

#[test]
fn a_sweep_on_slurm_is_cancelled_resumed_and_collected_as_a_local_one() {
    require_slurm();
    let root: PathBuf =
        std::env::temp_dir().join(format!("traj-slurm-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("temp dir");
    let file = root.join("long.traj");
    std::fs::write(&file, PROGRAM).expect("write");

    // The reference: the same sweep on this machine.
    let local = root.join("local");
    let o = traj(&["sweep", s(&file), "-j", "2", "--out", s(&local)]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    let cluster = root.join("cluster");
    let o = traj(&[
        "sweep",
        s(&file),
        "--slurm",
        "--max-parallel",
        "2",
        "--time-limit",
        "00:10:00",
        "--out",
        s(&cluster),
    ]);
    let [array, collect] = job_ids(&o);
    let jobs = std::fs::read_to_string(cluster.join("slurm/jobs.csv")).expect("jobs.csv");
    assert_eq!(
        jobs,
        format!("array_job,collect_job,array\n{array},{collect},0-11%2\n")
    );

    // The long point runs (its rows reach `.part/`); the queue never runs more than 2.
    let part = cluster.join("k=0,seed=0.part").join("trajectory.csv");
    wait_for("point 0 to record rows", Duration::from_secs(120), || {
        std::fs::read_to_string(&part).is_ok_and(|t| t.lines().count() >= 3)
    });
    let [finished, diverged, failed, running, pending] = counts(&sweep_status(&cluster));
    assert_eq!(finished + diverged + failed + running + pending, 12);
    assert!((1..=2).contains(&running), "{running} running");
    assert_eq!((diverged, failed), (0, 0));
    assert!(pending >= 1, "{pending} pending");

    slurm("scancel", &[&format!("{array}_0")]);
    wait_for(
        "the array and the collecting job",
        Duration::from_secs(180),
        || !in_queue(&[array, collect]),
    );
    let report = sweep_status(&cluster);
    assert_eq!(
        counts(&report),
        [11, 0, 1, 0, 0],
        "{report}\nlog of task 0:\n{}",
        std::fs::read_to_string(cluster.join(format!("slurm/{array}_0.out"))).unwrap_or_default()
    );
    assert!(
        report.contains("failed k=0,seed=0: interrupted"),
        "{report}"
    );
    // The collecting job ran: every point but the cancelled one as locally.
    let collected = without_run_seconds(&cluster.join("sweep.csv"));
    let reference = without_run_seconds(&local.join("sweep.csv"));
    let status_col = collected[0].iter().position(|c| c == "status").unwrap();
    assert_eq!(collected[1][status_col], "interrupted");
    assert_eq!(collected[2..], reference[2..]);

    // Resuming submits the cancelled point alone, with the first submission's throttle.
    let o = traj(&["sweep", "--resume", s(&cluster), "--slurm"]);
    let [array2, collect2] = job_ids(&o);
    let jobs = std::fs::read_to_string(cluster.join("slurm/jobs.csv")).expect("jobs.csv");
    assert!(
        jobs.ends_with(&format!("\n{array2},{collect2},0%2\n")),
        "{jobs}"
    );
    wait_for(
        "the resumed point and its collecting job",
        Duration::from_secs(180),
        || !in_queue(&[array2, collect2]),
    );
    assert_eq!(counts(&sweep_status(&cluster)), [12, 0, 0, 0, 0]);
    // Nothing is left to resume.
    let o = traj(&["sweep", "--resume", s(&cluster), "--slurm"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(o.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("nothing to submit"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    assert_eq!(without_run_seconds(&cluster.join("sweep.csv")), reference);
    assert_eq!(
        std::fs::read(cluster.join("sweep_summary.csv")).expect("summary"),
        std::fs::read(local.join("sweep_summary.csv")).expect("summary")
    );
    for name in NAMES {
        let here = std::fs::read(local.join(name).join("trajectory.csv")).expect(name);
        let there = std::fs::read(cluster.join(name).join("trajectory.csv")).expect(name);
        assert_eq!(here, there, "{name}");
        assert!(here.len() > 40, "{name}");
        assert!(!cluster.join(format!("{name}.part")).exists(), "{name}");
    }
    std::fs::remove_dir_all(&root).expect("clean up");
}
