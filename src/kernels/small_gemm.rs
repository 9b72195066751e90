//! Small matrix-matrix products without faer: each entry one FMA chain in faer's own order.
//!
//! faer 0.24 computes a product of `m, n, k ≥ 2` (row-major `c`) with nano-gemm up to
//! 16·16·16 multiply-adds and with private-gemm-x86 above, and both give every entry as
//! ONE fused multiply-add chain over `p = 0, 1, ..., k-1`: private-gemm (for `k ≤ 512`,
//! its depth block) and nano-gemm's kernels for `k > 16` start the chain from +0.0;
//! nano-gemm's unrolled kernels for `k ≤ 16` start it from the rounded product
//! `a[i,0] b[0,j]` (the two differ only in the sign of a zero). The result is then
//! multiplied by `alpha = 1.0`, which changes no bits. nano-gemm splits the depth into
//! blocks of 64 when `b` is held transposed; [`fits`] leaves those shapes (and `k > 512`)
//! to faer, and the shapes where faer is faster. So this kernel gives faer's bits, without
//! faer's per-call planning, packing and copying, which cost more than the arithmetic on
//! dln's 16×16 products. A product with `b` held transposed can be computed as its
//! transpose ([`Route::Transposed`]): the same chains, with `a` packed (or read in place)
//! instead of `b`, which is what makes sgd's `xb @ W'` faster here than in faer.

use super::Isa;
use super::math::MatOperand;

/// faer hands products of at most this many multiply-adds to nano-gemm (faer's
/// `NANO_GEMM_THRESHOLD`), whose kernels for `k ≤ 16` start each chain from a product.
const NANO_GEMM: usize = 16 * 16 * 16;

/// Products of at most this many multiply-adds go through this kernel. Measured on the
/// 2-core AMD EPYC (Zen 4) benchmark machine, ns of one thread's CPU time a product, faer
/// against this kernel: 16×16×16 245 → 175 (`b` transposed 400 → 240), 128×16×16 1,340
/// → 1,290, 64×16×64 2,800 → 2,490, 32×32×64 with `b` transposed 2,890 → 2,820.
pub const SMALL_GEMM: usize = 1 << 16;

/// Products above [`SMALL_GEMM`] and up to this many multiply-adds (below
/// `math::PARALLEL_GEMM`, where products are split across the cores) go through this
/// kernel where [`fits`] says. Measured 2026-12-07 on the benchmark machine (min of 15
/// passes of thread CPU time, ns a product, faer → this kernel, `T` held transposed):
/// sgd's 32×32×256 `b` T 5,045 → 4,690 ([`Route::Transposed`]; 7,740 packing `b`),
/// 256×32×32 `a` T 4,650 → 4,120; 16×64×256 `b` T 6,210 → 4,600; 128×32×64 4,730 →
/// 4,350; 16×128×128 `a` T 5,820 → 4,420. Left to faer: `n ≥ 512` (32×16×512 5,550 →
/// 11,260; rows of 4 KB), `n ≥ 256` with `k < 32` (64×16×256 5,260 → 6,210), and `b` T
/// packed for [`Route::Direct`] (64×64×64 `b` T 4,970 → 5,120).
pub const MEDIUM_GEMM: usize = 1 << 18;

/// Whether `c = a @ b` (`a` m×k, `b` k×n, held transposed where `a_t`, `b_t` say) is
/// computed here rather than by faer: a product
/// whose bits this kernel reproduces ([`in_faers_order`]), whose rows fill whole vectors
/// (`n` a multiple of 8) and at least four rows, of at most [`SMALL_GEMM`] multiply-adds
/// or of at most [`MEDIUM_GEMM`] in the shapes measured faster there. Narrower or ragged
/// products were slower than faer: 10×10×10 119 → 186 ns, 3×100×8 137 → 212 ns.
pub fn fits(a_t: bool, b_t: bool, m: usize, k: usize, n: usize) -> bool {
    let size = m * k * n;
    in_faers_order(b_t, m, k, n)
        && n.is_multiple_of(8)
        && m >= 4
        && (size <= SMALL_GEMM
            || size <= MEDIUM_GEMM
                && n < 512
                && (n < 256 || k >= 32)
                && !(b_t && route(a_t, b_t, m, n) == Route::Direct))
}

/// The [`Route`] for `c = a @ b`: tiles of `c'` where `b` is held transposed and `a`'s
/// rows fill whole vectors, when `a'` is the smaller operand to pack (`m < n`) or is read
/// in place (`a` held transposed; `m < 8n`: 512×16×16 with both T took 2,630 ns in faer,
/// 2,450 by `Direct`, 3,020 by `Transposed`).
fn route(a_t: bool, b_t: bool, m: usize, n: usize) -> Route {
    let smaller = if a_t { m < 8 * n } else { m < n };
    if b_t && m.is_multiple_of(8) && smaller {
        Route::Transposed
    } else {
        Route::Direct
    }
}

/// Whether faer computes this product as one FMA chain per entry (module doc): every
/// dimension at least 2 (faer's matrix-vector and rank-1 paths round otherwise), depth at
/// most 512 (private-gemm's depth block), and not a depth that nano-gemm splits.
fn in_faers_order(b_t: bool, m: usize, k: usize, n: usize) -> bool {
    m >= 2 && n >= 2 && (2..=512).contains(&k) && !(b_t && k > 64 && m * k * n <= NANO_GEMM)
}

/// `c = a @ b` for a product that [`fits`]: `c[i,j]` is the FMA chain of `a[i,p] b[p,j]`
/// over `p` in order, from +0.0 — or, where faer's nano-gemm unrolls (`m k n ≤ 16³`,
/// `k ≤ 16`), from the rounded product at `p = 0`.
pub fn matmul(a: MatOperand, b: MatOperand, c: &mut [f64], m: usize, k: usize, n: usize) {
    let route = route(a.transposed, b.transposed, m, n);
    matmul_with(Isa::best(), route, a, b, None, c, m, k, n);
}

