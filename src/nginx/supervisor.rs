//! The shell around `policy`: spawns and adopts nginx, watches master and workers by pidfd,
//! runs probes and config tests, watches config files, and carries out the policy's actions.

use std::collections::{HashMap, HashSet};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command as ProcessCommand, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::conf::{self, ConfigDump, FOREGROUND};
use super::policy::{Action, Event, Health, NginxState, Policy, PolicyConfig};
use super::probe::Prober;
use super::process::{self, Pidfd};
use super::watch::ConfigWatcher;
use crate::config::Config;

/// How long workers of a dead generation may take to die after SIGKILL.
const REAP_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a fresh master may take to start its workers before we keep looking less often.
const READY_POLL: Duration = Duration::from_millis(5);
const RESCAN_POLL: Duration = Duration::from_millis(20);
const RESCAN_FOR: Duration = Duration::from_secs(3);
const SETTLE_POLL: Duration = Duration::from_millis(5);
/// How long to wait for the number of workers the config asks for before settling for a
/// stable scan (the count may be wrong: `auto`, or a reload that changed it).
const SETTLE_FOR: Duration = Duration::from_secs(1);
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
    pub stop_timeout: Duration,
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
                stop_timeout: Duration::from_millis(config.nginx.stop_timeout_ms),
                policy: PolicyConfig {
                    fall: config.health.fall,
                    rise: config.health.rise,
                    probes: config.health.has_probes(),
                    reload_timeout: Duration::from_millis(config.nginx.reload_timeout_ms),
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
}

