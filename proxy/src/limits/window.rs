//! The time a limit counts over: a calendar period aligned in a time zone
//! (hourly, daily, weekly from Monday, monthly from the 1st; DST moves the
//! boundaries with local midnight), or a rolling window kept as fixed slots
//! of its length, the previous slot weighted in (see
//! [`CounterKey::previous_weight_ppm`](super::store::CounterKey::previous_weight_ppm)).
//! Knows nothing of stores or requests.

use std::str::FromStr;
use std::time::Duration;

use chrono::{
    DateTime, Datelike, Duration as Span, LocalResult, NaiveDate, NaiveDateTime, TimeZone,
    Timelike, Utc,
};
use chrono_tz::Tz;
use sluice_crds::snapshot::{Period, Window};

/// A limit's window, ready to compute bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// A calendar period in a zone.
    Calendar(Period, Tz),
    /// Fixed slots of this many milliseconds, weighted as a rolling window.
    Rolling(i64),
}

impl Clock {
    /// From the compiled window (the zone was checked at compile time; an
    /// unknown one falls back to UTC).
    pub fn new(window: &Window) -> Self {
        match window {
            Window::Calendar { period, time_zone } => {
                Self::Calendar(*period, Tz::from_str(time_zone).unwrap_or(Tz::UTC))
            }
            Window::Rolling(length) => Self::Rolling(millis(*length).max(1)),
        }
    }

    /// Whether the previous window is weighted in.
    pub fn sliding(&self) -> bool {
        matches!(self, Self::Rolling(_))
    }

    /// `[start, end)` of the window holding `now_ms`, Unix milliseconds.
    pub fn bounds(&self, now_ms: i64) -> (i64, i64) {
        match *self {
            Self::Rolling(length) => {
                let start = now_ms.div_euclid(length) * length;
                (start, start + length)
            }
            Self::Calendar(period, zone) => {
                let now = DateTime::<Utc>::from_timestamp_millis(now_ms)
                    .unwrap_or_default()
                    .with_timezone(&zone)
                    .naive_local();
                let start = period_start(period, now);
                let end = next_start(period, start);
                (local_ms(zone, start), local_ms(zone, end))
            }
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The local time the period holding `now` began.
fn period_start(period: Period, now: NaiveDateTime) -> NaiveDateTime {
    let date = now.date();
    let midnight = |d: NaiveDate| d.and_hms_opt(0, 0, 0).unwrap_or_default();
    match period {
        Period::Hourly => midnight(date) + Span::hours(i64::from(now.hour())),
        Period::Daily => midnight(date),
        Period::Weekly => {
            midnight(date) - Span::days(i64::from(date.weekday().num_days_from_monday()))
        }
        Period::Monthly => midnight(date.with_day(1).unwrap_or(date)),
    }
}

/// The local time the period after the one starting at `start` begins.
fn next_start(period: Period, start: NaiveDateTime) -> NaiveDateTime {
    match period {
        Period::Hourly => start + Span::hours(1),
        Period::Daily => start + Span::days(1),
        Period::Weekly => start + Span::days(7),
        Period::Monthly => {
            let date = start.date();
            let (year, month) = if date.month() == 12 {
                (date.year() + 1, 1)
            } else {
                (date.year(), date.month() + 1)
            };
            NaiveDate::from_ymd_opt(year, month, 1)
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .unwrap_or(start)
        }
    }
}

/// A local wall time as Unix milliseconds. A time that does not exist (the
/// hour skipped when clocks go forward) is the first instant after the gap;
/// one that happens twice (clocks go back) is the first of the two.
fn local_ms(zone: Tz, local: NaiveDateTime) -> i64 {
    match zone.from_local_datetime(&local) {
        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t.timestamp_millis(),
        LocalResult::None => {
            // Walk forward a minute at a time out of the gap (gaps are at
            // most a few hours).
            let mut probe = local;
            for _ in 0..(24 * 60) {
                probe += Span::minutes(1);
                if let LocalResult::Single(t) | LocalResult::Ambiguous(t, _) =
                    zone.from_local_datetime(&probe)
                {
                    return t.timestamp_millis();
                }
            }
            local.and_utc().timestamp_millis()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_millis()
    }

    fn calendar(period: Period, zone: &str) -> Clock {
        Clock::new(&Window::Calendar {
            period,
            time_zone: zone.into(),
        })
    }

    #[test]
    fn monthly_in_paris_starts_at_local_midnight_on_the_first() {
        let clock = calendar(Period::Monthly, "Europe/Paris");
        let (start, end) = clock.bounds(ms("2026-11-25T12:00:00Z"));
        assert_eq!(start, ms("2026-11-01T00:00:00+01:00"));
        assert_eq!(end, ms("2026-12-01T00:00:00+01:00"));
        // December to January crosses the year.
        let (start, end) = clock.bounds(ms("2026-12-31T23:30:00Z"));
        assert_eq!(
            start,
            ms("2027-01-01T00:00:00+01:00"),
            "already January in Paris"
        );
        assert_eq!(end, ms("2027-02-01T00:00:00+01:00"));
    }

    #[test]
    fn daily_windows_follow_dst() {
        let clock = calendar(Period::Daily, "Europe/Paris");
        // 2026-03-29: clocks go from 02:00 to 03:00; the day is 23 hours.
        let (start, end) = clock.bounds(ms("2026-03-29T12:00:00Z"));
        assert_eq!(start, ms("2026-03-29T00:00:00+01:00"));
        assert_eq!(end, ms("2026-03-30T00:00:00+02:00"));
        assert_eq!(end - start, 23 * 3_600_000);
        // 2026-10-25: 25 hours.
        let (start, end) = clock.bounds(ms("2026-10-25T12:00:00Z"));
        assert_eq!(end - start, 25 * 3_600_000);
    }

    #[test]
    fn hourly_skips_the_missing_hour() {
        // America/New_York 2026-03-08: 02:00 local does not exist.
        let clock = calendar(Period::Hourly, "America/New_York");
        let (start, end) = clock.bounds(ms("2026-03-08T06:30:00Z")); // 01:30 EST
        assert_eq!(start, ms("2026-03-08T01:00:00-05:00"));
        assert_eq!(
            end,
            ms("2026-03-08T03:00:00-04:00"),
            "02:00 does not happen"
        );
        assert_eq!(end - start, 3_600_000);
    }

    #[test]
    fn weekly_starts_on_monday_and_half_hour_zones_work() {
        let clock = calendar(Period::Weekly, "UTC");
        let (start, end) = clock.bounds(ms("2026-11-26T10:00:00Z")); // a Thursday
        assert_eq!(start, ms("2026-11-23T00:00:00Z"));
        assert_eq!(end, ms("2026-11-30T00:00:00Z"));
        let clock = calendar(Period::Hourly, "Asia/Kolkata");
        let (start, _) = clock.bounds(ms("2026-11-26T10:10:00Z")); // 15:40 IST
        assert_eq!(start, ms("2026-11-26T15:00:00+05:30"));
    }

    #[test]
    fn rolling_windows_are_fixed_slots() {
        let clock = Clock::new(&Window::Rolling(Duration::from_secs(60)));
        assert!(clock.sliding());
        assert_eq!(clock.bounds(125_000), (120_000, 180_000));
        assert_eq!(clock.bounds(120_000), (120_000, 180_000));
    }
}