/// `c = max(a @ b + bias, 0)` for a product that [`fits`], the ReLU applied to each tile's
/// sums before they are stored (`math::matmul_relu_into`); returns how many entries of
/// `a @ b + bias` are exactly zero.
#[allow(clippy::too_many_arguments)]
pub fn matmul_relu(
    a: MatOperand,
    b: MatOperand,
    bias: Option<&[f64]>,
    c: &mut [f64],
    m: usize,
    k: usize,
    n: usize,
) -> u64 {
    let route = route(a.transposed, b.transposed, m, n);
    matmul_with(Isa::best(), route, a, b, Some(Relu { bias }), c, m, k, n)
}

/// The ReLU a product applies as it stores its sums ([`matmul_relu`]): `bias[j]`, when
/// given, is added to column `j` first.
#[derive(Clone, Copy)]
pub(crate) struct Relu<'a> {
    pub bias: Option<&'a [f64]>,
}

/// Entries a vector of `isa` holds. Every entry is its own chain, so the tile shapes and
/// vector widths change no bits: tiles of 8 rows by 16 columns with AVX-512 (16 of the 32
/// ZMM registers hold sums), of 4 by 8 with AVX2 (8 of the 16 YMM registers), lanes of
/// four as arrays in the portable code.
fn lanes(isa: Isa) -> usize {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => 8,
        _ => 4,
    }
}

/// How the tiles cover `c`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Route {
    /// Tiles of `c = a @ b`: `b` read by rows (packed first if held transposed).
    Direct,
    /// Tiles of `c' = b' @ a'`, each stored transposed into `c`: `a'` read by rows (packed
    /// first unless `a` is held transposed). Each entry is the same FMA chain over `p` in
    /// the same order (`fma(x, y, s)` is `fma(y, x, s)`), so the same bits.
    Transposed,
}

/// [`matmul`] (or [`matmul_relu`], with `relu`) with the code for `isa`, which this CPU
/// must have, by `route`; returns the ReLU's count of zeros (0 without one).
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_with<'a>(
    isa: Isa,
    route: Route,
    a: MatOperand<'a>,
    b: MatOperand<'a>,
    relu: Option<Relu<'a>>,
    c: &mut [f64],
    m: usize,
    k: usize,
    n: usize,
) -> u64 {
    debug_assert!(in_faers_order(b.transposed, m, k, n));
    assert!(a.data.len() >= m * k && b.data.len() >= k * n && c.len() >= m * n);
    // The ReLU's bias is read by whole vectors, and all of a tile's lanes are counted.
    assert!(
        relu.is_none() || n.is_multiple_of(8) && (route == Route::Direct || m.is_multiple_of(8))
    );
    assert!(relu.and_then(|r| r.bias).is_none_or(|bias| bias.len() >= n));
    let first_rounded = m * k * n <= NANO_GEMM && k <= 16;
    // The product the tiles compute: `c = a @ b`, or `c' = b' @ a'` (n×m), where `b'` is
    // held transposed exactly when `b` is not, and so is `a'`.
    let (a, b, m, n, c_transposed) = match route {
        Route::Direct => (a, b, m, n, false),
        Route::Transposed => {
            let flip = |x: MatOperand<'a>| MatOperand {
                data: x.data,
                transposed: !x.transposed,
            };
            (flip(b), flip(a), n, m, true)
        }
    };
    let padded = n.next_multiple_of(lanes(isa));
    let mut packed = PACKED.take();
    let zeros = {
        // `b` as row-major rows of `padded` entries: read in place when it already is.
        let (b, ldb) = if !b.transposed && padded == n {
            (&b.data[..k * n], n)
        } else {
            pack(isa, b, k, n, padded, &mut packed);
            (&packed[..], padded)
        };
        let tiles = Tiles {
            a: &a.data[..m * k],
            a_transposed: a.transposed,
            b,
            ldb,
            m,
            k,
            n,
            first_rounded,
            c_transposed,
            relu,
        };
        let c = Out(c[..m * n].as_mut_ptr());
        let run = |rows: std::ops::Range<usize>| {
            // SAFETY: the tiles read `a`, `b` and write `c` within the lengths checked
            // here; the CPU has `isa` (`Isa::best`, or the tests' check).
            match isa {
                Isa::Portable => unsafe { portable::run(&tiles, c.ptr(), rows) },
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => unsafe { avx2::run(&tiles, c.ptr(), rows) },
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => unsafe { avx512::run(&tiles, c.ptr(), rows) },
            }
        };
        if m * k * n >= SPLIT_GEMM && m >= 16 {
            // Each entry is its own chain: the same bits whichever core computes it.
            let half = (m / 2).next_multiple_of(8);
            let (mut z0, mut z1) = (0, 0);
            crate::cores::join(|| z0 = run(0..half), || z1 = run(half..m));
            z0 + z1
        } else {
            run(0..m)
        }
    };
    PACKED.set(packed);
    zeros
}

/// Products of at least this many multiply-adds are computed in two halves of the tiles'
/// rows, one a core (`cores::join`). sgd's two 32×32×256 products (4.1–4.7 µs each on one
/// core, 60 % of its step) took 13.4–13.6 µs a step on one core, 12.6–13.2 so
/// (2026-12-07, alternating runs): the partner's half waits for its pick-up (~0.1 µs) and
/// for the operands it pulls from the other core's cache.
pub const SPLIT_GEMM: usize = 1 << 17;

