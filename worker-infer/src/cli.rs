//! The `conftag-infer` command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use common::config::CommonArgs;
use common::queue::Stage;
use common::worker::WorkerConfig;

use crate::engine::{DeviceArg, DtypeArg, EngineOptions};
use crate::openai_engine::OpenAiEngineOptions;

/// conftag-infer: pull inference shards of one model from Redis and run them through the
/// embedded mistral.rs engine, or through an OpenAI-compatible server (vLLM, SGLang, TGI,
/// mistralrs-server) with --engine openai --engine-url URL.
///
/// Start one worker per GPU (embedded engine) or a few per server (external engine). Prompts go to the model as raw completion text unless the job
/// was submitted with --chat-template; decoding is greedy with the job's max tokens.
#[derive(Debug, Parser)]
#[command(
    name = "conftag-infer",
    version,
    max_term_width = 100,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub worker: InferArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write the project's tiny random-weight Llama (for tests, demos and benchmarks).
    TinyModel {
        /// Output directory.
        dir: PathBuf,
        /// Random seed (same seed, same bytes).
        #[arg(long, default_value_t = 7)]
        seed: u64,
        #[arg(long, default_value_t = 64)]
        hidden: usize,
        #[arg(long, default_value_t = 2)]
        layers: usize,
        #[arg(long, default_value_t = 4)]
        heads: usize,
        #[arg(long, default_value_t = 2)]
        kv_heads: usize,
    },
    /// Rewrite a GGUF model with its weights as f32 (or f16, q8_0), metadata and tokenizer
    /// unchanged. On CPU a Q4_1/Q4_K model runs several times faster as f32: candle has no
    /// SIMD kernel for Q4_1 and picks its quantized SIMD kernels at compile time, while dense
    /// f32 matmuls use AVX2/FMA whenever the CPU has them (docs/benchmarks.md).
    ConvertGguf {
        /// The .gguf file to read.
        input: PathBuf,
        /// Where to write the converted .gguf (atomically).
        output: PathBuf,
        #[arg(long, value_enum, default_value_t = crate::gguf_convert::GgufTarget::F32)]
        to: crate::gguf_convert::GgufTarget,
    },
    /// Compare greedy answers sent all at once with answers sent one at a time on the loaded
    /// model (no Redis); optionally write prompts and answers as JSON for other references.
    SelfCheck {
        #[arg(long, default_value_t = 32)]
        prompts: usize,
        #[arg(long, default_value_t = 48)]
        new_tokens: u32,
        /// Use word prompts `w5 w17 …` (for the word-level test tokenizer) of 8..200 words.
        #[arg(long)]
        word_prompts: bool,
        /// Also ask the engine for the N largest logits of every step of both runs and say
        /// whether each difference started at a near-tie of the engine's own logits (within
        /// twice the largest logit change batching made where the runs agreed): the check for
        /// bf16 runs, which a float32 reference cannot judge. Embedded engine only.
        #[arg(long, default_value_t = 0, value_name = "N")]
        top_logits: usize,
        /// Write {"prompts", "serial", "concurrent"} here (with --top-logits: the logits of
        /// every step and the near-tie report instead of the answers).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Engine throughput: output tokens/s by requests in flight, straight to the engine (no
    /// Redis) or --through-queue. Uses the engine flags (--weights, --dtype, --device,
    /// --max-num-seqs, PagedAttention, …).
    Bench {
        /// Requests in flight to try.
        #[arg(long, value_delimiter = ',', default_value = "1,16,64,128,256")]
        in_flight: Vec<usize>,
        /// Rows per setting [default: twice the in-flight count (4 at 1), so that sequences
        /// finish and new ones join while the batch runs].
        #[arg(long)]
        rows: Option<usize>,
        /// Words per prompt (= tokens with the word-level test tokenizer).
        #[arg(long, default_value_t = 250)]
        prompt_words: usize,
        #[arg(long, default_value_t = 128)]
        new_tokens: u32,
        /// Rows from a mix file (`deploy/gpu/real-mix.json`: real prompt lengths, a budget per
        /// row) instead of --prompt-words/--new-tokens; --rows of them, cycled.
        #[arg(long, value_name = "FILE")]
        mix: Option<PathBuf>,
        /// Send each setting's rows through the queue instead of straight to the engine:
        /// submitted as a job to the Redis at --redis-url / REDIS_URL (use a scratch one; the
        /// job is purged after), claimed in shards by this process's worker loop with the
        /// worker's own look-ahead and lease flags, as `conftag-infer` would.
        #[arg(long)]
        through_queue: bool,
        /// Rows per shard with --through-queue (`conftag submit`'s default).
        #[arg(long, default_value_t = 32, requires = "through_queue")]
        shard_size: u64,
        /// Append one JSON object per setting to FILE.
        #[arg(long, value_name = "FILE")]
        jsonl: Option<PathBuf>,
        /// Write a CPU flamegraph of each setting to `DIR/flame-<in flight>.svg` (needs a build
        /// with `--features profile`; samples every thread of the process at 499 Hz).
        #[arg(long, value_name = "DIR")]
        profile: Option<PathBuf>,
    },
}

