//! `exp`, `log`, `log1p`, `tanh`, `sigmoid`, `softplus`, `sin`, `cos`, `erf`, `logaddexp` and
//! `pow` over whole slices, vectorized and bit for bit `math`'s scalar functions (the `libm`
//! crate's FreeBSD-msun code): the same IEEE operations in the same order, libm's branches
//! turned into selects, compiled for AVX-512 or AVX2 when the CPU has them (no FMA: Rust
//! never contracts). Entries outside libm's main range (|x| >= 708.39 for `exp`, x <= -1
//! for `log1p`, x <= 0 for `log`, |x| >= 2^20 π/2 for `sin` and `cos` (Payne–Hanek
//! reduction), for `pow` a base of 0, -1 or ±∞, |y| > 2^31, a result that over- or
//! underflows or is subnormal; NaN, ±∞) are recomputed by the scalar function; `tanh`
//! (through `expm1`'s code) has no such entries (NaN payloads aside). Both backends call
//! these on arrays.

use std::marker::PhantomData;

use super::math;

// libm's constants, by their bits (as its sources give them).
const LN2HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
const LN2LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
const INVLN2: f64 = f64::from_bits(0x3ff7_1547_652b_82fe);
const P1: f64 = f64::from_bits(0x3fc5_5555_5555_553e);
const P2: f64 = f64::from_bits(0xbf66_c16c_16be_bd93);
const P3: f64 = f64::from_bits(0x3f11_566a_af25_de2c);
const P4: f64 = f64::from_bits(0xbebb_bd41_c5d2_6bf1);
const P5: f64 = f64::from_bits(0x3e66_3769_72be_a4d0);
const LG1: f64 = f64::from_bits(0x3fe5_5555_5555_5593);
const LG2: f64 = f64::from_bits(0x3fd9_9999_9997_fa04);
const LG3: f64 = f64::from_bits(0x3fd2_4924_9422_9359);
const LG4: f64 = f64::from_bits(0x3fcc_71c5_1d8e_78af);
const LG5: f64 = f64::from_bits(0x3fc7_4664_96cb_03de);
const LG6: f64 = f64::from_bits(0x3fc3_9a09_d078_c69f);
const LG7: f64 = f64::from_bits(0x3fc2_f112_df3e_5244);

const Q1: f64 = f64::from_bits(0xbfa1_1111_1111_10f4);
const Q2: f64 = f64::from_bits(0x3f5a_01a0_19fe_5585);
const Q3: f64 = f64::from_bits(0xbf14_ce19_9eaa_dbb7);
const Q4: f64 = f64::from_bits(0x3ed0_cfca_86e6_5239);
const Q5: f64 = f64::from_bits(0xbe8a_fdb7_6e09_c32d);

/// 2^52 + 2^51: for an integer `k` below 2^50 in magnitude, `bits(k + MAGIC) ==
/// bits(MAGIC) + k` (the sum lies in [2^52, 2^53), where floats are the integers).
const MAGIC: f64 = 6_755_399_441_055_744.0;

#[inline(always)]
fn pick<T>(c: bool, a: T, b: T) -> T {
    if c { a } else { b }
}

/// `pick` by the bits: LLVM moves a float select over the division that follows it
/// (`pick(c, a, b) / d` became two divisions and a select), but not a blend of bits.
#[inline(always)]
fn pick_bits(c: bool, a: f64, b: f64) -> f64 {
    let m = u64::from(c).wrapping_neg();
    f64::from_bits((a.to_bits() & m) | (b.to_bits() & !m))
}

/// libm's range reduction of `exp` (and `expm1`): x = k ln2 + (hi - lo), k = 0 below
/// 0.5 ln2, ±1 below 1.5 ln2, else (INVLN2 x ± 0.5) truncated; `ax` is |x|.
#[inline(always)]
fn reduce_ln2(x: f64, ax: f64) -> (f64, f64, f64) {
    let negative = x < 0.0;
    let k_far = (INVLN2 * x + pick(negative, -0.5, 0.5)).trunc();
    let k = pick(
        ax >= f64::from_bits(0x3ff0_a2b2_0000_0000),
        k_far,
        pick(negative, -1.0, 1.0),
    );
    let k = pick(ax >= f64::from_bits(0x3fd6_2e43_0000_0000), k, 0.0);
    let hi = x - k * LN2HI;
    let lo = k * LN2LO;
    (k, hi, lo)
}

/// libm's `exp(x)` where |x| < 708.39... (the second value says so), no branches.
#[inline(always)]
fn exp_lane(x: f64) -> (f64, bool) {
    let ax = x.abs();
    let ok = ax < f64::from_bits(0x4086_232b_0000_0000);
    // x = k ln2 + r: k = 0 below 0.5 ln2, ±1 below 1.5 ln2, else (INVLN2 x ± 0.5)
    // truncated. With k = 0, hi = x, lo = 0 and r = x exactly, as in libm's middle case.
    let (k, hi, lo) = reduce_ln2(x, ax);
    let r = hi - lo;
    let rr = r * r;
    let c = r - rr * (P1 + rr * (P2 + rr * (P3 + rr * (P4 + rr * P5))));
    let y = 1.0 + (r * c / (2.0 - c) - lo + hi);
    // y 2^k with |k| <= 1022, where libm's `scalbn` is this one product.
    let k_bits = (k + MAGIC).to_bits().wrapping_sub(MAGIC.to_bits());
    let scale = f64::from_bits(k_bits.wrapping_add(1023) << 52);
    let value = pick(
        ax < f64::from_bits(0x3e30_0001_0000_0000),
        1.0 + x,
        y * scale,
    );
    (value, ok)
}

/// libm's `log1p(x)` where -1 < x < ∞, no branches.
#[inline(always)]
fn log1p_lane(x: f64) -> (f64, bool) {
    let ok = x > -1.0 && x < f64::INFINITY;
    // 1 + x within [sqrt(2)/2, sqrt(2)): k = 0, f = x, c = 0. Otherwise 1 + x = u =
    // 2^k (1 + f), with c the rounding error of 1 + x over u.
    let small =
        x > f64::from_bits(0xbfd2_bec5_0000_0000) && x < f64::from_bits(0x3fda_827a_0000_0000);
    let u = 1.0 + x;
    let ui = u.to_bits();
    let hu = (ui >> 32) + (0x3ff0_0000 - 0x3fe6_a09e);
    let k = ((hu >> 20) as i64) - 0x3ff;
    let dk = f64::from_bits((k as u64).wrapping_add(MAGIC.to_bits())) - MAGIC;
    let c = pick(dk >= 2.0, 1.0 - (u - x), x - (u - 1.0)) / u;
    let c = pick(dk < 54.0, c, 0.0);
    let hu = (hu & 0x000f_ffff) + 0x3fe6_a09e;
    let f = f64::from_bits((hu << 32) | (ui & 0xffff_ffff)) - 1.0;
    let (f, c, dk) = (pick(small, x, f), pick(small, 0.0, c), pick(small, 0.0, dk));
    let hfsq = 0.5 * f * f;
    let s = f / (2.0 + f);
    let z = s * s;
    let w = z * z;
    let t1 = w * (LG2 + w * (LG4 + w * LG6));
    let t2 = z * (LG1 + w * (LG3 + w * (LG5 + w * LG7)));
    let r = t2 + t1;
    let value = s * (hfsq + r) + (dk * LN2LO + c) - hfsq + f + dk * LN2HI;
    (
        pick(x.abs() < f64::from_bits(0x3ca0_0000_0000_0000), x, value),
        ok,
    )
}

/// The integer float `k` (|k| < 2^50) as an i64's bits.
#[inline(always)]
fn int_bits(k: f64) -> u64 {
    (k + MAGIC).to_bits().wrapping_sub(MAGIC.to_bits())
}

/// libm's `tanh(x)`, no branches (a NaN gives a NaN), in four stages (below).
///
/// libm takes `t = expm1(±2|x|)`, the sign chosen so that `k` of expm1's reduction is 0
/// or -1 below |x| = log(5/3)/2 and 1 to 58 above it, then one of three quotients. On
/// that range expm1's result formulas are one: with `d = r - e` (`r` the reduced
/// argument, `e` its correction), libm's `d` at k = 0, `0.5 d - 0.5` at k = -1 and
/// `1 + 2 d` at k = 1 are `(d + (1 - 2^-k)) 2^k` (scaling by 2^k is exact, so rounding
/// commutes with it), which is its formula for 2 <= k < 20; from k = 20 it adds 2^-k to
/// `e` instead. Beyond k = 56 (|x| > 19.5) libm's result is 1.0 through either formula.
///
/// The stages: [`tanh_reduce`] (k, r and r's rounding error c), [`tanh_poly`] (expm1's
/// polynomial), [`tanh_expm1`] (t) and [`tanh_quotient`]. [`tanh_blocks`] runs each over
/// a block before the next: one entry's chain of dependent operations (~45, two of them
/// divisions) is longer than the out-of-order window covers, so a loop of the whole chain
/// waited on latency; stage by stage it took 10–25 % less time (BENCHMARKS.md).
#[inline(always)]
fn tanh_reduce(x: f64) -> (f64, f64, f64) {
    let a = x.abs();
    // expm1(2|x|) beyond |x| > log(5/3)/2 ~= 0.2554, else expm1(-2|x|).
    let up = a >= f64::from_bits(0x3fd0_58af_0000_0000);
    let u = pick(up, 2.0, -2.0) * a;
    // expm1's k: trunc(u / ln2 + 0.5) above (k >= 1), -1 or 0 below (|u| < 0.52).
    let k_up = (INVLN2 * u + 0.5).trunc();
    let k_down = pick(u <= -f64::from_bits(0x3fd6_2e43_0000_0000), -1.0, 0.0);
    let k = pick(up, k_up, k_down);
    let hi = u - k * LN2HI;
    let lo = k * LN2LO;
    let r = hi - lo;
    let c = (hi - r) - lo;
    (k, r, c)
}

