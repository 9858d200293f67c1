//! The snapshot file: a RocksDB checkpoint of the state machine, packed into one file that
//! openraft streams to followers in chunks.
//!
//! Layout: `CVSNAP01`, a version byte, the snapshot metadata (length-prefixed protobuf), the
//! file count, then each checkpoint file as name and contents, then BLAKE3 of everything before
//! it. A follower verifies the checksum over the whole file before unpacking a single byte, and
//! every length is bounded, so a damaged or hostile snapshot is refused rather than installed.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use callvault_proto::v1 as pb;
use prost::Message;

const MAGIC: &[u8; 8] = b"CVSNAP01";
const FORMAT_VERSION: u8 = 1;
const MAX_META_BYTES: u32 = 64 * 1024;
const MAX_FILES: u32 = 100_000;
const MAX_NAME_BYTES: u16 = 255;
const TRAILER_BYTES: u64 = 32;

/// Why a snapshot file cannot be written or installed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Filesystem trouble.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not a well-formed snapshot.
    #[error("snapshot {path}: {reason}")]
    Malformed {
        /// The snapshot file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn malformed(path: &Path, reason: impl Into<String>) -> SnapshotError {
    SnapshotError::Malformed {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Hashes everything written through it.
struct HashingWriter<W: Write> {
    inner: W,
    hasher: blake3::Hasher,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Packs every file of `checkpoint_dir` (flat, as RocksDB writes checkpoints) with `meta` into
/// `out`, fsync'd.
pub fn pack(
    checkpoint_dir: &Path,
    meta: &pb::SnapshotMeta,
    out: &Path,
) -> Result<u64, SnapshotError> {
    let mut names: Vec<String> = Vec::new();
    for item in std::fs::read_dir(checkpoint_dir).map_err(io(checkpoint_dir))? {
        let item = item.map_err(io(checkpoint_dir))?;
        if item.file_type().map_err(io(checkpoint_dir))?.is_file() {
            names.push(item.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();

    let file = File::create(out).map_err(io(out))?;
    let mut w = HashingWriter {
        inner: BufWriter::with_capacity(1 << 20, file),
        hasher: blake3::Hasher::new(),
    };
    let meta_bytes = meta.encode_to_vec();
    w.write_all(MAGIC).map_err(io(out))?;
    w.write_all(&[FORMAT_VERSION]).map_err(io(out))?;
    w.write_all(&(meta_bytes.len() as u32).to_le_bytes())
        .map_err(io(out))?;
    w.write_all(&meta_bytes).map_err(io(out))?;
    w.write_all(&(names.len() as u32).to_le_bytes())
        .map_err(io(out))?;
    for name in &names {
        let path = checkpoint_dir.join(name);
        let mut src = File::open(&path).map_err(io(&path))?;
        let size = src.metadata().map_err(io(&path))?.len();
        w.write_all(&(name.len() as u16).to_le_bytes())
            .map_err(io(out))?;
        w.write_all(name.as_bytes()).map_err(io(out))?;
        w.write_all(&size.to_le_bytes()).map_err(io(out))?;
        let copied = std::io::copy(&mut (&mut src).take(size), &mut w).map_err(io(&path))?;
        if copied != size {
            return Err(malformed(&path, "checkpoint file changed while packing"));
        }
    }
    let digest = w.hasher.finalize();
    let mut inner = w.inner;
    inner.write_all(digest.as_bytes()).map_err(io(out))?;
    let file = inner.into_inner().map_err(|e| io(out)(e.into_error()))?;
    file.sync_all().map_err(io(out))?;
    file.metadata().map(|m| m.len()).map_err(io(out))
}

/// Checks the trailing checksum over the whole file.
pub fn verify(path: &Path) -> Result<(), SnapshotError> {
    let mut file = File::open(path).map_err(io(path))?;
    let len = file.metadata().map_err(io(path))?.len();
    if len < TRAILER_BYTES + MAGIC.len() as u64 + 1 {
        return Err(malformed(path, format!("{len} bytes is too short")));
    }
    let mut hasher = blake3::Hasher::new();
    let mut body = BufReader::with_capacity(1 << 20, (&mut file).take(len - TRAILER_BYTES));
    std::io::copy(&mut body, &mut hasher).map_err(io(path))?;
    let mut trailer = [0u8; 32];
    file.seek(SeekFrom::Start(len - TRAILER_BYTES))
        .map_err(io(path))?;
    file.read_exact(&mut trailer).map_err(io(path))?;
    if hasher.finalize().as_bytes() != &trailer {
        return Err(malformed(path, "checksum mismatch: damaged or incomplete"));
    }
    Ok(())
}

struct Header {
    meta: pb::SnapshotMeta,
    files: u32,
}

fn read_header(path: &Path, r: &mut impl Read) -> Result<Header, SnapshotError> {
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).map_err(io(path))?;
    if &magic != MAGIC {
        return Err(malformed(path, "not a callvault snapshot"));
    }
    let mut version = [0u8; 1];
    r.read_exact(&mut version).map_err(io(path))?;
    if version[0] != FORMAT_VERSION {
        return Err(malformed(
            path,
            format!(
                "format version {} (this build reads {FORMAT_VERSION})",
                version[0]
            ),
        ));
    }
    let meta_len = read_u32(path, r)?;
    if meta_len > MAX_META_BYTES {
        return Err(malformed(path, format!("metadata of {meta_len} bytes")));
    }
    let mut meta_bytes = vec![0u8; meta_len as usize];
    r.read_exact(&mut meta_bytes).map_err(io(path))?;
    let meta = pb::SnapshotMeta::decode(meta_bytes.as_slice())
        .map_err(|e| malformed(path, format!("metadata: {e}")))?;
    let files = read_u32(path, r)?;
    if files > MAX_FILES {
        return Err(malformed(path, format!("{files} files")));
    }
    Ok(Header { meta, files })
}

fn read_u32(path: &Path, r: &mut impl Read) -> Result<u32, SnapshotError> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b).map_err(io(path))?;
    Ok(u32::from_le_bytes(b))
}

/// The metadata stored in a snapshot file's header.
pub fn read_meta(path: &Path) -> Result<pb::SnapshotMeta, SnapshotError> {
    let mut r = BufReader::new(File::open(path).map_err(io(path))?);
    Ok(read_header(path, &mut r)?.meta)
}

/// Unpacks a verified snapshot into `dest` (which must not exist), fsyncing every file and the
/// directory, and returns its metadata.
pub fn unpack(path: &Path, dest: &Path) -> Result<pb::SnapshotMeta, SnapshotError> {
    verify(path)?;
    let file = File::open(path).map_err(io(path))?;
    let body_len = file.metadata().map_err(io(path))?.len() - TRAILER_BYTES;
    let mut r = BufReader::with_capacity(1 << 20, file.take(body_len));
    let header = read_header(path, &mut r)?;
    std::fs::create_dir(dest).map_err(io(dest))?;
    for _ in 0..header.files {
        let mut len = [0u8; 2];
        r.read_exact(&mut len).map_err(io(path))?;
        let len = u16::from_le_bytes(len);
        if len == 0 || len > MAX_NAME_BYTES {
            return Err(malformed(path, format!("file name of {len} bytes")));
        }
        let mut name = vec![0u8; usize::from(len)];
        r.read_exact(&mut name).map_err(io(path))?;
        let name = String::from_utf8(name).map_err(|_| malformed(path, "file name not UTF-8"))?;
        if name.contains('/') || name.contains('\\') || name == "." || name == ".." {
            return Err(malformed(path, format!("file name {name:?}")));
        }
        let mut size = [0u8; 8];
        r.read_exact(&mut size).map_err(io(path))?;
        let size = u64::from_le_bytes(size);
        let target = dest.join(&name);
        let mut out = File::create_new(&target).map_err(io(&target))?;
        let copied = std::io::copy(&mut (&mut r).take(size), &mut out).map_err(io(&target))?;
        if copied != size {
            return Err(malformed(path, format!("{name} is cut short")));
        }
        out.sync_all().map_err(io(&target))?;
    }
    let mut rest = [0u8; 1];
    if r.read(&mut rest).map_err(io(path))? != 0 {
        return Err(malformed(path, "bytes after the last file"));
    }
    // The directory too, so the new files survive a crash.
    File::open(dest)
        .and_then(|d| d.sync_all())
        .map_err(io(dest))?;
    Ok(header.meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> pb::SnapshotMeta {
        pb::SnapshotMeta {
            last_log_id: None,
            last_membership: None,
            snapshot_id: "t-1".into(),
        }
    }

    fn packed(dir: &Path) -> PathBuf {
        let src = dir.join("src");
        std::fs::create_dir(&src).unwrap();
        std::fs::write(src.join("CURRENT"), b"MANIFEST-000001\n").unwrap();
        std::fs::write(src.join("000007.sst"), vec![7u8; 100_000]).unwrap();
        let out = dir.join("snap");
        pack(&src, &meta(), &out).unwrap();
        out
    }

    #[test]
    fn packs_and_unpacks_files_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let out = packed(dir.path());
        assert_eq!(read_meta(&out).unwrap(), meta());
        let dest = dir.path().join("dest");
        assert_eq!(unpack(&out, &dest).unwrap(), meta());
        assert_eq!(
            std::fs::read(dest.join("000007.sst")).unwrap(),
            vec![7u8; 100_000]
        );
        assert_eq!(
            std::fs::read(dest.join("CURRENT")).unwrap(),
            b"MANIFEST-000001\n"
        );
    }

    #[test]
    fn damage_anywhere_is_refused_before_unpacking() {
        let dir = tempfile::tempdir().unwrap();
        let out = packed(dir.path());
        let good = std::fs::read(&out).unwrap();
        for position in [0, 20, good.len() / 2, good.len() - 1] {
            let mut bad = good.clone();
            bad[position] ^= 0x01;
            std::fs::write(&out, &bad).unwrap();
            let dest = dir.path().join(format!("dest-{position}"));
            assert!(matches!(
                unpack(&out, &dest),
                Err(SnapshotError::Malformed { .. })
            ));
            assert!(
                !dest.exists(),
                "nothing is unpacked from a damaged snapshot"
            );
        }
        std::fs::write(&out, &good[..good.len() - 10]).unwrap();
        assert!(unpack(&out, &dir.path().join("short")).is_err());
    }
}
