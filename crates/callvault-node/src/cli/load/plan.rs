//! The load generator's call plan, with no I/O: which jurisdiction, facility, person and number
//! each call has, how long it lasts, and the messages of its `RecordCall` stream. Every call is a
//! pure function of the seed and its index, so a plan is reproducible and needs no memory per
//! call however many calls a run makes.

use std::collections::BTreeSet;

use anyhow::{bail, ensure};
use callvault_core::jurisdiction::Jurisdiction;
use callvault_core::phone::{E164, normalize};
use callvault_proto::v1 as pb;
use callvault_proto::v1::record_call_request::Part;
use rand::rngs::{SmallRng, StdRng};
use rand::{Rng, RngCore, SeedableRng};

use crate::cli::client::timestamp_from_millis;

/// G.711 audio is 8000 bytes a second.
pub const BYTES_PER_MS: u64 = 8;
/// The ingest API's largest chunk, 1 MiB, in milliseconds of G.711.
pub const MAX_CHUNK_MS: u32 = 1024 * 1024 / BYTES_PER_MS as u32;
/// Shortest and longest call, in seconds.
pub const MIN_CALL_SECONDS: f64 = 5.0;
/// Correctional calls are commonly cut off at 30 minutes.
pub const MAX_CALL_SECONDS: f64 = 1800.0;
/// Spread of the log-normal call length: median ≈ 0.73 × mean, a long right tail.
const LENGTH_SIGMA: f64 = 0.8;
/// Attorney numbers are drawn from 555-0100..=555-0199, the range reserved for fiction, and no
/// other call dials exchange 555: no ordinary call can hit a number a run registered.
const ATTORNEY_EXCHANGE: u16 = 555;
/// Share of ordinary calls dialing out of state.
const OUT_OF_STATE_SHARE: f64 = 0.15;
const FACILITIES_PER_JURISDICTION: u64 = 6;
const INMATES_PER_JURISDICTION: u64 = 2000;

/// How a number is written, as platforms and registrants variously do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberFormat {
    /// `(512) 555-0142`
    Parenthesized,
    /// `+1 512-555-0142`
    InternationalDashes,
    /// `512.555.0142`
    Dotted,
    /// `tel:+15125550142`
    TelUri,
    /// `1-512-555-0142`
    TrunkDashes,
    /// `5125550142`
    Digits,
}

impl NumberFormat {
    /// Every format.
    pub const ALL: [NumberFormat; 6] = [
        NumberFormat::Parenthesized,
        NumberFormat::InternationalDashes,
        NumberFormat::Dotted,
        NumberFormat::TelUri,
        NumberFormat::TrunkDashes,
        NumberFormat::Digits,
    ];
}

/// A NANP number: area code, exchange, line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct UsNumber {
    /// Area code, e.g. 512.
    pub area: u16,
    /// Exchange (central office code), e.g. 555.
    pub exchange: u16,
    /// Line number, 0..=9999.
    pub line: u16,
}

impl UsNumber {
    /// The number written in `format`.
    pub fn format(self, format: NumberFormat) -> String {
        let UsNumber {
            area,
            exchange,
            line,
        } = self;
        match format {
            NumberFormat::Parenthesized => format!("({area}) {exchange}-{line:04}"),
            NumberFormat::InternationalDashes => format!("+1 {area}-{exchange}-{line:04}"),
            NumberFormat::Dotted => format!("{area}.{exchange}.{line:04}"),
            NumberFormat::TelUri => format!("tel:+1{area}{exchange}{line:04}"),
            NumberFormat::TrunkDashes => format!("1-{area}-{exchange}-{line:04}"),
            NumberFormat::Digits => format!("{area}{exchange}{line:04}"),
        }
    }
}

/// An attorney number the run registers before streaming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attorney {
    /// Where it is registered.
    pub jurisdiction: Jurisdiction,
    /// The number.
    pub number: UsNumber,
    /// How it is written in the registration; calls dial it written differently.
    pub registered_format: NumberFormat,
    /// Its canonical form, as callvault must store it.
    pub normalized: E164,
}

impl Attorney {
    /// The text sent to `RegisterPrivilegedNumber`.
    pub fn registered_as(&self) -> String {
        self.number.format(self.registered_format)
    }
}