/// expm1's `r1` of the reduced argument `r`.
#[inline(always)]
fn tanh_poly(r: f64) -> f64 {
    let hfx = 0.5 * r;
    let hxs = r * hfx;
    1.0 + hxs * (Q1 + hxs * (Q2 + hxs * (Q3 + hxs * (Q4 + hxs * Q5))))
}

/// expm1's result `t` from [`tanh_reduce`]'s `(k, r, c)` and [`tanh_poly`]'s `r1`.
#[inline(always)]
fn tanh_expm1((k, r, c): (f64, f64, f64), r1: f64) -> f64 {
    let hfx = 0.5 * r;
    let hxs = r * hfx;
    let t = 3.0 - r1 * hfx;
    let e = hxs * ((r1 - t) / (6.0 - r * t));
    // At k = 0, c = 0 and this is libm's `r * e - hxs` bit for bit.
    let e = r * (e - c) - c - hxs;
    let kb = int_bits(k);
    let twopk = f64::from_bits(kb.wrapping_add(0x3ff) << 52);
    let twomk = f64::from_bits(0x3ffu64.wrapping_sub(kb) << 52);
    let from_20 = k >= 20.0;
    ((r - pick(from_20, e + twomk, e)) + pick(from_20, 1.0, 1.0 - twomk)) * twopk
}

/// `tanh(x)` from [`tanh_expm1`]'s `t`.
#[inline(always)]
fn tanh_quotient(x: f64, t: f64) -> f64 {
    let a = x.abs();
    let up = a >= f64::from_bits(0x3fd0_58af_0000_0000);
    // libm's three quotients, 2 / (t + 2) beyond log(3)/2 ~= 0.5493, t / (t + 2) and
    // -t / (t + 2) (the negation of t / (t + 2), bit for bit), as one division.
    let far = a >= f64::from_bits(0x3fe1_93eb_0000_0000);
    let q = pick_bits(far, 2.0, t) / (t + 2.0);
    let v = pick(far, 1.0 - q, pick(up, q, -q));
    // Subnormals (and a NaN, for which every comparison is false) give |x|.
    let v = pick(a >= f64::MIN_POSITIVE, v, a);
    let v = pick(a >= f64::from_bits(0x4034_0001_0000_0000), 1.0, v);
    pick(x.is_sign_negative(), -v, v)
}

/// Entries [`tanh_blocks`] takes through each stage before the next (6 KiB of stage
/// values on the stack; 128 was slower, 512 no faster).
const TANH_BLOCK: usize = 256;

/// libm's `tanh` over a slice at a level's width, block by block ([`by_blocks`]).
#[inline(always)]
fn tanh_blocks(xs: &[f64], out: &mut [f64]) {
    // The stage arrays of a whole block (6 KiB to set) only where there is one.
    if xs.len() < TANH_BLOCK {
        let mut tail = TanhStages::new();
        return by_blocks::<TAIL, TAIL>(xs, out, &mut TanhStages::new(), &mut tail);
    }
    by_blocks::<TANH_BLOCK, TAIL>(xs, out, &mut TanhStages::new(), &mut TanhStages::new());
}

/// One block's stage values (`k`, `r`, `c` of [`tanh_reduce`]), on the stack, set once
/// a slice rather than once a block.
struct TanhStages<const N: usize> {
    k: [f64; N],
    r: [f64; N],
    c: [f64; N],
}

impl<const N: usize> TanhStages<N> {
    #[inline(always)]
    fn new() -> Self {
        TanhStages {
            k: [0.0; N],
            r: [0.0; N],
            c: [0.0; N],
        }
    }
}

/// [`tanh_blocks`]'s four stages over one block, `out` holding `r1`, then `t`, then the
/// result.
impl<const N: usize> Block<N> for TanhStages<N> {
    #[inline(always)]
    fn run(&mut self, xs: &[f64; N], out: &mut [f64; N]) {
        let TanhStages { k, r, c } = self;
        for i in 0..N {
            (k[i], r[i], c[i]) = tanh_reduce(xs[i]);
        }
        for i in 0..N {
            out[i] = tanh_poly(r[i]);
        }
        for i in 0..N {
            out[i] = tanh_expm1((k[i], r[i], c[i]), out[i]);
        }
        for i in 0..N {
            out[i] = tanh_quotient(xs[i], out[i]);
        }
    }
}

/// libm's `log(x)` where 0 < x < ∞, no branches.
#[inline(always)]
fn log_lane(x: f64) -> (f64, bool) {
    let ok = x > 0.0 && x < f64::INFINITY;
    // Subnormals scaled by 2^54 into the normal range.
    let sub = x < f64::MIN_POSITIVE;
    let xs = pick(sub, x * f64::from_bits(0x4350_0000_0000_0000), x);
    let ui = xs.to_bits();
    // x = 2^k (1 + f) with 1 + f in [sqrt(2)/2, sqrt(2)).
    let hx = (ui >> 32) + (0x3ff0_0000 - 0x3fe6_a09e);
    let k = ((hx >> 20) as i64) - 0x3ff;
    let dk = f64::from_bits((k as u64).wrapping_add(MAGIC.to_bits())) - MAGIC;
    let dk = pick(sub, dk - 54.0, dk);
    let hx = (hx & 0x000f_ffff) + 0x3fe6_a09e;
    let f = f64::from_bits((hx << 32) | (ui & 0xffff_ffff)) - 1.0;
    let hfsq = 0.5 * f * f;
    let s = f / (2.0 + f);
    let z = s * s;
    let w = z * z;
    let t1 = w * (LG2 + w * (LG4 + w * LG6));
    let t2 = z * (LG1 + w * (LG3 + w * (LG5 + w * LG7)));
    let r = t2 + t1;
    let value = s * (hfsq + r) + dk * LN2LO - hfsq + f + dk * LN2HI;
    (pick(x == 1.0, 0.0, value), ok)
}

// libm's `rem_pio2` constants (π/2 in pieces of 33 bits, and their tails).
const TO_INT: f64 = 1.5 / f64::EPSILON;
const INV_PIO2: f64 = f64::from_bits(0x3fe4_5f30_6dc9_c883);
const PIO2_1: f64 = f64::from_bits(0x3ff9_21fb_5440_0000);
const PIO2_1T: f64 = f64::from_bits(0x3dd0_b461_1a62_6331);
const PIO2_2: f64 = f64::from_bits(0x3dd0_b461_1a60_0000);
const PIO2_2T: f64 = f64::from_bits(0x3ba3_198a_2e03_7073);
const PIO2_3: f64 = f64::from_bits(0x3ba3_198a_2e00_0000);
const PIO2_3T: f64 = f64::from_bits(0x397b_839a_2520_49c1);
// libm's `__sin` and `__cos` kernels' coefficients.
const S1: f64 = f64::from_bits(0xbfc5_5555_5555_5549);
const S2: f64 = f64::from_bits(0x3f81_1111_1110_f8a6);
const S3: f64 = f64::from_bits(0xbf2a_01a0_19c1_61d5);
const S4: f64 = f64::from_bits(0x3ec7_1de3_57b1_fe7d);
const S5: f64 = f64::from_bits(0xbe5a_e5e6_8a2b_9ceb);
const S6: f64 = f64::from_bits(0x3de5_d93a_5acf_d57c);
const C1: f64 = f64::from_bits(0x3fa5_5555_5555_554c);
const C2: f64 = f64::from_bits(0xbf56_c16c_16c1_5177);
const C3: f64 = f64::from_bits(0x3efa_01a0_19cb_1590);
const C4: f64 = f64::from_bits(0xbe92_7e4f_809c_52ad);
const C5: f64 = f64::from_bits(0x3e21_ee9e_bdb4_b1c4);
const C6: f64 = f64::from_bits(0xbda8_fae9_be88_38d4);

/// The high word of `x`'s bits without the sign, as libm's `ix`.
#[inline(always)]
fn high_abs(x: f64) -> u64 {
    (x.to_bits() >> 32) & 0x7fff_ffff
}

