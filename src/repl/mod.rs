//! `traj repl [FILE]` (LANGUAGE.md section 10): a thin shell over `session::Session`.
//! [`Repl::handle`] turns one input into text to print; `terminal` reads lines with
//! rustyline (history, completion, hints, multi-line input), and piped input is read
//! line by line and answered without prompts or colour.

pub mod help;
pub mod show;
pub mod terminal;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::session::{Input, Session, SessionError};
use crate::train::{Backend, Progress, Status};

/// Set by SIGINT while a `:step` or `:run` is under way (see `terminal`).
pub static INTERRUPT: AtomicBool = AtomicBool::new(false);

/// What to print after an input: results on stdout, errors on stderr.
#[derive(Debug, Default, PartialEq)]
pub struct Reply {
    pub out: String,
    pub err: String,
}

impl Reply {
    fn out(text: impl Into<String>) -> Reply {
        Reply {
            out: text.into(),
            err: String::new(),
        }
    }

    fn err(text: impl Into<String>) -> Reply {
        Reply {
            out: String::new(),
            err: text.into(),
        }
    }
}

/// Whether to go on reading.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Quit,
}

/// Makes a progress callback and what clears its display afterwards.
pub type BarMaker = Box<dyn Fn() -> (Progress, Box<dyn Fn()>)>;

pub struct Repl {
    pub session: Session,
    backend: Backend,
    color: bool,
    /// Makes a progress callback for long steps (a terminal's bar), if any.
    pub progress: Option<BarMaker>,
    /// Plot size in characters: the columns it may take (labels included), its rows; a
    /// `:record` table takes one column more (the terminal's width).
    pub plot_size: (usize, usize),
}

/// The steps of `:step N`: `1000`, `1_000`.
fn parse_count(s: &str) -> Option<u64> {
    s.replace('_', "").parse().ok()
}

impl Repl {
    /// A REPL on a file, or on an empty program.
    pub fn new(file: Option<&Path>, backend: Backend, color: bool) -> Result<Repl, SessionError> {
        let session = match file {
            Some(f) => Session::load(f, backend)?,
            None => Session::from_text("", backend)?,
        };
        Ok(Repl {
            session,
            backend,
            color,
            progress: None,
            plot_size: (80, 16),
        })
    }

    /// A line about where the session is.
    pub fn banner(&self) -> String {
        let s = &self.session;
        let what = match s.file() {
            Some(f) => f.display().to_string(),
            None => "an empty program".into(),
        };
        let params: Vec<String> = s
            .params()
            .iter()
            .map(|(n, t)| format!("{n} {:?}", t.shape()))
            .collect();
        let mut line = format!("loaded {what}");
        if !params.is_empty() {
            line.push_str(&format!(": params {}", params.join(", ")));
        }
        if s.total_steps() > 0 {
            line.push_str(&format!("; at step 0 of {}", s.total_steps()));
        }
        line + "\n"
    }

    fn error(&self, e: &SessionError) -> Reply {
        Reply::err(e.render(self.color))
    }

