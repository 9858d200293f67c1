//! What every client subcommand shares: where the node is, the bearer token sent with every
//! request, the error text of a failed RPC, and how timestamps and enums are printed.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use callvault_proto::MAX_MESSAGE_BYTES;
use callvault_proto::proof::{Signer, SigningKey};
use callvault_proto::v1 as pb;
use callvault_proto::v1::admin_client::AdminClient;
use callvault_proto::v1::content_client::ContentClient;
use callvault_proto::v1::ingest_client::IngestClient;
use callvault_proto::v1::query_client::QueryClient;
use clap::Args;
use prost_types::Timestamp;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// How long a query or admin request may take before the CLI gives up on it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// `--addr`, `--token` and `--key`, flattened into every client subcommand.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// host:port of the node to talk to.
    #[arg(long, env = "CALLVAULT_ADDR", default_value = "127.0.0.1:7101")]
    pub addr: String,
    /// Bearer token sent as `authorization: Bearer <token>` with every request.
    #[arg(long, env = "CALLVAULT_TOKEN", hide_env_values = true)]
    pub token: Option<Secret>,
    /// The principal's signing key file: every request is signed with it, and the metadata store
    /// refuses a request that acts for a person (playback, holds, registrations, policies,
    /// queries) without the person's signature.
    #[arg(long, env = "CALLVAULT_KEY_FILE")]
    pub key: Option<PathBuf>,
}

/// A principal's signing key from its file, with an error naming the file.
pub fn load_signing_key(path: &Path) -> anyhow::Result<SigningKey> {
    SigningKey::load(path).map_err(|e| anyhow::anyhow!(e))
}

/// A token from the command line or the environment; its `Debug` never shows it.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// The token itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

impl ClientArgs {
    /// The token, or an error saying how to give one.
    pub fn token(&self) -> anyhow::Result<&str> {
        self.token
            .as_ref()
            .map(Secret::expose)
            .filter(|t| !t.is_empty())
            .context("no token: pass --token or set CALLVAULT_TOKEN")
    }

    /// The signing key, if one was given.
    pub fn signing_key(&self) -> anyhow::Result<Option<SigningKey>> {
        self.key.as_deref().map(load_signing_key).transpose()
    }

    /// Checks the token and the key, then connects. A missing token fails before any network
    /// traffic.
    pub async fn connect(&self, request_timeout: Duration) -> anyhow::Result<Connection> {
        let token = self.token()?.to_string();
        let key = self.signing_key()?;
        let channel = super::connect(&self.addr, request_timeout).await?;
        Connection::new(channel, &token, key)
    }
}

/// Adds `authorization: Bearer <token>` to every request.
#[derive(Clone)]
pub struct BearerToken(MetadataValue<Ascii>);

impl BearerToken {
    /// A token must be non-empty visible ASCII, as HTTP/2 header values are.
    pub fn new(token: &str) -> anyhow::Result<Self> {
        anyhow::ensure!(!token.is_empty(), "the token is empty");
        anyhow::ensure!(
            token.bytes().all(|b| b.is_ascii_graphic()),
            "the token must be visible ASCII without spaces"
        );
        let mut value = MetadataValue::try_from(format!("Bearer {token}"))
            .context("the token is not a valid header value")?;
        value.set_sensitive(true);
        Ok(BearerToken(value))
    }
}

impl Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// A channel that carries the bearer token on every request and signs it with the principal's
/// key, when there is one.
pub type Authed = Signer<InterceptedService<Channel, BearerToken>>;

/// A channel to a node plus the credentials to present; hands out clients of the public
/// services.
#[derive(Clone)]
pub struct Connection {
    channel: Channel,
    token: BearerToken,
    key: Option<SigningKey>,
}

impl Connection {
    /// Pairs an already connected channel with a token and the principal's signing key (for
    /// callers such as `callvault dev`).
    pub fn new(channel: Channel, token: &str, key: Option<SigningKey>) -> anyhow::Result<Self> {
        Ok(Connection {
            channel,
            token: BearerToken::new(token)?,
            key,
        })
    }

    fn authed(&self) -> Authed {
        Signer::new(
            InterceptedService::new(self.channel.clone(), self.token.clone()),
            self.key.clone(),
        )
    }

