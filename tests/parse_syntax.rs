//! The grammar against LANGUAGE.md sections 2 and 5: precedence and associativity,
//! literals, identifiers and line structure, checked through the fully parenthesized
//! printer.

use traj::syntax::{parse_module, print_module};

/// The printed form of a program that must parse without error.
fn printed(src: &str) -> String {
    let (module, diags) = parse_module(0, src);
    assert!(diags.is_empty(), "{src:?} did not parse: {diags:?}");
    print_module(&module)
}

fn expr(src: &str) -> String {
    let out = printed(&format!("const r = {src}\n"));
    out.strip_prefix("const r = ")
        .and_then(|s| s.strip_suffix('\n'))
        .unwrap_or(&out)
        .to_string()
}

fn fails(src: &str) -> Vec<&'static str> {
    parse_module(0, src).1.iter().map(|d| d.code).collect()
}

#[test]
fn precedence_follows_section_5() {
    let cases = [
        ("-x^2", "(-(x ^ 2))"),
        ("2^-x^2", "(2 ^ (-(x ^ 2)))"),
        ("a^b^c", "(a ^ (b ^ c))"),
        ("a - b - c", "((a - b) - c)"),
        ("a / b * c", "((a / b) * c)"),
        ("a * b @ c", "((a * b) @ c)"),
        ("a @ b * c", "((a @ b) * c)"),
        ("a + b * c", "(a + (b * c))"),
        ("a // b % c", "((a // b) % c)"),
        ("-a * b", "((-a) * b)"),
        ("a + b < c * d", "((a + b) < (c * d))"),
        ("not a < b and c or d", "(((not (a < b)) and c) or d)"),
        ("a or b and c", "(a or (b and c))"),
        ("not not a", "(not (not a))"),
        ("X @ A'", "(X @ A')"),
        ("-x'", "(-x')"),
        ("W[0]' @ W[1]", "(W[0]' @ W[1])"),
        ("x[1:3][0]", "x[1:3][0]"),
        ("A[:, 0]", "A[:, 0]"),
        ("v[-1:]", "v[(-1):]"),
        ("2 * -3", "(2 * (-3))"),
        ("(a + b) * c", "((a + b) * c)"),
        ("f(x, axis = 1)", "f(x, axis = 1)"),
        ("f(if c then a else b)", "f((if c then a else b))"),
        ("if c then a else b + 1", "(if c then a else (b + 1))"),
        (
            "if a then b else if c then d else e",
            "(if a then b else (if c then d else e))",
        ),
        ("1 + (if c then a else b)", "(1 + (if c then a else b))"),
        ("[1, 2, 3]", "[1, 2, 3]"),
        ("[[1, 0.5], [-1, 2]]", "[[1, 0.5], [(-1), 2]]"),
        ("[i * 2 for i in 0..n]", "[(i * 2) for i in 0..n]"),
        (
            "[[i + j for j in 0..2] for i in 0..3]",
            "[[(i + j) for j in 0..2] for i in 0..3]",
        ),
        ("matprod(Ws)", "matprod(Ws)"),
    ];
    for (src, want) in cases {
        assert_eq!(expr(src), want, "{src}");
    }
}

#[test]
fn literals_and_identifiers_follow_section_2() {
    assert_eq!(expr("1_000_000"), "1000000");
    assert_eq!(expr("0.5"), "0.5");
    assert_eq!(expr("1e-3"), "0.001");
    assert_eq!(expr("2.5E+4"), "25000.0");
    assert_eq!(expr("η * α0 + β_star"), "((η * α0) + β_star)");
    assert_eq!(expr("_x"), "_x");
    assert_eq!(
        expr("iffy + format"),
        "(iffy + format)",
        "keywords only as whole words"
    );
    assert_eq!(expr("\"a\\\"b\\\\c\\n\""), "\"a\\\"b\\\\c\\n\"");
    // `1.` and `.5` are not numbers; `0..n` is a range.
    assert_eq!(fails("const a = 1.\n"), ["E0001"]);
    assert_eq!(fails("const a = .5\n"), ["E0001"]);
    // Subscript digits are not XID_Continue.
    assert_eq!(fails("const α₀ = 1\n"), ["E0001"]);
    // Reserved words are not names; contextual ones are.
    assert_eq!(fails("const then = 1\n"), ["E0001"]);
    assert_eq!(
        expr("steps + record + log(every)"),
        "((steps + record) + log(every))"
    );
}

