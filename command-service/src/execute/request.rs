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
        // A code no asset can have (`""`, `E/I`) is a mistake, not "select nothing".
        for (name, codes) in [
            ("disciplines", &self.disciplines),
            ("asset_types", &self.asset_types),
        ] {
            if let Some((index, code)) = codes
                .iter()
                .enumerate()
                .find(|(_, code)| !crate::assets::input::is_code(code))
            {
                problems.push(format!(
                    "filters.{name}[{index}] `{code}` is not a code: it {}",
                    crate::assets::input::CODE_FORMAT
                ));
            }
        }
        if let Some(tag) = &self.tag {
            if tag.is_empty() || tag.len() > 256 {
                problems.push("filters.tag must be 1 to 256 bytes (UTF-8)".to_owned());
            } else if !unicode_normalization::is_nfkc(tag) {
                // No tag is written so (the import refuses them): the pattern would
                // select nothing, silently.
                let usual: String =
                    unicode_normalization::UnicodeNormalization::nfkc(tag.as_str()).collect();
                problems.push(format!(
                    "filters.tag is written with characters that look like `{usual}` but \
                     are not (combining marks, fullwidth or other compatibility forms), as \
                     no tag is: write `{usual}`"
                ));
            }
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

/// Body of `POST /rules/execute` as a client sends it: [`ExecuteRequest`], but a filter
/// given as an empty list is told apart from one left out. An empty list would select
/// nothing, and running over every asset instead (what a left-out filter does) is not
/// what its sender meant, so it is refused ([`ExecuteBody::into_request`]).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteBody {
    /// Rules to run (newest versions), enabled or not: a rule is disabled to keep it
    /// out of runs of every rule, and runs when named. Empty or left out: every
    /// enabled rule. Run by priority.
    #[serde(default)]
    pub rule_ids: Vec<Uuid>,
    #[serde(default)]
    pub filters: FilterBody,
    /// Plan only: return what would change and write nothing to the log.
    #[serde(default)]
    pub dry_run: bool,
    /// Answer when the batch has finished instead of at once.
    #[serde(default)]
    pub wait: bool,
    /// Apply this dry run's plan exactly (other fields must be absent).
    pub plan_id: Option<Uuid>,
}

/// The filters of an [`ExecuteBody`]: each left out, or a list of at least one.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterBody {
    pub asset_ids: Option<Vec<Uuid>>,
    pub disciplines: Option<Vec<String>>,
    pub asset_types: Option<Vec<String>>,
    /// Tag pattern: `*` any run of characters, `?` one character, e.g. `M-1*`.
    pub tag: Option<String>,
}

impl ExecuteBody {
    /// The request, and the problems of filters given as empty lists.
    pub fn into_request(self) -> (ExecuteRequest, Vec<String>) {
        let FilterBody {
            asset_ids,
            disciplines,
            asset_types,
            tag,
        } = self.filters;
        let problems = [
            ("asset_ids", asset_ids.as_ref().map(Vec::len)),
            ("disciplines", disciplines.as_ref().map(Vec::len)),
            ("asset_types", asset_types.as_ref().map(Vec::len)),
        ]
        .into_iter()
        .filter(|(_, given)| *given == Some(0))
        .map(|(name, _)| {
            format!("filters.{name} is empty, which would select no asset: leave it out to run over every asset")
        })
        .collect();
        let request = ExecuteRequest {
            rule_ids: self.rule_ids,
            filters: AssetFilter {
                asset_ids: asset_ids.unwrap_or_default(),
                disciplines: disciplines.unwrap_or_default(),
                asset_types: asset_types.unwrap_or_default(),
                tag,
            },
            dry_run: self.dry_run,
            wait: self.wait,
            plan_id: self.plan_id,
        };
        (request, problems)
    }
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

    #[test]
    fn a_tag_pattern_no_tag_could_match_is_a_problem() {
        let problems = |tag: &str| {
            AssetFilter {
                tag: Some(tag.to_owned()),
                ..AssetFilter::default()
            }
            .problems()
        };
        assert_eq!(problems("Ä*"), Vec::<String>::new());
        // `A` and a combining diaeresis: looks like `Ä*`, as no tag is written.
        let decomposed = problems("A\u{308}*");
        assert_eq!(decomposed.len(), 1, "{decomposed:?}");
        assert!(decomposed[0].contains("write `Ä*`"), "{decomposed:?}");
        // 200 `é` are 400 bytes: the limit is in bytes and says so.
        assert_eq!(
            problems(&"é".repeat(200)),
            ["filters.tag must be 1 to 256 bytes (UTF-8)"]
        );
    }

    #[test]
    fn a_filter_given_as_an_empty_list_is_a_problem_and_a_left_out_one_is_not() {
        let body: ExecuteBody =
            serde_json::from_str(r#"{"filters": {"disciplines": [], "asset_types": ["MOTOR"]}}"#)
                .unwrap();
        let (request, problems) = body.into_request();
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].starts_with("filters.disciplines is empty"),
            "{problems:?}"
        );
        assert_eq!(request.filters.asset_types, ["MOTOR"]);
        let blank = AssetFilter {
            disciplines: vec!["ELECTRICAL".into(), "".into()],
            asset_types: vec!["E/I".into()],
            ..AssetFilter::default()
        };
        assert_eq!(
            blank.problems(),
            [
                "filters.disciplines[1] `` is not a code: it must be 1 to 64 letters, digits, `_` or `-`",
                "filters.asset_types[0] `E/I` is not a code: it must be 1 to 64 letters, digits, `_` or `-`"
            ]
        );
        let (request, problems) = ExecuteBody::default().into_request();
        assert!(problems.is_empty());
        assert_eq!(request, ExecuteRequest::default());
    }
}
