//! How the REPL prints values, tables and plots: tensors NumPy-like (aligned columns, long
//! axes truncated with the elided count), the trajectory as a table, and a line plot of
//! recorded columns drawn with characters.

use crate::output::{Trajectory, format_float};
use crate::tensor::Tensor;

/// Entries shown at each end of an axis longer than `2 * EDGE + 1`.
const EDGE: usize = 3;

/// A value with its dtype and shape: scalars in full precision (shortest round-trip),
/// arrays aligned and truncated unless `full`.
pub fn tensor(t: &Tensor, full: bool) -> String {
    let shape = t.shape().to_vec();
    let dtype = match t {
        Tensor::Float(_) => "float",
        Tensor::Int(_) => "int",
    };
    let cells: Vec<String> = match t {
        Tensor::Float(a) => a.iter().map(|x| format_float(*x)).collect(),
        Tensor::Int(a) => a.iter().map(|x| x.to_string()).collect(),
    };
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let head = format!("{dtype} [{}]", dims.join(", "));
    if shape.is_empty() {
        return format!("{}  : {head}", cells.first().cloned().unwrap_or_default());
    }
    let short: Vec<String> = match t {
        Tensor::Float(a) => {
            // One notation for the whole array, as NumPy: scientific when any finite
            // nonzero entry is outside [1e-4, 1e6).
            let scientific = a
                .iter()
                .any(|x| x.is_finite() && *x != 0.0 && !(1e-4..1e6).contains(&x.abs()));
            a.iter()
                .map(|x| {
                    if scientific && x.is_finite() {
                        format!("{x:.5e}")
                    } else {
                        short_float(*x)
                    }
                })
                .collect()
        }
        Tensor::Int(_) => cells.clone(),
    };
    let cells = if full { &cells } else { &short };
    let width = cells.iter().map(|c| c.len()).max().unwrap_or(1);
    let mut elided = 0usize;
    let body = block(cells, &shape, 0, width, full, &mut elided, 0);
    let mut out = format!("{head}\n{body}");
    if elided > 0 {
        out.push_str(&format!(
            "\n({elided} entries elided; `:show NAME --full` or `:full EXPR` prints all)"
        ));
    }
    out
}

/// Six significant digits, as NumPy prints.
fn short_float(x: f64) -> String {
    if !x.is_finite() || x == 0.0 {
        return format_float(x);
    }
    let a = x.abs();
    if (1e-4..1e6).contains(&a) {
        let digits = (5 - a.log10().floor() as i32).max(0) as usize;
        let s = format!("{x:.digits$}");
        let s = s.trim_end_matches('0');
        if s.ends_with('.') {
            format!("{s}0")
        } else {
            s.to_string()
        }
    } else {
        format!("{x:.5e}")
    }
}

/// The indices of an axis of length n that are shown; `None` marks the elision.
fn shown(n: usize, full: bool) -> Vec<Option<usize>> {
    if full || n <= 2 * EDGE + 1 {
        (0..n).map(Some).collect()
    } else {
        (0..EDGE)
            .map(Some)
            .chain(std::iter::once(None))
            .chain((n - EDGE..n).map(Some))
            .collect()
    }
}

/// Nested brackets of the sub-array at `offset` from `axis` on.
fn block(
    cells: &[String],
    shape: &[usize],
    axis: usize,
    width: usize,
    full: bool,
    elided: &mut usize,
    offset: usize,
) -> String {
    let stride: usize = shape[axis + 1..].iter().product();
    let n = shape[axis];
    let idx = shown(n, full);
    if n > idx.iter().flatten().count() {
        *elided += (n - idx.iter().flatten().count()) * stride;
    }
    if axis + 1 == shape.len() {
        let parts: Vec<String> = idx
            .iter()
            .map(|i| match i {
                Some(i) => format!("{:>width$}", cells[offset + i]),
                None => "...".to_string(),
            })
            .collect();
        return format!("[{}]", parts.join(", "));
    }
    let indent = " ".repeat(axis + 1);
    let sep = format!(",{}{indent}", "\n".repeat(shape.len() - axis - 1));
    let parts: Vec<String> = idx
        .iter()
        .map(|i| match i {
            Some(i) => block(
                cells,
                shape,
                axis + 1,
                width,
                full,
                elided,
                offset + i * stride,
            ),
            None => "...".to_string(),
        })
        .collect();
    format!("[{}]", parts.join(&sep))
}

