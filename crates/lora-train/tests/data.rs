//! Datasets and templates: Dolly/Alpaca records, typed errors with file and line, the three
//! templates, truncation counts and response-only loss masks.

use hub_source::{Hub, HubRepo, layout};
use lora_train::Error;
use lora_train::data::{
    DOLLY_FILE, DOLLY_REPO, Fields, Record, dataset_file, dolly, read_jsonl, resolve_dataset,
    resolve_dataset_with,
};
use lora_train::template::{IGNORE_INDEX, LossOn, Template, TextEncoder, encode_all};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures"))
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn reads_the_sample_dolly_file() {
    let path = fixtures().join("samples/dolly/databricks-dolly-15k.jsonl");
    let recs = read_jsonl(&path, &Fields::dolly()).unwrap();
    assert_eq!(recs.len(), 120);
    assert!(recs.iter().any(|r| !r.context.is_empty()));
    assert!(recs.iter().any(|r| r.context.is_empty()));
    // A local path resolves to itself (no hub access).
    assert_eq!(resolve_dataset(path.to_str().unwrap()).unwrap(), path);
}

#[test]
fn missing_field_names_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let p = write(
        tmp.path(),
        "d.jsonl",
        "{\"instruction\":\"a\",\"context\":\"\",\"response\":\"b\"}\n\n{\"instruction\":\"a\",\"context\":\"\"}\n",
    );
    match read_jsonl(&p, &Fields::dolly()) {
        Err(e @ Error::MissingField { line: 3, .. }) => {
            assert!(e.is_bad_input());
            let msg = e.to_string();
            assert!(
                msg.contains("d.jsonl:3") && msg.contains("response"),
                "{msg}"
            );
        }
        other => panic!("expected MissingField at line 3, got {other:?}"),
    }
    // A non-string field is the same error.
    let p = write(
        tmp.path(),
        "e.jsonl",
        "{\"instruction\":1,\"context\":\"\",\"response\":\"b\"}\n",
    );
    assert!(matches!(
        read_jsonl(&p, &Fields::dolly()),
        Err(Error::MissingField { line: 1, .. })
    ));
    // Dolly requires the context key; Alpaca's input is optional.
    let p = write(
        tmp.path(),
        "f.jsonl",
        "{\"instruction\":\"i\",\"response\":\"r\"}\n",
    );
    assert!(matches!(
        read_jsonl(&p, &Fields::dolly()),
        Err(Error::MissingField { .. })
    ));
    let p = write(
        tmp.path(),
        "g.jsonl",
        "{\"instruction\":\"i\",\"output\":\"r\"}\n",
    );
    let recs = read_jsonl(&p, &Fields::alpaca()).unwrap();
    assert_eq!(recs[0].context, "");
    assert_eq!(recs[0].response, "r");
}

#[test]
fn malformed_and_empty_files_are_typed_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let p = write(
        tmp.path(),
        "bad.jsonl",
        "{\"instruction\":\"a\",\"context\":\"\",\"response\":\"b\"}\n{oops\n",
    );
    assert!(matches!(
        read_jsonl(&p, &Fields::dolly()),
        Err(Error::BadRecord { line: 2, .. })
    ));
    let p = write(tmp.path(), "arr.jsonl", "[1,2]\n");
    assert!(matches!(
        read_jsonl(&p, &Fields::dolly()),
        Err(Error::BadRecord { line: 1, .. })
    ));
    let p = write(tmp.path(), "empty.jsonl", "\n  \n");
    let e = read_jsonl(&p, &Fields::dolly()).unwrap_err();
    assert!(matches!(e, Error::EmptyDataset { .. }) && e.is_bad_input());
    let e = read_jsonl(&tmp.path().join("absent.jsonl"), &Fields::dolly()).unwrap_err();
    assert!(matches!(e, Error::Io { .. }));
}

fn record(ctx: &str) -> Record {
    Record {
        instruction: "Why did the tiny robot walk?".into(),
        context: ctx.into(),
        response: "The tiny robot walked to the market.".into(),
    }
}

fn encoder() -> TextEncoder {
    TextEncoder::from_dir(&fixtures().join("lora/llama")).unwrap()
}

#[test]
fn authors_template_text_is_exact() {
    let enc = encoder();
    let (text, start, special) = enc
        .render(&Template::AuthorsInst, &record("Some context."))
        .unwrap();
    assert_eq!(
        text,
        "<s>[INST] Why did the tiny robot walk?Here's some context: Some context. [/INST] The tiny robot walked to the market.</s>"
    );
    assert_eq!(&text[start..], "The tiny robot walked to the market.</s>");
    assert!(special);
    let (text, _, _) = enc.render(&Template::AuthorsInst, &record("")).unwrap();
    assert_eq!(
        text,
        "<s>[INST] Why did the tiny robot walk? [/INST] The tiny robot walked to the market.</s>"
    );
    // The tokenizer adds BOS and also recognises the literal <s>: two BOS ids, EOS last.
    let ex = enc
        .encode(&Template::AuthorsInst, &record(""), 512, LossOn::All)
        .unwrap();
    assert_eq!(&ex.input_ids[..2], &[1, 1]);
    assert_eq!(*ex.input_ids.last().unwrap(), 2);
}

