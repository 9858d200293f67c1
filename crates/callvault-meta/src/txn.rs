//! A write set over the state-machine database, so the entries of one `apply` batch see each
//! other's writes and the whole batch lands in one atomic RocksDB write with the applied log id.

use std::collections::BTreeMap;

use rocksdb::{DB, Direction, IteratorMode, WriteBatch};

/// Pending writes over a snapshot of the database's current contents.
pub struct Txn<'a> {
    db: &'a DB,
    overlay: BTreeMap<(&'static str, Vec<u8>), Option<Vec<u8>>>,
    id_key: [u8; 32],
}

impl<'a> Txn<'a> {
    /// An empty write set over `db`.
    pub fn new(db: &'a DB) -> Self {
        Txn {
            db,
            overlay: BTreeMap::new(),
            id_key: [0; 32],
        }
    }

    /// The same write set, filing call tombstones under hashes keyed by `key` (the cluster's
    /// index key). Without it the all-zero key is used: fine for tests, not for production,
    /// where every replica must use the same secret key (the tombstone family checks it).
    pub fn with_id_key(mut self, key: [u8; 32]) -> Self {
        self.id_key = key;
        self
    }

    /// The key call tombstones are filed under.
    pub fn id_key(&self) -> &[u8; 32] {
        &self.id_key
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .unwrap_or_else(|| panic!("column family {name} is created at open"))
    }

    /// The value of `key`, as this write set would leave it.
    pub fn get(&self, cf: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, rocksdb::Error> {
        if let Some(pending) = self.overlay.get(&(cf, key.to_vec())) {
            return Ok(pending.clone());
        }
        self.db.get_cf(self.cf(cf), key)
    }

    /// Sets `key`.
    pub fn put(&mut self, cf: &'static str, key: Vec<u8>, value: Vec<u8>) {
        self.overlay.insert((cf, key), Some(value));
    }

    /// Deletes `key`.
    pub fn delete(&mut self, cf: &'static str, key: Vec<u8>) {
        self.overlay.insert((cf, key), None);
    }

    /// Up to `limit` keys starting with `prefix`, in order, as this write set would leave them.
    pub fn keys_with_prefix(
        &self,
        cf: &'static str,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, rocksdb::Error> {
        self.keys_with_prefix_from(cf, prefix, prefix, limit)
    }

    /// Like [`Txn::keys_with_prefix`], from the first key at or after `from`. A caller that
    /// deletes keys in order starts past what it deleted: RocksDB iterators step over every
    /// deletion until a compaction drops it, so a scan from the prefix would grow with them.
    pub fn keys_with_prefix_from(
        &self,
        cf: &'static str,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, rocksdb::Error> {
        let from = from.max(prefix);
        let mut keys: BTreeMap<Vec<u8>, bool> = BTreeMap::new();
        let mut options = rocksdb::ReadOptions::default();
        if let Some(end) = prefix_end(prefix) {
            options.set_iterate_upper_bound(end);
        }
        let iter = self.db.iterator_cf_opt(
            self.cf(cf),
            options,
            IteratorMode::From(from, Direction::Forward),
        );
        for item in iter {
            let (key, _) = item?;
            if !key.starts_with(prefix) {
                break;
            }
            keys.insert(key.to_vec(), true);
            // Pending deletes may hide some of these; read a little past the limit.
            if keys.len() >= limit.saturating_add(self.overlay.len()) {
                break;
            }
        }
        for ((pending_cf, key), value) in self.overlay.range((cf, from.to_vec())..) {
            if *pending_cf != cf || !key.starts_with(prefix) {
                break;
            }
            keys.insert(key.clone(), value.is_some());
        }
        Ok(keys
            .into_iter()
            .filter(|(_, present)| *present)
            .map(|(key, _)| key)
            .take(limit)
            .collect())
    }

    /// The writes as one batch.
    pub fn into_batch(self) -> WriteBatch {
        let mut batch = WriteBatch::default();
        for ((cf, key), value) in self.overlay {
            let handle = self.db.cf_handle(cf).expect("column family exists");
            match value {
                Some(value) => batch.put_cf(handle, key, value),
                None => batch.delete_cf(handle, key),
            }
        }
        batch
    }
}

/// The first key after every key that starts with `prefix` (`None` when there is none).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_at_its_successor() {
        assert_eq!(prefix_end(b"r\x01"), Some(b"r\x02".to_vec()));
        assert_eq!(prefix_end(b"r\x01\xff"), Some(b"r\x02".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
    }

    #[test]
    fn a_scan_from_a_key_sees_stored_and_pending_keys_of_the_prefix_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut options = rocksdb::Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        let db = DB::open_cf(&options, dir.path(), ["t"]).unwrap();
        let cf = db.cf_handle("t").unwrap();
        for key in [&b"a9"[..], b"p1", b"p2", b"p3", b"p5", b"q1"] {
            db.put_cf(cf, key, b"v").unwrap();
        }
        let mut txn = Txn::new(&db);
        txn.delete("t", b"p3".to_vec());
        txn.put("t", b"p4".to_vec(), b"v".to_vec());
        txn.put("t", b"p0".to_vec(), b"v".to_vec());
        let keys = txn.keys_with_prefix_from("t", b"p", b"p2", 10).unwrap();
        assert_eq!(keys, [&b"p2"[..], b"p4", b"p5"]);
        assert_eq!(
            txn.keys_with_prefix_from("t", b"p", b"p2", 2)
                .unwrap()
                .len(),
            2
        );
        assert_eq!(txn.keys_with_prefix("t", b"p", 10).unwrap().len(), 5);
    }
}
