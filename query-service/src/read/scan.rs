//! How a page of events is read fast whatever the filters: which index drives the scan
//! in position order, one branch per event type, and position ranges from times.
//!
//! Left to itself the planner reads a filtered page by scanning the whole log in
//! position order and testing each event, because it assumes matches are spread evenly
//! and a page's worth turns up early. Events come in batches, so matches cluster: a
//! rule's events start deep into the log, a discipline has no event of some type at
//! all, a time window sits at the end. Then that scan reads most of the log for one
//! page. A page here is read instead through the `(column, position)` index of its most
//! selective equality filter (ordering by that column first makes the planner follow
//! it), with one branch per event type on a `(column, event_type, position)` index, and
//! within the position ranges a time window can occupy ([`super::time_index`]).

use super::events::{AssetMatch, EventFilter};
use super::time_index::Ranges;
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

/// The equality filter whose index drives the scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Asset,
    /// The asset or the aggregate (`asset_id = $1 or aggregate_id = $1`): two indexes,
    /// which the planner combines on its own; few events either way.
    AssetOrAggregate,
    Aggregate,
    Correlation,
    Rule,
    Actor,
    Discipline,
}

impl Driver {
    /// The most selective equality filter present, by how many events one value
    /// typically has: an asset or aggregate has a handful, a batch up to its size, a
    /// rule every batch it ran in, an actor or a discipline a large share of the log.
    pub fn of(filter: &EventFilter) -> Option<Driver> {
        match filter.asset {
            Some(AssetMatch::Concerns(_)) => return Some(Driver::Asset),
            Some(AssetMatch::ConcernsOrIs(_)) => return Some(Driver::AssetOrAggregate),
            None => {}
        }
        if filter.aggregate_id.is_some() {
            Some(Driver::Aggregate)
        } else if filter.correlation_id.is_some() {
            Some(Driver::Correlation)
        } else if filter.rule_id.is_some() {
            Some(Driver::Rule)
        } else if filter.actor.is_some() {
            Some(Driver::Actor)
        } else if filter.discipline.is_some() {
            Some(Driver::Discipline)
        } else {
            None
        }
    }

    /// `order by` of a branch: the driver's index order, which within one value of the
    /// driver (and one event type) is position order.
    fn order(self, typed: bool) -> &'static str {
        match (self, typed) {
            (Driver::Asset, _) => "asset_id, position",
            (Driver::AssetOrAggregate, _) => "position",
            (Driver::Aggregate, _) => "aggregate_id, position",
            (Driver::Correlation, false) => "correlation_id, position",
            (Driver::Correlation, true) => "correlation_id, event_type, position",
            (Driver::Rule, false) => "rule_id, position",
            (Driver::Rule, true) => "rule_id, event_type, position",
            (Driver::Actor, false) => "actor, position",
            (Driver::Actor, true) => "actor, event_type, position",
            (Driver::Discipline, false) => "discipline, position",
            (Driver::Discipline, true) => "discipline, event_type, position",
        }
    }
}

/// `order by` of a branch with this driver, typed (one event type) or not.
pub fn order(driver: Option<Driver>, typed: bool) -> &'static str {
    match (driver, typed) {
        (Some(driver), typed) => driver.order(typed),
        (None, true) => "event_type, position",
        (None, false) => "position",
    }
}

/// A value of a column that leads the index a branch reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Uuid(Uuid),
    Text(String),
}

fn push_key(query: &mut QueryBuilder<'_, Postgres>, key: &Key) {
    match key {
        Key::Uuid(id) => query.push_bind(*id),
        Key::Text(text) => query.push_bind(text.clone()),
    };
}

/// Whether a typed branch with this driver reads a `(.., event_type, position)` index, so
/// that the event type is one of the index's leading keys.
pub fn typed_index(driver: Option<Driver>) -> bool {
    matches!(
        driver,
        None | Some(Driver::Correlation | Driver::Rule | Driver::Actor | Driver::Discipline)
    )
}

