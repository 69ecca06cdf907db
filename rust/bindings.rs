//! `oqronkit._core`: thin PyO3 bindings over the pure core. No logic lives here beyond
//! converting arguments, mapping errors to the exceptions of `oqronkit.errors`, and releasing
//! the GIL for batches.

use pyo3::exceptions::PyTypeError;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::pybacked::{PyBackedBytes, PyBackedStr};
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use crate::backoff::{self, Backoff, Strategy};
use crate::breaker::{BreakerPolicy, BreakerState, CircuitBreaker, Permit};
use crate::bucket::{Acquire, BucketError, KeyedBuckets, TokenBucket};
use crate::http1::{self, Framing};
use crate::ids;
use crate::json;
use crate::matcher::{self, GlobError, Matcher};
use crate::signing::{self, Algorithm, Signer};

pyo3::import_exception!(oqronkit.errors, ConfigurationError);
pyo3::import_exception!(oqronkit.errors, InvalidPattern);
pyo3::import_exception!(oqronkit.errors, InvalidEventName);

/// Work below this many bytes is cheaper done holding the GIL than paying to release it.
const DETACH_THRESHOLD: usize = 64 * 1024;

/// A time from Python: finite, or a ValueError before the core sees it (a NaN or an infinity
/// would stay in a breaker's or a bucket's state for good).
fn finite(what: &str, value: f64) -> PyResult<f64> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(PyValueError::new_err(format!(
            "{what} must be a finite time, not {value}"
        )))
    }
}

fn glob_error(err: GlobError) -> PyErr {
    match err {
        GlobError::InvalidPattern { .. } => InvalidPattern::new_err(err.to_string()),
        GlobError::InvalidEventName { .. } => InvalidEventName::new_err(err.to_string()),
    }
}

fn config_error(err: impl std::fmt::Display) -> PyErr {
    ConfigurationError::new_err(err.to_string())
}

fn bucket_error(err: BucketError) -> PyErr {
    match err {
        BucketError::BadLimit { .. } => config_error(err),
        BucketError::TooMany { .. } => pyo3::exceptions::PyValueError::new_err(err.to_string()),
    }
}

/// Runs `f` on the bytes of a `bytes` or the UTF-8 of a `str`, without copying.
fn with_bytes<R>(value: &Bound<'_, PyAny>, what: &str, f: impl FnOnce(&[u8]) -> R) -> PyResult<R> {
    if let Ok(bytes) = value.cast::<PyBytes>() {
        Ok(f(bytes.as_bytes()))
    } else if let Ok(text) = value.cast::<PyString>() {
        Ok(f(text.to_str()?.as_bytes()))
    } else {
        Err(PyTypeError::new_err(format!(
            "{what} must be bytes or str, not {}",
            value.get_type().name()?
        )))
    }
}

// ---------------------------------------------------------------- matcher

/// Up to this many endpoints, an event matching one endpoint gets that endpoint's own `(id,)`
/// tuple, made once (results are immutable, so sharing them is safe). Beyond it, touching cached
/// tuples (a reference count write each) would be a cache miss per match, and fresh tuples from
/// the allocator's hot memory are cheaper.
const CACHED_SINGLES: usize = 4_096;

#[pyclass(name = "Matcher", module = "oqronkit._core", frozen)]
struct PyMatcher {
    inner: Matcher,
    /// `(id,)` for every endpoint, when there are at most `CACHED_SINGLES` endpoints.
    singles: Vec<Py<PyTuple>>,
}

impl PyMatcher {
    fn result<'py>(&self, py: Python<'py>, ids: &[u32]) -> PyResult<Bound<'py, PyTuple>> {
        match ids {
            [id] if !self.singles.is_empty() => Ok(self.singles[*id as usize].bind(py).clone()),
            _ => PyTuple::new(py, ids),
        }
    }
}

#[pymethods]
impl PyMatcher {
    #[new]
    fn new(py: Python<'_>, endpoints: Vec<Vec<PyBackedStr>>) -> PyResult<Self> {
        let patterns: Vec<Vec<&str>> = endpoints
            .iter()
            .map(|ps| ps.iter().map(|p| &**p).collect())
            .collect();
        let inner = Matcher::new(&patterns).map_err(glob_error)?;
        let cached = if inner.endpoint_count() <= CACHED_SINGLES {
            inner.endpoint_count() as u32
        } else {
            0
        };
        let singles = (0..cached)
            .map(|i| Ok(PyTuple::new(py, [i])?.unbind()))
            .collect::<PyResult<_>>()?;
        Ok(PyMatcher { inner, singles })
    }

