//! The diff store: records, a per-route index, per-field aggregates and the
//! persisted outcome counters, in sled behind the [`DiffStore`] trait.
//!
//! Trees: `diffs` (UUID v7 bytes -> record JSON, so keys sort by time),
//! `diffs_by_route` (route, NUL, id -> nothing), `diff_fields` (route, NUL,
//! kind, NUL, field -> [`FieldAgg`]) and `shadow_counts` (route ->
//! [`CountSnapshot`]), `diff_signatures` (route -> [`Signature`]s). Retention: at most `max_diffs` records and none older
//! than `diff_ttl`; aggregates and counters keep counting. Only the pipeline
//! thread writes (aggregates and counters are kept in memory and saved every
//! second); the admin API reads records concurrently.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::counters::CountSnapshot;
use crate::record::DiffRecord;

/// Examples kept per field.
pub const EXAMPLES: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("diff store: {0}")]
    Sled(#[from] sled::Error),
    #[error("diff store: corrupt entry: {0}")]
    Corrupt(String),
}

/// One field's aggregate on one route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldAgg {
    pub route: String,
    pub kind: String,
    /// The field path, array indices folded into `*`.
    pub field: String,
    /// Requests where the primary and shadow differed here.
    pub count: u64,
    /// Noise-checked requests where the primary differed from itself here.
    #[serde(default)]
    pub noise_count: u64,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    /// Up to [`EXAMPLES`] record ids, newest last.
    pub examples: Vec<String>,
}

/// How many mismatching requests differed in exactly this set of fields.
/// Kept per route, so that when ignore rules or noise verdicts change the
/// real mismatch count is recomputed exactly, for every request ever
/// compared, not only the stored ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signature {
    /// (kind, field) pairs, sorted.
    pub fields: Vec<(String, String)>,
    pub count: u64,
}

/// Where diffs live.
pub trait DiffStore: Send + Sync + std::fmt::Debug {
    /// Stores a record, indexes it and applies the record bound.
    fn put(&self, rec: &DiffRecord) -> Result<(), StoreError>;
    fn get(&self, id: &str) -> Result<Option<DiffRecord>, StoreError>;
    /// Newest first, optionally of one route, optionally older than `before`.
    fn list(
        &self,
        route: Option<&str>,
        limit: usize,
        before: Option<&str>,
    ) -> Result<Vec<DiffRecord>, StoreError>;
    /// Every saved field aggregate.
    fn load_fields(&self) -> Result<Vec<FieldAgg>, StoreError>;
    /// Saves (replaces) these aggregates.
    fn save_fields(&self, fields: &[FieldAgg]) -> Result<(), StoreError>;
    fn load_signatures(&self) -> Result<BTreeMap<String, Vec<Signature>>, StoreError>;
    fn save_signatures(&self, route: &str, sigs: &[Signature]) -> Result<(), StoreError>;
    fn load_counts(&self) -> Result<BTreeMap<String, CountSnapshot>, StoreError>;
    fn save_counts(&self, counts: &BTreeMap<String, CountSnapshot>) -> Result<(), StoreError>;
    /// Drops records older than the TTL; returns how many.
    fn expire(&self, now_ms: u64) -> Result<usize, StoreError>;
    /// Records held.
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn flush(&self) -> Result<(), StoreError>;
}

/// The sled implementation.
#[derive(Debug)]
pub struct SledDiffStore {
    db: sled::Db,
    diffs: sled::Tree,
    by_route: sled::Tree,
    fields: sled::Tree,
    counts: sled::Tree,
    signatures: sled::Tree,
    held: AtomicU64,
    max_diffs: u64,
    ttl: Duration,
}

impl SledDiffStore {
    pub fn open(db: &sled::Db, max_diffs: u64, ttl: Duration) -> Result<Self, StoreError> {
        let diffs = db.open_tree("diffs")?;
        let held = AtomicU64::new(diffs.len() as u64);
        Ok(SledDiffStore {
            db: db.clone(),
            by_route: db.open_tree("diffs_by_route")?,
            fields: db.open_tree("diff_fields")?,
            counts: db.open_tree("shadow_counts")?,
            signatures: db.open_tree("diff_signatures")?,
            diffs,
            held,
            max_diffs,
            ttl,
        })
    }

