//! `traj sweep --slurm`: a sweep's sbatch scripts, its job array and collecting job, and what `squeue` says of them.
//!
//! # Layout
//! `DIR/slurm/point.sbatch` runs one point, `traj sweep FILE --point $SLURM_ARRAY_TASK_ID
//! --out DIR`, with the binary, program and folder as absolute paths; its `#SBATCH` lines
//! carry the options given when the sweep began. `DIR/slurm/collect.sbatch` runs
//! `traj sweep --collect DIR`. Each submission, the first and every `--resume`, submits the
//! point script as ONE job array over the points it runs (`--array=0-11%2`, `3,7-9`) and the
//! collect script with `--dependency=afterany:ARRAY`, and appends a row `array_job,
//! collect_job,array` to `DIR/slurm/jobs.csv`. Tasks log to `DIR/slurm/ARRAY_INDEX.out`.
//!
//! # Decisions
//! * Options given again at `--resume` are passed on sbatch's command line, which overrides
//!   the scripts' `#SBATCH` lines; `--max-parallel` defaults to the last submission's.
//! * The queue is read with `squeue --array` (one line per task, pending ones included),
//!   keeping the tasks of this sweep's array jobs. Accounting (`sacct`) is not needed: a
//!   task that left the queue is known by its folder.
//! * `traj` runs the task with `exec`, so the scheduler's SIGTERM (`scancel`, time limit,
//!   preemption) reaches it: the point ends `interrupted` at a step boundary, or, killed
//!   outright after the grace time, leaves its `.part` folder.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::sweep::PointState;

/// The `--slurm` options of `traj sweep`.
#[derive(Clone, Debug, Default)]
pub struct SlurmOptions {
    pub partition: Option<String>,
    /// `HH:MM:SS` (or any form sbatch's `--time` takes).
    pub time: Option<String>,
    pub cpus_per_task: Option<u32>,
    /// sbatch's `--mem` (`4G`).
    pub mem: Option<String>,
    /// Tasks of the array run at once (`%K`).
    pub max_parallel: Option<u32>,
    /// More sbatch options, each passed as one argument (`--account=abc`).
    pub sbatch_args: Vec<String>,
}

impl SlurmOptions {
    /// The options as sbatch arguments, for both scripts (`cpus`: with `--cpus-per-task`,
    /// which only a point needs).
    fn arguments(&self, cpus: bool) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(p) = &self.partition {
            out.push(format!("--partition={p}"));
        }
        if let Some(t) = &self.time {
            out.push(format!("--time={t}"));
        }
        if let (true, Some(c)) = (cpus, self.cpus_per_task) {
            out.push(format!("--cpus-per-task={c}"));
        }
        if let Some(m) = &self.mem {
            out.push(format!("--mem={m}"));
        }
        out.extend(self.sbatch_args.iter().cloned());
        out
    }
}

/// The folder of a sweep's Slurm files.
pub fn slurm_dir(dir: &Path) -> PathBuf {
    dir.join("slurm")
}

/// `text` quoted for `sh`.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn path_text(path: &Path) -> Result<String, String> {
    path.to_str()
        .map(str::to_string)
        .ok_or_else(|| format!("the path {} is not UTF-8", path.display()))
}

/// Writes `DIR/slurm/point.sbatch` and `DIR/slurm/collect.sbatch` (all paths absolute:
/// `exe` is the running `traj`, `program` the sweep's program, `dir` its folder).
pub fn write_scripts(
    dir: &Path,
    exe: &Path,
    program: &Path,
    options: &SlurmOptions,
) -> Result<(), String> {
    let folder = slurm_dir(dir);
    std::fs::create_dir_all(&folder)
        .map_err(|e| format!("cannot create {}: {e}", folder.display()))?;
    let (exe, program, dir_text) = (path_text(exe)?, path_text(program)?, path_text(dir)?);
    let logs = path_text(&folder)?;
    let header = |name: &str, log: &str, cpus: bool| {
        let mut text =
            format!("#!/bin/sh\n#SBATCH --job-name={name}\n#SBATCH --output={logs}/{log}\n");
        for arg in options.arguments(cpus) {
            text += &format!("#SBATCH {arg}\n");
        }
        text
    };
    let point = header("traj-point", "%A_%a.out", true)
        + "# One point of the sweep: the array index is its index in points.csv.\n"
        + &format!(
            "exec {} sweep {} --point \"$SLURM_ARRAY_TASK_ID\" --out {}\n",
            quote(&exe),
            quote(&program),
            quote(&dir_text)
        );
    let collect = header("traj-collect", "collect-%j.out", false)
        + "# sweep.csv and sweep_summary.csv from the points' folders.\n"
        + &format!(
            "exec {} sweep --collect {}\n",
            quote(&exe),
            quote(&dir_text)
        );
    for (name, text) in [("point.sbatch", point), ("collect.sbatch", collect)] {
        let path = folder.join(name);
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Slurm's array spec for `indices` (ascending): runs as ranges, `0-11`, `3,7-9`, then
/// `%K` when at most K tasks may run at once.
pub fn array_spec(indices: &[usize], max_parallel: Option<u32>) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < indices.len() {
        let mut j = i;
        while j + 1 < indices.len() && indices[j + 1] == indices[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            indices[i].to_string()
        } else {
            format!("{}-{}", indices[i], indices[j])
        });
        i = j + 1;
    }
    let mut spec = parts.join(",");
    if let Some(k) = max_parallel {
        spec += &format!("%{k}");
    }
    spec
}

