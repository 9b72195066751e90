//! Builds the IR functions a run needs from a checked program: the loss and its gradient
//! (a fast variant that counts exact ties, and the Kakade–Lee variant along a direction),
//! each param's optimizer update and state initialization, the record and stop
//! functions, and the Hessian-vector product behind `sharpness`.

use crate::error::RunError;
use std::collections::HashMap;

use crate::autodiff::{Ties, grad_into, jvp_into, ties_into};
use crate::ir::types::{DType, Shape};
use crate::ir::{Binary, Func, Var, verify};
use crate::lower::{Lowerer, NoiseSite, Statics};
use crate::sema::Checked;
use crate::sema::modules::SymKind;
use crate::syntax::ast::*;

#[derive(Clone, Debug)]
pub struct ParamInfo {
    pub name: String,
    pub shape: Shape,
}

/// One param's optimizer: `init` maps the param to its states, `step` maps
/// (param, grad, t, loss, gnorm, states...) to (param, states...).
#[derive(Clone, Debug)]
pub struct Update {
    pub init: Func,
    pub step: Func,
    pub n_states: usize,
}

#[derive(Clone, Debug)]
pub struct RecordColumn {
    pub name: String,
    pub shape: Shape,
    /// Index of the record clause it belongs to.
    pub clause: usize,
}

#[derive(Clone, Debug)]
pub struct RecordClause {
    pub every: Option<u64>,
    pub log_count: Option<u64>,
}

/// Everything a backend runs.
#[derive(Clone, Debug)]
pub struct Plan {
    pub params: Vec<ParamInfo>,
    /// Inputs: params, step. Outputs: loss, grad:P..., ties.
    pub grad_fast: Func,
    /// `grad_fast` for steps that record nothing, when its loss-only work is worth
    /// sparing (`opt::quiet`): output `bounded` (1.0: the loss is finite) for the loss.
    pub grad_quiet: Option<Func>,
    /// Inputs: params, step, dir:P... Outputs: loss, grad:P..., unresolved, ray_loss.
    pub grad_ray: Func,
    /// `None`: the param is frozen (`optimizer none`).
    pub updates: Vec<Option<Update>>,
    /// Inputs: params, step, grad:P..., loss, gnorm, sharpness, and a flow's time `t`.
    /// Outputs: one per column.
    pub record: Func,
    pub columns: Vec<RecordColumn>,
    pub clauses: Vec<RecordClause>,
    /// Same inputs as `record`; output `stop`.
    pub stop: Option<Func>,
    /// The stop condition uses observables other than gnorm and step: test it only at
    /// record steps.
    pub stop_at_records_only: bool,
    /// The Hessian-vector product (only built when a record uses `sharpness`).
    pub hvp: Option<Hvp>,
    pub steps: u64,
    pub nparams: usize,
    /// A gradient flow's settings (`optimizer flow`): no updates, no `steps`.
    pub flow: Option<FlowSpec>,
}

/// Whether the program has a train block (in its main file).
pub fn has_train(checked: &Checked) -> bool {
    train_item(checked).is_some()
}

fn train_item(checked: &Checked) -> Option<&TrainItem> {
    checked.program.items.iter().find_map(|i| match i {
        Item::Train(t) if t.span.file == checked.program.main_file => Some(t),
        _ => None,
    })
}

pub fn params_of(checked: &Checked) -> Vec<ParamInfo> {
    let mut ps: Vec<(crate::diag::Span, ParamInfo)> = checked
        .names
        .iter()
        .filter(|(_, k, _)| *k == SymKind::Param)
        .map(|(n, _, v)| {
            let span = checked
                .program
                .symbols
                .get(n)
                .map(|s| s.span)
                .unwrap_or_default();
            (
                span,
                ParamInfo {
                    name: n.clone(),
                    shape: v.shape.clone(),
                },
            )
        })
        .collect();
    ps.sort_by_key(|(s, _)| *s);
    ps.into_iter().map(|(_, p)| p).collect()
}

/// One input `dir:P` per param: a direction in parameter space.
fn direction_inputs(l: &mut Lowerer, params: &[ParamInfo]) -> Vec<Var> {
    params
        .iter()
        .map(|p| {
            l.b.input(&format!("dir:{}", p.name), DType::Float, p.shape.clone())
        })
        .collect()
}

