//! The token span of each biomarker sentence of a report ("Hippocampal volume: 7323.00 mm^3,"),
//! so that one sentence can be kept and the others masked out of the attention.

use std::ops::Range;

use crate::data::report::ReportTemplate;
use crate::data::table::Biomarker;
use crate::error::Result;
use crate::model::tokenizer::TextTokenizer;

/// One sentence of a report: the attribute's name, what it measures, and its tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub name: String,
    pub biomarker: Biomarker,
    pub tokens: Range<usize>,
}

fn find(hay: &[i64], needle: &[i64], from: usize) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    (from..=hay.len() - needle.len()).find(|&i| &hay[i..i + needle.len()] == needle)
}

/// The spans of the template's attributes found in `ids` (one tokenised report, [CLS] first,
/// [SEP] last), in report order. A sentence runs from its attribute's name to the next
/// attribute's name; the last one ends before [SEP]. Attributes whose name is not in the report
/// are left out.
pub fn attribute_spans(tok: &TextTokenizer, ids: &[i64], template: &ReportTemplate) -> Result<Vec<Span>> {
    let mut starts = Vec::new();
    let mut from = 0;
    for a in &template.attributes {
        let name = tok.encode_one(&a.name)?;
        // Without its [CLS] and [SEP].
        let name = &name[1..name.len().saturating_sub(1).max(1)];
        if let Some(at) = find(ids, name, from) {
            starts.push((at, a));
            from = at + name.len();
        }
    }
    let end = ids.len().saturating_sub(1);
    Ok(starts
        .iter()
        .enumerate()
        .map(|(i, (at, a))| Span {
            name: a.name.clone(),
            biomarker: a.biomarker,
            tokens: *at..starts.get(i + 1).map_or(end, |(next, _)| *next),
        })
        .collect())
}

/// The attention mask that keeps [CLS], [SEP] and one span of a `len`-token text.
pub fn keep_only(len: usize, span: &Range<usize>) -> Vec<f32> {
    (0..len).map(|i| if i == 0 || i + 1 == len || span.contains(&i) { 1.0 } else { 0.0 }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_locates_sub_sequences_from_an_offset() {
        assert_eq!(find(&[1, 2, 3, 2, 3], &[2, 3], 0), Some(1));
        assert_eq!(find(&[1, 2, 3, 2, 3], &[2, 3], 2), Some(3));
        assert_eq!(find(&[1, 2], &[2, 3], 0), None);
        assert_eq!(keep_only(6, &(2..4)), vec![1.0, 0.0, 1.0, 1.0, 0.0, 1.0]);
    }
}
