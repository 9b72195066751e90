//! `traj plot`: PNG and SVG files of the expected size holding the legend entries, axis labels
//! and title asked for; seeds drawn as bands; `--against`; every error a message; and
//! `sweep_summary.csv` checked against the points' own run folders.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn traj(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_traj"))
        .args(args)
        .output()
        .expect("traj runs")
}

/// A fresh folder for one test.
fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("traj-plot-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf8 path")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs `traj` and asserts it succeeded.
fn ok(args: &[&str]) -> Output {
    let o = traj(args);
    assert_eq!(o.status.code(), Some(0), "traj {args:?}: {}", stderr(&o));
    o
}

/// Runs `traj plot` and returns its error message, asserting it failed with exit code 1.
fn plot_error(args: &[&str]) -> String {
    let mut all = vec!["plot"];
    all.extend_from_slice(args);
    let o = traj(&all);
    assert_eq!(o.status.code(), Some(1), "traj {all:?} should fail");
    let e = stderr(&o);
    assert!(!e.contains("panicked"), "{e}");
    e
}

const REGRESSION: &str = "\
const n = 8, d = 3, lr = 0.1
data X = randn(n, d)
data y = X @ randn(d) + 0.1 * randn(n)
param w: [d] ~ normal(0, 1)
loss = 0.5 * mean((X @ w - y)^2)
train {
  optimizer gd(lr = lr)
  steps 40
  record every 10 { loss, v = w }
}
sweep {
  lr in [0.001, 0.01, 0.1]
  seed in 0..2
}
";

fn program(dir: &Path) -> PathBuf {
    let path = dir.join("reg.traj");
    std::fs::write(&path, REGRESSION).expect("write program");
    path
}

/// Width and height from a PNG's IHDR chunk, after checking the signature.
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).expect("png written");
    assert_eq!(
        &bytes[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} is not a PNG",
        path.display()
    );
    assert_eq!(&bytes[12..16], b"IHDR");
    let word = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    (word(16), word(20))
}

/// The SVG's text and its `<text>` contents, trimmed.
fn svg(path: &Path) -> (String, Vec<String>) {
    let text = std::fs::read_to_string(path).expect("svg written");
    let texts = text
        .split("<text")
        .skip(1)
        .filter_map(|t| {
            let start = t.find('>')? + 1;
            let end = t.find("</text>")?;
            Some(t[start..end].trim().to_string())
        })
        .collect();
    (text, texts)
}

/// The `width="..."` and `height="..."` of the `<svg>` element.
fn svg_size(text: &str) -> (u32, u32) {
    let head = &text[..text.find('>').expect("svg element")];
    let attr = |name: &str| -> u32 {
        let at = head.find(&format!("{name}=\"")).expect("attribute") + name.len() + 2;
        head[at..at + head[at..].find('"').expect("quote")]
            .parse()
            .expect("number")
    };
    (attr("width"), attr("height"))
}

/// How many drawn lines of the SVG have more than two points (the legend's keys have two).
fn data_lines(text: &str) -> usize {
    text.split("<polyline")
        .skip(1)
        .filter(|l| {
            let points = l.split("points=\"").nth(1).unwrap_or("");
            let points = &points[..points.find('"').unwrap_or(0)];
            l.contains("stroke-width=\"3\"") && points.split_whitespace().count() > 2
        })
        .count()
}

/// The rows of a CSV file, header first.
fn read_csv(path: &Path) -> Vec<Vec<String>> {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_path(path)
        .expect("csv opens");
    r.records()
        .map(|rec| rec.expect("csv row").iter().map(str::to_string).collect())
        .collect()
}

fn cell<'a>(rows: &'a [Vec<String>], row: usize, column: &str) -> &'a str {
    let i = rows[0]
        .iter()
        .position(|c| c == column)
        .unwrap_or_else(|| panic!("no column {column} in {:?}", rows[0]));
    &rows[row][i]
}

