//! The emulator's execution model: a launch runs its blocks one after another on each OS thread
//! (blocks are spread over the rayon pool), and a block runs as one fiber (a `corosensei`
//! coroutine on its own stack) per CUDA thread. A fiber runs the kernel's C++ body until it waits
//! at `__syncthreads` or a warp collective (shuffle, ballot, `__syncwarp`, mma), then the next
//! ready fiber runs; a barrier releases its waiters once every live thread of the block (or warp)
//! has arrived, as on a GPU where exited threads no longer count. A block whose live threads all
//! wait and can never be released (a `__syncthreads` in divergent code, a warp split between a
//! shuffle and a block barrier) is reported as a deadlock instead of hanging.
//!
//! Which ready fiber runs next is the [`Order`]: round robin in thread order (the default), or
//! always the lowest (highest) numbered ready thread, which runs each warp as far as it can get
//! before the next one moves. A kernel whose result depends on the order (a missing
//! `__syncthreads` between a shared-memory write and another warp's read) gives a different
//! result under one of them, so the tests run under all three (`QLORA_CUDA_EMULATOR=1`, `lowest`,
//! `highest`).
//!
//! Warp collectives exchange through per-warp slots, double-buffered by a per-lane parity that
//! flips at every collective: a lane cannot reach collective i + 2 before every lane has read
//! collective i, so one wait per collective suffices.

use corosensei::stack::DefaultStack;
use corosensei::{Coroutine, CoroutineResult, Yielder};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, VecDeque};
use std::ffi::c_void;

/// CUDA's `uint3` (kernels/emu/cuda_emu.h).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct U3 {
    pub x: u32,
    pub y: u32,
    pub z: u32,
}

impl From<(u32, u32, u32)> for U3 {
    fn from((x, y, z): (u32, u32, u32)) -> Self {
        Self { x, y, z }
    }
}

/// The running fiber's indices, `QloraEmuIdx` on the C++ side (same layout).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct Idx {
    thread: U3,
    block: U3,
    block_dim: U3,
    grid_dim: U3,
    lane: u32,
    _pad: u32,
}

/// What a suspended fiber waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    Block,
    Warp,
}

/// Words one lane deposits at a collective: a shuffle uses two, an mma ten (a 4, b 2, c 4), and
/// the last one is the lane's collective count (`GEN`), so a ballot counts only the lanes that
/// voted in this collective (an exited lane's slot holds an older count).
const SLOT_WORDS: usize = 11;
const GEN: usize = SLOT_WORDS - 1;

/// One warp's exchange slots, two by parity.
#[derive(Clone, Copy)]
struct WarpSlots {
    slots: [[[u32; SLOT_WORDS]; 32]; 2],
}

struct Fiber {
    idx: Idx,
    warp: usize,
    parity: usize,
    /// Collectives this thread has taken part in.
    gen: u32,
    yielder: *const Yielder<(), Wait>,
}

// The state the kernel's calls reach while a block runs on this thread.
thread_local! {
    static CURRENT: Cell<*mut Fiber> = const { Cell::new(std::ptr::null_mut()) };
    static SLOTS: Cell<*mut WarpSlots> = const { Cell::new(std::ptr::null_mut()) };
    /// Fiber stacks kept for the next launch on this thread (allocating one is an mmap).
    static STACKS: RefCell<Vec<DefaultStack>> = const { RefCell::new(Vec::new()) };
}

/// Bytes of stack per fiber: kernels keep register tiles (attention's query rows) as locals.
const STACK_BYTES: usize = 256 * 1024;

fn current() -> *mut Fiber {
    CURRENT.with(|c| c.get())
}

/// Suspends the running fiber until its barrier releases.
///
/// # Safety
/// Called from kernel code running inside a fiber of [`run_block`].
unsafe fn wait(f: *mut Fiber, w: Wait) {
    // SAFETY: the fiber's yielder was set when it started and lives as long as its coroutine.
    unsafe { (*(*f).yielder).suspend(w) }
}

/// Deposits `words` for this lane, waits for the warp, and returns lane `src`'s deposit.
///
/// # Safety
/// Called from kernel code running inside a fiber of [`run_block`].
unsafe fn exchange(words: &[u32], src: usize) -> [u32; SLOT_WORDS] {
    let f = current();
    let slots = SLOTS.with(|s| s.get());
    // SAFETY: both pointers are set by `run_block` for the fiber now running; fibers of one block
    // run one at a time on this thread, so nothing else touches the slots during this call.
    unsafe {
        let (w, p, lane) = ((*f).warp, (*f).parity, (*f).idx.lane as usize);
        let slot = &mut (*slots.add(w)).slots[p][lane];
        slot[..words.len()].copy_from_slice(words);
        (*f).gen = (*f).gen.wrapping_add(1);
        slot[GEN] = (*f).gen;
        wait(f, Wait::Warp);
        (*f).parity ^= 1;
        (*slots.add(w)).slots[p][src & 31]
    }
}

