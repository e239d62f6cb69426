//! The node's connection to the cluster's Redis: one server named by a `redis://` URL, or the master that a set of
//! Sentinels names (`redis+sentinel://`), asked again when the connection fails, so that a Sentinel failover
//! moves every part of the node (registry, rooms, tasks, takeover, pub/sub) to the new master by itself.

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::io::tcp::{socket2::TcpKeepalive, TcpSettings};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{Cmd, IntoConnectionInfo, Pipeline, RedisError, RedisFuture, RedisResult, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Redis calls give up after this (a node must not hang on an unreachable Redis; its refresh runs every 5 s).
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// The least time between two questions to the Sentinels after failures (a dead master fails every command).
const ASK_AGAIN_AFTER: Duration = Duration::from_secs(1);

/// A `redis+sentinel://[[user]:password@]host:port[,host:port...]/<master name>[/<db>]` URL, parsed. The
/// credentials and database are the master's; the Sentinels are asked without them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelUrl {
    /// The Sentinels, in the order to try them.
    pub sentinels: Vec<(String, u16)>,
    /// The name the Sentinels monitor the master under.
    pub master: String,
    /// The database number on the master.
    pub db: i64,
    /// The master's ACL user, if any.
    pub username: Option<String>,
    /// The master's password, if any.
    pub password: Option<String>,
}

/// The URL scheme of Sentinel-discovered masters.
pub const SENTINEL_SCHEME: &str = "redis+sentinel://";

impl SentinelUrl {
    /// Parse `url`; `None` if it is not a `redis+sentinel://` URL, `Err` (a sentence) if it is a bad one.
    pub fn parse(url: &str) -> Option<Result<SentinelUrl, String>> {
        let rest = url.strip_prefix(SENTINEL_SCHEME)?;
        Some(Self::parse_rest(rest).map_err(|why| {
            format!("{why} (expected redis+sentinel://[[user]:password@]host:port[,host:port...]/<master name>[/<db>])")
        }))
    }

    fn parse_rest(rest: &str) -> Result<SentinelUrl, String> {
        let (authority, path) = rest.split_once('/').ok_or("no master name")?;
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let decode = |s: &str| -> Result<String, String> {
            url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .ok_or_else(|| "bad credentials".to_string())
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(u) => match u.split_once(':') {
                Some((user, pass)) => (
                    Some(decode(user)?).filter(|s| !s.is_empty()),
                    Some(decode(pass)?).filter(|s| !s.is_empty()),
                ),
                None => (Some(decode(u)?).filter(|s| !s.is_empty()), None),
            },
        };
        let mut sentinels = Vec::new();
        for h in hosts.split(',') {
            let (host, port) = match h.rsplit_once(':') {
                Some((host, port)) => (host, port.parse::<u16>().map_err(|_| format!("bad port in {h:?}"))?),
                None => (h, 26379),
            };
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.is_empty() || port == 0 {
                return Err(format!("bad Sentinel address {h:?}"));
            }
            sentinels.push((host.to_string(), port));
        }
        let mut parts = path.splitn(2, '/');
        let master = parts.next().unwrap_or_default().to_string();
        if master.is_empty() {
            return Err("no master name".into());
        }
        let db = match parts.next().filter(|s| !s.is_empty()) {
            Some(d) => d.parse::<i64>().map_err(|_| format!("bad database number {d:?}"))?,
            None => 0,
        };
        Ok(SentinelUrl {
            sentinels,
            master,
            db,
            username,
            password,
        })
    }
}

/// Where the node's Redis is: a fixed server, or the master the Sentinels name.
enum Source {
    Fixed(redis::Client),
    Sentinel(tokio::sync::Mutex<SentinelClient>),
}

/// The node's connection to Redis, shared (cheap to clone) by every part of the cluster. It is a
/// [`ConnectionLike`], so commands, pipelines and scripts run on it as on a `ConnectionManager`.
#[derive(Clone)]
pub struct RedisLink {
    inner: Arc<Inner>,
}

struct Inner {
    source: Source,
    db: i64,
    /// The server commands go to now, and its connection (reconnected by itself); `None` until the Sentinels
    /// first answer.
    current: std::sync::Mutex<Option<(redis::Client, ConnectionManager)>>,
    /// When the Sentinels last answered (or failed to), and how many times they were asked: a caller that waited
    /// for another's question takes its answer instead of asking again.
    asked: std::sync::Mutex<(Option<Instant>, u64)>,
}

