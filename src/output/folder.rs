//! A run's folder while its run writes it: claimed under a lock before compiling, refused when it holds another run, rows appended as they are recorded, `run.json` and params replaced atomically.
//!
//! # Decisions
//! * The lock is `DIR/.traj-lock`, held with `flock` for as long as the run writes: a
//!   second run into the same folder is refused while the first runs, and a killed run's
//!   lock goes with its process. The folder is checked for other files only once the lock
//!   is held, so of two runs started together exactly one writes.
//! * A folder holding anything but the lock is refused; with `replace` (`--force`) the
//!   files of an earlier run (`run.json`, `trajectory.csv`, `params/`, temporaries) are
//!   deleted first, and anything else still refuses it: `traj` deletes only what a run
//!   writes.
//! * A default folder (`runs/NAME-TIMESTAMP`) is made with `mkdir`, which fails if the name
//!   exists: the first free one of `NAME-TIMESTAMP`, `NAME-TIMESTAMP-2`, ... is taken.
//! * Rows are written out whole (never part of a line, so a killed run leaves a readable
//!   file), at most [`FLUSH_INTERVAL`] after they are recorded when the loop keeps going
//!   (a step longer than that delays them by the step) or when [`FLUSH_BYTES`] are
//!   waiting, and all of them when the run ends.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{RunInfo, format_float};
use crate::tensor::Tensor;

/// The lock file's name in a run folder.
pub const LOCK_FILE: &str = ".traj-lock";

/// What a run writes into its folder (temporaries end in `.tmp`).
const RUN_FILES: [&str; 3] = ["run.json", "trajectory.csv", "params"];

/// The longest rows recorded by a running loop wait before they are written out.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(20);
/// The most bytes of rows that wait to be written out.
pub const FLUSH_BYTES: usize = 1 << 16;

/// A run folder claimed by this process; the lock is released when it is dropped.
#[derive(Debug)]
pub struct RunFolder {
    dir: PathBuf,
    lock: Option<File>,
}

impl RunFolder {
    /// Claims `dir` (created with its parents): takes its lock, then refuses it if it holds
    /// anything else, unless `replace` and all it holds is an earlier run's files, which are
    /// deleted.
    pub fn claim(dir: &Path, replace: bool) -> Result<RunFolder, String> {
        RunFolder::claim_as(dir, replace, "pass --force to replace the run in it, or ")
    }

    /// Claims `dir` for a sweep: as [`RunFolder::claim`], refused if it holds anything.
    pub fn claim_sweep(dir: &Path) -> Result<RunFolder, String> {
        RunFolder::claim_as(dir, false, "")
    }

    /// `claim`, with `hint` before "choose another --out" when the folder is not empty.
    fn claim_as(dir: &Path, replace: bool, hint: &str) -> Result<RunFolder, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create the run folder {}: {e}", dir.display()))?;
        let folder = RunFolder {
            dir: dir.to_path_buf(),
            lock: Some(lock(dir)?),
        };
        let mut held = Vec::new();
        let entries = std::fs::read_dir(dir)
            .map_err(|e| format!("cannot read the run folder {}: {e}", dir.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name != LOCK_FILE {
                held.push(name);
            }
        }
        if held.is_empty() {
            return Ok(folder);
        }
        held.sort();
        if !replace {
            return Err(format!(
                "the folder {} is not empty (it holds {}): {hint}choose another --out",
                dir.display(),
                held.join(", ")
            ));
        }
        let foreign: Vec<&String> = held.iter().filter(|n| !is_run_file(n)).collect();
        if !foreign.is_empty() {
            let names: Vec<&str> = foreign.iter().map(|n| n.as_str()).collect();
            return Err(format!(
                "the folder {} holds files that no run wrote ({}); traj replaces only a run's files: choose another --out",
                dir.display(),
                names.join(", ")
            ));
        }
        for name in &held {
            let path = dir.join(name);
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
        }
        Ok(folder)
    }

