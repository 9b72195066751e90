//! pest pairs → AST. Owns the Pratt table of LANGUAGE.md section 5, syntax-error recovery
//! (one report per broken item) and the wording of "expected ..." messages.

use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::LazyLock;

use pest::Parser as _;
use pest::error::{ErrorVariant, InputLocation};
use pest::iterators::Pair;
use pest::pratt_parser::{Assoc, Op, PrattParser};

use super::ast::*;
use crate::diag::{Diagnostic, Span};

#[derive(pest_derive::Parser)]
#[grammar = "grammar/traj.pest"]
struct TrajParser;

static PRATT: LazyLock<PrattParser<Rule>> = LazyLock::new(|| {
    // lowest precedence first
    PrattParser::new()
        .op(Op::infix(Rule::or, Assoc::Left))
        .op(Op::infix(Rule::and, Assoc::Left))
        .op(Op::prefix(Rule::not))
        .op(Op::infix(Rule::lt, Assoc::Left)
            | Op::infix(Rule::le, Assoc::Left)
            | Op::infix(Rule::gt, Assoc::Left)
            | Op::infix(Rule::ge, Assoc::Left)
            | Op::infix(Rule::eq, Assoc::Left)
            | Op::infix(Rule::ne, Assoc::Left))
        .op(Op::infix(Rule::add, Assoc::Left) | Op::infix(Rule::sub, Assoc::Left))
        .op(Op::infix(Rule::mul, Assoc::Left)
            | Op::infix(Rule::div, Assoc::Left)
            | Op::infix(Rule::floordiv, Assoc::Left)
            | Op::infix(Rule::rem, Assoc::Left)
            | Op::infix(Rule::matmul, Assoc::Left))
        .op(Op::prefix(Rule::neg))
        .op(Op::infix(Rule::pow, Assoc::Right))
        .op(Op::postfix(Rule::index) | Op::postfix(Rule::transpose))
});

/// Item keywords that start a top-level line; used to resume after a syntax error (and by
/// the REPL to tell items from expressions).
pub const ITEM_WORDS: &[&str] = &[
    "const",
    "data",
    "param",
    "sample",
    "let",
    "fn",
    "loss",
    "batch",
    "optimizer",
    "train",
    "sweep",
    "use",
    "precision",
];

/// Parses one file. Returns the items that parsed and one diagnostic per broken item:
/// after a syntax error the broken item is blanked out and parsing resumes at the next
/// top-level item, so a file with several mistakes reports each.
pub fn parse_module(file: u32, text: &str) -> (Module, Vec<Diagnostic>) {
    if let Some(d) = too_deep(file, text) {
        return (
            Module {
                file,
                items: Vec::new(),
                broken: Vec::new(),
            },
            vec![d],
        );
    }
    let mut diags = Vec::new();
    let mut broken = Vec::new();
    let mut work = text.to_string();
    for _ in 0..64 {
        match TrajParser::parse(Rule::program, &work) {
            Ok(mut pairs) => {
                let builder = Builder {
                    file,
                    errors: RefCell::new(Vec::new()),
                    bare_comparisons: RefCell::new(HashSet::new()),
                };
                let program = pairs.next().expect("program rule");
                let items = builder.program(program);
                diags.extend(builder.errors.into_inner());
                return (
                    Module {
                        file,
                        items,
                        broken,
                    },
                    diags,
                );
            }
            Err(err) => {
                let pos = match err.location {
                    InputLocation::Pos(p) => p,
                    InputLocation::Span((s, _)) => s,
                };
                diags.push(syntax_error(file, &work, pos, &err.variant));
                let (from, to) = broken_item(&work, pos);
                if from >= to {
                    break; // nothing left to blank: the error is at the end of the file
                }
                broken.extend(defined_names(&work[from..to]));
                // Blank the broken item, keeping newlines so byte offsets stay put.
                let blanked: String = work[from..to]
                    .bytes()
                    .map(|b| if b == b'\n' { '\n' } else { ' ' })
                    .collect();
                work.replace_range(from..to, &blanked);
            }
        }
    }
    // Nothing parsed: every item counts as broken.
    broken.extend(defined_names(text));
    (
        Module {
            file,
            items: Vec::new(),
            broken,
        },
        diags,
    )
}

