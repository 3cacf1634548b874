//! How big the loaded model is, read from its files (no weights are loaded): parameters from
//! the safetensors headers or the GGUF tensor table, KV bytes per token from `config.json` or
//! the GGUF metadata. The roofline ceiling `conftag status` shows needs exactly this
//! (`common::roofline`).

use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file;
use common::roofline::{self, ModelShape, Roofline};
use serde_json::Value;

use crate::engine::DtypeArg;

/// The shape of the model at `weights` (a `.gguf` file, a directory, or a hub id already in
/// the hub cache) run with weights and KV cache of `dtype_bytes` bytes a value; `None` when
/// the files do not say.
pub fn model_shape(weights: &str, dtype_bytes: u64) -> Option<ModelShape> {
    let path = Path::new(weights);
    if path.is_file() {
        return gguf_shape(path, dtype_bytes);
    }
    let dir = if path.is_dir() {
        path.to_owned()
    } else {
        hub_snapshot(weights)?
    };
    dir_shape(&dir, dtype_bytes)
}

/// What an embedded-engine worker publishes about its device: its name (`cpu` or the GPU's),
/// and the decode ceiling when the GPU is in `common::roofline`'s table and the model's files
/// tell its shape. `gpu_name` overrides what `nvidia-smi` says; with tensor parallelism the
/// model's GPUs count together.
pub fn worker_device(
    weights: &str,
    dtype: DtypeArg,
    on_gpu: bool,
    gpu_name: Option<String>,
    batch: usize,
    tensor_parallel: usize,
) -> (String, Option<Roofline>) {
    let name = match (gpu_name, on_gpu) {
        (Some(n), _) => n,
        (None, true) => {
            roofline::detect_gpu_name(0).unwrap_or_else(|| "an unnamed CUDA device".into())
        }
        (None, false) => "cpu".into(),
    };
    let dtype_bytes = match dtype {
        DtypeArg::F32 => 4,
        DtypeArg::F16 | DtypeArg::Bf16 => 2,
        DtypeArg::Auto if on_gpu => 2,
        DtypeArg::Auto => 4,
    };
    let roofline = roofline::gpu_spec(&name).and_then(|gpu| {
        Some(Roofline {
            gpu: gpu.times(tensor_parallel),
            model: model_shape(weights, dtype_bytes)?,
            batch,
        })
    });
    let name = match tensor_parallel {
        0 | 1 => name,
        n => format!("{n} × {name}"),
    };
    (name, roofline)
}

/// The cached snapshot directory of hub model `id`.
fn hub_snapshot(id: &str) -> Option<PathBuf> {
    let cache = hf_hub::Cache::new(common::dataset::hub::cache_dir());
    let config = cache.model(id.to_owned()).get("config.json")?;
    config.parent().map(Path::to_owned)
}

fn dir_shape(dir: &Path, dtype_bytes: u64) -> Option<ModelShape> {
    let config: Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).ok()?).ok()?;
    let get = |k: &str| config.get(k).and_then(Value::as_u64);
    let layers = get("num_hidden_layers")?;
    let heads = get("num_attention_heads")?;
    let kv_heads = get("num_key_value_heads").unwrap_or(heads);
    let head_dim = get("head_dim").unwrap_or(get("hidden_size")? / heads.max(1));
    let mut parameters = 0;
    for file in weight_files(dir)? {
        parameters += safetensors_parameters(&dir.join(file))?;
    }
    (parameters > 0).then_some(ModelShape {
        parameters,
        weight_bytes: parameters * dtype_bytes,
        kv_bytes_per_token: 2 * layers * kv_heads * head_dim * dtype_bytes,
    })
}

/// The model's safetensors files: those of `model.safetensors.index.json` when there is one,
/// else `model*.safetensors` (as mistral.rs loads them; a repo may also hold
/// `consolidated.safetensors` or adapters, which would count twice).
fn weight_files(dir: &Path) -> Option<Vec<String>> {
    if let Ok(index) = std::fs::read(dir.join("model.safetensors.index.json")) {
        let index: Value = serde_json::from_slice(&index).ok()?;
        let mut files: Vec<String> = index["weight_map"]
            .as_object()?
            .values()
            .filter_map(|f| f.as_str().map(str::to_owned))
            .collect();
        files.sort();
        files.dedup();
        return Some(files);
    }
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("model") && n.ends_with(".safetensors"))
        .collect();
    files.sort();
    Some(files)
}

/// Elements of all tensors of a safetensors file, from its JSON header alone.
fn safetensors_parameters(path: &Path) -> Option<u64> {
    let mut f = std::fs::File::open(path).ok()?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).ok()?;
    let len = u64::from_le_bytes(len);
    if len > 100 << 20 {
        return None;
    }
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header).ok()?;
    let header: serde_json::Map<String, Value> = serde_json::from_slice(&header).ok()?;
    Some(
        header
            .iter()
            .filter(|(k, _)| k.as_str() != "__metadata__")
            .filter_map(|(_, t)| t.get("shape")?.as_array().cloned())
            .map(|shape| shape.iter().filter_map(Value::as_u64).product::<u64>())
            .sum(),
    )
}

/// A GGUF file: its weights are read as stored (quantized or not), the KV cache is
/// `dtype_bytes` a value.
fn gguf_shape(path: &Path, dtype_bytes: u64) -> Option<ModelShape> {
    let mut f = std::io::BufReader::new(std::fs::File::open(path).ok()?);
    let content = gguf_file::Content::read(&mut f).ok()?;
    let meta = |k: &str| content.metadata.get(k);
    let arch = meta("general.architecture")?.to_string().ok()?.clone();
    let num = |k: &str| meta(&format!("{arch}.{k}")).and_then(|v| v.to_u64().ok());
    let layers = num("block_count")?;
    let heads = num("attention.head_count")?;
    let kv_heads = num("attention.head_count_kv").unwrap_or(heads);
    let head_dim = num("attention.key_length").unwrap_or(num("embedding_length")? / heads.max(1));
    let parameters: u64 = content
        .tensor_infos
        .values()
        .map(|t| t.shape.elem_count() as u64)
        .sum();
    let weight_bytes = std::fs::metadata(path).ok()?.len();
    Some(ModelShape {
        parameters,
        weight_bytes,
        kv_bytes_per_token: 2 * layers * kv_heads * head_dim * dtype_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tiny_models_shape_comes_from_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let shape = crate::tiny_model::TinyShape::default();
        crate::tiny_model::write_tiny_model(dir.path(), shape, 7).unwrap();
        let s = model_shape(dir.path().to_str().unwrap(), 2).unwrap();
        let head_dim = (shape.hidden / shape.heads) as u64;
        assert_eq!(
            s.kv_bytes_per_token,
            2 * shape.layers as u64 * shape.kv_heads as u64 * head_dim * 2
        );
        // Embeddings alone are vocab × hidden; the layers add more.
        assert!(
            s.parameters > (crate::tiny_model::VOCAB * shape.hidden) as u64,
            "{s:?}"
        );
        assert_eq!(s.weight_bytes, s.parameters * 2);
    }

    #[test]
    fn unknown_weights_have_no_shape() {
        assert_eq!(model_shape("no-such-org/no-such-model", 2), None);
    }
}
