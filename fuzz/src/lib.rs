//! Shared by the fuzz targets: an allocator that treats any single
//! allocation above [`LIMIT`] as a crash. libFuzzer's `-malloc_limit_mb`
//! needs a sanitizer's malloc hooks; the targets run without one (`-s none`,
//! for speed, as the code under test is safe Rust apart from zstd), so this
//! makes "a length field from the input sized a huge buffer" abort and be
//! saved as a crash all the same. `engine/tests/fuzz_corpus.rs` checks the
//! same limit when it replays the corpus.

use std::alloc::{GlobalAlloc, Layout, System};

/// 512 MiB: far above anything a fuzz input (at most a few hundred KiB)
/// justifies, far below what a u32/u64 length field can ask for.
pub const LIMIT: usize = 512 << 20;

pub struct LimitAlloc;

fn too_big(size: usize) -> ! {
    // No formatting machinery here: it could allocate inside the allocator.
    let msg = b"arc-fuzz: single allocation above 512 MiB (a length field sized a buffer)\n";
    // SAFETY: writing a static buffer to fd 2.
    unsafe { libc_write(2, msg.as_ptr(), msg.len()) };
    let _ = size;
    std::process::abort()
}

extern "C" {
    #[link_name = "write"]
    fn libc_write(fd: i32, buf: *const u8, count: usize) -> isize;
}

// SAFETY: forwards to the system allocator; only adds a size check.
unsafe impl GlobalAlloc for LimitAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > LIMIT {
            too_big(layout.size());
        }
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > LIMIT {
            too_big(layout.size());
        }
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > LIMIT {
            too_big(new_size);
        }
        System.realloc(ptr, layout, new_size)
    }
}
