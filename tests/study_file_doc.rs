//! Keeps docs/study-file.md honest: every key the study file accepts (the fields of the raw TOML
//! structs in src/study/schema.rs, and of the structs of src/study/model.rs that a study table
//! deserializes into directly, such as `[generation]` and `[sampler]`) appears in the document's
//! key table for that struct, and every key the document lists exists. Every role of
//! `Role::as_str` appears in the document's roles table, and vice versa.
//!
//! The sources are read as text: a struct's keys are its `pub(super) <name>:` / `pub <name>:`
//! fields (a `#[serde(rename = "...")]` renames one, `#[serde(skip)]` drops one). A document
//! table is tagged by the HTML comment `<!-- keys: StructName -->` on the line before it; its
//! keys are the first column, in backticks.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// One struct of the sources: its keys (in file order) and the type text of each field.
#[derive(Debug, Clone)]
struct Struct {
    keys: Vec<(String, String)>,
}

/// Every `struct Name { ... }` with named fields in `src`.
fn structs(src: &str) -> BTreeMap<String, Struct> {
    let mut out = BTreeMap::new();
    let lines: Vec<&str> = src.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim();
        let name = line
            .split_once("struct ")
            .filter(|(before, _)| {
                before.is_empty() || before.trim_end().ends_with(')') || before.trim() == "pub"
            })
            .and_then(|(_, rest)| rest.strip_suffix('{'))
            .map(|n| n.trim().to_string());
        let Some(name) = name.filter(|n| n.chars().all(|c| c.is_alphanumeric() || c == '_')) else {
            i += 1;
            continue;
        };
        let mut keys = Vec::new();
        let mut attrs: Vec<String> = Vec::new();
        i += 1;
        while i < lines.len() && lines[i].trim() != "}" {
            let l = lines[i].trim();
            if l.starts_with("#[") {
                attrs.push(l.to_string());
            } else if let Some(rest) = l
                .strip_prefix("pub(super) ")
                .or_else(|| l.strip_prefix("pub "))
            {
                if let Some((field, ty)) = rest.split_once(':') {
                    let field = field.trim().to_string();
                    let skipped = attrs
                        .iter()
                        .any(|a| a.contains("serde(skip)") || a.contains("serde(skip,"));
                    let renamed = attrs.iter().find_map(|a| {
                        let (_, r) = a.split_once("rename = \"")?;
                        r.split_once('"').map(|(n, _)| n.to_string())
                    });
                    if !skipped {
                        keys.push((
                            renamed.unwrap_or(field),
                            ty.trim().trim_end_matches(',').to_string(),
                        ));
                    }
                }
                attrs.clear();
            } else if !l.starts_with("//") {
                attrs.clear();
            }
            i += 1;
        }
        out.insert(name, Struct { keys });
    }
    out
}

/// The structs that make up the study file: `RawStudy` and every struct (of schema.rs or
/// model.rs) named in a reachable field's type.
fn file_structs(schema: &str, model: &str) -> BTreeMap<String, Vec<String>> {
    let mut all = structs(model);
    all.extend(structs(schema));
    assert!(
        all.contains_key("RawStudy"),
        "src/study/schema.rs has no `struct RawStudy`: teach this test where the keys are"
    );
    let mut out = BTreeMap::new();
    let mut todo = vec!["RawStudy".to_string()];
    while let Some(name) = todo.pop() {
        if out.contains_key(&name) {
            continue;
        }
        let s = &all[&name];
        for (_, ty) in &s.keys {
            for ident in ty.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
                if all.contains_key(ident) && !out.contains_key(ident) {
                    todo.push(ident.to_string());
                }
            }
        }
        out.insert(name, s.keys.iter().map(|(k, _)| k.clone()).collect());
    }
    out
}

/// The document's tagged tables: tag (struct name or `roles`) -> the keys in the first column.
fn doc_tables(doc: &str) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    let lines: Vec<&str> = doc.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let Some(tag) = line
            .trim()
            .strip_prefix("<!--")
            .and_then(|r| r.strip_suffix("-->"))
            .map(str::trim)
        else {
            continue;
        };
        let tag = tag.strip_prefix("keys:").map_or(tag, str::trim).to_string();
        let mut keys = Vec::new();
        for row in lines[i + 1..]
            .iter()
            .take_while(|l| l.trim_start().starts_with('|'))
            .skip(2)
        {
            let cell = row
                .trim()
                .trim_start_matches('|')
                .split('|')
                .next()
                .unwrap_or("");
            keys.push(cell.trim().trim_matches('`').to_string());
        }
        assert!(
            out.insert(tag.clone(), keys).is_none(),
            "docs/study-file.md: table `{tag}` is tagged twice"
        );
    }
    out
}

/// The roles as `Role::as_str` writes them.
fn roles(model: &str) -> Vec<String> {
    model
        .lines()
        .filter_map(|l| {
            let (_, r) = l.trim().strip_prefix("Role::")?.split_once("=> \"")?;
            r.split_once('"').map(|(v, _)| v.to_string())
        })
        .collect()
}