/// `and ...` matching the leading `keys` of the branch's index, written so that the
/// planner reads that index and the index scan ends where the branch's rows end: every
/// key but the last as `column = value`; the last as `column >= value and column <=
/// value and column = any(array[value])`.
///
/// The range is for the planner. With only equalities it takes every key as fixed, so
/// `order by column, position` is to it just `order by position`, which the primary key
/// (or `(position, occurred_at)`, with a time window) gives as well; for a frequent
/// value it then walks the log in position order and tests each event, and when those
/// events sit late in the log it reads most of the log for one page (1.7 s for the first
/// page of a 130,000-event batch at position 830,000 of a million; 0.3 ms through the
/// batch's index). With the range, only the branch's index gives its order without a
/// sort. The statements are planned once for any values (the query service runs with
/// generic plans), so this choice cannot depend on how frequent a value is.
///
/// The `= any` is for the index scan. After a range on a column, Postgres 15 does not
/// end a scan on a later column's bound, so the branch's `position <= upto` (a time
/// window) or a pair that occurs rarely would read on through the rest of the value's
/// entries: an actor whose events all lie after the window read its 100,000 entries
/// (386 index pages, 11 ms) to return nothing. An array equality on the same column
/// makes the scan treat the column as fixed, and the position bounds end it: 3 pages,
/// 0.09 ms for the same page.
pub fn bound(query: &mut QueryBuilder<'_, Postgres>, keys: &[(&str, Key)]) {
    let Some(((last_column, last), leading)) = keys.split_last() else {
        return;
    };
    for (column, key) in leading {
        query.push(format!(" and {column} = "));
        push_key(query, key);
    }
    query.push(format!(" and {last_column} >= "));
    push_key(query, last);
    query.push(format!(" and {last_column} <= "));
    push_key(query, last);
    query.push(format!(" and {last_column} = any("));
    match last {
        Key::Uuid(id) => query.push_bind(vec![*id]),
        Key::Text(text) => query.push_bind(vec![text.clone()]),
    };
    query.push(")");
}

/// A range of positions to read: above `above`, and at or below `upto` if set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub above: i64,
    pub upto: Option<i64>,
}

/// The position ranges to read for a page after `after`: everything above it, or, for a
/// time window, the part of the summarised log the window can occupy plus everything
/// not yet summarised.
pub fn segments(after: i64, ranges: Option<Ranges>) -> Vec<Segment> {
    let Some(ranges) = ranges else {
        return vec![Segment {
            above: after,
            upto: None,
        }];
    };
    let above = after.max(ranges.above);
    let Some(upto) = ranges.upto else {
        return vec![Segment { above, upto: None }];
    };
    let mut segments = Vec::with_capacity(2);
    if upto > above {
        segments.push(Segment {
            above,
            upto: Some(upto),
        });
    }
    segments.push(Segment {
        above: above.max(ranges.covered),
        upto: None,
    });
    segments
}

