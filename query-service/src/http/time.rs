//! Time query parameters (`from`, `to`, `as_of`): RFC 3339 instants the read models
//! can be asked about.

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use serde::{Deserialize, Deserializer};

/// The earliest instant a Postgres `timestamptz` holds: midnight UTC of 4714-11-24 BC
/// (Julian day 0), year -4713 in the astronomical numbering RFC 3339 and chrono use.
/// Postgres refuses an earlier bound value as out of range, which would be a 500. The
/// latest instant it holds (294276 AD) lies beyond chrono's last year (262142), so a
/// time that parses at all is never too late.
const EARLIEST: DateTime<Utc> = match NaiveDate::from_ymd_opt(-4713, 11, 24) {
    Some(day) => day.and_time(NaiveTime::MIN).and_utc(),
    // Evaluated at compile time: the date is in chrono's range.
    None => panic!("4714-11-24 BC is a date chrono holds"),
};

/// Deserialize an optional time parameter (`#[serde(default, deserialize_with = ...)]`)
/// that bounds from above (`to`, `as_of`: at or before), refusing one Postgres cannot
/// hold as a time that does not parse is refused: the query string's 400 problem,
/// naming the parameter. Postgres holds microseconds, so digits below one are dropped:
/// an event at or before `…:01.0000019` is one at or before `…:01.000001`.
pub fn storable<'de, D>(deserializer: D) -> Result<Option<DateTime<Utc>>, D::Error>
where
    D: Deserializer<'de>,
{
    held(parsed(Option::<String>::deserialize(deserializer)?)?, false)
}

/// As [`storable`], for a time that bounds from below (`from`: at or after): digits
/// below a microsecond round up, as an event at or after `…:01.0000011` is one at or
/// after `…:01.000002`. Rounding the other way let an event a nanosecond before the
/// bound in, or not, by where it lay in the time index.
pub fn storable_from<'de, D>(deserializer: D) -> Result<Option<DateTime<Utc>>, D::Error>
where
    D: Deserializer<'de>,
{
    held(parsed(Option::<String>::deserialize(deserializer)?)?, true)
}

/// A time as chrono reads one (RFC 3339, and the same with a space for the `T` or an
/// offset without its colon), or an error that says what a time looks like: before,
/// `2026-11-30` was refused as "premature end of input".
fn parsed<E: serde::de::Error>(text: Option<String>) -> Result<Option<DateTime<Utc>>, E> {
    text.map(|text| {
        text.parse::<DateTime<Utc>>().map_err(|error| {
            // `+01:00` sent as is arrives as ` 01:00`: a query string reads `+` as a space.
            let plus = match text.trim_end().rsplit_once(' ') {
                Some((_, offset))
                    if (offset.len() == 5 && offset.as_bytes()[2] == b':')
                        || (offset.len() == 4 && offset.bytes().all(|b| b.is_ascii_digit())) =>
                {
                    " (a `+` in a query string must be sent as `%2B`)"
                }
                _ => "",
            };
            E::custom(format!(
                "`{text}` is no time ({error}){plus}: give a date, a time and an offset \
                 (RFC 3339), e.g. `2026-11-30T08:00:00Z` or `2026-11-30T09:00:00+01:00`"
            ))
        })
    })
    .transpose()
}