#[unsafe(no_mangle)]
extern "C" fn qlora_emu_syncthreads() {
    // SAFETY: only kernel code calls this, inside a running fiber.
    unsafe { wait(current(), Wait::Block) }
}

#[unsafe(no_mangle)]
extern "C" fn qlora_emu_shfl(bits: u64, src: u32) -> u64 {
    // SAFETY: only kernel code calls this, inside a running fiber.
    let got = unsafe { exchange(&[bits as u32, (bits >> 32) as u32], src as usize) };
    got[0] as u64 | (got[1] as u64) << 32
}

#[unsafe(no_mangle)]
extern "C" fn qlora_emu_ballot(pred: i32) -> u32 {
    // SAFETY: only kernel code calls this, inside a running fiber.
    unsafe {
        let _ = exchange(&[(pred != 0) as u32], 0);
        let f = current();
        let ws = &*SLOTS.with(|s| s.get()).add((*f).warp);
        // The deposits of the collective just passed (parity flipped after it), from the lanes
        // that took part in it (lanes that have exited do not vote).
        let (p, gen) = ((*f).parity ^ 1, (*f).gen);
        (0..32).filter(|&l| ws.slots[p][l][GEN] == gen && ws.slots[p][l][0] != 0).fold(0u32, |b, l| b | 1 << l)
    }
}

fn bf16_lo(w: u32) -> f32 {
    f32::from_bits(w << 16)
}
fn bf16_hi(w: u32) -> f32 {
    f32::from_bits(w & 0xffff_0000)
}

/// `mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32` with the fragment layout of the PTX
/// ISA ("Matrix Fragments for mma.m16n8k16 with floating point type"): with `g = lane / 4` and
/// `t = lane % 4`, A's registers hold (row, k) pairs `(g, 2t..2t+1)`, `(g+8, 2t..)`, `(g, 2t+8..)`,
/// `(g+8, 2t+8..)`, low half first; B's hold (k, col) `(2t..2t+1, g)` and `(2t+8.., g)`; C and D
/// hold `(g, 2t..2t+1)` and `(g+8, 2t..2t+1)`. Products of bf16 are exact in f32; the sum runs
/// in k order from c (the tensor core's order is unspecified).
#[unsafe(no_mangle)]
unsafe extern "C" fn qlora_emu_mma_bf16_m16n8k16(c: *mut f32, a: *const u32, b: *const u32) {
    let mut mine = [0u32; SLOT_WORDS];
    // SAFETY: the kernel passes its 4-element a and c and 2-element b register arrays.
    unsafe {
        for i in 0..4 {
            mine[i] = *a.add(i);
            mine[6 + i] = (*c.add(i)).to_bits();
        }
        mine[4] = *b;
        mine[5] = *b.add(1);
    }
    let f = current();
    // SAFETY: the running fiber.
    unsafe {
        (*f).gen = (*f).gen.wrapping_add(1);
        mine[GEN] = (*f).gen;
    }
    let slots = SLOTS.with(|s| s.get());
    // SAFETY: as in `exchange`.
    let (lanes, lane) = unsafe {
        let (w, p, lane) = ((*f).warp, (*f).parity, (*f).idx.lane as usize);
        (*slots.add(w)).slots[p][lane] = mine;
        wait(f, Wait::Warp);
        (*f).parity ^= 1;
        ((*slots.add(w)).slots[p], lane)
    };
    // A (16 x 16) and B (16 x 8) gathered from the 32 lanes.
    let mut am = [[0f32; 16]; 16];
    let mut bm = [[0f32; 8]; 16];
    for (l, s) in lanes.iter().enumerate() {
        let (g, t) = (l / 4, l % 4);
        for (reg, (row, col)) in
            [(g, 2 * t), (g + 8, 2 * t), (g, 2 * t + 8), (g + 8, 2 * t + 8)].into_iter().enumerate()
        {
            am[row][col] = bf16_lo(s[reg]);
            am[row][col + 1] = bf16_hi(s[reg]);
        }
        for (reg, k) in [2 * t, 2 * t + 8].into_iter().enumerate() {
            bm[k][g] = bf16_lo(s[4 + reg]);
            bm[k + 1][g] = bf16_hi(s[4 + reg]);
        }
    }
    let (g, t) = (lane / 4, lane % 4);
    for (e, (row, col)) in [(g, 2 * t), (g, 2 * t + 1), (g + 8, 2 * t), (g + 8, 2 * t + 1)].into_iter().enumerate() {
        let mut acc = f32::from_bits(mine[6 + e]);
        for k in 0..16 {
            acc += am[row][k] * bm[k][col];
        }
        // SAFETY: c has four elements.
        unsafe { *c.add(e) = acc };
    }
}

