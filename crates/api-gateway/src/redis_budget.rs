//! The cluster-wide budget in Redis: one atomic Lua token bucket per pool, leased out in
//! small slices, plus a heartbeat set that tells each gateway how many replicas share it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deadpool_redis::redis;
use flow_control::Pool;

const LEASE_SCRIPT: &str = r#"
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local need = tonumber(ARGV[3])
local extra = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local v = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(v[1])
local ts = tonumber(v[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
if now > ts then
  tokens = math.min(burst, tokens + (now - ts) * rate)
end
tokens = math.min(tokens, burst)
local granted = 0
if tokens >= math.min(need, burst) then
  granted = need + math.max(0, math.min(extra, tokens - need))
  tokens = tokens - granted
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], 600000)
return {tostring(granted), tostring(tokens)}
"#;

/// Redis did not answer usefully.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RedisError {
    #[error("redis pool: {0}")]
    Pool(String),
    #[error("redis: {0}")]
    Command(String),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
}

/// Permits granted by one trip.
#[derive(Debug, Clone, Copy)]
pub struct Grant {
    pub granted: f64,
    /// Cluster-wide tokens left after the grant (negative = debt).
    pub remaining: f64,
}

fn pool_name(pool: Pool) -> &'static str {
    match pool {
        Pool::General => "general",
        Pool::Reserved => "reserved",
    }
}

/// Client of the shared budget.
#[derive(Clone)]
pub struct RedisBudget {
    pool: deadpool_redis::Pool,
    prefix: String,
    member: String,
    timeout: Duration,
}

impl RedisBudget {
    /// `prefix` names the budget (gateways on the same topic and group share it).
    pub fn new(url: &str, prefix: String) -> Result<Self, RedisError> {
        let mut cfg = deadpool_redis::Config::from_url(url);
        cfg.pool = Some(deadpool_redis::PoolConfig {
            max_size: 16,
            timeouts: deadpool_redis::Timeouts {
                wait: Some(Duration::from_millis(250)),
                create: Some(Duration::from_millis(250)),
                recycle: Some(Duration::from_millis(250)),
            },
            ..Default::default()
        });
        let pool = cfg
            .create_pool(Some(deadpool_redis::Runtime::Tokio1))
            .map_err(|e| RedisError::Pool(e.to_string()))?;
        Ok(Self {
            pool,
            prefix,
            member: uuid::Uuid::now_v7().to_string(),
            timeout: Duration::from_millis(300),
        })
    }

    async fn conn(&self) -> Result<deadpool_redis::Connection, RedisError> {
        self.pool
            .get()
            .await
            .map_err(|e| RedisError::Pool(e.to_string()))
    }

    async fn bounded<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, RedisError>>,
    ) -> Result<T, RedisError> {
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| RedisError::Timeout(self.timeout))?
    }

    /// Takes `need` permits (all or none; debt allowed beyond the burst) plus up to `extra`
    /// more to keep locally.
    pub async fn lease(
        &self,
        pool: Pool,
        rate: f64,
        burst: f64,
        need: f64,
        extra: f64,
    ) -> Result<Grant, RedisError> {
        let key = format!("{}:bucket:{}", self.prefix, pool_name(pool));
        self.lease_at(&key, rate, burst, need, extra).await
    }

    /// The same bucket for a named budget's pool (an API key's quota, the global bytes/s
    /// budget: `shared_budget.rs`), shared by every replica, without the extra slice. `name`
    /// is part of the key: an API key's name, never the key.
    pub async fn lease_named(
        &self,
        name: &str,
        pool: Pool,
        rate: f64,
        burst: f64,
        need: f64,
    ) -> Result<Grant, RedisError> {
        let key = format!("{}:{name}:bucket:{}", self.prefix, pool_name(pool));
        self.lease_at(&key, rate, burst, need, 0.0).await
    }

    async fn lease_at(
        &self,
        key: &str,
        rate: f64,
        burst: f64,
        need: f64,
        extra: f64,
    ) -> Result<Grant, RedisError> {
        // Boxed: the pool checkout and the command make a ~14 KiB future. Inline, it would be
        // part of every request's handler future, Redis or not, and copied into each one's
        // heap allocation (4-5 % of the gateway's CPU per single event without Redis).
        Box::pin(self.bounded(async {
            let mut conn = self.conn().await?;
            let (granted, remaining): (String, String) = redis::cmd("EVAL")
                .arg(LEASE_SCRIPT)
                .arg(1)
                .arg(key)
                .arg(rate)
                .arg(burst)
                .arg(need)
                .arg(extra)
                .query_async(&mut conn)
                .await
                .map_err(|e| RedisError::Command(e.to_string()))?;
            Ok(Grant {
                granted: granted.parse().unwrap_or(0.0),
                remaining: remaining.parse().unwrap_or(0.0),
            })
        }))
        .await
    }

    /// Announces this gateway and returns how many were seen in the last `ttl`.
    pub async fn heartbeat(&self, ttl: Duration) -> Result<usize, RedisError> {
        let key = format!("{}:replicas", self.prefix);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as i64;
        self.bounded(async {
            let mut conn = self.conn().await?;
            let (_, _, count, _): (i64, i64, usize, i64) = redis::pipe()
                .cmd("ZADD")
                .arg(&key)
                .arg(now)
                .arg(&self.member)
                .cmd("ZREMRANGEBYSCORE")
                .arg(&key)
                .arg("-inf")
                .arg(now - ttl.as_millis() as i64)
                .cmd("ZCARD")
                .arg(&key)
                .cmd("PEXPIRE")
                .arg(&key)
                .arg(ttl.as_millis() as i64 * 2)
                .query_async(&mut conn)
                .await
                .map_err(|e| RedisError::Command(e.to_string()))?;
            Ok(count)
        })
        .await
    }

    /// Leaves the replica set (on shutdown).
    pub async fn leave(&self) {
        let key = format!("{}:replicas", self.prefix);
        let _ = self
            .bounded(async {
                let mut conn = self.conn().await?;
                redis::cmd("ZREM")
                    .arg(&key)
                    .arg(&self.member)
                    .query_async::<i64>(&mut conn)
                    .await
                    .map_err(|e| RedisError::Command(e.to_string()))
            })
            .await;
    }
}
