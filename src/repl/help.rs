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
    if let Some(doc) = builtins::doc(name) {
        let sig = match builtins::signature(name) {
            Some(s) => s.usage(name, |a| format!("{a}?")),
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