/// One kernel entry point: the generated wrapper that calls the kernel with `*params`.
pub(super) type KernelFn = unsafe extern "C" fn(*const c_void);

unsafe extern "C" {
    /// Sets the C++ side's thread-local pointer to the running fiber's indices (what
    /// `threadIdx` and friends read without a call into Rust).
    fn qlora_emu_set_cur(idx: *const Idx);
}

/// A block's bookkeeping, kept across the blocks one rayon job runs (no allocation per block).
struct Scratch {
    fibers: Vec<Fiber>,
    slots: Vec<WarpSlots>,
    coros: Vec<Option<Coroutine<(), Wait, ()>>>,
    /// Ready fibers in arrival order (round robin).
    fifo: VecDeque<usize>,
    /// Ready fibers by (key, thread), the key the thread number (lowest first) or its
    /// complement (highest first).
    ranked: BTreeSet<(usize, usize)>,
    at_block: Vec<usize>,
    at_warp: Vec<Vec<usize>>,
    warp_live: Vec<usize>,
    /// Fiber stacks, taken from [`STACKS`] for the job and handed back when it ends.
    stacks: Vec<DefaultStack>,
}

/// Which ready fiber of a block runs next (module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Order {
    /// Round robin in thread order: every fiber runs until it waits, then the next.
    RoundRobin,
    /// The lowest-numbered ready thread first.
    Lowest,
    /// The highest-numbered ready thread first.
    Highest,
}

impl Scratch {
    fn make_ready(&mut self, t: usize, order: Order) {
        match order {
            Order::RoundRobin => self.fifo.push_back(t),
            Order::Lowest => _ = self.ranked.insert((t, t)),
            Order::Highest => _ = self.ranked.insert((usize::MAX - t, t)),
        }
    }

    fn next_ready(&mut self) -> Option<usize> {
        self.fifo.pop_front().or_else(|| self.ranked.pop_first().map(|(_, t)| t))
    }

    fn empty() -> Self {
        Self {
            fibers: Vec::new(),
            slots: Vec::new(),
            coros: Vec::new(),
            fifo: VecDeque::new(),
            ranked: BTreeSet::new(),
            at_block: Vec::new(),
            at_warp: Vec::new(),
            warp_live: Vec::new(),
            stacks: Vec::new(),
        }
    }
    fn new() -> Self {
        let mut sc = Self::empty();
        sc.stacks = STACKS.with(|s| std::mem::take(&mut *s.borrow_mut()));
        sc
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let stacks = std::mem::take(&mut self.stacks);
        STACKS.with(|s| s.borrow_mut().extend(stacks));
    }
}

