//! Kernels over whole matrices a row at a time, which the JIT calls where a loop entry by
//! entry would stride or stall, each giving exactly the interpreter's bits.

use crate::kernels::math::{self, SUM_LANES};
use crate::kernels::vmath;

/// Columns summed together: one block of each of the eight lanes' partial sums, 8 KB on the
/// stack, stays in L1 while the rows stream past.
const COLUMN_BLOCK: usize = 128;

/// Matrices of at least this many entries have their column sums computed in two halves
/// of their columns, one a core (`cores::join`): mlp's `[512,512]` bias gradient (2 MB)
/// was ~7 % of its step on one core while the other waited.
const SPLIT_COLUMN_SUMS: usize = 1 << 17;

/// `out[c] = math::sum(column c)` of the row-major `[rows, cols]` matrix `xs`: the same
/// eight lanes (row `r` to lane `r mod 8`), combined the same way, then the last `rows mod
/// 8` rows in order, but reading whole contiguous rows (a block of columns at a time)
/// instead of one column at a stride of a row. Each column is summed alone, so the bits do
/// not depend on which core sums it.
pub fn column_sums_into(xs: &[f64], rows: usize, cols: usize, out: &mut [f64]) {
    assert!(
        xs.len() == rows * cols && out.len() == cols,
        "column_sums_into: bad lengths"
    );
    if rows * cols >= SPLIT_COLUMN_SUMS && cols >= 2 * COLUMN_BLOCK {
        let half = (cols / 2).next_multiple_of(COLUMN_BLOCK);
        let (first, second) = out.split_at_mut(half);
        return crate::cores::join(
            || columns_from(xs, rows, cols, 0, first),
            || columns_from(xs, rows, cols, half, second),
        );
    }
    columns_from(xs, rows, cols, 0, out)
}

/// [`column_sums_into`]'s sums of the columns `from..from + out.len()`.
fn columns_from(xs: &[f64], rows: usize, cols: usize, from: usize, out: &mut [f64]) {
    // The same additions at any vector width (each column's lanes are its own), so the
    // widest the CPU has: SSE2's two entries an add made this pass instruction-bound.
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        fn avx512(xs: &[f64], rows: usize, cols: usize, from: usize, out: &mut [f64]) {
            column_sums_at(xs, rows, cols, from, out)
        }
        #[target_feature(enable = "avx2")]
        fn avx2(xs: &[f64], rows: usize, cols: usize, from: usize, out: &mut [f64]) {
            column_sums_at(xs, rows, cols, from, out)
        }
        use crate::kernels::Isa;
        match Isa::best() {
            // SAFETY: the CPU has AVX-512F.
            Isa::Avx512 => return unsafe { avx512(xs, rows, cols, from, out) },
            // SAFETY: the CPU has AVX2.
            Isa::Avx2 => return unsafe { avx2(xs, rows, cols, from, out) },
            Isa::Portable => {}
        }
    }
    column_sums_at(xs, rows, cols, from, out)
}

#[inline(always)]
fn column_sums_at(xs: &[f64], rows: usize, cols: usize, from: usize, out: &mut [f64]) {
    let main = rows / SUM_LANES * SUM_LANES;
    for c0 in (0..out.len()).step_by(COLUMN_BLOCK) {
        let w = COLUMN_BLOCK.min(out.len() - c0);
        let mut lanes = [[-0.0f64; COLUMN_BLOCK]; SUM_LANES];
        for r0 in (0..main).step_by(SUM_LANES) {
            for (k, lane) in lanes.iter_mut().enumerate() {
                let row = &xs[(r0 + k) * cols + from + c0..][..w];
                for (acc, x) in lane[..w].iter_mut().zip(row) {
                    *acc += x;
                }
            }
        }
        for c in 0..w {
            let l = |k: usize| lanes[k][c];
            let mut total = ((l(0) + l(2)) + (l(4) + l(6))) + ((l(1) + l(3)) + (l(5) + l(7)));
            for r in main..rows {
                total += xs[r * cols + from + c0 + c];
            }
            out[c0 + c] = total;
        }
    }
}

