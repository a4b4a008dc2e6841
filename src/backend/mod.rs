//! Backends: `cpu` is the f32 reference and the default where no GPU exists.

pub mod cpu;
