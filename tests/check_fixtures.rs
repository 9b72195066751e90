//! Data-driven checker tests: every `tests/fixtures/ok/**.traj`, example and standard
//! module checks clean; every `tests/fixtures/err/*.traj` produces exactly the errors its
//! `# error: CODE LINE:COL` header lines name (regenerate them with
//! `python3 tests/gen_err_fixtures.py`).

use std::path::{Path, PathBuf};

use traj::diag::{Diagnostic, SourceMap};
use traj::sema::Options;
use traj::sema::check::check_source;

fn traj_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            // `lib/` folders hold modules that fixtures `use`; they are checked through them.
            if p.file_name().is_some_and(|n| n != "lib") {
                traj_files(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "traj") {
            out.push(p);
        }
    }
    out.sort();
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn check(path: &Path) -> (SourceMap, Result<(), Vec<Diagnostic>>) {
    let text = std::fs::read_to_string(path).expect("fixture readable");
    let mut sources = SourceMap::default();
    let options = Options {
        overrides: vec![],
        check_sweep: true,
    };
    let r = check_source(
        &path.display().to_string(),
        Some(path.to_path_buf()),
        &text,
        &options,
        &mut sources,
    )
    .map(|_| ());
    (sources, r)
}

fn render_all(sources: &SourceMap, diags: &[Diagnostic]) -> String {
    diags.iter().map(|d| d.render(sources, false)).collect()
}

fn assert_clean(dir: &str) -> usize {
    let mut files = Vec::new();
    traj_files(&root().join(dir), &mut files);
    let mut failures = String::new();
    for f in &files {
        if let (sources, Err(diags)) = check(f) {
            failures += &format!("\n=== {}\n{}", f.display(), render_all(&sources, &diags));
        }
    }
    assert!(
        failures.is_empty(),
        "programs that should check clean:{failures}"
    );
    files.len()
}

#[test]
fn ok_fixtures_check_clean() {
    let n = assert_clean("tests/fixtures/ok");
    assert!(n >= 20, "expected the LANGUAGE.md fixtures, found {n}");
}

#[test]
fn examples_check_clean() {
    let n = assert_clean("examples");
    assert!(n >= 5, "expected the examples, found {n}");
}

#[test]
fn standard_modules_check_clean() {
    for (module, _) in traj::sema::modules::STD_MODULES {
        let text = format!("use std.{module}\n");
        let mut sources = SourceMap::default();
        let r = check_source(
            "std_test.traj",
            None,
            &text,
            &Options::default(),
            &mut sources,
        );
        if let Err(d) = r {
            panic!("std.{module}:\n{}", render_all(&sources, &d));
        }
    }
}

/// `(code, line, col)` of every `# error: CODE LINE:COL` header line.
fn expected_errors(text: &str) -> Vec<(String, usize, usize)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# error: "))
        .map(|rest| {
            let (code, at) = rest.split_once(' ').expect("`# error: CODE L:C`");
            let (l, c) = at.trim().split_once(':').expect("L:C");
            (
                code.to_string(),
                l.parse().expect("line"),
                c.parse().expect("col"),
            )
        })
        .collect()
}

#[test]
fn err_fixtures_report_exactly_their_errors() {
    let mut files = Vec::new();
    traj_files(&root().join("tests/fixtures/err"), &mut files);
    assert!(
        files.len() >= 40,
        "found only {} bad-program fixtures",
        files.len()
    );
    let mut failures = String::new();
    let mut codes = std::collections::BTreeSet::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("readable");
        let mut expected = expected_errors(&text);
        assert!(!expected.is_empty(), "{} names no error", f.display());
        let (sources, result) = check(f);
        let diags = result.err().unwrap_or_default();
        let main_name = f.display().to_string();
        let mut actual: Vec<(String, usize, usize)> = diags
            .iter()
            .map(|d| {
                let (l, c) = sources.line_col(d.span);
                let file = &sources.file(d.span.file).name;
                let code = if *file == main_name {
                    d.code.to_string()
                } else {
                    format!("{}@{file}", d.code)
                };
                (code, l, c)
            })
            .collect();
        expected.sort();
        actual.sort();
        for (code, ..) in &expected {
            codes.insert(code.clone());
        }
        if expected != actual {
            failures += &format!(
                "\n=== {}\nexpected {expected:?}\nactual   {actual:?}\n{}",
                f.display(),
                render_all(&sources, &diags)
            );
        }
    }
    assert!(failures.is_empty(), "{failures}");
    assert!(
        codes.len() >= 35,
        "only {} distinct error codes covered",
        codes.len()
    );
}
