//! What a rule says, as sent by clients and stored, and its compiled form.

use super::expression::{Expression, ExpressionError};
use super::template::Template;
use crate::assets::input;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use uuid::Uuid;

/// Most actions one rule may have; a rule with more is a script, not a rule.
const MAX_ACTIONS: usize = 32;

/// A rule as defined by an engineer (body of `POST /rules` and `PUT /rules/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleInput {
    pub name: String,
    pub discipline: String,
    /// Lower runs first.
    #[serde(default = "default_priority")]
    pub priority: i32,
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// CEL condition over `asset`, e.g. `asset.properties.rated_power_kw > 55`.
    pub when: String,
    /// The desired state where the condition holds.
    pub then: Vec<Action>,
}

impl RuleInput {
    /// The rule with its codes (discipline, asset and cable types, relationship kinds)
    /// upper-cased, as they are stored and compared: `electrical` and `ELECTRICAL` are
    /// one definition, so saving the other spelling makes no new version.
    pub fn normalized(mut self) -> Self {
        self.discipline.make_ascii_uppercase();
        for action in &mut self.then {
            match action {
                Action::UpsertAsset {
                    asset_type,
                    discipline,
                    ..
                } => {
                    asset_type.make_ascii_uppercase();
                    discipline.make_ascii_uppercase();
                }
                Action::UpsertCable {
                    cable_type,
                    discipline,
                    ..
                } => {
                    cable_type.make_ascii_uppercase();
                    if let Some(discipline) = discipline {
                        discipline.make_ascii_uppercase();
                    }
                }
                Action::CreateRelationship { kind, .. } => kind.make_ascii_uppercase(),
                Action::SetProperty { .. }
                | Action::RemoveProperty { .. }
                | Action::Flag { .. } => {}
            }
        }
        self
    }
}

fn default_priority() -> i32 {
    100
}

fn default_enabled() -> bool {
    true
}

/// One end of a cable or relationship: the rule's asset, or an asset found by tag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum End {
    /// The asset the rule runs on.
    Asset,
    /// The asset whose tag this template renders, e.g. `{asset.properties.mcc}`.
    Tag(String),
}

/// Severity of a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl Severity {
    /// The wire name, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Error => "error",
        }
    }
}

/// What a rule makes true. Values are CEL expressions; tags and names are templates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// `properties[name] = value` (a CEL expression).
    SetProperty {
        name: String,
        value: String,
    },
    RemoveProperty {
        name: String,
    },
    /// An asset with this tag exists with these fields (created or updated).
    UpsertAsset {
        tag: String,
        asset_type: String,
        discipline: String,
        name: Option<String>,
        area: Option<String>,
        #[serde(default)]
        properties: BTreeMap<String, String>,
    },
    /// A cable with this tag exists between these ends (created or updated).
    UpsertCable {
        tag: String,
        cable_type: String,
        discipline: Option<String>,
        from: End,
        to: End,
        #[serde(default)]
        properties: BTreeMap<String, String>,
    },
    /// A relationship of this kind exists between these ends.
    CreateRelationship {
        kind: String,
        from: End,
        to: End,
    },
    /// A validation finding on the asset; changes nothing.
    Flag {
        severity: Severity,
        message: String,
    },
}

/// A compiled rule version, ready to evaluate.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    pub id: Uuid,
    pub version: i32,
    pub name: String,
    pub discipline: String,
    pub priority: i32,
    pub condition: Expression,
    pub actions: Vec<CompiledAction>,
    /// Whether the rule's desired state includes which findings an asset has, so that
    /// it resolves those it no longer flags: it has a `flag` action, or (set before an
    /// execution, [`crate::rules::store::own_open_findings`]) an earlier version raised
    /// findings still open.
    pub owns_findings: bool,
    /// Whether the rule may have open findings; only `false` once
    /// [`crate::rules::store::own_open_findings`] found none (then planning need not
    /// look any up, until a chunk is redone locked: a concurrent run of the rule may
    /// have raised some).
    pub may_have_open_findings: bool,
    /// The rules that set or remove properties or upsert assets or cables and run
    /// before this one in the same execution ([`in_batch_order`]; empty otherwise). Where one of them wants a
    /// property of an asset that this rule would change, the two would undo each other
    /// on every run: planning reports a conflict instead (`planner::contested`).
    pub earlier: Arc<[CompiledRule]>,
}

