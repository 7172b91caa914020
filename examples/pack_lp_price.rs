//! Pricing step of the configuration-LP lower bound for two-limit packing
//! (`benches/pack_lp_bound.py` drives it; the LP itself is solved there with HiGHS).
//!
//! Given item types (token class, tile count) with dual prices, finds the pack contents of
//! highest total price that fit the limits: an unbounded two-dimensional knapsack by dynamic
//! programming over (token room, tile room). The best value is what the bound needs (Farley's
//! bound divides the LP value by it); the pack itself becomes a new LP column. To add several
//! columns per LP solve, the search is repeated with the prices of the types just used set to
//! zero.
//!
//! stdin: `C T N K`, then N lines `w t y` (token class, tiles, price); C and w in token classes.
//! stdout: `V best_value`, then up to K lines, one pack each: `type:count type:count ...`.
//!
//! ```sh
//! cargo build --release --example pack_lp_price
//! ```

use std::io::Read;

/// One dynamic-programming pass: best value per (token room, tile room) and the type taken
/// last to reach it (`NONE`: nothing fits; `LESS_TOKENS` / `LESS_TILES`: the value of a
/// smaller room).
const NONE: u32 = u32::MAX;
const LESS_TOKENS: u32 = u32::MAX - 1;
const LESS_TILES: u32 = u32::MAX - 2;

struct Types {
    w: Vec<usize>,
    t: Vec<usize>,
    y: Vec<f64>,
}

/// The best pack for prices `y`: its value and its contents (type, count).
fn best_pack(c: usize, tiles: usize, types: &Types, y: &[f64]) -> (f64, Vec<(usize, u32)>) {
    // Types with a positive price; per tile count, only those not beaten by a type with fewer
    // or equal tokens and a higher price (the DP would never prefer them).
    let mut live: Vec<usize> = (0..y.len())
        .filter(|&i| y[i] > 1e-12 && (types.w[i] > 0 || types.t[i] > 0))
        .collect();
    live.sort_by(|&a, &b| {
        (types.t[a], types.w[a])
            .cmp(&(types.t[b], types.w[b]))
            .then(y[b].total_cmp(&y[a]))
    });
    let mut kept: Vec<usize> = Vec::with_capacity(live.len());
    let mut best_of_t = (usize::MAX, f64::NEG_INFINITY);
    for i in live {
        if types.t[i] != best_of_t.0 {
            best_of_t = (types.t[i], f64::NEG_INFINITY);
        }
        if y[i] > best_of_t.1 {
            best_of_t.1 = y[i];
            kept.push(i);
        }
    }
    let stride = tiles + 1;
    let mut value = vec![0f64; (c + 1) * stride];
    let mut last = vec![NONE; (c + 1) * stride];
    for cc in 0..=c {
        for ta in 0..=tiles {
            let at = cc * stride + ta;
            let (mut v, mut from) = (0.0, NONE);
            if cc > 0 && value[at - stride] > v {
                (v, from) = (value[at - stride], LESS_TOKENS);
            }
            if ta > 0 && value[at - 1] > v {
                (v, from) = (value[at - 1], LESS_TILES);
            }
            for &i in &kept {
                let (w, t) = (types.w[i], types.t[i]);
                if w <= cc && t <= ta {
                    let cand = value[(cc - w) * stride + ta - t] + y[i];
                    if cand > v + 1e-12 {
                        (v, from) = (cand, i as u32);
                    }
                }
            }
            value[at] = v;
            last[at] = from;
        }
    }
    let mut pack: Vec<(usize, u32)> = Vec::new();
    let (mut cc, mut ta) = (c, tiles);
    loop {
        match last[cc * stride + ta] {
            NONE => break,
            LESS_TOKENS => cc -= 1,
            LESS_TILES => ta -= 1,
            i => {
                let i = i as usize;
                match pack.iter_mut().find(|(k, _)| *k == i) {
                    Some((_, n)) => *n += 1,
                    None => pack.push((i, 1)),
                }
                cc -= types.w[i];
                ta -= types.t[i];
            }
        }
    }
    pack.sort_unstable();
    (value[c * stride + tiles], pack)
}

fn main() -> Result<(), String> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .map_err(|e| format!("stdin: {e}"))?;
    let mut words = input.split_whitespace();
    let mut next = |what: &str| {
        words
            .next()
            .ok_or_else(|| format!("input ends before {what}"))
    };
    let num = |s: &str| s.parse::<usize>().map_err(|e| format!("`{s}`: {e}"));
    let c = num(next("C")?)?;
    let tiles = num(next("T")?)?;
    let n = num(next("N")?)?;
    let k = num(next("K")?)?;
    let mut types = Types {
        w: Vec::with_capacity(n),
        t: Vec::with_capacity(n),
        y: Vec::with_capacity(n),
    };
    for _ in 0..n {
        types.w.push(num(next("w")?)?);
        types.t.push(num(next("t")?)?);
        let y = next("y")?;
        types
            .y
            .push(y.parse().map_err(|e| format!("price `{y}`: {e}"))?);
    }
    let mut y = types.y.clone();
    let mut out = String::new();
    for round in 0..k.max(1) {
        let (v, pack) = best_pack(c, tiles, &types, &y);
        if round == 0 {
            out.push_str(&format!("V {v}\n"));
        }
        // A pack worth at most 1 prices out: no column to add.
        if v <= 1.0 + 1e-9 || pack.is_empty() {
            break;
        }
        let line: Vec<String> = pack.iter().map(|(i, m)| format!("{i}:{m}")).collect();
        out.push_str(&line.join(" "));
        out.push('\n');
        for &(i, _) in &pack {
            y[i] = 0.0;
        }
    }
    print!("{out}");
    Ok(())
}