    /// Handles one input (a command, items or an expression).
    pub fn handle(&mut self, input: &str) -> (Flow, Reply) {
        let text = input.trim();
        if text.is_empty() || text.starts_with('#') {
            return (Flow::Continue, Reply::default());
        }
        let Some(command) = text.strip_prefix(':') else {
            return (Flow::Continue, self.typed(text));
        };
        let (name, rest) = command
            .split_once(char::is_whitespace)
            .map(|(n, r)| (n, r.trim()))
            .unwrap_or((command, ""));
        let reply = match name {
            "q" | "quit" | "exit" => return (Flow::Quit, Reply::default()),
            "step" | "s" => match rest {
                "" => self.step(Some(1)),
                n => match parse_count(n) {
                    Some(n) => self.step(Some(n)),
                    None => Reply::err(format!("error: `{n}` is not a number of steps\n")),
                },
            },
            "run" => self.step(None),
            "reset" => match self.session.reset() {
                Ok(()) => Reply::out("back at step 0\n"),
                Err(e) => self.error(&e),
            },
            "set" => self.set(rest),
            "show" => self.show(rest),
            "full" => self.value(rest, true),
            "type" | "t" => match self.session.type_of(rest) {
                Ok(t) => Reply::out(format!("{}\n", t.describe())),
                Err(e) => self.error(&e),
            },
            "grad" => self.grad(rest),
            "ir" => {
                let r = if rest.is_empty() {
                    self.session.ir_of_loss()
                } else {
                    self.session.ir_of(rest)
                };
                match r {
                    Ok(t) => Reply::out(t),
                    Err(e) => self.error(&e),
                }
            }
            "clif" => match self.session.clif() {
                Ok(t) => Reply::out(t),
                Err(e) => self.error(&e),
            },
            "time" => {
                let (compile, run, steps) = self.session.times();
                let mut s = format!("compile {compile:.3} s; {steps} steps in {run:.3} s");
                if steps > 0 {
                    s.push_str(&format!(" ({:.3} µs/step)", run / steps as f64 * 1e6));
                }
                Reply::out(s + "\n")
            }
            "record" => Reply::out(show::table(
                &self.session.trajectory(),
                self.plot_size.0 + 1,
            )),
            "plot" => self.plot(rest),
            "save" => match rest {
                "" => Reply::err("error: `:save DIR` needs a folder\n"),
                dir => match self.session.save(Path::new(dir)) {
                    Ok(()) => Reply::out(format!("wrote {dir}\n")),
                    Err(e) => self.error(&e),
                },
            },
            "load" => match rest {
                "" => Reply::err("error: `:load FILE` needs a file\n"),
                f => match Session::load(&PathBuf::from(f), self.backend) {
                    Ok(s) => {
                        self.session = s;
                        Reply::out(self.banner())
                    }
                    Err(e) => self.error(&e),
                },
            },
            "reload" => match self.session.reload() {
                Ok(()) => Reply::out(format!("reloaded; at step {}\n", self.session.step_count())),
                Err(e) => self.error(&e),
            },
            "help" | "h" | "?" => match rest {
                "" => Reply::out(help::commands()),
                n => match help::about(n) {
                    Some(h) => Reply::out(h),
                    None => match self.session.source_of(n) {
                        Some(src) => Reply::out(src + "\n"),
                        None => {
                            Reply::err(format!("error: no command, builtin or function `{n}`\n"))
                        }
                    },
                },
            },
            other => Reply::err(format!(
                "error: no command `:{other}` (`:help` lists them)\n"
            )),
        };
        (Flow::Continue, reply)
    }

    /// Items are added; anything else is evaluated.
    fn typed(&mut self, text: &str) -> Reply {
        match Session::classify(text) {
            Input::Items => match self.session.define(text) {
                Ok(names) => Reply::out(format!("defined {}\n", names.join(", ").trim())),
                Err(e) => self.error(&e),
            },
            Input::Expr => self.value(text, false),
        }
    }

    fn value(&self, text: &str, full: bool) -> Reply {
        if text.is_empty() {
            return Reply::err("error: an expression is needed\n");
        }
        match self.session.eval(text) {
            Ok((t, _)) => Reply::out(show::tensor(&t, full) + "\n"),
            Err(e) => self.error(&e),
        }
    }

    /// `:step N` (`None`: `:run`).
    fn step(&mut self, n: Option<u64>) -> Reply {
        INTERRUPT.store(false, Ordering::SeqCst);
        let from = self.session.step_count();
        let far = n
            .unwrap_or(u64::MAX)
            .min(self.session.total_steps().saturating_sub(from));
        let bar = match &self.progress {
            Some(make) if far >= 1000 => Some(make()),
            _ => None,
        };
        let progress = bar.as_ref().map(|(p, _)| p.clone());
        let result = match n {
            Some(n) => self.session.step(n, progress, Some(&INTERRUPT)),
            None => self.session.run(progress, Some(&INTERRUPT)),
        };
        if let Some((_, finish)) = &bar {
            finish();
        }
        INTERRUPT.store(false, Ordering::SeqCst);
        let status = match result {
            Ok(s) => s,
            Err(e) => return self.error(&e),
        };
        let k = self.session.step_count();
        let mut out = format!("step {k} of {}", self.session.total_steps());
        if let Ok((t, _)) = self.session.eval("loss")
            && let Some(v) = t.to_f64().iter().next()
        {
            out.push_str(&format!(": loss {}", crate::output::format_float(*v)));
        }
        match status {
            Some(Status::Finished) => out.push_str(" (finished)"),
            Some(Status::Stopped) => out.push_str(" (stopped: the stop condition holds)"),
            Some(Status::Interrupted) => {
                out.push_str(&format!(" (interrupted after {} steps)", k - from))
            }
            Some(s) => out.push_str(&format!(" ({})", s.name())),
            None => {}
        }
        out.push('\n');
        let mut reply = Reply::out(out);
        match status {
            // As `traj run` reports them: the error at its operation, the divergence's
            // step and value.
            Some(Status::Error) => {
                reply.err = self.session.error_report(self.color).unwrap_or_default();
            }
            Some(Status::Diverged) => {
                if let Some(m) = self.session.message() {
                    reply.err = format!("{m}\n");
                }
            }
            _ => {}
        }
        reply
    }