/// Finishes column sums that a loop accumulated while it wrote the `[rows, cols]` matrix a
/// row at a time (`emit`'s loops with a fused column sum): `lanes` holds
/// `SUM_LANES + rows % SUM_LANES` rows of `cols` — first the eight lanes of
/// [`column_sums_into`] (row `r` added to lane `r mod 8`, from -0.0, for the rows before the
/// last `rows mod 8`), then each of those last rows alone (`-0.0 + x`, which is `x`). The
/// lanes are combined and the last rows added in order: `column_sums_into`'s additions.
pub fn finish_column_lanes(lanes: &[f64], tail: usize, cols: usize, out: &mut [f64]) {
    assert!(
        lanes.len() == (SUM_LANES + tail) * cols && out.len() == cols,
        "finish_column_lanes: bad lengths"
    );
    for (c, total) in out.iter_mut().enumerate() {
        let l = |k: usize| lanes[k * cols + c];
        let mut t = ((l(0) + l(2)) + (l(4) + l(6))) + ((l(1) + l(3)) + (l(5) + l(7)));
        for k in SUM_LANES..SUM_LANES + tail {
            t += l(k);
        }
        *total = t;
    }
}

/// Entries whose `exp` one `vmath` call takes (two 8 KB buffers on the stack).
const EXP_BLOCK: usize = 1024;