/// Every disagreement between the sources and the document, one line each.
fn problems(schema: &str, model: &str, doc: &str) -> Vec<String> {
    let want = file_structs(schema, model);
    let mut have = doc_tables(doc);
    let mut out = Vec::new();
    for (name, keys) in &want {
        let Some(documented) = have.remove(name) else {
            out.push(format!(
                "`{name}` (keys: {}) has no table tagged `<!-- keys: {name} -->`",
                keys.join(", ")
            ));
            continue;
        };
        let (k, d): (BTreeSet<&String>, BTreeSet<&String>) =
            (keys.iter().collect(), documented.iter().collect());
        for missing in k.difference(&d) {
            out.push(format!("`{name}`: key `{missing}` is not documented"));
        }
        for extra in d.difference(&k) {
            out.push(format!(
                "`{name}`: the document lists `{extra}`, which the study file does not accept"
            ));
        }
        if documented.len() != d.len() {
            out.push(format!("`{name}`: a key is listed twice in its table"));
        }
    }
    let documented_roles = have.remove("roles").unwrap_or_default();
    let roles = roles(model);
    if roles.is_empty() {
        out.push("no `Role::X => \"...\"` line found in src/study/model.rs".into());
    }
    for r in &roles {
        if !documented_roles.contains(r) {
            out.push(format!("role `{r}` is not in the roles table"));
        }
    }
    for r in &documented_roles {
        if !roles.contains(r) {
            out.push(format!("the roles table lists `{r}`, which is not a role"));
        }
    }
    for stale in have.keys() {
        out.push(format!(
            "the table tagged `{stale}` documents no struct of the study file"
        ));
    }
    out
}

fn sources() -> (String, String, String) {
    (
        read("src/study/schema.rs"),
        read("src/study/model.rs"),
        read("docs/study-file.md"),
    )
}

#[test]
fn every_key_of_the_study_file_is_documented_and_every_documented_key_exists() {
    let (schema, model, doc) = sources();
    let p = problems(&schema, &model, &doc);
    assert!(
        p.is_empty(),
        "docs/study-file.md disagrees with src/study/:\n  {}",
        p.join("\n  ")
    );
    // What the checker saw: the sections of the file, and more than a handful of keys.
    let want = file_structs(&schema, &model);
    for s in [
        "RawStudy",
        "RawPrompts",
        "RawClassifier",
        "GenerationSpec",
        "SamplerSpec",
        "RawFinetune",
        "RawFamily",
        "RawModel",
        "RawEndpoint",
        "RawComparison",
        "RawDrift",
        "RawDriftCheckpoints",
        "RawSource",
    ] {
        assert!(want.contains_key(s), "{s} not found; saw {:?}", want.keys());
    }
    assert!(want.values().map(Vec::len).sum::<usize>() > 60);
    assert!(want["RawPrompts"].contains(&"severe_threshold".to_string()));
    assert!(want["SamplerSpec"].contains(&"hdi_mass".to_string()));
    assert!(roles(&model).contains(&"fine-tune".to_string()));
}

#[test]
fn a_key_added_to_the_schema_without_documenting_it_fails() {
    let (schema, model, doc) = sources();
    let added = schema.replacen(
        "pub(super) struct RawPrompts {\n",
        "pub(super) struct RawPrompts {\n    #[serde(default)]\n    pub(super) shiny_new_key: Option<usize>,\n",
        1,
    );
    assert_ne!(added, schema, "RawPrompts not found in schema.rs");
    let p = problems(&added, &model, &doc);
    assert_eq!(
        p,
        vec!["`RawPrompts`: key `shiny_new_key` is not documented".to_string()]
    );

    // A renamed key counts by its TOML name.
    let renamed = schema.replacen(
        "pub(super) struct RawPrompts {\n",
        "pub(super) struct RawPrompts {\n    #[serde(rename = \"other-name\")]\n    pub(super) x: bool,\n",
        1,
    );
    assert_eq!(
        problems(&renamed, &model, &doc),
        vec!["`RawPrompts`: key `other-name` is not documented".to_string()]
    );

    // A new table struct without a tagged table.
    let table = schema.replacen(
        "    pub(super) prompts: RawPrompts,\n",
        "    pub(super) prompts: RawPrompts,\n    pub(super) extra: Option<RawExtra>,\n",
        1,
    ) + "\npub(super) struct RawExtra {\n    pub(super) knob: usize,\n}\n";
    let p = problems(&table, &model, &doc);
    assert!(
        p.iter().any(|l| l.contains("`RawStudy`: key `extra`")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|l| l.contains("`RawExtra` (keys: knob) has no table")),
        "{p:?}"
    );

    // A sampler key added to model.rs's SamplerSpec (the [sampler] table reads it directly).
    let sampler = model.replacen(
        "pub struct SamplerSpec {\n",
        "pub struct SamplerSpec {\n    /// New.\n    pub max_something: f64,\n",
        1,
    );
    assert_ne!(sampler, model, "SamplerSpec not found in model.rs");
    assert_eq!(
        problems(&schema, &sampler, &doc),
        vec!["`SamplerSpec`: key `max_something` is not documented".to_string()]
    );

    // A role added to `Role::as_str`.
    let role = model.replacen(
        "Role::Base => \"base\",",
        "Role::Base => \"base\",\n            Role::Distilled => \"distilled\",",
        1,
    );
    assert_eq!(
        problems(&schema, &role, &doc),
        vec!["role `distilled` is not in the roles table".to_string()]
    );
}

#[test]
fn a_documented_key_that_does_not_exist_fails() {
    let (schema, model, doc) = sources();
    let marker =
        "<!-- keys: RawClassifier -->\n| key | type | default | meaning |\n|---|---|---|---|\n";
    assert!(
        doc.contains(marker),
        "the [classifier] table's header changed"
    );
    let extra = doc.replacen(
        marker,
        &format!("{marker}| `colour` | string | `\"red\"` | Not a key. |\n"),
        1,
    );
    assert_eq!(
        problems(&schema, &model, &extra),
        vec![
            "`RawClassifier`: the document lists `colour`, which the study file does not accept"
                .to_string()
        ]
    );
    let untagged = doc.replacen("<!-- keys: RawEndpoint -->", "", 1);
    let p = problems(&schema, &model, &untagged);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("`RawEndpoint` (keys: url, served_model"),
        "{p:?}"
    );
}