/// Runs block `block` of a launch to completion: one fiber per thread.
///
/// # Safety
/// `params` points at the kernel's parameter struct, whose pointers are live emulated buffers.
unsafe fn run_block(
    sc: &mut Scratch,
    call: KernelFn,
    params: usize,
    (block, grid, dim): (U3, U3, U3),
    order: Order,
) -> Result<(), String> {
    let n = (dim.x * dim.y * dim.z) as usize;
    let warps = n.div_ceil(32);
    sc.fibers.clear();
    sc.fibers.extend((0..n as u32).map(|t| Fiber {
        idx: Idx {
            thread: U3 { x: t % dim.x, y: (t / dim.x) % dim.y, z: t / (dim.x * dim.y) },
            block,
            block_dim: dim,
            grid_dim: grid,
            lane: t % 32,
            _pad: 0,
        },
        warp: t as usize / 32,
        parity: 0,
        gen: 0,
        yielder: std::ptr::null(),
    }));
    // Slots are always written before they are read, and the collective counts start again at
    // 0 with the fibers: clear the old counts so no stale slot matches a ballot.
    sc.slots.resize(warps, WarpSlots { slots: [[[0; SLOT_WORDS]; 32]; 2] });
    for ws in sc.slots.iter_mut() {
        ws.slots.iter_mut().flatten().for_each(|slot| slot[GEN] = 0);
    }
    // Every access below goes through these two pointers (the fibers hold them too).
    let fptr = sc.fibers.as_mut_ptr();
    let sptr = sc.slots.as_mut_ptr();
    sc.coros.clear();
    for t in 0..n {
        let stack = match sc.stacks.pop() {
            Some(s) => s,
            None => DefaultStack::new(STACK_BYTES).map_err(|e| format!("fiber stack: {e}"))?,
        };
        // SAFETY: t < n = fibers.len().
        let fp = unsafe { fptr.add(t) };
        let co = Coroutine::with_stack(stack, move |y: &Yielder<(), Wait>, ()| {
            // SAFETY: `fp` outlives the coroutine (the fibers are rebuilt only after every
            // coroutine of the block has finished), and `params` is the caller's parameter
            // struct, alive for the whole launch.
            unsafe {
                (*fp).yielder = y;
                call(params as *const c_void);
            }
        });
        sc.coros.push(Some(co));
    }
    SLOTS.with(|s| s.set(sptr));
    sc.fifo.clear();
    sc.ranked.clear();
    for t in 0..n {
        sc.make_ready(t, order);
    }
    sc.at_block.clear();
    sc.at_warp.iter_mut().for_each(Vec::clear);
    sc.at_warp.resize(warps, Vec::new());
    sc.warp_live.clear();
    sc.warp_live.extend((0..warps).map(|w| (n - 32 * w).min(32)));
    let mut live = n;
    while let Some(t) = sc.next_ready() {
        let w = t / 32;
        // SAFETY: t < n.
        unsafe {
            CURRENT.with(|c| c.set(fptr.add(t)));
            qlora_emu_set_cur(&(*fptr.add(t)).idx);
        }
        let Some(co) = sc.coros[t].as_mut() else { continue };
        match co.resume(()) {
            CoroutineResult::Yield(Wait::Block) => sc.at_block.push(t),
            CoroutineResult::Yield(Wait::Warp) => sc.at_warp[w].push(t),
            CoroutineResult::Return(()) => {
                live -= 1;
                sc.warp_live[w] -= 1;
                if let Some(done) = sc.coros[t].take() {
                    sc.stacks.push(done.into_stack());
                }
            }
        }
        if !sc.at_warp[w].is_empty() && sc.at_warp[w].len() == sc.warp_live[w] {
            let released = std::mem::take(&mut sc.at_warp[w]);
            for &r in &released {
                sc.make_ready(r, order);
            }
            sc.at_warp[w] = released;
            sc.at_warp[w].clear();
        }
        if !sc.at_block.is_empty() && sc.at_block.len() == live {
            let released = std::mem::take(&mut sc.at_block);
            for &r in &released {
                sc.make_ready(r, order);
            }
            sc.at_block = released;
            sc.at_block.clear();
        }
    }
    CURRENT.with(|c| c.set(std::ptr::null_mut()));
    SLOTS.with(|s| s.set(std::ptr::null_mut()));
    // SAFETY: clears the C++ side's pointer.
    unsafe { qlora_emu_set_cur(std::ptr::null()) };
    if live > 0 {
        let at_warps: usize = sc.at_warp.iter().map(Vec::len).sum();
        // The waiting fibers' stacks hold C++ frames that cannot be unwound: leak them, and the
        // fibers they point at.
        std::mem::forget(std::mem::take(&mut sc.coros));
        std::mem::forget(std::mem::take(&mut sc.fibers));
        return Err(format!(
            "deadlock in block ({}, {}, {}): {} threads wait at __syncthreads and {at_warps} at a warp \
             collective that can never complete (a barrier in divergent code)",
            block.x,
            block.y,
            block.z,
            sc.at_block.len()
        ));
    }
    Ok(())
}

/// Runs a whole grid: blocks spread over the rayon pool, each block on one thread, its fibers
/// scheduled in `order`.
///
/// # Safety
/// `params` points at `call`'s parameter struct, whose pointers are live emulated buffers large
/// enough for every access the kernel makes with this grid.
pub(super) unsafe fn launch(
    call: KernelFn,
    params: *const c_void,
    grid: U3,
    block: U3,
    order: Order,
) -> Result<(), String> {
    use rayon::prelude::*;
    let threads = block.x as u64 * block.y as u64 * block.z as u64;
    if threads == 0 || threads > 1024 || block.z > 64 {
        return Err(format!("invalid block ({}, {}, {}): CUDA allows 1 to 1024 threads", block.x, block.y, block.z));
    }
    if grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65_535 || grid.z > 65_535 {
        return Err(format!("invalid grid ({}, {}, {})", grid.x, grid.y, grid.z));
    }
    let blocks = grid.x as usize * grid.y as usize * grid.z as usize;
    let params = params as usize; // to cross threads; the caller keeps the struct alive
    (0..blocks).into_par_iter().with_min_len(8).try_for_each_init(Scratch::new, |sc, b| {
        let (gx, gy) = (grid.x as usize, grid.y as usize);
        let id = U3 { x: (b % gx) as u32, y: ((b / gx) % gy) as u32, z: (b / (gx * gy)) as u32 };
        // SAFETY: the caller's contract.
        unsafe { run_block(sc, call, params, (id, grid, block), order) }
    })
}