/// The names the items in `text` define, read from the words alone (the text does not
/// parse): `n` of `const n = )`, `X` of `data X = `, both of `batch xb, yb from ...`, and
/// `loss`.
fn defined_names(text: &str) -> Vec<String> {
    let is_name_char = |c: char| c.is_alphanumeric() || c == '_';
    let mut names = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line
            .split(|c: char| !is_name_char(c))
            .filter(|w| !w.is_empty())
            .collect();
        match words.as_slice() {
            [first, ..] if !line.starts_with(first) => {}
            ["loss", ..] => names.push("loss".to_string()),
            ["use", ..] => names.push(ANY_NAME.to_string()),
            [
                "data" | "param" | "sample" | "let" | "fn" | "optimizer",
                name,
                ..,
            ] => names.push(name.to_string()),
            ["batch", rest @ ..] => names.extend(
                rest.iter()
                    .take_while(|w| **w != "from")
                    .map(|w| w.to_string()),
            ),
            // `const a = 1, b = f(x = 2)`: each name followed by `=` outside brackets.
            ["const", ..] => {
                let mut depth = 0i32;
                let mut word = String::new();
                let mut last_word = String::new();
                let mut chars = line["const".len()..].chars().peekable();
                while let Some(c) = chars.next() {
                    if is_name_char(c) {
                        word.push(c);
                        continue;
                    }
                    if !word.is_empty() {
                        last_word = std::mem::take(&mut word);
                    }
                    match c {
                        '(' | '[' => depth += 1,
                        ')' | ']' => depth -= 1,
                        '=' if chars.peek() == Some(&'=') => {
                            chars.next();
                        }
                        '=' if depth == 0 && !last_word.is_empty() => {
                            names.push(std::mem::take(&mut last_word))
                        }
                        c if !c.is_whitespace() => last_word.clear(),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    names
}

/// Brackets nested deeper than any real program needs; refusing them keeps the recursive
/// parser and checker far from the end of the stack.
const MAX_NESTING: usize = 64;
/// Operators in one file: operator characters, the word operators (`not`, `and`, `or`,
/// `if`) and indexing `[` after a value. This bounds the depth of an expression tree (a
/// chain of prefix `-` or `not`, of `^`, of `x[0][0]` nests one level per operator). With
/// the 256 MiB stack that `traj` runs its compiler on, this is far from an overflow.
const MAX_OPERATORS: usize = 10_000;

/// Words that nest an expression one level each, like operator characters.
const OPERATOR_WORDS: [&str; 4] = ["not", "and", "or", "if"];

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Whether an operator word starts at byte `i` of `text`.
fn operator_word_at(text: &str, i: usize) -> bool {
    let before = text[..i].chars().next_back();
    if before.is_some_and(is_word_char) {
        return false;
    }
    OPERATOR_WORDS.iter().any(|w| {
        text[i..]
            .strip_prefix(w)
            .is_some_and(|rest| !rest.chars().next().is_some_and(is_word_char))
    })
}

fn too_deep(file: u32, text: &str) -> Option<Diagnostic> {
    let mut depth = 0usize;
    let mut operators = 0usize;
    let mut in_string = false;
    let mut in_comment = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if in_comment {
            in_comment = c != '\n';
        } else if in_string {
            in_string = escaped || c != '"';
            escaped = !escaped && c == '\\';
        } else {
            match c {
                '#' => in_comment = true,
                '"' => in_string = true,
                '[' if text[..i]
                    .chars()
                    .next_back()
                    .is_some_and(|b| is_word_char(b) || matches!(b, ')' | ']' | '\'')) =>
                {
                    // Indexing: one level of the tree, as well as a bracket.
                    operators += 1;
                    depth += 1;
                }
                '(' | '[' | '{' => depth += 1,
                ')' | ']' | '}' => depth = depth.saturating_sub(1),
                '+' | '-' | '*' | '/' | '^' | '@' | '%' | '<' | '>' | '=' | '!' | '\'' => {
                    operators += 1
                }
                'a' | 'n' | 'o' | 'i' if operator_word_at(text, i) => operators += 1,
                _ => {}
            }
            if operators > MAX_OPERATORS {
                return Some(
                    Diagnostic::new(
                        "E0005",
                        "the program is too large",
                        Span::new(file, i..i + 1),
                    )
                    .label(format!("more than {MAX_OPERATORS} operators in one file"))
                    .hint("split it into modules with `use \"file.traj\"`"),
                );
            }
            if depth > MAX_NESTING {
                return Some(
                    Diagnostic::new(
                        "E0005",
                        "brackets nested too deeply",
                        Span::new(file, i..i + 1),
                    )
                    .label(format!("more than {MAX_NESTING} levels deep"))
                    .hint("name intermediate values with `let`"),
                );
            }
        }
    }
    None
}

/// The byte range to blank after a syntax error at `pos`. Items start in column 0 with an
/// item word. An error at the very start of an item means the item before it is unfinished
/// (`const m =` followed by `data X = ...`); an error at the start of any other line blames
/// that line; an error inside a line blames the item around it.
fn broken_item(text: &str, pos: usize) -> (usize, usize) {
    let starts_item = |line: &str| {
        ITEM_WORDS.iter().any(|w| {
            line.strip_prefix(w).is_some_and(|rest| {
                rest.chars()
                    .next()
                    .is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
            })
        })
    };
    let pos = pos.min(text.len());
    let mut item_starts = vec![];
    let mut line_start = 0;
    for (i, line) in text.split_inclusive('\n').scan(0, |at, l| {
        let s = *at;
        *at += l.len();
        Some((s, l))
    }) {
        if starts_item(line) {
            item_starts.push(i);
        }
        if i <= pos {
            line_start = i;
        }
    }
    let next_after = |p: usize| {
        item_starts
            .iter()
            .copied()
            .find(|&s| s > p)
            .unwrap_or(text.len())
    };
    let last_before = |p: usize, inclusive: bool| {
        item_starts
            .iter()
            .copied()
            .rfind(|&s| s < p || (inclusive && s == p))
            .unwrap_or(0)
    };
    if pos == line_start && item_starts.contains(&pos) {
        (last_before(pos, false), pos)
    } else if pos == line_start {
        (line_start, next_after(pos))
    } else {
        (last_before(pos, true), next_after(pos))
    }
}

fn syntax_error(file: u32, text: &str, pos: usize, variant: &ErrorVariant<Rule>) -> Diagnostic {
    let found = found_at(text, pos);
    let end = (pos + found.len().max(1)).min(text.len().max(pos));
    let span = Span::new(file, pos..end.max(pos));
    let expected = match variant {
        ErrorVariant::ParsingError { positives, .. } => expected_words(positives),
        ErrorVariant::CustomError { message } => message.clone(),
    };
    let shown = if found.is_empty() {
        if pos >= text.len() {
            "end of file".to_string()
        } else {
            "end of line".to_string()
        }
    } else {
        format!("`{found}`")
    };
    // A bracket opened before the error and never closed is what a person must fix.
    let unclosed = unclosed_brackets(text).into_iter().rfind(|&at| at < pos);
    let at_end = text[pos.min(text.len())..]
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
    let Some(open) = unclosed else {
        return plain_hints(
            Diagnostic::new("E0001", format!("syntax error: unexpected {shown}"), span)
                .label(format!("expected {expected}")),
            text,
            pos,
            &found,
        );
    };
    let bracket = &text[open..open + 1];
    let close = closing(bracket);
    let d = if at_end {
        Diagnostic::new("E0001", format!("syntax error: unclosed `{bracket}`"), span)
            .label(format!("the file ends before `{close}`"))
            .hint(format!("close it with `{close}`"))
    } else {
        Diagnostic::new("E0001", format!("syntax error: unexpected {shown}"), span)
            .label(format!("expected `{close}` or {expected}"))
    };
    plain_hints(
        d.related(
            Span::new(file, open..open + 1),
            format!("this `{bracket}` is never closed"),
        ),
        text,
        pos,
        &found,
    )
}

/// Hints for common slips at a syntax error: `1.`, `if` as an operand, `=` for `==`.
fn plain_hints(mut d: Diagnostic, text: &str, pos: usize, found: &str) -> Diagnostic {
    if found.starts_with('.') && text[..pos].ends_with(|c: char| c.is_ascii_digit()) {
        d = d.hint("floats need digits on both sides of the point: write `1.0`, not `1.`");
    } else if found == "if" {
        d = d.hint(
            "`if c then a else b` is an operand only in parentheses: `1 + (if c then a else b)`",
        );
    } else if found == "=" && text[..pos].trim_end().ends_with('=') {
        d = d.hint("comparison is `==`");
    }
    d
}

fn closing(open: &str) -> &'static str {
    match open {
        "(" => ")",
        "[" => "]",
        _ => "}",
    }
}

/// Byte offsets of the `(`, `[` and `{` that no bracket closes, in order, skipping strings
/// and comments. A closing bracket of another kind closes the nearest open one of its kind
/// (what it skips stays unclosed); one with no open bracket of its kind is ignored.
fn unclosed_brackets(text: &str) -> Vec<usize> {
    let mut open: Vec<(usize, char)> = Vec::new();
    let mut unclosed = Vec::new();
    let mut in_string = false;
    let mut in_comment = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if in_comment {
            in_comment = c != '\n';
        } else if in_string {
            // A string ends at its closing quote or, unterminated, at the end of its line.
            in_string = c != '\n' && (escaped || c != '"');
            escaped = !escaped && c == '\\';
        } else {
            match c {
                '#' => in_comment = true,
                '"' => in_string = true,
                '(' | '[' | '{' => open.push((i, c)),
                ')' | ']' | '}' => {
                    let kind = match c {
                        ')' => '(',
                        ']' => '[',
                        _ => '{',
                    };
                    if let Some(k) = open.iter().rposition(|&(_, o)| o == kind) {
                        unclosed.extend(open.drain(k..).skip(1).map(|(at, _)| at));
                    }
                }
                _ => {}
            }
        }
    }
    unclosed.extend(open.into_iter().map(|(at, _)| at));
    unclosed.sort_unstable();
    unclosed
}

/// The token at `pos`, roughly: a word, a number, or one symbol.
fn found_at(text: &str, pos: usize) -> String {
    let rest = &text[pos.min(text.len())..];
    let mut chars = rest.chars();
    match chars.next() {
        None | Some('\n') | Some('\r') => String::new(),
        Some(c) if c.is_alphanumeric() || c == '_' => rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '.')
            .collect(),
        Some(c) => {
            let two: String = rest.chars().take(2).collect();
            if ["==", "!=", "<=", ">=", "//", "-=", "+=", ".."].contains(&two.as_str()) {
                two
            } else {
                c.to_string()
            }
        }
    }
}

