//! Matrix observables (singular values, eigenvalues, ranks, norms) and the top eigenvalue of a symmetric operator by Lanczos, on faer, single-threaded.
//!
//! # Conventions
//! * Every function takes an `ndarray::ArrayView2<f64>` of any layout (a view that is
//!   not in standard row-major layout is copied into a contiguous buffer first).
//! * Non-finite input (`nan`, `inf`) is an `Err` naming the function and the entry:
//!   faer's iterations may fail to converge on it otherwise.
//! * Everything runs with `faer::Par::Seq`, so results do not depend on the number of
//!   threads, and the same input gives the same bits on every run.
//! * Empty matrices (a dimension of 0): `svals` is `[]`, `rank` 0, `erank`, `nuclear`
//!   and `spectral` are 0, and `cond` is `nan` (it has no defined value).
//! * The zero matrix: `rank` 0, `erank` 0 (there is no distribution to take the entropy
//!   of; we define it as 0 so that it is never `nan`), `cond` is `inf`.

use faer::diag::{Diag, DiagRef};
use faer::dyn_stack::{MemBuffer, MemStack, StackReq};
use faer::linalg::evd::{
    ComputeEigenvectors, self_adjoint_evd, self_adjoint_evd_scratch, tridiagonal_self_adjoint_evd,
};
use faer::linalg::svd::{ComputeSvdVectors, svd, svd_scratch};
use faer::linalg::temp_mat_scratch;
use faer::{Mat, MatRef, Par};
use ndarray::ArrayView2;

/// The entries of `a` in row-major order, checked finite. `what` names the caller
/// in error messages.
fn row_major(a: &ArrayView2<f64>, what: &str) -> Result<Vec<f64>, String> {
    let data: Vec<f64> = match a.as_slice() {
        Some(s) => s.to_vec(),
        None => a.iter().copied().collect(),
    };
    let n = a.ncols();
    if let Some(k) = data.iter().position(|v| !v.is_finite()) {
        let (i, j) = (k / n.max(1), k % n.max(1));
        return Err(format!(
            "{what}: the matrix has a non-finite entry at [{i},{j}] ({})",
            data[k]
        ));
    }
    Ok(data)
}

/// Singular values of `a`, in descending order (length `min(m, n)`).
pub fn svals(a: ArrayView2<f64>) -> Result<Vec<f64>, String> {
    svals_named(&a, "svals")
}

fn svals_named(a: &ArrayView2<f64>, what: &str) -> Result<Vec<f64>, String> {
    let (m, n) = a.dim();
    let data = row_major(a, what)?;
    let size = m.min(n);
    if size == 0 {
        return Ok(Vec::new());
    }
    let mat = MatRef::from_row_major_slice(&data, m, n);
    let mut s = Diag::<f64>::zeros(size);
    let req = svd_scratch::<f64>(
        m,
        n,
        ComputeSvdVectors::No,
        ComputeSvdVectors::No,
        Par::Seq,
        Default::default(),
    );
    let mut buf = MemBuffer::new(req);
    svd(
        mat,
        s.as_mut(),
        None,
        None,
        Par::Seq,
        MemStack::new(&mut buf),
        Default::default(),
    )
    .map_err(|e| format!("{what}: the singular value decomposition did not converge ({e:?})"))?;
    let mut out: Vec<f64> = s.column_vector().iter().copied().collect();
    // faer returns them nonincreasing already; sorting again is cheap and makes the
    // contract independent of that.
    out.sort_by(|x, y| y.total_cmp(x));
    Ok(out)
}

/// Eigenvalues of the symmetric matrix `s`, in descending order.
///
/// `s` must be square and symmetric up to rounding: an entry pair with
/// `|s[i,j] - s[j,i]| > 1e-8 * max|s|` is an `Err`. The symmetric part
/// `(s + sᵀ)/2` is what is decomposed (for an exactly symmetric matrix, `s` itself).
pub fn eigvals(s: ArrayView2<f64>) -> Result<Vec<f64>, String> {
    let (m, n) = s.dim();
    if m != n {
        return Err(format!(
            "eigvals: the matrix must be square, got [{m}, {n}]"
        ));
    }
    let mut data = row_major(&s, "eigvals")?;
    if n == 0 {
        return Ok(Vec::new());
    }
    let max_abs = data.iter().fold(0.0f64, |acc, v| acc.max(v.abs()));
    let tol = 1e-8 * max_abs;
    for i in 0..n {
        for j in 0..i {
            let (a, b) = (data[i * n + j], data[j * n + i]);
            if (a - b).abs() > tol {
                return Err(format!(
                    "eigvals: the matrix is not symmetric: entry [{i},{j}] is {a} but [{j},{i}] is {b}"
                ));
            }
            // a + (b - a)/2 is exactly a when a == b.
            let mid = a + 0.5 * (b - a);
            data[i * n + j] = mid;
            data[j * n + i] = mid;
        }
    }
    let mat = MatRef::from_row_major_slice(&data, n, n);
    let mut vals = dense_sym_eigen(mat, None).map_err(|e| format!("eigvals: {e}"))?;
    vals.reverse();
    Ok(vals)
}

