//! The sidecar server: a producer thread materializes this rank's packs, in stream order, into
//! the free slots of the shared ring (at most `prefetch` batches exist at once); the socket loop
//! hands them to one client at a time and frees the slots it releases.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

use rayon::prelude::*;
use serde_json::{Value, json};

use super::order::{Cursor, PackOrder, RankState, RankStream, resume_cursor};
use super::shm::{memfd, send_with_fd};
use crate::backend::{Backend, TileSpec};
use crate::error::{Error, Result};
use crate::image::decode::DecodeOptions;
use crate::model::tokenizer::TextTokenizer;
use crate::pack::sample_cost::SampleCoster;
use crate::pipeline::pack::{
    IdsDtype, Member, ShardCache, cost_members, group_packs, pack_fields, plan_problem,
    set_pixel_rows, tile_sample,
};
use crate::pipeline::pixels::{PixelForm, SamplePixels, sample_pixels};
use crate::pipeline::plan::{PLAN_TABLE, PlanFile, read_plan_file};
use crate::problems::Problem;
use crate::sink::parquet::{PlanRow, read_plan};

/// Settings of one rank's server.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The plan folder (written by `plan`; `vlmprep serve` plans into it first).
    pub plan_dir: PathBuf,
    /// Unix socket path to listen on (a stale file there is replaced).
    pub socket: PathBuf,
    pub rank: u64,
    pub world: u64,
    /// Batches materialized ahead, i.e. slots of the ring (memory bound: prefetch × slot).
    pub prefetch: usize,
    /// Seed of the per-epoch pack order.
    pub seed: u64,
    /// Reshuffle the packs every epoch (off: plan order every epoch).
    pub shuffle: bool,
    /// Epochs to serve; `None`: endless.
    pub epochs: Option<u64>,
    /// A JSON list of the `state_dict()`s of every rank of the job to resume.
    pub resume: Option<PathBuf>,
    pub spec: TileSpec,
    pub decode: DecodeOptions,
    pub ids_dtype: IdsDtype,
    /// Exit once a client was told the stream ended and hung up (otherwise serve again).
    pub exit_at_end: bool,
}

/// What a server run did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ServeSummary {
    pub packs_in_plan: u64,
    pub batches_sent: u64,
    pub samples_skipped: u64,
    pub connections: u64,
    pub slot_bytes: u64,
    pub slots: usize,
}

/// Upper bounds of one pack over the plan: they size the slots.
#[derive(Debug, Clone, Copy, Default)]
struct PackBounds {
    tokens: u64,
    samples: u64,
    images: u64,
    /// Rows of `pixel_values` (tiles, or Qwen2-VL patches).
    pixel_rows: u64,
}

/// Byte offsets (in a slot) and capacities of each array.
#[derive(Debug, Clone, Copy)]
struct SlotLayout {
    bounds: PackBounds,
    ids_size: usize,
    input_ids: usize,
    labels: usize,
    position_ids: usize,
    cu_seqlens: usize,
    image_spans: usize,
    /// `image_grid_thw` (Qwen2-VL patches only).
    image_grid_thw: Option<usize>,
    pixel_values: usize,
    slot_bytes: usize,
    /// What one row of `pixel_values` is.
    form: PixelForm,
    row_bytes: usize,
}

fn align(x: usize) -> usize {
    x.div_ceil(64) * 64
}

impl SlotLayout {
    fn new(bounds: PackBounds, ids_size: usize, form: PixelForm, elem: usize) -> Self {
        let n = bounds.tokens as usize;
        let row_bytes = form.row_elems() * elem;
        let mut at = 0;
        let mut take = |bytes: usize| {
            let o = at;
            at = align(at + bytes);
            o
        };
        let input_ids = take(n * ids_size);
        let labels = take(n * ids_size);
        let position_ids = take(n * 4);
        let cu_seqlens = take((bounds.samples as usize + 1) * 4);
        let image_spans = take(bounds.images as usize * 4 * 8);
        let image_grid_thw = form
            .has_grid()
            .then(|| take(bounds.images as usize * 3 * 8));
        let pixel_values = take(bounds.pixel_rows as usize * row_bytes);
        let slot_bytes = at.max(64);
        SlotLayout {
            bounds,
            ids_size,
            input_ids,
            labels,
            position_ids,
            cu_seqlens,
            image_spans,
            image_grid_thw,
            pixel_values,
            slot_bytes,
            form,
            row_bytes,
        }
    }
}

