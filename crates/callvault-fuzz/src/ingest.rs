//! Whole `RecordCall` message sequences against the stream's rules.
//!
//! The input is structured (`arbitrary`) so that well-formed streams are common and every rule
//! is one mutation away: sequence numbers are mostly "the next one", lengths and digests mostly
//! "the right one", fields mostly valid samples. Each message goes through [`CallStream`] as the
//! ingest service feeds it, and through [`Model`], the rules restated plainly; the two must agree
//! on every message, and on the audio of a stream that ends.

use arbitrary::{Arbitrary, Unstructured};
use callvault_core::call::{CallId, Direction, check_party_id};
use callvault_core::ingest::{
    Accepted, CallStartFields, CallStream, MAX_AUDIO_CHUNK, StreamLimits, StreamPart, StreamedAudio,
};
use callvault_core::{Jurisdiction, UnixMillis};

const CALL_IDS: &[&str] = &["c-1", "tx:huntsville.2026-11-30_000123"];
const JURISDICTIONS: &[&str] = &["US-TX", "US-CA", "US-DC"];
const PARTIES: &[&str] = &["fac-1", "inm-00042"];
const NUMBERS: &[&str] = &["(512) 555-0100", "+44 20 7946 0958", "tel:+1-415-555-0100"];

/// A text field: mostly a valid sample, sometimes anything.
#[derive(Arbitrary, Debug)]
enum Text {
    Sample(u8),
    Raw(String),
}

impl Text {
    fn pick(&self, samples: &[&str]) -> String {
        match self {
            Text::Sample(i) => samples[usize::from(*i) % samples.len()].to_string(),
            Text::Raw(text) => text.clone(),
        }
    }
}

/// A protobuf timestamp: near the node's clock, anything, or missing.
#[derive(Arbitrary, Debug)]
enum Time {
    Missing,
    /// Milliseconds from the reference time.
    Near(i32),
    /// Seconds and nanoseconds as sent.
    Raw(i64, i32),
}

