//! Test-only failpoints: a flow can be parked at a named step so a test can kill the process
//! exactly there.
//!
//! With the `failpoints` feature, a failpoint checks the environment variable
//! `TROVE_GUEST_FAILPOINTS` (comma-separated step names, read once). When the step is listed it
//! creates the file `<TROVE_GUEST_FAILPOINT_DIR>/<step>` (so a test knows the flow is parked)
//! and then waits forever. Without the feature it does nothing.

/// Parks the flow at step `name` when the test environment asks for it (feature `failpoints`);
/// otherwise returns at once.
///
/// # Cancel safety
///
/// Cancel safe.
pub async fn failpoint(name: &str) {
    if failpoint_armed(name) {
        std::future::pending::<()>().await;
    }
}

/// Whether step `name` is armed (feature `failpoints`); when it is, the parked file is written
/// and the caller must park. Always false without the feature.
pub fn failpoint_armed(name: &str) -> bool {
    #[cfg(feature = "failpoints")]
    {
        use std::sync::OnceLock;
        static ARMED: OnceLock<Vec<String>> = OnceLock::new();
        let armed = ARMED.get_or_init(|| {
            std::env::var("TROVE_GUEST_FAILPOINTS")
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        });
        if armed.iter().any(|a| a == name) {
            tracing::warn!(failpoint = name, "parked at a failpoint");
            if let Some(dir) = std::env::var_os("TROVE_GUEST_FAILPOINT_DIR") {
                let _ = std::fs::write(std::path::Path::new(&dir).join(name), b"parked\n");
            }
            return true;
        }
        false
    }
    #[cfg(not(feature = "failpoints"))]
    {
        let _ = name;
        false
    }
}
