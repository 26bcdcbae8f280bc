//! The conformance suite: every log in `tests/vectors/` (honest ones and tampered ones) is verified by our
//! verifier (library and `audit verify`) and by the Python verifier printed in docs/audit-format.md; all
//! three must give the verdict and name the entry that the vector's `case.json` records.
use std::path::Path;

use safeclaw_agent::audit::conformance::{cases, disagreements};

#[test]
fn every_vector_gets_its_verdict_from_all_three_verifiers() {
    let cases = cases(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/vectors"));
    assert!(cases.len() >= 20, "only {} vectors", cases.len());
    assert!(cases.iter().any(|c| c.expected.is_none()) && cases.iter().any(|c| c.expected.is_some()));
    let wrong = disagreements(&cases, Path::new(env!("CARGO_BIN_EXE_safeclaw-agent")));
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
