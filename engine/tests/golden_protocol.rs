//! Golden vectors of the v2 protocol's files (format-spec/v2/protocol.md
//! §2), sealed with the master secret of the other v2 vectors: a session
//! file, pinned both ways (its envelope, and the sealed file with a fixed
//! nonce), and a prune mark, frozen and decode-only (its payload is zstd,
//! whose output may change between zstd versions, and its nonce random). `ARC_REGENERATE_VECTORS=1` rewrites them, for an
//! intended format change only.

use std::path::PathBuf;

use arc_engine::crypto::{Keys, MasterSecret, Purpose};
use arc_engine::format::mark::{self, MarkFile, MarkedPack};
use arc_engine::format::sealed;
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

/// The master secret of the v2 golden vectors (golden_v2.rs): 00 01 .. 1f.
fn keys() -> Keys {
    let mut m = [0u8; 32];
    for (i, b) in m.iter_mut().enumerate() {
        *b = i as u8;
    }
    Keys::derive(&MasterSecret::from_bytes(m))
}

/// A sealed file as protocol.md §2 and crypto.md §5.1 write it out: header,
/// then the box of the envelope with the header and `ad` bound.
fn sealed_with_nonce(purpose: Purpose, ad: &[u8], envelope: &[u8], nonce: [u8; 24]) -> Vec<u8> {
    let header = *b"ARCS\x01\x00\x00\x00";
    let full_ad = [header.as_slice(), ad].concat();
    [header.to_vec(), keys().seal_with_nonce(purpose, &full_ad, envelope, nonce).unwrap()].concat()
}

#[test]
fn session_file_is_pinned_both_ways() {
    let s = golden_session();
    let name = s.session.to_hex();
    // What the engine writes opens (with the session's name bound) to the
    // pinned envelope; the envelope is deterministic, the box is not (its
    // nonce is random), so the box is pinned with a fixed nonce below.
    let written = session::encode(&keys(), &s).unwrap();
    let envelope = sealed::open_file(&keys(), Purpose::SESSION, name.as_bytes(), &written, "session", &name).unwrap();
    let sealed = sealed_with_nonce(Purpose::SESSION, name.as_bytes(), &envelope, [0x51; 24]);
    let (env_path, path) = (dir().join("session-envelope.hex"), dir().join("session.hex"));
    if regenerate() {
        std::fs::create_dir_all(dir()).unwrap();
        std::fs::write(
            &env_path,
            to_hex("a session file's envelope: type 6, version 1, raw, around compact JSON", &envelope),
        )
        .unwrap();
        std::fs::write(
            &path,
            to_hex(
                &format!(
                    "a whole session file {name}: the envelope of session-envelope.hex sealed \
                     (purpose \"session\", ad = header || name); master 00..1f, nonce 24*0x51"
                ),
                &sealed,
            ),
        )
        .unwrap();
    }
    let want_env = parse_hex(&std::fs::read_to_string(&env_path).expect("format-spec/vectors/v2/session-envelope.hex"));
    assert_eq!(envelope, want_env, "the session encoding changed");
    let want = parse_hex(&std::fs::read_to_string(&path).expect("format-spec/vectors/v2/session.hex"));
    assert_eq!(sealed, want, "the session sealing changed");
    assert_eq!(session::decode(&keys(), &want, &name).unwrap(), s);
    // The name is bound: the same bytes under another session's name fail.
    assert!(session::decode(&keys(), &want, &Id::hash(b"another session").to_hex()).is_err());
}

#[test]
fn prune_mark_is_frozen() {
    let path = dir().join("mark.hex");
    if regenerate() {
        std::fs::create_dir_all(dir()).unwrap();
        let bytes = mark::encode(&keys(), &golden_mark()).unwrap();
        std::fs::write(
            &path,
            to_hex(
                &format!(
                    "a whole prune mark (envelope type 7, version 1, zstd, JSON; sealed, purpose \"prune mark\", \
                     master 00..1f, random nonce); its name is {}",
                    Id::hash(&bytes)
                ),
                &bytes,
            ),
        )
        .unwrap();
    }
    let data = parse_hex(&std::fs::read_to_string(&path).expect("format-spec/vectors/v2/mark.hex"));
    assert_eq!(mark::decode(&keys(), &data, &Id::hash(&data).to_hex()).unwrap(), golden_mark());
    // A mark sealed for this repository does not open as another kind.
    assert!(sealed::open_file(&keys(), Purpose::SNAPSHOT, &[], &data, "snapshot", "mark").is_err());
}