#[test]
fn a_run_plots_to_png_and_svg_with_legend_labels_and_title() {
    let dir = temp_dir("run");
    let file = program(&dir);
    let run = dir.join("run");
    ok(&["run", s(&file), "--set", "lr=0.2", "--out", s(&run)]);

    // The default: `loss`, into the run folder, the path printed.
    let o = ok(&["plot", s(&run)]);
    let png = run.join("plot.png");
    assert_eq!(stdout(&o).trim(), s(&png));
    assert_eq!(png_size(&png), (1200, 800));

    // A tensor column by its base name, with another column, as SVG.
    let out = dir.join("v.svg");
    let o = ok(&["plot", s(&run), "v", "loss", "-o", s(&out)]);
    assert_eq!(stdout(&o).trim(), s(&out));
    let (text, texts) = svg(&out);
    assert_eq!(svg_size(&text), (1200, 800));
    for wanted in ["v[0]", "v[1]", "v[2]", "loss", "step", "v, loss"] {
        assert!(
            texts.iter().any(|t| t == wanted),
            "no text {wanted} in {texts:?}"
        );
    }
    // The title: the program and the one const that differs from its default.
    assert!(texts.iter().any(|t| t == "reg (lr=0.2)"), "{texts:?}");
    // One line per column, no band for a single run.
    assert_eq!(data_lines(&text), 4, "{text}");
    assert!(!text.contains("<polygon"));

    // On a log axis, with ticks at whole decades.
    let out = dir.join("log.svg");
    ok(&["plot", s(&run), "--logy", "-o", s(&out)]);
    let (text, texts) = svg(&out);
    assert_eq!(data_lines(&text), 1, "{text}");
    assert!(texts.iter().any(|t| t == "0.1"), "{texts:?}");
    assert!(texts.iter().any(|t| t == "1"), "{texts:?}");

    // The default file name names the columns asked for.
    let o = ok(&["plot", s(&run), "v"]);
    assert_eq!(stdout(&o).trim(), s(&run.join("plot-v.png")));
    assert_eq!(png_size(&run.join("plot-v.png")), (1200, 800));
}

/// A straight diagonal line: `w` falls by `lr` every step.
const DIAGONAL: &str = "\
param w: [1] ~ normal(0, 1)
loss = sum(w)
train {
  optimizer gd(lr = 0.01)
  steps 200
  record every 1 { loss }
}
";

#[test]
fn png_lines_are_anti_aliased_to_an_even_thickness() {
    let dir = temp_dir("smooth");
    let file = dir.join("diag.traj");
    std::fs::write(&file, DIAGONAL).expect("write program");
    let run = dir.join("run");
    ok(&["run", s(&file), "--out", s(&run)]);
    let png = dir.join("diag.png");
    ok(&["plot", s(&run), "-o", s(&png)]);
    let img = image::open(&png).expect("png decodes").to_rgb8();
    assert_eq!(img.dimensions(), (1200, 800));
    assert_eq!(
        img.get_pixel(3, 3).0,
        [255, 255, 255],
        "the corner is background"
    );

    // How much of a pixel the line (tab10 blue) covers, from its blend `a * blue + (1 - a) *
    // white`; `None` for any other colour (a grid line, text).
    let blue = [31.0, 119.0, 180.0];
    let coverage = |x: u32, y: u32| -> Option<f64> {
        let p = img.get_pixel(x, y).0;
        let a = (255.0 - p[2] as f64) / (255.0 - blue[2]);
        let blend = (0..3).all(|c| (p[c] as f64 - (a * blue[c] + (1.0 - a) * 255.0)).abs() <= 3.0);
        (blend && (0.0..=1.01).contains(&a)).then_some(a.min(1.0))
    };
    // The line's thickness in each column of the chart's middle where it crosses nothing but
    // white: the sum of the coverages.
    let mut thickness = Vec::new();
    for x in 300..900 {
        let column: Vec<Option<f64>> = (60..700).map(|y| coverage(x, y)).collect();
        let on: Vec<usize> = (0..column.len())
            .filter(|&i| column[i].is_some_and(|a| a > 0.0))
            .collect();
        let (Some(&first), Some(&last)) = (on.first(), on.last()) else {
            continue;
        };
        let window = &column[first.saturating_sub(2)..(last + 3).min(column.len())];
        if window.iter().all(Option::is_some) {
            thickness.push(window.iter().flatten().sum::<f64>());
        }
    }
    // A straight line three pixels wide, drawn anti-aliased, covers the same amount of every
    // column it crosses (3.8-3.9 px here); drawn without, its edges step and the columns
    // differ by up to a pixel (3.8 to 4.75 px with plotters at the final size).
    assert!(thickness.len() > 100, "{} clean columns", thickness.len());
    let lo = thickness.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = thickness.iter().copied().fold(0.0, f64::max);
    assert!(lo > 3.0 && hi < 4.5, "thickness {lo}..{hi}");
    assert!(
        hi - lo < 0.4,
        "thickness varies {lo}..{hi} over the columns"
    );
}

