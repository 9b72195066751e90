//! `kernels::gemv` against faer bit for bit: matrix-vector products above `SMALL_GEMV`
//! in both layouts of `a`, every instruction set this CPU runs, `matmul_into`'s routing
//! and its split in halves.

use traj::kernels::math::{MatOperand, PARALLEL_GEMV, SMALL_GEMV, matmul_into};
use traj::kernels::{Isa, gemv};

/// faer's `c = a @ x`, called as `matmul_into` called it before `gemv` existed (`Par::Seq`,
/// never split): `a` m×k, row-major or (`transposed`) its transpose's buffer.
fn faer_matvec(a: &[f64], transposed: bool, x: &[f64], m: usize, k: usize) -> Vec<f64> {
    use faer::{Accum, MatMut, MatRef, Par};
    let (rs, cs) = if transposed {
        (1, m as isize)
    } else {
        (k as isize, 1)
    };
    assert!(a.len() >= m * k && x.len() >= k);
    // SAFETY: the buffers hold m·k and k values laid out as these strides say.
    let (a, x) = unsafe {
        (
            MatRef::from_raw_parts(a.as_ptr(), m, k, rs, cs),
            MatRef::from_raw_parts(x.as_ptr(), k, 1, 1, 1),
        )
    };
    let mut c = vec![f64::NAN; m];
    let dst = MatMut::from_row_major_slice_mut(&mut c, m, 1);
    faer::linalg::matmul::matmul(dst, Accum::Replace, a, x, 1.0, Par::Seq);
    c
}

/// A stream of test values: mantissas of both signs over 2^-4..2^4 (products that round
/// and sums that cancel), and `special` of every 1,000 from the edge values: ±0,
/// subnormals, huge and tiny magnitudes, ±inf, NaN.
struct Values(u64, u64);

