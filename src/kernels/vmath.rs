//! `exp`, `log`, `log1p`, `tanh`, `sigmoid`, `softplus` and `logaddexp` over whole slices,
//! vectorized and bit for bit `math`'s scalar functions (the `libm` crate's FreeBSD-msun
//! code): the same IEEE operations in the same order, libm's branches turned into
//! selects, compiled for AVX-512 or AVX2 when the CPU has them (no FMA: Rust never
//! contracts). Entries outside libm's main range (|x| >= 708.39 for `exp`, x <= -1 for
//! `log1p`, x <= 0 for `log`, NaN, ±∞) are recomputed by the scalar function; `tanh`
//! (through `expm1`'s code) has no such entries (NaN payloads aside). Both backends call
//! these on arrays.

use crate::ir::Unary;

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
fn pick(c: bool, a: f64, b: f64) -> f64 {
    if c { a } else { b }
}

/// libm's range reduction of `exp` and `expm1`: x = k ln2 + (hi - lo), k = 0 below
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

/// libm's `expm1(x)` where -38.8 < x < 700 (the second value says so), no branches.
#[inline(always)]
fn expm1_lane(x: f64) -> (f64, bool) {
    let ax = x.abs();
    let ok = ax < f64::from_bits(0x4043_687a_0000_0000) || (x > 0.0 && x < 700.0);
    // x = k ln2 + (hi - lo) as in `exp_lane`; then xr = hi - lo and c its rounding error.
    let (k, hi, lo) = reduce_ln2(x, ax);
    let xr = hi - lo;
    let c = (hi - xr) - lo;
    let hfx = 0.5 * xr;
    let hxs = xr * hfx;
    let r1 = 1.0 + hxs * (Q1 + hxs * (Q2 + hxs * (Q3 + hxs * (Q4 + hxs * Q5))));
    let t = 3.0 - r1 * hfx;
    let e = hxs * ((r1 - t) / (6.0 - xr * t));
    let at_0 = xr - (xr * e - hxs);
    let e = xr * (e - c) - c - hxs;
    let at_minus_1 = 0.5 * (xr - e) - 0.5;
    let at_1 = pick(xr < -0.25, -2.0 * (e - (xr + 0.5)), 1.0 + 2.0 * (xr - e));
    let kb = int_bits(k);
    let twopk = f64::from_bits(kb.wrapping_add(0x3ff) << 52);
    let twomk = f64::from_bits(0x3ffu64.wrapping_sub(kb) << 52);
    let far = (xr - e + 1.0) * twopk - 1.0;
    let below_20 = (xr - e + (1.0 - twomk)) * twopk;
    let from_20 = (xr - (e + twomk) + 1.0) * twopk;
    let value = pick(
        !(0.0..=56.0).contains(&k),
        far,
        pick(k < 20.0, below_20, from_20),
    );
    let value = pick(k == 1.0, at_1, value);
    let value = pick(k == -1.0, at_minus_1, value);
    let value = pick(k == 0.0, at_0, value);
    (
        pick(ax < f64::from_bits(0x3c90_0000_0000_0000), x, value),
        ok,
    )
}

/// libm's `tanh(x)`, no branches (a NaN gives a NaN).
#[inline(always)]
fn tanh_lane(x: f64) -> (f64, bool) {
    let a = x.abs();
    // 2|x| beyond |x| > log(5/3)/2 ~= 0.2554, else -2|x|.
    let up = a >= f64::from_bits(0x3fd0_58af_0000_0000);
    let (t, _) = expm1_lane(pick(up, 2.0 * a, -2.0 * a));
    // libm's three quotients, 2 / (t + 2) beyond log(3)/2 ~= 0.5493, t / (t + 2) and
    // -t / (t + 2) (the negation of t / (t + 2), bit for bit), as one division.
    let far = a >= f64::from_bits(0x3fe1_93eb_0000_0000);
    let q = pick(far, 2.0, t) / (t + 2.0);
    let v = pick(far, 1.0 - q, pick(up, q, -q));
    let v = pick(a >= f64::MIN_POSITIVE, v, a);
    let v = pick(a >= f64::from_bits(0x4034_0001_0000_0000), 1.0, v);
    let v = pick(a.is_nan(), a, v);
    (pick(x.is_sign_negative(), -v, v), true)
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

/// `out[i] = lane(xs[i])`; whether every entry was in range.
#[inline(always)]
fn map1(xs: &[f64], out: &mut [f64], lane: impl Fn(f64) -> (f64, bool)) -> bool {
    let mut all = true;
    for (o, x) in out.iter_mut().zip(xs) {
        let (v, ok) = lane(*x);
        *o = v;
        all &= ok;
    }
    all
}

#[inline(always)]
fn map2(a: &[f64], b: &[f64], out: &mut [f64], lane: impl Fn(f64, f64) -> (f64, bool)) -> bool {
    let mut all = true;
    for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
        let (v, ok) = lane(*x, *y);
        *o = v;
        all &= ok;
    }
    all
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

/// `$body` (a function of `$arg`s returning whether every entry was in range) run at
/// `$level` (not `Level::Scalar`): compiled once per level with that level's target
/// features, so LLVM vectorizes it for them.
macro_rules! at_level {
    ($level:expr, fn($($arg:ident: $ty:ty),*) $body:block) => {{
        fn portable($($arg: $ty),*) -> bool $body
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        fn avx2($($arg: $ty),*) -> bool $body
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f")]
        fn avx512($($arg: $ty),*) -> bool $body
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

// The lane code goes into `map1`/`map2` as a closure, not as the fn item: LLVM did not
// inline the fn item's `Fn::call` into the `target_feature` functions, which then ran
// baseline scalar code (a libm call for every `trunc`).

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
                let all = at_level!(level, fn(xs: &[f64], out: &mut [f64]) {
                    map1(xs, out, |x| $lane(x))
                });
                if !all {
                    for (o, x) in out.iter_mut().zip(xs) {
                        if !$lane(*x).1 {
                            *o = $scalar(*x);
                        }
                    }
                }
            }
        )*
    };
}

