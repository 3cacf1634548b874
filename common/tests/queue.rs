//! The shard queue against a real `redis-server` (started per test on a free port).

use std::collections::BTreeMap;
use std::time::Duration;

use common::dataset::InputRow;
use common::job::{rows_digest, JobSpec, JudgeSettings, PromptMode};
use common::keys::JobKeys;
use common::queue::{
    CompleteOutcome, Counter, CounterDeltas, FailOutcome, Queue, RenewOutcome, RequeueRequest,
    RequeueSelection, ShardLease, Stage, StartOutcome, SubmitOutcome,
};
use common::redis_conn::RedisUrl;
use common::status::{self, JobState};
use serde_json::json;
use testkit::{requeue_failed, synthetic_rows, RedisServer};

fn spec(model: &str, rows: &[InputRow]) -> JobSpec {
    JobSpec {
        model: model.into(),
        dataset: "boolq".into(),
        split: "test".into(),
        source: "test".into(),
        rows: rows.len() as u64,
        max_tokens: 128,
        prompt_mode: PromptMode::Raw,
        rows_digest: rows_digest(rows),
        spec_digest: None,
        dataset_spec: None,
    }
}

async fn setup(n: u64, shard_size: u64, max_attempts: u32) -> (RedisServer, Queue, JobSpec) {
    let server = RedisServer::start().expect("redis-server");
    let queue = Queue::connect(&RedisUrl::new(server.url())).await.unwrap();
    let r = synthetic_rows(n);
    let s = spec("m", &r);
    let out = queue
        .submit(&s, &JudgeSettings::default(), &r, shard_size, max_attempts)
        .await
        .unwrap();
    assert_eq!(
        out,
        SubmitOutcome::Created {
            shards: n.div_ceil(shard_size)
        }
    );
    (server, queue, s)
}

fn output(lease: &ShardLease) -> (CounterDeltas, Vec<(u64, String)>) {
    let mut counters = BTreeMap::new();
    counters.insert(Counter::rows(lease.stage), lease.rows() as i64);
    let rows = (lease.start..lease.end)
        .map(|i| {
            let record = match lease.stage {
                Stage::Infer => {
                    json!({"response": lease.token, "question": "q", "correct_answer": i})
                }
                Stage::Judge => json!({
                    "response": lease.token, "question": "q", "correct_answer": i,
                    "judge_response": null, "correct": false, "confidence_token": "",
                    "tagged_response": "", "judged_by": "test", "judge_model": "",
                    "judge_prompt_sha": ""
                }),
            };
            (i, record.to_string())
        })
        .collect();
    (counters, rows)
}

async fn complete(queue: &Queue, lease: &ShardLease) -> CompleteOutcome {
    let (c, r) = output(lease);
    queue.complete(lease, &c, &r).await.unwrap()
}

const LEASE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn submit_is_idempotent_and_conflicts_are_refused() {
    let (_server, queue, s) = setup(10, 4, 3).await;
    let r = synthetic_rows(10);
    let again = queue
        .submit(&s, &JudgeSettings::default(), &r, 4, 3)
        .await
        .unwrap();
    assert_eq!(again, SubmitOutcome::AlreadyExists);
    let mut other = s.clone();
    other.max_tokens = 7;
    let err = queue
        .submit(&other, &JudgeSettings::default(), &r, 4, 3)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_tokens"), "{err}");
    let st = status::job_status(&queue, &s.id()).await.unwrap();
    assert_eq!(st.rows, 10);
    assert_eq!(st.shards.total, 3);
    assert_eq!(st.shards.queued.infer, 3);
    assert_eq!(st.state, JobState::Queued);
    assert_eq!(queue.job_ids().await.unwrap(), vec![s.id()]);
}

