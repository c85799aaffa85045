//! The shell around `policy`: spawns and adopts nginx, watches master and workers by pidfd,
//! runs probes and config tests, watches config files, and carries out the policy's actions.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command as ProcessCommand, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::conf::{self, ConfigDump, FOREGROUND};
use super::policy::{Action, CommandError, Event, Health, MasterSignal, NginxState, Policy, PolicyConfig};
use super::probe::{ProbeError, Prober};
use super::process::{self, Pidfd};
use super::scan::{Step, WorkerScan, WorkersFound};
use super::timers::{Timer, TimerTable};
use super::watch::{BinaryIdentity, BinaryWatcher, ConfigWatcher};
use crate::config::Config;

/// How long workers of a dead generation may take to die after SIGKILL before the next
/// master starts anyway. I/O mechanics, not a decision: KILL cannot be refused, this only
/// bounds the wait for the kernel to tear them down (a process in D state).
const REAP_TIMEOUT: Duration = Duration::from_secs(2);
/// Lines of nginx's stderr kept to explain an exit.
const STDERR_TAIL: usize = 5;

#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    pub binary: PathBuf,
    pub config: PathBuf,
    pub pid_file: Option<PathBuf>,
    /// What `nginx-ha reload` can change in a running supervisor.
    pub live: LiveSettings,
}

/// The part of [`SupervisorConfig`] a running supervisor takes over (`nginx-ha reload`); the
/// binary, the nginx config path and the pid file need a restart of nginx-ha.
#[derive(Debug, Clone)]
pub struct LiveSettings {
    pub watch: bool,
    pub debounce: Duration,
    pub policy: PolicyConfig,
    pub prober: Option<Prober>,
    pub probe_interval: Duration,
}

impl SupervisorConfig {
    pub fn from_config(config: &Config) -> SupervisorConfig {
        SupervisorConfig {
            binary: config.nginx.binary_path(),
            config: config.nginx.config.clone(),
            pid_file: config.nginx.pid_file.clone(),
            live: LiveSettings {
                watch: config.nginx.watch,
                debounce: Duration::from_millis(config.nginx.watch_debounce_ms),
                policy: PolicyConfig {
                    fall: config.health.fall,
                    rise: config.health.rise,
                    probes: config.health.has_probes(),
                    reload_timeout: Duration::from_millis(config.nginx.reload_timeout_ms),
                    stop_timeout: Duration::from_millis(config.nginx.stop_timeout_ms),
                },
                prober: Prober::from_config(&config.health),
                probe_interval: config.health.interval(),
            },
        }
    }
}

/// The `nginx` part of the status document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NginxStatus {
    pub state: NginxState,
    pub healthy: bool,
    pub master_pid: Option<i32>,
    #[serde(default)]
    pub worker_pids: Vec<i32>,
    /// Workers of the previous config still finishing their requests after a reload.
    #[serde(default)]
    pub draining_pids: Vec<i32>,
    pub restarts: u64,
    pub config_error: Option<String>,
    #[serde(default)]
    pub worker_exits: u64,
    #[serde(default)]
    pub adopted: bool,
    #[serde(default)]
    pub last_exit: Option<String>,
    #[serde(default)]
    pub last_probe_error: Option<String>,
    /// A live binary upgrade: the new master while it starts (not serving yet).
    #[serde(default)]
    pub new_master_pid: Option<i32>,
    /// After an upgrade: the old master while it finishes its requests and quits (its workers
    /// are in `draining_pids`).
    #[serde(default)]
    pub old_master_pid: Option<i32>,
}

pub enum Command {
    /// Test the nginx config and reload; answered when the reload completed or was rejected.
    Reload {
        reply: oneshot::Sender<Result<(), CommandError>>,
    },
    /// nginx-ha's own config failed to load on `nginx-ha reload`.
    RejectOwnConfig {
        error: String,
        reply: oneshot::Sender<Result<(), CommandError>>,
    },
    /// Apply changed settings (from `nginx-ha reload`); sent before the `Reload` it goes with.
    Reconfigure(LiveSettings),
    /// `nginx-ha upgrade-nginx`: a live upgrade to the binary now on disk; answered when the
    /// old master is gone (Ok) or when it was refused or rolled back (Err, the reason).
    UpgradeNginx {
        reply: oneshot::Sender<Result<(), CommandError>>,
    },
    Shutdown,
    /// Before `Shutdown`, while connections drain to this node (`[[vrrp]] drain_ms`): nginx's
    /// stop gives them at least this long before TERM.
    KeepConnectionsFor(Duration),
    /// Stop supervising and leave nginx running, for the next nginx-ha to adopt.
    Detach,
}

pub struct SupervisorHandle {
    pub commands: mpsc::Sender<Command>,
    pub status: watch::Receiver<NginxStatus>,
    pub health: watch::Receiver<Health>,
    pub task: tokio::task::JoinHandle<()>,
}

pub fn spawn(config: SupervisorConfig) -> SupervisorHandle {
    let (commands_tx, commands_rx) = mpsc::channel(16);
    let policy = Policy::new(config.live.policy.clone());
    let status = initial_status(&policy);
    let (status_tx, status_rx) = watch::channel(status);
    let (health_tx, health_rx) = watch::channel(Health::Unhealthy);
    let task = tokio::spawn(Supervisor::new(config, policy, status_tx, health_tx).run(commands_rx));
    SupervisorHandle { commands: commands_tx, status: status_rx, health: health_rx, task }
}

fn initial_status(policy: &Policy) -> NginxStatus {
    let policy_status = policy.status();
    NginxStatus {
        state: policy_status.state,
        healthy: false,
        master_pid: None,
        worker_pids: Vec::new(),
        draining_pids: Vec::new(),
        restarts: 0,
        config_error: None,
        worker_exits: 0,
        adopted: false,
        last_exit: None,
        last_probe_error: None,
        new_master_pid: None,
        old_master_pid: None,
    }
}

