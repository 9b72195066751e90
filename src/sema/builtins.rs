//! The builtins of LANGUAGE.md section 6, one table: each is a variant of [`Builtin`] whose
//! [`Row`] gives its surface name, signature (argument names, variadic dims, class) and
//! `:help` line. Its shape rule is its arm of `check::shapes`, its lowering its arm of
//! `lower`'s `builtin`: both `match` on [`Builtin`], so the compiler checks each has one.

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

impl Signature {
    /// `name(required, optional, dims..., kw = ...)`, each optional argument as `optional`
    /// writes it.
    pub fn usage(&self, name: &str, optional: impl Fn(&str) -> String) -> String {
        let mut parts: Vec<String> = self.required.iter().map(|s| s.to_string()).collect();
        parts.extend(self.optional.iter().map(|s| optional(s)));
        if self.variadic {
            parts.push("dims...".into());
        }
        parts.extend(self.kw_only.iter().map(|s| format!("{s} = ...")));
        format!("{name}({})", parts.join(", "))
    }
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

/// An elementwise builtin of one argument that is no single IR op (`lower` writes it with
/// `Max` or a product, so it keeps ints); its facts are `self.row()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece {
    Abs,
    Relu,
    Square,
}

/// Everything about one [`Piece`].
pub struct Piecewise {
    pub piece: Piece,
    pub name: &'static str,
    /// One line for `:help`.
    pub doc: &'static str,
    /// On a compile-time int; `None` on overflow.
    pub int: fn(i64) -> Option<i64>,
    /// On a compile-time float, as the lowered ops compute it.
    pub float: fn(f64) -> f64,
}

/// The rows of [`Piece`], each at its variant's index.
pub const PIECEWISE: &[Piecewise] = &[
    Piecewise {
        piece: Piece::Abs,
        name: "abs",
        doc: "absolute value, elementwise",
        int: i64::checked_abs,
        float: f64::abs,
    },
    Piecewise {
        piece: Piece::Relu,
        name: "relu",
        doc: "max(x, 0), elementwise",
        int: |i| Some(i.max(0)),
        float: |x| x.max(0.0),
    },
    Piecewise {
        piece: Piece::Square,
        name: "square",
        doc: "x^2, elementwise",
        int: |i| i.checked_mul(i),
        float: |x| x * x,
    },
];

impl Piece {
    pub fn row(self) -> &'static Piecewise {
        &PIECEWISE[self as usize]
    }
}

/// One builtin's surface facts.
#[derive(Clone, Copy, Debug)]
pub struct Row {
    pub name: &'static str,
    pub sig: Signature,
    /// One line for `:help`.
    pub doc: &'static str,
}

/// Declares [`Builtin`] with the named variants listed once, and `Builtin::NAMED`, the same
/// list as values (so the table can be walked).
macro_rules! builtins {
    ($($v:ident),* $(,)?) => {
        /// A builtin function of LANGUAGE.md section 6. Its facts are `self.row()`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Builtin {
            /// An elementwise function of one argument that is one op: a named row of
            /// `ir::ops`.
            Unary(Unary),
            /// `abs`, `relu`, `square`.
            Piecewise(Piece),
            $($v,)*
        }

        impl Builtin {
            /// Every builtin but the elementwise ones of one argument.
            pub const NAMED: &[Builtin] = &[$(Builtin::$v,)*];
        }
    };
}

builtins! {
    Max, Min, Clamp, LeakyRelu, LogAddExp,
    Sum, Mean, Prod, LogSumExp, ArgMax, ArgMin, Norm, Softmax, LogSoftmax,
    Reshape, Flat, Transpose, Diag, Trace, Concat, Stack, Outer, MatProd,
    Eye, Zeros, Ones, Full, Arange, Linspace, OneHot, Shape,
    Randn, Rand, Bernoulli, RandInt, Choose, Permutation, Orthogonal,
    Load,
    Svals, Eigvals, Erank, Nuclear, Spectral, Cond, Rank, Grad, Ntk, Init,
}

