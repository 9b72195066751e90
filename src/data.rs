//! Loading `.npy` and `.csv` files into tensors (stub; being written).