#[test]
fn a_sweep_with_seeds_draws_mean_lines_with_bands() {
    let dir = temp_dir("sweep");
    let file = program(&dir);
    let sweep = dir.join("sweep");
    ok(&["sweep", s(&file), "--out", s(&sweep)]);
    let out = dir.join("sweep.svg");
    ok(&["plot", s(&sweep), "--logy", "-o", s(&out)]);
    let (text, texts) = svg(&out);
    assert_eq!(svg_size(&text), (1200, 800));
    // One mean line and one min–max band for each lr, the two seeds averaged.
    assert_eq!(text.matches("<polygon").count(), 3, "{text}");
    assert_eq!(data_lines(&text), 3, "{text}");
    for wanted in ["lr=0.001", "lr=0.01", "lr=0.1", "loss", "step"] {
        assert!(
            texts.iter().any(|t| t == wanted),
            "no text {wanted} in {texts:?}"
        );
    }
    assert!(
        texts
            .iter()
            .any(|t| t == "reg: mean and min–max of 2 seeds"),
        "{texts:?}"
    );

    // One seed: a line per point and no band.
    let one = dir.join("one-seed");
    ok(&["sweep", s(&file), "--seed", "0", "--out", s(&one)]);
    let out = dir.join("one.svg");
    ok(&["plot", s(&one), "-o", s(&out)]);
    let (text, texts) = svg(&out);
    assert!(!text.contains("<polygon"), "{text}");
    assert_eq!(data_lines(&text), 3, "{text}");
    assert!(texts.iter().any(|t| t == "lr=0.01"), "{texts:?}");
    assert!(texts.iter().any(|t| t == "reg"), "{texts:?}");
}

#[test]
fn against_plots_final_values_over_a_log_axis_of_the_swept_const() {
    let dir = temp_dir("against");
    let file = program(&dir);
    let sweep = dir.join("sweep");
    ok(&["sweep", s(&file), "--out", s(&sweep)]);
    let o = ok(&["plot", s(&sweep), "loss", "--against", "lr"]);
    let png = sweep.join("plot-loss-against-lr.png");
    assert_eq!(stdout(&o).trim(), s(&png));
    assert_eq!(png_size(&png), (1200, 800));

    let out = dir.join("against.svg");
    ok(&["plot", s(&sweep), "loss", "--against", "lr", "-o", s(&out)]);
    let (text, texts) = svg(&out);
    for wanted in ["lr", "final loss", "loss"] {
        assert!(
            texts.iter().any(|t| t == wanted),
            "no text {wanted} in {texts:?}"
        );
    }
    // lr spans two decades: a log axis, labelled at each decade.
    for tick in ["0.001", "0.01", "0.1"] {
        assert!(
            texts.iter().any(|t| t == tick),
            "no tick {tick} in {texts:?}"
        );
    }
    // A marker at each lr, and the band of the two seeds.
    assert_eq!(text.matches("<circle").count(), 3, "{text}");
    assert_eq!(text.matches("<polygon").count(), 1, "{text}");
}

