//! Values fixed before training: consts the checker could not fold (those computed from
//! data), data items, loaded files and every param's initial value, each evaluated once
//! by lowering its expression and interpreting it. Items are evaluated in dependency
//! order by retrying those whose inputs are not ready yet (the checker has ruled out cycles).

use ndarray::{ArrayD, IxDyn};

use crate::diag::SourceMap;
use crate::interp::{self, Env};
pub use crate::lower::Statics;
use crate::lower::{Lowerer, const_tensors};
use crate::sema::Checked;
use crate::sema::modules::SymKind;
use crate::syntax::ast::*;
use crate::tensor::Tensor;

/// Evaluates every static value of a checked program.
pub fn evaluate(checked: &Checked, sources: &SourceMap, seed: u64) -> Result<Statics, String> {
    let prog = &checked.program;
    let mut statics = Statics {
        values: const_tensors(&checked.consts),
    };
    statics
        .values
        .entry("seed".into())
        .or_insert_with(|| Tensor::Int(ArrayD::from_elem(IxDyn(&[]), seed as i64)));
    load_files(prog, sources, &mut statics)?;
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
        let mut last_error = String::new();
        for (key, item) in pending {
            match evaluate_item(&prog.items[item], &statics, seed, prog) {
                Ok(t) => {
                    statics.values.insert(key, t);
                    progress = true;
                }
                Err(e) if e.contains("has no value yet") => {
                    last_error = e;
                    still.push((key, item));
                }
                Err(e) => return Err(format!("{key}: {e}")),
            }
        }
        if !progress {
            return Err(format!("cannot order the static items: {last_error}"));
        }
        pending = still;
    }
    Ok(statics)
}

/// Every `load("...")` of the program, read once (keyed by file and path).
fn load_files(
    prog: &crate::sema::modules::Program,
    sources: &SourceMap,
    statics: &mut Statics,
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
        let t = crate::data::load(&full)?;
        statics.values.insert(key, t);
    }
    Ok(())
}

fn evaluate_item(
    item: &Item,
    statics: &Statics,
    seed: u64,
    prog: &crate::sema::modules::Program,
) -> Result<Tensor, String> {
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
fn param_init(l: &mut Lowerer, p: &ParamItem) -> Result<usize, String> {
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

fn distribution(l: &mut Lowerer, e: &Expr, stream: &str, shape: &[usize]) -> Result<usize, String> {
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
    let arg = |l: &mut Lowerer, k: &str, default: f64| -> Result<usize, String> {
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