/// TCP settings of every connection to Redis: a connection that Redis or the network dropped without a word (the
/// pub/sub ones only ever read) is noticed within about 10 s, not after the kernel's two hours.
fn tcp_settings() -> TcpSettings {
    let keepalive = TcpKeepalive::new()
        .with_time(Duration::from_secs(5))
        .with_interval(Duration::from_secs(2))
        .with_retries(3);
    TcpSettings::default()
        .set_nodelay(true)
        .set_keepalive(keepalive)
        .set_user_timeout(Duration::from_secs(10))
}

fn manager(client: &redis::Client) -> RedisResult<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(REDIS_TIMEOUT))
        .set_response_timeout(Some(REDIS_TIMEOUT))
        .set_number_of_retries(1);
    ConnectionManager::new_lazy_with_config(client.clone(), config)
}

impl RedisLink {
    /// A link to the Redis at `url` (`redis://`, `rediss://`, `unix://` or `redis+sentinel://`). Nothing is
    /// connected yet: a Redis (or Sentinel) that is down at start is retried, not fatal.
    pub fn open(url: &str) -> RedisResult<RedisLink> {
        let bad = |why: String| RedisError::from((redis::ErrorKind::InvalidClientConfig, "bad Redis URL", why));
        let (source, db, current) = match SentinelUrl::parse(url) {
            Some(parsed) => {
                let parsed = parsed.map_err(bad)?;
                let addrs = parsed
                    .sentinels
                    .iter()
                    .map(|(host, port)| redis::ConnectionAddr::Tcp(host.clone(), *port));
                let mut builder = SentinelClientBuilder::new(addrs, &parsed.master, SentinelServerType::Master)?
                    .set_client_to_redis_db(parsed.db)
                    .set_client_to_redis_tcp_settings(tcp_settings())
                    .set_client_to_sentinel_tcp_settings(tcp_settings());
                if let Some(u) = &parsed.username {
                    builder = builder.set_client_to_redis_username(u);
                }
                if let Some(p) = &parsed.password {
                    builder = builder.set_client_to_redis_password(p);
                }
                (
                    Source::Sentinel(tokio::sync::Mutex::new(builder.build()?)),
                    parsed.db,
                    None,
                )
            }
            None => {
                let info = url.into_connection_info()?.set_tcp_settings(tcp_settings());
                let db = info.redis_settings().db();
                let client = redis::Client::open(info)?;
                let m = manager(&client)?;
                (Source::Fixed(client.clone()), db, Some((client, m)))
            }
        };
        Ok(RedisLink {
            inner: Arc::new(Inner {
                source,
                db,
                current: std::sync::Mutex::new(current),
                asked: Default::default(),
            }),
        })
    }

    /// Whether `url` is one [`RedisLink::open`] takes (checked by the config check, before any connection).
    pub fn check_url(url: &str) -> Result<(), String> {
        match SentinelUrl::parse(url) {
            Some(r) => r.map(|_| ()),
            None => url.into_connection_info().map(|_| ()).map_err(|e| e.to_string()),
        }
    }

    /// A client of the server commands go to now, for connections of their own (pub/sub): with Sentinels, the
    /// master they name now.
    pub async fn client(&self) -> RedisResult<redis::Client> {
        match &self.inner.source {
            Source::Fixed(c) => Ok(c.clone()),
            Source::Sentinel(_) => {
                self.ask_sentinels(true).await?;
                self.current().map(|(c, _)| c).ok_or_else(|| {
                    RedisError::from((redis::ErrorKind::Io, "no Sentinel has named the Redis master yet"))
                })
            }
        }
    }

    fn current(&self) -> Option<(redis::Client, ConnectionManager)> {
        self.inner.current.lock().expect("link lock").clone()
    }

    /// The connection commands go to now, asking the Sentinels first if none is known yet (at most once a second:
    /// while they do not answer, commands fail at once instead of queueing behind each other's questions).
    async fn connection(&self) -> RedisResult<ConnectionManager> {
        if let Some((_, m)) = self.current() {
            return Ok(m);
        }
        self.ask_sentinels(false).await?;
        self.current()
            .map(|(_, m)| m)
            .ok_or_else(|| RedisError::from((redis::ErrorKind::Io, "no Sentinel has named the Redis master yet")))
    }

