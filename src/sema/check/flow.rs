//! The checks of a gradient-flow train block (`optimizer flow`, `time T`; LANGUAGE.md 3.10).

use super::Checker;
use crate::diag::{Diagnostic, Span};
use crate::ir::types::Scalar;
use crate::syntax::ast::*;

/// The built-in rule that integrates dθ/dt = −∇L(θ) for every param at once.
pub const FLOW: &str = "flow";
/// `flow`'s hyperparameters, in order, with their defaults.
pub const FLOW_ARGS: &[(&str, f64)] = &[("rtol", 1e-6), ("atol", 1e-9)];

/// Whether the train block is a gradient flow: some `optimizer` clause names `flow`.
pub fn is_flow(t: &TrainItem) -> bool {
    t.clauses
        .iter()
        .any(|c| matches!(c, Clause::Optimizer(o) if o.rule.name == FLOW))
}

impl<'p> Checker<'p> {
    /// A flow's rule, its `time` and its record intervals; a `time` outside a flow. Returns
    /// whether the block is a flow (its `record` counts are then checked here, as times).
    pub(super) fn check_flow(&mut self, t: &'p TrainItem) -> bool {
        let flow = is_flow(t);
        let mut time: Option<Span> = None;
        for clause in &t.clauses {
            match clause {
                Clause::Time(e, span) => {
                    if !flow {
                        self.error(
                            Diagnostic::new("E0414", "`time` without `optimizer flow`", *span)
                                .label("only a gradient flow runs for a time")
                                .hint("give the number of updates with `steps N`, or train with `optimizer flow(rtol = 1e-6)`"),
                        );
                    } else if let Some(prev) = time {
                        self.error(
                            Diagnostic::new("E0102", "`time` is given twice", *span)
                                .label("second")
                                .related(prev, "first"),
                        );
                    }
                    time = Some(*span);
                    self.positive_number(e, "a flow's time", true);
                }
                Clause::Steps(_, span) if flow => {
                    self.error(
                        Diagnostic::new(
                            "E0414",
                            "a gradient flow runs for a `time`, not `steps`",
                            *span,
                        )
                        .label("`optimizer flow` counts time")
                        .hint("write `time T` in its place"),
                    );
                }
                Clause::Optimizer(o) if flow => self.flow_rule(o),
                Clause::Record(r) if flow && r.kind == RecordKind::Every => {
                    self.positive_number(&r.count, "a record interval", false);
                }
                _ => {}
            }
        }
        if flow && time.is_none() {
            self.error(
                Diagnostic::new(
                    "E0414",
                    "a gradient flow needs a `time`",
                    Span {
                        end: t.span.start + 5,
                        ..t.span
                    },
                )
                .label("this train block has `optimizer flow` but no `time`")
                .hint("add `time 10`: how long the flow runs"),
            );
        }
        flow
    }

    /// `optimizer flow(rtol, atol)` is the only rule of its block; each tolerance a
    /// positive number known at compile time. Every other rule beside it is an error.
    fn flow_rule(&mut self, o: &'p TrainOptimizer) {
        if o.rule.name != FLOW {
            self.error(
                Diagnostic::new(
                    "E0414",
                    "`optimizer flow` trains every param at once",
                    o.span,
                )
                .label("no other rule can stand beside `flow`")
                .hint("a frozen param is a `const` in a flow"),
            );
            return;
        }
        if !o.targets.is_empty() {
            self.error(
                Diagnostic::new("E0414", "`optimizer flow` takes no `for`", o.span)
                    .label("the flow moves every param")
                    .hint("remove `for ...`"),
            );
        }
        let names: Vec<&str> = FLOW_ARGS.iter().map(|(n, _)| *n).collect();
        let args: Vec<&'p Arg> = o.args.iter().collect();
        let Some(slots) =
            self.bind_named(FLOW, &names, 0, &args, o.args_span.unwrap_or(o.rule.span))
        else {
            return;
        };
        for (e, (name, _)) in slots.into_iter().zip(FLOW_ARGS) {
            if let Some(e) = e {
                self.positive_number(e, &format!("`{name}`"), false);
            }
        }
    }

    /// A scalar number known at compile time, finite and positive (or 0 if `zero_ok`).
    fn positive_number(&mut self, e: &'p Expr, what: &str, zero_ok: bool) -> Option<f64> {
        let v = self.eval(e)?;
        let x = match (v.shape.is_empty(), v.known) {
            (true, Some(Scalar::Int(i))) => i as f64,
            (true, Some(Scalar::Float(f))) => f,
            _ => {
                self.error(
                    Diagnostic::new(
                        "E0206",
                        format!("{what} must be a number known at compile time"),
                        e.span,
                    )
                    .label(format!("this is {}", v.describe()))
                    .hint("use consts and literals"),
                );
                return None;
            }
        };
        if !x.is_finite() || x < 0.0 || (x == 0.0 && !zero_ok) {
            self.error(
                Diagnostic::new(
                    "E0305",
                    format!("{what} is {}", crate::output::format_float(x)),
                    e.span,
                )
                .label(if zero_ok {
                    "a finite number, at least 0"
                } else {
                    "a finite number above 0"
                }),
            );
            return None;
        }
        Some(x)
    }
}
