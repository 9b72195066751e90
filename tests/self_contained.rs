//! The repository stands on its own: no file refers to a path outside it, no test needs
//! Python, and the `traj` binary works away from the source tree (the stdlib is embedded).

use std::path::{Component, Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Folders that are not the repository's own text: build output, run folders, generated
/// bench inputs, git's store.
const SKIPPED: &[&str] = &[".git", "target", "runs", "bench/inputs"];

/// Every UTF-8 file of the repository, relative to its root, sorted.
fn repository_files() -> Vec<PathBuf> {
    fn walk(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(root.join(rel)) else {
            return;
        };
        for e in entries.flatten() {
            let rel = rel.join(e.file_name());
            if SKIPPED.iter().any(|s| rel == Path::new(s)) {
                continue;
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(root, &rel, out);
            } else {
                out.push(rel);
            }
        }
    }
    let mut out = Vec::new();
    walk(&root(), Path::new(""), &mut out);
    out.sort();
    out
}

/// Whether `path`, taken relative to the folder `base` (both relative to the repository
/// root), leaves the repository. Resolved lexically: `a/../b` is `b`.
fn escapes(base: &Path, path: &str) -> bool {
    let mut depth: i64 = 0;
    for c in base.join(path).components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            // An absolute path is outside unless it names the repository itself.
            Component::RootDir | Component::Prefix(_) => return true,
        }
        if depth < 0 {
            return true;
        }
    }
    false
}

/// The path-like words of `line` that contain `../`.
fn parent_paths(line: &str) -> Vec<&str> {
    let is_path_char = |c: char| c.is_alphanumeric() || "_-./~".contains(c);
    let mut out = Vec::new();
    for word in line.split(|c: char| !is_path_char(c)) {
        if word.contains("../") && !out.contains(&word) {
            out.push(word);
        }
    }
    out
}

/// Every `../` path of a file that leaves the repository: `file:line: path`. A path in an
/// `include_str!`/`include_bytes!` or `#[path]` is relative to its file; any other path in
/// Rust code is relative to the repository root (where tests and `cargo run` start and what
/// `CARGO_MANIFEST_DIR` names); in every other file, relative to the file's folder (links
/// in Markdown, comments in `.traj` programs). A line may say it holds a name, not a path,
/// with the words `not a path`.
fn outside_references(rel: &Path, text: &str) -> Vec<String> {
    let folder = rel.parent().unwrap_or(Path::new(""));
    let rust = rel.extension().is_some_and(|e| e == "rs");
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.contains("not a path") {
            continue;
        }
        let file_relative = !rust
            || ["include_str!", "include_bytes!", "#[path"]
                .iter()
                .any(|m| line.contains(m));
        let base = if file_relative { folder } else { Path::new("") };
        for path in parent_paths(line) {
            if escapes(base, path) {
                out.push(format!("{}:{}: {path}", rel.display(), i + 1));
            }
        }
    }
    out
}

