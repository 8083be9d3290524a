//! Protobuf `Timestamp` <-> `chrono::DateTime<Utc>`.

use chrono::{DateTime, TimeZone, Utc};
use prost_types::Timestamp;

/// Converts a UTC time to a protobuf timestamp.
pub fn to_timestamp(t: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        // subsec_nanos is < 2e9, always fits in i32 after the leap-second fold below.
        nanos: i32::try_from(t.timestamp_subsec_nanos() % 1_000_000_000).unwrap_or(0),
    }
}

/// Converts a protobuf timestamp to UTC; `None` when it is out of range.
pub fn from_timestamp(ts: &Timestamp) -> Option<DateTime<Utc>> {
    let nanos = u32::try_from(ts.nanos).ok()?;
    Utc.timestamp_opt(ts.seconds, nanos).single()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_round_trips_with_nanoseconds() {
        let t = Utc.timestamp_opt(1_700_000_000, 123_456_789).single();
        let t = t.expect("valid time");
        assert_eq!(from_timestamp(&to_timestamp(t)), Some(t));
    }

    #[test]
    fn negative_nanos_are_rejected() {
        let ts = Timestamp {
            seconds: 1,
            nanos: -1,
        };
        assert_eq!(from_timestamp(&ts), None);
    }
}
