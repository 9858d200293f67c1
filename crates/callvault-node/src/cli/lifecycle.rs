//! `callvault hold place|release` and `callvault playback`: legal holds and audited playback,
//! through the Admin and Content services.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use callvault_proto::v1 as pb;
use clap::{Args, Subcommand};

use super::client::{ClientArgs, REQUEST_TIMEOUT, rpc_error, timestamp_from_millis};

#[derive(Debug, Subcommand)]
pub enum LifecycleCommand {
    /// Legal holds: a held call is never expired; only its issuer (or the issuer's agency)
    /// releases the hold.
    #[command(subcommand)]
    Hold(HoldCommand),
    /// Plays back one call's audio (agency principals of its jurisdiction only). The access is
    /// recorded in the audit log, with the case number and reason, before the first byte.
    Playback(PlaybackArgs),
}

#[derive(Debug, Subcommand)]
pub enum HoldCommand {
    /// Places a hold; prints its id.
    Place {
        /// Jurisdiction code, e.g. US-TX.
        jurisdiction: String,
        /// The platform's call id.
        call_id: String,
        /// The court or agency case the hold is for.
        #[arg(long)]
        case: String,
        /// Why.
        #[arg(long)]
        reason: String,
        /// Days from now until the hold must be reviewed (some policies require one).
        #[arg(long)]
        review_in_days: Option<u32>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Releases a hold by the id `hold place` printed.
    Release {
        /// Jurisdiction code, e.g. US-TX.
        jurisdiction: String,
        /// The platform's call id.
        call_id: String,
        /// The hold's id.
        hold_id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Args)]
pub struct PlaybackArgs {
    /// Jurisdiction code, e.g. US-TX.
    jurisdiction: String,
    /// The platform's call id.
    call_id: String,
    /// The case the access is for (required).
    #[arg(long)]
    case: String,
    /// Why the recording is needed (required).
    #[arg(long)]
    reason: String,
    /// Where to write the audio (G.711 as ingested); `-` for standard output.
    #[arg(long, short)]
    output: PathBuf,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn run(command: LifecycleCommand) -> anyhow::Result<()> {
    match command {
        LifecycleCommand::Hold(HoldCommand::Place {
            jurisdiction,
            call_id,
            case,
            reason,
            review_in_days,
            client,
        }) => {
            let conn = client.connect(REQUEST_TIMEOUT).await?;
            let review_date = review_in_days.map(|days| {
                timestamp_from_millis(
                    super::client::unix_millis_now() + i64::from(days) * 86_400_000,
                )
            });
            let r = conn
                .admin()
                .place_hold(pb::PlaceHoldRequest {
                    jurisdiction: jurisdiction.clone(),
                    call_id: call_id.clone(),
                    case_number: case,
                    reason,
                    review_date,
                })
                .await
                .map_err(rpc_error)?
                .into_inner();
            println!("hold {} placed on {jurisdiction}/{call_id}", r.hold_id);
        }
        LifecycleCommand::Hold(HoldCommand::Release {
            jurisdiction,
            call_id,
            hold_id,
            client,
        }) => {
            let conn = client.connect(REQUEST_TIMEOUT).await?;
            conn.admin()
                .release_hold(pb::ReleaseHoldRequest {
                    jurisdiction: jurisdiction.clone(),
                    call_id: call_id.clone(),
                    hold_id: hold_id.clone(),
                })
                .await
                .map_err(rpc_error)?;
            println!("hold {hold_id} released from {jurisdiction}/{call_id}");
        }
        LifecycleCommand::Playback(args) => playback(args).await?,
    }
    Ok(())
}

async fn playback(args: PlaybackArgs) -> anyhow::Result<()> {
    let conn = args.client.connect(REQUEST_TIMEOUT).await?;
    let mut stream = conn
        .content()
        .playback(pb::PlaybackRequest {
            jurisdiction: args.jurisdiction.clone(),
            call_id: args.call_id.clone(),
            case_number: args.case,
            reason: args.reason,
        })
        .await
        .map_err(rpc_error)?
        .into_inner();
    let mut out: Box<dyn Write> = if args.output.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(std::io::BufWriter::new(
            std::fs::File::create(&args.output)
                .with_context(|| format!("cannot create {}", args.output.display()))?,
        ))
    };
    let mut header = None;
    let mut written = 0u64;
    while let Some(message) = stream.message().await.map_err(rpc_error)? {
        match message.part {
            Some(pb::playback_response::Part::Header(h)) => header = Some(h),
            Some(pb::playback_response::Part::Audio(audio)) => {
                out.write_all(&audio)?;
                written += audio.len() as u64;
            }
            None => {}
        }
    }
    out.flush()?;
    let header = header.context("the server sent no playback header")?;
    anyhow::ensure!(
        written == header.byte_length,
        "received {written} of {} bytes",
        header.byte_length
    );
    eprintln!(
        "{}/{}: {written} bytes in {} chunks (access record {})",
        args.jurisdiction, args.call_id, header.chunk_count, header.access_record
    );
    Ok(())
}
