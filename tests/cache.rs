//! A tenant's cache access on a real Redis (Debian's `redis-server`, a
//! throwaway one per test): what its user can and cannot do, drift repair
//! after a user is removed or Redis restarts, and removal that takes
//! exactly the tenant's keys without blocking the server.

use std::time::Duration;

use futures::StreamExt;
use redis::aio::MultiplexedConnection;
use tenantdb::cache::{
    self, Address, CacheStep, Commands, DesiredCache, KeyPrefix, Removal, Tls, acl, apply, connect, observe,
};
use tenantdb_testkit::throwaway_redis::{ADMIN_PASSWORD, ThrowawayRedis};

fn address(redis: &ThrowawayRedis) -> Address {
    Address {
        server: "cache-a".into(),
        host: redis.host().into(),
        port: redis.port(),
        tls: redis.ca_pem().map(|pem| Tls { ca_pem: Some(pem) }),
    }
}

async fn admin(redis: &ThrowawayRedis) -> MultiplexedConnection {
    connect::connect(&address(redis), "default", ADMIN_PASSWORD)
        .await
        .unwrap()
}

struct Tenant {
    desired: DesiredCache,
    password: String,
}

fn tenant(namespace: &str, name: &str, commands: Commands) -> Tenant {
    let password = tenantdb::password::generate();
    Tenant {
        desired: DesiredCache {
            user: acl::user_name(namespace, name),
            prefix: KeyPrefix::resolve(namespace, name, None).unwrap(),
            commands,
            password_hash: acl::password_hash(&password),
        },
        password,
    }
}

async fn login(redis: &ThrowawayRedis, t: &Tenant) -> MultiplexedConnection {
    connect::connect(&address(redis), &t.desired.user, &t.password)
        .await
        .unwrap()
}

/// The error code of `command` run by `conn` (`None` when it succeeded).
async fn refusal(conn: &mut MultiplexedConnection, command: &[&str]) -> Option<String> {
    let mut cmd = redis::cmd(command[0]);
    for arg in &command[1..] {
        cmd.arg(*arg);
    }
    match cmd.query_async::<redis::Value>(conn).await {
        Ok(_) => None,
        Err(e) => Some(e.code().unwrap_or("(no code)").to_owned()),
    }
}

