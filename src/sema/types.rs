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
}
