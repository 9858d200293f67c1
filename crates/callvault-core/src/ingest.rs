//! The rules of one `Ingest.RecordCall` stream: a `CallStart`, audio chunks numbered from 0 in
//! order, one `CallEnd` whose length and digest match the audio, and nothing after it.
//!
//! [`CallStream`] checks a stream message by message, as the ingest service receives it; the
//! service does the I/O (privilege read, encryption, chunk writes, the commit) around it. Kept
//! pure so that every sequence a platform could send is fuzzed against these rules without a
//! network or a cluster. Time enters as an argument: the service passes its clock's "now".

use crate::call::{CallId, Direction, check_party_id};
use crate::jurisdiction::Jurisdiction;
use crate::phone::{E164, normalize};
use crate::time::UnixMillis;

/// Largest audio chunk, in bytes.
pub const MAX_AUDIO_CHUNK: usize = 1 << 20;
/// Most chunks one call may have.
pub const MAX_CHUNKS_PER_CALL: u32 = 100_000;
/// How far ahead of the receiving node's clock a call may say it started.
pub const MAX_FUTURE_START_MILLIS: i64 = 5 * 60_000;
/// How far behind a call may have started, beyond its longest length: live ingest only.
pub const MAX_START_AGE_MILLIS: i64 = 86_400_000;

/// The limits of one call, from the ingest role's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Longest call, seconds.
    pub max_call_seconds: u64,
    /// Most audio bytes per call.
    pub max_call_bytes: u64,
}

impl StreamLimits {
    fn max_call_millis(&self) -> i64 {
        i64::try_from(self.max_call_seconds.saturating_mul(1000)).unwrap_or(i64::MAX)
    }
}

/// A `CallStart` as received, before any check.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CallStartFields {
    /// The platform's call id.
    pub call_id: String,
    /// The jurisdiction code, e.g. `US-TX`.
    pub jurisdiction: String,
    /// The facility.
    pub facility_id: String,
    /// The incarcerated person.
    pub inmate_id: String,
    /// The number as dialed.
    pub dialed_number: String,
    /// `None`: the message named no known direction.
    pub direction: Option<Direction>,
    /// `None`: missing or not a representable time.
    pub started_at: Option<UnixMillis>,
    /// Whether the recording notice was played and accepted.
    pub notice_accepted: bool,
}

/// A `CallStart` that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallStart {
    /// The call id.
    pub call_id: CallId,
    /// The jurisdiction.
    pub jurisdiction: Jurisdiction,
    /// The facility.
    pub facility_id: String,
    /// The incarcerated person.
    pub inmate_id: String,
    /// The dialed number, canonical.
    pub number: E164,
    /// Which way the call went.
    pub direction: Direction,
    /// When it started.
    pub started_at: UnixMillis,
    /// Whether the recording notice was played and accepted.
    pub notice_accepted: bool,
}

/// One message of the stream, as received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamPart<'a> {
    /// `CallStart`.
    Start(&'a CallStartFields),
    /// `AudioChunk`.
    Chunk {
        /// Its sequence number.
        seq: u32,
        /// Its audio.
        data: &'a [u8],
    },
    /// `CallEnd`.
    End {
        /// `None`: missing or not a representable time.
        ended_at: Option<UnixMillis>,
        /// The audio length the platform sent.
        byte_length: u64,
        /// BLAKE3 of the audio, as the platform computed it.
        plaintext_blake3: &'a [u8],
    },
    /// A message with no part set.
    Empty,
}

/// The audio of a stream that ended well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamedAudio {
    /// When the call ended.
    pub ended_at: UnixMillis,
    /// Audio bytes received.
    pub byte_length: u64,
    /// Chunks received.
    pub chunk_count: u32,
    /// BLAKE3 of the audio received.
    pub plaintext_digest: [u8; 32],
}

/// What an accepted message was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// The first message: the call's start, checked.
    Started(CallStart),
    /// The next chunk, in order and within the limits: the service may store it.
    Chunk,
    /// The end, matching the audio received.
    Ended(StreamedAudio),
}

/// Why a stream is refused; nothing of it is committed. The text is for the platform's engineers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct StreamError {
    /// What is wrong.
    pub reason: String,
}

