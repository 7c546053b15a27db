//! Real commands through the whole stack (command service, relay, JetStream, projection,
//! query service), and what they logged. The read side's tests build their data this
//! way and derive what they expect from the event log, never from rows they wrote
//! themselves.

use crate::apps::System;
use crate::auth::Role;
use crate::client::{http_client_as, send, Reply};
use query_service::live::LiveLimits;
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::PgPool;
use synapse_shared::domain::Change;
use synapse_shared::{AggregateType, EventEnvelope, EventType};
use uuid::Uuid;

/// The engineer who imports, changes assets and executes rules in these tests; the
/// admin ([`crate::auth::TEST_ADMIN`]) defines rules and rolls back, so events carry
/// two different actors.
pub const ENGINEER: &str = "erin-engineer";
/// The viewer every query is made as: reading needs no more.
pub const VIEWER: &str = "vera-viewer";

/// The whole system with a client per role.
pub struct Stack {
    pub system: System,
    /// Authenticated as [`ENGINEER`].
    pub engineer: reqwest::Client,
    /// Authenticated as [`VIEWER`].
    pub viewer: reqwest::Client,
    pool: PgPool,
}

impl Stack {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with_limits(LiveLimits::default()).await
    }

    /// The whole system, the query service's live feed sized by `limits`.
    pub async fn start_with_limits(limits: LiveLimits) -> anyhow::Result<Self> {
        let system = System::start_with_limits(limits).await?;
        let pool = PgPool::connect(&system.database.url).await?;
        Ok(Self {
            system,
            engineer: http_client_as(Role::Engineer, ENGINEER),
            viewer: http_client_as(Role::Viewer, VIEWER),
            pool,
        })
    }

    /// The command database (to read the log, or to hold a lock on it).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A request to the command service as `client`, expecting `status`; the body.
    pub async fn command(
        &self,
        client: &reqwest::Client,
        method: Method,
        path: &str,
        body: Option<&Value>,
        status: u16,
    ) -> anyhow::Result<Value> {
        let reply = send(client, method, &self.system.command.url(path), body).await?;
        anyhow::ensure!(
            reply.status == status,
            "{path}: expected {status}, got {reply:#?}"
        );
        Ok(reply.body)
    }

    /// Import a CSV file as the engineer; the import's correlation id.
    pub async fn import(&self, csv: &str) -> anyhow::Result<Uuid> {
        let response = self
            .engineer
            .post(self.system.command.url("/assets/import"))
            .header("content-type", "text/csv")
            .body(csv.to_owned())
            .send()
            .await?;
        let reply = Reply::from(response).await?;
        anyhow::ensure!(
            matches!(reply.status, 200 | 201),
            "import refused: {reply:#?}"
        );
        id_field(&reply.body, "correlation_id")
    }

    /// Define a rule as the admin; its id.
    pub async fn define_rule(&self, rule: &Value) -> anyhow::Result<Uuid> {
        let body = self
            .command(&self.system.http, Method::POST, "/rules", Some(rule), 201)
            .await?;
        id_field(&body, "id")
    }

    /// Execute rules as the engineer and wait for the batch to finish; the report.
    pub async fn execute(&self, mut request: Value) -> anyhow::Result<Value> {
        request["wait"] = json!(true);
        self.command(
            &self.engineer,
            Method::POST,
            "/rules/execute",
            Some(&request),
            200,
        )
        .await
    }

    /// Start an execution as the engineer without waiting; its correlation id.
    pub async fn start_execution(&self, request: Value) -> anyhow::Result<Uuid> {
        let body = self
            .command(
                &self.engineer,
                Method::POST,
                "/rules/execute",
                Some(&request),
                202,
            )
            .await?;
        id_field(&body, "correlation_id")
    }

    /// Roll a batch back as the admin; the rollback's correlation id.
    pub async fn rollback(&self, correlation_id: Uuid) -> anyhow::Result<Uuid> {
        let body = self
            .command(
                &self.system.http,
                Method::POST,
                "/rules/rollback",
                Some(&json!({"correlation_id": correlation_id})),
                200,
            )
            .await?;
        id_field(&body, "correlation_id")
    }

    /// Create an asset as the engineer (a single-change batch); its id.
    pub async fn create_asset(&self, asset: &Value) -> anyhow::Result<Uuid> {
        let body = self
            .command(&self.engineer, Method::POST, "/assets", Some(asset), 201)
            .await?;
        id_field(&body["asset"], "id")
    }

    /// Delete an asset as the engineer (a single-change batch).
    pub async fn delete_asset(&self, id: Uuid) -> anyhow::Result<()> {
        let reply = send(
            &self.engineer,
            Method::DELETE,
            &self.system.command.url(&format!("/assets/{id}")),
            None,
        )
        .await?;
        anyhow::ensure!(
            (200..300).contains(&reply.status),
            "delete refused: {reply:#?}"
        );
        Ok(())
    }

    /// Every event of the command side's log, in position order.
    pub async fn log(&self) -> anyhow::Result<Vec<EventEnvelope>> {
        Ok(synapse_shared::event_log::read_after(&self.pool, 0, i64::MAX).await?)
    }

    /// The log's last position.
    pub async fn head(&self) -> anyhow::Result<i64> {
        Ok(synapse_shared::event_log::head(&self.pool).await?)
    }

    /// Wait until every projector has applied the whole log.
    pub async fn settle(&self) -> anyhow::Result<()> {
        self.system.wait_for_projection().await
    }

    /// A GET on the query service as the viewer.
    pub async fn get(&self, path: &str) -> anyhow::Result<Reply> {
        send(
            &self.viewer,
            Method::GET,
            &self.system.query.url(path),
            None,
        )
        .await
    }

    /// A GET on the query service that must answer 200; the body.
    pub async fn read(&self, path: &str) -> anyhow::Result<Value> {
        let reply = self.get(path).await?;
        anyhow::ensure!(reply.status == 200, "GET {path}: {reply:#?}");
        Ok(reply.body)
    }
}

