//! The static checker: an abstract interpreter over the AST that evaluates consts (with
//! `--set` and sweep overrides), infers the dtype and static shape of every expression,
//! enforces where each kind of value may appear (LANGUAGE.md sections 3–6), and reports
//! every error it finds. It never evaluates tensors: data values are unknown here.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::builtins::{self, Class, OPTIMIZER_NAMES};
use super::modules::{Program, SymKind, load_file, load_text};
use super::types::{
    DType, Scalar, Shape, axis, broadcast, entries, matmul, memory_bytes, show_shape, too_large,
};
use crate::diag::{Diagnostic, SourceMap, Span, sort_and_dedup};
use crate::syntax::ast::*;

pub mod flow;

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

/// `NAME=VALUE` overrides, each with a span into a `<command line>` pseudo-file so that a
/// bad one is reported like any other error.
fn parse_overrides(
    raw: &[String],
    program: &Program,
    sources: &mut SourceMap,
    diags: &mut Vec<Diagnostic>,
) -> BTreeMap<String, (Scalar, Span)> {
    let mut out = BTreeMap::new();
    if raw.is_empty() {
        return out;
    }
    let mut text = String::new();
    let mut spans = Vec::new();
    for r in raw {
        let start = text.len();
        text.push_str("--set ");
        text.push_str(r);
        spans.push(start + 6..text.len());
        text.push('\n');
    }
    let file = sources.add("<command line>".into(), None, text);
    for (r, range) in raw.iter().zip(spans) {
        let span = Span::new(file, range);
        let Some((k, v)) = r.split_once('=') else {
            diags.push(
                Diagnostic::new("E0204", format!("`{r}` is not `NAME=VALUE`"), span)
                    .label("expected NAME=VALUE")
                    .hint("for example `--set lr=0.5`"),
            );
            continue;
        };
        let k = k.trim();
        let is_const = k == "seed"
            || program
                .symbols
                .get(k)
                .is_some_and(|s| s.kind == SymKind::Const);
        if !is_const && !program.maybe_defined(k) {
            diags.push(
                Diagnostic::new("E0204", format!("the program has no const `{k}`"), span)
                    .label("unknown const")
                    .hint("`--set` overrides a `const` of the program"),
            );
            continue;
        }
        match Scalar::parse(v).filter(|_| !beyond_float_range(v)) {
            Some(s) if k == "seed" && seed_problem(s).is_some() => diags.push(
                Diagnostic::new("E0204", format!("`{}` is not a seed", v.trim()), span)
                    .label(seed_problem(s).unwrap_or_default())
                    .hint(SEED_HINT),
            ),
            Some(s) => {
                out.insert(k.to_string(), (s, span));
            }
            None if beyond_float_range(v) => diags.push(
                Diagnostic::new(
                    "E0204",
                    format!("`{}` is too large for a float", v.trim()),
                    span,
                )
                .label("beyond the largest float, about 1.8e308")
                .hint("`--set lr=inf` sets infinity"),
            ),
            None => diags.push(
                Diagnostic::new("E0204", format!("`{v}` is not a number"), span)
                    .label("expected an int or a float")
                    .hint("for example `--set lr=0.5` or `--set n=100`"),
            ),
        }
    }
    out
}

/// A number written with digits (`1e400`) too large for a float.
fn beyond_float_range(text: &str) -> bool {
    let t = text.trim().replace('_', "");
    !t.to_ascii_lowercase().contains("inf") && t.parse::<f64>().is_ok_and(f64::is_infinite)
}

/// Why a value cannot be the run's seed, if it cannot: seeds are the ints 0 to 2^63 − 1.
fn seed_problem(v: Scalar) -> Option<&'static str> {
    match v {
        Scalar::Int(i) if i >= 0 => None,
        Scalar::Int(_) => Some("a seed is not negative"),
        // An int literal beyond 64 bits reads as a float.
        Scalar::Float(f) if f.fract() == 0.0 && f.abs() >= 2f64.powi(63) => Some(if f > 0.0 {
            "too large for a seed"
        } else {
            "a seed is not negative"
        }),
        Scalar::Float(_) => Some("a seed is an int"),
    }
}

const SEED_HINT: &str = "seeds are the ints from 0 to 9223372036854775807";

struct Sweep {
    /// Each point: (const, value) in the order of the sweep's entries.
    points: Vec<Vec<(String, Scalar)>>,
}

fn sweep_points(
    program: &Program,
    sources: &SourceMap,
    overrides: &BTreeMap<String, (Scalar, Span)>,
    shapes: &FileShapes,
    diags: &mut Vec<Diagnostic>,
) -> Sweep {
    let mut points: Vec<Vec<(String, Scalar)>> = vec![vec![]];
    let Some(sweep) = program.items.iter().find_map(|i| match i {
        Item::Sweep(s) if s.span.file == program.main_file => Some(s),
        _ => None,
    }) else {
        return Sweep { points: vec![] };
    };
    let plain = overrides
        .iter()
        .map(|(k, (v, _))| (k.clone(), *v))
        .collect();
    let none = HashSet::new();
    let mut c = Checker::new(program, sources, plain, &none, shapes);
    let mut seen: HashMap<&str, Span> = HashMap::new();
    for entry in &sweep.entries {
        let name = entry.name.name.as_str();
        if let Some(prev) = seen.insert(name, entry.name.span) {
            c.error(
                Diagnostic::new("E0102", format!("`{name}` is swept twice"), entry.name.span)
                    .label("second entry")
                    .related(prev, "first entry"),
            );
            continue;
        }
        let is_const = name == "seed"
            || program
                .symbols
                .get(name)
                .is_some_and(|s| s.kind == SymKind::Const);
        if !is_const && !program.maybe_defined(name) {
            c.error(
                Diagnostic::new(
                    "E0101",
                    format!("no const named `{name}` to sweep"),
                    entry.name.span,
                )
                .label("not a const of the program")
                .hint("a sweep overrides consts; define it with `const`"),
            );
            continue;
        }
        let values: Vec<Scalar> = match &entry.values {
            SweepValues::Range(lo, hi) => {
                let (Some(a), Some(b)) = (
                    c.int_value(lo, "a range bound"),
                    c.int_value(hi, "a range bound"),
                ) else {
                    continue;
                };
                (a..b).map(Scalar::Int).collect()
            }
            SweepValues::List(items) => items.iter().filter_map(|e| c.known_scalar(e)).collect(),
        };
        if name == "seed"
            && let Some((v, why)) = values.iter().find_map(|&v| Some((v, seed_problem(v)?)))
        {
            c.error(
                Diagnostic::new("E0207", format!("`{v}` is not a seed"), entry.span)
                    .label(why)
                    .hint(SEED_HINT),
            );
            continue;
        }
        if values.is_empty() {
            c.error(
                Diagnostic::new(
                    "E0206",
                    format!("the sweep over `{name}` has no values"),
                    entry.span,
                )
                .label("empty"),
            );
            continue;
        }
        let mut next = Vec::new();
        for p in &points {
            for v in &values {
                let mut q = p.clone();
                q.push((name.to_string(), *v));
                next.push(q);
            }
        }
        points = next;
    }
    diags.append(&mut c.diags);
    Sweep { points }
}

/// A loaded file's element type and shape, or why it could not be read.
pub type FileShape = Result<(DType, Shape), String>;

/// Shapes of `load`ed files, read once per check.
#[derive(Default)]
struct FileShapes {
    cache: std::cell::RefCell<HashMap<PathBuf, FileShape>>,
}

impl FileShapes {
    fn get(&self, path: &Path) -> FileShape {
        if let Some(r) = self.cache.borrow().get(path) {
            return r.clone();
        }
        let r = read_file_shape(path);
        self.cache
            .borrow_mut()
            .insert(path.to_path_buf(), r.clone());
        r
    }
}

