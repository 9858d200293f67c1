//! `callvault policy put | put-all | get`: policies in force, through the Admin service.

use std::path::{Path, PathBuf};

use anyhow::Context;
use callvault_core::jurisdiction::Jurisdiction;
use callvault_core::policy::{PolicySet, PrivilegedRetention, RetentionPolicy, parse_policy_file};
use callvault_proto::v1 as pb;
use callvault_proto::v1::admin_client::AdminClient;
use clap::Args;
use serde_json::json;
use tonic::transport::Channel;

use super::client::{
    Authed, ClientArgs, Connection, REQUEST_TIMEOUT, label, rfc3339_or_dash, rpc_error,
};
use callvault_proto::proof::SigningKey;

#[derive(Debug, Args)]
pub struct PutArgs {
    /// Jurisdiction code, e.g. US-TX.
    jurisdiction: String,
    /// The policy file holding the jurisdiction's entry, e.g. deploy/policies/default.toml.
    #[arg(long)]
    file: PathBuf,
    /// The version in force the new one replaces (0: none). Read from the node when omitted.
    #[arg(long)]
    expected_version: Option<u32>,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct PutAllArgs {
    /// The policy file, e.g. deploy/policies/default.toml.
    #[arg(long)]
    file: PathBuf,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// Jurisdiction code, e.g. US-TX.
    jurisdiction: String,
    /// A past version (default: the version in force).
    #[arg(long)]
    version: Option<u32>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// What [`put_policies`] did, per jurisdiction, in jurisdiction order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PutSummary {
    /// Jurisdictions whose policy was put in force, with the new version.
    pub installed: Vec<(Jurisdiction, u32)>,
    /// Jurisdictions whose policy in force already equals the file's, with its version.
    pub unchanged: Vec<(Jurisdiction, u32)>,
    /// Jurisdictions whose new policy shortens retention: it waits, as this pending change,
    /// for its notice period or a second principal (`callvault change approve`).
    pub pending: Vec<(Jurisdiction, String)>,
}

/// The wire form of a policy; `version` is 0, since the store assigns it.
pub fn to_proto(policy: &RetentionPolicy) -> pb::RetentionPolicy {
    let privileged = match policy.privileged_retention {
        PrivilegedRetention::Nothing => pb::PrivilegedRetention::Nothing,
        PrivilegedRetention::CallDetail => pb::PrivilegedRetention::CallDetail,
    };
    pb::RetentionPolicy {
        version: 0,
        recording_retention_days: policy.recording_retention_days,
        call_detail_retention_days: policy.call_detail_retention_days,
        privileged_retention: privileged as i32,
        hold_requires_review_date: policy.hold_requires_review_date,
        hold_max_review_days: policy.hold_max_review_days,
        sweep_interval_seconds: policy.sweep_interval_seconds,
        source: policy.source.clone(),
        shortening_notice_seconds: policy.shortening_notice_seconds,
    }
}

/// Puts every policy of `policies` in force on the node behind `channel`, presenting `token`,
/// skipping jurisdictions whose policy in force is already identical. Stops at the first
/// failure, naming the jurisdiction.
pub async fn put_policies(
    channel: Channel,
    token: &str,
    key: Option<SigningKey>,
    policies: &PolicySet,
) -> anyhow::Result<PutSummary> {
    let mut admin = Connection::new(channel, token, key)?.admin();
    let mut summary = PutSummary::default();
    for (jurisdiction, policy) in policies.iter() {
        let wanted = to_proto(policy);
        let current = policy_in_force(&mut admin, jurisdiction)
            .await
            .with_context(|| format!("{jurisdiction}: reading the policy in force"))?;
        let expected_version = match current {
            Some(current)
                if pb::RetentionPolicy {
                    version: 0,
                    ..current.clone()
                } == wanted =>
            {
                summary.unchanged.push((jurisdiction, current.version));
                continue;
            }
            Some(current) => current.version,
            None => 0,
        };
        let put = put(&mut admin, jurisdiction, wanted, expected_version)
            .await
            .with_context(|| format!("{jurisdiction}: putting the policy"))?;
        if put.pending_change_id.is_empty() {
            summary.installed.push((jurisdiction, put.version));
        } else {
            summary.pending.push((jurisdiction, put.pending_change_id));
        }
    }
    Ok(summary)
}

/// `callvault policy put`.
pub async fn put_one(args: PutArgs) -> anyhow::Result<()> {
    let jurisdiction = Jurisdiction::from_code(&args.jurisdiction)
        .map_err(|_| anyhow::anyhow!("unknown jurisdiction {:?}", args.jurisdiction))?;
    let set = read_policy_file(&args.file)?;
    let policy = set
        .get(jurisdiction)
        .with_context(|| format!("{} has no policy for {jurisdiction}", args.file.display()))?;
    let conn = args.client.connect(REQUEST_TIMEOUT).await?;
    let mut admin = conn.admin();
    let expected_version = match args.expected_version {
        Some(version) => version,
        None => policy_in_force(&mut admin, jurisdiction)
            .await?
            .map_or(0, |p| p.version),
    };
    let put = put(&mut admin, jurisdiction, to_proto(policy), expected_version).await?;
    if put.pending_change_id.is_empty() {
        println!(
            "{jurisdiction}: policy v{} in force (replaced v{expected_version})",
            put.version
        );
    } else {
        println!(
            "{jurisdiction}: the policy shortens retention; pending change {} takes effect {} \
             or when a second principal approves it (callvault change approve)",
            put.pending_change_id,
            rfc3339_or_dash(put.effective_at.as_ref())
        );
    }
    Ok(())
}

/// `callvault policy put-all`.
pub async fn put_all(args: PutAllArgs) -> anyhow::Result<()> {
    let set = read_policy_file(&args.file)?;
    let token = args.client.token()?;
    let key = args.client.signing_key()?;
    let channel = super::connect(&args.client.addr, REQUEST_TIMEOUT).await?;
    let summary = put_policies(channel, token, key, &set).await?;
    for (jurisdiction, version) in &summary.installed {
        println!("{jurisdiction}: policy v{version} put in force");
    }
    for (jurisdiction, change) in &summary.pending {
        println!(
            "{jurisdiction}: shortens retention; pending change {change} waits for its notice or a second principal"
        );
    }
    println!(
        "{} policies put in force, {} already identical",
        summary.installed.len(),
        summary.unchanged.len()
    );
    Ok(())
}

/// `callvault policy get`.
pub async fn get(args: GetArgs) -> anyhow::Result<()> {
    let conn = args.client.connect(REQUEST_TIMEOUT).await?;
    let response = conn
        .admin()
        .get_policy(pb::GetPolicyRequest {
            jurisdiction: args.jurisdiction.clone(),
            version: args.version.unwrap_or(0),
        })
        .await
        .map_err(rpc_error)?
        .into_inner();
    let p = response
        .policy
        .context("the node answered without a policy")?;
    let privileged = label::<pb::PrivilegedRetention>(p.privileged_retention);
    if args.json {
        let value = json!({
            "jurisdiction": response.jurisdiction,
            "version": p.version,
            "recording_retention_days": p.recording_retention_days,
            "call_detail_retention_days": p.call_detail_retention_days,
            "privileged_retention": privileged,
            "hold_requires_review_date": p.hold_requires_review_date,
            "hold_max_review_days": p.hold_max_review_days,
            "sweep_interval_seconds": p.sweep_interval_seconds,
            "source": p.source,
        });
        println!("{value}");
        return Ok(());
    }
    let rows: [(&str, String); 9] = [
        ("jurisdiction", response.jurisdiction.clone()),
        ("version", p.version.to_string()),
        (
            "recording retention",
            format!("{} days", p.recording_retention_days),
        ),
        (
            "call-detail retention",
            format!("{} days", p.call_detail_retention_days),
        ),
        ("privileged calls keep", privileged),
        (
            "hold review date",
            (if p.hold_requires_review_date {
                "required"
            } else {
                "optional"
            })
            .to_string(),
        ),
        (
            "hold max review",
            format!("{} days", p.hold_max_review_days),
        ),
        ("sweep interval", format!("{} s", p.sweep_interval_seconds)),
        ("source", p.source.clone()),
    ];
    for (name, value) in rows {
        println!("{name:<22} {value}");
    }
    Ok(())
}

fn read_policy_file(path: &Path) -> anyhow::Result<PolicySet> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read policy file {}", path.display()))?;
    parse_policy_file(&path.display().to_string(), &text).map_err(|err| anyhow::anyhow!("{err}"))
}

