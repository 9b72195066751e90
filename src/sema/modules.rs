//! Module loading: the program file, the files and standard-library modules it `use`s
//! (transitively, each once), the prelude (`std.optim`), and the top-level symbol table
//! with its duplicate-definition errors.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::diag::{Diagnostic, SourceMap, Span};
use crate::syntax::ast::{Item, UseTarget};
use crate::syntax::parse_module;

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
}

impl Program {
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
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(load_text(
        &path.display().to_string(),
        Some(path.to_path_buf()),
        text,
        sources,
    ))
}

/// Loads a program from text (`path` resolves its relative `use` and `load`).
pub fn load_text(
    name: &str,
    path: Option<PathBuf>,
    text: String,
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
    loader.add_file(main, false);
    if !loader.loaded.contains(&"std:optim".to_string()) {
        loader.add_std("optim", None, true);
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
    fn add_file(&mut self, file: u32, prelude: bool) {
        let (module, diags) = parse_module(file, &self.sources.file(file).text);
        self.diags.extend(diags);
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
        self.add_file(file, prelude);
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
        match std::fs::read_to_string(path) {
            Ok(text) => {
                self.loaded.push(key);
                let file =
                    self.sources
                        .add(shown.display().to_string(), Some(path.to_path_buf()), text);
                self.add_file(file, prelude);
            }
            Err(e) => self.diags.push(
                Diagnostic::new(
                    "E0103",
                    format!("cannot load module `{}`", shown.display()),
                    span,
                )
                .label(format!("{e}"))
                .hint("a file path is relative to the file that uses it"),
            ),
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
    }

    fn define(&mut self, item: Item, prelude: bool) {
        let index = self.program.items.len();
        let names: Vec<(String, Span, SymKind)> = match &item {
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
        };
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
