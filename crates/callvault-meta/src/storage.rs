//! Opening RocksDB databases so that damage is loud: a directory that exists must hold a
//! database that opens with every expected column family; only a directory that does not exist
//! yet becomes a new, empty database.

use std::path::{Path, PathBuf};

use rocksdb::{ColumnFamilyDescriptor, DB, Options};

/// Why a store did not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The directory exists but does not hold a usable database (missing or damaged files).
    #[error(
        "{path}: existing data does not open ({source}); refusing to start with an empty store — \
         restore the directory from a replica or backup, or remove it to rejoin as a new node"
    )]
    Damaged {
        /// The database directory.
        path: PathBuf,
        /// What RocksDB said.
        source: rocksdb::Error,
    },
    /// A new database could not be created.
    #[error("{path}: cannot create database: {source}")]
    Create {
        /// The database directory.
        path: PathBuf,
        /// What RocksDB said.
        source: rocksdb::Error,
    },
    /// Filesystem trouble around the database (pointer files, directories).
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Options every callvault database shares.
pub fn base_options() -> Options {
    let mut options = Options::default();
    options.set_paranoid_checks(true);
    options.set_keep_log_file_num(4);
    options.set_max_total_wal_size(256 << 20);
    options
}

/// Opens the database at `dir` with `cfs`, creating it only if `dir` does not exist.
pub fn open_db(dir: &Path, cfs: Vec<ColumnFamilyDescriptor>) -> Result<DB, OpenError> {
    let exists = dir.exists();
    let mut options = base_options();
    options.create_if_missing(!exists);
    // A column family added by a newer version is a migration, not damage.
    options.create_missing_column_families(true);
    DB::open_cf_descriptors(&options, dir, cfs).map_err(|source| {
        if exists {
            OpenError::Damaged {
                path: dir.to_path_buf(),
                source,
            }
        } else {
            OpenError::Create {
                path: dir.to_path_buf(),
                source,
            }
        }
    })
}

/// Writes `contents` to `path` atomically: a temporary file, fsync, rename, fsync of the directory.
pub fn write_atomically(path: &Path, contents: &[u8]) -> Result<(), OpenError> {
    use std::io::Write;
    let io = |source| OpenError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp).map_err(io)?;
    file.write_all(contents).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    sync_dir(path.parent().unwrap_or(Path::new("."))).map_err(io)
}

/// fsyncs a directory so a rename or new file in it survives a crash.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
