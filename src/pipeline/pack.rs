//! `pack`: turns a plan folder into packed shards a trainer reads with numpy or torch alone.
//!
//! Packs are written in plan order, `packs_per_shard` to a folder `packs-NNNNNN/` holding one
//! `.npy` per field (see [`PACK_FILES`]): tokens of all its packs concatenated, with offsets
//! saying where each pack starts. With `materialize`, the images are decoded and tiled by the
//! backend and streamed into `pixel_values.npy` (tiles, or Qwen2-VL's flattened patches with
//! `image_grid_thw.npy`; see `pipeline::pixels`), `image_spans` saying which rows belong to
//! which placeholder span. A sample that no longer matches its plan (shard changed) or whose
//! image fails to decode is left out of its pack and recorded; the rest of the pack is kept.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;

use super::pixels::{PixelForm, SamplePixels, sample_pixels};
use super::plan::{PLAN_TABLE, PlanFile, read_plan_file};
use super::{image_error_kind, sample_problem};
use crate::backend::{Backend, TileSpec};
use crate::error::{Error, Result};
use crate::image::decode::{DecodeOptions, decode};
use crate::image::tiling::TilePlan;
use crate::model::tokenizer::TextTokenizer;
use crate::pack::sample_cost::{SampleCoster, SampleCosting, image_members};
use crate::problems::{Problem, ProblemLog};
use crate::shard::{SampleEntry, Shard, ShardSource};
use crate::sink::npy::{NpyStream, write_npy};
use crate::sink::parquet::{PlanRow, read_plan};

/// The files of a pack shard folder.
pub const PACK_FILES: &[&str] = &[
    "input_ids.npy",      // [N] int32|int64: tokens of all packs, concatenated
    "labels.npy",         // [N] same dtype: -100 on image tokens and each sample's first token
    "position_ids.npy",   // [N] int32: 0.. restarting at every sample
    "pack_offsets.npy",   // [P+1] int64: pack p is tokens [o[p], o[p+1])
    "cu_seqlens.npy",     // [Σ(samples_p+1)] int32: per pack, flash_attn_varlen's cu_seqlens
    "cu_offsets.npy",     // [P+1] int64: pack p's cu_seqlens are entries [c[p], c[p+1])
    "image_spans.npy", // [I, 5] int64: pack, token start in pack, span length, first pixel row in pack, rows
    "tile_offsets.npy", // [P+1] int64: pack p's rows of pixel_values (with --materialize)
    "pixel_values.npy", // [T, 3, S, S] float or [T, S, S, 3] u8 tiles; qwen2vl: [P, 1176] patches
    "image_grid_thw.npy", // [I, 3] int64: qwen2vl only, each image's (t, h, w) patch grid
    "packs.jsonl",     // one line per pack: id, samples (key, shard, tokens, tiles)
];

/// Token id width in the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdsDtype {
    I32,
    I64,
}

/// Settings of a `pack` run.
#[derive(Debug, Clone)]
pub struct PackConfig {
    /// The plan folder written by `plan`.
    pub plan_dir: PathBuf,
    /// Output folder.
    pub out: PathBuf,
    /// Decode and tile the images too.
    pub materialize: bool,
    /// Filter, dtype and normalization of the tiles (with `materialize`).
    pub spec: TileSpec,
    pub decode: DecodeOptions,
    pub ids_dtype: IdsDtype,
    /// Packs per output folder.
    pub packs_per_shard: usize,
    /// Bound on decoded + tiled bytes held at once (with `materialize`).
    pub chunk_bytes: u64,
}

/// What a `pack` run wrote.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PackSummary {
    pub backend: String,
    pub shards_written: usize,
    pub packs: usize,
    pub samples: usize,
    pub tokens: u64,
    pub tiles: u64,
    /// Samples of the plan left out (mismatch with the plan, decode failure).
    pub left_out: usize,
    pub seconds: f64,
    pub samples_per_second: f64,
    pub problem_counts: std::collections::BTreeMap<&'static str, usize>,
}

/// A sample of a pack, costed again from its shard.
pub struct Member<'r> {
    /// Its plan row.
    pub row: &'r PlanRow,
    /// Its images and token layout, as rebuilt from the shard.
    pub costing: SampleCosting,
}

