//! No input makes the front end panic or hang: 10,000 random programs (mutations of the
//! valid fixtures and random token soups) each end in `Ok` or in diagnostics, and every
//! diagnostic renders. A watchdog aborts the run, naming the input, if one case stalls.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use traj::diag::SourceMap;
use traj::sema::Options;
use traj::sema::check::check_source;

const TOKENS: &[&str] = &[
    "const",
    "data",
    "param",
    "sample",
    "let",
    "fn",
    "loss",
    "batch",
    "optimizer",
    "train",
    "sweep",
    "use",
    "if",
    "then",
    "else",
    "and",
    "or",
    "not",
    "for",
    "in",
    "from",
    "size",
    "shuffle",
    "state",
    "steps",
    "stop",
    "when",
    "record",
    "every",
    "log",
    "precision",
    "none",
    "n",
    "d",
    "X",
    "W",
    "w",
    "η",
    "α0",
    "_",
    "x",
    "grad",
    "t",
    "noise",
    "loss",
    "seed",
    "inf",
    "relu",
    "sum",
    "max",
    "matprod",
    "svals",
    "randn",
    "normal",
    "zeros",
    "load",
    "reshape",
    "0",
    "1",
    "2",
    "3",
    "-1",
    "2.5",
    "1e-3",
    "1_000",
    "99999999999999999999",
    "0.0",
    "+",
    "-",
    "*",
    "/",
    "//",
    "%",
    "@",
    "^",
    "'",
    "<",
    "<=",
    "==",
    "!=",
    ">",
    ">=",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ",",
    ";",
    ":",
    "..",
    "=",
    "-=",
    "+=",
    "~",
    "\n",
    "\n",
    "\"x.npy\"",
    "\"a\\q\"",
    "# c\n",
    ".",
    "std.optim",
    "\u{0}",
    "é",
    "₀",
];

fn seeds() -> Vec<String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for dir in [
        "tests/fixtures/ok",
        "tests/fixtures/err",
        "examples",
        "stdlib/std",
    ] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for e in entries.flatten() {
            if e.path().extension().is_some_and(|x| x == "traj")
                && let Ok(t) = std::fs::read_to_string(e.path())
            {
                out.push(t);
            }
        }
    }
    out.sort();
    assert!(out.len() >= 20, "too few seed programs: {}", out.len());
    out
}

/// Applies edits to a valid program: deletions, insertions and replacements of tokens,
/// duplicated and dropped lines, truncation.
fn mutate(seed: &str, edits: &[(u8, u32, usize, u8)]) -> String {
    let mut chars: Vec<char> = seed.chars().collect();
    for &(kind, at, token, len) in edits {
        let pos = (at as usize) % (chars.len() + 1);
        let end = (pos + 1 + len as usize % 8).min(chars.len());
        let tok: Vec<char> = TOKENS[token % TOKENS.len()].chars().collect();
        match kind % 6 {
            0 if pos < end => {
                chars.drain(pos..end);
            }
            1 => {
                chars.splice(pos..pos, tok.iter().copied());
            }
            2 if pos < end => {
                chars.splice(pos..end, tok.iter().copied());
            }
            3 => {
                let text: String = chars.iter().collect();
                let lines: Vec<&str> = text.lines().collect();
                if !lines.is_empty() {
                    let i = pos % lines.len();
                    let mut v: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
                    v.insert(i, lines[i].to_string());
                    chars = v.join("\n").chars().collect();
                }
            }
            4 => {
                let text: String = chars.iter().collect();
                let mut v: Vec<&str> = text.lines().collect();
                if !v.is_empty() {
                    v.remove(pos % v.len());
                }
                chars = v.join("\n").chars().collect();
            }
            _ => chars.truncate(pos),
        }
    }
    chars.into_iter().collect()
}

fn check_never_panics(src: &str, current: &Mutex<String>) -> Result<(), TestCaseError> {
    if let Ok(mut c) = current.lock() {
        c.clear();
        c.push_str(src);
    }
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let mut sources = SourceMap::default();
        let options = Options {
            overrides: vec![],
            check_sweep: true,
        };
        match check_source("fuzz.traj", None, src, &options, &mut sources) {
            Ok(_) => 0,
            Err(diags) => {
                assert!(!diags.is_empty(), "an error result with no diagnostic");
                for d in &diags {
                    let text = d.render(&sources, false);
                    assert!(text.contains(d.code), "a report without its code");
                }
                diags.len()
            }
        }
    }));
    if let Err(payload) = outcome {
        let msg = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        prop_assert!(false, "the front end panicked ({msg}) on:\n{src:?}");
    }
    Ok(())
}

fn run_cases() {
    // Panics are caught and reported with their (shrunk) input; the default hook would
    // print each of them while shrinking.
    std::panic::set_hook(Box::new(|_| {}));
    let seeds = seeds();
    let current = Arc::new(Mutex::new(String::new()));
    let progress = Arc::new(AtomicU64::new(0));
    // Watchdog: a case that makes no progress for a minute is a hang.
    {
        let (current, progress) = (current.clone(), progress.clone());
        std::thread::spawn(move || {
            let mut last = (0, Instant::now());
            loop {
                std::thread::sleep(Duration::from_secs(1));
                let p = progress.load(Ordering::Relaxed);
                if p != last.0 {
                    last = (p, Instant::now());
                } else if last.1.elapsed() > Duration::from_secs(60) {
                    let src = current.lock().map(|s| s.clone()).unwrap_or_default();
                    eprintln!("the front end hangs on:\n{src}");
                    std::process::abort();
                }
            }
        });
    }
    let config = Config {
        cases: 5_000,
        failure_persistence: None,
        max_shrink_iters: 200,
        ..Config::default()
    };
    let edits = prop::collection::vec(
        (any::<u8>(), any::<u32>(), any::<usize>(), any::<u8>()),
        1..6,
    );
    let mutated = (0..seeds.len(), edits);
    let mut runner = TestRunner::new(config.clone());
    runner
        .run(&mutated, |(i, e)| {
            progress.fetch_add(1, Ordering::Relaxed);
            check_never_panics(&mutate(&seeds[i], &e), &current)
        })
        .unwrap_or_else(|e| panic!("mutated programs: {e}"));
    let soup = prop::collection::vec((0..TOKENS.len(), prop::bool::ANY), 0..80);
    let mut runner = TestRunner::new(config);
    runner
        .run(&soup, |toks| {
            progress.fetch_add(1, Ordering::Relaxed);
            let src: String = toks
                .iter()
                .map(|(t, space)| format!("{}{}", TOKENS[*t], if *space { " " } else { "" }))
                .collect();
            check_never_panics(&src, &current)
        })
        .unwrap_or_else(|e| panic!("token soups: {e}"));
    assert_eq!(progress.load(Ordering::Relaxed), 10_000);
}

#[test]
fn ten_thousand_random_programs_end_in_ok_or_diagnostics() {
    // The compiler runs on a large stack in `traj` too (see `main.rs`).
    let result = std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(run_cases)
        .expect("spawn")
        .join();
    // Back to the default hook, so the failure below is printed.
    let _ = std::panic::take_hook();
    if let Err(payload) = result {
        let msg = payload
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_else(|| "a panic without a message".into());
        panic!("{msg}");
    }
}
