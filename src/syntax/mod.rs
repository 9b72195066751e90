//! Source text to AST: the pest grammar (`grammar/traj.pest`) and the builder that turns
//! pest pairs into `ast` nodes. pest types never leave this module.

pub mod ast;
mod parse;
mod printer;

pub use parse::{ITEM_WORDS, parse_module};
pub use printer::print_module;
