//! What `check` accepts, `run` survives: deterministic mutants of the examples, the stdlib
//! and the ok fixtures (tokens deleted or duplicated, numbers set to 0, -1, huge values,
//! names swapped) go through `traj check`, and those that pass through `traj run --steps 5`
//! on both backends. No process may panic, die of a signal or abort, or outlive its
//! timeout (it is killed then, and the test names the mutant).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Mutants made (each source in turn).
const MUTANTS: usize = 3000;
const TIMEOUT: Duration = Duration::from_secs(20);
/// Numbers a mutant may put in place of a number: edges of every kind of count and size
/// (none between "small" and "beyond 2^40", so no mutant is merely slow).
const NUMBERS: &[&str] = &[
    "0",
    "1",
    "2",
    "-1",
    "-7",
    "9223372036854775807",
    "1099511627777",
    "1e308",
    "0.5",
    "-0.0",
    "1e-300",
];

/// A tiny deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n.max(1)
    }
}

/// `text` as tokens: words, numbers, single other characters; whitespace kept as tokens.
fn tokens(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut prev_kind = 0;
    for c in text.chars() {
        let kind = if c.is_alphanumeric() || c == '_' || c == '.' {
            1
        } else if c == ' ' || c == '\t' {
            2
        } else {
            3
        };
        match out.last_mut() {
            Some(last) if kind != 3 && kind == prev_kind => last.push(c),
            _ => out.push(c.to_string()),
        }
        prev_kind = kind;
    }
    out
}

fn is_number(t: &str) -> bool {
    t.starts_with(|c: char| c.is_ascii_digit())
}

fn is_name(t: &str) -> bool {
    t.starts_with(|c: char| c.is_alphabetic() || c == '_')
}

/// One or two mutations of `text`.
fn mutate(text: &str, rng: &mut Rng) -> String {
    let mut toks = tokens(text);
    let names: Vec<String> = toks.iter().filter(|t| is_name(t)).cloned().collect();
    for _ in 0..1 + rng.below(2) {
        let solid: Vec<usize> = (0..toks.len())
            .filter(|i| !toks[*i].trim().is_empty())
            .collect();
        let numbers: Vec<usize> = solid
            .iter()
            .copied()
            .filter(|i| is_number(&toks[*i]))
            .collect();
        let at = solid[rng.below(solid.len())];
        match rng.below(4) {
            0 => {
                toks.remove(at);
            }
            // A duplicated number (`1_0001_000`) is merely large: numbers change below.
            1 if !is_number(&toks[at]) => {
                let t = toks[at].clone();
                toks.insert(at, t);
            }
            2 if !numbers.is_empty() => {
                let at = numbers[rng.below(numbers.len())];
                toks[at] = NUMBERS[rng.below(NUMBERS.len())].to_string();
            }
            _ if !names.is_empty() => {
                let named: Vec<usize> = solid
                    .iter()
                    .copied()
                    .filter(|i| is_name(&toks[*i]))
                    .collect();
                let at = named[rng.below(named.len())];
                toks[at] = names[rng.below(names.len())].clone();
            }
            _ => {}
        }
    }
    toks.concat()
}

/// The programs mutated: (path, text).
fn sources() -> Vec<(PathBuf, String)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for dir in ["examples", "stdlib/std", "tests/fixtures/ok"] {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
            .expect("dir")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "traj"))
            .collect();
        paths.sort();
        for p in paths {
            let text = std::fs::read_to_string(&p).expect("readable");
            out.push((p, text));
        }
    }
    out
}

/// A temp folder beside which the mutant of a program in `source_dir` finds the files it
/// loads and uses: every other entry of that folder, linked.
fn workspace(source_dir: &Path, n: usize) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("traj-fuzz-run-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    for e in std::fs::read_dir(source_dir).expect("dir").flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "traj") {
            std::os::unix::fs::symlink(&p, dir.join(e.file_name())).expect("link");
        }
    }
    dir
}

enum Outcome {
    Exit(i32),
    /// Died of a signal, panicked or aborted, or timed out: what happened.
    Crash(String),
}

