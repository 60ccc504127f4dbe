//! Arbitrary `/proc/<pid>/cgroup` content into the unit and container
//! parser. Cgroup path components are chosen by whoever creates the
//! cgroups (container runtimes, delegated subtrees), so this is input the
//! observer does not control: it must never panic, and what it extracts
//! must come from the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use varta_watch::identity::cgroup;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let info = cgroup::parse(&text);
    if let Some(unit) = &info.unit {
        assert!(text.contains(unit.as_str()), "unit {unit:?} not in input");
    }
    if let Some(c) = &info.container {
        assert!(!c.short().is_empty());
    }
});
