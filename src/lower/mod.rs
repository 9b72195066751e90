//! Lowering: checked AST → IR. Functions are inlined at every call, lets are lowered once
//! per function, broadcasts/transposes/reductions become explicit ops, compile-time ints
//! fold to constants, and data and consts are embedded as constants. Random draws become
//! `Random` ops keyed by (item, comprehension index, draw number) — LANGUAGE.md 6.4.

use std::collections::{BTreeMap, HashMap};

use ndarray::{ArrayD, IxDyn};

use crate::diag::Span;
use crate::error::RunError;
use crate::ir::types::{DType, Scalar, axis};
use crate::ir::{Binary, Builder, Draw, Observable, Prim, Reduce, Unary, Var};
use crate::sema::builtins::{Builtin, Piece};
use crate::sema::modules::{Program, SymKind};
use crate::syntax::ast::*;
use crate::tensor::Tensor;

/// Values fixed before training: every const, data item and param's initial value.
#[derive(Clone, Debug, Default)]
pub struct Statics {
    pub values: HashMap<String, Tensor>,
}

/// Lowers expressions of one program into one `Builder`.
pub struct Lowerer<'a> {
    pub prog: &'a Program,
    pub statics: &'a Statics,
    pub b: Builder,
    /// Names bound in this function by the caller (params, `grad:W`, `t`, the step, ...).
    pub bound: HashMap<String, Var>,
    /// Lets, samples, batches and the loss, lowered once per function.
    memo: HashMap<String, Var>,
    scopes: Vec<HashMap<String, Var>>,
    /// The step whose draws samples and batches use (update k+1 at row k).
    pub step: Option<Var>,
    /// RNG stream of the draws being lowered: item name and comprehension indices.
    stream: String,
    draws: usize,
    /// Inside `init(...)`: params are their initial values.
    pub init_mode: bool,
    /// Inside an optimizer body: `noise` draws anew at each occurrence, keyed by
    /// (param name, occurrence, step).
    pub noise: Option<NoiseSite>,
}

/// Where `noise` is drawn: the param's name and shape, the step var, occurrences so far.
#[derive(Clone, Debug)]
pub struct NoiseSite {
    pub param: String,
    pub shape: Vec<usize>,
    pub step: Var,
    pub count: usize,
}

pub type LowerResult = Result<Var, RunError>;

/// The most IR instructions one function may lower to: inlining calls of calls, long
/// comprehensions, `matprod` of many factors or `ntk` of many rows would otherwise build
/// (and compile) a function for minutes, or without end.
pub const MAX_INSTS: usize = 1_000_000;

