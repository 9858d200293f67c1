//! `callvault status | call | calls`: retention status through the Query service.

use callvault_proto::v1 as pb;
use clap::{Args, Subcommand};
use serde_json::json;

use super::client::{ClientArgs, REQUEST_TIMEOUT, label, rfc3339_json, rfc3339_or_dash, rpc_error};

#[derive(Debug, Subcommand)]
pub enum QueryCommand {
    /// Retention status of one jurisdiction: counters, the oldest live recording, alarms.
    Status(StatusArgs),
    /// The status of one call.
    Call(CallArgs),
    /// Calls of one jurisdiction, newest first, without their content.
    Calls(CallsArgs),
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Jurisdiction code, e.g. US-TX.
    jurisdiction: String,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct CallArgs {
    /// Jurisdiction code, e.g. US-TX.
    jurisdiction: String,
    /// The platform's call id.
    call_id: String,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct CallsArgs {
    /// Jurisdiction code, e.g. US-TX.
    jurisdiction: String,
    /// Only calls from this facility.
    #[arg(long)]
    facility: Option<String>,
    /// Only calls of this incarcerated person.
    #[arg(long)]
    inmate: Option<String>,
    /// Calls per page, 1..=1000 (the server's default when omitted).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    page_size: Option<u32>,
    /// Follow every page instead of printing only the first.
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn run(command: QueryCommand) -> anyhow::Result<()> {
    match command {
        QueryCommand::Status(args) => status(args).await,
        QueryCommand::Call(args) => call(args).await,
        QueryCommand::Calls(args) => calls(args).await,
    }
}

async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let conn = args.client.connect(REQUEST_TIMEOUT).await?;
    let s = conn
        .query()
        .jurisdiction_status(pb::JurisdictionStatusRequest {
            jurisdiction: args.jurisdiction,
        })
        .await
        .map_err(rpc_error)?
        .into_inner();
    if args.json {
        let value = json!({
            "jurisdiction": s.jurisdiction,
            "policy_version": s.policy_version,
            "recording_retention_days": s.recording_retention_days,
            "calls_total": s.calls_total,
            "live_recordings": s.live_recordings,
            "held": s.held,
            "expired": s.expired,
            "purged": s.purged,
            "blocked_privileged": s.blocked_privileged,
            "purges_pending": s.purges_pending,
            "overdue": s.overdue,
            "oldest_live_started_at": rfc3339_json(s.oldest_live_started_at.as_ref()),
            "oldest_live_deadline": rfc3339_json(s.oldest_live_deadline.as_ref()),
            "call_detail_retention_days": s.call_detail_retention_days,
            "call_details_kept": s.call_details_kept,
            "call_details_expired": s.call_details_expired,
            "oldest_call_detail_deadline": rfc3339_json(s.oldest_call_detail_deadline.as_ref()),
            "call_details_overdue": s.call_details_overdue,
            "cluster_time": rfc3339_json(s.cluster_time.as_ref()),
            "pending_policy_change_id": s.pending_policy_change_id,
            "pending_policy_effective_at": rfc3339_json(s.pending_policy_effective_at.as_ref()),
            "pending_changes": s.pending_changes,
            "holds_past_review": s.holds_past_review,
            "purges_in_progress": s.purges_in_progress,
        });
        println!("{value}");
        return Ok(());
    }
    let rows: [(&str, String); 13] = [
        ("jurisdiction", s.jurisdiction.clone()),
        ("policy version", s.policy_version.to_string()),
        (
            "recording retention",
            format!("{} days", s.recording_retention_days),
        ),
        ("calls total", s.calls_total.to_string()),
        ("live recordings", s.live_recordings.to_string()),
        ("held", s.held.to_string()),
        ("expired", s.expired.to_string()),
        ("purged", s.purged.to_string()),
        ("blocked privileged", s.blocked_privileged.to_string()),
        ("purges pending", s.purges_pending.to_string()),
        (
            "oldest live started",
            rfc3339_or_dash(s.oldest_live_started_at.as_ref()),
        ),
        (
            "oldest live deadline",
            rfc3339_or_dash(s.oldest_live_deadline.as_ref()),
        ),
        ("overdue", s.overdue.to_string()),
    ];
    for (name, value) in rows {
        println!("{name:<22} {value}");
    }
    print_retention_rows(&s);
    if s.overdue > 0 {
        eprintln!(
            "ALARM: {} recordings are past their deadline and not held",
            s.overdue
        );
    }
    if s.call_details_overdue > 0 {
        eprintln!(
            "ALARM: {} call-detail records are past their deadline",
            s.call_details_overdue
        );
    }
    Ok(())
}

/// Call-detail deadlines, the cluster time, changes waiting for a second principal, holds past
/// review and purges still paging.
fn print_retention_rows(s: &pb::JurisdictionStatusResponse) {
    let pending_policy = if s.pending_policy_change_id.is_empty() {
        "-".to_string()
    } else {
        format!(
            "change {} ({} / {} days) from {}",
            s.pending_policy_change_id,
            s.pending_policy_recording_retention_days,
            s.pending_policy_call_detail_retention_days,
            rfc3339_or_dash(s.pending_policy_effective_at.as_ref())
        )
    };
    let rows: [(&str, String); 10] = [
        (
            "call-detail retention",
            format!("{} days", s.call_detail_retention_days),
        ),
        ("call details kept", s.call_details_kept.to_string()),
        ("call details expired", s.call_details_expired.to_string()),
        (
            "oldest detail deadline",
            rfc3339_or_dash(s.oldest_call_detail_deadline.as_ref()),
        ),
        ("details overdue", s.call_details_overdue.to_string()),
        ("cluster time", rfc3339_or_dash(s.cluster_time.as_ref())),
        ("pending policy", pending_policy),
        ("pending changes", s.pending_changes.to_string()),
        ("holds past review", s.holds_past_review.to_string()),
        (
            "purges in progress",
            format!(
                "{} ({} purged so far)",
                s.purges_in_progress, s.purges_in_progress_purged
            ),
        ),
    ];
    for (name, value) in rows {
        println!("{name:<22} {value}");
    }
}

async fn call(args: CallArgs) -> anyhow::Result<()> {
    let conn = args.client.connect(REQUEST_TIMEOUT).await?;
    let c = conn
        .query()
        .call_status(pb::CallStatusRequest {
            call_id: args.call_id,
            jurisdiction: args.jurisdiction,
        })
        .await
        .map_err(rpc_error)?
        .into_inner();
    let state = label::<pb::CallState>(c.state);
    let purge = label::<pb::PurgeProgress>(c.purge_progress);
    if args.json {
        let value = json!({
            "call_id": c.call_id,
            "jurisdiction": c.jurisdiction,
            "state": state,
            "started_at": rfc3339_json(c.started_at.as_ref()),
            "deadline": rfc3339_json(c.deadline.as_ref()),
            "reason": c.reason,
            "holds": c.holds,
            "purge_progress": purge,
            "policy_version": c.policy_version,
        });
        println!("{value}");
        return Ok(());
    }
    let rows: [(&str, String); 9] = [
        ("call", c.call_id.clone()),
        ("jurisdiction", c.jurisdiction.clone()),
        ("state", state),
        ("started", rfc3339_or_dash(c.started_at.as_ref())),
        ("deadline", rfc3339_or_dash(c.deadline.as_ref())),
        ("reason", c.reason.clone()),
        ("holds", c.holds.to_string()),
        ("purge progress", purge),
        ("policy version", c.policy_version.to_string()),
    ];
    for (name, value) in rows {
        println!("{name:<16} {value}");
    }
    Ok(())
}

async fn calls(args: CallsArgs) -> anyhow::Result<()> {
    let conn = args.client.connect(REQUEST_TIMEOUT).await?;
    let mut client = conn.query();
    let mut request = pb::ListCallsRequest {
        jurisdiction: args.jurisdiction,
        facility_id: args.facility.unwrap_or_default(),
        inmate_id: args.inmate.unwrap_or_default(),
        page_size: args.page_size.unwrap_or(0),
        ..Default::default()
    };
    println!(
        "{:<40} {:<16} {:<16} {:<20} {:<20} {:<8} {:>12}",
        "call", "facility", "inmate", "started", "ended", "state", "bytes"
    );
    let mut total = 0usize;
    loop {
        let page = client
            .list_calls(request.clone())
            .await
            .map_err(rpc_error)?
            .into_inner();
        for c in &page.calls {
            println!(
                "{:<40} {:<16} {:<16} {:<20} {:<20} {:<8} {:>12}",
                c.call_id,
                c.facility_id,
                c.inmate_id,
                rfc3339_or_dash(c.started_at.as_ref()),
                rfc3339_or_dash(c.ended_at.as_ref()),
                label::<pb::CallState>(c.state),
                c.byte_length
            );
        }
        total += page.calls.len();
        if page.next_page_token.is_empty() {
            println!("{total} calls");
            return Ok(());
        }
        if !args.all {
            println!("{total} calls shown; more exist (use --all)");
            return Ok(());
        }
        anyhow::ensure!(
            page.next_page_token != request.page_token,
            "the server returned the same page token twice"
        );
        request.page_token = page.next_page_token;
    }
}