/// The event types to read one branch each for: the filter's, without repeats; one
/// untyped branch (`None`) when it has none.
pub fn type_branches(filter: &EventFilter) -> Vec<Option<&str>> {
    if filter.event_types.is_empty() {
        return vec![None];
    }
    let mut types: Vec<&str> = filter.event_types.iter().map(String::as_str).collect();
    types.sort_unstable();
    types.dedup();
    types.into_iter().map(Some).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_asset_drives_before_a_batch_a_batch_before_a_rule_and_so_on() {
        use Driver::*;
        let id = Uuid::now_v7();
        let all = EventFilter {
            asset: Some(AssetMatch::Concerns(id)),
            aggregate_id: Some(id),
            correlation_id: Some(id),
            rule_id: Some(id),
            actor: Some("alice".into()),
            discipline: Some("ELECTRICAL".into()),
            ..EventFilter::everything()
        };
        assert_eq!(Driver::of(&all), Some(Asset));
        let f = EventFilter { asset: None, ..all };
        assert_eq!(Driver::of(&f), Some(Aggregate));
        let f = EventFilter {
            aggregate_id: None,
            ..f
        };
        assert_eq!(Driver::of(&f), Some(Correlation));
        let f = EventFilter {
            correlation_id: None,
            ..f
        };
        assert_eq!(Driver::of(&f), Some(Rule));
        let f = EventFilter { rule_id: None, ..f };
        assert_eq!(Driver::of(&f), Some(Actor));
        let f = EventFilter { actor: None, ..f };
        assert_eq!(Driver::of(&f), Some(Discipline));
        let f = EventFilter {
            discipline: None,
            ..f
        };
        assert_eq!(Driver::of(&f), None);
        let history = EventFilter {
            asset: Some(AssetMatch::ConcernsOrIs(id)),
            ..EventFilter::everything()
        };
        assert_eq!(Driver::of(&history), Some(AssetOrAggregate));
    }

    #[test]
    fn a_branch_is_bounded_by_its_index_keys_the_last_as_a_range_and_an_array_match() {
        let mut query = QueryBuilder::<Postgres>::new("where true");
        let keys = [
            ("correlation_id", Key::Uuid(Uuid::nil())),
            ("event_type", Key::Text("ASSET_UPDATED".into())),
        ];
        bound(&mut query, &keys);
        assert_eq!(
            query.sql(),
            "where true and correlation_id = $1 and event_type >= $2 and event_type <= $3 \
             and event_type = any($4)"
        );
        let mut query = QueryBuilder::<Postgres>::new("where true");
        bound(&mut query, &keys[..1]);
        assert_eq!(
            query.sql(),
            "where true and correlation_id >= $1 and correlation_id <= $2 \
             and correlation_id = any($3)"
        );
        let mut query = QueryBuilder::<Postgres>::new("where true");
        bound(&mut query, &[]);
        assert_eq!(query.sql(), "where true");
        assert!(typed_index(None) && typed_index(Some(Driver::Actor)));
        assert!(!typed_index(Some(Driver::Asset)) && !typed_index(Some(Driver::AssetOrAggregate)));
    }

    #[test]
    fn a_typed_branch_follows_the_composite_index_where_there_is_one() {
        assert_eq!(
            order(Some(Driver::Discipline), true),
            "discipline, event_type, position"
        );
        assert_eq!(
            order(Some(Driver::Discipline), false),
            "discipline, position"
        );
        assert_eq!(order(Some(Driver::Asset), true), "asset_id, position");
        assert_eq!(order(Some(Driver::AssetOrAggregate), true), "position");
        assert_eq!(order(None, true), "event_type, position");
        assert_eq!(order(None, false), "position");
    }

    #[test]
    fn without_a_time_window_a_page_reads_everything_after_its_keyset() {
        assert_eq!(
            segments(42, None),
            vec![Segment {
                above: 42,
                upto: None
            }]
        );
    }

    #[test]
    fn a_window_reads_its_summarised_range_and_the_unsummarised_rest() {
        let ranges = Ranges {
            above: 1_000,
            upto: Some(5_000),
            covered: 9_000,
        };
        assert_eq!(
            segments(0, Some(ranges)),
            vec![
                Segment {
                    above: 1_000,
                    upto: Some(5_000)
                },
                Segment {
                    above: 9_000,
                    upto: None
                }
            ]
        );
        // A keyset past the window's summarised range leaves only the rest.
        assert_eq!(
            segments(6_000, Some(ranges)),
            vec![Segment {
                above: 9_000,
                upto: None
            }]
        );
        // A keyset past everything summarised reads on from the keyset.
        assert_eq!(
            segments(9_500, Some(ranges)),
            vec![Segment {
                above: 9_500,
                upto: None
            }]
        );
        // Only a start: one range from the start on.
        let from_only = Ranges {
            upto: None,
            ..ranges
        };
        assert_eq!(
            segments(0, Some(from_only)),
            vec![Segment {
                above: 1_000,
                upto: None
            }]
        );
    }

    #[test]
    fn each_event_type_is_one_branch_and_no_type_is_one_untyped_branch() {
        let filter = EventFilter {
            event_types: vec!["B".into(), "A".into(), "B".into()],
            ..EventFilter::everything()
        };
        assert_eq!(type_branches(&filter), vec![Some("A"), Some("B")]);
        assert_eq!(type_branches(&EventFilter::everything()), vec![None]);
    }
}