/// Outputs `loss` and `grad:P` for each param, in order.
fn output_gradient(l: &mut Lowerer, loss: Var, params: &[ParamInfo], grads: &[Var]) {
    l.b.output("loss", loss);
    for (p, g) in params.iter().zip(grads) {
        l.b.output(&format!("grad:{}", p.name), *g);
    }
}

/// Verifies a built function, then simplifies it (`opt::run` verifies after each pass).
fn checked_func(f: Func, what: &str) -> Result<Func, RunError> {
    verify(&f).map_err(|e| {
        format!(
            "internal error: {what} IR does not verify: {e}\n{}",
            crate::ir::print(&f)
        )
    })?;
    Ok(crate::opt::run(&f)?)
}

/// The plan's fast gradient: verified and simplified, then its piece masks read the
/// pieces (`opt::untied_masks`: its values are used only where no entry ties).
pub fn fast_gradient(f: Func) -> Result<Func, RunError> {
    let f = crate::opt::untied_masks(&checked_func(f, "gradient")?);
    verify(&f)
        .map_err(|e| format!("internal error: IR after `untied_masks` does not verify: {e}"))?;
    Ok(f)
}

/// `opt::quiet`'s variant of a simplified gradient function, simplified in turn.
pub fn quiet_gradient(grad: &Func) -> Result<Option<Func>, RunError> {
    crate::opt::quiet::quiet(grad)
        .map(|f| checked_func(f, "quiet gradient"))
        .transpose()
}

/// The loss with its gradient by reverse mode and its tie count (outputs `loss,
/// grad:P..., ties`), before simplification: what `traj ir --stage grad` prints and
/// `fast_gradient` makes the plan's fast gradient of.
pub fn gradient_func(
    checked: &Checked,
    statics: &Statics,
    params: &[ParamInfo],
) -> Result<Func, RunError> {
    let (mut l, pv, _) = with_params(checked, statics, params);
    let loss = loss_var(&mut l, checked)?;
    let grads = grad_into(&mut l.b, loss, &pv, &Ties::Default)?;
    let ties = ties_into(&mut l.b, loss, &pv);
    output_gradient(&mut l, loss, params, &grads);
    l.b.output("ties", ties);
    Ok(l.b.finish())
}

/// A Lowerer whose params and step are inputs.
pub fn with_params<'a>(
    checked: &'a Checked,
    statics: &'a Statics,
    params: &[ParamInfo],
) -> (Lowerer<'a>, Vec<Var>, Var) {
    let mut l = Lowerer::new(&checked.program, statics);
    let vars: Vec<Var> = params
        .iter()
        .map(|p| {
            let v = l.b.input(&p.name, DType::Float, p.shape.clone());
            l.bound.insert(p.name.clone(), v);
            v
        })
        .collect();
    let step = l.b.input("step", DType::Int, vec![]);
    l.step = Some(step);
    (l, vars, step)
}

pub fn loss_var(l: &mut Lowerer, checked: &Checked) -> Result<Var, RunError> {
    let loss = checked.program.items.iter().find_map(|i| match i {
        Item::Loss(l) => Some(l),
        _ => None,
    });
    let loss = loss.ok_or("the program has no loss")?;
    let v = l.item_expr(&loss.value, "loss")?;
    Ok(l.b.to_float(v))
}

