//! Which shards hold a chunk: rendezvous (highest-random-weight) hashing over the shard set.
//!
//! Each shard scores each chunk with a keyed hash of (shard id, chunk id); a chunk's replicas are
//! the R highest-scoring shards, in score order. Adding or removing a shard moves only the
//! chunks whose top R changes (about R/N of them), and every node computes the same answer
//! from the same shard list, with no coordination.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::chunk::ChunkId;

/// A shard's stable name. Placement hashes it, so renaming a shard moves its chunks.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ShardId(String);

/// A shard id that is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid shard id {0:?}: 1 to 64 characters of A-Z, a-z, 0-9, '.', '_', '-'")]
pub struct InvalidShardId(pub String);

impl ShardId {
    /// Checks and wraps a shard id.
    pub fn new(text: &str) -> Result<Self, InvalidShardId> {
        let ok = !text.is_empty()
            && text.len() <= 64
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(ShardId(text.to_string()))
        } else {
            Err(InvalidShardId(text.chars().take(80).collect()))
        }
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ShardId {
    type Error = InvalidShardId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        ShardId::new(&s)
    }
}

impl From<ShardId> for String {
    fn from(id: ShardId) -> String {
        id.0
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// A member of the shard set: its id and its gRPC address (`host:port`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardInfo {
    /// The shard's id.
    pub id: ShardId,
    /// Where its `BlobShard` service listens, e.g. `10.0.0.7:7400`.
    pub addr: String,
}

/// The shard set and the replication factor.
#[derive(Debug, Clone)]
pub struct Placement {
    shards: Vec<ShardInfo>,
    replicas: usize,
}

/// A shard set that cannot place chunks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// No shards.
    #[error("the shard set is empty")]
    Empty,
    /// The same id twice.
    #[error("shard {0} is listed twice")]
    Duplicate(ShardId),
    /// R is zero.
    #[error("the replication factor must be at least 1")]
    ZeroReplicas,
}

impl Placement {
    /// A placement of `replicas` copies over `shards`. If there are fewer shards than replicas,
    /// every shard holds every chunk.
    pub fn new(shards: Vec<ShardInfo>, replicas: usize) -> Result<Self, PlacementError> {
        if shards.is_empty() {
            return Err(PlacementError::Empty);
        }
        if replicas == 0 {
            return Err(PlacementError::ZeroReplicas);
        }
        let mut ids: Vec<&ShardId> = shards.iter().map(|s| &s.id).collect();
        ids.sort();
        if let Some(pair) = ids.windows(2).find(|w| w[0] == w[1]) {
            return Err(PlacementError::Duplicate(pair[0].clone()));
        }
        Ok(Placement { shards, replicas })
    }

    /// Every shard of the set.
    pub fn shards(&self) -> &[ShardInfo] {
        &self.shards
    }

    /// The replication factor R.
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// The shard with this id, if it is in the set.
    pub fn shard(&self, id: &ShardId) -> Option<&ShardInfo> {
        self.shards.iter().find(|s| &s.id == id)
    }

    /// Every shard, best first for `chunk`: the first R are its replicas, the rest are where a
    /// reader looks when the replicas fail (e.g. after the shard set changed).
    pub fn ranked(&self, chunk: &ChunkId) -> Vec<&ShardInfo> {
        let mut scored: Vec<(u64, &ShardInfo)> = self
            .shards
            .iter()
            .map(|s| (score(&s.id, chunk), s))
            .collect();
        // Ties (astronomically unlikely) are broken by id so every node agrees.
        scored.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.id.cmp(&b.1.id)));
        scored.into_iter().map(|(_, s)| s).collect()
    }

    /// The R shards that should hold `chunk`, in preference order.
    pub fn targets(&self, chunk: &ChunkId) -> Vec<&ShardInfo> {
        let mut ranked = self.ranked(chunk);
        ranked.truncate(self.replicas);
        ranked
    }
}

