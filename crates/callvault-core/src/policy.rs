//! Per-jurisdiction retention policies, and the TOML policy file they are loaded from.
//!
//! A policy is versioned in the metadata store; deadlines are derived from the version in force
//! when they are evaluated, never stamped at write time (see [`crate::retention`]).

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use crate::jurisdiction::Jurisdiction;

/// Longest retention callvault accepts: 100 years.
pub const MAX_RETENTION_DAYS: u32 = 36_500;
/// Longest sweep interval: one day. A longer one would let recordings sit past their deadline.
pub const MAX_SWEEP_INTERVAL_SECONDS: u32 = 86_400;
/// The sweep interval when a policy does not name one.
pub const DEFAULT_SWEEP_INTERVAL_SECONDS: u32 = 30;
/// Longest `source` text.
pub const MAX_SOURCE_CHARS: usize = 512;
/// Longest notice before a shortening takes effect: one year, in seconds.
pub const MAX_SHORTENING_NOTICE_SECONDS: u32 = 365 * 86_400;
/// The notice when a policy does not name one: 30 days. Also what a policy stored before the
/// field existed is read with.
pub const DEFAULT_SHORTENING_NOTICE_SECONDS: u32 = 30 * 86_400;

/// What is kept of a call to a privileged number. Its audio is never kept, whatever this says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrivilegedRetention {
    /// Nothing beyond the jurisdiction's blocked-call counter.
    Nothing,
    /// A call-detail record (who, when, how long) without content.
    CallDetail,
}

impl PrivilegedRetention {
    /// The policy file's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PrivilegedRetention::Nothing => "nothing",
            PrivilegedRetention::CallDetail => "call-detail",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "nothing" => Some(PrivilegedRetention::Nothing),
            "call-detail" => Some(PrivilegedRetention::CallDetail),
            _ => None,
        }
    }
}

/// A jurisdiction's retention rules.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RetentionPolicy {
    /// Days a recording is kept after the call started.
    pub recording_retention_days: u32,
    /// Days a call-detail record is kept after the call started; at least the recording's.
    pub call_detail_retention_days: u32,
    /// What is kept of a privileged call.
    pub privileged_retention: PrivilegedRetention,
    /// Whether every hold must name a review date.
    pub hold_requires_review_date: bool,
    /// How far ahead a hold's review date may be, in days.
    pub hold_max_review_days: u32,
    /// How often the sweeper evaluates this jurisdiction's deadlines.
    pub sweep_interval_seconds: u32,
    /// Where the rule comes from (statute, contract), for people.
    pub source: String,
    /// How long a change that shortens any retention (or this notice) waits, in cluster time,
    /// before it takes effect, unless a second principal of the jurisdiction approves it.
    pub shortening_notice_seconds: u32,
}

/// A policy that breaks a rule, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct PolicyViolation {
    /// The policy file's name for the field.
    pub field: &'static str,
    /// What is wrong, for people.
    pub reason: String,
}

