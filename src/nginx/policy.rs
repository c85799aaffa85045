//! The supervisor's decisions, pure: events and time in, actions out. No processes, no clock.
//!
//! The shell (`supervisor.rs`) tells the policy what happened (nginx started, exited, a probe
//! answered, a config test finished) and carries out what it returns (spawn, test the config,
//! send HUP, signal a master, reap the dead generation). Masters are named by their
//! generation, a number the shell gives each master it starts or adopts.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// What the supervisor is doing with nginx, as shown in `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NginxState {
    Starting,
    Running,
    Reloading,
    Restarting,
    Stopped,
    Failed,
    /// A live binary upgrade (`nginx-ha upgrade-nginx`, or the binary replaced on disk).
    Upgrading,
}

impl NginxState {
    pub const ALL: [NginxState; 7] = [
        NginxState::Starting,
        NginxState::Running,
        NginxState::Reloading,
        NginxState::Restarting,
        NginxState::Stopped,
        NginxState::Failed,
        NginxState::Upgrading,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NginxState::Starting => "starting",
            NginxState::Running => "running",
            NginxState::Reloading => "reloading",
            NginxState::Restarting => "restarting",
            NginxState::Stopped => "stopped",
            NginxState::Failed => "failed",
            NginxState::Upgrading => "upgrading",
        }
    }
}

impl std::fmt::Display for NginxState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// nginx's health as the VRRP routers (and anycast) see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Health {
    /// Master and workers up (and the probes pass, when configured).
    Healthy,
    /// The master crashed while serving and is restarted in place, `restart_in` after the crash
    /// (its backoff: at once for the first crash in a row). Whether the VIPs (or anycast routes)
    /// stay meanwhile is [`Health::restarts_within`] the router's `restart_grace_ms`.
    Restarting { restart_in: Duration },
    /// Not serving: hung, failed to start, stopped, or a restart that failed. Act at once.
    Unhealthy,
}

impl Health {
    pub fn from_serving(serving: bool) -> Health {
        if serving { Health::Healthy } else { Health::Unhealthy }
    }

    pub fn is_healthy(self) -> bool {
        self == Health::Healthy
    }

