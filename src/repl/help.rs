//! The REPL's help: its commands with their usage, and a builtin's or a standard-library
//! function's signature and one-line doc.

use crate::sema::builtins;
use crate::sema::modules::STD_MODULES;

/// Every command: name, arguments, what it does.
pub const COMMANDS: &[(&str, &str, &str)] = &[
    (
        ":step",
        "[N]",
        "take N optimizer steps (default 1) with the compiled loop",
    ),
    (
        ":run",
        "",
        "run the train block to its end from where it is",
    ),
    (
        ":reset",
        "",
        "back to step 0: params at their initial values, nothing recorded",
    ),
    (
        ":set",
        "NAME = VALUE",
        "override a const and recompile (params keep their values)",
    ),
    (
        ":show",
        "[NAME] [--full]",
        "list names with kinds and shapes, or print one",
    ),
    (
        ":full",
        "EXPR",
        "evaluate an expression and print every entry",
    ),
    (":type", "EXPR", "dtype, shape and kind of an expression"),
    (
        ":grad",
        "EXPR",
        "the gradient of a scalar expression with respect to every param",
    ),
    (
        ":ir",
        "[NAME]",
        "the IR of a value (without NAME: the loss's gradient)",
    ),
    (
        ":clif",
        "",
        "the Cranelift IR of the compiled training loop",
    ),
    (":time", "", "compile time, loop time and time per step"),
    (":record", "", "the trajectory so far, as a table"),
    (
        ":plot",
        "COLUMN... [--logy]",
        "a line plot of recorded columns in the terminal",
    ),
    (":save", "DIR", "write the run folder as `traj run` would"),
    (":load", "FILE", "start a session on another program"),
    (
        ":reload",
        "",
        "read the program file again (typed items and :set kept)",
    ),
    (
        ":help",
        "[NAME]",
        "this list, or a builtin's or library function's signature",
    ),
    (":quit", "", "leave (Ctrl-D too)"),
];

/// One-line docs of the builtins (LANGUAGE.md section 6) but the elementwise ones of one
/// argument, whose docs are their rows' (`builtins::unary_doc`).
const DOCS: &[(&str, &str)] = &[
    (
        "max",
        "maximum of x (or along axis), or elementwise max(x, y)",
    ),
    (
        "min",
        "minimum of x (or along axis), or elementwise min(x, y)",
    ),
    ("clamp", "x limited to [lo, hi], elementwise"),
    (
        "leaky_relu",
        "x where x > 0, else slope * x (slope 0.01 by default)",
    ),
    ("logaddexp", "log(exp(a) + exp(b)), stable"),
    ("sum", "sum of every entry, or along axis"),
    ("mean", "mean of every entry, or along axis"),
    ("prod", "product of every entry, or along axis"),
    ("logsumexp", "log(sum(exp(x))), stable, or along axis"),
    ("argmax", "index of the largest entry (int), or along axis"),
    ("argmin", "index of the smallest entry (int), or along axis"),
    ("norm", "Euclidean/Frobenius norm, or the entrywise p-norm"),
    (
        "softmax",
        "exp(x) / sum(exp(x)) along axis (last by default)",
    ),
    (
        "log_softmax",
        "x - logsumexp(x) along axis (last by default)",
    ),
    (
        "reshape",
        "the entries of x in row-major order with shape dims",
    ),
    ("flat", "x as a vector, row-major"),
    ("transpose", "x with all axes reversed (also x')"),
    (
        "diag",
        "the diagonal matrix of a vector, or the diagonal of a matrix",
    ),
    ("trace", "sum of the diagonal"),
    ("concat", "a list of arrays joined along axis"),
    (
        "stack",
        "a list of equal-shaped arrays stacked on a new first axis",
    ),
    ("outer", "the outer product u v'"),
    ("matprod", "Ws[L-1] @ ... @ Ws[0] for a stack [L, m, m]"),
    ("eye", "the n × n identity"),
    ("zeros", "an array of zeros"),
    ("ones", "an array of ones"),
    ("full", "an array filled with c"),
    ("arange", "0, 1, ..., n-1 (int)"),
    ("linspace", "n evenly spaced values from a to b"),
    ("onehot", "one-hot rows [n, k] of int indices"),
    ("shape", "the k-th dimension of x (a compile-time int)"),
    ("randn", "standard normal draws"),
    ("rand", "uniform draws in [0, 1)"),
    ("bernoulli", "0/1 draws, 1 with probability p"),
    ("randint", "int draws in [lo, hi)"),
    ("choose", "k distinct ints below n, in random order"),
    ("permutation", "a random permutation of 0..n (int)"),
    (
        "orthogonal",
        "a Haar orthogonal (or semi-orthogonal) matrix",
    ),
    ("load", "a .npy or .csv file, relative to the program"),
    ("svals", "singular values, descending (observable)"),
    (
        "eigvals",
        "eigenvalues of a symmetric matrix, descending (observable)",
    ),
    (
        "rank",
        "count of singular values above tol times the largest (observable)",
    ),
    (
        "erank",
        "effective rank: exp of the entropy of normalized singular values",
    ),
    ("nuclear", "sum of singular values (observable)"),
    ("spectral", "largest singular value (observable)"),
    ("cond", "largest over smallest singular value (observable)"),
    (
        "grad",
        "the gradient of the loss (or of a scalar a) with respect to param p",
    ),
    (
        "ntk",
        "the empirical neural tangent kernel [n, n] of f on the rows of X",
    ),
    ("init", "x with every param at its initial value"),
    ("inf", "infinity"),
    ("pi", "π"),
    ("gnorm", "the norm of the whole gradient of the loss"),
    (
        "sharpness",
        "the largest eigenvalue of the loss Hessian (Lanczos)",
    ),
    ("step", "the current step"),
    ("seed", "the run's seed (a const, 0 by default)"),
];

