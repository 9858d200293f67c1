//! The blob shards' OpenTelemetry metrics, on the global meter `callvault-blob`.
//!
//! Instruments are created on first use from the global meter provider, which the binary sets
//! before it starts any role; without one (unit tests, OTLP export off) they are no-ops.
//!
//! | instrument | kind | attributes | recorded by |
//! | --- | --- | --- | --- |
//! | `callvault.blob.scrub.checked` | counter | `shard` | each scrub pass: chunks re-hashed |
//! | `callvault.blob.scrub.findings` | counter | `shard`, `finding` | each scrub pass: `corrupt` (local copy corrupt or missing), `repaired` (corrupt local copy replaced from a peer), `unrepaired` (no peer had an intact copy; retried next pass), `replica_restored` (a placement target lacking the chunk was given it) |
//! | `callvault.blob.chunks.written` | counter | `outcome` | the shard service: `stored`, `already_present`, `repaired` |
//! | `callvault.blob.bytes.written` | counter, By | | the shard service: bytes of chunks newly stored |
//! | `callvault.blob.orphans.removed` | counter | | the shard service: chunks no committed call referenced, removed by the orphan sweep |
//! | `callvault.blob.orphans.bytes_removed` | counter, By | | the same, in bytes |

use std::sync::OnceLock;

use opentelemetry::KeyValue;
use opentelemetry::metrics::Counter;

use crate::placement::ShardId;
use crate::scrub::PassReport;

struct Instruments {
    scrub_checked: Counter<u64>,
    scrub_findings: Counter<u64>,
    chunks_written: Counter<u64>,
    bytes_written: Counter<u64>,
    orphans_removed: Counter<u64>,
    orphan_bytes_removed: Counter<u64>,
}

fn instruments() -> &'static Instruments {
    static INSTRUMENTS: OnceLock<Instruments> = OnceLock::new();
    INSTRUMENTS.get_or_init(|| {
        let meter = opentelemetry::global::meter("callvault-blob");
        Instruments {
            scrub_checked: meter
                .u64_counter("callvault.blob.scrub.checked")
                .with_description("Chunks the scrubber re-hashed")
                .build(),
            scrub_findings: meter
                .u64_counter("callvault.blob.scrub.findings")
                .with_description(
                    "What the scrubber found and did: corrupt, repaired, unrepaired, \
                     replica_restored",
                )
                .build(),
            chunks_written: meter
                .u64_counter("callvault.blob.chunks.written")
                .with_description("Chunk writes this shard accepted, by outcome")
                .build(),
            bytes_written: meter
                .u64_counter("callvault.blob.bytes.written")
                .with_unit("By")
                .with_description("Bytes of chunks this shard newly stored")
                .build(),
            orphans_removed: meter
                .u64_counter("callvault.blob.orphans.removed")
                .with_description(
                    "Chunks no committed call referenced, removed by the orphan sweep",
                )
                .build(),
            orphan_bytes_removed: meter
                .u64_counter("callvault.blob.orphans.bytes_removed")
                .with_unit("By")
                .with_description("Bytes of orphan chunks removed")
                .build(),
        }
    })
}

/// Counts what one scrub pass of `shard` found.
pub fn scrub_pass(shard: &ShardId, report: &PassReport) {
    let m = instruments();
    let shard = KeyValue::new("shard", shard.to_string());
    m.scrub_checked
        .add(report.checked, std::slice::from_ref(&shard));
    for (finding, count) in [
        ("corrupt", report.corrupt),
        ("repaired", report.repaired_local),
        ("unrepaired", report.unrepaired),
        ("replica_restored", report.replicas_restored),
    ] {
        if count > 0 {
            m.scrub_findings
                .add(count, &[shard.clone(), KeyValue::new("finding", finding)]);
        }
    }
}

/// Counts one accepted chunk write (`outcome`: `stored`, `already_present`, `repaired`) of
/// `bytes` bytes; only newly stored bytes count toward `callvault.blob.bytes.written`.
pub(crate) fn chunk_written(outcome: &'static str, bytes: u64) {
    let m = instruments();
    m.chunks_written
        .add(1, &[KeyValue::new("outcome", outcome)]);
    if outcome != "already_present" {
        m.bytes_written.add(bytes, &[]);
    }
}

/// Counts orphan chunks one request removed.
pub(crate) fn orphans_removed(chunks: u64, bytes: u64) {
    let m = instruments();
    m.orphans_removed.add(chunks, &[]);
    m.orphan_bytes_removed.add(bytes, &[]);
}
