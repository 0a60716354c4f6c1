//! A fault hook for sandbox builds (cargo feature `sandbox`): [`panic_session`] makes one
//! running session's actor panic, so a test can show that the panic stays inside that
//! session (the supervisor reports it `failed` and restarts it) while the others carry on.
//!
//! No input reaches a panic in the session code, so there is no real way to cause one from
//! outside; this hook exists for that proof only. Production builds have no way to arm it:
//! there [`armed`] is a future that never completes.

#[cfg(feature = "sandbox")]
mod imp {
    use std::collections::BTreeSet;
    use std::sync::Mutex;

    use tokio::sync::Notify;

    static ARMED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    static WAKE: Notify = Notify::const_new();

    /// Makes the actor of session `id` panic at its next turn (only while it is running a
    /// connection). Sandbox builds only.
    pub fn panic_session(id: &str) {
        ARMED
            .lock()
            .expect("fault registry lock")
            .insert(id.to_owned());
        WAKE.notify_waiters();
    }

    /// Completes once a panic has been requested for session `id` (and takes the request).
    pub(crate) async fn armed(id: &str) {
        loop {
            let woken = WAKE.notified();
            if ARMED.lock().expect("fault registry lock").remove(id) {
                return;
            }
            woken.await;
        }
    }
}

#[cfg(feature = "sandbox")]
pub(crate) use imp::armed;
#[cfg(feature = "sandbox")]
pub use imp::panic_session;

#[cfg(not(feature = "sandbox"))]
pub(crate) async fn armed(_id: &str) {
    std::future::pending::<()>().await
}
