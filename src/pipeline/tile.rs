//! `tile`: every image of a pool decoded, planned by a tiling rule, resized/cut/normalized by a
//! backend and written as `KEY.npy` (u8 `[T, H, W, 3]` or float `[T, 3, H, W]`), with an
//! `index.jsonl` line per image, every problem recorded in `problems.jsonl`, and the run's
//! figures in `summary.json`.
//!
//! Shards are processed one after another, each in chunks bounded by the bytes they hold
//! (decoded images plus tiles, counted from the headers before decoding), so memory stays flat
//! whatever the size of the pool; within a chunk all stages run across cores. The stages of a
//! run are threads joined by rendezvous channels, each a chunk ahead of the next: a planner
//! (headers probed, chunks formed, encoded bytes read in), the maker (decode and tile), for a
//! backend that decodes on its device a downloader (tiles to the host), and the writer (tiles
//! and index lines). A chunk's tiles are handed over, not copied.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::Instant;

use rayon::prelude::*;

use super::tile_chunks::{Planned, PlannedImage, decode_options, plan_chunks};
use super::{image_error_kind, sample_problem};
use crate::backend::{Backend, HostTiles, TileSpec, buffer_pool};
use crate::error::{Error, Result};
use crate::image::RgbImage;
use crate::image::decode::{DecodeOptions, decode_with_header};
use crate::image::normalize::Dtype;
use crate::image::tiling::{TilePlan, Tiler, TilingRule};
use crate::problems::{Problem, ProblemLog};
use crate::shard::{Shard, ShardSource};
use crate::sink::npy::write_npy;

/// Settings of a `tile` run.
#[derive(Debug, Clone)]
pub struct TileConfig {
    /// The tiling rule and its settings.
    pub rule: TilingRule,
    /// Filter, dtype and normalization of the tiles.
    pub spec: TileSpec,
    /// Decode guard (`max_pixels`) and orientation; `min_size` is set per image from its plan.
    pub decode: DecodeOptions,
    /// Decode JPEGs at reduced DCT scale when the plan needs much fewer pixels.
    pub dct_scaling: bool,
    /// Output folder.
    pub out: PathBuf,
    /// Write the tiles (`KEY.npy`); off for benchmarking decode + tile alone.
    pub write_tiles: bool,
    /// Also write each tile as a PNG (`KEY.tNN.png`) for looking at.
    pub png: bool,
    /// Bound on the decoded bytes held at once (per chunk).
    pub chunk_bytes: u64,
}

/// What a `tile` run did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct TileSummary {
    /// Backend that made the tiles.
    pub backend: String,
    /// Shards read.
    pub shards: usize,
    /// Samples seen.
    pub samples: usize,
    /// Images tiled and written.
    pub images: usize,
    /// Tiles written (thumbnails included).
    pub tiles: u64,
    /// Batches the images were tiled in: chunks of at most `--memory-mib` of decoded images
    /// plus tiles (an image larger than that is a chunk of its own).
    pub chunks: usize,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Images per second.
    pub images_per_second: f64,
    /// Problems by kind.
    pub problem_counts: std::collections::BTreeMap<&'static str, usize>,
}

/// One entry of `index.jsonl`.
#[derive(Debug, serde::Serialize)]
struct IndexLine<'a> {
    key: &'a str,
    shard: &'a Path,
    file: String,
    width: u32,
    height: u32,
    grid: (u32, u32),
    tiles: u32,
    thumbnail: bool,
    shape: [usize; 4],
    dtype: Dtype,
}

/// A decoded image ready for the backend.
struct Decoded<'s> {
    planned: Planned<'s>,
    image: RgbImage,
}

/// What the writer needs of one tiled image, owned (the chunk it came from is gone by then).
struct Written {
    key: String,
    size: (u32, u32),
    plan: TilePlan,
}

/// A made chunk on its way to the writer: its images, and their tiles on the host
/// ([`WriteJob`]) or, from a backend that decodes on its device, still there.
struct ChunkOut<T> {
    shard: PathBuf,
    images: Vec<Written>,
    tiles: T,
    /// Bytes of the chunk's members, for the progress bar.
    member_bytes: u64,
}