/// "expected ..." in words, never rule names.
fn expected_words(rules: &[Rule]) -> String {
    let mut words: Vec<&str> = Vec::new();
    for r in rules {
        let w = describe(*r);
        if !words.contains(&w) {
            words.push(w);
        }
    }
    if words.len() > 1 {
        words.retain(|w| *w != "something else");
    }
    match words.len() {
        0 => "something else".into(),
        1 => words[0].into(),
        _ => {
            let last = words.pop().unwrap_or_default();
            format!("{} or {last}", words.join(", "))
        }
    }
}

fn describe(rule: Rule) -> &'static str {
    use Rule::*;
    match rule {
        expr | op_expr | if_expr | float | int | string | call | comprehension | list | paren
        | neg | not | index_item | primary | record_entry => "an expression",
        ident | name_list | module_path => "a name",
        pow | mul | floordiv | div | rem | matmul | add | sub | le | ge | eq | ne | lt | gt
        | and | or | infix => "an operator",
        index | transpose | postfix => "an operator",
        colon => "`:`",
        assign => "`=`",
        call_args | arg => "an argument",
        fn_params | fn_param => "a parameter name",
        EOI => "an item (`const`, `data`, `param`, `let`, `fn`, `loss`, `train`, ...)",
        shape => "a shape such as `[n, d]`",
        param_value | param_dist => "`=` or `~` and an initial value",
        block | fn_expr => "`=` or a `{` block",
        update_op => "`=`, `-=` or `+=`",
        range => "a range `a..b`",
        record_kind => "`every` or `log`",
        kw_from => "`from`",
        kw_size => "`size`",
        kw_when => "`when`",
        kw_then => "`then`",
        kw_else => "`else`",
        kw_in => "`in`",
        kw_for => "`for`",
        item | program | use_item | const_item | data_item | param_item | sample_item
        | let_item | fn_item | batch_item | optimizer_item | train_item | sweep_item
        | precision_item | loss_item => {
            "an item (`const`, `data`, `param`, `let`, `fn`, `loss`, `train`, ...)"
        }
        clause | train_opt | steps_clause | time_clause | stop_clause | record_clause => {
            "a train clause (`optimizer`, `steps`, `time`, `stop when`, `record`)"
        }
        opt_stmt | state_stmt | opt_let | param_update | state_assign => {
            "an optimizer statement (`state`, `let`, `param -= ...`, `NAME = ...`)"
        }
        sweep_entry => "a sweep entry `name in [...]`",
        _ => "something else",
    }
}

