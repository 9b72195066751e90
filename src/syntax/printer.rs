//! A stable text form of the AST, fully parenthesized so precedence is visible; used by
//! `traj ir --stage ast` and by parser snapshot tests.

use std::fmt::Write as _;

use super::ast::*;

pub fn print_module(module: &Module) -> String {
    let mut out = String::new();
    for item in &module.items {
        print_item(&mut out, item);
    }
    out
}

fn print_item(out: &mut String, item: &Item) {
    match item {
        Item::Use(u) => match &u.target {
            UseTarget::Std(path) => {
                let names: Vec<_> = path.iter().map(|i| i.name.as_str()).collect();
                let _ = writeln!(out, "use {}", names.join("."));
            }
            UseTarget::File(f) => {
                let _ = writeln!(out, "use {f:?}");
            }
        },
        Item::Const(d) => def(out, "const", d),
        Item::Data(d) => def(out, "data", d),
        Item::Sample(d) => def(out, "sample", d),
        Item::Let(d) => def(out, "let", d),
        Item::Param(p) => {
            let shape: Vec<_> = p.shape.iter().map(expr).collect();
            let (sym, e) = match &p.init {
                ParamInit::Value(e) => ("=", e),
                ParamInit::Dist(e) => ("~", e),
            };
            let _ = writeln!(
                out,
                "param {}: [{}] {sym} {}",
                p.name.name,
                shape.join(", "),
                expr(e)
            );
        }
        Item::Fn(f) => {
            let _ = writeln!(out, "fn {}({}) {{", f.name.name, params(&f.params));
            for l in &f.lets {
                let _ = writeln!(out, "  let {} = {}", l.name.name, expr(&l.value));
            }
            let _ = writeln!(out, "  {}\n}}", expr(&f.body));
        }
        Item::Loss(l) => {
            let _ = writeln!(out, "loss = {}", expr(&l.value));
        }
        Item::Batch(b) => {
            let _ = writeln!(
                out,
                "batch {} from {} size {}{}",
                names(&b.names),
                names(&b.sources),
                expr(&b.size),
                if b.shuffle { " shuffle" } else { "" }
            );
        }
        Item::Precision(p) => {
            let _ = writeln!(out, "precision {}", p.name);
        }
        Item::Optimizer(o) => {
            let _ = writeln!(out, "optimizer {}({}) {{", o.name.name, params(&o.params));
            for s in &o.body {
                let line = match s {
                    OptStmt::State(d) => format!("state {} = {}", d.name.name, expr(&d.value)),
                    OptStmt::Let(d) => format!("let {} = {}", d.name.name, expr(&d.value)),
                    OptStmt::Assign(d) => format!("{} = {}", d.name.name, expr(&d.value)),
                    OptStmt::Param { op, value, .. } => {
                        let op = match op {
                            UpdateOp::Set => "=",
                            UpdateOp::Sub => "-=",
                            UpdateOp::Add => "+=",
                        };
                        format!("param {op} {}", expr(value))
                    }
                };
                let _ = writeln!(out, "  {line}");
            }
            let _ = writeln!(out, "}}");
        }
        Item::Train(t) => {
            let _ = writeln!(out, "train {{");
            for c in &t.clauses {
                match c {
                    Clause::Optimizer(o) => {
                        let mut line = format!("  optimizer {}", o.rule.name);
                        if o.args_span.is_some() {
                            let _ = write!(line, "({})", args(&o.args));
                        }
                        if !o.targets.is_empty() {
                            let _ = write!(line, " for {}", names(&o.targets));
                        }
                        let _ = writeln!(out, "{line}");
                    }
                    Clause::Steps(e, _) => {
                        let _ = writeln!(out, "  steps {}", expr(e));
                    }
                    Clause::Time(e, _) => {
                        let _ = writeln!(out, "  time {}", expr(e));
                    }
                    Clause::StopWhen(e, _) => {
                        let _ = writeln!(out, "  stop when {}", expr(e));
                    }
                    Clause::Record(r) => {
                        let kind = match r.kind {
                            RecordKind::Every => "every",
                            RecordKind::Log => "log",
                        };
                        let _ = writeln!(out, "  record {kind} {} {{", expr(&r.count));
                        for e in &r.entries {
                            let _ = writeln!(out, "    {} = {}", e.name, expr(&e.value));
                        }
                        let _ = writeln!(out, "  }}");
                    }
                }
            }
            let _ = writeln!(out, "}}");
        }
        Item::Sweep(s) => {
            let _ = writeln!(out, "sweep {{");
            for e in &s.entries {
                let values = match &e.values {
                    SweepValues::Range(a, b) => format!("{}..{}", expr(a), expr(b)),
                    SweepValues::List(v) => {
                        format!("[{}]", v.iter().map(expr).collect::<Vec<_>>().join(", "))
                    }
                };
                let _ = writeln!(out, "  {} in {values}", e.name.name);
            }
            let _ = writeln!(out, "}}");
        }
    }
}

fn def(out: &mut String, kw: &str, d: &Def) {
    let _ = writeln!(out, "{kw} {} = {}", d.name.name, expr(&d.value));
}

fn names(ids: &[Ident]) -> String {
    ids.iter()
        .map(|i| i.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn params(ps: &[FnParam]) -> String {
    ps.iter()
        .map(|p| match &p.default {
            Some(d) => format!("{} = {}", p.name.name, expr(d)),
            None => p.name.name.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn args(args: &[Arg]) -> String {
    args.iter()
        .map(|a| match &a.name {
            Some(n) => format!("{} = {}", n.name, expr(&a.value)),
            None => expr(&a.value),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One expression, every compound parenthesized.
pub fn expr(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Int(v) => v.to_string(),
        ExprKind::Float(v) => format!("{v:?}"),
        ExprKind::Str(s) => format!("{s:?}"),
        ExprKind::Name(n) => n.clone(),
        ExprKind::Call { callee, args: a } => format!("{}({})", callee.name, args(a)),
        ExprKind::Unary(UnOp::Neg, x) => format!("(-{})", expr(x)),
        ExprKind::Unary(UnOp::Not, x) => format!("(not {})", expr(x)),
        ExprKind::Binary(op, a, b) => format!("({} {} {})", expr(a), op.symbol(), expr(b)),
        ExprKind::Transpose(x) => format!("{}'", expr(x)),
        ExprKind::Index(x, items) => {
            let items: Vec<_> = items
                .iter()
                .map(|i| match i {
                    IndexItem::At(e) => expr(e),
                    IndexItem::Slice(lo, hi) => format!(
                        "{}:{}",
                        lo.as_ref().map(expr).unwrap_or_default(),
                        hi.as_ref().map(expr).unwrap_or_default()
                    ),
                })
                .collect();
            format!("{}[{}]", expr(x), items.join(", "))
        }
        ExprKind::If(c, a, b) => format!("(if {} then {} else {})", expr(c), expr(a), expr(b)),
        ExprKind::List(v) => format!("[{}]", v.iter().map(expr).collect::<Vec<_>>().join(", ")),
        ExprKind::Comprehension { body, var, lo, hi } => format!(
            "[{} for {} in {}..{}]",
            expr(body),
            var.name,
            expr(lo),
            expr(hi)
        ),
    }
}