/// What a run generates; see `callvault load --help` for each field's meaning.
#[derive(Debug, Clone)]
pub struct PlanConfig {
    /// Seeds every random choice.
    pub seed: u64,
    /// Makes call ids unique per run.
    pub run_id: String,
    /// Calls are spread evenly over these.
    pub jurisdictions: Vec<Jurisdiction>,
    /// Share of calls dialing a registered attorney number, 0..=1.
    pub attorney_share: f64,
    /// Attorney numbers registered per jurisdiction.
    pub attorneys_per_jurisdiction: usize,
    /// Mean call length before clamping, in seconds.
    pub mean_seconds: f64,
    /// Audio per chunk, in milliseconds.
    pub chunk_ms: u32,
}

/// One planned call.
#[derive(Debug, Clone, PartialEq)]
pub struct CallPlan {
    /// Position in the run, from 0.
    pub index: u64,
    /// `load-<run>-<index>`.
    pub call_id: String,
    /// Where the call is filed.
    pub jurisdiction: Jurisdiction,
    /// Facility it was placed from.
    pub facility_id: String,
    /// The incarcerated person.
    pub inmate_id: String,
    /// The number as dialed.
    pub dialed_number: String,
    /// Whether it dials a registered attorney (and so must not be recorded).
    pub attorney: bool,
    /// Call length.
    pub duration_ms: u64,
    /// When it connected, in Unix milliseconds.
    pub started_at_millis: i64,
    /// Seeds the call's audio bytes.
    pub audio_seed: u64,
}

impl CallPlan {
    /// Plaintext audio bytes of the call.
    pub fn byte_length(&self) -> u64 {
        self.duration_ms * BYTES_PER_MS
    }
}

/// A validated configuration and the attorney numbers it registers.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    config: PlanConfig,
    attorneys: Vec<Vec<Attorney>>,
}

impl LoadPlan {
    /// Checks the configuration and draws the attorney numbers.
    pub fn new(config: PlanConfig) -> anyhow::Result<LoadPlan> {
        ensure!(!config.jurisdictions.is_empty(), "no jurisdictions");
        ensure!(
            (0.0..=1.0).contains(&config.attorney_share),
            "--attorney-share must be within 0..=1"
        );
        ensure!(
            (MIN_CALL_SECONDS..=MAX_CALL_SECONDS).contains(&config.mean_seconds),
            "--mean-seconds must be within {MIN_CALL_SECONDS}..={MAX_CALL_SECONDS}"
        );
        ensure!(
            (1..=MAX_CHUNK_MS).contains(&config.chunk_ms),
            "--chunk-ms must be within 1..={MAX_CHUNK_MS} (chunks are at most 1 MiB)"
        );
        ensure!(
            (1..=100).contains(&config.attorneys_per_jurisdiction),
            "--attorneys-per-jurisdiction must be within 1..=100"
        );
        ensure!(
            (1..=64).contains(&config.run_id.len())
                && config
                    .run_id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b)),
            "--run-id must be 1 to 64 characters of [A-Za-z0-9._:-]"
        );
        let attorneys = config
            .jurisdictions
            .iter()
            .map(|&j| draw_attorneys(config.seed, j, config.attorneys_per_jurisdiction))
            .collect::<anyhow::Result<_>>()?;
        Ok(LoadPlan { config, attorneys })
    }

    /// The configuration.
    pub fn config(&self) -> &PlanConfig {
        &self.config
    }

    /// Every attorney number, jurisdiction by jurisdiction.
    pub fn attorneys(&self) -> impl Iterator<Item = &Attorney> {
        self.attorneys.iter().flatten()
    }

    /// Audio bytes per chunk.
    pub fn chunk_bytes(&self) -> usize {
        self.config.chunk_ms as usize * BYTES_PER_MS as usize
    }

    /// Call number `index`, started a few minutes plus its length before `now_millis`.
    pub fn call(&self, index: u64, now_millis: i64) -> anyhow::Result<CallPlan> {
        let config = &self.config;
        let mut rng = StdRng::seed_from_u64(mix(config.seed, index));
        let slot = rng.random_range(0..config.jurisdictions.len());
        let jurisdiction = config.jurisdictions[slot];
        let state = jurisdiction
            .code()
            .trim_start_matches("US-")
            .to_ascii_lowercase();
        let facility_id = format!(
            "{state}-unit-{:02}",
            rng.random_range(1..=FACILITIES_PER_JURISDICTION)
        );
        let inmate_id = format!(
            "{state}-{:07}",
            rng.random_range(1..=INMATES_PER_JURISDICTION)
        );
        let attorney = rng.random_bool(config.attorney_share);
        let dialed_number = if attorney {
            let choices = &self.attorneys[slot];
            let chosen = &choices[rng.random_range(0..choices.len())];
            dial_differently(chosen, &mut rng)
        } else {
            ordinary_number(jurisdiction, &mut rng)?
        };
        let duration_ms = (call_seconds(config.mean_seconds, &mut rng) * 1000.0) as u64;
        let before_start_ms = rng.random_range(30_000..=300_000) + duration_ms as i64;
        Ok(CallPlan {
            index,
            call_id: format!("load-{}-{index}", config.run_id),
            jurisdiction,
            facility_id,
            inmate_id,
            dialed_number,
            attorney,
            duration_ms,
            started_at_millis: now_millis - before_start_ms,
            audio_seed: rng.random(),
        })
    }
}

