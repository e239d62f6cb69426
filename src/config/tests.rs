//! Loading, layering and validating the configuration.

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

#[test]
fn defaults_need_nothing() {
    let c = Config::load(None, vec![]).unwrap();
    assert_eq!(c.rtmp.listen.port(), 1935);
    assert_eq!(c.http.listen.port(), 8080);
    assert_eq!(c.data_dir, PathBuf::from("./roomgate-data"));
    assert_eq!(c.audio.opus_bitrate, 64000);
}

/// `text` as a config file, loaded with no environment.
fn load(text: &str) -> Result<Config, String> {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("roomgate.toml");
    std::fs::write(&f, text).unwrap();
    Config::load(Some(&f), vec![]).map_err(|e| e.to_string())
}

#[test]
fn allowed_private_cidrs_are_parsed_at_load() {
    let c = load("[pull]\nallow_private_cidrs = [\"10.1.2.0/24\"]\n").unwrap();
    assert_eq!(c.pull.allow_private_cidrs.len(), 1);
    assert!(c.pull.allow_private_cidrs[0].contains("10.1.2.3".parse().unwrap()));
    assert!(!c.pull.allow_private_sources);

    let e = load("[pull]\nallow_private_cidrs = [\"10.1.2.0/33\"]\n").unwrap_err();
    assert!(e.contains("invalid config") && e.contains("10.1.2.0/33"), "{e}");
    let e = load("[pull]\nallow_private_cidrs = [\"intranet\"]\n").unwrap_err();
    assert!(e.contains("not a CIDR"), "{e}");

    let c = Config::load(
        None,
        env(&[("ROOMGATE_PULL_ALLOW_PRIVATE_CIDRS", "10.1.2.0/24, 192.168.7.0/24")]),
    )
    .unwrap();
    assert_eq!(c.pull.allow_private_cidrs.len(), 2);
    assert!(Config::load(None, env(&[("ROOMGATE_PULL_ALLOW_PRIVATE_CIDRS", "10.1.2.3/8")])).is_err());
}

#[test]
fn file_then_env() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("roomgate.toml");
    std::fs::write(
        &f,
        "[rtmp]\nlisten = \"127.0.0.1:2935\"\n[[apps]]\nsdkappid = 7\nsecret_key = \"k\"\n",
    )
    .unwrap();
    let c = Config::load(
        Some(&f),
        env(&[
            ("ROOMGATE_HTTP_LISTEN", "127.0.0.1:9999"),
            ("ROOMGATE_AUDIO_OPUS_BITRATE", "96000"),
            ("ROOMGATE_APPS_0_SECRET_KEY", "123"),
            ("ROOMGATE_APPS_0_REQUIRE_PRIVATE_MAP_KEY", "true"),
            ("ROOMGATE_APPS_1_SDKAPPID", "8"),
            ("ROOMGATE_APPS_1_SECRET_KEY", "other"),
            ("ROOMGATE_RTMP_ENABLED", "false"),
            ("ROOMGATE_DATA_DIR", "/tmp/x"),
            ("UNRELATED", "1"),
        ]),
    )
    .unwrap();
    assert_eq!(c.rtmp.listen.port(), 2935);
    assert!(!c.rtmp.enabled);
    assert_eq!(c.http.listen.port(), 9999);
    assert_eq!(c.audio.opus_bitrate, 96000);
    assert_eq!(c.apps[0].secret_key, "123", "string keys stay strings");
    assert!(c.apps[0].require_private_map_key);
    assert_eq!((c.apps[1].sdkappid, c.apps[1].secret_key.as_str()), (8, "other"));
    assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
}

