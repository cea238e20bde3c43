//! Shared by the integration tests: the embedded cluster as a user starts
//! it (`ephemera_cluster_tests::dev`), and where the repository is.

#![allow(dead_code, unused_imports)]

use std::path::{Path, PathBuf};

pub use ephemera_cluster_tests::dev::{ephemera, DevCluster};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}