/// `rules` in the order an execution runs them (priority, then name, then id), each
/// knowing the rules before it that write assets ([`CompiledRule::earlier`]).
pub fn in_batch_order(mut rules: Vec<CompiledRule>) -> Vec<CompiledRule> {
    rules.sort_by(|a, b| (a.priority, &a.name, a.id).cmp(&(b.priority, &b.name, b.id)));
    let mut writers: Vec<CompiledRule> = Vec::new();
    let mut ordered = Vec::with_capacity(rules.len());
    for mut rule in rules {
        rule.earlier = Arc::from(writers.as_slice());
        if rule.actions.iter().any(|action| {
            matches!(
                action,
                CompiledAction::SetProperty { .. }
                    | CompiledAction::RemoveProperty { .. }
                    | CompiledAction::UpsertAsset { .. }
                    | CompiledAction::UpsertCable { .. }
            )
        }) {
            writers.push(CompiledRule {
                earlier: Arc::from(Vec::new()),
                ..rule.clone()
            });
        }
        ordered.push(rule);
    }
    ordered
}

#[derive(Debug, Clone)]
pub enum CompiledEnd {
    Asset,
    Tag(Template),
}

#[derive(Debug, Clone)]
pub enum CompiledAction {
    SetProperty {
        name: String,
        value: Expression,
    },
    RemoveProperty {
        name: String,
    },
    UpsertAsset {
        tag: Template,
        asset_type: String,
        discipline: String,
        name: Option<Template>,
        area: Option<Template>,
        properties: Vec<(String, Expression)>,
    },
    UpsertCable {
        tag: Template,
        cable_type: String,
        discipline: Option<String>,
        from: CompiledEnd,
        to: CompiledEnd,
        properties: Vec<(String, Expression)>,
    },
    CreateRelationship {
        kind: String,
        from: CompiledEnd,
        to: CompiledEnd,
    },
    Flag {
        severity: Severity,
        message: Template,
    },
}

/// Compile a rule; every problem is reported, each with its place.
pub fn compile(
    id: Uuid,
    version: i32,
    input: &RuleInput,
) -> Result<CompiledRule, Vec<ExpressionError>> {
    let mut errors = Vec::new();
    let plain = |field: &str, message: &str| ExpressionError {
        field: field.to_owned(),
        message: message.to_owned(),
        line: None,
        column: None,
    };
    if input.name.trim().is_empty() || input.name.chars().count() > 200 {
        errors.push(plain("name", "must be 1 to 200 characters"));
    } else if input.name.chars().any(char::is_control) {
        errors.push(plain(
            "name",
            "must not contain control characters (line breaks, tabs...)",
        ));
    }
    if let Some(message) = synapse_shared::domain::code_error("discipline", &input.discipline) {
        errors.push(plain("discipline", message));
    }
    if input.then.is_empty() || input.then.len() > MAX_ACTIONS {
        errors.push(plain("then", "must list 1 to 32 actions"));
    }
    let condition = collect(Expression::condition(&input.when, "when"), &mut errors);
    let actions: Vec<_> = input
        .then
        .iter()
        .enumerate()
        .filter_map(|(index, action)| {
            compile_action(action, &format!("then[{index}]"), &mut errors)
        })
        .collect();
    match condition {
        Some(condition) if errors.is_empty() => Ok(CompiledRule {
            id,
            version,
            name: input.name.clone(),
            discipline: input.discipline.to_ascii_uppercase(),
            priority: input.priority,
            owns_findings: actions
                .iter()
                .any(|action| matches!(action, CompiledAction::Flag { .. })),
            may_have_open_findings: true,
            condition,
            actions,
            earlier: Arc::from(Vec::new()),
        }),
        _ => Err(errors),
    }
}

/// Longest finding message, as written in a rule and as rendered for an asset: as long
/// as a string property may be.
pub const MAX_MESSAGE_BYTES: usize = 4_096;

/// A tag template without an expression makes the same tag for every asset: if that
/// is no valid tag, the action fails on every asset, so it is refused now.
fn check_constant_tag(tag: Option<&Template>, at: &str, errors: &mut Vec<ExpressionError>) {
    let Some(constant) = tag.and_then(Template::constant) else {
        return;
    };
    let mut invalid = Vec::new();
    input::check_tag(constant, &mut invalid);
    if let Some(error) = invalid.first() {
        errors.push(ExpressionError {
            field: format!("{at}.tag"),
            message: format!(
                "makes `{constant}` for every asset, which is not a valid tag: it {}",
                error.message
            ),
            line: None,
            column: None,
        });
    }
}

