//! Semantic checking: modules and names (`modules`), builtin signatures (`builtins`), and
//! the static checker (`check`) that evaluates consts and infers every type and shape.
//! Produces a `Checked` program or every error of the file.

pub mod bind;
pub mod builtins;
pub mod check;
pub mod modules;

pub use check::{Checked, Options, check_program};