/// Everything the producer needs to make a batch.
struct Producer<'a, B: Backend> {
    backend: &'a B,
    cfg: &'a ServeConfig,
    plan_file: &'a PlanFile,
    coster: SampleCoster<'a>,
    packs: Vec<Vec<&'a PlanRow>>,
    order: PackOrder,
    stream: RankStream,
    layout: SlotLayout,
    cache: ShardCache,
    epochs: HashMap<u64, Vec<u64>>,
}

/// A batch made and waiting in its slot.
#[derive(Debug, Clone)]
struct Ready {
    position: u64,
    slot: usize,
    message: Value,
}

/// State shared by the producer and the socket loop.
#[derive(Debug, Default)]
struct Shared {
    /// Bumped on every seek: batches of an older generation are dropped.
    generation: u64,
    /// Next stream position the producer makes.
    next_position: u64,
    /// The stream's end, once the producer found it.
    end_position: Option<u64>,
    /// One past the last position published to `ready` in this generation.
    published: u64,
    free: Vec<usize>,
    ready: VecDeque<Ready>,
    /// Sent to the client, not released yet: (position, slot).
    sent: Vec<(u64, usize)>,
    fatal: Option<String>,
    shutdown: bool,
}

impl Shared {
    /// Drops everything made or sent and restarts the stream at `position`.
    fn seek(&mut self, position: u64, slots: usize) {
        self.generation += 1;
        self.next_position = position;
        self.published = position;
        self.end_position = None;
        self.ready.clear();
        self.sent.clear();
        self.free = (0..slots).rev().collect();
    }

    /// Where a client that brings no state resumes: the oldest batch it did not release.
    fn resume_position(&self) -> u64 {
        self.sent
            .iter()
            .map(|&(p, _)| p)
            .min()
            .or(self.ready.front().map(|r| r.position))
            .unwrap_or(self.next_position)
    }
}

/// A fingerprint of the plan (packs and their samples) and the order settings: a resume state
/// made under other ones is refused.
fn fingerprint(rows: &[PlanRow], order: &PackOrder) -> String {
    let mut bytes = Vec::new();
    for r in rows.iter().filter(|r| r.pack_id.is_some()) {
        bytes.extend(r.pack_id.unwrap_or(0).to_le_bytes());
        bytes.extend(r.slot.unwrap_or(0).to_le_bytes());
        bytes.extend(r.shard.as_bytes());
        bytes.push(0);
        bytes.extend(r.key.as_bytes());
        bytes.push(0);
        bytes.extend(r.tokens.to_le_bytes());
        bytes.extend(r.tiles.to_le_bytes());
    }
    bytes.extend(order.packs.to_le_bytes());
    bytes.extend(order.seed.to_le_bytes());
    bytes.push(u8::from(order.shuffle));
    bytes.extend(order.block.to_le_bytes());
    format!("{:032x}", twox_hash::XxHash3_128::oneshot(&bytes))
}

/// Reads `--resume`: a JSON list of every rank's state (or one state of a 1-rank job).
pub fn read_resume(path: &Path) -> Result<Vec<RankState>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Serve(format!("{}: {e}", path.display())))?;
    let list = match value {
        Value::Array(items) => items,
        one => vec![one],
    };
    list.into_iter()
        .map(|v| {
            serde_json::from_value(v).map_err(|e| {
                Error::Serve(format!("{}: not a vlmprep rank state: {e}", path.display()))
            })
        })
        .collect()
}

