//! openraft's own storage conformance suite, on the sled store and on the in-memory engine.

use std::sync::Arc;

use ephemera_storage::{
    open_store, open_store_with, LogStore, MemKv, RaftStorageError, StateMachineStore, TypeConfig,
};
use openraft::testing::{StoreBuilder, Suite};
use tempfile::TempDir;

/// Each store in a fresh directory; the `TempDir` guard outlives the test that uses the store.
struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for SledBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), RaftStorageError> {
        let dir = tempfile::tempdir().expect("create a temp dir");
        let (log, sm) = open_store(dir.path()).await.expect("open the sled store");
        Ok((dir, log, sm))
    }
}

struct MemBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore> for MemBuilder {
    async fn build(&self) -> Result<((), LogStore, StateMachineStore), RaftStorageError> {
        let (log, sm) = open_store_with(Arc::new(MemKv::new()))
            .await
            .expect("open the in-memory store");
        Ok(((), log, sm))
    }
}

#[test]
fn sled_store_passes_the_openraft_suite() {
    Suite::test_all(SledBuilder).expect("openraft storage suite on the sled store");
}

#[test]
fn mem_store_passes_the_openraft_suite() {
    Suite::test_all(MemBuilder).expect("openraft storage suite on the in-memory store");
}
