//! Scalar math shared by every backend: the interpreter calls these, the JIT calls the same
//! functions through registered symbols, so elementwise results agree bit for bit. All
//! transcendentals come from the `libm` crate (platform-independent, unlike glibc's).

pub fn exp(x: f64) -> f64 {
    libm::exp(x)
}
pub fn log(x: f64) -> f64 {
    libm::log(x)
}
pub fn log1p(x: f64) -> f64 {
    libm::log1p(x)
}
pub fn sqrt(x: f64) -> f64 {
    libm::sqrt(x)
}
pub fn tanh(x: f64) -> f64 {
    libm::tanh(x)
}
pub fn sin(x: f64) -> f64 {
    libm::sin(x)
}
pub fn cos(x: f64) -> f64 {
    libm::cos(x)
}
pub fn erf(x: f64) -> f64 {
    libm::erf(x)
}
pub fn pow(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}
pub fn floor(x: f64) -> f64 {
    libm::floor(x)
}

/// Lanes of [`sum`]: as many as the JIT's unrolled f64x2 loop holds.
pub const SUM_LANES: usize = 8;

/// Σ xs, in the one order both backends use (NumPy also sums in blocks, not one by one):
/// entry `i` of the first `8⌊n/8⌋` goes to lane `i mod 8` (each lane from -0.0, in
/// order); the lanes are combined as `((l0+l2)+(l4+l6)) + ((l1+l3)+(l5+l7))`, which is how
/// four f64x2 accumulators `(l0,l1) … (l6,l7)` reduce, `(v0+v1)+(v2+v3)` then lane 0 +
/// lane 1; the last `n mod 8` entries are then added in order. Under 8 entries this is
/// the plain sum from -0.0. Eight independent chains also make it ~4× faster than one.
pub fn sum(xs: &[f64]) -> f64 {
    let main = xs.len() / SUM_LANES * SUM_LANES;
    let mut l = [-0.0f64; SUM_LANES];
    for chunk in xs[..main].chunks_exact(SUM_LANES) {
        for (acc, x) in l.iter_mut().zip(chunk) {
            *acc += x;
        }
    }
    let mut total = ((l[0] + l[2]) + (l[4] + l[6])) + ((l[1] + l[3]) + (l[5] + l[7]));
    for x in &xs[main..] {
        total += x;
    }
    total
}

/// 1 / (1 + e^-x), computed without overflow for either sign.
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + exp(-x))
    } else {
        let e = exp(x);
        e / (1.0 + e)
    }
}

/// log(1 + e^x) = max(x, 0) + log1p(e^-|x|).
pub fn softplus(x: f64) -> f64 {
    x.max(0.0) + log1p(exp(-x.abs()))
}

/// log(e^a + e^b) = max(a, b) + log1p(e^-|a-b|).
pub fn logaddexp(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY && b == f64::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    a.max(b) + log1p(exp(-(a - b).abs()))
}

/// log Σ e^x with the largest entry factored out.
pub fn logsumexp(xs: impl Iterator<Item = f64> + Clone) -> f64 {
    let m = xs.clone().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return m;
    }
    m + log(xs.map(|x| exp(x - m)).sum::<f64>())
}

pub fn sign(x: f64) -> f64 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// One operand of [`matmul_into`]: a row-major buffer holding the matrix, or holding its
/// transpose (`transposed`), which is read in place.
#[derive(Clone, Copy)]
pub struct MatOperand<'a> {
    pub data: &'a [f64],
    pub transposed: bool,
}