/// A call length in seconds: log-normal with the given mean, clamped to the allowed range.
pub fn call_seconds(mean_seconds: f64, rng: &mut impl Rng) -> f64 {
    // Box–Muller: u1 in (0, 1] so its logarithm is finite.
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    let mu = mean_seconds.ln() - LENGTH_SIGMA * LENGTH_SIGMA / 2.0;
    (mu + LENGTH_SIGMA * z)
        .exp()
        .clamp(MIN_CALL_SECONDS, MAX_CALL_SECONDS)
}

/// The attorney's number in a format other than the registered one.
fn dial_differently(attorney: &Attorney, rng: &mut impl Rng) -> String {
    let registered = NumberFormat::ALL
        .iter()
        .position(|f| *f == attorney.registered_format)
        .unwrap_or(0);
    let shift = rng.random_range(1..NumberFormat::ALL.len());
    let format = NumberFormat::ALL[(registered + shift) % NumberFormat::ALL.len()];
    attorney.number.format(format)
}

fn random_format(rng: &mut impl Rng) -> NumberFormat {
    NumberFormat::ALL[rng.random_range(0..NumberFormat::ALL.len())]
}

/// A valid number outside the attorney exchange, mostly in the jurisdiction's area codes.
fn ordinary_number(jurisdiction: Jurisdiction, rng: &mut impl Rng) -> anyhow::Result<String> {
    let local = area_codes(jurisdiction);
    for _ in 0..32 {
        let pool = if rng.random_bool(OUT_OF_STATE_SHARE) {
            NATIONAL_AREA_CODES
        } else {
            local
        };
        let exchange = rng.random_range(200..=999);
        if exchange == ATTORNEY_EXCHANGE || exchange % 100 == 11 {
            continue;
        }
        let number = UsNumber {
            area: pool[rng.random_range(0..pool.len())],
            exchange,
            line: rng.random_range(0..=9999),
        };
        let text = number.format(random_format(rng));
        if normalize(&text).is_ok() {
            return Ok(text);
        }
    }
    bail!("could not draw a valid number for {jurisdiction}")
}

fn draw_attorneys(
    seed: u64,
    jurisdiction: Jurisdiction,
    count: usize,
) -> anyhow::Result<Vec<Attorney>> {
    let mut rng = StdRng::seed_from_u64(mix(seed ^ 0xA770_43E7, u64::from(jurisdiction.index())));
    let areas = area_codes(jurisdiction);
    let mut seen = BTreeSet::new();
    let mut attorneys = Vec::with_capacity(count);
    for _ in 0..count * 50 {
        if attorneys.len() == count {
            break;
        }
        let number = UsNumber {
            area: areas[rng.random_range(0..areas.len())],
            exchange: ATTORNEY_EXCHANGE,
            line: rng.random_range(100..=199),
        };
        if !seen.insert(number) {
            continue;
        }
        let registered_format = random_format(&mut rng);
        let Ok(normalized) = normalize(&number.format(registered_format)) else {
            continue;
        };
        attorneys.push(Attorney {
            jurisdiction,
            number,
            registered_format,
            normalized,
        });
    }
    ensure!(
        attorneys.len() == count,
        "could not draw {count} attorney numbers for {jurisdiction}"
    );
    Ok(attorneys)
}

