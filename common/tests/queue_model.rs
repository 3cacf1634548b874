//! Property test: random interleavings of claim / start / renew / complete / fail / release /
//! lease expiry / requeue against an in-memory model of the shard state machine, on a real
//! Redis. Invariants: every transition's outcome matches the model (a stale token is always
//! refused), a lapsed lease spends an attempt only when its shard was started (the attempts
//! every claim reports match the model), and after draining, every row was completed exactly
//! once per stage.

use std::collections::BTreeMap;
use std::time::Duration;

use common::job::{rows_digest, JobSpec, JudgeSettings, PromptMode};
use common::queue::{
    CompleteOutcome, Counter, FailOutcome, Queue, RenewOutcome, ShardLease, Stage, StartOutcome,
};
use common::redis_conn::RedisUrl;
use common::status;
use proptest::prelude::*;
use testkit::{requeue_failed, synthetic_rows, RedisServer};

const ROWS: u64 = 10;
const SHARD: u64 = 3;
const MAX_ATTEMPTS: u32 = 3;
const SHORT: Duration = Duration::from_millis(1);
const LONG: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
enum Op {
    Claim { judge: bool, short: bool },
    Start(usize),
    Renew(usize),
    Complete(usize),
    Fail(usize),
    Release(usize),
    RequeueFailed,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<bool>(), any::<bool>()).prop_map(|(judge, short)| Op::Claim { judge, short }),
        2 => (0usize..8).prop_map(Op::Start),
        1 => (0usize..8).prop_map(Op::Renew),
        3 => (0usize..8).prop_map(Op::Complete),
        1 => (0usize..8).prop_map(Op::Fail),
        1 => (0usize..8).prop_map(Op::Release),
        1 => Just(Op::RequeueFailed),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Queued,
    Leased,
    Failed,
    Done,
}

#[derive(Debug, Clone)]
struct ShardModel {
    stage: Stage,
    state: State,
    attempts: u32,
    token: String,
    short: bool,
    /// The current lease was marked started.
    started: bool,
}

struct Model {
    shards: Vec<ShardModel>,
}

impl Model {
    fn new() -> Self {
        let n = ROWS.div_ceil(SHARD) as usize;
        Self {
            shards: (0..n)
                .map(|_| ShardModel {
                    stage: Stage::Infer,
                    state: State::Queued,
                    attempts: 0,
                    token: String::new(),
                    short: false,
                    started: false,
                })
                .collect(),
        }
    }
    fn holds(&self, l: &ShardLease) -> bool {
        let s = &self.shards[l.shard as usize];
        s.state == State::Leased && s.token == l.token
    }
    fn spend(&mut self, id: usize) -> State {
        let s = &mut self.shards[id];
        s.attempts += 1;
        s.token.clear();
        s.started = false;
        s.state = if s.attempts >= MAX_ATTEMPTS {
            State::Failed
        } else {
            State::Queued
        };
        s.state
    }
    /// Put a shard back in its queue without spending an attempt.
    fn unlease(&mut self, id: usize) {
        let s = &mut self.shards[id];
        s.state = State::Queued;
        s.token.clear();
        s.started = false;
    }
    /// Every claim first reaps lapsed (short) leases: a started shard spends an attempt, an
    /// unstarted one goes back for free.
    fn reap(&mut self) {
        for id in 0..self.shards.len() {
            if self.shards[id].state == State::Leased && self.shards[id].short {
                if self.shards[id].started {
                    self.spend(id);
                } else {
                    self.unlease(id);
                }
            }
        }
    }
}

async fn complete(q: &Queue, l: &ShardLease) -> CompleteOutcome {
    let mut counters = BTreeMap::new();
    counters.insert(Counter::rows(l.stage), l.rows() as i64);
    let out: Vec<(u64, String)> = (l.start..l.end).map(|i| (i, format!("\"{i}\""))).collect();
    q.complete(l, &counters, &out).await.unwrap()
}

