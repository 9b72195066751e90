//! `nonfinite_spreads`: whether a non-finite entry of an input is sure to make a value
//! non-finite at the same entry, whatever the other operands hold (the JIT's loop then
//! skips its own finiteness pass over a gradient whose update's θ proves it).

use crate::ir::types::DType;
use crate::ir::{Binary, Func, Prim, Unary};

/// Whether `f`'s value `v` is non-finite at every entry where its input number `input` is
/// non-finite, for any values of its other inputs. Proven only along elementwise ops of
/// one shape that carry NaN and ±∞ through each operand they are listed for: `a + b`,
/// `a - b`, `a * b` (∞ · 0 is NaN), the numerator of `a / b` (∞ / ∞ is NaN, ∞ / 0 is ∞),
/// `-a`, `sqrt(a)` (√-∞ is NaN). Anything else (a division by it, `sign`, `max`/`min`
/// (so `abs`, `relu`, `clip`), comparisons and selects, `pow`, broadcasts, reductions, reshapes) proves
/// nothing.
pub fn nonfinite_spreads(f: &Func, input: usize, v: usize) -> bool {
    let mut memo = vec![None; f.insts.len()];
    spreads(f, input, v, &mut memo)
}

fn spreads(f: &Func, input: usize, v: usize, memo: &mut [Option<bool>]) -> bool {
    if let Some(known) = memo[v] {
        return known;
    }
    let inst = &f.insts[v];
    let same_shape = |a: usize| f.insts[a].shape == inst.shape && f.insts[a].dtype == DType::Float;
    let carried: &[usize] = match inst.prim {
        Prim::Binary(Binary::Add | Binary::Sub | Binary::Mul) => &inst.args,
        Prim::Binary(Binary::Div) => &inst.args[..1],
        Prim::Unary(Unary::Neg | Unary::Sqrt) => &inst.args,
        _ => &[],
    };
    let result = match inst.prim {
        Prim::Input(k) => k == input && inst.dtype == DType::Float,
        _ => {
            inst.dtype == DType::Float
                && carried
                    .iter()
                    .any(|a| same_shape(*a) && spreads(f, input, *a, memo))
        }
    };
    memo[v] = Some(result);
    result
}
