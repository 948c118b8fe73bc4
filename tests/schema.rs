//! The JSON report matches docs/schema.json, for passing, failing and unreadable images.
mod common;
use common::*;

fn validator() -> jsonschema::Validator {
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string("docs/schema.json").unwrap()).unwrap();
    jsonschema::validator_for(&schema).expect("schema compiles")
}

fn assert_valid(v: &jsonschema::Validator, doc: &serde_json::Value) {
    let errors: Vec<String> = v
        .iter_errors(doc)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "schema errors: {errors:#?}\n{doc:#}");
}

#[test]
fn json_and_jsonl_outputs_match_the_schema() {
    let v = validator();
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("disk.raw");
    make_pattern_raw(&good, 4 * 1024 * 1024, 1);
    let bad = dir.path().join("garbage.qcow2");
    std::fs::write(&bad, b"QFI\xfb\0\0\0\x03truncated").unwrap();
    let g = good.display().to_string();
    let b = bad.display().to_string();

    // One image: an object.
    let o = imgcheck(&["verify", "--format", "json", &g]);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(doc.is_object());
    assert_valid(&v, &doc);
    assert_eq!(doc["image"], g);

    // Several: an array, including an unreadable image (verdict error, exit 2).
    let o = imgcheck(&["verify", "--format", "json", &g, &b]);
    assert_eq!(o.status.code(), Some(2));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc.as_array().unwrap().len(), 2);
    assert_valid(&v, &doc);
    assert_eq!(doc[1]["verdict"], "error");
    assert!(doc[1]["error"].as_str().unwrap().contains("garbage.qcow2"));

    // A Windows image: the OS section and evidence are in the schema too.
    let win = fixture("dirty-log.raw", dir.path());
    let (_, doc) = verify_json(&win, &[]);
    assert!(doc["os"].is_object(), "{doc:#}");
    assert_valid(&v, &doc);

    // JSON lines: each line is one image object.
    let o = imgcheck(&["verify", "--format", "jsonl", &g, &b]);
    let lines: Vec<&str> = std::str::from_utf8(&o.stdout).unwrap().lines().collect();
    assert_eq!(lines.len(), 2);
    for l in lines {
        assert_valid(&v, &serde_json::from_str(l).unwrap());
    }
}

#[test]
fn schema_lists_exactly_the_checks_of_the_table() {
    // The schema's check IDs are the table's, in its order (docs/schema.json is written by
    // hand for readers; this keeps it true).
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string("docs/schema.json").unwrap()).unwrap();
    let ids: Vec<&str> = schema["$defs"]["check"]["properties"]["id"]["enum"]
        .as_array()
        .expect("check id enum")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(ids, imgcheck::checks::CHECK_IDS);
    // And every check a verify run reports is in it, in that order.
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("disk.raw");
    make_pattern_raw(&good, 4 * 1024 * 1024, 1);
    let o = imgcheck(&["verify", "--format", "json", &good.display().to_string()]);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let run: Vec<&str> = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(run, ids);
}