    fn decode(bytes: &[u8]) -> Result<DiffRecord, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    fn route_key(route: &str, id: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(route.len() + 1 + id.len());
        k.extend_from_slice(route.as_bytes());
        k.push(0);
        k.extend_from_slice(id);
        k
    }

    /// Removes the oldest record.
    fn drop_oldest(&self) -> Result<bool, StoreError> {
        match self.diffs.pop_min()? {
            Some((id, value)) => {
                self.held.fetch_sub(1, Relaxed);
                if let Ok(rec) = Self::decode(&value) {
                    self.by_route.remove(Self::route_key(&rec.route, &id))?;
                }
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

fn id_bytes(id: &str) -> Option<[u8; 16]> {
    Uuid::parse_str(id).ok().map(|u| *u.as_bytes())
}

impl DiffStore for SledDiffStore {
    fn put(&self, rec: &DiffRecord) -> Result<(), StoreError> {
        let Some(id) = id_bytes(&rec.id) else {
            return Err(StoreError::Corrupt(format!(
                "record id {} is not a UUID",
                rec.id
            )));
        };
        let value = serde_json::to_vec(rec).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.diffs.insert(id, value)?;
        self.held.fetch_add(1, Relaxed);
        self.by_route
            .insert(Self::route_key(&rec.route, &id), &[])?;
        while self.held.load(Relaxed) > self.max_diffs {
            if !self.drop_oldest()? {
                break;
            }
        }
        Ok(())
    }

    fn get(&self, id: &str) -> Result<Option<DiffRecord>, StoreError> {
        let Some(key) = id_bytes(id) else {
            return Ok(None);
        };
        self.diffs.get(key)?.map(|v| Self::decode(&v)).transpose()
    }

    fn list(
        &self,
        route: Option<&str>,
        limit: usize,
        before: Option<&str>,
    ) -> Result<Vec<DiffRecord>, StoreError> {
        let before = before.and_then(id_bytes);
        let mut out = Vec::new();
        match route {
            None => {
                let iter = match before {
                    Some(b) => self.diffs.range(..b.to_vec()),
                    None => self.diffs.iter(),
                };
                for item in iter.rev().take(limit) {
                    let (_, v) = item?;
                    out.push(Self::decode(&v)?);
                }
            }
            Some(route) => {
                let start = Self::route_key(route, &[]);
                let end = match before {
                    Some(b) => Self::route_key(route, &b),
                    None => {
                        let mut e = route.as_bytes().to_vec();
                        e.push(1);
                        e
                    }
                };
                for item in self.by_route.range(start..end).rev() {
                    if out.len() >= limit {
                        break;
                    }
                    let (k, _) = item?;
                    let id = &k[route.len() + 1..];
                    // The record may have been dropped by retention just now.
                    if let Some(v) = self.diffs.get(id)? {
                        out.push(Self::decode(&v)?);
                    }
                }
            }
        }
        Ok(out)
    }

    fn load_fields(&self) -> Result<Vec<FieldAgg>, StoreError> {
        self.fields
            .iter()
            .map(|item| {
                let (_, v) = item?;
                serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt(e.to_string()))
            })
            .collect()
    }

    fn save_fields(&self, fields: &[FieldAgg]) -> Result<(), StoreError> {
        for f in fields {
            let key = [
                f.route.as_bytes(),
                &[0],
                f.kind.as_bytes(),
                &[0],
                f.field.as_bytes(),
            ]
            .concat();
            let v = serde_json::to_vec(f).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            self.fields.insert(key, v)?;
        }
        Ok(())
    }

    fn load_signatures(&self) -> Result<BTreeMap<String, Vec<Signature>>, StoreError> {
        let mut out = BTreeMap::new();
        for item in self.signatures.iter() {
            let (k, v) = item?;
            let sigs: Vec<Signature> =
                serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            out.insert(String::from_utf8_lossy(&k).into_owned(), sigs);
        }
        Ok(out)
    }

    fn save_signatures(&self, route: &str, sigs: &[Signature]) -> Result<(), StoreError> {
        let v = serde_json::to_vec(sigs).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.signatures.insert(route.as_bytes(), v)?;
        Ok(())
    }

    fn load_counts(&self) -> Result<BTreeMap<String, CountSnapshot>, StoreError> {
        let mut out = BTreeMap::new();
        for item in self.counts.iter() {
            let (k, v) = item?;
            let snap: CountSnapshot =
                serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            out.insert(String::from_utf8_lossy(&k).into_owned(), snap);
        }
        Ok(out)
    }

    fn save_counts(&self, counts: &BTreeMap<String, CountSnapshot>) -> Result<(), StoreError> {
        for (route, snap) in counts {
            let v = serde_json::to_vec(snap).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            self.counts.insert(route.as_bytes(), v)?;
        }
        Ok(())
    }

    fn expire(&self, now_ms: u64) -> Result<usize, StoreError> {
        let cutoff = now_ms.saturating_sub(self.ttl.as_millis() as u64);
        let mut dropped = 0;
        loop {
            let Some((k, _)) = self.diffs.first()? else {
                break;
            };
            let ms = <[u8; 16]>::try_from(&k[..])
                .ok()
                .and_then(|b| Uuid::from_bytes(b).get_timestamp())
                .map(|t| {
                    let (s, n) = t.to_unix();
                    s * 1000 + u64::from(n) / 1_000_000
                })
                .unwrap_or(0);
            if ms >= cutoff || !self.drop_oldest()? {
                break;
            }
            dropped += 1;
        }
        Ok(dropped)
    }

    fn len(&self) -> u64 {
        self.held.load(Relaxed)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::{Difference, Kind};
    use crate::counters::Outcome;
    use crate::record::Side;
    use serde_json::json;

    fn record(route: &str) -> DiffRecord {
        let side = Side::failed("x", "n/a".into(), None);
        DiffRecord {
            id: Uuid::now_v7().to_string(),
            time: "t".into(),
            route: route.into(),
            method: "GET".into(),
            path: "/".into(),
            primary: side.clone(),
            shadow: side,
            differences: vec![
                Difference {
                    kind: Kind::Body,
                    path: "/items/0/total".into(),
                    field: "/items/*/total".into(),
                    primary: Some(json!(1)),
                    shadow: Some(json!("1")),
                },
                Difference {
                    kind: Kind::Body,
                    path: "/items/1/total".into(),
                    field: "/items/*/total".into(),
                    primary: Some(json!(2)),
                    shadow: Some(json!("2")),
                },
            ],
            differences_total: 2,
            hidden: 0,
            outcome: Outcome::Mismatch,
        }
    }

    #[test]
    fn bounded_indexed_and_aggregated() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let store = SledDiffStore::open(&db, 5, Duration::from_secs(3600)).unwrap();
        let mut ids = Vec::new();
        for i in 0..8 {
            let rec = record(if i % 2 == 0 { "a" } else { "b" });
            ids.push(rec.id.clone());
            store.put(&rec).unwrap();
        }
        assert_eq!(store.len(), 5);
        assert!(store.get(&ids[0]).unwrap().is_none());
        assert!(store.get(&ids[7]).unwrap().is_some());
        let all = store.list(None, 100, None).unwrap();
        assert_eq!(all.len(), 5);
        assert_eq!(all[0].id, ids[7]);
        let a = store.list(Some("a"), 100, None).unwrap();
        assert_eq!(
            a.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
            [ids[6].clone(), ids[4].clone()]
        );
        let older = store.list(None, 2, Some(&ids[6])).unwrap();
        assert_eq!(older[0].id, ids[5]);
        // Aggregates are saved and loaded whole.
        let agg = FieldAgg {
            route: "a".into(),
            kind: "body".into(),
            field: "/items/*/total".into(),
            count: 4,
            noise_count: 1,
            first_seen_ms: 1000,
            last_seen_ms: 1006,
            examples: vec![ids[6].clone()],
        };
        store.save_fields(std::slice::from_ref(&agg)).unwrap();
        assert_eq!(store.load_fields().unwrap(), [agg]);
        // TTL.
        let ttl = SledDiffStore::open(&db, 100, Duration::from_secs(1)).unwrap();
        assert_eq!(ttl.expire(super::super::time::now_ms() + 5_000).unwrap(), 5);
        assert_eq!(ttl.len(), 0);
        assert!(ttl.list(Some("a"), 10, None).unwrap().is_empty());
    }
}
