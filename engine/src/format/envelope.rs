//! The envelope wraps every repository file that is not a pack (config,
//! index files, snapshots, locks): it names the file type and its format
//! version, says how the payload is encoded, and ends with a BLAKE3 checksum
//! so that a damaged file is detected before its payload is parsed.
//!
//! ```text
//! offset size
//!  0      4   magic "ARCF"
//!  4      1   file type (1 config, 2 index, 3 snapshot, 4 lock, 5 key, 6 session, 7 mark)
//!  5      1   file type's format version
//!  6      1   payload codec (0 = raw, 1 = zstd)
//!  7      1   reserved, 0
//!  8      8   stored payload length N (u64 LE)
//! 16      N   payload
//! 16+N   32   BLAKE3-256 of bytes [0, 16+N)
//! ```
//! The codec byte leaves room for an encrypted payload later.

use super::{ByteReader, ByteWriter};
use crate::error::{Error, Result};
use crate::id::Id;

pub const MAGIC: &[u8; 4] = b"ARCF";
const HEADER_LEN: usize = 16;
const CHECKSUM_LEN: usize = 32;
/// Largest decoded payload accepted (index files are far smaller).
const MAX_PAYLOAD: u64 = 1 << 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FileType {
    Config = 1,
    Index = 2,
    Snapshot = 3,
    Lock = 4,
    /// Format v2 key files (format-spec/v2/crypto.md).
    Key = 5,
    /// v2: format-spec/v2/protocol.md §2.1.
    Session = 6,
    /// v2: format-spec/v2/protocol.md §2.2.
    Mark = 7,
}

impl FileType {
    fn name(self) -> &'static str {
        match self {
            FileType::Config => "config",
            FileType::Index => "index file",
            FileType::Snapshot => "snapshot",
            FileType::Lock => "lock",
            FileType::Key => "key file",
            FileType::Session => "session",
            FileType::Mark => "prune mark",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Codec {
    Raw = 0,
    Zstd = 1,
}

pub fn seal(ty: FileType, version: u8, codec: Codec, payload: &[u8]) -> Vec<u8> {
    let compressed;
    let stored: &[u8] = match codec {
        Codec::Raw => payload,
        Codec::Zstd => {
            // Envelope payloads are metadata: level 3 is plenty and fast.
            compressed = zstd::bulk::compress(payload, 3).expect("zstd compression of a buffer cannot fail");
            &compressed
        }
    };
    let mut w = ByteWriter::with_capacity(HEADER_LEN + stored.len() + CHECKSUM_LEN);
    w.bytes(MAGIC);
    w.u8(ty as u8);
    w.u8(version);
    w.u8(codec as u8);
    w.u8(0);
    w.u64(stored.len() as u64);
    w.bytes(stored);
    let sum = Id::hash(&w.buf);
    w.id(&sum);
    w.buf
}

/// Checks magic, type, checksum and length; returns (version, payload).
/// `max_version` is the newest version of this file type the binary knows.
pub fn open(ty: FileType, max_version: u8, name: &str, data: &[u8]) -> Result<(u8, Vec<u8>)> {
    let what = ty.name();
    let mut r = ByteReader::new(data, what, name);
    if r.take(4)? != MAGIC {
        return Err(Error::corrupt(what, name, "bad magic: not an arc file"));
    }
    let found_ty = r.u8()?;
    if found_ty != ty as u8 {
        return Err(Error::corrupt(what, name, format!("file type {found_ty}, expected {}", ty as u8)));
    }
    let version = r.u8()?;
    let codec = r.u8()?;
    r.reserved(1)?;
    let len = r.u64()?;
    if len != (data.len() as u64).saturating_sub((HEADER_LEN + CHECKSUM_LEN) as u64)
        || data.len() < HEADER_LEN + CHECKSUM_LEN
    {
        return Err(Error::corrupt(
            what,
            name,
            format!("payload length {len} does not match file size {}", data.len()),
        ));
    }
    let body_end = data.len() - CHECKSUM_LEN;
    if Id::hash(&data[..body_end]).0 != data[body_end..] {
        return Err(Error::corrupt(what, name, "checksum mismatch"));
    }
    if version == 0 || version > max_version {
        return Err(Error::corrupt(
            what,
            name,
            format!("format version {version} is not supported (this arc reads up to {max_version}); upgrade arc"),
        ));
    }
    let stored = &data[HEADER_LEN..body_end];
    let payload = match codec {
        0 => stored.to_vec(),
        1 => {
            // Bound what a damaged or hostile file can make us allocate.
            let mut out = Vec::new();
            let decoder = zstd::stream::Decoder::new(stored)
                .map_err(|e| Error::corrupt(what, name, format!("zstd payload: {e}")))?;
            std::io::Read::read_to_end(&mut std::io::Read::take(decoder, MAX_PAYLOAD + 1), &mut out)
                .map_err(|e| Error::corrupt(what, name, format!("zstd payload: {e}")))?;
            if out.len() as u64 > MAX_PAYLOAD {
                return Err(Error::corrupt(what, name, "payload larger than 1 GiB"));
            }
            out
        }
        other => return Err(Error::corrupt(what, name, format!("unknown payload codec {other}"))),
    };
    Ok((version, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejections() {
        for codec in [Codec::Raw, Codec::Zstd] {
            let sealed = seal(FileType::Snapshot, 1, codec, b"{\"hello\":1}");
            let (v, p) = open(FileType::Snapshot, 1, "x", &sealed).unwrap();
            assert_eq!((v, p.as_slice()), (1, &b"{\"hello\":1}"[..]));
            assert!(open(FileType::Index, 1, "x", &sealed).is_err());
            for i in 0..sealed.len() {
                let mut bad = sealed.clone();
                bad[i] ^= 0x40;
                assert!(open(FileType::Snapshot, 1, "x", &bad).is_err(), "flip at {i}");
            }
            assert!(open(FileType::Snapshot, 1, "x", &sealed[..sealed.len() - 1]).is_err());
        }
        let newer = seal(FileType::Config, 9, Codec::Raw, b"{}");
        let err = open(FileType::Config, 1, "config", &newer).unwrap_err();
        assert!(err.to_string().contains("version 9"), "{err}");
    }
}
