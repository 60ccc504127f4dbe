//! Loads the public conformance vectors vendored in `tests/data/` (and any
//! extra files named in `VARTA_VLP_VECTORS`, `:`-separated) and requires
//! every vector to pass.

mod vectors;

use std::path::PathBuf;

fn public_vectors() -> PathBuf {
    // Vendored in the repository (see tests/data/README.md); resolved from
    // the crate directory so the test works from any cwd.
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/vlp-vectors-public.json")
}

fn check(path: &std::path::Path) -> usize {
    let report = vectors::run_file(path).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        report.failures.is_empty(),
        "{} of {} vectors failed in {}:\n{}",
        report.failures.len(),
        report.failures.len() + report.passed,
        path.display(),
        report.failures.join("\n")
    );
    report.passed
}

#[test]
fn public_vectors_all_pass() {
    let passed = check(&public_vectors());
    // Header + 2 crc + 7 frame + 2 secure in the public file: a runner that
    // skipped sections would pass fewer.
    assert!(passed >= 12, "only {passed} vectors ran");
}

#[test]
fn extra_vector_files_all_pass() {
    let Ok(list) = std::env::var("VARTA_VLP_VECTORS") else {
        return;
    };
    for path in list.split(':').filter(|p| !p.is_empty()) {
        check(std::path::Path::new(path));
    }
}

#[test]
fn runner_rejects_wrong_and_unknown_vectors() {
    let doc = serde_json::json!({
        "crc32c_vectors": [{"id": "c", "input_hex": "", "expected_crc_hex": "00000001"}],
        "frame_vectors": [
            {"id": "k", "kind": "mystery"},
            {"id": "e", "kind": "decode_error", "expected_decode_error": "BadCrc",
             "wire_hex": "56410200020000000000000000000000010000000000000000000000e4116baa"}
        ],
        "secure_frame_vectors": [{"id": "s", "kind": "quantum_seal"}],
        "bonus_vectors": []
    });
    let report = vectors::run(&doc);
    assert_eq!(report.failures.len(), 5, "{:#?}", report.failures);
}