/// The plan around the simplified gradient and its quiet variant (`pipeline`'s optimized
/// stage).
pub fn build(
    checked: &Checked,
    statics: &Statics,
    grad_fast: Func,
    grad_quiet: Option<Func>,
    steps_override: Option<u64>,
) -> Result<Plan, RunError> {
    let params = params_of(checked);
    let nparams: usize = params
        .iter()
        .map(|p| p.shape.iter().product::<usize>())
        .sum();

    // Loss and gradient along a direction (Kakade & Lee).
    let (mut l, pv, _) = with_params(checked, statics, &params);
    let dirs = direction_inputs(&mut l, &params);
    let loss = loss_var(&mut l, checked)?;
    let end = l.b.func.insts.len();
    let seeds: Vec<(Var, Var)> = pv.iter().copied().zip(dirs.iter().copied()).collect();
    let d = jvp_into(&mut l.b, end, &seeds, true);
    let grads = grad_into(&mut l.b, loss, &pv, &Ties::Directional(&d))?;
    output_gradient(&mut l, loss, &params, &grads);
    let unresolved = match d.unresolved {
        Some(u) => u,
        None => l.b.scalar(0.0),
    };
    l.b.output("unresolved", unresolved);
    let ray_loss = d.ray.get(&loss).copied().unwrap_or(loss);
    l.b.output("ray_loss", ray_loss);
    let grad_ray = checked_func(l.b.finish(), "directional gradient")?;

    let train = train_item(checked).ok_or("the program has no train block")?;
    let flow = flow_spec(checked, statics, train)?;
    let updates = match flow {
        Some(_) => vec![None; params.len()],
        None => build_updates(checked, statics, &params, train, nparams)?,
    };
    let (record, columns, clauses, uses_sharpness) =
        build_record(checked, statics, &params, train)?;
    let (stop, stop_at_records_only) = build_stop(checked, statics, &params, train)?;
    let hvp = if uses_sharpness {
        Some(build_hvp(checked, statics, &params)?)
    } else {
        None
    };

    let mut steps = None;
    for c in &train.clauses {
        if let Clause::Steps(e, _) = c {
            let mut l = Lowerer::new(&checked.program, statics);
            steps = Some(l.known_int(e)? as u64);
        }
    }
    let steps = steps_override.or(steps).unwrap_or(0);
    Ok(Plan {
        params,
        grad_fast,
        grad_quiet,
        grad_ray,
        updates,
        record,
        columns,
        clauses,
        stop,
        stop_at_records_only,
        hvp,
        steps,
        nparams,
        flow,
    })
}

fn build_updates(
    checked: &Checked,
    statics: &Statics,
    params: &[ParamInfo],
    train: &TrainItem,
    nparams: usize,
) -> Result<Vec<Option<Update>>, RunError> {
    // The rule of each param: its `for` clause, else the default.
    let mut rule_of: HashMap<&str, &TrainOptimizer> = HashMap::new();
    let mut default = None;
    for c in &train.clauses {
        if let Clause::Optimizer(o) = c {
            if o.targets.is_empty() {
                default = Some(o);
            }
            for t in &o.targets {
                rule_of.insert(&t.name, o);
            }
        }
    }
    let mut out = Vec::new();
    for p in params {
        let Some(o) = rule_of.get(p.name.as_str()).copied().or(default) else {
            return Err(format!("param `{}` has no rule", p.name).into());
        };
        if o.rule.name == "none" {
            out.push(None);
            continue;
        }
        let Some(sym) = checked.program.lookup(&o.rule.name) else {
            return Err(format!("no optimizer `{}`", o.rule.name).into());
        };
        let Item::Optimizer(rule) = &checked.program.items[sym.item] else {
            return Err(format!("`{}` is not an optimizer", o.rule.name).into());
        };
        out.push(Some(build_update(checked, statics, p, o, rule, nparams)?));
    }
    Ok(out)
}

/// Binds an optimizer's hyperparameters (from the train clause, else their defaults),
/// lowered with `t`, `loss`, `gnorm` and `nparams` bound.
fn bind_hypers(l: &mut Lowerer, o: &TrainOptimizer, rule: &OptimizerItem) -> Result<(), RunError> {
    let names: Vec<&str> = rule.params.iter().map(|p| p.name.name.as_str()).collect();
    let args: Vec<&Arg> = o.args.iter().collect();
    let (slots, problems) = crate::sema::bind::bind(&names, &args);
    if !problems.is_empty() {
        return Err("hyperparameters the checker refuses".into());
    }
    for (p, slot) in rule.params.iter().zip(slots) {
        let e = slot
            .map(|k| &args[k].value)
            .or(p.default.as_ref())
            .ok_or_else(|| format!("missing `{}`", p.name.name))?;
        let var = l.expr(e)?;
        l.bound.insert(p.name.name.clone(), var);
    }
    Ok(())
}

