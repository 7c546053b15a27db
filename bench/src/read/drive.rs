//! A steady stream of small commands at a fixed rate of events: what the lag and
//! WebSocket phases measure under. Four in five commands import a few devices (one
//! batch each), the fifth changes one existing asset (a single-change batch).

use super::plant;
use crate::api;
use crate::latency::Latencies;
use anyhow::Context;
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use uuid::Uuid;

/// How often the driver checks its schedule: fine enough that commands of 50 events at
/// 2,000 events/s (one every 25 ms) leave on time.
const TICK: Duration = Duration::from_millis(5);
/// Commands in flight at once: enough to keep the rate while one waits on the append
/// lock, few enough that a stalled service is not flooded.
const MAX_IN_FLIGHT: usize = 16;
/// Events a single asset change appends: `BATCH_STARTED`, `ASSET_UPDATED`,
/// `BATCH_COMPLETED`.
const CHANGE_EVENTS: u64 = 3;
/// Events an import appends besides its rows.
const IMPORT_OVERHEAD: u64 = 3;
/// Every this many commands, one is a single asset change instead of an import.
const CHANGE_EVERY: u64 = 5;

/// The schedule: how many events are due by a time since the start, at a fixed rate.
/// A backlog (the service was slower than the rate for a while) is capped, so a stall
/// is followed by at most `max_backlog` events at once rather than a burst of
/// everything missed; what the cap drops is counted.
#[derive(Debug, Clone, PartialEq)]
pub struct Pacer {
    rate: f64,
    max_backlog: u64,
    sent: u64,
    dropped: u64,
}

impl Pacer {
    pub fn new(events_per_second: f64, max_backlog: u64) -> Self {
        Self {
            rate: events_per_second.max(0.0),
            max_backlog,
            sent: 0,
            dropped: 0,
        }
    }

    /// Events due by `elapsed` and not sent yet (at most `max_backlog`).
    pub fn due(&mut self, elapsed: Duration) -> u64 {
        let scheduled = (self.rate * elapsed.as_secs_f64()).floor() as u64;
        let owed = scheduled.saturating_sub(self.sent + self.dropped);
        if owed > self.max_backlog {
            self.dropped += owed - self.max_backlog;
            return self.max_backlog;
        }
        owed
    }

    /// `events` left in a command.
    pub fn sent(&mut self, events: u64) {
        self.sent += events;
    }