async fn run_case(q: &Queue, case: u64, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let r = synthetic_rows(ROWS);
    let spec = JobSpec {
        model: format!("model{case}"),
        dataset: "boolq".into(),
        split: "test".into(),
        source: "prop".into(),
        rows: ROWS,
        max_tokens: 1,
        prompt_mode: PromptMode::Raw,
        rows_digest: rows_digest(&r),
        spec_digest: None,
        dataset_spec: None,
    };
    let id = spec.id();
    q.submit(&spec, &JudgeSettings::default(), &r, SHARD, MAX_ATTEMPTS)
        .await
        .unwrap();
    let mut model = Model::new();
    let mut leases: Vec<ShardLease> = Vec::new();
    for op in ops {
        // Let every short lease lapse.
        tokio::time::sleep(Duration::from_millis(3)).await;
        match op {
            Op::Claim { judge, short } => {
                let stage = if judge { Stage::Judge } else { Stage::Infer };
                model.reap();
                let got = q
                    .claim(&id, stage, "w", if short { SHORT } else { LONG })
                    .await
                    .unwrap();
                match got {
                    Some(l) => {
                        let s = &mut model.shards[l.shard as usize];
                        prop_assert_eq!(s.state, State::Queued, "claimed a shard not queued");
                        prop_assert_eq!(s.stage, stage);
                        prop_assert_eq!(s.attempts, l.attempts);
                        s.state = State::Leased;
                        s.token = l.token.clone();
                        s.short = short;
                        s.started = false;
                        leases.push(l);
                    }
                    None => prop_assert!(
                        !model
                            .shards
                            .iter()
                            .any(|s| s.state == State::Queued && s.stage == stage),
                        "claim found nothing but the model has a queued shard"
                    ),
                }
            }
            Op::Start(i) if i < leases.len() => {
                let l = &leases[i];
                let holds = model.holds(l);
                let got = q.start(l).await.unwrap();
                if holds {
                    prop_assert_eq!(got, StartOutcome::Started);
                    model.shards[l.shard as usize].started = true;
                } else {
                    prop_assert_eq!(got, StartOutcome::Stale, "a stale token marked a start");
                }
            }
            Op::Renew(i) if i < leases.len() => {
                let l = &leases[i];
                let expect = if model.holds(l) {
                    RenewOutcome::Renewed
                } else {
                    RenewOutcome::Lost
                };
                let short = model.shards[l.shard as usize].short;
                let got = q.renew(l, if short { SHORT } else { LONG }).await.unwrap();
                prop_assert_eq!(got, expect);
            }
            Op::Complete(i) if i < leases.len() => {
                let l = leases[i].clone();
                let holds = model.holds(&l);
                let got = complete(q, &l).await;
                if holds {
                    prop_assert_eq!(got, CompleteOutcome::Stored);
                    let s = &mut model.shards[l.shard as usize];
                    s.token.clear();
                    s.started = false;
                    s.attempts = 0;
                    if l.stage == Stage::Infer {
                        s.stage = Stage::Judge;
                        s.state = State::Queued;
                    } else {
                        s.state = State::Done;
                    }
                } else {
                    prop_assert_eq!(got, CompleteOutcome::Stale, "a stale token wrote results");
                }
            }
            Op::Fail(i) if i < leases.len() => {
                let l = leases[i].clone();
                let holds = model.holds(&l);
                let got = q.fail(&l, "err", Duration::ZERO, false).await.unwrap();
                if holds {
                    let expect = match model.spend(l.shard as usize) {
                        State::Failed => FailOutcome::Failed,
                        _ => FailOutcome::Retrying,
                    };
                    prop_assert_eq!(got, expect);
                } else {
                    prop_assert_eq!(got, FailOutcome::Stale);
                }
            }
            Op::Release(i) if i < leases.len() => {
                let l = leases[i].clone();
                let holds = model.holds(&l);
                prop_assert_eq!(q.release(&l).await.unwrap(), holds);
                if holds {
                    model.unlease(l.shard as usize);
                }
            }
            Op::RequeueFailed => {
                let out = q.requeue(&id, &requeue_failed()).await.unwrap();
                let mut n = 0;
                for s in model.shards.iter_mut().filter(|s| s.state == State::Failed) {
                    s.state = State::Queued;
                    s.attempts = 0;
                    n += 1;
                }
                prop_assert_eq!(out.requeued, n);
            }
            _ => {}
        }
    }
    // Drain: the holders of live leases finish their shards, failures are requeued and
    // healthy workers finish everything else.
    for l in &leases {
        if model.holds(l) {
            prop_assert_eq!(complete(q, l).await, CompleteOutcome::Stored);
        }
    }
    for _ in 0..20 {
        q.requeue(&id, &requeue_failed()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(3)).await;
        for stage in [Stage::Infer, Stage::Judge] {
            while let Some(l) = q.claim(&id, stage, "drain", LONG).await.unwrap() {
                prop_assert_eq!(complete(q, &l).await, CompleteOutcome::Stored);
            }
        }
    }
    let st = status::job_status(q, &id).await.unwrap();
    prop_assert_eq!(st.rows_inferred, ROWS, "every row inferred exactly once");
    prop_assert_eq!(st.rows_judged, ROWS, "every row judged exactly once");
    prop_assert_eq!(st.shards.done, st.shards.total);
    let keys = common::keys::JobKeys::new(&id);
    let mut c = q.conn();
    let (preds, tagged): (u64, u64) = redis::pipe()
        .hlen(keys.predictions())
        .hlen(keys.tagged())
        .query_async(&mut c)
        .await
        .unwrap();
    prop_assert_eq!((preds, tagged), (ROWS, ROWS));
    Ok(())
}

#[test]
fn random_interleavings_keep_every_row_exactly_once() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = RedisServer::start_with(false, None).expect("redis-server");
    let queue = rt
        .block_on(Queue::connect(&RedisUrl::new(server.url())))
        .unwrap();
    let case = std::sync::atomic::AtomicU64::new(0);
    let config = ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(ops in proptest::collection::vec(op(), 1..40))| {
        let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        rt.block_on(run_case(&queue, n, ops))?;
    });
}