/// The dtype and shape of a `.npy` or `.csv` file (section 6.5).
pub fn read_file_shape(path: &Path) -> FileShape {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    match ext {
        "npy" => {
            // The header alone, checked against the file's length.
            let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
            let len = file.metadata().map_err(|e| e.to_string())?.len();
            let header = crate::data::npy_header(&mut std::io::BufReader::new(file), len)?;
            match header.kind.as_str() {
                "f8" | "f4" | "b1" => Ok((DType::Float, header.shape)),
                _ => Ok((DType::Int, header.shape)),
            }
        }
        "csv" => {
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_path(path)
                .map_err(|e| e.to_string())?;
            let mut rows = 0usize;
            let mut cols = None;
            let mut all_int = true;
            for (i, rec) in reader.records().enumerate() {
                let rec = rec.map_err(|e| e.to_string())?;
                let cells: Vec<&str> = rec.iter().map(str::trim).collect();
                let parsed: Vec<Option<Scalar>> = cells.iter().map(|c| Scalar::parse(c)).collect();
                if parsed.iter().any(Option::is_none) {
                    if i == 0 {
                        continue; // a header line
                    }
                    return Err(format!("line {} has a cell that is not a number", i + 1));
                }
                all_int &= parsed.iter().all(|p| matches!(p, Some(Scalar::Int(_))));
                match cols {
                    None => cols = Some(cells.len()),
                    Some(c) if c != cells.len() => {
                        return Err(format!(
                            "line {} has {} cells, earlier lines {c}",
                            i + 1,
                            cells.len()
                        ));
                    }
                    _ => {}
                }
                rows += 1;
            }
            let dtype = if all_int { DType::Int } else { DType::Float };
            Ok(match cols {
                None => (DType::Float, vec![0]),
                Some(1) => (dtype, vec![rows]),
                Some(c) => (dtype, vec![rows, c]),
            })
        }
        _ => Err("only .npy and .csv files can be loaded".into()),
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

    fn const_item(&mut self, d: &'p Def) -> Option<Val> {
        let name = d.name.name.as_str();
        let v = self.eval(&d.value);
        let forced_float = self.float_consts.contains(name);
        if let Some(o) = self.overrides.get(name).copied() {
            // The override decides the value; the default must still be well formed.
            let o = if forced_float {
                Scalar::Float(o.as_f64())
            } else {
                o
            };
            return Some(Val::scalar(o));
        }
        let v = v?;
        if !v.shape.is_empty() {
            self.error(
                Diagnostic::new(
                    "E0303",
                    format!("const `{name}` must be a scalar"),
                    d.value.span,
                )
                .label(format!("this is {}", v.describe()))
                .hint("a tensor computed once belongs in a `data` item"),
            );
            return None;
        }
        self.forbid(v.deps.param, "a const", "param", d.name.span, "E0401");
        self.forbid(
            v.deps.step,
            "a const",
            "per-step value",
            d.name.span,
            "E0404",
        );
        self.forbid(
            v.deps.random,
            "a const",
            "random draw",
            d.name.span,
            "E0407",
        );
        let known = v.known.map(|k| {
            if forced_float {
                Scalar::Float(k.as_f64())
            } else {
                k
            }
        });
        if name == "seed"
            && let Some(k) = known
            && let Some(why) = seed_problem(k)
        {
            self.error(
                Diagnostic::new("E0207", format!("`{k}` is not a seed"), d.value.span)
                    .label(why)
                    .hint(SEED_HINT),
            );
            return None;
        }
        let dtype = if forced_float { DType::Float } else { v.dtype };
        Some(Val {
            dtype,
            shape: vec![],
            known,
            deps: Deps::default(),
        })
    }

    /// Reports `what` (found at `at`) where it may not appear.
    fn forbid(
        &mut self,
        at: Option<Span>,
        place: &str,
        what: &str,
        item: Span,
        code: &'static str,
    ) {
        if let Some(span) = at {
            let hint = match code {
                "E0401" => {
                    "a param changes during training; only lets, the loss, records and `stop when` may use it"
                }
                "E0404" => {
                    "batches and samples are drawn anew every step; data is computed once, before training"
                }
                "E0407" => "random draws belong in `data`, `param` initializers and `sample` items",
                _ => "observables are for records, `stop when`, consts and the REPL",
            };
            let article = if what.starts_with(['a', 'e', 'i', 'o', 'u']) {
                "an"
            } else {
                "a"
            };
            self.error(
                Diagnostic::new(code, format!("{place} may not use {article} {what}"), span)
                    .label(format!("{article} {what}"))
                    .related(item, format!("in {place}"))
                    .hint(hint),
            );
        }
    }

    fn data_item(&mut self, d: &'p Def) -> Option<Val> {
        let v = self.eval(&d.value)?;
        self.forbid(v.deps.param, "data", "param", d.name.span, "E0401");
        self.forbid(v.deps.step, "data", "batch or sample", d.name.span, "E0404");
        Some(Val {
            deps: Deps::default(),
            known: None,
            ..v
        })
    }

    fn sample_item(&mut self, d: &'p Def) -> Option<Val> {
        let v = self.eval(&d.value)?;
        self.forbid(v.deps.param, "a sample", "param", d.name.span, "E0401");
        Some(Val {
            dtype: v.dtype,
            shape: v.shape,
            known: None,
            deps: Deps::default(),
        })
    }

    fn let_item(&mut self, d: &'p Def) -> Option<Val> {
        let v = self.eval(&d.value)?;
        self.forbid(v.deps.random, "a let", "random draw", d.name.span, "E0407");
        // Reported here once, not again wherever the let is used.
        let deps = Deps {
            random: None,
            ..v.deps
        };
        Some(Val { deps, ..v })
    }

    fn param_item(&mut self, p: &'p ParamItem) -> Option<Val> {
        let mut shape = Vec::new();
        let mut ok = true;
        for e in &p.shape {
            match self.int_value(e, "a shape") {
                Some(n) if n >= 0 => shape.push(n as usize),
                Some(n) => {
                    self.error(
                        Diagnostic::new("E0305", format!("negative dimension {n}"), e.span)
                            .label("dimensions are at least 0"),
                    );
                    ok = false;
                }
                None => ok = false,
            }
        }
        if ok && self.holdable(&shape, p.shape_span).is_none() {
            ok = false;
        }
        match &p.init {
            ParamInit::Value(e) => {
                if let Some(v) = self.eval(e) {
                    self.forbid(
                        v.deps.step,
                        "a param initializer",
                        "batch or sample",
                        p.name.span,
                        "E0404",
                    );
                    if ok && broadcast(&v.shape, &shape).as_deref() != Some(&shape[..]) {
                        self.error(
                            Diagnostic::new(
                                "E0304",
                                format!(
                                    "the initial value of `{}` has shape {}, not {}",
                                    p.name.name,
                                    show_shape(&v.shape),
                                    show_shape(&shape)
                                ),
                                e.span,
                            )
                            .label(format!("this is {}", show_shape(&v.shape)))
                            .related(p.shape_span, format!("declared {}", show_shape(&shape)))
                            .hint("the initializer must have the declared shape (a scalar broadcasts)"),
                        );
                    }
                }
            }
            ParamInit::Dist(e) => self.distribution(e, ok.then_some(&shape[..]), &p.name),
        }
        ok.then(|| Val::tensor(DType::Float, shape, Deps::default()))
    }

    fn distribution(&mut self, e: &'p Expr, shape: Option<&[usize]>, param: &Ident) {
        let (name, span, args): (&str, Span, &'p [Arg]) = match &e.kind {
            ExprKind::Name(n) => (n.as_str(), e.span, &[]),
            ExprKind::Call { callee, args } => (callee.name.as_str(), callee.span, args.as_slice()),
            _ => ("", e.span, &[]),
        };
        let Some(sig) = builtins::distribution(name) else {
            self.error(
                Diagnostic::new("E0412", "not a distribution", span)
                    .label("expected a distribution")
                    .hint("`~` takes normal(mean, std), uniform(lo, hi), zeros, ones, constant(c), orthogonal(scale = s) or identity(scale = s); use `=` for any other expression"),
            );
            return;
        };
        let Some(bound) = self.bind(name, &sig, args, span) else {
            return;
        };
        for (_, e) in bound.slots.iter().filter_map(|(n, e)| e.map(|e| (n, e))) {
            if let Some(v) = self.eval(e) {
                self.forbid(v.deps.param, "a distribution", "param", param.span, "E0401");
                if !v.shape.is_empty() {
                    self.error(
                        Diagnostic::new("E0303", "distribution arguments are scalars", e.span)
                            .label(format!("this is {}", v.describe())),
                    );
                }
            }
        }
        if matches!(name, "orthogonal" | "identity")
            && let Some(shape) = shape
            && !(2..=3).contains(&shape.len())
        {
            self.error(
                Diagnostic::new(
                    "E0307",
                    format!("`{name}` needs a matrix or a stack of matrices"),
                    span,
                )
                .label(format!("`{}` is {}", param.name, show_shape(shape)))
                .hint("declare the param as [m, n] or [k, m, n]"),
            );
        }
    }

    fn batch_item(&mut self, b: &'p BatchItem, pos: usize) -> Option<Val> {
        if b.names.len() != b.sources.len() {
            self.error(
                Diagnostic::new(
                    "E0501",
                    format!(
                        "{} batch names for {} sources",
                        b.names.len(),
                        b.sources.len()
                    ),
                    b.span,
                )
                .label("one name per source")
                .hint("write `batch xb, yb from X, y size 32`"),
            );
            return None;
        }
        let size = self.int_value(&b.size, "a batch size")?;
        let mut rows: Option<(usize, Span)> = None;
        let mut out = None;
        for (i, src) in b.sources.iter().enumerate() {
            let sym = self.prog.lookup(&src.name);
            if sym.map(|s| s.kind) != Some(SymKind::Data) {
                if sym.is_none() {
                    self.undefined(&src.name, src.span);
                } else {
                    self.error(
                        Diagnostic::new("E0104", format!("`{}` is not data", src.name), src.span)
                            .label("batches are drawn from data")
                            .hint("batch sources are `data` items sharing their first dimension"),
                    );
                }
                return None;
            }
            let v = self.item_val(&src.name, src.span)?;
            let Some(&n) = v.shape.first() else {
                self.error(
                    Diagnostic::new(
                        "E0307",
                        format!("`{}` has no rows to draw", src.name),
                        src.span,
                    )
                    .label("a scalar"),
                );
                return None;
            };
            match rows {
                Some((m, prev)) if m != n => {
                    self.error(
                        Diagnostic::new(
                            "E0311",
                            "batch sources differ in their number of rows",
                            src.span,
                        )
                        .label(format!("{n} rows"))
                        .related(prev, format!("{m} rows")),
                    );
                    return None;
                }
                _ => rows = Some((n, src.span)),
            }
            if i == pos {
                let mut shape = vec![size.max(0) as usize];
                shape.extend_from_slice(&v.shape[1..]);
                out = Some(Val::tensor(v.dtype, shape, Deps::default()));
            }
        }
        if let Some((n, _)) = rows
            && (size < 1 || (b.shuffle && size as usize > n))
        {
            self.error(
                Diagnostic::new(
                    "E0311",
                    format!("batch size {size} for {n} rows"),
                    b.size.span,
                )
                .label(if size < 1 {
                    "at least 1"
                } else {
                    "more rows than there are"
                })
                .hint("`shuffle` draws without replacement, so size can be at most the row count"),
            );
            return None;
        }
        out
    }

    fn check_loss(&mut self, l: &'p LossItem) {
        self.memo.insert("loss".into(), Memo::Visiting);
        self.stack.push(("loss".into(), l.span));
        let v = self.eval(&l.value);
        self.stack.pop();
        self.memo.insert("loss".into(), Memo::Done(None));
        let Some(v) = v else { return };
        if !v.shape.is_empty() {
            self.error(
                Diagnostic::new("E0303", "the loss must be a scalar", l.value.span)
                    .label(format!("this is {}", v.describe()))
                    .hint("reduce it, e.g. with `sum(...)` or `mean(...)`"),
            );
        }
        let at = Span {
            end: l.span.start + 4,
            ..l.span
        };
        self.forbid(v.deps.observable, "the loss", "observable", at, "E0402");
        self.forbid(v.deps.random, "the loss", "random draw", at, "E0407");
    }

    // ------------------------------------------------------------ optimizers and train

    fn optimizer_names(
        &self,
        param_shape: &[usize],
        nparams: i64,
        deps: Deps,
    ) -> HashMap<String, Val> {
        let p = Val::tensor(DType::Float, param_shape.to_vec(), deps);
        let mut scope = HashMap::new();
        scope.insert("param".to_string(), p.clone());
        scope.insert("grad".to_string(), p.clone());
        scope.insert("noise".to_string(), p);
        scope.extend(self.hyper_names(nparams));
        scope
    }

    /// `t`, `loss`, `gnorm`, `nparams`: what hyperparameters may use.
    fn hyper_names(&self, nparams: i64) -> HashMap<String, Val> {
        let f = Val::tensor(DType::Float, vec![], Deps::default());
        let mut scope = HashMap::new();
        scope.insert(
            "t".to_string(),
            Val::tensor(DType::Int, vec![], Deps::default()),
        );
        scope.insert("loss".to_string(), f.clone());
        scope.insert("gnorm".to_string(), f);
        scope.insert("nparams".to_string(), Val::scalar(Scalar::Int(nparams)));
        scope
    }

    /// An optimizer definition on its own, with unknown scalar hyperparameters and an
    /// arbitrary param shape: its body is elementwise, so this checks names and kinds.
    fn check_optimizer_alone(&mut self, o: &'p OptimizerItem) {
        let mut hyper = HashMap::new();
        for p in &o.params {
            if hyper.contains_key(&p.name.name) {
                self.error(
                    Diagnostic::new(
                        "E0102",
                        format!("parameter `{}` is listed twice", p.name.name),
                        p.name.span,
                    )
                    .label("second time"),
                );
            }
            let v = match &p.default {
                Some(d) => self
                    .eval(d)
                    .unwrap_or_else(|| Val::tensor(DType::Float, vec![], Deps::default())),
                None => Val::tensor(DType::Float, vec![], Deps::default()),
            };
            hyper.insert(p.name.name.clone(), v);
        }
        self.optimizer_body(o, hyper, &[3, 2], 6);
    }

    fn optimizer_body(
        &mut self,
        o: &'p OptimizerItem,
        hyper: HashMap<String, Val>,
        shape: &[usize],
        nparams: i64,
    ) {
        let saved = std::mem::take(&mut self.scopes);
        let saved_place = std::mem::replace(&mut self.place, Place::Optimizer);
        let mut base = self.optimizer_names(shape, nparams, Deps::default());
        base.extend(hyper);
        self.scopes.push(base);
        let mut states: HashMap<String, Span> = HashMap::new();
        for stmt in &o.body {
            match stmt {
                OptStmt::State(d) => {
                    // `zeros` and `ones` alone mean tensors shaped as the param.
                    let mut init = HashMap::new();
                    for n in ["zeros", "ones"] {
                        init.insert(
                            n.to_string(),
                            Val::tensor(DType::Float, shape.to_vec(), Deps::default()),
                        );
                    }
                    self.scopes.push(init);
                    let v = self.eval(&d.value);
                    self.scopes.pop();
                    if let Some(prev) = states.get(&d.name.name) {
                        self.error(
                            Diagnostic::new(
                                "E0102",
                                format!("state `{}` is defined twice", d.name.name),
                                d.name.span,
                            )
                            .label("second definition")
                            .related(*prev, "first defined here"),
                        );
                    }
                    if let Some(v) = v {
                        self.fits(&v, shape, &d.value, &format!("state `{}`", d.name.name));
                    }
                    states.insert(d.name.name.clone(), d.name.span);
                    self.bind_local(
                        &d.name.name,
                        Val::tensor(DType::Float, shape.to_vec(), Deps::default()),
                    );
                }
                OptStmt::Let(d) => {
                    if let Some(v) = self.eval(&d.value) {
                        self.bind_local(&d.name.name, v);
                    }
                }
                OptStmt::Assign(d) => {
                    let name = d.name.name.as_str();
                    let v = self.eval(&d.value);
                    if name == "grad" {
                        self.error(
                            Diagnostic::new("E0403", "`grad` cannot be assigned", d.name.span)
                                .label("the gradient is given to the rule, not set by it")
                                .hint("compute a new value with `let g = ...` and use that"),
                        );
                    } else if !states.contains_key(name) {
                        self.error(
                            Diagnostic::new(
                                "E0410",
                                format!("`{name}` is not a state"),
                                d.name.span,
                            )
                            .label("only states can be given new values")
                            .hint(format!(
                                "declare it first with `state {name} = zeros`, or use `let`"
                            )),
                        );
                    } else if let Some(v) = v {
                        self.fits(&v, shape, &d.value, &format!("state `{name}`"));
                    }
                }
                OptStmt::Param { value, .. } => {
                    if let Some(v) = self.eval(value) {
                        self.fits(&v, shape, value, "the param");
                    }
                }
            }
        }
        self.scopes = saved;
        self.place = saved_place;
    }

    /// A new value for a param or state must broadcast to its shape.
    fn fits(&mut self, v: &Val, shape: &[usize], e: &Expr, what: &str) {
        if broadcast(&v.shape, shape).as_deref() != Some(shape) {
            self.error(
                Diagnostic::new(
                    "E0301",
                    format!(
                        "{what} has shape {}, but this is {}",
                        show_shape(shape),
                        show_shape(&v.shape)
                    ),
                    e.span,
                )
                .label(format!("this is {}", show_shape(&v.shape))),
            );
        }
    }

    fn check_train(&mut self, t: &'p TrainItem) {
        let prog = self.prog;
        if prog.lookup("loss").is_none() && !prog.maybe_defined("loss") {
            self.error(
                Diagnostic::new(
                    "E0409",
                    "the program trains but has no loss",
                    Span {
                        end: t.span.start + 5,
                        ..t.span
                    },
                )
                .label("a train block needs a loss")
                .hint("add `loss = ...` at top level"),
            );
        }
        let mut params: Vec<(&str, Span)> = prog
            .symbols
            .iter()
            .filter(|(_, s)| s.kind == SymKind::Param)
            .map(|(n, s)| (n.as_str(), s.span))
            .collect();
        params.sort_by_key(|(_, s)| *s);
        let nparams: i64 = params
            .iter()
            .filter_map(|(n, s)| self.item_val(n, *s))
            .map(|v| v.shape.iter().product::<usize>() as i64)
            .sum();
        let mut governed: HashMap<String, Span> = HashMap::new();
        let mut default: Option<Span> = None;
        let mut steps: Option<Span> = None;
        let mut recorded: HashMap<String, Span> = HashMap::new();
        let mut rules: Vec<(&'p TrainOptimizer, Vec<String>)> = Vec::new();
        let flow = self.check_flow(t);
        for clause in &t.clauses {
            match clause {
                Clause::Optimizer(o) => {
                    if o.targets.is_empty() {
                        if let Some(prev) = default {
                            self.error(
                                Diagnostic::new("E0405", "two default optimizer rules", o.span)
                                    .label("second default rule")
                                    .related(prev, "first default rule")
                                    .hint("name the params each rule is for: `optimizer gd(lr = 0.1) for W`"),
                            );
                        }
                        default = Some(o.span);
                    }
                    let mut names = Vec::new();
                    for target in &o.targets {
                        match prog.lookup(&target.name).map(|s| s.kind) {
                            Some(SymKind::Param) => {}
                            None => {
                                self.undefined(&target.name, target.span);
                                continue;
                            }
                            Some(k) => {
                                self.error(
                                    Diagnostic::new(
                                        "E0104",
                                        format!(
                                            "`{}` is a {}, not a param",
                                            target.name,
                                            k.describe()
                                        ),
                                        target.span,
                                    )
                                    .label("optimizer rules are for params"),
                                );
                                continue;
                            }
                        }
                        if let Some(prev) = governed.insert(target.name.clone(), target.span) {
                            self.error(
                                Diagnostic::new(
                                    "E0405",
                                    format!("param `{}` is given two rules", target.name),
                                    target.span,
                                )
                                .label("second rule")
                                .related(prev, "first rule")
                                .hint("each param has one optimizer rule"),
                            );
                        }
                        names.push(target.name.clone());
                    }
                    rules.push((o, names));
                }
                Clause::Steps(e, span) => {
                    if let Some(prev) = steps {
                        self.error(
                            Diagnostic::new("E0102", "`steps` is given twice", *span)
                                .label("second")
                                .related(prev, "first"),
                        );
                    }
                    steps = Some(*span);
                    if let Some(n) = self.int_value(e, "a step count")
                        && n < 0
                    {
                        self.error(
                            Diagnostic::new("E0305", format!("negative step count {n}"), e.span)
                                .label("at least 0"),
                        );
                    }
                }
                Clause::StopWhen(e, _) => {
                    if let Some(v) = self.eval(e)
                        && !v.shape.is_empty()
                    {
                        self.error(
                            Diagnostic::new(
                                "E0303",
                                "`stop when` needs a scalar condition",
                                e.span,
                            )
                            .label(format!("this is {}", v.describe()))
                            .hint("reduce it, e.g. `max(...) < 1e-6`"),
                        );
                    }
                }
                Clause::Time(..) => {}
                Clause::Record(r) => {
                    // A flow's `record every` counts time (`check_flow`).
                    if (!flow || r.kind == RecordKind::Log)
                        && let Some(n) = self.int_value(&r.count, "a record count")
                        && n < 1
                    {
                        self.error(
                            Diagnostic::new("E0305", format!("record count {n}"), r.count.span)
                                .label("at least 1"),
                        );
                    }
                    for entry in &r.entries {
                        if let Some(prev) = recorded.insert(entry.name.clone(), entry.name_span) {
                            self.error(
                                Diagnostic::new(
                                    "E0102",
                                    format!("`{}` is recorded twice", entry.name),
                                    entry.name_span,
                                )
                                .label("second entry")
                                .related(prev, "first entry")
                                .hint("give one of them another name: `name = expr`"),
                            );
                        }
                        self.eval(&entry.value);
                    }
                }
            }
        }
        if default.is_none() {
            for (name, span) in &params {
                if !governed.contains_key(*name) {
                    self.error(
                        Diagnostic::new("E0406", format!("param `{name}` has no optimizer rule"), *span)
                            .label("not trained by any rule")
                            .related(Span { end: t.span.start + 5, ..t.span }, "in this train block")
                            .hint(format!("add `optimizer gd(lr = 0.1)` as a default, or `optimizer none for {name}` to freeze it")),
                    );
                }
            }
        }
        for (o, names) in rules {
            let targets: Vec<(&str, Span)> = if o.targets.is_empty() {
                params
                    .iter()
                    .filter(|(n, _)| !governed.contains_key(*n))
                    .copied()
                    .collect()
            } else {
                names
                    .iter()
                    .filter_map(|n| params.iter().find(|(p, _)| p == n).copied())
                    .collect()
            };
            self.train_rule(o, &targets, nparams);
        }
    }

    fn train_rule(&mut self, o: &'p TrainOptimizer, targets: &[(&str, Span)], nparams: i64) {
        if o.rule.name == flow::FLOW {
            return;
        }
        if o.rule.name == "none" {
            if o.args_span.is_some() {
                self.error(
                    Diagnostic::new(
                        "E0501",
                        "`none` takes no arguments",
                        o.args_span.unwrap_or(o.rule.span),
                    )
                    .label("remove these"),
                );
            }
            return;
        }
        let prog = self.prog;
        let rule = match prog.lookup(&o.rule.name) {
            Some(s) if s.kind == SymKind::Optimizer => match &prog.items[s.item] {
                Item::Optimizer(rule) => rule,
                _ => return,
            },
            Some(s) => {
                self.error(
                    Diagnostic::new(
                        "E0104",
                        format!(
                            "`{}` is a {}, not an optimizer",
                            o.rule.name,
                            s.kind.describe()
                        ),
                        o.rule.span,
                    )
                    .label("expected an optimizer rule")
                    .related(s.span, "defined here"),
                );
                return;
            }
            None => {
                self.undefined(&o.rule.name, o.rule.span);
                return;
            }
        };
        let names: Vec<&str> = rule.params.iter().map(|p| p.name.name.as_str()).collect();
        let required = rule
            .params
            .iter()
            .take_while(|p| p.default.is_none())
            .count();
        let args: Vec<&'p Arg> = o.args.iter().collect();
        let Some(slots) = self.bind_named(
            &o.rule.name,
            &names,
            required,
            &args,
            o.args_span.unwrap_or(o.rule.span),
        ) else {
            return;
        };
        // Hyperparameters: consts, `t`, `loss`, `gnorm`, `nparams`.
        let saved = std::mem::take(&mut self.scopes);
        let saved_place = std::mem::replace(&mut self.place, Place::Hyper);
        self.scopes.push(self.hyper_names(nparams));
        let mut hyper = HashMap::new();
        for (p, slot) in rule.params.iter().zip(&slots) {
            let e = match slot {
                Some(e) => *e,
                None => match &p.default {
                    Some(d) => d,
                    None => continue,
                },
            };
            if let Some(v) = self.eval(e) {
                hyper.insert(p.name.name.clone(), v);
            }
        }
        self.scopes = saved;
        self.place = saved_place;
        if hyper.len() < rule.params.len() {
            return;
        }
        let mut done: Vec<Shape> = Vec::new();
        for (name, span) in targets {
            if let Some(v) = self.item_val(name, *span)
                && !done.contains(&v.shape)
            {
                self.optimizer_body(rule, hyper.clone(), &v.shape, nparams);
                done.push(v.shape);
            }
        }
    }

    // ------------------------------------------------------------ functions

    /// Static pass over every `fn`: names that resolve nowhere and recursion (a call cycle),
    /// whether or not the function is ever called.
    fn check_functions(&mut self) {
        let prog = self.prog;
        let mut calls: HashMap<&str, Vec<(String, Span)>> = HashMap::new();
        for item in &prog.items {
            if let Item::Fn(f) = item {
                let mut locals: Vec<String> =
                    f.params.iter().map(|p| p.name.name.clone()).collect();
                let mut out = Vec::new();
                for p in &f.params {
                    if let Some(d) = &p.default {
                        self.walk_names(d, &mut locals, &mut out);
                    }
                }
                let mut seen: HashMap<&str, Span> = HashMap::new();
                for p in &f.params {
                    if let Some(prev) = seen.insert(&p.name.name, p.name.span) {
                        self.error(
                            Diagnostic::new(
                                "E0102",
                                format!("parameter `{}` is listed twice", p.name.name),
                                p.name.span,
                            )
                            .label("second time")
                            .related(prev, "first time"),
                        );
                    }
                }
                for l in &f.lets {
                    self.walk_names(&l.value, &mut locals, &mut out);
                    locals.push(l.name.name.clone());
                }
                self.walk_names(&f.body, &mut locals, &mut out);
                calls.insert(&f.name.name, out);
            }
        }
        // A call on a cycle of the call graph is recursion: a call of itself, or of a
        // function in the same strongly connected component.
        let component = strong_components(&calls);
        let mut reported = HashSet::new();
        let mut names: Vec<&str> = calls.keys().copied().collect();
        names.sort();
        for f in names {
            for (callee, span) in &calls[f] {
                let same = callee == f
                    || component
                        .get(callee.as_str())
                        .is_some_and(|c| *c == component[f]);
                if same && reported.insert(*span) {
                    let def = self.prog.lookup(callee).map(|s| s.span).unwrap_or(*span);
                    self.error(
                        Diagnostic::new("E0601", format!("`{callee}` calls itself"), *span)
                            .label("recursive call")
                            .related(def, format!("`{callee}` is defined here"))
                            .hint("functions are inlined at every call, so they cannot recurse"),
                    );
                }
            }
        }
    }

    /// Reports names in `e` that resolve nowhere; collects calls of program functions.
    fn walk_names(&mut self, e: &Expr, locals: &mut Vec<String>, calls: &mut Vec<(String, Span)>) {
        match &e.kind {
            ExprKind::Name(n) => {
                let known = locals.contains(n)
                    || self.prog.lookup(n).is_some()
                    || builtins::builtin_value(n)
                    || n == "seed"
                    || builtins::signature(n).is_some();
                if !known {
                    self.undefined(n, e.span);
                }
            }
            ExprKind::Call { callee, args } => {
                match self.prog.lookup(&callee.name) {
                    Some(s) if s.kind == SymKind::Fn => {
                        calls.push((callee.name.clone(), callee.span))
                    }
                    Some(_) => {}
                    None if builtins::signature(&callee.name).is_some() => {}
                    None => self.undefined(&callee.name, callee.span),
                }
                for a in args {
                    self.walk_names(&a.value, locals, calls);
                }
            }
            ExprKind::Comprehension { body, var, lo, hi } => {
                self.walk_names(lo, locals, calls);
                self.walk_names(hi, locals, calls);
                locals.push(var.name.clone());
                self.walk_names(body, locals, calls);
                locals.pop();
            }
            _ => for_each_child(e, |c| self.walk_names(c, locals, calls)),
        }
    }

    // ------------------------------------------------------------ names

    fn undefined(&mut self, name: &str, span: Span) {
        if self.prog.maybe_defined(name) {
            return; // defined by an item that did not parse, which is reported
        }
        let mut d =
            Diagnostic::new("E0101", format!("`{name}` is not defined"), span).label("not defined");
        if OPTIMIZER_NAMES.contains(&name) {
            d = d.hint(format!(
                "`{name}` exists only inside an optimizer rule{}",
                if name == "grad" {
                    "; in a record, use `grad(p)`"
                } else {
                    ""
                }
            ));
        } else if let Some(module) = super::modules::std_module_defining(name) {
            d = d.hint(format!("`use std.{module}` defines it"));
        } else if let Some(s) = self.suggest(name) {
            d = d.hint(format!("did you mean `{s}`?"));
        }
        self.error(d);
    }

    fn suggest(&self, name: &str) -> Option<String> {
        let mut candidates: Vec<String> = self.prog.symbols.keys().cloned().collect();
        candidates.extend(self.prog.prelude.keys().cloned());
        candidates.extend(builtins::all_names().into_iter().map(String::from));
        for s in &self.scopes {
            candidates.extend(s.keys().cloned());
        }
        candidates
            .into_iter()
            .filter(|c| c != name)
            .map(|c| (edit_distance(name, &c), c))
            .filter(|(d, c)| *d <= 2.min(c.chars().count() / 2).max(1))
            .min()
            .map(|(_, c)| c)
    }

    fn bind_local(&mut self, name: &str, v: Val) {
        if let Some(scope) = self.scopes.last_mut() {
            scope.insert(name.to_string(), v);
        }
    }

    fn name(&mut self, name: &str, span: Span) -> Option<Val> {
        for scope in self.scopes.iter().rev() {
            if let Some(v) = scope.get(name) {
                let mut v = v.clone();
                match name {
                    "param" | "grad" | "loss" | "gnorm" if self.place != Place::Item => {
                        v.deps.param = v.deps.param.or(Some(span))
                    }
                    "t" => v.deps.step = Some(span),
                    _ => {}
                }
                return Some(v);
            }
        }
        if self.place == Place::Hyper && matches!(name, "param" | "grad" | "noise") {
            self.error(
                Diagnostic::new(
                    "E0408",
                    format!("a hyperparameter may not use `{name}`"),
                    span,
                )
                .label("not available here")
                .hint("hyperparameters are expressions of consts, `t`, `loss` and `gnorm`"),
            );
            return None;
        }
        let Some(sym) = self.prog.lookup(name) else {
            return self.builtin_name(name, span);
        };
        match sym.kind {
            SymKind::Const | SymKind::Data => {
                let v = self.item_val(name, span)?;
                Some(Val {
                    deps: Deps::default(),
                    ..v
                })
            }
            SymKind::Param => {
                let v = self.item_val(name, span)?;
                Some(Val {
                    deps: Deps {
                        param: Some(span),
                        ..Deps::default()
                    },
                    ..v
                })
            }
            SymKind::Sample | SymKind::BatchVar(_) => {
                let v = self.item_val(name, span)?;
                Some(Val {
                    deps: Deps {
                        step: Some(span),
                        ..Deps::default()
                    },
                    ..v
                })
            }
            SymKind::Let => self.item_val(name, span),
            SymKind::Loss => {
                if matches!(self.memo.get("loss"), Some(Memo::Visiting)) {
                    self.error(
                        Diagnostic::new("E0602", "the loss uses itself", span)
                            .label("`loss` here")
                            .related(sym.span, "the loss is defined here"),
                    );
                    return None;
                }
                Some(Val::tensor(
                    DType::Float,
                    vec![],
                    Deps {
                        param: Some(span),
                        ..Deps::default()
                    },
                ))
            }
            SymKind::Fn | SymKind::Optimizer => {
                self.error(
                    Diagnostic::new(
                        "E0104",
                        format!("`{name}` is a {}, not a value", sym.kind.describe()),
                        span,
                    )
                    .label("call it with arguments")
                    .related(sym.span, "defined here"),
                );
                None
            }
        }
    }

    fn builtin_name(&mut self, name: &str, span: Span) -> Option<Val> {
        let obs = Deps {
            observable: Some(span),
            param: Some(span),
            ..Deps::default()
        };
        match name {
            "inf" => Some(Val::scalar(Scalar::Float(f64::INFINITY))),
            "pi" => Some(Val::scalar(Scalar::Float(std::f64::consts::PI))),
            "seed" => self.item_val("seed", span),
            "gnorm" | "sharpness" => Some(Val::tensor(DType::Float, vec![], obs)),
            "step" => Some(Val::tensor(
                DType::Int,
                vec![],
                Deps {
                    observable: Some(span),
                    step: Some(span),
                    ..Deps::default()
                },
            )),
            _ if OPTIMIZER_NAMES.contains(&name) => {
                self.undefined(name, span);
                None
            }
            _ if builtins::signature(name).is_some() => {
                self.error(
                    Diagnostic::new(
                        "E0104",
                        format!("`{name}` is a builtin function, not a value"),
                        span,
                    )
                    .label("call it with arguments"),
                );
                None
            }
            _ => {
                self.undefined(name, span);
                None
            }
        }
    }

    // ------------------------------------------------------------ compile-time values

    /// A compile-time int: a shape, an index, a range bound, a count.
    fn int_value(&mut self, e: &'p Expr, what: &str) -> Option<i64> {
        let v = self.eval(e)?;
        self.int_of(&v, e.span, what)
    }

    fn int_of(&mut self, v: &Val, span: Span, what: &str) -> Option<i64> {
        if !v.shape.is_empty() {
            self.error(
                Diagnostic::new("E0303", format!("{what} must be a scalar"), span)
                    .label(format!("this is {}", v.describe())),
            );
            return None;
        }
        if v.dtype == DType::Float {
            self.error(
                Diagnostic::new("E0201", format!("{what} must be an int, not a float"), span)
                    .label(match v.known {
                        Some(k) => format!("this is the float {k}"),
                        None => "this is a float".to_string(),
                    })
                    .hint("shapes, indices and ranges take ints: `n // 2` divides ints (`n / 2` is a float)"),
            );
            return None;
        }
        match v.known {
            Some(Scalar::Int(n)) => Some(n),
            _ => {
                self.error(
                    Diagnostic::new(
                        "E0206",
                        format!("{what} must be known at compile time"),
                        span,
                    )
                    .label("this depends on values computed later")
                    .hint("use consts, literals and `shape(x, k)`"),
                );
                None
            }
        }
    }

    /// A compile-time scalar (a sweep value).
    fn known_scalar(&mut self, e: &'p Expr) -> Option<Scalar> {
        let v = self.eval(e)?;
        if v.shape.is_empty()
            && let Some(k) = v.known
        {
            return Some(k);
        }
        self.error(
            Diagnostic::new(
                "E0206",
                "a sweep value must be a scalar known at compile time",
                e.span,
            )
            .label(format!("this is {}", v.describe())),
        );
        None
    }

    // ------------------------------------------------------------ expressions

    /// The checked value of `e`; a value too large to hold is an error at `e`.
    fn eval(&mut self, e: &'p Expr) -> Option<Val> {
        let v = self.eval_expr(e)?;
        self.holdable(&v.shape, e.span)?;
        Some(v)
    }

    /// Reports a shape whose entries this machine cannot hold (`types::too_large`) at
    /// `span`, returning `None` then.
    fn holdable(&mut self, shape: &[usize], span: Span) -> Option<()> {
        let Some(why) = too_large(entries(shape), memory_bytes()) else {
            return Some(());
        };
        self.error(
            Diagnostic::new(
                "E0312",
                format!("a value of shape {} is too large", show_shape(shape)),
                span,
            )
            .label(why)
            .hint("every value is held in memory as 8-byte floats: use smaller dimensions"),
        );
        None
    }

    fn eval_expr(&mut self, e: &'p Expr) -> Option<Val> {
        match &e.kind {
            ExprKind::Int(v) => Some(Val::scalar(Scalar::Int(*v))),
            ExprKind::Float(v) => Some(Val::scalar(Scalar::Float(*v))),
            ExprKind::Str(_) => {
                self.error(
                    Diagnostic::new("E0205", "a string is not a value", e.span)
                        .label("strings are file paths")
                        .hint(
                            "strings appear only in `load(\"file.npy\")` and `use \"file.traj\"`",
                        ),
                );
                None
            }
            ExprKind::Name(n) => self.name(n, e.span),
            ExprKind::Call { callee, args } => self.call(callee, args, e.span),
            ExprKind::Unary(op, x) => {
                let v = self.eval(x)?;
                let known = match (op, v.known) {
                    (UnOp::Neg, Some(Scalar::Int(i))) => {
                        let Some(negated) = i.checked_neg() else {
                            self.error(int_overflow(e.span));
                            return None;
                        };
                        Some(Scalar::Int(negated))
                    }
                    (UnOp::Neg, Some(Scalar::Float(f))) => Some(Scalar::Float(-f)),
                    (UnOp::Not, Some(k)) => {
                        Some(Scalar::Float(if k.as_f64() == 0.0 { 1.0 } else { 0.0 }))
                    }
                    _ => None,
                };
                let dtype = if *op == UnOp::Not {
                    DType::Float
                } else {
                    v.dtype
                };
                Some(Val { dtype, known, ..v })
            }
            ExprKind::Binary(op, a, b) => self.binary(*op, a, b, e.span),
            ExprKind::Transpose(x) => {
                let v = self.eval(x)?;
                if v.shape.len() < 2 {
                    self.error(
                        Diagnostic::new("E0307", "`'` needs at least 2 axes", e.span)
                            .label(format!("this is {}", v.describe()))
                            .hint("`'` swaps the last two axes; a vector has only one"),
                    );
                    return None;
                }
                let mut shape = v.shape.clone();
                let n = shape.len();
                shape.swap(n - 1, n - 2);
                Some(Val {
                    shape,
                    known: None,
                    ..v
                })
            }
            ExprKind::Index(x, items) => self.index(x, items, e.span),
            ExprKind::If(c, a, b) => {
                let (vc, va, vb) = (self.eval(c), self.eval(a), self.eval(b));
                let (vc, va, vb) = (vc?, va?, vb?);
                let ab = self.broadcast2(&va, a.span, &vb, b.span)?;
                let shape = self.broadcast2(
                    &vc,
                    c.span,
                    &Val {
                        shape: ab,
                        ..va.clone()
                    },
                    a.span.to(b.span),
                )?;
                let known = match vc.known {
                    Some(k) if k.as_f64() != 0.0 => va.known,
                    Some(_) => vb.known,
                    None => None,
                }
                .filter(|_| shape.is_empty());
                Some(Val {
                    dtype: va.dtype.promote(vb.dtype),
                    shape,
                    known,
                    deps: vc.deps.or(va.deps).or(vb.deps),
                })
            }
            ExprKind::List(_) | ExprKind::Comprehension { .. } => {
                let vals = self.list(e)?;
                self.stack(&vals, e.span)
            }
        }
    }

    fn broadcast2(&mut self, a: &Val, sa: Span, b: &Val, sb: Span) -> Option<Shape> {
        let r = broadcast(&a.shape, &b.shape);
        if r.is_none() {
            self.error(
                Diagnostic::new(
                    "E0301",
                    format!("shapes {} and {} do not broadcast", show_shape(&a.shape), show_shape(&b.shape)),
                    sa,
                )
                .label(format!("this is {}", show_shape(&a.shape)))
                .related(sb, format!("this is {}", show_shape(&b.shape)))
                .hint("elementwise operations broadcast as NumPy does: trailing dimensions must be equal or 1"),
            );
        }
        r
    }

    fn binary(&mut self, op: BinOp, a: &'p Expr, b: &'p Expr, span: Span) -> Option<Val> {
        let (va, vb) = (self.eval(a), self.eval(b));
        let (va, vb) = (va?, vb?);
        let deps = va.deps.or(vb.deps);
        if op == BinOp::MatMul {
            let Some(shape) = matmul(&va.shape, &vb.shape) else {
                self.error(
                    Diagnostic::new(
                        "E0302",
                        format!("cannot multiply {} by {} with `@`", show_shape(&va.shape), show_shape(&vb.shape)),
                        a.span,
                    )
                    .label(format!("this is {}", show_shape(&va.shape)))
                    .related(b.span, format!("this is {}", show_shape(&vb.shape)))
                    .hint("`@` takes [m,k]@[k,n], [m,k]@[k], [k]@[k,n] or [k]@[k]: the inner dimensions must agree"),
                );
                return None;
            };
            return Some(Val::tensor(va.dtype.promote(vb.dtype), shape, deps));
        }
        let shape = self.broadcast2(&va, a.span, &vb, b.span)?;
        let both_int = va.dtype == DType::Int && vb.dtype == DType::Int;
        let dtype = match op {
            BinOp::Div => DType::Float,
            BinOp::Pow => {
                if both_int && matches!(vb.known, Some(Scalar::Int(k)) if k >= 0) {
                    DType::Int
                } else {
                    DType::Float
                }
            }
            _ if op.is_comparison() || matches!(op, BinOp::And | BinOp::Or) => DType::Float,
            _ => va.dtype.promote(vb.dtype),
        };
        if both_int
            && matches!(op, BinOp::FloorDiv | BinOp::Rem)
            && vb.known == Some(Scalar::Int(0))
        {
            self.error(
                Diagnostic::new("E0203", "integer division by zero", b.span)
                    .label("this is 0")
                    .related(span, "in this operation"),
            );
            return None;
        }
        let known = match (va.known, vb.known) {
            (Some(x), Some(y)) => {
                let folded = fold(op, x, y, dtype);
                if folded.is_none() && dtype == DType::Int {
                    self.error(int_overflow(span));
                    return None;
                }
                folded
            }
            _ => None,
        };
        Some(Val {
            dtype,
            shape,
            known,
            deps,
        })
    }

    fn index(&mut self, base: &'p Expr, items: &'p [IndexItem], span: Span) -> Option<Val> {
        let v = self.eval(base)?;
        let mut deps = v.deps;
        if items.len() > v.shape.len() {
            self.error(
                Diagnostic::new(
                    "E0305",
                    format!("{} indices for {} axes", items.len(), v.shape.len()),
                    span,
                )
                .label("too many indices")
                .related(base.span, format!("this is {}", v.describe())),
            );
            return None;
        }
        // Evaluate the positions first: int tensors (or ints not known at compile time)
        // make a gather, compile-time ints and slices a basic index.
        let mut positions = Vec::new();
        for item in items {
            if let IndexItem::At(e) = item {
                let iv = self.eval(e)?;
                if iv.dtype == DType::Float {
                    self.error(
                        Diagnostic::new("E0201", "an index must be an int, not a float", e.span)
                            .label(format!("this is {}", iv.describe()))
                            .hint("`/` always gives a float: use `//` for integer division"),
                    );
                    return None;
                }
                deps = deps.or(iv.deps);
                positions.push(Some((iv, e.span)));
            } else {
                positions.push(None);
            }
        }
        let gather = positions
            .iter()
            .flatten()
            .any(|(iv, _)| !iv.shape.is_empty() || iv.known.is_none());
        if gather {
            let mut idx_shape: Option<(Shape, Span)> = None;
            for (item, pos) in items.iter().zip(&positions) {
                let Some((iv, s)) = pos else {
                    if let IndexItem::Slice(..) = item {
                        self.error(
                            Diagnostic::new("E0310", "a gather cannot be mixed with slices", span)
                                .label("int tensors and slices in one index")
                                .hint("an index list is either basic (ints and slices) or a gather (int tensors of one shape)"),
                        );
                    }
                    return None;
                };
                match &idx_shape {
                    Some((sh, prev)) if *sh != iv.shape => {
                        self.error(
                            Diagnostic::new(
                                "E0310",
                                format!(
                                    "gather indices of shapes {} and {}",
                                    show_shape(sh),
                                    show_shape(&iv.shape)
                                ),
                                *s,
                            )
                            .label(format!("this is {}", show_shape(&iv.shape)))
                            .related(*prev, format!("this is {}", show_shape(sh)))
                            .hint("the int tensors of a gather must have one shape"),
                        );
                        return None;
                    }
                    _ => idx_shape = Some((iv.shape.clone(), *s)),
                }
            }
            let mut shape = idx_shape.map(|(s, _)| s).unwrap_or_default();
            shape.extend_from_slice(&v.shape[items.len()..]);
            return Some(Val::tensor(v.dtype, shape, deps));
        }
        let mut shape = Vec::new();
        for (axis_i, (item, pos)) in items.iter().zip(&positions).enumerate() {
            let dim = v.shape[axis_i];
            match (item, pos) {
                (_, Some((iv, s))) => {
                    let k = iv.known.map(|k| k.as_f64() as i64).unwrap_or(0);
                    let k2 = if k < 0 { k + dim as i64 } else { k };
                    if !(0..dim as i64).contains(&k2) {
                        self.error(
                            Diagnostic::new(
                                "E0305",
                                format!("index {k} is out of range for an axis of length {dim}"),
                                *s,
                            )
                            .label("out of range")
                            .related(base.span, format!("this is {}", v.describe())),
                        );
                        return None;
                    }
                }
                (IndexItem::Slice(lo, hi), None) => {
                    let bound = |e: &'p Option<Expr>,
                                 default: i64,
                                 this: &mut Self|
                     -> Option<(i64, Span)> {
                        match e {
                            None => Some((default, span)),
                            Some(e) => {
                                let k = this.int_value(e, "a slice bound")?;
                                Some((if k < 0 { k + dim as i64 } else { k }, e.span))
                            }
                        }
                    };
                    let (a, sa) = bound(lo, 0, self)?;
                    let (b, sb) = bound(hi, dim as i64, self)?;
                    if a < 0 || b > dim as i64 || a > b {
                        let at = if a < 0 || a > b { sa } else { sb };
                        self.error(
                            Diagnostic::new(
                                "E0305",
                                format!(
                                    "slice {a}:{b} is out of range for an axis of length {dim}"
                                ),
                                at,
                            )
                            .label("out of range")
                            .related(base.span, format!("this is {}", v.describe())),
                        );
                        return None;
                    }
                    shape.push((b - a) as usize);
                }
                _ => return None,
            }
        }
        shape.extend_from_slice(&v.shape[items.len()..]);
        Some(Val::tensor(v.dtype, shape, deps))
    }

    /// The elements of a list literal or comprehension.
    fn list(&mut self, e: &'p Expr) -> Option<Vec<Val>> {
        match &e.kind {
            ExprKind::List(items) => {
                let vals: Vec<Option<Val>> = items.iter().map(|x| self.eval(x)).collect();
                vals.into_iter().collect()
            }
            ExprKind::Comprehension { body, var, lo, hi } => {
                let a = self.int_value(lo, "a range bound");
                let b = self.int_value(hi, "a range bound");
                let (a, b) = (a?, b?);
                if b <= a {
                    self.error(
                        Diagnostic::new(
                            "E0305",
                            format!("the range {a}..{b} is empty"),
                            lo.span.to(hi.span),
                        )
                        .label("no elements")
                        .hint("`a..b` runs from a up to b − 1"),
                    );
                    return None;
                }
                let count = b.checked_sub(a).filter(|n| *n <= MAX_COMPREHENSION);
                let Some(count) = count else {
                    self.error(
                        Diagnostic::new(
                            "E0312",
                            format!("the range {a}..{b} is too long for a comprehension"),
                            lo.span.to(hi.span),
                        )
                        .label(format!("more than {MAX_COMPREHENSION} elements"))
                        .hint("each element is a separate expression: compute whole tensors instead (`arange(n)`, broadcasting)"),
                    );
                    return None;
                };
                // Check the body at the first and last index (shapes may not depend on it).
                let mut vals = Vec::new();
                for i in [a, b - 1] {
                    self.scopes.push(HashMap::from([(
                        var.name.clone(),
                        Val::scalar(Scalar::Int(i)),
                    )]));
                    let v = self.eval(body);
                    self.scopes.pop();
                    vals.push(v?);
                    if a == b - 1 {
                        break;
                    }
                }
                let first = vals[0].clone();
                if vals.len() == 2 && vals[1].shape != first.shape {
                    self.error(
                        Diagnostic::new(
                            "E0309",
                            format!(
                                "the elements differ in shape: {} at {a}, {} at {}",
                                show_shape(&first.shape),
                                show_shape(&vals[1].shape),
                                b - 1
                            ),
                            body.span,
                        )
                        .label("shape depends on the index"),
                    );
                    return None;
                }
                let mut deps = first.deps;
                for v in &vals {
                    deps = deps.or(v.deps);
                }
                let dtype = vals.iter().fold(first.dtype, |d, v| d.promote(v.dtype));
                Some(vec![
                    Val {
                        dtype,
                        known: None,
                        deps,
                        ..first
                    };
                    count as usize
                ])
            }
            _ => {
                let v = self.eval(e)?;
                self.error(
                    Diagnostic::new("E0309", "expected a list", e.span)
                        .label(format!("this is {}", v.describe()))
                        .hint("write `[a, b]` or `[f(i) for i in 0..n]`"),
                );
                None
            }
        }
    }

    fn stack(&mut self, vals: &[Val], span: Span) -> Option<Val> {
        let Some(first) = vals.first() else {
            return Some(Val::tensor(DType::Float, vec![0], Deps::default()));
        };
        let mut deps = Deps::default();
        let mut dtype = first.dtype;
        for v in vals {
            if v.shape != first.shape {
                self.error(
                    Diagnostic::new(
                        "E0309",
                        format!(
                            "list elements differ in shape: {} and {}",
                            show_shape(&first.shape),
                            show_shape(&v.shape)
                        ),
                        span,
                    )
                    .label("elements of one shape are needed")
                    .hint("array literals need rows of equal length"),
                );
                return None;
            }
            deps = deps.or(v.deps);
            dtype = dtype.promote(v.dtype);
        }
        let mut shape = vec![vals.len()];
        shape.extend_from_slice(&first.shape);
        Some(Val::tensor(dtype, shape, deps))
    }

    // ------------------------------------------------------------ calls

    fn call(&mut self, callee: &'p Ident, args: &'p [Arg], span: Span) -> Option<Val> {
        let name = callee.name.as_str();
        let local = self.scopes.iter().any(|s| s.contains_key(name));
        if local {
            self.error(
                Diagnostic::new(
                    "E0104",
                    format!("`{name}` is a value, not a function"),
                    callee.span,
                )
                .label("cannot be called"),
            );
            return None;
        }
        let prog = self.prog;
        match prog.lookup(name) {
            Some(sym) if sym.kind == SymKind::Fn => {
                let Item::Fn(f) = &prog.items[sym.item] else {
                    return None;
                };
                self.call_fn(f, args, span)
            }
            Some(sym) => {
                self.error(
                    Diagnostic::new(
                        "E0104",
                        format!("`{name}` is a {}, not a function", sym.kind.describe()),
                        callee.span,
                    )
                    .label("cannot be called")
                    .related(sym.span, "defined here"),
                );
                None
            }
            None => match builtins::signature(name) {
                Some(sig) => self.builtin(name, sig, args, span),
                None => {
                    self.undefined(name, callee.span);
                    None
                }
            },
        }
    }

    fn call_fn(&mut self, f: &'p FnItem, args: &'p [Arg], span: Span) -> Option<Val> {
        let name = &f.name.name;
        if self.calls.iter().any(|(n, _)| n == name) || self.calls.len() > 64 {
            return None; // recursion: reported by `check_functions`
        }
        let names: Vec<&str> = f.params.iter().map(|p| p.name.name.as_str()).collect();
        let required = f.params.iter().take_while(|p| p.default.is_none()).count();
        let args: Vec<&'p Arg> = args.iter().collect();
        let slots = self.bind_named(name, &names, required, &args, span)?;
        let mut scope = HashMap::new();
        let mut ok = true;
        for (p, slot) in f.params.iter().zip(&slots) {
            match slot {
                Some(e) => match self.eval(e) {
                    Some(v) => {
                        scope.insert(p.name.name.clone(), v);
                    }
                    None => ok = false,
                },
                None if p.default.is_none() => {
                    self.error(
                        Diagnostic::new(
                            "E0501",
                            format!("`{name}` needs the argument `{}`", p.name.name),
                            span,
                        )
                        .label("missing argument")
                        .related(p.name.span, "declared here"),
                    );
                    ok = false;
                }
                None => {}
            }
        }
        if !ok {
            return None;
        }
        let saved = std::mem::take(&mut self.scopes);
        self.calls.push((name.clone(), span));
        self.scopes.push(scope);
        // Defaults see the arguments before them.
        for p in &f.params {
            if !self.scopes[0].contains_key(&p.name.name)
                && let Some(d) = &p.default
                && let Some(v) = self.eval(d)
            {
                self.bind_local(&p.name.name, v);
            }
        }
        let out = self.checked_body(f);
        self.calls.pop();
        self.scopes = saved;
        out
    }

    /// [`Self::fn_body`], checked once per distinct binding of the parameters: `fn g(x) =
    /// f(x) + f(x)` nested 40 deep would otherwise be checked 2^40 times.
    fn checked_body(&mut self, f: &'p FnItem) -> Option<Val> {
        let key = (f.name.name.clone(), self.place, self.scopes[0].clone());
        if let Some((_, out)) = self.fn_results.iter().find(|(k, _)| *k == key) {
            return out.clone();
        }
        let out = self.fn_body(f);
        self.fn_results.push((key, out.clone()));
        out
    }

    /// A function's lets and body, in the scope its parameters are bound in.
    fn fn_body(&mut self, f: &'p FnItem) -> Option<Val> {
        let mut ok = true;
        for l in &f.lets {
            match self.eval(&l.value) {
                Some(v) => self.bind_local(&l.name.name, v),
                None => ok = false,
            }
        }
        if ok { self.eval(&f.body) } else { None }
    }

    /// Binds call arguments to parameter names: positionally, then by keyword. Reports
    /// too many, unknown, repeated and missing (the first `required`) arguments.
    fn bind_named(
        &mut self,
        callee: &str,
        names: &[&str],
        required: usize,
        args: &[&'p Arg],
        span: Span,
    ) -> Option<Vec<Option<&'p Expr>>> {
        let mut slots: Vec<Option<&'p Expr>> = vec![None; names.len()];
        let mut ok = true;
        let mut positional = 0;
        for a in args {
            match &a.name {
                None => {
                    if positional >= names.len() {
                        self.error(
                            Diagnostic::new(
                                "E0501",
                                format!(
                                    "`{callee}` takes {} argument{}, more given",
                                    names.len(),
                                    plural(names.len())
                                ),
                                a.value.span,
                            )
                            .label("one too many")
                            .related(span, "in this call")
                            .hint(format!("`{callee}({})`", names.join(", "))),
                        );
                        ok = false;
                        break;
                    }
                    slots[positional] = Some(&a.value);
                    positional += 1;
                }
                Some(k) => match names.iter().position(|n| *n == k.name) {
                    None => {
                        self.error(
                            Diagnostic::new(
                                "E0502",
                                format!("`{callee}` has no argument `{}`", k.name),
                                k.span,
                            )
                            .label("unknown keyword")
                            .hint(format!("`{callee}` takes: {}", names.join(", "))),
                        );
                        ok = false;
                    }
                    Some(i) if slots[i].is_some() => {
                        self.error(
                            Diagnostic::new(
                                "E0503",
                                format!("`{}` is given twice", k.name),
                                k.span,
                            )
                            .label("given again")
                            .related(span, "in this call"),
                        );
                        ok = false;
                    }
                    Some(i) => slots[i] = Some(&a.value),
                },
            }
        }
        if ok && let Some(missing) = (0..required).find(|i| slots[*i].is_none()) {
            self.error(
                Diagnostic::new(
                    "E0501",
                    format!("`{callee}` needs the argument `{}`", names[missing]),
                    span,
                )
                .label("missing argument")
                .hint(format!("`{callee}({})`", names.join(", "))),
            );
            ok = false;
        }
        ok.then_some(slots)
    }

    fn bind(
        &mut self,
        callee: &str,
        sig: &builtins::Signature,
        args: &'p [Arg],
        span: Span,
    ) -> Option<Bound<'p>> {
        let positional = args.iter().filter(|a| a.name.is_none()).count();
        let fixed = sig.required.len() + sig.optional.len();
        let mut names: Vec<&str> = sig.required.iter().chain(sig.optional).copied().collect();
        // Variadic dims: extra positional arguments.
        let mut rest = Vec::new();
        let (head, extra): (Vec<&'p Arg>, Vec<&'p Arg>) = if sig.variadic && positional > fixed {
            let mut seen = 0;
            args.iter().partition(|a| {
                if a.name.is_none() {
                    seen += 1;
                    seen <= fixed
                } else {
                    true
                }
            })
        } else {
            (args.iter().collect(), Vec::new())
        };
        for a in extra {
            rest.push(&a.value);
        }
        let positional_count = names.len();
        names.extend(sig.kw_only);
        // Keyword-only names cannot be filled positionally.
        let head_positional = head.iter().filter(|a| a.name.is_none()).count();
        if head_positional > positional_count {
            let a = head
                .iter()
                .filter(|a| a.name.is_none())
                .nth(positional_count)
                .map(|a| a.value.span)
                .unwrap_or(span);
            self.error(
                Diagnostic::new(
                    "E0501",
                    format!("`{callee}` takes {positional_count} positional argument{}, {head_positional} given", plural(positional_count)),
                    a,
                )
                .label("one too many")
                .related(span, "in this call")
                .hint(signature_hint(callee, sig)),
            );
            return None;
        }
        let slots = self.bind_named(callee, &names, sig.required.len(), &head, span)?;
        Some(Bound {
            slots: names
                .into_iter()
                .zip(slots)
                .map(|(n, s)| (n.to_string(), s))
                .collect(),
            rest,
        })
    }
}

struct Bound<'p> {
    slots: Vec<(String, Option<&'p Expr>)>,
    rest: Vec<&'p Expr>,
}

impl<'p> Bound<'p> {
    fn get(&self, name: &str) -> Option<&'p Expr> {
        self.slots
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, e)| *e)
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn signature_hint(callee: &str, sig: &builtins::Signature) -> String {
    let mut parts: Vec<String> = sig.required.iter().map(|s| s.to_string()).collect();
    parts.extend(sig.optional.iter().map(|s| format!("[{s}]")));
    if sig.variadic {
        parts.push("dims...".into());
    }
    parts.extend(sig.kw_only.iter().map(|s| format!("{s} = ...")));
    format!("`{callee}({})`", parts.join(", "))
}