impl RetentionPolicy {
    /// Checks every rule a policy must satisfy before it can be put in force.
    pub fn validate(&self) -> Result<(), PolicyViolation> {
        let violation = |field, reason: String| Err(PolicyViolation { field, reason });
        if !(1..=MAX_RETENTION_DAYS).contains(&self.recording_retention_days) {
            return violation(
                "recording_retention_days",
                format!(
                    "must be 1..={MAX_RETENTION_DAYS}, got {}",
                    self.recording_retention_days
                ),
            );
        }
        if self.call_detail_retention_days > MAX_RETENTION_DAYS {
            return violation(
                "call_detail_retention_days",
                format!(
                    "must be at most {MAX_RETENTION_DAYS}, got {}",
                    self.call_detail_retention_days
                ),
            );
        }
        if self.call_detail_retention_days < self.recording_retention_days {
            return violation(
                "call_detail_retention_days",
                format!(
                    "must be at least recording_retention_days ({}), got {}",
                    self.recording_retention_days, self.call_detail_retention_days
                ),
            );
        }
        if !(1..=MAX_RETENTION_DAYS).contains(&self.hold_max_review_days) {
            return violation(
                "hold_max_review_days",
                format!(
                    "must be 1..={MAX_RETENTION_DAYS}, got {}",
                    self.hold_max_review_days
                ),
            );
        }
        if !(1..=MAX_SWEEP_INTERVAL_SECONDS).contains(&self.sweep_interval_seconds) {
            return violation(
                "sweep_interval_seconds",
                format!(
                    "must be 1..={MAX_SWEEP_INTERVAL_SECONDS}, got {}",
                    self.sweep_interval_seconds
                ),
            );
        }
        if self.shortening_notice_seconds > MAX_SHORTENING_NOTICE_SECONDS {
            return violation(
                "shortening_notice_seconds",
                format!(
                    "must be at most {MAX_SHORTENING_NOTICE_SECONDS}, got {}",
                    self.shortening_notice_seconds
                ),
            );
        }
        if self.source.chars().count() > MAX_SOURCE_CHARS {
            return violation(
                "source",
                format!("must be at most {MAX_SOURCE_CHARS} characters"),
            );
        }
        Ok(())
    }
}

/// A policy as stored: the policy and the version number the metadata store gave it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VersionedPolicy {
    /// 1 for the first policy of a jurisdiction, then 2, 3, ...
    pub version: u32,
    /// The rules of this version.
    pub policy: RetentionPolicy,
}

/// The policies of a policy file, one per jurisdiction it names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicySet {
    policies: BTreeMap<Jurisdiction, RetentionPolicy>,
}

impl PolicySet {
    /// The policy for a jurisdiction, if the file names it.
    pub fn get(&self, jurisdiction: Jurisdiction) -> Option<&RetentionPolicy> {
        self.policies.get(&jurisdiction)
    }

    /// Every policy, in jurisdiction order.
    pub fn iter(&self) -> impl Iterator<Item = (Jurisdiction, &RetentionPolicy)> {
        self.policies.iter().map(|(j, p)| (*j, p))
    }

    /// How many jurisdictions the file names.
    pub fn len(&self) -> usize {
        self.policies.len()
    }

    /// Whether the file names no jurisdiction.
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// States, DC and the federal prisons system the file does not cover. Calls for them are
    /// refused until a policy exists.
    pub fn missing_required(&self) -> Vec<Jurisdiction> {
        Jurisdiction::ALL
            .iter()
            .copied()
            .filter(|j| j.requires_policy() && !self.policies.contains_key(j))
            .collect()
    }
}

/// An error in a policy file, located by file, line and field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyFileError {
    /// The file's name as given to [`parse_policy_file`].
    pub file: String,
    /// 1-based line of the offending text.
    pub line: usize,
    /// The dotted path of the offending field, e.g. `jurisdiction."US-TX".recording_retention_days`,
    /// when one is known.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for PolicyFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.file, self.line)?;
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// The fields a policy table may set; every one is optional in `[defaults]` and in each
/// `[jurisdiction."US-XX"]` table, which override the defaults field by field.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    recording_retention_days: Option<Spanned<u32>>,
    call_detail_retention_days: Option<Spanned<u32>>,
    privileged_retention: Option<Spanned<String>>,
    hold_requires_review_date: Option<Spanned<bool>>,
    hold_max_review_days: Option<Spanned<u32>>,
    sweep_interval_seconds: Option<Spanned<u32>>,
    source: Option<Spanned<String>>,
    shortening_notice_seconds: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicyFile {
    #[serde(default)]
    defaults: RawPolicy,
    #[serde(default)]
    jurisdiction: BTreeMap<String, Spanned<RawPolicy>>,
}

