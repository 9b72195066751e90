//! `traj sweep`: one run folder per point named by its consts, `sweep.csv` whose last values
//! match `traj run` of the same point bit for bit, the same result on any number of
//! threads, failed points reported while the others run, and the sweep's values; a sweep
//! folder's record, `--status`, `--collect`, `--resume` (exactly the points not finished)
//! and its refusal of a program that changed.

mod common;

use std::path::{Path, PathBuf};

use common::{s, sweep_status, traj};

use traj::diag::SourceMap;
use traj::ir::types::Scalar;
use traj::sema::Options;

/// A fresh folder for one test.
fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("traj-sweep-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

/// The rows of a CSV file, header first.
fn read_csv(path: &Path) -> Vec<Vec<String>> {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_path(path)
        .expect("csv opens");
    r.records()
        .map(|rec| rec.expect("csv row").iter().map(str::to_string).collect())
        .collect()
}

/// The cell of `column` in `row`.
fn cell<'a>(rows: &'a [Vec<String>], row: usize, column: &str) -> &'a str {
    let i = rows[0]
        .iter()
        .position(|c| c == column)
        .unwrap_or_else(|| panic!("no column {column} in {:?}", rows[0]));
    &rows[row][i]
}

const REGRESSION: &str = "\
const n = 8, d = 3, lr = 0.1
data X = randn(n, d)
data y = X @ randn(d) + 0.1 * randn(n)
param w: [d] ~ normal(0, 1)
loss = 0.5 * mean((X @ w - y)^2)
train {
  optimizer gd(lr = lr)
  steps 40
  record every 15 { loss, wn = norm(w) }
}
sweep {
  lr in [0.1, 0.2]
  seed in 0..2
}
";

const NAMES: [&str; 4] = [
    "lr=0.1,seed=0",
    "lr=0.1,seed=1",
    "lr=0.2,seed=0",
    "lr=0.2,seed=1",
];

