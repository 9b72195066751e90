//! The kernels both backends and the constant folders share: scalar math (`math`: libm,
//! the one float sum, the GEMM; `small_gemm`: its small products, faer's bits; `gemv`: its
//! matrix-vector products, faer's bits) and the
//! same functions over whole slices (`vmath`).

pub mod gemv;
pub mod math;
pub mod small_gemm;
pub mod vmath;
