//! The gate every request of one [`Client`](super::Client) passes: a pause set by 429s and by
//! spent token budgets, and a request budget read from `x-ratelimit-remaining-requests` /
//! `x-ratelimit-reset-requests`. Each request reserves one unit of the budget before it is
//! sent, so with many requests in flight the process stops at the server's limit instead of
//! learning about it from a burst of 429s.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Default)]
pub(crate) struct RateGate {
    // A plain mutex: no lock is held across an `.await`.
    state: Mutex<GateState>,
}

#[derive(Debug, Default)]
struct GateState {
    until: Option<Instant>,
    /// Requests still allowed before the instant, minus those sent since the server said so.
    budget: Option<(u64, Instant)>,
    in_flight: u64,
}

/// One request counted in flight; dropping it (the answer came, or the caller's future was
/// dropped mid-request: a cancelled shard) counts it out again.
#[must_use]
pub(crate) struct InFlight<'a>(&'a RateGate);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut g = self.0.lock();
        g.in_flight = g.in_flight.saturating_sub(1);
    }
}

impl RateGate {
    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Wait until a request may be sent; it counts in flight while the guard lives.
    pub(crate) async fn acquire(&self) -> InFlight<'_> {
        loop {
            let wait = {
                let mut g = self.lock();
                let now = Instant::now();
                let wait = match g.until.filter(|t| *t > now) {
                    Some(t) => Some(t),
                    None => match g.budget {
                        Some((0, reset)) if reset > now => Some(reset),
                        Some((left, reset)) if reset > now => {
                            g.budget = Some((left - 1, reset));
                            None
                        }
                        // The window reset: unknown until the next response says.
                        Some(_) => {
                            g.budget = None;
                            None
                        }
                        None => None,
                    },
                };
                if wait.is_none() {
                    g.in_flight += 1;
                }
                wait
            };
            match wait {
                Some(t) => tokio::time::sleep_until(t).await,
                None => return InFlight(self),
            }
        }
    }

    /// The server's word on the request budget, seen on a response to one of our requests.
    pub(crate) fn observe(&self, remaining: u64, reset_in: Duration) {
        let mut g = self.lock();
        let others = g.in_flight.saturating_sub(1);
        g.budget = Some((remaining.saturating_sub(others), Instant::now() + reset_in));
    }

    /// Hold every request for at least `d` from now.
    pub(crate) fn pause_for(&self, d: Duration) {
        let t = Instant::now() + d;
        let mut g = self.lock();
        if g.until.is_none_or(|cur| cur < t) {
            g.until = Some(t);
        }
    }

    #[cfg(test)]
    fn in_flight(&self) -> u64 {
        self.lock().in_flight
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request whose caller is dropped mid-flight (a cancelled shard) must not stay counted:
    /// the count shrinks every later request budget the server announces.
    #[tokio::test]
    async fn a_dropped_request_is_counted_out() {
        let gate = RateGate::default();
        let held = gate.acquire().await;
        let cancelled = async {
            let _in = gate.acquire().await;
            std::future::pending::<()>().await;
        };
        tokio::select! {
            _ = cancelled => unreachable!(),
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
        assert_eq!(gate.in_flight(), 1);
        drop(held);
        assert_eq!(gate.in_flight(), 0);
        gate.observe(5, Duration::from_secs(60));
        assert_eq!(gate.lock().budget.map(|b| b.0), Some(5));
    }
}