/// Whether `c = a @ b` (operands held transposed as said) is computed here in two halves
/// of `c`'s rows, one a core (the first `(m/2)` rounded up to a multiple of 8 on the
/// calling core): a product that [`fits`], of [`SPLIT_GEMM`] multiply-adds or more, tiled
/// by `c`'s rows ([`Route::Direct`]).
pub fn splits_rows(a_t: bool, b_t: bool, m: usize, k: usize, n: usize) -> bool {
    fits(a_t, b_t, m, k, n)
        && route(a_t, b_t, m, n) == Route::Direct
        && m * k * n >= SPLIT_GEMM
        && m >= 16
}

/// `c`'s buffer, shared by the two halves of a split product (each writes its own rows).
#[derive(Clone, Copy)]
struct Out(*mut f64);
// SAFETY: the halves write disjoint entries of `c`, and `join` returns after both.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// The pointer (a method, so a closure captures the `Send` wrapper, not its field).
    fn ptr(self) -> *mut f64 {
        self.0
    }
}

/// `b` (k×n, or its transpose) into `packed` as k row-major rows of `padded` entries,
/// zero beyond column `n`. A transposed `b` goes by 8×8 blocks (register transposes with
/// AVX-512): 16×16×16 with `b` transposed took 340 ns with an entry-by-entry pack reading
/// `b` by columns, 240 ns so (the product alone 175).
fn pack(isa: Isa, b: MatOperand, k: usize, n: usize, padded: usize, packed: &mut Vec<f64>) {
    packed.clear();
    packed.resize(k * padded, 0.0);
    if b.transposed {
        let (src, dst) = (b.data[..n * k].as_ptr(), packed.as_mut_ptr());
        // Eight columns at a time: eight sequential reads, one 64-byte write per row.
        for j0 in (0..n).step_by(8) {
            let mut p0 = 0;
            #[cfg(target_arch = "x86_64")]
            if isa == Isa::Avx512 && j0 + 8 <= n {
                while p0 + 8 <= k {
                    // SAFETY: this CPU has AVX-512F; the 8×8 block is inside `b` and
                    // `packed`.
                    unsafe {
                        transpose8x8(src.add(j0 * k + p0), k, dst.add(p0 * padded + j0), padded)
                    };
                    p0 += 8;
                }
            }
            for p in p0..k {
                for j in j0..n.min(j0 + 8) {
                    // SAFETY: j < n, p < k: inside `b` (n·k) and `packed` (k·padded).
                    unsafe { *dst.add(p * padded + j) = *src.add(j * k + p) };
                }
            }
        }
    } else {
        for (row, x) in packed.chunks_exact_mut(padded).zip(b.data.chunks_exact(n)) {
            row[..n].copy_from_slice(x);
        }
    }
}

/// `dst[q·ld_dst + t] = src[t·ld_src + q]` for `t, q < 8`: eight rows of eight, transposed
/// in registers ([`transpose8x8_registers`]).
///
/// # Safety
/// The CPU has AVX-512F; both 8×8 blocks are inside their buffers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn transpose8x8(src: *const f64, ld_src: usize, dst: *mut f64, ld_dst: usize) {
    use std::arch::x86_64::*;
    // SAFETY: as the caller's.
    unsafe {
        let rows: [__m512d; 8] = std::array::from_fn(|t| _mm512_loadu_pd(src.add(t * ld_src)));
        store_transposed8x8(rows, dst, ld_dst);
    }
}

/// `dst[q·ld_dst + t] = rows[t][q]` for `t, q < 8`: eight vectors stored as the columns of
/// their 8×8 block (two rounds of lane shuffles after the pairwise unpacks).
///
/// # Safety
/// The CPU has AVX-512F; the 8 rows of 8 at `dst` are writable.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn store_transposed8x8(r: [std::arch::x86_64::__m512d; 8], dst: *mut f64, ld_dst: usize) {
    use std::arch::x86_64::*;
    // t[2i] = (r[2i][0], r[2i+1][0], r[2i][2], r[2i+1][2], ...), t[2i+1] the odd entries.
    let t: [__m512d; 8] = std::array::from_fn(|x| {
        let (a, b) = (r[x & !1], r[x | 1]);
        if x % 2 == 0 {
            _mm512_unpacklo_pd(a, b)
        } else {
            _mm512_unpackhi_pd(a, b)
        }
    });
    // 128-bit lanes (0, 2) and (1, 3) of two vectors.
    let even = |a, b| _mm512_shuffle_f64x2::<0x88>(a, b);
    let odd = |a, b| _mm512_shuffle_f64x2::<0xDD>(a, b);
    let u = [
        even(t[0], t[2]),
        odd(t[0], t[2]),
        even(t[1], t[3]),
        odd(t[1], t[3]),
        even(t[4], t[6]),
        odd(t[4], t[6]),
        even(t[5], t[7]),
        odd(t[5], t[7]),
    ];
    // Column q of the block: u[0], u[4] hold columns 0 and 4; u[1], u[5] 2 and 6;
    // u[2], u[6] 1 and 5; u[3], u[7] 3 and 7.
    let columns = [
        even(u[0], u[4]),
        even(u[2], u[6]),
        even(u[1], u[5]),
        even(u[3], u[7]),
        odd(u[0], u[4]),
        odd(u[2], u[6]),
        odd(u[1], u[5]),
        odd(u[3], u[7]),
    ];
    for (q, column) in columns.iter().enumerate() {
        // SAFETY: as the caller's.
        unsafe { _mm512_storeu_pd(dst.add(q * ld_dst), *column) };
    }
}