    /// The restart-in-place rule, one place for VRRP and anycast alike: a holder with
    /// `restart_grace` keeps its VIPs (routes) through a crash whose restart comes within the
    /// grace, and acts at once when the backoff has grown past it (a crash loop) or on anything
    /// else that is not healthy. Strictly within: the restarted nginx needs a moment to serve.
    pub fn restarts_within(self, restart_grace: Duration) -> bool {
        matches!(self, Health::Restarting { restart_in } if restart_in < restart_grace)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PolicyConfig {
    pub fall: u32,
    pub rise: u32,
    /// Whether tcp/http probes are configured; without them health is process liveness alone.
    pub probes: bool,
    pub reload_timeout: Duration,
    /// `stop_timeout_ms`: how long a master told to QUIT may finish its requests before TERM.
    pub stop_timeout: Duration,
}

/// Crashes in a row that are restarted at once (see [`backoff`]): nginx is serving again
/// within milliseconds, well within a router's `restart_grace_ms`, so the VIPs stay. Two, so
/// that a second kill soon after the first costs what the first did (a 200 ms delay there cost
/// the clients 200 ms of errors, over the 100 ms worst case nginx-ha aims at), while a crash
/// loop still hands over at its third crash.
pub const IMMEDIATE_RESTARTS: u32 = 2;
/// The restart delay after the crash that follows the immediate restarts (the third in a row);
/// it doubles per crash after that, up to [`BACKOFF_MAX`]. Longer than the default
/// `restart_grace_ms` (300 ms), so that crash hands the VIPs over.
pub const BACKOFF_START: Duration = Duration::from_millis(400);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Crashes in a row (as counted for the backoff) after which the state is `failed`.
pub const FAILED_AFTER: u32 = 5;
/// A master that ignored QUIT for `stop_timeout` gets TERM (drop connections), then KILL this
/// long after: TERM needs no more than a moment unless nginx is stopped (SIGSTOP) or wedged.
pub const KILL_AFTER_TERM: Duration = Duration::from_secs(3);
/// How the backoff forgets (see [`forgiven`]): a master that served at least this long (from
/// its workers up to its crash) was clearly not in a crash loop, so the count starts afresh and
/// its restart is immediate; a shorter run forgives nothing. nginx starts serving in
/// milliseconds (up to a second or so on a loaded machine), and a crash loop (a bad module, a
/// config that passes `nginx -t` but kills the workers, a dependency gone) crashes within a
/// second or two of each start: 3 s is clearly longer than such a loop, and shorter than the
/// few seconds between the faults of an nginx killed now and then (4–6 s between the fault
/// storm's kills of A after a hand-over). So an nginx that served 3 s or more before each kill never leaves the first step
/// (restarted at once, the VIPs kept), also right after a burst of quicker kills, while a true
/// loop backs off: at once, at once, 400 ms (the third crash hands over with the default
/// 300 ms grace), doubling up to [`BACKOFF_MAX`], and is [`NginxState::Failed`] at its
/// [`FAILED_AFTER`]th crash. The price: an nginx that crashes by itself 3 s or more after each
/// start is not taken for a loop; it is restarted at once every time (it serves nearly all the
/// time) and keeps its VIPs.
///
/// Before, a run of 10 s reset the count and a shorter one took a step off it per 3 s served:
/// after a burst of three quick crashes, kills every 5–6 s forgave one step and added one, so
/// the count stayed at 3 (a 400 ms delay) and every one of them handed over. A step per 3 s is
/// moot beside a 3 s reset (every run that would earn a step resets), and finer steps would let
/// a loop that crashes a second after each start forgive its own crashes: one threshold, no
/// steps.
///
/// Restart in place: every crash of a master that was serving (healthy up to the crash) is
/// reported as [`Health::Restarting`] with its restart delay, whenever it happened after the
/// start; a router keeps its VIPs while that delay is within its `restart_grace_ms`. With the
/// defaults (300 ms) a crash loop restarts in place at its first and second crash (at once),
/// and hands over at its third (400 ms). A restart that fails (nginx exits before
/// serving, or cannot be spawned) is `Unhealthy` at once.
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(3);

/// Why `nginx-ha reload` or `nginx-ha upgrade-nginx` was not carried out; the text is what the
/// CLI prints. nginx keeps serving in every case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("nginx-ha is shutting down")]
    ShuttingDown,
    /// `nginx -t` failed: its output.
    #[error("{0}")]
    ConfigRejected(String),
    /// nginx-ha's own config failed to load: the config error.
    #[error("{0}")]
    OwnConfigRejected(String),
    #[error("nginx exited: {0}")]
    NginxExited(String),
    #[error("nginx accepted the reload signal but started no new workers within {} ms; see its error log", .0.as_millis())]
    NoNewWorkers(Duration),
    #[error("refused: nginx is not running; it starts with the binary on disk when it starts")]
    NotRunning,
    #[error("refused: `nginx -t` with the new binary failed; the old nginx keeps serving:\n{0}")]
    NewBinaryRejected(String),
    #[error("cannot start the new nginx binary: {0}; the old nginx keeps serving")]
    NewBinaryNotStarted(String),
    #[error("the new nginx exited before serving ({0}); rolled back, the old nginx keeps serving")]
    NewMasterExited(String),
    #[error("the new nginx did not serve within {} ms (reload_timeout_ms); rolled back, the old nginx keeps serving", .0.as_millis())]
    NewMasterTooSlow(Duration),
    #[error("nginx exited during the upgrade: {0}")]
    ExitedDuringUpgrade(String),
    #[error("nginx exited before the upgrade began ({0}); it is restarted with the binary on disk")]
    ExitedBeforeUpgrade(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The daemon starts: test the config, then spawn.
    Launch,
    /// A running master from before was adopted instead of spawning a new one.
    Adopted {
        generation: u64,
    },
    /// The master process was spawned.
    Spawned {
        generation: u64,
    },
    SpawnFailed(String),
    /// The master has workers: nginx serves.
    Ready,
    MasterExited(String),
    /// A worker died (the master respawns it).
    WorkerExited,
    Probe {
        ok: bool,
    },
    /// A watched nginx config file changed.
    ConfigChanged,
    /// `nginx-ha reload`: the ticket comes back in `ReloadFinished`.
    ReloadRequested {
        ticket: u64,
    },
    /// `nginx-ha reload` found nginx-ha's own config invalid.
    OwnConfigRejected {
        ticket: u64,
        error: String,
    },
    ConfigTested(Result<(), String>),
    /// A new generation of workers appeared after HUP.
    ReloadConfirmed,
    /// `nginx-ha reload` changed the health or reload settings: they apply from now on.
    Reconfigured(PolicyConfig),
    /// `next_deadline()` has passed.
    Timer,
    Shutdown,
    /// A live binary upgrade: `nginx-ha upgrade-nginx` (with its ticket) or the binary replaced
    /// on disk (None).
    UpgradeRequested {
        ticket: Option<u64>,
    },
    /// `nginx -t` with the new binary finished.
    UpgradeTested(Result<(), String>),
    /// The new master was started (after `SpawnUpgrade`).
    UpgradeSpawned {
        generation: u64,
    },
    /// The new master could not be started.
    UpgradeSpawnFailed(String),
    /// The new master has its workers: it serves beside the old one.
    NewMasterReady,
    /// The new master exited before it served.
    NewMasterExited(String),
    /// A master told to stop (the old one after an upgrade, a rolled-back new one) is gone.
    /// The master's own exit is `MasterExited`, the starting new one's `NewMasterExited`.
    StoppedMasterExited {
        generation: u64,
    },
}

/// What the policy sends a master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MasterSignal {
    /// WINCH: stop the workers gracefully (the old master after an upgrade).
    StopWorkers,
    /// QUIT: finish the requests under way, then exit.
    Quit,
    /// TERM: exit now, dropping connections (QUIT was ignored for `ignored_quit_for`).
    Term { ignored_quit_for: Duration },
    /// KILL.
    Kill,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Run `nginx -t`; answer with `Event::ConfigTested`.
    TestConfig,
    /// Start a master; answer with `Spawned`/`SpawnFailed`, later `Ready`.
    Spawn,
    /// Send HUP; answer with `ReloadConfirmed` once new workers appear.
    SignalReload,
    /// Kill and reap every process left of the dead generation before anything restarts.
    ReapGeneration,
    /// Send `signal` to the master of `generation` (if it still runs). A stop is QUIT, TERM
    /// after `stop_timeout`, KILL [`KILL_AFTER_TERM`] later, until its exit is reported.
    Signal {
        generation: u64,
        signal: MasterSignal,
    },
    Health(Health),
    ReloadFinished {
        tickets: Vec<u64>,
        result: Result<(), CommandError>,
    },
    /// Run `nginx -t` with the (new) binary; answer with `UpgradeTested`.
    TestUpgrade,
    /// Start the new binary beside the running master, on the old master's listening sockets;
    /// answer with `UpgradeSpawnFailed`, or later `NewMasterReady`/`NewMasterExited`.
    SpawnUpgrade,
    /// The new master serves: it becomes the master, the old one leaves (followed by its
    /// `Signal`s; answer with `StoppedMasterExited`).
    RetireOldMaster,
    /// Roll back: the new master leaves (followed by its QUIT when it still runs); the old one
    /// never stopped serving.
    AbortUpgrade,
    UpgradeFinished {
        tickets: Vec<u64>,
        result: Result<(), CommandError>,
    },
}

/// Where a live binary upgrade is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upgrade {
    /// `nginx -t` with the new binary.
    Testing,
    /// The new master is starting; rolled back at `upgrade_deadline`.
    Starting,
    /// The new master serves; the old one is quitting.
    Retiring,
}

