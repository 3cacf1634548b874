//! The embedded mistral.rs engine: loading a model (hub id, local safetensors directory or
//! GGUF file) and generating seed-faithful completions (raw prompt by default, greedy, the
//! job's max tokens, special tokens skipped, text trimmed), with token counts per row.
//!
//! mistral.rs batches concurrent requests (continuous batching); conftag builds it with its own
//! patches (`engine-patches/`, `docs/engine-patches.md`) so that it really batches on a GPU
//! (PagedAttention, the CUDA default) and answers right when batching on the CPU (0.8.1 as
//! published got batched CPU decoding wrong). On CPU the engine still sends one request at a
//! time by default (`--concurrency` raises it); `self_check` compares concurrent with
//! one-at-a-time answers on the loaded model and the worker keeps batching only when they
//! agree, which is a test for f32 (bf16 batches sum in another order and differ at
//! near-ties).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::failure::Failure;
use common::job::PromptMode;
use mistralrs::{
    GgufModelBuilder, Model, ModelDType, NormalRequest, Request, RequestBuilder, RequestMessage,
    Response, SamplingParams, TextMessageRole, TextMessages, TextModelBuilder, TokenSource,
};
use tokio::sync::{RwLock, Semaphore};
use tracing::{info, warn};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DtypeArg {
    Auto,
    F32,
    F16,
    Bf16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceArg {
    /// CUDA when this binary was built with it, else CPU.
    Auto,
    Cpu,
    Cuda,
}

/// How to load and drive the engine.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Hub id, local model directory, or `.gguf` file.
    pub weights: String,
    pub dtype: DtypeArg,
    pub device: DeviceArg,
    /// Sequences the engine schedules at once.
    pub max_num_seqs: usize,
    /// Requests sent to the engine at once [default: 1 on CPU, `max_num_seqs` on CUDA].
    pub concurrency: Option<usize>,
    pub no_kv_cache: bool,
    /// PagedAttention: `None` = on with CUDA (the batching path, docs/engine-patches.md),
    /// off on the CPU where mistral.rs has none.
    pub paged_attn: Option<bool>,
    pub paged_block_size: usize,
    pub gpu_mem_util: f32,
    /// GPUs one model is split over with NCCL (`crate::tensor_parallel`); 1 = one GPU.
    pub tensor_parallel: usize,
}

impl EngineOptions {
    pub fn new(weights: impl Into<String>) -> Self {
        Self {
            weights: weights.into(),
            dtype: DtypeArg::Auto,
            device: DeviceArg::Auto,
            max_num_seqs: 32,
            concurrency: None,
            no_kv_cache: false,
            paged_attn: None,
            paged_block_size: 32,
            gpu_mem_util: 0.9,
            tensor_parallel: 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("--device cuda: this conftag-infer was built without CUDA (rebuild with `--features cuda`, see docs/gpu.md)")]
    CudaNotBuilt,
    #[error("--dtype bf16 on the CPU: mistral.rs 0.8.1 panics in its CPU kernels with bf16; use --dtype f32 (or auto) on the CPU, bf16 on CUDA")]
    Bf16OnCpu,
    #[error("{path}: no weights found (expected model.safetensors, model-00001-of-0000N.safetensors or a .gguf file)")]
    NoWeights { path: PathBuf },
    #[error("cannot load model `{model}` from {origin}: {detail}")]
    Load {
        model: String,
        origin: String,
        detail: String,
    },
}

/// What generating one row produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    pub text: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub finish_reason: String,
}

pub struct MistralEngine {
    model: Arc<Model>,
    name: String,
    max_ctx: Option<usize>,
    slots: RwLock<Arc<Semaphore>>,
    concurrency: std::sync::atomic::AtomicUsize,
    on_gpu: bool,
}

impl std::fmt::Debug for MistralEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MistralEngine")
            .field("model", &self.name)
            .field("max_ctx", &self.max_ctx)
            .field("on_gpu", &self.on_gpu)
            .finish()
    }
}

fn dtype(d: DtypeArg) -> ModelDType {
    match d {
        DtypeArg::Auto => ModelDType::Auto,
        DtypeArg::F32 => ModelDType::F32,
        DtypeArg::F16 => ModelDType::F16,
        DtypeArg::Bf16 => ModelDType::BF16,
    }
}