/// `c = a @ b` (`a` is m×k, `b` k×n, `c` m×n row-major), with faer's GEMM (on both cores
/// for large products, see [`PARALLEL_GEMM`] and [`PARALLEL_GEMV`]); small products with
/// [`super::small_gemm`] and matrix-vector products below 2^20 with [`super::gemv`] (the
/// same bits).
/// Both backends call this one function with the same operand layouts, so they agree bit
/// for bit.
pub fn matmul_into(a: MatOperand, b: MatOperand, c: &mut [f64], m: usize, k: usize, n: usize) {
    use faer::{Accum, MatMut, MatRef, Par};
    let view = |x: MatOperand, rows: usize, cols: usize| {
        assert!(x.data.len() >= rows * cols, "matmul operand too short");
        let (rs, cs) = if x.transposed {
            (1, rows as isize)
        } else {
            (cols as isize, 1)
        };
        // SAFETY: the buffer holds rows*cols values (checked), laid out as these strides
        // say: row-major, or the row-major buffer of the transpose.
        unsafe { MatRef::from_raw_parts(x.data.as_ptr(), rows, cols, rs, cs) }
    };
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // NumPy's product over an empty axis: every entry is a sum of nothing.
        c[..m * n].fill(0.0);
        return;
    }
    if n == 1 && m * k <= SMALL_GEMV {
        return small_gemv(a, b, c, m, k);
    }
    if n == 1
        && m * k < PARALLEL_GEMV
        && let Some(isa) = super::gemv::best()
    {
        return large_gemv(isa, a, b, c, m, k);
    }
    if super::small_gemm::fits(a.transposed, b.transposed, m, k, n) {
        return super::small_gemm::matmul(a, b, c, m, k, n);
    }
    let dst = MatMut::from_row_major_slice_mut(c, m, n);
    let (a, b) = (view(a, m, k), view(b, k, n));
    let product = |c: MatMut<f64>, a: MatRef<f64>, b: MatRef<f64>| {
        faer::linalg::matmul::matmul(c, Accum::Replace, a, b, 1.0, Par::Seq);
    };
    let threshold = if m.min(n) == 1 {
        PARALLEL_GEMV
    } else {
        PARALLEL_GEMM
    };
    if m * k * n < threshold || m.max(n) < 2 * SPLIT_MIN {
        return product(dst, a, b);
    }
    // Two halves of the output, one a core (`cores::join`): the rows of `a` or the columns
    // of `b`, whichever is longer, split where the shape alone says, so the result does
    // not depend on which thread ran which half, or on there being a second core.
    if m >= n {
        let half = m / 2;
        let (c0, c1) = dst.split_at_row_mut(half);
        let (a0, a1) = a.split_at_row(half);
        crate::cores::join(|| product(c0, a0, b), || product(c1, a1, b));
    } else {
        let half = n / 2;
        let (c0, c1) = dst.split_at_col_mut(half);
        let (b0, b1) = b.split_at_col(half);
        crate::cores::join(|| product(c0, a, b0), || product(c1, a, b1));
    }
}

/// `c = max(a @ b + bias, 0)` (`bias`, when given, added to every row), each entry
/// exactly as the product, the add and `interp::binary`'s max compute it one after the
/// other ([`super::small_gemm::relu`]); returns how many entries of `a @ b + bias` are
/// exactly zero (a ReLU's ties). A product [`super::small_gemm`] computes applies the ReLU
/// to its sums before storing them, so the JIT's ReLU after such a product costs no pass
/// over memory (sgd's `relu(xb @ W')`: its loop took 7 % of a step); any other product is
/// stored first and then passed over.
#[allow(clippy::too_many_arguments)]
pub fn matmul_relu_into(
    a: MatOperand,
    b: MatOperand,
    bias: Option<&[f64]>,
    c: &mut [f64],
    m: usize,
    k: usize,
    n: usize,
) -> u64 {
    if relu_in_product(a.transposed, b.transposed, m, k, n) {
        return super::small_gemm::matmul_relu(a, b, bias, c, m, k, n);
    }
    matmul_into(a, b, c, m, k, n);
    let mut zeros = 0;
    for row in c[..m * n].chunks_exact_mut(n.max(1)) {
        for (j, x) in row.iter_mut().enumerate() {
            let v = bias.map_or(*x, |bias| *x + bias[j]);
            zeros += (v == 0.0) as u64;
            *x = super::small_gemm::relu(v);
        }
    }
    zeros
}

/// Whether [`matmul_relu_into`] applies the ReLU inside the product (the product is one
/// [`super::small_gemm`] computes) for these operand layouts and shapes.
pub fn relu_in_product(
    a_transposed: bool,
    b_transposed: bool,
    m: usize,
    k: usize,
    n: usize,
) -> bool {
    super::small_gemm::fits(a_transposed, b_transposed, m, k, n)
}

