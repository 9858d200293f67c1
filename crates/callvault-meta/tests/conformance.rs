//! openraft's own storage conformance suite, unmodified, against the RocksDB log store and state
//! machine. Written by openraft's authors, not ours: it must pass as it is.

use callvault_meta::{LogStore, StateMachineStore, TypeConfig};
use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for RocksBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = LogStore::open(&dir.path().join("raft-log")).expect("log store opens");
        let sm = StateMachineStore::open(dir.path()).expect("state machine opens");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite_passes() {
    Suite::test_all(RocksBuilder).expect("openraft storage suite");
}