fn build_update(
    checked: &Checked,
    statics: &Statics,
    p: &ParamInfo,
    o: &TrainOptimizer,
    rule: &OptimizerItem,
    nparams: usize,
) -> Result<Update, RunError> {
    let states: Vec<&Def> = rule
        .body
        .iter()
        .filter_map(|s| match s {
            OptStmt::State(d) => Some(d),
            _ => None,
        })
        .collect();
    // Shared bindings: hyperparameters at step 0 for the init, at step t for updates.
    let common = |l: &mut Lowerer, t: Var, loss: Var, gnorm: Var| -> Result<(), RunError> {
        l.bound.insert("t".into(), t);
        l.bound.insert("loss".into(), loss);
        l.bound.insert("gnorm".into(), gnorm);
        let n = l.b.int_scalar(nparams as i64);
        l.bound.insert("nparams".into(), n);
        bind_hypers(l, o, rule)
    };

    // State initialization: `zeros`/`ones` alone are shaped as the param.
    let mut l = Lowerer::new(&checked.program, statics);
    let param = l.b.input("param", DType::Float, p.shape.clone());
    l.bound.insert("param".into(), param);
    let (t0, z) = (l.b.int_scalar(0), l.b.scalar(0.0));
    common(&mut l, t0, z, z)?;
    for (name, c) in [("zeros", 0.0), ("ones", 1.0)] {
        let v = l.b.scalar(c);
        let v = l.b.broadcast(v, &p.shape);
        l.bound.insert(name.into(), v);
    }
    for d in &states {
        let v = l.expr(&d.value)?;
        let v = l.b.to_float(v);
        let v = l.b.broadcast(v, &p.shape);
        l.b.output(&d.name.name, v);
    }
    let init = checked_func(l.b.finish(), "optimizer state initialization")?;

    // One update.
    let mut l = Lowerer::new(&checked.program, statics);
    let param = l.b.input("param", DType::Float, p.shape.clone());
    let grad = l.b.input("grad", DType::Float, p.shape.clone());
    let t = l.b.input("t", DType::Int, vec![]);
    let loss = l.b.input("loss", DType::Float, vec![]);
    let gnorm = l.b.input("gnorm", DType::Float, vec![]);
    l.bound.insert("param".into(), param);
    l.bound.insert("grad".into(), grad);
    common(&mut l, t, loss, gnorm)?;
    for d in &states {
        let v = l.b.input(&d.name.name, DType::Float, p.shape.clone());
        l.bound.insert(d.name.name.clone(), v);
    }
    l.noise = Some(NoiseSite {
        param: p.name.clone(),
        shape: p.shape.clone(),
        step: t,
        count: 0,
    });
    let mut current = param;
    for s in &rule.body {
        match s {
            OptStmt::State(_) => {}
            OptStmt::Let(d) | OptStmt::Assign(d) => {
                let v = l.expr(&d.value)?;
                let v = l.b.to_float(v);
                let v = if matches!(s, OptStmt::Assign(_)) {
                    l.b.broadcast(v, &p.shape)
                } else {
                    v
                };
                l.bound.insert(d.name.name.clone(), v);
            }
            OptStmt::Param { op, value, .. } => {
                let v = l.expr(value)?;
                let v = l.b.to_float(v);
                current = match op {
                    UpdateOp::Set => v,
                    UpdateOp::Sub => l.b.binary(Binary::Sub, current, v),
                    UpdateOp::Add => l.b.binary(Binary::Add, current, v),
                };
                current = l.b.broadcast(current, &p.shape);
                l.bound.insert("param".into(), current);
            }
        }
    }
    l.b.output("param", current);
    for d in &states {
        let v = l.bound[&d.name.name];
        l.b.output(&d.name.name, v);
    }
    let step = checked_func(l.b.finish(), "optimizer update")?;
    Ok(Update {
        init,
        step,
        n_states: states.len(),
    })
}

/// A Lowerer with the record/stop inputs bound; a flow's (`flow`) end with its time `t`,
/// bound as `t` unless the program defines its own `t`.
fn record_inputs<'a>(
    checked: &'a Checked,
    statics: &'a Statics,
    params: &[ParamInfo],
    flow: bool,
) -> Lowerer<'a> {
    let (mut l, _, _) = with_params(checked, statics, params);
    for p in params {
        let g =
            l.b.input(&format!("grad:{}", p.name), DType::Float, p.shape.clone());
        l.bound.insert(format!("grad:{}", p.name), g);
    }
    for n in ["loss", "gnorm", "sharpness"] {
        let v = l.b.input(n, DType::Float, vec![]);
        l.bound.insert(n.into(), v);
    }
    if flow {
        let t = l.b.input("t", DType::Float, vec![]);
        if checked.program.lookup("t").is_none() {
            l.bound.insert("t".into(), t);
        }
    }
    l
}