struct Builder {
    file: u32,
    errors: RefCell<Vec<Diagnostic>>,
    /// Spans of comparisons built without parentheses, to reject `a < b < c`.
    bare_comparisons: RefCell<HashSet<Span>>,
}

impl Builder {
    fn span(&self, pair: &Pair<Rule>) -> Span {
        let s = pair.as_span();
        Span::new(self.file, s.start()..s.end())
    }

    fn ident(&self, pair: Pair<Rule>) -> Ident {
        Ident {
            name: pair.as_str().to_string(),
            span: self.span(&pair),
        }
    }

    fn program(&self, pair: Pair<Rule>) -> Vec<Item> {
        let mut items = Vec::new();
        for p in pair.into_inner() {
            match p.as_rule() {
                Rule::EOI => {}
                // `const a = 1, b = 2` becomes one item per definition.
                Rule::const_item => {
                    items.extend(p.into_inner().skip(1).map(|d| Item::Const(self.def(d))))
                }
                _ => items.push(self.item(p)),
            }
        }
        items
    }

    fn item(&self, pair: Pair<Rule>) -> Item {
        let span = self.span(&pair);
        let rule = pair.as_rule();
        let mut inner = pair.into_inner();
        match rule {
            Rule::use_item => {
                inner.next(); // kw
                let t = inner.next().expect("use target");
                let target = match t.as_rule() {
                    Rule::string => UseTarget::File(self.string(&t)),
                    _ => UseTarget::Std(t.into_inner().map(|p| self.ident(p)).collect()),
                };
                Item::Use(UseItem { target, span })
            }
            Rule::data_item | Rule::sample_item | Rule::let_item => {
                inner.next();
                let def = self.def_parts(inner, span);
                match rule {
                    Rule::data_item => Item::Data(def),
                    Rule::sample_item => Item::Sample(def),
                    _ => Item::Let(def),
                }
            }
            Rule::loss_item => {
                inner.next();
                inner.next(); // `=`
                let value = self.expr(inner.next().expect("loss value"));
                Item::Loss(LossItem { value, span })
            }
            Rule::param_item => {
                inner.next();
                let name = self.ident(inner.next().expect("param name"));
                let shape_pair = inner.next().expect("param shape");
                let shape_span = self.span(&shape_pair);
                let shape = shape_pair.into_inner().map(|e| self.expr(e)).collect();
                let init_pair = inner.next().expect("param init");
                let is_dist = init_pair.as_rule() == Rule::param_dist;
                let value = init_pair
                    .into_inner()
                    .find(|p| p.as_rule() == Rule::expr)
                    .map(|e| self.expr(e))
                    .expect("param init expr");
                let init = if is_dist {
                    ParamInit::Dist(value)
                } else {
                    ParamInit::Value(value)
                };
                Item::Param(ParamItem {
                    name,
                    shape,
                    shape_span,
                    init,
                    span,
                })
            }
            Rule::fn_item => {
                inner.next();
                let name = self.ident(inner.next().expect("fn name"));
                let mut params = Vec::new();
                let mut lets = Vec::new();
                let mut body = None;
                for p in inner {
                    match p.as_rule() {
                        Rule::fn_params => params = self.fn_params(p),
                        Rule::fn_expr => {
                            body = p
                                .into_inner()
                                .find(|q| q.as_rule() == Rule::expr)
                                .map(|e| self.expr(e))
                        }
                        Rule::block => {
                            for q in p.into_inner() {
                                match q.as_rule() {
                                    Rule::block_let => {
                                        let s = self.span(&q);
                                        let mut it = q.into_inner();
                                        it.next();
                                        lets.push(self.def_parts(it, s));
                                    }
                                    Rule::expr => body = Some(self.expr(q)),
                                    _ => {}
                                }
                            }
                        }
                        _ => {}
                    }
                }
                Item::Fn(FnItem {
                    name,
                    params,
                    lets,
                    body: body.expect("fn body"),
                    span,
                })
            }
            Rule::batch_item => {
                inner.next();
                let names = self.names(inner.next().expect("batch names"));
                inner.next(); // from
                let sources = self.names(inner.next().expect("batch sources"));
                inner.next(); // size
                let size = self.expr(inner.next().expect("batch size"));
                let shuffle = inner.next().is_some();
                Item::Batch(BatchItem {
                    names,
                    sources,
                    size,
                    shuffle,
                    span,
                })
            }
            Rule::precision_item => {
                inner.next();
                Item::Precision(self.ident(inner.next().expect("precision")))
            }
            Rule::optimizer_item => {
                inner.next();
                let name = self.ident(inner.next().expect("optimizer name"));
                let mut params = Vec::new();
                let mut body = Vec::new();
                for p in inner {
                    if p.as_rule() == Rule::fn_params {
                        params = self.fn_params(p);
                    } else {
                        body.push(self.opt_stmt(p));
                    }
                }
                Item::Optimizer(OptimizerItem {
                    name,
                    params,
                    body,
                    span,
                })
            }
            Rule::train_item => {
                inner.next();
                let clauses = inner.map(|c| self.clause(c)).collect();
                Item::Train(TrainItem { clauses, span })
            }
            Rule::sweep_item => {
                inner.next();
                let entries = inner
                    .map(|e| {
                        let espan = self.span(&e);
                        let mut it = e.into_inner();
                        let name = self.ident(it.next().expect("sweep name"));
                        it.next(); // in
                        let v = it.next().expect("sweep values");
                        let values = match v.as_rule() {
                            Rule::range => {
                                let (lo, hi) = self.range(v);
                                SweepValues::Range(lo, hi)
                            }
                            _ => SweepValues::List(v.into_inner().map(|x| self.expr(x)).collect()),
                        };
                        SweepEntry {
                            name,
                            values,
                            span: espan,
                        }
                    })
                    .collect();
                Item::Sweep(SweepItem { entries, span })
            }
            r => unreachable!("item rule {r:?}"),
        }
    }

