//! A CSV file read whole (under the input cap), with the physical line of every byte, so that an
//! error points at the line an editor shows whatever the file's line endings: LF, CRLF (Windows),
//! CR alone (old Mac exports), a UTF-8 byte-order mark, or quoted cells spanning several lines.
//!
//! The csv crate counts only `\n`, and a record that follows a CRLF can start on the `\n`; here
//! the line is computed from the record's byte offset instead.

use std::path::{Path, PathBuf};

use crate::error::Result;

/// The bytes of a CSV file and where its lines start.
pub struct CsvInput {
    pub path: PathBuf,
    text: Vec<u8>,
    /// Byte offset just past each line break (`\r\n` counts once).
    breaks: Vec<u64>,
}

impl CsvInput {
    /// Read `path` (refused past the input cap); a leading UTF-8 BOM is dropped.
    pub fn open(path: &Path) -> Result<Self> {
        let mut text = crate::limits::read_file(path)?;
        if text.starts_with(b"\xEF\xBB\xBF") {
            text.drain(..3);
        }
        Ok(Self::from_bytes(path, text))
    }

    fn from_bytes(path: &Path, text: Vec<u8>) -> Self {
        let mut breaks = Vec::new();
        let mut i = 0;
        while i < text.len() {
            match text[i] {
                b'\r' if text.get(i + 1) == Some(&b'\n') => {
                    breaks.push(i as u64 + 2);
                    i += 2;
                    continue;
                }
                b'\r' | b'\n' => breaks.push(i as u64 + 1),
                _ => {}
            }
            i += 1;
        }
        CsvInput { path: path.to_path_buf(), text, breaks }
    }

    /// A csv reader over the bytes (header row expected; every row as wide as the header).
    pub fn reader(&self) -> csv::Reader<&[u8]> {
        csv::ReaderBuilder::new().flexible(false).from_reader(&self.text[..])
    }

    /// The 1-based physical line of the record or error at `pos` (0 when unknown).
    pub fn line(&self, pos: Option<&csv::Position>) -> u64 {
        let Some(pos) = pos else { return 0 };
        // A record's reported start may sit on the line break before it: skip past breaks.
        let mut b = pos.byte() as usize;
        while matches!(self.text.get(b), Some(b'\r' | b'\n')) {
            b += 1;
        }
        1 + self.breaks.partition_point(|&end| end <= b as u64) as u64
    }

    /// The line of a csv error.
    pub fn error_line(&self, e: &csv::Error) -> u64 {
        self.line(e.position())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The physical line of every data record, as the csv reader reports it through `line`.
    fn lines_of(bytes: &[u8]) -> Vec<(u64, String)> {
        let input = CsvInput::from_bytes(Path::new("t.csv"), bytes.to_vec());
        let mut r = input.reader();
        let _ = r.headers().unwrap();
        r.records().map(|rec| rec.unwrap()).map(|rec| (input.line(rec.position()), rec[0].to_string())).collect()
    }

    #[test]
    fn every_line_ending_gives_the_line_an_editor_shows() {
        let want = vec![(2, "a".to_string()), (3, "b".to_string()), (5, "c".to_string())];
        assert_eq!(lines_of(b"x,y\na,1\nb,2\n\nc,3\n"), want);
        assert_eq!(lines_of(b"x,y\r\na,1\r\nb,2\r\n\r\nc,3\r\n"), want);
        assert_eq!(lines_of(b"x,y\ra,1\rb,2\r\rc,3\r"), want);
        // A quoted cell over two lines: the next record starts one line further down.
        assert_eq!(lines_of(b"x,y\r\na,\"one\r\ntwo\"\r\nb,2\r\n"), vec![(2, "a".to_string()), (4, "b".to_string())]);
    }

    #[test]
    fn a_byte_order_mark_is_dropped_and_the_header_still_matches() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bom.csv");
        std::fs::write(&p, b"\xEF\xBB\xBFpath,image_id\r\na.nii,1\r\n").unwrap();
        let input = CsvInput::open(&p).unwrap();
        let mut r = input.reader();
        assert_eq!(r.headers().unwrap().get(0), Some("path"));
        let rec = r.records().next().unwrap().unwrap();
        assert_eq!(input.line(rec.position()), 2);
    }

    #[test]
    fn a_malformed_row_names_its_line() {
        let input = CsvInput::from_bytes(Path::new("t.csv"), b"x,y\r\na,1\r\nb,2,3\r\n".to_vec());
        let mut r = input.reader();
        let err = r.records().find_map(|rec| rec.err()).unwrap();
        assert_eq!(input.error_line(&err), 3);
    }
}
