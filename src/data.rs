//! Loading `.npy` and `.csv` files into row-major [`Tensor`]s (LANGUAGE.md §6.5).
//!
//! * `.npy`: float64/float32 → `Tensor::Float`, int64/32/16/8 and uint64/32/16/8 →
//!   `Tensor::Int` (uint64 values above `i64::MAX` are an error), bool → `Tensor::Float` of
//!   0/1. Either byte order; Fortran-order arrays come back in standard (C) layout.
//! * `.csv`: numbers only, cells trimmed; a first line that does not parse as numbers is a
//!   header and is skipped; rows of equal length; all cells ints → `Tensor::Int`, else
//!   `Tensor::Float` (`inf`, `-inf`, `nan` accepted as floats). One column → `[rows]`,
//!   else `[rows, cols]`.

use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use ndarray_npy::ReadNpyExt;
use ndarray_npy::npy::header::Header;

use crate::ir::types::DType;
use crate::tensor::Tensor;

/// Loads a `.npy` or `.csv` file (by extension, case-insensitive).
pub fn load(path: &Path) -> Result<Tensor, String> {
    let loaded = match file_kind(path)? {
        FileKind::Npy => load_npy(path),
        FileKind::Csv => load_csv(path),
    };
    loaded.map_err(|e| format!("{}: {e}", path.display()))
}

/// The dtype and shape `load` gives the file, from a `.npy` file's header alone (checked
/// against the file's length) or a `.csv` file's cells; errors as `load`'s, without the
/// path.
pub fn file_shape(path: &Path) -> Result<(DType, Vec<usize>), String> {
    match file_kind(path).map_err(|_| FILE_TYPES.to_string())? {
        FileKind::Npy => {
            let file = std::fs::File::open(path).map_err(|e| cannot_read(&e))?;
            let len = file.metadata().map_err(|e| cannot_read(&e))?.len();
            let header = npy_header(&mut std::io::BufReader::new(file), len)?;
            let (_, dtype) = npy_type(&header.kind).ok_or("unsupported .npy dtype")?;
            Ok((dtype, header.shape))
        }
        FileKind::Csv => {
            let table = read_csv(&read_bytes(path)?)?;
            Ok((table.dtype(), table.shape))
        }
    }
}

enum FileKind {
    Npy,
    Csv,
}

const FILE_TYPES: &str = "cannot load this file type; supported are .npy and .csv";

fn file_kind(path: &Path) -> Result<FileKind, String> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("npy") => Ok(FileKind::Npy),
        Some("csv") => Ok(FileKind::Csv),
        _ => Err(format!("{}: {FILE_TYPES}", path.display())),
    }
}

fn cannot_read(e: &std::io::Error) -> String {
    format!("cannot read the file: {e}")
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| cannot_read(&e))
}

fn standard<T: Clone>(a: ArrayD<T>) -> ArrayD<T> {
    if a.is_standard_layout() {
        a
    } else {
        a.as_standard_layout().into_owned()
    }
}

fn read_typed<T: ndarray_npy::ReadableElement + Clone>(bytes: &[u8]) -> Result<ArrayD<T>, String> {
    ArrayD::<T>::read_npy(bytes)
        .map(standard)
        .map_err(|e| format!("malformed .npy file: {e}"))
}

/// What a `.npy` header says, checked against the file it starts.
pub struct NpyHeader {
    /// NumPy's type code without its byte order: `f8`, `i4`, `b1`, ...
    pub kind: String,
    pub shape: Vec<usize>,
}

/// Every `.npy` type `load` reads: NumPy's type code without its byte order, the bytes one
/// entry takes, and the dtype it loads as (bools as floats 0/1).
const NPY_TYPES: &[(&str, u64, DType)] = &[
    ("f8", 8, DType::Float),
    ("f4", 4, DType::Float),
    ("i8", 8, DType::Int),
    ("i4", 4, DType::Int),
    ("i2", 2, DType::Int),
    ("i1", 1, DType::Int),
    ("u8", 8, DType::Int),
    ("u4", 4, DType::Int),
    ("u2", 2, DType::Int),
    ("u1", 1, DType::Int),
    ("b1", 1, DType::Float),
];

