//! The web UI and the Socket.IO feed, tested from the outside: `scripts/ui-test` installs
//! Chromium and the pinned Node packages if missing, then runs `node --test` in
//! `crates/wamux/tests/ui` against the `wamux` binary cargo built for this test run (with
//! the `sandbox` feature, which `wamux sandbox` needs). Node's own report is the output.

use std::path::Path;
use std::process::Command;

#[test]
fn web_ui_and_socketio_feed_pass_their_browser_and_client_tests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let status = Command::new("bash")
        .arg(root.join("scripts/ui-test"))
        .env("WAMUX_BIN", env!("CARGO_BIN_EXE_wamux"))
        .status()
        .expect("cannot run scripts/ui-test");
    assert!(
        status.success(),
        "the UI / Socket.IO tests failed ({status}); their report is above"
    );
}
