//! The kernels both backends and the constant folders share: scalar math (`math`: libm,
//! the one float sum, the GEMM; `small_gemm`: its small products, faer's bits; `gemv`: its
//! matrix-vector products, faer's bits) and the
//! same functions over whole slices (`vmath`).

pub mod gemv;
pub mod math;
pub mod small_gemm;
pub mod vmath;

/// The instruction sets `small_gemm` and `gemv` are compiled for. Each kernel gives the same
/// bits at every one; `best` is the widest this CPU has.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Isa {
    /// Arrays and `f64::mul_add` (libm's `fma` where the target has none): the order
    /// written out.
    Portable,
    /// AVX2 with FMA: YMM registers of four lanes.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX-512F: ZMM registers of eight lanes.
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Isa {
    pub fn best() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    }
}
