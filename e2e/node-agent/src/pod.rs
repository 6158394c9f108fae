//! One pod's life on this node: images, volumes, init containers, containers, restarts,
//! `activeDeadlineSeconds`, graceful deletion, and the status the kubelet would report.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::select_all;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use nix::sys::signal::Signal;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::container::{Exit, Running, Signaller};
use crate::env::{Objects, container_env, expand_all, referenced_objects};
use crate::sandbox::{Mount, SandboxSpec, bwrap_args};
use crate::status::{PodView, State, Terminated, Tracked, pod_status, termination_message};
use crate::volumes::{HostVolume, create_dir, prepare};
use crate::{Error, Result, Shared};

/// Label that puts a pod in an empty network namespace, as the chart's default-deny
/// NetworkPolicy would cut it off.
pub const SANDBOX_LABEL: &str = "outlayer.dev/sandbox";
/// Real kubelets back off from 10 s to 5 min; tests cannot wait that long.
const RESTART_BACKOFF_START: Duration = Duration::from_secs(1);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(10);
const RETRY: Duration = Duration::from_secs(1);
const DEFAULT_GRACE_SECONDS: i64 = 30;

/// Why the normal course of a pod stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Interrupt {
    /// `deletionTimestamp` set: stop gracefully, then remove the object.
    Deleted,
    /// The object is gone (force-deleted): stop at once.
    Gone,
    /// `activeDeadlineSeconds` passed.
    Deadline,
}

struct Instance {
    signaller: Signaller,
    wait: JoinHandle<Exit>,
    started_at: Timestamp,
    instance: u32,
    termination_file: PathBuf,
    log: PathBuf,
}

pub(crate) struct PodWorker {
    shared: Arc<Shared>,
    updates: watch::Receiver<Option<Pod>>,
    pod: Pod,
    api: Api<Pod>,
    name: String,
    uid: String,
    dir: PathBuf,
    log_dir: PathBuf,
    start_time: Timestamp,
    deadline: Option<Instant>,
    phase: &'static str,
    reason: Option<&'static str>,
    message: Option<String>,
    sandbox_ready: bool,
    initialized: bool,
    init: Vec<Tracked>,
    main: Vec<Tracked>,
    running: BTreeMap<String, Instance>,
    next_instance: u32,
    volumes: BTreeMap<String, HostVolume>,
}

enum Event {
    Exited(String, Exit),
    RestartDue,
    Interrupted(Interrupt),
}

/// Runs the pod until it is terminal and deleted (or gone). Errors are logged, never fatal to
/// the agent: a real node keeps serving its other pods.
pub(crate) async fn run(shared: Arc<Shared>, updates: watch::Receiver<Option<Pod>>) {
    let Some(pod) = updates.borrow().clone() else {
        return;
    };
    let Some(mut worker) = PodWorker::new(shared, updates, pod) else {
        return;
    };
    let name = worker.name.clone();
    let uid = worker.uid.clone();
    worker.lifecycle().await;
    // Instances left running (only when the task is cancelled mid-way) die with their handles.
    for (_, instance) in std::mem::take(&mut worker.running) {
        instance.signaller.kill_bwrap();
        instance.wait.abort();
    }
    tracing::debug!(pod = %name, %uid, "pod worker finished");
}

