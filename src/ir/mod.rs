//! The IR: a flat SSA list of instructions, each an op of one closed `Prim` enum with its
//! operands and a static dtype and shape (in the spirit of JAX's jaxpr). Broadcasts,
//! transposes and reductions are explicit. `Builder` infers every result type, `print`
//! gives the stable text form, `verify` re-checks a function after every pass.
//!
//! Nonsmooth elementwise functions are lowered to `Max`/`Min` (relu(x) = max(x, 0),
//! abs(x) = max(x, -x), clamp = min(max(x, lo), hi)), so the tie rules of
//! Kakade & Lee live in few ops: `Max`, `Min`, `ReduceMax`, `ReduceMin`, `Norm2`, the
//! comparisons and `Sign` (see `autodiff`).

pub mod types;

use std::fmt::Write as _;

use crate::diag::Span;
use crate::ir::types::{DType, Shape, show_shape};
use crate::tensor::Tensor;

pub mod ops;

pub use ops::Unary;

pub type Var = usize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    FloorDiv,
    Rem,
    /// Elementwise maximum; ties where the operands are equal (class M).
    Max,
    Min,
    LogAddExp,
    /// Comparisons give 1.0/0.0 (class D: derivative 0, ties where the operands are equal).
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    And,
    Or,
}

impl Binary {
    /// `<`, `<=`, `>`, `>=`, `==`, `!=`: 1.0/0.0, derivative 0, class D at equality.
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            Binary::Lt | Binary::Le | Binary::Gt | Binary::Ge | Binary::Eq | Binary::Ne
        )
    }

    /// Comparisons and `and`/`or`: their result is a 1.0/0.0 float whatever the operands.
    pub fn gives_flag(self) -> bool {
        self.is_comparison() || matches!(self, Binary::And | Binary::Or)
    }
}

/// Random draws: pure functions of (seed, stream, step, element), see `rng`.
#[derive(Clone, Debug, PartialEq)]
pub enum Draw {
    Normal,
    Uniform,
    /// Operand: the probability (a scalar).
    Bernoulli,
    /// Ints in [lo, hi).
    Randint {
        lo: i64,
        hi: i64,
    },
    Permutation,
    Choose {
        n: usize,
    },
    Orthogonal,
    /// Batch row indices: `size` of `rows`, uniformly with replacement or, with
    /// `shuffle`, walking a fresh permutation each epoch.
    BatchRows {
        rows: usize,
        shuffle: bool,
    },
}

/// Host-side observables (section 6.6); not differentiable.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Observable {
    Svals,
    Eigvals,
    Rank(f64),
    Erank,
    Nuclear,
    Spectral,
    Cond,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Prim {
    /// The function's k-th input.
    Input(usize),
    Const(Tensor),
    Unary(Unary),
    Binary(Binary),
    /// `cond ? a : b` elementwise (operands of one shape).
    Select,
    /// To a larger shape, NumPy's rules (the operand's rank may be lower).
    Broadcast(Shape),
    Reshape(Shape),
    /// Result axis i is operand axis perm[i].
    Transpose(Vec<usize>),
    /// `[start, end)` along every axis.
    Slice(Vec<(usize, usize)>),
    /// Embeds the operand at `starts` into zeros of `shape` (the adjoint of `Slice`).
    Pad {
        starts: Vec<usize>,
        shape: Shape,
    },
    Concat(usize),
    /// Operands: x, then one int index tensor per leading axis (all of one shape).
    Gather,
    /// Operands: updates, then the index tensors of the `Gather` it is the adjoint of;
    /// the result has `shape`.
    ScatterAdd(Shape),
    ReduceSum(Vec<usize>),
    ReduceMax(Vec<usize>),
    ReduceMin(Vec<usize>),
    ReduceProd(Vec<usize>),
    /// Euclidean norm over the axes (class R at 0).
    Norm2(Vec<usize>),
    LogSumExp(Vec<usize>),
    Argmax(usize),
    Argmin(usize),
    /// `[m,k] @ [k,n]`.
    MatMul,
    /// Operand 0 is the step (an int scalar); a random tensor of the result shape.
    Random {
        draw: Draw,
        stream: String,
    },
    Observe(Observable),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Inst {
    pub prim: Prim,
    pub args: Vec<Var>,
    pub dtype: DType,
    pub shape: Shape,
    /// Where in the source this comes from, for runtime reports.
    pub span: Span,
}

/// A function: instructions in SSA order (each defines the value numbered by its
/// position), named inputs and named outputs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Func {
    pub insts: Vec<Inst>,
    pub inputs: Vec<(String, DType, Shape)>,
    pub outputs: Vec<(String, Var)>,
    /// `precision f32`: every float result is rounded to f32 (products and reductions
    /// accumulate in f64 first).
    pub f32: bool,
}