/// A master being stopped: the signal it got last and when it gets the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stopping {
    generation: u64,
    sent: MasterSignal,
    escalate_at: Instant,
    /// The `stop_timeout` it was given: a reconfigured one applies to the next stop.
    stop_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyStatus {
    pub state: NginxState,
    pub healthy: bool,
    pub restarts: u64,
    pub worker_exits: u64,
    pub config_error: Option<String>,
}

#[derive(Debug)]
pub struct Policy {
    config: PolicyConfig,
    state: NginxState,
    master_up: bool,
    ready: bool,
    shutting_down: bool,
    /// The master's generation (while `master_up`).
    generation: Option<u64>,
    /// The new master of an upgrade, once started.
    new_generation: Option<u64>,
    /// The old master of an upgrade, quitting after the new one served.
    retiring_generation: Option<u64>,
    /// Masters told to stop, until their exit is reported: each its next escalation.
    stopping: Vec<Stopping>,
    /// Crashes in a row, less what served runs forgave (see `crashed`).
    failures: u32,
    ready_since: Option<Instant>,
    restart_at: Option<Instant>,
    reload_deadline: Option<Instant>,
    test_in_flight: bool,
    /// A change arrived while a test or reload was under way: test again afterwards.
    test_pending: bool,
    /// Tickets answered by the test (and reload or spawn) now under way.
    tickets_current: Vec<u64>,
    tickets_next: Vec<u64>,
    probe_ok: bool,
    probe_streak: u32,
    healthy_reported: Health,
    /// The master crashed while serving and is restarted in place this long after the crash.
    restarting_in_place: Option<Duration>,
    upgrade: Option<Upgrade>,
    /// An upgrade was asked for while a reload ran: it starts when the reload is done.
    upgrade_pending: bool,
    upgrade_deadline: Option<Instant>,
    upgrade_tickets: Vec<u64>,
    restarts: u64,
    worker_exits: u64,
    config_error: Option<String>,
}

