//! Fuzzes every parser of user files in toxprompts: RTP JSONL (fail and skip policies) and the
//! prompt-set builder on top of it, prompts JSONL, and the CEB JSON array. Any panic, overflow
//! or hang is a bug; errors are expected.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use toxprompts::{
    CebAxis, OnBadRecord, PromptSetParams, RtpReader, parse_ceb_slice, read_prompts_from,
};

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

        // The builder on the same bytes: 2 random + 1 severe at a low threshold, disjoint.
        if let Ok(params) = PromptSetParams::default()
            .random(2)
            .severe(1)
            .per_axis(0)
            .severe_threshold(0.1)
            .on_bad_record(policy)
            .check()
            && let Ok(set) = params.build_from_reader(RtpReader::new(data, "fuzz.jsonl"), None)
        {
            assert_eq!(set.prompts.len(), 3);
            let text = set.to_jsonl();
            let back = read_prompts_from(&text[..], "out.jsonl", OnBadRecord::Fail)
                .expect("a built set reads back");
            assert_eq!(back.records, set.prompts);
        }

        let _ = read_prompts_from(data, "fuzz.jsonl", policy);
        let _ = parse_ceb_slice(data, Path::new("race.json"), Some(CebAxis::Race), policy);
    }
});
