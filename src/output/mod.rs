//! The run folder (LANGUAGE.md section 9): `trajectory.csv`, `run.json` and `params/NAME.npy`.
//!
//! # Formats
//! * `trajectory.csv` is RFC 4180 (CRLF line ends, fields with `,`, `"` or line breaks
//!   quoted by the csv crate): a `step` column, then one column per recorded scalar
//!   ([`column_names`]). Every value is written with [`format_float`], ints recorded
//!   (e.g. `rank`) included, so an integral value reads `3.0`; a cell of a record clause
//!   that was not due at that step is empty.
//! * `run.json` is [`RunInfo`], pretty-printed by serde_json.
//! * `params/NAME.npy`: float params as `<f8`, int params as `<i8`, C order.
//!
//! [`folder`] writes a folder while its run runs.

pub mod folder;

use crate::tensor::Tensor;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The CSV column names of a recorded value: `name` for a scalar, `name[i]` for a
/// vector, `name[i,j]` for a matrix (no space), and so on for higher ranks, in
/// row-major order. A shape with a 0 dimension has no columns.
pub fn column_names(name: &str, shape: &[usize]) -> Vec<String> {
    if shape.is_empty() {
        return vec![name.to_string()];
    }
    let total: usize = shape.iter().product();
    let mut out = Vec::with_capacity(total);
    let mut index = vec![0usize; shape.len()];
    for _ in 0..total {
        let parts: Vec<String> = index.iter().map(|i| i.to_string()).collect();
        out.push(format!("{name}[{}]", parts.join(",")));
        // Increment the row-major multi-index, last axis fastest.
        for axis in (0..shape.len()).rev() {
            index[axis] += 1;
            if index[axis] < shape[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
    out
}

/// The shortest decimal form of `v` that parses back to the same bits (Rust's `{:?}`:
/// `0.1`, `3.0`, `1e300`, `5e-324`, `-0.0`), and `nan`, `inf`, `-inf` for non-finite
/// values.
pub fn format_float(v: f64) -> String {
    if v.is_nan() {
        "nan".to_string()
    } else if v.is_infinite() {
        if v > 0.0 { "inf" } else { "-inf" }.to_string()
    } else {
        format!("{v:?}")
    }
}

/// A recorded trajectory: the column names (without `step`) and one row per recorded
/// step, `None` for an empty cell.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Trajectory {
    pub columns: Vec<String>,
    pub rows: Vec<(u64, Vec<Option<f64>>)>,
}

/// What a flow did: `traj run` prints it, `run.json` keeps it.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FlowCounts {
    /// The time the flow reached.
    pub t: f64,
    pub accepted_steps: u64,
    pub rejected_steps: u64,
    /// Gradients evaluated: the stages, the initial step's, and those at recorded times.
    pub gradient_evaluations: u64,
    /// The accepted steps whose stages the JIT's native loop computed (`jit::flow_loop`);
    /// not in `run.json`.
    #[serde(skip)]
    pub native_steps: u64,
}

/// Where recorded rows go, in step order: [`Trajectory`] keeps them (a REPL session's
/// rows, and `session::run`'s), the run folder's `trajectory.csv` appends them.
pub trait Rows {
    /// The column names (without `step`), once, before any row.
    fn start(&mut self, columns: &[String]) -> Result<(), String>;
    /// Row `step`, one cell per column (`None`: its clause was not due).
    fn push(&mut self, step: u64, row: Vec<Option<f64>>) -> Result<(), String>;
    /// A row of a gradient flow: `step` counts accepted steps, and several rows (at times
    /// inside one step) may share it.
    fn push_timed(&mut self, step: u64, row: Vec<Option<f64>>) -> Result<(), String> {
        self.push(step, row)
    }
    /// Called between steps: a sink that buffers may write out what it holds.
    fn tick(&mut self) -> Result<(), String> {
        Ok(())
    }
}

impl Rows for Trajectory {
    fn start(&mut self, columns: &[String]) -> Result<(), String> {
        self.columns = columns.to_vec();
        Ok(())
    }

    /// Adds row `step`, or replaces it when it is the last row already (a session
    /// recompiled at step k takes step k's gradient again).
    fn push(&mut self, step: u64, row: Vec<Option<f64>>) -> Result<(), String> {
        match self.rows.last_mut() {
            Some((s, r)) if *s == step => *r = row,
            _ => self.rows.push((step, row)),
        }
        Ok(())
    }

    fn push_timed(&mut self, step: u64, row: Vec<Option<f64>>) -> Result<(), String> {
        self.rows.push((step, row));
        Ok(())
    }
}

/// Writes `t` to `path` as RFC 4180 CSV (see the module docs).
pub fn write_trajectory_csv(path: &Path, t: &Trajectory) -> Result<(), String> {
    let mut w = folder::TrajectoryWriter::create(path)?;
    w.start(&t.columns)?;
    for (step, row) in &t.rows {
        w.push(*step, row.clone())?;
    }
    w.flush()
}

/// Reads a `trajectory.csv` back (the inverse of [`write_trajectory_csv`]: every float
/// parses back to the bits it was written from).
pub fn read_trajectory_csv(path: &Path) -> Result<Trajectory, String> {
    let fail = |e: &dyn std::fmt::Display| format!("cannot read {}: {e}", path.display());
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(path)
        .map_err(|e| fail(&e))?;
    let header = reader.headers().map_err(|e| fail(&e))?;
    if header.get(0) != Some("step") {
        return Err(fail(&"its first column is not `step`"));
    }
    let columns: Vec<String> = header.iter().skip(1).map(str::to_string).collect();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| fail(&e))?;
        let line = record.position().map_or(0, |p| p.line());
        let bad = |cell: &str| fail(&format!("line {line}: `{cell}` is not a number"));
        let step = record.get(0).unwrap_or_default();
        let step: u64 = step.parse().map_err(|_| bad(step))?;
        let cells = record
            .iter()
            .skip(1)
            .map(|cell| match cell {
                "" => Ok(None),
                _ => cell.parse::<f64>().map(Some).map_err(|_| bad(cell)),
            })
            .collect::<Result<Vec<_>, _>>()?;
        rows.push((step, cells));
    }
    Ok(Trajectory { columns, rows })
}

