//! cephdr's test bed: a real kube-apiserver built from Go modules and two real Ceph sites from Debian's
//! packages, all on loopback, started and stopped by pid from Rust. Used by the integration tests, the
//! end-to-end tests, the benchmarks and the demo.
//!
//! Each test binary shares one control plane and one pair of Ceph sites (`shared_*`): starting them per
//! test would cost seconds each. Tests isolate themselves by namespace, pool and bucket names instead.

pub mod ceph;
pub mod controlplane;
pub mod faults;
pub mod namespace;
pub mod operator;
pub mod pki;
pub mod process;

use anyhow::Result;
use tokio::sync::OnceCell;

pub use ceph::{CephSite, CephSites};
pub use controlplane::{install_crds, ControlPlane};
pub use namespace::TestNamespace;

/// The control plane shared by every test in this binary, started on first use.
pub async fn shared_control_plane() -> Result<&'static ControlPlane> {
    static PLANE: OnceCell<ControlPlane> = OnceCell::const_new();
    PLANE
        .get_or_try_init(|| async { tokio::task::spawn_blocking(ControlPlane::start).await? })
        .await
}

/// The two Ceph sites shared by every test in this binary, started on first use.
pub async fn shared_ceph_sites() -> Result<&'static CephSites> {
    static SITES: OnceCell<CephSites> = OnceCell::const_new();
    SITES
        .get_or_try_init(|| async { tokio::task::spawn_blocking(CephSites::start).await? })
        .await
}

/// A name unique to this process and call, for namespaces, pools, buckets and images.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// Sends the operator's logs (`RUST_LOG`, default warnings and cephdr's info) to the test's captured output,
/// so a failing test shows what the controllers saw. Safe to call from every test.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,cephdr=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}