    fn def(&self, pair: Pair<Rule>) -> Def {
        let span = self.span(&pair);
        self.def_parts(pair.into_inner(), span)
    }

    /// `ident = expr` from the remaining pairs.
    fn def_parts(&self, mut inner: pest::iterators::Pairs<Rule>, span: Span) -> Def {
        let name = self.ident(inner.next().expect("def name"));
        let value = inner
            .find(|p| p.as_rule() == Rule::expr)
            .map(|e| self.expr(e))
            .expect("def value");
        Def { name, value, span }
    }

    fn names(&self, pair: Pair<Rule>) -> Vec<Ident> {
        pair.into_inner().map(|p| self.ident(p)).collect()
    }

    fn fn_params(&self, pair: Pair<Rule>) -> Vec<FnParam> {
        pair.into_inner()
            .map(|p| {
                let mut it = p.into_inner();
                let name = self.ident(it.next().expect("param name"));
                let default = it.find(|q| q.as_rule() == Rule::expr).map(|e| self.expr(e));
                FnParam { name, default }
            })
            .collect()
    }

    fn opt_stmt(&self, pair: Pair<Rule>) -> OptStmt {
        let span = self.span(&pair);
        let rule = pair.as_rule();
        let mut inner = pair.into_inner();
        match rule {
            Rule::state_stmt => {
                inner.next();
                OptStmt::State(self.def_parts(inner, span))
            }
            Rule::opt_let => {
                inner.next();
                OptStmt::Let(self.def_parts(inner, span))
            }
            Rule::param_update => {
                inner.next();
                let op = match inner.next().expect("update op").as_str() {
                    "-=" => UpdateOp::Sub,
                    "+=" => UpdateOp::Add,
                    _ => UpdateOp::Set,
                };
                let value = self.expr(inner.next().expect("update value"));
                OptStmt::Param { op, value, span }
            }
            _ => OptStmt::Assign(self.def_parts(inner, span)),
        }
    }

