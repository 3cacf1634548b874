//! Is a batched greedy answer that differs from the one-at-a-time answer numerical noise, or
//! a scheduling bug?
//!
//! Batching changes floating-point sums (a GEMM over many rows instead of a GEMV over one), so
//! in bf16 every logit moves a little between the two runs; where the two largest logits of a
//! step are closer than that, the arg-max can flip and the answers part. A scheduling bug
//! (lost KV, a re-prefill) moves logits far more. A float32 reference cannot judge a bf16 run
//! (bf16 rounding over 32 layers moves a random model's logits past its top gaps), so this
//! uses the engine's own logits from both runs (`self-check --top-logits N`):
//!
//! - **noise**: the largest change batching made to the chosen token's logit at the steps
//!   where both runs had the same prefix and chose the same token;
//! - at the first differing step of each differing answer, the gap between the two tokens in
//!   each run; the difference is a **near-tie** when both gaps are within twice the noise
//!   (each of the two logits may have moved by up to the noise).

use serde::Serialize;

use crate::engine::TokenLogits;

/// The first differing step of one answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Divergence {
    pub prompt: usize,
    /// Index of the first differing generated token.
    pub step: usize,
    /// The token each run chose there (`None`: that run had already ended).
    pub serial_token: Option<u32>,
    pub concurrent_token: Option<u32>,
    /// The one-at-a-time run's logit of its token minus its logit of the batched run's token
    /// (`None`: not among the logits it reported).
    pub serial_gap: Option<f32>,
    /// The batched run's logit of its token minus its logit of the one-at-a-time token.
    pub concurrent_gap: Option<f32>,
    /// Tokens both runs reported among their largest logits at this step (out of N). Where
    /// the runs agreed this stays near N; 0 means the step's whole distribution changed, which
    /// rounding noise does not do.
    pub shared_top: usize,
    pub near_tie: bool,
}

/// Both runs of a self-check, compared step by step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub prompts: usize,
    /// Answers whose tokens are all equal.
    pub equal: usize,
    /// Steps compared where both runs chose the same token after the same prefix.
    pub matched_steps: usize,
    /// The largest change of the chosen token's logit between the runs at those steps.
    pub noise: f32,
    /// Steps (of both runs, up to each answer's first difference) where the engine's arg-max
    /// chose a token tied with the one listed first: exact ties, frequent in bf16.
    pub exact_ties: usize,
    pub divergences: Vec<Divergence>,
}

impl Report {
    pub fn near_ties(&self) -> usize {
        self.divergences.iter().filter(|d| d.near_tie).count()
    }

    /// One line for people: counts, the noise and the largest gap among the differences.
    pub fn summary(&self) -> String {
        let worst = self
            .divergences
            .iter()
            .map(|d| match (d.serial_gap, d.concurrent_gap) {
                (Some(a), Some(b)) => format!("{:.4}", a.max(b)),
                _ => "unknown".into(),
            })
            .max_by(|a, b| {
                let num = |s: &str| s.parse::<f32>().unwrap_or(f32::INFINITY);
                num(a).total_cmp(&num(b))
            })
            .unwrap_or_else(|| "-".into());
        let disjoint = self
            .divergences
            .iter()
            .filter(|d| d.shared_top == 0)
            .count();
        format!(
            "near-tie check: {}/{} answers equal; {} differ, {} at near-ties (both gaps within 2 × {:.4}, the largest logit change batching made on {} matched steps), {} where the two runs' reported logits share no token; largest gap {}; {} steps broke an exact tie",
            self.equal,
            self.prompts,
            self.divergences.len(),
            self.near_ties(),
            self.noise,
            self.matched_steps,
            disjoint,
            worst,
            self.exact_ties
        )
    }
}

/// Tokens two steps both reported among their largest logits.
pub fn shared_tokens(a: &TokenLogits, b: &TokenLogits) -> usize {
    a.top
        .iter()
        .filter(|(t, _)| b.top.iter().any(|(u, _)| u == t))
        .count()
}

fn logit_of(step: &TokenLogits, token: u32) -> Option<f32> {
    step.top.iter().find(|(t, _)| *t == token).map(|(_, l)| *l)
}

