//! The semantic tier's measurement: synthetic embeddings with planted near-duplicates, then fit,
//! assign, pairs and groups, each timed, with recall of the planted pairs and peak memory
//! (VmHWM). Writes the embeddings, centroids, assignment and pairs as .npy into `--out` so that
//! `benches/semdedup_numpy.py` runs the same algorithm on the same data and checks its pairs.
//!
//! `cargo run --release --example semdedup_synthetic -- --rows 200000 --out /tmp/semdedup`

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use vlmprep::curate::groups::UnionFind;
use vlmprep::curate::semantic::synthetic::{SyntheticSpec, generate};
use vlmprep::curate::semantic::{Centroids, SemanticParams, duplicate_pairs, kept_fraction_by_eps};

/// CPU time of the whole process so far (user + system, all threads), in seconds: on a shared
/// machine the firmer figure next to wall time.
fn cpu_s() -> f64 {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return f64::NAN;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

fn vm_hwm_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// Writes a C-order .npy file of `shape` with numpy dtype `descr` (`<f4`, `<u4`); `values` are
/// 4-byte little-endian numbers, converted in chunks so a 3 GB array is never copied whole.
fn write_npy<T: Copy>(
    path: &Path,
    descr: &str,
    shape: &[usize],
    values: &[T],
    to_le: impl Fn(T) -> [u8; 4],
) -> std::io::Result<()> {
    let shape_s = match shape {
        [n] => format!("({n},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_s}, }}");
    // Magic (6) + version (2) + length (2) + header, padded with spaces to 64 bytes, then \n.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    f.write_all(b"\x93NUMPY\x01\x00")?;
    f.write_all(&(header.len() as u16).to_le_bytes())?;
    f.write_all(header.as_bytes())?;
    let mut bytes = Vec::with_capacity(1 << 22);
    for chunk in values.chunks(1 << 20) {
        bytes.clear();
        bytes.extend(chunk.iter().flat_map(|&x| to_le(x)));
        f.write_all(&bytes)?;
    }
    f.flush()
}

fn main() -> anyhow::Result<()> {
    let mut rows = 200_000usize;
    let mut dim = 768usize;
    let mut topics = 0usize;
    let mut planted = 0usize;
    let mut out = PathBuf::from("/tmp/semdedup");
    // Runs the timed phases this many times (the last run's figures are reported): for
    // profiling the phases without the generator dominating the profile.
    let mut repeat = 1usize;
    let mut params = SemanticParams {
        eps: 0.05,
        ..SemanticParams::default()
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).map(String::as_str).unwrap_or("");
        match pair[0].as_str() {
            "--rows" => rows = value.parse()?,
            "--dim" => dim = value.parse()?,
            "--topics" => topics = value.parse()?,
            "--planted" => planted = value.parse()?,
            "--clusters" => params.clusters = value.parse()?,
            "--fit-sample" => params.fit_sample = value.parse()?,
            "--iterations" => params.iterations = value.parse()?,
            "--eps" => params.eps = value.parse()?,
            "--out" => out = PathBuf::from(value),
            "--repeat" => repeat = value.parse::<usize>()?.max(1),
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    // Defaults: topics as many as the automatic clusters, 2% of rows planted pairs.
    let k = params.clusters_for(rows);
    if topics == 0 {
        topics = k;
    }
    if planted == 0 {
        planted = rows / 50;
    }
    std::fs::create_dir_all(&out)?;
    println!(
        "rows {rows} dim {dim} topics {topics} planted {planted} clusters {k} fit_sample {} \
         iterations {} eps {} threads {}",
        params.fit_sample,
        params.iterations,
        params.eps,
        rayon::current_num_threads()
    );

    let t = Instant::now();
    let s = generate(&SyntheticSpec {
        rows,
        dim,
        topics,
        planted,
        min_cosine: 0.95,
        max_cosine: 0.999,
        topic_weight: 0.5,
        seed: 42,
    })?;
    println!(
        "generate {:.2} s, VmHWM {:.0} MiB",
        t.elapsed().as_secs_f64(),
        vm_hwm_mib()
    );
    write_npy(
        &out.join("emb.npy"),
        "<f4",
        &[rows, dim],
        &s.data,
        f32::to_le_bytes,
    )?;
    let planted_flat: Vec<u32> = s.planted.iter().flat_map(|p| [p.0, p.1]).collect();
    write_npy(
        &out.join("planted.npy"),
        "<u4",
        &[s.planted.len(), 2],
        &planted_flat,
        u32::to_le_bytes,
    )?;
    let hwm_data = vm_hwm_mib();

    for _ in 1..repeat {
        let c = Centroids::fit(&s.data, dim, &params)?;
        let a = c.assign(&s.data)?;
        duplicate_pairs(&s.data, dim, &a, params.min_cosine())?;
    }
    let (t, cpu) = (Instant::now(), cpu_s());
    let c = Centroids::fit(&s.data, dim, &params)?;
    let (fit_s, fit_cpu) = (t.elapsed().as_secs_f64(), cpu_s() - cpu);
    let (t, cpu) = (Instant::now(), cpu_s());
    let a = c.assign(&s.data)?;
    let (assign_s, assign_cpu) = (t.elapsed().as_secs_f64(), cpu_s() - cpu);
    let (t, cpu) = (Instant::now(), cpu_s());
    let pairs = duplicate_pairs(&s.data, dim, &a, params.min_cosine())?;
    let (pairs_s, pairs_cpu) = (t.elapsed().as_secs_f64(), cpu_s() - cpu);
    let (t, cpu) = (Instant::now(), cpu_s());
    let mut uf = UnionFind::new(rows);
    for &(i, j, _) in &pairs {
        uf.union(i, j);
    }
    let groups = uf.groups();
    let eps_list = [0.001f32, 0.005, 0.01, 0.02, 0.05];
    let kept = kept_fraction_by_eps(rows, &pairs, &eps_list);
    let (groups_s, groups_cpu) = (t.elapsed().as_secs_f64(), cpu_s() - cpu);
    let hwm = vm_hwm_mib();

    let found: std::collections::HashSet<(u32, u32)> = pairs.iter().map(|p| (p.0, p.1)).collect();
    let hits = s
        .planted
        .iter()
        .filter(|p| found.contains(&(p.0, p.1)))
        .count();
    let recall = hits as f64 / s.planted.len().max(1) as f64;
    let planted_set: std::collections::HashSet<(u32, u32)> =
        s.planted.iter().map(|p| (p.0, p.1)).collect();
    let unplanted = pairs
        .iter()
        .filter(|p| !planted_set.contains(&(p.0, p.1)))
        .count();
    println!(
        "fit {fit_s:.2} s | assign {assign_s:.2} s | pairs {pairs_s:.2} s | groups {groups_s:.3} s"
    );
    println!(
        "cpu: fit {fit_cpu:.2} s | assign {assign_cpu:.2} s | pairs {pairs_cpu:.2} s | groups {groups_cpu:.3} s"
    );
    println!(
        "pairs {} ({} not planted), groups {}, recall {recall:.4} ({hits}/{})",
        pairs.len(),
        unplanted,
        groups.len(),
        s.planted.len()
    );
    for (e, f) in &kept {
        println!("eps {e}: kept {f:.4}");
    }
    println!(
        "VmHWM {hwm:.0} MiB (embeddings {:.0} MiB; after generating and writing {hwm_data:.0} MiB)",
        (rows * dim * 4) as f64 / (1 << 20) as f64
    );

    write_npy(
        &out.join("centroids.npy"),
        "<f4",
        &[c.len(), dim],
        &c.data,
        f32::to_le_bytes,
    )?;
    write_npy(
        &out.join("cluster.npy"),
        "<u4",
        &[rows],
        &a.cluster,
        u32::to_le_bytes,
    )?;
    let pairs_flat: Vec<u32> = pairs.iter().flat_map(|p| [p.0, p.1]).collect();
    write_npy(
        &out.join("pairs_ij.npy"),
        "<u4",
        &[pairs.len(), 2],
        &pairs_flat,
        u32::to_le_bytes,
    )?;
    let cos: Vec<f32> = pairs.iter().map(|p| p.2).collect();
    write_npy(
        &out.join("pairs_cos.npy"),
        "<f4",
        &[pairs.len()],
        &cos,
        f32::to_le_bytes,
    )?;
    let json = serde_json::json!({
        "rows": rows, "dim": dim, "clusters": c.len(), "fit_sample": params.fit_sample,
        "iterations": params.iterations, "seed": params.seed, "eps": params.eps,
        "threads": rayon::current_num_threads(),
        "pair_tile": vlmprep::curate::semantic::pairs::PAIR_TILE,
        "fit_s": fit_s, "assign_s": assign_s, "pairs_s": pairs_s, "groups_s": groups_s,
        "fit_cpu_s": fit_cpu, "assign_cpu_s": assign_cpu, "pairs_cpu_s": pairs_cpu,
        "groups_cpu_s": groups_cpu,
        "pairs": pairs.len(), "recall": recall, "vm_hwm_mib": hwm, "vm_hwm_data_mib": hwm_data,
    });
    std::fs::write(out.join("rust.json"), serde_json::to_string_pretty(&json)?)?;
    Ok(())
}
