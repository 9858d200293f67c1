//! The byte-level encoding of stored records: a version byte, then fixed-width little-endian
//! integers and length-prefixed strings. Hand-written rather than derived, because retention data
//! outlives the code: a derive would silently change the bytes when a field is added, while here
//! every layout is a named version with a golden-bytes test and old versions stay decodable.
//!
//! Every decode is bounded: lengths are checked against the remaining input and a per-field
//! limit before anything is allocated.

/// Why stored bytes do not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// No bytes at all (not even a version byte).
    #[error("{record}: empty record")]
    Empty {
        /// The record type.
        record: &'static str,
    },
    /// A version this build does not know: written by newer code, or corrupt.
    #[error("{record}: unsupported version {version} (this build reads up to {newest})")]
    UnsupportedVersion {
        /// The record type.
        record: &'static str,
        /// The version byte found.
        version: u8,
        /// The newest version this build reads.
        newest: u8,
    },
    /// The bytes end before the record does.
    #[error("{record}: truncated")]
    Truncated {
        /// The record type.
        record: &'static str,
    },
    /// Bytes left after the record.
    #[error("{record}: {extra} trailing bytes")]
    TrailingBytes {
        /// The record type.
        record: &'static str,
        /// How many.
        extra: usize,
    },
    /// A field holds a value the record cannot have.
    #[error("{record}: field {field}: {reason}")]
    Invalid {
        /// The record type.
        record: &'static str,
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// A stored record with a versioned encoding.
pub trait VersionedRecord: Sized {
    /// The record's name in errors.
    const NAME: &'static str;
    /// The version [`VersionedRecord::encode`] writes.
    const CURRENT_VERSION: u8;

    /// Encodes in the current version, version byte first.
    fn encode(&self) -> Vec<u8>;

    /// Decodes any supported version, migrating older ones to the current shape.
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError>;
}

/// Appends fields.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// A writer whose output starts with `version`.
    pub fn with_version(version: u8) -> Self {
        let mut buf = Vec::with_capacity(128);
        buf.push(version);
        Writer { buf }
    }

    /// The encoded bytes.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }

    /// One byte.
    pub fn u8(&mut self, value: u8) -> &mut Self {
        self.buf.push(value);
        self
    }

    /// A boolean as one byte, 0 or 1.
    pub fn bool(&mut self, value: bool) -> &mut Self {
        self.u8(u8::from(value))
    }

    /// Four bytes, little-endian.
    pub fn u32(&mut self, value: u32) -> &mut Self {
        self.buf.extend_from_slice(&value.to_le_bytes());
        self
    }

    /// Eight bytes, little-endian.
    pub fn u64(&mut self, value: u64) -> &mut Self {
        self.buf.extend_from_slice(&value.to_le_bytes());
        self
    }

    /// Eight bytes, little-endian, two's complement.
    pub fn i64(&mut self, value: i64) -> &mut Self {
        self.buf.extend_from_slice(&value.to_le_bytes());
        self
    }

    /// Fixed 32 bytes (hashes, fingerprints).
    pub fn bytes32(&mut self, value: &[u8; 32]) -> &mut Self {
        self.buf.extend_from_slice(value);
        self
    }

    /// A string: u16 length, then UTF-8. Callers bound their strings well below 64 KiB; a longer
    /// one is a bug, so it panics rather than writing a record that cannot be read back.
    pub fn str(&mut self, value: &str) -> &mut Self {
        let len = u16::try_from(value.len()).expect("stored strings are shorter than 64 KiB");
        self.buf.extend_from_slice(&len.to_le_bytes());
        self.buf.extend_from_slice(value.as_bytes());
        self
    }

    /// Raw bytes: u32 length, then the bytes.
    pub fn blob(&mut self, value: &[u8]) -> &mut Self {
        let len = u32::try_from(value.len()).expect("stored blobs are shorter than 4 GiB");
        self.u32(len);
        self.buf.extend_from_slice(value);
        self
    }
}

