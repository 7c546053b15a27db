//! What a client asks of `POST /rules/execute`, and the asset filter it carries.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Most ids one filter may list, and most rules one execution may name: bounds that
/// keep a request's SQL parameters and plan small.
pub const MAX_FILTER_IDS: usize = 10_000;
pub const MAX_FILTER_CODES: usize = 200;
pub const MAX_RULES: usize = 200;

/// Which assets an execution runs over; all given filters must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssetFilter {
    #[serde(default)]
    pub asset_ids: Vec<Uuid>,
    #[serde(default)]
    pub disciplines: Vec<String>,
    #[serde(default)]
    pub asset_types: Vec<String>,
    /// Tag pattern: `*` any run of characters, `?` one character, e.g. `M-1*`.
    pub tag: Option<String>,
}

impl AssetFilter {
    /// Problems with the filter, for a 422.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.asset_ids.len() > MAX_FILTER_IDS {
            problems.push(format!(
                "filters.asset_ids lists more than {MAX_FILTER_IDS} ids"
            ));
        }
        if self.disciplines.len() > MAX_FILTER_CODES || self.asset_types.len() > MAX_FILTER_CODES {
            problems.push(format!(
                "filters list more than {MAX_FILTER_CODES} disciplines or asset types"
            ));
        }
        if self
            .tag
            .as_ref()
            .is_some_and(|tag| tag.is_empty() || tag.len() > 256)
        {
            problems.push("filters.tag must be 1 to 256 characters".to_owned());
        }
        problems
    }

    /// The tag pattern as a SQL `like` pattern (with `\` escaping `%` and `_`).
    pub fn tag_like(&self) -> Option<String> {
        self.tag.as_ref().map(|pattern| {
            let mut like = String::with_capacity(pattern.len());
            for c in pattern.chars() {
                match c {
                    '*' => like.push('%'),
                    '?' => like.push('_'),
                    '%' | '_' | '\\' => {
                        like.push('\\');
                        like.push(c);
                    }
                    other => like.push(other),
                }
            }
            like
        })
    }

    pub fn disciplines_upper(&self) -> Vec<String> {
        self.disciplines
            .iter()
            .map(|d| d.to_ascii_uppercase())
            .collect()
    }

    pub fn asset_types_upper(&self) -> Vec<String> {
        self.asset_types
            .iter()
            .map(|t| t.to_ascii_uppercase())
            .collect()
    }
}

/// Body of `POST /rules/execute`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteRequest {
    /// Rules to run (newest versions); empty: every enabled rule. Run by priority.
    #[serde(default)]
    pub rule_ids: Vec<Uuid>,
    #[serde(default)]
    pub filters: AssetFilter,
    /// Plan only: return what would change and write nothing to the log.
    #[serde(default)]
    pub dry_run: bool,
    /// Answer when the batch has finished instead of at once.
    #[serde(default)]
    pub wait: bool,
    /// Apply this dry run's plan exactly (other fields must be absent).
    pub plan_id: Option<Uuid>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_patterns_become_escaped_like_patterns() {
        let filter = AssetFilter {
            tag: Some("M-1*_?%".into()),
            ..Default::default()
        };
        assert_eq!(filter.tag_like().as_deref(), Some("M-1%\\__\\%"));
    }
}