    #[getter]
    fn endpoint_count(&self) -> usize {
        self.inner.endpoint_count()
    }

    #[pyo3(name = "match")]
    fn match_one<'py>(&self, py: Python<'py>, event: &str) -> PyResult<Bound<'py, PyTuple>> {
        let ids = self.inner.matches(event).map_err(glob_error)?;
        self.result(py, &ids)
    }

    fn match_many<'py>(
        &self,
        py: Python<'py>,
        events: Vec<PyBackedStr>,
    ) -> PyResult<Bound<'py, PyList>> {
        let inner = &self.inner;
        let (flat, ends) = py
            .detach(|| inner.matches_many_flat(&events))
            .map_err(glob_error)?;
        let mut start = 0;
        let results = ends.iter().map(|&end| {
            let result = self.result(py, &flat[start..end]);
            start = end;
            result
        });
        PyList::new(py, results.collect::<PyResult<Vec<_>>>()?)
    }

    fn __repr__(&self) -> String {
        format!("Matcher(endpoints={})", self.inner.endpoint_count())
    }
}

#[pyfunction]
fn validate_event(event: &Bound<'_, PyString>) -> PyResult<()> {
    // A str that is not valid Unicode (a lone surrogate) is a bad name, not an encoding error.
    let Ok(event) = event.to_str() else {
        return Err(InvalidEventName::new_err(format!(
            "invalid event name {event}: it is not valid Unicode (a lone surrogate?)"
        )));
    };
    matcher::validate_event(event).map_err(glob_error)
}

#[pyfunction]
fn validate_pattern(pattern: &Bound<'_, PyString>) -> PyResult<()> {
    let Ok(pattern) = pattern.to_str() else {
        return Err(InvalidPattern::new_err(format!(
            "invalid event pattern {pattern}: it is not valid Unicode (a lone surrogate?)"
        )));
    };
    matcher::validate_pattern(pattern).map_err(glob_error)
}

// ---------------------------------------------------------------- JSON

/// Deeper payloads go to the stdlib, which detects cycles and reports its own depth errors.
const JSON_MAX_DEPTH: usize = 64;

/// Compact JSON of a payload built from exact `dict` (with `str` keys), `list`, `tuple`, `str`,
/// `int`, finite `float`, `bool` and `None`: the bytes `json.dumps(separators=(",", ":"),
/// ensure_ascii=False).encode()` gives. `None` for anything else (subclasses, other keys,
/// NaN, lone surrogates, deep nesting): the caller then asks the stdlib, which has the last
/// word on both the bytes and the error.
#[pyfunction]
fn encode_json<'py>(value: &Bound<'py, PyAny>) -> Option<Bound<'py, PyBytes>> {
    let mut out = Vec::with_capacity(256);
    write_json(&mut out, value, 0)?;
    Some(PyBytes::new(value.py(), &out))
}

fn write_json(out: &mut Vec<u8>, value: &Bound<'_, PyAny>, depth: usize) -> Option<()> {
    use std::io::Write;
    if let Ok(text) = value.cast_exact::<PyString>() {
        json::write_str(out, text.to_str().ok()?);
    } else if value.is_none() {
        out.extend_from_slice(b"null");
    } else if let Ok(flag) = value.cast_exact::<PyBool>() {
        out.extend_from_slice(if flag.is_true() { b"true" } else { b"false" });
    } else if let Ok(int) = value.cast_exact::<PyInt>() {
        match int.extract::<i64>() {
            Ok(n) => write!(out, "{n}").ok()?,
            Err(_) => out.extend_from_slice(int.str().ok()?.to_str().ok()?.as_bytes()),
        }
    } else if let Ok(float) = value.cast_exact::<PyFloat>() {
        if !float.value().is_finite() {
            return None;
        }
        out.extend_from_slice(float.repr().ok()?.to_str().ok()?.as_bytes()); // Python's digits
    } else if depth >= JSON_MAX_DEPTH {
        return None;
    } else if let Ok(dict) = value.cast_exact::<PyDict>() {
        out.push(b'{');
        for (i, (key, item)) in dict.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            json::write_str(out, key.cast_exact::<PyString>().ok()?.to_str().ok()?);
            out.push(b':');
            write_json(out, &item, depth + 1)?;
        }
        out.push(b'}');
    } else if let Ok(list) = value.cast_exact::<PyList>() {
        write_array(out, list.iter(), depth)?;
    } else if let Ok(tuple) = value.cast_exact::<PyTuple>() {
        write_array(out, tuple.iter(), depth)?;
    } else {
        return None;
    }
    Some(())
}

