//! Conformance-vector runner for the VLP vector schema (the original
//! project's `tools/vlp-test-vectors.json`). Written once, used by the
//! `conformance` test (public file plus any extra files) and by the
//! `conformance` example (any file given on the command line).
//!
//! Every vector is checked in both directions where the schema allows it
//! (encode and decode, seal and open). An unknown `kind` is a failure, not a
//! skip: a runner that silently ignores vectors proves nothing.

use serde_json::Value;
use varta_vlp::{
    crc32c, derive_agent_key, derive_epoch_key, derive_iv_prefix, open_master, open_shared,
    seal_master, seal_shared, DecodeError, Frame, Key, Status, FRAME_LEN, MAGIC, MASTER_LEN,
    NONCE_TERMINAL, SHARED_LEN, VERSION,
};

/// Outcome of one file: how many vectors passed, and why each failure failed.
#[derive(Debug, Default)]
pub struct Report {
    pub passed: usize,
    pub failures: Vec<String>,
}

impl Report {
    fn record(&mut self, id: &str, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => self.passed += 1,
            Err(e) => self.failures.push(format!("{id}: {e}")),
        }
    }
}

fn hex(s: &str) -> Result<Vec<u8>, String> {
    if s.len() % 2 != 0 {
        return Err(format!("odd-length hex {s:?}"));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|e| format!("bad hex {s:?}: {e}")))
        .collect()
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn hex_n<const N: usize>(v: &Value, field: &str) -> Result<[u8; N], String> {
    let bytes = hex(str_field(v, field)?)?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| format!("{field}: expected {N} bytes, got {}", b.len()))
}

fn str_field<'a>(v: &'a Value, field: &str) -> Result<&'a str, String> {
    v.get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("missing string field {field:?}"))
}

fn u64_field(v: &Value, field: &str) -> Result<u64, String> {
    v.get(field)
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("missing integer field {field:?}"))
}

fn u32_field(v: &Value, field: &str) -> Result<u32, String> {
    u32::try_from(u64_field(v, field)?).map_err(|_| format!("{field} does not fit in u32"))
}

fn key_field(v: &Value, field: &str) -> Result<Key, String> {
    Key::from_hex(str_field(v, field)?).map_err(|e| format!("{field}: {e}"))
}

fn expect_eq(what: &str, got: &[u8], want: &[u8]) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!(
            "{what}: got {}, want {}",
            to_hex(got),
            to_hex(want)
        ))
    }
}

fn status_named(name: &str) -> Result<Status, String> {
    match name.to_ascii_lowercase().as_str() {
        "ok" => Ok(Status::Ok),
        "degraded" => Ok(Status::Degraded),
        "critical" => Ok(Status::Critical),
        "stall" => Ok(Status::Stall),
        other => Err(format!("unknown status name {other:?}")),
    }
}

fn check_header(doc: &Value) -> Result<(), String> {
    if let Some(m) = doc.get("magic_hex").and_then(Value::as_str) {
        expect_eq("magic_hex", &MAGIC, &hex(m)?)?;
    }
    if let Some(v) = doc.get("version_byte").and_then(Value::as_u64) {
        if v != u64::from(VERSION) {
            return Err(format!("version_byte {v} != {VERSION}"));
        }
    }
    if let Some(n) = doc.get("nonce_terminal_hex").and_then(Value::as_str) {
        expect_eq(
            "nonce_terminal_hex",
            &NONCE_TERMINAL.to_be_bytes(),
            &hex(n)?,
        )?;
    }
    Ok(())
}

fn crc_vector(v: &Value) -> Result<(), String> {
    let input = hex(str_field(v, "input_hex")?)?;
    let want = hex_n::<4>(v, "expected_crc_hex")?;
    expect_eq("crc32c", &crc32c(&input).to_be_bytes(), &want)
}

fn decode_expectation(wire: &[u8; FRAME_LEN], want_err: &str) -> Result<(), String> {
    match Frame::decode(wire) {
        Err(e) if e.variant_name() == want_err => Ok(()),
        Err(e) => Err(format!("decode gave {e:?}, want {want_err}")),
        Ok(f) => Err(format!("decode accepted {f:?}, want {want_err}")),
    }
}

fn frame_vector(v: &Value) -> Result<(), String> {
    let kind = str_field(v, "kind")?;
    let want_err = v.get("expected_decode_error").and_then(Value::as_str);
    match kind {
        "encode_decode_roundtrip" => {
            let i = v.get("inputs").ok_or("missing inputs")?;
            let frame = Frame::new(
                status_named(str_field(i, "status")?)?,
                u32_field(i, "pid")?,
                u64_field(i, "timestamp")?,
                u64_field(i, "nonce")?,
                u32_field(i, "payload")?,
            );
            let wire = hex_n::<FRAME_LEN>(v, "expected_wire_hex")?;
            expect_eq("encode", &frame.to_bytes(), &wire)?;
            match want_err {
                Some(e) => decode_expectation(&wire, e),
                None => match Frame::decode(&wire) {
                    Ok(back) if back == frame => Ok(()),
                    other => Err(format!("decode gave {other:?}, want Ok({frame:?})")),
                },
            }
        }
        "decode_error" => {
            let wire = hex_n::<FRAME_LEN>(v, "wire_hex")?;
            let want = want_err.ok_or("decode_error vector without expected_decode_error")?;
            if !DecodeError::KINDS
                .iter()
                .any(|k| k.replace('_', "") == want.to_ascii_lowercase())
            {
                return Err(format!("vector names unknown decode error {want:?}"));
            }
            decode_expectation(&wire, want)
        }
        other => Err(format!("unknown frame vector kind {other:?}")),
    }
}

