//! Reading call metadata is an access too: every `ListCalls`, `CallStatus` and
//! `JurisdictionStatus` is one audit entry with the number of records it returned, and is charged
//! against per-principal limits.
//!
//! The metadata store does the read itself for the principal's signed request (the api node holds
//! no read of its own over call metadata), counts the records, and proposes the access with the
//! count; `apply` decides it:
//! - more than `requests_per_hour` reads by one principal in a clock hour: over quota
//!   (`RESOURCE_EXHAUSTED`);
//! - more than `bulk_records_per_hour` records in the hour: a bulk export, which needs a second
//!   principal of the same agency to approve it (`FAILED_PRECONDITION` until then).
//!
//! Denials are recorded too, but only the first of each kind per principal per hour, so one
//! principal's refused attempts cannot flood the log.

#[cfg(feature = "store")]
use callvault_audit::AuditEvent;
use callvault_core::codec::{DecodeError, Reader, VersionedRecord, Writer};
use callvault_core::{CallId, Jurisdiction, UnixMillis};

#[cfg(feature = "store")]
use crate::apply::ApplyError;
#[cfg(feature = "store")]
use crate::audit_log::{self, Event};
#[cfg(feature = "store")]
use crate::command::CommandResult;
use crate::command::MAX_PRINCIPAL;
#[cfg(feature = "store")]
use crate::keys::CF_QUOTAS;
use crate::records::CallFilter;
#[cfg(feature = "store")]
use crate::txn::Txn;

#[cfg_attr(not(feature = "store"), allow(dead_code))]
const MILLIS_PER_HOUR: i64 = 3_600_000;
/// Longest party id in a filter.
const MAX_PARTY: usize = 64;

/// Per-principal limits on metadata reads, from the checking meta node's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetadataQuota {
    /// Reads one principal may make per clock hour.
    pub requests_per_hour: u64,
    /// Records one principal may read per clock hour before a read is a bulk export.
    pub bulk_records_per_hour: u64,
}

impl Default for MetadataQuota {
    fn default() -> Self {
        MetadataQuota {
            requests_per_hour: 600,
            bulk_records_per_hour: 10_000,
        }
    }
}

/// Which read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataQuery {
    /// `Query.ListCalls`: a page of calls.
    ListCalls {
        /// The filter.
        filter: CallFilter,
        /// The page size asked for.
        page_size: u32,
        /// Where the page starts.
        page_token: Vec<u8>,
    },
    /// `Query.CallStatus`.
    CallStatus {
        /// The call.
        call_id: CallId,
    },
    /// `Query.JurisdictionStatus`.
    JurisdictionStatus,
}

impl MetadataQuery {
    /// The read's name in the log.
    pub fn name(&self) -> &'static str {
        match self {
            MetadataQuery::ListCalls { .. } => "list_calls",
            MetadataQuery::CallStatus { .. } => "call_status",
            MetadataQuery::JurisdictionStatus => "jurisdiction_status",
        }
    }
}

/// One metadata read by a principal (tag 21), with the number of records it returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataRead {
    /// Whose metadata.
    pub jurisdiction: Jurisdiction,
    /// Who read.
    pub principal: String,
    /// What.
    pub query: MetadataQuery,
    /// Records returned (set by the metadata store that did the read).
    pub records: u32,
    /// The limits to charge against.
    pub quota: MetadataQuota,
    /// When (the principal's signed time).
    pub at: UnixMillis,
}

/// What `apply` decided about a metadata read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataDecision {
    /// Answer it.
    Allowed,
    /// Over the principal's hourly read quota.
    QuotaExceeded,
    /// Over the principal's hourly record allowance: a bulk export needs a second approver.
    BulkExportNeedsApproval,
}

impl MetadataDecision {
    pub(crate) fn tag(self) -> u8 {
        match self {
            MetadataDecision::Allowed => 0,
            MetadataDecision::QuotaExceeded => 1,
            MetadataDecision::BulkExportNeedsApproval => 2,
        }
    }

    pub(crate) fn from_tag(tag: u8) -> Option<Self> {
        [
            MetadataDecision::Allowed,
            MetadataDecision::QuotaExceeded,
            MetadataDecision::BulkExportNeedsApproval,
        ]
        .into_iter()
        .find(|d| d.tag() == tag)
    }
}

fn opt_str(w: &mut Writer, value: &Option<String>) {
    w.bool(value.is_some()).str(value.as_deref().unwrap_or(""));
}

fn opt_time(w: &mut Writer, value: Option<UnixMillis>) {
    w.bool(value.is_some()).i64(value.map_or(0, |t| t.0));
}

fn read_opt_str(r: &mut Reader<'_>, field: &'static str) -> Result<Option<String>, DecodeError> {
    let present = r.bool(field)?;
    let text = r.str(field, MAX_PARTY)?;
    Ok(present.then_some(text))
}

