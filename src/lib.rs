//! `traj`: a compiler and interpreter for experiments on the trajectory of gradient descent.
//!
//! # Steps
//! 1. `syntax`: source text → AST (pest grammar `grammar/traj.pest`), every node with a span.
//! 2. `sema`: modules, names, consts, kinds, types and static shapes (`ir::types`) → a
//!    checked program, or every error of the file as `diag::Diagnostic`s.
//! 3. `train::statics`: consts from data, data, loaded files, initial params.
//! 4. `lower`: the checked loss, lets, records and updates → `ir` functions.
//! 5. `autodiff`: gradients (Clarke subgradients at kinks); `opt`: simplification.
//! 6. `plan`: the plan (fast and tie gradients, updates, records, stop, HVP).
//! 7. A backend runs the plan: `interp` (the reference) or `jit` (Cranelift, the whole step
//!    loop, compiled once as a `train::Engine`), both on the shared `kernels`.
//! 8. `train::advance`: the loop, rows to an `output::Rows` sink (the run folder); `session`
//!    keeps a program and its run between inputs for `repl`; `sweep` runs many; `plot`
//!    draws what was recorded.
//!
//! Imports point down the layers of `tests/layers.rs` (`ARCHITECTURE.md`, Layers).
//! `ARCHITECTURE.md` has the map and the invariants.

pub mod autodiff;
pub mod cores;
pub mod data;
pub mod diag;
pub mod interp;
pub mod ir;
pub mod jit;
pub mod kernels;
pub mod lower;
pub mod observe;
pub mod opt;
pub mod output;
pub mod plan;
pub mod plot;
mod plot_text;
pub mod repl;
pub mod rng;
pub mod sema;
pub mod session;
pub mod slurm;
pub mod sweep;
pub mod sweep_summary;
pub mod syntax;
pub mod tensor;
pub mod train;