impl Func {
    pub fn output(&self, name: &str) -> Option<Var> {
        self.outputs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
    }
}

/// Builds a `Func`, inferring each result's dtype and shape. Type errors here are
/// compiler bugs (the checker has proven the program well-typed), so they panic with the
/// function printed.
#[derive(Default)]
pub struct Builder {
    pub func: Func,
    pub span: Span,
}

impl Builder {
    pub fn new() -> Builder {
        Builder::default()
    }

    pub fn input(&mut self, name: &str, dtype: DType, shape: Shape) -> Var {
        let k = self.func.inputs.len();
        self.func
            .inputs
            .push((name.to_string(), dtype, shape.clone()));
        self.push(Prim::Input(k), vec![], dtype, shape)
    }

    pub fn output(&mut self, name: &str, v: Var) {
        self.func.outputs.push((name.to_string(), v));
    }

    pub fn ty(&self, v: Var) -> (DType, &[usize]) {
        let i = &self.func.insts[v];
        (i.dtype, &i.shape)
    }

    pub fn shape(&self, v: Var) -> Shape {
        self.func.insts[v].shape.clone()
    }

    pub fn dtype(&self, v: Var) -> DType {
        self.func.insts[v].dtype
    }

    fn push(&mut self, prim: Prim, args: Vec<Var>, dtype: DType, shape: Shape) -> Var {
        self.func.insts.push(Inst {
            prim,
            args,
            dtype,
            shape,
            span: self.span,
        });
        self.func.insts.len() - 1
    }

    pub fn constant(&mut self, t: Tensor) -> Var {
        let dtype = match t {
            Tensor::Float(_) => DType::Float,
            Tensor::Int(_) => DType::Int,
        };
        let shape = t.shape().to_vec();
        self.push(Prim::Const(t), vec![], dtype, shape)
    }

    pub fn scalar(&mut self, v: f64) -> Var {
        self.constant(Tensor::scalar(v))
    }

    pub fn int_scalar(&mut self, v: i64) -> Var {
        self.constant(Tensor::Int(ndarray::ArrayD::from_elem(
            ndarray::IxDyn(&[]),
            v,
        )))
    }

    /// A float scalar constant broadcast to `v`'s shape.
    pub fn fill_like(&mut self, v: Var, c: f64) -> Var {
        let s = self.scalar(c);
        let shape = self.shape(v);
        self.broadcast(s, &shape)
    }

    pub fn to_float(&mut self, v: Var) -> Var {
        if self.dtype(v) == DType::Float {
            v
        } else {
            self.unary(Unary::ToFloat, v)
        }
    }

    pub fn unary(&mut self, op: Unary, x: Var) -> Var {
        let (dtype, shape) = (self.dtype(x), self.shape(x));
        let dtype = if op.row().int.is_some() {
            dtype
        } else {
            DType::Float
        };
        self.push(Prim::Unary(op), vec![x], dtype, shape)
    }

