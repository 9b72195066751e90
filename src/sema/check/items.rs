//! Top-level items: consts, data, samples, lets, params (with their distributions), batches, the loss.

use super::sweep::{SEED_HINT, seed_problem};
use super::{Checker, Deps, Memo, Val};
use crate::diag::{Diagnostic, Span};
use crate::ir::types::{DType, Scalar, broadcast, show_shape};
use crate::sema::builtins::Distribution;
use crate::sema::modules::SymKind;
use crate::syntax::ast::*;

impl<'p> Checker<'p> {
    pub(super) fn const_item(&mut self, d: &'p Def) -> Option<Val> {
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
    pub(super) fn forbid(
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

    pub(super) fn data_item(&mut self, d: &'p Def) -> Option<Val> {
        let v = self.eval(&d.value)?;
        self.forbid(v.deps.param, "data", "param", d.name.span, "E0401");
        self.forbid(v.deps.step, "data", "batch or sample", d.name.span, "E0404");
        Some(Val {
            deps: Deps::default(),
            known: None,
            ..v
        })
    }

    pub(super) fn sample_item(&mut self, d: &'p Def) -> Option<Val> {
        let v = self.eval(&d.value)?;
        self.forbid(v.deps.param, "a sample", "param", d.name.span, "E0401");
        Some(Val {
            dtype: v.dtype,
            shape: v.shape,
            known: None,
            deps: Deps::default(),
        })
    }

    pub(super) fn let_item(&mut self, d: &'p Def) -> Option<Val> {
        let v = self.eval(&d.value)?;
        self.forbid(v.deps.random, "a let", "random draw", d.name.span, "E0407");
        // Reported here once, not again wherever the let is used.
        let deps = Deps {
            random: None,
            ..v.deps
        };
        Some(Val { deps, ..v })
    }

    pub(super) fn param_item(&mut self, p: &'p ParamItem) -> Option<Val> {
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

    pub(super) fn distribution(&mut self, e: &'p Expr, shape: Option<&[usize]>, param: &Ident) {
        let (name, span, args): (&str, Span, &'p [Arg]) = match &e.kind {
            ExprKind::Name(n) => (n.as_str(), e.span, &[]),
            ExprKind::Call { callee, args } => (callee.name.as_str(), callee.span, args.as_slice()),
            _ => ("", e.span, &[]),
        };
        let Some(dist) = Distribution::named(name) else {
            self.error(
                Diagnostic::new("E0412", "not a distribution", span)
                    .label("expected a distribution")
                    .hint("`~` takes normal(mean, std), uniform(lo, hi), zeros, ones, constant(c), orthogonal(scale = s) or identity(scale = s); use `=` for any other expression"),
            );
            return;
        };
        let Some(bound) = self.bind(name, &dist.row().1, args, span) else {
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
        if matches!(dist, Distribution::Orthogonal | Distribution::Identity)
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

    pub(super) fn batch_item(&mut self, b: &'p BatchItem, pos: usize) -> Option<Val> {
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

    pub(super) fn check_loss(&mut self, l: &'p LossItem) {
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
}
