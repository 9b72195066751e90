//! `sweep_summary.csv`: each sweep point's final recorded values summarised over its seeds.
//!
//! One row per point of the swept consts other than `seed`, in sweep order: those consts,
//! `seeds` (how many points share them), then `COLUMN_mean`, `COLUMN_std`, `COLUMN_min`,
//! `COLUMN_max` for each trajectory column of `sweep.csv`, over the points that recorded it
//! (a failed point has no values). `std` is the sample standard deviation (n − 1); its cell
//! is empty for fewer than two values, and every cell of a column no point recorded is
//! empty. A `nan` among the values makes the mean, std, min and max `nan`.

use std::path::Path;

use crate::output::format_float;
use crate::sweep::{PointOutcome, format_value};

/// Mean, sample standard deviation (`None` below two values), min and max of `values`
/// (not empty); all `nan` if one is.
pub fn stats(values: &[f64]) -> (f64, Option<f64>, f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let std = (values.len() > 1).then(|| {
        let squares: f64 = values.iter().map(|v| (v - mean) * (v - mean)).sum();
        (squares / (n - 1.0)).sqrt()
    });
    if values.iter().any(|v| v.is_nan()) {
        return (f64::NAN, std.map(|_| f64::NAN), f64::NAN, f64::NAN);
    }
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (mean, std, min, max)
}

/// Writes `sweep_summary.csv` (see the module docs) beside `sweep.csv`.
pub fn write_sweep_summary(path: &Path, outcomes: &[PointOutcome]) -> Result<(), String> {
    let fail = |e: &dyn std::fmt::Display| format!("cannot write {}: {e}", path.display());
    let keys: Vec<&str> = outcomes
        .first()
        .map(|o| {
            o.point
                .iter()
                .map(|(k, _)| k.as_str())
                .filter(|k| *k != "seed")
                .collect()
        })
        .unwrap_or_default();
    let mut columns: Vec<&str> = Vec::new();
    for o in outcomes {
        for (c, _) in &o.last {
            if !columns.contains(&c.as_str()) {
                columns.push(c.as_str());
            }
        }
    }

    // Points grouped by their consts other than `seed`, in order of first appearance.
    let mut groups: Vec<(Vec<String>, Vec<&PointOutcome>)> = Vec::new();
    for o in outcomes {
        let consts: Vec<String> = keys
            .iter()
            .map(|k| {
                o.point
                    .iter()
                    .find(|(name, _)| name == k)
                    .map(|(_, v)| format_value(*v))
                    .unwrap_or_default()
            })
            .collect();
        match groups.iter_mut().find(|(c, _)| *c == consts) {
            Some((_, members)) => members.push(o),
            None => groups.push((consts, vec![o])),
        }
    }

    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_path(path)
        .map_err(|e| fail(&e))?;
    let mut header: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    header.push("seeds".into());
    for c in &columns {
        for stat in ["mean", "std", "min", "max"] {
            header.push(format!("{c}_{stat}"));
        }
    }
    w.write_record(&header).map_err(|e| fail(&e))?;
    for (consts, members) in &groups {
        let mut record = consts.clone();
        record.push(members.len().to_string());
        for c in &columns {
            let values: Vec<f64> = members
                .iter()
                .filter_map(|o| o.last.iter().find(|(name, _)| name == c).map(|(_, v)| *v))
                .collect();
            if values.is_empty() {
                record.extend(std::iter::repeat_n(String::new(), 4));
                continue;
            }
            let (mean, std, min, max) = stats(&values);
            record.push(format_float(mean));
            record.push(std.map(format_float).unwrap_or_default());
            record.push(format_float(min));
            record.push(format_float(max));
        }
        w.write_record(&record).map_err(|e| fail(&e))?;
    }
    w.flush().map_err(|e| fail(&e))
}

/// Writes `sweep.csv` and `sweep_summary.csv` into `dir` from `outcomes`.
pub fn write_results(dir: &Path, outcomes: &[PointOutcome]) -> Result<(), String> {
    crate::sweep::write_sweep_csv(&dir.join("sweep.csv"), outcomes)?;
    write_sweep_summary(&dir.join("sweep_summary.csv"), outcomes)
}

#[cfg(test)]
mod tests {
    use super::stats;

    #[test]
    fn sample_statistics() {
        let (mean, std, min, max) = stats(&[1.0, 2.0, 6.0]);
        assert_eq!(mean, 3.0);
        assert_eq!(std, Some(7.0f64.sqrt()));
        assert_eq!((min, max), (1.0, 6.0));
        assert_eq!(stats(&[5.0]), (5.0, None, 5.0, 5.0));
        let (mean, std, min, max) = stats(&[1.0, f64::NAN]);
        assert!(mean.is_nan() && std.is_some_and(f64::is_nan) && min.is_nan() && max.is_nan());
    }
}