/// Which engine generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineKind {
    /// mistral.rs inside this process (CPU, or CUDA when built with it).
    Mistralrs,
    /// An OpenAI-compatible completions server at --engine-url.
    Openai,
}

#[derive(Debug, Args)]
pub struct InferArgs {
    /// Engine: the embedded mistral.rs, or an external OpenAI-compatible server.
    #[arg(long, value_enum, env = "CONFTAG_ENGINE", default_value_t = EngineKind::Mistralrs)]
    pub engine: EngineKind,
    /// With --engine openai: the server's base URL including /v1, e.g.
    /// http://gpu-node:8000/v1 (vLLM: `vllm serve MODEL --port 8000`).
    #[arg(long, env = "CONFTAG_ENGINE_URL", required_if_eq("engine", "openai"))]
    pub engine_url: Option<String>,
    /// With --engine openai: the model name the server serves [default: --weights, else
    /// --model]. A bearer key for the server (vLLM --api-key), if it needs one, comes from
    /// CONFTAG_ENGINE_API_KEY.
    #[arg(long)]
    pub engine_model: Option<String>,
    /// With --engine openai: seconds to wait at start for a server that is not up yet
    /// (connection refused, or 502/503 while it loads its model).
    #[arg(long, default_value_t = 600)]
    pub engine_wait_secs: u64,

    /// Model name this worker serves: jobs submitted with `--model NAME` are claimed.
    #[arg(long, required = true)]
    pub model: Option<String>,
    /// Where the weights are: a hub id, a local directory (safetensors + tokenizer.json) or a
    /// .gguf file [default: the --model name, as a hub id or path].
    #[arg(long)]
    pub weights: Option<String>,
    /// Weight/activation dtype (auto: bf16 on GPU; on CPU the first of bf16/f16/f32 that works).
    #[arg(long, value_enum, default_value_t = DtypeArg::Auto)]
    pub dtype: DtypeArg,
    /// Device: auto = CUDA when built with it, else CPU.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
    /// Sequences the engine schedules at once [default: 256 on CUDA, where the patched engine
    /// is fastest at 256 on an H200 (docs/benchmarks.md); 32 on CPU].
    #[arg(long)]
    pub max_num_seqs: Option<usize>,
    /// Spread the model over this many GPUs of the node (CUDA ordinals 0..N-1, pick them with
    /// CUDA_VISIBLE_DEVICES) with NCCL tensor parallelism; needs a `--features "cuda nccl"`
    /// build, a power of two and safetensors weights; sends one request at a time. For a
    /// model that fits one GPU, one worker per GPU is faster and simpler (measured on two
    /// H100s: no faster than one card at one request, docs/benchmarks.md). At 1, an NCCL
    /// build takes GPU 0 unless CUDA_VISIBLE_DEVICES chooses.
    #[arg(long, default_value_t = 1)]
    pub tensor_parallel_size: usize,
    /// Requests sent to the engine at once [default: 1 on CPU (batching there is right with the
    /// engine patches but not measured faster on small machines), max-num-seqs on CUDA, 1 with --tensor-parallel-size > 1 (its ranks hung under
    /// concurrency), 256 for --engine openai].
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Before claiming, compare concurrent with one-at-a-time greedy answers on the loaded
    /// model; batch only if they agree. For f32 (CPU): in bf16 on a GPU a batch sums in
    /// another order than one row, answers differ at near-ties and batching would be off.
    #[arg(long)]
    pub self_check: bool,
    /// Disable the KV cache (slow; a workaround for engine bugs).
    #[arg(long)]
    pub no_kv_cache: bool,
    /// PagedAttention, the default on CUDA: with conftag's engine patches it batches rows of
    /// different lengths in one decode step (docs/engine-patches.md). Kept for old command
    /// lines; it changes nothing on CUDA.
    #[arg(long, conflicts_with = "no_paged_attn")]
    pub paged_attn: bool,
    /// The plain KV cache on CUDA instead of PagedAttention (it batches only sequences of
    /// equal length).
    #[arg(long)]
    pub no_paged_attn: bool,
    /// PagedAttention block size (8, 16 or 32).
    #[arg(long, default_value_t = 32)]
    pub paged_attn_block_size: usize,
    /// Share of GPU memory PagedAttention may take for the KV cache (0..1).
    #[arg(long, default_value_t = 0.85)]
    pub gpu_mem_util: f32,
    /// Unfinished rows held at once across shards: the worker claims another shard while the
    /// rows of its shards not yet answered are fewer than this (a shard waiting for its longest
    /// row frees the slots of the rows it has done), so it holds up to one shard (less a row)
    /// more [default: the requests
    /// the engine runs at once + 1: every engine slot busy, at least one row waiting for the
    /// next free slot, at most one shard's worth waiting; a CPU worker running one request at
    /// a time holds one shard, two of one row each]. Shards none of whose rows has reached the
    /// engine are look-ahead: a worker that dies gives them back without spending an attempt,
    /// but no other worker can take them before the lease lapses. More look-ahead hoards
    /// shards: measured on two H100s, a worker holding 4 × 64 rows took a whole 128-row job
    /// and left the second GPU idle.
    #[arg(long)]
    pub max_inflight_rows: Option<u64>,
    /// Lease length in seconds (renewed every third of it).
    #[arg(long, default_value_t = 60)]
    pub lease_secs: u64,
    /// Seconds in-flight shards get to finish after SIGTERM before they are released.
    #[arg(long, default_value_t = 60)]
    pub drain_secs: u64,
    /// Exit when no job has rows left to infer for this model.
    #[arg(long)]
    pub exit_when_done: bool,
    #[command(flatten)]
    pub idle: common::config::IdleArgs,
    /// GPU model for the throughput ceiling `conftag status` shows [default: what nvidia-smi
    /// says for the CUDA device]. Known: H100 (SXM, PCIe, NVL), H200, GH200, B200, A100, L40S,
    /// L40, L4, A10G, A10, RTX 4090.
    #[arg(long, env = "CONFTAG_GPU_NAME")]
    pub gpu_name: Option<String>,
    /// Worker id [default: HOST-infer-PID-RANDOM].
    #[arg(long, env = "CONFTAG_WORKER_ID")]
    pub worker_id: Option<String>,
}

