//! The slice of current state one chunk of an execution works on.
//!
//! The planner is synchronous and pure; it asks the world for assets by id or tag,
//! cables by tag, relationships and findings. A lookup of something not loaded yet is
//! recorded in [`Needs`] and answered "absent"; the runner then loads what was needed
//! (locking it) and plans again, so planning never waits on the database.

use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use synapse_shared::domain::{AssetState, CableState, RelationshipState};
use uuid::Uuid;

/// A relationship's identity: kind and both ends.
pub type RelationshipKey = (String, Uuid, Uuid);
/// Whose findings: the asset and the rule that flags it.
pub type FindingOwner = (Uuid, Uuid);

/// A finding a rule raised on an asset that nobody has resolved yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenFinding {
    pub message: String,
    pub severity: String,
    /// The batch that raised it: a rollback of its resolution restores it as that
    /// batch's, so rolling that batch back later still takes it away.
    pub raised_in: Uuid,
    /// The rule version that raised it (none if raised before that was recorded).
    pub rule_version: Option<i32>,
    /// When it was first raised.
    pub raised_at: DateTime<Utc>,
}

/// Something a plan read, whose version it depends on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Read {
    /// An asset, cable or relationship that existed.
    Id(Uuid),
    /// An asset tag that did not exist.
    AbsentTag(String),
    /// A cable tag that did not exist.
    AbsentCable(String),
    /// The open findings of a rule on an asset, as [`FINDINGS_FINGERPRINT`] of them.
    Findings { asset: Uuid, rule: Uuid },
}

/// SQL for a fingerprint of the open findings `f` of one (asset, rule): a hash of their
/// messages in order, 0 for none. What a plan read of them is this, as its version, so
/// that the planner's load and a plan's stale check compute it alike.
pub const FINDINGS_FINGERPRINT: &str =
    "coalesce(hashtextextended(string_agg(f.message, E'\\n' order by f.message), 0), 0)";

/// How a refused plan names its stale reads: the id, `tag:` / `cable:` and the absent
/// tag, or `findings:` and the asset and rule.
impl std::fmt::Display for Read {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Read::Id(id) => write!(formatter, "{id}"),
            Read::AbsentTag(tag) => write!(formatter, "tag:{tag}"),
            Read::AbsentCable(tag) => write!(formatter, "cable:{tag}"),
            Read::Findings { asset, rule } => write!(formatter, "findings:{asset}:{rule}"),
        }
    }
}

/// What the planner asked for that the world did not hold.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Needs {
    pub asset_tags: BTreeSet<String>,
    pub cable_tags: BTreeSet<String>,
    pub relationships: BTreeSet<RelationshipKey>,
    /// The open findings of these (asset, rule) pairs.
    pub findings: BTreeSet<FindingOwner>,
}

impl Needs {
    pub fn is_empty(&self) -> bool {
        self.asset_tags.is_empty()
            && self.cable_tags.is_empty()
            && self.relationships.is_empty()
            && self.findings.is_empty()
    }
}

/// Most assets looked up by tag that a chunk hands on to the next one: enough for
/// every MCC and junction box of a plant, bounded so memory stays flat.
const MAX_CARRIED_LOOKUPS: usize = 10_000;

/// What the database answered for [`Needs`].
#[derive(Debug, Default)]
pub struct Loaded {
    /// Assets found by tag.
    pub assets: Vec<AssetState>,
    pub absent_tags: Vec<String>,
    pub cables: Vec<(String, Option<CableState>)>,
    pub relationships: Vec<(RelationshipKey, Option<RelationshipState>)>,
    /// Per (asset, rule): the open findings and their [`FINDINGS_FINGERPRINT`].
    pub findings: Vec<(FindingOwner, Vec<OpenFinding>, i64)>,
}

impl Loaded {
    /// Nothing that was asked for exists: a planning pass that took all of it as
    /// absent planned exactly as it would have with it loaded.
    pub fn all_absent(&self) -> bool {
        self.assets.is_empty()
            && self.cables.iter().all(|(_, cable)| cable.is_none())
            && self.relationships.iter().all(|(_, found)| found.is_none())
            && self.findings.iter().all(|(_, open, _)| open.is_empty())
    }
}