    /// A client of the Query service.
    pub fn query(&self) -> QueryClient<Authed> {
        QueryClient::new(self.authed())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// A client of the Admin service.
    pub fn admin(&self) -> AdminClient<Authed> {
        AdminClient::new(self.authed())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// A client of the Ingest service.
    pub fn ingest(&self) -> IngestClient<Authed> {
        IngestClient::new(self.authed())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// A client of the Content service.
    pub fn content(&self) -> ContentClient<Authed> {
        ContentClient::new(self.authed()).max_decoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// The same node, presenting another principal's token and key (e.g. the load generator's
    /// registry).
    pub fn with_principal(&self, token: &str, key: Option<SigningKey>) -> anyhow::Result<Self> {
        Connection::new(self.channel.clone(), token, key)
    }
}

/// The canonical gRPC name of a status code, e.g. `NOT_FOUND`.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// A failed RPC as the CLI reports it: `NOT_FOUND: no call US-TX/abc`.
pub fn rpc_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}: {}", code_name(status.code()), status.message())
}

/// Milliseconds since the Unix epoch, now.
pub fn unix_millis_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A protobuf timestamp at `millis` since the Unix epoch.
pub fn timestamp_from_millis(millis: i64) -> Timestamp {
    Timestamp {
        seconds: millis.div_euclid(1000),
        // 0..=999 ms, so the product fits.
        nanos: (millis.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// RFC 3339 in UTC, e.g. `2025-06-12T10:15:02Z`, with milliseconds when there are any.
pub fn rfc3339(ts: &Timestamp) -> String {
    let days = ts.seconds.div_euclid(86_400);
    let secs = ts.seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let millis = ts.nanos.clamp(0, 999_999_999) / 1_000_000;
    if millis == 0 {
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
    } else {
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{millis:03}Z")
    }
}

/// An optional timestamp for people: RFC 3339, or `-` when absent.
pub fn rfc3339_or_dash(ts: Option<&Timestamp>) -> String {
    ts.map_or_else(|| "-".to_string(), rfc3339)
}

/// An optional timestamp for JSON: an RFC 3339 string, or null.
pub fn rfc3339_json(ts: Option<&Timestamp>) -> serde_json::Value {
    ts.map_or(serde_json::Value::Null, |t| rfc3339(t).into())
}

/// Year, month, day of a count of days since 1970-01-01 (proleptic Gregorian), after Howard
/// Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A protobuf enum printed for people: its value name without the type prefix, in lower case
/// with dashes (`CALL_STATE_STORED` → `stored`), or `unknown(N)` for a value this build lacks.
pub trait EnumLabel {
    /// The label of a raw wire value.
    fn label(value: i32) -> String;
}

macro_rules! enum_labels {
    ($($ty:ident => $prefix:literal,)*) => {$(
        impl EnumLabel for pb::$ty {
            fn label(value: i32) -> String {
                match pb::$ty::try_from(value) {
                    Ok(v) => short_label(v.as_str_name(), $prefix),
                    Err(_) => format!("unknown({value})"),
                }
            }
        }
    )*};
}

enum_labels! {
    CallState => "CALL_STATE_",
    PurgeProgress => "PURGE_PROGRESS_",
    PrivilegeKind => "PRIVILEGE_KIND_",
    PrivilegedRetention => "PRIVILEGED_RETENTION_",
    Decision => "DECISION_",
    ChangeState => "CHANGE_STATE_",
}

/// The label of `value` as an `E`, e.g. `label::<pb::CallState>(1)` is `stored`.
pub fn label<E: EnumLabel>(value: i32) -> String {
    E::label(value)
}

fn short_label(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix)
        .unwrap_or(name)
        .to_ascii_lowercase()
        .replace('_', "-")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64, nanos: i32) -> String {
        rfc3339(&Timestamp { seconds, nanos })
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(at(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400, 0), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_749_723_302, 0), "2025-06-12T10:15:02Z");
        assert_eq!(at(1_749_723_302, 250_000_000), "2025-06-12T10:15:02.250Z");
        assert_eq!(at(-1, 0), "1969-12-31T23:59:59Z");
        assert_eq!(at(4_102_444_800, 0), "2100-01-01T00:00:00Z");
    }

    #[test]
    fn millis_round_trip_through_timestamps() {
        let ts = timestamp_from_millis(1_749_723_302_250);
        assert_eq!((ts.seconds, ts.nanos), (1_749_723_302, 250_000_000));
        let ts = timestamp_from_millis(-1);
        assert_eq!((ts.seconds, ts.nanos), (-1, 999_000_000));
    }

    #[test]
    fn enum_labels_drop_the_prefix() {
        assert_eq!(
            label::<pb::CallState>(pb::CallState::Stored as i32),
            "stored"
        );
        assert_eq!(
            label::<pb::Decision>(pb::Decision::NotRecordedPrivileged as i32),
            "not-recorded-privileged"
        );
        assert_eq!(label::<pb::PrivilegeKind>(99), "unknown(99)");
    }

    #[test]
    fn status_codes_print_with_their_grpc_names() {
        let err = rpc_error(tonic::Status::not_found("no call US-TX/abc"));
        assert_eq!(err.to_string(), "NOT_FOUND: no call US-TX/abc");
    }

    #[test]
    fn tokens_must_be_header_safe() {
        assert!(BearerToken::new("abc.DEF-123").is_ok());
        assert!(BearerToken::new("").is_err());
        assert!(BearerToken::new("two words").is_err());
        assert!(BearerToken::new("line\nbreak").is_err());
    }
}