/// libm's `rem_pio2(x)` for π/4 < |x| < 2^20 π/2: x = n π/2 + (y0 + y1), n as a float.
/// Up to 9π/4 a fixed multiple of π/2 is subtracted, except near π/2, π, 3π/2 and 2π;
/// there and beyond, n = rint(x 2/π) and one, two or three rounds of subtraction, as the
/// cancellation needs.
#[inline(always)]
fn rem_pio2_lane(x: f64) -> (f64, f64, f64) {
    let ix = high_abs(x);
    let f_n = (x * INV_PIO2 + TO_INT) - TO_INT;
    let r1 = x - f_n * PIO2_1;
    let w1 = f_n * PIO2_1T;
    let y0_1 = r1 - w1;
    let ex = (ix >> 20) as i64;
    let exponent = |y: f64| ((y.to_bits() >> 52) & 0x7ff) as i64;
    let w2 = f_n * PIO2_2;
    let r2 = r1 - w2;
    let w2 = f_n * PIO2_2T - ((r1 - r2) - w2);
    let y0_2 = r2 - w2;
    let w3 = f_n * PIO2_3;
    let r3 = r2 - w3;
    let w3 = f_n * PIO2_3T - ((r2 - r3) - w3);
    let y0_3 = r3 - w3;
    let third = ex - exponent(y0_2) > 49;
    let (r2, w2, y0_2) = (
        pick(third, r3, r2),
        pick(third, w3, w2),
        pick(third, y0_3, y0_2),
    );
    let second = ex - exponent(y0_1) > 16;
    let (r, w, y0) = (
        pick(second, r2, r1),
        pick(second, w2, w1),
        pick(second, y0_2, y0_1),
    );
    let medium_y1 = (r - y0) - w;
    // The fixed multiples: x ∓ n PIO2_1 ∓ n PIO2_1T for n = ±1 … ±4.
    let k = pick(
        ix <= 0x4002_d97c,
        1.0,
        pick(ix <= 0x400f_6a7a, 2.0, pick(ix <= 0x4015_fdbc, 3.0, 4.0)),
    );
    let k = pick(x < 0.0, -k, k);
    let z = x - k * PIO2_1;
    let small_y0 = z - k * PIO2_1T;
    let small_y1 = (z - small_y0) - k * PIO2_1T;
    let medium = ix > 0x401c_463b
        || (ix <= 0x400f_6a7a && (ix & 0xfffff) == 0x921fb)
        || ix == 0x4012_d97c
        || ix == 0x4019_21fb;
    (
        pick(medium, f_n, k),
        pick(medium, y0, small_y0),
        pick(medium, medium_y1, small_y1),
    )
}

/// libm's `__sin(x, y, iy)` and `__cos(x, y)` at once (they share `x²`).
#[inline(always)]
fn sin_cos_kernels(x: f64, y: f64, iy0: bool) -> (f64, f64) {
    let z = x * x;
    let w = z * z;
    let r = S2 + z * (S3 + z * S4) + z * w * (S5 + z * S6);
    let v = z * x;
    let sin = pick(
        iy0,
        x + v * (S1 + z * r),
        x - ((z * (0.5 * y - v * r) - y) - v * S1),
    );
    let r = z * (C1 + z * (C2 + z * C3)) + w * w * (C4 + z * (C5 + z * C6));
    let hz = 0.5 * z;
    let w = 1.0 - hz;
    let cos = w + (((1.0 - w) - hz) + (z * r - x * y));
    (sin, cos)
}

/// libm's `sin(x)` and `cos(x)` where |x| < 2^20 π/2 (the third value says so; beyond,
/// `rem_pio2` takes the Payne–Hanek path, left to the scalar function), no branches.
#[inline(always)]
fn sin_cos_lane(x: f64) -> (f64, f64, bool) {
    let ix = high_abs(x);
    let ok = ix < 0x4139_21fb;
    // |x| <= π/4: the kernels on (x, 0), `__sin` in its `iy = 0` form.
    let near = ix <= 0x3fe9_21fb;
    let (n, y0, y1) = rem_pio2_lane(x);
    let (y0, y1) = (pick(near, x, y0), pick(near, 0.0, y1));
    let (s, c) = sin_cos_kernels(y0, y1, near);
    let quadrant = pick(near, 0, int_bits(n) & 3);
    let sin = pick(quadrant & 1 == 0, s, c);
    let sin = pick(quadrant >= 2, -sin, sin);
    let cos = pick(quadrant & 1 == 0, c, s);
    let cos = pick(quadrant == 1 || quadrant == 2, -cos, cos);
    // cos: 1 below 2^-27 sqrt(2); sin: x below 2^-26.
    (
        pick(ix < 0x3e50_0000, x, sin),
        pick(ix < 0x3e46_a09e, 1.0, cos),
        ok,
    )
}

/// libm's `sin(x)` where |x| < 2^20 π/2.
#[inline(always)]
fn sin_lane(x: f64) -> (f64, bool) {
    let (s, _, ok) = sin_cos_lane(x);
    (s, ok)
}

/// libm's `cos(x)` where |x| < 2^20 π/2.
#[inline(always)]
fn cos_lane(x: f64) -> (f64, bool) {
    let (_, c, ok) = sin_cos_lane(x);
    (c, ok)
}

// libm's `pow` constants.
const BP1: f64 = 1.5;
const DP_H1: f64 = f64::from_bits(0x3fe2_b803_4000_0000);
const DP_L1: f64 = f64::from_bits(0x3e4c_fdeb_43cf_d006);
const TWO53: f64 = 9_007_199_254_740_992.0;
const L1: f64 = f64::from_bits(0x3fe3_3333_3333_3303);
const L2: f64 = f64::from_bits(0x3fdb_6db6_db6f_abff);
const L3: f64 = f64::from_bits(0x3fd5_5555_518f_264d);
const L4: f64 = f64::from_bits(0x3fd1_7460_a91d_4101);
const L5: f64 = f64::from_bits(0x3fcd_864a_93c9_db65);
const L6: f64 = f64::from_bits(0x3fca_7e28_4a45_4eef);
const LN2: f64 = f64::from_bits(0x3fe6_2e42_fefa_39ef);
const LN2_H: f64 = f64::from_bits(0x3fe6_2e43_0000_0000);
const LN2_L: f64 = f64::from_bits(0xbe20_5c61_0ca8_6c39);
const CP: f64 = f64::from_bits(0x3fee_c709_dc3a_03fd);
const CP_H: f64 = f64::from_bits(0x3fee_c709_e000_0000);
const CP_L: f64 = f64::from_bits(0xbe3e_2fe0_145b_01f5);

/// The high word of `x`'s bits, signed, as libm's `get_high_word`.
#[inline(always)]
fn high(x: f64) -> i32 {
    (x.to_bits() >> 32) as i32
}

/// `x` with its low word cleared (libm's `with_set_low_word(x, 0)`).
#[inline(always)]
fn low_cleared(x: f64) -> f64 {
    f64::from_bits(x.to_bits() & 0xffff_ffff_0000_0000)
}

/// `x` with high word `h` (libm's `with_set_high_word`).
#[inline(always)]
fn with_high(x: f64, h: i32) -> f64 {
    f64::from_bits((x.to_bits() & 0xffff_ffff) | (u64::from(h as u32) << 32))
}

/// libm's `pow(x, y)` for finite x other than 0 and -1, finite y with |y| <= 2^31, and a
/// normal result (the second value says so), with the special exponents 0, ±1, 2 and
/// 1/2 and a base of 1 as libm takes them; no branches. Integer arithmetic wraps, as
/// entries out of range may compute anything.
#[inline(always)]
fn pow_lane(x: f64, y: f64) -> (f64, bool) {
    let (hx, hy) = (high(x), high(y));
    let (ix, iy) = (hx & 0x7fff_ffff, hy & 0x7fff_ffff);
    let negative = x < 0.0;
    let y_int = y == y.trunc();
    let y_odd = y_int && (0.5 * y) != (0.5 * y).trunc();
    let mut ok = x.is_finite()
        && y.is_finite()
        && x != 0.0
        && x != -1.0
        && iy <= 0x41e0_0000
        && (!negative || y_int);
    let sign = pick(negative && y_odd, -1.0, 1.0);
    // log2|x| = t1 + t2, |x| = 2^n (1 + f) with 1 + f in [1, sqrt(3/2)), [sqrt(3/2),
    // sqrt(3)) (`mid`: measured from 1.5), or halved from [sqrt(3), 2).
    let subnormal = ix < 0x0010_0000;
    let ax = pick(subnormal, x.abs() * TWO53, x.abs());
    let ia = high(ax);
    let j = ia & 0x000f_ffff;
    let mid = j > 0x3988e && j < 0xbb67a;
    let up = j >= 0xbb67a;
    let n = pick(subnormal, -53, 0) + (ia >> 20) - 0x3ff + i32::from(up);
    let ia = (j | 0x3ff0_0000) - pick(up, 0x0010_0000, 0);
    let ax = with_high(ax, ia);
    let (bp, dp_h, dp_l) = (
        pick(mid, BP1, 1.0),
        pick(mid, DP_H1, 0.0),
        pick(mid, DP_L1, 0.0),
    );
    let u = ax - bp;
    let v = 1.0 / (ax + bp);
    let ss = u * v;
    let s_h = low_cleared(ss);
    let t_h = with_high(
        0.0,
        (((ia as u32 >> 1) | 0x2000_0000) + 0x0008_0000 + (u32::from(mid) << 18)) as i32,
    );
    let t_l = ax - (t_h - bp);
    let s_l = v * ((u - s_h * t_h) - s_h * t_l);
    let s2 = ss * ss;
    let r = s2 * s2 * (L1 + s2 * (L2 + s2 * (L3 + s2 * (L4 + s2 * (L5 + s2 * L6)))));
    let r = r + s_l * (s_h + ss);
    let s2 = s_h * s_h;
    let t_h = low_cleared(3.0 + s2 + r);
    let t_l = r - ((t_h - 3.0) - s2);
    let u = s_h * t_h;
    let v = s_l * t_h + t_l * ss;
    let p_h = low_cleared(u + v);
    let p_l = v - (p_h - u);
    let z_h = CP_H * p_h;
    let z_l = CP_L * p_h + p_l * CP + dp_l;
    let t = f64::from(n);
    let t1 = low_cleared(((z_h + z_l) + dp_h) + t);
    let t2 = z_l - (((t1 - t) - dp_h) - z_h);
    // y log2|x| = p_h + p_l = z; overflow (z >= 1024) and underflow (z <= -1075) are the
    // scalar function's.
    let y1 = low_cleared(y);
    let p_l = (y - y1) * t1 + y * t2;
    let p_h = y1 * t1;
    let z = p_l + p_h;
    let j = high(z);
    ok &= j < 0x4090_0000 && (j & 0x7fff_ffff) < 0x4090_cc00;
    // 2^z = 2^n 2^(p_h + p_l), n = rint(z) where |z| > 1/2.
    let i = j & 0x7fff_ffff;
    let far = i > 0x3fe0_0000;
    let k = ((i >> 20) - 0x3ff).clamp(-1, 19);
    let m = j.wrapping_add(0x0010_0000 >> (k + 1));
    let k = (((m & 0x7fff_ffff) >> 20) - 0x3ff).clamp(0, 20);
    let t = with_high(0.0, m & !(0x000f_ffff >> k));
    let m = ((m & 0x000f_ffff) | 0x0010_0000) >> (20 - k);
    let n = pick(far, pick(j < 0, m.wrapping_neg(), m), 0);
    let p_h = pick(far, p_h - t, p_h);
    let t = low_cleared(p_l + p_h);
    let u = t * LN2_H;
    let v = (p_l - (t - p_h)) * LN2 + t * LN2_L;
    let z = u + v;
    let w = v - (z - u);
    let t = z * z;
    let t1 = z - t * (P1 + t * (P2 + t * (P3 + t * (P4 + t * P5))));
    let r = (z * t1) / (t1 - 2.0) - (w + z * w);
    let z = 1.0 - (r - z);
    let j = high(z).wrapping_add(n.wrapping_shl(20));
    // A subnormal result is `scalbn`'s, the scalar function's.
    ok &= (j >> 20) > 0;
    let value = sign * with_high(z, j);
    // libm's shortcuts, in its order.
    let value = pick(y == 0.5 && !negative, x.sqrt(), value);
    let value = pick(y == 2.0, x * x, value);
    let value = pick(y == 1.0, x, pick(y == -1.0, 1.0 / x, value));
    let value = pick(x == 1.0, 1.0, value);
    (pick(y == 0.0, 1.0, value), ok)
}

