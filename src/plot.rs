//! `traj plot` (LANGUAGE.md section 9): a run's or a sweep's recorded columns drawn to PNG or SVG.
//!
//! # What is drawn
//! * A run folder: each chosen column against `step` (or `t` when the run recorded time).
//! * A sweep folder (`sweep.csv` and one run folder per point): one line per point, coloured
//!   by the swept consts; points that differ only in `seed` are drawn as their mean with a
//!   min–max band.
//! * `--against CONST` (sweeps only): each column's final recorded value against the swept
//!   const, one line per value of the other swept consts, seeds again as mean and band; the x
//!   axis is logarithmic when the values span two decades or more.
//!
//! # Decisions
//! * A column is named exactly (`sv[0]`) or by its base name (`sv` is every `sv[...]`). With
//!   no column given: `loss` if it was recorded, else every column.
//! * Empty cells (a record clause not due) are not points; `nan`/`inf` cells and, on a log
//!   axis, values ≤ 0 are skipped and counted in a note.
//! * The title is the program's name and the consts that differ from the program's defaults
//!   (found by checking the program named in `run.json` again; left out when it no longer
//!   checks). In a sweep the swept consts are in the legend instead.
//! * Text is drawn with the DejaVu Sans font embedded in the binary, so a plot looks the same
//!   on any machine, fonts installed or not.
//! * A PNG is drawn at [`SUPERSAMPLE`] times its size, every pixel length scaled alike, and
//!   box-averaged down: plotters draws thick lines without anti-aliasing, so a smooth curve
//!   drawn at the final size looks jagged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

use crate::diag::SourceMap;
use crate::ir::types::Scalar;
use crate::plot_text::GlyphText;
use crate::sema::check::{Options, check_file};

/// The picture's size in pixels (SVG units), 3:2.
pub const SIZE: (u32, u32) = (1200, 800);

const FONT: &str = "sans-serif";
const TITLE_PX: f64 = 34.0;
const AXIS_LABEL_PX: f64 = 32.0;
const TICK_PX: f64 = 26.0;
const LEGEND_PX: f64 = 26.0;
const LINE_WIDTH: u32 = 3;
/// A PNG is drawn this many times wider and taller, then each square of this many pixels
/// squared is averaged into one: 3 gives 9 levels of coverage at a line's edge.
const SUPERSAMPLE: u32 = 3;
/// Legend entries shown before the rest are summarized as "… N more".
const LEGEND_MAX: usize = 18;

/// What `traj plot` was asked for.
#[derive(Clone, Debug, Default)]
pub struct PlotOptions {
    /// A run folder or a sweep folder.
    pub dir: PathBuf,
    /// Columns by full or base name; empty for the default.
    pub columns: Vec<String>,
    pub logx: bool,
    pub logy: bool,
    /// `--against CONST`.
    pub against: Option<String>,
    /// `-o FILE` (`.png` or `.svg`); default `DIR/plot….png`.
    pub out: Option<PathBuf>,
}

/// What `traj plot` did: the file written and what was skipped on the way.
#[derive(Clone, Debug)]
pub struct Plotted {
    pub path: PathBuf,
    pub notes: Vec<String>,
}

/// Draws what `options` asks for and writes the file.
pub fn plot(options: &PlotOptions) -> Result<Plotted, String> {
    let path = options
        .out
        .clone()
        .unwrap_or_else(|| default_output(options));
    let format = Format::of(&path)?;
    let source = load(&options.dir)?;
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
        && !parent.is_dir()
    {
        return Err(format!(
            "cannot write {}: there is no folder {}",
            path.display(),
            parent.display()
        ));
    }
    let mut notes = source.notes.clone();
    let figure = figure(&source, options, &mut notes)?;
    render_file(&figure, &path, format)?;
    Ok(Plotted { path, notes })
}

/// The default file: `DIR/plot.png`, or `DIR/plot-COLUMNS[-against-CONST].png` when columns
/// or a const were named, so plots of different columns do not overwrite each other.
fn default_output(options: &PlotOptions) -> PathBuf {
    let mut stem = String::from("plot");
    for c in &options.columns {
        stem.push('-');
        stem.push_str(&file_safe(c));
    }
    if let Some(c) = &options.against {
        stem.push_str("-against-");
        stem.push_str(&file_safe(c));
    }
    options.dir.join(format!("{stem}.png"))
}

/// `name` with every character that is not a letter, a digit, `_` or `-` replaced by `_`.
fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Format {
    Png,
    Svg,
}

