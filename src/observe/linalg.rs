//! Singular values and eigenvalues (stub; being written).