/// A chunk's tiles on the host, handed to the writer thread.
type WriteJob = ChunkOut<HostTiles>;

/// Where the making side hands its chunks.
enum Outlet<'a, T> {
    /// Tiles made on the host go straight to the writer.
    Writer(&'a SyncSender<WriteJob>),
    /// Tiles made on a device go to the download thread.
    Download(&'a SyncSender<ChunkOut<T>>),
}

/// Images and tiles the writer wrote.
#[derive(Default)]
struct WriteCounts {
    images: usize,
    tiles: u64,
}

/// Runs `tile` over `sources` on `backend`. `progress` is advanced by the bytes of each chunk's
/// members. Fails only on output errors (the run cannot go on); bad inputs are recorded.
pub fn run_tile<B: Backend>(
    backend: &B,
    sources: &[ShardSource],
    cfg: &TileConfig,
    progress: &indicatif::ProgressBar,
) -> Result<(TileSummary, ProblemLog)>
where
    B::Tiles: Send,
{
    let start = Instant::now();
    std::fs::create_dir_all(&cfg.out).map_err(|e| Error::io(&cfg.out, e))?;
    let index_path = cfg.out.join("index.jsonl");
    let index = std::io::BufWriter::new(
        std::fs::File::create(&index_path).map_err(|e| Error::io(&index_path, e))?,
    );
    let mut summary = TileSummary {
        backend: backend.name(),
        ..Default::default()
    };
    let mut problems = ProblemLog::default();
    // Settings are checked (and InternVL's candidate grids built) once, not per image.
    let tiler = Tiler::new(cfg.rule)?;

    // Rendezvous channels: a stage blocks on a finished chunk until the next stage has taken
    // it, so at most two chunks' tiles are on the host at once (the one being written and the
    // one waiting for the writer).
    let (to_writer, jobs) = sync_channel::<WriteJob>(0);
    let counts = std::thread::scope(|scope| -> Result<WriteCounts> {
        let writer = scope.spawn(|| write_chunks(cfg, index, &index_path, jobs, progress));
        let mut make = |outlet: &Outlet<B::Tiles>| {
            tile_sources(
                backend,
                sources,
                cfg,
                &tiler,
                &mut summary,
                &mut problems,
                outlet,
                progress,
            )
        };
        let (made, downloaded) = if backend.decodes() {
            // A device backend's chunk is downloaded on a thread of its own while the device
            // decodes and tiles the next one.
            let (to_download, downloads) = sync_channel(0);
            let downloader = scope.spawn(move || download_chunks(backend, downloads, to_writer));
            let made = make(&Outlet::Download(&to_download));
            drop(to_download);
            let downloaded = downloader.join().map_err(|_| Error::Output {
                path: index_path.clone(),
                reason: "the download thread panicked".into(),
            });
            (made, downloaded)
        } else {
            let made = make(&Outlet::Writer(&to_writer));
            drop(to_writer);
            (made, Ok(Ok(())))
        };
        let written = writer.join().map_err(|_| Error::Output {
            path: index_path.clone(),
            reason: "the writer thread panicked".into(),
        })?;
        // The later stage's error first: a failed write also ends the download and making
        // sides (their sends fail), and a failed download ends the making side.
        let counts = written?;
        downloaded??;
        made?;
        Ok(counts)
    })?;
    summary.images = counts.images;
    summary.tiles = counts.tiles;

    summary.seconds = start.elapsed().as_secs_f64();
    summary.images_per_second = summary.images as f64 / summary.seconds.max(1e-9);
    summary.problem_counts = problems.counts();
    write_problems(&cfg.out.join("problems.jsonl"), &problems)?;
    crate::sink::write_json(&cfg.out.join("summary.json"), &summary)?;
    Ok((summary, problems))
}

/// The making side of [`run_tile`]: every shard's samples planned from their headers, grouped
/// into chunks that hold at most `cfg.chunk_bytes` (decoded images plus tiles, see
/// [`tile_chunks`](super::tile_chunks)), each chunk decoded, tiled and handed to `outlet` (the
/// writer, or the download thread for a device backend). Stops early, without an error of its
/// own, when a later stage has stopped (its error is the run's).
#[allow(clippy::too_many_arguments)]
fn tile_sources<B: Backend>(
    backend: &B,
    sources: &[ShardSource],
    cfg: &TileConfig,
    tiler: &Tiler,
    summary: &mut TileSummary,
    problems: &mut ProblemLog,
    outlet: &Outlet<B::Tiles>,
    progress: &indicatif::ProgressBar,
) -> Result<()> {
    let mut written_keys: HashSet<u64> = HashSet::new();
    for source in sources {
        let shard = match Shard::open(source) {
            Ok(shard) => shard,
            Err(err) => {
                problems.push(source_problem(source, err));
                continue;
            }
        };
        summary.shards += 1;
        summary.samples += shard.samples().len();
        problems.extend(shard.problems().iter().cloned());

        let mut make = |images: Vec<PlannedImage>, member_bytes: u64, problems: &mut ProblemLog| {
            let fresh = |planned: &Planned| {
                // Keys must be unique across the run: a second image with the same key is
                // recorded and skipped rather than overwriting the first one's tiles.
                written_keys.insert(key_hash(&planned.sample.key))
            };
            if images.is_empty() {
                // Only samples that failed planning: nothing to make, their bytes are done.
                progress.inc(member_bytes);
                return Ok(true);
            }
            summary.chunks += 1;
            // A failed send means a later stage stopped; its error ends the run.
            let sent = match outlet {
                Outlet::Download(to_download) => {
                    let (planned, tiles) =
                        tile_chunk_on_device(backend, &shard, images, cfg, fresh, problems)?;
                    to_download
                        .send(chunk_out(&shard, &planned, tiles, member_bytes))
                        .is_ok()
                }
                Outlet::Writer(to_writer) => {
                    let (planned, tiles) =
                        tile_chunk_on_cpu(backend, &shard, images, cfg, fresh, problems)?;
                    to_writer
                        .send(chunk_out(&shard, &planned, tiles, member_bytes))
                        .is_ok()
                }
            };
            Ok::<bool, Error>(sent)
        };

        // The next chunk is planned (and read in) on a thread of its own while this one is
        // made; a rendezvous channel keeps it to one chunk ahead.
        let made = std::thread::scope(|scope| -> Result<bool> {
            let (to_maker, chunks) = sync_channel(0);
            let decodes = backend.decodes();
            let shard = &shard;
            scope.spawn(move || plan_chunks(shard, tiler, cfg, decodes, to_maker));
            for chunk in chunks {
                problems.extend(chunk.problems);
                if !make(chunk.images, chunk.member_bytes, problems)? {
                    // Dropping `chunks` on return stops the planner at its next hand-over.
                    return Ok(false);
                }
            }
            Ok(true)
        })?;
        if !made {
            return Ok(());
        }
    }
    Ok(())
}

/// A made chunk as the later stages take it: what they need of each image, owned.
fn chunk_out<T>(shard: &Shard, planned: &[Planned], tiles: T, member_bytes: u64) -> ChunkOut<T> {
    ChunkOut {
        shard: shard.path().to_path_buf(),
        images: planned
            .iter()
            .map(|p| Written {
                key: p.sample.key.clone(),
                size: p.size,
                plan: p.plan,
            })
            .collect(),
        tiles,
        member_bytes,
    }
}

/// The download side of [`run_tile`] for a backend that decodes on its device: each chunk's
/// tiles brought to the host while the making side works on the next chunk, then handed to
/// the writer. Stops early, without an error of its own, when the writer has stopped.
fn download_chunks<B: Backend>(
    backend: &B,
    chunks: Receiver<ChunkOut<B::Tiles>>,
    to_writer: SyncSender<WriteJob>,
) -> Result<()> {
    for chunk in chunks {
        let tiles = backend.tiles_to_host(chunk.tiles)?;
        let job = ChunkOut {
            shard: chunk.shard,
            images: chunk.images,
            tiles,
            member_bytes: chunk.member_bytes,
        };
        if to_writer.send(job).is_err() {
            break;
        }
    }
    Ok(())
}

/// The writing side of [`run_tile`]: each chunk's `KEY.npy` files (across cores) and index
/// lines, in the order the chunks were made; stops at the first output error.
fn write_chunks(
    cfg: &TileConfig,
    mut index: std::io::BufWriter<std::fs::File>,
    index_path: &Path,
    jobs: Receiver<WriteJob>,
    progress: &indicatif::ProgressBar,
) -> Result<WriteCounts> {
    let mut counts = WriteCounts::default();
    for job in jobs {
        let files: Vec<Result<String>> = job
            .images
            .par_iter()
            .enumerate()
            .map(|(i, w)| match cfg.write_tiles {
                true => write_image(cfg, &job.tiles, i, &w.key),
                false => Ok(String::new()),
            })
            .collect();
        for (i, (w, file)) in job.images.iter().zip(files).enumerate() {
            let slot = &job.tiles.layout.slots[i];
            let line = IndexLine {
                key: &w.key,
                shard: &job.shard,
                file: file?,
                width: w.size.0,
                height: w.size.1,
                grid: w.plan.grid,
                tiles: w.plan.num_tiles(),
                thumbnail: w.plan.thumbnail.is_some(),
                shape: slot.shape(cfg.spec.dtype),
                dtype: cfg.spec.dtype,
            };
            serde_json::to_writer(&mut index, &line).map_err(|e| Error::Output {
                path: index_path.to_path_buf(),
                reason: e.to_string(),
            })?;
            index
                .write_all(b"\n")
                .map_err(|e| Error::io(index_path, e))?;
            counts.images += 1;
            counts.tiles += u64::from(w.plan.num_tiles());
        }
        progress.inc(job.member_bytes);
        progress.set_message(format!("{} images", counts.images));
        // Written: the batch buffer can take a later chunk's tiles.
        buffer_pool::recycle(job.tiles.data);
    }
    index.flush().map_err(|e| Error::io(index_path, e))?;
    Ok(counts)
}

/// Decodes a chunk on the CPU (across cores), then tiles it on `backend` as one batch. An image
/// the backend refuses is found, recorded and left out; the rest of the batch goes on.
fn tile_chunk_on_cpu<'s, B: Backend>(
    backend: &B,
    shard: &Shard,
    chunk: Vec<PlannedImage<'s, '_>>,
    cfg: &TileConfig,
    mut fresh: impl FnMut(&Planned) -> bool,
    problems: &mut ProblemLog,
) -> Result<(Vec<Planned<'s>>, HostTiles)> {
    let (decoded, mut bad): (Vec<_>, Vec<_>) = chunk
        .into_par_iter()
        .map(|image| decode_planned(shard, image, cfg))
        .partition(|r| r.is_ok());
    problems.extend(bad.drain(..).filter_map(|r| r.err()));
    let mut decoded: Vec<Decoded> = decoded.into_iter().filter_map(|r| r.ok()).collect();
    decoded.retain(|d| keep_fresh(shard, &d.planned, &mut fresh, problems));

    let tiles = match tile_decoded(backend, &decoded, &cfg.spec) {
        Ok(tiles) => tiles,
        Err(_) => {
            // One image the backend cannot handle must not cost the batch: find it (rare
            // path, one image at a time), record it, and tile the rest.
            decoded.retain(
                |d| match tile_decoded(backend, std::slice::from_ref(d), &cfg.spec) {
                    Ok(_) => true,
                    Err(err) => {
                        let kind = image_error_kind(&err);
                        problems.push(sample_problem(
                            shard,
                            d.planned.sample,
                            kind,
                            err.to_string(),
                        ));
                        false
                    }
                },
            );
            tile_decoded(backend, &decoded, &cfg.spec)?
        }
    };
    let planned = decoded
        .into_iter()
        .map(|d| {
            // The pixels are tiled: their buffer can hold the next chunk's decodes.
            buffer_pool::recycle(d.image.data);
            d.planned
        })
        .collect();
    Ok((planned, tiles))
}