// libm's `erf` coefficients: x + x P(x^2)/Q(x^2) below |x| = 0.84375, 1 - ERX - P(|x| -
// 1)/Q(|x| - 1) below 1.25, and erfc's R(1/x^2)/S(1/x^2) below 1/0.35 (`ERFC_A`) and
// beyond (`ERFC_B`, padded with a zero at the top: `c + s 0` is `c`). Each array is in
// Horner order from the constant term (`horner`).
const ERX: f64 = f64::from_bits(0x3feb_0ac1_6000_0000);
const EFX8: f64 = f64::from_bits(0x3ff0_6eba_8214_db69);
const ERF_P: [f64; 5] = [
    f64::from_bits(0x3fc0_6eba_8214_db68),
    f64::from_bits(0xbfd4_cd7d_691c_b913),
    f64::from_bits(0xbf9d_2a51_dbd7_194f),
    f64::from_bits(0xbf77_a291_2366_68e4),
    f64::from_bits(0xbef8_ead6_1200_16ac),
];
const ERF_Q: [f64; 6] = [
    1.0,
    f64::from_bits(0x3fd9_7779_cdda_dc09),
    f64::from_bits(0x3fb0_a54c_5536_ceba),
    f64::from_bits(0x3f74_d022_c4d3_6b0f),
    f64::from_bits(0x3f21_5dc9_221c_1a10),
    f64::from_bits(0xbed0_9c43_42a2_6120),
];
const ERF1_P: [f64; 7] = [
    f64::from_bits(0xbf63_59b8_bef7_7538),
    f64::from_bits(0x3fda_8d00_ad92_b34d),
    f64::from_bits(0xbfd7_d240_fbb8_c3f1),
    f64::from_bits(0x3fd4_5fca_8051_20e4),
    f64::from_bits(0xbfbc_6398_3d3e_28ec),
    f64::from_bits(0x3fa2_2a36_5997_95eb),
    f64::from_bits(0xbf61_bf38_0a96_073f),
];
const ERF1_Q: [f64; 7] = [
    1.0,
    f64::from_bits(0x3fbb_3e66_18ee_e323),
    f64::from_bits(0x3fe1_4af0_92eb_6f33),
    f64::from_bits(0x3fb2_635c_d99f_e9a7),
    f64::from_bits(0x3fc0_2660_e763_351f),
    f64::from_bits(0x3f8b_edc2_6b51_dd1c),
    f64::from_bits(0x3f88_8b54_5735_151d),
];
const ERFC_A_R: [f64; 8] = [
    f64::from_bits(0xbf84_3412_600d_6435),
    f64::from_bits(0xbfe6_3416_e4ba_7360),
    f64::from_bits(0xc025_1e04_41b0_e726),
    f64::from_bits(0xc04f_300a_e4cb_a38d),
    f64::from_bits(0xc064_4cb1_8428_2266),
    f64::from_bits(0xc067_135c_ebcc_abb2),
    f64::from_bits(0xc054_5265_57e4_d2f2),
    f64::from_bits(0xc023_a0ef_c69a_c25c),
];
const ERFC_A_S: [f64; 9] = [
    1.0,
    f64::from_bits(0x4033_a6b9_bd70_7687),
    f64::from_bits(0x4061_350c_526a_e721),
    f64::from_bits(0x407b_290d_d58a_1a71),
    f64::from_bits(0x4084_2b19_21ec_2868),
    f64::from_bits(0x407a_d021_5770_0314),
    f64::from_bits(0x405b_28a3_ee48_ae2c),
    f64::from_bits(0x401a_47ef_8e48_4a93),
    f64::from_bits(0xbfae_eff2_ee74_9a62),
];
const ERFC_B_R: [f64; 8] = [
    f64::from_bits(0xbf84_3412_39e8_6f4a),
    f64::from_bits(0xbfe9_93ba_70c2_85de),
    f64::from_bits(0xc031_c209_555f_995a),
    f64::from_bits(0xc064_145d_43c5_ed98),
    f64::from_bits(0xc083_ec88_1375_f228),
    f64::from_bits(0xc090_0461_6a2e_5992),
    f64::from_bits(0xc07e_384e_9bdc_383f),
    0.0,
];
const ERFC_B_S: [f64; 9] = [
    1.0,
    f64::from_bits(0x403e_568b_261d_5190),
    f64::from_bits(0x4074_5cae_221b_9f0a),
    f64::from_bits(0x4098_02eb_189d_5118),
    f64::from_bits(0x40a8_ffb7_688c_246a),
    f64::from_bits(0x40a3_f219_cedf_3be6),
    f64::from_bits(0x407d_a874_e79f_e763),
    f64::from_bits(0xc036_70e2_4271_2d62),
    0.0,
];

/// `c[0] + x (c[1] + x (c[2] + ...))`, libm's order of operations.
#[inline(always)]
fn horner<const N: usize>(x: f64, c: [f64; N]) -> f64 {
    let mut acc = c[N - 1];
    for i in (0..N - 1).rev() {
        acc = c[i] + x * acc;
    }
    acc
}

/// Whether libm's `erf(x)` takes erfc's formula ([`erfc_lane`]): 1.25 <= |x| < 6.
#[inline(always)]
fn erf_needs_erfc(x: f64) -> bool {
    (0x3ff4_0000..0x4018_0000).contains(&high_abs(x))
}

/// libm's `erf(x)` where x is finite and not [`erf_needs_erfc`], no branches: x + x
/// P/Q(x^2) below |x| = 0.84375 (an exact scaling below 2^-28), 1 - (1 - ERX - P/Q(|x| -
/// 1)) below 1.25 (with the sign), ±1 from 6.
#[inline(always)]
fn erf_lane(x: f64) -> (f64, bool) {
    let ix = high_abs(x);
    let z = x * x;
    let small = x + x * (horner(z, ERF_P) / horner(z, ERF_Q));
    let tiny = 0.125 * (8.0 * x + EFX8 * x);
    let s = x.abs() - 1.0;
    let y = 1.0 - (1.0 - ERX - horner(s, ERF1_P) / horner(s, ERF1_Q));
    let y = pick(ix < 0x4018_0000, y, 1.0 - f64::MIN_POSITIVE);
    let y = pick(x.is_sign_negative(), -y, y);
    let y = pick(ix < 0x3feb_0000, pick(ix < 0x3e30_0000, tiny, small), y);
    (y, ix < 0x7ff0_0000)
}

/// libm's `erf(x)` where [`erf_needs_erfc`]: one minus exp(-z^2 - 0.5625) times
/// exp((z - |x|)(z + |x|) + R/S(1/x^2)) over |x| (z is |x| with its low word cleared),
/// with either set of erfc's coefficients, picked per entry. Both `exp`s are inside their
/// lane code's range there.
#[inline(always)]
fn erfc_lane(x: f64) -> f64 {
    let a = x.abs();
    let s = 1.0 / (a * a);
    let near = high_abs(x) < 0x4006_db6d;
    let r = horner(
        s,
        std::array::from_fn::<f64, 8, _>(|i| pick(near, ERFC_A_R[i], ERFC_B_R[i])),
    );
    let big_s = horner(
        s,
        std::array::from_fn::<f64, 9, _>(|i| pick(near, ERFC_A_S[i], ERFC_B_S[i])),
    );
    let z = f64::from_bits(a.to_bits() & 0xffff_ffff_0000_0000);
    let (e1, _) = exp_lane(-z * z - 0.5625);
    let (e2, _) = exp_lane((z - a) * (z + a) + r / big_s);
    let y = 1.0 - e1 * e2 / a;
    pick(x.is_sign_negative(), -y, y)
}

/// `erf` over a block at a level's width: [`erf_lane`] over every entry, then the entries
/// that take erfc's formula (a few in most data: |x| >= 1.25), gathered, by
/// [`erfc_lane`]; a block with a NaN or ±∞ by the scalar function.
#[inline(always)]
fn erf_blocks(xs: &[f64], out: &mut [f64]) {
    by_blocks::<BLOCK, TAIL>(xs, out, &mut Erf, &mut Erf);
}