    /// A binary elementwise op; operands are broadcast to a common shape first.
    pub fn binary(&mut self, op: Binary, a: Var, b: Var) -> Var {
        let shape = crate::ir::types::broadcast(&self.shape(a), &self.shape(b))
            .unwrap_or_else(|| self.bug(&format!("broadcast {op:?} of {a} and {b}")));
        let a = self.broadcast(a, &shape);
        let b = self.broadcast(b, &shape);
        let (da, db) = (self.dtype(a), self.dtype(b));
        let dtype = match op {
            Binary::Div | Binary::LogAddExp => DType::Float,
            _ if op.gives_flag() => DType::Float,
            _ => da.promote(db),
        };
        // Mixed int/float operands are made float explicitly.
        let (a, b) = if dtype == DType::Float || da != db {
            (self.float_when(a, da != db), self.float_when(b, da != db))
        } else {
            (a, b)
        };
        self.push(Prim::Binary(op), vec![a, b], dtype, shape)
    }

    fn float_when(&mut self, v: Var, cond: bool) -> Var {
        if cond { self.to_float(v) } else { v }
    }

    /// The dtype and shape of `select(c, a, b)` (and of the checker's `if c then a else b`):
    /// the three shapes broadcast together, the branches' dtypes promoted.
    pub fn select_type(&self, c: Var, a: Var, b: Var) -> (DType, Shape) {
        let s1 = crate::ir::types::broadcast(&self.shape(a), &self.shape(b))
            .unwrap_or_else(|| self.bug("select shapes"));
        let shape = crate::ir::types::broadcast(&self.shape(c), &s1)
            .unwrap_or_else(|| self.bug("select shapes"));
        (self.dtype(a).promote(self.dtype(b)), shape)
    }

    pub fn select(&mut self, c: Var, a: Var, b: Var) -> Var {
        let (dtype, shape) = self.select_type(c, a, b);
        let (c, a, b) = (
            self.broadcast(c, &shape),
            self.broadcast(a, &shape),
            self.broadcast(b, &shape),
        );
        let (a, b) = if dtype == DType::Float {
            (self.to_float(a), self.to_float(b))
        } else {
            (a, b)
        };
        let c = self.to_float(c);
        self.push(Prim::Select, vec![c, a, b], dtype, shape)
    }

    /// To `shape` by NumPy's rules; a no-op when the shape is already right.
    pub fn broadcast(&mut self, x: Var, shape: &[usize]) -> Var {
        if self.shape(x) == shape {
            return x;
        }
        let dtype = self.dtype(x);
        self.push(
            Prim::Broadcast(shape.to_vec()),
            vec![x],
            dtype,
            shape.to_vec(),
        )
    }

    pub fn reshape(&mut self, x: Var, shape: &[usize]) -> Var {
        if self.shape(x) == shape {
            return x;
        }
        let dtype = self.dtype(x);
        self.push(
            Prim::Reshape(shape.to_vec()),
            vec![x],
            dtype,
            shape.to_vec(),
        )
    }

    pub fn transpose(&mut self, x: Var, perm: &[usize]) -> Var {
        if perm.iter().enumerate().all(|(i, p)| i == *p) {
            return x;
        }
        let s = self.shape(x);
        let shape = perm.iter().map(|p| s[*p]).collect();
        let dtype = self.dtype(x);
        self.push(Prim::Transpose(perm.to_vec()), vec![x], dtype, shape)
    }

    /// Swaps the last two axes.
    pub fn swap_last(&mut self, x: Var) -> Var {
        let r = self.shape(x).len();
        let mut perm: Vec<usize> = (0..r).collect();
        perm.swap(r - 1, r - 2);
        self.transpose(x, &perm)
    }

    pub fn slice(&mut self, x: Var, ranges: &[(usize, usize)]) -> Var {
        let s = self.shape(x);
        if ranges.iter().zip(&s).all(|((a, b), d)| *a == 0 && b == d) {
            return x;
        }
        let shape = ranges.iter().map(|(a, b)| b - a).collect();
        let dtype = self.dtype(x);
        self.push(Prim::Slice(ranges.to_vec()), vec![x], dtype, shape)
    }