    fn clause(&self, pair: Pair<Rule>) -> Clause {
        let span = self.span(&pair);
        let rule = pair.as_rule();
        let mut inner = pair.into_inner();
        match rule {
            Rule::train_opt => {
                inner.next();
                let rule = self.ident(inner.next().expect("rule name"));
                let mut args = Vec::new();
                let mut args_span = None;
                let mut targets = Vec::new();
                for p in inner {
                    match p.as_rule() {
                        Rule::call_args => {
                            args_span = Some(self.span(&p));
                            args = self.args(p);
                        }
                        Rule::name_list => targets = self.names(p),
                        _ => {}
                    }
                }
                Clause::Optimizer(TrainOptimizer {
                    rule,
                    args,
                    args_span,
                    targets,
                    span,
                })
            }
            Rule::steps_clause => {
                inner.next();
                Clause::Steps(self.expr(inner.next().expect("steps")), span)
            }
            Rule::time_clause => {
                inner.next();
                Clause::Time(self.expr(inner.next().expect("time")), span)
            }
            Rule::stop_clause => {
                inner.next();
                inner.next();
                Clause::StopWhen(self.expr(inner.next().expect("stop cond")), span)
            }
            Rule::record_clause => {
                inner.next();
                let kind = if inner.next().expect("record kind").as_str() == "log" {
                    RecordKind::Log
                } else {
                    RecordKind::Every
                };
                let count = self.expr(inner.next().expect("record count"));
                let entries = inner
                    .map(|e| {
                        let mut it = e.into_inner();
                        let first = it.next().expect("record entry");
                        if first.as_rule() == Rule::ident {
                            let name = self.ident(first);
                            let value = it
                                .find(|p| p.as_rule() == Rule::expr)
                                .map(|x| self.expr(x))
                                .expect("record value");
                            RecordEntry {
                                name: name.name,
                                name_span: name.span,
                                value,
                            }
                        } else {
                            let text: String = first
                                .as_str()
                                .chars()
                                .filter(|c| !c.is_whitespace())
                                .collect();
                            let text = strip_comments(&text, first.as_str());
                            let value = self.expr(first);
                            RecordEntry {
                                name: text,
                                name_span: value.span,
                                value,
                            }
                        }
                    })
                    .collect();
                Clause::Record(RecordClause {
                    kind,
                    count,
                    entries,
                    span,
                })
            }
            r => unreachable!("clause rule {r:?}"),
        }
    }