pub enum Command {
    /// Test the nginx config and reload; answered when the reload completed or was rejected.
    Reload {
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// nginx-ha's own config failed to load on `nginx-ha reload`.
    RejectOwnConfig {
        error: String,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Apply changed settings (from `nginx-ha reload`); sent before the `Reload` it goes with.
    Reconfigure(LiveSettings),
    Shutdown,
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
    }
}

/// What the helper tasks report back to the loop.
enum Internal {
    MasterExited { generation: u64 },
    WorkerExited { generation: u64, pid: i32 },
    Workers { generation: u64, pids: Vec<i32>, why: WorkersFound },
    Tested(Result<(), String>),
    Probed { generation: u64, result: Result<(), String> },
    FileChanged(PathBuf),
    Dumped(ConfigDump),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WorkersFound {
    Ready,
    ReloadConfirmed,
    Rescan,
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
    watcher: Option<ConfigWatcher>,
    /// `worker_processes` of the config nginx was last started or reloaded with, from
    /// `nginx -T`: how many workers make a complete generation.
    expected_workers: Option<usize>,
    /// When nginx last read its config (spawn or HUP): a file of the new watch set changed
    /// after that was not seen by the watch, which did not exist yet.
    config_read_at: Option<std::time::SystemTime>,
    debounce_until: Option<Instant>,
    next_probe: Option<Instant>,
    probe_in_flight: bool,
    tickets: HashMap<u64, oneshot::Sender<Result<(), String>>>,
    next_ticket: u64,
    status_tx: watch::Sender<NginxStatus>,
    health_tx: watch::Sender<Health>,
    adopted: bool,
    last_exit: Option<String>,
    last_probe_error: Option<String>,
    stopping: bool,
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
            watcher: None,
            expected_workers: None,
            config_read_at: None,
            debounce_until: None,
            next_probe: None,
            probe_in_flight: false,
            tickets: HashMap::new(),
            next_ticket: 0,
            status_tx,
            health_tx,
            adopted: false,
            last_exit: None,
            last_probe_error: None,
            stopping: false,
        }
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut sigchld = signal(SignalKind::child()).ok();
        // One `nginx -T` at startup serves the watch, the worker count and adoption.
        let dump = self.start_watching().await;
        if let Some(master) = self.find_adoptable(&dump).await {
            let pid = master.pid();
            self.adopt(master);
            if process::start_time(pid).is_some_and(|started| changed_since(&dump, started)) {
                info!("the nginx config changed while nginx-ha was away; testing and reloading it");
                self.feed(Event::ConfigChanged).await;
            }
        } else {
            self.feed(Event::Launch).await;
        }
        loop {
            self.publish();
            if self.stopping && self.master.is_none() {
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
        [policy, self.debounce_until, self.next_probe.filter(|_| !self.probe_in_flight)].into_iter().flatten().min()
    }

    async fn timers(&mut self) {
        let now = Instant::now();
        if self.debounce_until.is_some_and(|at| now >= at) {
            self.debounce_until = None;
            info!("nginx config changed; testing it");
            self.feed(Event::ConfigChanged).await;
        }
        if self.next_probe.is_some_and(|at| now >= at) && !self.probe_in_flight {
            self.start_probe();
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
            Command::Shutdown => self.begin_stop().await,
            Command::Detach => unreachable!("handled by the loop"),
        }
    }

    async fn reconfigure(&mut self, live: LiveSettings) {
        let (watched, watch, policy) = (self.config.live.watch, live.watch, live.policy.clone());
        // A debounce or stop already under way keeps the time it was given.
        self.config.live = live;
        // The next probe (if any) goes out at once, with the new prober and then the new interval.
        self.next_probe = None;
        self.feed(Event::Reconfigured(policy)).await;
        match (watched, watch) {
            (true, false) => {
                self.watcher = None;
                self.debounce_until = None;
                info!("watch = false: nginx config changes are no longer reloaded until `nginx-ha reload`");
            }
            (false, true) if self.create_watcher() => {
                info!("watch = true: nginx config changes are reloaded again");
                self.refresh_watch();
            }
            _ => {}
        }
    }

    fn ticket(&mut self, reply: oneshot::Sender<Result<(), String>>) -> u64 {
        self.next_ticket += 1;
        self.tickets.insert(self.next_ticket, reply);
        self.next_ticket
    }

    async fn begin_stop(&mut self) {
        if !self.stopping {
            self.stopping = true;
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
                tokio::spawn(async move {
                    let result = conf::test(&binary, &config).await.map_err(|e| e.to_string());
                    let _ = tx.send(Internal::Tested(result));
                });
                None
            }
            Action::Spawn => {
                self.wait_for_dead_generation().await;
                Some(match self.spawn_master() {
                    Ok(()) => Event::Spawned,
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
            Action::Stop => {
                self.stop_master();
                None
            }
            Action::Health(healthy) => {
                if healthy {
                    info!("nginx is healthy");
                } else if self.stopping {
                    info!("nginx is no longer serving: it is being stopped");
                } else {
                    warn!("nginx is unhealthy");
                }
                self.health_tx.send_replace(Health::from_serving(healthy));
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

    fn spawn_master(&mut self) -> std::io::Result<()> {
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
            .process_group(0);
        self.config_read_at = Some(std::time::SystemTime::now());
        let mut child = process::spawn_owned(|| command.spawn(), |child: &Child| Some(child.id()))?;
        let pid = child.id() as i32;
        let pidfd = Arc::new(Pidfd::open(pid)?);
        self.generation += 1;
        let stderr_tail = Arc::new(Mutex::new(Vec::new()));
        if let Some(stderr) = child.stderr.take() {
            forward_stderr(stderr, Arc::clone(&stderr_tail));
        }
        info!(pid, generation = self.generation, "nginx started");
        self.watch_master(&pidfd);
        self.poll_workers(pid, HashSet::new(), WorkersFound::Ready, READY_POLL, Duration::from_secs(3600));
        self.master = Some(Master {
            generation: self.generation,
            pidfd,
            child: Some(child),
            workers: HashMap::new(),
            draining: HashSet::new(),
            stderr_tail,
        });
        Ok(())
    }

    fn watch_master(&self, pidfd: &Arc<Pidfd>) {
        let (pidfd, tx, generation) = (Arc::clone(pidfd), self.internal_tx.clone(), self.generation);
        tokio::spawn(async move {
            pidfd.exited().await;
            let _ = tx.send(Internal::MasterExited { generation });
        });
    }

    /// Looks for workers of `master` not in `known`, every `every`, for at most `for_at_most`,
    /// then reports them all once the set has settled (nginx forks its workers one by one).
    /// Bounded confirmation after a start, reload or worker death; not a liveness poll.
    fn poll_workers(
        &self,
        master: i32,
        known: HashSet<i32>,
        why: WorkersFound,
        every: Duration,
        for_at_most: Duration,
    ) {
        let (tx, generation, expected) = (self.internal_tx.clone(), self.generation, self.expected_workers);
        tokio::spawn(async move {
            let give_up = Instant::now() + for_at_most;
            let mut every = every;
            while Instant::now() < give_up {
                let pids = process::workers_of(master);
                if pids.iter().any(|pid| !known.contains(pid)) {
                    // After a reload only the new generation counts: the old one still runs.
                    let old = if why == WorkersFound::ReloadConfirmed { known.clone() } else { HashSet::new() };
                    let pids = settled_workers(master, pids, expected, &old).await;
                    let _ = tx.send(Internal::Workers { generation, pids, why });
                    return;
                }
                if !std::path::Path::new(&format!("/proc/{master}")).exists() {
                    return;
                }
                tokio::time::sleep(every).await;
                // A slow start (huge config) need not be watched at the fast rate for long.
                every = (every * 2).min(Duration::from_millis(200));
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
        let pid = master.pidfd.pid();
        self.poll_workers(
            pid,
            old,
            WorkersFound::ReloadConfirmed,
            Duration::from_millis(5),
            self.config.live.policy.reload_timeout,
        );
    }

    fn stop_master(&mut self) {
        let Some(master) = &self.master else { return };
        let pidfd = Arc::clone(&master.pidfd);
        let timeout = self.config.live.stop_timeout;
        let _ = pidfd.signal(Signal::SIGQUIT);
        tokio::spawn(async move {
            if tokio::time::timeout(timeout, pidfd.exited()).await.is_err() {
                warn!(
                    pid = pidfd.pid(),
                    "nginx did not stop gracefully within {} ms; sending TERM",
                    timeout.as_millis()
                );
                let _ = pidfd.signal(Signal::SIGTERM);
                if tokio::time::timeout(Duration::from_secs(3), pidfd.exited()).await.is_err() {
                    warn!(pid = pidfd.pid(), "nginx ignored TERM; sending KILL");
                    let _ = pidfd.signal(Signal::SIGKILL);
                }
            }
        });
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
            Internal::MasterExited { generation } => self.master_exited(generation).await,
            Internal::WorkerExited { generation, pid } => {
                let Some(master) = self.master.as_mut().filter(|m| m.generation == generation) else { return };
                master.workers.remove(&pid);
                if master.draining.remove(&pid) {
                    debug!(pid, "old worker finished draining");
                    if master.draining.is_empty() {
                        info!("the old nginx workers have drained; the reload is complete");
                    }
                } else if !master.pidfd.has_exited() && !self.stopping {
                    warn!(pid, "nginx worker exited; the master respawns it");
                    let (master_pid, known) = (master.pidfd.pid(), master.workers.keys().copied().collect());
                    self.poll_workers(master_pid, known, WorkersFound::Rescan, RESCAN_POLL, RESCAN_FOR);
                    self.feed(Event::WorkerExited).await;
                }
            }
            Internal::Workers { generation, pids, why } => {
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
                self.next_probe = Some(Instant::now() + self.config.live.probe_interval);
                self.feed(Event::Probe { ok: result.is_ok() }).await;
            }
            // Queued before watch was turned off.
            Internal::FileChanged(_) if self.watcher.is_none() => {}
            Internal::FileChanged(path) => {
                debug!(path = %path.display(), "nginx config file changed");
                self.debounce_until = Some(Instant::now() + self.config.live.debounce);
            }
            Internal::Dumped(dump) => {
                self.apply_watch_set(&dump);
                // The watch set is recomputed after nginx read its config; a file created or
                // changed in between (say in a newly included directory) raised no event.
                // A change whose event did arrive is already waiting out its debounce: one
                // change, one reload.
                if self.watcher.is_some()
                    && self.debounce_until.is_none()
                    && self.config_read_at.is_some_and(|read| changed_since(&dump, read))
                {
                    info!("a file of the nginx config changed while its watch was being updated; reloading");
                    self.feed(Event::ConfigChanged).await;
                }
            }
        }
    }

    fn track_workers(&mut self, pids: &[i32]) {
        let Some(master) = &mut self.master else { return };
        for &pid in pids {
            if master.workers.contains_key(&pid) {
                continue;
            }
            let Ok(pidfd) = Pidfd::open(pid) else { continue };
            let pidfd = Arc::new(pidfd);
            master.workers.insert(pid, Arc::clone(&pidfd));
            let (tx, generation) = (self.internal_tx.clone(), master.generation);
            tokio::spawn(async move {
                pidfd.exited().await;
                let _ = tx.send(Internal::WorkerExited { generation, pid });
            });
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
        if !tail.is_empty() && !self.stopping {
            reason = format!("{reason}: {tail}");
        }
        if self.stopping {
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
            if self.next_probe.is_none() {
                self.next_probe = Some(Instant::now());
            }
        } else {
            self.next_probe = None;
        }
    }

    fn start_probe(&mut self) {
        let (Some(prober), Some(master)) = (self.config.live.prober.clone(), &self.master) else { return };
        self.probe_in_flight = true;
        let (tx, generation) = (self.internal_tx.clone(), master.generation);
        tokio::spawn(async move {
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
        tokio::spawn(async move {
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
    fn refresh_watch(&self) {
        let (binary, config, tx) = (self.config.binary.clone(), self.config.config.clone(), self.internal_tx.clone());
        tokio::spawn(async move {
            let _ = tx.send(Internal::Dumped(watch_set(&binary, &config).await));
        });
    }

    /// A master from before (nginx-ha restarted, nginx did not) running our config.
    async fn find_adoptable(&self, dump: &ConfigDump) -> Option<Pidfd> {
        let pid_file = conf::pid_file(&self.config.binary, dump, self.config.pid_file.as_deref()).await?;
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

    fn adopt(&mut self, pidfd: Pidfd) {
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
        let actions = self.policy.handle(Instant::now().into_std(), Event::Adopted);
        for action in actions {
            if let Action::Health(healthy) = action {
                self.health_tx.send_replace(Health::from_serving(healthy));
            }
        }
        self.schedule_probe();
    }

    fn publish(&self) {
        let policy = self.policy.status();
        let (master_pid, worker_pids, draining_pids) = match &self.master {
            Some(master) => {
                let (mut draining, mut workers): (Vec<i32>, Vec<i32>) =
                    master.workers.keys().copied().partition(|pid| master.draining.contains(pid));
                workers.sort_unstable();
                draining.sort_unstable();
                (Some(master.pidfd.pid()), workers, draining)
            }
            None => (None, Vec::new(), Vec::new()),
        };
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
            last_probe_error: self.last_probe_error.clone(),
        };
        self.status_tx.send_if_modified(|current| {
            let changed = *current != status;
            *current = status;
            changed
        });
    }
}

/// Rescans until the set of workers is complete: as many (not counting `old`) as the config
/// asks for — nginx forks them one by one, slowly on a loaded machine — or, when that number
/// is unknown or not reached within [`SETTLE_FOR`], until two scans in a row agree.
async fn settled_workers(master: i32, mut pids: Vec<i32>, expected: Option<usize>, old: &HashSet<i32>) -> Vec<i32> {
    let counted = |pids: &[i32]| pids.iter().filter(|pid| !old.contains(pid)).count();
    let give_up = Instant::now() + SETTLE_FOR;
    loop {
        if expected.is_some_and(|wanted| counted(&pids) >= wanted) {
            return pids;
        }
        tokio::time::sleep(SETTLE_POLL).await;
        let again = process::workers_of(master);
        let stable = again == pids;
        pids = again;
        if stable && (expected.is_none() || Instant::now() >= give_up) {
            return pids;
        }
        if Instant::now() >= give_up + SETTLE_FOR {
            return pids;
        }
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
/// keep the last lines to explain an exit.
fn forward_stderr(stderr: std::process::ChildStderr, tail: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
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
