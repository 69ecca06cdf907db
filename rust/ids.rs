//! Time-ordered identifiers: `<head><16 hex digits of the stamp><tail>` for consecutive stamps.
//! The caller allocates the stamps (milliseconds << 16 | sequence); this only spells them, which
//! was most of the cost of a batch of fires when done one Python string at a time.

use std::fmt::Write;

/// `count` ids for the stamps `first`, `first + 1`, ..., each `head + hex16(stamp) + tail`.
pub fn sequential_ids(head: &str, first: u64, count: usize, tail: &str) -> Vec<String> {
    (0..count as u64)
        .map(|i| {
            let mut id = String::with_capacity(head.len() + 16 + tail.len());
            id.push_str(head);
            write!(id, "{:016x}", first.wrapping_add(i)).expect("writing to a String");
            id.push_str(tail);
            id
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spells_consecutive_stamps_in_fixed_width_hex() {
        assert_eq!(
            sequential_ids("dlv_", 0x0192_0000_ffff, 2, "abc"),
            ["dlv_000001920000ffffabc", "dlv_0000019200010000abc"]
        );
        assert!(sequential_ids("m_", 7, 0, "").is_empty());
    }
}