/// A UUID field of a JSON object.
pub fn id_field(body: &Value, field: &str) -> anyhow::Result<Uuid> {
    body[field]
        .as_str()
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no `{field}` in {body}"))
}

/// The asset an event concerns (SPEC §7): the aggregate itself for asset events, else
/// the asset its payload names.
pub fn concerned_asset(event: &EventEnvelope) -> Option<Uuid> {
    if event.aggregate_type == AggregateType::Asset {
        return Some(event.aggregate_id);
    }
    event.payload["asset_id"].as_str()?.parse().ok()
}

/// The id of the asset created with `tag` in `log`.
pub fn created_asset(log: &[EventEnvelope], tag: &str) -> anyhow::Result<Uuid> {
    log.iter()
        .find(|e| e.event_type == EventType::AssetCreated && e.payload["after"]["tag"] == tag)
        .map(|e| e.aggregate_id)
        .ok_or_else(|| anyhow::anyhow!("no ASSET_CREATED for {tag}"))
}

/// The `before` or `after` side of a change event's payload (`None` when absent).
pub fn side(event: &EventEnvelope, name: &str) -> Option<Value> {
    event.payload.get(name).filter(|v| !v.is_null()).cloned()
}

/// The timeline entry the query service must show for a logged event: its envelope's
/// fields, the asset it concerns, the RFC 6902 diff of a change, and the rollback that
/// undid it.
pub fn timeline_entry(event: &EventEnvelope, rolled_back_by: Option<Uuid>) -> Value {
    let diff = event.event_type.is_state_change().then(|| {
        let change = Change {
            before: side(event, "before"),
            after: side(event, "after"),
        };
        json!(change.diff())
    });
    json!({
        "position": event.position,
        "event_id": event.event_id,
        "event_type": event.event_type.as_str(),
        "aggregate_type": event.aggregate_type.as_str(),
        "aggregate_id": event.aggregate_id,
        "asset_id": concerned_asset(event),
        "correlation_id": event.correlation_id,
        "causation_id": event.causation_id,
        "rule_id": event.rule_id,
        "rule_version": event.rule_version,
        "discipline": event.discipline,
        "actor": event.actor,
        "occurred_at": event.occurred_at,
        "payload": event.payload,
        "diff": diff,
        "rolled_back": rolled_back_by.is_some(),
        "rolled_back_by": rolled_back_by,
        "aggregate_version": event.aggregate_version,
        "schema_version": event.schema_version,
    })
}

/// The live-feed message kind of an event type (SPEC §9): per batch `STARTED →
/// RULE_START → ACTION → PROGRESS → RULE_COMPLETE → COMPLETED`, plus `ERROR` and
/// `ROLLED_BACK`.
pub fn message_kind(event_type: EventType) -> &'static str {
    match event_type {
        EventType::BatchStarted => "STARTED",
        EventType::RuleExecutionStarted => "RULE_START",
        EventType::BatchProgress => "PROGRESS",
        EventType::RuleExecutionCompleted => "RULE_COMPLETE",
        EventType::BatchCompleted => "COMPLETED",
        EventType::RuleError | EventType::BatchFailed => "ERROR",
        EventType::BatchRolledBack => "ROLLED_BACK",
        _ => "ACTION",
    }
}

/// Positions of a JSON array of events or messages.
pub fn positions(items: &Value) -> Vec<i64> {
    items
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item["position"].as_i64())
        .collect()
}