/// Runs `traj args`, killed after [`TIMEOUT`].
fn traj(args: &[&str]) -> Outcome {
    let err_path = std::env::temp_dir().join(format!(
        "traj-fuzz-run-{}-{}.stderr",
        std::process::id(),
        args.last().unwrap().replace('/', "_")
    ));
    let err_file = std::fs::File::create(&err_path).expect("stderr file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_traj"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(err_file)
        .spawn()
        .expect("traj starts");
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if started.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let _ = std::fs::remove_file(&err_path);
    let tail: String = stderr.chars().take(600).collect();
    match status {
        None => Outcome::Crash(format!("no answer within {TIMEOUT:?}")),
        Some(s) => match s.code() {
            Some(101) => Outcome::Crash(format!("exit 101: {tail}")),
            Some(code)
                if stderr.contains("panicked")
                    || stderr.contains("fatal runtime error")
                    || stderr.contains("memory allocation") =>
            {
                Outcome::Crash(format!("exit {code}: {tail}"))
            }
            Some(code) => Outcome::Exit(code),
            None => Outcome::Crash(format!("killed by a signal ({s:?}): {tail}")),
        },
    }
}

#[derive(Default)]
struct Counts {
    mutants: usize,
    passed_check: usize,
    runs: usize,
    run_errors: usize,
    crashes: Vec<String>,
}

#[test]
fn mutants_that_pass_check_run_without_panic_abort_or_hang() {
    let sources = sources();
    let counts = Mutex::new(Counts::default());
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= MUTANTS {
                        break;
                    }
                    let (path, text) = &sources[n % sources.len()];
                    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((n as u64 + 1) * 0x1000_0001));
                    let mutant = mutate(text, &mut rng);
                    let dir = workspace(path.parent().unwrap(), n);
                    let file = dir.join(path.file_name().unwrap());
                    std::fs::write(&file, &mutant).expect("write mutant");
                    let file_arg = file.to_str().unwrap();
                    let name = format!("mutant {n} of {}", path.display());
                    let mut crashes = vec![];
                    let (mut passed, mut runs, mut errors) = (false, 0, 0);
                    match traj(&["check", file_arg]) {
                        Outcome::Crash(what) => crashes.push(format!("{name}: check: {what}")),
                        Outcome::Exit(0) => {
                            passed = true;
                            for b in ["interp", "jit"] {
                                let out = dir.join(format!("run-{b}"));
                                let args = [
                                    "run",
                                    "--steps",
                                    "5",
                                    "--backend",
                                    b,
                                    "--out",
                                    out.to_str().unwrap(),
                                    file_arg,
                                ];
                                runs += 1;
                                match traj(&args) {
                                    Outcome::Crash(what) => {
                                        crashes.push(format!("{name}: run {b}: {what}"))
                                    }
                                    Outcome::Exit(0) => {}
                                    Outcome::Exit(_) => errors += 1,
                                }
                            }
                        }
                        Outcome::Exit(_) => {}
                    }
                    if crashes.is_empty() {
                        let _ = std::fs::remove_dir_all(&dir);
                    } else {
                        crashes.push(format!("--- the mutant ({}):\n{mutant}", file.display()));
                    }
                    let mut c = counts.lock().unwrap();
                    c.mutants += 1;
                    c.passed_check += passed as usize;
                    c.runs += runs;
                    c.run_errors += errors;
                    c.crashes.extend(crashes);
                }
            });
        }
    });
    let c = counts.into_inner().unwrap();
    eprintln!(
        "fuzz_run: {} mutants, {} passed check, {} runs, {} ended in an error (exit 1)",
        c.mutants, c.passed_check, c.runs, c.run_errors
    );
    assert_eq!(c.mutants, MUTANTS);
    // The mutations keep many programs valid: the runs are really exercised.
    assert!(
        c.passed_check * 5 >= MUTANTS,
        "only {} passed check",
        c.passed_check
    );
    assert!(c.crashes.is_empty(), "{}", c.crashes.join("\n"));
}
