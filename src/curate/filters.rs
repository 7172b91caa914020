//! The non-dedup filters of curation: image size, aspect ratio, caption length and image–text
//! relevance (an absolute score threshold, or DataComp's "keep the top p%"). Each filter is a
//! flag; the first one a sample fails is recorded as its drop reason.

use serde::Serialize;

use super::signals::SignalRow;

/// Which filters run, each off when `None`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Filters {
    /// Drop images whose shorter side is below this many pixels.
    pub min_side: Option<u32>,
    /// Drop images whose longer side is above this many pixels.
    pub max_side: Option<u32>,
    /// Drop images whose long/short side ratio is above this.
    pub max_aspect: Option<f32>,
    /// Drop samples whose caption has fewer characters (a missing caption has 0).
    pub min_caption_chars: Option<u32>,
    /// Drop samples whose caption has more characters.
    pub max_caption_chars: Option<u32>,
    /// Drop samples whose relevance score is below this (samples without a score too).
    pub min_score: Option<f32>,
    /// Keep only the best-scoring `top_percent` % of the scored samples.
    pub top_percent: Option<f32>,
}

impl Filters {
    /// True when a filter needs the model's score.
    pub fn needs_score(&self) -> bool {
        self.min_score.is_some() || self.top_percent.is_some()
    }
}

/// The drop reason of each row under `filters` (`None`: passes). Rows that already have a
/// reason in `reasons` are left alone and do not count towards the top-p% cut.
pub fn apply_filters(rows: &[SignalRow], filters: &Filters, reasons: &mut [Option<String>]) {
    for (row, reason) in rows.iter().zip(reasons.iter_mut()) {
        if reason.is_none() {
            *reason = first_failure(row, filters);
        }
    }
    if let Some(percent) = filters.top_percent {
        top_percent(rows, percent, reasons);
    }
}

/// The first non-relevance filter (or the absolute score threshold) that `row` fails.
fn first_failure(row: &SignalRow, f: &Filters) -> Option<String> {
    if let (Some(w), Some(h)) = (row.width, row.height) {
        let (short, long) = (w.min(h), w.max(h));
        if let Some(min) = f.min_side
            && short < min
        {
            return Some(format!("too-small: shorter side {short} < {min}"));
        }
        if let Some(max) = f.max_side
            && long > max
        {
            return Some(format!("too-large: longer side {long} > {max}"));
        }
        if let Some(max) = f.max_aspect
            && short > 0
            && long as f32 / short as f32 > max
        {
            return Some(format!("aspect: {:.2} > {max}", long as f32 / short as f32));
        }
    }
    let chars = row.caption_chars.unwrap_or(0);
    if let Some(min) = f.min_caption_chars
        && chars < min
    {
        return Some(format!("caption-short: {chars} chars < {min}"));
    }
    if let Some(max) = f.max_caption_chars
        && chars > max
    {
        return Some(format!("caption-long: {chars} chars > {max}"));
    }
    if let Some(min) = f.min_score {
        match row.score {
            Some(s) if s >= min => {}
            Some(s) => return Some(format!("low-score: {s:.4} < {min}")),
            None => return Some("low-score: no score".into()),
        }
    }
    None
}

/// Drops all but the best `percent` % of the scored rows still alive; ties go to pool order.
fn top_percent(rows: &[SignalRow], percent: f32, reasons: &mut [Option<String>]) {
    let mut scored: Vec<(usize, f32)> = rows
        .iter()
        .enumerate()
        .filter(|(i, _)| reasons[*i].is_none())
        .filter_map(|(i, r)| r.score.filter(|s| !s.is_nan()).map(|s| (i, s)))
        .collect();
    let keep = ((scored.len() as f64) * f64::from(percent.clamp(0.0, 100.0)) / 100.0).ceil();
    let keep = keep as usize;
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let cutoff = scored.get(keep.saturating_sub(1)).map(|&(_, s)| s);
    for &(i, s) in scored.iter().skip(keep) {
        reasons[i] = Some(format!(
            "low-score: {s:.4} not in the top {percent}% (cut at {:.4})",
            cutoff.unwrap_or(f32::NAN)
        ));
    }
    for (i, row) in rows.iter().enumerate() {
        if reasons[i].is_none() && row.score.is_none_or(f32::is_nan) {
            reasons[i] = Some("low-score: no score".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(w: u32, h: u32, chars: Option<u32>, score: Option<f32>) -> SignalRow {
        SignalRow {
            width: Some(w),
            height: Some(h),
            caption_chars: chars,
            score,
            ..Default::default()
        }
    }

    #[test]
    fn each_filter_names_its_reason() {
        let rows = vec![
            row(100, 50, Some(20), Some(0.9)),
            row(1000, 900, Some(20), Some(0.9)),
            row(900, 100, Some(20), Some(0.9)),
            row(500, 500, None, Some(0.9)),
            row(500, 500, Some(20), Some(0.1)),
            row(500, 500, Some(20), Some(0.5)),
        ];
        let filters = Filters {
            min_side: Some(64),
            max_side: Some(999),
            max_aspect: Some(4.0),
            min_caption_chars: Some(5),
            max_caption_chars: None,
            min_score: Some(0.3),
            top_percent: None,
        };
        let mut reasons = vec![None; rows.len()];
        apply_filters(&rows, &filters, &mut reasons);
        let kinds: Vec<Option<&str>> = reasons
            .iter()
            .map(|r| r.as_deref().map(|r| r.split(':').next().unwrap()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                Some("too-small"),
                Some("too-large"),
                Some("aspect"),
                Some("caption-short"),
                Some("low-score"),
                None
            ]
        );
    }

    #[test]
    fn top_percent_keeps_the_best_and_breaks_ties_by_order() {
        let scores = [0.5, 0.9, 0.5, 0.1, 0.7];
        let rows: Vec<SignalRow> = scores
            .iter()
            .map(|&s| row(100, 100, Some(10), Some(s)))
            .collect();
        let filters = Filters {
            top_percent: Some(60.0),
            ..Default::default()
        };
        let mut reasons = vec![None; rows.len()];
        apply_filters(&rows, &filters, &mut reasons);
        let kept: Vec<usize> = (0..rows.len()).filter(|&i| reasons[i].is_none()).collect();
        // 60% of 5 = 3: 0.9, 0.7 and the first 0.5.
        assert_eq!(kept, vec![0, 1, 4]);
        assert!(reasons[2].as_deref().unwrap().starts_with("low-score"));
    }
}
