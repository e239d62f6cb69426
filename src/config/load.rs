//! Loading the layers: embedded defaults, the TOML file, then `ROOMGATE_*` variables resolved against the key tree.

use super::{ApiKeyConfig, AppConfig, Config, ConfigError};
use std::path::Path;

impl Config {
    /// Defaults, then `file` (if any), then the given environment variables.
    pub fn load(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigError> {
        let mut value = toml::Value::try_from(Config::default()).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.into(),
                source,
            })?;
            let file_value: toml::Value =
                toml::from_str(&text).map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))?;
            merge(&mut value, file_value);
        }
        // Round-trip through `Config` so every key exists (serde defaults included) before the environment
        // is resolved against the key tree; file errors are reported here, before any env error.
        let normalized: Config = value
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.message().to_string()))?;
        let mut normalized = normalized;
        let env: Vec<(String, String)> = env.into_iter().collect();
        // Apps named only in the environment (ROOMGATE_APPS_<n>_...) start from an empty template.
        let wanted_apps = env_array_len(&env, "ROOMGATE_APPS_");
        while normalized.apps.len() < wanted_apps {
            normalized.apps.push(AppConfig {
                sdkappid: 0,
                secret_key: String::new(),
                ..Default::default()
            });
        }
        let wanted_keys = env_array_len(&env, "ROOMGATE_API_KEYS_");
        while normalized.api_keys.len() < wanted_keys {
            normalized.api_keys.push(ApiKeyConfig {
                secret_id: String::new(),
                secret_key: String::new(),
                sdkappids: Vec::new(),
            });
        }
        let mut value = toml::Value::try_from(normalized).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let shape = key_shape();
        for (var, raw) in env {
            let Some(rest) = var.strip_prefix("ROOMGATE_") else {
                continue;
            };
            if rest == "CONFIG" {
                continue;
            }
            // Containers set unrelated ROOMGATE_-prefixed variables: only names under our own keys are ours
            // (and then a typo in them is an error); anything else is ignored with a warning.
            let path = rest.to_ascii_lowercase();
            let ours = shape
                .as_table()
                .is_some_and(|t| t.keys().any(|k| path == *k || path.starts_with(&format!("{k}_"))));
            if !ours {
                eprintln!("roomgate: ignoring environment variable {var}: it names no configuration key or table");
                continue;
            }
            if let Err(why) = set_by_env_path(&mut value, Some(&shape), &path, &raw) {
                // Kubernetes injects <SERVICE>_PORT, <SERVICE>_SERVICE_HOST, ... for a Service named like us.
                if is_service_link(&path) {
                    eprintln!("roomgate: ignoring environment variable {var}: a Kubernetes service link, not a key");
                    continue;
                }
                return Err(ConfigError::Env { var: var.clone(), why });
            }
        }
        let config: Config = value
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.message().to_string()))?;
        config.validate()?;
        Ok(config)
    }
}

/// How many elements the environment names for the array whose variables start with `prefix` (`PREFIX<n>_...`).
fn env_array_len(env: &[(String, String)], prefix: &str) -> usize {
    env.iter()
        .filter_map(|(k, _)| k.strip_prefix(prefix)?.split('_').next()?.parse::<usize>().ok())
        .map(|i| i + 1)
        .max()
        .unwrap_or(0)
}

fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) if existing.is_table() && v.is_table() => merge(existing, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// Whether `path` (lower case) has the shape of a Kubernetes service-link variable: `..._port`,
/// `..._port_<n>_tcp[...]`, `..._service_host`, `..._service_port[...]`.
fn is_service_link(path: &str) -> bool {
    let parts: Vec<&str> = path.split('_').collect();
    let n = parts.len();
    parts.ends_with(&["port"])
        || parts.ends_with(&["service", "host"])
        || parts.windows(2).any(|w| w == ["service", "port"])
        || (n >= 3
            && parts.windows(3).any(|w| {
                w[0] == "port" && w[1].bytes().all(|b| b.is_ascii_digit()) && ["tcp", "udp", "sctp"].contains(&w[2])
            }))
}

/// Every key the configuration has, optional ones included (an unset `Option` is left out of the serialized
/// tree, so the environment could not name it otherwise), each with a value of its type; an array holds one
/// element that stands for all. A new optional key needs its example here.
fn key_shape() -> toml::Value {
    let config = Config {
        apps: vec![AppConfig {
            opus_complexity: Some(0),
            opus_frame_ms: Some(0),
            ..Default::default()
        }],
        ..Default::default()
    };
    toml::Value::try_from(config).expect("the default configuration serializes")
}

/// Resolve `path` (lower case, `_`-joined) against the keys that exist, or that `shape` says may exist, and set
/// the value there. Key names contain `_` themselves, so each step tries the keys of the current table as
/// prefixes.
fn set_by_env_path(node: &mut toml::Value, shape: Option<&toml::Value>, path: &str, raw: &str) -> Result<(), String> {
    match node {
        toml::Value::Table(t) => {
            let shape = shape.and_then(toml::Value::as_table);
            let mut keys: Vec<String> = t.keys().cloned().collect();
            keys.extend(
                shape
                    .into_iter()
                    .flat_map(|s| s.keys())
                    .filter(|k| !t.contains_key(*k))
                    .cloned(),
            );
            keys.sort_by_key(|k| std::cmp::Reverse(k.len()));
            for k in keys {
                let like = shape.and_then(|s| s.get(&k));
                if path == k {
                    let typed = typed_like(t.get(&k).or(like), raw)?;
                    t.insert(k, typed);
                    return Ok(());
                }
                if let Some(rest) = path.strip_prefix(&format!("{k}_")) {
                    let Some(child) = t.get_mut(&k) else { continue };
                    if child.is_table() || child.is_array() {
                        return set_by_env_path(child, like, rest, raw);
                    }
                }
            }
            Err(format!("no configuration key matches {path:?}"))
        }
        toml::Value::Array(a) => {
            let (idx, rest) = path
                .split_once('_')
                .ok_or_else(|| format!("{path:?} needs an index and a key"))?;
            let idx: usize = idx.parse().map_err(|_| format!("{idx:?} is not an array index"))?;
            let len = a.len();
            let elem = a
                .get_mut(idx)
                .ok_or_else(|| format!("index {idx} is past the {len} elements"))?;
            let shape = shape.and_then(toml::Value::as_array).and_then(|s| s.first());
            set_by_env_path(elem, shape, rest, raw)
        }
        _ => Err("not a table".into()),
    }
}

fn typed_like(existing: Option<&toml::Value>, raw: &str) -> Result<toml::Value, String> {
    Ok(match existing {
        Some(toml::Value::String(_)) => toml::Value::String(raw.into()),
        Some(toml::Value::Integer(_)) => {
            toml::Value::Integer(raw.trim().parse().map_err(|_| format!("{raw:?} is not an integer"))?)
        }
        Some(toml::Value::Boolean(_)) => toml::Value::Boolean(match raw.trim() {
            "1" | "true" | "yes" | "on" => true,
            "0" | "false" | "no" | "off" => false,
            _ => return Err(format!("{raw:?} is not a boolean")),
        }),
        Some(toml::Value::Float(_)) => {
            toml::Value::Float(raw.trim().parse().map_err(|_| format!("{raw:?} is not a number"))?)
        }
        // A list: comma-separated elements (integers stay integers), e.g. `10.1.2.0/24,10.9.0.0/16`.
        Some(toml::Value::Array(_)) => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(|e| match e.parse::<i64>() {
                    Ok(i) => toml::Value::Integer(i),
                    Err(_) => toml::Value::String(e.into()),
                })
                .collect(),
        ),
        _ => toml::Value::String(raw.into()),
    })
}
