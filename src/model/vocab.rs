//! A small WordPiece vocabulary for adfit's own backbone: BERT's special tokens, every word of
//! a corpus as a whole token, and each printable ASCII character alone and as a `##`
//! continuation, so any text still tokenises (a number becomes its digits).

use std::collections::BTreeSet;

/// The vocabulary's tokens in id order: `[PAD]` 0, `[UNK]` 1, `[CLS]` 2, `[SEP]` 3, `[MASK]` 4,
/// then the corpus words (sorted), then the characters.
pub fn build(corpus: &str) -> Vec<String> {
    let mut tokens: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"].map(String::from).to_vec();
    let words: BTreeSet<String> = corpus
        .to_lowercase()
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| w.len() > 1)
        .map(String::from)
        .collect();
    tokens.extend(words);
    let chars: Vec<char> = (b'!'..=b'~').map(char::from).filter(|c| !c.is_ascii_uppercase()).collect();
    tokens.extend(chars.iter().map(|c| c.to_string()));
    tokens.extend(chars.iter().filter(|c| c.is_ascii_alphanumeric()).map(|c| format!("##{c}")));
    let mut seen = BTreeSet::new();
    tokens.retain(|t| seen.insert(t.clone()));
    tokens
}

/// `vocab.txt` text: one token per line.
pub fn to_text(tokens: &[String]) -> String {
    let mut s = tokens.join("\n");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tokenizer::TextTokenizer;

    #[test]
    fn words_stay_whole_and_numbers_fall_back_to_digits() {
        let tokens = build("Hippocampal volume: 6345.00 mm^3. A photo of AD.");
        assert_eq!(&tokens[..5], &["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vocab.txt");
        std::fs::write(&path, to_text(&tokens)).unwrap();
        let tok = TextTokenizer::from_file(&path, 64).unwrap();
        assert_eq!(
            tok.tokens("Hippocampal volume: 7012.50 mm^3").unwrap(),
            ["[CLS]", "hippocampal", "volume", ":", "7", "##0", "##1", "##2", ".", "5", "##0", "mm", "^", "3", "[SEP]"]
        );
        assert_eq!(tok.tokens("zebra").unwrap()[1..3], ["z".to_string(), "##e".to_string()]);
        assert_eq!(tok.encode_one("").unwrap(), vec![2, 3]);
    }
}