    fn set(&mut self, rest: &str) -> Reply {
        let Some((k, v)) = rest.split_once('=') else {
            return Reply::err("error: `:set NAME = VALUE`, e.g. `:set lr = 0.5`\n");
        };
        match self.session.set(k.trim(), v.trim()) {
            Ok(()) => Reply::out(format!("{} = {}; recompiled\n", k.trim(), v.trim())),
            Err(e) => self.error(&e),
        }
    }

    fn show(&self, rest: &str) -> Reply {
        let full = rest.split_whitespace().any(|w| w == "--full");
        let name = rest.split_whitespace().find(|w| *w != "--full");
        let Some(name) = name else {
            let mut out = String::new();
            let names = self.session.names();
            let w = names.iter().map(|(n, _, _)| n.len()).max().unwrap_or(0);
            for (n, kind, val) in names {
                let mut line = format!("{:<9} {n:<w$}  {}", kind.describe(), val.describe());
                if let Some(k) = val.known {
                    line.push_str(&format!(" = {k}"));
                }
                out.push_str(line.trim_end());
                out.push('\n');
            }
            out.push_str(&format!(
                "at step {} of {}\n",
                self.session.step_count(),
                self.session.total_steps()
            ));
            return Reply::out(out);
        };
        let is_value = self
            .session
            .names()
            .iter()
            .any(|(n, k, _)| n == name && !matches!(k, crate::sema::modules::SymKind::Fn));
        if !is_value && let Some(src) = self.session.source_of(name) {
            return Reply::out(src + "\n");
        }
        self.value(name, full)
    }

    fn grad(&self, rest: &str) -> Reply {
        match self.session.grad(rest) {
            Ok((v, grads)) => {
                let mut out = format!("{rest} = {}\n", crate::output::format_float(v));
                for (p, g) in grads {
                    out.push_str(&format!("d/d{p}: {}\n", show::tensor(&g, false)));
                }
                Reply::out(out)
            }
            Err(e) => self.error(&e),
        }
    }

    fn plot(&self, rest: &str) -> Reply {
        let words: Vec<&str> = rest.split_whitespace().collect();
        let logy = words.contains(&"--logy");
        let columns: Vec<String> = words
            .iter()
            .filter(|w| **w != "--logy")
            .map(|w| w.to_string())
            .collect();
        if columns.is_empty() {
            return Reply::err("error: `:plot COLUMN... [--logy]` needs a recorded column\n");
        }
        let (w, h) = self.plot_size;
        match show::plot(&self.session.trajectory(), &columns, logy, w, h) {
            Ok(p) => Reply::out(p),
            Err(e) => Reply::err(format!("error: {e}\n")),
        }
    }
}

/// Reads commands line by line from piped input, without prompts or colour; lines are
/// joined while brackets are open. Returns whether every input succeeded.
pub fn piped(repl: &mut Repl, input: impl BufRead) -> bool {
    let mut ok = true;
    let mut pending = String::new();
    for line in input.lines() {
        let Ok(line) = line else { break };
        pending.push_str(&line);
        pending.push('\n');
        if open_brackets(&pending) > 0 {
            continue;
        }
        let (flow, reply) = repl.handle(&pending);
        pending.clear();
        print!("{}", reply.out);
        let _ = std::io::Write::flush(&mut std::io::stdout());
        eprint!("{}", reply.err);
        ok &= reply.err.is_empty();
        if flow == Flow::Quit {
            return ok;
        }
    }
    if !pending.trim().is_empty() {
        let (_, reply) = repl.handle(&pending);
        print!("{}", reply.out);
        eprint!("{}", reply.err);
        ok &= reply.err.is_empty();
    }
    ok
}

/// How many brackets, parentheses and braces are open at the end of `text` (strings and
/// `#` comments skipped).
pub fn open_brackets(text: &str) -> i64 {
    let mut depth = 0i64;
    let mut in_string = false;
    let mut in_comment = false;
    for c in text.chars() {
        match c {
            '\n' => in_comment = false,
            _ if in_comment => {}
            '"' => in_string = !in_string,
            _ if in_string => {}
            '#' => in_comment = true,
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            _ => {}
        }
    }
    depth
}
