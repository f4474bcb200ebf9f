//! The shared engine: what several callbot instances share through one Redis
//! (`CALLBOT_STORE=redis`, `REDIS_URL`). Each submodule implements a port of the engine
//! (`calls`) on Redis; the in-memory implementations stay the embedded default.
//!
//! Keys: every key is `{prefix}:…` (`store.redis_prefix`, default `callbot`). The braces are a
//! Redis Cluster hash tag: all of callbot's keys live in one slot, so one Lua script may touch
//! any of them and Cluster works (it does not spread callbot's keys over shards; one
//! deployment's calls fit one shard easily).

pub mod claims;
pub mod events;
pub mod lease;
pub mod limits;
pub mod memo;
pub mod pacing;
pub mod queue;
pub mod store;

use std::time::Duration;

use anyhow::Context as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// How long one Redis command may take before it fails (Redis down must be an error soon,
/// not a request that hangs).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The oldest Redis callbot runs on: 7.0 (`SET … NX GET`; streams' `XAUTOCLAIM`, `GETDEL` and
/// `SET … KEEPTTL` came with 6.2).
const MIN_MAJOR: u32 = 7;

/// One Redis, shared by everything of this instance that talks to it. Cheap to clone: the
/// connection manager multiplexes every command over one connection and reconnects in the
/// background when it breaks.
#[derive(Clone)]
pub struct Redis {
    conn: ConnectionManager,
    client: redis::Client,
    prefix: String,
    instance: String,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("prefix", &self.prefix)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// Connects (and fails at once when Redis cannot be reached). `url` is a secret: errors
    /// show it with its password redacted.
    pub async fn connect(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let shown = redacted(url);
        let client = redis::Client::open(url.trim())
            .with_context(|| format!("REDIS_URL {shown} is not a Redis URL"))?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        // The error's text already ends with its cause: not chained again.
        let conn = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(|e| anyhow::anyhow!("could not connect to Redis at {shown}: {e}"))?;
        let instance = format!(
            "{}-{}-{:08x}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "callbot".into()),
            std::process::id(),
            rand::random::<u32>()
        );
        let redis = Self {
            conn,
            client,
            prefix: prefix.to_owned(),
            instance,
        };
        let version = match redis.server_version().await {
            Ok(version) => version,
            // A user whose ACL forbids INFO (managed services often do): the version cannot
            // be told, and the first command that needs 7.0 says so if it is older.
            Err(e) if e.code().is_some() => {
                tracing::warn!(error = %e, "could not ask Redis its version (INFO refused); callbot needs 7.0 or newer");
                return Ok(redis);
            }
            Err(e) => anyhow::bail!("Redis at {shown} does not answer: {e}"),
        };
        let major = version
            .split('.')
            .next()
            .and_then(|m| m.parse::<u32>().ok());
        if major.is_some_and(|m| m < MIN_MAJOR) {
            anyhow::bail!(
                "Redis {version} at {shown} is too old: callbot needs Redis {MIN_MAJOR}.0 or newer"
            );
        }
        Ok(redis)
    }

    /// `{prefix}:rest`.
    pub fn key(&self, rest: &str) -> String {
        format!("{{{}}}:{rest}", self.prefix)
    }

    /// A handle for commands (clones share the one connection).
    pub fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// A connection of its own for blocking reads (`XREAD BLOCK`), which would stall every
    /// command multiplexed behind them on [`Redis::conn`]. Its answers may take `block` longer.
    pub async fn blocking_conn(
        &self,
        block: Duration,
    ) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        let config = redis::AsyncConnectionConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT + block))
            .set_connection_timeout(Some(CONNECT_TIMEOUT));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    /// This process's name among the instances (lease holder, stream consumer).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The server's version (`INFO server`), which also proves it answers.
    pub async fn server_version(&self) -> redis::RedisResult<String> {
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut self.conn())
            .await?;
        Ok(info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .unwrap_or("unknown")
            .trim()
            .to_owned())
    }

    /// PING.
    pub async fn ping(&self) -> redis::RedisResult<()> {
        redis::cmd("PING")
            .query_async::<String>(&mut self.conn())
            .await
            .map(drop)
    }
}

/// `url` with its password replaced, whether in its user part (`redis://:pw@host`) or in its
/// query (`redis+unix:///run/redis.sock?pass=pw`), for messages and logs.
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url.trim()) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("redacted"));
            }
            if u.query().is_some() {
                let pairs: Vec<(String, String)> = u
                    .query_pairs()
                    .map(|(k, v)| {
                        let secret = matches!(k.as_ref(), "pass" | "password");
                        let v = if secret {
                            "redacted".into()
                        } else {
                            v.into_owned()
                        };
                        (k.into_owned(), v)
                    })
                    .collect();
                u.query_pairs_mut().clear().extend_pairs(pairs);
            }
            u.to_string()
        }
        Err(_) => "[unparsable URL]".into(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            super::redacted("redis://:s3cret@example.com:6380/2"),
            "redis://:redacted@example.com:6380/2"
        );
        assert_eq!(
            super::redacted("rediss://user:pw@h/0"),
            "rediss://user:redacted@h/0"
        );
        assert_eq!(super::redacted("redis://h:6379"), "redis://h:6379");
        assert!(!super::redacted("not a url s3cret").contains("s3cret"));
        assert_eq!(
            super::redacted("redis+unix:///run/redis.sock?db=1&pass=s3cret"),
            "redis+unix:///run/redis.sock?db=1&pass=redacted"
        );
    }
}
