//! Deterministic incompressible bytes for the engine's unit tests.

/// `len` bytes of xorshift64 output (the low byte of each step); the same
/// seed always gives the same bytes. `seed` must not be 0.
pub(crate) fn pseudo_random(len: usize, mut seed: u64) -> Vec<u8> {
    assert_ne!(seed, 0, "xorshift stays at 0 forever");
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}