#[tokio::test]
async fn a_shard_goes_infer_then_judge_then_done() {
    let (_server, queue, s) = setup(5, 5, 3).await;
    let id = s.id();
    let lease = queue
        .claim(&id, Stage::Infer, "w1", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((lease.start, lease.end, lease.attempts), (0, 5, 0));
    assert!(queue
        .claim(&id, Stage::Infer, "w1", LEASE)
        .await
        .unwrap()
        .is_none());
    assert!(queue
        .claim(&id, Stage::Judge, "w1", LEASE)
        .await
        .unwrap()
        .is_none());
    assert_eq!(complete(&queue, &lease).await, CompleteOutcome::Stored);
    let st = status::job_status(&queue, &id).await.unwrap();
    assert_eq!((st.shards.queued.judge, st.rows_inferred), (1, 5));
    // The same completion again is refused: the token was spent.
    assert_eq!(complete(&queue, &lease).await, CompleteOutcome::Stale);

    let judge = queue
        .claim(&id, Stage::Judge, "w2", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(complete(&queue, &judge).await, CompleteOutcome::Stored);
    let st = status::job_status(&queue, &id).await.unwrap();
    assert_eq!(st.state, JobState::Done);
    assert_eq!((st.shards.done, st.rows_judged), (1, 5));
    assert!(st.rates.judge_rows_per_s > 0.0);
}

#[tokio::test]
async fn a_lapsed_lease_is_reclaimed_and_the_old_token_is_fenced_off() {
    let (_server, queue, s) = setup(4, 4, 5).await;
    let id = s.id();
    let dead = queue
        .claim(&id, Stage::Infer, "dead", Duration::from_millis(100))
        .await
        .unwrap()
        .unwrap();
    // The dead worker had started the shard (unstarted shards: the preemption tests below).
    assert_eq!(queue.start(&dead).await.unwrap(), StartOutcome::Started);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let alive = queue
        .claim(&id, Stage::Infer, "alive", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(alive.shard, dead.shard);
    assert_eq!(
        alive.attempts, 1,
        "a lapsed lease of a started shard spends an attempt"
    );
    assert_eq!(queue.start(&dead).await.unwrap(), StartOutcome::Stale);
    assert_eq!(queue.renew(&dead, LEASE).await.unwrap(), RenewOutcome::Lost);
    assert_eq!(complete(&queue, &dead).await, CompleteOutcome::Stale);
    assert_eq!(complete(&queue, &alive).await, CompleteOutcome::Stored);
    let preds = queue.predictions(&id, 0, 4).await.unwrap();
    assert!(preds.iter().all(Option::is_some));
    let st = status::job_status(&queue, &id).await.unwrap();
    assert_eq!(st.rows_inferred, 4, "counted once");
    assert_eq!(
        (
            st.failures.infer.leases_expired,
            st.failures.infer.attempts_failed,
            st.failures.infer.leases_lapsed_unstarted
        ),
        (1, 0, 0),
        "the lapsed lease shows in status"
    );
}

#[tokio::test]
async fn a_renewed_lease_is_never_stolen() {
    let (_server, queue, s) = setup(4, 4, 5).await;
    let id = s.id();
    // Renewed every 100 ms, the 1 s lease tolerates a 900 ms stall of a loaded machine.
    let short = Duration::from_millis(1000);
    let lease = queue
        .claim(&id, Stage::Infer, "slow", short)
        .await
        .unwrap()
        .unwrap();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            queue.renew(&lease, short).await.unwrap(),
            RenewOutcome::Renewed
        );
        assert!(queue
            .claim(&id, Stage::Infer, "thief", short)
            .await
            .unwrap()
            .is_none());
    }
    assert_eq!(complete(&queue, &lease).await, CompleteOutcome::Stored);
}

#[tokio::test]
async fn errors_retry_then_fail_and_requeue_brings_them_back() {
    let (_server, queue, s) = setup(2, 2, 2).await;
    let id = s.id();
    let l1 = queue
        .claim(&id, Stage::Infer, "w", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        queue
            .fail(&l1, "boom 1", Duration::from_millis(1000), false)
            .await
            .unwrap(),
        FailOutcome::Retrying
    );
    // Not ready before its backoff delay.
    assert!(queue
        .claim(&id, Stage::Infer, "w", LEASE)
        .await
        .unwrap()
        .is_none());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let l2 = queue
        .claim(&id, Stage::Infer, "w", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(l2.attempts, 1);
    assert_eq!(
        queue
            .fail(&l2, "boom 2", Duration::ZERO, false)
            .await
            .unwrap(),
        FailOutcome::Failed
    );
    let st = status::job_status(&queue, &id).await.unwrap();
    assert_eq!(st.state, JobState::Failed);
    assert_eq!(st.failed_shards.len(), 1);
    assert_eq!(st.failed_shards[0].error, "boom 2");
    assert!(st.last_error.unwrap().contains("boom 2"));
    assert_eq!(
        (
            st.failures.infer.attempts_failed,
            st.failures.infer.leases_expired
        ),
        (2, 0),
        "both failed attempts show in status"
    );

    let out = queue.requeue(&id, &requeue_failed()).await.unwrap();
    assert_eq!(out.requeued, 1);
    let l3 = queue
        .claim(&id, Stage::Infer, "w", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(l3.attempts, 0, "requeue resets attempts");
    assert_eq!(complete(&queue, &l3).await, CompleteOutcome::Stored);
}

#[tokio::test]
async fn release_gives_a_shard_back_without_spending_an_attempt() {
    let (_server, queue, s) = setup(2, 2, 1).await;
    let id = s.id();
    let l1 = queue
        .claim(&id, Stage::Infer, "w", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert!(queue.release(&l1).await.unwrap());
    assert!(!queue.release(&l1).await.unwrap());
    let l2 = queue
        .claim(&id, Stage::Infer, "w", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(l2.attempts, 0);
    assert_eq!(complete(&queue, &l1).await, CompleteOutcome::Stale);
}

#[tokio::test]
async fn cancel_stops_claims_renewals_and_completions() {
    let (_server, queue, s) = setup(4, 2, 3).await;
    let id = s.id();
    let l = queue
        .claim(&id, Stage::Infer, "w", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert!(queue.cancel(&id).await.unwrap());
    assert!(!queue.cancel(&id).await.unwrap());
    assert_eq!(
        queue.renew(&l, LEASE).await.unwrap(),
        RenewOutcome::Cancelled
    );
    assert_eq!(complete(&queue, &l).await, CompleteOutcome::Cancelled);
    assert!(queue
        .claim(&id, Stage::Infer, "w", LEASE)
        .await
        .unwrap()
        .is_none());
    let st = status::job_status(&queue, &id).await.unwrap();
    assert_eq!(st.state, JobState::Cancelled);
}

#[tokio::test]
async fn rejudging_a_finished_job_subtracts_its_judge_counters() {
    let (_server, queue, s) = setup(6, 3, 3).await;
    let id = s.id();
    for stage in [Stage::Infer, Stage::Judge] {
        while let Some(l) = queue.claim(&id, stage, "w", LEASE).await.unwrap() {
            assert_eq!(complete(&queue, &l).await, CompleteOutcome::Stored);
        }
    }
    assert_eq!(
        status::job_status(&queue, &id).await.unwrap().state,
        JobState::Done
    );
    let new_judge = JudgeSettings {
        model: "other-judge".into(),
        mode: common::JudgeMode::Rules,
        budget_micro_usd: None,
    };
    let out = queue
        .requeue(
            &id,
            &RequeueRequest {
                selection: RequeueSelection::All,
                target: Some(Stage::Judge),
                force: true,
                judge: Some(new_judge.clone()),
            },
        )
        .await
        .unwrap();
    assert_eq!(out.requeued, 2);
    let st = status::job_status(&queue, &id).await.unwrap();
    assert_eq!(
        (st.rows_inferred, st.rows_judged, st.shards.done),
        (6, 0, 0)
    );
    assert_eq!(st.shards.queued.judge, 2);
    assert_eq!(queue.job_spec(&id).await.unwrap().unwrap().1, new_judge);
    assert!(queue
        .tagged(&id, 0, 6)
        .await
        .unwrap()
        .iter()
        .all(Option::is_none));
    assert!(queue
        .predictions(&id, 0, 6)
        .await
        .unwrap()
        .iter()
        .all(Option::is_some));
}

#[tokio::test]
async fn a_redis_restart_between_claim_and_complete_loses_nothing() {
    let (mut server, queue, s) = setup(8, 4, 3).await;
    let id = s.id();
    let l = queue
        .claim(&id, Stage::Infer, "w", LEASE)
        .await
        .unwrap()
        .unwrap();
    server.kill();
    // While Redis is down, calls fail (and workers retry).
    assert!(complete_result(&queue, &l).await.is_err());
    server.restart().unwrap();
    let mut stored = None;
    for _ in 0..50 {
        match complete_result(&queue, &l).await {
            Ok(o) => {
                stored = Some(o);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert_eq!(stored, Some(CompleteOutcome::Stored));
    let l2 = queue
        .claim(&id, Stage::Infer, "w", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(l2.shard, l.shard);
    assert_eq!(complete(&queue, &l2).await, CompleteOutcome::Stored);
    let st = status::job_status(&queue, &id).await.unwrap();
    assert_eq!((st.rows_inferred, st.shards.queued.judge), (8, 2));
}

async fn complete_result(
    queue: &Queue,
    lease: &ShardLease,
) -> Result<CompleteOutcome, common::QueueError> {
    let (c, r) = output(lease);
    queue.complete(lease, &c, &r).await
}

#[tokio::test]
async fn an_unreachable_redis_is_a_clear_error_without_the_password() {
    let port = testkit::free_port();
    let url = RedisUrl::new(format!("redis://:hunter2@127.0.0.1:{port}"));
    let err = Queue::connect(&url).await.unwrap_err().to_string();
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[tokio::test]
async fn aof_is_reported() {
    let with = RedisServer::start_with(true, None).unwrap();
    let without = RedisServer::start_with(false, None).unwrap();
    let q = Queue::connect(&RedisUrl::new(with.url())).await.unwrap();
    assert_eq!(q.aof_enabled().await, Some(true));
    let q = Queue::connect(&RedisUrl::new(without.url())).await.unwrap();
    assert_eq!(q.aof_enabled().await, Some(false));
}

/// Found by the chaos suite: a worker (re)started while Redis was unreachable exited at once
/// instead of joining once Redis was back. Workers connect with `connect_waiting`; a refused
/// password still fails at once.
#[tokio::test]
async fn a_worker_started_while_redis_is_down_waits_for_it() {
    let port = testkit::free_port();
    let url = RedisUrl::new(format!("redis://127.0.0.1:{port}"));
    let waiting =
        tokio::spawn(async move { Queue::connect_waiting(&url, Duration::from_millis(200)).await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!waiting.is_finished(), "gave up while Redis was down");
    let dir = tempfile::tempdir().unwrap();
    let _redis = RedisServer::start_in(dir.path(), port, true).unwrap();
    let queue = tokio::time::timeout(Duration::from_secs(60), waiting)
        .await
        .expect("connected once Redis was up")
        .unwrap()
        .unwrap();
    assert!(queue.job_ids().await.unwrap().is_empty());

    let locked = RedisServer::start_with(true, Some("right-pw")).unwrap();
    let wrong = RedisUrl::new(format!("redis://:s3cr3t-guess@127.0.0.1:{}", locked.port()));
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        Queue::connect_waiting(&wrong, Duration::from_millis(200)),
    )
    .await
    .expect("a refused password is not waited out")
    .unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert!(!err.to_string().contains("s3cr3t-guess"), "{err}");
}

// Preemption (issue 13).
// Preemption at the queue level, against a real `redis-server`: a lapsed lease spends an
// attempt only when its holder had started the shard (`start.lua`). Shards a dead worker
// merely held in its look-ahead come back for free however often that happens, while a
// started shard whose lease lapses again and again (a shard that kills its worker) still
// ends `failed` after its attempts. The same with real worker processes:
// `worker-infer/tests/preemption.rs`.

async fn claim_all(queue: &Queue, job: &common::job::JobId, lease: Duration) -> Vec<ShardLease> {
    let mut out = Vec::new();
    while let Some(l) = queue.claim(job, Stage::Infer, "w", lease).await.unwrap() {
        out.push(l);
    }
    out
}

async fn started_ms(queue: &Queue, lease: &ShardLease) -> Option<u64> {
    let mut c = queue.conn();
    redis::cmd("HGET")
        .arg(JobKeys::new(&lease.job).shard(lease.shard))
        .arg("started_ms")
        .query_async(&mut c)
        .await
        .unwrap()
}

/// The queue-level version of issue 13: a worker leases every shard, starts one, dies; again
/// and again, more times than `max_attempts`. The shards it never started keep all their
/// attempts; the one it started each time (a poison pill) is dead-lettered after its
/// attempts, with the lapses as its error; status tells the two kinds of lapse apart.
#[tokio::test]
async fn unstarted_lapses_spend_no_attempt_and_a_started_shard_still_dead_letters() {
    const SHARDS: u64 = 10;
    const MAX_ATTEMPTS: u32 = 3;
    const ROUNDS: u32 = 6;
    const POISON: u64 = 4;
    // Long enough that no lease of a round lapses while the round is still claiming.
    let short = Duration::from_millis(500);
    let (_server, queue, s) = setup(SHARDS, 1, MAX_ATTEMPTS).await;
    let id = s.id();
    for round in 0..ROUNDS {
        // The first claim of the round reaps the previous round's leases.
        let leases = claim_all(&queue, &id, short).await;
        let poison_alive = round < MAX_ATTEMPTS;
        assert_eq!(
            leases.len() as u64,
            if poison_alive { SHARDS } else { SHARDS - 1 },
            "round {round}: every shard but a dead-lettered one is claimable again"
        );
        for l in &leases {
            if l.shard == POISON {
                assert_eq!(
                    l.attempts, round,
                    "round {round}: each started lapse spends one"
                );
                assert_eq!(queue.start(l).await.unwrap(), StartOutcome::Started);
            } else {
                assert_eq!(
                    l.attempts, 0,
                    "round {round}: shard {} lapsed unstarted and spent an attempt",
                    l.shard
                );
                assert_eq!(
                    started_ms(&queue, l).await,
                    Some(0),
                    "a claim starts unstarted"
                );
            }
        }
        tokio::time::sleep(short + Duration::from_millis(300)).await;
    }

    // A healthy worker finishes the rest: no shard lost an attempt to the lapses.
    let leases = claim_all(&queue, &id, Duration::from_secs(30)).await;
    assert_eq!(leases.len() as u64, SHARDS - 1);
    for l in &leases {
        assert_eq!(l.attempts, 0, "shard {}", l.shard);
        assert_eq!(complete(&queue, l).await, CompleteOutcome::Stored);
    }

    let st = status::job_status(&queue, &id).await.unwrap();
    assert_eq!(st.rows_inferred, SHARDS - 1, "every other row once");
    assert_eq!(st.shards.failed, 1);
    assert_eq!(st.failed_shards.len(), 1);
    let poison = &st.failed_shards[0];
    assert_eq!(
        (poison.shard, poison.stage.as_str(), poison.attempts),
        (POISON, "infer", u64::from(MAX_ATTEMPTS))
    );
    assert!(
        poison.error.contains("lease expired"),
        "the poison pill's error names the lapse: {}",
        poison.error
    );
    let unstarted = (SHARDS - 1) * u64::from(ROUNDS);
    let f = st.failures.infer;
    assert_eq!(
        (
            f.leases_expired,
            f.leases_lapsed_unstarted,
            f.attempts_failed
        ),
        (unstarted + u64::from(MAX_ATTEMPTS), unstarted, 0),
        "status counts every lapse and tells the unstarted ones apart"
    );
    let text = serde_json::to_value(&st).unwrap();
    assert_eq!(
        text.pointer("/failures/infer/leases_lapsed_unstarted"),
        Some(&json!(unstarted)),
        "`conftag status --json` shows the counter"
    );
    // The judge stage still has the other shards to do: the job is not failed yet.
    assert_eq!(st.state, JobState::Running);
}

/// `start` is fenced by the lease token like every other transition, keeps the first time
/// when repeated, and answers `Cancelled` for a cancelled job; a release clears the mark, a
/// new claim starts unstarted.
#[tokio::test]
async fn start_is_fenced_idempotent_and_cleared_by_the_next_transition() {
    let (_server, queue, s) = setup(4, 2, 3).await;
    let id = s.id();
    let long = Duration::from_secs(30);
    let l1 = queue
        .claim(&id, Stage::Infer, "w", long)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(started_ms(&queue, &l1).await, Some(0));
    assert_eq!(queue.start(&l1).await.unwrap(), StartOutcome::Started);
    let first = started_ms(&queue, &l1).await.unwrap();
    assert!(first > 0);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(queue.start(&l1).await.unwrap(), StartOutcome::Started);
    assert_eq!(
        started_ms(&queue, &l1).await,
        Some(first),
        "the first start is kept"
    );

    // A release (drain) spends nothing and clears the mark; the old token is refused.
    assert!(queue.release(&l1).await.unwrap());
    assert_eq!(started_ms(&queue, &l1).await, None);
    assert_eq!(queue.start(&l1).await.unwrap(), StartOutcome::Stale);
    let l2 = queue
        .claim(&id, Stage::Infer, "w", long)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(l2.attempts, 0);
    assert_eq!(started_ms(&queue, &l2).await, Some(0));

    // A completion clears it too.
    assert_eq!(queue.start(&l2).await.unwrap(), StartOutcome::Started);
    assert_eq!(complete(&queue, &l2).await, CompleteOutcome::Stored);
    assert_eq!(started_ms(&queue, &l2).await, None);

    let l3 = queue
        .claim(&id, Stage::Infer, "w", long)
        .await
        .unwrap()
        .unwrap();
    assert!(queue.cancel(&id).await.unwrap());
    assert_eq!(queue.start(&l3).await.unwrap(), StartOutcome::Cancelled);
}

/// A lease taken by a `claim.lua` from before start marks (an older worker during a rolling
/// upgrade) has no `started_ms`; it keeps the old rule: its lapse spends an attempt. A failed
/// attempt spends one whether or not the shard was marked.
#[tokio::test]
async fn a_lease_without_a_start_mark_field_keeps_the_old_rule() {
    let (_server, queue, s) = setup(2, 2, 5).await;
    let id = s.id();
    let old = queue
        .claim(&id, Stage::Infer, "old-worker", Duration::from_millis(100))
        .await
        .unwrap()
        .unwrap();
    let mut c = queue.conn();
    let _: () = redis::cmd("HDEL")
        .arg(JobKeys::new(&id).shard(old.shard))
        .arg("started_ms")
        .query_async(&mut c)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    let again = queue
        .claim(&id, Stage::Infer, "new-worker", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.shard, old.shard);
    assert_eq!(again.attempts, 1);
    // Unstarted, a reported failure still spends an attempt.
    assert_eq!(
        queue
            .fail(&again, "boom", Duration::ZERO, false)
            .await
            .unwrap(),
        common::queue::FailOutcome::Retrying
    );
    let third = queue
        .claim(&id, Stage::Infer, "new-worker", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((third.shard, third.attempts), (old.shard, 2));
    let st = status::job_status(&queue, &id).await.unwrap();
    assert_eq!(
        (
            st.failures.infer.leases_expired,
            st.failures.infer.leases_lapsed_unstarted,
            st.failures.infer.attempts_failed
        ),
        (1, 0, 1)
    );
}
