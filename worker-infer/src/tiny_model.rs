//! A tiny random-weight Llama that the project writes itself (config, safetensors, byte-level
//! tokenizer), so inference tests run the real engine with no download.
//!
//! The tokenizer maps every byte to one token (token id = byte value, as GPT-2 byte-level
//! characters), plus `<s>` (256) and `</s>` (257): any text tokenizes, distinct prompts give
//! distinct token sequences, and a reference implementation can tokenize without a library.

use std::collections::BTreeMap;
use std::path::Path;

use rand::{Rng, SeedableRng};
use serde_json::json;

/// Shape of the generated model.
#[derive(Debug, Clone, Copy)]
pub struct TinyShape {
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub max_positions: usize,
    pub rope_theta: f32,
    pub rms_eps: f64,
    /// Standard deviation of the random weights (large enough that greedy choices are
    /// rarely near-ties).
    pub init_std: f32,
}

impl Default for TinyShape {
    fn default() -> Self {
        Self {
            hidden: 64,
            intermediate: 128,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            max_positions: 4096,
            rope_theta: 10_000.0,
            rms_eps: 1e-5,
            init_std: 0.15,
        }
    }
}

pub const VOCAB: usize = 258;
pub const BOS: u32 = 256;
pub const EOS: u32 = 257;

/// GPT-2's byte → printable character mapping used by byte-level tokenizers.
pub fn byte_to_char() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable =
            (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        table[b as usize] = if printable {
            char::from_u32(b).expect("valid char")
        } else {
            let c = char::from_u32(256 + n).expect("valid char");
            n += 1;
            c
        };
    }
    table
}

/// Write the model into `dir` (created if needed). Same seed → same bytes.
pub fn write_tiny_model(dir: &Path, shape: TinyShape, seed: u64) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let config = json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_act": "silu",
        "hidden_size": shape.hidden,
        "intermediate_size": shape.intermediate,
        "num_hidden_layers": shape.layers,
        "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads,
        "max_position_embeddings": shape.max_positions,
        "rms_norm_eps": shape.rms_eps,
        "rope_theta": shape.rope_theta,
        "rope_scaling": null,
        "vocab_size": VOCAB,
        "bos_token_id": BOS,
        "eos_token_id": EOS,
        "tie_word_embeddings": false,
        "torch_dtype": "float32"
    });
    std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&config)?)?;

    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut normal = |n: usize| -> Vec<f32> {
        // Box-Muller: no extra distribution crate needed.
        (0..n)
            .map(|_| {
                let u1: f32 = rng.random::<f32>().max(1e-7);
                let u2: f32 = rng.random::<f32>();
                (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos() * shape.init_std
            })
            .collect()
    };
    let h = shape.hidden;
    let hd = h / shape.heads;
    let kv = shape.kv_heads * hd;
    let mut tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)> = BTreeMap::new();
    tensors.insert(
        "model.embed_tokens.weight".into(),
        (vec![VOCAB, h], normal(VOCAB * h)),
    );
    for l in 0..shape.layers {
        let p = format!("model.layers.{l}");
        for (name, rows, cols) in [
            ("self_attn.q_proj", h, h),
            ("self_attn.k_proj", kv, h),
            ("self_attn.v_proj", kv, h),
            ("self_attn.o_proj", h, h),
            ("mlp.gate_proj", shape.intermediate, h),
            ("mlp.up_proj", shape.intermediate, h),
            ("mlp.down_proj", h, shape.intermediate),
        ] {
            tensors.insert(
                format!("{p}.{name}.weight"),
                (vec![rows, cols], normal(rows * cols)),
            );
        }
        tensors.insert(
            format!("{p}.input_layernorm.weight"),
            (vec![h], vec![1.0; h]),
        );
        tensors.insert(
            format!("{p}.post_attention_layernorm.weight"),
            (vec![h], vec![1.0; h]),
        );
    }
    tensors.insert("model.norm.weight".into(), (vec![h], vec![1.0; h]));
    tensors.insert("lm_head.weight".into(), (vec![VOCAB, h], normal(VOCAB * h)));

    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(name, (shape, data))| {
            let raw: Vec<u8> = data.iter().flat_map(|f| f.to_le_bytes()).collect();
            (name, shape, raw)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(name, shape, raw)| {
            (
                name.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), raw)
                    .expect("valid tensor view"),
            )
        })
        .collect();
    safetensors::tensor::serialize_to_file(views, None, &dir.join("model.safetensors"))
        .map_err(std::io::Error::other)?;

    let table = byte_to_char();
    let mut vocab = serde_json::Map::new();
    for (b, c) in table.iter().enumerate() {
        vocab.insert(c.to_string(), json!(b));
    }
    vocab.insert("<s>".into(), json!(BOS));
    vocab.insert("</s>".into(), json!(EOS));
    let tokenizer = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [
            {"id": BOS, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": EOS, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
        ],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": false,
            "vocab": vocab,
            "merges": []
        }
    });
    std::fs::write(dir.join("tokenizer.json"), serde_json::to_vec(&tokenizer)?)?;
    std::fs::write(
        dir.join("tokenizer_config.json"),
        serde_json::to_vec_pretty(&json!({
            "bos_token": "<s>",
            "eos_token": "</s>",
            "model_max_length": shape.max_positions,
            "add_bos_token": false,
            "chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}",
            "tokenizer_class": "PreTrainedTokenizerFast"
        }))?,
    )?;
    std::fs::write(
        dir.join("generation_config.json"),
        serde_json::to_vec_pretty(
            &json!({"bos_token_id": BOS, "eos_token_id": EOS, "do_sample": false}),
        )?,
    )?;
    Ok(())
}