/// Loaded state plus the changes planned so far in this batch.
#[derive(Debug, Default, Clone)]
pub struct World {
    /// Shared, so that the planner reads an asset and a chunk hands it on without
    /// copying its properties.
    assets: HashMap<Uuid, Arc<AssetState>>,
    /// Tag → id; `None` means known not to exist.
    asset_tags: HashMap<String, Option<Uuid>>,
    cables: HashMap<String, Option<CableState>>,
    relationships: HashMap<RelationshipKey, Option<RelationshipState>>,
    /// Open findings per (asset, rule), as loaded, less what planning resolved. A
    /// finding planning raises is not added: a rule plans an asset once per execution,
    /// so nothing asks for that asset's findings of that rule again.
    findings: HashMap<FindingOwner, Vec<OpenFinding>>,
    /// Version of everything as first loaded from the database (0: absent): what a
    /// plan depends on.
    read_versions: BTreeMap<Read, i64>,
    /// Versions of what the previous chunk handed on ([`World::carry_over`]): each
    /// moves to `read_versions` when planning reads it, so a plan depends only on what
    /// it used (the writer locks and checks those, not the previous chunk's changes).
    carried: HashMap<Uuid, i64>,
    /// What planning changed (asset ids, cable tags, relationship keys):
    /// what the next chunk carries over while this one is still being written.
    changed: Changed,
    /// Assets loaded because planning looked them up by tag (an MCC, a junction box):
    /// the next chunk most likely looks them up again.
    looked_up: BTreeSet<Uuid>,
    pub needs: Needs,
}

#[derive(Debug, Default, Clone)]
struct Changed {
    assets: BTreeSet<Uuid>,
    cables: BTreeSet<String>,
    relationships: BTreeSet<RelationshipKey>,
}

impl World {
    /// Assets loaded from the database. An asset the world already holds (loaded
    /// before, planned, or carried over) keeps the world's version.
    pub fn load_assets(&mut self, assets: impl IntoIterator<Item = AssetState>) {
        let assets = assets.into_iter();
        // A page of assets at once: grown once, not rehashed at every doubling.
        let (at_least, _) = assets.size_hint();
        self.assets.reserve(at_least);
        self.asset_tags.reserve(at_least);
        for asset in assets {
            if self.assets.contains_key(&asset.id) {
                continue;
            }
            self.read_versions
                .entry(Read::Id(asset.id))
                .or_insert(asset.version);
            self.asset_tags.insert(asset.tag.clone(), Some(asset.id));
            self.assets.insert(asset.id, Arc::new(asset));
        }
    }

    /// Tags looked up in the database and not found. A plan depends on their absence
    /// even when it creates them.
    pub fn load_absent_tags(&mut self, tags: impl IntoIterator<Item = String>) {
        for tag in tags {
            self.read_versions
                .entry(Read::AbsentTag(tag.clone()))
                .or_insert(0);
            self.asset_tags.entry(tag).or_insert(None);
        }
    }

    /// What the database answered for a planning pass's needs.
    pub fn record(&mut self, loaded: Loaded) {
        self.looked_up
            .extend(loaded.assets.iter().map(|asset| asset.id));
        self.load_assets(loaded.assets);
        self.load_absent_tags(loaded.absent_tags);
        for (tag, cable) in loaded.cables {
            self.load_cable(tag, cable);
        }
        for (key, relationship) in loaded.relationships {
            self.load_relationship(key, relationship);
        }
        for ((asset, rule), open, fingerprint) in loaded.findings {
            self.read_versions
                .entry(Read::Findings { asset, rule })
                .or_insert(fingerprint);
            self.findings.entry((asset, rule)).or_insert(open);
        }
    }