#[tokio::test]
async fn a_tenant_reaches_its_own_keys_and_channels_and_nothing_else() {
    let redis = ThrowawayRedis::start().unwrap();
    let mut admin = admin(&redis).await;
    let a = tenant("acme", "a", Commands::Default);
    let b = tenant("acme", "b", Commands::Default);
    for t in [&a, &b] {
        let step = cache::provision(&address(&redis), &mut admin, &t.desired)
            .await
            .unwrap();
        assert!(matches!(step, Some(CacheStep::SetUser { .. })));
    }
    let mut conn = login(&redis, &a).await;
    // Its own keys: a session store's commands.
    for command in [
        &["SET", "acme:a:session:1", "x"][..],
        &["GET", "acme:a:session:1"],
        &["EXPIRE", "acme:a:session:1", "60"],
        &["TTL", "acme:a:session:1"],
        &["HSET", "acme:a:h", "f", "v"],
        &["INCR", "acme:a:n"],
        &["DEL", "acme:a:session:1"],
        &["PUBLISH", "acme:a:events", "hello"],
        &["PING"],
    ] {
        assert_eq!(refusal(&mut conn, command).await, None, "{command:?}");
    }
    let mut b_conn = login(&redis, &b).await;
    let () = redis::cmd("SET")
        .arg("acme:b:secret")
        .arg("s")
        .query_async(&mut b_conn)
        .await
        .unwrap();
    // Everything else is refused by the ACL, each with NOPERM.
    for command in [
        &["GET", "acme:b:secret"][..],
        &["SET", "acme:b:secret", "mine"],
        &["DEL", "acme:b:secret"],
        &["RENAME", "acme:a:n", "acme:b:n"],
        &["SET", "unprefixed", "x"],
        &["GET", "acme:a"],
        &["PUBLISH", "acme:b:events", "x"],
        &["FLUSHALL"],
        &["FLUSHDB"],
        &["KEYS", "*"],
        &["SCAN", "0"],
        &["RANDOMKEY"],
        &["DBSIZE"],
        &["CONFIG", "GET", "maxmemory"],
        &["DEBUG", "SLEEP", "0"],
        &["SHUTDOWN", "NOSAVE"],
        &["ACL", "WHOAMI"],
        &["ACL", "LIST"],
        &["MONITOR"],
        &["SELECT", "1"],
        &["EVAL", "return 1", "0"],
        &["BLPOP", "acme:a:q", "0"],
        &["CLIENT", "LIST"],
        &["CLIENT", "TRACKING", "on", "BCAST"],
        &["PUBSUB", "CHANNELS"],
        &["INFO"],
        &["SORT", "acme:a:list", "BY", "acme:b:*"],
        // Unbounded work on a tiny key of its own.
        &["SRANDMEMBER", "acme:a:set", "-1000000"],
        &["HRANDFIELD", "acme:a:h", "-1000000"],
        &["ZRANDMEMBER", "acme:a:z", "-1000000"],
        &["LCS", "acme:a:l1", "acme:a:l2"],
        &["LOLWUT"],
    ] {
        assert_eq!(
            refusal(&mut conn, command).await.as_deref(),
            Some("NOPERM"),
            "{command:?}"
        );
    }
    // The other tenant's key is as it was.
    let secret: String = redis::cmd("GET")
        .arg("acme:b:secret")
        .query_async(&mut b_conn)
        .await
        .unwrap();
    assert_eq!(secret, "s");

    // Pub/sub on its own channels; another tenant's are refused.
    let client = connect::client(&address(&redis), &a.desired.user, &a.password).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    let other = pubsub.subscribe("acme:b:events").await.unwrap_err();
    assert_eq!(other.code(), Some("NOPERM"), "{other}");
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe("acme:a:events").await.unwrap();
    let receivers: i64 = redis::cmd("PUBLISH")
        .arg("acme:a:events")
        .arg("hello")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(receivers, 1);
    let message = tokio::time::timeout(Duration::from_secs(5), pubsub.on_message().next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(message.get_payload::<String>().unwrap(), "hello");
}

#[tokio::test]
async fn a_read_only_tenant_reads_and_writes_nothing() {
    let redis = ThrowawayRedis::start().unwrap();
    let mut admin = admin(&redis).await;
    let () = redis::cmd("SET")
        .arg("acme:r:k")
        .arg("v")
        .query_async(&mut admin)
        .await
        .unwrap();
    let r = tenant("acme", "r", Commands::ReadOnly);
    cache::provision(&address(&redis), &mut admin, &r.desired)
        .await
        .unwrap();
    let mut conn = login(&redis, &r).await;
    assert_eq!(refusal(&mut conn, &["GET", "acme:r:k"]).await, None);
    for command in [
        &["SET", "acme:r:k", "w"][..],
        &["DEL", "acme:r:k"],
        &["EXPIRE", "acme:r:k", "1"],
        &["PUBLISH", "acme:r:events", "x"],
        &["GET", "acme:other:k"],
    ] {
        assert_eq!(
            refusal(&mut conn, command).await.as_deref(),
            Some("NOPERM"),
            "{command:?}"
        );
    }
}

#[tokio::test]
async fn the_password_is_stored_as_its_hash_only() {
    let redis = ThrowawayRedis::start_with_acl_file().unwrap();
    let mut admin = admin(&redis).await;
    let a = tenant("acme", "a", Commands::Default);
    cache::provision(&address(&redis), &mut admin, &a.desired)
        .await
        .unwrap();
    let list: Vec<String> = redis::cmd("ACL")
        .arg("LIST")
        .query_async(&mut admin)
        .await
        .unwrap();
    let file = std::fs::read_to_string(redis.acl_file().unwrap()).unwrap();
    for text in [list.join("\n"), file] {
        assert!(text.contains(&a.desired.password_hash), "{text}");
        assert!(!text.contains(&a.password));
    }
}

#[tokio::test]
async fn a_removed_or_altered_user_is_repaired_with_the_same_password() {
    let redis = ThrowawayRedis::start().unwrap();
    let mut admin = admin(&redis).await;
    let a = tenant("acme", "a", Commands::Default);
    let address = address(&redis);
    cache::provision(&address, &mut admin, &a.desired).await.unwrap();
    // Up to date: nothing to do.
    assert_eq!(
        cache::provision(&address, &mut admin, &a.desired).await.unwrap(),
        None
    );

    let _: i64 = redis::cmd("ACL")
        .arg("DELUSER")
        .arg(&a.desired.user)
        .query_async(&mut admin)
        .await
        .unwrap();
    let step = cache::provision(&address, &mut admin, &a.desired).await.unwrap();
    assert!(matches!(
        step,
        Some(CacheStep::SetUser {
            why: cache::plan::Drift::Missing,
            ..
        })
    ));
    cache::login_check(&address, &a.desired.user, &a.password)
        .await
        .unwrap();

    for alteration in [
        &["allkeys"][..],
        &["+flushall"],
        &["nopass"],
        &[">another"],
        &["off"],
    ] {
        let () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg(&a.desired.user)
            .arg(alteration)
            .query_async(&mut admin)
            .await
            .unwrap();
        let step = cache::provision(&address, &mut admin, &a.desired).await.unwrap();
        assert!(
            matches!(
                step,
                Some(CacheStep::SetUser {
                    why: cache::plan::Drift::Changed,
                    ..
                })
            ),
            "{alteration:?}: {step:?}"
        );
        assert_eq!(
            cache::provision(&address, &mut admin, &a.desired).await.unwrap(),
            None
        );
        let mut conn = login(&redis, &a).await;
        assert_eq!(refusal(&mut conn, &["FLUSHALL"]).await.as_deref(), Some("NOPERM"));
        assert_eq!(
            refusal(&mut conn, &["GET", "elsewhere"]).await.as_deref(),
            Some("NOPERM")
        );
    }
    // The other password added behind tenantdb's back no longer works.
    assert!(
        cache::login_check(&address, &a.desired.user, "another")
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_restart_without_an_acl_file_is_repaired_and_one_with_a_file_needs_nothing() {
    let a = tenant("acme", "a", Commands::Default);
    let mut without = ThrowawayRedis::start().unwrap();
    let mut with = ThrowawayRedis::start_with_acl_file().unwrap();
    for (redis, lost) in [(&mut without, true), (&mut with, false)] {
        let address = address(redis);
        let mut admin = admin(redis).await;
        let before = observe::observe(&address.server, &mut admin).await.unwrap();
        assert_eq!(before.acl_file, !lost);
        cache::provision(&address, &mut admin, &a.desired).await.unwrap();
        drop(admin);
        redis.restart().unwrap();
        let mut admin = connect::connect(&address, "default", ADMIN_PASSWORD)
            .await
            .unwrap();
        let after = observe::observe(&address.server, &mut admin).await.unwrap();
        assert_ne!(before.run_id, after.run_id, "a restart is seen");
        assert_eq!(after.users.contains_key(&a.desired.user), !lost);
        let step = cache::provision(&address, &mut admin, &a.desired).await.unwrap();
        assert_eq!(step.is_some(), lost);
        cache::login_check(&address, &a.desired.user, &a.password)
            .await
            .unwrap();
    }
}

/// `n` keys of `prefix`, written by the admin in pipelines.
async fn fill(admin: &mut MultiplexedConnection, prefix: &str, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for i in chunk {
            pipe.cmd("SET").arg(format!("{prefix}{i}")).arg("value").ignore();
        }
        let () = pipe.query_async(admin).await.unwrap();
    }
}

async fn count(admin: &mut MultiplexedConnection, pattern: &str) -> usize {
    let mut cursor = 0u64;
    let mut n = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(admin)
            .await
            .unwrap();
        n += keys.len();
        cursor = next;
        if cursor == 0 {
            return n;
        }
    }
}

#[tokio::test]
async fn delete_takes_exactly_the_tenants_keys_without_blocking_and_retain_keeps_them() {
    let redis = ThrowawayRedis::start().unwrap();
    let address = address(&redis);
    let mut admin = admin(&redis).await;
    let (a, ab, kept) = (
        tenant("acme", "a", Commands::Default),
        tenant("acme", "ab", Commands::Default),
        tenant("acme", "kept", Commands::Default),
    );
    for t in [&a, &ab, &kept] {
        cache::provision(&address, &mut admin, &t.desired).await.unwrap();
    }
    fill(&mut admin, "acme:a:", 20_000).await;
    fill(&mut admin, "acme:ab:", 10_000).await;
    fill(&mut admin, "acme:kept:", 1_000).await;
    fill(&mut admin, "acme:a", 10).await; // "acme:a0"…: not under "acme:a:"
    let mut conn = login(&redis, &a).await;

    let users = observe::observe(&address.server, &mut admin).await.unwrap().users;
    let removal = cache::plan::plan_removal(&a.desired.user, &a.desired.prefix, true, &users);
    let () = redis::cmd("SLOWLOG")
        .arg("RESET")
        .query_async(&mut admin)
        .await
        .unwrap();
    let mut sweep = apply::Sweep::default();
    let mut calls = 0;
    while !sweep.done {
        // A small budget: the removal is resumed call after call from the
        // sweep it returned, as the operator does from the tenant's status.
        sweep = apply::remove(
            &address.server,
            &mut admin,
            &removal,
            false,
            sweep,
            Duration::from_millis(5),
        )
        .await
        .unwrap();
        calls += 1;
        assert!(calls < 10_000, "the removal never finished");
    }
    assert_eq!(sweep.keys_removed, 20_000);
    assert!(calls > 1, "the budget cut the removal into several calls");
    // Every command the removal ran, from the server's own log of them
    // (each entry: id, time, duration in µs, arguments, …).
    let log: Vec<Vec<redis::Value>> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(-1)
        .query_async(&mut admin)
        .await
        .unwrap();
    let mut durations = Vec::new();
    for entry in &log {
        let command: Vec<String> = redis::from_redis_value_ref(&entry[3]).unwrap();
        if matches!(command.first().map(String::as_str), Some("SCAN" | "UNLINK")) {
            durations.push(redis::from_redis_value_ref::<i64>(&entry[2]).unwrap());
        }
    }
    assert!(
        durations.len() >= 40,
        "{} SCAN/UNLINK calls logged",
        durations.len()
    );
    let longest = durations.into_iter().max().unwrap();
    assert!(longest < 5_000, "a command held Redis for {longest} µs");

    assert_eq!(count(&mut admin, "acme:a:*").await, 0);
    assert_eq!(count(&mut admin, "acme:ab:*").await, 10_000);
    assert_eq!(count(&mut admin, "acme:kept:*").await, 1_000);
    assert_eq!(count(&mut admin, "acme:a?").await, 10);
    // The user is gone and its open connection closed.
    assert!(
        cache::login_check(&address, &a.desired.user, &a.password)
            .await
            .is_err()
    );
    assert!(refusal(&mut conn, &["PING"]).await.is_some());

    // Retain: the user is turned off and its connections closed; keys stay.
    let mut kept_conn = login(&redis, &kept).await;
    let users = observe::observe(&address.server, &mut admin).await.unwrap().users;
    let removal = cache::plan::plan_removal(&kept.desired.user, &kept.desired.prefix, false, &users);
    assert_eq!(
        removal,
        Removal::Disable {
            user: kept.desired.user.clone()
        }
    );
    let sweep = apply::remove(
        &address.server,
        &mut admin,
        &removal,
        false,
        apply::Sweep::default(),
        Duration::from_secs(1),
    )
    .await
    .unwrap();
    assert!(sweep.done && sweep.keys_removed == 0);
    assert!(
        cache::login_check(&address, &kept.desired.user, &kept.password)
            .await
            .is_err()
    );
    assert!(refusal(&mut kept_conn, &["PING"]).await.is_some());
    assert_eq!(count(&mut admin, "acme:kept:*").await, 1_000);
    let users = observe::observe(&address.server, &mut admin).await.unwrap().users;
    // Retained users are disabled again on a retry (kill and save too),
    // which changes nothing for one already off.
    assert_eq!(
        cache::plan::plan_removal(&kept.desired.user, &kept.desired.prefix, false, &users),
        Removal::Disable {
            user: kept.desired.user.clone()
        }
    );
}

#[tokio::test]
async fn a_tls_server_is_reached_only_with_its_ca_and_the_tenants_url_says_rediss() {
    let redis = ThrowawayRedis::start_with_tls().unwrap();
    let tls = address(&redis);
    assert!(tls.tls.as_ref().is_some_and(|t| t.ca_pem.is_some()));
    let mut admin = admin(&redis).await;
    let a = tenant("acme", "a", Commands::Default);
    let step = cache::provision(&tls, &mut admin, &a.desired).await.unwrap();
    assert!(matches!(step, Some(CacheStep::SetUser { .. })));
    cache::login_check(&tls, &a.desired.user, &a.password)
        .await
        .unwrap();

    // The URL an application gets, with the CA its platform gives it.
    let url = cache::redis_url(&tls, &a.desired.user, &a.password);
    assert!(url.starts_with("rediss://tdb.acme.a:"), "{url}");
    let client = redis::Client::build_with_tls(
        url.as_str(),
        redis::TlsCertificates {
            client_tls: None,
            root_cert: redis.ca_pem(),
        },
    )
    .unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let () = redis::cmd("SET")
        .arg("acme:a:k")
        .arg("v")
        .query_async(&mut conn)
        .await
        .unwrap();

    // The certificate is verified: without the CA (the system's roots
    // only) the handshake fails, and so does plain TCP on a TLS port.
    let system_roots = Address {
        tls: Some(Tls { ca_pem: None }),
        ..tls.clone()
    };
    let refused = cache::login_check(&system_roots, &a.desired.user, &a.password).await;
    assert!(refused.is_err(), "an unknown CA was trusted");
    let plain = Address { tls: None, ..tls };
    assert!(
        cache::login_check(&plain, &a.desired.user, &a.password)
            .await
            .is_err()
    );
}
