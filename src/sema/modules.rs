//! Module loading: the program file, the files and standard-library modules it `use`s
//! (transitively, each once), the prelude (`std.optim`), and the top-level symbol table
//! with its duplicate-definition errors.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use crate::diag::{Diagnostic, SourceMap, Span};
use crate::syntax::ast::{ANY_NAME, Item, UseTarget};
use crate::syntax::parse_module;

/// The module every program sees without a `use`.
pub const PRELUDE: &str = "optim";

/// The standard library, compiled into the binary so `traj` runs from anywhere.
pub const STD_MODULES: &[(&str, &str)] = &[
    ("optim", include_str!("../../stdlib/std/optim.traj")),
    ("nets", include_str!("../../stdlib/std/nets.traj")),
    ("losses", include_str!("../../stdlib/std/losses.traj")),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SymKind {
    Const,
    Data,
    Param,
    Sample,
    Let,
    Fn,
    Optimizer,
    /// The `pos`-th name of a `batch` item.
    BatchVar(usize),
    Loss,
}

impl SymKind {
    pub fn describe(self) -> &'static str {
        match self {
            SymKind::Const => "const",
            SymKind::Data => "data",
            SymKind::Param => "param",
            SymKind::Sample => "sample",
            SymKind::Let => "let",
            SymKind::Fn => "fn",
            SymKind::Optimizer => "optimizer",
            SymKind::BatchVar(_) => "batch",
            SymKind::Loss => "loss",
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Symbol {
    pub kind: SymKind,
    /// The defining name's span.
    pub span: Span,
    /// Index into `Program::items`.
    pub item: usize,
}

/// A program with every module it uses, merged.
#[derive(Clone, Debug, Default)]
pub struct Program {
    /// Items of the program file, of used modules, and of the prelude, in load order.
    pub items: Vec<Item>,
    /// Names defined by the program and the modules it uses.
    pub symbols: HashMap<String, Symbol>,
    /// Names of the prelude (`std.optim`), shadowed by `symbols`.
    pub prelude: HashMap<String, Symbol>,
    /// The program's own file.
    pub main_file: u32,
    /// Names that items which failed to parse would have defined, [`ANY_NAME`] if a module
    /// could not be loaded: an error about them missing would be false.
    pub broken: HashSet<String>,
}

impl Program {
    /// Whether an item that failed to parse may have defined `name` (a broken `use` may
    /// have defined any name), so that reporting it missing could be false.
    pub fn maybe_defined(&self, name: &str) -> bool {
        self.broken.contains(name) || self.broken.contains(ANY_NAME)
    }

    /// A top-level name: the program's own and used modules' first, then the prelude's.
    pub fn lookup(&self, name: &str) -> Option<Symbol> {
        self.symbols
            .get(name)
            .or_else(|| self.prelude.get(name))
            .copied()
    }
}

/// Loads a program file and everything it uses.
pub fn load_file(
    path: &Path,
    sources: &mut SourceMap,
) -> Result<(Program, Vec<Diagnostic>), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let (text, invalid) = decode_source(&bytes);
    Ok(load(
        &path.display().to_string(),
        Some(path.to_path_buf()),
        text,
        &invalid,
        sources,
    ))
}

/// Source text from a file's bytes: each invalid UTF-8 sequence becomes U+FFFD, whose
/// offsets in the returned text come second.
pub fn decode_source(bytes: &[u8]) -> (String, Vec<usize>) {
    let mut text = String::with_capacity(bytes.len());
    let mut invalid = Vec::new();
    for chunk in bytes.utf8_chunks() {
        text.push_str(chunk.valid());
        if !chunk.invalid().is_empty() {
            invalid.push(text.len());
            text.push(char::REPLACEMENT_CHARACTER);
        }
    }
    (text, invalid)
}

/// Loads a program from text (`path` resolves its relative `use` and `load`).
pub fn load_text(
    name: &str,
    path: Option<PathBuf>,
    text: String,
    sources: &mut SourceMap,
) -> (Program, Vec<Diagnostic>) {
    load(name, path, text, &[], sources)
}

/// Loads a program whose text has U+FFFD at `invalid` for bytes that were not UTF-8.
fn load(
    name: &str,
    path: Option<PathBuf>,
    text: String,
    invalid: &[usize],
    sources: &mut SourceMap,
) -> (Program, Vec<Diagnostic>) {
    let mut loader = Loader {
        sources,
        diags: Vec::new(),
        loaded: Vec::new(),
        program: Program::default(),
    };
    let main = loader.sources.add(name.to_string(), path, text);
    loader.program.main_file = main;
    loader.add_file(main, false, invalid);
    if !loader.loaded.contains(&format!("std:{PRELUDE}")) {
        loader.add_std(PRELUDE, None, true);
    }
    let Loader {
        program, mut diags, ..
    } = loader;
    crate::diag::sort_and_dedup(&mut diags);
    (program, diags)
}

struct Loader<'s> {
    sources: &'s mut SourceMap,
    diags: Vec<Diagnostic>,
    /// Keys of loaded modules (`std:optim`, or a canonical path), to load each once.
    loaded: Vec<String>,
    program: Program,
}

impl Loader<'_> {
    /// Parses and defines a file's items; `invalid` are the offsets of U+FFFD standing for
    /// bytes that were not UTF-8.
    fn add_file(&mut self, file: u32, prelude: bool, invalid: &[usize]) {
        let text = &self.sources.file(file).text;
        let (module, diags) = match invalid.first() {
            None => parse_module(file, text),
            Some(&first) => {
                // One error, at the first bad byte. Read as blanks of the same length, bad
                // bytes cause no syntax error of their own; one that splits a token causes
                // one on its line, which is left unsaid.
                let line_of = |at: usize| text[..at].matches('\n').count();
                let bad_lines: Vec<usize> = invalid.iter().map(|&at| line_of(at)).collect();
                let width = char::REPLACEMENT_CHARACTER.len_utf8();
                let mut blanked = text.clone();
                for &at in invalid {
                    blanked.replace_range(at..at + width, &" ".repeat(width));
                }
                let (module, mut diags) = parse_module(file, &blanked);
                diags.retain(|d| {
                    d.code != "E0001" || !bad_lines.contains(&line_of(d.span.start as usize))
                });
                diags.push(
                    Diagnostic::new(
                        "E0006",
                        "the file is not UTF-8",
                        Span::new(file, first..first + width),
                    )
                    .label("not valid UTF-8 (shown as �)")
                    .hint("save the file as UTF-8 (a `.traj` source is UTF-8 text)"),
                );
                (module, diags)
            }
        };
        self.diags.extend(diags);
        self.program.broken.extend(module.broken);
        for item in module.items {
            if let Item::Use(u) = &item {
                match &u.target {
                    UseTarget::Std(path) => {
                        let names: Vec<&str> = path.iter().map(|i| i.name.as_str()).collect();
                        match names.as_slice() {
                            ["std", m] => self.add_std(m, Some(u.span), prelude),
                            _ => self.not_found(u.span, &names.join(".")),
                        }
                    }
                    UseTarget::File(rel) => {
                        let path = self.sources.dir_of(file).join(rel);
                        // Shown relative to how the using file was named.
                        let shown = Path::new(&self.sources.file(file).name)
                            .parent()
                            .map(|d| d.join(rel))
                            .unwrap_or_else(|| PathBuf::from(rel));
                        self.add_path(&path, &shown, u.span, prelude);
                    }
                }
            }
            self.define(item, prelude);
        }
    }

    fn add_std(&mut self, module: &str, span: Option<Span>, prelude: bool) {
        let key = format!("std:{module}");
        if self.loaded.contains(&key) {
            return;
        }
        let Some((_, text)) = STD_MODULES.iter().find(|(m, _)| *m == module) else {
            if let Some(span) = span {
                self.not_found(span, &format!("std.{module}"));
            }
            return;
        };
        self.loaded.push(key);
        let file = self
            .sources
            .add(format!("<std>/{module}.traj"), None, text.to_string());
        self.add_file(file, prelude, &[]);
    }

    fn add_path(&mut self, path: &Path, shown: &Path, span: Span, prelude: bool) {
        let key = path
            .canonicalize()
            .unwrap_or_else(|_| path.to_path_buf())
            .display()
            .to_string();
        if self.loaded.contains(&key) {
            return;
        }
        match std::fs::read(path) {
            Ok(bytes) => {
                self.loaded.push(key);
                let (text, invalid) = decode_source(&bytes);
                let file =
                    self.sources
                        .add(shown.display().to_string(), Some(path.to_path_buf()), text);
                self.add_file(file, prelude, &invalid);
            }
            Err(e) => {
                self.diags.push(
                    Diagnostic::new(
                        "E0103",
                        format!("cannot load module `{}`", shown.display()),
                        span,
                    )
                    .label(format!("{e}"))
                    .hint("a file path is relative to the file that uses it"),
                );
                // Its names are unknown: none is reported missing.
                self.program.broken.insert(ANY_NAME.to_string());
            }
        }
    }

    fn not_found(&mut self, span: Span, name: &str) {
        let known: Vec<String> = STD_MODULES
            .iter()
            .map(|(m, _)| format!("std.{m}"))
            .collect();
        self.diags.push(
            Diagnostic::new("E0103", format!("no module named `{name}`"), span)
                .label("unknown module")
                .hint(format!("the standard modules are {}", known.join(", "))),
        );
        self.program.broken.insert(ANY_NAME.to_string());
    }

    fn define(&mut self, item: Item, prelude: bool) {
        let index = self.program.items.len();
        let names = item_names(&item);
        self.program.items.push(item);
        let table = if prelude {
            &mut self.program.prelude
        } else {
            &mut self.program.symbols
        };
        for (name, span, kind) in names {
            if let Some(prev) = table.get(&name) {
                self.diags.push(
                    Diagnostic::new("E0102", format!("`{name}` is defined twice"), span)
                        .label("second definition")
                        .related(prev.span, "first defined here")
                        .hint("every top-level name is defined once; rename one of them"),
                );
            } else {
                table.insert(
                    name,
                    Symbol {
                        kind,
                        span,
                        item: index,
                    },
                );
            }
        }
    }
}

