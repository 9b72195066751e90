//! Matrix-vector products above `SMALL_GEMV` without faer: faer's own order, bit for bit.
//!
//! faer 0.24 computes `c = a @ x` (`c` and `x` contiguous, `Par::Seq`, `alpha = 1.0`) with
//! pulp's AVX2 code ("V3", 4 lanes, fused multiply-adds) on a CPU that has V3's features
//! (faer is built without pulp's `x86-v4`, so never with AVX-512), in one of two orders:
//!
//! - `a` row-major (`matvec_rowmajor`): each row is a dot product with four accumulators
//!   of four lanes, all from +0.0. Vector `v` (entries `4v..4v+4`) goes to accumulator
//!   `v mod 4` — the batches of four vectors, then the last whole vectors to accumulators
//!   0, 1, 2, then the tail (`k mod 4` entries, masked loads: zeros beyond `k`) to the
//!   next. So entry `p` is in chain `p mod 16` (accumulator `(p mod 16) / 4`, lane
//!   `p mod 4`), an FMA chain over its entries in order; a tail lane adds `0·0`, which
//!   changes nothing (a chain from +0.0 is never -0.0). The accumulators are then added
//!   as `(acc0 + acc1) + (acc2 + acc3)`, and the four lanes `l` of that as
//!   `(l0 + l2) + (l1 + l3)` (pulp's `reduce_sum_f64s`); the result is multiplied by
//!   `alpha`, which changes no bits.
//! - `a` column-major, i.e. held transposed (`matvec_colmajor`), or a single column:
//!   `c` is set to +0.0, then for each column `p` in order `c += a[:,p] · (x[p]·alpha)`
//!   by FMA, so each entry is one FMA chain over `p` from +0.0 (the lanes change no
//!   bits).
//!
//! Every entry that is not NaN is thus fixed by IEEE arithmetic. Which NaN a NaN entry
//! holds is not: when NaNs meet (or an invalid `inf · 0` meets one), x86 returns one of
//! the NaN operands by their order in the instruction, and LLVM orders the operands of
//! commutative additions and FMAs as it likes — faer's compiled code adds its
//! accumulators as `(acc3 + acc2) + (acc1 + acc0)`, and on this Zen 4 an FMA's product's
//! NaN wins over its sum's. So `matmul_into` gives a product with a NaN entry to faer.
//!
//! Elsewhere (no V3, or another architecture) faer's order differs (pulp's scalar code,
//! NEON's two lanes) and [`best`] says so: `matmul_into` calls faer there. Measured on the
//! 2-core AMD EPYC (Zen 4) benchmark machine, ns a call (min of many), faer against this
//! kernel: see [`crate::kernels::math::matmul_into`] and BENCHMARKS.md.

use super::Isa;

/// The fastest code with faer's bits on this CPU, or `None` where faer does not run its
/// V3 code (then its order is not this kernel's). With AVX-512 rows go four at a time,
/// each row's four accumulators in two ZMM registers, and columns in strips of 128
/// entries (16 ZMM sums); with AVX2 rows go two at a time (eight YMM accumulators),
/// columns in strips of 32; the portable code is the order written out (the tests': no
/// CPU where faer runs V3 lacks AVX2).
pub fn best() -> Option<Isa> {
    static BEST: std::sync::OnceLock<Option<Isa>> = std::sync::OnceLock::new();
    *BEST.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            // pulp's `V3::try_new`: every one of these.
            let v3 = has!("sse")
                && has!("sse2")
                && has!("fxsr")
                && has!("sse3")
                && has!("ssse3")
                && has!("sse4.1")
                && has!("sse4.2")
                && has!("popcnt")
                && has!("avx")
                && has!("avx2")
                && has!("bmi1")
                && has!("bmi2")
                && has!("fma")
                && has!("lzcnt");
            // V3 has AVX2 and FMA: `Isa::best` is AVX2 or AVX-512.
            v3.then(Isa::best)
        }
        #[cfg(not(target_arch = "x86_64"))]
        None
    })
}

