//! Golden vectors of format v2's cryptography (format-spec/v2/crypto.md
//! section 7): subkeys and keyed ids, a key file, a sealed frame and a
//! sealed file. Each is rebuilt from fixed inputs and compared byte for
//! byte with `format-spec/vectors/v2/`, recomputed independently from the
//! spec's rules (BLAKE3 contexts, AEAD layout) with the primitive crates,
//! and opened by the engine. `ARC_REGENERATE_VECTORS=1` rewrites them.

use std::path::PathBuf;

use arc_engine::crypto::{Keys, MasterSecret, Purpose};
use arc_engine::format::key_file::{KeyFile, Protection};
use arc_engine::format::sealed;
use arc_engine::Id;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../format-spec/vectors/v2")
}

fn regenerate() -> bool {
    std::env::var("ARC_REGENERATE_VECTORS").is_ok_and(|v| v == "1")
}

/// Compares `text` with the vector file, writing it first when
/// regenerating.
fn pin(name: &str, text: &str) {
    let path = dir().join(name);
    if regenerate() {
        std::fs::create_dir_all(dir()).unwrap();
        std::fs::write(&path, text).unwrap();
    }
    let golden = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(text, golden, "{name}: the engine differs from the golden vector");
}

fn hex_lines(bytes: &[u8]) -> String {
    bytes.chunks(32).map(|c| format!("{}\n", hex::encode(c))).collect()
}

fn master() -> MasterSecret {
    let mut m = [0u8; 32];
    for (i, b) in m.iter_mut().enumerate() {
        *b = i as u8;
    }
    MasterSecret::from_bytes(m)
}

fn derive(ctx: &str) -> [u8; 32] {
    blake3::derive_key(ctx, master().as_bytes())
}

/// The spec's sealing, written out with the AEAD crate alone.
fn spec_seal(key: [u8; 32], label: &str, ad: &[u8], nonce: [u8; 24], plain: &[u8]) -> Vec<u8> {
    let mut aad = b"arc2".to_vec();
    aad.push(label.len() as u8);
    aad.extend_from_slice(label.as_bytes());
    aad.extend_from_slice(ad);
    let ct = XChaCha20Poly1305::new(&key.into())
        .encrypt(XNonce::from_slice(&nonce), Payload { msg: plain, aad: &aad })
        .unwrap();
    [nonce.to_vec(), ct].concat()
}

#[test]
fn subkeys_and_keyed_ids() {
    let keys = Keys::derive(&master());
    let mut text =
        String::from("# format v2 subkeys and keyed ids (crypto.md 2.1, 4); master secret = bytes 00 01 .. 1f\n");
    let id_key = derive("arc 2026-12 format v2 chunk id");
    for input in [&b""[..], b"arc", &[0xAB; 1000][..]] {
        let id = keys.chunk_id(input);
        assert_eq!(id.0, *blake3::keyed_hash(&id_key, input).as_bytes());
        assert_ne!(id, Id::hash(input), "keyed ids differ from plain BLAKE3");
        text += &format!("chunk_id({} bytes: {}) = {}\n", input.len(), hex::encode(&input[..input.len().min(4)]), id);
    }
    let gear = derive("arc 2026-12 format v2 chunker gear seed");
    assert_eq!(keys.gear_seed(), u64::from_le_bytes(gear[..8].try_into().unwrap()));
    text += &format!("gear_seed = {:#018x}\n", keys.gear_seed());
    let split = derive("arc 2026-12 format v2 tree split");
    assert_eq!(keys.tree_split_key(), split);
    text += &format!("tree_split_key = {}\n", hex::encode(split));
    let mac = keys.config_mac(b"{\"version\":2}");
    assert_eq!(mac, *blake3::keyed_hash(&derive("arc 2026-12 format v2 config mac"), b"{\"version\":2}").as_bytes());
    text += &format!("config_mac({{\"version\":2}}) = {}\n", hex::encode(mac));
    pin("subkeys.txt", &text);
}

