//! The layer order of `src/`: every top-level module sits in one layer of [`LAYERS`] and
//! imports (`crate::m` paths; `traj::m` in `main.rs`) only modules of layers below its own.

use std::collections::BTreeSet;
use std::path::Path;

/// The layers, bottom up. A module may import any module of a lower layer, none of its own
/// layer or above.
const LAYERS: &[&[&str]] = &[
    // Leaves: spans and diagnostics, host tensors, the second core, the random stream,
    // host linear algebra, the PNG glyph writer.
    &["diag", "tensor", "cores", "rng", "observe", "plot_text"],
    // Scalar and array kernels (libm's functions, sums, GEMM, whole-slice `vmath`) shared
    // by both backends and the folders.
    &["kernels", "error"],
    // The IR: dtypes, shapes, broadcasting (`ir::types`), the op table (`ir::ops`, whose
    // rows name the kernels), instructions, printer, verifier.
    &["ir"],
    // Data files in (`.npy`, `.csv`) and the run folder out.
    &["data", "output"],
    // The reference interpreter; reverse and forward mode.
    &["interp", "autodiff"],
    &["syntax"],
    &["sema"],
    &["lower"],
    &["opt"],
    &["plan"],
    &["jit"],
    // The stages assembled, from text to a compiled backend (`Engine`).
    &["pipeline"],
    &["train"],
    // A compiled program and its run state, stepped: `traj run`, each sweep point, the REPL.
    &["session"],
    &["sweep", "plot"],
    &["sweep_summary", "repl", "slurm"],
    &["main"],
];

/// The layer of module `m`, if the table has it.
fn layer_of(m: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&m))
}

/// The top-level module a file of `src/` belongs to: `src/x.rs` and `src/x/...` are `x`.
/// `lib.rs` only declares the modules (`None`).
fn module_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("src/")?;
    let top = rest.split('/').next()?;
    let name = top.strip_suffix(".rs").unwrap_or(top);
    (name != "lib").then_some(name)
}

/// `line` without its `//` comment (doc comments included: a doc link is no import). A
/// `//` inside a string literal is kept.
fn code_of(line: &str) -> &str {
    let mut in_string = false;
    let mut escaped = false;
    let bytes = line.as_bytes();
    for (i, &c) in bytes.iter().enumerate() {
        match c {
            _ if escaped => escaped = false,
            b'\\' if in_string => escaped = true,
            b'"' => in_string = !in_string,
            b'/' if !in_string && bytes.get(i + 1) == Some(&b'/') => return &line[..i],
            _ => {}
        }
    }
    line
}

/// The top-level modules named by the crate paths in `code`: `crate::m::...` gives `m`,
/// `crate::{a, b::c}` gives `a` and `b` (`root` is `crate`, or `traj` in `main.rs`).
fn imported(code: &str, root: &str) -> Vec<String> {
    let prefix = format!("{root}::");
    let mut names = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(&prefix) {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `mycrate::`, not `crate::`
        }
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level names of the group, up to its closing brace.
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => names.push(std::mem::take(&mut item)),
                    _ => item.push(c),
                }
            }
            names.push(item);
        } else {
            names.push(rest.to_string());
        }
    }
    names
        .iter()
        .map(|n| {
            n.trim()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .filter(|n| !n.is_empty() && n != "self")
        .collect()
}

/// Every import of `files` (path, text) that points to the importer's own layer or above,
/// and every module the table lacks, one message each naming file, line and import.
/// A `use` group spread over several lines is read as one line (the line it starts on).
fn violations(files: &[(String, String)]) -> Vec<String> {
    let mut found = Vec::new();
    for (path, text) in files {
        let Some(module) = module_of(path) else {
            continue;
        };
        let Some(own) = layer_of(module) else {
            found.push(format!(
                "{path}: module `{module}` is in no layer of tests/layers.rs's LAYERS"
            ));
            continue;
        };
        let root = if module == "main" { "traj" } else { "crate" };
        let lines: Vec<&str> = text.lines().map(code_of).collect();
        let mut i = 0;
        while i < lines.len() {
            let start = i;
            let mut code = lines[i].to_string();
            // A `use` group left open continues on the next lines.
            while code.matches('{').count() > code.matches('}').count() && i + 1 < lines.len() {
                i += 1;
                code.push(' ');
                code.push_str(lines[i]);
            }
            i += 1;
            for m in imported(&code, root) {
                if m == module {
                    continue;
                }
                let line = start + 1;
                let shown = text.lines().nth(start).unwrap_or("").trim();
                match layer_of(&m) {
                    None => found.push(format!(
                        "{path}:{line}: `{module}` imports `{m}`, which is in no layer of \
                         LAYERS: `{shown}`"
                    )),
                    Some(theirs) if theirs >= own => found.push(format!(
                        "{path}:{line}: `{module}` (layer {own}) imports `{m}` (layer \
                         {theirs}){}: `{shown}`",
                        if theirs == own {
                            ", its own layer"
                        } else {
                            ", a layer above"
                        }
                    )),
                    Some(_) => {}
                }
            }
        }
    }
    found
}

/// Every `.rs` file under `dir`, as (path relative to the crate root, text).
fn rust_files(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read src")
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(root, &p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            let rel = p.strip_prefix(root).expect("under root");
            let text = std::fs::read_to_string(&p).expect("read file");
            out.push((rel.to_string_lossy().replace('\\', "/"), text));
        }
    }
}