    /// A cable looked up by tag.
    pub fn load_cable(&mut self, tag: String, cable: Option<CableState>) {
        let key = cable.as_ref().map_or_else(
            || Read::AbsentCable(tag.clone()),
            |cable| Read::Id(cable.id),
        );
        self.read_versions
            .entry(key)
            .or_insert(cable.as_ref().map_or(0, |cable| cable.version));
        self.cables.entry(tag).or_insert(cable);
    }

    /// A relationship looked up by kind and ends. A plan depends on one that exists
    /// (its absence, the plan's creation of it covers: see
    /// [`Ids::take_departures`](super::planner::Ids::take_departures)).
    pub fn load_relationship(
        &mut self,
        key: RelationshipKey,
        relationship: Option<RelationshipState>,
    ) {
        if let Some(relationship) = &relationship {
            self.read_versions
                .entry(Read::Id(relationship.id))
                .or_insert(relationship.version);
        }
        self.relationships.entry(key).or_insert(relationship);
    }

    pub fn asset(&mut self, id: Uuid) -> Option<Arc<AssetState>> {
        self.depend_on(id);
        self.assets.get(&id).cloned()
    }

    /// The asset with `tag`, recording the need if the world does not know.
    pub fn asset_by_tag(&mut self, tag: &str) -> Option<AssetState> {
        match self.asset_tags.get(tag) {
            Some(Some(id)) => {
                let id = *id;
                self.depend_on(id);
                self.assets.get(&id).map(|asset| AssetState::clone(asset))
            }
            Some(None) => None,
            None => {
                self.needs.asset_tags.insert(tag.to_owned());
                None
            }
        }
    }

    pub fn cable_by_tag(&mut self, tag: &str) -> Option<CableState> {
        match self.cables.get(tag) {
            Some(cable) => {
                let cable = cable.clone();
                if let Some(cable) = &cable {
                    self.depend_on(cable.id);
                }
                cable
            }
            None => {
                self.needs.cable_tags.insert(tag.to_owned());
                None
            }
        }
    }

    pub fn relationship(&mut self, key: &RelationshipKey) -> Option<RelationshipState> {
        match self.relationships.get(key) {
            Some(relationship) => {
                let relationship = relationship.clone();
                if let Some(relationship) = &relationship {
                    self.depend_on(relationship.id);
                }
                relationship
            }
            None => {
                self.needs.relationships.insert(key.clone());
                None
            }
        }
    }