/// The entry size and dtype of `.npy` type code `kind` ([`NPY_TYPES`]).
fn npy_type(kind: &str) -> Option<(u64, DType)> {
    NPY_TYPES
        .iter()
        .find(|(k, _, _)| *k == kind)
        .map(|(_, size, dtype)| (*size, *dtype))
}

/// Reads the header of a `.npy` file of `file_len` bytes from its start and checks it
/// against the file: the header must lie within the file and its shape and dtype must
/// account for exactly the rest. Nothing is allocated from the header's numbers before
/// they are checked against the file's length.
pub fn npy_header(reader: &mut impl std::io::Read, file_len: u64) -> Result<NpyHeader, String> {
    let malformed = |what: String| format!("malformed .npy header: {what}");
    let mut start = vec![0u8; 8];
    reader
        .read_exact(&mut start)
        .map_err(|_| malformed("the file is shorter than a header".into()))?;
    if !start.starts_with(b"\x93NUMPY") {
        return Err(malformed("not a .npy file".into()));
    }
    let len_bytes = match start[6] {
        1 => 2,
        2 | 3 => 4,
        v => return Err(malformed(format!("unknown version {v}"))),
    };
    let mut len = vec![0u8; len_bytes];
    reader
        .read_exact(&mut len)
        .map_err(|_| malformed("the file is shorter than a header".into()))?;
    let dict_len = len.iter().rev().fold(0u64, |n, b| n << 8 | u64::from(*b));
    let header_len = 8 + len_bytes as u64 + dict_len;
    if header_len > file_len {
        return Err(malformed(format!(
            "it claims {header_len} bytes but the file has {file_len}"
        )));
    }
    start.extend(len);
    start.resize(header_len as usize, 0);
    reader
        .read_exact(&mut start[8 + len_bytes..])
        .map_err(|e| malformed(e.to_string()))?;
    let header = Header::from_reader(&mut &start[..]).map_err(|e| malformed(e.to_string()))?;
    let Some(descr) = header.type_descriptor.as_string() else {
        return Err(format!(
            "unsupported .npy dtype {} (structured arrays are not supported)",
            header.type_descriptor
        ));
    };
    let kind = descr.trim_start_matches(['<', '>', '|', '=']).to_string();
    let Some((item, _)) = npy_type(&kind) else {
        return Err(format!(
            "unsupported .npy dtype '{descr}'; supported are float64, float32, \
             int64/32/16/8, uint64/32/16/8 and bool"
        ));
    };
    let data = crate::ir::types::entries(&header.shape)
        .and_then(|n| (n as u64).checked_mul(item))
        .filter(|bytes| *bytes == file_len - header_len);
    if data.is_none() {
        let shape: Vec<String> = header.shape.iter().map(|d| d.to_string()).collect();
        return Err(format!(
            "malformed .npy file: its header says shape ({}) of '{descr}', but the file holds \
             {} bytes of data",
            shape.join(", "),
            file_len - header_len
        ));
    }
    Ok(NpyHeader {
        kind,
        shape: header.shape,
    })
}

/// A `.npy` file's values, as the dtype [`NPY_TYPES`] gives its type; errors without the
/// path.
fn load_npy(path: &Path) -> Result<Tensor, String> {
    let bytes = read_bytes(path)?;
    let header = npy_header(&mut &bytes[..], bytes.len() as u64)?;
    let kind = header.kind.as_str();
    let float = |a: ArrayD<f64>| Ok(Tensor::Float(standard(a)));
    let int = |a: ArrayD<i64>| Ok(Tensor::Int(standard(a)));
    match kind {
        "f8" => float(read_typed::<f64>(&bytes)?),
        "f4" => float(read_typed::<f32>(&bytes)?.mapv(f64::from)),
        "i8" => int(read_typed::<i64>(&bytes)?),
        "i4" => int(read_typed::<i32>(&bytes)?.mapv(i64::from)),
        "i2" => int(read_typed::<i16>(&bytes)?.mapv(i64::from)),
        "i1" => int(read_typed::<i8>(&bytes)?.mapv(i64::from)),
        "u4" => int(read_typed::<u32>(&bytes)?.mapv(i64::from)),
        "u2" => int(read_typed::<u16>(&bytes)?.mapv(i64::from)),
        "u1" => int(read_typed::<u8>(&bytes)?.mapv(i64::from)),
        "u8" => {
            let a = read_typed::<u64>(&bytes)?;
            if let Some(big) = a.iter().find(|&&v| v > i64::MAX as u64) {
                return Err(format!(
                    "uint64 value {big} does not fit in a 64-bit signed int"
                ));
            }
            int(a.mapv(|v| v as i64))
        }
        "b1" => float(read_typed::<bool>(&bytes)?.mapv(|v| if v { 1.0 } else { 0.0 })),
        // `npy_header` accepts only the types of `NPY_TYPES`, each read above.
        _ => unreachable!("a .npy type of NPY_TYPES without a reader"),
    }
}

