//! Golden vectors of the v2 protocol's files (format-spec/v2/protocol.md
//! §2): a session file, pinned both ways (raw envelope), and a prune mark,
//! frozen and decode-only (its payload is zstd, whose output may change
//! between zstd versions). `ARC_REGENERATE_VECTORS=1` rewrites them, for an
//! intended format change only.

use std::path::PathBuf;

use arc_engine::format::mark::{self, MarkFile, MarkedPack};
use arc_engine::format::session::{self, SessionFile};
use arc_engine::Id;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../format-spec/vectors/v2")
}

fn regenerate() -> bool {
    std::env::var("ARC_REGENERATE_VECTORS").is_ok_and(|v| v == "1")
}

fn time(s: &str) -> chrono::DateTime<chrono::Utc> {
    s.parse().unwrap()
}

/// Annotated hex: `#` comments, whitespace ignored.
fn parse_hex(text: &str) -> Vec<u8> {
    let digits: String = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.chars())
        .filter(|c| !c.is_whitespace())
        .collect();
    hex::decode(digits).expect("hex vector")
}

fn to_hex(about: &str, bytes: &[u8]) -> String {
    let mut out = format!("# {about}\n");
    for line in bytes.chunks(32) {
        out.push_str(&hex::encode(line));
        out.push('\n');
    }
    out
}

fn golden_session() -> SessionFile {
    SessionFile {
        session: Id::hash(b"golden session"),
        operation: "backup".into(),
        host: "golden".into(),
        username: "arc".into(),
        pid: 4242,
        started: time("2026-01-02T03:04:05Z"),
        started_storage: Some(time("2026-01-02T03:04:06.5Z")),
    }
}

fn golden_mark() -> MarkFile {
    MarkFile {
        prune_session: Id::hash(b"golden prune"),
        host: "golden".into(),
        created: time("2026-01-03T00:00:00Z"),
        packs: vec![
            MarkedPack { id: Id::hash(b"pack one"), len: 1_048_576 },
            MarkedPack { id: Id::hash(b"pack two"), len: 123 },
        ],
    }
}

#[test]
fn session_file_is_pinned_both_ways() {
    let s = golden_session();
    let bytes = session::encode(&s);
    let path = dir().join("session.hex");
    if regenerate() {
        std::fs::create_dir_all(dir()).unwrap();
        std::fs::write(
            &path,
            to_hex("a whole session file: envelope type 5, version 1, raw, around compact JSON", &bytes),
        )
        .unwrap();
    }
    let want = parse_hex(&std::fs::read_to_string(&path).expect("format-spec/vectors/v2/session.hex"));
    assert_eq!(bytes, want, "the session encoding changed");
    assert_eq!(session::decode(&want, &s.session.to_hex()).unwrap(), s);
}

#[test]
fn prune_mark_is_frozen() {
    let path = dir().join("mark.hex");
    if regenerate() {
        std::fs::create_dir_all(dir()).unwrap();
        let bytes = mark::encode(&golden_mark());
        std::fs::write(
            &path,
            to_hex(
                &format!(
                    "a whole prune mark (envelope type 6, version 1, zstd, JSON); its name is {}",
                    Id::hash(&bytes)
                ),
                &bytes,
            ),
        )
        .unwrap();
    }
    let data = parse_hex(&std::fs::read_to_string(&path).expect("format-spec/vectors/v2/mark.hex"));
    assert_eq!(mark::decode(&data, &Id::hash(&data).to_hex()).unwrap(), golden_mark());
}