    /// The open findings `rule` raised on `asset`, recording the need if the world
    /// does not know them (then: none).
    pub fn open_findings(&mut self, owner: FindingOwner) -> &[OpenFinding] {
        if !self.findings.contains_key(&owner) {
            self.needs.findings.insert(owner);
        }
        self.findings.get(&owner).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Planning read `id`: if it was carried over, the plan now depends on its version.
    fn depend_on(&mut self, id: Uuid) {
        if let Some(version) = self.carried.remove(&id) {
            self.read_versions.insert(Read::Id(id), version);
        }
    }

    /// The version a plan read `id` at, or was handed it at.
    fn version_of(&self, id: Uuid) -> Option<i64> {
        self.carried
            .get(&id)
            .copied()
            .or_else(|| self.read_versions.get(&Read::Id(id)).copied())
    }

    /// Record a planned asset state (created or updated).
    pub fn put_asset(&mut self, asset: AssetState) {
        if let Some(previous) = self.assets.get(&asset.id) {
            if previous.tag != asset.tag {
                self.asset_tags.insert(previous.tag.clone(), None);
            }
        }
        self.asset_tags.insert(asset.tag.clone(), Some(asset.id));
        self.changed.assets.insert(asset.id);
        self.assets.insert(asset.id, Arc::new(asset));
    }

    pub fn put_cable(&mut self, cable: CableState) {
        self.changed.cables.insert(cable.tag.clone());
        self.cables.insert(cable.tag.clone(), Some(cable));
    }

    pub fn put_relationship(&mut self, relationship: RelationshipState) {
        let key = (
            relationship.kind.clone(),
            relationship.from_asset,
            relationship.to_asset,
        );
        self.changed.relationships.insert(key.clone());
        self.relationships.insert(key, Some(relationship));
    }

    /// Planning resolved `message` of `owner`.
    pub fn resolve_finding(&mut self, owner: FindingOwner, message: &str) {
        if let Some(open) = self.findings.get_mut(&owner) {
            open.retain(|finding| finding.message != message);
        }
    }

    /// What this world read from the database, for a plan's staleness check.
    pub fn read_versions(&self) -> &BTreeMap<Read, i64> {
        &self.read_versions
    }

    /// A world for the next chunk, planned while this chunk's changes are still being
    /// written: it starts with those changes, as if read from the database after this
    /// chunk commits (they win over what the database returns meanwhile, and are what
    /// the next chunk's plan depends on).
    pub fn carry_over(&self) -> World {
        let mut next = World::default();
        if self.looked_up.len() <= MAX_CARRIED_LOOKUPS {
            for id in &self.looked_up {
                if let (Some(asset), Some(version)) = (self.assets.get(id), self.version_of(*id)) {
                    if self.changed.assets.contains(id) {
                        continue;
                    }
                    next.carried.insert(*id, version);
                    next.asset_tags.insert(asset.tag.clone(), Some(asset.id));
                    next.looked_up.insert(asset.id);
                    next.assets.insert(asset.id, asset.clone());
                }
            }
        }
        for id in &self.changed.assets {
            if let Some(asset) = self.assets.get(id) {
                next.carried.insert(*id, asset.version);
                next.asset_tags.insert(asset.tag.clone(), Some(asset.id));
                next.assets.insert(asset.id, asset.clone());
            }
        }
        for tag in &self.changed.cables {
            if let Some(Some(cable)) = self.cables.get(tag) {
                next.carried.insert(cable.id, cable.version);
                next.cables.insert(tag.clone(), Some(cable.clone()));
            }
        }
        for key in &self.changed.relationships {
            if let Some(Some(relationship)) = self.relationships.get(key) {
                next.carried.insert(relationship.id, relationship.version);
                next.relationships
                    .insert(key.clone(), Some(relationship.clone()));
            }
        }
        next
    }
}

/// The JSON form of an asset in event payloads and plans.
pub fn asset_json(asset: &AssetState) -> Value {
    crate::assets::commands::state_json(asset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    fn asset(tag: &str, version: i64) -> AssetState {
        AssetState {
            id: Uuid::now_v7(),
            tag: tag.into(),
            asset_type: "ELECTRIC_MOTOR".into(),
            discipline: "ELECTRICAL".into(),
            name: None,
            area: None,
            properties: Map::new(),
            version,
        }
    }

    fn cable(tag: &str, from: Uuid, to: Uuid) -> CableState {
        CableState {
            id: Uuid::now_v7(),
            tag: tag.into(),
            from_asset: from,
            to_asset: to,
            cable_type: "POWER".into(),
            discipline: "ELECTRICAL".into(),
            properties: Map::new(),
            version: 1,
        }
    }

    #[test]
    fn the_next_chunk_starts_from_what_this_one_changed_and_looked_up() {
        let page_motor = asset("M-1", 3);
        let mcc = asset("MCC-1", 7);
        let mut world = World::default();
        world.load_assets([page_motor.clone()]);
        world.record(Loaded {
            assets: vec![mcc.clone()],
            absent_tags: vec!["VFD-1".into()],
            cables: vec![("W-M-1-PWR".into(), None)],
            ..Loaded::default()
        });
        let mut changed = page_motor.clone();
        changed.version = 4;
        world.put_asset(changed);
        let new_cable = cable("W-M-1-PWR", page_motor.id, mcc.id);
        world.put_cable(new_cable.clone());
        // The plan depends on the cable's absence even though it creates it.
        let absent_cable = Read::AbsentCable("W-M-1-PWR".into());
        assert_eq!(world.read_versions().get(&absent_cable), Some(&0));
        assert_eq!(absent_cable.to_string(), "cable:W-M-1-PWR");
        assert_eq!(Read::AbsentTag("VFD-1".into()).to_string(), "tag:VFD-1");
        assert_eq!(Read::Id(mcc.id).to_string(), mcc.id.to_string());

        let mut next = world.carry_over();
        // The next plan depends on nothing it has not read yet.
        assert!(next.read_versions().is_empty());
        // Changed things come with their planned versions, as read after the commit.
        assert_eq!(next.asset(page_motor.id).map(|a| a.version), Some(4));
        assert_eq!(next.read_versions().get(&Read::Id(page_motor.id)), Some(&4));
        assert_eq!(next.cable_by_tag("W-M-1-PWR"), Some(new_cable.clone()));
        assert_eq!(next.read_versions().get(&Read::Id(new_cable.id)), Some(&1));
        // Looked-up things come as read; absent tags are not carried (asked again).
        assert_eq!(next.asset_by_tag("MCC-1"), Some(mcc.clone()));
        assert_eq!(next.read_versions().get(&Read::Id(mcc.id)), Some(&7));
        assert_eq!(next.asset_by_tag("VFD-1"), None);
        assert!(next.needs.asset_tags.contains("VFD-1"));
        assert!(!next.read_versions().contains_key(&absent_cable));
        // A database answer never overrides what the world carries.
        let mut stale = page_motor.clone();
        stale.version = 3;
        next.load_assets([stale]);
        assert_eq!(next.asset(page_motor.id).map(|a| a.version), Some(4));
    }

    #[test]
    fn a_plan_depends_on_the_relationships_it_found_and_those_it_is_handed() {
        let (vfd, motor, jb) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let feeds = RelationshipState {
            id: Uuid::now_v7(),
            kind: "FEEDS".into(),
            from_asset: vfd,
            to_asset: motor,
            properties: Map::new(),
            version: 2,
        };
        let mut world = World::default();
        world.record(Loaded {
            relationships: vec![
                (("FEEDS".into(), vfd, motor), Some(feeds.clone())),
                (("CONNECTED_TO".into(), jb, motor), None),
            ],
            ..Loaded::default()
        });
        // Found: read at its version; absent: no read (the plan's creation covers it).
        assert_eq!(
            world.read_versions().clone(),
            BTreeMap::from([(Read::Id(feeds.id), 2)])
        );

        // Created in this chunk, handed on: read once the next chunk uses it.
        let mut created = feeds.clone();
        created.id = Uuid::now_v7();
        created.kind = "CONTROLS".into();
        created.version = 1;
        world.put_relationship(created.clone());
        let mut next = world.carry_over();
        assert!(next.read_versions().is_empty());
        let key = ("CONTROLS".to_owned(), vfd, motor);
        assert_eq!(next.relationship(&key), Some(created.clone()));
        assert_eq!(next.read_versions().get(&Read::Id(created.id)), Some(&1));
    }

    #[test]
    fn a_pass_stands_only_when_everything_it_took_as_absent_is_absent() {
        let absent = Loaded {
            absent_tags: vec!["JB-1".into()],
            cables: vec![("W-1".into(), None)],
            relationships: vec![(("CONTROLS".into(), Uuid::nil(), Uuid::nil()), None)],
            findings: vec![((Uuid::nil(), Uuid::nil()), Vec::new(), 0)],
            ..Loaded::default()
        };
        assert!(absent.all_absent());
        let found_asset = Loaded {
            assets: vec![asset("JB-1", 1)],
            ..Loaded::default()
        };
        assert!(!found_asset.all_absent());
        let found_cable = Loaded {
            cables: vec![("W-1".into(), Some(cable("W-1", Uuid::nil(), Uuid::nil())))],
            ..Loaded::default()
        };
        assert!(!found_cable.all_absent());
        let found_finding = Loaded {
            findings: vec![(
                (Uuid::nil(), Uuid::nil()),
                vec![OpenFinding {
                    message: "missing".into(),
                    severity: "error".into(),
                    raised_in: Uuid::nil(),
                    rule_version: Some(1),
                    raised_at: DateTime::UNIX_EPOCH,
                }],
                7,
            )],
            ..Loaded::default()
        };
        assert!(!found_finding.all_absent());
    }
}
