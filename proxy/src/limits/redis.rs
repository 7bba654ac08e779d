//! The Redis backend of the [`CounterStore`]: the same ledger as the
//! memory store, kept in a Redis or Valkey server (standalone or Redis
//! Cluster) that the replicas share. Knows nothing of budgets, prices or
//! HTTP.
//!
//! Layout (schema [`SCHEMA`]): one hash per counter window,
//! `sluice:v1:{<id>}:<start_ms>`, with the fields `settled`, and per
//! holder `l:<holder>` (lease amount), `e:<holder>` (lease expiry, Unix
//! ms by the server's clock) and `s:<holder>` (its last settlement batch). The hash tag `{<id>}` puts every window of a
//! counter in one cluster slot, so one script can read a sliding window's
//! previous window. A key expires one window length (plus a minute) after
//! its window ends, so the previous window is still there to be weighed.
//!
//! Every read and write is one Lua script, atomic on the server (EVALSHA,
//! and EVAL when the server does not have it cached yet: no `SCRIPT LOAD`,
//! which some proxies refuse). Lease expiry and the sliding weight use the
//! server's `TIME`, so replicas with skewed clocks agree.
//!
//! Versions: the scripts may change between releases as long as they read
//! and write the same layout (the server caches each by its hash, so old
//! and new replicas run their own side by side). A change to the layout or
//! to what a field means bumps [`SCHEMA`]: the new keys are then separate
//! from the old, and neither version reads the other's.
//!
//! Failures: every call returns within the store's timeout (1 s unless
//! set), with a [`StoreError`] when Redis is unreachable or slow; it never
//! waits for a reconnect. Creating the store does not connect: the first
//! call does, and a connection that breaks is made again by a later call,
//! so a store created while Redis is down works once it is up. What a
//! failed call means for a request is the limiter's business (the
//! budget's `failureMode`), never a silent fallback here.
//!
//! Amounts are capped at 2^53 - 1 (Lua numbers are doubles): a limit above
//! that is as good as none.

use std::fmt;
use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, FromRedisValue, RedisResult, ServerErrorKind};

use super::store::{now_ms, CounterKey, CounterStore, Grant, Settlement, StoreError, Totals};

/// The key layout's version, in every key.
pub const SCHEMA: &str = "v1";

/// How long a call may take unless [`RedisStore::with_timeout`] says.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

/// The largest amount a Lua number holds exactly.
const MAX_AMOUNT: u64 = (1 << 53) - 1;

/// Slack on a grant's deadline beyond the call's timeout (the clock offset
/// is measured to within a round trip).
const STALE_MARGIN_MS: i64 = 200;
/// Reconnection attempts per broken connection (each bounded by the
/// timeout); a later call starts a new round.
const RECONNECT_RETRIES: u16 = 3;

/// Shared by the scripts: the server's time, and a window's ledger with
/// its expired leases counted as spent.
const PRELUDE: &str = r"
-- sluice counter store, schema v1
if redis.replicate_commands then redis.replicate_commands() end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local function int(n) return string.format('%d', n) end
-- settled, leased, and the live leases by holder, after counting expired
-- leases as spent.
local function ledger(key)
  local flat = redis.call('HGETALL', key)
  local fields = {}
  for i = 1, #flat, 2 do fields[flat[i]] = flat[i + 1] end
  local settled = tonumber(fields['settled'] or '0')
  local leased, expired, leases = 0, 0, {}
  for field, expiry in pairs(fields) do
    if string.sub(field, 1, 2) == 'e:' then
      local holder = string.sub(field, 3)
      local amount = tonumber(fields['l:' .. holder] or '0')
      if tonumber(expiry) <= now then
        expired = expired + amount
        redis.call('HDEL', key, field, 'l:' .. holder)
      else
        leased = leased + amount
        leases[holder] = amount
      end
    end
  end
  if expired > 0 then
    redis.call('HINCRBY', key, 'settled', int(expired))
    settled = settled + expired
  end
  return settled, leased, leases
end
";