/// The list of commands.
pub fn commands() -> String {
    let mut out =
        String::from("Type an expression to evaluate it, or an item to add or redefine it.\n");
    for (name, args, doc) in COMMANDS {
        let usage = format!("{name} {args}");
        out.push_str(&format!("  {usage:<26} {doc}\n"));
    }
    out.push_str("`:help NAME` shows a builtin's or a library function's signature.\n");
    out
}

/// Help on one name: a command, a builtin, or a function or optimizer of the standard
/// library.
pub fn about(name: &str) -> Option<String> {
    let bare = name.trim_start_matches(':');
    if let Some((n, args, doc)) = COMMANDS.iter().find(|(n, _, _)| &n[1..] == bare) {
        return Some(format!("{n} {args}\n  {doc}\n"));
    }
    let doc = DOCS.iter().find(|(n, _)| *n == name).map(|(_, d)| *d);
    if let Some(doc) = doc.or_else(|| builtins::unary_doc(name)) {
        let sig = match builtins::signature(name) {
            Some(s) => {
                let mut args: Vec<String> = s.required.iter().map(|a| a.to_string()).collect();
                args.extend(s.optional.iter().map(|a| format!("{a}?")));
                if s.variadic {
                    args.push("dims...".into());
                }
                args.extend(s.kw_only.iter().map(|a| format!("{a} = ...")));
                format!("{name}({})", args.join(", "))
            }
            None => name.to_string(),
        };
        return Some(format!("{sig}  (builtin)\n  {doc}\n"));
    }
    for (module, text) in STD_MODULES {
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let head = ["fn ", "optimizer "]
                .iter()
                .find_map(|kw| line.strip_prefix(kw));
            let Some(rest) = head else { continue };
            if rest.split(['(', ' ']).next() != Some(name) {
                continue;
            }
            let sig = line
                .split(" = ")
                .next()
                .unwrap_or(line)
                .trim_end_matches(" {");
            let doc = (0..i)
                .rev()
                .map(|j| lines[j])
                .take_while(|l| l.starts_with('#'))
                .last()
                .map(|l| l.trim_start_matches('#').trim())
                .unwrap_or("");
            return Some(format!("{sig}  (std.{module})\n  {doc}\n"));
        }
    }
    None
}

/// Every name help knows, for completion.
pub fn known_names() -> Vec<&'static str> {
    let mut v: Vec<&str> = builtins::all_names();
    v.extend(COMMANDS.iter().map(|(n, _, _)| *n));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_has_a_doc() {
        for n in builtins::all_names() {
            assert!(about(n).is_some(), "{n} has no doc");
        }
    }

    #[test]
    fn library_functions_show_their_signature_and_doc() {
        let h = about("square_loss").unwrap();
        assert_eq!(
            h,
            "fn square_loss(f, y)  (std.losses)\n  Square loss: 0.5 * mean((f - y)^2).\n"
        );
        assert_eq!(
            about("svals").unwrap(),
            "svals(A)  (builtin)\n  singular values, descending (observable)\n"
        );
    }
}
