//! A plain-Rust f32 forward pass of the tiny Llama (no KV cache, no batching): the independent
//! reference that engine outputs are compared with. Follows the Hugging Face Llama
//! conventions (RMSNorm, rotate-half RoPE, grouped-query attention, SiLU-gated MLP).

use std::collections::HashMap;
use std::path::Path;

use crate::tiny_model::EOS;

#[derive(Debug)]
pub struct ReferenceLlama {
    hidden: usize,
    heads: usize,
    kv_heads: usize,
    layers: usize,
    eps: f32,
    theta: f32,
    w: HashMap<String, Vec<f32>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("cannot read the model: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad model file: {0}")]
    Format(String),
}

impl ReferenceLlama {
    pub fn load(dir: &Path) -> Result<Self, ReferenceError> {
        let cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("config.json"))?)
                .map_err(|e| ReferenceError::Format(e.to_string()))?;
        let get = |k: &str| {
            cfg[k]
                .as_f64()
                .ok_or_else(|| ReferenceError::Format(format!("config.json lacks {k}")))
        };
        let bytes = std::fs::read(dir.join("model.safetensors"))?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| ReferenceError::Format(e.to_string()))?;
        let mut w = HashMap::new();
        for (name, view) in st.tensors() {
            let data: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            w.insert(name, data);
        }
        Ok(Self {
            hidden: get("hidden_size")? as usize,
            heads: get("num_attention_heads")? as usize,
            kv_heads: get("num_key_value_heads")? as usize,
            layers: get("num_hidden_layers")? as usize,
            eps: get("rms_norm_eps")? as f32,
            theta: get("rope_theta")? as f32,
            w,
        })
    }

    fn t(&self, name: &str) -> &[f32] {
        &self.w[name]
    }

    /// y = W x for W of shape [rows, x.len()].
    fn matvec(w: &[f32], x: &[f32]) -> Vec<f32> {
        w.chunks_exact(x.len())
            .map(|row| row.iter().zip(x).map(|(a, b)| a * b).sum())
            .collect()
    }

    fn rms_norm(&self, x: &[f32], w: &[f32]) -> Vec<f32> {
        let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
        let inv = 1.0 / (ms + self.eps).sqrt();
        x.iter().zip(w).map(|(v, g)| v * inv * g).collect()
    }

    fn rope(&self, v: &mut [f32], pos: usize) {
        let d = v.len();
        let half = d / 2;
        for i in 0..half {
            let freq = 1.0 / self.theta.powf(2.0 * i as f32 / d as f32);
            let (sin, cos) = (pos as f32 * freq).sin_cos();
            let (a, b) = (v[i], v[i + half]);
            v[i] = a * cos - b * sin;
            v[i + half] = b * cos + a * sin;
        }
    }

    /// Logits of the next token after `tokens`.
    pub fn next_logits(&self, tokens: &[u32]) -> Vec<f32> {
        let h = self.hidden;
        let hd = h / self.heads;
        let group = self.heads / self.kv_heads;
        let emb = self.t("model.embed_tokens.weight");
        let mut xs: Vec<Vec<f32>> = tokens
            .iter()
            .map(|&t| emb[t as usize * h..(t as usize + 1) * h].to_vec())
            .collect();
        for l in 0..self.layers {
            let p = format!("model.layers.{l}");
            let normed: Vec<Vec<f32>> = xs
                .iter()
                .map(|x| self.rms_norm(x, self.t(&format!("{p}.input_layernorm.weight"))))
                .collect();
            let mut q: Vec<Vec<f32>> = Vec::new();
            let mut k: Vec<Vec<f32>> = Vec::new();
            let mut v: Vec<Vec<f32>> = Vec::new();
            for (pos, x) in normed.iter().enumerate() {
                let mut qi = Self::matvec(self.t(&format!("{p}.self_attn.q_proj.weight")), x);
                let mut ki = Self::matvec(self.t(&format!("{p}.self_attn.k_proj.weight")), x);
                for hh in 0..self.heads {
                    self.rope(&mut qi[hh * hd..(hh + 1) * hd], pos);
                }
                for hh in 0..self.kv_heads {
                    self.rope(&mut ki[hh * hd..(hh + 1) * hd], pos);
                }
                q.push(qi);
                k.push(ki);
                v.push(Self::matvec(
                    self.t(&format!("{p}.self_attn.v_proj.weight")),
                    x,
                ));
            }
            let scale = 1.0 / (hd as f32).sqrt();
            for (i, x) in xs.iter_mut().enumerate() {
                let mut attn = vec![0f32; h];
                for hh in 0..self.heads {
                    let kh = hh / group;
                    let qh = &q[i][hh * hd..(hh + 1) * hd];
                    let scores: Vec<f32> = (0..=i)
                        .map(|j| {
                            qh.iter()
                                .zip(&k[j][kh * hd..(kh + 1) * hd])
                                .map(|(a, b)| a * b)
                                .sum::<f32>()
                                * scale
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                    let exps: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
                    let sum: f32 = exps.iter().sum();
                    for (j, e) in exps.iter().enumerate() {
                        for d in 0..hd {
                            attn[hh * hd + d] += e / sum * v[j][kh * hd + d];
                        }
                    }
                }
                let o = Self::matvec(self.t(&format!("{p}.self_attn.o_proj.weight")), &attn);
                for (a, b) in x.iter_mut().zip(o) {
                    *a += b;
                }
                let n = self.rms_norm(x, self.t(&format!("{p}.post_attention_layernorm.weight")));
                let gate = Self::matvec(self.t(&format!("{p}.mlp.gate_proj.weight")), &n);
                let up = Self::matvec(self.t(&format!("{p}.mlp.up_proj.weight")), &n);
                let act: Vec<f32> = gate
                    .iter()
                    .zip(&up)
                    .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                    .collect();
                let down = Self::matvec(self.t(&format!("{p}.mlp.down_proj.weight")), &act);
                for (a, b) in x.iter_mut().zip(down) {
                    *a += b;
                }
            }
        }
        let last = self.rms_norm(
            xs.last().expect("non-empty prompt"),
            self.t("model.norm.weight"),
        );
        Self::matvec(self.t("lm_head.weight"), &last)
    }

    /// Greedy continuation of `prompt` (token id = byte), at most `max_new` tokens, stopping
    /// at `</s>`. Returns the generated token ids.
    pub fn greedy(&self, prompt: &[u32], max_new: usize) -> Vec<u32> {
        let mut tokens = prompt.to_vec();
        let mut out = Vec::new();
        for _ in 0..max_new {
            let logits = self.next_logits(&tokens);
            let next = logits
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, _)| i as u32)
                .expect("non-empty vocab");
            if next == EOS {
                break;
            }
            out.push(next);
            tokens.push(next);
        }
        out
    }
}

/// Text of generated byte tokens as the engine returns it (lossy UTF-8, special tokens
/// dropped, surrounding whitespace trimmed).
pub fn decode_bytes(tokens: &[u32]) -> String {
    let bytes: Vec<u8> = tokens
        .iter()
        .filter(|t| **t < 256)
        .map(|t| *t as u8)
        .collect();
    String::from_utf8_lossy(&bytes).trim().to_owned()
}