    fn range(&self, pair: Pair<Rule>) -> (Expr, Expr) {
        let mut it = pair.into_inner();
        let lo = self.op_expr(it.next().expect("range lo"));
        let hi = self.op_expr(it.next().expect("range hi"));
        (lo, hi)
    }

    fn args(&self, pair: Pair<Rule>) -> Vec<Arg> {
        pair.into_inner()
            .map(|a| {
                let mut it = a.into_inner();
                let first = it.next().expect("arg");
                if first.as_rule() == Rule::ident {
                    let name = self.ident(first);
                    let value = it
                        .find(|p| p.as_rule() == Rule::expr)
                        .map(|x| self.expr(x))
                        .expect("kwarg value");
                    Arg {
                        name: Some(name),
                        value,
                    }
                } else {
                    Arg {
                        name: None,
                        value: self.expr(first),
                    }
                }
            })
            .collect()
    }

    fn string(&self, pair: &Pair<Rule>) -> String {
        let raw = pair.as_str();
        let body = &raw[1..raw.len() - 1];
        let mut out = String::new();
        let mut chars = body.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('"') => out.push('"'),
                    Some('\\') => out.push('\\'),
                    other => {
                        self.errors.borrow_mut().push(
                            Diagnostic::new(
                                "E0003",
                                format!(
                                    "unknown escape `\\{}` in a string",
                                    other.map(String::from).unwrap_or_default()
                                ),
                                self.span(pair),
                            )
                            .label("here")
                            .hint(r#"strings know `\"`, `\\` and `\n`"#),
                        );
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    fn expr(&self, pair: Pair<Rule>) -> Expr {
        debug_assert_eq!(pair.as_rule(), Rule::expr);
        let inner = pair.into_inner().next().expect("expr body");
        match inner.as_rule() {
            Rule::if_expr => {
                let span = self.span(&inner);
                let mut parts = inner.into_inner().filter(|p| p.as_rule() == Rule::expr);
                let c = self.expr(parts.next().expect("cond"));
                let a = self.expr(parts.next().expect("then"));
                let b = self.expr(parts.next().expect("else"));
                Expr {
                    kind: ExprKind::If(Box::new(c), Box::new(a), Box::new(b)),
                    span,
                }
            }
            _ => self.op_expr(inner),
        }
    }

    fn op_expr(&self, pair: Pair<Rule>) -> Expr {
        PRATT
            .map_primary(|p| self.primary(p))
            .map_prefix(|op, rhs| {
                let span = self.span(&op).to(rhs.span);
                let op = if op.as_rule() == Rule::neg {
                    UnOp::Neg
                } else {
                    UnOp::Not
                };
                Expr {
                    kind: ExprKind::Unary(op, Box::new(rhs)),
                    span,
                }
            })
            .map_postfix(|lhs, op| {
                let span = lhs.span.to(self.span(&op));
                match op.as_rule() {
                    Rule::transpose => Expr {
                        kind: ExprKind::Transpose(Box::new(lhs)),
                        span,
                    },
                    _ => {
                        let items: Vec<IndexItem> =
                            op.into_inner().filter_map(|i| self.index_item(i)).collect();
                        if items.is_empty() {
                            self.errors.borrow_mut().push(
                                Diagnostic::new("E0001", "syntax error: an empty index", span)
                                    .label("expected an index or a slice inside `[ ]`"),
                            );
                        }
                        Expr {
                            kind: ExprKind::Index(Box::new(lhs), items),
                            span,
                        }
                    }
                }
            })
            .map_infix(|lhs, op, rhs| {
                let bop = match op.as_rule() {
                    Rule::pow => BinOp::Pow,
                    Rule::mul => BinOp::Mul,
                    Rule::div => BinOp::Div,
                    Rule::floordiv => BinOp::FloorDiv,
                    Rule::rem => BinOp::Rem,
                    Rule::matmul => BinOp::MatMul,
                    Rule::add => BinOp::Add,
                    Rule::sub => BinOp::Sub,
                    Rule::lt => BinOp::Lt,
                    Rule::le => BinOp::Le,
                    Rule::gt => BinOp::Gt,
                    Rule::ge => BinOp::Ge,
                    Rule::eq => BinOp::Eq,
                    Rule::ne => BinOp::Ne,
                    Rule::and => BinOp::And,
                    Rule::or => BinOp::Or,
                    r => unreachable!("infix {r:?}"),
                };
                let span = lhs.span.to(rhs.span);
                if bop.is_comparison() {
                    let mut bare = self.bare_comparisons.borrow_mut();
                    for side in [&lhs, &rhs] {
                        if bare.contains(&side.span) {
                            self.errors.borrow_mut().push(
                                Diagnostic::new(
                                    "E0004",
                                    "comparisons do not chain",
                                    self.span(&op),
                                )
                                .label("a second comparison")
                                .related(side.span, "this is already a comparison")
                                .hint("write `a < b and b < c`, or add parentheses"),
                            );
                        }
                    }
                    bare.insert(span);
                }
                Expr {
                    kind: ExprKind::Binary(bop, Box::new(lhs), Box::new(rhs)),
                    span,
                }
            })
            .parse(pair.into_inner())
    }

    fn index_item(&self, pair: Pair<Rule>) -> Option<IndexItem> {
        let mut lo = None;
        let mut hi = None;
        let mut slice = false;
        for p in pair.into_inner() {
            match p.as_rule() {
                Rule::colon => slice = true,
                _ if slice => hi = Some(self.expr(p)),
                _ => lo = Some(self.expr(p)),
            }
        }
        match (slice, lo) {
            (true, lo) => Some(IndexItem::Slice(lo, hi)),
            (false, Some(e)) => Some(IndexItem::At(e)),
            // An empty index item: `x[]` or `x[1,]`.
            (false, None) => None,
        }
    }

    fn primary(&self, pair: Pair<Rule>) -> Expr {
        let span = self.span(&pair);
        let kind = match pair.as_rule() {
            Rule::int => {
                let digits: String = pair.as_str().chars().filter(|c| *c != '_').collect();
                match digits.parse::<i64>() {
                    Ok(v) => ExprKind::Int(v),
                    Err(_) => {
                        self.errors.borrow_mut().push(
                            Diagnostic::new("E0002", "integer literal too large", span)
                                .label("does not fit in 64 bits")
                                .hint("write it as a float, e.g. `1e20`"),
                        );
                        ExprKind::Int(0)
                    }
                }
            }
            Rule::float => {
                let digits: String = pair.as_str().chars().filter(|c| *c != '_').collect();
                match digits.parse::<f64>() {
                    Ok(v) if v.is_finite() => ExprKind::Float(v),
                    _ => {
                        self.errors.borrow_mut().push(
                            Diagnostic::new("E0002", "float literal too large", span)
                                .label("beyond the largest float, about 1.8e308")
                                .hint("write `inf` for infinity"),
                        );
                        ExprKind::Float(0.0)
                    }
                }
            }
            Rule::string => ExprKind::Str(self.string(&pair)),
            Rule::ident | Rule::param_ref => ExprKind::Name(pair.as_str().to_string()),
            Rule::call => {
                let mut it = pair.into_inner();
                let callee = self.ident(it.next().expect("callee"));
                let args = self.args(it.next().expect("call args"));
                ExprKind::Call { callee, args }
            }
            Rule::paren => {
                let inner = self.expr(pair.into_inner().next().expect("paren expr"));
                return Expr {
                    kind: inner.kind,
                    span,
                };
            }
            Rule::list => {
                let mut elems = Vec::new();
                let mut comp = None;
                for p in pair.into_inner() {
                    match p.as_rule() {
                        Rule::comprehension => comp = Some(p),
                        _ => elems.push(self.expr(p)),
                    }
                }
                match comp {
                    Some(c) => {
                        let mut parts = c.into_inner();
                        parts.next(); // `for`
                        let var = self.ident(parts.next().expect("comp var"));
                        parts.next(); // `in`
                        let (lo, hi) = self.range(parts.next().expect("comp range"));
                        let body = elems.pop().expect("comp body");
                        ExprKind::Comprehension {
                            body: Box::new(body),
                            var,
                            lo: Box::new(lo),
                            hi: Box::new(hi),
                        }
                    }
                    None => ExprKind::List(elems),
                }
            }
            Rule::expr => return self.expr(pair),
            r => unreachable!("primary {r:?}"),
        };
        Expr { kind, span }
    }
}

/// The whitespace-free source text of a record entry, without trailing comments.
fn strip_comments(squeezed: &str, raw: &str) -> String {
    if raw.contains('#') {
        raw.lines()
            .map(|l| l.split('#').next().unwrap_or(""))
            .collect::<String>()
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect()
    } else {
        squeezed.to_string()
    }
}