    /// Claims a new folder named `base`, or `base-2`, `base-3`, ... if that name is taken.
    pub fn claim_new(base: &Path) -> Result<RunFolder, String> {
        if let Some(parent) = base.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        for n in 1u32.. {
            let dir = if n == 1 {
                base.to_path_buf()
            } else {
                let mut name = base.as_os_str().to_owned();
                name.push(format!("-{n}"));
                PathBuf::from(name)
            };
            match std::fs::create_dir(&dir) {
                Ok(()) => return RunFolder::claim(&dir, false),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(format!(
                        "cannot create the run folder {}: {e}",
                        dir.display()
                    ));
                }
            }
        }
        Err(format!("no free run folder name after {}", base.display()))
    }

    /// Takes the lock of an existing sweep folder whatever it holds (`traj sweep --resume`,
    /// `--collect`): refused only while another process holds it.
    pub fn reopen_sweep(dir: &Path) -> Result<RunFolder, String> {
        if !dir.is_dir() {
            return Err(format!("no such sweep folder: {}", dir.display()));
        }
        Ok(RunFolder {
            dir: dir.to_path_buf(),
            lock: Some(lock(dir)?),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `run.json` (through a temporary file renamed over it).
    pub fn write_info(&self, info: &RunInfo) -> Result<(), String> {
        let path = self.dir.join("run.json");
        let mut json = serde_json::to_string_pretty(info)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        json.push('\n');
        replace_file(&path, |tmp| {
            std::fs::write(tmp, &json).map_err(|e| e.to_string())
        })
    }

    /// Creates `trajectory.csv`; its header is written when the run knows its columns.
    pub fn trajectory(&self) -> Result<TrajectoryWriter, String> {
        TrajectoryWriter::create(&self.dir.join("trajectory.csv"))
    }

    /// Writes `params/NAME.npy` for each param (each through a temporary file).
    pub fn write_params(&self, params: &[(String, Tensor)]) -> Result<(), String> {
        for (name, _) in params {
            super::check_param_name(name)?;
        }
        let params_dir = self.dir.join("params");
        std::fs::create_dir_all(&params_dir)
            .map_err(|e| format!("cannot create {}: {e}", params_dir.display()))?;
        for (name, tensor) in params {
            let path = params_dir.join(format!("{name}.npy"));
            replace_file(&path, |tmp| {
                match tensor {
                    Tensor::Float(a) => ndarray_npy::write_npy(tmp, a),
                    Tensor::Int(a) => ndarray_npy::write_npy(tmp, a),
                }
                .map_err(|e| e.to_string())
            })?;
        }
        Ok(())
    }
}

impl Drop for RunFolder {
    fn drop(&mut self) {
        if let Some(lock) = self.lock.take() {
            // Unlinked while still held: a run waiting on this lock file finds it gone
            // and takes a new one (see `lock`).
            let _ = std::fs::remove_file(self.dir.join(LOCK_FILE));
            drop(lock);
        }
    }
}

/// Moves the folder of a run that has ended, `from`, to `to` (one `rename`), replacing an
/// earlier run's files there as `--force` does: a point of a sweep runs under a temporary
/// name, so a folder with the point's own name always holds a run that ended.
pub fn move_run(from: &Path, to: &Path) -> Result<(), String> {
    if to.exists() {
        // Claimed with `replace`: only a run's files are deleted; the lock goes with it,
        // leaving the folder empty, which `rename` replaces.
        drop(RunFolder::claim(to, true)?);
    }
    std::fs::rename(from, to).map_err(|e| {
        format!(
            "cannot move the run folder {} to {}: {e}",
            from.display(),
            to.display()
        )
    })
}

/// The process writing into `dir`, when its lock file names a process alive on this
/// machine (a run killed outright leaves its lock file, naming a process that is gone).
pub fn live_writer(dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(dir.join(LOCK_FILE)).ok()?;
    let pid: i32 = text.trim().parse().ok().filter(|p| *p > 0)?;
    #[cfg(unix)]
    {
        // SAFETY: signal 0 sends nothing; it only asks whether the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        alive.then_some(pid as u32)
    }
    #[cfg(not(unix))]
    {
        Some(pid as u32)
    }
}

fn is_run_file(name: &str) -> bool {
    RUN_FILES.contains(&name) || name.ends_with(".tmp")
}

/// Writes `path` by writing `PATH.tmp` with `write`, then renaming it over `path`.
fn replace_file(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<(), String> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    write(&tmp).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Takes the folder's lock file, or says which run holds it.
#[cfg(unix)]
fn lock(dir: &Path) -> Result<File, String> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let path = dir.join(LOCK_FILE);
    let fail = |e: &dyn std::fmt::Display| format!("cannot lock {}: {e}", path.display());
    loop {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| fail(&e))?;
        // SAFETY: `flock` on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::WouldBlock {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                let holder = holder.trim();
                return Err(format!(
                    "another run is writing into {}{}: choose another --out",
                    dir.display(),
                    if holder.is_empty() {
                        String::new()
                    } else {
                        format!(" (process {holder})")
                    }
                ));
            }
            return Err(fail(&e));
        }
        // The file locked must still be the one at the path: a run that finished unlinks
        // its lock file while holding it.
        let held = file.metadata().map_err(|e| fail(&e))?;
        let current = std::fs::metadata(&path);
        if current.is_ok_and(|m| m.ino() == held.ino() && m.dev() == held.dev()) {
            file.set_len(0).map_err(|e| fail(&e))?;
            write!(file, "{}", std::process::id()).map_err(|e| fail(&e))?;
            return Ok(file);
        }
    }
}