fn has_safetensors(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries.flatten().any(|e| {
                let n = e.file_name().to_string_lossy().to_string();
                n.ends_with(".safetensors") || n.ends_with(".bin") || n.ends_with(".pth")
            })
        })
        .unwrap_or(false)
}

impl MistralEngine {
    pub async fn load(opts: &EngineOptions) -> Result<Self, EngineError> {
        let cuda_built = cfg!(feature = "cuda");
        let on_gpu = match opts.device {
            DeviceArg::Cuda if !cuda_built => return Err(EngineError::CudaNotBuilt),
            DeviceArg::Cuda => true,
            DeviceArg::Cpu => false,
            DeviceArg::Auto => cuda_built,
        };
        if opts.dtype == DtypeArg::Bf16 && !on_gpu {
            return Err(EngineError::Bf16OnCpu);
        }
        if opts.paged_attn == Some(true) && !on_gpu {
            warn!("--paged-attn needs the CUDA engine; using the plain KV cache on CPU");
        }
        let paged = if opts.paged_attn.unwrap_or(on_gpu) && on_gpu {
            Some(
                mistralrs::PagedAttentionMetaBuilder::default()
                    .with_block_size(opts.paged_block_size)
                    .with_gpu_memory(mistralrs::MemoryGpuConfig::Utilization(opts.gpu_mem_util))
                    .build()
                    .map_err(|e| EngineError::Load {
                        model: opts.weights.clone(),
                        origin: "PagedAttention settings".into(),
                        detail: e.to_string(),
                    })?,
            )
        } else {
            None
        };
        let path = Path::new(&opts.weights);
        let token_source = match std::env::var("HF_TOKEN") {
            Ok(t) if !t.is_empty() => TokenSource::EnvVar("HF_TOKEN".into()),
            _ => TokenSource::None,
        };
        let (origin, result) = if path.is_file()
            && path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
        {
            let dir = path
                .parent()
                .unwrap_or(Path::new("."))
                .to_string_lossy()
                .to_string();
            let file = path
                .file_name()
                .map(|f| f.to_string_lossy().to_string())
                .unwrap_or_default();
            let mut b = GgufModelBuilder::new(dir, vec![file])
                .with_max_num_seqs(opts.max_num_seqs)
                .with_prefix_cache_n(None)
                .with_token_source(token_source);
            if !on_gpu {
                b = b.with_force_cpu();
            }
            if opts.no_kv_cache {
                b = b.with_no_kv_cache();
            }
            if let Some(p) = paged {
                b = b.with_paged_attn(p);
            }
            (format!("GGUF file {}", path.display()), b.build().await)
        } else {
            let origin = if path.is_dir() {
                if !has_safetensors(path) {
                    return Err(EngineError::NoWeights {
                        path: path.to_owned(),
                    });
                }
                format!("directory {}", path.display())
            } else if path.exists() {
                return Err(EngineError::NoWeights {
                    path: path.to_owned(),
                });
            } else {
                format!(
                    "the Hugging Face hub ({}/{})",
                    common::dataset::hub::endpoint().trim_end_matches('/'),
                    opts.weights
                )
            };
            let weights = if path.is_dir() {
                std::fs::canonicalize(path)
                    .map(|p| p.to_string_lossy().to_string())
                    .unwrap_or_else(|_| opts.weights.clone())
            } else {
                opts.weights.clone()
            };
            let mut b = TextModelBuilder::new(weights)
                .with_dtype(dtype(opts.dtype))
                .with_max_num_seqs(opts.max_num_seqs)
                .with_prefix_cache_n(None)
                .with_token_source(token_source);
            if !on_gpu {
                b = b.with_force_cpu();
            }
            if opts.no_kv_cache {
                b = b.with_no_kv_cache();
            }
            if let Some(p) = paged {
                b = b.with_paged_attn(p);
            }
            (origin, b.build().await)
        };
        let model = result.map_err(|e| EngineError::Load {
            model: opts.weights.clone(),
            origin,
            detail: format!("{e:#}"),
        })?;
        let max_ctx = model.max_sequence_length().ok().flatten();
        // Under tensor parallelism each rank schedules the replicated requests itself; with 16
        // requests at once on two H100s the ranks stopped in mismatched collectives (one GPU
        // at 100 %, the other idle, no progress), so requests go one at a time there unless
        // --concurrency says otherwise.
        let default_concurrency = match (on_gpu, opts.tensor_parallel > 1) {
            (true, false) => opts.max_num_seqs,
            _ => 1,
        };
        let concurrency = opts.concurrency.unwrap_or(default_concurrency).max(1);
        if opts.tensor_parallel > 1 && concurrency > 1 {
            warn!(
                concurrency,
                "tensor parallelism with more than one request at once hung mistral.rs 0.8.1 on two H100s (docs/benchmarks.md)"
            );
        }
        info!(model = %opts.weights, ?max_ctx, concurrency, on_gpu, "model loaded");
        Ok(Self {
            model: Arc::new(model),
            name: opts.weights.clone(),
            max_ctx,
            slots: RwLock::new(Arc::new(Semaphore::new(concurrency))),
            concurrency: std::sync::atomic::AtomicUsize::new(concurrency),
            on_gpu,
        })
    }

