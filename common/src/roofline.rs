//! The decode-throughput ceiling of a GPU for a model, so that `conftag status` can say how
//! close a worker runs to what its card could do.
//!
//! Greedy decoding reads every weight once per step for the whole batch, plus each
//! sequence's KV cache; a step cannot be faster than those bytes over the memory bandwidth,
//! nor than the step's FLOPs (2 per parameter per token) over the tensor-core peak:
//!
//! ```text
//! tokens/s ≤ min( batch × bandwidth / (weight bytes + batch × context × KV bytes per token),
//!                 peak FLOP/s / (2 × parameters) )
//! ```
//!
//! `context` is the average tokens a sequence holds during its decode (prompt plus half the
//! output). The figures are the vendors' dense datasheet peaks, so real engines reach a share
//! of them; the bound is what "fast" is measured against, not a target (docs/benchmarks.md).

/// Datasheet figures of one GPU model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GpuSpec {
    /// Short name, e.g. `H100 SXM`.
    pub name: &'static str,
    /// Memory bandwidth, GB/s.
    pub mem_bandwidth_gb_s: f64,
    /// Dense bf16 tensor-core peak, TFLOP/s.
    pub bf16_tflops: f64,
}

/// Known GPUs, matched against the name `nvidia-smi` reports, most specific first.
const GPUS: &[(&[&str], GpuSpec)] = &[
    // GH200 before H200: "NVIDIA GH200 480GB" contains "H200".
    (&["GH200"], gpu("GH200", 4000.0, 989.0)),
    (&["H200"], gpu("H200", 4800.0, 989.0)),
    (&["H100", "NVL"], gpu("H100 NVL", 3900.0, 835.0)),
    (&["H100", "PCIe"], gpu("H100 PCIe", 2000.0, 756.0)),
    (&["H100"], gpu("H100 SXM", 3350.0, 989.0)),
    (&["B200"], gpu("B200", 8000.0, 2250.0)),
    (
        &["A100", "80GB", "PCIe"],
        gpu("A100 80GB PCIe", 1935.0, 312.0),
    ),
    (&["A100", "80GB"], gpu("A100 80GB SXM", 2039.0, 312.0)),
    (&["A100"], gpu("A100 40GB", 1555.0, 312.0)),
    (&["L40S"], gpu("L40S", 864.0, 362.0)),
    (&["L40"], gpu("L40", 864.0, 181.0)),
    (&["L4"], gpu("L4", 300.0, 121.0)),
    (&["A10G"], gpu("A10G", 600.0, 70.0)),
    (&["A10"], gpu("A10", 600.0, 125.0)),
    (&["4090"], gpu("RTX 4090", 1008.0, 165.0)),
];

impl GpuSpec {
    /// `n` such cards working on one model (tensor parallelism): n times the bandwidth and
    /// FLOPs, ignoring the all-reduce traffic between them (so still an upper bound).
    pub fn times(self, n: usize) -> Self {
        let n = n.max(1) as f64;
        Self {
            mem_bandwidth_gb_s: self.mem_bandwidth_gb_s * n,
            bf16_tflops: self.bf16_tflops * n,
            ..self
        }
    }
}

const fn gpu(name: &'static str, mem_bandwidth_gb_s: f64, bf16_tflops: f64) -> GpuSpec {
    GpuSpec {
        name,
        mem_bandwidth_gb_s,
        bf16_tflops,
    }
}

/// The datasheet of the GPU `nvidia-smi` calls `device_name`, when it is in the table.
pub fn gpu_spec(device_name: &str) -> Option<GpuSpec> {
    let upper = device_name.to_ascii_uppercase();
    GPUS.iter()
        .find(|(words, _)| {
            words
                .iter()
                .all(|w| upper.contains(&w.to_ascii_uppercase()))
        })
        .map(|(_, spec)| *spec)
}

/// What the ceiling needs to know about a model as loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelShape {
    pub parameters: u64,
    /// Bytes of weights read per decode step (parameters × bytes of the loaded dtype).
    pub weight_bytes: u64,
    /// K and V of all layers for one token.
    pub kv_bytes_per_token: u64,
}