/// `c = a @ x` for an `m×k` matrix `a` and a `k`-vector `x` in faer's order (module doc),
/// with the code for `isa` (which this CPU must have: [`best`] or a test's check). `a[i,p]`
/// is `data[i·stride + p]`, or, `transposed`, `data[p·stride + i]`.
#[allow(clippy::too_many_arguments)]
pub fn matvec(
    isa: Isa,
    data: &[f64],
    transposed: bool,
    stride: usize,
    x: &[f64],
    c: &mut [f64],
    m: usize,
    k: usize,
) {
    if m == 0 {
        return;
    }
    let (x, c) = (&x[..k], &mut c[..m]);
    // faer takes a single column (its row stride 1) as column-major.
    if transposed || k == 1 {
        let stride = if transposed { stride } else { m };
        assert!(k == 0 || (stride >= m && data.len() >= (k - 1) * stride + m));
        // SAFETY: every `data[p·stride + i]`, `p < k`, `i < m`, is inside `data`; the CPU
        // has `isa`.
        unsafe {
            match isa {
                Isa::Portable => portable::columns(data, stride, x, c),
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => avx2::columns(data, stride, x, c),
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => avx512::columns(data, stride, x, c),
            }
        }
    } else {
        assert!(stride >= k && data.len() >= (m - 1) * stride + k);
        // SAFETY: every `data[i·stride + p]`, `i < m`, `p < k`, is inside `data`; the CPU
        // has `isa`.
        unsafe {
            match isa {
                Isa::Portable => portable::rows(data, stride, x, c),
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => avx2::rows(data, stride, x, c),
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => avx512::rows(data, stride, x, c),
            }
        }
    }
}

/// Chains of a row-major dot product: entry `p` goes to chain `p mod 16`.
const CHAINS: usize = 16;

/// faer's sum of the 16 chains `s[4j + l]` (accumulator `j`, lane `l`): accumulators
/// `(0 + 1) + (2 + 3)`, then lanes `(0 + 2) + (1 + 3)`.
#[inline(always)]
fn reduce(s: &[f64; CHAINS]) -> f64 {
    let lane = |l: usize| (s[l] + s[4 + l]) + (s[8 + l] + s[12 + l]);
    (lane(0) + lane(2)) + (lane(1) + lane(3))
}

mod portable {
    use super::{CHAINS, reduce};

    /// # Safety
    /// As [`super::matvec`]'s (no unsafe operation here).
    pub(super) unsafe fn rows(data: &[f64], stride: usize, x: &[f64], c: &mut [f64]) {
        let k = x.len();
        for (i, ci) in c.iter_mut().enumerate() {
            let row = &data[i * stride..i * stride + k];
            let mut s = [0.0f64; CHAINS];
            for (p, (a, xp)) in row.iter().zip(x).enumerate() {
                s[p % CHAINS] = a.mul_add(*xp, s[p % CHAINS]);
            }
            *ci = reduce(&s);
        }
    }