/// What the helper tasks report back to the loop.
enum Internal {
    MasterExited { generation: u64 },
    WorkerExited { generation: u64, pid: i32 },
    Workers { generation: u64, pids: Vec<i32>, why: WorkersFound },
    Tested(Result<(), String>),
    Probed { generation: u64, result: Result<(), ProbeError> },
    FileChanged(PathBuf),
    Dumped(ConfigDump),
    UpgradeTested(Result<(), String>),
    BinaryChanged,
}

struct Master {
    generation: u64,
    pidfd: Arc<Pidfd>,
    /// None for an adopted master (not our child: its exit status is not ours to collect).
    child: Option<Child>,
    workers: HashMap<i32, Arc<Pidfd>>,
    /// Workers of the previous config, expected to exit after a reload.
    draining: HashSet<i32>,
    stderr_tail: Arc<Mutex<Vec<String>>>,
}

struct Supervisor {
    config: SupervisorConfig,
    policy: Policy,
    master: Option<Master>,
    generation: u64,
    /// Pids of a dead generation that must be gone before the next spawn.
    dead: Vec<Arc<Pidfd>>,
    internal_tx: mpsc::UnboundedSender<Internal>,
    internal_rx: mpsc::UnboundedReceiver<Internal>,
    /// The supervisor's helper tasks (`nginx -t`, pidfd waits, worker scans, probes, watcher
    /// forwarding, nginx's stderr): aborted when the supervisor ends, and a
    /// panic in one is the supervisor's own (see `run`), which the daemon notices.
    tasks: JoinSet<()>,
    watcher: Option<ConfigWatcher>,
    /// `worker_processes` of the config nginx was last started or reloaded with, from
    /// `nginx -T`: how many workers make a complete generation.
    expected_workers: Option<usize>,
    /// When nginx last read its config (spawn or HUP): a file of the new watch set changed
    /// after that was not seen by the watch, which did not exist yet.
    config_read_at: Option<std::time::SystemTime>,
    /// Debounces and the next probe; the policy keeps its own deadlines.
    timers: TimerTable<Instant>,
    probe_in_flight: bool,
    tickets: HashMap<u64, oneshot::Sender<Result<(), CommandError>>>,
    next_ticket: u64,
    status_tx: watch::Sender<NginxStatus>,
    health_tx: watch::Sender<Health>,
    adopted: bool,
    last_exit: Option<String>,
    last_probe_error: Option<ProbeError>,
    /// A live upgrade: the new master, started beside `master` until it serves.
    new_master: Option<Master>,
    /// Masters told to quit (the old one after an upgrade, a rolled-back new one) until they exit.
    leaving: Vec<Master>,
    /// The generation in `leaving` whose exit completes the upgrade.
    retiring: Option<u64>,
    binary_watcher: Option<BinaryWatcher>,
    /// The binary file the running nginx was started from (or last upgraded to).
    binary_identity: Option<BinaryIdentity>,
    /// nginx's pid file: the old master deletes it when it quits after an upgrade, so it is
    /// written again for the new one (adoption after an nginx-ha restart reads it).
    pid_file: Option<PathBuf>,
}