/// `out[r] = math::logsumexp(row r)` of the row-major `[rows, cols]` matrix `xs`: each row's
/// maximum, then `exp(x - max)` for as many rows as fit in a block by one `vmath` call (bit
/// for bit `math::exp`) instead of one libm call an entry, summed in order.
pub fn logsumexp_rows_into(xs: &[f64], rows: usize, cols: usize, out: &mut [f64]) {
    assert!(
        xs.len() == rows * cols && out.len() == rows,
        "logsumexp_rows_into: bad lengths"
    );
    if cols == 0 {
        return out.fill(f64::NEG_INFINITY);
    }
    let max = |row: &[f64]| row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    // `math::logsumexp` from a row's maximum `m` and its sum of `exp(x - m)`.
    let finish = |m: f64, total: f64| {
        if m.is_finite() {
            m + math::log(total)
        } else {
            m
        }
    };
    let mut shifted = [0.0f64; EXP_BLOCK];
    let mut exps = [0.0f64; EXP_BLOCK];
    if cols > EXP_BLOCK {
        // A row at a time, in pieces.
        for (m, row) in out.iter_mut().zip(xs.chunks_exact(cols)) {
            let mut total = -0.0;
            let top = max(row);
            for piece in row.chunks(EXP_BLOCK) {
                let n = piece.len();
                for (s, x) in shifted.iter_mut().zip(piece) {
                    *s = x - top;
                }
                vmath::exp_into(&shifted[..n], &mut exps[..n]);
                // In order, as one sum over the row (not a sum of the pieces' sums).
                for e in &exps[..n] {
                    total += e;
                }
            }
            *m = finish(top, total);
        }
        return;
    }
    let per = EXP_BLOCK / cols;
    for (maxima, group) in out.chunks_mut(per).zip(xs.chunks(per * cols)) {
        let n = group.len();
        for ((m, row), s) in maxima
            .iter_mut()
            .zip(group.chunks_exact(cols))
            .zip(shifted.chunks_exact_mut(cols))
        {
            *m = max(row);
            for (s, x) in s.iter_mut().zip(row) {
                *s = x - *m;
            }
        }
        vmath::exp_into(&shifted[..n], &mut exps[..n]);
        for (m, e) in maxima.iter_mut().zip(exps[..n].chunks_exact(cols)) {
            *m = finish(*m, e.iter().sum::<f64>());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // From 2^17 entries and 256 columns (512×300, 515×300, 515×513) in two halves.
        for rows in [0, 1, 7, 8, 9, 15, 16, 17, 63, 512, 515] {
            for cols in [1, 2, 127, 128, 129, 300, 513] {
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

    /// The lanes a loop fills row by row (as `emit` does: row `r` into lane `r mod 8`, the
    /// last `rows mod 8` rows each into a slot of its own), finished, are
    /// `column_sums_into`'s bits on every shape around the lane count, with signed zeros,
    /// infinities and NaN among values whose sums round differently in different orders.
    #[test]
    fn finished_column_lanes_are_column_sums_bit_for_bit() {
        let mut state = 0x51_7cc1_b727_220au64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            match state % 97 {
                0 => -0.0,
                1 => 0.0,
                2 => f64::INFINITY,
                3 => f64::NEG_INFINITY,
                4 => f64::NAN,
                _ => {
                    let m = (state >> 11) as f64 / (1u64 << 53) as f64;
                    let e = ((state & 0xff) as f64 / 255.0) * 16.0 - 8.0;
                    (m - 0.5) * 10f64.powf(e)
                }
            }
        };
        for rows in [8, 9, 15, 16, 17, 23, 64, 512, 515] {
            for cols in [1, 2, 3, 10, 127, 128, 129, 300] {
                let xs: Vec<f64> = (0..rows * cols).map(|_| next()).collect();
                let main = rows / SUM_LANES * SUM_LANES;
                let tail = rows - main;
                let mut lanes = vec![-0.0; (SUM_LANES + tail) * cols];
                for (r, row) in xs.chunks_exact(cols).enumerate() {
                    let slot = if r < main {
                        r % SUM_LANES
                    } else {
                        SUM_LANES + r - main
                    };
                    for (acc, x) in lanes[slot * cols..][..cols].iter_mut().zip(row) {
                        *acc += x;
                    }
                }
                let mut got = vec![f64::NAN; cols];
                finish_column_lanes(&lanes, tail, cols, &mut got);
                let mut want = vec![f64::NAN; cols];
                column_sums_into(&xs, rows, cols, &mut want);
                for c in 0..cols {
                    // Any NaN matches any NaN: the compiler may commute an addition, which
                    // picks the other NaN's payload.
                    let (g, w) = (got[c], want[c]);
                    assert!(
                        g.to_bits() == w.to_bits() || g.is_nan() && w.is_nan(),
                        "[{rows},{cols}] column {c}: {g:?} against {w:?}"
                    );
                }
            }
        }
    }

    /// Rows short and long (around the block), with -inf, +inf and NaN entries and rows of
    /// them alone: each is `math::logsumexp` of the row, bit for bit.
    #[test]
    fn logsumexp_rows_are_math_logsumexp_of_each_row() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            match state % 64 {
                0 => f64::NEG_INFINITY,
                1 => f64::INFINITY,
                2 => f64::NAN,
                _ => ((state >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 1600.0,
            }
        };
        for rows in [0, 1, 3, 100, 205] {
            for cols in [0, 1, 5, 10, 1023, 1024, 1025, 2500] {
                let mut xs: Vec<f64> = (0..rows * cols).map(|_| next()).collect();
                if rows >= 3 && cols >= 1 {
                    // A row of -inf alone, one of NaN alone, one with +inf.
                    xs[..cols].fill(f64::NEG_INFINITY);
                    xs[cols..2 * cols].fill(f64::NAN);
                    xs[2 * cols] = f64::INFINITY;
                }
                let mut out = vec![0.25; rows];
                logsumexp_rows_into(&xs, rows, cols, &mut out);
                for (r, got) in out.iter().enumerate() {
                    let row = &xs[r * cols..(r + 1) * cols];
                    let want = math::logsumexp(row.iter().copied());
                    assert_eq!(got.to_bits(), want.to_bits(), "[{rows},{cols}] row {r}");
                }
            }
        }
    }
}
