//! The public hpack-test-case corpus (http2jp, MIT; `tests/data/hpack-test-case/`)
//! through the push path's HPACK decoder: every case of every encoder's
//! stories, in order, each story sharing one dynamic table, with
//! `header_table_size` applied as a SETTINGS_HEADER_TABLE_SIZE acknowledged
//! just before its case.

use std::collections::BTreeMap;
use std::io::Read;

use super::Decoder;

const CORPUS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/hpack-test-case/corpus.tar.xz"
);

/// Every `(folder, story file, JSON text)` of the archive.
fn stories() -> Vec<(String, String, String)> {
    let packed = std::fs::read(CORPUS).unwrap_or_else(|e| panic!("{CORPUS}: {e}"));
    let mut tar = Vec::new();
    lzma_rs::xz_decompress(&mut &packed[..], &mut tar).expect("corpus.tar.xz is xz");
    let mut out = Vec::new();
    let mut archive = tar::Archive::new(&tar[..]);
    for entry in archive.entries().expect("a tar archive") {
        let mut entry = entry.expect("a tar entry");
        let path = entry.path().expect("a path").to_string_lossy().into_owned();
        let path = path.trim_start_matches("./").to_string();
        let Some((folder, file)) = path.split_once('/') else {
            continue;
        };
        if !file.ends_with(".json") {
            continue;
        }
        let mut text = String::new();
        entry.read_to_string(&mut text).expect("UTF-8 JSON");
        out.push((folder.to_string(), file.to_string(), text));
    }
    out
}

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn every_story_of_every_encoder_decodes_to_its_headers() {
    let stories = stories();
    let mut cases_by_folder: BTreeMap<String, usize> = BTreeMap::new();
    let mut stories_by_folder: BTreeMap<String, usize> = BTreeMap::new();
    let mut raw_cases = 0usize;
    for (folder, file, text) in &stories {
        let story: serde_json::Value =
            serde_json::from_str(text).unwrap_or_else(|e| panic!("{folder}/{file}: {e}"));
        let cases = story["cases"].as_array().expect("cases");
        if folder == "raw-data" {
            // The header lists alone, no wire: what every encoder encoded.
            raw_cases += cases.len();
            continue;
        }
        *stories_by_folder.entry(folder.clone()).or_default() += 1;
        // The story's first case names the table size; 4,096 if it does not.
        let mut dec = Decoder::new(4096);
        for case in cases {
            let seqno = &case["seqno"];
            let at = || format!("{folder}/{file} seqno {seqno}");
            if let Some(size) = case.get("header_table_size").and_then(|v| v.as_u64()) {
                // SETTINGS_HEADER_TABLE_SIZE acknowledged: the limit for the
                // encoder's next size update (RFC 7541 4.2).
                dec.max_table_size = size as usize;
            }
            let wire = hex(case["wire"].as_str().expect("wire"));
            let want: Vec<(String, String)> = case["headers"]
                .as_array()
                .expect("headers")
                .iter()
                .flat_map(|h| h.as_object().expect("one field").iter())
                .map(|(n, v)| (n.clone(), v.as_str().expect("a string value").to_string()))
                .collect();
            let mut got = Vec::new();
            dec.decode_fields(&wire, |n, v, size| {
                assert_eq!(size, n.bytes().len() + v.bytes().len() + 32);
                got.push((
                    String::from_utf8_lossy(n.bytes()).into_owned(),
                    String::from_utf8_lossy(v.bytes()).into_owned(),
                ));
            })
            .unwrap_or_else(|e| panic!("{}: {e:?}", at()));
            assert_eq!(got, want, "{}", at());
            *cases_by_folder.entry(folder.clone()).or_default() += 1;
        }
    }
    // The whole corpus ran: 14 encoders, 31 or 32 stories each, and each
    // encoder decoded as many cases as raw-data has (less the story two
    // nghttp2 variants leave out).
    eprintln!("hpack-test-case: {cases_by_folder:?}; raw-data {raw_cases} cases");
    assert_eq!(stories_by_folder.len(), 14, "{stories_by_folder:?}");
    assert!(stories_by_folder.values().all(|&n| n >= 31));
    assert!(raw_cases > 3000, "{raw_cases}");
    for (folder, n) in &cases_by_folder {
        assert!(
            *n * 100 >= raw_cases * 95,
            "{folder}: {n} of {raw_cases} cases"
        );
    }
}