impl Format {
    fn of(path: &Path) -> Result<Format, String> {
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        match ext.as_str() {
            "png" => Ok(Format::Png),
            "svg" => Ok(Format::Svg),
            _ => Err(format!(
                "cannot tell the format of {}: name a .png or .svg file",
                path.display()
            )),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Reading run and sweep folders.

/// One `trajectory.csv`: every column (`step` first) with its cells, `None` where empty.
#[derive(Clone, Debug)]
struct Table {
    names: Vec<String>,
    cells: Vec<Vec<Option<f64>>>,
}

impl Table {
    fn column(&self, name: &str) -> Option<&[Option<f64>]> {
        let i = self.names.iter().position(|n| n == name)?;
        Some(&self.cells[i])
    }
}

fn read_table(path: &Path) -> Result<Table, String> {
    let fail = |e: &dyn std::fmt::Display| format!("cannot read {}: {e}", path.display());
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(path)
        .map_err(|e| fail(&e))?;
    let names: Vec<String> = reader
        .headers()
        .map_err(|e| fail(&e))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    if names.first().map(String::as_str) != Some("step") {
        return Err(format!(
            "cannot read {}: its first column is not `step`, so it is not a trajectory.csv",
            path.display()
        ));
    }
    let mut cells = vec![Vec::new(); names.len()];
    for record in reader.records() {
        let record = record.map_err(|e| fail(&e))?;
        let line = record.position().map_or(0, |p| p.line());
        for ((name, column), cell) in names.iter().zip(&mut cells).zip(record.iter()) {
            let cell = cell.trim();
            if cell.is_empty() {
                column.push(None);
                continue;
            }
            let value = cell.parse::<f64>().map_err(|_| {
                format!(
                    "cannot read {}: line {line}: `{cell}` in column `{name}` is not a number",
                    path.display()
                )
            })?;
            column.push(Some(value));
        }
    }
    Ok(Table { names, cells })
}

/// One run: its swept consts (as written in `sweep.csv`; none for a lone run), its
/// trajectory and its `run.json`.
#[derive(Clone, Debug)]
struct Member {
    consts: Vec<(String, String)>,
    table: Table,
    info: Option<serde_json::Value>,
}

impl Member {
    fn swept(&self, key: &str) -> Option<&str> {
        self.consts
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// What a folder holds: one run, or the points of a sweep.
#[derive(Clone, Debug)]
struct Source {
    /// The swept consts, in `sweep.csv`'s order; empty for a run.
    keys: Vec<String>,
    members: Vec<Member>,
    notes: Vec<String>,
}

fn read_info(dir: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("run.json")).ok()?;
    serde_json::from_str(&text).ok()
}

fn load(dir: &Path) -> Result<Source, String> {
    if !dir.exists() {
        return Err(format!("no such folder: {}", dir.display()));
    }
    if !dir.is_dir() {
        return Err(format!("{} is not a folder", dir.display()));
    }
    let trajectory = dir.join("trajectory.csv");
    if trajectory.is_file() {
        return Ok(Source {
            keys: Vec::new(),
            members: vec![Member {
                consts: Vec::new(),
                table: read_table(&trajectory)?,
                info: read_info(dir),
            }],
            notes: Vec::new(),
        });
    }
    let sweep_csv = dir.join("sweep.csv");
    if !sweep_csv.is_file() {
        return Err(format!(
            "{} is neither a run folder (it has no trajectory.csv) nor a sweep folder (no sweep.csv)",
            dir.display()
        ));
    }
    let fail = |e: &dyn std::fmt::Display| format!("cannot read {}: {e}", sweep_csv.display());
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(&sweep_csv)
        .map_err(|e| fail(&e))?;
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| fail(&e))?
        .iter()
        .map(str::to_string)
        .collect();
    let Some(status) = header.iter().position(|h| h == "status") else {
        return Err(format!(
            "cannot read {}: it has no `status` column, so it is not a sweep.csv",
            sweep_csv.display()
        ));
    };
    let keys: Vec<String> = header[..status].to_vec();
    let mut members = Vec::new();
    let mut notes = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| fail(&e))?;
        let consts: Vec<(String, String)> = keys
            .iter()
            .zip(record.iter())
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect();
        let name: Vec<String> = consts.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let point_dir = dir.join(name.join(","));
        let path = point_dir.join("trajectory.csv");
        if !path.is_file() {
            let status = record.get(status).unwrap_or("");
            notes.push(format!(
                "left out point {} (status {status}): it has no trajectory.csv",
                name.join(",")
            ));
            continue;
        }
        members.push(Member {
            consts,
            table: read_table(&path)?,
            info: read_info(&point_dir),
        });
    }
    if members.is_empty() {
        return Err(format!(
            "{} holds no point with a trajectory to plot",
            dir.display()
        ));
    }
    Ok(Source {
        keys,
        members,
        notes,
    })
}

// ---------------------------------------------------------------------------------------
// Choosing columns.

/// The part of a column name before its index: `sv` of `sv[3]`.
fn base_name(column: &str) -> &str {
    column.split_once('[').map_or(column, |(b, _)| b)
}

/// The recorded columns (neither `step` nor `t`) of every member, in order of first appearance.
fn data_columns(source: &Source) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for m in &source.members {
        for n in &m.table.names {
            if n != "step" && n != "t" && !out.contains(n) {
                out.push(n.clone());
            }
        }
    }
    out
}

/// The columns as a short list for messages: `loss, sv[0]…sv[5], test`.
fn describe_columns(columns: &[String]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < columns.len() {
        let base = base_name(&columns[i]);
        let mut j = i + 1;
        while j < columns.len() && columns[j] != base && base_name(&columns[j]) == base {
            j += 1;
        }
        if j - i > 1 {
            parts.push(format!("{}…{}", columns[i], columns[j - 1]));
        } else {
            parts.push(columns[i].clone());
        }
        i = j;
    }
    parts.join(", ")
}