impl InferArgs {
    pub fn engine_options(&self) -> EngineOptions {
        let model = self.model.clone().unwrap_or_default();
        let mut o = EngineOptions::new(self.weights.clone().unwrap_or(model));
        o.dtype = self.dtype;
        o.device = self.device;
        let on_gpu = match self.device {
            DeviceArg::Cuda => true,
            DeviceArg::Cpu => false,
            DeviceArg::Auto => cfg!(feature = "cuda"),
        };
        o.max_num_seqs = self
            .max_num_seqs
            .unwrap_or(if on_gpu { 256 } else { 32 })
            .max(1);
        o.concurrency = self.concurrency;
        o.no_kv_cache = self.no_kv_cache;
        o.paged_attn = if self.no_paged_attn {
            Some(false)
        } else if self.paged_attn {
            Some(true)
        } else {
            None
        };
        o.paged_block_size = self.paged_attn_block_size;
        o.gpu_mem_util = self.gpu_mem_util;
        o.tensor_parallel = self.tensor_parallel_size.max(1);
        o
    }

    /// How to reach the external server (--engine openai).
    pub fn openai_options(&self) -> OpenAiEngineOptions {
        let model = self
            .engine_model
            .clone()
            .or_else(|| self.weights.clone())
            .or_else(|| self.model.clone())
            .unwrap_or_default();
        let mut o = OpenAiEngineOptions::new(self.engine_url.clone().unwrap_or_default(), model);
        // From the environment only, never a flag: flags show in `ps` and shell history.
        o.api_key = common::config::Secret::from_env("CONFTAG_ENGINE_API_KEY");
        o.wait_ready = Duration::from_secs(self.engine_wait_secs);
        if let Some(c) = self.concurrency {
            o.concurrency = c.max(1);
        }
        o
    }

    /// The worker settings; `engine_concurrency` is how many requests the loaded engine runs
    /// at once (it sizes the default number of rows held: that many + 1, see
    /// `--max-inflight-rows`).
    pub fn worker_config(&self, engine_concurrency: usize) -> WorkerConfig {
        let mut c = WorkerConfig::new(Stage::Infer);
        if let Some(id) = &self.worker_id {
            c.id = id.clone();
        }
        c.model = self.model.clone();
        c.max_inflight_rows = self
            .max_inflight_rows
            .unwrap_or(engine_concurrency as u64 + 1)
            .max(1);
        c.lease = Duration::from_secs(self.lease_secs.max(3));
        c.drain_grace = Duration::from_secs(self.drain_secs);
        c.exit_when_done = self.exit_when_done;
        self.idle.apply(&mut c);
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