type RecordParts = (Func, Vec<RecordColumn>, Vec<RecordClause>, bool);

fn build_record(
    checked: &Checked,
    statics: &Statics,
    params: &[ParamInfo],
    train: &TrainItem,
) -> Result<RecordParts, RunError> {
    let flow = crate::sema::check::flow::is_flow(train);
    let mut l = record_inputs(checked, statics, params, flow);
    let mut columns = Vec::new();
    let mut clauses = Vec::new();
    let mut uses_sharpness = false;
    for c in &train.clauses {
        let Clause::Record(r) = c else { continue };
        // A flow's record times are `flow::spec`'s.
        let count = match flow {
            true => 0,
            false => l.known_int(&r.count)? as u64,
        };
        clauses.push(match r.kind {
            RecordKind::Every => RecordClause {
                every: Some(count),
                log_count: None,
            },
            RecordKind::Log => RecordClause {
                every: None,
                log_count: Some(count),
            },
        });
        for e in &r.entries {
            uses_sharpness |= mentions(&e.value, "sharpness");
            let v = l.expr(&e.value)?;
            let v = l.b.to_float(v);
            columns.push(RecordColumn {
                name: e.name.clone(),
                shape: l.b.shape(v),
                clause: clauses.len() - 1,
            });
            l.b.output(&e.name, v);
        }
    }
    Ok((
        checked_func(l.b.finish(), "record")?,
        columns,
        clauses,
        uses_sharpness,
    ))
}

fn build_stop(
    checked: &Checked,
    statics: &Statics,
    params: &[ParamInfo],
    train: &TrainItem,
) -> Result<(Option<Func>, bool), RunError> {
    let Some(cond) = train.clauses.iter().find_map(|c| match c {
        Clause::StopWhen(e, _) => Some(e),
        _ => None,
    }) else {
        return Ok((None, false));
    };
    let flow = crate::sema::check::flow::is_flow(train);
    let mut l = record_inputs(checked, statics, params, flow);
    let v = l.expr(cond)?;
    let v = l.b.to_float(v);
    l.b.output("stop", v);
    // Whether the test uses an observable (a builtin of that class, or `sharpness`).
    use crate::sema::builtins::{Builtin, Class};
    let heavy = Builtin::all()
        .filter(|b| b.row().sig.class == Class::Observable)
        .map(Builtin::name)
        .chain(["sharpness"])
        .any(|n| mentions(cond, n));
    Ok((Some(checked_func(l.b.finish(), "stop")?), heavy))
}

/// A value typed in a REPL session, lowered as a record entry is (its inputs are the
/// record function's: params, step, grad:P..., loss, gnorm, sharpness, a flow's t); output
/// `value`.
pub fn build_probe(checked: &Checked, statics: &Statics, e: &Expr) -> Result<Func, RunError> {
    let params = params_of(checked);
    let flow = train_item(checked).is_some_and(crate::sema::check::flow::is_flow);
    let mut l = record_inputs(checked, statics, &params, flow);
    let v = l.item_expr(e, "probe")?;
    l.b.output("value", v);
    checked_func(l.b.finish(), "value")
}

/// A scalar value typed in a REPL session and its gradient with respect to every param
/// by reverse mode (inputs: params, step; outputs `value`, `grad:P`...); `loss` is the
/// loss item, so `:grad loss` is the loss's gradient.
pub fn build_probe_gradient(
    checked: &Checked,
    statics: &Statics,
    e: &Expr,
) -> Result<Func, RunError> {
    let params = params_of(checked);
    let (mut l, pv, _) = with_params(checked, statics, &params);
    let v = l.item_expr(e, "probe")?;
    if !l.b.shape(v).is_empty() {
        return Err("`:grad` needs a scalar".into());
    }
    let v = l.b.to_float(v);
    let grads = grad_into(&mut l.b, v, &pv, &Ties::Default)?;
    l.b.output("value", v);
    for (p, g) in params.iter().zip(&grads) {
        l.b.output(&format!("grad:{}", p.name), *g);
    }
    checked_func(l.b.finish(), "gradient")
}

