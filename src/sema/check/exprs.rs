//! Expressions: operators, indexing, lists and comprehensions, compile-time ints.

use std::collections::HashMap;

use super::fold::{fold, int_overflow};
use super::{Checker, Deps, MAX_COMPREHENSION, Val};
use crate::diag::{Diagnostic, Span};
use crate::ir::types::{
    DType, Scalar, Shape, broadcast, entries, matmul, memory_bytes, show_shape, too_large,
};
use crate::syntax::ast::*;

impl<'p> Checker<'p> {
    /// A compile-time int: a shape, an index, a range bound, a count.
    pub(super) fn int_value(&mut self, e: &'p Expr, what: &str) -> Option<i64> {
        let v = self.eval(e)?;
        self.int_of(&v, e.span, what)
    }

    pub(super) fn int_of(&mut self, v: &Val, span: Span, what: &str) -> Option<i64> {
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
    pub(super) fn known_scalar(&mut self, e: &'p Expr) -> Option<Scalar> {
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
    pub(super) fn eval(&mut self, e: &'p Expr) -> Option<Val> {
        let v = self.eval_expr(e)?;
        self.holdable(&v.shape, e.span)?;
        Some(v)
    }

    /// Reports a shape whose entries this machine cannot hold (`types::too_large`) at
    /// `span`, returning `None` then.
    pub(super) fn holdable(&mut self, shape: &[usize], span: Span) -> Option<()> {
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

    pub(super) fn eval_expr(&mut self, e: &'p Expr) -> Option<Val> {
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

    pub(super) fn broadcast2(&mut self, a: &Val, sa: Span, b: &Val, sb: Span) -> Option<Shape> {
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

    pub(super) fn binary(
        &mut self,
        op: BinOp,
        a: &'p Expr,
        b: &'p Expr,
        span: Span,
    ) -> Option<Val> {
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

    pub(super) fn index(
        &mut self,
        base: &'p Expr,
        items: &'p [IndexItem],
        span: Span,
    ) -> Option<Val> {
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
    pub(super) fn list(&mut self, e: &'p Expr) -> Option<Vec<Val>> {
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

    pub(super) fn stack(&mut self, vals: &[Val], span: Span) -> Option<Val> {
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
}
