//! VLM tiling rules as pure functions from (width, height, settings) to a [`TilePlan`]:
//! InternVL dynamic tiling, Qwen2-VL smart resize, and a fixed S×S squash (SigLIP).
//! Each decides exactly as its reference implementation does, down to the float operations;
//! tests/tiling_golden.rs checks that against vectors made by tests/fixtures/tiling/make_golden.py.

use std::fmt;

use crate::error::{Error, Result};

/// Largest `max_tiles` accepted: a bound on the candidate list (about `max · ln(max)` grids,
/// rebuilt by [`Tiler::new`]) far above what InternVL models use (6–40).
pub const MAX_TILES_LIMIT: u32 = 4096;

/// InternVL `dynamic_preprocess` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InternVlSettings {
    /// Side of a square tile in pixels (InternVL: 448).
    pub tile_size: u32,
    /// Fewest tiles in the grid (`min_num`, default 1). 0 behaves as 1, as in InternVL.
    pub min_tiles: u32,
    /// Most tiles in the grid (`max_num`, default 12).
    pub max_tiles: u32,
    /// Append a tile_size² thumbnail of the whole image when the grid has more than one tile.
    pub thumbnail: bool,
}

impl Default for InternVlSettings {
    fn default() -> Self {
        InternVlSettings {
            tile_size: 448,
            min_tiles: 1,
            max_tiles: 12,
            thumbnail: true,
        }
    }
}

impl InternVlSettings {
    /// Checks the settings: tile size and max tiles nonzero, `min_tiles <= max_tiles <=`
    /// [`MAX_TILES_LIMIT`], and `tile_size * max_tiles` fits in u32 (the widest resize).
    pub fn validate(&self) -> Result<()> {
        if self.tile_size == 0 {
            return Err(Error::TilingSettings(
                "InternVL tile_size must be > 0".into(),
            ));
        }
        if self.max_tiles == 0 {
            return Err(Error::TilingSettings(
                "InternVL max_tiles must be > 0".into(),
            ));
        }
        if self.min_tiles > self.max_tiles {
            return Err(Error::TilingSettings(format!(
                "InternVL min_tiles {} > max_tiles {}",
                self.min_tiles, self.max_tiles
            )));
        }
        if self.max_tiles > MAX_TILES_LIMIT {
            return Err(Error::TilingSettings(format!(
                "InternVL max_tiles {} exceeds the supported {MAX_TILES_LIMIT}",
                self.max_tiles
            )));
        }
        if self.tile_size.checked_mul(self.max_tiles).is_none() {
            return Err(Error::TilingSettings(format!(
                "InternVL tile_size {} × max_tiles {} overflows u32",
                self.tile_size, self.max_tiles
            )));
        }
        Ok(())
    }

    /// The candidate grids `(cols, rows)` in the order InternVL walks them.
    ///
    /// InternVL builds `sorted(set(generator), key=cols*rows)`. `sorted` is stable, so grids with
    /// the same tile count keep the CPython set's iteration order, which is neither
    /// lexicographic nor insertion order. That order decides the outcome when two grids of equal
    /// tile count tie for closest. With `min_tiles <= 1` that cannot happen: between equal-count
    /// grids c1/r1 < c2/r2 lies c1/r2, a candidate with fewer tiles that is strictly (and by far
    /// more than rounding error) closer to any aspect ratio halfway between them. With a larger
    /// minimum it does: for min = max = 4, 5:8 is exactly halfway between 1:4 and 2:2. So the
    /// set is reproduced here: same insertion order, CPython's tuple hash, table and probing.
    /// Checked against CPython 3.11 for every 1 <= min <= max <= 48 (tests/tiling_golden.rs).
    pub fn target_ratios(&self) -> Vec<(u32, u32)> {
        let mut grids = cpython_set_order(first_occurrences(self.min_tiles, self.max_tiles));
        grids.sort_by_key(|&(c, r)| u64::from(c) * u64::from(r));
        grids
    }
}

/// Qwen2-VL `smart_resize` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Qwen2VlSettings {
    /// Both sides become multiples of this (patch 14 × merge 2 = 28).
    pub factor: u32,
    /// Lower bound on the resized area.
    pub min_pixels: u64,
    /// Upper bound on the resized area.
    pub max_pixels: u64,
}