/// [`erf_blocks`] over one block.
struct Erf;

impl<const N: usize> Block<N> for Erf {
    #[inline(always)]
    fn run(&mut self, xs: &[f64; N], out: &mut [f64; N]) {
        // `needs` has a bit for each entry.
        const { assert!(N <= 64) };
        let mut all = true;
        for i in 0..N {
            let (v, ok) = erf_lane(xs[i]);
            out[i] = v;
            all &= ok;
        }
        if !all {
            for i in 0..N {
                out[i] = math::erf(xs[i]);
            }
            return;
        }
        let mut needs = 0u64;
        for (i, x) in xs.iter().enumerate() {
            needs |= u64::from(erf_needs_erfc(*x)) << i;
        }
        // Gathered into whole vectors (the rest of the last one a valid argument, 2.0).
        let (mut far, mut at, mut m) = ([2.0; N], [0; N], 0);
        while needs != 0 {
            let i = needs.trailing_zeros() as usize;
            (far[m], at[m]) = (xs[i], i);
            m += 1;
            needs &= needs - 1;
        }
        let mut values = [0.0; N];
        let whole = m.div_ceil(8) * 8;
        for (v, x) in values[..whole].iter_mut().zip(&far[..whole]) {
            *v = erfc_lane(*x);
        }
        for (v, i) in values[..m].iter().zip(&at[..m]) {
            out[*i] = *v;
        }
    }
}

/// `math::sigmoid`: both of its branches take `exp(-|x|)`.
#[inline(always)]
fn sigmoid_lane(x: f64) -> (f64, bool) {
    let (e, ok) = exp_lane(-x.abs());
    (pick(x >= 0.0, 1.0 / (1.0 + e), e / (1.0 + e)), ok)
}

/// `math::softplus`.
#[inline(always)]
fn softplus_lane(x: f64) -> (f64, bool) {
    let (e, e_ok) = exp_lane(-x.abs());
    let (l, l_ok) = log1p_lane(e);
    (x.max(0.0) + l, e_ok && l_ok)
}

/// `math::logaddexp` (both -∞ give a NaN difference, so the scalar function).
#[inline(always)]
fn logaddexp_lane(a: f64, b: f64) -> (f64, bool) {
    let (e, e_ok) = exp_lane(-(a - b).abs());
    let (l, l_ok) = log1p_lane(e);
    (a.max(b) + l, e_ok && l_ok)
}

/// Entries computed together: a block with an entry out of its lane code's range is
/// recomputed by the scalar function, so one such entry costs a block of scalar calls,
/// not a second pass over the slice.
const BLOCK: usize = 64;

/// A computation over one block of `N` entries, for [`by_blocks`].
trait Block<const N: usize> {
    fn run(&mut self, xs: &[f64; N], out: &mut [f64; N]);
}

/// A computation of two operands over one block of `N` entries, for [`by_blocks2`].
trait Block2<const N: usize> {
    fn run(&mut self, a: &[f64; N], b: &[f64; N], out: &mut [f64; N]);
}

/// Entries of the blocks a slice's last `len % N` entries go through in [`by_blocks`].
const TAIL: usize = 16;

/// Runs `whole` over whole blocks of `N` entries of `xs` and `out`, then `tail` over the
/// rest in blocks of `T`, the last one padded with copies of the slice's last entry. Every
/// loop of a block then has a constant trip count: over a block of a slice's length, LLVM
/// left each vector loop's last iteration to scalar code (tanh: 12 % of the entries, at
/// ~8 times the cost); small tail blocks keep short slices short (a whole padded block of
/// 256 made a 10-entry tanh 4 times slower). The blocks are [`Block`]s rather than
/// closures: their `#[inline(always)]` `run` is inlined into the caller's
/// `target_feature` code, where a closure defined here was not (and ran baseline scalar
/// code).
#[inline(always)]
fn by_blocks<const N: usize, const T: usize>(
    xs: &[f64],
    out: &mut [f64],
    whole: &mut impl Block<N>,
    tail: &mut impl Block<T>,
) {
    assert_eq!(xs.len(), out.len(), "vmath: slices of different lengths");
    let mut xs_blocks = xs.chunks_exact(N);
    let mut out_blocks = out.chunks_exact_mut(N);
    for (o, x) in (&mut out_blocks).zip(&mut xs_blocks) {
        whole.run(x.try_into().unwrap(), o.try_into().unwrap());
    }
    let mut xs_blocks = xs_blocks.remainder().chunks_exact(T);
    let mut out_blocks = out_blocks.into_remainder().chunks_exact_mut(T);
    for (o, x) in (&mut out_blocks).zip(&mut xs_blocks) {
        tail.run(x.try_into().unwrap(), o.try_into().unwrap());
    }
    let (rest, out) = (xs_blocks.remainder(), out_blocks.into_remainder());
    if let Some(&last) = rest.last() {
        let mut padded = [last; T];
        padded[..rest.len()].copy_from_slice(rest);
        let mut result = [0.0; T];
        tail.run(&padded, &mut result);
        out.copy_from_slice(&result[..out.len()]);
    }
}

/// Runs `block` over the whole blocks of `K` entries at the start of `a`, `b` and `out`;
/// the entries they cover.
#[inline(always)]
fn whole_blocks2<const K: usize>(
    a: &[f64],
    b: &[f64],
    out: &mut [f64],
    block: &mut impl Block2<K>,
) -> usize {
    let done = a.len() / K * K;
    for ((o, x), y) in out[..done]
        .chunks_exact_mut(K)
        .zip(a[..done].chunks_exact(K))
        .zip(b[..done].chunks_exact(K))
    {
        let (x, y) = (x.try_into().unwrap(), y.try_into().unwrap());
        block.run(x, y, o.try_into().unwrap());
    }
    done
}

/// [`by_blocks`] for two operands.
#[inline(always)]
fn by_blocks2<const N: usize, const T: usize>(
    a: &[f64],
    b: &[f64],
    out: &mut [f64],
    whole: &mut impl Block2<N>,
    tail: &mut impl Block2<T>,
) {
    assert_eq!(a.len(), out.len(), "vmath: slices of different lengths");
    assert_eq!(b.len(), out.len(), "vmath: slices of different lengths");
    let done = whole_blocks2(a, b, out, whole);
    let (a, b, out) = (&a[done..], &b[done..], &mut out[done..]);
    let done = whole_blocks2(a, b, out, tail);
    let (a, b, out) = (&a[done..], &b[done..], &mut out[done..]);
    if let (Some(&x), Some(&y)) = (a.last(), b.last()) {
        let (mut pa, mut pb) = ([x; T], [y; T]);
        pa[..a.len()].copy_from_slice(a);
        pb[..b.len()].copy_from_slice(b);
        let mut result = [0.0; T];
        tail.run(&pa, &pb, &mut result);
        out.copy_from_slice(&result[..out.len()]);
    }
}

/// A function of one operand with lane code: `lane(x)` and whether `x` is in its range,
/// and the scalar function it equals there.
trait Lanes1 {
    fn lane(x: f64) -> (f64, bool);
    fn scalar(x: f64) -> f64;
}

/// [`Lanes1`] for two operands.
trait Lanes2 {
    fn lane(x: f64, y: f64) -> (f64, bool);
    fn scalar(x: f64, y: f64) -> f64;
}

/// `out[i] = F::lane(xs[i])`, or `F::scalar(xs[i])` over each block with an entry out of
/// range.
#[inline(always)]
fn map1<F: Lanes1>(xs: &[f64], out: &mut [f64]) {
    by_blocks::<BLOCK, TAIL>(
        xs,
        out,
        &mut Map::<F>(PhantomData),
        &mut Map::<F>(PhantomData),
    );
}

/// [`map1`] for two operands.
#[inline(always)]
fn map2<F: Lanes2>(a: &[f64], b: &[f64], out: &mut [f64]) {
    let (mut whole, mut tail) = (Map::<F>(PhantomData), Map::<F>(PhantomData));
    by_blocks2::<BLOCK, TAIL>(a, b, out, &mut whole, &mut tail);
}

/// A function with lane code over a block: the lane code's values, or the scalar
/// function's over a block with an entry out of the lane code's range.
struct Map<F>(PhantomData<F>);

impl<const N: usize, F: Lanes1> Block<N> for Map<F> {
    #[inline(always)]
    fn run(&mut self, xs: &[f64; N], out: &mut [f64; N]) {
        let mut all = true;
        for i in 0..N {
            let (v, ok) = F::lane(xs[i]);
            out[i] = v;
            all &= ok;
        }
        if !all {
            for i in 0..N {
                out[i] = F::scalar(xs[i]);
            }
        }
    }
}

impl<const N: usize, F: Lanes2> Block2<N> for Map<F> {
    #[inline(always)]
    fn run(&mut self, a: &[f64; N], b: &[f64; N], out: &mut [f64; N]) {
        let mut all = true;
        for i in 0..N {
            let (v, ok) = F::lane(a[i], b[i]);
            out[i] = v;
            all &= ok;
        }
        if !all {
            for i in 0..N {
                out[i] = F::scalar(a[i], b[i]);
            }
        }
    }
}

/// What the CPU running this can take.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Level {
    /// The scalar functions, entry by entry (x86-64 without AVX2, whose baseline has no
    /// vector `trunc`).
    Scalar,
    /// The lane code as compiled for the target (on x86-64 only in the tests).
    #[cfg_attr(target_arch = "x86_64", allow(dead_code))]
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