/// Compare the one-at-a-time (`serial`) and batched (`concurrent`) runs, prompt by prompt.
pub fn analyse(serial: &[Vec<TokenLogits>], concurrent: &[Vec<TokenLogits>]) -> Report {
    let mut noise = 0f32;
    let mut matched_steps = 0;
    let mut exact_ties = 0;
    let mut firsts = Vec::new();
    for (prompt, (s, c)) in serial.iter().zip(concurrent).enumerate() {
        let mut parted = None;
        for step in 0..s.len().max(c.len()) {
            let (a, b) = (s.get(step), c.get(step));
            exact_ties += [a, b].iter().flatten().filter(|t| t.tie_broken()).count();
            match (a, b) {
                (Some(a), Some(b)) if a.token == b.token => {
                    if let (Some(la), Some(lb)) = (logit_of(a, a.token), logit_of(b, b.token)) {
                        noise = noise.max((la - lb).abs());
                        matched_steps += 1;
                    }
                }
                (a, b) => {
                    parted = Some((step, a.cloned(), b.cloned()));
                    break;
                }
            }
        }
        if let Some(p) = parted {
            firsts.push((prompt, p));
        }
    }
    let divergences = firsts
        .into_iter()
        .map(|(prompt, (step, s, c))| {
            let (serial_gap, concurrent_gap) = match (&s, &c) {
                (Some(s), Some(c)) => (
                    logit_of(s, s.token)
                        .zip(logit_of(s, c.token))
                        .map(|(a, b)| a - b),
                    logit_of(c, c.token)
                        .zip(logit_of(c, s.token))
                        .map(|(a, b)| a - b),
                ),
                _ => (None, None),
            };
            let within = |g: Option<f32>| g.is_some_and(|g| g <= 2.0 * noise);
            let shared_top = match (&s, &c) {
                (Some(s), Some(c)) => shared_tokens(s, c),
                _ => 0,
            };
            Divergence {
                prompt,
                step,
                serial_token: s.map(|s| s.token),
                concurrent_token: c.map(|c| c.token),
                serial_gap,
                concurrent_gap,
                shared_top,
                near_tie: within(serial_gap) && within(concurrent_gap),
            }
        })
        .collect::<Vec<_>>();
    Report {
        prompts: serial.len(),
        equal: serial.len() - divergences.len(),
        matched_steps,
        noise,
        exact_ties,
        divergences,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(top: &[(u32, f32)]) -> TokenLogits {
        TokenLogits {
            token: top[0].0,
            top: top.to_vec(),
        }
    }

    #[test]
    fn a_flip_within_the_batching_noise_is_a_near_tie_and_a_wide_one_is_not() {
        let serial = vec![
            // Prompt 0: the same two tokens, then a flip of two logits 0.05 apart.
            vec![
                step(&[(1, 14.0), (2, 12.0)]),
                step(&[(3, 13.0), (4, 11.0)]),
                step(&[(5, 12.50), (6, 12.45)]),
            ],
            // Prompt 1: parts at its first token, by a full logit.
            vec![step(&[(7, 15.0), (8, 14.0)])],
            // Prompt 2: equal all the way.
            vec![step(&[(9, 10.0), (1, 9.0)])],
        ];
        let concurrent = vec![
            vec![
                step(&[(1, 14.06), (2, 12.0)]),
                step(&[(3, 12.97), (4, 11.0)]),
                step(&[(6, 12.48), (5, 12.46)]),
            ],
            vec![step(&[(8, 15.2), (7, 14.2)])],
            vec![step(&[(9, 10.01), (1, 9.0)])],
        ];
        let r = analyse(&serial, &concurrent);
        assert_eq!(r.prompts, 3);
        assert_eq!(r.equal, 1);
        assert_eq!(r.matched_steps, 3);
        assert!((r.noise - 0.06).abs() < 1e-4, "{}", r.noise);
        assert_eq!(r.divergences.len(), 2);
        let flip = &r.divergences[0];
        assert_eq!((flip.prompt, flip.step), (0, 2));
        assert!(flip.near_tie, "{flip:?}");
        let wide = &r.divergences[1];
        assert_eq!((wide.prompt, wide.step), (1, 0));
        assert!(!wide.near_tie, "{wide:?}");
        assert_eq!(r.near_ties(), 1);
        assert_eq!((flip.shared_top, wide.shared_top), (2, 2));
        assert!(r
            .summary()
            .starts_with("near-tie check: 1/3 answers equal; 2 differ, 1 at near-ties"));
    }

    #[test]
    fn a_token_outside_the_reported_logits_or_an_early_end_is_not_a_near_tie() {
        let serial = vec![
            vec![step(&[(1, 14.0), (2, 13.99)])],
            vec![step(&[(1, 3.0)])],
        ];
        let concurrent = vec![
            vec![step(&[(3, 14.0), (2, 13.99)])],
            vec![step(&[(1, 3.0)]), step(&[(4, 2.0)])],
        ];
        let r = analyse(&serial, &concurrent);
        assert_eq!(r.equal, 0);
        assert!(r.divergences.iter().all(|d| !d.near_tie));
        assert_eq!(r.divergences[1].serial_token, None);
        assert_eq!(r.divergences[1].step, 1);
        assert_eq!(r.divergences[0].shared_top, 1);
        assert!(r
            .summary()
            .contains(", 1 where the two runs' reported logits share no token"));
    }

    /// The fault of session 6: under an exact tie the engine sampled the second listed token,
    /// and reading the first listed one as "the token" hid where the runs really parted.
    #[test]
    fn the_sampled_token_of_an_exact_tie_is_the_token_and_the_runs_part_there() {
        use mistralrs::core::ResponseLogprob;
        use mistralrs::TopLogprob;
        let listed = |t: u32, v: f32| TopLogprob {
            token: t,
            logprob: v.log10(),
            bytes: Some(format!("w{t}")),
        };
        let tied = ResponseLogprob {
            token: "w6".into(),
            token_id: 6,
            logprob: 12.5f32.log10(),
            bytes: None,
            top_logprobs: vec![listed(5, 12.5), listed(6, 12.5), listed(7, 11.0)],
        };
        let chosen = TokenLogits::of_step(&tied);
        assert_eq!(chosen.token, 6);
        assert!(chosen.tie_broken());
        let plain = TokenLogits::of_step(&ResponseLogprob {
            token: "w5".into(),
            token_id: 5,
            ..tied.clone()
        });
        assert_eq!(plain.token, 5);
        assert!(!plain.tie_broken());

        // Both runs list 5 first at step 0; the one-at-a-time run sampled 6.
        let serial = vec![vec![chosen, step(&[(9, 3.0), (1, 2.0)])]];
        let concurrent = vec![vec![plain, step(&[(1, 14.0), (9, 1.0)])]];
        let r = analyse(&serial, &concurrent);
        assert_eq!(r.exact_ties, 1);
        let d = &r.divergences[0];
        assert_eq!(
            (d.step, d.serial_token, d.concurrent_token),
            (0, Some(6), Some(5))
        );
        assert_eq!(d.serial_gap, Some(0.0));
        assert!(r.summary().ends_with("; 1 steps broke an exact tie"));
    }
}