/// The Hessian-vector product as two functions, so that Lanczos, which applies it to many
/// directions at one point, computes what does not depend on the direction once.
#[derive(Clone, Debug)]
pub struct Hvp {
    /// Inputs: params, step. Outputs: `saved:N`, the values `apply` reads, each
    /// computed by the instruction it was in the whole function.
    pub at: Func,
    /// Inputs: params, step, dir:P..., then `at`'s outputs. Outputs: hvp:P...
    pub apply: Func,
}

/// `f` cut in two: the instructions that do not depend on its inputs from `varying` on (a
/// function of the earlier inputs), and the rest, which takes every input of `f` and then
/// the first part's values it reads. Inputs, constants and views the second part reads are
/// defined again there rather than passed; every other instruction is in exactly one part,
/// unchanged, so each value is what `f` computes, on either backend.
pub fn split_at_input(f: &Func, varying: usize) -> (Func, Func) {
    use crate::ir::{Inst, Prim};
    let n = f.insts.len();
    let mut depends = vec![false; n];
    for (i, inst) in f.insts.iter().enumerate() {
        depends[i] = match inst.prim {
            Prim::Input(k) => k >= varying,
            _ => inst.args.iter().any(|a| depends[*a]),
        };
    }
    // Defined again in the second part where it reads them: inputs, constants and views
    // (a reshape, transpose, broadcast or slice of a first-part value), so that the second part
    // reads a view where `f` did (a transpose as a product's operand, a broadcast inside a
    // loop) and receives only the value under it.
    let again = |i: usize| {
        matches!(
            f.insts[i].prim,
            Prim::Input(_)
                | Prim::Const(_)
                | Prim::Reshape(_)
                | Prim::Transpose(_)
                | Prim::Broadcast(_)
                | Prim::Slice(_)
        )
    };
    // Which instructions the second part holds, and the first part's values it reads.
    let mut second_has = depends.clone();
    let mut saved = vec![false; n];
    for (_, v) in &f.outputs {
        second_has[*v] |= again(*v);
        saved[*v] = !second_has[*v];
    }
    for i in (0..n).rev() {
        if !second_has[i] {
            continue;
        }
        for &a in &f.insts[i].args {
            if !depends[a] {
                second_has[a] |= again(a);
                saved[a] |= !again(a);
            }
        }
    }
    // The first part: what the saved values need.
    let mut first_has = saved.clone();
    for i in (0..n).rev() {
        if first_has[i] {
            f.insts[i].args.iter().for_each(|a| first_has[*a] = true);
        }
    }
    let mut first = Func {
        inputs: f.inputs[..varying].to_vec(),
        f32: f.f32,
        ..Func::default()
    };
    let mut first_var = vec![usize::MAX; n];
    for (i, inst) in f.insts.iter().enumerate() {
        if first_has[i] {
            first_var[i] = first.insts.len();
            first.insts.push(Inst {
                args: inst.args.iter().map(|a| first_var[*a]).collect(),
                ..inst.clone()
            });
        }
    }
    let mut second = Func {
        inputs: f.inputs.clone(),
        f32: f.f32,
        ..Func::default()
    };
    let mut second_var = vec![usize::MAX; n];
    for (i, inst) in f.insts.iter().enumerate() {
        if saved[i] {
            let k = second.inputs.len();
            let name = format!("saved:{}", first.outputs.len());
            first.outputs.push((name.clone(), first_var[i]));
            second.inputs.push((name, inst.dtype, inst.shape.clone()));
            second_var[i] = second.insts.len();
            second.insts.push(Inst {
                prim: Prim::Input(k),
                args: vec![],
                ..inst.clone()
            });
        }
    }
    for (i, inst) in f.insts.iter().enumerate() {
        if second_has[i] {
            second_var[i] = second.insts.len();
            second.insts.push(Inst {
                args: inst.args.iter().map(|a| second_var[*a]).collect(),
                ..inst.clone()
            });
        }
    }
    second.outputs = f
        .outputs
        .iter()
        .map(|(name, v)| (name.clone(), second_var[*v]))
        .collect();
    (first, second)
}

