//! Counter-based random numbers: Philox4x32-10 streams keyed by (seed, stream name, step), and every draw built on them.
//!
//! Every random number in traj is a pure function of its coordinates
//! `(seed, stream, step, element index)`, so the interpreter and the JIT (which
//! calls the same `libm` functions) produce bit-identical numbers regardless of
//! evaluation order (JIT-NOTES.md §6, LANGUAGE.md §6.4).
//!
//! # The maps, exactly
//! * Block `b` (u64) of a [`Stream`] is
//!   `philox4x32_10([b as u32, (b >> 32) as u32, step, stream], [seed as u32, (seed >> 32) as u32])`.
//! * A pair of words `(w_lo, w_hi)` becomes `x = (w_hi as u64) << 32 | w_lo as u64`, where
//!   `w_lo` is the word with the smaller index: words 0,1 give `x = w1 << 32 | w0`, words
//!   2,3 give `x = w3 << 32 | w2`. Then `u = ((x >> 12) as f64 + 0.5) * 2^-52`: every step
//!   is exact (`k + 0.5` fits in 53 bits for `k < 2^52`), so `u` lies strictly inside (0, 1).
//!   (JIT-NOTES §6 uses `>> 11` and `2^-53`, which rounds its top value to exactly 1.0.)
//! * Uniform element `i`: block `i / 2`; even `i` uses words 0,1, odd `i` words 2,3.
//! * Normal element `i`: block `i / 2`; `u1` from words 0,1, `u2` from words 2,3,
//!   `r = libm::sqrt(-2.0 * libm::log(u1))`, `t = TAU * u2` (one multiply by the f64
//!   constant 2π), even `i` → `r * libm::cos(t)`, odd `i` → `r * libm::sin(t)`.

use std::collections::HashMap;

use ndarray::Array2;

const PHILOX_M0: u32 = 0xD251_1F53;
const PHILOX_M1: u32 = 0xCD9E_8D57;
const PHILOX_W0: u32 = 0x9E37_79B9;
const PHILOX_W1: u32 = 0xBB67_AE85;

/// 2^-53.
const TWO_POW_M52: f64 = 1.0 / 4_503_599_627_370_496.0;

#[inline(always)]
fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = (a as u64) * (b as u64);
    ((p >> 32) as u32, p as u32)
}

#[inline(always)]
fn philox_round(ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (hi0, lo0) = mulhilo(PHILOX_M0, ctr[0]);
    let (hi1, lo1) = mulhilo(PHILOX_M1, ctr[2]);
    [hi1 ^ ctr[1] ^ key[0], lo1, hi0 ^ ctr[3] ^ key[1], lo0]
}

/// Random123's Philox4x32 with 10 rounds.
pub fn philox4x32_10(ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = ctr;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k = [k[0].wrapping_add(PHILOX_W0), k[1].wrapping_add(PHILOX_W1)];
        }
        c = philox_round(c, k);
    }
    c
}