impl Builtin {
    /// This builtin's row: name, signature, doc.
    pub fn row(self) -> Row {
        use Builtin::*;
        use Class::*;
        const X: &[&str] = &["x"];
        const AXIS: &[&str] = &["axis"];
        const A: &[&str] = &["A"];
        let math = |required, optional, kw_only| sig(required, optional, kw_only, false, Math);
        let (name, sig, doc) = match self {
            Unary(op) => {
                let r = op.row();
                let name = r.name.expect("a builtin op has a name");
                (name, math(X, &[], &[]), r.doc)
            }
            Piecewise(p) => (p.row().name, math(X, &[], &[]), p.row().doc),
            Max => (
                "max",
                math(X, &["y"], AXIS),
                "maximum of x (or along axis), or elementwise max(x, y)",
            ),
            Min => (
                "min",
                math(X, &["y"], AXIS),
                "minimum of x (or along axis), or elementwise min(x, y)",
            ),
            Clamp => (
                "clamp",
                math(&["x", "lo", "hi"], &[], &[]),
                "x limited to [lo, hi], elementwise",
            ),
            LeakyRelu => (
                "leaky_relu",
                math(X, &["slope"], &[]),
                "x where x > 0, else slope * x (slope 0.01 by default)",
            ),
            LogAddExp => (
                "logaddexp",
                math(&["a", "b"], &[], &[]),
                "log(exp(a) + exp(b)), stable",
            ),
            Sum => (
                "sum",
                math(X, &[], AXIS),
                "sum of every entry, or along axis",
            ),
            Mean => (
                "mean",
                math(X, &[], AXIS),
                "mean of every entry, or along axis",
            ),
            Prod => (
                "prod",
                math(X, &[], AXIS),
                "product of every entry, or along axis",
            ),
            LogSumExp => (
                "logsumexp",
                math(X, &[], AXIS),
                "log(sum(exp(x))), stable, or along axis",
            ),
            ArgMax => (
                "argmax",
                math(X, &[], AXIS),
                "index of the largest entry (int), or along axis",
            ),
            ArgMin => (
                "argmin",
                math(X, &[], AXIS),
                "index of the smallest entry (int), or along axis",
            ),
            Norm => (
                "norm",
                math(X, &["p"], AXIS),
                "Euclidean/Frobenius norm, or the entrywise p-norm",
            ),
            Softmax => (
                "softmax",
                math(X, &[], AXIS),
                "exp(x) / sum(exp(x)) along axis (last by default)",
            ),
            LogSoftmax => (
                "log_softmax",
                math(X, &[], AXIS),
                "x - logsumexp(x) along axis (last by default)",
            ),
            Reshape => (
                "reshape",
                math(&["x", "dims"], &[], &[]),
                "the entries of x in row-major order with shape dims",
            ),
            Flat => ("flat", math(X, &[], &[]), "x as a vector, row-major"),
            Transpose => (
                "transpose",
                math(X, &[], &[]),
                "x with all axes reversed (also x')",
            ),
            Diag => (
                "diag",
                math(X, &[], &[]),
                "the diagonal matrix of a vector, or the diagonal of a matrix",
            ),
            Trace => ("trace", math(X, &[], &[]), "sum of the diagonal"),
            Concat => (
                "concat",
                math(&["list"], &["axis"], &[]),
                "a list of arrays joined along axis",
            ),
            Stack => (
                "stack",
                math(&["list"], &[], &[]),
                "a list of equal-shaped arrays stacked on a new first axis",
            ),
            Outer => (
                "outer",
                math(&["u", "v"], &[], &[]),
                "the outer product u v'",
            ),
            MatProd => (
                "matprod",
                math(&["Ws"], &[], &[]),
                "Ws[L-1] @ ... @ Ws[0] for a stack [L, m, m]",
            ),
            Eye => ("eye", math(&["n"], &[], &[]), "the n × n identity"),
            Zeros => ("zeros", sig(&[], &[], &[], true, Math), "an array of zeros"),
            Ones => ("ones", sig(&[], &[], &[], true, Math), "an array of ones"),
            Full => (
                "full",
                sig(&["c"], &[], &[], true, Math),
                "an array filled with c",
            ),
            Arange => ("arange", math(&["n"], &[], &[]), "0, 1, ..., n-1 (int)"),
            Linspace => (
                "linspace",
                math(&["a", "b", "n"], &[], &[]),
                "n evenly spaced values from a to b",
            ),
            OneHot => (
                "onehot",
                math(&["idx", "k"], &[], &[]),
                "one-hot rows [n, k] of int indices",
            ),
            Shape => (
                "shape",
                math(&["x", "k"], &[], &[]),
                "the k-th dimension of x (a compile-time int)",
            ),
            Randn => (
                "randn",
                sig(&[], &[], &[], true, Random),
                "standard normal draws",
            ),
            Rand => (
                "rand",
                sig(&[], &[], &[], true, Random),
                "uniform draws in [0, 1)",
            ),
            Bernoulli => (
                "bernoulli",
                sig(&["p"], &[], &[], true, Random),
                "0/1 draws, 1 with probability p",
            ),
            RandInt => (
                "randint",
                sig(&["lo", "hi"], &[], &[], true, Random),
                "int draws in [lo, hi)",
            ),
            Choose => (
                "choose",
                sig(&["n", "k"], &[], &[], false, Random),
                "k distinct ints below n, in random order",
            ),
            Permutation => (
                "permutation",
                sig(&["n"], &[], &[], false, Random),
                "a random permutation of 0..n (int)",
            ),
            Orthogonal => (
                "orthogonal",
                sig(&["n"], &["m"], &[], false, Random),
                "a Haar orthogonal (or semi-orthogonal) matrix",
            ),
            Load => (
                "load",
                sig(&["path"], &[], &[], false, File),
                "a .npy or .csv file, relative to the program",
            ),
            Svals => (
                "svals",
                sig(A, &[], &[], false, Observable),
                "singular values, descending (observable)",
            ),
            Eigvals => (
                "eigvals",
                sig(A, &[], &[], false, Observable),
                "eigenvalues of a symmetric matrix, descending (observable)",
            ),
            Erank => (
                "erank",
                sig(A, &[], &[], false, Observable),
                "effective rank: exp of the entropy of normalized singular values",
            ),
            Nuclear => (
                "nuclear",
                sig(A, &[], &[], false, Observable),
                "sum of singular values (observable)",
            ),
            Spectral => (
                "spectral",
                sig(A, &[], &[], false, Observable),
                "largest singular value (observable)",
            ),
            Cond => (
                "cond",
                sig(A, &[], &[], false, Observable),
                "largest over smallest singular value (observable)",
            ),
            Rank => (
                "rank",
                sig(A, &["tol"], &[], false, Observable),
                "count of singular values above tol times the largest (observable)",
            ),
            Grad => (
                "grad",
                sig(&["a"], &["p"], &[], false, Observable),
                "the gradient of the loss (or of a scalar a) with respect to param p",
            ),
            Ntk => (
                "ntk",
                sig(&["f", "X"], &[], &[], false, Observable),
                "the empirical neural tangent kernel [n, n] of f on the rows of X",
            ),
            // `init` is not an observable for the loss: it is a constant there (section 3.7).
            Init => (
                "init",
                math(X, &[], &[]),
                "x with every param at its initial value",
            ),
        };
        Row { name, sig, doc }
    }