fn src_files() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(root, &root.join("src"), &mut files);
    files
}

#[test]
fn imports_point_down_the_layers() {
    let found = violations(&src_files());
    assert!(
        found.is_empty(),
        "imports against the layer order:\n{}",
        found.join("\n")
    );
}

#[test]
fn every_layer_names_a_module_of_src() {
    let modules: BTreeSet<String> = src_files()
        .iter()
        .filter_map(|(p, _)| module_of(p).map(str::to_string))
        .collect();
    for m in LAYERS.iter().flat_map(|l| l.iter()) {
        assert!(
            modules.contains(*m),
            "LAYERS names `{m}`, which src/ does not have"
        );
    }
    let all: Vec<&str> = LAYERS.iter().flat_map(|l| l.iter().copied()).collect();
    let unique: BTreeSet<&str> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "a module appears twice in LAYERS");
}

/// The scan reads the real imports: `jit` imports the plan it compiles and `train` the JIT
/// it runs (if the reader found nothing, the order test above would pass on anything).
#[test]
fn the_scan_sees_real_imports() {
    let files = src_files();
    let imports_of = |module: &str| -> BTreeSet<String> {
        files
            .iter()
            .filter(|(p, _)| module_of(p) == Some(module))
            .flat_map(|(_, t)| t.lines().flat_map(|l| imported(code_of(l), "crate")))
            .collect()
    };
    assert!(imports_of("jit").contains("plan"));
    assert!(imports_of("train").contains("jit"));
    assert!(imports_of("ir").contains("diag"));
}

fn file(path: &str, text: &str) -> (String, String) {
    (path.to_string(), text.to_string())
}

#[test]
fn checker_reports_an_import_from_above_with_file_line_and_text() {
    let found = violations(&[file(
        "src/ir/mod.rs",
        "//! The IR.\n\nuse crate::diag::Span;\nuse crate::sema::Checked;\n",
    )]);
    assert_eq!(
        found,
        vec![
            "src/ir/mod.rs:4: `ir` (layer 2) imports `sema` (layer 6), a layer above: \
             `use crate::sema::Checked;`"
                .to_string()
        ]
    );
}

#[test]
fn checker_reads_groups_paths_in_code_and_main() {
    let found = violations(&[
        // A group over several lines: `train` is above `jit`.
        file(
            "src/jit/train_loop.rs",
            "use crate::{\n    ir::Func,\n    train::Plan,\n};\n",
        ),
        // A path in an expression, not a `use`.
        file("src/kernels/math.rs", "fn f() { crate::interp::eval(); }\n"),
        // Its own layer: `interp` and `autodiff` are peers.
        file("src/autodiff/mod.rs", "use crate::interp::Env;\n"),
        // `main.rs` names the library `traj`; it may import anything.
        file("src/main.rs", "use traj::repl::Repl;\n"),
    ]);
    assert_eq!(found.len(), 3, "{found:#?}");
    assert!(found[0].starts_with("src/jit/train_loop.rs:1: `jit` (layer 10) imports `train`"));
    assert!(found[1].starts_with("src/kernels/math.rs:1: `kernels` (layer 1) imports `interp`"));
    assert!(found[2].contains("`autodiff` (layer 4) imports `interp` (layer 4), its own layer"));
}

#[test]
fn checker_ignores_comments_strings_and_own_module_and_reports_unknown_modules() {
    let found = violations(&[
        file(
            "src/ir/mod.rs",
            "/// See [`crate::train::run`].\nuse crate::ir::types; // crate::sema\n\
             const S: &str = \"a//b\"; use crate::diag::Span;\n",
        ),
        file("src/newthing.rs", "use crate::ir::Func;\n"),
        file("src/lib.rs", "pub mod train;\n"),
    ]);
    assert_eq!(
        found,
        vec!["src/newthing.rs: module `newthing` is in no layer of tests/layers.rs's LAYERS"]
    );
}
