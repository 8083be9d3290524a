//! One total budget split into layer limits. The layers may together ask for
//! more than the total: the agent fills user facts first, then inferences,
//! then the summary, each up to its own limit, so room one layer leaves
//! unused goes to the next.

use summarizer_agent::tool::TokenLimits;

/// Tokens kept free below the budget: the scorer joins the three layers
/// with line breaks, which it counts too.
const JOIN_MARGIN: u32 = 4;

/// Limits for a memory of at most `budget` tokens in total.
pub fn limits_for(budget: u32) -> TokenLimits {
    let share = |percent: u32| budget.saturating_mul(percent) / 100;
    TokenLimits {
        user_confirmed: share(55),
        llm_inferred: share(10),
        general_summary: share(55),
        total: budget.saturating_sub(JOIN_MARGIN),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_total_leaves_room_for_the_line_breaks_between_layers() {
        let limits = limits_for(2000);
        assert_eq!(limits.total, 1996);
        assert!(limits.user_confirmed <= limits.total);
    }
}
