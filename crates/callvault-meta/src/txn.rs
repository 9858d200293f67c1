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
        let mut keys: BTreeMap<Vec<u8>, bool> = BTreeMap::new();
        let iter = self
            .db
            .iterator_cf(self.cf(cf), IteratorMode::From(prefix, Direction::Forward));
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
        for ((pending_cf, key), value) in self.overlay.range((cf, prefix.to_vec())..) {
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