fn read_opt_time(
    r: &mut Reader<'_>,
    field: &'static str,
) -> Result<Option<UnixMillis>, DecodeError> {
    let present = r.bool(field)?;
    let at = UnixMillis(r.i64()?);
    Ok(present.then_some(at))
}

impl VersionedRecord for MetadataRead {
    const NAME: &'static str = "metadata read";
    const CURRENT_VERSION: u8 = 1;

    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_version(1);
        w.u8(self.jurisdiction.index()).str(&self.principal);
        match &self.query {
            MetadataQuery::ListCalls {
                filter,
                page_size,
                page_token,
            } => {
                w.u8(0);
                opt_str(&mut w, &filter.facility_id);
                opt_str(&mut w, &filter.inmate_id);
                opt_time(&mut w, filter.started_after);
                opt_time(&mut w, filter.started_before);
                w.u32(*page_size).blob(page_token);
            }
            MetadataQuery::CallStatus { call_id } => {
                w.u8(1).str(call_id.as_str());
            }
            MetadataQuery::JurisdictionStatus => {
                w.u8(2);
            }
        }
        w.u32(self.records)
            .u64(self.quota.requests_per_hour)
            .u64(self.quota.bulk_records_per_hour)
            .i64(self.at.0);
        w.finish()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (version, mut r) = Reader::open(Self::NAME, bytes)?;
        if version != 1 {
            return Err(r.unsupported(version, 1));
        }
        let index = r.u8()?;
        let jurisdiction = Jurisdiction::from_index(index)
            .ok_or_else(|| r.invalid("jurisdiction", format!("unknown index {index}")))?;
        let principal = r.str("principal", MAX_PRINCIPAL)?;
        let query = match r.u8()? {
            0 => MetadataQuery::ListCalls {
                filter: CallFilter {
                    facility_id: read_opt_str(&mut r, "facility_id")?,
                    inmate_id: read_opt_str(&mut r, "inmate_id")?,
                    started_after: read_opt_time(&mut r, "started_after")?,
                    started_before: read_opt_time(&mut r, "started_before")?,
                },
                page_size: r.u32()?,
                page_token: r.blob("page_token", 1024)?,
            },
            1 => {
                let id = r.str("call_id", callvault_core::call::MAX_CALL_ID_LEN)?;
                MetadataQuery::CallStatus {
                    call_id: CallId::new(&id).map_err(|e| r.invalid("call_id", e.to_string()))?,
                }
            }
            2 => MetadataQuery::JurisdictionStatus,
            t => return Err(r.invalid("query", format!("unknown tag {t}"))),
        };
        let read = MetadataRead {
            jurisdiction,
            principal,
            query,
            records: r.u32()?,
            quota: MetadataQuota {
                requests_per_hour: r.u64()?,
                bulk_records_per_hour: r.u64()?,
            },
            at: UnixMillis(r.i64()?),
        };
        r.finish()?;
        Ok(read)
    }
}

#[cfg_attr(not(feature = "store"), allow(dead_code))]
/// One principal's metadata reads in the current clock hour (public for the fuzz targets'
/// record list; its fields stay private).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetadataUse {
    hour: i64,
    requests: u64,
    records: u64,
    /// Denials so far this hour; only the first of the hour is logged.
    denials: u64,
}

impl VersionedRecord for MetadataUse {
    const NAME: &'static str = "metadata use";
    const CURRENT_VERSION: u8 = 1;

    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_version(1);
        w.i64(self.hour)
            .u64(self.requests)
            .u64(self.records)
            .u64(self.denials);
        w.finish()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (version, mut r) = Reader::open(Self::NAME, bytes)?;
        if version != 1 {
            return Err(r.unsupported(version, 1));
        }
        let usage = MetadataUse {
            hour: r.i64()?,
            requests: r.u64()?,
            records: r.u64()?,
            denials: r.u64()?,
        };
        r.finish()?;
        Ok(usage)
    }
}

#[cfg_attr(not(feature = "store"), allow(dead_code))]
/// The quota key of a principal's metadata reads: apart from its playback use, which is keyed
/// by the bare name (`\0` never occurs in a principal name).
fn use_key(principal: &str) -> Vec<u8> {
    let mut key = b"metadata\0".to_vec();
    key.extend_from_slice(principal.as_bytes());
    key
}

#[cfg_attr(not(feature = "store"), allow(dead_code))]
/// The decision on `read` given the principal's use this hour and whether it holds an approved
/// bulk export; the use after it.
fn decide(
    read: &MetadataRead,
    usage: MetadataUse,
    bulk_approved: bool,
) -> (MetadataDecision, MetadataUse) {
    let hour = read.at.0.div_euclid(MILLIS_PER_HOUR);
    let mut usage = if usage.hour == hour {
        usage
    } else {
        MetadataUse {
            hour,
            ..MetadataUse::default()
        }
    };
    let decision = if usage.requests + 1 > read.quota.requests_per_hour {
        MetadataDecision::QuotaExceeded
    } else if usage.records + u64::from(read.records) > read.quota.bulk_records_per_hour
        && !bulk_approved
    {
        MetadataDecision::BulkExportNeedsApproval
    } else {
        MetadataDecision::Allowed
    };
    match decision {
        MetadataDecision::Allowed => {
            usage.requests += 1;
            usage.records += u64::from(read.records);
        }
        _ => usage.denials += 1,
    }
    (decision, usage)
}

