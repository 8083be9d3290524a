//! Which layer a sentence lands in, by role and by the user's replies.

use super::{batch, first_batch, msg, summarize};
use crate::tool::Role;

#[test]
fn user_facts_land_in_user_confirmed_only() {
    let out = summarize(&batch(first_batch(), None));
    assert!(
        out.user_confirmed.contains("XKH448812"),
        "{}",
        out.user_confirmed
    );
    assert!(
        out.user_confirmed.contains("Blue Cross Silver PPO 2500"),
        "{}",
        out.user_confirmed
    );
    assert!(
        !out.llm_inferred.contains("XKH448812"),
        "{}",
        out.llm_inferred
    );
    assert!(
        out.user_confirmed.lines().all(|l| l.starts_with("- ")),
        "{}",
        out.user_confirmed
    );
}

#[test]
fn assistant_guesses_land_in_llm_inferred_only() {
    let out = summarize(&batch(first_batch(), None));
    assert!(
        out.llm_inferred.contains("met your deductible"),
        "{}",
        out.llm_inferred
    );
    assert!(
        !out.user_confirmed.contains("deductible"),
        "{}",
        out.user_confirmed
    );
    // A plain statement from the assistant is not a guess about the user.
    assert!(
        !out.llm_inferred.contains("Let me check"),
        "{}",
        out.llm_inferred
    );
}

#[test]
fn system_and_tool_messages_never_produce_user_facts() {
    let messages = vec![
        msg(
            "s1",
            Role::System,
            "My name is Claims Bot and my member ID is SYS-0001. I have a PPO plan.",
        ),
        msg(
            "t1",
            Role::Tool,
            "Member ABC12345 is enrolled in Aetna Gold HMO with a $3,000 deductible.",
        ),
    ];
    let out = summarize(&batch(messages, None));
    assert_eq!(out.user_confirmed, "");
    assert_eq!(out.llm_inferred, "");
}

#[test]
fn a_confirmed_inference_moves_to_user_confirmed() {
    let messages = vec![
        msg(
            "a1",
            Role::Assistant,
            "It sounds like your plan is an HMO, is that right?",
        ),
        msg("u1", Role::User, "Yes, that's right."),
    ];
    let out = summarize(&batch(messages, None));
    assert!(
        out.user_confirmed.contains("My plan is an HMO"),
        "{}",
        out.user_confirmed
    );
    assert!(!out.llm_inferred.contains("HMO"), "{}", out.llm_inferred);
}

#[test]
fn a_confirmation_in_the_next_batch_still_counts() {
    let one = summarize(&batch(
        vec![msg(
            "a1",
            Role::Assistant,
            "You probably have an HSA-eligible high deductible plan.",
        )],
        None,
    ));
    assert!(
        one.llm_inferred.contains("HSA-eligible"),
        "{}",
        one.llm_inferred
    );
    let two = summarize(&batch(vec![msg("u1", Role::User, "Yep.")], Some(&one)));
    assert!(
        two.user_confirmed
            .contains("I have an HSA-eligible high deductible plan"),
        "{}",
        two.user_confirmed
    );
    assert_eq!(two.llm_inferred, "");
}

#[test]
fn a_denied_inference_is_dropped() {
    let messages = vec![
        msg("a1", Role::Assistant, "It sounds like your plan is an HMO."),
        msg("u1", Role::User, "No, it's a PPO."),
    ];
    let out = summarize(&batch(messages, None));
    assert!(!out.llm_inferred.contains("HMO"), "{}", out.llm_inferred);
    assert!(
        !out.user_confirmed.contains("HMO"),
        "{}",
        out.user_confirmed
    );
}

#[test]
fn questions_and_pleasantries_are_not_facts() {
    let messages = vec![
        msg("u1", Role::User, "Thanks!"),
        msg(
            "u2",
            Role::User,
            "How do I find an in-network dermatologist?",
        ),
    ];
    let out = summarize(&batch(messages, None));
    assert_eq!(out.user_confirmed, "");
    assert!(
        out.general_summary.contains("in-network dermatologist"),
        "{}",
        out.general_summary
    );
}

#[test]
fn a_yes_to_an_unrelated_question_confirms_nothing() {
    let messages = vec![
        msg(
            "a1",
            Role::Assistant,
            "You might qualify for a manufacturer savings card. Would you like help filling in the prior authorization form?",
        ),
        msg("u1", Role::User, "Yes please."),
    ];
    let out = summarize(&batch(messages, None));
    assert_eq!(out.user_confirmed, "");
    assert!(
        out.llm_inferred.contains("savings card"),
        "{}",
        out.llm_inferred
    );
}