/// Runs one rank's server until a client has been told the stream ended and hung up (with
/// `exit_at_end`), or forever. Plan problems are the caller's; bad samples are skipped here,
/// logged to stderr and named in their batch's message.
pub fn serve<B: Backend>(
    backend: &B,
    cfg: &ServeConfig,
    tokenizer: &TextTokenizer,
) -> Result<ServeSummary> {
    let plan_file = read_plan_file(&cfg.plan_dir)?;
    let rows = read_plan(&cfg.plan_dir.join(PLAN_TABLE))?;
    let packs = group_packs(&rows, &cfg.plan_dir)?;
    let dtype = cfg.spec.dtype;
    let form = PixelForm::for_rule(&plan_file.settings.rule, dtype)?;
    let mut bounds = PackBounds::default();
    for pack in &packs {
        bounds.tokens = bounds
            .tokens
            .max(pack.iter().map(|r| u64::from(r.tokens)).sum());
        bounds.samples = bounds.samples.max(pack.len() as u64);
        bounds.images = bounds
            .images
            .max(pack.iter().map(|r| u64::from(r.images)).sum());
        bounds.pixel_rows = bounds
            .pixel_rows
            .max(pack.iter().map(|r| form.rows_bound(r)).sum());
    }
    let ids_size = match cfg.ids_dtype {
        IdsDtype::I32 => 4,
        IdsDtype::I64 => 8,
    };
    let layout = SlotLayout::new(bounds, ids_size, form, dtype.size());
    let slots = cfg.prefetch.max(1);

    let order = PackOrder {
        packs: packs.len() as u64,
        seed: cfg.seed,
        shuffle: cfg.shuffle,
        block: plan_file
            .settings
            .balance
            .map_or(1, |b| b.world.max(1) as u64),
    };
    let fingerprint = fingerprint(&rows, &order);
    let cursor = match &cfg.resume {
        Some(path) => {
            let states = read_resume(path)?;
            if let Some(s) = states.iter().find(|s| s.fingerprint != fingerprint) {
                return Err(Error::Serve(format!(
                    "{}: rank {}'s state was made with another plan or order settings \
                     (fingerprint {} here {fingerprint})",
                    path.display(),
                    s.rank,
                    s.fingerprint
                )));
            }
            resume_cursor(&states)?
        }
        None => Cursor::default(),
    };
    let end = cfg.epochs.map(|e| e * order.packs);
    let stream = RankStream::new(cursor.clone(), cfg.rank, cfg.world, end)?;

    let file = memfd("vlmprep-ring", (layout.slot_bytes * slots) as u64)?;
    // SAFETY: the memfd is ours and sized above; only the producer thread writes through this
    // mapping, into slots the socket loop does not hand out until the producer publishes them.
    let mut map = unsafe { memmap2::MmapMut::map_mut(&file) }
        .map_err(|e| Error::Serve(format!("mapping the shared ring: {e}")))?;

    let _ = std::fs::remove_file(&cfg.socket);
    let listener = UnixListener::bind(&cfg.socket)
        .map_err(|e| Error::Serve(format!("binding {}: {e}", cfg.socket.display())))?;

    let shared = Mutex::new(Shared::default());
    let changed = Condvar::new();
    shared.lock().map_err(|_| poisoned())?.seek(0, slots);

    let mut producer = Producer {
        backend,
        cfg,
        plan_file: &plan_file,
        coster: plan_file.settings.coster(tokenizer)?,
        packs,
        order,
        stream,
        layout,
        cache: ShardCache::new(),
        epochs: HashMap::new(),
    };
    let mut summary = ServeSummary {
        packs_in_plan: producer.order.packs,
        slot_bytes: layout.slot_bytes as u64,
        slots,
        ..ServeSummary::default()
    };
    let hello = Hello {
        fingerprint: &fingerprint,
        cursor: &cursor,
        layout: &layout,
        slots,
        fd: file.as_raw_fd(),
    };
    std::thread::scope(|scope| {
        let worker = scope.spawn(|| producer.run(&mut map, &shared, &changed));
        let result = accept_loop(cfg, &listener, &hello, &shared, &changed, &mut summary);
        if let Ok(mut s) = shared.lock() {
            s.shutdown = true;
        }
        changed.notify_all();
        let skipped = worker.join().unwrap_or(0);
        summary.samples_skipped = skipped;
        result
    })?;
    let _ = std::fs::remove_file(&cfg.socket);
    Ok(summary)
}

fn poisoned() -> Error {
    Error::Serve("a server thread panicked".into())
}

/// The fixed part of the `ready` message.
struct Hello<'a> {
    fingerprint: &'a str,
    cursor: &'a Cursor,
    layout: &'a SlotLayout,
    slots: usize,
    fd: i32,
}