/// Parses and validates a policy file. `file` names it in errors; the caller reads it, since core
/// does no I/O.
pub fn parse_policy_file(file: &str, text: &str) -> Result<PolicySet, PolicyFileError> {
    let located = |span: Range<usize>, field: Option<String>, message: String| PolicyFileError {
        file: file.to_string(),
        line: line_of(text, span.start),
        field,
        message,
    };

    let raw: RawPolicyFile = toml::from_str(text).map_err(|err| {
        let span = err.span().unwrap_or(0..0);
        located(
            span.clone(),
            field_at(text, span.start),
            err.message().to_string(),
        )
    })?;

    let mut policies = BTreeMap::new();
    for (code, table) in &raw.jurisdiction {
        let table_span = table.span();
        let jurisdiction = Jurisdiction::from_code(code).map_err(|e| {
            let at = text
                .find(&format!("\"{code}\""))
                .unwrap_or(table_span.start);
            located(
                at..at,
                Some(format!("jurisdiction.\"{code}\"")),
                e.to_string(),
            )
        })?;
        let prefix = format!("jurisdiction.\"{code}\"");
        let policy = merge(&raw.defaults, table.get_ref()).map_err(|(span, field, message)| {
            let span = span.unwrap_or(table_span.clone());
            located(span, Some(format!("{prefix}.{field}")), message)
        })?;
        policies.insert(jurisdiction, policy);
    }
    Ok(PolicySet { policies })
}

type MergeError = (Option<Range<usize>>, &'static str, String);

/// Combines `[defaults]` with one jurisdiction's table and validates the result, keeping the span
/// of whichever table supplied each field so an error points at the line that set it.
fn merge(defaults: &RawPolicy, own: &RawPolicy) -> Result<RetentionPolicy, MergeError> {
    fn pick<'a, T>(
        own: &'a Option<Spanned<T>>,
        defaults: &'a Option<Spanned<T>>,
    ) -> Option<&'a Spanned<T>> {
        own.as_ref().or(defaults.as_ref())
    }
    fn required<'a, T>(
        own: &'a Option<Spanned<T>>,
        defaults: &'a Option<Spanned<T>>,
        field: &'static str,
    ) -> Result<&'a Spanned<T>, MergeError> {
        pick(own, defaults).ok_or((
            None,
            field,
            "missing: set it in this table or in [defaults]".to_string(),
        ))
    }

    let recording = required(
        &own.recording_retention_days,
        &defaults.recording_retention_days,
        "recording_retention_days",
    )?;
    let call_detail = required(
        &own.call_detail_retention_days,
        &defaults.call_detail_retention_days,
        "call_detail_retention_days",
    )?;
    let privileged = required(
        &own.privileged_retention,
        &defaults.privileged_retention,
        "privileged_retention",
    )?;
    let privileged_retention = PrivilegedRetention::parse(privileged.get_ref()).ok_or((
        Some(privileged.span()),
        "privileged_retention",
        format!(
            "must be \"nothing\" or \"call-detail\", got {:?}",
            privileged.get_ref()
        ),
    ))?;
    let review_required = required(
        &own.hold_requires_review_date,
        &defaults.hold_requires_review_date,
        "hold_requires_review_date",
    )?;
    let max_review = required(
        &own.hold_max_review_days,
        &defaults.hold_max_review_days,
        "hold_max_review_days",
    )?;
    let sweep = pick(
        &own.sweep_interval_seconds,
        &defaults.sweep_interval_seconds,
    );
    let source = pick(&own.source, &defaults.source);
    let notice = pick(
        &own.shortening_notice_seconds,
        &defaults.shortening_notice_seconds,
    );

    let policy = RetentionPolicy {
        recording_retention_days: *recording.get_ref(),
        call_detail_retention_days: *call_detail.get_ref(),
        privileged_retention,
        hold_requires_review_date: *review_required.get_ref(),
        hold_max_review_days: *max_review.get_ref(),
        sweep_interval_seconds: sweep
            .map(|s| *s.get_ref())
            .unwrap_or(DEFAULT_SWEEP_INTERVAL_SECONDS),
        source: source.map(|s| s.get_ref().clone()).unwrap_or_default(),
        shortening_notice_seconds: notice
            .map(|n| *n.get_ref())
            .unwrap_or(DEFAULT_SHORTENING_NOTICE_SECONDS),
    };
    policy.validate().map_err(|violation| {
        let span = match violation.field {
            "recording_retention_days" => Some(recording.span()),
            "call_detail_retention_days" => Some(call_detail.span()),
            "hold_max_review_days" => Some(max_review.span()),
            "sweep_interval_seconds" => sweep.map(Spanned::span),
            "source" => source.map(Spanned::span),
            "shortening_notice_seconds" => notice.map(Spanned::span),
            _ => None,
        };
        (span, violation.field, violation.reason)
    })?;
    Ok(policy)
}