/// Hands a chunk's encoded images to a backend that decodes on its device (CUDA: nvJPEG); the
/// tiles stay there for the download thread. Images that fail to decode are recorded and left
/// out of the batch.
fn tile_chunk_on_device<'s, B: Backend>(
    backend: &B,
    shard: &Shard,
    mut chunk: Vec<PlannedImage<'s, '_>>,
    cfg: &TileConfig,
    mut fresh: impl FnMut(&Planned) -> bool,
    problems: &mut ProblemLog,
) -> Result<(Vec<Planned<'s>>, B::Tiles)> {
    chunk.retain(|image| keep_fresh(shard, &image.planned, &mut fresh, problems));
    let encoded: Vec<&[u8]> = chunk.iter().map(|image| &*image.data).collect();
    let plans: Vec<TilePlan> = chunk.iter().map(|image| image.planned.plan).collect();
    let (tiles, errors) =
        backend.decode_tile_batch(&encoded, &plans, &cfg.spec, cfg.decode.max_pixels)?;
    let mut kept = Vec::with_capacity(chunk.len());
    for (image, error) in chunk.into_iter().zip(errors) {
        match error {
            None => kept.push(image.planned),
            Some(err) => problems.push(sample_problem(
                shard,
                image.planned.sample,
                image_error_kind(&err),
                err.to_string(),
            )),
        }
    }
    Ok((kept, tiles))
}

