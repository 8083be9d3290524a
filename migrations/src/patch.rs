//! Changing a function body an earlier migration created: every anchor must
//! occur exactly once in the original, and each is replaced, in order. A
//! migration so written says only what it changes, and fails (rather than
//! writing a half-changed function) if the original is not the one it knows.

use sea_orm_migration::prelude::DbErr;

/// `original` with each `(anchor, with)` replaced; `what` names the original
/// in the error.
pub(crate) fn at_anchors(
    original: &str,
    what: &str,
    anchors: &[(&str, String)],
) -> Result<String, DbErr> {
    let mut sql = original.to_owned();
    for (anchor, with) in anchors {
        if original.matches(anchor).count() != 1 {
            return Err(DbErr::Custom(format!(
                "{what} has not exactly one {anchor:?}"
            )));
        }
        sql = sql.replacen(anchor, with, 1);
    }
    Ok(sql)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_anchor_must_be_there_once() {
        let changed = at_anchors("a b c", "it", &[("b", "B".into()), ("c", "C".into())]);
        assert_eq!(changed.ok().as_deref(), Some("a B C"));
        assert!(at_anchors("a b b", "it", &[("b", "B".into())]).is_err());
        assert!(at_anchors("a", "it", &[("b", "B".into())]).is_err());
    }
}