    pub fn pad(&mut self, x: Var, starts: &[usize], shape: &[usize]) -> Var {
        let dtype = self.dtype(x);
        self.push(
            Prim::Pad {
                starts: starts.to_vec(),
                shape: shape.to_vec(),
            },
            vec![x],
            dtype,
            shape.to_vec(),
        )
    }

    pub fn concat(&mut self, xs: &[Var], axis: usize) -> Var {
        let mut shape = self.shape(xs[0]);
        shape[axis] = xs.iter().map(|x| self.shape(*x)[axis]).sum();
        let dtype = xs
            .iter()
            .fold(self.dtype(xs[0]), |d, x| d.promote(self.dtype(*x)));
        let xs: Vec<Var> = if dtype == DType::Float {
            xs.iter().map(|x| self.to_float(*x)).collect()
        } else {
            xs.to_vec()
        };
        self.push(Prim::Concat(axis), xs, dtype, shape)
    }

    pub fn gather(&mut self, x: Var, idx: &[Var]) -> Var {
        let mut shape = self.shape(idx[0]);
        shape.extend_from_slice(&self.shape(x)[idx.len()..]);
        let dtype = self.dtype(x);
        let mut args = vec![x];
        args.extend_from_slice(idx);
        self.push(Prim::Gather, args, dtype, shape)
    }

    pub fn scatter_add(&mut self, updates: Var, idx: &[Var], shape: &[usize]) -> Var {
        let mut args = vec![updates];
        args.extend_from_slice(idx);
        let dtype = self.dtype(updates);
        self.push(
            Prim::ScatterAdd(shape.to_vec()),
            args,
            dtype,
            shape.to_vec(),
        )
    }

    fn reduced(&self, x: Var, axes: &[usize]) -> Shape {
        self.shape(x)
            .iter()
            .enumerate()
            .filter(|(i, _)| !axes.contains(i))
            .map(|(_, d)| *d)
            .collect()
    }

    /// A reduction over `axes` (all axes when `None`).
    pub fn reduce(&mut self, kind: Reduce, x: Var, axes: Option<Vec<usize>>) -> Var {
        let axes = axes.unwrap_or_else(|| (0..self.shape(x).len()).collect());
        let shape = self.reduced(x, &axes);
        let dtype = match kind {
            Reduce::Sum | Reduce::Max | Reduce::Min | Reduce::Prod => self.dtype(x),
            Reduce::Norm2 | Reduce::LogSumExp => DType::Float,
        };
        let x = if dtype == DType::Float {
            self.to_float(x)
        } else {
            x
        };
        let prim = match kind {
            Reduce::Sum => Prim::ReduceSum(axes),
            Reduce::Max => Prim::ReduceMax(axes),
            Reduce::Min => Prim::ReduceMin(axes),
            Reduce::Prod => Prim::ReduceProd(axes),
            Reduce::Norm2 => Prim::Norm2(axes),
            Reduce::LogSumExp => Prim::LogSumExp(axes),
        };
        self.push(prim, vec![x], dtype, shape)
    }

    pub fn arg_extreme(&mut self, max: bool, x: Var, axis: usize) -> Var {
        let shape = self.reduced(x, &[axis]);
        let prim = if max {
            Prim::Argmax(axis)
        } else {
            Prim::Argmin(axis)
        };
        self.push(prim, vec![x], DType::Int, shape)
    }

