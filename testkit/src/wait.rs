//! Waiting in tests: poll a condition until it holds or a deadline passes, then fail with
//! what was awaited (a hung test says what it hung on).

use std::time::{Duration, Instant};

use common::job::JobId;
use common::queue::Queue;
use common::status::{self, JobStatus};

/// How often the waits poll.
const POLL: Duration = Duration::from_millis(50);

/// Poll `conftag status` of `job` until `check` accepts it; returns that status. Panics
/// naming `what` (with the last status) after `within`.
pub async fn job_status(
    queue: &Queue,
    job: &JobId,
    what: &str,
    within: Duration,
    check: impl Fn(&JobStatus) -> bool,
) -> JobStatus {
    let start = Instant::now();
    loop {
        let st = status::job_status(queue, job)
            .await
            .expect("read the job's status");
        if check(&st) {
            return st;
        }
        assert!(
            start.elapsed() < within,
            "timed out waiting for {what}; last status: {st:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}
