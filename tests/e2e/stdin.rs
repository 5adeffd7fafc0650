//! Streams from stdin (`arc backup --stdin --stdin-name ...`).

use std::fs;

use crate::util::*;

/// ~30 MiB mixing random blocks, repetitive text and repeats of earlier
/// blocks, with an odd total length.
fn stream_data() -> Vec<u8> {
    let mut rng = Rng::new(0xDB);
    let mut out = Vec::with_capacity(31 * MIB as usize);
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    for i in 0..28u64 {
        let block = match i % 4 {
            0 | 1 => rng.bytes(MIB as usize + (i as usize) * 17),
            2 => repetitive_text(MIB as usize, i),
            _ => blocks[rng.below(blocks.len() as u64) as usize].clone(),
        };
        out.extend_from_slice(&block);
        blocks.push(block);
    }
    let rest = (30 * MIB as usize + 12_345).saturating_sub(out.len());
    out.extend_from_slice(&rng.bytes(rest));
    out
}

#[test]
fn stdin_stream_backup_cat_restore_ls() {
    let env = TestEnv::new();
    env.init();
    let data = stream_data();
    assert!(data.len() > 30 * MIB as usize);

    let out = env
        .arc()
        .args(["--json", "backup", "--stdin", "--stdin-name", "db/dump.sql"])
        .stdin_bytes(data.clone())
        .run()
        .success();
    let b = out.json();
    assert_eq!(b["paths"], serde_json::json!(["/db/dump.sql"]), "{b:#}");
    assert_eq!(ju64(&b, "summary.total_bytes"), data.len() as u64, "{b:#}");
    assert_eq!(ju64(&b, "summary.total_files"), 1, "{b:#}");
    assert_eq!(ju64(&b, "summary.bytes_read"), data.len() as u64, "{b:#}");
    // Repeated blocks and text compress/deduplicate: stored well below raw.
    assert!(
        ju64(&b, "summary.bytes_added_stored") < data.len() as u64 * 9 / 10,
        "repetitive stream stored at nearly full size: {b:#}"
    );

    for spec in ["latest:db/dump.sql", "latest:/db/dump.sql"] {
        let cat = env.arc().args(["cat", spec]).run().success();
        assert_eq!(cat.stdout.len(), data.len(), "length of `arc cat {spec}`");
        assert!(cat.stdout == data, "`arc cat {spec}` differs from what was piped in");
    }

    let target = env.path("restore");
    env.restore("latest", &target);
    let restored_file = target.join("db/dump.sql");
    let got = fs::read(&restored_file).unwrap_or_else(|e| panic!("{}: {e}", restored_file.display()));
    assert!(got == data, "restored db/dump.sql differs from the stream");

    let ls = env.arc().args(["ls", "latest", "/db"]).run().success();
    assert!(
        ls.stdout_str().lines().any(|l| l.trim_end().ends_with("db/dump.sql")),
        "`arc ls latest /db` does not list dump.sql\n{}",
        ls.describe()
    );
    let ls_root = env.arc().args(["ls", "latest"]).run().success();
    assert!(
        ls_root.stdout_str().lines().any(|l| l.trim_end().ends_with("/db")),
        "`arc ls latest` does not list /db\n{}",
        ls_root.describe()
    );
}