/// Takes the folder's lock file, or says that another run holds it.
#[cfg(not(unix))]
fn lock(dir: &Path) -> Result<File, String> {
    let path = dir.join(LOCK_FILE);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => format!(
                "another run is writing into {} ({} exists): choose another --out",
                dir.display(),
                path.display()
            ),
            _ => format!("cannot lock {}: {e}", path.display()),
        })
}

/// `trajectory.csv` as the run records it: the header, then each row appended.
pub struct TrajectoryWriter {
    path: PathBuf,
    file: File,
    /// Rows formatted but not yet written to `file`.
    buffer: Vec<u8>,
    width: usize,
    /// Rows written to the buffer since the last flush.
    pending: bool,
    flushed: Instant,
}

impl TrajectoryWriter {
    /// Creates (or empties) the file at `path`.
    pub fn create(path: &Path) -> Result<TrajectoryWriter, String> {
        let file =
            File::create(path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(TrajectoryWriter {
            path: path.to_path_buf(),
            file,
            buffer: Vec::with_capacity(FLUSH_BYTES),
            width: 0,
            pending: false,
            flushed: Instant::now(),
        })
    }

    fn fail(&self, e: &dyn std::fmt::Display) -> String {
        format!("cannot write {}: {e}", self.path.display())
    }

    /// Writes out every row recorded so far.
    pub fn flush(&mut self) -> Result<(), String> {
        let written = self.file.write_all(&self.buffer);
        self.buffer.clear();
        written.map_err(|e| self.fail(&e))?;
        self.pending = false;
        self.flushed = Instant::now();
        Ok(())
    }
}

impl super::Rows for TrajectoryWriter {
    fn start(&mut self, columns: &[String]) -> Result<(), String> {
        self.width = columns.len();
        // Column names may need quoting; cells never do (digits, `.`, `-`, `e`, `nan`, `inf`).
        let header = std::iter::once("step").chain(columns.iter().map(String::as_str));
        let mut w = csv::WriterBuilder::new()
            .terminator(csv::Terminator::CRLF)
            .from_writer(Vec::new());
        w.write_record(header).map_err(|e| self.fail(&e))?;
        self.buffer = w.into_inner().map_err(|e| self.fail(&e))?;
        self.flush()
    }

    fn push(&mut self, step: u64, row: Vec<Option<f64>>) -> Result<(), String> {
        if row.len() != self.width {
            return Err(self.fail(&format!(
                "the row of step {step} has {} values but there are {} columns",
                row.len(),
                self.width
            )));
        }
        write!(self.buffer, "{step}").map_err(|e| self.fail(&e))?;
        for cell in &row {
            self.buffer.push(b',');
            if let Some(v) = cell {
                self.buffer.extend_from_slice(format_float(*v).as_bytes());
            }
        }
        self.buffer.extend_from_slice(b"\r\n");
        self.pending = true;
        self.tick()
    }

