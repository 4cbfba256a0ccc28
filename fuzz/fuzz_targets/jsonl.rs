//! Fuzzes every parser of user files in toxprompts: RTP JSONL (fail and skip policies), prompts
//! JSONL, and the CEB JSON array. Any panic, overflow or hang is a bug; errors are expected.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use toxprompts::{CebAxis, OnBadRecord, RtpReader, parse_ceb_slice, read_prompts_from};

fuzz_target!(|data: &[u8]| {
    for policy in [OnBadRecord::Fail, OnBadRecord::Skip] {
        let mut reader = RtpReader::new(data, "fuzz.jsonl").on_bad_record(policy);
        for row in reader.by_ref() {
            if let Ok(r) = row {
                assert!(!r.prompt.text.trim().is_empty());
            }
        }
        let report = reader.report();
        assert!(report.first_skipped.len() <= report.skipped);
        let _ = read_prompts_from(data, "fuzz.jsonl", policy);
        let _ = parse_ceb_slice(data, Path::new("race.json"), Some(CebAxis::Race), policy);
    }
});
