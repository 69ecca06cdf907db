//! Token buckets: per-endpoint `RateLimit(max, per)` and per-webhook `Throttle(max, per)`.
//!
//! A bucket holds up to `capacity` tokens and refills at `capacity / per` tokens a second. It
//! starts full. Time is a parameter (`now`, seconds on any monotonic scale), so the same
//! arithmetic can be replayed in a Lua script or SQL on shared backends.

use rustc_hash::FxHashMap;
use std::fmt;

/// Slack, in seconds of refill: a deficit that would be refilled within a microsecond counts
/// as paid. Unix timestamps as f64 only resolve ~0.2 µs, so waiting exactly the advertised time
/// must not fall short by a rounding error.
const SLACK_SECONDS: f64 = 1e-6;
/// ...but never more than this many tokens: a fast bucket (a million a second) would otherwise
/// give whole tokens away. The slack taken is owed (tokens go that far below zero) and repaid by
/// the next refill, so it is never given twice.
const MAX_SLACK_TOKENS: f64 = 1e-3;

#[derive(Debug, Clone, PartialEq)]
pub enum BucketError {
    /// `max` must be a positive whole number and `per` a positive finite number of seconds.
    BadLimit { max: f64, per: f64 },
    /// More tokens asked for at once than the bucket can ever hold.
    TooMany { asked: f64, capacity: f64 },
}

impl fmt::Display for BucketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BucketError::BadLimit { max, per } => write!(
                f,
                "a rate limit needs max > 0 and per > 0 seconds (got max={max}, per={per})"
            ),
            BucketError::TooMany { asked, capacity } => {
                write!(
                    f,
                    "asked for {asked} tokens from a bucket that holds {capacity}"
                )
            }
        }
    }
}

impl std::error::Error for BucketError {}

