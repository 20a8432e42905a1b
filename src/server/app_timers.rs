//! The application's timers: which are armed, under which wheel key, and which die
//! with which connection. They share the wheel with the connections' deadlines, under
//! an owner of their own.

use super::timer::{Owner, TimerKey, TimerWheel};
use crate::app::handler::Timer;
use slab::Slab;
use std::collections::HashMap;
use std::time::Instant;

#[derive(Default)]
pub(crate) struct AppTimers {
    /// Armed timers; the slab key is the wheel key.
    armed: Slab<Timer>,
    by_timer: HashMap<Timer, usize>,
    /// Timers tied to the connection in a slot, to cancel when it closes.
    by_conn: HashMap<u32, Vec<usize>>,
}

impl AppTimers {
    pub(crate) fn set(&mut self, timer: Timer, at: Instant, wheel: &mut TimerWheel) {
        let index = match self.by_timer.get(&timer) {
            Some(&i) => i,
            None => {
                let i = self.armed.insert(timer);
                self.by_timer.insert(timer, i);
                if let Some(conn) = timer.conn {
                    self.by_conn.entry(conn.key).or_default().push(i);
                }
                i
            }
        };
        match TimerKey::new(Owner::App, index) {
            Some(key) => wheel.schedule(key, at),
            // Over 2^30 armed timers: refuse rather than alias another's key.
            None => self.forget(index),
        }
    }

    pub(crate) fn cancel(&mut self, timer: Timer, wheel: &mut TimerWheel) {
        if let Some(&index) = self.by_timer.get(&timer) {
            if let Some(key) = TimerKey::new(Owner::App, index) {
                wheel.cancel(key);
            }
            self.forget(index);
        }
    }

    /// The timer behind an expired wheel key, now disarmed.
    pub(crate) fn fired(&mut self, index: usize) -> Option<Timer> {
        let timer = self.armed.get(index).copied()?;
        self.forget(index);
        Some(timer)
    }

    /// The connection in slot `key` closed: its timers go with it.
    pub(crate) fn conn_closed(&mut self, key: usize, wheel: &mut TimerWheel) {
        let Some(indices) = self.by_conn.remove(&(key as u32)) else {
            return;
        };
        for index in indices {
            if let Some(timer) = self.armed.get(index).copied() {
                self.cancel(timer, wheel);
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.armed.len()
    }

    fn forget(&mut self, index: usize) {
        let Some(timer) = self.armed.try_remove(index) else {
            return;
        };
        self.by_timer.remove(&timer);
        if let Some(conn) = timer.conn
            && let Some(list) = self.by_conn.get_mut(&conn.key)
        {
            list.retain(|&i| i != index);
            if list.is_empty() {
                self.by_conn.remove(&conn.key);
            }
        }
    }
}
