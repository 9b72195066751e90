//! The op table: one row per elementwise op of one operand, every fact about it in one place.
//!
//! A row gives the builtin the op is (if any), its scalar function (the one both backends and
//! const folding call), whether it keeps ints, its derivative (one rule that reverse and
//! forward mode both apply), its class of SUBGRADIENTS.md, what it can give and how it maps
//! a range (for `opt::quiet`), and how the JIT computes it. Adding an op is a variant of
//! `Unary`, a line in `c_abi!`, a row of `UNARY_OPS` and its name in `jit::host`'s
//! `slice_shims!` (a compile error until it is there); the tests of every backend and rule
//! run over the whole table.

use super::{Binary, Builder, Var};
use crate::kernels::{math, vmath};

/// A whole-slice form of a one-operand op: `out[i] = f(xs[i])`.
pub type UnarySlice = fn(&[f64], &mut [f64]);

/// A whole-slice form of a two-operand op: `out[i] = f(a[i], b[i])`.
pub type BinarySlice = fn(&[f64], &[f64], &mut [f64]);

/// An elementwise op of one operand. Its facts are `self.row()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Unary {
    Neg,
    Exp,
    Log,
    Log1p,
    Sqrt,
    Sigmoid,
    Tanh,
    Softplus,
    Sin,
    Cos,
    Erf,
    /// Derivative 0; a discontinuity at 0 (class D).
    Sign,
    /// 1.0 where the operand is 0, else 0.0.
    Not,
    /// Identity forward, zero derivative.
    StopGrad,
    /// Int to float.
    ToFloat,
}

/// The class of an op in SUBGRADIENTS.md section 1.2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kink {
    /// Class S: differentiable wherever it is defined.
    Smooth,
    /// Class X: not Lipschitz at the end of its domain (`sqrt`, `log` at 0); a non-finite
    /// derivative there is reported, not resolved.
    NotLipschitz,
    /// Class D: piecewise constant with a jump at 0. Ties (operand 0) are counted, and the
    /// ray value at a tie is the op of the operand's tangent (the one-sided limit).
    Jump,
    /// Piecewise constant over flags (0.0/1.0), which are class-D results whose ties are
    /// counted where they are made: derivative 0, no ties of its own.
    OfFlag,
}

/// How the JIT computes an op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Jit {
    /// Emitted as machine instructions (`jit::emit`'s `funary`).
    Inline,
    /// A call of the row's `scalar` under this symbol.
    Call(&'static str),
}

/// f'(x)·v for operand `x`, result `y` and `v` (a cotangent in reverse mode, a tangent in
/// forward mode), emitted into the builder.
pub type Derivative = fn(b: &mut Builder, x: Var, y: Var, v: Var) -> Var;

/// A range rule: the range of the result over operands in [lo, hi], when it can be proved.
pub type Interval = fn(lo: f64, hi: f64) -> Option<(f64, f64)>;

/// Everything about one `Unary` op.
pub struct UnaryRow {
    pub op: Unary,
    /// The builtin of LANGUAGE.md section 6.1 that is this op; `None` for ops only lowering
    /// makes.
    pub name: Option<&'static str>,
    /// One line for `:help` (and `traj ir` readers).
    pub doc: &'static str,
    /// The value at a float (libm's functions through `kernels::math`), with the C ABI so
    /// generated code calls this very function.
    pub scalar: extern "C" fn(f64) -> f64,
    /// The op on an int, for ops that keep ints (their result has the operand's dtype);
    /// `None`: the result is a float.
    pub int: Option<fn(i64) -> i64>,
    /// `None` where the derivative is 0 (piecewise constant ops).
    pub derivative: Option<Derivative>,
    pub kink: Kink,
    /// What the op can give whatever its operand: [lo, hi].
    pub codomain: (f64, f64),
    /// The result's range over an operand range; `None`: the codomain whatever the operand.
    pub interval: Option<Interval>,
    pub jit: Jit,
}

impl Unary {
    /// The whole-slice form of this op (`kernels::vmath`, bit for bit `scalar`), for the
    /// ops that have one: both backends compute arrays with it.
    pub fn slice(self) -> Option<UnarySlice> {
        Some(match self {
            Unary::Exp => vmath::exp_into,
            Unary::Log1p => vmath::log1p_into,
            Unary::Sigmoid => vmath::sigmoid_into,
            Unary::Softplus => vmath::softplus_into,
            Unary::Tanh => vmath::tanh_into,
            Unary::Log => vmath::log_into,
            Unary::Sin => vmath::sin_into,
            Unary::Cos => vmath::cos_into,
            Unary::Erf => vmath::erf_into,
            _ => return None,
        })
    }

    /// This op's row of [`UNARY_OPS`].
    pub fn row(self) -> &'static UnaryRow {
        &UNARY_OPS[self as usize]
    }

    /// The op that is builtin `name`.
    pub fn named(name: &str) -> Option<Unary> {
        UNARY_OPS
            .iter()
            .find(|r| r.name == Some(name))
            .map(|r| r.op)
    }
}