/// The decode ceiling in output tokens/s at `batch` sequences holding `context` tokens each.
pub fn decode_ceiling(gpu: &GpuSpec, model: &ModelShape, batch: usize, context: f64) -> f64 {
    let batch = batch.max(1) as f64;
    let step_bytes = model.weight_bytes as f64 + batch * context * model.kv_bytes_per_token as f64;
    let memory_bound = batch * gpu.mem_bandwidth_gb_s * 1e9 / step_bytes.max(1.0);
    let compute_bound = gpu.bf16_tflops * 1e12 / (2.0 * model.parameters.max(1) as f64);
    memory_bound.min(compute_bound)
}

/// A worker's GPU and model, for the ceiling it publishes with its heartbeat.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Roofline {
    pub gpu: GpuSpec,
    pub model: ModelShape,
    /// Sequences the engine runs at once.
    pub batch: usize,
}

impl Roofline {
    /// The ceiling at the average `context` of the rows seen so far.
    pub fn ceiling(&self, context: f64) -> f64 {
        decode_ceiling(&self.gpu, &self.model, self.batch, context)
    }
}

/// Ask `nvidia-smi` for the name of CUDA device `ordinal` (as CUDA numbers the visible
/// devices); `None` where there is no `nvidia-smi` or no such device.
pub fn detect_gpu_name(ordinal: usize) -> Option<String> {
    let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    // With CUDA_VISIBLE_DEVICES, CUDA's ordinal n is the n-th listed device.
    let index = match visible.as_deref().map(str::trim) {
        Some(list) if !list.is_empty() => list.split(',').nth(ordinal)?.trim().to_owned(),
        _ => ordinal.to_string(),
    };
    let out = std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=name", "--format=csv,noheader", "-i", &index])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let name = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Llama-3-8B in bf16: 8.03 B parameters; 32 layers × 8 KV heads × 128 × (K, V) × 2 bytes.
    const LLAMA3_8B: ModelShape = ModelShape {
        parameters: 8_030_000_000,
        weight_bytes: 16_060_000_000,
        kv_bytes_per_token: 32 * 8 * 128 * 2 * 2,
    };

    #[test]
    fn nvidia_smi_names_map_to_their_datasheets() {
        let name = |n: &str| gpu_spec(n).map(|g| g.name);
        assert_eq!(name("NVIDIA H100 80GB HBM3"), Some("H100 SXM"));
        assert_eq!(name("NVIDIA H100 PCIe"), Some("H100 PCIe"));
        assert_eq!(name("NVIDIA H100 NVL"), Some("H100 NVL"));
        assert_eq!(name("NVIDIA H200"), Some("H200"));
        assert_eq!(name("NVIDIA GH200 480GB"), Some("GH200"));
        assert_eq!(name("NVIDIA A100-SXM4-80GB"), Some("A100 80GB SXM"));
        assert_eq!(name("NVIDIA A100-SXM4-40GB"), Some("A100 40GB"));
        assert_eq!(name("NVIDIA L40S"), Some("L40S"));
        assert_eq!(name("NVIDIA L4"), Some("L4"));
        assert_eq!(name("NVIDIA A10G"), Some("A10G"));
        assert_eq!(name("Tesla T4"), None);
    }

    #[test]
    fn one_sequence_is_bound_by_reading_the_weights() {
        let h100 = gpu_spec("NVIDIA H100 80GB HBM3").unwrap();
        // 3.35 TB/s over 16 GB of weights: ~209 steps/s, one token each.
        let c = decode_ceiling(&h100, &LLAMA3_8B, 1, 0.0);
        assert!((c - 3350e9 / 16.06e9).abs() < 0.01, "{c}");
    }

    #[test]
    fn the_kv_cache_and_then_compute_bound_large_batches() {
        let h100 = gpu_spec("NVIDIA H100 80GB HBM3").unwrap();
        // 64 sequences of ~300 tokens: 2.5 GB of KV on top of 16 GB of weights.
        let at_64 = decode_ceiling(&h100, &LLAMA3_8B, 64, 300.0);
        assert!((11_000.0..12_000.0).contains(&at_64), "{at_64}");
        // A huge batch cannot pass the FLOP bound: 989 TFLOP/s / 16 GFLOP per token.
        let huge = decode_ceiling(&h100, &LLAMA3_8B, 1 << 20, 1.0);
        assert!((huge - 989e12 / (2.0 * 8.03e9)).abs() < 1.0, "{huge}");
    }
}