impl Policy {
    pub fn new(config: PolicyConfig) -> Self {
        Self {
            probe_ok: !config.probes,
            config,
            state: NginxState::Starting,
            master_up: false,
            ready: false,
            shutting_down: false,
            generation: None,
            new_generation: None,
            retiring_generation: None,
            stopping: Vec::new(),
            failures: 0,
            ready_since: None,
            restart_at: None,
            reload_deadline: None,
            test_in_flight: false,
            test_pending: false,
            tickets_current: Vec::new(),
            tickets_next: Vec::new(),
            probe_streak: 0,
            healthy_reported: Health::Unhealthy,
            restarting_in_place: None,
            upgrade: None,
            upgrade_pending: false,
            upgrade_deadline: None,
            upgrade_tickets: Vec::new(),
            restarts: 0,
            worker_exits: 0,
            config_error: None,
        }
    }

    pub fn status(&self) -> PolicyStatus {
        PolicyStatus {
            state: self.state,
            healthy: self.healthy(),
            restarts: self.restarts,
            worker_exits: self.worker_exits,
            config_error: self.config_error.clone(),
        }
    }

    pub fn state(&self) -> NginxState {
        self.state
    }

    /// Probes only make sense while a master with workers is up.
    /// `Shutdown` was handled: nginx is being (or has been) stopped for good.
    pub fn shutting_down(&self) -> bool {
        self.shutting_down
    }

    pub fn wants_probes(&self) -> bool {
        self.config.probes && self.master_up && self.ready && !self.shutting_down
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        let escalations = self.stopping.iter().map(|stopping| stopping.escalate_at);
        [self.restart_at, self.reload_deadline, self.upgrade_deadline].into_iter().flatten().chain(escalations).min()
    }

    fn healthy(&self) -> bool {
        self.master_up && self.ready && self.probe_ok && !self.shutting_down
    }

    pub fn health(&self) -> Health {
        if self.healthy() {
            Health::Healthy
        } else if let Some(restart_in) = self.restarting_in_place.filter(|_| !self.shutting_down) {
            Health::Restarting { restart_in }
        } else {
            Health::Unhealthy
        }
    }

    pub fn handle(&mut self, now: Instant, event: Event) -> Vec<Action> {
        let mut actions = Vec::new();
        // Stops run their course whatever else happens, also while shutting down.
        match &event {
            Event::Timer => self.escalate_stops(now, &mut actions),
            Event::MasterExited(_) => self.stopped(self.generation),
            Event::NewMasterExited(_) => self.stopped(self.new_generation),
            Event::StoppedMasterExited { generation } => self.stopped(Some(*generation)),
            _ => {}
        }
        if self.shutting_down {
            self.handle_while_stopping(event, &mut actions);
        } else {
            self.handle_event(now, event, &mut actions);
            self.start_pending_upgrade(&mut actions);
            self.start_pending_test(&mut actions);
        }
        let health = self.health();
        if health != self.healthy_reported {
            self.healthy_reported = health;
            actions.push(Action::Health(health));
        }
        actions
    }

