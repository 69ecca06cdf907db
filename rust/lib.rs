//! OqronKit's core: pure, synchronous, deterministic domain logic. Time is always a parameter.
//! The Python bindings live in `bindings.rs` alone, behind the `python` feature, so `cargo test`
//! covers everything here without an interpreter.

pub mod backoff;
pub mod breaker;
pub mod bucket;
pub mod http1;
pub mod ids;
pub mod json;
pub mod matcher;
pub mod shared_sha256;
pub mod signing;

#[cfg(feature = "python")]
mod bindings;
