//! Binding call arguments to parameter names: the one rule the checker checks and lowering follows.

use crate::syntax::ast::{Arg, Ident};

/// What is wrong with a call's arguments, in the order met.
pub enum Problem<'a> {
    /// A positional argument beyond the names; binding stops there.
    TooMany(&'a Arg),
    /// A keyword that is no name.
    Unknown(&'a Ident),
    /// A keyword naming a slot already filled.
    Twice(&'a Ident),
}

/// For each of `names`, the index in `args` of the argument that fills it: positional
/// arguments in order, keywords by name.
pub fn bind<'a>(names: &[&str], args: &[&'a Arg]) -> (Vec<Option<usize>>, Vec<Problem<'a>>) {
    let mut slots: Vec<Option<usize>> = vec![None; names.len()];
    let mut problems = Vec::new();
    let mut positional = 0;
    for (k, a) in args.iter().enumerate() {
        match &a.name {
            None => {
                if positional >= names.len() {
                    problems.push(Problem::TooMany(a));
                    break;
                }
                slots[positional] = Some(k);
                positional += 1;
            }
            Some(key) => match names.iter().position(|n| *n == key.name) {
                None => problems.push(Problem::Unknown(key)),
                Some(i) if slots[i].is_some() => problems.push(Problem::Twice(key)),
                Some(i) => slots[i] = Some(k),
            },
        }
    }
    (slots, problems)
}