    fn handle_event(&mut self, now: Instant, event: Event, actions: &mut Vec<Action>) {
        match event {
            Event::Launch => {
                self.state = NginxState::Starting;
                self.test_pending = true;
            }
            Event::Adopted { generation } => {
                self.generation = Some(generation);
                self.master_up = true;
                self.ready = true;
                self.ready_since = Some(now);
                self.state = NginxState::Running;
            }
            Event::Spawned { generation } => {
                self.generation = Some(generation);
                self.master_up = true;
            }
            Event::SpawnFailed(error) => self.crashed(now, error, false, actions),
            Event::Ready => {
                if self.master_up && !self.ready {
                    self.ready = true;
                    self.ready_since = Some(now);
                    self.state = NginxState::Running;
                    if self.restarting_in_place.take().is_some() {
                        // Serving again: the VIPs never left, so clients must not wait for `rise`
                        // probes to keep them. The probes go on, and `fall` failures (a hang)
                        // still make it unhealthy.
                        self.probe_ok = true;
                        self.probe_streak = 0;
                    }
                    self.finish_tickets(Ok(()), actions);
                }
            }
            Event::MasterExited(reason) => {
                if self.master_up {
                    let was_serving = self.healthy();
                    self.generation = None;
                    self.master_up = false;
                    self.ready = false;
                    actions.push(Action::ReapGeneration);
                    if self.upgrade.take().is_some() {
                        self.upgrade_deadline = None;
                        self.retiring_generation = None;
                        self.abort_upgrade(now, actions);
                        self.finish_upgrade(Err(CommandError::ExitedDuringUpgrade(reason.clone())), actions);
                    } else if std::mem::take(&mut self.upgrade_pending) {
                        self.finish_upgrade(Err(CommandError::ExitedBeforeUpgrade(reason.clone())), actions);
                    }
                    self.crashed(now, reason, was_serving, actions);
                }
            }
            Event::WorkerExited => self.worker_exits += 1,
            Event::Probe { ok } => self.probe(ok),
            Event::ConfigChanged => self.test_pending = true,
            Event::ReloadRequested { ticket } => {
                self.tickets_next.push(ticket);
                self.test_pending = true;
            }
            Event::OwnConfigRejected { ticket, error } => {
                self.config_error = Some(error.clone());
                actions.push(Action::ReloadFinished {
                    tickets: vec![ticket],
                    result: Err(CommandError::OwnConfigRejected(error)),
                });
            }
            Event::ConfigTested(result) => self.config_tested(now, result, actions),
            Event::ReloadConfirmed => {
                if self.state == NginxState::Reloading {
                    self.state = NginxState::Running;
                    self.reload_deadline = None;
                    self.finish_tickets(Ok(()), actions);
                }
            }
            Event::Timer => self.timer(now, actions),
            Event::Reconfigured(config) => self.reconfigure(config),
            Event::UpgradeRequested { ticket } => self.upgrade_requested(ticket, actions),
            Event::UpgradeTested(result) => self.upgrade_tested(now, result, actions),
            Event::UpgradeSpawned { generation } => {
                if self.upgrade == Some(Upgrade::Starting) {
                    self.new_generation = Some(generation);
                }
            }
            Event::UpgradeSpawnFailed(error) => {
                if self.upgrade == Some(Upgrade::Starting) {
                    self.end_upgrade();
                    self.finish_upgrade(Err(CommandError::NewBinaryNotStarted(error)), actions);
                }
            }
            Event::NewMasterReady => {
                if self.upgrade == Some(Upgrade::Starting) {
                    self.upgrade = Some(Upgrade::Retiring);
                    self.upgrade_deadline = None;
                    self.ready_since = Some(now);
                    actions.push(Action::RetireOldMaster);
                    let old = std::mem::replace(&mut self.generation, self.new_generation.take());
                    if let Some(old) = old {
                        self.retiring_generation = Some(old);
                        actions.push(Action::Signal { generation: old, signal: MasterSignal::StopWorkers });
                        self.stop(now, old, actions);
                    }
                }
            }
            Event::NewMasterExited(reason) => {
                if self.upgrade == Some(Upgrade::Starting) {
                    // Gone already: nothing to signal.
                    self.new_generation = None;
                    self.end_upgrade();
                    actions.push(Action::AbortUpgrade);
                    self.finish_upgrade(Err(CommandError::NewMasterExited(reason)), actions);
                }
            }
            Event::StoppedMasterExited { generation } => {
                if self.upgrade == Some(Upgrade::Retiring) && self.retiring_generation == Some(generation) {
                    self.retiring_generation = None;
                    self.end_upgrade();
                    self.finish_upgrade(Ok(()), actions);
                }
            }
            Event::Shutdown => {
                self.shutting_down = true;
                self.restarting_in_place = None;
                self.restart_at = None;
                self.reload_deadline = None;
                let phase = self.upgrade.take();
                if phase.is_some() || std::mem::take(&mut self.upgrade_pending) {
                    self.upgrade_deadline = None;
                    self.retiring_generation = None;
                    if phase == Some(Upgrade::Starting) {
                        self.abort_upgrade(now, actions);
                    }
                    self.finish_upgrade(Err(CommandError::ShuttingDown), actions);
                }
                let tickets =
                    [std::mem::take(&mut self.tickets_current), std::mem::take(&mut self.tickets_next)].concat();
                if !tickets.is_empty() {
                    actions.push(Action::ReloadFinished { tickets, result: Err(CommandError::ShuttingDown) });
                }
                if let Some(generation) = self.generation.filter(|_| self.master_up) {
                    self.stop(now, generation, actions);
                } else {
                    self.state = NginxState::Stopped;
                }
            }
        }
    }

