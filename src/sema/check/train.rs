//! Optimizer items and the `train` block: hyperparameters, targets, update rules.

use std::collections::HashMap;

use super::{Checker, Deps, Place, Val};
use crate::diag::{Diagnostic, Span};
use crate::ir::types::{DType, Scalar, Shape, broadcast, show_shape};
use crate::sema::modules::SymKind;
use crate::syntax::ast::*;

impl<'p> Checker<'p> {
    pub(super) fn optimizer_names(
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
    pub(super) fn hyper_names(&self, nparams: i64) -> HashMap<String, Val> {
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
    pub(super) fn check_optimizer_alone(&mut self, o: &'p OptimizerItem) {
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

    pub(super) fn optimizer_body(
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
    pub(super) fn fits(&mut self, v: &Val, shape: &[usize], e: &Expr, what: &str) {
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

    pub(super) fn check_train(&mut self, t: &'p TrainItem) {
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
        // A flow's record entries and `stop when` see its time `t` (a user's `t` shadows it).
        let time_scope = flow && prog.lookup("t").is_none();
        if time_scope {
            self.scopes
                .push(HashMap::from([("t".to_string(), flow_time())]));
        }
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
        if time_scope {
            self.scopes.pop();
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

    pub(super) fn train_rule(
        &mut self,
        o: &'p TrainOptimizer,
        targets: &[(&str, Span)],
        nparams: i64,
    ) {
        if o.rule.name == super::flow::FLOW {
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
}

/// The value of a flow's time `t` in its record entries and `stop when`: a float scalar
/// that changes each step (its step dependence is set where it is named).
fn flow_time() -> Val {
    Val::tensor(DType::Float, vec![], Deps::default())
}