/// The trajectory as an aligned table (empty cells blank), at most `width` characters
/// wide: columns that do not fit go to further blocks below, each led by `step` (as
/// NumPy and pandas wrap wide tables).
pub fn table(t: &Trajectory, width: usize) -> String {
    if t.rows.is_empty() {
        return "(nothing recorded yet)".into();
    }
    let mut rows: Vec<Vec<String>> = vec![
        std::iter::once("step".to_string())
            .chain(t.columns.iter().cloned())
            .collect(),
    ];
    for (k, row) in &t.rows {
        rows.push(
            std::iter::once(k.to_string())
                .chain(row.iter().map(|c| c.map(short_float).unwrap_or_default()))
                .collect(),
        );
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|j| rows.iter().map(|r| r[j].len()).max().unwrap_or(0))
        .collect();
    // Blocks of columns after `step`, each as many as fit beside it (at least one).
    let mut blocks: Vec<Vec<usize>> = Vec::new();
    let mut used = widths[0];
    for j in 1..widths.len() {
        match blocks.last_mut() {
            Some(b) if used + 2 + widths[j] <= width => b.push(j),
            _ => {
                blocks.push(vec![j]);
                used = widths[0];
            }
        }
        used += 2 + widths[j];
    }
    if blocks.is_empty() {
        blocks.push(Vec::new());
    }
    let mut out = String::new();
    for (b, block) in blocks.iter().enumerate() {
        if b > 0 {
            out.push('\n');
        }
        for r in &rows {
            let cells: Vec<String> = std::iter::once(0)
                .chain(block.iter().copied())
                .map(|j| format!("{:>w$}", r[j], w = widths[j]))
                .collect();
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
        }
    }
    out
}

/// Marks of successive series.
const MARKS: &[char] = &['*', '+', 'o', 'x', '#', '@'];

/// A line plot of recorded columns against the step, at most `total` characters wide
/// (labels included) and `height` rows of marks high, on a log scale when `logy`
/// (non-positive values are then left out).
pub fn plot(
    t: &Trajectory,
    columns: &[String],
    logy: bool,
    total: usize,
    height: usize,
) -> Result<String, String> {
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for c in columns {
        let j = t.columns.iter().position(|x| x == c).ok_or_else(|| {
            let known = t.columns.join(", ");
            format!("no recorded column `{c}` (columns: {known})")
        })?;
        let pts: Vec<(f64, f64)> = t
            .rows
            .iter()
            .filter_map(|(k, row)| row[j].map(|v| (*k as f64, v)))
            .filter(|(_, v)| v.is_finite() && (!logy || *v > 0.0))
            .map(|(k, v)| (k, if logy { v.log10() } else { v }))
            .collect();
        series.push((c.clone(), pts));
    }
    let all: Vec<(f64, f64)> = series.iter().flat_map(|(_, p)| p.iter().copied()).collect();
    if all.is_empty() {
        return Err("nothing to plot yet: no recorded values (take some steps)".into());
    }
    let (x0, x1) = bounds(all.iter().map(|p| p.0));
    let (y0, y1) = bounds(all.iter().map(|p| p.1));
    // The ends' labels, with as many digits as it takes to tell them apart (up to 17).
    let label = |y: f64, digits: usize| {
        let v = if logy { 10f64.powf(y) } else { y };
        format!("{v:.digits$e}")
    };
    let digits = (3..17).find(|&d| label(y1, d) != label(y0, d)).unwrap_or(3);
    let (top, bottom) = (label(y1, digits), label(y0, digits));
    let lw = top.len().max(bottom.len());
    // The widest line is the x axis's: labels, ` +`, the marks, `  step`.
    let width = total.saturating_sub(lw + 8).max(10);
    let mut grid = vec![vec![' '; width]; height];
    let col = |x: f64| (((x - x0) / (x1 - x0)) * (width - 1) as f64).round() as usize;
    let row = |y: f64| height - 1 - (((y - y0) / (y1 - y0)) * (height - 1) as f64).round() as usize;
    for (s, (_, pts)) in series.iter().enumerate() {
        let mark = MARKS[s % MARKS.len()];
        // Each pair of neighbouring points joined by a straight run of marks.
        for w in pts.windows(2) {
            let (a, b) = (w[0], w[1]);
            let (ca, cb) = (col(a.0), col(b.0));
            // A steep run fills the rows between one column's mark and the next's, so
            // the line has no gaps.
            let mut previous = row(a.1);
            for c in ca..=cb {
                let f = if cb == ca {
                    1.0
                } else {
                    (c - ca) as f64 / (cb - ca) as f64
                };
                let r = row(a.1 + f * (b.1 - a.1));
                let (lo, hi) = if r < previous {
                    (r, (previous - 1).max(r))
                } else {
                    ((previous + 1).min(r), r)
                };
                for cell_row in lo..=hi {
                    if let Some(cell) = grid.get_mut(cell_row).and_then(|line| line.get_mut(c)) {
                        *cell = mark;
                    }
                }
                previous = r;
            }
        }
        if let [p] = pts.as_slice() {
            grid[row(p.1)][col(p.0)] = mark;
        }
    }
    let mut out = String::new();
    for (i, r) in grid.iter().enumerate() {
        let l = match i {
            0 => top.clone(),
            i if i == height - 1 => bottom.clone(),
            _ => String::new(),
        };
        let line: String = r.iter().collect();
        out.push_str(&format!("{l:>lw$} |{}\n", line.trim_end()));
    }
    let (left, right) = (format!("{x0}"), format!("{x1}"));
    out.push_str(&format!("{:>lw$} +{}\n", "", "-".repeat(width)));
    out.push_str(&format!(
        "{:>lw$}  {left}{}{right}  step\n",
        "",
        " ".repeat(width.saturating_sub(left.len() + right.len()))
    ));
    let legend: Vec<String> = series
        .iter()
        .enumerate()
        .map(|(s, (c, _))| format!("{} {c}", MARKS[s % MARKS.len()]))
        .collect();
    out.push_str(&format!(
        "{:>lw$}  {}{}\n",
        "",
        legend.join("   "),
        if logy { "  (log scale)" } else { "" }
    ));
    Ok(out)
}

