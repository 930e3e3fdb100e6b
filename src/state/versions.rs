//! Where the runtime layer's versions are kept, behind a trait: every
//! change and reload is a version, flushed before it is acknowledged.
//! `SledVersions` keeps them in the proxy's own sled store; a cluster store
//! (etcd, for replicas) is the second implementation to come, beside it.

use crate::state::layer::{Change, ControlError, VersionRecord};

/// The persisted versions of the runtime layer.
pub trait VersionStore: std::fmt::Debug + Send + Sync {
    /// The latest version, if any.
    fn last(&self) -> Result<Option<VersionRecord>, ControlError>;

    /// Version `version`, if it exists.
    fn get(&self, version: u64) -> Result<Option<VersionRecord>, ControlError>;

    /// Writes a version and returns once it is durable.
    fn append(&self, record: &VersionRecord) -> Result<(), ControlError>;

    /// Every version, newest first.
    fn newest_first(&self) -> Box<dyn Iterator<Item = Result<VersionRecord, ControlError>> + '_>;

    /// Versions newest first, optionally only those touching `route`.
    fn history(
        &self,
        route: Option<&str>,
        limit: usize,
    ) -> Result<Vec<VersionRecord>, ControlError> {
        let mut out = Vec::new();
        for rec in self.newest_first() {
            let rec = rec?;
            let touches = match (route, &rec.route) {
                (None, _) => true,
                (Some(r), Some(rr)) => r == rr,
                // Changes to every route (rollback --all, reload) touch this one too.
                (Some(r), None) => change_mentions(&rec.change, r),
            };
            if touches {
                out.push(rec);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }
}

fn change_mentions(change: &Change, route: &str) -> bool {
    change.before.get(route).is_some() || change.after.get(route).is_some()
}

/// The versions in the `versions` tree of the proxy's sled store, keyed
/// by the version number (big-endian, so in order).
#[derive(Debug)]
pub struct SledVersions {
    tree: sled::Tree,
    db: sled::Db,
}

impl SledVersions {
    pub fn open(db: &sled::Db) -> Result<Self, ControlError> {
        let tree = db.open_tree("versions").map_err(store_error)?;
        Ok(SledVersions {
            tree,
            db: db.clone(),
        })
    }
}

fn store_error(e: sled::Error) -> ControlError {
    ControlError::Store(e.to_string())
}

fn decode(bytes: &[u8]) -> Result<VersionRecord, ControlError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ControlError::Store(format!("corrupt version record: {e}")))
}

impl VersionStore for SledVersions {
    fn last(&self) -> Result<Option<VersionRecord>, ControlError> {
        match self.tree.last().map_err(store_error)? {
            Some((_, v)) => decode(&v).map(Some),
            None => Ok(None),
        }
    }

    fn get(&self, version: u64) -> Result<Option<VersionRecord>, ControlError> {
        match self.tree.get(version.to_be_bytes()).map_err(store_error)? {
            Some(v) => decode(&v).map(Some),
            None => Ok(None),
        }
    }

    /// Waits until the version is on disk.
    fn append(&self, record: &VersionRecord) -> Result<(), ControlError> {
        let bytes = serde_json::to_vec(record).map_err(|e| ControlError::Store(e.to_string()))?;
        self.tree
            .insert(record.version.to_be_bytes(), bytes)
            .map_err(store_error)?;
        self.db.flush().map_err(store_error)?;
        Ok(())
    }

    fn newest_first(&self) -> Box<dyn Iterator<Item = Result<VersionRecord, ControlError>> + '_> {
        Box::new(
            self.tree
                .iter()
                .rev()
                .map(|item| item.map_err(store_error).and_then(|(_, v)| decode(&v))),
        )
    }
}