/// KEYS: the window, its previous window. ARGV: holder, want, at_least,
/// ttl_ms, limit, sliding (1/0), start_ms, end_ms, keep_ms, deadline (Unix
/// ms by Redis's clock, 0: none; later, nothing is granted). Returns
/// {granted, used, Redis's time}.
const GRANT: &str = r"
local holder = ARGV[1]
local want, at_least, ttl = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local limit, start_ms, end_ms = tonumber(ARGV[5]), tonumber(ARGV[7]), tonumber(ARGV[8])
local len = math.max(end_ms - start_ms, 1)
local settled, leased, leases = ledger(KEYS[1])
local previous = 0
if ARGV[6] == '1' then
  local p_settled, p_leased = ledger(KEYS[2])
  local left = math.min(math.max(end_ms - now, 0), len)
  local weight = math.floor(left * 1000000 / len)
  previous = math.floor((p_settled + p_leased) * weight / 1000000)
end
local used = settled + leased + previous
local left = math.max(limit - used, 0)
local granted = 0
-- A grant that arrives after its caller gave up (a request retransmitted
-- when a partition heals) grants nothing: no one would spend that lease.
local stale = tonumber(ARGV[10] or '0') > 0 and now > tonumber(ARGV[10])
if left >= at_least and not stale then granted = math.min(want, left) end
redis.call('HSET', KEYS[1], 'l:' .. holder, int((leases[holder] or 0) + granted),
  'e:' .. holder, int(now + ttl))
redis.call('PEXPIREAT', KEYS[1], int(math.max(end_ms + len, now + ttl) + tonumber(ARGV[9])))
return {granted, used + granted, now}
";

/// KEYS: the window. ARGV: holder, spent, unused, unleased, start_ms,
/// end_ms, keep_ms, seq. Spent counts only against a live lease (an expired
/// one was counted whole); unleased spend always counts. A batch `seq` the
/// holder already settled here (field `s:<holder>`) is skipped.
const SETTLE: &str = r"
local holder, spent, unused = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local added = tonumber(ARGV[4])
local seq = tonumber(ARGV[8] or '0')
if seq > 0 then
  local last = tonumber(redis.call('HGET', KEYS[1], 's:' .. holder) or '0')
  if last >= seq then return 0 end
  redis.call('HSET', KEYS[1], 's:' .. holder, int(seq))
  if redis.call('PTTL', KEYS[1]) < 0 then
    local start_ms, end_ms = tonumber(ARGV[5]), tonumber(ARGV[6])
    local len = math.max(end_ms - start_ms, 1)
    redis.call('PEXPIREAT', KEYS[1], int(math.max(end_ms + len, now) + tonumber(ARGV[7])))
  end
end
local settled, leased, leases = ledger(KEYS[1])
local lease = leases[holder]
if lease ~= nil then
  redis.call('HSET', KEYS[1], 'l:' .. holder, int(lease - math.min(lease, spent + unused)))
  added = added + spent
end
if added > 0 then
  redis.call('HINCRBY', KEYS[1], 'settled', int(added))
  -- Unleased spend may make the key: it expires like a granted one.
  if redis.call('PTTL', KEYS[1]) < 0 then
    local start_ms, end_ms = tonumber(ARGV[5]), tonumber(ARGV[6])
    local len = math.max(end_ms - start_ms, 1)
    redis.call('PEXPIREAT', KEYS[1], int(math.max(end_ms + len, now) + tonumber(ARGV[7])))
  end
end
return added
";

/// KEYS: the window. Returns {settled, leased}.
const TOTALS: &str = r"
local settled, leased = ledger(KEYS[1])
return {settled, leased}
";

/// How long a window's key outlives the window after the next one ended:
/// room for clock skew between the replicas and the server.
const KEEP_MS: i64 = 60_000;

/// One script: its text and the hash the server caches it by.
struct Script {
    code: String,
    hash: String,
}

impl Script {
    fn new(body: &str) -> Self {
        let code = format!("{PRELUDE}{body}");
        let hash = redis::Script::new(&code).get_hash().to_owned();
        Self { code, hash }
    }
}

