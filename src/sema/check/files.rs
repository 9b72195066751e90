//! The dtype and shape of a `load`ed file, read once per check.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::sema::types::{DType, Scalar, Shape};

/// A loaded file's element type and shape, or why it could not be read.
pub type FileShape = Result<(DType, Shape), String>;

/// Shapes of `load`ed files, read once per check.
#[derive(Default)]
pub(super) struct FileShapes {
    cache: std::cell::RefCell<HashMap<PathBuf, FileShape>>,
}

impl FileShapes {
    pub(super) fn get(&self, path: &Path) -> FileShape {
        if let Some(r) = self.cache.borrow().get(path) {
            return r.clone();
        }
        let r = read_file_shape(path);
        self.cache
            .borrow_mut()
            .insert(path.to_path_buf(), r.clone());
        r
    }
}

/// The dtype and shape of a `.npy` or `.csv` file (section 6.5).
pub fn read_file_shape(path: &Path) -> FileShape {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    match ext {
        "npy" => {
            // The header alone, checked against the file's length.
            let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
            let len = file.metadata().map_err(|e| e.to_string())?.len();
            let header = crate::data::npy_header(&mut std::io::BufReader::new(file), len)?;
            match header.kind.as_str() {
                "f8" | "f4" | "b1" => Ok((DType::Float, header.shape)),
                _ => Ok((DType::Int, header.shape)),
            }
        }
        "csv" => {
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_path(path)
                .map_err(|e| e.to_string())?;
            let mut rows = 0usize;
            let mut cols = None;
            let mut all_int = true;
            for (i, rec) in reader.records().enumerate() {
                let rec = rec.map_err(|e| e.to_string())?;
                let cells: Vec<&str> = rec.iter().map(str::trim).collect();
                let parsed: Vec<Option<Scalar>> = cells.iter().map(|c| Scalar::parse(c)).collect();
                if parsed.iter().any(Option::is_none) {
                    if i == 0 {
                        continue; // a header line
                    }
                    return Err(format!("line {} has a cell that is not a number", i + 1));
                }
                all_int &= parsed.iter().all(|p| matches!(p, Some(Scalar::Int(_))));
                match cols {
                    None => cols = Some(cells.len()),
                    Some(c) if c != cells.len() => {
                        return Err(format!(
                            "line {} has {} cells, earlier lines {c}",
                            i + 1,
                            cells.len()
                        ));
                    }
                    _ => {}
                }
                rows += 1;
            }
            let dtype = if all_int { DType::Int } else { DType::Float };
            Ok(match cols {
                None => (DType::Float, vec![0]),
                Some(1) => (dtype, vec![rows]),
                Some(c) => (dtype, vec![rows, c]),
            })
        }
        _ => Err("only .npy and .csv files can be loaded".into()),
    }
}