fn info_matches(v: &Value, want: &[u8]) -> Result<(), String> {
    match v.get("info_hex").and_then(Value::as_str) {
        Some(info) => expect_eq("info", want, &hex(info)?),
        None => Ok(()),
    }
}

fn secure_vector(v: &Value) -> Result<(), String> {
    match str_field(v, "kind")? {
        "shared_key_seal" => {
            let key = key_field(v, "key_hex")?;
            let plain = hex_n::<FRAME_LEN>(v, "plaintext_hex")?;
            let wire = hex_n::<SHARED_LEN>(v, "expected_wire_hex")?;
            let sealed = seal_shared(
                &key,
                hex_n::<8>(v, "iv_random_hex")?,
                u32_field(v, "iv_counter")?,
                &plain,
            );
            expect_eq("seal_shared", &sealed, &wire)?;
            let opened = open_shared(&key, &wire).map_err(|e| format!("open_shared: {e}"))?;
            expect_eq("open_shared", &opened, &plain)
        }
        "master_key_seal" => {
            let master = key_field(v, "master_key_hex")?;
            let pid = u32_field(v, "agent_pid")?;
            if v.get("derived_agent_key_hex").is_some() {
                let want = hex_n::<32>(v, "derived_agent_key_hex")?;
                expect_eq(
                    "derive_agent_key",
                    derive_agent_key(&master, pid).as_bytes(),
                    &want,
                )?;
            }
            let plain = hex_n::<FRAME_LEN>(v, "plaintext_hex")?;
            let wire = hex_n::<MASTER_LEN>(v, "expected_wire_hex")?;
            let sealed = seal_master(
                &master,
                pid,
                hex_n::<8>(v, "iv_random_hex")?,
                u32_field(v, "iv_counter")?,
                &plain,
            );
            expect_eq("seal_master", &sealed, &wire)?;
            let (got_pid, opened) =
                open_master(&master, &wire).map_err(|e| format!("open_master: {e}"))?;
            if got_pid != pid {
                return Err(format!("open_master pid {got_pid}, want {pid}"));
            }
            expect_eq("open_master", &opened, &plain)
        }
        "kdf_agent_key" => {
            let master = key_field(v, "master_key_hex")?;
            let id = u32_field(v, "agent_id")?;
            info_matches(
                v,
                &[b"varta-agent-v1\0".as_slice(), &id.to_le_bytes()].concat(),
            )?;
            let want = hex_n::<32>(v, "expected_okm_hex")?;
            expect_eq(
                "derive_agent_key",
                derive_agent_key(&master, id).as_bytes(),
                &want,
            )
        }
        "kdf_iv_prefix" => {
            let salt = hex_n::<16>(v, "session_salt_hex")?;
            let index = u32_field(v, "prefix_index")?;
            info_matches(
                v,
                &[b"varta-iv-prefix-v1\0".as_slice(), &index.to_le_bytes()].concat(),
            )?;
            let want = hex_n::<8>(v, "expected_iv_prefix_hex")?;
            expect_eq("derive_iv_prefix", &derive_iv_prefix(&salt, index), &want)
        }
        "kdf_epoch_key" => {
            let agent = key_field(v, "agent_key_hex")?;
            let epoch = u64_field(v, "epoch")?;
            info_matches(
                v,
                &[b"varta-epoch-v1\0".as_slice(), &epoch.to_le_bytes()].concat(),
            )?;
            let want = hex_n::<32>(v, "expected_okm_hex")?;
            expect_eq(
                "derive_epoch_key",
                derive_epoch_key(&agent, epoch).as_bytes(),
                &want,
            )
        }
        other => Err(format!("unknown secure vector kind {other:?}")),
    }
}

type Check = fn(&Value) -> Result<(), String>;

/// Runs every vector of a document of the VLP vector schema.
pub fn run(doc: &Value) -> Report {
    let mut report = Report::default();
    report.record("header", check_header(doc));
    let sections: [(&str, Check); 3] = [
        ("crc32c_vectors", crc_vector),
        ("frame_vectors", frame_vector),
        ("secure_frame_vectors", secure_vector),
    ];
    for (section, check) in sections {
        let Some(list) = doc.get(section) else {
            continue;
        };
        let Some(list) = list.as_array() else {
            report.record(section, Err("is not an array".into()));
            continue;
        };
        for (i, v) in list.iter().enumerate() {
            let id = v
                .get("id")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| format!("{section}[{i}]"));
            report.record(&id, check(v));
        }
    }
    // Top-level keys this runner does not know would be silently ignored
    // vectors; refuse them.
    if let Some(obj) = doc.as_object() {
        for key in obj.keys() {
            if key.ends_with("_vectors") && !sections.iter().any(|(s, _)| s == key) {
                report.record(key, Err("unknown vector section".into()));
            }
        }
    }
    report
}

/// Reads and runs a vector file.
pub fn run_file(path: &std::path::Path) -> Result<Report, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let doc: Value = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not valid JSON: {e}", path.display()))?;
    Ok(run(&doc))
}
