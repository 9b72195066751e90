//! Names: functions and their call cycles, locals, builtin and item names, suggestions for unknown ones.

use std::collections::{HashMap, HashSet};

use super::{Checker, Deps, Memo, Place, Val};
use crate::diag::{Diagnostic, Span};
use crate::ir::types::{DType, Scalar};
use crate::sema::builtins::{self, Builtin, OPTIMIZER_NAMES};
use crate::sema::modules::SymKind;
use crate::syntax::ast::*;

/// The strongly connected component of each function of a call graph (Tarjan's
/// algorithm): two functions call each other, directly or not, when theirs are equal.
pub(super) fn strong_components<'a>(
    calls: &HashMap<&'a str, Vec<(String, Span)>>,
) -> HashMap<&'a str, usize> {
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

pub(super) fn edit_distance(a: &str, b: &str) -> usize {
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

impl<'p> Checker<'p> {
    /// Static pass over every `fn`: names that resolve nowhere and recursion (a call cycle),
    /// whether or not the function is ever called.
    pub(super) fn check_functions(&mut self) {
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
    pub(super) fn walk_names(
        &mut self,
        e: &Expr,
        locals: &mut Vec<String>,
        calls: &mut Vec<(String, Span)>,
    ) {
        match &e.kind {
            ExprKind::Name(n) => {
                let known = locals.contains(n)
                    || self.prog.lookup(n).is_some()
                    || builtins::builtin_value(n)
                    || n == "seed"
                    || Builtin::named(n).is_some();
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
                    None if Builtin::named(&callee.name).is_some() => {}
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

    pub(super) fn undefined(&mut self, name: &str, span: Span) {
        if self.prog.maybe_defined(name) {
            return; // defined by an item that did not parse, which is reported
        }
        let mut d =
            Diagnostic::new("E0101", format!("`{name}` is not defined"), span).label("not defined");
        if name == "t" {
            d = d.hint(
                "`t` exists inside an optimizer rule, and in the record entries and `stop when` of a flow (`optimizer flow`)",
            );
        } else if OPTIMIZER_NAMES.contains(&name) {
            d = d.hint(format!(
                "`{name}` exists only inside an optimizer rule{}",
                if name == "grad" {
                    "; in a record, use `grad(p)`"
                } else {
                    ""
                }
            ));
        } else if let Some(module) = crate::sema::modules::std_module_defining(name) {
            d = d.hint(format!("`use std.{module}` defines it"));
        } else if let Some(s) = self.suggest(name) {
            d = d.hint(format!("did you mean `{s}`?"));
        }
        self.error(d);
    }

    pub(super) fn suggest(&self, name: &str) -> Option<String> {
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

    pub(super) fn bind_local(&mut self, name: &str, v: Val) {
        if let Some(scope) = self.scopes.last_mut() {
            scope.insert(name.to_string(), v);
        }
    }

    pub(super) fn name(&mut self, name: &str, span: Span) -> Option<Val> {
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

    pub(super) fn builtin_name(&mut self, name: &str, span: Span) -> Option<Val> {
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
            _ if Builtin::named(name).is_some() => {
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
}
