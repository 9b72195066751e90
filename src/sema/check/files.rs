//! The dtype and shape of a `load`ed file (`data::file_shape`, what `load` gives), read
//! once per check.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::ir::types::{DType, Shape};

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
        let r = crate::data::file_shape(path);
        self.cache
            .borrow_mut()
            .insert(path.to_path_buf(), r.clone());
        r
    }
}