    pub fn max_context(&self) -> Option<usize> {
        self.max_ctx
    }

    pub fn on_gpu(&self) -> bool {
        self.on_gpu
    }

    /// Change how many requests go to the engine at once.
    pub async fn set_concurrency(&self, n: usize) {
        *self.slots.write().await = Arc::new(Semaphore::new(n.max(1)));
        self.concurrency
            .store(n.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    /// How many requests go to the engine at once.
    pub fn concurrency(&self) -> usize {
        self.concurrency.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Number of prompt tokens as the engine will see them (raw mode).
    pub async fn count_tokens(&self, prompt: &str) -> Result<usize, Failure> {
        Ok(self.tokenize(prompt).await?.len())
    }

    /// The prompt's token ids as the engine sees them (raw mode).
    async fn tokenize(&self, prompt: &str) -> Result<Vec<u32>, Failure> {
        self.model
            .tokenize(
                either::Either::Right(prompt.to_owned()),
                None,
                true,
                false,
                None,
            )
            .await
            .map_err(|e| Failure::transient("engine error: tokenize").with_source(e))
    }

    /// Generate greedily for one row.
    pub async fn generate(
        &self,
        prompt: &str,
        mode: PromptMode,
        max_tokens: u32,
    ) -> Result<Generation, Failure> {
        let mut max_new = max_tokens as usize;
        if mode == PromptMode::Raw {
            if let Some(ctx) = self.max_ctx {
                let n = self.count_tokens(prompt).await?;
                if n >= ctx {
                    return Err(Failure::row(format!(
                        "prompt has {n} tokens, the model's context is {ctx}"
                    )));
                }
                max_new = max_new.min(ctx - n);
            }
        }
        let slots = self.slots.read().await.clone();
        let _permit = slots.acquire_owned().await.expect("semaphore open");
        let sampling = greedy(max_new);
        match mode {
            PromptMode::Raw => self.raw_completion(prompt, sampling).await,
            PromptMode::Chat => self.chat_completion(prompt, sampling).await,
        }
    }

    async fn raw_completion(
        &self,
        prompt: &str,
        sampling: SamplingParams,
    ) -> Result<Generation, Failure> {
        Ok(self.raw_completion_logits(prompt, sampling, 0).await?.0)
    }

    /// A raw completion and, with `top_logits` > 0, the `top_logits` largest logits of every
    /// step. mistral.rs's arg-max sampler reports `log10(logit)` as the "logprob" of its top
    /// tokens, so the logits come back exactly (for positive logits: those at the top of a
    /// 128k vocabulary). Asking for them takes the host sampling path (the forward pass is the
    /// same).
    async fn raw_completion_logits(
        &self,
        prompt: &str,
        sampling: SamplingParams,
        top_logits: usize,
    ) -> Result<(Generation, Vec<TokenLogits>), Failure> {
        let message = RequestMessage::Completion {
            text: prompt.to_owned(),
            echo_prompt: false,
            best_of: None,
        };
        self.completion_logits(message, sampling, top_logits).await
    }

    /// The largest logits of the token after `prompt` followed by `continuation` (token ids),
    /// all prefilled in one step: the reference for a decode step of the same context (a
    /// decode that computed its step from wrong KV parts from it; rounding does not).
    pub async fn next_token_logits(
        &self,
        prompt: &str,
        continuation: &[u32],
        top: usize,
    ) -> Result<TokenLogits, Failure> {
        let mut ids = self.tokenize(prompt).await?;
        ids.extend_from_slice(continuation);
        let (_, steps) = self
            .completion_logits(RequestMessage::CompletionTokens(ids), greedy(1), top)
            .await?;
        steps
            .into_iter()
            .next()
            .ok_or_else(|| Failure::transient("engine error: no token generated"))
    }

    async fn completion_logits(
        &self,
        message: RequestMessage,
        mut sampling: SamplingParams,
        top_logits: usize,
    ) -> Result<(Generation, Vec<TokenLogits>), Failure> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Response>(1);
        sampling.top_n_logprobs = top_logits;
        let mut request = NormalRequest::new_simple(message, sampling, tx, 0, None, None);
        request.return_logprobs = top_logits > 0;
        let req = Request::Normal(Box::new(request));
        let sender = self
            .model
            .inner()
            .get_sender(None)
            .map_err(|e| Failure::transient("engine error").with_source(e))?;
        sender
            .send(req)
            .await
            .map_err(|e| Failure::transient(format!("engine error: engine stopped: {e}")))?;
        match rx.recv().await {
            Some(Response::CompletionDone(r)) => {
                let c = r.choices.first().ok_or_else(|| {
                    Failure::transient("engine error: completion without choices")
                })?;
                let steps = c
                    .logprobs
                    .as_ref()
                    .and_then(|l| l.content.as_ref())
                    .map(|steps| steps.iter().map(TokenLogits::of_step).collect())
                    .unwrap_or_default();
                let generation = Generation {
                    text: c.text.trim().to_owned(),
                    prompt_tokens: r.usage.prompt_tokens as u64,
                    completion_tokens: r.usage.completion_tokens as u64,
                    finish_reason: c.finish_reason.clone(),
                };
                Ok((generation, steps))
            }
            Some(Response::ValidationError(e)) => Err(Failure::row(e.to_string())),
            Some(Response::CompletionModelError(msg, _)) => {
                Err(Failure::transient(format!("engine error: {msg}")))
            }
            Some(Response::InternalError(e)) => {
                Err(Failure::transient("engine error").with_source(e))
            }
            Some(_) => Err(Failure::transient(
                "engine error: unexpected engine response",
            )),
            None => Err(Failure::transient(
                "engine error: engine closed the response channel",
            )),
        }
    }

    async fn chat_completion(
        &self,
        prompt: &str,
        sampling: SamplingParams,
    ) -> Result<Generation, Failure> {
        let req =
            RequestBuilder::from(TextMessages::new().add_message(TextMessageRole::User, prompt))
                .set_sampling(sampling);
        match self.model.send_chat_request(req).await {
            Ok(r) => {
                let c = r.choices.first().ok_or_else(|| {
                    Failure::transient("engine error: chat completion without choices")
                })?;
                Ok(Generation {
                    text: c
                        .message
                        .content
                        .clone()
                        .unwrap_or_default()
                        .trim()
                        .to_owned(),
                    prompt_tokens: r.usage.prompt_tokens as u64,
                    completion_tokens: r.usage.completion_tokens as u64,
                    finish_reason: c.finish_reason.clone(),
                })
            }
            Err(e) => {
                let msg = e.to_string();
                if msg.contains("chat template") || msg.to_lowercase().contains("validation") {
                    Err(Failure::row(msg))
                } else {
                    Err(Failure::transient("engine error").with_source(e))
                }
            }
        }
    }

    /// Send `prompts` one at a time, then all at once (bypassing the concurrency cap), and
    /// count how many concurrent answers equal the one-at-a-time answers.
    pub async fn self_check(
        &self,
        prompts: &[String],
        max_tokens: u32,
    ) -> Result<SelfCheck, Failure> {
        let sampling = || greedy(max_tokens as usize);
        let mut serial = Vec::new();
        for p in prompts {
            serial.push(self.raw_completion(p, sampling()).await?.text);
        }
        let concurrent =
            futures::future::join_all(prompts.iter().map(|p| self.raw_completion(p, sampling())))
                .await;
        let concurrent: Vec<String> = concurrent
            .into_iter()
            .map(|g| {
                g.map(|g| g.text)
                    .unwrap_or_else(|e| format!("<error: {}>", e.report()))
            })
            .collect();
        Ok(SelfCheck::compare(serial, concurrent))
    }

    /// The self-check's two runs with the `top` largest logits of every step of every answer
    /// (one at a time, then all at once), for [`crate::near_tie::analyse`].
    pub async fn self_check_logits(
        &self,
        prompts: &[String],
        max_tokens: u32,
        top: usize,
    ) -> Result<(Vec<Vec<TokenLogits>>, Vec<Vec<TokenLogits>>), Failure> {
        let sampling = || greedy(max_tokens as usize);
        let mut serial = Vec::new();
        for p in prompts {
            serial.push(self.raw_completion_logits(p, sampling(), top).await?.1);
        }
        let concurrent = futures::future::join_all(
            prompts
                .iter()
                .map(|p| self.raw_completion_logits(p, sampling(), top)),
        )
        .await
        .into_iter()
        .map(|r| r.map(|(_, steps)| steps))
        .collect::<Result<Vec<_>, _>>()?;
        Ok((serial, concurrent))
    }
}

/// Greedy decoding of at most `max_len` tokens.
fn greedy(max_len: usize) -> SamplingParams {
    SamplingParams {
        temperature: Some(0.0),
        top_k: Some(1),
        max_len: Some(max_len),
        ..SamplingParams::deterministic()
    }
}

/// A generated token and the largest logits of its step.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TokenLogits {
    /// The token the engine chose (its arg-max, which breaks exact ties its own way).
    pub token: u32,
    /// The largest logits of the step, largest first: (token, logit).
    pub top: Vec<(u32, f32)>,
}

impl TokenLogits {
    /// One step of mistral.rs's logprobs: the token it sampled (its id, carried by core patch
    /// 0009: the response otherwise gives only its text) and its top list sorted by value.
    /// Under an exact tie (common in bf16, whose logits near the top are a few representable
    /// values apart) the sampled token need not be the first listed. mistral.rs's greedy
    /// "logprob" is log10 of the raw logit: `10^logprob` undoes it.
    pub fn of_step(step: &mistralrs::core::ResponseLogprob) -> Self {
        TokenLogits {
            token: step.token_id,
            top: step
                .top_logprobs
                .iter()
                .map(|t| (t.token, 10f32.powf(t.logprob)))
                .collect(),
        }
    }

