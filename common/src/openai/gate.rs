//! The gate every request of one [`Client`](super::Client) passes: a pause set by 429s and by
//! spent token budgets, and a request budget read from `x-ratelimit-remaining-requests` /
//! `x-ratelimit-reset-requests`. Each request reserves one unit of the budget before it is
//! sent, so with many requests in flight the process stops at the server's limit instead of
//! learning about it from a burst of 429s.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

#[derive(Debug, Default)]
pub struct RateGate {
    state: Mutex<GateState>,
}

#[derive(Debug, Default)]
struct GateState {
    until: Option<Instant>,
    /// Requests still allowed before the instant, minus those sent since the server said so.
    budget: Option<(u64, Instant)>,
    in_flight: u64,
}

impl RateGate {
    /// Wait until a request may be sent, and count it in flight (pair with [`done`](Self::done)).
    pub async fn acquire(&self) {
        loop {
            let wait = {
                let mut g = self.state.lock().await;
                let now = Instant::now();
                match g.until.filter(|t| *t > now) {
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
                }
            };
            match wait {
                Some(t) => tokio::time::sleep_until(t).await,
                None => {
                    self.state.lock().await.in_flight += 1;
                    return;
                }
            }
        }
    }

    pub async fn done(&self) {
        let mut g = self.state.lock().await;
        g.in_flight = g.in_flight.saturating_sub(1);
    }

    /// The server's word on the request budget, seen on a response to one of our requests.
    pub async fn observe(&self, remaining: u64, reset_in: Duration) {
        let mut g = self.state.lock().await;
        let others = g.in_flight.saturating_sub(1);
        g.budget = Some((remaining.saturating_sub(others), Instant::now() + reset_in));
    }

    /// Hold every request for at least `d` from now.
    pub async fn pause_for(&self, d: Duration) {
        let t = Instant::now() + d;
        let mut g = self.state.lock().await;
        if g.until.is_none_or(|cur| cur < t) {
            g.until = Some(t);
        }
    }
}
