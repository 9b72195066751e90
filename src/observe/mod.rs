//! Observables computed on the host (stub; being written).
pub mod linalg;