/// Eigenvalues (ascending) of a symmetric matrix, reading its lower triangle, and the
/// eigenvectors into `u` when given.
fn dense_sym_eigen(mat: MatRef<'_, f64>, u: Option<&mut Mat<f64>>) -> Result<Vec<f64>, String> {
    let n = mat.nrows();
    let mut s = Diag::<f64>::zeros(n);
    let compute = if u.is_some() {
        ComputeEigenvectors::Yes
    } else {
        ComputeEigenvectors::No
    };
    let req = self_adjoint_evd_scratch::<f64>(n, compute, Par::Seq, Default::default());
    let mut buf = MemBuffer::new(req);
    self_adjoint_evd(
        mat,
        s.as_mut(),
        u.map(|u| u.as_mut()),
        Par::Seq,
        MemStack::new(&mut buf),
        Default::default(),
    )
    .map_err(|e| format!("the symmetric eigendecomposition did not converge ({e:?})"))?;
    Ok(s.column_vector().iter().copied().collect())
}

/// Number of singular values of `a` above `tol` times the largest (0 for a zero or
/// empty matrix). `tol` must be finite and nonnegative.
pub fn rank(a: ArrayView2<f64>, tol: f64) -> Result<i64, String> {
    if !(tol.is_finite() && tol >= 0.0) {
        return Err(format!(
            "rank: the tolerance must be finite and nonnegative, got {tol}"
        ));
    }
    let s = svals_named(&a, "rank")?;
    let Some(&top) = s.first() else {
        return Ok(0);
    };
    let cut = tol * top;
    Ok(s.iter().filter(|&&v| v > cut).count() as i64)
}

/// Effective rank (Roy & Vetterli 2007): `exp(-Σ p_i ln p_i)` with
/// `p_i = s_i / Σ s_j` over the singular values and `0 · ln 0 = 0`.
/// Between 1 and `min(m, n)` for a nonzero matrix; defined as 0 for a zero or empty
/// matrix (never `nan`).
pub fn erank(a: ArrayView2<f64>) -> Result<f64, String> {
    let s = svals_named(&a, "erank")?;
    let top = s.first().copied().unwrap_or(0.0);
    if top <= 0.0 {
        return Ok(0.0);
    }
    // Scale by the largest first so that the sum cannot overflow.
    let scaled: Vec<f64> = s.iter().map(|v| v / top).collect();
    let total: f64 = scaled.iter().sum();
    let entropy: f64 = scaled
        .iter()
        .map(|v| v / total)
        .filter(|&p| p > 0.0)
        .map(|p| -p * p.ln())
        .sum();
    Ok(entropy.exp())
}

/// Nuclear norm: the sum of the singular values (0 for an empty matrix).
pub fn nuclear(a: ArrayView2<f64>) -> Result<f64, String> {
    Ok(svals_named(&a, "nuclear")?.iter().sum())
}

/// Spectral norm: the largest singular value (0 for an empty matrix).
pub fn spectral(a: ArrayView2<f64>) -> Result<f64, String> {
    Ok(svals_named(&a, "spectral")?.first().copied().unwrap_or(0.0))
}

/// Condition number: the largest singular value over the smallest (of the
/// `min(m, n)` singular values). `inf` when the smallest is 0, the zero matrix
/// included; `nan` for an empty matrix, which has none (an observable that is not
/// finite is recorded, LANGUAGE.md 3.10).
pub fn cond(a: ArrayView2<f64>) -> Result<f64, String> {
    let s = svals_named(&a, "cond")?;
    let (Some(&top), Some(&bottom)) = (s.first(), s.last()) else {
        return Ok(f64::NAN);
    };
    if bottom == 0.0 {
        return Ok(f64::INFINITY);
    }
    Ok(top / bottom)
}