/// One well-spread 64-bit seed from two (SplitMix64's finalizer).
fn mix(seed: u64, index: u64) -> u64 {
    let mut z = seed ^ index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The messages of one call's `RecordCall` stream, made lazily: `CallStart`, the audio chunks
/// with seq 0, 1, 2, ..., then `CallEnd` carrying the length and BLAKE3 of all the audio.
pub struct CallStream {
    start: Option<pb::CallStart>,
    audio: SmallRng,
    hasher: blake3::Hasher,
    chunk_bytes: u64,
    byte_length: u64,
    sent: u64,
    seq: u32,
    ended_at_millis: i64,
    finished: bool,
}

impl CallStream {
    /// The stream of `call`, cut into chunks of `chunk_bytes`.
    pub fn new(call: &CallPlan, chunk_bytes: usize) -> CallStream {
        let start = pb::CallStart {
            call_id: call.call_id.clone(),
            jurisdiction: call.jurisdiction.code().to_string(),
            facility_id: call.facility_id.clone(),
            inmate_id: call.inmate_id.clone(),
            dialed_number: call.dialed_number.clone(),
            direction: pb::CallDirection::Outbound as i32,
            started_at: Some(timestamp_from_millis(call.started_at_millis)),
            recording_notice_accepted: true,
        };
        CallStream {
            start: Some(start),
            audio: SmallRng::seed_from_u64(call.audio_seed),
            hasher: blake3::Hasher::new(),
            chunk_bytes: chunk_bytes.max(1) as u64,
            byte_length: call.byte_length(),
            sent: 0,
            seq: 0,
            ended_at_millis: call.started_at_millis + call.duration_ms as i64,
            finished: false,
        }
    }

    fn next_chunk(&mut self) -> pb::AudioChunk {
        let len = self.chunk_bytes.min(self.byte_length - self.sent);
        let mut data = vec![0u8; len as usize];
        self.audio.fill_bytes(&mut data);
        // Never an all-zero chunk, however the generator falls: 0xD5 is A-law silence.
        if let Some(first) = data.first_mut().filter(|b| **b == 0) {
            *first = 0xD5;
        }
        self.hasher.update(&data);
        self.sent += len;
        let chunk = pb::AudioChunk {
            seq: self.seq,
            data,
        };
        self.seq += 1;
        chunk
    }
}

impl Iterator for CallStream {
    type Item = pb::RecordCallRequest;

    fn next(&mut self) -> Option<pb::RecordCallRequest> {
        let part = if let Some(start) = self.start.take() {
            Part::Start(start)
        } else if self.sent < self.byte_length {
            Part::Chunk(self.next_chunk())
        } else if !self.finished {
            self.finished = true;
            Part::End(pb::CallEnd {
                ended_at: Some(timestamp_from_millis(self.ended_at_millis)),
                byte_length: self.byte_length,
                plaintext_blake3: self.hasher.finalize().as_bytes().to_vec(),
            })
        } else {
            return None;
        };
        Some(pb::RecordCallRequest { part: Some(part) })
    }
}

/// Real area codes, a handful per state, for the states a run most likely uses.
fn area_codes(jurisdiction: Jurisdiction) -> &'static [u16] {
    use Jurisdiction as J;
    match jurisdiction {
        J::Tx => &[512, 214, 713, 210, 817, 915, 806, 361, 254, 409, 432, 936],
        J::Ca => &[213, 310, 415, 510, 619, 714, 916, 559, 909, 661, 805, 707],
        J::Fl => &[305, 407, 813, 904, 850, 561, 727, 352, 239, 954],
        J::Ga => &[404, 770, 678, 706, 912, 478, 229],
        J::Ny => &[212, 718, 516, 914, 518, 315, 585, 716, 607, 631],
        J::Pa => &[215, 412, 717, 610, 814, 570, 724],
        J::Oh => &[614, 216, 513, 419, 330, 937, 740],
        J::Il => &[312, 773, 217, 309, 618, 815, 630, 847],
        J::Mi => &[313, 248, 616, 517, 810, 269, 989, 906],
        J::Nc => &[919, 704, 336, 910, 828, 252],
        J::Az => &[602, 480, 520, 623, 928],
        J::La => &[504, 225, 318, 337, 985],
        J::Al => &[205, 334, 256, 251],
        J::Co => &[303, 719, 970, 720],
        J::In => &[317, 219, 812, 765],
        J::Mo => &[314, 816, 417, 573],
        J::Nj => &[201, 609, 732, 973],
        J::Ok => &[405, 918, 580],
        J::Sc => &[803, 843, 864],
        J::Tn => &[615, 901, 865, 423],
        J::Va => &[804, 757, 540, 703],
        J::Wa => &[206, 253, 509, 360],
        J::Dc => &[202],
        _ => NATIONAL_AREA_CODES,
    }
}

