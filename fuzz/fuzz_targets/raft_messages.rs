#![no_main]

#[global_allocator]
static ALLOCATOR: callvault_fuzz::BoundedAllocator = callvault_fuzz::BoundedAllocator;

libfuzzer_sys::fuzz_target!(|input: &[u8]| callvault_fuzz::raft::message(input));