#[test]
fn comparisons_do_not_chain() {
    assert_eq!(fails("const a = x < y < z\n"), ["E0004"]);
    assert_eq!(fails("const a = x == y != z\n"), ["E0004"]);
    assert_eq!(expr("(x < y) < z"), "((x < y) < z)");
}

#[test]
fn lines_continue_as_section_2_says() {
    // A trailing binary operator, `,`, `=`, `and`, `then`, `else` continue the line.
    assert_eq!(printed("const a = 1 +\n  2\n"), "const a = (1 + 2)\n");
    assert_eq!(printed("const a = b and\n  c\n"), "const a = (b and c)\n");
    assert_eq!(printed("const a =\n  2\n"), "const a = 2\n");
    assert_eq!(
        printed("const a = 1,\n  b = 2\n"),
        "const a = 1\nconst b = 2\n"
    );
    // Inside ( ) and [ ] newlines are whitespace, comments too.
    assert_eq!(
        printed("const a = (1\n  + 2)  # c\n"),
        "const a = (1 + 2)\n"
    );
    assert_eq!(
        printed("data v = [1,\n 2, # two\n 3\n]\n"),
        "data v = [1, 2, 3]\n"
    );
    assert_eq!(
        printed("data y = f(x,\n  axis = 1)\n"),
        "data y = f(x, axis = 1)\n"
    );
    // A leading `then` or `else` continues the line before.
    assert_eq!(
        printed("let a = if c\n  then 1\n  else 2\n"),
        "let a = (if c then 1 else 2)\n"
    );
    // Otherwise a newline ends the statement: a leading `+` is an error.
    assert_eq!(fails("const a = 1\n  + 2\n"), ["E0001"]);
}

#[test]
fn train_clauses_may_share_a_line_and_lists_mix_separators() {
    let out = printed(
        "train { optimizer gd(lr = 0.1) steps 10 stop when loss < 1 }\n\
         sweep {\n  a in [1, 2], b in 0..3; c in [0.5]\n}\n",
    );
    assert!(
        out.contains("  optimizer gd(lr = 0.1)\n  steps 10\n  stop when (loss < 1)\n"),
        "{out}"
    );
    assert!(
        out.contains("  a in [1, 2]\n  b in 0..3\n  c in [0.5]\n"),
        "{out}"
    );
    let out = printed(
        "train {\n  record every 10 { loss, d = norm(W)\n    sv = svals(E)[0:5]; gnorm }\n}\n",
    );
    assert!(
        out.contains(
            "    loss = loss\n    d = norm(W)\n    sv = svals(E)[0:5]\n    gnorm = gnorm\n"
        ),
        "{out}"
    );
}

#[test]
fn bare_record_entries_are_named_by_their_source_text() {
    let out = printed("train {\n  record log 50 { norm(W - init(W)) / 2 }\n}\n");
    assert!(out.contains("norm(W-init(W))/2 = "), "{out}");
}

#[test]
fn every_item_kind_parses() {
    let src = "\
use std.nets
use \"lib/x.traj\"
precision f32
const n = 3
data X = randn(n, n)
param W: [n, n] ~ normal(0, 1)
param b: [] = 0
sample z = randn(n)
let E = W @ X
fn f(x, p = 2) = x^p
fn g(x) {
  let h = relu(x)
  h + x
}
loss = sum(f(E))
batch xb, yb from X, X size 2 shuffle
optimizer mine(lr, beta = 0.9) {
  state v = zeros
  let g2 = grad^2
  v = beta * v + g2
  param -= lr * v
  param += 0
  param = param
}
train {
  optimizer mine(lr = 0.1) for W
  optimizer none for b
  steps 1_000
  stop when loss < 1e-8 or gnorm < 1e-12
  record every 100 { loss }
  record log 20 { sv = svals(W) }
}
sweep {
  n in [2, 3]
  seed in 0..5
}
";
    let out = printed(src);
    for line in [
        "use std.nets",
        "use \"lib/x.traj\"",
        "precision f32",
        "param W: [n, n] ~ normal(0, 1)",
        "param b: [] = 0",
        "fn f(x, p = 2) {\n  (x ^ p)\n}",
        "fn g(x) {\n  let h = relu(x)\n  (h + x)\n}",
        "batch xb, yb from X, X size 2 shuffle",
        "  state v = zeros\n  let g2 = (grad ^ 2)\n  v = ((beta * v) + g2)\n  param -= (lr * v)\n  param += 0\n  param = param",
        "  optimizer none for b",
        "  steps 1000",
        "  seed in 0..5",
    ] {
        assert!(out.contains(line), "missing {line:?} in\n{out}");
    }
}