#[cfg(feature = "store")]
/// `RecordMetadataRead`: decides the read, charges the principal and logs it (a denial only the
/// first time in the hour). `bulk_approved` says whether a second principal approved a bulk
/// export for this principal and jurisdiction.
pub(crate) fn record(
    txn: &mut Txn<'_>,
    read: &MetadataRead,
    bulk_approved: bool,
) -> Result<CommandResult, ApplyError> {
    let key = use_key(&read.principal);
    let usage = match txn.get(CF_QUOTAS, &key)? {
        Some(bytes) => MetadataUse::decode(&bytes)?,
        None => MetadataUse::default(),
    };
    let (decision, next) = decide(read, usage, bulk_approved);
    txn.put(CF_QUOTAS, key, next.encode());
    let first_denial = decision != MetadataDecision::Allowed && next.denials == 1;
    let mut record = 0;
    if decision == MetadataDecision::Allowed || first_denial {
        let (event, outcome) = match decision {
            MetadataDecision::Allowed => (
                AuditEvent::MetadataRead,
                format!("allowed: {} records", read.records),
            ),
            MetadataDecision::QuotaExceeded => (
                AuditEvent::QuotaDenied,
                format!(
                    "denied: over {} metadata reads per hour (later denials this hour are \
                     counted, not logged)",
                    read.quota.requests_per_hour
                ),
            ),
            MetadataDecision::BulkExportNeedsApproval => (
                AuditEvent::MetadataRead,
                format!(
                    "denied: {} records is a bulk export (over {} per hour) and needs a second \
                     principal's approval",
                    read.records, read.quota.bulk_records_per_hour
                ),
            ),
        };
        let entry = audit_log::append(
            txn,
            Event {
                event,
                time: read.at,
                principal: read.principal.clone(),
                jurisdiction: Some(read.jurisdiction),
                subject: match &read.query {
                    MetadataQuery::CallStatus { call_id } => call_id.as_str().to_string(),
                    other => other.name().to_string(),
                },
                outcome,
                details: vec![
                    ("read", read.query.name().to_string()),
                    ("records", read.records.to_string()),
                ],
            },
        )?;
        record = entry.sequence();
    }
    Ok(CommandResult::MetadataReadDecided { decision, record })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(records: u32, at: i64) -> MetadataRead {
        MetadataRead {
            jurisdiction: Jurisdiction::Tx,
            principal: "tx".into(),
            query: MetadataQuery::ListCalls {
                filter: CallFilter {
                    facility_id: Some("fac-1".into()),
                    ..CallFilter::default()
                },
                page_size: 100,
                page_token: vec![1, 2],
            },
            records,
            quota: MetadataQuota {
                requests_per_hour: 3,
                bulk_records_per_hour: 150,
            },
            at: UnixMillis(at),
        }
    }

    #[test]
    fn reads_round_trip() {
        for query in [
            read(5, 9).query,
            MetadataQuery::CallStatus {
                call_id: CallId::new("c-1").unwrap(),
            },
            MetadataQuery::JurisdictionStatus,
        ] {
            let r = MetadataRead {
                query,
                ..read(5, 9)
            };
            assert_eq!(MetadataRead::decode(&r.encode()), Ok(r));
        }
    }

    #[test]
    fn quota_then_bulk_then_a_new_hour() {
        let (d, u) = decide(&read(100, 0), MetadataUse::default(), false);
        assert_eq!(d, MetadataDecision::Allowed);
        let (d, u2) = decide(&read(100, 1), u, false);
        assert_eq!(d, MetadataDecision::BulkExportNeedsApproval);
        assert_eq!(u2.denials, 1);
        let (d, u3) = decide(&read(100, 1), u2, true);
        assert_eq!(d, MetadataDecision::Allowed, "approved");
        let (d, u4) = decide(&read(1, 2), u3, false);
        assert_eq!(
            d,
            MetadataDecision::BulkExportNeedsApproval,
            "still over the allowance"
        );
        let (d, u4) = decide(&read(1, 2), u4, true);
        assert_eq!(d, MetadataDecision::Allowed, "the third read of three");
        let (d, u4) = decide(&read(0, 3), u4, true);
        assert_eq!(
            d,
            MetadataDecision::QuotaExceeded,
            "a fourth read, approved or not"
        );
        assert_eq!(u4.requests, 3, "a denial is not charged");
        let (d, _) = decide(&read(1, MILLIS_PER_HOUR), u4, false);
        assert_eq!(d, MetadataDecision::Allowed, "a new hour");
    }
}
