//! The supervisor's decisions, pure: events and time in, actions out. No processes, no clock.
//!
//! The shell (`supervisor.rs`) tells the policy what happened (nginx started, exited, a probe
//! answered, a config test finished) and carries out what it returns (spawn, test the config,
//! send HUP, reap the dead generation, stop).

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
}

impl NginxState {
    pub const ALL: [NginxState; 6] = [
        NginxState::Starting,
        NginxState::Running,
        NginxState::Reloading,
        NginxState::Restarting,
        NginxState::Stopped,
        NginxState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NginxState::Starting => "starting",
            NginxState::Running => "running",
            NginxState::Reloading => "reloading",
            NginxState::Restarting => "restarting",
            NginxState::Stopped => "stopped",
            NginxState::Failed => "failed",
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
    /// The master crashed after serving and is being restarted in place: a router keeps its
    /// VIPs for `restart_grace_ms` and acts only if nginx is not serving again by then.
    Restarting,
    /// Not serving: hung, failed to start, stopped, or crashing in a loop. Act at once.
    Unhealthy,
}

impl Health {
    pub fn from_serving(serving: bool) -> Health {
        if serving { Health::Healthy } else { Health::Unhealthy }
    }

    pub fn is_healthy(self) -> bool {
        self == Health::Healthy
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PolicyConfig {
    pub fall: u32,
    pub rise: u32,
    /// Whether tcp/http probes are configured; without them health is process liveness alone.
    pub probes: bool,
    pub reload_timeout: Duration,
}

/// First restart delay; doubles per consecutive crash.
pub const BACKOFF_START: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A generation that ran this long resets the backoff.
pub const STABLE_AFTER: Duration = Duration::from_secs(60);
/// Consecutive crashes (without a stable run) after which the state is `failed`.
pub const FAILED_AFTER: u32 = 5;

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The daemon starts: test the config, then spawn.
    Launch,
    /// A running master from before was adopted instead of spawning a new one.
    Adopted,
    /// The master process was spawned.
    Spawned,
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
    /// Graceful stop: QUIT, then TERM, then KILL.
    Stop,
    Health(bool),
    ReloadFinished {
        tickets: Vec<u64>,
        result: Result<(), String>,
    },
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
    /// Consecutive crashes since the last stable run.
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
    healthy_reported: bool,
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
            failures: 0,
            ready_since: None,
            restart_at: None,
            reload_deadline: None,
            test_in_flight: false,
            test_pending: false,
            tickets_current: Vec::new(),
            tickets_next: Vec::new(),
            probe_streak: 0,
            healthy_reported: false,
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
    pub fn wants_probes(&self) -> bool {
        self.config.probes && self.master_up && self.ready && !self.shutting_down
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        [self.restart_at, self.reload_deadline].into_iter().flatten().min()
    }

    fn healthy(&self) -> bool {
        self.master_up && self.ready && self.probe_ok && !self.shutting_down
    }

    pub fn handle(&mut self, now: Instant, event: Event) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.shutting_down {
            self.handle_while_stopping(event, &mut actions);
        } else {
            self.handle_event(now, event, &mut actions);
            self.start_pending_test(&mut actions);
        }
        let healthy = self.healthy();
        if healthy != self.healthy_reported {
            self.healthy_reported = healthy;
            actions.push(Action::Health(healthy));
        }
        actions
    }

    fn handle_event(&mut self, now: Instant, event: Event, actions: &mut Vec<Action>) {
        match event {
            Event::Launch => {
                self.state = NginxState::Starting;
                self.test_pending = true;
            }
            Event::Adopted => {
                self.master_up = true;
                self.ready = true;
                self.ready_since = Some(now);
                self.state = NginxState::Running;
            }
            Event::Spawned => self.master_up = true,
            Event::SpawnFailed(error) => self.crashed(now, error, actions),
            Event::Ready => {
                if self.master_up && !self.ready {
                    self.ready = true;
                    self.ready_since = Some(now);
                    self.state = NginxState::Running;
                    self.finish_tickets(Ok(()), actions);
                }
            }
            Event::MasterExited(reason) => {
                if self.master_up {
                    self.master_up = false;
                    self.ready = false;
                    actions.push(Action::ReapGeneration);
                    self.crashed(now, reason, actions);
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
                actions.push(Action::ReloadFinished { tickets: vec![ticket], result: Err(error) });
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
            Event::Shutdown => {
                self.shutting_down = true;
                self.restart_at = None;
                self.reload_deadline = None;
                let tickets =
                    [std::mem::take(&mut self.tickets_current), std::mem::take(&mut self.tickets_next)].concat();
                if !tickets.is_empty() {
                    actions.push(Action::ReloadFinished { tickets, result: Err("nginx-ha is shutting down".into()) });
                }
                if self.master_up {
                    actions.push(Action::Stop);
                } else {
                    self.state = NginxState::Stopped;
                }
            }
        }
    }

    fn handle_while_stopping(&mut self, event: Event, actions: &mut Vec<Action>) {
        match event {
            Event::MasterExited(_) if self.master_up => {
                self.master_up = false;
                self.ready = false;
                self.state = NginxState::Stopped;
                actions.push(Action::ReapGeneration);
            }
            Event::ReloadRequested { ticket } | Event::OwnConfigRejected { ticket, .. } => {
                actions.push(Action::ReloadFinished {
                    tickets: vec![ticket],
                    result: Err("nginx-ha is shutting down".into()),
                })
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

    fn crashed(&mut self, now: Instant, reason: String, actions: &mut Vec<Action>) {
        self.probe_ok = !self.config.probes;
        self.probe_streak = 0;
        self.reload_deadline = None;
        if self.ready_since.take().is_some_and(|since| now.duration_since(since) >= STABLE_AFTER) {
            self.failures = 0;
        }
        self.failures += 1;
        self.restart_at = Some(now + backoff(self.failures));
        self.state = if self.failures >= FAILED_AFTER { NginxState::Failed } else { NginxState::Restarting };
        self.finish_tickets(Err(format!("nginx exited: {reason}")), actions);
    }

    fn timer(&mut self, now: Instant, actions: &mut Vec<Action>) {
        if self.reload_deadline.is_some_and(|deadline| now >= deadline) {
            self.reload_deadline = None;
            self.state = NginxState::Running;
            self.finish_tickets(
                Err(format!(
                    "nginx accepted the reload signal but started no new workers within {} ms; see its error log",
                    self.config.reload_timeout.as_millis()
                )),
                actions,
            );
        }
        if self.restart_at.is_some_and(|at| now >= at) {
            self.spawn(actions);
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

    /// A test may start when none runs, no reload awaits confirmation, and no master is half-up.
    fn start_pending_test(&mut self, actions: &mut Vec<Action>) {
        let settling = self.master_up && !self.ready;
        if self.test_pending && !self.test_in_flight && self.state != NginxState::Reloading && !settling {
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
                self.finish_tickets(Err(error), actions);
            }
        }
    }

    fn finish_tickets(&mut self, result: Result<(), String>, actions: &mut Vec<Action>) {
        if !self.tickets_current.is_empty() {
            actions.push(Action::ReloadFinished { tickets: std::mem::take(&mut self.tickets_current), result });
        }
    }
}

/// 100 ms doubling per consecutive crash, capped at 30 s.
pub fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    (BACKOFF_START * 2u32.pow(doublings)).min(BACKOFF_MAX)
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