#[test]
fn alpaca_and_chat_templates() {
    let enc = encoder();
    let (text, start, _) = enc.render(&Template::Alpaca, &record("ctx")).unwrap();
    assert!(
        text.starts_with("Below is an instruction that describes a task, paired with an input")
    );
    assert!(text.contains("### Input:\nctx\n\n### Response:\n"));
    assert_eq!(&text[start..], "The tiny robot walked to the market.</s>");
    let (text, _, _) = enc.render(&Template::Alpaca, &record("")).unwrap();
    assert!(!text.contains("### Input:"));
    // The fixture tokenizer's chat template: BOS [INST] user [/INST] assistant EOS.
    let (text, start, special) = enc.render(&Template::Chat, &record("ctx")).unwrap();
    assert_eq!(
        text,
        "<s>[INST] Why did the tiny robot walk?\n\nctx [/INST] The tiny robot walked to the market.</s>"
    );
    assert_eq!(&text[start..], " The tiny robot walked to the market.</s>");
    assert!(!special);
    let ex = enc
        .encode(&Template::Chat, &record(""), 512, LossOn::All)
        .unwrap();
    assert_eq!(ex.input_ids[0], 1);
    assert_ne!(
        ex.input_ids[1], 1,
        "chat templates write their own BOS; none is added"
    );
}

#[test]
fn truncation_is_counted_and_response_mask_covers_the_answer() {
    let enc = encoder();
    let recs = vec![record(""), record(&"long context ".repeat(40))];
    let all = encode_all(&enc, &Template::AuthorsInst, &recs, 48, LossOn::All).unwrap();
    assert_eq!(all.truncated, 1);
    assert_eq!(all.examples[1].input_ids.len(), 48);
    assert!(all.examples[1].truncated_from.unwrap() > 48);
    assert!(all.examples[0].truncated_from.is_none());
    assert!(
        all.examples
            .iter()
            .all(|e| e.labels.iter().all(|&l| l != IGNORE_INDEX))
    );

    let resp = encode_all(
        &enc,
        &Template::AuthorsInst,
        &recs[..1],
        512,
        LossOn::Response,
    )
    .unwrap();
    let ex = &resp.examples[0];
    let first = ex.labels.iter().position(|&l| l != IGNORE_INDEX).unwrap();
    assert!(ex.labels[first..].iter().all(|&l| l != IGNORE_INDEX));
    let tok = enc.tokenizer();
    let answer = tok.decode(&ex.input_ids[first..], false).unwrap();
    assert_eq!(
        answer.trim_start(),
        "The tiny robot walked to the market.</s>"
    );
    let prompt = tok.decode(&ex.input_ids[..first], false).unwrap();
    assert!(
        prompt.ends_with("[/INST]") || prompt.ends_with("[/INST] "),
        "{prompt:?}"
    );
    assert!(encode_all(&enc, &Template::AuthorsInst, &recs, 1, LossOn::All).is_err());
}

#[test]
fn template_and_option_names_parse() {
    assert_eq!(
        "authors".parse::<Template>().unwrap(),
        Template::AuthorsInst
    );
    assert_eq!("alpaca".parse::<Template>().unwrap(), Template::Alpaca);
    assert_eq!("chat".parse::<Template>().unwrap(), Template::Chat);
    assert!(matches!(
        "vicuna".parse::<Template>(),
        Err(Error::InvalidParam { .. })
    ));
    assert_eq!("response".parse::<LossOn>().unwrap(), LossOn::Response);
    assert!("some".parse::<LossOn>().is_err());
}

#[test]
fn dolly_from_an_offline_hub_cache() {
    // The HF cache layout Python writes: datasets--owner--name/{refs/main, snapshots/<rev>/file}.
    let cache = tempfile::tempdir().unwrap();
    let repo = HubRepo::dataset(DOLLY_REPO).unwrap();
    let rev = "0123456789abcdef0123456789abcdef01234567";
    let sample = fixtures().join("samples/dolly/databricks-dolly-15k.jsonl");
    layout::put_file(cache.path(), &repo, rev, DOLLY_FILE, &sample).unwrap();
    layout::set_ref(cache.path(), &repo, "main", rev).unwrap();
    let hub = Hub::with_cache_dir(cache.path()).offline(true);
    let p = resolve_dataset_with(DOLLY_REPO, &hub).unwrap();
    assert_eq!(read_jsonl(&p, &Fields::dolly()).unwrap().len(), 120);
    // A revision and an explicit file resolve to the same snapshot file.
    let spec = format!("{DOLLY_REPO}@{rev}:{DOLLY_FILE}");
    assert_eq!(resolve_dataset_with(&spec, &hub).unwrap(), p);
    // The paper's data source is that file.
    assert_eq!(dataset_file(&dolly(), &hub).unwrap(), p);
    // Offline and absent: a clear error, no network, the user's to fix.
    let empty = tempfile::tempdir().unwrap();
    let offline = Hub::with_cache_dir(empty.path()).offline(true);
    let e = resolve_dataset_with(DOLLY_REPO, &offline).unwrap_err();
    assert!(e.to_string().contains("HF_HUB_OFFLINE"), "{e}");
    assert!(e.is_bad_input(), "{e}");
    // Neither a file nor a repo id.
    let e = resolve_dataset_with("./no/such.jsonl", &offline).unwrap_err();
    assert!(e.to_string().contains("no such file"), "{e}");
}
