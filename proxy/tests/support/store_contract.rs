//! What every counter store does, written once and run against each
//! backend (`MemoryStore`, the reference, and `RedisStore`): the ledger's
//! arithmetic, lease expiry, sliding windows, and concurrent grants from
//! several replicas. Each check makes counters of its own (random ids), so
//! checks may share a store.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use sluice::limits::store::{now_ms, CounterKey, CounterStore, Settlement, Totals};

/// A lease that outlives any check.
pub const TTL: Duration = Duration::from_secs(30);

/// A fresh fixed window of a minute that started a second ago.
pub fn key(name: &str, limit: u64) -> CounterKey {
    let start = now_ms() - 1000;
    CounterKey {
        id: format!("contract/{name}/{:016x}", fastrand::u64(..)).into(),
        start_ms: start,
        end_ms: start + 60_000,
        limit,
        sliding: false,
    }
}

/// A fresh sliding window of a minute, half way through.
pub fn sliding_key(name: &str, limit: u64) -> CounterKey {
    let now = now_ms();
    CounterKey {
        start_ms: now - 30_000,
        end_ms: now + 30_000,
        sliding: true,
        ..key(name, limit)
    }
}

fn settlement(key: &CounterKey, spent: u64, unused: u64) -> Settlement {
    Settlement {
        key: key.clone(),
        spent,
        unused,
        unleased: 0,
    }
}

fn totals(settled: u64, leased: u64) -> Totals {
    Totals { settled, leased }
}

pub async fn grants_never_exceed_the_limit(store: &dyn CounterStore) {
    let k = key("limit", 100);
    let grant = store.grant("a", &k, 60, 1, TTL).await.unwrap();
    assert_eq!((grant.granted, grant.used), (60, 60));
    let grant = store.grant("b", &k, 60, 1, TTL).await.unwrap();
    assert_eq!((grant.granted, grant.used), (40, 100));
    let grant = store.grant("b", &k, 10, 1, TTL).await.unwrap();
    assert_eq!((grant.granted, grant.used), (0, 100));
    // a spends 50 of its 60 and hands back 10: 10 is free again.
    store
        .settle("a", 0, &[settlement(&k, 50, 10)])
        .await
        .unwrap();
    assert_eq!(store.totals(&k).await.unwrap(), totals(50, 40));
    let grant = store.grant("a", &k, 60, 20, TTL).await.unwrap();
    assert_eq!(grant.granted, 0, "less than at_least is left: {grant:?}");
    assert_eq!(store.grant("a", &k, 60, 5, TTL).await.unwrap().granted, 10);
    assert_eq!(store.totals(&k).await.unwrap(), totals(50, 50));
    assert_eq!(store.grant("c", &k, 0, 0, TTL).await.unwrap().granted, 0);
}

pub async fn expired_leases_count_as_spent(store: &dyn CounterStore) {
    let k = key("expiry", 100);
    store.grant("a", &k, 30, 1, Duration::ZERO).await.unwrap();
    assert_eq!(store.totals(&k).await.unwrap(), totals(30, 0));
    // A late settlement of the expired lease adds nothing, spend beyond
    // it included: the expiry counted the lease as spent.
    store
        .settle("a", 0, &[settlement(&k, 45, 0)])
        .await
        .unwrap();
    assert_eq!(store.totals(&k).await.unwrap(), totals(30, 0));
    // And the expired allowance is not handed out again.
    assert_eq!(store.grant("b", &k, 100, 1, TTL).await.unwrap().granted, 70);
}

pub async fn a_lease_expires_after_its_ttl(store: &dyn CounterStore) {
    // Long enough for the renewal below to come first on a busy machine.
    const SHORT: Duration = Duration::from_millis(1500);
    let k = key("ttl", 100);
    store.grant("a", &k, 10, 1, SHORT).await.unwrap();
    // b renews its short lease with a long one before it expires.
    store.grant("b", &k, 20, 1, SHORT).await.unwrap();
    store.grant("b", &k, 5, 1, TTL).await.unwrap();
    assert_eq!(store.totals(&k).await.unwrap(), totals(0, 35));
    tokio::time::sleep(SHORT + Duration::from_millis(500)).await;
    assert_eq!(store.totals(&k).await.unwrap(), totals(10, 25));
}

pub async fn spend_beyond_a_lease_is_settled(store: &dyn CounterStore) {
    let k = key("beyond", 100);
    store.grant("a", &k, 10, 1, TTL).await.unwrap();
    // A Lenient stream ran past its reservation.
    store
        .settle("a", 0, &[settlement(&k, 25, 0)])
        .await
        .unwrap();
    assert_eq!(store.totals(&k).await.unwrap(), totals(25, 0));
    // Unused beyond the lease hands back nothing more.
    store.grant("a", &k, 10, 1, TTL).await.unwrap();
    store
        .settle("a", 0, &[settlement(&k, 0, 50)])
        .await
        .unwrap();
    assert_eq!(store.totals(&k).await.unwrap(), totals(25, 0));
    // Spend beyond the limit still lands: the ledger says what happened.
    store.grant("a", &k, 1, 1, TTL).await.unwrap();
    store
        .settle("a", 0, &[settlement(&k, 200, 0)])
        .await
        .unwrap();
    assert_eq!(store.totals(&k).await.unwrap(), totals(225, 0));
    let grant = store.grant("b", &k, 10, 0, TTL).await.unwrap();
    assert_eq!((grant.granted, grant.used), (0, 225));
}