/// Area codes across the country, for out-of-state calls and jurisdictions without a list.
const NATIONAL_AREA_CODES: &[u16] = &[
    512, 214, 713, 213, 415, 305, 404, 212, 718, 215, 614, 312, 313, 919, 602, 504, 205, 303, 317,
    314, 201, 405, 803, 615, 804, 206, 202, 702, 801, 503, 612, 414, 501, 601, 502, 410,
];

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_750_000_000_000;

    fn config(seed: u64) -> PlanConfig {
        PlanConfig {
            seed,
            run_id: "t1".to_string(),
            jurisdictions: vec![Jurisdiction::Tx, Jurisdiction::Ca, Jurisdiction::Bop],
            attorney_share: 0.3,
            attorneys_per_jurisdiction: 5,
            mean_seconds: 300.0,
            chunk_ms: 2000,
        }
    }

    fn plan(seed: u64) -> LoadPlan {
        LoadPlan::new(config(seed)).expect("valid config")
    }

    #[test]
    fn every_format_of_an_attorney_normalizes_to_the_registered_number() {
        let plan = plan(7);
        assert_eq!(plan.attorneys().count(), 15);
        for attorney in plan.attorneys() {
            for format in NumberFormat::ALL {
                let text = attorney.number.format(format);
                assert_eq!(
                    normalize(&text).as_ref(),
                    Ok(&attorney.normalized),
                    "{text}"
                );
            }
        }
    }

    #[test]
    fn attorney_calls_dial_a_registered_number_formatted_differently() {
        let plan = plan(11);
        let mut attorney_calls = 0;
        for index in 0..300 {
            let call = plan.call(index, NOW).expect("call");
            let dialed = normalize(&call.dialed_number).expect("valid dialed number");
            let registered = plan
                .attorneys()
                .filter(|a| a.jurisdiction == call.jurisdiction)
                .find(|a| a.normalized == dialed);
            if call.attorney {
                attorney_calls += 1;
                let a = registered.expect("an attorney call dials a registered number");
                assert_ne!(call.dialed_number, a.registered_as());
            } else {
                assert!(
                    plan.attorneys().all(|a| a.normalized != dialed),
                    "ordinary call {} dials an attorney",
                    call.call_id
                );
            }
        }
        assert!((40..=140).contains(&attorney_calls), "{attorney_calls}");
    }

    #[test]
    fn lengths_stay_in_bounds_and_average_near_the_mean() {
        let mut rng = StdRng::seed_from_u64(3);
        let n = 20_000;
        let mut sum = 0.0;
        for _ in 0..n {
            let s = call_seconds(300.0, &mut rng);
            assert!((MIN_CALL_SECONDS..=MAX_CALL_SECONDS).contains(&s), "{s}");
            sum += s;
        }
        let mean = sum / f64::from(n);
        assert!((250.0..=330.0).contains(&mean), "mean {mean}");
        for extreme in [MIN_CALL_SECONDS, MAX_CALL_SECONDS] {
            for _ in 0..1000 {
                let s = call_seconds(extreme, &mut rng);
                assert!((MIN_CALL_SECONDS..=MAX_CALL_SECONDS).contains(&s));
            }
        }
    }

    #[test]
    fn the_plan_is_deterministic_for_a_seed() {
        let (a, b, c) = (plan(5), plan(5), plan(6));
        assert_eq!(
            a.attorneys().collect::<Vec<_>>(),
            b.attorneys().collect::<Vec<_>>()
        );
        for index in [0, 1, 99, 12_345] {
            assert_eq!(a.call(index, NOW).ok(), b.call(index, NOW).ok());
        }
        let differs = (0..20).any(|i| a.call(i, NOW).ok() != c.call(i, NOW).ok());
        assert!(differs, "another seed gives another plan");
    }

    #[test]
    fn calls_have_valid_ids_and_end_before_now() {
        let plan = plan(1);
        for index in 0..200 {
            let call = plan.call(index, NOW).expect("call");
            assert_eq!(call.call_id, format!("load-t1-{index}"));
            let ended = call.started_at_millis + call.duration_ms as i64;
            assert!(ended <= NOW - 30_000);
            assert!(!call.facility_id.is_empty() && call.facility_id.len() <= 64);
            assert!(!call.inmate_id.is_empty() && call.inmate_id.len() <= 64);
        }
    }

    #[test]
    fn the_stream_is_start_ordered_chunks_then_an_end_with_the_digest() {
        let plan = plan(9);
        let call = plan.call(4, NOW).expect("call");
        let messages: Vec<_> = CallStream::new(&call, plan.chunk_bytes()).collect();
        let Some(Part::Start(start)) = &messages[0].part else {
            panic!("first message is not CallStart");
        };
        assert_eq!(start.call_id, call.call_id);
        assert!(normalize(&start.dialed_number).is_ok());
        let mut audio = Vec::new();
        for (seq, message) in messages[1..messages.len() - 1].iter().enumerate() {
            let Some(Part::Chunk(chunk)) = &message.part else {
                panic!("message {seq} is not a chunk");
            };
            assert_eq!(chunk.seq as usize, seq);
            assert!(chunk.data.len() <= plan.chunk_bytes());
            assert!(chunk.data.iter().any(|b| *b != 0), "an all-zero chunk");
            audio.extend_from_slice(&chunk.data);
        }
        let Some(Some(Part::End(end))) = messages.last().map(|m| m.part.clone()) else {
            panic!("last message is not CallEnd");
        };
        assert_eq!(end.byte_length, call.byte_length());
        assert_eq!(audio.len() as u64, call.byte_length());
        assert_eq!(
            end.plaintext_blake3,
            blake3::hash(&audio).as_bytes().to_vec()
        );
        let expected_chunks = call.byte_length().div_ceil(plan.chunk_bytes() as u64);
        assert_eq!(messages.len() as u64, expected_chunks + 2);
    }

    #[test]
    fn odd_chunk_sizes_still_sum_to_the_length() {
        let plan = plan(2);
        let call = plan.call(0, NOW).expect("call");
        let total: u64 = CallStream::new(&call, 1000 * 8 + 3)
            .filter_map(|m| match m.part {
                Some(Part::Chunk(c)) => Some(c.data.len() as u64),
                _ => None,
            })
            .sum();
        assert_eq!(total, call.byte_length());
    }

    #[test]
    fn every_listed_area_code_is_valid() {
        for &j in Jurisdiction::ALL {
            for &area in area_codes(j) {
                for exchange in [ATTORNEY_EXCHANGE, 234] {
                    let n = UsNumber {
                        area,
                        exchange,
                        line: 142,
                    };
                    assert!(normalize(&n.format(NumberFormat::Digits)).is_ok(), "{n:?}");
                }
            }
        }
    }

    #[test]
    fn bad_configurations_are_refused() {
        let bad = [
            PlanConfig {
                attorney_share: 1.5,
                ..config(1)
            },
            PlanConfig {
                mean_seconds: 2.0,
                ..config(1)
            },
            PlanConfig {
                chunk_ms: 0,
                ..config(1)
            },
            PlanConfig {
                chunk_ms: MAX_CHUNK_MS + 1,
                ..config(1)
            },
            PlanConfig {
                run_id: "has space".to_string(),
                ..config(1)
            },
            PlanConfig {
                jurisdictions: vec![],
                ..config(1)
            },
        ];
        for config in bad {
            assert!(LoadPlan::new(config.clone()).is_err(), "{config:?}");
        }
    }
}