fn refuse<T>(reason: impl Into<String>) -> Result<T, StreamError> {
    Err(StreamError {
        reason: reason.into(),
    })
}

fn bad_field<T>(field: &str, reason: impl std::fmt::Display) -> Result<T, StreamError> {
    refuse(format!("{field}: {reason}"))
}

#[derive(Debug)]
enum State {
    AwaitingStart,
    Streaming {
        started_at: UnixMillis,
        next_seq: u32,
        total: u64,
        hasher: Box<blake3::Hasher>,
    },
    Ended,
}

/// Checks one stream, message by message. After an error the stream is over: the service drops
/// it and commits nothing.
#[derive(Debug)]
pub struct CallStream {
    limits: StreamLimits,
    now: UnixMillis,
    state: State,
}

impl CallStream {
    /// A stream received at `now` (the receiving node's clock) under `limits`.
    pub fn new(limits: StreamLimits, now: UnixMillis) -> Self {
        CallStream {
            limits,
            now,
            state: State::AwaitingStart,
        }
    }

    /// Checks the next message.
    pub fn accept(&mut self, part: StreamPart<'_>) -> Result<Accepted, StreamError> {
        match (&mut self.state, part) {
            (_, StreamPart::Empty) => refuse("a message with no part"),
            (State::AwaitingStart, StreamPart::Start(fields)) => {
                let start = check_start(fields, self.now, &self.limits)?;
                self.state = State::Streaming {
                    started_at: start.started_at,
                    next_seq: 0,
                    total: 0,
                    hasher: Box::default(),
                };
                Ok(Accepted::Started(start))
            }
            (State::AwaitingStart, _) => refuse("the first message must be CallStart"),
            (State::Streaming { .. }, StreamPart::Start(_)) => refuse("a second CallStart"),
            (
                State::Streaming {
                    next_seq,
                    total,
                    hasher,
                    ..
                },
                StreamPart::Chunk { seq, data },
            ) => {
                check_chunk(*next_seq, *total, seq, data, &self.limits)?;
                *next_seq += 1;
                *total += data.len() as u64;
                hasher.update(data);
                Ok(Accepted::Chunk)
            }
            (
                State::Streaming {
                    started_at,
                    next_seq,
                    total,
                    hasher,
                },
                StreamPart::End {
                    ended_at,
                    byte_length,
                    plaintext_blake3,
                },
            ) => {
                let digest = *hasher.finalize().as_bytes();
                let ended_at = check_end(*started_at, ended_at, &self.limits)?;
                if byte_length != *total {
                    return refuse(format!(
                        "CallEnd says {byte_length} bytes but {total} were sent; nothing was committed"
                    ));
                }
                if plaintext_blake3 != digest {
                    return refuse(
                        "plaintext_blake3 does not match the audio received; nothing was committed",
                    );
                }
                let audio = StreamedAudio {
                    ended_at,
                    byte_length,
                    chunk_count: *next_seq,
                    plaintext_digest: digest,
                };
                self.state = State::Ended;
                Ok(Accepted::Ended(audio))
            }
            (State::Ended, _) => refuse("messages after CallEnd; nothing was committed"),
        }
    }

    /// The stream closed: fine only after `CallEnd`.
    pub fn finish(&self) -> Result<(), StreamError> {
        match self.state {
            State::Ended => Ok(()),
            State::AwaitingStart => refuse("an empty stream"),
            State::Streaming { .. } => {
                refuse("the stream ended without CallEnd; nothing was committed")
            }
        }
    }
}