/// Eigenvalues (ascending) of the symmetric tridiagonal matrix with diagonal `alpha`
/// and off-diagonal `beta` (`beta.len() >= alpha.len() - 1`; extra entries are
/// ignored), by faer's tridiagonal QR.
fn tridiag_eigenvalues(alpha: &[f64], beta: &[f64]) -> Result<Vec<f64>, String> {
    let k = alpha.len();
    let mut off = beta[..k - 1].to_vec();
    off.push(0.0);
    let mut s = Diag::<f64>::zeros(k);
    // Values only: the routine takes two k×1 temporaries; a third is slack.
    let req = StackReq::all_of(&[
        temp_mat_scratch::<f64>(k, 1),
        temp_mat_scratch::<f64>(k, 1),
        temp_mat_scratch::<f64>(k, 1),
    ]);
    let mut buf = MemBuffer::new(req);
    tridiagonal_self_adjoint_evd(
        DiagRef::from_slice(alpha),
        DiagRef::from_slice(&off),
        s.as_mut(),
        None,
        Par::Seq,
        MemStack::new(&mut buf),
        Default::default(),
    )
    .map_err(|e| format!("the tridiagonal eigenproblem did not converge ({e:?})"))?;
    Ok(s.column_vector().iter().copied().collect())
}

/// The last component of the unit eigenvector of the top eigenvalue of the symmetric
/// tridiagonal matrix (`alpha`, `beta`), `beta.len() == alpha.len() - 1`.
fn tridiag_top_vector_last(alpha: &[f64], beta: &[f64]) -> Result<f64, String> {
    let k = alpha.len();
    let t = Mat::<f64>::from_fn(k, k, |i, j| {
        if i == j {
            alpha[i]
        } else if i == j + 1 {
            beta[j]
        } else if j == i + 1 {
            beta[i]
        } else {
            0.0
        }
    });
    let mut u = Mat::<f64>::zeros(k, k);
    dense_sym_eigen(t.as_ref(), Some(&mut u))?;
    Ok(u[(k - 1, k - 1)])
}

fn dot(x: &[f64], y: &[f64]) -> f64 {
    x.iter().zip(y).map(|(a, b)| a * b).sum()
}

fn norm(x: &[f64]) -> f64 {
    // Scaled, so that huge or tiny vectors neither overflow nor underflow.
    let scale = x.iter().fold(0.0f64, |acc, v| acc.max(v.abs()));
    if scale == 0.0 || !scale.is_finite() {
        return scale;
    }
    scale
        * x.iter()
            .map(|v| (v / scale) * (v / scale))
            .sum::<f64>()
            .sqrt()
}

/// A symmetric linear operator given by its products: `out = A v`.
pub type MatVec<'a> = dyn FnMut(&[f64], &mut [f64]) -> Result<(), String> + 'a;