fn write_array<'py>(
    out: &mut Vec<u8>,
    items: impl Iterator<Item = Bound<'py, PyAny>>,
    depth: usize,
) -> Option<()> {
    out.push(b'[');
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json(out, &item, depth + 1)?;
    }
    out.push(b']');
    Some(())
}

// ---------------------------------------------------------------- ids

#[pyfunction]
fn sequential_ids(head: &str, first: u64, count: usize, tail: &str) -> PyResult<Vec<String>> {
    // Stamps are milliseconds << 16 | sequence: more ids than that at once is a caller's bug
    // (and a huge count would abort the process on allocation).
    if count > 1 << 24 {
        return Err(PyValueError::new_err(format!(
            "{count} ids at once is too many"
        )));
    }
    Ok(ids::sequential_ids(head, first, count, tail))
}

// ---------------------------------------------------------------- signing

#[pyclass(name = "Signer", module = "oqronkit._core", frozen)]
struct PySigner {
    inner: Signer,
}

fn parse_algorithm(name: &str) -> PyResult<Algorithm> {
    name.parse().map_err(config_error)
}

#[pymethods]
impl PySigner {
    #[new]
    #[pyo3(signature = (secret, algorithm = "sha256"))]
    fn new(secret: &Bound<'_, PyAny>, algorithm: &str) -> PyResult<Self> {
        let algorithm = parse_algorithm(algorithm)?;
        let inner = with_bytes(secret, "secret", |key| Signer::new(key, algorithm))?;
        Ok(PySigner {
            inner: inner.map_err(config_error)?,
        })
    }

    /// A Standard Webhooks signer from a `whsec_…` secret.
    #[staticmethod]
    fn standard(secret: &str) -> PyResult<Self> {
        Ok(PySigner {
            inner: Signer::standard(secret).map_err(config_error)?,
        })
    }

    #[getter]
    fn algorithm(&self) -> &'static str {
        self.inner.algorithm().name()
    }

    fn sign(&self, body: &Bound<'_, PyAny>, timestamp_ms: u64) -> PyResult<String> {
        with_bytes(body, "body", |body| self.inner.sign_hex(timestamp_ms, body))
    }

    fn __repr__(&self) -> String {
        format!("Signer({})", self.inner.algorithm().name())
    }
}