    fn handle_while_stopping(&mut self, event: Event, actions: &mut Vec<Action>) {
        match event {
            Event::MasterExited(_) if self.master_up => {
                self.generation = None;
                self.master_up = false;
                self.ready = false;
                self.state = NginxState::Stopped;
                actions.push(Action::ReapGeneration);
            }
            Event::ReloadRequested { ticket } | Event::OwnConfigRejected { ticket, .. } => {
                actions.push(Action::ReloadFinished { tickets: vec![ticket], result: Err(CommandError::ShuttingDown) })
            }
            Event::UpgradeRequested { ticket: Some(ticket) } => {
                actions.push(Action::UpgradeFinished { tickets: vec![ticket], result: Err(CommandError::ShuttingDown) })
            }
            _ => {}
        }
    }

    /// Rise/fall counting starts afresh. Without probes health is liveness alone at once; with
    /// new probes nginx keeps its health until `fall` of them fail (a reload must not flap VIPs).
    /// A reload under way keeps the deadline it was given.
    fn reconfigure(&mut self, config: PolicyConfig) {
        if !config.probes {
            self.probe_ok = true;
        }
        self.probe_streak = 0;
        self.config = config;
    }

    /// `was_serving`: healthy up to the crash (not hung, not already failing its probes).
    fn crashed(&mut self, now: Instant, reason: String, was_serving: bool, actions: &mut Vec<Action>) {
        self.probe_ok = !self.config.probes;
        self.probe_streak = 0;
        self.reload_deadline = None;
        let served = self.ready_since.take().map(|since| now.duration_since(since));
        self.failures = forgiven(self.failures, served.unwrap_or_default()) + 1;
        let delay = backoff(self.failures);
        // See BACKOFF_RESET_AFTER: the routers decide from the delay whether the VIPs stay. A
        // restart that fails (nginx exits before serving again: a config made invalid on disk,
        // a port taken, a spawn error) lands here not serving: Unhealthy at once.
        self.restarting_in_place = (was_serving && served.is_some()).then_some(delay);
        self.restart_at = Some(now + delay);
        self.state = if self.failures >= FAILED_AFTER { NginxState::Failed } else { NginxState::Restarting };
        self.finish_tickets(Err(CommandError::NginxExited(reason)), actions);
    }

