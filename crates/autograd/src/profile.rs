//! An op-level wall-clock profile of forward and backward, for finding what a training step
//! spends its time on (`trainer bench-step --profile`).
//!
//! Off by default; [`enable`] turns it on for the calling thread. Backward time is measured around
//! each node's closure. Forward time is the time since the previous op was recorded on this thread,
//! charged to the op being recorded (ops compute their output just before they record it), so glue
//! code between ops is charged to the next op; ops computed without a tape (constants) are not
//! seen. The numbers are wall time on the recording thread, which is where rayon's parallel loops
//! return to, so they add up to the step time.
//!
//! ```
//! use autograd::{profile, Tape};
//! use tensor::Tensor;
//! profile::enable();
//! let tape = Tape::new();
//! let x = tape.leaf(Tensor::from_vec(vec![1.0f32, 2.0], [2]).unwrap());
//! let y = x.mul(&x).unwrap().sum_all().unwrap();
//! tape.backward(&y).unwrap();
//! let rows = profile::take();
//! assert!(rows.iter().any(|r| r.op == "mul" && r.forward_calls == 1 && r.backward_calls == 1));
//! ```

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Accumulated time of one op name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OpTime {
    pub op: &'static str,
    pub forward: Duration,
    pub forward_calls: u64,
    pub backward: Duration,
    pub backward_calls: u64,
}

#[derive(Default)]
struct State {
    on: bool,
    last: Option<Instant>,
    ops: HashMap<&'static str, OpTime>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

/// Start profiling on this thread (clears what was collected).
pub fn enable() {
    STATE.with(|s| *s.borrow_mut() = State { on: true, last: Some(Instant::now()), ops: HashMap::new() });
}

/// Stop profiling on this thread and return what was collected, slowest (forward + backward) first.
pub fn take() -> Vec<OpTime> {
    let ops = STATE.with(|s| std::mem::take(&mut *s.borrow_mut()).ops);
    let mut rows: Vec<OpTime> = ops.into_values().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.forward + r.backward));
    rows
}

/// Restart the forward clock (call at the start of a step so setup time is not charged).
pub fn mark() {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        if s.on {
            s.last = Some(Instant::now());
        }
    });
}

pub(crate) fn is_on() -> bool {
    STATE.with(|s| s.borrow().on)
}

/// Charge the time since the last record to `op`'s forward.
pub(crate) fn forward(op: &'static str) {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        if !s.on {
            return;
        }
        let now = Instant::now();
        let dt = s.last.map_or(Duration::ZERO, |l| now - l);
        s.last = Some(now);
        let e = s.ops.entry(op).or_insert_with(|| OpTime { op, ..OpTime::default() });
        e.forward += dt;
        e.forward_calls += 1;
    });
}

/// Charge `dt` to `op`'s backward.
pub(crate) fn backward(op: &'static str, dt: Duration) {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        if !s.on {
            return;
        }
        let e = s.ops.entry(op).or_insert_with(|| OpTime { op, ..OpTime::default() });
        e.backward += dt;
        e.backward_calls += 1;
        s.last = Some(Instant::now());
    });
}