/// `c[l·ldc + r] = tile[r·ld + l]` for `r < rows`, `l < width`: a tile of `c'` into `c`,
/// entry by entry (the tiles that [`store_transposed8x8`] does not take).
///
/// # Safety
/// `tile` holds `rows` rows of `ld ≥ width` entries; every `c[l·ldc + r]` is writable.
unsafe fn store_transposed(
    tile: &[f64],
    ld: usize,
    rows: usize,
    width: usize,
    c: *mut f64,
    ldc: usize,
) {
    for l in 0..width {
        for r in 0..rows {
            // SAFETY: as the caller's.
            unsafe { *c.add(l * ldc + r) = tile[r * ld + l] };
        }
    }
}

/// The block store of the instruction sets without one: never called (`block8: false`).
#[allow(dead_code)]
fn no_block8<V>(_: [V; 8], _: *mut f64, _: usize) {
    unreachable!("no 8×8 block store")
}

thread_local! {
    /// The packed copy of a transposed or ragged `b`, kept between calls.
    static PACKED: std::cell::Cell<Vec<f64>> = const { std::cell::Cell::new(Vec::new()) };
}

/// One product's operands: `a` m×k (or its transpose), `b` k×n row-major with row stride
/// `ldb`, a multiple of the vector width, zero beyond column `n`.
struct Tiles<'a> {
    a: &'a [f64],
    a_transposed: bool,
    b: &'a [f64],
    ldb: usize,
    m: usize,
    k: usize,
    n: usize,
    /// Whether each chain starts from the rounded product at `p = 0` (nano-gemm's
    /// unrolled kernels) rather than from +0.0.
    first_rounded: bool,
    /// Whether entry `(i, j)` of the tiles is `c[j·m + i]` (the tiles compute `c'`).
    c_transposed: bool,
    /// The ReLU applied to the sums before they are stored; its bias is indexed by the
    /// column of `c` (the row of the tiles when `c_transposed`).
    relu: Option<Relu<'a>>,
}

