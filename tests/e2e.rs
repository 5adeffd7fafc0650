//! End-to-end tests: they run the real `arc` binary (CARGO_BIN_EXE_arc)
//! against real directory trees in temporary directories.
//!
//! Run with `cargo test --release -p arc-cli --test e2e` (add
//! `--features fault-injection` for the crash and fault tests), or all of
//! them with `./test.sh`. Tests that need root, /dev/fuse, a database
//! server or a tool say so with `require!` (util.rs): outside CI they are
//! skipped with a `SKIP:` line, under CI (env CI set) they fail.

#[path = "e2e/util.rs"]
#[macro_use]
mod util;

#[path = "e2e/fixture.rs"]
mod fixture;

#[path = "e2e/roundtrip.rs"]
mod roundtrip;

#[path = "e2e/incremental.rs"]
mod incremental;

#[path = "e2e/stdin.rs"]
mod stdin;

#[path = "e2e/integrity.rs"]
mod integrity;

#[path = "e2e/bad_input.rs"]
mod bad_input;

#[path = "e2e/unreadable.rs"]
mod unreadable;

#[path = "e2e/interrupt.rs"]
mod interrupt;

#[path = "e2e/snapshots.rs"]
mod snapshots;

#[path = "e2e/selftest.rs"]
mod selftest;

#[path = "e2e/nochange.rs"]
mod nochange;

#[path = "e2e/retention.rs"]
mod retention;

#[path = "e2e/prune.rs"]
mod prune;

#[path = "e2e/mount.rs"]
mod mount;

#[path = "e2e/command_stream.rs"]
mod command_stream;

#[path = "e2e/dbdump.rs"]
mod dbdump;

#[path = "e2e/killpoints.rs"]
mod killpoints;

#[path = "e2e/diskfull.rs"]
mod diskfull;

#[path = "e2e/durability.rs"]
mod durability;

#[path = "e2e/corruption.rs"]
mod corruption;

#[path = "e2e/concurrency.rs"]
mod concurrency;

#[path = "e2e/sourcechange.rs"]
mod sourcechange;

#[path = "e2e/protocol.rs"]
mod protocol;

#[path = "e2e/pipes.rs"]
mod pipes;

#[path = "e2e/readonly.rs"]
mod readonly;

#[path = "e2e/latest_path.rs"]
mod latest_path;

#[path = "e2e/parent.rs"]
mod parent;

#[path = "e2e/progress.rs"]
mod progress;

#[path = "e2e/select.rs"]
mod select;

#[path = "e2e/everyday.rs"]
mod everyday;

#[path = "e2e/bigdir.rs"]
mod bigdir;

#[path = "e2e/messages.rs"]
mod messages;

#[path = "e2e/format_v1.rs"]
mod format_v1;

#[path = "e2e/shapes.rs"]
mod shapes;

#[path = "e2e/json_docs.rs"]
mod json_docs;

#[path = "e2e/backends.rs"]
mod backends;

#[path = "e2e/remote.rs"]
mod remote;
#[path = "e2e/tamper.rs"]
mod tamper;

#[path = "e2e/modes.rs"]
mod modes;

#[path = "e2e/keys.rs"]
mod keys;

#[path = "e2e/fleet.rs"]
mod fleet;

#[path = "e2e/scale.rs"]
mod scale;

#[path = "e2e/operator.rs"]
mod operator;

#[path = "e2e/reconnect.rs"]
mod reconnect;

#[path = "e2e/remote_operator.rs"]
mod remote_operator;

#[path = "e2e/listing.rs"]
mod listing;

#[path = "e2e/local_operator.rs"]
mod local_operator;
