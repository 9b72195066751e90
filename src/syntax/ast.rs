//! The typed AST: what the rest of the compiler sees of the source. Every node has a span;
//! no pest type appears here.

use crate::diag::Span;

#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct Module {
    pub file: u32,
    pub items: Vec<Item>,
    /// Names that items which failed to parse would have defined (`loss`, `n` of a broken
    /// `const n = )`, [`ANY_NAME`] for a broken `use`): checks for missing names stay
    /// quiet about them.
    pub broken: Vec<String>,
}

/// In `Module::broken`: a `use` that did not parse, which may define any name.
pub const ANY_NAME: &str = "*";

#[derive(Clone, Debug)]
pub enum Item {
    Use(UseItem),
    Const(Def),
    Data(Def),
    Param(ParamItem),
    Sample(Def),
    Let(Def),
    Fn(FnItem),
    Loss(LossItem),
    Batch(BatchItem),
    Optimizer(OptimizerItem),
    Train(TrainItem),
    Sweep(SweepItem),
    Precision(Ident),
}

#[derive(Clone, Debug)]
pub enum UseTarget {
    /// `use std.optim`: the dotted path.
    Std(Vec<Ident>),
    /// `use "lib/nets.traj"`: a file relative to the using one.
    File(String),
}

#[derive(Clone, Debug)]
pub struct UseItem {
    pub target: UseTarget,
    pub span: Span,
}

/// `NAME = EXPR` as in `const`, `data`, `sample` and `let` items.
#[derive(Clone, Debug)]
pub struct Def {
    pub name: Ident,
    pub value: Expr,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub enum ParamInit {
    /// `= EXPR`
    Value(Expr),
    /// `~ DIST`
    Dist(Expr),
}

#[derive(Clone, Debug)]
pub struct ParamItem {
    pub name: Ident,
    pub shape: Vec<Expr>,
    pub shape_span: Span,
    pub init: ParamInit,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct FnParam {
    pub name: Ident,
    pub default: Option<Expr>,
}

#[derive(Clone, Debug)]
pub struct FnItem {
    pub name: Ident,
    pub params: Vec<FnParam>,
    /// `let`s of a block body, in order; empty for `fn f(x) = expr`.
    pub lets: Vec<Def>,
    pub body: Expr,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct LossItem {
    pub value: Expr,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct BatchItem {
    pub names: Vec<Ident>,
    pub sources: Vec<Ident>,
    pub size: Expr,
    pub shuffle: bool,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub enum UpdateOp {
    Set,
    Sub,
    Add,
}

#[derive(Clone, Debug)]
pub enum OptStmt {
    State(Def),
    Let(Def),
    /// `param = e`, `param -= e`, `param += e`
    Param {
        op: UpdateOp,
        value: Expr,
        span: Span,
    },
    /// `NAME = e`: a new value for a state
    Assign(Def),
}

#[derive(Clone, Debug)]
pub struct OptimizerItem {
    pub name: Ident,
    pub params: Vec<FnParam>,
    pub body: Vec<OptStmt>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct Arg {
    pub name: Option<Ident>,
    pub value: Expr,
}

#[derive(Clone, Debug)]
pub struct TrainOptimizer {
    pub rule: Ident,
    pub args: Vec<Arg>,
    pub args_span: Option<Span>,
    pub targets: Vec<Ident>,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    Every,
    Log,
}

#[derive(Clone, Debug)]
pub struct RecordEntry {
    /// The given name, or the entry's source text with whitespace removed.
    pub name: String,
    pub name_span: Span,
    pub value: Expr,
}

#[derive(Clone, Debug)]
pub struct RecordClause {
    pub kind: RecordKind,
    pub count: Expr,
    pub entries: Vec<RecordEntry>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub enum Clause {
    Optimizer(TrainOptimizer),
    Steps(Expr, Span),
    /// `time T`: how long a gradient flow (`optimizer flow`) runs.
    Time(Expr, Span),
    StopWhen(Expr, Span),
    Record(RecordClause),
}

#[derive(Clone, Debug)]
pub struct TrainItem {
    pub clauses: Vec<Clause>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub enum SweepValues {
    Range(Expr, Expr),
    List(Vec<Expr>),
}

#[derive(Clone, Debug)]
pub struct SweepEntry {
    pub name: Ident,
    pub values: SweepValues,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct SweepItem {
    pub entries: Vec<SweepEntry>,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinOp {
    Pow,
    Mul,
    Div,
    FloorDiv,
    Rem,
    MatMul,
    Add,
    Sub,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    And,
    Or,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Pow => "^",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::FloorDiv => "//",
            BinOp::Rem => "%",
            BinOp::MatMul => "@",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::And => "and",
            BinOp::Or => "or",
        }
    }

    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge | BinOp::Eq | BinOp::Ne
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnOp {
    Neg,
    Not,
}

#[derive(Clone, Debug)]
pub enum IndexItem {
    /// One position, or a gather when the expression is an int tensor.
    At(Expr),
    /// `lo:hi`, either bound optional.
    Slice(Option<Expr>, Option<Expr>),
}

#[derive(Clone, Debug)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub enum ExprKind {
    Int(i64),
    Float(f64),
    Str(String),
    Name(String),
    Call {
        callee: Ident,
        args: Vec<Arg>,
    },
    Unary(UnOp, Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    Transpose(Box<Expr>),
    Index(Box<Expr>, Vec<IndexItem>),
    If(Box<Expr>, Box<Expr>, Box<Expr>),
    List(Vec<Expr>),
    Comprehension {
        body: Box<Expr>,
        var: Ident,
        lo: Box<Expr>,
        hi: Box<Expr>,
    },
}