impl Supervisor {
    fn new(
        config: SupervisorConfig,
        policy: Policy,
        status_tx: watch::Sender<NginxStatus>,
        health_tx: watch::Sender<Health>,
    ) -> Self {
        let (internal_tx, internal_rx) = mpsc::unbounded_channel();
        Supervisor {
            config,
            policy,
            master: None,
            generation: 0,
            dead: Vec::new(),
            internal_tx,
            internal_rx,
            tasks: JoinSet::new(),
            watcher: None,
            expected_workers: None,
            config_read_at: None,
            timers: TimerTable::new(),
            probe_in_flight: false,
            tickets: HashMap::new(),
            next_ticket: 0,
            status_tx,
            health_tx,
            adopted: false,
            last_exit: None,
            last_probe_error: None,
            new_master: None,
            leaving: Vec::new(),
            retiring: None,
            binary_watcher: None,
            binary_identity: None,
            pid_file: None,
        }
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut sigchld = signal(SignalKind::child()).ok();
        // One `nginx -T` at startup serves the watch, the worker count and adoption.
        let dump = self.start_watching().await;
        self.pid_file = conf::pid_file(&self.config.binary, &dump, self.config.pid_file.as_deref()).await;
        self.binary_identity = BinaryIdentity::of(&self.config.binary);
        if self.config.live.watch {
            self.create_binary_watcher();
        }
        if let Some(master) = self.find_adoptable().await {
            let pid = master.pid();
            self.adopt(master).await;
            if process::start_time(pid).is_some_and(|started| changed_since(&dump, started)) {
                info!("the nginx config changed while nginx-ha was away; testing and reloading it");
                self.feed(Event::ConfigChanged).await;
            }
        } else {
            self.feed(Event::Launch).await;
        }
        loop {
            self.publish();
            if self.policy.shutting_down()
                && self.master.is_none()
                && self.new_master.is_none()
                && self.leaving.is_empty()
            {
                break;
            }
            let deadline = self.next_wakeup();
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Detach) => {
                        info!("leaving nginx running for the next nginx-ha to adopt");
                        return;
                    }
                    Some(command) => self.command(command).await,
                    None => self.begin_stop().await,
                },
                Some(internal) = self.internal_rx.recv() => self.internal(internal).await,
                Some(joined) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    if let Err(e) = joined
                        && e.is_panic()
                    {
                        error!("a task of the nginx supervisor panicked; the supervisor stops with it");
                        std::panic::resume_unwind(e.into_panic());
                    }
                }
                _ = sleep_until(deadline) => self.timers().await,
                Some(()) = recv_signal(&mut sigchld) => {
                    for pid in process::reap_orphans() {
                        debug!(pid, "reaped an orphaned process");
                    }
                }
            }
        }
        self.publish();
        info!("nginx stopped");
    }

    fn next_wakeup(&self) -> Option<Instant> {
        let policy = self.policy.next_deadline().map(Instant::from_std);
        [policy, self.timers.next()].into_iter().flatten().min()
    }

    async fn timers(&mut self) {
        let now = Instant::now();
        for timer in self.timers.expired(now) {
            match timer {
                Timer::ConfigDebounce => {
                    info!("nginx config changed; testing it");
                    self.feed(Event::ConfigChanged).await;
                }
                Timer::BinaryDebounce => {
                    let identity = BinaryIdentity::of(&self.config.binary);
                    if identity.is_some() && identity != self.binary_identity {
                        info!(binary = %self.config.binary.display(), "the nginx binary was replaced; upgrading nginx live");
                        self.feed(Event::UpgradeRequested { ticket: None }).await;
                    }
                }
                Timer::Probe => self.start_probe(),
            }
        }
        if self.policy.next_deadline().is_some_and(|at| now.into_std() >= at) {
            self.feed(Event::Timer).await;
        }
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Reload { reply } => {
                let ticket = self.ticket(reply);
                self.feed(Event::ReloadRequested { ticket }).await;
            }
            Command::RejectOwnConfig { error, reply } => {
                let ticket = self.ticket(reply);
                self.feed(Event::OwnConfigRejected { ticket, error }).await;
            }
            Command::Reconfigure(live) => self.reconfigure(live).await,
            Command::UpgradeNginx { reply } => {
                let ticket = self.ticket(reply);
                info!("upgrade-nginx requested");
                self.feed(Event::UpgradeRequested { ticket: Some(ticket) }).await;
            }
            Command::Shutdown => self.begin_stop().await,
            Command::KeepConnectionsFor(at_least) => {
                let mut policy = self.config.live.policy.clone();
                if policy.stop_timeout < at_least {
                    info!(
                        stop_timeout_ms = at_least.as_millis() as u64,
                        "nginx's stop waits for the connections that drain"
                    );
                    policy.stop_timeout = at_least;
                    self.config.live.policy = policy.clone();
                    self.feed(Event::Reconfigured(policy)).await;
                }
            }
            Command::Detach => unreachable!("handled by the loop"),
        }
    }

    async fn reconfigure(&mut self, live: LiveSettings) {
        let (watched, watch, policy) = (self.config.live.watch, live.watch, live.policy.clone());
        // A debounce or stop already under way keeps the time it was given.
        self.config.live = live;
        // The next probe (if any) goes out at once, with the new prober and then the new interval.
        self.timers.stop(Timer::Probe);
        self.feed(Event::Reconfigured(policy)).await;
        match (watched, watch) {
            (true, false) => {
                self.watcher = None;
                self.timers.stop(Timer::ConfigDebounce);
                self.binary_watcher = None;
                self.timers.stop(Timer::BinaryDebounce);
                info!("watch = false: nginx config changes are no longer reloaded until `nginx-ha reload`");
            }
            (false, true) if self.create_watcher() => {
                info!("watch = true: nginx config changes are reloaded again");
                self.create_binary_watcher();
                self.refresh_watch();
            }
            _ => {}
        }
    }

    fn ticket(&mut self, reply: oneshot::Sender<Result<(), CommandError>>) -> u64 {
        self.next_ticket += 1;
        self.tickets.insert(self.next_ticket, reply);
        self.next_ticket
    }

    async fn begin_stop(&mut self) {
        if !self.policy.shutting_down() {
            info!("stopping nginx");
            self.feed(Event::Shutdown).await;
        }
    }

    /// Hands an event to the policy and carries out what it decides.
    async fn feed(&mut self, event: Event) {
        let mut queue = vec![event];
        while let Some(event) = queue.pop() {
            let actions = self.policy.handle(Instant::now().into_std(), event);
            for action in actions {
                if let Some(follow_up) = self.act(action).await {
                    queue.push(follow_up);
                }
            }
        }
        self.schedule_probe();
    }

    async fn act(&mut self, action: Action) -> Option<Event> {
        match action {
            Action::TestConfig => {
                let (binary, config, tx) =
                    (self.config.binary.clone(), self.config.config.clone(), self.internal_tx.clone());
                self.tasks.spawn(async move {
                    let result = conf::test(&binary, &config).await.map_err(|e| e.to_string());
                    let _ = tx.send(Internal::Tested(result));
                });
                None
            }
            Action::Spawn => {
                self.wait_for_dead_generation().await;
                Some(match self.spawn_master() {
                    Ok(generation) => Event::Spawned { generation },
                    Err(e) => {
                        error!(binary = %self.config.binary.display(), "cannot start nginx: {e}");
                        self.last_exit = Some(format!("cannot start: {e}"));
                        Event::SpawnFailed(e.to_string())
                    }
                })
            }
            Action::SignalReload => {
                self.signal_reload();
                None
            }
            Action::ReapGeneration => {
                self.kill_dead_generation();
                None
            }
            Action::Signal { generation, signal } => {
                self.signal_master(generation, signal);
                None
            }
            Action::Health(health) => {
                match health {
                    Health::Healthy => info!("nginx is healthy"),
                    Health::Restarting { restart_in } => {
                        warn!("nginx crashed while serving; restarting it in place in {} ms", restart_in.as_millis())
                    }
                    Health::Unhealthy if self.policy.shutting_down() => {
                        info!("nginx is no longer serving: it is being stopped")
                    }
                    Health::Unhealthy => warn!("nginx is unhealthy"),
                }
                self.health_tx.send_replace(health);
                None
            }
            Action::TestUpgrade => {
                self.binary_identity = BinaryIdentity::of(&self.config.binary);
                let (binary, config, tx) =
                    (self.config.binary.clone(), self.config.config.clone(), self.internal_tx.clone());
                self.tasks.spawn(async move {
                    let result = conf::test(&binary, &config).await.map_err(|e| e.to_string());
                    let _ = tx.send(Internal::UpgradeTested(result));
                });
                None
            }
            Action::SpawnUpgrade => match self.spawn_upgrade() {
                Ok(generation) => Some(Event::UpgradeSpawned { generation }),
                Err(e) => {
                    error!(binary = %self.config.binary.display(), "cannot start the new nginx: {e}");
                    Some(Event::UpgradeSpawnFailed(e.to_string()))
                }
            },
            Action::RetireOldMaster => {
                self.retire_old_master();
                None
            }
            Action::AbortUpgrade => {
                self.abort_upgrade();
                None
            }
            Action::UpgradeFinished { tickets, result } => {
                match &result {
                    Ok(()) => info!("nginx upgrade done: the new master serves, the old one is gone"),
                    Err(e) => warn!("nginx upgrade not done: {e}"),
                }
                for ticket in tickets {
                    if let Some(reply) = self.tickets.remove(&ticket) {
                        let _ = reply.send(result.clone());
                    }
                }
                None
            }
            Action::ReloadFinished { tickets, result } => {
                match &result {
                    Ok(()) => info!("reload applied"),
                    Err(e) => warn!("reload rejected: {e}"),
                }
                for ticket in tickets {
                    if let Some(reply) = self.tickets.remove(&ticket) {
                        let _ = reply.send(result.clone());
                    }
                }
                None
            }
        }
    }

    fn spawn_master(&mut self) -> std::io::Result<u64> {
        let master = self.start_master(Vec::new())?;
        let generation = master.generation;
        self.master = Some(master);
        Ok(generation)
    }

    /// The live upgrade's new master. nginx's own way (USR2: the old master execs the new
    /// binary, which inherits the listening sockets through `NGINX="fd;fd;"`) is ignored by
    /// an nginx running in the foreground under a supervisor (its parent never changes; nginx
    /// 1.22 logs "the changing binary signal is ignored"). So we do what that exec does: take
    /// the old master's listening sockets (pidfd_getfd) and start the new binary as our own
    /// child with them and `NGINX` set. It binds nothing (the sockets are shared: no
    /// EADDRINUSE, no connection refused), and it is a master like any we spawn: our child,
    /// with its pidfd, exit status, stderr, and the same adoption after an nginx-ha restart.
    fn spawn_upgrade(&mut self) -> std::io::Result<u64> {
        let Some(old) = &self.master else { return Err(std::io::Error::other("no running master")) };
        let sockets = process::listening_sockets(&old.pidfd)?;
        if sockets.is_empty() {
            return Err(std::io::Error::other("the running master has no listening sockets to hand over"));
        }
        let old_pid = old.pidfd.pid();
        let master = self.start_master(sockets)?;
        info!(old = old_pid, new = master.pidfd.pid(), "started the new nginx beside the old one on its sockets");
        let generation = master.generation;
        self.new_master = Some(master);
        Ok(generation)
    }

    /// Spawns a master (with `inherited` listening sockets for an upgrade) and starts watching it.
    fn start_master(&mut self, inherited: Vec<OwnedFd>) -> std::io::Result<Master> {
        let mut command = ProcessCommand::new(&self.config.binary);
        command
            .arg("-c")
            .arg(&self.config.config)
            .args(["-g", FOREGROUND])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own process group: a Ctrl-C on our terminal must not reach nginx directly;
            // shutdown order (VIPs first, then nginx) is ours to decide.
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env_remove("NGINX")
            .process_group(0);
        if !inherited.is_empty() {
            let fds: Vec<i32> = inherited.iter().map(AsRawFd::as_raw_fd).collect();
            command.env("NGINX", fds.iter().map(|fd| format!("{fd};")).collect::<String>());
            // SAFETY: fcntl is async-signal-safe; the fds stay open in the parent until after
            // the spawn (`inherited` is dropped at the end of this function).
            unsafe {
                command.pre_exec(move || {
                    for &fd in &fds {
                        if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Ok(())
                });
            }
        }
        self.config_read_at = Some(std::time::SystemTime::now());
        let mut child = process::spawn_owned(|| command.spawn(), |child: &Child| Some(child.id()))?;
        drop(inherited);
        let pid = child.id() as i32;
        let pidfd = Arc::new(Pidfd::open(pid)?);
        self.generation += 1;
        let stderr_tail = Arc::new(Mutex::new(Vec::new()));
        if let Some(stderr) = child.stderr.take() {
            forward_stderr(&mut self.tasks, stderr, Arc::clone(&stderr_tail));
        }
        info!(pid, generation = self.generation, "nginx started");
        self.watch_master(&pidfd);
        self.poll_workers(self.generation, pid, HashSet::new(), WorkersFound::Ready);
        Ok(Master {
            generation: self.generation,
            pidfd,
            child: Some(child),
            workers: HashMap::new(),
            draining: HashSet::new(),
            stderr_tail,
        })
    }

    /// The new master serves: it is the master from now on; the old one leaves (the policy
    /// sends it WINCH and QUIT, TERM and KILL after `stop_timeout_ms`).
    fn retire_old_master(&mut self) {
        let Some(new) = self.new_master.take() else { return };
        let Some(old) = self.master.replace(new) else { return };
        info!(pid = old.pidfd.pid(), "the new nginx serves; the old master finishes its requests and quits");
        self.retiring = Some(old.generation);
        self.adopted = false;
        self.leaving.push(old);
        // The new binary is asked what it reads.
        self.refresh_watch();
    }

    /// Rollback: the new master goes; the old one never stopped serving.
    fn abort_upgrade(&mut self) {
        let Some(new) = self.new_master.take() else { return };
        warn!(pid = new.pidfd.pid(), "stopping the new nginx master: the upgrade is rolled back");
        self.leaving.push(new);
    }

    /// A master of an upgrade exited: collect its status, kill what it left behind.
    fn collect(&mut self, mut master: Master) -> String {
        let pid = master.pidfd.pid();
        let mut reason = match master.child.as_mut().map(Child::try_wait) {
            Some(Ok(Some(status))) => describe_exit(status),
            Some(_) => "exited".to_string(),
            None => "exited".to_string(),
        };
        process::release(pid);
        let tail = master.stderr_tail.lock().map(|t| t.join("; ")).unwrap_or_default();
        if !tail.is_empty() {
            reason = format!("{reason}: {tail}");
        }
        for worker in master.workers.values().filter(|w| !w.has_exited()) {
            warn!(pid = worker.pid(), "killing a worker left by an exited nginx master");
            let _ = worker.signal(Signal::SIGKILL);
        }
        process::reap_orphans();
        reason
    }

    async fn upgrade_master_exited(&mut self, generation: u64) -> bool {
        if let Some(new) = self.new_master.take_if(|m| m.generation == generation) {
            let pid = new.pidfd.pid();
            let reason = self.collect(new);
            error!(pid, "the new nginx master exited before serving: {reason}");
            self.rewrite_pid_file();
            self.feed(Event::NewMasterExited(reason)).await;
            return true;
        }
        let Some(index) = self.leaving.iter().position(|m| m.generation == generation) else { return false };
        let master = self.leaving.remove(index);
        let pid = master.pidfd.pid();
        let reason = self.collect(master);
        info!(pid, "nginx master quit: {reason}");
        self.rewrite_pid_file();
        self.retiring.take_if(|g| *g == generation);
        self.feed(Event::StoppedMasterExited { generation }).await;
        true
    }

    /// Every master writes the pid file as it starts and deletes it as it exits: after an
    /// upgrade (or a rollback) it must name the master that is left, which adoption after an
    /// nginx-ha restart reads.
    fn rewrite_pid_file(&self) {
        if let (Some(path), Some(master)) = (&self.pid_file, &self.master)
            && let Err(e) = std::fs::write(path, format!("{}\n", master.pidfd.pid()))
        {
            warn!(pid_file = %path.display(), "cannot write the running master's pid: {e}");
        }
    }

    fn watch_master(&mut self, pidfd: &Arc<Pidfd>) {
        let (pidfd, tx, generation) = (Arc::clone(pidfd), self.internal_tx.clone(), self.generation);
        self.tasks.spawn(async move {
            pidfd.exited().await;
            let _ = tx.send(Internal::MasterExited { generation });
        });
    }

    /// Looks for workers of `master` not in `known` and reports them all once the set has
    /// settled; when to look and when it is complete is the pure [`WorkerScan`]'s to say.
    /// `generation` is the master's own: during an upgrade the newest generation is another
    /// master's, and a rescan of the old one must not pass for the new one serving.
    fn poll_workers(&mut self, generation: u64, master: i32, known: HashSet<i32>, why: WorkersFound) {
        let tx = self.internal_tx.clone();
        let now = Instant::now().into_std();
        let mut scan = WorkerScan::new(why, now, known, self.expected_workers, self.config.live.policy.reload_timeout);
        self.tasks.spawn(async move {
            loop {
                let pids = process::workers_of(master);
                let alive = std::path::Path::new(&format!("/proc/{master}")).exists();
                match scan.scanned(Instant::now().into_std(), pids, alive) {
                    Step::ScanAt(at) => tokio::time::sleep_until(Instant::from_std(at)).await,
                    Step::Found(pids) => {
                        let _ = tx.send(Internal::Workers { generation, pids, why: scan.why() });
                        return;
                    }
                    Step::GiveUp => return,
                }
            }
        });
    }

    fn signal_reload(&mut self) {
        // What runs now, not only what we track: a worker we have not seen yet must not
        // pass for a new one and confirm the reload before nginx has even read the config.
        let Some(master_pid) = self.master.as_ref().map(|m| m.pidfd.pid()) else { return };
        self.track_workers(&process::workers_of(master_pid));
        let Some(master) = &mut self.master else { return };
        let old: HashSet<i32> = master.workers.keys().copied().collect();
        if let Err(e) = master.pidfd.signal(Signal::SIGHUP) {
            warn!("cannot send HUP to nginx: {e}");
            return;
        }
        info!(pid = master.pidfd.pid(), "config valid; sent HUP to nginx");
        self.config_read_at = Some(std::time::SystemTime::now());
        master.draining.extend(old.iter().copied());
        let (generation, pid) = (master.generation, master.pidfd.pid());
        self.poll_workers(generation, pid, old, WorkersFound::ReloadConfirmed);
    }

    /// Carries out the policy's signal to the master of `generation`, wherever it is; one that
    /// already exited (its exit not yet handled) is let be.
    fn signal_master(&self, generation: u64, signal: MasterSignal) {
        let mut masters = self.master.iter().chain(&self.new_master).chain(&self.leaving);
        let Some(master) = masters.find(|m| m.generation == generation) else { return };
        let pid = master.pidfd.pid();
        let signal = match signal {
            MasterSignal::StopWorkers => Signal::SIGWINCH,
            MasterSignal::Quit => Signal::SIGQUIT,
            MasterSignal::Term { ignored_quit_for } => {
                let ms = ignored_quit_for.as_millis();
                warn!(pid, "nginx did not stop gracefully within {ms} ms; sending TERM");
                Signal::SIGTERM
            }
            MasterSignal::Kill => {
                warn!(pid, "nginx ignored TERM; sending KILL");
                Signal::SIGKILL
            }
        };
        if let Err(e) = master.pidfd.signal(signal)
            && !master.pidfd.has_exited()
        {
            warn!(pid, "cannot send {} to nginx: {e}", signal.as_str());
        }
    }

    /// The master is gone: SIGKILL what is left of its generation (orphaned workers still hold
    /// the listen sockets and would make the next master fail to bind).
    fn kill_dead_generation(&mut self) {
        for pidfd in &self.dead {
            if !pidfd.has_exited() {
                warn!(pid = pidfd.pid(), "killing an orphaned nginx process of the dead generation");
                let _ = pidfd.signal(Signal::SIGKILL);
            }
        }
        // Workers we had not seen yet were reparented to us (child subreaper).
        let known: HashSet<i32> = self.dead.iter().map(|pidfd| pidfd.pid()).collect();
        for pid in process::orphans().into_iter().filter(|pid| !known.contains(pid)) {
            if process::title(pid).is_some_and(|t| t.starts_with("nginx"))
                && let Ok(pidfd) = Pidfd::open(pid)
            {
                warn!(pid, "killing an orphaned nginx process");
                let _ = pidfd.signal(Signal::SIGKILL);
                self.dead.push(Arc::new(pidfd));
            }
        }
        process::reap_orphans();
    }

    async fn wait_for_dead_generation(&mut self) {
        let dead = std::mem::take(&mut self.dead);
        let all_gone = futures::future::join_all(dead.iter().map(|pidfd| pidfd.exited()));
        if tokio::time::timeout(REAP_TIMEOUT, all_gone).await.is_err() {
            warn!("processes of the dead nginx generation are still alive; starting anyway");
        }
        process::reap_orphans();
    }

    async fn internal(&mut self, internal: Internal) {
        match internal {
            Internal::MasterExited { generation } => {
                if !self.upgrade_master_exited(generation).await {
                    self.master_exited(generation).await;
                }
            }
            Internal::WorkerExited { generation, pid } => {
                for other in self.new_master.iter_mut().chain(self.leaving.iter_mut()) {
                    if other.generation == generation {
                        other.workers.remove(&pid);
                        return;
                    }
                }
                let Some(master) = self.master.as_mut().filter(|m| m.generation == generation) else { return };
                master.workers.remove(&pid);
                if master.draining.remove(&pid) {
                    debug!(pid, "old worker finished draining");
                    if master.draining.is_empty() {
                        info!("the old nginx workers have drained; the reload is complete");
                    }
                } else if !master.pidfd.has_exited() && !self.policy.shutting_down() {
                    warn!(pid, "nginx worker exited; the master respawns it");
                    let (generation, master_pid) = (master.generation, master.pidfd.pid());
                    let known = master.workers.keys().copied().collect();
                    self.poll_workers(generation, master_pid, known, WorkersFound::Rescan);
                    self.feed(Event::WorkerExited).await;
                }
            }
            Internal::Workers { generation, pids, why } => {
                if let Some(new) = self.new_master.as_mut().filter(|m| m.generation == generation) {
                    track(&mut self.tasks, new, &pids, &self.internal_tx);
                    info!(pid = new.pidfd.pid(), workers = ?pids, "the new nginx master serves");
                    self.feed(Event::NewMasterReady).await;
                    return;
                }
                if self.master.as_ref().is_none_or(|m| m.generation != generation) {
                    return;
                }
                self.track_workers(&pids);
                match why {
                    WorkersFound::Ready => {
                        info!(workers = ?pids, "nginx is serving");
                        self.feed(Event::Ready).await;
                        self.refresh_watch();
                    }
                    WorkersFound::ReloadConfirmed => {
                        info!(workers = ?pids, "reload took: new workers started");
                        self.feed(Event::ReloadConfirmed).await;
                        self.refresh_watch();
                    }
                    WorkersFound::Rescan => debug!(workers = ?pids, "workers respawned"),
                }
            }
            Internal::Tested(result) => {
                if let Err(e) = &result {
                    let consequence = if self.master.is_some() {
                        "nginx keeps running its current config"
                    } else {
                        "nginx is not started"
                    };
                    error!("nginx config test failed; {consequence}:\n{e}");
                    // The fix may come in a file the config now includes.
                    self.refresh_watch();
                }
                self.feed(Event::ConfigTested(result)).await;
            }
            Internal::Probed { generation, result } => {
                self.probe_in_flight = false;
                if self.master.as_ref().is_none_or(|m| m.generation != generation) {
                    // About a master that is gone: the new one gets its first probe now.
                    self.schedule_probe();
                    return;
                }
                if let Err(e) = &result {
                    if self.last_probe_error.as_ref() != Some(e) {
                        warn!("health probe failed: {e}");
                    }
                    self.last_probe_error = Some(e.clone());
                } else {
                    self.last_probe_error = None;
                }
                self.timers.set(Timer::Probe, Instant::now() + self.config.live.probe_interval);
                self.feed(Event::Probe { ok: result.is_ok() }).await;
            }
            Internal::UpgradeTested(result) => {
                if let Err(e) = &result {
                    error!("`nginx -t` with the new nginx binary failed; the running nginx stays:\n{e}");
                }
                self.feed(Event::UpgradeTested(result)).await;
            }
            Internal::BinaryChanged if self.binary_watcher.is_none() => {}
            Internal::BinaryChanged => {
                self.timers.set(Timer::BinaryDebounce, Instant::now() + self.config.live.debounce);
            }
            // Queued before watch was turned off.
            Internal::FileChanged(_) if self.watcher.is_none() => {}
            Internal::FileChanged(path) => {
                debug!(path = %path.display(), "nginx config file changed");
                self.timers.set(Timer::ConfigDebounce, Instant::now() + self.config.live.debounce);
            }
            Internal::Dumped(dump) => {
                self.apply_watch_set(&dump);
                // The watch set is recomputed after nginx read its config; a file created or
                // changed in between (say in a newly included directory) raised no event.
                // A change whose event did arrive is already waiting out its debounce: one
                // change, one reload.
                if self.watcher.is_some()
                    && !self.timers.is_set(Timer::ConfigDebounce)
                    && self.config_read_at.is_some_and(|read| changed_since(&dump, read))
                {
                    info!("a file of the nginx config changed while its watch was being updated; reloading");
                    self.feed(Event::ConfigChanged).await;
                }
            }
        }
    }

    fn track_workers(&mut self, pids: &[i32]) {
        if let Some(master) = &mut self.master {
            track(&mut self.tasks, master, pids, &self.internal_tx);
        }
    }

    async fn master_exited(&mut self, generation: u64) {
        let Some(mut master) = self.master.take_if(|m| m.generation == generation) else { return };
        let pid = master.pidfd.pid();
        let mut reason = match master.child.as_mut().map(Child::try_wait) {
            Some(Ok(Some(status))) => describe_exit(status),
            Some(_) => "exited".to_string(),
            None => "exited (adopted master; its exit status is not ours to read)".to_string(),
        };
        process::release(pid);
        let tail = master.stderr_tail.lock().map(|t| t.join("; ")).unwrap_or_default();
        if !tail.is_empty() && !self.policy.shutting_down() {
            reason = format!("{reason}: {tail}");
        }
        if self.policy.shutting_down() {
            info!(pid, "nginx master exited: {reason}");
        } else {
            error!(pid, "nginx master exited: {reason}");
        }
        self.last_exit = Some(reason.clone());
        self.dead = master.workers.into_values().collect();
        self.adopted = false;
        self.feed(Event::MasterExited(reason)).await;
    }

    fn schedule_probe(&mut self) {
        if self.config.live.prober.is_some() && self.policy.wants_probes() {
            // One probe at a time: an answer in flight sets the next one.
            if !self.probe_in_flight && !self.timers.is_set(Timer::Probe) {
                self.timers.set(Timer::Probe, Instant::now());
            }
        } else {
            self.timers.stop(Timer::Probe);
        }
    }

    fn start_probe(&mut self) {
        let (Some(prober), Some(master)) = (self.config.live.prober.clone(), &self.master) else { return };
        self.probe_in_flight = true;
        let (tx, generation) = (self.internal_tx.clone(), master.generation);
        self.tasks.spawn(async move {
            let result = prober.probe().await;
            let _ = tx.send(Internal::Probed { generation, result });
        });
    }

    /// Reads what the config says (also when not watching: the worker count) and watches it.
    async fn start_watching(&mut self) -> ConfigDump {
        if self.config.live.watch {
            self.create_watcher();
        }
        let dump = watch_set(&self.config.binary, &self.config.config).await;
        self.apply_watch_set(&dump);
        dump
    }

    /// An inotify watcher feeding `Internal::FileChanged`, watching nothing yet. Dropping it
    /// (watch = false) ends the forwarding task.
    fn create_watcher(&mut self) -> bool {
        let (tx, mut rx) = mpsc::unbounded_channel();
        match ConfigWatcher::new(tx) {
            Ok(watcher) => self.watcher = Some(watcher),
            Err(e) => {
                warn!("{e}; config changes will not trigger a reload (use `nginx-ha reload`)");
                return false;
            }
        }
        let internal = self.internal_tx.clone();
        self.tasks.spawn(async move {
            while let Some(path) = rx.recv().await {
                if internal.send(Internal::FileChanged(path)).is_err() {
                    break;
                }
            }
        });
        true
    }

    fn apply_watch_set(&mut self, dump: &ConfigDump) {
        self.expected_workers = dump.worker_processes;
        if let Some(watcher) = &mut self.watcher
            && let Err(e) = watcher.set(dump)
        {
            warn!("{e}; changes there will not trigger a reload");
        }
    }

    /// Included files (and the worker count) may have changed with the config: ask nginx
    /// again what it reads.
    fn refresh_watch(&mut self) {
        let (binary, config, tx) = (self.config.binary.clone(), self.config.config.clone(), self.internal_tx.clone());
        self.tasks.spawn(async move {
            let _ = tx.send(Internal::Dumped(watch_set(&binary, &config).await));
        });
    }

    /// An inotify watch on the nginx binary feeding `Internal::BinaryChanged`.
    fn create_binary_watcher(&mut self) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        match BinaryWatcher::new(&self.config.binary, tx) {
            Ok(watcher) => self.binary_watcher = Some(watcher),
            Err(e) => {
                warn!("{e}; a replaced nginx binary will not be picked up (use `nginx-ha upgrade-nginx`)");
                return;
            }
        }
        let internal = self.internal_tx.clone();
        self.tasks.spawn(async move {
            while rx.recv().await.is_some() {
                if internal.send(Internal::BinaryChanged).is_err() {
                    break;
                }
            }
        });
    }

    /// A master from before (nginx-ha restarted, nginx did not) running our config.
    async fn find_adoptable(&self) -> Option<Pidfd> {
        let pid_file = self.pid_file.clone()?;
        let pid: i32 = std::fs::read_to_string(&pid_file).ok()?.trim().parse().ok()?;
        let title = process::title(pid)?;
        if !title.starts_with("nginx: master process") {
            return None;
        }
        let config_of_master = match title.split_whitespace().skip_while(|word| *word != "-c").nth(1) {
            Some(path) => PathBuf::from(path),
            None => conf::compiled_default(&self.config.binary, "--conf-path=").await?,
        };
        let same = |a: &std::path::Path, b: &std::path::Path| {
            a == b || std::fs::canonicalize(a).ok().is_some_and(|a| std::fs::canonicalize(b).ok() == Some(a))
        };
        if !same(&config_of_master, &self.config.config) {
            warn!(
                pid,
                pid_file = %pid_file.display(),
                "the pid file names a running nginx master with another config ({}); leaving it alone, so ours may fail to bind",
                config_of_master.display()
            );
            return None;
        }
        Pidfd::open(pid).ok()
    }

    async fn adopt(&mut self, pidfd: Pidfd) {
        let pid = pidfd.pid();
        let pidfd = Arc::new(pidfd);
        self.generation += 1;
        info!(pid, "adopted the running nginx master instead of starting another");
        self.watch_master(&pidfd);
        self.master = Some(Master {
            generation: self.generation,
            pidfd,
            child: None,
            workers: HashMap::new(),
            draining: HashSet::new(),
            stderr_tail: Arc::new(Mutex::new(Vec::new())),
        });
        self.adopted = true;
        let workers = process::workers_of(pid);
        self.track_workers(&workers);
        // Through the policy like any event: whatever it decides is carried out.
        self.feed(Event::Adopted { generation: self.generation }).await;
    }

    fn publish(&self) {
        let policy = self.policy.status();
        let (master_pid, worker_pids, mut draining_pids) = match &self.master {
            Some(master) => {
                let (draining, mut workers): (Vec<i32>, Vec<i32>) =
                    master.workers.keys().copied().partition(|pid| master.draining.contains(pid));
                workers.sort_unstable();
                (Some(master.pidfd.pid()), workers, draining)
            }
            None => (None, Vec::new(), Vec::new()),
        };
        let old = self.leaving.iter().find(|m| Some(m.generation) == self.retiring);
        draining_pids.extend(old.into_iter().flat_map(|m| m.workers.keys().copied()));
        draining_pids.sort_unstable();
        let status = NginxStatus {
            state: policy.state,
            healthy: policy.healthy,
            master_pid,
            worker_pids,
            draining_pids,
            restarts: policy.restarts,
            config_error: policy.config_error,
            worker_exits: policy.worker_exits,
            adopted: self.adopted,
            last_exit: self.last_exit.clone(),
            last_probe_error: self.last_probe_error.as_ref().map(ToString::to_string),
            new_master_pid: self.new_master.as_ref().map(|m| m.pidfd.pid()),
            old_master_pid: old.map(|m| m.pidfd.pid()),
        };
        self.status_tx.send_if_modified(|current| {
            let changed = *current != status;
            *current = status;
            changed
        });
    }
}