/// The range of values, widened when they are all equal.
fn bounds(v: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = v.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
        (a.min(x), b.max(x))
    });
    if hi > lo {
        (lo, hi)
    } else {
        (lo - 0.5, hi + 0.5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, IxDyn};

    #[test]
    fn a_wide_table_wraps_into_blocks_led_by_step() {
        let columns: Vec<String> = (0..7).map(|i| format!("sv[{i}]")).collect();
        let t = Trajectory {
            rows: vec![
                (0, (0..7).map(|i| Some(0.123456789 * i as f64)).collect()),
                (200, (0..7).map(|i| Some(-31.6015 * i as f64)).collect()),
            ],
            columns,
        };
        let text = table(&t, 40);
        let blocks: Vec<&str> = text.split("\n\n").collect();
        assert!(blocks.len() >= 3, "{text}");
        for b in &blocks {
            let lines: Vec<&str> = b.lines().collect();
            assert_eq!(lines.len(), 3, "a header and two rows:\n{b}");
            assert!(lines[0].trim_start().starts_with("step"), "{b}");
            assert!(lines[2].trim_start().starts_with("200"), "{b}");
        }
        assert!(text.lines().all(|l| l.chars().count() <= 40), "{text}");
        // Every column once, in order.
        let headers: Vec<&str> = blocks
            .iter()
            .flat_map(|b| b.lines().next().unwrap().split_whitespace().skip(1))
            .collect();
        let want: Vec<String> = (0..7).map(|i| format!("sv[{i}]")).collect();
        assert_eq!(headers, want);
        // Wide enough: one block, as before.
        assert!(!table(&t, 200).contains("\n\n"));
    }

    #[test]
    fn plot_labels_tell_close_ends_apart() {
        let t = Trajectory {
            columns: vec!["loss".into()],
            rows: vec![(0, vec![Some(0.40673)]), (100, vec![Some(0.40671)])],
        };
        let text = plot(&t, &["loss".into()], true, 20, 5).expect("plots");
        let first = text.lines().next().expect("a line");
        let last_y = text.lines().nth(4).expect("five rows");
        assert!(first.starts_with("4.0673e-1 |"), "{text}");
        assert!(last_y.starts_with("4.0671e-1 |"), "{text}");
        // Ends that differ in their fourth digit keep the short form.
        let t = Trajectory {
            columns: vec!["loss".into()],
            rows: vec![(0, vec![Some(1.0)]), (100, vec![Some(0.25)])],
        };
        let text = plot(&t, &["loss".into()], false, 20, 5).expect("plots");
        assert!(text.trim_start().starts_with("1.000e0 |"), "{text}");
    }

    #[test]
    fn long_vectors_are_truncated_with_the_elided_count() {
        let t = Tensor::Float(ArrayD::from_shape_fn(IxDyn(&[10]), |i| i[0] as f64));
        let s = tensor(&t, false);
        assert_eq!(
            s,
            "float [10]\n[0.0, 1.0, 2.0, ..., 7.0, 8.0, 9.0]\n(4 entries elided; `:show NAME --full` or `:full EXPR` prints all)"
        );
        assert_eq!(short_float(0.123456789), "0.123457");
        assert_eq!(short_float(1234.56789), "1234.57");
        assert_eq!(short_float(1e-7), "1.00000e-7");
    }

    #[test]
    fn matrices_align_their_columns() {
        let t = Tensor::Float(
            ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![1.0, -20.5, 3.25, 4.0]).unwrap(),
        );
        assert_eq!(
            tensor(&t, false),
            "float [2, 2]\n[[  1.0, -20.5],\n [ 3.25,   4.0]]"
        );
    }
}
