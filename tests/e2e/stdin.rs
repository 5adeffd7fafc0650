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

/// A pg_dump-like table; each `day` after 0 changes 1 % of the rows (a
/// different 1 % each day) at places spread over the table and appends
/// 0.5 %.
fn table_dump(rows: usize, day: usize) -> Vec<u8> {
    let mut rng = Rng::new(0x5EED);
    let mut out = b"COPY public.orders (id, customer, amount, status) FROM stdin;\n".to_vec();
    for i in 0..rows + day * rows / 200 {
        let (c, amount) = (rng.below(200_000), rng.below(5_000_000));
        let changed = day > 0 && i < rows && i % 100 == 36 + day;
        let status = if changed { "returned" } else { ["paid", "new", "shipped"][i % 3] };
        out.extend_from_slice(format!("{i}\t{c}\t{amount}\t{status}\tnote {}\n", i % 977).as_bytes());
    }
    out.extend_from_slice(b"\\.\n");
    out
}

fn dir_bytes(p: &std::path::Path) -> u64 {
    fs::read_dir(p).map_or(0, |rd| {
        rd.flatten()
            .map(|e| if e.file_type().unwrap().is_dir() { dir_bytes(&e.path()) } else { e.metadata().unwrap().len() })
            .sum()
    })
}

/// Stream deltas (format-spec/v2/streams.md section 4): day 2 of a dump
/// whose rows changed here and there is stored as deltas against day 1,
/// and both days read back byte for byte through cat, restore and the
/// mount, and check --read-data. Day 3 with `--no-stream-deltas` is stored
/// plainly, whole again, and reads back too.
#[test]
fn a_two_day_stdin_dump_series_stores_day_2_as_deltas() {
    require!(Need::Fuse);
    let env = TestEnv::new();
    env.init();
    let (day1, day2) = (table_dump(120_000, 0), table_dump(120_000, 1));
    let backup = |data: &Vec<u8>| {
        let out = env.arc().args(["--json", "backup", "--stdin", "--stdin-name", "db.sql"]).stdin_bytes(data.clone());
        jstr(&out.run().success().json(), "short_id").to_string()
    };
    let s1 = backup(&day1);
    let after1 = dir_bytes(&env.repo.join("data"));
    let s2 = backup(&day2);
    let added = dir_bytes(&env.repo.join("data")) - after1;
    // Without deltas every chunk holds a changed row and day 2 is stored
    // again in full (day 3 below: over 80 %). With them it is typically a
    // few %; now and then one chunk finds no counterpart and is stored
    // plainly (12 % of day 1 in one run of ten), hence a fifth.
    assert!(added * 5 < after1, "day 2 added {added} bytes to day 1's {after1}");
    let config = fs::read(env.repo.join("config")).unwrap();
    assert!(String::from_utf8_lossy(&config).contains("stream-deltas"), "init lists the feature");
    // Day 3 changes another 1 % of the rows, so again every chunk; told
    // not to, the backup stores them plainly: about day 1's size again.
    let day3 = table_dump(120_000, 2);
    let before3 = dir_bytes(&env.repo.join("data"));
    let out = env
        .arc()
        .args(["--json", "backup", "--stdin", "--stdin-name", "db.sql", "--no-stream-deltas"])
        .stdin_bytes(day3.clone())
        .run()
        .success();
    let s3 = jstr(&out.json(), "short_id").to_string();
    let added3 = dir_bytes(&env.repo.join("data")) - before3;
    assert!(added3 * 10 > after1 * 8, "--no-stream-deltas: day 3 added {added3} bytes to day 1's {after1}");
    for (s, data) in [(&s1, &day1), (&s2, &day2), (&s3, &day3)] {
        let out = env.arc().args(["cat", &format!("{s}:db.sql")]).run().success();
        assert!(out.stdout == *data, "cat of {s} differs");
    }
    let target = env.path("restore");
    env.arc().args(["restore", &s2, "--target"]).arg(&target).run().success();
    assert!(fs::read(target.join("db.sql")).unwrap() == day2, "restore of day 2 differs");
    env.arc().args(["check", "--read-data"]).run().success();
    let m = crate::mount::Mounted::start(&env, &env.path("mnt"));
    let names: Vec<String> = fs::read_dir(m.path("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 3);
    // By id, not by order: the three backups may share a second, and the
    // names (time, then short id) then sort by id.
    for (s, data) in [(&s1, &day1), (&s2, &day2)] {
        let name = names.iter().find(|n| n.ends_with(s.as_str())).unwrap_or_else(|| panic!("no {s} in {names:?}"));
        assert!(fs::read(m.path("snapshots").join(name).join("db.sql")).unwrap() == *data, "{name}/db.sql differs");
    }
    m.stop();
}
