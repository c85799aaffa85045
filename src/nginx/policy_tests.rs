use std::time::{Duration, Instant};

use super::*;

/// A crash reported with its immediate restart (the first crash in a row).
const RESTART_AT_ONCE: Health = Health::Restarting { restart_in: Duration::ZERO };

/// A policy on a simulated clock.
struct Sim {
    policy: Policy,
    now: Instant,
    /// The last generation given to a master, as the shell numbers them.
    generation: u64,
}

impl Sim {
    fn new(probes: bool) -> Self {
        Sim { policy: Policy::new(config(probes, 2, Duration::from_secs(10))), now: Instant::now(), generation: 0 }
    }

    /// The master asked for by `Spawn` started, with the next generation.
    fn spawned(&mut self) -> Vec<Action> {
        self.generation += 1;
        self.on(Event::Spawned { generation: self.generation })
    }

    /// The new master asked for by `SpawnUpgrade` started; its generation.
    fn upgrade_spawned(&mut self) -> u64 {
        self.generation += 1;
        assert_eq!(self.on(Event::UpgradeSpawned { generation: self.generation }), vec![]);
        self.generation
    }

    fn on(&mut self, event: Event) -> Vec<Action> {
        self.policy.handle(self.now, event)
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    /// Advances to the next deadline and fires it.
    fn fire(&mut self) -> Vec<Action> {
        self.now = self.policy.next_deadline().expect("a deadline is armed");
        self.on(Event::Timer)
    }

    /// Launch, config valid, spawned, workers up.
    fn running(probes: bool) -> Self {
        let mut sim = Sim::new(probes);
        assert_eq!(sim.on(Event::Launch), vec![Action::TestConfig]);
        assert_eq!(sim.on(Event::ConfigTested(Ok(()))), vec![Action::Spawn]);
        sim.spawned();
        sim.on(Event::Ready);
        assert_eq!(sim.policy.state(), NginxState::Running);
        sim
    }

    fn crash(&mut self) -> Vec<Action> {
        self.on(Event::MasterExited("killed by signal 9".into()))
    }

    fn state(&self) -> NginxState {
        self.policy.state()
    }
}

#[test]
fn launch_tests_the_config_before_spawning_and_becomes_healthy_when_workers_appear() {
    let mut sim = Sim::new(false);
    assert_eq!(sim.on(Event::Launch), vec![Action::TestConfig]);
    assert_eq!(sim.state(), NginxState::Starting);
    assert_eq!(sim.on(Event::ConfigTested(Ok(()))), vec![Action::Spawn]);
    assert_eq!(sim.spawned(), vec![]);
    assert!(!sim.policy.status().healthy, "a master without workers does not serve yet");
    assert_eq!(sim.on(Event::Ready), vec![Action::Health(Health::Healthy)]);
    assert_eq!(sim.policy.status().restarts, 0);
}

#[test]
fn invalid_config_at_launch_never_spawns_and_a_fix_starts_nginx() {
    let mut sim = Sim::new(false);
    sim.on(Event::Launch);
    assert_eq!(sim.on(Event::ConfigTested(Err("unknown directive \"lisen\"".into()))), vec![]);
    assert_eq!(sim.state(), NginxState::Failed);
    assert_eq!(sim.policy.status().config_error.as_deref(), Some("unknown directive \"lisen\""));
    assert_eq!(sim.policy.next_deadline(), None, "no point retrying a config that fails its test");
    assert_eq!(sim.on(Event::ConfigChanged), vec![Action::TestConfig]);
    assert_eq!(sim.on(Event::ConfigTested(Ok(()))), vec![Action::Spawn]);
    assert_eq!(sim.state(), NginxState::Starting);
    assert_eq!(sim.policy.status().config_error, None);
}

#[test]
fn a_crash_reaps_the_generation_and_restarts_at_once_in_place() {
    let mut sim = Sim::running(false);
    assert_eq!(sim.crash(), vec![Action::ReapGeneration, Action::Health(RESTART_AT_ONCE)]);
    assert_eq!(sim.state(), NginxState::Restarting);
    assert_eq!(sim.policy.next_deadline(), Some(sim.now));
    assert_eq!(sim.fire(), vec![Action::Spawn]);
    sim.spawned();
    assert_eq!(sim.on(Event::Ready), vec![Action::Health(Health::Healthy)]);
    assert_eq!(sim.state(), NginxState::Running);
    assert_eq!(sim.policy.status().restarts, 1);
}

#[test]
fn backoff_doubles_to_30s_and_repeated_failure_is_failed_but_still_retrying() {
    let mut sim = Sim::running(false);
    let mut delays = Vec::new();
    for _ in 0..12 {
        sim.crash();
        let crashed_at = sim.now;
        delays.push(sim.policy.next_deadline().unwrap() - crashed_at);
        sim.fire();
        sim.spawned();
        sim.advance(Duration::from_millis(5));
    }
    let ms: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
    assert_eq!(ms, [0, 0, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000, 30000]);
    assert_eq!(sim.state(), NginxState::Failed);
    assert!(sim.policy.next_deadline().is_none(), "the spawn is under way");
    assert_eq!(sim.on(Event::Ready), vec![Action::Health(Health::Healthy)]);
    assert_eq!(sim.state(), NginxState::Running);
}

#[test]
fn the_fifth_consecutive_crash_marks_failed() {
    let mut sim = Sim::running(false);
    for crash in 1..=5 {
        sim.crash();
        let expected = if crash < FAILED_AFTER { NginxState::Restarting } else { NginxState::Failed };
        assert_eq!(sim.state(), expected, "after crash {crash}");
        sim.fire();
        sim.spawned();
    }
}

#[test]
fn three_seconds_of_serving_resets_the_backoff() {
    let mut sim = Sim::running(false);
    for _ in 0..4 {
        sim.crash();
        sim.fire();
        sim.spawned();
        sim.on(Event::Ready);
    }
    sim.crash();
    assert_eq!(sim.policy.next_deadline().unwrap() - sim.now, Duration::from_millis(1600), "the fifth in a row");
    sim.fire();
    sim.spawned();
    sim.on(Event::Ready);
    sim.advance(BACKOFF_RESET_AFTER);
    sim.crash();
    assert_eq!(sim.policy.next_deadline(), Some(sim.now), "served 3 s: restarted at once");
    sim.fire();
    sim.spawned();
    sim.on(Event::Ready);
    sim.crash();
    assert_eq!(sim.policy.next_deadline().unwrap() - sim.now, backoff(2), "the count started afresh");
}

#[test]
fn a_run_shorter_than_the_reset_forgives_nothing_a_longer_one_everything() {
    assert_eq!(BACKOFF_RESET_AFTER, Duration::from_secs(3));
    assert_eq!(forgiven(6, Duration::ZERO), 6);
    assert_eq!(forgiven(6, Duration::from_secs(2)), 6, "a crash loop forgives nothing");
    assert_eq!(forgiven(6, BACKOFF_RESET_AFTER - Duration::from_millis(1)), 6);
    assert_eq!(forgiven(6, BACKOFF_RESET_AFTER), 0);
    assert_eq!(forgiven(u32::MAX, BACKOFF_RESET_AFTER), 0);
    assert_eq!(forgiven(3, Duration::from_secs(3600)), 0);
}

/// Crashes `times`, each `served` after its workers came up; the restart delays.
fn delays_when_killed_every(sim: &mut Sim, served: Duration, times: usize) -> Vec<Duration> {
    let mut delays = Vec::new();
    for _ in 0..times {
        sim.advance(served);
        sim.crash();
        delays.push(sim.policy.next_deadline().unwrap() - sim.now);
        sim.fire();
        sim.spawned();
        sim.on(Event::Ready);
    }
    delays
}

#[test]
fn an_nginx_killed_every_few_seconds_is_never_kept_down_long() {
    // Killed 4 s after its workers came up, over and over: each run resets the count.
    let mut sim = Sim::running(false);
    let delays = delays_when_killed_every(&mut sim, Duration::from_secs(4), 30);
    assert!(delays.iter().all(Duration::is_zero), "{delays:?}");
    assert_ne!(sim.state(), NginxState::Failed);
    // After a burst of quick crashes (the count at 6, 3.2 s) the first run of 3 s starts afresh.
    let mut sim = Sim::running(false);
    delays_when_killed_every(&mut sim, Duration::from_millis(500), 6);
    let delays = delays_when_killed_every(&mut sim, Duration::from_secs(3), 4);
    let ms: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
    assert_eq!(ms, [0, 0, 0, 0], "each 3 s run starts the count afresh");
}

/// Kills at the given gaps (kill to kill, as the fault storm spaces them), nginx serving
/// `start` after each restart; per kill whether it was restarted within the default grace.
/// A kill that finds nginx not serving (restart still pending) kills nothing.
fn kept_when_killed_at(sim: &mut Sim, gaps: &[Duration], start: Duration) -> Vec<bool> {
    let mut kept = Vec::new();
    let mut last_kill = sim.now;
    for &gap in gaps {
        let at = last_kill + gap;
        assert!(at >= sim.now, "kill at {gap:?} before nginx served again");
        sim.now = at;
        last_kill = at;
        assert_eq!(sim.state(), NginxState::Running, "nginx serving at the kill");
        kept.push(kept_with_the_default_grace(&sim.crash()));
        sim.fire();
        sim.spawned();
        sim.advance(start);
        sim.on(Event::Ready);
    }
    kept
}

/// The fault storm's pace: kills 4–6 s apart (a fixed pseudo-random sequence), and every tenth
/// of them followed by a burst of two more 1 s apart.
fn storm_gaps(kills: usize) -> (Vec<Duration>, Vec<bool>) {
    let (mut gaps, mut burst) = (Vec::new(), Vec::new());
    let mut x: u64 = 20261207;
    for n in 0..kills {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        gaps.push(Duration::from_millis(4000 + (x >> 33) % 2001));
        burst.push(false);
        if n % 10 == 5 {
            gaps.extend([Duration::from_secs(1); 2]);
            burst.extend([true, true]);
        }
    }
    (gaps, burst)
}

#[test]
fn kills_every_4_to_6s_forever_always_restart_in_place_also_after_a_burst() {
    // nginx serving 20 ms after its restart (an idle machine) and 500 ms (a loaded one).
    for start in [Duration::from_millis(20), Duration::from_millis(500)] {
        let mut sim = Sim::running(false);
        let (gaps, burst) = storm_gaps(300);
        let kept = kept_when_killed_at(&mut sim, &gaps, start);
        for (n, (&kept, &in_burst)) in kept.iter().zip(&burst).enumerate() {
            // A burst is a crash loop by the count: its third kill in a row (400 ms) hands
            // over; every kill 4–6 s after the last one, the first after a burst included,
            // starts the count afresh: restarted at once, the VIPs kept.
            let third_in_a_row = in_burst && burst[n - 1];
            assert_eq!(kept, !third_in_a_row, "kill {n} (gap {:?}, start {start:?})", gaps[n]);
        }
        assert_eq!(kept.iter().filter(|kept| !**kept).count(), 30, "one hand-over per burst");
        assert_ne!(sim.state(), NginxState::Failed);
    }
    // A burst of four (800 ms): the next kill 4 s after the last still starts afresh
    // (4 s - 800 ms - 20 ms served).
    let mut sim = Sim::running(false);
    let second = Duration::from_secs(1);
    let kept = kept_when_killed_at(
        &mut sim,
        &[second, second, second, second, Duration::from_secs(4)],
        Duration::from_millis(20),
    );
    assert_eq!(kept, [true, true, false, false, true]);
}

#[test]
fn a_crash_loop_after_a_long_run_hands_over_at_its_third_crash_and_fails_at_its_fifth() {
    // Served an hour, then (a bad module, say) crashes 1 s after each start.
    let mut sim = Sim::running(false);
    sim.advance(Duration::from_secs(3600));
    let mut kept = vec![kept_with_the_default_grace(&sim.crash())];
    let mut states = vec![sim.state()];
    for _ in 0..4 {
        sim.fire();
        sim.spawned();
        sim.advance(Duration::from_millis(20));
        sim.on(Event::Ready);
        sim.advance(Duration::from_millis(980));
        kept.push(kept_with_the_default_grace(&sim.crash()));
        states.push(sim.state());
    }
    assert_eq!(kept, [true, true, false, false, false], "hands over at its third crash");
    use NginxState::{Failed, Restarting};
    assert_eq!(states, [Restarting, Restarting, Restarting, Restarting, Failed], "failed at its fifth");
    // The same for a loop at the top of "a second or two": crashes 2.9 s after its workers came up.
    let mut sim = Sim::running(false);
    let delays = delays_when_killed_every(&mut sim, Duration::from_millis(2900), 5);
    let ms: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
    assert_eq!(ms, [0, 0, 400, 800, 1600]);
    assert!(!Health::Restarting { restart_in: delays[2] }.restarts_within(Duration::from_millis(300)));
}

#[test]
fn a_true_crash_loop_still_backs_off_exponentially() {
    // Crashes a second or two after each start: nothing forgiven, the delay doubles to the cap.
    let mut sim = Sim::running(false);
    let delays = delays_when_killed_every(&mut sim, Duration::from_millis(1500), 11);
    let ms: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
    assert_eq!(ms, [0, 0, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000]);
    assert_eq!(sim.state(), NginxState::Running, "serving between its crashes");
    sim.advance(Duration::from_millis(1500));
    sim.crash();
    assert_eq!(sim.state(), NginxState::Failed);
}

#[test]
fn spawn_failure_counts_as_a_crash() {
    let mut sim = Sim::new(false);
    sim.on(Event::Launch);
    sim.on(Event::ConfigTested(Ok(())));
    assert_eq!(sim.on(Event::SpawnFailed("No such file or directory".into())), vec![]);
    assert_eq!(sim.state(), NginxState::Restarting);
    assert_eq!(sim.fire(), vec![Action::Spawn]);
}

#[test]
fn probes_need_fall_failures_to_go_unhealthy_and_rise_successes_to_come_back() {
    let mut sim = Sim::running(true);
    assert!(!sim.policy.status().healthy, "with probes, running is not yet healthy");
    assert!(sim.policy.wants_probes());
    assert_eq!(sim.on(Event::Probe { ok: true }), vec![]);
    assert_eq!(sim.on(Event::Probe { ok: true }), vec![Action::Health(Health::Healthy)]);
    assert_eq!(sim.on(Event::Probe { ok: false }), vec![]);
    assert_eq!(sim.on(Event::Probe { ok: true }), vec![], "a success in between resets the count");
    assert_eq!(sim.on(Event::Probe { ok: false }), vec![]);
    assert_eq!(sim.on(Event::Probe { ok: false }), vec![Action::Health(Health::Unhealthy)]);
    assert_eq!(sim.state(), NginxState::Running, "a hung nginx is unhealthy, not restarted");
    assert_eq!(sim.on(Event::Probe { ok: true }), vec![]);
    assert_eq!(sim.on(Event::Probe { ok: true }), vec![Action::Health(Health::Healthy)]);
}

#[test]
fn after_a_crash_probes_must_rise_again() {
    let mut sim = Sim::running(true);
    sim.on(Event::Probe { ok: true });
    sim.on(Event::Probe { ok: true });
    assert_eq!(sim.crash(), vec![Action::ReapGeneration, Action::Health(RESTART_AT_ONCE)]);
    assert!(!sim.policy.wants_probes());
    assert_eq!(sim.on(Event::Probe { ok: true }), vec![], "probe results while down are ignored");
    // A restart that fails: probes must rise again on the one after.
    sim.fire();
    sim.spawned();
    assert_eq!(sim.on(Event::SpawnFailed("No such file or directory".into())), vec![Action::Health(Health::Unhealthy)]);
    sim.fire();
    sim.spawned();
    assert_eq!(sim.on(Event::Ready), vec![]);
    sim.on(Event::Probe { ok: true });
    assert_eq!(sim.on(Event::Probe { ok: true }), vec![Action::Health(Health::Healthy)]);
}

#[test]
fn valid_change_reloads_with_hup_and_confirms() {
    let mut sim = Sim::running(false);
    assert_eq!(sim.on(Event::ConfigChanged), vec![Action::TestConfig]);
    assert_eq!(sim.on(Event::ConfigTested(Ok(()))), vec![Action::SignalReload]);
    assert_eq!(sim.state(), NginxState::Reloading);
    assert!(sim.policy.status().healthy, "reloading nginx keeps serving");
    assert_eq!(sim.on(Event::ReloadConfirmed), vec![]);
    assert_eq!(sim.state(), NginxState::Running);
}

#[test]
fn invalid_change_never_signals_nginx_and_reports_the_error() {
    let mut sim = Sim::running(false);
    sim.on(Event::ConfigChanged);
    assert_eq!(sim.on(Event::ConfigTested(Err("bad".into()))), vec![]);
    assert_eq!(sim.state(), NginxState::Running);
    assert_eq!(sim.policy.status().config_error.as_deref(), Some("bad"));
    assert!(sim.policy.status().healthy);
    sim.on(Event::ConfigChanged);
    sim.on(Event::ConfigTested(Ok(())));
    assert_eq!(sim.policy.status().config_error, None, "cleared once a valid config is applied");
}

#[test]
fn changes_during_a_test_or_reload_are_tested_again_afterwards() {
    let mut sim = Sim::running(false);
    sim.on(Event::ConfigChanged);
    assert_eq!(sim.on(Event::ConfigChanged), vec![], "one test at a time");
    assert_eq!(sim.on(Event::ConfigTested(Ok(()))), vec![Action::SignalReload]);
    assert_eq!(sim.on(Event::ConfigChanged), vec![], "not while a reload is unconfirmed");
    assert_eq!(sim.on(Event::ReloadConfirmed), vec![Action::TestConfig]);
}

#[test]
fn reload_request_is_answered_when_the_reload_is_confirmed() {
    let mut sim = Sim::running(false);
    assert_eq!(sim.on(Event::ReloadRequested { ticket: 7 }), vec![Action::TestConfig]);
    sim.on(Event::ConfigTested(Ok(())));
    assert_eq!(sim.on(Event::ReloadConfirmed), vec![Action::ReloadFinished { tickets: vec![7], result: Ok(()) }]);
}

#[test]
fn reload_request_is_rejected_with_the_test_error() {
    let mut sim = Sim::running(false);
    sim.on(Event::ReloadRequested { ticket: 1 });
    assert_eq!(
        sim.on(Event::ConfigTested(Err("nginx: [emerg] bad".into()))),
        vec![Action::ReloadFinished {
            tickets: vec![1],
            result: Err(CommandError::ConfigRejected("nginx: [emerg] bad".into()))
        }]
    );
}

#[test]
fn a_request_during_a_test_waits_for_its_own_test() {
    let mut sim = Sim::running(false);
    sim.on(Event::ConfigChanged);
    sim.on(Event::ReloadRequested { ticket: 2 });
    assert_eq!(sim.on(Event::ConfigTested(Ok(()))), vec![Action::SignalReload]);
    assert_eq!(sim.on(Event::ReloadConfirmed), vec![Action::TestConfig], "ticket 2 gets a fresh test");
    sim.on(Event::ConfigTested(Ok(())));
    assert_eq!(sim.on(Event::ReloadConfirmed), vec![Action::ReloadFinished { tickets: vec![2], result: Ok(()) }]);
}

#[test]
fn reload_that_starts_no_workers_times_out() {
    let mut sim = Sim::running(false);
    sim.on(Event::ReloadRequested { ticket: 3 });
    sim.on(Event::ConfigTested(Ok(())));
    assert_eq!(sim.policy.next_deadline(), Some(sim.now + Duration::from_secs(10)));
    let actions = sim.fire();
    assert!(matches!(&actions[..], [Action::ReloadFinished { tickets, result: Err(_) }] if tickets == &[3]));
    assert_eq!(sim.state(), NginxState::Running);
}

#[test]
fn crash_during_reload_fails_the_request_and_restarts() {
    let mut sim = Sim::running(false);
    sim.on(Event::ReloadRequested { ticket: 4 });
    sim.on(Event::ConfigTested(Ok(())));
    let actions = sim.crash();
    assert_eq!(actions[0], Action::ReapGeneration);
    assert!(
        matches!(&actions[1], Action::ReloadFinished { result: Err(CommandError::NginxExited(e)), .. } if e.contains("killed by signal 9"))
    );
    assert_eq!(sim.state(), NginxState::Restarting);
    assert_eq!(sim.policy.next_deadline(), Some(sim.now));
}

#[test]
fn a_fixed_config_ends_a_crash_loop_at_once() {
    let mut sim = Sim::running(false);
    for _ in 0..6 {
        sim.crash();
        sim.fire();
        sim.spawned();
    }
    sim.crash();
    assert_eq!(sim.state(), NginxState::Failed);
    assert!(sim.policy.next_deadline().unwrap() > sim.now + Duration::from_secs(5));
    assert_eq!(sim.on(Event::ConfigChanged), vec![Action::TestConfig]);
    assert_eq!(sim.on(Event::ConfigTested(Ok(()))), vec![Action::Spawn]);
    assert_eq!(sim.policy.next_deadline(), None, "the backoff wait is cancelled");
}

#[test]
fn worker_deaths_are_counted_not_crashes() {
    let mut sim = Sim::running(false);
    assert_eq!(sim.on(Event::WorkerExited), vec![]);
    assert_eq!(sim.policy.status().worker_exits, 1);
    assert_eq!(sim.state(), NginxState::Running);
}

#[test]
fn adoption_is_running_without_a_restart() {
    let mut sim = Sim::new(false);
    assert_eq!(sim.on(Event::Adopted { generation: 1 }), vec![Action::Health(Health::Healthy)]);
    assert_eq!(sim.state(), NginxState::Running);
    assert_eq!(sim.policy.status().restarts, 0);
}

#[test]
fn shutdown_stops_nginx_and_never_restarts_it() {
    let mut sim = Sim::running(false);
    sim.on(Event::ReloadRequested { ticket: 9 });
    let actions = sim.on(Event::Shutdown);
    assert_eq!(actions[1], Action::Signal { generation: 1, signal: MasterSignal::Quit });
    assert_eq!(actions[2], Action::Health(Health::Unhealthy), "unhealthy from the moment we stop");
    assert!(matches!(&actions[0], Action::ReloadFinished { tickets, result: Err(_) } if tickets == &[9]));
    assert_eq!(sim.crash(), vec![Action::ReapGeneration]);
    assert_eq!(sim.state(), NginxState::Stopped);
    assert_eq!(sim.policy.next_deadline(), None);
    assert_eq!(sim.on(Event::ConfigChanged), vec![]);
}

#[test]
fn own_config_rejection_is_reported() {
    let mut sim = Sim::running(false);
    let actions = sim.on(Event::OwnConfigRejected { ticket: 5, error: "x.toml:3:1: unknown field".into() });
    assert!(matches!(&actions[..], [Action::ReloadFinished { tickets, result: Err(_) }] if tickets == &[5]));
    assert_eq!(sim.policy.status().config_error.as_deref(), Some("x.toml:3:1: unknown field"));
}

#[test]
fn backoff_values() {
    assert_eq!(backoff(0), Duration::ZERO);
    assert_eq!(backoff(1), Duration::ZERO, "the first crash in a row restarts at once");
    assert_eq!(backoff(2), Duration::ZERO, "and the second");
    assert_eq!(backoff(3), Duration::from_millis(400), "the third waits past the default 300 ms grace");
    assert_eq!(backoff(4), Duration::from_millis(800));
    assert_eq!(backoff(10), Duration::from_secs(30));
    assert_eq!(backoff(u32::MAX), Duration::from_secs(30));
}

const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const TERM: MasterSignal = MasterSignal::Term { ignored_quit_for: STOP_TIMEOUT };

fn config(probes: bool, fall: u32, reload_timeout: Duration) -> PolicyConfig {
    PolicyConfig { fall, rise: 2, probes, reload_timeout, stop_timeout: STOP_TIMEOUT }
}

#[test]
fn reconfigured_without_probes_health_is_liveness_at_once() {
    let mut sim = Sim::running(true);
    sim.on(Event::Probe { ok: true });
    sim.on(Event::Probe { ok: true });
    sim.on(Event::Probe { ok: false });
    sim.on(Event::Probe { ok: false });
    assert!(!sim.policy.status().healthy);
    let reconfigured = sim.on(Event::Reconfigured(config(false, 2, Duration::from_secs(10))));
    assert_eq!(reconfigured, vec![Action::Health(Health::Healthy)]);
    assert!(!sim.policy.wants_probes());
}

#[test]
fn reconfigured_with_new_probes_keeps_health_until_fall_failures_counted_afresh() {
    let mut sim = Sim::running(false);
    assert!(sim.policy.status().healthy);
    assert_eq!(sim.on(Event::Reconfigured(config(true, 3, Duration::from_secs(10)))), vec![]);
    assert!(sim.policy.wants_probes());
    assert_eq!(sim.on(Event::Probe { ok: false }), vec![]);
    assert_eq!(sim.on(Event::Probe { ok: false }), vec![], "the new fall (3), not the old (2)");
    assert_eq!(sim.on(Event::Probe { ok: false }), vec![Action::Health(Health::Unhealthy)]);
}

#[test]
fn reconfigured_reload_timeout_applies_to_the_next_reload() {
    let mut sim = Sim::running(false);
    sim.on(Event::Reconfigured(config(false, 2, Duration::from_millis(300))));
    sim.on(Event::ReloadRequested { ticket: 1 });
    let start = sim.now;
    assert_eq!(sim.on(Event::ConfigTested(Ok(()))), vec![Action::SignalReload]);
    let actions = sim.fire();
    assert_eq!(sim.now - start, Duration::from_millis(300));
    assert!(
        matches!(&actions[..], [Action::ReloadFinished { result: Err(e @ CommandError::NoNewWorkers(_)), .. }] if e.to_string().contains("within 300 ms")),
        "{actions:?}"
    );
}

// Restart in place (issue 7 part 1): a crash after serving keeps the VIPs through the restart.

/// Running and healthy for `served`, then killed.
fn crashed_after(probes: bool, served: Duration) -> (Sim, Vec<Action>) {
    let mut sim = Sim::running(probes);
    if probes {
        sim.on(Event::Probe { ok: true });
        sim.on(Event::Probe { ok: true });
        assert!(sim.policy.status().healthy);
    }
    sim.advance(served);
    let actions = sim.crash();
    (sim, actions)
}

#[test]
fn a_crash_after_3s_of_serving_restarts_at_once_and_reports_restarting() {
    let (mut sim, actions) = crashed_after(false, BACKOFF_RESET_AFTER);
    assert_eq!(actions, vec![Action::ReapGeneration, Action::Health(RESTART_AT_ONCE)]);
    assert_eq!(sim.policy.health(), RESTART_AT_ONCE);
    assert_eq!(sim.state(), NginxState::Restarting);
    assert_eq!(sim.policy.next_deadline(), Some(sim.now), "no backoff: the restart is immediate");
    assert_eq!(sim.fire(), vec![Action::Spawn]);
    assert_eq!(sim.spawned(), vec![], "a master without workers: still restarting");
    assert_eq!(sim.policy.health(), RESTART_AT_ONCE);
    assert_eq!(sim.on(Event::Ready), vec![Action::Health(Health::Healthy)]);
    assert_eq!(sim.policy.status().restarts, 1);
}

/// Whether a VRRP router (or anycast table) with the default 300 ms grace keeps its VIPs.
fn kept_with_the_default_grace(actions: &[Action]) -> bool {
    let grace = Duration::from_millis(300);
    actions.iter().any(|action| matches!(action, Action::Health(health) if health.restarts_within(grace)))
}

#[test]
fn the_first_crash_2s_after_a_start_restarts_in_place_at_once_never_unhealthy() {
    let (mut sim, actions) = crashed_after(false, Duration::from_secs(2));
    assert_eq!(actions, vec![Action::ReapGeneration, Action::Health(RESTART_AT_ONCE)]);
    assert!(kept_with_the_default_grace(&actions));
    assert_eq!(sim.policy.next_deadline(), Some(sim.now), "no backoff for the first crash");
    assert_eq!(sim.fire(), vec![Action::Spawn]);
    assert_eq!(sim.spawned(), vec![]);
    sim.advance(Duration::from_millis(20));
    assert_eq!(
        sim.on(Event::Ready),
        vec![Action::Health(Health::Healthy)],
        "Restarting, then Healthy: never Unhealthy"
    );
    // The same with probes: no wait for `rise` after an in-place restart.
    let (_, actions) = crashed_after(true, Duration::from_millis(500));
    assert_eq!(actions, vec![Action::ReapGeneration, Action::Health(RESTART_AT_ONCE)]);
}

#[test]
fn the_first_crash_2s_after_an_upgrade_restarts_in_place() {
    let mut sim = Sim::running(false);
    sim.advance(Duration::from_secs(1));
    upgrade(&mut sim, 1);
    sim.on(Event::UpgradeTested(Ok(())));
    let old = sim.generation;
    sim.upgrade_spawned();
    sim.on(Event::NewMasterReady);
    sim.on(Event::StoppedMasterExited { generation: old });
    assert_eq!(sim.state(), NginxState::Running);
    sim.advance(Duration::from_secs(2));
    assert_eq!(sim.crash(), vec![Action::ReapGeneration, Action::Health(RESTART_AT_ONCE)]);
    assert_eq!(sim.policy.next_deadline(), Some(sim.now));
}

#[test]
fn a_crash_loop_restarts_in_place_twice_and_hands_over_at_its_third_crash() {
    // Crashes 1 s after each start (nothing forgiven): restarts at once, at once, after 400 ms.
    // With the default 300 ms grace the first two keep the VIPs, the third does not.
    let mut sim = Sim::running(false);
    let mut kept = Vec::new();
    let mut reported = Vec::new();
    for _ in 0..3 {
        sim.advance(Duration::from_secs(1));
        let actions = sim.crash();
        kept.push(kept_with_the_default_grace(&actions));
        reported.extend(actions.into_iter().filter(|action| matches!(action, Action::Health(_))));
        sim.fire();
        sim.spawned();
        sim.on(Event::Ready);
    }
    assert_eq!(kept, [true, true, false]);
    let at = |millis| Action::Health(Health::Restarting { restart_in: Duration::from_millis(millis) });
    assert_eq!(reported, [at(0), at(0), at(400)], "the policy reports the delay; the routers decide");
    // A longer grace (1 s) keeps the VIPs through 800 ms (the fourth) and hands over at the fifth.
    assert!(Health::Restarting { restart_in: backoff(4) }.restarts_within(Duration::from_secs(1)));
    assert!(!Health::Restarting { restart_in: backoff(5) }.restarts_within(Duration::from_secs(1)));
}

#[test]
fn only_a_restart_within_the_grace_keeps_the_vips() {
    let grace = Duration::from_millis(300);
    assert!(RESTART_AT_ONCE.restarts_within(grace));
    assert!(Health::Restarting { restart_in: Duration::from_millis(299) }.restarts_within(grace));
    assert!(!Health::Restarting { restart_in: grace }.restarts_within(grace), "nothing left to start in");
    assert!(!RESTART_AT_ONCE.restarts_within(Duration::ZERO), "no grace: act at once");
    assert!(!Health::Unhealthy.restarts_within(grace));
    assert!(!Health::Healthy.restarts_within(grace), "healthy is no restart");
}

#[test]
fn a_restart_that_exits_before_serving_is_unhealthy_at_once() {
    // The config on disk became invalid, or the port is taken: the new master exits at once.
    let (mut sim, _) = crashed_after(false, Duration::from_secs(60));
    sim.fire();
    sim.spawned();
    let actions = sim.on(Event::MasterExited("exited with status 1: [emerg] unknown directive".into()));
    assert_eq!(actions, vec![Action::ReapGeneration, Action::Health(Health::Unhealthy)]);
    assert_eq!(sim.policy.next_deadline(), Some(sim.now + backoff(2)), "then the crash-loop backoff");
}

#[test]
fn a_restart_whose_spawn_fails_is_unhealthy_at_once() {
    let (mut sim, _) = crashed_after(false, Duration::from_secs(60));
    assert_eq!(sim.fire(), vec![Action::Spawn]);
    assert_eq!(sim.on(Event::SpawnFailed("No such file or directory".into())), vec![Action::Health(Health::Unhealthy)]);
    assert_eq!(sim.state(), NginxState::Restarting);
}

#[test]
fn a_hang_is_unhealthy_not_restarting_and_its_crash_gets_no_grace() {
    let mut sim = Sim::running(true);
    sim.on(Event::Probe { ok: true });
    sim.on(Event::Probe { ok: true });
    sim.advance(Duration::from_secs(30));
    sim.on(Event::Probe { ok: false });
    assert_eq!(sim.on(Event::Probe { ok: false }), vec![Action::Health(Health::Unhealthy)]);
    assert_eq!(sim.state(), NginxState::Running, "alive: not restarted");
    assert_eq!(sim.crash(), vec![Action::ReapGeneration], "it did not serve: no Restarting");
    assert_eq!(sim.policy.health(), Health::Unhealthy);
    assert_eq!(sim.policy.next_deadline(), Some(sim.now), "the first crash in a row");
}

#[test]
fn with_probes_an_in_place_restart_is_healthy_on_ready_and_a_later_hang_is_still_seen() {
    let (mut sim, actions) = crashed_after(true, Duration::from_secs(10));
    assert_eq!(actions, vec![Action::ReapGeneration, Action::Health(RESTART_AT_ONCE)]);
    assert!(!sim.policy.wants_probes());
    sim.fire();
    sim.spawned();
    assert_eq!(sim.on(Event::Ready), vec![Action::Health(Health::Healthy)], "no wait for `rise` probes");
    assert!(sim.policy.wants_probes(), "the probes go on");
    assert_eq!(sim.on(Event::Probe { ok: false }), vec![]);
    assert_eq!(sim.on(Event::Probe { ok: false }), vec![Action::Health(Health::Unhealthy)], "fall still applies");
}

#[test]
fn shutdown_while_restarting_is_unhealthy() {
    let (mut sim, _) = crashed_after(false, Duration::from_secs(10));
    let actions = sim.on(Event::Shutdown);
    assert_eq!(actions, vec![Action::Health(Health::Unhealthy)]);
    assert_eq!(sim.state(), NginxState::Stopped);
    assert_eq!(sim.policy.next_deadline(), None);
}

// Live binary upgrade (issue 7 part 4).

fn upgrade(sim: &mut Sim, ticket: u64) {
    assert_eq!(sim.on(Event::UpgradeRequested { ticket: Some(ticket) }), vec![Action::TestUpgrade]);
    assert_eq!(sim.state(), NginxState::Upgrading);
}

#[test]
fn an_upgrade_tests_starts_the_new_master_retires_the_old_and_is_no_restart() {
    let mut sim = Sim::running(false);
    upgrade(&mut sim, 1);
    assert_eq!(sim.on(Event::UpgradeTested(Ok(()))), vec![Action::SpawnUpgrade]);
    assert_eq!(sim.upgrade_spawned(), 2);
    assert_eq!(sim.policy.next_deadline(), Some(sim.now + Duration::from_secs(10)), "reload_timeout");
    assert_eq!(
        sim.on(Event::NewMasterReady),
        vec![
            Action::RetireOldMaster,
            Action::Signal { generation: 1, signal: MasterSignal::StopWorkers },
            Action::Signal { generation: 1, signal: MasterSignal::Quit },
        ]
    );
    assert_eq!(sim.policy.next_deadline(), Some(sim.now + STOP_TIMEOUT), "TERM unless it quits first");
    assert!(sim.policy.status().healthy, "healthy all along");
    assert_eq!(
        sim.on(Event::StoppedMasterExited { generation: 1 }),
        vec![Action::UpgradeFinished { tickets: vec![1], result: Ok(()) }]
    );
    assert_eq!(sim.policy.next_deadline(), None, "no TERM for a master that is gone");
    assert_eq!(sim.state(), NginxState::Running);
    assert_eq!(sim.policy.status().restarts, 0);
}

#[test]
fn an_upgrade_whose_binary_fails_its_test_is_refused() {
    let mut sim = Sim::running(false);
    upgrade(&mut sim, 2);
    let actions = sim.on(Event::UpgradeTested(Err("exit status 1".into())));
    assert!(
        matches!(&actions[..], [Action::UpgradeFinished { tickets, result: Err(CommandError::NewBinaryRejected(e)) }] if tickets == &[2] && e.contains("exit status 1")),
        "{actions:?}"
    );
    assert_eq!(sim.state(), NginxState::Running);
    assert_eq!(sim.policy.next_deadline(), None);
}

#[test]
fn a_new_master_that_does_not_serve_in_time_is_rolled_back() {
    let mut sim = Sim::running(false);
    upgrade(&mut sim, 3);
    sim.on(Event::UpgradeTested(Ok(())));
    let new = sim.upgrade_spawned();
    let actions = sim.fire();
    assert_eq!(actions[..2], [Action::AbortUpgrade, Action::Signal { generation: new, signal: MasterSignal::Quit }]);
    assert!(
        matches!(&actions[2..], [Action::UpgradeFinished { tickets, result: Err(CommandError::NewMasterTooSlow(_)) }] if tickets == &[3]),
        "{actions:?}"
    );
    assert_eq!(sim.state(), NginxState::Running);
    assert!(sim.policy.status().healthy);
    assert_eq!(sim.on(Event::NewMasterReady), vec![], "too late: ignored");
}

#[test]
fn a_new_master_that_exits_or_cannot_start_is_rolled_back() {
    let mut sim = Sim::running(false);
    upgrade(&mut sim, 4);
    sim.on(Event::UpgradeTested(Ok(())));
    sim.upgrade_spawned();
    let actions = sim.on(Event::NewMasterExited("exited with status 1".into()));
    assert_eq!(actions[0], Action::AbortUpgrade, "gone already: no signal");
    assert!(matches!(&actions[1..], [Action::UpgradeFinished { result: Err(CommandError::NewMasterExited(_)), .. }]));
    upgrade(&mut sim, 5);
    sim.on(Event::UpgradeTested(Ok(())));
    let actions = sim.on(Event::UpgradeSpawnFailed("Permission denied".into()));
    assert!(
        matches!(&actions[..], [Action::UpgradeFinished { result: Err(CommandError::NewBinaryNotStarted(e)), .. }] if e.contains("Permission denied"))
    );
    assert_eq!(sim.state(), NginxState::Running);
    assert_eq!(sim.policy.status().restarts, 0);
}

#[test]
fn an_upgrade_is_refused_while_nginx_is_down_and_waits_for_a_reload() {
    let mut sim = Sim::new(false);
    let actions = sim.on(Event::UpgradeRequested { ticket: Some(6) });
    assert!(matches!(&actions[..], [Action::UpgradeFinished { result: Err(CommandError::NotRunning), .. }]));
    let mut sim = Sim::running(false);
    sim.on(Event::ConfigChanged);
    sim.on(Event::ConfigTested(Ok(())));
    assert_eq!(sim.on(Event::UpgradeRequested { ticket: Some(7) }), vec![], "waits for the reload");
    assert_eq!(sim.state(), NginxState::Reloading);
    assert_eq!(sim.on(Event::ReloadConfirmed), vec![Action::TestUpgrade]);
    assert_eq!(sim.state(), NginxState::Upgrading);
    // A crash before a waiting upgrade began answers it.
    let mut sim = Sim::running(false);
    sim.on(Event::ConfigChanged);
    sim.on(Event::UpgradeRequested { ticket: Some(8) });
    let actions = sim.crash();
    assert!(
        actions.iter().any(|a| matches!(a, Action::UpgradeFinished { tickets, result: Err(_) } if tickets == &[8])),
        "{actions:?}"
    );
}

#[test]
fn config_changes_during_an_upgrade_are_tested_after_it_and_requests_join_it() {
    let mut sim = Sim::running(false);
    assert_eq!(sim.on(Event::UpgradeRequested { ticket: None }), vec![Action::TestUpgrade], "the binary watch");
    assert_eq!(sim.state(), NginxState::Upgrading);
    assert_eq!(sim.on(Event::ConfigChanged), vec![]);
    assert_eq!(sim.on(Event::UpgradeRequested { ticket: Some(8) }), vec![], "joins the upgrade under way");
    sim.on(Event::UpgradeTested(Ok(())));
    sim.upgrade_spawned();
    sim.on(Event::NewMasterReady);
    assert_eq!(
        sim.on(Event::StoppedMasterExited { generation: 1 }),
        vec![Action::UpgradeFinished { tickets: vec![8], result: Ok(()) }, Action::TestConfig]
    );
}

#[test]
fn a_crash_of_the_old_master_during_an_upgrade_aborts_it() {
    let mut sim = Sim::running(false);
    upgrade(&mut sim, 9);
    sim.on(Event::UpgradeTested(Ok(())));
    let new = sim.upgrade_spawned();
    let actions = sim.crash();
    assert_eq!(
        actions[..3],
        [Action::ReapGeneration, Action::AbortUpgrade, Action::Signal { generation: new, signal: MasterSignal::Quit }]
    );
    assert!(matches!(&actions[3], Action::UpgradeFinished { tickets, result: Err(_) } if tickets == &[9]));
    assert_eq!(sim.state(), NginxState::Restarting);
    assert_eq!(sim.on(Event::NewMasterReady), vec![]);
}

#[test]
fn shutdown_during_an_upgrade_aborts_it() {
    let mut sim = Sim::running(false);
    upgrade(&mut sim, 10);
    sim.on(Event::UpgradeTested(Ok(())));
    sim.upgrade_spawned();
    let actions = sim.on(Event::Shutdown);
    assert_eq!(actions[..2], [Action::AbortUpgrade, Action::Signal { generation: 2, signal: MasterSignal::Quit }]);
    assert!(matches!(&actions[2], Action::UpgradeFinished { tickets, result: Err(_) } if tickets == &[10]));
    assert!(actions.contains(&Action::Signal { generation: 1, signal: MasterSignal::Quit }));
}

// The stop escalation: QUIT, TERM after stop_timeout, KILL KILL_AFTER_TERM later.

/// The signals `actions` send, as (generation, signal).
fn signals(actions: &[Action]) -> Vec<(u64, MasterSignal)> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::Signal { generation, signal } => Some((*generation, *signal)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_stop_sends_quit_then_term_after_stop_timeout_then_kill_3s_later() {
    let mut sim = Sim::running(false);
    let stopped_at = sim.now;
    assert_eq!(signals(&sim.on(Event::Shutdown)), [(1, MasterSignal::Quit)]);
    assert_eq!(sim.policy.next_deadline(), Some(stopped_at + STOP_TIMEOUT));
    sim.advance(STOP_TIMEOUT - Duration::from_millis(1));
    assert_eq!(sim.on(Event::Timer), vec![], "early: nothing");
    assert_eq!(signals(&sim.fire()), [(1, TERM)]);
    assert_eq!(sim.now, stopped_at + STOP_TIMEOUT);
    assert_eq!(signals(&sim.fire()), [(1, MasterSignal::Kill)]);
    assert_eq!(sim.now, stopped_at + STOP_TIMEOUT + KILL_AFTER_TERM);
    assert_eq!(sim.policy.next_deadline(), None, "nothing after KILL");
    assert_eq!(sim.crash(), vec![Action::ReapGeneration]);
    assert_eq!(sim.state(), NginxState::Stopped);
}

#[test]
fn nothing_is_sent_once_the_exit_is_reported() {
    // Exit after QUIT.
    let mut sim = Sim::running(false);
    sim.on(Event::Shutdown);
    sim.advance(Duration::from_millis(50));
    assert_eq!(sim.crash(), vec![Action::ReapGeneration]);
    assert_eq!(sim.policy.next_deadline(), None);
    sim.advance(STOP_TIMEOUT + KILL_AFTER_TERM);
    assert_eq!(sim.on(Event::Timer), vec![]);
    // Exit after TERM.
    let mut sim = Sim::running(false);
    sim.on(Event::Shutdown);
    assert_eq!(signals(&sim.fire()), [(1, TERM)]);
    sim.crash();
    assert_eq!(sim.policy.next_deadline(), None, "no KILL");
    // A stop once asked for is not started again.
    let mut sim = Sim::running(false);
    sim.on(Event::Shutdown);
    assert_eq!(sim.on(Event::Shutdown), vec![]);
}

#[test]
fn a_stop_keeps_the_stop_timeout_it_was_given() {
    let mut sim = Sim::running(false);
    sim.on(Event::UpgradeRequested { ticket: None });
    sim.on(Event::UpgradeTested(Ok(())));
    sim.upgrade_spawned();
    let retired_at = sim.now;
    sim.on(Event::NewMasterReady);
    sim.on(Event::Reconfigured(PolicyConfig {
        stop_timeout: Duration::from_secs(1),
        ..config(false, 2, STOP_TIMEOUT)
    }));
    assert_eq!(signals(&sim.fire()), [(1, TERM)]);
    assert_eq!(sim.now, retired_at + STOP_TIMEOUT);
}

#[test]
fn several_generations_escalate_each_on_its_own_clock() {
    // upgrade-nginx: the old master (1) retires; later a second upgrade is rolled back (3)
    // while 1 still finishes its requests; then a shutdown stops the master (2).
    let mut sim = Sim::running(false);
    sim.on(Event::UpgradeRequested { ticket: Some(1) });
    sim.on(Event::UpgradeTested(Ok(())));
    assert_eq!(sim.upgrade_spawned(), 2);
    let retired_at = sim.now;
    assert_eq!(signals(&sim.on(Event::NewMasterReady)), [(1, MasterSignal::StopWorkers), (1, MasterSignal::Quit)]);
    // The old master quits in time: the upgrade is done, it gets nothing more.
    sim.advance(Duration::from_secs(4));
    assert!(matches!(
        &sim.on(Event::StoppedMasterExited { generation: 1 })[..],
        [Action::UpgradeFinished { result: Ok(()), .. }]
    ));
    // A new master that is too slow is rolled back: QUIT to it alone.
    sim.on(Event::UpgradeRequested { ticket: Some(2) });
    sim.on(Event::UpgradeTested(Ok(())));
    assert_eq!(sim.upgrade_spawned(), 3);
    let aborted = sim.fire();
    let aborted_at = sim.now;
    assert_eq!(signals(&aborted), [(3, MasterSignal::Quit)]);
    assert_eq!(aborted_at, retired_at + Duration::from_secs(4) + Duration::from_secs(10), "reload_timeout");
    // The shutdown comes 2 s later: QUIT to the master, while 3 still has its own deadline.
    sim.advance(Duration::from_secs(2));
    let shutdown_at = sim.now;
    assert_eq!(signals(&sim.on(Event::Shutdown)), [(2, MasterSignal::Quit)]);
    assert_eq!(signals(&sim.fire()), [(3, TERM)]);
    assert_eq!(sim.now, aborted_at + STOP_TIMEOUT);
    assert_eq!(signals(&sim.fire()), [(2, TERM)]);
    assert_eq!(sim.now, shutdown_at + STOP_TIMEOUT);
    // 3 exits after its TERM: no KILL for it; 2 gets its KILL on time.
    assert_eq!(sim.on(Event::StoppedMasterExited { generation: 3 }), vec![]);
    assert_eq!(signals(&sim.fire()), [(2, MasterSignal::Kill)]);
    assert_eq!(sim.now, shutdown_at + STOP_TIMEOUT + KILL_AFTER_TERM);
    assert_eq!(sim.policy.next_deadline(), None);
    assert_eq!(sim.crash(), vec![Action::ReapGeneration]);
    assert_eq!(sim.state(), NginxState::Stopped);
}

#[test]
fn a_master_that_ignores_quit_while_retiring_is_killed_and_the_upgrade_completes_on_its_exit() {
    let mut sim = Sim::running(false);
    sim.on(Event::UpgradeRequested { ticket: Some(1) });
    sim.on(Event::UpgradeTested(Ok(())));
    sim.upgrade_spawned();
    sim.on(Event::NewMasterReady);
    assert_eq!(signals(&sim.fire()), [(1, TERM)]);
    assert_eq!(signals(&sim.fire()), [(1, MasterSignal::Kill)]);
    assert_eq!(sim.state(), NginxState::Upgrading, "until its exit is reported");
    assert!(matches!(
        &sim.on(Event::StoppedMasterExited { generation: 1 })[..],
        [Action::UpgradeFinished { result: Ok(()), .. }]
    ));
    assert_eq!(sim.state(), NginxState::Running);
}