    /// Ask the Sentinels which server is the master now (at most once per [`ASK_AGAIN_AFTER`] unless `always`;
    /// never twice for callers that waited together) and move the link there if it changed.
    async fn ask_sentinels(&self, always: bool) -> RedisResult<()> {
        let Source::Sentinel(sentinel) = &self.inner.source else {
            return Ok(());
        };
        let generation = self.inner.asked.lock().expect("link lock").1;
        let mut sentinel = sentinel.lock().await;
        {
            let (at, asked) = *self.inner.asked.lock().expect("link lock");
            if asked != generation || !always && at.is_some_and(|t| t.elapsed() < ASK_AGAIN_AFTER) {
                return Ok(());
            }
        }
        let answer = tokio::time::timeout(REDIS_TIMEOUT, sentinel.async_get_client()).await;
        {
            let mut asked = self.inner.asked.lock().expect("link lock");
            *asked = (Some(Instant::now()), asked.1 + 1);
        }
        let client = answer.map_err(|_| RedisError::from((redis::ErrorKind::Io, "no Sentinel answered in time")))??;
        let mut current = self.inner.current.lock().expect("link lock");
        let moved = current
            .as_ref()
            .is_none_or(|(c, _)| c.get_connection_info().addr() != client.get_connection_info().addr());
        if moved {
            tracing::info!(master = %client.get_connection_info().addr(), "the Sentinels name this Redis master");
            *current = Some((client.clone(), manager(&client)?));
        }
        Ok(())
    }

    /// After a failed command: with Sentinels, an error that a failover explains (the master is gone, or it is a
    /// replica now) makes the link ask them again.
    async fn failed(&self, e: &RedisError) {
        let failover_sign = e.is_io_error()
            || e.is_connection_refusal()
            || e.is_connection_dropped()
            || e.is_timeout()
            || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly);
        if failover_sign && matches!(self.inner.source, Source::Sentinel(_)) {
            if let Err(e) = self.ask_sentinels(false).await {
                tracing::debug!(error = %e, "cannot ask the Sentinels for the Redis master");
            }
        }
    }
}

impl ConnectionLike for RedisLink {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let mut c = self.connection().await?;
            let r = c.req_packed_command(cmd).await;
            if let Err(e) = &r {
                self.failed(e).await;
            }
            r
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let mut c = self.connection().await?;
            let r = c.req_packed_commands(pipeline, offset, count).await;
            if let Err(e) = &r {
                self.failed(e).await;
            }
            r
        })
    }

    fn get_db(&self) -> i64 {
        self.inner.db
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls_name_their_sentinels_master_db_and_credentials() {
        let u = SentinelUrl::parse("redis+sentinel://:s%40cret@10.0.0.1:26379,10.0.0.2,[::1]:26380/mymaster/2")
            .unwrap()
            .unwrap();
        assert_eq!(
            u.sentinels,
            [
                ("10.0.0.1".to_string(), 26379),
                ("10.0.0.2".to_string(), 26379),
                ("::1".to_string(), 26380)
            ]
        );
        assert_eq!((u.master.as_str(), u.db), ("mymaster", 2));
        assert_eq!((u.username, u.password.as_deref()), (None, Some("s@cret")));
        let u = SentinelUrl::parse("redis+sentinel://app:pw@h:1/m").unwrap().unwrap();
        assert_eq!(
            (u.username.as_deref(), u.password.as_deref(), u.db),
            (Some("app"), Some("pw"), 0)
        );
        assert!(SentinelUrl::parse("redis://127.0.0.1:6379/0").is_none());
        for bad in [
            "redis+sentinel://h:1",
            "redis+sentinel://h:1/",
            "redis+sentinel://h:x/m",
            "redis+sentinel://h:0/m",
            "redis+sentinel://:1/m",
            "redis+sentinel://h:1/m/db",
        ] {
            let e = SentinelUrl::parse(bad).unwrap().unwrap_err();
            assert!(e.contains("expected redis+sentinel://"), "{bad}: {e}");
        }
    }

    #[test]
    fn urls_are_checked_before_any_connection() {
        assert!(RedisLink::check_url("redis://127.0.0.1:6379/0").is_ok());
        assert!(RedisLink::check_url("redis+sentinel://127.0.0.1:26379/mymaster").is_ok());
        assert!(RedisLink::check_url("redis+sentinel://127.0.0.1:26379").is_err());
        assert!(RedisLink::check_url("http://127.0.0.1").is_err());
    }
}