/// Where the server is.
enum Target {
    Single(redis::Client),
    Cluster(redis::cluster::ClusterClient),
}

/// A live connection; cheap to clone (both multiplex one socket per node
/// and reconnect on their own).
#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Connection {
    async fn query<T: FromRedisValue>(&mut self, cmd: &Cmd) -> RedisResult<T> {
        match self {
            Connection::Single(c) => cmd.query_async(c).await,
            Connection::Cluster(c) => cmd.query_async(c).await,
        }
    }
}

/// Counters in a Redis or Valkey shared by the replicas.
pub struct RedisStore {
    target: Target,
    connection: tokio::sync::OnceCell<Connection>,
    timeout: Duration,
    /// The URL without its password, for errors.
    name: String,
    grant: Script,
    settle: Script,
    totals: Script,
    /// Redis's clock minus ours (ms), from the last grant's answer: grant
    /// deadlines are sent in Redis's time. `i64::MIN`: not known yet.
    clock_offset_ms: std::sync::atomic::AtomicI64,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.name)
            .field("cluster", &matches!(self.target, Target::Cluster(_)))
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store for the server at `url` (`redis://` or `rediss://`), or
    /// the cluster that node belongs to, with the default timeout. Does
    /// not connect (see the module doc); fails only on a URL that cannot
    /// be used.
    pub fn new(url: &str, cluster: bool) -> Result<Self, StoreError> {
        Self::with_timeout(url, cluster, DEFAULT_TIMEOUT)
    }

    /// [`RedisStore::new`] with every call (and each connection attempt)
    /// bounded by `timeout`.
    pub fn with_timeout(url: &str, cluster: bool, timeout: Duration) -> Result<Self, StoreError> {
        let name = redact(url);
        let error = |e: redis::RedisError| StoreError(format!("redis at {name}: {e}"));
        let target = if cluster {
            let client = ClusterClientBuilder::new(vec![url])
                .connection_timeout(timeout)
                .response_timeout(timeout)
                // Enough to follow a slot's move; a caller never waits
                // longer than the timeout anyway.
                .retries(RECONNECT_RETRIES.into())
                .max_retry_wait(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX))
                .build()
                .map_err(error)?;
            Target::Cluster(client)
        } else {
            Target::Single(redis::Client::open(url).map_err(error)?)
        };
        Ok(Self {
            target,
            connection: tokio::sync::OnceCell::new(),
            timeout,
            name,
            grant: Script::new(GRANT),
            settle: Script::new(SETTLE),
            totals: Script::new(TOTALS),
            clock_offset_ms: std::sync::atomic::AtomicI64::new(i64::MIN),
        })
    }

    /// The key of a counter window in Redis.
    pub fn key_name(key: &CounterKey) -> String {
        window_key(&key.id, key.start_ms)
    }

    /// Checks that the server answers (for a readiness log at start).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.bounded(async {
            let mut connection = self.connection().await?;
            connection.query::<String>(&redis::cmd("PING")).await?;
            Ok(())
        })
        .await
    }

    async fn connection(&self) -> RedisResult<Connection> {
        let connection = self
            .connection
            .get_or_try_init(|| async {
                Ok::<_, redis::RedisError>(match &self.target {
                    Target::Single(client) => {
                        let config = ConnectionManagerConfig::new()
                            .set_connection_timeout(Some(self.timeout))
                            .set_response_timeout(Some(self.timeout))
                            .set_number_of_retries(RECONNECT_RETRIES.into())
                            .set_max_delay(self.timeout);
                        Connection::Single(
                            ConnectionManager::new_with_config(client.clone(), config).await?,
                        )
                    }
                    Target::Cluster(client) => {
                        Connection::Cluster(client.get_async_connection().await?)
                    }
                })
            })
            .await?;
        Ok(connection.clone())
    }

    /// Runs `call` within the timeout.
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(StoreError(format!("redis at {}: {e}", self.name))),
            Err(_) => Err(StoreError(format!(
                "redis at {}: no answer within {:?}",
                self.name, self.timeout
            ))),
        }
    }

    /// Runs a script on `keys` with `args`.
    async fn run<T: FromRedisValue>(
        &self,
        script: &Script,
        keys: &[String],
        args: &[String],
    ) -> Result<T, StoreError> {
        self.bounded(async {
            let mut connection = self.connection().await?;
            let mut evalsha = redis::cmd("EVALSHA");
            evalsha
                .arg(&script.hash)
                .arg(keys.len())
                .arg(keys)
                .arg(args);
            match connection.query(&evalsha).await {
                Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                    let mut eval = redis::cmd("EVAL");
                    eval.arg(&script.code).arg(keys.len()).arg(keys).arg(args);
                    connection.query(&eval).await
                }
                other => other,
            }
        })
        .await
    }

    /// Two amounts from a script.
    fn pair(&self, values: Vec<i64>) -> Result<(u64, u64), StoreError> {
        match values[..] {
            [a, b] => match (u64::try_from(a), u64::try_from(b)) {
                (Ok(a), Ok(b)) => Ok((a, b)),
                _ => Err(self.nonsense(&values)),
            },
            _ => Err(self.nonsense(&values)),
        }
    }

    fn nonsense(&self, values: &[i64]) -> StoreError {
        StoreError(format!(
            "redis at {}: unexpected answer {values:?}",
            self.name
        ))
    }
}