fn level() -> Level {
    static LEVEL: std::sync::OnceLock<Level> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                Level::Avx512
            } else if std::arch::is_x86_feature_detected!("avx2") {
                Level::Avx2
            } else {
                Level::Scalar
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        Level::Portable
    })
}

/// Whether this CPU has AVX-512F (`math::small_gemv` is compiled for it too).
#[cfg(target_arch = "x86_64")]
pub(super) fn has_avx512() -> bool {
    level() == Level::Avx512
}

/// The levels this CPU can run, for the tests.
#[cfg(test)]
fn levels() -> Vec<Level> {
    let mut all = vec![Level::Scalar, Level::Portable];
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            all.push(Level::Avx2);
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            all.push(Level::Avx512);
        }
    }
    all
}

/// `$body` (a function of `$arg`s) run at `$level` (not `Level::Scalar`): compiled once
/// per level with that level's target features, so LLVM vectorizes it for them.
macro_rules! at_level {
    ($level:expr, fn($($arg:ident: $ty:ty),*) $body:block) => {{
        fn portable($($arg: $ty),*) $body
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        fn avx2($($arg: $ty),*) $body
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f")]
        fn avx512($($arg: $ty),*) $body
        match $level {
            // SAFETY: `level()` found AVX2 on this CPU.
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => unsafe { avx2($($arg),*) },
            // SAFETY: `level()` found AVX-512F on this CPU.
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => unsafe { avx512($($arg),*) },
            _ => portable($($arg),*),
        }
    }};
}

// The lane code goes into `map1`/`map2` as a `Lanes1`/`Lanes2` type whose
// `#[inline(always)]` methods call it, not as a fn item or a closure: LLVM did not inline
// a fn item's `Fn::call` into the `target_feature` functions (which then ran baseline
// scalar code, a libm call for every `trunc`), nor a closure called from more than one
// loop (`sin` ran entry by entry).

/// One function per lane code: `out[i] = $scalar(xs[i])` at a level.
macro_rules! kernels {
    ($($name:ident: $lane:ident, $scalar:path;)*) => {
        $(
            fn $name(level: Level, xs: &[f64], out: &mut [f64]) {
                assert_eq!(xs.len(), out.len(), "vmath: slices of different lengths");
                if level == Level::Scalar {
                    for (o, x) in out.iter_mut().zip(xs) {
                        *o = $scalar(*x);
                    }
                    return;
                }
                struct F;
                impl Lanes1 for F {
                    #[inline(always)]
                    fn lane(x: f64) -> (f64, bool) {
                        $lane(x)
                    }
                    fn scalar(x: f64) -> f64 {
                        $scalar(x)
                    }
                }
                at_level!(level, fn(xs: &[f64], out: &mut [f64]) { map1::<F>(xs, out) });
            }
        )*
    };
}

kernels! {
    exp_at: exp_lane, math::exp;
    log1p_at: log1p_lane, math::log1p;
    sigmoid_at: sigmoid_lane, math::sigmoid;
    softplus_at: softplus_lane, math::softplus;
    log_at: log_lane, math::log;
    sin_at: sin_lane, math::sin;
    cos_at: cos_lane, math::cos;
}

/// `out[i] = math::tanh(xs[i])` at a level ([`tanh_blocks`]).
fn tanh_at(level: Level, xs: &[f64], out: &mut [f64]) {
    assert_eq!(xs.len(), out.len(), "vmath: slices of different lengths");
    if level == Level::Scalar {
        for (o, x) in out.iter_mut().zip(xs) {
            *o = math::tanh(*x);
        }
        return;
    }
    at_level!(level, fn(xs: &[f64], out: &mut [f64]) { tanh_blocks(xs, out) });
}

/// `out[i] = math::erf(xs[i])` at a level ([`erf_blocks`]).
fn erf_at(level: Level, xs: &[f64], out: &mut [f64]) {
    assert_eq!(xs.len(), out.len(), "vmath: slices of different lengths");
    if level == Level::Scalar {
        for (o, x) in out.iter_mut().zip(xs) {
            *o = math::erf(*x);
        }
        return;
    }
    at_level!(level, fn(xs: &[f64], out: &mut [f64]) { erf_blocks(xs, out) });
}

/// One function per lane code of two operands: `out[i] = $scalar(a[i], b[i])` at a level.
macro_rules! kernels2 {
    ($($name:ident: $lane:ident, $scalar:path;)*) => {
        $(
            fn $name(level: Level, a: &[f64], b: &[f64], out: &mut [f64]) {
                assert!(
                    a.len() == out.len() && b.len() == out.len(),
                    "vmath: slices of different lengths"
                );
                if level == Level::Scalar {
                    for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
                        *o = $scalar(*x, *y);
                    }
                    return;
                }
                struct F;
                impl Lanes2 for F {
                    #[inline(always)]
                    fn lane(x: f64, y: f64) -> (f64, bool) {
                        $lane(x, y)
                    }
                    fn scalar(x: f64, y: f64) -> f64 {
                        $scalar(x, y)
                    }
                }
                at_level!(level, fn(a: &[f64], b: &[f64], out: &mut [f64]) {
                    map2::<F>(a, b, out)
                });
            }
        )*
    };
}

kernels2! {
    logaddexp_at: logaddexp_lane, math::logaddexp;
    pow_at: pow_lane, math::pow;
}

/// `out[i] = f(xs[i])` over a whole slice, at the widest level this CPU has, for each
/// function with a lane form; `ir::ops` maps each op to its function (`Unary::slice`).
macro_rules! slice_entry_points {
    ($($name:ident => $at:ident;)*) => {
        $(pub fn $name(xs: &[f64], out: &mut [f64]) {
            $at(level(), xs, out)
        })*
    };
}

slice_entry_points! {
    exp_into => exp_at;
    log1p_into => log1p_at;
    sigmoid_into => sigmoid_at;
    softplus_into => softplus_at;
    tanh_into => tanh_at;
    log_into => log_at;
    sin_into => sin_at;
    cos_into => cos_at;
    erf_into => erf_at;
}

/// `out[i] = logaddexp(a[i], b[i])` over whole slices.
pub fn logaddexp_into(a: &[f64], b: &[f64], out: &mut [f64]) {
    logaddexp_at(level(), a, b, out)
}