/// `c = a @ b` for an `[m,k]` matrix `a` and a `k`-vector `b` above [`SMALL_GEMV`] and
/// below [`PARALLEL_GEMV`], with [`super::gemv`] (faer's bits); faer's own product if an
/// entry is NaN (which NaN it is depends on faer's compiled code, see `gemv`). ns a call
/// (min of many, the 2-core host loaded by other builds), faer against this kernel:
/// sgd's `[32,256] @ [256]` 659-671 → 378-387, `[256,32]' @ [32]` 802-815 → 326-409;
/// relu2's `[512,256] @ [256]` 11,800 → 6,600, `[256,512]' @ [512]` 13,300 → 8,100.
/// wide's `[1024,2048]` and `[2048,1024]'` (2^21, memory-bound, split between the cores)
/// stay faer's: this kernel was no faster on one core (199 against 199 µs rows, 227 against
/// 285 columns).
fn large_gemv(isa: super::Isa, a: MatOperand, b: MatOperand, c: &mut [f64], m: usize, k: usize) {
    let (x, c) = (&b.data[..k], &mut c[..m]);
    let stride = if a.transposed { m } else { k };
    super::gemv::matvec(isa, a.data, a.transposed, stride, x, c, m, k);
    if c.iter().any(|v| v.is_nan()) {
        let (rs, cs) = if a.transposed { (1, m) } else { (k, 1) };
        assert!(a.data.len() >= m * k);
        // SAFETY: the buffer holds m·k values laid out as these strides say.
        let a = unsafe {
            faer::MatRef::from_raw_parts(a.data.as_ptr(), m, k, rs as isize, cs as isize)
        };
        let x = faer::MatRef::from_column_major_slice(x, k, 1);
        let dst = faer::MatMut::from_row_major_slice_mut(c, m, 1);
        faer::linalg::matmul::matmul(dst, faer::Accum::Replace, a, x, 1.0, faer::Par::Seq);
    }
}

/// Matrix-vector products of at most this many multiply-adds skip faer, whose per-row and
/// per-call overheads dominate there: logreg's `[200,10] @ [10]` and `[10,200] @ [200]`
/// took ~1.1 µs each in faer, a quarter of its step.
pub const SMALL_GEMV: usize = 4096;

/// `c = a @ b` for an `[m,k]` matrix `a` and a `k`-vector `b`: `c[i]` accumulates
/// `a[i,p] b[p]` from 0.0, `p` in order (a dot product per row; for `a` held as its
/// transpose, up to [`REGISTER_SUMS`] rows at once, one contiguous row of the buffer per
/// `p`).
fn small_gemv(a: MatOperand, b: MatOperand, c: &mut [f64], m: usize, k: usize) {
    #[cfg(target_arch = "x86_64")]
    if super::vmath::has_avx512() {
        // SAFETY: this CPU has AVX-512F.
        return unsafe { small_gemv_avx512(a, b, c, m, k) };
    }
    small_gemv_portable(a, b, c, m, k)
}

/// [`small_gemv`] compiled for AVX-512: the same operations in the same order (Rust
/// never contracts to FMA), 8 sums a register. logreg's step 0.92 → 0.82 µs.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn small_gemv_avx512(a: MatOperand, b: MatOperand, c: &mut [f64], m: usize, k: usize) {
    small_gemv_portable(a, b, c, m, k)
}

#[inline(always)]
fn small_gemv_portable(a: MatOperand, b: MatOperand, c: &mut [f64], m: usize, k: usize) {
    let (data, x, c) = (&a.data[..m * k], &b.data[..k], &mut c[..m]);
    if a.transposed {
        // Row p of the buffer is column p of `a`.
        for (block, c) in c.chunks_mut(REGISTER_SUMS).enumerate() {
            let data = &data[block * REGISTER_SUMS..];
            by_width!(c.len(), columns_times(data, m, x, c));
        }
    } else if k <= REGISTER_SUMS {
        by_width!(k, rows_times(data, x, c));
    } else {
        for (ci, row) in c.iter_mut().zip(data.chunks_exact(k)) {
            *ci = dot_in_order(row, x);
        }
    }
}

/// `Σ_p a[p] x[p]` from 0.0, `p` in order: the sum each entry of a small matrix-vector
/// product is.
#[inline(always)]
fn dot_in_order(a: &[f64], x: &[f64]) -> f64 {
    a.iter().zip(x).fold(0.0, |s, (ap, xp)| s + ap * xp)
}

/// Sums of a width known at compile time stay in registers: measured on logreg's
/// `[200,10] @ [10]` 0.56 → 0.33 µs, and `[10,200] @ [200]` 0.80 → 0.22 µs.
pub const REGISTER_SUMS: usize = 16;

/// Calls `f::<W>(args)` for a width `W` in `1..=REGISTER_SUMS` given at run time.
macro_rules! by_width {
    ($w:expr, $f:ident $args:tt) => {
        by_width!(@ $w, $f $args, 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16)
    };
    (@ $w:expr, $f:ident $args:tt, $($width:literal)*) => {
        match $w {
            $($width => $f::<$width> $args,)*
            w => unreachable!("width {w} above REGISTER_SUMS"),
        }
    };
}
use by_width;