#[test]
fn bad_values_are_named() {
    let e = Config::load(None, env(&[("ROOMGATE_RTMP_NOPE", "1")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("ROOMGATE_RTMP_NOPE"), "{e}");
    // A name under no table of ours (a container's own variable) is ignored, not an error.
    assert!(Config::load(None, env(&[("ROOMGATE_SIDECAR_TOKEN", "x"), ("ROOMGATE_VERSION", "1")])).is_ok());
    // Nor are the variables Kubernetes injects for a Service named roomgate-rtmp, while real keys still work.
    let k8s = Config::load(
        None,
        env(&[
            ("ROOMGATE_RTMP_PORT", "tcp://10.0.0.1:1935"),
            ("ROOMGATE_RTMP_PORT_1935_TCP_ADDR", "10.0.0.1"),
            ("ROOMGATE_RTMP_SERVICE_HOST", "10.0.0.1"),
            ("ROOMGATE_RTMP_SERVICE_PORT", "1935"),
            ("ROOMGATE_RTC_UDP_PORT", "9000"),
        ]),
    )
    .unwrap();
    assert_eq!(k8s.rtc.udp_port, 9000);
    let e = Config::load(None, env(&[("ROOMGATE_AUDIO_OPUS_BITRATE", "lots")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not an integer"), "{e}");
    assert!(load("[rtmp]\nlisen = \"x\"\n").unwrap_err().contains("lisen"));
}

#[test]
fn opus_settings_follow_the_app_then_the_default() {
    let c = load(
        "[audio]\nopus_complexity = 3\n[[apps]]\nsdkappid = 7\nsecret_key = \"k\"\nopus_complexity = 1\n\
         [[apps]]\nsdkappid = 8\nsecret_key = \"k\"\n",
    )
    .unwrap();
    assert_eq!(c.opus_settings(7, None).complexity, 1);
    assert_eq!(c.opus_settings(8, None).complexity, 3);
    assert_eq!(c.opus_settings(8, Some(32_000)).bitrate, 32_000);
    assert_eq!(Config::default().audio.opus_complexity, DEFAULT_OPUS_COMPLEXITY);
    assert!(load("[audio]\nopus_complexity = 11\n")
        .unwrap_err()
        .contains("opus_complexity"));
}

#[test]
fn optional_keys_can_be_set_from_the_environment_too() {
    // Unset, they are not in the serialized tree the variables are resolved against.
    let c = Config::load(
        None,
        env(&[
            ("ROOMGATE_APPS_0_SDKAPPID", "7"),
            ("ROOMGATE_APPS_0_SECRET_KEY", "k"),
            ("ROOMGATE_APPS_0_OPUS_FRAME_MS", "20"),
            ("ROOMGATE_APPS_0_OPUS_COMPLEXITY", "3"),
        ]),
    )
    .unwrap();
    assert_eq!(c.opus_settings(7, None).frame_ms, 20);
    assert_eq!(c.opus_settings(7, None).complexity, 3);
    let e = Config::load(None, env(&[("ROOMGATE_APPS_0_OPUS_FRAME_MS", "x")]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("ROOMGATE_APPS_0_OPUS_FRAME_MS") && e.contains("integer"),
        "{e}"
    );
}

#[test]
fn opus_frame_duration_follows_the_app_then_the_default_and_is_checked() {
    let c = load(
        "[audio]\nopus_frame_ms = 60\n[[apps]]\nsdkappid = 7\nsecret_key = \"k\"\nopus_frame_ms = 20\n\
         [[apps]]\nsdkappid = 8\nsecret_key = \"k\"\n",
    )
    .unwrap();
    assert_eq!(c.opus_settings(7, None).frame_ms, 20);
    assert_eq!(c.opus_settings(7, None).frame_samples(), 960);
    assert_eq!(c.opus_settings(8, None).frame_ms, 60);
    assert_eq!(Config::default().opus_settings(1, None).frame_ms, DEFAULT_OPUS_FRAME_MS);
    for bad in [
        "[audio]\nopus_frame_ms = 30\n",
        "[[apps]]\nsdkappid = 7\nsecret_key = \"k\"\nopus_frame_ms = 5\n",
    ] {
        assert!(load(bad).unwrap_err().contains("opus_frame_ms"), "{bad}");
    }
}

#[test]
fn a_callback_url_needs_a_callback_key() {
    let app = "[[apps]]\nsdkappid = 7\nsecret_key = \"k\"\ncallback_url = \"http://127.0.0.1:9/cb\"\n";
    let e = load(app).unwrap_err();
    assert!(e.contains("callback_key is empty"), "{e}");
    assert!(load(&format!("{app}callback_key = \"s\"\n")).is_ok());
}

#[test]
fn tls_listeners_need_a_certificate_and_a_plain_listener_may_go_only_for_its_tls_one() {
    let e = load("[http]\ntls_listen = \"127.0.0.1:8443\"\n").unwrap_err();
    assert!(e.contains("tls.cert_file") && e.contains("selfsigned"), "{e}");
    let e = load("[rtmp]\ntls_listen = \"not an address\"\n").unwrap_err();
    assert!(e.contains("rtmp.tls_listen"), "{e}");
    let e = load("[http]\nplain = false\n").unwrap_err();
    assert!(e.contains("http.tls_listen"), "{e}");
    let e = load("[rtmp]\nplain = false\n").unwrap_err();
    assert!(e.contains("rtmp.tls_listen"), "{e}");
    let c = load(
        "[tls]\ncert_file = \"/etc/roomgate/cert.pem\"\nkey_file = \"/etc/roomgate/key.pem\"\n\
         [http]\nplain = false\ntls_listen = \"0.0.0.0:8443\"\n[rtmp]\ntls_listen = \"0.0.0.0:1936\"\n",
    )
    .unwrap();
    assert_eq!(c.https_listen(), Some("0.0.0.0:8443".parse().unwrap()));
    assert_eq!(c.rtmps_listen(), Some("0.0.0.0:1936".parse().unwrap()));
    assert!(c.rtmp.plain && !c.http.plain);
    // From the environment too.
    let c = Config::load(
        None,
        env(&[
            ("ROOMGATE_HTTP_TLS_LISTEN", "127.0.0.1:9443"),
            ("ROOMGATE_TLS_CERT_FILE", "/c.pem"),
            ("ROOMGATE_TLS_KEY_FILE", "/k.pem"),
        ]),
    )
    .unwrap();
    assert_eq!(c.https_listen(), Some("127.0.0.1:9443".parse().unwrap()));
}