/// Watches the workers of `master` not yet known by pidfd.
fn track(tasks: &mut JoinSet<()>, master: &mut Master, pids: &[i32], internal: &mpsc::UnboundedSender<Internal>) {
    for &pid in pids {
        if master.workers.contains_key(&pid) {
            continue;
        }
        let Ok(pidfd) = Pidfd::open(pid) else { continue };
        let pidfd = Arc::new(pidfd);
        master.workers.insert(pid, Arc::clone(&pidfd));
        let (tx, generation) = (internal.clone(), master.generation);
        tasks.spawn(async move {
            pidfd.exited().await;
            let _ = tx.send(Internal::WorkerExited { generation, pid });
        });
    }
}

/// Whether a file of `dump` was modified after `since`. A modification time in the future
/// (a file unpacked from a machine whose clock is ahead) does not count: it would stay "newer"
/// than every reload and reload nginx over and over.
fn changed_since(dump: &ConfigDump, since: std::time::SystemTime) -> bool {
    let now = std::time::SystemTime::now();
    dump.files.iter().any(|file| {
        std::fs::metadata(file).and_then(|m| m.modified()).is_ok_and(|modified| modified > since && modified <= now)
    })
}

/// The files to watch: what nginx says it reads, or what a scan finds if nginx rejects it.
async fn watch_set(binary: &std::path::Path, config: &std::path::Path) -> ConfigDump {
    match conf::dump(binary, config).await {
        Ok(dump) => dump,
        Err(_) => conf::scan_includes(config),
    }
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => {
            let name = Signal::try_from(signal).map(|s| s.as_str()).unwrap_or("?");
            format!("killed by signal {signal} ({name})")
        }
        _ => "exited".into(),
    }
}

