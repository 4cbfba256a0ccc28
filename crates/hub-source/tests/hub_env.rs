//! `Hub::from_env` follows Python's environment variables. One test in its own binary, since it
//! sets process environment variables.

use hub_source::{Hub, HubRepo, cache_dir_from_env, offline_from_env};

#[test]
fn environment_decides_cache_and_offline_mode() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("hf");
    let secret = "hf_secretTOKENvalue123";
    // SAFETY: this test binary has a single test, so no other thread reads the environment.
    unsafe {
        std::env::remove_var("HF_HUB_CACHE");
        std::env::set_var("HF_HOME", &home);
        std::env::set_var("HF_HUB_OFFLINE", "1");
        std::env::set_var("HF_TOKEN", secret);
    }
    assert_eq!(cache_dir_from_env(), home.join("hub"));
    assert!(offline_from_env());
    let hub = Hub::from_env();
    assert!(hub.is_offline());
    assert!(hub.has_token());
    assert_eq!(hub.cache_dir(), home.join("hub"));
    // The token is never shown.
    let debug = format!("{hub:?} {hub:#?}");
    assert!(
        !debug.contains(secret) && debug.contains("redacted"),
        "{debug}"
    );
    let repo = HubRepo::dataset("allenai/real-toxicity-prompts").unwrap();
    let err = hub.get(&repo, "prompts.jsonl").unwrap_err();
    let msg = format!("{err} {err:?}");
    assert!(msg.contains("HF_HUB_OFFLINE"), "{msg}");
    assert!(!msg.contains(secret), "{msg}");

    for (value, offline) in [
        ("true", true),
        ("YES", true),
        ("on", true),
        ("0", false),
        ("", false),
    ] {
        unsafe { std::env::set_var("HF_HUB_OFFLINE", value) };
        assert_eq!(offline_from_env(), offline, "{value:?}");
    }
    // HF_HUB_CACHE wins over HF_HOME, as in huggingface_hub.
    let explicit = dir.path().join("explicit");
    unsafe { std::env::set_var("HF_HUB_CACHE", &explicit) };
    assert_eq!(cache_dir_from_env(), explicit);
    unsafe {
        std::env::remove_var("HF_HUB_CACHE");
        std::env::remove_var("HF_HOME");
        std::env::set_var("XDG_CACHE_HOME", dir.path().join("xdg"));
    }
    assert_eq!(cache_dir_from_env(), dir.path().join("xdg/huggingface/hub"));
}