/// Opened shards, each with its key → sample index.
#[derive(Default)]
pub struct ShardCache {
    shards: HashMap<String, (Shard, HashMap<String, usize>)>,
}

impl ShardCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Opens every shard `rows` name that is not open yet; returns why each failed shard
    /// failed (its rows then fail as `unreadable-shard`).
    pub fn open_for<'r>(&mut self, rows: impl Iterator<Item = &'r PlanRow>) -> OpenErrors {
        let mut open_errors = OpenErrors::new();
        for row in rows {
            if !open_errors.contains_key(&row.shard)
                && let Err(err) = self.get(&row.shard)
            {
                open_errors.insert(row.shard.clone(), err.to_string());
            }
        }
        open_errors
    }

    /// The shard at `path` and its key index, opened on first use.
    pub fn get(&mut self, path: &str) -> Result<&(Shard, HashMap<String, usize>)> {
        if !self.shards.contains_key(path) {
            let p = PathBuf::from(path);
            let source = if p.is_dir() {
                ShardSource::Folder(p)
            } else {
                ShardSource::Tar(p)
            };
            let shard = Shard::open(&source)?;
            let index = shard
                .samples()
                .iter()
                .enumerate()
                .map(|(i, s)| (s.key.clone(), i))
                .collect();
            self.shards.insert(path.to_string(), (shard, index));
        }
        Ok(&self.shards[path])
    }
}

/// Runs `pack` on `backend`. `progress` advances by one per pack.
pub fn run_pack<B: Backend>(
    backend: &B,
    cfg: &PackConfig,
    tokenizer: &TextTokenizer,
    progress: &indicatif::ProgressBar,
) -> Result<(PackSummary, ProblemLog)> {
    let start = Instant::now();
    let plan_file = read_plan_file(&cfg.plan_dir)?;
    // Checked before any work: qwen2vl patches need a float dtype.
    let form = PixelForm::for_rule(&plan_file.settings.rule, cfg.spec.dtype)?;
    let rows = read_plan(&cfg.plan_dir.join(PLAN_TABLE))?;
    let packs = group_packs(&rows, &cfg.plan_dir)?;
    progress.set_length(packs.len() as u64);
    std::fs::create_dir_all(&cfg.out).map_err(|e| Error::io(&cfg.out, e))?;

    let coster = plan_file.settings.coster(tokenizer)?;
    let mut cache = ShardCache {
        shards: HashMap::new(),
    };
    let mut problems = ProblemLog::default();
    let mut summary = PackSummary {
        backend: backend.name(),
        packs: packs.len(),
        ..PackSummary::default()
    };
    for (shard_index, group) in packs.chunks(cfg.packs_per_shard.max(1)).enumerate() {
        let dir = cfg.out.join(format!("packs-{shard_index:06}"));
        write_pack_shard(
            backend,
            cfg,
            &form,
            &plan_file,
            &coster,
            &mut cache,
            group,
            &dir,
            &mut summary,
            &mut problems,
        )?;
        summary.shards_written += 1;
        progress.inc(group.len() as u64);
    }
    summary.seconds = start.elapsed().as_secs_f64();
    summary.samples_per_second = summary.samples as f64 / summary.seconds.max(1e-9);
    summary.problem_counts = problems.counts();
    super::tile::write_problems(&cfg.out.join("problems.jsonl"), &problems)?;
    crate::sink::write_json(&cfg.out.join("summary.json"), &summary)?;
    Ok((summary, problems))
}

/// Shards that failed to open, with the reason.
pub type OpenErrors = HashMap<String, String>;

/// The plan's packs in id order, each its rows by slot. Pack ids must be 0..P without gaps.
pub fn group_packs<'r>(rows: &'r [PlanRow], plan_dir: &Path) -> Result<Vec<Vec<&'r PlanRow>>> {
    let count = rows
        .iter()
        .filter_map(|r| r.pack_id)
        .max()
        .map_or(0, |m| m as usize + 1);
    let mut packs: Vec<Vec<&PlanRow>> = vec![Vec::new(); count];
    for row in rows {
        if let Some(id) = row.pack_id {
            packs[id as usize].push(row);
        }
    }
    for (id, pack) in packs.iter_mut().enumerate() {
        if pack.is_empty() {
            return Err(Error::PlanFile {
                path: plan_dir.join(PLAN_TABLE),
                reason: format!("pack {id} has no samples: the plan is damaged"),
            });
        }
        pack.sort_by_key(|r| (r.slot, r.sample));
    }
    Ok(packs)
}

