//! Diagnostics that must not mislead (issue 15, part 4), over generated classes of input:
//! no false second error after a syntax error, unclosed brackets located where they open,
//! hints for standard-library names, numbers beyond range from the source and the command
//! line, invalid UTF-8 and any style of line ends.

use std::path::{Path, PathBuf};
use std::process::Command;

use traj::diag::{Diagnostic, SourceMap};
use traj::sema::Options;
use traj::sema::check::{check_file, check_source};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `(code, line, col)` of every diagnostic, with the file's name when it is not `name`.
fn located(sources: &SourceMap, diags: &[Diagnostic], name: &str) -> Vec<(String, usize, usize)> {
    let mut out: Vec<(String, usize, usize)> = diags
        .iter()
        .map(|d| {
            let (l, c) = sources.line_col(d.span);
            let file = &sources.file(d.span.file).name;
            let code = if file == name {
                d.code.to_string()
            } else {
                format!("{}@{file}", d.code)
            };
            (code, l, c)
        })
        .collect();
    out.sort();
    out
}

fn check_text(name: &str, text: &str, overrides: &[&str]) -> (SourceMap, Vec<Diagnostic>) {
    let mut sources = SourceMap::default();
    let options = Options {
        overrides: overrides.iter().map(|s| s.to_string()).collect(),
        check_sweep: true,
    };
    let path = root().join(name);
    let diags = check_source(name, Some(path), text, &options, &mut sources)
        .err()
        .unwrap_or_default();
    (sources, diags)
}

/// 1-based line and column (in characters) of byte `pos` of `text`, counting `\n` only.
fn line_col(text: &str, pos: usize) -> (usize, usize) {
    let before = &text[..pos];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, col)
}

fn traj_files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("readable dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "traj"))
        .collect();
    out.sort();
    out
}

const DATA: &str = "data X = randn(6, 2)\ndata y = randn(6)\nparam w: [2] ~ zeros\n";
const TRAIN: &str = "train {\n  optimizer gd(lr = 0.1)\n  steps 3\n}\n";

/// A broken item of every kind, then uses of what it defines: the syntax error is the only
/// report (no "not defined", no "the program trains but has no loss").
#[test]
fn a_broken_item_of_any_kind_causes_no_second_error() {
    // (broken item, the code after it that uses its names, where the syntax error is)
    let loss = "loss = mean((X @ w - y)^2)\n";
    let cases: Vec<(String, String, &str)> = vec![
        ("const n = 2 +* 3\n".into(), format!("data Z = randn(n, 2)\n{loss}{TRAIN}"), "* 3"),
        ("const a = 1, b = 2 +* 1\n".into(), format!("data Z = randn(a, b)\n{loss}{TRAIN}"), "* 1"),
        ("data Z = randn(3, 2) +* 1\n".into(), format!("loss = mean((X @ w - y)^2) + sum(Z)\n{TRAIN}"), "* 1"),
        ("param v: [2] ~ normal(0,, 1)\n".into(), format!("loss = mean((X @ w - y)^2) + sum(v^2)\n{TRAIN}"), ", 1)"),
        ("sample z = randn(2) +* 1\n".into(), format!("loss = mean((X @ (w + z) - y)^2)\n{TRAIN}"), "* 1"),
        ("let h = X @ w +* 2\n".into(), format!("loss = mean((h - y)^2)\n{TRAIN}"), "* 2"),
        ("fn f(x) = x +* 2\n".into(), format!("loss = mean((f(X @ w) - y)^2)\n{TRAIN}"), "* 2"),
        ("batch xb, yb from X, y size\n".into(), format!("loss = mean((xb @ w - yb)^2)\n{TRAIN}"), "\n"),
        (
            "optimizer mine(lr) {\n  param -= lr * * grad\n}\n".into(),
            format!("{loss}train {{\n  optimizer mine(lr = 0.1)\n  steps 3\n}}\n"),
            "* grad",
        ),
        (
            "loss = mean((X @ w - y)^2\n".into(),
            "train {\n  optimizer gd(lr = 0.1)\n  steps 3\n  record every 1 { loss, g = grad(w) }\n}\n".into(),
            "train",
        ),
        // A `use` that did not parse may define any name.
        (
            "use std.losses extra\n".into(),
            format!("loss = square_loss(X @ w, y)\n{TRAIN}"),
            "extra",
        ),
        // A loss that did not parse, and no train block at all.
        ("loss = sum(w^2 +* 1)\n".into(), "data Z = 2 * X\n".into(), "* 1"),
    ];
    for (broken, uses, anchor) in &cases {
        let text = format!("{DATA}{broken}{uses}");
        let at = DATA.len()
            + if *anchor == "\n" {
                broken.len() - 1
            } else {
                format!("{broken}{uses}").find(anchor).expect("anchor")
            };
        let (line, col) = line_col(&text, at);
        let (sources, diags) = check_text("broken.traj", &text, &[]);
        assert_eq!(
            located(&sources, &diags, "broken.traj"),
            vec![("E0001".to_string(), line, col)],
            "{text}\n{}",
            diags
                .iter()
                .map(|d| d.render(&sources, false))
                .collect::<String>()
        );
    }
}

