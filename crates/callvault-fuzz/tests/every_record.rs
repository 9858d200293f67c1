//! The `records` fuzz target covers every versioned record: a record added without its line in
//! `records!` would go unfuzzed (five did, this round, until this test).

use std::path::Path;

fn implementations(dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir)
        .expect("readable source dir")
        .flatten()
    {
        let path = entry.path();
        if path.is_dir() {
            implementations(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).expect("readable source");
            for line in text.lines() {
                if let Some(rest) = line.trim().strip_prefix("impl VersionedRecord for ") {
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    out.push(format!("{name} ({})", path.display()));
                }
            }
        }
    }
}

#[test]
fn every_versioned_record_is_in_the_records_target() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut found = Vec::new();
    implementations(&crates, &mut found);
    assert_eq!(
        found.len(),
        callvault_fuzz::records::RECORDS.len(),
        "every `impl VersionedRecord` needs a line in callvault-fuzz's `records!`; found:\n{}",
        found.join("\n")
    );
}
