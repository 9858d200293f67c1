//! Migrations of the state machine's derived data, run when a store opens or a snapshot is
//! installed. Each is a pure function of the stored state, so every replica derives the same.

use rocksdb::{DB, IteratorMode, WriteBatch};

use crate::keys::{self, CF_CHUNK_REFS, CF_CHUNKS, CF_SM_META};

/// `sm_meta` key marking the chunk-reference index as built.
const KEY_CHUNK_REFS_BUILT: &[u8] = b"chunk_refs_v1";

/// Builds the chunk-reference index (`chunk_refs`) from the chunk lists of stored calls, once:
/// stores written before the orphan sweep existed lack it, and the sweep must never take a
/// chunk a committed call references.
pub fn index_chunk_refs(db: &DB) -> Result<(), rocksdb::Error> {
    let meta = db.cf_handle(CF_SM_META).expect("created at open");
    if db.get_cf(meta, KEY_CHUNK_REFS_BUILT)?.is_some() {
        return Ok(());
    }
    let chunks = db.cf_handle(CF_CHUNKS).expect("created at open");
    let refs = db.cf_handle(CF_CHUNK_REFS).expect("created at open");
    let mut batch = WriteBatch::default();
    for item in db.iterator_cf(chunks, IteratorMode::Start) {
        let (call_key, ids) = item?;
        for id in keys::chunk_ids(&ids) {
            batch.put_cf(refs, keys::chunk_ref(&id, &call_key), []);
        }
        if batch.len() >= 100_000 {
            db.write(std::mem::take(&mut batch))?;
        }
    }
    batch.put_cf(meta, KEY_CHUNK_REFS_BUILT, [1]);
    db.write(batch)
}
