//! Constant folding of operators and elementwise functions over compile-time scalars.

use crate::diag::{Diagnostic, Span};
use crate::ir::types::{DType, Scalar};
use crate::sema::builtins::Builtin;
use crate::syntax::ast::*;

/// Folds an operator over two compile-time scalars; `None` on overflow.
pub(super) fn fold(op: BinOp, x: Scalar, y: Scalar, dtype: DType) -> Option<Scalar> {
    use Scalar::{Float, Int};
    let b = |c: bool| Some(Float(if c { 1.0 } else { 0.0 }));
    let (fx, fy) = (x.as_f64(), y.as_f64());
    match (op, x, y) {
        (BinOp::Add, Int(a), Int(c)) => a.checked_add(c).map(Int),
        (BinOp::Sub, Int(a), Int(c)) => a.checked_sub(c).map(Int),
        (BinOp::Mul, Int(a), Int(c)) => a.checked_mul(c).map(Int),
        (BinOp::FloorDiv, Int(a), Int(c)) if c != 0 => floor_div(a, c).map(Int),
        (BinOp::Rem, Int(a), Int(c)) if c != 0 => floor_div(a, c)
            .and_then(|q| a.checked_sub(c.checked_mul(q)?))
            .map(Int),
        (BinOp::Pow, Int(a), Int(c)) if dtype == DType::Int => match (a, u32::try_from(c)) {
            (_, Ok(c)) => a.checked_pow(c).map(Int),
            (0 | 1, Err(_)) => Some(Int(a)),
            (-1, Err(_)) => Some(Int(if c % 2 == 0 { 1 } else { -1 })),
            _ => None,
        },
        (BinOp::Add, ..) => Some(Float(fx + fy)),
        (BinOp::Sub, ..) => Some(Float(fx - fy)),
        (BinOp::Mul, ..) => Some(Float(fx * fy)),
        (BinOp::Div, ..) => Some(Float(fx / fy)),
        (BinOp::FloorDiv, ..) => Some(Float((fx / fy).floor())),
        (BinOp::Rem, ..) => Some(Float(fx - fy * (fx / fy).floor())),
        (BinOp::Pow, ..) => Some(Float(crate::kernels::math::pow(fx, fy))),
        (BinOp::Lt, ..) => b(fx < fy),
        (BinOp::Le, ..) => b(fx <= fy),
        (BinOp::Gt, ..) => b(fx > fy),
        (BinOp::Ge, ..) => b(fx >= fy),
        (BinOp::Eq, ..) => b(fx == fy),
        (BinOp::Ne, ..) => b(fx != fy),
        (BinOp::And, ..) => b(fx != 0.0 && fy != 0.0),
        (BinOp::Or, ..) => b(fx != 0.0 || fy != 0.0),
        (BinOp::MatMul, ..) => None,
    }
}

/// The error for a compile-time int operation whose result does not fit in 64 bits.
pub(super) fn int_overflow(span: Span) -> Diagnostic {
    Diagnostic::new("E0202", "integer overflow", span)
        .label("the result does not fit in a 64-bit int")
        .hint("compute it as a float, e.g. `2.0^70` instead of `2^70`")
}

/// Floor division of ints, as NumPy's `//`; `None` for a zero divisor or an overflow.
pub(super) fn floor_div(a: i64, b: i64) -> Option<i64> {
    let q = a.checked_div(b)?;
    Some(if (a % b != 0) && ((a < 0) != (b < 0)) {
        q - 1
    } else {
        q
    })
}

/// Folds an elementwise builtin of one argument over a compile-time scalar with the
/// functions both backends call (the row's `scalar` of `ir::ops`, or the `Piecewise` row's),
/// so a const folded here equals the same expression at run time, bit for bit. `None` for
/// an int overflow and for other builtins.
pub(super) fn unary_fold(f: Builtin, k: Scalar, dtype: DType) -> Option<Scalar> {
    if dtype == DType::Int
        && let Scalar::Int(i) = k
    {
        let int = match f {
            Builtin::Unary(op) => op.row().int.map(|int| int(i)),
            Builtin::Piecewise(p) => (p.row().int)(i),
            _ => None,
        };
        return int.map(Scalar::Int);
    }
    let x = k.as_f64();
    let y = match f {
        Builtin::Unary(op) => (op.row().scalar)(x),
        Builtin::Piecewise(p) => (p.row().float)(x),
        _ => return None,
    };
    Some(Scalar::Float(y))
}
