//! Static types: dtype, shape, and the compile-time value of a scalar when it is known.
//! Shape rules here return plain errors; the checker attaches spans (errors without spans
//! inside, spans at the boundary).

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    Int,
    Float,
}

impl DType {
    pub fn promote(self, other: DType) -> DType {
        if self == DType::Int && other == DType::Int {
            DType::Int
        } else {
            DType::Float
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::Int => "int",
            DType::Float => "float",
        }
    }
}

pub type Shape = Vec<usize>;

/// `[2, 3]`, `[]` for a scalar.
pub fn show_shape(shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", dims.join(", "))
}

/// A compile-time scalar: a const, a literal, or arithmetic of those.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scalar {
    Int(i64),
    Float(f64),
}

impl Scalar {
    pub fn as_f64(self) -> f64 {
        match self {
            Scalar::Int(v) => v as f64,
            Scalar::Float(v) => v,
        }
    }

    pub fn dtype(self) -> DType {
        match self {
            Scalar::Int(_) => DType::Int,
            Scalar::Float(_) => DType::Float,
        }
    }

    /// Parses a command-line or sweep value: an int if it looks like one, else a float.
    pub fn parse(text: &str) -> Option<Scalar> {
        let t = text.trim().replace('_', "");
        if let Ok(v) = t.parse::<i64>() {
            return Some(Scalar::Int(v));
        }
        match t.as_str() {
            "inf" => Some(Scalar::Float(f64::INFINITY)),
            "-inf" => Some(Scalar::Float(f64::NEG_INFINITY)),
            "pi" => Some(Scalar::Float(std::f64::consts::PI)),
            _ => t
                .parse::<f64>()
                .ok()
                .filter(|_| !t.eq_ignore_ascii_case("nan") && !t.contains("inf"))
                .map(Scalar::Float),
        }
    }
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Int(v) => write!(f, "{v}"),
            Scalar::Float(v) if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e16 => {
                write!(f, "{v:.1}")
            }
            Scalar::Float(v) => write!(f, "{v}"),
        }
    }
}

/// NumPy broadcasting of two shapes; `None` when they do not fit.
pub fn broadcast(a: &[usize], b: &[usize]) -> Option<Shape> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            1
        };
        let db = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

/// `@` of LANGUAGE.md section 5: `[m,k]@[k,n]`, `[m,k]@[k]`, `[k]@[k,n]`, `[k]@[k]`.
pub fn matmul(a: &[usize], b: &[usize]) -> Option<Shape> {
    match (a, b) {
        ([m, k], [k2, n]) if k == k2 => Some(vec![*m, *n]),
        ([m, k], [k2]) if k == k2 => Some(vec![*m]),
        ([k], [k2, n]) if k == k2 => Some(vec![*n]),
        ([k], [k2]) if k == k2 => Some(vec![]),
        _ => None,
    }
}

/// Resolves a possibly negative axis against a rank.
pub fn axis(axis: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    (0..r).contains(&a).then_some(a as usize)
}

/// The most entries any one value may have, whatever the memory: 2^40 (8 TB of floats).
pub const MAX_ENTRIES: usize = 1 << 40;

/// The entry count of a shape, `None` when the product of its non-zero dimensions
/// overflows (so every stride of a value that has a count fits in a `usize`).
pub fn entries(shape: &[usize]) -> Option<usize> {
    let nonzero = shape
        .iter()
        .try_fold(1usize, |n, d| n.checked_mul((*d).max(1)))?;
    Some(if shape.contains(&0) { 0 } else { nonzero })
}