/// The columns asked for, each by its full name or its base name.
fn choose_columns(requested: &[String], available: &[String]) -> Result<Vec<String>, String> {
    if available.is_empty() {
        return Err("the trajectory has no recorded column to plot".into());
    }
    if requested.is_empty() {
        return Ok(if available.iter().any(|c| c == "loss") {
            vec!["loss".to_string()]
        } else {
            available.to_vec()
        });
    }
    let mut out: Vec<String> = Vec::new();
    for r in requested {
        let found: Vec<&String> = if available.contains(r) {
            available.iter().filter(|c| *c == r).collect()
        } else {
            available
                .iter()
                .filter(|c| c.contains('[') && base_name(c) == r)
                .collect()
        };
        if found.is_empty() {
            return Err(format!(
                "no column `{r}`; the recorded columns are: {}",
                describe_columns(available)
            ));
        }
        for c in found {
            if !out.contains(c) {
                out.push(c.clone());
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// The figure: lines, bands and legend, independent of the drawing backend.

/// (x, y) in data units.
type Point = (f64, f64);

#[derive(Clone, Debug)]
struct Series {
    color: RGBColor,
    /// Index into [`DASHES`].
    dash: usize,
    line: Vec<Point>,
    /// The min–max band as a closed polygon; empty when there is one value at each x.
    band: Vec<Point>,
    markers: bool,
}

#[derive(Clone, Debug)]
struct LegendEntry {
    label: String,
    color: RGBColor,
    dash: usize,
}

#[derive(Clone, Debug)]
struct Figure {
    title: String,
    x_label: String,
    y_label: String,
    series: Vec<Series>,
    legend: Vec<LegendEntry>,
    logx: bool,
    logy: bool,
}

/// Line styles by index: solid, then (dash, gap) lengths in pixels.
const DASHES: [(u32, u32); 4] = [(0, 0), (16, 10), (5, 7), (24, 8)];

/// Counts of what could not be drawn.
#[derive(Default)]
struct Skipped {
    non_finite: usize,
    x_non_positive: usize,
    y_non_positive: usize,
}

impl Skipped {
    /// Whether the point can be drawn; counts it if not.
    fn keep(&mut self, x: f64, y: f64, logx: bool, logy: bool) -> bool {
        if !x.is_finite() || !y.is_finite() {
            self.non_finite += 1;
            false
        } else if logx && x <= 0.0 {
            self.x_non_positive += 1;
            false
        } else if logy && y <= 0.0 {
            self.y_non_positive += 1;
            false
        } else {
            true
        }
    }

    fn notes(&self, x_name: &str) -> Vec<String> {
        let mut notes = Vec::new();
        if self.non_finite > 0 {
            notes.push(format!(
                "skipped {} nan or inf {}",
                self.non_finite,
                plural(self.non_finite, "value")
            ));
        }
        if self.x_non_positive > 0 {
            notes.push(format!(
                "--logx: skipped {} {} with {x_name} ≤ 0 (a log axis cannot show them)",
                self.x_non_positive,
                plural(self.x_non_positive, "point")
            ));
        }
        if self.y_non_positive > 0 {
            notes.push(format!(
                "--logy: skipped {} {} ≤ 0 (a log axis cannot show them)",
                self.y_non_positive,
                plural(self.y_non_positive, "value")
            ));
        }
        notes
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        word.to_string()
    } else {
        format!("{word}s")
    }
}

/// The mean at each distinct x (in increasing x) and, when some x has more than one value,
/// the min–max band around it as a polygon.
fn mean_and_band(mut points: Vec<Point>) -> (Vec<Point>, Vec<Point>) {
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut line = Vec::new();
    let mut lows = Vec::new();
    let mut highs = Vec::new();
    let mut several = false;
    let mut i = 0;
    while i < points.len() {
        let x = points[i].0;
        let mut j = i;
        let (mut sum, mut lo, mut hi) = (0.0, f64::INFINITY, f64::NEG_INFINITY);
        while j < points.len() && points[j].0 == x {
            let y = points[j].1;
            sum += y;
            lo = lo.min(y);
            hi = hi.max(y);
            j += 1;
        }
        several |= j - i > 1;
        line.push((x, sum / (j - i) as f64));
        lows.push((x, lo));
        highs.push((x, hi));
        i = j;
    }
    let band = if several {
        highs.into_iter().chain(lows.into_iter().rev()).collect()
    } else {
        Vec::new()
    };
    (line, band)
}

/// Members grouped by their swept consts other than `seed` and `also`, in order of first
/// appearance, each group with its label (`depth=2, lr=0.1`).
fn groups(source: &Source, also: Option<&str>) -> Vec<(String, Vec<usize>)> {
    let mut out: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, m) in source.members.iter().enumerate() {
        let label: Vec<String> = m
            .consts
            .iter()
            .filter(|(k, _)| k != "seed" && Some(k.as_str()) != also)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let label = label.join(", ");
        match out.iter_mut().find(|(l, _)| *l == label) {
            Some((_, members)) => members.push(i),
            None => out.push((label, vec![i])),
        }
    }
    out
}

/// Ten distinct colours (matplotlib's tab10), for lines that are not ordered.
const CATEGORICAL: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Viridis from dark purple to green (its pale yellow end is left out: it vanishes on
/// white), for lines ordered by a swept value.
fn sequential(i: usize, n: usize) -> RGBColor {
    const STOPS: [(f64, f64, f64); 5] = [
        (68.0, 1.0, 84.0),
        (59.0, 82.0, 139.0),
        (33.0, 145.0, 140.0),
        (94.0, 201.0, 98.0),
        (253.0, 231.0, 37.0),
    ];
    let f = if n <= 1 {
        0.0
    } else {
        0.85 * i as f64 / (n - 1) as f64
    };
    let pos = f * (STOPS.len() - 1) as f64;
    let k = (pos.floor() as usize).min(STOPS.len() - 2);
    let w = pos - k as f64;
    let (a, b) = (STOPS[k], STOPS[k + 1]);
    let mix = |p: f64, q: f64| (p + (q - p) * w).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

fn categorical(i: usize, n: usize) -> RGBColor {
    if n <= CATEGORICAL.len() {
        CATEGORICAL[i % CATEGORICAL.len()]
    } else {
        sequential(i, n)
    }
}

/// The bases of `columns`, in order.
fn bases(columns: &[String]) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for c in columns {
        let b = base_name(c);
        if !out.contains(&b) {
            out.push(b);
        }
    }
    out
}

/// The last non-empty cell of a column.
fn final_value(table: &Table, column: &str) -> Option<f64> {
    table.column(column)?.iter().rev().find_map(|c| *c)
}

/// The program's consts at their defaults, by checking it again; `None` when it cannot be
/// read or no longer checks.
fn default_consts(program: &str) -> Option<BTreeMap<String, Scalar>> {
    let mut sources = SourceMap::default();
    let options = Options {
        overrides: Vec::new(),
        check_sweep: false,
    };
    match check_file(Path::new(program), &options, &mut sources) {
        Ok(Ok(checked)) => Some(checked.consts),
        _ => None,
    }
}

/// `NAME (k=v, ...)`: the program's name and the consts of `info` that differ from the
/// program's defaults, leaving out `skip` (the swept consts).
fn title(source: &Source, skip: &[String], notes: &mut Vec<String>) -> String {
    let info = source.members.iter().find_map(|m| m.info.as_ref());
    let Some(info) = info else {
        notes.push("no run.json: the title names no program".into());
        return String::from("trajectory");
    };
    let program = info["program"].as_str().unwrap_or("");
    let name = Path::new(program)
        .file_stem()
        .map_or_else(|| "trajectory".to_string(), |s| s.to_string_lossy().into());
    let Some(defaults) = default_consts(program) else {
        notes.push(format!(
            "the title lists no consts: {program} cannot be read or does not check"
        ));
        return name;
    };
    let mut differing = Vec::new();
    if let Some(consts) = info["consts"].as_object() {
        for (k, v) in consts {
            if skip.contains(k) {
                continue;
            }
            let same = match (defaults.get(k), v.as_f64()) {
                (Some(d), Some(v)) => d.as_f64() == v,
                _ => false,
            };
            if !same {
                differing.push(format!("{k}={v}"));
            }
        }
    }
    if differing.is_empty() {
        name
    } else {
        format!("{name} ({})", differing.join(", "))
    }
}

fn figure(
    source: &Source,
    options: &PlotOptions,
    notes: &mut Vec<String>,
) -> Result<Figure, String> {
    let available = data_columns(source);
    let columns = choose_columns(&options.columns, &available)?;
    let mut skipped = Skipped::default();
    let bases = bases(&columns);
    let y_label = bases.join(", ");

    let (x_name, logx, groups) = match &options.against {
        Some(against) => {
            if source.keys.is_empty() {
                return Err(format!(
                    "--against {against} needs a sweep folder; {} is one run",
                    options.dir.display()
                ));
            }
            if !source.keys.contains(against) {
                return Err(format!(
                    "--against {against}: `{against}` is not swept; the swept consts are: {}",
                    source.keys.join(", ")
                ));
            }
            let values: Vec<f64> = source
                .members
                .iter()
                .filter_map(|m| m.swept(against)?.parse::<f64>().ok())
                .collect();
            let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let decades = lo > 0.0 && hi / lo >= 100.0;
            (
                against.clone(),
                options.logx || decades,
                self::groups(source, Some(against)),
            )
        }
        None => {
            let time = source
                .members
                .iter()
                .any(|m| m.table.names.iter().any(|n| n == "t"));
            let x = if time { "t" } else { "step" };
            (x.to_string(), options.logx, self::groups(source, None))
        }
    };
    let logy = options.logy;

    let by_group = groups.len() > 1;
    let mut series = Vec::new();
    // Which groups and columns have a line, for the legend.
    let mut drawn_groups = vec![false; groups.len()];
    let mut drawn_columns = vec![false; columns.len()];
    for (g, (_, members)) in groups.iter().enumerate() {
        for (c, column) in columns.iter().enumerate() {
            let mut points = Vec::new();
            for &i in members {
                let member = &source.members[i];
                match &options.against {
                    Some(against) => {
                        let Some(y) = final_value(&member.table, column) else {
                            continue;
                        };
                        let text = member.swept(against).unwrap_or("");
                        let Ok(x) = text.parse::<f64>() else {
                            return Err(format!(
                                "--against {against}: the value `{text}` is not a number"
                            ));
                        };
                        if skipped.keep(x, y, logx, logy) {
                            points.push((x, y));
                        }
                    }
                    None => {
                        let (Some(xs), Some(ys)) =
                            (member.table.column(&x_name), member.table.column(column))
                        else {
                            continue;
                        };
                        for (x, y) in xs.iter().zip(ys) {
                            if let (Some(x), Some(y)) = (x, y)
                                && skipped.keep(*x, *y, logx, logy)
                            {
                                points.push((*x, *y));
                            }
                        }
                    }
                }
            }
            if points.is_empty() {
                continue;
            }
            drawn_groups[g] = true;
            drawn_columns[c] = true;
            let (line, band) = mean_and_band(points);
            let base = base_name(column);
            series.push(Series {
                color: if by_group {
                    sequential(g, groups.len())
                } else {
                    categorical(c, columns.len())
                },
                dash: if by_group {
                    bases.iter().position(|b| *b == base).unwrap_or(0) % DASHES.len()
                } else {
                    0
                },
                line,
                band,
                markers: options.against.is_some(),
            });
        }
    }
    let skipped = skipped.notes(&x_name);
    if series.is_empty() {
        let why = if skipped.is_empty() {
            String::new()
        } else {
            format!(" ({})", skipped.join("; "))
        };
        return Err(format!(
            "nothing to draw: {} has no finite value{} to plot{why}",
            describe_columns(&columns),
            if logy || logx { " > 0" } else { "" }
        ));
    }
    notes.extend(skipped);
    let undrawn: Vec<String> = columns
        .iter()
        .zip(&drawn_columns)
        .filter(|(_, drawn)| !**drawn)
        .map(|(c, _)| c.clone())
        .collect();
    if !undrawn.is_empty() {
        notes.push(format!(
            "nothing to draw for {}: left out of the legend",
            undrawn.join(", ")
        ));
    }

    let mut legend = Vec::new();
    if by_group {
        for (g, (label, _)) in groups.iter().enumerate() {
            if !drawn_groups[g] {
                continue;
            }
            legend.push(LegendEntry {
                label: label.clone(),
                color: sequential(g, groups.len()),
                dash: 0,
            });
        }
        if bases.len() > 1 {
            for (b, base) in bases.iter().enumerate() {
                legend.push(LegendEntry {
                    label: base.to_string(),
                    color: RGBColor(60, 60, 60),
                    dash: b % DASHES.len(),
                });
            }
        }
    } else {
        for (c, column) in columns.iter().enumerate() {
            if !drawn_columns[c] {
                continue;
            }
            legend.push(LegendEntry {
                label: column.clone(),
                color: categorical(c, columns.len()),
                dash: 0,
            });
        }
    }

    let mut title = title(source, &source.keys, notes);
    // Points that differ only in `seed`, at most.
    let seeds = self::groups(source, None)
        .iter()
        .map(|(_, m)| m.len())
        .max()
        .unwrap_or(1);
    if seeds > 1 {
        title += &format!(": mean and min–max of {seeds} seeds");
    }
    let (x_label, y_label) = match &options.against {
        Some(_) => (x_name, format!("final {y_label}")),
        None => (x_name, y_label),
    };
    Ok(Figure {
        title,
        x_label,
        y_label,
        series,
        legend,
        logx,
        logy,
    })
}

// ---------------------------------------------------------------------------------------
// Drawing.

static FONT_DATA: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

/// Makes the embedded font plotters' `sans-serif` (once).
fn register_font() -> Result<(), String> {
    static REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *REGISTERED
        .get_or_init(|| plotters::style::register_font(FONT, FontStyle::Normal, FONT_DATA).is_ok());
    if ok {
        Ok(())
    } else {
        Err("internal error: the embedded font could not be loaded".into())
    }
}

fn render_file(figure: &Figure, path: &Path, format: Format) -> Result<(), String> {
    register_font()?;
    let written = |e: &dyn std::fmt::Display| format!("cannot write {}: {e}", path.display());
    match format {
        Format::Png => {
            let font = ab_glyph::FontRef::try_from_slice(FONT_DATA)
                .map_err(|_| "internal error: the embedded font could not be loaded".to_string())?;
            let k = SUPERSAMPLE;
            let big = (SIZE.0 * k, SIZE.1 * k);
            let mut pixels = vec![0u8; (big.0 * big.1 * 3) as usize];
            {
                let backend = BitMapBackend::with_buffer(&mut pixels, big);
                let root = GlyphText::new(backend, font).into_drawing_area();
                render(&root, figure, k)?;
                drawing(root.present())?;
            }
            let small = box_average(&pixels, SIZE, k);
            image::save_buffer(path, &small, SIZE.0, SIZE.1, image::ColorType::Rgb8)
                .map_err(|e| written(&e))
        }
        Format::Svg => {
            let root = SVGBackend::new(path, SIZE).into_drawing_area();
            render(&root, figure, 1)?;
            root.present().map_err(|e| written(&e))
        }
    }
}

/// An RGB picture of `size` from one `k` times wider and taller: each channel of each pixel
/// the rounded mean of its `k`×`k` square.
pub fn box_average(big: &[u8], size: (u32, u32), k: u32) -> Vec<u8> {
    let (w, h, k) = (size.0 as usize, size.1 as usize, k as usize);
    let row = w * k * 3;
    assert_eq!(big.len(), row * h * k, "box_average: buffer size");
    let n = (k * k) as u32;
    let mut small = vec![0u8; w * h * 3];
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                let mut sum = 0u32;
                for dy in 0..k {
                    let start = (y * k + dy) * row + x * k * 3 + c;
                    sum += (0..k).map(|dx| big[start + dx * 3] as u32).sum::<u32>();
                }
                small[(y * w + x) * 3 + c] = ((sum + n / 2) / n) as u8;
            }
        }
    }
    small
}

fn drawing<T, E: std::fmt::Display>(r: Result<T, E>) -> Result<T, String> {
    r.map_err(|e| format!("cannot draw the plot: {e}"))
}

/// The axis range of `values`: padded by 4 % on a linear axis; on a log axis widened to whole
/// decades, so that every log axis has labelled ticks.
fn axis_range(values: impl Iterator<Item = f64>, log: bool, pad: bool) -> (f64, f64) {
    let (mut lo, mut hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if lo > hi {
        return if log { (1.0, 10.0) } else { (0.0, 1.0) };
    }
    if log {
        lo = 10f64.powf(lo.log10().floor());
        hi = 10f64.powf(hi.log10().ceil());
        if hi <= lo {
            hi = lo * 10.0;
        }
        // A hair wider, so that rounding in plotters' log scale keeps both end decades; with
        // `pad`, a twentieth of a decade, so that markers at the ends are drawn whole.
        let widen = if pad { 10f64.powf(0.05) } else { 1.0 + 1e-9 };
        return (lo / widen, hi * widen);
    }
    if hi == lo {
        let d = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        return (lo - d, hi + d);
    }
    if pad {
        let d = (hi - lo) * 0.04;
        lo -= d;
        hi += d;
    }
    (lo, hi)
}

/// The labelled and the unlabelled ticks of a log axis from `lo` to `hi`: at most
/// [`LOG_LABELS`] powers of ten, every decade (light lines at 2 to 9 times each power) or
/// every 2, 5, 10, 20, 50, ... (the multiples of that stride, light lines at the decades
/// between); over two decades or fewer, also 2 and 5 times each power.
fn log_ticks(lo: f64, hi: f64) -> (Vec<f64>, Vec<f64>) {
    let inside = |v: &f64| *v >= lo && *v <= hi;
    let (d0, d1) = (lo.log10().ceil() as i32, hi.log10().floor() as i32);
    let power = |d: i32| format!("1e{d}").parse::<f64>().unwrap_or(f64::NAN);
    // Decades between the outermost powers inside.
    let decades = d1 - d0;
    let at = |m: &[f64]| -> Vec<f64> {
        (d0 - 1..=d1)
            .flat_map(|d| m.iter().map(move |m| m * power(d)))
            .filter(inside)
            .collect()
    };
    let between = [2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0];
    if decades <= 2 {
        return (at(&[1.0, 2.0, 5.0]), at(&between));
    }
    let stride = [1, 2, 5]
        .iter()
        .flat_map(|m| (0..6).map(move |e| m * 10i32.pow(e)))
        .filter(|s| (d1.div_euclid(*s) - (d0 + s - 1).div_euclid(*s) + 1) as usize <= LOG_LABELS)
        .min()
        .unwrap_or(d1 - d0 + 1);
    let bold = (d0..=d1)
        .filter(|d| d.rem_euclid(stride) == 0)
        .map(power)
        .collect();
    let light = if stride == 1 {
        at(&between)
    } else {
        (d0..=d1)
            .filter(|d| d.rem_euclid(stride) != 0)
            .map(power)
            .collect()
    };
    (bold, light)
}

/// At most this many labelled ticks on a log axis.
const LOG_LABELS: usize = 8;

/// A tick label: at most six significant digits, exponent form outside [1e-3, 1e5).
fn tick_label(v: f64) -> String {
    let r: f64 = format!("{v:.5e}").parse().unwrap_or(v);
    if r == 0.0 {
        "0".into()
    } else if r.abs() >= 1e5 || r.abs() < 1e-3 {
        format!("{r:e}")
    } else {
        format!("{r}")
    }
}

/// Draws `figure` on `root`, every pixel length (type, lines, margins, markers) times `k`.
fn render<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    figure: &Figure,
    k: u32,
) -> Result<(), String> {
    let kf = k as f64;
    let ki = k as i32;
    drawing(root.fill(&WHITE))?;
    let (width, _) = root.dim_in_pixel();

    // The title on one line: smaller type for a long one.
    let mut title_px = TITLE_PX;
    while title_px > 16.0 {
        let (w, _) = drawing(
            root.estimate_text_size(&figure.title, &(FONT, title_px * kf).into_font().into()),
        )?;
        if w + 40 * k <= width {
            break;
        }
        title_px -= 2.0;
    }
    // The title as plotters' `titled` draws it, but with its padding (`titled`'s fixed 5 px)
    // scaled too.
    let title_font: TextStyle = (FONT, title_px * kf).into_font().into();
    let (_, title_h) = drawing(root.estimate_text_size(&figure.title, &title_font))?;
    let (top, pad) = (14 * ki, 5 * ki);
    let title_font = title_font.pos(plotters::style::text_anchor::Pos::new(
        plotters::style::text_anchor::HPos::Center,
        plotters::style::text_anchor::VPos::Top,
    ));
    let at = ((width / 2) as i32, top + pad);
    drawing(root.draw(&Text::new(figure.title.clone(), at, title_font)))?;
    let body = root.margin(top + 2 * pad + title_h as i32, 0, 0, 0);

    // The legend in a column of its own, right of the chart.
    let legend_font: TextStyle = (FONT, LEGEND_PX * kf).into_font().into();
    let mut widest = 0;
    for entry in legend_entries(&figure.legend) {
        widest = widest.max(drawing(root.estimate_text_size(&entry.label, &legend_font))?.0);
    }
    let legend_width = (widest + 100 * k).min(width * 2 / 5);
    let (chart_area, legend_area) = body.split_horizontally(width - legend_width);

    let xs = figure
        .series
        .iter()
        .flat_map(|s| s.line.iter().chain(&s.band).map(|p| p.0));
    let ys = figure
        .series
        .iter()
        .flat_map(|s| s.line.iter().chain(&s.band).map(|p| p.1));
    let markers = figure.series.iter().any(|s| s.markers);
    let (x0, x1) = axis_range(xs, figure.logx, markers);
    let (y0, y1) = axis_range(ys, figure.logy, true);
    // A log axis with the ticks of `log_ticks` (plotters' own left most decades of a wide
    // range unlabelled: 1e-46 to 1e2 had two labels, 1e-4 and 1e-10).
    let log = |lo: f64, hi: f64| {
        let (bold, light) = log_ticks(lo, hi);
        (lo..hi)
            .log_scale()
            .with_key_points(bold)
            .with_light_points(light)
    };
    match (figure.logx, figure.logy) {
        (false, false) => draw_chart(&chart_area, x0..x1, y0..y1, figure, k)?,
        (true, false) => draw_chart(&chart_area, log(x0, x1), y0..y1, figure, k)?,
        (false, true) => draw_chart(&chart_area, x0..x1, log(y0, y1), figure, k)?,
        (true, true) => draw_chart(&chart_area, log(x0, x1), log(y0, y1), figure, k)?,
    }
    draw_legend(&legend_area, &figure.legend, k)
}

/// The legend's entries, the ones past [`LEGEND_MAX`] summarized as one.
fn legend_entries(legend: &[LegendEntry]) -> Vec<LegendEntry> {
    if legend.len() <= LEGEND_MAX {
        return legend.to_vec();
    }
    let mut shown = legend[..LEGEND_MAX - 1].to_vec();
    shown.push(LegendEntry {
        label: format!("… {} more", legend.len() - (LEGEND_MAX - 1)),
        color: WHITE,
        dash: 0,
    });
    shown
}

fn line_style(color: RGBColor, k: u32) -> ShapeStyle {
    ShapeStyle {
        color: color.to_rgba(),
        filled: false,
        stroke_width: LINE_WIDTH * k,
    }
}

fn draw_chart<DB, X, Y>(
    area: &DrawingArea<DB, Shift>,
    x: X,
    y: Y,
    figure: &Figure,
    k: u32,
) -> Result<(), String>
where
    DB: DrawingBackend,
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let mut chart = drawing(
        ChartBuilder::on(area)
            .margin_top(10 * k)
            .margin_left(10 * k)
            .margin_right(30 * k)
            .margin_bottom(10 * k)
            .x_label_area_size(90 * k)
            .y_label_area_size(130 * k)
            .build_cartesian_2d(x, y),
    )?;
    let format = |v: &f64| tick_label(*v);
    let kf = k as f64;
    drawing(
        chart
            .configure_mesh()
            .x_desc(figure.x_label.as_str())
            .y_desc(figure.y_label.as_str())
            .x_labels(8)
            .y_labels(8)
            .x_label_formatter(&format)
            .y_label_formatter(&format)
            .label_style((FONT, TICK_PX * kf))
            .axis_desc_style((FONT, AXIS_LABEL_PX * kf))
            .bold_line_style(RGBColor(215, 215, 215).stroke_width(k))
            .light_line_style(RGBColor(240, 240, 240).stroke_width(k))
            .axis_style(ShapeStyle {
                color: BLACK.to_rgba(),
                filled: false,
                stroke_width: 2 * k,
            })
            .draw(),
    )?;
    for s in &figure.series {
        if !s.band.is_empty() {
            drawing(chart.draw_series(std::iter::once(Polygon::new(
                s.band.clone(),
                s.color.mix(0.2).filled(),
            ))))?;
        }
    }
    for s in &figure.series {
        let style = line_style(s.color, k);
        if s.dash == 0 {
            drawing(chart.draw_series(LineSeries::new(s.line.iter().copied(), style)))?;
        } else {
            let (dash, gap) = DASHES[s.dash];
            drawing(chart.draw_series(DashedLineSeries::new(
                s.line.iter().copied(),
                dash * k,
                gap * k,
                style,
            )))?;
        }
        // A series of one point has no line to show it: it is drawn as a marker.
        if s.markers || s.line.len() == 1 {
            drawing(
                chart.draw_series(
                    s.line
                        .iter()
                        .map(|&p| Circle::new(p, 6 * k, s.color.filled())),
                ),
            )?;
        }
    }
    Ok(())
}

fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    legend: &[LegendEntry],
    k: u32,
) -> Result<(), String> {
    let font: TextStyle = (FONT, LEGEND_PX * k as f64).into_font().into();
    let font = font.pos(plotters::style::text_anchor::Pos::new(
        plotters::style::text_anchor::HPos::Left,
        plotters::style::text_anchor::VPos::Center,
    ));
    let ki = k as i32;
    let row = (LEGEND_PX * 1.5) as i32 * ki;
    let (start, stop) = (10 * ki, 60 * ki);
    for (i, entry) in legend_entries(legend).iter().enumerate() {
        let y = 30 * ki + row * i as i32;
        if entry.color != WHITE {
            let style = line_style(entry.color, k);
            let (dash, gap) = DASHES[entry.dash];
            if dash == 0 {
                drawing(area.draw(&PathElement::new(vec![(start, y), (stop, y)], style)))?;
            } else {
                let mut x = start;
                while x < stop {
                    let end = (x + (dash * k) as i32).min(stop);
                    drawing(area.draw(&PathElement::new(vec![(x, y), (end, y)], style)))?;
                    x = end + (gap * k) as i32;
                }
            }
        }
        let at = (72 * ki, y);
        drawing(area.draw(&Text::new(entry.label.clone(), at, font.clone())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_by_full_or_base_name() {
        let available: Vec<String> = ["loss", "sv[0]", "sv[1]", "test"]
            .map(String::from)
            .to_vec();
        assert_eq!(choose_columns(&[], &available).unwrap(), ["loss"]);
        assert_eq!(
            choose_columns(&["sv".into()], &available).unwrap(),
            ["sv[0]", "sv[1]"]
        );
        assert_eq!(
            choose_columns(&["sv[1]".into(), "loss".into()], &available).unwrap(),
            ["sv[1]", "loss"]
        );
        let err = choose_columns(&["nope".into()], &available).unwrap_err();
        assert_eq!(
            err,
            "no column `nope`; the recorded columns are: loss, sv[0]…sv[1], test"
        );
        let no_loss: Vec<String> = ["a", "b"].map(String::from).to_vec();
        assert_eq!(choose_columns(&[], &no_loss).unwrap(), ["a", "b"]);
    }

    #[test]
    fn mean_and_band_over_equal_x() {
        let (line, band) = mean_and_band(vec![(1.0, 2.0), (0.0, 1.0), (1.0, 4.0), (0.0, 3.0)]);
        assert_eq!(line, [(0.0, 2.0), (1.0, 3.0)]);
        assert_eq!(band, [(0.0, 3.0), (1.0, 4.0), (1.0, 2.0), (0.0, 1.0)]);
        let (line, band) = mean_and_band(vec![(0.0, 1.0), (1.0, 2.0)]);
        assert_eq!(line, [(0.0, 1.0), (1.0, 2.0)]);
        assert!(band.is_empty());
    }

    #[test]
    fn box_average_rounds_the_mean_of_each_square() {
        // A 4×2 picture averaged over 2×2 squares to 2×1: red `v`, green `255 - v`, blue 7.
        let rows = [[0u8, 255, 10, 20], [255, 255, 1, 2]];
        let big: Vec<u8> = rows
            .iter()
            .flatten()
            .flat_map(|&v| [v, 255 - v, 7])
            .collect();
        // Red: 765 / 4 = 191.25 and 33 / 4 = 8.25; green: 255 / 4 = 63.75 and
        // 987 / 4 = 246.75; each rounded to the nearest.
        assert_eq!(box_average(&big, (2, 1), 2), vec![191, 64, 7, 8, 247, 7]);
        // Factor 1 is the identity.
        assert_eq!(box_average(&big, (4, 2), 1), big);
    }

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(tick_label(0.30000000000000004), "0.3");
        assert_eq!(tick_label(1e-5), "1e-5");
        assert_eq!(tick_label(2000.0), "2000");
        assert_eq!(tick_label(1e6), "1e6");
        assert_eq!(tick_label(0.0), "0");
    }

    #[test]
    fn log_axes_label_powers_of_ten_across_the_whole_range() {
        let labels = |lo: f64, hi: f64| -> Vec<String> {
            log_ticks(lo, hi).0.into_iter().map(tick_label).collect()
        };
        // The optimizers example's 1e-46 to 1e2: a label every ten decades.
        let (lo, hi) = axis_range([3e-46, 50.0].into_iter(), true, true);
        assert_eq!(labels(lo, hi), ["1e-40", "1e-30", "1e-20", "1e-10", "1"]);
        assert_eq!(log_ticks(lo, hi).1.len(), 49 - 5);
        // Twelve decades: every second one; four: every one.
        assert_eq!(
            labels(1e-10, 1e2),
            ["1e-10", "1e-8", "1e-6", "1e-4", "0.01", "1", "100"]
        );
        assert_eq!(labels(1e-3, 1e1), ["0.001", "0.01", "0.1", "1", "10"]);
        // Two decades or fewer: 1, 2 and 5 times each power, light lines at the rest.
        assert_eq!(
            labels(0.01, 1.0),
            ["0.01", "0.02", "0.05", "0.1", "0.2", "0.5", "1"]
        );
        assert_eq!(labels(0.9, 11.0), ["1", "2", "5", "10"]);
        assert_eq!(
            log_ticks(1.0, 10.0).1,
            [2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
        );
        // At most `LOG_LABELS` labels over any range, and at least two over two decades.
        for (lo, hi) in [(1e-300, 1e300), (1e-7, 1e1), (1e-17, 1e0), (1.0, 1e9)] {
            let n = log_ticks(lo, hi).0.len();
            assert!((2..=LOG_LABELS).contains(&n), "{lo} {hi}: {n}");
        }
    }

    #[test]
    fn log_ranges_cover_whole_decades() {
        let close = |(a, b): (f64, f64), (c, d): (f64, f64)| {
            assert!(
                (a / c - 1.0).abs() < 1e-6 && (b / d - 1.0).abs() < 1e-6,
                "{a} {b}"
            );
        };
        close(
            axis_range([0.03, 0.5].into_iter(), true, false),
            (0.01, 1.0),
        );
        close(axis_range([2.0].into_iter(), true, false), (1.0, 10.0));
        let widen = 10f64.powf(0.05);
        close(
            axis_range([0.001, 0.1].into_iter(), true, true),
            (0.001 / widen, 0.1 * widen),
        );
        assert_eq!(
            axis_range([0.0, 10.0].into_iter(), false, false),
            (0.0, 10.0)
        );
    }
}
