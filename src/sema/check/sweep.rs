//! `--set` overrides and the points of a `sweep` block, each a set of const overrides.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::Checker;
use super::files::FileShapes;
use crate::diag::{Diagnostic, SourceMap, Span};
use crate::ir::types::Scalar;
use crate::sema::modules::{Program, SymKind};
use crate::syntax::ast::*;

/// Whether `--set` or a sweep may override `name`: `seed`, a const, or a name whose item
/// did not parse (reported already).
fn overridable(program: &Program, name: &str) -> bool {
    name == "seed"
        || program
            .symbols
            .get(name)
            .is_some_and(|s| s.kind == SymKind::Const)
        || program.maybe_defined(name)
}

/// `NAME=VALUE` overrides, each with a span into a `<command line>` pseudo-file so that a
/// bad one is reported like any other error.
pub(super) fn parse_overrides(
    raw: &[String],
    program: &Program,
    sources: &mut SourceMap,
    diags: &mut Vec<Diagnostic>,
) -> BTreeMap<String, (Scalar, Span)> {
    let mut out = BTreeMap::new();
    if raw.is_empty() {
        return out;
    }
    let mut text = String::new();
    let mut spans = Vec::new();
    for r in raw {
        let start = text.len();
        text.push_str("--set ");
        text.push_str(r);
        spans.push(start + 6..text.len());
        text.push('\n');
    }
    let file = sources.add("<command line>".into(), None, text);
    for (r, range) in raw.iter().zip(spans) {
        let span = Span::new(file, range);
        let Some((k, v)) = r.split_once('=') else {
            diags.push(
                Diagnostic::new("E0204", format!("`{r}` is not `NAME=VALUE`"), span)
                    .label("expected NAME=VALUE")
                    .hint("for example `--set lr=0.5`"),
            );
            continue;
        };
        let k = k.trim();
        if !overridable(program, k) {
            diags.push(
                Diagnostic::new("E0204", format!("the program has no const `{k}`"), span)
                    .label("unknown const")
                    .hint("`--set` overrides a `const` of the program"),
            );
            continue;
        }
        match Scalar::parse(v).filter(|_| !beyond_float_range(v)) {
            Some(s) if k == "seed" && seed_problem(s).is_some() => diags.push(
                Diagnostic::new("E0204", format!("`{}` is not a seed", v.trim()), span)
                    .label(seed_problem(s).unwrap_or_default())
                    .hint(SEED_HINT),
            ),
            Some(s) => {
                out.insert(k.to_string(), (s, span));
            }
            None if beyond_float_range(v) => diags.push(
                Diagnostic::new(
                    "E0204",
                    format!("`{}` is too large for a float", v.trim()),
                    span,
                )
                .label("beyond the largest float, about 1.8e308")
                .hint("`--set lr=inf` sets infinity"),
            ),
            None => diags.push(
                Diagnostic::new("E0204", format!("`{v}` is not a number"), span)
                    .label("expected an int or a float")
                    .hint("for example `--set lr=0.5` or `--set n=100`"),
            ),
        }
    }
    out
}

/// A number written with digits (`1e400`) too large for a float.
pub(super) fn beyond_float_range(text: &str) -> bool {
    let t = text.trim().replace('_', "");
    !t.to_ascii_lowercase().contains("inf") && t.parse::<f64>().is_ok_and(f64::is_infinite)
}

/// Why a value cannot be the run's seed, if it cannot: seeds are the ints 0 to 2^63 − 1.
pub(super) fn seed_problem(v: Scalar) -> Option<&'static str> {
    match v {
        Scalar::Int(i) if i >= 0 => None,
        Scalar::Int(_) => Some("a seed is not negative"),
        // An int literal beyond 64 bits reads as a float.
        Scalar::Float(f) if f.fract() == 0.0 && f.abs() >= 2f64.powi(63) => Some(if f > 0.0 {
            "too large for a seed"
        } else {
            "a seed is not negative"
        }),
        Scalar::Float(_) => Some("a seed is an int"),
    }
}

pub(super) const SEED_HINT: &str = "seeds are the ints from 0 to 9223372036854775807";

pub(super) struct Sweep {
    /// Each point: (const, value) in the order of the sweep's entries.
    pub(super) points: Vec<Vec<(String, Scalar)>>,
}

pub(super) fn sweep_points(
    program: &Program,
    sources: &SourceMap,
    overrides: &BTreeMap<String, (Scalar, Span)>,
    shapes: &FileShapes,
    diags: &mut Vec<Diagnostic>,
) -> Sweep {
    let mut points: Vec<Vec<(String, Scalar)>> = vec![vec![]];
    let Some(sweep) = program.items.iter().find_map(|i| match i {
        Item::Sweep(s) if s.span.file == program.main_file => Some(s),
        _ => None,
    }) else {
        return Sweep { points: vec![] };
    };
    let plain = overrides
        .iter()
        .map(|(k, (v, _))| (k.clone(), *v))
        .collect();
    let none = HashSet::new();
    let mut c = Checker::new(program, sources, plain, &none, shapes);
    let mut seen: HashMap<&str, Span> = HashMap::new();
    for entry in &sweep.entries {
        let name = entry.name.name.as_str();
        if let Some(prev) = seen.insert(name, entry.name.span) {
            c.error(
                Diagnostic::new("E0102", format!("`{name}` is swept twice"), entry.name.span)
                    .label("second entry")
                    .related(prev, "first entry"),
            );
            continue;
        }
        if !overridable(program, name) {
            c.error(
                Diagnostic::new(
                    "E0101",
                    format!("no const named `{name}` to sweep"),
                    entry.name.span,
                )
                .label("not a const of the program")
                .hint("a sweep overrides consts; define it with `const`"),
            );
            continue;
        }
        let values: Vec<Scalar> = match &entry.values {
            SweepValues::Range(lo, hi) => {
                let (Some(a), Some(b)) = (
                    c.int_value(lo, "a range bound"),
                    c.int_value(hi, "a range bound"),
                ) else {
                    continue;
                };
                (a..b).map(Scalar::Int).collect()
            }
            SweepValues::List(items) => items.iter().filter_map(|e| c.known_scalar(e)).collect(),
        };
        if name == "seed"
            && let Some((v, why)) = values.iter().find_map(|&v| Some((v, seed_problem(v)?)))
        {
            c.error(
                Diagnostic::new("E0207", format!("`{v}` is not a seed"), entry.span)
                    .label(why)
                    .hint(SEED_HINT),
            );
            continue;
        }
        if values.is_empty() {
            c.error(
                Diagnostic::new(
                    "E0206",
                    format!("the sweep over `{name}` has no values"),
                    entry.span,
                )
                .label("empty"),
            );
            continue;
        }
        points = product(&points, name, &values);
    }
    diags.append(&mut c.diags);
    Sweep { points }
}

/// Each of `points` extended by each of `values` of const `name`: a sweep's points are the
/// Cartesian product of its entries, the last varying fastest.
pub fn product(
    points: &[Vec<(String, Scalar)>],
    name: &str,
    values: &[Scalar],
) -> Vec<Vec<(String, Scalar)>> {
    let mut next = Vec::with_capacity(points.len() * values.len());
    for p in points {
        for v in values {
            let mut q = p.clone();
            q.push((name.to_string(), *v));
            next.push(q);
        }
    }
    next
}