/// Whether `planned`'s key is new in this run; a repeated key is recorded as a problem.
fn keep_fresh(
    shard: &Shard,
    planned: &Planned,
    fresh: &mut impl FnMut(&Planned) -> bool,
    problems: &mut ProblemLog,
) -> bool {
    let is_fresh = fresh(planned);
    if !is_fresh {
        problems.push(sample_problem(
            shard,
            planned.sample,
            "duplicate-key",
            "key already written from an earlier shard; skipped".into(),
        ));
    }
    is_fresh
}

/// Tiles a run of decoded images as one batch and brings it to the host.
fn tile_decoded<B: Backend>(
    backend: &B,
    decoded: &[Decoded],
    spec: &TileSpec,
) -> Result<HostTiles> {
    let images: Vec<&RgbImage> = decoded.iter().map(|d| &d.image).collect();
    let plans: Vec<TilePlan> = decoded.iter().map(|d| d.planned.plan).collect();
    backend.tiles_to_host(backend.tile_batch(&images, &plans, spec)?)
}

/// Decodes a planned image (with the header its planning probed: one parse of the markers per
/// image), at a reduced DCT scale when `cfg.dct_scaling` allows.
fn decode_planned<'s>(
    shard: &Shard,
    image: PlannedImage<'s, '_>,
    cfg: &TileConfig,
) -> Result<Decoded<'s>, Problem> {
    let PlannedImage {
        planned,
        data,
        header,
    } = image;
    let options = decode_options(cfg.decode, cfg.dct_scaling, &planned.plan);
    match decode_with_header(&data, &header, &options) {
        Ok(decoded) => Ok(Decoded {
            planned,
            image: decoded.image,
        }),
        Err(e) => Err(sample_problem(
            shard,
            planned.sample,
            image_error_kind(&e),
            e.to_string(),
        )),
    }
}

