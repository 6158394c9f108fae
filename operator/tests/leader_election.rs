//! Lease-based leader election against the real apiserver: one leader among contenders, takeover
//! after a leader stops renewing, immediate takeover after a graceful release, and loss reported
//! when another holder appears.

mod common;

use std::future::Future;
use std::time::Duration;

use common::{WAIT, wait_for};
use e2e_cluster::Cluster;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use outlayer_operator::leader::{Attempt, LeaderElector, Leadership, LeaseConfig};

const NAMESPACE: &str = "default";

fn config(lease: &str, identity: &str, duration: Duration) -> LeaseConfig {
    let mut config = LeaseConfig::new(NAMESPACE, lease, identity).with_lease_duration(duration);
    // Contenders retry often so a free Lease is picked up quickly; expiry still takes `duration`.
    config.retry_interval = Duration::from_millis(300);
    config
}

async fn lease(cluster: &Cluster, name: &str) -> Lease {
    Api::<Lease>::namespaced(cluster.client(), NAMESPACE)
        .get(name)
        .await
        .unwrap()
}

fn holder(lease: &Lease) -> Option<String> {
    lease.spec.as_ref()?.holder_identity.clone()
}

fn transitions(lease: &Lease) -> i32 {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.lease_transitions)
        .unwrap_or(0)
}

fn acquire(
    cluster: &Cluster,
    config: LeaseConfig,
) -> impl Future<Output = Leadership> + Send + 'static {
    LeaderElector::new(cluster.client(), config).acquire(|_| {})
}

async fn await_leadership(what: &str, task: tokio::task::JoinHandle<Leadership>) -> Leadership {
    tokio::time::timeout(WAIT, task)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .unwrap()
}

#[tokio::test]
async fn lease_leader_election() {
    let cluster = Cluster::start().await.unwrap();

    // Five contenders start at once: exactly one leads; the others see it as the holder. A long
    // lease, so no contender can legitimately take over during the checks.
    let mut contenders = Vec::new();
    for i in 0..5 {
        let client = cluster.client();
        let config = config("race", &format!("contender-{i}"), Duration::from_secs(60));
        contenders.push(tokio::spawn(async move {
            LeaderElector::new(client, config).acquire(|_| {}).await
        }));
    }
    let winner = wait_for("one contender to lead", || {
        let finished = contenders.iter().position(|c| c.is_finished());
        async move { finished }
    })
    .await;
    let leader = await_leadership("the winner", contenders.remove(winner)).await;
    assert!(leader.is_leading());
    let race = lease(&cluster, "race").await;
    let holder_identity = holder(&race).unwrap();
    assert_eq!(holder_identity, format!("contender-{winner}"));
    assert_eq!(transitions(&race), 0, "created once, never handed over");
    for (i, contender) in contenders.iter().enumerate() {
        assert!(!contender.is_finished(), "a second contender ({i}) leads");
    }
    // A fresh contender's attempt is refused and names the holder.
    let mut late = LeaderElector::new(
        cluster.client(),
        config("race", "late", Duration::from_secs(60)),
    );
    assert_eq!(
        late.try_acquire_or_renew().await.unwrap(),
        Attempt::Held {
            holder: Some(holder_identity.clone())
        }
    );
    assert_eq!(
        holder(&lease(&cluster, "race").await),
        Some(holder_identity)
    );
    for contender in &contenders {
        contender.abort();
    }

    // The leader stops renewing (as if it crashed): the standby takes over once the lease expires.
    let short = Duration::from_secs(3);
    let first = acquire(&cluster, config("expiry", "first", short)).await;
    let standby = tokio::spawn(acquire(&cluster, config("expiry", "second", short)));
    // The first keeps renewing: the lease changes, so the standby never sees it expire.
    let renewed_by_first = lease(&cluster, "expiry").await.metadata.resource_version;
    wait_for("the leader to renew", || async {
        let current = lease(&cluster, "expiry").await;
        (current.metadata.resource_version != renewed_by_first
            && holder(&current).as_deref() == Some("first"))
        .then_some(())
    })
    .await;
    drop(first);
    let second = await_leadership("the standby to take over", standby).await;
    let expired = lease(&cluster, "expiry").await;
    assert_eq!(holder(&expired).as_deref(), Some("second"));
    assert_eq!(transitions(&expired), 1);
    assert!(second.is_leading());
    drop(second);

    // A graceful release hands over at once: the lease is long (10 min, beyond WAIT), so only the
    // release can let the standby in before the wait gives up.
    let long = Duration::from_secs(600);
    let first = acquire(&cluster, config("release", "first", long)).await;
    let standby = tokio::spawn(acquire(&cluster, config("release", "second", long)));
    assert!(first.release().await.unwrap(), "the leader held the lease");
    let second = await_leadership("the standby to take over after the release", standby).await;
    let released = lease(&cluster, "release").await;
    assert_eq!(holder(&released).as_deref(), Some("second"));
    assert_eq!(transitions(&released), 1);
    // Releasing what another replica holds changes nothing.
    let mut former = LeaderElector::new(cluster.client(), config("release", "first", long));
    assert!(!former.release().await.unwrap());
    assert_eq!(
        holder(&lease(&cluster, "release").await).as_deref(),
        Some("second")
    );
    assert!(second.release().await.unwrap());
    assert_eq!(holder(&lease(&cluster, "release").await), None);

    // Someone else writes the lease (an operator with a stale view, a human): the leader reports
    // the loss at its next renewal instead of carrying on.
    let mut leader_config = config("stolen", "leader", Duration::from_secs(60));
    leader_config.renew_interval = Duration::from_millis(500);
    let leader = acquire(&cluster, leader_config).await;
    let api: Api<Lease> = Api::namespaced(cluster.client(), NAMESPACE);
    // The leader renews concurrently: retry the write until it lands between two renewals.
    wait_for("the intruder's write", || async {
        let mut stolen = api.get("stolen").await.unwrap();
        let spec = stolen.spec.as_mut().unwrap();
        spec.holder_identity = Some("intruder".to_string());
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match api.replace("stolen", &PostParams::default(), &stolen).await {
            Ok(_) => Some(()),
            Err(kube::Error::Api(status)) if status.code == 409 => None,
            Err(error) => panic!("writing the lease failed: {error}"),
        }
    })
    .await;
    let reason = tokio::time::timeout(WAIT, leader.lost())
        .await
        .expect("the leader noticed the loss");
    assert!(reason.contains("intruder"), "{reason}");
    assert!(!leader.is_leading());
    // It lost, so releasing leaves the intruder's hold alone.
    assert!(!leader.release().await.unwrap());
    assert_eq!(
        holder(&lease(&cluster, "stolen").await).as_deref(),
        Some("intruder")
    );
}
