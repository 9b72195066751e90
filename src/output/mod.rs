//! The run folder (stub; being written).
