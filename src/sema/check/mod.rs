//! The static checker: an abstract interpreter over the AST that evaluates consts (with
//! `--set` and sweep overrides), infers the dtype and static shape of every expression,
//! enforces where each kind of value may appear (LANGUAGE.md sections 3–6), and reports
//! every error it finds. It never evaluates tensors: data values are unknown here.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::modules::{Program, SymKind, load_file, load_text};
use crate::diag::{Diagnostic, SourceMap, Span, sort_and_dedup};
use crate::ir::types::{DType, Scalar, Shape, entries, memory_bytes, show_shape, too_large};
use crate::syntax::ast::*;

mod calls;
mod exprs;
mod files;
pub mod flow;
mod fold;
mod items;
mod names;
mod shapes;
mod sweep;
mod train;

pub use files::FileShape;
use files::FileShapes;
pub use names::for_each_child;
pub use sweep::product as sweep_product;
use sweep::{parse_overrides, sweep_points};

/// The most elements of one comprehension: each is an expression of its own.
const MAX_COMPREHENSION: i64 = 100_000;

/// What `traj check` and later stages are given besides the file.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// `NAME=VALUE` const overrides, as typed.
    pub overrides: Vec<String>,
    /// Also check every point of the program's `sweep`.
    pub check_sweep: bool,
}

/// Where a value came from, for the rules on where it may appear. Each field holds the
/// span of the first use that makes it so.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Deps {
    /// Uses a param (its current value).
    pub param: Option<Span>,
    /// Uses a per-step value: a batch, a sample, `step`, `t`.
    pub step: Option<Span>,
    /// Uses an observable of section 6.6.
    pub observable: Option<Span>,
    /// Draws random numbers.
    pub random: Option<Span>,
}

impl Deps {
    fn or(self, o: Deps) -> Deps {
        Deps {
            param: self.param.or(o.param),
            step: self.step.or(o.step),
            observable: self.observable.or(o.observable),
            random: self.random.or(o.random),
        }
    }
}

/// The static type of a value, with its compile-time value when it is a known scalar.
#[derive(Clone, Debug, PartialEq)]
pub struct Val {
    pub dtype: DType,
    pub shape: Shape,
    pub known: Option<Scalar>,
    pub deps: Deps,
}

impl Val {
    fn scalar(s: Scalar) -> Val {
        Val {
            dtype: s.dtype(),
            shape: vec![],
            known: Some(s),
            deps: Deps::default(),
        }
    }

    fn tensor(dtype: DType, shape: Shape, deps: Deps) -> Val {
        Val {
            dtype,
            shape,
            known: None,
            deps,
        }
    }

    /// `float [3, 4]`
    pub fn describe(&self) -> String {
        format!("{} {}", self.dtype.name(), show_shape(&self.shape))
    }
}

/// The result of checking: the program, every const's value at the default point, and
/// every top-level value's kind and type.
#[derive(Clone, Debug)]
pub struct Checked {
    pub program: Program,
    pub consts: BTreeMap<String, Scalar>,
    /// Top-level names in definition order, with their kind and type.
    pub names: Vec<(String, SymKind, Val)>,
}

impl Checked {
    /// The readable dump of `traj ir --stage ast`: the program's own items, fully
    /// parenthesized, then every top-level name with its kind, type and value.
    pub fn dump(&self, sources: &SourceMap) -> String {
        let main = self.program.main_file;
        let module = Module {
            file: main,
            items: self
                .program
                .items
                .iter()
                .filter(|i| item_file(i) == Some(main))
                .cloned()
                .collect(),
            broken: Vec::new(),
        };
        let mut out = crate::syntax::print_module(&module);
        let _ = writeln!(out, "\n# names ({})", sources.file(main).name);
        for (name, kind, val) in &self.names {
            let _ = write!(out, "# {:<9} {name}: {}", kind.describe(), val.describe());
            if let Some(k) = self.consts.get(name) {
                let _ = write!(out, " = {k}");
            }
            out.push('\n');
        }
        out
    }
}

fn item_file(item: &Item) -> Option<u32> {
    Some(match item {
        Item::Use(u) => u.span.file,
        Item::Const(d) | Item::Data(d) | Item::Sample(d) | Item::Let(d) => d.span.file,
        Item::Param(p) => p.span.file,
        Item::Fn(f) => f.span.file,
        Item::Loss(l) => l.span.file,
        Item::Batch(b) => b.span.file,
        Item::Optimizer(o) => o.span.file,
        Item::Train(t) => t.span.file,
        Item::Sweep(s) => s.span.file,
        Item::Precision(p) => p.span.file,
    })
}