/// Serves clients one after the other until one is told the stream ended and hangs up.
fn accept_loop(
    cfg: &ServeConfig,
    listener: &UnixListener,
    hello: &Hello,
    shared: &Mutex<Shared>,
    changed: &Condvar,
    summary: &mut ServeSummary,
) -> Result<()> {
    for conn in listener.incoming() {
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                eprintln!("vlmprep serve: accept failed: {e}");
                continue;
            }
        };
        summary.connections += 1;
        match session(cfg, conn, hello, shared, changed, summary) {
            Ok(true) if cfg.exit_at_end => return Ok(()),
            Ok(_) => {}
            Err(Error::Serve(msg)) if msg.starts_with("fatal:") => {
                return Err(Error::Serve(msg));
            }
            // A client that vanished or misbehaved: keep the state, serve the next one.
            Err(e) => eprintln!("vlmprep serve: client session ended: {e}"),
        }
    }
    Ok(())
}

fn send_line(conn: &mut UnixStream, value: &Value) -> Result<()> {
    let mut line = serde_json::to_vec(value).map_err(|e| Error::Serve(e.to_string()))?;
    line.push(b'\n');
    conn.write_all(&line)
        .map_err(|e| Error::Serve(format!("writing to the client: {e}")))
}

/// One client connection. Returns whether the client was told the stream ended.
fn session(
    cfg: &ServeConfig,
    mut conn: UnixStream,
    hello: &Hello,
    shared: &Mutex<Shared>,
    changed: &Condvar,
    summary: &mut ServeSummary,
) -> Result<bool> {
    let reader_half = conn
        .try_clone()
        .map_err(|e| Error::Serve(format!("socket: {e}")))?;
    let mut reader = BufReader::new(reader_half);
    let mut ended = false;
    let mut line = String::new();
    let mut greeted = false;
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .map_err(|e| Error::Serve(format!("reading from the client: {e}")))?;
        if n == 0 {
            return Ok(ended);
        }
        let msg: Value = match serde_json::from_str(line.trim()) {
            Ok(v) => v,
            Err(e) => {
                send_line(
                    &mut conn,
                    &json!({"op": "error", "message": format!("bad JSON: {e}")}),
                )?;
                continue;
            }
        };
        match msg["op"].as_str() {
            Some("hello") => {
                let position = match hello_position(cfg, hello, &msg, shared) {
                    Ok(p) => p,
                    Err(e) => {
                        send_line(&mut conn, &json!({"op": "error", "message": e.to_string()}))?;
                        return Ok(false);
                    }
                };
                {
                    let mut s = shared.lock().map_err(|_| poisoned())?;
                    let in_place = s.sent.is_empty()
                        && s.ready.front().map_or(s.next_position, |r| r.position) == position;
                    if !in_place {
                        s.seek(position, hello.slots);
                    }
                }
                changed.notify_all();
                let l = hello.layout;
                let ready = json!({
                    "op": "ready",
                    "version": 1,
                    "rank": cfg.rank,
                    "world": cfg.world,
                    "fingerprint": hello.fingerprint,
                    "cursor": hello.cursor,
                    "position": position,
                    "slots": hello.slots,
                    "slot_bytes": l.slot_bytes,
                    "bounds": {"tokens": l.bounds.tokens, "samples": l.bounds.samples,
                               "images": l.bounds.images, "pixel_rows": l.bounds.pixel_rows},
                });
                let mut bytes =
                    serde_json::to_vec(&ready).map_err(|e| Error::Serve(e.to_string()))?;
                bytes.push(b'\n');
                send_with_fd(&mut conn, &bytes, hello.fd)
                    .map_err(|e| Error::Serve(format!("sending the ring: {e}")))?;
                greeted = true;
            }
            Some("next") if greeted => {
                let released: Vec<usize> = msg["release"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_u64())
                            .map(|v| v as usize)
                            .collect()
                    })
                    .unwrap_or_default();
                let reply = next_batch(shared, changed, &released)?;
                if reply["op"] == "end" {
                    ended = true;
                } else {
                    summary.batches_sent += 1;
                }
                send_line(&mut conn, &reply)?;
            }
            Some("bye") => return Ok(ended),
            other => {
                let message = match other {
                    Some(op) if !greeted => format!("`{op}` before `hello`"),
                    Some(op) => format!("unknown op `{op}`"),
                    None => "message without `op`".to_string(),
                };
                send_line(&mut conn, &json!({"op": "error", "message": message}))?;
            }
        }
    }
}