#[test]
fn sweep_summary_is_the_statistics_of_the_points_over_seeds() {
    let dir = temp_dir("summary");
    let file = program(&dir);
    let sweep = dir.join("sweep");
    ok(&["sweep", s(&file), "--out", s(&sweep)]);

    // sweep.csv: one row per point, with the run's own run_seconds.
    let rows = read_csv(&sweep.join("sweep.csv"));
    assert_eq!(rows.len(), 7);
    for row in 1..rows.len() {
        let name = format!(
            "lr={},seed={}",
            cell(&rows, row, "lr"),
            cell(&rows, row, "seed")
        );
        let info: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(sweep.join(&name).join("run.json")).expect("run.json"),
        )
        .expect("json");
        let seconds: f64 = cell(&rows, row, "run_seconds").parse().expect("a number");
        assert_eq!(Some(seconds), info["run_seconds"].as_f64(), "{name}");
        assert!(seconds > 0.0);
    }

    let summary = read_csv(&sweep.join("sweep_summary.csv"));
    assert_eq!(
        summary[0][..6],
        [
            "lr",
            "seeds",
            "loss_mean",
            "loss_std",
            "loss_min",
            "loss_max"
        ]
    );
    assert!(summary[0].contains(&"v[2]_max".to_string()));
    assert_eq!(summary.len(), 4);
    for (row, lr) in ["0.001", "0.01", "0.1"].iter().enumerate() {
        let row = row + 1;
        assert_eq!(cell(&summary, row, "lr"), *lr);
        assert_eq!(cell(&summary, row, "seeds"), "2");
        for column in ["loss", "v[0]", "v[2]"] {
            // The final value of each seed's own trajectory.csv.
            let finals: Vec<f64> = (0..2)
                .map(|seed| {
                    let t = read_csv(
                        &sweep
                            .join(format!("lr={lr},seed={seed}"))
                            .join("trajectory.csv"),
                    );
                    cell(&t, t.len() - 1, column).parse().expect("a number")
                })
                .collect();
            let mean = (finals[0] + finals[1]) / 2.0;
            let std = ((finals[0] - mean).powi(2) + (finals[1] - mean).powi(2)).sqrt();
            let got = |stat: &str| -> f64 {
                cell(&summary, row, &format!("{column}_{stat}"))
                    .parse()
                    .expect("a number")
            };
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs().max(1e-300);
            assert!(
                close(got("mean"), mean),
                "{lr} {column}: {} vs {mean}",
                got("mean")
            );
            assert!(
                close(got("std"), std),
                "{lr} {column}: {} vs {std}",
                got("std")
            );
            assert_eq!(got("min"), finals[0].min(finals[1]));
            assert_eq!(got("max"), finals[0].max(finals[1]));
            assert!(std > 0.0, "the seeds differ");
        }
    }
}

/// Writes a hand-made run folder holding only `trajectory.csv`.
fn fake_run(dir: &Path, name: &str, csv: &str) -> PathBuf {
    let run = dir.join(name);
    std::fs::create_dir_all(&run).expect("folder");
    std::fs::write(run.join("trajectory.csv"), csv).expect("csv");
    run
}

#[test]
fn a_run_in_continuous_time_is_drawn_against_t() {
    let dir = temp_dir("time");
    let run = fake_run(
        &dir,
        "flow",
        "step,t,loss\r\n0,0.0,1.0\r\n7,0.5,0.5\r\n12,1.0,0.25\r\n",
    );
    let out = dir.join("flow.svg");
    let o = ok(&["plot", s(&run), "-o", s(&out)]);
    // No run.json: the title cannot name the program, and says so.
    assert!(stderr(&o).contains("note: no run.json"), "{}", stderr(&o));
    let (text, texts) = svg(&out);
    assert!(texts.iter().any(|t| t == "t"), "{texts:?}");
    assert!(!texts.iter().any(|t| t == "step"), "{texts:?}");
    // x from 0 to 1 (t), not to 12 (step): the last point sits at the right end of the axis.
    assert!(texts.iter().any(|t| t == "1"), "{texts:?}");
    assert!(!texts.iter().any(|t| t == "12"), "{texts:?}");
    assert_eq!(data_lines(&text), 1);
}

