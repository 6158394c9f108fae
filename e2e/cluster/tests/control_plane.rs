//! The local control plane itself: it starts, serves the pinned version, and leaves nothing behind.

use e2e_cluster::{Cluster, versions};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};

#[tokio::test]
async fn starts_serves_pinned_version_and_cleans_up() {
    let cluster = Cluster::start().await.unwrap();
    let client = cluster.client();
    let info = client.apiserver_version().await.unwrap();
    if cluster.is_local() {
        assert_eq!(info.git_version, versions::pinned().kubernetes);
    }

    // kube-controller-manager runs with service-account credentials: the root CA publisher wrote
    // its ConfigMap into the default namespace.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let mut published = None;
    for _ in 0..300 {
        published = cms.get_opt("kube-root-ca.crt").await.unwrap();
        if published.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(published.is_some(), "kube-root-ca.crt was never published");

    let cm = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some("probe".into()),
            ..Default::default()
        },
        data: Some([("k".to_owned(), "v".to_owned())].into_iter().collect()),
        ..Default::default()
    };
    cms.create(&PostParams::default(), &cm).await.unwrap();
    assert_eq!(cms.get("probe").await.unwrap().data.unwrap()["k"], "v");

    if !cluster.is_local() {
        cms.delete("probe", &Default::default()).await.unwrap();
        return;
    }
    let dir = cluster.state_dir().unwrap().to_owned();
    let pids: Vec<String> = [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
    ]
    .iter()
    .map(|c| cluster.component_log(c, 10).map(|_| c.to_string()).unwrap())
    .collect();
    assert_eq!(pids.len(), 4);
    let pid_list = cluster.pids();
    drop(cluster);
    assert!(!dir.exists(), "temp dir {} left behind", dir.display());
    for pid in pid_list {
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok();
        assert!(!alive, "process {pid} still running after drop");
    }
}

#[test]
fn a_panicking_test_leaves_no_processes_or_files() {
    let (sender, receiver) = std::sync::mpsc::channel();
    let outcome = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let cluster = Cluster::start().await.unwrap();
            if !cluster.is_local() {
                return;
            }
            sender
                .send((cluster.pids(), cluster.state_dir().unwrap().to_owned()))
                .unwrap();
            panic!("deliberate panic while the cluster runs");
        });
    })
    .join();
    let Ok((pids, dir)) = receiver.recv() else {
        return; // existing cluster: nothing was started
    };
    assert!(outcome.is_err(), "the thread should have panicked");
    assert_eq!(pids.len(), 4);
    assert!(!dir.exists(), "temp dir {} left behind", dir.display());
    for pid in pids {
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok();
        assert!(!alive, "process {pid} still running after the panic");
    }
}
