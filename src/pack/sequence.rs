//! The token layout of one sample: its exact `input_ids`, `labels`, and where each image's
//! placeholder span lies. The packer places these layouts back to back in packed sequences.
//!
//! Rules:
//! - **Image spans.** Image `i` becomes `start, context × n_i, end` ([`ImageTokenIds`]), where `n_i`
//!   is its number of vision tokens (from the tiling plan). Its [`ImageSpan`] records where it lies.
//! - **Image tags.** Every [`TextFormat::image_tag`] in the text, in order over the whole sample (the
//!   caption, or the turns in order), is replaced by the next image's span: the first tag by image 0,
//!   and so on. Images left without a tag go before the text (before the first turn of a
//!   conversation), in image order. More tags than images is an error naming both counts. The text
//!   pieces between tags are tokenized separately, so token boundaries always fall at the tags. An
//!   empty `image_tag` means the text has no tags.
//! - **Conversations.** Each turn is rendered as `prefix(role) + text + turn_end`, each of those
//!   pieces tokenized on its own. Labels are `-100` on system and user turns (prefix and turn end
//!   included) and on the assistant prefix; elsewhere in assistant turns (text and turn end) the
//!   label is the token id, so the model learns to answer and to end its answer.
//! - **Captions.** `labels = input_ids`.
//! - **Pretokenized.** `labels` as given (same length as `input_ids`, else an error), or
//!   `input_ids` when none are given. The ids are taken as text only: all images go before them.
//! - **Always.** Labels are `-100` on every image-span token, and at position 0: in a packed
//!   sequence the first token of a sample would be predicted from the previous sample's last token.
//! - **Empty.** Empty text with images is a layout of image spans only; empty text and no images
//!   gives a layout of length 0 (the caller decides whether to keep the sample).
//!
//! Labels are aligned with `input_ids` (Hugging Face convention: the model shifts them).

use crate::error::{Error, Result};
use crate::model::tokenizer::TextTokenizer;
use crate::pack::sample_text::{Role, SampleText};

/// The label value on which no loss is taken (PyTorch's `ignore_index` default).
pub const IGNORE_LABEL: i64 = -100;

/// The token ids that make an image's placeholder span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImageTokenIds {
    /// Opens the span (InternVL: `<img>`).
    pub start: u32,
    /// Repeated once per vision token (InternVL: `<IMG_CONTEXT>`).
    pub context: u32,
    /// Closes the span (InternVL: `</img>`).
    pub end: u32,
}

impl ImageTokenIds {
    /// Looks the three tokens up by name in `tokenizer`; a missing one is an error naming it.
    pub fn from_tokenizer(
        tokenizer: &TextTokenizer,
        start: &str,
        context: &str,
        end: &str,
    ) -> Result<Self> {
        Ok(ImageTokenIds {
            start: tokenizer.require_token_id(start)?,
            context: tokenizer.require_token_id(context)?,
            end: tokenizer.require_token_id(end)?,
        })
    }

    /// InternVL's tokens: `<img>`, `<IMG_CONTEXT>`, `</img>` (also those of the demo tokenizer).
    pub fn internvl(tokenizer: &TextTokenizer) -> Result<Self> {
        Self::from_tokenizer(tokenizer, "<img>", "<IMG_CONTEXT>", "</img>")
    }
}

/// How text and conversations are written out before tokenization.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TextFormat {
    /// Marks where an image goes in the text (default `<image>`, as in LLaVA / InternVL data).
    pub image_tag: String,
    /// Put before a system turn (default `System: `).
    pub system_prefix: String,
    /// Put before a user turn (default `User: `).
    pub user_prefix: String,
    /// Put before an assistant turn (default `Assistant: `).
    pub assistant_prefix: String,
    /// Put after every turn (default `\n`).
    pub turn_end: String,
}

impl Default for TextFormat {
    fn default() -> Self {
        TextFormat {
            image_tag: "<image>".to_string(),
            system_prefix: "System: ".to_string(),
            user_prefix: "User: ".to_string(),
            assistant_prefix: "Assistant: ".to_string(),
            turn_end: "\n".to_string(),
        }
    }
}

