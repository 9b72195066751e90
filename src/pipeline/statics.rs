//! Values fixed before training: consts the checker could not fold (those computed from
//! data), data items, loaded files and every param's initial value, each evaluated once
//! by lowering its expression and interpreting it. Items are evaluated in dependency
//! order by retrying those whose inputs are not ready yet (the checker has ruled out cycles).
//! A REPL session keeps what it evaluated between rebuilds (`Kept`, `evaluate_with`).

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use ndarray::{ArrayD, IxDyn};

use crate::diag::SourceMap;
use crate::error::RunError;
use crate::interp::{self, Env};
pub use crate::lower::Statics;
use crate::lower::{Lowerer, const_tensors};
use crate::sema::Checked;
use crate::sema::modules::SymKind;
use crate::syntax::ast::*;
use crate::tensor::Tensor;

/// Evaluates every static value of a checked program.
pub fn evaluate(checked: &Checked, sources: &SourceMap, seed: u64) -> Result<Statics, RunError> {
    evaluate_with(checked, sources, seed, &mut Kept::default())
}

/// What a REPL session keeps between rebuilds of its program: every file `load`ed, by
/// path (read again only after [`Kept::forget`], the session's `:reload`), and
/// every static value with the fingerprint of what it was computed from.
#[derive(Clone, Debug, Default)]
pub struct Kept {
    files: HashMap<PathBuf, Tensor>,
    /// Key in `Statics` → (fingerprint, value).
    values: HashMap<String, (String, Tensor)>,
    /// The keys the last evaluation computed afresh (not taken from here), sorted.
    pub evaluated: Vec<String>,
}

impl Kept {
    /// Nothing kept: the next evaluation reads every file and computes every value.
    pub fn forget(&mut self) {
        self.files.clear();
        self.values.clear();
    }
}

/// [`evaluate`], taking each `load`ed file and each static value from `kept` when what it
/// depends on is unchanged (the item's definition, the definitions and const values it
/// reaches by name, the seed), and keeping what it computes there.
pub fn evaluate_with(
    checked: &Checked,
    sources: &SourceMap,
    seed: u64,
    kept: &mut Kept,
) -> Result<Statics, RunError> {
    let prog = &checked.program;
    let mut statics = Statics {
        values: const_tensors(&checked.consts),
    };
    statics
        .values
        .entry("seed".into())
        .or_insert_with(|| Tensor::Int(ArrayD::from_elem(IxDyn(&[]), seed as i64)));
    load_files(prog, sources, &mut statics, &mut kept.files)?;
    kept.evaluated.clear();
    // Pending items: (key in `statics`, item index).
    let mut pending: Vec<(String, usize)> = Vec::new();
    for (name, sym) in &prog.symbols {
        match sym.kind {
            SymKind::Const if !statics.values.contains_key(name) => {
                pending.push((name.clone(), sym.item))
            }
            SymKind::Data => pending.push((name.clone(), sym.item)),
            SymKind::Param => pending.push((format!("init:{name}"), sym.item)),
            _ => {}
        }
    }
    pending.sort();
    while !pending.is_empty() {
        let mut progress = false;
        let mut still = Vec::new();
        let mut last_error = RunError::new("");
        for (key, item) in pending {
            let print = fingerprint(checked, item, seed);
            if let Some((p, t)) = kept.values.get(&key)
                && *p == print
            {
                statics.values.insert(key, t.clone());
                progress = true;
                continue;
            }
            match evaluate_item(&prog.items[item], &statics, seed, prog) {
                Ok(t) => {
                    kept.values.insert(key.clone(), (print, t.clone()));
                    kept.evaluated.push(key.clone());
                    statics.values.insert(key, t);
                    progress = true;
                }
                Err(e) if e.message.contains("has no value yet") => {
                    last_error = e;
                    still.push((key, item));
                }
                Err(mut e) => {
                    e.message = format!("{key}: {}", e.message);
                    return Err(e);
                }
            }
        }
        if !progress {
            last_error.message = format!("cannot order the static items: {}", last_error.message);
            return Err(last_error);
        }
        pending = still;
    }
    kept.evaluated.sort();
    Ok(statics)
}