    fn timer(&mut self, now: Instant, actions: &mut Vec<Action>) {
        if self.reload_deadline.is_some_and(|deadline| now >= deadline) {
            self.reload_deadline = None;
            self.state = NginxState::Running;
            self.finish_tickets(Err(CommandError::NoNewWorkers(self.config.reload_timeout)), actions);
        }
        if self.restart_at.is_some_and(|at| now >= at) {
            self.spawn(actions);
        }
        if self.upgrade_deadline.is_some_and(|deadline| now >= deadline) && self.upgrade == Some(Upgrade::Starting) {
            self.abort_upgrade(now, actions);
            self.end_upgrade();
            self.finish_upgrade(Err(CommandError::NewMasterTooSlow(self.config.reload_timeout)), actions);
        }
    }

    /// QUIT to `generation`; TERM and KILL follow at their deadlines unless its exit comes first.
    fn stop(&mut self, now: Instant, generation: u64, actions: &mut Vec<Action>) {
        if self.stopping.iter().any(|stopping| stopping.generation == generation) {
            return;
        }
        actions.push(Action::Signal { generation, signal: MasterSignal::Quit });
        let stop_timeout = self.config.stop_timeout;
        self.stopping.push(Stopping {
            generation,
            sent: MasterSignal::Quit,
            escalate_at: now + stop_timeout,
            stop_timeout,
        });
    }

    /// The master of `generation` exited: it gets nothing more.
    fn stopped(&mut self, generation: Option<u64>) {
        self.stopping.retain(|stopping| Some(stopping.generation) != generation);
    }

    /// QUIT ignored for `stop_timeout`: TERM; TERM ignored for [`KILL_AFTER_TERM`]: KILL.
    fn escalate_stops(&mut self, now: Instant, actions: &mut Vec<Action>) {
        self.stopping.retain_mut(|stopping| {
            if now < stopping.escalate_at {
                return true;
            }
            let next = match stopping.sent {
                MasterSignal::Quit => MasterSignal::Term { ignored_quit_for: stopping.stop_timeout },
                _ => MasterSignal::Kill,
            };
            actions.push(Action::Signal { generation: stopping.generation, signal: next });
            stopping.sent = next;
            stopping.escalate_at = now + KILL_AFTER_TERM;
            // Nothing follows KILL.
            next != MasterSignal::Kill
        });
    }

    /// The new master leaves: QUIT to it when it was started.
    fn abort_upgrade(&mut self, now: Instant, actions: &mut Vec<Action>) {
        actions.push(Action::AbortUpgrade);
        if let Some(new) = self.new_generation.take() {
            self.stop(now, new, actions);
        }
    }

    fn spawn(&mut self, actions: &mut Vec<Action>) {
        if self.restart_at.take().is_some() {
            self.restarts += 1;
        }
        actions.push(Action::Spawn);
    }

    fn probe(&mut self, ok: bool) {
        if !(self.master_up && self.ready) {
            return;
        }
        if ok == self.probe_ok {
            self.probe_streak = 0;
            return;
        }
        self.probe_streak += 1;
        let needed = if ok { self.config.rise } else { self.config.fall };
        if self.probe_streak >= needed {
            self.probe_ok = ok;
            self.probe_streak = 0;
        }
    }

    /// A test may start when none runs, no reload awaits confirmation, no master is half-up and
    /// no upgrade is under way.
    fn start_pending_test(&mut self, actions: &mut Vec<Action>) {
        let settling = self.master_up && !self.ready;
        let busy = self.state == NginxState::Reloading || self.upgrade.is_some();
        if self.test_pending && !self.test_in_flight && !busy && !settling {
            self.test_pending = false;
            self.test_in_flight = true;
            self.tickets_current.append(&mut self.tickets_next);
            actions.push(Action::TestConfig);
        }
    }