/// FNV-1a (32-bit) of the UTF-8 bytes of a stream name such as `"M"`, `"Ws[2]"`,
/// `"sample:x"`, `"batch:xb"`, `"noise:W:0"` or `"tie"`.
pub fn stream_id(name: &str) -> u32 {
    let mut h: u32 = 0x811C_9DC5;
    for &byte in name.as_bytes() {
        h ^= byte as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// Two Philox words → a uniform strictly inside (0, 1): `x = hi << 32 | lo`,
/// `((x >> 12) as f64 + 0.5) * 2^-52`, every operation exact. (JIT-NOTES §6's
/// `((x >> 11) + 0.5) * 2^-53` rounds its top value to exactly 1.0, so traj does not use it.)
#[inline(always)]
pub fn words_to_uniform(lo: u32, hi: u32) -> f64 {
    let x = ((hi as u64) << 32) | lo as u64;
    ((x >> 12) as f64 + 0.5) * TWO_POW_M52
}

/// `lo + floor(u * (hi - lo))`, clamped to `hi - 1`; `lo` when `hi <= lo`.
#[inline(always)]
fn int_in(u: f64, lo: i64, hi: i64) -> i64 {
    if hi <= lo {
        return lo;
    }
    // `hi - lo` up to 2^53 is exact as an f64 and `u * span` lies in [0, span], so
    // truncating to i64 is `floor` and `lo + off` cannot overflow: `int_in_wide`'s bits
    // without its i128 conversion and libm `floor` calls (sgd's batch: ~2 % of a step).
    let span = hi.wrapping_sub(lo) as u64;
    if span <= 1 << 53 {
        let off = (u * span as f64) as i64;
        return (lo + off).min(hi - 1);
    }
    int_in_wide(u, lo, hi)
}

/// `int_in` for any `lo < hi`, in i128 (spans beyond 2^53, up to the whole of i64).
#[inline(never)]
fn int_in_wide(u: f64, lo: i64, hi: i64) -> i64 {
    let span = hi as i128 - lo as i128;
    let off = (u * span as f64).floor() as i128;
    (lo as i128 + off).min(hi as i128 - 1) as i64
}

/// Box–Muller on one Philox block: the pair (z0, z1) of normals of elements 2b and 2b+1.
#[inline(always)]
fn box_muller(w: [u32; 4]) -> (f64, f64) {
    let u1 = words_to_uniform(w[0], w[1]);
    let u2 = words_to_uniform(w[2], w[3]);
    let r = libm::sqrt(-2.0 * libm::log(u1));
    let t = std::f64::consts::TAU * u2;
    (r * libm::cos(t), r * libm::sin(t))
}

/// One keyed random stream: the coordinates (seed, stream id, step) of every draw
/// it makes; element `i` of any draw is a pure function of them and `i`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Stream {
    seed: u64,
    stream: u32,
    step: u32,
}

impl Stream {
    /// The stream named `name` (hashed with [`stream_id`]) at `step` (truncated to u32).
    pub fn new(seed: u64, name: &str, step: u64) -> Stream {
        Stream::from_id(seed, stream_id(name), step)
    }

    /// The stream with an already-hashed id (what JIT code holds).
    pub fn from_id(seed: u64, stream: u32, step: u64) -> Stream {
        Stream {
            seed,
            stream,
            step: step as u32,
        }
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn stream(&self) -> u32 {
        self.stream
    }

    pub fn step(&self) -> u32 {
        self.step
    }

    /// The four Philox words of block `b`.
    #[inline(always)]
    pub fn block(&self, b: u64) -> [u32; 4] {
        philox4x32_10(
            [b as u32, (b >> 32) as u32, self.step, self.stream],
            [self.seed as u32, (self.seed >> 32) as u32],
        )
    }

    /// Uniform element `i`, in (0, 1).
    pub fn uniform(&self, i: u64) -> f64 {
        let w = self.block(i / 2);
        if i.is_multiple_of(2) {
            words_to_uniform(w[0], w[1])
        } else {
            words_to_uniform(w[2], w[3])
        }
    }

    /// `out[i] = self.uniform(i)`, one Philox block per two elements.
    pub fn fill_uniform(&self, out: &mut [f64]) {
        for (b, pair) in out.chunks_mut(2).enumerate() {
            let w = self.block(b as u64);
            pair[0] = words_to_uniform(w[0], w[1]);
            if let Some(second) = pair.get_mut(1) {
                *second = words_to_uniform(w[2], w[3]);
            }
        }
    }

    /// Standard normal element `i` (Box–Muller over `libm`).
    pub fn normal(&self, i: u64) -> f64 {
        let (z0, z1) = box_muller(self.block(i / 2));
        if i.is_multiple_of(2) { z0 } else { z1 }
    }

    /// `out[i] = self.normal(i)`, one Philox block per two elements.
    pub fn fill_normal(&self, out: &mut [f64]) {
        for (b, pair) in out.chunks_mut(2).enumerate() {
            let (z0, z1) = box_muller(self.block(b as u64));
            pair[0] = z0;
            if let Some(second) = pair.get_mut(1) {
                *second = z1;
            }
        }
    }

    /// 1.0 if `uniform(i) < p`, else 0.0.
    pub fn bernoulli(&self, p: f64, i: u64) -> f64 {
        if self.uniform(i) < p { 1.0 } else { 0.0 }
    }

    /// `lo + floor(uniform(i) * (hi - lo))`, clamped to `hi - 1`. Checking `hi > lo` is
    /// the caller's job; when it does not hold this returns `lo`.
    pub fn randint(&self, lo: i64, hi: i64, i: u64) -> i64 {
        int_in(self.uniform(i), lo, hi)
    }

    /// `out[i] = self.randint(lo, hi, i)`, one Philox block per two elements (`randint`
    /// alone computes each block twice).
    pub fn fill_randint(&self, lo: i64, hi: i64, out: &mut [i64]) {
        for (b, pair) in out.chunks_mut(2).enumerate() {
            let w = self.block(b as u64);
            pair[0] = int_in(words_to_uniform(w[0], w[1]), lo, hi);
            if let Some(o) = pair.get_mut(1) {
                *o = int_in(words_to_uniform(w[2], w[3]), lo, hi);
            }
        }
    }

    /// A uniformly random permutation of `0..n`: Fisher–Yates from the end, for `i` in
    /// `(1..n).rev()`: `j = floor(uniform(i) * (i + 1))`, swap `i` and `j`.
    pub fn permutation(&self, n: usize) -> Vec<i64> {
        let mut v: Vec<i64> = (0..n as i64).collect();
        for i in (1..n).rev() {
            let j = ((self.uniform(i as u64) * (i as f64 + 1.0)).floor() as usize).min(i);
            v.swap(i, j);
        }
        v
    }

    /// `k` distinct ints below `n`, in random order: partial Fisher–Yates from the front,
    /// for `i` in `0..k`: `j = i + floor(uniform(i) * (n - i))`, swap `i` and `j`; the first
    /// `k`. Checking `k <= n` is the caller's job; a larger `k` is cut to `n`. Memory is
    /// O(k), not O(n).
    pub fn choose(&self, n: usize, k: usize) -> Vec<i64> {
        let k = k.min(n);
        // Sparse Fisher–Yates: `moved[p]` is the value now at position p, when it is not p.
        let mut moved: HashMap<usize, usize> = HashMap::new();
        let mut out = Vec::with_capacity(k);
        for i in 0..k {
            let span = n - i;
            let j = i + ((self.uniform(i as u64) * span as f64).floor() as usize).min(span - 1);
            let at_j = moved.get(&j).copied().unwrap_or(j);
            let at_i = moved.get(&i).copied().unwrap_or(i);
            moved.insert(j, at_i);
            out.push(at_j as i64);
        }
        out
    }

    /// A Haar-distributed `m × n` matrix with orthonormal columns (`m >= n`) or rows
    /// (`m < n`): a `max(m,n) × min(m,n)` Gaussian `G` filled row-major by
    /// [`Stream::fill_normal`], thin QR (faer), column `j` of `Q` times `sign(R[j,j])`
    /// (0 → +1), transposed when `m < n`.
    pub fn orthogonal(&self, m: usize, n: usize) -> Array2<f64> {
        let (p, q) = (m.max(n), m.min(n));
        if q == 0 {
            return Array2::zeros((m, n));
        }
        let mut g = vec![0.0; p * q];
        self.fill_normal(&mut g);
        let gm = faer::Mat::<f64>::from_fn(p, q, |r, c| g[r * q + c]);
        let qr = gm.qr();
        let qmat = qr.compute_thin_Q();
        let rmat = qr.thin_R();
        let signs: Vec<f64> = (0..q)
            .map(|j| if rmat[(j, j)] < 0.0 { -1.0 } else { 1.0 })
            .collect();
        if m >= n {
            Array2::from_shape_fn((m, n), |(r, c)| qmat[(r, c)] * signs[c])
        } else {
            Array2::from_shape_fn((m, n), |(r, c)| qmat[(c, r)] * signs[r])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn philox_known_answers() {
        assert_eq!(
            philox4x32_10([0; 4], [0; 2]),
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
        );
        assert_eq!(
            philox4x32_10([0xffffffff; 4], [0xffffffff; 2]),
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0]
            ),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    /// `fill_randint` is `randint` at every index, for ranges up to the whole of i64 (where
    /// `hi - lo` needs i128), empty ranges, odd and even lengths.
    #[test]
    fn fill_randint_is_randint_at_every_index() {
        let ranges = [
            (0, 1),
            (0, 2),
            (0, 512),
            (-7, 13),
            (5, 5),
            (9, 3),
            (0, 1 << 53),
            (i64::MIN, i64::MAX),
            (-3, i64::MAX),
        ];
        for seed in [0, 1, 20190127, u64::MAX >> 1] {
            for step in [0, 1, 2, 19_999, u32::MAX as u64] {
                let rng = Stream::new(seed, "batch:xb,yb", step);
                for (lo, hi) in ranges {
                    for n in [0, 1, 2, 31, 32, 33, 257] {
                        let mut out = vec![0; n];
                        rng.fill_randint(lo, hi, &mut out);
                        for (i, o) in out.iter().enumerate() {
                            assert_eq!(*o, rng.randint(lo, hi, i as u64), "{lo}..{hi} at {i}");
                            assert!(*o == lo || (lo..hi).contains(o), "{o} outside {lo}..{hi}");
                        }
                    }
                }
            }
        }
    }

    /// `int_in`'s f64 path (spans up to 2^53) gives `int_in_wide`'s i128 results: at the
    /// smallest and largest uniforms, at the spans on either side of 2^53, at ranges
    /// touching `i64::MIN` and `i64::MAX`, and at 4096 uniforms of a stream.
    #[test]
    fn int_in_matches_the_wide_path_at_its_boundaries() {
        let top = words_to_uniform(u32::MAX, u32::MAX);
        assert!(top < 1.0 && top * (1u64 << 53) as f64 == (1u64 << 53) as f64 - 1.0);
        let mut us = vec![words_to_uniform(0, 0), top, 0.5, 0.5 - TWO_POW_M52];
        let rng = Stream::new(3, "batch:xb,yb", 7);
        us.extend((0..4096).map(|i| rng.uniform(i)));
        let p53 = 1i64 << 53;
        let mut ranges = vec![];
        for span in [1, 2, 3, 1000, 4095, p53 - 1, p53, p53 + 1, p53 + 2] {
            for lo in [0, -1, 17, -p53, i64::MIN, i64::MAX - span, -span / 2] {
                ranges.push((lo, lo + span));
            }
        }
        for (lo, hi) in ranges {
            for &u in &us {
                assert_eq!(
                    int_in(u, lo, hi),
                    int_in_wide(u, lo, hi),
                    "{u:e} in {lo}..{hi}"
                );
            }
        }
        // The fast path at its largest span keeps the top uniform below `hi`.
        assert_eq!(int_in(top, 0, p53), p53 - 1);
        assert_eq!(int_in(words_to_uniform(0, 0), -5, 1000), -5);
    }

    #[test]
    fn fnv1a_known_answers() {
        assert_eq!(stream_id(""), 0x811c9dc5);
        assert_eq!(stream_id("a"), 0xe40c292c);
        assert_eq!(stream_id("foobar"), 0xbf9cf968);
        assert_ne!(stream_id("Ws[0]"), stream_id("Ws[1]"));
    }

    #[test]
    fn block_coordinates() {
        let s = Stream::new(0x1234_5678_9abc_def0, "M", 7);
        let b = 0x0000_0003_0000_0005u64;
        assert_eq!(
            s.block(b),
            philox4x32_10([5, 3, 7, stream_id("M")], [0x9abc_def0, 0x1234_5678])
        );
        assert_eq!(Stream::new(1, "x", (1u64 << 32) + 9).step(), 9);
    }

    #[test]
    fn word_order_and_extremes() {
        let s = Stream::new(3, "u", 0);
        let w = s.block(0);
        let x0 = ((w[1] as u64) << 32) | w[0] as u64;
        assert_eq!(s.uniform(0), ((x0 >> 12) as f64 + 0.5) * 2f64.powi(-52));
        let x1 = ((w[3] as u64) << 32) | w[2] as u64;
        assert_eq!(s.uniform(1), ((x1 >> 12) as f64 + 0.5) * 2f64.powi(-52));
        // Strictly inside (0, 1) at both ends, exactly.
        assert_eq!(words_to_uniform(0, 0), 2f64.powi(-53));
        assert_eq!(words_to_uniform(u32::MAX, u32::MAX), 1.0 - 2f64.powi(-53));
        assert!(words_to_uniform(u32::MAX, u32::MAX) < 1.0);
    }

    #[test]
    fn deterministic_and_keyed() {
        let a = Stream::new(42, "M", 0);
        let b = Stream::new(42, "M", 0);
        for i in 0..100 {
            assert_eq!(a.uniform(i).to_bits(), b.uniform(i).to_bits());
            assert_eq!(a.normal(i).to_bits(), b.normal(i).to_bits());
        }
        let others = [
            Stream::new(43, "M", 0),
            Stream::new(42, "N", 0),
            Stream::new(42, "M", 1),
            Stream::new(42 + (1 << 32), "M", 0),
        ];
        for o in others {
            let same = (0..64).filter(|&i| o.uniform(i) == a.uniform(i)).count();
            assert_eq!(same, 0, "{o:?}");
        }
        // Neighbouring elements differ.
        assert_ne!(a.uniform(0), a.uniform(1));
        assert_ne!(a.normal(0), a.normal(1));
    }

    #[test]
    fn fill_matches_elementwise() {
        let s = Stream::new(9, "sample:x", 5);
        for len in [0usize, 1, 2, 7, 64, 1001] {
            let mut u = vec![0.0; len];
            s.fill_uniform(&mut u);
            let mut z = vec![0.0; len];
            s.fill_normal(&mut z);
            for i in 0..len {
                assert_eq!(u[i].to_bits(), s.uniform(i as u64).to_bits());
                assert_eq!(z[i].to_bits(), s.normal(i as u64).to_bits());
            }
        }
    }

    #[test]
    fn uniform_in_open_interval_with_right_moments() {
        let s = Stream::new(1, "rand", 0);
        let mut u = vec![0.0; 100_000];
        s.fill_uniform(&mut u);
        assert!(u.iter().all(|&x| x > 0.0 && x < 1.0));
        let mean = u.iter().sum::<f64>() / u.len() as f64;
        assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
    }

    #[test]
    fn normal_moments() {
        let s = Stream::new(2024, "randn", 0);
        let mut z = vec![0.0; 100_000];
        s.fill_normal(&mut z);
        let n = z.len() as f64;
        let mean = z.iter().sum::<f64>() / n;
        let var = z.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "var {var}");
        assert!(z.iter().all(|x| x.is_finite()));
    }

    #[test]
    fn bernoulli_frequency() {
        let s = Stream::new(5, "bern", 0);
        let n = 100_000;
        let ones: f64 = (0..n).map(|i| s.bernoulli(0.3, i)).sum();
        let f = ones / n as f64;
        assert!((f - 0.3).abs() < 0.01, "freq {f}");
        assert!((0..100).all(|i| s.bernoulli(0.0, i) == 0.0));
        assert!((0..100).all(|i| s.bernoulli(1.0, i) == 1.0));
    }

    #[test]
    fn randint_range() {
        let s = Stream::new(6, "ri", 0);
        let mut seen = [false; 7];
        for i in 0..10_000 {
            let v = s.randint(-3, 4, i);
            assert!((-3..4).contains(&v));
            seen[(v + 3) as usize] = true;
        }
        assert!(seen.iter().all(|&b| b));
        for i in 0..100 {
            let v = s.randint(i64::MIN, i64::MAX, i);
            assert!(v < i64::MAX);
        }
        assert_eq!(s.randint(5, 5, 0), 5);
    }

    #[test]
    fn permutation_is_permutation() {
        let s = Stream::new(7, "perm", 0);
        for n in [0usize, 1, 2, 10, 1000] {
            let mut p = s.permutation(n);
            assert_eq!(p.len(), n);
            p.sort();
            assert_eq!(p, (0..n as i64).collect::<Vec<_>>());
        }
        let p = s.permutation(1000);
        assert_ne!(p, (0..1000).collect::<Vec<i64>>());
        assert_eq!(p, Stream::new(7, "perm", 0).permutation(1000));
    }

    #[test]
    fn choose_distinct_below_n() {
        let s = Stream::new(8, "choose", 0);
        for (n, k) in [
            (10usize, 10usize),
            (10, 3),
            (1000, 50),
            (1 << 40, 20),
            (5, 0),
        ] {
            let c = s.choose(n, k);
            assert_eq!(c.len(), k);
            assert!(c.iter().all(|&v| v >= 0 && (v as u64) < n as u64));
            let mut d = c.clone();
            d.sort();
            d.dedup();
            assert_eq!(d.len(), k);
        }
        // Matches the dense partial Fisher–Yates definition.
        let (n, k) = (20usize, 8usize);
        let mut v: Vec<i64> = (0..n as i64).collect();
        for i in 0..k {
            let j = i + ((s.uniform(i as u64) * (n - i) as f64).floor() as usize).min(n - i - 1);
            v.swap(i, j);
        }
        assert_eq!(s.choose(n, k), v[..k].to_vec());
        // choose(n, n) is a permutation.
        let mut all = s.choose(12, 12);
        all.sort();
        assert_eq!(all, (0..12).collect::<Vec<i64>>());
    }

    fn assert_identity(a: &Array2<f64>) {
        let (r, c) = a.dim();
        assert_eq!(r, c);
        for i in 0..r {
            for j in 0..c {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!(
                    (a[(i, j)] - want).abs() < 1e-12,
                    "[{i},{j}] = {}",
                    a[(i, j)]
                );
            }
        }
    }

    #[test]
    fn orthogonal_shapes_and_orthonormality() {
        let s = Stream::new(11, "Q", 0);
        for (m, n) in [(1usize, 1usize), (5, 5), (8, 3), (3, 8), (40, 40), (1, 6)] {
            let q = s.orthogonal(m, n);
            assert_eq!(q.dim(), (m, n));
            if m >= n {
                assert_identity(&q.t().dot(&q));
            } else {
                assert_identity(&q.dot(&q.t()));
            }
            let again = Stream::new(11, "Q", 0).orthogonal(m, n);
            assert!(
                q.iter()
                    .zip(again.iter())
                    .all(|(a, b)| a.to_bits() == b.to_bits())
            );
        }
        assert_ne!(s.orthogonal(4, 4), Stream::new(12, "Q", 0).orthogonal(4, 4));
        assert_eq!(s.orthogonal(0, 3).dim(), (0, 3));
    }

    #[test]
    fn orthogonal_sign_convention() {
        // Q's first column is G's first column normalized, with R[0,0] > 0 after the sign fix.
        let s = Stream::new(13, "Q1", 0);
        let (m, n) = (6usize, 4usize);
        let mut g = vec![0.0; m * n];
        s.fill_normal(&mut g);
        let col: Vec<f64> = (0..m).map(|r| g[r * n]).collect();
        let norm = col.iter().map(|x| x * x).sum::<f64>().sqrt();
        let q = s.orthogonal(m, n);
        for r in 0..m {
            assert!((q[(r, 0)] - col[r] / norm).abs() < 1e-12);
        }
    }
}
