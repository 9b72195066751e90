//! The run driver (being written).
pub mod statics;