impl PodWorker {
    fn new(shared: Arc<Shared>, updates: watch::Receiver<Option<Pod>>, pod: Pod) -> Option<Self> {
        let namespace = pod.metadata.namespace.clone()?;
        let name = pod.metadata.name.clone()?;
        let uid = pod.metadata.uid.clone()?;
        let spec = pod.spec.clone()?;
        let dir = shared.config.state_dir.join("pods").join(&uid);
        let log_dir = crate::pod_log_dir(&shared.config.state_dir, &namespace, &name, &uid);
        let start_time = pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0)
            .unwrap_or_else(Timestamp::now);
        let deadline = spec.active_deadline_seconds.map(|secs| {
            let elapsed = Timestamp::now().duration_since(start_time).unsigned_abs();
            Instant::now() + Duration::from_secs(secs.max(0) as u64).saturating_sub(elapsed)
        });
        let track = |c: &Container| Tracked::new(&c.name, c.image.as_deref().unwrap_or_default());
        Some(PodWorker {
            api: Api::namespaced(shared.client.clone(), &namespace),
            init: spec.init_containers.iter().flatten().map(track).collect(),
            main: spec.containers.iter().map(track).collect(),
            shared,
            updates,
            pod,
            name,
            uid,
            dir,
            log_dir,
            start_time,
            deadline,
            phase: "Pending",
            reason: None,
            message: None,
            sandbox_ready: false,
            initialized: false,
            running: BTreeMap::new(),
            next_instance: 0,
            volumes: BTreeMap::new(),
        })
    }

    fn restart_policy(&self) -> &str {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref())
            .unwrap_or("Always")
    }

    fn is_deleted(&self) -> bool {
        self.pod.metadata.deletion_timestamp.is_some()
    }

    async fn lifecycle(&mut self) {
        let existing_phase = self.pod.status.as_ref().and_then(|s| s.phase.clone());
        if matches!(existing_phase.as_deref(), Some("Succeeded" | "Failed")) {
            // Already finished (e.g. before an agent restart): only deletion is left to do.
            self.finish_after_terminal().await;
            return;
        }
        if let Some(interrupt) = self.prepare_and_init().await {
            self.handle_interrupt(interrupt).await;
            return;
        }
        if let Some(interrupt) = self.run_containers().await {
            self.handle_interrupt(interrupt).await;
            return;
        }
        self.finish_after_terminal().await;
    }

    /// Images, volumes and init containers; `Some` when interrupted.
    async fn prepare_and_init(&mut self) -> Option<Interrupt> {
        self.write_status().await;
        // An unknown image keeps the pod Pending in ErrImagePull, as on a real node.
        loop {
            let unknown: Vec<(bool, usize, String)> = self.unknown_images();
            if unknown.is_empty() {
                break;
            }
            for (is_init, index, image) in &unknown {
                let tracked = if *is_init {
                    &mut self.init[*index]
                } else {
                    &mut self.main[*index]
                };
                tracked.state = State::Waiting {
                    reason: "ErrImagePull".into(),
                    message: Some(format!(
                        "image {image:?} is not in the node agent's image map"
                    )),
                };
            }
            self.write_status().await;
            if let Some(i) = self.pause(RETRY).await {
                return Some(i);
            }
        }

        let volumes = loop {
            match self.prepare_volumes().await {
                Ok(v) => break v,
                Err(e) => {
                    tracing::info!(pod = %self.name, error = %e, "volumes not ready");
                    for t in self.init.iter_mut().chain(self.main.iter_mut()) {
                        t.state = State::Waiting {
                            reason: "ContainerCreating".into(),
                            message: Some(e.to_string()),
                        };
                    }
                    self.write_status().await;
                    if let Some(i) = self.pause(RETRY).await {
                        return Some(i);
                    }
                }
            }
        };
        self.volumes = volumes;
        self.sandbox_ready = true;

        for index in 0..self.init.len() {
            let mut backoff = RESTART_BACKOFF_START;
            loop {
                if let Some(i) = self.start(true, index).await {
                    return Some(i);
                }
                let name = self.init[index].name.clone();
                let (exit, interrupt) = self.wait_one(&name).await;
                if let Some(i) = interrupt {
                    return Some(i);
                }
                let Some(exit) = exit else { continue };
                self.record_exit(true, index, exit);
                if exit.code == 0 {
                    break;
                }
                if self.restart_policy() == "Never" {
                    self.phase = "Failed";
                    self.write_status().await;
                    return None;
                }
                self.write_status().await;
                if let Some(i) = self.pause(backoff).await {
                    return Some(i);
                }
                backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
                self.init[index].restart_count += 1;
            }
        }
        self.initialized = true;
        None
    }

    /// Main containers with restarts by policy; `Some` when interrupted, `None` when terminal.
    async fn run_containers(&mut self) -> Option<Interrupt> {
        if self.phase == "Failed" {
            return None;
        }
        for index in 0..self.main.len() {
            if let Some(i) = self.start(false, index).await {
                return Some(i);
            }
        }
        self.phase = "Running";
        self.write_status().await;
        let mut next_backoff: BTreeMap<usize, Duration> = BTreeMap::new();
        let mut restart_at: BTreeMap<usize, Instant> = BTreeMap::new();
        loop {
            if self.running.is_empty() && restart_at.is_empty() {
                let all_ok = self
                    .main
                    .iter()
                    .all(|t| t.terminated().is_some_and(|t| t.exit_code == 0));
                self.phase = if all_ok { "Succeeded" } else { "Failed" };
                self.write_status().await;
                return None;
            }
            let next_restart = restart_at.values().min().copied();
            let event = tokio::select! {
                (name, exit) = next_exit(&mut self.running) => Event::Exited(name, exit),
                _ = sleep_until(next_restart) => Event::RestartDue,
                interrupt = interrupted(&mut self.updates, self.deadline) => Event::Interrupted(interrupt),
            };
            match event {
                Event::Exited(name, exit) => {
                    let Some(index) = self.main.iter().position(|t| t.name == name) else {
                        continue;
                    };
                    self.record_exit(false, index, exit);
                    let restart = match self.restart_policy() {
                        "Always" => true,
                        "OnFailure" => exit.code != 0,
                        _ => false,
                    };
                    if restart {
                        let backoff = next_backoff
                            .get(&index)
                            .copied()
                            .unwrap_or(RESTART_BACKOFF_START);
                        restart_at.insert(index, Instant::now() + backoff);
                        next_backoff.insert(index, (backoff * 2).min(RESTART_BACKOFF_MAX));
                        let tracked = &mut self.main[index];
                        tracked.last_terminated = tracked.terminated().cloned();
                        tracked.state = State::Waiting {
                            reason: "CrashLoopBackOff".into(),
                            message: Some(format!(
                                "back-off {}s restarting failed container={}",
                                backoff.as_secs(),
                                tracked.name
                            )),
                        };
                    }
                    self.write_status().await;
                }
                Event::RestartDue => {
                    let now = Instant::now();
                    let due: Vec<usize> = restart_at
                        .iter()
                        .filter(|(_, at)| **at <= now)
                        .map(|(i, _)| *i)
                        .collect();
                    for index in due {
                        restart_at.remove(&index);
                        self.main[index].restart_count += 1;
                        if let Some(i) = self.start(false, index).await {
                            return Some(i);
                        }
                    }
                }
                Event::Interrupted(interrupt) => {
                    self.apply_latest();
                    return Some(interrupt);
                }
            }
        }
    }

    /// Starts container `index`; `Some` when interrupted while waiting for its config.
    async fn start(&mut self, is_init: bool, index: usize) -> Option<Interrupt> {
        let container = {
            let spec = self.pod.spec.as_ref()?;
            if is_init {
                spec.init_containers.as_ref()?.get(index)?.clone()
            } else {
                spec.containers.get(index)?.clone()
            }
        };
        loop {
            match self.spawn(&container).await {
                Ok(instance) => {
                    let tracked = if is_init {
                        &mut self.init[index]
                    } else {
                        &mut self.main[index]
                    };
                    if let State::Terminated(t) = &tracked.state {
                        tracked.last_terminated = Some(t.clone());
                    }
                    tracked.state = State::Running {
                        started_at: instance.started_at,
                        instance: instance.instance,
                    };
                    self.running.insert(container.name.clone(), instance);
                    self.write_status().await;
                    return None;
                }
                Err(e) => {
                    tracing::info!(pod = %self.name, container = %container.name, error = %e, "cannot start container");
                    let reason = match e {
                        Error::ContainerConfig(_) => "CreateContainerConfigError",
                        _ => "CreateContainerError",
                    };
                    let tracked = if is_init {
                        &mut self.init[index]
                    } else {
                        &mut self.main[index]
                    };
                    tracked.state = State::Waiting {
                        reason: reason.into(),
                        message: Some(e.to_string()),
                    };
                    self.write_status().await;
                    if let Some(i) = self.pause(RETRY).await {
                        return Some(i);
                    }
                }
            }
        }
    }

    async fn spawn(&mut self, container: &Container) -> Result<Instance> {
        let objects = self.fetch_objects().await?;
        let mut env = container_env(&self.pod, container, &objects, &self.shared.allocatable)?;
        if let Some(service) = &self.shared.config.kubernetes_service {
            // The kubelet puts these first; a container's own env of the same name wins.
            let port = service.port.to_string();
            let service_env = [
                ("KUBERNETES_SERVICE_HOST", service.host.clone()),
                ("KUBERNETES_SERVICE_PORT", port.clone()),
                ("KUBERNETES_SERVICE_PORT_HTTPS", port),
            ];
            for (name, value) in service_env.into_iter().rev() {
                if !env.iter().any(|(n, _)| n == name) {
                    env.insert(0, (name.to_string(), value));
                }
            }
        }
        let image = container.image.clone().unwrap_or_default();
        let spec = self
            .shared
            .config
            .image(&image)
            .ok_or_else(|| Error::ContainerConfig(format!("unknown image {image:?}")))?;
        // Docker/Kubernetes rules: `command` replaces ENTRYPOINT; `args` replaces CMD.
        let mut argv = match &container.command {
            Some(cmd) if !cmd.is_empty() => expand_all(cmd, &env),
            _ => spec.entrypoint.clone(),
        };
        match &container.args {
            Some(args) if !args.is_empty() => argv.extend(expand_all(args, &env)),
            _ if container.command.as_ref().is_none_or(|c| c.is_empty()) => {
                argv.extend(spec.cmd.iter().cloned())
            }
            _ => {}
        }
        if argv.is_empty() {
            return Err(Error::ContainerConfig(format!(
                "no command: image {image:?} has no entrypoint and the container sets no command"
            )));
        }

        let instance = self.next_instance;
        self.next_instance += 1;
        let termination_file = self
            .dir
            .join("termination")
            .join(format!("{}-{instance}", container.name));
        create_dir(termination_file.parent().unwrap_or(&self.dir))?;
        std::fs::write(&termination_file, b"").map_err(|source| Error::Io {
            what: format!("create {}", termination_file.display()),
            source,
        })?;
        let mut mounts = vec![Mount {
            host: termination_file.clone(),
            container: container
                .termination_message_path
                .clone()
                .unwrap_or_else(|| "/dev/termination-log".into())
                .into(),
            read_only: false,
        }];
        // The image's program, and any other file its mapping names (e.g. a wrapper script's target),
        // is part of the image: bind it where it is, read-only, so it runs even from a tree the sandbox
        // otherwise hides (a checkout under /tmp, as CI may use).
        for (index, word) in spec.entrypoint.iter().enumerate() {
            let path = std::path::PathBuf::from(word);
            if path.is_absolute() && (index == 0 || path.is_file()) {
                mounts.push(Mount {
                    host: path.clone(),
                    container: path,
                    read_only: true,
                });
            }
        }
        for m in container.volume_mounts.iter().flatten() {
            let volume: &HostVolume = self.volumes.get(&m.name).ok_or_else(|| {
                Error::ContainerConfig(format!("volumeMount {:?}: no such volume", m.name))
            })?;
            let host = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                Some(sub) => {
                    let p = volume.path.join(sub);
                    if !volume.read_only {
                        create_dir(&p)?;
                    }
                    p
                }
                None => volume.path.clone(),
            };
            mounts.push(Mount {
                host,
                container: m.mount_path.clone().into(),
                read_only: volume.read_only || m.read_only == Some(true),
            });
        }
        let security = container.security_context.as_ref();
        let pod_security = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.security_context.as_ref());
        let sandbox = SandboxSpec {
            mounts,
            hidden: vec![self.shared.config.state_dir.clone()],
            env,
            argv,
            working_dir: container.working_dir.clone(),
            hostname: self.name.chars().take(63).collect(),
            isolate_network: self
                .pod
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SANDBOX_LABEL))
                .is_some_and(|v| v == "true"),
            uid: security
                .and_then(|s| s.run_as_user)
                .or(pod_security.and_then(|s| s.run_as_user)),
            gid: security
                .and_then(|s| s.run_as_group)
                .or(pod_security.and_then(|s| s.run_as_group)),
            privileged: security.and_then(|s| s.privileged) == Some(true),
            read_only_root: security.and_then(|s| s.read_only_root_filesystem) == Some(true),
        };
        let args = bwrap_args(&sandbox, std::path::Path::new("/"));
        create_dir(&self.log_dir.join(&container.name))?;
        let log = self
            .log_dir
            .join(&container.name)
            .join(format!("{}.log", self.restart_count_of(&container.name)));
        let status_file = self
            .dir
            .join("termination")
            .join(format!("{}-{instance}.bwrap", container.name));
        let mut running = Running::spawn(&self.shared.config.bwrap, &args, &log, status_file)?;
        let signaller = running.signaller();
        self.shared.register(&self.uid, &signaller);
        tracing::info!(pod = %self.name, container = %container.name, instance, "container started");
        Ok(Instance {
            signaller,
            wait: tokio::spawn(async move { running.wait().await }),
            started_at: Timestamp::now(),
            instance,
            termination_file,
            log,
        })
    }

    fn restart_count_of(&self, name: &str) -> i32 {
        self.init
            .iter()
            .chain(&self.main)
            .find(|t| t.name == name)
            .map(|t| t.restart_count)
            .unwrap_or(0)
    }

    /// Waits for container `name` (an init container) or an interrupt.
    async fn wait_one(&mut self, name: &str) -> (Option<Exit>, Option<Interrupt>) {
        let Some(instance) = self.running.get_mut(name) else {
            return (None, None);
        };
        let event = tokio::select! {
            exit = &mut instance.wait => Event::Exited(
                name.to_owned(),
                exit.unwrap_or(Exit { code: 128, started: false }),
            ),
            interrupt = interrupted(&mut self.updates, self.deadline) => Event::Interrupted(interrupt),
        };
        match event {
            Event::Exited(_, exit) => (Some(exit), None),
            Event::Interrupted(interrupt) => {
                self.apply_latest();
                (None, Some(interrupt))
            }
            Event::RestartDue => (None, None),
        }
    }

    /// Turns the exit of a running instance into a terminated state.
    fn record_exit(&mut self, is_init: bool, index: usize, exit: Exit) {
        let tracked_name = if is_init {
            &self.init[index].name
        } else {
            &self.main[index].name
        };
        let Some(instance) = self.running.remove(tracked_name) else {
            return;
        };
        self.shared.unregister(&self.uid, &instance.signaller);
        let container = self.pod.spec.as_ref().and_then(|s| {
            let list: Vec<&Container> = if is_init {
                s.init_containers.iter().flatten().collect()
            } else {
                s.containers.iter().collect()
            };
            list.get(index).map(|c| (*c).clone())
        });
        let file = std::fs::read(&instance.termination_file).unwrap_or_default();
        let log = std::fs::read(&instance.log).unwrap_or_default();
        let policy = container
            .as_ref()
            .and_then(|c| c.termination_message_policy.clone());
        let message = termination_message(&file, &log, policy.as_deref(), exit.code);
        let reason = if !exit.started {
            "StartError"
        } else if exit.code == 0 {
            "Completed"
        } else {
            "Error"
        };
        let tracked = if is_init {
            &mut self.init[index]
        } else {
            &mut self.main[index]
        };
        tracked.state = State::Terminated(Terminated {
            exit_code: exit.code,
            reason: reason.into(),
            message,
            started_at: Some(instance.started_at),
            finished_at: Timestamp::now(),
            instance: instance.instance,
        });
        tracing::info!(pod = %self.name, container = %tracked.name, exit_code = exit.code, "container exited");
    }

    async fn handle_interrupt(&mut self, interrupt: Interrupt) {
        match interrupt {
            Interrupt::Gone => {
                self.kill_all(Duration::ZERO).await;
            }
            Interrupt::Deadline => {
                self.kill_all(self.grace()).await;
                self.phase = "Failed";
                self.reason = Some("DeadlineExceeded");
                self.message =
                    Some("Pod was active on the node longer than the specified deadline".into());
                self.write_status().await;
                self.finish_after_terminal().await;
            }
            Interrupt::Deleted => {
                self.kill_all(self.grace()).await;
                if !matches!(self.phase, "Succeeded" | "Failed") {
                    let all_ok = !self.main.is_empty()
                        && self
                            .main
                            .iter()
                            .all(|t| t.terminated().is_some_and(|t| t.exit_code == 0));
                    self.phase = if all_ok { "Succeeded" } else { "Failed" };
                }
                self.write_status().await;
                self.remove_object().await;
            }
        }
    }

    fn grace(&self) -> Duration {
        let secs = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .or(self
                .pod
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds))
            .unwrap_or(DEFAULT_GRACE_SECONDS);
        Duration::from_secs(secs.max(0) as u64)
    }

    /// SIGTERM to every running container, SIGKILL after `grace`, and their exits recorded.
    async fn kill_all(&mut self, grace: Duration) {
        if self.running.is_empty() {
            return;
        }
        let signal = if grace.is_zero() {
            Signal::SIGKILL
        } else {
            Signal::SIGTERM
        };
        for instance in self.running.values() {
            instance.signaller.signal(signal);
        }
        let deadline = Instant::now() + grace;
        let mut killed = grace.is_zero();
        while !self.running.is_empty() {
            let exited = tokio::select! {
                (name, exit) = next_exit(&mut self.running) => Some((name, exit)),
                _ = tokio::time::sleep_until(deadline), if !killed => None,
            };
            match exited {
                Some((name, exit)) => self.record_exit_by_name(&name, exit),
                None => {
                    for instance in self.running.values() {
                        instance.signaller.signal(Signal::SIGKILL);
                    }
                    killed = true;
                }
            }
        }
    }

    fn record_exit_by_name(&mut self, name: &str, exit: Exit) {
        if let Some(i) = self.init.iter().position(|t| t.name == name)
            && self.init[i].is_running()
        {
            self.record_exit(true, i, exit);
            return;
        }
        if let Some(i) = self.main.iter().position(|t| t.name == name) {
            self.record_exit(false, i, exit);
        }
    }

    /// A terminal pod waits for its deletion, then removes the object as the kubelet does.
    async fn finish_after_terminal(&mut self) {
        loop {
            if self.is_deleted() {
                self.remove_object().await;
                return;
            }
            if self.updates.changed().await.is_err() {
                return;
            }
            if !self.apply_latest() {
                return;
            }
        }
    }

    /// Final delete with grace 0, bound to this pod's uid so a same-named successor survives.
    async fn remove_object(&mut self) {
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self.api.delete(&self.name, &params).await {
            Ok(_) => tracing::info!(pod = %self.name, "pod deleted"),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => tracing::warn!(pod = %self.name, error = %e, "final delete failed"),
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::debug!(dir = %self.dir.display(), error = %e, "pod dir not removed");
        }
    }

    /// Sleeps `duration` unless interrupted.
    async fn pause(&mut self, duration: Duration) -> Option<Interrupt> {
        let interrupt = tokio::select! {
            _ = tokio::time::sleep(duration) => None,
            interrupt = interrupted(&mut self.updates, self.deadline) => Some(interrupt),
        };
        if interrupt.is_some() {
            self.apply_latest();
        }
        interrupt
    }

    /// Takes the newest pod object; false when the pod is gone.
    fn apply_latest(&mut self) -> bool {
        match self.updates.borrow_and_update().clone() {
            Some(pod) => {
                self.pod = pod;
                true
            }
            None => false,
        }
    }

    fn unknown_images(&self) -> Vec<(bool, usize, String)> {
        let spec = match self.pod.spec.as_ref() {
            Some(s) => s,
            None => return Vec::new(),
        };
        let init = spec
            .init_containers
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, c)| (true, i, c));
        let main = spec
            .containers
            .iter()
            .enumerate()
            .map(|(i, c)| (false, i, c));
        init.chain(main)
            .filter_map(|(is_init, i, c)| {
                let image = c.image.clone().unwrap_or_default();
                self.shared
                    .config
                    .image(&image)
                    .is_none()
                    .then_some((is_init, i, image))
            })
            .collect()
    }

    async fn fetch_objects(&self) -> Result<Objects> {
        let (secret_names, config_map_names) = referenced_objects(&self.pod);
        let namespace = self.pod.metadata.namespace.clone().unwrap_or_default();
        let secrets_api = Api::<Secret>::namespaced(self.shared.client.clone(), &namespace);
        let cms_api = Api::<ConfigMap>::namespaced(self.shared.client.clone(), &namespace);
        let mut objects = Objects::default();
        for name in secret_names {
            let secret = get_or_absent(&secrets_api, &name).await?;
            objects.secrets.insert(name, secret);
        }
        for name in config_map_names {
            let cm = get_or_absent(&cms_api, &name).await?;
            objects.config_maps.insert(name, cm);
        }
        Ok(objects)
    }

    async fn prepare_volumes(&self) -> Result<BTreeMap<String, HostVolume>> {
        let objects = self.fetch_objects().await?;
        create_dir(&self.dir)?;
        prepare(
            &self.shared.client,
            &self.pod,
            &objects,
            &self.dir,
            &self.shared.allocatable,
        )
        .await
    }

    async fn write_status(&mut self) {
        let status = pod_status(
            &PodView {
                phase: self.phase,
                reason: self.reason,
                message: self.message.as_deref(),
                start_time: self.start_time,
                sandbox_ready: self.sandbox_ready,
                initialized: self.initialized,
                init_containers: &self.init,
                containers: &self.main,
            },
            self.pod.status.as_ref(),
            &self.uid,
        );
        let patch = Patch::Merge(serde_json::json!({ "status": status }));
        match self
            .api
            .patch_status(&self.name, &PatchParams::default(), &patch)
            .await
        {
            Ok(updated) => self.pod.status = updated.status,
            Err(e) => tracing::warn!(pod = %self.name, error = %e, "status update failed"),
        }
    }
}