/// Borrowed, not cloned: a frozen `Signer` is shared read-only, also while detached.
fn signers_of<'a>(signers: &'a [PyRef<'_, PySigner>]) -> Vec<&'a Signer> {
    signers.iter().map(|s| &s.inner).collect()
}

/// Detaches from the interpreter when `work` bytes of hashing make it worth it.
fn maybe_detach<R: Send>(py: Python<'_>, work: usize, f: impl FnOnce() -> R + Send) -> R {
    if work >= DETACH_THRESHOLD {
        py.detach(f)
    } else {
        f()
    }
}

#[pyfunction]
fn signature_header(
    py: Python<'_>,
    body: &Bound<'_, PyAny>,
    timestamp_ms: u64,
    signers: Vec<PyRef<'_, PySigner>>,
) -> PyResult<String> {
    let signers = signers_of(&signers);
    with_bytes(body, "body", |body| {
        maybe_detach(py, body.len() * signers.len(), || {
            signing::signature_header(timestamp_ms, body, &signers)
        })
    })
}

#[pyfunction]
fn verify_signature_header(
    header: &str,
    body: &Bound<'_, PyAny>,
    signers: Vec<PyRef<'_, PySigner>>,
    now_ms: u64,
    tolerance_ms: u64,
) -> PyResult<bool> {
    let signers = signers_of(&signers);
    with_bytes(body, "body", |body| {
        signing::verify_header(header, body, &signers, now_ms, tolerance_ms).is_ok()
    })
}

#[pyfunction]
fn standard_signature_header(
    msg_id: &str,
    timestamp_s: u64,
    body: &Bound<'_, PyAny>,
    signers: Vec<PyRef<'_, PySigner>>,
) -> PyResult<String> {
    let signers = signers_of(&signers);
    with_bytes(body, "body", |body| {
        signing::standard_signature_header(msg_id, timestamp_s, body, &signers)
    })
}

#[allow(clippy::too_many_arguments)]
#[pyfunction]
fn verify_standard(
    msg_id: &str,
    timestamp: &str,
    signature: &str,
    body: &Bound<'_, PyAny>,
    signers: Vec<PyRef<'_, PySigner>>,
    now_ms: u64,
    tolerance_ms: u64,
) -> PyResult<bool> {
    let signers = signers_of(&signers);
    with_bytes(body, "body", |body| {
        signing::verify_standard(
            msg_id,
            timestamp,
            signature,
            body,
            &signers,
            now_ms,
            tolerance_ms,
        )
        .is_ok()
    })
}

// ---------------------------------------------------------------- token buckets

fn wait_of(acquire: Acquire) -> Option<f64> {
    match acquire {
        Acquire::Allowed => None,
        Acquire::Wait(seconds) => Some(seconds),
    }
}

#[pyclass(name = "TokenBucket", module = "oqronkit._core")]
struct PyTokenBucket {
    inner: TokenBucket,
}

#[pymethods]
impl PyTokenBucket {
    #[new]
    fn new(max: f64, per: f64) -> PyResult<Self> {
        Ok(PyTokenBucket {
            inner: TokenBucket::new(max, per).map_err(bucket_error)?,
        })
    }

    #[getter]
    fn capacity(&self) -> f64 {
        self.inner.capacity()
    }

    #[getter]
    fn per(&self) -> f64 {
        self.inner.per()
    }

    #[getter]
    fn rate(&self) -> f64 {
        self.inner.rate()
    }

    #[pyo3(signature = (now, n = 1.0))]
    fn try_acquire(&mut self, now: f64, n: f64) -> PyResult<Option<f64>> {
        self.inner
            .try_acquire(finite("now", now)?, n)
            .map(wait_of)
            .map_err(bucket_error)
    }

    fn available(&self, now: f64) -> PyResult<f64> {
        Ok(self.inner.available(finite("now", now)?))
    }

    fn allowance(&self, now: f64) -> PyResult<u64> {
        Ok(self.inner.allowance(finite("now", now)?))
    }

    fn snapshot(&self) -> (f64, Option<f64>) {
        self.inner.state()
    }

    fn restore(&mut self, state: (f64, Option<f64>)) -> PyResult<()> {
        let (max, per) = (self.inner.capacity(), self.inner.per());
        let tokens = finite("tokens", state.0)?;
        let updated_at = state.1.map(|at| finite("updated_at", at)).transpose()?;
        self.inner = TokenBucket::with_state(max, per, tokens, updated_at).map_err(bucket_error)?;
        Ok(())
    }

    fn __repr__(&self) -> String {
        format!(
            "TokenBucket(max={}, per={})",
            self.inner.capacity(),
            self.inner.per()
        )
    }
}

#[pyclass(name = "KeyedBuckets", module = "oqronkit._core")]
#[derive(Default)]
struct PyKeyedBuckets {
    inner: KeyedBuckets,
}

#[pymethods]
impl PyKeyedBuckets {
    #[new]
    fn new() -> Self {
        Self::default()
    }

    fn configure(&mut self, key: &str, max: f64, per: f64) -> PyResult<()> {
        self.inner.configure(key, max, per).map_err(bucket_error)
    }

    fn remove(&mut self, key: &str) -> bool {
        self.inner.remove(key)
    }

    #[pyo3(signature = (key, now, n = 1.0))]
    fn try_acquire(&mut self, key: &str, now: f64, n: f64) -> PyResult<Option<f64>> {
        self.inner
            .try_acquire(key, finite("now", now)?, n)
            .map(wait_of)
            .map_err(bucket_error)
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    fn __contains__(&self, key: &str) -> bool {
        self.inner.get(key).is_some()
    }
}

// ---------------------------------------------------------------- circuit breaker

/// Exported breaker state: (`"closed"`, failures, 0.0, periods) · (`"open"`, 0, opened_at,
/// periods) · (`"half_open"`, probes, since, periods), where `periods` counts the half-open
/// periods begun so far.
type Snapshot = (String, u32, f64, u64);

#[pyclass(name = "CircuitBreaker", module = "oqronkit._core")]
struct PyCircuitBreaker {
    inner: CircuitBreaker,
}

#[pymethods]
impl PyCircuitBreaker {
    #[new]
    #[pyo3(signature = (failure_threshold = 5, reset_timeout = 30.0, half_open_max = 1))]
    fn new(failure_threshold: u32, reset_timeout: f64, half_open_max: u32) -> PyResult<Self> {
        let policy = BreakerPolicy::new(failure_threshold, reset_timeout, half_open_max)
            .map_err(config_error)?;
        Ok(PyCircuitBreaker {
            inner: CircuitBreaker::new(policy),
        })
    }

    #[getter]
    fn failure_threshold(&self) -> u32 {
        self.inner.policy().failure_threshold
    }

    #[getter]
    fn reset_timeout(&self) -> f64 {
        self.inner.policy().reset_timeout
    }

    #[getter]
    fn half_open_max(&self) -> u32 {
        self.inner.policy().half_open_max
    }

    #[getter]
    fn state(&self) -> &'static str {
        self.inner.state().name()
    }

    /// `(None, probe)` when a call may go through now: `probe` is the number of the half-open
    /// period it is a probe of (None while closed), for `release`. `(retry_at, None)` when not:
    /// the time at which to ask again.
    fn allow(&mut self, now: f64) -> PyResult<(Option<f64>, Option<u64>)> {
        Ok(match self.inner.allow(finite("now", now)?) {
            Permit::Allowed { probe } => (None, probe),
            Permit::Rejected { retry_at } => (Some(retry_at), None),
        })
    }

    fn record_success(&mut self, now: f64) -> PyResult<()> {
        self.inner.record_success(finite("now", now)?);
        Ok(())
    }

    fn record_failure(&mut self, now: f64) -> PyResult<()> {
        self.inner.record_failure(finite("now", now)?);
        Ok(())
    }

    /// A call let through ended with no verdict; `probe` is what `allow` said of it. Only a
    /// probe of the half-open period still running frees a slot.
    fn release(&mut self, now: f64, probe: Option<u64>) -> PyResult<()> {
        self.inner.release(finite("now", now)?, probe);
        Ok(())
    }

    fn snapshot(&self) -> Snapshot {
        let periods = self.inner.periods();
        match self.inner.state() {
            BreakerState::Closed { failures } => ("closed".into(), failures, 0.0, periods),
            BreakerState::Open { opened_at } => ("open".into(), 0, opened_at, periods),
            BreakerState::HalfOpen { probes, since } => {
                ("half_open".into(), probes, since, periods)
            }
        }
    }

    fn restore(&mut self, snapshot: Snapshot) -> PyResult<()> {
        let (name, count, at, periods) = snapshot;
        let at = finite("the state's time", at)?;
        let state = match name.as_str() {
            "closed" => BreakerState::Closed { failures: count },
            "open" => BreakerState::Open { opened_at: at },
            "half_open" => BreakerState::HalfOpen {
                probes: count,
                since: at,
            },
            other => {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "unknown breaker state {other:?}"
                )))
            }
        };
        self.inner = CircuitBreaker::with_state(self.inner.policy(), state, periods);
        Ok(())
    }

    fn __repr__(&self) -> String {
        let p = self.inner.policy();
        format!(
            "CircuitBreaker(state={:?}, failure_threshold={}, reset_timeout={}, half_open_max={})",
            self.inner.state().name(),
            p.failure_threshold,
            p.reset_timeout,
            p.half_open_max
        )
    }
}