#[async_trait::async_trait]
impl CounterStore for RedisStore {
    async fn grant(
        &self,
        holder: &str,
        key: &CounterKey,
        want: u64,
        at_least: u64,
        ttl: Duration,
    ) -> Result<Grant, StoreError> {
        let keys = [
            Self::key_name(key),
            window_key(&key.id, key.previous().start_ms),
        ];
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let args = [
            holder.to_owned(),
            amount(want),
            amount(at_least),
            amount(ttl_ms),
            amount(key.limit),
            if key.sliding { "1" } else { "0" }.to_owned(),
            key.start_ms.to_string(),
            key.end_ms.to_string(),
            KEEP_MS.to_string(),
            // This call gives up after `timeout`: in Redis's time (the
            // offset seen at the last grant), when its answer is no use.
            match self.clock_offset_ms.load(Ordering::Acquire) {
                i64::MIN => "0".to_owned(),
                offset => (now_ms()
                    + offset
                    + i64::try_from(self.timeout.as_millis()).unwrap_or(0)
                    + STALE_MARGIN_MS)
                    .to_string(),
            },
        ];
        let sent = now_ms();
        let values: Vec<i64> = self.run(&self.grant, &keys, &args).await?;
        let (granted, used, redis_now) = match values[..] {
            [granted, used, redis_now] => (granted, used, redis_now),
            _ => return Err(self.nonsense(&values)),
        };
        // Redis read its clock somewhere between sending and now.
        let midway = sent + (now_ms() - sent) / 2;
        self.clock_offset_ms
            .store(redis_now - midway, Ordering::Release);
        let (granted, used) = self.pair(vec![granted, used])?;
        Ok(Grant { granted, used })
    }

    async fn settle(&self, holder: &str, seq: u64, batch: &[Settlement]) -> Result<(), StoreError> {
        // One script per counter (counters live in different slots); all
        // are sent at once, and each is finished before an error is told,
        // so a failed batch leaves no call in flight.
        let calls = batch.iter().map(|settlement| async move {
            let keys = [Self::key_name(&settlement.key)];
            let args = [
                holder.to_owned(),
                amount(settlement.spent),
                amount(settlement.unused),
                amount(settlement.unleased),
                settlement.key.start_ms.to_string(),
                settlement.key.end_ms.to_string(),
                KEEP_MS.to_string(),
                seq.to_string(),
            ];
            self.run::<i64>(&self.settle, &keys, &args).await
        });
        let results = futures_util::future::join_all(calls).await;
        let failed = results.iter().filter(|r| r.is_err()).count();
        match results.into_iter().find_map(Result::err) {
            None => Ok(()),
            Some(e) => Err(StoreError(format!(
                "{failed} of {} settlements failed, the first: {}",
                batch.len(),
                e.0
            ))),
        }
    }