/// One submission of a sweep: a row of `DIR/slurm/jobs.csv`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submission {
    pub array_job: u64,
    pub collect_job: u64,
    /// The `--array` spec.
    pub array: String,
}

const JOBS: &str = "jobs.csv";

/// Every submission of the sweep in `dir`, oldest first (none before the first).
pub fn submissions(dir: &Path) -> Result<Vec<Submission>, String> {
    let path = slurm_dir(dir).join(JOBS);
    if !path.exists() {
        return Ok(Vec::new());
    }
    let fail = |e: &dyn std::fmt::Display| format!("cannot read {}: {e}", path.display());
    let mut r = csv::Reader::from_path(&path).map_err(|e| fail(&e))?;
    let mut out = Vec::new();
    for record in r.records() {
        let record = record.map_err(|e| fail(&e))?;
        let job = |i: usize| {
            record
                .get(i)
                .and_then(|t| t.parse::<u64>().ok())
                .ok_or_else(|| fail(&"a job id is not a number"))
        };
        out.push(Submission {
            array_job: job(0)?,
            collect_job: job(1)?,
            array: record.get(2).unwrap_or_default().to_string(),
        });
    }
    Ok(out)
}

fn record_submission(dir: &Path, s: &Submission) -> Result<(), String> {
    let path = slurm_dir(dir).join(JOBS);
    let fail = |e: &dyn std::fmt::Display| format!("cannot write {}: {e}", path.display());
    let new = !path.exists();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| fail(&e))?;
    let mut w = csv::Writer::from_writer(file);
    if new {
        w.write_record(["array_job", "collect_job", "array"])
            .map_err(|e| fail(&e))?;
    }
    w.write_record([
        s.array_job.to_string(),
        s.collect_job.to_string(),
        s.array.clone(),
    ])
    .map_err(|e| fail(&e))?;
    w.flush().map_err(|e| fail(&e))
}

/// Runs `sbatch --parsable ARGS...` and returns the job id it prints.
fn sbatch(args: &[String]) -> Result<u64, String> {
    let output = Command::new("sbatch")
        .arg("--parsable")
        .args(args)
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                "cannot run sbatch: it is not on the PATH (is this a Slurm login node?)".into()
            }
            _ => format!("cannot run sbatch: {e}"),
        })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!("sbatch refused the job: {}", stderr.trim()));
    }
    // `--parsable` prints `ID` or `ID;CLUSTER`.
    let first = stdout.trim().split(';').next().unwrap_or_default();
    first
        .parse()
        .map_err(|_| format!("sbatch printed `{}`, not a job id", stdout.trim()))
}

/// Submits the points `indices` of the sweep in `dir` as one job array, and the job that
/// collects once every task has ended; `options` (those given now) override the scripts'.
/// `max_parallel` is the throttle after the last submission's is taken as the default.
pub fn submit(dir: &Path, indices: &[usize], options: &SlurmOptions) -> Result<Submission, String> {
    let folder = slurm_dir(dir);
    let max_parallel = options.max_parallel.or_else(|| {
        let last = submissions(dir).ok()?.pop()?;
        last.array.split_once('%')?.1.parse().ok()
    });
    let array = array_spec(indices, max_parallel);
    let mut args = vec![format!("--array={array}")];
    args.extend(options.arguments(true));
    args.push(path_text(&folder.join("point.sbatch"))?);
    let array_job = sbatch(&args)?;
    let mut args = vec![format!("--dependency=afterany:{array_job}")];
    args.extend(options.arguments(false));
    args.push(path_text(&folder.join("collect.sbatch"))?);
    let collect_job = sbatch(&args)?;
    let submission = Submission {
        array_job,
        collect_job,
        array,
    };
    record_submission(dir, &submission)?;
    Ok(submission)
}