/// The contents of `run.json`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RunInfo {
    pub program: String,
    pub source_sha256: String,
    pub consts: BTreeMap<String, serde_json::Value>,
    pub seed: i64,
    pub backend: String,
    pub status: String,
    pub steps: u64,
    pub compile_seconds: f64,
    pub run_seconds: f64,
    pub version: String,
    pub message: Option<String>,
    /// A gradient flow's accepted and rejected steps and gradient evaluations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow: Option<FlowCounts>,
}

/// The SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks that a param name can be used as a file name in `params/`.
fn check_param_name(name: &str) -> Result<(), String> {
    let bad = name.is_empty()
        || name == "."
        || name == ".."
        || name.chars().any(|c| c == '/' || c == '\\' || c == '\0');
    if bad {
        return Err(format!(
            "cannot write param {name:?}: the name cannot be used as a file name"
        ));
    }
    Ok(())
}

/// Writes a whole run's folder at once: claims `dir` (created with its parents; an earlier
/// run in it is replaced, see [`folder::RunFolder::claim`]), then writes `trajectory.csv`,
/// `run.json` and `params/NAME.npy` for each param.
pub fn write_run_folder(
    dir: &Path,
    info: &RunInfo,
    trajectory: &Trajectory,
    params: &[(String, Tensor)],
) -> Result<(), String> {
    for (name, _) in params {
        check_param_name(name)?;
    }
    let folder = folder::RunFolder::claim(dir, true)?;
    write_trajectory_csv(&dir.join("trajectory.csv"), trajectory)?;
    folder.write_info(info)?;
    folder.write_params(params)
}

