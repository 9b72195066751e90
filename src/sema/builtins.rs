//! The builtins of LANGUAGE.md section 6: their argument names (for arity and keyword
//! checks) and what class of operation each is. Shape rules live in `check::shapes`.

use crate::ir::Unary;
use crate::ir::ops::UNARY_OPS;

/// What a builtin is, which decides where it may appear.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Elementwise math, reductions, shapes and linear algebra: allowed everywhere.
    Math,
    /// Random draws: in `data`, `param` initializers and `sample` only.
    Random,
    /// `load`: files, in `data` and `param` initializers.
    File,
    /// Observables (section 6.6): in `record`, `stop when`, consts and lets, not in `loss`.
    Observable,
}

/// The arguments a builtin takes. Positional arguments fill `required` then `optional`
/// (then `variadic` dims); any of those may also be given by keyword; `kw_only` only by
/// keyword.
#[derive(Clone, Copy, Debug)]
pub struct Signature {
    pub required: &'static [&'static str],
    pub optional: &'static [&'static str],
    pub kw_only: &'static [&'static str],
    pub variadic: bool,
    pub class: Class,
}

const fn sig(
    required: &'static [&'static str],
    optional: &'static [&'static str],
    kw_only: &'static [&'static str],
    variadic: bool,
    class: Class,
) -> Signature {
    Signature {
        required,
        optional,
        kw_only,
        variadic,
        class,
    }
}

/// An elementwise builtin of one argument that is no single IR op: `lower` writes it with
/// `Max` or a product, so it keeps ints. The others are the named rows of `ir::ops`.
pub struct Piecewise {
    pub name: &'static str,
    /// One line for `:help`.
    pub doc: &'static str,
    /// On a compile-time int; `None` on overflow.
    pub int: fn(i64) -> Option<i64>,
    /// On a compile-time float, as the lowered ops compute it.
    pub float: fn(f64) -> f64,
}

pub const PIECEWISE: &[Piecewise] = &[
    Piecewise {
        name: "abs",
        doc: "absolute value, elementwise",
        int: i64::checked_abs,
        float: f64::abs,
    },
    Piecewise {
        name: "relu",
        doc: "max(x, 0), elementwise",
        int: |i| Some(i.max(0)),
        float: |x| x.max(0.0),
    },
    Piecewise {
        name: "square",
        doc: "x^2, elementwise",
        int: |i| i.checked_mul(i),
        float: |x| x * x,
    },
];

/// The elementwise functions of one argument (section 6.1): the named `Unary` ops, then
/// [`PIECEWISE`].
pub fn unary_names() -> impl Iterator<Item = &'static str> {
    UNARY_OPS
        .iter()
        .filter_map(|r| r.name)
        .chain(PIECEWISE.iter().map(|p| p.name))
}

/// The one-line doc of elementwise builtin `name`.
pub fn unary_doc(name: &str) -> Option<&'static str> {
    match Unary::named(name) {
        Some(op) => Some(op.row().doc),
        None => PIECEWISE.iter().find(|p| p.name == name).map(|p| p.doc),
    }
}

pub fn is_unary(name: &str) -> bool {
    unary_names().any(|n| n == name)
}

/// Whether elementwise builtin `name` gives an int for an int.
pub fn keeps_int(name: &str) -> bool {
    match Unary::named(name) {
        Some(op) => op.row().int.is_some(),
        None => PIECEWISE.iter().any(|p| p.name == name),
    }
}