/// Opening brackets that no bracket closes, by the plain stack rule, skipping comments and
/// strings (the oracle for the generated cases below).
fn bracket_pairs(text: &str) -> Vec<(usize, usize)> {
    let mut pairs = Vec::new();
    let mut open: Vec<usize> = Vec::new();
    let mut in_comment = false;
    let mut in_string = false;
    for (i, c) in text.char_indices() {
        match c {
            '\n' => (in_comment, in_string) = (false, false),
            _ if in_comment => {}
            '"' => in_string = !in_string,
            _ if in_string => {}
            '#' => in_comment = true,
            '(' | '[' | '{' => open.push(i),
            ')' | ']' | '}' => pairs.push((open.pop().expect("balanced example"), i)),
            _ => {}
        }
    }
    pairs
}

/// Every example with the last closing bracket of each kind deleted: the report says the
/// bracket it matched is never closed, pointing at it, and nothing else is reported.
#[test]
fn an_unclosed_bracket_is_pointed_at_where_it_opens() {
    let mut cases = 0;
    for path in traj_files(&root().join("examples")) {
        let text = std::fs::read_to_string(&path).expect("example");
        let pairs = bracket_pairs(&text);
        for closer in [')', ']', '}'] {
            let Some(&(open, close)) = pairs
                .iter()
                .filter(|(_, c)| text[*c..].starts_with(closer))
                .max_by_key(|(_, c)| *c)
            else {
                continue;
            };
            let mutated = format!("{}{}", &text[..close], &text[close + 1..]);
            let name = path.display().to_string();
            let (sources, diags) = check_text(&name, &mutated, &[]);
            let shown: String = diags.iter().map(|d| d.render(&sources, false)).collect();
            let bracket = &text[open..open + 1];
            let pointed = diags.iter().any(|d| {
                d.related.iter().any(|(s, label)| {
                    s.range() == (open..open + 1)
                        && *label == format!("this `{bracket}` is never closed")
                })
            });
            assert!(pointed, "{name} without its last `{closer}`:\n{shown}");
            assert!(
                diags.iter().all(|d| d.code == "E0001"),
                "{name} without its last `{closer}`: errors beyond the syntax error\n{shown}"
            );
            cases += 1;
        }
    }
    assert!(cases >= 20, "only {cases} cases");
}