    /// # Safety
    /// As [`super::matvec`]'s (no unsafe operation here).
    pub(super) unsafe fn columns(data: &[f64], stride: usize, x: &[f64], c: &mut [f64]) {
        c.fill(0.0);
        for (p, xp) in x.iter().enumerate() {
            let column = &data[p * stride..p * stride + c.len()];
            for (ci, a) in c.iter_mut().zip(column) {
                *ci = a.mul_add(*xp, *ci);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{CHAINS, reduce};
    use std::arch::x86_64::*;

    /// Lanes a register of sums holds.
    const L: usize = 8;

    /// # Safety
    /// As [`super::matvec`]'s; the CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn rows(data: &[f64], stride: usize, x: &[f64], c: &mut [f64]) {
        let m = c.len();
        let mut i = 0;
        // SAFETY: rows i..i+R exist.
        unsafe {
            while m - i >= 4 {
                rows_of::<4>(data, stride, x, c, i);
                i += 4;
            }
            if m - i >= 2 {
                rows_of::<2>(data, stride, x, c, i);
                i += 2;
            }
            if m - i == 1 {
                rows_of::<1>(data, stride, x, c, i);
            }
        }
    }

    /// Rows `i0..i0+R`: chains 0-7 of a row in one register, 8-15 in another; the last
    /// `k mod 16` entries by loads that give zeros beyond `k`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn rows_of<const R: usize>(
        data: &[f64],
        stride: usize,
        x: &[f64],
        c: &mut [f64],
        i0: usize,
    ) {
        let k = x.len();
        // SAFETY: rows `i0..i0+R` of `k` entries are inside `data` (the caller's check),
        // entries `p..p+16` below `k` (or masked beyond it) inside `x` and the rows.
        unsafe {
            let a = data.as_ptr().add(i0 * stride);
            let xp = x.as_ptr();
            let mut s = [[_mm512_setzero_pd(); 2]; R];
            let mut p = 0;
            while p + CHAINS <= k {
                let x0 = _mm512_loadu_pd(xp.add(p));
                let x1 = _mm512_loadu_pd(xp.add(p + L));
                for (r, s) in s.iter_mut().enumerate() {
                    let row = a.add(r * stride + p);
                    s[0] = _mm512_fmadd_pd(_mm512_loadu_pd(row), x0, s[0]);
                    s[1] = _mm512_fmadd_pd(_mm512_loadu_pd(row.add(L)), x1, s[1]);
                }
                p += CHAINS;
            }
            if p < k {
                let left = k - p;
                let m0: __mmask8 = if left >= L { 0xFF } else { (1u8 << left) - 1 };
                let m1: __mmask8 = if left > L { (1u8 << (left - L)) - 1 } else { 0 };
                let x0 = _mm512_maskz_loadu_pd(m0, xp.add(p));
                let x1 = _mm512_maskz_loadu_pd(m1, xp.add(p + L));
                for (r, s) in s.iter_mut().enumerate() {
                    let row = a.add(r * stride + p);
                    s[0] = _mm512_fmadd_pd(_mm512_maskz_loadu_pd(m0, row), x0, s[0]);
                    s[1] = _mm512_fmadd_pd(_mm512_maskz_loadu_pd(m1, row.add(L)), x1, s[1]);
                }
            }
            for (r, s) in s.iter().enumerate() {
                let mut chains = [0.0; CHAINS];
                _mm512_storeu_pd(chains.as_mut_ptr(), s[0]);
                _mm512_storeu_pd(chains.as_mut_ptr().add(L), s[1]);
                *c.get_unchecked_mut(i0 + r) = reduce(&chains);
            }
        }
    }

    /// # Safety
    /// As [`super::matvec`]'s; the CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn columns(data: &[f64], stride: usize, x: &[f64], c: &mut [f64]) {
        let m = c.len();
        let mut i = 0;
        // SAFETY: entries i..i+V·L exist (the last strip masked).
        unsafe {
            while m - i >= 16 * L {
                strip::<16>(data, stride, x, c, i, 0xFF);
                i += 16 * L;
            }
            if m - i >= 8 * L {
                strip::<8>(data, stride, x, c, i, 0xFF);
                i += 8 * L;
            }
            if m - i >= 4 * L {
                strip::<4>(data, stride, x, c, i, 0xFF);
                i += 4 * L;
            }
            if m - i >= 2 * L {
                strip::<2>(data, stride, x, c, i, 0xFF);
                i += 2 * L;
            }
            if m - i >= L {
                strip::<1>(data, stride, x, c, i, 0xFF);
                i += L;
            }
            if m > i {
                strip::<1>(data, stride, x, c, i, (1u8 << (m - i)) - 1);
            }
        }
    }