/// `c[j] = Σ_p data[p*stride + j] x[p]` for `j < W`, from 0.0, `p` in order.
#[inline(always)]
fn columns_times<const W: usize>(data: &[f64], stride: usize, x: &[f64], c: &mut [f64]) {
    let mut sums = [0.0; W];
    for (p, xp) in x.iter().enumerate() {
        let column: &[f64; W] = data[p * stride..p * stride + W].try_into().unwrap();
        for (s, a) in sums.iter_mut().zip(column) {
            *s += a * xp;
        }
    }
    c.copy_from_slice(&sums);
}

/// `c[i] = Σ_p data[i*K + p] x[p]` for every row `i`, from 0.0, `p` in order.
#[inline(always)]
fn rows_times<const K: usize>(data: &[f64], x: &[f64], c: &mut [f64]) {
    let x: &[f64; K] = x.try_into().unwrap();
    for (ci, row) in c.iter_mut().zip(data.chunks_exact(K)) {
        let row: &[f64; K] = row.try_into().unwrap();
        *ci = dot_in_order(row, x);
    }
}

/// The smallest half of an output split between cores.
const SPLIT_MIN: usize = 32;

/// Matrix-matrix products of at least this many multiply-adds are split between the two
/// cores ([`crate::cores`]). Measured on the 2-core benchmark machine (µs a step, one core
/// against split): dmf's 100×100×100 products 276 → 200, relu2's 512×32×256 440 → 325,
/// wide's 1024×128×2048 28,400 → 17,000–18,800; sgd's 32×32×256 (2^18) gain nothing
/// (37–38 against 38–40), the partner's copy of the operands costing what it saves.
pub const PARALLEL_GEMM: usize = 1 << 19;

