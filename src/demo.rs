//! Demo provisioning for `roomgate serve` on a fresh machine: when the configuration names no app (or no Cloud API
//! key), one is created once in the data dir (mode 0600) and reused on every start, so the console, the examples
//! and the Cloud API work out of the box.

use crate::config::{ApiKeyConfig, AppConfig, Config, ConfigError};
use std::path::Path;

/// When no app is configured, load (or create and store, mode 0600) the demo app in the data dir.
/// Returns the demo app when one is in use.
pub fn ensure_app(config: &mut Config) -> Result<Option<AppConfig>, ConfigError> {
    if !config.apps.is_empty() {
        return Ok(None);
    }
    let path = config.data_dir.join("demo-app.toml");
    let app = match std::fs::read_to_string(&path) {
        Ok(text) => {
            toml::from_str::<AppConfig>(&text).map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let app = AppConfig {
                sdkappid: 1_400_000_000 + rand::random_range(0..100_000_000u64),
                secret_key: (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect(),
                name: "demo".into(),
                ..Default::default()
            };
            write_private(&path, &toml::to_string(&app).expect("app serializes"))?;
            app
        }
        Err(source) => return Err(ConfigError::Read { path, source }),
    };
    config.apps.push(app.clone());
    Ok(Some(app))
}

/// When no API key is configured, load (or create and store, mode 0600) a demo SecretId/SecretKey in the data
/// dir so the Cloud API works out of the box. Returns the demo key when one is in use.
pub fn ensure_api_key(config: &mut Config) -> Result<Option<ApiKeyConfig>, ConfigError> {
    if !config.api_keys.is_empty() {
        return Ok(None);
    }
    let path = config.data_dir.join("demo-api-key.toml");
    let key = match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str::<ApiKeyConfig>(&text)
            .map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let hex = |n: usize| -> String { (0..n).map(|_| format!("{:02x}", rand::random::<u8>())).collect() };
            let key = ApiKeyConfig {
                secret_id: format!("AKID{}", hex(16)),
                secret_key: hex(16),
                sdkappids: Vec::new(),
            };
            write_private(&path, &toml::to_string(&key).expect("key serializes"))?;
            key
        }
        Err(source) => return Err(ConfigError::Read { path, source }),
    };
    config.api_keys.push(key.clone());
    Ok(Some(key))
}

fn write_private(path: &Path, text: &str) -> Result<(), ConfigError> {
    use std::io::Write;
    let err = |source| ConfigError::Write {
        path: path.into(),
        source,
    };
    if let Some(dir) = path.parent() {
        crate::store::create_private_dir(dir).map_err(err)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path).map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_app_is_created_once_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Config {
            data_dir: dir.path().join("data"),
            ..Config::default()
        };
        let app = ensure_app(&mut c).unwrap().unwrap();
        let mut c2 = Config {
            data_dir: dir.path().join("data"),
            ..Config::default()
        };
        assert_eq!(ensure_app(&mut c2).unwrap().unwrap(), app, "the stored key is reused");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("data/demo-app.toml"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(c.apps.len(), 1);
    }
}
