//! What lxgate tells systemd (sd-notify crate): READY=1, STOPPING=1 and the watchdog
//! ping for units with `WatchdogSec=` (nix/contract.toml). Outside systemd
//! ($NOTIFY_SOCKET unset) every call does nothing.

use std::time::Duration;

use sd_notify::NotifyState;

fn send(state: NotifyState<'_>) {
    if let Err(e) = sd_notify::notify(&[state]) {
        tracing::warn!(error = %e, "sd_notify failed: systemd may not see this state change");
    }
}

pub fn ready() {
    send(NotifyState::Ready);
}

pub fn stopping() {
    send(NotifyState::Stopping);
}

/// How often to ping: half the interval systemd asked for (WATCHDOG_USEC), so one late
/// tick does not cost the process its life. None without a watchdog.
pub fn watchdog_period() -> Option<Duration> {
    sd_notify::watchdog_enabled()
        .filter(|d| !d.is_zero())
        .map(|d| d / 2)
}

/// Ping the watchdog from a task on the current runtime. The ping is sent only when
/// the task gets to run, so a runtime whose workers are all stuck (a blocking call
/// that never returns, a deadlock) stops pinging and systemd restarts the unit.
pub fn spawn_watchdog() {
    let Some(period) = watchdog_period() else {
        return;
    };
    tracing::info!(
        every_ms = period.as_millis() as u64,
        "pinging the systemd watchdog"
    );
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            send(NotifyState::Watchdog);
        }
    });
}