/// The answer to `try_acquire`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Acquire {
    Allowed,
    /// Seconds until enough tokens are due.
    Wait(f64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct TokenBucket {
    capacity: f64,
    per: f64,
    tokens: f64,
    /// When `tokens` was last brought up to date; `None` until first use.
    updated_at: Option<f64>,
}

impl TokenBucket {
    pub fn new(max: f64, per: f64) -> Result<Self, BucketError> {
        if !(max.is_finite() && per.is_finite() && max > 0.0 && per > 0.0) {
            return Err(BucketError::BadLimit { max, per });
        }
        Ok(TokenBucket {
            capacity: max,
            per,
            tokens: max,
            updated_at: None,
        })
    }

    /// A bucket restored from exported state (`tokens`, `updated_at`).
    pub fn with_state(
        max: f64,
        per: f64,
        tokens: f64,
        updated_at: Option<f64>,
    ) -> Result<Self, BucketError> {
        let mut bucket = TokenBucket::new(max, per)?;
        bucket.tokens = tokens.clamp(-MAX_SLACK_TOKENS, max);
        bucket.updated_at = updated_at;
        Ok(bucket)
    }

    pub fn capacity(&self) -> f64 {
        self.capacity
    }

    pub fn per(&self) -> f64 {
        self.per
    }

    /// Tokens refilled per second.
    pub fn rate(&self) -> f64 {
        self.capacity / self.per
    }

    /// The exported state: tokens left and when they were counted.
    pub fn state(&self) -> (f64, Option<f64>) {
        (self.tokens, self.updated_at)
    }

    /// Tokens available at `now` (without taking any).
    pub fn available(&self, now: f64) -> f64 {
        match self.updated_at {
            Some(last) if now > last => {
                (self.tokens + (now - last) * self.rate()).min(self.capacity)
            }
            _ => self.tokens,
        }
    }

    /// How many whole tokens `try_acquire` would grant at `now` (without taking any).
    pub fn allowance(&self, now: f64) -> u64 {
        (self.available(now) + self.slack()).floor().max(0.0) as u64
    }

    fn slack(&self) -> f64 {
        (self.rate() * SLACK_SECONDS).min(MAX_SLACK_TOKENS)
    }

    /// Takes `n` tokens if they are there; otherwise says how long until they are.
    /// A clock that steps backwards refills nothing and never moves `updated_at` back.
    pub fn try_acquire(&mut self, now: f64, n: f64) -> Result<Acquire, BucketError> {
        if !(n > 0.0 && n <= self.capacity) {
            return Err(BucketError::TooMany {
                asked: n,
                capacity: self.capacity,
            });
        }
        self.tokens = self.available(now);
        let counted_at = self.updated_at.map_or(now, |last| last.max(now));
        self.updated_at = Some(counted_at);
        if self.tokens + self.slack() >= n {
            self.tokens -= n; // below zero by at most the slack: owed to the next refill
            Ok(Acquire::Allowed)
        } else {
            // Refill runs from `counted_at`, which is later than `now` if the clock stepped back.
            Ok(Acquire::Wait(
                counted_at - now + (n - self.tokens) / self.rate(),
            ))
        }
    }
}

/// Buckets by key (one per endpoint), each with its own limit.
#[derive(Debug, Clone, Default)]
pub struct KeyedBuckets {
    buckets: FxHashMap<String, TokenBucket>,
}

impl KeyedBuckets {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the limit of `key`. A changed limit keeps the tokens already earned (capped).
    pub fn configure(&mut self, key: &str, max: f64, per: f64) -> Result<(), BucketError> {
        let fresh = TokenBucket::new(max, per)?;
        match self.buckets.get_mut(key) {
            Some(bucket) if bucket.capacity == max && bucket.per == per => {}
            Some(bucket) => {
                let (tokens, updated_at) = bucket.state();
                *bucket = TokenBucket::with_state(max, per, tokens, updated_at)?;
            }
            None => {
                self.buckets.insert(key.to_owned(), fresh);
            }
        }
        Ok(())
    }

    pub fn remove(&mut self, key: &str) -> bool {
        self.buckets.remove(key).is_some()
    }

    pub fn get(&self, key: &str) -> Option<&TokenBucket> {
        self.buckets.get(key)
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// `try_acquire` on the bucket of `key`; a key with no limit configured is always allowed.
    pub fn try_acquire(&mut self, key: &str, now: f64, n: f64) -> Result<Acquire, BucketError> {
        match self.buckets.get_mut(key) {
            Some(bucket) => bucket.try_acquire(now, n),
            None => Ok(Acquire::Allowed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_full_then_refills_at_rate() {
        let mut b = TokenBucket::new(2.0, 1.0).unwrap();
        assert_eq!(b.try_acquire(10.0, 1.0), Ok(Acquire::Allowed));
        assert_eq!(b.try_acquire(10.0, 1.0), Ok(Acquire::Allowed));
        assert_eq!(b.try_acquire(10.0, 1.0), Ok(Acquire::Wait(0.5)));
        assert_eq!(b.try_acquire(10.5, 1.0), Ok(Acquire::Allowed));
        assert_eq!(b.try_acquire(100.0, 2.0), Ok(Acquire::Allowed));
    }

    #[test]
    fn waiting_the_advertised_time_always_succeeds() {
        let mut b = TokenBucket::new(100.0, 60.0).unwrap();
        let mut now = 0.0;
        for _ in 0..1000 {
            match b.try_acquire(now, 1.0).unwrap() {
                Acquire::Allowed => {}
                Acquire::Wait(w) => {
                    now += w;
                    assert_eq!(b.try_acquire(now, 1.0), Ok(Acquire::Allowed));
                }
            }
        }
    }

    #[test]
    fn clock_going_back_refills_nothing() {
        let mut b = TokenBucket::new(1.0, 10.0).unwrap();
        assert_eq!(b.try_acquire(100.0, 1.0), Ok(Acquire::Allowed));
        assert_eq!(b.try_acquire(50.0, 1.0), Ok(Acquire::Wait(60.0)));
        assert_eq!(b.state().1, Some(100.0));
        assert_eq!(b.try_acquire(110.0, 1.0), Ok(Acquire::Allowed));
    }

    #[test]
    fn bad_limits_and_requests() {
        assert!(TokenBucket::new(0.0, 1.0).is_err());
        assert!(TokenBucket::new(1.0, 0.0).is_err());
        assert!(TokenBucket::new(f64::NAN, 1.0).is_err());
        let mut b = TokenBucket::new(2.0, 1.0).unwrap();
        assert!(b.try_acquire(0.0, 3.0).is_err());
        assert!(b.try_acquire(0.0, 0.0).is_err());
    }

    #[test]
    fn keyed_buckets_are_independent_and_reconfigurable() {
        let mut k = KeyedBuckets::new();
        k.configure("a", 1.0, 1.0).unwrap();
        k.configure("b", 1.0, 1.0).unwrap();
        assert_eq!(k.try_acquire("a", 0.0, 1.0), Ok(Acquire::Allowed));
        assert_eq!(k.try_acquire("b", 0.0, 1.0), Ok(Acquire::Allowed));
        assert_eq!(k.try_acquire("a", 0.0, 1.0), Ok(Acquire::Wait(1.0)));
        assert_eq!(k.try_acquire("unlimited", 0.0, 1.0), Ok(Acquire::Allowed));
        k.configure("a", 10.0, 1.0).unwrap();
        assert_eq!(k.get("a").unwrap().state().0, 0.0);
        assert_eq!(k.try_acquire("a", 0.1, 1.0), Ok(Acquire::Allowed));
        assert!(k.remove("a"));
        assert_eq!(k.len(), 1);
    }
}
