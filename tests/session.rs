//! The `Session` through its API: `traj run` is one stepped to the end (rows streamed to
//! its sink); stepping in pieces gives `traj run`'s trajectory bit for bit; values and
//! gradients at the current params, items added and redefined, consts set, reset, save,
//! and errors that leave the session as it was.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use traj::diag::SourceMap;
use traj::sema::Options;
use traj::sema::check::check_source;
use traj::session::{Session, SessionError};
use traj::tensor::Tensor;
use traj::train::{Backend, RunOptions, Status};

const PROGRAM: &str = "\
const n = 4, lr = 0.1
data A = randn(n, n) / 2 + eye(n)
param w: [n] ~ normal(0, 1)
let r = A @ w - ones(n)
loss = 0.5 * sum(r^2)
train {
  optimizer gd(lr = lr)
  steps 50
  record every 10 { loss, w }
}
";

fn run_of(text: &str, steps: Option<u64>, backend: Backend) -> traj::train::RunResult {
    let mut sources = SourceMap::default();
    let checked =
        check_source("p.traj", None, text, &Options::default(), &mut sources).expect("checks");
    let options = RunOptions {
        steps,
        time: None,
        progress: None,
        backend,
        interrupt: None,
    };
    traj::session::run(&checked, &sources, &options).expect("runs")
}

fn floats(t: &Tensor) -> Vec<f64> {
    t.to_f64().iter().copied().collect()
}

fn session(backend: Backend) -> Session {
    Session::from_text(PROGRAM, backend).expect("loads")
}

fn scalar(s: &Session, expr: &str) -> f64 {
    let (t, _) = s.eval(expr).expect("evaluates");
    floats(&t)[0]
}

#[test]
fn stepping_in_pieces_gives_the_runs_trajectory_bit_for_bit() {
    for backend in [Backend::Jit, Backend::Interp] {
        let whole = run_of(PROGRAM, None, backend);
        let mut s = session(backend);
        assert_eq!(s.step(7, None, None).expect("steps"), None);
        assert_eq!(s.step_count(), 7);
        assert_eq!(s.step(13, None, None).expect("steps"), None);
        assert_eq!(s.step_count(), 20);
        // Past the end: stops at the train block's last step.
        assert_eq!(
            s.step(1000, None, None).expect("steps"),
            Some(Status::Finished)
        );
        assert_eq!(s.step_count(), 50);
        assert_eq!(s.trajectory(), whole.trajectory, "{backend:?}");
        assert_eq!(floats(&s.params()[0].1), floats(&whole.params[0].1));
        // A finished run refuses more steps until reset.
        assert!(s.step(1, None, None).is_err());
        s.reset().expect("resets");
        assert_eq!(s.step_count(), 0);
        assert!(s.trajectory().rows.is_empty());
        assert_eq!(s.run(None, None).expect("runs"), Some(Status::Finished));
        assert_eq!(s.trajectory(), whole.trajectory);
    }
}