/// Folds an operator over two compile-time scalars; `None` on overflow.
fn fold(op: BinOp, x: Scalar, y: Scalar, dtype: DType) -> Option<Scalar> {
    use Scalar::{Float, Int};
    let b = |c: bool| Some(Float(if c { 1.0 } else { 0.0 }));
    let (fx, fy) = (x.as_f64(), y.as_f64());
    match (op, x, y) {
        (BinOp::Add, Int(a), Int(c)) => a.checked_add(c).map(Int),
        (BinOp::Sub, Int(a), Int(c)) => a.checked_sub(c).map(Int),
        (BinOp::Mul, Int(a), Int(c)) => a.checked_mul(c).map(Int),
        (BinOp::FloorDiv, Int(a), Int(c)) if c != 0 => floor_div(a, c).map(Int),
        (BinOp::Rem, Int(a), Int(c)) if c != 0 => floor_div(a, c)
            .and_then(|q| a.checked_sub(c.checked_mul(q)?))
            .map(Int),
        (BinOp::Pow, Int(a), Int(c)) if dtype == DType::Int => match (a, u32::try_from(c)) {
            (_, Ok(c)) => a.checked_pow(c).map(Int),
            (0 | 1, Err(_)) => Some(Int(a)),
            (-1, Err(_)) => Some(Int(if c % 2 == 0 { 1 } else { -1 })),
            _ => None,
        },
        (BinOp::Add, ..) => Some(Float(fx + fy)),
        (BinOp::Sub, ..) => Some(Float(fx - fy)),
        (BinOp::Mul, ..) => Some(Float(fx * fy)),
        (BinOp::Div, ..) => Some(Float(fx / fy)),
        (BinOp::FloorDiv, ..) => Some(Float((fx / fy).floor())),
        (BinOp::Rem, ..) => Some(Float(fx - fy * (fx / fy).floor())),
        (BinOp::Pow, ..) => Some(Float(crate::interp::math::pow(fx, fy))),
        (BinOp::Lt, ..) => b(fx < fy),
        (BinOp::Le, ..) => b(fx <= fy),
        (BinOp::Gt, ..) => b(fx > fy),
        (BinOp::Ge, ..) => b(fx >= fy),
        (BinOp::Eq, ..) => b(fx == fy),
        (BinOp::Ne, ..) => b(fx != fy),
        (BinOp::And, ..) => b(fx != 0.0 && fy != 0.0),
        (BinOp::Or, ..) => b(fx != 0.0 || fy != 0.0),
        (BinOp::MatMul, ..) => None,
    }
}

