//! `callvault load`: streams synthetic calls to `Ingest.RecordCall` and reports what the cluster
//! did with them, including whether any call to a registered attorney was recorded.

mod plan;
mod report;
#[cfg(test)]
mod smoke_test;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use callvault_core::jurisdiction::Jurisdiction;
use callvault_proto::v1 as pb;
use callvault_proto::v1::ingest_client::IngestClient;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use super::client::{
    Authed, ClientArgs, Connection, Secret, code_name, rfc3339, timestamp_from_millis,
    unix_millis_now,
};
pub use plan::{CallPlan, CallStream, LoadPlan, PlanConfig};
pub use report::{CallOutcome, CallResult, LoadReport};

/// A call's whole RPC, audio and commit included, may take this long.
const CALL_TIMEOUT: Duration = Duration::from_secs(600);
/// Messages queued per call stream: a few chunks, so memory stays bounded whatever the length.
const STREAM_DEPTH: usize = 4;
/// Calls spread over these states, among those with the most incarcerated people, by default.
const DEFAULT_JURISDICTIONS: &str =
    "US-TX,US-CA,US-FL,US-GA,US-NY,US-PA,US-OH,US-IL,US-MI,US-NC,US-AZ,US-LA";

/// What to generate; shared by `callvault load` and anyone calling [`run_load`].
#[derive(Debug, Clone, Args)]
pub struct LoadOptions {
    /// Calls to stream.
    #[arg(long, default_value_t = 1000)]
    pub calls: u64,
    /// Calls in flight at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub concurrency: u32,
    /// Jurisdictions to spread calls over (comma-separated codes).
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_JURISDICTIONS)]
    pub jurisdictions: Vec<Jurisdiction>,
    /// Share of calls dialing a registered attorney number (0..=1).
    #[arg(long, default_value_t = 0.05)]
    pub attorney_share: f64,
    /// Attorney numbers registered per jurisdiction (1..=100).
    #[arg(long, default_value_t = 5)]
    pub attorneys_per_jurisdiction: usize,
    /// Mean call length in seconds; lengths are log-normal, clamped to 5..=1800 s.
    #[arg(long, default_value_t = 300.0)]
    pub mean_seconds: f64,
    /// Audio per chunk in milliseconds (G.711: 8 bytes per ms).
    #[arg(long, default_value_t = 2000)]
    pub chunk_ms: u32,
    /// Seeds every random choice: the same seed gives the same calls.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Makes call ids (`load-<run>-<n>`) unique per run; default: the start time.
    #[arg(long)]
    pub run_id: Option<String>,
}

impl Default for LoadOptions {
    /// The command line's defaults, so they are written down once.
    fn default() -> Self {
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            options: LoadOptions,
        }
        // No argument can fail to parse: every field has a valid default (pinned by a test).
        <Defaults as clap::Parser>::parse_from(["load"]).options
    }
}

impl LoadOptions {
    /// Checks the options as [`run_load`] will, without connecting.
    pub fn validate(&self) -> anyhow::Result<()> {
        let run_id = self.run_id.clone().unwrap_or_else(default_run_id);
        LoadPlan::new(self.plan_config(run_id, self.attorney_share)).map(drop)
    }

