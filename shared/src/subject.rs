//! The NATS subject scheme: a public contract for downstream systems.
//!
//! Every event is published on
//!
//! ```text
//! {prefix}.{discipline}.{aggregate_type}.{event_type}
//! synapse.events.ELECTRICAL.asset.ASSET_UPDATED
//! ```
//!
//! so a consumer filters with ordinary NATS wildcards, e.g. `synapse.events.ELECTRICAL.>`
//! (one discipline), `synapse.events.*.cable.>` (every cable event) or
//! `synapse.events.*.*.RULE_ERROR`. Events without a discipline use the token `NONE`.
//! Tokens are sanitised to `[A-Za-z0-9_-]` so a discipline can never inject a `.`,
//! `*` or `>` into a subject.

use crate::event::{AggregateType, EventEnvelope, EventType};

/// Token used in place of a missing discipline.
pub const NO_DISCIPLINE: &str = "NONE";

/// Subjects under one prefix. Tests use a unique prefix each, so they never see each
/// other's events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectScheme {
    prefix: String,
}

impl SubjectScheme {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Every subject under the prefix: what the stream captures.
    pub fn all(&self) -> String {
        format!("{}.>", self.prefix)
    }

    /// The subject one event is published on.
    pub fn for_event(&self, event: &EventEnvelope) -> String {
        self.subject(
            event.discipline.as_deref(),
            event.aggregate_type,
            event.event_type,
        )
    }

    /// The subject for a discipline, aggregate type and event type.
    pub fn subject(
        &self,
        discipline: Option<&str>,
        aggregate_type: AggregateType,
        event_type: EventType,
    ) -> String {
        format!(
            "{}.{}.{}.{}",
            self.prefix,
            discipline
                .map(sanitize)
                .unwrap_or_else(|| NO_DISCIPLINE.to_owned()),
            aggregate_type.as_str(),
            event_type.as_str()
        )
    }

    /// A filter subject: `None` in any position becomes the `*` wildcard.
    pub fn filter(
        &self,
        discipline: Option<&str>,
        aggregate_type: Option<AggregateType>,
        event_type: Option<EventType>,
    ) -> String {
        format!(
            "{}.{}.{}.{}",
            self.prefix,
            discipline.map(sanitize).unwrap_or_else(|| "*".to_owned()),
            aggregate_type.map(AggregateType::as_str).unwrap_or("*"),
            event_type.map(EventType::as_str).unwrap_or("*"),
        )
    }
}

fn sanitize(token: &str) -> String {
    if token.is_empty() {
        return NO_DISCIPLINE.to_owned();
    }
    token
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_subject_names_discipline_aggregate_type_and_event_type() {
        let scheme = SubjectScheme::new("synapse.events");
        let subject = scheme.subject(
            Some("ELECTRICAL"),
            AggregateType::Asset,
            EventType::AssetUpdated,
        );
        assert_eq!(subject, "synapse.events.ELECTRICAL.asset.ASSET_UPDATED");
    }

    #[test]
    fn a_discipline_cannot_inject_wildcards_or_tokens() {
        let scheme = SubjectScheme::new("p");
        let subject = scheme.subject(
            Some("a.b *>"),
            AggregateType::Batch,
            EventType::BatchStarted,
        );
        assert_eq!(subject, "p.a_b___.batch.BATCH_STARTED");
        let subject = scheme.subject(None, AggregateType::Batch, EventType::BatchStarted);
        assert_eq!(subject, "p.NONE.batch.BATCH_STARTED");
    }

    #[test]
    fn missing_filter_parts_become_single_token_wildcards() {
        let scheme = SubjectScheme::new("synapse.events");
        assert_eq!(
            scheme.filter(None, Some(AggregateType::Cable), None),
            "synapse.events.*.cable.*"
        );
        assert_eq!(scheme.all(), "synapse.events.>");
    }
}
