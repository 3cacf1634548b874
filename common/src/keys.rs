//! The Redis key layout, in one place so that no call site formats a key by hand.
//!
//! Every key of a job carries the job id as a hash tag (`conftag:v1:{<job>}:…`), so the
//! scripts of one job touch one Redis Cluster slot. The scripts receive only the job hash
//! (`KEYS[1]`) and derive the other keys of the job from it (see `lua/lib.lua`):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `…:job` | hash | spec, judge settings, state, totals and counters |
//! | `…:rows` | hash | row index → input row JSON (staged with a TTL before submit) |
//! | `…:pred` | hash | row index → prediction record JSON |
//! | `…:tagged` | hash | row index → tagged record JSON |
//! | `…:shard:<n>` | hash | a shard's range, stage, state, attempts, lease token and whether its holder started it (`started_ms`), error, stats |
//! | `…:q:<stage>` | zset | queued shard ids, scored by the time they become ready (ms) |
//! | `…:leased:<stage>` | zset | leased shard ids, scored by lease expiry (ms) |
//! | `…:failed` | set | shard ids that used up their attempts |
//! | `…:events` | zset | recent completions (last 10 min), for rates |
//! | `…:jcache` | hash | row index → a verdict already paid for in a failed attempt of its shard (judge) |
//! | `…:batchpaid` | hash | batch id → its price (micro-USD), once added to the job's spend |
//! | `…:batch:<n>` | string | OpenAI Batch API batch id of shard n (judge `batch` mode), so a restarted worker resumes it instead of paying twice |
//!
//! Global keys live outside any job: the set of job ids, the worker registry, and the
//! wake-up lists idle workers block on (`conftag:v1:wake:infer:<model>`,
//! `conftag:v1:wake:judge`): a token pushed there when shards become ready wakes one waiting
//! worker at once. They are hints only (capped, never the source of truth): a lost token costs
//! at most one idle poll.

use crate::job::JobId;

/// Version of the key schema; bump it when the layout changes incompatibly.
pub const SCHEMA: &str = "v1";

/// The set of all job ids.
pub fn jobs_index() -> String {
    format!("conftag:{SCHEMA}:jobs")
}

/// Hash of worker id → worker heartbeat JSON.
pub fn workers() -> String {
    format!("conftag:{SCHEMA}:workers")
}

/// The wake-up list of idle workers of `stage`; infer workers wait per model (`topic`), so a
/// submit wakes workers that can take its shards.
pub fn wake(stage: &str, topic: Option<&str>) -> String {
    match topic {
        Some(t) => format!("conftag:{SCHEMA}:wake:{stage}:{t}"),
        None => format!("conftag:{SCHEMA}:wake:{stage}"),
    }
}

/// Keys of one job.
#[derive(Debug, Clone)]
pub struct JobKeys {
    prefix: String,
}

impl JobKeys {
    pub fn new(job: &JobId) -> Self {
        Self {
            prefix: format!("conftag:{SCHEMA}:{{{}}}", job.as_str()),
        }
    }
    pub fn job(&self) -> String {
        format!("{}:job", self.prefix)
    }
    pub fn rows(&self) -> String {
        format!("{}:rows", self.prefix)
    }
    pub fn predictions(&self) -> String {
        format!("{}:pred", self.prefix)
    }
    pub fn tagged(&self) -> String {
        format!("{}:tagged", self.prefix)
    }
    pub fn shard(&self, id: u64) -> String {
        format!("{}:shard:{id}", self.prefix)
    }
    pub fn queue(&self, stage: &str) -> String {
        format!("{}:q:{stage}", self.prefix)
    }
    pub fn leased(&self, stage: &str) -> String {
        format!("{}:leased:{stage}", self.prefix)
    }
    pub fn failed(&self) -> String {
        format!("{}:failed", self.prefix)
    }
    pub fn events(&self) -> String {
        format!("{}:events", self.prefix)
    }
    pub fn judge_cache(&self) -> String {
        format!("{}:jcache", self.prefix)
    }
    pub fn batch(&self, shard: u64) -> String {
        format!("{}:batch:{shard}", self.prefix)
    }
    pub fn batch_paid(&self) -> String {
        format!("{}:batchpaid", self.prefix)
    }
    /// Every key of the job that is not per shard (for deletion and scans).
    pub fn all_fixed(&self) -> Vec<String> {
        vec![
            self.job(),
            self.rows(),
            self.predictions(),
            self.tagged(),
            self.queue("infer"),
            self.queue("judge"),
            self.leased("infer"),
            self.leased("judge"),
            self.failed(),
            self.events(),
            self.judge_cache(),
            self.batch_paid(),
        ]
    }
}