/// Where the client wants its stream to start: its state's `consumed`, or an explicit
/// `position`, or (nothing given) the oldest batch the last client did not release.
fn hello_position(
    cfg: &ServeConfig,
    hello: &Hello,
    msg: &Value,
    shared: &Mutex<Shared>,
) -> Result<u64> {
    if let Some(state) = msg.get("state").filter(|v| !v.is_null()) {
        let state: RankState = serde_json::from_value(state.clone())
            .map_err(|e| Error::Serve(format!("hello: bad state: {e}")))?;
        if state.fingerprint != hello.fingerprint
            || state.cursor != *hello.cursor
            || state.rank != cfg.rank
            || state.world != cfg.world
        {
            return Err(Error::Serve(format!(
                "hello: the state is rank {} of {} on another plan, order or cursor; this server \
                 is rank {} of {} (restart servers with --resume to change the job's layout)",
                state.rank, state.world, cfg.rank, cfg.world
            )));
        }
        return Ok(state.consumed);
    }
    if let Some(p) = msg.get("position").and_then(Value::as_u64) {
        return Ok(p);
    }
    Ok(shared.lock().map_err(|_| poisoned())?.resume_position())
}

/// Frees `released`, then waits for the next batch in stream order (or the end).
fn next_batch(shared: &Mutex<Shared>, changed: &Condvar, released: &[usize]) -> Result<Value> {
    let mut s = shared.lock().map_err(|_| poisoned())?;
    for &slot in released {
        if let Some(i) = s.sent.iter().position(|&(_, sl)| sl == slot) {
            s.sent.swap_remove(i);
            s.free.push(slot);
        }
    }
    changed.notify_all();
    loop {
        if let Some(msg) = &s.fatal {
            return Err(Error::Serve(format!("fatal: {msg}")));
        }
        if let Some(r) = s.ready.pop_front() {
            s.sent.push((r.position, r.slot));
            return Ok(r.message);
        }
        // The end, once every position before it was published (and handed out).
        if s.end_position.is_some_and(|e| s.published >= e) {
            return Ok(json!({"op": "end"}));
        }
        if s.free.is_empty() && s.ready.is_empty() {
            return Err(Error::Serve(
                "every slot is held by the client: release batches before asking for more \
                 (hold fewer than --prefetch)"
                    .into(),
            ));
        }
        s = changed.wait(s).map_err(|_| poisoned())?;
    }
}

