//! whatsapp-rust's own SQLite device store (its crate owns the schema), in `whatsapp.db`
//! beside ours.

use std::path::Path;
use std::sync::Arc;

use wacore::store::traits::Backend;
use whatsapp_rust_sqlite_storage::SqliteStore;

use crate::store::{Result, StoreError};

fn path_str(path: &Path) -> Result<&str> {
    path.to_str().ok_or_else(|| {
        StoreError::Invalid(format!(
            "the device store path {} is not valid UTF-8",
            path.display()
        ))
    })
}

fn failed(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Invalid(format!("{what}: {e}"))
}

/// Creates (or migrates) the device store's schema in the file at `path`.
pub async fn prepare(path: &Path) -> Result<()> {
    SqliteStore::new(path_str(path)?)
        .await
        .map(drop)
        .map_err(|e| failed("cannot set up the WhatsApp device store", e))
}

/// The store of one device in the file at `path`.
pub async fn open(path: &Path, device_id: i32) -> Result<Arc<dyn Backend>> {
    let store = SqliteStore::new_for_device(path_str(path)?, device_id)
        .await
        .map_err(|e| failed("cannot open the WhatsApp device store", e))?;
    Ok(Arc::new(store))
}
