//! The simplification passes through printed IR: each case in `tests/passes/*.traj` is a
//! small program whose `traj ir --stage opt` text is snapshotted, and whose header lines
//! `# grad: OP N` / `# opt: OP N` say how many `OP` instructions (`insts`: all of them)
//! the gradient function has before the passes and after: the pass it names did its work.

use std::path::{Path, PathBuf};
use std::process::Command;

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/passes");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/passes")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "traj"))
        .collect();
    cases.sort();
    cases
}

/// `traj ir --stage STAGE FILE`'s stdout (the command must succeed).
fn stage(file: &Path, stage: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_traj"))
        .args(["ir", "--stage", stage])
        .arg(file)
        .output()
        .expect("traj runs");
    assert!(
        out.status.success(),
        "{}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// How many instructions of the first printed function are `op` (every one for `insts`).
fn count(ir: &str, op: &str) -> usize {
    ir.lines()
        .skip(1)
        .take_while(|l| l.trim() != "}")
        .filter(|l| l.trim_start().starts_with('%'))
        .filter_map(|l| l.split_once(" = ").map(|(_, rhs)| rhs))
        .filter(|rhs| op == "insts" || rhs.split([' ', '[']).next() == Some(op))
        .count()
}

/// The `# grad: OP N` and `# opt: OP N` lines of a case.
fn expectations(text: &str) -> Vec<(String, String, usize)> {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("# ")?;
            let (stage, rest) = rest.split_once(": ")?;
            if stage != "grad" && stage != "opt" {
                return None;
            }
            let (op, n) = rest.split_once(' ')?;
            Some((stage.to_string(), op.to_string(), n.trim().parse().ok()?))
        })
        .collect()
}

#[test]
fn every_pass_has_a_case() {
    let names: Vec<String> = cases()
        .iter()
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    for pass in [
        "fold",
        "cse",
        "dce",
        "powers",
        "identities",
        "outer_products",
        "pad_sums",
        "transposed_products",
        "transposed_constants",
        "broadcast_later",
        "untied_masks",
        "softplus",
    ] {
        assert!(names.iter().any(|n| n == pass), "no case for `{pass}`");
    }
}

#[test]
fn each_case_counts_its_pass_work_and_prints_the_snapshotted_ir() {
    for case in cases() {
        let name = case
            .file_stem()
            .expect("stem")
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(&case).expect("case");
        let expected = expectations(&text);
        assert!(
            expected.iter().any(|(s, _, _)| s == "grad")
                && expected.iter().any(|(s, _, _)| s == "opt"),
            "{name}: a case says what its pass changes (`# grad: OP N` and `# opt: OP N`)"
        );
        let grad = stage(&case, "grad");
        let opt = stage(&case, "opt");
        for (s, op, n) in &expected {
            let ir = if s == "grad" { &grad } else { &opt };
            assert_eq!(count(ir, op), *n, "{name}: `{op}` at stage {s}:\n{ir}");
        }
        insta::assert_snapshot!(format!("passes_{name}"), opt);
    }
}

#[test]
fn count_reads_only_the_first_function() {
    let ir = "fn(x: float[3]) {\n  %0: float[3] = input x\n  %1: float[3] = sin %0\n  %2: float[3] = sin %1\n  return y = %2\n}\n# at steps that record nothing:\nfn(x: float[3]) {\n  %0: float[3] = sin %0\n}\n";
    assert_eq!(count(ir, "sin"), 2);
    assert_eq!(count(ir, "insts"), 3);
    assert_eq!(count(ir, "input"), 1);
}