/// The policy in force, or `None` when the jurisdiction has none yet.
async fn policy_in_force(
    admin: &mut AdminClient<Authed>,
    jurisdiction: Jurisdiction,
) -> anyhow::Result<Option<pb::RetentionPolicy>> {
    let request = pb::GetPolicyRequest {
        jurisdiction: jurisdiction.code().to_string(),
        version: 0,
    };
    match admin.get_policy(request).await {
        Ok(response) => Ok(response.into_inner().policy),
        Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
        Err(status) => Err(rpc_error(status)),
    }
}

async fn put(
    admin: &mut AdminClient<Authed>,
    jurisdiction: Jurisdiction,
    policy: pb::RetentionPolicy,
    expected_version: u32,
) -> anyhow::Result<pb::PutPolicyResponse> {
    let request = pb::PutPolicyRequest {
        jurisdiction: jurisdiction.code().to_string(),
        policy: Some(policy),
        expected_version,
    };
    Ok(admin
        .put_policy(request)
        .await
        .map_err(rpc_error)?
        .into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_of_the_default_policy_file_reaches_the_wire() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../deploy/policies/default.toml"
        );
        let set = read_policy_file(Path::new(path)).expect("default policy file parses");
        let (jurisdiction, policy) = set.iter().next().expect("at least one policy");
        let wire = to_proto(policy);
        assert_eq!(
            wire.version, 0,
            "{jurisdiction}: the store assigns versions"
        );
        assert_eq!(
            wire.recording_retention_days,
            policy.recording_retention_days
        );
        assert_eq!(
            wire.call_detail_retention_days,
            policy.call_detail_retention_days
        );
        assert_eq!(
            wire.hold_requires_review_date,
            policy.hold_requires_review_date
        );
        assert_eq!(wire.hold_max_review_days, policy.hold_max_review_days);
        assert_eq!(wire.sweep_interval_seconds, policy.sweep_interval_seconds);
        assert_eq!(wire.source, policy.source);
        assert_ne!(
            wire.privileged_retention,
            pb::PrivilegedRetention::Unspecified as i32
        );
    }
}