#[test]
fn sealed_frame() {
    let keys = Keys::derive(&master());
    let stored = b"a frame's stored bytes (zstd or raw)".to_vec();
    let nonce = [0x24u8; 24];
    // Padded plaintext: length prefix, bytes, zeros up to padme(4 + len).
    let inner_len = arc_engine::crypto::padme(4 + stored.len() as u64) as usize;
    let mut inner = (stored.len() as u32).to_le_bytes().to_vec();
    inner.extend_from_slice(&stored);
    inner.resize(inner_len, 0);
    let engine = keys.seal_with_nonce(Purpose::BLOB_FRAME, &[], &inner, nonce).unwrap();
    let spec = spec_seal(derive("arc 2026-12 format v2 data sealing"), "blob frame", &[], nonce, &inner);
    assert_eq!(engine, spec);
    assert_eq!(engine.len(), sealed::sealed_frame_len(stored.len()));
    assert_eq!(sealed::open_frame(&keys, &engine, "golden", 8).unwrap(), stored);
    pin(
        "sealed-frame.hex",
        &format!(
            "# a sealed pack frame (crypto.md 5.2): master 00..1f, nonce 24*0x24,\n# stored = {:?} ({} bytes), padded to {inner_len}\n{}",
            String::from_utf8_lossy(&stored),
            stored.len(),
            hex_lines(&engine)
        ),
    );
}

#[test]
fn sealed_file() {
    let keys = Keys::derive(&master());
    let plain = b"ARCF: the v1 envelope of the file goes here".to_vec();
    let nonce = [0x42u8; 24];
    let header = *b"ARCS\x01\x00\x00\x00";
    let engine = [header.to_vec(), keys.seal_with_nonce(Purpose::SNAPSHOT, &header, &plain, nonce).unwrap()].concat();
    let spec = [
        header.to_vec(),
        spec_seal(derive("arc 2026-12 format v2 metadata sealing"), "snapshot", &header, nonce, &plain),
    ]
    .concat();
    assert_eq!(engine, spec);
    assert_eq!(sealed::open_file(&keys, Purpose::SNAPSHOT, &[], &engine, "snapshot", "golden").unwrap(), plain);
    assert!(sealed::open_file(&keys, Purpose::LOCK, &[], &engine, "lock", "golden").is_err());
    pin(
        "sealed-snapshot.hex",
        &format!("# a sealed snapshot file (crypto.md 5.1): master 00..1f, nonce 24*0x42\n{}", hex_lines(&engine)),
    );
}

#[test]
fn key_file_wrapping() {
    let repo_id = Id::hash(b"arc golden repository v2");
    let protection = Protection::Passphrase {
        passphrase: Zeroizing::new("arc golden passphrase".into()),
        m_cost_kib: 64,
        t_cost: 1,
        p_cost: 1,
    };
    let created = chrono::DateTime::parse_from_rfc3339("2026-12-01T00:00:00Z").unwrap().with_timezone(&chrono::Utc);
    let key = KeyFile::create_with(
        &master(),
        repo_id,
        &protection,
        "golden".into(),
        "arc".into(),
        created,
        [0x5A; 32],
        [0x11; 24],
    )
    .unwrap();
    // The spec's wrapping: Argon2id, then XChaCha20-Poly1305 with the
    // repository id in the associated data.
    let mut kek = [0u8; 32];
    argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon2::Params::new(64, 1, 1, Some(32)).unwrap(),
    )
    .hash_password_into(b"arc golden passphrase", &[0x5A; 32], &mut kek)
    .unwrap();
    let aad = [&b"arc2 key file"[..], &repo_id.0].concat();
    let ct = XChaCha20Poly1305::new(&kek.into())
        .encrypt(XNonce::from_slice(&[0x11; 24]), Payload { msg: master().as_bytes(), aad: &aad })
        .unwrap();
    assert_eq!(key.wrapped, hex::encode([vec![0x11; 24], ct].concat()));
    let bytes = key.encode();
    let decoded = KeyFile::decode(&bytes, "golden").unwrap();
    assert_eq!(
        decoded.unwrap_master(Some("arc golden passphrase"), "golden").unwrap().unwrap().as_bytes(),
        master().as_bytes()
    );
    assert!(decoded.unwrap_master(Some("wrong"), "golden").unwrap().is_none());
    pin(
        "key-file.hex",
        &format!(
            "# a key file (crypto.md 2.2): envelope type 5 around JSON; passphrase \"arc golden passphrase\",\n\
             # master 00..1f, salt 32*0x5a, nonce 24*0x11, Argon2id m=64 KiB t=1 p=1; id = {}\n{}",
            Id::hash(&bytes),
            hex_lines(&bytes)
        ),
    );
}