/// A problem of one planned sample, named by its shard, key and offset.
pub fn plan_problem(row: &PlanRow, kind: &'static str, message: String) -> Problem {
    Problem {
        shard: PathBuf::from(&row.shard),
        offset: Some(row.offset),
        key: Some(row.key.clone()),
        kind,
        message,
    }
}

/// Costs a plan row again from its shard and checks it against the plan.
fn recost(
    row: &PlanRow,
    shard: &Shard,
    sample: &SampleEntry,
    coster: &SampleCoster,
    plan_file: &PlanFile,
) -> std::result::Result<SampleCosting, Problem> {
    let offsets: Vec<u64> = image_members(sample).map(|m| m.offset).collect();
    let full = coster
        .cost(shard, sample)
        .map_err(|f| sample_problem(shard, sample, f.kind, f.message))?;
    let costing = if row.placement == "truncated" {
        full.truncated(plan_file.settings.limits()).ok_or_else(|| {
            plan_problem(row, "plan-mismatch", "nothing left after truncation".into())
        })?
    } else {
        full
    };
    let cost = costing.cost();
    if offsets != row.image_offsets || cost.tokens != row.tokens || cost.tiles != row.tiles {
        return Err(plan_problem(
            row,
            "plan-mismatch",
            format!(
                "shard changed since the plan: now {} tokens / {} tiles, planned {} / {}",
                cost.tokens, cost.tiles, row.tokens, row.tiles
            ),
        ));
    }
    Ok(costing)
}

/// Costs every sample of `packs` again from its (already opened) shard, in parallel, and checks
/// it against the plan: per pack, per slot, the member or the problem that leaves it out.
pub fn cost_members<'r>(
    cache: &ShardCache,
    open_errors: &OpenErrors,
    packs: &[Vec<&'r PlanRow>],
    coster: &SampleCoster,
    plan_file: &PlanFile,
) -> Vec<Vec<std::result::Result<Member<'r>, Problem>>> {
    packs
        .par_iter()
        .map(|pack| {
            pack.par_iter()
                .map(|&row| {
                    let (shard, index) = cache.shards.get(&row.shard).ok_or_else(|| {
                        let why = open_errors.get(row.shard.as_str()).cloned();
                        plan_problem(row, "unreadable-shard", why.unwrap_or_default())
                    })?;
                    let sample = index
                        .get(&row.key)
                        .map(|&i| &shard.samples()[i])
                        .ok_or_else(|| {
                            plan_problem(row, "plan-mismatch", "key no longer in its shard".into())
                        })?;
                    let costing = recost(row, shard, sample, coster, plan_file)?;
                    Ok(Member { row, costing })
                })
                .collect()
        })
        .collect()
}

/// Decoded tiles of one sample: rows of the pixel tensor, in image order.
pub type SampleTiles = Vec<u8>;

#[allow(clippy::too_many_arguments)]
fn write_pack_shard<B: Backend>(
    backend: &B,
    cfg: &PackConfig,
    form: &PixelForm,
    plan_file: &PlanFile,
    coster: &SampleCoster,
    cache: &mut ShardCache,
    packs: &[Vec<&PlanRow>],
    dir: &Path,
    summary: &mut PackSummary,
    problems: &mut ProblemLog,
) -> Result<()> {
    // Open every shard this group needs (sequentially: it mutates the cache), then cost all
    // its samples in parallel.
    let open_errors = cache.open_for(packs.iter().flatten().copied());
    let cache = &*cache;
    let costed = cost_members(cache, &open_errors, packs, coster, plan_file);

    let mut members: Vec<Vec<Member>> = Vec::with_capacity(packs.len());
    for pack in costed {
        let mut kept = Vec::with_capacity(pack.len());
        for m in pack {
            match m {
                Ok(m) => kept.push(m),
                Err(problem) => {
                    summary.left_out += 1;
                    problems.push(problem);
                }
            }
        }
        members.push(kept);
    }

    let mut pixels = None;
    let mut image_rows = None;
    if cfg.materialize {
        let made = materialize(
            backend,
            cfg,
            form,
            cache,
            &mut members,
            dir,
            summary,
            problems,
        )?;
        image_rows = Some(made.rows_per_image);
        pixels = Some((made.stream, made.offsets, made.grids));
    }
    write_token_arrays(cfg, dir, &members, image_rows.as_deref(), summary)?;
    if let Some((stream, offsets, grids)) = pixels {
        stream.finish()?;
        write_i64(&dir.join("tile_offsets.npy"), &offsets)?;
        if form.has_grid() {
            let flat: Vec<i64> = grids.iter().flatten().copied().collect();
            write_npy(
                &dir.join("image_grid_thw.npy"),
                "<i8",
                &[grids.len(), 3],
                &le_bytes_i64(&flat),
            )?;
        }
    }
    Ok(())
}

