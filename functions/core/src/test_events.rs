//! Test access to the sample events of `tests/events/` (copies of the documented shapes kept
//! in `../shared/events/`, vendored so a clone tests on its own).

use std::path::PathBuf;

pub(crate) fn events_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/events")
}

fn read(path: PathBuf) -> Vec<u8> {
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

pub(crate) fn shared_event(name: &str) -> Vec<u8> {
    read(events_dir().join(name))
}

pub(crate) fn bad_event(name: &str) -> Vec<u8> {
    read(events_dir().join("bad").join(name))
}

fn json_names(dir: PathBuf) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".json") && name != "replication-configuration.json")
        .collect();
    names.sort();
    names
}

pub(crate) fn shared_event_names() -> Vec<String> {
    json_names(events_dir())
}

pub(crate) fn bad_event_names() -> Vec<String> {
    json_names(events_dir().join("bad"))
}

#[test]
fn vendored_samples_match_the_shared_ones_when_present() {
    let shared = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/events");
    if !shared.is_dir() {
        return;
    }
    for sub in ["", "bad"] {
        for name in json_names(shared.join(sub)) {
            assert_eq!(
                read(shared.join(sub).join(&name)),
                read(events_dir().join(sub).join(&name)),
                "tests/events/{sub}/{name} differs from ../shared/events"
            );
        }
    }
}