/// Writers use four Argon2id lanes, computed in parallel (argon2's
/// `parallel` feature): RFC 9106's own Argon2id vector (section 5.3: four
/// lanes, 32 KiB, 3 passes) must come out of this build byte for byte, so
/// the parallel lanes cannot silently derive another key than a reader
/// elsewhere would.
#[test]
fn argon2id_four_lanes_match_rfc_9106() {
    let params = argon2::ParamsBuilder::new()
        .m_cost(32)
        .t_cost(3)
        .p_cost(4)
        .data(argon2::AssociatedData::new(&[0x04; 12]).unwrap())
        .output_len(32)
        .build()
        .unwrap();
    let argon =
        argon2::Argon2::new_with_secret(&[0x03; 8], argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .unwrap();
    let mut tag = [0u8; 32];
    argon.hash_password_into(&[0x01; 32], &[0x02; 16], &mut tag).unwrap();
    assert_eq!(hex::encode(tag), "0d640df58d78766c08c037a34a8b53c9d01ef0452d75b65eb52520e96b01e659");
}

/// The sealed `content_keys` of a config (crypto.md 2.4): the content keys
/// of master 00..1f sealed for a repository whose master is 20..3f and
/// whose config id is 32 * 0x11, nonce 24 * 0x33.
#[test]
fn content_keys() {
    use arc_engine::format::content_keys;
    let source = Keys::derive(&master());
    let mut m = [0u8; 32];
    for (i, b) in m.iter_mut().enumerate() {
        *b = 0x20 + i as u8;
    }
    let target_master = MasterSecret::from_bytes(m);
    let target = Keys::derive(&target_master);
    let config_id = Id([0x11; 32]);
    let nonce = [0x33u8; 24];
    let engine = content_keys::seal_with_nonce(&target, &config_id, &source.content_keys(), nonce).unwrap();
    // The spec's rule, rebuilt from the primitives: version 1, the two keys,
    // the gear seed, sealed with the target's metadata key.
    let mut plain = vec![1u8];
    plain.extend_from_slice(&derive("arc 2026-12 format v2 chunk id"));
    plain.extend_from_slice(&derive("arc 2026-12 format v2 tree split"));
    plain.extend_from_slice(&source.gear_seed().to_le_bytes());
    let metadata_key = blake3::derive_key("arc 2026-12 format v2 metadata sealing", target_master.as_bytes());
    let spec = spec_seal(metadata_key, "content keys", &config_id.0, nonce, &plain);
    assert_eq!(engine, hex::encode(&spec));
    let opened = content_keys::open(&target, &config_id, &engine).unwrap();
    let shared = Keys::derive(&target_master).with_content_keys(opened);
    assert_eq!(shared.chunk_id(b"arc"), source.chunk_id(b"arc"));
    assert_eq!(shared.gear_seed(), source.gear_seed());
    assert_eq!(shared.tree_split_key(), source.tree_split_key());
    pin(
        "content-keys.txt",
        &format!(
            "# a config's sealed content_keys (crypto.md 2.4): the content keys of master 00..1f,\n\
             # sealed for the repository of master 20..3f and config id 32*0x11, nonce 24*0x33;\n\
             # the config stores this hex string as \"content_keys\"\n{engine}\n"
        ),
    );
}

/// The base and the chunk of the delta vector: rows of a table, the chunk
/// with row 17 changed and a row appended (streams.md section 4).
fn delta_vector_rows() -> (Vec<u8>, Vec<u8>) {
    let row =
        |i: usize, status: &str| format!("{i}\t{}\talpha.bravo{}@example.com\t{status}\n", i * 7919 % 1000, i % 97);
    let base: String = (0..40).map(|i| row(i, "paid")).collect();
    let chunk: String = (0..41).map(|i| row(i, if i == 17 { "returned" } else { "paid" })).collect();
    (base.into_bytes(), chunk.into_bytes())
}

/// A delta frame and its base (streams.md section 4.3, crypto.md 5): the
/// zstd delta is read from the vector (zstd's output may change between
/// zstd versions; its decoding may not) unless regenerating; the sealing
/// is rebuilt both ways.
#[test]
fn delta_frame() {
    use arc_engine::format::delta;
    let keys = Keys::derive(&master());
    let (base, chunk) = delta_vector_rows();
    let (base_id, chunk_id) = (keys.chunk_id(&base), keys.chunk_id(&chunk));
    let path = dir().join("delta-frame.hex");
    let d = if regenerate() {
        delta::compress(&base, &chunk, 3).unwrap()
    } else {
        let text = std::fs::read_to_string(&path).unwrap();
        let line = text.lines().find_map(|l| l.strip_prefix("# delta = ")).expect("a delta line");
        hex::decode(line).unwrap()
    };
    assert!(d.len() * 4 < zstd::bulk::compress(&chunk, 3).unwrap().len(), "the vector's delta is a real delta");
    assert_eq!(delta::decompress(&d, &base, chunk.len() as u32, "golden", 8).unwrap(), chunk);
    let nonce = [0x44u8; 24];
    let engine = delta::seal_with_nonce(&keys, &base_id, &d, nonce).unwrap();
    // The spec's layout: base id, then a box of the padded delta under the
    // data key, label "delta frame", the base id as associated data.
    let inner_len = arc_engine::crypto::padme(4 + d.len() as u64) as usize;
    let mut inner = (d.len() as u32).to_le_bytes().to_vec();
    inner.extend_from_slice(&d);
    inner.resize(inner_len, 0);
    let spec = [
        base_id.0.to_vec(),
        spec_seal(derive("arc 2026-12 format v2 data sealing"), "delta frame", &base_id.0, nonce, &inner),
    ]
    .concat();
    assert_eq!(engine, spec);
    assert_eq!(engine.len(), delta::frame_len(d.len()));
    assert_eq!(delta::open(&keys, &engine, "golden", 8).unwrap(), (base_id, d.clone()));
    pin(
        "delta-frame.hex",
        &format!(
            "# a delta frame (streams.md 4.3): master 00..1f, nonce 24*0x44; frame record codec 2, raw_len {}\n\
             # base ({} bytes, keyed id {base_id}):\n{}\
             # chunk ({} bytes, keyed id {chunk_id}) = the base with row 17 'returned' and row 40 appended\n\
             # delta = {}\n\
             # frame ({} bytes):\n{}",
            chunk.len(),
            base.len(),
            hex_lines(&base),
            chunk.len(),
            hex::encode(&d),
            engine.len(),
            hex_lines(&engine)
        ),
    );
}

/// A v2 config with `stream_compression` (README.md section 1), its MAC
/// under master 00..1f recomputed from the spec's rule (crypto.md section
/// 3: the JSON value without `mac`, serialized compactly), and what any v2
/// reader does with a key it does not know: the MAC covers it, the parse
/// ignores it. So a config of this arc opens in an arc that predates the
/// key (it then compresses streams at `compression`), and nobody without
/// the master secret can change the key.
#[test]
fn config_with_stream_compression() {
    use arc_engine::format::config::{
        ChunkerParams, CompressionAlgorithm, CompressionParams, Config, Encryption, ProtocolSettings,
    };
    use arc_engine::format::envelope::{self, Codec, FileType};
    let keys = Keys::derive(&master());
    let zstd = |level| CompressionParams { algorithm: CompressionAlgorithm::Zstd, level };
    let mut config = Config {
        version: 2,
        features: Some(vec!["trees-v2".into(), "index-v2".into()]),
        id: Id([0x11; 32]),
        created: chrono::DateTime::from_timestamp(1_796_515_200, 0).unwrap(),
        id_scheme: arc_engine::id::IdScheme::KeyedBlake3,
        file_chunker: ChunkerParams::new(262_144, 1_048_576, 4_194_304).unwrap(),
        stream_chunker: ChunkerParams::new(65_536, 262_144, 1_048_576).unwrap(),
        compression: zstd(3),
        stream_compression: Some(zstd(1)),
        pack_size: 16 * 1024 * 1024,
        frame_size: 1024 * 1024,
        protocol: Some(ProtocolSettings::default()),
        encryption: Some(Encryption::Passphrase),
        content_keys: None,
        mac: None,
    };
    config.authenticate(&keys);
    let stored = config.encode();
    let (_, payload) = envelope::open(FileType::Config, 1, "config", &stored).unwrap();
    let text = String::from_utf8(payload.clone()).unwrap();
    pin("config.json", &text);

    // The spec's MAC, from the primitives.
    let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mac = value.as_object_mut().unwrap().remove("mac").unwrap();
    let canonical = serde_json::to_vec(&value).unwrap();
    let spec = blake3::keyed_hash(&derive("arc 2026-12 format v2 config mac"), &canonical);
    assert_eq!(mac.as_str().unwrap(), spec.to_hex().as_str());
    let decoded = Config::decode(&stored).unwrap();
    Config::verify(&stored, &keys).unwrap();
    assert_eq!((decoded.compression.level, decoded.stream_level()), (3, 1));

    let seal = |v: &serde_json::Value| envelope::seal(FileType::Config, 1, Codec::Raw, &serde_json::to_vec(v).unwrap());
    let with_mac = |mut v: serde_json::Value| {
        let mut bare = v.clone();
        bare.as_object_mut().unwrap().remove("mac");
        let mac = blake3::keyed_hash(&derive("arc 2026-12 format v2 config mac"), &serde_json::to_vec(&bare).unwrap());
        v["mac"] = mac.to_hex().as_str().into();
        v
    };
    // Covered: a level changed without the master secret is refused.
    let mut forged: serde_json::Value = serde_json::from_str(&text).unwrap();
    forged["stream_compression"]["level"] = 22.into();
    let forged = seal(&forged);
    assert!(Config::decode(&forged).is_ok(), "the parse alone cannot tell");
    assert!(matches!(Config::verify(&forged, &keys), Err(arc_engine::Error::NotAuthentic { .. })));
    // A key this arc does not know, as `stream_compression` is to an arc
    // that predates it: parsed, ignored, authenticated.
    let mut later: serde_json::Value = serde_json::from_str(&text).unwrap();
    later["a_later_writer_setting"] = serde_json::json!({ "level": 7 });
    let later = seal(&with_mac(later));
    assert_eq!(Config { mac: None, ..Config::decode(&later).unwrap() }, Config { mac: None, ..decoded.clone() });
    Config::verify(&later, &keys).unwrap();
    // Absent (a repository made before it): streams take `compression`.
    let mut before: serde_json::Value = serde_json::from_str(&text).unwrap();
    before.as_object_mut().unwrap().remove("stream_compression");
    let before = seal(&with_mac(before));
    Config::verify(&before, &keys).unwrap();
    assert_eq!(Config::decode(&before).unwrap().stream_level(), 3);
}