/// Checks a program file. `Err(String)` only when the file itself cannot be read.
pub fn check_file(
    path: &Path,
    options: &Options,
    sources: &mut SourceMap,
) -> Result<Result<Checked, Vec<Diagnostic>>, String> {
    let (program, diags) = load_file(path, sources)?;
    Ok(finish(program, diags, options, sources))
}

/// Checks program text; `name` is shown in reports, `path` resolves relative files.
pub fn check_source(
    name: &str,
    path: Option<PathBuf>,
    text: &str,
    options: &Options,
    sources: &mut SourceMap,
) -> Result<Checked, Vec<Diagnostic>> {
    let (program, diags) = load_text(name, path, text.to_string(), sources);
    finish(program, diags, options, sources)
}

fn finish(
    program: Program,
    mut diags: Vec<Diagnostic>,
    options: &Options,
    sources: &mut SourceMap,
) -> Result<Checked, Vec<Diagnostic>> {
    let result = check_program(&program, options, sources);
    match result {
        Ok(checked) if diags.is_empty() => Ok(checked),
        Ok(_) => Err(diags),
        Err(more) => {
            diags.extend(more);
            sort_and_dedup(&mut diags);
            Err(diags)
        }
    }
}

/// Checks a loaded program at its default point and, if asked, at every sweep point.
pub fn check_program(
    program: &Program,
    options: &Options,
    sources: &mut SourceMap,
) -> Result<Checked, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let overrides = parse_overrides(&options.overrides, program, sources, &mut diags);
    let shapes = FileShapes::default();

    // Sweep values are const expressions, evaluated once at the defaults.
    let sweep = sweep_points(program, sources, &overrides, &shapes, &mut diags);
    // A const is int only if its default and every override are ints (section 3.1).
    let mut float_consts: HashSet<String> = overrides
        .iter()
        .filter(|(_, (v, _))| v.dtype() == DType::Float)
        .map(|(k, _)| k.clone())
        .collect();
    if options.check_sweep {
        for point in &sweep.points {
            for (k, v) in point {
                if v.dtype() == DType::Float {
                    float_consts.insert(k.clone());
                }
            }
        }
    }

    let plain: HashMap<String, Scalar> = overrides
        .iter()
        .map(|(k, (v, _))| (k.clone(), *v))
        .collect();
    let mut checker = Checker::new(program, sources, plain.clone(), &float_consts, &shapes);
    checker.check_all();
    checker.check_functions();
    let names = checker.collect_names();
    let consts = checker.const_values();
    diags.append(&mut checker.diags);

    if options.check_sweep && diags.is_empty() {
        for point in &sweep.points {
            let mut values = plain.clone();
            for (k, v) in point {
                if !overrides.contains_key(k) {
                    values.insert(k.clone(), *v);
                }
            }
            let mut c = Checker::new(program, sources, values, &float_consts, &shapes);
            c.check_all();
            let label: Vec<String> = point.iter().map(|(k, v)| format!("{k}={v}")).collect();
            for d in c.diags {
                let note = format!("at the sweep point {}", label.join(","));
                diags.push(d.note(note));
            }
            if !diags.is_empty() {
                break;
            }
        }
    }
    sort_and_dedup(&mut diags);
    if diags.is_empty() {
        Ok(Checked {
            program: program.clone(),
            consts,
            names,
        })
    } else {
        Err(diags)
    }
}

#[derive(Clone, Debug)]
enum Memo {
    Visiting,
    Done(Option<Val>),
}

/// A checked call: (function, place, parameter bindings) and the body's value.
type FnResult = ((String, Place, HashMap<String, Val>), Option<Val>);

/// What kind of expression is being checked, for names that exist only in one place.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Place {
    Item,
    /// A hyperparameter of a train clause: `t`, `loss`, `gnorm`, `nparams` are bound.
    Hyper,
    /// An optimizer body.
    Optimizer,
}