/// The tile loops for one instruction set: `$rows` rows by two vectors of columns, the
/// last columns by one vector, the last rows by 4, 2, 1. Sums stay in registers; each
/// step of `p` broadcasts `a[i,p]` along two vectors of row `p` of `b`.
macro_rules! tile_kernels {
    (
        $(#[$feature:meta])*
        mod $module:ident {
            vector: $v:ty, lanes: $lanes:literal, rows: $rows:literal, zero: $zero:expr,
            splat: $splat:path, load: $load:path, store: $store:path,
            mul: $mul:path, fma: $fma:path, add: $add:path, relu: $relu:path, zeros: $zeros:path,
            block8: $block8:expr, store8x8: $store8x8:path $(,)?
        }
    ) => {
        mod $module {
            #[allow(unused_imports)]
            use super::{lanes4, Tiles};

            const L: usize = $lanes;

            $(#[$feature])*
            /// All tiles; returns the ReLU's count of zeros.
            pub(super) unsafe fn run(t: &Tiles, c: *mut f64, rows: std::ops::Range<usize>) -> u64 {
                let (mut j0, mut zeros) = (0, 0);
                while j0 < t.n {
                    // SAFETY: as `run`'s: columns j0.. exist in `b` (padded) and `c`.
                    unsafe {
                        if t.n - j0 > L {
                            zeros += columns::<2>(t, j0, c, rows.clone());
                            j0 += 2 * L;
                        } else {
                            zeros += columns::<1>(t, j0, c, rows.clone());
                            j0 += L;
                        }
                    }
                }
                zeros
            }

            $(#[$feature])*
            #[inline]
            unsafe fn columns<const VS: usize>(
                t: &Tiles,
                j0: usize,
                c: *mut f64,
                rows: std::ops::Range<usize>,
            ) -> u64 {
                let (mut i0, mut zeros) = (rows.start, 0);
                // SAFETY: rows i0..i0+R exist.
                unsafe {
                    while rows.end - i0 >= $rows {
                        zeros += tile::<$rows, VS>(t, i0, j0, c);
                        i0 += $rows;
                    }
                    if $rows > 4 && rows.end - i0 >= 4 {
                        zeros += tile::<4, VS>(t, i0, j0, c);
                        i0 += 4;
                    }
                    if $rows > 2 && rows.end - i0 >= 2 {
                        zeros += tile::<2, VS>(t, i0, j0, c);
                        i0 += 2;
                    }
                    if rows.end - i0 >= 1 {
                        zeros += tile::<1, VS>(t, i0, j0, c);
                    }
                }
                zeros
            }

            $(#[$feature])*
            #[inline]
            unsafe fn tile<const R: usize, const VS: usize>(
                t: &Tiles,
                i0: usize,
                j0: usize,
                c: *mut f64,
            ) -> u64 {
                // SAFETY: as the caller's.
                unsafe {
                    match (t.a_transposed, t.relu.is_some()) {
                        (true, false) => tile_of::<R, VS, true, false>(t, i0, j0, c),
                        (false, false) => tile_of::<R, VS, false, false>(t, i0, j0, c),
                        (true, true) => tile_of::<R, VS, true, true>(t, i0, j0, c),
                        (false, true) => tile_of::<R, VS, false, true>(t, i0, j0, c),
                    }
                }
            }

            /// `c[i0..i0+R, j0..j0+VS·L]` (the columns below `n`), `a` held as its
            /// transpose if `AT`; returns the ReLU's count of zeros in the tile.
            $(#[$feature])*
            #[inline]
            unsafe fn tile_of<const R: usize, const VS: usize, const AT: bool, const RELU: bool>(
                t: &Tiles,
                i0: usize,
                j0: usize,
                c: *mut f64,
            ) -> u64 {
                // `a[i,p]` is at `i·a_row + p·a_col`.
                let (a_row, a_col) = if AT { (1, t.m) } else { (t.k, 1) };
                // SAFETY: `i0 + R ≤ m`, `j0 + VS·L ≤ ldb`, `p < k`: every read is inside
                // `a` (m·k) and `b` (k·ldb), every write inside `c` (m·n).
                unsafe {
                    let a = t.a.as_ptr().add(i0 * a_row);
                    let b = t.b.as_ptr().add(j0);
                    let mut sums: [[$v; VS]; R] = [[$zero; VS]; R];
                    let mut p = 0;
                    if t.first_rounded {
                        let mut bp: [$v; VS] = [$zero; VS];
                        for (v, x) in bp.iter_mut().enumerate() {
                            *x = $load(b.add(v * L));
                        }
                        for (r, row) in sums.iter_mut().enumerate() {
                            let ar = $splat(*a.add(r * a_row));
                            for (s, x) in row.iter_mut().zip(&bp) {
                                *s = $mul(ar, *x);
                            }
                        }
                        p = 1;
                    }
                    while p < t.k {
                        let (ap, brow) = (a.add(p * a_col), b.add(p * t.ldb));
                        let mut bp: [$v; VS] = [$zero; VS];
                        for (v, x) in bp.iter_mut().enumerate() {
                            *x = $load(brow.add(v * L));
                        }
                        for (r, row) in sums.iter_mut().enumerate() {
                            let ar = $splat(*ap.add(r * a_row));
                            for (s, x) in row.iter_mut().zip(&bp) {
                                *s = $fma(ar, *x, *s);
                            }
                        }
                        p += 1;
                    }
                    let width = (VS * L).min(t.n - j0);
                    let mut zeros = 0;
                    if RELU && let Some(relu) = t.relu {
                        // Whole vectors: `n` is a multiple of 8 ([`matmul_with`]).
                        for (r, row) in sums.iter_mut().enumerate() {
                            for (v, s) in row.iter_mut().enumerate() {
                                // `sum + bias` (either order: the same bits but for which
                                // NaN, and the ReLU maps every NaN to 0).
                                if let Some(bias) = relu.bias {
                                    let b = if t.c_transposed {
                                        $splat(*bias.as_ptr().add(i0 + r))
                                    } else {
                                        $load(bias.as_ptr().add(j0 + v * L))
                                    };
                                    *s = $add(*s, b);
                                }
                            }
                        }
                        // Zeros are rare (ties): OR the lanes' flags, count only if any.
                        let mut any = 0;
                        for s in sums.as_flattened() {
                            any |= $zeros(*s);
                        }
                        if any != 0 {
                            for s in sums.as_flattened() {
                                zeros += $zeros(*s).count_ones() as u64;
                            }
                        }
                        for s in sums.as_flattened_mut() {
                            *s = $relu(*s);
                        }
                    }
                    if t.c_transposed {
                        // Entry (i0 + r, j0 + l) of the tiles is c[(j0 + l)·m + i0 + r].
                        let c = c.add(j0 * t.m + i0);
                        if $block8 && R == 8 && width == VS * L {
                            for v in 0..VS {
                                let block: [$v; 8] = std::array::from_fn(|r| sums[r][v]);
                                $store8x8(block, c.add(v * L * t.m), t.m);
                            }
                        } else {
                            let mut tile = [[[0.0; L]; VS]; R];
                            for (out, row) in tile.iter_mut().zip(&sums) {
                                for (x, s) in out.iter_mut().zip(row) {
                                    $store(x.as_mut_ptr(), *s);
                                }
                            }
                            let tile = tile.as_flattened().as_flattened();
                            super::store_transposed(tile, VS * L, R, width, c, t.m);
                        }
                        return zeros;
                    }
                    for (r, row) in sums.iter().enumerate() {
                        let out = c.add((i0 + r) * t.n + j0);
                        if width == VS * L {
                            for (v, x) in row.iter().enumerate() {
                                $store(out.add(v * L), *x);
                            }
                        } else {
                            let mut tail = [[0.0; L]; VS];
                            for (v, x) in row.iter().enumerate() {
                                $store(tail[v].as_mut_ptr(), *x);
                            }
                            std::ptr::copy_nonoverlapping(tail.as_flattened().as_ptr(), out, width);
                        }
                    }
                    zeros
                }
            }
        }
    };
}

tile_kernels! {
    mod portable {
        vector: [f64; 4], lanes: 4, rows: 4, zero: [0.0; 4],
        splat: lanes4::splat, load: lanes4::load, store: lanes4::store,
        mul: lanes4::mul, fma: lanes4::fma, add: lanes4::add, relu: lanes4::relu,
        zeros: lanes4::zeros,
        block8: false, store8x8: super::no_block8,
    }
}

#[cfg(target_arch = "x86_64")]
tile_kernels! {
    #[target_feature(enable = "avx2,fma")]
    mod avx2 {
        vector: std::arch::x86_64::__m256d, lanes: 4, rows: 4,
        zero: std::arch::x86_64::_mm256_setzero_pd(),
        splat: std::arch::x86_64::_mm256_set1_pd, load: std::arch::x86_64::_mm256_loadu_pd,
        store: std::arch::x86_64::_mm256_storeu_pd, mul: std::arch::x86_64::_mm256_mul_pd,
        fma: std::arch::x86_64::_mm256_fmadd_pd, add: std::arch::x86_64::_mm256_add_pd,
        relu: super::relu_avx2, zeros: super::zeros_avx2, block8: false,
        store8x8: super::no_block8,
    }
}

#[cfg(target_arch = "x86_64")]
tile_kernels! {
    #[target_feature(enable = "avx512f")]
    mod avx512 {
        vector: std::arch::x86_64::__m512d, lanes: 8, rows: 8,
        zero: std::arch::x86_64::_mm512_setzero_pd(),
        splat: std::arch::x86_64::_mm512_set1_pd, load: std::arch::x86_64::_mm512_loadu_pd,
        store: std::arch::x86_64::_mm512_storeu_pd, mul: std::arch::x86_64::_mm512_mul_pd,
        fma: std::arch::x86_64::_mm512_fmadd_pd, add: std::arch::x86_64::_mm512_add_pd,
        relu: super::relu_avx512, zeros: super::zeros_avx512, block8: true,
        store8x8: super::store_transposed8x8,
    }
}

/// The portable kernel's vectors: four lanes as an array.
mod lanes4 {
    pub fn splat(x: f64) -> [f64; 4] {
        [x; 4]
    }
    /// # Safety
    /// `p` points to four readable values.
    pub unsafe fn load(p: *const f64) -> [f64; 4] {
        // SAFETY: as the caller's.
        unsafe { p.cast::<[f64; 4]>().read_unaligned() }
    }
    /// # Safety
    /// `p` points to four writable values.
    pub unsafe fn store(p: *mut f64, x: [f64; 4]) {
        // SAFETY: as the caller's.
        unsafe { p.cast::<[f64; 4]>().write_unaligned(x) }
    }
    pub fn mul(a: [f64; 4], b: [f64; 4]) -> [f64; 4] {
        std::array::from_fn(|l| a[l] * b[l])
    }
    pub fn fma(a: [f64; 4], b: [f64; 4], c: [f64; 4]) -> [f64; 4] {
        std::array::from_fn(|l| a[l].mul_add(b[l], c[l]))
    }
    pub fn add(a: [f64; 4], b: [f64; 4]) -> [f64; 4] {
        std::array::from_fn(|l| a[l] + b[l])
    }
    /// [`super::relu`] of each lane.
    pub fn relu(x: [f64; 4]) -> [f64; 4] {
        x.map(super::relu)
    }
    /// Bit `l` set where lane `l` is zero.
    pub fn zeros(x: [f64; 4]) -> u32 {
        (0..4).map(|l| u32::from(x[l] == 0.0) << l).sum()
    }
}

/// The ReLU of both backends, `max(x, 0)` as `interp::binary` computes it: `x` where
/// `x >= 0` (-0.0 stays -0.0), else 0.0 (NaN gives 0.0).
pub fn relu(x: f64) -> f64 {
    if x >= 0.0 { x } else { 0.0 }
}

/// [`relu`] of each lane.
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn relu_avx2(x: std::arch::x86_64::__m256d) -> std::arch::x86_64::__m256d {
    use std::arch::x86_64::*;
    let zero = _mm256_setzero_pd();
    _mm256_blendv_pd(zero, x, _mm256_cmp_pd::<_CMP_GE_OQ>(x, zero))
}

/// Bit `l` set where lane `l` is zero.
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn zeros_avx2(x: std::arch::x86_64::__m256d) -> u32 {
    use std::arch::x86_64::*;
    _mm256_movemask_pd(_mm256_cmp_pd::<_CMP_EQ_OQ>(x, _mm256_setzero_pd())) as u32
}

/// [`relu`] of each lane.
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn relu_avx512(x: std::arch::x86_64::__m512d) -> std::arch::x86_64::__m512d {
    use std::arch::x86_64::*;
    let zero = _mm512_setzero_pd();
    _mm512_maskz_mov_pd(_mm512_cmp_pd_mask::<_CMP_GE_OQ>(x, zero), x)
}

/// Bit `l` set where lane `l` is zero.
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn zeros_avx512(x: std::arch::x86_64::__m512d) -> u32 {
    use std::arch::x86_64::*;
    _mm512_cmp_pd_mask::<_CMP_EQ_OQ>(x, _mm512_setzero_pd()) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::math::{SMALL_GEMV, matmul_into};

    /// faer's product, called as `matmul_into` called it before this kernel existed.
    fn faer_product(a: MatOperand, b: MatOperand, m: usize, k: usize, n: usize) -> Vec<f64> {
        use faer::{Accum, MatMut, MatRef, Par};
        let view = |x: MatOperand, rows: usize, cols: usize| {
            let (rs, cs) = if x.transposed {
                (1, rows as isize)
            } else {
                (cols as isize, 1)
            };
            assert!(x.data.len() >= rows * cols);
            // SAFETY: the buffer holds rows*cols values laid out as these strides say.
            unsafe { MatRef::from_raw_parts(x.data.as_ptr(), rows, cols, rs, cs) }
        };
        let mut c = vec![f64::NAN; m * n];
        let dst = MatMut::from_row_major_slice_mut(&mut c, m, n);
        faer::linalg::matmul::matmul(
            dst,
            Accum::Replace,
            view(a, m, k),
            view(b, k, n),
            1.0,
            Par::Seq,
        );
        c
    }

    /// A stream of test values: mostly of mixed signs and magnitudes (products that round,
    /// and cancel), with `special` of every 1,000 drawn from the non-finite and the
    /// edge values.
    struct Values(u64, u64);

    impl Values {
        fn next(&mut self) -> f64 {
            // xorshift64*
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let r = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
            if r % 1000 < self.1 {
                const EDGE: [f64; 8] = [
                    f64::NAN,
                    f64::INFINITY,
                    f64::NEG_INFINITY,
                    0.0,
                    -0.0,
                    f64::MIN_POSITIVE / 4.0,
                    1e300,
                    -1e-300,
                ];
                return EDGE[(r >> 32) as usize % EDGE.len()];
            }
            let mantissa = (r >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
            let exponent = ((r >> 4) % 9) as i32 - 4;
            mantissa * 2f64.powi(exponent)
        }

        fn take(&mut self, len: usize) -> Vec<f64> {
            (0..len).map(|_| self.next()).collect()
        }
    }

    /// The instruction sets this CPU runs.
    fn isas() -> Vec<Isa> {
        let mut all = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                all.push(Isa::Avx2);
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                all.push(Isa::Avx512);
            }
        }
        all
    }

    /// `got` and `want` bit for bit, or the first entry that differs.
    fn same_bits(got: &[f64], want: &[f64], what: &str) {
        if let Some(i) = (0..want.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
            panic!("{what}: entry {i} is {:e}, faer's {:e}", got[i], want[i]);
        }
    }

    /// Every way this file computes `a @ b` on this CPU (the dispatch of `matmul_into`,
    /// and each instruction set's code), against faer, bit for bit, in all four layouts.
    fn check(m: usize, k: usize, n: usize, values: &mut Values) {
        let a = values.take(m * k);
        let b = values.take(k * n);
        // The same matrices held as their transposes.
        let at: Vec<f64> = (0..k * m).map(|x| a[(x % m) * k + x / m]).collect();
        let bt: Vec<f64> = (0..n * k).map(|x| b[(x % k) * n + x / k]).collect();
        let op = |data, transposed| MatOperand { data, transposed };
        for (a, b) in [
            (op(&a, false), op(&b, false)),
            (op(&at, true), op(&b, false)),
            (op(&a, false), op(&bt, true)),
            (op(&at, true), op(&bt, true)),
        ] {
            let want = faer_product(a, b, m, k, n);
            let layout = (a.transposed, b.transposed);
            // (Small matrix-vector products are `math::small_gemv`'s, tested there.)
            if n > 1 || m * k > SMALL_GEMV {
                let mut c = vec![f64::NAN; m * n];
                matmul_into(a, b, &mut c, m, k, n);
                same_bits(&c, &want, &format!("matmul_into {m}×{k}×{n} {layout:?}"));
            }
            if !in_faers_order(b.transposed, m, k, n) {
                continue;
            }
            for isa in isas() {
                for route in [Route::Direct, Route::Transposed] {
                    let mut c = vec![f64::NAN; m * n];
                    matmul_with(isa, route, a, b, None, &mut c, m, k, n);
                    same_bits(
                        &c,
                        &want,
                        &format!("{isa:?} {route:?} {m}×{k}×{n} {layout:?}"),
                    );
                }
            }
        }
    }

    #[test]
    fn a_relu_in_the_product_is_the_relu_of_the_stored_product() {
        // `max(a @ b + bias, 0)` from the tiles' sums, on every instruction set and route,
        // against the stored product then the add and `relu` entry by entry: the same bits
        // (±0, NaN and ±inf among the operands and the bias) and the exact count of zeros;
        // and `math::matmul_relu_into` on shapes this kernel leaves to faer.
        use crate::kernels::math::matmul_relu_into;
        let mut values = Values(0x5851_F42D_4C95_7F2D, 60);
        let reference = |c: &[f64], bias: Option<&[f64]>, n: usize| {
            let mut zeros = 0;
            let out: Vec<f64> = c
                .iter()
                .enumerate()
                .map(|(i, x)| {
                    let v = bias.map_or(*x, |b| *x + b[i % n]);
                    zeros += (v == 0.0) as u64;
                    relu(v)
                })
                .collect();
            (out, zeros)
        };
        for m in [1, 2, 3, 4, 5, 8, 9, 16, 17, 24, 32] {
            for k in [2, 3, 7, 16, 17, 32] {
                for n in [8, 16, 24, 32, 40] {
                    for (a_t, b_t) in [(false, false), (false, true), (true, false), (true, true)] {
                        let (a, b) = (values.take(m * k), values.take(k * n));
                        let a = MatOperand {
                            data: &a,
                            transposed: a_t,
                        };
                        let b = MatOperand {
                            data: &b,
                            transposed: b_t,
                        };
                        if !in_faers_order(b.transposed, m, k, n) {
                            continue;
                        }
                        let bias: Vec<f64> = (0..n)
                            .map(|j| {
                                if j % 4 == 0 {
                                    [0.0, -0.0][j % 8 / 4]
                                } else {
                                    values.next()
                                }
                            })
                            .collect();
                        for bias in [None, Some(&bias[..])] {
                            for isa in isas() {
                                for route in [Route::Direct, Route::Transposed] {
                                    if route == Route::Transposed && m % 8 != 0 {
                                        continue;
                                    }
                                    let mut c = vec![f64::NAN; m * n];
                                    matmul_with(isa, route, a, b, None, &mut c, m, k, n);
                                    let (want, want_zeros) = reference(&c, bias, n);
                                    let mut got = vec![f64::NAN; m * n];
                                    let zeros = matmul_with(
                                        isa,
                                        route,
                                        a,
                                        b,
                                        Some(Relu { bias }),
                                        &mut got,
                                        m,
                                        k,
                                        n,
                                    );
                                    let what = format!(
                                        "{isa:?} {route:?} {m}×{k}×{n} T {a_t} {b_t} bias {}",
                                        bias.is_some()
                                    );
                                    same_bits(&got, &want, &what);
                                    assert_eq!(zeros, want_zeros, "{what}");
                                }
                            }
                        }
                    }
                }
            }
        }
        // Left to faer (n not a multiple of 8, or k = 1): stored, then passed over.
        for (m, k, n) in [(5, 3, 10), (9, 1, 16), (3, 40, 1)] {
            let (a, b) = (values.take(m * k), values.take(k * n));
            let (a, b) = (
                MatOperand {
                    data: &a,
                    transposed: false,
                },
                MatOperand {
                    data: &b,
                    transposed: false,
                },
            );
            let bias: Vec<f64> = (0..n)
                .map(|j| if j % 2 == 0 { 0.0 } else { values.next() })
                .collect();
            let mut c = vec![f64::NAN; m * n];
            matmul_into(a, b, &mut c, m, k, n);
            let (want, want_zeros) = reference(&c, Some(&bias), n);
            let mut got = vec![f64::NAN; m * n];
            let zeros = matmul_relu_into(a, b, Some(&bias), &mut got, m, k, n);
            same_bits(&got, &want, &format!("faer's {m}×{k}×{n}"));
            assert_eq!(zeros, want_zeros);
        }
    }

    #[test]
    fn every_small_shape_gives_faers_bits() {
        // All shapes up to 20 in each dimension, finite values and a few non-finite ones.
        let mut values = Values(0x9E37_79B9_7F4A_7C15, 2);
        for m in 1..=20 {
            for k in 1..=20 {
                for n in 1..=20 {
                    check(m, k, n, &mut values);
                }
            }
        }
    }

    #[test]
    fn shapes_up_to_40_and_the_bench_products_give_faers_bits() {
        let mut values = Values(0xD1B5_4A32_D192_ED03, 1);
        let mut shapes = vec![
            // dln's products, sgd's, and around each switch of order: nano-gemm's
            // unrolled depths (16/17), its size (16³), its depth blocks (64/65), the
            // depth block of private-gemm (512/513) and `SMALL_GEMM`.
            (16, 16, 16),
            (128, 16, 16),
            (16, 128, 16),
            (32, 32, 256),
            (256, 32, 32),
            (32, 256, 32),
            (2, 16, 128),
            (2, 17, 120),
            (4, 64, 16),
            (4, 65, 15),
            (3, 65, 20),
            (2, 512, 2),
            (2, 513, 2),
            (4, 512, 32),
            (64, 16, 64),
            (64, 17, 64),
            (40, 41, 40),
            (128, 32, 16),
            (16, 256, 16),
        ];
        // Shapes up to 40, a different one in each combination of sizes' residues mod 8.
        for x in 0..256usize {
            let pick = |s: usize| 1 + (x * s + x / 7) % 40;
            shapes.push((pick(7), pick(13), pick(29)));
        }
        for (m, k, n) in shapes {
            check(m, k, n, &mut values);
        }
    }

    #[test]
    fn products_up_to_medium_gemm_give_faers_bits() {
        // Above `SMALL_GEMM`: sgd's two products, the shapes measured for `MEDIUM_GEMM`
        // on each side of its rules (n 256/512, k 16/32, m against n and 8n), ragged ones
        // for the tiles' tails, and `MEDIUM_GEMM` itself; NaN, ±inf, ±0 and subnormal
        // entries five in a thousand.
        let mut values = Values(0x5851_F42D_4C95_7F2D, 5);
        for (m, k, n) in [
            (32, 32, 256),
            (256, 32, 32),
            (16, 64, 256),
            (64, 16, 256),
            (32, 16, 512),
            (128, 32, 64),
            (16, 128, 128),
            (64, 64, 64),
            (512, 16, 16),
            (512, 16, 32),
            (8, 64, 512),
            (40, 33, 136),
            (200, 24, 44),
            (13, 100, 104),
        ] {
            check(m, k, n, &mut values);
        }
    }

    #[test]
    fn sgds_products_take_this_kernel() {
        // sgd's `xb @ W'` (`W` held as its transpose) and `dH' @ xb`, as its step passes
        // them to `matmul_into`.
        assert!(fits(false, true, 32, 32, 256));
        assert_eq!(route(false, true, 32, 256), Route::Transposed);
        assert!(fits(true, false, 256, 32, 32));
        assert_eq!(route(true, false, 256, 32), Route::Direct);
        // Rows of 512 (4 KB) stay with faer, and so does a packed `b` above `SMALL_GEMM`.
        assert!(!fits(false, false, 32, 16, 512));
        assert!(!fits(false, true, 64, 64, 64));
    }

    #[test]
    fn signed_zeros_follow_faers_first_product() {
        // Entries ±0 and ±1 (the products exact, many of them -0): a chain from +0.0 and
        // one from the first product differ in the sign of the zeros they sum to.
        let mut values = Values(0x0123_4567_89AB_CDEF, 0);
        let sign = |x: &mut Values| {
            let v = x.next();
            let magnitude = if v.abs() < 0.2 { 1.0 } else { 0.0 };
            magnitude * v.signum()
        };
        let mut negative_zeros = 0;
        for (m, k, n) in [
            (2, 2, 2),
            (3, 4, 5),
            (16, 16, 16),
            (2, 17, 16),
            (16, 2, 128),
            (32, 3, 40),
        ] {
            let a: Vec<f64> = (0..m * k).map(|_| sign(&mut values)).collect();
            let b: Vec<f64> = (0..k * n).map(|_| sign(&mut values)).collect();
            let op = |data, transposed| MatOperand { data, transposed };
            let want = faer_product(op(&a, false), op(&b, false), m, k, n);
            negative_zeros += want
                .iter()
                .filter(|x| x.to_bits() == (-0.0f64).to_bits())
                .count();
            for isa in isas() {
                for route in [Route::Direct, Route::Transposed] {
                    let mut c = vec![f64::NAN; m * n];
                    matmul_with(
                        isa,
                        route,
                        op(&a, false),
                        op(&b, false),
                        None,
                        &mut c,
                        m,
                        k,
                        n,
                    );
                    same_bits(&c, &want, &format!("{isa:?} {route:?} {m}×{k}×{n}"));
                }
            }
        }
        assert!(negative_zeros > 100, "{negative_zeros} entries -0");
    }

    #[test]
    fn nan_and_infinity_propagate_as_in_faer() {
        // Every fifth value special: most entries meet a NaN or ±inf (inf · 0 is NaN).
        let mut values = Values(0x2545_F491_4F6C_DD1D, 200);
        for (m, k, n) in [
            (16, 16, 16),
            (128, 16, 16),
            (16, 128, 16),
            (5, 3, 9),
            (9, 40, 17),
        ] {
            check(m, k, n, &mut values);
        }
    }
}
