//! The interactive REPL on a terminal: rustyline with history in the user's data folder,
//! tab completion (names in scope, builtins, library functions, consts, commands), hints
//! for commands, multi-line input while brackets are open, a progress bar on long steps
//! and Ctrl-C stopping a `:step`/`:run` at a step boundary.

use std::borrow::Cow;
use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::Ordering;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Context, Editor, Helper};

use super::{Flow, INTERRUPT, Repl, help, open_brackets};
use crate::train::Progress;

/// The history file: `$XDG_DATA_HOME/traj/history`, else `~/.local/share/traj/history`.
pub fn history_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))?;
    Some(base.join("traj").join("history"))
}

/// What rustyline asks of the REPL: completions, hints, when input is complete.
struct TrajHelper {
    /// Names to complete, refreshed after every input.
    names: Rc<RefCell<Vec<String>>>,
    color: bool,
}

impl Completer for TrajHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let start = line[..pos]
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .map_or(0, |i| i + 1);
        let word = &line[start..pos];
        if word.is_empty() {
            return Ok((pos, Vec::new()));
        }
        let names = self.names.borrow();
        let mut found: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .chain(help::known_names())
            .filter(|n| n.starts_with(word) && (word.starts_with(':') || !n.starts_with(':')))
            .collect();
        found.sort();
        found.dedup();
        Ok((
            start,
            found
                .into_iter()
                .map(|n| Pair {
                    display: n.to_string(),
                    replacement: n.to_string(),
                })
                .collect(),
        ))
    }
}

impl Hinter for TrajHelper {
    type Hint = String;

    /// The rest of a command and its arguments, while its name is typed.
    fn hint(&self, line: &str, pos: usize, _ctx: &Context<'_>) -> Option<String> {
        if pos < line.len() || !line.starts_with(':') || line.contains(' ') || line.len() < 2 {
            return None;
        }
        let (name, args, _) = help::COMMANDS
            .iter()
            .find(|(n, _, _)| n.starts_with(line))?;
        let rest = &name[line.len()..];
        Some(if args.is_empty() {
            rest.to_string()
        } else {
            format!("{rest} {args}")
        })
    }
}

impl Highlighter for TrajHelper {
    fn highlight_hint<'h>(&self, hint: &'h str) -> Cow<'h, str> {
        if self.color {
            Cow::Owned(format!("\x1b[2m{hint}\x1b[0m"))
        } else {
            Cow::Borrowed(hint)
        }
    }
}

impl Validator for TrajHelper {
    /// Input goes on to the next line while a bracket or brace is open.
    fn validate(&self, ctx: &mut ValidationContext) -> rustyline::Result<ValidationResult> {
        Ok(if open_brackets(ctx.input()) > 0 {
            ValidationResult::Incomplete
        } else {
            ValidationResult::Valid(None)
        })
    }
}

impl Helper for TrajHelper {}

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPT.store(true, Ordering::SeqCst);
}

/// While an input is handled, Ctrl-C sets [`INTERRUPT`] instead of ending the process
/// (at the prompt rustyline reads Ctrl-C as a key, with a SIGINT handler of its own,
/// which this puts back afterwards).
fn with_sigint_caught<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: `sigaction` with a zeroed, then filled, struct; the handler only stores to
    // an atomic, which is async-signal-safe.
    unsafe {
        let mut ours: libc::sigaction = std::mem::zeroed();
        ours.sa_sigaction = on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::sigemptyset(&mut ours.sa_mask);
        let mut theirs: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGINT, &ours, &mut theirs);
        let result = f();
        libc::sigaction(libc::SIGINT, &theirs, std::ptr::null_mut());
        result
    }
}

/// A progress bar on stderr over a long `:step`/`:run`, and what clears it.
fn progress_bar() -> (Progress, Box<dyn Fn()>) {
    let bar = ProgressBar::with_draw_target(Some(1), ProgressDrawTarget::stderr_with_hz(10));
    if let Ok(style) = ProgressStyle::with_template(
        "[{wide_bar}] {pos}/{len} steps ({elapsed}, eta {eta}; Ctrl-C stops)",
    ) {
        bar.set_style(style);
    }
    let b = bar.clone();
    let progress = Progress::new(move |k, total| {
        b.set_length(total);
        b.set_position(k);
    });
    (progress, Box::new(move || bar.finish_and_clear()))
}

/// Runs the REPL on the terminal until `:quit` or Ctrl-D.
pub fn interactive(repl: &mut Repl, color: bool) -> Result<(), String> {
    repl.progress = Some(Box::new(progress_bar));
    if let Some((w, _)) = terminal_width() {
        repl.plot_size = ((w.saturating_sub(1)).clamp(40, 160), 16);
    }
    let names = Rc::new(RefCell::new(repl.session.completion_names()));
    let mut editor: Editor<TrajHelper, DefaultHistory> =
        Editor::new().map_err(|e| format!("cannot start the line editor: {e}"))?;
    editor.set_helper(Some(TrajHelper {
        names: names.clone(),
        color,
    }));
    let history = history_path();
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    print!("{}", repl.banner());
    println!("`:help` lists the commands; Ctrl-D quits.");
    loop {
        let prompt = format!("traj[{}]> ", repl.session.step_count());
        match editor.readline(&prompt) {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                }
                let (flow, reply) = with_sigint_caught(|| repl.handle(&line));
                print!("{}", reply.out);
                eprint!("{}", reply.err);
                *names.borrow_mut() = repl.session.completion_names();
                if flow == Flow::Quit {
                    break;
                }
            }
            Err(ReadlineError::Interrupted) => println!("(Ctrl-D or :quit leaves)"),
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(format!("cannot read input: {e}")),
        }
    }
    if let Some(h) = &history {
        if let Some(dir) = h.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = editor.save_history(h);
    }
    Ok(())
}

/// The terminal's columns and rows, if stdout is one.
fn terminal_width() -> Option<(usize, usize)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into `ws`.
    let r = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_col > 0).then_some((ws.ws_col as usize, ws.ws_row as usize))
}
