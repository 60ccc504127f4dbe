//! Recovery command placeholders: which `{word}`s a command may use, and
//! the one splitter both validation and the recovery runner use, so a
//! command accepted at load time renders exactly as it was checked.

/// The placeholders of a recovery command.
pub const PLACEHOLDERS: [&str; 6] = ["pid", "name", "unit", "container", "comm", "exe"];

/// The only `PATH` a child gets unless `--recovery-inherit-env`.
pub const CHILD_PATH: &str = "/usr/bin:/bin";

/// Splits `arg` into literal text and `{word}` placeholders (`word` of
/// ASCII letters, digits, `_` and `-`, not preceded by `$`); any other
/// brace is literal.
pub fn pieces(arg: &str) -> impl Iterator<Item = Result<&str, &str>> {
    let mut rest = arg;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut from = 0;
        while let Some(i) = rest[from..].find('{').map(|i| i + from) {
            let word_len = rest[i + 1..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                .unwrap_or(rest.len() - i - 1);
            // `${word}` is shell syntax, not a placeholder: plain bytes, as
            // it always was (there is no shell to expand it either).
            let shell = i > 0 && rest.as_bytes()[i - 1] == b'$';
            if !shell && word_len > 0 && rest[i + 1 + word_len..].starts_with('}') {
                if i > 0 {
                    let lit = &rest[..i];
                    rest = &rest[i..];
                    return Some(Ok(lit));
                }
                let word = &rest[1..1 + word_len];
                rest = &rest[word_len + 2..];
                return Some(Err(word));
            }
            from = i + 1;
        }
        let lit = rest;
        rest = "";
        Some(Ok(lit))
    })
}

/// Config-time check of a recovery command: every `{word}` must be one of
/// [`PLACEHOLDERS`].
pub fn check_placeholders(template: &str) -> Result<(), String> {
    for arg in template.split_ascii_whitespace() {
        for p in pieces(arg) {
            if let Err(word) = p {
                if !PLACEHOLDERS.contains(&word) {
                    return Err(format!(
                        "unknown placeholder {{{word}}}; the placeholders are {}",
                        PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", ")
                    ));
                }
            }
        }
    }
    Ok(())
}
