//! Where Ephemera's in-instance pieces live inside the images it builds:
//! the instance image (`ephemera/python`) holds the proxy, the intercept
//! library and the launchers at these paths, and the docker runtime starts
//! containers from it with these paths. The image builder (`xtask images`)
//! and the runtime both read them from here.

/// Root of Ephemera's files in an instance image.
pub const OPT_DIR: &str = "/opt/ephemera";
/// The proxy inside an instance image.
pub const PROXY: &str = "/opt/ephemera/bin/ephemera-proxy";
/// The intercept library inside an instance image.
pub const INTERCEPT: &str = "/opt/ephemera/lib/libephemera_intercept.so";
/// The launchers (`ephemera-python`) inside an instance image.
pub const BIN_DIR: &str = "/opt/ephemera/bin";
/// The empty image host-rootfs instances start from (host dirs mounted in).
pub const HOST_ROOTFS_IMAGE: &str = "ephemera/host-rootfs:latest";
/// Repository of the image holding the static `ephemera` binaries.
pub const EPHEMERA_IMAGE_REPO: &str = "ephemera/ephemera";
/// Repository of the Python instance image.
pub const PYTHON_IMAGE_REPO: &str = "ephemera/python";
/// Repository of the OTLP collector's image (`ephemera-collector`).
pub const COLLECTOR_IMAGE_REPO: &str = "ephemera/otel-collector";
/// Environment variable naming the proxy binary (set in the instance image).
pub const PROXY_ENV: &str = "EPHEMERA_PROXY_BIN";
/// Environment variable naming the intercept library (set in the instance image).
pub const INTERCEPT_ENV: &str = "EPHEMERA_INTERCEPT_LIB";
