//! Which engine turns prompts into answers: the embedded mistral.rs (the default) or an
//! external OpenAI-compatible server. The shard processor and the bench only see this.

use common::job::PromptMode;

use common::failure::Failure;

use crate::engine::{Generation, MistralEngine, SelfCheck};
use crate::openai_engine::OpenAiEngine;

#[derive(Debug)]
pub enum Engine {
    Mistral(MistralEngine),
    OpenAi(OpenAiEngine),
}

impl Engine {
    pub async fn generate(
        &self,
        prompt: &str,
        mode: PromptMode,
        max_tokens: u32,
    ) -> Result<Generation, Failure> {
        match self {
            Engine::Mistral(e) => e.generate(prompt, mode, max_tokens).await,
            Engine::OpenAi(e) => e.generate(prompt, mode, max_tokens).await,
        }
    }

    /// Requests that run at once.
    pub fn concurrency(&self) -> usize {
        match self {
            Engine::Mistral(e) => e.concurrency(),
            Engine::OpenAi(e) => e.concurrency(),
        }
    }
}

impl Engine {
    /// Answers sent one at a time vs all at once (see `MistralEngine::self_check`). For an
    /// external server the comparison is the same; what to do about a failure is the caller's.
    pub async fn self_check(
        &self,
        prompts: &[String],
        max_tokens: u32,
    ) -> Result<SelfCheck, Failure> {
        let e = match self {
            Engine::Mistral(e) => return e.self_check(prompts, max_tokens).await,
            Engine::OpenAi(e) => e,
        };
        let mut serial = Vec::new();
        for p in prompts {
            serial.push(e.generate(p, PromptMode::Raw, max_tokens).await?.text);
        }
        let concurrent: Vec<String> = futures::future::join_all(
            prompts
                .iter()
                .map(|p| e.generate(p, PromptMode::Raw, max_tokens)),
        )
        .await
        .into_iter()
        .map(|g| {
            g.map(|g| g.text)
                .unwrap_or_else(|e| format!("<error: {}>", e.report()))
        })
        .collect();
        Ok(SelfCheck::compare(serial, concurrent))
    }
}

impl From<MistralEngine> for Engine {
    fn from(e: MistralEngine) -> Self {
        Engine::Mistral(e)
    }
}

impl From<OpenAiEngine> for Engine {
    fn from(e: OpenAiEngine) -> Self {
        Engine::OpenAi(e)
    }
}
