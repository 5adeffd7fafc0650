//! Fetching a set of frames from a remote store pack by pack and decoding
//! them, delta frames included, in planned passes.
//!
//! A delta frame (a dump's chunk stored against a chunk of an earlier
//! dump, format-spec/v2/streams.md section 4) names its base only inside
//! it, so a set with deltas takes two passes: first the delta frames,
//! pack by pack, each opened (authenticated) and held; then their bases,
//! grouped by frame, together with every plain frame of the set, so that
//! a base and the frames around it in its pack come in the same GETs.
//! Each frame of the second pass is decoded once, for the caller and for
//! every delta on it. Reading each delta's base alone when the delta
//! arrived, as the blob reader does, cost one more round trip per delta:
//! 158 ranged GETs for a day-2 dump that these passes read in 9.
//!
//! Memory: the opened deltas waiting for their bases hold at most
//! [`DELTA_BYTES`] stored; more deltas are taken in further rounds, each
//! with its own pass for its bases. The reads in flight are capped as
//! span_fetch.rs caps them. Restore (ops/restore/packs.rs) and the mount's
//! readahead (vfs/window.rs) read their windows this way.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::format::delta;
use crate::format::pack::{decode_frame_into, FrameCodec, FrameRecord};
use crate::id::Id;
use crate::index::BlobLocation;
use crate::prefetch::{pack_reads, Span};
use crate::repo::Repository;
use crate::span_fetch::{fetch_spans, FrameSink};

/// Stored bytes of the delta frames fetched in one round: they are held,
/// opened, until their bases arrive in the round's next pass.
pub(crate) const DELTA_BYTES: u64 = 64 << 20;

/// One GET reads at most this much: a whole pack of the default size
/// (16 MiB, filled up to an eighth past it).
pub(crate) const MAX_READ: u64 = 20 << 20;

thread_local! {
    /// Each worker's buffers for the frames it decompresses and the deltas
    /// it decodes, kept from frame to frame: a new frame- or chunk-sized
    /// one each time was faulted in and zeroed again (glibc hands freed
    /// memory back to the system).
    static DECODED: std::cell::RefCell<Decoded> = const { std::cell::RefCell::new(Decoded::new()) };
}

/// A worker's decoding buffers: a plain frame's plaintext, and a chunk
/// decoded from a delta against a base within it.
struct Decoded {
    plain: Vec<u8>,
    delta: Vec<u8>,
}

impl Decoded {
    const fn new() -> Decoded {
        Decoded { plain: Vec::new(), delta: Vec::new() }
    }
}

/// A frame to fetch and decode.
pub(crate) struct Wanted {
    pub pack: Id,
    pub record: FrameRecord,
    /// A chunk the caller wants from the frame: a delta frame holds one,
    /// named with its base when the base cannot be read.
    pub chunk: Id,
}

/// What receives each frame: its index in the set, and its plaintext
/// (opened, decompressed; a delta decoded against its base, which was
/// verified) or why it cannot be had. Called once per frame, on the worker
/// that completed it; the plaintext lies in the worker's buffers, valid
/// until the sink returns. The blobs in it are the caller's to verify.
pub(crate) type DecodedSink<'a> = dyn Fn(usize, Result<&[u8]>) + Sync + 'a;

/// A delta frame of the set, opened: the base chunk it names and its zstd
/// delta.
struct Opened {
    frame: usize,
    base: Id,
    delta: Vec<u8>,
}

/// A plain frame a pass fetches, and what it is for: a frame of the set,
/// the base chunks of opened deltas, or both.
struct Job {
    record: FrameRecord,
    plain: Option<usize>,
    /// The deltas decoded against a blob of this frame, each with where
    /// its base lies.
    deltas: Vec<(Opened, BlobLocation)>,
}

/// The storage's concurrency hint of GETs at once, at most `in_flight`
/// stored bytes in flight, `stop` asked before each read.
pub(crate) struct Passes<'a> {
    pub repo: &'a Repository,
    pub in_flight: u64,
    pub stop: &'a (dyn Fn() -> bool + Sync),
    /// Names the workers in the error a panic of one becomes.
    pub what: &'static str,
}

