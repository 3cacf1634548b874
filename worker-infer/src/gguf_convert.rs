//! Rewrite a GGUF file with its weights in another tensor type, keeping every metadata entry
//! (architecture, tokenizer, chat template) as it was.
//!
//! Why: the demo's SmolLM2-135M ships as Q4_1, and candle 0.10.2 (the tensor library under
//! mistral.rs 0.8.1) has no SIMD kernel for Q4_1 at all, while the SIMD kernels of the other
//! quantized types are chosen at compile time (`target_feature = "avx2"`), which a default
//! x86-64 build does not enable. A GGUF whose weights are f32 (or f16) is loaded as plain
//! dense tensors instead, and candle multiplies those with the `gemm` crate, which picks
//! AVX2/FMA (or NEON) at run time. `docs/benchmarks.md` has the before/after numbers.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Device;

/// The tensor type to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GgufTarget {
    /// Plain f32 (4 bytes a weight): dense matmuls with run-time SIMD on any CPU.
    F32,
    /// Plain f16 (2 bytes a weight): dense, half the memory of f32.
    F16,
    /// 8-bit blocks: fast only in a build with AVX2 enabled at compile time.
    Q8_0,
}

impl GgufTarget {
    fn dtype(self) -> GgmlDType {
        match self {
            Self::F32 => GgmlDType::F32,
            Self::F16 => GgmlDType::F16,
            Self::Q8_0 => GgmlDType::Q8_0,
        }
    }

    /// `general.file_type` as llama.cpp numbers it (ALL_F32, MOSTLY_F16, MOSTLY_Q8_0).
    fn file_type(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q8_0 => 7,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a readable GGUF file: {detail}")]
    Read { path: PathBuf, detail: String },
    #[error("{path}: tensor `{tensor}`: {detail}")]
    Tensor {
        path: PathBuf,
        tensor: String,
        detail: String,
    },
    #[error("{path}: cannot write the GGUF file: {detail}")]
    Write { path: PathBuf, detail: String },
}

/// What a conversion did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertReport {
    pub tensors: usize,
    /// Tensors whose type changed (1-D norms and tensors already in a float type may stay).
    pub converted: usize,
    pub bytes_written: u64,
}

