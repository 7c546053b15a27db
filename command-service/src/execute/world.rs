//! The slice of current state one chunk of an execution works on.
//!
//! The planner is synchronous and pure; it asks the world for assets by id or tag,
//! cables by tag, relationships and findings. A lookup of something not loaded yet is
//! recorded in [`Needs`] and answered "absent"; the runner then loads what was needed
//! (locking it) and plans again, so planning never waits on the database.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use synapse_shared::domain::{AssetState, CableState, RelationshipState};
use uuid::Uuid;

/// A relationship's identity: kind and both ends.
pub type RelationshipKey = (String, Uuid, Uuid);
/// A finding's identity: asset, rule and message.
pub type FindingKey = (Uuid, Uuid, String);

/// What the planner asked for that the world did not hold.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Needs {
    pub asset_tags: BTreeSet<String>,
    pub cable_tags: BTreeSet<String>,
    pub relationships: BTreeSet<RelationshipKey>,
    pub findings: BTreeSet<FindingKey>,
}

impl Needs {
    pub fn is_empty(&self) -> bool {
        self.asset_tags.is_empty()
            && self.cable_tags.is_empty()
            && self.relationships.is_empty()
            && self.findings.is_empty()
    }
}

/// Loaded state plus the changes planned so far in this batch.
#[derive(Debug, Default, Clone)]
pub struct World {
    assets: HashMap<Uuid, AssetState>,
    /// Tag → id; `None` means known not to exist.
    asset_tags: HashMap<String, Option<Uuid>>,
    cables: HashMap<String, Option<CableState>>,
    relationships: HashMap<RelationshipKey, Option<RelationshipState>>,
    findings: HashMap<FindingKey, bool>,
    /// Version of everything as first loaded from the database (0: absent), keyed by
    /// id or by `tag:` for absent tags: what a plan depends on.
    read_versions: BTreeMap<String, i64>,
    pub needs: Needs,
}

impl World {
    /// Assets loaded from the database.
    pub fn load_assets(&mut self, assets: impl IntoIterator<Item = AssetState>) {
        for asset in assets {
            self.read_versions
                .entry(asset.id.to_string())
                .or_insert(asset.version);
            self.asset_tags.insert(asset.tag.clone(), Some(asset.id));
            self.assets.entry(asset.id).or_insert(asset);
        }
    }

    /// Tags looked up in the database and not found.
    pub fn load_absent_tags(&mut self, tags: impl IntoIterator<Item = String>) {
        for tag in tags {
            self.read_versions.entry(format!("tag:{tag}")).or_insert(0);
            self.asset_tags.entry(tag).or_insert(None);
        }
    }

    pub fn load_cable(&mut self, tag: String, cable: Option<CableState>) {
        let key = cable
            .as_ref()
            .map_or_else(|| format!("cable:{tag}"), |cable| cable.id.to_string());
        self.read_versions
            .entry(key)
            .or_insert(cable.as_ref().map_or(0, |cable| cable.version));
        self.cables.entry(tag).or_insert(cable);
    }

    pub fn load_relationship(
        &mut self,
        key: RelationshipKey,
        relationship: Option<RelationshipState>,
    ) {
        self.relationships.entry(key).or_insert(relationship);
    }

    pub fn load_finding(&mut self, key: FindingKey, exists: bool) {
        self.findings.entry(key).or_insert(exists);
    }

    pub fn asset(&self, id: Uuid) -> Option<&AssetState> {
        self.assets.get(&id)
    }

    /// The asset with `tag`, recording the need if the world does not know.
    pub fn asset_by_tag(&mut self, tag: &str) -> Option<AssetState> {
        match self.asset_tags.get(tag) {
            Some(Some(id)) => self.assets.get(id).cloned(),
            Some(None) => None,
            None => {
                self.needs.asset_tags.insert(tag.to_owned());
                None
            }
        }
    }

    pub fn cable_by_tag(&mut self, tag: &str) -> Option<CableState> {
        match self.cables.get(tag) {
            Some(cable) => cable.clone(),
            None => {
                self.needs.cable_tags.insert(tag.to_owned());
                None
            }
        }
    }

    pub fn relationship(&mut self, key: &RelationshipKey) -> Option<RelationshipState> {
        match self.relationships.get(key) {
            Some(relationship) => relationship.clone(),
            None => {
                self.needs.relationships.insert(key.clone());
                None
            }
        }
    }

    pub fn finding_exists(&mut self, key: &FindingKey) -> bool {
        match self.findings.get(key) {
            Some(exists) => *exists,
            None => {
                self.needs.findings.insert(key.clone());
                false
            }
        }
    }

    /// Record a planned asset state (created or updated).
    pub fn put_asset(&mut self, asset: AssetState) {
        if let Some(previous) = self.assets.get(&asset.id) {
            if previous.tag != asset.tag {
                self.asset_tags.insert(previous.tag.clone(), None);
            }
        }
        self.asset_tags.insert(asset.tag.clone(), Some(asset.id));
        self.assets.insert(asset.id, asset);
    }

    pub fn put_cable(&mut self, cable: CableState) {
        self.cables.insert(cable.tag.clone(), Some(cable));
    }

    pub fn put_relationship(&mut self, relationship: RelationshipState) {
        let key = (
            relationship.kind.clone(),
            relationship.from_asset,
            relationship.to_asset,
        );
        self.relationships.insert(key, Some(relationship));
    }

    pub fn put_finding(&mut self, key: FindingKey) {
        self.findings.insert(key, true);
    }

    /// What this world read from the database, for a plan's staleness check.
    pub fn read_versions(&self) -> &BTreeMap<String, i64> {
        &self.read_versions
    }
}

/// The JSON form of an asset in event payloads and plans.
pub fn asset_json(asset: &AssetState) -> Value {
    crate::assets::commands::state_json(asset)
}
