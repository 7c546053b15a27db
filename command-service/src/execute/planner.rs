//! Planning: what one rule makes true for one asset, as a list of changes.
//!
//! Pure and synchronous: it reads and updates a [`World`] and never touches the
//! database, so a dry run, a real run and the apply of a stored plan all plan the
//! same way. Every expression of a rule sees the asset as it was when the rule started
//! on it; later rules (higher priority numbers) see the changes of earlier ones.

use super::world::{OpenFinding, World};
use crate::rules::definition::{CompiledAction, CompiledEnd, CompiledRule, Severity};
use crate::rules::expression::{AssetContext, EvaluationError};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use synapse_shared::domain::{AssetState, CableState, RelationshipState};
use uuid::Uuid;

/// One change a rule makes true.
#[derive(Debug, Clone, PartialEq)]
pub enum PlannedChange {
    /// `before` is `None` for a creation.
    Asset {
        before: Option<AssetState>,
        after: AssetState,
    },
    Cable {
        before: Option<CableState>,
        after: CableState,
    },
    Relationship(RelationshipState),
    FindingRaised {
        asset_id: Uuid,
        severity: Severity,
        message: String,
    },
    /// A finding the rule raised earlier that it no longer flags.
    FindingResolved {
        asset_id: Uuid,
        finding: OpenFinding,
    },
}

/// What a rule did for one asset.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The condition is false.
    NotMatched,
    /// The condition holds and everything is already as the rule wants.
    Skipped {
        reason: String,
    },
    Executed {
        changes: Vec<PlannedChange>,
    },
    /// The condition is false and the findings the rule raised on the asset before
    /// no longer hold: `changes` resolves them.
    Cleared {
        changes: Vec<PlannedChange>,
    },
    /// Planning failed: the condition could not be evaluated (`matched` false), or
    /// an action could not (`matched` true).
    Error {
        message: String,
        matched: bool,
    },
}

/// Ids for created things: fresh, or those a stored plan promised. A dry run records
/// every id it hands out (for the plan) and hands the record over chunk by chunk
/// ([`Ids::take_created`]); a real run records nothing, so neither grows with the batch.
#[derive(Debug, Default, Clone)]
pub struct Ids {
    /// What a stored plan promised for the assets being planned (one chunk's), by key.
    preset: BTreeMap<String, Uuid>,
    recording: bool,
    /// Applying a stored plan: what is created without a promise is recorded (the plan
    /// did not show it).
    applying: bool,
    /// Everything created since the record was last taken, in order (when recording;
    /// when applying, what the plan did not promise).
    created: Vec<Creation>,
    /// Applying a stored plan: the keys of what it promised that the rule being
    /// applied must create for the assets being planned.
    owed: BTreeSet<String>,
    /// Applying a stored plan: the keys of promises kept since the last
    /// [`Ids::take_departures`].
    kept: Vec<String>,
}

/// How far an [`Ids`] record goes ([`Ids::mark`]).
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    created: usize,
    kept: usize,
}

/// An id handed out for something a plan creates.
#[derive(Debug, Clone, PartialEq)]
pub struct Creation {
    /// `asset:TAG`, `cable:TAG` or `relationship:KIND:FROM:TO`.
    pub key: String,
    pub id: Uuid,
    /// The asset whose planning created it.
    pub planned_for: Uuid,
}

impl Ids {
    /// Fresh ids, recorded for a plan.
    pub fn recording() -> Self {
        Self {
            recording: true,
            ..Self::default()
        }
    }

    /// The ids a stored plan promised, by key, and the keys of those the rule being
    /// applied owes the assets being planned.
    pub fn from_plan(preset: BTreeMap<String, Uuid>, owed: BTreeSet<String>) -> Self {
        Self {
            preset,
            owed,
            applying: true,
            ..Self::default()
        }
    }

    /// Whether the stored plan being applied promised an id for `key` (`asset:TAG`,
    /// `cable:TAG`, ...): it created that, so it found it absent.
    pub fn promises(&self, key: &str) -> bool {
        self.preset.contains_key(key)
    }

    /// Applying a stored plan: where planning departed from what the plan creates, as
    /// keys: what planning created that the plan did not promise (say, a relationship
    /// deleted since the plan found it), then what the plan promised that planning did
    /// not create (a relationship created since). Each promise is owed once: a call
    /// settles what came before it.
    pub fn take_departures(&mut self) -> Vec<String> {
        let kept: BTreeSet<String> = std::mem::take(&mut self.kept).into_iter().collect();
        let mut departures: Vec<String> = std::mem::take(&mut self.created)
            .into_iter()
            .map(|creation| creation.key)
            .collect();
        departures.extend(
            std::mem::take(&mut self.owed)
                .into_iter()
                .filter(|key| !kept.contains(key)),
        );
        departures
    }

    /// What was created since the last call (when recording).
    pub fn take_created(&mut self) -> Vec<Creation> {
        std::mem::take(&mut self.created)
    }

    /// How far the record goes, to undo a planning pass with [`Ids::rewind`].
    pub fn mark(&self) -> Mark {
        Mark {
            created: self.created.len(),
            kept: self.kept.len(),
        }
    }

    pub fn rewind(&mut self, mark: Mark) {
        self.created.truncate(mark.created);
        self.kept.truncate(mark.kept);
    }

    fn id_for(&mut self, planned_for: &AssetState, key: String) -> Uuid {
        let promised = self.preset.get(&key).copied();
        let id = promised.unwrap_or_else(Uuid::now_v7);
        if self.applying && promised.is_some() {
            self.kept.push(key.clone());
        }
        if self.recording || (self.applying && promised.is_none()) {
            self.created.push(Creation {
                key,
                id,
                planned_for: planned_for.id,
            });
        }
        id
    }
}

/// In one run of a rule, which asset holds each asset or cable the rule upserts by a
/// tag other than the asset's own (`asset:TAG`, `cable:TAG`), and how it wants it.
/// When the tag template gives several assets one tag (`JB-{asset.area}`), the first
/// of them in id order holds it; a later one that wants it otherwise is a
/// `RULE_ERROR`, since the two would undo each other on every run. Shared by the
/// chunks of the run, whatever order they are planned in (ahead, again under locks):
/// an asset takes over a hold of one after it in id order, so the holder is the same.
///
/// The claims of the rules that ran before in the same execution stay readable
/// ([`Claims::after`]): a later rule that changes such a target otherwise than its
/// holder wants it gets a `RULE_ERROR` too (`contested`), which the tag alone could not
/// trace back (`JB-{asset.area}` names no single asset).
#[derive(Debug, Clone, Default)]
pub struct Claims {
    held: Arc<Mutex<HashMap<String, Claim>>>,
    /// By rule id, the claims of the rules that ran before this one.
    earlier: Arc<HashMap<Uuid, Claims>>,
}

#[derive(Debug)]
struct Claim {
    holder: Uuid,
    holder_tag: String,
    /// A hash of the state the holder wants (its version left out).
    wanted: u64,
}

/// What one asset's plan wants of a target it upserts: its key, and the state.
struct Wanted {
    key: String,
    state: Value,
}

impl Wanted {
    fn hash(&self) -> u64 {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.state.to_string().hash(&mut hasher);
        hasher.finish()
    }
}

impl Claims {
    /// The claims of a rule that runs after those whose claims `earlier` holds (by
    /// rule id).
    pub fn after(earlier: Arc<HashMap<Uuid, Claims>>) -> Self {
        Self {
            held: Arc::default(),
            earlier,
        }
    }

