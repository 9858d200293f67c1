//! Snapshot unpacking: the packed checkpoint a leader streams to a follower, into a scratch
//! directory. The input is the body; the check appends its correct BLAKE3 trailer, since a wrong
//! one is refused before anything is parsed and would leave the parser unexplored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use callvault_meta::snapshot;

/// A directory of its own for one input, removed when dropped. Under `/dev/shm` where there is
/// one: a snapshot fsyncs every file it unpacks, which costs nothing on tmpfs.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!(
            "callvault-fuzz-snapshot-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&dir).expect("a scratch directory");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every file of a flat directory, by name.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .expect("an unpacked directory")
        .map(|item| {
            let item = item.expect("a directory entry");
            assert!(
                item.file_type().expect("a file type").is_file(),
                "unpacking made something other than a file: {:?}",
                item.path()
            );
            let name = item.file_name().into_string().expect("UTF-8 names");
            (name, std::fs::read(item.path()).expect("an unpacked file"))
        })
        .collect()
}

/// The `snapshot` target. A snapshot that unpacks has only plain files, all inside the
/// destination, and packing them again gives a snapshot that unpacks to the same files and
/// metadata.
pub fn unpack(body: &[u8]) {
    let scratch = Scratch::new();
    let packed = scratch.0.join("snapshot");
    let mut bytes = body.to_vec();
    bytes.extend_from_slice(blake3::hash(body).as_bytes());
    std::fs::write(&packed, &bytes).expect("writing the snapshot");
    let dest = scratch.0.join("unpacked");
    let Ok(meta) = snapshot::unpack(&packed, &dest) else {
        return;
    };
    let unpacked = files(&dest);
    let mut left = files_and_dirs(&scratch.0);
    left.sort();
    assert_eq!(
        left,
        ["snapshot", "unpacked"],
        "unpacking wrote outside its directory"
    );

    let repacked = scratch.0.join("repacked");
    snapshot::pack(&dest, &meta, &repacked).expect("an unpacked snapshot packs again");
    let again = scratch.0.join("again");
    let meta_again = snapshot::unpack(&repacked, &again).expect("a packed snapshot unpacks");
    assert_eq!(meta_again, meta);
    assert_eq!(files(&again), unpacked);
}

fn files_and_dirs(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("the scratch directory")
        .map(|item| {
            item.expect("an entry")
                .file_name()
                .into_string()
                .expect("UTF-8")
        })
        .collect()
}