    /// Events the schedule gave up on because the backlog was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// One command of the stream.
#[derive(Debug, Clone, PartialEq)]
enum Command {
    Import { first: usize, rows: usize },
    Change { asset: Uuid, serial: u64 },
}

impl Command {
    fn events(&self) -> u64 {
        match self {
            Command::Import { rows, .. } => *rows as u64 + IMPORT_OVERHEAD,
            Command::Change { .. } => CHANGE_EVENTS,
        }
    }
}

/// What the stream is made of.
pub struct DriveSettings {
    pub rate: f64,
    pub duration: Duration,
    /// Events per import command (rows + 3).
    pub import_events: u64,
    /// Plant whose devices the imports add (unique per phase, so tags never clash).
    pub plant: usize,
    /// Assets the single changes go to, in turn.
    pub change_targets: Vec<Uuid>,
}

/// What the driver did.
pub struct Driven {
    pub commands: u64,
    /// Events the commands appended (by the commands' known sizes).
    pub events: u64,
    pub elapsed: Duration,
    /// Events the schedule dropped because the service fell behind.
    pub dropped: u64,
    /// Response time of each command.
    pub responses: Latencies,
}

/// Send commands on schedule for `settings.duration`, then wait for the last ones.
pub async fn drive(
    base_url: &str,
    client: &reqwest::Client,
    settings: &DriveSettings,
) -> anyhow::Result<Driven> {
    let rows = settings
        .import_events
        .saturating_sub(IMPORT_OVERHEAD)
        .max(1) as usize;
    let mut pacer = Pacer::new(settings.rate, (settings.rate as u64).max(rows as u64));
    let mut in_flight: JoinSet<anyhow::Result<Duration>> = JoinSet::new();
    let mut responses = Latencies::new();
    let (mut commands, mut events, mut next_device) = (0u64, 0u64, 0usize);
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = Instant::now();
    loop {
        ticker.tick().await;
        while let Some(done) = in_flight.try_join_next() {
            responses.record(done.context("a command task panicked")??);
        }
        let elapsed = started.elapsed();
        if elapsed >= settings.duration {
            break;
        }
        let mut due = pacer.due(elapsed);
        loop {
            let next = if commands % CHANGE_EVERY == CHANGE_EVERY - 1
                && !settings.change_targets.is_empty()
            {
                let target = (commands / CHANGE_EVERY) as usize % settings.change_targets.len();
                Command::Change {
                    asset: settings.change_targets[target],
                    serial: commands,
                }
            } else {
                Command::Import {
                    first: next_device,
                    rows,
                }
            };
            if due < next.events() || in_flight.len() >= MAX_IN_FLIGHT {
                break;
            }
            due -= next.events();
            pacer.sent(next.events());
            events += next.events();
            commands += 1;
            if let Command::Import { rows, .. } = next {
                next_device += rows;
            }
            in_flight.spawn(send(
                client.clone(),
                base_url.to_owned(),
                settings.plant,
                next,
            ));
        }
    }
    while let Some(done) = in_flight.join_next().await {
        responses.record(done.context("a command task panicked")??);
    }
    Ok(Driven {
        commands,
        events,
        elapsed: started.elapsed(),
        dropped: pacer.dropped(),
        responses,
    })
}

/// Send one command; its response time.
async fn send(
    client: reqwest::Client,
    base_url: String,
    plant: usize,
    command: Command,
) -> anyhow::Result<Duration> {
    let answer = match command {
        Command::Import { first, rows } => {
            let csv = plant::device_csv(plant, first, rows);
            api::import_csv(&client, &format!("{base_url}/assets/import"), csv).await?
        }
        Command::Change { asset, serial } => {
            // Unique per phase and command: a value the asset already has would be no
            // change at all (no event to measure).
            let body = json!({"properties": {"inspection": format!("{plant}-{serial}")}});
            api::patch_json(
                &client,
                &format!("{base_url}/assets/{asset}"),
                &body,
                "PATCH /assets/{id}",
            )
            .await?
        }
    };
    Ok(answer.elapsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    #[test]
    fn events_fall_due_at_the_rate() {
        let mut pacer = Pacer::new(2_000.0, 10_000);
        assert_eq!(pacer.due(ms(0)), 0);
        assert_eq!(pacer.due(ms(24)), 48);
        assert_eq!(pacer.due(ms(25)), 50);
        pacer.sent(50);
        assert_eq!(pacer.due(ms(25)), 0);
        assert_eq!(pacer.due(ms(49)), 48);
        assert_eq!(pacer.due(ms(1_000)), 1_950);
        pacer.sent(1_950);
        assert_eq!(pacer.due(ms(1_000)), 0);
        assert_eq!(pacer.dropped(), 0);
    }

    #[test]
    fn sending_ahead_of_the_schedule_owes_nothing_until_it_catches_up() {
        let mut pacer = Pacer::new(100.0, 1_000);
        pacer.sent(50);
        assert_eq!(pacer.due(ms(100)), 0);
        assert_eq!(pacer.due(ms(500)), 0);
        assert_eq!(pacer.due(ms(600)), 10);
    }

    #[test]
    fn a_long_stall_is_followed_by_at_most_the_backlog_cap() {
        let mut pacer = Pacer::new(2_000.0, 2_000);
        // Nothing could be sent for ten seconds: 20,000 events were due.
        assert_eq!(pacer.due(ms(10_000)), 2_000);
        assert_eq!(pacer.dropped(), 18_000);
        // Asking again without sending does not drop more.
        assert_eq!(pacer.due(ms(10_000)), 2_000);
        assert_eq!(pacer.dropped(), 18_000);
        pacer.sent(2_000);
        assert_eq!(pacer.due(ms(10_000)), 0);
        assert_eq!(pacer.due(ms(10_500)), 1_000);
    }

    #[test]
    fn over_a_whole_run_sent_and_dropped_add_up_to_the_schedule() {
        let mut pacer = Pacer::new(2_000.0, 500);
        let mut sent = 0;
        for tick in 1..=2_000u64 {
            let due = pacer.due(ms(tick * 5));
            // A service that takes 50-event commands only every other tick.
            if tick % 2 == 0 {
                let commands = due / 50;
                pacer.sent(commands * 50);
                sent += commands * 50;
            }
        }
        let scheduled = 2_000 * 10;
        assert!(sent + pacer.dropped() <= scheduled);
        assert!(scheduled - (sent + pacer.dropped()) < 500);
        assert!(sent >= scheduled * 9 / 10, "{sent}");
    }

    #[test]
    fn a_zero_rate_never_sends() {
        let mut pacer = Pacer::new(0.0, 100);
        assert_eq!(pacer.due(ms(60_000)), 0);
    }
}