impl Values {
    fn next(&mut self) -> f64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let r = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        if r % 1000 < self.1 {
            const EDGE: [f64; 12] = [
                0.0,
                -0.0,
                f64::MIN_POSITIVE / 4.0,
                -5e-324,
                1e300,
                -1e300,
                1e-300,
                -1e-300,
                f64::INFINITY,
                f64::NEG_INFINITY,
                f64::NAN,
                f64::MAX,
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

/// The instruction sets this CPU runs with faer's bits (`gemv::best` and below).
fn isas() -> Vec<Isa> {
    let mut all = vec![Isa::Portable];
    #[cfg(target_arch = "x86_64")]
    {
        if gemv::best().is_some() {
            all.push(Isa::Avx2);
        }
        if gemv::best() == Some(Isa::Avx512) {
            all.push(Isa::Avx512);
        }
    }
    all
}

/// `got` and `want` bit for bit, or the first entry that differs.
fn same_bits(got: &[f64], want: &[f64], what: &str) {
    same_bits_but_nans(got, want, false, what)
}

/// `got` and `want` bit for bit, where `any_nan` any NaN for a NaN (the kernel alone: which
/// NaN faer's entries hold depends on its compiled code, and `matmul_into` hands a product
/// with a NaN entry to faer).
fn same_bits_but_nans(got: &[f64], want: &[f64], any_nan: bool, what: &str) {
    assert_eq!(got.len(), want.len());
    let same = |g: f64, w: f64| g.to_bits() == w.to_bits() || (any_nan && g.is_nan() && w.is_nan());
    if let Some(i) = (0..want.len()).find(|&i| !same(got[i], want[i])) {
        panic!(
            "{what}: entry {i} is {:e} ({:#x}), faer's {:e} ({:#x})",
            got[i],
            got[i].to_bits(),
            want[i],
            want[i].to_bits()
        );
    }
}

/// Every way of computing `a @ x` here — each instruction set's code, and `matmul_into`
/// where it takes this kernel — against faer, in both layouts of `a`. Returns faer's
/// results (rows, columns).
fn check(m: usize, k: usize, values: &mut Values) -> (Vec<f64>, Vec<f64>) {
    let a = values.take(m * k);
    let x = values.take(k);
    let at: Vec<f64> = (0..k * m).map(|j| a[(j % m) * k + j / m]).collect();
    let mut results = vec![];
    for (data, transposed) in [(&a, false), (&at, true)] {
        let want = faer_matvec(data, transposed, &x, m, k);
        let stride = if transposed { m } else { k };
        for isa in isas() {
            let mut c = vec![f64::NAN; m];
            gemv::matvec(isa, data, transposed, stride, &x, &mut c, m, k);
            let what = format!("{isa:?} [{m},{k}] transposed {transposed}");
            same_bits_but_nans(&c, &want, true, &what);
        }
        // Above SMALL_GEMV `matmul_into`'s bits are faer's, NaNs included.
        if m * k > SMALL_GEMV {
            let mut c = vec![f64::NAN; m];
            let op = |data, transposed| MatOperand { data, transposed };
            matmul_into(op(data, transposed), op(&x, false), &mut c, m, k, 1);
            same_bits(&c, &want, &format!("matmul_into [{m},{k}] {transposed}"));
        }
        results.push(want);
    }
    (results.remove(0), results.remove(0))
}

#[test]
fn random_shapes_give_faers_bits_in_both_layouts() {
    // sgd's, relu2's and around SMALL_GEMV, then shapes of 2..600 with every residue of
    // the row count mod 8 and the depth mod 16 (the tails of a vector and of faer's four
    // accumulators).
    let mut values = Values(0x9E37_79B9_7F4A_7C15, 2);
    let mut shapes = vec![
        (32, 256),
        (256, 32),
        (512, 256),
        (256, 512),
        (64, 64),
        (65, 64),
        (64, 65),
        (2, 2049),
        (2049, 2),
        (600, 600),
        (599, 601),
    ];
    for x in 0..400usize {
        let pick = |s: usize| 2 + (x * s + x / 7) % 599;
        shapes.push((pick(13), pick(29)));
    }
    for r in 0..8 {
        for t in 0..16 {
            shapes.push((40 + 8 * t + r, 64 + 16 * r + t));
        }
    }
    let mut residues = std::collections::BTreeSet::new();
    for (m, k) in shapes {
        residues.insert((m % 8, k % 16));
        check(m, k, &mut values);
    }
    assert_eq!(residues.len(), 8 * 16);
}

#[test]
fn edge_values_give_faers_bits() {
    // One value in fifty from ±0, subnormals, ±1e300, ±inf, NaN: many entries overflow or
    // meet inf · 0 (NaN).
    let mut values = Values(0x2545_F491_4F6C_DD1D, 20);
    let mut saw = (0, 0, 0);
    for (m, k) in [
        (32, 256),
        (256, 32),
        (7, 600),
        (600, 7),
        (33, 129),
        (129, 33),
        (300, 20),
        (20, 300),
    ] {
        let (rows, columns) = check(m, k, &mut values);
        for v in rows.iter().chain(&columns) {
            saw.0 += v.is_nan() as usize;
            saw.1 += v.is_infinite() as usize;
            saw.2 += v.is_finite() as usize;
        }
    }
    assert!(saw.0 > 20 && saw.1 > 20 && saw.2 > 20, "{saw:?}");
    // Products ±0 and ±1, all exact: the signs of zero sums follow faer's chains from +0.0.
    let mut values = Values(0x0123_4567_89AB_CDEF, 0);
    for (m, k) in [(64, 70), (70, 64), (3, 1500), (1500, 3)] {
        let signs: Vec<f64> = (0..m * k + k)
            .map(|_| {
                let v = values.next();
                if v.abs() < 0.05 {
                    v.signum()
                } else {
                    0.0 * v.signum()
                }
            })
            .collect();
        let (a, x) = signs.split_at(m * k);
        for (transposed, data) in [(false, a.to_vec()), (true, a.to_vec())] {
            let want = faer_matvec(&data, transposed, x, m, k);
            for isa in isas() {
                let mut c = vec![f64::NAN; m];
                let stride = if transposed { m } else { k };
                gemv::matvec(isa, &data, transposed, stride, x, &mut c, m, k);
                same_bits(&c, &want, &format!("{isa:?} ±0/±1 [{m},{k}] {transposed}"));
            }
            if m * k > SMALL_GEMV {
                let mut c = vec![f64::NAN; m];
                let op = |data, transposed| MatOperand { data, transposed };
                matmul_into(op(&data, transposed), op(x, false), &mut c, m, k, 1);
                same_bits(
                    &c,
                    &want,
                    &format!("matmul_into ±0/±1 [{m},{k}] {transposed}"),
                );
            }
        }
    }
}

#[test]
fn a_single_column_is_faers_column_major_product() {
    // `[m,1] @ [1]` above SMALL_GEMV: faer takes a row-major single column as column-major.
    let mut values = Values(0xD1B5_4A32_D192_ED03, 50);
    let (m, k) = (5000, 1);
    let (a, x) = (values.take(m), values.take(1));
    let want = faer_matvec(&a, false, &x, m, k);
    let mut c = vec![f64::NAN; m];
    let op = |data, transposed| MatOperand { data, transposed };
    matmul_into(op(&a, false), op(&x, false), &mut c, m, k, 1);
    same_bits(&c, &want, "[5000,1] @ [1]");
    // A single row, `[1,k] @ [k]`: one dot product.
    let (a, x) = (values.take(5000), values.take(5000));
    let want = faer_matvec(&a, false, &x, 1, 5000);
    let mut c = vec![f64::NAN; 1];
    matmul_into(op(&a, false), op(&x, false), &mut c, 1, 5000, 1);
    same_bits(&c, &want, "[1,5000] @ [5000]");
}

#[test]
fn split_products_give_the_unsplit_products_bits() {
    // At PARALLEL_GEMV and above `matmul_into` splits the rows in halves (one a core), each
    // half a strided view of `a`: still faer's bits of the whole product. wide's shapes.
    let mut values = Values(0x5851_F42D_4C95_7F2D, 1);
    for (m, k) in [(1024, 1024), (1024, 2048), (2048, 1024), (1025, 1024)] {
        assert!(m * k >= PARALLEL_GEMV);
        let a = values.take(m * k);
        let x = values.take(k);
        let op = |data, transposed| MatOperand { data, transposed };
        for transposed in [false, true] {
            let want = faer_matvec(&a, transposed, &x, m, k);
            for _ in 0..3 {
                let mut c = vec![f64::NAN; m];
                matmul_into(op(&a, transposed), op(&x, false), &mut c, m, k, 1);
                same_bits(&c, &want, &format!("split [{m},{k}] {transposed}"));
            }
        }
    }
}
