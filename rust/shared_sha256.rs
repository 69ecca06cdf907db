//! SHA-256 compression of one message from many starting states at once.
//!
//! Signing one body for many secrets is HMAC's inner hash of the same blocks from one keyed state
//! per secret. With SHA-NI, a single stream is bound by the latency of `sha256rnds2`, not by its
//! throughput, so running two states through the same blocks side by side nearly doubles the
//! speed; the message schedule, the same for every state, is computed once. Without SHA-NI each
//! state goes through `sha2`'s own compression.

use sha2::digest::generic_array::GenericArray;

/// SHA-256 block size.
pub const BLOCK: usize = 64;

/// States run side by side, at most. Measured on Zen 3 (50 states × 33 blocks): one lane 73 µs,
/// two 39, four 25, six 20, eight 21 (its sixteen state registers spill).
pub const LANES: usize = 6;

#[cfg(target_arch = "x86_64")]
fn whole<const N: usize>(group: &mut [[u32; 8]]) -> &mut [[u32; 8]; N] {
    group.try_into().expect("a group of N states")
}

/// Runs every state in `states` through `blocks` (whole 64-byte blocks, already padded).
pub fn compress_each(states: &mut [[u32; 8]], blocks: &[u8]) {
    assert!(blocks.len() % BLOCK == 0, "whole blocks only");
    #[cfg(target_arch = "x86_64")]
    if shani::available() {
        for group in states.chunks_mut(LANES) {
            // SAFETY: the CPU has the features `shani::lanes` is compiled for.
            unsafe {
                match group.len() {
                    6 => shani::lanes::<6>(whole(group), blocks),
                    5 => shani::lanes::<5>(whole(group), blocks),
                    4 => shani::lanes::<4>(whole(group), blocks),
                    3 => shani::lanes::<3>(whole(group), blocks),
                    2 => shani::lanes::<2>(whole(group), blocks),
                    _ => shani::lanes::<1>(whole(group), blocks),
                }
            }
        }
        return;
    }
    for state in states {
        for block in blocks.chunks_exact(BLOCK) {
            sha2::compress256(state, &[*GenericArray::from_slice(block)]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod shani {
    use std::arch::x86_64::*;

    pub fn available() -> bool {
        std::is_x86_feature_detected!("sha")
            && std::is_x86_feature_detected!("sse2")
            && std::is_x86_feature_detected!("ssse3")
            && std::is_x86_feature_detected!("sse4.1")
    }

    /// SHA-256's round constants.
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];

    /// The `sha2` crate's SHA-NI compression (Intel's layout of the state as ABEF/CDGH), with
    /// each round applied to every lane: the lanes share the message words and differ only in
    /// state.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    pub unsafe fn lanes<const N: usize>(states: &mut [[u32; 8]; N], blocks: &[u8]) {
        let byte_swap = _mm_set_epi64x(0x0C0D_0E0F_0809_0A0B, 0x0405_0607_0001_0203);
        let mut abef = [_mm_setzero_si128(); N];
        let mut cdgh = [_mm_setzero_si128(); N];
        for lane in 0..N {
            let ptr = states[lane].as_ptr() as *const __m128i;
            let dcba = _mm_loadu_si128(ptr);
            let efgh = _mm_shuffle_epi32(_mm_loadu_si128(ptr.add(1)), 0x1B);
            let cdab = _mm_shuffle_epi32(dcba, 0xB1);
            abef[lane] = _mm_alignr_epi8(cdab, efgh, 8);
            cdgh[lane] = _mm_blend_epi16(efgh, cdab, 0xF0);
        }
        for block in blocks.chunks_exact(super::BLOCK) {
            let (abef_saved, cdgh_saved) = (abef, cdgh);
            let ptr = block.as_ptr() as *const __m128i;
            let mut w = [
                _mm_shuffle_epi8(_mm_loadu_si128(ptr), byte_swap),
                _mm_shuffle_epi8(_mm_loadu_si128(ptr.add(1)), byte_swap),
                _mm_shuffle_epi8(_mm_loadu_si128(ptr.add(2)), byte_swap),
                _mm_shuffle_epi8(_mm_loadu_si128(ptr.add(3)), byte_swap),
            ];
            for quad in 0..16 {
                if quad >= 4 {
                    // The next four message words, from the last sixteen (kept in a ring of four).
                    let (w0, w1, w2, w3) = (
                        w[quad % 4],
                        w[(quad + 1) % 4],
                        w[(quad + 2) % 4],
                        w[(quad + 3) % 4],
                    );
                    let t = _mm_add_epi32(_mm_sha256msg1_epu32(w0, w1), _mm_alignr_epi8(w3, w2, 4));
                    w[quad % 4] = _mm_sha256msg2_epu32(t, w3);
                }
                let k = &K[quad * 4..quad * 4 + 4];
                let low = _mm_add_epi32(
                    w[quad % 4],
                    _mm_set_epi32(k[3] as i32, k[2] as i32, k[1] as i32, k[0] as i32),
                );
                let high = _mm_shuffle_epi32(low, 0x0E);
                for lane in 0..N {
                    cdgh[lane] = _mm_sha256rnds2_epu32(cdgh[lane], abef[lane], low);
                }
                for lane in 0..N {
                    abef[lane] = _mm_sha256rnds2_epu32(abef[lane], cdgh[lane], high);
                }
            }
            for lane in 0..N {
                abef[lane] = _mm_add_epi32(abef[lane], abef_saved[lane]);
                cdgh[lane] = _mm_add_epi32(cdgh[lane], cdgh_saved[lane]);
            }
        }
        for lane in 0..N {
            let feba = _mm_shuffle_epi32(abef[lane], 0x1B);
            let dchg = _mm_shuffle_epi32(cdgh[lane], 0xB1);
            let ptr = states[lane].as_mut_ptr() as *mut __m128i;
            _mm_storeu_si128(ptr, _mm_blend_epi16(feba, dchg, 0xF0));
            _mm_storeu_si128(ptr.add(1), _mm_alignr_epi8(dchg, feba, 8));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(state: &[u32; 8], blocks: &[u8]) -> [u32; 8] {
        let mut state = *state;
        for block in blocks.chunks_exact(BLOCK) {
            sha2::compress256(&mut state, &[*GenericArray::from_slice(block)]);
        }
        state
    }

    #[test]
    fn every_state_matches_sha2_compression() {
        // Deterministic, varied states and message bytes; any count of states (whole groups of
        // LANES and every smaller remainder) and of blocks.
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for count in 0..=2 * LANES + 1 {
            for blocks in [0usize, 1, 2, 33] {
                let message: Vec<u8> = (0..blocks * BLOCK).map(|_| next() as u8).collect();
                let mut states: Vec<[u32; 8]> = (0..count)
                    .map(|_| std::array::from_fn(|_| next() as u32))
                    .collect();
                let expected: Vec<[u32; 8]> =
                    states.iter().map(|s| reference(s, &message)).collect();
                compress_each(&mut states, &message);
                assert_eq!(states, expected, "{count} states, {blocks} blocks");
            }
        }
    }
}
