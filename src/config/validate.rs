//! The checks a loaded configuration must pass before anything starts.

use super::{Config, ConfigError};

impl Config {
    /// TLS listeners need an address that parses and a certificate; a plain listener may be off only when its TLS
    /// one is on.
    fn validate_tls(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("http.tls_listen", &self.http.tls_listen),
            ("rtmp.tls_listen", &self.rtmp.tls_listen),
        ] {
            if !value.is_empty() && value.parse::<std::net::SocketAddr>().is_err() {
                return Err(ConfigError::Invalid(format!(
                    "{key} {value:?} is not an address (e.g. 0.0.0.0:8443)"
                )));
            }
        }
        let tls_on = !self.http.tls_listen.is_empty() || self.rtmp.enabled && !self.rtmp.tls_listen.is_empty();
        if tls_on && (self.tls.cert_file.as_os_str().is_empty() || self.tls.key_file.as_os_str().is_empty()) {
            return Err(ConfigError::Invalid(
                "a TLS listener needs tls.cert_file and tls.key_file (PEM; `roomgate tls selfsigned --host <name>` \
                 writes a development pair)"
                    .into(),
            ));
        }
        if !self.http.plain && self.http.tls_listen.is_empty() {
            return Err(ConfigError::Invalid(
                "http.plain = false needs http.tls_listen: roomgate must serve HTTP one way or the other".into(),
            ));
        }
        if self.rtmp.enabled && !self.rtmp.plain && self.rtmp.tls_listen.is_empty() {
            return Err(ConfigError::Invalid(
                "rtmp.plain = false needs rtmp.tls_listen (or rtmp.enabled = false for no RTMP at all)".into(),
            ));
        }
        if self.tls.check_every_secs == 0 {
            return Err(ConfigError::Invalid("tls.check_every_secs must be at least 1".into()));
        }
        Ok(())
    }

    /// Refuse a configuration whose apps, API keys or values cannot work (duplicates, empty keys, ...).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_tls()?;
        let mut seen = std::collections::HashSet::new();
        for app in &self.apps {
            if !seen.insert(app.sdkappid) {
                return Err(ConfigError::Invalid(format!(
                    "app {} is configured twice",
                    app.sdkappid
                )));
            }
            if app.sdkappid == 0 {
                return Err(ConfigError::Invalid("an app has no sdkappid".into()));
            }
            if app.secret_key.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "app {} has an empty secret_key",
                    app.sdkappid
                )));
            }
        }
        let mut ids = std::collections::HashSet::new();
        for key in &self.api_keys {
            if key.secret_id.is_empty() || key.secret_key.is_empty() {
                return Err(ConfigError::Invalid(
                    "an api_keys entry needs both secret_id and secret_key".into(),
                ));
            }
            if !ids.insert(&key.secret_id) {
                return Err(ConfigError::Invalid(format!(
                    "api key {} is configured twice",
                    key.secret_id
                )));
            }
        }
        for app in &self.apps {
            if !app.callback_url.is_empty() && url::Url::parse(&app.callback_url).is_err() {
                return Err(ConfigError::Invalid(format!(
                    "app {}: callback_url {:?} is not a URL",
                    app.sdkappid, app.callback_url
                )));
            }
            if !app.callback_url.is_empty() && app.callback_key.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "app {}: callback_url is set but callback_key is empty (receivers could not verify Sign)",
                    app.sdkappid
                )));
            }
        }
        if self.callbacks.timeout_secs == 0 || self.callbacks.retry_interval_secs == 0 {
            return Err(ConfigError::Invalid(
                "callbacks.timeout_secs and callbacks.retry_interval_secs must be at least 1".into(),
            ));
        }
        if self.callbacks.memory_queue_max == 0 {
            return Err(ConfigError::Invalid(
                "callbacks.memory_queue_max must be at least 1".into(),
            ));
        }
        if self.audio.opus_complexity > 10 || self.apps.iter().any(|a| a.opus_complexity.is_some_and(|c| c > 10)) {
            return Err(ConfigError::Invalid(
                "audio.opus_complexity (and an app's opus_complexity) must be within 0..=10".into(),
            ));
        }
        let frame_ms_ok = |ms: u8| crate::media::transcode::OPUS_FRAME_MS.contains(&ms);
        if !frame_ms_ok(self.audio.opus_frame_ms)
            || self
                .apps
                .iter()
                .any(|a| a.opus_frame_ms.is_some_and(|m| !frame_ms_ok(m)))
        {
            return Err(ConfigError::Invalid(
                "audio.opus_frame_ms (and an app's opus_frame_ms) must be 10, 20, 40 or 60".into(),
            ));
        }
        if !(6_000..=510_000).contains(&self.audio.opus_bitrate) {
            return Err(ConfigError::Invalid(
                "audio.opus_bitrate must be within 6000..=510000".into(),
            ));
        }
        if self.rtmp.handshake_timeout_secs > 3600 || self.rtmp.idle_timeout_secs > 86_400 {
            return Err(ConfigError::Invalid(
                "rtmp.handshake_timeout_secs is at most 3600 and rtmp.idle_timeout_secs at most 86400".into(),
            ));
        }
        if !self.pull.ca_file.as_os_str().is_empty() {
            crate::tls::read_certificates(&self.pull.ca_file)
                .map_err(|e| ConfigError::Invalid(format!("pull.ca_file: {e}")))?;
        }
        if self.srt.enabled && (self.srt.latency_ms > 10_000 || self.srt.idle_timeout_secs > 86_400) {
            return Err(ConfigError::Invalid(
                "srt.latency_ms is at most 10000 and srt.idle_timeout_secs at most 86400".into(),
            ));
        }
        if let Some(app) = self
            .apps
            .iter()
            .find(|a| !a.srt_passphrase.is_empty() && !(10..=79).contains(&a.srt_passphrase.len()))
        {
            return Err(ConfigError::Invalid(format!(
                "the srt_passphrase of app {} must have 10 to 79 characters (SRT's limits)",
                app.sdkappid
            )));
        }
        if self.rtmp.max_message_size > 64 << 20 {
            return Err(ConfigError::Invalid("rtmp.max_message_size is at most 64 MiB".into()));
        }
        for app in self
            .apps
            .iter()
            .filter(|a| a.public_playback && a.require_private_map_key)
        {
            tracing::warn!(
                sdkappid = app.sdkappid,
                "public_playback lets anyone watch; require_private_map_key then applies to publishing only"
            );
        }
        if self.http.header_timeout_secs == 0
            || self.http.idle_timeout_secs == 0
            || self.http.body_timeout_secs == 0
            || self.http.max_connections == 0
            || self.http.max_connections_per_ip == 0
        {
            return Err(ConfigError::Invalid(
                "http.max_connections, http.max_connections_per_ip and the http.*_timeout_secs must be at least 1"
                    .into(),
            ));
        }
        if self.rtc.workers > 256 {
            return Err(ConfigError::Invalid(
                "rtc.workers is at most 256 (0: one per CPU core)".into(),
            ));
        }
        if self.rtc.max_sessions == 0
            || self.rtc.tcp_max_connections == 0
            || self.rtc.tcp_max_connections_per_ip == 0
            || self.rtc.tcp_stun_timeout_secs == 0
        {
            return Err(ConfigError::Invalid(
                "rtc.max_sessions, rtc.tcp_max_connections, rtc.tcp_max_connections_per_ip and rtc.tcp_stun_timeout_secs must be at least 1".into(),
            ));
        }
        if self.rtmp.chunk_size < 128 || self.rtmp.chunk_size > self.rtmp.max_chunk_size {
            return Err(ConfigError::Invalid(
                "rtmp.chunk_size must be within 128..=rtmp.max_chunk_size".into(),
            ));
        }
        let id = &self.cluster.node_id;
        if !id.is_empty() && (id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))) {
            return Err(ConfigError::Invalid(format!(
                "cluster.node_id {id:?}: use 1-64 characters from letters, digits, '.', '_' and '-'"
            )));
        }
        let url = &self.cluster.redis_url;
        if !url.is_empty()
            && !["redis://", "rediss://", "unix://", "redis+unix://", "redis+sentinel://"]
                .iter()
                .any(|p| url.starts_with(p))
        {
            return Err(ConfigError::Invalid(format!(
                "cluster.redis_url {url:?} is not a Redis URL (redis://host:port/db, rediss:// for TLS, \
                 redis+sentinel://host:port[,host:port...]/<master name>/db for Sentinels)"
            )));
        }
        let cluster = &self.cluster;
        if !cluster.redis_url.is_empty() {
            if cluster.whep == super::RemoteViewers::Relay && cluster.secret.is_empty() {
                return Err(ConfigError::Invalid(
                    "cluster.secret: relayed viewers (cluster.whep = \"relay\", the default) need a secret shared by \
                     all nodes (32+ random characters, e.g. `openssl rand -hex 32`); or set cluster.whep = \"redirect\""
                        .into(),
                ));
            }
            if !cluster.secret.is_empty() && cluster.secret.len() < 32 {
                return Err(ConfigError::Invalid(
                    "cluster.secret: at least 32 characters (it signs relay links, whose handshakes travel in the \
                     clear; e.g. `openssl rand -hex 32`)"
                        .into(),
                ));
            }
            for (name, cost) in [
                ("task_cost_passthrough", cluster.task_cost_passthrough),
                ("task_cost_transcode", cluster.task_cost_transcode),
            ] {
                if !(0.0..=64.0).contains(&cost) {
                    return Err(ConfigError::Invalid(format!(
                        "cluster.{name} is in cores: within 0..=64 (got {cost})"
                    )));
                }
            }
            if !(0.0..=1.0).contains(&cluster.max_load) {
                return Err(ConfigError::Invalid("cluster.max_load must be within 0..=1".into()));
            }
            let adv = &cluster.advertise_http;
            let absolute = url::Url::parse(adv)
                .is_ok_and(|u| ["http", "https"].contains(&u.scheme()) && u.host().is_some() && u.path() == "/");
            if !adv.is_empty() && (!absolute || adv.contains('?') || adv.contains('#')) {
                return Err(ConfigError::Invalid(format!(
                    "cluster.advertise_http {adv:?}: an absolute http(s) URL with a host and nothing after it, \
                     e.g. http://10.0.0.5:8080"
                )));
            }
        }
        Ok(())
    }
}