fn build_hvp(checked: &Checked, statics: &Statics, params: &[ParamInfo]) -> Result<Hvp, RunError> {
    let (mut l, pv, _) = with_params(checked, statics, params);
    let dirs = direction_inputs(&mut l, params);
    let loss = loss_var(&mut l, checked)?;
    let grads = grad_into(&mut l.b, loss, &pv, &Ties::Default)?;
    let end = l.b.func.insts.len();
    let seeds: Vec<(Var, Var)> = pv.iter().copied().zip(dirs.iter().copied()).collect();
    let d = jvp_into(&mut l.b, end, &seeds, false);
    for (p, g) in params.iter().zip(&grads) {
        let hv = match d.tangent.get(g) {
            Some(t) => *t,
            None => l.b.fill_like(*g, 0.0),
        };
        l.b.output(&format!("hvp:{}", p.name), hv);
    }
    let whole = checked_func(l.b.finish(), "Hessian-vector product")?;
    // Inputs: params, step, then the directions.
    let (at, apply) = split_at_input(&whole, params.len() + 1);
    for (f, what) in [
        (&at, "Hessian-vector product's fixed part"),
        (&apply, "Hessian-vector product's rest"),
    ] {
        verify(f).map_err(|e| {
            format!(
                "internal error: {what} IR does not verify: {e}\n{}",
                crate::ir::print(f)
            )
        })?;
    }
    Ok(Hvp { at, apply })
}

/// Whether `e` names `what` anywhere (as a name or a call).
fn mentions(e: &Expr, what: &str) -> bool {
    let here = match &e.kind {
        ExprKind::Name(n) => n == what,
        ExprKind::Call { callee, .. } => callee.name == what,
        _ => false,
    };
    let mut found = here;
    crate::sema::check::for_each_child(e, |c| found |= mentions(c, what));
    found
}

/// A flow's settings, from its train block (and `--time`).
#[derive(Clone, Debug, PartialEq)]
pub struct FlowSpec {
    pub rtol: f64,
    pub atol: f64,
    /// `time T`: the flow runs from t = 0 to T.
    pub time: f64,
    /// When each `record` clause is due, in the plan's clause order.
    pub records: Vec<TimeClause>,
}

/// When a `record` clause of a flow is due.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TimeClause {
    /// `record every Δ`: at t = 0, Δ, 2Δ, ... up to T (each `i·Δ`, not a running sum).
    Every(f64),
    /// `record log N`: at t = 0 and at N times spaced geometrically over the last three
    /// decades of the run, `T·10^(−3(N−1−i)/(N−1))` for i < N (N = 1: at T).
    Log(u64),
}

/// The flow's settings when the train block is a flow (`optimizer flow`), else `None`.
pub fn flow_spec(
    checked: &Checked,
    statics: &Statics,
    train: &TrainItem,
) -> Result<Option<FlowSpec>, RunError> {
    let Some(rule) = train.clauses.iter().find_map(|c| match c {
        Clause::Optimizer(o) if o.rule.name == crate::sema::check::flow::FLOW => Some(o),
        _ => None,
    }) else {
        return Ok(None);
    };
    let mut l = Lowerer::new(&checked.program, statics);
    // `flow`'s arguments by the checker's binding rule (`sema::bind`), else the defaults.
    let params = crate::sema::check::flow::FLOW_ARGS;
    let names: Vec<&str> = params.iter().map(|(n, _)| *n).collect();
    let args: Vec<&Arg> = rule.args.iter().collect();
    let (slots, problems) = crate::sema::bind::bind(&names, &args);
    if !problems.is_empty() {
        return Err("arguments of `flow` the checker refuses".into());
    }
    let mut values = Vec::with_capacity(params.len());
    for ((_, default), slot) in params.iter().zip(slots) {
        values.push(match slot {
            Some(k) => l.known_f64(&args[k].value)?,
            None => *default,
        });
    }
    let mut time = 0.0;
    let mut records = Vec::new();
    for c in &train.clauses {
        match c {
            Clause::Time(e, _) => time = l.known_f64(e)?,
            Clause::Record(r) => records.push(match r.kind {
                RecordKind::Every => TimeClause::Every(l.known_f64(&r.count)?),
                RecordKind::Log => TimeClause::Log(l.known_int(&r.count)?.max(1) as u64),
            }),
            _ => {}
        }
    }
    Ok(Some(FlowSpec {
        rtol: values[0],
        atol: values[1],
        time,
        records,
    }))
}