/// Convert `input` into `output` (written to a temporary file beside it, then renamed, so a
/// crash leaves no half-written model behind and two conversions do not clobber each other).
pub fn convert(
    input: &Path,
    output: &Path,
    target: GgufTarget,
) -> Result<ConvertReport, ConvertError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ConvertError::Io { path, source }
    };
    let mut reader = BufReader::new(File::open(input).map_err(io(input))?);
    let content = gguf_file::Content::read(&mut reader).map_err(|e| ConvertError::Read {
        path: input.to_owned(),
        detail: e.to_string(),
    })?;
    // In file order, so the output lists the tensors as the input did.
    let mut names: Vec<(&String, u64)> = content
        .tensor_infos
        .iter()
        .map(|(n, i)| (n, i.offset))
        .collect();
    names.sort_by_key(|(n, offset)| (*offset, (*n).clone()));
    let mut tensors: Vec<(String, QTensor)> = Vec::with_capacity(names.len());
    let mut converted = 0;
    for (name, _) in names {
        let tensor_err = |detail: String| ConvertError::Tensor {
            path: input.to_owned(),
            tensor: name.clone(),
            detail,
        };
        let q = content
            .tensor(&mut reader, name, &Device::Cpu)
            .map_err(|e| tensor_err(e.to_string()))?;
        let keep = q.dtype() == target.dtype()
            // Block types need whole blocks per row; 1-D tensors (norms) stay as they are.
            || (target == GgufTarget::Q8_0
                && (q.shape().rank() < 2 || q.shape().dims().last().is_some_and(|d| d % 32 != 0)));
        if keep {
            tensors.push((name.clone(), q));
            continue;
        }
        let dense = q
            .dequantize(&Device::Cpu)
            .map_err(|e| tensor_err(e.to_string()))?;
        let q = QTensor::quantize(&dense, target.dtype()).map_err(|e| tensor_err(e.to_string()))?;
        tensors.push((name.clone(), q));
        converted += 1;
    }
    // The writer aligns tensor data to 32 bytes and says nothing, so an input with another
    // alignment must not pass its own on.
    let mut metadata: BTreeMap<&str, Value> = content
        .metadata
        .iter()
        .filter(|(k, _)| k.as_str() != "general.alignment")
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    metadata.insert("general.file_type", Value::U32(target.file_type()));
    let meta: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();

    let part = output.with_extension(format!("gguf.part.{}", std::process::id()));
    let write_err = |detail: String| ConvertError::Write {
        path: output.to_owned(),
        detail,
    };
    let result = (|| {
        let mut w = BufWriter::new(File::create(&part).map_err(io(&part))?);
        gguf_file::write(&mut w, &meta, &refs).map_err(|e| write_err(e.to_string()))?;
        w.flush().map_err(io(&part))?;
        w.get_ref().sync_all().map_err(io(&part))?;
        std::fs::rename(&part, output).map_err(io(output))
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&part);
        return Err(e);
    }
    let bytes_written = std::fs::metadata(output).map_err(io(output))?.len();
    Ok(ConvertReport {
        tensors: tensors.len(),
        converted,
        bytes_written,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Tensor;

    fn write_q4_1(path: &Path) -> Vec<(String, Vec<f32>)> {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (64, 64), &dev).unwrap();
        let norm = Tensor::ones(64, candle_core::DType::F32, &dev).unwrap();
        let qw = QTensor::quantize(&w, GgmlDType::Q4_1).unwrap();
        let qn = QTensor::quantize(&norm, GgmlDType::F32).unwrap();
        let arch = Value::String("llama".into());
        let align = Value::U32(32);
        let mut f = File::create(path).unwrap();
        gguf_file::write(
            &mut f,
            &[
                ("general.architecture", &arch),
                ("general.alignment", &align),
            ],
            &[("blk.0.attn_q.weight", &qw), ("output_norm.weight", &qn)],
        )
        .unwrap();
        let deq = |q: &QTensor| {
            q.dequantize(&dev)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        vec![
            ("blk.0.attn_q.weight".into(), deq(&qw)),
            ("output_norm.weight".into(), deq(&qn)),
        ]
    }

    #[test]
    fn f32_conversion_keeps_the_values_and_the_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("in.gguf"), dir.path().join("out.gguf"));
        let expected = write_q4_1(&src);
        let report = convert(&src, &dst, GgufTarget::F32).unwrap();
        assert_eq!((report.tensors, report.converted), (2, 1));
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            2,
            "no part file left"
        );

        let mut r = BufReader::new(File::open(&dst).unwrap());
        let c = gguf_file::Content::read(&mut r).unwrap();
        assert_eq!(
            c.metadata["general.architecture"].to_string().unwrap(),
            "llama"
        );
        assert!(!c.metadata.contains_key("general.alignment"));
        assert_eq!(c.metadata["general.file_type"].to_u32().unwrap(), 0);
        for (name, values) in expected {
            let t = c.tensor(&mut r, &name, &Device::Cpu).unwrap();
            assert_eq!(t.dtype(), GgmlDType::F32, "{name}");
            let got = t
                .dequantize(&Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert_eq!(got, values, "{name}: the Q4_1 values, exactly");
        }
    }

    #[test]
    fn a_file_that_is_not_gguf_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("broken.gguf");
        std::fs::write(&src, b"not a gguf file at all").unwrap();
        let err = convert(&src, &dir.path().join("out.gguf"), GgufTarget::F32).unwrap_err();
        assert!(err.to_string().contains("broken.gguf"), "{err}");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "nothing written"
        );
    }
}