#[test]
fn a_two_by_two_sweep_matches_separate_runs() {
    let dir = temp_dir("grid");
    let file = write(&dir, "reg.traj", REGRESSION);
    let out = dir.join("out");
    let o = traj(&["sweep", s(&file), "--out", s(&out)]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");

    let mut folders: Vec<String> = std::fs::read_dir(&out)
        .expect("sweep folder")
        .map(|e| e.expect("entry"))
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    folders.sort();
    assert_eq!(folders, NAMES);

    let rows = read_csv(&out.join("sweep.csv"));
    assert_eq!(
        rows[0],
        [
            "lr",
            "seed",
            "status",
            "steps",
            "run_seconds",
            "loss",
            "wn",
            "message"
        ]
    );
    assert_eq!(rows.len(), 5);
    let consts = [("0.1", "0"), ("0.1", "1"), ("0.2", "0"), ("0.2", "1")];
    for (i, (lr, seed)) in consts.iter().enumerate() {
        let row = i + 1;
        assert_eq!(cell(&rows, row, "lr"), *lr);
        assert_eq!(cell(&rows, row, "seed"), *seed);
        assert_eq!(cell(&rows, row, "status"), "finished");
        assert_eq!(cell(&rows, row, "steps"), "40");
        assert_eq!(cell(&rows, row, "message"), "");

        // The same point run on its own.
        let single = dir.join(format!("single-{i}"));
        let lr_set = format!("lr={lr}");
        let o = traj(&[
            "run",
            s(&file),
            "--set",
            &lr_set,
            "--seed",
            seed,
            "--out",
            s(&single),
        ]);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let traj_rows = read_csv(&single.join("trajectory.csv"));
        let last = traj_rows.len() - 1;
        assert_eq!(cell(&traj_rows, last, "step"), "40");
        assert_eq!(cell(&rows, row, "loss"), cell(&traj_rows, last, "loss"));
        assert_eq!(cell(&rows, row, "wn"), cell(&traj_rows, last, "wn"));
        let point = out.join(NAMES[i]);
        assert_eq!(
            std::fs::read(point.join("trajectory.csv")).expect("point trajectory"),
            std::fs::read(single.join("trajectory.csv")).expect("run trajectory"),
            "{}",
            NAMES[i]
        );
        assert_eq!(
            std::fs::read(point.join("params/w.npy")).expect("point params"),
            std::fs::read(single.join("params/w.npy")).expect("run params"),
        );
        let info: serde_json::Value =
            serde_json::from_slice(&std::fs::read(point.join("run.json")).expect("run.json"))
                .expect("json");
        assert_eq!(info["status"], "finished");
        assert_eq!(info["consts"]["seed"], serde_json::json!(i % 2));
        assert_eq!(info["consts"]["lr"].as_f64(), lr.parse::<f64>().ok());
    }
    // Different points did different things.
    assert_ne!(cell(&rows, 1, "loss"), cell(&rows, 2, "loss"));
    assert_ne!(cell(&rows, 1, "loss"), cell(&rows, 3, "loss"));
}

#[test]
fn two_threads_give_the_same_sweep_csv_as_one() {
    let dir = temp_dir("jobs");
    let file = write(&dir, "reg.traj", REGRESSION);
    let one = dir.join("one");
    let two = dir.join("two");
    let o = traj(&["sweep", s(&file), "-j", "1", "--out", s(&one)]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = traj(&["sweep", s(&file), "-j", "2", "--out", s(&two)]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Every cell but the timings.
    let untimed = |path: &Path| -> Vec<Vec<String>> {
        let rows = read_csv(path);
        let timing = rows[0].iter().position(|c| c == "run_seconds");
        rows.into_iter()
            .map(|row| {
                row.into_iter()
                    .enumerate()
                    .filter(|(i, _)| Some(*i) != timing)
                    .map(|(_, c)| c)
                    .collect()
            })
            .collect()
    };
    assert_eq!(
        untimed(&one.join("sweep.csv")),
        untimed(&two.join("sweep.csv"))
    );
    assert_eq!(
        std::fs::read(one.join("sweep_summary.csv")).expect("summary"),
        std::fs::read(two.join("sweep_summary.csv")).expect("summary"),
    );
    let a = std::fs::read(one.join("sweep.csv")).expect("sweep.csv");
    for name in NAMES {
        assert_eq!(
            std::fs::read(one.join(name).join("trajectory.csv")).expect("trajectory"),
            std::fs::read(two.join(name).join("trajectory.csv")).expect("trajectory"),
        );
    }
    // RFC 4180 line ends.
    assert!(String::from_utf8_lossy(&a).contains("\r\n"));
}

#[test]
fn a_failing_point_is_reported_and_the_others_run() {
    let dir = temp_dir("fail");
    let file = write(
        &dir,
        "bad.traj",
        "\
const n = 2
param w: [3 - n] ~ normal(0, 1)
loss = sum(w^2)
train {
  optimizer gd(lr = 0.1)
  steps 5
  record every 1 { loss }
}
sweep { n in [2, 4] }
",
    );
    let out = dir.join("out");
    let o = traj(&["sweep", s(&file), "-j", "2", "--out", s(&out)]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(out.join("n=2").join("trajectory.csv").is_file());
    // The point that does not check has a folder saying why, and nothing else.
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("n=4/run.json")).expect("run.json"))
            .expect("json");
    assert_eq!(info["status"], "error");
    assert_eq!(info["consts"]["n"], 4);
    assert!(info["message"].as_str().is_some_and(|m| m.starts_with('E')));
    assert!(!out.join("n=4/trajectory.csv").exists());
    let rows = read_csv(&out.join("sweep.csv"));
    assert_eq!(rows.len(), 3);
    assert_eq!(cell(&rows, 1, "n"), "2");
    assert_eq!(cell(&rows, 1, "status"), "finished");
    assert_eq!(cell(&rows, 1, "steps"), "5");
    assert!(!cell(&rows, 1, "loss").is_empty());
    assert_eq!(cell(&rows, 2, "n"), "4");
    assert_eq!(cell(&rows, 2, "status"), "error");
    assert_eq!(cell(&rows, 2, "steps"), "0");
    assert_eq!(cell(&rows, 2, "loss"), "");
    let message = cell(&rows, 2, "message");
    assert!(message.starts_with('E'), "{message}");
    assert!(stderr.contains("n=4: error"), "{stderr}");
}

#[test]
fn a_run_time_error_fails_its_point_only() {
    let dir = temp_dir("runtime");
    // At c = 0 the run starts at w = 0, where `sqrt` has no Clarke subgradient.
    let file = write(
        &dir,
        "rt.traj",
        "\
const c = 1.0
param w: [2] = c * ones(2)
loss = sqrt(sum(w^2))
train {
  optimizer gd(lr = 0.1)
  steps 3
  record every 1 { loss }
}
sweep { c in [1.0, 0.0] }
",
    );
    let out = dir.join("out");
    let o = traj(&["sweep", s(&file), "--out", s(&out)]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    let rows = read_csv(&out.join("sweep.csv"));
    assert_eq!(cell(&rows, 1, "status"), "finished", "{stderr}");
    assert_eq!(cell(&rows, 2, "status"), "error", "{stderr}");
    assert_eq!(cell(&rows, 2, "steps"), "0", "{stderr}");
    assert!(cell(&rows, 2, "message").contains("step 0"), "{stderr}");
    // The failed run still writes its folder, as `traj run` does.
    assert!(out.join("c=0.0").join("run.json").is_file());
}

#[test]
fn set_narrows_a_swept_const_and_seed_is_a_const() {
    let dir = temp_dir("narrow");
    let file = write(&dir, "reg.traj", REGRESSION);
    let out = dir.join("out");
    let o = traj(&[
        "sweep",
        s(&file),
        "--set",
        "lr=0.05",
        "--steps",
        "7",
        "--out",
        s(&out),
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let rows = read_csv(&out.join("sweep.csv"));
    assert_eq!(rows.len(), 3);
    assert_eq!(cell(&rows, 1, "lr"), "0.05");
    assert_eq!(cell(&rows, 2, "seed"), "1");
    assert_eq!(cell(&rows, 2, "steps"), "7");
    assert!(out.join("lr=0.05,seed=1").is_dir());
}

/// `--time T` is a flow's `time` at every point, as `--steps` is GD's steps: each point's
/// last row is at t = T with the loss of the flow there (w(t) = w0·e^(−c·t), loss
/// 0.5·c·|w0|²·e^(−2c·t)), sweep.csv shows T, and the sweep's record keeps it.
#[test]
fn time_sets_every_flow_points_time() {
    let dir = temp_dir("time");
    let text = "const c = 1.0\nparam w: [2] = [1.0, -2.0]\nloss = 0.5 * c * sum(w^2)\n\
                train {\n  optimizer flow(rtol = 1e-10, atol = 1e-12)\n  time 5\n  \
                record every 0.5 { loss }\n}\nsweep {\n  c in [1.0, 2.0]\n}\n";
    let file = write(&dir, "flow.traj", text);
    let out = dir.join("out");
    sweep_ok(&["sweep", s(&file), "--time", "1.25", "--out", s(&out)]);
    let rows = read_csv(&out.join("sweep.csv"));
    assert_eq!(rows.len(), 3);
    for (row, c) in [(1, 1.0f64), (2, 2.0)] {
        assert_eq!(cell(&rows, row, "t"), "1.25");
        let point = read_csv(&out.join(format!("c={c:?}")).join("trajectory.csv"));
        let last = point.len() - 1;
        assert_eq!(cell(&point, last, "t"), "1.25");
        assert_eq!(cell(&point, last - 1, "t"), "1.0");
        let loss: f64 = cell(&point, last, "loss").parse().unwrap();
        let want = 0.5 * c * 5.0 * (-2.0 * c * 1.25).exp();
        assert!(
            (loss - want).abs() <= 1e-7 * want,
            "c = {c}: {loss} vs {want}"
        );
    }
    let (manifest, _) = traj::sweep::read_manifest(&out).expect("record");
    assert_eq!(manifest.time, Some(1.25));
}

#[test]
fn a_program_without_a_sweep_is_refused() {
    let dir = temp_dir("nosweep");
    let text = REGRESSION.split("sweep {").next().expect("prefix");
    let file = write(&dir, "plain.traj", text);
    let o = traj(&["sweep", s(&file), "--out", s(&dir.join("out"))]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no `sweep` block"), "{stderr}");
    assert!(!dir.join("out").exists());
}

fn points_of(text: &str, set: &[&str]) -> Vec<String> {
    let mut sources = SourceMap::default();
    let overrides: Vec<String> = set.iter().map(|s| s.to_string()).collect();
    let options = Options {
        overrides: overrides.clone(),
        check_sweep: false,
    };
    let checked = traj::sema::check::check_source("t.traj", None, text, &options, &mut sources)
        .unwrap_or_else(|d| panic!("{d:?}"));
    let points = traj::sweep::points(&checked, &mut sources, &overrides)
        .unwrap_or_else(|d| panic!("{d:?}"))
        .expect("a sweep");
    points
        .iter()
        .map(|p| traj::sweep::point_name(p.as_slice()))
        .collect()
}

#[test]
fn sweep_values_are_const_expressions_and_the_last_key_varies_fastest() {
    let text = "\
const n = 4, depth = 2, lr = 0.5
param w: [n] ~ normal(0, 1)
loss = sum(w^2)
train { optimizer gd(lr = lr); steps 1 }
sweep {
  depth in [1, n - 1]
  lr in [1 / n, 1]
  seed in n..n + 2
}
";
    assert_eq!(
        points_of(text, &[]),
        [
            "depth=1,lr=0.25,seed=4",
            "depth=1,lr=0.25,seed=5",
            "depth=1,lr=1.0,seed=4",
            "depth=1,lr=1.0,seed=5",
            "depth=3,lr=0.25,seed=4",
            "depth=3,lr=0.25,seed=5",
            "depth=3,lr=1.0,seed=4",
            "depth=3,lr=1.0,seed=5",
        ]
    );
    // Values are evaluated with the command line's overrides.
    assert_eq!(points_of(text, &["n=2", "seed=9"]).len(), 4);
    assert_eq!(points_of(text, &["n=2"])[0], "depth=1,lr=0.5,seed=2");
    // A float value makes the const a float at every point; so does a float default.
    let mixed = text.replace("depth in [1, n - 1]", "depth in [1, 2.5]");
    assert_eq!(points_of(&mixed, &["lr=2"])[0], "depth=1.0,lr=2,seed=4");
    assert_eq!(
        traj::sweep::point_overrides(
            &["lr=1".into(), "n=3".into()],
            &[
                ("lr".into(), Scalar::Float(0.1)),
                ("seed".into(), Scalar::Int(2))
            ]
        ),
        ["n=3", "lr=0.1", "seed=2"]
    );
}

fn sweep_ok(args: &[&str]) -> String {
    let o = traj(args);
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(0), "{args:?}: {stderr}");
    stderr
}

/// `sweep.csv` without its `run_seconds` column (wall time).
fn without_run_seconds(path: &Path) -> Vec<Vec<String>> {
    let rows = read_csv(path);
    let col = rows[0]
        .iter()
        .position(|c| c == "run_seconds")
        .expect("run_seconds");
    rows.into_iter()
        .map(|mut r| {
            r.remove(col);
            r
        })
        .collect()
}

fn set_status(point: &Path, status: &str) {
    let path = point.join("run.json");
    let mut info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("run.json")).expect("json");
    info["status"] = serde_json::json!(status);
    std::fs::write(&path, serde_json::to_string_pretty(&info).expect("json")).expect("write");
}

#[test]
fn a_sweep_folder_records_its_program_and_points() {
    let dir = temp_dir("record");
    let file = write(&dir, "reg.traj", REGRESSION);
    let out = dir.join("out");
    sweep_ok(&[
        "sweep",
        s(&file),
        "--set",
        "n=9",
        "--steps",
        "30",
        "--out",
        s(&out),
    ]);
    let (manifest, points) = traj::sweep::read_manifest(&out).expect("record");
    assert_eq!(manifest.program, std::fs::canonicalize(&file).unwrap());
    assert_eq!(manifest.sources.len(), 1);
    assert_eq!(
        manifest.sources[0].sha256,
        traj::output::sha256_hex(REGRESSION.as_bytes())
    );
    assert_eq!(manifest.overrides, ["n=9"]);
    assert_eq!(manifest.steps, Some(30));
    assert_eq!(manifest.backend, "jit");
    let names: Vec<String> = points.iter().map(|p| traj::sweep::point_name(p)).collect();
    assert_eq!(names, NAMES);
    assert_eq!(points[2][0], ("lr".to_string(), Scalar::Float(0.2)));
    assert_eq!(points[3][1], ("seed".to_string(), Scalar::Int(1)));
    assert_eq!(
        std::fs::read_to_string(out.join("points.csv")).unwrap(),
        "index,folder,lr,seed\r\n0,\"lr=0.1,seed=0\",0.1,0\r\n1,\"lr=0.1,seed=1\",0.1,1\r\n\
         2,\"lr=0.2,seed=0\",0.2,0\r\n3,\"lr=0.2,seed=1\",0.2,1\r\n"
    );
    assert_eq!(
        sweep_status(&out),
        format!(
            "{}: 4 points: 4 finished, 0 diverged, 0 failed, 0 running, 0 pending\n",
            out.display()
        )
    );
}

#[test]
fn collect_rebuilds_sweep_csv_from_the_folders_byte_for_byte() {
    let dir = temp_dir("collect");
    let file = write(&dir, "reg.traj", REGRESSION);
    let out = dir.join("out");
    sweep_ok(&["sweep", s(&file), "-j", "2", "--out", s(&out)]);
    let csv = std::fs::read(out.join("sweep.csv")).expect("sweep.csv");
    let summary = std::fs::read(out.join("sweep_summary.csv")).expect("summary");
    std::fs::remove_file(out.join("sweep.csv")).unwrap();
    std::fs::remove_file(out.join("sweep_summary.csv")).unwrap();
    let stderr = sweep_ok(&["sweep", "--collect", s(&out)]);
    assert!(
        stderr.contains("4 of 4 points have ended (4 finished)"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(out.join("sweep.csv")).unwrap(), csv);
    assert_eq!(
        std::fs::read(out.join("sweep_summary.csv")).unwrap(),
        summary
    );

    // With a point missing, it lists the points there are.
    std::fs::remove_dir_all(out.join(NAMES[1])).unwrap();
    sweep_ok(&["sweep", "--collect", s(&out)]);
    let rows = read_csv(&out.join("sweep.csv"));
    assert_eq!(rows.len(), 4);
    assert_eq!((cell(&rows, 1, "seed"), cell(&rows, 2, "lr")), ("0", "0.2"));
}

#[test]
fn resume_runs_exactly_the_points_without_a_finished_run() {
    let dir = temp_dir("resume");
    let file = write(&dir, "reg.traj", REGRESSION);
    let out = dir.join("out");
    sweep_ok(&["sweep", s(&file), "--out", s(&out)]);
    let reference = without_run_seconds(&out.join("sweep.csv"));
    let kept = std::fs::read(out.join(NAMES[0]).join("run.json")).unwrap();

    // What a sweep cut short leaves: a point never started, a point ended `interrupted`,
    // and a point killed outright (its run still under the temporary name).
    std::fs::remove_dir_all(out.join(NAMES[1])).unwrap();
    set_status(&out.join(NAMES[2]), "interrupted");
    let part = traj::sweep::partial_dir(&out.join(NAMES[3]));
    std::fs::rename(out.join(NAMES[3]), &part).unwrap();
    set_status(&part, "running");
    std::fs::remove_file(out.join("sweep.csv")).unwrap();
    assert_eq!(
        sweep_status(&out),
        format!(
            "{}: 4 points: 1 finished, 0 diverged, 2 failed, 0 running, 1 pending\n\
             failed {}: interrupted\n\
             failed {}: killed before its run ended (its folder is still .part)\n",
            out.display(),
            NAMES[2],
            NAMES[3]
        )
    );

    let stderr = sweep_ok(&["sweep", "--resume", s(&out)]);
    // One line a point run: `[k/3] NAME: finished after 40 steps ...`.
    let mut ran: Vec<&str> = stderr
        .lines()
        .filter_map(|l| {
            l.strip_prefix('[')?
                .split_once("] ")?
                .1
                .split_once(": finished")
        })
        .map(|(name, _)| name)
        .collect();
    ran.sort_unstable();
    assert_eq!(ran, &NAMES[1..], "{stderr}");
    assert!(
        stderr.contains("resumed 3 of 4 points (3 finished)"),
        "{stderr}"
    );
    // The finished point was not run again.
    assert_eq!(
        std::fs::read(out.join(NAMES[0]).join("run.json")).unwrap(),
        kept
    );
    assert!(!part.exists());
    assert_eq!(without_run_seconds(&out.join("sweep.csv")), reference);
    assert!(sweep_status(&out).contains(": 4 points: 4 finished, 0 diverged, 0 failed"));

    // Nothing left: a resume runs nothing and rewrites the same table.
    let stderr = sweep_ok(&["sweep", "--resume", s(&out)]);
    assert!(
        stderr.contains("resumed 0 of 4 points (all had finished)"),
        "{stderr}"
    );
    assert_eq!(without_run_seconds(&out.join("sweep.csv")), reference);
}

#[test]
fn resume_and_point_refuse_a_program_that_changed() {
    let dir = temp_dir("changed");
    let lib = write(&dir, "lib.traj", "fn half_square(v) = 0.5 * sum(v^2)\n");
    let text = format!(
        "use \"lib.traj\"\n{}",
        REGRESSION.replace(
            "loss = 0.5 * mean((X @ w - y)^2)",
            "loss = half_square(X @ w - y) / n"
        )
    );
    let file = write(&dir, "reg.traj", &text);
    let out = dir.join("out");
    sweep_ok(&["sweep", s(&file), "--out", s(&out)]);
    let (manifest, _) = traj::sweep::read_manifest(&out).expect("record");
    let files: Vec<PathBuf> = manifest.sources.iter().map(|h| h.file.clone()).collect();
    assert_eq!(
        files,
        [
            std::fs::canonicalize(&file).unwrap(),
            std::fs::canonicalize(&lib).unwrap()
        ]
    );
    std::fs::remove_dir_all(out.join(NAMES[1])).unwrap();
    let before = std::fs::read(out.join("sweep.csv")).unwrap();

    for (changed, original) in [
        (&file, text.clone()),
        (&lib, std::fs::read_to_string(&lib).unwrap()),
    ] {
        std::fs::write(changed, format!("{original}# a comment\n")).unwrap();
        let name = changed.file_name().unwrap().to_string_lossy().into_owned();
        let o = traj(&["sweep", "--resume", s(&out)]);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("the program changed since the sweep began") && stderr.contains(&name),
            "{stderr}"
        );
        let o = traj(&["sweep", s(&file), "--point", "1", "--out", s(&out)]);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("the program changed since the sweep began"),
            "{stderr}"
        );
        assert!(!out.join(NAMES[1]).exists());
        assert_eq!(std::fs::read(out.join("sweep.csv")).unwrap(), before);
        std::fs::write(changed, original).unwrap();
    }
    // Restored, the sweep resumes; `--point` runs one point by its index.
    let stderr = sweep_ok(&["sweep", s(&file), "--point", "1", "--out", s(&out)]);
    assert!(
        stderr.contains(&format!("point 1 {}: finished", NAMES[1])),
        "{stderr}"
    );
    assert!(out.join(NAMES[1]).join("trajectory.csv").is_file());
    let o = traj(&["sweep", s(&file), "--point", "4", "--out", s(&out)]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("has 4 points: there is no point 4"),
        "{stderr}"
    );
    let other = write(&dir, "other.traj", &text);
    let o = traj(&["sweep", s(&other), "--point", "0", "--out", s(&out)]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("is not the program of this sweep"),
        "{stderr}"
    );
}
