//! Synthetic records shared by the benches.

use callvault_core::call::{CallId, CallRecord, Direction, Lifecycle};
use callvault_core::{Jurisdiction, UnixMillis};
use callvault_meta::Command;

/// Audio of the fixture call: 15 minutes of G.711.
pub const CALL_BYTES: u64 = 7_200_000;
/// Its blocks, as ingest cuts it with the default 1 MiB `ingest.block_bytes`.
pub const CALL_BLOCKS: u32 = CALL_BYTES.div_ceil(1 << 20) as u32;

/// Call `i`'s commit as an ingest node proposes it: a 15-minute call (7.2 MB of G.711, seven
/// 1 MiB blocks), started `i` × 997 ms after a fixed instant, one of 300 facilities, 200,000
/// inmates and 50,000 dialed numbers.
pub fn realistic_commit(i: usize, jurisdiction: Jurisdiction, call_id: &str) -> Command {
    let started = 1_700_000_000_000 + i as i64 * 997;
    Command::CommitCall {
        call: CallRecord {
            call_id: CallId::new(call_id).unwrap(),
            jurisdiction,
            facility_id: format!("facility-{:03}", i % 300),
            inmate_id: format!("inmate-{:07}", i % 200_000),
            number_fingerprint: *blake3::hash(&(i % 50_000).to_le_bytes()).as_bytes(),
            direction: Direction::Outbound,
            started_at: UnixMillis(started),
            ended_at: UnixMillis(started + 900_000),
            byte_length: CALL_BYTES,
            chunk_count: CALL_BLOCKS,
            plaintext_digest: *blake3::hash(&i.to_le_bytes()).as_bytes(),
            committed_under_policy: 0,
            sealed: false,
            lifecycle: Lifecycle::Live,
            holds: Vec::new(),
        },
        wrapped_key: vec![0xAB; 72],
        chunk_ids: (0..CALL_BLOCKS)
            .map(|c| {
                *blake3::hash(&[i as u64, u64::from(c)].map(u64::to_le_bytes).concat()).as_bytes()
            })
            .collect(),
        principal: "platform-bench".into(),
        at: UnixMillis(started + 901_000),
    }
}