/// What item `item`'s static value is computed from: its definition and that of every
/// item it reaches by name (as the AST prints them), the values of the consts among them
/// and the seed. Names are followed without scopes, so a local shadowing a top-level name
/// only adds to what is compared.
fn fingerprint(checked: &Checked, item: usize, seed: u64) -> String {
    let prog = &checked.program;
    let mut seen = BTreeSet::from([item]);
    let mut todo = vec![item];
    let mut consts = BTreeSet::new();
    while let Some(i) = todo.pop() {
        visit_item_exprs(&prog.items[i], &mut |e| {
            let name = match &e.kind {
                ExprKind::Name(n) => n,
                ExprKind::Call { callee, .. } => &callee.name,
                _ => return,
            };
            if let Some(sym) = prog.lookup(name) {
                if sym.kind == SymKind::Const {
                    consts.insert(name.clone());
                }
                if seen.insert(sym.item) {
                    todo.push(sym.item);
                }
            }
        });
    }
    let mut print = format!("seed {seed}\n");
    for name in consts {
        print.push_str(&format!("{name} = {:?}\n", checked.consts.get(&name)));
    }
    for i in seen {
        print.push_str(&format!("{:?}\n", prog.items[i]));
    }
    print
}

/// Every `load("...")` of the program, read once (keyed by file and path).
fn load_files(
    prog: &crate::sema::modules::Program,
    sources: &SourceMap,
    statics: &mut Statics,
    loaded: &mut HashMap<PathBuf, Tensor>,
) -> Result<(), String> {
    let mut paths = Vec::new();
    for item in &prog.items {
        visit_item_exprs(item, &mut |e| {
            if let ExprKind::Call { callee, args } = &e.kind
                && callee.name == "load"
                && let Some(Arg {
                    value:
                        Expr {
                            kind: ExprKind::Str(p),
                            span,
                        },
                    ..
                }) = args.first()
            {
                paths.push((span.file, p.clone()));
            }
        });
    }
    for (file, p) in paths {
        let key = format!("file:{file}:{p}");
        if statics.values.contains_key(&key) {
            continue;
        }
        let full = sources.dir_of(file).join(&p);
        let t = match loaded.get(&full) {
            Some(t) => t.clone(),
            None => {
                let t = crate::data::load(&full)?;
                loaded.insert(full, t.clone());
                t
            }
        };
        statics.values.insert(key, t);
    }
    Ok(())
}

fn evaluate_item(
    item: &Item,
    statics: &Statics,
    seed: u64,
    prog: &crate::sema::modules::Program,
) -> Result<Tensor, RunError> {
    let mut l = Lowerer::new(prog, statics);
    // A param initializer sees other params' initial values.
    l.init_mode = matches!(item, Item::Param(_));
    let v = match item {
        Item::Const(d) | Item::Data(d) => l.item_expr(&d.value, &d.name.name)?,
        Item::Param(p) => param_init(&mut l, p)?,
        _ => return Err("not a static item".into()),
    };
    l.b.output("value", v);
    let f = l.b.finish();
    let out = interp::eval(&f, &[], Env { seed }).map_err(|e| e.message)?;
    let mut t = out.into_iter().next().ok_or("no value")?;
    if let Item::Param(_) = item {
        t = Tensor::Float(t.to_f64());
    }
    Ok(t)
}

/// A param's initial value: `= EXPR` broadcast to the declared shape, or `~ DIST` drawn at
/// it (stream: the param's name).
fn param_init(l: &mut Lowerer, p: &ParamItem) -> Result<usize, RunError> {
    let mut shape = Vec::new();
    for e in &p.shape {
        shape.push(l.known_int(e)? as usize);
    }
    let name = &p.name.name;
    match &p.init {
        ParamInit::Value(e) => {
            let v = l.item_expr(e, name)?;
            let v = l.b.to_float(v);
            Ok(l.b.broadcast(v, &shape))
        }
        ParamInit::Dist(e) => distribution(l, e, name, &shape),
    }
}