/// A cable or relationship whose two ends are the same asset for every asset (both the
/// asset, or one tag written twice) fails on every asset: refused now.
fn check_distinct_ends(
    from: Option<&CompiledEnd>,
    to: Option<&CompiledEnd>,
    at: &str,
    errors: &mut Vec<ExpressionError>,
) {
    let same = match (from, to) {
        (Some(CompiledEnd::Asset), Some(CompiledEnd::Asset)) => true,
        (Some(CompiledEnd::Tag(from)), Some(CompiledEnd::Tag(to))) => {
            from.constant().is_some() && from.constant() == to.constant()
        }
        _ => false,
    };
    if same {
        errors.push(ExpressionError {
            field: format!("{at}.to"),
            message: "names the same asset as `from` for every asset: a link joins two \
                      different assets"
                .to_owned(),
            line: None,
            column: None,
        });
    }
}

fn compile_action(
    action: &Action,
    at: &str,
    errors: &mut Vec<ExpressionError>,
) -> Option<CompiledAction> {
    let before = errors.len();
    let mut check_name = |field: &str, name: &str, errors: &mut Vec<ExpressionError>| {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            errors.push(ExpressionError {
                field: format!("{at}.{field}"),
                message: "must be 1 to 64 ASCII letters, digits or `_`".into(),
                line: None,
                column: None,
            });
        }
    };
    // An asset's property may not take the name of one of its fields.
    let mut check_asset_name = |field: &str, name: &str, errors: &mut Vec<ExpressionError>| {
        check_name(field, name, errors);
        if let Some(message) = input::asset_field_clash(name) {
            errors.push(ExpressionError {
                field: format!("{at}.{field}"),
                message: message.into(),
                line: None,
                column: None,
            });
        }
    };
    let compiled = match action {
        Action::SetProperty { name, value } => {
            check_asset_name("name", name, errors);
            collect(Expression::compile(value, &format!("{at}.value")), errors).map(|value| {
                CompiledAction::SetProperty {
                    name: name.clone(),
                    value,
                }
            })
        }
        Action::RemoveProperty { name } => {
            check_name("name", name, errors);
            Some(CompiledAction::RemoveProperty { name: name.clone() })
        }
        Action::UpsertAsset {
            tag,
            asset_type,
            discipline,
            name,
            area,
            properties,
        } => {
            check_codes(
                at,
                &[("asset_type", asset_type), ("discipline", discipline)],
                errors,
            );
            let tag = collect(Template::compile(tag, &format!("{at}.tag")), errors);
            check_constant_tag(tag.as_ref(), at, errors);
            let name = name
                .as_ref()
                .and_then(|name| collect(Template::compile(name, &format!("{at}.name")), errors));
            let area = area
                .as_ref()
                .and_then(|area| collect(Template::compile(area, &format!("{at}.area")), errors));
            let properties = compile_properties(properties, at, errors, &mut check_asset_name);
            tag.map(|tag| CompiledAction::UpsertAsset {
                tag,
                asset_type: asset_type.to_ascii_uppercase(),
                discipline: discipline.to_ascii_uppercase(),
                name,
                area,
                properties,
            })
        }
        Action::UpsertCable {
            tag,
            cable_type,
            discipline,
            from,
            to,
            properties,
        } => {
            check_codes(at, &[("cable_type", cable_type)], errors);
            if let Some(discipline) = discipline {
                check_codes(at, &[("discipline", discipline)], errors);
            }
            let tag = collect(Template::compile(tag, &format!("{at}.tag")), errors);
            check_constant_tag(tag.as_ref(), at, errors);
            let from = compile_end(from, &format!("{at}.from"), errors);
            let to = compile_end(to, &format!("{at}.to"), errors);
            check_distinct_ends(from.as_ref(), to.as_ref(), at, errors);
            let properties = compile_properties(properties, at, errors, &mut check_name);
            match (tag, from, to) {
                (Some(tag), Some(from), Some(to)) => Some(CompiledAction::UpsertCable {
                    tag,
                    cable_type: cable_type.to_ascii_uppercase(),
                    discipline: discipline.as_ref().map(|d| d.to_ascii_uppercase()),
                    from,
                    to,
                    properties,
                }),
                _ => None,
            }
        }
        Action::CreateRelationship { kind, from, to } => {
            check_codes(at, &[("kind", kind)], errors);
            let from = compile_end(from, &format!("{at}.from"), errors);
            let to = compile_end(to, &format!("{at}.to"), errors);
            check_distinct_ends(from.as_ref(), to.as_ref(), at, errors);
            match (from, to) {
                (Some(from), Some(to)) => Some(CompiledAction::CreateRelationship {
                    kind: kind.to_ascii_uppercase(),
                    from,
                    to,
                }),
                _ => None,
            }
        }
        Action::Flag { severity, message } => {
            if message.len() > MAX_MESSAGE_BYTES {
                errors.push(ExpressionError {
                    field: format!("{at}.message"),
                    message: format!("longer than {MAX_MESSAGE_BYTES} bytes"),
                    line: None,
                    column: None,
                });
                return None;
            }
            if message.trim().is_empty() {
                errors.push(ExpressionError {
                    field: format!("{at}.message"),
                    message: "a finding needs a message: say what is wrong".to_owned(),
                    line: None,
                    column: None,
                });
                return None;
            }
            collect(Template::compile(message, &format!("{at}.message")), errors).map(|message| {
                CompiledAction::Flag {
                    severity: *severity,
                    message,
                }
            })
        }
    };
    (errors.len() == before).then_some(compiled).flatten()
}