impl Default for Qwen2VlSettings {
    fn default() -> Self {
        // Qwen2-VL image processor defaults: min 56*56, max 28*28*1280.
        Qwen2VlSettings {
            factor: 28,
            min_pixels: 56 * 56,
            max_pixels: 28 * 28 * 1280,
        }
    }
}

impl Qwen2VlSettings {
    /// Checks the settings: factor > 0 and `1 <= min_pixels <= max_pixels`.
    ///
    /// `min_pixels = 0` is refused because the reference then resizes small images to 0×0.
    pub fn validate(&self) -> Result<()> {
        if self.factor == 0 {
            return Err(Error::TilingSettings("Qwen2-VL factor must be > 0".into()));
        }
        if self.min_pixels == 0 {
            return Err(Error::TilingSettings(
                "Qwen2-VL min_pixels must be > 0".into(),
            ));
        }
        if self.min_pixels > self.max_pixels {
            return Err(Error::TilingSettings(format!(
                "Qwen2-VL min_pixels {} > max_pixels {}",
                self.min_pixels, self.max_pixels
            )));
        }
        Ok(())
    }

    /// transformers' `smart_resize` (as of 5.23.0), returning `(width, height)` (the reference
    /// returns `(height, width)`). Settings are assumed valid (see [`Self::validate`]).
    ///
    /// Same operations as the Python: `round` is half-to-even, int/int divisions are correctly
    /// rounded (as Python's are, even past 2^53), sqrt/floor/ceil are IEEE f64.
    pub fn smart_resize(&self, width: u32, height: u32) -> Result<(u32, u32)> {
        let refuse = |reason| Error::TilingRefused {
            width,
            height,
            reason,
        };
        if width == 0 || height == 0 {
            return Err(refuse(TilingRefusal::ZeroSize));
        }
        // u32 -> f64 is exact, so this division is Python's int/int division.
        if f64::from(width.max(height)) / f64::from(width.min(height)) > 200.0 {
            return Err(refuse(TilingRefusal::AspectRatio));
        }
        let factor = u128::from(self.factor);
        let f = f64::from(self.factor);
        let (h, w) = (f64::from(height), f64::from(width));
        // f64 results below are integral and < 2^64, so `as u128` is exact.
        let mut h_bar = (h / f).round_ties_even() as u128 * factor;
        let mut w_bar = (w / f).round_ties_even() as u128 * factor;
        let area = u128::from(height) * u128::from(width);
        if h_bar * w_bar > u128::from(self.max_pixels) {
            let beta = int_true_div(area, u128::from(self.max_pixels)).sqrt();
            h_bar = factor.max((h / beta / f).floor() as u128 * factor);
            w_bar = factor.max((w / beta / f).floor() as u128 * factor);
        } else if h_bar * w_bar < u128::from(self.min_pixels) {
            let beta = int_true_div(u128::from(self.min_pixels), area).sqrt();
            h_bar = (h * beta / f).ceil() as u128 * factor;
            w_bar = (w * beta / f).ceil() as u128 * factor;
        }
        match (u32::try_from(w_bar), u32::try_from(h_bar)) {
            (Ok(w_bar), Ok(h_bar)) => Ok((w_bar, h_bar)),
            _ => Err(refuse(TilingRefusal::TooLarge)),
        }
    }
}

/// A tiling rule with its settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TilingRule {
    /// InternVL dynamic tiling.
    InternVl(InternVlSettings),
    /// Qwen2-VL smart resize (one tile: the resized image).
    Qwen2Vl(Qwen2VlSettings),
    /// Squash to size×size (SigLIP's image processor).
    Fixed {
        /// Output side in pixels.
        size: u32,
    },
}

impl TilingRule {
    /// Checks the rule's settings ([`Error::TilingSettings`] when no image could be planned).
    pub fn validate(&self) -> Result<()> {
        match self {
            TilingRule::InternVl(s) => s.validate(),
            TilingRule::Qwen2Vl(s) => s.validate(),
            TilingRule::Fixed { size: 0 } => {
                Err(Error::TilingSettings("fixed size must be > 0".into()))
            }
            TilingRule::Fixed { .. } => Ok(()),
        }
    }
}

