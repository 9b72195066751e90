//! Observables computed on the host: the linear algebra of section 6.6 (`linalg`: svals,
//! eigvals, rank, cond, ..., and the Lanczos `top_eigenvalue` behind `sharpness`).
pub mod linalg;
