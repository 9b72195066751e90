//! Binding call arguments to parameter names: the one rule the checker checks and lowering
//! follows, for functions and optimizers (`bind`) and builtins (`bind_builtin`).

use crate::sema::builtins::Signature;
use crate::syntax::ast::{Arg, Expr, Ident};

/// What is wrong with a call's arguments, in the order met.
pub enum Problem<'a> {
    /// A positional argument beyond the names; binding stops there.
    TooMany(&'a Arg),
    /// A keyword that is no name.
    Unknown(&'a Ident),
    /// A keyword naming a slot already filled.
    Twice(&'a Ident),
    /// A builtin given `given` positional arguments where it takes `takes` (its other
    /// arguments are keyword-only); `extra` is the first beyond. Reported alone.
    Positional {
        extra: &'a Arg,
        given: usize,
        takes: usize,
    },
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

/// A builtin call's arguments by parameter name, and the extra positional arguments of a
/// variadic builtin (its dims).
pub struct Bound<'a> {
    pub slots: Vec<(&'static str, Option<&'a Expr>)>,
    pub rest: Vec<&'a Expr>,
}

impl<'a> Bound<'a> {
    /// The argument given for parameter `name`.
    pub fn get(&self, name: &str) -> Option<&'a Expr> {
        self.slots
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, e)| *e)
    }
}

/// Binds a builtin call's arguments to `sig`: positional ones fill the required then the
/// optional names (a variadic builtin's further positional ones are `rest`), keywords any
/// name, keyword-only names included. Missing required arguments are the caller's to report.
pub fn bind_builtin<'a>(sig: &Signature, args: &'a [Arg]) -> (Bound<'a>, Vec<Problem<'a>>) {
    let takes = sig.required.len() + sig.optional.len();
    let names: Vec<&'static str> = sig
        .required
        .iter()
        .chain(sig.optional)
        .chain(sig.kw_only)
        .copied()
        .collect();
    let mut head: Vec<&'a Arg> = Vec::new();
    let mut rest = Vec::new();
    let mut positional = 0;
    for a in args {
        if a.name.is_none() {
            positional += 1;
            if sig.variadic && positional > takes {
                rest.push(&a.value);
                continue;
            }
        }
        head.push(a);
    }
    let mut unnamed = head.iter().filter(|a| a.name.is_none());
    if let Some(extra) = unnamed.nth(takes) {
        let slots = names.iter().map(|n| (*n, None)).collect();
        let problem = Problem::Positional {
            extra,
            given: positional,
            takes,
        };
        return (Bound { slots, rest }, vec![problem]);
    }
    let (at, problems) = bind(&names, &head);
    let slots = names
        .into_iter()
        .zip(at)
        .map(|(n, k)| (n, k.map(|k| &head[k].value)))
        .collect();
    (Bound { slots, rest }, problems)
}