/// Why a rule refuses an image ([`Error::TilingRefused`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TilingRefusal {
    /// Width or height is 0 (the references divide by it, or cannot hold such an image).
    ZeroSize,
    /// Qwen2-VL: the long side is more than 200× the short side (transformers raises).
    AspectRatio,
    /// A side of the resized image would not fit in u32.
    TooLarge,
}

impl TilingRefusal {
    /// Short snake_case name (as in the golden vectors and reports).
    pub fn name(self) -> &'static str {
        match self {
            TilingRefusal::ZeroSize => "zero_size",
            TilingRefusal::AspectRatio => "aspect_ratio",
            TilingRefusal::TooLarge => "too_large",
        }
    }
}

impl fmt::Display for TilingRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TilingRefusal::ZeroSize => "zero width or height",
            TilingRefusal::AspectRatio => "aspect ratio above 200:1 (Qwen2-VL limit)",
            TilingRefusal::TooLarge => "resized side does not fit in u32",
        })
    }
}

/// What to do with one image: resize it to `resize`, cut a `grid` of `tile`-sized tiles in
/// row-major order, and optionally append a thumbnail (the whole image squashed to a square).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct TilePlan {
    /// (width, height) the whole image is resized to.
    pub resize: (u32, u32),
    /// (columns, rows) of tiles cut from the resized image.
    pub grid: (u32, u32),
    /// (width, height) of each grid tile.
    pub tile: (u32, u32),
    /// Side of the extra thumbnail tile, if any.
    pub thumbnail: Option<u32>,
}

impl TilePlan {
    /// Number of output tiles, the thumbnail included.
    pub fn num_tiles(&self) -> u32 {
        self.grid.0 * self.grid.1 + u32::from(self.thumbnail.is_some())
    }
}

/// A validated rule, ready to plan many images: InternVL's candidate list is built once here
/// rather than per image.
#[derive(Debug, Clone)]
pub struct Tiler {
    rule: TilingRule,
    /// InternVL candidate grids in reference order; empty for the other rules.
    grids: Vec<(u32, u32)>,
}

impl Tiler {
    /// Validates `rule` and precomputes what it needs.
    pub fn new(rule: TilingRule) -> Result<Self> {
        rule.validate()?;
        let grids = match &rule {
            TilingRule::InternVl(s) => s.target_ratios(),
            _ => Vec::new(),
        };
        Ok(Tiler { rule, grids })
    }

    /// The rule this tiler applies.
    pub fn rule(&self) -> &TilingRule {
        &self.rule
    }

    /// Decides the plan for an image of `width`×`height` (after EXIF orientation).
    pub fn plan(&self, width: u32, height: u32) -> Result<TilePlan> {
        if width == 0 || height == 0 {
            return Err(Error::TilingRefused {
                width,
                height,
                reason: TilingRefusal::ZeroSize,
            });
        }
        match &self.rule {
            TilingRule::InternVl(s) => {
                let (cols, rows) = closest_grid(&self.grids, width, height, s.tile_size);
                // validate() bounds tile_size * max_tiles, and cols, rows <= max_tiles.
                let size = s.tile_size;
                Ok(TilePlan {
                    resize: (size * cols, size * rows),
                    grid: (cols, rows),
                    tile: (size, size),
                    thumbnail: (s.thumbnail && cols * rows != 1).then_some(size),
                })
            }
            TilingRule::Qwen2Vl(s) => {
                let (w, h) = s.smart_resize(width, height)?;
                Ok(TilePlan {
                    resize: (w, h),
                    grid: (1, 1),
                    tile: (w, h),
                    thumbnail: None,
                })
            }
            &TilingRule::Fixed { size } => Ok(TilePlan {
                resize: (size, size),
                grid: (1, 1),
                tile: (size, size),
                thumbnail: None,
            }),
        }
    }
}

/// Decides the plan for an image of `width`×`height` (after EXIF orientation).
///
/// Validates the rule on every call; use a [`Tiler`] to plan many images under one rule.
pub fn plan(rule: &TilingRule, width: u32, height: u32) -> Result<TilePlan> {
    Tiler::new(*rule)?.plan(width, height)
}