/// Checks a `CallStart` against the receiving node's clock.
pub fn check_start(
    fields: &CallStartFields,
    now: UnixMillis,
    limits: &StreamLimits,
) -> Result<CallStart, StreamError> {
    let jurisdiction =
        Jurisdiction::from_code(&fields.jurisdiction).or_else(|e| bad_field("jurisdiction", e))?;
    let call_id = CallId::new(&fields.call_id).or_else(|e| bad_field("call_id", e))?;
    check_party_id("facility id", &fields.facility_id).or_else(|e| bad_field("facility_id", e))?;
    check_party_id("inmate id", &fields.inmate_id).or_else(|e| bad_field("inmate_id", e))?;
    // Never guessed: a number that does not normalize is not recorded by default.
    let number = normalize(&fields.dialed_number)
        .or_else(|e| bad_field("dialed_number", format!("{e}; the call was not recorded")))?;
    let Some(direction) = fields.direction else {
        return bad_field("direction", "must be OUTBOUND or INBOUND");
    };
    let Some(started_at) = fields.started_at else {
        return bad_field("started_at", "missing or out of range");
    };
    if started_at.0 > now.0.saturating_add(MAX_FUTURE_START_MILLIS) {
        return bad_field("started_at", "more than 5 minutes in the future");
    }
    let oldest = now
        .0
        .saturating_sub(limits.max_call_millis())
        .saturating_sub(MAX_START_AGE_MILLIS);
    if started_at.0 < oldest {
        return bad_field(
            "started_at",
            "older than a day plus the longest call; live ingest only",
        );
    }
    Ok(CallStart {
        call_id,
        jurisdiction,
        facility_id: fields.facility_id.clone(),
        inmate_id: fields.inmate_id.clone(),
        number,
        direction,
        started_at,
        notice_accepted: fields.notice_accepted,
    })
}

fn check_chunk(
    next_seq: u32,
    total: u64,
    seq: u32,
    data: &[u8],
    limits: &StreamLimits,
) -> Result<(), StreamError> {
    if seq != next_seq {
        let how = if seq < next_seq {
            "repeated"
        } else {
            "out of order"
        };
        return refuse(format!(
            "chunk seq {seq} {how}: expected {next_seq}; nothing was committed"
        ));
    }
    if data.is_empty() || data.len() > MAX_AUDIO_CHUNK {
        return refuse(format!(
            "chunk {seq} has {} bytes: chunks carry 1 byte to 1 MiB",
            data.len()
        ));
    }
    if next_seq >= MAX_CHUNKS_PER_CALL {
        return refuse(format!(
            "more than {MAX_CHUNKS_PER_CALL} chunks in one call"
        ));
    }
    if total.saturating_add(data.len() as u64) > limits.max_call_bytes {
        return refuse(format!(
            "the call exceeds {} bytes of audio; nothing was committed",
            limits.max_call_bytes
        ));
    }
    Ok(())
}