// ---------------------------------------------------------------- backoff

#[pyclass(name = "Backoff", module = "oqronkit._core", frozen)]
struct PyBackoff {
    inner: Backoff,
}

#[pymethods]
impl PyBackoff {
    #[new]
    #[pyo3(signature = (strategy = "exponential", base_delay = 2.0, max_delay = 60.0, jitter = 0.2))]
    fn new(strategy: &str, base_delay: f64, max_delay: f64, jitter: f64) -> PyResult<Self> {
        let strategy: Strategy = strategy.parse().map_err(config_error)?;
        Ok(PyBackoff {
            inner: Backoff::new(strategy, base_delay, max_delay, jitter).map_err(config_error)?,
        })
    }

    fn delay(&self, attempt: u32, unit: f64) -> f64 {
        self.inner.delay(attempt, unit)
    }

    #[pyo3(signature = (attempt, unit, retry_after = None, retry_after_cap = 3600.0))]
    fn retry_delay(
        &self,
        attempt: u32,
        unit: f64,
        retry_after: Option<f64>,
        retry_after_cap: f64,
    ) -> f64 {
        self.inner
            .retry_delay(attempt, unit, retry_after, retry_after_cap)
    }

    fn __repr__(&self) -> String {
        let b = &self.inner;
        let strategy = match b.strategy {
            Strategy::Fixed => "fixed",
            Strategy::Exponential => "exponential",
        };
        format!(
            "Backoff(strategy={strategy:?}, base_delay={}, max_delay={}, jitter={})",
            b.base_delay, b.max_delay, b.jitter
        )
    }
}

