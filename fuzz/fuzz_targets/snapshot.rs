#![no_main]
//! See arc_engine::format::fuzz_entry::snapshot.

#[global_allocator]
static ALLOC: arc_fuzz::LimitAlloc = arc_fuzz::LimitAlloc;

libfuzzer_sys::fuzz_target!(|data: &[u8]| arc_engine::format::fuzz_entry::snapshot(data));