/// Secrets and ConfigMaps the Node authorizer lets this node read once a pod references them;
/// "forbidden" right after binding means its graph has not caught up yet, so it is retried.
async fn get_or_absent<K>(api: &Api<K>, name: &str) -> Result<Option<K>>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.get_opt(name).await {
        Ok(found) => Ok(found),
        Err(kube::Error::Api(s)) if s.code == 403 => Err(Error::Mount(format!(
            "get {name}: forbidden (node authorizer not caught up yet?)"
        ))),
        Err(source) => Err(Error::Kube {
            what: format!("get {name}"),
            source,
        }),
    }
}

/// Resolves when the pod is deleted or gone, or its deadline passes.
async fn interrupted(
    updates: &mut watch::Receiver<Option<Pod>>,
    deadline: Option<Instant>,
) -> Interrupt {
    loop {
        let current = updates.borrow().clone();
        match current {
            None => return Interrupt::Gone,
            Some(pod) if pod.metadata.deletion_timestamp.is_some() => return Interrupt::Deleted,
            Some(_) => {}
        }
        tokio::select! {
            changed = updates.changed() => {
                if changed.is_err() {
                    return Interrupt::Gone;
                }
            }
            _ = sleep_until(deadline) => return Interrupt::Deadline,
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The first running instance to exit. Pending forever when nothing runs.
async fn next_exit(running: &mut BTreeMap<String, Instance>) -> (String, Exit) {
    if running.is_empty() {
        return std::future::pending().await;
    }
    let names: Vec<String> = running.keys().cloned().collect();
    let waits = running.values_mut().map(|i| &mut i.wait);
    let (result, index, _) = select_all(waits).await;
    let exit = result.unwrap_or(Exit {
        code: 128,
        started: false,
    });
    (names[index].clone(), exit)
}