kernels! {
    exp_at: exp_lane, math::exp;
    log1p_at: log1p_lane, math::log1p;
    sigmoid_at: sigmoid_lane, math::sigmoid;
    softplus_at: softplus_lane, math::softplus;
    tanh_at: tanh_lane, math::tanh;
    log_at: log_lane, math::log;
}

// `expm1` is tested on its own (`tanh` calls it on part of its range only).
#[cfg(test)]
kernels! {
    expm1_at: expm1_lane, libm::expm1;
}

/// `out[i] = math::logaddexp(a[i], b[i])` at a level.
#[allow(clippy::redundant_closure)]
fn logaddexp_at(level: Level, a: &[f64], b: &[f64], out: &mut [f64]) {
    assert!(
        a.len() == out.len() && b.len() == out.len(),
        "vmath: slices of different lengths"
    );
    if level == Level::Scalar {
        for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
            *o = math::logaddexp(*x, *y);
        }
        return;
    }
    let all = at_level!(level, fn(a: &[f64], b: &[f64], out: &mut [f64]) {
        map2(a, b, out, |x, y| logaddexp_lane(x, y))
    });
    if !all {
        for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
            if !logaddexp_lane(*x, *y).1 {
                *o = math::logaddexp(*x, *y);
            }
        }
    }
}

/// Whether [`unary_into`] takes `op`.
pub fn has_unary(op: Unary) -> bool {
    matches!(
        op,
        Unary::Exp | Unary::Log1p | Unary::Sigmoid | Unary::Softplus | Unary::Tanh | Unary::Log
    )
}

/// `out[i] = interp::unary(op, xs[i])` for an op [`has_unary`] takes.
pub fn unary_into(op: Unary, xs: &[f64], out: &mut [f64]) {
    let level = level();
    match op {
        Unary::Exp => exp_at(level, xs, out),
        Unary::Log1p => log1p_at(level, xs, out),
        Unary::Sigmoid => sigmoid_at(level, xs, out),
        Unary::Softplus => softplus_at(level, xs, out),
        Unary::Tanh => tanh_at(level, xs, out),
        Unary::Log => log_at(level, xs, out),
        _ => panic!("vmath: no slice form of {op:?}"),
    }
}

/// `out[i] = math::logaddexp(a[i], b[i])`.
pub fn logaddexp_into(a: &[f64], b: &[f64], out: &mut [f64]) {
    logaddexp_at(level(), a, b, out);
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

    #[test]
    fn each_unary_matches_its_scalar_function_bit_for_bit_at_every_level() {
        let xs = inputs(1_200_000);
        let mut out = vec![0.0; xs.len()];
        type Scalar = fn(f64) -> f64;
        type Slices = fn(Level, &[f64], &mut [f64]);
        let ops: [(&str, Scalar, Slices); 7] = [
            ("exp", math::exp, exp_at),
            ("log1p", math::log1p, log1p_at),
            ("sigmoid", math::sigmoid, sigmoid_at),
            ("softplus", math::softplus, softplus_at),
            ("tanh", math::tanh, tanh_at),
            ("log", math::log, log_at),
            ("expm1", libm::expm1, expm1_at),
        ];
        for level in levels() {
            for (op, scalar, run) in ops {
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
}