/// The rendezvous weight of (shard, chunk): 64 bits of a domain-separated blake3.
fn score(shard: &ShardId, chunk: &ChunkId) -> u64 {
    let mut h = blake3::Hasher::new_derive_key("callvault blob placement v1");
    h.update(&(shard.as_str().len() as u64).to_le_bytes());
    h.update(shard.as_str().as_bytes());
    h.update(chunk.as_bytes());
    let out = h.finalize();
    u64::from_le_bytes(out.as_bytes()[..8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(n: usize) -> Vec<ShardInfo> {
        (0..n)
            .map(|i| ShardInfo {
                id: ShardId::new(&format!("shard-{i}")).unwrap(),
                addr: format!("127.0.0.1:{}", 7000 + i),
            })
            .collect()
    }

    fn chunk(i: u64) -> ChunkId {
        ChunkId::of(&i.to_le_bytes())
    }

    #[test]
    fn targets_are_r_distinct_shards_and_stable() {
        let p = Placement::new(set(5), 3).unwrap();
        for i in 0..200 {
            let t = p.targets(&chunk(i));
            assert_eq!(t.len(), 3);
            let mut ids: Vec<_> = t.iter().map(|s| &s.id).collect();
            ids.dedup();
            assert_eq!(ids.len(), 3);
            // Another node with the shards listed in another order agrees.
            let mut reversed = set(5);
            reversed.reverse();
            let q = Placement::new(reversed, 3).unwrap();
            let tq: Vec<_> = q.targets(&chunk(i)).iter().map(|s| s.id.clone()).collect();
            let tp: Vec<_> = t.iter().map(|s| s.id.clone()).collect();
            assert_eq!(tp, tq);
        }
    }

    #[test]
    fn load_is_spread_evenly() {
        let p = Placement::new(set(6), 3).unwrap();
        let mut counts = std::collections::HashMap::new();
        let n = 6000;
        for i in 0..n {
            for s in p.targets(&chunk(i)) {
                *counts.entry(s.id.clone()).or_insert(0) += 1;
            }
        }
        // Expected 3000 each; allow ±10%.
        for (id, c) in counts {
            assert!((2700..=3300).contains(&c), "{id} holds {c}");
        }
    }

    #[test]
    fn adding_a_shard_moves_few_chunks() {
        let before = Placement::new(set(5), 3).unwrap();
        let after = Placement::new(set(6), 3).unwrap();
        let mut moved = 0;
        let n = 3000;
        for i in 0..n {
            let b: Vec<_> = before
                .targets(&chunk(i))
                .iter()
                .map(|s| s.id.clone())
                .collect();
            let a: Vec<_> = after
                .targets(&chunk(i))
                .iter()
                .map(|s| s.id.clone())
                .collect();
            // Every replica that stays keeps its place among the old ones.
            moved += b.iter().filter(|id| !a.contains(id)).count();
            assert!(
                a.iter()
                    .all(|id| b.contains(id) || id.as_str() == "shard-5")
            );
        }
        // One new shard of six takes about 3/6 of the chunks' one replica each: ~n/2 moves.
        assert!(moved < n as usize * 6 / 10, "{moved} replicas moved");
    }

    #[test]
    fn fewer_shards_than_replicas_and_bad_sets() {
        let p = Placement::new(set(2), 3).unwrap();
        assert_eq!(p.targets(&chunk(1)).len(), 2);
        assert_eq!(
            Placement::new(vec![], 3).unwrap_err(),
            PlacementError::Empty
        );
        assert_eq!(
            Placement::new(set(2), 0).unwrap_err(),
            PlacementError::ZeroReplicas
        );
        let mut dup = set(2);
        dup.push(dup[0].clone());
        assert!(matches!(
            Placement::new(dup, 2),
            Err(PlacementError::Duplicate(_))
        ));
        assert!(ShardId::new("a b").is_err());
        assert!(ShardId::new("").is_err());
        assert!(ShardId::new("blob-1.us_east").is_ok());
    }
}