/// Matrix-vector products are memory-bound: split only when the matrix is far larger than
/// a core's cache, so each core streams its half from memory. wide's 1024×2048 ones
/// (2^21 multiply-adds, 16 MB) split: 16.6–17.4 → 15.7–15.9 ms a step; relu2's 512×256
/// ones (1 MB, in this core's cache after the loop that wrote them) split made its step
/// 410 µs against 325, the partner first pulling its half from this core's cache.
pub const PARALLEL_GEMV: usize = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` test entries of both signs, none equal to its neighbours.
    fn entries(n: usize, mul: usize, modulus: usize) -> Vec<f64> {
        (0..n)
            .map(|i| ((i * mul % modulus) as f64 - (modulus / 2) as f64) / 7.0)
            .collect()
    }

    fn operand(data: &[f64], transposed: bool) -> MatOperand<'_> {
        MatOperand { data, transposed }
    }

    #[test]
    fn large_products_are_split_in_halves_by_shape_alone() {
        let (m, k, n) = (96, 64, 128); // 786,432 multiply-adds: split, n the longer side
        assert!(m * k * n >= PARALLEL_GEMM && m * k * n / 2 < PARALLEL_GEMM);
        let (a, b) = (entries(m * k, 37, 101), entries(k * n, 53, 97));
        let mut c = vec![0.0; m * n];
        matmul_into(operand(&a, false), operand(&b, false), &mut c, m, k, n);
        // Each half is the unsplit product of its columns of `b`, bit for bit.
        for (cols, lo) in [(0..n / 2, 0), (n / 2..n, n / 2)] {
            let w = cols.len();
            let half_b: Vec<f64> = (0..k)
                .flat_map(|p| b[p * n + lo..p * n + lo + w].to_vec())
                .collect();
            let mut half = vec![0.0; m * w];
            matmul_into(
                operand(&a, false),
                operand(&half_b, false),
                &mut half,
                m,
                k,
                w,
            );
            for i in 0..m {
                assert_eq!(c[i * n + lo..i * n + lo + w], half[i * w..(i + 1) * w]);
            }
        }
        // The same bits every time, whichever thread runs which half.
        for _ in 0..50 {
            let mut again = vec![0.0; m * n];
            matmul_into(operand(&a, false), operand(&b, false), &mut again, m, k, n);
            assert_eq!(again, c);
        }
        for (i, j) in [(0, 0), (m - 1, n - 1), (m / 2, n / 2 - 1)] {
            let exact: f64 = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            assert!((c[i * n + j] - exact).abs() <= 1e-12 * exact.abs().max(1.0));
        }
    }

    #[test]
    fn large_matrix_vector_products_are_split_by_rows() {
        // 2^20 multiply-adds, `a` held transposed (the buffer is k×m) as reverse mode
        // makes it: each half of the output is the unsplit product of its rows of `a`, so
        // the result does not depend on the split.
        let (m, k) = (1024, 1024);
        assert!(m * k >= PARALLEL_GEMV && m * k / 2 < PARALLEL_GEMV);
        let (buf, x) = (entries(k * m, 37, 101), entries(k, 53, 97));
        let plain = operand(&x, false);
        let mut c = vec![0.0; m];
        matmul_into(operand(&buf, true), plain, &mut c, m, k, 1);
        for lo in [0, m / 2] {
            let half_buf: Vec<f64> = (0..k)
                .flat_map(|p| buf[p * m + lo..p * m + lo + m / 2].to_vec())
                .collect();
            let mut half = vec![0.0; m / 2];
            matmul_into(operand(&half_buf, true), plain, &mut half, m / 2, k, 1);
            assert_eq!(c[lo..lo + m / 2], half[..]);
        }
        let exact: f64 = (0..k).map(|p| buf[p * m + 7] * x[p]).sum();
        assert!((c[7] - exact).abs() <= 1e-12 * exact.abs().max(1.0));
    }

    #[test]
    fn sum_takes_eight_lanes_then_the_tail_in_order() {
        // Under 8 entries: the plain sum from -0.0.
        assert_eq!(sum(&[]).to_bits(), (-0.0f64).to_bits());
        assert_eq!(sum(&[-0.0, -0.0]).to_bits(), (-0.0f64).to_bits());
        assert_eq!(sum(&[1e16, 1.0, 1.0, 1.0]), ((1e16 + 1.0) + 1.0) + 1.0);
        // 1e16 swallows each lone 1.0 in order (1e16 + 1 rounds to 1e16), but not the
        // lanes' partial sums.
        let mut xs = vec![1e16];
        xs.extend([1.0; 10]);
        let l: Vec<f64> = (0..8).map(|k| if k == 0 { 1e16 } else { 1.0 }).collect();
        let lanes = ((l[0] + l[2]) + (l[4] + l[6])) + ((l[1] + l[3]) + (l[5] + l[7]));
        let want = ((lanes + 1.0) + 1.0) + 1.0;
        assert_eq!(sum(&xs), want);
        assert_eq!(want, 1e16 + 8.0);
        let in_order: f64 = xs.iter().sum();
        assert_eq!(in_order, 1e16);
    }

    #[test]
    fn small_matrix_vector_products_add_each_row_in_order() {
        // Up to `SMALL_GEMV` multiply-adds, both layouts of `a` give c[i] = Σ_p a[i,p] b[p]
        // from 0.0 in the order of p, bit for bit; above it, faer's product.
        let value = |i: usize| match i % 5 {
            0 => 1e16,
            1 => -1e16,
            _ => ((i * 7919) % 1000) as f64 / 37.0 - 13.0,
        };
        for (m, k) in [
            (200, 10),
            (10, 200),
            (1, 1),
            (3, 7),
            (16, 17),
            (17, 16),
            (40, 33),
            (33, 40),
            (64, 64),
            (65, 64),
        ] {
            let a: Vec<f64> = (0..m * k).map(value).collect();
            let at: Vec<f64> = (0..k * m).map(|j| a[(j % m) * k + j / m]).collect();
            let b: Vec<f64> = (0..k).map(|p| value(p + 3)).collect();
            let mut rows = vec![f64::NAN; m];
            let mut cols = vec![f64::NAN; m];
            let op = |data, transposed| MatOperand { data, transposed };
            matmul_into(op(&a, false), op(&b, false), &mut rows, m, k, 1);
            matmul_into(op(&at, true), op(&b, false), &mut cols, m, k, 1);
            // The code for CPUs without AVX-512 gives the same bits.
            let (mut rows_any, mut cols_any) = (vec![f64::NAN; m], vec![f64::NAN; m]);
            if m * k <= SMALL_GEMV {
                small_gemv_portable(op(&a, false), op(&b, false), &mut rows_any, m, k);
                small_gemv_portable(op(&at, true), op(&b, false), &mut cols_any, m, k);
                let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&rows_any), bits(&rows), "[{m},{k}]");
                assert_eq!(bits(&cols_any), bits(&cols), "[{m},{k}]'");
            }
            for i in 0..m {
                let want = (0..k).fold(0.0, |s, p| s + a[i * k + p] * b[p]);
                if m * k <= SMALL_GEMV {
                    assert_eq!(rows[i].to_bits(), want.to_bits(), "[{m},{k}] row {i}");
                    assert_eq!(cols[i].to_bits(), want.to_bits(), "[{m},{k}]' row {i}");
                } else {
                    let scale: f64 = (0..k).map(|p| (a[i * k + p] * b[p]).abs()).sum();
                    assert!((rows[i] - want).abs() <= 1e-12 * scale, "[{m},{k}] row {i}");
                    assert!(
                        (cols[i] - want).abs() <= 1e-12 * scale,
                        "[{m},{k}]' row {i}"
                    );
                }
            }
        }
    }
}