enum Cell {
    Int(i64),
    Float(f64),
}

fn parse_cell(s: &str) -> Option<Cell> {
    if let Ok(v) = s.parse::<i64>() {
        return Some(Cell::Int(v));
    }
    s.parse::<f64>().ok().map(Cell::Float)
}

/// A `.csv` file's numbers: cells in row-major order and the shape.
struct CsvTable {
    cells: Vec<Cell>,
    shape: Vec<usize>,
}

impl CsvTable {
    /// Int when every cell is an int.
    fn dtype(&self) -> DType {
        if self.cells.iter().all(|c| matches!(c, Cell::Int(_))) {
            DType::Int
        } else {
            DType::Float
        }
    }
}

fn load_csv(path: &Path) -> Result<Tensor, String> {
    let table = read_csv(&read_bytes(path)?)?;
    let (dtype, shape, cells) = (table.dtype(), table.shape, table.cells);
    let shape_err = |e: ndarray::ShapeError| e.to_string();
    if dtype == DType::Int {
        let data: Vec<i64> = cells
            .iter()
            .map(|c| match c {
                Cell::Int(v) => *v,
                Cell::Float(v) => *v as i64,
            })
            .collect();
        ArrayD::from_shape_vec(IxDyn(&shape), data)
            .map(Tensor::Int)
            .map_err(shape_err)
    } else {
        let data: Vec<f64> = cells
            .iter()
            .map(|c| match c {
                Cell::Int(v) => *v as f64,
                Cell::Float(v) => *v,
            })
            .collect();
        ArrayD::from_shape_vec(IxDyn(&shape), data)
            .map(Tensor::Float)
            .map_err(shape_err)
    }
}