    fn plan_config(&self, run_id: String, attorney_share: f64) -> PlanConfig {
        PlanConfig {
            seed: self.seed,
            run_id,
            jurisdictions: self.jurisdictions.clone(),
            attorney_share,
            attorneys_per_jurisdiction: self.attorneys_per_jurisdiction,
            mean_seconds: self.mean_seconds,
            chunk_ms: self.chunk_ms,
        }
    }
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    #[command(flatten)]
    options: LoadOptions,
    /// Token with the `registry` role, to register the attorney numbers first. Without it, no
    /// attorney calls are made.
    #[arg(long, env = "CALLVAULT_REGISTRY_TOKEN", hide_env_values = true)]
    registry_token: Option<Secret>,
    /// The registry principal's signing key file (registrations act for a person).
    #[arg(long, env = "CALLVAULT_REGISTRY_KEY_FILE")]
    registry_key: Option<std::path::PathBuf>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
    /// Print each planned call's id and audio bytes, one call a line, and send nothing: for
    /// benches that send the same bytes to another store.
    #[arg(long)]
    plan_only: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// `callvault load`: exits non-zero when a call failed or an attorney call was recorded.
pub async fn run(args: LoadArgs) -> anyhow::Result<ExitCode> {
    if args.plan_only {
        print_plan(&args.options)?;
        return Ok(ExitCode::SUCCESS);
    }
    let token = args.client.token()?;
    args.options.validate()?;
    let channel = super::connect(&args.client.addr, CALL_TIMEOUT).await?;
    let registry_key = args
        .registry_key
        .as_deref()
        .map(super::client::load_signing_key)
        .transpose()?;
    let registry = args.registry_token.as_ref().map(|t| Registry {
        token: t.expose(),
        key: registry_key,
    });
    let report = run_load(channel, token, registry, &args.options).await?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    if !report.violations.is_empty() {
        eprintln!(
            "PRIVILEGE VIOLATION: {} calls to registered attorney numbers were RECORDED: {}",
            report.violations.len(),
            report.violations.join(", ")
        );
    }
    if report.failed_count() > 0 {
        eprintln!("{} calls failed", report.failed_count());
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `--plan-only`: the calls a run with these options would send, as `call-id bytes` lines.
fn print_plan(options: &LoadOptions) -> anyhow::Result<()> {
    let run_id = options.run_id.clone().unwrap_or_else(default_run_id);
    let plan = LoadPlan::new(options.plan_config(run_id, options.attorney_share))?;
    let now = unix_millis_now();
    let mut out = String::new();
    for index in 0..options.calls {
        let call = plan.call(index, now)?;
        out.push_str(&format!("{} {}\n", call.call_id, call.byte_length()));
    }
    print!("{out}");
    Ok(())
}

/// The registry principal the load generator registers attorney numbers as.
pub struct Registry<'a> {
    /// Its token.
    pub token: &'a str,
    /// Its signing key.
    pub key: Option<callvault_proto::proof::SigningKey>,
}

/// Registers the run's attorney numbers (when a registry principal is given), then streams
/// `options.calls` calls through `channel` presenting `token`, `options.concurrency` at a time,
/// with a progress bar on stderr when it is a terminal. Fails only when the run cannot start;
/// what became of each call is in the report.
pub async fn run_load(
    channel: Channel,
    token: &str,
    registry: Option<Registry<'_>>,
    options: &LoadOptions,
) -> anyhow::Result<LoadReport> {
    let conn = Connection::new(channel, token, None)?;
    let run_id = options.run_id.clone().unwrap_or_else(default_run_id);
    let mut attorney_share = options.attorney_share;
    if registry.is_none() && attorney_share > 0.0 {
        eprintln!("warning: no --registry-token (CALLVAULT_REGISTRY_TOKEN): no attorney calls");
        attorney_share = 0.0;
    }
    let plan = LoadPlan::new(options.plan_config(run_id, attorney_share))?;
    if let Some(registry) = registry.filter(|_| attorney_share > 0.0) {
        register_attorneys(&conn.with_principal(registry.token, registry.key)?, &plan).await?;
    }
    stream_calls(&conn, Arc::new(plan), options).await
}

/// Registers every attorney number of the plan, as the load generator.
async fn register_attorneys(conn: &Connection, plan: &LoadPlan) -> anyhow::Result<()> {
    let mut admin = conn.admin();
    let (mut count, mut purged) = (0, 0);
    for attorney in plan.attorneys() {
        let request = pb::RegisterPrivilegedNumberRequest {
            jurisdiction: attorney.jurisdiction.code().to_string(),
            number: attorney.registered_as(),
            kind: pb::PrivilegeKind::Attorney as i32,
            evidence: "load generator".to_string(),
        };
        let what = format!(
            "registering {} in {}",
            request.number, attorney.jurisdiction
        );
        let response = match admin.register_privileged_number(request).await {
            Ok(response) => response.into_inner(),
            // Registered by an earlier run with the same seed.
            Err(status) if status.code() == tonic::Code::AlreadyExists => continue,
            Err(status) => return Err(super::client::rpc_error(status)).context(what),
        };
        anyhow::ensure!(
            response.normalized_number == attorney.normalized.as_str(),
            "{what}: the node normalized it to {}, callvault_core::phone to {}",
            response.normalized_number,
            attorney.normalized
        );
        count += 1;
        purged += response.calls_purged;
    }
    eprintln!("registered {count} attorney numbers ({purged} past recordings purged)");
    Ok(())
}

/// Streams every call of the plan and collects the report.
async fn stream_calls(
    conn: &Connection,
    plan: Arc<LoadPlan>,
    options: &LoadOptions,
) -> anyhow::Result<LoadReport> {
    let progress = progress_bar(options.calls)?;
    let sent_bytes = Arc::new(AtomicU64::new(0));
    let mut report = LoadReport::new(&plan.config().run_id);
    let mut in_flight = JoinSet::new();
    let now = unix_millis_now();
    let started = Instant::now();
    for index in 0..options.calls {
        if in_flight.len() >= options.concurrency as usize
            && let Some(done) = in_flight.join_next().await
        {
            record(&mut report, &progress, &sent_bytes, started, done);
        }
        let call = plan.call(index, now)?;
        in_flight.spawn(record_call(
            conn.ingest(),
            call,
            plan.chunk_bytes(),
            sent_bytes.clone(),
        ));
    }
    while let Some(done) = in_flight.join_next().await {
        record(&mut report, &progress, &sent_bytes, started, done);
    }
    report.wall = started.elapsed();
    progress.finish_and_clear();
    Ok(report)
}

fn record(
    report: &mut LoadReport,
    progress: &ProgressBar,
    sent_bytes: &AtomicU64,
    started: Instant,
    done: Result<CallResult, tokio::task::JoinError>,
) {
    let result = done.unwrap_or_else(|err| CallResult {
        call_id: String::new(),
        attorney: false,
        byte_length: 0,
        outcome: CallOutcome::Failed {
            code: "CLIENT_TASK".to_string(),
            message: err.to_string(),
        },
        ack_latency: None,
    });
    report.add(result);
    let seconds = started.elapsed().as_secs_f64().max(1e-3);
    let mb = sent_bytes.load(Ordering::Relaxed) as f64 / 1e6;
    progress.set_message(format!("{:.1} MB/s", mb / seconds));
    progress.inc(1);
}

/// Streams one call and classifies the answer. The audio is made by a separate task feeding a
/// bounded channel, so a slow node slows the generator instead of filling memory.
async fn record_call(
    mut client: IngestClient<Authed>,
    call: CallPlan,
    chunk_bytes: usize,
    sent_bytes: Arc<AtomicU64>,
) -> CallResult {
    let (tx, rx) = mpsc::channel(STREAM_DEPTH);
    let end_queued = Arc::new(OnceLock::new());
    let producer = tokio::spawn({
        let end_queued = end_queued.clone();
        let stream = CallStream::new(&call, chunk_bytes);
        async move {
            for message in stream {
                let is_end = matches!(message.part, Some(pb::record_call_request::Part::End(_)));
                let audio = match &message.part {
                    Some(pb::record_call_request::Part::Chunk(c)) => c.data.len() as u64,
                    _ => 0,
                };
                // A closed channel means the node already answered (e.g. a privileged call).
                if tx.send(message).await.is_err() {
                    return;
                }
                sent_bytes.fetch_add(audio, Ordering::Relaxed);
                if is_end {
                    let _ = end_queued.set(Instant::now());
                }
            }
        }
    });
    let opened = Instant::now();
    let answer = client.record_call(ReceiverStream::new(rx)).await;
    let answered = Instant::now();
    producer.abort();
    let since = end_queued.get().copied().unwrap_or(opened);
    let (outcome, ack_latency) = match answer {
        Ok(response) => (
            classify(&call, response.into_inner()),
            Some(answered.saturating_duration_since(since)),
        ),
        Err(status) => (
            CallOutcome::Failed {
                code: code_name(status.code()).to_string(),
                message: status.message().to_string(),
            },
            None,
        ),
    };
    CallResult {
        byte_length: call.byte_length(),
        call_id: call.call_id,
        attorney: call.attorney,
        outcome,
        ack_latency,
    }
}

/// What the node's answer means for the call; a recording must carry a receipt that matches it.
fn classify(call: &CallPlan, response: pb::RecordCallResponse) -> CallOutcome {
    let bad = |message: String| CallOutcome::Failed {
        code: "BAD_RESPONSE".to_string(),
        message,
    };
    match pb::Decision::try_from(response.decision) {
        Ok(pb::Decision::Recorded) => match response.receipt {
            Some(r) if r.call_id == call.call_id && r.byte_length == call.byte_length() => {
                CallOutcome::Recorded
            }
            Some(r) => bad(format!(
                "{}: receipt for {} with {} bytes, sent {} bytes",
                call.call_id,
                r.call_id,
                r.byte_length,
                call.byte_length()
            )),
            None => bad(format!("{}: recorded without a receipt", call.call_id)),
        },
        Ok(pb::Decision::NotRecordedPrivileged) => CallOutcome::NotRecorded,
        Ok(pb::Decision::Rejected) => CallOutcome::Rejected(response.reason),
        Ok(pb::Decision::Unspecified) | Err(_) => bad(format!(
            "{}: decision {} ({})",
            call.call_id, response.decision, response.reason
        )),
    }
}

/// A bar on stderr with calls done, calls/s and MB/s, or a hidden one when stderr is no terminal.
fn progress_bar(calls: u64) -> anyhow::Result<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return Ok(ProgressBar::hidden());
    }
    let style = ProgressStyle::with_template(
        "{spinner} {elapsed_precise} [{bar:30}] {pos}/{len} calls  {per_sec}  {msg}",
    )
    .context("progress bar template")?
    .progress_chars("=> ");
    let bar = ProgressBar::new(calls).with_style(style);
    bar.enable_steady_tick(Duration::from_millis(200));
    Ok(bar)
}