/// Civil date (year, month, day) of a count of days since 1970-01-01, by Howard
/// Hinnant's `civil_from_days` (proleptic Gregorian, valid for all `i64` days in range).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32; // [1, 12]
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `YYYYMMDD-HHMMSS` in UTC of a Unix time in seconds.
fn utc_stamp(unix_seconds: i64) -> String {
    let days = unix_seconds.div_euclid(86_400);
    let secs = unix_seconds.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The default run folder, `runs/NAME-YYYYMMDD-HHMMSS` (UTC, whole seconds), NAME the
/// program file's stem (`run` if it has none).
pub fn default_run_dir(program: &Path, now: SystemTime) -> PathBuf {
    let unix = match now.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        // Before 1970: round down to the whole second.
        Err(e) => {
            let d = e.duration();
            let s = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            if d.subsec_nanos() > 0 { -s - 1 } else { -s }
        }
    };
    let name = program
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "run".to_string());
    PathBuf::from("runs").join(format!("{name}-{}", utc_stamp(unix)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, IxDyn};
    use std::time::Duration;

    fn temp_dir(tag: &str) -> PathBuf {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        std::env::temp_dir().join(format!(
            "traj-output-test-{tag}-{}-{nanos}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ))
    }

    #[test]
    fn column_names_by_rank() {
        assert_eq!(column_names("loss", &[]), vec!["loss"]);
        assert_eq!(column_names("s", &[3]), vec!["s[0]", "s[1]", "s[2]"]);
        assert_eq!(
            column_names("W", &[2, 3]),
            vec!["W[0,0]", "W[0,1]", "W[0,2]", "W[1,0]", "W[1,1]", "W[1,2]"]
        );
        let t = column_names("T", &[2, 1, 2]);
        assert_eq!(t, vec!["T[0,0,0]", "T[0,0,1]", "T[1,0,0]", "T[1,0,1]"]);
        assert!(column_names("e", &[2, 0]).is_empty());
        assert_eq!(column_names("x", &[1]), vec!["x[0]"]);
    }

    #[test]
    fn format_float_spellings() {
        assert_eq!(format_float(f64::NAN), "nan");
        assert_eq!(format_float(f64::INFINITY), "inf");
        assert_eq!(format_float(f64::NEG_INFINITY), "-inf");
        assert_eq!(format_float(-0.0), "-0.0");
        assert_eq!(format_float(0.0), "0.0");
        assert_eq!(format_float(3.0), "3.0");
        assert_eq!(format_float(0.1), "0.1");
        assert_eq!(format_float(1e300), "1e300");
        assert_eq!(format_float(5e-324), "5e-324");
        // The spellings parse back.
        assert!(format_float(f64::NAN).parse::<f64>().unwrap().is_nan());
        assert_eq!("inf".parse::<f64>().unwrap(), f64::INFINITY);
        assert_eq!("-inf".parse::<f64>().unwrap(), f64::NEG_INFINITY);
    }

    #[test]
    fn format_float_round_trips() {
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let mut values = vec![
            0.0,
            -0.0,
            1e300,
            -1e300,
            f64::MAX,
            f64::MIN,
            f64::MIN_POSITIVE,
            5e-324,
            2.225_073_858_507_201e-308,
            0.1 + 0.2,
            1.0 / 3.0,
            123456789012345680.0,
            1e-7,
            1e16,
        ];
        for _ in 0..20_000 {
            // Random bit patterns cover every exponent, subnormals included.
            values.push(f64::from_bits(next()));
        }
        for _ in 0..2_000 {
            // Subnormals specifically.
            values.push(f64::from_bits(next() & 0x000f_ffff_ffff_ffff));
        }
        for _ in 0..2_000 {
            values.push((next() >> 11) as f64 / (1u64 << 53) as f64);
        }
        let mut checked = 0;
        for v in values {
            if !v.is_finite() {
                continue;
            }
            let s = format_float(v);
            let back: f64 = s.parse().unwrap();
            assert_eq!(back.to_bits(), v.to_bits(), "{v:e} -> {s}");
            checked += 1;
        }
        assert!(checked > 20_000);
    }

    #[test]
    fn trajectory_csv_reads_back() {
        let dir = temp_dir("csv");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("trajectory.csv");
        let values = [
            0.1 + 0.2,
            -0.0,
            1e300,
            5e-324,
            3.0,
            f64::NAN,
            f64::NEG_INFINITY,
        ];
        let t = Trajectory {
            columns: vec![
                "loss".into(),
                "W[0,1]".into(),
                "odd \"name\"".into(),
                "rank".into(),
            ],
            rows: vec![
                (
                    0,
                    vec![Some(values[0]), Some(values[1]), None, Some(values[4])],
                ),
                (10, vec![Some(values[2]), None, Some(values[3]), None]),
                (20, vec![Some(values[5]), Some(values[6]), None, None]),
            ],
        };
        write_trajectory_csv(&path, &t).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("step,loss,\"W[0,1]\",\"odd \"\"name\"\"\",rank\r\n"),
            "{text}"
        );
        assert!(
            text.contains("\r\n0,0.30000000000000004,-0.0,,3.0\r\n"),
            "{text}"
        );

        let mut r = csv::Reader::from_path(&path).unwrap();
        let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
        let mut want_header = vec!["step".to_string()];
        want_header.extend(t.columns.iter().cloned());
        assert_eq!(header, want_header);
        let records: Vec<csv::StringRecord> = r.records().map(|x| x.unwrap()).collect();
        assert_eq!(records.len(), t.rows.len());
        for (rec, (step, row)) in records.iter().zip(&t.rows) {
            assert_eq!(rec.len(), 1 + row.len());
            assert_eq!(rec[0].parse::<u64>().unwrap(), *step);
            for (cell, want) in rec.iter().skip(1).zip(row) {
                match want {
                    None => assert_eq!(cell, ""),
                    Some(v) if v.is_nan() => assert!(cell.parse::<f64>().unwrap().is_nan()),
                    Some(v) => assert_eq!(cell.parse::<f64>().unwrap().to_bits(), v.to_bits()),
                }
            }
        }

        // A row of the wrong width is an error naming the file.
        let bad = Trajectory {
            columns: vec!["a".into()],
            rows: vec![(0, vec![])],
        };
        let e = write_trajectory_csv(&path, &bad).unwrap_err();
        assert!(e.contains("trajectory.csv") && e.contains("columns"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn info() -> RunInfo {
        let mut consts = BTreeMap::new();
        consts.insert("lr".to_string(), serde_json::json!(0.01));
        consts.insert("depth".to_string(), serde_json::json!(3));
        RunInfo {
            program: "examples/mc.traj".into(),
            source_sha256: sha256_hex(b"abc"),
            consts,
            seed: -7,
            backend: "interp".into(),
            status: "finished".into(),
            steps: 1000,
            compile_seconds: 0.25,
            run_seconds: 1.5,
            version: "0.1.0".into(),
            message: None,
            flow: None,
        }
    }

    #[test]
    fn sha256_known_values() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn run_folder_round_trip() {
        let dir = temp_dir("run").join("nested").join("run-1");
        let t = Trajectory {
            columns: vec!["loss".into()],
            rows: vec![(0, vec![Some(1.0)]), (1, vec![Some(0.5)])],
        };
        let w = ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![1.0, -2.5, 3.25, 0.0, 1e-300, -0.0])
            .unwrap();
        let b = ArrayD::from_shape_vec(IxDyn(&[3]), vec![1i64, -2, i64::MAX]).unwrap();
        let s = ArrayD::from_elem(IxDyn(&[]), 4.5f64);
        let params = vec![
            ("W".to_string(), Tensor::Float(w.clone())),
            ("b".to_string(), Tensor::Int(b.clone())),
            ("s".to_string(), Tensor::Float(s.clone())),
        ];
        let info = info();
        write_run_folder(&dir, &info, &t, &params).unwrap();

        let csv_text = std::fs::read_to_string(dir.join("trajectory.csv")).unwrap();
        assert_eq!(csv_text, "step,loss\r\n0,1.0\r\n1,0.5\r\n");

        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("run.json")).unwrap()).unwrap();
        let obj = json.as_object().unwrap();
        for key in [
            "program",
            "source_sha256",
            "consts",
            "seed",
            "backend",
            "status",
            "steps",
            "compile_seconds",
            "run_seconds",
            "version",
            "message",
        ] {
            assert!(obj.contains_key(key), "run.json lacks {key}");
        }
        assert_eq!(obj.len(), 11);
        assert_eq!(json["program"], "examples/mc.traj");
        assert_eq!(json["source_sha256"], sha256_hex(b"abc"));
        assert_eq!(json["consts"]["lr"], 0.01);
        assert_eq!(json["consts"]["depth"], 3);
        assert_eq!(json["seed"], -7);
        assert_eq!(json["backend"], "interp");
        assert_eq!(json["status"], "finished");
        assert_eq!(json["steps"], 1000);
        assert_eq!(json["compile_seconds"], 0.25);
        assert_eq!(json["run_seconds"], 1.5);
        assert_eq!(json["version"], "0.1.0");
        assert!(json["message"].is_null());

        let w_back: ArrayD<f64> = ndarray_npy::read_npy(dir.join("params/W.npy")).unwrap();
        assert_eq!(w_back.shape(), w.shape());
        assert!(
            w_back
                .iter()
                .zip(&w)
                .all(|(x, y)| x.to_bits() == y.to_bits())
        );
        let b_back: ArrayD<i64> = ndarray_npy::read_npy(dir.join("params/b.npy")).unwrap();
        assert_eq!(b_back, b);
        let s_back: ArrayD<f64> = ndarray_npy::read_npy(dir.join("params/s.npy")).unwrap();
        assert_eq!(s_back, s);

        // Writing again over an existing folder works.
        write_run_folder(&dir, &info, &t, &params).unwrap();
        std::fs::remove_dir_all(temp_dir_root(&dir)).unwrap();
    }

    /// The `traj-output-test-*` folder that `dir` lies in.
    fn temp_dir_root(dir: &Path) -> PathBuf {
        dir.parent().unwrap().parent().unwrap().to_path_buf()
    }

    #[test]
    fn run_folder_errors_name_the_path() {
        let root = temp_dir("err");
        std::fs::create_dir_all(&root).unwrap();
        // A file where the folder should be.
        let blocker = root.join("blocker");
        std::fs::write(&blocker, "x").unwrap();
        let e = write_run_folder(&blocker, &info(), &Trajectory::default(), &[]).unwrap_err();
        assert!(e.contains("blocker"), "{e}");
        // A param name that is not a file name.
        let params = vec![("../x".to_string(), Tensor::scalar(1.0))]; // a name, not a path
        let e = write_run_folder(&root.join("r"), &info(), &Trajectory::default(), &params)
            .unwrap_err();
        assert!(e.contains("../x"), "{e}"); // a name, not a path
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn default_run_dir_dates() {
        let at = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let p = Path::new("examples/matrix_completion.traj");
        assert_eq!(
            default_run_dir(p, at(0)),
            PathBuf::from("runs/matrix_completion-19700101-000000")
        );
        assert_eq!(
            default_run_dir(p, at(951_782_400)),
            PathBuf::from("runs/matrix_completion-20000229-000000")
        );
        // 1795478400 = 20781 days exactly: 2026-11-24 (checked with Python's datetime).
        assert_eq!(
            default_run_dir(p, at(1_795_478_400)),
            PathBuf::from("runs/matrix_completion-20261124-000000")
        );
        assert_eq!(
            default_run_dir(p, at(1_709_251_199)),
            PathBuf::from("runs/matrix_completion-20240229-235959")
        );
        assert_eq!(
            default_run_dir(p, at(4_102_444_800)),
            PathBuf::from("runs/matrix_completion-21000101-000000")
        );
        assert_eq!(
            default_run_dir(p, at(253_402_300_799) + Duration::from_millis(999)),
            PathBuf::from("runs/matrix_completion-99991231-235959")
        );
        // Before the epoch rounds down.
        let before = SystemTime::UNIX_EPOCH - Duration::from_millis(500);
        assert_eq!(
            default_run_dir(Path::new("a.traj"), before),
            PathBuf::from("runs/a-19691231-235959")
        );
        assert_eq!(
            default_run_dir(Path::new(""), at(0)),
            PathBuf::from("runs/run-19700101-000000")
        );
    }
}