    /// The claims of this rule's run and of those before it, for the next rule of
    /// the execution.
    pub fn with_earlier(&self, rule: Uuid) -> Arc<HashMap<Uuid, Claims>> {
        let mut all = HashMap::clone(&self.earlier);
        all.insert(
            rule,
            Self {
                held: self.held.clone(),
                earlier: Arc::default(),
            },
        );
        Arc::new(all)
    }

    /// The tag of the asset that holds the target `key` (`asset:TAG`, `cable:TAG`) in
    /// the run of the earlier rule `rule`.
    fn holder_in(&self, rule: Uuid, key: &str) -> Option<String> {
        let claims = self.earlier.get(&rule)?;
        let held = claims
            .held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        held.get(key).map(|claim| claim.holder_tag.clone())
    }

    /// Where a target `asset` upserts is held by an earlier asset that wants it
    /// otherwise: the error's message. Otherwise the targets are `asset`'s to hold.
    fn settle(
        &self,
        asset: &AssetState,
        wanted: &[Wanted],
        changes: &[PlannedChange],
    ) -> Option<String> {
        if wanted.is_empty() {
            return None;
        }
        let mut claims = self
            .held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for target in wanted {
            let Some(claim) = claims.get(&target.key) else {
                continue;
            };
            if claim.holder < asset.id && claim.wanted != target.hash() {
                // What the holder left it as: this plan's change starts from it.
                let held = changes.iter().find_map(|change| match change {
                    PlannedChange::Asset { before, after }
                        if target.key == format!("asset:{}", after.tag) =>
                    {
                        before.as_ref().map(json)
                    }
                    PlannedChange::Cable { before, after }
                        if target.key == format!("cable:{}", after.tag) =>
                    {
                        before.as_ref().map(json)
                    }
                    _ => None,
                });
                let show = |value: Option<Value>| {
                    value.map_or_else(|| "absent".to_owned(), |value| value.to_string())
                };
                let aspect = held
                    .and_then(|held| disputed(&held, &target.state, &held))
                    .map(|(aspect, ours, theirs)| {
                        format!(
                            " ({aspect} {} for `{}`, {} for `{}`)",
                            show(theirs),
                            claim.holder_tag,
                            show(ours),
                            asset.tag
                        )
                    })
                    .unwrap_or_default();
                let (kind, tag) = target.key.split_once(':').unwrap_or(("", &target.key));
                return Some(format!(
                    "this rule upserts {kind} `{tag}` for asset `{}` too, and wants it \
                     otherwise there{aspect}: the two would undo each other on every run; \
                     give each asset a tag of its own (e.g. with {{asset.tag}}) or make \
                     the values agree",
                    claim.holder_tag
                ));
            }
        }
        for target in wanted {
            let hold = claims
                .get(&target.key)
                .is_none_or(|claim| claim.holder >= asset.id);
            if hold {
                claims.insert(
                    target.key.clone(),
                    Claim {
                        holder: asset.id,
                        holder_tag: asset.tag.clone(),
                        wanted: target.hash(),
                    },
                );
            }
        }
        None
    }
}

/// Plan `rule` for the asset `asset_id` and record its changes in `world`.
pub fn plan(
    rule: &CompiledRule,
    asset_id: Uuid,
    world: &mut World,
    ids: &mut Ids,
    claims: &Claims,
) -> Outcome {
    let Some(asset) = world.asset(asset_id) else {
        return Outcome::Error {
            message: format!("asset {asset_id} no longer exists"),
            matched: false,
        };
    };
    let context = AssetContext::new(&asset);
    match rule.condition.is_true(&context) {
        Ok(true) => {}
        Ok(false) => return clear_findings(rule, &asset, world),
        Err(error) => {
            return Outcome::Error {
                message: format!("when: {error}"),
                matched: false,
            }
        }
    }
    let mark = ids.mark();
    let mut wanted = Vec::new();
    match desired_changes(rule, &asset, &context, world, ids, &mut wanted) {
        Ok(changes) => {
            let disputed = match changes.is_empty() {
                true => None,
                false => contested(rule, &asset, &changes, world, claims),
            };
            if let Some(message) = disputed.or_else(|| claims.settle(&asset, &wanted, &changes)) {
                // Nothing of it happens: what it would have created is not recorded.
                ids.rewind(mark);
                return Outcome::Error {
                    message,
                    matched: true,
                };
            }
            if changes.is_empty() {
                return Outcome::Skipped {
                    reason: "already in desired state".to_owned(),
                };
            }
            for change in &changes {
                record(world, rule, change);
            }
            Outcome::Executed { changes }
        }
        Err(error) => Outcome::Error {
            message: error.0,
            matched: true,
        },
    }
}

/// Where a rule that ran before `rule` in this execution wants otherwise a field or
/// property that `changes` would change: the earlier rule, judged on the asset as
/// `rule` would leave it, would change it back on the next run, and the two would
/// undo each other for ever. Compared: what the earlier rule wants of the asset itself
/// (`set_property`, `remove_property`, `upsert_asset` of its own tag), of the assets
/// and cables both rules upsert by the same tag, and of the assets and cables
/// `changes` touch that the earlier rule wants for another asset (traced back from
/// the tag, or found in the earlier rule's [`Claims`]) or, where its condition holds
/// on existing ones, for themselves. Also `rule` itself, on the existing assets it
/// upserts here: where its condition holds on one of them, its own run there would
/// undo this upsert. An asset the plan creates is not judged so: a later rule may yet
/// take it out of the condition, and the check would keep it from ever being made.
fn contested(
    rule: &CompiledRule,
    asset: &AssetState,
    changes: &[PlannedChange],
    world: &mut World,
    claims: &Claims,
) -> Option<String> {
    // Existing assets it upserts besides this one, which the rule itself is checked on.
    let upserts_others = changes.iter().any(|change| match change {
        PlannedChange::Asset {
            before: Some(_),
            after,
        } => after.id != asset.id,
        _ => false,
    });
    if rule.earlier.is_empty() && !upserts_others {
        return None;
    }
    let planned = changes
        .iter()
        .find_map(|change| match change {
            PlannedChange::Asset { after, .. } if after.id == asset.id => Some(after),
            _ => None,
        })
        .unwrap_or(asset);
    let left = AssetContext::new(planned);
    for earlier in rule.earlier.iter() {
        let mut disputes = Vec::new();
        let held = claims.holder_in(earlier.id, &format!("asset:{}", asset.tag));
        if let Some(wanted) = made_for_another(earlier, asset, planned, world, held, asset.id) {
            disputes.push((String::new(), json(asset), json(planned), json(&wanted)));
        }
        if earlier.condition.is_true(&left).unwrap_or(false) {
            disputes.extend(wanted_by(earlier, asset, planned, &left, changes, world));
        }
        disputes.extend(targets_wanted_by(earlier, asset, changes, world, claims));
        let who = format!(
            "rule `{}` (version {}), run before this one,",
            earlier.name, earlier.version
        );
        if let Some(message) = dispute_message(&who, disputes) {
            return Some(message);
        }
    }
    for change in changes {
        // An asset this plan creates is left out, as above: a later rule may take it
        // out of this rule's condition (a standby pump marked as one).
        let PlannedChange::Asset {
            before: Some(before),
            after,
        } = change
        else {
            continue;
        };
        if after.id == asset.id {
            continue;
        }
        let there = AssetContext::new(after);
        if !rule.condition.is_true(&there).unwrap_or(false) {
            continue;
        }
        let Ok(wanted) = own_desired(rule, after, &there) else {
            continue;
        };
        let dispute = (String::new(), json(before), json(after), json(&wanted));
        let who = format!("this rule, run on asset `{}` itself,", after.tag);
        if let Some(message) = dispute_message(&who, vec![dispute]) {
            return Some(message);
        }
    }
    None
}