    async fn totals(&self, key: &CounterKey) -> Result<Totals, StoreError> {
        let values = self.run(&self.totals, &[Self::key_name(key)], &[]).await?;
        let (settled, leased) = self.pair(values)?;
        Ok(Totals { settled, leased })
    }

    fn report(&self) -> serde_json::Value {
        serde_json::json!({
            "state": "redis",
            "server": self.name,
            "cluster": matches!(self.target, Target::Cluster(_)),
            "members": [],
        })
    }
}

fn amount(n: u64) -> String {
    n.min(MAX_AMOUNT).to_string()
}

/// `sluice:v1:{<id>}:<start_ms>`, with `{`, `}` and `%` in the id escaped
/// so the hash tag is always the whole id.
fn window_key(id: &str, start_ms: i64) -> String {
    let mut tag = String::with_capacity(id.len());
    for c in id.chars() {
        match c {
            '%' => tag.push_str("%25"),
            '{' => tag.push_str("%7B"),
            '}' => tag.push_str("%7D"),
            c => tag.push(c),
        }
    }
    if tag.is_empty() {
        // An empty tag `{}` is no tag: the windows would land apart.
        tag.push('%');
    }
    format!("sluice:{SCHEMA}:{{{tag}}}:{start_ms}")
}

/// The URL with any password replaced, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hash tag Redis Cluster hashes (its spec: the first `{...}` with
    /// something inside, else the whole key).
    fn hash_tag(key: &str) -> &str {
        if let Some(open) = key.find('{') {
            if let Some(close) = key[open + 1..].find('}') {
                if close > 0 {
                    return &key[open + 1..open + 1 + close];
                }
            }
        }
        key
    }

    fn counter(id: &str) -> CounterKey {
        CounterKey {
            id: id.into(),
            start_ms: 1_700_000_060_000,
            end_ms: 1_700_000_120_000,
            limit: 10,
            sliding: true,
        }
    }

    #[test]
    fn a_counters_windows_share_one_slot() {
        let key = counter("team-a/cost-monthly/3f2a");
        assert_eq!(
            RedisStore::key_name(&key),
            "sluice:v1:{team-a/cost-monthly/3f2a}:1700000060000"
        );
        let previous = RedisStore::key_name(&key.previous());
        assert_eq!(
            previous,
            "sluice:v1:{team-a/cost-monthly/3f2a}:1700000000000"
        );
        assert_eq!(hash_tag(&RedisStore::key_name(&key)), hash_tag(&previous));
        for id in ["a}b", "{x}", "", "%7B", "a{b"] {
            let current = RedisStore::key_name(&counter(id));
            let previous = RedisStore::key_name(&counter(id).previous());
            assert_ne!(hash_tag(&current), current, "{id:?}: no tag in {current}");
            assert_eq!(hash_tag(&current), hash_tag(&previous), "{id:?}");
        }
        // Ids that differ keep different keys after escaping.
        assert_ne!(
            RedisStore::key_name(&counter("%7B")),
            RedisStore::key_name(&counter("{"))
        );
    }

    #[test]
    fn urls_lose_their_password_in_messages() {
        assert_eq!(
            redact("rediss://user:s3cret@cache:6380/1"),
            "rediss://***@cache:6380/1"
        );
        assert_eq!(redact("redis://cache:6379"), "redis://cache:6379");
        let store = RedisStore::new("redis://:s3cret@127.0.0.1:1", false).unwrap();
        assert!(!format!("{store:?}").contains("s3cret"));
    }

    #[test]
    fn bad_urls_fail_at_creation() {
        assert!(RedisStore::new("http://x", false).is_err());
        assert!(RedisStore::new("http://x", true).is_err());
    }

    #[test]
    fn the_scripts_are_versioned() {
        assert!(PRELUDE.contains(&format!("schema {SCHEMA}")));
        assert!(window_key("x", 0).starts_with(&format!("sluice:{SCHEMA}:")));
    }
}