impl Time {
    /// Seconds and nanoseconds, as a platform sends them.
    fn timestamp(&self, reference: i64) -> Option<(i64, i32)> {
        match *self {
            Time::Missing => None,
            Time::Near(offset) => {
                let t = reference.saturating_add(i64::from(offset));
                Some((t.div_euclid(1000), (t.rem_euclid(1000) * 1_000_000) as i32))
            }
            Time::Raw(seconds, nanos) => Some((seconds, nanos)),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Start {
    call_id: Text,
    jurisdiction: Text,
    facility_id: Text,
    inmate_id: Text,
    dialed_number: Text,
    /// The protobuf enum's number: 1 outbound, 2 inbound, anything else refused.
    direction: u8,
    started_at: Time,
    notice_accepted: bool,
}

#[derive(Arbitrary, Debug)]
enum Seq {
    Next,
    Raw(u32),
}

#[derive(Arbitrary, Debug)]
enum Length {
    Exact,
    Raw(u64),
}

#[derive(Arbitrary, Debug)]
enum Digest {
    Exact,
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Message {
    Start(Start),
    Chunk {
        seq: Seq,
        data: Vec<u8>,
    },
    End {
        ended_at: Time,
        byte_length: Length,
        digest: Digest,
    },
    Empty,
}

#[derive(Arbitrary, Debug)]
struct Stream {
    now: Time,
    max_call_seconds: u64,
    max_call_bytes: u16,
    messages: Vec<Message>,
    closed: bool,
}

/// The fixed clock streams are received at, unless the input picks another.
const NOW: i64 = 1_764_460_800_000;

/// A timestamp in milliseconds, the plain way: nanoseconds within a second, and the result
/// within `i64`.
fn model_millis(timestamp: Option<(i64, i32)>) -> Option<i64> {
    let (seconds, nanos) = timestamp?;
    if !(0..1_000_000_000).contains(&nanos) {
        return None;
    }
    let millis = i128::from(seconds) * 1000 + i128::from(nanos / 1_000_000);
    i64::try_from(millis).ok()
}

fn to_millis(timestamp: Option<(i64, i32)>) -> Option<UnixMillis> {
    let (seconds, nanos) = timestamp?;
    UnixMillis::from_timestamp(seconds, nanos)
}

/// The rules of a stream, restated plainly with wide integers.
struct Model {
    now: i64,
    max_call_millis: i128,
    max_call_bytes: u64,
    started_at: Option<i64>,
    audio: Vec<u8>,
    chunks: u32,
    ended: bool,
}

impl Model {
    fn start(&mut self, f: &CallStartFields) -> bool {
        let fields_ok = Jurisdiction::from_code(&f.jurisdiction).is_ok()
            && CallId::new(&f.call_id).is_ok()
            && check_party_id("facility", &f.facility_id).is_ok()
            && check_party_id("inmate", &f.inmate_id).is_ok()
            && callvault_core::normalize(&f.dialed_number).is_ok()
            && f.direction.is_some();
        let Some(started) = f.started_at.map(|t| t.0) else {
            return false;
        };
        let newest = i128::from(self.now) + 5 * 60_000;
        let oldest = i128::from(self.now) - self.max_call_millis - 86_400_000;
        let in_window = (oldest..=newest).contains(&i128::from(started));
        if fields_ok && in_window {
            self.started_at = Some(started);
        }
        fields_ok && in_window
    }

    fn chunk(&mut self, seq: u32, data: &[u8]) -> bool {
        let ok = seq == self.chunks
            && (1..=MAX_AUDIO_CHUNK).contains(&data.len())
            && self.chunks < 100_000
            && (self.audio.len() + data.len()) as u64 <= self.max_call_bytes;
        if ok {
            self.chunks += 1;
            self.audio.extend_from_slice(data);
        }
        ok
    }

    fn end(&mut self, ended_at: Option<i64>, length: u64, digest: &[u8]) -> Option<StreamedAudio> {
        let started = self.started_at?;
        let ended = ended_at?;
        let duration = i128::from(ended) - i128::from(started);
        let hash = blake3::hash(&self.audio);
        let ok = duration >= 0
            && duration <= self.max_call_millis
            && length == self.audio.len() as u64
            && digest == hash.as_bytes();
        self.ended = ok;
        ok.then(|| StreamedAudio {
            ended_at: UnixMillis(ended),
            byte_length: length,
            chunk_count: self.chunks,
            plaintext_digest: *hash.as_bytes(),
        })
    }
}

fn start_fields(start: &Start, now: i64) -> CallStartFields {
    CallStartFields {
        call_id: start.call_id.pick(CALL_IDS),
        jurisdiction: start.jurisdiction.pick(JURISDICTIONS),
        facility_id: start.facility_id.pick(PARTIES),
        inmate_id: start.inmate_id.pick(PARTIES),
        dialed_number: start.dialed_number.pick(NUMBERS),
        direction: match start.direction {
            1 => Some(Direction::Outbound),
            2 => Some(Direction::Inbound),
            _ => None,
        },
        started_at: to_millis(start.started_at.timestamp(now)),
        notice_accepted: start.notice_accepted,
    }
}

/// The `ingest_stream` target.
pub fn stream(bytes: &[u8]) {
    let Ok(input) = Stream::arbitrary_take_rest(Unstructured::new(bytes)) else {
        return;
    };
    let now_stamp = input.now.timestamp(NOW);
    let Some(now) = model_millis(now_stamp) else {
        return;
    };
    assert_eq!(
        to_millis(now_stamp),
        Some(UnixMillis(now)),
        "timestamp conversion"
    );
    let limits = StreamLimits {
        max_call_seconds: input.max_call_seconds,
        max_call_bytes: u64::from(input.max_call_bytes),
    };
    let mut rules = CallStream::new(limits, UnixMillis(now));
    let mut model = Model {
        now,
        max_call_millis: i128::from(input.max_call_seconds) * 1000,
        max_call_bytes: limits.max_call_bytes,
        started_at: None,
        audio: Vec::new(),
        chunks: 0,
        ended: false,
    };
    for (i, message) in input.messages.iter().enumerate() {
        let reference = model.started_at.unwrap_or(now);
        let (fields, digest_bytes);
        let (part, expected) = match message {
            Message::Start(start) => {
                fields = start_fields(start, now);
                let first = i == 0;
                let ok = first && model.start(&fields);
                (StreamPart::Start(&fields), ok.then_some(None))
            }
            Message::Chunk { seq, data } => {
                let seq = match seq {
                    Seq::Next => model.chunks,
                    Seq::Raw(seq) => *seq,
                };
                let ok = model.started_at.is_some() && !model.ended && model.chunk(seq, data);
                (StreamPart::Chunk { seq, data }, ok.then_some(None))
            }
            Message::End {
                ended_at,
                byte_length,
                digest,
            } => {
                let stamp = ended_at.timestamp(reference);
                let length = match byte_length {
                    Length::Exact => model.audio.len() as u64,
                    Length::Raw(length) => *length,
                };
                digest_bytes = match digest {
                    Digest::Exact => blake3::hash(&model.audio).as_bytes().to_vec(),
                    Digest::Raw(bytes) => bytes.clone(),
                };
                let audio = if model.started_at.is_some() && !model.ended {
                    model.end(model_millis(stamp), length, &digest_bytes)
                } else {
                    None
                };
                let part = StreamPart::End {
                    ended_at: to_millis(stamp),
                    byte_length: length,
                    plaintext_blake3: &digest_bytes,
                };
                (part, audio.map(Some))
            }
            Message::Empty => (StreamPart::Empty, None),
        };
        let got = rules.accept(part);
        match (&got, expected) {
            (Ok(Accepted::Started(_) | Accepted::Chunk), Some(None)) => {}
            (Ok(Accepted::Ended(audio)), Some(Some(want))) => assert_eq!(*audio, want),
            (Err(_), None) => return,
            _ => {
                panic!("message {i} ({message:?}): the rules said {got:?}, the model {expected:?}")
            }
        }
    }
    if input.closed {
        assert_eq!(
            rules.finish().is_ok(),
            model.ended,
            "closing the stream: the rules and the model disagree"
        );
    }
}
