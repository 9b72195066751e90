//! Shape rules of the builtins (LANGUAGE.md section 6): one arm a `Builtin`.

use super::fold::{int_overflow, unary_fold};
use super::{Checker, Deps, Val};
use crate::diag::{Diagnostic, Span};
use crate::ir::types::{self, DType, Scalar, axis, show_shape};
use crate::sema::bind::Bound;
use crate::sema::builtins::Builtin;
use crate::sema::modules::SymKind;
use crate::syntax::ast::*;

impl<'p> Checker<'p> {
    pub(super) fn builtin_shape(&mut self, f: Builtin, b: &Bound<'p>, span: Span) -> Option<Val> {
        use Builtin::*;
        let float = DType::Float;
        let name = f.name();
        match f {
            Unary(_) | Piecewise(_) => {
                let (x, _) = self.arg(b, "x")?;
                let keeps_int = match f {
                    Unary(op) => op.row().int.is_some(),
                    _ => true,
                };
                let dtype = if keeps_int { x.dtype } else { float };
                let known = x.known.and_then(|k| unary_fold(f, k, dtype));
                if dtype == DType::Int && x.known.is_some() && known.is_none() {
                    self.error(int_overflow(span));
                    return None;
                }
                Some(Val { dtype, known, ..x })
            }
            Max | Min if b.get("y").is_some() => {
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
                self.elementwise(b, &["x", "y"], f)
            }
            LogAddExp => self.elementwise(b, &["a", "b"], f),
            Clamp => self.elementwise(b, &["x", "lo", "hi"], f),
            LeakyRelu => self.elementwise(b, &["x", "slope"], f),
            Sum | Mean | Prod | LogSumExp | ArgMax | ArgMin | Max | Min | Norm => {
                let (x, xs) = self.arg(b, "x")?;
                if f == Norm && b.get("p").is_some() {
                    self.scalar_arg(b, "p", name)?;
                }
                let ax = self.axis_arg(b, x.shape.len(), None)?;
                if matches!(f, ArgMax | ArgMin | Max | Min) && x.shape.contains(&0) {
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
                let dtype = match f {
                    Sum | Prod | Max | Min => x.dtype,
                    ArgMax | ArgMin => DType::Int,
                    _ => float,
                };
                let known = if x.shape.is_empty() {
                    match f {
                        Sum | Prod | Max | Min => x.known,
                        Mean | LogSumExp => x.known.map(|k| Scalar::Float(k.as_f64())),
                        Norm => x.known.map(|k| Scalar::Float(k.as_f64().abs())),
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
            Softmax | LogSoftmax => {
                let (x, xs) = self.arg(b, "x")?;
                self.need_rank(&x, xs, name, !x.shape.is_empty(), "at least one axis")?;
                self.axis_arg(b, x.shape.len(), Some(-1))?;
                Some(Val::tensor(float, x.shape, x.deps))
            }
            Reshape => {
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
                let shape: Option<types::Shape> = match free {
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
            Flat => {
                let (x, _) = self.arg(b, "x")?;
                Some(Val::tensor(x.dtype, vec![x.shape.iter().product()], x.deps))
            }
            Transpose => {
                let (x, _) = self.arg(b, "x")?;
                let mut shape = x.shape.clone();
                shape.reverse();
                Some(Val { shape, ..x })
            }
            Stack => {
                let e = b.get("list")?;
                let vals = self.list(e)?;
                self.stack(&vals, e.span)
            }
            Concat => {
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
            Diag => {
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
            Trace => {
                let (x, xs) = self.arg(b, "x")?;
                self.need_rank(&x, xs, name, x.shape.len() == 2, "a matrix")?;
                Some(Val::tensor(x.dtype, vec![], x.deps))
            }
            Outer => {
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
            MatProd => {
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
            Eye => {
                let n = self.int_arg(b, "n", "a dimension")? as usize;
                Some(Val::tensor(float, vec![n, n], Deps::default()))
            }
            Zeros | Ones | Randn | Rand => {
                let shape = self.dims(b)?;
                Some(Val::tensor(float, shape, Deps::default()))
            }
            Full => {
                let c = self.scalar_arg(b, "c", name)?;
                let shape = self.dims(b)?;
                Some(Val::tensor(c.dtype, shape, c.deps))
            }
            Bernoulli => {
                let p = self.scalar_arg(b, "p", name)?;
                let shape = self.dims(b)?;
                Some(Val::tensor(float, shape, p.deps))
            }
            RandInt => {
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
            Arange | Permutation => {
                let n = self.int_arg(b, "n", "a length")? as usize;
                Some(Val::tensor(DType::Int, vec![n], Deps::default()))
            }
            Choose => {
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
            Orthogonal => {
                let n = self.int_arg(b, "n", "a dimension")? as usize;
                let m = match b.get("m") {
                    Some(_) => self.int_arg(b, "m", "a dimension")? as usize,
                    None => n,
                };
                Some(Val::tensor(float, vec![n, m], Deps::default()))
            }
            Linspace => {
                let a = self.scalar_arg(b, "a", name)?;
                let c = self.scalar_arg(b, "b", name)?;
                let n = self.int_arg(b, "n", "a length")? as usize;
                Some(Val::tensor(float, vec![n], a.deps.or(c.deps)))
            }
            OneHot => {
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
            Shape => {
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
            Load => {
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
            Svals | Eigvals | Erank | Nuclear | Spectral | Cond | Rank => {
                let (a, s) = self.arg(b, "A")?;
                self.need_rank(&a, s, name, a.shape.len() == 2, "a matrix")?;
                if f == Eigvals && a.shape[0] != a.shape[1] {
                    self.need_rank(&a, s, name, false, "a square (symmetric) matrix")?;
                }
                if b.get("tol").is_some() {
                    self.scalar_arg(b, "tol", name)?;
                }
                let deps = a.deps;
                Some(match f {
                    Svals | Eigvals => Val::tensor(float, vec![a.shape[0].min(a.shape[1])], deps),
                    Rank => Val::tensor(DType::Int, vec![], deps),
                    _ => Val::tensor(float, vec![], deps),
                })
            }
            Grad => {
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
            Ntk => {
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
            Init => {
                let (x, _) = self.arg(b, "x")?;
                Some(x)
            }
        }
    }

    /// An elementwise builtin of several operands: NumPy broadcasting of all of them.
    pub(super) fn elementwise(
        &mut self,
        b: &Bound<'p>,
        names: &[&str],
        callee: Builtin,
    ) -> Option<Val> {
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
            Builtin::Max | Builtin::Min | Builtin::Clamp => out.dtype,
            _ => DType::Float,
        };
        out.dtype = dtype;
        let knowns: Option<Vec<Scalar>> = vals.iter().map(|v| v.known).collect();
        out.known = knowns.and_then(|k| match (callee, k.as_slice()) {
            (Builtin::Max, [a, c]) => Some(if a.as_f64() >= c.as_f64() { *a } else { *c }),
            (Builtin::Min, [a, c]) => Some(if a.as_f64() <= c.as_f64() { *a } else { *c }),
            _ => None,
        });
        Some(out)
    }
}