/// The error for the first of `disputes` (what, before, ours, theirs) where `who`
/// wants otherwise what this plan changes.
fn dispute_message(who: &str, disputes: Vec<(String, Value, Value, Value)>) -> Option<String> {
    for (what, before, ours, theirs) in disputes {
        let Some((aspect, ours, theirs)) = disputed(&before, &ours, &theirs) else {
            continue;
        };
        let show = |value: &Option<Value>| {
            value
                .as_ref()
                .map_or_else(|| "removed".to_owned(), |value| format!("= {value}"))
        };
        // `400` and `400.0` compare equal in CEL but are stored apart.
        let number = |value: &Option<Value>| value.as_ref().and_then(Value::as_f64);
        let kinds = match (number(&theirs), number(&ours)) {
            (Some(a), Some(b)) if a == b => {
                " (an integer and a double of one value are stored apart: write both \
                 as integers or both as doubles)"
            }
            _ => "",
        };
        return Some(format!(
            "{who} wants {what}{aspect} {} where this rule wants it {}: each would undo \
             the other on every run; make their conditions exclude each other or their \
             values agree{kinds}",
            show(&theirs),
            show(&ours),
        ));
    }
    None
}

/// What `earlier` wants otherwise of the other assets and the cables that `changes`
/// touch (for `asset`): an asset it upserts for another asset or, where its condition
/// holds on it, sets on itself; a cable it upserts for another asset (the tag traced
/// back, or the holder its claims name). Each as (what, before, ours, theirs).
fn targets_wanted_by(
    earlier: &CompiledRule,
    asset: &AssetState,
    changes: &[PlannedChange],
    world: &mut World,
    claims: &Claims,
) -> Vec<(String, Value, Value, Value)> {
    let mut disputes = Vec::new();
    for change in changes {
        match change {
            PlannedChange::Asset { before, after } if after.id != asset.id => {
                let what = format!("asset `{}`'s ", after.tag);
                let existed = before.is_some();
                let before = before.as_ref().map_or(Value::Null, json);
                let held = claims.holder_in(earlier.id, &format!("asset:{}", after.tag));
                if let Some(wanted) = made_for_another(earlier, after, after, world, held, asset.id)
                {
                    disputes.push((what.clone(), before.clone(), json(after), json(&wanted)));
                }
                // Only an asset that exists: one this plan creates may yet be taken out
                // of the earlier rule's condition by a rule after this one (a helper,
                // area F: junction boxes an earlier rule sets IP55 on until a later
                // one certifies them were never created).
                let there = AssetContext::new(after);
                if existed && earlier.condition.is_true(&there).unwrap_or(false) {
                    if let Ok(wanted) = own_desired(earlier, after, &there) {
                        disputes.push((what, before, json(after), json(&wanted)));
                    }
                }
            }
            PlannedChange::Cable { before, after } => {
                let held = claims.holder_in(earlier.id, &format!("cable:{}", after.tag));
                let candidates: Vec<String> = earlier
                    .actions
                    .iter()
                    .filter_map(|action| match action {
                        CompiledAction::UpsertCable { tag, .. } => {
                            Some(tag.source_candidates(&after.tag))
                        }
                        _ => None,
                    })
                    .flatten()
                    .chain(held)
                    .collect();
                for candidate in candidates {
                    let Some(source) = world.asset_by_tag(&candidate) else {
                        continue;
                    };
                    // For the asset itself, `wanted_by` compares.
                    if source.id == asset.id {
                        continue;
                    }
                    let context = AssetContext::new(&source);
                    if !earlier.condition.is_true(&context).unwrap_or(false) {
                        continue;
                    }
                    let wanted = upserted_cable(earlier, after, &source, &context, world, changes);
                    if let Ok(Some(wanted)) = wanted {
                        let before = before.as_ref().map_or(Value::Null, json);
                        let what = format!("cable `{}`'s ", after.tag);
                        disputes.push((what, before, json(after), json(&wanted)));
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    disputes
}

/// What `earlier`, whose condition holds on the asset as `planned`, wants otherwise of
/// what `changes` change: the asset itself (`set_property`, `remove_property`,
/// `upsert_asset` of its own tag), and the assets and cables both rules upsert by the
/// same tag. Each as (what, before, ours, theirs).
fn wanted_by(
    earlier: &CompiledRule,
    asset: &AssetState,
    planned: &AssetState,
    left: &AssetContext,
    changes: &[PlannedChange],
    world: &mut World,
) -> Vec<(String, Value, Value, Value)> {
    let mut disputes = Vec::new();
    // Where it cannot say what it wants, there is nothing to contest.
    if let Ok(wanted) = own_desired(earlier, planned, left) {
        disputes.push((String::new(), json(asset), json(planned), json(&wanted)));
    }
    for change in changes {
        match change {
            PlannedChange::Asset { before, after } if after.id != asset.id => {
                if let Ok(Some(wanted)) = upserted_asset(earlier, after, left) {
                    let before = before.as_ref().map_or(Value::Null, json);
                    let what = format!("asset `{}`'s ", after.tag);
                    disputes.push((what, before, json(after), json(&wanted)));
                }
            }
            PlannedChange::Cable { before, after } => {
                let wanted = upserted_cable(earlier, after, asset, left, world, changes);
                if let Ok(Some(wanted)) = wanted {
                    let before = before.as_ref().map_or(Value::Null, json);
                    let what = format!("cable `{}`'s ", after.tag);
                    disputes.push((what, before, json(after), json(&wanted)));
                }
            }
            _ => {}
        }
    }
    disputes
}

/// What `rule` wants of `asset` where it upserts it for another asset, found from the
/// tag (`VFD-{asset.tag}` makes `VFD-M-101` for `M-101`, see
/// [`Template::source_candidates`](crate::rules::template::Template::source_candidates);
/// each candidate is checked by rendering the tag for it): a later rule over the VFD
/// that sets what the earlier one sets on it would undo it on every run, and the
/// earlier one would set it back.
///
/// `held`: the asset that holds `asset` in `rule`'s claims, where the tag names no
/// single asset (`JB-{asset.area}`). `planning`: the asset whose plan asks, whose
/// own wishes are compared on the asset as the plan leaves it (`wanted_by`), not here.
fn made_for_another(
    rule: &CompiledRule,
    asset: &AssetState,
    planned: &AssetState,
    world: &mut World,
    held: Option<String>,
    planning: Uuid,
) -> Option<AssetState> {
    for action in &rule.actions {
        // An asset of another type than the upsert gives is not one it made (the
        // earlier rule ran first in this execution): no lookups of candidates for it.
        let CompiledAction::UpsertAsset {
            tag, asset_type, ..
        } = action
        else {
            continue;
        };
        if *asset_type != asset.asset_type {
            continue;
        }
        let candidates = tag.source_candidates(&asset.tag);
        for candidate in candidates.into_iter().chain(held.clone()) {
            let Some(source) = world.asset_by_tag(&candidate) else {
                continue;
            };
            let context = AssetContext::new(&source);
            let makes_it = tag.render(&context).is_ok_and(|made| made == asset.tag);
            if source.id == asset.id
                || source.id == planning
                || !makes_it
                || !rule.condition.is_true(&context).unwrap_or(false)
            {
                continue;
            }
            if let Ok(Some(wanted)) = upserted_asset(rule, planned, &context) {
                return Some(wanted);
            }
        }
    }
    None
}

fn json<T: serde::Serialize>(state: &T) -> Value {
    serde_json::to_value(state).unwrap_or(Value::Null)
}

/// The first field or property of a state that `ours` changes from `before` and
/// `theirs` wants otherwise: its name (`discipline`, `property \`x\``) and the two
/// values (`None`: absent).
fn disputed(
    before: &Value,
    ours: &Value,
    theirs: &Value,
) -> Option<(String, Option<Value>, Option<Value>)> {
    let flat = |state: &Value| -> BTreeMap<String, Value> {
        let mut flat = BTreeMap::new();
        for (key, value) in state.as_object().into_iter().flatten() {
            match key.as_str() {
                "version" | "id" => {}
                "properties" => {
                    for (name, value) in value.as_object().into_iter().flatten() {
                        flat.insert(format!("property `{name}`"), value.clone());
                    }
                }
                _ => {
                    flat.insert(format!("`{key}`"), value.clone());
                }
            }
        }
        flat
    };
    let (before, ours, theirs) = (flat(before), flat(ours), flat(theirs));
    let mut aspects: BTreeSet<&String> = ours.keys().collect();
    aspects.extend(before.keys());
    let found = aspects.into_iter().find_map(|aspect| {
        let mine = ours.get(aspect);
        (mine != before.get(aspect) && mine != theirs.get(aspect))
            .then(|| (aspect.clone(), mine.cloned(), theirs.get(aspect).cloned()))
    });
    found
}

/// What `rule` wants of `other` (an asset the later rule upserts) where it upserts
/// the same tag; `None` where it does not.
fn upserted_asset(
    rule: &CompiledRule,
    other: &AssetState,
    context: &AssetContext,
) -> Result<Option<AssetState>, EvaluationError> {
    let mut wanted = None;
    for action in &rule.actions {
        if let CompiledAction::UpsertAsset { tag, .. } = action {
            if tag.render(context)? == other.tag {
                let state = wanted.get_or_insert_with(|| other.clone());
                upsert_fields(action, state, context)?;
            }
        }
    }
    Ok(wanted)
}

/// What `rule` wants of `cable` (which the later rule upserts, planning `asset`)
/// where it upserts the same tag; `None` where it does not.
fn upserted_cable(
    rule: &CompiledRule,
    cable: &CableState,
    asset: &AssetState,
    context: &AssetContext,
    world: &mut World,
    planned: &[PlannedChange],
) -> Result<Option<CableState>, EvaluationError> {
    let mut wanted = None;
    for action in &rule.actions {
        if let CompiledAction::UpsertCable { tag, from, to, .. } = action {
            if tag.render(context)? == cable.tag {
                let ends = ends(from, to, asset, context, world, planned)?;
                let state = wanted.get_or_insert_with(|| cable.clone());
                cable_fields(action, state, ends, context)?;
            }
        }
    }
    Ok(wanted)
}

/// What `rule` wants of `asset` itself (its properties set or removed, its own tag
/// upserted), with its expressions evaluated in `context`, as the planner applies it.
fn own_desired(
    rule: &CompiledRule,
    asset: &AssetState,
    context: &AssetContext,
) -> Result<AssetState, EvaluationError> {
    let mut wanted = asset.clone();
    for action in &rule.actions {
        if set_or_remove(action, &mut wanted, context)? {
            continue;
        }
        if let CompiledAction::UpsertAsset { tag, .. } = action {
            if tag.render(context)? == asset.tag {
                upsert_fields(action, &mut wanted, context)?;
            }
        }
    }
    Ok(wanted)
}

/// What an `upsert_cable` action sets on the cable it makes or finds, between `ends`
/// (nothing for another action).
fn cable_fields(
    action: &CompiledAction,
    desired: &mut CableState,
    (from_asset, to_asset): (Uuid, Uuid),
    context: &AssetContext,
) -> Result<(), EvaluationError> {
    let CompiledAction::UpsertCable {
        cable_type,
        discipline,
        properties,
        ..
    } = action
    else {
        return Ok(());
    };
    desired.from_asset = from_asset;
    desired.to_asset = to_asset;
    desired.cable_type = cable_type.clone();
    if let Some(discipline) = discipline {
        desired.discipline = discipline.clone();
    }
    for (property, expression) in properties {
        let value = scalar(expression.evaluate_property(context)?, property)?;
        desired.properties.insert(property.clone(), value);
    }
    Ok(())
}

/// Apply `action` to `target` if it is a `set_property` or `remove_property`; whether
/// it was one.
fn set_or_remove(
    action: &CompiledAction,
    target: &mut AssetState,
    context: &AssetContext,
) -> Result<bool, EvaluationError> {
    match action {
        CompiledAction::SetProperty { name, value } => {
            let value = scalar(value.evaluate_property(context)?, name)?;
            target.properties.insert(name.clone(), value);
            Ok(true)
        }
        CompiledAction::RemoveProperty { name } => {
            target.properties.remove(name);
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// What an `upsert_asset` action sets on the asset it makes or finds (nothing for
/// another action).
fn upsert_fields(
    action: &CompiledAction,
    desired: &mut AssetState,
    context: &AssetContext,
) -> Result<(), EvaluationError> {
    let CompiledAction::UpsertAsset {
        asset_type,
        discipline,
        name,
        area,
        properties,
        ..
    } = action
    else {
        return Ok(());
    };
    desired.asset_type = asset_type.clone();
    desired.discipline = discipline.clone();
    if let Some(name) = name {
        desired.name = Some(name.render(context)?);
    }
    if let Some(area) = area {
        desired.area = Some(area.render(context)?);
    }
    for (property, expression) in properties {
        let value = scalar(expression.evaluate_property(context)?, property)?;
        desired.properties.insert(property.clone(), value);
    }
    Ok(())
}

fn record(world: &mut World, rule: &CompiledRule, change: &PlannedChange) {
    match change {
        PlannedChange::Asset { after, .. } => world.put_asset(after.clone()),
        PlannedChange::Cable { after, .. } => world.put_cable(after.clone()),
        PlannedChange::Relationship(relationship) => world.put_relationship(relationship.clone()),
        PlannedChange::FindingRaised { .. } => {}
        PlannedChange::FindingResolved { asset_id, finding } => {
            world.resolve_finding((*asset_id, rule.id), &finding.message);
        }
    }
}

/// The condition is false: whatever the rule flagged on the asset before no longer
/// holds. Only rules that own findings look them up.
fn clear_findings(rule: &CompiledRule, asset: &AssetState, world: &mut World) -> Outcome {
    if !rule.owns_findings {
        return Outcome::NotMatched;
    }
    let changes = resolutions(rule, asset, world, &[]);
    if changes.is_empty() {
        return Outcome::NotMatched;
    }
    for change in &changes {
        record(world, rule, change);
    }
    Outcome::Cleared { changes }
}

/// The rule's open findings on `asset` that are not among `flagged` (message and
/// severity): no longer found, or found with another severity now (a new version of
/// the rule), which is resolved and raised again with it.
fn resolutions(
    rule: &CompiledRule,
    asset: &AssetState,
    world: &mut World,
    flagged: &[(String, Severity)],
) -> Vec<PlannedChange> {
    world
        .open_findings((asset.id, rule.id))
        .iter()
        .filter(|finding| {
            !flagged.iter().any(|(message, severity)| {
                *message == finding.message && severity.as_str() == finding.severity
            })
        })
        .map(|finding| PlannedChange::FindingResolved {
            asset_id: asset.id,
            finding: finding.clone(),
        })
        .collect()
}

/// What `rule` makes true for `asset`; `wanted` gets the state it wants of each asset
/// (other than `asset`) and cable it upserts, changed or not.
fn desired_changes(
    rule: &CompiledRule,
    asset: &AssetState,
    context: &AssetContext,
    world: &mut World,
    ids: &mut Ids,
    wanted: &mut Vec<Wanted>,
) -> Result<Vec<PlannedChange>, EvaluationError> {
    let mut at = None;
    actions_changes(rule, asset, context, world, ids, wanted, &mut at).map_err(|error| {
        match at.and_then(|index| Some((index, rule.actions.get(index)?))) {
            Some((index, action)) => {
                EvaluationError(format!("then[{index}] ({}): {}", describe(action), error.0))
            }
            None => error,
        }
    })
}

/// An action as an error names it: its type, and the property it sets or removes.
fn describe(action: &CompiledAction) -> String {
    match action {
        CompiledAction::SetProperty { name, .. } => format!("set_property `{name}`"),
        CompiledAction::RemoveProperty { name } => format!("remove_property `{name}`"),
        CompiledAction::UpsertAsset { .. } => "upsert_asset".to_owned(),
        CompiledAction::UpsertCable { .. } => "upsert_cable".to_owned(),
        CompiledAction::CreateRelationship { .. } => "create_relationship".to_owned(),
        CompiledAction::Flag { .. } => "flag".to_owned(),
    }
}

/// [`desired_changes`]; `at` is the index of the action being planned, if one is.
fn actions_changes(
    rule: &CompiledRule,
    asset: &AssetState,
    context: &AssetContext,
    world: &mut World,
    ids: &mut Ids,
    wanted: &mut Vec<Wanted>,
    at: &mut Option<usize>,
) -> Result<Vec<PlannedChange>, EvaluationError> {
    let mut target = asset.clone();
    let mut others = Vec::new();
    // Each message once, with the severity of the first action that flags it; raised
    // after the resolutions, which may close the same message at another severity.
    let mut flagged: Vec<(String, Severity)> = Vec::new();
    let mut raises = Vec::new();
    for (index, action) in rule.actions.iter().enumerate() {
        *at = Some(index);
        if set_or_remove(action, &mut target, context)? {
            continue;
        }
        match action {
            CompiledAction::UpsertAsset {
                tag,
                asset_type,
                discipline,
                ..
            } => {
                let tag = valid_tag(tag.render(context)?)?;
                // An earlier action of the rule that made the same tag: build on it.
                let earlier = others.iter().position(
                    |change| matches!(change, PlannedChange::Asset { after, .. } if after.tag == tag),
                );
                let (existing, base) = match earlier.map(|index| &others[index]) {
                    Some(PlannedChange::Asset { before, after }) => {
                        (before.clone(), Some(after.clone()))
                    }
                    _ if tag == asset.tag => (Some(target.clone()), Some(target.clone())),
                    _ => {
                        let existing = world.asset_by_tag(&tag);
                        // Another asset's tag: the upsert finds it only if it is of
                        // the type the rule makes (before, a pump took the tag of a
                        // VFD-to-be and silently became a VFD).
                        if let Some(other) = existing
                            .as_ref()
                            .filter(|other| other.asset_type != *asset_type)
                        {
                            return Err(EvaluationError(format!(
                                "asset `{tag}` exists and is a `{}`, not the `{asset_type}` \
                                 this action makes: it is left as it is; give the new \
                                 asset a tag of its own",
                                other.asset_type
                            )));
                        }
                        (existing.clone(), existing)
                    }
                };
                let mut desired = base.unwrap_or_else(|| AssetState {
                    id: ids.id_for(asset, format!("asset:{tag}")),
                    tag: tag.clone(),
                    asset_type: asset_type.clone(),
                    discipline: discipline.clone(),
                    name: None,
                    area: None,
                    properties: Map::new(),
                    version: 0,
                });
                upsert_fields(action, &mut desired, context)?;
                if desired.id == asset.id {
                    target = desired;
                } else {
                    desired.version = 0;
                    if may_share(rule, action) {
                        wants(wanted, format!("asset:{tag}"), json(&desired));
                    }
                    desired.version = existing.as_ref().map_or(0, |existing| existing.version);
                    let change = (existing.as_ref() != Some(&desired)).then(|| {
                        desired.version += 1;
                        PlannedChange::Asset {
                            before: existing,
                            after: desired,
                        }
                    });
                    replace_or_push(&mut others, earlier, change);
                }
            }
            CompiledAction::UpsertCable {
                tag,
                cable_type,
                discipline,
                from,
                to,
                ..
            } => {
                let tag = valid_tag(tag.render(context)?)?;
                let (from_asset, to_asset) = ends(from, to, asset, context, world, &others)?;
                // An earlier action of the rule that made the same tag: build on it.
                let earlier = others.iter().position(
                    |change| matches!(change, PlannedChange::Cable { after, .. } if after.tag == tag),
                );
                let (existing, base) = match earlier.map(|index| &others[index]) {
                    Some(PlannedChange::Cable { before, after }) => {
                        (before.clone(), Some(after.clone()))
                    }
                    _ => {
                        let existing = world.cable_by_tag(&tag);
                        (existing.clone(), existing)
                    }
                };
                let mut desired = base.unwrap_or_else(|| CableState {
                    id: ids.id_for(asset, format!("cable:{tag}")),
                    tag: tag.clone(),
                    from_asset,
                    to_asset,
                    cable_type: cable_type.clone(),
                    discipline: discipline
                        .clone()
                        .unwrap_or_else(|| asset.discipline.clone()),
                    properties: Map::new(),
                    version: 0,
                });
                cable_fields(action, &mut desired, (from_asset, to_asset), context)?;
                desired.version = 0;
                if may_share(rule, action) {
                    wants(wanted, format!("cable:{tag}"), json(&desired));
                }
                desired.version = existing.as_ref().map_or(0, |existing| existing.version);
                let change = (existing.as_ref() != Some(&desired)).then(|| {
                    desired.version += 1;
                    PlannedChange::Cable {
                        before: existing,
                        after: desired,
                    }
                });
                replace_or_push(&mut others, earlier, change);
            }
            CompiledAction::CreateRelationship { kind, from, to } => {
                let (from_asset, to_asset) = ends(from, to, asset, context, world, &others)?;
                let key = (kind.clone(), from_asset, to_asset);
                let planned = others.iter().any(|change| {
                    matches!(change, PlannedChange::Relationship(r) if (r.kind.clone(), r.from_asset, r.to_asset) == key)
                });
                if !planned && world.relationship(&key).is_none() {
                    others.push(PlannedChange::Relationship(RelationshipState {
                        id: ids.id_for(
                            asset,
                            format!("relationship:{kind}:{from_asset}:{to_asset}"),
                        ),
                        kind: kind.clone(),
                        from_asset,
                        to_asset,
                        properties: Map::new(),
                        version: 1,
                    }));
                }
            }
            CompiledAction::Flag { severity, message } => {
                let message = finding_message(message.render(context)?)?;
                if flagged.iter().any(|(flagged, _)| *flagged == message) {
                    continue;
                }
                let open = world.open_findings((asset.id, rule.id));
                let raised = open.iter().any(|finding| {
                    finding.message == message && finding.severity == severity.as_str()
                });
                if !raised {
                    raises.push(PlannedChange::FindingRaised {
                        asset_id: asset.id,
                        severity: *severity,
                        message: message.clone(),
                    });
                }
                flagged.push((message, *severity));
            }
            // Applied above.
            CompiledAction::SetProperty { .. } | CompiledAction::RemoveProperty { .. } => {}
        }
    }
    *at = None;
    if rule.owns_findings {
        others.extend(resolutions(rule, asset, world, &flagged));
    }
    others.extend(raises);
    let mut changes = Vec::with_capacity(others.len() + 1);
    if target != *asset {
        target.version = asset.version + 1;
        changes.push(PlannedChange::Asset {
            before: Some(asset.clone()),
            after: target,
        });
    }
    changes.extend(others);
    for change in &changes {
        held_to_limits(change)?;
    }
    Ok(changes)
}

/// Whether two assets may upsert one target with `action` ([`Claims`]): not when it is
/// the rule's only upsert of an asset (or of a cable) and its tag template is the
/// asset's own tag between fixed texts (`W-{asset.tag}-PWR`), as in most rules; so
/// their runs hold nothing, and an execution's memory stays flat in its size.
fn may_share(rule: &CompiledRule, action: &CompiledAction) -> bool {
    let cable = matches!(action, CompiledAction::UpsertCable { .. });
    let (CompiledAction::UpsertAsset { tag, .. } | CompiledAction::UpsertCable { tag, .. }) =
        action
    else {
        return false;
    };
    let upserts = rule
        .actions
        .iter()
        .filter(|other| match other {
            CompiledAction::UpsertCable { .. } => cable,
            CompiledAction::UpsertAsset { .. } => !cable,
            _ => false,
        })
        .count();
    upserts > 1 || !tag.is_own_tag()
}

/// Record that the plan wants `state` of the target `key`; a later action of the rule
/// on the same target builds on the earlier one, so its state replaces it.
fn wants(wanted: &mut Vec<Wanted>, key: String, state: Value) {
    match wanted.iter_mut().find(|target| target.key == key) {
        Some(target) => target.state = state,
        None => wanted.push(Wanted { key, state }),
    }
}

/// An error for a change that writes what `POST /assets` or `PATCH /assets/{id}` (and a
/// CSV import) would refuse: a name or area over 256 bytes, a string property over
/// 4,096, more than 200 properties.
fn held_to_limits(change: &PlannedChange) -> Result<(), EvaluationError> {
    let mut errors = Vec::new();
    let (kind, tag) = match change {
        PlannedChange::Asset { before, after } => {
            let changed = |field: fn(&AssetState) -> Option<&str>| {
                let now = field(after);
                (before.as_ref().and_then(field) != now)
                    .then_some(now)
                    .flatten()
            };
            crate::assets::input::check_written(
                changed(|asset| asset.name.as_deref()),
                changed(|asset| asset.area.as_deref()),
                before.as_ref().map(|before| &before.properties),
                &after.properties,
                &mut errors,
            );
            ("asset", &after.tag)
        }
        PlannedChange::Cable { before, after } => {
            crate::assets::input::check_written(
                None,
                None,
                before.as_ref().map(|before| &before.properties),
                &after.properties,
                &mut errors,
            );
            ("cable", &after.tag)
        }
        _ => return Ok(()),
    };
    match errors.first() {
        None => Ok(()),
        Some(error) => Err(EvaluationError(format!(
            "the rule's change to {kind} {tag} is refused: {}: {}",
            error.field, error.message
        ))),
    }
}

/// Put `change` where an earlier action's change of the same aggregate was (`earlier`),
/// or after the others; with no change (the actions together leave it as it was),
/// drop the earlier one.
fn replace_or_push(
    changes: &mut Vec<PlannedChange>,
    earlier: Option<usize>,
    change: Option<PlannedChange>,
) {
    match (earlier, change) {
        (Some(index), Some(change)) => changes[index] = change,
        (Some(index), None) => {
            changes.remove(index);
        }
        (None, Some(change)) => changes.push(change),
        (None, None) => {}
    }
}

/// A tag a template made for an asset or cable the rule creates or updates: it must be
/// one `POST /assets` would take (an asset without an area made `""` of `{asset.area}`).
fn valid_tag(tag: String) -> Result<String, EvaluationError> {
    let mut errors = Vec::new();
    crate::assets::input::check_tag(&tag, &mut errors);
    match errors.first() {
        None => Ok(tag),
        Some(error) => Err(EvaluationError(format!(
            "the tag template made `{tag}`, which is not a valid tag: it {}",
            error.message
        ))),
    }
}

/// The assets a link's two ends name ([`resolve`]): two different ones, as
/// `POST /cables` and `POST /relationships` require.
fn ends(
    from: &CompiledEnd,
    to: &CompiledEnd,
    asset: &AssetState,
    context: &AssetContext,
    world: &mut World,
    planned: &[PlannedChange],
) -> Result<(Uuid, Uuid), EvaluationError> {
    let from = resolve(from, asset, context, world, planned)?;
    let to = resolve(to, asset, context, world, planned)?;
    if from == to {
        return Err(EvaluationError(
            "both ends of the link are the same asset".to_owned(),
        ));
    }
    Ok((from, to))
}

/// The asset id an end names: the rule's asset, or the asset with the rendered tag
/// (which may be one this very rule creates).
fn resolve(
    end: &CompiledEnd,
    asset: &AssetState,
    context: &AssetContext,
    world: &mut World,
    planned: &[PlannedChange],
) -> Result<Uuid, EvaluationError> {
    let tag = match end {
        CompiledEnd::Asset => return Ok(asset.id),
        CompiledEnd::Tag(template) => template.render(context)?,
    };
    let planned_here = planned.iter().find_map(|change| match change {
        PlannedChange::Asset { after, .. } if after.tag == tag => Some(after.id),
        _ => None,
    });
    if let Some(id) = planned_here {
        return Ok(id);
    }
    world
        .asset_by_tag(&tag)
        .map(|found| found.id)
        .ok_or_else(|| EvaluationError(format!("no asset with tag `{tag}`")))
}

/// A finding's rendered message: it says what is wrong, so it is not blank, and it can
/// be stored (no NUL).
fn finding_message(message: String) -> Result<String, EvaluationError> {
    if message.trim().is_empty() {
        return Err(EvaluationError(format!(
            "the finding's message renders blank ({message:?}): it must say what is wrong"
        )));
    }
    if message.contains('\0') {
        return Err(EvaluationError(format!(
            "the finding's message {}",
            crate::assets::input::NUL_MESSAGE
        )));
    }
    let most = crate::rules::definition::MAX_MESSAGE_BYTES;
    if message.len() > most {
        return Err(EvaluationError(format!(
            "the finding's message renders {} bytes, more than {most}",
            message.len()
        )));
    }
    Ok(message)
}

/// Property values are scalars: numbers, strings, booleans.
fn scalar(mut value: Value, name: &str) -> Result<Value, EvaluationError> {
    crate::assets::input::as_stored_number(&mut value);
    match value {
        Value::Number(_) | Value::String(_) | Value::Bool(_) => Ok(value),
        // JSON has no NaN or infinity: a double that is one reaches here as null.
        Value::Null => Err(EvaluationError(format!(
            "property `{name}` would be null, or a number JSON cannot hold (NaN, infinity); \
             properties are numbers, strings or booleans"
        ))),
        other => Err(EvaluationError(format!(
            "property `{name}` would be {other}; properties are numbers, strings or booleans"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::execute::world::Loaded;
    use crate::rules::definition::{compile, RuleInput};
    use serde_json::json;

    /// A rule flagging pumps without a driver, twice with the same words and once more
    /// with others when `extra` is set.
    fn pump_rule(extra: bool) -> CompiledRule {
        let mut then = vec![
            json!({"type": "flag", "severity": "warning", "message": "{asset.tag}: no driver"}),
            json!({"type": "flag", "severity": "warning", "message": "{asset.tag}: no driver"}),
        ];
        if extra {
            then.push(json!({"type": "flag", "severity": "info", "message": "{asset.tag}: check"}));
        }
        let input: RuleInput = serde_json::from_value(json!({
            "name": "Pumps name their driver", "discipline": "MECHANICAL",
            "when": "!has(asset.properties.driver)", "then": then,
        }))
        .unwrap();
        compile(Uuid::nil(), 1, &input).unwrap()
    }

    fn pump(driver: bool) -> AssetState {
        let mut properties = Map::new();
        if driver {
            properties.insert("driver".into(), json!("M-1"));
        }
        AssetState {
            id: Uuid::from_u128(1),
            tag: "P-1".into(),
            asset_type: "CENTRIFUGAL_PUMP".into(),
            discipline: "MECHANICAL".into(),
            name: None,
            area: None,
            properties,
            version: 1,
        }
    }

    #[test]
    fn an_apply_departs_from_its_plan_by_creating_without_a_promise_or_not_keeping_one() {
        // Arrange: a plan promised two relationships for the pump, and owes one of them
        // in this rule.
        let pump = pump(true);
        let (feeds, controls) = ("relationship:FEEDS:a:b", "relationship:CONTROLS:a:b");
        let preset = BTreeMap::from([
            (feeds.to_owned(), Uuid::from_u128(11)),
            (controls.to_owned(), Uuid::from_u128(12)),
        ]);
        let mut ids = Ids::from_plan(preset, BTreeSet::from([feeds.to_owned()]));

        // Act: a first planning pass creates the promised relationship, then is undone
        // (what it took as absent exists); the pass that stands creates something else.
        let mark = ids.mark();
        assert_eq!(ids.id_for(&pump, feeds.to_owned()), Uuid::from_u128(11));
        ids.rewind(mark);
        ids.id_for(&pump, "cable:W-P-1".to_owned());
        let departures = ids.take_departures();

        // Assert: both departures, each once; a pass that keeps the promise has none.
        assert_eq!(departures, ["cable:W-P-1", feeds]);
        assert_eq!(ids.take_departures(), Vec::<String>::new());
        let mut kept = Ids::from_plan(
            BTreeMap::from([(feeds.to_owned(), Uuid::from_u128(11))]),
            BTreeSet::from([feeds.to_owned()]),
        );
        kept.id_for(&pump, feeds.to_owned());
        assert_eq!(kept.take_departures(), Vec::<String>::new());
    }

    /// Plan `rule` for `asset` whose open findings of the rule are `open`.
    fn plan_with(rule: &CompiledRule, asset: AssetState, open: &[&str]) -> Outcome {
        let mut world = World::default();
        let id = asset.id;
        world.load_assets([asset]);
        let open = open
            .iter()
            .map(|message| OpenFinding {
                message: (*message).to_owned(),
                severity: "warning".into(),
                raised_in: Uuid::from_u128(9),
                rule_version: Some(1),
                raised_at: chrono::DateTime::UNIX_EPOCH,
            })
            .collect();
        world.record(Loaded {
            findings: vec![((id, rule.id), open, 0)],
            ..Loaded::default()
        });
        plan(
            rule,
            id,
            &mut world,
            &mut Ids::default(),
            &Claims::default(),
        )
    }

    fn kinds(outcome: &Outcome) -> Vec<(&'static str, String)> {
        let (Outcome::Executed { changes } | Outcome::Cleared { changes }) = outcome else {
            return Vec::new();
        };
        changes
            .iter()
            .map(|change| match change {
                PlannedChange::FindingRaised { message, .. } => ("raised", message.clone()),
                PlannedChange::FindingResolved { finding, .. } => {
                    ("resolved", finding.message.clone())
                }
                other => ("other", format!("{other:?}")),
            })
            .collect()
    }

    #[test]
    fn a_flag_rule_raises_what_it_flags_once_and_resolves_what_it_no_longer_flags() {
        let rule = pump_rule(false);
        let raised = plan_with(&rule, pump(false), &[]);
        assert_eq!(kinds(&raised), [("raised", "P-1: no driver".to_owned())]);

        let again = plan_with(&rule, pump(false), &["P-1: no driver"]);
        assert!(matches!(again, Outcome::Skipped { .. }), "{again:?}");

        let reworded = plan_with(&pump_rule(true), pump(false), &["P-1: no driver", "old"]);
        assert_eq!(
            kinds(&reworded),
            [
                ("resolved", "old".to_owned()),
                ("raised", "P-1: check".to_owned())
            ]
        );
        assert!(matches!(reworded, Outcome::Executed { .. }));

        let fixed = plan_with(&rule, pump(true), &["P-1: no driver"]);
        assert_eq!(kinds(&fixed), [("resolved", "P-1: no driver".to_owned())]);
        assert!(matches!(fixed, Outcome::Cleared { .. }));

        assert_eq!(plan_with(&rule, pump(true), &[]), Outcome::NotMatched);
    }

    #[test]
    fn a_rule_that_owns_no_findings_never_looks_them_up() {
        let mut rule = pump_rule(false);
        rule.owns_findings = false;
        let mut world = World::default();
        world.load_assets([pump(true)]);
        let outcome = plan(
            &rule,
            Uuid::from_u128(1),
            &mut world,
            &mut Ids::default(),
            &Claims::default(),
        );
        assert_eq!(outcome, Outcome::NotMatched);
        assert!(world.needs.findings.is_empty());
    }

    #[test]
    fn assets_a_rule_gives_one_target_tag_hold_it_in_id_order_when_they_want_it_otherwise() {
        // Arrange: two motors of one area; a rule gives each area one junction box (and
        // says which motor it feeds) and one cable.
        let rule = |fed: &str| {
            let input: RuleInput = serde_json::from_value(json!({
                "name": "One box per area", "discipline": "ELECTRICAL", "when": "true",
                "then": [
                    {"type": "upsert_asset", "tag": "JB-{asset.area}", "asset_type": "JUNCTION_BOX",
                     "discipline": "ELECTRICAL", "properties": {"fed_motor": fed}},
                    {"type": "upsert_cable", "tag": "W-{asset.area}", "cable_type": "POWER",
                     "from": {"tag": "JB-{asset.area}"}, "to": "asset"}
                ],
            }))
            .unwrap();
            compile(Uuid::nil(), 1, &input).unwrap()
        };
        let motor = |id: u128, tag: &str| AssetState {
            id: Uuid::from_u128(id),
            tag: tag.into(),
            asset_type: "ELECTRIC_MOTOR".into(),
            discipline: "ELECTRICAL".into(),
            name: None,
            area: Some("U900".into()),
            properties: Map::new(),
            version: 1,
        };
        let run_with = |claims: &Claims, rule: &CompiledRule, world: &mut World, order: &[u128]| {
            let mut ids = Ids::default();
            order
                .iter()
                .map(|id| plan(rule, Uuid::from_u128(*id), world, &mut ids, claims))
                .collect::<Vec<Outcome>>()
        };
        let run = |rule: &CompiledRule, world: &mut World, order: &[u128]| {
            run_with(&Claims::default(), rule, world, order)
        };

        // Act / Assert: each motor wants the box to name it, and its cable to end at it.
        let mut world = World::default();
        world.load_assets([motor(1, "FM-1"), motor(2, "FM-2")]);
        let first = run(&rule("asset.tag"), &mut world, &[1, 2]);
        assert!(matches!(first[0], Outcome::Executed { .. }), "{first:?}");
        let Outcome::Error { message, matched } = &first[1] else {
            panic!("the second motor changed what the first holds: {first:?}");
        };
        assert!(matched);
        assert!(
            message.starts_with("this rule upserts asset `JB-U900` for asset `FM-1` too"),
            "{message}"
        );
        assert!(
            message.contains("(property `fed_motor` \"FM-1\" for `FM-1`, \"FM-2\" for `FM-2`)"),
            "{message}"
        );
        // The next run (the world as the first left it) changes nothing, where before
        // the two took turns; so too when the second motor's chunk was planned first
        // and that plan dropped (planned ahead on a chunk that did not commit).
        let again = run(&rule("asset.tag"), &mut world.clone(), &[1, 2]);
        assert!(matches!(again[0], Outcome::Skipped { .. }), "{again:?}");
        assert!(matches!(again[1], Outcome::Error { .. }), "{again:?}");
        let claims = Claims::default();
        let dropped = run_with(&claims, &rule("asset.tag"), &mut world.clone(), &[2]);
        assert!(
            matches!(dropped[0], Outcome::Executed { .. }),
            "{dropped:?}"
        );
        let replanned = run_with(&claims, &rule("asset.tag"), &mut world.clone(), &[1, 2]);
        assert!(
            matches!(replanned[0], Outcome::Skipped { .. }),
            "{replanned:?}"
        );
        assert!(
            matches!(replanned[1], Outcome::Error { .. }),
            "{replanned:?}"
        );
        // Wanting the same of the box is no dispute; the cable still ends at each motor.
        let mut world = World::default();
        world.load_assets([motor(1, "FM-1"), motor(2, "FM-2")]);
        let outcomes = run(&rule("'both'"), &mut world, &[1, 2]);
        assert!(
            matches!(outcomes[0], Outcome::Executed { .. }),
            "{outcomes:?}"
        );
        let Outcome::Error { message, .. } = &outcomes[1] else {
            panic!("{outcomes:?}");
        };
        assert!(
            message.starts_with("this rule upserts cable `W-U900`"),
            "{message}"
        );
    }

    #[test]
    fn a_tag_template_that_makes_no_valid_tag_is_an_error_for_that_asset() {
        let rule = |then: serde_json::Value| {
            let input: RuleInput = serde_json::from_value(json!({
                "name": "Pumps get a motor", "discipline": "MECHANICAL", "when": "true",
                "then": [then],
            }))
            .unwrap();
            compile(Uuid::nil(), 1, &input).unwrap()
        };
        let motor = |tag: &str| {
            json!({"type": "upsert_asset", "tag": tag, "asset_type": "ELECTRIC_MOTOR",
                   "discipline": "ELECTRICAL"})
        };
        let cable = |tag: &str| {
            json!({"type": "upsert_cable", "tag": tag, "cable_type": "POWER",
                   "from": "asset", "to": {"tag": "MCC-1"}})
        };
        // The pump has no area: `{asset.area}` makes an empty tag.
        for (then, made) in [
            (motor("{asset.area}"), "``"),
            (motor("M {asset.tag}"), "`M P-1`"),
            (cable("W {asset.tag}"), "`W P-1`"),
            (motor(&"{asset.tag}".repeat(100)), "`P-1P-1"),
        ] {
            let Outcome::Error { message, .. } = plan_with(&rule(then.clone()), pump(false), &[])
            else {
                panic!("{then} was planned");
            };
            // The action is named: its place in `then` and its type.
            let kind = then["type"].as_str().unwrap_or_default();
            assert!(
                message.starts_with(&format!("then[0] ({kind}): the tag template made {made}")),
                "{message}"
            );
        }
        // A tag another asset holds is found only if that asset is of the type the
        // action makes: a pump `M-P-1` is not made a motor.
        let mut world = World::default();
        let mut taken = pump(false);
        taken.id = Uuid::from_u128(2);
        taken.tag = "M-P-1".into();
        world.load_assets([pump(false), taken]);
        let motors = rule(motor("M-{asset.tag}"));
        world.record(Loaded {
            findings: vec![((Uuid::from_u128(1), motors.id), Vec::new(), 0)],
            ..Loaded::default()
        });
        let outcome = plan(
            &motors,
            Uuid::from_u128(1),
            &mut world,
            &mut Ids::default(),
            &Claims::default(),
        );
        let Outcome::Error { message, .. } = outcome else {
            panic!("the pump was made a motor: {outcome:?}");
        };
        assert!(
            message.starts_with(
                "then[0] (upsert_asset): asset `M-P-1` exists and is a `CENTRIFUGAL_PUMP`, \
                 not the `ELECTRIC_MOTOR` this action makes"
            ),
            "{message}"
        );
        // A valid one is planned.
        assert!(matches!(
            plan_with(&rule(motor("M-{asset.tag}")), pump(false), &[]),
            Outcome::Executed { .. }
        ));
        // A link from the asset to itself is an error too.
        let to_itself = json!({"type": "create_relationship", "kind": "DRIVES",
                               "from": "asset", "to": {"tag": "{asset.tag}"}});
        let Outcome::Error { message, .. } = plan_with(&rule(to_itself), pump(false), &[]) else {
            panic!("a link to itself was planned");
        };
        assert_eq!(
            message,
            "then[0] (create_relationship): both ends of the link are the same asset"
        );
        // An expression that fails at run time names its action too.
        let input: RuleInput = serde_json::from_value(json!({
            "name": "Ranges", "discipline": "MECHANICAL", "when": "true",
            "then": [{"type": "set_property", "name": "x", "value": "1"},
                     {"type": "set_property", "name": "range_unit",
                      "value": "asset.properties.unit"}],
        }))
        .unwrap();
        let ranges = compile(Uuid::nil(), 1, &input).unwrap();
        let Outcome::Error { message, .. } = plan_with(&ranges, pump(false), &[]) else {
            panic!("a missing property was read");
        };
        assert!(
            message.starts_with("then[1] (set_property `range_unit`): "),
            "{message}"
        );
    }

    #[test]
    fn actions_of_one_rule_that_make_the_same_tag_make_one_change_of_it() {
        let input: RuleInput = serde_json::from_value(json!({
            "name": "Pumps get a VFD", "discipline": "ELECTRICAL", "when": "true",
            "then": [
                {"type": "upsert_asset", "tag": "VFD-{asset.tag}", "asset_type": "VFD",
                 "discipline": "ELECTRICAL", "properties": {"a": "1"}},
                {"type": "upsert_asset", "tag": "VFD-{asset.tag}", "asset_type": "VFD",
                 "discipline": "ELECTRICAL", "properties": {"b": "2"}},
                {"type": "upsert_cable", "tag": "W-{asset.tag}", "cable_type": "POWER",
                 "from": {"tag": "VFD-{asset.tag}"}, "to": "asset", "properties": {"x": "1"}},
                {"type": "upsert_cable", "tag": "W-{asset.tag}", "cable_type": "POWER",
                 "from": {"tag": "VFD-{asset.tag}"}, "to": "asset", "properties": {"y": "2"}}
            ],
        }))
        .unwrap();
        let rule = compile(Uuid::nil(), 1, &input).unwrap();
        let Outcome::Executed { changes } = plan_with(&rule, pump(false), &[]) else {
            panic!("nothing planned");
        };
        let summary: Vec<(Option<i64>, String, i64, Vec<String>)> = changes
            .iter()
            .map(|change| match change {
                PlannedChange::Asset { before, after } => (
                    before.as_ref().map(|b| b.version),
                    after.tag.clone(),
                    after.version,
                    after.properties.keys().cloned().collect(),
                ),
                PlannedChange::Cable { before, after } => (
                    before.as_ref().map(|b| b.version),
                    after.tag.clone(),
                    after.version,
                    after.properties.keys().cloned().collect(),
                ),
                other => panic!("{other:?}"),
            })
            .collect();
        let keys = |keys: &[&str]| keys.iter().map(|key| (*key).to_owned()).collect();
        assert_eq!(
            summary,
            vec![
                (None, "VFD-P-1".to_owned(), 1, keys(&["a", "b"])),
                (None, "W-P-1".to_owned(), 1, keys(&["x", "y"])),
            ]
        );
    }
}