impl<B: Backend> Producer<'_, B> {
    /// Fills free slots in stream order until shut down; returns samples skipped.
    fn run(
        &mut self,
        map: &mut memmap2::MmapMut,
        shared: &Mutex<Shared>,
        changed: &Condvar,
    ) -> u64 {
        let mut skipped = 0;
        let width = rayon::current_num_threads().max(1);
        loop {
            // Claim up to `width` positions and slots.
            let (generation, jobs) = {
                let Ok(mut s) = shared.lock() else {
                    return skipped;
                };
                loop {
                    if s.shutdown {
                        return skipped;
                    }
                    let at_end = s.end_position.is_some_and(|e| s.next_position >= e);
                    if !s.free.is_empty() && !at_end && s.fatal.is_none() {
                        break;
                    }
                    s = match changed.wait(s) {
                        Ok(s) => s,
                        Err(_) => return skipped,
                    };
                }
                let mut jobs = Vec::new();
                while jobs.len() < width && !s.free.is_empty() {
                    let position = s.next_position;
                    match self.stream.global(position) {
                        Some(global) => {
                            let slot = s.free.pop().unwrap_or_default();
                            jobs.push((position, global, slot));
                            s.next_position += 1;
                        }
                        None => {
                            s.end_position = Some(position);
                            break;
                        }
                    }
                }
                (s.generation, jobs)
            };
            changed.notify_all();
            if jobs.is_empty() {
                continue;
            }
            let made = self.make(map, &jobs);
            let Ok(mut s) = shared.lock() else {
                return skipped;
            };
            for ((position, _, slot), result) in jobs.iter().zip(made) {
                match result {
                    Ok((message, n_skipped)) => {
                        skipped += n_skipped;
                        if s.generation == generation {
                            s.published = position + 1;
                            s.ready.push_back(Ready {
                                position: *position,
                                slot: *slot,
                                message,
                            });
                        }
                    }
                    Err(e) => {
                        s.fatal = Some(e.to_string());
                    }
                }
            }
            drop(s);
            changed.notify_all();
        }
    }

    /// Materializes the batches of `jobs` (position, global index, slot) in parallel.
    fn make(
        &mut self,
        map: &mut memmap2::MmapMut,
        jobs: &[(u64, u64, usize)],
    ) -> Vec<Result<(Value, u64)>> {
        let p = self.order.packs.max(1);
        for &(_, global, _) in jobs {
            let epoch = global / p;
            if !self.epochs.contains_key(&epoch) {
                // Keep only the epochs in use: a run can be endless.
                self.epochs.retain(|&e, _| e + 1 >= epoch);
                self.epochs.insert(epoch, self.order.epoch(epoch));
            }
        }
        let pack_of = |global: u64| self.epochs[&(global / p)][(global % p) as usize];
        let open_errors = self.cache.open_for(
            jobs.iter()
                .flat_map(|&(_, g, _)| self.packs[pack_of(g) as usize].iter().copied()),
        );
        let slot_bytes = self.layout.slot_bytes;
        let mut slices: Vec<Option<&mut [u8]>> = map.chunks_mut(slot_bytes).map(Some).collect();
        let work: Vec<(u64, u64, usize, &mut [u8])> = jobs
            .iter()
            .filter_map(|&(pos, g, slot)| slices.get_mut(slot)?.take().map(|b| (pos, g, slot, b)))
            .collect();
        let this = &*self;
        work.into_par_iter()
            .map(|(position, global, slot, buf)| {
                let pack = pack_of(global);
                this.make_one(&open_errors, position, global, pack, slot, buf)
            })
            .collect()
    }

    /// Materializes one pack into its slot; returns the batch message and samples skipped.
    fn make_one(
        &self,
        open_errors: &crate::pipeline::pack::OpenErrors,
        position: u64,
        global: u64,
        pack: u64,
        slot: usize,
        buf: &mut [u8],
    ) -> Result<(Value, u64)> {
        let rows = &self.packs[pack as usize];
        let costed = cost_members(
            &self.cache,
            open_errors,
            std::slice::from_ref(rows),
            &self.coster,
            self.plan_file,
        );
        let mut problems: Vec<Problem> = Vec::new();
        let mut members: Vec<Member> = Vec::new();
        for m in costed.into_iter().flatten() {
            match m {
                Ok(m) => members.push(m),
                Err(p) => problems.push(p),
            }
        }
        let l = &self.layout;
        let elem = self.cfg.spec.dtype.size();
        let tiles: Vec<std::result::Result<SamplePixels, Problem>> = members
            .par_iter()
            .map(|m| {
                let tiles = tile_sample(
                    self.backend,
                    &self.cfg.spec,
                    &self.cfg.decode,
                    &self.cache,
                    m,
                )?;
                let plans: Vec<_> = m.costing.images.iter().map(|i| i.plan).collect();
                sample_pixels(&l.form, tiles, &plans, elem)
                    .map_err(|e| plan_problem(m.row, "pixels", e.to_string()))
            })
            .collect();
        let mut kept = Vec::with_capacity(members.len());
        let mut pixels = Vec::with_capacity(members.len());
        for (m, t) in members.into_iter().zip(tiles) {
            match t {
                Ok(bytes) => {
                    kept.push(m);
                    pixels.push(bytes);
                }
                Err(p) => problems.push(p),
            }
        }
        let mut fields = pack_fields(&kept);
        let n = fields.input_ids.len();
        // `image_spans` columns 2 and 3 name each image's rows of pixel_values: the pack's
        // own tile rows for tiles; recomputed for patches, whose count is per image.
        let rows_per_image: Vec<usize> = pixels
            .iter()
            .flat_map(|p| p.rows_per_image.iter().copied())
            .collect();
        let grids: Vec<[i64; 3]> = pixels
            .iter()
            .flat_map(|p| p.grids.iter().copied())
            .collect();
        set_pixel_rows(&mut fields, &rows_per_image)
            .map_err(|e| Error::Serve(format!("pack {pack}: {e}")))?;
        let n_rows: usize = rows_per_image.iter().sum();
        if n as u64 > l.bounds.tokens
            || kept.len() as u64 > l.bounds.samples
            || fields.image_spans.len() as u64 > l.bounds.images
            || n_rows as u64 > l.bounds.pixel_rows
            || pixels.iter().map(|p| p.bytes.len()).sum::<usize>() != n_rows * l.row_bytes
        {
            return Err(Error::Serve(format!(
                "pack {pack} outgrew its slot ({n} tokens, {n_rows} pixel rows): the shards \
                 changed since the plan"
            )));
        }
        let base = slot * l.slot_bytes;
        let ids_descr = if l.ids_size == 4 { "<i4" } else { "<i8" };
        let put_ids = |buf: &mut [u8], at: usize, values: &[i64]| {
            if l.ids_size == 4 {
                for (i, &v) in values.iter().enumerate() {
                    buf[at + 4 * i..at + 4 * i + 4].copy_from_slice(&(v as i32).to_le_bytes());
                }
            } else {
                for (i, &v) in values.iter().enumerate() {
                    buf[at + 8 * i..at + 8 * i + 8].copy_from_slice(&v.to_le_bytes());
                }
            }
        };
        put_ids(buf, l.input_ids, &fields.input_ids);
        put_ids(buf, l.labels, &fields.labels);
        for (i, &v) in fields.position_ids.iter().enumerate() {
            buf[l.position_ids + 4 * i..][..4].copy_from_slice(&v.to_le_bytes());
        }
        for (i, &v) in fields.cu_seqlens.iter().enumerate() {
            buf[l.cu_seqlens + 4 * i..][..4].copy_from_slice(&v.to_le_bytes());
        }
        for (i, v) in fields.image_spans.iter().flatten().enumerate() {
            buf[l.image_spans + 8 * i..][..8].copy_from_slice(&v.to_le_bytes());
        }
        if let Some(grid_at) = l.image_grid_thw {
            for (i, v) in grids.iter().flatten().enumerate() {
                buf[grid_at + 8 * i..][..8].copy_from_slice(&v.to_le_bytes());
            }
        }
        let mut at = l.pixel_values;
        for p in &pixels {
            buf[at..at + p.bytes.len()].copy_from_slice(&p.bytes);
            at += p.bytes.len();
        }
        let array = |name: &str, descr: &str, shape: Vec<usize>, offset: usize| {
            (
                name.to_string(),
                json!({"dtype": descr, "shape": shape, "offset": base + offset}),
            )
        };
        let mut pixel_shape = vec![n_rows];
        pixel_shape.extend(l.form.row_shape());
        let mut arrays: serde_json::Map<String, Value> = [
            array("input_ids", ids_descr, vec![n], l.input_ids),
            array("labels", ids_descr, vec![n], l.labels),
            array("position_ids", "<i4", vec![n], l.position_ids),
            array(
                "cu_seqlens",
                "<i4",
                vec![fields.cu_seqlens.len()],
                l.cu_seqlens,
            ),
            array(
                "image_spans",
                "<i8",
                vec![fields.image_spans.len(), 4],
                l.image_spans,
            ),
            array(
                "pixel_values",
                self.cfg.spec.dtype.npy_descr(),
                pixel_shape,
                l.pixel_values,
            ),
        ]
        .into_iter()
        .collect();
        if let Some(grid_at) = l.image_grid_thw {
            let (name, spec) = array("image_grid_thw", "<i8", vec![grids.len(), 3], grid_at);
            arrays.insert(name, spec);
        }
        for p in &problems {
            eprintln!(
                "vlmprep serve: rank {} skipped a sample: {p}",
                self.cfg.rank
            );
        }
        let samples: Vec<Value> = kept
            .iter()
            .map(|m| json!({"key": m.row.key, "shard": m.row.shard}))
            .collect();
        let skipped: Vec<Value> = problems
            .iter()
            .map(|p| json!({"key": p.key, "shard": p.shard, "kind": p.kind, "message": p.message}))
            .collect();
        let message = json!({
            "op": "batch",
            "position": position,
            "global": global,
            "epoch": global / self.order.packs.max(1),
            "pack": pack,
            "slot": slot,
            "samples": samples,
            "skipped": skipped,
            "arrays": arrays,
        });
        Ok((message, problems.len() as u64))
    }
}
