//! Circuit breaker state machine (DESIGN.md "Circuit breaker").
//!
//! Closed → Open after `failure_threshold` consecutive failures; Open → Half-open once
//! `reset_timeout` has passed; Half-open lets `half_open_max` probes through at a time; a probe
//! success closes it, a probe failure reopens it with a fresh timer. A probe whose outcome never
//! comes back (its worker died) is presumed lost after another `reset_timeout`, so the breaker
//! cannot wedge half-open. Half-open periods are numbered, and a probe is known by its period's
//! number: a call that ends with no verdict gives back a probe slot only if it is a probe of the
//! period now running (not a call let through while closed, nor a probe already presumed lost).
//! The state is a plain value that shared backends can store and reload.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerPolicy {
    pub failure_threshold: u32,
    pub reset_timeout: f64,
    pub half_open_max: u32,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy {
            failure_threshold: 5,
            reset_timeout: 30.0,
            half_open_max: 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct BadPolicy(pub &'static str);

impl fmt::Display for BadPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for BadPolicy {}

impl BreakerPolicy {
    pub fn new(
        failure_threshold: u32,
        reset_timeout: f64,
        half_open_max: u32,
    ) -> Result<Self, BadPolicy> {
        if failure_threshold == 0 {
            return Err(BadPolicy("failure_threshold must be at least 1"));
        }
        if !(reset_timeout.is_finite() && reset_timeout >= 0.0) {
            return Err(BadPolicy(
                "reset_timeout must be a finite number of seconds >= 0",
            ));
        }
        if half_open_max == 0 {
            return Err(BadPolicy("half_open_max must be at least 1"));
        }
        Ok(BreakerPolicy {
            failure_threshold,
            reset_timeout,
            half_open_max,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BreakerState {
    Closed {
        failures: u32,
    },
    Open {
        opened_at: f64,
    },
    /// `probes` in flight, the latest let through at `since`.
    HalfOpen {
        probes: u32,
        since: f64,
    },
}

impl BreakerState {
    pub fn name(&self) -> &'static str {
        match self {
            BreakerState::Closed { .. } => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen { .. } => "half_open",
        }
    }
}

/// The answer to `allow`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Permit {
    /// Go ahead. `probe`: the number of the half-open period the call is a probe of; None when
    /// the breaker is closed. Pass it to `release` if the call ends with no verdict.
    Allowed { probe: Option<u64> },
    /// Not now; ask again at `retry_at` (when the breaker half-opens or a probe slot frees).
    Rejected { retry_at: f64 },
}

#[derive(Debug, Clone, PartialEq)]
pub struct CircuitBreaker {
    policy: BreakerPolicy,
    state: BreakerState,
    /// Half-open periods begun so far; the current one's number is its probes' identity.
    periods: u64,
}

impl CircuitBreaker {
    pub fn new(policy: BreakerPolicy) -> Self {
        CircuitBreaker {
            policy,
            state: BreakerState::Closed { failures: 0 },
            periods: 0,
        }
    }

    /// A breaker resumed from a stored state and count of half-open periods.
    pub fn with_state(policy: BreakerPolicy, state: BreakerState, periods: u64) -> Self {
        CircuitBreaker {
            policy,
            state,
            periods,
        }
    }

    pub fn policy(&self) -> BreakerPolicy {
        self.policy
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// How many half-open periods have begun (the current one's number, when half-open).
    pub fn periods(&self) -> u64 {
        self.periods
    }

    /// Starts a half-open period with one probe, let through at `now`.
    fn begin_period(&mut self, now: f64) -> Permit {
        self.periods = self.periods.wrapping_add(1); // only compared for equality
        self.state = BreakerState::HalfOpen {
            probes: 1,
            since: now,
        };
        Permit::Allowed {
            probe: Some(self.periods),
        }
    }

    /// May a call go through at `now`? Counts a probe when half-open.
    pub fn allow(&mut self, now: f64) -> Permit {
        let reset = self.policy.reset_timeout;
        match self.state {
            BreakerState::Closed { .. } => Permit::Allowed { probe: None },
            BreakerState::Open { opened_at } if now >= opened_at + reset => self.begin_period(now),
            BreakerState::Open { opened_at } => Permit::Rejected {
                retry_at: opened_at + reset,
            },
            BreakerState::HalfOpen { probes, .. } if probes < self.policy.half_open_max => {
                self.state = BreakerState::HalfOpen {
                    probes: probes + 1,
                    since: now,
                };
                Permit::Allowed {
                    probe: Some(self.periods),
                }
            }
            // The probes in flight are presumed lost; start over with one, in a new period
            // (so a lost probe that comes back without a verdict frees no slot of this one).
            BreakerState::HalfOpen { since, .. } if now >= since + reset => self.begin_period(now),
            BreakerState::HalfOpen { since, .. } => Permit::Rejected {
                retry_at: since + reset,
            },
        }
    }

    /// A call succeeded. Closes a half-open breaker; resets the failure count of a closed one.
    /// A late success while open (the call began before it opened) changes nothing.
    pub fn record_success(&mut self, _now: f64) {
        match self.state {
            BreakerState::Closed { .. } | BreakerState::HalfOpen { .. } => {
                self.state = BreakerState::Closed { failures: 0 }
            }
            BreakerState::Open { .. } => {}
        }
    }

    /// A call failed. Opens at the threshold, or at once when half-open (fresh timer).
    /// A late failure while open changes nothing: the timer is not pushed back.
    pub fn record_failure(&mut self, now: f64) {
        match self.state {
            BreakerState::Closed { failures }
                if failures.saturating_add(1) >= self.policy.failure_threshold =>
            {
                self.state = BreakerState::Open { opened_at: now }
            }
            BreakerState::Closed { failures } => {
                self.state = BreakerState::Closed {
                    failures: failures.saturating_add(1),
                }
            }
            BreakerState::HalfOpen { .. } => self.state = BreakerState::Open { opened_at: now },
            BreakerState::Open { .. } => {}
        }
    }

    /// A permitted call ended with no verdict (cancelled). `probe` is what `allow` said of
    /// it: a probe of the half-open period still running gives its slot back; anything else
    /// (a call let through while closed, a probe of an earlier period) changes nothing.
    pub fn release(&mut self, _now: f64, probe: Option<u64>) {
        if let BreakerState::HalfOpen { probes, since } = self.state {
            if probe == Some(self.periods) {
                self.state = BreakerState::HalfOpen {
                    probes: probes.saturating_sub(1),
                    since,
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(threshold: u32, reset: f64, half_open_max: u32) -> CircuitBreaker {
        CircuitBreaker::new(BreakerPolicy::new(threshold, reset, half_open_max).unwrap())
    }

    const CLOSED: Permit = Permit::Allowed { probe: None };

    fn probe(period: u64) -> Permit {
        Permit::Allowed {
            probe: Some(period),
        }
    }

    #[test]
    fn opens_at_threshold_of_consecutive_failures() {
        let mut b = breaker(3, 30.0, 1);
        b.record_failure(0.0);
        b.record_failure(0.0);
        b.record_success(0.0);
        b.record_failure(1.0);
        b.record_failure(2.0);
        assert_eq!(b.allow(2.0), CLOSED);
        b.record_failure(3.0);
        assert_eq!(b.state(), BreakerState::Open { opened_at: 3.0 });
        assert_eq!(b.allow(10.0), Permit::Rejected { retry_at: 33.0 });
    }

    #[test]
    fn exactly_half_open_max_probes() {
        let mut b = breaker(1, 30.0, 2);
        b.record_failure(0.0);
        assert_eq!(b.allow(30.0), probe(1));
        assert_eq!(b.allow(30.0), probe(1));
        assert_eq!(b.allow(31.0), Permit::Rejected { retry_at: 60.0 });
        assert_eq!(b.allow(32.0), Permit::Rejected { retry_at: 60.0 });
        b.record_success(33.0);
        assert_eq!(b.state(), BreakerState::Closed { failures: 0 });
    }

    #[test]
    fn probe_failure_reopens_with_fresh_timer() {
        let mut b = breaker(1, 30.0, 1);
        b.record_failure(0.0);
        assert_eq!(b.allow(30.0), probe(1));
        b.record_failure(35.0);
        assert_eq!(b.allow(64.0), Permit::Rejected { retry_at: 65.0 });
        assert_eq!(b.allow(65.0), probe(2));
    }

    #[test]
    fn released_probe_frees_its_slot_and_lost_probes_expire() {
        let mut b = breaker(1, 10.0, 1);
        b.record_failure(0.0);
        assert_eq!(b.allow(10.0), probe(1));
        b.release(11.0, Some(1));
        assert_eq!(b.allow(11.0), probe(1));
        assert_eq!(b.allow(12.0), Permit::Rejected { retry_at: 21.0 });
        assert_eq!(b.allow(21.0), probe(2)); // the probe of 11.0 is presumed lost
    }

    #[test]
    fn only_a_probe_of_the_running_period_gives_its_slot_back() {
        let mut b = breaker(1, 10.0, 1);
        assert_eq!(b.allow(0.0), CLOSED); // a slow call, let through while closed
        b.record_failure(1.0);
        assert_eq!(b.allow(11.0), probe(1));
        b.release(12.0, None); // the slow call is cancelled: it was no probe
        assert_eq!(b.allow(12.0), Permit::Rejected { retry_at: 21.0 });
        assert_eq!(b.allow(21.0), probe(2)); // probe 1 presumed lost
        b.release(22.0, Some(1)); // ... and cancelled after all: period 2's slot stays taken
        assert_eq!(b.allow(22.0), Permit::Rejected { retry_at: 31.0 });
        b.release(23.0, Some(2));
        assert_eq!(b.allow(23.0), probe(2));
    }

    #[test]
    fn state_round_trips() {
        let mut b = breaker(2, 5.0, 1);
        b.record_failure(1.0);
        b.record_failure(2.0);
        assert_eq!(b.allow(7.0), probe(1));
        let resumed = CircuitBreaker::with_state(b.policy(), b.state(), b.periods());
        assert_eq!(resumed, b);
        assert_eq!(b.state().name(), "half_open");
    }

    #[test]
    fn bad_policies() {
        assert!(BreakerPolicy::new(0, 1.0, 1).is_err());
        assert!(BreakerPolicy::new(1, -1.0, 1).is_err());
        assert!(BreakerPolicy::new(1, f64::INFINITY, 1).is_err());
        assert!(BreakerPolicy::new(1, 1.0, 0).is_err());
    }
}
