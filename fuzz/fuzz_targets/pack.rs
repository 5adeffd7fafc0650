#![no_main]
//! See arc_engine::format::fuzz_entry::pack.

#[global_allocator]
static ALLOC: arc_fuzz::LimitAlloc = arc_fuzz::LimitAlloc;

libfuzzer_sys::fuzz_target!(|data: &[u8]| arc_engine::format::fuzz_entry::pack(data));
