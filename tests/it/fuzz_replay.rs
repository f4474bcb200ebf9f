//! Replays the fuzz corpus (fuzz/corpus/<target>/) through the same checks the libFuzzer
//! targets run (fuzz/checks.rs), on stable, in seconds: a regression run, not a campaign.
//! Fuzzing itself: `cargo +nightly fuzz run <target>` in fuzz/ (RELIABILITY.md).

#[path = "../../fuzz/checks.rs"]
mod checks;

use std::path::Path;

#[test]
fn fuzz_corpus_replays_without_a_failure() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for target in checks::TARGETS {
        let mut inputs: Vec<_> = std::fs::read_dir(root.join(target))
            .unwrap_or_else(|e| panic!("fuzz/corpus/{target}: {e}"))
            .map(|entry| entry.unwrap().path())
            .collect();
        inputs.sort();
        assert!(
            inputs.len() >= 5,
            "fuzz/corpus/{target} holds {} inputs",
            inputs.len()
        );
        for path in inputs {
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| checks::run(target, &data));
            assert!(outcome.is_ok(), "{target} fails on {}", path.display());
        }
    }
}