#[test]
fn every_problem_is_a_message() {
    let dir = temp_dir("errors");
    let missing = dir.join("nowhere");
    let e = plot_error(&[s(&missing)]);
    assert!(
        e.contains(&format!("error: no such folder: {}", s(&missing))),
        "{e}"
    );

    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).expect("folder");
    let e = plot_error(&[s(&empty)]);
    assert!(
        e.contains("is neither a run folder (it has no trajectory.csv) nor a sweep folder"),
        "{e}"
    );

    let bad = fake_run(&dir, "bad-number", "step,loss\n0,1.0\n10,abc\n");
    let e = plot_error(&[s(&bad)]);
    assert!(
        e.contains("line 3: `abc` in column `loss` is not a number"),
        "{e}"
    );

    let ragged = fake_run(&dir, "ragged", "step,loss\n0,1.0,2.0\n");
    let e = plot_error(&[s(&ragged)]);
    assert!(
        e.contains("cannot read") && e.contains("trajectory.csv"),
        "{e}"
    );

    let not_trajectory = fake_run(&dir, "other", "a,b\n1,2\n");
    let e = plot_error(&[s(&not_trajectory)]);
    assert!(e.contains("its first column is not `step`"), "{e}");

    let good = fake_run(
        &dir,
        "good",
        "step,loss,sv[0],sv[1],gap\n0,1.0,0.5,0.25,\n10,nan,0.5,-1.0,\n20,0.5,inf,0.125,\n",
    );
    let e = plot_error(&[s(&good), "los"]);
    assert!(
        e.contains("no column `los`; the recorded columns are: loss, sv[0]…sv[1], gap"),
        "{e}"
    );
    // A column of empty cells only.
    let e = plot_error(&[s(&good), "gap"]);
    assert!(
        e.contains("nothing to draw: gap has no finite value to plot"),
        "{e}"
    );
    // nan and inf are skipped with a note; the plot is still drawn.
    let o = ok(&["plot", s(&good), "loss", "sv"]);
    assert!(
        stderr(&o).contains("note: skipped 2 nan or inf values"),
        "{}",
        stderr(&o)
    );
    assert_eq!(png_size(&good.join("plot-loss-sv.png")), (1200, 800));
    // A log axis skips values ≤ 0 and says so; x = 0 on a log x axis too.
    let o = ok(&["plot", s(&good), "sv", "--logy", "--logx"]);
    let notes = stderr(&o);
    assert!(notes.contains("--logy: skipped 1 value ≤ 0"), "{notes}");
    assert!(
        notes.contains("--logx: skipped 2 points with step ≤ 0"),
        "{notes}"
    );
    let negative = fake_run(&dir, "negative", "step,loss\n0,-1.0\n10,0.0\n");
    let e = plot_error(&[s(&negative), "--logy"]);
    assert!(
        e.contains("nothing to draw: loss has no finite value > 0 to plot"),
        "{e}"
    );
    assert!(e.contains("--logy: skipped 2 values ≤ 0"), "{e}");

    let e = plot_error(&[s(&good), "-o", s(&dir.join("plot.pdf"))]);
    assert!(e.contains("name a .png or .svg file"), "{e}");
    let e = plot_error(&[s(&good), "-o", s(&dir.join("no/such/plot.png"))]);
    assert!(e.contains("there is no folder"), "{e}");
    let e = plot_error(&[s(&good), "--against", "lr"]);
    assert!(e.contains("--against lr needs a sweep folder"), "{e}");

    // A sweep: --against a const it does not sweep; a point without its folder.
    let file = program(&dir);
    let sweep = dir.join("sweep");
    ok(&["sweep", s(&file), "--seed", "0", "--out", s(&sweep)]);
    let e = plot_error(&[s(&sweep), "--against", "n"]);
    assert!(
        e.contains("--against n: `n` is not swept; the swept consts are: lr, seed"),
        "{e}"
    );
    std::fs::remove_dir_all(sweep.join("lr=0.01,seed=0")).expect("remove a point");
    let o = ok(&["plot", s(&sweep)]);
    assert!(
        stderr(&o)
            .contains("left out point lr=0.01,seed=0 (status finished): it has no trajectory.csv"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_series_left_with_one_point_is_drawn_as_a_marker() {
    // Rows at steps 0 and 3; `--logx` cannot show step 0, which leaves one point of `loss`:
    // no line can show it, so it is a marker. The full series is a line without markers.
    let dir = temp_dir("one-point");
    let program = dir.join("one.traj");
    std::fs::write(
        &program,
        "param w: [] = 1.0\nloss = w^2\ntrain {\n  optimizer gd(lr = 0.1)\n  steps 3\n  record every 10 { loss }\n}\n",
    )
    .expect("write");
    let run = dir.join("run");
    ok(&["run", s(&program), "--out", s(&run)]);
    let one = dir.join("one.svg");
    ok(&["plot", s(&run), "loss", "--logx", "-o", s(&one)]);
    let text = std::fs::read_to_string(&one).expect("svg");
    assert_eq!(text.matches("<circle").count(), 1, "{text}");
    let both = dir.join("both.svg");
    ok(&["plot", s(&run), "loss", "-o", s(&both)]);
    let text = std::fs::read_to_string(&both).expect("svg");
    assert_eq!(text.matches("<circle").count(), 0, "{text}");
}