/// InternVL `find_closest_aspect_ratio`: the first grid with the smallest |aspect - cols/rows|,
/// except that a later grid with an exactly equal difference replaces it when the image area
/// exceeds half the grid's pixel area. `width`, `height` are nonzero.
fn closest_grid(grids: &[(u32, u32)], width: u32, height: u32, tile_size: u32) -> (u32, u32) {
    // u32 -> f64 is exact, so these are the same IEEE operations as the Python.
    let aspect = f64::from(width) / f64::from(height);
    let area = u64::from(width) * u64::from(height);
    let size = f64::from(tile_size);
    let mut best_diff = f64::INFINITY;
    let mut best = (1, 1);
    for &(cols, rows) in grids {
        let (c, r) = (f64::from(cols), f64::from(rows));
        let diff = (aspect - c / r).abs();
        if diff < best_diff {
            best_diff = diff;
            best = (cols, rows);
        } else if diff == best_diff && int_gt_float(area, 0.5 * size * size * c * r) {
            best = (cols, rows);
        }
    }
    best
}

/// `a > x` compared exactly, as Python compares an int with a float (`x` finite, >= 0).
fn int_gt_float(a: u64, x: f64) -> bool {
    // 2^64: every u64 is below it. Under it, x.floor() is an integer that fits u64 exactly, and
    // for integer a, a > x <=> a > floor(x).
    const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;
    x < TWO_POW_64 && a > x.floor() as u64
}

/// Python's `a / b` for ints: the exact quotient rounded once to the nearest f64 (ties to even).
/// `a`, `b` < 2^64, `b` > 0. Converting to f64 first would round twice past 2^53.
fn int_true_div(a: u128, b: u128) -> f64 {
    const EXACT: u128 = 1 << 53;
    if a < EXACT && b < EXACT {
        // Both convert exactly, and IEEE division rounds the exact quotient once.
        return a as f64 / b as f64;
    }
    if a == 0 {
        return 0.0;
    }
    let bits = |x: u128| 128 - x.leading_zeros() as i32;
    // Scale so the integer quotient has 55 or 56 bits: at least two bits below the 53 kept, so
    // OR-ing a sticky bit for a nonzero remainder makes the one int->f64 rounding exact.
    let shift = 55 - (bits(a) - bits(b));
    let (num, den) = if shift >= 0 {
        (a << shift, b) // bits(a) + shift = 55 + bits(b) <= 119
    } else {
        (a, b << -shift) // bits(b) - shift = bits(a) - 55 <= 9
    };
    let q = num / den;
    let sticky = u128::from(num % den != 0);
    let mantissa = (q | sticky) as u64 as f64; // q < 2^57; rounds to nearest, ties to even
    // Multiplying by 2^-shift is exact: the result stays far from overflow and subnormals.
    mantissa * f64::from_bits(((1023 - shift) as u64) << 52)
}

/// The distinct grids of InternVL's generator in the order they are first produced:
/// `for n in min..=max, for i in 1..=n, for j in 1..=n if min <= i*j <= max`. A grid first
/// appears at `n = max(i, j, min)`, so each `n` adds only its new grids (no O(max³) walk).
fn first_occurrences(min_tiles: u32, max_tiles: u32) -> Vec<(u32, u32)> {
    let (min, max) = (u64::from(min_tiles), u64::from(max_tiles));
    let in_range = |i: u64, j: u64| (min..=max).contains(&(i * j));
    let mut out = Vec::new();
    let first = min.max(1);
    for n in first..=max {
        if n == first {
            for i in 1..=n {
                for j in 1..=n.min(max / i) {
                    if in_range(i, j) {
                        out.push((i, j));
                    }
                }
            }
        } else {
            // New at this n: (i, n) for i < n, then (n, j) for j <= n, in generator order.
            for i in 1..n.min(max / n + 1) {
                if in_range(i, n) {
                    out.push((i, n));
                }
            }
            for j in 1..=n.min(max / n) {
                if in_range(n, j) {
                    out.push((n, j));
                }
            }
        }
    }
    // Values are <= max_tiles, so they fit back in u32.
    out.into_iter().map(|(i, j)| (i as u32, j as u32)).collect()
}