    /// `[m,k] @ [k,n]`; vector operands are reshaped to matrices and back.
    pub fn matmul(&mut self, a: Var, b: Var) -> Var {
        let (sa, sb) = (self.shape(a), self.shape(b));
        let a2 = if sa.len() == 1 {
            self.reshape(a, &[1, sa[0]])
        } else {
            a
        };
        let b2 = if sb.len() == 1 {
            self.reshape(b, &[sb[0], 1])
        } else {
            b
        };
        let (m, n) = (self.shape(a2)[0], self.shape(b2)[1]);
        let dtype = self.dtype(a).promote(self.dtype(b));
        let (a2, b2) = if dtype == DType::Float {
            (self.to_float(a2), self.to_float(b2))
        } else {
            (a2, b2)
        };
        let out = self.push(Prim::MatMul, vec![a2, b2], dtype, vec![m, n]);
        let shape: Shape = match (sa.len(), sb.len()) {
            (1, 1) => vec![],
            (1, _) => vec![n],
            (_, 1) => vec![m],
            _ => return out,
        };
        self.reshape(out, &shape)
    }

    pub fn random(
        &mut self,
        draw: Draw,
        stream: &str,
        step: Var,
        extra: &[Var],
        dtype: DType,
        shape: Shape,
    ) -> Var {
        let mut args = vec![step];
        args.extend_from_slice(extra);
        self.push(
            Prim::Random {
                draw,
                stream: stream.to_string(),
            },
            args,
            dtype,
            shape,
        )
    }

    pub fn observe(&mut self, obs: Observable, x: Var) -> Var {
        let s = self.shape(x);
        let (dtype, shape) = match obs {
            Observable::Svals => (DType::Float, vec![s[0].min(s[1])]),
            Observable::Eigvals => (DType::Float, vec![s[0]]),
            Observable::Rank(_) => (DType::Int, vec![]),
            _ => (DType::Float, vec![]),
        };
        let x = self.to_float(x);
        self.push(Prim::Observe(obs), vec![x], dtype, shape)
    }

    fn bug(&self, what: &str) -> ! {
        panic!("IR builder: {what}\n{}", print(&self.func))
    }

