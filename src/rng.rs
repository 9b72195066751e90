//! Counter-based random numbers (stub; being written).