fn key_hash(key: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

/// Writes `KEY.npy` (and PNGs when asked); returns the npy path relative to the output folder.
fn write_image(cfg: &TileConfig, tiles: &HostTiles, i: usize, key: &str) -> Result<String> {
    let slot = &tiles.layout.slots[i];
    let file = format!("{key}.npy");
    let shape = slot.shape(tiles.dtype);
    write_npy(
        &cfg.out.join(&file),
        tiles.dtype.npy_descr(),
        &shape,
        tiles.image_bytes(i),
    )?;
    if cfg.png {
        crate::sink::png::write_tile_pngs(&cfg.out, key, tiles, i, &cfg.spec)?;
    }
    Ok(file)
}

pub(crate) fn write_problems(path: &Path, problems: &ProblemLog) -> Result<()> {
    crate::sink::write_atomically(path, |out| {
        for p in &problems.problems {
            serde_json::to_writer(&mut *out, p)?;
            out.write_all(b"\n")?;
        }
        Ok(())
    })
}

fn source_problem(source: &ShardSource, err: Error) -> Problem {
    let path = match source {
        ShardSource::Tar(p) | ShardSource::Folder(p) => p.clone(),
    };
    Problem {
        shard: path,
        offset: None,
        key: None,
        kind: "io",
        message: err.to_string(),
    }
}
