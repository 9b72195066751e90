//! Diagnostics: every user-caused error is a `Diagnostic` (code, message, labelled spans,
//! hint) rendered by ariadne. Spans are byte ranges into a file of the `SourceMap`.

use std::fmt::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};

use ariadne::{Color, Config, IndexType, Label, Report, ReportKind};

/// A byte range in one source file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Span {
    pub file: u32,
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub fn new(file: u32, range: Range<usize>) -> Span {
        Span {
            file,
            start: range.start as u32,
            end: range.end as u32,
        }
    }

    pub fn range(self) -> Range<usize> {
        self.start as usize..self.end as usize
    }

    /// The smallest span covering both (same file assumed).
    pub fn to(self, other: Span) -> Span {
        Span {
            file: self.file,
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
}

/// One loaded source file.
#[derive(Clone, Debug)]
pub struct SourceFile {
    /// The name shown in diagnostics (the path as given, or `<std>/optim.traj`).
    pub name: String,
    /// The path on disk, for resolving relative `use` and `load`; `None` for built-in text.
    pub path: Option<PathBuf>,
    pub text: String,
}

/// Every file of a program, indexed by `Span::file`.
#[derive(Clone, Debug, Default)]
pub struct SourceMap {
    pub files: Vec<SourceFile>,
}

impl SourceMap {
    /// Adds a file. Old Mac line ends (a `\r` not followed by `\n`) become `\n`, the same
    /// length, so offsets stay those of the file and lines are numbered as an editor does.
    pub fn add(&mut self, name: String, path: Option<PathBuf>, text: String) -> u32 {
        let text = if text.contains('\r') {
            let bytes = text.as_bytes();
            text.char_indices()
                .map(|(i, c)| match c {
                    '\r' if bytes.get(i + 1) != Some(&b'\n') => '\n',
                    c => c,
                })
                .collect()
        } else {
            text
        };
        self.files.push(SourceFile { name, path, text });
        (self.files.len() - 1) as u32
    }

    pub fn file(&self, id: u32) -> &SourceFile {
        &self.files[id as usize]
    }

    /// The source text a span covers.
    pub fn text(&self, span: Span) -> &str {
        self.file(span.file)
            .text
            .get(span.range())
            .unwrap_or_default()
    }

    /// 1-based line and column (in characters) of a span's start.
    pub fn line_col(&self, span: Span) -> (usize, usize) {
        let text = &self.file(span.file).text;
        let upto = &text[..(span.start as usize).min(text.len())];
        let line = upto.matches('\n').count() + 1;
        let col = upto.rsplit('\n').next().unwrap_or("").chars().count() + 1;
        (line, col)
    }

    /// The directory against which a file's relative paths resolve.
    pub fn dir_of(&self, file: u32) -> PathBuf {
        self.file(file)
            .path
            .as_deref()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    pub code: &'static str,
    pub message: String,
    pub span: Span,
    pub label: String,
    /// Related spans: the other operand, the earlier definition, the call site.
    pub related: Vec<(Span, String)>,
    pub hint: Option<String>,
    pub note: Option<String>,
}

impl Diagnostic {
    pub fn new(code: &'static str, message: impl Into<String>, span: Span) -> Diagnostic {
        Diagnostic {
            code,
            message: message.into(),
            span,
            label: String::new(),
            related: Vec::new(),
            hint: None,
            note: None,
        }
    }

    pub fn label(mut self, label: impl Into<String>) -> Diagnostic {
        self.label = label.into();
        self
    }

    pub fn related(mut self, span: Span, label: impl Into<String>) -> Diagnostic {
        self.related.push((span, label.into()));
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.hint = Some(hint.into());
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Diagnostic {
        self.note = Some(note.into());
        self
    }

    /// Renders the report as text, with or without ANSI colour.
    pub fn render(&self, sources: &SourceMap, color: bool) -> String {
        let name = |file: u32| sources.file(file).name.clone();
        // ariadne is given character offsets: with byte offsets it misplaces the header of
        // a label in a second file when non-ASCII text precedes it.
        let chars = |span: Span| {
            let text = &sources.file(span.file).text;
            let at = |b: usize| {
                text.get(..b.min(text.len()))
                    .map_or(0, |t| t.chars().count())
            };
            at(span.start as usize)..at(span.end as usize)
        };
        let primary = (name(self.span.file), chars(self.span));
        let mut report = Report::build(ReportKind::Error, primary)
            .with_config(
                Config::default()
                    .with_index_type(IndexType::Char)
                    .with_color(color),
            )
            .with_code(self.code)
            .with_message(&self.message);
        // Labels in source order: ariadne starts a new group (with a misleading header) at
        // a label that lies above the one before it.
        let mut labels: Vec<(Span, &str, Color)> = vec![(self.span, &self.label, Color::Red)];
        labels.extend(
            self.related
                .iter()
                .map(|(s, l)| (*s, l.as_str(), Color::Blue)),
        );
        labels.sort_by_key(|(s, ..)| (s.file != self.span.file, s.file, s.start));
        for (span, label, color) in labels {
            report = report.with_label(
                Label::new((name(span.file), chars(span)))
                    .with_message(label)
                    .with_color(color),
            );
        }
        if let Some(hint) = &self.hint {
            report = report.with_help(hint);
        }
        if let Some(note) = &self.note {
            report = report.with_note(note);
        }
        let cache = ariadne::sources(
            sources
                .files
                .iter()
                .map(|f| (f.name.clone(), f.text.clone())),
        );
        let mut out = Vec::new();
        if report.finish().write(cache, &mut out).is_err() {
            let (line, col) = sources.line_col(self.span);
            let mut s = String::new();
            let _ = writeln!(
                s,
                "error[{}]: {} at {}:{line}:{col}",
                self.code,
                self.message,
                name(self.span.file)
            );
            return s;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// Sorts diagnostics by position and drops exact repeats (a function body checked at two
/// call sites reports its own mistake once).
pub fn sort_and_dedup(diags: &mut Vec<Diagnostic>) {
    diags.sort_by(|a, b| (a.span, a.code).cmp(&(b.span, b.code)));
    diags.dedup_by(|a, b| a.span == b.span && a.code == b.code && a.message == b.message);
}