/// The start time, compact: `20250612T101502Z`.
fn default_run_id() -> String {
    rfc3339(&timestamp_from_millis(unix_millis_now() / 1000 * 1000)).replace(['-', ':'], "")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call() -> CallPlan {
        CallPlan {
            index: 0,
            call_id: "load-r-0".to_string(),
            jurisdiction: Jurisdiction::Tx,
            facility_id: "tx-unit-01".to_string(),
            inmate_id: "tx-0000001".to_string(),
            dialed_number: "(512) 555-0142".to_string(),
            attorney: false,
            duration_ms: 10_000,
            started_at_millis: 0,
            audio_seed: 1,
        }
    }

    fn response(
        decision: pb::Decision,
        receipt: Option<pb::CommitReceipt>,
    ) -> pb::RecordCallResponse {
        pb::RecordCallResponse {
            decision: decision as i32,
            reason: "why".to_string(),
            receipt,
        }
    }

    #[test]
    fn a_recording_needs_a_matching_receipt() {
        let call = call();
        let good = pb::CommitReceipt {
            call_id: call.call_id.clone(),
            byte_length: call.byte_length(),
            ..Default::default()
        };
        let short = pb::CommitReceipt {
            byte_length: 1,
            ..good.clone()
        };
        assert_eq!(
            classify(&call, response(pb::Decision::Recorded, Some(good))),
            CallOutcome::Recorded
        );
        for bad in [
            response(pb::Decision::Recorded, Some(short)),
            response(pb::Decision::Recorded, None),
            response(pb::Decision::Unspecified, None),
        ] {
            assert!(matches!(classify(&call, bad), CallOutcome::Failed { .. }));
        }
        assert_eq!(
            classify(&call, response(pb::Decision::Rejected, None)),
            CallOutcome::Rejected("why".to_string())
        );
        assert_eq!(
            classify(&call, response(pb::Decision::NotRecordedPrivileged, None)),
            CallOutcome::NotRecorded
        );
    }

    #[test]
    fn default_options_are_the_documented_ones() {
        let options = LoadOptions::default();
        assert_eq!((options.calls, options.concurrency), (1000, 32));
        assert_eq!(options.jurisdictions.len(), 12);
        assert_eq!(options.chunk_ms, 2000);
        assert!(options.run_id.is_none());
    }

    #[test]
    fn the_default_run_id_is_a_valid_call_id_part() {
        let id = default_run_id();
        assert_eq!(id.len(), "20250612T101502Z".len(), "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_alphanumeric()));
    }
}
