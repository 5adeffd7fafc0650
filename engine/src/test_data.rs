//! Helpers for the engine's unit tests: deterministic incompressible
//! bytes, and a progress sink that records warnings.

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

/// A progress sink that keeps every warning (path, message), for tests
/// that check what an operation warned about.
#[derive(Default)]
pub(crate) struct Warnings(pub(crate) std::sync::Mutex<Vec<(std::path::PathBuf, String)>>);

impl crate::progress::Progress for Warnings {
    fn warn(&self, path: &std::path::Path, message: &str) {
        self.0.lock().unwrap().push((path.to_path_buf(), message.to_string()));
    }
}