fn compile_end(end: &End, field: &str, errors: &mut Vec<ExpressionError>) -> Option<CompiledEnd> {
    match end {
        End::Asset => Some(CompiledEnd::Asset),
        End::Tag(template) => collect(Template::compile(template, &format!("{field}.tag")), errors)
            .map(CompiledEnd::Tag),
    }
}

fn compile_properties(
    properties: &BTreeMap<String, String>,
    at: &str,
    errors: &mut Vec<ExpressionError>,
    check_name: &mut dyn FnMut(&str, &str, &mut Vec<ExpressionError>),
) -> Vec<(String, Expression)> {
    properties
        .iter()
        .filter_map(|(name, source)| {
            check_name(&format!("properties.{name}"), name, errors);
            collect(
                Expression::compile(source, &format!("{at}.properties.{name}")),
                errors,
            )
            .map(|expression| (name.clone(), expression))
        })
        .collect()
}

fn collect<T>(result: Result<T, ExpressionError>, errors: &mut Vec<ExpressionError>) -> Option<T> {
    result.map_err(|error| errors.push(error)).ok()
}

/// Codes an action writes (asset type, discipline, cable type, relationship kind) must
/// be what the endpoints that write them directly accept.
fn check_codes(at: &str, codes: &[(&str, &String)], errors: &mut Vec<ExpressionError>) {
    for (field, code) in codes {
        let Some(message) = synapse_shared::domain::code_error(field, code) else {
            continue;
        };
        errors.push(ExpressionError {
            field: format!("{at}.{field}"),
            message: message.into(),
            line: None,
            column: None,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_rule_with_every_action_kind_compiles() {
        let input: RuleInput = serde_json::from_value(json!({
            "name": "Large motors get a VFD and a power cable",
            "discipline": "ELECTRICAL",
            "when": "asset.asset_type == 'ELECTRIC_MOTOR' && asset.properties.rated_power_kw > 55",
            "then": [
                {"type": "set_property", "name": "needs_vfd", "value": "true"},
                {"type": "remove_property", "name": "legacy"},
                {"type": "upsert_asset", "tag": "VFD-{asset.tag}", "asset_type": "VARIABLE_FREQUENCY_DRIVE",
                 "discipline": "ELECTRICAL", "area": "{asset.area}",
                 "properties": {"rated_power_kw": "asset.properties.rated_power_kw"}},
                {"type": "upsert_cable", "tag": "W-{asset.tag}-PWR", "cable_type": "POWER",
                 "from": {"tag": "{asset.properties.mcc}"}, "to": "asset"},
                {"type": "create_relationship", "kind": "FEEDS", "from": {"tag": "VFD-{asset.tag}"}, "to": "asset"},
                {"type": "flag", "severity": "warning", "message": "check {asset.tag}"}
            ]
        }))
        .unwrap();
        let rule = compile(Uuid::nil(), 1, &input).unwrap();
        assert_eq!(rule.actions.len(), 6);
    }

    #[test]
    fn every_bad_expression_is_reported_with_its_place() {
        let input: RuleInput = serde_json::from_value(json!({
            "name": "broken",
            "discipline": "ELECTRICAL",
            "when": "asset.tag ==",
            "then": [{"type": "set_property", "name": "x", "value": "asset.colour"}]
        }))
        .unwrap();
        let errors = compile(Uuid::nil(), 1, &input).unwrap_err();
        let fields: Vec<_> = errors.iter().map(|error| error.field.as_str()).collect();
        assert_eq!(fields, vec!["when", "then[0].value"]);
    }

    #[test]
    fn a_flag_without_a_message_is_refused() {
        let input: RuleInput = serde_json::from_value(json!({
            "name": "silent", "discipline": "ELECTRICAL", "when": "true",
            "then": [{"type": "flag", "severity": "warning", "message": "  "}]
        }))
        .unwrap();
        let errors = compile(Uuid::nil(), 1, &input).unwrap_err();
        let fields: Vec<_> = errors.iter().map(|error| error.field.as_str()).collect();
        assert_eq!(fields, vec!["then[0].message"]);
    }

    #[test]
    fn actions_that_would_fail_on_every_asset_are_refused() {
        // Before: each was stored, and every run gave every asset the same RULE_ERROR.
        let input: RuleInput = serde_json::from_value(json!({
            "name": "always wrong",
            "discipline": "ELECTRICAL",
            "when": "true",
            "then": [
                {"type": "upsert_asset", "tag": "", "asset_type": "JUNCTION_BOX",
                 "discipline": "ELECTRICAL"},
                {"type": "upsert_asset", "tag": "plain tag", "asset_type": "JUNCTION_BOX",
                 "discipline": "ELECTRICAL"},
                {"type": "upsert_cable", "tag": "W-{asset.tag}", "cable_type": "POWER",
                 "from": "asset", "to": "asset"},
                {"type": "create_relationship", "kind": "FEEDS", "from": {"tag": "A"},
                 "to": {"tag": "A"}},
                // Fine: ends that may differ, a tag made per asset.
                {"type": "create_relationship", "kind": "FEEDS", "from": {"tag": "A"},
                 "to": {"tag": "{asset.tag}"}},
                {"type": "upsert_asset", "tag": "JB-1", "asset_type": "JUNCTION_BOX",
                 "discipline": "ELECTRICAL"}
            ]
        }))
        .unwrap();
        let errors = compile(Uuid::nil(), 1, &input).unwrap_err();
        let fields: Vec<(&str, &str)> = errors
            .iter()
            .map(|error| (error.field.as_str(), error.message.as_str()))
            .collect();
        assert_eq!(
            fields,
            vec![
                ("then[0].tag", "makes `` for every asset, which is not a valid tag: it must not be empty"),
                ("then[1].tag", "makes `plain tag` for every asset, which is not a valid tag: it must not contain whitespace, control or invisible characters"),
                ("then[2].to", "names the same asset as `from` for every asset: a link joins two different assets"),
                ("then[3].to", "names the same asset as `from` for every asset: a link joins two different assets"),
            ]
        );
    }

    #[test]
    fn codes_an_action_writes_are_checked_as_the_endpoints_check_them() {
        let input: RuleInput = serde_json::from_value(json!({
            "name": "bad codes",
            "discipline": "ELECTRICAL",
            "when": "true",
            "then": [
                {"type": "upsert_asset", "tag": "VFD-{asset.tag}", "asset_type": "VFD",
                 "discipline": "elec trical"},
                {"type": "upsert_cable", "tag": "W-{asset.tag}", "cable_type": "",
                 "discipline": "E/I", "from": "asset", "to": {"tag": "MCC-1"}},
                {"type": "create_relationship", "kind": "feeds to", "from": "asset",
                 "to": {"tag": "MCC-1"}},
                {"type": "create_relationship", "kind": "FEEDS", "from": "asset",
                 "to": {"tag": "MCC-1"}}
            ]
        }))
        .unwrap();
        let errors = compile(Uuid::nil(), 1, &input).unwrap_err();
        let fields: Vec<_> = errors.iter().map(|error| error.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "then[0].discipline",
                "then[1].cable_type",
                "then[1].discipline",
                "then[2].kind"
            ]
        );
        assert!(errors
            .iter()
            .all(|error| error.message == input::CODE_FORMAT));
    }

    #[test]
    fn a_name_counts_characters_and_takes_no_control_character_and_a_message_is_bounded() {
        let rule = |name: &str, message: &str| -> RuleInput {
            serde_json::from_value(json!({
                "name": name, "discipline": "ELECTRICAL", "when": "true",
                "then": [{"type": "flag", "severity": "info", "message": message}]
            }))
            .unwrap()
        };
        // 150 characters of two bytes each: within 200 characters.
        assert!(compile(Uuid::nil(), 1, &rule(&"ü".repeat(150), "check")).is_ok());
        let fields = |input: &RuleInput| -> Vec<String> {
            compile(Uuid::nil(), 1, input)
                .err()
                .unwrap_or_default()
                .into_iter()
                .map(|error| error.field)
                .collect()
        };
        assert_eq!(fields(&rule(&"ü".repeat(201), "check")), ["name"]);
        assert_eq!(fields(&rule("Motors\nreviewed", "check")), ["name"]);
        assert_eq!(
            fields(&rule("Motors", &"x".repeat(4_097))),
            ["then[0].message"]
        );
    }

    #[test]
    fn codes_are_upper_cased_so_a_case_only_edit_is_the_same_definition() {
        let rule = |discipline: &str, kind: &str| -> RuleInput {
            serde_json::from_value(json!({
                "name": "feeds", "discipline": discipline, "when": "true",
                "then": [{"type": "create_relationship", "kind": kind, "from": "asset",
                          "to": {"tag": "MCC-1"}},
                         {"type": "upsert_cable", "tag": "W-{asset.tag}", "cable_type": "power",
                          "discipline": "electrical", "from": "asset", "to": {"tag": "MCC-1"}}]
            }))
            .unwrap()
        };
        let lower = rule("electrical", "feeds").normalized();
        assert_eq!(lower, rule("ELECTRICAL", "FEEDS").normalized());
        assert_eq!(lower.discipline, "ELECTRICAL");
        assert!(
            matches!(&lower.then[1], Action::UpsertCable { cable_type, discipline, .. }
            if cable_type == "POWER" && discipline.as_deref() == Some("ELECTRICAL"))
        );
    }

    #[test]
    fn no_rule_gives_an_asset_a_property_named_like_one_of_its_fields() {
        let input: RuleInput = serde_json::from_value(json!({
            "name": "clashes", "discipline": "ELECTRICAL", "when": "true",
            "then": [
                {"type": "set_property", "name": "Area", "value": "'U1'"},
                {"type": "upsert_asset", "tag": "X-{asset.tag}", "asset_type": "VFD",
                 "discipline": "ELECTRICAL", "properties": {"tag": "asset.tag", "kw": "1"}},
                {"type": "remove_property", "name": "area"}
            ]
        }))
        .unwrap();
        let errors = compile(Uuid::nil(), 1, &input).unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].field.starts_with("then[0]"), "{errors:?}");
        assert!(errors[1].field.starts_with("then[1]"), "{errors:?}");
        assert!(errors
            .iter()
            .all(|error| error.message.contains("name of an asset field")));
    }

    #[test]
    fn none_is_no_discipline_of_a_rule_or_of_what_it_writes() {
        let input: RuleInput = serde_json::from_value(json!({
            "name": "nothing", "discipline": "none", "when": "true",
            "then": [{"type": "upsert_asset", "tag": "X-{asset.tag}", "asset_type": "NONE",
                      "discipline": "NONE"}]
        }))
        .unwrap();
        let errors = compile(Uuid::nil(), 1, &input).unwrap_err();
        let fields: Vec<_> = errors.iter().map(|error| error.field.as_str()).collect();
        assert_eq!(fields, vec!["discipline", "then[0].discipline"]);
        assert!(errors
            .iter()
            .all(|error| error.message == synapse_shared::domain::RESERVED_DISCIPLINE));
    }

    #[test]
    fn unknown_action_fields_are_refused_when_parsing() {
        let parsed = serde_json::from_value::<Action>(
            json!({"type": "set_property", "name": "a", "value": "1", "x": 1}),
        );
        assert!(parsed.is_err());
    }
}
