//! Helpers shared by integration tests (each test file that needs them declares `mod common;`).

/// A golden safetensors file of tools/golden.py (see tests/data/golden/README.md).
pub struct Golden {
    bytes: Vec<u8>,
}

impl Golden {
    pub fn load(model: &str) -> Self {
        Golden { bytes: std::fs::read(format!("tests/data/golden/{model}.safetensors")).expect("golden file") }
    }

    /// An F32 tensor, flattened.
    pub fn f32(&self, name: &str) -> Vec<f32> {
        let st = safetensors::SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor(name).unwrap_or_else(|_| panic!("golden tensor {name}"));
        t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
    }

    /// An I64 id tensor as u32 ids.
    pub fn ids(&self, name: &str) -> Vec<u32> {
        let st = safetensors::SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor(name).unwrap_or_else(|_| panic!("golden tensor {name}"));
        t.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32).collect()
    }
}