pub fn signature(name: &str) -> Option<Signature> {
    use Class::*;
    let x: &[&str] = &["x"];
    let axis: &[&str] = &["axis"];
    Some(match name {
        n if is_unary(n) => sig(x, &[], &[], false, Math),
        "max" | "min" => sig(x, &["y"], axis, false, Math),
        "clamp" => sig(&["x", "lo", "hi"], &[], &[], false, Math),
        "leaky_relu" => sig(x, &["slope"], &[], false, Math),
        "logaddexp" => sig(&["a", "b"], &[], &[], false, Math),
        "sum" | "mean" | "prod" | "logsumexp" | "argmax" | "argmin" => {
            sig(x, &[], axis, false, Math)
        }
        "norm" => sig(x, &["p"], axis, false, Math),
        "softmax" | "log_softmax" => sig(x, &[], axis, false, Math),
        "reshape" => sig(&["x", "dims"], &[], &[], false, Math),
        "flat" | "transpose" | "diag" | "trace" => sig(x, &[], &[], false, Math),
        "concat" => sig(&["list"], &["axis"], &[], false, Math),
        "stack" => sig(&["list"], &[], &[], false, Math),
        "outer" => sig(&["u", "v"], &[], &[], false, Math),
        "matprod" => sig(&["Ws"], &[], &[], false, Math),
        "eye" => sig(&["n"], &[], &[], false, Math),
        "zeros" | "ones" => sig(&[], &[], &[], true, Math),
        "full" => sig(&["c"], &[], &[], true, Math),
        "arange" => sig(&["n"], &[], &[], false, Math),
        "linspace" => sig(&["a", "b", "n"], &[], &[], false, Math),
        "onehot" => sig(&["idx", "k"], &[], &[], false, Math),
        "shape" => sig(&["x", "k"], &[], &[], false, Math),
        "randn" | "rand" => sig(&[], &[], &[], true, Random),
        "bernoulli" => sig(&["p"], &[], &[], true, Random),
        "randint" => sig(&["lo", "hi"], &[], &[], true, Random),
        "choose" => sig(&["n", "k"], &[], &[], false, Random),
        "permutation" => sig(&["n"], &[], &[], false, Random),
        "orthogonal" => sig(&["n"], &["m"], &[], false, Random),
        "load" => sig(&["path"], &[], &[], false, File),
        "svals" | "eigvals" | "erank" | "nuclear" | "spectral" | "cond" => {
            sig(&["A"], &[], &[], false, Observable)
        }
        "rank" => sig(&["A"], &["tol"], &[], false, Observable),
        "grad" => sig(&["a"], &["p"], &[], false, Observable),
        "ntk" => sig(&["f", "X"], &[], &[], false, Observable),
        // `init` is not an observable for the loss: it is a constant there (section 3.7).
        "init" => sig(x, &[], &[], false, Math),
        _ => return None,
    })
}

/// Distributions of `param NAME: [shape] ~ DIST` (section 3.3).
pub fn distribution(name: &str) -> Option<Signature> {
    use Class::Random;
    Some(match name {
        "normal" => sig(&[], &["mean", "std"], &[], false, Random),
        "uniform" => sig(&[], &["lo", "hi"], &[], false, Random),
        "zeros" | "ones" => sig(&[], &[], &[], false, Random),
        "constant" => sig(&["c"], &[], &[], false, Random),
        "orthogonal" | "identity" => sig(&[], &[], &["scale"], false, Random),
        _ => return None,
    })
}

/// Names that are values without a call.
pub fn builtin_value(name: &str) -> bool {
    matches!(name, "inf" | "pi" | "gnorm" | "sharpness" | "step")
}

/// Names bound only inside optimizer bodies (or their hyperparameters).
pub const OPTIMIZER_NAMES: &[&str] = &["param", "grad", "t", "noise", "nparams"];

/// Every name a user can call or use without defining it, for "did you mean" hints and
/// REPL completion.
pub fn all_names() -> Vec<&'static str> {
    let mut v: Vec<&str> = unary_names().collect();
    v.extend([
        "max",
        "min",
        "clamp",
        "leaky_relu",
        "logaddexp",
        "sum",
        "mean",
        "prod",
        "logsumexp",
        "argmax",
        "argmin",
        "norm",
        "softmax",
        "log_softmax",
        "reshape",
        "flat",
        "transpose",
        "diag",
        "trace",
        "concat",
        "stack",
        "outer",
        "matprod",
        "eye",
        "zeros",
        "ones",
        "full",
        "arange",
        "linspace",
        "onehot",
        "shape",
        "randn",
        "rand",
        "bernoulli",
        "randint",
        "choose",
        "permutation",
        "orthogonal",
        "load",
        "svals",
        "eigvals",
        "erank",
        "nuclear",
        "spectral",
        "cond",
        "rank",
        "grad",
        "ntk",
        "init",
        "inf",
        "pi",
        "gnorm",
        "sharpness",
        "step",
        "seed",
    ]);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_name_has_a_signature_or_is_a_value() {
        for n in all_names() {
            assert!(
                signature(n).is_some() || builtin_value(n) || n == "seed",
                "{n} has no signature"
            );
        }
    }
}