    pub fn finish(self) -> Func {
        self.func
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Reduce {
    Sum,
    Max,
    Min,
    Prod,
    Norm2,
    LogSumExp,
}

/// The stable text form: one instruction a line, `%i: dtype[shape] = op(args)`.
pub fn print(f: &Func) -> String {
    let mut out = String::new();
    let inputs: Vec<String> = f
        .inputs
        .iter()
        .map(|(n, d, s)| format!("{n}: {}{}", d.name(), show_shape(s)))
        .collect();
    let precision = if f.f32 { " f32" } else { "" };
    let _ = writeln!(out, "fn({}){precision} {{", inputs.join(", "));
    for (i, inst) in f.insts.iter().enumerate() {
        let args: Vec<String> = inst.args.iter().map(|a| format!("%{a}")).collect();
        let op = match &inst.prim {
            Prim::Input(k) => format!(
                "input {}",
                f.inputs.get(*k).map(|x| x.0.as_str()).unwrap_or("?")
            ),
            Prim::Const(t) => format!("const {}", show_const(t)),
            Prim::Unary(u) => snake(&format!("{u:?}")).to_string(),
            Prim::Binary(b) => snake(&format!("{b:?}")).to_string(),
            Prim::Select => "select".into(),
            Prim::Broadcast(s) => format!("broadcast{}", show_shape(s)),
            Prim::Reshape(s) => format!("reshape{}", show_shape(s)),
            Prim::Transpose(p) => format!("transpose{p:?}"),
            Prim::Slice(r) => {
                let r: Vec<String> = r.iter().map(|(a, b)| format!("{a}:{b}")).collect();
                format!("slice[{}]", r.join(", "))
            }
            Prim::Pad { starts, shape } => format!("pad{starts:?}{}", show_shape(shape)),
            Prim::Concat(a) => format!("concat axis={a}"),
            Prim::Gather => "gather".into(),
            Prim::ScatterAdd(s) => format!("scatter_add{}", show_shape(s)),
            Prim::ReduceSum(a) => format!("reduce_sum{a:?}"),
            Prim::ReduceMax(a) => format!("reduce_max{a:?}"),
            Prim::ReduceMin(a) => format!("reduce_min{a:?}"),
            Prim::ReduceProd(a) => format!("reduce_prod{a:?}"),
            Prim::Norm2(a) => format!("norm2{a:?}"),
            Prim::LogSumExp(a) => format!("logsumexp{a:?}"),
            Prim::Argmax(a) => format!("argmax axis={a}"),
            Prim::Argmin(a) => format!("argmin axis={a}"),
            Prim::MatMul => "matmul".into(),
            Prim::Random { draw, stream } => {
                format!("random {} {stream:?}", snake(&format!("{draw:?}")))
            }
            Prim::Observe(o) => snake(&format!("{o:?}")),
        };
        let _ = writeln!(
            out,
            "  %{i}: {}{} = {op}{}",
            inst.dtype.name(),
            show_shape(&inst.shape),
            if args.is_empty() {
                String::new()
            } else {
                format!(" {}", args.join(", "))
            }
        );
    }
    let outs: Vec<String> = f
        .outputs
        .iter()
        .map(|(n, v)| format!("{n} = %{v}"))
        .collect();
    let _ = writeln!(out, "  return {}\n}}", outs.join(", "));
    out
}

fn show_const(t: &Tensor) -> String {
    if t.shape().is_empty() {
        match t {
            Tensor::Float(a) => format!("{:?}", a.iter().next().copied().unwrap_or(0.0)),
            Tensor::Int(a) => format!("{}", a.iter().next().copied().unwrap_or(0)),
        }
    } else {
        format!("<{}>", show_shape(t.shape()))
    }
}

/// `LogAddExp` → `log_add_exp` (payloads such as `Randint { lo: 0, hi: 3 }` kept).
fn snake(s: &str) -> String {
    let mut out = String::new();
    let mut prev_lower = false;
    for c in s.chars() {
        if c.is_uppercase() && prev_lower {
            out.push('_');
        }
        prev_lower = c.is_lowercase();
        out.extend(c.to_lowercase());
    }
    out
}

/// Re-checks every instruction's operands and inferred type. Returns the first problem.
pub fn verify(f: &Func) -> Result<(), String> {
    for (i, inst) in f.insts.iter().enumerate() {
        for &a in &inst.args {
            if a >= i {
                return Err(format!("%{i} uses %{a}, which is not defined before it"));
            }
        }
        let arg = |k: usize| &f.insts[inst.args[k]];
        let want_args = match &inst.prim {
            Prim::Input(_) | Prim::Const(_) => Some(0),
            Prim::Unary(_)
            | Prim::Broadcast(_)
            | Prim::Reshape(_)
            | Prim::Transpose(_)
            | Prim::Slice(_)
            | Prim::Pad { .. }
            | Prim::ReduceSum(_)
            | Prim::ReduceMax(_)
            | Prim::ReduceMin(_)
            | Prim::ReduceProd(_)
            | Prim::Norm2(_)
            | Prim::LogSumExp(_)
            | Prim::Argmax(_)
            | Prim::Argmin(_)
            | Prim::Observe(_) => Some(1),
            Prim::Binary(_) | Prim::MatMul => Some(2),
            Prim::Select => Some(3),
            Prim::Concat(_) | Prim::Gather | Prim::ScatterAdd(_) | Prim::Random { .. } => None,
        };
        if let Some(n) = want_args
            && inst.args.len() != n
        {
            return Err(format!("%{i}: {} operands, expected {n}", inst.args.len()));
        }
        let problem = match &inst.prim {
            Prim::Input(k) => f
                .inputs
                .get(*k)
                .filter(|(_, d, s)| *d == inst.dtype && *s == inst.shape)
                .is_none()
                .then(|| "input type".to_string()),
            Prim::Const(t) => (t.shape() != inst.shape.as_slice()).then(|| "const shape".into()),
            Prim::Unary(_) => (arg(0).shape != inst.shape).then(|| "unary shape".into()),
            Prim::Binary(_) => (arg(0).shape != inst.shape
                || arg(1).shape != inst.shape
                || arg(0).dtype != arg(1).dtype)
                .then(|| "binary operands".into()),
            Prim::Select => (arg(1).shape != inst.shape
                || arg(2).shape != inst.shape
                || arg(0).shape != inst.shape)
                .then(|| "select operands".into()),
            Prim::Broadcast(s) => (crate::ir::types::broadcast(&arg(0).shape, s).as_deref()
                != Some(s.as_slice()))
            .then(|| "broadcast shape".into()),
            Prim::Reshape(s) => (s.iter().product::<usize>()
                != arg(0).shape.iter().product::<usize>())
            .then(|| "reshape size".into()),
            Prim::MatMul => {
                let (a, b) = (&arg(0).shape, &arg(1).shape);
                (a.len() != 2 || b.len() != 2 || a[1] != b[0] || inst.shape != [a[0], b[1]])
                    .then(|| "matmul shapes".into())
            }
            _ => None,
        };
        if let Some(p) = problem {
            return Err(format!("%{i}: {p}"));
        }
    }
    for (n, v) in &f.outputs {
        if *v >= f.insts.len() {
            return Err(format!("output {n} = %{v} is not defined"));
        }
    }
    Ok(())
}

/// Consts of more entries than this have no [`identity`] (comparing them costs more than
/// merging them saves).
const IDENTITY_CONST_LIMIT: usize = 64;

/// A hashable identity of an instruction whose operands are `args`: its op, operands and
/// type; equal for two instructions that compute the same value. `None` for inputs and
/// large consts. `opt::cse` merges by it; `autodiff::softplus` numbers values by it.
pub fn identity(inst: &Inst, args: &[Var]) -> Option<String> {
    match &inst.prim {
        Prim::Input(_) => None,
        Prim::Const(t) if t.len() > IDENTITY_CONST_LIMIT => None,
        prim => Some(format!(
            "{prim:?}|{args:?}|{:?}|{:?}",
            inst.dtype, inst.shape
        )),
    }
}

/// Which of the IR's instructions a matmul reads in place: operand `v` of a `MatMul` is
/// read through the transpose when `v` is a 2-D `transpose[1, 0]` (the source's buffer
/// with swapped strides, never materialized by the JIT). Both backends make this choice
/// and pass the same strides to faer, whose GEMV kernel sums in an order that depends on
/// them.
pub fn matmul_source(f: &Func, v: usize) -> (usize, bool) {
    let inst = &f.insts[v];
    match &inst.prim {
        Prim::Transpose(p) if p.as_slice() == [1, 0] && f.insts[inst.args[0]].shape.len() == 2 => {
            (inst.args[0], true)
        }
        _ => (v, false),
    }
}

/// A `[m,k] @ [k,n]` product as the backends compute it: the buffers it reads
/// ([`matmul_source`]: `a`, `b`, each flagged when it holds the operand's transpose) and
/// its dimensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Product {
    pub a: usize,
    pub a_t: bool,
    pub b: usize,
    pub b_t: bool,
    pub m: usize,
    pub k: usize,
    pub n: usize,
}

/// Instruction `i` as a [`Product`]: a `MatMul` of two 2-D operands (the shapes checked
/// agree, as `verify` requires).
pub fn product(f: &Func, i: usize) -> Option<Product> {
    let inst = &f.insts[i];
    let [x, y] = inst.args[..] else {
        return None;
    };
    let (sx, sy) = (&f.insts[x].shape, &f.insts[y].shape);
    if inst.prim != Prim::MatMul || sx.len() != 2 || sy.len() != 2 || sx[1] != sy[0] {
        return None;
    }
    let ((a, a_t), (b, b_t)) = (matmul_source(f, x), matmul_source(f, y));
    Some(Product {
        a,
        a_t,
        b,
        b_t,
        m: sx[0],
        k: sx[1],
        n: sy[1],
    })
}