    fn config_tested(&mut self, now: Instant, result: Result<(), String>, actions: &mut Vec<Action>) {
        self.test_in_flight = false;
        match result {
            Ok(()) => {
                self.config_error = None;
                if self.master_up && self.ready {
                    self.state = NginxState::Reloading;
                    self.reload_deadline = Some(now + self.config.reload_timeout);
                    actions.push(Action::SignalReload);
                } else if !self.master_up {
                    // Down (first launch, a crash loop, or a config that never started):
                    // a config that now passes deserves a start right away.
                    if self.state == NginxState::Failed && self.restart_at.is_none() {
                        self.state = NginxState::Starting;
                    }
                    self.spawn(actions);
                }
            }
            Err(error) => {
                self.config_error = Some(error.clone());
                if !self.master_up && self.restart_at.is_none() {
                    // Nothing runs and nothing would start it: wait for the config to be fixed.
                    self.state = NginxState::Failed;
                }
                self.finish_tickets(Err(CommandError::ConfigRejected(error)), actions);
            }
        }
    }

    /// A request (or a rename seen by the watch) while an upgrade runs is answered with it; one
    /// during a reload waits for it (a package upgrade often brings config files with the binary).
    fn upgrade_requested(&mut self, ticket: Option<u64>, actions: &mut Vec<Action>) {
        self.upgrade_tickets.extend(ticket);
        if self.upgrade.is_some() {
            return;
        }
        if !(self.master_up && self.ready) {
            self.upgrade_pending = false;
            self.finish_upgrade(Err(CommandError::NotRunning), actions);
            return;
        }
        self.upgrade_pending = true;
    }

    fn start_pending_upgrade(&mut self, actions: &mut Vec<Action>) {
        let idle = self.upgrade.is_none() && self.state != NginxState::Reloading && !self.test_in_flight;
        if self.upgrade_pending && idle && self.master_up && self.ready {
            self.upgrade_pending = false;
            self.upgrade = Some(Upgrade::Testing);
            self.state = NginxState::Upgrading;
            actions.push(Action::TestUpgrade);
        }
    }

    fn upgrade_tested(&mut self, now: Instant, result: Result<(), String>, actions: &mut Vec<Action>) {
        if self.upgrade != Some(Upgrade::Testing) {
            return;
        }
        match result {
            Ok(()) => {
                self.upgrade = Some(Upgrade::Starting);
                self.upgrade_deadline = Some(now + self.config.reload_timeout);
                actions.push(Action::SpawnUpgrade);
            }
            Err(error) => {
                self.end_upgrade();
                self.finish_upgrade(Err(CommandError::NewBinaryRejected(error)), actions);
            }
        }
    }

    /// Back to running: the old master (rolled back) or the new one (done) serves.
    fn end_upgrade(&mut self) {
        self.upgrade = None;
        self.upgrade_deadline = None;
        self.new_generation = None;
        if self.state == NginxState::Upgrading {
            self.state = NginxState::Running;
        }
    }

    fn finish_upgrade(&mut self, result: Result<(), CommandError>, actions: &mut Vec<Action>) {
        // A rename seen by the watch has no ticket, but its outcome still goes to the log.
        actions.push(Action::UpgradeFinished { tickets: std::mem::take(&mut self.upgrade_tickets), result });
    }

    fn finish_tickets(&mut self, result: Result<(), CommandError>, actions: &mut Vec<Action>) {
        if !self.tickets_current.is_empty() {
            actions.push(Action::ReloadFinished { tickets: std::mem::take(&mut self.tickets_current), result });
        }
    }
}

/// The crash count before a crash of a run that served `served`: nothing left after
/// [`BACKOFF_RESET_AFTER`] (not a crash loop), else all of it (a crash loop forgives nothing).
pub fn forgiven(failures: u32, served: Duration) -> u32 {
    if served >= BACKOFF_RESET_AFTER { 0 } else { failures }
}

/// The restart delay after `failures` crashes in a row: at once for the first
/// [`IMMEDIATE_RESTARTS`] (an nginx killed comes back in milliseconds), then 400 ms doubling per
/// crash ([`BACKOFF_START`] × 2ⁿ⁻³), capped at 30 s.
pub fn backoff(failures: u32) -> Duration {
    if failures <= IMMEDIATE_RESTARTS {
        return Duration::ZERO;
    }
    let doublings = (failures - IMMEDIATE_RESTARTS - 1).min(16);
    (BACKOFF_START * 2u32.pow(doublings)).min(BACKOFF_MAX)
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