/// The largest algebraic eigenvalue of a symmetric linear operator on `R^n`, given only
/// its products `hvp(x, out)` (`out = H x`; `out` arrives zeroed), by Lanczos with full
/// reorthogonalization from `start` (which need not be normalized).
///
/// After step k (k products), the top eigenvalue θ of the k×k tridiagonal matrix T_k is
/// returned when
/// * it changed by at most `rel_tol · scale` since step k-1 and the residual estimate
///   `|β_k · y_k|` (y_k the last component of θ's unit eigenvector of T_k) is at most
///   `rel_tol · scale`, where `scale = max(|θ|, 1e-6 · ‖T_k‖)` (the floor keeps a top
///   eigenvalue at or near 0 from asking for accuracy below rounding); or
/// * the Krylov space is exhausted (k = n); or
/// * Lanczos breaks down (β_k ≤ 64 ε ‖T_k‖: the Krylov space is invariant, and θ is an
///   eigenvalue of the operator; with a start vector orthogonal to the top eigenvector
///   it may not be the top one, as with any Krylov method).
///
/// Deterministic: the same start and operator give the same bits. Errors: `n == 0`, a
/// start of the wrong length, zero or non-finite; `rel_tol` negative or non-finite; a
/// non-finite product; an error returned by `hvp` (passed on unchanged).
pub fn top_eigenvalue(
    n: usize,
    start: &[f64],
    hvp: &mut MatVec,
    rel_tol: f64,
) -> Result<f64, String> {
    if n == 0 {
        return Err("top eigenvalue: the operator acts on an empty space (no parameters)".into());
    }
    if start.len() != n {
        return Err(format!(
            "top eigenvalue: the start vector has length {} but the operator acts on {n} values",
            start.len()
        ));
    }
    if !(rel_tol.is_finite() && rel_tol >= 0.0) {
        return Err(format!(
            "top eigenvalue: the tolerance must be finite and nonnegative, got {rel_tol}"
        ));
    }
    if start.iter().any(|v| !v.is_finite()) {
        return Err("top eigenvalue: the start vector has a non-finite entry".into());
    }
    let start_norm = norm(start);
    if start_norm == 0.0 {
        return Err("top eigenvalue: the start vector is zero".into());
    }

    let mut basis: Vec<Vec<f64>> = vec![start.iter().map(|v| v / start_norm).collect()];
    let mut alpha: Vec<f64> = Vec::new();
    let mut beta: Vec<f64> = Vec::new();
    let mut prev_top: Option<f64> = None;
    let mut w = vec![0.0; n];
    loop {
        let k = basis.len();
        let v = &basis[k - 1];
        w.iter_mut().for_each(|x| *x = 0.0);
        hvp(v, &mut w)?;
        if let Some(i) = w.iter().position(|x| !x.is_finite()) {
            return Err(format!(
                "top eigenvalue: the operator's product has a non-finite entry at {i} ({})",
                w[i]
            ));
        }
        let a = dot(&w, v);
        alpha.push(a);
        for (x, vi) in w.iter_mut().zip(v) {
            *x -= a * vi;
        }
        if k >= 2 {
            let b = beta[k - 2];
            for (x, ui) in w.iter_mut().zip(&basis[k - 2]) {
                *x -= b * ui;
            }
        }
        // Full reorthogonalization, twice ("twice is enough").
        for _ in 0..2 {
            for u in &basis {
                let c = dot(&w, u);
                for (x, ui) in w.iter_mut().zip(u) {
                    *x -= c * ui;
                }
            }
        }
        let b = norm(&w);
        beta.push(b);

        let ritz =
            tridiag_eigenvalues(&alpha, &beta).map_err(|e| format!("top eigenvalue: {e}"))?;
        let top = ritz[k - 1];
        // Gershgorin bound on ‖T_k‖ (including β_k, which couples to the rest).
        let t_norm = (0..k)
            .map(|i| alpha[i].abs() + if i > 0 { beta[i - 1] } else { 0.0 } + beta[i])
            .fold(0.0f64, f64::max);
        if k == n || b == 0.0 || b <= 64.0 * f64::EPSILON * t_norm {
            return Ok(top);
        }
        let scale = top.abs().max(1e-6 * t_norm);
        let tol = rel_tol * scale;
        if let Some(p) = prev_top
            && (top - p).abs() <= tol
        {
            let y = tridiag_top_vector_last(&alpha, &beta[..k - 1])
                .map_err(|e| format!("top eigenvalue: {e}"))?;
            if (b * y).abs() <= tol {
                return Ok(top);
            }
        }
        prev_top = Some(top);
        basis.push(w.iter().map(|x| x / b).collect());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, array};

    /// A small deterministic generator (SplitMix64) for test matrices.
    struct Gen(u64);
    impl Gen {
        fn next(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        }
        fn matrix(&mut self, m: usize, n: usize) -> Array2<f64> {
            Array2::from_shape_fn((m, n), |_| self.next())
        }
    }

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * a.abs().max(b.abs()).max(1e-300)
    }

    #[test]
    fn svals_of_diagonal_and_permuted() {
        let d = array![[0.0, 2.0, 0.0], [0.0, 0.0, -5.0], [1.0, 0.0, 0.0]];
        let s = svals(d.view()).unwrap();
        assert_eq!(s.len(), 3);
        for (x, y) in s.iter().zip([5.0, 2.0, 1.0]) {
            assert!(close(*x, y, 1e-14), "{s:?}");
        }
        let r = array![[3.0, 0.0], [0.0, 4.0], [0.0, 0.0]];
        let s = svals(r.view()).unwrap();
        assert!(close(s[0], 4.0, 1e-14) && close(s[1], 3.0, 1e-14), "{s:?}");
        // Wide, and a transposed (non-standard layout) view.
        let s2 = svals(r.t()).unwrap();
        assert_eq!(s2.len(), 2);
        assert!(
            close(s2[0], 4.0, 1e-14) && close(s2[1], 3.0, 1e-14),
            "{s2:?}"
        );
    }

    #[test]
    fn svals_of_random_product_match_eigvals_of_gram() {
        let mut g = Gen(7);
        let a = g.matrix(6, 5).dot(&g.matrix(5, 4)).dot(&g.matrix(4, 4));
        let s = svals(a.view()).unwrap();
        assert_eq!(s.len(), 4);
        assert!(s.windows(2).all(|w| w[0] >= w[1]));
        let gram = a.t().dot(&a);
        let e = eigvals(gram.view()).unwrap();
        for (x, l) in s.iter().zip(&e) {
            assert!(close(*x, l.max(0.0).sqrt(), 1e-10), "{s:?} vs {e:?}");
        }
        // Non-standard layout gives the same bits.
        let at = a.t().to_owned();
        let s_t = svals(at.t()).unwrap();
        assert_eq!(s, s_t);
    }

    #[test]
    fn eigvals_of_known_symmetric() {
        // Eigenvalues 1, 3 of [[2,1],[1,2]]; 4, 2, -1 of a 3x3 built from an orthogonal Q.
        let e = eigvals(array![[2.0, 1.0], [1.0, 2.0]].view()).unwrap();
        assert!(close(e[0], 3.0, 1e-14) && close(e[1], 1.0, 1e-14), "{e:?}");
        let q = array![
            [1.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0],
            [2.0 / 3.0, 1.0 / 3.0, -2.0 / 3.0],
            [2.0 / 3.0, -2.0 / 3.0, 1.0 / 3.0]
        ];
        let d = Array2::from_diag(&array![-1.0, 4.0, 2.0]);
        let s = q.dot(&d).dot(&q.t());
        let s = (&s + &s.t()) * 0.5;
        let e = eigvals(s.view()).unwrap();
        for (x, y) in e.iter().zip([4.0, 2.0, -1.0]) {
            assert!((x - y).abs() < 1e-13, "{e:?}");
        }
    }

    #[test]
    fn eigvals_errors() {
        let e = eigvals(array![[1.0, 2.0, 3.0]].view()).unwrap_err();
        assert!(e.contains("square"), "{e}");
        let e = eigvals(array![[1.0, 2.0], [0.0, 1.0]].view()).unwrap_err();
        assert!(e.contains("not symmetric"), "{e}");
        let e = eigvals(array![[1.0, f64::NAN], [f64::NAN, 1.0]].view()).unwrap_err();
        assert!(e.contains("non-finite") && e.contains("[0,1]"), "{e}");
    }

    #[test]
    fn scalar_observables_on_hand_made_matrices() {
        let d = Array2::from_diag(&array![3.0, 1.0, 0.0]);
        assert_eq!(rank(d.view(), 1e-6).unwrap(), 2);
        assert_eq!(rank(d.view(), 0.5).unwrap(), 1);
        assert!(close(nuclear(d.view()).unwrap(), 4.0, 1e-15));
        assert!(close(spectral(d.view()).unwrap(), 3.0, 1e-15));
        assert_eq!(cond(d.view()).unwrap(), f64::INFINITY);
        let want = (-(0.75f64 * 0.75f64.ln() + 0.25 * 0.25f64.ln())).exp();
        assert!(close(erank(d.view()).unwrap(), want, 1e-14));

        let id = Array2::<f64>::eye(4) * 2.5;
        assert!(close(erank(id.view()).unwrap(), 4.0, 1e-14));
        assert!(close(cond(id.view()).unwrap(), 1.0, 1e-14));
        assert_eq!(rank(id.view(), 1e-6).unwrap(), 4);

        let r = array![[0.0, 6.0], [-2.0, 0.0], [0.0, 0.0]];
        assert!(close(cond(r.view()).unwrap(), 3.0, 1e-14));

        let z = Array2::<f64>::zeros((3, 2));
        assert_eq!(rank(z.view(), 1e-6).unwrap(), 0);
        assert_eq!(erank(z.view()).unwrap(), 0.0);
        assert_eq!(nuclear(z.view()).unwrap(), 0.0);
        assert_eq!(spectral(z.view()).unwrap(), 0.0);
        assert_eq!(cond(z.view()).unwrap(), f64::INFINITY);
    }

    #[test]
    fn empty_and_bad_input() {
        let e = Array2::<f64>::zeros((0, 3));
        assert_eq!(svals(e.view()).unwrap(), Vec::<f64>::new());
        assert_eq!(rank(e.view(), 1e-6).unwrap(), 0);
        assert_eq!(erank(e.view()).unwrap(), 0.0);
        assert_eq!(spectral(e.view()).unwrap(), 0.0);
        assert!(cond(e.view()).unwrap().is_nan());
        assert_eq!(
            eigvals(Array2::<f64>::zeros((0, 0)).view()).unwrap(),
            Vec::<f64>::new()
        );

        let bad = array![[1.0, 2.0], [f64::INFINITY, 0.0]];
        for r in [
            svals(bad.view()).map(|_| ()),
            rank(bad.view(), 1e-6).map(|_| ()),
            erank(bad.view()).map(|_| ()),
            nuclear(bad.view()).map(|_| ()),
            spectral(bad.view()).map(|_| ()),
            cond(bad.view()).map(|_| ()),
        ] {
            let e = r.unwrap_err();
            assert!(e.contains("non-finite") && e.contains("[1,0]"), "{e}");
        }
        assert!(
            rank(array![[1.0]].view(), -1.0)
                .unwrap_err()
                .contains("tolerance")
        );
        assert!(
            rank(array![[1.0]].view(), f64::NAN)
                .unwrap_err()
                .contains("tolerance")
        );
    }

    /// Top eigenvalue of the dense symmetric `h` by Lanczos, counting products.
    fn lanczos_top(h: &Array2<f64>, start: &[f64]) -> (f64, usize) {
        let n = h.nrows();
        let mut count = 0;
        let mut op = |x: &[f64], out: &mut [f64]| {
            count += 1;
            for i in 0..n {
                out[i] = (0..n).map(|j| h[[i, j]] * x[j]).sum();
            }
            Ok(())
        };
        let top = top_eigenvalue(n, start, &mut op, 1e-8).unwrap();
        (top, count)
    }

    fn sym_with_spectrum(g: &mut Gen, eig: &[f64]) -> Array2<f64> {
        let n = eig.len();
        // Orthogonal Q from the symmetric eigendecomposition of a random symmetric matrix.
        let a = g.matrix(n, n);
        let s = &a + &a.t();
        let data: Vec<f64> = s.iter().copied().collect();
        let mut u = Mat::<f64>::zeros(n, n);
        dense_sym_eigen(MatRef::from_row_major_slice(&data, n, n), Some(&mut u)).unwrap();
        let q = Array2::from_shape_fn((n, n), |(i, j)| u[(i, j)]);
        let h = q
            .dot(&Array2::from_diag(&ndarray::Array1::from(eig.to_vec())))
            .dot(&q.t());
        (&h + &h.t()) * 0.5
    }

    #[test]
    fn top_eigenvalue_matches_dense() {
        let mut g = Gen(42);
        // Random symmetric matrices of several sizes.
        for n in [1usize, 2, 3, 10, 40, 120] {
            let a = g.matrix(n, n);
            let h = &a + &a.t();
            let start: Vec<f64> = (0..n).map(|_| g.next()).collect();
            let want = eigvals(h.view()).unwrap()[0];
            let (got, count) = lanczos_top(&h, &start);
            assert!(close(got, want, 1e-8), "n={n}: {got} vs {want}");
            assert!(count <= n);
        }
    }

    #[test]
    fn top_eigenvalue_is_algebraic_max() {
        let mut g = Gen(3);
        // The eigenvalue of largest magnitude is negative: the algebraic max is 2.
        let mut spectrum = vec![-50.0, 2.0, 1.5, 1.0, 0.5, -3.0, -7.0, 0.0];
        spectrum.extend((0..22).map(|i| -1.0 - i as f64 * 0.3));
        let h = sym_with_spectrum(&mut g, &spectrum);
        let start: Vec<f64> = (0..h.nrows()).map(|_| g.next()).collect();
        let want = eigvals(h.view()).unwrap()[0];
        assert!(close(want, 2.0, 1e-12));
        let (got, _) = lanczos_top(&h, &start);
        assert!(close(got, want, 1e-8), "{got} vs {want}");

        // All negative.
        let h = sym_with_spectrum(&mut g, &[-1.0, -2.0, -4.0, -10.0, -0.25]);
        let want = eigvals(h.view()).unwrap()[0];
        let (got, _) = lanczos_top(&h, &[1.0, 1.0, 1.0, 1.0, 1.0]);
        assert!(close(got, want, 1e-8), "{got} vs {want}");
    }

    #[test]
    fn top_eigenvalue_repeated_and_semidefinite() {
        let mut g = Gen(11);
        let mut spectrum = vec![5.0, 5.0, 5.0, 1.0, -1.0];
        spectrum.extend((0..35).map(|i| (i as f64) * 0.1 - 2.0));
        let h = sym_with_spectrum(&mut g, &spectrum);
        let start: Vec<f64> = (0..h.nrows()).map(|_| g.next()).collect();
        let want = eigvals(h.view()).unwrap()[0];
        let (got, count) = lanczos_top(&h, &start);
        assert!(close(got, want, 1e-8), "{got} vs {want}");
        assert!(count < h.nrows(), "{count}");

        // Top eigenvalue exactly 0 (negative semidefinite, rank-deficient).
        let mut spectrum = vec![0.0, 0.0, 0.0];
        spectrum.extend((1..28).map(|i| -(i as f64)));
        let h = sym_with_spectrum(&mut g, &spectrum);
        let start: Vec<f64> = (0..h.nrows()).map(|_| g.next()).collect();
        let (got, _) = lanczos_top(&h, &start);
        assert!(got.abs() < 1e-10, "{got}");

        // Gram matrix of a low-rank product (PSD with many zeros), as Hessians of
        // linear networks tend to be.
        let p = g.matrix(30, 4).dot(&g.matrix(4, 30));
        let h = p.t().dot(&p);
        let h = (&h + &h.t()) * 0.5;
        let start: Vec<f64> = (0..30).map(|_| g.next()).collect();
        let want = eigvals(h.view()).unwrap()[0];
        let (got, _) = lanczos_top(&h, &start);
        assert!(close(got, want, 1e-8), "{got} vs {want}");
    }

    #[test]
    fn top_eigenvalue_breakdown_and_determinism() {
        // Start vector is an eigenvector: breakdown after one step.
        let h = Array2::from_diag(&array![1.0, 7.0, 3.0]);
        let (got, count) = lanczos_top(&h, &[0.0, 2.0, 0.0]);
        assert_eq!((got, count), (7.0, 1));
        // Zero operator.
        let z = Array2::<f64>::zeros((4, 4));
        assert_eq!(lanczos_top(&z, &[1.0, 2.0, 3.0, 4.0]).0, 0.0);
        // Same start, same bits.
        let mut g = Gen(5);
        let a = g.matrix(25, 25);
        let h = &a + &a.t();
        let start: Vec<f64> = (0..25).map(|_| g.next()).collect();
        assert_eq!(
            lanczos_top(&h, &start).0.to_bits(),
            lanczos_top(&h, &start).0.to_bits()
        );
    }

    #[test]
    fn top_eigenvalue_errors() {
        let mut ok = |_: &[f64], _: &mut [f64]| Ok(());
        assert!(
            top_eigenvalue(0, &[], &mut ok, 1e-8)
                .unwrap_err()
                .contains("empty")
        );
        assert!(
            top_eigenvalue(2, &[1.0], &mut ok, 1e-8)
                .unwrap_err()
                .contains("length")
        );
        assert!(
            top_eigenvalue(2, &[0.0, 0.0], &mut ok, 1e-8)
                .unwrap_err()
                .contains("zero")
        );
        assert!(
            top_eigenvalue(2, &[f64::NAN, 0.0], &mut ok, 1e-8)
                .unwrap_err()
                .contains("non-finite")
        );
        assert!(
            top_eigenvalue(2, &[1.0, 0.0], &mut ok, -1.0)
                .unwrap_err()
                .contains("tolerance")
        );
        let mut nan = |_: &[f64], out: &mut [f64]| {
            out[1] = f64::NAN;
            Ok(())
        };
        let e = top_eigenvalue(2, &[1.0, 0.0], &mut nan, 1e-8).unwrap_err();
        assert!(e.contains("non-finite") && e.contains("at 1"), "{e}");
        let mut fail = |_: &[f64], _: &mut [f64]| Err("hvp failed".to_string());
        assert_eq!(
            top_eigenvalue(2, &[1.0, 0.0], &mut fail, 1e-8).unwrap_err(),
            "hvp failed"
        );
    }
}