impl TextFormat {
    fn prefix(&self, role: Role) -> &str {
        match role {
            Role::System => &self.system_prefix,
            Role::User => &self.user_prefix,
            Role::Assistant => &self.assistant_prefix,
        }
    }

    /// Number of image tags in `text`.
    pub fn count_tags(&self, text: &str) -> usize {
        if self.image_tag.is_empty() {
            0
        } else {
            text.matches(self.image_tag.as_str()).count()
        }
    }
}

/// Where one image's placeholder span lies in a [`SequenceLayout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageSpan {
    /// Token index of the span's start id.
    pub start: u32,
    /// Span length: start + context × n + end, i.e. n + 2.
    pub len: u32,
    /// Which of the sample's images this is (index into its image list).
    pub image: u32,
}

impl ImageSpan {
    /// One past the span's last token.
    pub fn end(&self) -> usize {
        self.start as usize + self.len as usize
    }
}

/// A sample's tokens, labels and image spans (spans in position order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SequenceLayout {
    /// Token ids: text and image placeholders.
    pub input_ids: Vec<u32>,
    /// One per token: the target id, or [`IGNORE_LABEL`].
    pub labels: Vec<i64>,
    /// The image spans, in order of position.
    pub images: Vec<ImageSpan>,
}

impl SequenceLayout {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    /// Whether there are no tokens at all.
    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }

    /// Number of tokens outside image spans.
    pub fn text_tokens(&self) -> usize {
        self.len() - self.image_tokens()
    }

    /// Number of tokens inside image spans (start and end tokens included).
    pub fn image_tokens(&self) -> usize {
        self.images.iter().map(|s| s.len as usize).sum()
    }

    /// Cuts the layout to at most `max_tokens` tokens and, if given, at most `max_images` image
    /// spans. An image span the cut would go through is removed whole (the cut moves to just before
    /// its start token); with `max_images = Some(k)` the cut also moves to just before the
    /// `k+1`-th span in position order, so the images kept are the first `k` in the sequence.
    pub fn truncate(&mut self, max_tokens: usize, max_images: Option<usize>) {
        let mut cut = max_tokens.min(self.len());
        if let Some(k) = max_images
            && let Some(span) = self.images.get(k)
        {
            cut = cut.min(span.start as usize);
        }
        // Spans do not overlap, so at most one straddles the cut, and moving the cut to its start
        // makes no other span straddle it.
        if let Some(span) = self
            .images
            .iter()
            .find(|s| (s.start as usize) < cut && s.end() > cut)
        {
            cut = span.start as usize;
        }
        self.input_ids.truncate(cut);
        self.labels.truncate(cut);
        self.images.retain(|s| s.end() <= cut);
    }
}

/// Accumulates tokens and labels while a layout is built.
struct Builder<'a> {
    layout: SequenceLayout,
    tokenizer: &'a TextTokenizer,
    ids: &'a ImageTokenIds,
    context_tokens: &'a [u32],
}

impl Builder<'_> {
    fn push_text(&mut self, text: &str, target: bool) -> Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        let ids = self.tokenizer.encode(text)?;
        self.push_ids(&ids, target);
        Ok(())
    }

    fn push_ids(&mut self, ids: &[u32], target: bool) {
        self.layout.input_ids.extend_from_slice(ids);
        if target {
            self.layout.labels.extend(ids.iter().map(|&t| i64::from(t)));
        } else {
            self.layout
                .labels
                .extend(std::iter::repeat_n(IGNORE_LABEL, ids.len()));
        }
    }

    fn push_image(&mut self, image: usize) -> Result<()> {
        let n = self.context_tokens[image];
        let too_long = || Error::SampleText {
            reason: "sequence longer than 2^32 tokens".to_string(),
        };
        let start = u32::try_from(self.layout.input_ids.len()).map_err(|_| too_long())?;
        let len = n.checked_add(2).ok_or_else(too_long)?;
        start.checked_add(len).ok_or_else(too_long)?;
        let l = &mut self.layout;
        l.input_ids.push(self.ids.start);
        l.input_ids
            .extend(std::iter::repeat_n(self.ids.context, n as usize));
        l.input_ids.push(self.ids.end);
        l.labels
            .extend(std::iter::repeat_n(IGNORE_LABEL, len as usize));
        l.images.push(ImageSpan {
            start,
            len,
            // context_tokens has at most as many entries as fit in memory; a sample with more
            // than 2^32 images could not be laid out anyway (each takes 2 tokens).
            image: u32::try_from(image).map_err(|_| too_long())?,
        });
        Ok(())
    }

    /// Pushes `text` with each image tag replaced by the next image (`next_image` advances).
    fn push_tagged(
        &mut self,
        text: &str,
        fmt: &TextFormat,
        next_image: &mut usize,
        target: bool,
    ) -> Result<()> {
        if fmt.image_tag.is_empty() {
            return self.push_text(text, target);
        }
        for (i, piece) in text.split(fmt.image_tag.as_str()).enumerate() {
            if i > 0 {
                // Tags were counted against the images before building, so this image exists.
                self.push_image(*next_image)?;
                *next_image += 1;
            }
            self.push_text(piece, target)?;
        }
        Ok(())
    }
}