/// nginx reports startup problems (bind failures, bad certificates) on stderr: log them, and
/// keep the last lines to explain an exit. Ends when nginx closes its stderr.
fn forward_stderr(tasks: &mut JoinSet<()>, stderr: std::process::ChildStderr, tail: Arc<Mutex<Vec<String>>>) {
    use tokio::io::AsyncBufReadExt;
    let stderr = match tokio::process::ChildStderr::from_std(stderr) {
        Ok(stderr) => stderr,
        Err(e) => {
            warn!("cannot read nginx's stderr: {e}; its messages are not logged");
            return;
        }
    };
    tasks.spawn(async move {
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            warn!(target: "nginx", "{line}");
            if let Ok(mut tail) = tail.lock() {
                if tail.len() == STDERR_TAIL {
                    tail.remove(0);
                }
                tail.push(line);
            }
        }
    });
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn recv_signal(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    #[test]
    fn changed_since_counts_past_changes_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("site.conf");
        std::fs::write(&file, "x").unwrap();
        let dump = ConfigDump { files: vec![file.clone()], ..ConfigDump::default() };
        let hour = Duration::from_secs(3600);
        let set_mtime =
            |at: SystemTime| std::fs::File::options().write(true).open(&file).unwrap().set_modified(at).unwrap();

        set_mtime(SystemTime::now() - hour);
        assert!(changed_since(&dump, SystemTime::now() - 2 * hour), "changed after `since`");
        assert!(!changed_since(&dump, SystemTime::now() - hour / 2), "not changed since");
        set_mtime(SystemTime::now() + hour);
        assert!(!changed_since(&dump, SystemTime::now()), "a future mtime would trigger reload after reload");
    }
}