    pub fn name(self) -> &'static str {
        self.row().name
    }

    /// Every builtin: the named `Unary` ops, the [`PIECEWISE`] ones, then [`Self::NAMED`].
    pub fn all() -> impl Iterator<Item = Builtin> {
        UNARY_OPS
            .iter()
            .filter(|r| r.name.is_some())
            .map(|r| Builtin::Unary(r.op))
            .chain(PIECEWISE.iter().map(|p| Builtin::Piecewise(p.piece)))
            .chain(Self::NAMED.iter().copied())
    }

    /// The builtin called `name`.
    pub fn named(name: &str) -> Option<Builtin> {
        Self::all().find(|b| b.name() == name)
    }
}

/// The signature of builtin `name`.
pub fn signature(name: &str) -> Option<Signature> {
    Builtin::named(name).map(|b| b.row().sig)
}

/// A distribution of `param NAME: [shape] ~ DIST` (section 3.3). Its lowering is its arm
/// of `train::statics`' `distribution`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Distribution {
    Normal,
    Uniform,
    Zeros,
    Ones,
    Constant,
    Orthogonal,
    Identity,
}

impl Distribution {
    pub const ALL: &[Distribution] = &[
        Distribution::Normal,
        Distribution::Uniform,
        Distribution::Zeros,
        Distribution::Ones,
        Distribution::Constant,
        Distribution::Orthogonal,
        Distribution::Identity,
    ];

