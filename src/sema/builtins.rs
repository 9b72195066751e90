//! The builtins of LANGUAGE.md section 6: their argument names (for arity and keyword
//! checks) and what class of operation each is. Shape rules live in `check::shapes`.

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

/// Elementwise functions of one argument (section 6.1).
pub const UNARY: &[&str] = &[
    "exp", "log", "log1p", "sqrt", "abs", "relu", "sigmoid", "tanh", "softplus", "sin", "cos",
    "square", "sign",
];

pub fn signature(name: &str) -> Option<Signature> {
    use Class::*;
    let x: &[&str] = &["x"];
    let axis: &[&str] = &["axis"];
    Some(match name {
        n if UNARY.contains(&n) => sig(x, &[], &[], false, Math),
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
    let mut v: Vec<&str> = UNARY.to_vec();
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