struct Checker<'p> {
    prog: &'p Program,
    sources: &'p SourceMap,
    overrides: HashMap<String, Scalar>,
    float_consts: &'p HashSet<String>,
    files: &'p FileShapes,
    memo: HashMap<String, Memo>,
    /// The value of each function body checked so far, by function, place and bindings.
    fn_results: Vec<FnResult>,
    /// Top-level items under evaluation, for cycle reports.
    stack: Vec<(String, Span)>,
    scopes: Vec<HashMap<String, Val>>,
    /// Inlined calls under way: (fn name, call span).
    calls: Vec<(String, Span)>,
    place: Place,
    diags: Vec<Diagnostic>,
}

impl<'p> Checker<'p> {
    fn new(
        prog: &'p Program,
        sources: &'p SourceMap,
        overrides: HashMap<String, Scalar>,
        float_consts: &'p HashSet<String>,
        files: &'p FileShapes,
    ) -> Checker<'p> {
        Checker {
            prog,
            sources,
            overrides,
            float_consts,
            files,
            memo: HashMap::new(),
            fn_results: Vec::new(),
            stack: Vec::new(),
            scopes: Vec::new(),
            calls: Vec::new(),
            place: Place::Item,
            diags: Vec::new(),
        }
    }

    /// Records an error; inside an inlined call it also points at the call site.
    fn error(&mut self, mut d: Diagnostic) {
        if let Some((name, span)) = self.calls.first()
            && (d.span.file != span.file || !(span.start..span.end).contains(&d.span.start))
        {
            d = d.related(*span, format!("in this call of `{name}`"));
        }
        self.diags.push(d);
    }

    // ------------------------------------------------------------ items

    fn check_all(&mut self) {
        let prog = self.prog;
        let mut trains = Vec::new();
        let mut sweeps: Vec<Span> = Vec::new();
        let mut precision: Option<Span> = None;
        for (index, item) in prog.items.iter().enumerate() {
            let own = |name: &str| prog.lookup(name).is_some_and(|s| s.item == index);
            match item {
                Item::Const(d) | Item::Data(d) | Item::Sample(d) | Item::Let(d) => {
                    if own(&d.name.name) {
                        self.item_val(&d.name.name.clone(), d.name.span);
                    }
                }
                Item::Param(p) => {
                    if own(&p.name.name) {
                        self.item_val(&p.name.name.clone(), p.name.span);
                    }
                }
                Item::Batch(b) => {
                    if let Some(n) = b.names.first()
                        && own(&n.name)
                    {
                        self.item_val(&n.name.clone(), n.span);
                    }
                }
                Item::Loss(l) => {
                    if own("loss") {
                        self.check_loss(l);
                    }
                }
                Item::Optimizer(o) => self.check_optimizer_alone(o),
                Item::Train(t) => {
                    if t.span.file == prog.main_file {
                        trains.push(t);
                    }
                }
                Item::Sweep(s) => {
                    if let Some(prev) = sweeps.first() {
                        self.error(
                            Diagnostic::new("E0102", "a second `sweep` block", s.span)
                                .label("second sweep")
                                .related(*prev, "first sweep")
                                .hint("put every swept const in one `sweep` block"),
                        );
                    }
                    sweeps.push(s.span);
                }
                Item::Precision(p) => {
                    if !matches!(p.name.as_str(), "f32" | "f64") {
                        self.error(
                            Diagnostic::new(
                                "E0413",
                                format!("unknown precision `{}`", p.name),
                                p.span,
                            )
                            .label("expected f32 or f64"),
                        );
                    }
                    if let Some(prev) = precision {
                        self.error(
                            Diagnostic::new("E0102", "precision is set twice", p.span)
                                .label("second setting")
                                .related(prev, "first setting"),
                        );
                    }
                    precision = Some(p.span);
                }
                Item::Fn(_) | Item::Use(_) => {}
            }
        }
        self.check_held_together();
        for (i, t) in trains.iter().enumerate() {
            if i > 0 {
                self.error(
                    Diagnostic::new("E0102", "a second `train` block", t.span)
                        .label("second train block")
                        .related(trains[0].span, "first train block"),
                );
            } else {
                self.check_train(t);
            }
        }
    }

    /// Params and data are held for the whole run: together they must fit in memory
    /// (each alone was checked where it was evaluated). Reported at the largest.
    fn check_held_together(&mut self) {
        let mut held = Vec::new();
        for item in &self.prog.items {
            let (name, span) = match item {
                Item::Data(d) => (&d.name.name, d.value.span),
                Item::Param(p) => (&p.name.name, p.shape_span),
                _ => continue,
            };
            if let Some(Memo::Done(Some(v))) = self.memo.get(name) {
                held.push((entries(&v.shape).unwrap_or(0), span));
            }
        }
        let total = held.iter().fold(0usize, |t, (n, _)| t.saturating_add(*n));
        let Some(&(_, largest)) = held.iter().max_by_key(|(n, _)| *n) else {
            return;
        };
        if let Some(why) = too_large(Some(total), memory_bytes()) {
            self.error(
                Diagnostic::new(
                    "E0312",
                    "the params and data are too large together",
                    largest,
                )
                .label(format!("the largest; in all {why}"))
                .hint("every value is held in memory as 8-byte floats: use smaller dimensions"),
            );
        }
    }

    /// The checked value of a top-level item, evaluated once, on demand, so items may come
    /// in any order; a cycle is reported at the reference that closes it.
    fn item_val(&mut self, name: &str, use_span: Span) -> Option<Val> {
        match self.memo.get(name) {
            Some(Memo::Done(v)) => return v.clone(),
            Some(Memo::Visiting) => {
                let start = self.stack.iter().position(|(n, _)| n == name).unwrap_or(0);
                let mut path: Vec<&str> = self.stack[start..]
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect();
                path.push(name);
                let def = self.prog.lookup(name).map(|s| s.span).unwrap_or(use_span);
                self.error(
                    Diagnostic::new(
                        "E0602",
                        format!("cyclic definition: {}", path.join(" → ")),
                        use_span,
                    )
                    .label(format!("`{name}` depends on itself"))
                    .related(def, format!("`{name}` is defined here"))
                    .hint("items are ordered by what they use; break the cycle"),
                );
                return None;
            }
            None => {}
        }
        let Some(sym) = self.prog.lookup(name) else {
            // `seed` is a const whose default is 0 unless the program defines it.
            if name == "seed" {
                let v = self
                    .overrides
                    .get("seed")
                    .copied()
                    .unwrap_or(Scalar::Int(0));
                return Some(Val::scalar(v));
            }
            return None;
        };
        self.memo.insert(name.to_string(), Memo::Visiting);
        self.stack.push((name.to_string(), use_span));
        let saved_scopes = std::mem::take(&mut self.scopes);
        let saved_calls = std::mem::take(&mut self.calls);
        let saved_place = std::mem::replace(&mut self.place, Place::Item);
        let prog = self.prog;
        let v = match (&prog.items[sym.item], sym.kind) {
            (Item::Const(d), _) => self.const_item(d),
            (Item::Data(d), _) => self.data_item(d),
            (Item::Sample(d), _) => self.sample_item(d),
            (Item::Let(d), _) => self.let_item(d),
            (Item::Param(p), _) => self.param_item(p),
            (Item::Batch(b), SymKind::BatchVar(pos)) => self.batch_item(b, pos),
            _ => None,
        };
        self.scopes = saved_scopes;
        self.calls = saved_calls;
        self.place = saved_place;
        self.stack.pop();
        self.memo.insert(name.to_string(), Memo::Done(v.clone()));
        v
    }

    /// Every top-level value's kind and type, in definition order (for `traj ir`).
    fn collect_names(&mut self) -> Vec<(String, SymKind, Val)> {
        let mut syms: Vec<(&String, &super::modules::Symbol)> = self.prog.symbols.iter().collect();
        syms.sort_by_key(|(_, s)| s.span);
        let mut out = Vec::new();
        for (name, sym) in syms {
            let v = match sym.kind {
                SymKind::Fn | SymKind::Optimizer => continue,
                SymKind::Loss => Some(Val::tensor(DType::Float, vec![], Deps::default())),
                _ => self.item_val(name, sym.span),
            };
            if let Some(v) = v {
                out.push((name.clone(), sym.kind, v));
            }
        }
        out
    }

    /// Every const's value at this point (including `seed`).
    fn const_values(&mut self) -> BTreeMap<String, Scalar> {
        let mut out = BTreeMap::new();
        let names: Vec<(String, Span)> = self
            .prog
            .symbols
            .iter()
            .filter(|(_, s)| s.kind == SymKind::Const)
            .map(|(n, s)| (n.clone(), s.span))
            .collect();
        for (n, s) in names {
            if let Some(Some(k)) = self.item_val(&n, s).map(|v| v.known) {
                out.insert(n, k);
            }
        }
        if let Some(Some(k)) = self.item_val("seed", Span::default()).map(|v| v.known) {
            out.insert("seed".into(), k);
        }
        out
    }
}