    fn tick(&mut self) -> Result<(), String> {
        if self.pending
            && (self.flushed.elapsed() >= FLUSH_INTERVAL || self.buffer.len() >= FLUSH_BYTES)
        {
            self.flush()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::Rows;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("traj-folder-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_held_folder_is_refused_and_free_once_released() {
        let dir = temp_dir("lock");
        let first = RunFolder::claim(&dir, false).unwrap();
        assert!(dir.join(LOCK_FILE).is_file());
        let e = RunFolder::claim(&dir, false).unwrap_err();
        assert!(e.contains("another run is writing into"), "{e}");
        assert!(e.contains(&std::process::id().to_string()), "{e}");
        // Even --force does not take a folder a run holds.
        let e = RunFolder::claim(&dir, true).unwrap_err();
        assert!(e.contains("another run is writing into"), "{e}");
        drop(first);
        assert!(!dir.join(LOCK_FILE).exists());
        let again = RunFolder::claim(&dir, false).unwrap();
        drop(again);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn default_folders_take_the_first_free_name() {
        let root = temp_dir("names");
        let base = root.join("runs").join("prog-20260101-000000");
        let held: Vec<RunFolder> = (0..3)
            .map(|_| RunFolder::claim_new(&base).unwrap())
            .collect();
        let names: Vec<String> = held
            .iter()
            .map(|f| f.dir().file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "prog-20260101-000000",
                "prog-20260101-000000-2",
                "prog-20260101-000000-3"
            ]
        );
        drop(held);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn replacing_deletes_only_a_runs_files() {
        let dir = temp_dir("replace");
        std::fs::create_dir_all(dir.join("params")).unwrap();
        for f in ["run.json", "trajectory.csv", "run.json.tmp", "params/W.npy"] {
            std::fs::write(dir.join(f), "old").unwrap();
        }
        let e = RunFolder::claim(&dir, false).unwrap_err();
        assert!(
            e.contains("params, run.json, run.json.tmp, trajectory.csv") && e.contains("--force"),
            "{e}"
        );
        let folder = RunFolder::claim(&dir, true).unwrap();
        let left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, [LOCK_FILE]);
        drop(folder);
        std::fs::write(dir.join("notes.txt"), "mine").unwrap();
        let e = RunFolder::claim(&dir, true).unwrap_err();
        assert!(e.contains("notes.txt"), "{e}");
        assert_eq!(
            std::fs::read_to_string(dir.join("notes.txt")).unwrap(),
            "mine"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rows_reach_the_file_whole_and_all_of_them_at_the_end() {
        let dir = temp_dir("rows");
        let folder = RunFolder::claim(&dir, false).unwrap();
        let path = dir.join("trajectory.csv");
        let mut w = folder.trajectory().unwrap();
        w.start(&["loss".into(), "a,b".into()]).unwrap();
        // The header is out at once.
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "step,loss,\"a,b\"\r\n"
        );
        let n = 20_000u64;
        for k in 0..n {
            w.push(
                k,
                vec![Some(k as f64 * 0.5), (k % 2 == 0).then_some(-1e300)],
            )
            .unwrap();
            // Whatever was written out so far is whole rows.
            if k % 997 == 0 {
                let text = std::fs::read_to_string(&path).unwrap();
                assert!(text.ends_with("\r\n"));
            }
        }
        // More than FLUSH_BYTES of rows: some were written before the end.
        let early = std::fs::read_to_string(&path).unwrap().lines().count();
        assert!(early > 1, "{early}");
        w.flush().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.split("\r\n").collect();
        assert_eq!(lines.len() as u64, n + 2);
        assert_eq!(lines[1], "0,0.0,-1e300");
        assert_eq!(lines[2], "1,0.5,");
        assert_eq!(
            lines[n as usize],
            format!("{},{},", n - 1, (n - 1) as f64 * 0.5)
        );
        let e = w.push(n, vec![Some(1.0)]).unwrap_err();
        assert!(e.contains("trajectory.csv") && e.contains("columns"), "{e}");
        drop(folder);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