impl<'a> Lowerer<'a> {
    pub fn new(prog: &'a Program, statics: &'a Statics) -> Lowerer<'a> {
        let mut b = Builder::new();
        b.func.f32 = prog
            .items
            .iter()
            .any(|i| matches!(i, Item::Precision(p) if p.name == "f32"));
        Lowerer {
            prog,
            statics,
            b,
            bound: HashMap::new(),
            memo: HashMap::new(),
            scopes: Vec::new(),
            step: None,
            stream: String::new(),
            draws: 0,
            init_mode: false,
            noise: None,
        }
    }

    /// Calls a program function on already lowered arguments (for `ntk`).
    pub fn call_fn_on(&mut self, f: &FnItem, args: &[Var]) -> LowerResult {
        let values: Vec<Option<Var>> = args.iter().map(|v| Some(*v)).collect();
        self.inline(f, &values)
    }

    /// Inlines `f` with its parameters bound to `values` (`None`: the default, lowered in
    /// the callee's scope after the parameters before it).
    fn inline(&mut self, f: &FnItem, values: &[Option<Var>]) -> LowerResult {
        let saved = std::mem::take(&mut self.scopes);
        self.scopes.push(HashMap::new());
        let result = (|| {
            for (p, v) in f.params.iter().zip(values) {
                let v = match (v, &p.default) {
                    (Some(v), _) => *v,
                    (None, Some(d)) => self.expr(d)?,
                    (None, None) => {
                        return Err(format!("missing argument `{}`", p.name.name).into());
                    }
                };
                self.bind(&p.name.name, v);
            }
            for l in &f.lets {
                let v = self.expr(&l.value)?;
                self.bind(&l.name.name, v);
            }
            self.expr(&f.body)
        })();
        self.scopes = saved;
        result
    }

    /// Binds a local of the innermost scope.
    fn bind(&mut self, name: &str, v: Var) {
        if let Some(s) = self.scopes.last_mut() {
            s.insert(name.to_string(), v);
        }
    }

    /// Lowers the expression of a top-level item, with its draws keyed by `stream`.
    pub fn item_expr(&mut self, e: &Expr, stream: &str) -> LowerResult {
        let saved = (
            std::mem::replace(&mut self.stream, stream.to_string()),
            self.draws,
        );
        self.draws = 0;
        let v = self.expr(e);
        self.stream = saved.0;
        self.draws = saved.1;
        v
    }

    fn known(&self, v: Var) -> Option<Scalar> {
        match &self.b.func.insts[v].prim {
            Prim::Const(Tensor::Int(a)) if a.ndim() == 0 => {
                a.iter().next().map(|x| Scalar::Int(*x))
            }
            Prim::Const(Tensor::Float(a)) if a.ndim() == 0 => {
                a.iter().next().map(|x| Scalar::Float(*x))
            }
            _ => None,
        }
    }

    /// A compile-time int expression's value.
    pub fn known_int(&mut self, e: &Expr) -> Result<i64, RunError> {
        let v = self.expr(e)?;
        match self.known(v) {
            Some(Scalar::Int(i)) => Ok(i),
            other => Err(format!("expected a compile-time int, found {other:?}").into()),
        }
    }

    pub fn known_f64(&mut self, e: &Expr) -> Result<f64, RunError> {
        let v = self.expr(e)?;
        self.known(v)
            .map(Scalar::as_f64)
            .ok_or_else(|| "expected a compile-time number".into())
    }

    fn constant(&mut self, t: &Tensor) -> Var {
        self.b.constant(t.clone())
    }

    fn scalar_of(&mut self, s: Scalar) -> Var {
        match s {
            Scalar::Int(i) => self.b.int_scalar(i),
            Scalar::Float(f) => self.b.scalar(f),
        }
    }

    /// An error once the function holds more than [`MAX_INSTS`] instructions, at the
    /// expression being lowered.
    fn within_limit(&self) -> Result<(), RunError> {
        if self.b.func.insts.len() <= MAX_INSTS {
            return Ok(());
        }
        Err(RunError::new(format!(
            "the program is too large to compile: more than {MAX_INSTS} operations once \
             functions, comprehensions, `matprod` and `ntk` are expanded"
        ))
        .at(self.b.span, "here"))
    }

    pub fn expr(&mut self, e: &Expr) -> LowerResult {
        self.within_limit()?;
        let saved = self.b.span;
        self.b.span = e.span;
        let v = self.expr_inner(e);
        self.b.span = saved;
        v
    }

    fn expr_inner(&mut self, e: &Expr) -> LowerResult {
        match &e.kind {
            ExprKind::Int(i) => Ok(self.b.int_scalar(*i)),
            ExprKind::Float(f) => Ok(self.b.scalar(*f)),
            ExprKind::Str(_) => Err("a string is not a value".into()),
            ExprKind::Name(n) => self.name(n),
            ExprKind::Call { callee, args } => self.call(callee, args),
            ExprKind::Unary(op, x) => {
                let v = self.expr(x)?;
                Ok(match op {
                    UnOp::Neg => self.fold_unary(Unary::Neg, v),
                    UnOp::Not => self.fold_unary(Unary::Not, v),
                })
            }
            ExprKind::Binary(op, a, b) => {
                let (a, b) = (self.expr(a)?, self.expr(b)?);
                Ok(self.binop(*op, a, b))
            }
            ExprKind::Transpose(x) => {
                let v = self.expr(x)?;
                Ok(self.b.swap_last(v))
            }
            ExprKind::Index(x, items) => self.index(x, items),
            ExprKind::If(c, a, b) => {
                let (c, a, b) = (self.expr(c)?, self.expr(a)?, self.expr(b)?);
                if let Some(k) = self.known(c) {
                    // Only the chosen branch is used, but with the dtype and shape the
                    // checker gave the `if` (those of the `select` below): `if 1 > 2 then p
                    // else 0` is a vector like `p`, not the scalar 0.
                    let (dtype, shape) = self.b.select_type(c, a, b);
                    let chosen = if k.as_f64() != 0.0 { a } else { b };
                    let chosen = match (dtype, self.known(chosen)) {
                        // Kept a compile-time scalar where it was one.
                        (DType::Float, Some(Scalar::Int(i))) => self.b.scalar(i as f64),
                        (DType::Float, _) => self.b.to_float(chosen),
                        _ => chosen,
                    };
                    return Ok(self.b.broadcast(chosen, &shape));
                }
                Ok(self.b.select(c, a, b))
            }
            ExprKind::List(_) | ExprKind::Comprehension { .. } => {
                let vs = self.list(e)?;
                Ok(self.stack(&vs))
            }
        }
    }

    fn fold_unary(&mut self, op: Unary, v: Var) -> Var {
        match (op, self.known(v)) {
            (Unary::Neg, Some(Scalar::Int(i))) => self.b.int_scalar(i.wrapping_neg()),
            (Unary::Neg, Some(Scalar::Float(f))) => self.b.scalar(-f),
            (Unary::Not, Some(k)) => self.b.scalar(f64::from(k.as_f64() == 0.0)),
            _ => self.b.unary(op, v),
        }
    }

    /// A binary operator, folded when both operands are compile-time scalars.
    pub fn binop(&mut self, op: BinOp, a: Var, b: Var) -> Var {
        let bin = match op {
            BinOp::MatMul => return self.b.matmul(a, b),
            BinOp::Pow => Binary::Pow,
            BinOp::Mul => Binary::Mul,
            BinOp::Div => Binary::Div,
            BinOp::FloorDiv => Binary::FloorDiv,
            BinOp::Rem => Binary::Rem,
            BinOp::Add => Binary::Add,
            BinOp::Sub => Binary::Sub,
            BinOp::Lt => Binary::Lt,
            BinOp::Le => Binary::Le,
            BinOp::Gt => Binary::Gt,
            BinOp::Ge => Binary::Ge,
            BinOp::Eq => Binary::Eq,
            BinOp::Ne => Binary::Ne,
            BinOp::And => Binary::And,
            BinOp::Or => Binary::Or,
        };
        // `/` always gives a float; `int ^ negative int` too.
        let (a, b) = match (op, self.b.dtype(a), self.b.dtype(b)) {
            (BinOp::Div, _, _) => (self.b.to_float(a), self.b.to_float(b)),
            (BinOp::Pow, DType::Int, DType::Int) if !matches!(self.known(b), Some(Scalar::Int(k)) if k >= 0) => {
                (self.b.to_float(a), self.b.to_float(b))
            }
            _ => (a, b),
        };
        if let (Some(x), Some(y)) = (self.known(a), self.known(b)) {
            if let (Scalar::Int(x), Scalar::Int(y)) = (x, y)
                && !bin.gives_flag()
                && let Ok(r) = crate::interp::binary_int(bin, x, y)
            {
                return self.b.int_scalar(r);
            }
            return self
                .b
                .scalar(crate::interp::binary(bin, x.as_f64(), y.as_f64()));
        }
        self.b.binary(bin, a, b)
    }

    fn name(&mut self, n: &str) -> LowerResult {
        if n == "noise"
            && let Some(site) = &mut self.noise
        {
            let stream = format!("noise:{}:{}", site.param, site.count);
            site.count += 1;
            let (step, shape) = (site.step, site.shape.clone());
            return Ok(self
                .b
                .random(Draw::Normal, &stream, step, &[], DType::Float, shape));
        }
        for s in self.scopes.iter().rev() {
            if let Some(v) = s.get(n) {
                return Ok(*v);
            }
        }
        if let Some(v) = self.bound.get(n)
            && !(self.init_mode
                && self
                    .prog
                    .lookup(n)
                    .is_some_and(|s| s.kind == SymKind::Param))
        {
            return Ok(*v);
        }
        let Some(sym) = self.prog.lookup(n) else {
            return match n {
                "inf" => Ok(self.b.scalar(f64::INFINITY)),
                "pi" => Ok(self.b.scalar(std::f64::consts::PI)),
                "seed" => self.static_value("seed"),
                "step" => {
                    // Row k shows step k; the step var holds k + 1.
                    let s = self.step.ok_or("`step` outside a run")?;
                    let one = self.b.int_scalar(1);
                    Ok(self.b.binary(Binary::Sub, s, one))
                }
                _ => Err(format!("`{n}` is not bound here").into()),
            };
        };
        let item = &self.prog.items[sym.item];
        match (sym.kind, item) {
            (SymKind::Const | SymKind::Data, _) => self.static_value(n),
            (SymKind::Param, _) => {
                if self.init_mode {
                    return self.static_value(&format!("init:{n}"));
                }
                Err(format!("param `{n}` is not an input of this function").into())
            }
            (SymKind::Let, Item::Let(d)) => {
                self.memoized(&format!("let:{n}"), |l| l.item_expr(&d.value, n))
            }
            (SymKind::Sample, Item::Sample(d)) => {
                let stream = format!("sample:{n}");
                self.memoized(&format!("sample:{n}"), |l| l.item_expr(&d.value, &stream))
            }
            (SymKind::BatchVar(pos), Item::Batch(b)) => self.batch_var(b, pos),
            (SymKind::Loss, Item::Loss(l)) => {
                self.memoized("loss", |lo| lo.item_expr(&l.value, "loss"))
            }
            _ => Err(format!("`{n}` cannot be lowered here").into()),
        }
    }

    fn static_value(&mut self, n: &str) -> LowerResult {
        let key = format!("static:{n}");
        if let Some(v) = self.memo.get(&key) {
            return Ok(*v);
        }
        let t = self
            .statics
            .values
            .get(n)
            .ok_or_else(|| format!("`{n}` has no value yet"))?
            .clone();
        let v = self.constant(&t);
        self.memo.insert(key, v);
        Ok(v)
    }

    fn memoized(&mut self, key: &str, f: impl FnOnce(&mut Self) -> LowerResult) -> LowerResult {
        if let Some(v) = self.memo.get(key) {
            return Ok(*v);
        }
        // A let is lowered at top level: no locals of the place that first uses it.
        let saved = std::mem::take(&mut self.scopes);
        let v = f(self);
        self.scopes = saved;
        let v = v?;
        self.memo.insert(key.to_string(), v);
        Ok(v)
    }

    fn batch_var(&mut self, b: &BatchItem, pos: usize) -> LowerResult {
        let stream = format!(
            "batch:{}",
            b.names
                .iter()
                .map(|n| n.name.as_str())
                .collect::<Vec<_>>()
                .join(",")
        );
        let rows_key = format!("rows:{stream}");
        let rows = match self.memo.get(&rows_key) {
            Some(v) => *v,
            None => {
                let src = self.static_value(&b.sources[0].name)?;
                let n = self.b.shape(src)[0];
                let size = self.known_int(&b.size)? as usize;
                let step = self.step.ok_or("a batch outside a run")?;
                let v = self.b.random(
                    Draw::BatchRows {
                        rows: n,
                        shuffle: b.shuffle,
                    },
                    &stream,
                    step,
                    &[],
                    DType::Int,
                    vec![size],
                );
                self.memo.insert(rows_key, v);
                v
            }
        };
        let key = format!("batchvar:{}", b.names[pos].name);
        if let Some(v) = self.memo.get(&key) {
            return Ok(*v);
        }
        let src = self.static_value(&b.sources[pos].name)?;
        let v = self.b.gather(src, &[rows]);
        self.memo.insert(key, v);
        Ok(v)
    }

    fn index(&mut self, x: &Expr, items: &[IndexItem]) -> LowerResult {
        let v = self.expr(x)?;
        let shape = self.b.shape(v);
        let mut positions = Vec::new();
        for item in items {
            positions.push(match item {
                IndexItem::At(e) => Some(self.expr(e)?),
                IndexItem::Slice(..) => None,
            });
        }
        let gather = positions
            .iter()
            .flatten()
            .any(|p| !self.b.shape(*p).is_empty() || self.known(*p).is_none());
        if gather {
            let idx: Vec<Var> = positions.into_iter().flatten().collect();
            return Ok(self.b.gather(v, &idx));
        }
        let mut ranges: Vec<(usize, usize)> = shape.iter().map(|d| (0, *d)).collect();
        let mut keep = Vec::new();
        for (ax, (item, pos)) in items.iter().zip(&positions).enumerate() {
            let dim = shape[ax] as i64;
            let norm = |k: i64| if k < 0 { k + dim } else { k };
            match (item, pos) {
                (_, Some(p)) => {
                    let k = norm(self.known(*p).map(|s| s.as_f64() as i64).unwrap_or(0));
                    ranges[ax] = (k as usize, k as usize + 1);
                }
                (IndexItem::Slice(lo, hi), None) => {
                    let a = match lo {
                        Some(e) => norm(self.known_int(e)?),
                        None => 0,
                    };
                    let b = match hi {
                        Some(e) => norm(self.known_int(e)?),
                        None => dim,
                    };
                    ranges[ax] = (a as usize, b as usize);
                    keep.push(ax);
                }
                _ => {}
            }
        }
        keep.extend(items.len()..shape.len());
        let sliced = self.b.slice(v, &ranges);
        let out_shape: Vec<usize> = keep
            .iter()
            .map(|ax| ranges[*ax].1 - ranges[*ax].0)
            .collect();
        Ok(self.b.reshape(sliced, &out_shape))
    }

    fn list(&mut self, e: &Expr) -> Result<Vec<Var>, RunError> {
        match &e.kind {
            ExprKind::List(items) => Ok(items
                .iter()
                .map(|x| self.expr(x))
                .collect::<Result<_, _>>()?),
            ExprKind::Comprehension { body, var, lo, hi } => {
                let (a, b) = (self.known_int(lo)?, self.known_int(hi)?);
                let mut out = Vec::new();
                for i in a..b {
                    let iv = self.b.int_scalar(i);
                    self.scopes.push(HashMap::from([(var.name.clone(), iv)]));
                    let saved = (self.stream.clone(), self.draws);
                    self.stream = format!("{}[{i}]", self.stream);
                    self.draws = 0;
                    let v = self.expr(body);
                    self.stream = saved.0;
                    self.draws = saved.1;
                    self.scopes.pop();
                    out.push(v?);
                }
                Ok(out)
            }
            _ => Ok(vec![self.expr(e)?]),
        }
    }

    fn stack(&mut self, vs: &[Var]) -> Var {
        if vs.is_empty() {
            return self.b.constant(Tensor::Float(ArrayD::zeros(IxDyn(&[0]))));
        }
        let parts: Vec<Var> = vs
            .iter()
            .map(|v| {
                let mut s = vec![1];
                s.extend(self.b.shape(*v));
                self.b.reshape(*v, &s)
            })
            .collect();
        if parts.len() == 1 {
            return parts[0];
        }
        self.b.concat(&parts, 0)
    }

    fn next_stream(&mut self) -> String {
        let s = format!("{}#{}", self.stream, self.draws);
        self.draws += 1;
        s
    }

    fn draw_step(&mut self) -> Var {
        match self.step {
            Some(s) => s,
            None => self.b.int_scalar(0),
        }
    }

    fn call(&mut self, callee: &Ident, args: &[Arg]) -> LowerResult {
        let name = callee.name.as_str();
        if let Some(sym) = self.prog.lookup(name).filter(|s| s.kind == SymKind::Fn) {
            let Item::Fn(f) = &self.prog.items[sym.item] else {
                return Err("not a function".into());
            };
            return self.call_fn(f, args);
        }
        let f = Builtin::named(name).ok_or_else(|| format!("`{name}` is not a builtin"))?;
        self.builtin(f, args)
    }

    fn call_fn(&mut self, f: &FnItem, args: &[Arg]) -> LowerResult {
        let names: Vec<&str> = f.params.iter().map(|p| p.name.name.as_str()).collect();
        let args: Vec<&Arg> = args.iter().collect();
        let (slots, problems) = crate::sema::bind::bind(&names, &args);
        if !problems.is_empty() {
            return Err("arguments the checker refuses".into());
        }
        // Lowered in the order written (random draws are numbered in that order).
        let mut values: Vec<Option<Var>> = vec![None; f.params.len()];
        for (k, a) in args.iter().enumerate() {
            let v = self.expr(&a.value)?;
            if let Some(i) = slots.iter().position(|s| *s == Some(k)) {
                values[i] = Some(v);
            }
        }
        self.inline(f, &values)
    }

    fn dims(&mut self, rest: &[&Expr]) -> Result<Vec<usize>, RunError> {
        let exprs: Vec<&Expr> = match rest {
            [one] => match &one.kind {
                ExprKind::List(items) => items.iter().collect(),
                _ => vec![*one],
            },
            many => many.to_vec(),
        };
        exprs
            .iter()
            .map(|e| self.known_int(e).map(|n| n as usize))
            .collect()
    }

    fn axes_of(&mut self, e: Option<&Expr>, rank: usize) -> Result<Option<Vec<usize>>, RunError> {
        match e {
            Some(e) => {
                let k = self.known_int(e)?;
                Ok(Some(vec![axis(k, rank).ok_or("axis out of range")?]))
            }
            None => Ok(None),
        }
    }

    /// `keepdims` for a reduction result: reshape to the operand's rank with 1s.
    fn keep_dims(&mut self, r: Var, x_shape: &[usize], axes: &Option<Vec<usize>>) -> Var {
        let shape: Vec<usize> = x_shape
            .iter()
            .enumerate()
            .map(|(i, d)| match axes {
                Some(a) if !a.contains(&i) => *d,
                _ => 1,
            })
            .collect();
        self.b.reshape(r, &shape)
    }

    fn builtin(&mut self, f: Builtin, args: &[Arg]) -> LowerResult {
        use Builtin::*;
        let name = f.name();
        let (a, problems) = crate::sema::bind::bind_builtin(&f.row().sig, args);
        if !problems.is_empty() {
            return Err("arguments the checker refuses".into());
        }
        let rest = &a.rest;
        let arg = |l: &mut Self, k: &str| -> LowerResult {
            let e = a.get(k).ok_or_else(|| format!("`{name}` needs `{k}`"))?;
            l.expr(e)
        };
        match f {
            Unary(op) => {
                let x = arg(self, "x")?;
                if let Some(k) = self.known(x) {
                    let row = op.row();
                    return Ok(match (k, row.int) {
                        (Scalar::Int(i), Some(int)) => self.b.int_scalar(int(i)),
                        _ => self.b.scalar((row.scalar)(k.as_f64())),
                    });
                }
                Ok(self.b.unary(op, x))
            }
            Piecewise(Piece::Square) => {
                let x = arg(self, "x")?;
                Ok(self.binop(BinOp::Mul, x, x))
            }
            Piecewise(Piece::Abs) => {
                let x = arg(self, "x")?;
                let n = self.fold_unary(crate::ir::Unary::Neg, x);
                Ok(self.max_min(Binary::Max, x, n))
            }
            Piecewise(Piece::Relu) => {
                let x = arg(self, "x")?;
                let z = if self.b.dtype(x) == DType::Int {
                    self.b.int_scalar(0)
                } else {
                    self.b.scalar(0.0)
                };
                Ok(self.max_min(Binary::Max, x, z))
            }
            LeakyRelu => {
                let x = arg(self, "x")?;
                let slope = match a.get("slope") {
                    Some(e) => self.expr(e)?,
                    None => self.b.scalar(0.01),
                };
                let sx = self.binop(BinOp::Mul, slope, x);
                match self.known(slope) {
                    Some(s) if s.as_f64() <= 1.0 => Ok(self.max_min(Binary::Max, x, sx)),
                    Some(_) => Ok(self.max_min(Binary::Min, x, sx)),
                    None => {
                        let z = self.b.scalar(0.0);
                        let c = self.b.binary(Binary::Gt, x, z);
                        Ok(self.b.select(c, x, sx))
                    }
                }
            }
            Clamp => {
                let (x, lo, hi) = (arg(self, "x")?, arg(self, "lo")?, arg(self, "hi")?);
                let m = self.max_min(Binary::Max, x, lo);
                Ok(self.max_min(Binary::Min, m, hi))
            }
            LogAddExp => {
                let (x, y) = (arg(self, "a")?, arg(self, "b")?);
                Ok(self.b.binary(Binary::LogAddExp, x, y))
            }
            Max | Min if a.get("y").is_some() => {
                let (x, y) = (arg(self, "x")?, arg(self, "y")?);
                let op = if f == Max { Binary::Max } else { Binary::Min };
                Ok(self.max_min(op, x, y))
            }
            Sum | Mean | Prod | Max | Min | LogSumExp | Norm => {
                let x = arg(self, "x")?;
                let rank = self.b.shape(x).len();
                let axes = self.axes_of(a.get("axis"), rank)?;
                let kind = match f {
                    Sum | Mean => Reduce::Sum,
                    Prod => Reduce::Prod,
                    Max => Reduce::Max,
                    Min => Reduce::Min,
                    LogSumExp => Reduce::LogSumExp,
                    _ => Reduce::Norm2,
                };
                if f == Norm
                    && let Some(pe) = a.get("p")
                {
                    let p = self.known_f64(pe)?;
                    return self.p_norm(x, p, axes);
                }
                let count: usize = match &axes {
                    Some(ax) => ax.iter().map(|i| self.b.shape(x)[*i]).product(),
                    None => self.b.shape(x).iter().product(),
                };
                let r = self.b.reduce(kind, x, axes);
                if f == Mean {
                    let n = self.b.scalar(count as f64);
                    let r = self.b.to_float(r);
                    return Ok(self.b.binary(Binary::Div, r, n));
                }
                Ok(r)
            }
            ArgMax | ArgMin => {
                let x = arg(self, "x")?;
                let shape = self.b.shape(x);
                match self.axes_of(a.get("axis"), shape.len())? {
                    Some(ax) => Ok(self.b.arg_extreme(f == ArgMax, x, ax[0])),
                    None => {
                        let flat = self.b.reshape(x, &[shape.iter().product()]);
                        Ok(self.b.arg_extreme(f == ArgMax, flat, 0))
                    }
                }
            }
            Softmax | LogSoftmax => {
                let x = arg(self, "x")?;
                let shape = self.b.shape(x);
                let k = match a.get("axis") {
                    Some(e) => self.known_int(e)?,
                    None => -1,
                };
                let ax = Some(vec![axis(k, shape.len()).ok_or("axis")?]);
                let lse = self.b.reduce(Reduce::LogSumExp, x, ax.clone());
                let lse = self.keep_dims(lse, &shape, &ax);
                let ls = self.b.binary(Binary::Sub, x, lse);
                Ok(if f == Softmax {
                    self.b.unary(crate::ir::Unary::Exp, ls)
                } else {
                    ls
                })
            }
            Reshape => {
                let x = arg(self, "x")?;
                let de = a.get("dims").ok_or("dims")?;
                let items: Vec<&Expr> = match &de.kind {
                    ExprKind::List(items) => items.iter().collect(),
                    _ => vec![de],
                };
                let mut dims = Vec::new();
                for e in items {
                    dims.push(self.known_int(e)?);
                }
                let size: usize = self.b.shape(x).iter().product();
                let fixed: i64 = dims.iter().filter(|d| **d != -1).product();
                let shape: Vec<usize> = dims
                    .iter()
                    .map(|d| {
                        if *d == -1 {
                            size / fixed.max(1) as usize
                        } else {
                            *d as usize
                        }
                    })
                    .collect();
                Ok(self.b.reshape(x, &shape))
            }
            Flat => {
                let x = arg(self, "x")?;
                let n = self.b.shape(x).iter().product::<usize>();
                Ok(self.b.reshape(x, &[n]))
            }
            Transpose => {
                let x = arg(self, "x")?;
                let perm: Vec<usize> = (0..self.b.shape(x).len()).rev().collect();
                Ok(self.b.transpose(x, &perm))
            }
            Stack => {
                let e = a.get("list").ok_or("list")?;
                let vs = self.list(e)?;
                Ok(self.stack(&vs))
            }
            Concat => {
                let e = a.get("list").ok_or("list")?;
                let vs = self.list(e)?;
                let ax = match a.get("axis") {
                    Some(ae) => {
                        let k = self.known_int(ae)?;
                        axis(k, self.b.shape(vs[0]).len()).ok_or("axis")?
                    }
                    None => 0,
                };
                Ok(self.b.concat(&vs, ax))
            }
            Diag => {
                let x = arg(self, "x")?;
                let s = self.b.shape(x);
                if s.len() == 1 {
                    let eye = self.eye(s[0]);
                    let row = self.b.reshape(x, &[1, s[0]]);
                    Ok(self.b.binary(Binary::Mul, eye, row))
                } else {
                    Ok(self.diagonal(x))
                }
            }
            Trace => {
                let x = arg(self, "x")?;
                let d = self.diagonal(x);
                Ok(self.b.reduce(Reduce::Sum, d, None))
            }
            Outer => {
                let (u, v) = (arg(self, "u")?, arg(self, "v")?);
                let (m, n) = (self.b.shape(u)[0], self.b.shape(v)[0]);
                let u = self.b.reshape(u, &[m, 1]);
                let v = self.b.reshape(v, &[1, n]);
                Ok(self.b.binary(Binary::Mul, u, v))
            }
            MatProd => {
                let w = arg(self, "Ws")?;
                let s = self.b.shape(w);
                let mut acc: Option<Var> = None;
                for l in 0..s[0] {
                    self.within_limit()?;
                    let wl = self.b.slice(w, &[(l, l + 1), (0, s[1]), (0, s[2])]);
                    let wl = self.b.reshape(wl, &[s[1], s[2]]);
                    acc = Some(match acc {
                        None => wl,
                        Some(p) => self.b.matmul(wl, p),
                    });
                }
                acc.ok_or_else(|| "matprod of an empty stack".into())
            }
            Eye => {
                let n = self.known_int(a.get("n").ok_or("n")?)? as usize;
                Ok(self.eye(n))
            }
            Zeros | Ones => {
                let shape = self.dims(rest)?;
                let c = self.b.scalar(if f == Ones { 1.0 } else { 0.0 });
                Ok(self.b.broadcast(c, &shape))
            }
            Full => {
                let c = arg(self, "c")?;
                let shape = self.dims(rest)?;
                Ok(self.b.broadcast(c, &shape))
            }
            Arange => {
                let n = self.known_int(a.get("n").ok_or("n")?)? as usize;
                Ok(self
                    .b
                    .constant(Tensor::Int(ArrayD::from_shape_fn(IxDyn(&[n]), |i| {
                        i[0] as i64
                    }))))
            }
            Linspace => {
                let (lo, hi) = (arg(self, "a")?, arg(self, "b")?);
                let n = self.known_int(a.get("n").ok_or("n")?)? as usize;
                let frac = ArrayD::from_shape_fn(IxDyn(&[n]), |i| {
                    if n > 1 {
                        i[0] as f64 / (n - 1) as f64
                    } else {
                        0.0
                    }
                });
                let frac = self.b.constant(Tensor::Float(frac));
                let span = self.b.binary(Binary::Sub, hi, lo);
                let step = self.b.binary(Binary::Mul, frac, span);
                Ok(self.b.binary(Binary::Add, lo, step))
            }
            OneHot => {
                let idx = arg(self, "idx")?;
                let k = self.known_int(a.get("k").ok_or("k")?)? as usize;
                let mut s = self.b.shape(idx);
                s.push(1);
                let col = self.b.reshape(idx, &s);
                let classes = self
                    .b
                    .constant(Tensor::Int(ArrayD::from_shape_fn(IxDyn(&[k]), |i| {
                        i[0] as i64
                    })));
                Ok(self.b.binary(Binary::Eq, col, classes))
            }
            Shape => {
                let x = arg(self, "x")?;
                let k = self.known_int(a.get("k").ok_or("k")?)?;
                let s = self.b.shape(x);
                let ax = axis(k, s.len()).ok_or("axis")?;
                Ok(self.b.int_scalar(s[ax] as i64))
            }
            Randn | Rand => {
                let shape = self.dims(rest)?;
                let (stream, step) = (self.next_stream(), self.draw_step());
                let d = if f == Randn {
                    Draw::Normal
                } else {
                    Draw::Uniform
                };
                Ok(self.b.random(d, &stream, step, &[], DType::Float, shape))
            }
            Bernoulli => {
                let p = arg(self, "p")?;
                let p = self.b.to_float(p);
                let shape = self.dims(rest)?;
                let (stream, step) = (self.next_stream(), self.draw_step());
                Ok(self
                    .b
                    .random(Draw::Bernoulli, &stream, step, &[p], DType::Float, shape))
            }
            RandInt => {
                let lo = self.known_int(a.get("lo").ok_or("lo")?)?;
                let hi = self.known_int(a.get("hi").ok_or("hi")?)?;
                let shape = self.dims(rest)?;
                let (stream, step) = (self.next_stream(), self.draw_step());
                Ok(self.b.random(
                    Draw::Randint { lo, hi },
                    &stream,
                    step,
                    &[],
                    DType::Int,
                    shape,
                ))
            }
            Permutation => {
                let n = self.known_int(a.get("n").ok_or("n")?)? as usize;
                let (stream, step) = (self.next_stream(), self.draw_step());
                Ok(self
                    .b
                    .random(Draw::Permutation, &stream, step, &[], DType::Int, vec![n]))
            }
            Choose => {
                let n = self.known_int(a.get("n").ok_or("n")?)? as usize;
                let k = self.known_int(a.get("k").ok_or("k")?)? as usize;
                let (stream, step) = (self.next_stream(), self.draw_step());
                Ok(self
                    .b
                    .random(Draw::Choose { n }, &stream, step, &[], DType::Int, vec![k]))
            }
            Orthogonal => {
                let n = self.known_int(a.get("n").ok_or("n")?)? as usize;
                let m = match a.get("m") {
                    Some(e) => self.known_int(e)? as usize,
                    None => n,
                };
                let (stream, step) = (self.next_stream(), self.draw_step());
                Ok(self.b.random(
                    Draw::Orthogonal,
                    &stream,
                    step,
                    &[],
                    DType::Float,
                    vec![n, m],
                ))
            }
            Load => {
                let e = a.get("path").ok_or("path")?;
                let ExprKind::Str(path) = &e.kind else {
                    return Err("load needs a path".into());
                };
                let key = format!("file:{}:{path}", e.span.file);
                self.static_value(&key)
            }
            Svals | Eigvals | Erank | Nuclear | Spectral | Cond | Rank => {
                let x = arg(self, "A")?;
                let obs = match f {
                    Svals => Observable::Svals,
                    Eigvals => Observable::Eigvals,
                    Erank => Observable::Erank,
                    Nuclear => Observable::Nuclear,
                    Spectral => Observable::Spectral,
                    Cond => Observable::Cond,
                    _ => Observable::Rank(match a.get("tol") {
                        Some(t) => self.known_f64(t)?,
                        None => 1e-6,
                    }),
                };
                Ok(self.b.observe(obs, x))
            }
            Init => {
                let e = a.get("x").ok_or("x")?;
                let saved = std::mem::replace(&mut self.init_mode, true);
                // Lets under init() are lowered afresh, with params at their initial values.
                let memo = std::mem::take(&mut self.memo);
                let v = self.expr(e);
                self.memo = memo;
                self.init_mode = saved;
                v
            }
            Grad => {
                let (of, p) = match a.get("p") {
                    Some(p) => (a.get("a"), p),
                    None => (None, a.get("a").ok_or("p")?),
                };
                let ExprKind::Name(pname) = &p.kind else {
                    return Err("grad needs a param".into());
                };
                match of {
                    None => self
                        .bound
                        .get(&format!("grad:{pname}"))
                        .copied()
                        .ok_or_else(|| "grad is not bound".into()),
                    Some(e) => {
                        // `loss` bound to a value computed elsewhere (a record's input)
                        // has no derivative here: it is lowered from its definition, as
                        // any `let` is (`grad(loss, w)` was 0).
                        let bound_loss = self.bound.remove("loss");
                        let y = self.expr(e);
                        if let Some(v) = bound_loss {
                            self.bound.insert("loss".into(), v);
                        }
                        let y = y?;
                        let wrt = *self.bound.get(pname).ok_or("param not bound")?;
                        let g = crate::autodiff::grad_into(
                            &mut self.b,
                            y,
                            &[wrt],
                            &crate::autodiff::Ties::Default,
                        )?;
                        Ok(g[0])
                    }
                }
            }
            Ntk => self.ntk(a.get("f"), a.get("X")),
        }
    }

    /// The empirical NTK `[n, n]`: row i of J is the gradient over all params (in
    /// definition order) of `f(X[i])`; K = J Jᵀ. Plain reverse mode per row.
    fn ntk(&mut self, f: Option<&Expr>, x: Option<&Expr>) -> LowerResult {
        let (Some(f), Some(x)) = (f, x) else {
            return Err("ntk(f, X)".into());
        };
        let ExprKind::Name(fname) = &f.kind else {
            return Err("ntk needs a function".into());
        };
        let func = match self.prog.lookup(fname).map(|s| &self.prog.items[s.item]) {
            Some(Item::Fn(func)) => func,
            _ => return Err(format!("`{fname}` is not a function").into()),
        };
        let mut params: Vec<(Span, String)> = self
            .prog
            .symbols
            .iter()
            .filter(|(_, s)| s.kind == SymKind::Param)
            .map(|(n, s)| (s.span, n.clone()))
            .collect();
        params.sort();
        // Under `init(...)` the params are their initial values (constants of this
        // function): differentiate with respect to those.
        let wrt: Vec<Var> = params
            .iter()
            .map(|(_, n)| {
                if self.init_mode {
                    self.static_value(&format!("init:{n}"))
                } else {
                    self.bound
                        .get(n)
                        .copied()
                        .ok_or_else(|| format!("param `{n}` is not bound").into())
                }
            })
            .collect::<Result<_, _>>()?;
        let xv = self.expr(x)?;
        let xs = self.b.shape(xv);
        let mut rows = Vec::new();
        for i in 0..xs[0] {
            self.within_limit()?;
            let mut r: Vec<(usize, usize)> = xs.iter().map(|d| (0, *d)).collect();
            r[0] = (i, i + 1);
            let row = self.b.slice(xv, &r);
            let row = self.b.reshape(row, &xs[1..]);
            let y = self.call_fn_on(func, &[row])?;
            let y = self.b.to_float(y);
            let grads =
                crate::autodiff::grad_into(&mut self.b, y, &wrt, &crate::autodiff::Ties::Default)?;
            let flat: Vec<Var> = grads
                .iter()
                .map(|g| {
                    let n = self.b.shape(*g).iter().product::<usize>();
                    self.b.reshape(*g, &[n])
                })
                .collect();
            let j = if flat.len() == 1 {
                flat[0]
            } else {
                self.b.concat(&flat, 0)
            };
            rows.push(j);
        }
        if rows.is_empty() {
            // No rows: the kernel of no points is `[0, 0]`.
            return Ok(self
                .b
                .constant(Tensor::Float(ArrayD::zeros(IxDyn(&[0, 0])))));
        }
        let jac = self.stack(&rows);
        let jt = self.b.transpose(jac, &[1, 0]);
        Ok(self.b.matmul(jac, jt))
    }

    /// Elementwise max/min, folded for compile-time scalars.
    fn max_min(&mut self, op: Binary, x: Var, y: Var) -> Var {
        if let (Some(a), Some(c)) = (self.known(x), self.known(y)) {
            let pick = if op == Binary::Max {
                a.as_f64() >= c.as_f64()
            } else {
                a.as_f64() <= c.as_f64()
            };
            let s = if pick { a } else { c };
            return self.scalar_of(s);
        }
        self.b.binary(op, x, y)
    }

    fn p_norm(&mut self, x: Var, p: f64, axes: Option<Vec<usize>>) -> LowerResult {
        let x = self.b.to_float(x);
        if p == 2.0 {
            return Ok(self.b.reduce(Reduce::Norm2, x, axes));
        }
        let n = self.b.unary(Unary::Neg, x);
        let ax = self.b.binary(Binary::Max, x, n);
        if p == f64::INFINITY {
            let largest = self.b.reduce(Reduce::Max, ax, axes);
            if self.b.shape(x).contains(&0) {
                // Each entry is the largest of no magnitudes: 0, not `max`'s -inf.
                let shape = self.b.shape(largest);
                return Ok(self.b.constant(Tensor::Float(ArrayD::zeros(IxDyn(&shape)))));
            }
            return Ok(largest);
        }
        if p == 1.0 {
            return Ok(self.b.reduce(Reduce::Sum, ax, axes));
        }
        let pv = self.b.scalar(p);
        let powed = self.b.binary(Binary::Pow, ax, pv);
        let s = self.b.reduce(Reduce::Sum, powed, axes);
        let inv = self.b.scalar(1.0 / p);
        Ok(self.b.binary(Binary::Pow, s, inv))
    }

    fn eye(&mut self, n: usize) -> Var {
        let t = ArrayD::from_shape_fn(IxDyn(&[n, n]), |i| f64::from(i[0] == i[1]));
        self.b.constant(Tensor::Float(t))
    }

    fn diagonal(&mut self, x: Var) -> Var {
        let s = self.b.shape(x);
        let k = s[0].min(s[1]);
        let idx = self
            .b
            .constant(Tensor::Int(ArrayD::from_shape_fn(IxDyn(&[k]), |i| {
                i[0] as i64
            })));
        self.b.gather(x, &[idx, idx])
    }
}

/// The consts of a checked program as scalar tensors.
pub fn const_tensors(consts: &BTreeMap<String, Scalar>) -> HashMap<String, Tensor> {
    consts
        .iter()
        .map(|(k, v)| {
            let t = match v {
                Scalar::Int(i) => Tensor::Int(ArrayD::from_elem(IxDyn(&[]), *i)),
                Scalar::Float(f) => Tensor::scalar(*f),
            };
            (k.clone(), t)
        })
        .collect()
}
