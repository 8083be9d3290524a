//! Memory across batches: continuity, merging, budgets, determinism, fallback.

use super::{batch, first_batch, msg, state, summarize};
use crate::{
    backend::{
        BackendError,
        offline::{OfflineBackend, count_tokens},
    },
    tool::{PriorMemory, Role, SummarizeInput, TokenLimits},
};

#[test]
fn a_fact_from_the_first_batch_survives_three_batches() {
    let one = summarize(&batch(first_batch(), None));
    let two = summarize(&batch(
        vec![
            msg(
                "u2",
                Role::User,
                "I take Ozempic 1 mg weekly and my pharmacy is CVS on Main Street.",
            ),
            msg(
                "a2",
                Role::Assistant,
                "Ozempic is usually a tier 3 drug on most formularies.",
            ),
        ],
        Some(&one),
    ));
    let three = summarize(&batch(
        vec![
            msg(
                "u3",
                Role::User,
                "My claim CLM-2024-0091 for the MRI in March was denied.",
            ),
            msg(
                "a3",
                Role::Assistant,
                "Imaging denials often need a prior authorization appeal.",
            ),
        ],
        Some(&two),
    ));
    for fact in ["XKH448812", "Ozempic 1 mg", "CLM-2024-0091"] {
        assert!(
            three.user_confirmed.contains(fact),
            "{fact} missing: {}",
            three.user_confirmed
        );
    }
    assert!(
        three.general_summary.contains("Batch 1:"),
        "{}",
        three.general_summary
    );
    assert!(
        three.general_summary.contains("Batch 3:"),
        "{}",
        three.general_summary
    );
    // Provenance: the member id item still names the message it came from.
    let items = state(&three)["items"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let member = items
        .iter()
        .find(|i| i["text"].as_str().is_some_and(|t| t.contains("XKH448812")));
    assert_eq!(
        member.map(|i| i["source_ids"].clone()),
        Some(serde_json::json!(["u1"]))
    );
}

#[test]
fn a_fact_repeated_in_a_later_batch_is_kept_once() {
    let one = summarize(&batch(first_batch(), None));
    let two = summarize(&batch(
        vec![msg("u2", Role::User, "Again, my member ID is XKH448812.")],
        Some(&one),
    ));
    assert_eq!(
        two.user_confirmed.matches("XKH448812").count(),
        1,
        "{}",
        two.user_confirmed
    );
}

#[test]
fn every_layer_stays_within_its_limit_whatever_the_input() {
    let mut messages = Vec::new();
    for n in 0..60 {
        messages.push(msg(
            &format!("u{n}"),
            Role::User,
            &format!("My claim CLM-{n:04} from Dr. Patel at St. Mary's Hospital was billed at ${n},250 and my copay was ${n}0 under my Cigna Open Access Plus plan."),
        ));
        messages.push(msg(
            &format!("a{n}"),
            Role::Assistant,
            &format!("It sounds like claim CLM-{n:04} was probably processed out of network, so you may owe more than ${n}0."),
        ));
    }
    for limit in [0u32, 1, 5, 20, 64] {
        let limits = TokenLimits {
            user_confirmed: limit,
            llm_inferred: limit,
            general_summary: limit,
            total: limit * 2,
        };
        let input = SummarizeInput {
            limits,
            ..batch(messages.clone(), None)
        };
        let out = summarize(&input);
        for (name, text, reported) in [
            (
                "user_confirmed",
                &out.user_confirmed,
                out.token_counts.user_confirmed,
            ),
            (
                "llm_inferred",
                &out.llm_inferred,
                out.token_counts.llm_inferred,
            ),
            (
                "general_summary",
                &out.general_summary,
                out.token_counts.general_summary,
            ),
        ] {
            assert!(count_tokens(text) <= limit, "{name} over {limit}: {text}");
            assert_eq!(count_tokens(text), reported, "{name} count misreported");
        }
        if limit >= 20 {
            assert!(
                !out.user_confirmed.is_empty(),
                "a 20-token budget should hold something"
            );
        }
    }
}

#[test]
fn evictions_are_recorded_in_the_state() {
    let mut messages = Vec::new();
    for n in 0..30 {
        messages.push(msg(
            &format!("u{n}"),
            Role::User,
            &format!("My claim CLM-{n:04} was denied by Humana in June."),
        ));
    }
    let limits = TokenLimits {
        user_confirmed: 40,
        llm_inferred: 40,
        general_summary: 40,
        total: 120,
    };
    let out = summarize(&SummarizeInput {
        limits,
        ..batch(messages, None)
    });
    let evicted = state(&out)["evictions"]["user_confirmed"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        evicted > 0,
        "nothing recorded as evicted: {}",
        out.state_json
    );
}

#[test]
fn the_same_input_gives_byte_identical_output() {
    let one = summarize(&batch(first_batch(), None));
    let next = batch(
        vec![msg(
            "u2",
            Role::User,
            "My deductible is $2,500 and I have met $800 of it.",
        )],
        Some(&one),
    );
    assert_eq!(summarize(&next), summarize(&next));
    assert_eq!(summarize(&next).state_json, summarize(&next).state_json);
}

#[test]
fn unparsable_state_json_falls_back_to_the_text_layers() {
    let prior = PriorMemory {
        user_confirmed: "- My member ID is XKH448812.\n- I see Dr. Alvarez for my asthma.".into(),
        llm_inferred: "- You may need a referral for specialists.".into(),
        general_summary: "- Batch 1: User: My member ID is XKH448812.".into(),
        state_json: Some("{not json".into()),
    };
    let input = SummarizeInput {
        prior: Some(prior),
        ..batch(
            vec![msg("u9", Role::User, "My pharmacy is Walgreens.")],
            None,
        )
    };
    let out = summarize(&input);
    for fact in ["XKH448812", "Dr. Alvarez", "Walgreens"] {
        assert!(
            out.user_confirmed.contains(fact),
            "{fact} missing: {}",
            out.user_confirmed
        );
    }
    assert!(
        out.llm_inferred.contains("referral"),
        "{}",
        out.llm_inferred
    );
    assert!(
        out.general_summary
            .starts_with("- Batch 1: User: My member ID"),
        "{}",
        out.general_summary
    );
    assert!(
        state(&out)["items"].is_array(),
        "a fresh state is written: {}",
        out.state_json
    );
}

#[test]
fn an_empty_chat_id_is_invalid_input() {
    let input = SummarizeInput {
        chat_id: " ".into(),
        ..batch(first_batch(), None)
    };
    let result = OfflineBackend::new().summarize_now(&input);
    assert!(
        matches!(result, Err(BackendError::InvalidInput(_))),
        "{result:?}"
    );
}