/// CPython's `hash((a, b))` for small non-negative ints on a 64-bit build (CPython >= 3.8,
/// Objects/tupleobject.c `tuplehash`, an xxHash variant; `hash(i) == i` for these ints).
fn cpython_pair_hash(a: u32, b: u32) -> u64 {
    const PRIME_1: u64 = 11_400_714_785_074_694_791;
    const PRIME_2: u64 = 14_029_467_366_897_019_727;
    const PRIME_5: u64 = 2_870_177_450_012_600_261;
    let mut acc = PRIME_5;
    for lane in [u64::from(a), u64::from(b)] {
        acc = acc.wrapping_add(lane.wrapping_mul(PRIME_2));
        acc = acc.rotate_left(31);
        acc = acc.wrapping_mul(PRIME_1);
    }
    acc = acc.wrapping_add(2 ^ (PRIME_5 ^ 3_527_539));
    // -1 is reserved for errors in CPython.
    if acc == u64::MAX { 1_546_275_796 } else { acc }
}

/// Iteration order of a CPython set built by adding `keys` (distinct, in this order) to an empty
/// set: Objects/setobject.c, `set_add_entry` / `set_insert_clean` / `set_table_resize`
/// (8 slots to start, 9 linear probes then perturbed probing, grow to 4×used once 3/5 full).
fn cpython_set_order(keys: Vec<(u32, u32)>) -> Vec<(u32, u32)> {
    const MIN_SIZE: usize = 8;
    const LINEAR_PROBES: usize = 9;
    const PERTURB_SHIFT: u32 = 5;
    type Slot = Option<((u32, u32), u64)>;

    fn insert_clean(table: &mut [Slot], key: (u32, u32), hash: u64) {
        let mask = table.len() - 1;
        let mut perturb = hash;
        let mut i = hash as usize & mask;
        loop {
            let probes = if i + LINEAR_PROBES <= mask {
                LINEAR_PROBES
            } else {
                0
            };
            for slot in &mut table[i..=i + probes] {
                if slot.is_none() {
                    *slot = Some((key, hash));
                    return;
                }
            }
            perturb >>= PERTURB_SHIFT;
            i = i
                .wrapping_mul(5)
                .wrapping_add(1)
                .wrapping_add(perturb as usize)
                & mask;
        }
    }

    let mut table: Vec<Slot> = vec![None; MIN_SIZE];
    let mut used = 0usize;
    for key in keys {
        insert_clean(&mut table, key, cpython_pair_hash(key.0, key.1));
        used += 1;
        let mask = table.len() - 1;
        if used * 5 >= mask * 3 {
            let min_used = if used > 50_000 { used * 2 } else { used * 4 };
            let mut size = MIN_SIZE;
            while size <= min_used {
                size <<= 1;
            }
            let old = std::mem::replace(&mut table, vec![None; size]);
            for (key, hash) in old.into_iter().flatten() {
                insert_clean(&mut table, key, hash);
            }
        }
    }
    table.into_iter().flatten().map(|(key, _)| key).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn internvl(tile_size: u32, min_tiles: u32, max_tiles: u32, thumbnail: bool) -> TilingRule {
        TilingRule::InternVl(InternVlSettings {
            tile_size,
            min_tiles,
            max_tiles,
            thumbnail,
        })
    }

    fn qwen(factor: u32, min_pixels: u64, max_pixels: u64) -> TilingRule {
        TilingRule::Qwen2Vl(Qwen2VlSettings {
            factor,
            min_pixels,
            max_pixels,
        })
    }

    fn refusal(result: Result<TilePlan>) -> TilingRefusal {
        match result {
            Err(Error::TilingRefused { reason, .. }) => reason,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn is_settings_error(rule: TilingRule) -> bool {
        matches!(plan(&rule, 100, 100), Err(Error::TilingSettings(_)))
    }

    #[test]
    fn internvl_exact_ratio_takes_first_grid() {
        // 4:3 first appears as (4, 3) at 12 tiles; 1792×1344, 12 tiles + thumbnail.
        let p = plan(&TilingRule::InternVl(Default::default()), 800, 600).unwrap();
        assert_eq!(p.resize, (1792, 1344));
        assert_eq!(p.grid, (4, 3));
        assert_eq!(p.tile, (448, 448));
        assert_eq!(p.thumbnail, Some(448));
        assert_eq!(p.num_tiles(), 13);
    }

    #[test]
    fn internvl_square_ties_follow_area() {
        let rule = TilingRule::InternVl(Default::default());
        // 448²: (2,2) needs area > 0.5·448²·4 = 401408, so (1,1) stays; no thumbnail for 1 tile.
        let p = plan(&rule, 448, 448).unwrap();
        assert_eq!((p.grid, p.thumbnail, p.num_tiles()), ((1, 1), None, 1));
        // 1000² = 1e6 > 401408 and > 903168 (3×3) but not > 1605632 (4×4 is not a candidate).
        let p = plan(&rule, 1000, 1000).unwrap();
        assert_eq!((p.grid, p.num_tiles()), ((3, 3), 10));
        // Around the (2,2) threshold: 633² = 400689 keeps (1,1), 634² = 401956 does not.
        assert_eq!(plan(&rule, 633, 633).unwrap().grid, (1, 1));
        assert_eq!(plan(&rule, 634, 634).unwrap().grid, (2, 2));
    }

    #[test]
    fn internvl_equal_count_tie_uses_set_order() {
        // min = max = 4: CPython's set yields (4,1), (1,4), (2,2). Aspect 5:8 is exactly halfway
        // between 1:4 and 2:2; (1,4) comes first, and (2,2) replaces it only for a large area.
        let rule = internvl(224, 4, 4, true);
        assert_eq!(plan(&rule, 5, 8).unwrap().grid, (1, 4));
        assert_eq!(plan(&rule, 5000, 8000).unwrap().grid, (2, 2));
        // Aspect 5:2 is halfway between 2:2 and 4:1: (4,1) first, (2,2) later.
        assert_eq!(plan(&rule, 5, 2).unwrap().grid, (4, 1));
        assert_eq!(plan(&rule, 5000, 2000).unwrap().grid, (2, 2));
    }

    #[test]
    fn internvl_order_matches_cpython_for_default() {
        // From CPython 3.11: sorted(set(...), key=lambda x: x[0] * x[1]) for min 1, max 12.
        #[rustfmt::skip]
        let expected = [
            (1, 1), (1, 2), (2, 1), (3, 1), (1, 3), (2, 2), (4, 1), (1, 4), (5, 1), (1, 5),
            (1, 6), (6, 1), (3, 2), (2, 3), (7, 1), (1, 7), (4, 2), (2, 4), (1, 8), (8, 1),
            (1, 9), (3, 3), (9, 1), (2, 5), (5, 2), (10, 1), (1, 10), (11, 1), (1, 11), (12, 1),
            (3, 4), (4, 3), (1, 12), (6, 2), (2, 6),
        ];
        assert_eq!(InternVlSettings::default().target_ratios(), expected);
    }

    #[test]
    fn cpython_tuple_hash() {
        // hash((a, b)) printed by CPython 3.11 (as signed 64-bit).
        assert_eq!(cpython_pair_hash(1, 1) as i64, 8389048192121911274);
        assert_eq!(cpython_pair_hash(3, 4) as i64, 1079245023883434373);
        assert_eq!(cpython_pair_hash(12, 1) as i64, -7907666742645488893);
        assert_eq!(cpython_pair_hash(4096, 4096) as i64, 2876602986939429774);
    }

    #[test]
    fn min_tiles_zero_behaves_as_one() {
        let zero = InternVlSettings {
            min_tiles: 0,
            ..Default::default()
        };
        assert_eq!(
            zero.target_ratios(),
            InternVlSettings::default().target_ratios()
        );
    }

    #[test]
    fn qwen_hand_worked() {
        let rule = TilingRule::Qwen2Vl(Default::default());
        // 1080/28 → 39, 1920/28 → 69: 1092·1932 > 1003520, so shrink by beta = sqrt(2073600 /
        // 1003520): floor(26.8)·28 = 728, floor(47.7)·28 = 1316.
        let p = plan(&rule, 1920, 1080).unwrap();
        assert_eq!(p.resize, (1316, 728));
        assert_eq!((p.grid, p.tile, p.thumbnail), ((1, 1), (1316, 728), None));
        // Half-way sides round to even multiples: 42 = 1.5·28 → 56, 70 = 2.5·28 → 56.
        assert_eq!(plan(&rule, 42, 280).unwrap().resize, (56, 280));
        assert_eq!(plan(&rule, 70, 280).unwrap().resize, (56, 280));
        // 200:1 is allowed; the 1-pixel side rounds to 0 and the min branch grows it.
        assert_eq!(plan(&rule, 200, 1).unwrap().resize, (812, 28));
        assert_eq!(plan(&rule, 10, 10).unwrap().resize, (56, 56));
    }

    #[test]
    fn qwen_refuses_beyond_200_to_1() {
        let rule = TilingRule::Qwen2Vl(Default::default());
        assert_eq!(refusal(plan(&rule, 201, 1)), TilingRefusal::AspectRatio);
        assert_eq!(refusal(plan(&rule, 3, 601)), TilingRefusal::AspectRatio);
        assert!(plan(&rule, 3, 600).is_ok());
    }

    #[test]
    fn zero_sizes_are_refused_by_every_rule() {
        for rule in [
            TilingRule::InternVl(Default::default()),
            TilingRule::Qwen2Vl(Default::default()),
            TilingRule::Fixed { size: 384 },
        ] {
            assert_eq!(refusal(plan(&rule, 0, 10)), TilingRefusal::ZeroSize);
            assert_eq!(refusal(plan(&rule, 10, 0)), TilingRefusal::ZeroSize);
        }
    }

    #[test]
    fn fixed_squashes() {
        let p = plan(&TilingRule::Fixed { size: 384 }, 1000, 10).unwrap();
        assert_eq!(
            (p.resize, p.grid, p.tile, p.thumbnail),
            ((384, 384), (1, 1), (384, 384), None)
        );
        assert_eq!(p.num_tiles(), 1);
    }

    #[test]
    fn invalid_settings() {
        assert!(is_settings_error(internvl(448, 7, 6, true)));
        assert!(is_settings_error(internvl(0, 1, 12, true)));
        assert!(is_settings_error(internvl(448, 0, 0, true)));
        assert!(is_settings_error(internvl(
            448,
            1,
            MAX_TILES_LIMIT + 1,
            true
        )));
        assert!(is_settings_error(internvl(u32::MAX / 2, 1, 3, true)));
        assert!(is_settings_error(qwen(0, 3136, 1003520)));
        assert!(is_settings_error(qwen(28, 0, 1003520)));
        assert!(is_settings_error(qwen(28, 1003521, 1003520)));
        assert!(is_settings_error(TilingRule::Fixed { size: 0 }));
        assert!(Tiler::new(internvl(448, 1, MAX_TILES_LIMIT, true)).is_ok());
    }

    #[test]
    fn int_true_div_rounds_like_python() {
        // (a, b, bits of CPython's a / b).
        let cases: [(u128, u128, u64); 8] = [
            (18446744073709551615, 3, 0x43d5555555555555),
            (9223372036854775809, 9007199254740993, 0x408fffffffffffff),
            (18446744065119617025, 1003520, 0x42b0b7e6ec042dfa),
            (3136, 18446744065119617025, 0x3ca8800000310000),
            (9007199254740993, 1, 0x4340000000000000),
            (12345678901234567891, 98765, 0x42dc6bfd481550eb),
            (
                18446744073709551615,
                18446744073709551613,
                0x3ff0000000000000,
            ),
            (9007199254740995, 2, 0x4330000000000002),
        ];
        for (a, b, bits) in cases {
            assert_eq!(int_true_div(a, b).to_bits(), bits, "{a} / {b}");
        }
        assert_eq!(int_true_div(7, 2), 3.5);
    }

    #[test]
    fn int_gt_float_is_exact() {
        assert!(!int_gt_float(401408, 401408.0));
        assert!(int_gt_float(401409, 401408.0));
        assert!(int_gt_float(3, 2.5));
        assert!(!int_gt_float(2, 2.5));
        // 2^53 + 1 is not representable; Python: 2**53 + 1 > 2.0**53 is True.
        assert!(int_gt_float((1 << 53) + 1, 9007199254740992.0));
        assert!(!int_gt_float(u64::MAX, 18446744073709551616.0));
    }
}