fn check_end(
    started_at: UnixMillis,
    ended_at: Option<UnixMillis>,
    limits: &StreamLimits,
) -> Result<UnixMillis, StreamError> {
    let Some(ended_at) = ended_at else {
        return bad_field("ended_at", "missing or out of range");
    };
    if ended_at < started_at {
        return refuse("ended_at is before started_at");
    }
    // Both are i64, so the difference fits in i128 whatever they are.
    let length = i128::from(ended_at.0) - i128::from(started_at.0);
    if length > i128::from(limits.max_call_millis()) {
        return refuse(format!(
            "the call is longer than {} seconds",
            limits.max_call_seconds
        ));
    }
    Ok(ended_at)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixMillis = UnixMillis(1_764_000_000_000);
    const LIMITS: StreamLimits = StreamLimits {
        max_call_seconds: 3600,
        max_call_bytes: 10,
    };

    fn fields() -> CallStartFields {
        CallStartFields {
            call_id: "c-1".into(),
            jurisdiction: "US-TX".into(),
            facility_id: "fac-1".into(),
            inmate_id: "inm-1".into(),
            dialed_number: "(512) 555-0100".into(),
            direction: Some(Direction::Outbound),
            started_at: Some(NOW),
            notice_accepted: true,
        }
    }

    fn end(ended_at: i64, byte_length: u64, digest: &[u8]) -> StreamPart<'_> {
        StreamPart::End {
            ended_at: Some(UnixMillis(ended_at)),
            byte_length,
            plaintext_blake3: digest,
        }
    }

    #[test]
    fn a_well_formed_stream_is_accepted_with_its_audio() {
        let mut stream = CallStream::new(LIMITS, NOW);
        let start = fields();
        assert!(matches!(
            stream.accept(StreamPart::Start(&start)),
            Ok(Accepted::Started(s)) if s.number.as_str() == "+15125550100"
        ));
        for (seq, data) in [b"abc".as_slice(), b"defg"].into_iter().enumerate() {
            let part = StreamPart::Chunk {
                seq: seq as u32,
                data,
            };
            assert_eq!(stream.accept(part), Ok(Accepted::Chunk));
        }
        let digest = blake3::hash(b"abcdefg");
        let ended = stream.accept(end(NOW.0 + 60_000, 7, digest.as_bytes()));
        assert_eq!(
            ended,
            Ok(Accepted::Ended(StreamedAudio {
                ended_at: UnixMillis(NOW.0 + 60_000),
                byte_length: 7,
                chunk_count: 2,
                plaintext_digest: *digest.as_bytes(),
            }))
        );
        assert_eq!(stream.finish(), Ok(()));
    }

    #[test]
    fn every_rule_refuses_its_breach() {
        let start = fields();
        let streamed = || {
            let mut s = CallStream::new(LIMITS, NOW);
            s.accept(StreamPart::Start(&start)).unwrap();
            s
        };
        let chunk = |seq, data| StreamPart::Chunk { seq, data };
        let refused = |mut s: CallStream, part| s.accept(part).is_err();
        assert!(refused(CallStream::new(LIMITS, NOW), chunk(0, b"a")));
        assert!(refused(streamed(), StreamPart::Start(&start)));
        assert!(refused(streamed(), StreamPart::Empty));
        assert!(refused(streamed(), chunk(1, b"a")));
        assert!(refused(streamed(), chunk(0, b"")));
        assert!(refused(streamed(), chunk(0, b"0123456789a")));
        let empty = blake3::hash(b"");
        assert!(refused(streamed(), end(NOW.0 - 1, 0, empty.as_bytes())));
        assert!(refused(
            streamed(),
            end(NOW.0 + 3_600_001, 0, empty.as_bytes())
        ));
        assert!(refused(streamed(), end(NOW.0, 1, empty.as_bytes())));
        assert!(refused(streamed(), end(NOW.0, 0, &[0; 32])));
        assert!(streamed().finish().is_err());
        assert!(CallStream::new(LIMITS, NOW).finish().is_err());

        let mut late = streamed();
        late.accept(end(NOW.0, 0, empty.as_bytes())).unwrap();
        assert!(refused(late, chunk(0, b"a")));
    }

    #[test]
    fn starts_are_checked_against_the_clock_and_the_rules() {
        let check = |f: CallStartFields| check_start(&f, NOW, &LIMITS);
        assert!(check(fields()).is_ok());
        let future = UnixMillis(NOW.0 + MAX_FUTURE_START_MILLIS + 1);
        let old = UnixMillis(NOW.0 - 3_600_000 - MAX_START_AGE_MILLIS - 1);
        for bad in [
            CallStartFields {
                jurisdiction: "US-XX".into(),
                ..fields()
            },
            CallStartFields {
                call_id: "bad id".into(),
                ..fields()
            },
            CallStartFields {
                dialed_number: "555-0100".into(),
                ..fields()
            },
            CallStartFields {
                direction: None,
                ..fields()
            },
            CallStartFields {
                started_at: Some(future),
                ..fields()
            },
            CallStartFields {
                started_at: Some(old),
                ..fields()
            },
        ] {
            assert!(check(bad).is_err());
        }
    }

    #[test]
    fn extreme_clocks_and_limits_do_not_overflow() {
        let limits = StreamLimits {
            max_call_seconds: u64::MAX,
            max_call_bytes: u64::MAX,
        };
        let start = CallStartFields {
            started_at: Some(UnixMillis(i64::MIN)),
            ..fields()
        };
        assert!(check_start(&start, UnixMillis(i64::MIN), &limits).is_ok());
        assert!(check_start(&fields(), UnixMillis(i64::MAX), &limits).is_ok());
        // The longest limit is i64::MAX milliseconds; a longer span is refused, not wrapped.
        assert!(check_end(UnixMillis(0), Some(UnixMillis(i64::MAX)), &limits).is_ok());
        assert!(check_end(UnixMillis(i64::MIN), Some(UnixMillis(i64::MAX)), &limits).is_err());
    }
}
