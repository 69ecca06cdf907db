//! Retry delays (DESIGN.md "Outcomes"): fixed or exponential with jitter and a cap, and
//! `Retry-After` as a floor with a cap of its own. The random draw is a parameter (`unit` in
//! [0, 1)), so callers inject their own source and tests are exact.

use std::fmt;
use std::time::{Duration, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Fixed,
    Exponential,
}

impl std::str::FromStr for Strategy {
    type Err = BadBackoff;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fixed" => Ok(Strategy::Fixed),
            "exponential" => Ok(Strategy::Exponential),
            _ => Err(BadBackoff("strategy must be \"fixed\" or \"exponential\"")),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct BadBackoff(pub &'static str);

impl fmt::Display for BadBackoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for BadBackoff {}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub strategy: Strategy,
    pub base_delay: f64,
    pub max_delay: f64,
    pub jitter: f64,
}

impl Backoff {
    pub fn new(
        strategy: Strategy,
        base_delay: f64,
        max_delay: f64,
        jitter: f64,
    ) -> Result<Self, BadBackoff> {
        if !(base_delay.is_finite() && base_delay >= 0.0) {
            return Err(BadBackoff(
                "base_delay must be a finite number of seconds >= 0",
            ));
        }
        if !(max_delay.is_finite() && max_delay >= base_delay) {
            return Err(BadBackoff("max_delay must be finite and >= base_delay"));
        }
        if !(0.0..=1.0).contains(&jitter) {
            return Err(BadBackoff("jitter must be between 0 and 1"));
        }
        Ok(Backoff {
            strategy,
            base_delay,
            max_delay,
            jitter,
        })
    }

    /// Seconds to wait after failed attempt number `attempt` (1-based).
    /// Exponential: `base · 2^(attempt−1) · U(1−jitter, 1+jitter)`, capped at `max_delay`.
    pub fn delay(&self, attempt: u32, unit: f64) -> f64 {
        let raw = match self.strategy {
            Strategy::Fixed => self.base_delay,
            // 2^1023 is the largest finite power; past it the cap applies anyway.
            Strategy::Exponential => {
                self.base_delay * 2f64.powi(attempt.saturating_sub(1).min(1023) as i32)
            }
        };
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            0.5
        };
        let factor = 1.0 - self.jitter + 2.0 * self.jitter * unit;
        // Clamp before multiplying so an overflowed power times a zero factor is 0, not NaN.
        (raw.min(f64::MAX) * factor).min(self.max_delay)
    }

    /// The delay before the next attempt when the response carried `Retry-After`: the backoff
    /// delay, raised to the server's wish (itself capped at `retry_after_cap`).
    pub fn retry_delay(
        &self,
        attempt: u32,
        unit: f64,
        retry_after: Option<f64>,
        retry_after_cap: f64,
    ) -> f64 {
        let delay = self.delay(attempt, unit);
        match retry_after {
            // max then min, not clamp: a NaN or negative cap (a caller's mistake) must not panic.
            Some(wish) if wish.is_finite() => delay.max(wish.min(retry_after_cap).max(0.0)),
            _ => delay,
        }
    }
}

/// Seconds from `now` (Unix seconds) that a `Retry-After` value asks for: delta-seconds or an
/// HTTP-date. `None` for anything else. A date in the past asks for 0.
pub fn parse_retry_after(value: &str, now: f64) -> Option<f64> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // More digits than an f64 holds read as infinity: "as late as can be", which the
        // caller's cap then bounds, not "no wish".
        return value
            .parse::<f64>()
            .ok()
            .map(|seconds| seconds.min(f64::MAX));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let at = at
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64();
    Some((at - now).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_without_jitter_doubles_then_caps() {
        let b = Backoff::new(Strategy::Exponential, 2.0, 60.0, 0.0).unwrap();
        let delays: Vec<f64> = (1..=7).map(|a| b.delay(a, 0.3)).collect();
        assert_eq!(delays, vec![2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]);
        assert_eq!(b.delay(u32::MAX, 0.5), 60.0);
    }

    #[test]
    fn jitter_spans_the_band() {
        let b = Backoff::new(Strategy::Exponential, 2.0, 60.0, 0.2).unwrap();
        assert!((b.delay(2, 0.0) - 3.2).abs() < 1e-12);
        assert!((b.delay(2, 0.5) - 4.0).abs() < 1e-12);
        assert!((b.delay(2, 1.0) - 4.8).abs() < 1e-12);
        let fixed = Backoff::new(Strategy::Fixed, 5.0, 60.0, 0.0).unwrap();
        assert_eq!(fixed.delay(9, 0.9), 5.0);
    }

    #[test]
    fn retry_after_is_a_capped_floor() {
        let b = Backoff::new(Strategy::Exponential, 2.0, 60.0, 0.0).unwrap();
        assert_eq!(b.retry_delay(1, 0.5, Some(30.0), 3600.0), 30.0);
        assert_eq!(b.retry_delay(1, 0.5, Some(1.0), 3600.0), 2.0);
        assert_eq!(b.retry_delay(1, 0.5, Some(1e9), 3600.0), 3600.0);
        assert_eq!(b.retry_delay(1, 0.5, None, 3600.0), 2.0);
    }

    #[test]
    fn parses_seconds_and_http_dates() {
        assert_eq!(parse_retry_after("120", 0.0), Some(120.0));
        assert_eq!(parse_retry_after(" 7 ", 0.0), Some(7.0));
        // 1994-11-06T08:49:37Z = 784111777
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784_111_700.0),
            Some(77.0)
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 1e9),
            Some(0.0)
        );
        assert_eq!(parse_retry_after("-5", 0.0), None);
        assert_eq!(parse_retry_after("soon", 0.0), None);
        assert_eq!(parse_retry_after("", 0.0), None);
        // Too many digits for an f64: as late as can be, which the cap bounds.
        assert_eq!(parse_retry_after(&"9".repeat(400), 0.0), Some(f64::MAX));
        let b = Backoff::new(Strategy::Fixed, 2.0, 60.0, 0.0).unwrap();
        assert_eq!(
            b.retry_delay(1, 0.5, parse_retry_after(&"9".repeat(400), 0.0), 3600.0),
            3600.0
        );
    }

    #[test]
    fn bad_configuration() {
        assert!(Backoff::new(Strategy::Fixed, -1.0, 10.0, 0.0).is_err());
        assert!(Backoff::new(Strategy::Fixed, 10.0, 5.0, 0.0).is_err());
        assert!(Backoff::new(Strategy::Fixed, 1.0, 5.0, 1.5).is_err());
        assert!("linear".parse::<Strategy>().is_err());
    }
}