    /// Whether the chosen token is not the first listed: an exact tie the arg-max broke
    /// towards another token than the sorted list did.
    pub fn tie_broken(&self) -> bool {
        self.top.first().is_some_and(|(t, _)| *t != self.token)
    }
}

/// Result of comparing concurrent with one-at-a-time greedy answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfCheck {
    pub prompts: usize,
    pub matching: usize,
    /// Answers sent one at a time, in prompt order.
    pub serial: Vec<String>,
    /// Answers sent all at once, in prompt order.
    pub concurrent: Vec<String>,
}

impl SelfCheck {
    pub fn compare(serial: Vec<String>, concurrent: Vec<String>) -> Self {
        let matching = serial
            .iter()
            .zip(&concurrent)
            .filter(|(a, b)| a == b)
            .count();
        Self {
            prompts: serial.len(),
            matching,
            serial,
            concurrent,
        }
    }

    /// The line `self-check` and `--self-check` print.
    pub fn summary(&self) -> String {
        format!(
            "self-check: {}/{} concurrent answers equal one-at-a-time answers",
            self.matching, self.prompts
        )
    }

    pub fn passed(&self) -> bool {
        self.matching == self.prompts
    }
}

/// Prompts of different lengths for the self-check.
pub fn self_check_prompts(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let words: Vec<String> = (0..(3 + (i * 7) % 29))
                .map(|j| format!("w{}", (i * 31 + j * 17) % 97))
                .collect();
            format!("Question {i}: {}\nAnswer:", words.join(" "))
        })
        .collect()
}

/// Run the self-check and set the engine's concurrency from its result.
pub async fn apply_self_check(engine: &MistralEngine, wanted: usize) -> Result<SelfCheck, Failure> {
    // At least 32 prompts: mistral.rs 0.8.1's CPU path answered 16 concurrent prompts right
    // and 32 wrong (21/32) on the same tiny model.
    let report = engine
        .self_check(&self_check_prompts(wanted.max(32)), 24)
        .await?;
    if report.passed() {
        info!(
            matching = report.matching,
            prompts = report.prompts,
            concurrency = wanted,
            "self-check passed: batching on"
        );
        engine.set_concurrency(wanted).await;
    } else {
        warn!(
            matching = report.matching,
            prompts = report.prompts,
            "self-check failed: concurrent answers differ from one-at-a-time answers; sending one request at a time"
        );
        engine.set_concurrency(1).await;
    }
    Ok(report)
}
