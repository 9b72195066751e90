//! `traj`: a compiler and interpreter for experiments on the trajectory of gradient descent.
//!
//! # Steps
//! `pipeline` runs them, one function a stage; nothing else assembles them.
//! 1. `syntax`: source text → AST (pest grammar `grammar/traj.pest`), every node with a span.
//! 2. `sema`: modules, names, consts, kinds, types and static shapes (`ir::types`) → a
//!    checked program, or every error of the file as `diag::Diagnostic`s.
//! 3. `train::statics`: consts from data, data, loaded files, initial params.
//! 4. `lower`: the checked loss, lets, records and updates → `ir` functions.
//! 5. `autodiff`: the gradient (Clarke subgradients at kinks) and the tie count.
//! 6. `opt`: the simplification passes on the gradient.
//! 7. `plan`: the plan (fast and tie gradients, updates, records, stop, HVP).
//! 8. the backend: `interp` (the reference) or `jit` (Cranelift, the whole step loop),
//!    compiled once as a `train::Engine`, both on the shared `kernels`; `train::advance`
//!    runs the loop, rows to an `output::Rows` sink (the run folder). An error after
//!    checking is an `error::RunError` with its step and spans.
//!
//! Callers: `session` (a compiled program and its run state, stepped by `train::advance`):
//! `traj run` and each `sweep` point (`session::run_to_folder`) and the `repl` step one;
//! `traj ir` calls `pipeline::print`; `plot` draws what was recorded.
//!
//! Imports point down the layers of `tests/layers.rs` (`ARCHITECTURE.md`, Layers).
//! `ARCHITECTURE.md` has the map and the invariants.

pub mod autodiff;
pub mod cores;
pub mod data;
pub mod diag;
pub mod error;
pub mod interp;
pub mod ir;
pub mod jit;
pub mod kernels;
pub mod lower;
pub mod observe;
pub mod opt;
pub mod output;
pub mod pipeline;
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