pub async fn unleased_spend_always_counts(store: &dyn CounterStore) {
    // Spend admitted while the store was unreachable (FailOpen): no lease,
    // on a counter the store has never seen, and past the limit.
    let k = key("unleased", 100);
    let unleased = |n| Settlement {
        unleased: n,
        ..settlement(&k, 0, 0)
    };
    store.settle("a", 0, &[unleased(30)]).await.unwrap();
    assert_eq!(store.totals(&k).await.unwrap(), totals(30, 0));
    // Beside a live lease, and beside an expired one.
    store.grant("a", &k, 20, 1, TTL).await.unwrap();
    store
        .settle(
            "a",
            0,
            &[Settlement {
                spent: 20,
                ..unleased(5)
            }],
        )
        .await
        .unwrap();
    assert_eq!(store.totals(&k).await.unwrap(), totals(55, 0));
    store.grant("b", &k, 10, 1, Duration::ZERO).await.unwrap();
    store
        .settle(
            "b",
            0,
            &[Settlement {
                spent: 10,
                ..unleased(100)
            }],
        )
        .await
        .unwrap();
    assert_eq!(store.totals(&k).await.unwrap(), totals(165, 0));
    assert_eq!(store.grant("a", &k, 10, 0, TTL).await.unwrap().granted, 0);
}

pub async fn holders_are_kept_apart(store: &dyn CounterStore) {
    let k = key("holders", 1000);
    // Names that look like the store's own field names.
    for (holder, want) in [("settled", 1), ("a:b", 10), ("a", 100), ("e:a", 200)] {
        store.grant(holder, &k, want, 1, TTL).await.unwrap();
    }
    assert_eq!(store.totals(&k).await.unwrap(), totals(0, 311));
    store
        .settle("a", 0, &[settlement(&k, 60, 40)])
        .await
        .unwrap();
    store
        .settle("settled", 0, &[settlement(&k, 1, 0)])
        .await
        .unwrap();
    assert_eq!(store.totals(&k).await.unwrap(), totals(61, 210));
    // A holder settling more than it holds takes nothing from the others.
    store
        .settle("a:b", 0, &[settlement(&k, 0, 500)])
        .await
        .unwrap();
    assert_eq!(store.totals(&k).await.unwrap(), totals(61, 200));
}

pub async fn windows_are_separate_counters(store: &dyn CounterStore) {
    let k = key("windows", 100);
    let next = CounterKey {
        start_ms: k.end_ms,
        end_ms: k.end_ms + 60_000,
        ..k.clone()
    };
    store.grant("a", &k, 100, 1, TTL).await.unwrap();
    store
        .settle("a", 0, &[settlement(&k, 100, 0)])
        .await
        .unwrap();
    assert_eq!(
        store.grant("a", &next, 100, 1, TTL).await.unwrap().granted,
        100
    );
    assert_eq!(store.totals(&k).await.unwrap(), totals(100, 0));
    assert_eq!(store.totals(&next).await.unwrap(), totals(0, 100));
}

pub async fn a_sliding_window_weighs_the_previous_one(store: &dyn CounterStore) {
    let current = sliding_key("sliding", 100);
    let previous = current.previous();
    store.grant("a", &previous, 80, 1, TTL).await.unwrap();
    store
        .settle("a", 0, &[settlement(&previous, 80, 0)])
        .await
        .unwrap();
    // Half the previous window still overlaps: 40 of its 80 count.
    let grant = store.grant("a", &current, 100, 1, TTL).await.unwrap();
    assert!((59..=61).contains(&grant.granted), "{grant:?}");
    assert_eq!(grant.used, 100, "{grant:?}");
    // The previous window's own totals are untouched.
    assert_eq!(store.totals(&previous).await.unwrap(), totals(80, 0));
}

pub async fn a_sliding_window_counts_the_previous_ones_leases(store: &dyn CounterStore) {
    let current = sliding_key("sliding-leases", 100);
    let previous = current.previous();
    // A replica died holding 40 of the previous window (expired: spent);
    // another still holds 40 it has not settled.
    store
        .grant("dead", &previous, 40, 1, Duration::ZERO)
        .await
        .unwrap();
    store.grant("live", &previous, 40, 1, TTL).await.unwrap();
    let grant = store.grant("a", &current, 100, 1, TTL).await.unwrap();
    assert!((59..=61).contains(&grant.granted), "{grant:?}");
}