/// The error for a compile-time int operation whose result does not fit in 64 bits.
fn int_overflow(span: Span) -> Diagnostic {
    Diagnostic::new("E0202", "integer overflow", span)
        .label("the result does not fit in a 64-bit int")
        .hint("compute it as a float, e.g. `2.0^70` instead of `2^70`")
}

/// The strongly connected component of each function of a call graph (Tarjan's
/// algorithm): two functions call each other, directly or not, when theirs are equal.
fn strong_components<'a>(calls: &HashMap<&'a str, Vec<(String, Span)>>) -> HashMap<&'a str, usize> {
    struct Tarjan<'a, 'c> {
        calls: &'c HashMap<&'a str, Vec<(String, Span)>>,
        index: HashMap<&'a str, usize>,
        low: HashMap<&'a str, usize>,
        stack: Vec<&'a str>,
        component: HashMap<&'a str, usize>,
    }
    impl<'a> Tarjan<'a, '_> {
        fn visit(&mut self, f: &'a str) {
            let n = self.index.len();
            self.index.insert(f, n);
            self.low.insert(f, n);
            self.stack.push(f);
            for (callee, _) in &self.calls[f] {
                let Some((&g, _)) = self.calls.get_key_value(callee.as_str()) else {
                    continue;
                };
                if !self.index.contains_key(g) {
                    self.visit(g);
                    let low = self.low[f].min(self.low[g]);
                    self.low.insert(f, low);
                } else if !self.component.contains_key(g) {
                    let low = self.low[f].min(self.index[g]);
                    self.low.insert(f, low);
                }
            }
            if self.low[f] == self.index[f] {
                let id = self.index[f];
                while let Some(g) = self.stack.pop() {
                    self.component.insert(g, id);
                    if g == f {
                        break;
                    }
                }
            }
        }
    }
    let mut t = Tarjan {
        calls,
        index: HashMap::new(),
        low: HashMap::new(),
        stack: Vec::new(),
        component: HashMap::new(),
    };
    let mut names: Vec<&'a str> = calls.keys().copied().collect();
    names.sort();
    for f in names {
        if !t.index.contains_key(f) {
            t.visit(f);
        }
    }
    t.component
}