/// Parses a `.csv` file's bytes (module doc); errors without the path.
fn read_csv(bytes: &[u8]) -> Result<CsvTable, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(bytes);
    let mut cells: Vec<Cell> = Vec::new();
    let mut cols: Option<usize> = None;
    let mut rows = 0usize;
    let mut first_line: Option<u64> = None;
    for (index, record) in reader.records().enumerate() {
        let record = record.map_err(|e| format!("malformed CSV: {e}"))?;
        let line = record
            .position()
            .map(|p| p.line())
            .unwrap_or(index as u64 + 1);
        let parsed: Vec<Option<Cell>> = record.iter().map(parse_cell).collect();
        if index == 0 && parsed.iter().any(|c| c.is_none()) {
            // A header line: skipped.
            continue;
        }
        if let Some(col) = parsed.iter().position(|c| c.is_none()) {
            let text = &record[col];
            let what = if text.is_empty() {
                "an empty cell".to_string()
            } else {
                format!("'{text}' is not a number")
            };
            return Err(format!("line {line}, column {}: {what}", col + 1));
        }
        match cols {
            None => {
                cols = Some(parsed.len());
                first_line = Some(line);
            }
            Some(n) if n != parsed.len() => {
                return Err(format!(
                    "line {line} has {} cells but line {} has {n}; every row must have \
                     the same number of cells",
                    parsed.len(),
                    first_line.unwrap_or(1),
                ));
            }
            Some(_) => {}
        }
        cells.extend(parsed.into_iter().flatten());
        rows += 1;
    }
    let Some(cols) = cols else {
        return Err("the CSV file has no rows of numbers".into());
    };
    let shape: Vec<usize> = if cols == 1 {
        vec![rows]
    } else {
        vec![rows, cols]
    };
    Ok(CsvTable { cells, shape })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array1, Array2, Array3, array};
    use ndarray_npy::WriteNpyExt;
    use std::path::PathBuf;

    /// A fresh directory for one test.
    fn tmp_dir(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("traj-data-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        dir
    }

    fn write_npy<T: WriteNpyExt>(dir: &Path, name: &str, a: &T) -> PathBuf {
        let p = dir.join(name);
        let f = std::fs::File::create(&p).expect("create npy");
        a.write_npy(f).expect("write npy");
        p
    }

    fn write_text(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write file");
        p
    }

    #[test]
    fn npy_f64() {
        let d = tmp_dir("npy_f64");
        let a = array![[1.0, 2.5, -3.0], [4.0, 5.0, 6.25]];
        let t = load(&write_npy(&d, "a.npy", &a)).expect("load");
        assert_eq!(t, Tensor::Float(a.into_dyn()));
    }

    #[test]
    fn npy_f32_i64_i32_u8_bool() {
        let d = tmp_dir("npy_types");
        let f: Array1<f32> = array![0.5, -1.25, 3.0];
        let t = load(&write_npy(&d, "f.npy", &f)).expect("f32");
        assert_eq!(t, Tensor::Float(array![0.5, -1.25, 3.0].into_dyn()));

        let i: Array2<i64> = array![[1, -2], [3, i64::MAX]];
        let t = load(&write_npy(&d, "i.npy", &i)).expect("i64");
        assert_eq!(t, Tensor::Int(i.into_dyn()));

        let i32a: Array1<i32> = array![7, -8];
        let t = load(&write_npy(&d, "i32.npy", &i32a)).expect("i32");
        assert_eq!(t, Tensor::Int(array![7i64, -8].into_dyn()));

        let u: Array1<u8> = array![0, 255];
        let t = load(&write_npy(&d, "u8.npy", &u)).expect("u8");
        assert_eq!(t, Tensor::Int(array![0i64, 255].into_dyn()));

        let b: Array2<bool> = array![[true, false], [false, true]];
        let t = load(&write_npy(&d, "b.npy", &b)).expect("bool");
        assert_eq!(t, Tensor::Float(array![[1.0, 0.0], [0.0, 1.0]].into_dyn()));

        let big: Array1<u64> = array![1, u64::MAX];
        let e = load(&write_npy(&d, "big.npy", &big)).unwrap_err();
        assert!(e.contains("does not fit"), "{e}");
    }

    #[test]
    fn npy_fortran_order_becomes_row_major() {
        let d = tmp_dir("npy_fortran");
        let a = array![[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]];
        let p = write_npy(&d, "f.npy", &a.t());
        let text = std::fs::read(&p).expect("read back");
        let header = String::from_utf8_lossy(&text[..128.min(text.len())]).to_string();
        assert!(header.contains("'fortran_order': True"), "{header}");
        let Tensor::Float(got) = load(&p).expect("load") else {
            panic!("expected float")
        };
        assert!(got.is_standard_layout());
        assert_eq!(got, a.t().to_owned().into_dyn());
        assert_eq!(got.as_slice(), Some(&[1.0, 4.0, 2.0, 5.0, 3.0, 6.0][..]));

        let i3: Array3<i64> =
            Array3::from_shape_fn((2, 3, 4), |(x, y, z)| (x * 100 + y * 10 + z) as i64);
        let p = write_npy(&d, "i3.npy", &i3.view().reversed_axes());
        let Tensor::Int(got) = load(&p).expect("load") else {
            panic!("expected int")
        };
        assert!(got.is_standard_layout());
        assert_eq!(got.shape(), &[4, 3, 2]);
        assert_eq!(got, i3.view().reversed_axes().to_owned().into_dyn());

        let f32t: Array2<f32> = array![[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]];
        let Tensor::Float(got) = load(&write_npy(&d, "f32t.npy", &f32t.t())).expect("load") else {
            panic!("expected float")
        };
        assert!(got.is_standard_layout());
        assert_eq!(got.as_slice(), Some(&[1.0, 3.0, 5.0, 2.0, 4.0, 6.0][..]));
    }

    #[test]
    fn npy_scalar_and_errors() {
        let d = tmp_dir("npy_errors");
        let s = ndarray::arr0(2.5);
        let t = load(&write_npy(&d, "s.npy", &s)).expect("scalar");
        assert_eq!(t, Tensor::scalar(2.5));

        let p = write_text(&d, "bad.npy", "not an npy file at all");
        let e = load(&p).unwrap_err();
        assert!(e.contains("bad.npy") && e.contains("header"), "{e}");

        // Truncated data.
        let a = array![1.0, 2.0, 3.0];
        let p = write_npy(&d, "trunc.npy", &a);
        let bytes = std::fs::read(&p).expect("read");
        std::fs::write(&p, &bytes[..bytes.len() - 4]).expect("write");
        let e = load(&p).unwrap_err();
        assert!(e.contains("trunc.npy"), "{e}");

        let e = load(&d.join("missing.npy")).unwrap_err();
        assert!(
            e.contains("missing.npy") && e.contains("cannot read"),
            "{e}"
        );
    }

    #[test]
    fn csv_with_and_without_header() {
        let d = tmp_dir("csv_header");
        let p = write_text(&d, "h.csv", "x, y ,z\n1.5, 2, 3\n4,5,6e-1\n");
        let t = load(&p).expect("load");
        assert_eq!(
            t,
            Tensor::Float(array![[1.5, 2.0, 3.0], [4.0, 5.0, 0.6]].into_dyn())
        );
        let p = write_text(&d, "n.csv", "1.5,2,3\r\n4,5,6.0\r\n");
        let t = load(&p).expect("load");
        assert_eq!(
            t,
            Tensor::Float(array![[1.5, 2.0, 3.0], [4.0, 5.0, 6.0]].into_dyn())
        );
    }

    #[test]
    fn csv_ints_vectors_and_specials() {
        let d = tmp_dir("csv_ints");
        let t = load(&write_text(&d, "i.csv", "1,2\n-3,+4\n")).expect("load");
        assert_eq!(t, Tensor::Int(array![[1i64, 2], [-3, 4]].into_dyn()));

        let t = load(&write_text(&d, "v.csv", "y\n1\n2\n3\n")).expect("load");
        assert_eq!(t, Tensor::Int(array![1i64, 2, 3].into_dyn()));

        let t = load(&write_text(&d, "r.csv", "1,2,3\n")).expect("load");
        assert_eq!(t.shape(), &[1, 3]);

        let Tensor::Float(a) =
            load(&write_text(&d, "s.csv", "inf,-inf,nan\n1,2,3\n")).expect("load")
        else {
            panic!("expected float")
        };
        assert_eq!(a.shape(), &[2, 3]);
        assert_eq!(a[[0, 0]], f64::INFINITY);
        assert_eq!(a[[0, 1]], f64::NEG_INFINITY);
        assert!(a[[0, 2]].is_nan());
    }

    #[test]
    fn csv_errors() {
        let d = tmp_dir("csv_errors");
        let e = load(&write_text(&d, "rag.csv", "1,2,3\n4,5\n")).unwrap_err();
        assert!(e.contains("rag.csv") && e.contains("line 2"), "{e}");

        let e = load(&write_text(&d, "nan.csv", "a,b\n1,2\n3,oops\n")).unwrap_err();
        assert!(
            e.contains("nan.csv")
                && e.contains("line 3")
                && e.contains("column 2")
                && e.contains("oops"),
            "{e}"
        );

        let e = load(&write_text(&d, "empty.csv", "1,2,3\n4,,6\n")).unwrap_err();
        assert!(
            e.contains("line 2") && e.contains("column 2") && e.contains("empty"),
            "{e}"
        );

        let e = load(&write_text(&d, "hdr.csv", "a,b\n")).unwrap_err();
        assert!(e.contains("no rows"), "{e}");

        let e = load(&d.join("missing.csv")).unwrap_err();
        assert!(
            e.contains("missing.csv") && e.contains("cannot read"),
            "{e}"
        );

        let e = load(&write_text(&d, "x.txt", "1\n")).unwrap_err();
        assert!(
            e.contains(".npy") && e.contains(".csv") && e.contains("x.txt"),
            "{e}"
        );
    }
}