pub async fn a_fixed_window_ignores_the_previous_one(store: &dyn CounterStore) {
    let current = key("fixed", 100);
    let previous = current.previous();
    store.grant("a", &previous, 100, 1, TTL).await.unwrap();
    store
        .settle("a", 0, &[settlement(&previous, 100, 0)])
        .await
        .unwrap();
    assert_eq!(
        store
            .grant("a", &current, 100, 1, TTL)
            .await
            .unwrap()
            .granted,
        100
    );
}

pub async fn a_batch_settles_many_counters(store: &dyn CounterStore) {
    let keys: Vec<CounterKey> = (0..12).map(|i| key(&format!("batch{i}"), 100)).collect();
    for k in &keys {
        store.grant("a", k, 50, 1, TTL).await.unwrap();
    }
    let batch: Vec<Settlement> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| settlement(k, i as u64, 50 - i as u64))
        .collect();
    store.settle("a", 0, &batch).await.unwrap();
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(store.totals(k).await.unwrap(), totals(i as u64, 0));
    }
    store.settle("a", 0, &[]).await.unwrap();
}

pub async fn unknown_counters_are_empty(store: &dyn CounterStore) {
    assert_eq!(
        store.totals(&key("nothing", 5)).await.unwrap(),
        totals(0, 0)
    );
}

pub async fn huge_limits_are_as_good_as_none(store: &dyn CounterStore) {
    let k = key("huge", u64::MAX);
    let grant = store.grant("a", &k, 1 << 40, 1, TTL).await.unwrap();
    assert_eq!(grant.granted, 1 << 40);
    store
        .settle("a", 0, &[settlement(&k, 1 << 40, 0)])
        .await
        .unwrap();
    assert_eq!(store.totals(&k).await.unwrap(), totals(1 << 40, 0));
}

/// Many tasks on every replica grant, spend half and hand back the rest
/// until the counter is used up: the limit is reached exactly, never
/// passed, and no spend is lost.
pub async fn concurrent_grants_never_exceed_the_limit(replicas: &[Arc<dyn CounterStore>]) {
    const LIMIT: u64 = 2_000;
    const TASKS: usize = 16;
    let k = key("concurrent", LIMIT);
    let mut tasks = tokio::task::JoinSet::new();
    for (r, store) in replicas.iter().enumerate() {
        for t in 0..TASKS {
            let store = store.clone();
            let k = k.clone();
            tasks.spawn(async move {
                let holder = format!("replica{r}-task{t}");
                let mut spent = 0;
                loop {
                    let want = fastrand::u64(1..=40);
                    let grant = store.grant(&holder, &k, want, 1, TTL).await.unwrap();
                    assert!(grant.used <= LIMIT, "{grant:?}");
                    if grant.granted == 0 {
                        return spent;
                    }
                    assert!(grant.granted <= want);
                    let used = grant.granted.div_ceil(2);
                    store
                        .settle(&holder, 0, &[settlement(&k, used, grant.granted - used)])
                        .await
                        .unwrap();
                    spent += used;
                }
            });
        }
    }
    let mut spent = 0;
    while let Some(task) = tasks.join_next().await {
        spent += task.unwrap();
    }
    assert_eq!(spent, LIMIT);
    for store in replicas {
        assert_eq!(store.totals(&k).await.unwrap(), totals(LIMIT, 0));
    }
}

/// A batch retried after a timeout (the store may have applied it) counts
/// once; an older batch number is skipped; a retried batch that covers a
/// counter it had not reached yet settles that one.
pub async fn a_retried_batch_counts_once(store: &dyn CounterStore) {
    let k = key("retried", 1_000);
    let other = key("retried-other", 1_000);
    store.grant("a", &k, 100, 1, TTL).await.unwrap();
    store.grant("a", &other, 100, 1, TTL).await.unwrap();
    store
        .settle("a", 7, &[settlement(&k, 30, 0)])
        .await
        .unwrap();
    store
        .settle("a", 7, &[settlement(&k, 30, 0)])
        .await
        .unwrap();
    assert_eq!(store.totals(&k).await.unwrap().settled, 30);
    store
        .settle("a", 5, &[settlement(&k, 10, 0)])
        .await
        .unwrap();
    assert_eq!(
        store.totals(&k).await.unwrap().settled,
        30,
        "an older batch"
    );
    store
        .settle("a", 8, &[settlement(&k, 10, 0), settlement(&other, 20, 0)])
        .await
        .unwrap();
    assert_eq!(store.totals(&k).await.unwrap().settled, 40);
    assert_eq!(store.totals(&other).await.unwrap().settled, 20);
    // Another holder's numbers are its own.
    store.grant("b", &k, 10, 1, TTL).await.unwrap();
    store
        .settle("b", 1, &[settlement(&k, 10, 0)])
        .await
        .unwrap();
    assert_eq!(store.totals(&k).await.unwrap().settled, 50);
}