#[test]
fn an_unclosed_bracket_at_the_end_of_the_file_says_which() {
    // (program, the bracket never closed: the last character of this anchor)
    for (text, anchor) in [
        (
            "param w: [2] ~ zeros\nloss = sum(w^2)\ntrain {\n  steps 3\n",
            "train {",
        ),
        ("const a = (1 + 2\n", "a = ("),
        ("data v = [1.0, 2.0\n\n# a comment after\n", "v = ["),
        ("optimizer o(lr) {\n  param -= lr * grad\n", "{"),
        (
            "param w: [2] ~ zeros\nloss = sum(w^2)\ntrain {\n  steps 3\n  record every 1 { loss\n}\n",
            "train {",
        ),
        (
            "data v = [(1.0), [2.0]]\nconst s = \"(\" # (\nconst b = (1 + [2][0]\n",
            "b = (",
        ),
    ] {
        let (sources, diags) = check_text("open.traj", text, &[]);
        let open = text.find(anchor).expect("anchor") + anchor.len() - 1;
        let bracket = &text[open..open + 1];
        // (a string is no value: the last case has an E0205 too)
        let syntax: Vec<&Diagnostic> = diags.iter().filter(|d| d.code.starts_with("E00")).collect();
        assert_eq!(syntax.len(), 1, "{text}");
        let d = syntax[0];
        assert_eq!(d.code, "E0001");
        assert_eq!(
            d.message,
            format!("syntax error: unclosed `{bracket}`"),
            "{text}"
        );
        assert_eq!(d.related[0].0.range(), open..open + 1, "{text}");
        let rendered = d.render(&sources, false);
        assert!(rendered.contains("is never closed"), "{rendered}");
    }
}

/// Every top-level name of a standard module other than the prelude, used without its
/// `use`, gets the hint naming the module; names of the prelude are defined already.
#[test]
fn every_standard_library_name_hints_its_module() {
    let mut cases = 0;
    for path in traj_files(&root().join("stdlib/std")) {
        let module = path.file_stem().and_then(|s| s.to_str()).expect("name");
        let text = std::fs::read_to_string(&path).expect("module");
        for line in text.lines() {
            let mut words = line.split(|c: char| !(c.is_alphanumeric() || c == '_'));
            let (Some("fn" | "optimizer" | "const" | "data" | "let"), Some(name)) =
                (words.next(), words.next())
            else {
                continue;
            };
            let program = format!("data X = randn(3, 2)\ndata Y = {name}(X)\n");
            let (sources, diags) = check_text("std_names.traj", &program, &[]);
            let undefined: Vec<&Diagnostic> = diags.iter().filter(|d| d.code == "E0101").collect();
            if module == "optim" {
                assert!(undefined.is_empty(), "{name} of the prelude");
                continue;
            }
            let want = format!("`use std.{module}` defines it");
            assert!(
                undefined.len() == 1 && undefined[0].hint.as_deref() == Some(want.as_str()),
                "{name}:\n{}",
                diags
                    .iter()
                    .map(|d| d.render(&sources, false))
                    .collect::<String>()
            );
            assert_eq!(sources.text(undefined[0].span), name);
            cases += 1;
        }
    }
    assert!(cases >= 15, "only {cases} standard names");
}

#[test]
fn float_literals_beyond_the_range_of_floats_are_errors() {
    for (literal, ok) in [
        ("1e308", true),
        ("1.7976931348623157e308", true),
        ("1e-400", true), // rounds to 0, as in NumPy
        ("2e308", false),
        ("1e400", false),
        ("1_000e306", false),
        ("99999999999999999999e300", false),
    ] {
        let text = format!("const a = {literal}\nconst b = 2 * a\n");
        let (sources, diags) = check_text("lit.traj", &text, &[]);
        let want = if ok {
            vec![]
        } else {
            vec![("E0002".to_string(), 1, 11)]
        };
        assert_eq!(located(&sources, &diags, "lit.traj"), want, "{literal}");
    }
}

/// `--set` values and seeds: what is refused, at its place on the `<command line>`.
#[test]
fn command_line_numbers_beyond_range_are_located_errors() {
    let program = "const lr = 0.1\nconst n = 3\nparam w: [n] ~ zeros\nloss = sum(w^2)\n";
    for (set, refused) in [
        ("lr=1e400", Some("`1e400` is too large for a float")),
        ("lr=-1e400", Some("`-1e400` is too large for a float")),
        ("lr=inf", None),
        ("lr=1e-400", None),
        ("lr=nan", Some("`nan` is not a number")),
        (
            "seed=99999999999999999999",
            Some("`99999999999999999999` is not a seed"),
        ),
        ("seed=-1", Some("`-1` is not a seed")),
        ("seed=1.5", Some("`1.5` is not a seed")),
        ("seed=1e400", Some("`1e400` is too large for a float")),
        ("seed=0", None),
        ("seed=9223372036854775807", None),
        ("n=99999999999999999999", Some("")), // a float where a shape needs an int
    ] {
        let (sources, diags) = check_text("set.traj", program, &["n=3", set]);
        match refused {
            None => assert!(diags.is_empty(), "{set}: {diags:?}"),
            Some("") => assert!(diags.iter().any(|d| d.code == "E0201"), "{set}: {diags:?}"),
            Some(message) => {
                assert_eq!(diags.len(), 1, "{set}: {diags:?}");
                let d = &diags[0];
                assert_eq!((d.code, d.message.as_str()), ("E0204", message), "{set}");
                assert_eq!(sources.file(d.span.file).name, "<command line>");
                assert_eq!(sources.line_col(d.span), (2, 7), "{set}");
                assert_eq!(sources.text(d.span), set);
            }
        }
    }
}

