//! The parent of a backup (for change detection) is the newest snapshot of
//! the same host that backed up the same files, streams aside: adding or
//! dropping a --command-stream does not make a backup read every file again.

use std::fs;

use crate::util::*;

#[test]
fn parent_is_kept_across_an_added_and_a_dropped_stream() {
    let env = TestEnv::new();
    let www = env.path("www");
    for i in 0..20 {
        write_random_file(&www.join(format!("site/f{i}.bin")), 100_000, i);
    }
    let other = env.path("other");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("x"), b"x").unwrap();
    env.init();
    let first = env.backup([&www]);
    let first_id = jstr(&first, "snapshot_id").to_string();

    // A stream added: same files, so the files-only snapshot is the parent
    // and nothing but the stream is read.
    let with_stream = env.backup([www.as_os_str(), "--command-stream".as_ref(), "mysql/shop.sql=echo dump".as_ref()]);
    assert_eq!(with_stream["parent"], first_id.as_str(), "{with_stream:#}");
    assert_eq!(ju64(&with_stream, "summary.files_unchanged"), 20, "{with_stream:#}");
    assert_eq!(ju64(&with_stream, "summary.bytes_read"), 5, "only the stream is read: {with_stream:#}");

    // The stream dropped again: the snapshot with the stream is the parent.
    let without = env.backup([&www]);
    assert_eq!(without["parent"], jstr(&with_stream, "snapshot_id"), "{without:#}");
    assert_eq!(ju64(&without, "summary.bytes_read"), 0, "{without:#}");

    // Other files are not streams: a snapshot of www and other is not the
    // parent of a backup of www alone.
    let both = env.backup([&www, &other]);
    let alone = env.backup([&www]);
    assert_ne!(alone["parent"], jstr(&both, "snapshot_id"), "{alone:#}");
    assert_eq!(alone["parent"], jstr(&without, "snapshot_id"), "{alone:#}");
}