/// `out[i] = pow(a[i], b[i])` over whole slices.
pub fn pow_into(a: &[f64], b: &[f64], out: &mut [f64]) {
    pow_at(level(), a, b, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inputs at and around every boundary the lane code decides on, special values, and
    /// `n` pseudo-random ones: arbitrary bit patterns and values spread over [-750, 750]
    /// and [-1, 2].
    fn inputs(n: usize) -> Vec<f64> {
        let mut xs = vec![
            0.0,
            -0.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            -1.0,
            f64::MIN_POSITIVE,
            -f64::MIN_POSITIVE,
            f64::MAX,
            -f64::MAX,
            5e-324,
            -5e-324,
            709.782_712_893_384,
            -745.133_219_101_941_1,
            -708.396_418_532_264_1,
            f64::EPSILON,
        ];
        let edges = [
            0x4086_232b_0000_0000u64,
            0x3ff0_a2b2_0000_0000,
            0x3fd6_2e43_0000_0000,
            0x3fd6_2e42_ffff_ffff,
            0x3e30_0001_0000_0000,
            0x3e30_0000_ffff_ffff,
            0x3fd2_bec5_0000_0000,
            0x3fd2_bec4_ffff_ffff,
            0x3fda_827a_0000_0000,
            0x3fda_8279_ffff_ffff,
            0x3ca0_0000_0000_0000,
            0x3fe0_0000_0000_0000,
            0x3ff0_0000_0000_0000,
            0x4340_0000_0000_0000,
            // tanh's and expm1's branches, at x and where 2x reaches them.
            0x3fd0_58af_0000_0000,
            0x3fe1_93eb_0000_0000,
            0x4034_0000_0000_0000,
            0x4034_0001_0000_0000,
            0x0010_0000_0000_0000,
            0x3c90_0000_0000_0000,
            0x3c80_0000_0000_0000,
            0x4043_687a_0000_0000,
            0x4033_687a_0000_0000,
            0x3fc6_2e43_0000_0000,
            0x3fe0_a2b2_0000_0000,
        ];
        for e in edges {
            for d in -3i64..=3 {
                let x = f64::from_bits(e.wrapping_add(d as u64));
                xs.extend([x, -x]);
            }
        }
        for k in -1100i64..=1100 {
            // Where k ln2 rounds either way.
            let x = k as f64 * std::f64::consts::LN_2;
            xs.extend([x, f64::from_bits(x.to_bits() + 1), x + 0.5 * LN2HI]);
        }
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..n {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let unit = (s >> 11) as f64 / (1u64 << 53) as f64;
            xs.push(match i % 4 {
                0 => f64::from_bits(s),
                1 => unit * 1500.0 - 750.0,
                2 => unit * 50.0 - 25.0,
                _ => unit * 3.0 - 1.0,
            });
        }
        xs
    }

    fn same(got: f64, want: f64) -> bool {
        got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan())
    }

    /// Each function of one operand with lane code: its name, scalar function and slices
    /// at a level.
    #[allow(clippy::type_complexity)]
    const UNARY: [(&str, fn(f64) -> f64, fn(Level, &[f64], &mut [f64])); 9] = [
        ("exp", math::exp, exp_at),
        ("log1p", math::log1p, log1p_at),
        ("sigmoid", math::sigmoid, sigmoid_at),
        ("softplus", math::softplus, softplus_at),
        ("tanh", math::tanh, tanh_at),
        ("log", math::log, log_at),
        ("sin", math::sin, sin_at),
        ("cos", math::cos, cos_at),
        ("erf", math::erf, erf_at),
    ];

    #[test]
    fn each_unary_matches_its_scalar_function_bit_for_bit_at_every_level() {
        let xs = inputs(1_200_000);
        let mut out = vec![0.0; xs.len()];
        for level in levels() {
            for (op, scalar, run) in UNARY {
                run(level, &xs, &mut out);
                let bad: Vec<_> = xs
                    .iter()
                    .zip(&out)
                    .filter(|(x, o)| !same(**o, scalar(**x)))
                    .take(3)
                    .map(|(x, o)| format!("{x:e} -> {o:e}, want {:e}", scalar(*x)))
                    .collect();
                assert!(bad.is_empty(), "{op} at {level:?}: {bad:?}");
            }
        }
        // The lane code itself, not only the scalar fix-up, covers most inputs.
        let in_range = xs.iter().filter(|x| exp_lane(**x).1).count();
        assert!(in_range > xs.len() / 2, "{in_range} of {}", xs.len());
    }

    #[test]
    fn logaddexp_matches_its_scalar_function_bit_for_bit_at_every_level() {
        let xs = inputs(200_000);
        let mut ys = xs.clone();
        ys.rotate_left(7);
        ys[0] = f64::NEG_INFINITY;
        let mut xs = xs;
        xs[0] = f64::NEG_INFINITY;
        let mut out = vec![0.0; xs.len()];
        for level in levels() {
            logaddexp_at(level, &xs, &ys, &mut out);
            for ((x, y), o) in xs.iter().zip(&ys).zip(&out) {
                let want = math::logaddexp(*x, *y);
                assert!(
                    same(*o, want),
                    "{level:?}: logaddexp({x:e}, {y:e}) = {o:e}, want {want:e}"
                );
            }
            // And against a zero second operand, as `softplus` written as `logaddexp(z, 0)`.
            let zeros = vec![0.0; xs.len()];
            logaddexp_at(level, &xs, &zeros, &mut out);
            for (x, o) in xs.iter().zip(&out) {
                assert!(same(*o, math::logaddexp(*x, 0.0)), "{level:?}: {x:e}");
            }
        }
    }

    /// A xorshift stream: `n` raw 64-bit words.
    fn words(seed: u64, n: usize) -> impl Iterator<Item = u64> {
        let mut s = seed;
        (0..n).map(move |_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        })
    }

    fn unit(w: u64) -> f64 {
        (w >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Inputs where `sin` and `cos` decide: every high word `rem_pio2` and the kernels
    /// compare against, multiples of π/4 (the cancellation that takes a second and third
    /// round of reduction) and their neighbours, around 2^20 π/2 (the Payne–Hanek switch),
    /// tiny and huge arguments, special values, and `n` pseudo-random ones.
    fn trig_inputs(n: usize) -> Vec<f64> {
        let mut xs = vec![
            0.0,
            -0.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            f64::MIN_POSITIVE,
            5e-324,
            f64::MAX,
            std::f64::consts::PI,
            std::f64::consts::FRAC_PI_2,
            std::f64::consts::FRAC_PI_4,
        ];
        let highs = [
            0x3e46_a09eu64,
            0x3e50_0000,
            0x3fe9_21fb,
            0x3ff9_21fb,
            0x4002_d97c,
            0x4009_21fb,
            0x400f_6a7a,
            0x4012_d97c,
            0x4015_fdbc,
            0x4019_21fb,
            0x401c_463b,
            0x4139_21fb,
            0x7fef_ffff,
        ];
        for h in highs {
            for dh in [-1i64, 0, 1] {
                for low in [0u64, 1, 0x5444_2d18, 0x7fff_ffff, 0xffff_ffff] {
                    let x = f64::from_bits(((h as i64 + dh) as u64) << 32 | low);
                    xs.extend([x, -x]);
                }
            }
        }
        let near = |xs: &mut Vec<f64>, x: f64| {
            for d in -2i64..=2 {
                let y = f64::from_bits(x.to_bits().wrapping_add(d as u64));
                xs.extend([y, -y]);
            }
        };
        for k in 1..200_000u64 {
            near(&mut xs, k as f64 * std::f64::consts::FRAC_PI_4);
        }
        for k in (1u64 << 20) - 2000..(1u64 << 20) + 2000 {
            near(&mut xs, k as f64 * std::f64::consts::FRAC_PI_2);
        }
        for e in 1..1075 {
            near(&mut xs, 2f64.powi(-e));
        }
        for (i, w) in words(0x2545_f491_4f6c_dd1d, n).enumerate() {
            let u = unit(w);
            xs.push(match i % 5 {
                0 => f64::from_bits(w),
                1 => u * 20.0 - 10.0,
                2 => u * 2000.0 - 1000.0,
                3 => u * 4e6 - 2e6,
                _ => (u - 0.5) * 2f64.powi((w % 60) as i32),
            });
        }
        xs
    }

    fn check_unary(name: &str, xs: &[f64], scalar: fn(f64) -> f64, run: Slices1) {
        let mut out = vec![0.0; xs.len()];
        for level in levels() {
            run(level, xs, &mut out);
            let bad: Vec<_> = xs
                .iter()
                .zip(&out)
                .filter(|(x, o)| !same(**o, scalar(**x)))
                .take(3)
                .map(|(x, o)| format!("{x:e} -> {o:e}, want {:e}", scalar(*x)))
                .collect();
            assert!(bad.is_empty(), "{name} at {level:?}: {bad:?}");
        }
    }

    type Slices1 = fn(Level, &[f64], &mut [f64]);

    #[test]
    fn sin_and_cos_match_libm_bit_for_bit_at_every_level() {
        let xs = trig_inputs(1_000_000);
        assert!(xs.len() > 3_000_000, "{}", xs.len());
        check_unary("sin", &xs, math::sin, sin_at);
        check_unary("cos", &xs, math::cos, cos_at);
        // The lane code, not the scalar fix-up, computes all but the huge and special ones.
        let in_range = xs.iter().filter(|x| sin_lane(**x).1).count();
        assert!(in_range > xs.len() * 9 / 10, "{in_range} of {}", xs.len());
        // Medium arguments take the second and third rounds of reduction (the exponent
        // of y0 more than 16, then 49, below x's) on some inputs.
        let rounds = |x: f64| {
            let ex = (high_abs(x) >> 20) as i64;
            let exponent = |y: f64| ((y.to_bits() >> 52) & 0x7ff) as i64;
            let f_n = (x * INV_PIO2 + TO_INT) - TO_INT;
            let r1 = x - f_n * PIO2_1;
            let w2 = f_n * PIO2_2;
            let r2 = r1 - w2;
            let y0_2 = r2 - (f_n * PIO2_2T - ((r1 - r2) - w2));
            let second = ex - exponent(r1 - f_n * PIO2_1T) > 16;
            (second, second && ex - exponent(y0_2) > 49)
        };
        let medium: Vec<_> = xs
            .iter()
            .filter(|x| sin_lane(**x).1 && high_abs(**x) > 0x401c_463b)
            .map(|x| rounds(*x))
            .collect();
        let second = medium.iter().filter(|r| r.0).count();
        let third = medium.iter().filter(|r| r.1).count();
        assert!(
            second > 1000 && third > 10,
            "{second} second, {third} third rounds"
        );
    }

    /// Inputs where `tanh` decides, each with both signs: ±0, ±∞, NaN, subnormals, a few
    /// ulps around every high word libm's `tanh` and `expm1` compare against (as `x` and as
    /// `2x`), around each |x| = (k + 1/2) ln2 / 2 where expm1's k steps (k = 0 to 59, so k
    /// = 20 and the formulas' switch at 56 too), a fine grid over [19, 20.5] (where
    /// libm's result becomes 1.0), and `n` pseudo-random ones: uniform over [0, 0.6],
    /// [0, 3] and [0, 25], magnitudes spread from 2^-60 to 2^6, and raw bit patterns.
    fn tanh_inputs(n: usize) -> Vec<f64> {
        let mut xs = vec![
            0.0,
            f64::INFINITY,
            f64::NAN,
            5e-324,
            f64::MIN_POSITIVE,
            f64::MAX,
        ];
        let near = |xs: &mut Vec<f64>, x: f64, ulps: i64| {
            for d in -ulps..=ulps {
                xs.push(f64::from_bits(x.to_bits().wrapping_add(d as u64)));
            }
        };
        let highs = [
            0x0010_0000u64,
            0x3c90_0000,
            0x3fc6_2e42,
            0x3fd0_58ae,
            0x3fd6_2e42,
            0x3fe0_a2b2,
            0x3fe1_93ea,
            0x3ff0_a2b2,
            0x4033_687a,
            0x4034_0000,
            0x4043_687a,
        ];
        for h in highs {
            for dh in 0..=1 {
                for low in [0u64, 1, 0x8000_0000, 0xffff_ffff] {
                    near(&mut xs, f64::from_bits((h + dh) << 32 | low), 2);
                }
            }
        }
        for k in 0..60 {
            near(
                &mut xs,
                (k as f64 + 0.5) * std::f64::consts::LN_2 / 2.0,
                200,
            );
        }
        for i in 0..=150_000 {
            xs.push(19.0 + 1.5 * i as f64 / 150_000.0);
        }
        for (i, w) in words(0x5851_f42d_4c95_7f2d, n).enumerate() {
            let u = unit(w);
            xs.push(match i % 6 {
                0 => u * 0.6,
                1 => u * 3.0,
                2 => u * 25.0,
                3 => u * 2f64.powi((w % 67) as i32 - 60),
                4 => f64::from_bits(w),
                _ => f64::from_bits(w >> 12 | 1),
            });
        }
        let negated: Vec<f64> = xs.iter().map(|x| -x).collect();
        xs.extend(negated);
        xs
    }

    #[test]
    fn erf_matches_libm_bit_for_bit_at_every_level() {
        let mut xs = vec![
            0.0,
            f64::INFINITY,
            f64::NAN,
            5e-324,
            f64::MIN_POSITIVE,
            f64::MAX,
        ];
        // A few ulps around every high word libm's `erf` compares against.
        for h in [
            0x3e30_0000u64,
            0x3feb_0000,
            0x3ff4_0000,
            0x4006_db6d,
            0x4018_0000,
        ] {
            for d in -3i64..=3 {
                let x = f64::from_bits((h << 32).wrapping_add(d as u64));
                xs.push(x);
            }
        }
        for (i, w) in words(0x2f69_3a1c_55b3_0e97, 2_000_000).enumerate() {
            let u = unit(w);
            xs.push(match i % 5 {
                0 => u * 1.25,
                1 => u * 7.0,
                2 => (u - 0.5) * 2f64.powi((w % 64) as i32 - 60),
                3 => f64::from_bits(w),
                // Standard normal draws over sqrt 2, as `gelu` has them.
                _ => (-2.0 * u.max(1e-300).ln()).sqrt() * (0.7311 * i as f64).cos() / 2f64.sqrt(),
            });
        }
        let negated: Vec<f64> = xs.iter().map(|x| -x).collect();
        xs.extend(negated);
        check_unary("erf", &xs, math::erf, erf_at);
        // Every formula is taken on many inputs, erfc's with both sets of coefficients.
        let count = |lo: f64, hi: f64| xs.iter().filter(|x| (lo..hi).contains(&x.abs())).count();
        for (lo, hi) in [
            (0.0, 0.84375),
            (0.84375, 1.25),
            (1.25, 2.857),
            (2.857, 6.0),
            (6.0, 1e300),
        ] {
            assert!(count(lo, hi) > 10_000, "{lo}..{hi}: {}", count(lo, hi));
        }
    }

    #[test]
    fn tanh_matches_libm_bit_for_bit_near_every_switch_at_every_level() {
        let xs = tanh_inputs(2_000_000);
        assert!(xs.len() > 4_000_000, "{}", xs.len());
        check_unary("tanh", &xs, math::tanh, tanh_at);
        // libm's result is 1.0 from |x| ~= 19.06, before the lane code's last formula
        // (k >= 20) ends at 19.5 and its 1.0 at 20: the grid crosses both.
        let in_grid = |x: &&f64| (19.0..20.0).contains(*x);
        let ones = xs.iter().filter(in_grid).filter(|x| math::tanh(**x) == 1.0);
        let below = xs.iter().filter(in_grid).filter(|x| math::tanh(**x) < 1.0);
        assert!(ones.count() > 1000 && below.count() > 1000);
    }

    /// Pairs (x, y) where `pow` decides: libm's special bases and exponents crossed, bases
    /// at the edges of its intervals of [1, 2) and near 1, exponents that put the result
    /// at the edges of overflow, underflow and the subnormals, negative bases with odd and
    /// even integer exponents, and `n` pseudo-random pairs.
    fn pow_inputs(n: usize) -> (Vec<f64>, Vec<f64>) {
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        let specials = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            2.0,
            -2.0,
            0.5,
            -0.5,
            3.0,
            -3.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            f64::MIN_POSITIVE,
            5e-324,
            -5e-324,
            f64::MAX,
            f64::EPSILON,
            1.0 + f64::EPSILON,
            1.0 - f64::EPSILON / 2.0,
            2f64.powi(31),
            2f64.powi(31) + 1.0,
            2f64.powi(53),
            2f64.powi(64) * 1.5,
            1e10,
            0.3,
            -7.5,
        ];
        for x in specials {
            for y in specials {
                xs.push(x);
                ys.push(y);
            }
        }
        let mut w = words(0x9e37_79b9_7f4a_7c15, 8 * n + 100_000);
        let mut next = || w.next().expect("enough words");
        // Bases whose mantissa's high bits sit at 0x3988e and 0xbb67a.
        for j in [
            0x3988du64, 0x3988e, 0x3988f, 0xbb679, 0xbb67a, 0xbb67b, 0, 0xfffff,
        ] {
            for e in [0x3ffu64, 0x400, 0x3fe, 0x7fe, 0x001, 0x000] {
                for low in [0u64, 1, 0xffff_ffff] {
                    let x = f64::from_bits(e << 52 | j << 32 | low);
                    for y in [0.7, -1.3, 3.0, 2.5, 1e-3, -40.25] {
                        xs.extend([x, x, -x]);
                        ys.extend([y, -y, 3.0]);
                    }
                }
            }
        }
        for _ in 0..n / 4 {
            let (a, b, c) = (next(), next(), next());
            let x = 0.5 + 3.0 * unit(a);
            let l = x.log2();
            // Results near 2^1024, 2^-1022 (the subnormals) and 2^-1075.
            for edge in [1024.0, -1022.0, -1075.0, 1.0, -1.0, 0.5] {
                let y = edge / l * (1.0 + (unit(b) - 0.5) * 1e-9);
                xs.extend([x, 1.0 / x]);
                ys.extend([y, -y]);
            }
            // Near 1, with large exponents; subnormal bases; negative bases with integer
            // exponents.
            let near_one = 1.0 + (unit(c) - 0.5) * 2f64.powi(-((c % 40) as i32));
            xs.extend([near_one, f64::from_bits(a >> 12), -x, -x]);
            ys.extend([
                (unit(b) - 0.5) * 2f64.powi((b % 32) as i32),
                unit(c) - 0.5,
                (c % 41) as f64 - 20.0,
                ((c >> 8) % 2001) as f64 - 1000.0,
            ]);
        }
        for i in 0..n {
            let (a, b) = (next(), next());
            let (x, y) = match i % 4 {
                0 => (f64::from_bits(a), f64::from_bits(b)),
                1 => (10.0 * unit(a), 20.0 * unit(b) - 10.0),
                2 => (f64::from_bits(a >> 1), 2.0 * unit(b) - 1.0),
                _ => (1e3 * unit(a), ((b % 17) as f64 - 8.0) * 0.5),
            };
            xs.push(x);
            ys.push(y);
        }
        (xs, ys)
    }

    #[test]
    fn pow_matches_libm_bit_for_bit_at_every_level() {
        let (xs, ys) = pow_inputs(1_000_000);
        assert!(xs.len() > 2_000_000, "{}", xs.len());
        let mut out = vec![0.0; xs.len()];
        for level in levels() {
            pow_at(level, &xs, &ys, &mut out);
            let bad: Vec<_> = (0..xs.len())
                .filter(|i| !same(out[*i], math::pow(xs[*i], ys[*i])))
                .take(3)
                .map(|i| {
                    let (x, y) = (xs[i], ys[i]);
                    format!(
                        "pow({x:e}, {y:e}) = {:e}, want {:e}",
                        out[i],
                        math::pow(x, y)
                    )
                })
                .collect();
            assert!(bad.is_empty(), "{level:?}: {bad:?}");
        }
        // The lane code computes most of them, negative bases too; and entries where the
        // lanes take a branch that only some of them take.
        let lane = |i: usize| pow_lane(xs[i], ys[i]).1;
        let in_range = (0..xs.len()).filter(|i| lane(*i)).count();
        assert!(in_range > xs.len() * 2 / 3, "{in_range} of {}", xs.len());
        let negative = (0..xs.len()).filter(|i| xs[*i] < 0.0 && lane(*i)).count();
        assert!(negative > 100_000, "{negative}");
        let subnormal_base = (0..xs.len())
            .filter(|i| xs[*i].abs() < f64::MIN_POSITIVE && lane(*i))
            .count();
        assert!(subnormal_base > 100_000, "{subnormal_base}");
    }

    /// Every slice length from 0 to two `tanh` blocks and a tail (each length a different
    /// tail, padded by `by_blocks`), starting at different offsets into inputs with the
    /// special values early, for every function with lane code: each entry its scalar
    /// function's bits, whatever the block it falls in.
    #[test]
    fn every_slice_length_and_tail_matches_the_scalar_function() {
        let xs = inputs(2_000);
        let ys: Vec<f64> = xs.iter().rev().copied().collect();
        type Binary = (
            &'static str,
            fn(f64, f64) -> f64,
            fn(Level, &[f64], &[f64], &mut [f64]),
        );
        let binary: [Binary; 2] = [
            ("logaddexp", math::logaddexp, logaddexp_at),
            ("pow", math::pow, pow_at),
        ];
        let mut out = vec![0.0; 2 * TANH_BLOCK + 40];
        for level in levels() {
            for len in 0..out.len() {
                let at = (len * 37) % 400;
                let (x, y, o) = (&xs[at..at + len], &ys[at..at + len], &mut out[..len]);
                for (name, scalar, run) in UNARY {
                    run(level, x, o);
                    for (i, (x, o)) in x.iter().zip(&*o).enumerate() {
                        assert!(
                            same(*o, scalar(*x)),
                            "{name} {level:?} len {len} [{i}] {x:e}"
                        );
                    }
                }
                for (name, scalar, run) in binary {
                    run(level, x, y, o);
                    for (i, ((x, y), o)) in x.iter().zip(y).zip(&*o).enumerate() {
                        assert!(same(*o, scalar(*x, *y)), "{name} {level:?} len {len} [{i}]");
                    }
                }
            }
        }
    }
}