/// Compile-time int arithmetic beyond 64 bits is an error where it happens (it read as
/// "a shape must be known at compile time").
#[test]
fn int_overflow_in_consts_is_located() {
    for (expr, ok) in [
        ("2^62", true),
        ("2^63", false),
        ("2^70", false),
        ("1^99999999999", true),
        ("(-1)^99999999999", true),
        ("9223372036854775807 + 1", false),
        ("-9223372036854775807 - 2", false),
        ("3037000500 * 3037000500", false),
        ("square(3037000500)", false),
        ("abs(-9223372036854775807 - 1)", false),
        ("-(-9223372036854775807 - 1)", false),
    ] {
        let text = format!("const a = {expr}\nparam w: [a % 5 + 1] ~ zeros\n");
        let (sources, diags) = check_text("int.traj", &text, &[]);
        let found = located(&sources, &diags, "int.traj");
        let want = if ok {
            vec![]
        } else {
            vec![("E0202".to_string(), 1, 11)]
        };
        assert_eq!(found, want, "{expr}");
    }
}

#[test]
fn seeds_in_the_source_are_ints_from_zero() {
    for (text, label) in [
        ("const seed = -1\n", Some("a seed is not negative")),
        ("const seed = 2.0\n", Some("a seed is an int")),
        (
            "const seed = 99999999999999999999.0\n",
            Some("too large for a seed"),
        ),
        ("const seed = 12\n", None),
        (
            "const lr = 1.0\nsweep {\n  seed in [0, -3]\n}\n",
            Some("a seed is not negative"),
        ),
        ("const lr = 1.0\nsweep {\n  seed in 0..4\n}\n", None),
    ] {
        let (_, diags) = check_text("seed.traj", text, &[]);
        match label {
            None => assert!(diags.is_empty(), "{text}: {diags:?}"),
            Some(label) => {
                assert_eq!(diags.len(), 1, "{text}: {diags:?}");
                assert_eq!((diags[0].code, diags[0].label.as_str()), ("E0207", label));
            }
        }
    }
}

