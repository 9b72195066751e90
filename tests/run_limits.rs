//! Programs at the edges of what runs, on both backends: empty dimensions give NumPy's
//! values, and what cannot run (sizes beyond memory, `.npy` headers that disagree with
//! their file, operator chains too deep) is a located error from `check` and `run`, never
//! a panic, an abort or a hang.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

const BACKENDS: [&str; 2] = ["interp", "jit"];

fn traj(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_traj"))
        .args(args)
        .output()
        .expect("traj runs")
}

/// A fresh temp folder for one program or run.
fn fresh_dir(tag: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("traj-limits-{}-{tag}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn write_program(tag: &str, text: &str) -> PathBuf {
    let path = fresh_dir(tag).join(format!("{tag}.traj"));
    std::fs::write(&path, text).expect("write");
    path
}

/// Runs `program` on `backend` into a fresh folder; its trajectory as (columns, rows).
fn run_ok(program: &Path, backend: &str, extra: &[&str]) -> (Vec<String>, Vec<Vec<f64>>) {
    let out_dir = fresh_dir("run").join("out");
    let mut args = vec![
        "run",
        program.to_str().unwrap(),
        "--backend",
        backend,
        "--out",
        out_dir.to_str().unwrap(),
    ];
    args.extend(extra);
    let out = traj(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{backend}: {stderr}");
    let mut csv = csv::Reader::from_path(out_dir.join("trajectory.csv")).expect("trajectory");
    let columns = csv
        .headers()
        .expect("header")
        .iter()
        .map(String::from)
        .collect();
    let rows = csv
        .records()
        .map(|r| {
            r.expect("row")
                .iter()
                .map(|c| c.parse().expect(c))
                .collect()
        })
        .collect();
    (columns, rows)
}

fn column(columns: &[String], rows: &[Vec<f64>], name: &str) -> Vec<f64> {
    let i = columns.iter().position(|c| c == name).expect(name);
    rows.iter().map(|r| r[i]).collect()
}

/// `(code, line, col)` of every report of `stderr` about `file`.
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

/// `check` and `run` on both backends refuse `program` with `code` at `line:col`, and
/// stderr says `words`; never a panic.
fn refused(program: &Path, extra: &[&str], code: &str, line: usize, col: usize, words: &str) {
    let path = program.to_str().unwrap();
    let out_dir = fresh_dir("refused").join("out");
    let mut runs: Vec<Vec<&str>> = vec![vec!["check", path]];
    for b in BACKENDS {
        runs.push(vec![
            "run",
            path,
            "--backend",
            b,
            "--out",
            out_dir.to_str().unwrap(),
        ]);
    }
    for mut args in runs {
        args.extend(extra);
        let out = traj(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(stderr.contains(words), "{args:?}: {stderr}");
        let got = reports(&stderr, program);
        assert!(
            got.contains(&(code.to_string(), line, col)),
            "{args:?}: {got:?} in {stderr}"
        );
    }
}

const EMPTY: &str = "\
data X = randn(0, 3)
data A = randn(3, 0)
data B = randn(0, 2)
data v = randn(0)
param w: [3] = [1.0, 2.0, 3.0]
param p: [0] ~ normal(0, 1)
fn f(x) = sum(w * x)
loss = 0.5 * sum(w^2) + sum(X @ w) + sum((A @ p)^2)
train {
  optimizer gd(lr = 0.5)
  steps 2
  record every 1 { loss, a = sum(X @ w), c = A @ p, e = A @ B, k = sum(ntk(f, X)),
    s = sum(svals(A)), cn = cond(A), ni = norm(v, inf), pr = prod(v), m = mean(v),
    lse = logsumexp(v), g = grad(p), gw = grad(w) }
}
";

#[test]
fn empty_dimensions_follow_numpy_on_both_backends() {
    let program = write_program("empty", EMPTY);
    for b in BACKENDS {
        let (columns, rows) = run_ok(&program, b, &[]);
        assert_eq!(rows.len(), 3, "{b}");
        // w halves each step (lr 0.5 on 0.5 w²): loss 7, 1.75, 0.4375.
        assert_eq!(column(&columns, &rows, "loss"), [7.0, 1.75, 0.4375], "{b}");
        assert_eq!(column(&columns, &rows, "gw[2]"), [3.0, 1.5, 0.75], "{b}");
        for name in ["a", "c[0]", "c[2]", "e[0,0]", "e[2,1]", "k", "s", "ni"] {
            assert_eq!(column(&columns, &rows, name), [0.0; 3], "{b} {name}");
        }
        assert_eq!(column(&columns, &rows, "pr"), [1.0; 3], "{b}");
        assert_eq!(
            column(&columns, &rows, "lse"),
            [f64::NEG_INFINITY; 3],
            "{b}"
        );
        for name in ["cn", "m"] {
            assert!(
                column(&columns, &rows, name).iter().all(|x| x.is_nan()),
                "{b} {name}"
            );
        }
        // An empty param has no gradient columns.
        assert!(
            !columns.iter().any(|c| c.starts_with("g[")),
            "{b}: {columns:?}"
        );
    }
}

#[test]
fn a_program_with_only_empty_params_runs() {
    let program = write_program(
        "only_empty",
        "param p: [0, 4] ~ normal(0, 1)\nloss = sum(p^2)\n\
         train { optimizer adam(lr = 0.1) steps 3 record every 1 { loss, gnorm, sharpness } }\n",
    );
    for b in BACKENDS {
        let (columns, rows) = run_ok(&program, b, &[]);
        assert_eq!(column(&columns, &rows, "loss"), [0.0; 4], "{b}");
        assert_eq!(column(&columns, &rows, "gnorm"), [0.0; 4], "{b}");
        assert!(
            column(&columns, &rows, "sharpness")
                .iter()
                .all(|x| x.is_nan())
        );
    }
}

/// Each program: (text, `--set`s, line, col of the shape or expression refused).
const TOO_LARGE: &[(&str, &[&str], usize, usize)] = &[
    (
        "param w: [9223372036854775807] ~ normal(0, 1)\n",
        &[],
        1,
        10,
    ),
    ("param W: [2000000, 1000000] ~ normal(0, 1)\n", &[], 1, 10),
    (
        "param W: [4294967296, 4294967296, 0] ~ normal(0, 1)\n",
        &[],
        1,
        10,
    ),
    (
        "const n = 10\nparam W: [n, n] ~ normal(0, 1)\n",
        &["--set", "n=9223372036854775807"],
        2,
        10,
    ),
    (
        "const n = 10\nparam W: [n, n] ~ normal(0, 1)\n",
        &["--set", "n=100000000"],
        2,
        10,
    ),
    ("data X = randn(100000000, 100000000)\n", &[], 1, 10),
    ("data v = randn(10000000)\nlet P = outer(v, v)\n", &[], 2, 9),
];

#[test]
fn sizes_beyond_memory_are_located_errors_from_check_and_run() {
    for (i, (head, sets, line, col)) in TOO_LARGE.iter().enumerate() {
        let text = format!(
            "{head}param q: [] = 1.0\nloss = q^2\ntrain {{ optimizer gd(lr = 0.1) steps 2 }}\n"
        );
        let program = write_program(&format!("large{i}"), &text);
        refused(&program, sets, "E0312", *line, *col, "is too large");
    }
}

/// A `.npy` file: a version-1 header of `dict` padded as NumPy pads it, then `data`.
fn npy_bytes(dict: &str, data: &[u8]) -> Vec<u8> {
    let mut header = dict.to_string();
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    bytes.extend(data);
    bytes
}

#[test]
fn npy_headers_that_disagree_with_the_file_are_located_errors() {
    let dict =
        |shape: &str| format!("{{'descr': '<f8', 'fortran_order': False, 'shape': {shape}, }}");
    let mut claims_past_end = b"\x93NUMPY\x01\x00".to_vec();
    claims_past_end.extend(60000u16.to_le_bytes());
    claims_past_end.extend(b"{'descr': '<f8'");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            npy_bytes(&dict("(10000000000000,)"), &[0; 80]),
            "shape (10000000000000)",
        ),
        (
            npy_bytes(&dict("(4294967296, 4294967296)"), &[0; 80]),
            "shape (4294967296, 4294967296)",
        ),
        (npy_bytes(&dict("(3,)"), &[0; 32]), "holds 32 bytes"),
        (npy_bytes(&dict("(5,)"), &[0; 16]), "holds 16 bytes"),
        (claims_past_end, "claims 60010 bytes"),
    ];
    for (i, (bytes, words)) in cases.into_iter().enumerate() {
        let program = write_program(
            &format!("npy{i}"),
            "data X = load(\"bad.npy\")\nparam q: [] = 1.0\nloss = q^2\n\
             train { optimizer gd(lr = 0.1) steps 2 }\n",
        );
        std::fs::write(program.with_file_name("bad.npy"), bytes).expect("write npy");
        let out = traj(&["check", program.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let code = reports(&stderr, &program).first().expect(&stderr).0.clone();
        refused(&program, &[], &code, 1, 15, words);
    }
}

#[test]
fn record_counts_and_steps_beyond_the_run_take_no_time_or_memory() {
    // `record log 4294967296` over 5 steps records each step once.
    let program = write_program(
        "record_log",
        "param w: [] = 1.0\nloss = w^2\n\
         train { optimizer gd(lr = 0.25) steps 5 record log 4294967296 { loss } }\n",
    );
    for b in BACKENDS {
        let (columns, rows) = run_ok(&program, b, &[]);
        let want: Vec<f64> = (0..6).map(|k| 0.25f64.powi(k)).collect();
        assert_eq!(column(&columns, &rows, "loss"), want, "{b}");
    }
    // 10^15 planned steps, every one a record step: stops at step 1 (w = 0 exactly).
    let program = write_program(
        "huge_steps",
        "param w: [] = 1.0\nloss = w^2\ntrain { optimizer gd(lr = 0.5) steps 10^15 \
         stop when loss < 1e-30 record every 1 { loss } record log 1000000000000 { w } }\n",
    );
    for b in BACKENDS {
        let (columns, rows) = run_ok(&program, b, &[]);
        assert_eq!(column(&columns, &rows, "loss"), [1.0, 0.0], "{b}");
        assert_eq!(column(&columns, &rows, "w"), [1.0, 0.0], "{b}");
    }
}

#[test]
fn long_operator_chains_are_refused_not_a_stack_overflow() {
    let chains = [
        format!("loss = {}q", "not ".repeat(300_000)),
        format!("loss = {}q", "- ".repeat(300_000)),
        format!("loss = q{}", " and q".repeat(300_000)),
        format!("loss = q{}", " or q".repeat(300_000)),
        format!("loss = {}q", "if q then q else ".repeat(100_000)),
        format!("let v = [q]\nloss = v{}", "[0]".repeat(300_000)),
    ];
    for (i, chain) in chains.iter().enumerate() {
        let program = write_program(
            &format!("chain{i}"),
            &format!("param q: [] = 1.0\n{chain}\ntrain {{ optimizer gd(lr = 0.1) steps 2 }}\n"),
        );
        for args in [
            vec!["check"],
            vec!["run", "--backend", "interp"],
            vec!["run"],
        ] {
            let mut args = args.clone();
            args.push(program.to_str().unwrap());
            let out = traj(&args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "chain {i} {args:?}: {stderr}");
            assert!(
                stderr.contains("more than 10000 operators"),
                "chain {i}: {stderr}"
            );
            assert_eq!(reports(&stderr, &program)[0].0, "E0005", "chain {i}");
        }
    }
}

#[test]
fn overflowing_compile_time_ints_are_errors_not_panics() {
    for (i, text) in [
        "const m = -9223372036854775807 - 1\nconst k = m // -1\n",
        "const m = -9223372036854775807 - 1\nconst k = m % -1\n",
        "data X = randn(4, 4)\nlet Y = reshape(X, [4294967296, 4294967296, 0])\n",
    ]
    .iter()
    .enumerate()
    {
        let program = write_program(
            &format!("ints{i}"),
            &format!(
                "{text}param q: [] = 1.0\nloss = q^2\ntrain {{ optimizer gd(lr = 0.1) steps 1 }}\n"
            ),
        );
        let out = traj(&["check", program.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{text}: {stderr}");
        assert_eq!(out.status.code(), Some(1), "{text}: {stderr}");
        let code = if i == 2 { "E0308" } else { "E0202" };
        assert!(stderr.contains(&format!("[{code}]")), "{text}: {stderr}");
    }
}

#[test]
fn programs_that_expand_without_bound_are_located_errors_not_hangs() {
    // 2^40 inlined calls: `check` is linear in the calls, lowering stops at its limit.
    let mut calls = String::from("fn f0(x) = x * q\n");
    for i in 1..=40 {
        calls.push_str(&format!("fn f{i}(x) = f{}(x) + f{}(x)\n", i - 1, i - 1));
    }
    let program = write_program(
        "calls",
        &format!(
            "param q: [] = 1.0\n{calls}loss = f40(q)\ntrain {{ optimizer gd(lr = 0.1) steps 2 }}\n"
        ),
    );
    let out = traj(&["check", program.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for b in BACKENDS {
        let dir = fresh_dir("calls").join("out");
        let out = traj(&[
            "run",
            program.to_str().unwrap(),
            "--backend",
            b,
            "--out",
            dir.to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{b}: {stderr}");
        assert!(stderr.contains("too large to compile"), "{b}: {stderr}");
        assert!(stderr.contains("calls.traj:"), "{b}: located: {stderr}");
    }
    // A comprehension of 2^40 + 1 elements.
    let program = write_program(
        "comprehension",
        "param q: [] = 1.0\ndata G = [i for i in 0..1099511627777]\nloss = q^2\n\
         train { optimizer gd(lr = 0.1) steps 2 }\n",
    );
    refused(
        &program,
        &[],
        "E0312",
        2,
        22,
        "too long for a comprehension",
    );
}

#[test]
fn int_overflow_wraps_on_both_backends() {
    let program = write_program(
        "wrap",
        "data v = [9223372036854775807, 2, 3]\nparam q: [] = 1.0\nloss = q^2\n\
         train { optimizer gd(lr = 0.1) steps 1 record every 1 { s = sum(v), p = prod(v) } }\n",
    );
    for b in BACKENDS {
        let (columns, rows) = run_ok(&program, b, &[]);
        let s = 9223372036854775807i64.wrapping_add(5) as f64;
        let p = 9223372036854775807i64.wrapping_mul(6) as f64;
        assert_eq!(column(&columns, &rows, "s"), [s, s], "{b}");
        assert_eq!(column(&columns, &rows, "p"), [p, p], "{b}");
    }
}