/// Writes a 1-d int64 array.
fn write_i64(path: &Path, values: &[i64]) -> Result<()> {
    write_npy(path, "<i8", &[values.len()], &le_bytes_i64(values))
}

/// Writes a 1-d int32 array.
fn write_i32(path: &Path, values: &[i32]) -> Result<()> {
    write_npy(path, "<i4", &[values.len()], &le_bytes_i32(values))
}

fn le_bytes_i64(values: &[i64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn le_bytes_i32(values: &[i32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// What [`materialize`] made for a group of packs.
struct Materialized {
    /// `pixel_values.npy`, to finish after the token arrays.
    stream: NpyStream,
    /// Per pack, its first row of pixel_values (and the total at the end).
    offsets: Vec<i64>,
    /// Per pack, the rows of each image kept, in image order.
    rows_per_image: Vec<Vec<usize>>,
    /// `[t, h, w]` of every image kept, in order (Qwen2-VL patches only).
    grids: Vec<[i64; 3]>,
}

/// Decodes and tiles every image of the group, pack by pack in chunks bounded by bytes, and
/// streams the rows (tiles, or Qwen2-VL patches) into `pixel_values.npy`. Samples whose image
/// fails are removed from their pack.
#[allow(clippy::too_many_arguments)]
fn materialize<B: Backend>(
    backend: &B,
    cfg: &PackConfig,
    form: &PixelForm,
    cache: &ShardCache,
    members: &mut [Vec<Member>],
    dir: &Path,
    summary: &mut PackSummary,
    problems: &mut ProblemLog,
) -> Result<Materialized> {
    let dtype = cfg.spec.dtype;
    let elem = dtype.size();
    let row_shape = form.row_shape();
    let stream = NpyStream::create(
        &dir.join("pixel_values.npy"),
        dtype.npy_descr(),
        &row_shape,
        elem,
    )?;
    let row_bytes = form.row_elems() * elem;
    let mut made = Materialized {
        stream,
        offsets: vec![0i64],
        rows_per_image: Vec::with_capacity(members.len()),
        grids: Vec::new(),
    };

    let mut start = 0;
    while start < members.len() {
        // Packs of this chunk: until the rows held would pass the budget (at least one pack).
        let mut end = start;
        let mut bytes = 0u64;
        while end < members.len() && (end == start || bytes < cfg.chunk_bytes) {
            let rows: u64 = members[end].iter().map(|m| form.rows_bound(m.row)).sum();
            bytes += rows * row_bytes as u64;
            end += 1;
        }
        let results: Vec<Vec<std::result::Result<SamplePixels, Problem>>> = members[start..end]
            .par_iter()
            .map(|pack| {
                pack.par_iter()
                    .map(|m| {
                        let tiles = tile_sample(backend, &cfg.spec, &cfg.decode, cache, m)?;
                        let plans: Vec<TilePlan> =
                            m.costing.images.iter().map(|i| i.plan).collect();
                        sample_pixels(form, tiles, &plans, elem)
                            .map_err(|e| plan_problem(m.row, "pixels", e.to_string()))
                    })
                    .collect()
            })
            .collect();
        for (pack, results) in members[start..end].iter_mut().zip(results) {
            let mut keep = Vec::with_capacity(pack.len());
            let mut rows_per_image = Vec::new();
            for (m, result) in std::mem::take(pack).into_iter().zip(results) {
                match result {
                    Ok(pixels) => {
                        made.stream.append(&pixels.bytes)?;
                        rows_per_image.extend(&pixels.rows_per_image);
                        made.grids.extend(&pixels.grids);
                        keep.push(m);
                    }
                    Err(problem) => {
                        summary.left_out += 1;
                        problems.push(problem);
                    }
                }
            }
            *pack = keep;
            let rows: usize = rows_per_image.iter().sum();
            made.offsets
                .push(made.offsets.last().copied().unwrap_or(0) + rows as i64);
            made.rows_per_image.push(rows_per_image);
            summary.tiles += rows as u64;
        }
        start = end;
    }
    Ok(made)
}

/// Decodes and tiles the images of one sample that remain in its layout: the rows of the pixel
/// tensor (`spec`'s dtype and layout), in image order, or the problem that leaves it out.
pub fn tile_sample<B: Backend>(
    backend: &B,
    spec: &TileSpec,
    decode_opts: &DecodeOptions,
    cache: &ShardCache,
    m: &Member,
) -> std::result::Result<SampleTiles, Problem> {
    let fail = |err: Error| plan_problem(m.row, image_error_kind(&err), err.to_string());
    let (shard, index) = cache
        .shards
        .get(&m.row.shard)
        .ok_or_else(|| plan_problem(m.row, "unreadable-shard", "shard not open".into()))?;
    let sample = index
        .get(&m.row.key)
        .map(|&i| &shard.samples()[i])
        .ok_or_else(|| plan_problem(m.row, "plan-mismatch", "key no longer in its shard".into()))?;
    let mut decoded = Vec::with_capacity(m.costing.images.len());
    let mut plans: Vec<TilePlan> = Vec::with_capacity(m.costing.images.len());
    for image in &m.costing.images {
        let entry = image_members(sample)
            .find(|e| e.offset == image.offset)
            .ok_or_else(|| plan_problem(m.row, "plan-mismatch", "image member moved".into()))?;
        let data = shard.member_data(entry).map_err(fail)?;
        decoded.push(decode(&data, decode_opts).map_err(fail)?.image);
        plans.push(image.plan);
    }
    if decoded.is_empty() {
        return Ok(Vec::new());
    }
    let images: Vec<&crate::image::RgbImage> = decoded.iter().collect();
    let tiles = backend
        .tile_batch(&images, &plans, spec)
        .and_then(|t| backend.tiles_to_host(t))
        .map_err(fail)?;
    Ok(tiles.data)
}

/// The token fields of one pack, laid out as a trainer consumes them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackFields {
    /// Tokens of all samples, concatenated.
    pub input_ids: Vec<i64>,
    /// Targets: -100 on image tokens and each sample's first token.
    pub labels: Vec<i64>,
    /// 0.. restarting at every sample.
    pub position_ids: Vec<i32>,
    /// flash_attn_varlen's cu_seqlens: 0, end of sample 0, end of sample 1, ...
    pub cu_seqlens: Vec<i32>,
    /// Per image: token start in the pack, span length, first tile row in the pack, tiles.
    pub image_spans: Vec<[i64; 4]>,
}

/// Lays out the token fields of one pack from its members, in slot order.
pub fn pack_fields(pack: &[Member]) -> PackFields {
    let mut f = PackFields {
        cu_seqlens: vec![0],
        ..PackFields::default()
    };
    let mut tile_in_pack = 0i64;
    for m in pack {
        let layout = &m.costing.layout;
        let sample_start = f.input_ids.len() as i64;
        f.input_ids
            .extend(layout.input_ids.iter().map(|&t| i64::from(t)));
        f.labels.extend(&layout.labels);
        f.position_ids.extend(0..layout.len() as i32);
        f.cu_seqlens.push(f.input_ids.len() as i32);
        for (span, image) in layout.images.iter().zip(&m.costing.images) {
            let tiles = i64::from(image.plan.num_tiles());
            f.image_spans.push([
                sample_start + i64::from(span.start),
                i64::from(span.len),
                tile_in_pack,
                tiles,
            ]);
            tile_in_pack += tiles;
        }
    }
    f
}

/// Points `image_spans` columns 2 and 3 at each image's rows of `pixel_values` (`rows`: one
/// count per image, in span order, rows back to back from 0): the same as `pack_fields` wrote
/// for tiles, and the patch rows for Qwen2-VL, whose count per image only the pixels know.
pub fn set_pixel_rows(fields: &mut PackFields, rows: &[usize]) -> Result<()> {
    if rows.len() != fields.image_spans.len() {
        return Err(Error::Resize(format!(
            "{} images have pixels but the pack has {} image spans",
            rows.len(),
            fields.image_spans.len()
        )));
    }
    let mut first = 0i64;
    for (span, &n) in fields.image_spans.iter_mut().zip(rows) {
        span[2] = first;
        span[3] = n as i64;
        first += n as i64;
    }
    Ok(())
}

/// Concatenates the token fields of the group's packs and writes them.
fn write_token_arrays(
    cfg: &PackConfig,
    dir: &Path,
    members: &[Vec<Member>],
    image_rows: Option<&[Vec<usize>]>,
    summary: &mut PackSummary,
) -> Result<()> {
    let mut input_ids: Vec<i64> = Vec::new();
    let mut labels: Vec<i64> = Vec::new();
    let mut position_ids: Vec<i32> = Vec::new();
    let mut pack_offsets = vec![0i64];
    let mut cu_seqlens: Vec<i32> = Vec::new();
    let mut cu_offsets = vec![0i64];
    let mut spans: Vec<i64> = Vec::new();
    let mut lines = Vec::new();

    for (p, pack) in members.iter().enumerate() {
        let pack_start = input_ids.len();
        let mut fields = pack_fields(pack);
        if let Some(rows) = image_rows.and_then(|r| r.get(p)) {
            set_pixel_rows(&mut fields, rows)?;
        }
        input_ids.extend(&fields.input_ids);
        labels.extend(&fields.labels);
        position_ids.extend(&fields.position_ids);
        cu_seqlens.extend(&fields.cu_seqlens);
        for span in &fields.image_spans {
            spans.push(p as i64);
            spans.extend(span);
        }
        let mut line = Vec::new();
        for m in pack {
            let layout = &m.costing.layout;
            line.push(serde_json::json!({
                "key": m.row.key,
                "shard": m.row.shard,
                "tokens": layout.len(),
                "tiles": m.costing.tiles(),
            }));
            summary.samples += 1;
        }
        summary.tokens += (input_ids.len() - pack_start) as u64;
        pack_offsets.push(input_ids.len() as i64);
        cu_offsets.push(cu_seqlens.len() as i64);
        lines.push(serde_json::json!({ "pack": p, "samples": line }));
    }

    let n = input_ids.len();
    let (descr, ids, labs) = match cfg.ids_dtype {
        IdsDtype::I64 => ("<i8", le_bytes_i64(&input_ids), le_bytes_i64(&labels)),
        IdsDtype::I32 => {
            let narrow = |v: &[i64]| v.iter().map(|&x| x as i32).collect::<Vec<i32>>();
            (
                "<i4",
                le_bytes_i32(&narrow(&input_ids)),
                le_bytes_i32(&narrow(&labels)),
            )
        }
    };
    write_npy(&dir.join("input_ids.npy"), descr, &[n], &ids)?;
    write_npy(&dir.join("labels.npy"), descr, &[n], &labs)?;
    write_i32(&dir.join("position_ids.npy"), &position_ids)?;
    write_i64(&dir.join("pack_offsets.npy"), &pack_offsets)?;
    write_i32(&dir.join("cu_seqlens.npy"), &cu_seqlens)?;
    write_i64(&dir.join("cu_offsets.npy"), &cu_offsets)?;
    write_npy(
        &dir.join("image_spans.npy"),
        "<i8",
        &[spans.len() / 5, 5],
        &le_bytes_i64(&spans),
    )?;
    let jsonl: Vec<u8> = lines
        .iter()
        .flat_map(|l| {
            let mut v = serde_json::to_vec(l).unwrap_or_default();
            v.push(b'\n');
            v
        })
        .collect();
    crate::sink::write_atomically(&dir.join("packs.jsonl"), |w| w.write_all(&jsonl))
}