/// Builds the token layout of one sample; see the module docs for the rules.
///
/// `image_context_tokens[i]` is the number of context tokens of image `i` (its vision tokens).
pub fn build_sequence(
    text: &SampleText,
    tokenizer: &TextTokenizer,
    image_context_tokens: &[u32],
    ids: &ImageTokenIds,
    fmt: &TextFormat,
) -> Result<SequenceLayout> {
    let n_images = image_context_tokens.len();
    let tags = match text {
        SampleText::Caption(s) => fmt.count_tags(s),
        SampleText::Conversation(turns) => turns.iter().map(|t| fmt.count_tags(&t.text)).sum(),
        SampleText::Pretokenized { .. } => 0,
    };
    if tags > n_images {
        return Err(Error::SampleText {
            reason: format!(
                "the text has {tags} image tags `{}` but the sample has {n_images} image{}",
                fmt.image_tag,
                if n_images == 1 { "" } else { "s" }
            ),
        });
    }
    let mut b = Builder {
        layout: SequenceLayout::default(),
        tokenizer,
        ids,
        context_tokens: image_context_tokens,
    };
    // Images the tags do not claim (the last n_images - tags) go first, in order.
    for image in tags..n_images {
        b.push_image(image)?;
    }
    let mut next_image = 0;
    match text {
        SampleText::Caption(s) => b.push_tagged(s, fmt, &mut next_image, true)?,
        SampleText::Conversation(turns) => {
            for turn in turns {
                let target = turn.role == Role::Assistant;
                b.push_text(fmt.prefix(turn.role), false)?;
                b.push_tagged(&turn.text, fmt, &mut next_image, target)?;
                b.push_text(&fmt.turn_end, target)?;
            }
        }
        SampleText::Pretokenized { input_ids, labels } => match labels {
            None => b.push_ids(input_ids, true),
            Some(labels) => {
                if labels.len() != input_ids.len() {
                    return Err(Error::SampleText {
                        reason: format!(
                            "pretokenized labels have {} entries but input_ids has {}",
                            labels.len(),
                            input_ids.len()
                        ),
                    });
                }
                b.layout.input_ids.extend_from_slice(input_ids);
                b.layout.labels.extend_from_slice(labels);
            }
        },
    }
    let mut layout = b.layout;
    if u32::try_from(layout.len()).is_err() {
        return Err(Error::SampleText {
            reason: "sequence longer than 2^32 tokens".to_string(),
        });
    }
    if let Some(first) = layout.labels.first_mut() {
        *first = IGNORE_LABEL;
    }
    Ok(layout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::sample_text::Turn;

    const IDS: ImageTokenIds = ImageTokenIds {
        start: 1000,
        context: 1001,
        end: 1002,
    };
    const X: i64 = IGNORE_LABEL;

    fn bytes() -> TextTokenizer {
        TextTokenizer::bytes()
    }

    fn b(s: &str) -> Vec<u32> {
        s.bytes().map(u32::from).collect()
    }

    fn img(n: u32) -> Vec<u32> {
        let mut v = vec![IDS.start];
        v.extend(std::iter::repeat_n(IDS.context, n as usize));
        v.push(IDS.end);
        v
    }

    fn targets(ids: &[u32]) -> Vec<i64> {
        ids.iter().map(|&t| i64::from(t)).collect()
    }

    fn ignored(n: usize) -> Vec<i64> {
        vec![X; n]
    }

    fn caption(s: &str) -> SampleText {
        SampleText::Caption(s.to_string())
    }

    fn turn(role: Role, text: &str) -> Turn {
        Turn {
            role,
            text: text.to_string(),
        }
    }

    fn build(text: &SampleText, ctx: &[u32]) -> Result<SequenceLayout> {
        build_sequence(text, &bytes(), ctx, &IDS, &TextFormat::default())
    }

    fn span(start: u32, len: u32, image: u32) -> ImageSpan {
        ImageSpan { start, len, image }
    }

    /// Checks the invariants every layout has, whatever the rules that made it.
    fn check_invariants(l: &SequenceLayout) {
        assert_eq!(l.input_ids.len(), l.labels.len());
        if let Some(&first) = l.labels.first() {
            assert_eq!(first, X);
        }
        let mut prev_end = 0;
        for s in &l.images {
            assert!(
                s.start as usize >= prev_end,
                "spans overlap or are out of order"
            );
            let at = s.start as usize;
            assert_eq!(l.input_ids[at], IDS.start);
            assert_eq!(l.input_ids[s.end() - 1], IDS.end);
            assert!(
                l.input_ids[at + 1..s.end() - 1]
                    .iter()
                    .all(|&t| t == IDS.context)
            );
            assert!(l.labels[at..s.end()].iter().all(|&t| t == X));
            prev_end = s.end();
        }
        assert_eq!(l.text_tokens() + l.image_tokens(), l.len());
    }

    #[test]
    fn caption_without_images() {
        let l = build(&caption("a dog"), &[]).unwrap();
        check_invariants(&l);
        assert_eq!(l.input_ids, b("a dog"));
        let mut want = targets(&b("a dog"));
        want[0] = X;
        assert_eq!(l.labels, want);
        assert!(l.images.is_empty());
        assert_eq!(l.text_tokens(), 5);
    }

    #[test]
    fn untagged_images_go_first_in_order() {
        let l = build(&caption("hi"), &[3, 1]).unwrap();
        check_invariants(&l);
        let want: Vec<u32> = [img(3), img(1), b("hi")].concat();
        assert_eq!(l.input_ids, want);
        assert_eq!(l.images, vec![span(0, 5, 0), span(5, 3, 1)]);
        assert_eq!(l.labels, [ignored(8), targets(&b("hi"))].concat());
        assert_eq!(l.text_tokens(), 2);
        assert_eq!(l.image_tokens(), 8);
    }

    #[test]
    fn tags_are_replaced_by_images_in_order() {
        let l = build(&caption("a<image>bc<image>"), &[2, 1]).unwrap();
        check_invariants(&l);
        assert_eq!(l.input_ids, [b("a"), img(2), b("bc"), img(1)].concat());
        assert_eq!(l.images, vec![span(1, 4, 0), span(7, 3, 1)]);
        assert_eq!(
            l.labels,
            [ignored(5), targets(&b("bc")), ignored(3)].concat()
        );
    }

    #[test]
    fn leftover_images_go_first_and_tags_take_the_first_images() {
        let l = build(&caption("x<image>y"), &[1, 2, 3]).unwrap();
        check_invariants(&l);
        assert_eq!(
            l.input_ids,
            [img(2), img(3), b("x"), img(1), b("y")].concat()
        );
        let images: Vec<u32> = l.images.iter().map(|s| s.image).collect();
        assert_eq!(images, vec![1, 2, 0]);
    }

    #[test]
    fn more_tags_than_images_is_an_error() {
        let e = build(&caption("<image><image>"), &[4])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("2 image tags `<image>`") && e.contains("1 image"),
            "{e}"
        );
        let conv = SampleText::Conversation(vec![
            turn(Role::User, "<image>"),
            turn(Role::Assistant, "<image>"),
        ]);
        let e = build(&conv, &[]).unwrap_err().to_string();
        assert!(e.contains("2 image tags") && e.contains("0 images"), "{e}");
    }

    #[test]
    fn pieces_between_tags_are_tokenized_separately() {
        let t = TextTokenizer::demo();
        let ids = ImageTokenIds::internvl(&t).unwrap();
        let text = caption("Look at <image> and describe it.");
        let l = build_sequence(&text, &t, &[2], &ids, &TextFormat::default()).unwrap();
        let want = [
            t.encode("Look at ").unwrap(),
            vec![ids.start, ids.context, ids.context, ids.end],
            t.encode(" and describe it.").unwrap(),
        ]
        .concat();
        assert_eq!(l.input_ids, want);
        assert_eq!(
            l.images[0].start as usize,
            t.encode("Look at ").unwrap().len()
        );
    }

    #[test]
    fn empty_tag_means_no_tags() {
        let fmt = TextFormat {
            image_tag: String::new(),
            ..TextFormat::default()
        };
        let l = build_sequence(&caption("a<image>"), &bytes(), &[0], &IDS, &fmt).unwrap();
        assert_eq!(l.input_ids, [img(0), b("a<image>")].concat());
    }

    #[test]
    fn conversation_labels_only_assistant_text_and_turn_end() {
        let conv = SampleText::Conversation(vec![
            turn(Role::System, "S"),
            turn(Role::User, "Q<image>?"),
            turn(Role::Assistant, "A"),
        ]);
        let l = build(&conv, &[1]).unwrap();
        check_invariants(&l);
        let want_ids = [
            b("System: S\n"),
            b("User: Q"),
            img(1),
            b("?\n"),
            b("Assistant: "),
            b("A\n"),
        ]
        .concat();
        assert_eq!(l.input_ids, want_ids);
        let want_labels = [
            ignored("System: S\nUser: Q".len() + 3 + "?\nAssistant: ".len()),
            targets(&b("A\n")),
        ]
        .concat();
        assert_eq!(l.labels, want_labels);
        assert_eq!(l.images, vec![span(17, 3, 0)]);
    }

    #[test]
    fn conversation_untagged_images_before_first_turn_and_tags_across_turns() {
        let conv = SampleText::Conversation(vec![
            turn(Role::User, "<image>"),
            turn(Role::Assistant, "ok<image>"),
        ]);
        let l = build(&conv, &[1, 2, 0]).unwrap();
        check_invariants(&l);
        let want = [
            img(0),
            b("User: "),
            img(1),
            b("\nAssistant: ok"),
            img(2),
            b("\n"),
        ]
        .concat();
        assert_eq!(l.input_ids, want);
        let images: Vec<u32> = l.images.iter().map(|s| s.image).collect();
        assert_eq!(images, vec![2, 0, 1]);
        // Assistant text is a target, the image inside it is not, the turn end is.
        let a = l.images[2].start as usize;
        assert_eq!(&l.labels[a - 2..a], &targets(&b("ok"))[..]);
        assert_eq!(l.labels.last(), Some(&i64::from(b'\n')));
    }

    #[test]
    fn assistant_first_token_is_still_ignored_at_position_zero() {
        let conv = SampleText::Conversation(vec![turn(Role::Assistant, "hi")]);
        let fmt = TextFormat {
            assistant_prefix: String::new(),
            turn_end: String::new(),
            ..TextFormat::default()
        };
        let l = build_sequence(&conv, &bytes(), &[], &IDS, &fmt).unwrap();
        assert_eq!(l.labels, vec![X, i64::from(b'i')]);
    }

    #[test]
    fn pretokenized_with_and_without_labels() {
        let p = SampleText::Pretokenized {
            input_ids: vec![7, 8, 9],
            labels: None,
        };
        let l = build(&p, &[1]).unwrap();
        check_invariants(&l);
        assert_eq!(l.input_ids, [img(1), vec![7, 8, 9]].concat());
        assert_eq!(l.labels, vec![X, X, X, 7, 8, 9]);

        let p = SampleText::Pretokenized {
            input_ids: vec![7, 8, 9],
            labels: Some(vec![5, X, 9]),
        };
        let l = build(&p, &[]).unwrap();
        // Position 0 is ignored even where the data gives a target.
        assert_eq!(l.labels, vec![X, X, 9]);

        // Tags mean nothing in ids, and labels of the wrong length are refused.
        let p = SampleText::Pretokenized {
            input_ids: vec![7, 8],
            labels: Some(vec![1]),
        };
        let e = build(&p, &[]).unwrap_err().to_string();
        assert!(
            e.contains("labels have 1 entries but input_ids has 2"),
            "{e}"
        );
    }

    #[test]
    fn empty_text() {
        let l = build(&caption(""), &[]).unwrap();
        assert!(l.is_empty() && l.labels.is_empty() && l.images.is_empty());
        let l = build(&SampleText::Conversation(vec![]), &[]).unwrap();
        assert!(l.is_empty());
        let l = build(&caption(""), &[2]).unwrap();
        check_invariants(&l);
        assert_eq!(l.input_ids, img(2));
        assert_eq!(l.text_tokens(), 0);
        // An image with no vision tokens is still delimited.
        let l = build(&caption(""), &[0]).unwrap();
        assert_eq!(l.images, vec![span(0, 2, 0)]);
    }

    #[test]
    fn demo_tokenizer_special_tokens_and_bytes_has_none() {
        let ids = ImageTokenIds::internvl(&TextTokenizer::demo()).unwrap();
        assert_eq!(
            ids,
            ImageTokenIds {
                start: 1,
                context: 2,
                end: 3
            }
        );
        let e = ImageTokenIds::internvl(&bytes()).unwrap_err().to_string();
        assert!(e.contains("`<img>`"), "{e}");
    }

    /// `ab[img 2]cd[img 1]e`: spans at 2..6 and 8..11, length 12.
    fn sample() -> SequenceLayout {
        let l = build(&caption("ab<image>cd<image>e"), &[2, 1]).unwrap();
        assert_eq!(l.images, vec![span(2, 4, 0), span(8, 3, 1)]);
        assert_eq!(l.len(), 12);
        l
    }

    fn truncated(max_tokens: usize, max_images: Option<usize>) -> SequenceLayout {
        let mut l = sample();
        l.truncate(max_tokens, max_images);
        check_invariants(&l);
        l
    }

    #[test]
    fn truncate_without_cutting_is_a_no_op() {
        assert_eq!(truncated(12, None), sample());
        assert_eq!(truncated(100, Some(2)), sample());
        assert_eq!(truncated(usize::MAX, Some(5)), sample());
    }

    #[test]
    fn truncate_in_text_keeps_whole_spans() {
        let l = truncated(7, None);
        assert_eq!(l.len(), 7);
        assert_eq!(l.images, vec![span(2, 4, 0)]);
        let l = truncated(6, None); // exactly at the end of span 0
        assert_eq!(l.len(), 6);
        assert_eq!(l.images.len(), 1);
        let l = truncated(1, None);
        assert_eq!(l.input_ids, b("a"));
        assert!(truncated(0, None).is_empty());
    }

    #[test]
    fn truncate_through_a_span_removes_it_whole() {
        for max in 3..6 {
            let l = truncated(max, None);
            assert_eq!(l.input_ids, b("ab"), "max {max}");
            assert!(l.images.is_empty());
        }
        let l = truncated(2, None); // just before span 0's start
        assert_eq!(l.len(), 2);
        let l = truncated(10, None); // inside span 1
        assert_eq!(l.len(), 8);
        assert_eq!(l.images, vec![span(2, 4, 0)]);
    }

    #[test]
    fn truncate_by_image_count() {
        let l = truncated(100, Some(1));
        assert_eq!(l.len(), 8);
        assert_eq!(l.images, vec![span(2, 4, 0)]);
        let l = truncated(100, Some(0));
        assert_eq!(l.input_ids, b("ab"));
        // Both limits: the tighter wins.
        assert_eq!(truncated(4, Some(1)).len(), 2);
        assert_eq!(truncated(7, Some(1)).len(), 7);
        // An image at position 0 with max_images = 0 leaves nothing.
        let mut l = build(&caption("text"), &[1]).unwrap();
        l.truncate(100, Some(0));
        assert!(l.is_empty());
    }
}