/// The tasks of `array_jobs` in `squeue --array --format=%F|%K|%t` output: the point each
/// runs (its array index) and whether it runs or waits. Other jobs' lines are skipped; a
/// task completing (`CG`) still runs.
pub fn parse_squeue(text: &str, array_jobs: &[u64]) -> HashMap<usize, PointState> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let mut fields = line.trim().split('|');
        let (Some(job), Some(task), Some(state)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let (Ok(job), Ok(task)) = (job.trim().parse::<u64>(), task.trim().parse::<usize>()) else {
            continue;
        };
        if !array_jobs.contains(&job) {
            continue;
        }
        let state = match state.trim() {
            "PD" | "CF" | "RQ" | "RS" | "S" | "RH" | "RF" => PointState::Pending,
            _ => PointState::Running,
        };
        out.insert(task, state);
    }
    out
}

/// The points of the sweep in `dir` that its array jobs have in the queue, or `None` when
/// `squeue` is not on the PATH (or the sweep never went to Slurm).
pub fn queued(dir: &Path) -> Result<Option<HashMap<usize, PointState>>, String> {
    let jobs: Vec<u64> = submissions(dir)?.iter().map(|s| s.array_job).collect();
    if jobs.is_empty() {
        return Ok(None);
    }
    let output = match Command::new("squeue")
        .args(["--noheader", "--array", "--format=%F|%K|%t"])
        .output()
    {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot run squeue: {e}")),
    };
    if !output.status.success() {
        return Err(format!(
            "squeue failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(Some(parse_squeue(
        &String::from_utf8_lossy(&output.stdout),
        &jobs,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_specs_are_runs_of_indices() {
        let cases: [(&[usize], Option<u32>, &str); 6] = [
            (&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], Some(2), "0-11%2"),
            (&[3], None, "3"),
            (&[3, 7, 8, 9], None, "3,7-9"),
            (&[0, 2, 4], Some(1), "0,2,4%1"),
            (&[5, 6, 10, 11, 12, 20], Some(3), "5-6,10-12,20%3"),
            (&[], None, ""),
        ];
        for (indices, k, want) in cases {
            assert_eq!(array_spec(indices, k), want, "{indices:?}");
        }
    }

    #[test]
    fn squeue_lines_of_this_sweep_give_each_task_its_state() {
        let text = "\
17|0|R
17|1|CG
17|2|PD
17|3|PD
18|0|R
9|5|R
garbage line
17|N/A|PD
";
        let got = parse_squeue(text, &[17, 20]);
        let want: HashMap<usize, PointState> = [
            (0, PointState::Running),
            (1, PointState::Running),
            (2, PointState::Pending),
            (3, PointState::Pending),
        ]
        .into_iter()
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn scripts_quote_paths_and_carry_the_options() {
        let dir = std::env::temp_dir().join(format!("traj-slurm-scripts-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let options = SlurmOptions {
            partition: Some("gpu".into()),
            time: Some("01:00:00".into()),
            cpus_per_task: Some(4),
            mem: Some("4G".into()),
            max_parallel: Some(2),
            sbatch_args: vec!["--account=abc".into()],
        };
        write_scripts(
            &dir,
            Path::new("/opt/traj bin/traj"),
            Path::new("/home/x/it's.traj"),
            &options,
        )
        .unwrap();
        let point = std::fs::read_to_string(dir.join("slurm/point.sbatch")).unwrap();
        let logs = dir.join("slurm").display().to_string();
        assert_eq!(
            point,
            format!(
                "#!/bin/sh\n#SBATCH --job-name=traj-point\n#SBATCH --output={logs}/%A_%a.out\n\
                 #SBATCH --partition=gpu\n#SBATCH --time=01:00:00\n#SBATCH --cpus-per-task=4\n\
                 #SBATCH --mem=4G\n#SBATCH --account=abc\n\
                 # One point of the sweep: the array index is its index in points.csv.\n\
                 exec '/opt/traj bin/traj' sweep '/home/x/it'\\''s.traj' --point \
                 \"$SLURM_ARRAY_TASK_ID\" --out '{}'\n",
                dir.display()
            )
        );
        let collect = std::fs::read_to_string(dir.join("slurm/collect.sbatch")).unwrap();
        assert!(!collect.contains("--cpus-per-task"), "{collect}");
        assert!(collect.contains("#SBATCH --partition=gpu\n"), "{collect}");
        assert!(
            collect.ends_with(&format!(
                "exec '/opt/traj bin/traj' sweep --collect '{}'\n",
                dir.display()
            )),
            "{collect}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