    /// Its name and signature.
    pub fn row(self) -> (&'static str, Signature) {
        use Class::Random;
        use Distribution::*;
        match self {
            Normal => ("normal", sig(&[], &["mean", "std"], &[], false, Random)),
            Uniform => ("uniform", sig(&[], &["lo", "hi"], &[], false, Random)),
            Zeros => ("zeros", sig(&[], &[], &[], false, Random)),
            Ones => ("ones", sig(&[], &[], &[], false, Random)),
            Constant => ("constant", sig(&["c"], &[], &[], false, Random)),
            Orthogonal => ("orthogonal", sig(&[], &[], &["scale"], false, Random)),
            Identity => ("identity", sig(&[], &[], &["scale"], false, Random)),
        }
    }

    /// The distribution called `name`.
    pub fn named(name: &str) -> Option<Distribution> {
        Self::ALL.iter().copied().find(|d| d.row().0 == name)
    }
}

/// The signature of distribution `name`.
pub fn distribution(name: &str) -> Option<Signature> {
    Distribution::named(name).map(|d| d.row().1)
}

/// Names that are values without a call, with their `:help` lines. `seed` is a const
/// every program has (0 unless set), the others builtin values.
pub const VALUES: &[(&str, &str)] = &[
    ("inf", "infinity"),
    ("pi", "π"),
    ("gnorm", "the norm of the whole gradient of the loss"),
    (
        "sharpness",
        "the largest eigenvalue of the loss Hessian (Lanczos)",
    ),
    ("step", "the current step"),
    ("seed", "the run's seed (a const, 0 by default)"),
];

/// Names that are values without a call (`seed` is a const).
pub fn builtin_value(name: &str) -> bool {
    name != "seed" && VALUES.iter().any(|(n, _)| *n == name)
}

/// Names bound only inside optimizer bodies (or their hyperparameters).
pub const OPTIMIZER_NAMES: &[&str] = &["param", "grad", "t", "noise", "nparams"];

/// Every name a user can call or use without defining it, for "did you mean" hints and
/// REPL completion.
pub fn all_names() -> Vec<&'static str> {
    Builtin::all()
        .map(Builtin::name)
        .chain(VALUES.iter().map(|(n, _)| *n))
        .collect()
}

/// The `:help` line of a builtin or builtin value.
pub fn doc(name: &str) -> Option<&'static str> {
    match Builtin::named(name) {
        Some(b) => Some(b.row().doc),
        None => VALUES.iter().find(|(n, _)| *n == name).map(|(_, d)| *d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_find_their_builtin() {
        let mut seen = std::collections::HashSet::new();
        for b in Builtin::all() {
            assert!(seen.insert(b.name()), "{} twice", b.name());
            assert_eq!(Builtin::named(b.name()), Some(b));
        }
        for (n, _) in VALUES {
            assert!(seen.insert(n), "{n} is a value and a builtin");
        }
    }

    #[test]
    fn distributions_find_themselves_by_name() {
        for d in Distribution::ALL {
            assert_eq!(Distribution::named(d.row().0), Some(*d));
        }
    }

    #[test]
    fn piecewise_rows_sit_at_their_index() {
        for (i, p) in PIECEWISE.iter().enumerate() {
            assert_eq!(p.piece as usize, i, "{} is out of place", p.name);
        }
    }
}