/// The scalar functions with the C ABI (`UnaryRow::scalar`).
mod c {
    use super::math;

    macro_rules! c_abi {
        ($($name:ident = $f:expr;)*) => {
            $(pub extern "C" fn $name(x: f64) -> f64 {
                $f(x)
            })*
        };
    }

    c_abi! {
        neg = |x: f64| -x;
        exp = math::exp;
        log = math::log;
        log1p = math::log1p;
        sqrt = math::sqrt;
        sigmoid = math::sigmoid;
        tanh = math::tanh;
        softplus = math::softplus;
        sin = math::sin;
        cos = math::cos;
        erf = math::erf;
        sign = math::sign;
        not = |x: f64| f64::from(x == 0.0);
        identity = |x: f64| x;
    }
}

const ANY: (f64, f64) = (f64::NEG_INFINITY, f64::INFINITY);
const POSITIVE: (f64, f64) = (0.0, f64::INFINITY);
const UNIT: (f64, f64) = (0.0, 1.0);
const SYMMETRIC_UNIT: (f64, f64) = (-1.0, 1.0);

/// One row per `Unary` variant, in the enum's order (`Unary::row` indexes it).
pub static UNARY_OPS: &[UnaryRow] = &[
    UnaryRow {
        op: Unary::Neg,
        name: None,
        doc: "-x",
        scalar: c::neg,
        int: Some(i64::wrapping_neg),
        derivative: Some(|b, _, _, v| b.unary(Unary::Neg, v)),
        kink: Kink::Smooth,
        codomain: ANY,
        interval: Some(|lo, hi| Some((-hi, -lo))),
        jit: Jit::Inline,
    },
    UnaryRow {
        op: Unary::Exp,
        name: Some("exp"),
        doc: "e^x, elementwise",
        scalar: c::exp,
        int: None,
        derivative: Some(|b, _, y, v| b.binary(Binary::Mul, v, y)),
        kink: Kink::Smooth,
        codomain: POSITIVE,
        interval: Some(|lo, hi| {
            (hi <= 700.0).then(|| (if lo < -700.0 { 0.0 } else { lo.exp() }, hi.exp()))
        }),
        jit: Jit::Call("traj_exp"),
    },
    UnaryRow {
        op: Unary::Log,
        name: Some("log"),
        doc: "natural logarithm, elementwise",
        scalar: c::log,
        int: None,
        derivative: Some(|b, x, _, v| b.binary(Binary::Div, v, x)),
        kink: Kink::NotLipschitz,
        codomain: ANY,
        interval: Some(|lo, hi| (lo > 1e-300).then(|| (lo.ln(), hi.ln()))),
        jit: Jit::Call("traj_log"),
    },
    UnaryRow {
        op: Unary::Log1p,
        name: Some("log1p"),
        doc: "log(1 + x), accurate near 0",
        scalar: c::log1p,
        int: None,
        derivative: Some(|b, x, _, v| {
            let one = b.scalar(1.0);
            let d = b.binary(Binary::Add, one, x);
            b.binary(Binary::Div, v, d)
        }),
        kink: Kink::NotLipschitz,
        codomain: ANY,
        interval: Some(|lo, hi| (lo > -1.0 + 1e-9).then(|| (lo.ln_1p(), hi.ln_1p()))),
        jit: Jit::Call("traj_log1p"),
    },
    UnaryRow {
        op: Unary::Sqrt,
        name: Some("sqrt"),
        doc: "square root, elementwise",
        scalar: c::sqrt,
        int: None,
        derivative: Some(|b, _, y, v| {
            let two = b.scalar(2.0);
            let d = b.binary(Binary::Mul, two, y);
            b.binary(Binary::Div, v, d)
        }),
        kink: Kink::NotLipschitz,
        codomain: POSITIVE,
        interval: Some(|lo, hi| (lo >= 0.0).then(|| (lo.sqrt(), hi.sqrt()))),
        // IEEE sqrt is correctly rounded, as is `libm::sqrt`.
        jit: Jit::Inline,
    },
    UnaryRow {
        op: Unary::Sigmoid,
        name: Some("sigmoid"),
        doc: "1 / (1 + exp(-x)), elementwise",
        scalar: c::sigmoid,
        int: None,
        derivative: Some(|b, _, y, v| {
            let one = b.scalar(1.0);
            let c = b.binary(Binary::Sub, one, y);
            let s = b.binary(Binary::Mul, y, c);
            b.binary(Binary::Mul, v, s)
        }),
        kink: Kink::Smooth,
        codomain: UNIT,
        interval: None,
        jit: Jit::Call("traj_sigmoid"),
    },
    UnaryRow {
        op: Unary::Tanh,
        name: Some("tanh"),
        doc: "hyperbolic tangent, elementwise",
        scalar: c::tanh,
        int: None,
        derivative: Some(|b, _, y, v| {
            let one = b.scalar(1.0);
            let sq = b.binary(Binary::Mul, y, y);
            let c = b.binary(Binary::Sub, one, sq);
            b.binary(Binary::Mul, v, c)
        }),
        kink: Kink::Smooth,
        codomain: SYMMETRIC_UNIT,
        interval: None,
        jit: Jit::Call("traj_tanh"),
    },
    UnaryRow {
        op: Unary::Softplus,
        name: Some("softplus"),
        doc: "log(1 + exp(x)), elementwise and stable",
        scalar: c::softplus,
        int: None,
        derivative: Some(|b, x, _, v| {
            let s = b.unary(Unary::Sigmoid, x);
            b.binary(Binary::Mul, v, s)
        }),
        kink: Kink::Smooth,
        codomain: POSITIVE,
        interval: Some(|_, hi| Some((0.0, hi.max(0.0) + 1.0))),
        jit: Jit::Call("traj_softplus"),
    },
    UnaryRow {
        op: Unary::Sin,
        name: Some("sin"),
        doc: "sine, elementwise",
        scalar: c::sin,
        int: None,
        derivative: Some(|b, x, _, v| {
            let c = b.unary(Unary::Cos, x);
            b.binary(Binary::Mul, v, c)
        }),
        kink: Kink::Smooth,
        codomain: SYMMETRIC_UNIT,
        interval: None,
        jit: Jit::Call("traj_sin"),
    },
    UnaryRow {
        op: Unary::Cos,
        name: Some("cos"),
        doc: "cosine, elementwise",
        scalar: c::cos,
        int: None,
        derivative: Some(|b, x, _, v| {
            let s = b.unary(Unary::Sin, x);
            let s = b.unary(Unary::Neg, s);
            b.binary(Binary::Mul, v, s)
        }),
        kink: Kink::Smooth,
        codomain: SYMMETRIC_UNIT,
        interval: None,
        jit: Jit::Call("traj_cos"),
    },
    UnaryRow {
        op: Unary::Erf,
        name: Some("erf"),
        doc: "error function, 2/sqrt(pi) times the integral of exp(-t^2) from 0 to x",
        scalar: c::erf,
        int: None,
        derivative: Some(|b, x, _, v| {
            let sq = b.binary(Binary::Mul, x, x);
            let n = b.unary(Unary::Neg, sq);
            let e = b.unary(Unary::Exp, n);
            let c = b.scalar(std::f64::consts::FRAC_2_SQRT_PI);
            let d = b.binary(Binary::Mul, c, e);
            b.binary(Binary::Mul, v, d)
        }),
        kink: Kink::Smooth,
        codomain: SYMMETRIC_UNIT,
        interval: None,
        jit: Jit::Call("traj_erf"),
    },
    UnaryRow {
        op: Unary::Sign,
        name: Some("sign"),
        doc: "-1, 0 or 1, elementwise (derivative 0)",
        scalar: c::sign,
        int: Some(i64::signum),
        derivative: None,
        kink: Kink::Jump,
        codomain: SYMMETRIC_UNIT,
        interval: None,
        jit: Jit::Inline,
    },
    UnaryRow {
        op: Unary::Not,
        name: None,
        doc: "1 where x is 0, else 0",
        scalar: c::not,
        int: None,
        derivative: None,
        kink: Kink::OfFlag,
        codomain: UNIT,
        interval: None,
        jit: Jit::Inline,
    },
    UnaryRow {
        op: Unary::StopGrad,
        name: None,
        doc: "x, with derivative 0",
        scalar: c::identity,
        int: Some(|i| i),
        derivative: None,
        kink: Kink::Smooth,
        codomain: ANY,
        interval: Some(|lo, hi| Some((lo, hi))),
        jit: Jit::Inline,
    },
    UnaryRow {
        op: Unary::ToFloat,
        name: None,
        doc: "an int as a float",
        scalar: c::identity,
        int: None,
        derivative: Some(|_, _, _, v| v),
        kink: Kink::Smooth,
        codomain: ANY,
        interval: Some(|lo, hi| Some((lo, hi))),
        jit: Jit::Inline,
    },
];

impl Binary {
    /// The whole-slice form of this float op (`kernels::vmath`, bit for bit the scalar
    /// function), for the ops that have one.
    pub fn slice(self) -> Option<BinarySlice> {
        Some(match self {
            Binary::LogAddExp => vmath::logaddexp_into,
            Binary::Pow => vmath::pow_into,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_row_sits_at_its_ops_index_and_names_are_unique() {
        for (i, row) in UNARY_OPS.iter().enumerate() {
            assert_eq!(row.op as usize, i, "{:?} is out of place", row.op);
            if let Some(n) = row.name {
                assert_eq!(Unary::named(n), Some(row.op));
            }
        }
    }

    #[test]
    fn piecewise_constant_ops_have_no_derivative_and_the_others_one() {
        for row in UNARY_OPS {
            let constant =
                matches!(row.kink, Kink::Jump | Kink::OfFlag) || row.op == Unary::StopGrad;
            assert_eq!(row.derivative.is_none(), constant, "{:?}", row.op);
        }
    }
}
