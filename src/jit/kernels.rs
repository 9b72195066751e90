//! Whole-array kernels the JIT calls where an entry-by-entry loop would stride or stall, each
//! giving exactly the bits of the interpreter's order (`interp::math::sum`'s lanes).

use crate::interp::math::SUM_LANES;

/// Columns summed together: one block of each of the eight lanes' partial sums, 8 KB on the
/// stack, stays in L1 while the rows stream past.
const COLUMN_BLOCK: usize = 128;

/// `out[c] = math::sum(column c)` of the row-major `[rows, cols]` matrix `xs`: the same
/// eight lanes (row `r` to lane `r mod 8`), combined the same way, then the last `rows mod
/// 8` rows in order, but reading whole contiguous rows (a block of columns at a time)
/// instead of one column at a stride of a row.
pub fn column_sums_into(xs: &[f64], rows: usize, cols: usize, out: &mut [f64]) {
    assert!(
        xs.len() == rows * cols && out.len() == cols,
        "column_sums_into: bad lengths"
    );
    let main = rows / SUM_LANES * SUM_LANES;
    for c0 in (0..cols).step_by(COLUMN_BLOCK) {
        let w = COLUMN_BLOCK.min(cols - c0);
        let mut lanes = [[-0.0f64; COLUMN_BLOCK]; SUM_LANES];
        for r0 in (0..main).step_by(SUM_LANES) {
            for (k, lane) in lanes.iter_mut().enumerate() {
                let row = &xs[(r0 + k) * cols + c0..][..w];
                for (acc, x) in lane[..w].iter_mut().zip(row) {
                    *acc += x;
                }
            }
        }
        for c in 0..w {
            let l = |k: usize| lanes[k][c];
            let mut total = ((l(0) + l(2)) + (l(4) + l(6))) + ((l(1) + l(3)) + (l(5) + l(7)));
            for r in main..rows {
                total += xs[r * cols + c0 + c];
            }
            out[c0 + c] = total;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interp::math;

    /// Every shape around the lane count and the column block, on values whose sums round
    /// differently in different orders: each column is `math::sum` of it, bit for bit.
    #[test]
    fn column_sums_are_math_sum_of_each_column() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Magnitudes from 1e-8 to 1e8, either sign, so order changes the rounding.
            let m = (state >> 11) as f64 / (1u64 << 53) as f64;
            let e = ((state & 0xff) as f64 / 255.0) * 16.0 - 8.0;
            (m - 0.5) * 10f64.powf(e)
        };
        let mut differing_orders = 0;
        for rows in [0, 1, 7, 8, 9, 15, 16, 17, 63, 512, 515] {
            for cols in [1, 2, 127, 128, 129, 300] {
                let xs: Vec<f64> = (0..rows * cols).map(|_| next()).collect();
                let mut out = vec![f64::NAN; cols];
                column_sums_into(&xs, rows, cols, &mut out);
                for (c, got) in out.iter().enumerate() {
                    let column: Vec<f64> = (0..rows).map(|r| xs[r * cols + c]).collect();
                    let want = math::sum(&column);
                    assert_eq!(got.to_bits(), want.to_bits(), "[{rows},{cols}] column {c}");
                    let in_order = column.iter().fold(-0.0, |a, x| a + x);
                    differing_orders += usize::from(in_order.to_bits() != want.to_bits());
                }
            }
        }
        // The inputs do tell the lane order from the plain one.
        assert!(
            differing_orders > 100,
            "only {differing_orders} columns tell orders apart"
        );
    }
}