#[test]
fn saving_mid_run_writes_what_traj_run_with_steps_writes() {
    let mut s = session(Backend::Jit);
    s.step(25, None, None).expect("steps");
    let dir = std::env::temp_dir().join(format!("traj-session-save-{}", std::process::id()));
    s.save(&dir).expect("saves");
    let partial = run_of(PROGRAM, Some(25), Backend::Jit);
    let expected = dir.join("expected.csv");
    traj::output::write_trajectory_csv(&expected, &partial.trajectory).expect("writes");
    let saved = std::fs::read_to_string(dir.join("trajectory.csv")).expect("saved");
    assert_eq!(saved, std::fs::read_to_string(&expected).expect("written"));
    assert!(saved.lines().last().expect("rows").starts_with("25,"));
    let json = std::fs::read_to_string(dir.join("run.json")).expect("run.json");
    assert!(
        json.contains("\"status\": \"finished\"") && json.contains("\"steps\": 25"),
        "{json}"
    );
    let w: ndarray::ArrayD<f64> = ndarray_npy::read_npy(dir.join("params/w.npy")).expect("w.npy");
    assert_eq!(
        w.iter().copied().collect::<Vec<_>>(),
        floats(&partial.params[0].1)
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn values_and_gradients_are_at_the_current_params() {
    let mut s = session(Backend::Jit);
    s.step(10, None, None).expect("steps");
    let w = floats(&s.params()[0].1);
    assert_eq!(scalar(&s, "sum(w)"), w.iter().sum::<f64>());
    assert_eq!(scalar(&s, "step"), 10.0);
    // `loss` is the recorded loss at this step.
    let recorded = s.trajectory().rows.last().expect("row 10").1[0].expect("loss");
    assert_eq!(scalar(&s, "loss"), recorded);
    let t = s.type_of("A @ w").expect("types");
    assert_eq!(t.describe(), "float [4]  (uses params)");
    assert_eq!(
        s.type_of("n * 2").expect("types").describe(),
        "int [] = 8  (static)"
    );
    // The loss's gradient by `:grad` is the one the update uses, `grad(w)`.
    let (value, grads) = s.grad("loss").expect("gradient");
    assert_eq!(value, recorded);
    assert_eq!(grads[0].0, "w");
    let (g, _) = s.eval("grad(w)").expect("grad(w)");
    assert_eq!(floats(&grads[0].1), floats(&g));
    // d/dw sum(w^2) = 2w.
    let (_, grads) = s.grad("sum(w^2)").expect("gradient");
    let twice: Vec<f64> = w.iter().map(|x| 2.0 * x).collect();
    assert_eq!(floats(&grads[0].1), twice);
    assert!(s.grad("w").is_err(), "a vector has no gradient");
    assert!(s.ir_of("sum(r)").expect("ir").contains("return value = "));
}

#[test]
fn redefining_items_keeps_params_unless_their_definition_changed() {
    let mut s = session(Backend::Jit);
    s.step(10, None, None).expect("steps");
    let w10 = floats(&s.params()[0].1);
    // A new let is in scope for expressions.
    assert_eq!(
        s.define("let s = sum(w)").expect("defines"),
        vec!["s".to_string()]
    );
    assert_eq!(scalar(&s, "s"), w10.iter().sum::<f64>());
    // A new loss: recompiled, the params and step kept.
    s.define("loss = 0.5 * sum(r^2) + 0.1 * sum(w^2)")
        .expect("defines");
    assert_eq!(s.step_count(), 10);
    assert_eq!(floats(&s.params()[0].1), w10);
    let expected = 0.5
        * floats(&s.eval("r").expect("r").0)
            .iter()
            .map(|x| x * x)
            .sum::<f64>()
        + 0.1 * w10.iter().map(|x| x * x).sum::<f64>();
    assert!((scalar(&s, "loss") - expected).abs() < 1e-12);
    // A const in a list redefined: the others stay.
    s.define("const lr = 0.05").expect("defines");
    assert_eq!(scalar(&s, "lr"), 0.05);
    assert_eq!(scalar(&s, "n"), 4.0);
    s.step(5, None, None).expect("steps");
    assert_eq!(s.step_count(), 15);
    // The param itself redefined: back to its (new) initial value.
    s.define("param w: [n] ~ zeros()").expect("defines");
    assert_eq!(floats(&s.params()[0].1), vec![0.0; 4]);
    // The trajectory keeps its rows.
    let steps: Vec<u64> = s.trajectory().rows.iter().map(|r| r.0).collect();
    assert_eq!(steps, vec![0, 10]);
}

#[test]
fn set_overrides_a_const_and_goes_on_from_the_same_params() {
    let mut s = session(Backend::Jit);
    s.step(10, None, None).expect("steps");
    let w10 = floats(&s.params()[0].1);
    s.set("lr", "0.2").expect("sets");
    assert_eq!(floats(&s.params()[0].1), w10);
    assert_eq!(scalar(&s, "lr"), 0.2);
    let g = floats(&s.eval("grad(w)").expect("grad").0);
    s.step(1, None, None).expect("steps");
    let w11: Vec<f64> = w10.iter().zip(&g).map(|(w, g)| w - 0.2 * g).collect();
    assert_eq!(floats(&s.params()[0].1), w11);
    match s.set("nope", "1") {
        Err(SessionError::Diagnostics(d, _)) => assert_eq!(d[0].code, "E0204"),
        other => panic!("expected a diagnostic, got {other:?}"),
    }
    assert_eq!(s.step_count(), 11);
}

#[test]
fn errors_point_into_what_was_typed_and_change_nothing() {
    let mut s = session(Backend::Jit);
    s.step(10, None, None).expect("steps");
    let before = (s.trajectory(), floats(&s.params()[0].1));
    let e = s.eval("A @ ones(3)").expect_err("shapes differ");
    let text = e.render(false);
    assert!(text.contains("<input>:1:1"), "{text}");
    assert!(text.contains("A @ ones(3)"), "{text}");
    let e = s.define("loss = sum(q)").expect_err("undefined name");
    let text = e.render(false);
    assert!(
        text.contains("E0101") && text.contains("<input>:1:12"),
        "{text}"
    );
    let e = s.define("let = 3").expect_err("syntax error");
    assert!(e.render(false).contains("<input>"));
    assert_eq!((s.trajectory(), floats(&s.params()[0].1)), before);
    assert_eq!(s.step_count(), 10);
    s.step(1, None, None).expect("steps on");
}

#[test]
fn an_interrupt_stops_at_a_step_boundary_keeping_everything() {
    let long = PROGRAM
        .replace("steps 50", "steps 1_000_000_000")
        .replace("every 10", "every 500_000_000");
    static STOP: AtomicBool = AtomicBool::new(true);
    for backend in [Backend::Jit, Backend::Interp] {
        let mut s = Session::from_text(&long, backend).expect("loads");
        assert_eq!(
            s.step(1_000_000, None, Some(&STOP)).expect("steps"),
            Some(Status::Interrupted)
        );
        let k = s.step_count();
        assert!(k < 1_000_000, "stopped at {k}");
        // The row where it stopped is recorded in full, as an interrupted run's last row.
        let t = s.trajectory();
        let (last, row) = t.rows.last().expect("a row");
        assert_eq!(*last, k);
        assert!(row.iter().all(|c| c.is_some()), "{row:?}");
        assert_eq!(s.step(3, None, None).expect("steps on"), None);
        assert_eq!(s.step_count(), k + 3);
    }
}

#[test]
fn a_file_session_reloads_and_loads_relative_data() {
    let dir = std::env::temp_dir().join(format!("traj-session-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file: PathBuf = dir.join("p.traj");
    std::fs::write(&file, PROGRAM).expect("writes");
    let mut s = Session::load(&file, Backend::Interp).expect("loads");
    s.step(3, None, None).expect("steps");
    std::fs::write(&file, PROGRAM.replace("lr = 0.1", "lr = 0.3")).expect("writes");
    s.reload().expect("reloads");
    assert_eq!(scalar(&s, "lr"), 0.3);
    assert_eq!(s.step_count(), 3);
    std::fs::remove_dir_all(&dir).ok();
}

/// `x` reaches 0 after one step with lr 1, where `sqrt(x^2)` has no Clarke subgradient;
/// with lr 1e300 the loss overflows after one step.
const KINK: &str = "\
const lr = 1.0
param x: [] = 1
loss = sqrt(x^2)
train {
  optimizer gd(lr = lr)
  steps 10
  record every 1 { x, loss }
}
";

#[test]
fn an_error_while_stepping_is_reported_at_its_operation_and_keeps_the_rows() {
    for backend in [Backend::Jit, Backend::Interp] {
        let run = run_of(KINK, None, backend);
        let mut s = Session::from_text(KINK, backend).expect("loads");
        assert_eq!(s.step(5, None, None).expect("steps"), Some(Status::Error));
        assert_eq!(run.status, Status::Error);
        assert_eq!(s.step_count(), 1);
        assert_eq!(s.trajectory(), run.trajectory, "{backend:?}");
        assert_eq!(s.trajectory().rows, vec![(0, vec![Some(1.0), Some(1.0)])]);
        // The same error as `traj run`'s: its step, and the operation's place.
        let e = run.error.clone().expect("a typed error");
        assert_eq!(e.step, Some(1));
        assert_eq!(e.spans.len(), 1);
        assert_eq!(e.spans[0].1, "`sqrt` at 0");
        assert_eq!(
            s.message(),
            run.message
                .as_deref()
                .map(|m| m.replace("p.traj", "<repl>"))
                .as_deref()
        );
        let report = s.error_report(false).expect("a report");
        assert!(
            report.contains("[E0901] Error: step 1: the gradient is not finite"),
            "{report}"
        );
        assert!(report.contains("─[ <repl>:3:8 ]"), "{report}");
        assert!(report.contains("3 │ loss = sqrt(x^2)"), "{report}");
        // The session is still there: a const changes and it goes on from step 0.
        s.reset().expect("resets");
        assert_eq!(s.step(5, None, None).expect("steps"), Some(Status::Error));
        assert_eq!(s.step_count(), 1);
    }
}

#[test]
fn a_divergence_while_stepping_keeps_the_rows_and_params_up_to_it() {
    let diverging = KINK.replace("lr = 1.0", "lr = 1e300");
    for backend in [Backend::Jit, Backend::Interp] {
        let run = run_of(&diverging, None, backend);
        assert_eq!(run.status, Status::Diverged);
        let mut s = Session::from_text(&diverging, backend).expect("loads");
        assert_eq!(s.run(None, None).expect("runs"), Some(Status::Diverged));
        assert_eq!(s.message(), Some("diverged at step 1: loss = inf"));
        assert_eq!(s.message(), run.message.as_deref());
        assert_eq!(s.error_report(false), None, "a divergence is not an error");
        assert_eq!(s.step_count(), 0, "θ of the last finite step is kept");
        assert_eq!(s.trajectory(), run.trajectory, "{backend:?}");
        assert_eq!(floats(&s.params()[0].1), vec![1.0]);
        assert_eq!(floats(&run.params[0].1), vec![1.0]);
    }
}

#[test]
fn an_error_typed_into_an_item_is_shown_in_what_was_typed() {
    let mut s = Session::from_text(KINK, Backend::Interp).expect("loads");
    s.define("loss = sqrt(x - 1) + x").expect("defines");
    assert_eq!(s.step(1, None, None).expect("steps"), Some(Status::Error));
    let report = s.error_report(false).expect("a report");
    assert!(report.contains("─[ <input>:1:8 ]"), "{report}");
    assert!(report.contains("`sqrt` at 0"), "{report}");
}

#[test]
fn a_typed_item_does_not_read_loaded_files_again_but_reload_does() {
    let dir = std::env::temp_dir().join(format!("traj-session-loaded-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file: PathBuf = dir.join("p.traj");
    let csv = dir.join("v.csv");
    std::fs::write(&csv, "1.0\n2.0\n").expect("writes");
    std::fs::write(
        &file,
        "data v = load(\"v.csv\")\nparam w: [2] = [0.0, 0.0]\nloss = sum((w - v)^2)\ntrain {\n  optimizer gd(lr = 0.1)\n  steps 10\n}\n",
    )
    .expect("writes");
    let mut s = Session::load(&file, Backend::Interp).expect("loads");
    let v = |s: &Session| floats(&s.eval("v").expect("evaluates").0);
    assert_eq!(v(&s), vec![1.0, 2.0]);
    // The file changed on disk: a typed item that does not touch it leaves it unread.
    std::fs::write(&csv, "9.0\n8.50\n").expect("writes");
    s.define("let u = 2 * v").expect("defines");
    assert_eq!(v(&s), vec![1.0, 2.0], "the file was read again");
    assert_eq!(floats(&s.eval("u").expect("evaluates").0), vec![2.0, 4.0]);
    assert!(
        s.statics_evaluated().is_empty(),
        "{:?}",
        s.statics_evaluated()
    );
    // `:reload` reads it (and computes every static value) again.
    s.reload().expect("reloads");
    assert_eq!(v(&s), vec![9.0, 8.5]);
    assert_eq!(s.statics_evaluated(), ["init:w", "v"]);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_typed_item_keeps_the_static_values_that_do_not_depend_on_it() {
    let mut s = session(Backend::Jit);
    assert_eq!(s.statics_evaluated(), ["A", "init:w"]);
    let a0 = floats(&s.eval("A").expect("A").0);
    s.step(10, None, None).expect("steps");
    let w10 = floats(&s.params()[0].1);
    // Unrelated items: nothing drawn again, the params where the run left them.
    s.define("let s = sum(w)").expect("defines");
    s.define("const c = 3").expect("defines");
    assert!(
        s.statics_evaluated().is_empty(),
        "{:?}",
        s.statics_evaluated()
    );
    assert_eq!(floats(&s.eval("A").expect("A").0), a0);
    assert_eq!(floats(&s.params()[0].1), w10);
    // `A` redefined: it alone is drawn again; `w` keeps its value (its definition is
    // unchanged, and its initial value is kept too).
    s.define("data A = randn(n, n) / 4 + eye(n)")
        .expect("defines");
    assert_eq!(s.statics_evaluated(), ["A"]);
    let a1 = floats(&s.eval("A").expect("A").0);
    for ((x0, x1), i) in a0.iter().zip(&a1).zip(0..) {
        let eye = if i % 5 == 0 { 1.0 } else { 0.0 };
        // The same draw at half the scale: (x0 − eye)·2 = (x1 − eye)·4.
        assert!(
            ((x0 - eye) * 2.0 - (x1 - eye) * 4.0).abs() < 1e-12,
            "{x0} {x1}"
        );
    }
    assert_eq!(floats(&s.params()[0].1), w10);
    // A const the data depends on: `A` and `w` (shape `[n]`) computed again.
    s.set("n", "3").expect("sets");
    assert_eq!(s.statics_evaluated(), ["A", "init:w"]);
    assert_eq!(s.eval("A").expect("A").0.shape(), [3, 3]);
}

/// A sink that logs what it is handed.
#[derive(Default)]
struct Log {
    columns: Vec<Vec<String>>,
    rows: Vec<(u64, Vec<Option<f64>>)>,
    ticks: u64,
}

impl traj::output::Rows for Log {
    fn start(&mut self, columns: &[String]) -> Result<(), String> {
        self.columns.push(columns.to_vec());
        Ok(())
    }
    fn push(&mut self, step: u64, row: Vec<Option<f64>>) -> Result<(), String> {
        self.rows.push((step, row));
        Ok(())
    }
    fn tick(&mut self) -> Result<(), String> {
        self.ticks += 1;
        Ok(())
    }
}

#[test]
fn a_run_is_a_session_stepped_to_the_end_its_rows_streamed_to_the_sink() {
    for backend in [Backend::Jit, Backend::Interp] {
        let mut sources = SourceMap::default();
        let checked = check_source("p.traj", None, PROGRAM, &Options::default(), &mut sources)
            .expect("checks");
        let options = RunOptions {
            steps: Some(30),
            backend,
            ..RunOptions::default()
        };
        let mut log = Log::default();
        let r = traj::session::run_with(&checked, &sources, &options, &mut log).expect("runs");
        assert_eq!(r.status, Status::Finished);
        assert_eq!(r.steps, 30);
        // The rows went to the sink, not into the result.
        assert!(r.trajectory.rows.is_empty());
        assert_eq!(log.columns, vec![r.trajectory.columns.clone()]);
        let steps: Vec<u64> = log.rows.iter().map(|(k, _)| *k).collect();
        assert_eq!(steps, vec![0, 10, 20, 30], "{backend:?}");
        assert_eq!(r.last_step, Some(30));
        // The same rows and params as a REPL session stepped to step 30.
        let mut s = session(backend);
        s.step(30, None, None).expect("steps");
        assert_eq!(log.rows, s.trajectory().rows, "{backend:?}");
        assert_eq!(floats(&r.params[0].1), floats(&s.params()[0].1));
        let (_, last_row) = log.rows.last().expect("rows");
        let loss = r.last.iter().find(|(c, _)| c == "loss").expect("loss").1;
        assert_eq!(Some(loss), last_row[0]);
        if backend == Backend::Interp {
            // Called between steps: after each of steps 0..29.
            assert_eq!(log.ticks, 30);
        }
    }
}

/// The previous θ a session keeps after the JIT's loop hands back a step whose NaN
/// gradient it found only through θ's new value (the step undone after its update) is
/// the interpreter's: a redefined loss that diverges at that step goes back to it.
#[test]
fn the_previous_theta_after_a_step_handed_back_is_the_interpreters() {
    const NAN_AT_A_STEP: &str = "\
data X = [[1.0, 2.0], [0.5, 1.5], [2.0, 0.25], [0.0, 0.0], [1.0, 1.0], [3.0, 0.5]]
param w: [2] = [1.0, 2.0]
batch xb from X size 1
loss = mean(sqrt(w * xb[0]))
train {
  optimizer sgd(lr = 0.01)
  steps 200
  record every 50 { loss, w }
}
";
    let go = |backend| {
        let mut s = Session::from_text(NAN_AT_A_STEP, backend).expect("builds");
        let first = s.step(200, None, None).expect("steps");
        let at_error = s.step_count();
        // Infinite where the zero row is drawn, as at the step that failed.
        s.define("loss = 1 / mean(w * xb[0])").expect("redefines");
        let second = s.step(200, None, None).expect("steps");
        let params: Vec<Vec<u64>> = s
            .params()
            .iter()
            .map(|(_, t)| floats(t).iter().map(|x| x.to_bits()).collect())
            .collect();
        let rows: Vec<(u64, Vec<Option<u64>>)> = s
            .trajectory()
            .rows
            .iter()
            .map(|(k, row)| (*k, row.iter().map(|x| x.map(f64::to_bits)).collect()))
            .collect();
        (first, at_error, second, s.step_count(), params, rows)
    };
    let interp = go(Backend::Interp);
    let jit = go(Backend::Jit);
    assert_eq!(interp.0, Some(Status::Error));
    assert_eq!(interp.2, Some(Status::Diverged));
    assert!(interp.1 > 1, "the error at step {}", interp.1);
    // Diverged at the failing step: the params go back one step, to its recorded row.
    assert_eq!(interp.3, interp.1 - 1);
    let (last_step, last_row) = interp.5.last().expect("a row").clone();
    assert_eq!(last_step, interp.3);
    let w_row: Vec<u64> = last_row[1..].iter().map(|x| x.expect("w")).collect();
    assert_eq!(interp.4, vec![w_row]);
    assert_eq!(jit, interp);
}
