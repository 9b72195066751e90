//! Calls: of functions (checked once per binding) and builtins, and the reports of their
//! argument binding (`sema::bind`).

use std::collections::HashMap;

use super::{Checker, Deps, Val};
use crate::diag::{Diagnostic, Span};
use crate::ir::types::{Shape, axis};
use crate::sema::bind::{self, Bound, Problem};
use crate::sema::builtins::{self, Builtin, Class};
use crate::sema::modules::SymKind;
use crate::syntax::ast::*;

pub(super) fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

impl<'p> Checker<'p> {
    pub(super) fn call(&mut self, callee: &'p Ident, args: &'p [Arg], span: Span) -> Option<Val> {
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
            None => match Builtin::named(name) {
                Some(f) => self.builtin(f, args, span),
                None => {
                    self.undefined(name, callee.span);
                    None
                }
            },
        }
    }

    pub(super) fn call_fn(&mut self, f: &'p FnItem, args: &'p [Arg], span: Span) -> Option<Val> {
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
    pub(super) fn checked_body(&mut self, f: &'p FnItem) -> Option<Val> {
        let key = (f.name.name.clone(), self.place, self.scopes[0].clone());
        if let Some((_, out)) = self.fn_results.iter().find(|(k, _)| *k == key) {
            return out.clone();
        }
        let out = self.fn_body(f);
        self.fn_results.push((key, out.clone()));
        out
    }

    /// A function's lets and body, in the scope its parameters are bound in.
    pub(super) fn fn_body(&mut self, f: &'p FnItem) -> Option<Val> {
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
    pub(super) fn bind_named(
        &mut self,
        callee: &str,
        names: &[&str],
        required: usize,
        args: &[&'p Arg],
        span: Span,
    ) -> Option<Vec<Option<&'p Expr>>> {
        let (at, problems) = bind::bind(names, args);
        let slots: Vec<Option<&'p Expr>> = at.iter().map(|k| k.map(|k| &args[k].value)).collect();
        self.report_binding(callee, names, None, required, &slots, &problems, span)
            .then_some(slots)
    }

    /// Reports a binding's problems, or else its first missing required argument; whether
    /// it is sound. `sig`: the builtin's, for the hint of a positional problem.
    #[allow(clippy::too_many_arguments)]
    fn report_binding(
        &mut self,
        callee: &str,
        names: &[&str],
        sig: Option<&builtins::Signature>,
        required: usize,
        slots: &[Option<&'p Expr>],
        problems: &[Problem<'p>],
        span: Span,
    ) -> bool {
        for problem in problems {
            let d = match problem {
                Problem::TooMany(a) => Diagnostic::new(
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
                Problem::Unknown(k) => Diagnostic::new(
                    "E0502",
                    format!("`{callee}` has no argument `{}`", k.name),
                    k.span,
                )
                .label("unknown keyword")
                .hint(format!("`{callee}` takes: {}", names.join(", "))),
                Problem::Twice(k) => {
                    Diagnostic::new("E0503", format!("`{}` is given twice", k.name), k.span)
                        .label("given again")
                        .related(span, "in this call")
                }
                // Keyword-only names cannot be filled positionally.
                Problem::Positional {
                    extra,
                    given,
                    takes,
                } => Diagnostic::new(
                    "E0501",
                    format!(
                        "`{callee}` takes {takes} positional argument{}, {given} given",
                        plural(*takes)
                    ),
                    extra.value.span,
                )
                .label("one too many")
                .related(span, "in this call")
                .hint(match sig {
                    Some(sig) => format!("`{}`", sig.usage(callee, |a| format!("[{a}]"))),
                    None => format!("`{callee}({})`", names.join(", ")),
                }),
            };
            self.error(d);
        }
        if !problems.is_empty() {
            return false;
        }
        if let Some(missing) = (0..required).find(|i| slots[*i].is_none()) {
            self.error(
                Diagnostic::new(
                    "E0501",
                    format!("`{callee}` needs the argument `{}`", names[missing]),
                    span,
                )
                .label("missing argument")
                .hint(format!("`{callee}({})`", names.join(", "))),
            );
            return false;
        }
        true
    }

    /// Binds the arguments of a call of builtin or distribution `callee`
    /// (`bind::bind_builtin`) and reports its problems.
    pub(super) fn bind(
        &mut self,
        callee: &str,
        sig: &builtins::Signature,
        args: &'p [Arg],
        span: Span,
    ) -> Option<Bound<'p>> {
        let (b, problems) = bind::bind_builtin(sig, args);
        let (names, slots): (Vec<&str>, Vec<Option<&'p Expr>>) = b.slots.iter().copied().unzip();
        self.report_binding(
            callee,
            &names,
            Some(sig),
            sig.required.len(),
            &slots,
            &problems,
            span,
        )
        .then_some(b)
    }

    pub(super) fn builtin(&mut self, f: Builtin, args: &'p [Arg], span: Span) -> Option<Val> {
        let sig = f.row().sig;
        let b = self.bind(f.name(), &sig, args, span)?;
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
        let mut out = self.builtin_shape(f, &b, span)?;
        out.deps = out.deps.or(class_deps);
        if sig.class != Class::Math {
            out.known = None;
        }
        Some(out)
    }

    pub(super) fn arg(&mut self, b: &Bound<'p>, name: &str) -> Option<(Val, Span)> {
        let e = b.get(name)?;
        Some((self.eval(e)?, e.span))
    }

    pub(super) fn scalar_arg(&mut self, b: &Bound<'p>, name: &str, callee: &str) -> Option<Val> {
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
    pub(super) fn int_arg(&mut self, b: &Bound<'p>, name: &str, what: &str) -> Option<i64> {
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
    pub(super) fn dims(&mut self, b: &Bound<'p>) -> Option<Shape> {
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

    pub(super) fn axis_arg(
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

    pub(super) fn need_rank(
        &mut self,
        v: &Val,
        s: Span,
        callee: &str,
        ok: bool,
        what: &str,
    ) -> Option<()> {
        if ok {
            return Some(());
        }
        self.error(
            Diagnostic::new("E0307", format!("`{callee}` needs {what}"), s)
                .label(format!("this is {}", v.describe())),
        );
        None
    }

    /// Calls a one-parameter function on an already typed value (for `ntk`).
    pub(super) fn apply_to(&mut self, f: &'p FnItem, arg: Val, span: Span) -> Option<Val> {
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
}