/// The top-level names an item defines, with their spans and kinds.
fn item_names(item: &Item) -> Vec<(String, Span, SymKind)> {
    match item {
        Item::Const(d) => vec![(d.name.name.clone(), d.name.span, SymKind::Const)],
        Item::Data(d) => vec![(d.name.name.clone(), d.name.span, SymKind::Data)],
        Item::Sample(d) => vec![(d.name.name.clone(), d.name.span, SymKind::Sample)],
        Item::Let(d) => vec![(d.name.name.clone(), d.name.span, SymKind::Let)],
        Item::Param(p) => vec![(p.name.name.clone(), p.name.span, SymKind::Param)],
        Item::Fn(f) => vec![(f.name.name.clone(), f.name.span, SymKind::Fn)],
        Item::Optimizer(o) => vec![(o.name.name.clone(), o.name.span, SymKind::Optimizer)],
        Item::Batch(b) => b
            .names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), n.span, SymKind::BatchVar(i)))
            .collect(),
        Item::Loss(l) => {
            let start = Span {
                end: l.span.start + 4,
                ..l.span
            };
            vec![("loss".to_string(), start, SymKind::Loss)]
        }
        _ => vec![],
    }
}

/// The standard module, other than the prelude, that defines `name` at top level (read
/// from the modules' own items).
pub fn std_module_defining(name: &str) -> Option<&'static str> {
    static NAMES: LazyLock<Vec<(&'static str, HashSet<String>)>> = LazyLock::new(|| {
        STD_MODULES
            .iter()
            .filter(|(module, _)| *module != PRELUDE)
            .map(|(module, text)| {
                let items = parse_module(0, text).0.items;
                let names = items.iter().flat_map(item_names).map(|(n, ..)| n);
                (*module, names.collect())
            })
            .collect()
    });
    NAMES
        .iter()
        .find(|(_, names)| names.contains(name))
        .map(|(module, _)| *module)
}
