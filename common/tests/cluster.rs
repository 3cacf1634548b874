//! The queue against a 3-master Redis Cluster on loopback: hash tags keep each job's keys,
//! and so every script of a job, on one slot; jobs spread over the masters.

use std::time::Duration;

use common::export::export_jobs;
use common::job::{rows_digest, JobSpec, JudgeSettings, PromptMode};
use common::queue::{
    CompleteOutcome, Counter, CounterDeltas, Queue, RequeueRequest, RequeueSelection, Stage,
};
use common::records::{JudgeResponse, Provenance, TaggedRecord};
use common::redis_conn::RedisUrl;
use common::status::{self, JobState};
use testkit::{synthetic_rows, RedisCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_end_to_end_on_a_cluster() {
    let cluster = RedisCluster::start(3).expect("redis cluster");
    let queue = Queue::connect(&RedisUrl::new(cluster.url())).await.unwrap();
    let r = synthetic_rows(10);
    let mut ids = Vec::new();
    for m in 0..6 {
        let spec = JobSpec {
            model: format!("model-{m}"),
            dataset: "boolq".into(),
            split: "test".into(),
            source: "cluster".into(),
            rows: 10,
            max_tokens: 4,
            prompt_mode: PromptMode::Raw,
            rows_digest: rows_digest(&r),
            spec_digest: None,
            dataset_spec: None,
        };
        queue
            .submit(&spec, &JudgeSettings::default(), &r, 4, 3)
            .await
            .unwrap();
        ids.push(spec.id());
    }
    assert_eq!(queue.job_ids().await.unwrap().len(), 6);
    let lease = Duration::from_secs(30);
    for id in &ids {
        // A lapsed lease is reclaimed on the cluster too.
        let dead = queue
            .claim(id, Stage::Infer, "dead", Duration::from_millis(50))
            .await
            .unwrap()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(80)).await;
        for stage in [Stage::Infer, Stage::Judge] {
            while let Some(l) = queue.claim(id, stage, "w", lease).await.unwrap() {
                let mut out = Vec::new();
                for row in queue.input_rows(id, l.start, l.end).await.unwrap() {
                    let p = testkit::prediction(&row, "yes");
                    let json = match stage {
                        Stage::Infer => serde_json::to_string(&p).unwrap(),
                        Stage::Judge => serde_json::to_string(&TaggedRecord::tag(
                            common::dataset_spec::builtin("boolq").unwrap(),
                            &p,
                            JudgeResponse {
                                correct_answer: row.correct_answer.clone(),
                                model_answer: "yes".into(),
                                reasoning: "r".into(),
                                correct: if row.correct_answer == true {
                                    "yes"
                                } else {
                                    "no"
                                }
                                .into(),
                            },
                            Provenance {
                                judged_by: "test".into(),
                                judge_model: "t".into(),
                                judge_prompt_sha: String::new(),
                            },
                        ))
                        .unwrap(),
                    };
                    out.push((row.index, json));
                }
                let counters: CounterDeltas = [(Counter::rows(stage), l.rows() as i64)].into();
                assert_eq!(
                    queue.complete(&l, &counters, &out).await.unwrap(),
                    CompleteOutcome::Stored
                );
            }
        }
        let counters: CounterDeltas = [(Counter::InferRows, 4)].into();
        assert_eq!(
            queue.complete(&dead, &counters, &[]).await.unwrap(),
            CompleteOutcome::Stale
        );
        let st = status::job_status(&queue, id).await.unwrap();
        assert_eq!(
            (st.state, st.rows_inferred, st.rows_judged),
            (JobState::Done, 10, 10)
        );
    }
    // Re-judge one job, then export all six.
    let out = queue
        .requeue(
            &ids[0],
            &RequeueRequest {
                selection: RequeueSelection::All,
                target: Some(Stage::Judge),
                force: true,
                judge: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(out.requeued, 3);
    assert_eq!(
        status::job_status(&queue, &ids[0])
            .await
            .unwrap()
            .rows_judged,
        0
    );
    let dir = tempfile::tempdir().unwrap();
    let exported = export_jobs(&queue, &ids[1..], dir.path(), false)
        .await
        .unwrap();
    assert_eq!(exported.len(), 5);
    assert!(exported.iter().all(|e| e.tagged_rows == 10));
}