/// 1-based line number of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.as_bytes()[..offset]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// The dotted name of the key assigned on the line holding `offset`, qualified by the table
/// header above it, for errors the TOML parser reports by position only.
fn field_at(text: &str, offset: usize) -> Option<String> {
    let line_index = line_of(text, offset) - 1;
    let lines: Vec<&str> = text.lines().map(without_comment).collect();
    let line = *lines.get(line_index)?;
    let is_header = |l: &str| l.starts_with('[') && l.ends_with(']');
    let key = (!is_header(line))
        .then(|| line.split_once('=').map(|(k, _)| k.trim().to_string()))
        .flatten();
    let header = lines[..=line_index]
        .iter()
        .rev()
        .find(|l| is_header(l))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    match (header, key) {
        (Some(h), Some(k)) => Some(format!("{h}.{k}")),
        (None, Some(k)) => Some(k),
        (h, None) => h,
    }
}

/// A line without its comment and surrounding blanks; a `#` inside a quoted string is kept.
fn without_comment(line: &str) -> &str {
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match c {
            '\\' if in_string => escaped = !escaped,
            '"' if !escaped => in_string = !in_string,
            '#' if !in_string => return line[..i].trim(),
            _ => {}
        }
        if c != '\\' {
            escaped = false;
        }
    }
    line.trim()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GOOD: &str = r##"
[defaults]
recording_retention_days = 365
call_detail_retention_days = 1095
privileged_retention = "call-detail"
hold_requires_review_date = true
hold_max_review_days = 365

[jurisdiction."US-TX"]  # Texas, "#1"
recording_retention_days = 180
source = "example"