/// Reads fields back, bounded by the input.
#[derive(Debug)]
pub struct Reader<'a> {
    record: &'static str,
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Splits off the version byte of a `record`.
    pub fn open(record: &'static str, bytes: &'a [u8]) -> Result<(u8, Self), DecodeError> {
        let (&version, rest) = bytes.split_first().ok_or(DecodeError::Empty { record })?;
        Ok((version, Reader { record, buf: rest }))
    }

    /// The error for an unknown version of this reader's record.
    pub fn unsupported(&self, version: u8, newest: u8) -> DecodeError {
        DecodeError::UnsupportedVersion {
            record: self.record,
            version,
            newest,
        }
    }

    /// An invalid-field error for this reader's record.
    pub fn invalid(&self, field: &'static str, reason: impl Into<String>) -> DecodeError {
        DecodeError::Invalid {
            record: self.record,
            field,
            reason: reason.into(),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated {
                record: self.record,
            });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        Ok(self.take(N)?.try_into().expect("take returns N bytes"))
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    /// A boolean; anything but 0 or 1 is invalid.
    pub fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(self.invalid(field, format!("boolean byte {other}"))),
        }
    }

    /// Four bytes, little-endian.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// Eight bytes, little-endian.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// Eight bytes, little-endian, two's complement.
    pub fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    /// Fixed 32 bytes.
    pub fn bytes32(&mut self) -> Result<[u8; 32], DecodeError> {
        self.array()
    }

    /// A string of at most `max` bytes.
    pub fn str(&mut self, field: &'static str, max: usize) -> Result<String, DecodeError> {
        let len = usize::from(u16::from_le_bytes(self.array()?));
        if len > max {
            return Err(self.invalid(field, format!("length {len} over the limit {max}")));
        }
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.invalid(field, "not UTF-8"))
    }

    /// Raw bytes of at most `max` bytes.
    pub fn blob(&mut self, field: &'static str, max: usize) -> Result<Vec<u8>, DecodeError> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(self.invalid(field, format!("length {len} over the limit {max}")));
        }
        Ok(self.take(len)?.to_vec())
    }

    /// Ends the record; leftover bytes are an error.
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                record: self.record,
                extra: self.buf.len(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fields_round_trip() {
        let mut w = Writer::with_version(3);
        w.u8(1)
            .bool(true)
            .u32(7)
            .u64(u64::MAX)
            .i64(-5)
            .bytes32(&[4; 32])
            .str("héllo")
            .blob(&[1, 2]);
        let bytes = w.finish();
        let (version, mut r) = Reader::open("t", &bytes).unwrap();
        assert_eq!(version, 3);
        assert_eq!(r.u8().unwrap(), 1);
        assert!(r.bool("b").unwrap());
        assert_eq!(r.u32().unwrap(), 7);
        assert_eq!(r.u64().unwrap(), u64::MAX);
        assert_eq!(r.i64().unwrap(), -5);
        assert_eq!(r.bytes32().unwrap(), [4; 32]);
        assert_eq!(r.str("s", 16).unwrap(), "héllo");
        assert_eq!(r.blob("b", 16).unwrap(), vec![1, 2]);
        r.finish().unwrap();
    }

    #[test]
    fn lengths_are_bounded_before_allocation() {
        let mut w = Writer::with_version(1);
        w.str("0123456789");
        let bytes = w.finish();
        let (_, mut r) = Reader::open("t", &bytes).unwrap();
        assert!(matches!(
            r.str("name", 4),
            Err(DecodeError::Invalid { field: "name", .. })
        ));
        // A length that claims more than the input holds is truncation, not an allocation.
        let (_, mut r) = Reader::open("t", &[1, 0xff, 0xff, 0xff, 0x7f]).unwrap();
        assert!(matches!(
            r.blob("b", usize::MAX),
            Err(DecodeError::Truncated { .. })
        ));
        assert!(matches!(
            Reader::open("t", &[]),
            Err(DecodeError::Empty { .. })
        ));
    }

    proptest! {
        #[test]
        fn reading_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok((_, mut r)) = Reader::open("t", &bytes) {
                let _ = r.str("s", 32).and_then(|_| r.blob("b", 32)).and_then(|_| r.u64());
            }
        }
    }
}
