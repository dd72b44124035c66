//! The parser against hostile input: whatever the bytes, `parse` returns a
//! config or errors, never panics, and every error names a line inside the
//! file; a config it returns seeds a cluster (`Bootstrap` applies). Inputs
//! are random text, and valid configs with random edits.

use proptest::prelude::*;

const VALID: &str = include_str!("../../node/examples/raftlb.toml");

fn check_total(text: &str) {
    let parsed = raftlb_config::parse("fuzz.toml", text);
    if let Ok(config) = &parsed {
        let mut state = raftlb_config::ClusterState::default();
        let seed = raftlb_config::Command::Bootstrap(config.cluster.clone());
        assert_eq!(state.apply(seed), raftlb_config::Outcome::Applied, "{text}");
    }
    if let Err(errors) = parsed {
        let lines = text.lines().count().max(1) + 1;
        for e in errors.iter() {
            assert!(!e.message.is_empty());
            if let Some(line) = e.line {
                assert!(
                    line >= 1 && line <= lines,
                    "line {line} outside a {lines}-line file: {e}"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_text(text in "\\PC{0,400}") {
        check_total(&text);
    }

    #[test]
    fn toml_shaped_text(text in "(\\[\\[?(node|listener|pool)\\]\\]?\n|[a-z_]{1,12} = (\"[0-9a-z.:\\[\\] ]{0,24}\"|-?[0-9]{1,22}|true|\\[\\]|\\{ address = \"[0-9.:]{0,20}\" \\})\n){0,30}") {
        check_total(&text);
    }

    #[test]
    fn edited_valid_config(cut in 0usize..2000, len in 0usize..40, insert in "\\PC{0,20}") {
        let mut text = VALID.to_string();
        let start = text.char_indices().map(|(i, _)| i).nth(cut % text.chars().count()).unwrap_or(0);
        let end = text[start..].char_indices().map(|(i, _)| start + i).nth(len).unwrap_or(text.len());
        text.replace_range(start..end, &insert);
        check_total(&text);
    }
}

#[test]
fn the_example_config_is_valid() {
    raftlb_config::parse("raftlb.toml", VALID).expect("example config is valid");
}