#[test]
fn no_file_refers_to_a_path_outside_the_repository() {
    let root = root();
    // The repository's own absolute location's parent, e.g. `/home/me/` for `/home/me/traj`;
    // not when that is the system's temp folder (a clone for CI), whose name files may
    // rightly use for what tools write there.
    let parent = root
        .parent()
        .filter(|p| p.components().count() > 1 && *p != std::env::temp_dir())
        .map(|p| format!("{}/", p.display()));
    let files = repository_files();
    assert!(
        files.iter().any(|f| f == Path::new("src/sema/modules.rs")),
        "the walk reaches src/: {files:?}"
    );
    let mut found = Vec::new();
    // This file's own examples of paths are test data.
    for rel in files
        .iter()
        .filter(|f| *f != Path::new("tests/self_contained.rs"))
    {
        let Ok(text) = std::fs::read_to_string(root.join(rel)) else {
            continue; // not text
        };
        found.extend(outside_references(rel, &text));
        if let Some(parent) = &parent {
            for (i, line) in text.lines().enumerate() {
                let beside = line.match_indices(parent.as_str()).any(|(at, _)| {
                    !line[at + parent.len()..]
                        .starts_with(&*root.file_name().unwrap().to_string_lossy())
                });
                if beside {
                    found.push(format!("{}:{}: {parent}…", rel.display(), i + 1));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "paths outside the repository:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_path_rule_tells_inside_from_outside() {
    // The stdlib embedded from src/sema/modules.rs stays inside.
    let modules = Path::new("src/sema/modules.rs");
    let include = r#"    ("optim", include_str!("../../stdlib/std/optim.traj")),"#;
    assert!(outside_references(modules, include).is_empty());
    // A folder beside the clone, joined to CARGO_MANIFEST_DIR, does not.
    let common = Path::new("tests/common/mod.rs");
    let beside = r#"    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/bench")"#;
    assert_eq!(
        outside_references(common, beside),
        ["tests/common/mod.rs:1: ../shared/bench"]
    );
    // Markdown links resolve from the page's folder.
    let readme = "The language is specified in `../shared/spec/LANGUAGE.md`.";
    assert_eq!(outside_references(Path::new("README.md"), readme).len(), 1);
    let doc = "See [the README](../README.md).";
    assert!(outside_references(Path::new("docs/tutorial.md"), doc).is_empty());
    assert_eq!(
        outside_references(Path::new("docs/tutorial.md"), "[x](../../x.md)").len(),
        1
    );
    assert!(escapes(Path::new(""), "/etc/passwd"));
    assert!(!escapes(Path::new("a/b"), "../c"));
}

#[test]
fn no_test_runs_python() {
    let mut found = Vec::new();
    for rel in repository_files() {
        if !(rel.starts_with("tests") && rel.extension().is_some_and(|e| e == "rs")) {
            continue;
        }
        let text = std::fs::read_to_string(root().join(&rel)).expect("readable");
        for (i, line) in text.lines().enumerate() {
            let spawns = line.contains("Command::new(\"python") || line.contains("\"python3\"");
            if spawns {
                found.push(format!("{}:{}", rel.display(), i + 1));
            }
        }
    }
    assert!(found.is_empty(), "tests that run Python: {found:?}");
}

#[test]
fn version_names_the_crate() {
    let out = Command::new(env!("CARGO_BIN_EXE_traj"))
        .arg("--version")
        .output()
        .expect("traj runs");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("traj {}", env!("CARGO_PKG_VERSION"))
    );
}

/// What `cargo install --path .` gives: the binary alone, run from a folder with no
/// `stdlib/` near it, still has the standard library.
#[test]
fn the_binary_alone_runs_a_program_using_the_stdlib() {
    let dir = std::env::temp_dir().join(format!("traj-installed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let binary = dir.join("traj");
    std::fs::copy(env!("CARGO_BIN_EXE_traj"), &binary).expect("copy the binary");
    let program = "use std.nets\nuse std.losses\n\
        data X = [[1.0, 0.0], [0.0, 1.0]]\ndata y = [1.0, -1.0]\n\
        param W: [2, 2] = eye(2)\nloss = square_loss(linear(X, W)[:, 0], y)\n\
        train {\n  optimizer momentum(lr = 0.1)\n  steps 3\n  record every 3 { loss }\n}\n";
    std::fs::write(dir.join("p.traj"), program).expect("write");
    let out = Command::new(&binary)
        .args(["run", "p.traj", "--out", "run"])
        .current_dir(&dir)
        .output()
        .expect("traj runs");
    let csv = std::fs::read_to_string(dir.join("run/trajectory.csv")).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The outputs start at W[:, 0] = [1, 0] against y = [1, -1]: loss 0.25, then less.
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows[0], "step,loss");
    assert_eq!(rows.len(), 3, "{csv}");
    let last: f64 = rows[2].split(',').nth(1).unwrap().parse().unwrap();
    assert_eq!(rows[1], "0,0.25");
    assert!(last > 0.0 && last < 0.25, "{csv}");
}