fn held<E: serde::de::Error>(
    time: Option<DateTime<Utc>>,
    round_up: bool,
) -> Result<Option<DateTime<Utc>>, E> {
    let Some(time) = time else { return Ok(None) };
    if time < EARLIEST {
        return Err(E::custom(format!(
            "{} is before {} (4714-11-24 BC), the earliest time the read models hold",
            time.to_rfc3339(),
            EARLIEST.to_rfc3339()
        )));
    }
    let below = i64::from(time.timestamp_subsec_nanos() % 1_000);
    let floor = time - chrono::Duration::nanoseconds(below);
    Ok(Some(if round_up && below > 0 {
        floor + chrono::Duration::microseconds(1)
    } else {
        floor
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    struct Params {
        #[serde(default, deserialize_with = "storable")]
        at: Option<DateTime<Utc>>,
    }

    fn parse(at: &str) -> Result<Option<DateTime<Utc>>, serde_json::Error> {
        serde_json::from_value::<Params>(json!({ "at": at })).map(|params| params.at)
    }

    #[test]
    fn digits_below_a_microsecond_round_down_for_an_upper_bound_and_up_for_a_lower_one() {
        #[derive(Debug, Deserialize)]
        struct Bounds {
            #[serde(deserialize_with = "storable_from")]
            from: Option<DateTime<Utc>>,
            #[serde(deserialize_with = "storable")]
            to: Option<DateTime<Utc>>,
        }
        let at = |text: &str| text.parse::<DateTime<Utc>>().ok();
        for (given, from, to) in [
            (
                "2026-01-01T00:00:01.000001999Z",
                "2026-01-01T00:00:01.000002Z",
                "2026-01-01T00:00:01.000001Z",
            ),
            (
                "2026-01-01T00:00:01.000001Z",
                "2026-01-01T00:00:01.000001Z",
                "2026-01-01T00:00:01.000001Z",
            ),
            (
                "2026-01-01T23:59:59.999999001Z",
                "2026-01-02T00:00:00Z",
                "2026-01-01T23:59:59.999999Z",
            ),
        ] {
            let bounds: Bounds =
                serde_json::from_value(json!({"from": given, "to": given})).unwrap();
            assert_eq!((bounds.from, bounds.to), (at(from), at(to)), "{given}");
        }
    }

    #[test]
    fn a_time_from_the_earliest_postgres_holds_on_passes_and_an_earlier_one_is_refused() {
        assert_eq!(parse("-4713-11-24T00:00:00Z").ok(), Some(Some(EARLIEST)));
        assert!(parse("2026-01-01T00:00:00Z").is_ok_and(|at| at.is_some()));
        for too_early in [
            "-4713-11-23T23:59:59.999999Z",
            "-4713-11-24T00:00:00+00:01",
            "-262143-01-01T00:00:00Z",
        ] {
            let refusal = parse(too_early).err().map(|error| error.to_string());
            assert!(
                refusal.is_some_and(|refusal| refusal.contains("earliest")),
                "{too_early}"
            );
        }
        let absent = serde_json::from_value::<Params>(json!({}));
        assert!(absent.is_ok_and(|params| params.at.is_none()));
    }

    #[test]
    fn a_time_without_an_offset_or_a_clock_is_refused_with_an_example() {
        // A space for the `T`, an offset without its colon: as chrono reads them.
        for lenient in ["2026-11-30 08:00:00Z", "2026-11-30T09:00:00+0100"] {
            assert!(parse(lenient).is_ok_and(|at| at.is_some()), "{lenient}");
        }
        for (given, hint) in [
            ("2026-11-30", "premature end of input"),
            ("2026-11-30T07:34:59.169096", "premature end of input"),
            ("yesterday", "input contains invalid characters"),
        ] {
            let refusal = parse(given).err().map(|error| error.to_string());
            assert!(
                refusal
                    .as_deref()
                    .is_some_and(|refusal| refusal.starts_with(&format!(
                        "`{given}` is no time ({hint}): give a date, a time and an offset"
                    )) && refusal.contains("2026-11-30T08:00:00Z")),
                "{refusal:?}"
            );
        }
        // An unencoded `+` of the offset arrives as a space; a space for the `T` of a
        // time without offset gets no such hint.
        let refusal = parse("2026-11-30 08:52:00")
            .err()
            .map(|error| error.to_string());
        assert!(
            refusal
                .as_deref()
                .is_some_and(|refusal| !refusal.contains("%2B")),
            "{refusal:?}"
        );
        let refusal = parse("2026-11-30T08:52:00 01:00")
            .err()
            .map(|error| error.to_string());
        assert!(
            refusal
                .as_deref()
                .is_some_and(|refusal| refusal.contains("must be sent as `%2B`")),
            "{refusal:?}"
        );
    }
}