[jurisdiction."US-BOP"]
privileged_retention = "nothing"
sweep_interval_seconds = 60
shortening_notice_seconds = 3600
"##;

    #[test]
    fn tables_override_defaults_field_by_field() {
        let set = parse_policy_file("p.toml", GOOD).unwrap();
        assert_eq!(set.len(), 2);
        let tx = set.get(Jurisdiction::Tx).unwrap();
        assert_eq!(tx.recording_retention_days, 180);
        assert_eq!(tx.call_detail_retention_days, 1095);
        assert_eq!(tx.sweep_interval_seconds, DEFAULT_SWEEP_INTERVAL_SECONDS);
        assert_eq!(tx.source, "example");
        assert_eq!(
            tx.shortening_notice_seconds,
            DEFAULT_SHORTENING_NOTICE_SECONDS
        );
        let bop = set.get(Jurisdiction::Bop).unwrap();
        assert_eq!(bop.privileged_retention, PrivilegedRetention::Nothing);
        assert_eq!(bop.sweep_interval_seconds, 60);
        assert_eq!(bop.shortening_notice_seconds, 3600);
        assert!(set.missing_required().contains(&Jurisdiction::Ca));
        assert!(!set.missing_required().contains(&Jurisdiction::Tx));
        assert!(!set.missing_required().contains(&Jurisdiction::Pr));
    }

    fn error_of(text: &str) -> PolicyFileError {
        parse_policy_file("bad.toml", text).unwrap_err()
    }

    #[test]
    fn a_wrong_type_names_line_and_field() {
        let text = GOOD.replace(
            "recording_retention_days = 180",
            "recording_retention_days = \"half a year\"",
        );
        let err = error_of(&text);
        assert_eq!(err.line, 10);
        assert_eq!(
            err.field.as_deref(),
            Some("jurisdiction.\"US-TX\".recording_retention_days")
        );
        assert!(err.to_string().starts_with("bad.toml:10: "), "{err}");
    }

    #[test]
    fn an_unknown_field_names_line_and_field() {
        let text = GOOD.replace("source = \"example\"", "retention_days = 3");
        let err = error_of(&text);
        assert_eq!(err.line, 11, "{err}");
        assert_eq!(
            err.field.as_deref(),
            Some("jurisdiction.\"US-TX\".retention_days")
        );
        assert!(err.message.contains("unknown field"), "{err}");
    }

    #[test]
    fn a_rule_violation_points_at_the_line_that_set_the_value() {
        let text = GOOD.replace(
            "call_detail_retention_days = 1095",
            "call_detail_retention_days = 10",
        );
        let err = error_of(&text);
        // The default set it, on line 4; the error is reported for the first jurisdiction.
        assert_eq!(err.line, 4, "{err}");
        assert_eq!(
            err.field.as_deref(),
            Some("jurisdiction.\"US-BOP\".call_detail_retention_days")
        );
        assert!(err.message.contains("at least recording_retention_days"));
    }

    #[test]
    fn an_unknown_jurisdiction_and_a_bad_enum_are_located() {
        let err = error_of(&GOOD.replace("US-TX", "US-XX"));
        assert_eq!(err.line, 9, "{err}");
        assert!(err.message.contains("unknown jurisdiction"));

        let err = error_of(&GOOD.replace("\"nothing\"", "\"audio\""));
        assert_eq!(err.line, 14, "{err}");
        assert!(err.message.contains("\"nothing\" or \"call-detail\""));
    }

    #[test]
    fn a_missing_field_is_reported_on_its_table() {
        let text = GOOD.replace("hold_max_review_days = 365\n", "");
        let err = error_of(&text);
        assert_eq!(
            err.field.as_deref(),
            Some("jurisdiction.\"US-BOP\".hold_max_review_days")
        );
        assert!(err.message.contains("missing"));
    }

    #[test]
    fn broken_toml_syntax_is_located() {
        let err = error_of("[defaults]\nrecording_retention_days = = 3\n");
        assert_eq!(err.line, 2, "{err}");
    }

    fn policy(recording: u32, call_detail: u32, sweep: u32) -> RetentionPolicy {
        RetentionPolicy {
            recording_retention_days: recording,
            call_detail_retention_days: call_detail,
            privileged_retention: PrivilegedRetention::Nothing,
            hold_requires_review_date: false,
            hold_max_review_days: 30,
            sweep_interval_seconds: sweep,
            source: String::new(),
            shortening_notice_seconds: 0,
        }
    }

    proptest! {
        #[test]
        fn validation_accepts_exactly_the_documented_ranges(
            recording in 0u32..40_000, call_detail in 0u32..40_000, sweep in 0u32..100_000,
        ) {
            let ok = policy(recording, call_detail, sweep).validate().is_ok();
            let expected = (1..=MAX_RETENTION_DAYS).contains(&recording)
                && call_detail <= MAX_RETENTION_DAYS
                && call_detail >= recording
                && (1..=MAX_SWEEP_INTERVAL_SECONDS).contains(&sweep);
            prop_assert_eq!(ok, expected);
        }

        #[test]
        fn parser_never_panics(text in "\\PC{0,200}") {
            let _ = parse_policy_file("fuzz.toml", &text);
        }
    }
}
