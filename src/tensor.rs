//! Host tensors: the f64 and i64 n-d arrays (ndarray, row-major) that data, params and
//! every interpreted value are made of.

use ndarray::{ArrayD, IxDyn};

#[derive(Clone, Debug, PartialEq)]
pub enum Tensor {
    Float(ArrayD<f64>),
    Int(ArrayD<i64>),
}

impl Tensor {
    pub fn scalar(v: f64) -> Tensor {
        Tensor::Float(ArrayD::from_elem(IxDyn(&[]), v))
    }

    pub fn shape(&self) -> &[usize] {
        match self {
            Tensor::Float(a) => a.shape(),
            Tensor::Int(a) => a.shape(),
        }
    }

    pub fn len(&self) -> usize {
        self.shape().iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values as floats (ints converted exactly up to 2^53).
    pub fn to_f64(&self) -> ArrayD<f64> {
        match self {
            Tensor::Float(a) => a.clone(),
            Tensor::Int(a) => a.mapv(|v| v as f64),
        }
    }

    /// The float array, if this is one.
    pub fn as_f64(&self) -> Option<&ArrayD<f64>> {
        match self {
            Tensor::Float(a) => Some(a),
            Tensor::Int(_) => None,
        }
    }
}