/// This machine's physical memory in bytes (`usize::MAX` where it cannot be read).
pub fn memory_bytes() -> usize {
    static MEMORY: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MEMORY.get_or_init(|| {
        // SAFETY: `sysconf` only reads system configuration.
        let (pages, page) = unsafe {
            (
                libc::sysconf(libc::_SC_PHYS_PAGES),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        if pages > 0 && page > 0 {
            (pages as usize).saturating_mul(page as usize)
        } else {
            usize::MAX
        }
    })
}

/// Why values of `entries` 8-byte floats in all (`None`: more than `usize` holds) cannot
/// be held by a machine with `memory` bytes, or `None` when they can.
pub fn too_large(entries: Option<usize>, memory: usize) -> Option<String> {
    match entries {
        Some(n) if n <= MAX_ENTRIES && n.saturating_mul(8) <= memory => None,
        Some(n) if n <= MAX_ENTRIES => Some(format!(
            "{n} entries take {}, more than this machine's memory ({})",
            show_bytes(n.saturating_mul(8)),
            show_bytes(memory)
        )),
        Some(n) => Some(format!("{n} entries, more than the limit of 2^40")),
        None => Some("more entries than a 64-bit count holds".to_string()),
    }
}

fn show_bytes(b: usize) -> String {
    let gb = b as f64 / 1e9;
    if gb >= 1.0 {
        format!("{gb:.1} GB")
    } else {
        format!("{:.1} MB", b as f64 / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(broadcast(&[3, 1], &[4]), Some(vec![3, 4]));
        assert_eq!(broadcast(&[], &[2, 5]), Some(vec![2, 5]));
        assert_eq!(broadcast(&[2, 1, 5], &[7, 1]), Some(vec![2, 7, 5]));
        assert_eq!(broadcast(&[3], &[4]), None);
        assert_eq!(broadcast(&[0], &[1]), Some(vec![0]));
    }

    #[test]
    fn matmul_shapes() {
        assert_eq!(matmul(&[2, 3], &[3, 4]), Some(vec![2, 4]));
        assert_eq!(matmul(&[2, 3], &[3]), Some(vec![2]));
        assert_eq!(matmul(&[3], &[3, 4]), Some(vec![4]));
        assert_eq!(matmul(&[3], &[3]), Some(vec![]));
        assert_eq!(matmul(&[2, 3], &[4, 3]), None);
        assert_eq!(matmul(&[2, 2, 2], &[2, 2]), None);
    }

    #[test]
    fn negative_axes_count_from_the_end() {
        assert_eq!(axis(-1, 3), Some(2));
        assert_eq!(axis(2, 3), Some(2));
        assert_eq!(axis(3, 3), None);
        assert_eq!(axis(-4, 3), None);
    }

    #[test]
    fn override_values_parse_as_int_or_float() {
        assert_eq!(Scalar::parse("10"), Some(Scalar::Int(10)));
        assert_eq!(Scalar::parse("1_000"), Some(Scalar::Int(1000)));
        assert_eq!(Scalar::parse("0.5"), Some(Scalar::Float(0.5)));
        assert_eq!(Scalar::parse("1e-3"), Some(Scalar::Float(1e-3)));
        assert_eq!(Scalar::parse("abc"), None);
        assert_eq!(Scalar::parse("nan"), None);
        assert_eq!(Scalar::parse("inf"), Some(Scalar::Float(f64::INFINITY)));
    }

    #[test]
    fn sizes_beyond_memory_or_the_count_are_too_large() {
        let gb = 1_000_000_000;
        assert_eq!(entries(&[3, 0, 7]), Some(0));
        assert_eq!(entries(&[]), Some(1));
        assert_eq!(entries(&[0, usize::MAX, 2]), None);
        assert_eq!(entries(&[1 << 32, 1 << 32]), None);
        assert_eq!(too_large(Some(1000), 16 * gb), None);
        assert_eq!(too_large(Some(2 * gb / 8), 2 * gb), None);
        let over = too_large(Some(10_000_000_000), 16 * gb).unwrap();
        assert!(
            over.contains("80.0 GB") && over.contains("16.0 GB"),
            "{over}"
        );
        assert!(
            too_large(Some(MAX_ENTRIES + 1), usize::MAX)
                .unwrap()
                .contains("2^40")
        );
        assert!(too_large(None, usize::MAX).is_some());
    }
}