fn distribution(
    l: &mut Lowerer,
    e: &Expr,
    stream: &str,
    shape: &[usize],
) -> Result<usize, RunError> {
    use crate::ir::types::DType;
    use crate::ir::{Binary, Draw};
    let (name, args): (&str, &[Arg]) = match &e.kind {
        ExprKind::Name(n) => (n.as_str(), &[]),
        ExprKind::Call { callee, args } => (callee.name.as_str(), args.as_slice()),
        _ => return Err("not a distribution".into()),
    };
    use crate::sema::builtins::Distribution;
    let d = Distribution::named(name).ok_or("not a distribution")?;
    let (bound, problems) = crate::sema::bind::bind_builtin(&d.row().1, args);
    if !problems.is_empty() {
        return Err("arguments the checker refuses".into());
    }
    let arg = |l: &mut Lowerer, k: &str, default: f64| -> Result<usize, RunError> {
        match bound.get(k) {
            Some(e) => {
                let v = l.expr(e)?;
                Ok(l.b.to_float(v))
            }
            None => Ok(l.b.scalar(default)),
        }
    };
    let step = l.b.int_scalar(0);
    Ok(match d {
        Distribution::Normal => {
            let (m, s) = (arg(l, "mean", 0.0)?, arg(l, "std", 1.0)?);
            let z = l.b.random(
                Draw::Normal,
                stream,
                step,
                &[],
                DType::Float,
                shape.to_vec(),
            );
            let zs = l.b.binary(Binary::Mul, z, s);
            l.b.binary(Binary::Add, zs, m)
        }
        Distribution::Uniform => {
            let (lo, hi) = (arg(l, "lo", 0.0)?, arg(l, "hi", 1.0)?);
            let u = l.b.random(
                Draw::Uniform,
                stream,
                step,
                &[],
                DType::Float,
                shape.to_vec(),
            );
            let w = l.b.binary(Binary::Sub, hi, lo);
            let uw = l.b.binary(Binary::Mul, u, w);
            l.b.binary(Binary::Add, uw, lo)
        }
        Distribution::Zeros | Distribution::Ones => {
            let c = l.b.scalar(if d == Distribution::Ones { 1.0 } else { 0.0 });
            l.b.broadcast(c, shape)
        }
        Distribution::Constant => {
            let c = arg(l, "c", 0.0)?;
            l.b.broadcast(c, shape)
        }
        Distribution::Orthogonal | Distribution::Identity => {
            let scale = arg(l, "scale", 1.0)?;
            let (m, n) = (shape[shape.len() - 2], shape[shape.len() - 1]);
            let count = if shape.len() == 3 { shape[0] } else { 1 };
            let mut parts = Vec::new();
            for k in 0..count {
                let one = if d == Distribution::Identity {
                    let t = ArrayD::from_shape_fn(IxDyn(&[m, n]), |i| f64::from(i[0] == i[1]));
                    l.b.constant(Tensor::Float(t))
                } else {
                    let s = if count > 1 {
                        format!("{stream}[{k}]")
                    } else {
                        stream.to_string()
                    };
                    l.b.random(Draw::Orthogonal, &s, step, &[], DType::Float, vec![m, n])
                };
                parts.push(l.b.reshape(one, &[1, m, n]));
            }
            let all = if parts.len() == 1 {
                parts[0]
            } else {
                l.b.concat(&parts, 0)
            };
            let all = l.b.reshape(all, shape);
            l.b.binary(Binary::Mul, all, scale)
        }
    })
}

/// Calls `f` on every expression of an item (not descending into sub-expressions).
fn visit_item_exprs(item: &Item, f: &mut impl FnMut(&Expr)) {
    let mut walk = |e: &Expr| walk_expr(e, f);
    match item {
        Item::Const(d) | Item::Data(d) | Item::Sample(d) | Item::Let(d) => walk(&d.value),
        Item::Param(p) => {
            p.shape.iter().for_each(&mut walk);
            match &p.init {
                ParamInit::Value(e) | ParamInit::Dist(e) => walk(e),
            }
        }
        Item::Fn(func) => {
            func.lets.iter().for_each(|l| walk(&l.value));
            walk(&func.body);
        }
        Item::Loss(l) => walk(&l.value),
        _ => {}
    }
}

fn walk_expr(e: &Expr, f: &mut impl FnMut(&Expr)) {
    f(e);
    crate::sema::check::for_each_child(e, |c| walk_expr(c, f));
}
