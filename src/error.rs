//! `RunError`: an error after checking (statics, compiling, a step of the loop) as a value:
//! what went wrong, the step it happened at, and the spans of the program it concerns;
//! rendered at the edge (`main.rs`, the REPL) by ariadne, or as one located line.

use crate::diag::{Diagnostic, SourceMap, Span};

#[derive(Clone, Debug, PartialEq)]
pub struct RunError {
    pub message: String,
    /// The step whose gradient or update failed.
    pub step: Option<u64>,
    /// Where in the program, the first span primary: `(span, what is there)`.
    pub spans: Vec<(Span, String)>,
}

impl RunError {
    pub fn new(message: impl Into<String>) -> RunError {
        RunError {
            message: message.into(),
            step: None,
            spans: Vec::new(),
        }
    }

    /// The error at `span`, where `label` says what is there.
    pub fn at(mut self, span: Span, label: impl Into<String>) -> RunError {
        self.spans.push((span, label.into()));
        self
    }

    /// The error with `context` (e.g. `t = 1.5: `) before its message.
    pub fn prefixed(mut self, context: &str) -> RunError {
        self.message.insert_str(0, context);
        self
    }

    pub fn at_step(mut self, step: u64) -> RunError {
        self.step = Some(step);
        self
    }

    /// `step K: MESSAGE (LABEL, FILE:LINE:COL)`: one line, as `run.json` keeps it.
    pub fn located(&self, sources: &SourceMap) -> String {
        let mut s = String::new();
        if let Some(k) = self.step {
            s.push_str(&format!("step {k}: "));
        }
        s.push_str(&self.message);
        if let Some((span, label)) = self.spans.first()
            && (span.file as usize) < sources.files.len()
        {
            let (line, col) = sources.line_col(*span);
            let label = if label.is_empty() {
                String::new()
            } else {
                format!("{label}, ")
            };
            let name = &sources.file(span.file).name;
            s.push_str(&format!(" ({label}{name}:{line}:{col})"));
        }
        s
    }

    /// The report: with ariadne at its spans (as `traj check` reports errors), else
    /// `error: ` and the located line.
    pub fn render(&self, sources: &SourceMap, color: bool) -> String {
        match self.diagnostic(sources) {
            Some(d) => d.render(sources, color),
            None => format!("error: {}\n", self.located(sources)),
        }
    }

    /// The error as a diagnostic at its first span (code E0901: an error while running);
    /// `None` without a span in `sources`.
    pub fn diagnostic(&self, sources: &SourceMap) -> Option<Diagnostic> {
        let ((span, label), related) = self.spans.split_first()?;
        if related
            .iter()
            .chain([(*span, String::new())].iter())
            .any(|(s, _)| s.file as usize >= sources.files.len())
        {
            return None;
        }
        let message = match self.step {
            Some(k) => format!("step {k}: {}", self.message),
            None => self.message.clone(),
        };
        let mut d = Diagnostic::new("E0901", message, *span).label(label.clone());
        for (s, l) in related {
            d = d.related(*s, l.clone());
        }
        Some(d)
    }
}

impl std::fmt::Display for RunError {
    /// The message with its step, without locations (they need the sources).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(k) = self.step {
            write!(f, "step {k}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl From<String> for RunError {
    fn from(message: String) -> RunError {
        RunError::new(message)
    }
}

impl From<&str> for RunError {
    fn from(message: &str) -> RunError {
        RunError::new(message)
    }
}