/// Every bad-program fixture and example reports the same errors at the same lines and
/// columns whether its lines end in `\n`, `\r\n` or `\r` (old Mac).
#[test]
fn any_style_of_line_ends_reads_the_same() {
    let mut files = traj_files(&root().join("tests/fixtures/err"));
    files.extend(traj_files(&root().join("examples")));
    for path in &files {
        let text = std::fs::read_to_string(path).expect("fixture");
        let name = path.display().to_string();
        let (sources, diags) = check_text(&name, &text, &[]);
        let want = located(&sources, &diags, &name);
        for ends in ["\r\n", "\r"] {
            let (sources, diags) = check_text(&name, &text.replace('\n', ends), &[]);
            assert_eq!(
                located(&sources, &diags, &name),
                want,
                "{name} with {ends:?} line ends"
            );
        }
    }
    assert!(files.len() > 90);
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("traj-diagnostics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A byte that is not UTF-8 anywhere in a file (a comment, a name, a string, the first
/// byte, after a multi-byte character, in a used module) is one located error.
#[test]
fn invalid_utf8_is_located_at_its_first_bad_byte() {
    let dir = temp_dir();
    let clean = "const η = 1\nparam w: [2] ~ zeros # note\nloss = sum(w^2)\ntrain {\n  optimizer gd(lr = η)\n  steps 3\n}\n";
    // (where the bad bytes go, which bytes)
    let cases: &[(&str, &[u8])] = &[
        ("# note", b"\xe9"),    // Latin-1 in a comment
        ("η = 1", b"\xff"),     // after a multi-byte character
        ("w: [2]", b"\xc3"),    // a cut-off sequence inside a name
        ("const", b"\xfe\xff"), // the first bytes of the file (a UTF-16 mark)
        ("sum", b"\x80\x80"),   // two stray continuation bytes
    ];
    for (i, (anchor, bad)) in cases.iter().enumerate() {
        let at = clean.find(anchor).expect("anchor");
        let mut bytes = clean.as_bytes()[..at].to_vec();
        bytes.extend_from_slice(bad);
        bytes.extend_from_slice(&clean.as_bytes()[at..]);
        let path = dir.join(format!("bad{i}.traj"));
        std::fs::write(&path, &bytes).expect("write");
        let mut sources = SourceMap::default();
        let diags = check_file(&path, &Options::default(), &mut sources)
            .expect("readable")
            .err()
            .unwrap_or_default();
        let name = path.display().to_string();
        assert_eq!(
            located(&sources, &diags, &name),
            vec![(
                "E0006".to_string(),
                line_col(clean, at).0,
                line_col(clean, at).1
            )],
            "bad bytes before {anchor:?}:\n{}",
            diags
                .iter()
                .map(|d| d.render(&sources, false))
                .collect::<String>()
        );
    }
    // In a used module: located in the module.
    std::fs::write(dir.join("lib.traj"), b"# caf\xe9\nconst k = 2\n").expect("write");
    let main = dir.join("uses.traj");
    std::fs::write(&main, "use \"lib.traj\"\nconst m = k + 1\n").expect("write");
    let mut sources = SourceMap::default();
    let diags = check_file(&main, &Options::default(), &mut sources)
        .expect("readable")
        .err()
        .unwrap_or_default();
    let name = main.display().to_string();
    let module = Path::new(&name).with_file_name("lib.traj");
    assert_eq!(
        located(&sources, &diags, &name),
        vec![(format!("E0006@{}", module.display()), 1, 6)]
    );
}

fn traj(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_traj"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("traj runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What a user meets at the command line: the same exit code as any error, a location.
#[test]
fn the_binary_locates_bad_bytes_and_bad_numbers() {
    let dir = temp_dir();
    let file = dir.join("cli.traj");
    std::fs::write(
        &file,
        b"const lr = 0.1\nparam w: [2] ~ zeros\nloss = sum(w^2) # \xe9t\xe9\ntrain {\n  optimizer gd(lr = lr)\n  steps 3\n}\n",
    )
    .expect("write");
    let f = file.to_str().expect("utf8 path");
    let (code, stderr) = traj(&["check", f]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("[E0006] Error: the file is not UTF-8"),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("{f}:3:19 ]")), "{stderr}");

    std::fs::write(&file, "const lr = 0.1\nparam w: [2] ~ zeros\nloss = sum(w^2)\ntrain {\n  optimizer gd(lr = lr)\n  steps 3\n}\n").expect("write");
    for (args, code, wanted) in [
        (
            vec!["check", f, "--set", "lr=1e400"],
            1,
            "<command line>:1:7 ]",
        ),
        (
            vec!["check", f, "--set", "lr=1e400"],
            1,
            "`1e400` is too large for a float",
        ),
        (
            vec!["run", f, "--seed", "99999999999999999999"],
            1,
            "too large for a seed",
        ),
        (vec!["run", f, "--seed=-4"], 1, "a seed is not negative"),
        (
            vec!["sweep", f, "-j", "0"],
            2,
            "invalid value '0' for '--jobs <JOBS>'",
        ),
        (
            vec!["run", f, "--steps", "99999999999999999999"],
            2,
            "invalid value '99999999999999999999' for '--steps <STEPS>'",
        ),
        (
            vec!["run", f, "--steps", "-1"],
            2,
            "unexpected argument '-1'",
        ),
    ] {
        let (got, stderr) = traj(&args);
        assert_eq!(got, Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(wanted), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