impl Passes<'_> {
    /// Fetches and decodes every frame of `frames` (see the module
    /// comment), handing each to `sink`. Returns the workers' panics.
    pub(crate) fn fetch(&self, frames: &[Wanted], sink: &DecodedSink<'_>) -> Vec<Error> {
        let (deltas, plain): (Vec<usize>, Vec<usize>) =
            (0..frames.len()).partition(|&n| frames[n].record.codec == FrameCodec::Delta);
        let stored = |n: usize| u64::from(frames[n].record.stored_len);
        let mut rounds: Vec<&[usize]> = Vec::new();
        let mut rest = &deltas[..];
        while !rest.is_empty() {
            let (mut k, mut bytes) = (0, 0u64);
            while k < rest.len() && (k == 0 || bytes + stored(rest[k]) <= DELTA_BYTES) {
                bytes += stored(rest[k]);
                k += 1;
            }
            let (round, later) = rest.split_at(k);
            rounds.push(round);
            rest = later;
        }
        if rounds.is_empty() {
            rounds.push(&[]);
        }
        let mut errors = Vec::new();
        for (i, round) in rounds.into_iter().enumerate() {
            if (self.stop)() {
                break;
            }
            let mut jobs: HashMap<(Id, u64), Job> = HashMap::new();
            if i == 0 {
                for &n in &plain {
                    let f = &frames[n];
                    job(&mut jobs, (f.pack, f.record.offset), f.record).plain = Some(n);
                }
            }
            for o in self.open_deltas(frames, round, sink, &mut errors) {
                match self.base_location(&o.base) {
                    Ok(loc) => job(&mut jobs, (loc.pack, loc.frame.offset), loc.frame).deltas.push((o, loc)),
                    Err(e) => sink(o.frame, Err(base_error(&frames[o.frame], o.base, e))),
                }
            }
            let reads = pack_reads(jobs.iter().map(|(k, j)| (k.0, k.1, j.record.stored_len)).collect(), MAX_READ);
            let jobs: HashMap<(Id, u64), Mutex<Option<Job>>> =
                jobs.into_iter().map(|(k, j)| (k, Mutex::new(Some(j)))).collect();
            let take = |key: &(Id, u64)| jobs.get(key).and_then(|j| j.lock().ok()?.take());
            errors.extend(self.spans(&reads, &|read, offset, stored| {
                if let Some(job) = take(&(read.pack, offset)) {
                    self.decode_job(frames, &read.pack, job, stored, sink);
                }
            }));
            // A job a panicking worker left (reported in `errors`): its
            // frames are not decoded, and their callers must not wait.
            for (_, job) in jobs {
                if let Some(job) = job.into_inner().ok().flatten() {
                    let gone = || Error::Bug { what: self.what, message: "a worker ended before this frame".into() };
                    job.plain
                        .into_iter()
                        .chain(job.deltas.iter().map(|d| d.0.frame))
                        .for_each(|n| sink(n, Err(gone())));
                }
            }
        }
        errors
    }

    fn spans(&self, reads: &[Span], frame: &FrameSink<'_>) -> Vec<Error> {
        let storage = self.repo.storage();
        fetch_spans(storage.as_ref(), reads, storage.concurrency(), self.in_flight, self.stop, frame, self.what)
    }

    /// The delta frames `round` fetched pack by pack and opened; a frame
    /// that cannot be fetched or opened goes to `sink` with its error.
    fn open_deltas(
        &self,
        frames: &[Wanted],
        round: &[usize],
        sink: &DecodedSink<'_>,
        errors: &mut Vec<Error>,
    ) -> Vec<Opened> {
        if round.is_empty() {
            return Vec::new();
        }
        let of: HashMap<(Id, u64), usize> =
            round.iter().map(|&n| ((frames[n].pack, frames[n].record.offset), n)).collect();
        let reads = pack_reads(
            round.iter().map(|&n| (frames[n].pack, frames[n].record.offset, frames[n].record.stored_len)).collect(),
            MAX_READ,
        );
        let opened = Mutex::new(Vec::with_capacity(round.len()));
        errors.extend(self.spans(&reads, &|read, offset, stored| {
            let Some(&n) = of.get(&(read.pack, offset)) else { return };
            let f = &frames[n];
            match stored.and_then(|s| self.repo.open_delta_frame(s, &f.record, &read.pack.to_hex())) {
                // The read's buffer goes to the next read: the delta is
                // kept until its base's pass.
                Ok((base, delta)) => {
                    if let Ok(mut o) = opened.lock() {
                        o.push(Opened { frame: n, base, delta: delta.to_vec() });
                    }
                }
                Err(e) => sink(n, Err(e)),
            }
        }));
        opened.into_inner().unwrap_or_else(|p| p.into_inner())
    }

    /// Where a delta's base is: a plain frame (deltas are one step deep,
    /// streams.md section 4.4).
    fn base_location(&self, base: &Id) -> Result<BlobLocation> {
        let loc = self.repo.lookup_blob(base)?.ok_or(Error::BlobNotInIndex(*base))?;
        if loc.frame.codec == FrameCodec::Delta {
            return Err(Error::corrupt(
                "pack",
                loc.pack.to_hex(),
                format!("chunk {base} is a delta, and a delta's base never is one"),
            ));
        }
        Ok(loc)
    }

    /// Decodes a fetched plain frame once, for every delta whose base it
    /// holds and for the caller: opened where it lies in the read's buffer
    /// and decompressed into this worker's reused buffer. A delta whose
    /// base cannot be had from it (a failed read, a frame that does not
    /// open or verify) reads its base alone, through the blob reader, whose
    /// error names the base's pack and frame.
    fn decode_job(&self, frames: &[Wanted], pack: &Id, job: Job, stored: Result<&mut [u8]>, sink: &DecodedSink<'_>) {
        DECODED.with(|decoded| match decoded.try_borrow_mut() {
            Ok(mut decoded) => self.decode_into(frames, pack, job, stored, &mut decoded, sink),
            // Not reached (a sink does not decode); buffers of its own then.
            Err(_) => self.decode_into(frames, pack, job, stored, &mut Decoded::new(), sink),
        })
    }

    fn decode_into(
        &self,
        frames: &[Wanted],
        pack: &Id,
        job: Job,
        stored: Result<&mut [u8]>,
        buffers: &mut Decoded,
        sink: &DecodedSink<'_>,
    ) {
        let repo = self.repo;
        let Decoded { plain, delta: out } = buffers;
        let name = pack.to_hex();
        let offset = job.record.offset;
        let raw = stored
            .and_then(|s| repo.open_frame_in_place(s, &name, offset))
            .and_then(|s| decode_frame_into(s, &job.record, &name, plain));
        for (o, loc) in job.deltas {
            let f = &frames[o.frame];
            let delta_pack = f.pack.to_hex();
            let start = loc.offset_in_frame as usize;
            let base = raw.as_ref().ok().and_then(|r| r.get(start..start + loc.raw_len as usize));
            let (raw_len, at) = (f.record.raw_len, f.record.offset);
            let decoded = match base {
                Some(b) if repo.blob_id(b) == o.base => {
                    delta::decompress_into(&o.delta, b, raw_len, &delta_pack, at, out)
                }
                _ => repo
                    .read_delta_base(&o.base)
                    .map_err(|e| base_error(f, o.base, e))
                    .and_then(|b| delta::decompress_into(&o.delta, &b, raw_len, &delta_pack, at, out)),
            };
            sink(o.frame, decoded);
        }
        if let Some(n) = job.plain {
            sink(n, raw);
        }
    }
}

/// The job of the frame `key` in `jobs`, made for `record` if new.
fn job(jobs: &mut HashMap<(Id, u64), Job>, key: (Id, u64), record: FrameRecord) -> &mut Job {
    jobs.entry(key).or_insert_with(|| Job { record, plain: None, deltas: Vec::new() })
}

/// A delta frame's base could not be read: the error names the delta's
/// chunk, its base and the delta's pack.
fn base_error(f: &Wanted, base: Id, source: Error) -> Error {
    Error::DeltaBase { chunk: f.chunk, base, pack: f.pack.to_hex(), source: Box::new(source) }
}