/// Floor division of ints, as NumPy's `//`; `None` for a zero divisor or an overflow.
fn floor_div(a: i64, b: i64) -> Option<i64> {
    let q = a.checked_div(b)?;
    Some(if (a % b != 0) && ((a < 0) != (b < 0)) {
        q - 1
    } else {
        q
    })
}

/// Calls `f` on each direct sub-expression.
pub fn for_each_child<'e>(e: &'e Expr, mut f: impl FnMut(&'e Expr)) {
    match &e.kind {
        ExprKind::Int(_) | ExprKind::Float(_) | ExprKind::Str(_) | ExprKind::Name(_) => {}
        ExprKind::Call { args, .. } => args.iter().for_each(|a| f(&a.value)),
        ExprKind::Unary(_, x) | ExprKind::Transpose(x) => f(x),
        ExprKind::Binary(_, a, b) => {
            f(a);
            f(b);
        }
        ExprKind::Index(x, items) => {
            f(x);
            for i in items {
                match i {
                    IndexItem::At(e) => f(e),
                    IndexItem::Slice(lo, hi) => {
                        if let Some(lo) = lo {
                            f(lo);
                        }
                        if let Some(hi) = hi {
                            f(hi);
                        }
                    }
                }
            }
        }
        ExprKind::If(c, a, b) => {
            f(c);
            f(a);
            f(b);
        }
        ExprKind::List(v) => v.iter().for_each(f),
        ExprKind::Comprehension { body, lo, hi, .. } => {
            f(lo);
            f(hi);
            f(body);
        }
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Shape rules of the builtins (LANGUAGE.md section 6).
impl<'p> Checker<'p> {
    fn builtin(
        &mut self,
        name: &str,
        sig: builtins::Signature,
        args: &'p [Arg],
        span: Span,
    ) -> Option<Val> {
        let b = self.bind(name, &sig, args, span)?;
        let class_deps = match sig.class {
            Class::Random => Deps {
                random: Some(span),
                ..Deps::default()
            },
            Class::Observable => Deps {
                observable: Some(span),
                ..Deps::default()
            },
            Class::Math | Class::File => Deps::default(),
        };
        let mut out = self.builtin_shape(name, &b, span)?;
        out.deps = out.deps.or(class_deps);
        if sig.class != Class::Math {
            out.known = None;
        }
        Some(out)
    }

    fn arg(&mut self, b: &Bound<'p>, name: &str) -> Option<(Val, Span)> {
        let e = b.get(name)?;
        Some((self.eval(e)?, e.span))
    }

    fn scalar_arg(&mut self, b: &Bound<'p>, name: &str, callee: &str) -> Option<Val> {
        let (v, s) = self.arg(b, name)?;
        if !v.shape.is_empty() {
            self.error(
                Diagnostic::new(
                    "E0303",
                    format!("`{name}` of `{callee}` must be a scalar"),
                    s,
                )
                .label(format!("this is {}", v.describe())),
            );
            return None;
        }
        Some(v)
    }

    /// A compile-time int argument.
    fn int_arg(&mut self, b: &Bound<'p>, name: &str, what: &str) -> Option<i64> {
        let e = b.get(name)?;
        let n = self.int_value(e, what)?;
        if n < 0 {
            self.error(
                Diagnostic::new(
                    "E0305",
                    format!("{what} must be at least 0, not {n}"),
                    e.span,
                )
                .label("negative"),
            );
            return None;
        }
        Some(n)
    }

    /// Dims given as separate ints (`zeros(n, d)`) or as one list (`zeros([n, d])`).
    fn dims(&mut self, b: &Bound<'p>) -> Option<Shape> {
        let exprs: Vec<&'p Expr> = match b.rest.as_slice() {
            [one] => match &one.kind {
                ExprKind::List(items) => items.iter().collect(),
                _ => vec![*one],
            },
            many => many.to_vec(),
        };
        let mut shape = Vec::new();
        for e in exprs {
            let n = self.int_value(e, "a dimension")?;
            if n < 0 {
                self.error(
                    Diagnostic::new("E0305", format!("negative dimension {n}"), e.span)
                        .label("dimensions are at least 0"),
                );
                return None;
            }
            shape.push(n as usize);
        }
        Some(shape)
    }

    fn axis_arg(
        &mut self,
        b: &Bound<'p>,
        rank: usize,
        default: Option<i64>,
    ) -> Option<Option<usize>> {
        let (k, s) = match b.get("axis") {
            Some(e) => (self.int_value(e, "an axis")?, e.span),
            None => match default {
                Some(d) => (d, Span::default()),
                None => return Some(None),
            },
        };
        match axis(k, rank) {
            Some(a) => Some(Some(a)),
            None => {
                self.error(
                    Diagnostic::new(
                        "E0306",
                        format!("axis {k} is out of range for {rank} axes"),
                        s,
                    )
                    .label("no such axis")
                    .hint("axes count from 0; negative ones from the end"),
                );
                None
            }
        }
    }

    fn need_rank(&mut self, v: &Val, s: Span, callee: &str, ok: bool, what: &str) -> Option<()> {
        if ok {
            return Some(());
        }
        self.error(
            Diagnostic::new("E0307", format!("`{callee}` needs {what}"), s)
                .label(format!("this is {}", v.describe())),
        );
        None
    }

    fn builtin_shape(&mut self, name: &str, b: &Bound<'p>, span: Span) -> Option<Val> {
        let float = DType::Float;
        match name {
            n if builtins::UNARY.contains(&n) => {
                let (x, _) = self.arg(b, "x")?;
                let keeps_int = matches!(n, "abs" | "relu" | "square" | "sign");
                let dtype = if keeps_int { x.dtype } else { float };
                let known = x.known.and_then(|k| unary_fold(n, k, dtype));
                if dtype == DType::Int && x.known.is_some() && known.is_none() {
                    self.error(int_overflow(span));
                    return None;
                }
                Some(Val { dtype, known, ..x })
            }
            "max" | "min" if b.get("y").is_some() => {
                if let Some(e) = b.get("axis") {
                    self.error(
                        Diagnostic::new(
                            "E0501",
                            format!("`{name}` of two operands takes no axis"),
                            e.span,
                        )
                        .label("remove this")
                        .hint(format!(
                            "`{name}(a, b)` is elementwise; `{name}(x, axis = k)` reduces"
                        )),
                    );
                    return None;
                }
                self.elementwise(b, &["x", "y"], name)
            }
            "logaddexp" => self.elementwise(b, &["a", "b"], name),
            "clamp" => self.elementwise(b, &["x", "lo", "hi"], name),
            "leaky_relu" => self.elementwise(b, &["x", "slope"], name),
            "sum" | "mean" | "prod" | "logsumexp" | "argmax" | "argmin" | "max" | "min"
            | "norm" => {
                let (x, xs) = self.arg(b, "x")?;
                if name == "norm" && b.get("p").is_some() {
                    self.scalar_arg(b, "p", name)?;
                }
                let ax = self.axis_arg(b, x.shape.len(), None)?;
                if matches!(name, "argmax" | "argmin" | "max" | "min") && x.shape.contains(&0) {
                    self.error(
                        Diagnostic::new("E0307", format!("`{name}` of an empty tensor"), xs)
                            .label(format!("this is {}", x.describe())),
                    );
                    return None;
                }
                let shape = match ax {
                    Some(a) => {
                        let mut s = x.shape.clone();
                        s.remove(a);
                        s
                    }
                    None => vec![],
                };
                let dtype = match name {
                    "sum" | "prod" | "max" | "min" => x.dtype,
                    "argmax" | "argmin" => DType::Int,
                    _ => float,
                };
                let known = if x.shape.is_empty() {
                    match name {
                        "sum" | "prod" | "max" | "min" => x.known,
                        "mean" | "logsumexp" => x.known.map(|k| Scalar::Float(k.as_f64())),
                        "norm" => x.known.map(|k| Scalar::Float(k.as_f64().abs())),
                        _ => Some(Scalar::Int(0)),
                    }
                } else {
                    None
                };
                Some(Val {
                    dtype,
                    shape,
                    known,
                    deps: x.deps,
                })
            }
            "softmax" | "log_softmax" => {
                let (x, xs) = self.arg(b, "x")?;
                self.need_rank(&x, xs, name, !x.shape.is_empty(), "at least one axis")?;
                self.axis_arg(b, x.shape.len(), Some(-1))?;
                Some(Val::tensor(float, x.shape, x.deps))
            }
            "reshape" => {
                let (x, xs) = self.arg(b, "x")?;
                let dims_e = b.get("dims")?;
                let items: Vec<&'p Expr> = match &dims_e.kind {
                    ExprKind::List(items) => items.iter().collect(),
                    _ => vec![dims_e],
                };
                let mut dims = Vec::new();
                for e in items {
                    dims.push((self.int_value(e, "a dimension")?, e.span));
                }
                let size: usize = x.shape.iter().product();
                let free = dims.iter().filter(|(d, _)| *d == -1).count();
                // An overflowing product (-1: never a valid count) is a mismatch.
                let fixed: i64 = dims
                    .iter()
                    .filter(|(d, _)| *d != -1)
                    .try_fold(1i64, |n, (d, _)| n.checked_mul(*d))
                    .unwrap_or(-1);
                if let Some((d, s)) = dims.iter().find(|(d, _)| *d < -1) {
                    self.error(
                        Diagnostic::new("E0308", format!("dimension {d} in reshape"), *s)
                            .label("dimensions are at least 0, or -1 for one inferred"),
                    );
                    return None;
                }
                let shape: Option<Shape> = match free {
                    0 if fixed as usize == size => {
                        Some(dims.iter().map(|(d, _)| *d as usize).collect())
                    }
                    1 if fixed > 0 && size.is_multiple_of(fixed as usize) => Some(
                        dims.iter()
                            .map(|(d, _)| {
                                if *d == -1 {
                                    size / fixed as usize
                                } else {
                                    *d as usize
                                }
                            })
                            .collect(),
                    ),
                    _ => None,
                };
                match shape {
                    Some(shape) => Some(Val::tensor(x.dtype, shape, x.deps)),
                    None => {
                        let shown: Vec<String> = dims.iter().map(|(d, _)| d.to_string()).collect();
                        self.error(
                            Diagnostic::new("E0308", format!("cannot reshape {} ({size} entries) to [{}]", show_shape(&x.shape), shown.join(", ")), dims_e.span)
                                .label("the entry counts differ")
                                .related(xs, format!("this is {}", show_shape(&x.shape)))
                                .hint("reshape keeps every entry: the dimensions' product must be the same"),
                        );
                        None
                    }
                }
            }
            "flat" => {
                let (x, _) = self.arg(b, "x")?;
                Some(Val::tensor(x.dtype, vec![x.shape.iter().product()], x.deps))
            }
            "transpose" => {
                let (x, _) = self.arg(b, "x")?;
                let mut shape = x.shape.clone();
                shape.reverse();
                Some(Val { shape, ..x })
            }
            "stack" => {
                let e = b.get("list")?;
                let vals = self.list(e)?;
                self.stack(&vals, e.span)
            }
            "concat" => {
                let e = b.get("list")?;
                let vals = self.list(e)?;
                let Some(first) = vals.first().cloned() else {
                    self.error(
                        Diagnostic::new("E0309", "`concat` of an empty list", e.span)
                            .label("no elements"),
                    );
                    return None;
                };
                self.need_rank(
                    &first,
                    e.span,
                    name,
                    !first.shape.is_empty(),
                    "tensors with at least one axis",
                )?;
                let ax = match b.get("axis") {
                    Some(a) => {
                        let k = self.int_value(a, "an axis")?;
                        match axis(k, first.shape.len()) {
                            Some(x) => x,
                            None => {
                                self.error(
                                    Diagnostic::new(
                                        "E0306",
                                        format!(
                                            "axis {k} is out of range for {} axes",
                                            first.shape.len()
                                        ),
                                        a.span,
                                    )
                                    .label("no such axis"),
                                );
                                return None;
                            }
                        }
                    }
                    None => 0,
                };
                let mut shape = first.shape.clone();
                shape[ax] = 0;
                let mut deps = Deps::default();
                let mut dtype = first.dtype;
                for v in &vals {
                    let mut a = v.shape.clone();
                    let mut f = first.shape.clone();
                    if a.len() == f.len() {
                        a[ax] = 0;
                        f[ax] = 0;
                    }
                    if a != f {
                        self.error(
                            Diagnostic::new(
                                "E0309",
                                format!(
                                    "cannot concatenate {} and {} along axis {ax}",
                                    show_shape(&first.shape),
                                    show_shape(&v.shape)
                                ),
                                e.span,
                            )
                            .label("all other dimensions must agree"),
                        );
                        return None;
                    }
                    shape[ax] += v.shape[ax];
                    deps = deps.or(v.deps);
                    dtype = dtype.promote(v.dtype);
                }
                Some(Val::tensor(dtype, shape, deps))
            }
            "diag" => {
                let (x, xs) = self.arg(b, "x")?;
                match x.shape.as_slice() {
                    [n] => Some(Val::tensor(x.dtype, vec![*n, *n], x.deps)),
                    [m, n] => Some(Val::tensor(x.dtype, vec![*m.min(n)], x.deps)),
                    _ => {
                        self.need_rank(&x, xs, name, false, "a vector or a matrix")?;
                        None
                    }
                }
            }
            "trace" => {
                let (x, xs) = self.arg(b, "x")?;
                self.need_rank(&x, xs, name, x.shape.len() == 2, "a matrix")?;
                Some(Val::tensor(x.dtype, vec![], x.deps))
            }
            "outer" => {
                let (u, us) = self.arg(b, "u")?;
                let (v, vs) = self.arg(b, "v")?;
                self.need_rank(&u, us, name, u.shape.len() == 1, "vectors")?;
                self.need_rank(&v, vs, name, v.shape.len() == 1, "vectors")?;
                Some(Val::tensor(
                    u.dtype.promote(v.dtype),
                    vec![u.shape[0], v.shape[0]],
                    u.deps.or(v.deps),
                ))
            }
            "matprod" => {
                let (w, ws) = self.arg(b, "Ws")?;
                match w.shape.as_slice() {
                    [1, m, n] => Some(Val::tensor(w.dtype, vec![*m, *n], w.deps)),
                    [l, m, n] if *l >= 1 && m == n => {
                        Some(Val::tensor(w.dtype, vec![*m, *n], w.deps))
                    }
                    _ => {
                        self.error(
                            Diagnostic::new(
                                "E0307",
                                "`matprod` needs a stack of square matrices [L, m, m]",
                                ws,
                            )
                            .label(format!("this is {}", w.describe()))
                            .hint("`matprod(Ws)` is `Ws[L-1] @ ... @ Ws[0]`"),
                        );
                        None
                    }
                }
            }
            "eye" => {
                let n = self.int_arg(b, "n", "a dimension")? as usize;
                Some(Val::tensor(float, vec![n, n], Deps::default()))
            }
            "zeros" | "ones" | "randn" | "rand" => {
                let shape = self.dims(b)?;
                Some(Val::tensor(float, shape, Deps::default()))
            }
            "full" => {
                let c = self.scalar_arg(b, "c", name)?;
                let shape = self.dims(b)?;
                Some(Val::tensor(c.dtype, shape, c.deps))
            }
            "bernoulli" => {
                let p = self.scalar_arg(b, "p", name)?;
                let shape = self.dims(b)?;
                Some(Val::tensor(float, shape, p.deps))
            }
            "randint" => {
                let lo = self.scalar_arg(b, "lo", name)?;
                let hi = self.scalar_arg(b, "hi", name)?;
                for (v, n) in [(&lo, "lo"), (&hi, "hi")] {
                    if v.dtype != DType::Int {
                        let s = b.get(n).map(|e| e.span).unwrap_or(span);
                        self.int_of(v, s, "a bound of `randint`")?;
                    }
                }
                let shape = self.dims(b)?;
                Some(Val::tensor(DType::Int, shape, lo.deps.or(hi.deps)))
            }
            "arange" | "permutation" => {
                let n = self.int_arg(b, "n", "a length")? as usize;
                Some(Val::tensor(DType::Int, vec![n], Deps::default()))
            }
            "choose" => {
                let n = self.int_arg(b, "n", "a count")?;
                let k = self.int_arg(b, "k", "a count")?;
                if k > n {
                    let s = b.get("k").map(|e| e.span).unwrap_or(span);
                    self.error(
                        Diagnostic::new(
                            "E0305",
                            format!("cannot choose {k} distinct ints below {n}"),
                            s,
                        )
                        .label("more than there are"),
                    );
                    return None;
                }
                Some(Val::tensor(DType::Int, vec![k as usize], Deps::default()))
            }
            "orthogonal" => {
                let n = self.int_arg(b, "n", "a dimension")? as usize;
                let m = match b.get("m") {
                    Some(_) => self.int_arg(b, "m", "a dimension")? as usize,
                    None => n,
                };
                Some(Val::tensor(float, vec![n, m], Deps::default()))
            }
            "linspace" => {
                let a = self.scalar_arg(b, "a", name)?;
                let c = self.scalar_arg(b, "b", name)?;
                let n = self.int_arg(b, "n", "a length")? as usize;
                Some(Val::tensor(float, vec![n], a.deps.or(c.deps)))
            }
            "onehot" => {
                let (idx, is) = self.arg(b, "idx")?;
                if idx.dtype != DType::Int {
                    self.error(
                        Diagnostic::new("E0201", "`onehot` needs int indices", is)
                            .label(format!("this is {}", idx.describe())),
                    );
                    return None;
                }
                let k = self.int_arg(b, "k", "a class count")? as usize;
                let mut shape = idx.shape.clone();
                shape.push(k);
                Some(Val::tensor(float, shape, idx.deps))
            }
            "shape" => {
                let (x, _) = self.arg(b, "x")?;
                let ke = b.get("k")?;
                let k = self.int_value(ke, "an axis")?;
                match axis(k, x.shape.len()) {
                    Some(a) => Some(Val::scalar(Scalar::Int(x.shape[a] as i64))),
                    None => {
                        self.error(
                            Diagnostic::new(
                                "E0306",
                                format!("axis {k} is out of range for {} axes", x.shape.len()),
                                ke.span,
                            )
                            .label("no such axis")
                            .related(
                                b.get("x").map(|e| e.span).unwrap_or(span),
                                format!("this is {}", x.describe()),
                            ),
                        );
                        None
                    }
                }
            }
            "load" => {
                let e = b.get("path")?;
                let ExprKind::Str(path) = &e.kind else {
                    self.error(
                        Diagnostic::new("E0205", "`load` takes a file path in quotes", e.span)
                            .label("expected a string")
                            .hint("write `load(\"X.npy\")`"),
                    );
                    return None;
                };
                let full = self.sources.dir_of(e.span.file).join(path);
                match self.files.get(&full) {
                    Ok((dtype, shape)) => Some(Val::tensor(dtype, shape, Deps::default())),
                    Err(msg) => {
                        self.error(
                            Diagnostic::new("E0801", format!("cannot load `{path}`"), e.span)
                                .label(msg)
                                .hint(format!(
                                    "looked for {}; paths are relative to the program's file",
                                    full.display()
                                )),
                        );
                        None
                    }
                }
            }
            "svals" | "eigvals" | "erank" | "nuclear" | "spectral" | "cond" | "rank" => {
                let (a, s) = self.arg(b, "A")?;
                self.need_rank(&a, s, name, a.shape.len() == 2, "a matrix")?;
                if name == "eigvals" && a.shape[0] != a.shape[1] {
                    self.need_rank(&a, s, name, false, "a square (symmetric) matrix")?;
                }
                if b.get("tol").is_some() {
                    self.scalar_arg(b, "tol", name)?;
                }
                let deps = a.deps;
                Some(match name {
                    "svals" | "eigvals" => {
                        Val::tensor(float, vec![a.shape[0].min(a.shape[1])], deps)
                    }
                    "rank" => Val::tensor(DType::Int, vec![], deps),
                    _ => Val::tensor(float, vec![], deps),
                })
            }
            "grad" => {
                // grad(p) or grad(expr, p)
                let (of, p_expr) = match b.get("p") {
                    Some(p) => (b.get("a"), p),
                    None => (None, b.get("a")?),
                };
                let ExprKind::Name(pname) = &p_expr.kind else {
                    self.error(
                        Diagnostic::new(
                            "E0104",
                            "`grad` is taken with respect to a param",
                            p_expr.span,
                        )
                        .label("expected a param's name"),
                    );
                    return None;
                };
                let pv = match self.prog.lookup(pname) {
                    Some(s) if s.kind == SymKind::Param => self.item_val(pname, p_expr.span)?,
                    _ => {
                        self.error(
                            Diagnostic::new(
                                "E0104",
                                format!("`{pname}` is not a param"),
                                p_expr.span,
                            )
                            .label("expected a param's name")
                            .hint(
                                "`grad(p)` is the gradient of the loss with respect to param `p`",
                            ),
                        );
                        return None;
                    }
                };
                let mut deps = Deps {
                    param: Some(span),
                    ..Deps::default()
                };
                if let Some(of) = of {
                    let v = self.eval(of)?;
                    if !v.shape.is_empty() {
                        self.error(
                            Diagnostic::new(
                                "E0303",
                                "`grad(expr, p)` needs a scalar expression",
                                of.span,
                            )
                            .label(format!("this is {}", v.describe())),
                        );
                        return None;
                    }
                    deps = deps.or(v.deps);
                } else if self.prog.lookup("loss").is_none() {
                    if self.prog.maybe_defined("loss") {
                        return None; // the loss did not parse, which is reported
                    }
                    self.error(
                        Diagnostic::new(
                            "E0409",
                            "`grad(p)` is the gradient of the loss, and there is no loss",
                            span,
                        )
                        .label("no loss to differentiate")
                        .hint("define `loss = ...`, or use `grad(expr, p)`"),
                    );
                    return None;
                }
                Some(Val::tensor(float, pv.shape, deps))
            }
            "ntk" => {
                let f = b.get("f")?;
                let (x, xs) = self.arg(b, "X")?;
                self.need_rank(&x, xs, name, !x.shape.is_empty(), "data with rows")?;
                let ExprKind::Name(fname) = &f.kind else {
                    self.error(
                        Diagnostic::new("E0104", "`ntk` needs a function's name", f.span)
                            .label("expected a `fn`"),
                    );
                    return None;
                };
                let prog = self.prog;
                let Some(Item::Fn(func)) = prog
                    .lookup(fname)
                    .filter(|s| s.kind == SymKind::Fn)
                    .map(|s| &prog.items[s.item])
                else {
                    self.error(
                        Diagnostic::new("E0104", format!("`{fname}` is not a function"), f.span)
                            .label("expected a `fn` of one row returning a scalar"),
                    );
                    return None;
                };
                // Apply f to one row to check it returns a scalar.
                let row = Val::tensor(x.dtype, x.shape[1..].to_vec(), x.deps);
                let out = self.apply_to(func, row, span)?;
                if !out.shape.is_empty() {
                    self.error(
                        Diagnostic::new(
                            "E0303",
                            format!("`{fname}` must return a scalar for `ntk`"),
                            f.span,
                        )
                        .label(format!("it returns {} for one row", out.describe())),
                    );
                    return None;
                }
                Some(Val::tensor(
                    float,
                    vec![x.shape[0], x.shape[0]],
                    Deps {
                        param: Some(span),
                        ..x.deps.or(out.deps)
                    },
                ))
            }
            "init" => {
                let (x, _) = self.arg(b, "x")?;
                Some(x)
            }
            _ => None,
        }
    }

    /// Calls a one-parameter function on an already typed value (for `ntk`).
    fn apply_to(&mut self, f: &'p FnItem, arg: Val, span: Span) -> Option<Val> {
        if f.params.len() != 1 {
            self.error(
                Diagnostic::new(
                    "E0501",
                    format!("`{}` must take one argument for `ntk`", f.name.name),
                    span,
                )
                .label(format!("it takes {}", f.params.len()))
                .related(f.name.span, "defined here"),
            );
            return None;
        }
        let saved = std::mem::take(&mut self.scopes);
        self.calls.push((f.name.name.clone(), span));
        self.scopes
            .push(HashMap::from([(f.params[0].name.name.clone(), arg)]));
        let out = self.checked_body(f);
        self.calls.pop();
        self.scopes = saved;
        out
    }

    /// An elementwise builtin of several operands: NumPy broadcasting of all of them.
    fn elementwise(&mut self, b: &Bound<'p>, names: &[&str], callee: &str) -> Option<Val> {
        let mut acc: Option<(Val, Span)> = None;
        let mut vals = Vec::new();
        for n in names {
            let Some(e) = b.get(n) else { continue };
            let v = self.eval(e)?;
            vals.push(v.clone());
            acc = Some(match acc {
                None => (v, e.span),
                Some((a, sa)) => {
                    let shape = self.broadcast2(&a, sa, &v, e.span)?;
                    (
                        Val {
                            dtype: a.dtype.promote(v.dtype),
                            shape,
                            known: None,
                            deps: a.deps.or(v.deps),
                        },
                        sa.to(e.span),
                    )
                }
            });
        }
        let (mut out, _) = acc?;
        let dtype = match callee {
            "max" | "min" | "clamp" => out.dtype,
            _ => DType::Float,
        };
        out.dtype = dtype;
        let knowns: Option<Vec<Scalar>> = vals.iter().map(|v| v.known).collect();
        out.known = knowns.and_then(|k| match (callee, k.as_slice()) {
            ("max", [a, c]) => Some(if a.as_f64() >= c.as_f64() { *a } else { *c }),
            ("min", [a, c]) => Some(if a.as_f64() <= c.as_f64() { *a } else { *c }),
            _ => None,
        });
        Some(out)
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

/// Folds an elementwise function over a compile-time scalar with the interpreter's own
/// functions (`interp::math`), so a const folded here equals the same expression at run
/// time, bit for bit.
fn unary_fold(name: &str, k: Scalar, dtype: DType) -> Option<Scalar> {
    if dtype == DType::Int
        && let Scalar::Int(i) = k
    {
        return match name {
            "abs" => i.checked_abs().map(Scalar::Int),
            "relu" => Some(Scalar::Int(i.max(0))),
            "square" => i.checked_mul(i).map(Scalar::Int),
            "sign" => Some(Scalar::Int(i.signum())),
            _ => None,
        };
    }
    use crate::interp::math;
    let x = k.as_f64();
    let y = match name {
        "exp" => math::exp(x),
        "log" => math::log(x),
        "log1p" => math::log1p(x),
        "sqrt" => math::sqrt(x),
        "abs" => x.abs(),
        "relu" => x.max(0.0),
        "sigmoid" => math::sigmoid(x),
        "tanh" => math::tanh(x),
        "softplus" => math::softplus(x),
        "sin" => math::sin(x),
        "cos" => math::cos(x),
        "square" => x * x,
        "sign" => math::sign(x),
        _ => return None,
    };
    Some(Scalar::Float(y))
}