#[pyfunction]
fn parse_retry_after(value: &str, now: f64) -> Option<f64> {
    backoff::parse_retry_after(value, now)
}

// ---------------------------------------------------------------- HTTP/1.1 heads

/// The request head (and the body after it, so one write sends both).
#[pyfunction]
#[pyo3(signature = (method, target, headers, body=None))]
fn write_request<'py>(
    py: Python<'py>,
    method: &str,
    target: &[u8],
    headers: Vec<(PyBackedBytes, PyBackedBytes)>,
    body: Option<&[u8]>,
) -> PyResult<Bound<'py, PyBytes>> {
    let pairs: Vec<(&[u8], &[u8])> = headers.iter().map(|(n, v)| (&n[..], &v[..])).collect();
    let mut out = Vec::with_capacity(256 + body.map_or(0, <[u8]>::len));
    http1::write_request_head(&mut out, method.as_bytes(), target, &pairs)
        .map_err(|err| PyValueError::new_err(err.to_string()))?;
    if let Some(body) = body {
        out.extend_from_slice(body);
    }
    Ok(PyBytes::new(py, &out))
}

type PyHead<'py> = (
    usize,
    u16,
    Bound<'py, PyBytes>,
    Vec<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)>,
    i64,
    bool,
);

/// `(consumed, status, reason, headers, length, keep_alive)` of the response head at the start
/// of `buf`, or None while it is incomplete. `length` is the body's byte count, -1 for chunked,
/// -2 for a body that runs until the connection closes.
#[pyfunction]
fn parse_response_head<'py>(
    py: Python<'py>,
    buf: &[u8],
    head_request: bool,
) -> PyResult<Option<PyHead<'py>>> {
    let Some(head) = http1::parse_response_head(buf, head_request)
        .map_err(|err| PyValueError::new_err(err.to_string()))?
    else {
        return Ok(None);
    };
    let length = match head.framing {
        Framing::Length(n) => i64::try_from(n).unwrap_or(i64::MAX),
        Framing::Chunked => -1,
        Framing::UntilClose => -2,
    };
    let headers = head
        .headers
        .iter()
        .map(|(n, v)| (PyBytes::new(py, n), PyBytes::new(py, v)))
        .collect();
    Ok(Some((
        head.consumed,
        head.status,
        PyBytes::new(py, &head.reason),
        headers,
        length,
        head.keep_alive,
    )))
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<PyMatcher>()?;
    m.add_class::<PySigner>()?;
    m.add_class::<PyTokenBucket>()?;
    m.add_class::<PyKeyedBuckets>()?;
    m.add_class::<PyCircuitBreaker>()?;
    m.add_class::<PyBackoff>()?;
    m.add_function(wrap_pyfunction!(validate_event, m)?)?;
    m.add_function(wrap_pyfunction!(validate_pattern, m)?)?;
    m.add_function(wrap_pyfunction!(encode_json, m)?)?;
    m.add_function(wrap_pyfunction!(sequential_ids, m)?)?;
    m.add_function(wrap_pyfunction!(signature_header, m)?)?;
    m.add_function(wrap_pyfunction!(verify_signature_header, m)?)?;
    m.add_function(wrap_pyfunction!(standard_signature_header, m)?)?;
    m.add_function(wrap_pyfunction!(verify_standard, m)?)?;
    m.add_function(wrap_pyfunction!(parse_retry_after, m)?)?;
    m.add_function(wrap_pyfunction!(write_request, m)?)?;
    m.add_function(wrap_pyfunction!(parse_response_head, m)?)?;
    Ok(())
}
