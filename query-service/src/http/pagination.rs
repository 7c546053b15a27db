//! Keyset pagination by event position, shared by the timeline and asset histories.

use crate::http::error::{invalid_query, ApiError};

/// Page size when the client gives none.
pub const DEFAULT_LIMIT: u32 = 100;
/// Largest page a client may ask for: enough for a UI table, small enough that one
/// response stays a few megabytes and one query a few milliseconds.
pub const MAX_LIMIT: u32 = 1000;

/// A validated page request: rows with a position above `after`, at most `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub after: i64,
    pub limit: u32,
}

impl PageRequest {
    /// Validate the `after` and `limit` parameters.
    pub fn new(after: Option<i64>, limit: Option<u32>) -> Result<Self, ApiError> {
        let after = after.unwrap_or(0);
        if after < 0 {
            return Err(invalid_query("`after` must be a position, 0 or more"));
        }
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(invalid_query(format!(
                "`limit` must be between 1 and {MAX_LIMIT}, got {limit}"
            )));
        }
        Ok(Self { after, limit })
    }

    /// How many rows to fetch: one more than the page, to learn whether another follows
    /// without a count query.
    pub fn fetch_limit(self) -> i64 {
        i64::from(self.limit) + 1
    }

    /// Trim the extra row and say where the next page starts (`None` on the last page).
    pub fn finish<T>(
        self,
        mut rows: Vec<T>,
        position: impl Fn(&T) -> i64,
    ) -> (Vec<T>, Option<i64>) {
        let page_size = self.limit as usize;
        if rows.len() > page_size {
            rows.truncate(page_size);
            let next_after = rows.last().map(&position);
            (rows, next_after)
        } else {
            (rows, None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_page_points_at_its_last_position_and_a_short_one_at_nothing() {
        let request = PageRequest::new(None, Some(2)).unwrap();
        assert_eq!(request.fetch_limit(), 3);
        assert_eq!(request.finish(vec![4, 7, 9], |p| *p), (vec![4, 7], Some(7)));
        assert_eq!(request.finish(vec![4, 7], |p| *p), (vec![4, 7], None));
    }

    #[test]
    fn limits_outside_one_to_a_thousand_are_refused() {
        assert!(PageRequest::new(None, Some(0)).is_err());
        assert!(PageRequest::new(None, Some(1001)).is_err());
        assert!(PageRequest::new(Some(-1), None).is_err());
        assert_eq!(
            PageRequest::new(None, None).unwrap(),
            PageRequest {
                after: 0,
                limit: 100
            }
        );
    }
}