    /// Entries `i0..i0+V·L` of `c` (of the last vector those in `last`), each an FMA chain
    /// over the columns in order from +0.0, in registers.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn strip<const V: usize>(
        data: &[f64],
        stride: usize,
        x: &[f64],
        c: &mut [f64],
        i0: usize,
        last: __mmask8,
    ) {
        // SAFETY: entries `i0..i0+V·L` (masked by `last` in the last vector) of each column
        // `p < k` are inside `data` and `c`.
        unsafe {
            let mut s = [_mm512_setzero_pd(); V];
            let a = data.as_ptr().add(i0);
            for (p, xp) in x.iter().enumerate() {
                let xp = _mm512_set1_pd(*xp);
                let column = a.add(p * stride);
                for (v, s) in s.iter_mut().enumerate() {
                    let mask = if v + 1 == V { last } else { 0xFF };
                    let av = _mm512_maskz_loadu_pd(mask, column.add(v * L));
                    *s = _mm512_fmadd_pd(av, xp, *s);
                }
            }
            let out = c.as_mut_ptr().add(i0);
            for (v, s) in s.iter().enumerate() {
                let mask = if v + 1 == V { last } else { 0xFF };
                _mm512_mask_storeu_pd(out.add(v * L), mask, *s);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{CHAINS, reduce};
    use std::arch::x86_64::*;

    /// Lanes a register of sums holds.
    const L: usize = 4;

    /// # Safety
    /// As [`super::matvec`]'s; the CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn rows(data: &[f64], stride: usize, x: &[f64], c: &mut [f64]) {
        let m = c.len();
        let mut i = 0;
        // SAFETY: rows i..i+R exist.
        unsafe {
            while m - i >= 2 {
                rows_of::<2>(data, stride, x, c, i);
                i += 2;
            }
            if m - i == 1 {
                rows_of::<1>(data, stride, x, c, i);
            }
        }
    }

    /// A mask for `_mm256_maskload_pd` of the first `n < 4` lanes.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn first_lanes(n: usize) -> __m256i {
        let lane = _mm256_set_epi64x(3, 2, 1, 0);
        _mm256_cmpgt_epi64(_mm256_set1_epi64x(n as i64), lane)
    }

    /// Rows `i0..i0+R`, four accumulators of four lanes a row as faer's; the last whole
    /// vectors and the masked tail vector go to the accumulators in turn.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn rows_of<const R: usize>(
        data: &[f64],
        stride: usize,
        x: &[f64],
        c: &mut [f64],
        i0: usize,
    ) {
        let k = x.len();
        // SAFETY: rows `i0..i0+R` of `k` entries are inside `data` (the caller's check),
        // entries below `k` (or masked beyond it) inside `x` and the rows.
        unsafe {
            let a = data.as_ptr().add(i0 * stride);
            let xp = x.as_ptr();
            let mut s = [[_mm256_setzero_pd(); 4]; R];
            let mut p = 0;
            while p + CHAINS <= k {
                let xv: [__m256d; 4] = std::array::from_fn(|j| _mm256_loadu_pd(xp.add(p + j * L)));
                for (r, s) in s.iter_mut().enumerate() {
                    let row = a.add(r * stride + p);
                    for (j, s) in s.iter_mut().enumerate() {
                        *s = _mm256_fmadd_pd(_mm256_loadu_pd(row.add(j * L)), xv[j], *s);
                    }
                }
                p += CHAINS;
            }
            let mut j = 0;
            while p + L <= k {
                let xv = _mm256_loadu_pd(xp.add(p));
                for (r, s) in s.iter_mut().enumerate() {
                    let row = a.add(r * stride + p);
                    s[j] = _mm256_fmadd_pd(_mm256_loadu_pd(row), xv, s[j]);
                }
                p += L;
                j += 1;
            }
            if p < k {
                let mask = first_lanes(k - p);
                let xv = _mm256_maskload_pd(xp.add(p), mask);
                for (r, s) in s.iter_mut().enumerate() {
                    let row = a.add(r * stride + p);
                    s[j] = _mm256_fmadd_pd(_mm256_maskload_pd(row, mask), xv, s[j]);
                }
            }
            for (r, s) in s.iter().enumerate() {
                let mut chains = [0.0; CHAINS];
                for (j, s) in s.iter().enumerate() {
                    _mm256_storeu_pd(chains.as_mut_ptr().add(j * L), *s);
                }
                *c.get_unchecked_mut(i0 + r) = reduce(&chains);
            }
        }
    }

    /// # Safety
    /// As [`super::matvec`]'s; the CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn columns(data: &[f64], stride: usize, x: &[f64], c: &mut [f64]) {
        let m = c.len();
        let mut i = 0;
        // SAFETY: entries i..i+V·L exist (the last strip masked).
        unsafe {
            while m - i >= 8 * L {
                strip::<8>(data, stride, x, c, i, L);
                i += 8 * L;
            }
            if m - i >= 4 * L {
                strip::<4>(data, stride, x, c, i, L);
                i += 4 * L;
            }
            if m - i >= 2 * L {
                strip::<2>(data, stride, x, c, i, L);
                i += 2 * L;
            }
            if m - i >= L {
                strip::<1>(data, stride, x, c, i, L);
                i += L;
            }
            if m > i {
                strip::<1>(data, stride, x, c, i, m - i);
            }
        }
    }

    /// Entries `i0..i0+V·L` of `c` (of the last vector its first `last` lanes), each an
    /// FMA chain over the columns in order from +0.0, in registers.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn strip<const V: usize>(
        data: &[f64],
        stride: usize,
        x: &[f64],
        c: &mut [f64],
        i0: usize,
        last: usize,
    ) {
        // SAFETY: entries `i0..i0+V·L` (the first `last` of the last vector) of each
        // column `p < k` are inside `data` and `c`.
        unsafe {
            let mut s = [_mm256_setzero_pd(); V];
            let a = data.as_ptr().add(i0);
            let mask = first_lanes(last);
            for (p, xp) in x.iter().enumerate() {
                let xp = _mm256_set1_pd(*xp);
                let column = a.add(p * stride);
                for (v, s) in s.iter_mut().enumerate() {
                    let av = if v + 1 == V && last < L {
                        _mm256_maskload_pd(column.add(v * L), mask)
                    } else {
                        _mm256_loadu_pd(column.add(v * L))
                    };
                    *s = _mm256_fmadd_pd(av, xp, *s);
                }
            }
            let out = c.as_mut_ptr().add(i0);
            for (v, s) in s.iter().enumerate() {
                if v + 1 == V && last < L {
                    _mm256_maskstore_pd(out.add(v * L), mask, *s);
                } else {
                    _mm256_storeu_pd(out.add(v * L), *s);
                }
            }
        }
    }
}
